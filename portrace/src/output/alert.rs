//! How alerts look: the `"type":"alert"` JSON object (in the JSON lines stream and in the
//! report's `alerts` array) and the highlighted text lines of the timeline. Text shown to
//! a terminal has every control character replaced by `?`: process names, executables and
//! command lines come from the traced processes and must not send escape sequences.

use super::{push_json_str, push_u64};
use crate::clock::Rfc3339;
use crate::record::alert::{Alert, AlertProcess, Evidence, Severity};

/// Appends the alert as one JSON object (no newline). Keys, in order: `type`, `time`,
/// `ts_ns`, `kind`, `severity`, `subject`, `summary`, `pid`, `comm`, `process`, `netns`,
/// `evidence`; see docs/json.md.
pub(crate) fn push_alert_json(buf: &mut Vec<u8>, a: &Alert) {
    buf.extend_from_slice(b"{\"type\":\"alert\",\"time\":\"");
    buf.extend_from_slice(Rfc3339::new(a.time.unix_ns).as_bytes());
    buf.extend_from_slice(b"\",\"ts_ns\":");
    push_u64(buf, a.time.mono_ns);
    str_field(buf, "kind", a.kind.name().as_bytes());
    str_field(buf, "severity", a.severity.name().as_bytes());
    str_field(buf, "subject", a.subject.to_string().as_bytes());
    str_field(buf, "summary", a.summary.as_bytes());
    match &a.process {
        Some(p) => {
            key(buf, "pid");
            push_u64(buf, u64::from(p.pid));
            str_field(buf, "comm", p.comm.as_bytes());
        }
        None => buf.extend_from_slice(b",\"pid\":null,\"comm\":null"),
    }
    key(buf, "process");
    match a.process.as_ref().and_then(|p| p.info.as_ref().map(|_| p)) {
        Some(p) => push_process(buf, p),
        None => buf.extend_from_slice(b"null"),
    }
    key(buf, "netns");
    match a.netns {
        Some(n) => push_u64(buf, u64::from(n)),
        None => buf.extend_from_slice(b"null"),
    }
    key(buf, "evidence");
    buf.push(b'{');
    for (i, (k, v)) in a.evidence.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.push(b'"');
        buf.extend_from_slice(k.as_bytes());
        buf.extend_from_slice(b"\":");
        push_evidence(buf, v);
    }
    buf.extend_from_slice(b"}}");
}

fn key(buf: &mut Vec<u8>, k: &str) {
    buf.extend_from_slice(b",\"");
    buf.extend_from_slice(k.as_bytes());
    buf.extend_from_slice(b"\":");
}

fn str_field(buf: &mut Vec<u8>, k: &str, v: &[u8]) {
    key(buf, k);
    push_str(buf, v);
}

fn push_str(buf: &mut Vec<u8>, v: &[u8]) {
    buf.push(b'"');
    push_json_str(buf, v);
    buf.push(b'"');
}

fn opt_u64(buf: &mut Vec<u8>, k: &str, v: Option<u64>) {
    key(buf, k);
    match v {
        Some(n) => push_u64(buf, n),
        None => buf.extend_from_slice(b"null"),
    }
}

fn opt_str(buf: &mut Vec<u8>, k: &str, v: Option<&str>) {
    key(buf, k);
    match v {
        Some(s) => push_str(buf, s.as_bytes()),
        None => buf.extend_from_slice(b"null"),
    }
}

/// `{"pid","comm","ppid","exe","cmdline","uid","user","cgroup"}`.
fn push_process(buf: &mut Vec<u8>, p: &AlertProcess) {
    let info = p.info.as_ref().expect("called with details");
    buf.extend_from_slice(b"{\"pid\":");
    push_u64(buf, u64::from(p.pid));
    str_field(buf, "comm", p.comm.as_bytes());
    opt_u64(buf, "ppid", info.ppid.map(u64::from));
    opt_str(buf, "exe", info.exe.as_deref());
    key(buf, "cmdline");
    match &info.cmdline {
        Some(args) => push_list(buf, args),
        None => buf.extend_from_slice(b"null"),
    }
    opt_u64(buf, "uid", info.uid.map(u64::from));
    opt_str(buf, "user", info.user.as_deref());
    opt_str(buf, "cgroup", info.cgroup.as_deref());
    buf.push(b'}');
}

fn push_list(buf: &mut Vec<u8>, items: &[String]) {
    buf.push(b'[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        push_str(buf, s.as_bytes());
    }
    buf.push(b']');
}

fn push_evidence(buf: &mut Vec<u8>, v: &Evidence) {
    match v {
        Evidence::Null => buf.extend_from_slice(b"null"),
        Evidence::Bool(b) => buf.extend_from_slice(if *b { b"true" } else { b"false" }),
        Evidence::Int(n) => push_u64(buf, *n),
        Evidence::Real(x) if x.is_finite() => {
            let text = format!("{x:.3}");
            buf.extend_from_slice(text.as_bytes());
        }
        Evidence::Real(_) => buf.extend_from_slice(b"null"),
        Evidence::Text(s) => push_str(buf, s.as_bytes()),
        Evidence::List(items) => push_list(buf, items),
    }
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
