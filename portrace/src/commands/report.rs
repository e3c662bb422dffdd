//! `portrace report`: a recording summarised (connections, time in each state, slowest
//! handshakes, longest CLOSE_WAITs, TIME_WAIT per peer, alerts), as text or one JSON
//! document.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::ValueEnum;

use super::alert_args::AlertArgs;
use super::filter_args::FilterArgs;
use crate::alerts::section::AlertSection;
use crate::alerts::sink::{AlertHandle, AlertOptions};
use crate::alerts::PortRange;
use crate::engine::replay::replay_into;
use crate::filter::FilterSpec;
use crate::pipeline::{self, Consumers};
use crate::report::{Report, ReportOptions};
use crate::transition_filter::TransitionFilter;

/// `portrace report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A recording made with `portrace record` (`-`: standard input).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Report format: text for people, or one JSON document.
    #[arg(short = 'f', long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,

    /// Also break time in state down by service port.
    #[arg(long)]
    pub by_port: bool,

    /// Also break time in state down by owning process.
    #[arg(long)]
    pub by_process: bool,

    /// Rows in the lists of slowest handshakes, longest CLOSE_WAITs and TIME_WAIT peers.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub top: u64,

    /// Read a damaged recording up to the damage instead of refusing it.
    #[arg(long)]
    pub salvage: bool,

    #[command(flatten)]
    pub filter: FilterArgs,

    /// Print only the Alerts section of the report.
    #[arg(long, help_heading = "Alerts")]
    pub alerts_only: bool,

    #[command(flatten)]
    pub alerts: AlertArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Aligned tables for people.
    Text,
    /// One JSON document.
    Json,
}

/// `portrace report`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportConfig {
    pub file: PathBuf,
    pub filter: FilterSpec,
    pub format: ReportFormat,
    pub by_port: bool,
    pub by_process: bool,
    pub top: usize,
    pub salvage: bool,
    pub alerts: AlertOptions,
}

impl ReportArgs {
    pub fn into_config(self) -> ReportConfig {
        let r = self;
        ReportConfig {
            file: r.file,
            filter: r.filter.into_spec(),
            format: r.format,
            by_port: r.by_port,
            by_process: r.by_process,
            top: r.top as usize,
            salvage: r.salvage,
            alerts: r.alerts.into_options(r.alerts_only),
        }
    }
}

/// `portrace report`.
pub fn execute(config: ReportConfig) -> anyhow::Result<()> {
    let mut reader = super::replay::open(&config.file, config.salvage)?;
    let options = ReportOptions { by_port: config.by_port, by_process: config.by_process, top: config.top };
    let mut report = Report::new(options);
    let mut filter = TransitionFilter::new(config.filter);
    let alerts = config.alerts.enabled.then(|| AlertHandle::new(config.alerts.rules.clone(), PortRange::kernel_default()));
    let consumers = Consumers { report: Some(&mut report), alerts: alerts.as_ref(), ..Consumers::default() };
    let replayed = replay_into(&mut reader, &mut filter, consumers)?;
    if let Some(handle) = &alerts {
        report.set_alerts(AlertSection::of(&handle.lock()));
    }
    replayed.print_warnings();
    // What the recorded run could not see: the report leaves it out too.
    for note in reader.header().features.notes() {
        eprintln!("portrace: the recorded run had {note}");
    }
    let mut out = io::BufWriter::new(io::stdout().lock());
    let section = alerts.as_ref().filter(|_| config.alerts.only).map(|h| AlertSection::of(&h.lock()));
    let written = match (config.format, section) {
        (ReportFormat::Text, Some(section)) => section.write_text(&mut out),
        (ReportFormat::Json, Some(section)) => section.write_json(&mut out),
        (ReportFormat::Text, None) => report.write_text(&mut out),
        (ReportFormat::Json, None) => report.write_json(&mut out),
    };
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
        other => other.context("writing the report")?,
    }
    pipeline::fail_on_alert(config.alerts.fail, alerts.as_ref())
}
