//! From kernel records to the timeline users see. It tracks sockets (ids and time in
//! state), continues a connection into its timewait socket (showing `FIN_WAIT2 ->
//! TIME_WAIT` and `TIME_WAIT -> CLOSE`, which the state tracepoint never reports), gives
//! each connection's last transition its reason, and attaches sockets that existed before
//! the trace (the inventory) to their later transitions.

use std::rc::Rc;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use crate::clock::Clock;
use crate::decode::{Decoded, Kind};
use crate::gaps;
use crate::reasons::{end_reason, timewait_expired};
use crate::record::{Comm, EndReason, Family, Owner, OwnerSource, SocketRecord, Transition};
use crate::sockets::{Endpoints, SockKey, Sockets};
use crate::tcp_state::TcpState;

/// How long a timewait timer's removal waits for a re-arm or an expiry of the same timer
/// before it counts as the timewait socket being killed. The kernel removes a timer before
/// re-arming it and before running it, in the same function, so both follow within
/// microseconds on the same CPU, unless the host of a virtual CPU stalls it between the
/// two: the kernel program matches them within `REARM_WINDOW_NS`, and so does this.
const CANCEL_GRACE_NS: u64 = portrace_ebpf::REARM_WINDOW_NS;

/// A socket from the inventory, waiting for its first transition.
#[derive(Clone, Copy, Debug)]
struct Known {
    id: u64,
    state: TcpState,
    owner: Option<Owner>,
    ends: Endpoints,
}

/// What the timeline keeps of a connection living in a timewait socket, for the line that
/// ends it when the end has no record of its own (a kill that shows only as a new
/// connection's hand-over at its address): what the kernel's records carry that the socket
/// tracker does not. The addresses and ports are the tracker's; the error and retransmits
/// of a timewait socket's end are 0, as in the kernel's records of its other ends.
///
/// Shared: consecutive connections of one owner share one (a storm leaves tens of
/// thousands of connections in TIME_WAIT at once, nearly all one client's), so each costs
/// the table a pointer.
#[derive(Debug, PartialEq)]
struct InTimeWait {
    owner: Option<Owner>,
    family: Family,
}

/// A timewait timer's removal: when, and the task on the CPU then.
#[derive(Clone, Copy, Debug)]
struct Removal {
    ts_ns: u64,
    pid: u32,
    comm: Comm,
}

impl Removal {
    /// The moment of record `d`, and its task.
    fn of(d: &Decoded) -> Removal {
        Removal { ts_ns: d.ts_ns, pid: d.pid, comm: d.comm }
    }
}

#[derive(Clone, Copy, Debug)]
struct PendingCancel {
    tw: u64,
    record: Decoded,
    state: TcpState,
}

/// Turns decoded records into transitions.
pub struct Timeline {
    sockets: Sockets,
    clock: Clock,
    inventory: HashMap<u64, Known>,
    start_ns: u64,
    timewait_tracked: bool,
    cancels: Vec<PendingCancel>,
    /// Each connection living in a timewait socket, by the timewait socket's address.
    timewaits: HashMap<u64, Rc<InTimeWait>>,
    /// The latest [`InTimeWait`] made, for the next connection of the same owner.
    latest_in_time_wait: Option<Rc<InTimeWait>>,
    /// The timer removal that came just before a timewait socket's latest re-arm. When the
    /// re-arm turns out to have been a new timewait socket at a killed one's address (a
    /// hand-over claims it), the old connection ended at that removal.
    rearmed_after: HashMap<u64, Removal>,
    /// Timewait sockets whose own records came before their hand-over's (records of
    /// different CPUs reach the ring out of order): the connection was moved to them
    /// then, by the full socket address those records name, and their hand-over, when it
    /// comes, changes nothing.
    early: HashMap<u64, u64>,
    /// Second records of a transition, dropped (see [`Timeline::duplicates`]).
    duplicates: u64,
}

impl Timeline {
    /// `timewait_tracked`: whether the kernel reports timewait sockets; `start_ns`: the
    /// trace's start (monotonic), from which sockets older than the trace are timed.
    pub fn new(clock: Clock, capacity: usize, start_ns: u64, timewait_tracked: bool) -> Timeline {
        Timeline {
            sockets: Sockets::new(capacity),
            clock,
            inventory: HashMap::new(),
            start_ns,
            timewait_tracked,
            cancels: Vec::new(),
            timewaits: HashMap::new(),
            latest_in_time_wait: None,
            rearmed_after: HashMap::new(),
            early: HashMap::new(),
            duplicates: 0,
        }
    }

    /// Records the backup program made of transitions the main program had recorded
    /// already, dropped: it recorded them because it found no note of the main program's
    /// run, which happens when a CPU stalls between the two runs for longer than a note
    /// lasts. Each one is among the kernel's count of backup recordings without being a
    /// run the kernel skipped.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// A record of timewait socket `tw` that this timeline does not know yet, naming the
    /// full socket `d.skaddr` the connection had, which it knows in a state that leads to
    /// a timewait socket: the hand-over's record is still to come (another CPU was
    /// faster). Moves the connection to `tw` now.
    fn adopt_early(&mut self, tw: u64, d: &Decoded) {
        if self.timewaits.contains_key(&tw) {
            return;
        }
        let full = SockKey::Full(d.skaddr);
        if matches!(self.sockets.state(full), Some(TcpState::FinWait1 | TcpState::FinWait2 | TcpState::Closing)) {
            self.sockets.rekey(full, SockKey::TimeWait(tw));
            self.remember_timewait(tw, d, d.owner);
            self.early.insert(tw, d.skaddr);
        }
    }

    /// Gives an id to a socket that existed before the trace and remembers it by cookie, so
    /// its later transitions carry the same id, its owner, and durations counted from the
    /// start. Returns the id.
    pub fn adopt(&mut self, s: &mut SocketRecord) -> u64 {
        let id = self.sockets.new_id();
        s.socket = id;
        if s.cookie != 0 {
            self.inventory.insert(s.cookie, Known { id, state: s.state, owner: s.owner, ends: s.ends });
        }
        id
    }

    /// Sockets the inventory listed that `early` (the transitions made between the
    /// programs' attachment and the inventory) already shows under ids of their own:
    /// sockets created in that window, or whose first transition in it came before the
    /// kernel had given them a cookie. The inventory listed them too, under another id.
    /// Their inventory entries are forgotten; returns their inventory ids, whose socket
    /// records must not be shown (the transitions tell those sockets' story).
    pub fn born_during_inventory(&mut self, inventory: &[SocketRecord], early: &[Transition]) -> HashSet<u64> {
        let listed: HashSet<u64> = inventory.iter().map(|s| s.socket).collect();
        // The last endpoints of each socket born after the start, if it is still open.
        let mut born: HashMap<u64, Option<Endpoints>> = HashMap::new();
        for t in early.iter().filter(|t| !listed.contains(&t.socket)) {
            let open = t.newstate != TcpState::Close && t.newstate != TcpState::TimeWait;
            born.insert(t.socket, open.then_some(t.ends));
        }
        let born: HashSet<Endpoints> = born.into_values().flatten().collect();
        let mut twins = HashSet::new();
        for s in inventory.iter().filter(|s| s.state != TcpState::TimeWait) {
            if born.contains(&s.ends) {
                self.inventory.remove(&s.cookie);
                twins.insert(s.socket);
            }
        }
        twins
    }

    /// Takes one record; pushes the transitions it makes visible onto `out`.
    pub fn push(&mut self, d: &Decoded, out: &mut Vec<Transition>) {
        if d.kind == Kind::Exec {
            // Not about a socket: the run loop reads the process's details.
            return;
        }
        let full = SockKey::Full(d.skaddr);
        let mut owner = d.owner;
        // The small inventory first: asking the tracker (tens of thousands of sockets in a
        // storm) about every record cost a lookup that the inventory nearly always spares.
        if d.cookie != 0 && self.inventory.contains_key(&d.cookie) && self.sockets.state(full).is_none() {
            if let Some(known) = self.inventory.remove(&d.cookie) {
                self.sockets.seed(full, known.id, known.state, self.start_ns, known.ends);
                owner = owner.or(known.owner.map(|o| Owner { source: OwnerSource::Inventory, ..o }));
            }
        }
        match d.kind {
            Kind::Transition if d.by_backup && self.sockets.repeats(full, d.oldstate, d.newstate) => {
                self.duplicates += 1;
            }
            Kind::Transition => {
                let reason = (d.newstate == TcpState::Close)
                    .then(|| end_reason(d.oldstate, d.error, self.timewait_tracked));
                self.emit(full, d, d.oldstate, d.newstate, owner, reason, out);
            }
            Kind::Handover { tw } if self.early.get(&tw) == Some(&d.skaddr) => {
                // The timewait socket's own records came first and moved the connection
                // there already.
                self.early.remove(&tw);
                if d.oldstate != d.newstate && self.sockets.state(SockKey::TimeWait(tw)) == Some(d.oldstate) {
                    self.emit(SockKey::TimeWait(tw), d, d.oldstate, d.newstate, owner, None, out);
                }
            }
            Kind::Handover { tw } => {
                // The connection lives on in its timewait socket, in `newstate`: TIME_WAIT,
                // or FIN_WAIT2 still (an orphan waiting for the peer's FIN), which is no
                // transition at all.
                // A connection still recorded at this timewait address is over: the
                // address now holds this connection's timewait socket.
                self.early.remove(&tw);
                self.settle_where(|c| c.tw == tw, out);
                if let Some(old) = self.timewaits.remove(&tw) {
                    self.killed_by_handover(tw, old, d, out);
                }
                if d.oldstate != d.newstate {
                    self.emit(full, d, d.oldstate, d.newstate, owner, None, out);
                }
                self.sockets.rekey(full, SockKey::TimeWait(tw));
                self.remember_timewait(tw, d, owner);
            }
            Kind::TwArmed { tw, state } => {
                self.adopt_early(tw, d);
                // `oldstate` is the timewait socket's state before, as the kernel program
                // last reported it: a re-arm in the same state is no transition.
                match self.cancels.iter().position(|c| c.tw == tw) {
                    Some(i) => {
                        let c = self.cancels.remove(i);
                        self.rearmed_after.insert(tw, Removal::of(&c.record));
                    }
                    None => {
                        self.rearmed_after.remove(&tw);
                    }
                }
                self.remember_timewait(tw, d, owner);
                // Two CPUs can both report the same change (the hand-over's program and the
                // timer's, racing): it is shown once.
                if d.oldstate != state && self.sockets.state(SockKey::TimeWait(tw)) != Some(state) {
                    self.emit(SockKey::TimeWait(tw), d, d.oldstate, state, owner, None, out);
                }
            }
            Kind::TwCancel { tw, state } => {
                self.adopt_early(tw, d);
                self.rearmed_after.remove(&tw);
                self.cancels.push(PendingCancel { tw, record: *d, state });
            }
            Kind::TwExpire { tw, state } => {
                self.early.remove(&tw);
                self.rearmed_after.remove(&tw);
                // `state` is the timewait socket's state when its timer fired, `oldstate`
                // the state last reported: they differ only when its change was not seen
                // (a kernel without `rx_sk` in kfree_skb, or a lost record); the end
                // reason still follows the state it ended in.
                self.cancels.retain(|c| c.tw != tw);
                self.timewaits.remove(&tw);
                self.emit(SockKey::TimeWait(tw), d, d.oldstate, TcpState::Close, owner, Some(timewait_expired(state)), out);
            }
            Kind::Exec => {}
        }
    }

    /// Keeps what the connection `d` (with `owner`) needs while it lives in timewait socket
    /// `tw`: the latest [`InTimeWait`] made when it says the same, else a new one.
    fn remember_timewait(&mut self, tw: u64, d: &Decoded, owner: Option<Owner>) {
        let now = InTimeWait { owner, family: d.family };
        let kept = match &self.latest_in_time_wait {
            Some(latest) if **latest == now => Rc::clone(latest),
            _ => {
                let made = Rc::new(now);
                self.latest_in_time_wait = Some(Rc::clone(&made));
                made
            }
        };
        self.timewaits.insert(tw, kept);
    }

    /// The connection at timewait address `tw`, `old`, ended unseen before the hand-over
    /// `d` of a new connection to that address: killed at the timer removal that came
    /// before what looked like its re-arm, or else at the hand-over. The line is of the task
    /// on the CPU at that moment, as every line is.
    fn killed_by_handover(&mut self, tw: u64, old: Rc<InTimeWait>, d: &Decoded, out: &mut Vec<Transition>) {
        let key = SockKey::TimeWait(tw);
        let (Some(before), Some(ends)) = (self.sockets.state(key), self.sockets.ends(key)) else {
            return;
        };
        let at = self.rearmed_after.remove(&tw).unwrap_or_else(|| Removal::of(d));
        let ended = Decoded {
            ts_ns: at.ts_ns,
            pid: at.pid,
            comm: at.comm,
            family: old.family,
            ends,
            error: 0,
            retransmits: 0,
            ..*d
        };
        self.emit(key, &ended, before, TcpState::Close, old.owner, Some(EndReason::TimeWaitKilled), out);
    }

    /// Settles timewait timer removals that no re-arm or expiry followed: those timewait
    /// sockets were killed. Call it after the ring buffer was drained empty, with the
    /// current monotonic time. `followed(tw, removed_ns)`, asked of each removal due,
    /// says whether the kernel program saw a re-arm or expiry follow it whose record this
    /// timeline will not get (dropped in a full ring, or filtered out): that removal is
    /// let go, no kill.
    pub fn settle(&mut self, now_ns: u64, mut followed: impl FnMut(u64, u64) -> bool, out: &mut Vec<Transition>) {
        let due = |c: &PendingCancel| now_ns.saturating_sub(c.record.ts_ns) >= CANCEL_GRACE_NS;
        self.cancels.retain(|c| !(due(c) && followed(c.tw, c.record.ts_ns)));
        self.settle_where(due, out);
    }

    /// When the last of the timewait timer removals waiting for a re-arm or an expiry
    /// becomes due for [`Timeline::settle`] (monotonic ns), if any is waiting; never later
    /// than one grace after `now_ns`, so that a caller waiting for it waits at most that
    /// long, whatever times the records carry.
    pub fn removals_due_at(&self, now_ns: u64) -> Option<u64> {
        let last = self.cancels.iter().map(|c| c.record.ts_ns.saturating_add(CANCEL_GRACE_NS)).max()?;
        Some(last.min(now_ns.saturating_add(CANCEL_GRACE_NS)))
    }

    fn settle_where(&mut self, killed: impl Fn(&PendingCancel) -> bool, out: &mut Vec<Transition>) {
        let mut i = 0;
        while i < self.cancels.len() {
            let c = self.cancels[i];
            if !killed(&c) {
                i += 1;
                continue;
            }
            self.cancels.remove(i);
            self.timewaits.remove(&c.tw);
            self.rearmed_after.remove(&c.tw);
            self.emit(SockKey::TimeWait(c.tw), &c.record, c.state, TcpState::Close, c.record.owner, Some(EndReason::TimeWaitKilled), out);
        }
    }

    #[allow(clippy::too_many_arguments, reason = "one call site per record kind; a struct would only rename them")]
    fn emit(
        &mut self,
        key: SockKey,
        d: &Decoded,
        old: TcpState,
        new: TcpState,
        owner: Option<Owner>,
        reason: Option<EndReason>,
        out: &mut Vec<Transition>,
    ) {
        let seen = self.sockets.observe(key, d.ts_ns, old, new, d.ends);
        let closing = new == TcpState::Close;
        out.push(Transition {
            time: self.clock.timestamp(d.ts_ns),
            pid: d.pid,
            comm: d.comm,
            socket: seen.socket,
            family: d.family,
            ends: d.ends,
            oldstate: old,
            newstate: new,
            prev_state_ns: seen.prev_state_ns,
            prev_state_at_least: seen.at_least,
            owner,
            reason,
            error: (closing && d.error != 0).then_some(d.error),
            retransmits: if closing { d.retransmits } else { 0 },
        });
    }

    /// Transitions sockets made unseen, at least, by the holes in their sequences
    /// ([`Sockets::unseen`]).
    pub fn unseen(&self) -> u64 {
        self.sockets.unseen()
    }

    /// Judges the sockets the timeline has as open against the kernel's `listing`, taken
    /// from `listed_ns` on, once every record written before then was pushed
    /// ([`crate::gaps::unseen_at_end`]); what they made unseen counts in [`Self::unseen`].
    /// Returns the open sockets judged and the transitions found unseen.
    pub fn check_against(&mut self, listing: &gaps::Listing, listed_ns: u64) -> (usize, u64) {
        let open: Vec<(SockKey, gaps::Open)> = self.sockets.open().collect();
        let sockets: Vec<gaps::Open> = open.iter().map(|(_, o)| *o).collect();
        let (mut checked, mut unseen) = gaps::unseen_at_end(&sockets, &self.sockets.ended_unseen(), listing, listed_ns);
        // Timewait sockets, when their timers are followed at all; not one whose timer
        // removal is still to be judged a kill or a re-arm.
        if self.timewait_tracked {
            let pending: HashSet<u64> = self.cancels.iter().map(|c| c.tw).collect();
            let timewaits: Vec<gaps::Open> = open
                .iter()
                .filter_map(|(key, o)| match key {
                    SockKey::TimeWait(tw) if !pending.contains(tw) => Some(*o),
                    _ => None,
                })
                .collect();
            let (tw_checked, tw_unseen) = gaps::unseen_timewait_ends(&timewaits, listing, listed_ns);
            checked += tw_checked;
            unseen += tw_unseen;
        }
        self.sockets.add_unseen(unseen);
        (checked, unseen)
    }

    /// Live sockets the tracker remembers.
    pub fn live_sockets(&self) -> usize {
        self.sockets.live()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::record::{Comm, Family, Timestamp};
    use TcpState::*;

    fn rec(kind: Kind, ts_ns: u64, skaddr: u64, old: TcpState, new: TcpState) -> Decoded {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Decoded {
            kind,
            ts_ns,
            skaddr,
            cookie: 0,
            pid: 9,
            comm: Comm::new("client"),
            owner: Some(Owner { pid: 9, comm: Comm::new("client"), source: OwnerSource::Syscall, cgroup: 0 }),
            family: Family::Ipv4,
            ends: Endpoints { saddr: lo, sport: 40000, daddr: lo, dport: 80, netns: 1 },
            oldstate: old,
            newstate: new,
            error: 0,
            retransmits: 0,
            by_backup: false,
        }
    }

    fn timeline() -> Timeline {
        Timeline::new(Clock::from_offset(0), 64, 0, true)
    }

    /// Socket, old state, new state, time in the old state, reason.
    type Edge = (u64, TcpState, TcpState, Option<u64>, Option<EndReason>);

    fn edges(out: &[Transition]) -> Vec<Edge> {
        out.iter().map(|t| (t.socket, t.oldstate, t.newstate, t.prev_state_ns, t.reason)).collect()
    }

    const SK: u64 = 0xa0;
    const TW: u64 = 0xb0;

    fn active_close_until_handover(t: &mut Timeline, out: &mut Vec<Transition>, substate: TcpState) {
        for (ts, old, new) in [(10, Close, SynSent), (20, SynSent, Established), (30, Established, FinWait1), (40, FinWait1, FinWait2)] {
            t.push(&rec(Kind::Transition, ts, SK, old, new), out);
        }
        t.push(&rec(Kind::Handover { tw: TW }, 50, SK, FinWait2, substate), out);
    }

    fn by_backup(d: Decoded) -> Decoded {
        Decoded { by_backup: true, ..d }
    }

    #[test]
    fn the_backups_second_record_of_a_transition_is_dropped_and_counted() {
        let (mut t, mut out) = (timeline(), Vec::new());
        t.push(&rec(Kind::Transition, 10, SK, Close, SynSent), &mut out);
        t.push(&rec(Kind::Transition, 20, SK, SynSent, Established), &mut out);
        // The CPU stalled between the main program's run and the backup's: a second record.
        t.push(&by_backup(rec(Kind::Transition, 11_020, SK, SynSent, Established)), &mut out);
        // A record of the backup that is no repeat is the socket's next transition.
        t.push(&by_backup(rec(Kind::Transition, 11_030, SK, Established, FinWait1)), &mut out);
        assert_eq!(
            edges(&out),
            [
                (1, Close, SynSent, None, None),
                (1, SynSent, Established, Some(10), None),
                (1, Established, FinWait1, Some(11_010), None),
            ]
        );
        assert_eq!(t.duplicates(), 1);
    }

    #[test]
    fn a_second_record_of_a_last_transition_is_dropped_even_once_the_address_is_reused() {
        let (mut t, mut out) = (timeline(), Vec::new());
        for (ts, old, new) in [(10, Listen, SynRecv), (20, SynRecv, Established), (30, Established, CloseWait), (40, CloseWait, LastAck), (50, LastAck, Close)] {
            t.push(&rec(Kind::Transition, ts, SK, old, new), &mut out);
        }
        t.push(&by_backup(rec(Kind::Transition, 60, SK, LastAck, Close)), &mut out);
        // A new socket at the same address; then another late second record of the old one.
        t.push(&rec(Kind::Transition, 70, SK, Close, SynSent), &mut out);
        t.push(&by_backup(rec(Kind::Transition, 80, SK, LastAck, Close)), &mut out);
        t.push(&rec(Kind::Transition, 90, SK, SynSent, Established), &mut out);
        let sockets: Vec<(u64, TcpState, TcpState)> = out.iter().map(|t| (t.socket, t.oldstate, t.newstate)).collect();
        assert_eq!(sockets.len(), 7, "{sockets:?}");
        assert_eq!(sockets[5..], [(2, Close, SynSent), (2, SynSent, Established)]);
        assert_eq!(t.duplicates(), 2);
    }

    #[test]
    fn a_second_record_of_a_hand_over_is_dropped() {
        let (mut t, mut out) = (timeline(), Vec::new());
        active_close_until_handover(&mut t, &mut out, TimeWait);
        // The backup's record of the same hit: the timewait socket was claimed already.
        t.push(&by_backup(rec(Kind::Transition, 51, SK, FinWait2, Close)), &mut out);
        assert_eq!(out.last().map(|t| (t.oldstate, t.newstate)), Some((FinWait2, TimeWait)));
        assert_eq!(out.len(), 5);
        assert_eq!(t.duplicates(), 1);
    }

    #[test]
    fn a_backup_record_of_a_socket_in_that_state_again_is_kept() {
        // Lost in between (and counted): SYN_SENT -> CLOSE. The socket connects again, and the
        // backup records CLOSE -> SYN_SENT a second time; it is no repeat of what is shown.
        let (mut t, mut out) = (timeline(), Vec::new());
        t.push(&rec(Kind::Transition, 10, SK, Close, SynSent), &mut out);
        t.push(&rec(Kind::Transition, 20, SK, SynSent, Close), &mut out);
        t.push(&by_backup(rec(Kind::Transition, 30, SK, Close, SynSent)), &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(t.duplicates(), 0);
    }

    #[test]
    fn time_wait_is_shown_with_its_duration() {
        let (mut t, mut out) = (timeline(), vec![]);
        active_close_until_handover(&mut t, &mut out, TimeWait);
        t.push(&rec(Kind::TwCancel { tw: TW, state: TimeWait }, 60_000_050, SK, TimeWait, Close), &mut out);
        t.push(&rec(Kind::TwExpire { tw: TW, state: TimeWait }, 60_000_060, SK, TimeWait, Close), &mut out);
        t.settle(u64::MAX, |_, _| false, &mut out);
        assert_eq!(
            edges(&out[4..]),
            vec![
                (1, FinWait2, TimeWait, Some(10), None),
                (1, TimeWait, Close, Some(60_000_010), Some(EndReason::ActiveClose)),
            ]
        );
        assert_eq!(t.live_sockets(), 0);
    }

    #[test]
    fn timewait_records_that_overtake_their_hand_over_keep_the_connection_whole() {
        // An orphan in FIN_WAIT2 moves to its timewait socket on one CPU; the peer's FIN
        // reaches that timewait socket on another CPU, whose records (the timer's removal
        // and re-arming in TIME_WAIT) reach the ring before the hand-over's.
        let (mut t, mut out) = (timeline(), vec![]);
        for (ts, old, new) in [(10, Close, SynSent), (20, SynSent, Established), (30, Established, FinWait1), (40, FinWait1, FinWait2)] {
            t.push(&rec(Kind::Transition, ts, SK, old, new), &mut out);
        }
        t.push(&rec(Kind::TwCancel { tw: TW, state: FinWait2 }, 45, SK, FinWait2, Close), &mut out);
        t.push(&rec(Kind::TwArmed { tw: TW, state: TimeWait }, 46, SK, FinWait2, TimeWait), &mut out);
        t.push(&rec(Kind::Handover { tw: TW }, 50, SK, FinWait2, FinWait2), &mut out);
        t.settle(u64::MAX, |_, _| false, &mut out);
        t.push(&rec(Kind::TwExpire { tw: TW, state: TimeWait }, 60_000_046, SK, TimeWait, Close), &mut out);
        assert_eq!(
            edges(&out[4..]),
            vec![
                (1, FinWait2, TimeWait, Some(6), None),
                (1, TimeWait, Close, Some(60_000_000), Some(EndReason::ActiveClose)),
            ],
            "one socket, no kill"
        );
        assert_eq!(t.live_sockets(), 0);
    }

    #[test]
    fn a_change_two_cpus_both_report_is_shown_once() {
        // The peer's FIN reaches a new timewait socket while its hand-over is recorded: the
        // hand-over's program and the timer's both report FIN_WAIT2 -> TIME_WAIT.
        let (mut t, mut out) = (timeline(), vec![]);
        active_close_until_handover(&mut t, &mut out, FinWait2);
        t.push(&rec(Kind::TwArmed { tw: TW, state: TimeWait }, 60, SK, FinWait2, TimeWait), &mut out);
        t.push(&rec(Kind::TwArmed { tw: TW, state: TimeWait }, 61, SK, FinWait2, TimeWait), &mut out);
        t.settle(u64::MAX, |_, _| false, &mut out);
        assert_eq!(edges(&out[4..]), vec![(1, FinWait2, TimeWait, Some(20), None)]);
    }

    #[test]
    fn an_orphan_waits_in_fin_wait2_then_enters_time_wait() {
        let (mut t, mut out) = (timeline(), vec![]);
        active_close_until_handover(&mut t, &mut out, FinWait2);
        assert_eq!(out.len(), 4, "moving to the timewait socket in FIN_WAIT2 is no transition");
        // The peer's FIN arrives: the kernel re-arms the timer (removal first, then arming).
        t.push(&rec(Kind::TwCancel { tw: TW, state: FinWait2 }, 100, SK, FinWait2, Close), &mut out);
        t.push(&rec(Kind::TwArmed { tw: TW, state: TimeWait }, 101, SK, FinWait2, TimeWait), &mut out);
        t.settle(u64::MAX, |_, _| false, &mut out);
        assert_eq!(edges(&out[4..]), vec![(1, FinWait2, TimeWait, Some(61), None)]);
    }

    #[test]
    fn an_orphan_that_never_hears_from_its_peer_times_out_in_fin_wait2() {
        let (mut t, mut out) = (timeline(), vec![]);
        active_close_until_handover(&mut t, &mut out, FinWait2);
        t.push(&rec(Kind::TwExpire { tw: TW, state: FinWait2 }, 1000, SK, FinWait2, Close), &mut out);
        assert_eq!(edges(&out[4..]), vec![(1, FinWait2, Close, Some(960), Some(EndReason::FinWait2Timeout))]);
    }

    #[test]
    fn a_removal_with_nothing_after_it_is_a_killed_time_wait() {
        let (mut t, mut out) = (timeline(), vec![]);
        active_close_until_handover(&mut t, &mut out, TimeWait);
        t.push(&rec(Kind::TwCancel { tw: TW, state: TimeWait }, 5_000, SK, TimeWait, Close), &mut out);
        t.settle(5_000 + CANCEL_GRACE_NS - 1, |_, _| unreachable!("asked with no removal due"), &mut out);
        assert_eq!(out.len(), 5, "not settled within the grace period");
        t.settle(5_000 + CANCEL_GRACE_NS, |_, _| false, &mut out);
        assert_eq!(edges(&out[5..]), vec![(1, TimeWait, Close, Some(4_950), Some(EndReason::TimeWaitKilled))]);
    }

    #[test]
    fn a_time_wait_whose_end_never_came_is_found_at_the_end_unless_its_removal_is_pending() {
        use crate::gaps::{Listing, SETTLE_NS};
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let ends = Endpoints { saddr: lo, sport: 40000, daddr: lo, dport: 80, netns: 1 };
        let listed = |state: Option<TcpState>| {
            let mut l = Listing::default();
            l.add_namespace(1, state.map(|s| (ends, s)), true);
            l
        };
        let at = 50 + SETTLE_NS;
        // Still listed in TIME_WAIT: nothing unseen.
        let (mut t, mut out) = (timeline(), vec![]);
        active_close_until_handover(&mut t, &mut out, TimeWait);
        assert_eq!(t.check_against(&listed(Some(TimeWait)), at), (1, 0));
        // Gone from the kernel's list with no end seen: one transition unseen.
        assert_eq!(t.check_against(&listed(None), at), (1, 1));
        assert_eq!(t.unseen(), 1);
        // A removal still waiting to be judged is not a hole.
        let (mut t, mut out) = (timeline(), vec![]);
        active_close_until_handover(&mut t, &mut out, TimeWait);
        t.push(&rec(Kind::TwCancel { tw: TW, state: TimeWait }, at - 1, SK, TimeWait, Close), &mut out);
        assert_eq!(t.check_against(&listed(None), at), (0, 0));
        // Nor is anything when timewait sockets are not followed.
        let (mut t, mut out) = (Timeline::new(Clock::from_offset(0), 64, 0, false), vec![]);
        active_close_until_handover(&mut t, &mut out, TimeWait);
        assert_eq!(t.check_against(&listed(None), at).1, 0);
    }

    #[test]
    fn the_end_of_a_run_knows_how_long_its_last_removals_need_to_be_judged() {
        let (mut t, mut out) = (timeline(), vec![]);
        assert_eq!(t.removals_due_at(0), None, "nothing waits before any removal");
        active_close_until_handover(&mut t, &mut out, TimeWait);
        t.push(&rec(Kind::TwCancel { tw: TW, state: TimeWait }, 5_000, SK, TimeWait, Close), &mut out);
        assert_eq!(t.removals_due_at(5_010), Some(5_000 + CANCEL_GRACE_NS));
        // A re-arm follows: nothing is left to judge.
        t.push(&rec(Kind::TwArmed { tw: TW, state: TimeWait }, 5_001, SK, TimeWait, TimeWait), &mut out);
        assert_eq!(t.removals_due_at(0), None, "a followed removal waits for nothing");
        // Removed again, for good this time: due once the grace has passed, then settled.
        t.push(&rec(Kind::TwCancel { tw: TW, state: TimeWait }, 9_000, SK, TimeWait, Close), &mut out);
        assert_eq!(t.removals_due_at(9_010), Some(9_000 + CANCEL_GRACE_NS));
        t.settle(9_000 + CANCEL_GRACE_NS, |_, _| false, &mut out);
        assert_eq!(t.removals_due_at(0), None);
        assert_eq!(out.last().map(|t| (t.oldstate, t.newstate, t.reason)), Some((TimeWait, Close, Some(EndReason::TimeWaitKilled))));
    }

    #[test]
    fn a_removal_stamped_in_the_future_is_waited_for_one_grace_at_most() {
        let (mut t, mut out) = (timeline(), vec![]);
        active_close_until_handover(&mut t, &mut out, TimeWait);
        t.push(&rec(Kind::TwCancel { tw: TW, state: TimeWait }, u64::MAX - 10, SK, TimeWait, Close), &mut out);
        assert_eq!(t.removals_due_at(1_000), Some(1_000 + CANCEL_GRACE_NS));
        // Not due yet at the cap: it stays undecided, never shown as killed on a guess.
        t.settle(1_000 + CANCEL_GRACE_NS, |_, _| false, &mut out);
        assert_ne!(out.last().map(|t| t.reason), Some(Some(EndReason::TimeWaitKilled)));
        assert!(t.removals_due_at(2_000).is_some(), "still pending");
    }

    #[test]
    fn a_timewait_address_reused_by_a_new_connection_ends_the_old_one() {
        let (mut t, mut out) = (timeline(), vec![]);
        active_close_until_handover(&mut t, &mut out, TimeWait);
        t.push(&rec(Kind::TwCancel { tw: TW, state: TimeWait }, 100, SK, TimeWait, Close), &mut out);
        // A second connection, at another full socket, moves to a timewait socket at the
        // same address before the grace period is over.
        const SK2: u64 = 0xc0;
        for (ts, old, new) in [(110, Close, SynSent), (120, SynSent, Established), (130, Established, FinWait1), (140, FinWait1, FinWait2)] {
            t.push(&rec(Kind::Transition, ts, SK2, old, new), &mut out);
        }
        t.push(&rec(Kind::Handover { tw: TW }, 150, SK2, FinWait2, TimeWait), &mut out);
        t.push(&rec(Kind::TwExpire { tw: TW, state: TimeWait }, 1_000, SK2, TimeWait, Close), &mut out);
        let tail: Vec<_> = edges(&out[4..]).into_iter().filter(|e| e.2 == Close || e.2 == TimeWait).collect();
        assert_eq!(
            tail,
            vec![
                (1, FinWait2, TimeWait, Some(10), None),
                (1, TimeWait, Close, Some(50), Some(EndReason::TimeWaitKilled)),
                (2, FinWait2, TimeWait, Some(10), None),
                (2, TimeWait, Close, Some(850), Some(EndReason::ActiveClose)),
            ]
        );
    }

    #[test]
    fn a_new_connection_at_a_timewait_address_that_looked_rearmed_ends_the_old_one() {
        // The old timewait socket is killed and its memory reused at once: the kernel
        // reports a removal and an arming of the same address, then the new connection's
        // hand-over claims it.
        let (mut t, mut out) = (timeline(), vec![]);
        active_close_until_handover(&mut t, &mut out, TimeWait);
        // The removal ran in a softirq that interrupted another task.
        let removal = rec(Kind::TwCancel { tw: TW, state: TimeWait }, 100, SK, TimeWait, Close);
        t.push(&Decoded { pid: 0, comm: Comm::new("swapper/1"), ..removal }, &mut out);
        t.push(&rec(Kind::TwArmed { tw: TW, state: TimeWait }, 101, SK, TimeWait, TimeWait), &mut out);
        const SK2: u64 = 0xc0;
        let mut second = rec(Kind::Transition, 90, SK2, Close, SynSent);
        second.ends.sport = 40001;
        for (ts, old, new) in [(90, Close, SynSent), (95, SynSent, Established), (98, Established, FinWait1), (99, FinWait1, FinWait2)] {
            t.push(&Decoded { ts_ns: ts, oldstate: old, newstate: new, ..second }, &mut out);
        }
        t.push(&Decoded { kind: Kind::Handover { tw: TW }, ts_ns: 102, oldstate: FinWait2, newstate: TimeWait, ..second }, &mut out);
        let ends: Vec<_> =
            out.iter().filter(|t| t.newstate == Close).map(|t| (t.socket, t.ends.sport, t.reason, t.time.mono_ns)).collect();
        assert_eq!(ends, vec![(1, 40000, Some(EndReason::TimeWaitKilled), 100)], "dated at the removal");
        let killed = out.iter().find(|t| t.newstate == Close).unwrap();
        assert_eq!(
            (killed.pid, killed.comm, killed.owner.map(|o| o.pid)),
            (0, Comm::new("swapper/1"), Some(9)),
            "of the task on the CPU at the removal, owned by the old connection's owner"
        );
        let last = out.last().unwrap();
        assert_eq!((last.socket, last.ends.sport, last.oldstate, last.newstate), (2, 40001, FinWait2, TimeWait));
    }

    #[test]
    fn a_removal_whose_follow_up_was_not_delivered_is_no_kill() {
        let (mut t, mut out) = (timeline(), vec![]);
        active_close_until_handover(&mut t, &mut out, TimeWait);
        t.push(&rec(Kind::TwCancel { tw: TW, state: TimeWait }, 5_000, SK, TimeWait, Close), &mut out);
        let mut asked = Vec::new();
        t.settle(
            5_000 + CANCEL_GRACE_NS,
            |tw, at| {
                asked.push((tw, at));
                true
            },
            &mut out,
        );
        assert_eq!(asked, vec![(TW, 5_000)], "the kernel's note is looked up by timewait socket and removal time");
        assert_eq!(out.len(), 5, "no kill is invented when the re-arm was dropped or filtered out");
        // The connection is still known: its real end shows when its timer fires.
        t.push(&rec(Kind::TwExpire { tw: TW, state: TimeWait }, 60_000_050, SK, TimeWait, Close), &mut out);
        assert_eq!(out.last().map(|t| (t.socket, t.reason)), Some((1, Some(EndReason::ActiveClose))));
    }

    #[test]
    fn a_rearm_in_the_same_state_is_no_transition_and_no_kill() {
        let (mut t, mut out) = (timeline(), vec![]);
        active_close_until_handover(&mut t, &mut out, TimeWait);
        t.push(&rec(Kind::TwCancel { tw: TW, state: TimeWait }, 100, SK, TimeWait, Close), &mut out);
        t.push(&rec(Kind::TwArmed { tw: TW, state: TimeWait }, 101, SK, TimeWait, TimeWait), &mut out);
        t.settle(u64::MAX, |_, _| false, &mut out);
        assert_eq!(out.len(), 5);
    }

    #[test]
    fn connections_of_one_owner_in_time_wait_share_what_is_kept_of_them() {
        let (mut t, mut out) = (timeline(), vec![]);
        let other = Owner { pid: 11, comm: Comm::new("other"), source: OwnerSource::Syscall, cgroup: 0 };
        for (i, owner) in [(0u64, None), (1, None), (2, Some(other)), (3, None)] {
            let (sk, tw) = (0x1000 + 0x10 * i, 0x2000 + 0x10 * i);
            let mut d = rec(Kind::Transition, 10 * i, sk, FinWait1, FinWait2);
            if let Some(o) = owner {
                d.owner = Some(o);
            }
            t.push(&d, &mut out);
            t.push(&Decoded { kind: Kind::Handover { tw }, oldstate: FinWait2, newstate: TimeWait, ..d }, &mut out);
        }
        let kept = |i: u64| &t.timewaits[&(0x2000 + 0x10 * i)];
        assert!(Rc::ptr_eq(kept(0), kept(1)), "one owner in a row: one kept");
        assert!(!Rc::ptr_eq(kept(1), kept(2)) && !Rc::ptr_eq(kept(2), kept(3)));
        assert_eq!((kept(2).owner.map(|o| o.pid), kept(3).owner.map(|o| o.pid)), (Some(11), Some(9)));
    }

    #[test]
    fn a_closing_transition_carries_its_reason_and_error() {
        let (mut t, mut out) = (timeline(), vec![]);
        t.push(&rec(Kind::Transition, 1, SK, Close, SynSent), &mut out);
        let mut refused = rec(Kind::Transition, 2, SK, SynSent, Close);
        refused.error = libc::ECONNREFUSED;
        refused.retransmits = 0;
        t.push(&refused, &mut out);
        assert_eq!(out[0].reason, None);
        assert_eq!(out[1].reason, Some(EndReason::Refused));
        assert_eq!(out[1].error, Some(libc::ECONNREFUSED));
        let mut timed_out = rec(Kind::Transition, 3, SK + 1, SynSent, Close);
        timed_out.error = libc::ETIMEDOUT;
        timed_out.retransmits = 6;
        t.push(&timed_out, &mut out);
        assert_eq!((out[2].reason, out[2].retransmits), (Some(EndReason::ConnectTimeout), 6));
    }

    #[test]
    fn a_socket_born_while_the_inventory_is_taken_is_shown_once() {
        let mut t = Timeline::new(Clock::from_offset(0), 64, 1_000, true);
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let listed = |sport, dport, state, cookie| SocketRecord {
            time: Timestamp { mono_ns: 1_000, unix_ns: 1_000 },
            socket: 0,
            family: Family::Ipv4,
            ends: Endpoints { saddr: lo, sport, daddr: lo, dport, netns: 1 },
            state,
            owner: None,
            inode: 5,
            uid: 0,
            cookie,
        };
        // The inventory lists the new connection (40000 -> 80), an older one (40001 -> 80),
        // and a TIME_WAIT with the new connection's endpoints, left by an earlier one.
        let mut inventory = vec![listed(40000, 80, Established, 11), listed(40001, 80, Established, 12), listed(40000, 80, TimeWait, 13)];
        for s in &mut inventory {
            t.adopt(s);
        }
        // Before the inventory: the new connection's connect, without a cookie yet.
        let mut early = vec![];
        let mut connect = rec(Kind::Transition, 1_500, SK, Close, SynSent);
        connect.ends.sport = 0;
        t.push(&connect, &mut early);
        t.push(&rec(Kind::Transition, 1_600, SK, SynSent, Established), &mut early);
        let twins = t.born_during_inventory(&inventory, &early);
        assert_eq!(twins, HashSet::from_iter([inventory[0].socket]));
        // Its next transition, now with the cookie the inventory made, keeps its own id.
        let mut out = vec![];
        let mut close = rec(Kind::Transition, 3_000, SK, Established, FinWait1);
        close.cookie = 11;
        t.push(&close, &mut out);
        assert_eq!(out[0].socket, early[0].socket);
        assert_ne!(out[0].socket, inventory[0].socket);
        // A socket that closed in the window leaves the inventory alone.
        let mut t2 = Timeline::new(Clock::from_offset(0), 64, 1_000, true);
        let mut inventory2 = vec![listed(40000, 80, Established, 21)];
        t2.adopt(&mut inventory2[0]);
        let mut early2 = vec![];
        t2.push(&rec(Kind::Transition, 1_500, SK, SynSent, Close), &mut early2);
        assert!(t2.born_during_inventory(&inventory2, &early2).is_empty());
    }

    #[test]
    fn an_inventory_socket_keeps_its_id_owner_and_times_from_the_start() {
        let mut t = Timeline::new(Clock::from_offset(0), 64, 1_000, true);
        let owner = Owner { pid: 77, comm: Comm::new("server"), source: OwnerSource::Inventory, cgroup: 0 };
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut s = SocketRecord {
            time: Timestamp { mono_ns: 1_000, unix_ns: 1_000 },
            socket: 0,
            family: Family::Ipv4,
            ends: Endpoints { saddr: lo, sport: 40000, daddr: lo, dport: 80, netns: 1 },
            state: Established,
            owner: Some(owner),
            inode: 5,
            uid: 0,
            cookie: 4242,
        };
        let id = t.adopt(&mut s);
        assert_eq!(s.socket, id);
        let mut out = vec![];
        let mut close = rec(Kind::Transition, 3_000, SK, Established, FinWait1);
        close.cookie = 4242;
        close.owner = None;
        t.push(&close, &mut out);
        assert_eq!(out[0].socket, id);
        assert_eq!((out[0].prev_state_ns, out[0].prev_state_at_least), (Some(2_000), true));
        assert_eq!(out[0].owner, Some(owner));
    }
}
