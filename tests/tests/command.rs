//! `portrace -- CMD`: the real binary runs a command (inside a network namespace the test
//! creates, through `ip netns exec`) and traces only the sockets of that command and of the
//! processes it starts, until it exits; then it reports the command's sockets still open
//! and exits with the command's status. Each test checks both sides of exact attribution:
//! every transition of the command's sockets appears with the right owner, and traffic of
//! processes the test starts outside the command (in the same namespace, at the same
//! time) does not appear at all.
//!
//! portrace's records are on its stdout, so the command's own stdout reaches the test
//! through portrace's stderr, which is how the scripts below report their children's pids.
//!
//! These tests need root (eBPF, namespaces) and run one at a time.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use portrace_tests::portrace::looks_like_panic;
use portrace_tests::process::{run_bounded, Finished};
use portrace_tests::seq::CLIENT_ACTIVE;
use portrace_tests::tcpload::WAIT;
use portrace_tests::{
    assert_all, assert_none, assert_sequences, privileged, tcpload, timeline, transitions, Closer, Expect, Netns,
    Portrace, Proc, Tcpload, Transition,
};
use serde_json::Value;

/// How long a whole traced command may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// `portrace args...` as a command for [`Proc`] or [`run_bounded`].
fn portrace(args: &[&str]) -> Command {
    let mut cmd = Command::new(Portrace::bin());
    cmd.args(args);
    cmd
}

/// The JSON records on stdout; panics on a line that is not one.
fn records(run: &Finished) -> Vec<Value> {
    run.stdout
        .iter()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: stdout line is not JSON ({e}): {line}\n{}", run.label, run.stderr))
        })
        .collect()
}

/// Everything a run printed, for failure messages.
fn shown(run: &Finished) -> String {
    format!("{} ({})\n--- stdout\n{}\n--- stderr\n{}", run.label, run.status, run.stdout.join("\n"), run.stderr)
}

/// The pids the command's script printed as `WORD PID` lines (they reach portrace's stderr).
fn printed_pids(run: &Finished, word: &str) -> Vec<u32> {
    run.stderr
        .lines()
        .filter_map(|l| l.strip_prefix(word)?.strip_prefix(' ')?.trim().parse().ok())
        .collect()
}

/// The processes a traced command left running in the test's namespace: every process
/// in it but those in `keep` (the test's own, which their fixtures stop) is killed, by
/// pid, when the test ends, whether or not the command said which they were.
struct Leftovers<'a> {
    ns: &'a Netns,
    keep: Vec<u32>,
}

impl Drop for Leftovers<'_> {
    fn drop(&mut self) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "pids", self.ns.name()]);
        let listed = run_bounded("ip netns pids", cmd, Duration::from_secs(10));
        for pid in listed.stdout.iter().filter_map(|l| l.trim().parse::<u32>().ok()) {
            if !self.keep.contains(&pid) {
                // SAFETY: kill(2) on a process in the namespace this test created, started
                // by the test's command.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
    }
}

#[test]
fn traces_the_command_and_every_process_it_starts_and_nothing_else() {
    privileged!();
    let ns = Netns::create();
    let load = tcpload!();
    let tcpload = load.bin().display().to_string();
    // The server the command connects to is the test's, not the command's.
    let server = load.server(&ns, "127.0.0.1:65021", 3, Closer::Client);
    // An unrelated pair in the same namespace, running at the same time as the command.
    let other_server = load.server(&ns, "127.0.0.1:65022", 5, Closer::Client);
    let mut other_client = load.spawn_client(&ns, "127.0.0.1:65022", 5, 1, Closer::Client, true);
    // The shell forks and execs each client (two connections from two threads, then one);
    // it waits for a line on its stdin, which is portrace's, so that the unrelated
    // client can be let go at the same moment.
    let script = format!(
        "read go; \
         {tcpload} client --connect 127.0.0.1:65021 --count 2 --concurrency 2 --close first --timeout 60 >/dev/null & \
         echo \"child $!\"; wait $!; \
         {tcpload} client --connect 127.0.0.1:65021 --count 1 --close first --timeout 60 >/dev/null & \
         echo \"child $!\"; wait $!"
    );
    let mut traced = Proc::spawn(
        "portrace -- ip netns exec NS sh -c SCRIPT",
        portrace(&["-f", "json", "--", "ip", "netns", "exec", ns.name(), "sh", "-c", &script]),
    );
    traced.send_line("go");
    Tcpload::go(&mut other_client);
    let run = traced.wait(RUN_TIMEOUT);
    let outsiders = [server.pid(), other_server.pid(), other_client.pid()];
    Tcpload::finish_client(other_client, 5);
    server.wait_success(WAIT);
    other_server.wait_success(WAIT);

    assert!(run.status.success(), "portrace must exit with the command's status 0\n{}", shown(&run));
    assert!(!looks_like_panic(&run.stderr), "{}", shown(&run));
    let records = records(&run);
    assert_eq!(records.first().map(|r| r["type"].clone()), Some(Value::from("start")), "{}", shown(&run));
    assert_eq!(records.last().map(|r| r["type"].clone()), Some(Value::from("end")), "{}", shown(&run));
    assert!(!records.iter().any(|r| r["type"] == "socket"), "a command owns no socket older than the trace");
    let ts = transitions(&records);
    let children = printed_pids(&run, "child");
    assert_eq!(children.len(), 2, "the script prints its two children's pids\n{}", shown(&run));

    // Everything of the command's three connections, and nothing of anyone else.
    let roles = assert_sequences(&ts, &[Expect { role: "client", count: 3, edges: CLIENT_ACTIVE }]);
    let mut by_owner: BTreeMap<u32, usize> = BTreeMap::new();
    for socket in roles.get("client") {
        let owner = socket.first().owner_pid.expect("an owner");
        assert_all(&socket.transitions, "every transition carries the owner, also in softirq", |t| {
            t.owner_pid == Some(owner) && t.owner_comm.as_deref() == Some("tcpload")
        });
        *by_owner.entry(owner).or_default() += 1;
    }
    let expected: BTreeMap<u32, usize> = [(children[0], 2), (children[1], 1)].into();
    assert_eq!(by_owner, expected, "connections per child process\n{}", timeline(&ts));
    assert_all(&ts, "only connections to the command's server", |t: &Transition| t.dport == 65021);
    assert_none(&ts, "the unrelated pair", |t| t.has_port(65022));
    assert_none(&ts, "the server's sockets (the server is not the command's)", |t| t.sport == 65021);
    for pid in outsiders {
        assert_none(&ts, "an owner outside the command", |t| t.owner_pid == Some(pid));
    }
    assert!(
        run.stderr.contains("3 of the command's sockets were open when the trace ended (3 TIME_WAIT)"),
        "the end report lists the three clients in TIME_WAIT\n{}",
        shown(&run)
    );
}

#[test]
fn the_exit_status_is_the_commands_and_a_missing_command_is_127() {
    privileged!();
    for (script, code) in [("exit 3", 3), ("exit 0", 0), ("kill -KILL $$", 137), ("kill -TERM $$", 143)] {
        let run = run_bounded(
            &format!("portrace -- sh -c {script:?}"),
            portrace(&["-f", "json", "--", "sh", "-c", script]),
            RUN_TIMEOUT,
        );
        assert_eq!(run.status.code(), Some(code), "{}", shown(&run));
        assert!(!looks_like_panic(&run.stderr), "{}", shown(&run));
        assert_eq!(records(&run).last().map(|r| r["type"].clone()), Some(Value::from("end")), "{}", shown(&run));
        if code != 0 {
            assert!(run.stderr.contains("portrace: the command "), "says how the command ended\n{}", shown(&run));
        }
    }
    let plain = std::env::temp_dir().join(format!("portrace-t-plain-{}", std::process::id()));
    std::fs::write(&plain, "exit 0\n").expect("writing a plain file");
    std::fs::set_permissions(&plain, std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod 644");
    let plain_text = plain.display().to_string();
    let not_executable = format!("cannot run {plain_text}: it is not executable");
    for (missing, why) in [
        ("portrace-no-such-command", "cannot run portrace-no-such-command: command not found"),
        ("/nonexistent/portrace-cmd", "cannot run /nonexistent/portrace-cmd: No such file or directory"),
        (plain_text.as_str(), not_executable.as_str()),
    ] {
        let run = run_bounded(&format!("portrace -- {missing}"), portrace(&["-f", "json", "--", missing]), RUN_TIMEOUT);
        assert_eq!(run.status.code(), Some(127), "{}", shown(&run));
        assert!(run.stderr.contains(why), "the error names the command and why\n{}", shown(&run));
        assert!(run.stdout.is_empty(), "nothing traced for a command that cannot run\n{}", shown(&run));
    }
    let _ = std::fs::remove_file(&plain);
}

#[test]
fn a_connection_left_in_close_wait_is_reported_at_the_end() {
    privileged!();
    let ns = Netns::create();
    let load = tcpload!();
    let tcpload = load.bin().display().to_string();
    // The test's server closes each connection at once; the command's client, started in
    // the background, holds its end open without closing it: CLOSE_WAIT. Its stdin is a
    // FIFO it holds open itself, so its wait for a line never ends; the script waits until
    // the kernel shows the CLOSE_WAIT, prints the client's pid and exits, leaving it.
    let server = load.server(&ns, "127.0.0.1:65023", 1, Closer::Server);
    let script = format!(
        "d=$(mktemp -d) && mkfifo \"$d/f\" && exec 3<>\"$d/f\" && rm -r \"$d\"; \
         {tcpload} client --connect 127.0.0.1:65023 --count 1 --close second --hold --timeout 60 <&3 >/dev/null 2>&1 & \
         daemon=$!; i=0; \
         while [ $i -lt 200 ] && [ -z \"$(ss -Htn state close-wait '( dport = :65023 )')\" ]; do sleep 0.05; i=$((i+1)); done; \
         echo \"daemon $daemon\""
    );
    let run = run_bounded(
        "portrace -- ip netns exec NS sh -c SCRIPT",
        portrace(&["-f", "json", "--", "ip", "netns", "exec", ns.name(), "sh", "-c", &script]),
        RUN_TIMEOUT,
    );
    let _leftovers = Leftovers { ns: &ns, keep: vec![server.pid()] };
    let daemon = printed_pids(&run, "daemon");
    server.wait_success(WAIT);
    assert!(run.status.success(), "{}", shown(&run));
    let [daemon] = daemon[..] else { panic!("the script prints the client's pid once\n{}", shown(&run)) };

    let ts = transitions(&records(&run));
    let roles = assert_sequences(
        &ts,
        &[Expect { role: "client", count: 1, edges: &["CLOSE->SYN_SENT", "SYN_SENT->ESTABLISHED", "ESTABLISHED->CLOSE_WAIT"] }],
    );
    let client = &roles.get("client")[0];
    assert_all(&client.transitions, "the client's owner", |t| t.owner_pid == Some(daemon));
    assert_none(&ts, "the server's sockets", |t| t.sport == 65023);
    let port = client.local_port();
    let expected = format!("CLOSE_WAIT  127.0.0.1:{port} -> 127.0.0.1:65023  tcpload[{daemon}]");
    assert!(
        run.stderr.contains("1 of the command's sockets was open when the trace ended (1 CLOSE_WAIT):")
            && run.stderr.contains(&expected),
        "the end report shows the CLOSE_WAIT ({expected:?})\n{}",
        shown(&run)
    );
}

#[test]
fn the_command_runs_as_the_user_who_ran_sudo_unless_as_root() {
    privileged!();
    let script = "echo \"uid $(id -u) gid $(id -g) home $HOME\"";
    let mut cmd = portrace(&["-f", "json", "--", "sh", "-c", script]);
    cmd.env("SUDO_UID", "65534").env("SUDO_GID", "65534");
    let run = run_bounded("SUDO_UID=65534 portrace -- sh -c SCRIPT", cmd, RUN_TIMEOUT);
    assert!(run.status.success(), "{}", shown(&run));
    let home = nobody_home();
    assert!(run.stderr.contains(&format!("uid 65534 gid 65534 home {home}")), "{}", shown(&run));

    let mut cmd = portrace(&["-f", "json", "--as-root", "--", "sh", "-c", script]);
    cmd.env("SUDO_UID", "65534").env("SUDO_GID", "65534");
    let run = run_bounded("SUDO_UID=65534 portrace --as-root -- sh -c SCRIPT", cmd, RUN_TIMEOUT);
    assert!(run.status.success(), "{}", shown(&run));
    assert!(run.stderr.contains("uid 0 gid 0 "), "{}", shown(&run));
}

#[test]
fn the_command_runs_as_the_user_who_ran_doas_or_pkexec_and_root_is_said_plainly() {
    privileged!();
    let script = "echo \"uid $(id -u) gid $(id -g)\"";
    for (var, value) in [("DOAS_USER", "nobody"), ("PKEXEC_UID", "65534")] {
        let mut cmd = portrace(&["-f", "json", "--", "sh", "-c", script]);
        cmd.env_remove("SUDO_UID").env_remove("SUDO_GID").env(var, value);
        let run = run_bounded(&format!("{var}={value} portrace -- sh -c SCRIPT"), cmd, RUN_TIMEOUT);
        assert!(run.status.success(), "{}", shown(&run));
        assert!(run.stderr.contains("uid 65534 gid 65534"), "{var}: {}", shown(&run));
        assert!(!run.stderr.contains("as root"), "{var}: {}", shown(&run));
    }
    // Nobody asked for root: the command runs as root, and portrace says so even when its
    // stderr is not a terminal.
    let mut cmd = portrace(&["-f", "json", "--", "sh", "-c", script]);
    for var in ["SUDO_UID", "SUDO_GID", "DOAS_USER", "PKEXEC_UID"] {
        cmd.env_remove(var);
    }
    let run = run_bounded("portrace -- sh -c SCRIPT as plain root", cmd, RUN_TIMEOUT);
    assert!(run.status.success(), "{}", shown(&run));
    assert!(run.stderr.contains("uid 0 gid 0"), "{}", shown(&run));
    assert!(run.stderr.contains("portrace: running sh as root ("), "{}", shown(&run));
    // A DOAS_USER that names nobody known is refused before anything runs.
    let mut cmd = portrace(&["-f", "json", "--", "sh", "-c", script]);
    cmd.env_remove("SUDO_UID").env("DOAS_USER", "no-such-user-portrace");
    let run = run_bounded("DOAS_USER=unknown portrace -- sh", cmd, RUN_TIMEOUT);
    assert!(!run.status.success(), "{}", shown(&run));
    assert!(run.stderr.contains("DOAS_USER=\"no-such-user-portrace\" is not a user"), "{}", shown(&run));
    assert!(!run.stderr.contains("uid 0"), "the command did not run: {}", shown(&run));
}

/// The home directory of uid 65534 in /etc/passwd.
fn nobody_home() -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 5 && f[2] == "65534")
        .map(|f| f[5].to_string())
        .expect("a user with uid 65534")
}

#[test]
fn sigterm_to_portrace_reaches_the_command() {
    privileged!();
    let dir = std::env::temp_dir().join(format!("portrace-t-cmd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ready = dir.join("ready");
    let script = format!(
        "trap 'exit 7' TERM; touch {}; i=0; while [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; exit 1",
        ready.display()
    );
    let traced = Proc::spawn("portrace -- sh -c TRAP", portrace(&["-f", "json", "--", "sh", "-c", &script]));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !ready.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = ready.exists();
    // SAFETY: kill(2) on the portrace process this test started.
    unsafe { libc::kill(traced.pid() as libc::pid_t, libc::SIGTERM) };
    let run = traced.wait(RUN_TIMEOUT);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(started, "the command never started\n{}", shown(&run));
    assert_eq!(run.status.code(), Some(7), "the command's trap ran and its status came back\n{}", shown(&run));
    assert_eq!(records(&run).last().map(|r| r["type"].clone()), Some(Value::from("end")), "{}", shown(&run));
}

#[test]
fn a_recording_names_the_command_it_traced() {
    privileged!();
    let dir = std::env::temp_dir().join(format!("portrace-t-cmdrec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("cmd.ptr");
    let file_text = file.display().to_string();
    let run = run_bounded(
        "portrace record -o F -- sh -c 'echo recorded; exit 4'",
        portrace(&["record", "-o", &file_text, "--", "sh", "-c", "echo recorded; exit 4"]),
        RUN_TIMEOUT,
    );
    let info = run_bounded("portrace replay F --info", portrace(&["replay", &file_text, "--info"]), RUN_TIMEOUT);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(run.status.code(), Some(4), "{}", shown(&run));
    assert_eq!(run.stdout, vec!["recorded"], "a recording leaves stdout to the command\n{}", shown(&run));
    assert!(run.stderr.contains("none of the command's sockets was open"), "{}", shown(&run));
    info.assert_success();
    assert!(
        info.stdout.iter().any(|l| l == "command:      sh -c 'echo recorded; exit 4' (only its sockets were traced)"),
        "{}",
        shown(&info)
    );
}
