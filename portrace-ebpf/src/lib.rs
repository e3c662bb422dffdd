//! The contract between portrace's kernel program and its userspace loader.
//!
//! Everything both sides must agree on lives here and nowhere else: the event record the
//! kernel writes into the ring buffer, the tracepoint layout and filter configuration that
//! userspace writes into the program's globals before load, the indices of the loss
//! counters, and the kernel's TCP state numbers. The structs are `#[repr(C)]` with no
//! implicit padding, so their bytes mean the same thing on both sides.
#![no_std]

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

/// One TCP state transition, as the kernel program writes it into the ring buffer.
///
/// Addresses are in network byte order. For an IPv4 connection (including an IPv6 socket
/// whose addresses are v4-mapped) `family` is [`AF_INET`] and only the first four bytes of
/// each address are used. Ports are in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC in nanoseconds.
    pub ts_ns: u64,
    /// The kernel address of the socket: its identity while it lives.
    pub skaddr: u64,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// The task on the CPU when the transition happened (thread group id and thread id).
    pub pid: u32,
    pub tid: u32,
    pub comm: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub oldstate: u8,
    pub newstate: u8,
}

pub const EVENT_SIZE: usize = core::mem::size_of::<Event>();
const _: () = assert!(EVENT_SIZE == 80, "Event must stay padding-free");

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
    /// Padding; keeps the struct's size a multiple of 4.
    pub _reserved: u16,
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
        _reserved: 0,
    };
}

/// How many values of each kind a filter may list.
pub const MAX_PORTS: usize = 8;
pub const MAX_NETS: usize = 8;
pub const MAX_PIDS: usize = 8;

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
    /// The on-CPU thread group id is one of these.
    pub pids: [u32; MAX_PIDS],
    pub n_nets: u32,
    pub n_pids: u32,
    /// The local port is one of these.
    pub lports: [u16; MAX_PORTS],
    /// The remote port is one of these.
    pub rports: [u16; MAX_PORTS],
    /// Either port is one of these.
    pub ports: [u16; MAX_PORTS],
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
}

/// Indices into the per-CPU `COUNTERS` array.
pub mod counter {
    /// A transition passed the filter but the ring buffer had no room for it.
    pub const RING_FULL: u32 = 0;
    /// A transition was written into the ring buffer.
    pub const EMITTED: u32 = 1;
    /// A held `CLOSE -> SYN_SENT` was written out ahead of its socket's next transition.
    pub const RELEASED: u32 = 2;
    /// A transition the main program was skipped for and the backup program recorded.
    pub const RESCUED: u32 = 3;
    pub const COUNT: u32 = 4;
}

/// Capacity of the map of held, not yet port-bound `CLOSE -> SYN_SENT` transitions.
pub const HOLD_ENTRIES: u32 = 16_384;

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
        n_lports: 0,
        n_rports: 0,
        n_ports: 0,
        family: 0,
        states: 0,
        hold_unbound: 0,
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
}

const _: () = assert!(core::mem::size_of::<Layout>() == 24);
const _: () = assert!(core::mem::size_of::<SockLayout>() == 20);
const _: () = assert!(core::mem::size_of::<Filter>() == 356);
