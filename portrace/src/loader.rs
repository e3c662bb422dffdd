//! Loading and attaching the kernel program, and reading what it counts. This is the only
//! module that talks to aya: it hands the tracepoint layout and the filter to the program
//! as read-only globals, sizes the ring buffer, attaches to `sock:inet_sock_set_state`,
//! and exposes the ring buffer, the loss counters and the kernel's own statistics of the
//! program (`recursion_misses`: runs the kernel skipped).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use anyhow::{anyhow, Context as _};
use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::{RawTracePoint, TracePoint};
use aya::{Ebpf, EbpfLoader};
use portrace_ebpf::{counter, Filter, Layout, SockLayout};

/// The kernel program, built by build.rs.
static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/portrace"));

const PROGRAM_NAME: &str = "inet_sock_set_state";
const BACKUP_NAME: &str = "inet_sock_set_state_backup";

/// The attached programs and their maps. Dropping it detaches the programs.
pub struct Tracer {
    ebpf: Ebpf,
    counters: PerCpuArray<MapData, u64>,
    /// Why the backup program is not attached, if it is not.
    pub backup_missing: Option<String>,
}

/// Totals of the kernel program's per-CPU counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub ring_full: u64,
    pub emitted: u64,
    pub released: u64,
    pub rescued: u64,
}

/// What the kernel itself counts for a program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgStats {
    /// Times the kernel skipped the program because a tracing program was already running
    /// on that CPU. `None` when the kernel does not report it (before Linux 5.12).
    pub recursion_misses: Option<u64>,
    /// Runs and total run time; zero unless `kernel.bpf_stats_enabled` is set.
    pub run_count: u64,
    pub run_time_ns: u64,
}

/// Loads the programs with `layout` and `filter`, with a ring buffer of `ring_size` bytes,
/// and attaches them. `sock` places the socket fields for the backup program; without it
/// only the main program runs. Returns the tracer and the ring buffer to read events from.
pub fn load(
    layout: &Layout,
    sock: Result<SockLayout, String>,
    filter: &Filter,
    ring_size: u32,
) -> anyhow::Result<(Tracer, RingBuf<MapData>)> {
    // Wake the reader only when the ring is a quarter full; it polls for the rest.
    let wakeup_bytes = u64::from(ring_size / 4);
    let sock_layout = sock.as_ref().copied().unwrap_or(SockLayout::ZERO);
    let mut ebpf = EbpfLoader::new()
        .override_global("LAYOUT", layout, true)
        .override_global("SOCK", &sock_layout, true)
        .override_global("FILTER", filter, true)
        .override_global("WAKEUP_BYTES", &wakeup_bytes, true)
        .map_max_entries("EVENTS", ring_size)
        .load(PROGRAM)
        .map_err(|e| explain_load_error(e.into()))?;
    let program: &mut TracePoint = ebpf
        .program_mut(PROGRAM_NAME)
        .ok_or_else(|| anyhow!("the kernel program has no '{PROGRAM_NAME}' (a build problem)"))?
        .try_into()?;
    program.load().map_err(|e| explain_load_error(e.into())).context("loading the kernel program")?;
    program
        .attach("sock", "inet_sock_set_state")
        .map_err(|e| explain_load_error(e.into()))
        .context("attaching to the sock:inet_sock_set_state tracepoint")?;
    // The backup must be attached after the main program so that it never runs while the
    // main one is missing; a failure to attach it is reported, not fatal.
    let backup_missing = match sock {
        Err(why) => Some(why),
        Ok(_) => attach_backup(&mut ebpf).err().map(|e| format!("{e:#}")),
    };
    let ring = RingBuf::try_from(ebpf.take_map("EVENTS").ok_or_else(|| anyhow!("no EVENTS map"))?)
        .context("opening the ring buffer")?;
    let counters =
        PerCpuArray::try_from(ebpf.take_map("COUNTERS").ok_or_else(|| anyhow!("no COUNTERS map"))?)
            .context("opening the counters")?;
    Ok((Tracer { ebpf, counters, backup_missing }, ring))
}

fn attach_backup(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let backup: &mut RawTracePoint = ebpf
        .program_mut(BACKUP_NAME)
        .ok_or_else(|| anyhow!("the kernel program has no '{BACKUP_NAME}'"))?
        .try_into()?;
    backup.load().context("loading the backup program")?;
    backup.attach("inet_sock_set_state").context("attaching the backup program to the raw tracepoint")?;
    Ok(())
}

/// Turns a permission error into the advice a user needs; leaves others as they are.
fn explain_load_error(err: anyhow::Error) -> anyhow::Error {
    let denied = err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::PermissionDenied)
            || cause.to_string().contains("Operation not permitted")
    });
    if denied {
        err.context(
            "the kernel refused to load portrace's eBPF program: it needs CAP_BPF and CAP_PERFMON \
             (or CAP_SYS_ADMIN); run it as root (sudo portrace)",
        )
    } else {
        err
    }
}

impl Tracer {
    /// Sums each counter over all CPUs.
    pub fn counters(&self) -> anyhow::Result<Counters> {
        let read = |index: u32| -> anyhow::Result<u64> {
            let per_cpu = self.counters.get(&index, 0).context("reading the loss counters")?;
            Ok(per_cpu.iter().copied().fold(0u64, u64::wrapping_add))
        };
        Ok(Counters {
            ring_full: read(counter::RING_FULL)?,
            emitted: read(counter::EMITTED)?,
            released: read(counter::RELEASED)?,
            rescued: read(counter::RESCUED)?,
        })
    }

    /// The kernel's statistics of the attached program.
    pub fn prog_stats(&self) -> anyhow::Result<ProgStats> {
        let program = self.ebpf.program(PROGRAM_NAME).ok_or_else(|| anyhow!("program gone"))?;
        let fd = program.fd().context("program descriptor")?;
        prog_stats(fd.as_fd()).context("reading the program's statistics from the kernel")
    }
}

/// `struct bpf_prog_info` offsets (include/uapi/linux/bpf.h); stable kernel ABI.
const INFO_RUN_TIME_NS: usize = 192;
const INFO_RUN_CNT: usize = 200;
const INFO_RECURSION_MISSES: usize = 208;
const INFO_LEN: usize = 224;

/// Reads a program's statistics with `BPF_OBJ_GET_INFO_BY_FD` (aya does not expose
/// `recursion_misses`).
fn prog_stats(fd: BorrowedFd<'_>) -> io::Result<ProgStats> {
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    let mut info = [0u8; INFO_LEN];
    let mut attr = InfoAttr { bpf_fd: fd.as_raw_fd() as u32, info_len: INFO_LEN as u32, info: info.as_mut_ptr() as u64 };
    // SAFETY: attr points to a valid buffer of info_len bytes that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let filled = attr.info_len as usize;
    let field = |offset: usize| -> Option<u64> {
        (filled >= offset + 8).then(|| u64::from_ne_bytes(info[offset..offset + 8].try_into().unwrap()))
    };
    Ok(ProgStats {
        recursion_misses: field(INFO_RECURSION_MISSES),
        run_count: field(INFO_RUN_CNT).unwrap_or(0),
        run_time_ns: field(INFO_RUN_TIME_NS).unwrap_or(0),
    })
}
