//! A sink that hands every record to two sinks, in order: `portrace serve` keeps its
//! metrics and, beside them, another output (a recording) from the same stream.

use std::io;

use crate::output::{Sink, Start};
use crate::record::{Alert, Lost, NetnsInfo, ProcessInfo, SocketRecord, Timestamp, Transition};
use crate::summary::Summary;

/// Both sinks get every call; the first error (of either) is returned once both had it.
pub struct Tee {
    first: Box<dyn Sink + Send>,
    second: Box<dyn Sink + Send>,
}

impl Tee {
    pub fn new(first: Box<dyn Sink + Send>, second: Box<dyn Sink + Send>) -> Tee {
        Tee { first, second }
    }
}

fn both(a: io::Result<()>, b: io::Result<()>) -> io::Result<()> {
    a.and(b)
}

impl Sink for Tee {
    fn start(&mut self, start: &Start) -> io::Result<()> {
        both(self.first.start(start), self.second.start(start))
    }
    fn socket(&mut self, s: &SocketRecord) -> io::Result<()> {
        both(self.first.socket(s), self.second.socket(s))
    }
    fn process(&mut self, p: &ProcessInfo) -> io::Result<()> {
        both(self.first.process(p), self.second.process(p))
    }
    fn netns(&mut self, n: &NetnsInfo) -> io::Result<()> {
        both(self.first.netns(n), self.second.netns(n))
    }
    fn cgroup(&mut self, g: &crate::record::CgroupInfo) -> io::Result<()> {
        both(self.first.cgroup(g), self.second.cgroup(g))
    }
    fn ring_read(&mut self, read: &crate::output::RingRead) -> io::Result<()> {
        both(self.first.ring_read(read), self.second.ring_read(read))
    }
    fn transition(&mut self, t: &Transition) -> io::Result<()> {
        both(self.first.transition(t), self.second.transition(t))
    }
    fn lost(&mut self, lost: &Lost) -> io::Result<()> {
        both(self.first.lost(lost), self.second.lost(lost))
    }
    fn alert(&mut self, alert: &Alert) -> io::Result<()> {
        both(self.first.alert(alert), self.second.alert(alert))
    }
    fn tick(&mut self, now: Timestamp) -> io::Result<()> {
        both(self.first.tick(now), self.second.tick(now))
    }
    fn end(&mut self, summary: &Summary) -> io::Result<()> {
        both(self.first.end(summary), self.second.end(summary))
    }
    fn flush(&mut self) -> io::Result<()> {
        both(self.first.flush(), self.second.flush())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{sink, Format, TextOptions};
    use crate::record::LossCause;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Fails every write.
    struct Broken;
    impl io::Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn both_sinks_get_every_record_even_when_one_fails() {
        let (a, b) = (Buf::default(), Buf::default());
        let lost = Lost { time: Timestamp { mono_ns: 1, unix_ns: 1 }, count: 4, cause: LossCause::RingFull };
        let mut tee = Tee::new(
            sink(Format::Json, Box::new(a.clone()), TextOptions::default()),
            sink(Format::Json, Box::new(b.clone()), TextOptions::default()),
        );
        tee.lost(&lost).unwrap();
        tee.flush().unwrap();
        let (a, b) = (a.0.lock().unwrap().clone(), b.0.lock().unwrap().clone());
        assert!(!a.is_empty() && a == b, "{}", String::from_utf8_lossy(&a));

        let c = Buf::default();
        let mut tee = Tee::new(
            sink(Format::Json, Box::new(Broken), TextOptions::default()),
            sink(Format::Json, Box::new(c.clone()), TextOptions::default()),
        );
        let err = tee.lost(&lost).unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        assert!(!c.0.lock().unwrap().is_empty(), "the second still got the record");
    }
}
