//! The notes the main program leaves of the hits it ran for, which the backup takes off:
//! a per-CPU stack, searched from its top.

use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_ktime_get_ns, generated::bpf_loop};

use super::maps::*;

/// The main program notes a hit it runs for, at `now`. It claims the slot (moves the top)
/// before it writes the note, so a pair of runs that interrupts it in between takes the
/// next slot.
pub(super) fn note_handled(id: u64, now: u64) {
    if let Some(h) = HANDLED.get_ptr_mut(0) {
        // SAFETY: a pointer the map gave for this CPU's (or this key's) value: valid while the program runs, and kept apart from nested runs on this CPU as the map's notes say.
        unsafe {
            let slot = (*h).top;
            (*h).top = slot.wrapping_add(1);
            (*h).stamps[slot as usize % HANDLED_SLOTS] = now;
            (*h).ids[slot as usize % HANDLED_SLOTS] = id;
        }
    }
}

/// The backup program takes the note of its hit off, with the notes left above it (of
/// hits whose backup run the kernel skipped); `false` when there is none: the kernel
/// skipped the main program for this hit.
pub(super) fn take_handled<const HELPER_LOOP: bool>(id: u64) -> bool {
    let Some(h) = HANDLED.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a pointer the map gave for this CPU's (or this key's) value: valid while the program runs, and kept apart from nested runs on this CPU as the map's notes say.
    let top = unsafe { (*h).top };
    // SAFETY: bpf_ktime_get_ns reads the clock; it has no preconditions.
    let mut search = NoteSearch {
        id,
        now: unsafe { bpf_ktime_get_ns() },
        top,
        depth: 0,
    };
    // Nearly always the note is on top (no pair of runs came in between): looked at
    // first, without the search's calls. A stale top note means every note is stale.
    let i = top.wrapping_sub(1) as usize % HANDLED_SLOTS;
    // SAFETY: as above; `i` is within the arrays.
    let (top_id, top_stamp) = unsafe { ((*h).ids[i], (*h).stamps[i]) };
    if search.now.wrapping_sub(top_stamp) > HANDLED_STALE_NS {
        return false;
    }
    if top_id == id {
        search.depth = 1;
    } else if HELPER_LOOP {
        // A loop the kernel runs (`bpf_loop`): the verifier checks its body once, whatever
        // the stack's size.
        // SAFETY: bpf_loop runs search_step with `search`, a local that outlives the loop; search_step touches it only through the pointer it is handed.
        unsafe {
            bpf_loop(
                HANDLED_SLOTS as u32 - 1,
                search_step as *mut c_void,
                &mut search as *mut NoteSearch as *mut c_void,
                0,
            );
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
pub(super) struct NoteSearch {
    pub(super) id: u64,
    pub(super) now: u64,
    pub(super) top: u32,
    /// How far below the top the note was found; 0 while it is not.
    pub(super) depth: u32,
}

/// One step of [`take_handled`]'s search, `k` notes below the top (counting from 0): 1
/// ends the search (the note is found, or the notes from here down are stale), 0 goes on.
#[inline(never)]
extern "C" fn search_step(k: u64, ctx: *mut c_void) -> i64 {
    let search = ctx as *mut NoteSearch;
    let Some(h) = HANDLED.get_ptr_mut(0) else {
        return 1;
    };
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
