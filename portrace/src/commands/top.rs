//! `portrace top`: a full-screen live view of the host's TCP sockets, or with `--from` a
//! recording browsed.

use std::path::PathBuf;

use super::filter_args::FilterArgs;
use crate::top::TopConfig;
use crate::units::parse_ring_size;

/// `portrace top`.
#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// Browse this recording (made with `portrace record`; `-`: standard input) instead of
    /// the live host.
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,

    /// With --from: read a damaged recording up to the damage instead of refusing it.
    #[arg(long, requires = "from")]
    pub salvage: bool,

    /// Size of the kernel's ring buffer: a power of two of at least 4K (4096, 64K, 4M).
    #[arg(long, value_name = "BYTES", default_value = "4M", value_parser = parse_ring_size, conflicts_with = "from")]
    pub ring_size: u32,

    #[command(flatten)]
    pub filter: FilterArgs,
}

impl TopArgs {
    pub fn into_config(self) -> TopConfig {
        TopConfig { from: self.from, salvage: self.salvage, ring_size: self.ring_size, filter: self.filter.into_spec() }
    }
}

pub fn execute(config: TopConfig) -> anyhow::Result<()> {
    crate::top::top(config)
}
