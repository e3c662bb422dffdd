//! Decoding: the records of a block and the header's fields read back through a
//! [`Cursor`], every length checked against what is left; a malformed input is a message,
//! never a panic.

use portrace_ebpf::{Layout, SockLayout};

use crate::tracefile::{End, Header, Record};
use super::{cause_from, flag, key, process_flag, reason_from, tag, unzigzag, Cursor, TimeBase, COMM_MAX};
use crate::features::{Feature, Features, State};
use crate::filter::{FilterSpec, IpNet};
use crate::process_info::MAX_ARGS;
use crate::record::{CgroupInfo, Endpoints, Family, LossCause, Lost, NetnsInfo, ProcessInfo, SocketRecord, Timestamp, Transition};

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
        ends: Endpoints { saddr, sport, daddr, dport, netns },
        oldstate,
        newstate,
        prev_state_ns,
        prev_state_at_least: flags & flag::AT_LEAST != 0,
        owner,
        reason,
        error,
        retransmits,
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
    Ok(SocketRecord { time, socket, family: family_of(flags), ends: Endpoints { saddr, sport, daddr, dport, netns }, state, owner, inode, uid, cookie })
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

pub(super) fn filter_from(value: &[u8]) -> Result<FilterSpec, String> {
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
