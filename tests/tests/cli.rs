//! portrace's command line refuses bad input the way a user should see it: a non-zero
//! exit and an error on stderr that names the bad value, with no panic or backtrace and
//! nothing traced. These run the binary only (no namespace, no traffic).

use std::process::Command;
use std::time::Duration;

use portrace_tests::portrace::looks_like_panic;
use portrace_tests::process::run_bounded;
use portrace_tests::Portrace;

/// Runs `portrace args...` and checks it is refused with an error naming `bad`.
fn refused(args: &[&str], bad: &str) {
    let mut cmd = Command::new(Portrace::bin());
    cmd.args(args);
    let label = format!("portrace {}", args.join(" "));
    let out = run_bounded(&label, cmd, Duration::from_secs(10));
    let shown = format!(
        "{label}: status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        out.stdout.join("\n"),
        out.stderr
    );
    assert!(!out.status.success(), "bad input accepted\n{shown}");
    assert!(
        out.status.code().is_some(),
        "portrace died of a signal instead of exiting with an error\n{shown}"
    );
    assert!(
        out.stderr.contains(bad),
        "the error does not name the bad value {bad:?}\n{shown}"
    );
    assert!(
        !looks_like_panic(&out.stderr),
        "portrace panicked on bad input\n{shown}"
    );
    assert!(
        !out.stdout
            .iter()
            .any(|l| l.contains("\"type\":\"start\"") || l.contains("\"type\":\"transition\"")),
        "portrace started tracing despite bad input\n{shown}"
    );
}

#[test]
fn rejects_port_out_of_range() {
    refused(&["--format", "json", "--port", "70000"], "70000");
}

#[test]
fn rejects_unknown_state() {
    refused(&["--format", "json", "--state", "ESTABLISH"], "ESTABLISH");
}

#[test]
fn rejects_prefix_longer_than_the_address() {
    refused(
        &["--format", "json", "--addr", "10.0.0.0/33"],
        "10.0.0.0/33",
    );
}

#[test]
fn rejects_ring_size_that_is_not_a_power_of_two_pages() {
    refused(&["--format", "json", "--ring-size", "1000"], "1000");
}

#[test]
fn rejects_unknown_format() {
    refused(&["--format", "xml"], "xml");
}

#[test]
fn rejects_comm_longer_than_the_kernel_keeps() {
    refused(
        &["--format", "json", "--comm", "a-name-longer-than-15"],
        "a-name-longer-than-15",
    );
}
