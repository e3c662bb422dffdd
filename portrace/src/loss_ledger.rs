//! The loss ledger of a live run: from what the kernel programs count, what the kernel
//! counts of them, what an independent count of the tracepoint's hits says and the holes
//! the timeline finds in sockets' sequences, which transitions were lost since the last
//! check, and why. Pure arithmetic over readings the live engine's session
//! takes; each loss is reported once, under one cause.
//!
//! The causes, in the order they are settled:
//! - the ring buffer was full (transitions, and timewait records), or a socket could not
//!   be read: the programs count these as they happen;
//! - the kernel skipped the primary program (recursion on a CPU), less the runs the backup
//!   program recorded, plus hits of the tracepoint no program saw and no program count
//!   covers (the independent count, [`crate::hitcount`]);
//! - holes in sockets' sequences that no count explains (only when the filter keeps whole
//!   sockets and no command is traced).

use crate::hitcount;
use crate::loader::Counters;
use crate::record::LossCause;

/// What the ledger has already reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LossLedger {
    /// The programs' counters at the last check.
    seen: Counters,
    /// Skipped runs already reported lost.
    skipped_reported: u64,
}

/// The independent count of the tracepoint's hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hits {
    /// The primary program's count of runs when the instance was enabled.
    pub at_start: u64,
    /// The instance's count now.
    pub total: u64,
    /// The programs' count of hits handed to them, read before `total`, when the holes
    /// needed weighing ([`LossLedger::wants_weighing`]).
    pub handed_before: Option<u64>,
}

/// One check's readings, taken in this order: the holes, the programs' side when weighed,
/// the independent count, then the counters and the kernel's statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    /// Transitions the timeline found missing from sockets' sequences so far.
    pub unseen: u64,
    /// Transitions already reported lost, by this ledger or otherwise (malformed records).
    pub lost_total: u64,
    pub counters: Counters,
    /// The kernel's count of the primary program's skipped runs (`None` before Linux 5.12).
    pub recursion_misses: Option<u64>,
    /// Whether the backup program runs (its rescues count only then).
    pub backed_up: bool,
    /// Transitions both programs recorded, shown once ([`crate::timeline::Timeline::duplicates`]).
    pub duplicates: u64,
    /// The independent count, while it works.
    pub hits: Option<Hits>,
    /// Whether holes mean losses: the filter keeps whole sockets and no command is traced.
    pub gap_check: bool,
}

impl LossLedger {
    /// The counters as of the last check.
    pub fn seen(&self) -> Counters {
        self.seen
    }

    /// Whether the holes found so far may exceed what is reported, so that the check must
    /// read the programs' side before the independent count to weigh them
    /// ([`Hits::handed_before`]). Rare: it saves the drain loop a map read and a system call.
    pub fn wants_weighing(gap_check: bool, unseen: u64, lost_total: u64, counting_hits: bool) -> bool {
        gap_check && unseen > lost_total && counting_hits
    }

    /// The losses `reading` shows beyond those already reported, in the order to report
    /// them; remembers them as reported.
    pub fn settle(&mut self, reading: &Reading) -> Vec<(u64, LossCause)> {
        let mut losses = Vec::new();
        let (now, before) = (reading.counters, self.seen);
        self.seen = now;
        for (now, then, cause) in [
            (now.ring_full, before.ring_full, LossCause::RingFull),
            (now.tw_ring_full, before.tw_ring_full, LossCause::TimeWait),
            (now.unreadable, before.unreadable, LossCause::Unreadable),
        ] {
            if now > then {
                losses.push((now - then, cause));
            }
        }
        // A run the kernel skipped is lost unless the backup program recorded it. (Not the
        // backup's second records of runs the main program made: see `Timeline::duplicates`.)
        let rescued = if reading.backed_up { now.rescued.saturating_sub(reading.duplicates) } else { 0 };
        let misses = reading.recursion_misses.unwrap_or(0);
        // Hits the kernel handed to no program and did not count either.
        let uncounted_hits = reading.hits.map_or(0, |h| hitcount::unseen(h.total, now.entered + misses, h.at_start));
        // The same, with the programs' side read before the instance: hits handled between
        // the two reads make it too large, never too small.
        let uncounted_at_most = match reading.hits {
            Some(Hits { at_start, total, handed_before: Some(before) }) => hitcount::unseen(total, before, at_start),
            _ => uncounted_hits,
        };
        let skipped = misses.saturating_sub(rescued) + uncounted_hits;
        if skipped > self.skipped_reported {
            losses.push((skipped - self.skipped_reported, LossCause::Skipped));
            self.skipped_reported = skipped;
        }
        // Every count covers the whole host, so it may include losses of sockets the filter
        // hides, never fewer than the holes it explains: transitions missing beyond all of
        // them at their largest (and beyond holes reported before) went uncounted. Each
        // count grows when its loss happens, before any later record can show the hole.
        let reported_now: u64 = losses.iter().map(|&(n, _)| n).sum();
        let counted_at_most = reading.lost_total + reported_now + uncounted_at_most.saturating_sub(uncounted_hits);
        if reading.gap_check && reading.unseen > counted_at_most {
            losses.push((reading.unseen - counted_at_most, LossCause::Gap));
        }
        losses
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(counters: Counters) -> Reading {
        Reading {
            unseen: 0,
            lost_total: 0,
            counters,
            recursion_misses: Some(0),
            backed_up: true,
            duplicates: 0,
            hits: None,
            gap_check: true,
        }
    }

    #[test]
    fn nothing_lost_reports_nothing() {
        let mut ledger = LossLedger::default();
        let counters = Counters { emitted: 1000, entered: 1000, ..Counters::default() };
        assert_eq!(ledger.settle(&reading(counters)), vec![]);
        assert_eq!(ledger.seen(), counters);
    }

    #[test]
    fn counted_losses_are_reported_once_each_by_cause() {
        let mut ledger = LossLedger::default();
        let first = Counters { ring_full: 5, tw_ring_full: 2, unreadable: 1, ..Counters::default() };
        assert_eq!(
            ledger.settle(&reading(first)),
            vec![(5, LossCause::RingFull), (2, LossCause::TimeWait), (1, LossCause::Unreadable)]
        );
        // The same totals again: nothing new.
        assert_eq!(ledger.settle(&Reading { lost_total: 8, ..reading(first) }), vec![]);
        let later = Counters { ring_full: 12, ..first };
        assert_eq!(ledger.settle(&Reading { lost_total: 8, ..reading(later) }), vec![(7, LossCause::RingFull)]);
    }

    #[test]
    fn skipped_runs_count_less_what_the_backup_rescued() {
        let mut ledger = LossLedger::default();
        // 10 skipped runs, 7 rescued by the backup, of which 2 were second records of runs
        // the main program made: 5 real rescues, 5 lost.
        let r = Reading { recursion_misses: Some(10), duplicates: 2, ..reading(Counters { rescued: 7, ..Counters::default() }) };
        assert_eq!(ledger.settle(&r), vec![(5, LossCause::Skipped)]);
        // Without a backup program, no rescue counts: 5 more.
        let r = Reading { backed_up: false, lost_total: 5, ..r };
        assert_eq!(ledger.settle(&r), vec![(5, LossCause::Skipped)]);
        // Already reported: nothing more.
        assert_eq!(ledger.settle(&Reading { lost_total: 10, ..r }), vec![]);
    }

    #[test]
    fn hits_no_program_saw_are_skipped_runs() {
        let mut ledger = LossLedger::default();
        // The instance counted 1000 hits since the primary program's count was 50; the
        // program has run 940 times since, and the kernel skipped it 40 times: 20 unseen.
        let counters = Counters { entered: 50 + 940, ..Counters::default() };
        let r = Reading {
            recursion_misses: Some(40),
            hits: Some(Hits { at_start: 50, total: 1000, handed_before: None }),
            ..reading(counters)
        };
        assert_eq!(ledger.settle(&r), vec![(40 + 20, LossCause::Skipped)]);
    }

    #[test]
    fn holes_beyond_every_count_are_gaps() {
        let mut ledger = LossLedger::default();
        // 3 ring-full losses counted, 5 holes found: 2 went uncounted.
        let r = Reading { unseen: 5, ..reading(Counters { ring_full: 3, ..Counters::default() }) };
        assert_eq!(ledger.settle(&r), vec![(3, LossCause::RingFull), (2, LossCause::Gap)]);
        // Holes a count explains are not reported twice.
        let mut ledger = LossLedger::default();
        let r = Reading { unseen: 3, ..reading(Counters { ring_full: 3, ..Counters::default() }) };
        assert_eq!(ledger.settle(&r), vec![(3, LossCause::RingFull)]);
    }

    #[test]
    fn holes_are_no_loss_when_the_filter_cuts_sockets() {
        let mut ledger = LossLedger::default();
        let r = Reading { unseen: 9, gap_check: false, ..reading(Counters::default()) };
        assert_eq!(ledger.settle(&r), vec![]);
    }

    #[test]
    fn weighed_holes_leave_room_for_hits_counted_between_the_reads() {
        // The instance's count 1000; the programs' count read before it was 980 (20
        // unseen at most), after it 995 (5 unseen): up to 15 holes may be hits handled
        // between the reads, so 5 reported skipped and holes beyond 5 + 15 are gaps.
        let counters = Counters { entered: 995, ..Counters::default() };
        let hits = Hits { at_start: 0, total: 1000, handed_before: Some(980) };
        let mut ledger = LossLedger::default();
        let r = Reading { unseen: 30, hits: Some(hits), ..reading(counters) };
        assert_eq!(ledger.settle(&r), vec![(5, LossCause::Skipped), (10, LossCause::Gap)]);
        let mut ledger = LossLedger::default();
        let r = Reading { unseen: 20, hits: Some(hits), ..reading(counters) };
        assert_eq!(ledger.settle(&r), vec![(5, LossCause::Skipped)]);
    }

    #[test]
    fn weighing_is_asked_only_when_holes_exceed_the_reported() {
        assert!(LossLedger::wants_weighing(true, 5, 4, true));
        assert!(!LossLedger::wants_weighing(true, 4, 4, true));
        assert!(!LossLedger::wants_weighing(false, 5, 4, true));
        assert!(!LossLedger::wants_weighing(true, 5, 4, false));
    }
}
