//! The CSV format: this module owns the column layout (one header row, then a row per
//! inventory socket, transition or loss, all with the same twenty-eight columns, empty where
//! a kind of row has no value) and RFC 4180 quoting of the command names. Rows end with
//! `\n`, as Unix tools expect; RFC 4180 readers accept it. Text is UTF-8. Command names
//! are set by their processes, so they are made safe first ([`crate::escape::csv_cell`]):
//! control characters and bytes that are not UTF-8 escaped (`\x1b`), and a name that
//! would start a spreadsheet formula (`=`, `+`, `-`, `@`) prefixed with `'`. There are no
//! start or end rows.
//!
//! A `socket` row puts the socket's state in `newstate`. An unknown owner has empty
//! `owner_pid` and `owner_comm` and `owner_source` `unknown`, as in JSON. The last four
//! columns are the owner's cgroup id and what its path names (unit, container id, pod UID,
//! from the cgroup announced before the row; see `crate::cgroup`).
//!
//! Alerts have no rows: their evidence does not fit these columns, and adding columns would
//! change the layout every CSV reader depends on. They are in the end-of-run summary on
//! stderr; `--format json` has them in the stream.

use std::io::{self, Write};

use super::{push_micros, push_u64, AddrText, Sink, Start};
use crate::clock::Rfc3339;
use crate::format::errno::push_tcp_name;
use crate::record::{Endpoints, Family, Lost, Owner, SocketRecord, Timestamp, Transition};
use crate::summary::Summary;

pub(super) const HEADER: &str = "type,time,ts_ns,pid,comm,socket,family,saddr,sport,daddr,dport,\
                                 oldstate,newstate,prev_state_us,prev_state_at_least,\
                                 owner_pid,owner_comm,owner_source,reason,error,retransmits,\
                                 netns,count,cause,owner_cgroup,cgroup_unit,container,pod\n";

pub(super) struct CsvSink {
    out: Box<dyn Write + Send>,
    line: Vec<u8>,
    header_written: bool,
    /// What each cgroup announced so far names: its unit, container and pod.
    cgroups: std::collections::HashMap<u64, crate::cgroup::Identity>,
}

/// Cgroups whose names a CSV sink keeps at most; past this it forgets them all, and later
/// rows of those cgroups show only the id.
const CGROUPS_KEPT: usize = 1 << 16;

impl CsvSink {
    pub(super) fn new(out: Box<dyn Write + Send>) -> CsvSink {
        CsvSink { out, line: Vec::with_capacity(256), header_written: false, cgroups: Default::default() }
    }

    /// Writes the header row unless it was written already (a caller that skips `start`
    /// still gets one).
    fn header(&mut self) -> io::Result<()> {
        if !self.header_written {
            self.header_written = true;
            self.out.write_all(HEADER.as_bytes())?;
        }
        Ok(())
    }

    /// Starts a row: `kind,time,ts_ns`.
    fn begin(&mut self, kind: &str, time: Timestamp) {
        self.line.clear();
        self.line.extend_from_slice(kind.as_bytes());
        self.line.push(b',');
        self.line.extend_from_slice(Rfc3339::new(time.unix_ns).as_bytes());
        self.line.push(b',');
        push_u64(&mut self.line, time.mono_ns);
    }

    fn field(&mut self, text: &[u8]) {
        self.line.push(b',');
        self.line.extend_from_slice(text);
    }

    fn u64_field(&mut self, n: u64) {
        self.line.push(b',');
        push_u64(&mut self.line, n);
    }

    /// Appends `n` empty fields.
    fn empty(&mut self, n: usize) {
        self.line.resize(self.line.len() + n, b',');
    }

    /// Appends `family,saddr,sport,daddr,dport`.
    fn endpoints(&mut self, family: Family, e: &Endpoints) {
        self.field(family.name().as_bytes());
        self.field(AddrText::ip(e.saddr).as_bytes());
        self.u64_field(u64::from(e.sport));
        self.field(AddrText::ip(e.daddr).as_bytes());
        self.u64_field(u64::from(e.dport));
    }

    /// Appends `owner_pid,owner_comm,owner_source`.
    fn owner(&mut self, owner: Option<Owner>) {
        match owner {
            Some(owner) => {
                self.u64_field(u64::from(owner.pid));
                self.line.push(b',');
                push_field(&mut self.line, owner.comm.as_bytes());
                self.field(owner.source.name().as_bytes());
            }
            None => {
                self.empty(2);
                self.field(b"unknown");
            }
        }
    }

    /// Appends `owner_cgroup,cgroup_unit,container,pod`.
    fn cgroup(&mut self, owner: Option<Owner>) {
        let id = owner.map_or(0, |o| o.cgroup);
        if id == 0 {
            self.empty(4);
            return;
        }
        self.u64_field(id);
        let named = self.cgroups.get(&id);
        for value in [
            named.and_then(|n| n.unit.as_deref()),
            named.and_then(|n| n.container.as_ref()).map(|c| c.id.as_str()),
            named.and_then(|n| n.pod.as_deref()),
        ] {
            self.line.push(b',');
            if let Some(v) = value {
                push_field(&mut self.line, v.as_bytes());
            }
        }
    }

    /// Ends the row and writes it.
    fn emit(&mut self) -> io::Result<()> {
        self.line.push(b'\n');
        self.out.write_all(&self.line)
    }
}

/// Appends untrusted `text` (a command name) as one CSV field: control characters and
/// invalid UTF-8 escaped and a formula start neutralised ([`crate::escape::push_csv_cell`]),
/// then quoted (with quotes doubled) only when it holds a comma or a quote.
pub(super) fn push_field(buf: &mut Vec<u8>, text: &[u8]) {
    let start = buf.len();
    crate::escape::push_csv_cell(buf, text);
    if !buf[start..].iter().any(|b| matches!(b, b',' | b'"')) {
        return;
    }
    // Rare: quote in place, doubling the quotes.
    let quotes = buf[start..].iter().filter(|&&b| b == b'"').count();
    let end = buf.len();
    buf.resize(end + quotes + 2, 0);
    let (mut from, mut to) = (end, buf.len());
    to -= 1;
    buf[to] = b'"';
    while from > start {
        from -= 1;
        to -= 1;
        buf[to] = buf[from];
        if buf[from] == b'"' {
            to -= 1;
            buf[to] = b'"';
        }
    }
    buf[start] = b'"';
}

impl Sink for CsvSink {
    fn start(&mut self, _start: &Start) -> io::Result<()> {
        self.header()
    }

    fn socket(&mut self, s: &SocketRecord) -> io::Result<()> {
        self.header()?;
        self.begin("socket", s.time);
        // Empty pid and comm.
        self.empty(2);
        self.u64_field(s.socket);
        self.endpoints(s.family, &s.ends);
        // Empty oldstate; the state as newstate; empty prev_state_us, prev_state_at_least.
        self.empty(1);
        self.field(s.state.name().as_bytes());
        self.empty(2);
        self.owner(s.owner);
        // Empty reason, error, retransmits.
        self.empty(3);
        self.u64_field(u64::from(s.ends.netns));
        // Empty count and cause.
        self.empty(2);
        self.cgroup(s.owner);
        self.emit()
    }

    fn transition(&mut self, t: &Transition) -> io::Result<()> {
        self.header()?;
        self.begin("transition", t.time);
        self.u64_field(u64::from(t.pid));
        self.line.push(b',');
        push_field(&mut self.line, t.comm.as_bytes());
        self.u64_field(t.socket);
        self.endpoints(t.family, &t.ends);
        self.field(t.oldstate.name().as_bytes());
        self.field(t.newstate.name().as_bytes());
        self.line.push(b',');
        if let Some(ns) = t.prev_state_ns {
            push_micros(&mut self.line, ns);
        }
        self.field(if t.prev_state_at_least { b"true" } else { b"false" });
        self.owner(t.owner);
        self.line.push(b',');
        if let Some(reason) = t.reason {
            self.line.extend_from_slice(reason.name().as_bytes());
        }
        self.line.push(b',');
        if let Some(errno) = t.error {
            push_tcp_name(&mut self.line, errno);
        }
        self.u64_field(u64::from(t.retransmits));
        self.u64_field(u64::from(t.ends.netns));
        // Empty count and cause.
        self.empty(2);
        self.cgroup(t.owner);
        self.emit()
    }

    fn lost(&mut self, lost: &Lost) -> io::Result<()> {
        self.header()?;
        self.begin("lost", lost.time);
        // Empty pid through netns.
        self.empty(19);
        self.u64_field(lost.count);
        self.field(lost.cause.name().as_bytes());
        self.empty(4);
        self.emit()
    }

    fn cgroup(&mut self, g: &crate::record::CgroupInfo) -> io::Result<()> {
        if self.cgroups.len() >= CGROUPS_KEPT {
            self.cgroups.clear();
        }
        self.cgroups.insert(g.id, g.identity());
        Ok(())
    }

    fn end(&mut self, _summary: &Summary) -> io::Result<()> {
        self.header()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
