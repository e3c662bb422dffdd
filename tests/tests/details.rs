//! Owners named in full, against the real kernel: a `process` record (executable,
//! command line, parent, user, cgroup) before the first record of each owner, and a
//! `netns` record with the namespace's own local port range before the first record in
//! each namespace; the same records from a recording, and after the processes are gone.
//!
//! The traffic runs in a namespace of the test's own, on 127.64.2.1 (an address no other
//! test uses), and portrace filters on it. These tests need root and run one at a time.

use std::time::Duration;

use portrace_tests::tcpload::WAIT;
use portrace_tests::tracefile_helpers::{replay, Recorder, TempDir};
use portrace_tests::{privileged, Closer, Netns, Portrace, Tcpload};
use serde_json::Value;

const ADDR: &str = "127.64.2.1";
const RECORDS_TIMEOUT: Duration = Duration::from_secs(20);

fn of_type<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["type"] == kind).collect()
}

/// The `process` record of `pid`; panics unless there is exactly one.
fn process(records: &[Value], pid: u32) -> &Value {
    let found: Vec<&Value> = of_type(records, "process").into_iter().filter(|p| p["pid"] == pid).collect();
    assert_eq!(found.len(), 1, "one process record for pid {pid}: {found:?}");
    found[0]
}

/// Panics unless a `process` record of `pid` comes before every record owned by it.
fn announced_first(records: &[Value], pid: u32) {
    let first_owned = records.iter().position(|r| r["owner_pid"] == pid).expect("records owned by the pid");
    let announced = records.iter().position(|r| r["type"] == "process" && r["pid"] == pid).expect("a process record");
    assert!(announced < first_owned, "process record of {pid} at {announced}, its first record at {first_owned}");
}

#[test]
fn owners_and_namespaces_are_named_in_full_live_and_from_a_recording() {
    privileged!();
    let ns = Netns::create();
    // A port range of this namespace's own, unlike the host's, to see that it is read
    // inside the namespace.
    ns.sysctl("net.ipv4.ip_local_port_range=41000 41999");
    let load = Tcpload::new(env!("CARGO_BIN_EXE_tcpload"));
    let dir = TempDir::new();
    let file = dir.file("details.ptr");
    let port = 64201;
    let endpoint = format!("{ADDR}:{port}");
    let args = ["--addr", ADDR, "--port", "64201"];
    let mut live = Portrace::start(&args);
    let recorder = Recorder::start(&file, &args);

    const N: usize = 4;
    let server = load.server(&ns, &endpoint, N, Closer::Client);
    // The client makes its connections and exits within a millisecond or two, long before
    // portrace's next look at the ring buffer: it is named only because portrace read its
    // details when it started. It waits at its start line, after the exec, so the test
    // knows the exec happened a while before the connections.
    let mut client = load.spawn_client(&ns, &endpoint, N, 1, Closer::Client, true);
    std::thread::sleep(Duration::from_millis(300));
    Tcpload::go(&mut client);
    let (server_pid, client_pid) = (server.pid(), client.pid());
    Tcpload::finish_client(client, N);
    server.wait_success(WAIT);
    // Per connection 5 client and 5 server transitions, and the listener's 2.
    live.wait_for_transitions(N * 10 + 2, RECORDS_TIMEOUT);
    std::thread::sleep(Duration::from_millis(200));
    let recorded = recorder.stop();
    let live = live.stop();
    live.assert_clean();
    assert!(recorded.status.success(), "portrace record failed:\n{}", recorded.stderr);

    let tcpload = std::fs::canonicalize(env!("CARGO_BIN_EXE_tcpload")).unwrap();
    let me = std::process::id();
    for (pid, role, flag) in [(client_pid, "client", "--connect"), (server_pid, "server", "--listen")] {
        let p = process(&live.records, pid);
        announced_first(&live.records, pid);
        assert_eq!(p["comm"], "tcpload", "{p}");
        assert_eq!(p["exe"].as_str(), tcpload.to_str(), "{p}");
        // `ip netns exec` execs tcpload: the test is the parent.
        assert_eq!(p["ppid"], me, "{p}");
        let cmdline: Vec<&str> = p["cmdline"].as_array().expect("a command line").iter().map(|a| a.as_str().unwrap()).collect();
        assert_eq!(cmdline[1], role, "{p}");
        let at = cmdline.iter().position(|a| *a == flag).unwrap_or_else(|| panic!("{flag} in {p}"));
        assert_eq!(cmdline[at + 1], endpoint, "{p}");
        assert_eq!((&p["uid"], &p["user"]), (&Value::from(0), &Value::from("root")), "{p}");
        let own_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let own_cgroup = own_cgroup.lines().find_map(|l| l.strip_prefix("0::")).expect("a cgroup v2 line");
        assert_eq!(p["cgroup"], own_cgroup, "the test's children share its cgroup: {p}");
    }
    let namespaces: Vec<&Value> = of_type(&live.records, "netns");
    let ours: Vec<&&Value> = namespaces.iter().filter(|n| n["netns"] == ns.inode()).collect();
    assert_eq!(ours.len(), 1, "{namespaces:?}");
    assert_eq!(ours[0]["port_range"], serde_json::json!([41000, 41999]));
    let first_in_ns = live.records.iter().position(|r| r["type"] != "netns" && r["netns"] == ns.inode()).unwrap();
    let announced = live.records.iter().position(|r| r["type"] == "netns" && r["netns"] == ns.inode()).unwrap();
    assert!(announced < first_in_ns);

    // The processes are gone now; the recording still names them, as the live run did.
    let replayed = replay(&file, &[]);
    replayed.assert_read();
    let strip = |v: &Value| {
        let mut v = v.clone();
        let o = v.as_object_mut().unwrap();
        o.remove("time");
        o.remove("ts_ns");
        v
    };
    for pid in [client_pid, server_pid] {
        assert_eq!(strip(process(&replayed.records, pid)), strip(process(&live.records, pid)));
        announced_first(&replayed.records, pid);
    }
    let replayed_ns: Vec<&Value> = of_type(&replayed.records, "netns").into_iter().filter(|n| n["netns"] == ns.inode()).collect();
    assert_eq!(replayed_ns.len(), 1);
    assert_eq!(replayed_ns[0]["port_range"], serde_json::json!([41000, 41999]));

    // A replay that keeps only the server's side announces the server, not the client.
    let narrowed = replay(&file, &["--lport", "64201"]);
    narrowed.assert_read();
    assert_eq!(strip(process(&narrowed.records, server_pid)), strip(process(&live.records, server_pid)));
    assert!(
        !narrowed.records.iter().any(|r| r["type"] == "process" && r["pid"] == client_pid),
        "the client owns none of the replayed records"
    );
}
