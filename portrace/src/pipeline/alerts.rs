//! The alert detectors as an observer: every record feeds them, and what they raise goes
//! back into the stream; and `--fail-on-alert`, judged once the run is over.

use std::io;

use super::Observer;
use crate::alerts::sink::AlertHandle;
use crate::alerts::{Alert, Fired};
use crate::record::{NetnsInfo, ProcessInfo, SocketRecord, Timestamp, Transition};

/// A run's detectors, fed the records.
pub struct Alerts {
    detectors: AlertHandle,
    raised: Vec<Alert>,
}

impl Alerts {
    pub fn new(detectors: AlertHandle) -> Alerts {
        Alerts { detectors, raised: Vec::new() }
    }
}

impl Observer for Alerts {
    fn socket(&mut self, s: &SocketRecord) -> io::Result<()> {
        self.detectors.lock().on_socket(s, &mut self.raised);
        Ok(())
    }
    fn process(&mut self, p: &ProcessInfo) -> io::Result<()> {
        self.detectors.lock().on_process(p);
        Ok(())
    }
    fn netns(&mut self, n: &NetnsInfo) -> io::Result<()> {
        self.detectors.lock().on_netns(n);
        Ok(())
    }
    fn transition(&mut self, t: &Transition) -> io::Result<()> {
        self.detectors.lock().on_transition(t, &mut self.raised);
        Ok(())
    }
    fn advance(&mut self, now: Timestamp) {
        self.detectors.lock().tick(now, &mut self.raised);
    }
    fn finish(&mut self, end: Timestamp) {
        self.detectors.lock().finish(end, &mut self.raised);
    }
    fn raised(&mut self, out: &mut Vec<Alert>) {
        out.append(&mut self.raised);
    }
}

/// `--fail-on-alert`: an error carrying the number of alerts when any fired.
pub fn fail_on_alert(fail: bool, alerts: Option<&AlertHandle>) -> anyhow::Result<()> {
    match alerts.map(|h| h.lock().fired()) {
        Some(fired) if fired > 0 && fail => Err(Fired(fired).into()),
        _ => Ok(()),
    }
}
