//! The handle on a live run's programs, [`Tracer`]: the loss counters summed over CPUs,
//! the kernel's own statistics of a program ([`ProgStats`], read with
//! `BPF_OBJ_GET_INFO_BY_FD`), the maps userspace writes (owners and listeners older than
//! the trace, the traced command's processes) or reads (timer follow-ups), and the
//! [`Ring`] the programs write their records into.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use anyhow::{anyhow, Context as _};
use aya::maps::{HashMap, MapData, PerCpuArray, RingBuf};
use aya::Ebpf;
use portrace_ebpf::{counter, ListenKey, Owner, SockOwner};

use super::NEWTASK_PROGRAM;
use crate::features::Features;

/// The attached programs and their maps. Dropping it detaches the programs.
pub struct Tracer {
    pub(super) ebpf: Ebpf,
    pub(super) counters: PerCpuArray<MapData, u64>,
    pub(super) inventory: HashMap<MapData, u64, Owner>,
    pub(super) listeners: HashMap<MapData, ListenKey, SockOwner>,
    /// Timewait timer removals whose follow-up userspace will not get (see
    /// [`Tracer::removal_followed`]).
    pub(super) followed: HashMap<MapData, u64, u64>,
    /// The traced command's processes, when tracing a command.
    pub(super) traced: Option<HashMap<MapData, u32, u8>>,
    /// The program whose skipped runs are losses: the raw tracepoint, or the classic one
    /// when it runs alone.
    pub(super) primary: &'static str,
    /// Whether the classic tracepoint program backs the main one up.
    pub backed_up: bool,
    /// Whether connections are followed into their timewait sockets.
    pub timewait_tracked: bool,
    /// The timer programs attached: typed, or raw where a typed one did not load.
    pub(super) timer_programs: Vec<&'static str>,
    /// What works on this kernel, and what does not and why, for every reader of the run.
    pub features: Features,
    /// How long making the object's maps and relocating its programs took (the rest of
    /// loading is the verifier's and attaching).
    pub opened_in: std::time::Duration,
    /// How long verifying the programs took, all at once
    /// ([`load_in_parallel`](super::load_in_parallel)).
    pub verified_in: std::time::Duration,
    /// How long reading the timewait timer handler's address took (0 when known before).
    pub symbols_took: std::time::Duration,
    /// How long loading waited for it after the programs were verified.
    pub symbols_waited: std::time::Duration,
}

/// Totals of the kernel programs' per-CPU counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub ring_full: u64,
    pub emitted: u64,
    pub released: u64,
    pub rescued: u64,
    pub owners_full: u64,
    pub timewait_full: u64,
    /// Transitions written at once, without the port they waited for: the hold map was full.
    pub hold_full: u64,
    /// Listeners not remembered: the listener map was full.
    pub listeners_full: u64,
    /// Timewait records that are no transition, dropped in a full ring.
    pub tw_ring_full: u64,
    pub unreadable: u64,
    pub unfollowed: u64,
    /// Runs of the primary program.
    pub entered: u64,
}

/// What the kernel itself counts for a program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgStats {
    /// Times the kernel skipped the program because it (or, for a classic tracepoint, any
    /// tracing program) was already running on that CPU. `None` when the kernel does not
    /// report it (before Linux 5.12).
    pub recursion_misses: Option<u64>,
    /// Runs and total run time; zero unless `kernel.bpf_stats_enabled` is set.
    pub run_count: u64,
    pub run_time_ns: u64,
    /// Instructions the verifier processed to accept the program; `None` before Linux 5.16.
    pub verified_insns: Option<u64>,
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
            owners_full: read(counter::OWNERS_FULL)?,
            timewait_full: read(counter::TIMEWAIT_FULL)?,
            hold_full: read(counter::HOLD_FULL)?,
            listeners_full: read(counter::LISTENERS_FULL)?,
            tw_ring_full: read(counter::TW_RING_FULL)?,
            unreadable: read(counter::UNREADABLE)?,
            unfollowed: read(counter::UNFOLLOWED)?,
            entered: read(counter::ENTERED)?,
        })
    }

    /// Whether the timer of timewait socket `tw`, removed at `removed_ns` (monotonic), was
    /// re-armed or expired without userspace getting that record (dropped in a full ring,
    /// or filtered out): then the removal was no kill. Forgets the note it finds.
    pub fn removal_followed(&mut self, tw: u64, removed_ns: u64) -> bool {
        let Ok(at) = self.followed.get(&tw, 0) else { return false };
        let _ = self.followed.remove(&tw);
        // The kernel program matched the follow-up to the removal within the window,
        // counted from a moment after the removal's record was stamped: twice the window
        // leaves room for that, and is still far less than a timewait socket's life.
        at >= removed_ns && at - removed_ns <= 2 * portrace_ebpf::REARM_WINDOW_NS
    }

    /// Hits of the state tracepoint handed to the primary program so far: the runs it
    /// counted and the runs the kernel skipped and counted.
    pub fn handed(&self) -> anyhow::Result<u64> {
        let entered = self.counters()?.entered;
        Ok(entered + self.prog_stats()?.recursion_misses.unwrap_or(0))
    }

    /// The kernel's statistics of the primary program.
    pub fn prog_stats(&self) -> anyhow::Result<ProgStats> {
        self.stats_of(self.primary)
    }

    /// Runs the kernel skipped of the timewait timer programs, summed.
    pub fn timer_misses(&self) -> u64 {
        if !self.timewait_tracked {
            return 0;
        }
        self.timer_programs.iter().filter_map(|name| self.stats_of(name).ok()?.recursion_misses).sum()
    }

    fn stats_of(&self, name: &str) -> anyhow::Result<ProgStats> {
        let program = self.ebpf.program(name).ok_or_else(|| anyhow!("program {name} gone"))?;
        let fd = program.fd().context("program descriptor")?;
        prog_stats(fd.as_fd()).context("reading the program's statistics from the kernel")
    }

    /// Puts a process into the traced command's set: it and every process it starts from
    /// now on are traced. Only when tracing a command.
    pub fn follow(&mut self, pid: u32) -> anyhow::Result<()> {
        let traced = self.traced.as_mut().ok_or_else(|| anyhow!("not tracing a command"))?;
        traced.insert(pid, 1, 0).context("writing the traced-process map")
    }

    /// Runs the kernel skipped of the program that follows the command's new processes
    /// (each may be a process not followed).
    pub fn newtask_misses(&self) -> u64 {
        if self.traced.is_none() {
            return 0;
        }
        self.stats_of(NEWTASK_PROGRAM).ok().and_then(|s| s.recursion_misses).unwrap_or(0)
    }

    /// Tells the kernel program the owner of a socket older than the trace, by cookie.
    /// Tells the kernel program the owner of a socket older than the trace (by its
    /// cookie), so that its later transitions are attributed to it; `in_cgroup`: the owner
    /// is in the `--cgroup` the filter names.
    pub fn add_inventory_owner(&mut self, cookie: u64, owner: &crate::record::Owner, in_cgroup: bool) -> anyhow::Result<()> {
        self.inventory.insert(cookie, inventory_owner(owner, in_cgroup), 0).context("writing the inventory map")
    }

    /// Tells the kernel program the owner of a listener older than the trace, so that its
    /// new child sockets are attributed to it. An entry the program already has (the
    /// listener was re-created since) is left alone.
    pub fn add_inventory_listener(
        &mut self,
        netns: u32,
        port: u16,
        owner: &crate::record::Owner,
        in_cgroup: bool,
    ) -> anyhow::Result<()> {
        let key = ListenKey { netns, port, _pad: 0 };
        const BPF_NOEXIST: u64 = 1;
        let owner = inventory_owner(owner, in_cgroup);
        match self.listeners.insert(key, SockOwner { skaddr: 0, owner }, BPF_NOEXIST) {
            Ok(()) => Ok(()),
            Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(e).context("writing the listener map"),
        }
    }
}

/// The kernel program's record of an owner the inventory found.
fn inventory_owner(owner: &crate::record::Owner, in_cgroup: bool) -> Owner {
    let mut comm = [0u8; 16];
    let b = owner.comm.as_bytes();
    comm[..b.len().min(15)].copy_from_slice(&b[..b.len().min(15)]);
    Owner {
        pid: owner.pid,
        source: portrace_ebpf::owner_source::INVENTORY,
        traced: 0,
        in_cgroup: u8::from(in_cgroup),
        _pad: 0,
        comm,
        cgroup: owner.cgroup,
    }
}

/// The ring buffer the kernel programs write their records into.
pub struct Ring(pub(super) RingBuf<MapData>);

impl Ring {
    /// The next record waiting, if any.
    pub fn next_record(&mut self) -> Option<impl std::ops::Deref<Target = [u8]> + '_> {
        self.0.next()
    }
}

impl AsRawFd for Ring {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

/// `struct bpf_prog_info` offsets (include/uapi/linux/bpf.h); stable kernel ABI.
const INFO_RUN_TIME_NS: usize = 192;
const INFO_RUN_CNT: usize = 200;
const INFO_RECURSION_MISSES: usize = 208;
/// `__u32 verified_insns`, right after `recursion_misses` (Linux 5.16).
const INFO_VERIFIED_INSNS: usize = 216;
const INFO_LEN: usize = 224;

/// Reads a program's statistics with `BPF_OBJ_GET_INFO_BY_FD` (aya does not expose
/// `recursion_misses`).
pub(super) fn prog_stats(fd: BorrowedFd<'_>) -> io::Result<ProgStats> {
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    let mut info = [0u8; INFO_LEN];
    let mut attr =
        InfoAttr { bpf_fd: fd.as_raw_fd() as u32, info_len: INFO_LEN as u32, info: info.as_mut_ptr() as u64 };
    // SAFETY: attr points to a valid buffer of info_len bytes that outlives the call.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, &mut attr as *mut InfoAttr, std::mem::size_of::<InfoAttr>())
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let filled = attr.info_len as usize;
    let field = |offset: usize| -> Option<u64> {
        (filled >= offset + 8).then(|| u64::from_ne_bytes(info[offset..offset + 8].try_into().unwrap()))
    };
    let field32 = |offset: usize| -> Option<u64> {
        (filled >= offset + 4).then(|| u64::from(u32::from_ne_bytes(info[offset..offset + 4].try_into().unwrap())))
    };
    Ok(ProgStats {
        verified_insns: field32(INFO_VERIFIED_INSNS),
        recursion_misses: field(INFO_RECURSION_MISSES),
        run_count: field(INFO_RUN_CNT).unwrap_or(0),
        run_time_ns: field(INFO_RUN_TIME_NS).unwrap_or(0),
    })
}
