//! The bytes of a recording below the block level: LEB128 varints and zigzag signed
//! integers, the encoding of each record kind (socket, transition, lost, end) and of the
//! header's fields, and a bounds-checked cursor that decodes them back. Every number a
//! file can hold is given a fixed code here (states, owner sources, end reasons, loss
//! causes), independent of the order of Rust enums, so that the format in
//! `docs/trace-format.md` does not change when the code is reorganised.
//!
//! Encoding appends to a caller's buffer and never allocates on its own; decoding checks
//! every length against what is left and returns a message instead of panicking.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use portrace_ebpf::{Layout, SockLayout};

use super::{End, Header, Record};
use crate::features::{Feature, Features, State};
use crate::filter::{FilterSpec, IpNet};
use crate::record::{
    Comm, EndReason, Family, LossCause, Lost, NetnsInfo, CgroupInfo, Owner, OwnerSource, ProcessInfo, SocketRecord, Timestamp,
    Transition,
};
use crate::process_info::{kept_len, MAX_ARGS, MAX_TEXT};
use crate::tcp_state::TcpState;

/// Record tags, the first byte of each record in a block.
pub mod tag {
    pub const SOCKET: u8 = 1;
    pub const TRANSITION: u8 = 2;
    pub const LOST: u8 = 3;
    pub const END: u8 = 4;
    pub const PROCESS: u8 = 5;
    pub const NETNS: u8 = 6;
    /// A cgroup's id and path (added after format version 1 was first written: readers
    /// that predate it skip it, as every unknown record).
    pub const CGROUP: u8 = 7;
}

/// Which optional fields a process record holds.
mod process_flag {
    pub const PPID: u8 = 1 << 0;
    pub const EXE: u8 = 1 << 1;
    pub const CMDLINE: u8 = 1 << 2;
    pub const UID: u8 = 1 << 3;
    pub const USER: u8 = 1 << 4;
    pub const CGROUP: u8 = 1 << 5;
    pub const START: u8 = 1 << 6;
    pub const ALL: u8 = PPID | EXE | CMDLINE | UID | USER | CGROUP | START;
}


/// Header field keys.
pub mod key {
    pub const PORTRACE: u8 = 1;
    pub const HOST: u8 = 2;
    pub const KERNEL: u8 = 3;
    pub const START: u8 = 4;
    pub const CLOCK: u8 = 5;
    pub const LAYOUT: u8 = 6;
    pub const SOCK_LAYOUT: u8 = 7;
    pub const FILTER: u8 = 8;
    pub const RING_SIZE: u8 = 9;
    pub const COMPRESSION: u8 = 10;
    pub const NOTE: u8 = 11;
    pub const COMMAND: u8 = 12;
    pub const FEATURE: u8 = 13;
}

/// Flag bits of transition and socket records.
mod flag {
    pub const FAMILY_V6: u8 = 1 << 0;
    pub const SADDR_V6: u8 = 1 << 1;
    pub const DADDR_V6: u8 = 1 << 2;
    pub const PREV: u8 = 1 << 3;
    pub const AT_LEAST: u8 = 1 << 4;
    pub const OWNER: u8 = 1 << 5;
    pub const REASON: u8 = 1 << 6;
    pub const ERROR: u8 = 1 << 7;
    /// The bits a socket record may use.
    pub const SOCKET_BITS: u8 = FAMILY_V6 | SADDR_V6 | DADDR_V6 | OWNER;
}

/// The longest command name the kernel keeps.
const COMM_MAX: usize = 15;

// ---------------------------------------------------------------------------------------
// Writing

/// Appends `n` as an unsigned LEB128 varint (1 to 10 bytes).
pub fn put_varint(buf: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        buf.push(n as u8 | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

/// Appends a 128-bit unsigned LEB128 varint (1 to 19 bytes).
fn put_varint128(buf: &mut Vec<u8>, mut n: u128) {
    while n >= 0x80 {
        buf.push(n as u8 | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

fn zigzag128(n: i128) -> u128 {
    ((n << 1) ^ (n >> 127)) as u128
}

fn unzigzag128(n: u128) -> i128 {
    ((n >> 1) as i128) ^ -((n & 1) as i128)
}

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

/// The time base a block's records are encoded against: each record's monotonic time is
/// stored as the difference from the previous record's (0 at the start of a block), and
/// its wall-clock time as its deviation from the recording's clock mapping (0 for every
/// record portrace writes, since one mapping serves the whole run).
#[derive(Clone, Copy, Debug)]
pub struct TimeBase {
    pub prev_ns: u64,
    pub clock_offset_ns: i128,
}

impl TimeBase {
    pub fn new(clock_offset_ns: i128) -> TimeBase {
        TimeBase { prev_ns: 0, clock_offset_ns }
    }

    fn put(&mut self, buf: &mut Vec<u8>, t: Timestamp) {
        put_varint(buf, zigzag(t.mono_ns.wrapping_sub(self.prev_ns) as i64));
        let mapped = i128::from(t.mono_ns).wrapping_add(self.clock_offset_ns);
        put_varint128(buf, zigzag128(t.unix_ns.wrapping_sub(mapped)));
        self.prev_ns = t.mono_ns;
    }

    fn get(&mut self, c: &mut Cursor<'_>) -> Result<Timestamp, String> {
        let mono_ns = self.prev_ns.wrapping_add(unzigzag(c.varint()?) as u64);
        let deviation = unzigzag128(c.varint128()?);
        self.prev_ns = mono_ns;
        let unix_ns = i128::from(mono_ns).wrapping_add(self.clock_offset_ns).wrapping_add(deviation);
        Ok(Timestamp { mono_ns, unix_ns })
    }
}

fn owner_source_code(source: OwnerSource) -> u8 {
    match source {
        OwnerSource::Syscall => 1,
        OwnerSource::Listener => 2,
        OwnerSource::Inventory => 3,
    }
}

fn owner_source_from(code: u8) -> Option<OwnerSource> {
    Some(match code {
        1 => OwnerSource::Syscall,
        2 => OwnerSource::Listener,
        3 => OwnerSource::Inventory,
        _ => return None,
    })
}

fn reason_code(reason: EndReason) -> u8 {
    match reason {
        EndReason::ActiveClose => 1,
        EndReason::PassiveClose => 2,
        EndReason::Refused => 3,
        EndReason::ConnectTimeout => 4,
        EndReason::ResetByPeer => 5,
        EndReason::ResetSent => 6,
        EndReason::ConnectAborted => 7,
        EndReason::FinWait2Timeout => 8,
        EndReason::TimeWaitKilled => 9,
        EndReason::ListenerClosed => 10,
        EndReason::Error => 11,
    }
}

fn reason_from(code: u8) -> Option<EndReason> {
    Some(match code {
        1 => EndReason::ActiveClose,
        2 => EndReason::PassiveClose,
        3 => EndReason::Refused,
        4 => EndReason::ConnectTimeout,
        5 => EndReason::ResetByPeer,
        6 => EndReason::ResetSent,
        7 => EndReason::ConnectAborted,
        8 => EndReason::FinWait2Timeout,
        9 => EndReason::TimeWaitKilled,
        10 => EndReason::ListenerClosed,
        11 => EndReason::Error,
        _ => return None,
    })
}

pub fn cause_code(cause: LossCause) -> u8 {
    match cause {
        LossCause::RingFull => 1,
        LossCause::Skipped => 2,
        LossCause::Malformed => 3,
        LossCause::Unreadable => 4,
        LossCause::TimeWait => 5,
        LossCause::Gap => 6,
    }
}

fn cause_from(code: u8) -> Option<LossCause> {
    Some(match code {
        1 => LossCause::RingFull,
        2 => LossCause::Skipped,
        3 => LossCause::Malformed,
        4 => LossCause::Unreadable,
        5 => LossCause::TimeWait,
        6 => LossCause::Gap,
        _ => return None,
    })
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
        let mut flags = addr_flags(t.family, t.saddr, t.daddr);
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
        put_addr(b, t.saddr);
        b.extend_from_slice(&t.sport.to_le_bytes());
        put_addr(b, t.daddr);
        b.extend_from_slice(&t.dport.to_le_bytes());
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
        put_varint(b, u64::from(t.netns));
        // A trailing field, which readers that predate it ignore.
        put_varint(b, t.owner.map_or(0, |o| o.cgroup));
    });
}

pub fn put_socket(buf: &mut Vec<u8>, body: &mut Vec<u8>, time: &mut TimeBase, s: &SocketRecord) {
    put_record(buf, body, tag::SOCKET, |b| {
        time.put(b, s.time);
        let mut flags = addr_flags(s.family, s.saddr, s.daddr);
        if s.owner.is_some() {
            flags |= flag::OWNER;
        }
        b.push(flags);
        put_varint(b, s.socket);
        put_addr(b, s.saddr);
        b.extend_from_slice(&s.sport.to_le_bytes());
        put_addr(b, s.daddr);
        b.extend_from_slice(&s.dport.to_le_bytes());
        b.push(s.state.kernel_number());
        if let Some(owner) = &s.owner {
            put_owner(b, owner);
        }
        put_varint(b, u64::from(s.netns));
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

/// Appends a text's length (varint) and bytes, cut to [`MAX_TEXT`] bytes.
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

fn put_field(buf: &mut Vec<u8>, key: u8, value: &[u8]) {
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

fn put_filter(b: &mut Vec<u8>, f: &FilterSpec) {
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

// ---------------------------------------------------------------------------------------
// Reading

/// Reads bytes from a slice, checking every length; errors are messages for people.
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Cursor<'a> {
        Cursor { buf, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let rest = &self.buf[self.pos.min(self.buf.len())..];
        if rest.len() < n {
            return Err(format!("{n} bytes needed, {} left", rest.len()));
        }
        self.pos += n;
        Ok(&rest[..n])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub fn varint(&mut self) -> Result<u64, String> {
        let mut n = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            if i == 9 && b > 1 {
                return Err("a number is too large for 64 bits".into());
            }
            n |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err("a number is too large for 64 bits".into())
    }

    fn varint128(&mut self) -> Result<u128, String> {
        let mut n = 0u128;
        for i in 0..19 {
            let b = self.u8()?;
            if i == 18 && b > 3 {
                return Err("a number is too large for 128 bits".into());
            }
            n |= u128::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err("a number is too large for 128 bits".into())
    }

    fn varint32(&mut self, what: &str) -> Result<u32, String> {
        let n = self.varint()?;
        u32::try_from(n).map_err(|_| format!("{what} {n} does not fit 32 bits"))
    }

    fn short(&mut self) -> Result<&'a [u8], String> {
        let n = self.u8()?;
        self.bytes(usize::from(n))
    }

    fn text(&mut self, what: &str) -> Result<String, String> {
        let len = self.varint()?;
        if len > MAX_TEXT as u64 {
            return Err(format!("a {what} of {len} bytes (at most {MAX_TEXT} are written)"));
        }
        let bytes = self.bytes(len as usize)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("the {what} is not UTF-8"))
    }

    fn addr(&mut self, v6: bool) -> Result<IpAddr, String> {
        Ok(if v6 {
            IpAddr::V6(Ipv6Addr::from(self.array::<16>()?))
        } else {
            IpAddr::V4(Ipv4Addr::from(self.array::<4>()?))
        })
    }

    fn comm(&mut self) -> Result<Comm, String> {
        let bytes = self.short()?;
        if bytes.len() > COMM_MAX {
            return Err(format!("a command name of {} bytes (the kernel keeps at most {COMM_MAX})", bytes.len()));
        }
        Ok(comm_from_bytes(bytes))
    }

    fn owner(&mut self) -> Result<Owner, String> {
        let pid = self.varint32("owner pid")?;
        let code = self.u8()?;
        let source = owner_source_from(code).ok_or_else(|| format!("unknown owner source code {code}"))?;
        Ok(Owner { pid, source, comm: self.comm()?, cgroup: 0 })
    }

    fn state(&mut self, n: u8) -> Result<TcpState, String> {
        TcpState::from_kernel(n).ok_or_else(|| format!("unknown TCP state number {n}"))
    }
}

/// A command name from at most 15 bytes, as the kernel hands it over: NUL-padded, ending
/// at its first NUL byte if it has one.
fn comm_from_bytes(bytes: &[u8]) -> Comm {
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len()).min(COMM_MAX);
    let mut raw = [0u8; 16];
    raw[..len].copy_from_slice(&bytes[..len]);
    Comm::from_kernel(&raw)
}

fn family_of(flags: u8) -> Family {
    if flags & flag::FAMILY_V6 != 0 {
        Family::Ipv6
    } else {
        Family::Ipv4
    }
}

fn transition(c: &mut Cursor<'_>, time: &mut TimeBase) -> Result<Transition, String> {
    let time = time.get(c)?;
    let flags = c.u8()?;
    let socket = c.varint()?;
    let pid = c.varint32("pid")?;
    let comm = c.comm()?;
    let saddr = c.addr(flags & flag::SADDR_V6 != 0)?;
    let sport = c.u16()?;
    let daddr = c.addr(flags & flag::DADDR_V6 != 0)?;
    let dport = c.u16()?;
    let states = c.u8()?;
    let oldstate = c.state(states >> 4)?;
    let newstate = c.state(states & 0xf)?;
    let prev_state_ns = if flags & flag::PREV != 0 { Some(c.varint()?) } else { None };
    let owner = if flags & flag::OWNER != 0 { Some(c.owner()?) } else { None };
    let reason = if flags & flag::REASON != 0 {
        let code = c.u8()?;
        Some(reason_from(code).ok_or_else(|| format!("unknown end reason code {code}"))?)
    } else {
        None
    };
    let error = if flags & flag::ERROR != 0 {
        let n = unzigzag(c.varint()?);
        Some(i32::try_from(n).map_err(|_| format!("error number {n} does not fit 32 bits"))?)
    } else {
        None
    };
    let retransmits = c.u8()?;
    let netns = c.varint32("network namespace")?;
    let mut owner = owner;
    if let (false, Some(o)) = (c.is_empty(), owner.as_mut()) {
        o.cgroup = c.varint()?;
    }
    Ok(Transition {
        time,
        pid,
        comm,
        socket,
        family: family_of(flags),
        saddr,
        sport,
        daddr,
        dport,
        oldstate,
        newstate,
        prev_state_ns,
        prev_state_at_least: flags & flag::AT_LEAST != 0,
        owner,
        reason,
        error,
        retransmits,
        netns,
    })
}

fn socket(c: &mut Cursor<'_>, time: &mut TimeBase) -> Result<SocketRecord, String> {
    let time = time.get(c)?;
    let flags = c.u8()?;
    if flags & !flag::SOCKET_BITS != 0 {
        return Err(format!("unknown socket record flags {flags:#04x}"));
    }
    let socket = c.varint()?;
    let saddr = c.addr(flags & flag::SADDR_V6 != 0)?;
    let sport = c.u16()?;
    let daddr = c.addr(flags & flag::DADDR_V6 != 0)?;
    let dport = c.u16()?;
    let n = c.u8()?;
    let state = c.state(n)?;
    let mut owner = if flags & flag::OWNER != 0 { Some(c.owner()?) } else { None };
    let netns = c.varint32("network namespace")?;
    let inode = c.varint()?;
    let uid = c.varint32("uid")?;
    let cookie = c.varint()?;
    if let (false, Some(o)) = (c.is_empty(), owner.as_mut()) {
        o.cgroup = c.varint()?;
    }
    Ok(SocketRecord { time, socket, family: family_of(flags), saddr, sport, daddr, dport, state, owner, netns, inode, uid, cookie })
}

fn cgroup(c: &mut Cursor<'_>, time: &mut TimeBase) -> Result<CgroupInfo, String> {
    let time = time.get(c)?;
    let id = c.varint()?;
    let path = match c.u8()? {
        0 => None,
        1 => Some(c.text("cgroup path")?),
        n => return Err(format!("unknown cgroup path kind {n}")),
    };
    Ok(CgroupInfo { time, id, path })
}

fn process(c: &mut Cursor<'_>, time: &mut TimeBase) -> Result<ProcessInfo, String> {
    use process_flag as f;
    let time = time.get(c)?;
    let flags = c.u8()?;
    if flags & !f::ALL != 0 {
        return Err(format!("unknown process record flags {flags:#04x}"));
    }
    let pid = c.varint32("pid")?;
    let comm = c.comm()?;
    let has = |bit: u8| flags & bit != 0;
    let ppid = if has(f::PPID) { Some(c.varint32("parent pid")?) } else { None };
    let exe = if has(f::EXE) { Some(c.text("executable path")?) } else { None };
    let cmdline = if has(f::CMDLINE) {
        let n = c.varint()?;
        if n > MAX_ARGS as u64 {
            return Err(format!("a command line of {n} arguments (at most {MAX_ARGS} are written)"));
        }
        let args = (0..n).map(|_| c.text("argument")).collect::<Result<Vec<_>, _>>()?;
        Some(crate::process_info::cap_args(args))
    } else {
        None
    };
    let uid = if has(f::UID) { Some(c.varint32("uid")?) } else { None };
    let user = if has(f::USER) { Some(c.text("user name")?) } else { None };
    let cgroup = if has(f::CGROUP) { Some(c.text("cgroup path")?) } else { None };
    let start_ticks = if has(f::START) { Some(c.varint()?) } else { None };
    Ok(ProcessInfo { time, pid, comm, ppid, exe, cmdline, uid, user, cgroup, start_ticks })
}

fn netns(c: &mut Cursor<'_>, time: &mut TimeBase) -> Result<NetnsInfo, String> {
    let time = time.get(c)?;
    let netns = c.varint32("network namespace")?;
    let port_range = match c.u8()? {
        0 => None,
        1 => {
            let (lo, hi) = (c.u16()?, c.u16()?);
            if lo > hi {
                return Err(format!("a port range {lo}-{hi} that ends before it starts"));
            }
            Some((lo, hi))
        }
        n => return Err(format!("unknown port range kind {n}")),
    };
    Ok(NetnsInfo { time, netns, port_range })
}

fn cause(c: &mut Cursor<'_>) -> Result<LossCause, String> {
    let code = c.u8()?;
    cause_from(code).ok_or_else(|| format!("unknown loss cause code {code}"))
}

fn lost(c: &mut Cursor<'_>, time: &mut TimeBase) -> Result<Lost, String> {
    let time = time.get(c)?;
    let count = c.varint()?;
    Ok(Lost { time, count, cause: cause(c)? })
}

fn end(c: &mut Cursor<'_>, time: &mut TimeBase) -> Result<End, String> {
    let time = time.get(c)?;
    let transitions = c.varint()?;
    let mut lost = End::NO_LOSS;
    for _ in 0..c.u8()? {
        let cause = cause(c)?;
        let n = c.varint()?;
        for slot in &mut lost {
            if slot.0 == cause {
                slot.1 = slot.1.saturating_add(n);
            }
        }
    }
    Ok(End { time, transitions, lost })
}

/// Decodes the next record of a block. `Ok(None)` for a record of a kind this portrace
/// does not know, which is skipped. Bytes at the end of a record's body that this portrace
/// does not know are ignored (later versions may add fields there).
pub fn record(c: &mut Cursor<'_>, time: &mut TimeBase) -> Result<Option<Record>, String> {
    let tag = c.u8()?;
    let len = c.varint()?;
    let len = usize::try_from(len).map_err(|_| format!("record length {len} is too large"))?;
    let body = c.bytes(len).map_err(|e| format!("record of {len} bytes runs past its block ({e})"))?;
    let mut b = Cursor::new(body);
    let record = match tag {
        tag::SOCKET => Record::Socket(socket(&mut b, time)?),
        tag::TRANSITION => Record::Transition(transition(&mut b, time)?),
        tag::LOST => Record::Lost(lost(&mut b, time)?),
        tag::END => Record::End(end(&mut b, time)?),
        tag::PROCESS => Record::Process(process(&mut b, time)?),
        tag::NETNS => Record::Netns(netns(&mut b, time)?),
        tag::CGROUP => Record::Cgroup(cgroup(&mut b, time)?),
        _ => return Ok(None),
    };
    Ok(Some(record))
}

fn words<const N: usize>(value: &[u8]) -> Result<[u16; N], String> {
    if value.len() < 2 * N {
        return Err(format!("{} bytes where {} are needed", value.len(), 2 * N));
    }
    let mut out = [0u16; N];
    for (i, w) in out.iter_mut().enumerate() {
        *w = u16::from_le_bytes([value[2 * i], value[2 * i + 1]]);
    }
    Ok(out)
}

fn layout_from(value: &[u8]) -> Result<Layout, String> {
    let w = words::<12>(value)?;
    Ok(Layout {
        skaddr: w[0],
        oldstate: w[1],
        newstate: w[2],
        sport: w[3],
        dport: w[4],
        family: w[5],
        protocol: w[6],
        saddr: w[7],
        daddr: w[8],
        saddr_v6: w[9],
        daddr_v6: w[10],
        protocol_size: w[11],
    })
}

fn sock_layout_from(value: &[u8]) -> Result<SockLayout, String> {
    let w = words::<20>(value)?;
    Ok(SockLayout {
        family: w[0],
        protocol: w[1],
        protocol_size: w[2],
        sport: w[3],
        dport: w[4],
        saddr: w[5],
        daddr: w[6],
        saddr_v6: w[7],
        daddr_v6: w[8],
        num: w[9],
        rcv_saddr: w[10],
        cookie: w[11],
        net: w[12],
        net_inum: w[13],
        err: w[14],
        retransmits: w[15],
        tw_substate: w[16],
        tw_timer: w[17],
        timer_function: w[18],
        valid: w[19],
        // The packet offsets (kernels before 6.11) describe nothing a reader uses: not
        // recorded.
        ..SockLayout::ZERO
    })
}

fn filter_from(value: &[u8]) -> Result<FilterSpec, String> {
    let mut c = Cursor::new(value);
    let mut ports = || -> Result<Vec<u16>, String> {
        let n = c.u8()?;
        (0..n).map(|_| c.u16()).collect()
    };
    let lports = ports()?;
    let rports = ports()?;
    let ports = ports()?;
    let mut nets = Vec::new();
    for _ in 0..c.u8()? {
        let kind = c.u8()?;
        let (addr, max) = match kind {
            4 => (c.addr(false)?, 32),
            6 => (c.addr(true)?, 128),
            _ => return Err(format!("unknown address kind {kind} in the filter")),
        };
        let prefix_len = c.u8()?;
        if prefix_len > max {
            return Err(format!("prefix length /{prefix_len} in the filter is too long for {addr}"));
        }
        nets.push(IpNet { addr, prefix_len });
    }
    let mut pids = Vec::new();
    for _ in 0..c.u8()? {
        pids.push(c.varint32("pid in the filter")?);
    }
    let comm = c.short()?;
    if comm.len() > COMM_MAX {
        return Err(format!("a --comm of {} bytes in the filter", comm.len()));
    }
    let comm = (!comm.is_empty()).then(|| String::from_utf8_lossy(comm).into_owned());
    let family = match c.u8()? {
        0 => None,
        4 => Some(Family::Ipv4),
        6 => Some(Family::Ipv6),
        n => return Err(format!("unknown address family {n} in the filter")),
    };
    let mut states = Vec::new();
    for _ in 0..c.u8()? {
        let n = c.u8()?;
        states.push(c.state(n)?);
    }
    let mut cgroup = None;
    let mut netns = Vec::new();
    if !c.is_empty() {
        let path = c.text("--cgroup path in the filter")?;
        cgroup = (!path.is_empty()).then(|| crate::filter::CgroupFilter { given: path.clone(), path, id: 0, level: 0 });
        for _ in 0..c.u8()? {
            netns.push(c.varint32("--netns in the filter")?);
        }
    }
    Ok(FilterSpec { lports, rports, ports, nets, pids, comm, more_comms: Vec::new(), family, states, cgroup, netns })
}

fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(value).into_owned()
}

/// Decodes the header's fields. Fields of keys this portrace does not know are skipped;
/// `version` is the file's format version, recorded in the result.
pub fn header_fields(body: &[u8], version: u16) -> Result<Header, String> {
    let mut c = Cursor::new(body);
    let (mut portrace, mut start, mut clock) = (None, None, None);
    let mut h = Header {
        version,
        portrace: String::new(),
        host: String::new(),
        kernel: String::new(),
        start: Timestamp { mono_ns: 0, unix_ns: 0 },
        clock_offset_ns: 0,
        layout: Layout::ZERO,
        sock_layout: None,
        filter: FilterSpec::default(),
        ring_size: 0,
        compressed: false,
        notes: Vec::new(),
        command: None,
        features: Features::default(),
    };
    let mut seen = [false; 256];
    while !c.is_empty() {
        let at = c.pos();
        let key = c.u8()?;
        if (key::PORTRACE..key::NOTE).contains(&key) && std::mem::replace(&mut seen[usize::from(key)], true) {
            return Err(format!("header field {key} appears twice (at header byte {at})"));
        }
        let len = c.varint()?;
        let len = usize::try_from(len).map_err(|_| format!("header field of {len} bytes"))?;
        let value = c.bytes(len).map_err(|e| format!("header field {key} at header byte {at}: {e}"))?;
        let bad = |e: String| format!("header field {key} at header byte {at}: {e}");
        match key {
            key::PORTRACE => portrace = Some(text(value)),
            key::HOST => h.host = text(value),
            key::KERNEL => h.kernel = text(value),
            key::START => {
                let mut v = Cursor::new(value);
                let mono_ns = u64::from_le_bytes(v.array().map_err(bad)?);
                let unix_ns = i128::from_le_bytes(v.array().map_err(bad)?);
                start = Some(Timestamp { mono_ns, unix_ns });
            }
            key::CLOCK => {
                clock = Some(i128::from_le_bytes(Cursor::new(value).array().map_err(bad)?));
            }
            key::LAYOUT => h.layout = layout_from(value).map_err(bad)?,
            key::SOCK_LAYOUT => h.sock_layout = Some(sock_layout_from(value).map_err(bad)?),
            key::FILTER => h.filter = filter_from(value).map_err(bad)?,
            key::RING_SIZE => h.ring_size = u32::from_le_bytes(Cursor::new(value).array().map_err(bad)?),
            key::COMPRESSION => h.compressed = value.first().is_some_and(|&b| b != 0),
            key::NOTE => h.notes.push(text(value)),
            key::COMMAND => h.command = Some(value.split(|&b| b == 0).map(text).collect()),
            key::FEATURE => match value {
                // A feature a later portrace added is skipped, like an unknown field.
                [code, on, reason @ ..] => {
                    if let Some(feature) = Feature::from_code(*code) {
                        let reason = (!reason.is_empty()).then(|| text(reason));
                        h.features.set(feature, State { on: *on != 0, reason });
                    }
                }
                _ => return Err(bad(format!("a feature needs 2 bytes or more, not {}", value.len()))),
            },
            _ => {}
        }
    }
    h.portrace = portrace.ok_or("the header lacks portrace's version (field 1)")?;
    h.start = start.ok_or("the header lacks the start time (field 4)")?;
    h.clock_offset_ns = clock.ok_or("the header lacks the clock mapping (field 5)")?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traced_command_round_trips_in_the_header() {
        let mut h = Header {
            version: 1,
            portrace: "0.1.0".into(),
            host: "h".into(),
            kernel: "k".into(),
            start: Timestamp { mono_ns: 1, unix_ns: 2 },
            clock_offset_ns: 3,
            layout: Layout::ZERO,
            sock_layout: None,
            filter: FilterSpec::default(),
            ring_size: 4096,
            compressed: false,
            notes: vec!["a note".into()],
            command: Some(vec!["sh".into(), "-c".into(), "echo 'a b'".into(), String::new(), "é".into()]),
            features: Features::default(),
        };
        let mut buf = Vec::new();
        put_header_fields(&mut buf, &h);
        assert_eq!(header_fields(&buf, 1).unwrap(), h);
        h.command = None;
        let mut buf = Vec::new();
        put_header_fields(&mut buf, &h);
        assert_eq!(header_fields(&buf, 1).unwrap(), h);
    }

    #[test]
    fn features_round_trip_and_old_headers_have_none() {
        let mut h = header_fields(&minimal_fields(), 1).expect("a header without features reads");
        assert!(h.features.is_empty(), "a recording made before features were written knows none");
        h.features.on(Feature::LiveTimeline);
        h.features.off(Feature::TimeWait, "timer_start did not load: the kernel's verifier rejected it");
        h.features.limited(Feature::Owners, "no kernel BTF");
        let mut buf = Vec::new();
        put_header_fields(&mut buf, &h);
        assert_eq!(header_fields(&buf, 1).unwrap().features, h.features);

        // A feature a later portrace knows (code 200) is skipped; a cut one is refused.
        let mut later = minimal_fields();
        put_field(&mut later, key::FEATURE, &[200, 1]);
        assert!(header_fields(&later, 1).unwrap().features.is_empty());
        let mut cut = minimal_fields();
        put_field(&mut cut, key::FEATURE, &[3]);
        let err = header_fields(&cut, 1).unwrap_err();
        assert!(err.contains("a feature needs 2 bytes"), "{err}");
    }

    /// The required fields alone, as an old recording has them.
    fn minimal_fields() -> Vec<u8> {
        let mut buf = Vec::new();
        put_field(&mut buf, key::PORTRACE, b"0.1.0");
        let mut start = 1u64.to_le_bytes().to_vec();
        start.extend_from_slice(&2i128.to_le_bytes());
        put_field(&mut buf, key::START, &start);
        put_field(&mut buf, key::CLOCK, &3i128.to_le_bytes());
        buf
    }

    #[test]
    fn varints_round_trip_at_every_width() {
        let mut values = vec![0u64, 1, 127, 128, 255, 300, 16_383, 16_384, u64::MAX, u64::MAX - 1];
        values.extend((0..64).map(|s| 1u64 << s));
        for n in values {
            let mut buf = Vec::new();
            put_varint(&mut buf, n);
            assert!(buf.len() <= 10);
            let mut c = Cursor::new(&buf);
            assert_eq!(c.varint(), Ok(n));
            assert!(c.is_empty());
        }
    }

    #[test]
    fn overlong_and_short_varints_are_refused() {
        assert!(Cursor::new(&[0xff; 11]).varint().is_err());
        assert!(Cursor::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]).varint().is_err());
        assert!(Cursor::new(&[0x80, 0x80]).varint().unwrap_err().contains("needed"));
        assert!(Cursor::new(&[0xff; 20]).varint128().is_err());
    }

    #[test]
    fn zigzag_round_trips_extremes() {
        for n in [0i64, 1, -1, 63, -64, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(n)), n);
        }
        for n in [0i128, -1, i128::MAX, i128::MIN] {
            assert_eq!(unzigzag128(zigzag128(n)), n);
        }
        assert_eq!(zigzag(-1), 1, "small negative numbers stay small");
    }

    #[test]
    fn times_are_deltas_and_deviations() {
        let mut time = TimeBase::new(1_000);
        let mut buf = Vec::new();
        let a = Timestamp { mono_ns: 5_000_000_000, unix_ns: 5_000_001_000 };
        let b = Timestamp { mono_ns: 4_999_999_990, unix_ns: 4_999_999_990 };
        time.put(&mut buf, a);
        let first = buf.len();
        time.put(&mut buf, b);
        assert_eq!(buf.len() - first, 1 + 2, "an out-of-order time close by is two small numbers");
        let mut back = TimeBase::new(1_000);
        let mut c = Cursor::new(&buf);
        assert_eq!(back.get(&mut c), Ok(a));
        assert_eq!(back.get(&mut c), Ok(b));
    }

    #[test]
    fn comm_bytes_keep_their_form() {
        assert_eq!(comm_from_bytes(b"nginx"), Comm::new("nginx"));
        let odd = Comm::from_kernel(b"a\xffb\0\0\0\0\0\0\0\0\0\0\0\0\0");
        assert_eq!(comm_from_bytes(odd.as_bytes()), odd);
        // A NUL ends the name, as in the kernel, and nothing after it is kept, so that two
        // names that print alike compare alike.
        assert_eq!(comm_from_bytes(b"tc\x8c\0\xa0\0\x18"), Comm::from_kernel(b"tc\x8c\0\0\0\0\0\0\0\0\0\0\0\0\0"));
        assert_eq!(comm_from_bytes(b"ab\0cd"), Comm::new("ab"));
        assert_eq!(comm_from_bytes(b""), Comm::new(""));
    }

    #[test]
    fn filter_round_trips() {
        let spec = FilterSpec {
            lports: vec![80, 443],
            rports: vec![5432],
            ports: vec![22],
            nets: vec!["10.0.0.0/8".parse().unwrap(), "2001:db8::/32".parse().unwrap()],
            pids: vec![1, 4_194_304],
            comm: Some("postgres".into()),
            more_comms: Vec::new(),
            family: Some(Family::Ipv6),
            states: vec![TcpState::CloseWait, TcpState::Listen],
            cgroup: Some(crate::filter::CgroupFilter {
                path: "/kubepods.slice".into(),
                given: "/kubepods.slice".into(),
                id: 0,
                level: 0,
            }),
            netns: vec![4026531840],
        };
        let mut buf = Vec::new();
        put_filter(&mut buf, &spec);
        assert_eq!(filter_from(&buf), Ok(spec));
        let mut empty = Vec::new();
        put_filter(&mut empty, &FilterSpec::default());
        assert_eq!(filter_from(&empty), Ok(FilterSpec::default()));
    }

    #[test]
    fn codes_round_trip() {
        for r in EndReason::ALL {
            assert_eq!(reason_from(reason_code(r)), Some(r));
        }
        for s in [OwnerSource::Syscall, OwnerSource::Listener, OwnerSource::Inventory] {
            assert_eq!(owner_source_from(owner_source_code(s)), Some(s));
        }
        for l in LossCause::ALL {
            assert_eq!(cause_from(cause_code(l)), Some(l));
        }
        assert_eq!(reason_from(0), None);
        assert_eq!(reason_from(12), None);
    }

    /// A crafted process record with the most arguments a record may hold, each of the
    /// longest length, decodes to a command line held to the live bound: the arguments
    /// that fit in `MAX_CMDLINE` bytes, then a note saying how many were not kept.
    #[test]
    fn a_process_record_of_256_arguments_of_4_kib_decodes_capped() {
        use crate::process_info::MAX_CMDLINE;
        let args: Vec<String> = (0..MAX_ARGS).map(|i| format!("{i:04}").repeat(MAX_TEXT / 4)).collect();
        assert!(args.iter().all(|a| a.len() == MAX_TEXT));
        let p = ProcessInfo {
            time: Timestamp { mono_ns: 7, unix_ns: 8 },
            pid: 4242,
            comm: Comm::new("hog"),
            ppid: Some(1),
            exe: Some("/usr/bin/hog".into()),
            cmdline: Some(args.clone()),
            uid: Some(0),
            user: Some("root".into()),
            cgroup: None,
            start_ticks: Some(99),
        };
        let (mut buf, mut body) = (Vec::new(), Vec::new());
        put_process(&mut buf, &mut body, &mut TimeBase::new(0), &p);
        assert!(buf.len() > MAX_ARGS * MAX_TEXT, "the record holds every argument in full ({} bytes)", buf.len());

        let mut c = Cursor::new(&buf);
        let Ok(Some(Record::Process(back))) = record(&mut c, &mut TimeBase::new(0)) else {
            panic!("the process record does not decode");
        };
        assert!(c.is_empty());
        let cmdline = back.cmdline.clone().expect("the command line is kept");
        let (note, kept) = cmdline.split_last().unwrap();
        let held: usize = kept.iter().map(String::len).sum();
        assert!(held <= MAX_CMDLINE, "{held} bytes of arguments held");
        assert_eq!(kept.len(), MAX_CMDLINE / MAX_TEXT, "as many whole arguments as fit");
        assert_eq!(kept, &args[..kept.len()], "the first arguments, unchanged");
        assert_eq!(note, &format!("... ({} more arguments)", MAX_ARGS - kept.len()));
        assert!(held + note.len() <= MAX_CMDLINE + 40, "the note is short");
        // The rest of the record is read as written.
        assert_eq!(ProcessInfo { cmdline: p.cmdline.clone(), ..back }, p);
    }

    #[test]
    fn cgroup_records_round_trip() {
        let time = Timestamp { mono_ns: 5, unix_ns: 5 };
        for path in [Some("/kubepods.slice/kubepods-pod0b7c5c2e_8f4a_4f1e_9d3a_6a1b2c3d4e5f.slice".to_string()), None] {
            let g = CgroupInfo { time, id: 1 << 40, path };
            let (mut buf, mut body) = (Vec::new(), Vec::new());
            put_cgroup(&mut buf, &mut body, &mut TimeBase::new(0), &g);
            let mut c = Cursor::new(&buf);
            assert_eq!(record(&mut c, &mut TimeBase::new(0)), Ok(Some(Record::Cgroup(g))));
            assert!(c.is_empty());
        }
    }

    #[test]
    fn records_and_filters_written_before_cgroups_still_read() {
        let t = Transition::example(3, TcpState::Close, TcpState::SynSent)
            .at(Timestamp { mono_ns: 9, unix_ns: 9 })
            .on_cpu(1, Comm::new("c"))
            .between(("10.0.0.1".parse().unwrap(), 1000), ("10.0.0.2".parse().unwrap(), 80))
            .owned_by(Some(Owner { pid: 1, comm: Comm::new("c"), source: OwnerSource::Syscall, cgroup: 0 }))
            .in_netns(7);
        let (mut buf, mut body) = (Vec::new(), Vec::new());
        put_transition(&mut buf, &mut body, &mut TimeBase::new(0), &t);
        // Without the trailing cgroup id (one byte, 0), as earlier versions wrote it.
        assert_eq!(buf.pop(), Some(0));
        assert!(buf[1] < 0x80, "a one-byte length");
        buf[1] -= 1;
        let mut c = Cursor::new(&buf);
        assert_eq!(record(&mut c, &mut TimeBase::new(0)), Ok(Some(Record::Transition(t.clone()))));
        // With it, the id is read.
        let with = Transition { owner: t.owner.map(|o| Owner { cgroup: 4242, ..o }), ..t };
        let mut buf = Vec::new();
        put_transition(&mut buf, &mut body, &mut TimeBase::new(0), &with);
        assert_eq!(record(&mut Cursor::new(&buf), &mut TimeBase::new(0)), Ok(Some(Record::Transition(with))));
        // A filter without the trailing --cgroup and --netns fields.
        let spec = FilterSpec { ports: vec![22], ..FilterSpec::default() };
        let mut f = Vec::new();
        put_filter(&mut f, &spec);
        f.truncate(f.len() - 2);
        assert_eq!(filter_from(&f), Ok(spec));
    }
}
