//! Fixtures for portrace's end-to-end tests: network namespaces (and veth pairs between
//! them) that clean up after themselves, child processes that are killed and reaped when
//! dropped, a handle on a running portrace that collects its JSON records, the tcpload
//! workload generator, a pseudo-terminal to run `portrace top` in, and helpers that turn
//! records into per-socket timelines and check their sequences and the owner of every
//! transition, with messages that show the whole observed timeline, and the expectations
//! and check of the kernel matrix's scenario (`cargo xtask vm-test`).
//!
//! Everything here is bounded: every wait has a deadline, and every process or namespace a
//! fixture creates is removed by its `Drop`.

pub mod netns;
pub mod portrace;
pub mod process;
pub mod pty;
pub mod records;
pub mod scenario;
pub mod tcpload;

use std::io::Write as _;
use std::sync::{Mutex, MutexGuard};

pub use netns::Netns;
pub use portrace::{Portrace, Run, Summary};
pub use process::{Finished, Proc};
pub use records::{
    assert_all, assert_end, assert_none, client_closes_first, assert_owner, expected_total, assert_sequences, by_socket, check_socket_invariants,
    inventory, lost_total, socket_records, timeline, transitions, Expect, Losses, Owner, Roles,
    SocketRecord, SocketTimeline, Transition, OWN_SYSCALL_EDGES,
};
pub use tcpload::{Closer, Renamed, Tcpload};

/// The kernel transitions of one connection, per socket, as `OLD->NEW` edges, as portrace
/// reports them (see the project's notes on what the kernel emits: no NEW_SYN_RECV; the
/// side that closes first hands its connection to a timewait socket, which portrace shows
/// as `FIN_WAIT2->TIME_WAIT` on the same socket and, when the timewait socket ends 60 s
/// later or is killed, `TIME_WAIT->CLOSE`).
pub mod seq {
    /// A listener that listens and is closed.
    pub const LISTENER: &[&str] = &["CLOSE->LISTEN", "LISTEN->CLOSE"];
    /// The client when it closes first (the active close), while it is in TIME_WAIT.
    pub const CLIENT_ACTIVE: &[&str] = &[
        "CLOSE->SYN_SENT",
        "SYN_SENT->ESTABLISHED",
        "ESTABLISHED->FIN_WAIT1",
        "FIN_WAIT1->FIN_WAIT2",
        "FIN_WAIT2->TIME_WAIT",
    ];
    /// [`CLIENT_ACTIVE`] once its TIME_WAIT ended (expired or killed).
    pub const CLIENT_ACTIVE_ENDED: &[&str] = &[
        "CLOSE->SYN_SENT",
        "SYN_SENT->ESTABLISHED",
        "ESTABLISHED->FIN_WAIT1",
        "FIN_WAIT1->FIN_WAIT2",
        "FIN_WAIT2->TIME_WAIT",
        "TIME_WAIT->CLOSE",
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
    /// The server's accepted socket when it closes first, while it is in TIME_WAIT.
    pub const CHILD_ACTIVE: &[&str] = &[
        "LISTEN->SYN_RECV",
        "SYN_RECV->ESTABLISHED",
        "ESTABLISHED->FIN_WAIT1",
        "FIN_WAIT1->FIN_WAIT2",
        "FIN_WAIT2->TIME_WAIT",
    ];
    /// [`CHILD_ACTIVE`] once its TIME_WAIT ended (expired or killed).
    pub const CHILD_ACTIVE_ENDED: &[&str] = &[
        "LISTEN->SYN_RECV",
        "SYN_RECV->ESTABLISHED",
        "ESTABLISHED->FIN_WAIT1",
        "FIN_WAIT1->FIN_WAIT2",
        "FIN_WAIT2->TIME_WAIT",
        "TIME_WAIT->CLOSE",
    ];
    /// A client whose connection is refused (the peer answers the SYN with a reset), or
    /// whose connect times out: either way SYN_SENT straight to CLOSE.
    pub const REFUSED: &[&str] = &["CLOSE->SYN_SENT", "SYN_SENT->CLOSE"];
    /// A client whose established connection ends in a reset, sent or received.
    pub const CLIENT_RESET: &[&str] = &[
        "CLOSE->SYN_SENT",
        "SYN_SENT->ESTABLISHED",
        "ESTABLISHED->CLOSE",
    ];
    /// A server's accepted socket whose connection ends in a reset, sent or received.
    pub const CHILD_RESET: &[&str] = &[
        "LISTEN->SYN_RECV",
        "SYN_RECV->ESTABLISHED",
        "ESTABLISHED->CLOSE",
    ];
}

static PRIVILEGED: Mutex<()> = Mutex::new(());

/// Entry to every privileged test: `privileged!();` as its first line. As root it takes
/// the global lock ([`privileged`]); as another user the test returns at once, saying on
/// stderr that it was skipped and why, unless `CI` is set: CI runs as root and must run
/// every privileged test, so there it fails instead.
#[macro_export]
macro_rules! privileged {
    () => {
        let Some(_privileged_lock) = $crate::privileged_or_skip() else {
            return;
        };
    };
}

/// What [`privileged!`] does: the lock as root; `None`, after a line on stderr, for
/// another user; a panic for another user when `CI` is set.
pub fn privileged_or_skip() -> Option<MutexGuard<'static, ()>> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    match skip_decision(euid, std::env::var_os("CI").is_some_and(|v| !v.is_empty())) {
        Privileged::Run => Some(privileged()),
        Privileged::Skip(why) => {
            let test = std::thread::current().name().unwrap_or("a privileged test").to_string();
            // Straight to the stream, past the test harness's capture, so that the skip is
            // seen without --nocapture.
            let _ = writeln!(std::io::stderr(), "skipped {test}: {why}");
            None
        }
        Privileged::Fail(why) => panic!("{why}"),
    }
}

/// Whether a privileged test runs, is skipped or fails, for a user and a CI setting.
#[derive(Debug, PartialEq, Eq)]
pub enum Privileged {
    Run,
    Skip(String),
    Fail(String),
}

pub fn skip_decision(euid: u32, ci: bool) -> Privileged {
    let need = "it needs root (it loads the eBPF program and creates network namespaces)";
    match (euid, ci) {
        (0, _) => Privileged::Run,
        (_, false) => Privileged::Skip(format!("{need}; euid is {euid}: run `cargo xtask test` as root to run it")),
        (_, true) => Privileged::Fail(format!(
            "{need}, and CI is set: CI must run every privileged test, so it runs as root (euid is {euid})"
        )),
    }
}

/// Takes the global lock so that privileged tests run one at a time even under a plain
/// `cargo test` (one traced burst must not share the machine with another), after
/// checking that this is root (panics otherwise: use [`privileged!`] in a test). A test
/// that panicked while holding the lock does not block the others.
pub fn privileged() -> MutexGuard<'static, ()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "the privileged tests need root (they load eBPF programs and create network \
         namespaces); run them as root, e.g. with `cargo xtask test` in CI (euid is {euid})"
    );
    PRIVILEGED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod privileged_tests {
    use super::{skip_decision, Privileged};

    #[test]
    fn root_runs_others_skip_and_ci_fails() {
        assert_eq!(skip_decision(0, false), Privileged::Run);
        assert_eq!(skip_decision(0, true), Privileged::Run);
        assert!(matches!(skip_decision(1000, false), Privileged::Skip(why) if why.contains("euid is 1000")));
        assert!(matches!(skip_decision(1000, true), Privileged::Fail(why) if why.contains("CI")));
    }
}

pub mod tracefile_helpers;
