//! Output formats: this module owns how records reach the user. It defines the [`Sink`]
//! every format implements (text for people, JSON lines and CSV for programs), the
//! [`sink`] constructor the caller picks a format with, and the small allocation-free
//! pieces the formats share: addresses and microsecond fractions rendered into a reused
//! line buffer (integers, errno names and JSON string escaping come from [`crate::format`]).
//!
//! Every format builds one line at a time in a buffer it keeps for the whole run, then
//! hands the line to the writer in a single call; nothing is allocated per event.

mod alert;
mod csv;
mod json;
mod tee;
mod text;

pub(crate) use alert::{process_line, push_alert_json, push_alert_text, push_printable};

use std::fmt;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};

use crate::clock::Zone;
use crate::features::Features;
use crate::format::json::{push_str, push_u64, Controls};
use crate::format::line::{push_fixed, push_with};
use crate::record::{Alert, Lost, NetnsInfo, ProcessInfo, SocketRecord, Timestamp, Transition};
use crate::summary::Summary;

pub use json::SCHEMA as JSON_SCHEMA;
pub use tee::Tee;

/// portrace's version, as written in the JSON start record.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// An output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for people, local time.
    Text,
    /// One JSON object per line (schema documented in docs/json.md).
    Json,
    /// Comma-separated values with a header row.
    Csv,
}

/// What is known when tracing starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Start {
    pub time: Timestamp,
    /// The host name.
    pub host: String,
    /// The kernel release (`uname -r`).
    pub kernel: String,
    /// What works on this kernel and what does not; empty when unknown (a snapshot, a
    /// recording made before portrace wrote them).
    pub features: Features,
}

/// A destination for records in one format. The caller calls `start` once, then `socket`
/// for each socket of the start-up inventory, then `transition` and `lost` as records
/// arrive, then `end` once; `flush` at any time. A snapshot run (`portrace --snapshot`)
/// calls only `start`, `socket` and `end`. A `process` record comes before the first socket
/// or transition owned by its pid, a `netns` record before the first one in its namespace.
pub trait Sink {
    fn start(&mut self, start: &Start) -> io::Result<()>;
    /// A socket that existed when tracing started.
    fn socket(&mut self, s: &SocketRecord) -> io::Result<()>;
    /// Details of a process first seen owning a socket. Formats that show only the
    /// owner's pid and command name ignore it.
    fn process(&mut self, _p: &ProcessInfo) -> io::Result<()> {
        Ok(())
    }
    /// Details of a network namespace first seen. Formats without a place for them
    /// ignore it.
    fn netns(&mut self, _n: &NetnsInfo) -> io::Result<()> {
        Ok(())
    }
    /// A cgroup first seen as an owner's: its id and path. Formats without a place for it
    /// ignore it.
    fn cgroup(&mut self, _g: &crate::record::CgroupInfo) -> io::Result<()> {
        Ok(())
    }
    fn transition(&mut self, t: &Transition) -> io::Result<()>;
    fn lost(&mut self, lost: &Lost) -> io::Result<()>;
    /// An alert the records so far raised (the alerts module's detectors). Formats
    /// without a place for alerts ignore it.
    fn alert(&mut self, _alert: &Alert) -> io::Result<()> {
        Ok(())
    }
    /// A live run read `read` from the kernel's ring buffer at once: how full it was.
    /// Only the metrics use it.
    fn ring_read(&mut self, _read: &RingRead) -> io::Result<()> {
        Ok(())
    }
    /// Trace time has reached `now` with no record (a live run calls it on every poll of
    /// the ring buffer), so that time-based alerts can fire.
    fn tick(&mut self, _now: Timestamp) -> io::Result<()> {
        Ok(())
    }
    fn end(&mut self, summary: &Summary) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
}

/// One read of the kernel's ring buffer: what it held when read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingRead {
    /// Records read.
    pub records: u64,
    /// The bytes they took in the ring (each record's 8-byte header, and its data rounded
    /// up to 8 bytes).
    pub bytes: u64,
    /// The ring's size.
    pub size: u32,
}

impl RingRead {
    /// The ring's bytes a record of `len` data bytes takes.
    pub fn bytes_of(len: usize) -> u64 {
        8 + (len as u64).div_ceil(8) * 8
    }

    /// Counts one record of `len` data bytes read.
    pub fn add(&mut self, len: usize) {
        self.records += 1;
        self.bytes += RingRead::bytes_of(len);
    }

    /// How full the ring was, as a share of its size (at most 1).
    pub fn fill(&self) -> f64 {
        if self.size == 0 {
            return 0.0;
        }
        (self.bytes as f64 / f64::from(self.size)).min(1.0)
    }
}

/// Options of the text format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TextOptions {
    /// Colour the new state, lost lines and headers with ANSI escapes.
    pub color: bool,
    /// The time zone the TIME column is shown in.
    pub zone: Zone,
    /// `--explain`: add each transition's cause in plain words (text, and JSON's `explain`).
    pub explain: bool,
}

impl TextOptions {
    /// Local time in the system's time zone, coloured or not.
    pub fn system(color: bool) -> TextOptions {
        TextOptions { color, zone: Zone::Local, explain: false }
    }
}

/// A sink writing `format` to `out`. `text` only matters for [`Format::Text`], but for
/// `explain`, which JSON honours too (CSV has no column for it). `out` should
/// be buffered: sinks write one line per call.
pub fn sink(format: Format, out: Box<dyn Write + Send>, text: TextOptions) -> Box<dyn Sink + Send> {
    match format {
        Format::Text => Box::new(text::TextSink::new(out, text)),
        Format::Json => Box::new(json::JsonSink::new(out, text.explain)),
        Format::Csv => Box::new(csv::CsvSink::new(out)),
    }
}

/// Appends a nanosecond count as microseconds with exactly three decimals (`84.123`).
fn push_micros(buf: &mut Vec<u8>, ns: u64) {
    push_u64(buf, ns / 1_000);
    let frac = ns % 1_000;
    buf.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// An address (`10.0.0.1`, `2001:db8::1`) or address and port (`10.0.0.1:80`,
/// `[2001:db8::1]:80`) rendered on the stack.
#[derive(Clone, Copy)]
struct AddrText {
    buf: [u8; AddrText::CAP],
    len: usize,
}

impl AddrText {
    /// `[` + the longest IPv6 text (39) + `]:` + 5 port digits = 47.
    const CAP: usize = 48;

    fn empty() -> AddrText {
        AddrText { buf: [0; Self::CAP], len: 0 }
    }

    /// The address alone; IPv6 in RFC 5952 compressed form.
    fn ip(addr: IpAddr) -> AddrText {
        let mut text = AddrText::empty();
        text.push_ip(addr);
        text
    }

    /// `addr:port`, with an IPv6 address in brackets.
    fn with_port(addr: IpAddr, port: u16) -> AddrText {
        let mut text = AddrText::empty();
        if addr.is_ipv6() {
            text.push(b"[");
            text.push_ip(addr);
            text.push(b"]:");
        } else {
            text.push_ip(addr);
            text.push(b":");
        }
        text.push(itoa::Buffer::new().format(port).as_bytes());
        text
    }

    fn push_ip(&mut self, addr: IpAddr) {
        match addr {
            IpAddr::V4(v4) => self.push_ipv4(v4),
            IpAddr::V6(v6) => {
                // std's Display for Ipv6Addr implements RFC 5952 (compression of the
                // longest zero run, lower case, `::ffff:a.b.c.d` for v4-mapped) and does
                // not allocate; the text always fits, so the write cannot fail.
                let written = fmt::Write::write_fmt(self, format_args!("{v6}"));
                debug_assert!(written.is_ok());
            }
        }
    }

    fn push_ipv4(&mut self, v4: Ipv4Addr) {
        self.len += put_ipv4(&mut self.buf[self.len..], v4);
    }

    fn push(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        self.buf[self.len..end].copy_from_slice(bytes);
        self.len = end;
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

}

/// Dotted quad by hand, written at the start of `out` (which has room for 15 bytes);
/// returns its length. This is on the per-event path of every format.
#[inline]
fn put_ipv4(out: &mut [u8], v4: Ipv4Addr) -> usize {
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            out[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            out[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        out[len] = b'0' + octet % 10;
        len += 1;
    }
    len
}

/// Appends an address as [`AddrText::ip`] renders it: an IPv4 address straight into the
/// line ([`push_with`]), an IPv6 one through the stack.
#[inline(always)]
fn push_ip(line: &mut Vec<u8>, addr: IpAddr) {
    match addr {
        IpAddr::V4(v4) => push_with::<15>(line, |out| put_ipv4(out, v4)),
        IpAddr::V6(_) => {
            let text = AddrText::ip(addr);
            push_fixed(line, &text.buf, text.len);
        }
    }
}

impl fmt::Write for AddrText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.len + s.len() > Self::CAP {
            return Err(fmt::Error);
        }
        self.push(s.as_bytes());
        Ok(())
    }
}

/// Appends `bytes` as the inside of a JSON string, as every line of the stream escapes
/// it: C0, DEL and C1 controls as `\u00XX` ([`Controls::C0AndC1`]).
fn push_json_str(buf: &mut Vec<u8>, bytes: &[u8]) {
    push_str(buf, bytes, Controls::C0AndC1);
}

#[cfg(test)]
mod tests;
