//! Loading and attaching the kernel programs, and everything userspace reads from or
//! writes to them. This is the only module that talks to aya: it hands the tracepoint
//! layout, the socket layout and the filter to the programs as read-only globals, sizes
//! the ring buffer, attaches the programs, and exposes the ring buffer, the loss counters,
//! the kernel's own statistics of the main program (`recursion_misses`: runs it skipped),
//! and the maps userspace maintains (owners of sockets older than the trace, timewait
//! sockets that were killed, and the traced command's processes). Programs are loaded one
//! at a time through [`load_program`], which says how each load went (time, the kernel's
//! count of verified instructions, or why it failed); the live run attaches what loaded,
//! and `portrace doctor` ([`probe`]) loads every program the same way without attaching.
//! Which features the outcome leaves on is decided by
//! [`features::decide`](crate::features::decide).
//!
//! The object, its programs' names and purposes, and the [`Setup`] the programs are given
//! are here; `open` opens the object and does the start-up work that can run beforehand
//! (aya's loader, the kernel's symbols and socket offsets), `programs` loads programs and
//! says how each load went (and [`probe`]s them for `portrace doctor`), `attach` loads and
//! attaches what a live run uses ([`load`]), and `tracer` is the [`Tracer`] handle with
//! its map reads and writes, the [`Ring`] and the kernel's statistics of a program.

use portrace_ebpf::{Filter, Layout, SockLayout, TaskLayout};

mod attach;
mod open;
mod programs;
mod tracer;
mod typed;
#[cfg(test)]
mod tests;

pub use attach::{load, order};
pub use open::{find_symbol, kernel_offsets, kernel_types, open, prepare, tw_timer_handler, KernelOffsets, KernelTypes, Preparing};
pub use programs::{error_context, load_in_parallel, load_program, probe, ProgramLoad};
pub use tracer::{Counters, ProgStats, Ring, Tracer};

/// The kernel programs, built by build.rs.
static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/portrace"));

/// The kernel programs' object as built, for what reads it without loading it.
pub fn object() -> &'static [u8] {
    PROGRAM
}

const MAIN: &str = "inet_sock_set_state";
const BACKUP: &str = "inet_sock_set_state_backup";
/// The same program for kernels without the `bpf_loop` helper (before Linux 5.17): its
/// search for the main program's note stops at a fixed depth.
const BACKUP_BOUNDED: &str = "inet_sock_set_state_backup_bounded";
const TIMER_PROGRAMS: [&str; 3] = ["timer_start", "timer_expire_entry", "timer_cancel"];
/// Sees the peer's FIN reach an orphan's timewait socket (FIN_WAIT2 becoming TIME_WAIT).
const PACKET_PROGRAM: &str = "kfree_skb";
/// The program that tells userspace at once about programs started (exec).
const EXEC_PROGRAM: &str = "sched_process_exec";
/// Follow the traced command's processes (`portrace -- CMD`).
const NEWTASK_PROGRAM: &str = "task_newtask";
const EXIT_PROGRAM: &str = "sched_process_exit";

/// What each kernel program is for, in a few words (messages, `portrace doctor`).
pub fn purpose(program: &str) -> &'static str {
    match program {
        MAIN => "every TCP state transition, with owners and close errors",
        BACKUP => "recovers transitions the kernel skips the main program for",
        BACKUP_BOUNDED => "the backup program for kernels without bpf_loop (before 5.17)",
        "timer_start" => "TIME_WAIT: a timewait socket's timer armed",
        "timer_expire_entry" => "TIME_WAIT: a timewait socket's timer expired",
        "timer_cancel" => "TIME_WAIT: a timewait socket's timer removed",
        "timer_start_typed" => "TIME_WAIT: timer_start, BTF-typed (cheaper for other timers)",
        "timer_cancel_typed" => "TIME_WAIT: timer_cancel, BTF-typed (cheaper for other timers)",
        PACKET_PROGRAM => "an orphan's FIN_WAIT2 becoming TIME_WAIT",
        EXEC_PROGRAM => "programs started during the trace, noticed at once",
        NEWTASK_PROGRAM => "`-- CMD`: follows the command's new processes",
        EXIT_PROGRAM => "`-- CMD`: forgets the command's exited processes",
        _ => "not described (a program this portrace does not know)",
    }
}

/// What the programs need to know about this kernel, and the user's choices.
pub struct Setup {
    /// Tracepoint record offsets, from tracefs.
    pub layout: Layout,
    /// Socket offsets, from BTF; why not, when they could not be had.
    pub sock: Result<SockLayout, String>,
    /// The stand-in BTF the typed timer programs load with ([`typed`]); why not, when
    /// there is none (the raw timer programs are used then).
    pub typed: Result<aya::Btf, String>,
    /// The address of `tw_timer_handler` ([`tw_timer_handler`]): known, or being found.
    pub tw_handler: TwHandler,
    /// Whether `skb:kfree_skb` names the receiving socket (`rx_sk`, Linux 6.11 and later).
    pub kfree_skb_has_rx_sk: bool,
    pub filter: Filter,
    pub ring_size: u32,
    /// Set to keep only a command's sockets (`portrace -- CMD`): where the task
    /// tracepoints keep the fields the programs read, and how many processes the traced
    /// set may hold.
    pub command: Option<(TaskLayout, u32)>,
}

/// The timewait timer handler's address, which the timer programs compare each timer's
/// function with. The programs read it from a map, so they can be loaded and verified
/// while it is still being found (reading `/proc/kallsyms`, where the kernel cannot be
/// asked, is the longest part of the start), and it is written before they are attached.
pub enum TwHandler {
    /// Found, or why not.
    Known(Result<u64, String>),
    /// Being found on a thread of its own ([`Preparing`]): how long it took, with it.
    Reading(std::thread::JoinHandle<(Result<u64, String>, std::time::Duration)>),
}

impl TwHandler {
    /// Whether the timer programs may be wanted: the address is known, or being read.
    pub fn may_be_found(&self) -> bool {
        !matches!(self, TwHandler::Known(Err(_)))
    }

    /// Waits for the address if it is being read, and keeps it as known; how long reading
    /// it took (0 when known beforehand).
    pub fn resolve(&mut self) -> (Result<u64, String>, std::time::Duration) {
        let (found, took) = match std::mem::replace(self, TwHandler::Known(Ok(0))) {
            TwHandler::Known(found) => (found, std::time::Duration::ZERO),
            TwHandler::Reading(reading) => reading
                .join()
                .unwrap_or_else(|_| (Err("finding tw_timer_handler failed".to_owned()), std::time::Duration::ZERO)),
        };
        *self = TwHandler::Known(found.clone());
        (found, took)
    }

    /// What is known now, for a report that does not wait.
    pub fn known(&self) -> Result<(), String> {
        match self {
            TwHandler::Known(found) => found.as_ref().map(|_| ()).map_err(Clone::clone),
            TwHandler::Reading(_) => Ok(()),
        }
    }
}
