//! The command line: flags, their parsing, and their validation into a [`Config`] that the
//! rest of portrace runs from. Every bad value is refused here with a message that names
//! the flag and the value.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::command::CommandSpec;
use crate::alerts::rules::{Expect, Rules};
use crate::alerts::sink::AlertOptions;
use crate::alerts::AlertKind;
use crate::filter::{parse_port, FilterSpec, IpNet};
use crate::record::Family;
use crate::tcp_state::TcpState;

const EXAMPLES: &str = "\
Examples:
  portrace                       every TCP state transition on this host, live
  portrace --port 443            connections to or from port 443
  portrace -D 5432 --format json
                                 connections to PostgreSQL servers, as JSON
                                 Lines
  portrace --state CLOSE_WAIT    sockets entering or leaving CLOSE_WAIT
  portrace --addr 10.0.0.0/8 -c 100 --duration 30s
  portrace -- make test          run `make test`, tracing only its sockets and
                                 those of every process it starts; lists those
                                 left open, exits with its status
  portrace -f json -D 5432 -- ./integration.sh
                                 the script's connections to port 5432, as
                                 JSON Lines
  portrace record -o web.ptr --port 443 --duration 1h
                                 record an hour of port 443 into web.ptr
  portrace record -o ci.ptr -- cargo test
                                 record the connections of a test suite
  portrace replay web.ptr --state TIME_WAIT -f json
                                 the recorded TIME_WAIT transitions, as JSON
                                 Lines
  portrace report web.ptr        connections, time in each state, slowest
                                 handshakes
  portrace diagram -o tcp.svg    the TCP state diagram, with counts from 10 s
                                 of this host
  portrace diagram --from web.ptr --conn 42 -o conn.svg
                                 one connection of a recording, as a sequence
                                 diagram
  portrace --explain             each transition's cause in plain words
  portrace top --port 443        a live full-screen view of port 443's sockets
  portrace top --from web.ptr    the same view of a recording, to move through
                                 in time
  portrace --alerts-only --expect nginx:443 --expect sshd:22
                                 only the alerts: scans, new listeners, owners
                                 outside the allowlist, CLOSE_WAIT leaks,
                                 TIME_WAIT pile-ups, failing handshakes
  portrace report web.ptr --fail-on-alert
                                 exit status 3 if the recording raises any
                                 alert
  portrace doctor                what this kernel lets portrace do, and why not
  portrace serve --owner-labels  Prometheus metrics on 127.0.0.1:9977/metrics";

/// The exit statuses of `portrace`, each with when it is used: `--help` and the manual
/// pages list them from here (see also `main.rs`).
pub const EXIT_STATUS: &[(u8, &str)] = &[
    (0, "success (a recording cut short counts: it was read up to the cut)"),
    (1, "an error, named in the message; `doctor`: the core timeline cannot run"),
    (2, "a bad command line"),
    (3, "--fail-on-alert was given and an alert fired"),
    (127, "`-- CMD` could not run CMD (else portrace exits with CMD's status)"),
];

/// What the manual pages are generated from (`portrace generate man`).
pub fn manual() -> crate::manual::Manual<'static> {
    use clap::CommandFactory as _;
    crate::manual::Manual { command: Args::command(), examples: EXAMPLES, exit_status: EXIT_STATUS }
}

/// The text after the options in `--help`: the examples, then the exit statuses.
fn after_help() -> String {
    format!("{EXAMPLES}\n\n{}", exit_status_help())
}

/// The exit statuses as `--help` shows them (the width is the terminal's, wrapped by clap).
pub fn exit_status_help() -> String {
    let mut text = String::from("Exit status:");
    for (code, meaning) in EXIT_STATUS {
        text.push_str(&format!("\n  {code:<3}  {meaning}"));
    }
    text
}

/// Real-time TCP state tracer: every transition, with its process, endpoints and the time
/// spent in the state it left.
#[derive(Debug, Parser)]
#[command(
    name = "portrace",
    version,
    about,
    after_help = after_help(),
    max_term_width = 100,
    args_conflicts_with_subcommands = true,
    subcommand_value_name = "COMMAND",
    subcommand_help_heading = "Commands (without one, portrace traces live)"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub live: LiveArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace like the live tracer, into a recording FILE instead of standard output.
    ///
    /// The recording holds everything the live tracer would print, and describes itself:
    /// host, kernel, clock, filters, losses. It is written as it goes, block by block, so a
    /// recording cut short (killed, out of disk space) keeps everything written before the
    /// cut. On a terminal, a status line shows how it is going. Ctrl-C, SIGTERM,
    /// --duration or --count end it.
    #[command(after_help = "The format is specified in docs/trace-format.md.")]
    Record(RecordArgs),
    /// Print a recording's timeline as the live tracer printed it, filtered again if asked.
    ///
    /// Filters work as in live tracing, on what was recorded. A recording cut short is
    /// printed up to the cut, with a warning on stderr saying where it was cut; its JSON
    /// output then has no end record, and the exit status is still 0.
    Replay(ReplayArgs),
    /// Summarise a recording: connections, time in each state, slowest handshakes, longest
    /// CLOSE_WAITs, TIME_WAIT per peer.
    Report(ReportArgs),
    /// A full-screen live view of the host's TCP sockets, updated as they change.
    ///
    /// Owner, endpoints, state, time in state and age of every socket; new sockets and
    /// state changes highlighted, closed ones shown 3 s more; the recent transitions, also
    /// those that came and went between two refreshes; sockets per state; losses. Keys:
    /// q quit, / filter, s sort, p pause, Enter a connection's timeline, ? help. With
    /// --from FILE, browses a recording instead (Space plays, arrows step).
    Top(TopArgs),
    /// Draw the TCP state diagram (RFC 9293) with what this host does: each edge with how
    /// many times it was seen and the median time in the state it left.
    ///
    /// Traces live for --duration (10 s unless told; Ctrl-C draws at once), or reads a
    /// recording with --from. The format is --format, or the output file's extension
    /// (.svg, .dot, .mmd, .txt); text on standard output without -o. With --conn, one
    /// connection of a recording as a sequence diagram (SVG or text).
    Diagram(DiagramArgs),
    /// Say what this machine lets portrace do, without tracing: kernel, BTF,
    /// capabilities, tracefs, ring buffers, each kernel program loaded (not attached) or
    /// why not, and each feature on or off with the reason.
    ///
    /// Exits 0 when the core timeline can run here, 1 when it cannot.
    Doctor(DoctorArgs),
    /// Trace live and serve the trace as Prometheus metrics over HTTP, until stopped.
    ///
    /// /metrics: transitions, sockets per state, connection ends by reason, time in
    /// state, losses, alerts, the tracer's own health; /healthz: 200 while every kernel
    /// program the metrics need is attached and the ring buffer is read, 503 with the
    /// reason otherwise. Owner labels (process name, service port) are off unless
    /// --owner-labels is given, and capped.
    #[command(after_help = "Every metric and label is described in docs/serve.md.")]
    Serve(ServeArgs),
}

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

// `portrace generate`: parsed apart from `Args`, so that neither `--help`, nor the pages,
// nor the completions it writes offer it.
#[derive(Debug, Parser)]
#[command(
    name = "portrace-generate",
    bin_name = "portrace generate",
    version,
    about = "Write portrace's manual pages or shell completions (for packaging: `cargo xtask install` and `cargo xtask dist` run it)"
)]
pub struct GenerateArgs {
    #[command(subcommand)]
    pub what: GenerateWhat,
}

#[derive(Debug, Subcommand)]
pub enum GenerateWhat {
    /// Write portrace.1 and a page for each command (portrace-record.1, ...) into DIR,
    /// which must exist; an existing page is not replaced.
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print SHELL's completion script for portrace on standard output.
    Complete {
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
}

/// `portrace doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// One JSON object on standard output instead of the table.
    #[arg(long)]
    pub json: bool,
}

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

/// The filter flags, shared by live tracing, `record`, `replay` and `report`.
#[derive(Debug, Default, clap::Args)]
#[command(next_help_heading = "Filters")]
pub struct FilterArgs {
    /// Keep connections whose local port is PORT (repeatable, or a list: -L 80,443).
    #[arg(short = 'L', long = "lport", value_name = "PORT", value_parser = parse_port, value_delimiter = ',')]
    pub lport: Vec<u16>,

    /// Keep connections whose remote port is PORT (repeatable, or a list).
    #[arg(short = 'D', long = "rport", value_name = "PORT", value_parser = parse_port, value_delimiter = ',')]
    pub rport: Vec<u16>,

    /// Keep connections with PORT at either end (repeatable, or a list).
    #[arg(long = "port", value_name = "PORT", value_parser = parse_port, value_delimiter = ',')]
    pub port: Vec<u16>,

    /// Keep connections with an endpoint in this address or network (repeatable, or a
    /// list: --addr 10.0.0.0/8,::1).
    #[arg(long = "addr", value_name = "IP[/LEN]", value_parser = clap::value_parser!(IpNet), value_delimiter = ',')]
    pub addr: Vec<IpNet>,

    /// IPv4 only (IPv6 sockets with v4-mapped addresses count as IPv4).
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// IPv6 only.
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,

    /// Keep sockets owned by process PID (repeatable, or a list).
    #[arg(short = 'p', long = "pid", value_name = "PID", value_parser = parse_pid, value_delimiter = ',')]
    pub pid: Vec<u32>,

    /// Keep sockets owned by a process whose command name is COMM (as in ps -o comm).
    #[arg(long = "comm", value_name = "COMM", value_parser = parse_comm)]
    pub comm: Option<String>,

    /// Keep transitions into or out of STATE, e.g. ESTABLISHED or close-wait (repeatable,
    /// or a list).
    #[arg(short = 's', long = "state", value_name = "STATE", value_parser = parse_state, value_delimiter = ',')]
    pub state: Vec<TcpState>,

    /// Keep sockets whose owner runs in this cgroup v2 or below it: a directory under
    /// /sys/fs/cgroup, or a path as /proc/PID/cgroup shows it (/system.slice/nginx.service).
    /// Live, the kernel decides it in the owner's own system call; a replay matches the
    /// recorded cgroup paths.
    #[arg(long = "cgroup", value_name = "PATH", value_parser = crate::filter::CgroupFilter::parse)]
    pub cgroup: Option<crate::filter::CgroupFilter>,

    /// Keep sockets in this network namespace: its inode number (lsns -t net), or a name
    /// from ip netns (repeatable).
    #[arg(long = "netns", value_name = "NS", value_parser = crate::filter::parse_netns)]
    pub netns: Vec<u32>,
}

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
    fn into_spec(self) -> Option<CommandSpec> {
        (!self.command.is_empty()).then_some(CommandSpec { argv: self.command, as_root: self.as_root })
    }
}

/// Alert detectors: thresholds, the allowlist, and what alerts do to the exit status.
/// Defaults are in docs/usage.md's table (Alerts); a rules file sets them too, and flags override it.
#[derive(Debug, Default, clap::Args)]
#[command(next_help_heading = "Alerts")]
pub struct AlertArgs {
    /// Read thresholds and expectations from this TOML rules file (see docs/usage.md).
    #[arg(long = "rules", value_name = "FILE", value_parser = parse_rules_file)]
    pub rules: Option<Rules>,

    /// Allow processes named NAME (command name or executable file name) to listen on,
    /// serve or connect to PORT (`*`: any). With any --expect, other owners of listening
    /// or established sockets alert (repeatable).
    #[arg(long = "expect", value_name = "NAME:PORT", value_parser = Expect::parse)]
    pub expect: Vec<Expect>,

    /// Warn when a script interpreter (python, perl, node, ...) opens an outbound
    /// connection, as when a shell does (off by default: most services are interpreters).
    #[arg(long)]
    pub alert_interpreters: bool,

    /// Exit with status 3 when any alert fired.
    #[arg(long)]
    pub fail_on_alert: bool,

    /// Turn off one detector: scan, new-listener, unexpected-owner, close-wait-leak,
    /// time-wait-pileup, handshake-trouble (repeatable).
    #[arg(long = "disable-alert", value_name = "KIND", value_parser = AlertKind::parse)]
    pub disable: Vec<AlertKind>,

    /// Run no detector at all.
    #[arg(long, conflicts_with_all = ["fail_on_alert", "disable"])]
    pub no_alerts: bool,

    /// Scan: SYNs to this many distinct destinations (address:port) within the window
    /// [default: 20].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub scan_targets: Option<u32>,

    /// Scan: or connects failing to this many distinct destinations within the window
    /// [default: 10]...
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub scan_failures: Option<u32>,

    /// Scan: ...at this failure rate or more, in percent [default: 50].
    #[arg(long, value_name = "PCT", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub scan_failure_rate: Option<u32>,

    /// Scan: the window [default: 10s].
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    pub scan_window: Option<Duration>,

    /// CLOSE_WAIT leak: sockets in CLOSE_WAIT this long [default: 30s].
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    pub close_wait_after: Option<Duration>,

    /// TIME_WAIT pile-up: TIME_WAIT sockets towards one peer, in percent of the local port
    /// range [default: 50]; or the range used up within 60 s at the current rate.
    #[arg(long, value_name = "PCT", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub time_wait_percent: Option<u32>,

    /// TIME_WAIT pile-up: this many instead of a percentage, whatever the range.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub time_wait_count: Option<u32>,

    /// Handshake trouble: this many failed handshakes per listener or destination within
    /// the window [default: 5]...
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub handshake_failures: Option<u32>,

    /// Handshake trouble: ...being at least this percentage of the handshakes [default: 50].
    #[arg(long, value_name = "PCT", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub handshake_failure_rate: Option<u32>,

    /// Handshake trouble: the window [default: 60s].
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    pub handshake_window: Option<Duration>,

    /// A subject (process, listener, destination, peer) alerts again only after this long
    /// [default: 60s].
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    pub alert_repeat: Option<Duration>,
}

impl AlertArgs {
    /// The options: the rules file (or the defaults), then the flags over it.
    pub fn into_options(self, only: bool) -> AlertOptions {
        let mut r = self.rules.unwrap_or_default();
        let ns = |d: Duration| d.as_nanos() as u64;
        r.expect.extend(self.expect);
        r.interpreters |= self.alert_interpreters;
        for kind in self.disable {
            if !r.disabled.contains(&kind) {
                r.disabled.push(kind);
            }
        }
        if let Some(n) = self.scan_targets {
            r.scan.targets = n;
        }
        if let Some(n) = self.scan_failures {
            r.scan.failures = n;
        }
        if let Some(n) = self.scan_failure_rate {
            r.scan.failure_pct = n;
        }
        if let Some(d) = self.scan_window {
            r.scan.window_ns = ns(d);
        }
        if let Some(d) = self.close_wait_after {
            r.close_wait.after_ns = ns(d);
        }
        if let Some(n) = self.time_wait_percent {
            r.time_wait.percent = n;
        }
        if let Some(n) = self.time_wait_count {
            r.time_wait.count = Some(n);
        }
        if let Some(n) = self.handshake_failures {
            r.handshake.failures = n;
        }
        if let Some(n) = self.handshake_failure_rate {
            r.handshake.failure_pct = n;
        }
        if let Some(d) = self.handshake_window {
            r.handshake.window_ns = ns(d);
        }
        if let Some(d) = self.alert_repeat {
            r.repeat_ns = ns(d);
        }
        AlertOptions { enabled: !self.no_alerts, rules: r, only, fail: self.fail_on_alert }
    }
}

/// Reads the rules file with the user's own rights ([`crate::privilege::with_user_rights`]):
/// a binary given capabilities must not read, and quote in a parse error, a file its user
/// could not read. The error is escaped for the terminal.
fn parse_rules_file(path: &str) -> Result<Rules, String> {
    crate::privilege::with_user_rights(|| Rules::from_file(std::path::Path::new(path)))
        .map_err(|e| format!("cannot lower this process's capabilities to read {path} with your rights: {e}"))?
        .map_err(|e| e.split('\n').map(|line| crate::escape::text(line)).collect::<Vec<_>>().join("\n"))
}

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
    fn options(self, dir: PathBuf) -> crate::flight::FlightOptions {
        crate::flight::FlightOptions {
            dir,
            rotate: self.rotate.unwrap_or(crate::flight::DEFAULT_ROTATE),
            keep: self.keep.unwrap_or(crate::flight::DEFAULT_KEEP),
            max_size: self.max_size,
        }
    }
}

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

/// `portrace replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// A recording made with `portrace record` (`-`: standard input).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Output format.
    #[arg(short = 'f', long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,

    /// When to colour the text output.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,

    /// Describe the recording (host, kernel, times, filters, clock, tracepoint layout,
    /// losses) instead of printing its records.
    #[arg(long)]
    pub info: bool,

    /// Read a damaged recording up to the damage instead of refusing it.
    #[arg(long)]
    pub salvage: bool,

    /// Add each transition's cause in plain words, as live tracing does.
    #[arg(long)]
    pub explain: bool,

    #[command(flatten)]
    pub filter: FilterArgs,

    /// Show only the alerts (and lost-record lines, which say alerts may be missing).
    #[arg(long, help_heading = "Alerts")]
    pub alerts_only: bool,

    #[command(flatten)]
    pub alerts: AlertArgs,
}

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
pub enum ReportFormat {
    /// Aligned tables for people.
    Text,
    /// One JSON document.
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
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
    /// A trace for a command that makes its own output from the records (`serve`, `top`):
    /// the default alerts, and none of the live output's options.
    pub fn engine_only(filter: FilterSpec, ring_size: u32) -> Config {
        Config {
            filter,
            format: OutputFormat::Text,
            duration: None,
            count: None,
            ring_size,
            color: ColorChoice::Never,
            snapshot: false,
            summary: false,
            verbose: false,
            explain: false,
            command: None,
            alerts: AlertOptions::default(),
        }
    }
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

/// `portrace replay`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayConfig {
    pub file: PathBuf,
    pub filter: FilterSpec,
    pub format: OutputFormat,
    pub color: ColorChoice,
    pub info: bool,
    pub salvage: bool,
    pub explain: bool,
    pub alerts: AlertOptions,
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

/// `portrace top`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopConfig {
    /// A recording to browse; live when `None`.
    pub from: Option<PathBuf>,
    pub salvage: bool,
    pub ring_size: u32,
    pub filter: FilterSpec,
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Task {
    Live(Config),
    Record(RecordConfig),
    Replay(ReplayConfig),
    Report(ReportConfig),
    Diagram(Box<crate::diagram::DiagramConfig>),
    Top(TopConfig),
    Doctor(crate::doctor::DoctorConfig),
    Generate(crate::manual::Generate),
    Serve(crate::serve::ServeConfig),
}

impl Task {
    /// Whether the task only reads files the user names (a recording) and needs no
    /// capability: `replay`, `report`, `diagram --from`, `top --from`, `generate`. These drop every
    /// capability before they open anything ([`crate::privilege::drop_all`]).
    pub fn is_offline(&self) -> bool {
        match self {
            Task::Replay(_) | Task::Report(_) | Task::Generate(_) => true,
            Task::Diagram(d) => d.from.is_some(),
            Task::Top(t) => t.from.is_some(),
            Task::Live(_) | Task::Record(_) | Task::Doctor(_) | Task::Serve(_) => false,
        }
    }
}

impl FilterArgs {
    pub fn into_spec(self) -> FilterSpec {
        let family = match (self.ipv4, self.ipv6) {
            (true, _) => Some(Family::Ipv4),
            (_, true) => Some(Family::Ipv6),
            _ => None,
        };
        FilterSpec {
            lports: self.lport,
            rports: self.rport,
            ports: self.port,
            nets: self.addr,
            pids: self.pid,
            comm: self.comm,
            family,
            states: self.state,
            cgroup: self.cgroup,
            netns: self.netns,
        }
    }
}

impl Args {
    /// What the process's arguments ask for; exits with clap's message and status 2 on a
    /// bad command line. Help wraps to the terminal (at most 100 columns), and to 80
    /// columns when standard output is no terminal and `COLUMNS` is unset (a pipe, a file).
    pub fn parse_env() -> Task {
        use std::io::IsTerminal as _;
        let width = (std::env::var_os("COLUMNS").is_none() && !std::io::stdout().is_terminal()).then_some(80);
        Args::try_parse_task(std::env::args_os(), width).unwrap_or_else(|e| e.exit())
    }

    /// Parses `argv` (the program's name first) into a task; `width` fixes the help's width.
    pub fn try_parse_task<I, T>(argv: I, width: Option<usize>) -> Result<Task, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        use clap::{CommandFactory as _, FromArgMatches as _};
        let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
        let (mut command, generate) = match argv.get(1) {
            Some(first) if first == "generate" => (GenerateArgs::command(), true),
            _ => (Args::command(), false),
        };
        if let Some(width) = width {
            command = command.term_width(width);
        }
        if generate {
            let mut matches = command.try_get_matches_from(&argv[1..])?;
            let args = GenerateArgs::from_arg_matches_mut(&mut matches)?;
            return Ok(Task::Generate(match args.what {
                GenerateWhat::Man { dir } => crate::manual::Generate::Man { dir },
                GenerateWhat::Complete { shell } => crate::manual::Generate::Completion { shell },
            }));
        }
        let mut matches = command.try_get_matches_from(argv)?;
        Ok(Args::from_arg_matches_mut(&mut matches)?.into_task())
    }

    pub fn into_task(self) -> Task {
        match self.command {
            None => Task::Live(self.live.into_config()),
            Some(Command::Record(r)) => Task::Record(RecordConfig {
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
                    (path, None) => {
                        RecordTarget::File { path: path.expect("clap requires -o without --dir"), force: r.force }
                    }
                },
                compress: r.compress,
            }),
            Some(Command::Replay(r)) => Task::Replay(ReplayConfig {
                file: r.file,
                filter: r.filter.into_spec(),
                format: r.format,
                color: r.color,
                info: r.info,
                salvage: r.salvage,
                explain: r.explain,
                alerts: r.alerts.into_options(r.alerts_only),
            }),
            Some(Command::Report(r)) => Task::Report(ReportConfig {
                file: r.file,
                filter: r.filter.into_spec(),
                format: r.format,
                by_port: r.by_port,
                by_process: r.by_process,
                top: r.top as usize,
                salvage: r.salvage,
                alerts: r.alerts.into_options(r.alerts_only),
            }),
            Some(Command::Diagram(d)) => Task::Diagram(Box::new(crate::diagram::DiagramConfig {
                trace: Config {
                    filter: d.filter.into_spec(),
                    format: OutputFormat::Text,
                    duration: d.limits.duration,
                    count: d.limits.count,
                    ring_size: d.limits.ring_size,
                    color: ColorChoice::Never,
                    snapshot: false,
                    summary: d.limits.summary,
                    verbose: d.limits.verbose,
                    explain: false,
                    command: None,
                    alerts: AlertOptions { enabled: false, ..AlertOptions::default() },
                },
                from: d.from,
                salvage: d.salvage,
                output: d.output,
                force: d.force,
                format: d.format,
                conn: d.conn,
            })),
            Some(Command::Doctor(d)) => Task::Doctor(crate::doctor::DoctorConfig { json: d.json }),
            Some(Command::Serve(s)) => Task::Serve(crate::serve::ServeConfig {
                trace: Config { duration: s.duration, ..Config::engine_only(s.filter.into_spec(), s.ring_size) },
                listen: s.listen,
                record: s.record_dir.map(|dir| crate::serve::Recording { flight: s.flight.options(dir), compress: s.compress }),
                owner_labels: s.owner_labels,
                label_limit: s.max_label_values as usize,
                check_interval: (!s.check_interval.is_zero()).then_some(s.check_interval),
            }),
            Some(Command::Top(t)) => Task::Top(TopConfig {
                from: t.from,
                salvage: t.salvage,
                ring_size: t.ring_size,
                filter: t.filter.into_spec(),
            }),
        }
    }
}

impl LiveArgs {
    /// The configuration of `portrace` with no flags.
    #[cfg(test)]
    pub(crate) fn parse_from_empty() -> Config {
        Args::parse_from(["portrace"]).live.into_config()
    }

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

/// A process id: a positive number.
fn parse_pid(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(0) => Err("0 is no process: process ids start at 1 (see ps -e)".to_owned()),
        Ok(pid) if pid <= i32::MAX as u32 => Ok(pid),
        _ => Err(format!("'{text}' is not a process id: give the number ps shows in its PID column")),
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

/// Parses a duration: a plain number of seconds (`10`, `1.5`), one number with a unit
/// (`250ms`, `1.5s`, `5m`, `2h`), or humantime's forms (`1m30s`, `1h 15m`, `2days`).
/// Between 0 and a year, both excluded and included.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad = || format!("'{text}' is not a duration (expected e.g. 30s, 5m, 1m30s, 1h, 250ms, or seconds)");
    let seconds = match decimal_duration(t) {
        Some(seconds) => seconds,
        None => humantime::parse_duration(t).map_err(|_| bad())?.as_secs_f64(),
    };
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 366.0 * 86400.0 {
        return Err(format!("duration '{text}' is out of range (more than 0, at most a year)"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// The forms humantime does not take: seconds without a unit, and a fraction with a unit
/// (`1.5s`). `None` for anything else.
fn decimal_duration(t: &str) -> Option<f64> {
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().ok()?;
    match unit {
        "" | "s" => Some(value),
        "ms" => Some(value / 1000.0),
        "m" | "min" => Some(value * 60.0),
        "h" => Some(value * 3600.0),
        _ => None,
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

/// Bytes with an optional K, M or G suffix (powers of 1024; `KB`, `KiB` and the like too);
/// `None` when it is not a size or does not fit in 64 bits.
fn parse_bytes(text: &str) -> Option<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let t = lower.strip_suffix('b').unwrap_or(&lower);
    let t = t.strip_suffix('i').unwrap_or(t);
    let (digits, scale) = match t.char_indices().last() {
        Some((i, 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'm')) => (&t[..i], 1 << 20),
        Some((i, 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    digits.parse::<u64>().ok().and_then(|n| n.checked_mul(scale))
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

/// Parses a ring buffer size: bytes with an optional K, M or G suffix (powers of 1024).
/// The kernel needs a power of two that is a multiple of the page size.
pub fn parse_ring_size(text: &str) -> Result<u32, String> {
    let bytes = parse_bytes(text).ok_or_else(|| format!("'{text}' is not a size (expected e.g. 4096, 64K or 4M)"))?;
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

    fn task(args: &[&str]) -> Result<Task, String> {
        let mut argv = vec!["portrace"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv).map(Args::into_task).map_err(|e| e.to_string())
    }

    fn parse(args: &[&str]) -> Result<Config, String> {
        match task(args)? {
            Task::Live(config) => Ok(config),
            other => panic!("{args:?} is not live tracing: {other:?}"),
        }
    }

    #[test]
    fn no_arguments_trace_everything_as_text() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.filter, FilterSpec::default());
        assert_eq!(c.format, OutputFormat::Text);
        assert_eq!(c.ring_size, 4 << 20);
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
    fn repeatable_filters_take_comma_lists() {
        let c = parse(&[
            "-L", "80,443", "-L", "8080", "-D", "5432,6432", "--port", "22,2222", "--addr", "10.0.0.0/8,::1",
            "--pid", "7,9", "--state", "LISTEN,close-wait",
        ])
        .unwrap();
        assert_eq!(c.filter.lports, vec![80, 443, 8080]);
        assert_eq!(c.filter.rports, vec![5432, 6432]);
        assert_eq!(c.filter.ports, vec![22, 2222]);
        assert_eq!(c.filter.nets.iter().map(ToString::to_string).collect::<Vec<_>>(), ["10.0.0.0/8", "::1/128"]);
        assert_eq!(c.filter.pids, vec![7, 9]);
        assert_eq!(c.filter.states, vec![TcpState::Listen, TcpState::CloseWait]);
        // A bad item is named, not the whole list.
        let err = parse(&["-L", "80,x"]).unwrap_err();
        assert!(err.contains("'x' is not a port number"), "{err}");
        let err = parse(&["--pid", "7,0"]).unwrap_err();
        assert!(err.contains("0 is no process"), "{err}");
        let Task::Replay(r) = task(&["replay", "t.ptr", "--port", "80,443"]).unwrap() else { panic!("not a replay") };
        assert_eq!(r.filter.ports, vec![80, 443]);
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
            (&["--pid", "0"], "0 is no process: process ids start at 1"),
            (&["--pid", "abc"], "'abc' is not a process id: give the number ps shows"),
            (&["--pid", "4294967295"], "'4294967295' is not a process id"),
            (&["--comm", "a-name-longer-than-15"], "the kernel keeps 1 to 15 bytes"),
        ];
        for (args, expected) in cases {
            let err = parse(args).expect_err(&format!("{args:?} should be refused"));
            assert!(err.contains(expected), "{args:?}: {err}");
        }
    }

    #[test]
    fn record_dir_is_the_flight_recorder_with_checked_bounds() {
        let Task::Record(r) = task(&["record", "--dir", "/var/lib/f", "--port", "80"]).unwrap() else {
            panic!("not a recording");
        };
        let defaults = crate::flight::FlightOptions {
            dir: PathBuf::from("/var/lib/f"),
            rotate: Duration::from_secs(600),
            keep: 12,
            max_size: None,
        };
        assert_eq!(r.target, RecordTarget::Dir(defaults));
        assert_eq!(r.trace.filter.ports, vec![80]);
        let Task::Record(r) =
            task(&["record", "--dir", "d", "--rotate", "1h", "--keep", "3", "--max-size", "64M", "--compress"]).unwrap()
        else {
            panic!("not a recording");
        };
        let RecordTarget::Dir(f) = r.target else { panic!("not the flight recorder") };
        assert_eq!((f.rotate, f.keep, f.max_size, r.compress), (Duration::from_secs(3600), 3, Some(64 << 20), true));
        let cases: &[(&[&str], &str)] = &[
            (&["record", "--dir", "d", "--keep", "0"], "--keep 0 would keep no finished recording"),
            (&["record", "--dir", "d", "--keep", "many"], "'many' is not a number of files"),
            (&["record", "--dir", "d", "--rotate", "500ms"], "a file must cover at least 1s"),
            (&["record", "--dir", "d", "--rotate", "soon"], "'soon' is not a duration"),
            (&["record", "--dir", "d", "--max-size", "1K"], "--max-size 1K is too small"),
            (&["record", "--dir", "d", "--max-size", "big"], "'big' is not a size"),
            (&["record", "--dir", "d", "-o", "t.ptr"], "cannot be used with"),
            (&["record", "--dir", "d", "--force"], "cannot be used with"),
            (&["record", "-o", "t.ptr", "--keep", "3"], "cannot be used with"),
            (&["record", "-o", "t.ptr", "--rotate", "1m"], "cannot be used with"),
            (&["record", "-o", "t.ptr", "--max-size", "1G"], "cannot be used with"),
            (&["record", "--rotate", "1m"], "--dir"),
        ];
        for (args, expected) in cases {
            let err = task(args).expect_err(&format!("{args:?} should be refused"));
            assert!(err.contains(expected), "{args:?}: {err}");
        }
    }

    #[test]
    fn record_takes_every_live_filter_and_limit() {
        let Task::Record(r) = task(&[
            "record", "-o", "t.ptr", "--port", "80", "-L", "81", "-D", "82", "--addr", "10.0.0.0/8", "-4",
            "--pid", "7", "--comm", "nginx", "--state", "LISTEN", "--duration", "5s", "--count", "9",
            "--ring-size", "64K", "--compress", "--force", "--summary",
        ])
        .unwrap() else {
            panic!("not a recording");
        };
        assert_eq!(r.target, RecordTarget::File { path: PathBuf::from("t.ptr"), force: true });
        assert!(r.compress && r.trace.summary);
        let f = &r.trace.filter;
        assert_eq!((&f.ports[..], &f.lports[..], &f.rports[..]), (&[80][..], &[81][..], &[82][..]));
        assert_eq!((f.family, &f.pids[..], f.comm.as_deref()), (Some(Family::Ipv4), &[7][..], Some("nginx")));
        assert_eq!(f.states, vec![TcpState::Listen]);
        assert_eq!(f.nets.len(), 1);
        assert_eq!((r.trace.duration, r.trace.count, r.trace.ring_size), (Some(Duration::from_secs(5)), Some(9), 65536));
        assert!(!r.trace.snapshot);
    }

    #[test]
    fn replay_and_report_take_a_file_and_filters() {
        let Task::Replay(r) = task(&["replay", "t.ptr", "--port", "443", "-f", "csv", "--salvage"]).unwrap() else {
            panic!("not a replay");
        };
        assert_eq!((r.file, r.format, r.salvage, r.info), (PathBuf::from("t.ptr"), OutputFormat::Csv, true, false));
        assert_eq!(r.filter.ports, vec![443]);
        let Task::Report(r) = task(&["report", "t.ptr", "--format", "json", "--by-port", "--top", "3", "-6"]).unwrap()
        else {
            panic!("not a report");
        };
        assert_eq!((r.format, r.by_port, r.by_process, r.top), (ReportFormat::Json, true, false, 3));
        assert_eq!(r.filter.family, Some(Family::Ipv6));
    }

    #[test]
    fn live_flags_stay_at_the_top_level() {
        let c = parse(&["--port", "80", "--summary"]).unwrap();
        assert_eq!(c.filter.ports, vec![80]);
        assert!(c.summary);
        assert!(!parse(&[]).unwrap().summary);
    }

    #[test]
    fn commands_refuse_what_does_not_belong_to_them() {
        let cases: &[(&[&str], &str)] = &[
            // Flags of live tracing come after a command, never before it.
            (&["--port", "80", "record", "-o", "t.ptr"], "unexpected argument 'record'"),
            (&["record"], "--output <FILE>"),
            (&["record", "-o", "t.ptr", "--format", "json"], "unexpected argument '--format'"),
            (&["record", "-o", "t.ptr", "--snapshot"], "unexpected argument '--snapshot'"),
            (&["replay"], "<FILE>"),
            (&["replay", "t.ptr", "--duration", "5s"], "unexpected argument '--duration'"),
            (&["report", "t.ptr", "--format", "csv"], "invalid value 'csv'"),
            (&["report", "t.ptr", "--top", "0"], "--top"),
            (&["record", "-o", "t.ptr", "--port", "70000"], "port 70000 is out of range"),
            (&["replay", "t.ptr", "--state", "ESTABLISH"], "unknown TCP state 'ESTABLISH'"),
        ];
        for (args, expected) in cases {
            let err = task(args).expect_err(&format!("{args:?} should be refused"));
            assert!(err.contains(expected), "{args:?}: {err}");
        }
    }

    #[test]
    fn diagram_takes_a_source_an_output_and_filters() {
        let Task::Diagram(d) = task(&["diagram", "-o", "tcp.svg", "--port", "443", "--duration", "30s"]).unwrap() else {
            panic!("not a diagram");
        };
        assert_eq!((d.output, d.from, d.conn, d.format), (Some(PathBuf::from("tcp.svg")), None, None, None));
        assert_eq!((d.trace.filter.ports.clone(), d.trace.duration), (vec![443], Some(Duration::from_secs(30))));
        let Task::Diagram(d) = task(&["diagram", "--from", "t.ptr", "--conn", "7", "-f", "text"]).unwrap() else {
            panic!("not a diagram");
        };
        assert_eq!((d.from, d.conn, d.format), (Some(PathBuf::from("t.ptr")), Some(7), Some(crate::diagram::DiagramFormat::Text)));
        for (args, expected) in [
            (&["diagram", "--conn", "7"][..], "--from <FILE>"),
            (&["diagram", "--from", "t.ptr", "--duration", "5s"], "cannot be used with"),
            (&["diagram", "-f", "png"], "invalid value 'png'"),
            (&["diagram", "--from", "t.ptr", "--conn", "x"], "invalid value 'x'"),
        ] {
            let err = task(args).expect_err(&format!("{args:?} should be refused"));
            assert!(err.contains(expected), "{args:?}: {err}");
        }
    }

    #[test]
    fn top_takes_filters_and_a_recording() {
        let Task::Top(t) = task(&["top", "--port", "443", "--ring-size", "64K"]).unwrap() else {
            panic!("not top");
        };
        assert_eq!((t.from, t.ring_size, t.salvage), (None, 65536, false));
        assert_eq!(t.filter.ports, vec![443]);
        let Task::Top(t) = task(&["top", "--from", "t.ptr", "--salvage", "-s", "LISTEN"]).unwrap() else {
            panic!("not top");
        };
        assert_eq!((t.from, t.salvage), (Some(PathBuf::from("t.ptr")), true));
        assert_eq!(t.filter.states, vec![TcpState::Listen]);
        for (args, expected) in [
            (&["top", "--salvage"][..], "--from"),
            (&["top", "--from", "t.ptr", "--ring-size", "64K"][..], "cannot be used with"),
            (&["top", "--format", "json"][..], "unexpected argument '--format'"),
        ] {
            let err = task(args).expect_err(&format!("{args:?} should be refused"));
            assert!(err.contains(expected), "{args:?}: {err}");
        }
    }

    #[test]
    fn a_command_after_the_double_dash_is_traced_alone() {
        let c = parse(&["--port", "80", "-f", "json", "--", "sh", "-c", "curl -s x --port 1", "--as-root"]).unwrap();
        let spec = c.command.expect("a command");
        let argv: Vec<&str> = spec.argv.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(argv, ["sh", "-c", "curl -s x --port 1", "--as-root"], "everything after -- is the command's");
        assert!(!spec.as_root);
        assert_eq!(c.filter.ports, vec![80]);
        assert_eq!(c.format, OutputFormat::Json);
        let c = parse(&["--as-root", "--", "id"]).unwrap();
        assert!(c.command.unwrap().as_root);
        assert_eq!(parse(&[]).unwrap().command, None);
        let Task::Record(r) = task(&["record", "-o", "t.ptr", "--count", "3", "--", "make", "test"]).unwrap() else {
            panic!("not a recording");
        };
        assert_eq!(r.trace.command.unwrap().argv, vec![OsString::from("make"), OsString::from("test")]);
        assert_eq!(r.trace.count, Some(3));
    }

    #[test]
    fn command_flags_are_refused_where_they_make_no_sense() {
        let cases: &[(&[&str], &str)] = &[
            (&["--as-root"], "--as-root"),
            (&["--snapshot", "--", "true"], "cannot be used with"),
            (&["sh", "-c", "true"], "unexpected argument 'sh'"),
            (&["replay", "t.ptr", "--", "true"], "unexpected argument"),
            (&["report", "t.ptr", "--", "true"], "unexpected argument"),
        ];
        for (args, expected) in cases {
            let err = task(args).expect_err(&format!("{args:?} should be refused"));
            assert!(err.contains(expected), "{args:?}: {err}");
        }
    }

    #[test]
    fn alert_flags_override_the_rules_file() {
        let dir = std::env::temp_dir().join(format!("portrace-cli-rules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("rules.toml");
        std::fs::write(&file, "expect = [\"sshd:22\"]\n[scan]\ntargets = 5\nfailures = 3\n").unwrap();
        let path = file.display().to_string();
        let c = parse(&[
            "--rules", &path, "--scan-targets", "7", "--expect", "nginx:*", "--close-wait-after", "2s",
            "--time-wait-count", "100", "--disable-alert", "new-listener", "--alerts-only", "--fail-on-alert",
        ])
        .unwrap();
        let r = &c.alerts.rules;
        assert_eq!((r.scan.targets, r.scan.failures), (7, 3));
        assert_eq!(r.expect, vec![Expect::parse("sshd:22").unwrap(), Expect::parse("nginx:*").unwrap()]);
        assert_eq!(r.close_wait.after_ns, 2_000_000_000);
        assert_eq!(r.time_wait.count, Some(100));
        assert_eq!(r.disabled, vec![AlertKind::NewListener]);
        assert!(c.alerts.enabled && c.alerts.only && c.alerts.fail);
        assert!(!parse(&["--no-alerts"]).unwrap().alerts.enabled);
        let Task::Report(r) = task(&["report", "t.ptr", "--alerts-only", "--handshake-failures", "2"]).unwrap() else {
            panic!("not a report");
        };
        assert!(r.alerts.only);
        assert_eq!(r.alerts.rules.handshake.failures, 2);
        let Task::Record(r) = task(&["record", "-o", "t.ptr", "--expect", "a:1"]).unwrap() else {
            panic!("not a recording");
        };
        assert_eq!(r.trace.alerts.rules.expect.len(), 1);

        std::fs::write(&file, "[scan]\ntargest = 5\n").unwrap();
        let err = parse(&["--rules", &path]).unwrap_err();
        assert!(err.contains("unknown field `targest`") && err.contains(&path), "{err}");
        // A rules file quoted in an error reaches the terminal escaped, its lines kept.
        std::fs::write(&file, "repeat = \"\x1b]0;pwn\x07\n").unwrap();
        let err = parse(&["--rules", &path]).unwrap_err();
        assert!(err.contains("\\x1b]0;pwn\\x07") && !err.contains('\x1b') && err.contains('\n'), "{err:?}");
        std::fs::remove_dir_all(&dir).unwrap();
        let cases: &[(&[&str], &str)] = &[
            (&["--expect", "nginx"], "'nginx' is not NAME:PORT"),
            (&["--scan-failure-rate", "101"], "--scan-failure-rate"),
            (&["--close-wait-after", "soon"], "'soon' is not a duration"),
            (&["--disable-alert", "worms"], "unknown alert 'worms'"),
            (&["--rules", "/nonexistent.toml"], "cannot read rules file /nonexistent.toml"),
            (&["--no-alerts", "--fail-on-alert"], "cannot be used with"),
            (&["record", "-o", "t.ptr", "--alerts-only"], "unexpected argument '--alerts-only'"),
        ];
        for (args, expected) in cases {
            let err = task(args).expect_err(&format!("{args:?} should be refused"));
            assert!(err.contains(expected), "{args:?}: {err}");
        }
    }

    #[test]
    fn explain_is_a_live_and_replay_flag() {
        assert!(parse(&["--explain"]).unwrap().explain);
        assert!(!parse(&[]).unwrap().explain);
        let Task::Replay(r) = task(&["replay", "t.ptr", "--explain"]).unwrap() else { panic!("not a replay") };
        assert!(r.explain);
    }

    /// Every help text, short and long, of every command fits 80 columns when the terminal
    /// is that wide, and lists the exit statuses.
    #[test]
    fn help_fits_80_columns_and_lists_exit_statuses() {
        use clap::CommandFactory as _;
        let mut top = Args::command().term_width(80);
        top.build();
        let mut commands = vec![top.clone()];
        commands.extend(top.get_subcommands().filter(|c| !c.is_hide_set()).cloned());
        assert!(commands.len() >= 7);
        for mut command in commands {
            let name = command.get_name().to_owned();
            for help in [command.render_help().to_string(), command.render_long_help().to_string()] {
                for line in help.lines() {
                    assert!(line.chars().count() <= 80, "{name}: a line of {} columns:\n{line}", line.chars().count());
                }
            }
        }
        let help = top.render_long_help().to_string();
        assert!(help.contains("Exit status:\n  0    success"), "{help}");
        for (code, _) in EXIT_STATUS {
            assert!(help.contains(&format!("\n  {code:<3}  ")), "exit status {code}:\n{help}");
        }
        assert!(!help.contains("generate"), "the packaging command is hidden:\n{help}");
    }

    #[test]
    fn generate_writes_pages_or_completions_and_is_offline() {
        let task = |args: &[&str]| {
            let argv = std::iter::once("portrace").chain(args.iter().copied());
            Args::try_parse_task(argv, None).map_err(|e| e.to_string())
        };
        let t = task(&["generate", "man", "/tmp/x"]).unwrap();
        assert!(t.is_offline());
        assert_eq!(t, Task::Generate(crate::manual::Generate::Man { dir: PathBuf::from("/tmp/x") }));
        assert_eq!(
            task(&["generate", "complete", "zsh"]).unwrap(),
            Task::Generate(crate::manual::Generate::Completion { shell: clap_complete::Shell::Zsh })
        );
        assert!(task(&["generate", "complete", "tcsh"]).unwrap_err().contains("invalid value 'tcsh'"));
        // Everything else parses as before.
        assert_eq!(task(&["--port", "80"]).unwrap(), Args::try_parse_from(["portrace", "--port", "80"]).unwrap().into_task());
        assert!(task(&["--port", "80", "generate"]).unwrap_err().contains("unexpected argument 'generate'"));
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h 15m"), Ok(Duration::from_secs(4500)));
        assert_eq!(parse_duration("2days"), Ok(Duration::from_secs(2 * 86400)));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("1m30").is_err());
        assert!(parse_duration("2years").is_err(), "more than a year");
        assert!(parse_duration("0s").is_err());
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
