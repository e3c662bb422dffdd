//! What the end of a live run says on stderr after the summary and the features: the
//! kernel's skipped timer programs, the end-of-run check of open sockets, transitions
//! recorded twice, full maps and processes a traced command started that could not be
//! followed. Pure: the numbers come from the session.

use std::io::{self, Write};

use crate::loader::Counters;

/// The numbers a live run's last lines are made from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ending {
    /// Times the kernel skipped the timewait timer programs.
    pub timer_misses: u64,
    /// The end-of-run check, if made: sockets still open checked, transitions found unseen.
    pub end_check: Option<(usize, u64)>,
    /// Transitions both kernel programs recorded (shown once).
    pub duplicates: u64,
    /// The kernel programs' counters, as the loss ledger last saw them.
    pub counters: Counters,
    /// Processes of the traced command the kernel program could not follow.
    pub unfollowed: u64,
}

impl Ending {
    pub fn write_text(&self, w: &mut impl Write) -> io::Result<()> {
        if self.timer_misses > 0 {
            writeln!(
                w,
                "  the kernel skipped the timewait timer programs {} times: some TIME_WAIT \
                 transitions may be missing",
                self.timer_misses
            )?;
        }
        if let Some((checked, unseen)) = self.end_check.filter(|&(checked, _)| checked > 0) {
            let verdict = match unseen {
                0 => "every one as the kernel lists it".to_string(),
                n => format!("{n} transitions of these and earlier sockets missing"),
            };
            writeln!(w, "  {checked} sockets still open checked against the kernel's socket table: {verdict}")?;
        }
        if self.duplicates > 0 {
            writeln!(
                w,
                "  {} transitions were recorded by both kernel programs (a CPU stalled between \
                 them) and are shown once",
                self.duplicates
            )?;
        }
        let c = &self.counters;
        if c.owners_full > 0 || c.timewait_full > 0 || c.listeners_full > 0 {
            writeln!(
                w,
                "  the kernel program's maps were full: {} owners, {} listeners and {} timewait sockets not remembered",
                c.owners_full, c.listeners_full, c.timewait_full
            )?;
        }
        if c.hold_full > 0 {
            writeln!(
                w,
                "  {} transitions were shown at once without the port they waited for (the hold map was full): \
                 a connect's local port or a new child's peer port shows as 0, and a port filter let them through",
                c.hold_full
            )?;
        }
        let unfollowed = c.unfollowed + self.unfollowed;
        if unfollowed > 0 {
            writeln!(
                w,
                "  {unfollowed} processes the command started could not be followed (the traced-process map \
                 was full, or the kernel skipped the program): their sockets are missing"
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(ending: &Ending) -> String {
        let mut out = Vec::new();
        ending.write_text(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_clean_run_adds_nothing() {
        assert_eq!(text(&Ending::default()), "");
        assert_eq!(text(&Ending { end_check: Some((0, 0)), ..Ending::default() }), "");
    }

    #[test]
    fn the_end_check_gives_its_verdict() {
        let all = text(&Ending { end_check: Some((12, 0)), ..Ending::default() });
        assert_eq!(all, "  12 sockets still open checked against the kernel's socket table: every one as the kernel lists it\n");
        let some = text(&Ending { end_check: Some((12, 3)), ..Ending::default() });
        assert!(some.ends_with("table: 3 transitions of these and earlier sockets missing\n"), "{some}");
    }

    #[test]
    fn each_shortfall_has_its_line_in_order() {
        let counters = Counters { owners_full: 1, listeners_full: 2, timewait_full: 3, hold_full: 4, unfollowed: 5, ..Counters::default() };
        let ending = Ending { timer_misses: 7, end_check: None, duplicates: 2, counters, unfollowed: 1 };
        let lines: Vec<String> = text(&ending).lines().map(str::to_owned).collect();
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert!(lines[0].contains("timer programs 7 times"));
        assert!(lines[1].starts_with("  2 transitions were recorded by both kernel programs"));
        assert!(lines[2].ends_with("1 owners, 2 listeners and 3 timewait sockets not remembered"));
        assert!(lines[3].starts_with("  4 transitions were shown at once"));
        assert!(lines[4].starts_with("  6 processes the command started could not be followed"));
    }
}
