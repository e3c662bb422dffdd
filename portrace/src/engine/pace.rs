//! How often a live session drains the ring buffer.
//!
//! The kernel programs wake the reader only when the ring holds a quarter of its size, so
//! between such bursts the session finds records by draining on a timer. While records
//! arrive it drains every [`Pace::BUSY`], which bounds how late an event is shown. Once
//! drains come back empty the wait doubles, up to [`Pace::IDLE`]: an idle portrace on a host
//! with no TCP traffic then wakes about twelve times a second instead of a hundred, and
//! each wake-up costs the host a context switch and the drain's bookkeeping. The first
//! record after a quiet spell is shown at most `IDLE` late, and the next drain is back at
//! the busy pace.

use std::time::Duration;

/// The wait before the next drain, from what the last drains found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Pace {
    wait: Duration,
}

impl Pace {
    /// The wait while records arrive.
    pub const BUSY: Duration = Duration::from_millis(10);
    /// The longest wait, after drains that found nothing.
    pub const IDLE: Duration = Duration::from_millis(80);

    pub fn new() -> Pace {
        Pace { wait: Pace::BUSY }
    }

    /// The wait after a drain that read `records` records from the ring.
    pub fn after(&mut self, records: u64) -> Duration {
        self.wait = if records > 0 { Pace::BUSY } else { (self.wait * 2).min(Pace::IDLE) };
        self.wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_drains_slow_down_to_the_idle_pace_and_a_record_restores_the_busy_one() {
        let mut pace = Pace::new();
        let waits: Vec<u64> = (0..6).map(|_| pace.after(0).as_millis() as u64).collect();
        assert_eq!(waits, [20, 40, 80, 80, 80, 80]);
        assert_eq!(pace.after(1), Pace::BUSY);
        assert_eq!(pace.after(0).as_millis(), 20);
    }

    #[test]
    fn a_busy_ring_keeps_the_busy_pace() {
        let mut pace = Pace::new();
        for records in [1, 500, 3, 1] {
            assert_eq!(pace.after(records), Pace::BUSY);
        }
    }
}
