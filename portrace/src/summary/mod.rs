//! The run summary: this module owns the counts portrace keeps over a whole run (how many
//! transitions of each kind, how many lost and why, how long it ran) and the text printed
//! on stderr when the run ends. The machine-readable forms of the same counts are written
//! by the output formats from the getters here. [`Ending`] is what a live run says after
//! the summary: the kernel's skips, the end-of-run check, full maps.

mod ending;

pub use ending::Ending;

use std::collections::BTreeMap;
use std::io::{self, Write};

use crate::record::{LossCause, Lost, Timestamp, Transition};
use crate::tcp_state::TcpState;

const CAUSES: [LossCause; LossCause::ALL.len()] = LossCause::ALL;

fn cause_index(cause: LossCause) -> usize {
    cause.index()
}

/// Kernel state numbers run from 1 to 12; index 0 is unused.
const STATE_SLOTS: usize = portrace_ebpf::tcp::MAX as usize + 1;

/// The counts of one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    start: Timestamp,
    end: Option<Timestamp>,
    transitions: u64,
    lost: [u64; CAUSES.len()],
    /// Indexed by (old, new) kernel state number: a flat table keeps counting an event
    /// to two array indexes.
    by_transition: [[u64; STATE_SLOTS]; STATE_SLOTS],
}

impl Summary {
    pub fn new(start: Timestamp) -> Summary {
        Summary {
            start,
            end: None,
            transitions: 0,
            lost: [0; CAUSES.len()],
            by_transition: [[0; STATE_SLOTS]; STATE_SLOTS],
        }
    }

    pub fn add_transition(&mut self, t: &Transition) {
        self.transitions += 1;
        let old = usize::from(t.oldstate.kernel_number());
        let new = usize::from(t.newstate.kernel_number());
        self.by_transition[old][new] += 1;
    }

    pub fn add_lost(&mut self, l: &Lost) {
        self.lost[cause_index(l.cause)] += l.count;
    }

    /// Marks the end of the run.
    pub fn finish(&mut self, end: Timestamp) {
        self.end = Some(end);
    }

    pub fn start(&self) -> Timestamp {
        self.start
    }

    /// When the run ended: the time given to [`Summary::finish`], or the start time if it
    /// has not been called.
    pub fn end(&self) -> Timestamp {
        self.end.unwrap_or(self.start)
    }

    /// How long the run lasted, in monotonic nanoseconds.
    pub fn elapsed_ns(&self) -> u64 {
        self.end().mono_ns.saturating_sub(self.start.mono_ns)
    }

    /// Transitions reported.
    pub fn transitions(&self) -> u64 {
        self.transitions
    }

    /// Transitions lost, all causes together.
    pub fn lost_total(&self) -> u64 {
        self.lost.iter().sum()
    }

    /// Transitions lost by cause: every cause, zeros included, in [`LossCause`] order.
    pub fn lost_by_cause(&self) -> [(LossCause, u64); LossCause::ALL.len()] {
        CAUSES.map(|cause| (cause, self.lost[cause_index(cause)]))
    }

    /// How many times each kind of transition was seen, only kinds seen at least once,
    /// ordered by (old, new) kernel state number.
    pub fn by_transition(&self) -> BTreeMap<(TcpState, TcpState), u64> {
        self.transition_counts().collect()
    }

    /// The non-zero transition counts in (old, new) kernel state number order, without
    /// building a map.
    pub fn transition_counts(&self) -> impl Iterator<Item = ((TcpState, TcpState), u64)> + '_ {
        self.by_transition.iter().enumerate().flat_map(|(old, row)| {
            row.iter().enumerate().filter(|&(_, &n)| n > 0).filter_map(move |(new, &n)| {
                let old = TcpState::from_kernel(old as u8)?;
                let new = TcpState::from_kernel(new as u8)?;
                Some(((old, new), n))
            })
        })
    }

    /// The end-of-run report for stderr: a first line with the totals, one line per kind of
    /// transition, and when anything was lost a line per cause with what to do about it.
    pub fn write_text(&self, w: &mut impl Write) -> io::Result<()> {
        let secs = self.elapsed_ns() as f64 / 1e9;
        writeln!(
            w,
            "portrace: {} transitions in {secs:.2} s, {} lost",
            self.transitions,
            self.lost_total()
        )?;

        const MIN_KIND_WIDTH: usize = 24;
        let kind_len = |(old, new): (TcpState, TcpState)| old.name().len() + 4 + new.name().len();
        let kind_width =
            self.transition_counts().map(|(k, _)| kind_len(k)).fold(MIN_KIND_WIDTH, usize::max);
        let count_width = self.transition_counts().map(|(_, n)| decimal_len(n)).max().unwrap_or(1);
        for ((old, new), n) in self.transition_counts() {
            let pad = kind_width - kind_len((old, new));
            writeln!(w, "  {old} -> {new}{:pad$} {n:>count_width$}", "")?;
        }

        if self.lost_total() > 0 {
            let lost: Vec<_> = self.lost_by_cause().into_iter().filter(|&(_, n)| n > 0).collect();
            let count_width = lost.iter().map(|&(_, n)| decimal_len(n)).max().unwrap_or(1);
            for (cause, n) in lost {
                let (what, todo) = advice(cause);
                writeln!(w, "  {n:>count_width$} lost, {what}: {todo}")?;
            }
        }
        Ok(())
    }
}

/// What a loss is, and what the user can do about it.
fn advice(cause: LossCause) -> (&'static str, &'static str) {
    match cause {
        LossCause::RingFull => {
            ("ring buffer full", "portrace fell behind; try a larger --ring-size")
        }
        LossCause::Skipped => (
            "skipped by the kernel",
            "the kernel ran none of portrace's programs for them (under heavy load a softirq \
             interrupts portrace's own program on the same CPU; other tracing tools such as \
             bpftrace or perf make it likelier)",
        ),
        LossCause::Malformed => {
            ("malformed records", "a portrace bug; please report it with your kernel version")
        }
        LossCause::Unreadable => (
            "unreadable in the kernel",
            "a socket field could not be read; please report it with your kernel version",
        ),
        LossCause::TimeWait => (
            "timewait timer records dropped, ring buffer full",
            "records, not transitions: at most this many TIME_WAITs cut short meanwhile show no end; \
             try a larger --ring-size",
        ),
        LossCause::Gap => (
            "missing from sockets' sequences",
            "sockets were seen leaving states they were not seen entering, more often than every \
             count above explains: the kernel handed these transitions to none of portrace's \
             programs and counted them nowhere",
        ),
    }
}

fn decimal_len(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |l| l as usize + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(mono_ns: u64) -> Timestamp {
        Timestamp { mono_ns, unix_ns: 1_700_000_000_000_000_000 + i128::from(mono_ns) }
    }

    fn transition(old: TcpState, new: TcpState) -> Transition {
        Transition { time: ts(5), ..Transition::example(1, old, new) }
    }

    fn lost(count: u64, cause: LossCause) -> Lost {
        Lost { time: ts(6), count, cause }
    }

    fn sample() -> Summary {
        use TcpState::*;
        let mut s = Summary::new(ts(1_000_000_000));
        for _ in 0..1234 {
            s.add_transition(&transition(Close, SynSent));
        }
        for _ in 0..3 {
            s.add_transition(&transition(Established, FinWait1));
        }
        s.add_transition(&transition(SynSent, Established));
        s.add_transition(&transition(Listen, Close));
        s.add_lost(&lost(12, LossCause::RingFull));
        s.add_lost(&lost(3, LossCause::Malformed));
        s.add_lost(&lost(30, LossCause::RingFull));
        s.finish(ts(13_346_000_000));
        s
    }

    #[test]
    fn counts_and_getters() {
        use TcpState::*;
        let s = sample();
        assert_eq!(s.transitions(), 1239);
        assert_eq!(s.lost_total(), 45);
        assert_eq!(
            s.lost_by_cause(),
            [
                (LossCause::RingFull, 42),
                (LossCause::Skipped, 0),
                (LossCause::Malformed, 3),
                (LossCause::Unreadable, 0),
                (LossCause::TimeWait, 0),
                (LossCause::Gap, 0)
            ]
        );
        assert_eq!(s.elapsed_ns(), 12_346_000_000);
        let by = s.by_transition();
        let keys: Vec<_> = by.keys().copied().collect();
        // Kernel numbers: ESTABLISHED 1, SYN_SENT 2, CLOSE 7, LISTEN 10.
        assert_eq!(
            keys,
            [(Established, FinWait1), (SynSent, Established), (Close, SynSent), (Listen, Close)]
        );
        assert_eq!(by[&(Close, SynSent)], 1234);
        assert_eq!(by[&(Established, FinWait1)], 3);
    }

    #[test]
    fn map_order_is_kernel_number_order() {
        // by_transition() is a BTreeMap ordered by TcpState's derived Ord; that must agree
        // with the kernel numbers the summary promises to sort by.
        for a in TcpState::ALL {
            for b in TcpState::ALL {
                assert_eq!(a.cmp(&b), a.kernel_number().cmp(&b.kernel_number()), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn every_cause_has_its_own_slot() {
        for (i, cause) in CAUSES.into_iter().enumerate() {
            assert_eq!(cause_index(cause), i);
        }
    }

    #[test]
    fn unfinished_summary_has_zero_duration() {
        let s = Summary::new(ts(42));
        assert_eq!(s.end(), ts(42));
        assert_eq!(s.elapsed_ns(), 0);
        let mut out = Vec::new();
        s.write_text(&mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "portrace: 0 transitions in 0.00 s, 0 lost\n");
    }

    #[test]
    fn text_report() {
        let mut out = Vec::new();
        sample().write_text(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("portrace: 1239 transitions in 12.35 s, 45 lost\n"), "{text}");
        assert!(text.contains("\n  CLOSE -> SYN_SENT        1234\n"), "{text}");
        insta::assert_snapshot!(text);
    }

    #[test]
    fn long_transition_names_keep_counts_aligned() {
        use TcpState::*;
        let mut s = sample();
        // "ESTABLISHED -> CLOSE_WAIT" is one wider than the minimum kind column.
        s.add_transition(&transition(Established, CloseWait));
        let mut out = Vec::new();
        s.write_text(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let kinds: Vec<&str> = text.lines().filter(|l| l.contains(" -> ")).collect();
        assert_eq!(kinds.len(), 5, "{text}");
        assert!(kinds.contains(&"  ESTABLISHED -> CLOSE_WAIT    1"), "{text}");
        assert!(kinds.iter().all(|l| l.len() == kinds[0].len()), "{text}");
    }

    #[test]
    fn decimal_lengths() {
        assert_eq!(decimal_len(0), 1);
        assert_eq!(decimal_len(9), 1);
        assert_eq!(decimal_len(10), 2);
        assert_eq!(decimal_len(u64::MAX), 20);
    }
}
