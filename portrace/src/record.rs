//! What portrace reports, after decoding and tracking: the records every output format
//! renders and every later stage (summary, files) consumes.

use std::net::IpAddr;

use crate::tcp_state::TcpState;

/// The address family of a connection as portrace shows it: an IPv6 socket whose
/// addresses are v4-mapped is shown as IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// A timestamp: the kernel's monotonic nanoseconds and the wall-clock time they map to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    /// CLOCK_MONOTONIC nanoseconds, as the kernel recorded them.
    pub mono_ns: u64,
    /// Nanoseconds since the Unix epoch (UTC).
    pub unix_ns: i128,
}

/// The on-CPU task's command name, at most 15 bytes as the kernel keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Comm {
    bytes: [u8; 16],
    len: u8,
}

impl Comm {
    /// From the kernel's NUL-padded buffer.
    pub fn from_kernel(raw: &[u8; 16]) -> Comm {
        let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        Comm { bytes: *raw, len: len as u8 }
    }

    pub fn new(name: &str) -> Comm {
        let mut bytes = [0u8; 16];
        let len = name.len().min(15);
        bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
        Comm { bytes, len: len as u8 }
    }

    /// The raw bytes (not necessarily UTF-8).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// The name as text, with invalid UTF-8 replaced.
    pub fn to_str_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.as_bytes())
    }
}

/// One TCP state transition of one socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub time: Timestamp,
    /// The task on the CPU when it happened (thread group id), and its command.
    pub pid: u32,
    pub comm: Comm,
    /// portrace's id for the socket, unique for the run: a kernel socket address that is
    /// freed and reused gets a new id.
    pub socket: u64,
    pub family: Family,
    pub saddr: IpAddr,
    pub sport: u16,
    pub daddr: IpAddr,
    pub dport: u16,
    pub oldstate: TcpState,
    pub newstate: TcpState,
    /// How long the socket was in `oldstate`, in nanoseconds; `None` when portrace did not
    /// see it enter that state.
    pub prev_state_ns: Option<u64>,
}

/// Why events were lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LossCause {
    /// The ring buffer was full when the kernel program tried to reserve a slot.
    RingFull,
    /// The kernel skipped the program because another tracing program was running on the
    /// same CPU (`recursion_misses`) and nothing recorded the transition in its place.
    Skipped,
    /// A record arrived that could not be decoded.
    Malformed,
}

impl LossCause {
    pub fn name(self) -> &'static str {
        match self {
            LossCause::RingFull => "ring_full",
            LossCause::Skipped => "skipped",
            LossCause::Malformed => "malformed",
        }
    }
}

/// Transitions lost between the previous record and this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lost {
    /// When portrace noticed the loss (the transitions happened before this).
    pub time: Timestamp,
    pub count: u64,
    pub cause: LossCause,
}
