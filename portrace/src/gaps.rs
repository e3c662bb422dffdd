//! Holes in a socket's sequence of transitions. A socket moves only along the edges of
//! TCP's state machine, so when portrace sees a socket leave a state it never saw it enter,
//! or a new socket take the address of one it never saw close, transitions went missing.
//! This module says how many at least: the length of the shortest way between the two
//! states. It is a lower bound by construction, because the edges below are every
//! transition Linux can make as portrace shows them, and a few more that are only
//! thought possible (a spare edge can only shorten a way, never lengthen it).
//!
//! Holes show two ways: in the records (a socket leaves a state it was not seen entering,
//! see the socket tracker), and at the end of a run, when the sockets portrace thinks open
//! are compared with those the kernel lists ([`unseen_at_end`]). The run compares the
//! holes found with the losses the kernel counted (in the live engine): holes beyond
//! every count are transitions lost with no count anywhere.

use foldhash::{HashMap, HashMapExt, HashSet};

use crate::record::Endpoints;
use crate::tcp_state::TcpState::{self, *};

/// Every `old -> new` a full socket can make as the timeline shows it (`FIN_WAIT2 ->
/// TIME_WAIT` for a move to a timewait socket), besides `X -> CLOSE` from any state,
/// which a reset, an error or `connect(AF_UNSPEC)` makes from each of them.
const EDGES: [(TcpState, TcpState); 15] = [
    (Close, SynSent),
    (Close, Listen),
    (SynSent, Established),
    // Simultaneous open.
    (SynSent, SynRecv),
    (SynRecv, Established),
    (SynRecv, FinWait1),
    // A Fast Open child can take the peer's FIN before the handshake ends.
    (SynRecv, CloseWait),
    (Established, FinWait1),
    (Established, CloseWait),
    (FinWait1, FinWait2),
    // Not FIN_WAIT1 -> TIME_WAIT: Linux enters FIN_WAIT2 first even when the ACK of its
    // FIN and the peer's FIN come together, and moves to a timewait socket only from
    // FIN_WAIT2 or CLOSING.
    (FinWait1, Closing),
    (FinWait2, TimeWait),
    (Closing, TimeWait),
    (CloseWait, LastAck),
    (TimeWait, Close),
];

fn is_edge(old: TcpState, new: TcpState) -> bool {
    (new == Close && old != Close) || EDGES.contains(&(old, new))
}

/// The fewest transitions that take a socket from `from` into `to` (0 when they are the
/// same state). A pair the edges do not join counts 1: the socket still made at least one
/// transition nobody saw.
pub fn between(from: TcpState, to: TcpState) -> u64 {
    if from == to {
        return 0;
    }
    // Breadth-first over twelve states.
    let mut distance = [u64::MAX; TcpState::ALL.len()];
    let index = |s: TcpState| TcpState::ALL.iter().position(|&x| x == s).unwrap_or(0);
    distance[index(from)] = 0;
    let mut frontier = vec![from];
    let mut steps = 0;
    while !frontier.is_empty() {
        steps += 1;
        let mut next = Vec::new();
        for &at in &frontier {
            for s in TcpState::ALL {
                if is_edge(at, s) && distance[index(s)] == u64::MAX {
                    if s == to {
                        return steps;
                    }
                    distance[index(s)] = steps;
                    next.push(s);
                }
            }
        }
        frontier = next;
    }
    1
}

/// Unseen transitions of a socket last seen in `last` whose address now holds a new
/// socket: its end (into CLOSE, or to a timewait socket) was not seen.
pub fn unseen_end(last: TcpState) -> u64 {
    between(last, Close).max(1)
}

/// Unseen transitions of a socket first seen leaving `state` although it was born during
/// the trace: from its birth (leaving CLOSE, or a child created in SYN_RECV, which is one
/// transition) into `state`.
pub fn unseen_since_birth(state: TcpState) -> u64 {
    between(Close, state).min(1 + between(SynRecv, state)).max(1)
}

/// How long before the kernel's listing a socket must have made its last transition to be
/// judged against it: a transition made meanwhile may still be on its way.
pub const SETTLE_NS: u64 = 100_000_000;

/// The TCP sockets the kernel lists, by namespace and endpoints.
#[derive(Debug, Default)]
pub struct Listing {
    states: HashMap<Endpoints, Vec<TcpState>>,
    /// Namespaces listed whole: a socket of another namespace is not judged.
    whole: HashSet<u32>,
}

impl Listing {
    /// Adds the sockets of namespace `netns`; `whole`: the kernel did not say its listing
    /// was interrupted by changes, so a socket it lacks did not exist.
    pub fn add_namespace(&mut self, netns: u32, sockets: impl IntoIterator<Item = (Endpoints, TcpState)>, whole: bool) {
        for (ends, state) in sockets {
            self.states.entry(Endpoints { netns, ..ends }).or_default().push(state);
        }
        if whole {
            self.whole.insert(netns);
        }
    }

    /// Whether `o` can be judged against this listing, taken from `listed_ns` on: its
    /// namespace was listed whole, and its last transition came [`SETTLE_NS`] before.
    fn settled(&self, o: &Open, listed_ns: u64) -> bool {
        self.whole.contains(&o.ends.netns) && o.since_ns.saturating_add(SETTLE_NS) <= listed_ns
    }

    /// Whether the kernel lists a socket at `o`'s endpoints in `o`'s state.
    fn lists(&self, o: &Open) -> bool {
        self.states.get(&o.ends).is_some_and(|l| l.contains(&o.state))
    }
}

/// A socket portrace thinks open, as the socket tracker lists them.
#[derive(Clone, Copy, Debug)]
pub struct Open {
    /// A full socket (not a timewait socket).
    pub full: bool,
    pub state: TcpState,
    /// When its last transition was made (monotonic).
    pub since_ns: u64,
    pub ends: Endpoints,
}

/// Transitions sockets made unseen, at least, judged against the kernel's listing taken
/// from `listed_ns` (monotonic) on, after every record of transitions made before then was
/// read, beyond those already counted for `ended` (sockets whose end went unseen, found when
/// a new socket took their address, each counted [`unseen_end`] then).
///
/// A full socket of `open` whose last transition came [`SETTLE_NS`] before the listing,
/// whose local port is known and whose namespace was listed whole, and which the kernel does
/// not list in the state portrace has for it, made a transition unseen. If the kernel lists
/// a socket at its endpoints that no socket portrace knows explains, it is either this one,
/// moved on unseen (to a timewait socket, say), or a later socket whose whole life went
/// unseen: the fewer of the two ways counts, and that listed socket explains nothing else.
/// An ended socket is judged the same way, by what it made beyond its end. Timewait sockets
/// are judged apart ([`unseen_timewait_ends`]).
/// Returns the open sockets judged, and the transitions found unseen.
pub fn unseen_at_end(open: &[Open], ended: &[Open], listing: &Listing, listed_ns: u64) -> (usize, u64) {
    let mut known: HashMap<Endpoints, Vec<TcpState>> = HashMap::new();
    for o in open {
        known.entry(o.ends).or_default().push(o.state);
    }
    let judged = |o: &Open| o.full && o.ends.sport != 0 && listing.whole.contains(&o.ends.netns);
    let none = Vec::new();
    // The fewest transitions that take `o` to what the kernel lists at its endpoints that
    // nothing explains (`None` when there is no such socket); claims that socket.
    let mut unexplained = |o: &Open| -> Option<u64> {
        let at = o.ends;
        let explained = known.entry(at).or_default();
        let (ways, state) = listing
            .states
            .get(&at)
            .unwrap_or(&none)
            .iter()
            .filter(|s| !explained.contains(s))
            .map(|&s| (between(o.state, s).min(unseen_end(o.state) + unseen_since_birth(s)), s))
            .min()?;
        explained.push(state);
        Some(ways)
    };
    let mut unseen = 0;
    let mut checked = 0;
    for o in open.iter().filter(|o| judged(o) && listing.settled(o, listed_ns)) {
        checked += 1;
        if listing.lists(o) {
            continue;
        }
        unseen += unexplained(o).unwrap_or_else(|| unseen_end(o.state));
    }
    for o in ended.iter().filter(|o| judged(o)) {
        unseen += unexplained(o).map_or(0, |ways| ways.saturating_sub(unseen_end(o.state)));
    }
    (checked, unseen)
}

/// Transitions timewait sockets made unseen, at least, judged against the kernel's listing
/// as [`unseen_at_end`] judges full sockets: a timewait socket of `timewaits` whose last
/// transition came [`SETTLE_NS`] before the listing, whose namespace was listed whole, and
/// which the kernel does not list in the state portrace has for it, made one transition
/// unseen at least: its move from FIN_WAIT2 to TIME_WAIT, or its end (an expiry or a kill
/// whose timer records never came). The caller leaves out timewait sockets whose timer
/// removal still waits to be judged a kill or a re-arm. Returns the sockets judged and the
/// transitions found unseen.
pub fn unseen_timewait_ends(timewaits: &[Open], listing: &Listing, listed_ns: u64) -> (usize, u64) {
    let mut checked = 0;
    let mut unseen = 0;
    for o in timewaits.iter().filter(|o| listing.settled(o, listed_ns)) {
        checked += 1;
        if !listing.lists(o) {
            unseen += 1;
        }
    }
    (checked, unseen)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    #[test]
    fn the_missing_steps_of_an_active_close_are_counted() {
        assert_eq!(between(Established, Established), 0);
        assert_eq!(between(Established, FinWait1), 1);
        assert_eq!(between(Established, FinWait2), 2);
        assert_eq!(between(SynSent, FinWait2), 3);
        assert_eq!(between(CloseWait, Close), 1, "any state can be reset into CLOSE");
        assert_eq!(between(LastAck, Close), 1);
    }

    #[test]
    fn the_count_never_exceeds_a_real_path() {
        // Paths Linux takes, each as the timeline shows them: the count of unseen steps
        // between any two states on one of them is at most their distance along it.
        let paths: [&[TcpState]; 6] = [
            &[Close, SynSent, Established, FinWait1, FinWait2, TimeWait, Close],
            &[Close, SynSent, Established, CloseWait, LastAck, Close],
            &[SynRecv, Established, FinWait1, Closing, TimeWait, Close],
            &[SynRecv, Established, CloseWait, LastAck, Close],
            &[Close, SynSent, SynRecv, Established, FinWait1, FinWait2, Close],
            &[Close, Listen, Close],
        ];
        for path in paths {
            for i in 0..path.len() {
                for j in i + 1..path.len() {
                    let along = (j - i) as u64;
                    let (a, b) = (path[i], path[j]);
                    assert!(between(a, b) <= along, "{a} -> {b}: {} > {along} on {path:?}", between(a, b));
                    assert!(between(a, b) >= 1 || a == b, "{a} -> {b}");
                }
            }
        }
    }

    #[test]
    fn an_unseen_end_or_birth_is_at_least_one_transition() {
        for s in TcpState::ALL {
            assert!(unseen_end(s) >= 1);
            assert!(unseen_since_birth(s) >= 1);
        }
        assert_eq!(unseen_since_birth(Established), 2, "CLOSE -> SYN_SENT -> ESTABLISHED, or a child's two");
        assert_eq!(unseen_since_birth(SynRecv), 1, "a child is born in SYN_RECV");
        assert_eq!(unseen_since_birth(CloseWait), 2, "a child can go from SYN_RECV to CLOSE_WAIT");
        assert_eq!(unseen_since_birth(LastAck), 3);
    }

    const NS: u32 = 4026531840;
    const AT: u64 = 10_000_000_000;

    fn ends(sport: u16, dport: u16) -> Endpoints {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Endpoints { saddr: lo, sport, daddr: lo, dport, netns: NS }
    }

    fn open(state: TcpState, sport: u16, dport: u16) -> Open {
        Open { full: true, state, since_ns: AT - 2 * SETTLE_NS, ends: ends(sport, dport) }
    }

    fn listing(sockets: &[(TcpState, u16, u16)]) -> Listing {
        let mut l = Listing::default();
        l.add_namespace(NS, sockets.iter().map(|&(s, sport, dport)| (ends(sport, dport), s)), true);
        l
    }

    #[test]
    fn a_timewait_socket_the_kernel_no_longer_lists_ended_unseen() {
        let tw = |state, sport, since_ns| Open { full: false, state, since_ns, ends: ends(sport, 80) };
        let settled = AT - 2 * SETTLE_NS;
        let timewaits = [
            tw(TimeWait, 40001, settled),
            // Gone from the kernel's list: its expiry was never seen.
            tw(TimeWait, 40002, settled),
            // Listed in TIME_WAIT, shown still in FIN_WAIT2: the peer's FIN was not seen.
            tw(FinWait2, 40003, settled),
            // Too recent to judge: its end may still be on its way.
            tw(TimeWait, 40004, AT - SETTLE_NS / 2),
        ];
        let l = listing(&[(TimeWait, 40001, 80), (TimeWait, 40003, 80)]);
        assert_eq!(unseen_timewait_ends(&timewaits, &l, AT), (3, 2));
        // A namespace not listed whole judges nothing.
        let mut partial = Listing::default();
        partial.add_namespace(NS, [(ends(40001, 80), TimeWait)], false);
        assert_eq!(unseen_timewait_ends(&timewaits, &partial, AT), (0, 0));
    }

    #[test]
    fn sockets_the_kernel_lists_as_portrace_has_them_leave_no_hole() {
        let open = [open(Listen, 80, 0), open(Established, 80, 40000), open(FinWait2, 40001, 80)];
        let l = listing(&[(Listen, 80, 0), (Established, 80, 40000), (FinWait2, 40001, 80), (Established, 1, 2)]);
        assert_eq!(unseen_at_end(&open, &[], &l, AT), (3, 0));
    }

    #[test]
    fn a_socket_gone_or_moved_on_unseen_counts_its_missing_transitions() {
        // Gone: its end. Moved to a timewait socket from FIN_WAIT1: FIN_WAIT2, then
        // TIME_WAIT. Listed in CLOSE_WAIT though seen in ESTABLISHED: one.
        let open = [open(CloseWait, 80, 40000), open(FinWait1, 40001, 80), open(Established, 40002, 80)];
        let l = listing(&[(TimeWait, 40001, 80), (CloseWait, 40002, 80)]);
        assert_eq!(unseen_at_end(&open, &[], &l, AT), (3, 1 + 2 + 1));
    }

    #[test]
    fn a_listed_socket_that_portrace_knows_is_not_blamed_on_another() {
        // The timewait socket at these endpoints is a later connection portrace saw: the
        // one stuck in FIN_WAIT1 ended unseen, one transition at least.
        let later = Open { full: false, state: TimeWait, ..open(TimeWait, 40001, 80) };
        let open = [open(FinWait1, 40001, 80), later];
        let l = listing(&[(TimeWait, 40001, 80)]);
        assert_eq!(unseen_at_end(&open, &[], &l, AT), (1, 1));
    }

    #[test]
    fn recent_unbound_timewait_and_unlisted_namespaces_are_not_judged() {
        let recent = Open { since_ns: AT - SETTLE_NS / 2, ..open(Established, 40000, 80) };
        let unbound = open(SynSent, 0, 80);
        let timewait = Open { full: false, ..open(TimeWait, 40001, 80) };
        let elsewhere = Open { ends: Endpoints { netns: NS + 1, ..ends(40002, 80) }, ..open(Established, 40002, 80) };
        let mut l = listing(&[]);
        l.add_namespace(NS + 2, [(ends(1, 2), Established)], false);
        let partial = Open { ends: Endpoints { netns: NS + 2, ..ends(40003, 80) }, ..open(Established, 40003, 80) };
        assert_eq!(unseen_at_end(&[recent, unbound, timewait, elsewhere, partial], &[], &l, AT), (0, 0));
    }

    #[test]
    fn a_socket_whose_end_was_found_unseen_counts_the_rest_of_its_way() {
        // Two sockets' ends were found unseen when new sockets took their addresses (one
        // transition each, counted then). The kernel lists the first one's endpoints in
        // TIME_WAIT, which nothing portrace saw explains: it left FIN_WAIT1 for FIN_WAIT2,
        // then TIME_WAIT, one more. The second one's endpoints are not listed: nothing more.
        let ended = [open(FinWait1, 40001, 80), open(FinWait1, 40002, 80)];
        let l = listing(&[(TimeWait, 40001, 80)]);
        assert_eq!(unseen_at_end(&[], &ended, &l, AT), (0, 1));
        // A listed socket explains one socket only.
        let twice = [open(FinWait1, 40001, 80), open(FinWait1, 40001, 80)];
        assert_eq!(unseen_at_end(&[], &twice, &l, AT), (0, 1));
    }
}
