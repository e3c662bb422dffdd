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
//! map, one level deeper for each run it interrupts (see [`maps::Scratch`]), and records reach
//! the ring buffer by copy from there. Functions pass records by reference, never by value.

mod filter;
mod globals;
mod maps;
mod notes;
mod processes;
mod read;
mod record;
mod state;
mod timewait;
mod transition;

/// Reads a global that userspace rewrote before load; volatile so the compiler does not
/// fold in the placeholder value.
macro_rules! global {
    ($place:expr) => {{
        #[allow(unused_unsafe, reason = "also used inside unsafe blocks")]
        // SAFETY: a plain read of a global the program never writes.
        let value = unsafe { core::ptr::read_volatile(core::ptr::addr_of!($place)) };
        value
    }};
}
pub(crate) use global;

/// One socket offset from `SOCK`, read where it is used (a copy of the whole layout would
/// take 40 bytes of the stack).
macro_rules! sock {
    ($field:ident) => {
        $crate::program::global!($crate::program::globals::SOCK.$field)
    };
}
pub(crate) use sock;

/// One tracepoint record offset from `LAYOUT`, likewise.
macro_rules! lay {
    ($field:ident) => {
        $crate::program::global!($crate::program::globals::LAYOUT.$field)
    };
}
pub(crate) use lay;

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
