//! The flags of a live trace shared by live tracing, `record`, `diagram` and `serve`: when
//! it stops and how much the kernel may buffer, the command it traces, and the flight
//! recorder's rotation.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::command::CommandSpec;
use crate::units::{parse_bytes, parse_duration, parse_ring_size};

/// When a trace stops, and how much the kernel may buffer: live tracing and `record`.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Tracing")]
pub struct LimitArgs {
    /// Stop after this long: 30s, 5m, 1m30s, 1h, 250ms, or seconds.
    #[arg(short = 'd', long, value_name = "TIME", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Stop after this many transitions.
    #[arg(short = 'c', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Size of the kernel's ring buffer: a power of two of at least 4K (4096, 64K, 4M).
    #[arg(long, value_name = "BYTES", default_value = "4M", value_parser = parse_ring_size)]
    pub ring_size: u32,

    /// At the end, print a report of the trace on stderr (as `portrace report` would).
    #[arg(long)]
    pub summary: bool,

    /// Say on stderr how long each start-up stage took, up to the first record shown.
    #[arg(short = 'v', long)]
    pub verbose: bool,
}

/// Tracing one command: live tracing and `record`.
#[derive(Debug, Default, clap::Args)]
pub struct CommandArgs {
    /// After `--`: run CMD with its arguments, and trace only the sockets of CMD and of
    /// every process it starts, until it exits; then list its sockets still open, and exit
    /// with its exit status. Other filters narrow this further.
    #[arg(last = true, value_name = "CMD", help_heading = "Tracing one command")]
    pub command: Vec<OsString>,

    /// Run CMD as root even when portrace was started through sudo (by default CMD runs as
    /// the user who ran sudo: SUDO_UID, SUDO_GID, their groups and home).
    #[arg(long, requires = "command", help_heading = "Tracing one command")]
    pub as_root: bool,
}

impl CommandArgs {
    pub fn into_spec(self) -> Option<CommandSpec> {
        (!self.command.is_empty()).then_some(CommandSpec { argv: self.command, as_root: self.as_root })
    }
}

/// The flight recorder's rotation and retention, for `record --dir` and `serve
/// --record-dir` (both name their directory argument `dir`).
#[derive(Debug, Default, clap::Args)]
pub struct FlightArgs {
    /// How long each file of the flight recorder covers (at least 1s; default 10m).
    #[arg(long, value_name = "TIME", value_parser = parse_rotate, requires = "dir", help_heading = "Flight recorder")]
    pub rotate: Option<Duration>,

    /// How many finished files the flight recorder keeps besides the one it writes
    /// (default 12); older ones are removed.
    #[arg(long, value_name = "N", value_parser = parse_keep, requires = "dir", help_heading = "Flight recorder")]
    pub keep: Option<usize>,

    /// Start a new file, too, once the current one holds SIZE bytes (K, M, G suffixes):
    /// the directory then holds at most about (N + 1) x SIZE.
    #[arg(long, value_name = "SIZE", value_parser = parse_max_size, requires = "dir", help_heading = "Flight recorder")]
    pub max_size: Option<u64>,
}

impl FlightArgs {
    pub fn options(self, dir: PathBuf) -> crate::flight::FlightOptions {
        crate::flight::FlightOptions {
            dir,
            rotate: self.rotate.unwrap_or(crate::flight::DEFAULT_ROTATE),
            keep: self.keep.unwrap_or(crate::flight::DEFAULT_KEEP),
            max_size: self.max_size,
        }
    }
}

/// Parses `--rotate`: a duration of at least [`crate::flight::policy::MIN_ROTATE`].
fn parse_rotate(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    let min = crate::flight::policy::MIN_ROTATE;
    if d < min {
        return Err(format!("--rotate {text} is too short: a file must cover at least {}s", min.as_secs()));
    }
    Ok(d)
}

/// Parses `--keep`: how many finished files to keep, at least 1.
fn parse_keep(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("--keep 0 would keep no finished recording, and the flight recorder would remove each file \
                      as soon as it is finished: give 1 or more"
            .into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{text}' is not a number of files (expected e.g. 12)")),
    }
}

/// Parses `--max-size`: bytes with an optional K, M or G suffix (powers of 1024), at
/// least [`crate::flight::policy::MIN_MAX_SIZE`].
fn parse_max_size(text: &str) -> Result<u64, String> {
    let bytes = parse_bytes(text).ok_or_else(|| format!("'{text}' is not a size (expected e.g. 64M or 1G)"))?;
    let min = crate::flight::policy::MIN_MAX_SIZE;
    if bytes < min {
        return Err(format!("--max-size {text} is too small: a file needs at least {}K", min >> 10));
    }
    Ok(bytes)
}
