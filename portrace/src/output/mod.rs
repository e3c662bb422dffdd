//! Output formats: this module owns how records reach the user. It defines the [`Sink`]
//! every format implements (text for people, JSON lines and CSV for programs), the
//! [`sink`] constructor the caller picks a format with, and the small allocation-free
//! pieces the formats share: integers, addresses and microsecond fractions rendered into
//! a reused line buffer, and string escaping for `comm`, which can hold any bytes.
//!
//! Every format builds one line at a time in a buffer it keeps for the whole run, then
//! hands the line to the writer in a single call; nothing is allocated per event.

mod csv;
mod json;
mod text;

use std::fmt;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};

use crate::clock::Zone;
use crate::record::{Lost, Timestamp, Transition};
use crate::summary::Summary;

pub use json::SCHEMA as JSON_SCHEMA;

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
}

/// A destination for records in one format. The caller calls `start` once, then
/// `transition` and `lost` as records arrive, then `end` once; `flush` at any time.
pub trait Sink {
    fn start(&mut self, start: &Start) -> io::Result<()>;
    fn transition(&mut self, t: &Transition) -> io::Result<()>;
    fn lost(&mut self, lost: &Lost) -> io::Result<()>;
    fn end(&mut self, summary: &Summary) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
}

/// Options of the text format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TextOptions {
    /// Colour the new state, lost lines and headers with ANSI escapes.
    pub color: bool,
    /// The time zone the TIME column is shown in.
    pub zone: Zone,
}

impl TextOptions {
    /// Local time in the system's time zone, coloured or not.
    pub fn system(color: bool) -> TextOptions {
        TextOptions { color, zone: Zone::Local }
    }
}

/// A sink writing `format` to `out`. `text` only matters for [`Format::Text`]. `out` should
/// be buffered: sinks write one line per call.
pub fn sink(format: Format, out: Box<dyn Write + Send>, text: TextOptions) -> Box<dyn Sink + Send> {
    match format {
        Format::Text => Box::new(text::TextSink::new(out, text)),
        Format::Json => Box::new(json::JsonSink::new(out)),
        Format::Csv => Box::new(csv::CsvSink::new(out)),
    }
}

/// Appends the decimal digits of `n`.
fn push_u64(buf: &mut Vec<u8>, n: u64) {
    buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
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

    /// Dotted quad by hand: this is on the per-event path of every format.
    fn push_ipv4(&mut self, v4: Ipv4Addr) {
        for (i, octet) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                self.push(b".");
            }
            self.push(itoa::Buffer::new().format(octet).as_bytes());
        }
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

impl fmt::Write for AddrText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.len + s.len() > Self::CAP {
            return Err(fmt::Error);
        }
        self.push(s.as_bytes());
        Ok(())
    }
}

const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// Appends `bytes` as the inside of a JSON string: `"` and `\` escaped, control
/// characters as `\u00XX`, invalid UTF-8 replaced by U+FFFD (one per maximal invalid
/// sequence, as `String::from_utf8_lossy` does).
fn push_json_str(buf: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid().as_bytes();
        let mut clean_from = 0;
        for (i, &b) in valid.iter().enumerate() {
            let escape: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                0x00..=0x1f | 0x7f => {
                    &[b'\\', b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]
                }
                _ => continue,
            };
            buf.extend_from_slice(&valid[clean_from..i]);
            buf.extend_from_slice(escape);
            clean_from = i + 1;
        }
        buf.extend_from_slice(&valid[clean_from..]);
        if !chunk.invalid().is_empty() {
            buf.extend_from_slice(REPLACEMENT);
        }
    }
}

/// Appends `bytes` as text with invalid UTF-8 replaced by U+FFFD and nothing escaped.
fn push_lossy(buf: &mut Vec<u8>, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        buf.extend_from_slice(chunk.valid().as_bytes());
        if !chunk.invalid().is_empty() {
            buf.extend_from_slice(REPLACEMENT);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::record::{Comm, Family, LossCause};
    use crate::tcp_state::TcpState::{self, *};

    /// A writer the test keeps a handle on after giving the sink its own.
    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl SharedBuf {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).expect("output is UTF-8")
        }
    }

    /// 2026-11-29T02:41:07.123456789Z, when the kernel's monotonic clock read 123456789.
    const UNIX0: i128 = 1_795_920_067_123_456_789;
    const MONO0: u64 = 123_456_789;
    /// UTC+01:00, so that local times differ visibly from the UTC ones.
    const ZONE: Zone = Zone::Fixed(3600);

    fn at(after_ns: u64) -> Timestamp {
        Timestamp { mono_ns: MONO0 + after_ns, unix_ns: UNIX0 + i128::from(after_ns) }
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[allow(clippy::too_many_arguments, reason = "a test fixture spelling out every field")]
    fn tr(
        after_ns: u64,
        pid: u32,
        comm: Comm,
        socket: u64,
        (saddr, sport): (IpAddr, u16),
        (daddr, dport): (IpAddr, u16),
        (oldstate, newstate): (TcpState, TcpState),
        prev_state_ns: Option<u64>,
    ) -> Transition {
        let family = if saddr.is_ipv6() { Family::Ipv6 } else { Family::Ipv4 };
        Transition {
            time: at(after_ns),
            pid,
            comm,
            socket,
            family,
            saddr,
            sport,
            daddr,
            dport,
            oldstate,
            newstate,
            prev_state_ns,
        }
    }

    enum Event {
        T(Transition),
        L(Lost),
    }

    /// A comm with a comma, a quote, an invalid UTF-8 byte and a control character.
    fn odd_comm() -> Comm {
        Comm::from_kernel(b"a,b\"c\xff\x01d\0\0\0\0\0\0\0\0")
    }

    fn events() -> Vec<Event> {
        let lo = v4(127, 0, 0, 1);
        let v6_short: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let v6_long: IpAddr = "2001:db8:85a3:1234:5678:8a2e:370:7334".parse().unwrap();
        let v6_peer: IpAddr = "2001:db8::2".parse().unwrap();
        let curl = Comm::new("curl");
        vec![
            // Connect from CLOSE: portrace did not see the socket enter CLOSE.
            Event::T(tr(0, 4242, curl, 7, (lo, 54321), (lo, 8080), (Close, SynSent), None)),
            Event::T(tr(
                84_123,
                4242,
                curl,
                7,
                (lo, 54321),
                (lo, 8080),
                (SynSent, Established),
                Some(84_123),
            )),
            // A v4 client of a dual-stack listener, already shown as IPv4.
            Event::T(tr(
                1_000_000,
                911,
                Comm::new("sshd"),
                12,
                (v4(10, 0, 0, 5), 22),
                (v4(192, 168, 1, 20), 51234),
                (Established, CloseWait),
                Some(123_000_000_000),
            )),
            // The widest IPv4 text, in a process with an awkward name; a very short duration.
            Event::T(tr(
                1_500_000,
                4_194_304,
                odd_comm(),
                123_456,
                (v4(255, 255, 255, 255), 65535),
                (v4(10, 1, 2, 3), 443),
                (FinWait1, FinWait2),
                Some(850),
            )),
            Event::L(Lost { time: at(2_000_000), count: 12, cause: LossCause::RingFull }),
            // A short IPv6 address fits the starting width.
            Event::T(tr(
                2_500_000,
                300,
                Comm::new("nginx"),
                31,
                (v6_short, 8080),
                (v6_short, 40000),
                (SynRecv, Established),
                Some(3_219),
            )),
            // A long one widens LOCAL, then REMOTE grows for a longer peer.
            Event::T(tr(
                3_000_000,
                300,
                Comm::new("nginx"),
                32,
                (v6_long, 443),
                (v6_peer, 50000),
                (Listen, SynRecv),
                Some(1_234_567),
            )),
            Event::T(tr(
                3_500_000,
                300,
                Comm::new("nginx"),
                33,
                (v6_peer, 443),
                (v6_long, 65535),
                (Established, FinWait1),
                Some(12_345_678),
            )),
            // A very long duration, from the TIME_WAIT of a socket seen days ago.
            Event::T(tr(
                4_000_000,
                0,
                Comm::new("swapper/3"),
                7,
                (lo, 54321),
                (lo, 8080),
                (TimeWait, Close),
                Some(273_600_000_000_000),
            )),
            Event::L(Lost { time: at(4_500_000), count: 1, cause: LossCause::Skipped }),
            Event::L(Lost { time: at(5_000_000), count: 3, cause: LossCause::Malformed }),
            Event::T(tr(
                5_500_000,
                4242,
                curl,
                7,
                (lo, 54321),
                (lo, 8080),
                (SynSent, Close),
                Some(1_500_000_000),
            )),
        ]
    }

    fn start_record() -> Start {
        Start { time: at(0), host: "web-1".into(), kernel: "6.1.0-28-amd64".into() }
    }

    /// Feeds the start record, every event, and the end record to a fresh sink.
    fn render(format: Format, text: TextOptions) -> String {
        let buf = SharedBuf::default();
        let mut sink = sink(format, Box::new(buf.clone()), text);
        let mut summary = Summary::new(at(0));
        sink.start(&start_record()).unwrap();
        for event in events() {
            match event {
                Event::T(t) => {
                    summary.add_transition(&t);
                    sink.transition(&t).unwrap();
                }
                Event::L(l) => {
                    summary.add_lost(&l);
                    sink.lost(&l).unwrap();
                }
            }
        }
        summary.finish(at(6_000_000));
        sink.end(&summary).unwrap();
        sink.flush().unwrap();
        // Snapshots must not change with every release.
        buf.text().replace(&format!("\"portrace\":\"{VERSION}\""), "\"portrace\":\"[version]\"")
    }

    fn plain() -> TextOptions {
        TextOptions { color: false, zone: ZONE }
    }

    fn colored() -> TextOptions {
        TextOptions { color: true, zone: ZONE }
    }

    /// Removes ANSI SGR sequences (`ESC [ ... m`).
    fn strip_ansi(text: &str) -> String {
        let mut out = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                assert_eq!(chars.next(), Some('['));
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                    assert!(c.is_ascii_digit() || c == ';', "unexpected escape {c:?}");
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn text_snapshot() {
        insta::assert_snapshot!(render(Format::Text, plain()));
    }

    #[test]
    fn text_color_snapshot() {
        // Escapes shown visibly so the snapshot can be reviewed.
        insta::assert_snapshot!(render(Format::Text, colored()).replace('\x1b', "<ESC>"));
    }

    #[test]
    fn json_snapshot() {
        insta::assert_snapshot!(render(Format::Json, plain()));
    }

    #[test]
    fn csv_snapshot() {
        insta::assert_snapshot!(render(Format::Csv, plain()));
    }

    #[test]
    fn colour_only_adds_escapes() {
        let colored = render(Format::Text, colored());
        assert!(colored.contains("\x1b[32mESTABLISHED\x1b[0m"), "{colored}");
        assert!(colored.contains("\x1b[1;31m** 12 transitions lost"), "{colored}");
        assert!(colored.starts_with("\x1b[1mTIME"), "{colored}");
        // Padding is computed on the visible text: without the escapes the lines are
        // exactly the plain ones.
        assert_eq!(strip_ansi(&colored), render(Format::Text, plain()));
    }

    /// Where each header label starts and ends, by byte offset.
    fn label_spans(header: &str) -> Vec<(&str, usize, usize)> {
        let mut spans = Vec::new();
        let mut offset = 0;
        for word in header.split(' ') {
            if !word.is_empty() {
                spans.push((word, offset, offset + word.len()));
            }
            offset += word.len() + 1;
        }
        spans
    }

    #[test]
    fn text_reprints_the_header_when_columns_widen_and_stays_aligned() {
        let out = render(Format::Text, plain());
        let lines: Vec<&str> = out.lines().collect();
        let headers: Vec<usize> =
            (0..lines.len()).filter(|&i| lines[i].starts_with("TIME ")).collect();
        // First transition; the long IPv6 local address; the long IPv6 remote address.
        assert_eq!(headers.len(), 3, "{out}");
        assert_eq!(headers[0], 0, "{out}");
        assert!(lines[headers[1] + 1].contains("[2001:db8:85a3:1234:5678:8a2e:370:7334]:443 "));
        assert!(lines[headers[2] + 1].contains(" [2001:db8:85a3:1234:5678:8a2e:370:7334]:65535 "));
        assert_eq!(
            lines[0],
            "TIME                PID COMM            SOCKET LOCAL                  REMOTE                 \
             TRANSITION                  PREV"
        );

        let mut widths_seen = Vec::new();
        for (n, &h) in headers.iter().enumerate() {
            let spans = label_spans(lines[h]);
            let names: Vec<&str> = spans.iter().map(|s| s.0).collect();
            assert_eq!(
                names,
                ["TIME", "PID", "COMM", "SOCKET", "LOCAL", "REMOTE", "TRANSITION", "PREV"]
            );
            widths_seen.push(lines[h].len());
            let below_end = headers.get(n + 1).copied().unwrap_or(lines.len());
            let mut checked = 0;
            for line in &lines[h + 1..below_end] {
                if line.contains(" ** ") {
                    continue; // lost lines are not columnar
                }
                checked += 1;
                let bytes = line.as_bytes();
                for &(name, start, end) in &spans {
                    let is_space = |i: usize| bytes.get(i).is_none_or(|&b| b == b' ');
                    match name {
                        // Right-aligned: the value ends where the label ends.
                        "PID" | "SOCKET" | "PREV" => {
                            assert!(!is_space(end - 1) && is_space(end), "{name} in {line:?}")
                        }
                        // Left-aligned: the value starts where the label starts.
                        _ => assert!(
                            !is_space(start) && (start == 0 || is_space(start - 1)),
                            "{name} in {line:?}"
                        ),
                    }
                }
                assert_eq!(line.len(), lines[h].len(), "{line:?} under {:?}", lines[h]);
            }
            assert!(checked > 0, "header {n} has lines under it");
        }
        // Columns only ever grow.
        assert!(widths_seen.windows(2).all(|w| w[0] < w[1]), "{widths_seen:?}");
    }

    #[test]
    fn text_shows_unknown_durations_and_safe_comms() {
        let out = render(Format::Text, plain());
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[1].starts_with("03:41:07.123456    4242 curl "), "{}", lines[1]);
        assert!(
            lines[1].ends_with(&format!("CLOSE -> SYN_SENT{}?", " ".repeat(14))),
            "{}",
            lines[1]
        );
        assert!(out.contains(" 4194304 a,b\"c??d        123456 255.255.255.255:65535  "), "{out}");
        assert!(out.contains(
            "03:41:07.125456 ** 12 transitions lost: ring buffer full (try a larger --ring-size)\n"
        ));
        assert!(out.contains("** 1 transition lost: skipped by the kernel (another BPF program was running on that CPU)\n"));
        assert!(out.contains("** 3 transitions lost: malformed records\n"));
        assert!(!out.contains("web-1"), "the start record prints nothing");
    }

    const START_KEYS: &[&str] = &["type", "schema", "portrace", "time", "ts_ns", "host", "kernel"];
    const TRANSITION_KEYS: &[&str] = &[
        "type",
        "time",
        "ts_ns",
        "pid",
        "comm",
        "socket",
        "family",
        "saddr",
        "sport",
        "daddr",
        "dport",
        "oldstate",
        "newstate",
        "prev_state_us",
    ];
    const LOST_KEYS: &[&str] = &["type", "time", "ts_ns", "count", "cause"];
    const END_KEYS: &[&str] =
        &["type", "time", "ts_ns", "transitions", "lost", "lost_by_cause", "by_transition"];

    #[test]
    fn every_json_line_parses_with_the_documented_keys_in_order() {
        let out = render(Format::Json, plain());
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), events().len() + 2);
        for value in &lines {
            let object = value.as_object().expect("each line is an object");
            let keys: Vec<&str> = object.keys().map(String::as_str).collect();
            let want = match object["type"].as_str().unwrap() {
                "start" => START_KEYS,
                "transition" => TRANSITION_KEYS,
                "lost" => LOST_KEYS,
                "end" => END_KEYS,
                other => panic!("unknown type {other}"),
            };
            assert_eq!(keys, want);
        }

        let start = &lines[0];
        assert_eq!(start["schema"], 1);
        assert_eq!(start["portrace"], "[version]");
        assert_eq!(start["time"], "2026-11-29T02:41:07.123456Z");
        assert_eq!(start["ts_ns"], MONO0);
        assert_eq!(start["kernel"], "6.1.0-28-amd64");

        let unknown = &lines[1];
        assert_eq!(unknown["oldstate"], "CLOSE");
        assert!(unknown["prev_state_us"].is_null());
        let connect = &lines[2];
        assert_eq!(connect["prev_state_us"].as_f64(), Some(84.123));
        assert!(out.contains("\"prev_state_us\":84.123}"), "exactly three decimals");
        assert!(out.contains("\"prev_state_us\":0.850}"), "exactly three decimals");
        assert_eq!(connect["time"], "2026-11-29T02:41:07.123540Z");
        assert_eq!(connect["ts_ns"], MONO0 + 84_123);
        let odd = &lines[4];
        assert_eq!(odd["comm"], "a,b\"c\u{fffd}\u{1}d");
        assert_eq!(odd["saddr"], "255.255.255.255");
        let v6 = &lines[7];
        assert_eq!(v6["family"], "ipv6");
        assert_eq!(v6["saddr"], "2001:db8:85a3:1234:5678:8a2e:370:7334");
        assert_eq!(v6["daddr"], "2001:db8::2");
        assert_eq!(lines[6]["saddr"], "::1");

        let end = lines.last().unwrap();
        assert_eq!(end["transitions"], 9);
        assert_eq!(end["lost"], 16);
        assert_eq!(
            end["lost_by_cause"],
            serde_json::json!({"ring_full": 12, "skipped": 1, "malformed": 3})
        );
        let kinds: Vec<&str> =
            end["by_transition"].as_object().unwrap().keys().map(String::as_str).collect();
        // By (old, new) kernel number: ESTABLISHED 1, SYN_SENT 2, SYN_RECV 3, FIN_WAIT1 4,
        // TIME_WAIT 6, CLOSE 7, LISTEN 10.
        assert_eq!(
            kinds,
            [
                "ESTABLISHED->FIN_WAIT1",
                "ESTABLISHED->CLOSE_WAIT",
                "SYN_SENT->ESTABLISHED",
                "SYN_SENT->CLOSE",
                "SYN_RECV->ESTABLISHED",
                "FIN_WAIT1->FIN_WAIT2",
                "TIME_WAIT->CLOSE",
                "CLOSE->SYN_SENT",
                "LISTEN->SYN_RECV",
            ]
        );
    }

    #[test]
    fn json_strings_escape_every_byte_safely() {
        let mut buf = Vec::new();
        let all: Vec<u8> = (0u8..=255).collect();
        push_json_str(&mut buf, &all);
        let text = format!("\"{}\"", String::from_utf8(buf.clone()).expect("valid UTF-8"));
        let parsed: String = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, String::from_utf8_lossy(&all));
        assert!(text.contains(r#"\u0000\u0001"#) && text.contains(r##"\u001f !\"#$"##), "{text}");
        assert!(text.contains(r"[\\]") && text.contains(r"~\u007f"), "{text}");

        buf.clear();
        push_json_str(&mut buf, "héllo\u{2028}".as_bytes());
        assert_eq!(buf, "héllo\u{2028}".as_bytes(), "valid UTF-8 passes through");
        buf.clear();
        // A truncated three-byte sequence, then a lone continuation byte: two replacements.
        push_json_str(&mut buf, b"x\xe2\x82y\x80");
        assert_eq!(String::from_utf8(buf).unwrap(), "x\u{fffd}y\u{fffd}");
    }

    /// A strict RFC 4180 reader for the test: rows of fields, quotes doubled inside
    /// quoted fields, rows ending in `\n`.
    fn parse_csv(text: &str) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        let mut row = Vec::new();
        let mut field = String::new();
        let mut chars = text.chars().peekable();
        let mut quoted = false;
        while let Some(c) = chars.next() {
            match (quoted, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                (true, '"') => quoted = false,
                (true, c) => field.push(c),
                (false, '"') => {
                    assert!(field.is_empty(), "quote inside an unquoted field");
                    quoted = true;
                }
                (false, ',') => row.push(std::mem::take(&mut field)),
                (false, '\n') => {
                    row.push(std::mem::take(&mut field));
                    rows.push(std::mem::take(&mut row));
                }
                (false, c) => field.push(c),
            }
        }
        assert!(!quoted && field.is_empty() && row.is_empty(), "text ends with a full row");
        rows
    }

    #[test]
    fn csv_rows_have_every_column() {
        let out = render(Format::Csv, plain());
        let rows = parse_csv(&out);
        let header: Vec<&str> = csv::HEADER.trim_end().split(',').collect();
        assert_eq!(rows[0], header);
        assert_eq!(rows.len(), events().len() + 1, "no start or end rows");
        for row in &rows {
            assert_eq!(row.len(), 16, "{row:?}");
        }
        let odd = &rows[4];
        assert_eq!(odd[0], "transition");
        assert_eq!(odd[4], "a,b\"c\u{fffd}\u{1}d");
        assert_eq!(odd[13], "0.850");
        assert_eq!(&odd[14..], ["", ""]);
        let lost = &rows[5];
        assert_eq!(lost[0], "lost");
        assert_eq!(lost[1], "2026-11-29T02:41:07.125456Z");
        assert!(lost[3..14].iter().all(String::is_empty), "{lost:?}");
        assert_eq!(&lost[14..], ["12", "ring_full"]);
        assert_eq!(rows[1][13], "", "unknown prev is empty");
    }

    #[test]
    fn csv_quotes_only_when_needed() {
        let mut buf = Vec::new();
        csv::push_field(&mut buf, b"plain name");
        buf.push(b'|');
        csv::push_field(&mut buf, b"\"q\"");
        buf.push(b'|');
        csv::push_field(&mut buf, b"two\r\nlines");
        assert_eq!(String::from_utf8(buf).unwrap(), "plain name|\"\"\"q\"\"\"|\"two\r\nlines\"");
    }

    #[test]
    fn csv_header_is_written_once_even_without_start() {
        let buf = SharedBuf::default();
        let mut sink = sink(Format::Csv, Box::new(buf.clone()), TextOptions::default());
        sink.lost(&Lost { time: at(0), count: 2, cause: LossCause::Skipped }).unwrap();
        sink.end(&Summary::new(at(0))).unwrap();
        let out = buf.text();
        assert_eq!(out.matches("type,time").count(), 1, "{out}");
        assert!(out.starts_with(csv::HEADER));
    }

    #[test]
    fn addresses_render_like_std() {
        let cases: [IpAddr; 6] = [
            v4(0, 0, 0, 0),
            v4(255, 255, 255, 255),
            v4(10, 20, 0, 7),
            "::".parse().unwrap(),
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
            "::ffff:192.0.2.1".parse().unwrap(),
        ];
        for addr in cases {
            assert_eq!(AddrText::ip(addr).as_bytes(), addr.to_string().as_bytes());
            assert_eq!(
                AddrText::with_port(addr, 65535).as_bytes(),
                std::net::SocketAddr::new(addr, 65535).to_string().as_bytes()
            );
        }
        let widest = AddrText::with_port(cases[4], 65535);
        assert_eq!(widest.as_bytes().len(), 47);
        assert_eq!(AddrText::with_port(cases[1], 65535).as_bytes().len(), 21);
    }

    #[test]
    fn micros_have_three_decimals() {
        let render = |ns| {
            let mut buf = Vec::new();
            push_micros(&mut buf, ns);
            String::from_utf8(buf).unwrap()
        };
        assert_eq!(render(0), "0.000");
        assert_eq!(render(7), "0.007");
        assert_eq!(render(84_123), "84.123");
        assert_eq!(render(1_000_000), "1000.000");
        assert_eq!(render(u64::MAX), "18446744073709551.615");
    }

    /// Throughput of the JSON path to a buffered file. Run it optimised:
    /// `cargo test -p portrace --release --lib -- --ignored json_throughput --nocapture`.
    #[test]
    #[ignore = "a benchmark; only meaningful in a release build"]
    fn json_throughput() {
        let path = std::env::temp_dir().join(format!("portrace-json-bench-{}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let mut sink =
            sink(Format::Json, Box::new(io::BufWriter::new(file)), TextOptions::default());
        let sample: Vec<Transition> = events()
            .into_iter()
            .filter_map(|e| match e {
                Event::T(t) => Some(t),
                Event::L(_) => None,
            })
            .collect();
        const N: usize = 3_000_000;
        let started = std::time::Instant::now();
        for i in 0..N {
            sink.transition(&sample[i % sample.len()]).unwrap();
        }
        sink.flush().unwrap();
        let elapsed = started.elapsed();
        let size = std::fs::metadata(&path).unwrap().len();
        std::fs::remove_file(&path).unwrap();
        let rate = N as f64 / elapsed.as_secs_f64();
        println!("{rate:.0} events/s, {:.0} MB/s", size as f64 / elapsed.as_secs_f64() / 1e6);
        if !cfg!(debug_assertions) {
            assert!(rate > 1_000_000.0, "{rate:.0} events/s");
        }
    }
}
