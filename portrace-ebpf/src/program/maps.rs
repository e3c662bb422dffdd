//! Every map of the kernel program, with the types of their values.
//!
//! Who writes, reads and removes each (the state programs are the main program and the
//! backup; `timer_*` and `kfree_skb` are the timewait programs; "user" is userspace):
//!
//! | map | written by | read by | entries removed by |
//! |---|---|---|---|
//! | `EVENTS` (ring) | every program that reports | user | user (consumes) |
//! | `COUNTERS` | every program (atomic adds) | user | never |
//! | `SCRATCH` | every program that builds a record | the same run | never (a level per nesting run) |
//! | `HOLD` | state programs (a connect's or a child's first transition) | state programs | state programs (at the socket's next transition) |
//! | `BUSY` | main program | backup | never (set and cleared per run) |
//! | `BACKUP_BUSY` | backup | main program | never |
//! | `ORDER` | backup (calibration hit) | backup | never |
//! | `TW_HANDLER` | user (before the timewait programs are attached) | timewait programs | never |
//! | `HANDLED` | main program (pushes notes) | backup | backup (pops its note and those above it) |
//! | `OWNERS` | state programs | state programs | state programs (at CLOSE) |
//! | `INVENTORY` | user (sockets open at the start, once) | state programs | never (bounded by the sockets open at the start) |
//! | `LISTENERS` | state programs (LISTEN), user (listeners open at the start) | state programs (a child's first transition) | state programs (the listener's CLOSE) |
//! | `TIMEWAITS` | state programs (hand-over), `timer_start`, `kfree_skb` | timewait programs | `timer_cancel`, `timer_expire_entry` |
//! | `TRACED` | user (the command), `task_newtask` | state programs | `task_newtask` (a reused id), `sched_process_exit` |
//! | `TW_TUPLES` (LRU) | state programs (hand-over, before 6.11) | `kfree_skb` | the LRU |
//! | `CANCELLED` | `timer_cancel` | `timer_start`, `timer_expire_entry` | the same (taken) |
//! | `FOLLOWED` (LRU) | `timer_start`, `timer_expire_entry` | user | user, the LRU |
//! | `PENDING_TW` | `timer_start` (a first arming) | state programs (the hand-over) | state programs (taken) |
//! | `EARLY_TW` (LRU) | `timer_start` (an arming before its hand-over) | state programs | state programs, the LRU |

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use portrace_ebpf::{
    counter, Event, ListenKey, Owner, SockOwner, TimeWaitEntry, TwTuple, FOLLOWED_ENTRIES,
    HOLD_ENTRIES, LISTENER_ENTRIES, OWNER_ENTRIES, TIMEWAIT_ENTRIES, TRACED_ENTRIES,
    TW_TUPLE_ENTRIES,
};

#[map]
pub(super) static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

#[map]
pub(super) static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Per CPU: where runs build their records.
#[map]
pub(super) static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// How many runs of portrace's programs can be under way on one CPU at once. A run in a
/// task (a system call: connect, close, listen) can be interrupted by a softirq (packets,
/// timers) whose programs run, and that by a hardirq that arms a timer (`timer_start`,
/// `timer_cancel`); the kernel never runs a program inside itself on the same CPU (a raw
/// tracepoint program's own guard, and one guard for all classic tracepoint programs), but
/// every other pair can nest: the state programs, the timer programs and the packet program
/// in any order. Three levels are the most seen; the fourth is margin.
pub(super) const SCRATCH_LEVELS: usize = 4;

/// The record slots of one CPU, a level each. A run takes the level `depth` says is free
/// and moves `depth` past it until it ends. A run that interrupts another between its read
/// of `depth` and its write takes the same level, but it also ends before the interrupted
/// run goes on, so the two never use the level at the same time.
#[repr(C)]
pub(super) struct Scratch {
    pub(super) depth: u32,
    pub(super) _pad: u32,
    pub(super) slots: [Slot; SCRATCH_LEVELS],
}

/// How many bytes of a socket's head (`struct sock_common`) the main program copies in one
/// read: on the kernels portrace knows, every `sock_common` field it reads lies in them.
pub(super) const HEAD: usize = 96;

/// How many bytes around `inet_sock`'s local address and port the main program copies in
/// one read, when the two lie that close (they are neighbours on the kernels portrace
/// knows).
pub(super) const INET_WINDOW: usize = 8;

/// One level's record, and room for the parts of the socket it reads whole.
#[repr(C)]
pub(super) struct Slot {
    pub(super) event: Event,
    pub(super) head: [u8; HEAD],
    pub(super) inet: [u8; INET_WINDOW],
}

/// `CLOSE -> SYN_SENT` transitions held until their socket's local port is known.
#[map]
pub(super) static HOLD: HashMap<u64, Event> = HashMap::with_max_entries(HOLD_ENTRIES, 0);

/// How many transitions `HOLD` holds (index 0), so that a transition can skip looking for
/// its socket's held one when none is held. An entry replaced, or removed by another
/// way than its release, leaves the count higher than the map: then the map is searched
/// as if the count were not there, never skipped wrongly.
#[map]
pub(super) static HELD: Array<u64> = Array::with_max_entries(1, 0);

/// Per CPU: 1 while the main program runs there. A backup run that finds it set is
/// nested in the main program's run for another hit, which is exactly when the kernel
/// skips the main program: the backup records its hit without looking for a note.
#[map]
pub(super) static BUSY: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Per CPU: 1 while the backup program runs there. The kernel skips every classic
/// tracepoint program (the backup included) for a hit that interrupts it, so a main run
/// that finds it set leaves no note: no backup run would ever take it off.
#[map]
pub(super) static BACKUP_BUSY: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// The address of the kernel's `tw_timer_handler` (from /proc/kallsyms), at index 0; 0
/// (as it is until userspace writes it) leaves the timewait programs inert. A map, not a
/// global set before load, so that the programs load and are verified while userspace is
/// still reading the kernel's symbol table; it is written before they are attached.
#[map]
pub(super) static TW_HANDLER: Array<u64> = Array::with_max_entries(1, 0);

/// Which of the two state programs the kernel runs first for a hit, as userspace's
/// calibration hit showed: [`ORDER_UNKNOWN`], [`ORDER_MAIN_FIRST`] or
/// [`ORDER_BACKUP_FIRST`]. The backup can use the main program's notes of the hits it ran
/// for only when the main program runs first (it is attached first, but a classic
/// tracepoint another tool opened earlier puts the backup's probe ahead of it).
#[map]
pub(super) static ORDER: Array<u32> = Array::with_max_entries(1, 0);

/// Per CPU: the hits the main program ran for, most recent last, until the backup program
/// takes its note off.
#[map]
pub(super) static HANDLED: PerCpuArray<Handled> = PerCpuArray::with_max_entries(1, 0);

/// Notes kept per CPU, as a stack. The main program pushes a note for each hit it runs
/// for. The backup run for the same hit comes after it on the same CPU; the pairs of runs
/// of hits that interrupt the two in between push and pop their own notes, so it finds
/// its note on top, or below the notes of interrupting hits whose backup run the kernel
/// skipped. Those come in whole batches: a softirq that lands after the kernel has
/// claimed the classic tracepoint's slot for this hit, but before the backup program
/// starts, handles every packet waiting (hundreds under load) with no backup run. The
/// stack holds such a batch whole; the notes above the one taken are those leftovers and
/// are popped with it.
pub(super) const HANDLED_SLOTS: usize = 1024;
/// A note older than this is stale: its backup run never came. A main run and the backup
/// run for the same hit are apart only by the interrupts between them (a softirq runs at
/// most about 2 ms before it yields). A stale note is never taken for a later hit's
/// (the same socket address can make the same transition again once it holds a new
/// socket), and the search stops at the first one: the notes below it are older still.
pub(super) const HANDLED_STALE_NS: u64 = 10_000_000;
/// How deep the backup program looks on a kernel without `bpf_loop`.
pub(super) const HANDLED_SEARCH_BOUNDED: u32 = 255;

#[repr(C)]
pub(super) struct Handled {
    /// The number of notes pushed and not popped (the stack's top, modulo `HANDLED_SLOTS`).
    pub(super) top: u32,
    pub(super) _pad: u32,
    /// Each note is [`hit_id`] of a hit.
    pub(super) ids: [u64; HANDLED_SLOTS],
    /// When each note was made.
    pub(super) stamps: [u64; HANDLED_SLOTS],
}

/// Live sockets' owners, by socket address.
#[map]
pub(super) static OWNERS: HashMap<u64, Owner> =
    HashMap::with_max_entries(OWNER_ENTRIES, BPF_F_NO_PREALLOC);

/// Owners of sockets older than the trace, by socket cookie; filled by userspace.
#[map]
pub(super) static INVENTORY: HashMap<u64, Owner> =
    HashMap::with_max_entries(OWNER_ENTRIES, BPF_F_NO_PREALLOC);

/// Listening sockets and their owners, by network namespace and port: a child socket
/// belongs to its listener's owner until that process acts on it.
#[map]
pub(super) static LISTENERS: HashMap<ListenKey, SockOwner> =
    HashMap::with_max_entries(LISTENER_ENTRIES, BPF_F_NO_PREALLOC);

/// Timewait sockets portrace saw a connection move to, by timewait socket address.
#[map]
pub(super) static TIMEWAITS: HashMap<u64, TimeWaitEntry> =
    HashMap::with_max_entries(TIMEWAIT_ENTRIES, BPF_F_NO_PREALLOC);

/// The traced command's live processes, by thread group id (the value is unused).
/// Userspace puts the command in before it runs; `task_newtask` adds every process one of
/// them starts, and `sched_process_exit` removes a process once all its threads are gone.
#[map]
pub(super) static TRACED: HashMap<u32, u8> =
    HashMap::with_max_entries(TRACED_ENTRIES, BPF_F_NO_PREALLOC);

/// Kernels before 6.11 only: timewait sockets by their addresses and ports, so that the
/// packet program can tell which one a packet reached. Entries are not removed: a stale
/// one leads to a timewait socket `TIMEWAITS` no longer knows, or whose ports differ, and
/// is ignored; the least recently used go first.
#[map]
pub(super) static TW_TUPLES: LruHashMap<TwTuple, u64> =
    LruHashMap::with_max_entries(TW_TUPLE_ENTRIES, 0);

/// Per CPU: the timewait socket whose timer was just removed, and its entry. The kernel
/// removes a timer right before re-arming it and right before running it, on the same CPU;
/// a removal followed by neither is the timewait socket being killed, and its address may
/// then be reused by a new timewait socket, which must not inherit the old entry.
#[map]
pub(super) static CANCELLED: PerCpuArray<Cancelled> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct Cancelled {
    pub(super) tw: u64,
    pub(super) ts_ns: u64,
    pub(super) entry: TimeWaitEntry,
    /// Whether the removal's record reached the ring buffer.
    pub(super) delivered: u64,
    /// The timewait socket whose timer was last removed while no hand-over had claimed it
    /// yet, and when: an arming right after is a re-arm, which must be noted for the
    /// hand-over (`EARLY_TW`); an arming without one is a first arming, which needs no
    /// note.
    pub(super) unclaimed_tw: u64,
    pub(super) unclaimed_ts_ns: u64,
}

/// Timer removals that userspace got and whose follow-up (re-arm or expiry) it will not
/// get: the follow-up's record was dropped in a full ring, or the filter let the removal
/// through but not it (`--state CLOSE` keeps a removal, reported as a move to CLOSE, and
/// drops a re-arm in TIME_WAIT). By timewait socket, the time of the follow-up. Userspace
/// reads it before it takes an unanswered removal for a kill.
#[map]
pub(super) static FOLLOWED: LruHashMap<u64, u64> =
    LruHashMap::with_max_entries(FOLLOWED_ENTRIES, 0);

/// Per CPU: the timewait sockets whose timer was just armed for the first time, each
/// waiting for the transition of the full socket it replaces (which follows on the same
/// CPU). There can be several: a connection handled in a task (from its socket's backlog)
/// can be interrupted between the two by a softirq that hands another connection over.
#[map]
pub(super) static PENDING_TW: PerCpuArray<PendingTws> = PerCpuArray::with_max_entries(1, 0);

/// Armings kept per CPU: enough for a hand-over interrupted by a softirq that arms a few
/// timewait timers of its own.
pub(super) const PENDING_TW_SLOTS: usize = 8;

#[repr(C)]
pub(super) struct PendingTws {
    /// Where the next one goes (modulo `PENDING_TW_SLOTS`): the oldest is replaced.
    pub(super) next: u32,
    pub(super) _pad: u32,
    pub(super) slots: [PendingTw; PENDING_TW_SLOTS],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct PendingTw {
    pub(super) tw: u64,
    pub(super) ts_ns: u64,
    pub(super) sport: u16,
    pub(super) dport: u16,
    pub(super) substate: u8,
    pub(super) _pad: [u8; 3],
}

/// A timewait socket's timer re-armed where no entry was known for it yet: the re-arm
/// beat the hand-over's program to it (the peer's FIN reached the new timewait socket on
/// another CPU). The hand-over reads it to report such a change where and when it
/// happened. A first arming is not noted: the hand-over that follows it on the same CPU
/// reads the socket's state itself, and a note in this LRU map (an insert, a lookup and a
/// removal per connection) cost more than the rest of the timer's work.
#[map]
pub(super) static EARLY_TW: LruHashMap<u64, EarlyTw> = LruHashMap::with_max_entries(4096, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct EarlyTw {
    pub(super) ts_ns: u64,
    pub(super) pid_tgid: u64,
    pub(super) comm: [u8; 16],
    pub(super) substate: u8,
    pub(super) _pad: [u8; 7],
}
