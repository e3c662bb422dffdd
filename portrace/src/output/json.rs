//! The JSON lines format: this module owns the byte-exact rendering of the versioned
//! contract documented in `docs/json.md` (schema 1): one object per line, keys in a fixed
//! order, written by hand into a reused buffer so the hot path neither allocates nor goes
//! through a serializer.

use std::io::{self, Write};
use std::net::IpAddr;

use super::{push_ip, push_json_str, push_micros, push_u64, Sink, Start, VERSION};
use crate::clock::Rfc3339Cache;
use crate::format::line::push_fixed;
use crate::format::errno::push_tcp_name;
use crate::format::json::needs_no_escape;
use crate::record::{Comm, Endpoints, Family, Lost, NetnsInfo, Owner, ProcessInfo, SocketRecord, Timestamp, Transition};
use crate::summary::Summary;

/// The schema version written in the start record. Fields are only added within a
/// version; removing a field or changing its meaning bumps it.
pub const SCHEMA: u32 = 1;

/// `,"<name>":`, the text before a member's value, as one literal.
macro_rules! key {
    ($name:literal) => {
        concat!(",\"", $name, "\":")
    };
}

pub(super) struct JsonSink {
    out: Box<dyn Write + Send>,
    line: Vec<u8>,
    /// `--explain`: transitions carry `explain`, their cause in plain words.
    explain: bool,
    /// Every line has a time, and a storm's lines mostly share their second.
    rfc3339: Rfc3339Cache,
}

impl JsonSink {
    pub(super) fn new(out: Box<dyn Write + Send>, explain: bool) -> JsonSink {
        JsonSink { out, line: Vec::with_capacity(512), explain, rfc3339: Rfc3339Cache::new() }
    }

    /// Starts a line: `{"type":"<kind>"`.
    #[inline(always)]
    fn begin(&mut self, kind: &str) {
        self.line.clear();
        self.line.extend_from_slice(b"{\"type\":\"");
        self.line.extend_from_slice(kind.as_bytes());
        self.line.push(b'"');
    }

    /// Appends `,"time":"<rfc3339>","ts_ns":<mono>`.
    #[inline(always)]
    fn time(&mut self, time: Timestamp) {
        self.line.extend_from_slice(b",\"time\":\"");
        self.rfc3339.push(&mut self.line, time.unix_ns);
        self.line.extend_from_slice(b"\",\"ts_ns\":");
        push_u64(&mut self.line, time.mono_ns);
    }

    // The field writers below are always inlined, and take the whole `,"key":` text
    // (from `key!`) as one literal: its copy then has a length the compiler sees and
    // becomes a few moves instead of a call into the C library's memcpy (see
    // `crate::format::line`).

    /// Appends `key`, a member's `,"name":` from [`key!`].
    #[inline(always)]
    fn key(&mut self, key: &'static str) {
        self.line.extend_from_slice(key.as_bytes());
    }

    #[inline(always)]
    fn str_field(&mut self, key: &'static str, value: &[u8]) {
        self.key(key);
        self.line.push(b'"');
        push_json_str(&mut self.line, value);
        self.line.push(b'"');
    }

    /// A process name. Nearly all are printable ASCII, which needs no escaping: those are
    /// copied from the fixed-size buffer whole.
    #[inline(always)]
    fn comm_field(&mut self, key: &'static str, comm: &Comm) {
        let name = comm.as_bytes();
        if needs_no_escape(name) {
            self.key(key);
            self.line.push(b'"');
            push_fixed(&mut self.line, comm.raw(), name.len());
            self.line.push(b'"');
        } else {
            self.str_field(key, name);
        }
    }

    /// A string that needs no escaping: a name from a fixed list.
    #[inline(always)]
    fn name_field(&mut self, key: &'static str, value: &[u8]) {
        self.key(key);
        self.line.push(b'"');
        self.line.extend_from_slice(value);
        self.line.push(b'"');
    }

    #[inline(always)]
    fn addr_field(&mut self, key: &'static str, addr: IpAddr) {
        self.key(key);
        self.line.push(b'"');
        push_ip(&mut self.line, addr);
        self.line.push(b'"');
    }

    #[inline(always)]
    fn u64_field(&mut self, key: &'static str, value: u64) {
        self.key(key);
        push_u64(&mut self.line, value);
    }

    #[inline(always)]
    fn bool_field(&mut self, key: &'static str, value: bool) {
        self.key(key);
        self.line.extend_from_slice(if value { b"true" } else { b"false" });
    }

    #[inline(always)]
    fn null_field(&mut self, key: &'static str) {
        self.key(key);
        self.line.extend_from_slice(b"null");
    }

    /// Appends `family`, `saddr`, `sport`, `daddr`, `dport`.
    #[inline(always)]
    fn endpoints(&mut self, family: Family, e: &Endpoints) {
        self.name_field(key!("family"), family.name().as_bytes());
        self.addr_field(key!("saddr"), e.saddr);
        self.u64_field(key!("sport"), u64::from(e.sport));
        self.addr_field(key!("daddr"), e.daddr);
        self.u64_field(key!("dport"), u64::from(e.dport));
    }

    /// Appends `owner_pid`, `owner_comm` (both null when unknown) and `owner_source`
    /// (`"unknown"` when unknown).
    #[inline(always)]
    fn owner(&mut self, owner: Option<Owner>) {
        match owner {
            Some(owner) => {
                self.u64_field(key!("owner_pid"), u64::from(owner.pid));
                self.comm_field(key!("owner_comm"), &owner.comm);
                self.name_field(key!("owner_source"), owner.source.name().as_bytes());
                match owner.cgroup {
                    0 => self.null_field(key!("owner_cgroup")),
                    id => self.u64_field(key!("owner_cgroup"), id),
                }
            }
            None => {
                self.null_field(key!("owner_pid"));
                self.null_field(key!("owner_comm"));
                self.name_field(key!("owner_source"), b"unknown");
                self.null_field(key!("owner_cgroup"));
            }
        }
    }

    fn opt_str_field(&mut self, key: &'static str, value: Option<&str>) {
        match value {
            Some(v) => self.str_field(key, v.as_bytes()),
            None => self.null_field(key),
        }
    }

    fn opt_u64_field(&mut self, key: &'static str, value: Option<u64>) {
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
        self.u64_field(key!("schema"), u64::from(SCHEMA));
        self.str_field(key!("portrace"), VERSION.as_bytes());
        self.time(start.time);
        self.str_field(key!("host"), start.host.as_bytes());
        self.str_field(key!("kernel"), start.kernel.as_bytes());
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
        self.u64_field(key!("socket"), s.socket);
        self.endpoints(s.family, &s.ends);
        self.name_field(key!("state"), s.state.name().as_bytes());
        self.owner(s.owner);
        self.u64_field(key!("netns"), u64::from(s.ends.netns));
        self.u64_field(key!("inode"), s.inode);
        self.u64_field(key!("uid"), u64::from(s.uid));
        self.emit()
    }

    fn process(&mut self, p: &ProcessInfo) -> io::Result<()> {
        self.begin("process");
        self.time(p.time);
        self.u64_field(key!("pid"), u64::from(p.pid));
        self.str_field(key!("comm"), p.comm.as_bytes());
        self.opt_u64_field(key!("ppid"), p.ppid.map(u64::from));
        self.opt_str_field(key!("exe"), p.exe.as_deref());
        self.key(key!("cmdline"));
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
        self.opt_u64_field(key!("uid"), p.uid.map(u64::from));
        self.opt_str_field(key!("user"), p.user.as_deref());
        self.opt_str_field(key!("cgroup"), p.cgroup.as_deref());
        self.emit()
    }

    fn cgroup(&mut self, g: &crate::record::CgroupInfo) -> io::Result<()> {
        let id = g.identity();
        self.begin("cgroup");
        self.time(g.time);
        self.u64_field(key!("id"), g.id);
        self.opt_str_field(key!("path"), g.path.as_deref());
        self.opt_str_field(key!("unit"), id.unit.as_deref());
        self.opt_u64_field(key!("user"), id.user.map(u64::from));
        self.opt_str_field(key!("container"), id.container.as_ref().map(|c| c.id.as_str()));
        self.opt_str_field(key!("runtime"), id.container.as_ref().map(|c| c.runtime.name()));
        self.opt_str_field(key!("pod"), id.pod.as_deref());
        self.emit()
    }

    fn netns(&mut self, n: &NetnsInfo) -> io::Result<()> {
        self.begin("netns");
        self.time(n.time);
        self.u64_field(key!("netns"), u64::from(n.netns));
        self.key(key!("port_range"));
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
        self.u64_field(key!("pid"), u64::from(t.pid));
        self.comm_field(key!("comm"), &t.comm);
        self.u64_field(key!("socket"), t.socket);
        self.endpoints(t.family, &t.ends);
        self.name_field(key!("oldstate"), t.oldstate.name().as_bytes());
        self.name_field(key!("newstate"), t.newstate.name().as_bytes());
        self.key(key!("prev_state_us"));
        match t.prev_state_ns {
            Some(ns) => push_micros(&mut self.line, ns),
            None => self.line.extend_from_slice(b"null"),
        }
        self.bool_field(key!("prev_state_at_least"), t.prev_state_at_least);
        self.owner(t.owner);
        match t.reason {
            Some(reason) => self.name_field(key!("reason"), reason.name().as_bytes()),
            None => self.null_field(key!("reason")),
        }
        match t.error {
            Some(errno) => {
                self.key(key!("error"));
                self.line.push(b'"');
                push_tcp_name(&mut self.line, errno);
                self.line.push(b'"');
            }
            None => self.null_field(key!("error")),
        }
        self.u64_field(key!("retransmits"), u64::from(t.retransmits));
        self.u64_field(key!("netns"), u64::from(t.ends.netns));
        if self.explain {
            self.str_field(key!("explain"), crate::explain::explain(t).to_string().as_bytes());
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
        self.u64_field(key!("count"), lost.count);
        self.name_field(key!("cause"), lost.cause.name().as_bytes());
        self.emit()
    }

    fn end(&mut self, summary: &Summary) -> io::Result<()> {
        self.begin("end");
        self.time(summary.end());
        self.u64_field(key!("transitions"), summary.transitions());
        self.u64_field(key!("lost"), summary.lost_total());
        self.key(key!("lost_by_cause"));
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
        self.key(key!("by_transition"));
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
