//! Record slots and the ring buffer: where a run builds its record (a per-CPU slot, never
//! the stack), how the record reaches userspace, and the loss counters.

use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
use portrace_ebpf::{counter, kind, owner_source, Event, EVENT_SIZE};

use super::global;
use super::globals::*;
use super::maps::*;

/// Runs `f` with this run's slot (record and socket head); `None` (and `f` not run) when
/// every level is in use, which only a kernel nesting programs deeper than they are known
/// to nest would do.
#[inline(always)]
pub(super) fn with_slot<R>(f: impl FnOnce(&mut Slot) -> R) -> Option<R> {
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
    let result = f(unsafe { &mut (*scratch).slots[level] });
    // SAFETY: a pointer the map gave for this CPU's (or this key's) value: valid while the program runs, and kept apart from nested runs on this CPU as the map's notes say.
    unsafe { (*scratch).depth = depth };
    Some(result)
}

/// Runs `f` with this run's record slot (see [`with_slot`]).
#[inline(always)]
pub(super) fn with_scratch<R>(f: impl FnOnce(&mut Event) -> R) -> Option<R> {
    with_slot(|slot| f(&mut slot.event))
}

/// Clears a record slot for a new record: every field, so nothing of the slot's last
/// record reaches userspace.
#[inline(always)]
pub(super) fn reset(ev: &mut Event, ts_ns: u64, skaddr: u64, family: u16) {
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

/// Zeroes an address or command field of a record: two word writes, not a `memset` call.
#[inline(always)]
pub(super) fn clear16(a: &mut [u8; 16]) {
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

/// How many records a CPU writes between two looks at how full the ring is (see
/// [`emit`]): a wakeup comes at most this many records per CPU late, a few kilobytes of a
/// ring of megabytes.
const WAKEUP_CHECK_EVERY: u64 = 32;

/// Copies the record into the ring buffer; returns whether there was room.
#[inline(never)]
pub(super) fn emit(ev: &Event) -> bool {
    // What a full ring costs: a transition users would have seen, or a timewait socket's
    // bookkeeping (a hand-over that keeps the connection in FIN_WAIT2, a timer removal, a
    // re-arm in the same state).
    let transition = match ev.kind {
        kind::TRANSITION | kind::TW_EXPIRE => true,
        kind::HANDOVER | kind::TW_ARMED => ev.oldstate != ev.newstate,
        _ => false,
    };
    let full = if transition {
        counter::RING_FULL
    } else {
        counter::TW_RING_FULL
    };
    // Wake the reader once the ring holds WAKEUP_BYTES (this record included). Asked only
    // at every WAKEUP_CHECK_EVERY-th record of this CPU: the query reads positions the
    // reader writes from another CPU, a cache miss each time, and the reader drains every
    // 10 to 80 ms anyway; the wakeup is for a burst that would fill the ring sooner, and
    // between a quarter full and full every CPU writing passes many such records.
    let emitted = COUNTERS.get(counter::EMITTED).copied().unwrap_or(0);
    let flags = if emitted % WAKEUP_CHECK_EVERY == 0
        && EVENTS.query(BPF_RB_AVAIL_DATA.into()) + EVENT_SIZE as u64 >= global!(WAKEUP_BYTES)
    {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
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
pub(super) fn bump(index: u32) {
    if let Some(count) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: a u64 of this CPU's map value, 8-byte aligned, valid while the program
        // runs; the kernel's atomic add needs no more.
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                count, 1,
            );
        }
    }
}
