//! The one place where text portrace did not write itself is made safe to show: process
//! names (which any user sets with `prctl(PR_SET_NAME)`), command lines, executables,
//! cgroups, and everything a recording's header says (host, kernel, notes, the traced
//! command), since a recording is a file anyone may have written. On a terminal, a
//! control character in such text is an instruction to the terminal (colours, cursor
//! moves, window titles, on some terminals more), so every one of them is shown as an
//! escape instead: C0 controls and DEL as `\x1b`, C1 controls and the Unicode direction
//! overrides (which reorder what a reader sees) as `\u{9b}`, and bytes that are not UTF-8
//! as `\xff`. Printable text, including non-ASCII letters, is kept as it is.
//!
//! CSV has a second hazard: a spreadsheet runs a cell that starts with `=`, `+`, `-` or
//! `@` (or a tab or carriage return before one) as a formula. [`csv_cell`] neutralises
//! those the usual way, with a leading single quote, after escaping control characters.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal as it is.
fn unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `\xNN`.
fn push_hex_byte(out: &mut Vec<u8>, b: u8) {
    out.extend_from_slice(&[b'\\', b'x', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
}

/// Appends `c`, or its escape when [`unsafe_char`] refuses it: `\xNN` below 0x80,
/// `\u{N}` above.
fn push_char(out: &mut Vec<u8>, c: char) {
    if !unsafe_char(c) {
        let mut tmp = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
        return;
    }
    let code = u32::from(c);
    if code < 0x80 {
        push_hex_byte(out, code as u8);
    } else {
        out.extend_from_slice(b"\\u{");
        let digits = format!("{code:x}");
        out.extend_from_slice(digits.as_bytes());
        out.push(b'}');
    }
}

/// Appends raw bytes (a process name, an argument) for a terminal: valid UTF-8 with each
/// unsafe character escaped, each byte that is not UTF-8 as `\xNN`. Returns the number
/// of characters appended (for column widths). Allocates nothing unless a character
/// above 0x7f needs escaping.
pub fn push_bytes(buf: &mut Vec<u8>, raw: &[u8]) -> usize {
    let before = buf.len();
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_char(buf, c);
        }
        for &b in chunk.invalid() {
            push_hex_byte(buf, b);
        }
    }
    // What was appended is UTF-8 by construction.
    std::str::from_utf8(&buf[before..]).map_or(0, |s| s.chars().count())
}

/// Appends `text` for a terminal, escaped as [`push_bytes`] does.
pub fn push_text(buf: &mut Vec<u8>, text: &str) -> usize {
    push_bytes(buf, text.as_bytes())
}

/// `text` for a terminal: every unsafe character escaped. Borrowed when nothing needed
/// escaping.
pub fn text(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(bytes(text.as_bytes()))
}

/// Raw bytes for a terminal, escaped as [`push_bytes`] does.
pub fn bytes(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    push_bytes(&mut out, raw);
    String::from_utf8(out).unwrap_or_default()
}

/// A process name for a terminal, escaped.
pub fn comm(comm: &crate::record::Comm) -> String {
    bytes(comm.as_bytes())
}

/// The bytes that make a spreadsheet treat a cell as a formula when they come first.
const FORMULA_START: &[u8] = b"=+-@\t\r";

/// Appends the content of one CSV cell from untrusted bytes: escaped as [`push_bytes`]
/// does, and a cell that would start a formula prefixed with `'`. Quoting (for commas
/// and quotes) is the CSV writer's business.
pub fn push_csv_cell(buf: &mut Vec<u8>, raw: &[u8]) {
    // Checked on the raw bytes: a leading tab or carriage return is a formula trigger in
    // some spreadsheets even though it is shown escaped here.
    if raw.first().is_some_and(|b| FORMULA_START.contains(b)) {
        buf.push(b'\'');
    }
    push_bytes(buf, raw);
}

/// [`push_csv_cell`] into a new string.
pub fn csv_cell(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len() + 1);
    push_csv_cell(&mut out, raw);
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_visible_escapes() {
        assert_eq!(text("nginx"), "nginx");
        assert!(matches!(text("nginx"), Cow::Borrowed(_)));
        assert_eq!(text("\x1b]0;owned\x07x"), "\\x1b]0;owned\\x07x");
        assert_eq!(text("a\nb\rc\td\x7f"), "a\\x0ab\\x0dc\\x09d\\x7f");
        // A C1 CSI (one code point that acts as ESC [ on many terminals).
        assert_eq!(text("x\u{9b}31m"), "x\\u{9b}31m");
        // Direction overrides reorder what a reader sees.
        assert_eq!(text("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        // Printable non-ASCII text is kept.
        assert_eq!(text("café ñandú 日本"), "café ñandú 日本");
        // No escape leaves a raw ESC behind.
        for c in (0u32..0x100).filter_map(char::from_u32) {
            let shown = text(&c.to_string()).into_owned();
            assert!(!shown.chars().any(char::is_control), "{c:?} -> {shown:?}");
        }
    }

    #[test]
    fn invalid_utf8_bytes_are_shown_as_hex() {
        assert_eq!(bytes(b"a\xffb"), "a\\xffb");
        assert_eq!(bytes(b"\x1b[2J\xc3"), "\\x1b[2J\\xc3");
        assert_eq!(bytes("é".as_bytes()), "é");
        assert_eq!(comm(&crate::record::Comm::new("\x1b[31mred")), "\\x1b[31mred");
        let mut buf = b"> ".to_vec();
        assert_eq!(push_bytes(&mut buf, b"\x07bell"), 8);
        assert_eq!(buf, b"> \\x07bell");
        assert_eq!(push_text(&mut buf, "é"), 1);
    }

    #[test]
    fn csv_cells_cannot_start_a_formula() {
        assert_eq!(csv_cell(b"curl"), "curl");
        assert_eq!(csv_cell(b"=cmd|' /C calc'!A0"), "'=cmd|' /C calc'!A0");
        assert_eq!(csv_cell(b"+1"), "'+1");
        assert_eq!(csv_cell(b"-x"), "'-x");
        assert_eq!(csv_cell(b"@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_cell(b"\t=1"), "'\\x09=1");
        assert_eq!(csv_cell(b"\r=1"), "'\\x0d=1");
        // Only the first character matters.
        assert_eq!(csv_cell(b"a=b"), "a=b");
        assert_eq!(csv_cell(b"a\x1bb"), "a\\x1bb");
        assert_eq!(csv_cell(b""), "");
    }
}
