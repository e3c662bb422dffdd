//! `portrace serve` end to end: the real binary traces a workload whose transitions are
//! known exactly, in a network namespace the test creates, filtered to the test's ports;
//! a real Prometheus server (Debian's `prometheus`, on its own port, with its own data
//! directory, killed at the end) scrapes it every second, and the counters it stored are
//! checked exactly against the workload, the histograms by their counts. promtool lints
//! the exposition; /healthz, an unknown path, a busy port and an address of another host
//! are checked too.
//!
//! These tests need root (eBPF, namespaces) and Prometheus (`cargo xtask setup` installs
//! it), and run one at a time.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use portrace_tests::process::run_bounded;
use portrace_tests::tracefile_helpers::TempDir;
use portrace_tests::tcpload::WAIT;
use portrace_tests::{privileged, tcpload, Closer, Netns, Portrace, Proc};
use serde_json::Value;

/// The service's port, and a port nothing listens on (connections to it are refused).
const PORT: u16 = 65201;
const CLOSED_PORT: u16 = 65202;
/// Connections served (the client closes first), and connections refused.
const N: u64 = 5;
const REFUSED: u64 = 3;
const DEADLINE: Duration = Duration::from_secs(30);
const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";

/// A port free on 127.0.0.1 now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// An HTTP GET: the status code and the body.
fn get(addr: SocketAddr, path: &str, accept: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    // HTTP/1.0: the answer comes whole, never in chunks.
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: {accept}\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(|e| e.to_string())?;
    let text = String::from_utf8(response).map_err(|e| e.to_string())?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("no header end in {text:?}"))?;
    let code = head.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| format!("bad status line {head:?}"))?;
    Ok((code, body.to_string()))
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server of our own, scraping `target` every second; killed (only it, by
/// its pid) and its directory removed on drop.
struct Prometheus {
    addr: SocketAddr,
    proc: Option<Proc>,
    dir: PathBuf,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS).is_file() && Path::new(PROMTOOL).is_file(),
            "{PROMETHEUS} and {PROMTOOL} are needed: `apt-get install prometheus` (cargo xtask setup does)"
        );
        let dir = std::env::temp_dir().join(format!("portrace-serve-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).expect("the Prometheus directory");
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: portrace\n    \
             static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("the Prometheus configuration");
        let mut cmd = Command::new(PROMETHEUS);
        cmd.arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .current_dir(&dir);
        let prometheus = Prometheus { addr, proc: Some(Proc::spawn("prometheus", cmd)), dir };
        let ready = Instant::now();
        while !matches!(get(addr, "/-/ready", "*/*"), Ok((200, _))) {
            assert!(ready.elapsed() < DEADLINE, "Prometheus was not ready within {DEADLINE:?}");
            thread::sleep(Duration::from_millis(100));
        }
        prometheus
    }

    /// The vector a PromQL query returns: each series' labels and value.
    fn query(&self, promql: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let (code, body) = get(self.addr, &format!("/api/v1/query?query={}", encode(promql)), "*/*")
            .unwrap_or_else(|e| panic!("querying Prometheus for {promql}: {e}"));
        assert_eq!(code, 200, "{promql}: {body}");
        let json: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{promql}: {e}: {body}"));
        assert_eq!(json["status"], "success", "{promql}: {body}");
        json["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{promql}: no result in {body}"))
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
                    .unwrap_or_default();
                let value = r["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
                (labels, value)
            })
            .collect()
    }

    /// The single value of `promql`, 0 when it has no series.
    fn value(&self, promql: &str) -> f64 {
        let result = self.query(promql);
        assert!(result.len() <= 1, "{promql} gave several series: {result:?}");
        result.first().map_or(0.0, |(_, v)| *v)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Proc's drop kills (SIGKILL) and reaps the process it started, and only it.
        drop(self.proc.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `portrace serve` with `args`, waited for until /healthz says 200.
fn start_serve(listen: SocketAddr, args: &[&str]) -> Proc {
    let mut cmd = Command::new(Portrace::bin());
    cmd.args(["serve", "--listen", &listen.to_string()]).args(args);
    let serve = Proc::spawn("portrace serve", cmd);
    let started = Instant::now();
    loop {
        match get(listen, "/healthz", "*/*") {
            Ok((200, body)) => {
                assert_eq!(body, "ok\n");
                return serve;
            }
            Ok((503, _)) | Err(_) if started.elapsed() < DEADLINE => thread::sleep(Duration::from_millis(50)),
            other => panic!("/healthz did not become 200 within {DEADLINE:?}: {other:?}"),
        }
    }
}

/// Stops serve with SIGINT (only the process we started) and checks it exited cleanly.
fn stop(serve: Proc) {
    // SAFETY: kill(2) on the pid of our own child.
    unsafe { libc::kill(serve.pid() as libc::pid_t, libc::SIGINT) };
    let finished = serve.wait(Duration::from_secs(15));
    finished.assert_success();
    assert!(!portrace_tests::portrace::looks_like_panic(&finished.stderr), "{}", finished.stderr);
}

fn now_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// The transitions the workload makes, by edge: N connections whose client closes first
/// (the client ends in TIME_WAIT, the accepted socket closes passively), REFUSED connects
/// to a closed port, and the listener opened and closed once.
fn expected_edges() -> BTreeMap<(String, String), f64> {
    let mut want = BTreeMap::new();
    let mut add = |from: &str, to: &str, n: u64| {
        *want.entry((from.to_string(), to.to_string())).or_insert(0.0) += n as f64;
    };
    add("CLOSE", "LISTEN", 1);
    add("LISTEN", "CLOSE", 1);
    add("CLOSE", "SYN_SENT", N + REFUSED);
    add("SYN_SENT", "CLOSE", REFUSED);
    for (from, to) in [
        ("SYN_SENT", "ESTABLISHED"),
        ("ESTABLISHED", "FIN_WAIT1"),
        ("FIN_WAIT1", "FIN_WAIT2"),
        ("FIN_WAIT2", "TIME_WAIT"),
        ("LISTEN", "SYN_RECV"),
        ("SYN_RECV", "ESTABLISHED"),
        ("ESTABLISHED", "CLOSE_WAIT"),
        ("CLOSE_WAIT", "LAST_ACK"),
        ("LAST_ACK", "CLOSE"),
    ] {
        add(from, to, N);
    }
    want
}

#[test]
fn prometheus_scrapes_exactly_what_the_workload_did() {
    privileged!();
    let ns = Netns::create();
    let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let (port, closed) = (PORT.to_string(), CLOSED_PORT.to_string());
    let serve = start_serve(
        listen,
        &["--port", &port, "--port", &closed, "--owner-labels", "--check-interval", "1s"],
    );
    let prometheus = Prometheus::start(listen);

    let load = tcpload!();
    let server = load.server(&ns, &format!("127.0.0.1:{PORT}"), N as usize, Closer::Client);
    load.client(&ns, &format!("127.0.0.1:{PORT}"), N as usize, 1, Closer::Client);
    server.wait_success(WAIT);
    load.client_refused(&ns, &format!("127.0.0.1:{CLOSED_PORT}"), REFUSED as usize);

    // serve's own count first: every transition has been read...
    let total: f64 = expected_edges().values().sum();
    let started = Instant::now();
    let exposition = loop {
        let (code, body) = get(listen, "/metrics", "*/*").expect("/metrics");
        assert_eq!(code, 200, "{body}");
        let seen: f64 = body
            .lines()
            .filter(|l| l.starts_with("portrace_transitions_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if seen >= total {
            break body;
        }
        assert!(started.elapsed() < DEADLINE, "serve counted {seen} of {total} transitions:\n{body}");
        thread::sleep(Duration::from_millis(100));
    };
    // ... and the per-state counts have been checked against the kernel twice since: the
    // second check was taken after the first was applied, so wholly after the workload,
    // and must find nothing to correct (the first may have listed the sockets while the
    // last transitions were made).
    let sample = |text: &str, name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .fold(0.0, |sum, v| sum + v)
    };
    let before = sample(&exposition, "portrace_socket_checks_total");
    // The checks and the drift when a check newer than `before` was first seen.
    let mut first: Option<(f64, f64)> = None;
    let started = Instant::now();
    loop {
        let text = get(listen, "/metrics", "*/*").expect("/metrics").1;
        let (checks, drift) = (sample(&text, "portrace_socket_checks_total"), sample(&text, "portrace_socket_drift_total"));
        match first {
            None if checks > before => first = Some((checks, drift)),
            Some((seen, _)) if checks > seen => break,
            _ => {}
        }
        assert!(started.elapsed() < DEADLINE, "no two checks of the per-state counts within {DEADLINE:?}");
        thread::sleep(Duration::from_millis(100));
    }
    let drift_after_first = first.expect("a first check").1;
    let done = now_s();

    // ...then a scrape by Prometheus that began after that.
    let started = Instant::now();
    while prometheus.value("timestamp(up{job=\"portrace\"})") < done + 0.5 {
        assert!(started.elapsed() < DEADLINE, "Prometheus scraped nothing after the workload");
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(prometheus.value("up{job=\"portrace\"}"), 1.0, "the last scrape succeeded");

    let mut edges = BTreeMap::new();
    for (labels, value) in prometheus.query("portrace_transitions_total") {
        assert_eq!(labels["comm"], "tcpload", "{labels:?}");
        // The service's port has its series from its CLOSE -> LISTEN on; the closed port
        // never served, so its probes fold into "other" (the cap's place is not used up).
        assert!(labels["port"] == port || labels["port"] == "other", "{labels:?}");
        *edges.entry((labels["from"].clone(), labels["to"].clone())).or_insert(0.0) += value;
    }
    assert_eq!(edges, expected_edges(), "transitions as Prometheus stored them\n--- exposition\n{exposition}");
    let edge = |from: &str, to: &str, port: &str| {
        prometheus.value(&format!("portrace_transitions_total{{from=\"{from}\",to=\"{to}\",port=\"{port}\"}}"))
    };
    assert_eq!(edge("CLOSE", "SYN_SENT", &port), N as f64);
    assert_eq!(edge("CLOSE", "SYN_SENT", "other"), REFUSED as f64, "refused connects fold into other");
    assert_eq!(edge("SYN_SENT", "CLOSE", "other"), REFUSED as f64);
    assert_eq!(prometheus.value("portrace_label_values_folded_total{label=\"port\"}"), (2 * REFUSED) as f64);
    assert_eq!(prometheus.value("portrace_label_values{label=\"port\"}"), 1.0);
    assert_eq!(prometheus.value("portrace_label_values{label=\"comm\"}"), 1.0);

    let ends = |reason: &str| prometheus.value(&format!("sum(portrace_connection_ends_total{{reason=\"{reason}\"}})"));
    assert_eq!(ends("passive_close"), N as f64);
    assert_eq!(ends("refused"), REFUSED as f64);
    assert_eq!(ends("listener_closed"), 1.0);
    assert_eq!(prometheus.value("sum(portrace_connection_ends_total)"), (N + REFUSED + 1) as f64, "no other end");

    let timed = |state: &str| prometheus.value(&format!("sum(portrace_state_duration_seconds_count{{state=\"{state}\"}})"));
    assert_eq!(timed("SYN_SENT"), (N + REFUSED) as f64, "connect latency: served and refused");
    assert_eq!(timed("ESTABLISHED"), (2 * N) as f64, "both ends of each connection");
    assert_eq!(timed("CLOSE_WAIT"), N as f64);
    assert_eq!(timed("FIN_WAIT2"), N as f64);
    assert_eq!(timed("TIME_WAIT"), 0.0, "no TIME_WAIT has ended yet");
    let le_inf = "sum(portrace_state_duration_seconds_bucket{state=\"ESTABLISHED\",le=\"+Inf\"})";
    assert_eq!(prometheus.value(le_inf), (2 * N) as f64);

    assert_eq!(prometheus.value("sum(portrace_lost_transitions_total)"), 0.0);
    assert_eq!(prometheus.value("portrace_alerts_total{kind=\"new_listener\",severity=\"info\"}"), 1.0);
    // The clients' sockets wait in TIME_WAIT; nothing else of ours is open, and the
    // checks against the kernel's table found the counts right.
    assert_eq!(prometheus.value("portrace_sockets{state=\"TIME_WAIT\"}"), N as f64);
    assert_eq!(prometheus.value("sum(portrace_sockets)"), N as f64);
    assert!(prometheus.value("portrace_socket_checks_total") >= 1.0, "a check ran");
    assert_eq!(
        prometheus.value("sum(portrace_socket_drift_total) or vector(0)"),
        drift_after_first,
        "the checks made after the workload found the counts right"
    );
    assert_eq!(prometheus.value("portrace_feature_enabled{feature=\"live_timeline\"}"), 1.0);

    // promtool lints what a client without an Accept header gets.
    let (_, text) = get(listen, "/metrics", "*/*").expect("/metrics");
    let file = prometheus.dir.join("exposition.txt");
    std::fs::write(&file, &text).unwrap();
    let mut lint = Command::new("sh");
    lint.arg("-c").arg(format!("{PROMTOOL} check metrics < {}", file.display())).stdin(Stdio::null());
    let linted = run_bounded("promtool check metrics", lint, Duration::from_secs(30));
    assert!(
        linted.status.success() && linted.stdout.is_empty() && linted.stderr.trim().is_empty(),
        "promtool check metrics: {}\n{}\n{}\n--- exposition\n{text}",
        linted.status,
        linted.stdout.join("\n"),
        linted.stderr
    );

    assert_eq!(get(listen, "/healthz", "*/*").unwrap(), (200, "ok\n".to_string()));
    assert_eq!(get(listen, "/no-such-page", "*/*").unwrap().0, 404);
    drop(prometheus);
    stop(serve);
}

#[test]
fn a_busy_port_and_a_foreign_address_are_refused_with_what_to_do() {
    privileged!();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut cmd = Command::new(Portrace::bin());
    cmd.args(["serve", "--listen", &addr]);
    let busy = run_bounded("portrace serve on a busy port", cmd, Duration::from_secs(20));
    assert_eq!(busy.status.code(), Some(1), "{}", busy.stderr);
    let own_name: String = std::fs::read_to_string("/proc/self/comm").unwrap().trim().to_string();
    let want = format!(
        "portrace: --listen {addr}: port {} is already in use by {own_name} (pid {})",
        taken.local_addr().unwrap().port(),
        std::process::id()
    );
    assert!(busy.stderr.starts_with(&want), "want {want:?} in:\n{}", busy.stderr);
    assert!(busy.stderr.contains("give portrace another port with --listen 127.0.0.1:PORT"), "{}", busy.stderr);

    // TEST-NET-1: documentation addresses, never an address of this host.
    let mut cmd = Command::new(Portrace::bin());
    cmd.args(["serve", "--listen", "192.0.2.1:9977"]);
    let foreign = run_bounded("portrace serve on another host's address", cmd, Duration::from_secs(20));
    assert_eq!(foreign.status.code(), Some(1), "{}", foreign.stderr);
    assert!(
        foreign.stderr.starts_with("portrace: --listen 192.0.2.1:9977: 192.0.2.1 is not an address of this host"),
        "{}",
        foreign.stderr
    );

    let mut cmd = Command::new(Portrace::bin());
    cmd.args(["serve", "--listen", "localhost"]);
    let bad = run_bounded("portrace serve --listen localhost", cmd, Duration::from_secs(20));
    assert_eq!(bad.status.code(), Some(2), "{}", bad.stderr);
    assert!(bad.stderr.contains("'localhost' is not ADDR:PORT"), "{}", bad.stderr);
}

/// `serve --record-dir`: the metrics and a flight recorder fed the same records. Every
/// transition the metrics count is in exactly one of the recordings, whole after a clean
/// stop, across several rotations.
#[test]
fn serve_keeps_a_flight_recorder_of_what_it_counts() {
    const FLIGHT_PORT: u16 = 65203;
    privileged!();
    let ns = Netns::create();
    let tmp = TempDir::new();
    let dir = tmp.file("flight");
    let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let port = FLIGHT_PORT.to_string();
    let record_dir = dir.to_string_lossy().into_owned();
    let serve = start_serve(listen, &["--port", &port, "--record-dir", &record_dir, "--rotate", "1s", "--keep", "50"]);

    // Connections in three bursts a rotation apart, so that they span several files.
    let load = tcpload!();
    let target = format!("127.0.0.1:{FLIGHT_PORT}");
    let server = load.server(&ns, &target, 3 * N as usize, Closer::Client);
    for _ in 0..3 {
        load.client(&ns, &target, N as usize, 1, Closer::Client);
        thread::sleep(Duration::from_millis(1200));
    }
    server.wait_success(WAIT);
    // The listener's CLOSE->LISTEN and LISTEN->CLOSE, and ten transitions per connection,
    // five of each side (the client's TIME_WAIT ends 60 s later).
    let want = 2 + 10 * 3 * N;
    let started = Instant::now();
    let counted = loop {
        let (_, body) = get(listen, "/metrics", "*/*").expect("/metrics");
        let seen: f64 = body
            .lines()
            .filter(|l| l.starts_with("portrace_transitions_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if seen as u64 >= want || started.elapsed() > DEADLINE {
            break seen as u64;
        }
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(counted, want, "the metrics count every transition of the workload");
    // The tracer's own health: every record came through the ring, and each read of it
    // was observed with how full the ring was.
    let (_, body) = get(listen, "/metrics", "*/*").expect("/metrics");
    let value = |name: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {body}"))
    };
    assert!(value("portrace_ring_records_total") >= want as f64, "{body}");
    let reads = value("portrace_ring_fill_ratio_count");
    assert!(reads >= 1.0, "{body}");
    assert_eq!(value("portrace_ring_fill_ratio_bucket{le=\"1.0\"}"), reads, "{body}");
    stop(serve);

    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the flight recorder's directory")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 3, "a file per second of the workload at least: {files:?}");
    let mut recorded = 0u64;
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("portrace-") && name.ends_with(".ptr"), "every file finished at a clean stop: {name}");
        let out = run_bounded(
            "portrace replay",
            {
                let mut cmd = Command::new(Portrace::bin());
                cmd.args(["replay", "--format", "json"]).arg(file).stdin(Stdio::null());
                cmd
            },
            DEADLINE,
        );
        out.assert_success();
        assert!(out.stderr.trim().is_empty() || !out.stderr.contains("cut"), "{name} reads whole: {}", out.stderr);
        for line in &out.stdout {
            let record: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {line}"));
            if record["type"] == "transition" {
                recorded += 1;
            }
        }
    }
    assert_eq!(recorded, want, "the recordings hold each counted transition once, across {} files", files.len());
}
