//! Encoding: each record kind (socket, transition, lost, end, process, network namespace,
//! cgroup) appended to a block as its tag, its body's length and the body, and the
//! header's fields appended to the header body. Nothing here allocates on its own.

use std::net::IpAddr;

use portrace_ebpf::{Layout, SockLayout};

use crate::tracefile::{End, Header};
use super::{cause_code, flag, key, owner_source_code, process_flag, put_varint, reason_code, tag, zigzag, TimeBase};
use crate::filter::FilterSpec;
use crate::process_info::{kept_len, MAX_ARGS};
use crate::record::{CgroupInfo, Family, Lost, NetnsInfo, Owner, ProcessInfo, SocketRecord, Transition};

/// Appends a length byte and the bytes (at most 255).
fn put_short(buf: &mut Vec<u8>, bytes: &[u8]) {
    let len = bytes.len().min(255);
    buf.push(len as u8);
    buf.extend_from_slice(&bytes[..len]);
}

fn put_addr(buf: &mut Vec<u8>, addr: IpAddr) {
    match addr {
        IpAddr::V4(a) => buf.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => buf.extend_from_slice(&a.octets()),
    }
}

fn addr_flags(family: Family, saddr: IpAddr, daddr: IpAddr) -> u8 {
    let mut flags = 0;
    if family == Family::Ipv6 {
        flags |= flag::FAMILY_V6;
    }
    if saddr.is_ipv6() {
        flags |= flag::SADDR_V6;
    }
    if daddr.is_ipv6() {
        flags |= flag::DADDR_V6;
    }
    flags
}

fn put_owner(buf: &mut Vec<u8>, owner: &Owner) {
    put_varint(buf, u64::from(owner.pid));
    buf.push(owner_source_code(owner.source));
    put_short(buf, owner.comm.as_bytes());
}

/// Appends one record: its tag, its body's length and the body. `body` is scratch space,
/// kept by the caller so that nothing is allocated per record.
fn put_record(buf: &mut Vec<u8>, body: &mut Vec<u8>, tag: u8, encode: impl FnOnce(&mut Vec<u8>)) {
    body.clear();
    encode(body);
    buf.push(tag);
    put_varint(buf, body.len() as u64);
    buf.extend_from_slice(body);
}

pub fn put_transition(buf: &mut Vec<u8>, body: &mut Vec<u8>, time: &mut TimeBase, t: &Transition) {
    put_record(buf, body, tag::TRANSITION, |b| {
        time.put(b, t.time);
        let mut flags = addr_flags(t.family, t.ends.saddr, t.ends.daddr);
        if t.prev_state_ns.is_some() {
            flags |= flag::PREV;
        }
        if t.prev_state_at_least {
            flags |= flag::AT_LEAST;
        }
        if t.owner.is_some() {
            flags |= flag::OWNER;
        }
        if t.reason.is_some() {
            flags |= flag::REASON;
        }
        if t.error.is_some() {
            flags |= flag::ERROR;
        }
        b.push(flags);
        put_varint(b, t.socket);
        put_varint(b, u64::from(t.pid));
        put_short(b, t.comm.as_bytes());
        put_addr(b, t.ends.saddr);
        b.extend_from_slice(&t.ends.sport.to_le_bytes());
        put_addr(b, t.ends.daddr);
        b.extend_from_slice(&t.ends.dport.to_le_bytes());
        b.push(t.oldstate.kernel_number() << 4 | t.newstate.kernel_number());
        if let Some(ns) = t.prev_state_ns {
            put_varint(b, ns);
        }
        if let Some(owner) = &t.owner {
            put_owner(b, owner);
        }
        if let Some(reason) = t.reason {
            b.push(reason_code(reason));
        }
        if let Some(error) = t.error {
            put_varint(b, zigzag(i64::from(error)));
        }
        b.push(t.retransmits);
        put_varint(b, u64::from(t.ends.netns));
        // A trailing field, which readers that predate it ignore.
        put_varint(b, t.owner.map_or(0, |o| o.cgroup));
    });
}

pub fn put_socket(buf: &mut Vec<u8>, body: &mut Vec<u8>, time: &mut TimeBase, s: &SocketRecord) {
    put_record(buf, body, tag::SOCKET, |b| {
        time.put(b, s.time);
        let mut flags = addr_flags(s.family, s.ends.saddr, s.ends.daddr);
        if s.owner.is_some() {
            flags |= flag::OWNER;
        }
        b.push(flags);
        put_varint(b, s.socket);
        put_addr(b, s.ends.saddr);
        b.extend_from_slice(&s.ends.sport.to_le_bytes());
        put_addr(b, s.ends.daddr);
        b.extend_from_slice(&s.ends.dport.to_le_bytes());
        b.push(s.state.kernel_number());
        if let Some(owner) = &s.owner {
            put_owner(b, owner);
        }
        put_varint(b, u64::from(s.ends.netns));
        put_varint(b, s.inode);
        put_varint(b, u64::from(s.uid));
        put_varint(b, s.cookie);
        put_varint(b, s.owner.map_or(0, |o| o.cgroup));
    });
}

pub fn put_cgroup(buf: &mut Vec<u8>, body: &mut Vec<u8>, time: &mut TimeBase, g: &CgroupInfo) {
    put_record(buf, body, tag::CGROUP, |b| {
        time.put(b, g.time);
        put_varint(b, g.id);
        match &g.path {
            Some(path) => {
                b.push(1);
                put_text(b, &path[..kept_len(path)]);
            }
            None => b.push(0),
        }
    });
}

pub fn put_lost(buf: &mut Vec<u8>, body: &mut Vec<u8>, time: &mut TimeBase, l: &Lost) {
    put_record(buf, body, tag::LOST, |b| {
        time.put(b, l.time);
        put_varint(b, l.count);
        b.push(cause_code(l.cause));
    });
}

pub fn put_end(buf: &mut Vec<u8>, body: &mut Vec<u8>, time: &mut TimeBase, end: &End) {
    put_record(buf, body, tag::END, |b| {
        time.put(b, end.time);
        put_varint(b, end.transitions);
        b.push(end.lost.len() as u8);
        for (cause, n) in end.lost {
            b.push(cause_code(cause));
            put_varint(b, n);
        }
    });
}

/// Appends a text's length (varint) and bytes, cut to
/// [`MAX_TEXT`](crate::process_info::MAX_TEXT) bytes.
fn put_text(buf: &mut Vec<u8>, text: &str) {
    let len = kept_len(text);
    put_varint(buf, len as u64);
    buf.extend_from_slice(&text.as_bytes()[..len]);
}

pub fn put_process(buf: &mut Vec<u8>, body: &mut Vec<u8>, time: &mut TimeBase, p: &ProcessInfo) {
    put_record(buf, body, tag::PROCESS, |b| {
        time.put(b, p.time);
        let present = [
            (p.ppid.is_some(), process_flag::PPID),
            (p.exe.is_some(), process_flag::EXE),
            (p.cmdline.is_some(), process_flag::CMDLINE),
            (p.uid.is_some(), process_flag::UID),
            (p.user.is_some(), process_flag::USER),
            (p.cgroup.is_some(), process_flag::CGROUP),
            (p.start_ticks.is_some(), process_flag::START),
        ];
        b.push(present.iter().filter(|(is, _)| *is).fold(0, |flags, (_, bit)| flags | bit));
        put_varint(b, u64::from(p.pid));
        put_short(b, p.comm.as_bytes());
        if let Some(ppid) = p.ppid {
            put_varint(b, u64::from(ppid));
        }
        if let Some(exe) = &p.exe {
            put_text(b, exe);
        }
        if let Some(args) = &p.cmdline {
            let args = &args[..args.len().min(MAX_ARGS)];
            put_varint(b, args.len() as u64);
            for arg in args {
                put_text(b, arg);
            }
        }
        if let Some(uid) = p.uid {
            put_varint(b, u64::from(uid));
        }
        if let Some(user) = &p.user {
            put_text(b, user);
        }
        if let Some(cgroup) = &p.cgroup {
            put_text(b, cgroup);
        }
        if let Some(ticks) = p.start_ticks {
            put_varint(b, ticks);
        }
    });
}

pub fn put_netns(buf: &mut Vec<u8>, body: &mut Vec<u8>, time: &mut TimeBase, n: &NetnsInfo) {
    put_record(buf, body, tag::NETNS, |b| {
        time.put(b, n.time);
        put_varint(b, u64::from(n.netns));
        match n.port_range {
            Some((lo, hi)) => {
                b.push(1);
                b.extend_from_slice(&lo.to_le_bytes());
                b.extend_from_slice(&hi.to_le_bytes());
            }
            None => b.push(0),
        }
    });
}

pub(super) fn put_field(buf: &mut Vec<u8>, key: u8, value: &[u8]) {
    buf.push(key);
    put_varint(buf, value.len() as u64);
    buf.extend_from_slice(value);
}

fn layout_words(l: &Layout) -> [u16; 12] {
    [
        l.skaddr, l.oldstate, l.newstate, l.sport, l.dport, l.family, l.protocol, l.saddr, l.daddr,
        l.saddr_v6, l.daddr_v6, l.protocol_size,
    ]
}

fn sock_layout_words(l: &SockLayout) -> [u16; 20] {
    [
        l.family, l.protocol, l.protocol_size, l.sport, l.dport, l.saddr, l.daddr, l.saddr_v6,
        l.daddr_v6, l.num, l.rcv_saddr, l.cookie, l.net, l.net_inum, l.err, l.retransmits,
        l.tw_substate, l.tw_timer, l.timer_function, l.valid,
    ]
}

fn put_words(buf: &mut Vec<u8>, words: &[u16]) {
    for w in words {
        buf.extend_from_slice(&w.to_le_bytes());
    }
}

pub(super) fn put_filter(b: &mut Vec<u8>, f: &FilterSpec) {
    for ports in [&f.lports, &f.rports, &f.ports] {
        let n = ports.len().min(255);
        b.push(n as u8);
        put_words(b, &ports[..n]);
    }
    let n = f.nets.len().min(255);
    b.push(n as u8);
    for net in &f.nets[..n] {
        match net.addr {
            IpAddr::V4(a) => {
                b.push(4);
                b.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                b.push(6);
                b.extend_from_slice(&a.octets());
            }
        }
        b.push(net.prefix_len);
    }
    let n = f.pids.len().min(255);
    b.push(n as u8);
    for &pid in &f.pids[..n] {
        put_varint(b, u64::from(pid));
    }
    put_short(b, f.comm.as_deref().unwrap_or("").as_bytes());
    b.push(match f.family {
        None => 0,
        Some(Family::Ipv4) => 4,
        Some(Family::Ipv6) => 6,
    });
    let n = f.states.len().min(255);
    b.push(n as u8);
    for s in &f.states[..n] {
        b.push(s.kernel_number());
    }
    // Trailing fields, which readers that predate them ignore.
    put_text(b, f.cgroup.as_ref().map_or("", |c| &c.path[..kept_len(&c.path)]));
    let n = f.netns.len().min(255);
    b.push(n as u8);
    for &ns in &f.netns[..n] {
        put_varint(b, u64::from(ns));
    }
}

/// Appends the header's fields (the header body).
pub fn put_header_fields(buf: &mut Vec<u8>, h: &Header) {
    let mut value = Vec::with_capacity(256);
    put_field(buf, key::PORTRACE, h.portrace.as_bytes());
    put_field(buf, key::HOST, h.host.as_bytes());
    put_field(buf, key::KERNEL, h.kernel.as_bytes());
    value.extend_from_slice(&h.start.mono_ns.to_le_bytes());
    value.extend_from_slice(&h.start.unix_ns.to_le_bytes());
    put_field(buf, key::START, &value);
    put_field(buf, key::CLOCK, &h.clock_offset_ns.to_le_bytes());
    value.clear();
    put_words(&mut value, &layout_words(&h.layout));
    put_field(buf, key::LAYOUT, &value);
    if let Some(sock) = &h.sock_layout {
        value.clear();
        put_words(&mut value, &sock_layout_words(sock));
        put_field(buf, key::SOCK_LAYOUT, &value);
    }
    value.clear();
    put_filter(&mut value, &h.filter);
    put_field(buf, key::FILTER, &value);
    put_field(buf, key::RING_SIZE, &h.ring_size.to_le_bytes());
    put_field(buf, key::COMPRESSION, &[u8::from(h.compressed)]);
    for note in &h.notes {
        put_field(buf, key::NOTE, note.as_bytes());
    }
    for (feature, state) in h.features.iter() {
        value.clear();
        value.extend_from_slice(&[feature.code(), u8::from(state.on)]);
        value.extend_from_slice(state.reason.as_deref().unwrap_or("").as_bytes());
        put_field(buf, key::FEATURE, &value);
    }
    if let Some(args) = &h.command {
        let words: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        put_field(buf, key::COMMAND, &words.join(&0u8));
    }
}
