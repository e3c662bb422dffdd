//! The contract between portrace's kernel program and its userspace loader.
//!
//! Everything both sides must agree on lives here and nowhere else: the event record the
//! kernel writes into the ring buffer, the tracepoint layout and filter configuration that
//! userspace writes into the program's globals before load, the indices of the loss
//! counters, and the kernel's TCP state numbers. The structs are `#[repr(C)]` with no
//! implicit padding, so their bytes mean the same thing on both sides.
#![cfg_attr(not(test), no_std)]

pub mod logic;

/// The tools the kernel program is built with, pinned: what the verifier accepts depends
/// on the code they generate (frame sizes above all), so a new nightly or bpf-linker is
/// adopted on purpose, with the stack check and the kernel matrix run again.
pub mod build {
    /// The nightly toolchain (`rustup` name) that compiles the kernel program: rustc
    /// 1.97.0-nightly, commit e50aa6fba of 2026-05-19, with its own LLVM 22.1.4.
    pub const TOOLCHAIN: &str = "nightly-2026-05-20";
    /// The bpf-linker release that links it, built against the distribution's LLVM 22.
    pub const BPF_LINKER: &str = "0.13.0";
    /// The LLVM major version bpf-linker is built against.
    pub const LLVM_MAJOR: u32 = 22;
}

/// Kernel TCP state numbers (`include/net/tcp_states.h`).
pub mod tcp {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const TIME_WAIT: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
    pub const CLOSING: u8 = 11;
    pub const NEW_SYN_RECV: u8 = 12;
    /// The highest state number the kernel defines.
    pub const MAX: u8 = NEW_SYN_RECV;
}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;

/// What a ring-buffer record reports (`Event::kind`).
pub mod kind {
    /// A state transition of a full socket.
    pub const TRANSITION: u8 = 0;
    /// A transition into CLOSE at which the connection moved on to a timewait socket:
    /// `tw_substate` says which state it keeps there (TIME_WAIT, or FIN_WAIT2 for an
    /// orphaned socket still waiting for its peer's FIN).
    pub const HANDOVER: u8 = 1;
    /// A timewait socket's timer was re-armed, or its state changed (an orphan's FIN_WAIT2
    /// became TIME_WAIT when the peer's FIN arrived): `oldstate` is its state before,
    /// `tw_substate` its state now.
    pub const TW_ARMED: u8 = 2;
    /// A timewait socket's timer was removed: before it expires, or before it is re-armed,
    /// or because the timewait socket was killed (reused, reset, namespace gone).
    pub const TW_CANCEL: u8 = 3;
    /// A timewait socket's timer fired: its life is over.
    pub const TW_EXPIRE: u8 = 4;
    /// Not about a socket: a process started a program (exec). `pid`, `tid` and `comm` are
    /// the new program's, `ts_ns` when it started; nothing else is set. Sent with a wakeup
    /// so that userspace reads the process's details while it still runs.
    pub const EXEC: u8 = 5;
}

/// How the kernel program knew a socket's owner (`Event::owner_source`).
pub mod owner_source {
    pub const UNKNOWN: u8 = 0;
    /// The owner made the transition itself, in a system call (listen, connect, close).
    pub const SYSCALL: u8 = 1;
    /// A child socket, owned by its listener's owner until it is accepted and used.
    pub const LISTENER: u8 = 2;
    /// From the inventory of sockets that existed when portrace started.
    pub const INVENTORY: u8 = 3;
    /// Not a source: a bit set on top of one in a transition the backup program recorded
    /// (the kernel skipped the main program for it). Userspace uses it to drop the one
    /// kind of duplicate the backup can make: a hit the main program did record, whose
    /// note the backup did not find (its CPU stalled longer than a note lasts).
    pub const BY_BACKUP: u8 = 0x80;
    /// Not a source: a bit set on top of one when the owner was, in its own system call,
    /// in the filter's cgroup or below it (`Owner::in_cgroup`). Only the kernel's filter
    /// reads it; userspace ignores it.
    pub const IN_CGROUP: u8 = 0x40;
}

/// One record in the ring buffer: a TCP state transition, or a timewait socket's event.
///
/// Addresses are in network byte order. For an IPv4 connection (including an IPv6 socket
/// whose addresses are v4-mapped) `family` is [`AF_INET`] and only the first four bytes of
/// each address are used. Ports are in host byte order. For the timewait kinds, `skaddr` is
/// the address of the full socket the connection had before it moved to the timewait
/// socket, and `aux` is the timewait socket's address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC in nanoseconds.
    pub ts_ns: u64,
    /// The kernel address of the socket: its identity while it lives.
    pub skaddr: u64,
    /// Transitions: the socket cookie (`sock_common.skc_cookie`, 0 until something asked
    /// for it). HANDOVER and the timewait kinds: the timewait socket's address.
    pub aux: u64,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// The task on the CPU when it happened (thread group id and thread id).
    pub pid: u32,
    pub tid: u32,
    pub comm: [u8; 16],
    /// The socket's owner, when known (`owner_source` != UNKNOWN).
    pub owner_pid: u32,
    /// `sk_err` at a transition into CLOSE: the error the application is told (0 if none).
    pub error: i32,
    pub owner_comm: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub oldstate: u8,
    pub newstate: u8,
    pub kind: u8,
    pub owner_source: u8,
    /// Timewait kinds and HANDOVER: the timewait socket's state.
    pub tw_substate: u8,
    /// At a transition into CLOSE: how many times the last segment was retransmitted
    /// (`icsk_retransmits`), e.g. the SYNs of a connect that timed out.
    pub retransmits: u8,
    /// The network namespace's inode number (as in /proc/PID/ns/net), 0 if unknown.
    pub netns: u32,
    /// The owner's cgroup v2 id (the inode number of its directory under the cgroup2
    /// mount), learned in the owner's own system call; 0 when unknown or when the owner is.
    pub owner_cgroup: u64,
}

pub const EVENT_SIZE: usize = core::mem::size_of::<Event>();
const _: () = assert!(EVENT_SIZE == 128, "Event must stay padding-free");

/// A socket's owner as the kernel program keeps it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub source: u8,
    /// Non-zero when the socket belongs to the traced command (`portrace -- CMD`): decided
    /// when its owner is learned, and kept for the socket's whole life, so that its later
    /// transitions (TIME_WAIT, an orphan's FIN_WAIT2) stay the command's after the process
    /// exited and its pid was reused.
    pub traced: u8,
    /// Non-zero when, in the system call it was learned in, the owner was in the `--cgroup`
    /// filter's cgroup or one below it (only decided when that filter is set).
    pub in_cgroup: u8,
    pub _pad: u8,
    pub comm: [u8; 16],
    /// The owner's cgroup v2 id, read in that same system call (`bpf_get_current_cgroup_id`):
    /// the cgroup of the process that owns the socket, never of a task a softirq
    /// interrupted. 0 when unknown.
    pub cgroup: u64,
}

/// Key of the listener map: the network namespace (its inode number) and the port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenKey {
    pub netns: u32,
    pub port: u16,
    pub _pad: u16,
}

/// A listening socket and its owner: the value of the listener map (`skaddr` is 0 for a
/// listener from the inventory, whose address userspace does not know).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOwner {
    pub skaddr: u64,
    pub owner: Owner,
}

/// What the kernel program remembers of a connection that moved to a timewait socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeWaitEntry {
    /// The full socket's address: the connection's identity in the stream.
    pub skaddr: u64,
    pub owner: Owner,
    /// The timewait socket's state when last reported.
    pub substate: u8,
    pub _pad: [u8; 7],
}

/// Byte offsets of the `sock:inet_sock_set_state` fields in the tracepoint record, read by
/// userspace from `<tracefs>/events/sock/inet_sock_set_state/format`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    pub skaddr: u16,
    pub oldstate: u16,
    pub newstate: u16,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub protocol: u16,
    pub saddr: u16,
    pub daddr: u16,
    pub saddr_v6: u16,
    pub daddr_v6: u16,
    /// Size of the `protocol` field in bytes: 1 (kernels before 5.6) or 2.
    pub protocol_size: u16,
}

/// Byte offsets of socket fields from the start of `struct sock` (which begins with
/// `struct sock_common` and is the first member of `struct inet_sock`), read by userspace
/// from the kernel's BTF. The backup program reads the socket the same way the tracepoint
/// does: ports and IPv4 addresses from `inet_sock` and `sock_common`, IPv6 addresses from
/// `sock_common`, the protocol from `sock`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockLayout {
    /// `sock_common.skc_family` (2 bytes).
    pub family: u16,
    /// `sock.sk_protocol`, `protocol_size` bytes.
    pub protocol: u16,
    pub protocol_size: u16,
    /// `inet_sock.inet_sport`, network byte order.
    pub sport: u16,
    /// `sock_common.skc_dport`, network byte order.
    pub dport: u16,
    /// `inet_sock.inet_saddr`.
    pub saddr: u16,
    /// `sock_common.skc_daddr`.
    pub daddr: u16,
    /// `sock_common.skc_v6_rcv_saddr`.
    pub saddr_v6: u16,
    /// `sock_common.skc_v6_daddr`.
    pub daddr_v6: u16,
    /// `sock_common.skc_num`: the local port in host byte order (timewait sockets have no
    /// `inet_sport`).
    pub num: u16,
    /// `sock_common.skc_rcv_saddr`: the local IPv4 address (likewise).
    pub rcv_saddr: u16,
    /// `sock_common.skc_cookie` (8 bytes).
    pub cookie: u16,
    /// `sock_common.skc_net` (a pointer to `struct net`).
    pub net: u16,
    /// `struct net`'s `ns.inum` (4 bytes), from the start of `struct net`.
    pub net_inum: u16,
    /// `sock.sk_err` (4 bytes).
    pub err: u16,
    /// `inet_connection_sock.icsk_retransmits` (1 byte).
    pub retransmits: u16,
    /// `inet_timewait_sock.tw_substate` (1 byte), from the start of the timewait socket.
    pub tw_substate: u16,
    /// `inet_timewait_sock.tw_timer`: subtracted from a timer's address to find its socket.
    pub tw_timer: u16,
    /// `timer_list.function`.
    pub timer_function: u16,
    /// `sk_buff.head`, `sk_buff.network_header` and `sk_buff.transport_header`: where a
    /// packet's IP and TCP headers are. Used on kernels whose `skb:kfree_skb` does not name
    /// the receiving socket (before 6.11), to find a timewait socket by the packet's
    /// addresses and ports. 0 when unknown (`skb_head` is never 0 when known).
    pub skb_head: u16,
    pub skb_network_header: u16,
    pub skb_transport_header: u16,
    /// Non-zero when the offsets above are valid; without them the classic tracepoint
    /// program is the only one, and owners, timewait and close details are not read.
    pub valid: u16,
    pub _pad: u16,
}

impl SockLayout {
    pub const ZERO: SockLayout = SockLayout {
        family: 0,
        protocol: 0,
        protocol_size: 0,
        sport: 0,
        dport: 0,
        saddr: 0,
        daddr: 0,
        saddr_v6: 0,
        daddr_v6: 0,
        num: 0,
        rcv_saddr: 0,
        cookie: 0,
        net: 0,
        net_inum: 0,
        err: 0,
        retransmits: 0,
        tw_substate: 0,
        tw_timer: 0,
        timer_function: 0,
        skb_head: 0,
        skb_network_header: 0,
        skb_transport_header: 0,
        valid: 0,
        _pad: 0,
    };
}

/// How many values of each kind a filter may list.
pub const MAX_PORTS: usize = 8;
pub const MAX_NETS: usize = 8;
pub const MAX_PIDS: usize = 8;
pub const MAX_NETNS: usize = 8;
/// How many levels below the filter cgroup's own level the kernel program looks for it
/// among an owner's ancestors (see `Filter::cgroup_level`).
pub const CGROUP_LEVELS_SEARCHED: u32 = 8;

/// An address prefix, as an address and a mask of the same length: an address `a` lies in
/// the network when `a & mask == addr` byte by byte. IPv4 networks are stored v4-mapped
/// (`::ffff:a.b.c.d`, the mask covering the 96 mapping bits too), and so are IPv4
/// addresses when they are compared.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Net {
    pub addr: [u8; 16],
    pub mask: [u8; 16],
}

/// What to trace, decided in the kernel before anything is reserved in the ring buffer.
///
/// Every list that is non-empty must match (values within one list are alternatives). An
/// empty list matches everything.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Either endpoint's address lies in one of these networks.
    pub nets: [Net; MAX_NETS],
    /// The socket's owner (thread group id) is one of these.
    pub pids: [u32; MAX_PIDS],
    pub n_nets: u32,
    pub n_pids: u32,
    /// The local port is one of these.
    pub lports: [u16; MAX_PORTS],
    /// The remote port is one of these.
    pub rports: [u16; MAX_PORTS],
    /// Either port is one of these.
    pub ports: [u16; MAX_PORTS],
    /// The owner's command name is this (NUL-padded), when `match_comm` is set.
    pub comm: [u8; 16],
    pub n_lports: u16,
    pub n_rports: u16,
    pub n_ports: u16,
    /// 0 for any, else [`AF_INET`] or [`AF_INET6`].
    pub family: u16,
    /// Bit `n` set: keep transitions into or out of state `n`. 0 keeps every state.
    pub states: u16,
    /// Non-zero when the local port matters to the filter: a `CLOSE -> SYN_SENT` whose local
    /// port is not bound yet is then held until the socket's next transition shows it.
    pub hold_unbound: u16,
    pub match_comm: u16,
    pub _pad: u16,
    /// Non-zero: keep only sockets whose owner was, in its own system call, in the cgroup
    /// v2 whose id this is, or in a cgroup below it.
    pub cgroup_id: u64,
    /// The socket's network namespace (inode number) is one of these.
    pub netns: [u32; MAX_NETNS],
    pub n_netns: u32,
    /// The filter cgroup's level in the hierarchy (the root is 0) as its path under the
    /// cgroup2 mount shows it. Inside a cgroup namespace the true level is deeper, so the
    /// kernel program looks from here down [`CGROUP_LEVELS_SEARCHED`] levels.
    pub cgroup_level: u32,
}

/// Indices into the per-CPU `COUNTERS` array.
pub mod counter {
    /// A transition passed the filter but the ring buffer had no room for it: a full
    /// socket's, or a timewait socket's (its change to TIME_WAIT, its expiry).
    pub const RING_FULL: u32 = 0;
    /// A transition was written into the ring buffer.
    pub const EMITTED: u32 = 1;
    /// A held `CLOSE -> SYN_SENT` was written out ahead of its socket's next transition.
    pub const RELEASED: u32 = 2;
    /// A transition the main program was skipped for and the backup program recorded.
    pub const RESCUED: u32 = 3;
    /// A socket's owner could not be remembered: the owner map was full.
    pub const OWNERS_FULL: u32 = 4;
    /// A connection's timewait socket could not be remembered: the timewait map was full.
    pub const TIMEWAIT_FULL: u32 = 5;
    /// A timewait socket's record that is no transition found the ring buffer full: a
    /// timer removal, a re-arm in the same state, a hand-over that keeps FIN_WAIT2. It
    /// hides a transition only when the removal was the timewait socket being killed.
    pub const TW_RING_FULL: u32 = 6;
    /// A transition the program could not read (a socket field or tracepoint field read
    /// failed, or an address family it does not know).
    pub const UNREADABLE: u32 = 7;
    /// A process started by the traced command could not be followed (the traced-process
    /// map was full, or the new task's record could not be read): its sockets are missing.
    pub const UNFOLLOWED: u32 = 8;
    /// Runs of the primary state program (the raw tracepoint one, or the classic one when
    /// it runs alone), whatever they then keep. With the kernel's count of the runs it
    /// skipped, this is every hit of the tracepoint the kernel handed to the program;
    /// userspace compares it with a count of the hits that does not depend on BPF.
    pub const ENTERED: u32 = 9;
    /// A transition that waits for a port its socket has not set yet (a connect under a
    /// local-port filter, a child socket whose peer port the kernel copies later) found the
    /// hold map full: it was written at once, without the port, and judged without it.
    pub const HOLD_FULL: u32 = 10;
    /// A listener could not be remembered: the listener map was full. Its children's
    /// owners are unknown until they act themselves.
    pub const LISTENERS_FULL: u32 = 11;
    pub const COUNT: u32 = 12;
}

/// Capacity of the map of held transitions whose socket had not set a port yet (a
/// `CLOSE -> SYN_SENT` before its local port is bound, under a local-port filter; a
/// `LISTEN -> SYN_RECV` before the kernel copies the peer's port). Each waits a moment,
/// for its socket's next transition; when the map is full, one is written at once.
pub const HOLD_ENTRIES: u32 = 16_384;
/// Capacity of the owner map (live sockets) and of the inventory map (sockets older
/// than the trace, by cookie).
pub const OWNER_ENTRIES: u32 = 262_144;
/// Capacity of the listener map.
pub const LISTENER_ENTRIES: u32 = 16_384;
/// Capacity of the timewait map (connections in TIME_WAIT or orphaned FIN_WAIT2).
pub const TIMEWAIT_ENTRIES: u32 = 262_144;
/// Capacity of the map from a timewait socket's addresses and ports to the socket, kept
/// on kernels before 6.11 only (see `SockLayout::skb_head`); the least recently used go
/// first.
pub const TW_TUPLE_ENTRIES: u32 = 65_536;

/// A timewait socket's addresses and ports, as its packets carry them: IPv4 addresses in
/// the first four bytes, ports in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TwTuple {
    pub local: [u8; 16],
    pub remote: [u8; 16],
    pub local_port: u16,
    pub remote_port: u16,
    pub family: u16,
    pub _pad: u16,
}

const _: () = assert!(core::mem::size_of::<TwTuple>() == 40);

/// Capacity of the map of timer removals whose follow-up userspace does not get
/// (`FOLLOWED`): the least recently noted are forgotten first.
pub const FOLLOWED_ENTRIES: u32 = 16_384;
/// How long after a timewait timer's removal its re-arming or expiry may follow. The
/// kernel does both in the same function, microseconds apart, but a virtual CPU can stall
/// between them for far longer: its host may run something else (seen: more than 10 ms
/// under software emulation on a busy host). A killed timewait socket whose memory holds a new one within this window
/// is told apart by the new one's first arming, which the transition of the full socket
/// it replaces claims (`claim_timewait` in the program). Userspace matches a removal to
/// the note of its follow-up (`FOLLOWED`) within it too.
pub const REARM_WINDOW_NS: u64 = 250_000_000;

/// Byte offsets in the records of the tracepoints that follow the traced command's
/// processes (`portrace -- CMD`), read by userspace from tracefs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskLayout {
    /// `task:task_newtask`: `pid` (4 bytes), the new task's id.
    pub newtask_pid: u16,
    /// `task:task_newtask`: `clone_flags` (8 bytes).
    pub newtask_flags: u16,
    /// `sched:sched_process_exit`: `group_dead` (1 byte); 0 when the kernel's record has
    /// no such field (older kernels), and then exits are not followed: an exited
    /// process's entry stays until its pid is reused.
    pub exit_group_dead: u16,
    pub _pad: u16,
}

impl TaskLayout {
    pub const ZERO: TaskLayout = TaskLayout { newtask_pid: 0, newtask_flags: 0, exit_group_dead: 0, _pad: 0 };
}

/// `CLONE_THREAD` (`include/uapi/linux/sched.h`): the new task is a thread of its creator's
/// process, not a new process.
pub const CLONE_THREAD: u64 = 0x0001_0000;

/// Capacity of the map of the traced command's processes when userspace does not size it
/// (it sizes it from `kernel.pid_max`).
pub const TRACED_ENTRIES: u32 = 32_768;

impl Layout {
    pub const ZERO: Layout = Layout {
        skaddr: 0,
        oldstate: 0,
        newstate: 0,
        sport: 0,
        dport: 0,
        family: 0,
        protocol: 0,
        saddr: 0,
        daddr: 0,
        saddr_v6: 0,
        daddr_v6: 0,
        protocol_size: 0,
    };
}

impl Filter {
    /// The filter that keeps everything.
    pub const ALL: Filter = Filter {
        nets: [Net { addr: [0; 16], mask: [0; 16] }; MAX_NETS],
        pids: [0; MAX_PIDS],
        n_nets: 0,
        n_pids: 0,
        lports: [0; MAX_PORTS],
        rports: [0; MAX_PORTS],
        ports: [0; MAX_PORTS],
        comm: [0; 16],
        n_lports: 0,
        n_rports: 0,
        n_ports: 0,
        family: 0,
        states: 0,
        hold_unbound: 0,
        match_comm: 0,
        _pad: 0,
        cgroup_id: 0,
        netns: [0; MAX_NETNS],
        n_netns: 0,
        cgroup_level: 0,
    };
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is repr(C), Copy, and made only of integers and arrays of integers
    // with no padding (checked by the size assertions), so every bit pattern is valid.
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::Layout {}
    unsafe impl aya::Pod for super::Filter {}
    unsafe impl aya::Pod for super::SockLayout {}
    unsafe impl aya::Pod for super::Owner {}
    unsafe impl aya::Pod for super::ListenKey {}
    unsafe impl aya::Pod for super::SockOwner {}
    unsafe impl aya::Pod for super::TimeWaitEntry {}
    unsafe impl aya::Pod for super::TaskLayout {}
}

const _: () = assert!(core::mem::size_of::<Layout>() == 24);
const _: () = assert!(core::mem::size_of::<SockLayout>() == 48);
const _: () = assert!(core::mem::size_of::<Filter>() == 424);
const _: () = assert!(core::mem::size_of::<Owner>() == 32);
const _: () = assert!(core::mem::size_of::<TaskLayout>() == 8);
