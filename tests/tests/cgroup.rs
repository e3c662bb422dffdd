//! Containers and services, against the real kernel: every transition of a socket carries
//! its owner's cgroup v2 id, learned in the owner's own system call (also the transitions
//! the kernel makes in a softirq that runs in another process's task), named by a `cgroup`
//! record with the cgroup's path; `--cgroup` keeps a cgroup's whole subtree and drops the
//! rest, in the kernel and in a replay; `--netns` keeps one network namespace of two; bad
//! values are refused with sentences that say what is wrong.
//!
//! The test makes its own cgroups (`portrace-test-PID` and a child below it, in the cgroup2
//! hierarchy, wherever it is mounted) and its own network namespaces; a guard moves every
//! process out and removes the cgroups. These tests need root and run one at a time.

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use portrace_tests::tcpload::WAIT;
use portrace_tests::tracefile_helpers::{replay, Recorder, TempDir};
use portrace_tests::{privileged, Closer, Netns, Portrace, Proc, Tcpload};
use serde_json::Value;

const ADDR: &str = "127.64.9.1";
const RECORDS_TIMEOUT: Duration = Duration::from_secs(20);
/// Connections per workload: per connection 5 client and 5 server transitions, and the
/// listener's 2.
const N: usize = 3;
const PER_WORKLOAD: usize = N * 10 + 2;

/// The cgroup2 mount point, from /proc/self/mountinfo.
fn cgroup2_mount() -> PathBuf {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    info.lines()
        .find_map(|l| {
            let (fields, rest) = l.split_once(" - ")?;
            (rest.split(' ').next() == Some("cgroup2")).then(|| PathBuf::from(fields.split(' ').nth(4).unwrap()))
        })
        .expect("a cgroup2 hierarchy is mounted (these tests need one)")
}

/// A cgroup `portrace-test-PID` with a child `child`, removed on drop after every process
/// still in them is moved back to the hierarchy's root.
struct TestCgroup {
    mount: PathBuf,
    parent: PathBuf,
    child: PathBuf,
}

impl TestCgroup {
    fn create() -> TestCgroup {
        let mount = cgroup2_mount();
        let parent = mount.join(format!("portrace-test-{}", std::process::id()));
        let child = parent.join("child");
        let cg = TestCgroup { mount, parent, child };
        // A run killed earlier with this same pid may have left them.
        cg.remove();
        fs::create_dir(&cg.parent).unwrap_or_else(|e| panic!("mkdir {}: {e}", cg.parent.display()));
        fs::create_dir(&cg.child).unwrap_or_else(|e| panic!("mkdir {}: {e}", cg.child.display()));
        cg
    }

    /// Moves process `pid` (all its threads) into the cgroup at `dir`.
    fn enter(dir: &Path, pid: u32) {
        fs::write(dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", dir.display()));
    }

    fn id(dir: &Path) -> u64 {
        fs::metadata(dir).unwrap_or_else(|e| panic!("stat {}: {e}", dir.display())).ino()
    }

    /// The path as portrace shows it: under the mount, starting with `/`.
    fn shown(&self, dir: &Path) -> String {
        format!("/{}", dir.strip_prefix(&self.mount).unwrap().display())
    }

    fn remove(&self) {
        for dir in [&self.child, &self.parent] {
            if !dir.exists() {
                continue;
            }
            for _ in 0..50 {
                let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.split_whitespace() {
                    let _ = fs::write(self.mount.join("cgroup.procs"), pid);
                }
                if fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The cgroup v2 id of this test process's own cgroup.
fn own_cgroup_id(mount: &Path) -> u64 {
    let text = fs::read_to_string("/proc/self/cgroup").unwrap();
    let path = text.lines().find_map(|l| l.strip_prefix("0::")).expect("a cgroup v2 line in /proc/self/cgroup");
    TestCgroup::id(&mount.join(path.trim_start_matches('/')))
}

fn transitions(records: &[Value]) -> Vec<&Value> {
    records.iter().filter(|r| r["type"] == "transition").collect()
}

/// One workload on `port`: a server and a client, each moved into a cgroup (or left in
/// the test's own with `None`) before it makes a socket. Returns their pids once done.
fn workload(load: &Tcpload, ns: &Netns, port: u16, server_in: Option<&Path>, client_in: Option<&Path>) -> (u32, u32) {
    let endpoint = format!("{ADDR}:{port}");
    let mut server: Proc = load.spawn_server_held(ns, &endpoint, N, Closer::Client, &[]);
    if let Some(dir) = server_in {
        TestCgroup::enter(dir, server.pid());
    }
    Tcpload::release_server(&mut server);
    let mut client = load.spawn_client(ns, &endpoint, N, 1, Closer::Client, true);
    if let Some(dir) = client_in {
        TestCgroup::enter(dir, client.pid());
    }
    Tcpload::go(&mut client);
    let pids = (server.pid(), client.pid());
    Tcpload::finish_client(client, N);
    server.wait_success(WAIT);
    pids
}

#[test]
fn every_transition_carries_its_owners_cgroup_even_from_a_softirq() {
    privileged!();
    let cg = TestCgroup::create();
    let ns = Netns::create();
    let load = Tcpload::new(env!("CARGO_BIN_EXE_tcpload"));
    let mut live = Portrace::start(&["--addr", ADDR, "--port", "64901"]);
    // The server in the child cgroup, the client left in the test's own.
    let (server, client) = workload(&load, &ns, 64901, Some(&cg.child), None);
    live.wait_for_transitions(PER_WORKLOAD, RECORDS_TIMEOUT);
    std::thread::sleep(Duration::from_millis(200));
    let live = live.stop();
    live.assert_clean();

    let child_id = TestCgroup::id(&cg.child);
    let own_id = own_cgroup_id(&cg.mount);
    assert_ne!(child_id, own_id);
    let all = transitions(&live.records);
    assert_eq!(all.len(), PER_WORKLOAD, "{all:#?}");
    let mut server_in_others_task = 0;
    for t in &all {
        let owner = t["owner_pid"].as_u64().unwrap_or_else(|| panic!("every owner is known here: {t}"));
        if owner == u64::from(server) {
            assert_eq!(t["owner_cgroup"], child_id, "the server's socket carries the child cgroup: {t}");
            if t["pid"] != server {
                server_in_others_task += 1;
            }
        } else {
            assert_eq!(owner, u64::from(client), "{t}");
            assert_eq!(t["owner_cgroup"], own_id, "the client's socket carries the test's cgroup: {t}");
        }
    }
    // The child sockets' LISTEN->SYN_RECV and SYN_RECV->ESTABLISHED run in a softirq, in the
    // client's task on loopback: their cgroup is still the server's.
    let handshakes: Vec<&&Value> = all
        .iter()
        .filter(|t| t["owner_pid"] == server && t["oldstate"] == "SYN_RECV" && t["newstate"] == "ESTABLISHED")
        .collect();
    assert_eq!(handshakes.len(), N, "{all:#?}");
    assert!(server_in_others_task >= N, "the server's transitions made in other tasks: {server_in_others_task}");

    // Each cgroup is named once, before the first record that carries its id.
    for id in [child_id, own_id] {
        let at = live.records.iter().position(|r| r["type"] == "cgroup" && r["id"] == id).expect("a cgroup record");
        let first = live.records.iter().position(|r| r["owner_cgroup"] == id).unwrap();
        assert!(at < first, "cgroup record at {at}, first record of the cgroup at {first}");
        assert_eq!(live.records.iter().filter(|r| r["type"] == "cgroup" && r["id"] == id).count(), 1);
    }
    let child = live.records.iter().find(|r| r["type"] == "cgroup" && r["id"] == child_id).unwrap();
    assert_eq!(child["path"], cg.shown(&cg.child), "{child}");
}

#[test]
fn cgroup_filter_keeps_the_subtree_in_the_kernel_and_in_a_replay() {
    privileged!();
    let cg = TestCgroup::create();
    let ns = Netns::create();
    let load = Tcpload::new(env!("CARGO_BIN_EXE_tcpload"));
    let dir = TempDir::new();
    let file = dir.file("cgroup.ptr");
    let parent = cg.parent.display().to_string();
    let mut live = Portrace::start(&["--addr", ADDR, "--cgroup", &parent]);
    let recorder = Recorder::start(&file, &["--addr", ADDR]);
    // Inside: both ends in the child cgroup, below the filter's. Outside: both in the test's.
    let inside = workload(&load, &ns, 64911, Some(&cg.child), Some(&cg.child));
    let outside = workload(&load, &ns, 64912, None, None);
    live.wait_for_transitions(PER_WORKLOAD, RECORDS_TIMEOUT);
    std::thread::sleep(Duration::from_millis(300));
    let recorded = recorder.stop();
    let live = live.stop();
    live.assert_clean();
    assert!(recorded.status.success(), "portrace record failed:\n{}", recorded.stderr);

    let child_id = TestCgroup::id(&cg.child);
    let kept = transitions(&live.records);
    assert_eq!(kept.len(), PER_WORKLOAD, "only the inside workload: {kept:#?}");
    for t in &kept {
        assert!(t["owner_pid"] == inside.0 || t["owner_pid"] == inside.1, "{t}");
        assert_eq!(t["owner_cgroup"], child_id, "{t}");
        assert!(t["sport"] == 64911 || t["dport"] == 64911, "{t}");
    }

    // The recording has both workloads; a replay with --cgroup keeps the inside one, by
    // the recorded path (the hierarchy's path or the mount's both name it).
    let everything = replay(&file, &[]);
    everything.assert_read();
    let owners: Vec<u64> = transitions(&everything.records).iter().filter_map(|t| t["owner_pid"].as_u64()).collect();
    assert!(owners.contains(&u64::from(outside.0)) && owners.contains(&u64::from(inside.0)));
    for value in [cg.shown(&cg.parent), parent.clone()] {
        let narrowed = replay(&file, &["--cgroup", &value]);
        narrowed.assert_read();
        let kept = transitions(&narrowed.records);
        assert_eq!(kept.len(), PER_WORKLOAD, "--cgroup {value}: {kept:#?}");
        assert!(kept.iter().all(|t| t["owner_cgroup"] == child_id), "--cgroup {value}");
        let named = narrowed.records.iter().find(|r| r["type"] == "cgroup" && r["id"] == child_id).expect("a cgroup record");
        assert_eq!(named["path"], cg.shown(&cg.child));
    }
    // A sibling path that only starts alike is not below the filter's cgroup.
    let sibling = format!("{}-other", cg.shown(&cg.parent));
    let none = replay(&file, &["--cgroup", &sibling]);
    none.assert_read();
    assert_eq!(transitions(&none.records).len(), 0);
}

#[test]
fn netns_filter_keeps_one_namespace_of_two() {
    privileged!();
    let (one, two) = (Netns::create(), Netns::create());
    let load = Tcpload::new(env!("CARGO_BIN_EXE_tcpload"));
    // A port of each run's own: the first run's connections wait in TIME_WAIT meanwhile,
    // and one that ends during the second run must not count there.
    for (ns_arg, kept_ns, port) in [(one.name().to_string(), &one, 64921), (two.inode().to_string(), &two, 64922)] {
        let port_arg = port.to_string();
        let mut live = Portrace::start(&["--addr", ADDR, "--port", &port_arg, "--netns", &ns_arg]);
        workload(&load, &one, port, None, None);
        workload(&load, &two, port, None, None);
        live.wait_for_transitions(PER_WORKLOAD, RECORDS_TIMEOUT);
        std::thread::sleep(Duration::from_millis(300));
        let live = live.stop();
        live.assert_clean();
        let kept = transitions(&live.records);
        assert_eq!(kept.len(), PER_WORKLOAD, "--netns {ns_arg}: {kept:#?}");
        assert!(kept.iter().all(|t| t["netns"] == kept_ns.inode()), "--netns {ns_arg}: {kept:#?}");
    }
}

#[test]
fn bad_cgroups_and_namespaces_are_refused_with_a_reason() {
    privileged!();
    let cg = TestCgroup::create();
    let missing = cg.parent.join("no-such-child").display().to_string();
    let file = cg.parent.join("cgroup.procs").display().to_string();
    let gone = format!("portrace-no-such-ns-{}", std::process::id());
    let cases: [(&[&str], &str); 5] = [
        (&["--cgroup", &missing], "does not exist"),
        (&["--cgroup", &file], "is not a cgroup v2 directory"),
        (&["--cgroup", "/system.slice/../.."], "may not contain '..'"),
        (&["--netns", "bad/name"], "neither a network namespace's inode number nor a name"),
        (&["--netns", &gone], "no network namespace is named"),
    ];
    for (args, why) in cases {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--duration", "2s"]);
        let (finished, _) = Portrace::run_once(&all, Duration::from_secs(30));
        assert!(!finished.status.success(), "portrace {all:?} should fail");
        assert!(finished.stderr.contains(why), "portrace {all:?}: {why:?} not in:\n{}", finished.stderr);
        assert!(!portrace_tests::portrace::looks_like_panic(&finished.stderr), "{}", finished.stderr);
    }
}
