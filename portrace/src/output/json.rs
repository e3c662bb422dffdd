//! The JSON lines format: this module owns the byte-exact rendering of the versioned
//! contract documented in `docs/json.md` (schema 1): one object per line, keys in a fixed
//! order, written by hand into a reused buffer so the hot path neither allocates nor goes
//! through a serializer.

use std::io::{self, Write};

use super::{push_json_str, push_micros, push_u64, AddrText, Sink, Start, VERSION};
use crate::clock::Rfc3339;
use crate::format::errno::push_tcp_name;
use crate::record::{Endpoints, Family, Lost, NetnsInfo, Owner, ProcessInfo, SocketRecord, Timestamp, Transition};
use crate::summary::Summary;

/// The schema version written in the start record. Fields are only added within a
/// version; removing a field or changing its meaning bumps it.
pub const SCHEMA: u32 = 1;

pub(super) struct JsonSink {
    out: Box<dyn Write + Send>,
    line: Vec<u8>,
    /// `--explain`: transitions carry `explain`, their cause in plain words.
    explain: bool,
}

impl JsonSink {
    pub(super) fn new(out: Box<dyn Write + Send>, explain: bool) -> JsonSink {
        JsonSink { out, line: Vec::with_capacity(512), explain }
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

    /// A string that needs no escaping: a name from a fixed list, an address.
    fn name_field(&mut self, key: &str, value: &[u8]) {
        self.key(key);
        self.line.push(b'"');
        self.line.extend_from_slice(value);
        self.line.push(b'"');
    }

    fn u64_field(&mut self, key: &str, value: u64) {
        self.key(key);
        push_u64(&mut self.line, value);
    }

    fn bool_field(&mut self, key: &str, value: bool) {
        self.key(key);
        self.line.extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn null_field(&mut self, key: &str) {
        self.key(key);
        self.line.extend_from_slice(b"null");
    }

    /// Appends `family`, `saddr`, `sport`, `daddr`, `dport`.
    fn endpoints(&mut self, family: Family, e: &Endpoints) {
        self.name_field("family", family.name().as_bytes());
        self.name_field("saddr", AddrText::ip(e.saddr).as_bytes());
        self.u64_field("sport", u64::from(e.sport));
        self.name_field("daddr", AddrText::ip(e.daddr).as_bytes());
        self.u64_field("dport", u64::from(e.dport));
    }

    /// Appends `owner_pid`, `owner_comm` (both null when unknown) and `owner_source`
    /// (`"unknown"` when unknown).
    fn owner(&mut self, owner: Option<Owner>) {
        match owner {
            Some(owner) => {
                self.u64_field("owner_pid", u64::from(owner.pid));
                self.str_field("owner_comm", owner.comm.as_bytes());
                self.name_field("owner_source", owner.source.name().as_bytes());
                match owner.cgroup {
                    0 => self.null_field("owner_cgroup"),
                    id => self.u64_field("owner_cgroup", id),
                }
            }
            None => {
                self.null_field("owner_pid");
                self.null_field("owner_comm");
                self.name_field("owner_source", b"unknown");
                self.null_field("owner_cgroup");
            }
        }
    }

    fn opt_str_field(&mut self, key: &str, value: Option<&str>) {
        match value {
            Some(v) => self.str_field(key, v.as_bytes()),
            None => self.null_field(key),
        }
    }

    fn opt_u64_field(&mut self, key: &str, value: Option<u64>) {
        match value {
            Some(v) => self.u64_field(key, v),
            None => self.null_field(key),
        }
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
        if !start.features.is_empty() {
            self.line.extend_from_slice(b",\"features\":{");
            for (i, (feature, state)) in start.features.iter().enumerate() {
                if i > 0 {
                    self.line.push(b',');
                }
                self.line.push(b'"');
                self.line.extend_from_slice(feature.key().as_bytes());
                self.line.extend_from_slice(if state.on { b"\":{\"on\":true,\"reason\":" } else { b"\":{\"on\":false,\"reason\":" });
                match &state.reason {
                    Some(reason) => {
                        self.line.push(b'"');
                        push_json_str(&mut self.line, reason.as_bytes());
                        self.line.push(b'"');
                    }
                    None => self.line.extend_from_slice(b"null"),
                }
                self.line.push(b'}');
            }
            self.line.push(b'}');
        }
        self.emit()
    }

    fn socket(&mut self, s: &SocketRecord) -> io::Result<()> {
        self.begin("socket");
        self.time(s.time);
        self.u64_field("socket", s.socket);
        self.endpoints(s.family, &s.ends);
        self.name_field("state", s.state.name().as_bytes());
        self.owner(s.owner);
        self.u64_field("netns", u64::from(s.ends.netns));
        self.u64_field("inode", s.inode);
        self.u64_field("uid", u64::from(s.uid));
        self.emit()
    }

    fn process(&mut self, p: &ProcessInfo) -> io::Result<()> {
        self.begin("process");
        self.time(p.time);
        self.u64_field("pid", u64::from(p.pid));
        self.str_field("comm", p.comm.as_bytes());
        self.opt_u64_field("ppid", p.ppid.map(u64::from));
        self.opt_str_field("exe", p.exe.as_deref());
        self.key("cmdline");
        match &p.cmdline {
            Some(args) => {
                self.line.push(b'[');
                for (i, arg) in args.iter().enumerate() {
                    if i > 0 {
                        self.line.push(b',');
                    }
                    self.line.push(b'"');
                    push_json_str(&mut self.line, arg.as_bytes());
                    self.line.push(b'"');
                }
                self.line.push(b']');
            }
            None => self.line.extend_from_slice(b"null"),
        }
        self.opt_u64_field("uid", p.uid.map(u64::from));
        self.opt_str_field("user", p.user.as_deref());
        self.opt_str_field("cgroup", p.cgroup.as_deref());
        self.emit()
    }

    fn cgroup(&mut self, g: &crate::record::CgroupInfo) -> io::Result<()> {
        let id = g.identity();
        self.begin("cgroup");
        self.time(g.time);
        self.u64_field("id", g.id);
        self.opt_str_field("path", g.path.as_deref());
        self.opt_str_field("unit", id.unit.as_deref());
        self.opt_u64_field("user", id.user.map(u64::from));
        self.opt_str_field("container", id.container.as_ref().map(|c| c.id.as_str()));
        self.opt_str_field("runtime", id.container.as_ref().map(|c| c.runtime.name()));
        self.opt_str_field("pod", id.pod.as_deref());
        self.emit()
    }

    fn netns(&mut self, n: &NetnsInfo) -> io::Result<()> {
        self.begin("netns");
        self.time(n.time);
        self.u64_field("netns", u64::from(n.netns));
        self.key("port_range");
        match n.port_range {
            Some((lo, hi)) => {
                self.line.push(b'[');
                push_u64(&mut self.line, u64::from(lo));
                self.line.push(b',');
                push_u64(&mut self.line, u64::from(hi));
                self.line.push(b']');
            }
            None => self.line.extend_from_slice(b"null"),
        }
        self.emit()
    }

    fn transition(&mut self, t: &Transition) -> io::Result<()> {
        self.begin("transition");
        self.time(t.time);
        self.u64_field("pid", u64::from(t.pid));
        self.str_field("comm", t.comm.as_bytes());
        self.u64_field("socket", t.socket);
        self.endpoints(t.family, &t.ends);
        self.name_field("oldstate", t.oldstate.name().as_bytes());
        self.name_field("newstate", t.newstate.name().as_bytes());
        self.key("prev_state_us");
        match t.prev_state_ns {
            Some(ns) => push_micros(&mut self.line, ns),
            None => self.line.extend_from_slice(b"null"),
        }
        self.bool_field("prev_state_at_least", t.prev_state_at_least);
        self.owner(t.owner);
        match t.reason {
            Some(reason) => self.name_field("reason", reason.name().as_bytes()),
            None => self.null_field("reason"),
        }
        match t.error {
            Some(errno) => {
                self.key("error");
                self.line.push(b'"');
                push_tcp_name(&mut self.line, errno);
                self.line.push(b'"');
            }
            None => self.null_field("error"),
        }
        self.u64_field("retransmits", u64::from(t.retransmits));
        self.u64_field("netns", u64::from(t.ends.netns));
        if self.explain {
            self.str_field("explain", crate::explain::explain(t).to_string().as_bytes());
        }
        self.emit()
    }

    fn alert(&mut self, alert: &crate::record::Alert) -> io::Result<()> {
        self.line.clear();
        super::push_alert_json(&mut self.line, alert);
        self.line.push(b'\n');
        self.out.write_all(&self.line)
    }

    fn lost(&mut self, lost: &Lost) -> io::Result<()> {
        self.begin("lost");
        self.time(lost.time);
        self.u64_field("count", lost.count);
        self.name_field("cause", lost.cause.name().as_bytes());
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
