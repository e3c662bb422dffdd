//! What the kernel says about BPF programs, read with the `bpf` system call directly (no
//! bpftool needed): the ids of all loaded programs (`BPF_PROG_GET_NEXT_ID`), each one's
//! type, name, run count, run time and `recursion_misses` (`BPF_PROG_GET_FD_BY_ID`, then
//! `BPF_OBJ_GET_INFO_BY_FD`), run-time statistics switched on for as long as a descriptor
//! is held (`BPF_ENABLE_STATS`, the same switch as `kernel.bpf_stats_enabled`, but undone
//! by the kernel itself when the benchmark exits however it exits), and the floor: two
//! empty programs (`r0 = 0; exit`) on `sock:inet_sock_set_state`, one raw tracepoint
//! program (`BPF_RAW_TRACEPOINT_OPEN`) and one classic tracepoint program (a perf event
//! with `PERF_EVENT_IOC_SET_BPF`), whose cost per run is what any program attached the
//! same way costs before it does anything.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub use portrace::bpf_raw::insn;
use portrace::bpf_raw::bpf;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_BTF_LOAD: libc::c_long = 18;
const BPF_ENABLE_STATS: libc::c_long = 32;

pub const PROG_TYPE_TRACEPOINT: u32 = 5;
pub const PROG_TYPE_RAW_TRACEPOINT: u32 = 17;

/// `struct bpf_prog_info` offsets (include/uapi/linux/bpf.h, stable ABI).
const INFO_TYPE: usize = 0;
const INFO_ID: usize = 4;
const INFO_NAME: usize = 64;
const INFO_RUN_TIME_NS: usize = 192;
const INFO_RUN_CNT: usize = 200;
const INFO_RECURSION_MISSES: usize = 208;
const INFO_LEN: usize = 232;

/// Name the floor programs carry (at most 15 bytes, as the kernel keeps them).
pub const FLOOR_RAW_NAME: &str = "bench_floor_raw";
pub const FLOOR_CLASSIC_NAME: &str = "bench_floor_tp";

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

fn get_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn get_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

/// The ids of every loaded program, in increasing order.
pub fn prog_ids() -> Vec<u32> {
    let mut ids = Vec::new();
    let mut start = 0u32;
    // Bounded: the kernel cannot hold more programs than ids exist.
    for _ in 0..1_000_000 {
        let mut attr = [0u8; 16];
        put_u32(&mut attr, 0, start);
        if bpf(BPF_PROG_GET_NEXT_ID, &mut attr).is_err() {
            break;
        }
        start = get_u32(&attr, 4);
        ids.push(start);
    }
    ids
}

/// One program as the kernel reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgInfo {
    pub id: u32,
    pub prog_type: u32,
    pub name: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
    pub recursion_misses: u64,
}

impl ProgInfo {
    pub fn type_name(&self) -> &'static str {
        match self.prog_type {
            PROG_TYPE_TRACEPOINT => "tracepoint",
            PROG_TYPE_RAW_TRACEPOINT => "raw_tracepoint",
            24 => "raw_tracepoint_writable",
            26 => "tracing",
            1 => "socket_filter",
            2 => "kprobe",
            _ => "other",
        }
    }
}

fn info_of_fd(fd: &OwnedFd) -> io::Result<ProgInfo> {
    let mut info = [0u8; INFO_LEN];
    let mut attr = [0u8; 16];
    put_u32(&mut attr, 0, fd.as_raw_fd() as u32);
    put_u32(&mut attr, 4, INFO_LEN as u32);
    put_u64(&mut attr, 8, info.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let filled = get_u32(&attr, 4) as usize;
    let field = |at: usize| {
        if filled >= at + 8 {
            get_u64(&info, at)
        } else {
            0
        }
    };
    let name_bytes = &info[INFO_NAME..INFO_NAME + 16];
    let end = name_bytes.iter().position(|&b| b == 0).unwrap_or(16);
    Ok(ProgInfo {
        id: get_u32(&info, INFO_ID),
        prog_type: get_u32(&info, INFO_TYPE),
        name: String::from_utf8_lossy(&name_bytes[..end]).into_owned(),
        run_time_ns: field(INFO_RUN_TIME_NS),
        run_cnt: field(INFO_RUN_CNT),
        recursion_misses: field(INFO_RECURSION_MISSES),
    })
}

/// The program with this id, if it is still loaded.
pub fn prog_info(id: u32) -> Option<ProgInfo> {
    let mut attr = [0u8; 16];
    put_u32(&mut attr, 0, id);
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).ok()?;
    // SAFETY: the kernel just returned this descriptor to us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    info_of_fd(&fd).ok()
}

/// Run-time statistics (`run_time_ns`, `run_cnt`) are collected while this is held.
pub struct StatsOn {
    _fd: OwnedFd,
}

pub fn enable_stats() -> io::Result<StatsOn> {
    let mut attr = [0u8; 8];
    // BPF_STATS_RUN_TIME = 0.
    put_u32(&mut attr, 0, 0);
    let fd = bpf(BPF_ENABLE_STATS, &mut attr)?;
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(StatsOn {
        _fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
    })
}

/// Loads `r0 = 0; exit` as a program of `prog_type` named `name`.
fn load_empty(prog_type: u32, name: &str) -> io::Result<OwnedFd> {
    // mov64 r0, 0 (BPF_ALU64 | BPF_MOV | BPF_K), then exit (BPF_JMP | BPF_EXIT).
    load(
        prog_type,
        &[insn(0xb7, 0, 0, 0, 0), insn(0x95, 0, 0, 0, 0)],
        name,
        None,
    )
}

/// `r<dst> = map` (the two-slot load of a map descriptor).
pub fn load_map(dst: u8, map: &OwnedFd) -> [u64; 2] {
    // BPF_LD | BPF_DW | BPF_IMM with src BPF_PSEUDO_MAP_FD (1).
    [insn(0x18, dst, 1, 0, map.as_raw_fd()), insn(0, 0, 0, 0, 0)]
}

/// Loads `insns` as a program of `prog_type` named `name`; `btf_target`: for a BTF-typed
/// program, its expected attach type and the vmlinux BTF id of what it attaches to.
pub fn load(
    prog_type: u32,
    insns: &[u64],
    name: &str,
    btf_target: Option<(u32, u32)>,
) -> io::Result<OwnedFd> {
    let license = b"GPL\0";
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, prog_type);
    put_u32(&mut attr, 4, insns.len() as u32);
    put_u64(&mut attr, 8, insns.as_ptr() as u64);
    put_u64(&mut attr, 16, license.as_ptr() as u64);
    let name = name.as_bytes();
    attr[48..48 + name.len().min(15)].copy_from_slice(&name[..name.len().min(15)]);
    if let Some((attach_type, btf_id)) = btf_target {
        // expected_attach_type @68, attach_btf_id @108.
        put_u32(&mut attr, 68, attach_type);
        put_u32(&mut attr, 108, btf_id);
    }
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attaches `prog` with `BPF_RAW_TRACEPOINT_OPEN`: to the raw tracepoint `tracepoint`, or,
/// for a BTF-typed program (`None`), to what it was loaded for.
pub fn attach_raw(prog: OwnedFd, tracepoint: Option<&str>) -> io::Result<Floor> {
    let name = tracepoint.map(|t| format!("{t}\0"));
    let mut attr = [0u8; 16];
    put_u64(&mut attr, 0, name.as_ref().map_or(0, |n| n.as_ptr() as u64));
    put_u32(&mut attr, 8, prog.as_raw_fd() as u32);
    let link = bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr)?;
    Ok(Floor {
        prog,
        // SAFETY: the kernel just returned this descriptor to us.
        _attachment: unsafe { OwnedFd::from_raw_fd(link as i32) },
    })
}

/// Creates a map: `(map_type, key_size, value_size, max_entries, flags)`, with the BTF
/// ids of its key and value in `btf` when the map type needs them.
pub fn map_create(
    (map_type, key_size, value_size, max_entries, flags): (u32, u32, u32, u32, u32),
    btf: Option<(&OwnedFd, u32, u32)>,
) -> io::Result<OwnedFd> {
    let mut attr = [0u8; 72];
    put_u32(&mut attr, 0, map_type);
    put_u32(&mut attr, 4, key_size);
    put_u32(&mut attr, 8, value_size);
    put_u32(&mut attr, 12, max_entries);
    put_u32(&mut attr, 16, flags);
    if let Some((fd, key, value)) = btf {
        // btf_fd @48, btf_key_type_id @52, btf_value_type_id @56.
        put_u32(&mut attr, 48, fd.as_raw_fd() as u32);
        put_u32(&mut attr, 52, key);
        put_u32(&mut attr, 56, value);
    }
    let fd = bpf(BPF_MAP_CREATE, &mut attr)?;
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Loads a BTF blob (`BPF_BTF_LOAD`).
pub fn btf_load(blob: &[u8]) -> io::Result<OwnedFd> {
    let mut attr = [0u8; 32];
    put_u64(&mut attr, 0, blob.as_ptr() as u64);
    put_u32(&mut attr, 16, blob.len() as u32);
    let fd = bpf(BPF_BTF_LOAD, &mut attr)?;
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A program attached to `sock:inet_sock_set_state` (the floors are empty ones); detached
/// when dropped.
pub struct Floor {
    prog: OwnedFd,
    _attachment: OwnedFd,
}

impl Floor {
    pub fn info(&self) -> Option<ProgInfo> {
        info_of_fd(&self.prog).ok()
    }
}

/// The raw tracepoint floor.
pub fn floor_raw() -> io::Result<Floor> {
    attach_raw(
        load_empty(PROG_TYPE_RAW_TRACEPOINT, FLOOR_RAW_NAME)?,
        Some("inet_sock_set_state"),
    )
}

/// The tracepoint's id, from tracefs (mounted at /sys/kernel/tracing or under debugfs).
fn tracepoint_id() -> io::Result<u64> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "tracefs is not mounted");
    for root in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        match std::fs::read_to_string(format!("{root}/events/sock/inet_sock_set_state/id")) {
            Ok(text) => {
                return text
                    .trim()
                    .parse()
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad tracepoint id"))
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The classic tracepoint floor: a perf event on the tracepoint carrying the program.
pub fn floor_classic() -> io::Result<Floor> {
    let prog = load_empty(PROG_TYPE_TRACEPOINT, FLOOR_CLASSIC_NAME)?;
    let id = tracepoint_id()?;
    // struct perf_event_attr: type @0, size @4, config @8, sample_period @16,
    // sample_type @24; size 128 (PERF_ATTR_SIZE_VER7).
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, 2); // PERF_TYPE_TRACEPOINT
    put_u32(&mut attr, 4, 128);
    put_u64(&mut attr, 8, id);
    put_u64(&mut attr, 16, 1);
    put_u64(&mut attr, 24, 1 << 10); // PERF_SAMPLE_RAW
    const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
    // SAFETY: attr is a valid perf_event_attr of the size it declares.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            -1 as libc::c_int,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us.
    let event = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
    const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
    // SAFETY: ioctls on our own perf event descriptor with the documented arguments.
    unsafe {
        if libc::ioctl(event.as_raw_fd(), PERF_EVENT_IOC_SET_BPF, prog.as_raw_fd()) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::ioctl(event.as_raw_fd(), PERF_EVENT_IOC_ENABLE, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(Floor {
        prog,
        _attachment: event,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        // SAFETY: plain system call.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn floors_load_attach_and_count() {
        if !root() {
            return;
        }
        let _stats = enable_stats().expect("BPF_ENABLE_STATS");
        let raw = floor_raw().expect("raw floor");
        let classic = floor_classic().expect("classic floor");
        // Two transitions: CLOSE->LISTEN and LISTEN->CLOSE.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        drop(l);
        let r = raw.info().unwrap();
        let c = classic.info().unwrap();
        assert_eq!(r.name, FLOOR_RAW_NAME);
        assert_eq!(r.prog_type, PROG_TYPE_RAW_TRACEPOINT);
        assert_eq!(c.prog_type, PROG_TYPE_TRACEPOINT);
        assert!(r.run_cnt >= 2, "{r:?}");
        assert!(c.run_cnt >= 2, "{c:?}");
        assert!(prog_ids().contains(&r.id));
        assert_eq!(prog_info(r.id).unwrap().name, FLOOR_RAW_NAME);
    }
}
