//! `portrace top` end to end: the real binary in a pseudo-terminal, tracing a connection
//! the test makes in its own network namespace; the screen must show the connection's
//! endpoints, owner and state, and quitting with `q` must give the terminal back (the
//! alternate screen left, the cursor shown, cooked mode) with exit status 0.

use std::process::Command;
use std::time::Duration;

use portrace_tests::portrace::looks_like_panic;
use portrace_tests::process::run_bounded;
use portrace_tests::pty::Pty;
use portrace_tests::tcpload::WAIT;
use portrace_tests::{privileged, Closer, Netns, Portrace, Tcpload};

const PORT: u16 = 65200;
/// How long portrace may take to attach and draw its first screen.
const READY: Duration = Duration::from_secs(15);
/// How long a connection may take to show on the screen.
const SHOWN: Duration = Duration::from_secs(10);

/// The last position of `needle` in `haystack`.
fn last(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

#[test]
fn top_shows_a_live_connection_and_restores_the_terminal() {
    privileged!();
    let ns = Netns::create();
    let load = Tcpload::new(env!("CARGO_BIN_EXE_tcpload"));
    let port = PORT.to_string();
    let mut top = Pty::spawn(&Portrace::bin(), &["top", "--port", &port], 120, 32);
    // " live " once the sockets that existed are listed and tracing is under way.
    top.wait_screen("the view, tracing", READY, |s| s.contains("portrace top") && s.contains(" live ") && s.contains("Sockets"));

    let endpoint = format!("127.0.0.1:{PORT}");
    let server = load.server(&ns, &endpoint, 1, Closer::Client);
    let mut client = load.spawn_client_with(&ns, &endpoint, 1, 1, Closer::Client, &["--hold"]);
    client.wait_line("connected 1", WAIT);
    let client_pid = client.pid().to_string();
    // The client's row: its pid, tcpload, an ephemeral local port, the server's endpoint,
    // ESTABLISHED; and the listener's.
    let row_of = |screen: &str| -> Option<String> {
        screen
            .lines()
            .find(|l| l.contains(&client_pid) && l.contains(&endpoint) && l.contains("ESTABLISHED"))
            .map(str::to_string)
    };
    let screen = top.wait_screen("the held connection", SHOWN, |s| row_of(s).is_some());
    let row = row_of(&screen).unwrap();
    assert!(row.contains("tcpload") && row.contains("127.0.0.1:"), "{row}\n{screen}");
    let server_pid = server.pid().to_string();
    let child = screen.lines().find(|l| l.contains(&server_pid) && l.contains(&endpoint) && l.contains("ESTABLISHED"));
    assert!(child.is_some_and(|l| l.contains("tcpload")), "the server's accepted connection is shown:\n{screen}");
    assert!(screen.contains("CLOSE -> SYN_SENT") && screen.contains("SYN_SENT -> ESTABLISHED"), "recent transitions:\n{screen}");
    assert!(screen.contains("lost 0"), "the loss counter:\n{screen}");

    // The connection closes: the client's row goes through TIME_WAIT, its peer's lingers.
    Tcpload::go(&mut client);
    Tcpload::finish_client(client, 1);
    server.wait_success(WAIT);
    let screen = top.wait_screen("the closed connection", SHOWN, |s| s.contains("TIME_WAIT") && s.contains("passive_close"));
    assert!(screen.contains("FIN_WAIT2 -> TIME_WAIT"), "{screen}");

    top.type_keys(b"q");
    let status = top.wait_exit(Duration::from_secs(10));
    let raw = top.raw();
    assert!(status.success(), "exit status {status}:\n{}", top.screen());
    let entered = last(&raw, b"\x1b[?1049h").expect("the alternate screen was used");
    let left = last(&raw, b"\x1b[?1049l").expect("the alternate screen was left");
    assert!(left > entered, "the alternate screen was entered again after it was left");
    let hidden = last(&raw, b"\x1b[?25l").expect("the cursor was hidden");
    let shown = last(&raw, b"\x1b[?25h").expect("the cursor was shown again");
    assert!(shown > hidden, "the cursor was left hidden");
    assert!(top.cooked(), "the terminal was left in raw mode");
    drop(ns);
}

#[test]
fn top_without_a_terminal_says_so() {
    let mut cmd = Command::new(Portrace::bin());
    cmd.arg("top");
    let out = run_bounded("portrace top without a terminal", cmd, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("needs a terminal") && out.stderr.contains("run `portrace`"),
        "the error names the problem and the way out: {}",
        out.stderr
    );
    assert!(!looks_like_panic(&out.stderr), "{}", out.stderr);
}

#[test]
fn top_without_privileges_prints_its_error_on_the_normal_screen() {
    // nobody (65534): no CAP_BPF. The error comes before the screen is taken.
    privileged!();
    let mut top = Pty::spawn_as(&Portrace::bin(), &["top"], 100, 24, Some(65534));
    let status = top.wait_exit(Duration::from_secs(10));
    let raw = top.raw();
    let screen = top.screen();
    assert_eq!(status.code(), Some(1), "{screen}");
    assert!(screen.contains("CAP_BPF"), "the privilege error is shown:\n{screen}");
    assert!(last(&raw, b"\x1b[?1049h").is_none(), "the alternate screen was never taken:\n{screen}");
    assert!(top.cooked());
}
