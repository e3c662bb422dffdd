//! Recordings end to end, against the real kernel: `portrace record` next to a live
//! `portrace --format json` on the same traffic, then `portrace replay` of the recording.
//! A recording replays to the transitions the live run printed, field by field; one
//! killed with SIGKILL while traffic still flows replays up to the cut, with a warning
//! naming where it was cut; one whose disk fills up stops by itself, says so, and keeps
//! what it wrote; one ended by `--count` carries its end record and describes itself.
//!
//! Each test creates its own network namespace and runs tcpload servers and clients in
//! it. Their listening ports are in 64000-64099, on the address 127.64.0.1 that no other
//! test uses, and every portrace filters on both, so no other traffic on the machine (other
//! tests' included) can reach these runs. These tests need root and run one at a time.

use std::collections::BTreeMap;
use std::time::Duration;

use portrace_tests::tcpload::WAIT;
use portrace_tests::tracefile_helpers::{
    by_connection, portrace, replay, rfc3339_us, Recorder, Replay, TempDir, Tmpfs,
};
use portrace_tests::{privileged, tcpload, Closer, Netns, Portrace, Run, Tcpload};
use serde_json::Value;

/// The listening address of every server here: a loopback address of its own.
const ADDR: &str = "127.64.0.1";
/// How long to wait for the records that finished traffic must produce.
const RECORDS_TIMEOUT: Duration = Duration::from_secs(20);
/// How far apart two portrace processes may see the same transition. Each attaches its
/// own program, and each program reads the clock itself when the kernel runs it, one
/// after the other on the same CPU; a few microseconds apart usually, more when an
/// interrupt comes in between.
const SAME_EVENT_NS: i64 = 5_000_000;

fn endpoint(port: u16) -> String {
    format!("{ADDR}:{port}")
}

/// A filter selecting this test's traffic only.
fn filter(ports: &[u16]) -> Vec<String> {
    let mut args = vec!["--addr".to_string(), ADDR.to_string()];
    for p in ports {
        args.push("--port".into());
        args.push(p.to_string());
    }
    args
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The fields of a transition that two runs of portrace must agree on exactly: all of
/// them but the socket id (each run numbers its sockets) and the times (each run's
/// program reads the clock itself), which [`assert_same_event`] compares.
const TIMED: [&str; 4] = ["socket", "ts_ns", "time", "prev_state_us"];

/// The fields naming the task on the CPU, which two runs may see differently for an
/// orphan's `FIN_WAIT2 -> TIME_WAIT` (see [`races_the_peers_fin`]).
const TASK: [&str; 2] = ["pid", "comm"];

/// Whether `t` is an orphan's `FIN_WAIT2 -> TIME_WAIT`: the peer's FIN can reach the
/// timewait socket on one CPU while the connection is handed over to it on another. Each
/// run's hand-over reads the timewait socket's state at its own moment, so one run may read
/// TIME_WAIT already and report the move with the hand-over's task, while the other still
/// reads FIN_WAIT2 and reports the move from the FIN's CPU, with that CPU's task. Both are
/// the same kernel event, microseconds apart (docs/kernel-programs.md).
fn races_the_peers_fin(t: &Value) -> bool {
    t["oldstate"] == "FIN_WAIT2" && t["newstate"] == "TIME_WAIT"
}

/// Panics unless `live` and `replayed` are the same kernel event as each run saw it.
fn assert_same_event(live: &Value, replayed: &Value, context: &dyn Fn() -> String) {
    let obj = |v: &Value| v.as_object().expect("a record is an object").clone();
    let (l, r) = (obj(live), obj(replayed));
    let keys = |m: &serde_json::Map<String, Value>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&l), keys(&r), "the same fields in the same order\n{}", context());
    let task_may_differ = races_the_peers_fin(live) && races_the_peers_fin(replayed);
    for (key, value) in &l {
        let skipped = TIMED.contains(&key.as_str()) || (task_may_differ && TASK.contains(&key.as_str()));
        if !skipped {
            assert_eq!(value, &r[key], "field {key:?} differs:\n  live   {live}\n  replay {replayed}\n{}", context());
        }
    }
    let ts = |v: &Value| v["ts_ns"].as_i64().expect("ts_ns");
    let dt = ts(live) - ts(replayed);
    assert!(dt.abs() <= SAME_EVENT_NS, "ts_ns {dt} ns apart:\n  live   {live}\n  replay {replayed}\n{}", context());
    let time = |v: &Value| rfc3339_us(v["time"].as_str().expect("time"));
    let dtime = time(live) - time(replayed);
    assert!(
        dtime.abs() <= SAME_EVENT_NS / 1000 + 100,
        "time {dtime} us apart:\n  live   {live}\n  replay {replayed}\n{}",
        context()
    );
    match (live["prev_state_us"].as_f64(), replayed["prev_state_us"].as_f64()) {
        (None, None) => {}
        (Some(a), Some(b)) => assert!(
            (a - b).abs() * 1000.0 <= 2.0 * SAME_EVENT_NS as f64,
            "prev_state_us {a} vs {b}:\n  live   {live}\n  replay {replayed}\n{}",
            context()
        ),
        _ => panic!("prev_state_us known in one run only:\n  live   {live}\n  replay {replayed}\n{}", context()),
    }
}

/// The largest difference between the two runs' `ts_ns` of the same events.
fn max_skew(pairs: &[(&Value, &Value)]) -> i64 {
    pairs.iter().map(|(a, b)| (a["ts_ns"].as_i64().unwrap() - b["ts_ns"].as_i64().unwrap()).abs()).max().unwrap_or(0)
}

/// How many transitions of a run one lost hit can take away: its own, and the TIME_WAIT
/// the timeline derives from it when it was a connection's move to a timewait socket.
const SHOWN_PER_LOST: u64 = 2;

/// What two runs that reported losses must still agree on: per connection, the
/// transitions one run shows and the other does not are no more than the other run's
/// losses can explain, and every transition both show comes in the same order. (Which hits
/// the kernel skips differs from program to program, so two runs lose different ones.)
/// Without `complete`, the replay is of a recording cut short, and the live run's
/// transitions after the cut are not counted against it.
fn assert_within_losses(live: &[&Value], replayed: &[&Value], lost: (u64, u64), complete: bool, context: &dyn Fn() -> String) {
    let (live_conns, _) = by_connection(live);
    let (replay_conns, _) = by_connection(replayed);
    let states = |t: &Value| (t["oldstate"].as_str().unwrap_or("").to_string(), t["newstate"].as_str().unwrap_or("").to_string());
    let flat = |sockets: &Vec<(u64, Vec<&Value>)>| sockets.iter().flat_map(|(_, ts)| ts.iter().map(|t| states(t))).collect::<Vec<_>>();
    let (mut live_only, mut replay_only) = (0u64, 0u64);
    for (key, sockets) in &replay_conns {
        let shown = flat(sockets);
        let seen = live_conns.get(key).map(flat).unwrap_or_default();
        // The longest run of `shown` found in order in `seen`, taken greedily: each replayed
        // transition is matched to the next live one with the same states.
        let mut at = 0;
        for t in &shown {
            match seen[at..].iter().position(|l| l == t) {
                Some(skip) => {
                    live_only += skip as u64;
                    at += skip + 1;
                }
                None => replay_only += 1,
            }
        }
        if complete {
            live_only += (seen.len() - at) as u64;
        }
    }
    if complete {
        for (key, sockets) in &live_conns {
            if !replay_conns.contains_key(key) {
                live_only += flat(sockets).len() as u64;
            }
        }
    }
    let (live_lost, replay_lost) = lost;
    eprintln!("with losses reported ({live_lost} live, {replay_lost} recorded): {live_only} transitions shown live only, {replay_only} replayed only");
    assert!(live_only <= SHOWN_PER_LOST * replay_lost, "{live_only} transitions seen live are missing from the replay, more than its {replay_lost} losses explain\n{}", context());
    assert!(replay_only <= SHOWN_PER_LOST * live_lost, "{replay_only} replayed transitions are missing from the live run, more than its {live_lost} losses explain\n{}", context());
}

/// Checks that every connection of `replayed` is a connection of `live` with the same
/// transitions, field by field, in the same order: all of them when `complete`, else a
/// prefix of them (a recording cut short). Returns the matched pairs.
fn assert_replay_matches<'a>(
    live: &[&'a Value],
    replayed: &[&'a Value],
    complete: bool,
    context: &dyn Fn() -> String,
) -> Vec<(&'a Value, &'a Value)> {
    let (live_conns, live_unbound) = by_connection(live);
    let (replay_conns, replay_unbound) = by_connection(replayed);
    if complete {
        assert_eq!(
            live_conns.keys().collect::<Vec<_>>(),
            replay_conns.keys().collect::<Vec<_>>(),
            "the same connections\n{}",
            context()
        );
        assert_eq!(live_unbound.len(), replay_unbound.len(), "the same unbound connects\n{}", context());
    }
    let mut pairs = Vec::new();
    let mut ids: BTreeMap<u64, u64> = BTreeMap::new();
    for (key, sockets) in &replay_conns {
        let Some(live_sockets) = live_conns.get(key) else {
            panic!("connection {key:?} (socket {}) was replayed but not seen live\n{}", sockets[0].0, context());
        };
        if complete {
            assert_eq!(sockets.len(), live_sockets.len(), "connection {key:?}: as many socket ids\n{}", context());
        } else {
            assert!(sockets.len() <= live_sockets.len(), "connection {key:?}: more socket ids\n{}", context());
        }
        for ((replay_id, ts), (live_id, lts)) in sockets.iter().zip(live_sockets) {
            if let Some(other) = ids.insert(*live_id, *replay_id) {
                panic!("live socket {live_id} is replayed as both {other} and {replay_id}\n{}", context());
            }
            if complete {
                assert_eq!(ts.len(), lts.len(), "connection {key:?}: as many transitions\n{}", context());
            } else {
                assert!(ts.len() <= lts.len(), "connection {key:?}: more transitions replayed than seen\n{}", context());
            }
            for (r, l) in ts.iter().zip(lts) {
                assert_same_event(l, r, context);
                pairs.push((*l, *r));
            }
        }
    }
    // A connect recorded before its port was bound, and nothing more of its socket: it is
    // one of the live run's, a `CLOSE -> SYN_SENT` of the same moment.
    for r in replay_unbound {
        let found = live.iter().find(|l| {
            l["sport"] == 0
                && l["oldstate"] == r["oldstate"]
                && l["newstate"] == r["newstate"]
                && (l["ts_ns"].as_i64().unwrap() - r["ts_ns"].as_i64().unwrap()).abs() <= SAME_EVENT_NS
        });
        let l = found.unwrap_or_else(|| panic!("unbound {r} was replayed but not seen live\n{}", context()));
        assert_same_event(l, r, context);
    }
    pairs
}

fn summary_of(live: &Run, replayed: &Replay) -> String {
    format!(
        "live portrace {:?}: {} records, stderr:\n{}\nreplay: {} records, stderr:\n{}",
        live.args,
        live.records.len(),
        live.stderr,
        replayed.records.len(),
        replayed.finished.stderr
    )
}

/// The sum of the `count`s of the lost records.
fn lost(records: &[Value]) -> u64 {
    records.iter().filter(|r| r["type"] == "lost").map(|r| r["count"].as_u64().unwrap_or(0)).sum()
}

#[test]
fn a_recording_replays_to_the_transitions_the_live_run_printed() {
    privileged!();
    let ns = Netns::create();
    let load = tcpload!();
    let dir = TempDir::new();
    let file = dir.file("round-trip.ptr");
    let (active, passive, refused) = (64001, 64002, 64003);
    let args = filter(&[active, passive, refused]);
    let mut live = Portrace::start(&strs(&args));
    let recorder = Recorder::start(&file, &strs(&args));

    // Traffic with a bit of everything: clients that close first (TIME_WAIT), servers
    // that close first (CLOSE_WAIT, LAST_ACK), connections refused (reasons and errors).
    const N: usize = 60;
    let server_a = load.server(&ns, &endpoint(active), N, Closer::Client);
    let server_b = load.server(&ns, &endpoint(passive), N, Closer::Server);
    let client_a = load.spawn_client(&ns, &endpoint(active), N, 3, Closer::Client, false);
    let client_b = load.spawn_client(&ns, &endpoint(passive), N, 3, Closer::Server, false);
    load.client_refused(&ns, &endpoint(refused), 5);
    Tcpload::finish_client(client_a, N);
    Tcpload::finish_client(client_b, N);
    server_a.wait_success(WAIT);
    server_b.wait_success(WAIT);
    // Per connection: 5 client and 5 server transitions; 2 per listener; 2 per refusal.
    let expected = 2 * N * 10 + 2 * 2 + 5 * 2;
    live.wait_for_transitions(expected, RECORDS_TIMEOUT);
    // The recorder writes each drain (10 to 80 ms apart); give it as long as the live run had.
    std::thread::sleep(Duration::from_millis(200));
    let recorded = recorder.stop();
    let live = live.stop();
    live.assert_clean();
    assert!(recorded.status.success(), "portrace record failed:\n{}", recorded.stderr);

    let replayed = replay(&file, &[]);
    replayed.assert_read();
    let context = || {
        format!(
            "{}\nlost: {} live, {} recorded\n--- record stderr\n{}",
            summary_of(&live, &replayed),
            lost(&live.records),
            lost(&replayed.records),
            recorded.stderr
        )
    };
    let live_ts: Vec<&Value> = live.records.iter().filter(|r| r["type"] == "transition").collect();
    let replay_ts = replayed.transitions();
    let summary = format!("portrace: {} transitions in ", replay_ts.len());
    assert!(recorded.stderr.lines().any(|l| l.starts_with(&summary)), "the recorder's summary counts what was replayed\n{}", context());
    let losses = (lost(&live.records), lost(&replayed.records));
    let lossless = losses == (0, 0);
    if lossless {
        // Both runs saw the traffic whole (the timeline may add a transition or two of its
        // own to a connection whose TIME_WAIT it followed on two sockets: both runs then do).
        assert!(live_ts.len() >= expected, "{}", context());
        let pairs = assert_replay_matches(&live_ts, &replay_ts, true, &context);
        assert_eq!(pairs.len() + by_connection(&replay_ts).1.len(), replay_ts.len());
        eprintln!("{} transitions matched; the two runs' clocks for the same events were at most {} ns apart", pairs.len(), max_skew(&pairs));
    } else {
        assert_within_losses(&live_ts, &replay_ts, losses, true, &context);
    }

    // The records around the transitions: the same start host and kernel, an end record
    // whose totals are the replay's own, no warning.
    let (ls, rs) = (&live.records[0], &replayed.records[0]);
    assert_eq!((&ls["host"], &ls["kernel"]), (&rs["host"], &rs["kernel"]));
    let end = replayed.end().unwrap_or_else(|| panic!("no end record\n{}", context()));
    assert_eq!(end["transitions"].as_u64(), Some(replay_ts.len() as u64), "{end}");
    if lossless {
        assert_eq!(end["by_transition"], live.end().unwrap()["by_transition"]);
    }
    assert_eq!(replayed.records.last(), Some(end), "the end record comes last");
    assert!(!replayed.finished.stderr.contains("warning"), "{}", replayed.finished.stderr);

    // Replayed with a narrower filter: what the live run showed of it, no more. Local port
    // `passive` keeps the listener and its children, not the clients, whose connects are
    // first seen without a local port and then bound to another.
    // (With losses, what the whole replay showed of it.)
    let narrowed = replay(&file, &["--lport", &passive.to_string()]);
    narrowed.assert_read();
    let reference = if lossless { &live_ts } else { &replay_ts };
    let want: Vec<&Value> = reference.iter().copied().filter(|t| t["sport"] == passive).collect();
    assert!(want.len() as u64 >= (2 + N as u64 * 5).saturating_sub(SHOWN_PER_LOST * losses.1));
    let got = narrowed.transitions();
    assert_eq!(got.len(), want.len(), "{}", narrowed.finished.stderr);
    assert_replay_matches(&want, &got, true, &context);
    let refusals = replay(&file, &["--state", "SYN_SENT", "--rport", &refused.to_string()]);
    refusals.assert_read();
    let got = refusals.transitions();
    if lossless {
        assert_eq!(got.len(), 5 * 2);
    } else {
        assert!(got.len() <= 5 * 2 && got.len() as u64 + SHOWN_PER_LOST * losses.1 >= 5 * 2);
    }
    assert!(got.iter().filter(|t| t["newstate"] == "CLOSE").all(|t| t["reason"] == "refused" && t["error"] == "ECONNREFUSED"));

    // The recording says where and how it was made.
    let info = portrace(&["replay", "--info", &file.display().to_string()]);
    info.assert_success();
    let text = info.stdout.join("\n");
    let host = ls["host"].as_str().unwrap();
    assert!(text.contains(&format!("host:         {host}")), "{text}");
    assert!(text.contains(&format!("filter:       --port {active} --port {passive} --port {refused} --addr {ADDR}/32")), "{text}");
    assert!(text.contains("tracepoint:   sock:inet_sock_set_state offsets: skaddr "), "{text}");
    let counted = format!("{} transitions, {} transitions lost", replay_ts.len(), lost(&replayed.records));
    assert!(text.contains(&counted), "{text}");
    drop(ns);
}

#[test]
fn a_recording_killed_mid_way_replays_up_to_the_cut() {
    privileged!();
    let ns = Netns::create();
    let load = tcpload!();
    let dir = TempDir::new();
    let file = dir.file("killed.ptr");
    let port = 64010;
    let args = filter(&[port]);
    let mut live = Portrace::start(&strs(&args));
    let recorder = Recorder::start(&file, &strs(&args));

    // Enough connections that the client is still connecting when the recorder dies (the
    // recording reaches 64 KiB after some 130 of them).
    const N: usize = 4_000;
    let server = load.server(&ns, &endpoint(port), N, Closer::Client);
    let client = load.spawn_client(&ns, &endpoint(port), N, 1, Closer::Client, false);
    let size = recorder.wait_for_bytes(64 << 10, RECORDS_TIMEOUT);
    assert!(size >= 64 << 10, "the recording did not grow past 64 KiB ({size} bytes)");
    let recorder_pid = recorder.pid();
    let killed = recorder.kill();
    let still_connecting = client_running(client.pid());
    assert_eq!(killed.status.code(), None, "killed by a signal: {:?}", killed.status);
    eprintln!("recorder {recorder_pid} killed at {} bytes", killed.bytes);
    Tcpload::finish_client(client, N);
    server.wait_success(WAIT);
    assert!(still_connecting, "the traffic was over before the recorder was killed: make N larger");
    live.wait_for_transitions(N * 10 + 2, Duration::from_secs(60));
    let live = live.stop();
    live.assert_clean();

    let replayed = replay(&file, &[]);
    replayed.assert_read();
    let context = || summary_of(&live, &replayed);
    // The cut is reported where it is, with how much was read, and the exit status is 0.
    let stderr = &replayed.finished.stderr;
    let warning = stderr
        .lines()
        .find(|l| l.starts_with("portrace: warning: "))
        .unwrap_or_else(|| panic!("no warning about the cut\n{}", context()));
    // Killed between two writes, the file ends after its last block; killed in the middle
    // of one, inside it.
    let at = number_after(warning, "cut at byte ");
    assert!(at <= killed.bytes, "{warning}: the file has {} bytes", killed.bytes);
    if at < killed.bytes {
        assert!(warning.contains("bytes into the block that starts there"), "{warning}");
    }
    let n_records = number_after(warning, "read ");
    // Alerts are computed from the records, not read: not counted.
    let printed = replayed.records.iter().filter(|r| r["type"] != "alert").count();
    assert_eq!(n_records as usize, printed - 1, "{warning}: every record read was printed (and the start)");
    assert!(replayed.end().is_none(), "a cut recording has no end record\n{}", context());

    let live_ts: Vec<&Value> = live.records.iter().filter(|r| r["type"] == "transition").collect();
    let replay_ts = replayed.transitions();
    assert!(replay_ts.len() > 500, "{} transitions before the cut\n{}", replay_ts.len(), context());
    assert!(replay_ts.len() < live_ts.len(), "the live run saw more than the recording");
    let losses = (lost(&live.records), lost(&replayed.records));
    if losses == (0, 0) {
        let pairs = assert_replay_matches(&live_ts, &replay_ts, false, &context);
        eprintln!("{} of {} live transitions replayed before the cut, clocks at most {} ns apart", replay_ts.len(), live_ts.len(), max_skew(&pairs));
    } else {
        assert_within_losses(&live_ts, &replay_ts, losses, false, &context);
    }

    // The same recording cut inside a block, as a write cut short leaves it.
    let bytes = std::fs::read(&file).expect("the recording");
    let torn = dir.file("torn.ptr");
    std::fs::write(&torn, &bytes[..bytes.len() - 7]).expect("writing the torn copy");
    let replayed_torn = replay(&torn, &[]);
    replayed_torn.assert_read();
    let warning = replayed_torn.finished.stderr.lines().find(|l| l.contains("warning")).unwrap_or_default().to_string();
    assert!(warning.contains("bytes into the block that starts there"), "{warning}");
    let torn_ts = replayed_torn.transitions();
    // The last block may hold records other than transitions (a loss check, a cgroup), so
    // it is the records read that the cut must shorten.
    let read = |r: &Replay| r.records.iter().filter(|r| r["type"] != "alert").count();
    assert!(read(&replayed_torn) < read(&replayed), "the torn copy reads fewer records");
    assert!(torn_ts.len() <= replay_ts.len() && !torn_ts.is_empty());
    assert_eq!(torn_ts[..], replay_ts[..torn_ts.len()], "the torn copy reads as a prefix");
    drop(ns);
}

/// Whether process `pid` is still running (not exited, not a zombie).
fn client_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()) != Some("Z"))
        .unwrap_or(false)
}

/// The number right after `marker` in `text`.
fn number_after(text: &str, marker: &str) -> u64 {
    let rest = &text[text.find(marker).unwrap_or_else(|| panic!("{marker:?} not in {text:?}")) + marker.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or_else(|_| panic!("no number after {marker:?} in {text:?}"))
}

#[test]
fn a_full_disk_stops_the_recording_and_keeps_what_was_written() {
    privileged!();
    let ns = Netns::create();
    let load = tcpload!();
    let disk = Tmpfs::mount("256k");
    let file = disk.file("full.ptr");
    let port = 64020;
    let args = filter(&[port]);
    let recorder = Recorder::start(&file, &strs(&args));
    const N: usize = 3_000;
    let server = load.server(&ns, &endpoint(port), N, Closer::Client);
    load.client(&ns, &endpoint(port), N, 2, Closer::Client);
    server.wait_success(WAIT);
    // The recorder stops by itself, promptly: it does not wait for a signal, nor spin on
    // the full disk.
    let stopped = recorder.wait(Duration::from_secs(10));
    assert_eq!(stopped.status.code(), Some(1), "{}", stopped.stderr);
    let error = stopped.stderr.lines().last().unwrap_or_default();
    assert!(error.starts_with("portrace: writing the recording: "), "{}", stopped.stderr);
    assert!(error.contains("No space left on device"), "{error}");
    assert!(error.contains("portrace replay "), "{error}");
    assert!(stopped.stderr.starts_with("portrace: "), "the summary is printed: {}", stopped.stderr);
    let safe = number_after(error, "the recording stops there, and the ");

    let replayed = replay(&file, &[]);
    replayed.assert_read();
    let warning = replayed.finished.stderr.lines().find(|l| l.contains("warning")).unwrap_or_default().to_string();
    assert!(warning.contains("the recording is cut at byte"), "{warning}");
    let printed = replayed.records.iter().filter(|r| r["type"] != "alert").count() as u64;
    assert_eq!(printed - 1, safe, "every record written before the disk filled is read (alerts are computed, not read)");
    let transitions = replayed.transitions();
    assert!(transitions.len() > 100, "{} transitions\n--- record stderr\n{}", transitions.len(), stopped.stderr);
    // What was kept is the start of the traffic, whole connections first.
    assert_eq!(transitions[0]["newstate"], "LISTEN");
    drop(ns);
}

#[test]
fn a_recording_ended_by_count_is_complete_and_reports() {
    privileged!();
    let ns = Netns::create();
    let load = tcpload!();
    let dir = TempDir::new();
    let file = dir.file("count.ptr");
    let port = 64030;
    let mut args = filter(&[port]);
    args.extend(["--count".to_string(), "12".to_string(), "--compress".to_string()]);
    let recorder = Recorder::start(&file, &strs(&args));
    let server = load.server(&ns, &endpoint(port), 5, Closer::Server);
    load.client(&ns, &endpoint(port), 5, 1, Closer::Server);
    server.wait_success(WAIT);
    let stopped = recorder.wait(Duration::from_secs(20));
    assert!(stopped.status.success(), "{}", stopped.stderr);

    let replayed = replay(&file, &[]);
    replayed.assert_read();
    assert_eq!(replayed.transitions().len(), 12);
    let end = replayed.end().expect("an end record");
    assert_eq!(end["transitions"], 12);
    assert!(!replayed.finished.stderr.contains("warning"), "{}", replayed.finished.stderr);

    // An existing recording is not overwritten without --force.
    let again = portrace(&["record", "-o", &file.display().to_string(), "--port", "64031"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(again.stderr.contains("already exists: choose another name, or add --force"), "{}", again.stderr);
    assert_eq!(replay(&file, &[]).transitions().len(), 12, "the recording is intact");

    // Not a recording: an error naming the file and the offset.
    let json = dir.file("live.json");
    std::fs::write(&json, "{\"type\":\"start\",\"schema\":1}\n").unwrap();
    let refused = portrace(&["replay", &json.display().to_string()]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        refused.stderr.contains(&format!("{}: at byte 0: this is not a portrace recording: it looks like JSON", json.display())),
        "{}",
        refused.stderr
    );
    drop(ns);
}

/// The comparison of runs that reported losses can fail: a transition one run lacks must
/// be explained by the other run's losses.
#[test]
fn runs_with_losses_differ_only_by_what_their_losses_explain() {
    let t = |socket: u64, old: &str, new: &str| {
        serde_json::json!({"socket": socket, "netns": 1, "sport": 40000, "dport": 64001, "oldstate": old, "newstate": new})
    };
    let client = [
        ("CLOSE", "SYN_SENT"),
        ("SYN_SENT", "ESTABLISHED"),
        ("ESTABLISHED", "FIN_WAIT1"),
        ("FIN_WAIT1", "FIN_WAIT2"),
        ("FIN_WAIT2", "TIME_WAIT"),
    ];
    let live: Vec<Value> = client.iter().map(|(o, n)| t(1, o, n)).collect();
    // The recording lacks FIN_WAIT1 -> FIN_WAIT2 (socket ids differ between runs).
    let replayed: Vec<Value> = client.iter().filter(|e| e.0 != "FIN_WAIT1").map(|(o, n)| t(7, o, n)).collect();
    let (live, replayed): (Vec<&Value>, Vec<&Value>) = (live.iter().collect(), replayed.iter().collect());
    let none = || String::new();
    assert_within_losses(&live, &replayed, (0, 1), true, &none);
    assert_within_losses(&live, &replayed, (0, 1), false, &none);
    let unexplained = std::panic::catch_unwind(|| assert_within_losses(&live, &replayed, (1, 0), true, &none));
    assert!(unexplained.is_err(), "a transition missing from the replay is explained only by the recording's losses");
    // Out of order is not a loss: the replayed transitions must come in the live order.
    let swapped: Vec<Value> = [client[1], client[0], client[2], client[3], client[4]].iter().map(|(o, n)| t(7, o, n)).collect();
    let swapped: Vec<&Value> = swapped.iter().collect();
    let reordered = std::panic::catch_unwind(|| assert_within_losses(&live, &swapped, (0, 1), true, &none));
    assert!(reordered.is_err(), "a transition replayed out of order is one the live run lacks, which its losses (none) do not explain");
}
