//! The sliding window the rate detectors ([`super::scan`], [`super::handshake`],
//! [`super::time_wait`]) count events over, kept as runs rather than single events.
//!
//! A run is consecutive events with the same key (a destination, an outcome) whose times
//! lie within one slice of the window, [`SLICES`] to a window: it keeps the first and the
//! last time and the count. In a connection storm towards one destination, which is the
//! common heavy case, the window then holds about [`SLICES`] runs however many events it
//! holds; events whose keys all differ (a scan) are one run each, as single events were.
//!
//! A run leaves the window when its last event's time is before the window's start, so no
//! event leaves early, and an event counts for less than one slice longer than the window:
//! the windows are exact to within 1/[`SLICES`] of their length. (An event older than a
//! newer run before it waits behind that run, as it waited behind a newer event when the
//! window kept single events.) The number of events in
//! the window ([`Runs::events`]) is exact for that window; so are the per-key counts the
//! detectors keep, since every run that leaves is handed back with its key and count.

use std::collections::VecDeque;

/// Slices to a window: a run spans less than `window / SLICES`. 64 keeps a one-destination
/// storm at about 65 runs a window (2 or 3 KB, where an entry per event takes a megabyte at
/// 3,000 connections a second) while an event outlives the window by at most 1/64 of it
/// (about 1.6%: 156 ms of 10 s), too little to move a rate threshold.
pub const SLICES: u64 = 64;

/// Consecutive events with the same key within one slice of the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run<K> {
    pub key: K,
    /// The earliest and the latest time of its events (nanoseconds), `first <= last`.
    pub first: u64,
    pub last: u64,
    /// Its events (at least 1).
    pub count: u32,
}

/// The runs in a window, oldest first, and how many events they hold.
#[derive(Clone, Debug)]
pub struct Runs<K> {
    runs: VecDeque<Run<K>>,
    events: u64,
}

impl<K> Default for Runs<K> {
    fn default() -> Self {
        Runs { runs: VecDeque::new(), events: 0 }
    }
}

impl<K: Copy + PartialEq> Runs<K> {
    /// Counts an event with `key` at `time`, in a window of `window` nanoseconds: it joins
    /// the newest run when that run has the same key and stays within a slice with it,
    /// else it starts a run. Times arrive nearly in order (records come from several CPUs),
    /// so an event a little older than the newest run joins it too, moving its first time.
    pub fn push(&mut self, time: u64, key: K, window: u64) {
        self.events += 1;
        let slice = (window / SLICES).max(1);
        if let Some(run) = self.runs.back_mut() {
            let (first, last) = (run.first.min(time), run.last.max(time));
            if run.key == key && last - first < slice && run.count < u32::MAX {
                *run = Run { key, first, last, count: run.count + 1 };
                return;
            }
        }
        self.runs.push_back(Run { key, first: time, last: time, count: 1 });
    }

    /// Forgets the runs whose last event is before `from`, oldest first (the first run still
    /// in the window keeps the ones behind it), then the oldest events while more than `max`
    /// remain, so that exactly `max` do. `gone` gets the key and the number of events of
    /// each run, or part of a run, forgotten.
    pub fn prune(&mut self, from: u64, max: u64, mut gone: impl FnMut(K, u32)) {
        while let Some(run) = self.runs.front_mut() {
            let over = self.events.saturating_sub(max);
            if run.last >= from && over == 0 {
                break;
            }
            if run.last >= from && over < u64::from(run.count) {
                // The cap cuts into this run: its oldest events go (its times stay, an
                // upper bound on theirs).
                let n = over as u32;
                run.count -= n;
                self.events -= over;
                gone(run.key, n);
                break;
            }
            let (key, count) = (run.key, run.count);
            self.runs.pop_front();
            self.events -= u64::from(count);
            gone(key, count);
        }
    }

    /// Forgets the runs whose last event is before `from`, uncapped, when nothing needs
    /// to know which keys went.
    pub fn forget_before(&mut self, from: u64) {
        self.prune(from, u64::MAX, |_, _| ());
    }

    /// The events in the window.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The events of the runs whose last event is at or after `from`.
    pub fn events_since(&self, from: u64) -> u64 {
        self.runs.iter().filter(|r| r.last >= from).map(|r| u64::from(r.count)).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The runs, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Run<K>> {
        self.runs.iter()
    }

    /// How many runs hold the window's events.
    #[cfg(test)]
    pub fn runs(&self) -> usize {
        self.runs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: u64 = 64_000;
    const SLICE: u64 = WINDOW / SLICES;

    /// The runs as (key, first, last, count).
    fn runs(r: &Runs<u8>) -> Vec<(u8, u64, u64, u32)> {
        r.iter().map(|r| (r.key, r.first, r.last, r.count)).collect()
    }

    /// Prunes, returning what left as (key, count).
    fn prune(r: &mut Runs<u8>, from: u64, max: u64) -> Vec<(u8, u32)> {
        let mut gone = Vec::new();
        r.prune(from, max, |k, n| gone.push((k, n)));
        gone
    }

    #[test]
    fn a_storm_to_one_key_within_a_slice_is_one_run() {
        let mut r = Runs::default();
        for i in 0..10_000 {
            r.push(1_000 + i % SLICE, 7, WINDOW);
        }
        assert_eq!(runs(&r), [(7, 1_000, 1_000 + SLICE - 1, 10_000)]);
        assert_eq!(r.events(), 10_000);
        // The next slice starts a run; a whole window of them is about SLICES runs.
        r.push(1_000 + SLICE, 7, WINDOW);
        assert_eq!(r.runs(), 2);
        for t in (1_000 + SLICE..1_000 + WINDOW).step_by(10) {
            r.push(t, 7, WINDOW);
        }
        assert_eq!(r.runs(), SLICES as usize);
    }

    #[test]
    fn alternating_keys_are_separate_runs() {
        let mut r = Runs::default();
        for i in 0..6u64 {
            r.push(100 + i, (i % 2) as u8, WINDOW);
        }
        assert_eq!(r.runs(), 6);
        assert_eq!(r.events(), 6);
        assert_eq!(r.iter().map(|r| r.key).collect::<Vec<_>>(), [0, 1, 0, 1, 0, 1]);
    }

    #[test]
    fn a_run_leaves_only_when_its_last_event_does() {
        let mut r = Runs::default();
        r.push(100, 1, WINDOW);
        r.push(100 + SLICE - 1, 1, WINDOW);
        r.push(5_000, 2, WINDOW);
        // Counted without pruning, by the same rule.
        assert_eq!((r.events_since(101), r.events_since(100 + SLICE), r.events_since(5_001)), (3, 1, 0));
        // The run's first event is out of the window, its last is not: it stays.
        assert_eq!(prune(&mut r, 101, u64::MAX), []);
        assert_eq!(prune(&mut r, 100 + SLICE - 1, u64::MAX), []);
        assert_eq!(r.events(), 3);
        assert_eq!(prune(&mut r, 100 + SLICE, u64::MAX), [(1, 2)]);
        assert_eq!(runs(&r), [(2, 5_000, 5_000, 1)]);
        assert_eq!(r.events(), 1);
        assert_eq!(prune(&mut r, 5_001, u64::MAX), [(2, 1)]);
        assert!(r.is_empty());
        assert_eq!(r.events(), 0);
    }

    #[test]
    fn totals_stay_exact_through_pushes_and_prunes() {
        // An event at every time unit, the key changing every 7 units for two windows (short
        // runs), then every 250 (runs cut by the slice): the totals against the
        // events themselves, each key's leaving oldest first, only with its run's last.
        const WINDOW: u64 = 6_400;
        const SLICE: u64 = WINDOW / SLICES;
        let mut r = Runs::default();
        let mut live: [VecDeque<u64>; 3] = Default::default();
        for t in 0..4 * WINDOW {
            let key = if t < 2 * WINDOW { (t / 7) % 3 } else { (t / 250) % 3 } as u8;
            r.push(t, key, WINDOW);
            live[key as usize].push_back(t);
            let from = t.saturating_sub(WINDOW);
            r.prune(from, u64::MAX, |k, n| {
                for _ in 0..n {
                    let time = live[k as usize].pop_front().unwrap();
                    // Never early; counted (up to `from - 1`) less than a slice late.
                    assert!(time < from && from - time <= SLICE, "{time} left at {from}");
                }
            });
            let kept: u64 = r.iter().map(|run| u64::from(run.count)).sum();
            assert_eq!(r.events(), kept);
            assert_eq!(r.events(), live.iter().map(|l| l.len() as u64).sum::<u64>());
            assert_eq!(r.events_since(from), r.events());
            // Nothing kept is out of the window by a slice.
            assert!(live.iter().all(|l| l.front().is_none_or(|&time| from.saturating_sub(time) < SLICE)));
        }
    }

    #[test]
    fn the_cap_counts_events_not_runs() {
        let mut r = Runs::default();
        for t in 0..10 {
            r.push(t, 1, WINDOW);
        }
        r.push(10, 2, WINDOW);
        r.push(11, 2, WINDOW);
        assert_eq!(r.runs(), 2);
        // 12 events, 5 allowed: the oldest 7 leave, cut from the first run.
        assert_eq!(prune(&mut r, 0, 5), [(1, 7)]);
        assert_eq!(r.events(), 5);
        assert_eq!(runs(&r), [(1, 0, 9, 3), (2, 10, 11, 2)]);
        assert_eq!(prune(&mut r, 0, 1), [(1, 3), (2, 1)]);
        assert_eq!(runs(&r), [(2, 10, 11, 1)]);
        assert_eq!(r.events(), 1);
    }

    #[test]
    fn events_out_of_order_join_within_the_slice_or_start_a_run() {
        let mut r = Runs::default();
        r.push(10_000, 1, WINDOW);
        // A little older than the run's first: it joins, and the run starts earlier.
        r.push(9_990, 1, WINDOW);
        assert_eq!(runs(&r), [(1, 9_990, 10_000, 2)]);
        // Too old to keep the run within a slice: a run of its own, never last < first.
        r.push(9_000, 1, WINDOW);
        assert_eq!(runs(&r), [(1, 9_990, 10_000, 2), (1, 9_000, 9_000, 1)]);
        // Time 0 and a window shorter than SLICES: no underflow, a slice of 1.
        let mut r = Runs::default();
        r.push(5, 1, 10);
        r.push(0, 1, 10);
        r.push(0, 1, 10);
        assert_eq!(runs(&r), [(1, 5, 5, 1), (1, 0, 0, 2)]);
        // The run behind a newer one waits for it: nothing leaves early.
        assert_eq!(prune(&mut r, 3, u64::MAX), []);
        assert_eq!(prune(&mut r, 6, u64::MAX), [(1, 1), (1, 2)]);
    }
}
