//! The output sink as an observer: every record is written to it, alerts included; with
//! `--alerts-only`, only the start, alerts, losses, the ring's reads, ticks and the end.

use std::io;

use super::Observer;
use crate::alerts::Alert;
use crate::cgroup::CgroupInfo;
use crate::output::{RingRead, Sink, Start};
use crate::record::{Lost, NetnsInfo, ProcessInfo, SocketRecord, Timestamp, Transition};
use crate::summary::Summary;

/// Where a run's records are written.
pub struct ToSink<'a> {
    sink: &'a mut (dyn Sink + 'a),
    /// `--alerts-only`: sockets, transitions and details are not written.
    alerts_only: bool,
}

impl<'a> ToSink<'a> {
    pub fn new(sink: &'a mut (dyn Sink + 'a), alerts_only: bool) -> ToSink<'a> {
        ToSink { sink, alerts_only }
    }
}

impl Observer for ToSink<'_> {
    fn start(&mut self, start: &Start) -> io::Result<()> {
        self.sink.start(start)
    }
    fn socket(&mut self, s: &SocketRecord) -> io::Result<()> {
        if self.alerts_only {
            return Ok(());
        }
        self.sink.socket(s)
    }
    fn process(&mut self, p: &ProcessInfo) -> io::Result<()> {
        if self.alerts_only {
            return Ok(());
        }
        self.sink.process(p)
    }
    fn netns(&mut self, n: &NetnsInfo) -> io::Result<()> {
        if self.alerts_only {
            return Ok(());
        }
        self.sink.netns(n)
    }
    fn cgroup(&mut self, g: &CgroupInfo) -> io::Result<()> {
        if self.alerts_only {
            return Ok(());
        }
        self.sink.cgroup(g)
    }
    fn transition(&mut self, t: &Transition) -> io::Result<()> {
        if self.alerts_only {
            return Ok(());
        }
        self.sink.transition(t)
    }
    fn lost(&mut self, lost: &Lost) -> io::Result<()> {
        self.sink.lost(lost)
    }
    fn alert(&mut self, alert: &Alert) -> io::Result<()> {
        self.sink.alert(alert)
    }
    fn ring_read(&mut self, read: &RingRead) -> io::Result<()> {
        self.sink.ring_read(read)
    }
    fn tick(&mut self, now: Timestamp) -> io::Result<()> {
        self.sink.tick(now)
    }
    fn end(&mut self, summary: &Summary) -> io::Result<()> {
        self.sink.end(summary)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.sink.flush()
    }
}
