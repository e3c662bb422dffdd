//! Socket identity and time in state. The kernel names a socket by its address, which is
//! reused once the socket is freed; this module gives each socket life its own id and
//! remembers when it entered its current state, so every transition can say how long the
//! socket spent in the state it left, or that portrace does not know.
//!
//! A connection that moves to a timewait socket keeps its id: it is re-keyed from the full
//! socket's address to the timewait socket's.

use std::collections::hash_map::Entry;
use std::collections::VecDeque;

use foldhash::{HashMap, HashMapExt};
use std::net::IpAddr;

use crate::gaps;
pub use crate::record::Endpoints;
use crate::tcp_state::TcpState;

/// Where the kernel keeps a socket: a full socket or a timewait socket, at an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SockKey {
    Full(u64),
    TimeWait(u64),
}

impl Endpoints {
    /// Whether `later` can be the same socket: every endpoint known here is unchanged.
    fn compatible(&self, later: &Endpoints) -> bool {
        let addr_ok = |a: IpAddr, b: IpAddr| a.is_unspecified() || a == b;
        let port_ok = |a: u16, b: u16| a == 0 || a == b;
        (self.netns == 0 || later.netns == 0 || self.netns == later.netns)
            && addr_ok(self.saddr, later.saddr)
            && port_ok(self.sport, later.sport)
            && addr_ok(self.daddr, later.daddr)
            && port_ok(self.dport, later.dport)
    }
}

/// What the tracker knows about one live socket.
#[derive(Clone, Copy, Debug)]
struct Live {
    id: u64,
    state: TcpState,
    since_ns: u64,
    /// `since_ns` is the start of the trace, not the moment the state was entered.
    at_least: bool,
    ends: Endpoints,
    /// The state its last transition left (none for a socket older than the trace).
    left: Option<TcpState>,
}

/// The tracker's verdict on one transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    pub socket: u64,
    /// Nanoseconds spent in the old state; `None` when the socket was not seen entering it.
    pub prev_state_ns: Option<u64>,
    /// The duration is a lower bound (the socket predates the trace).
    pub at_least: bool,
}

/// Tracks the sockets that are alive (seen and not yet closed).
#[derive(Debug)]
pub struct Sockets {
    live: HashMap<SockKey, Live>,
    next_id: u64,
    capacity: usize,
    untracked: u64,
    /// See [`Sockets::unseen`].
    unseen: u64,
    /// Sockets whose end went unseen, found when a new socket took their address; the
    /// latest [`ENDED_UNSEEN_REMEMBERED`].
    ended_unseen: VecDeque<gaps::Open>,
    /// The state each recently ended socket (closed, or moved to a timewait socket) left
    /// last, by the key it had, oldest first in `ended_order`.
    ended: HashMap<SockKey, TcpState>,
    ended_order: VecDeque<SockKey>,
}

/// How many ended sockets [`Sockets::repeats`] remembers: a second record of a socket's last
/// transition comes at most milliseconds after the first.
const ENDED_REMEMBERED: usize = 8192;

/// How many sockets whose end went unseen [`Sockets::ended_unseen`] remembers.
const ENDED_UNSEEN_REMEMBERED: usize = 65_536;

impl Sockets {
    /// A tracker that remembers at most `capacity` live sockets; beyond that, new sockets
    /// still get ids but their durations read as unknown (counted by [`Self::untracked`]).
    pub fn new(capacity: usize) -> Sockets {
        Sockets {
            live: HashMap::new(),
            next_id: 1,
            capacity,
            untracked: 0,
            unseen: 0,
            ended_unseen: VecDeque::new(),
            ended: HashMap::new(),
            ended_order: VecDeque::new(),
        }
    }

    /// A new socket id, for a socket portrace learns of outside a transition.
    pub fn new_id(&mut self) -> u64 {
        take_id(&mut self.next_id)
    }

    /// Remembers a socket that existed before the trace: in `state` since at least `since_ns`.
    pub fn seed(&mut self, key: SockKey, id: u64, state: TcpState, since_ns: u64, ends: Endpoints) {
        if self.live.len() < self.capacity {
            self.live.insert(key, Live { id, state, since_ns, at_least: true, ends, left: None });
        }
    }

    /// The state the tracker has for a socket.
    pub fn state(&self, key: SockKey) -> Option<TcpState> {
        self.live.get(&key).map(|l| l.state)
    }

    /// The endpoints the tracker has for a socket.
    pub fn ends(&self, key: SockKey) -> Option<Endpoints> {
        self.live.get(&key).map(|l| l.ends)
    }

    /// Whether `old -> new` is the last transition the socket at `key` made, seen already:
    /// it is in `new` having left `old`, or it went from `old` into CLOSE or to a timewait
    /// socket a moment ago and its address holds no socket in `old` now. A socket never
    /// makes one transition twice in a row, so a second record of it is a duplicate.
    pub fn repeats(&self, key: SockKey, old: TcpState, new: TcpState) -> bool {
        match self.live.get(&key) {
            Some(l) if l.state == new && l.left == Some(old) => true,
            Some(l) if l.state == old => false,
            _ => new == TcpState::Close && self.ended.get(&key) == Some(&old),
        }
    }

    fn remember_ended(&mut self, key: SockKey, left: TcpState) {
        if self.ended.insert(key, left).is_none() {
            self.ended_order.push_back(key);
            if self.ended_order.len() > ENDED_REMEMBERED {
                if let Some(oldest) = self.ended_order.pop_front() {
                    self.ended.remove(&oldest);
                }
            }
        }
    }

    /// Records a transition `old -> new` at `ts_ns` and says which socket it belongs to and
    /// how long it spent in the state it left. The socket's entry is found once, and
    /// updated, inserted or removed where it was found.
    pub fn observe(&mut self, key: SockKey, ts_ns: u64, old: TcpState, new: TcpState, ends: Endpoints) -> Observed {
        let room = self.live.len() < self.capacity;
        let entry = self.live.entry(key);
        let before = match &entry {
            Entry::Occupied(e) => Some(*e.get()),
            Entry::Vacant(_) => None,
        };
        let known = before.filter(|l| l.ends.compatible(&ends));
        // A new socket: one just created (it leaves CLOSE) or a child cloned from a
        // listener. An entry left from an earlier life of the same address is stale.
        let birth = is_birth(old, new);
        // (The entry holds the table: ids come from the counter itself.)
        let mut fresh_id = || take_id(&mut self.next_id);
        let (id, prev_state_ns, at_least) = match known {
            Some(live) if !birth && live.state == old => {
                (live.id, Some(ts_ns.saturating_sub(live.since_ns)), live.at_least)
            }
            _ if birth => (fresh_id(), None, false),
            // Transitions of this socket were not seen (lost, filtered out, or it predates
            // portrace).
            Some(live) => (live.id, None, false),
            None => (fresh_id(), None, false),
        };
        let (unseen, ended) = match (key, before) {
            // A timewait socket's records come from timers, on their own terms (see the
            // timeline); a socket from the inventory may have changed state
            // between the inventory and the start.
            (SockKey::TimeWait(_), _) | (_, None) => (0, None),
            (_, Some(l)) if l.at_least => (0, None),
            (_, Some(l)) if birth => (gaps::unseen_end(l.state), Some(l)),
            (_, Some(l)) if known.is_some() => (gaps::between(l.state, old), None),
            // Another socket at a socket's address: the first one's end and this one's
            // birth were not seen.
            (_, Some(l)) => (gaps::unseen_end(l.state) + gaps::unseen_since_birth(old), Some(l)),
        };
        self.unseen += unseen;
        if let Some(l) = ended {
            // Where it went may still show at the end of the run.
            if self.ended_unseen.len() == ENDED_UNSEEN_REMEMBERED {
                self.ended_unseen.pop_front();
            }
            self.ended_unseen.push_back(gaps::Open { full: true, state: l.state, since_ns: l.since_ns, ends: l.ends });
        }
        let now = |ends| Live { id, state: new, since_ns: ts_ns, at_least: false, ends, left: Some(old) };
        match entry {
            Entry::Occupied(e) if new == TcpState::Close => {
                e.remove();
            }
            Entry::Occupied(mut e) => {
                let ends = merge(known.map(|l| l.ends), ends);
                *e.get_mut() = now(ends);
            }
            Entry::Vacant(_) if new == TcpState::Close => {}
            Entry::Vacant(slot) if room => {
                slot.insert(now(ends));
            }
            Entry::Vacant(_) => self.untracked += 1,
        }
        if new == TcpState::Close {
            self.remember_ended(key, old);
        }
        Observed { socket: id, prev_state_ns, at_least }
    }

    /// Moves a socket to another key (a connection moving to its timewait socket).
    pub fn rekey(&mut self, from: SockKey, to: SockKey) {
        if let Some(live) = self.live.remove(&from) {
            if let Some(left) = live.left {
                self.remember_ended(from, left);
            }
            self.live.insert(to, live);
        }
    }

    /// Forgets a socket.
    pub fn forget(&mut self, key: SockKey) {
        self.live.remove(&key);
    }

    /// Sockets alive now, as far as portrace has seen.
    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// Sockets whose state was not remembered because the tracker was full.
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    /// The sockets the tracker has as open, each with its key.
    pub fn open(&self) -> impl Iterator<Item = (SockKey, gaps::Open)> + '_ {
        self.live.iter().map(|(key, l)| {
            let open = gaps::Open { full: matches!(key, SockKey::Full(_)), state: l.state, since_ns: l.since_ns, ends: l.ends };
            (*key, open)
        })
    }

    /// Sockets whose end went unseen, found when a new socket took their address (the
    /// latest 65,536), as they were last seen.
    pub fn ended_unseen(&self) -> Vec<gaps::Open> {
        self.ended_unseen.iter().copied().collect()
    }

    /// Adds transitions found unseen otherwise than by [`Self::observe`].
    pub fn add_unseen(&mut self, n: u64) {
        self.unseen += n;
    }

    /// Transitions that sockets made unseen, at least, as the holes in their sequences
    /// show ([`crate::gaps`]): a socket seen leaving a state it was not seen entering, or a
    /// socket's address taken by a new one before its end was seen. Only meaningful when
    /// every transition of a socket passes the filter or none does.
    pub fn unseen(&self) -> u64 {
        self.unseen
    }
}

/// The next socket id of counter `next`, which moves on.
fn take_id(next: &mut u64) -> u64 {
    let id = *next;
    *next += 1;
    id
}

/// The endpoints known so far: a port or address learned later fills in an unknown one.
fn merge(before: Option<Endpoints>, now: Endpoints) -> Endpoints {
    before.map_or(now, |b| b.updated_by(now))
}

/// The transitions that start a socket's life: a new socket leaves CLOSE, and a child
/// socket is cloned from its listener in LISTEN and reported as LISTEN -> SYN_RECV.
fn is_birth(old: TcpState, new: TcpState) -> bool {
    old == TcpState::Close || (old == TcpState::Listen && new == TcpState::SynRecv)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use TcpState::*;

    const A: SockKey = SockKey::Full(0xa);

    fn ends(sport: u16, dport: u16) -> Endpoints {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Endpoints { saddr: lo, sport, daddr: lo, dport, netns: 0 }
    }

    fn obs(s: &mut Sockets, key: SockKey, ts: u64, old: TcpState, new: TcpState) -> Observed {
        s.observe(key, ts, old, new, ends(1, 2))
    }

    #[test]
    fn durations_follow_a_connection() {
        let mut s = Sockets::new(16);
        let a = obs(&mut s, A, 100, Close, SynSent);
        assert_eq!(a.prev_state_ns, None);
        let b = obs(&mut s, A, 350, SynSent, Established);
        assert_eq!(b, Observed { socket: a.socket, prev_state_ns: Some(250), at_least: false });
        assert_eq!(obs(&mut s, A, 1350, Established, FinWait1).prev_state_ns, Some(1000));
        obs(&mut s, A, 1400, FinWait1, FinWait2);
        let e = obs(&mut s, A, 1500, FinWait2, Close);
        assert_eq!(e.prev_state_ns, Some(100));
        assert_eq!(s.live(), 0, "a closed socket is forgotten");
    }

    #[test]
    fn the_port_bound_after_syn_sent_is_the_same_socket() {
        let mut s = Sockets::new(16);
        let a = s.observe(A, 1, Close, SynSent, ends(0, 80));
        let b = s.observe(A, 5, SynSent, Established, ends(40000, 80));
        assert_eq!(b, Observed { socket: a.socket, prev_state_ns: Some(4), at_least: false });
    }

    #[test]
    fn a_reused_address_is_a_new_socket() {
        let mut s = Sockets::new(16);
        let first = obs(&mut s, A, 1, Close, SynSent).socket;
        obs(&mut s, A, 2, SynSent, Close);
        let second = obs(&mut s, A, 3, Close, Listen);
        assert_ne!(second.socket, first);
        assert_eq!(second.prev_state_ns, None);
    }

    #[test]
    fn a_reused_address_with_other_ports_is_a_new_socket_even_unseen_births() {
        // A filter hid the births and ends: only the ports tell the sockets apart.
        let mut s = Sockets::new(16);
        let a = s.observe(A, 1, Established, CloseWait, ends(24924, 65122));
        let a2 = s.observe(A, 2, CloseWait, LastAck, ends(24924, 65122));
        assert_eq!(a.socket, a2.socket);
        let b = s.observe(A, 3, Established, CloseWait, ends(24932, 65122));
        assert_ne!(b.socket, a.socket);
        assert_eq!(b.prev_state_ns, None);
    }

    #[test]
    fn a_child_from_a_stale_address_is_a_new_socket() {
        let mut s = Sockets::new(16);
        let old = obs(&mut s, A, 1, Close, SynSent).socket;
        obs(&mut s, A, 2, SynSent, Established);
        let child = obs(&mut s, A, 3, Listen, SynRecv);
        assert_ne!(child.socket, old);
        assert_eq!(child.prev_state_ns, None);
    }

    #[test]
    fn missed_transitions_keep_the_socket_but_not_the_duration() {
        let mut s = Sockets::new(16);
        let id = obs(&mut s, A, 10, Close, SynSent).socket;
        let next = obs(&mut s, A, 20, Established, FinWait1);
        assert_eq!(next, Observed { socket: id, prev_state_ns: None, at_least: false });
        assert_eq!(obs(&mut s, A, 25, FinWait1, FinWait2).prev_state_ns, Some(5));
    }

    #[test]
    fn a_seeded_socket_reports_at_least_since_the_start() {
        let mut s = Sockets::new(16);
        s.seed(A, 42, Established, 1000, ends(1, 2));
        let o = obs(&mut s, A, 5000, Established, CloseWait);
        assert_eq!(o, Observed { socket: 42, prev_state_ns: Some(4000), at_least: true });
        let o = obs(&mut s, A, 5100, CloseWait, LastAck);
        assert_eq!(o, Observed { socket: 42, prev_state_ns: Some(100), at_least: false });
    }

    #[test]
    fn a_connection_keeps_its_id_in_its_timewait_socket() {
        let mut s = Sockets::new(16);
        let id = obs(&mut s, A, 1, Close, SynSent).socket;
        obs(&mut s, A, 2, SynSent, Established);
        obs(&mut s, A, 3, Established, FinWait1);
        obs(&mut s, A, 4, FinWait1, FinWait2);
        let handover = obs(&mut s, A, 6, FinWait2, TimeWait);
        assert_eq!(handover.prev_state_ns, Some(2));
        let tw = SockKey::TimeWait(0xb);
        s.rekey(A, tw);
        assert_eq!(s.state(A), None);
        assert_eq!(s.state(tw), Some(TimeWait));
        let end = obs(&mut s, tw, 60_000_006, TimeWait, Close);
        assert_eq!(end, Observed { socket: id, prev_state_ns: Some(60_000_000), at_least: false });
    }

    #[test]
    fn whole_sequences_leave_no_hole() {
        let mut s = Sockets::new(16);
        for (i, key) in [SockKey::Full(1), SockKey::Full(2)].into_iter().enumerate() {
            let t = 10 * i as u64;
            obs(&mut s, key, t, Close, SynSent);
            obs(&mut s, key, t + 1, SynSent, Established);
            obs(&mut s, key, t + 2, Established, CloseWait);
            obs(&mut s, key, t + 3, CloseWait, LastAck);
            obs(&mut s, key, t + 4, LastAck, Close);
        }
        // The address reused after a seen end; a child; a move to a timewait socket.
        obs(&mut s, SockKey::Full(1), 30, Close, Listen);
        obs(&mut s, SockKey::Full(1), 31, Listen, Close);
        obs(&mut s, SockKey::Full(3), 32, Listen, SynRecv);
        obs(&mut s, SockKey::Full(3), 33, SynRecv, Established);
        obs(&mut s, SockKey::Full(3), 34, Established, FinWait1);
        obs(&mut s, SockKey::Full(3), 35, FinWait1, FinWait2);
        obs(&mut s, SockKey::Full(3), 36, FinWait2, TimeWait);
        s.rekey(SockKey::Full(3), SockKey::TimeWait(9));
        obs(&mut s, SockKey::Full(3), 37, Close, SynSent);
        assert_eq!(s.unseen(), 0);
    }

    #[test]
    fn a_hole_counts_the_fewest_transitions_that_fill_it() {
        let mut s = Sockets::new(16);
        obs(&mut s, A, 10, Close, SynSent);
        obs(&mut s, A, 20, Established, FinWait1);
        assert_eq!(s.unseen(), 1, "SYN_SENT -> ESTABLISHED");
        obs(&mut s, A, 30, FinWait2, TimeWait);
        assert_eq!(s.unseen(), 2, "and FIN_WAIT1 -> FIN_WAIT2");
    }

    #[test]
    fn a_new_socket_at_the_address_of_one_still_open_means_its_end_was_unseen() {
        let mut s = Sockets::new(16);
        obs(&mut s, A, 1, Close, SynSent);
        obs(&mut s, A, 2, SynSent, Established);
        obs(&mut s, A, 3, Established, FinWait1);
        // Its way to CLOSE or TIME_WAIT was lost; a new socket takes its address.
        obs(&mut s, A, 4, Close, SynSent);
        assert_eq!(s.unseen(), 1);
        // A child too; and a socket with other ports, first seen mid-life, also counts
        // the transitions that brought it there.
        obs(&mut s, A, 5, SynSent, Established);
        obs(&mut s, A, 6, Listen, SynRecv);
        assert_eq!(s.unseen(), 2);
        s.observe(A, 7, Established, CloseWait, ends(3, 4));
        assert_eq!(s.unseen(), 2 + 1 + 2, "the child's end, then CLOSE -> SYN_SENT -> ESTABLISHED");
    }

    #[test]
    fn sockets_older_than_the_trace_and_timewait_sockets_are_not_judged() {
        let mut s = Sockets::new(16);
        // The inventory said ESTABLISHED; it closed before the trace began.
        s.seed(A, 42, Established, 1000, ends(1, 2));
        obs(&mut s, A, 5000, Close, SynSent);
        let tw = SockKey::TimeWait(0xb);
        s.seed(tw, 43, TimeWait, 1000, ends(1, 2));
        obs(&mut s, tw, 6000, FinWait2, TimeWait);
        obs(&mut s, tw, 7000, FinWait2, Close);
        assert_eq!(s.unseen(), 0);
    }

    #[test]
    fn a_full_tracker_counts_what_it_cannot_remember() {
        let mut s = Sockets::new(1);
        obs(&mut s, SockKey::Full(1), 1, Close, Listen);
        let a = obs(&mut s, SockKey::Full(2), 1, Close, SynSent);
        let b = obs(&mut s, SockKey::Full(2), 2, SynSent, Established);
        assert_ne!(a.socket, b.socket, "an untracked socket cannot be recognised later");
        assert_eq!(b.prev_state_ns, None);
        assert_eq!(s.untracked(), 2);
        assert_eq!(s.live(), 1);
    }

    #[test]
    fn ids_are_unique_and_increasing() {
        let mut s = Sockets::new(16);
        let ids: Vec<u64> =
            (0..5).map(|i| obs(&mut s, SockKey::Full(100 + i), 1, Close, SynSent).socket).collect();
        assert_eq!(ids, vec![1, 2, 3, 4, 5]);
    }
}
