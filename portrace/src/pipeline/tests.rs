//! The order in which observers see the stream, and alerts raised in it.

use std::io;

use super::*;
use crate::alerts::{AlertKind, Severity, Subject};
use crate::record::{LossCause, Timestamp};
use crate::tcp_state::TcpState;

fn at(mono_ns: u64) -> Timestamp {
    Timestamp { mono_ns, unix_ns: i128::from(mono_ns) }
}

fn alert(summary: &str, time: Timestamp) -> Alert {
    Alert {
        kind: AlertKind::Scan,
        severity: Severity::Warning,
        time,
        subject: Subject::Process(1),
        summary: summary.into(),
        process: None,
        netns: None,
        evidence: Vec::new(),
    }
}

/// Writes down what it is given, by name.
#[derive(Default)]
struct Log(Vec<String>);

impl Observer for Log {
    fn start(&mut self, _: &Start) -> io::Result<()> {
        self.0.push("start".into());
        Ok(())
    }
    fn socket(&mut self, s: &SocketRecord) -> io::Result<()> {
        self.0.push(format!("socket {}", s.socket));
        Ok(())
    }
    fn transition(&mut self, t: &Transition) -> io::Result<()> {
        self.0.push(format!("transition {}", t.socket));
        Ok(())
    }
    fn lost(&mut self, l: &Lost) -> io::Result<()> {
        self.0.push(format!("lost {}", l.count));
        Ok(())
    }
    fn alert(&mut self, a: &Alert) -> io::Result<()> {
        self.0.push(format!("alert {}", a.summary));
        Ok(())
    }
    fn tick(&mut self, now: Timestamp) -> io::Result<()> {
        self.0.push(format!("tick {}", now.mono_ns));
        Ok(())
    }
    fn finish(&mut self, end: Timestamp) {
        self.0.push(format!("finish {}", end.mono_ns));
    }
    fn end(&mut self, summary: &Summary) -> io::Result<()> {
        self.0.push(format!("end {}", summary.transitions()));
        Ok(())
    }
}

/// Raises an alert for every transition, and one when time passes or the stream ends.
#[derive(Default)]
struct Raiser(Vec<Alert>);

impl Observer for Raiser {
    fn transition(&mut self, t: &Transition) -> io::Result<()> {
        self.0.push(alert(&format!("of {}", t.socket), t.time));
        Ok(())
    }
    fn advance(&mut self, now: Timestamp) {
        self.0.push(alert(&format!("due at {}", now.mono_ns), now));
    }
    fn finish(&mut self, end: Timestamp) {
        self.0.push(alert(&format!("pending at {}", end.mono_ns), end));
    }
    fn raised(&mut self, out: &mut Vec<Alert>) {
        out.append(&mut self.0);
    }
}

fn start() -> Start {
    Start { time: at(0), host: "h".into(), kernel: "6.18".into(), features: Default::default() }
}

/// A pipeline with `raiser` before `log`, as the detectors are before the output.
fn pipeline<'a>(raiser: &'a mut Raiser, log: &'a mut Log) -> Pipeline<'a> {
    let mut pipeline = Pipeline::new(at(0), Details::recorded(), Consumers::default());
    pipeline.observers.push(Box::new(raiser));
    pipeline.observers.push(Box::new(log));
    pipeline
}

#[test]
fn alerts_follow_the_record_that_raised_them_and_precede_a_timed_one() {
    let (mut raiser, mut log) = (Raiser::default(), Log::default());
    let mut p = pipeline(&mut raiser, &mut log);
    p.start(&start()).unwrap();
    p.raised.clear();
    p.transition(&Transition { time: at(5), ..Transition::example(7, TcpState::Close, TcpState::SynSent) }).unwrap();
    p.lost(&Lost { time: at(6), count: 2, cause: LossCause::RingFull }).unwrap();
    p.tick(at(8)).unwrap();
    p.end(at(9)).unwrap();
    let (summary, _) = p.into_parts();
    assert_eq!(summary.transitions(), 1);
    assert_eq!(summary.lost_total(), 2);
    assert_eq!(
        log.0,
        [
            "start",
            "alert due at 0",
            "transition 7",
            "alert of 7",
            "alert due at 6",
            "lost 2",
            "alert due at 8",
            "tick 8",
            "finish 9",
            "alert pending at 9",
            "end 1",
        ]
    );
}

#[test]
fn a_stream_cut_short_ends_its_counts_only() {
    let (mut raiser, mut log) = (Raiser::default(), Log::default());
    let mut p = pipeline(&mut raiser, &mut log);
    p.cut(at(4));
    assert_eq!(p.summary().end(), at(4));
    drop(p);
    assert!(log.0.is_empty(), "{:?}", log.0);
    assert!(raiser.0.is_empty());
}

#[test]
fn the_output_with_alerts_only_shows_alerts_losses_and_the_frame() {
    use crate::output::{Format, TextOptions};
    let out = Written::default();
    let mut sink = crate::output::sink(Format::Json, Box::new(out.clone()), TextOptions::system(false));
    let mut only = ToSink::new(sink.as_mut(), true);
    let t = Transition::example(3, TcpState::Close, TcpState::SynSent);
    only.start(&start()).unwrap();
    only.transition(&t).unwrap();
    only.alert(&alert("seen", at(1))).unwrap();
    only.lost(&Lost { time: at(2), count: 1, cause: LossCause::RingFull }).unwrap();
    only.flush().unwrap();
    drop(sink);
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let kinds: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["type"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(kinds, ["start", "alert", "lost"], "{text}");
}

/// A writer read after the sink that owns it is gone.
#[derive(Clone, Default)]
struct Written(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl io::Write for Written {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn alerts_only_keeps_the_output_whole_without_detectors() {
    use crate::alerts::sink::AlertOptions;
    let only = AlertOptions { only: true, ..AlertOptions::default() };
    assert!(only.output_only());
    assert!(!AlertOptions { enabled: false, ..only }.output_only(), "--no-alerts: nothing would be shown");
    assert!(!AlertOptions::default().output_only());
}
