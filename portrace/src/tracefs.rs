//! tracefs: finding (or mounting) it where aya will look for it, and reading the byte
//! layout of the `sock:inet_sock_set_state` tracepoint record from its `format` file.
//!
//! This module owns the conversion of a kernel's `format` text into the
//! [`portrace_ebpf::Layout`] handed to the kernel program, and the refusal, with an error
//! naming the field, of any layout portrace does not understand. The layout differs between
//! kernels (before 5.6 `protocol` was one byte; PREEMPT_RT and some distribution kernels
//! have a longer common header), so it is never assumed.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use portrace_ebpf::Layout;

use crate::format::errno;

/// Where tracefs is normally mounted, and where portrace mounts it when it is not.
pub const TRACING: &str = "/sys/kernel/tracing";
/// The older location, below debugfs. aya looks here second.
pub const DEBUG_TRACING: &str = "/sys/kernel/debug/tracing";
/// The `format` file of the tracepoint, relative to the tracefs root.
pub const FORMAT_FILE: &str = "events/sock/inet_sock_set_state/format";

/// The largest tracepoint record portrace accepts: every field it reads must end within
/// this many bytes. Real records of this tracepoint are under 100 bytes.
pub const MAX_RECORD: u64 = 4096;

/// Why a tracepoint `format` text was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("the tracepoint format is empty: tracefs returned no text for it")]
    Empty,
    #[error("line {line} of the tracepoint format is not understood ({problem}): {text:?}")]
    Malformed { line: usize, problem: &'static str, text: String },
    #[error("tracepoint field '{field}' is declared twice (lines {first} and {second})")]
    DuplicateField { field: String, first: usize, second: usize },
    #[error(
        "tracepoint format has no field '{field}'; portrace reads it from every transition \
         and cannot trace without it"
    )]
    MissingField { field: &'static str },
    #[error("tracepoint field '{field}' is {found} bytes; portrace understands {expected}")]
    WrongSize { field: &'static str, found: u64, expected: &'static str },
    #[error(
        "tracepoint field '{field}' lies at offset {offset} with size {size}, past the end of \
         a tracepoint record; portrace understands records of at most {MAX_RECORD} bytes"
    )]
    OutOfRange { field: &'static str, offset: u64, size: u64 },
}

/// One `field:` line of a format file.
#[derive(Clone, Copy, Debug)]
struct FieldPos {
    line: usize,
    offset: u64,
    size: u64,
}

/// The fields portrace reads, in [`Layout`] order, with the sizes it understands for each.
const NEEDED: [(&str, &[u64], &str); 11] = [
    ("skaddr", &[8], "8"),
    ("oldstate", &[4], "4"),
    ("newstate", &[4], "4"),
    ("sport", &[2], "2"),
    ("dport", &[2], "2"),
    ("family", &[2], "2"),
    ("protocol", &[1, 2], "1 or 2"),
    ("saddr", &[4], "4"),
    ("daddr", &[4], "4"),
    ("saddr_v6", &[16], "16"),
    ("daddr_v6", &[16], "16"),
];

/// Parses the text of a tracefs `format` file for `sock:inet_sock_set_state` into the
/// offsets the kernel program needs.
///
/// Every `field:` line must have the shape tracefs writes
/// (`field:TYPE NAME[N];\toffset:O;\tsize:S;\tsigned:X;`); the header lines (`name:`,
/// `ID:`, `format:`) and blank lines are accepted, and everything from `print fmt:` on is
/// ignored. Any other line is refused with its line number. Each field portrace reads must
/// then be present, have the size portrace understands, and end within [`MAX_RECORD`]
/// bytes.
pub fn parse_format(text: &str) -> Result<Layout, FormatError> {
    if text.trim().is_empty() {
        return Err(FormatError::Empty);
    }
    let mut fields: HashMap<&str, FieldPos> = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.starts_with("print fmt:") {
            // The print format is the last item of the file and may contain anything.
            break;
        }
        if trimmed.is_empty()
            || trimmed.starts_with("name:")
            || trimmed.starts_with("ID:")
            || trimmed == "format:"
        {
            continue;
        }
        let Some(body) = trimmed.strip_prefix("field:") else {
            return Err(malformed(
                line,
                raw,
                "expected a 'field:' line, a header line or 'print fmt:'",
            ));
        };
        let (name, offset, size) =
            parse_field(body).map_err(|problem| malformed(line, raw, problem))?;
        let pos = FieldPos { line, offset, size };
        if let Some(first) = fields.insert(name, pos) {
            return Err(FormatError::DuplicateField {
                field: name.to_owned(),
                first: first.line,
                second: line,
            });
        }
    }

    let mut offsets = [0u16; NEEDED.len()];
    let mut protocol_size = 0u16;
    for (slot, &(field, sizes, expected)) in offsets.iter_mut().zip(NEEDED.iter()) {
        let pos = fields.get(field).ok_or(FormatError::MissingField { field })?;
        if !sizes.contains(&pos.size) {
            return Err(FormatError::WrongSize { field, found: pos.size, expected });
        }
        let out_of_range = FormatError::OutOfRange { field, offset: pos.offset, size: pos.size };
        match pos.offset.checked_add(pos.size) {
            Some(end) if end <= MAX_RECORD => {}
            _ => return Err(out_of_range),
        }
        *slot = u16::try_from(pos.offset).map_err(|_| out_of_range)?;
        if field == "protocol" {
            // The size was checked above to be 1 or 2.
            protocol_size = pos.size as u16;
        }
    }
    let [skaddr, oldstate, newstate, sport, dport, family, protocol, saddr, daddr, saddr_v6, daddr_v6] =
        offsets;
    Ok(Layout {
        skaddr,
        oldstate,
        newstate,
        sport,
        dport,
        family,
        protocol,
        saddr,
        daddr,
        saddr_v6,
        daddr_v6,
        protocol_size,
    })
}

/// The offset and size of field `name` in the text of any tracepoint's `format` file, if
/// it has a well-formed line for it.
pub fn field_position(text: &str, name: &str) -> Option<(u64, u64)> {
    text.lines()
        .take_while(|l| !l.trim().starts_with("print fmt:"))
        .filter_map(|l| l.trim().strip_prefix("field:"))
        .filter_map(|body| parse_field(body).ok())
        .find(|&(n, _, _)| n == name)
        .map(|(_, offset, size)| (offset, size))
}

fn malformed(line: usize, raw: &str, problem: &'static str) -> FormatError {
    FormatError::Malformed { line, problem, text: raw.trim_end().to_owned() }
}

/// Parses what follows `field:` on a field line into the field's name, offset and size.
/// Keys other than `offset`, `size` and `signed` are ignored, so that a kernel adding one
/// does not break portrace.
fn parse_field(body: &str) -> Result<(&str, u64, u64), &'static str> {
    let mut parts = body.split(';');
    let declaration = parts.next().unwrap_or("").trim();
    let name = field_name(declaration)?;
    let mut offset = None;
    let mut size = None;
    for part in parts {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let Some((key, value)) = part.split_once(':') else {
            return Err("expected 'key:value' items after the declaration");
        };
        let value = value.trim();
        match key.trim() {
            "offset" => offset = Some(value.parse::<u64>().map_err(|_| "offset is not a number")?),
            "size" => size = Some(value.parse::<u64>().map_err(|_| "size is not a number")?),
            "signed" if value != "0" && value != "1" => return Err("signed is neither 0 nor 1"),
            _ => {}
        }
    }
    let offset = offset.ok_or("the field has no offset")?;
    let size = size.ok_or("the field has no size")?;
    Ok((name, offset, size))
}

/// The name in a C declaration such as `const void * skaddr` or `__u8 saddr[4]`.
fn field_name(declaration: &str) -> Result<&str, &'static str> {
    let Some((ty, last)) = declaration.rsplit_once(char::is_whitespace) else {
        return Err("the field has no type and name");
    };
    if ty.trim().is_empty() {
        return Err("the field has no type");
    }
    let last = last.trim_start_matches('*');
    let name = match last.split_once('[') {
        Some((name, rest)) => {
            let length = rest.strip_suffix(']').ok_or("unclosed '[' in the field name")?;
            if !length.bytes().all(|b| b.is_ascii_digit()) {
                return Err("the array length is not a number");
            }
            name
        }
        None => last,
    };
    let identifier = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if identifier {
        Ok(name)
    } else {
        Err("the field name is not a C identifier")
    }
}

/// A tracefs mount portrace can use, and whether portrace mounted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracefs {
    pub path: PathBuf,
    /// True when tracefs was not mounted and portrace mounted it at [`TRACING`]. It is left
    /// mounted when portrace exits.
    pub mounted_by_us: bool,
}

/// Why tracefs, or the tracepoint's format in it, could not be used.
///
/// Each message is complete on its own (it includes the underlying OS error), so print it
/// with `{}`; there is no separate source chain.
#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and {TRACING} does not exist to mount it on (is /sys mounted? \
         in a container, run portrace on the host or bind-mount the host's /sys); make \
         {TRACING} available, run `mount -t tracefs nodev {TRACING}` as root, then start \
         portrace again"
    )]
    NoMountPoint,
    #[error(
        "tracefs is not mounted, and mounting it at {TRACING} failed with {}{}; run \
         `mount -t tracefs nodev {TRACING}` as root, then start portrace again",
        errno::described(*.errno),
        mount_hint(*.errno)
    )]
    MountFailed { errno: i32 },
    #[error(
        "tracefs at {path} has no events/ directory: this kernel was built without trace \
         events (CONFIG_EVENT_TRACING), which portrace needs; boot a kernel that has them"
    )]
    NoEvents { path: PathBuf },
    #[error(
        "this kernel has no sock:inet_sock_set_state tracepoint (added in Linux 4.16); \
         portrace needs Linux 5.8 or newer (looked for {path})"
    )]
    NoTracepoint { path: PathBuf },
    #[error("cannot list {path} (permission denied), where tracefs is mounted; {DAC_HINT}")]
    Unreadable { path: PathBuf },
    #[error("cannot read {path}: {cause}{}", read_hint(.cause))]
    Read { path: PathBuf, cause: io::Error },
    #[error(
        "{path}: {cause}. portrace cannot read TCP transitions from this kernel's tracepoint \
         layout; please report it to the portrace developers with the output of `uname -r` \
         and the contents of {path}"
    )]
    Format { path: PathBuf, cause: FormatError },
}

fn mount_hint(errno: i32) -> &'static str {
    match errno {
        libc::EPERM | libc::EACCES => " (mounting needs CAP_SYS_ADMIN)",
        libc::ENODEV => " (this kernel may have been built without tracefs, CONFIG_TRACING)",
        libc::EROFS => " (/sys is read-only here, as in many containers)",
        _ => "",
    }
}

/// Advice for a tracefs this process may not read.
const DAC_HINT: &str = "tracefs is readable only by root unless mounted otherwise: run \
                        portrace as root (`sudo portrace`), or give the binary \
                        cap_dac_read_search along with its other capabilities";

fn read_hint(cause: &io::Error) -> String {
    if cause.kind() == io::ErrorKind::PermissionDenied {
        format!("; {DAC_HINT}")
    } else {
        String::new()
    }
}

/// What a candidate tracefs directory looks like, as far as choosing one goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirState {
    /// Nothing at that path.
    Missing,
    /// An empty directory, or something that is not a directory (aya skips both).
    Empty,
    /// A directory this process may not list (aya skips it too): without
    /// CAP_DAC_READ_SEARCH, a non-root process cannot list a mounted tracefs.
    Unreadable,
    /// A directory with entries but no `events/` directory: not a usable tracefs, yet aya
    /// would pick it if it is the first non-empty candidate.
    NoEvents,
    /// A directory with an `events/` directory: a mounted tracefs.
    Ready,
}

/// What [`ensure_mounted`] should do, given the state of both candidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    UseTracing,
    UseDebugTracing,
    MountTracing,
    NoMountPoint,
    /// Refuse: the directory exists but cannot be listed, and mounting over it would not
    /// help a process that may not read tracefs.
    UnreadableTracing,
    UnreadableDebugTracing,
}

/// Chooses the tracefs directory so that portrace reads the layout from the same directory
/// aya attaches through. aya takes the first of [`TRACING`] and [`DEBUG_TRACING`] that is a
/// non-empty directory, so a non-empty [`TRACING`] without `events/` hides
/// [`DEBUG_TRACING`]; mounting tracefs on [`TRACING`] fixes that case as well as the
/// unmounted one. A directory that cannot be listed is most likely a mounted tracefs this
/// process may not read, so it is reported rather than mounted over.
pub fn choose(tracing: DirState, debug_tracing: DirState) -> Choice {
    match (tracing, debug_tracing) {
        (DirState::Ready, _) => Choice::UseTracing,
        (DirState::NoEvents, _) => Choice::MountTracing,
        (_, DirState::Ready) => Choice::UseDebugTracing,
        (DirState::Unreadable, _) => Choice::UnreadableTracing,
        (DirState::Empty, _) => Choice::MountTracing,
        (DirState::Missing, DirState::Unreadable) => Choice::UnreadableDebugTracing,
        (DirState::Missing, _) => Choice::NoMountPoint,
    }
}

/// Looks at a candidate directory the way [`choose`] needs.
pub fn dir_state(path: &Path) -> DirState {
    match fs::read_dir(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => DirState::Missing,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => DirState::Unreadable,
        Err(_) => DirState::Empty,
        Ok(mut entries) => {
            if entries.next().is_none() {
                DirState::Empty
            } else if path.join("events").is_dir() {
                DirState::Ready
            } else {
                DirState::NoEvents
            }
        }
    }
}

/// Finds a mounted tracefs where aya will look for it, or mounts one at [`TRACING`].
///
/// Mounting needs CAP_SYS_ADMIN. A tracefs portrace mounts is left mounted; the caller
/// should say so when `mounted_by_us` is true.
pub fn ensure_mounted() -> Result<Tracefs, TracefsError> {
    let tracing = Path::new(TRACING);
    let debug_tracing = Path::new(DEBUG_TRACING);
    match choose(dir_state(tracing), dir_state(debug_tracing)) {
        Choice::UseTracing => Ok(Tracefs { path: tracing.to_path_buf(), mounted_by_us: false }),
        Choice::UseDebugTracing => {
            Ok(Tracefs { path: debug_tracing.to_path_buf(), mounted_by_us: false })
        }
        Choice::NoMountPoint => Err(TracefsError::NoMountPoint),
        Choice::UnreadableTracing => Err(TracefsError::Unreadable { path: tracing.into() }),
        Choice::UnreadableDebugTracing => {
            Err(TracefsError::Unreadable { path: debug_tracing.into() })
        }
        Choice::MountTracing => {
            mount_tracefs()?;
            if dir_state(tracing) == DirState::Ready {
                Ok(Tracefs { path: tracing.to_path_buf(), mounted_by_us: true })
            } else {
                Err(TracefsError::NoEvents { path: tracing.to_path_buf() })
            }
        }
    }
}

fn mount_tracefs() -> Result<(), TracefsError> {
    // SAFETY: every pointer is a NUL-terminated string literal that outlives the call, and
    // tracefs takes no mount data, so a null data pointer is allowed.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        Err(TracefsError::MountFailed { errno })
    }
}

/// Reads and parses `events/sock/inet_sock_set_state/format` under a tracefs root.
pub fn read_layout(tracefs: &Path) -> Result<Layout, TracefsError> {
    let path = tracefs.join(FORMAT_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(TracefsError::NoTracepoint { path });
        }
        Err(cause) => return Err(TracefsError::Read { path, cause }),
    };
    parse_format(&text).map_err(|cause| TracefsError::Format { path, cause })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const LINUX_6_18: &str = include_str!("../testdata/format/linux-6.18.format");
    /// Kernels 5.0 to 5.5: `protocol` is a `__u8`, so every address sits a byte earlier.
    const LINUX_5_4: &str = include_str!("../testdata/format/linux-5.4-u8-protocol.format");
    /// A PREEMPT_RT / RHEL-style kernel: two more common fields push `skaddr` to 16.
    const LINUX_5_14_RT: &str = include_str!("../testdata/format/linux-5.14-rt.format");

    /// The 6.18 layout (this machine's), also used by other modules' tests.
    pub(crate) const LAYOUT_6_18: Layout = Layout {
        skaddr: 8,
        oldstate: 16,
        newstate: 20,
        sport: 24,
        dport: 26,
        family: 28,
        protocol: 30,
        saddr: 32,
        daddr: 36,
        saddr_v6: 40,
        daddr_v6: 56,
        protocol_size: 2,
    };

    #[test]
    fn parses_linux_6_18() {
        assert_eq!(parse_format(LINUX_6_18), Ok(LAYOUT_6_18));
    }

    #[test]
    fn parses_u8_protocol_kernel() {
        let expected = Layout {
            skaddr: 8,
            oldstate: 16,
            newstate: 20,
            sport: 24,
            dport: 26,
            family: 28,
            protocol: 30,
            saddr: 31,
            daddr: 35,
            saddr_v6: 39,
            daddr_v6: 55,
            protocol_size: 1,
        };
        assert_eq!(parse_format(LINUX_5_4), Ok(expected));
    }

    #[test]
    fn parses_longer_common_header() {
        let expected = Layout {
            skaddr: 16,
            oldstate: 24,
            newstate: 28,
            sport: 32,
            dport: 34,
            family: 36,
            protocol: 38,
            saddr: 40,
            daddr: 44,
            saddr_v6: 48,
            daddr_v6: 64,
            protocol_size: 2,
        };
        assert_eq!(parse_format(LINUX_5_14_RT), Ok(expected));
    }

    #[test]
    fn field_order_and_crlf_do_not_matter() {
        let mut lines: Vec<&str> = LINUX_6_18.lines().collect();
        let (start, end) = (
            lines.iter().position(|l| l.contains(" skaddr;")).unwrap(),
            lines.iter().position(|l| l.contains(" daddr_v6[16];")).unwrap(),
        );
        lines[start..=end].reverse();
        let text = lines.join("\r\n");
        assert_eq!(parse_format(&text), Ok(LAYOUT_6_18));
    }

    #[test]
    fn refuses_missing_field() {
        let text: String = LINUX_6_18
            .lines()
            .filter(|l| !l.contains("saddr_v6"))
            .map(|l| format!("{l}\n"))
            .collect();
        let err = parse_format(&text).unwrap_err();
        assert_eq!(err, FormatError::MissingField { field: "saddr_v6" });
        assert_eq!(
            err.to_string(),
            "tracepoint format has no field 'saddr_v6'; portrace reads it from every \
             transition and cannot trace without it"
        );
    }

    #[test]
    fn refuses_four_byte_protocol() {
        let text = LINUX_6_18.replace(
            "field:__u16 protocol;\toffset:30;\tsize:2;",
            "field:__u32 protocol;\toffset:30;\tsize:4;",
        );
        let err = parse_format(&text).unwrap_err();
        assert_eq!(err, FormatError::WrongSize { field: "protocol", found: 4, expected: "1 or 2" });
        assert_eq!(
            err.to_string(),
            "tracepoint field 'protocol' is 4 bytes; portrace understands 1 or 2"
        );
    }

    #[test]
    fn refuses_four_byte_skaddr() {
        let text = LINUX_6_18.replace(
            "field:const void * skaddr;\toffset:8;\tsize:8;",
            "field:const void * skaddr;\toffset:8;\tsize:4;",
        );
        assert_eq!(
            parse_format(&text),
            Err(FormatError::WrongSize { field: "skaddr", found: 4, expected: "8" })
        );
    }

    #[test]
    fn refuses_field_past_record_end() {
        let text = LINUX_6_18.replace("offset:56;\tsize:16;", "offset:4090;\tsize:16;");
        let err = parse_format(&text).unwrap_err();
        assert_eq!(err, FormatError::OutOfRange { field: "daddr_v6", offset: 4090, size: 16 });
        assert_eq!(
            err.to_string(),
            "tracepoint field 'daddr_v6' lies at offset 4090 with size 16, past the end of a \
             tracepoint record; portrace understands records of at most 4096 bytes"
        );
        // An offset that does not even fit a u64 sum must not overflow.
        let huge = LINUX_6_18.replace("offset:56;", &format!("offset:{};", u64::MAX));
        assert_eq!(
            parse_format(&huge),
            Err(FormatError::OutOfRange { field: "daddr_v6", offset: u64::MAX, size: 16 })
        );
        // A field ending exactly at the limit is accepted.
        let edge = LINUX_6_18.replace("offset:56;\tsize:16;", "offset:4080;\tsize:16;");
        assert_eq!(parse_format(&edge).map(|l| l.daddr_v6), Ok(4080));
    }

    #[test]
    fn refuses_garbage() {
        let err = parse_format("hello, world\nthis is not a format file\n").unwrap_err();
        assert_eq!(
            err,
            FormatError::Malformed {
                line: 1,
                problem: "expected a 'field:' line, a header line or 'print fmt:'",
                text: "hello, world".into(),
            }
        );
        assert_eq!(
            err.to_string(),
            "line 1 of the tracepoint format is not understood (expected a 'field:' line, a \
             header line or 'print fmt:'): \"hello, world\""
        );
    }

    #[test]
    fn refuses_empty_input() {
        assert_eq!(parse_format(""), Err(FormatError::Empty));
        assert_eq!(parse_format(" \n\t\n"), Err(FormatError::Empty));
        assert_eq!(
            FormatError::Empty.to_string(),
            "the tracepoint format is empty: tracefs returned no text for it"
        );
    }

    #[test]
    fn header_without_fields_names_the_first_missing_field() {
        assert_eq!(
            parse_format("name: inet_sock_set_state\nID: 1\nformat:\n\nprint fmt: \"\"\n"),
            Err(FormatError::MissingField { field: "skaddr" })
        );
    }

    #[test]
    fn malformed_field_lines_name_their_line() {
        let cases = [
            ("field:int oldstate;\toffset:sixteen;\tsize:4;\tsigned:1;", "offset is not a number"),
            ("field:int oldstate;\toffset:16;\tsize:;\tsigned:1;", "size is not a number"),
            ("field:int oldstate;\tsize:4;\tsigned:1;", "the field has no offset"),
            ("field:int oldstate;\toffset:16;\tsigned:1;", "the field has no size"),
            ("field:oldstate;\toffset:16;\tsize:4;\tsigned:1;", "the field has no type and name"),
            (
                "field:int oldstate;\toffset 16;\tsize:4;",
                "expected 'key:value' items after the declaration",
            ),
            ("field:int oldstate;\toffset:16;\tsize:4;\tsigned:2;", "signed is neither 0 nor 1"),
            (
                "field:__u8 saddr[4;\toffset:32;\tsize:4;\tsigned:0;",
                "unclosed '[' in the field name",
            ),
            (
                "field:__u8 saddr[x];\toffset:32;\tsize:4;\tsigned:0;",
                "the array length is not a number",
            ),
            (
                "field:int 9lives;\toffset:16;\tsize:4;\tsigned:1;",
                "the field name is not a C identifier",
            ),
        ];
        for (bad, problem) in cases {
            // The oldstate line is line 10 of the file.
            let text =
                LINUX_6_18.replace("field:int oldstate;\toffset:16;\tsize:4;\tsigned:1;", bad);
            let err = parse_format(&text).unwrap_err();
            assert_eq!(
                err,
                FormatError::Malformed { line: 10, problem, text: format!("\t{bad}") },
                "for {bad:?}"
            );
        }
    }

    #[test]
    fn refuses_duplicate_field() {
        let text = LINUX_6_18.replace(
            "\tfield:__u16 dport;",
            "\tfield:__u16 sport;\toffset:40;\tsize:2;\tsigned:0;\n\tfield:__u16 dport;",
        );
        assert_eq!(
            parse_format(&text),
            Err(FormatError::DuplicateField { field: "sport".into(), first: 12, second: 13 })
        );
    }

    #[test]
    fn ignores_everything_after_print_fmt_and_unknown_keys() {
        let text = LINUX_6_18
            .replace("signed:0;", "signed:0;\tfuture:7;")
            .replace("print fmt:", "print fmt:\nnot a field line at all\nprint fmt:");
        assert_eq!(parse_format(&text), Ok(LAYOUT_6_18));
    }

    #[test]
    fn choice_follows_aya_order() {
        use Choice::*;
        use DirState::*;
        let cases = [
            ((Ready, Ready), UseTracing),
            ((Ready, Missing), UseTracing),
            ((Empty, Ready), UseDebugTracing),
            ((Missing, Ready), UseDebugTracing),
            ((Empty, Missing), MountTracing),
            ((Empty, Empty), MountTracing),
            ((Empty, NoEvents), MountTracing),
            // aya would pick the non-empty /sys/kernel/tracing and fail: mount over it.
            ((NoEvents, Ready), MountTracing),
            ((NoEvents, Missing), MountTracing),
            ((Missing, Missing), NoMountPoint),
            ((Missing, Empty), NoMountPoint),
            ((Missing, NoEvents), NoMountPoint),
            // A mounted tracefs this process may not list: say so rather than mount over it.
            ((Unreadable, Missing), UnreadableTracing),
            ((Unreadable, Unreadable), UnreadableTracing),
            ((Unreadable, Ready), UseDebugTracing),
            ((Missing, Unreadable), UnreadableDebugTracing),
            ((Empty, Unreadable), MountTracing),
        ];
        for ((tracing, debug), expected) in cases {
            assert_eq!(choose(tracing, debug), expected, "for {tracing:?}, {debug:?}");
        }
    }

    use crate::test_dir::TempDir;

    #[test]
    fn dir_state_sees_each_case() {
        let root = TempDir::new("tracefs", "dirstate");
        assert_eq!(dir_state(&root.0.join("absent")), DirState::Missing);
        let empty = root.0.join("empty");
        fs::create_dir(&empty).unwrap();
        assert_eq!(dir_state(&empty), DirState::Empty);
        let other = root.0.join("other");
        fs::create_dir(&other).unwrap();
        fs::write(other.join("trace"), "").unwrap();
        assert_eq!(dir_state(&other), DirState::NoEvents);
        let ready = root.0.join("ready");
        fs::create_dir_all(ready.join("events")).unwrap();
        assert_eq!(dir_state(&ready), DirState::Ready);
        let file = root.0.join("file");
        fs::write(&file, "").unwrap();
        assert_eq!(dir_state(&file), DirState::Empty);
    }

    #[test]
    fn read_layout_from_a_directory() {
        let root = TempDir::new("tracefs", "read");
        let err = read_layout(&root.0).unwrap_err();
        let format = root.0.join(FORMAT_FILE);
        assert!(matches!(&err, TracefsError::NoTracepoint { path } if *path == format));
        assert_eq!(
            err.to_string(),
            format!(
                "this kernel has no sock:inet_sock_set_state tracepoint (added in Linux 4.16); \
                 portrace needs Linux 5.8 or newer (looked for {})",
                format.display()
            )
        );

        fs::create_dir_all(format.parent().unwrap()).unwrap();
        fs::write(&format, LINUX_5_4).unwrap();
        assert_eq!(read_layout(&root.0).unwrap().protocol_size, 1);

        fs::write(&format, "").unwrap();
        let err = read_layout(&root.0).unwrap_err();
        assert!(matches!(&err, TracefsError::Format { cause: FormatError::Empty, .. }));
        assert_eq!(
            err.to_string(),
            format!(
                "{p}: the tracepoint format is empty: tracefs returned no text for it. portrace \
                 cannot read TCP transitions from this kernel's tracepoint layout; please \
                 report it to the portrace developers with the output of `uname -r` and the \
                 contents of {p}",
                p = format.display()
            )
        );
    }

    #[test]
    fn error_messages_name_errno_and_remedy() {
        assert_eq!(
            TracefsError::MountFailed { errno: libc::EPERM }.to_string(),
            "tracefs is not mounted, and mounting it at /sys/kernel/tracing failed with EPERM \
             (operation not permitted) (mounting needs CAP_SYS_ADMIN); run `mount -t tracefs \
             nodev /sys/kernel/tracing` as root, then start portrace again"
        );
        assert_eq!(
            TracefsError::MountFailed { errno: libc::ENODEV }.to_string(),
            "tracefs is not mounted, and mounting it at /sys/kernel/tracing failed with ENODEV \
             (no such device) (this kernel may have been built without tracefs, \
             CONFIG_TRACING); run `mount -t tracefs nodev /sys/kernel/tracing` as root, then \
             start portrace again"
        );
        assert_eq!(
            TracefsError::Unreadable { path: PathBuf::from(TRACING) }.to_string(),
            "cannot list /sys/kernel/tracing (permission denied), where tracefs is mounted; \
             tracefs is readable only by root unless mounted otherwise: run portrace as root \
             (`sudo portrace`), or give the binary cap_dac_read_search along with its other \
             capabilities"
        );
        let denied = TracefsError::Read {
            path: PathBuf::from("/sys/kernel/tracing/events/sock/inet_sock_set_state/format"),
            cause: io::Error::from_raw_os_error(libc::EACCES),
        };
        assert_eq!(
            denied.to_string(),
            "cannot read /sys/kernel/tracing/events/sock/inet_sock_set_state/format: Permission \
             denied (os error 13); tracefs is readable only by root unless mounted otherwise: \
             run portrace as root (`sudo portrace`), or give the binary cap_dac_read_search \
             along with its other capabilities"
        );
    }

    /// On a machine where tracefs is mounted and readable (as root here), the real format
    /// must parse, and `ensure_mounted` must find it without mounting anything.
    #[test]
    fn real_tracefs_when_available() {
        let real = Path::new(TRACING).join(FORMAT_FILE);
        let Ok(text) = fs::read_to_string(&real) else {
            eprintln!("skipped: {} is not readable here", real.display());
            return;
        };
        let layout = read_layout(Path::new(TRACING)).expect("the running kernel's format parses");
        assert_eq!(Ok(layout), parse_format(&text));
        assert!(layout.protocol_size == 1 || layout.protocol_size == 2);
        let found = ensure_mounted().expect("tracefs is already mounted");
        assert_eq!(found, Tracefs { path: PathBuf::from(TRACING), mounted_by_us: false });
    }
}
