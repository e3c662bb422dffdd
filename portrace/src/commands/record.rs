//! `portrace record`: the live run into a recording file, or with `--dir` into the flight
//! recorder's rolling series of files ([`crate::flight`]).

use std::path::PathBuf;

use super::alert_args::AlertArgs;
use super::filter_args::FilterArgs;
use super::live::Config;
use super::output_args::{ColorChoice, OutputFormat};
use super::trace_args::{CommandArgs, FlightArgs, LimitArgs};
use crate::engine;
use crate::flight::FlightRecorder;
use crate::{preflight, tracefile};

/// `portrace record`.
#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// The recording to write (or --dir, the flight recorder). An existing file is left
    /// alone unless --force is given.
    #[arg(short = 'o', long = "output", value_name = "FILE", required_unless_present = "dir", conflicts_with_all = ["dir", "rotate", "keep", "max_size"])]
    pub output: Option<PathBuf>,

    /// Replace FILE if it exists (never a symbolic link; the old file is kept until
    /// tracing has started).
    #[arg(long, conflicts_with = "dir")]
    pub force: bool,

    /// Flight recorder: keep a rolling window of recordings in DIR (created, mode 0700,
    /// if it does not exist), a new file every --rotate, the last --keep kept.
    #[arg(long, value_name = "DIR", help_heading = "Flight recorder")]
    pub dir: Option<PathBuf>,

    #[command(flatten)]
    pub flight: FlightArgs,

    /// Compress the recording's blocks with LZ4 (about a third of the size, little CPU).
    #[arg(long)]
    pub compress: bool,

    #[command(flatten)]
    pub filter: FilterArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub command: CommandArgs,

    #[command(flatten)]
    pub alerts: AlertArgs,
}

/// `portrace record`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordConfig {
    /// The trace; its `format`, `color` and `snapshot` are unused.
    pub trace: Config,
    pub target: RecordTarget,
    pub compress: bool,
}

/// Where `portrace record` writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordTarget {
    /// One recording (`-o FILE`), replacing an existing file only with `force`.
    File { path: PathBuf, force: bool },
    /// The flight recorder (`--dir DIR`).
    Dir(crate::flight::FlightOptions),
}

impl RecordArgs {
    pub fn into_config(self) -> RecordConfig {
        let r = self;
        RecordConfig {
            trace: Config {
                filter: r.filter.into_spec(),
                format: OutputFormat::Text,
                duration: r.limits.duration,
                count: r.limits.count,
                ring_size: r.limits.ring_size,
                color: ColorChoice::Never,
                snapshot: false,
                summary: r.limits.summary,
                verbose: r.limits.verbose,
                explain: false,
                command: r.command.into_spec(),
                alerts: r.alerts.into_options(false),
            },
            target: match (r.output, r.dir) {
                (_, Some(dir)) => RecordTarget::Dir(r.flight.options(dir)),
                (path, None) => RecordTarget::File { path: path.expect("clap requires -o without --dir"), force: r.force },
            },
            compress: r.compress,
        }
    }
}

/// Records until the run ends. Returns the exit status.
pub async fn execute(config: RecordConfig) -> anyhow::Result<u8> {
    preflight::check_privileges()?;
    let options = tracefile::WriteOptions { compress: config.compress };
    let trace = config.trace.trace_options();
    match &config.target {
        RecordTarget::File { path, force } => {
            let mut recording = tracefile::Recording::create(path, *force, options)?;
            let result = engine::trace(&trace, &mut recording).await;
            let code = result.as_ref().map_or(0, |&code| code);
            recording.finish(result.map(|_| ())).map(|()| code)
        }
        RecordTarget::Dir(flight) => {
            let mut recorder = FlightRecorder::create(flight, options)?;
            engine::trace(&trace, &mut recorder).await
        }
    }
}
