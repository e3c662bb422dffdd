//! The command line: one module per command, each with its flags (clap), their validation
//! into the options its engine runs from, and its `execute`; the flags several commands
//! share are in [`filter_args`], [`alert_args`], [`output_args`] and [`trace_args`]. Every
//! bad value is refused here with a message that names the flag and the value. [`execute`]
//! runs a [`Task`] and returns the process's exit status.

pub mod alert_args;
pub mod diagram;
pub mod doctor;
pub mod filter_args;
pub mod generate;
pub mod live;
pub mod output_args;
pub mod record;
pub mod replay;
pub mod report;
pub mod serve;
pub mod snapshot;
pub mod top;
pub mod trace_args;
#[cfg(test)]
mod tests;

use std::ffi::OsString;

use clap::{Parser, Subcommand};

use self::diagram::DiagramArgs;
use self::doctor::DoctorArgs;
use self::generate::GenerateArgs;
use self::live::{Config, LiveArgs};
use self::record::{RecordArgs, RecordConfig};
use self::replay::{ReplayArgs, ReplayConfig};
use self::report::{ReportArgs, ReportConfig};
use self::serve::ServeArgs;
use self::top::TopArgs;
use crate::top::TopConfig;

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
            return Ok(Task::Generate(args.what.into_config()));
        }
        let mut matches = command.try_get_matches_from(argv)?;
        Ok(Args::from_arg_matches_mut(&mut matches)?.into_task())
    }
    pub fn into_task(self) -> Task {
        match self.command {
            None => Task::Live(self.live.into_config()),
            Some(Command::Record(r)) => Task::Record(r.into_config()),
            Some(Command::Replay(r)) => Task::Replay(r.into_config()),
            Some(Command::Report(r)) => Task::Report(r.into_config()),
            Some(Command::Diagram(d)) => Task::Diagram(Box::new(d.into_config())),
            Some(Command::Doctor(d)) => Task::Doctor(d.into_config()),
            Some(Command::Serve(s)) => Task::Serve(s.into_config()),
            Some(Command::Top(t)) => Task::Top(t.into_config()),
        }
    }
}

/// Runs `task`; returns the exit status (see [`EXIT_STATUS`]).
pub fn execute(task: Task) -> anyhow::Result<u8> {
    match task {
        Task::Live(config) => block_on(live::execute(config)),
        Task::Record(config) => block_on(record::execute(config)),
        Task::Replay(config) => replay::execute(config).map(|()| 0),
        Task::Report(config) => report::execute(config).map(|()| 0),
        Task::Diagram(config) => block_on(diagram::execute(*config)),
        Task::Top(config) => top::execute(config).map(|()| 0),
        Task::Doctor(config) => doctor::execute(config),
        Task::Generate(what) => generate::execute(&what).map(|()| 0),
        Task::Serve(config) => block_on(serve::execute(config)),
    }
}

/// Runs a tracing task on a single-threaded async runtime.
fn block_on(task: impl std::future::Future<Output = anyhow::Result<u8>>) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    runtime.block_on(task)
}
