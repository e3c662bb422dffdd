//! Fixtures for portrace's end-to-end tests: network namespaces that clean up after
//! themselves, child processes that are killed and reaped when dropped, a handle on a
//! running portrace that collects its JSON records, the tcpload workload generator, and
//! helpers that turn records into per-socket timelines and check them with messages that
//! show the whole observed timeline.
//!
//! Everything here is bounded: every wait has a deadline, and every process or namespace a
//! fixture creates is removed by its `Drop`.

pub mod netns;
pub mod portrace;
pub mod process;
pub mod records;
pub mod tcpload;

use std::sync::{Mutex, MutexGuard};

pub use netns::Netns;
pub use portrace::{Portrace, Run, Summary};
pub use process::{Finished, Proc};
pub use records::{
    assert_sequences, by_socket, check_socket_invariants, lost_total, timeline, transitions,
    Expect, Losses, Roles, SocketTimeline, Transition,
};
pub use tcpload::{Closer, Tcpload};

/// The kernel transitions of one loopback connection, per socket, as `OLD->NEW` edges
/// (see the project's notes on what the kernel emits: no TIME_WAIT, no NEW_SYN_RECV).
pub mod seq {
    /// A listener that listens and is closed.
    pub const LISTENER: &[&str] = &["CLOSE->LISTEN", "LISTEN->CLOSE"];
    /// The client when it closes first (the active close).
    pub const CLIENT_ACTIVE: &[&str] = &[
        "CLOSE->SYN_SENT",
        "SYN_SENT->ESTABLISHED",
        "ESTABLISHED->FIN_WAIT1",
        "FIN_WAIT1->FIN_WAIT2",
        "FIN_WAIT2->CLOSE",
    ];
    /// The client when the server closes first (the passive close).
    pub const CLIENT_PASSIVE: &[&str] = &[
        "CLOSE->SYN_SENT",
        "SYN_SENT->ESTABLISHED",
        "ESTABLISHED->CLOSE_WAIT",
        "CLOSE_WAIT->LAST_ACK",
        "LAST_ACK->CLOSE",
    ];
    /// The server's accepted socket when the client closes first.
    pub const CHILD_PASSIVE: &[&str] = &[
        "LISTEN->SYN_RECV",
        "SYN_RECV->ESTABLISHED",
        "ESTABLISHED->CLOSE_WAIT",
        "CLOSE_WAIT->LAST_ACK",
        "LAST_ACK->CLOSE",
    ];
    /// The server's accepted socket when it closes first.
    pub const CHILD_ACTIVE: &[&str] = &[
        "LISTEN->SYN_RECV",
        "SYN_RECV->ESTABLISHED",
        "ESTABLISHED->FIN_WAIT1",
        "FIN_WAIT1->FIN_WAIT2",
        "FIN_WAIT2->CLOSE",
    ];
    /// A client whose connection is refused (the peer answers the SYN with a reset).
    pub const REFUSED: &[&str] = &["CLOSE->SYN_SENT", "SYN_SENT->CLOSE"];
}

static PRIVILEGED: Mutex<()> = Mutex::new(());

/// Entry to every privileged test: panics unless running as root, then takes the global
/// lock so that such tests run one at a time even under a plain `cargo test` (one traced
/// burst must not share the machine with another). A test that panicked while holding the
/// lock does not block the others.
pub fn privileged() -> MutexGuard<'static, ()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "the privileged tests need root (they load eBPF programs and create network \
         namespaces); run them as root, e.g. with `cargo xtask test` in CI (euid is {euid})"
    );
    PRIVILEGED.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
