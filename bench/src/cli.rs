//! The benchmark's command line: the workload (connection count, concurrency, pacing,
//! which side closes first), where it runs (loopback, veth, both), which tracers are
//! compared and how many rounds, plus the paths `cargo xtask bench` fills in (the release
//! binaries, the results file, a working directory). The hidden `paced-client`
//! subcommand is the rate-limited client the benchmark starts for `--rate N`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "portrace-bench",
    about = "portrace and its peers against ground truth at the machine's maximum connection rate",
    after_help = "Run it through `cargo xtask bench`, which builds the release binaries first."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the benchmark (what `cargo xtask bench` does).
    Run(Options),
    /// `portrace serve` for minutes at a steady rate with owner labels: RSS over time and
    /// scrape latency (what `cargo xtask soak` runs).
    Soak(crate::soak::SoakOptions),
    /// A client that opens connections at a fixed rate (started by `run --rate N`).
    #[command(hide = true)]
    PacedClient(PacedOptions),
    /// The quiet cost's sender: fragmented UDP datagrams as fast as it can.
    #[command(hide = true)]
    UdpFlood(FloodOptions),
    /// The quiet cost's receiver: counts the datagrams that arrive.
    #[command(hide = true)]
    UdpSink(SinkOptions),
}

#[derive(Clone, Debug, Args)]
pub struct FloodOptions {
    #[arg(long)]
    pub to: std::net::SocketAddrV4,
    #[arg(long)]
    pub seconds: u64,
}

#[derive(Clone, Debug, Args)]
pub struct SinkOptions {
    #[arg(long)]
    pub at: std::net::SocketAddrV4,
    #[arg(long)]
    pub seconds: u64,
}

/// Which side of each connection closes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Closer {
    Client,
    Server,
}

impl Closer {
    pub fn name(self) -> &'static str {
        match self {
            Closer::Client => "client",
            Closer::Server => "server",
        }
    }
}

/// Where the workload's packets travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TransportChoice {
    Loopback,
    Veth,
    Both,
}

/// A tracer the benchmark knows how to run and read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum TracerKind {
    /// portrace --format json --port P (the release build).
    Portrace,
    /// libbpf-tools' tcpstates (Debian package libbpf-tools).
    #[value(name = "libbpf-tools")]
    LibbpfTools,
    /// bcc's tcpstates (Debian package bpfcc-tools: tcpstates-bpfcc).
    Bcc,
    /// A bpftrace one-liner on sock:inet_sock_set_state, filtered on the port in the kernel.
    Bpftrace,
}

impl TracerKind {
    pub const ALL: [TracerKind; 4] = [
        TracerKind::Portrace,
        TracerKind::LibbpfTools,
        TracerKind::Bcc,
        TracerKind::Bpftrace,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TracerKind::Portrace => "portrace",
            TracerKind::LibbpfTools => "libbpf-tools",
            TracerKind::Bcc => "bcc",
            TracerKind::Bpftrace => "bpftrace",
        }
    }
}

/// `--rate`: as fast as the machine goes, or a fixed number of connections per second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    Unpaced,
    PerSecond(f64),
}

impl Rate {
    pub fn describe(self) -> String {
        match self {
            Rate::Unpaced => "unpaced".into(),
            Rate::PerSecond(r) => format!("{r} conn/s"),
        }
    }
}

fn parse_rate(text: &str) -> Result<Rate, String> {
    if text.eq_ignore_ascii_case("unpaced") || text == "0" {
        return Ok(Rate::Unpaced);
    }
    match text.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 1_000_000.0 => Ok(Rate::PerSecond(r)),
        _ => Err(format!(
            "'{text}' is not a rate: `unpaced` or connections per second (1 to 1000000)"
        )),
    }
}

#[derive(Clone, Debug, Args)]
pub struct Options {
    /// Connections per workload run.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub count: u64,

    /// Client threads opening connections at the same time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub concurrency: u64,

    /// `unpaced` (as fast as the machine goes) or N connections per second.
    #[arg(long, default_value = "unpaced", value_parser = parse_rate)]
    pub rate: Rate,

    /// Which side closes each connection first.
    #[arg(long = "close", value_enum, default_value_t = Closer::Client)]
    pub closer: Closer,

    /// Loopback (client and server in one namespace), veth (client and server in two
    /// namespaces joined by a veth pair), or both.
    #[arg(long, value_enum, default_value_t = TransportChoice::Both)]
    pub transport: TransportChoice,

    /// Tracers to compare, comma-separated (default: portrace and every peer).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub tracers: Vec<TracerKind>,

    /// Rounds per transport; each round runs every tracer once, each right after an
    /// untraced run of the same workload.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=20))]
    pub rounds: u64,

    /// How many times an untraced/traced pair is run again when other processes
    /// disturbed it (foreign transitions on the tracepoint, or CPU used by others).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=10))]
    pub retries: u64,

    /// Before each pair, wait at most this many seconds for a quiet machine.
    #[arg(long, default_value_t = 60)]
    pub quiet_wait: u64,

    /// apt-get install libbpf-tools, bpfcc-tools and bpftrace first (and the kernel
    /// headers bcc compiles against, when the running kernel has none).
    #[arg(long)]
    pub install_peers: bool,

    /// The portrace binary to measure (cargo xtask bench passes the release build).
    #[arg(long, default_value = "target/release/portrace")]
    pub portrace: PathBuf,

    /// The tcpload workload generator.
    #[arg(long, default_value = "target/release/tcpload")]
    pub tcpload: PathBuf,

    /// Where the full results are written, as JSON.
    #[arg(long, default_value = "target/bench/results.json")]
    pub out: PathBuf,

    /// Directory for the tracers' raw output and other working files.
    #[arg(long, default_value = "target/bench")]
    pub work_dir: PathBuf,

    /// Keep every run's raw tracer output (by default only the last run of each kind).
    #[arg(long)]
    pub keep_raw: bool,

    /// Rounds of the quiet cost (portrace idle on a host busy with fragmented UDP, whose
    /// reassembly arms and removes kernel timers); 0 leaves it out.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=20))]
    pub quiet_rounds: u64,

    /// Seconds of work in each quiet-cost run.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub quiet_seconds: u64,

    /// Untraced loopback storms with reference programs attached (empty, BTF-typed, socket
    /// storage, a hash lookup), to price other designs of the state program, and (with
    /// the quiet cost) one untraced run of its work with reference programs on
    /// `timer:timer_start`; 0 leaves them out.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=10))]
    pub reference_rounds: u64,

    /// Leave out the breakdowns: portrace's own CPU by pipeline stage, and the state
    /// tracepoint's kernel time by component (two loopback runs, sampled by `perf
    /// record`; they need perf).
    #[arg(long = "no-breakdown", action = clap::ArgAction::SetFalse)]
    pub breakdown: bool,
}

impl Options {
    /// The tracers to run, in a fixed order, without repeats.
    pub fn tracer_list(&self) -> Vec<TracerKind> {
        if self.tracers.is_empty() {
            return TracerKind::ALL.to_vec();
        }
        let mut list = self.tracers.clone();
        list.sort();
        list.dedup();
        list
    }
}

#[derive(Clone, Debug, Args)]
pub struct PacedOptions {
    #[arg(long)]
    pub connect: SocketAddr,
    #[arg(long)]
    pub count: u64,
    #[arg(long, default_value_t = 1)]
    pub concurrency: u64,
    /// Connections per second, over all threads together.
    #[arg(long)]
    pub rate: f64,
    /// `first`: close right after connecting; `second`: read to the server's EOF, then close.
    #[arg(long, default_value = "first")]
    pub close: String,
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_issue() {
        let cli = Cli::try_parse_from(["portrace-bench", "run"]).unwrap();
        let Command::Run(o) = cli.command else {
            panic!("not run")
        };
        assert_eq!(o.count, 20_000);
        assert_eq!(o.concurrency, 4);
        assert_eq!(o.rate, Rate::Unpaced);
        assert_eq!(o.closer, Closer::Client);
        assert_eq!(o.transport, TransportChoice::Both);
        assert_eq!(o.rounds, 2);
        assert_eq!(o.tracer_list(), TracerKind::ALL.to_vec());
        assert!(!o.install_peers);
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "portrace-bench",
            "run",
            "--count",
            "500",
            "--rate",
            "2000",
            "--close",
            "server",
            "--transport",
            "veth",
            "--tracers",
            "bpftrace,portrace",
            "--rounds",
            "1",
        ])
        .unwrap();
        let Command::Run(o) = cli.command else {
            panic!("not run")
        };
        assert_eq!(o.count, 500);
        assert_eq!(o.rate, Rate::PerSecond(2000.0));
        assert_eq!(o.closer, Closer::Server);
        assert_eq!(o.transport, TransportChoice::Veth);
        assert_eq!(
            o.tracer_list(),
            vec![TracerKind::Portrace, TracerKind::Bpftrace]
        );
        assert!(Cli::try_parse_from(["portrace-bench", "run", "--rate", "-3"]).is_err());
        assert!(Cli::try_parse_from(["portrace-bench", "run", "--count", "0"]).is_err());
        assert!(Cli::try_parse_from(["portrace-bench", "run", "--tracers", "tcpdump"]).is_err());
    }
}
