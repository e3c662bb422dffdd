//! `portrace serve`: the live trace as Prometheus metrics over HTTP, with a flight
//! recorder beside it if asked.

use std::path::PathBuf;
use std::time::Duration;

use super::filter_args::FilterArgs;
use super::trace_args::FlightArgs;
use crate::engine::TraceOptions;
use crate::serve::ServeConfig;
use crate::units::{parse_duration, parse_ring_size};

/// `portrace serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Listen on this address and port (a local address: 0.0.0.0 or [::] for every
    /// interface).
    #[arg(long, value_name = "ADDR:PORT", default_value = crate::serve::listen::DEFAULT_LISTEN, value_parser = parse_listen)]
    pub listen: std::net::SocketAddr,

    /// Label transitions, connection ends and times in state with the owner's process
    /// name (comm) and service port (port).
    #[arg(long)]
    pub owner_labels: bool,

    /// With --owner-labels: distinct values kept per label (the first seen); later values
    /// are counted under "other".
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_label_values: u32,

    /// How often the sockets-per-state gauges are checked against the kernel's socket
    /// table and corrected (0: never).
    #[arg(long, value_name = "TIME", default_value = "60s", value_parser = parse_duration)]
    pub check_interval: Duration,

    /// Stop after this long (as live tracing does); without it, until a signal.
    #[arg(short = 'd', long, value_name = "TIME", value_parser = parse_duration, help_heading = "Tracing")]
    pub duration: Option<Duration>,

    /// Size of the kernel's ring buffer: a power of two of at least 4K (4096, 64K, 4M).
    #[arg(long, value_name = "BYTES", default_value = "4M", value_parser = parse_ring_size, help_heading = "Tracing")]
    pub ring_size: u32,

    /// Keep a flight recorder as well: a rolling window of recordings in DIR (as `record
    /// --dir`), a new file every --rotate, the last --keep kept.
    #[arg(id = "dir", long = "record-dir", value_name = "DIR", help_heading = "Flight recorder")]
    pub record_dir: Option<PathBuf>,

    #[command(flatten)]
    pub flight: FlightArgs,

    /// Compress the flight recorder's blocks with LZ4.
    #[arg(long, requires = "dir", help_heading = "Flight recorder")]
    pub compress: bool,

    #[command(flatten)]
    pub filter: FilterArgs,
}

/// Parses `--listen`: `ADDR:PORT`, an IPv6 address in brackets.
fn parse_listen(text: &str) -> Result<std::net::SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!("'{text}' is not ADDR:PORT (e.g. 127.0.0.1:9977, 0.0.0.0:9977 or [::1]:9977)")
    })
}

impl ServeArgs {
    pub fn into_config(self) -> ServeConfig {
        let s = self;
        ServeConfig {
            trace: TraceOptions { duration: s.duration, ..TraceOptions::new(s.filter.into_spec(), s.ring_size) },
            listen: s.listen,
            record: s.record_dir.map(|dir| crate::serve::Recording { flight: s.flight.options(dir), compress: s.compress }),
            owner_labels: s.owner_labels,
            label_limit: s.max_label_values as usize,
            check_interval: (!s.check_interval.is_zero()).then_some(s.check_interval),
        }
    }
}

/// Serves until stopped. Returns the exit status.
pub async fn execute(config: ServeConfig) -> anyhow::Result<u8> {
    crate::serve::serve(config).await
}
