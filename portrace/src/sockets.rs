//! Socket identity and time in state. The kernel names a socket by its address, which is
//! reused once the socket is freed; this module gives each socket life its own id and
//! remembers when it entered its current state, so every transition can say how long the
//! socket spent in the state it left, or that portrace does not know.

use std::collections::HashMap;

use crate::decode::Decoded;
use crate::tcp_state::TcpState;

/// What the tracker knows about one live socket.
#[derive(Clone, Copy, Debug)]
struct Live {
    id: u64,
    state: TcpState,
    since_ns: u64,
}

/// The tracker's verdict on one transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    pub socket: u64,
    /// Nanoseconds spent in the old state; `None` when the socket was not seen entering it.
    pub prev_state_ns: Option<u64>,
}

/// Tracks the sockets that are alive (seen and not yet closed).
#[derive(Debug)]
pub struct Sockets {
    live: HashMap<u64, Live>,
    next_id: u64,
    capacity: usize,
    untracked: u64,
}

impl Sockets {
    /// A tracker that remembers at most `capacity` live sockets; beyond that, new sockets
    /// still get ids but their durations read as unknown (counted by [`Self::untracked`]).
    pub fn new(capacity: usize) -> Sockets {
        Sockets { live: HashMap::new(), next_id: 1, capacity, untracked: 0 }
    }

    /// Records a transition and says which socket it belongs to and how long it spent in
    /// the state it left.
    pub fn observe(&mut self, t: &Decoded) -> Observed {
        let known = self.live.get(&t.skaddr).copied();
        let (id, prev_state_ns) = match known {
            Some(live) if live.state == t.oldstate => {
                (live.id, Some(t.ts_ns.saturating_sub(live.since_ns)))
            }
            // The address belongs to a new socket: one just created (it leaves CLOSE) or a
            // child cloned from a listener. An entry left from an earlier life of the same
            // address is stale.
            _ if is_birth(t.oldstate, t.newstate) => (self.new_id(), None),
            // Transitions of this socket were not seen (lost, or it predates portrace).
            Some(live) => (live.id, None),
            None => (self.new_id(), None),
        };
        if t.newstate == TcpState::Close {
            self.live.remove(&t.skaddr);
        } else if known.is_some() || self.live.len() < self.capacity {
            self.live.insert(t.skaddr, Live { id, state: t.newstate, since_ns: t.ts_ns });
        } else {
            self.untracked += 1;
        }
        Observed { socket: id, prev_state_ns }
    }

    fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Sockets alive now, as far as portrace has seen.
    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// Sockets whose state was not remembered because the tracker was full.
    pub fn untracked(&self) -> u64 {
        self.untracked
    }
}

/// The transitions that start a socket's life: a new socket leaves CLOSE, and a child
/// socket is cloned from its listener in LISTEN and reported as LISTEN -> SYN_RECV.
fn is_birth(old: TcpState, new: TcpState) -> bool {
    old == TcpState::Close || (old == TcpState::Listen && new == TcpState::SynRecv)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::record::{Comm, Family};
    use TcpState::*;

    fn t(skaddr: u64, ts_ns: u64, old: TcpState, new: TcpState) -> Decoded {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Decoded {
            ts_ns,
            skaddr,
            pid: 1,
            comm: Comm::new("t"),
            family: Family::Ipv4,
            saddr: lo,
            sport: 1,
            daddr: lo,
            dport: 2,
            oldstate: old,
            newstate: new,
        }
    }

    #[test]
    fn durations_follow_a_connection() {
        let mut s = Sockets::new(16);
        let a = s.observe(&t(0xa, 100, Close, SynSent));
        assert_eq!(a.prev_state_ns, None);
        let b = s.observe(&t(0xa, 350, SynSent, Established));
        assert_eq!(b, Observed { socket: a.socket, prev_state_ns: Some(250) });
        let c = s.observe(&t(0xa, 1350, Established, FinWait1));
        assert_eq!(c.prev_state_ns, Some(1000));
        s.observe(&t(0xa, 1400, FinWait1, FinWait2));
        let e = s.observe(&t(0xa, 1500, FinWait2, Close));
        assert_eq!(e, Observed { socket: a.socket, prev_state_ns: Some(100) });
        assert_eq!(s.live(), 0, "a closed socket is forgotten");
    }

    #[test]
    fn a_reused_address_is_a_new_socket() {
        let mut s = Sockets::new(16);
        let first = s.observe(&t(0xa, 1, Close, SynSent)).socket;
        s.observe(&t(0xa, 2, SynSent, Close));
        let second = s.observe(&t(0xa, 3, Close, Listen));
        assert_ne!(second.socket, first);
        assert_eq!(second.prev_state_ns, None);
    }

    #[test]
    fn a_child_from_a_stale_address_is_a_new_socket() {
        let mut s = Sockets::new(16);
        // A socket whose CLOSE was lost leaves a stale entry behind.
        let old = s.observe(&t(0xb, 1, Close, SynSent)).socket;
        s.observe(&t(0xb, 2, SynSent, Established));
        let child = s.observe(&t(0xb, 3, Listen, SynRecv));
        assert_ne!(child.socket, old);
        assert_eq!(child.prev_state_ns, None);
    }

    #[test]
    fn missed_transitions_keep_the_socket_but_not_the_duration() {
        let mut s = Sockets::new(16);
        let id = s.observe(&t(0xc, 10, Close, SynSent)).socket;
        // SYN_SENT -> ESTABLISHED was lost.
        let next = s.observe(&t(0xc, 20, Established, FinWait1));
        assert_eq!(next, Observed { socket: id, prev_state_ns: None });
        let after = s.observe(&t(0xc, 25, FinWait1, FinWait2));
        assert_eq!(after.prev_state_ns, Some(5));
    }

    #[test]
    fn a_socket_older_than_the_trace_gets_an_id_and_no_duration() {
        let mut s = Sockets::new(16);
        let o = s.observe(&t(0xd, 5, Established, CloseWait));
        assert_eq!(o.prev_state_ns, None);
        assert_eq!(s.observe(&t(0xd, 9, CloseWait, LastAck)).prev_state_ns, Some(4));
    }

    #[test]
    fn a_full_tracker_counts_what_it_cannot_remember() {
        let mut s = Sockets::new(1);
        s.observe(&t(1, 1, Close, Listen));
        let a = s.observe(&t(2, 1, Close, SynSent));
        let b = s.observe(&t(2, 2, SynSent, Established));
        assert_ne!(a.socket, b.socket, "an untracked socket cannot be recognised later");
        assert_eq!(b.prev_state_ns, None);
        assert_eq!(s.untracked(), 2);
        assert_eq!(s.live(), 1);
    }

    #[test]
    fn ids_are_unique_and_increasing() {
        let mut s = Sockets::new(16);
        let ids: Vec<u64> =
            (0..5).map(|i| s.observe(&t(100 + i, 1, Close, SynSent)).socket).collect();
        assert_eq!(ids, vec![1, 2, 3, 4, 5]);
    }
}
