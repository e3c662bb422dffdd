//! The start of a recording: its preamble (signature, format version, flags, header
//! length) and header checked before anything else is read, and a guess at what a file
//! that is not a recording is.

use std::io::{self, Read};

use super::{read_up_to, ErrorKind, ReadError, SKIP_CRC};
use crate::tracefile::codec;
use crate::tracefile::{Header, CRC_LEN, FORMAT_VERSION, MAGIC, MAX_HEADER_LEN, PREAMBLE_LEN};

/// Reads and checks the header; returns it and its length in bytes.
pub(super) fn read_header(src: &mut impl Read, name: &str) -> Result<(Header, u64), ReadError> {
    let error = |offset: u64, kind: ErrorKind, message: String| ReadError {
        file: name.to_string(),
        offset,
        kind,
        message,
    };
    let io = |offset: u64, e: io::Error| error(offset, ErrorKind::Io, format!("reading failed: {e}"));
    let mut pre = [0u8; PREAMBLE_LEN];
    let got = read_up_to(src, &mut pre).map_err(|e| io(0, e))?;
    if got == 0 {
        return Err(error(
            0,
            ErrorKind::Empty,
            "the file is empty, so it is not a portrace recording (a recorder that stopped \
             before tracing began leaves an empty file)"
                .into(),
        ));
    }
    let seen = got.min(MAGIC.len());
    if pre[..seen] != MAGIC[..seen] {
        return Err(error(
            0,
            ErrorKind::Foreign,
            format!(
                "this is not a portrace recording: {}; `portrace replay` and `portrace report` \
                 read files made with `portrace record -o FILE`",
                identify(&pre[..got])
            ),
        ));
    }
    let truncated = |at: usize, total: u64| {
        error(
            at as u64,
            ErrorKind::Truncated,
            format!(
                "the file ends inside its {total}-byte header: the recorder stopped before it \
                 wrote anything else, so there is nothing to read"
            ),
        )
    };
    if got < PREAMBLE_LEN {
        return Err(truncated(got, PREAMBLE_LEN as u64));
    }
    let version = u16::from_le_bytes([pre[8], pre[9]]);
    if version > FORMAT_VERSION {
        return Err(error(
            8,
            ErrorKind::Newer,
            format!(
                "the recording is in format version {version}, written by a newer portrace; this \
                 portrace reads versions up to {FORMAT_VERSION}: read it with a newer portrace"
            ),
        ));
    }
    if version == 0 {
        return Err(error(8, ErrorKind::Corrupt, "the header is damaged: format version 0 does not exist".into()));
    }
    let flags = u16::from_le_bytes([pre[10], pre[11]]);
    if flags != 0 {
        return Err(error(
            10,
            ErrorKind::Newer,
            format!(
                "the recording uses features this portrace does not know (header flags \
                 {flags:#06x}): read it with a newer portrace"
            ),
        ));
    }
    let body_len = u32::from_le_bytes([pre[12], pre[13], pre[14], pre[15]]);
    if body_len > MAX_HEADER_LEN {
        return Err(error(
            12,
            ErrorKind::Corrupt,
            format!("the header is damaged: it says it is {body_len} bytes long (at most {MAX_HEADER_LEN})"),
        ));
    }
    let total = PREAMBLE_LEN as u64 + u64::from(body_len) + CRC_LEN as u64;
    let mut rest = Vec::new();
    let got_rest = src
        .take(u64::from(body_len) + CRC_LEN as u64)
        .read_to_end(&mut rest)
        .map_err(|e| io(PREAMBLE_LEN as u64, e))?;
    if (got_rest as u64) < u64::from(body_len) + CRC_LEN as u64 {
        return Err(truncated(PREAMBLE_LEN + got_rest, total));
    }
    let body = &rest[..body_len as usize];
    let stored = u32::from_le_bytes([
        rest[body_len as usize],
        rest[body_len as usize + 1],
        rest[body_len as usize + 2],
        rest[body_len as usize + 3],
    ]);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&pre);
    crc.update(body);
    if crc.finalize() != stored && !SKIP_CRC {
        return Err(error(
            total - CRC_LEN as u64,
            ErrorKind::Corrupt,
            "the header is damaged (its checksum does not match): the recording cannot be \
             interpreted without it"
                .into(),
        ));
    }
    let header = codec::header_fields(body, version).map_err(|e| {
        error(PREAMBLE_LEN as u64, ErrorKind::Corrupt, format!("the header is malformed: {e}"))
    })?;
    Ok((header, total))
}

/// A guess at what a foreign file is, from its first bytes.
fn identify(start: &[u8]) -> String {
    let known: [(&[u8], &str); 9] = [
        (b"\x89PNG", "it is a PNG image"),
        (b"\x1f\x8b", "it is gzip-compressed (gunzip it first if it holds a recording)"),
        (b"\x28\xb5\x2f\xfd", "it is zstd-compressed (unzstd it first if it holds a recording)"),
        (b"\xfd7zXZ\0", "it is xz-compressed (unxz it first if it holds a recording)"),
        (b"BZh", "it is bzip2-compressed (bunzip2 it first if it holds a recording)"),
        (b"\x7fELF", "it is an executable (ELF)"),
        (b"\xd4\xc3\xb2\xa1", "it is a packet capture (pcap)"),
        (b"\xa1\xb2\xc3\xd4", "it is a packet capture (pcap)"),
        (b"\x0a\x0d\x0d\x0a", "it is a packet capture (pcapng)"),
    ];
    if let Some((_, what)) = known.iter().find(|(magic, _)| start.starts_with(magic)) {
        return what.to_string();
    }
    let text = start.iter().all(|&b| b.is_ascii_graphic() || b.is_ascii_whitespace());
    match start.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | Some(b'[') if text => {
            "it looks like JSON (portrace --format json output is text, not a recording)".into()
        }
        _ if text => "it looks like text (portrace's text and CSV output are not recordings)".into(),
        _ => "it does not start with the recording signature".into(),
    }
}
