//! What portrace reports, after decoding and tracking: the records every output format
//! renders and every later stage (summary, files) consumes, alerts ([`alert`]) among
//! them, and the socket endpoints ([`Endpoints`]) they carry. A foundation: it depends
//! on nothing else in the crate but the TCP state names, and the modules that fill or
//! read the records depend on it.

pub mod alert;

use std::net::IpAddr;

use crate::tcp_state::TcpState;

pub use alert::Alert;

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

    /// The whole fixed-size buffer: the name's bytes ([`Comm::as_bytes`]), then padding
    /// that is not part of it. Lets a writer copy a length known when compiling.
    pub fn raw(&self) -> &[u8; 16] {
        &self.bytes
    }

    /// The name as text, with invalid UTF-8 replaced.
    pub fn to_str_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.as_bytes())
    }
}

/// How portrace knew a socket's owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OwnerSource {
    /// The owner made the transition itself, in a system call (listen, connect, close).
    Syscall,
    /// A child socket, owned by its listener's owner until it is accepted and used.
    Listener,
    /// From the inventory of sockets that existed when portrace started.
    Inventory,
}

impl OwnerSource {
    pub fn name(self) -> &'static str {
        match self {
            OwnerSource::Syscall => "syscall",
            OwnerSource::Listener => "listener",
            OwnerSource::Inventory => "inventory",
        }
    }
}

/// The process that owns a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    pub pid: u32,
    pub comm: Comm,
    pub source: OwnerSource,
    /// The owner's cgroup v2 id, as the kernel program read it in the owner's own system
    /// call (for an owner from the inventory: the cgroup /proc/PID/cgroup named when the
    /// inventory was taken); 0 when unknown. The cgroup module names it.
    pub cgroup: u64,
}

/// Why a connection ended, given on its last transition (into CLOSE).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndReason {
    /// This side closed first; the connection went through TIME_WAIT (or would have).
    ActiveClose,
    /// The peer closed first; this side closed after it (LAST_ACK -> CLOSE).
    PassiveClose,
    /// The peer answered the SYN with a reset: nothing listens there.
    Refused,
    /// The SYNs went unanswered until the kernel gave up.
    ConnectTimeout,
    /// The peer reset an open connection.
    ResetByPeer,
    /// This host aborted the connection with a reset (SO_LINGER 0, close with unread data).
    ResetSent,
    /// The application gave up on a connect before it completed.
    ConnectAborted,
    /// An orphaned connection waited in FIN_WAIT2 for the peer's FIN until it timed out.
    FinWait2Timeout,
    /// The connection's TIME_WAIT was cut short (its address reused, a reset, or the
    /// network namespace removed).
    TimeWaitKilled,
    /// A listening socket was closed.
    ListenerClosed,
    /// The socket ended with an error the kernel reported (see `error`).
    Error,
}

impl EndReason {
    /// Every reason, in declaration order.
    pub const ALL: [EndReason; 11] = [
        EndReason::ActiveClose,
        EndReason::PassiveClose,
        EndReason::Refused,
        EndReason::ConnectTimeout,
        EndReason::ResetByPeer,
        EndReason::ResetSent,
        EndReason::ConnectAborted,
        EndReason::FinWait2Timeout,
        EndReason::TimeWaitKilled,
        EndReason::ListenerClosed,
        EndReason::Error,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EndReason::ActiveClose => "active_close",
            EndReason::PassiveClose => "passive_close",
            EndReason::Refused => "refused",
            EndReason::ConnectTimeout => "connect_timeout",
            EndReason::ResetByPeer => "reset_by_peer",
            EndReason::ResetSent => "reset_sent",
            EndReason::ConnectAborted => "connect_aborted",
            EndReason::FinWait2Timeout => "fin_wait2_timeout",
            EndReason::TimeWaitKilled => "time_wait_killed",
            EndReason::ListenerClosed => "listener_closed",
            EndReason::Error => "error",
        }
    }

    /// A short phrase for people.
    pub fn describe(self) -> &'static str {
        match self {
            EndReason::ActiveClose => "closed by this side",
            EndReason::PassiveClose => "closed by the peer",
            EndReason::Refused => "connection refused",
            EndReason::ConnectTimeout => "connect timed out",
            EndReason::ResetByPeer => "reset by peer",
            EndReason::ResetSent => "aborted: reset sent",
            EndReason::ConnectAborted => "connect abandoned",
            EndReason::FinWait2Timeout => "timed out in FIN_WAIT2",
            EndReason::TimeWaitKilled => "TIME_WAIT cut short",
            EndReason::ListenerClosed => "listener closed",
            EndReason::Error => "error",
        }
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
    /// Its addresses and ports, and its network namespace (the inode number, as in
    /// /proc/PID/ns/net; 0 when unknown).
    pub ends: Endpoints,
    pub oldstate: TcpState,
    pub newstate: TcpState,
    /// How long the socket was in `oldstate`, in nanoseconds; `None` when portrace did not
    /// see it enter that state.
    pub prev_state_ns: Option<u64>,
    /// `prev_state_ns` is a lower bound: the socket was already in `oldstate` when
    /// portrace started, and the time counts from the start.
    pub prev_state_at_least: bool,
    /// The socket's owner; `None` when unknown.
    pub owner: Option<Owner>,
    /// Why the connection ended, on its last transition.
    pub reason: Option<EndReason>,
    /// The error the kernel reported for the socket (an errno), on its last transition.
    pub error: Option<i32>,
    /// Retransmissions of the last segment when the socket closed (the SYNs of a connect
    /// that timed out); 0 otherwise.
    pub retransmits: u8,
}

/// Unit tests' transitions: `Transition::example(socket, old, new)`, an IPv4 loopback
/// socket (127.0.0.1:1 to 127.0.0.1:2) with no owner, made by pid 1 at time 0, then
/// the builder methods below for what a test varies, and struct update syntax for the
/// rest.
#[cfg(test)]
impl Transition {
    pub fn example(socket: u64, oldstate: TcpState, newstate: TcpState) -> Transition {
        Transition {
            time: Timestamp { mono_ns: 0, unix_ns: 0 },
            pid: 1,
            comm: Comm::new("x"),
            socket,
            family: Family::Ipv4,
            ends: Endpoints {
                saddr: [127, 0, 0, 1].into(),
                sport: 1,
                daddr: [127, 0, 0, 1].into(),
                dport: 2,
                netns: 0,
            },
            oldstate,
            newstate,
            prev_state_ns: None,
            prev_state_at_least: false,
            owner: None,
            reason: None,
            error: None,
            retransmits: 0,
        }
    }

    /// At `time`.
    pub fn at(self, time: Timestamp) -> Transition {
        Transition { time, ..self }
    }

    /// Made by the task on the CPU, `pid` and `comm` (pid 0: the idle task, in softirq).
    pub fn on_cpu(self, pid: u32, comm: Comm) -> Transition {
        Transition { pid, comm, ..self }
    }

    /// Between `local` and `remote`, each an address and port.
    pub fn between(self, (saddr, sport): (IpAddr, u16), (daddr, dport): (IpAddr, u16)) -> Transition {
        Transition { ends: Endpoints { saddr, sport, daddr, dport, ..self.ends }, ..self }
    }

    /// After `prev_state_ns` in the old state (`None`: unknown).
    pub fn after(self, prev_state_ns: Option<u64>) -> Transition {
        Transition { prev_state_ns, ..self }
    }

    pub fn owned_by(self, owner: Option<Owner>) -> Transition {
        Transition { owner, ..self }
    }

    pub fn in_netns(self, netns: u32) -> Transition {
        Transition { ends: Endpoints { netns, ..self.ends }, ..self }
    }
}

/// A socket that existed when portrace started, from the inventory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketRecord {
    /// When the inventory was taken.
    pub time: Timestamp,
    /// portrace's id for the socket; later transitions of the socket carry the same id.
    pub socket: u64,
    pub family: Family,
    /// Its addresses and ports, and its network namespace.
    pub ends: Endpoints,
    pub state: TcpState,
    pub owner: Option<Owner>,
    /// The socket's inode (0 for sockets without one: children not yet accepted, timewait).
    pub inode: u64,
    pub uid: u32,
    /// The kernel's socket cookie.
    pub cookie: u64,
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
    /// The kernel program could not read a transition (a socket or tracepoint field read
    /// failed).
    Unreadable,
    /// Records of timewait sockets (armed, removed, expired) found the ring buffer full:
    /// some connections' TIME_WAIT may be missing, or end without being seen.
    TimeWait,
    /// Transitions missing from sockets' sequences beyond every count above: the kernel
    /// lost them without counting them anywhere (found by the gap detection).
    Gap,
}

impl LossCause {
    /// Every cause, in the order summaries list them.
    pub const ALL: [LossCause; 6] = [
        LossCause::RingFull,
        LossCause::Skipped,
        LossCause::Malformed,
        LossCause::Unreadable,
        LossCause::TimeWait,
        LossCause::Gap,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LossCause::RingFull => "ring_full",
            LossCause::Skipped => "skipped",
            LossCause::Malformed => "malformed",
            LossCause::Unreadable => "unreadable",
            LossCause::TimeWait => "timewait",
            LossCause::Gap => "gap",
        }
    }

    /// The cause's position in [`Self::ALL`].
    pub fn index(self) -> usize {
        self as usize
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

/// What portrace read about a process from /proc when it first saw the process own a
/// socket. Every field but `pid`, `comm` and `time` is `None` when it could not be read
/// (the process had already exited, or the field is hidden from us).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// When portrace read it.
    pub time: Timestamp,
    /// Thread group id, as in `Owner::pid`.
    pub pid: u32,
    /// The kernel's command name, as in the transitions.
    pub comm: Comm,
    /// The parent's pid.
    pub ppid: Option<u32>,
    /// The executable's full path (the target of /proc/PID/exe).
    pub exe: Option<String>,
    /// The command line, one entry per argument.
    pub cmdline: Option<Vec<String>>,
    /// The real user id, and the user's name when it resolves.
    pub uid: Option<u32>,
    pub user: Option<String>,
    /// The cgroup v2 path (from /proc/PID/cgroup), which names the container or the
    /// systemd unit.
    pub cgroup: Option<String>,
    /// The process's start time in clock ticks since boot (field 22 of /proc/PID/stat):
    /// tells a process from a later one that reuses its pid.
    pub start_ticks: Option<u64>,
}

/// What portrace read about a network namespace when it first saw a socket in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetnsInfo {
    /// When portrace read it.
    pub time: Timestamp,
    /// The namespace's inode number, as in `Endpoints::netns`.
    pub netns: u32,
    /// `net.ipv4.ip_local_port_range` in that namespace: the ports connect() picks from.
    pub port_range: Option<(u16, u16)>,
}

/// What portrace learned about a cgroup when it first saw an owner in it: announced once,
/// before the first record that names the id, like a process's details.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupInfo {
    /// When portrace read it.
    pub time: Timestamp,
    /// The cgroup v2 id, as in `Owner::cgroup`.
    pub id: u64,
    /// Its path under the cgroup2 mount (`/system.slice/nginx.service`); `None` when the
    /// cgroup was already removed or the hierarchy cannot be read.
    pub path: Option<String>,
}

/// The endpoints of a socket as far as they are known (0 and unspecified when not yet),
/// and its network namespace (0 when not known): the address pair every record, decoded
/// event, inventory socket and table row carries, and that socket tracking keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoints {
    pub saddr: IpAddr,
    pub sport: u16,
    pub daddr: IpAddr,
    pub dport: u16,
    /// The network namespace's inode number (as in /proc/PID/ns/net).
    pub netns: u32,
}

impl Endpoints {
    /// What is known once `later` is: each address, port and namespace `later` knows,
    /// and these ones where it does not (an unspecified address, a port or namespace 0).
    pub fn updated_by(self, later: Endpoints) -> Endpoints {
        Endpoints {
            saddr: if later.saddr.is_unspecified() { self.saddr } else { later.saddr },
            sport: if later.sport == 0 { self.sport } else { later.sport },
            daddr: if later.daddr.is_unspecified() { self.daddr } else { later.daddr },
            dport: if later.dport == 0 { self.dport } else { later.dport },
            netns: if later.netns == 0 { self.netns } else { later.netns },
        }
    }
}
