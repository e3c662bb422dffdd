//! The one stream of records every consumer observes. A run (live, or a recording read
//! back) hands each record to a [`Pipeline`]: it keeps the run's counts ([`Summary`]),
//! announces an owner's process and namespace details before the first record that names
//! them ([`Details`]), and passes every record, in order, to each [`Observer`] registered
//! in [`Consumers`]: the report, the command's sockets still open, the alert detectors, and
//! last the output sink (standard output, a recording, the flight recorder, the metrics
//! exporter, the screen of `top`). Alerts an observer raises are handed to every observer
//! as records of their own: after the socket or transition that raised them, before the
//! loss, tick or end at whose time a timer raised them.
//!
//! A new consumer is one file: a type implementing [`Observer`], and a field of
//! [`Consumers`] that [`Pipeline::new`] registers.

mod alerts;
mod output;
mod report;
mod still_open;
#[cfg(test)]
mod tests;

use std::io;

use crate::alerts::sink::AlertHandle;
use crate::alerts::Alert;
use crate::cgroup::CgroupInfo;
use crate::details::{Detail, Details};
use crate::output::{RingRead, Start};
use crate::record::{Lost, NetnsInfo, ProcessInfo, SocketRecord, Timestamp, Transition};
use crate::report::Report;
use crate::still_open::StillOpen;
use crate::summary::Summary;

pub use self::alerts::{fail_on_alert, Alerts};
pub use self::output::ToSink;

/// A consumer of the stream of records. Every method has a default that ignores the
/// record: an observer implements what it uses.
pub trait Observer {
    fn start(&mut self, _start: &Start) -> io::Result<()> {
        Ok(())
    }
    fn socket(&mut self, _s: &SocketRecord) -> io::Result<()> {
        Ok(())
    }
    fn process(&mut self, _p: &ProcessInfo) -> io::Result<()> {
        Ok(())
    }
    fn netns(&mut self, _n: &NetnsInfo) -> io::Result<()> {
        Ok(())
    }
    fn cgroup(&mut self, _g: &CgroupInfo) -> io::Result<()> {
        Ok(())
    }
    fn transition(&mut self, _t: &Transition) -> io::Result<()> {
        Ok(())
    }
    fn lost(&mut self, _lost: &Lost) -> io::Result<()> {
        Ok(())
    }
    fn alert(&mut self, _alert: &Alert) -> io::Result<()> {
        Ok(())
    }
    /// The live run read the ring buffer (see [`RingRead`]).
    fn ring_read(&mut self, _read: &RingRead) -> io::Result<()> {
        Ok(())
    }
    /// Time has come to `now` (before a loss or a tick): timers due by then fire.
    fn advance(&mut self, _now: Timestamp) {}
    /// A quiet moment of the run at `now`.
    fn tick(&mut self, _now: Timestamp) -> io::Result<()> {
        Ok(())
    }
    /// The stream is over at `end`: what is still pending is judged now.
    fn finish(&mut self, _end: Timestamp) {}
    /// The end record, with the run's counts.
    fn end(&mut self, _summary: &Summary) -> io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Moves the alerts raised since it was last asked onto `out`.
    fn raised(&mut self, _out: &mut Vec<Alert>) {}
}

impl<T: Observer + ?Sized> Observer for &mut T {
    fn start(&mut self, start: &Start) -> io::Result<()> {
        (**self).start(start)
    }
    fn socket(&mut self, s: &SocketRecord) -> io::Result<()> {
        (**self).socket(s)
    }
    fn process(&mut self, p: &ProcessInfo) -> io::Result<()> {
        (**self).process(p)
    }
    fn netns(&mut self, n: &NetnsInfo) -> io::Result<()> {
        (**self).netns(n)
    }
    fn cgroup(&mut self, g: &CgroupInfo) -> io::Result<()> {
        (**self).cgroup(g)
    }
    fn transition(&mut self, t: &Transition) -> io::Result<()> {
        (**self).transition(t)
    }
    fn lost(&mut self, lost: &Lost) -> io::Result<()> {
        (**self).lost(lost)
    }
    fn alert(&mut self, alert: &Alert) -> io::Result<()> {
        (**self).alert(alert)
    }
    fn ring_read(&mut self, read: &RingRead) -> io::Result<()> {
        (**self).ring_read(read)
    }
    fn advance(&mut self, now: Timestamp) {
        (**self).advance(now)
    }
    fn tick(&mut self, now: Timestamp) -> io::Result<()> {
        (**self).tick(now)
    }
    fn finish(&mut self, end: Timestamp) {
        (**self).finish(end)
    }
    fn end(&mut self, summary: &Summary) -> io::Result<()> {
        (**self).end(summary)
    }
    fn flush(&mut self) -> io::Result<()> {
        (**self).flush()
    }
    fn raised(&mut self, out: &mut Vec<Alert>) {
        (**self).raised(out)
    }
}

/// Who observes a run's records, registered by [`Pipeline::new`] in this order.
#[derive(Default)]
pub struct Consumers<'a> {
    /// `portrace report`, `--summary`.
    pub report: Option<&'a mut Report>,
    /// With a traced command: its sockets still open.
    pub still_open: Option<&'a mut StillOpen>,
    /// The alert detectors, unless `--no-alerts`.
    pub alerts: Option<&'a AlertHandle>,
    /// Where the records are written (none for `portrace report`).
    pub output: Option<ToSink<'a>>,
}

impl<'a> Consumers<'a> {
    /// Records written to `sink`, and nothing else.
    pub fn writing(sink: &'a mut (dyn crate::output::Sink + 'a)) -> Consumers<'a> {
        Consumers { output: Some(ToSink::new(sink, false)), ..Consumers::default() }
    }
}

/// The stream of records of one run, handed to its consumers.
pub struct Pipeline<'a> {
    summary: Summary,
    details: Details,
    observers: Vec<Box<dyn Observer + 'a>>,
    raised: Vec<Alert>,
}

impl<'a> Pipeline<'a> {
    /// A run that started at `start`, whose owners' details come from `details`.
    pub fn new(start: Timestamp, details: Details, consumers: Consumers<'a>) -> Pipeline<'a> {
        let Consumers { report, still_open, alerts, output } = consumers;
        let mut observers: Vec<Box<dyn Observer + 'a>> = Vec::new();
        if let Some(report) = report {
            observers.push(Box::new(report));
        }
        if let Some(open) = still_open {
            observers.push(Box::new(open));
        }
        if let Some(handle) = alerts {
            observers.push(Box::new(Alerts::new(handle.clone())));
        }
        if let Some(output) = output {
            observers.push(Box::new(output));
        }
        Pipeline { summary: Summary::new(start), details, observers, raised: Vec::new() }
    }

    /// The run's counts so far.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// What is known of owners: the engines hand it what they learn (a process's exec
    /// live, the process, namespace and cgroup records of a recording).
    pub fn details(&mut self) -> &mut Details {
        &mut self.details
    }

    fn each(&mut self, mut f: impl FnMut(&mut dyn Observer) -> io::Result<()>) -> io::Result<()> {
        for o in &mut self.observers {
            f(o.as_mut())?;
        }
        Ok(())
    }

    /// Hands the alerts raised so far to every observer.
    fn alerts(&mut self) -> io::Result<()> {
        let mut raised = std::mem::take(&mut self.raised);
        for o in &mut self.observers {
            o.raised(&mut raised);
        }
        let handed = raised.iter().try_for_each(|a| self.each(|o| o.alert(a)));
        raised.clear();
        self.raised = raised;
        handed
    }

    /// The details of `owner` and `netns` not announced yet, to every observer.
    fn announce(&mut self, owner: Option<&crate::record::Owner>, netns: u32, time: Timestamp) -> io::Result<()> {
        let Pipeline { details, observers, .. } = self;
        details.before(owner, netns, time, |d| {
            for o in observers.iter_mut() {
                match d {
                    Detail::Process(p) => o.process(p)?,
                    Detail::Netns(n) => o.netns(n)?,
                    Detail::Cgroup(g) => o.cgroup(g)?,
                }
            }
            Ok(())
        })
    }

    pub fn start(&mut self, start: &Start) -> io::Result<()> {
        self.each(|o| {
            o.advance(start.time);
            Ok(())
        })?;
        self.each(|o| o.start(start))?;
        self.alerts()
    }

    pub fn socket(&mut self, s: &SocketRecord) -> io::Result<()> {
        self.announce(s.owner.as_ref(), s.ends.netns, s.time)?;
        self.each(|o| o.socket(s))?;
        self.alerts()
    }

    pub fn transition(&mut self, t: &Transition) -> io::Result<()> {
        self.announce(t.owner.as_ref(), t.ends.netns, t.time)?;
        self.summary.add_transition(t);
        self.each(|o| o.transition(t))?;
        self.alerts()
    }

    pub fn lost(&mut self, lost: &Lost) -> io::Result<()> {
        self.advance(lost.time)?;
        self.summary.add_lost(lost);
        self.each(|o| o.lost(lost))
    }

    pub fn ring_read(&mut self, read: &RingRead) -> io::Result<()> {
        self.each(|o| o.ring_read(read))
    }

    pub fn tick(&mut self, now: Timestamp) -> io::Result<()> {
        self.advance(now)?;
        self.each(|o| o.tick(now))
    }

    fn advance(&mut self, now: Timestamp) -> io::Result<()> {
        for o in &mut self.observers {
            o.advance(now);
        }
        self.alerts()
    }

    /// The stream is over at `end`, with no end record (a recording cut short, or an output
    /// that failed): the counts end there, and what observers hold pending is judged.
    pub fn finish(&mut self, end: Timestamp) -> io::Result<()> {
        self.summary.finish(end);
        for o in &mut self.observers {
            o.finish(end);
        }
        self.alerts()
    }

    /// The stream ends at `end` with its end record.
    pub fn end(&mut self, end: Timestamp) -> io::Result<()> {
        self.finish(end)?;
        let Pipeline { summary, observers, .. } = self;
        for o in observers.iter_mut() {
            o.end(summary)?;
        }
        Ok(())
    }

    /// Ends the counts at `end`, and nothing else (see [`Pipeline::finish`]).
    pub fn cut(&mut self, end: Timestamp) {
        self.summary.finish(end);
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.each(|o| o.flush())
    }

    /// The run's counts, once it is over.
    pub fn into_parts(self) -> (Summary, Details) {
        (self.summary, self.details)
    }
}
