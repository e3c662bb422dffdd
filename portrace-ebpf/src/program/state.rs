//! The two programs on the state tracepoint: the main one (raw tracepoint) and its backup
//! (classic tracepoint), which records exactly the hits the kernel skipped the main one
//! for. docs/kernel-programs.md has the decision table.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use portrace_ebpf::{counter, logic::hit_id, tcp, Event};

use super::globals::*;
use super::maps::*;
use super::notes::*;
use super::read::*;
use super::record::*;
use super::transition::*;
use super::{global, lay};

pub(super) const ORDER_UNKNOWN: u32 = 0;
pub(super) const ORDER_MAIN_FIRST: u32 = 1;
pub(super) const ORDER_BACKUP_FIRST: u32 = 2;

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
    // One clock read for the note and the record.
    // SAFETY: bpf_ktime_get_ns reads the clock; it has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if !matches!(BACKUP_BUSY.get(0), Some(&1)) {
        note_handled(hit_id(sk as u64, oldstate as u8, newstate as u8), now);
    }
    if !is_calibration(oldstate as u8, newstate as u8) {
        let read = with_slot(|slot| from_socket(slot, sk, oldstate as u8, newstate as u8, now));
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
pub(super) fn is_calibration(oldstate: u8, newstate: u8) -> bool {
    let own = global!(OWN_TGID);
    own != 0
        && matches!(
            (oldstate, newstate),
            (tcp::CLOSE, tcp::LISTEN) | (tcp::LISTEN, tcp::CLOSE)
        )
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
pub(super) fn backup<const HELPER_LOOP: bool>(ctx: &TracePointContext) -> u32 {
    if global!(CLASSIC_PRIMARY) != 0 {
        bump(counter::ENTERED);
        if !matches!(
            with_scratch(|ev| from_tracepoint(ev, ctx, false)),
            Some(Ok(()))
        ) {
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
        if !matches!(
            with_scratch(|ev| from_tracepoint(ev, ctx, true)),
            Some(Ok(()))
        ) {
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
pub(super) fn main_skipped<const HELPER_LOOP: bool>(ctx: &TracePointContext) -> bool {
    let (id, calibration) = match read_hit(ctx) {
        Some((sk, old, new)) => (hit_id(sk, old, new), is_calibration(old, new)),
        None => (0, false),
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
    let noted =
        (learning || order == ORDER_MAIN_FIRST) && id != 0 && take_handled::<HELPER_LOOP>(id);
    if calibration {
        if learning {
            if let Some(o) = ORDER.get_ptr_mut(0) {
                // SAFETY: a pointer the map gave for this CPU's (or this key's) value: valid while the program runs, and kept apart from nested runs on this CPU as the map's notes say.
                unsafe {
                    *o = if noted {
                        ORDER_MAIN_FIRST
                    } else {
                        ORDER_BACKUP_FIRST
                    }
                };
            }
        }
        return false;
    }
    order == ORDER_MAIN_FIRST && !noted
}

/// The hit's socket address and states from the classic tracepoint's record: one read
/// when they lie side by side (as on every kernel portrace knows), else one each.
#[inline(always)]
pub(super) fn read_hit(ctx: &TracePointContext) -> Option<(u64, u8, u8)> {
    let at = lay!(skaddr) as usize;
    if lay!(oldstate) as usize == at + 8 && lay!(newstate) as usize == at + 12 {
        // SAFETY: read_at copies from the tracepoint's record at an offset taken from this kernel's tracefs format; the copy is a checked probe read that fails rather than faults.
        let hit = unsafe { ctx.read_at::<Hit>(at) }.ok()?;
        return Some((hit.skaddr, hit.oldstate as u8, hit.newstate as u8));
    }
    // SAFETY: as above.
    unsafe {
        Some((
            ctx.read_at::<u64>(at).ok()?,
            ctx.read_at::<i32>(lay!(oldstate) as usize).ok()? as u8,
            ctx.read_at::<i32>(lay!(newstate) as usize).ok()? as u8,
        ))
    }
}

/// The tracepoint record's `skaddr`, `oldstate` and `newstate`, when they are neighbours.
#[repr(C)]
pub(super) struct Hit {
    pub(super) skaddr: u64,
    pub(super) oldstate: i32,
    pub(super) newstate: i32,
}

/// A transition from the classic tracepoint's record, processed; `rescue`: the backup
/// program records it because the kernel skipped the main program.
#[inline(always)]
pub(super) fn from_tracepoint(
    ev: &mut Event,
    ctx: &TracePointContext,
    rescue: bool,
) -> Result<(), i32> {
    if read_tracepoint(ev, ctx)? {
        process(ev, rescue, false);
    }
    Ok(())
}

/// A transition read from the socket itself at `ts_ns`, processed.
#[inline(always)]
pub(super) fn from_socket(
    slot: &mut Slot,
    sk: *const c_void,
    oldstate: u8,
    newstate: u8,
    ts_ns: u64,
) -> Result<(), i32> {
    match read_socket(slot, sk, oldstate, newstate, ts_ns)? {
        Read::NotTcp => {}
        Read::Transition => process(&mut slot.event, false, false),
        Read::Whole => process(&mut slot.event, false, true),
    }
    Ok(())
}
