//! JSON text: the string escaping and integers every JSON portrace writes shares, and
//! [`Writer`], which writes a document member by member (the report, alerts and the
//! alert section). The JSON lines of the event stream build each line in a reused buffer
//! with [`push_str`] and [`push_u64`] directly, so that nothing is allocated per event.

use std::io::{self, Write};
use std::net::IpAddr;

use crate::clock::Rfc3339;
use crate::record::Timestamp;

/// Which control characters a string escapes as `\u00XX`, beside `"` and `\`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Controls {
    /// C0 and DEL: the report's document.
    C0,
    /// C0, DEL and C1 (which some terminals obey): the JSON lines stream and its alerts.
    C0AndC1,
}

pub use super::line::push_u64;

const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// Whether [`push_str`] copies `bytes` unchanged whatever the `controls`: printable ASCII
/// but `"` and `\`. Lets a writer copy such text (nearly every process name) without the
/// escaping pass.
#[inline]
pub fn needs_no_escape(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| matches!(b, b' '..=b'~') && b != b'"' && b != b'\\')
}

/// Appends `bytes` as the inside of a JSON string: `"` and `\` escaped, the `controls`
/// as `\u00XX`, invalid UTF-8 replaced by U+FFFD (one per maximal invalid sequence, as
/// `String::from_utf8_lossy` does).
#[inline]
pub fn push_str(buf: &mut Vec<u8>, bytes: &[u8], controls: Controls) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let c1 = controls == Controls::C0AndC1;
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid().as_bytes();
        let mut clean_from = 0;
        let mut i = 0;
        while i < valid.len() {
            let b = valid[i];
            // A C1 control is 0xC2 then 0x80..=0x9F in UTF-8: escaped as its code point.
            let (code, len) = match (b, valid.get(i + 1)) {
                (0xc2, Some(&next @ 0x80..=0x9f)) if c1 => (next, 2),
                _ => (b, 1),
            };
            let escape: &[u8] = match (code, len) {
                (b'"', 1) => b"\\\"",
                (b'\\', 1) => b"\\\\",
                (0x00..=0x1f | 0x7f, 1) | (_, 2) => {
                    &[b'\\', b'u', b'0', b'0', HEX[usize::from(code >> 4)], HEX[usize::from(code & 0xf)]]
                }
                _ => {
                    i += 1;
                    continue;
                }
            };
            buf.extend_from_slice(&valid[clean_from..i]);
            buf.extend_from_slice(escape);
            i += len;
            clean_from = i;
        }
        buf.extend_from_slice(&valid[clean_from..]);
        if !chunk.invalid().is_empty() {
            buf.extend_from_slice(REPLACEMENT);
        }
    }
}

/// A streaming JSON writer that places the commas: `key` then one value, or values in an
/// array.
pub struct Writer<W: Write> {
    w: W,
    /// A value was written at this level: the next one needs a comma.
    comma: bool,
    controls: Controls,
}

impl<W: Write> Writer<W> {
    /// A writer whose strings escape C0 and DEL ([`Controls::C0`]): the report's.
    pub fn new(w: W) -> Writer<W> {
        Writer { w, comma: false, controls: Controls::C0 }
    }

    /// A writer whose strings escape C1 controls too, as the JSON lines stream does.
    pub fn stream(w: W) -> Writer<W> {
        Writer { w, comma: false, controls: Controls::C0AndC1 }
    }

    /// The writer written to.
    pub fn into_inner(self) -> W {
        self.w
    }

    /// Writes a comma when a value came before at this level.
    pub fn sep(&mut self) -> io::Result<()> {
        if self.comma {
            self.w.write_all(b",")?;
        }
        self.comma = true;
        Ok(())
    }

    /// Opens an object (`b'{'`) or array (`b'['`) as the next value.
    pub fn open(&mut self, bracket: u8) -> io::Result<()> {
        self.sep()?;
        self.w.write_all(&[bracket])?;
        self.comma = false;
        Ok(())
    }

    pub fn close(&mut self, bracket: u8) -> io::Result<()> {
        self.w.write_all(&[bracket])?;
        self.comma = true;
        Ok(())
    }

    /// A member's key; its value comes next.
    pub fn key(&mut self, key: &str) -> io::Result<()> {
        self.sep()?;
        self.w.write_all(b"\"")?;
        self.w.write_all(key.as_bytes())?;
        self.w.write_all(b"\":")?;
        self.comma = false;
        Ok(())
    }

    /// A member whose value is JSON written elsewhere.
    pub fn raw(&mut self, key: &str, json: &[u8]) -> io::Result<()> {
        self.key(key)?;
        self.sep()?;
        self.w.write_all(json)
    }

    pub fn u64(&mut self, key: &str, value: u64) -> io::Result<()> {
        self.key(key)?;
        self.sep()?;
        self.w.write_all(itoa::Buffer::new().format(value).as_bytes())
    }

    pub fn bool(&mut self, key: &str, value: bool) -> io::Result<()> {
        self.key(key)?;
        self.sep()?;
        self.w.write_all(if value { b"true" } else { b"false" })
    }

    pub fn null(&mut self, key: &str) -> io::Result<()> {
        self.key(key)?;
        self.sep()?;
        self.w.write_all(b"null")
    }

    pub fn opt_u64(&mut self, key: &str, value: Option<u64>) -> io::Result<()> {
        match value {
            Some(v) => self.u64(key, v),
            None => self.null(key),
        }
    }

    pub fn str(&mut self, key: &str, value: &str) -> io::Result<()> {
        self.bytes(key, value.as_bytes())
    }

    /// An address as a string (it needs no escaping).
    pub fn addr(&mut self, key: &str, addr: IpAddr) -> io::Result<()> {
        self.key(key)?;
        self.sep()?;
        write!(self.w, "\"{addr}\"")
    }

    pub fn opt_str(&mut self, key: &str, value: Option<&str>) -> io::Result<()> {
        match value {
            Some(v) => self.str(key, v),
            None => self.null(key),
        }
    }

    /// A string value from bytes, escaped as [`push_str`] does with the writer's controls.
    pub fn bytes(&mut self, key: &str, value: &[u8]) -> io::Result<()> {
        self.key(key)?;
        self.string(value)
    }

    /// A string as the next value of an array.
    pub fn string(&mut self, value: &[u8]) -> io::Result<()> {
        self.sep()?;
        let mut text = Vec::with_capacity(value.len() + 2);
        text.push(b'"');
        push_str(&mut text, value, self.controls);
        text.push(b'"');
        self.w.write_all(&text)
    }

    /// `key: {"time": RFC 3339, "ts_ns": monotonic ns}`.
    pub fn time(&mut self, key: &str, time: Timestamp) -> io::Result<()> {
        self.key(key)?;
        self.open(b'{')?;
        self.str("time", Rfc3339::new(time.unix_ns).as_str())?;
        self.u64("ts_ns", time.mono_ns)?;
        self.close(b'}')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push_json_str(buf: &mut Vec<u8>, bytes: &[u8]) {
        push_str(buf, bytes, Controls::C0AndC1);
    }

    #[test]
    fn text_needing_no_escape_is_what_push_str_copies_unchanged() {
        for b in 0u8..=255 {
            for controls in [Controls::C0, Controls::C0AndC1] {
                let mut buf = Vec::new();
                push_str(&mut buf, &[b'a', b], controls);
                assert_eq!(needs_no_escape(&[b]), buf == [b'a', b], "byte {b:#04x}");
            }
        }
        assert!(needs_no_escape(b"nginx: worker") && needs_no_escape(b""));
        assert!(!needs_no_escape(b"a\"b") && !needs_no_escape("é".as_bytes()));
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
        // C1 controls (a one-character CSI among them) are escaped like C0 ones.
        let mut buf = Vec::new();
        push_json_str(&mut buf, "a\u{9b}31m\u{85}é\u{a0}".as_bytes());
        assert_eq!(String::from_utf8(buf).unwrap(), "a\\u009b31m\\u0085é\u{a0}");
    }

    /// The report's strings, as its writer escaped them before it shared this escaper:
    /// a char at a time from the lossy text, C0 and DEL as `\u00xx`, C1 left as it is.
    fn escaped_as_the_report_did(value: &[u8]) -> String {
        let mut text = String::from("\"");
        for c in String::from_utf8_lossy(value).chars() {
            match c {
                '"' => text.push_str("\\\""),
                '\\' => text.push_str("\\\\"),
                c if u32::from(c) < 0x20 || c == '\u{7f}' => text.push_str(&format!("\\u{:04x}", u32::from(c))),
                c => text.push(c),
            }
        }
        text.push('"');
        text
    }

    #[test]
    fn the_writer_escapes_c0_and_del_and_leaves_c1() {
        let all: Vec<u8> = (0u8..=255).collect();
        let samples: [&[u8]; 6] =
            [&all, b"plain", b"x\xe2\x82y\x80", "a\u{9b}31m\u{85}\u{7f}é".as_bytes(), b"q\"b\\s\n\t", b""];
        for value in samples {
            let mut j = Writer::new(Vec::new());
            j.bytes("k", value).unwrap();
            let written = String::from_utf8(j.into_inner()).unwrap();
            assert_eq!(written, format!("\"k\":{}", escaped_as_the_report_did(value)), "{value:?}");
        }
    }

    #[test]
    fn a_stream_writer_escapes_c1_too() {
        let mut j = Writer::stream(Vec::new());
        j.open(b'[').unwrap();
        j.string("a\u{9b}b\u{7f}".as_bytes()).unwrap();
        j.string(b"c").unwrap();
        j.close(b']').unwrap();
        assert_eq!(String::from_utf8(j.into_inner()).unwrap(), r#"["a\u009bb\u007f","c"]"#);
    }

    #[test]
    fn the_writer_places_commas_and_brackets() {
        let mut j = Writer::new(Vec::new());
        j.open(b'{').unwrap();
        j.u64("n", 7).unwrap();
        j.null("none").unwrap();
        j.key("list").unwrap();
        j.open(b'[').unwrap();
        for b in [true, false] {
            j.open(b'{').unwrap();
            j.bool("b", b).unwrap();
            j.close(b'}').unwrap();
        }
        j.close(b']').unwrap();
        j.raw("alert", b"{\"x\":1}").unwrap();
        j.time("first", Timestamp { mono_ns: 5, unix_ns: 0 }).unwrap();
        j.close(b'}').unwrap();
        assert_eq!(
            String::from_utf8(j.into_inner()).unwrap(),
            r#"{"n":7,"none":null,"list":[{"b":true},{"b":false}],"alert":{"x":1},"first":{"time":"1970-01-01T00:00:00.000000Z","ts_ns":5}}"#
        );
    }
}
