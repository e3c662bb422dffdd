//! Alerts end to end, against the real kernel: each detector fires on a real scenario in
//! a network namespace the test creates, in the live JSON stream (`"type":"alert"`), and
//! the same alerts come out of `portrace report --format json` on a recording of the same
//! run; ordinary traffic raises none, with the default thresholds.
//!
//! Every portrace here runs live with `--format json` next to a `portrace record` with the
//! same filter (`--addr 127.77.0.1`, an address no other test uses), so nothing outside
//! the test's namespace reaches them. Thresholds that would make a test slow are lowered
//! with flags (CLOSE_WAIT after 2 s, TIME_WAIT by an absolute count), and the report is run
//! with the same flags. These tests need root and run one at a time.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use portrace_tests::tcpload::WAIT;
use portrace_tests::tracefile_helpers::{portrace, Recorder, TempDir};
use portrace_tests::{privileged, tcpload, Closer, Netns, Portrace, Run, Tcpload};
use serde_json::Value;

const ADDR: &str = "127.77.0.1";
/// How long a detector may take to fire once its scenario ran (CLOSE_WAIT: 2 s threshold,
/// checked every second of trace time).
const ALERT_TIMEOUT: Duration = Duration::from_secs(20);

fn endpoint(port: u16) -> String {
    format!("{ADDR}:{port}")
}

/// A live portrace and a recorder of the same traffic, with the same alert flags.
struct Traced {
    live: Portrace,
    recorder: Recorder,
    file: PathBuf,
    flags: Vec<String>,
    _dir: TempDir,
}

impl Traced {
    fn start(flags: &[&str]) -> Traced {
        let dir = TempDir::new();
        let file = dir.file("alerts.ptr");
        let mut args = vec!["--addr", ADDR];
        args.extend_from_slice(flags);
        let live = Portrace::start(&args);
        // The recording stores records only; alerts are recomputed by `report`.
        let recorder = Recorder::start(&file, &["--addr", ADDR]);
        Traced { live, recorder, file, flags: flags.iter().map(|s| s.to_string()).collect(), _dir: dir }
    }

    /// Waits until the live run printed an alert of `kind`; panics with what it printed
    /// if none came.
    fn wait_alert(&mut self, kind: &str) {
        let found = self.live.wait_until(ALERT_TIMEOUT, |records| alerts(records, kind).next().is_some());
        if !found {
            let records = self.live.records().to_vec();
            panic!("no {kind} alert within {ALERT_TIMEOUT:?}; records:\n{}", lines(&records));
        }
    }

    /// Stops both, reports on the recording with the same flags, and returns the live run
    /// and the report's JSON document.
    fn finish(self) -> (Run, Value) {
        let live = self.live.stop();
        let stopped = self.recorder.stop();
        assert!(stopped.status.success(), "the recorder failed: {}\n{}", stopped.status, stopped.stderr);
        let file = self.file.display().to_string();
        let mut args = vec!["report", file.as_str(), "--format", "json"];
        args.extend(self.flags.iter().map(String::as_str).filter(|f| *f != "--fail-on-alert"));
        let finished = portrace(&args);
        finished.assert_success();
        let report: Value = serde_json::from_str(finished.stdout.join("\n").trim())
            .unwrap_or_else(|e| panic!("report is not JSON ({e}): {:?}", finished.stdout));
        (live, report)
    }
}

fn lines(records: &[Value]) -> String {
    records.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("\n")
}

fn alerts<'a>(records: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    records.iter().filter(move |r| r["type"] == "alert" && r["kind"] == kind)
}

/// The subjects of the alerts of `kind`.
fn subjects<'a>(alerts: impl Iterator<Item = &'a Value>) -> BTreeSet<String> {
    alerts.map(|a| a["subject"].as_str().expect("an alert has a subject").to_string()).collect()
}

/// The alerts of `kind` in the report's `alerts` array.
fn reported<'a>(report: &'a Value, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    report["alerts"].as_array().expect("the report has an alerts array").iter().filter(move |a| a["kind"] == kind)
}

/// The latest evidence of `subject` in the report's `alert_subjects`.
fn latest<'a>(report: &'a Value, kind: &str, subject: &str) -> &'a Value {
    report["alert_subjects"]
        .as_array()
        .expect("the report has alert_subjects")
        .iter()
        .find(|s| s["kind"] == kind && s["subject"] == subject)
        .map(|s| &s["latest"])
        .unwrap_or_else(|| panic!("no {kind} subject {subject:?} in {}", report["alert_subjects"]))
}

/// Panics unless the live run and the report raised alerts of `kind` about the same
/// subjects, and at least `want`; returns the live alerts of that kind.
fn assert_same_alerts(live: &Run, report: &Value, kind: &str, want: &str) -> Vec<Value> {
    let live_alerts: Vec<Value> = alerts(&live.records, kind).cloned().collect();
    let live_subjects = subjects(live_alerts.iter());
    let report_subjects = subjects(reported(report, kind));
    assert!(
        live_subjects.contains(want),
        "no live {kind} alert about {want:?}: {live_subjects:?}\n{}\n--- stderr\n{}",
        lines(&live.records),
        live.stderr
    );
    assert_eq!(live_subjects, report_subjects, "live and report disagree on {kind} alerts\nreport: {}", report["alerts"]);
    live_alerts
}

/// Checks the fields every alert record has.
fn assert_alert_shape(a: &Value) {
    for key in ["time", "kind", "severity", "subject", "summary"] {
        assert!(a[key].is_string(), "alert without a string {key:?}: {a}");
    }
    assert!(a["ts_ns"].is_u64(), "alert without ts_ns: {a}");
    assert!(a["evidence"].is_object(), "alert without evidence: {a}");
    assert!(a.get("process").is_some() && a.get("pid").is_some() && a.get("netns").is_some(), "{a}");
}

#[test]
fn a_scanner_connecting_to_50_closed_ports_is_a_scan() {
    privileged!();
    let ns = Netns::create();
    let mut traced = Traced::start(&[]);
    // The scanner waits at its start line after its exec, so portrace has read who it is
    // (executable, command line, parent) well before it scans and exits.
    let mut scanner = tcpload!().spawn_client_with(
        &ns,
        &endpoint(20_000),
        50,
        1,
        Closer::Client,
        &["--sweep", "--expect", "refused", "--wait-stdin"],
    );
    let pid = scanner.pid();
    std::thread::sleep(Duration::from_millis(300));
    Tcpload::go(&mut scanner);
    Tcpload::finish_client(scanner, 50);
    traced.wait_alert("scan");
    let (live, report) = traced.finish();
    live.assert_clean();
    let subject = format!("pid {pid}");
    let scans = assert_same_alerts(&live, &report, "scan", &subject);
    assert_eq!(scans.len(), 1, "one scan alert, not a flood: {scans:?}");
    let a = &scans[0];
    assert_alert_shape(a);
    assert_eq!(a["pid"], pid, "{a}");
    assert_eq!(a["comm"], "tcpload", "{a}");
    assert_eq!(a["severity"], "critical", "{a}");
    let e = &a["evidence"];
    assert!(e["targets"].as_u64().unwrap() >= 10, "{a}");
    assert_eq!(e["failure_rate"].as_f64(), Some(1.0), "every connect was refused: {a}");
    let sample = e["sample"].as_array().expect("a sample of targets");
    assert!(sample.len() >= 10 && sample.iter().all(|t| t.as_str().unwrap().starts_with("127.77.0.1:20")), "{a}");
    // The alert names the process in full, live and from the recording.
    let last = latest(&report, "scan", &subject);
    let tcpload = std::fs::canonicalize(env!("CARGO_BIN_EXE_tcpload")).unwrap();
    for p in [&a["process"], &last["process"]] {
        assert_eq!(p["exe"].as_str(), tcpload.to_str(), "{p}");
        assert_eq!(p["ppid"], std::process::id(), "the test started it: {p}");
        assert_eq!(p["user"], "root", "{p}");
        let cmdline: Vec<&str> = p["cmdline"].as_array().expect("a command line").iter().filter_map(|a| a.as_str()).collect();
        assert!(cmdline.contains(&"--sweep") && cmdline.contains(&"client"), "{p}");
    }
    // By the end, the evidence names all 50 targets.
    assert_eq!(last["evidence"]["targets"], 50, "{last}");
    assert_eq!(last["evidence"]["connects_failed"], 50, "{last}");
    // One refusal per destination is no handshake trouble.
    assert_eq!(alerts(&live.records, "handshake_trouble").count(), 0, "{}", lines(&live.records));
    assert!(live.stderr.contains("ALERT CRITICAL scan [pid"), "the summary lists it:\n{}", live.stderr);
}

#[test]
fn a_server_that_never_closes_its_sockets_leaks_close_wait() {
    privileged!();
    let ns = Netns::create();
    let mut traced = Traced::start(&["--close-wait-after", "2s"]);
    let load = tcpload!();
    let server = load.server_with(&ns, &endpoint(65_001), 5, Closer::Client, &["--keep-open"]);
    let server_pid = server.pid();
    load.client(&ns, &endpoint(65_001), 5, 1, Closer::Client);
    traced.wait_alert("close_wait_leak");
    // The alert fires when the oldest socket is 2 s in CLOSE_WAIT; the next check, a
    // second later, sees all five there.
    std::thread::sleep(Duration::from_millis(1_200));
    let (live, report) = traced.finish();
    drop(server);
    live.assert_clean();
    let subject = format!("pid {server_pid}");
    let leaks = assert_same_alerts(&live, &report, "close_wait_leak", &subject);
    let a = &leaks[0];
    assert_alert_shape(a);
    assert_eq!(a["pid"], server_pid, "{a}");
    assert!(a["evidence"]["oldest_ns"].as_u64().unwrap() >= 2_000_000_000, "{a}");
    assert!(a["summary"].as_str().unwrap().contains("the application is not closing them"), "{a}");
    let last = latest(&report, "close_wait_leak", &subject);
    assert_eq!(last["evidence"]["sockets"], 5, "all five sockets by the end: {last}");
}

#[test]
fn many_short_connections_to_one_peer_pile_up_time_wait() {
    privileged!();
    let ns = Netns::create();
    let flags = ["--time-wait-count", "200"];
    let mut traced = Traced::start(&flags);
    let load = tcpload!();
    const N: usize = 300;
    let server = load.server(&ns, &endpoint(65_002), N, Closer::Client);
    load.client(&ns, &endpoint(65_002), N, 2, Closer::Client);
    server.wait_success(WAIT);
    traced.wait_alert("time_wait_pileup");
    let (live, report) = traced.finish();
    live.assert_clean();
    // The clients' source address: loopback's primary address, whatever they connect to.
    let subject = format!("peer {} from 127.0.0.1 (netns {})", endpoint(65_002), ns.inode());
    let piles = assert_same_alerts(&live, &report, "time_wait_pileup", &subject);
    let a = &piles[0];
    assert_alert_shape(a);
    let e = &a["evidence"];
    assert!(e["time_wait"].as_u64().unwrap() >= 200, "{a}");
    assert_eq!(e["threshold"], 200, "{a}");
    assert!(e["rate_per_s"].as_f64().unwrap() > 0.0, "{a}");
    assert!(e["exhaustion_ns"].is_u64(), "a time to exhaustion at that rate: {a}");
    assert!(e["port_range"].as_str().unwrap().contains('-'), "{a}");
    // The range is the namespace's own (its fixture sets 1024-65000, not the host's),
    // live and from the recording, which keeps the namespace's details.
    let netns = format!("netns {}", ns.inode());
    assert_eq!((e["port_range"].as_str(), e["port_range_source"].as_str()), (Some("1024-65000"), Some(netns.as_str())), "{a}");
    let from_report = reported(&report, "time_wait_pileup").next().unwrap();
    assert_eq!(from_report["evidence"]["port_range"], e["port_range"], "{from_report}");
    assert_eq!(from_report["evidence"]["port_range_source"], e["port_range_source"], "{from_report}");
    // Ordinary in every other way: no other kind of alert but the new listener.
    let others: Vec<&Value> = live
        .records
        .iter()
        .filter(|r| r["type"] == "alert" && r["kind"] != "time_wait_pileup" && r["kind"] != "new_listener")
        .collect();
    assert!(others.is_empty(), "{others:?}");
}

#[test]
fn a_listener_opened_mid_trace_is_a_new_listener() {
    privileged!();
    let ns = Netns::create();
    let mut traced = Traced::start(&[]);
    let load = tcpload!();
    let server = load.server(&ns, &endpoint(65_003), 1, Closer::Client);
    let server_pid = server.pid();
    load.client(&ns, &endpoint(65_003), 1, 1, Closer::Client);
    server.wait_success(WAIT);
    traced.wait_alert("new_listener");
    let (live, report) = traced.finish();
    live.assert_clean();
    let subject = format!("listener {} (netns {})", endpoint(65_003), ns.inode());
    let new = assert_same_alerts(&live, &report, "new_listener", &subject);
    assert_eq!(new.len(), 1, "{new:?}");
    let a = &new[0];
    assert_alert_shape(a);
    assert_eq!((&a["pid"], &a["comm"]), (&Value::from(server_pid), &Value::from("tcpload")), "{a}");
    assert_eq!(a["netns"], ns.inode(), "{a}");
    assert_eq!(a["evidence"]["address"], endpoint(65_003), "{a}");
}

#[test]
fn a_connection_owned_by_a_program_outside_the_allowlist_alerts() {
    privileged!();
    let ns = Netns::create();
    let load = tcpload!();
    let flags = ["--expect", "nginx:65004", "--fail-on-alert"];
    let mut traced = Traced::start(&flags);
    let server = load.server(&ns, &endpoint(65_004), 2, Closer::Client);
    let server_pid = server.pid();
    load.client(&ns, &endpoint(65_004), 2, 1, Closer::Client);
    server.wait_success(WAIT);
    traced.wait_alert("unexpected_owner");
    let (live, report) = traced.finish();
    assert_eq!(live.status.code(), Some(3), "--fail-on-alert exits 3\n{}", live.stderr);
    let subject = format!("pid {server_pid} serving port 65004");
    let unexpected = assert_same_alerts(&live, &report, "unexpected_owner", &subject);
    let a = unexpected.iter().find(|a| a["subject"] == subject.as_str()).unwrap();
    assert_alert_shape(a);
    assert_eq!(a["pid"], server_pid, "{a}");
    assert_eq!(a["evidence"]["allowed"], serde_json::json!(["nginx"]), "{a}");
    assert_eq!(a["evidence"]["port"], 65_004, "{a}");
    // The report fails the same way.
    let file = report_status_on_a_recording(&flags);
    assert_eq!(file, Some(3));

    // Expected, the same traffic raises no unexpected owner.
    let mut quiet = Portrace::start(&["--addr", ADDR, "--expect", "tcpload:65004"]);
    let server = load.server(&ns, &endpoint(65_004), 2, Closer::Client);
    load.client(&ns, &endpoint(65_004), 2, 1, Closer::Client);
    server.wait_success(WAIT);
    quiet.wait_for_transitions(2 * 10 + 1, ALERT_TIMEOUT);
    let run = quiet.stop();
    run.assert_clean();
    assert_eq!(alerts(&run.records, "unexpected_owner").count(), 0, "{}", lines(&run.records));
}

/// Records a tiny run with an unexpected owner and returns the exit status of `report
/// --fail-on-alert` on it.
fn report_status_on_a_recording(flags: &[&str]) -> Option<i32> {
    let ns = Netns::create();
    let load = tcpload!();
    let dir = TempDir::new();
    let file = dir.file("fail.ptr");
    let recorder = Recorder::start(&file, &["--addr", ADDR]);
    let server = load.server(&ns, &endpoint(65_006), 1, Closer::Client);
    load.client(&ns, &endpoint(65_006), 1, 1, Closer::Client);
    server.wait_success(WAIT);
    std::thread::sleep(Duration::from_millis(200));
    let stopped = recorder.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let path = file.display().to_string();
    let mut args = vec!["report", path.as_str(), "--alerts-only"];
    args.extend_from_slice(flags);
    let finished = portrace(&args);
    assert!(finished.stdout.join("\n").contains("unexpected_owner"), "{:?}\n{}", finished.stdout, finished.stderr);
    finished.status.code()
}

#[test]
fn connects_refused_by_one_destination_are_handshake_trouble() {
    privileged!();
    let ns = Netns::create();
    let mut traced = Traced::start(&[]);
    let client = tcpload!().spawn_client_with(&ns, &endpoint(20_100), 8, 1, Closer::Client, &["--expect", "refused"]);
    let pid = client.pid();
    Tcpload::finish_client(client, 8);
    traced.wait_alert("handshake_trouble");
    let (live, report) = traced.finish();
    live.assert_clean();
    let subject = format!("destination {} (netns {})", endpoint(20_100), ns.inode());
    let trouble = assert_same_alerts(&live, &report, "handshake_trouble", &subject);
    let a = &trouble[0];
    assert_alert_shape(a);
    assert_eq!(a["pid"], pid, "the failing client: {a}");
    assert!(a["evidence"]["refused"].as_u64().unwrap() >= 5, "{a}");
    assert_eq!(alerts(&live.records, "scan").count(), 0, "one destination is no scan: {}", lines(&live.records));
}

#[test]
fn ordinary_traffic_raises_no_alert() {
    privileged!();
    let ns = Netns::create();
    let load = tcpload!();
    const N: usize = 200;
    // Servers older than the trace: in its inventory, not new listeners. One where the
    // clients close first (TIME_WAIT on the client side), one where the server does.
    let a = load.server(&ns, &endpoint(65_005), N, Closer::Client);
    let b = load.server(&ns, &endpoint(65_007), N, Closer::Server);
    let mut traced = Traced::start(&["--fail-on-alert"]);
    let c1 = load.spawn_client(&ns, &endpoint(65_005), N, 2, Closer::Client, false);
    let c2 = load.spawn_client(&ns, &endpoint(65_007), N, 2, Closer::Server, false);
    Tcpload::finish_client(c1, N);
    Tcpload::finish_client(c2, N);
    a.wait_success(WAIT);
    b.wait_success(WAIT);
    // Every connection's transitions (5 per side), the listeners' closes.
    traced.live.wait_for_transitions(2 * N * 10 + 2, ALERT_TIMEOUT);
    let (live, report) = traced.finish();
    live.assert_clean();
    let raised: Vec<&Value> = live.records.iter().filter(|r| r["type"] == "alert").collect();
    assert!(raised.is_empty(), "ordinary traffic raised alerts: {raised:?}");
    assert_eq!(report["alerts"], serde_json::json!([]), "{}", report["alerts"]);
    assert!(live.stderr.contains("alerts: none"), "{}", live.stderr);
}
