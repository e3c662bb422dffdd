//! portrace's kernel programs.
//!
//! On every `inet_sock_set_state` hit they keep TCP transitions only, work out the socket's
//! owner, apply the user's filter, and write the survivors into a ring buffer. Nothing is
//! reserved for a transition the filter drops; every transition that finds the ring full is
//! counted. Timer programs follow the timewait socket a connection moves to when it leaves
//! FIN_WAIT2 or CLOSING, which the state tracepoint never reports.
//!
//! Two programs watch the state tracepoint, because the kernel skips a tracing program that
//! fires while it is already running on the same CPU (a softirq interrupting it):
//! - the main one is a raw tracepoint (`inet_sock_set_state`), which the kernel guards per
//!   program, so other tracing programs and BPF system calls never block it; it reads the
//!   socket at offsets userspace takes from BTF (`SOCK`);
//! - the backup is the classic tracepoint, reading the tracepoint record at offsets
//!   userspace takes from tracefs (`LAYOUT`). The kernel runs it after the main program for
//!   the same hit. The backup records exactly the hits the kernel skipped the main program
//!   for: those that came while the main program ran for another (`BUSY`), and those the
//!   main program left no note of (`HANDLED`), which came as its run was starting or
//!   ending. On a kernel without BTF it is the only program
//!   (`CLASSIC_PRIMARY`).
//!
//! The verifier allows 512 bytes of stack for a program's deepest call chain, and
//! `portrace/build.rs` holds every program to 384 of them over every path. So no record is
//! built on the stack: each run takes a record slot of its own in the per-CPU `SCRATCH`
//! map, one level deeper for each run it interrupts (see [`Scratch`]), and records reach
//! the ring buffer by copy from there. Functions pass records by reference, never by value.

use core::ffi::c_void;
use core::ptr::{addr_of, read_volatile};

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_F_NO_PREALLOC, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        generated::{
            bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_comm as get_comm_into, bpf_loop,
            bpf_probe_read_kernel as probe_read_into,
        },
    },
    macros::{map, raw_tracepoint, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{RawTracePointContext, TracePointContext},
};
use portrace_ebpf::{
    counter, kind, owner_source, tcp, Event, EVENT_SIZE, Filter, Layout, ListenKey, Owner, SockLayout,
    SockOwner, TaskLayout, TimeWaitEntry, TwTuple, TW_TUPLE_ENTRIES, AF_INET, AF_INET6, CLONE_THREAD, HOLD_ENTRIES, IPPROTO_TCP,
    LISTENER_ENTRIES, MAX_NETS, MAX_NETNS, MAX_PIDS, MAX_PORTS, CGROUP_LEVELS_SEARCHED, OWNER_ENTRIES, FOLLOWED_ENTRIES, REARM_WINDOW_NS, TIMEWAIT_ENTRIES, TRACED_ENTRIES,
};

/// Tracepoint field offsets, set by userspace before load.
#[no_mangle]
static LAYOUT: Layout = Layout::ZERO;

/// Socket field offsets from BTF, set by userspace before load.
#[no_mangle]
static SOCK: SockLayout = SockLayout::ZERO;

/// What to keep, set by userspace before load.
#[no_mangle]
static FILTER: Filter = Filter::ALL;

/// Wake the reader only once this many bytes wait in the ring; below that the reader finds
/// them by polling. A wakeup per event costs the traced host several microseconds each
/// time, and makes the program long enough to be interrupted and skipped.
#[no_mangle]
static WAKEUP_BYTES: u64 = 0;

/// Non-zero when the classic tracepoint program is the only state program (no BTF).
#[no_mangle]
static CLASSIC_PRIMARY: u32 = 0;

/// The address of the kernel's `tw_timer_handler` (from /proc/kallsyms); 0 turns the
/// timewait programs off.
#[no_mangle]
static TW_HANDLER: u64 = 0;

/// Non-zero when `skb:kfree_skb` names the socket that received the packet (`rx_sk`,
/// Linux 6.11 and later); otherwise the packet program finds timewait sockets by the
/// packet's addresses and ports (`TW_TUPLES`).
#[no_mangle]
static KFREE_SKB_RX_SK: u32 = 0;

/// Non-zero when only the traced command's sockets are kept (`portrace -- CMD`).
#[no_mangle]
static TRACE_COMMAND: u32 = 0;

/// Where the task tracepoints keep what the command's programs read, set by userspace.
#[no_mangle]
static TASK: TaskLayout = TaskLayout::ZERO;

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Per CPU: where runs build their records.
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// How many runs of portrace's programs can be under way on one CPU at once. A run in a
/// task (a system call: connect, close, listen) can be interrupted by a softirq (packets,
/// timers) whose programs run, and that by a hardirq that arms a timer (`timer_start`,
/// `timer_cancel`); the kernel never runs a program inside itself on the same CPU (a raw
/// tracepoint program's own guard, and one guard for all classic tracepoint programs), but
/// every other pair can nest: the state programs, the timer programs and the packet program
/// in any order. Three levels are the most seen; the fourth is margin.
const SCRATCH_LEVELS: usize = 4;

/// The record slots of one CPU, a level each. A run takes the level `depth` says is free
/// and moves `depth` past it until it ends. A run that interrupts another between its read
/// of `depth` and its write takes the same level, but it also ends before the interrupted
/// run goes on, so the two never use the level at the same time.
#[repr(C)]
struct Scratch {
    depth: u32,
    _pad: u32,
    events: [Event; SCRATCH_LEVELS],
}

/// Runs `f` with this run's record slot; `None` (and `f` not run) when every level is in
/// use, which only a kernel nesting programs deeper than they are known to nest would do.
#[inline(always)]
fn with_scratch<R>(f: impl FnOnce(&mut Event) -> R) -> Option<R> {
    let scratch = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: the map value is this CPU's and lives as long as the program; the levels
    // keep nested runs apart (see `Scratch`).
    let depth = unsafe { (*scratch).depth };
    let level = depth as usize;
    if level >= SCRATCH_LEVELS {
        return None;
    }
    // SAFETY: a pointer the map gave for this CPU's (or this key's) value: valid while the program runs, and kept apart from nested runs on this CPU as the map's notes say.
    unsafe { (*scratch).depth = depth + 1 };
    // SAFETY: a pointer the map gave for this CPU's (or this key's) value: valid while the program runs, and kept apart from nested runs on this CPU as the map's notes say.
    let result = f(unsafe { &mut (*scratch).events[level] });
    // SAFETY: a pointer the map gave for this CPU's (or this key's) value: valid while the program runs, and kept apart from nested runs on this CPU as the map's notes say.
    unsafe { (*scratch).depth = depth };
    Some(result)
}

/// `CLOSE -> SYN_SENT` transitions held until their socket's local port is known.
#[map]
static HOLD: HashMap<u64, Event> = HashMap::with_max_entries(HOLD_ENTRIES, 0);

/// Per CPU: 1 while the main program runs there. A backup run that finds it set is
/// nested in the main program's run for another hit, which is exactly when the kernel
/// skips the main program: the backup records its hit without looking for a note.
#[map]
static BUSY: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Per CPU: 1 while the backup program runs there. The kernel skips every classic
/// tracepoint program (the backup included) for a hit that interrupts it, so a main run
/// that finds it set leaves no note: no backup run would ever take it off.
#[map]
static BACKUP_BUSY: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Which of the two state programs the kernel runs first for a hit, as userspace's
/// calibration hit showed: [`ORDER_UNKNOWN`], [`ORDER_MAIN_FIRST`] or
/// [`ORDER_BACKUP_FIRST`]. The backup can use the main program's notes of the hits it ran
/// for only when the main program runs first (it is attached first, but a classic
/// tracepoint another tool opened earlier puts the backup's probe ahead of it).
#[map]
static ORDER: Array<u32> = Array::with_max_entries(1, 0);

const ORDER_UNKNOWN: u32 = 0;
const ORDER_MAIN_FIRST: u32 = 1;
const ORDER_BACKUP_FIRST: u32 = 2;

/// portrace's own process id, set by userspace: the hits it makes itself are the
/// calibration, never shown.
#[no_mangle]
static OWN_TGID: u32 = 0;

/// Per CPU: the hits the main program ran for, most recent last, until the backup program
/// takes its note off.
#[map]
static HANDLED: PerCpuArray<Handled> = PerCpuArray::with_max_entries(1, 0);

/// Notes kept per CPU, as a stack. The main program pushes a note for each hit it runs
/// for. The backup run for the same hit comes after it on the same CPU; the pairs of runs
/// of hits that interrupt the two in between push and pop their own notes, so it finds
/// its note on top, or below the notes of interrupting hits whose backup run the kernel
/// skipped. Those come in whole batches: a softirq that lands after the kernel has
/// claimed the classic tracepoint's slot for this hit, but before the backup program
/// starts, handles every packet waiting (hundreds under load) with no backup run. The
/// stack holds such a batch whole; the notes above the one taken are those leftovers and
/// are popped with it.
const HANDLED_SLOTS: usize = 1024;
/// A note older than this is stale: its backup run never came. A main run and the backup
/// run for the same hit are apart only by the interrupts between them (a softirq runs at
/// most about 2 ms before it yields). A stale note is never taken for a later hit's
/// (the same socket address can make the same transition again once it holds a new
/// socket), and the search stops at the first one: the notes below it are older still.
const HANDLED_STALE_NS: u64 = 10_000_000;
/// How deep the backup program looks on a kernel without `bpf_loop`.
const HANDLED_SEARCH_BOUNDED: u32 = 255;

#[repr(C)]
struct Handled {
    /// The number of notes pushed and not popped (the stack's top, modulo `HANDLED_SLOTS`).
    top: u32,
    _pad: u32,
    /// Each note is [`hit_id`] of a hit.
    ids: [u64; HANDLED_SLOTS],
    /// When each note was made.
    stamps: [u64; HANDLED_SLOTS],
}

/// One hit's identity: its socket's address and its two states. The states go into the
/// top 16 bits, which are the same in every kernel address, so that two hits have the same
/// identity only when they are of the same socket address and the same two states.
fn hit_id(skaddr: u64, oldstate: u8, newstate: u8) -> u64 {
    skaddr ^ (u64::from(oldstate ^ 0x5a) << 56) ^ (u64::from(newstate) << 48)
}

/// The main program notes a hit it runs for. It claims the slot (moves the top) before it
/// writes the note, so a pair of runs that interrupts it in between takes the next slot.
fn note_handled(id: u64) {
    if let Some(h) = HANDLED.get_ptr_mut(0) {
        // SAFETY: a pointer the map gave for this CPU's (or this key's) value: valid while the program runs, and kept apart from nested runs on this CPU as the map's notes say.
        unsafe {
            let slot = (*h).top;
            (*h).top = slot.wrapping_add(1);
            (*h).stamps[slot as usize % HANDLED_SLOTS] = bpf_ktime_get_ns();
            (*h).ids[slot as usize % HANDLED_SLOTS] = id;
        }
    }
}

/// The backup program takes the note of its hit off, with the notes left above it (of
/// hits whose backup run the kernel skipped); `false` when there is none: the kernel
/// skipped the main program for this hit.
fn take_handled<const HELPER_LOOP: bool>(id: u64) -> bool {
    let Some(h) = HANDLED.get_ptr_mut(0) else { return false };
    // SAFETY: a pointer the map gave for this CPU's (or this key's) value: valid while the program runs, and kept apart from nested runs on this CPU as the map's notes say.
    let top = unsafe { (*h).top };
    // SAFETY: bpf_ktime_get_ns reads the clock; it has no preconditions.
    let mut search = NoteSearch { id, now: unsafe { bpf_ktime_get_ns() }, top, depth: 0 };
    if HELPER_LOOP {
        // A loop the kernel runs (`bpf_loop`): the verifier checks its body once, whatever
        // the stack's size.
        // SAFETY: bpf_loop runs search_step with `search`, a local that outlives the loop; search_step touches it only through the pointer it is handed.
        unsafe {
            bpf_loop(HANDLED_SLOTS as u32 - 1, search_step as *mut c_void, &mut search as *mut NoteSearch as *mut c_void, 0);
        }
    } else {
        // Kernels before 5.17: an ordinary loop, which the verifier walks step by step,
        // so it stops sooner.
        for k in 0..u64::from(HANDLED_SEARCH_BOUNDED) {
            if search_step(k, &mut search as *mut NoteSearch as *mut c_void) != 0 {
                break;
            }
        }
    }
    if search.depth == 0 {
        return false;
    }
    let slot = top.wrapping_sub(search.depth);
    // SAFETY: a pointer the map gave for this CPU's (or this key's) value: valid while the program runs, and kept apart from nested runs on this CPU as the map's notes say.
    unsafe {
        (*h).ids[slot as usize % HANDLED_SLOTS] = 0;
        (*h).top = slot;
    }
    true
}

/// Where [`take_handled`]'s search stands.
#[repr(C)]
struct NoteSearch {
    id: u64,
    now: u64,
    top: u32,
    /// How far below the top the note was found; 0 while it is not.
    depth: u32,
}

/// One step of [`take_handled`]'s search, `k` notes below the top (counting from 0): 1
/// ends the search (the note is found, or the notes from here down are stale), 0 goes on.
#[inline(never)]
extern "C" fn search_step(k: u64, ctx: *mut c_void) -> i64 {
    let search = ctx as *mut NoteSearch;
    let Some(h) = HANDLED.get_ptr_mut(0) else { return 1 };
    // SAFETY: `search` is take_handled's NoteSearch, alive for the whole bpf_loop; `h` is this CPU's HANDLED value, valid while the program runs.
    unsafe {
        let depth = k as u32 + 1;
        let i = (*search).top.wrapping_sub(depth) as usize % HANDLED_SLOTS;
        if (*search).now.wrapping_sub((*h).stamps[i]) > HANDLED_STALE_NS {
            return 1;
        }
        if (*h).ids[i] == (*search).id {
            (*search).depth = depth;
            return 1;
        }
    }
    0
}

/// Live sockets' owners, by socket address.
#[map]
static OWNERS: HashMap<u64, Owner> = HashMap::with_max_entries(OWNER_ENTRIES, BPF_F_NO_PREALLOC);

/// Owners of sockets older than the trace, by socket cookie; filled by userspace.
#[map]
static INVENTORY: HashMap<u64, Owner> =
    HashMap::with_max_entries(OWNER_ENTRIES, BPF_F_NO_PREALLOC);

/// Listening sockets and their owners, by network namespace and port: a child socket
/// belongs to its listener's owner until that process acts on it.
#[map]
static LISTENERS: HashMap<ListenKey, SockOwner> =
    HashMap::with_max_entries(LISTENER_ENTRIES, BPF_F_NO_PREALLOC);

/// Timewait sockets portrace saw a connection move to, by timewait socket address.
#[map]
static TIMEWAITS: HashMap<u64, TimeWaitEntry> =
    HashMap::with_max_entries(TIMEWAIT_ENTRIES, BPF_F_NO_PREALLOC);

/// The traced command's live processes, by thread group id (the value is unused).
/// Userspace puts the command in before it runs; `task_newtask` adds every process one of
/// them starts, and `sched_process_exit` removes a process once all its threads are gone.
#[map]
static TRACED: HashMap<u32, u8> = HashMap::with_max_entries(TRACED_ENTRIES, BPF_F_NO_PREALLOC);

/// Kernels before 6.11 only: timewait sockets by their addresses and ports, so that the
/// packet program can tell which one a packet reached. Entries are not removed: a stale
/// one leads to a timewait socket `TIMEWAITS` no longer knows, or whose ports differ, and
/// is ignored; the least recently used go first.
#[map]
static TW_TUPLES: LruHashMap<TwTuple, u64> = LruHashMap::with_max_entries(TW_TUPLE_ENTRIES, 0);

/// Per CPU: the timewait socket whose timer was just removed, and its entry. The kernel
/// removes a timer right before re-arming it and right before running it, on the same CPU;
/// a removal followed by neither is the timewait socket being killed, and its address may
/// then be reused by a new timewait socket, which must not inherit the old entry.
#[map]
static CANCELLED: PerCpuArray<Cancelled> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct Cancelled {
    tw: u64,
    ts_ns: u64,
    entry: TimeWaitEntry,
    /// Whether the removal's record reached the ring buffer.
    delivered: u64,
}

/// Timer removals that userspace got and whose follow-up (re-arm or expiry) it will not
/// get: the follow-up's record was dropped in a full ring, or the filter let the removal
/// through but not it (`--state CLOSE` keeps a removal, reported as a move to CLOSE, and
/// drops a re-arm in TIME_WAIT). By timewait socket, the time of the follow-up. Userspace
/// reads it before it takes an unanswered removal for a kill.
#[map]
static FOLLOWED: LruHashMap<u64, u64> = LruHashMap::with_max_entries(FOLLOWED_ENTRIES, 0);

/// Per CPU: the timewait sockets whose timer was just armed for the first time, each
/// waiting for the transition of the full socket it replaces (which follows on the same
/// CPU). There can be several: a connection handled in a task (from its socket's backlog)
/// can be interrupted between the two by a softirq that hands another connection over.
#[map]
static PENDING_TW: PerCpuArray<PendingTws> = PerCpuArray::with_max_entries(1, 0);

/// Armings kept per CPU: enough for a hand-over interrupted by a softirq that arms a few
/// timewait timers of its own.
const PENDING_TW_SLOTS: usize = 8;

#[repr(C)]
struct PendingTws {
    /// Where the next one goes (modulo `PENDING_TW_SLOTS`): the oldest is replaced.
    next: u32,
    _pad: u32,
    slots: [PendingTw; PENDING_TW_SLOTS],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct PendingTw {
    tw: u64,
    ts_ns: u64,
    sport: u16,
    dport: u16,
    substate: u8,
    _pad: [u8; 3],
}

/// A timewait socket's timer armed where no entry was known for it yet: its first arming
/// (the hand-over that claims it follows), or a re-arm that beat the hand-over's program
/// to it (the peer's FIN reached the new timewait socket on another CPU). The hand-over
/// reads it to report such a change where and when it happened.
#[map]
static EARLY_TW: LruHashMap<u64, EarlyTw> = LruHashMap::with_max_entries(4096, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct EarlyTw {
    ts_ns: u64,
    pid_tgid: u64,
    comm: [u8; 16],
    substate: u8,
    _pad: [u8; 7],
}

/// How long after its timer was armed a timewait socket may still be matched to the full
/// socket's transition: they happen one after the other in the same kernel function, but
/// interrupts can come between, and a virtual CPU's host can stall it (as `REARM_WINDOW_NS`
/// says). The newest arming that matches is taken, so a stale one never wins over it.
const PENDING_TW_NS: u64 = REARM_WINDOW_NS;

/// Reads a global that userspace rewrote before load; volatile so the compiler does not
/// fold in the placeholder value.
macro_rules! global {
    ($place:expr) => {{
        #[allow(unused_unsafe, reason = "also used inside unsafe blocks")]
        // SAFETY: a plain read of a global the program never writes.
        let value = unsafe { read_volatile(addr_of!($place)) };
        value
    }};
}

/// One socket offset from `SOCK`, read where it is used (a copy of the whole layout would
/// take 40 bytes of the stack).
macro_rules! sock {
    ($field:ident) => {
        global!(SOCK.$field)
    };
}

/// One tracepoint record offset from `LAYOUT`, likewise.
macro_rules! lay {
    ($field:ident) => {
        global!(LAYOUT.$field)
    };
}

/// The main program, on the raw tracepoint: `(struct sock *sk, int oldstate, int newstate)`.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: RawTracePointContext) -> i32 {
    let busy = BUSY.get_ptr_mut(0);
    if let Some(busy) = busy {
        // SAFETY: a pointer the map gave for this CPU's (or this key's) value: valid while the program runs, and kept apart from nested runs on this CPU as the map's notes say.
        unsafe { *busy = 1 };
    }
    bump(counter::ENTERED);
    let sk: *const c_void = ctx.arg(0);
    let oldstate: u64 = ctx.arg(1);
    let newstate: u64 = ctx.arg(2);
    if !matches!(BACKUP_BUSY.get(0), Some(&1)) {
        note_handled(hit_id(sk as u64, oldstate as u8, newstate as u8));
    }
    if !is_calibration(oldstate as u8, newstate as u8) {
        let read = with_scratch(|ev| from_socket(ev, sk, oldstate as u8, newstate as u8));
        if !matches!(read, Some(Ok(()))) {
            bump(counter::UNREADABLE);
        }
    }
    if let Some(busy) = busy {
        // SAFETY: a pointer the map gave for this CPU's (or this key's) value: valid while the program runs, and kept apart from nested runs on this CPU as the map's notes say.
        unsafe { *busy = 0 };
    }
    0
}

/// A hit portrace made itself, to learn the programs' order: its own listener opened or
/// closed, in its own system call. (The task on the CPU alone says nothing: a softirq
/// handles other sockets' packets in whatever task it interrupts, portrace's included,
/// and a new child socket leaves LISTEN there; but a listener enters or leaves LISTEN only
/// in its owner's own call.)
fn is_calibration(oldstate: u8, newstate: u8) -> bool {
    let own = global!(OWN_TGID);
    own != 0
        && matches!((oldstate, newstate), (tcp::CLOSE, tcp::LISTEN) | (tcp::LISTEN, tcp::CLOSE))
        && (bpf_get_current_pid_tgid() >> 32) as u32 == own
}

/// The backup program (or, without BTF, the only one), on the classic tracepoint.
#[tracepoint]
pub fn inet_sock_set_state_backup(ctx: TracePointContext) -> u32 {
    backup::<true>(&ctx)
}

/// The same, for kernels without the `bpf_loop` helper (before 5.17), which refuse the
/// first; userspace loads this one instead.
#[tracepoint]
pub fn inet_sock_set_state_backup_bounded(ctx: TracePointContext) -> u32 {
    backup::<false>(&ctx)
}

#[inline(always)]
fn backup<const HELPER_LOOP: bool>(ctx: &TracePointContext) -> u32 {
    if global!(CLASSIC_PRIMARY) != 0 {
        bump(counter::ENTERED);
        if !matches!(with_scratch(|ev| from_tracepoint(ev, ctx, false)), Some(Ok(()))) {
            bump(counter::UNREADABLE);
        }
        return 0;
    }
    let busy = BACKUP_BUSY.get_ptr_mut(0);
    if let Some(busy) = busy {
        // SAFETY: a pointer the map gave for this CPU's (or this key's) value: valid while the program runs, and kept apart from nested runs on this CPU as the map's notes say.
        unsafe { *busy = 1 };
    }
    if main_skipped::<HELPER_LOOP>(ctx) {
        bump(counter::RESCUED);
        if !matches!(with_scratch(|ev| from_tracepoint(ev, ctx, true)), Some(Ok(()))) {
            bump(counter::UNREADABLE);
        }
    }
    if let Some(busy) = busy {
        // SAFETY: a pointer the map gave for this CPU's (or this key's) value: valid while the program runs, and kept apart from nested runs on this CPU as the map's notes say.
        unsafe { *busy = 0 };
    }
    0
}

/// Whether the kernel skipped the main program for the backup's hit. (The calibration hit
/// teaches the order of the two programs and is never recorded.)
#[inline(never)]
fn main_skipped<const HELPER_LOOP: bool>(ctx: &TracePointContext) -> bool {
    // SAFETY: read_at copies from the tracepoint's record at an offset taken from this kernel's tracefs format; the copy is a checked probe read that fails rather than faults.
    let (id, calibration) = unsafe {
        match (ctx.read_at::<u64>(lay!(skaddr) as usize), ctx.read_at::<i32>(lay!(oldstate) as usize), ctx.read_at::<i32>(lay!(newstate) as usize)) {
            (Ok(sk), Ok(old), Ok(new)) => (hit_id(sk, old as u8, new as u8), is_calibration(old as u8, new as u8)),
            _ => (0, false),
        }
    };
    // The main program is mid-run on this CPU: the kernel skipped it for this hit.
    if !calibration && matches!(BUSY.get(0), Some(&1)) {
        return true;
    }
    let order = ORDER.get(0).copied().unwrap_or(ORDER_UNKNOWN);
    // Otherwise, when the main program runs first, exactly the hits it has no note of
    // (it was just starting or ending its run for another hit when this one came). The
    // calibration hit's note says whether it runs first. (One search, for the verifier.)
    let learning = calibration && order == ORDER_UNKNOWN;
    let noted = (learning || order == ORDER_MAIN_FIRST) && id != 0 && take_handled::<HELPER_LOOP>(id);
    if calibration {
        if learning {
            if let Some(o) = ORDER.get_ptr_mut(0) {
                // SAFETY: a pointer the map gave for this CPU's (or this key's) value: valid while the program runs, and kept apart from nested runs on this CPU as the map's notes say.
                unsafe { *o = if noted { ORDER_MAIN_FIRST } else { ORDER_BACKUP_FIRST } };
            }
        }
        return false;
    }
    order == ORDER_MAIN_FIRST && !noted
}

/// A transition from the classic tracepoint's record, processed; `rescue`: the backup
/// program records it because the kernel skipped the main program.
#[inline(always)]
fn from_tracepoint(ev: &mut Event, ctx: &TracePointContext, rescue: bool) -> Result<(), i32> {
    if read_tracepoint(ev, ctx)? {
        process(ev, rescue);
    }
    Ok(())
}

/// Reads a transition from the classic tracepoint's record into `ev`; `false` when it is
/// not TCP's.
#[inline(never)]
fn read_tracepoint(ev: &mut Event, ctx: &TracePointContext) -> Result<bool, i32> {
    // SAFETY: bpf_ktime_get_ns reads the clock; it has no preconditions.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let protocol = if lay!(protocol_size) == 1 {
        // SAFETY: read_at copies from the tracepoint's record at an offset taken from this kernel's tracefs format; the copy is a checked probe read that fails rather than faults.
        u16::from(unsafe { ctx.read_at::<u8>(lay!(protocol) as usize)? })
    } else {
        // SAFETY: read_at copies from the tracepoint's record at an offset taken from this kernel's tracefs format; the copy is a checked probe read that fails rather than faults.
        unsafe { ctx.read_at::<u16>(lay!(protocol) as usize)? }
    };
    if protocol != IPPROTO_TCP {
        return Ok(false);
    }
    // SAFETY: read_at copies from the tracepoint's record at an offset taken from this kernel's tracefs format; the copy is a checked probe read that fails rather than faults.
    let family: u16 = unsafe { ctx.read_at(lay!(family) as usize)? };
    // SAFETY: read_at copies from the tracepoint's record at an offset taken from this kernel's tracefs format; the copy is a checked probe read that fails rather than faults.
    let oldstate: i32 = unsafe { ctx.read_at(lay!(oldstate) as usize)? };
    // SAFETY: read_at copies from the tracepoint's record at an offset taken from this kernel's tracefs format; the copy is a checked probe read that fails rather than faults.
    let newstate: i32 = unsafe { ctx.read_at(lay!(newstate) as usize)? };
    // SAFETY: read_at copies from the tracepoint's record at an offset taken from this kernel's tracefs format; the copy is a checked probe read that fails rather than faults.
    reset(ev, ts_ns, unsafe { ctx.read_at(lay!(skaddr) as usize)? }, family);
    // SAFETY: read_at copies from the tracepoint's record at an offset taken from this kernel's tracefs format; the copy is a checked probe read that fails rather than faults.
    ev.sport = unsafe { ctx.read_at(lay!(sport) as usize)? };
    // SAFETY: read_at copies from the tracepoint's record at an offset taken from this kernel's tracefs format; the copy is a checked probe read that fails rather than faults.
    ev.dport = unsafe { ctx.read_at(lay!(dport) as usize)? };
    ev.oldstate = oldstate as u8;
    ev.newstate = newstate as u8;
    let record = ctx.as_ptr() as u64;
    match family {
        AF_INET => {
            read_into(first4(&mut ev.saddr), record + lay!(saddr) as u64)?;
            read_into(first4(&mut ev.daddr), record + lay!(daddr) as u64)?;
        }
        AF_INET6 => {
            read_into(&mut ev.saddr, record + lay!(saddr_v6) as u64)?;
            read_into(&mut ev.daddr, record + lay!(daddr_v6) as u64)?;
            unmap_v4(ev);
        }
        _ => return Err(0),
    }
    Ok(true)
}

/// The first four bytes of an address: where an IPv4 address goes.
#[inline(always)]
fn first4(a: &mut [u8; 16]) -> &mut [u8; 4] {
    // SAFETY: [u8; 16] starts with 4 bytes, and [u8; 4] has alignment 1.
    unsafe { &mut *(a.as_mut_ptr() as *mut [u8; 4]) }
}

/// Reads a kernel value at `offset` bytes from `base`.
fn kread<T>(base: u64, offset: u16) -> Result<T, i32> {
    // SAFETY: a probe read of kernel memory: a bad address makes it fail, never fault.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T).map_err(|e| e as i32) }
}

/// Reads `size_of::<T>()` kernel bytes at `address` straight into `dst` (a record slot's
/// field), with no copy on the stack.
#[inline(always)]
fn read_into<T>(dst: &mut T, address: u64) -> Result<(), i32> {
    // SAFETY: the helper writes exactly size_of::<T>() bytes into `dst`, and T here is
    // always an array of bytes, valid for any content.
    let ret = unsafe { probe_read_into(dst as *mut T as *mut c_void, core::mem::size_of::<T>() as u32, address as *const c_void) };
    if ret < 0 { Err(ret as i32) } else { Ok(()) }
}

/// The current task's command, straight into `dst`.
#[inline(always)]
fn comm_into(dst: &mut [u8; 16]) {
    // SAFETY: the helper writes at most 16 bytes, NUL-padded; on failure it zeroes them.
    unsafe { get_comm_into(dst.as_mut_ptr() as *mut c_void, 16) };
}

/// A transition read from the socket itself, processed.
#[inline(always)]
fn from_socket(ev: &mut Event, sk: *const c_void, oldstate: u8, newstate: u8) -> Result<(), i32> {
    if read_socket(ev, sk, oldstate, newstate)? {
        process(ev, false);
    }
    Ok(())
}

/// Reads a transition from the socket into `ev`; `false` when it is not a TCP socket's.
#[inline(never)]
fn read_socket(ev: &mut Event, sk: *const c_void, oldstate: u8, newstate: u8) -> Result<bool, i32> {
    // SAFETY: bpf_ktime_get_ns reads the clock; it has no preconditions.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let sk = sk as u64;
    let protocol =
        if sock!(protocol_size) == 1 { u16::from(kread::<u8>(sk, sock!(protocol))?) } else { kread::<u16>(sk, sock!(protocol))? };
    if protocol != IPPROTO_TCP {
        return Ok(false);
    }
    let family: u16 = kread(sk, sock!(family))?;
    reset(ev, ts_ns, sk, family);
    ev.sport = u16::from_be(kread(sk, sock!(sport))?);
    ev.dport = u16::from_be(kread(sk, sock!(dport))?);
    ev.oldstate = oldstate;
    ev.newstate = newstate;
    read_addresses(ev, sk, sock!(saddr))?;
    Ok(true)
}

/// Clears a record slot for a new record: every field, so nothing of the slot's last
/// record reaches userspace.
#[inline(always)]
fn reset(ev: &mut Event, ts_ns: u64, skaddr: u64, family: u16) {
    // Word by word, volatile: the compiler would otherwise call `memset`, a function of its
    // own with a frame of its own.
    let words = ev as *mut Event as *mut u64;
    for i in 0..EVENT_SIZE / 8 {
        // SAFETY: Event is 8-byte aligned, EVENT_SIZE bytes long, and valid with any bits.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
    ev.ts_ns = ts_ns;
    ev.skaddr = skaddr;
    ev.family = family;
    ev.kind = kind::TRANSITION;
    ev.owner_source = owner_source::UNKNOWN;
}

/// Reads the addresses from a socket (`saddr_at`: where its local IPv4 address is).
#[inline(always)]
fn read_addresses(ev: &mut Event, sk: u64, saddr_at: u16) -> Result<(), i32> {
    match ev.family {
        AF_INET => {
            read_into(first4(&mut ev.saddr), sk + saddr_at as u64)?;
            read_into(first4(&mut ev.daddr), sk + sock!(daddr) as u64)?;
        }
        AF_INET6 => {
            read_into(&mut ev.saddr, sk + sock!(saddr_v6) as u64)?;
            read_into(&mut ev.daddr, sk + sock!(daddr_v6) as u64)?;
            unmap_v4(ev);
        }
        _ => return Err(0),
    }
    Ok(())
}

/// The socket's network namespace inode number (0 when it cannot be read).
fn netns_of(sk: u64) -> u32 {
    let net: u64 = kread(sk, sock!(net)).unwrap_or(0);
    if net == 0 {
        return 0;
    }
    kread(net, sock!(net_inum)).unwrap_or(0)
}

/// The transitions only a socket's own process makes, in a system call: `listen`,
/// `connect`, and `close` or `shutdown` of a listener or a connection.
fn made_by_owner(old: u8, new: u8) -> bool {
    matches!(
        (old, new),
        (tcp::CLOSE, tcp::LISTEN)
            | (tcp::CLOSE, tcp::SYN_SENT)
            | (tcp::ESTABLISHED, tcp::FIN_WAIT1)
            | (tcp::CLOSE_WAIT, tcp::LAST_ACK)
            | (tcp::LISTEN, tcp::CLOSE)
    )
}

/// Everything after reading a state transition: owner, timewait hand-over, close details,
/// the filter, holding transitions whose ports the kernel has not set yet, and output.
#[inline(never)]
fn process(ev: &mut Event, rescue: bool) {
    let pid_tgid = bpf_get_current_pid_tgid();
    ev.pid = (pid_tgid >> 32) as u32;
    ev.tid = pid_tgid as u32;
    let sk = ev.skaddr;
    let have_btf = sock!(valid) != 0;
    if have_btf {
        ev.netns = netns_of(sk);
        ev.aux = kread(sk, sock!(cookie)).unwrap_or(0);
    }

    // The owner, and whether the socket is the traced command's.
    let listen_key = ListenKey { netns: ev.netns, port: ev.sport, _pad: 0 };
    let mut learned = false;
    let mut traced = 0u8;
    let mut in_cgroup = 0u8;
    if made_by_owner(ev.oldstate, ev.newstate) && ev.pid != 0 {
        ev.owner_pid = ev.pid;
        comm_into(&mut ev.owner_comm);
        ev.owner_source = owner_source::SYSCALL;
        // The owner's own task is on the CPU: its cgroup is the owner's.
        // SAFETY: the helper reads the current task's cgroup; it has no preconditions.
        ev.owner_cgroup = unsafe { bpf_get_current_cgroup_id() };
        in_cgroup = in_filter_cgroup();
        learned = true;
        if global!(TRACE_COMMAND) != 0 {
            // A socket of the command stays the command's: a process closing it as it
            // exits is no longer in the traced set by then.
            // SAFETY: the map value is read at once, while this program runs; the kernel keeps it valid until the program returns, even if another CPU deletes the entry.
            let before = unsafe { OWNERS.get(&sk) }.map_or(0, |o| o.traced);
            // SAFETY: the map value is read at once, while this program runs; the kernel keeps it valid until the program returns, even if another CPU deletes the entry.
            traced = before | u8::from(unsafe { TRACED.get(&ev.pid) }.is_some());
        }
    } else if ev.oldstate == tcp::LISTEN && ev.newstate == tcp::SYN_RECV {
        // SAFETY: the map value is read at once, while this program runs; the kernel keeps it valid until the program returns, even if another CPU deletes the entry.
        if let Some(l) = unsafe { LISTENERS.get(&listen_key) } {
            set_owner(ev, &l.owner, owner_source::LISTENER);
            traced = l.owner.traced;
            in_cgroup = l.owner.in_cgroup;
            learned = true;
        }
    // SAFETY: the map value is read at once, while this program runs; the kernel keeps it valid until the program returns, even if another CPU deletes the entry.
    } else if let Some(o) = unsafe { OWNERS.get(&sk) } {
        set_owner(ev, o, o.source);
        traced = o.traced;
        in_cgroup = o.in_cgroup;
        if o.source != owner_source::SYSCALL && ev.newstate == tcp::CLOSE && ev.pid == o.pid && ev.pid != 0 {
            // The owner's own process closed the socket (an abort: close with SO_LINGER 0):
            // it acted on the socket itself. (Other transitions its process happens to run,
            // such as a FIN processed from its socket backlog, keep their source.)
            ev.owner_source = owner_source::SYSCALL;
            learned = true;
        }
    } else if ev.aux != 0 {
        // SAFETY: the map value is read at once, while this program runs; the kernel keeps it valid until the program returns, even if another CPU deletes the entry.
        if let Some(o) = unsafe { INVENTORY.get(&ev.aux) } {
            set_owner(ev, o, owner_source::INVENTORY);
            in_cgroup = o.in_cgroup;
            learned = true;
        }
    }
    let owner = Owner {
        pid: ev.owner_pid,
        source: ev.owner_source,
        traced,
        in_cgroup,
        _pad: 0,
        comm: ev.owner_comm,
        cgroup: ev.owner_cgroup,
    };
    if in_cgroup != 0 {
        ev.owner_source |= owner_source::IN_CGROUP;
    }

    if ev.newstate == tcp::CLOSE {
        let _ = OWNERS.remove(&sk);
        if ev.oldstate == tcp::LISTEN {
            // SAFETY: the map value is read at once, while this program runs; the kernel keeps it valid until the program returns, even if another CPU deletes the entry.
            if let Some(l) = unsafe { LISTENERS.get(&listen_key) } {
                if l.skaddr == sk || l.skaddr == 0 {
                    let _ = LISTENERS.remove(&listen_key);
                }
            }
        }
        if have_btf {
            ev.error = kread(sk, sock!(err)).unwrap_or(0);
            ev.retransmits = kread(sk, sock!(retransmits)).unwrap_or(0);
            claim_timewait(ev, &owner);
        }
    } else if learned && ev.owner_source != owner_source::UNKNOWN {
        // An owner learned again (close() by the process whose connect() or listener named
        // it) is usually the one stored: then at most its source changes, a single byte
        // written in place. An insert allocates a new element and frees the old one, a
        // cost otherwise paid twice per connection; it is kept for a different owner, so
        // that another CPU reading the entry never sees half of one and half of another.
        let stored = OWNERS.get_ptr_mut(&sk);
        // SAFETY: the map value stays valid while the program runs.
        let same = stored.is_some_and(|p| unsafe {
            (*p).pid == owner.pid
                && (*p).traced == owner.traced
                && (*p).comm == owner.comm
                && (*p).cgroup == owner.cgroup
                && (*p).in_cgroup == owner.in_cgroup
        });
        match stored {
            // SAFETY: a pointer the map gave for this CPU's (or this key's) value: valid while the program runs, and kept apart from nested runs on this CPU as the map's notes say.
            Some(p) if same => unsafe {
                if (*p).source != owner.source {
                    (*p).source = owner.source;
                }
            },
            _ => {
                if OWNERS.insert(&sk, &owner, 0).is_err() {
                    bump(counter::OWNERS_FULL);
                }
            }
        }
        if ev.newstate == tcp::LISTEN {
            if LISTENERS.insert(&listen_key, &SockOwner { skaddr: sk, owner }, 0).is_err() {
                bump(counter::LISTENERS_FULL);
            }
        }
    }

    // Filtering and output.
    if global!(TRACE_COMMAND) != 0 && traced == 0 {
        return;
    }
    // A transition held for a port its socket had not set yet goes out first, judged with
    // the port this transition shows. Only a socket's first transition is ever held, so
    // only a transition out of the held one's new state can follow it.
    let connect_held = ev.oldstate == tcp::SYN_SENT && global!(FILTER.hold_unbound) != 0;
    if connect_held || ev.oldstate == tcp::SYN_RECV {
        release_held(ev);
    }
    if ev.sport == 0 && ev.newstate == tcp::SYN_SENT && global!(FILTER.hold_unbound) != 0 {
        // A connect: its local port is bound right after this transition. The filter has a
        // condition on it, so the transition waits for the socket's next one to tell.
        if passes(ev, UNSET, ev.dport.into()) {
            stamp_comm(ev);
            hold(ev);
        }
        return;
    }
    if ev.dport == 0 && ev.oldstate == tcp::LISTEN && ev.newstate == tcp::SYN_RECV {
        // A child socket that some kernels (6.1, 6.12) create before they copy the peer's
        // address and port into it: the record waits for the child's next transition, a
        // moment later in the same softirq, which has them, and is judged then.
        stamp_comm(ev);
        if rescue {
            ev.owner_source |= owner_source::BY_BACKUP;
        }
        if passes(ev, ev.sport.into(), UNSET) {
            hold(ev);
        }
        return;
    }
    if !passes(ev, ev.sport.into(), ev.dport.into()) {
        return;
    }
    stamp_comm(ev);
    if rescue {
        ev.owner_source |= owner_source::BY_BACKUP;
    }
    emit(ev);
}

/// The task's command, unless the record already names the task it reports (a hand-over
/// that reports a change made on another CPU carries that task).
#[inline(always)]
fn stamp_comm(ev: &mut Event) {
    if ev.comm[0] == 0 {
        comm_into(&mut ev.comm);
    }
}

/// Holds a transition until its socket's next one shows the port it lacks. When the hold
/// map is full it is written at once, as it is (it passed the filter with the port
/// unknown): shown without the port, and perhaps against a port filter it would have
/// failed, rather than lost; the count says how many.
fn hold(ev: &Event) {
    if HOLD.insert(&ev.skaddr, ev, 0).is_err() {
        bump(counter::HOLD_FULL);
        emit(ev);
    }
}

/// Writes out the transition held for `ev`'s socket, if any, now that `ev` shows the ports
/// it lacked. A held connect is judged with its local port but written as it was made (with
/// port 0: the port was not bound yet); a held child gets its addresses and ports, which it
/// had in all but the kernel's copy.
fn release_held(ev: &Event) {
    let Some(held) = HOLD.get_ptr_mut(&ev.skaddr) else { return };
    // SAFETY: the map value stays valid until the removal below; nothing else on this CPU
    // writes this socket's entry meanwhile (its transitions come one at a time).
    unsafe {
        let child = (*held).oldstate == tcp::LISTEN;
        let pass = if child {
            // The kernel copies the peer's address and port into the child after its first
            // transition (and its own address, for a listener on a wildcard address).
            (*held).saddr = ev.saddr;
            (*held).daddr = ev.daddr;
            (*held).family = ev.family;
            (*held).sport = ev.sport;
            (*held).dport = ev.dport;
            passes(&*held, (*held).sport.into(), ev.dport.into())
        } else {
            passes(&*held, ev.sport.into(), (*held).dport.into())
        };
        if pass {
            emit(&*held);
            if !child {
                bump(counter::RELEASED);
            }
        }
    }
    let _ = HOLD.remove(&ev.skaddr);
}

fn set_owner(ev: &mut Event, o: &Owner, source: u8) {
    ev.owner_pid = o.pid;
    ev.owner_comm = o.comm;
    ev.owner_source = source;
    ev.owner_cgroup = o.cgroup;
}

/// Whether the current task is in the `--cgroup` filter's cgroup or one below it (1), or
/// not (0, also when that filter is not set). Called in an owner's own system call only.
#[inline(never)]
fn in_filter_cgroup() -> u8 {
    let id = global!(FILTER.cgroup_id);
    if id == 0 {
        return 0;
    }
    let level = global!(FILTER.cgroup_level);
    for i in 0..CGROUP_LEVELS_SEARCHED {
        // 0 past the task's own level: no deeper ancestor to compare.
        // SAFETY: the helper reads the current task's cgroup; it has no preconditions.
        let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id((level + i) as i32) };
        if ancestor == id {
            return 1;
        }
        if ancestor == 0 {
            break;
        }
    }
    0
}

/// At a transition into CLOSE: if the connection just moved to a timewait socket (its timer
/// was armed a moment ago on this CPU, for the same ports), remember that socket and mark
/// the transition as a hand-over.
#[inline(never)]
fn claim_timewait(ev: &mut Event, owner: &Owner) {
    if !matches!(ev.oldstate, tcp::FIN_WAIT1 | tcp::FIN_WAIT2 | tcp::CLOSING) {
        return;
    }
    let Some((tw, armed)) = take_pending_tw(ev) else { return };
    let mut entry = TimeWaitEntry { skaddr: ev.skaddr, owner: *owner, substate: armed, _pad: [0; 7] };
    if TIMEWAITS.insert(&tw, &entry, 0).is_err() {
        bump(counter::TIMEWAIT_FULL);
        return;
    }
    if global!(KFREE_SKB_RX_SK) == 0 && sock!(skb_head) != 0 {
        remember_tuple(ev, tw);
    }
    ev.kind = kind::HANDOVER;
    ev.aux = tw;
    ev.tw_substate = armed;
    // The connection lives on in the timewait socket's state, not in CLOSE.
    ev.newstate = armed;
    // The timewait socket was live before this entry existed: the peer's FIN may have
    // reached it on another CPU meanwhile (FIN_WAIT2 -> TIME_WAIT), whose timer program
    // found no entry to report it by and noted the re-arm instead. The hand-over then
    // reports the state it has now, as of that re-arm (its time and task); without a
    // note, as of now. (When the other CPU's program sees the entry first and reports the
    // change too, userspace shows it once.) The note is read where it is, not copied.
    let early = EARLY_TW.get_ptr(&tw);
    // SAFETY: the map keeps the value's memory valid while the program runs; a value being
    // replaced meanwhile is only a hint gone stale.
    let early_substate = early.map(|e| unsafe { (*e).substate });
    let now = match early_substate {
        Some(noted) if noted != armed => Some(noted),
        _ => kread::<u8>(tw, sock!(tw_substate)).ok(),
    };
    if let Some(now) = now {
        if now != armed && matches!(now, tcp::TIME_WAIT | tcp::FIN_WAIT2 | tcp::CLOSING) {
            entry.substate = now;
            let _ = TIMEWAITS.insert(&tw, &entry, 0);
            ev.tw_substate = now;
            ev.newstate = now;
            if let (Some(e), Some(noted)) = (early, early_substate) {
                if noted == now {
                    // SAFETY: a pointer the map gave for this CPU's (or this key's) value: valid while the program runs, and kept apart from nested runs on this CPU as the map's notes say.
                    unsafe {
                        ev.ts_ns = (*e).ts_ns;
                        ev.pid = ((*e).pid_tgid >> 32) as u32;
                        ev.tid = (*e).pid_tgid as u32;
                        ev.comm = (*e).comm;
                    }
                }
            }
        }
    }
    if early.is_some() {
        let _ = EARLY_TW.remove(&tw);
    }
}

/// Takes the timewait socket armed a moment ago on this CPU for the connection `ev` is a
/// transition of (same ports), if there is one: its address and its state when armed.
fn take_pending_tw(ev: &Event) -> Option<(u64, u8)> {
    let pending = PENDING_TW.get_ptr_mut(0)?;
    let mut found = PENDING_TW_SLOTS;
    let mut newest = 0u64;
    for i in 0..PENDING_TW_SLOTS {
        // SAFETY: this CPU's map value, valid while the program runs.
        let p = unsafe { &(*pending).slots[i] };
        if p.tw != 0
            && p.sport == ev.sport
            && p.dport == ev.dport
            && ev.ts_ns.wrapping_sub(p.ts_ns) <= PENDING_TW_NS
            && (found == PENDING_TW_SLOTS || p.ts_ns > newest)
        {
            found = i;
            newest = p.ts_ns;
        }
    }
    if found >= PENDING_TW_SLOTS {
        return None;
    }
    // SAFETY: as above; `found` is a valid slot index.
    let slot = unsafe { &mut (*pending).slots[found] };
    let taken = (slot.tw, slot.substate);
    slot.tw = 0;
    Some(taken)
}

/// The timewait socket a timer belongs to, if it is a timewait timer.
fn timewait_of(timer: u64) -> Option<u64> {
    let handler = global!(TW_HANDLER);
    if handler == 0 || timer == 0 {
        return None;
    }
    let function: u64 = kread(timer, sock!(timer_function)).ok()?;
    if function != handler {
        return None;
    }
    Some(timer - sock!(tw_timer) as u64)
}

/// The timewait socket whose timer was removed a moment ago on this CPU, if it is `tw`.
fn take_cancelled(tw: u64) -> Option<Removal> {
    let slot = CANCELLED.get_ptr_mut(0)?;
    // SAFETY: this CPU's map value, valid while the program runs.
    unsafe {
        if (*slot).tw != tw || bpf_ktime_get_ns().wrapping_sub((*slot).ts_ns) > REARM_WINDOW_NS {
            return None;
        }
        (*slot).tw = 0;
        Some(Removal { entry: (*slot).entry, delivered: (*slot).delivered != 0 })
    }
}

/// What [`take_cancelled`] hands on of a removal.
struct Removal {
    entry: TimeWaitEntry,
    /// Whether the removal's record reached the ring buffer.
    delivered: bool,
}

/// After a removal's follow-up: when userspace got the removal but not the follow-up, it
/// is told, so that it does not take the removal for a kill.
fn followed(tw: u64, removal: &Removal, delivered: bool) {
    if removal.delivered && !delivered {
        // SAFETY: bpf_ktime_get_ns reads the clock; it has no preconditions.
        let _ = FOLLOWED.insert(&tw, &unsafe { bpf_ktime_get_ns() }, 0);
    }
}

/// Reports a timewait socket's new state, if it changed.
fn substate_changed(tw: u64, entry: *mut TimeWaitEntry, substate: u8) {
    // SAFETY: a value of the timewait map, changed in place (no copy on the stack); valid
    // while the program runs.
    unsafe {
        if (*entry).substate == substate {
            return;
        }
        let before = (*entry).substate;
        (*entry).substate = substate;
        timewait_report(tw, &*entry, kind::TW_ARMED, before);
    }
}

/// Reports a timewait socket's event, counting one that cannot be read. Returns whether
/// its record reached the ring buffer.
fn timewait_report(tw: u64, entry: &TimeWaitEntry, kind: u8, before: u8) -> bool {
    match with_scratch(|ev| timewait_event(ev, tw, entry, kind, before)) {
        Some(Ok(delivered)) => delivered,
        _ => {
            bump(counter::UNREADABLE);
            false
        }
    }
}

/// `timer_start(struct timer_list *timer, unsigned long expires, unsigned int flags)`.
#[raw_tracepoint(tracepoint = "timer_start")]
pub fn timer_start(ctx: RawTracePointContext) -> i32 {
    let timer: u64 = ctx.arg(0);
    let Some(tw) = timewait_of(timer) else { return 0 };
    let substate: u8 = kread(tw, sock!(tw_substate)).unwrap_or(0);
    offer_armed(tw, substate);
    armed(tw, substate);
    0
}

/// Offers a timewait socket just armed to the transition that follows a first arming: the
/// full socket the timewait socket replaces goes to CLOSE right after, on this CPU. A
/// re-arm has no such transition; and when one does follow what looked like a re-arm, the
/// address held a killed timewait socket a moment ago and now holds a new one, which the
/// transition claims.
#[inline(never)]
fn offer_armed(tw: u64, substate: u8) {
    let Some(pending) = PENDING_TW.get_ptr_mut(0) else { return };
    let sport: u16 = kread(tw, sock!(num)).unwrap_or(0);
    let dport: u16 = u16::from_be(kread(tw, sock!(dport)).unwrap_or(0));
    // SAFETY: this CPU's map value, valid while the program runs; written field by field.
    unsafe {
        let i = (*pending).next as usize % PENDING_TW_SLOTS;
        (*pending).next = (*pending).next.wrapping_add(1);
        let slot = &mut (*pending).slots[i];
        slot.tw = tw;
        slot.ts_ns = bpf_ktime_get_ns();
        slot.sport = sport;
        slot.dport = dport;
        slot.substate = substate;
    }
}

/// What a timewait socket's timer being armed means: the re-arm of a timer just removed,
/// a change of state of a timewait socket portrace knows, or one it does not know yet.
#[inline(never)]
fn armed(tw: u64, substate: u8) {
    // A timewait socket never goes back from TIME_WAIT to FIN_WAIT2: an "arming" that does
    // is a new timewait socket in a killed one's memory, whose hand-over follows.
    let removal = take_cancelled(tw).filter(|r| !(r.entry.substate == tcp::TIME_WAIT && substate == tcp::FIN_WAIT2));
    if let Some(mut r) = removal {
        // Re-armed: the same timewait socket goes on. Say so even when its state is the
        // same, so the removal reported a moment ago is not taken for its end.
        let before = r.entry.substate;
        r.entry.substate = substate;
        let _ = TIMEWAITS.insert(&tw, &r.entry, 0);
        let delivered = timewait_report(tw, &r.entry, kind::TW_ARMED, before);
        followed(tw, &r, delivered);
    } else if let Some(entry) = TIMEWAITS.get_ptr_mut(&tw) {
        substate_changed(tw, entry, substate);
    } else {
        note_early(tw, substate);
    }
}

/// Notes a timewait socket armed before any hand-over claimed it (see `EARLY_TW`).
#[inline(never)]
fn note_early(tw: u64, substate: u8) {
    let mut early = EarlyTw {
        // SAFETY: bpf_ktime_get_ns reads the clock; it has no preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        pid_tgid: bpf_get_current_pid_tgid(),
        comm: [0; 16],
        substate,
        _pad: [0; 7],
    };
    comm_into(&mut early.comm);
    let _ = EARLY_TW.insert(&tw, &early, 0);
}

/// `timer_expire_entry(struct timer_list *timer, unsigned long baseclk)`.
#[raw_tracepoint(tracepoint = "timer_expire_entry")]
pub fn timer_expire_entry(ctx: RawTracePointContext) -> i32 {
    let timer: u64 = ctx.arg(0);
    let Some(tw) = timewait_of(timer) else { return 0 };
    expired(tw);
    0
}

/// A timewait socket's life is over.
#[inline(never)]
fn expired(tw: u64) {
    let removal = take_cancelled(tw);
    let mut entry = match &removal {
        Some(r) => r.entry,
        // SAFETY: the map value is read at once, while this program runs; the kernel keeps it valid until the program returns, even if another CPU deletes the entry.
        None => match unsafe { TIMEWAITS.get(&tw) } {
            Some(entry) => *entry,
            None => return,
        },
    };
    let _ = TIMEWAITS.remove(&tw);
    let before = entry.substate;
    entry.substate = kread(tw, sock!(tw_substate)).unwrap_or(entry.substate);
    let delivered = timewait_report(tw, &entry, kind::TW_EXPIRE, before);
    if let Some(r) = removal {
        followed(tw, &r, delivered);
    }
}

/// `timer_cancel(struct timer_list *timer)`.
#[raw_tracepoint(tracepoint = "timer_cancel")]
pub fn timer_cancel(ctx: RawTracePointContext) -> i32 {
    let timer: u64 = ctx.arg(0);
    let Some(tw) = timewait_of(timer) else { return 0 };
    // SAFETY: the map value is read at once, while this program runs; the kernel keeps it valid until the program returns, even if another CPU deletes the entry.
    let Some(entry) = (unsafe { TIMEWAITS.get(&tw) }).copied() else { return 0 };
    let _ = TIMEWAITS.remove(&tw);
    let delivered = timewait_report(tw, &entry, kind::TW_CANCEL, entry.substate);
    if let Some(slot) = CANCELLED.get_ptr_mut(0) {
        // SAFETY: this CPU's map value; written field by field, with no copy on the stack.
        unsafe {
            (*slot).tw = tw;
            (*slot).ts_ns = bpf_ktime_get_ns();
            (*slot).entry = entry;
            (*slot).delivered = u64::from(delivered);
        }
    }
    0
}

/// `kfree_skb(struct sk_buff *skb, void *location, enum skb_drop_reason reason,
/// struct sock *rx_sk)`: a packet a timewait socket received and consumed. An orphan
/// waiting in FIN_WAIT2 moves to TIME_WAIT when its peer's FIN arrives, without any state
/// or timer event (the timer is re-armed within the same wheel bucket), so the packet is
/// the only sign.
#[raw_tracepoint(tracepoint = "kfree_skb")]
pub fn kfree_skb(ctx: RawTracePointContext) -> i32 {
    let tw: u64 = if global!(KFREE_SKB_RX_SK) != 0 {
        ctx.arg(3)
    } else if sock!(skb_head) != 0 {
        timewait_of_packet(ctx.arg(0)).unwrap_or(0)
    } else {
        0
    };
    if tw == 0 {
        return 0;
    }
    let Some(entry) = TIMEWAITS.get_ptr_mut(&tw) else { return 0 };
    // SAFETY: a pointer the map gave for this CPU's (or this key's) value: valid while the program runs, and kept apart from nested runs on this CPU as the map's notes say.
    let substate: u8 = kread(tw, sock!(tw_substate)).unwrap_or(unsafe { (*entry).substate });
    substate_changed(tw, entry, substate);
    0
}

/// Notes a timewait socket's addresses and ports (those of the transition handing the
/// connection over to it), for [`timewait_of_packet`].
#[inline(never)]
fn remember_tuple(ev: &Event, tw: u64) {
    let tuple = TwTuple {
        local: ev.saddr,
        remote: ev.daddr,
        local_port: ev.sport,
        remote_port: ev.dport,
        family: ev.family,
        _pad: 0,
    };
    let _ = TW_TUPLES.insert(&tuple, &tw, 0);
}

/// The timewait socket a freed TCP packet was addressed to, if portrace knows one there:
/// the packet's destination is the socket's local end.
#[inline(never)]
fn timewait_of_packet(skb: u64) -> Option<u64> {
    let head: u64 = kread(skb, sock!(skb_head)).ok()?;
    let network: u16 = kread(skb, sock!(skb_network_header)).ok()?;
    let transport: u16 = kread(skb, sock!(skb_transport_header)).ok()?;
    // (The kernel marks an unset header offset with all ones.)
    if head == 0 || network == u16::MAX || transport == u16::MAX {
        return None;
    }
    let ip = head + u64::from(network);
    let tcp = head + u64::from(transport);
    let mut tuple = TwTuple::default();
    let version: u8 = kread::<u8>(ip, 0).ok()? >> 4;
    match version {
        4 => {
            if kread::<u8>(ip, 9).ok()? != IPPROTO_TCP as u8 {
                return None;
            }
            read_into(first4(&mut tuple.remote), ip + 12).ok()?;
            read_into(first4(&mut tuple.local), ip + 16).ok()?;
            tuple.family = AF_INET;
        }
        6 => {
            if kread::<u8>(ip, 6).ok()? != IPPROTO_TCP as u8 {
                return None;
            }
            read_into(&mut tuple.remote, ip + 8).ok()?;
            read_into(&mut tuple.local, ip + 24).ok()?;
            tuple.family = AF_INET6;
        }
        _ => return None,
    }
    tuple.remote_port = u16::from_be(kread(tcp, 0).ok()?);
    tuple.local_port = u16::from_be(kread(tcp, 2).ok()?);
    // SAFETY: the map value is read at once, while this program runs; the kernel keeps it valid until the program returns, even if another CPU deletes the entry.
    let tw = unsafe { TW_TUPLES.get(&tuple) }.copied()?;
    // Still the connection the tuple was noted for: its ports are the timewait socket's.
    let local_port: u16 = kread(tw, sock!(num)).ok()?;
    let remote_port: u16 = u16::from_be(kread(tw, sock!(dport)).ok()?);
    (local_port == tuple.local_port && remote_port == tuple.remote_port).then_some(tw)
}

/// Reports an event of a timewait socket portrace saw a connection move to; `before` is
/// the state portrace last reported for it. Returns whether its record reached the ring
/// buffer.
#[inline(never)]
fn timewait_event(ev: &mut Event, tw: u64, known: &TimeWaitEntry, kind: u8, before: u8) -> Result<bool, i32> {
    if global!(TRACE_COMMAND) != 0 && known.owner.traced == 0 {
        return Ok(false);
    }
    let family: u16 = kread(tw, sock!(family))?;
    // SAFETY: bpf_ktime_get_ns reads the clock; it has no preconditions.
    reset(ev, unsafe { bpf_ktime_get_ns() }, known.skaddr, family);
    ev.aux = tw;
    ev.kind = kind;
    ev.tw_substate = known.substate;
    ev.sport = kread(tw, sock!(num))?;
    ev.dport = u16::from_be(kread(tw, sock!(dport))?);
    read_addresses(ev, tw, sock!(rcv_saddr))?;
    ev.netns = netns_of(tw);
    set_owner(ev, &known.owner, known.owner.source);
    if known.owner.in_cgroup != 0 {
        ev.owner_source |= owner_source::IN_CGROUP;
    }
    // The states the filter sees: the timewait socket's, and CLOSE when it ends.
    ev.oldstate = before;
    ev.newstate = if kind == kind::TW_ARMED { known.substate } else { tcp::CLOSE };
    let pid_tgid = bpf_get_current_pid_tgid();
    ev.pid = (pid_tgid >> 32) as u32;
    ev.tid = pid_tgid as u32;
    if !passes(ev, ev.sport.into(), ev.dport.into()) {
        return Ok(false);
    }
    comm_into(&mut ev.comm);
    Ok(emit(ev))
}

/// `task:task_newtask`, in the creating task: a process the traced command starts (fork,
/// vfork, clone without CLONE_THREAD) is traced too. A new task of any other process whose
/// id is still listed held an exited traced process's id, now reused: it is removed, so
/// the stranger is not taken for the command.
#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let l: TaskLayout = global!(TASK);
    let (Ok(pid), Ok(flags)) =
        // SAFETY: read_at copies from the tracepoint's record at an offset taken from this kernel's tracefs format; the copy is a checked probe read that fails rather than faults.
        (unsafe { ctx.read_at::<i32>(l.newtask_pid as usize) }, unsafe { ctx.read_at::<u64>(l.newtask_flags as usize) })
    else {
        bump(counter::UNFOLLOWED);
        return 0;
    };
    let child = pid as u32;
    let creator = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: the map value is read at once, while this program runs; the kernel keeps it valid until the program returns, even if another CPU deletes the entry.
    if flags & CLONE_THREAD == 0 && unsafe { TRACED.get(&creator) }.is_some() {
        if TRACED.insert(&child, &1, 0).is_err() {
            bump(counter::UNFOLLOWED);
        }
    } else {
        let _ = TRACED.remove(&child);
    }
    0
}

/// `sched:sched_process_exit`, in the exiting task: once the last thread of a traced
/// process exits, its id leaves the set (its sockets keep their mark).
#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let at = global!(TASK.exit_group_dead);
    if at == 0 {
        return 0;
    }
    // SAFETY: read_at copies from the tracepoint's record at an offset taken from this kernel's tracefs format; the copy is a checked probe read that fails rather than faults.
    if let Ok(dead) = unsafe { ctx.read_at::<u8>(at as usize) } {
        if dead != 0 {
            let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
            let _ = TRACED.remove(&tgid);
        }
    }
    0
}

/// An IPv6 socket whose addresses are v4-mapped (or unspecified) is IPv4 on the wire.
fn unmap_v4(ev: &mut Event) {
    let (s, d) = (words(&ev.saddr), words(&ev.daddr));
    let s_v4 = is_v4_mapped(s) || s == [0; 4];
    let d_v4 = is_v4_mapped(d) || d == [0; 4];
    if s_v4 && d_v4 && (is_v4_mapped(s) || is_v4_mapped(d)) {
        ev.family = AF_INET;
        clear16(&mut ev.saddr);
        clear16(&mut ev.daddr);
        *first4(&mut ev.saddr) = s[3].to_ne_bytes();
        *first4(&mut ev.daddr) = d[3].to_ne_bytes();
    }
}

/// Zeroes an address or command field of a record: two word writes, not a `memset` call.
#[inline(always)]
fn clear16(a: &mut [u8; 16]) {
    let words = a.as_mut_ptr() as *mut u64;
    // SAFETY: every 16-byte field of Event starts at a multiple of 8 (asserted below) in an
    // 8-byte aligned Event.
    unsafe {
        core::ptr::write_volatile(words, 0);
        core::ptr::write_volatile(words.add(1), 0);
    }
}

const _: () = {
    assert!(core::mem::offset_of!(Event, saddr) % 8 == 0);
    assert!(core::mem::offset_of!(Event, daddr) % 8 == 0);
    assert!(core::mem::align_of::<Event>() == 8);
};

fn words(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}

const V4_MAPPED_MARK: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

fn is_v4_mapped(w: [u32; 4]) -> bool {
    w[0] == 0 && w[1] == 0 && w[2] == V4_MAPPED_MARK
}

/// Whether either of the event's addresses lies in one of the filter's networks (the
/// filter lists some).
#[inline(never)]
fn in_filter_nets(ev: &Event, n_nets: usize) -> bool {
    for i in 0..MAX_NETS {
        if i >= n_nets {
            break;
        }
        if in_filter_net(ev.family, &ev.saddr, i) || in_filter_net(ev.family, &ev.daddr, i) {
            return true;
        }
    }
    false
}

/// Whether an address lies in the filter's network `i`, compared byte by byte as the
/// filter stores it: an IPv4 address v4-mapped (`::ffff:a.b.c.d`).
#[inline(always)]
fn in_filter_net(family: u16, a: &[u8; 16], i: usize) -> bool {
    for j in 0..16 {
        let byte = if family != AF_INET {
            a[j]
        } else if j < 10 {
            0
        } else if j < 12 {
            0xff
        } else {
            a[j - 12]
        };
        if byte & global!(FILTER.nets[i].mask[j]) != global!(FILTER.nets[i].addr[j]) {
            return false;
        }
    }
    true
}

/// A port not set yet, for [`passes`]: it meets every condition on it. (Plain integers,
/// not `Option`s: a call passing `None` would leave the register of the `Option`'s value
/// unset, and the verifier refuses a function that copies an unset register.)
const UNSET: u32 = u32::MAX;

/// Whether the event passes the user's filter, taking `sport` and `dport` (ports, or
/// [`UNSET`]) for its ports.
#[inline(never)]
fn passes(ev: &Event, sport: u32, dport: u32) -> bool {
    let sport = u16::try_from(sport).ok();
    let dport = u16::try_from(dport).ok();
    let family = global!(FILTER.family);
    if family != 0 && family != ev.family {
        return false;
    }
    let states = global!(FILTER.states);
    if states != 0 {
        let bit = |s: u8| s <= tcp::MAX && (states >> s) & 1 != 0;
        if !bit(ev.oldstate) && !bit(ev.newstate) {
            return false;
        }
    }
    let n_pids = global!(FILTER.n_pids) as usize;
    if n_pids != 0 {
        let mut found = false;
        for i in 0..MAX_PIDS {
            if i < n_pids && ev.owner_source != owner_source::UNKNOWN && global!(FILTER.pids[i]) == ev.owner_pid {
                found = true;
            }
        }
        if !found {
            return false;
        }
    }
    if global!(FILTER.match_comm) != 0 {
        if ev.owner_source == owner_source::UNKNOWN {
            return false;
        }
        for i in 0..16 {
            if global!(FILTER.comm[i]) != ev.owner_comm[i] {
                return false;
            }
        }
    }
    if let Some(sport) = sport {
        if !port_listed(global!(FILTER.n_lports), |i| global!(FILTER.lports[i]), sport) {
            return false;
        }
    }
    if let Some(dport) = dport {
        if !port_listed(global!(FILTER.n_rports), |i| global!(FILTER.rports[i]), dport) {
            return false;
        }
    }
    let n_ports = global!(FILTER.n_ports);
    if let (true, Some(sport), Some(dport)) = (n_ports != 0, sport, dport) {
        // (Either port may match: with one unknown, the condition may still be met.)
        if !port_listed(n_ports, |i| global!(FILTER.ports[i]), sport)
            && !port_listed(n_ports, |i| global!(FILTER.ports[i]), dport)
        {
            return false;
        }
    }
    if global!(FILTER.cgroup_id) != 0 && ev.owner_source & owner_source::IN_CGROUP == 0 {
        return false;
    }
    let n_netns = global!(FILTER.n_netns) as usize;
    if n_netns != 0 {
        let mut found = false;
        for i in 0..MAX_NETNS {
            if i < n_netns && global!(FILTER.netns[i]) == ev.netns {
                found = true;
            }
        }
        if !found {
            return false;
        }
    }
    let n_nets = global!(FILTER.n_nets) as usize;
    n_nets == 0 || in_filter_nets(ev, n_nets)
}

/// True when the list is empty or holds `port`.
fn port_listed(n: u16, at: impl Fn(usize) -> u16, port: u16) -> bool {
    if n == 0 {
        return true;
    }
    let mut found = false;
    for i in 0..MAX_PORTS {
        if i < n as usize && at(i) == port {
            found = true;
        }
    }
    found
}



/// A program started: its pid goes to userspace at once, waking it, so that the process's
/// details (executable, command line, parent, user) are read from /proc while it runs,
/// even when it makes a connection and exits a millisecond later. Not a transition: a
/// full ring loses only that head start, and is not counted.
#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    with_scratch(|ev| {
        // SAFETY: bpf_ktime_get_ns reads the clock; it has no preconditions.
        reset(ev, unsafe { bpf_ktime_get_ns() }, 0, 0);
        ev.kind = kind::EXEC;
        let pid_tgid = bpf_get_current_pid_tgid();
        ev.pid = (pid_tgid >> 32) as u32;
        ev.tid = pid_tgid as u32;
        comm_into(&mut ev.comm);
        let _ = EVENTS.output::<Event>(&*ev, BPF_RB_FORCE_WAKEUP.into());
    });
    0
}

/// Copies the record into the ring buffer; returns whether there was room.
#[inline(never)]
fn emit(ev: &Event) -> bool {
    // What a full ring costs: a transition users would have seen, or a timewait socket's
    // bookkeeping (a hand-over that keeps the connection in FIN_WAIT2, a timer removal, a
    // re-arm in the same state).
    let transition = match ev.kind {
        kind::TRANSITION | kind::TW_EXPIRE => true,
        kind::HANDOVER | kind::TW_ARMED => ev.oldstate != ev.newstate,
        _ => false,
    };
    let full = if transition { counter::RING_FULL } else { counter::TW_RING_FULL };
    // Wake the reader once the ring holds WAKEUP_BYTES (this record included).
    let waiting = EVENTS.query(BPF_RB_AVAIL_DATA.into()) + EVENT_SIZE as u64;
    let flags = if waiting >= global!(WAKEUP_BYTES) { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP };
    if EVENTS.output::<Event>(ev, flags.into()).is_ok() {
        bump(counter::EMITTED);
        true
    } else {
        bump(full);
        false
    }
}

/// Adds one to a counter of this CPU, atomically: a program that interrupts another on
/// the same CPU may bump the same counter between its load and its store.
fn bump(index: u32) {
    if let Some(count) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: a u64 of this CPU's map value, 8-byte aligned, valid while the program
        // runs; the kernel's atomic add needs no more.
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(count, 1);
        }
    }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
