//! The alert record: what fired, when, about what subject, for which process, with its
//! evidence. The detectors that raise alerts are in the alerts module; every output
//! format renders this record.

use std::fmt;
use std::net::IpAddr;

use super::{Comm, ProcessInfo, Timestamp};

/// What an alert is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertKind {
    Scan,
    NewListener,
    UnexpectedOwner,
    CloseWaitLeak,
    TimeWaitPileup,
    HandshakeTrouble,
}

impl AlertKind {
    pub const ALL: [AlertKind; 6] = [
        AlertKind::Scan,
        AlertKind::NewListener,
        AlertKind::UnexpectedOwner,
        AlertKind::CloseWaitLeak,
        AlertKind::TimeWaitPileup,
        AlertKind::HandshakeTrouble,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AlertKind::Scan => "scan",
            AlertKind::NewListener => "new_listener",
            AlertKind::UnexpectedOwner => "unexpected_owner",
            AlertKind::CloseWaitLeak => "close_wait_leak",
            AlertKind::TimeWaitPileup => "time_wait_pileup",
            AlertKind::HandshakeTrouble => "handshake_trouble",
        }
    }

    /// Parses a kind's name, with `-` or `_` between words.
    pub fn parse(text: &str) -> Result<AlertKind, String> {
        let wanted = text.trim().to_ascii_lowercase().replace('-', "_");
        AlertKind::ALL.into_iter().find(|k| k.name() == wanted).ok_or_else(|| {
            let names: Vec<&str> = AlertKind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown alert '{text}' (known: {})", names.join(", "))
        })
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// The name in capitals, as text output shows it (`WARNING`): it stands out, and
    /// stays apart from portrace's own `warning:` messages on stderr.
    pub fn label(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Warning => "WARNING",
            Severity::Critical => "CRITICAL",
        }
    }
}

/// What an alert is about: alerts are deduplicated per kind and subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// A process, by pid (0: sockets whose owner is unknown).
    Process(u32),
    /// A listening address (for handshake trouble: the local address the connections
    /// reached).
    Listener { netns: u32, addr: IpAddr, port: u16 },
    /// Where connects go.
    Destination { netns: u32, addr: IpAddr, port: u16 },
    /// TIME_WAIT sockets from one local address towards one remote address and port.
    Peer { netns: u32, local: IpAddr, remote: IpAddr, port: u16 },
    /// A process serving (`client: false`, local port) or connecting to (`client: true`,
    /// remote port) a port.
    Service { pid: u32, port: u16, client: bool },
}

pub(crate) fn endpoint(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

fn netns_suffix(netns: u32) -> String {
    if netns == 0 {
        String::new()
    } else {
        format!(" (netns {netns})")
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Subject::Process(0) => write!(f, "unknown process"),
            Subject::Process(pid) => write!(f, "pid {pid}"),
            Subject::Listener { netns, addr, port } => {
                write!(f, "listener {}{}", endpoint(addr, port), netns_suffix(netns))
            }
            Subject::Destination { netns, addr, port } => {
                write!(f, "destination {}{}", endpoint(addr, port), netns_suffix(netns))
            }
            Subject::Peer { netns, local, remote, port } => {
                write!(f, "peer {} from {local}{}", endpoint(remote, port), netns_suffix(netns))
            }
            Subject::Service { pid, port, client: false } => write!(f, "pid {pid} serving port {port}"),
            Subject::Service { pid, port, client: true } => write!(f, "pid {pid} connecting to port {port}"),
        }
    }
}

/// One piece of an alert's evidence.
#[derive(Clone, Debug, PartialEq)]
pub enum Evidence {
    Null,
    Bool(bool),
    Int(u64),
    /// A fraction or a rate, shown with three decimals.
    Real(f64),
    Text(String),
    List(Vec<String>),
}

/// The process an alert names: its pid and command name, and what was read about it from
/// /proc when portrace had that.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertProcess {
    pub pid: u32,
    pub comm: Comm,
    pub info: Option<ProcessInfo>,
}

impl AlertProcess {
    /// `tcpload (pid 42, /usr/bin/tcpload)`.
    pub fn describe(&self) -> String {
        let comm = self.comm.to_str_lossy();
        match self.info.as_ref().and_then(|i| i.exe.as_deref()) {
            Some(exe) => format!("{comm} (pid {}, {exe})", self.pid),
            None => format!("{comm} (pid {})", self.pid),
        }
    }
}

/// An alert.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub kind: AlertKind,
    pub severity: Severity,
    /// When the condition was found to hold, in trace time.
    pub time: Timestamp,
    pub subject: Subject,
    /// One line for people.
    pub summary: String,
    pub process: Option<AlertProcess>,
    /// The network namespace, when the alert is about one.
    pub netns: Option<u32>,
    /// Structured evidence, in a fixed order. Keys ending in `_ns` are durations.
    pub evidence: Vec<(&'static str, Evidence)>,
}
