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

use core::ffi::c_void;
use core::ptr::{addr_of, read_volatile};

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel, generated::bpf_loop,
    },
    macros::{map, raw_tracepoint, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{RawTracePointContext, TracePointContext},
};
use portrace_ebpf::{
    counter, kind, owner_source, tcp, Event, Filter, Layout, ListenKey, Owner, SockLayout,
    SockOwner, TaskLayout, TimeWaitEntry, AF_INET, AF_INET6, CLONE_THREAD, HOLD_ENTRIES, IPPROTO_TCP,
    LISTENER_ENTRIES, MAX_NETS, MAX_PIDS, MAX_PORTS, OWNER_ENTRIES, FOLLOWED_ENTRIES, REARM_WINDOW_NS, TIMEWAIT_ENTRIES, TRACED_ENTRIES,
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

/// `CLOSE -> SYN_SENT` transitions held until their socket's local port is known.
#[map]
static HOLD: LruHashMap<u64, Event> = LruHashMap::with_max_entries(HOLD_ENTRIES, 0);

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
    let top = unsafe { (*h).top };
    let mut search = NoteSearch { id, now: unsafe { bpf_ktime_get_ns() }, top, depth: 0 };
    if HELPER_LOOP {
        // A loop the kernel runs (`bpf_loop`): the verifier checks its body once, whatever
        // the stack's size.
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
/// socket's transition (they happen one after the other in the same kernel function, but
/// interrupts can come between).
const PENDING_TW_NS: u64 = 10_000_000;

/// Reads a global that userspace rewrote before load; volatile so the compiler does not
/// fold in the placeholder value.
macro_rules! global {
    ($place:expr) => {
        unsafe { read_volatile(addr_of!($place)) }
    };
}

/// The main program, on the raw tracepoint: `(struct sock *sk, int oldstate, int newstate)`.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: RawTracePointContext) -> i32 {
    let busy = BUSY.get_ptr_mut(0);
    if let Some(busy) = busy {
        unsafe { *busy = 1 };
    }
    bump(counter::ENTERED);
    let sk: *const c_void = ctx.arg(0);
    let oldstate: u64 = ctx.arg(1);
    let newstate: u64 = ctx.arg(2);
    if !matches!(BACKUP_BUSY.get(0), Some(&1)) {
        note_handled(hit_id(sk as u64, oldstate as u8, newstate as u8));
    }
    if !is_calibration(oldstate as u8, newstate as u8) && from_socket(sk, oldstate as u8, newstate as u8).is_err() {
        bump(counter::UNREADABLE);
    }
    if let Some(busy) = busy {
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
        if from_tracepoint(ctx, false).is_err() {
            bump(counter::UNREADABLE);
        }
        return 0;
    }
    let busy = BACKUP_BUSY.get_ptr_mut(0);
    if let Some(busy) = busy {
        unsafe { *busy = 1 };
    }
    if main_skipped::<HELPER_LOOP>(ctx) {
        bump(counter::RESCUED);
        if from_tracepoint(ctx, true).is_err() {
            bump(counter::UNREADABLE);
        }
    }
    if let Some(busy) = busy {
        unsafe { *busy = 0 };
    }
    0
}

/// Whether the kernel skipped the main program for the backup's hit. (The calibration hit
/// teaches the order of the two programs and is never recorded.)
fn main_skipped<const HELPER_LOOP: bool>(ctx: &TracePointContext) -> bool {
    let l: Layout = global!(LAYOUT);
    let (id, calibration) = unsafe {
        match (ctx.read_at::<u64>(l.skaddr as usize), ctx.read_at::<i32>(l.oldstate as usize), ctx.read_at::<i32>(l.newstate as usize)) {
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
                unsafe { *o = if noted { ORDER_MAIN_FIRST } else { ORDER_BACKUP_FIRST } };
            }
        }
        return false;
    }
    order == ORDER_MAIN_FIRST && !noted
}

/// A transition from the classic tracepoint's record; `rescue`: the backup program records
/// it because the kernel skipped the main program.
fn from_tracepoint(ctx: &TracePointContext, rescue: bool) -> Result<(), i32> {
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let l: Layout = global!(LAYOUT);
    let protocol = if l.protocol_size == 1 {
        u16::from(unsafe { ctx.read_at::<u8>(l.protocol as usize)? })
    } else {
        unsafe { ctx.read_at::<u16>(l.protocol as usize)? }
    };
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let family: u16 = unsafe { ctx.read_at(l.family as usize)? };
    let oldstate: i32 = unsafe { ctx.read_at(l.oldstate as usize)? };
    let newstate: i32 = unsafe { ctx.read_at(l.newstate as usize)? };
    let mut ev = new_event(ts_ns, unsafe { ctx.read_at(l.skaddr as usize)? }, family);
    ev.sport = unsafe { ctx.read_at(l.sport as usize)? };
    ev.dport = unsafe { ctx.read_at(l.dport as usize)? };
    ev.oldstate = oldstate as u8;
    ev.newstate = newstate as u8;
    match family {
        AF_INET => {
            let s: [u8; 4] = unsafe { ctx.read_at(l.saddr as usize)? };
            let d: [u8; 4] = unsafe { ctx.read_at(l.daddr as usize)? };
            ev.saddr[..4].copy_from_slice(&s);
            ev.daddr[..4].copy_from_slice(&d);
        }
        AF_INET6 => {
            ev.saddr = unsafe { ctx.read_at(l.saddr_v6 as usize)? };
            ev.daddr = unsafe { ctx.read_at(l.daddr_v6 as usize)? };
            unmap_v4(&mut ev);
        }
        _ => return Err(0),
    }
    process(ev, rescue);
    Ok(())
}

/// Reads a kernel value at `offset` bytes from `base`.
fn kread<T>(base: u64, offset: u16) -> Result<T, i32> {
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T).map_err(|e| e as i32) }
}

fn from_socket(sk: *const c_void, oldstate: u8, newstate: u8) -> Result<(), i32> {
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let l: SockLayout = global!(SOCK);
    let sk = sk as u64;
    let protocol =
        if l.protocol_size == 1 { u16::from(kread::<u8>(sk, l.protocol)?) } else { kread::<u16>(sk, l.protocol)? };
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let family: u16 = kread(sk, l.family)?;
    let mut ev = new_event(ts_ns, sk, family);
    ev.sport = u16::from_be(kread(sk, l.sport)?);
    ev.dport = u16::from_be(kread(sk, l.dport)?);
    ev.oldstate = oldstate;
    ev.newstate = newstate;
    read_addresses(&mut ev, sk, &l, l.saddr)?;
    process(ev, false);
    Ok(())
}

fn new_event(ts_ns: u64, skaddr: u64, family: u16) -> Event {
    Event {
        ts_ns,
        skaddr,
        aux: 0,
        saddr: [0; 16],
        daddr: [0; 16],
        pid: 0,
        tid: 0,
        comm: [0; 16],
        owner_pid: 0,
        error: 0,
        owner_comm: [0; 16],
        sport: 0,
        dport: 0,
        family,
        oldstate: 0,
        newstate: 0,
        kind: kind::TRANSITION,
        owner_source: owner_source::UNKNOWN,
        tw_substate: 0,
        retransmits: 0,
        netns: 0,
    }
}

/// Reads the addresses from a socket (`saddr_at`: where its local IPv4 address is).
fn read_addresses(ev: &mut Event, sk: u64, l: &SockLayout, saddr_at: u16) -> Result<(), i32> {
    match ev.family {
        AF_INET => {
            let s: [u8; 4] = kread(sk, saddr_at)?;
            let d: [u8; 4] = kread(sk, l.daddr)?;
            ev.saddr[..4].copy_from_slice(&s);
            ev.daddr[..4].copy_from_slice(&d);
        }
        AF_INET6 => {
            ev.saddr = kread(sk, l.saddr_v6)?;
            ev.daddr = kread(sk, l.daddr_v6)?;
            unmap_v4(ev);
        }
        _ => return Err(0),
    }
    Ok(())
}

/// The socket's network namespace inode number (0 when it cannot be read).
fn netns_of(sk: u64, l: &SockLayout) -> u32 {
    let net: u64 = kread(sk, l.net).unwrap_or(0);
    if net == 0 {
        return 0;
    }
    kread(net, l.net_inum).unwrap_or(0)
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
/// the filter, holding unbound `SYN_SENT`s, and output.
fn process(mut ev: Event, rescue: bool) {
    let pid_tgid = bpf_get_current_pid_tgid();
    ev.pid = (pid_tgid >> 32) as u32;
    ev.tid = pid_tgid as u32;
    let sk = ev.skaddr;
    let l: SockLayout = global!(SOCK);
    let have_btf = l.valid != 0;
    if have_btf {
        ev.netns = netns_of(sk, &l);
        ev.aux = kread(sk, l.cookie).unwrap_or(0);
    }

    // The owner, and whether the socket is the traced command's.
    let listen_key = ListenKey { netns: ev.netns, port: ev.sport, _pad: 0 };
    let mut learned = false;
    let mut traced = 0u8;
    if made_by_owner(ev.oldstate, ev.newstate) && ev.pid != 0 {
        ev.owner_pid = ev.pid;
        ev.owner_comm = bpf_get_current_comm().unwrap_or_default();
        ev.owner_source = owner_source::SYSCALL;
        learned = true;
        if global!(TRACE_COMMAND) != 0 {
            // A socket of the command stays the command's: a process closing it as it
            // exits is no longer in the traced set by then.
            let before = unsafe { OWNERS.get(&sk) }.map_or(0, |o| o.traced);
            traced = before | u8::from(unsafe { TRACED.get(&ev.pid) }.is_some());
        }
    } else if ev.oldstate == tcp::LISTEN && ev.newstate == tcp::SYN_RECV {
        if let Some(l) = unsafe { LISTENERS.get(&listen_key) } {
            set_owner(&mut ev, &l.owner, owner_source::LISTENER);
            traced = l.owner.traced;
            learned = true;
        }
    } else if let Some(o) = unsafe { OWNERS.get(&sk) } {
        set_owner(&mut ev, o, o.source);
        traced = o.traced;
        if o.source != owner_source::SYSCALL && ev.newstate == tcp::CLOSE && ev.pid == o.pid && ev.pid != 0 {
            // The owner's own process closed the socket (an abort: close with SO_LINGER 0):
            // it acted on the socket itself. (Other transitions its process happens to run,
            // such as a FIN processed from its socket backlog, keep their source.)
            ev.owner_source = owner_source::SYSCALL;
            learned = true;
        }
    } else if ev.aux != 0 {
        if let Some(o) = unsafe { INVENTORY.get(&ev.aux) } {
            set_owner(&mut ev, o, owner_source::INVENTORY);
            learned = true;
        }
    }
    let owner = Owner { pid: ev.owner_pid, source: ev.owner_source, traced, _pad: [0; 2], comm: ev.owner_comm };

    if ev.newstate == tcp::CLOSE {
        let _ = OWNERS.remove(&sk);
        if ev.oldstate == tcp::LISTEN {
            if let Some(l) = unsafe { LISTENERS.get(&listen_key) } {
                if l.skaddr == sk || l.skaddr == 0 {
                    let _ = LISTENERS.remove(&listen_key);
                }
            }
        }
        if have_btf {
            ev.error = kread(sk, l.err).unwrap_or(0);
            ev.retransmits = kread(sk, l.retransmits).unwrap_or(0);
            claim_timewait(&mut ev, &owner);
        }
    } else if learned && ev.owner_source != owner_source::UNKNOWN {
        if OWNERS.insert(&sk, &owner, 0).is_err() {
            bump(counter::OWNERS_FULL);
        }
        if ev.newstate == tcp::LISTEN {
            let _ = LISTENERS.insert(&listen_key, &SockOwner { skaddr: sk, owner }, 0);
        }
    }

    // Filtering and output.
    if global!(TRACE_COMMAND) != 0 && traced == 0 {
        return;
    }
    if global!(FILTER.hold_unbound) != 0 {
        if ev.sport == 0 && ev.newstate == tcp::SYN_SENT {
            // The local port is bound right after this transition: keep it until the
            // socket's next transition tells whether the port matches.
            if passes(&ev, true) {
                ev.comm = bpf_get_current_comm().unwrap_or_default();
                let _ = HOLD.insert(&sk, &ev, 0);
            }
            return;
        }
        if let Some(held) = unsafe { HOLD.get(&sk) } {
            // Judged again with the port the socket has now; written as it was made.
            let mut bound = *held;
            bound.sport = ev.sport;
            if passes(&bound, false) {
                emit(held);
                bump(counter::RELEASED);
            }
            let _ = HOLD.remove(&sk);
        }
    }
    if !passes(&ev, false) {
        return;
    }
    if ev.comm[0] == 0 {
        // (A hand-over that reports a change made on another CPU carries that task.)
        ev.comm = bpf_get_current_comm().unwrap_or_default();
    }
    if rescue {
        ev.owner_source |= owner_source::BY_BACKUP;
    }
    emit(&ev);
}

fn set_owner(ev: &mut Event, o: &Owner, source: u8) {
    ev.owner_pid = o.pid;
    ev.owner_comm = o.comm;
    ev.owner_source = source;
}

/// At a transition into CLOSE: if the connection just moved to a timewait socket (its timer
/// was armed a moment ago on this CPU, for the same ports), remember that socket and mark
/// the transition as a hand-over.
fn claim_timewait(ev: &mut Event, owner: &Owner) {
    if !matches!(ev.oldstate, tcp::FIN_WAIT1 | tcp::FIN_WAIT2 | tcp::CLOSING) {
        return;
    }
    let Some(p) = take_pending_tw(ev) else { return };
    let entry = TimeWaitEntry { skaddr: ev.skaddr, owner: *owner, substate: p.substate, _pad: [0; 7] };
    if TIMEWAITS.insert(&p.tw, &entry, 0).is_err() {
        bump(counter::TIMEWAIT_FULL);
        return;
    }
    ev.kind = kind::HANDOVER;
    ev.aux = p.tw;
    ev.tw_substate = p.substate;
    // The connection lives on in the timewait socket's state, not in CLOSE.
    ev.newstate = p.substate;
    // The timewait socket was live before this entry existed: the peer's FIN may have
    // reached it on another CPU meanwhile (FIN_WAIT2 -> TIME_WAIT), whose timer program
    // found no entry to report it by and noted the re-arm instead. The hand-over then
    // reports the state it has now, as of that re-arm (its time and task); without a
    // note, as of now. (When the other CPU's program sees the entry first and reports the
    // change too, userspace shows it once.)
    let early = unsafe { EARLY_TW.get(&p.tw) }.copied();
    let _ = EARLY_TW.remove(&p.tw);
    let l: SockLayout = global!(SOCK);
    let now = match early {
        Some(e) if e.substate != p.substate => Some(e.substate),
        _ => kread::<u8>(p.tw, l.tw_substate).ok(),
    };
    if let Some(now) = now {
        if now != p.substate && matches!(now, tcp::TIME_WAIT | tcp::FIN_WAIT2 | tcp::CLOSING) {
            let moved = TimeWaitEntry { substate: now, ..entry };
            let _ = TIMEWAITS.insert(&p.tw, &moved, 0);
            ev.tw_substate = now;
            ev.newstate = now;
            if let Some(e) = early.filter(|e| e.substate == now) {
                ev.ts_ns = e.ts_ns;
                ev.pid = (e.pid_tgid >> 32) as u32;
                ev.tid = e.pid_tgid as u32;
                ev.comm = e.comm;
            }
        }
    }
}

/// Takes the timewait socket armed a moment ago on this CPU for the connection `ev` is a
/// transition of (same ports), if there is one.
fn take_pending_tw(ev: &Event) -> Option<PendingTw> {
    let pending = PENDING_TW.get_ptr_mut(0)?;
    let mut found = PENDING_TW_SLOTS;
    for i in 0..PENDING_TW_SLOTS {
        let p = unsafe { &(*pending).slots[i] };
        if p.tw != 0 && p.sport == ev.sport && p.dport == ev.dport && ev.ts_ns.wrapping_sub(p.ts_ns) <= PENDING_TW_NS {
            found = i;
            break;
        }
    }
    if found >= PENDING_TW_SLOTS {
        return None;
    }
    let slot = unsafe { &mut (*pending).slots[found] };
    let p = *slot;
    slot.tw = 0;
    Some(p)
}

/// The timewait socket a timer belongs to, if it is a timewait timer.
fn timewait_of(timer: u64) -> Option<u64> {
    let handler = global!(TW_HANDLER);
    if handler == 0 || timer == 0 {
        return None;
    }
    let l: SockLayout = global!(SOCK);
    let function: u64 = kread(timer, l.timer_function).ok()?;
    if function != handler {
        return None;
    }
    Some(timer - l.tw_timer as u64)
}

/// The timewait socket whose timer was removed a moment ago on this CPU, if it is `tw`.
fn take_cancelled(tw: u64) -> Option<Cancelled> {
    let slot = CANCELLED.get_ptr_mut(0)?;
    let c = unsafe { *slot };
    if c.tw != tw || unsafe { bpf_ktime_get_ns() }.wrapping_sub(c.ts_ns) > REARM_WINDOW_NS {
        return None;
    }
    unsafe { (*slot).tw = 0 };
    Some(c)
}

/// After a removal's follow-up: when userspace got the removal but not the follow-up, it
/// is told, so that it does not take the removal for a kill.
fn followed(c: &Cancelled, delivered: bool) {
    if c.delivered != 0 && !delivered {
        let _ = FOLLOWED.insert(&c.tw, &unsafe { bpf_ktime_get_ns() }, 0);
    }
}

/// Reports a timewait socket's new state, if it changed.
fn substate_changed(tw: u64, mut entry: TimeWaitEntry, substate: u8) {
    if entry.substate == substate {
        return;
    }
    let before = entry.substate;
    entry.substate = substate;
    let _ = TIMEWAITS.insert(&tw, &entry, 0);
    timewait_report(tw, &entry, kind::TW_ARMED, before);
}

/// Reports a timewait socket's event, counting one that cannot be read. Returns whether
/// its record reached the ring buffer.
fn timewait_report(tw: u64, entry: &TimeWaitEntry, kind: u8, before: u8) -> bool {
    timewait_event(tw, entry, kind, before).unwrap_or_else(|_| {
        bump(counter::UNREADABLE);
        false
    })
}

/// `timer_start(struct timer_list *timer, unsigned long expires, unsigned int flags)`.
#[raw_tracepoint(tracepoint = "timer_start")]
pub fn timer_start(ctx: RawTracePointContext) -> i32 {
    let timer: u64 = ctx.arg(0);
    let Some(tw) = timewait_of(timer) else { return 0 };
    let l: SockLayout = global!(SOCK);
    let substate: u8 = kread(tw, l.tw_substate).unwrap_or(0);
    // Offer it to the transition that follows a first arming: the full socket the timewait
    // socket replaces goes to CLOSE right after, on this CPU. A re-arm has no such
    // transition; and when one does follow what looked like a re-arm, the address held a
    // killed timewait socket a moment ago and now holds a new one, which the transition
    // claims.
    if let Some(pending) = PENDING_TW.get_ptr_mut(0) {
        let sport: u16 = kread(tw, l.num).unwrap_or(0);
        let dport: u16 = u16::from_be(kread(tw, l.dport).unwrap_or(0));
        unsafe {
            let i = (*pending).next as usize % PENDING_TW_SLOTS;
            (*pending).next = (*pending).next.wrapping_add(1);
            (*pending).slots[i] = PendingTw { tw, ts_ns: bpf_ktime_get_ns(), sport, dport, substate, _pad: [0; 3] };
        }
    }
    let cancelled = take_cancelled(tw);
    // A timewait socket never goes back from TIME_WAIT to FIN_WAIT2: an "arming" that does
    // is a new timewait socket in a killed one's memory, whose hand-over follows.
    let cancelled = cancelled.filter(|c| !(c.entry.substate == tcp::TIME_WAIT && substate == tcp::FIN_WAIT2));
    if let Some(c) = cancelled {
        // Re-armed: the same timewait socket goes on. Say so even when its state is the
        // same, so the removal reported a moment ago is not taken for its end.
        let mut entry = c.entry;
        let before = entry.substate;
        entry.substate = substate;
        let _ = TIMEWAITS.insert(&tw, &entry, 0);
        followed(&c, timewait_report(tw, &entry, kind::TW_ARMED, before));
    } else if let Some(entry) = unsafe { TIMEWAITS.get(&tw) } {
        substate_changed(tw, *entry, substate);
    } else {
        let early = EarlyTw {
            ts_ns: unsafe { bpf_ktime_get_ns() },
            pid_tgid: bpf_get_current_pid_tgid(),
            comm: bpf_get_current_comm().unwrap_or_default(),
            substate,
            _pad: [0; 7],
        };
        let _ = EARLY_TW.insert(&tw, &early, 0);
    }
    0
}

/// `timer_expire_entry(struct timer_list *timer, unsigned long baseclk)`.
#[raw_tracepoint(tracepoint = "timer_expire_entry")]
pub fn timer_expire_entry(ctx: RawTracePointContext) -> i32 {
    let timer: u64 = ctx.arg(0);
    let Some(tw) = timewait_of(timer) else { return 0 };
    let cancelled = take_cancelled(tw);
    let mut entry = match &cancelled {
        Some(c) => c.entry,
        None => match unsafe { TIMEWAITS.get(&tw) } {
            Some(entry) => *entry,
            None => return 0,
        },
    };
    let _ = TIMEWAITS.remove(&tw);
    let l: SockLayout = global!(SOCK);
    let before = entry.substate;
    entry.substate = kread(tw, l.tw_substate).unwrap_or(entry.substate);
    let delivered = timewait_report(tw, &entry, kind::TW_EXPIRE, before);
    if let Some(c) = cancelled {
        followed(&c, delivered);
    }
    0
}

/// `timer_cancel(struct timer_list *timer)`.
#[raw_tracepoint(tracepoint = "timer_cancel")]
pub fn timer_cancel(ctx: RawTracePointContext) -> i32 {
    let timer: u64 = ctx.arg(0);
    let Some(tw) = timewait_of(timer) else { return 0 };
    let Some(entry) = (unsafe { TIMEWAITS.get(&tw) }).copied() else { return 0 };
    let _ = TIMEWAITS.remove(&tw);
    let delivered = timewait_report(tw, &entry, kind::TW_CANCEL, entry.substate);
    if let Some(slot) = CANCELLED.get_ptr_mut(0) {
        unsafe { *slot = Cancelled { tw, ts_ns: bpf_ktime_get_ns(), entry, delivered: u64::from(delivered) } };
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
    let rx_sk: u64 = ctx.arg(3);
    if rx_sk == 0 {
        return 0;
    }
    let Some(entry) = (unsafe { TIMEWAITS.get(&rx_sk) }).copied() else { return 0 };
    let l: SockLayout = global!(SOCK);
    let substate: u8 = kread(rx_sk, l.tw_substate).unwrap_or(entry.substate);
    substate_changed(rx_sk, entry, substate);
    0
}

/// Reports an event of a timewait socket portrace saw a connection move to; `before` is
/// the state portrace last reported for it. Returns whether its record reached the ring
/// buffer.
fn timewait_event(tw: u64, known: &TimeWaitEntry, kind: u8, before: u8) -> Result<bool, i32> {
    if global!(TRACE_COMMAND) != 0 && known.owner.traced == 0 {
        return Ok(false);
    }
    let l: SockLayout = global!(SOCK);
    let family: u16 = kread(tw, l.family)?;
    let mut ev = new_event(unsafe { bpf_ktime_get_ns() }, known.skaddr, family);
    ev.aux = tw;
    ev.kind = kind;
    ev.tw_substate = known.substate;
    ev.sport = kread(tw, l.num)?;
    ev.dport = u16::from_be(kread(tw, l.dport)?);
    read_addresses(&mut ev, tw, &l, l.rcv_saddr)?;
    ev.netns = netns_of(tw, &l);
    set_owner(&mut ev, &known.owner, known.owner.source);
    // The states the filter sees: the timewait socket's, and CLOSE when it ends.
    ev.oldstate = before;
    ev.newstate = if kind == kind::TW_ARMED { known.substate } else { tcp::CLOSE };
    let pid_tgid = bpf_get_current_pid_tgid();
    ev.pid = (pid_tgid >> 32) as u32;
    ev.tid = pid_tgid as u32;
    if !passes(&ev, false) {
        return Ok(false);
    }
    ev.comm = bpf_get_current_comm().unwrap_or_default();
    Ok(emit(&ev))
}

/// `task:task_newtask`, in the creating task: a process the traced command starts (fork,
/// vfork, clone without CLONE_THREAD) is traced too. A new task of any other process whose
/// id is still listed held an exited traced process's id, now reused: it is removed, so
/// the stranger is not taken for the command.
#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let l: TaskLayout = global!(TASK);
    let (Ok(pid), Ok(flags)) =
        (unsafe { ctx.read_at::<i32>(l.newtask_pid as usize) }, unsafe { ctx.read_at::<u64>(l.newtask_flags as usize) })
    else {
        bump(counter::UNFOLLOWED);
        return 0;
    };
    let child = pid as u32;
    let creator = (bpf_get_current_pid_tgid() >> 32) as u32;
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
        ev.saddr = [0; 16];
        ev.daddr = [0; 16];
        ev.saddr[..4].copy_from_slice(&s[3].to_ne_bytes());
        ev.daddr[..4].copy_from_slice(&d[3].to_ne_bytes());
    }
}

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

/// The address as the filter compares it: IPv4 addresses v4-mapped.
fn filter_words(ev: &Event, a: &[u8; 16]) -> [u32; 4] {
    let w = words(a);
    if ev.family == AF_INET {
        [0, 0, V4_MAPPED_MARK, w[0]]
    } else {
        w
    }
}

/// Whether the event passes the user's filter. With `local_port_unknown`, conditions on
/// the local port count as met.
fn passes(ev: &Event, local_port_unknown: bool) -> bool {
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
    if !local_port_unknown && !port_listed(global!(FILTER.n_lports), |i| global!(FILTER.lports[i]), ev.sport) {
        return false;
    }
    if !port_listed(global!(FILTER.n_rports), |i| global!(FILTER.rports[i]), ev.dport) {
        return false;
    }
    let n_ports = global!(FILTER.n_ports);
    if n_ports != 0
        && !local_port_unknown
        && !port_listed(n_ports, |i| global!(FILTER.ports[i]), ev.sport)
        && !port_listed(n_ports, |i| global!(FILTER.ports[i]), ev.dport)
    {
        return false;
    }
    let n_nets = global!(FILTER.n_nets) as usize;
    if n_nets != 0 {
        let (s, d) = (filter_words(ev, &ev.saddr), filter_words(ev, &ev.daddr));
        let mut found = false;
        for i in 0..MAX_NETS {
            if i < n_nets {
                let addr = words(&global!(FILTER.nets[i].addr));
                let mask = words(&global!(FILTER.nets[i].mask));
                if in_net(s, addr, mask) || in_net(d, addr, mask) {
                    found = true;
                }
            }
        }
        if !found {
            return false;
        }
    }
    true
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

fn in_net(a: [u32; 4], net: [u32; 4], mask: [u32; 4]) -> bool {
    a[0] & mask[0] == net[0]
        && a[1] & mask[1] == net[1]
        && a[2] & mask[2] == net[2]
        && a[3] & mask[3] == net[3]
}

/// A program started: its pid goes to userspace at once, waking it, so that the process's
/// details (executable, command line, parent, user) are read from /proc while it runs,
/// even when it makes a connection and exits a millisecond later. Not a transition: a
/// full ring loses only that head start, and is not counted.
#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    let mut ev = new_event(unsafe { bpf_ktime_get_ns() }, 0, 0);
    ev.kind = kind::EXEC;
    let pid_tgid = bpf_get_current_pid_tgid();
    ev.pid = (pid_tgid >> 32) as u32;
    ev.tid = pid_tgid as u32;
    ev.comm = bpf_get_current_comm().unwrap_or_default();
    if let Some(mut slot) = EVENTS.reserve::<Event>(0) {
        slot.write(ev);
        slot.submit(BPF_RB_FORCE_WAKEUP.into());
    }
    0
}

/// Writes the record into the ring buffer; returns whether there was room.
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
    match EVENTS.reserve::<Event>(0) {
        Some(mut slot) => {
            slot.write(*ev);
            let flags = if EVENTS.query(BPF_RB_AVAIL_DATA.into()) >= global!(WAKEUP_BYTES) {
                BPF_RB_FORCE_WAKEUP
            } else {
                BPF_RB_NO_WAKEUP
            };
            slot.submit(flags.into());
            bump(counter::EMITTED);
            true
        }
        None => {
            bump(full);
            false
        }
    }
}

fn bump(index: u32) {
    if let Some(count) = COUNTERS.get_ptr_mut(index) {
        unsafe { *count += 1 };
    }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
