//! `portrace` without a command: live tracing to standard output (or `--snapshot`, the
//! sockets that exist now, see [`super::snapshot`]).

use std::time::Duration;

use super::alert_args::AlertArgs;
use super::filter_args::FilterArgs;
use super::output_args::{check_alerts_only, stdout_sink, ColorChoice, OutputFormat};
use super::trace_args::{CommandArgs, LimitArgs};
use crate::alerts::sink::AlertOptions;
use crate::command::CommandSpec;
use crate::destination::{Output, RunSetup};
use crate::engine::{self, TraceOptions};
use crate::filter::FilterSpec;
use crate::output::Sink;
use crate::preflight;

/// Live tracing: the flags of `portrace` without a command.
#[derive(Debug, clap::Args)]
pub struct LiveArgs {
    #[command(flatten)]
    pub filter: FilterArgs,

    /// Print the sockets that exist now, with their owners, and exit (like ss -tanp).
    #[arg(long, help_heading = "Output", conflicts_with = "command")]
    pub snapshot: bool,

    /// Output format.
    #[arg(short = 'f', long, value_enum, default_value_t = OutputFormat::Text, help_heading = "Output")]
    pub format: OutputFormat,

    /// When to colour the text output.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN", help_heading = "Output")]
    pub color: ColorChoice,

    /// Add each transition's cause in plain words (the segment sent or received, or the
    /// application's call), and say where Linux differs from RFC 9293.
    #[arg(long, help_heading = "Output")]
    pub explain: bool,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub command: CommandArgs,
    /// Show only the alerts (and lost-record lines, which say alerts may be missing).
    #[arg(long, help_heading = "Alerts")]
    pub alerts_only: bool,

    #[command(flatten)]
    pub alerts: AlertArgs,
}

/// Everything a live or recording run needs, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub filter: FilterSpec,
    pub format: OutputFormat,
    pub duration: Option<Duration>,
    pub count: Option<u64>,
    pub ring_size: u32,
    pub color: ColorChoice,
    pub snapshot: bool,
    /// Print a report of the trace on stderr at the end.
    pub summary: bool,
    /// Say how long each start-up stage took.
    pub verbose: bool,
    /// Add each transition's cause in plain words.
    pub explain: bool,
    /// The command to run and trace alone (`portrace -- CMD`).
    pub command: Option<CommandSpec>,
    pub alerts: AlertOptions,
}

impl Config {
    /// What the engine needs of it.
    pub fn trace_options(&self) -> TraceOptions {
        TraceOptions {
            filter: self.filter.clone(),
            duration: self.duration,
            count: self.count,
            ring_size: self.ring_size,
            summary: self.summary,
            verbose: self.verbose,
            command: self.command.clone(),
            alerts: self.alerts.clone(),
        }
    }
}

impl LiveArgs {
    pub fn into_config(self) -> Config {
        Config {
            filter: self.filter.into_spec(),
            format: self.format,
            duration: self.limits.duration,
            count: self.limits.count,
            ring_size: self.limits.ring_size,
            color: self.color,
            snapshot: self.snapshot,
            summary: self.limits.summary,
            verbose: self.limits.verbose,
            explain: self.explain,
            command: self.command.into_spec(),
            alerts: self.alerts.into_options(self.alerts_only),
        }
    }
}

/// Runs portrace live with `config`. Returns the exit status: 0, or the traced command's.
pub async fn execute(config: Config) -> anyhow::Result<u8> {
    if config.snapshot {
        return super::snapshot::execute(&config).map(|()| 0);
    }
    check_alerts_only(config.format, config.alerts.only)?;
    preflight::check_privileges()?;
    let mut out = Stdout { format: config.format, color: config.color, explain: config.explain };
    engine::trace(&config.trace_options(), &mut out).await
}

/// Standard output, in the format and colours the user chose.
struct Stdout {
    format: OutputFormat,
    color: ColorChoice,
    explain: bool,
}

impl Output for Stdout {
    fn open(&mut self, _setup: RunSetup) -> anyhow::Result<Box<dyn Sink + Send>> {
        Ok(stdout_sink(self.format, self.color, self.explain))
    }

    fn name(&self) -> String {
        "output".into()
    }

    fn banner(&self) -> String {
        "portrace: tracing TCP state transitions; Ctrl-C to stop".into()
    }

    fn uses_stdout(&self) -> bool {
        true
    }
}
