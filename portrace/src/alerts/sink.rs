//! Alerts in a stream of records: [`Alerting`] is a [`Sink`] that feeds every record it is
//! given to the [`Detectors`] and passes it on to the sink it wraps, followed by the
//! alerts the record raised (through [`Sink::alert`]). The live run, `record`, `replay`
//! and `report` all wrap their sink in one, so they raise the same alerts from the same
//! records. [`AlertHandle`] keeps a hold on the detectors for the end-of-run summary and
//! `--fail-on-alert`.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Alert, Detectors, PortRange};
use crate::output::{Sink, Start};
use crate::record::{Lost, NetnsInfo, ProcessInfo, SocketRecord, Timestamp, Transition};
use crate::summary::Summary;

use super::rules::Rules;

/// How a run handles alerts: which rules, whether only alerts are shown, whether any
/// alert makes the run fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertOptions {
    /// `false` with `--no-alerts`.
    pub enabled: bool,
    pub rules: Rules,
    /// `--alerts-only`: the timeline shows alerts (and losses) only.
    pub only: bool,
    /// `--fail-on-alert`.
    pub fail: bool,
}

impl Default for AlertOptions {
    fn default() -> AlertOptions {
        AlertOptions { enabled: true, rules: Rules::default(), only: false, fail: false }
    }
}

/// A shared hold on a run's detectors.
#[derive(Clone)]
pub struct AlertHandle(Arc<Mutex<Detectors>>);

impl AlertHandle {
    pub fn new(rules: Rules, fallback_range: PortRange) -> AlertHandle {
        AlertHandle(Arc::new(Mutex::new(Detectors::new(rules, fallback_range))))
    }

    /// The detectors (a poisoned lock is taken over: the detectors hold no invariant a
    /// panic elsewhere could break).
    pub fn lock(&self) -> MutexGuard<'_, Detectors> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `inner` with alerts; with `only`, records other than alerts, losses, start and end
    /// are not passed on.
    pub fn wrap(&self, inner: Box<dyn Sink + Send>, only: bool) -> Alerting {
        Alerting { inner, detectors: self.clone(), only, raised: Vec::new() }
    }
}

/// A sink that raises alerts from the records it passes on.
pub struct Alerting {
    inner: Box<dyn Sink + Send>,
    detectors: AlertHandle,
    only: bool,
    raised: Vec<Alert>,
}

impl Alerting {
    fn emit(&mut self) -> io::Result<()> {
        for a in self.raised.drain(..) {
            self.inner.alert(&a)?;
        }
        Ok(())
    }

    /// Ends the detectors at `end` without an end record (a recording cut short), and
    /// writes what that raised.
    pub fn finish_at(&mut self, end: Timestamp) -> io::Result<()> {
        self.detectors.lock().finish(end, &mut self.raised);
        self.emit()
    }
}

impl Sink for Alerting {
    fn start(&mut self, start: &Start) -> io::Result<()> {
        self.detectors.lock().tick(start.time, &mut self.raised);
        self.inner.start(start)?;
        self.emit()
    }

    fn socket(&mut self, s: &SocketRecord) -> io::Result<()> {
        self.detectors.lock().on_socket(s, &mut self.raised);
        if !self.only {
            self.inner.socket(s)?;
        }
        self.emit()
    }

    fn process(&mut self, p: &ProcessInfo) -> io::Result<()> {
        self.detectors.lock().on_process(p);
        if !self.only {
            self.inner.process(p)?;
        }
        Ok(())
    }

    fn netns(&mut self, n: &NetnsInfo) -> io::Result<()> {
        self.detectors.lock().on_netns(n);
        if !self.only {
            self.inner.netns(n)?;
        }
        Ok(())
    }

    fn cgroup(&mut self, g: &crate::record::CgroupInfo) -> io::Result<()> {
        if !self.only {
            self.inner.cgroup(g)?;
        }
        Ok(())
    }

    fn transition(&mut self, t: &Transition) -> io::Result<()> {
        self.detectors.lock().on_transition(t, &mut self.raised);
        if !self.only {
            self.inner.transition(t)?;
        }
        self.emit()
    }

    fn lost(&mut self, lost: &Lost) -> io::Result<()> {
        self.detectors.lock().tick(lost.time, &mut self.raised);
        self.emit()?;
        self.inner.lost(lost)
    }

    fn alert(&mut self, alert: &Alert) -> io::Result<()> {
        self.inner.alert(alert)
    }

    fn ring_read(&mut self, read: &crate::output::RingRead) -> io::Result<()> {
        self.inner.ring_read(read)
    }

    fn tick(&mut self, now: Timestamp) -> io::Result<()> {
        self.detectors.lock().tick(now, &mut self.raised);
        self.emit()?;
        self.inner.tick(now)
    }

    fn end(&mut self, summary: &Summary) -> io::Result<()> {
        self.detectors.lock().finish(summary.end(), &mut self.raised);
        self.emit()?;
        self.inner.end(summary)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
