//! The JSON lines format: this module owns the byte-exact rendering of the versioned
//! contract documented in `docs/json.md` (schema 1): one object per line, keys in a fixed
//! order, written by hand into a reused buffer so the hot path neither allocates nor goes
//! through a serializer.

use std::io::{self, Write};

use super::{push_json_str, push_micros, push_u64, AddrText, Sink, Start, VERSION};
use crate::clock::Rfc3339;
use crate::record::{Lost, Timestamp, Transition};
use crate::summary::Summary;

/// The schema version written in the start record. Fields are only added within a
/// version; removing a field or changing its meaning bumps it.
pub const SCHEMA: u32 = 1;

pub(super) struct JsonSink {
    out: Box<dyn Write + Send>,
    line: Vec<u8>,
}

impl JsonSink {
    pub(super) fn new(out: Box<dyn Write + Send>) -> JsonSink {
        JsonSink { out, line: Vec::with_capacity(512) }
    }

    /// Starts a line: `{"type":"<kind>"`.
    fn begin(&mut self, kind: &str) {
        self.line.clear();
        self.line.extend_from_slice(b"{\"type\":\"");
        self.line.extend_from_slice(kind.as_bytes());
        self.line.push(b'"');
    }

    /// Appends `,"time":"<rfc3339>","ts_ns":<mono>`.
    fn time(&mut self, time: Timestamp) {
        self.line.extend_from_slice(b",\"time\":\"");
        self.line.extend_from_slice(Rfc3339::new(time.unix_ns).as_bytes());
        self.line.extend_from_slice(b"\",\"ts_ns\":");
        push_u64(&mut self.line, time.mono_ns);
    }

    /// Appends `,"key":` .
    fn key(&mut self, key: &str) {
        self.line.extend_from_slice(b",\"");
        self.line.extend_from_slice(key.as_bytes());
        self.line.extend_from_slice(b"\":");
    }

    fn str_field(&mut self, key: &str, value: &[u8]) {
        self.key(key);
        self.line.push(b'"');
        push_json_str(&mut self.line, value);
        self.line.push(b'"');
    }

    fn u64_field(&mut self, key: &str, value: u64) {
        self.key(key);
        push_u64(&mut self.line, value);
    }

    /// Ends the line and writes it.
    fn emit(&mut self) -> io::Result<()> {
        self.line.extend_from_slice(b"}\n");
        self.out.write_all(&self.line)
    }
}

impl Sink for JsonSink {
    fn start(&mut self, start: &Start) -> io::Result<()> {
        self.begin("start");
        self.u64_field("schema", u64::from(SCHEMA));
        self.str_field("portrace", VERSION.as_bytes());
        self.time(start.time);
        self.str_field("host", start.host.as_bytes());
        self.str_field("kernel", start.kernel.as_bytes());
        self.emit()
    }

    fn transition(&mut self, t: &Transition) -> io::Result<()> {
        self.begin("transition");
        self.time(t.time);
        self.u64_field("pid", u64::from(t.pid));
        self.str_field("comm", t.comm.as_bytes());
        self.u64_field("socket", t.socket);
        // Names, address texts and numbers need no escaping.
        self.key("family");
        self.line.push(b'"');
        self.line.extend_from_slice(t.family.name().as_bytes());
        self.line.push(b'"');
        self.key("saddr");
        self.line.push(b'"');
        self.line.extend_from_slice(AddrText::ip(t.saddr).as_bytes());
        self.line.push(b'"');
        self.u64_field("sport", u64::from(t.sport));
        self.key("daddr");
        self.line.push(b'"');
        self.line.extend_from_slice(AddrText::ip(t.daddr).as_bytes());
        self.line.push(b'"');
        self.u64_field("dport", u64::from(t.dport));
        self.key("oldstate");
        self.line.push(b'"');
        self.line.extend_from_slice(t.oldstate.name().as_bytes());
        self.line.push(b'"');
        self.key("newstate");
        self.line.push(b'"');
        self.line.extend_from_slice(t.newstate.name().as_bytes());
        self.line.push(b'"');
        self.key("prev_state_us");
        match t.prev_state_ns {
            Some(ns) => push_micros(&mut self.line, ns),
            None => self.line.extend_from_slice(b"null"),
        }
        self.emit()
    }

    fn lost(&mut self, lost: &Lost) -> io::Result<()> {
        self.begin("lost");
        self.time(lost.time);
        self.u64_field("count", lost.count);
        self.str_field("cause", lost.cause.name().as_bytes());
        self.emit()
    }

    fn end(&mut self, summary: &Summary) -> io::Result<()> {
        self.begin("end");
        self.time(summary.end());
        self.u64_field("transitions", summary.transitions());
        self.u64_field("lost", summary.lost_total());
        self.key("lost_by_cause");
        self.line.push(b'{');
        for (i, (cause, n)) in summary.lost_by_cause().into_iter().enumerate() {
            if i > 0 {
                self.line.push(b',');
            }
            self.line.push(b'"');
            self.line.extend_from_slice(cause.name().as_bytes());
            self.line.extend_from_slice(b"\":");
            push_u64(&mut self.line, n);
        }
        self.line.push(b'}');
        self.key("by_transition");
        self.line.push(b'{');
        for (i, ((old, new), n)) in summary.transition_counts().enumerate() {
            if i > 0 {
                self.line.push(b',');
            }
            self.line.push(b'"');
            self.line.extend_from_slice(old.name().as_bytes());
            self.line.extend_from_slice(b"->");
            self.line.extend_from_slice(new.name().as_bytes());
            self.line.extend_from_slice(b"\":");
            push_u64(&mut self.line, n);
        }
        self.line.push(b'}');
        self.emit()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
