//! Sockets per state, kept without any per-socket memory: the start-up inventory adds
//! each socket to its state, each transition moves one socket from the state it left to
//! the state it entered (CLOSE counts nothing: a closed socket is gone). A transition
//! lost, or one of a socket the inventory missed, would leave the counts wrong for good,
//! so they are checked against the kernel's socket table at an interval: the listing is
//! taken at a known time, the transitions made after that time are set apart as they
//! arrive, and once every transition made before the listing has been read (a short
//! settling delay later), the counts are set to the listing plus what came after it, and
//! the difference is the drift. Pure: the caller lists the sockets and gives the time.

use crate::tcp_state::TcpState;

/// The states counted: every state a socket can be in but CLOSE (gone) and NEW_SYN_RECV
/// (request sockets, which the state tracepoint never reports).
pub const COUNTED: [TcpState; 10] = [
    TcpState::Established,
    TcpState::SynSent,
    TcpState::SynRecv,
    TcpState::FinWait1,
    TcpState::FinWait2,
    TcpState::TimeWait,
    TcpState::CloseWait,
    TcpState::LastAck,
    TcpState::Listen,
    TcpState::Closing,
];

/// A count per counted state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateTable([i64; COUNTED.len()]);

fn slot(state: TcpState) -> Option<usize> {
    COUNTED.iter().position(|&s| s == state)
}

impl StateTable {
    pub fn add(&mut self, state: TcpState, n: i64) {
        if let Some(i) = slot(state) {
            self.0[i] += n;
        }
    }

    pub fn get(&self, state: TcpState) -> i64 {
        slot(state).map_or(0, |i| self.0[i])
    }

    /// Each counted state with its count.
    pub fn iter(&self) -> impl Iterator<Item = (TcpState, i64)> + '_ {
        COUNTED.iter().copied().zip(self.0.iter().copied())
    }

    /// Moves one socket from `from` to `to`. A listener's child is a new socket (the
    /// kernel reports its birth as LISTEN -> SYN_RECV): the listener stays in LISTEN.
    pub fn transition(&mut self, from: TcpState, to: TcpState) {
        if !(from == TcpState::Listen && to != TcpState::Close) {
            self.add(from, -1);
        }
        self.add(to, 1);
    }
}

/// A check against a listing, waiting for the transitions made before it.
#[derive(Clone, Copy, Debug)]
struct Pending {
    listing: StateTable,
    listed_ns: u64,
    /// Transitions made after the listing, already applied to the counts.
    after: StateTable,
}

/// What one check changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Correction {
    /// Per state, what was added to the count (negative: taken away).
    pub delta: StateTable,
}

impl Correction {
    /// The drift: sockets counted in a wrong state, summed over the states.
    pub fn drift(&self) -> u64 {
        self.delta.iter().map(|(_, d)| d.unsigned_abs()).sum()
    }
}

/// The counts, and the check in progress.
#[derive(Debug, Default)]
pub struct StateCounts {
    counts: StateTable,
    pending: Option<Pending>,
}

impl StateCounts {
    /// A socket of the start-up inventory.
    pub fn socket(&mut self, state: TcpState) {
        self.counts.add(state, 1);
    }

    /// A transition made at `at_ns` (monotonic).
    pub fn transition(&mut self, from: TcpState, to: TcpState, at_ns: u64) {
        self.counts.transition(from, to);
        if let Some(p) = &mut self.pending {
            if at_ns > p.listed_ns {
                p.after.transition(from, to);
            }
        }
    }

    /// The count of `state`; never below zero (a transition out of a state the counts
    /// missed would take it there until the next check).
    pub fn get(&self, state: TcpState) -> i64 {
        self.counts.get(state).max(0)
    }

    /// Whether a listing is waiting to be applied.
    pub fn checking(&self) -> bool {
        self.pending.is_some()
    }

    /// The kernel listed `listing` at `listed_ns`; transitions made after that instant are
    /// set apart from now on. Replaces a check not applied yet.
    pub fn listed(&mut self, listing: StateTable, listed_ns: u64) {
        self.pending = Some(Pending { listing, listed_ns, after: StateTable::default() });
    }

    /// Applies the check once every transition made before the listing has been read:
    /// the caller says so by calling it with `now_ns` at least the settling delay after the
    /// listing. Returns the correction made, or `None` while none is due.
    pub fn settle(&mut self, now_ns: u64, settle_ns: u64) -> Option<Correction> {
        let p = self.pending?;
        if now_ns < p.listed_ns.saturating_add(settle_ns) {
            return None;
        }
        self.pending = None;
        let mut correction = Correction::default();
        for (state, listed) in p.listing.iter() {
            let want = listed + p.after.get(state);
            let delta = want - self.counts.get(state);
            correction.delta.add(state, delta);
            self.counts.add(state, delta);
        }
        Some(correction)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TcpState::*;

    fn table(entries: &[(TcpState, i64)]) -> StateTable {
        let mut t = StateTable::default();
        for &(s, n) in entries {
            t.add(s, n);
        }
        t
    }

    #[test]
    fn the_inventory_and_transitions_move_sockets_between_states() {
        let mut c = StateCounts::default();
        c.socket(Listen);
        c.socket(Established);
        c.transition(Close, SynSent, 1);
        c.transition(SynSent, Established, 2);
        c.transition(Established, FinWait1, 3);
        assert_eq!((c.get(Listen), c.get(Established), c.get(SynSent), c.get(FinWait1)), (1, 1, 0, 1));
        c.transition(FinWait1, Close, 4);
        assert_eq!(c.get(FinWait1), 0);
        assert_eq!(c.get(Close), 0, "CLOSE is not counted");
    }

    #[test]
    fn a_child_is_born_without_taking_its_listener_out_of_listen() {
        let mut c = StateCounts::default();
        c.transition(Close, Listen, 1);
        c.transition(Listen, SynRecv, 2);
        c.transition(SynRecv, Established, 3);
        assert_eq!((c.get(Listen), c.get(SynRecv), c.get(Established)), (1, 0, 1));
        c.transition(Listen, Close, 4);
        assert_eq!(c.get(Listen), 0, "the listener closed");
        // The same holds for transitions set apart during a check.
        c.listed(table(&[(Established, 1)]), 10);
        c.transition(Close, Listen, 11);
        c.transition(Listen, SynRecv, 12);
        let fix = c.settle(100, 50).unwrap();
        assert_eq!(fix.drift(), 0, "{fix:?}");
        assert_eq!((c.get(Listen), c.get(SynRecv), c.get(Established)), (1, 1, 1));
    }

    #[test]
    fn a_count_never_shows_below_zero() {
        let mut c = StateCounts::default();
        c.transition(CloseWait, LastAck, 1);
        assert_eq!(c.get(CloseWait), 0);
        assert_eq!(c.get(LastAck), 1);
    }

    #[test]
    fn a_check_with_nothing_wrong_corrects_nothing() {
        let mut c = StateCounts::default();
        c.socket(Listen);
        c.socket(Established);
        // Listed at 100: one listener, one established. Then, before the listing is
        // applied, a transition made before it arrives (it is in the listing already)
        // and one made after it.
        c.listed(table(&[(Listen, 1), (Established, 1), (FinWait1, 0), (SynSent, 1)]), 100);
        c.transition(Close, SynSent, 90);
        c.transition(SynSent, Established, 110);
        assert_eq!(c.settle(120, 50), None, "not settled yet");
        let fix = c.settle(150, 50).expect("due");
        assert_eq!(fix.drift(), 0, "{fix:?}");
        assert_eq!((c.get(Listen), c.get(Established), c.get(SynSent)), (1, 2, 0));
        assert!(!c.checking());
    }

    #[test]
    fn a_lost_transition_is_corrected_and_counted() {
        let mut c = StateCounts::default();
        c.transition(Close, SynSent, 1);
        c.transition(SynSent, Established, 2);
        // ESTABLISHED -> CLOSE_WAIT was lost; the socket is in CLOSE_WAIT.
        c.listed(table(&[(CloseWait, 1)]), 10);
        let fix = c.settle(100, 50).expect("due");
        assert_eq!(fix.delta.get(Established), -1);
        assert_eq!(fix.delta.get(CloseWait), 1);
        assert_eq!(fix.drift(), 2);
        assert_eq!((c.get(Established), c.get(CloseWait)), (0, 1));
    }

    #[test]
    fn a_negative_count_is_repaired_by_the_check() {
        let mut c = StateCounts::default();
        // A socket the inventory missed leaves CLOSE_WAIT: the count goes to -1.
        c.transition(CloseWait, LastAck, 5);
        c.listed(table(&[(LastAck, 1)]), 10);
        let fix = c.settle(60, 50).unwrap();
        assert_eq!(fix.drift(), 1);
        assert_eq!((c.get(CloseWait), c.get(LastAck)), (0, 1));
        c.transition(LastAck, Close, 70);
        assert_eq!(c.get(LastAck), 0);
    }
}
