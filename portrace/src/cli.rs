//! The command line: flags, their parsing, and their validation into a [`Config`] that the
//! rest of portrace runs from. Every bad value is refused here with a message that names
//! the flag and the value.

use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::filter::{parse_port, FilterSpec, IpNet};
use crate::record::Family;
use crate::tcp_state::TcpState;

const EXAMPLES: &str = "\
Examples:
  portrace                       every TCP state transition on this host, live
  portrace --port 443            connections to or from port 443
  portrace -D 5432 --format json connections to PostgreSQL servers, as JSON Lines
  portrace --state CLOSE_WAIT    sockets entering or leaving CLOSE_WAIT
  portrace --addr 10.0.0.0/8 -c 100 --duration 30s";

/// Real-time TCP state tracer: every transition, with its process, endpoints and the time
/// spent in the state it left.
#[derive(Debug, Parser)]
#[command(name = "portrace", version, about, after_help = EXAMPLES)]
pub struct Args {
    /// Keep connections whose local port is PORT (repeatable).
    #[arg(short = 'L', long = "lport", value_name = "PORT", value_parser = parse_port)]
    pub lport: Vec<u16>,

    /// Keep connections whose remote port is PORT (repeatable).
    #[arg(short = 'D', long = "rport", value_name = "PORT", value_parser = parse_port)]
    pub rport: Vec<u16>,

    /// Keep connections with PORT at either end (repeatable).
    #[arg(long = "port", value_name = "PORT", value_parser = parse_port)]
    pub port: Vec<u16>,

    /// Keep connections with an endpoint in this address or network (repeatable).
    #[arg(long = "addr", value_name = "IP[/LEN]", value_parser = clap::value_parser!(IpNet))]
    pub addr: Vec<IpNet>,

    /// IPv4 only (IPv6 sockets with v4-mapped addresses count as IPv4).
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// IPv6 only.
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,

    /// Keep sockets owned by process PID (repeatable).
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pid: Vec<u32>,

    /// Keep sockets owned by a process whose command name is COMM (as in ps -o comm).
    #[arg(long = "comm", value_name = "COMM", value_parser = parse_comm)]
    pub comm: Option<String>,

    /// Print the sockets that exist now, with their owners, and exit (like ss -tanp).
    #[arg(long)]
    pub snapshot: bool,

    /// Keep transitions into or out of STATE, e.g. ESTABLISHED or close-wait (repeatable).
    #[arg(short = 's', long = "state", value_name = "STATE", value_parser = parse_state)]
    pub state: Vec<TcpState>,

    /// Output format.
    #[arg(short = 'f', long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,

    /// Stop after this long: 30s, 5m, 1h, 250ms, or seconds.
    #[arg(short = 'd', long, value_name = "TIME", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Stop after this many transitions.
    #[arg(short = 'c', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Size of the kernel's ring buffer: a power of two of at least 4K (4096, 64K, 4M).
    #[arg(long, value_name = "BYTES", default_value = "8M", value_parser = parse_ring_size)]
    pub ring_size: u32,

    /// When to colour the text output.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Text,
    /// One JSON object per line (schema in docs/json.md).
    Json,
    /// Comma-separated values with a header row.
    Csv,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// Everything a run needs, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub filter: FilterSpec,
    pub format: OutputFormat,
    pub duration: Option<Duration>,
    pub count: Option<u64>,
    pub ring_size: u32,
    pub color: ColorChoice,
    pub snapshot: bool,
}

impl Args {
    pub fn into_config(self) -> Config {
        let family = match (self.ipv4, self.ipv6) {
            (true, _) => Some(Family::Ipv4),
            (_, true) => Some(Family::Ipv6),
            _ => None,
        };
        Config {
            filter: FilterSpec {
                lports: self.lport,
                rports: self.rport,
                ports: self.port,
                nets: self.addr,
                pids: self.pid,
                comm: self.comm,
                family,
                states: self.state,
            },
            format: self.format,
            duration: self.duration,
            count: self.count,
            ring_size: self.ring_size,
            color: self.color,
            snapshot: self.snapshot,
        }
    }
}

fn parse_comm(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > 15 {
        return Err(format!(
            "'{text}' cannot be a command name: the kernel keeps 1 to 15 bytes of it (see ps -o comm)"
        ));
    }
    Ok(text.to_string())
}

fn parse_state(text: &str) -> Result<TcpState, String> {
    TcpState::parse(text).map_err(|e| e.to_string())
}

/// Parses `30s`, `5m`, `1h`, `250ms`, `1.5s` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let bad = || format!("'{text}' is not a duration (expected e.g. 30s, 5m, 1h, 250ms)");
    let value: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(bad()),
    };
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 366.0 * 86400.0 {
        return Err(format!("duration '{text}' is out of range (more than 0, at most a year)"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses a ring buffer size: bytes with an optional K, M or G suffix (powers of 1024).
/// The kernel needs a power of two that is a multiple of the page size.
pub fn parse_ring_size(text: &str) -> Result<u32, String> {
    let lower = text.trim().to_ascii_lowercase();
    let t = lower.strip_suffix('b').unwrap_or(&lower);
    let t = t.strip_suffix('i').unwrap_or(t);
    let (digits, scale) = match t.char_indices().last() {
        Some((i, 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'm')) => (&t[..i], 1 << 20),
        Some((i, 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    let bytes = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("'{text}' is not a size (expected e.g. 4096, 64K or 4M)"))?;
    let page = page_size();
    if bytes < page || !bytes.is_power_of_two() || bytes > 1 << 30 {
        return Err(format!(
            "ring size {bytes} bytes is not usable: it must be a power of two from {page} (the page size) to 1G"
        ));
    }
    Ok(bytes as u32)
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u64
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["portrace"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv).map(Args::into_config).map_err(|e| e.to_string())
    }

    #[test]
    fn no_arguments_trace_everything_as_text() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.filter, FilterSpec::default());
        assert_eq!(c.format, OutputFormat::Text);
        assert_eq!(c.ring_size, 8 << 20);
        assert_eq!((c.duration, c.count), (None, None));
    }

    #[test]
    fn bcc_style_flags_work() {
        let c = parse(&["-L", "80", "-L", "443", "-D", "5432", "-4", "--state", "time-wait"]).unwrap();
        assert_eq!(c.filter.lports, vec![80, 443]);
        assert_eq!(c.filter.rports, vec![5432]);
        assert_eq!(c.filter.family, Some(Family::Ipv4));
        assert_eq!(c.filter.states, vec![TcpState::TimeWait]);
    }

    #[test]
    fn every_flag_reaches_the_config() {
        let c = parse(&[
            "--port", "22", "--addr", "10.0.0.0/8", "-6", "--pid", "7", "--format", "json",
            "--duration", "1m", "--count", "5", "--ring-size", "64K", "--color", "never",
        ])
        .unwrap();
        assert_eq!(c.filter.ports, vec![22]);
        assert_eq!(c.filter.nets[0].to_string(), "10.0.0.0/8");
        assert_eq!(c.filter.family, Some(Family::Ipv6));
        assert_eq!(c.filter.pids, vec![7]);
        assert!(!c.snapshot);
        assert_eq!(c.format, OutputFormat::Json);
        assert_eq!(c.duration, Some(Duration::from_secs(60)));
        assert_eq!(c.count, Some(5));
        assert_eq!(c.ring_size, 65536);
        assert_eq!(c.color, ColorChoice::Never);
    }

    #[test]
    fn bad_values_are_named_in_the_error() {
        let cases: &[(&[&str], &str)] = &[
            (&["--port", "70000"], "port 70000 is out of range"),
            (&["-L", "x"], "'x' is not a port number"),
            (&["--state", "ESTABLISH"], "unknown TCP state 'ESTABLISH'"),
            (&["--addr", "10.0.0.0/33"], "prefix length '/33' is out of range"),
            (&["--addr", "example.com"], "'example.com' is not an IP address"),
            (&["--ring-size", "1000"], "must be a power of two"),
            (&["--ring-size", "3M"], "must be a power of two"),
            (&["--ring-size", "lots"], "'lots' is not a size"),
            (&["--format", "xml"], "invalid value 'xml' for '--format"),
            (&["--duration", "soon"], "'soon' is not a duration"),
            (&["--duration", "0s"], "out of range"),
            (&["--count", "0"], "--count"),
            (&["-4", "-6"], "cannot be used with"),
            (&["--pid=-3"], "invalid value '-3' for '--pid"),
            (&["--comm", "a-name-longer-than-15"], "the kernel keeps 1 to 15 bytes"),
        ];
        for (args, expected) in cases {
            let err = parse(args).expect_err(&format!("{args:?} should be refused"));
            assert!(err.contains(expected), "{args:?}: {err}");
        }
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert!(parse_duration("10d").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn ring_sizes_take_suffixes() {
        assert_eq!(parse_ring_size("4096"), Ok(4096));
        assert_eq!(parse_ring_size("4M"), Ok(4 << 20));
        assert_eq!(parse_ring_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_ring_size("64ki"), Ok(64 << 10));
        assert_eq!(parse_ring_size("8mb"), Ok(8 << 20));
        assert_eq!(parse_ring_size("1G"), Ok(1 << 30));
        assert!(parse_ring_size("2G").is_err());
        assert!(parse_ring_size("2048").is_err());
    }
}
