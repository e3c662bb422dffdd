//! The flight recorder end to end, against the real kernel: `portrace record --dir` with
//! a short `--rotate` while tcpload traffic runs in a network namespace the test creates.
//! The files it keeps are few (`--keep`), each reads whole on its own, and together they
//! hold every transition of their spans exactly once, sockets open across a rotation
//! listed in the next file's inventory; a recorder killed with SIGKILL at any moment,
//! a rotation included, leaves whole finished files and an open one readable up to its
//! last complete block; a full disk stops it with an error and leaves the files written
//! readable; a directory it must not use is refused with a message naming it.
//!
//! The servers listen on 127.65.0.1, an address no other test uses, on ports 64500-64599,
//! and every recorder filters on both. These tests need root and run one at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use portrace_tests::tcpload::WAIT;
use portrace_tests::tracefile_helpers::{portrace, replay, Recorder, Replay, TempDir, Tmpfs};
use portrace_tests::{privileged, tcpload, seq, Closer, Netns, Portrace, Tcpload};
use serde_json::Value;

const ADDR: &str = "127.65.0.1";

fn endpoint(port: u16) -> String {
    format!("{ADDR}:{port}")
}

/// The recorder's arguments: this test's traffic only (`ports`), a file a second.
fn args(ports: &[u16], keep: usize, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec!["--addr".into(), ADDR.into()];
    for p in ports {
        a.extend(["--port".to_string(), p.to_string()]);
    }
    a.extend(["--rotate".to_string(), "1s".to_string(), "--keep".to_string(), keep.to_string()]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The recorder's files in `dir` by stage: finished (`.ptr`), open (`.ptr.part`), half
/// created (hidden `.tmp`), each sorted by name (which is by time).
#[derive(Debug, Default)]
struct Files {
    finished: Vec<PathBuf>,
    open: Vec<PathBuf>,
    creating: Vec<PathBuf>,
    other: Vec<String>,
}

fn files(dir: &Path) -> Files {
    let mut f = Files::default();
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let regular = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file());
        if !regular {
            f.other.push(name);
        } else if name.starts_with("portrace-") && name.ends_with(".ptr") {
            f.finished.push(path);
        } else if name.starts_with("portrace-") && name.ends_with(".ptr.part") {
            f.open.push(path);
        } else if name.starts_with(".portrace-") && name.ends_with(".ptr.tmp") {
            f.creating.push(path);
        } else {
            f.other.push(name);
        }
    }
    f
}

/// Replays a finished file and checks it is whole: exit 0, no warning, an end record.
fn replay_whole(path: &Path) -> Replay {
    let r = replay(path, &[]);
    r.assert_read();
    assert!(
        !r.finished.stderr.contains("warning"),
        "{} is not whole:\n{}",
        path.display(),
        r.finished.stderr
    );
    assert!(r.end().is_some(), "{} has no end record", path.display());
    r
}

/// The times `replay --info` gives for a file's start and end (RFC 3339), the end `None`
/// when the file has no end record.
fn span(path: &Path) -> (String, Option<String>) {
    let info = portrace(&["replay", "--info", &path.display().to_string()]);
    assert!(info.status.success(), "replay --info {}: {}", path.display(), info.stderr);
    let field = |key: &str| -> String {
        let line = info.stdout.iter().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key} in {:?}", info.stdout));
        line[key.len()..].trim().split(' ').next().unwrap_or_default().to_string()
    };
    let end = field("ended:");
    (field("started:"), (end != "not").then_some(end))
}

fn edge(t: &Value) -> String {
    format!("{}->{}", t["oldstate"].as_str().unwrap(), t["newstate"].as_str().unwrap())
}

#[test]
fn rotation_keeps_a_bounded_window_of_whole_files_that_hold_every_transition_once() {
    privileged!();
    let ns = Netns::create();
    let load = tcpload!();
    let tmp = TempDir::new();
    let dir = tmp.path().join("flight");
    // Things of the operator's in the directory stay as they are.
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), b"keep me").unwrap();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"not the recorder's").unwrap();
    // A link planted under the name of the oldest possible recording.
    let link = dir.join("portrace-19700101T000000.000000Z.ptr");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let (port, held_port) = (64500, 64501);
    let recorder = Recorder::start_dir(&dir, &strs(&args(&[port, held_port], 3, &[])));
    // An independent witness: a live run with the same filter, printing JSON.
    let filter = ["--addr", ADDR, "--port", "64500", "--port", "64501"];
    let live = Portrace::start(&filter);

    // A listener opened before every file that will be kept, a connection held open from
    // the first span to the last, and paced connections over some six spans.
    const N: usize = 110;
    let held_server = load.server(&ns, &endpoint(held_port), 1, Closer::Client);
    let mut held = load.spawn_client_with(&ns, &endpoint(held_port), 1, 1, Closer::Client, &["--hold"]);
    held.wait_line("connected 1", Duration::from_secs(10));
    let server = load.server(&ns, &endpoint(port), N, Closer::Server);
    let client = load.spawn_client_with(&ns, &endpoint(port), N, 1, Closer::Server, &["--rate", "20"]);
    // While it records: never more than 3 finished files and the one being written.
    let mut most = (0, 0);
    let started = Instant::now();
    let deadline = started + WAIT;
    let mut client = Some(client);
    let mut held = Some(held);
    let mut read_open = false;
    while let Some(c) = client.take() {
        assert!(Instant::now() < deadline, "the client did not finish within {WAIT:?}");
        let f = files(&dir);
        most = (most.0.max(f.finished.len()), most.1.max(f.open.len()));
        // The file being written reads, while it is written, up to its last block.
        if !read_open && started.elapsed() >= Duration::from_millis(2500) {
            if let Some(open) = f.open.first() {
                let r = replay(open, &[]);
                r.assert_read();
                assert!(r.end().is_none() && r.records.iter().any(|x| x["type"] == "socket"), "{}", open.display());
                read_open = true;
            }
        }
        // The held connection ends in one of the last spans, while the traffic goes on.
        if started.elapsed() >= Duration::from_millis(4500) {
            if let Some(mut h) = held.take() {
                Tcpload::go(&mut h);
                Tcpload::finish_client(h, 1);
            }
        }
        if client_running(c.pid()) {
            client = Some(c);
            std::thread::sleep(Duration::from_millis(20));
        } else {
            Tcpload::finish_client(c, N);
        }
    }
    if let Some(mut h) = held.take() {
        Tcpload::go(&mut h);
        Tcpload::finish_client(h, 1);
    }
    server.wait_success(WAIT);
    held_server.wait_success(WAIT);
    // Let the last transitions reach the recorder, then stop it as a service manager would.
    std::thread::sleep(Duration::from_millis(300));
    let stopped = recorder.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let live = live.stop();
    live.assert_clean();
    assert!(most.0 <= 3 && most.1 <= 1, "at most 3 finished files and 1 open at a time: {most:?}");
    assert!(read_open, "the open file was read while recording");

    let f = files(&dir);
    assert_eq!(f.finished.len(), 3, "{f:?}\n{}", stopped.stderr);
    assert!(f.open.is_empty() && f.creating.is_empty(), "{f:?}");
    // The operator's file and the planted link are untouched, and the link, not a
    // recording of the recorder's, does not count among the 3 kept.
    assert_eq!(f.other, ["notes.txt", "portrace-19700101T000000.000000Z.ptr"], "{f:?}");
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert_eq!(std::fs::read(&victim).unwrap(), b"not the recorder's");
    assert_eq!(std::fs::read(dir.join("notes.txt")).unwrap(), b"keep me");
    let kept = f.finished;

    // Spans follow each other: each file starts when the one before ended.
    let spans: Vec<(String, Option<String>)> = kept.iter().map(|p| span(p)).collect();
    for pair in spans.windows(2) {
        assert_eq!(pair[0].1.as_deref(), Some(pair[1].0.as_str()), "spans {spans:?}");
    }

    // Each file whole; each socket's transitions, across the files, form one unbroken
    // chain that starts in a file either from CLOSE / LISTEN (a new socket) or from the
    // state the file's inventory lists it in; no transition appears twice.
    let mut chains: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut last_state: BTreeMap<u64, String> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut lost = 0;
    let mut open_after: Option<BTreeSet<u64>> = None;
    for (i, path) in kept.iter().enumerate() {
        let r = replay_whole(path);
        let inventory: BTreeMap<u64, String> = r
            .records
            .iter()
            .filter(|x| x["type"] == "socket")
            .map(|s| (s["socket"].as_u64().unwrap(), s["state"].as_str().unwrap().to_string()))
            .collect();
        if i == 0 {
            // The listener and the held connection were opened before the first kept file.
            assert!(
                inventory.values().any(|s| s == "LISTEN"),
                "{}: the listener is in the inventory: {inventory:?}",
                path.display()
            );
            assert!(
                inventory.values().filter(|s| *s == "ESTABLISHED").count() >= 2,
                "{}: the held connection's two sockets are in the inventory: {inventory:?}",
                path.display()
            );
        }
        if let Some(open) = &open_after {
            let listed: BTreeSet<u64> = inventory.keys().copied().collect();
            assert_eq!(&listed, open, "{}'s inventory lists exactly the sockets open at its start", path.display());
        }
        for (id, state) in &inventory {
            if let Some(before) = last_state.get(id) {
                assert_eq!(before, state, "socket {id}: the inventory of {} matches its last transition", path.display());
            }
        }
        lost += r.records.iter().filter(|x| x["type"] == "lost").map(|x| x["count"].as_u64().unwrap()).sum::<u64>();
        let end_count = r.end().unwrap()["transitions"].as_u64().unwrap();
        let transitions = r.transitions();
        assert_eq!(end_count as usize, transitions.len());
        for t in transitions {
            let id = t["socket"].as_u64().unwrap();
            assert!(seen.insert((id, edge(t), t["ts_ns"].as_u64().unwrap())), "transition recorded twice: {t}");
            let old = t["oldstate"].as_str().unwrap();
            match last_state.get(&id).or(inventory.get(&id)) {
                Some(state) => assert_eq!(state, old, "socket {id}: a transition missing before {t} in {}", path.display()),
                None => assert!(
                    ["CLOSE", "LISTEN"].contains(&old),
                    "socket {id} appears in {} from nowhere: {t}",
                    path.display()
                ),
            }
            last_state.insert(id, t["newstate"].as_str().unwrap().to_string());
            chains.entry(id).or_default().push(edge(t));
        }
        for id in inventory.keys() {
            last_state.entry(*id).or_insert_with(|| inventory[id].clone());
        }
        open_after = Some(last_state.iter().filter(|(_, s)| *s != "CLOSE").map(|(id, _)| *id).collect());
    }
    assert_eq!(lost, 0, "no loss at 20 connections a second");
    // What the kept files hold is what the live run saw in their spans: the same
    // transitions (by ports and edge; each run numbers its sockets itself), as many of
    // each, within the spans less a margin for the two runs' clocks at the edges.
    let first = replay_whole(&kept[0]);
    let last = replay_whole(kept.last().unwrap());
    let ts = |v: &Value| v["ts_ns"].as_u64().expect("ts_ns");
    let margin = 20_000_000;
    let window = (ts(&first.records[0]) + margin, ts(last.end().unwrap()) - margin);
    let key = |t: &Value| (t["sport"].as_u64().unwrap(), t["dport"].as_u64().unwrap(), edge(t));
    let count = |ts_list: Vec<&Value>| {
        let mut m: BTreeMap<(u64, u64, String), usize> = BTreeMap::new();
        for t in ts_list.into_iter().filter(|t| (window.0..=window.1).contains(&ts(t))) {
            *m.entry(key(t)).or_default() += 1;
        }
        m
    };
    let replayed: Vec<Replay> = kept.iter().map(|p| replay_whole(p)).collect();
    let in_files = count(replayed.iter().flat_map(Replay::transitions).collect());
    let seen_live = count(live.records.iter().filter(|r| r["type"] == "transition").collect());
    let total: usize = seen_live.values().sum();
    assert!(total > 100, "{total} live transitions in the kept spans");
    assert_eq!(in_files, seen_live, "the kept files hold what the live run saw in their spans");
    // The connections made within the kept spans are whole: the paced ones as the
    // workload makes them, the listener closed when the server was done.
    let clients = chains.values().filter(|c| c[0] == "CLOSE->SYN_SENT").collect::<Vec<_>>();
    let children = chains.values().filter(|c| c[0] == "LISTEN->SYN_RECV").collect::<Vec<_>>();
    for c in &clients {
        assert_eq!(c.as_slice(), seq::CLIENT_PASSIVE, "a client connection");
    }
    for c in &children {
        assert_eq!(c.as_slice(), seq::CHILD_ACTIVE, "an accepted connection");
    }
    // Three spans of a second, at 20 a second: some 60 connections, whatever the phase.
    assert!(
        (20..=N).contains(&clients.len()) && clients.len() == children.len(),
        "{} client and {} server connections in the kept files",
        clients.len(),
        children.len()
    );
    assert!(chains.values().any(|c| c.last().map(String::as_str) == Some("LISTEN->CLOSE")), "the listener's close");
    // The held connection: opened before the kept files, ended in the last one.
    assert!(
        chains.values().any(|c| c.first().map(String::as_str) == Some("ESTABLISHED->FIN_WAIT1")),
        "the held connection's close: {chains:?}"
    );
    drop(ns);
}

/// Whether process `pid` is still running (not exited, not a zombie).
fn client_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()) != Some("Z"))
        .unwrap_or(false)
}

/// When to kill the recorder.
#[derive(Clone, Copy, Debug)]
enum Moment {
    /// This long after it started.
    After(Duration),
    /// Right around a rotation: as soon as a new file is being created, or failing to
    /// catch that instant, as soon as a second file is there.
    Rotating,
    /// As soon as the first file is finished (just renamed).
    JustFinished,
}

#[test]
fn a_recorder_killed_at_any_moment_leaves_whole_files_and_a_readable_open_one() {
    privileged!();
    let ns = Netns::create();
    let load = tcpload!();
    let port = 64510;
    const N: usize = 20_000;
    let server = load.server(&ns, &endpoint(port), N, Closer::Client);
    let client = load.spawn_client_with(&ns, &endpoint(port), N, 2, Closer::Client, &["--rate", "800"]);
    let moments = [
        Moment::After(Duration::from_millis(300)),
        Moment::Rotating,
        Moment::JustFinished,
        Moment::After(Duration::from_millis(2500)),
    ];
    for (i, moment) in moments.into_iter().enumerate() {
        let tmp = TempDir::new();
        let dir = tmp.path().join("flight");
        let recorder = Recorder::start_dir(&dir, &strs(&args(&[port], 3, &["--compress"])));
        let started = Instant::now();
        let deadline = started + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "moment {moment:?} never came");
            let f = files(&dir);
            let now = match moment {
                Moment::After(d) => started.elapsed() >= d,
                Moment::Rotating => !f.creating.is_empty() || f.open.len() + f.finished.len() >= 2,
                Moment::JustFinished => !f.finished.is_empty(),
            };
            if now {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let killed = recorder.kill();
        assert_eq!(killed.status.code(), None, "killed by the signal: {:?}", killed.status);
        assert!(client_running(client.pid()), "the traffic ran out before kill {i}: make N larger");
        let f = files(&dir);
        eprintln!("killed at {moment:?}: {f:?}");
        assert!(f.open.len() <= 1 && f.finished.len() <= 3 && f.other.is_empty(), "{f:?}");
        assert!(!f.open.is_empty() || !f.finished.is_empty(), "a file was visible: {f:?}");
        for path in &f.finished {
            replay_whole(path);
        }
        for path in &f.open {
            // Up to its last complete block: exit 0, its start, and a cut warning.
            let r = replay(path, &[]);
            r.assert_read();
            assert!(r.end().is_none(), "{} has no end record", path.display());
            assert!(
                r.finished.stderr.contains("warning") && r.finished.stderr.contains("cut at byte"),
                "{}: {}",
                path.display(),
                r.finished.stderr
            );
            let report = portrace(&["report", &path.display().to_string()]);
            assert!(report.status.success(), "report of {}: {}", path.display(), report.stderr);
        }
        {
            // A recorder started again in the same directory removes what a killed one left
            // half created, and keeps the open file it left, counted among those kept.
            let before = files(&dir);
            let again = Recorder::start_dir(&dir, &strs(&args(&[port], 3, &[])));
            std::thread::sleep(Duration::from_millis(300));
            let stopped = again.stop();
            assert!(stopped.status.success(), "{}", stopped.stderr);
            let after = files(&dir);
            assert!(after.creating.is_empty(), "{after:?}");
            for path in &before.open {
                assert!(!after.finished.contains(path), "{after:?}");
            }
            assert!(after.finished.len() + after.open.len() <= 3, "{after:?}");
            for path in &after.finished {
                replay_whole(path);
            }
        }
    }
    drop(client);
    drop(server);
    drop(ns);
}

#[test]
fn max_size_starts_a_new_file_and_bounds_the_directory() {
    privileged!();
    let ns = Netns::create();
    let load = tcpload!();
    let tmp = TempDir::new();
    let dir = tmp.path().join("flight");
    let port = 64530;
    let a = ["--addr", ADDR, "--port", "64530", "--rotate", "1h", "--keep", "2", "--max-size", "64K"];
    let recorder = Recorder::start_dir(&dir, &a);
    const N: usize = 1_500;
    let server = load.server(&ns, &endpoint(port), N, Closer::Client);
    let client = load.spawn_client_with(&ns, &endpoint(port), N, 1, Closer::Client, &["--rate", "1000"]);
    let mut most = 0u64;
    let deadline = Instant::now() + WAIT;
    while client_running(client.pid()) {
        assert!(Instant::now() < deadline, "the client did not finish within {WAIT:?}");
        most = most.max(recorder.bytes());
        std::thread::sleep(Duration::from_millis(10));
    }
    Tcpload::finish_client(client, N);
    server.wait_success(WAIT);
    std::thread::sleep(Duration::from_millis(200));
    let stopped = recorder.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    // Some 15,000 transitions, about 700 KB: ten files or so by size, an hour by time.
    let f = files(&dir);
    assert_eq!(f.finished.len(), 2, "{f:?}");
    assert!(f.open.is_empty() && f.creating.is_empty() && f.other.is_empty(), "{f:?}");
    // A file is closed at the first drain past 64K: at 1000 connections a second, a
    // drain adds a few KB. The directory never held much more than 3 files' worth.
    for path in &f.finished {
        let size = std::fs::metadata(path).unwrap().len();
        assert!(size < (64 << 10) + (32 << 10), "{}: {size} bytes", path.display());
        replay_whole(path);
    }
    assert!(most < 3 * ((64 << 10) + (32 << 10)), "the directory held {most} bytes at most");
    let (first, _) = span(&f.finished[0]);
    let (second, _) = span(&f.finished[1]);
    assert!(first < second, "{first} {second}");
    drop(ns);
}

#[test]
fn a_full_disk_stops_the_recorder_and_keeps_the_files_written_readable() {
    privileged!();
    let ns = Netns::create();
    let load = tcpload!();
    let disk = Tmpfs::mount("256k");
    let dir = disk.path().join("flight");
    let port = 64520;
    let recorder = Recorder::start_dir(&dir, &strs(&args(&[port], 50, &[])));
    const N: usize = 2_000;
    let server = load.server(&ns, &endpoint(port), N, Closer::Client);
    let client = load.spawn_client_with(&ns, &endpoint(port), N, 1, Closer::Client, &["--rate", "300"]);
    // The recorder stops by itself, promptly, once the disk is full.
    let stopped = recorder.wait(Duration::from_secs(30));
    assert_eq!(stopped.status.code(), Some(1), "{}", stopped.stderr);
    let error = stopped.stderr.lines().last().unwrap_or_default();
    assert!(error.starts_with("portrace: writing the flight recording: "), "{}", stopped.stderr);
    assert!(error.contains("No space left on device"), "{error}");
    assert!(error.contains(&format!("the finished files in {} are whole", dir.display())), "{error}");
    assert!(error.contains("reads up to its last complete block"), "{error}");
    drop(client);
    drop(server);

    let f = files(&dir);
    eprintln!("{f:?}");
    assert!(!f.finished.is_empty(), "at least one file was finished before the disk filled: {f:?}");
    assert!(f.open.len() <= 1 && f.creating.is_empty() && f.other.is_empty(), "{f:?}");
    let mut transitions = 0;
    for path in &f.finished {
        transitions += replay_whole(path).transitions().len();
    }
    for path in &f.open {
        let r = replay(path, &[]);
        r.assert_read();
        transitions += r.transitions().len();
    }
    assert!(transitions > 100, "{transitions} transitions kept\n{}", stopped.stderr);
    drop(ns);
}

#[test]
fn a_directory_it_must_not_use_is_refused_with_its_name() {
    privileged!();
    let tmp = TempDir::new();
    let run = |dir: &Path, extra: &[&str]| {
        let mut a = vec!["record".to_string(), "--dir".to_string(), dir.display().to_string()];
        a.extend(extra.iter().map(|s| s.to_string()));
        portrace(&strs(&a))
    };
    let shown = |p: &Path| p.display().to_string();

    let keep0 = run(&tmp.path().join("d"), &["--keep", "0"]);
    assert_eq!(keep0.status.code(), Some(2), "{}", keep0.stderr);
    assert!(keep0.stderr.contains("--keep 0 would keep no finished recording"), "{}", keep0.stderr);
    let both = portrace(&["record", "-o", &shown(&tmp.path().join("x.ptr")), "--dir", &shown(tmp.path())]);
    assert_eq!(both.status.code(), Some(2), "{}", both.stderr);
    assert!(both.stderr.contains("cannot be used with"), "{}", both.stderr);
    let short = run(&tmp.path().join("d"), &["--rotate", "100ms"]);
    assert_eq!(short.status.code(), Some(2), "{}", short.stderr);
    assert!(short.stderr.contains("at least 1s"), "{}", short.stderr);

    // A symbolic link, even to a good directory: refused, nothing written through it.
    let real = tmp.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let refused = run(&link, &["--duration", "1s"]);
    assert_eq!(refused.status.code(), Some(1), "{}", refused.stderr);
    assert!(refused.stderr.contains(&format!("{} is a symbolic link", shown(&link))), "{}", refused.stderr);
    assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0, "nothing written through the link");

    // A regular file.
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let refused = run(&file, &["--duration", "1s"]);
    assert_eq!(refused.status.code(), Some(1), "{}", refused.stderr);
    assert!(refused.stderr.contains(&format!("{} is not a directory (a regular file)", shown(&file))), "{}", refused.stderr);
    assert_eq!(std::fs::read(&file).unwrap(), b"x");

    // A read-only file system.
    let ro = Tmpfs::mount_with("ro,size=64k");
    let refused = run(ro.path(), &["--duration", "1s"]);
    assert_eq!(refused.status.code(), Some(1), "{}", refused.stderr);
    assert!(
        refused.stderr.contains(&format!("{} is not writable (Read-only file system", shown(ro.path()))),
        "{}",
        refused.stderr
    );

    // A missing directory is created, private; a missing parent is refused.
    let orphan = tmp.path().join("no").join("such");
    let refused = run(&orphan, &["--duration", "1s"]);
    assert_eq!(refused.status.code(), Some(1), "{}", refused.stderr);
    assert!(refused.stderr.contains("its parent directory is missing too"), "{}", refused.stderr);
}
