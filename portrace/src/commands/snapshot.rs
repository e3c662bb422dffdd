//! `portrace --snapshot`: the sockets that exist now, with their owners, and exit (like
//! `ss -tanp`).

use super::live::Config;
use super::output_args::stdout_sink;
use crate::{engine, preflight};

pub fn execute(config: &Config) -> anyhow::Result<()> {
    // The inventory needs no eBPF: without privileges it is partial, not impossible.
    if preflight::check_privileges().is_err() {
        eprintln!(
            "portrace: not running as root: listing this network namespace's sockets only, \
             with owners only for your own processes (run as root for all of them)"
        );
    }
    let mut sink = stdout_sink(config.format, config.color, false);
    engine::inventory::snapshot(&config.filter, sink.as_mut())
}
