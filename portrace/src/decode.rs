//! Turns the bytes of one ring-buffer record into a checked, typed transition. The kernel
//! program is trusted to write [`Event`]s, but a record that is short, names a state the
//! kernel does not have, or carries an unknown address family is rejected with a reason
//! rather than shown as something it is not.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use portrace_ebpf::{Event, AF_INET, AF_INET6, EVENT_SIZE};

use crate::record::{Comm, Family};
use crate::tcp_state::TcpState;

/// A transition as the kernel reported it, before socket tracking and clock mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub ts_ns: u64,
    pub skaddr: u64,
    pub pid: u32,
    pub comm: Comm,
    pub family: Family,
    pub saddr: IpAddr,
    pub sport: u16,
    pub daddr: IpAddr,
    pub dport: u16,
    pub oldstate: TcpState,
    pub newstate: TcpState,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record is {got} bytes, expected {EVENT_SIZE}")]
    Length { got: usize },
    #[error("record names TCP state {0}, which the kernel does not define")]
    State(u8),
    #[error("record has address family {0}, expected AF_INET ({AF_INET}) or AF_INET6 ({AF_INET6})")]
    Family(u16),
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
    Ok(Decoded {
        ts_ns: ev.ts_ns,
        skaddr: ev.skaddr,
        pid: ev.pid,
        comm: Comm::from_kernel(&ev.comm),
        family,
        saddr,
        sport: ev.sport,
        daddr,
        dport: ev.dport,
        oldstate,
        newstate,
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
        Event {
            ts_ns: 42,
            skaddr: 0xffff_8880_1234_5678,
            saddr,
            daddr,
            pid: 1000,
            tid: 1001,
            comm,
            sport: 54321,
            dport: 80,
            family: AF_INET,
            oldstate: tcp::SYN_SENT,
            newstate: tcp::ESTABLISHED,
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
        assert_eq!(d.saddr, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(d.daddr, "10.1.2.3".parse::<IpAddr>().unwrap());
        assert_eq!((d.sport, d.dport), (54321, 80));
        assert_eq!((d.oldstate, d.newstate), (TcpState::SynSent, TcpState::Established));
    }

    #[test]
    fn decodes_an_ipv6_transition() {
        let mut ev = event();
        ev.family = AF_INET6;
        ev.saddr = "::1".parse::<Ipv6Addr>().unwrap().octets();
        ev.daddr = "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets();
        let d = decode(&encode(&ev)).unwrap();
        assert_eq!(d.family, Family::Ipv6);
        assert_eq!(d.saddr.to_string(), "::1");
        assert_eq!(d.daddr.to_string(), "2001:db8::7");
    }

    #[test]
    fn rejects_short_and_long_records() {
        let bytes = encode(&event());
        assert_eq!(decode(&bytes[..79]), Err(DecodeError::Length { got: 79 }));
        assert_eq!(decode(&[]), Err(DecodeError::Length { got: 0 }));
        let mut long = bytes.to_vec();
        long.push(0);
        assert_eq!(decode(&long), Err(DecodeError::Length { got: 81 }));
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
