//! `portrace diagram` end to end, against the real kernel: a live diagram of a known
//! workload, filtered to its ports, whose SVG (parsed as XML) has exactly the edge counts
//! the traffic makes; the same diagram drawn `--from` a recording of the same traffic; and
//! `--conn` on one of the recording's real connections, drawn with its peer.
//!
//! The workload runs in a network namespace the test creates, on ports 65230-65231 that no
//! other test uses; every portrace here filters on them. These tests need root and run one
//! at a time.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use portrace_tests::tcpload::WAIT;
use portrace_tests::tracefile_helpers::{portrace, replay, Recorder, TempDir};
use portrace_tests::{privileged, Closer, Netns, Portrace, Tcpload};

const PORT: u16 = 65230;
/// Nothing listens here: connections to it are refused.
const REFUSED_PORT: u16 = 65231;
/// Connections where the client closes first.
const N: usize = 25;
const REFUSED: usize = 3;
/// How long the live diagram traces: room for start-up and the traffic.
const DURATION: &str = "15s";

/// A live `portrace diagram`, killed on drop if it did not finish.
struct LiveDiagram {
    child: Option<Child>,
    stderr: mpsc::Receiver<String>,
}

impl LiveDiagram {
    /// Starts it and waits (bounded) for the line saying it is tracing.
    fn start(args: &[&str]) -> LiveDiagram {
        let mut child = Command::new(Portrace::bin())
            .arg("diagram")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting portrace diagram");
        let err = child.stderr.take().expect("piped stderr");
        let (tx, stderr) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let d = LiveDiagram { child: Some(child), stderr };
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            match d.stderr.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.contains("tracing TCP state transitions for the diagram") => return d,
                Ok(line) => seen.push(line),
                Err(_) if Instant::now() > deadline => panic!("portrace diagram {args:?} did not start tracing:\n{}", seen.join("\n")),
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!("portrace diagram {args:?} exited:\n{}", seen.join("\n")),
                Err(_) => {}
            }
        }
    }

    /// Waits (bounded) for it to finish by itself; returns its stderr.
    fn finish(mut self) -> String {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(40);
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for portrace diagram") {
                break status;
            }
            assert!(Instant::now() < deadline, "portrace diagram did not end after its --duration");
            std::thread::sleep(Duration::from_millis(50));
        };
        let stderr: Vec<String> = self.stderr.try_iter().collect();
        assert!(status.success(), "portrace diagram failed ({status}):\n{}", stderr.join("\n"));
        stderr.join("\n")
    }
}

impl Drop for LiveDiagram {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The edges of a state-diagram SVG: (kernel old state, new state) to count, with each
/// count also checked against the text drawn on the edge.
fn edges(path: &Path) -> BTreeMap<(String, String), u64> {
    let svg = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{} is not XML: {e}", path.display()));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let states: Vec<&str> =
        doc.descendants().filter(|n| n.attribute("class") == Some("state")).filter_map(|n| n.attribute("data-rfc")).collect();
    for name in ["CLOSED", "LISTEN", "SYN-SENT", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2", "CLOSE-WAIT", "CLOSING", "LAST-ACK", "TIME-WAIT"] {
        assert!(states.contains(&name), "{} has no {name} box", path.display());
    }
    let mut out = BTreeMap::new();
    for g in doc.descendants().filter(|n| n.attribute("class").is_some_and(|c| c.starts_with("edge "))) {
        let count: u64 = g.attribute("data-count").and_then(|c| c.parse().ok()).expect("an edge has a data-count");
        let key = (g.attribute("data-from").unwrap().to_string(), g.attribute("data-to").unwrap().to_string());
        if count > 0 {
            let text: String = g.descendants().filter(|n| n.is_text()).map(|n| n.text().unwrap()).collect();
            assert!(text.contains(&format!("{count}×")), "edge {key:?} does not show its count {count}: {text:?}");
            out.insert(key, count);
        }
    }
    out
}

/// The edges `N` client-closes-first connections, `REFUSED` refusals and one listener make
/// while the client's TIME_WAITs (60 s) are still running.
fn expected() -> BTreeMap<(String, String), u64> {
    let (n, r) = (N as u64, REFUSED as u64);
    [
        ("CLOSE", "LISTEN", 1),
        ("LISTEN", "CLOSE", 1),
        ("CLOSE", "SYN_SENT", n + r),
        ("SYN_SENT", "CLOSE", r),
        ("SYN_SENT", "ESTABLISHED", n),
        ("LISTEN", "SYN_RECV", n),
        ("SYN_RECV", "ESTABLISHED", n),
        ("ESTABLISHED", "FIN_WAIT1", n),
        ("FIN_WAIT1", "FIN_WAIT2", n),
        ("FIN_WAIT2", "TIME_WAIT", n),
        ("ESTABLISHED", "CLOSE_WAIT", n),
        ("CLOSE_WAIT", "LAST_ACK", n),
        ("LAST_ACK", "CLOSE", n),
    ]
    .into_iter()
    .map(|(a, b, c)| ((a.to_string(), b.to_string()), c))
    .collect()
}

#[test]
fn a_live_diagram_and_one_from_a_recording_count_the_traffic_and_conn_draws_a_connection() {
    privileged!();
    let ns = Netns::create();
    let load = Tcpload::new(env!("CARGO_BIN_EXE_tcpload"));
    let dir = TempDir::new();
    let (live_svg, recording, from_svg, conn_svg) =
        (dir.file("live.svg"), dir.file("run.ptr"), dir.file("from.svg"), dir.file("conn.svg"));
    let (port, refused) = (PORT.to_string(), REFUSED_PORT.to_string());
    let filter = ["--port", port.as_str(), "--port", refused.as_str()];

    let mut args = vec!["--duration", DURATION, "-o", live_svg.to_str().unwrap()];
    args.extend_from_slice(&filter);
    let live = LiveDiagram::start(&args);
    let recorder = Recorder::start(&recording, &filter);

    let server = load.server(&ns, &format!("127.0.0.1:{PORT}"), N, Closer::Client);
    load.client(&ns, &format!("127.0.0.1:{PORT}"), N, 2, Closer::Client);
    load.client_refused(&ns, &format!("127.0.0.1:{REFUSED_PORT}"), REFUSED);
    server.wait_success(WAIT);
    // The server has exited: its listener is closed. Let the last records land.
    std::thread::sleep(Duration::from_millis(500));
    let stopped = recorder.stop();
    assert!(stopped.status.success(), "portrace record failed:\n{}", stopped.stderr);
    let stderr = live.finish();

    let want = expected();
    assert_eq!(edges(&live_svg), want, "the live diagram's edges\n--- portrace diagram stderr\n{stderr}");
    let svg = std::fs::read_to_string(&live_svg).unwrap();
    assert!(svg.contains("none lost"), "the live diagram reports losses:\n{}", &svg[..svg.len().min(2000)]);

    let drawn = portrace(&["diagram", "--from", recording.to_str().unwrap(), "-o", from_svg.to_str().unwrap()]);
    drawn.assert_success();
    assert_eq!(edges(&from_svg), want, "the diagram drawn from the recording");

    // --conn on a real connection: a client and the server's child, side by side.
    let replayed = replay(&recording, &["--port", &port]);
    replayed.assert_read();
    let client = replayed
        .transitions()
        .into_iter()
        .find(|t| t["oldstate"] == "SYN_SENT" && t["newstate"] == "ESTABLISHED")
        .and_then(|t| t["socket"].as_u64())
        .expect("a client connection in the recording");
    let id = client.to_string();
    portrace(&["diagram", "--from", recording.to_str().unwrap(), "--conn", &id, "-o", conn_svg.to_str().unwrap()]).assert_success();
    let svg = std::fs::read_to_string(&conn_svg).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("the sequence diagram is XML");
    let mut sides: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in doc.descendants().filter(|n| n.attribute("class") == Some("transition")) {
        sides
            .entry(t.attribute("data-socket").unwrap().to_string())
            .or_default()
            .push(format!("{}->{}", t.attribute("data-from").unwrap(), t.attribute("data-to").unwrap()));
    }
    assert_eq!(sides.len(), 2, "the connection's two sockets: {sides:?}");
    assert_eq!(
        sides[&id],
        ["CLOSE->SYN_SENT", "SYN_SENT->ESTABLISHED", "ESTABLISHED->FIN_WAIT1", "FIN_WAIT1->FIN_WAIT2", "FIN_WAIT2->TIME_WAIT"],
        "the client's side"
    );
    let child = sides.iter().find(|(k, _)| **k != id).map(|(_, v)| v.clone()).unwrap();
    assert_eq!(
        child,
        ["LISTEN->SYN_RECV", "SYN_RECV->ESTABLISHED", "ESTABLISHED->CLOSE_WAIT", "CLOSE_WAIT->LAST_ACK", "LAST_ACK->CLOSE"],
        "the server's side"
    );
    let segments: Vec<&str> =
        doc.descendants().filter(|n| n.attribute("class") == Some("segment")).filter_map(|n| n.attribute("data-segment")).collect();
    assert_eq!(segments.len(), 5, "ACK, FIN, ACK of FIN, FIN, ACK of FIN between the sides: {segments:?}");
    let text = portrace(&["diagram", "--from", recording.to_str().unwrap(), "--conn", &id]);
    text.assert_success();
    let text = text.stdout.join("\n");
    assert!(text.contains(&format!("left:  client, socket {id}")), "{text}");
    assert!(text.contains("received SYN-ACK, sent ACK"), "{text}");
}
