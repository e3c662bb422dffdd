//! Turns the bytes of one ring-buffer record into a checked, typed transition. The kernel
//! program is trusted to write [`Event`]s, but a record that is short, names a state the
//! kernel does not have, or carries an unknown address family is rejected with a reason
//! rather than shown as something it is not.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use portrace_ebpf::{kind, owner_source, Event, AF_INET, AF_INET6, EVENT_SIZE};

use crate::record::{Comm, Endpoints, Family, Owner, OwnerSource};
use crate::tcp_state::TcpState;

/// What a record reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A state transition of a full socket.
    Transition,
    /// A transition at which the connection moved to timewait socket `tw`; `newstate` is
    /// the state it keeps there (TIME_WAIT, or FIN_WAIT2 for an orphan).
    Handover { tw: u64 },
    /// The timewait socket's timer was armed; `state` is its state now.
    TwArmed { tw: u64, state: TcpState },
    /// The timewait socket's timer was removed (before expiry, before re-arming, or because
    /// the timewait socket was killed).
    TwCancel { tw: u64, state: TcpState },
    /// The timewait socket's timer fired in `state`: the connection is over.
    TwExpire { tw: u64, state: TcpState },
    /// Not about a socket: process `pid` started the program `comm` (exec). Only `ts_ns`,
    /// `pid` and `comm` mean anything.
    Exec,
}

/// A record as the kernel reported it, before socket tracking and clock mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub kind: Kind,
    pub ts_ns: u64,
    pub skaddr: u64,
    /// The socket cookie (transitions; 0 when the kernel had not made one).
    pub cookie: u64,
    pub pid: u32,
    pub comm: Comm,
    pub owner: Option<Owner>,
    pub family: Family,
    pub ends: Endpoints,
    pub oldstate: TcpState,
    pub newstate: TcpState,
    /// `sk_err` at a transition into CLOSE.
    pub error: i32,
    pub retransmits: u8,
    /// Recorded by the backup program, for a hit the kernel skipped the main program for.
    pub by_backup: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record is {got} bytes, expected {EVENT_SIZE}")]
    Length { got: usize },
    #[error("record names TCP state {0}, which the kernel does not define")]
    State(u8),
    #[error("record has address family {0}, expected AF_INET ({AF_INET}) or AF_INET6 ({AF_INET6})")]
    Family(u16),
    #[error("record has kind {0}, which this portrace does not know")]
    Kind(u8),
    #[error("record has owner source {0}, which this portrace does not know")]
    OwnerSource(u8),
}

fn exec(ev: &Event) -> Decoded {
    let nowhere = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    Decoded {
        kind: Kind::Exec,
        ts_ns: ev.ts_ns,
        skaddr: 0,
        cookie: 0,
        pid: ev.pid,
        comm: Comm::from_kernel(&ev.comm),
        owner: None,
        family: Family::Ipv4,
        ends: Endpoints { saddr: nowhere, sport: 0, daddr: nowhere, dport: 0, netns: 0 },
        oldstate: TcpState::Close,
        newstate: TcpState::Close,
        error: 0,
        retransmits: 0,
        by_backup: false,
    }
}

/// Decodes one record.
pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    if bytes.len() != EVENT_SIZE {
        return Err(DecodeError::Length { got: bytes.len() });
    }
    // SAFETY: the length is checked above, `Event` is plain old data (any bit pattern is a
    // valid value), and read_unaligned makes no assumption about the buffer's alignment.
    let ev: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) };
    from_event(&ev)
}

/// Checks and types an [`Event`].
pub fn from_event(ev: &Event) -> Result<Decoded, DecodeError> {
    if ev.kind == kind::EXEC {
        return Ok(exec(ev));
    }
    let oldstate = TcpState::from_kernel(ev.oldstate).ok_or(DecodeError::State(ev.oldstate))?;
    let newstate = TcpState::from_kernel(ev.newstate).ok_or(DecodeError::State(ev.newstate))?;
    let (family, saddr, daddr) = match ev.family {
        AF_INET => (Family::Ipv4, ipv4(&ev.saddr), ipv4(&ev.daddr)),
        AF_INET6 => (
            Family::Ipv6,
            IpAddr::V6(Ipv6Addr::from(ev.saddr)),
            IpAddr::V6(Ipv6Addr::from(ev.daddr)),
        ),
        other => return Err(DecodeError::Family(other)),
    };
    let state = |n: u8| TcpState::from_kernel(n).ok_or(DecodeError::State(n));
    let record_kind = match ev.kind {
        kind::TRANSITION => Kind::Transition,
        kind::HANDOVER => Kind::Handover { tw: ev.aux },
        kind::TW_ARMED => Kind::TwArmed { tw: ev.aux, state: state(ev.tw_substate)? },
        kind::TW_CANCEL => Kind::TwCancel { tw: ev.aux, state: state(ev.tw_substate)? },
        kind::TW_EXPIRE => Kind::TwExpire { tw: ev.aux, state: state(ev.tw_substate)? },
        other => return Err(DecodeError::Kind(other)),
    };
    let by_backup = ev.owner_source & owner_source::BY_BACKUP != 0;
    let source = match ev.owner_source & !(owner_source::BY_BACKUP | owner_source::IN_CGROUP) {
        owner_source::UNKNOWN => None,
        owner_source::SYSCALL => Some(OwnerSource::Syscall),
        owner_source::LISTENER => Some(OwnerSource::Listener),
        owner_source::INVENTORY => Some(OwnerSource::Inventory),
        other => return Err(DecodeError::OwnerSource(other)),
    };
    Ok(Decoded {
        kind: record_kind,
        ts_ns: ev.ts_ns,
        skaddr: ev.skaddr,
        cookie: if ev.kind == kind::TRANSITION { ev.aux } else { 0 },
        pid: ev.pid,
        comm: Comm::from_kernel(&ev.comm),
        owner: source.map(|source| Owner {
            pid: ev.owner_pid,
            comm: Comm::from_kernel(&ev.owner_comm),
            source,
            cgroup: ev.owner_cgroup,
        }),
        family,
        ends: Endpoints { saddr, sport: ev.sport, daddr, dport: ev.dport, netns: ev.netns },
        oldstate,
        newstate,
        error: ev.error,
        retransmits: ev.retransmits,
        by_backup,
    })
}

fn ipv4(a: &[u8; 16]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
}

/// The raw bytes of an event, as the kernel writes them (for tests and fixtures).
pub fn encode(ev: &Event) -> [u8; EVENT_SIZE] {
    // SAFETY: `Event` is repr(C) without padding, so all EVENT_SIZE bytes are initialised.
    unsafe { std::mem::transmute_copy(ev) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portrace_ebpf::tcp;

    fn event() -> Event {
        let mut saddr = [0u8; 16];
        saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let mut daddr = [0u8; 16];
        daddr[..4].copy_from_slice(&[10, 1, 2, 3]);
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        let mut owner_comm = [0u8; 16];
        owner_comm[..5].copy_from_slice(b"nginx");
        Event {
            ts_ns: 42,
            skaddr: 0xffff_8880_1234_5678,
            aux: 77,
            saddr,
            daddr,
            pid: 1000,
            tid: 1001,
            comm,
            owner_pid: 300,
            error: 0,
            owner_comm,
            sport: 54321,
            dport: 80,
            family: AF_INET,
            oldstate: tcp::SYN_SENT,
            newstate: tcp::ESTABLISHED,
            kind: kind::TRANSITION,
            owner_source: owner_source::LISTENER,
            tw_substate: 0,
            retransmits: 0,
            netns: 4026531840,
            owner_cgroup: 7321,
        }
    }

    #[test]
    fn decodes_an_ipv4_transition() {
        let d = decode(&encode(&event())).unwrap();
        assert_eq!(d.ts_ns, 42);
        assert_eq!(d.skaddr, 0xffff_8880_1234_5678);
        assert_eq!(d.pid, 1000);
        assert_eq!(d.comm.as_bytes(), b"curl");
        assert_eq!(d.family, Family::Ipv4);
        assert_eq!(d.ends.saddr, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(d.ends.daddr, "10.1.2.3".parse::<IpAddr>().unwrap());
        assert_eq!((d.ends.sport, d.ends.dport), (54321, 80));
        assert_eq!((d.oldstate, d.newstate), (TcpState::SynSent, TcpState::Established));
        assert_eq!(d.kind, Kind::Transition);
        assert_eq!(d.cookie, 77);
        assert_eq!(d.ends.netns, 4026531840);
        let owner = d.owner.unwrap();
        assert_eq!((owner.pid, owner.comm.as_bytes(), owner.source), (300, &b"nginx"[..], OwnerSource::Listener));
        assert_eq!(owner.cgroup, 7321);
        // The kernel filter's cgroup bit is not a source of its own.
        let mut ev = event();
        ev.owner_source = owner_source::SYSCALL | owner_source::IN_CGROUP | owner_source::BY_BACKUP;
        let d = decode(&encode(&ev)).unwrap();
        assert_eq!((d.owner.unwrap().source, d.by_backup), (OwnerSource::Syscall, true));
    }

    #[test]
    fn decodes_timewait_kinds_and_unknown_owners() {
        let mut ev = event();
        ev.kind = kind::TW_EXPIRE;
        ev.tw_substate = tcp::TIME_WAIT;
        ev.aux = 0xffff_8880_0000_1000;
        ev.owner_source = owner_source::UNKNOWN;
        let d = decode(&encode(&ev)).unwrap();
        assert_eq!(d.kind, Kind::TwExpire { tw: 0xffff_8880_0000_1000, state: TcpState::TimeWait });
        assert_eq!(d.cookie, 0, "aux is the timewait socket, not a cookie");
        assert_eq!(d.owner, None);
        ev.kind = kind::HANDOVER;
        assert_eq!(decode(&encode(&ev)).unwrap().kind, Kind::Handover { tw: 0xffff_8880_0000_1000 });
    }

    #[test]
    fn a_transition_the_backup_recorded_is_marked_and_keeps_its_owner() {
        let mut ev = event();
        assert!(!decode(&encode(&ev)).unwrap().by_backup);
        ev.owner_source = owner_source::LISTENER | owner_source::BY_BACKUP;
        let d = decode(&encode(&ev)).unwrap();
        assert!(d.by_backup);
        assert_eq!(d.owner.map(|o| o.source), Some(OwnerSource::Listener));
        ev.owner_source = owner_source::BY_BACKUP;
        let d = decode(&encode(&ev)).unwrap();
        assert!(d.by_backup);
        assert_eq!(d.owner, None);
    }

    #[test]
    fn rejects_unknown_kinds_sources_and_substates() {
        let mut ev = event();
        ev.kind = 9;
        assert_eq!(decode(&encode(&ev)), Err(DecodeError::Kind(9)));
        let mut ev = event();
        ev.owner_source = 7;
        assert_eq!(decode(&encode(&ev)), Err(DecodeError::OwnerSource(7)));
        let mut ev = event();
        ev.kind = kind::TW_ARMED;
        ev.tw_substate = 0;
        assert_eq!(decode(&encode(&ev)), Err(DecodeError::State(0)));
    }

    #[test]
    fn decodes_an_ipv6_transition() {
        let mut ev = event();
        ev.family = AF_INET6;
        ev.saddr = "::1".parse::<Ipv6Addr>().unwrap().octets();
        ev.daddr = "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets();
        let d = decode(&encode(&ev)).unwrap();
        assert_eq!(d.family, Family::Ipv6);
        assert_eq!(d.ends.saddr.to_string(), "::1");
        assert_eq!(d.ends.daddr.to_string(), "2001:db8::7");
    }

    #[test]
    fn rejects_short_and_long_records() {
        let bytes = encode(&event());
        assert_eq!(decode(&bytes[..EVENT_SIZE - 1]), Err(DecodeError::Length { got: EVENT_SIZE - 1 }));
        assert_eq!(decode(&[]), Err(DecodeError::Length { got: 0 }));
        let mut long = bytes.to_vec();
        long.push(0);
        assert_eq!(decode(&long), Err(DecodeError::Length { got: EVENT_SIZE + 1 }));
    }

    #[test]
    fn rejects_unknown_states_and_families() {
        let mut ev = event();
        ev.newstate = 13;
        assert_eq!(decode(&encode(&ev)), Err(DecodeError::State(13)));
        let mut ev = event();
        ev.oldstate = 0;
        assert_eq!(decode(&encode(&ev)), Err(DecodeError::State(0)));
        let mut ev = event();
        ev.family = 1;
        assert_eq!(decode(&encode(&ev)), Err(DecodeError::Family(1)));
    }

    #[test]
    fn comm_stops_at_the_first_nul_and_keeps_odd_bytes() {
        let mut ev = event();
        ev.comm = *b"a\xffb\0garbage\0\0\0\0\0";
        let d = decode(&encode(&ev)).unwrap();
        assert_eq!(d.comm.as_bytes(), b"a\xffb");
        ev.comm = *b"0123456789abcdef";
        assert_eq!(decode(&encode(&ev)).unwrap().comm.as_bytes(), b"0123456789abcdef");
    }
}
