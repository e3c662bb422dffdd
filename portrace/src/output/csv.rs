//! The CSV format: this module owns the column layout (one header row, then a row per
//! transition or loss, all with the same sixteen columns) and RFC 4180 quoting of `comm`.
//! Rows end with `\n`, as Unix tools expect; RFC 4180 readers accept it. Text is UTF-8,
//! invalid bytes in `comm` replaced by U+FFFD. There are no start or end rows.

use std::io::{self, Write};

use super::{push_lossy, push_micros, push_u64, AddrText, Sink, Start};
use crate::clock::Rfc3339;
use crate::record::{Lost, Timestamp, Transition};
use crate::summary::Summary;

pub(super) const HEADER: &str = "type,time,ts_ns,pid,comm,socket,family,saddr,sport,daddr,dport,\
                                 oldstate,newstate,prev_state_us,count,cause\n";

pub(super) struct CsvSink {
    out: Box<dyn Write + Send>,
    line: Vec<u8>,
    header_written: bool,
}

impl CsvSink {
    pub(super) fn new(out: Box<dyn Write + Send>) -> CsvSink {
        CsvSink { out, line: Vec::with_capacity(256), header_written: false }
    }

    /// Writes the header row unless it was written already (a caller that skips `start`
    /// still gets one).
    fn header(&mut self) -> io::Result<()> {
        if !self.header_written {
            self.header_written = true;
            self.out.write_all(HEADER.as_bytes())?;
        }
        Ok(())
    }

    /// Starts a row: `kind,time,ts_ns`.
    fn begin(&mut self, kind: &str, time: Timestamp) {
        self.line.clear();
        self.line.extend_from_slice(kind.as_bytes());
        self.line.push(b',');
        self.line.extend_from_slice(Rfc3339::new(time.unix_ns).as_bytes());
        self.line.push(b',');
        push_u64(&mut self.line, time.mono_ns);
    }

    fn field(&mut self, text: &[u8]) {
        self.line.push(b',');
        self.line.extend_from_slice(text);
    }

    fn u64_field(&mut self, n: u64) {
        self.line.push(b',');
        push_u64(&mut self.line, n);
    }
}

/// Appends `text` as one CSV field, quoted (with quotes doubled) only when it holds a
/// comma, a quote, CR or LF.
pub(super) fn push_field(buf: &mut Vec<u8>, text: &[u8]) {
    if !text.iter().any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n')) {
        push_lossy(buf, text);
        return;
    }
    buf.push(b'"');
    for (i, part) in text.split(|&b| b == b'"').enumerate() {
        if i > 0 {
            buf.extend_from_slice(b"\"\"");
        }
        push_lossy(buf, part);
    }
    buf.push(b'"');
}

impl Sink for CsvSink {
    fn start(&mut self, _start: &Start) -> io::Result<()> {
        self.header()
    }

    fn transition(&mut self, t: &Transition) -> io::Result<()> {
        self.header()?;
        self.begin("transition", t.time);
        self.u64_field(u64::from(t.pid));
        self.line.push(b',');
        push_field(&mut self.line, t.comm.as_bytes());
        self.u64_field(t.socket);
        self.field(t.family.name().as_bytes());
        self.field(AddrText::ip(t.saddr).as_bytes());
        self.u64_field(u64::from(t.sport));
        self.field(AddrText::ip(t.daddr).as_bytes());
        self.u64_field(u64::from(t.dport));
        self.field(t.oldstate.name().as_bytes());
        self.field(t.newstate.name().as_bytes());
        self.line.push(b',');
        if let Some(ns) = t.prev_state_ns {
            push_micros(&mut self.line, ns);
        }
        // Empty count and cause.
        self.line.extend_from_slice(b",,\n");
        self.out.write_all(&self.line)
    }

    fn lost(&mut self, lost: &Lost) -> io::Result<()> {
        self.header()?;
        self.begin("lost", lost.time);
        // Empty pid through prev_state_us: eleven fields.
        self.line.extend_from_slice(&[b','; 11]);
        self.u64_field(lost.count);
        self.field(lost.cause.name().as_bytes());
        self.line.push(b'\n');
        self.out.write_all(&self.line)
    }

    fn end(&mut self, _summary: &Summary) -> io::Result<()> {
        self.header()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
