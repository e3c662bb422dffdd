//! Programs about processes: following the traced command's processes (`portrace --
//! CMD`) and announcing each exec so userspace reads a process's details while it runs.

use aya_ebpf::{
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use portrace_ebpf::{counter, kind, Event, TaskLayout, CLONE_THREAD};

use super::global;
use super::globals::*;
use super::maps::*;
use super::read::*;
use super::record::*;

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
