//! `portrace diagram`: the TCP state diagram (RFC 9293) with what this host does, traced
//! live or read from a recording; with `--conn`, one connection as a sequence diagram.

use std::path::PathBuf;

use super::filter_args::FilterArgs;
use super::trace_args::LimitArgs;
use crate::alerts::sink::AlertOptions;
use crate::diagram::DiagramConfig;
use crate::engine::TraceOptions;

/// `portrace diagram`.
#[derive(Debug, clap::Args)]
pub struct DiagramArgs {
    /// Write the diagram to FILE (its extension picks the format) instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Replace FILE if it exists (never a symbolic link).
    #[arg(long, requires = "output")]
    pub force: bool,

    /// The diagram's format.
    #[arg(short = 'f', long, value_enum)]
    pub format: Option<crate::diagram::DiagramFormat>,

    /// Draw from a recording made with `portrace record` instead of tracing live (`-`:
    /// standard input).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["duration", "count", "ring_size", "summary"])]
    pub from: Option<PathBuf>,

    /// Draw socket ID's connection (the SOCKET column of `portrace replay`) as a sequence
    /// diagram: it and its peer on this host side by side, time flowing down.
    #[arg(long, value_name = "ID", requires = "from")]
    pub conn: Option<u64>,

    /// With --from: read a damaged recording up to the damage instead of refusing it.
    #[arg(long, requires = "from")]
    pub salvage: bool,

    #[command(flatten)]
    pub filter: FilterArgs,

    #[command(flatten)]
    pub limits: LimitArgs,
}

impl DiagramArgs {
    pub fn into_config(self) -> DiagramConfig {
        let d = self;
        DiagramConfig {
            trace: TraceOptions {
                duration: d.limits.duration,
                count: d.limits.count,
                summary: d.limits.summary,
                verbose: d.limits.verbose,
                alerts: AlertOptions { enabled: false, ..AlertOptions::default() },
                ..TraceOptions::new(d.filter.into_spec(), d.limits.ring_size)
            },
            from: d.from,
            salvage: d.salvage,
            output: d.output,
            force: d.force,
            format: d.format,
            conn: d.conn,
        }
    }
}

pub async fn execute(config: DiagramConfig) -> anyhow::Result<u8> {
    crate::diagram::run(config).await.map(|()| 0)
}
