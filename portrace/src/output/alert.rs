//! How alerts look: the `"type":"alert"` JSON object (in the JSON lines stream and in the
//! report's `alerts` array) and the highlighted text lines of the timeline. Text shown to
//! a terminal has every control character replaced by `?`: process names, executables and
//! command lines come from the traced processes and must not send escape sequences.

use std::io;

use crate::clock::Rfc3339;
use crate::format::json::Writer;
use crate::record::alert::{Alert, AlertProcess, Evidence, Severity};
use crate::record::ProcessInfo;

/// Appends the alert as one JSON object (no newline). Keys, in order: `type`, `time`,
/// `ts_ns`, `kind`, `severity`, `subject`, `summary`, `pid`, `comm`, `process`, `netns`,
/// `evidence`; see docs/json.md. Strings are escaped as in the rest of the stream.
pub(crate) fn push_alert_json(buf: &mut Vec<u8>, a: &Alert) {
    write_alert(&mut Writer::stream(buf), a).expect("writing to memory");
}

fn write_alert(j: &mut Writer<&mut Vec<u8>>, a: &Alert) -> io::Result<()> {
    j.open(b'{')?;
    j.str("type", "alert")?;
    j.str("time", Rfc3339::new(a.time.unix_ns).as_str())?;
    j.u64("ts_ns", a.time.mono_ns)?;
    j.str("kind", a.kind.name())?;
    j.str("severity", a.severity.name())?;
    j.str("subject", &a.subject.to_string())?;
    j.str("summary", &a.summary)?;
    match &a.process {
        Some(p) => {
            j.u64("pid", u64::from(p.pid))?;
            j.bytes("comm", p.comm.as_bytes())?;
        }
        None => {
            j.null("pid")?;
            j.null("comm")?;
        }
    }
    match a.process.as_ref().and_then(|p| Some((p, p.info.as_ref()?))) {
        Some((p, info)) => {
            j.key("process")?;
            write_process(j, p, info)?;
        }
        None => j.null("process")?,
    }
    j.opt_u64("netns", a.netns.map(u64::from))?;
    j.key("evidence")?;
    j.open(b'{')?;
    for (key, value) in &a.evidence {
        match value {
            Evidence::Null => j.null(key)?,
            Evidence::Bool(b) => j.bool(key, *b)?,
            Evidence::Int(n) => j.u64(key, *n)?,
            Evidence::Real(x) if x.is_finite() => j.raw(key, format!("{x:.3}").as_bytes())?,
            Evidence::Real(_) => j.null(key)?,
            Evidence::Text(s) => j.str(key, s)?,
            Evidence::List(items) => {
                j.key(key)?;
                write_list(j, items)?;
            }
        }
    }
    j.close(b'}')?;
    j.close(b'}')
}

/// `{"pid","comm","ppid","exe","cmdline","uid","user","cgroup"}`.
fn write_process(j: &mut Writer<&mut Vec<u8>>, p: &AlertProcess, info: &ProcessInfo) -> io::Result<()> {
    j.open(b'{')?;
    j.u64("pid", u64::from(p.pid))?;
    j.bytes("comm", p.comm.as_bytes())?;
    j.opt_u64("ppid", info.ppid.map(u64::from))?;
    j.opt_str("exe", info.exe.as_deref())?;
    match &info.cmdline {
        Some(args) => {
            j.key("cmdline")?;
            write_list(j, args)?;
        }
        None => j.null("cmdline")?,
    }
    j.opt_u64("uid", info.uid.map(u64::from))?;
    j.opt_str("user", info.user.as_deref())?;
    j.opt_str("cgroup", info.cgroup.as_deref())?;
    j.close(b'}')
}

fn write_list(j: &mut Writer<&mut Vec<u8>>, items: &[String]) -> io::Result<()> {
    j.open(b'[')?;
    for item in items {
        j.string(item.as_bytes())?;
    }
    j.close(b']')
}

const RESET: &str = "\x1b[0m";

/// The colour of an alert line.
fn severity_color(s: Severity) -> &'static str {
    match s {
        Severity::Info => "\x1b[1;36m",
        Severity::Warning => "\x1b[1;33m",
        Severity::Critical => "\x1b[1;31m",
    }
}

/// Appends text for a terminal, control characters escaped ([`crate::escape`]).
pub(crate) fn push_printable(buf: &mut Vec<u8>, text: &str) {
    buf.extend_from_slice(crate::escape::text(text).as_bytes());
}

/// Appends the alert's text lines after `time`: `TIME ALERT severity kind [subject]
/// summary`, then, when the process's details are known, an indented line with them.
pub(crate) fn push_alert_text(buf: &mut Vec<u8>, time: &[u8], a: &Alert, color: bool) {
    buf.extend_from_slice(time);
    buf.push(b' ');
    if color {
        buf.extend_from_slice(severity_color(a.severity).as_bytes());
    }
    buf.extend_from_slice(b"ALERT ");
    buf.extend_from_slice(a.severity.label().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(a.kind.name().as_bytes());
    buf.extend_from_slice(b" [");
    push_printable(buf, &a.subject.to_string());
    buf.extend_from_slice(b"] ");
    push_printable(buf, &a.summary);
    if color {
        buf.extend_from_slice(RESET.as_bytes());
    }
    buf.push(b'\n');
    if let Some(details) = a.process.as_ref().and_then(process_line) {
        buf.extend_from_slice(&vec![b' '; time.len() + 1]);
        buf.extend_from_slice(b"      ");
        push_printable(buf, &details);
        buf.push(b'\n');
    }
}

/// `process 42 (tcpload), parent 1, user root (0), exe /x, cmdline: a b`, when the
/// details are known.
pub(crate) fn process_line(p: &AlertProcess) -> Option<String> {
    let info = p.info.as_ref()?;
    let mut parts = vec![format!("process {} ({})", p.pid, crate::escape::comm(&p.comm))];
    if let Some(ppid) = info.ppid {
        parts.push(format!("parent {ppid}"));
    }
    match (&info.user, info.uid) {
        (Some(user), Some(uid)) => parts.push(format!("user {user} ({uid})")),
        (None, Some(uid)) => parts.push(format!("uid {uid}")),
        (Some(user), None) => parts.push(format!("user {user}")),
        (None, None) => {}
    }
    if let Some(exe) = &info.exe {
        parts.push(format!("exe {exe}"));
    }
    if let Some(cgroup) = &info.cgroup {
        parts.push(format!("cgroup {cgroup}"));
    }
    let mut line = parts.join(", ");
    if let Some(args) = &info.cmdline {
        line.push_str(", cmdline: ");
        line.push_str(&args.join(" "));
    }
    Some(line)
}
