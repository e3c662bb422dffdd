//! The real portrace binary under test: [`Portrace`] starts it with the test's arguments,
//! parses its JSON lines on a background thread as they arrive, waits for it to attach,
//! lets the test poll for the records it expects within a deadline, and stops it with
//! SIGINT as a user would, returning everything it printed as a [`Run`].
//! [`Portrace::run_once`] runs it to its own end (`--snapshot`) within a deadline.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::{read_all_in_background, run_bounded, Finished};
use crate::records::{socket_records, transitions, SocketRecord, Transition};

/// How long portrace may take to attach and print its start record.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long portrace may take to exit after SIGINT.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(5);

/// A running portrace; killed (SIGKILL) and reaped on drop if the test did not stop it.
pub struct Portrace {
    args: Vec<String>,
    child: Option<Child>,
    /// Raw stdout lines: the reader thread only moves them, so that portrace never waits on
    /// a full pipe while the test parses.
    lines: Receiver<String>,
    records: Vec<Value>,
    /// Lines that were not JSON, when JSON was asked for.
    garbage: Vec<String>,
    n_transitions: usize,
    /// Sum of the `lost` records' counts so far.
    n_lost: u64,
    stdout_closed: bool,
    stderr: Receiver<String>,
}

/// What a stopped portrace left: its records, stderr and exit status.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    pub records: Vec<Value>,
    /// stdout lines that were not JSON (with `--format json` there must be none).
    pub garbage: Vec<String>,
    pub stderr: String,
    pub status: ExitStatus,
}

/// The first line of portrace's stderr summary:
/// `portrace: {N} transitions in {secs} s, {L} lost`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub transitions: u64,
    pub secs: f64,
    pub lost: u64,
}

impl Portrace {
    /// The portrace binary: `$PORTRACE_BIN`, else `portrace` in the target directory this
    /// test binary was built into (tests run from `<target>/<profile>/deps/`).
    pub fn bin() -> PathBuf {
        if let Some(path) = std::env::var_os("PORTRACE_BIN") {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "PORTRACE_BIN={} is not a file",
                path.display()
            );
            return path;
        }
        let exe = std::env::current_exe().expect("the test binary's own path");
        let candidates: Vec<PathBuf> = exe
            .ancestors()
            .skip(1)
            .take(3)
            .map(|dir| dir.join("portrace"))
            .collect();
        candidates
            .iter()
            .find(|p| p.is_file())
            .cloned()
            .unwrap_or_else(|| {
                panic!(
                    "portrace binary not found (looked for {candidates:?} and $PORTRACE_BIN): \
                 run `cargo build -p portrace` first (`cargo xtask test` builds it for you)"
                )
            })
    }

    /// Starts portrace with `--format json` followed by `args`, without waiting for it.
    pub fn spawn(args: &[&str]) -> Portrace {
        let mut all = vec!["--format", "json"];
        all.extend_from_slice(args);
        Portrace::spawn_raw(&all)
    }

    /// Starts portrace with exactly `args`.
    pub fn spawn_raw(args: &[&str]) -> Portrace {
        let mut cmd = Command::new(Portrace::bin());
        cmd.args(args);
        Portrace::spawn_command(cmd, args)
    }

    /// Starts `cmd`, a command line that runs portrace with `args` (e.g. through
    /// `setpriv`, as another user).
    pub fn spawn_command(mut cmd: Command, args: &[&str]) -> Portrace {
        let bin = cmd.get_program().to_owned();
        let bin = Path::new(&bin);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let out = child.stdout.take().expect("stdout is piped");
        let err = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Portrace {
            args: args.iter().map(|s| s.to_string()).collect(),
            child: Some(child),
            lines,
            records: Vec::new(),
            garbage: Vec::new(),
            n_transitions: 0,
            n_lost: 0,
            stdout_closed: false,
            stderr: read_all_in_background(err),
        }
    }

    /// [`Portrace::spawn`] and [`Portrace::wait_ready`]: once this returns, every transition
    /// that passes the filter is traced.
    pub fn start(args: &[&str]) -> Portrace {
        let mut portrace = Portrace::spawn(args);
        portrace.wait_ready();
        portrace
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("portrace is running").id()
    }

    /// Waits (at most [`READY_TIMEOUT`]) for the `{"type":"start"}` record portrace prints
    /// once its kernel program is attached. Panics with its stderr if it exits or is late.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(first) = self.records.first() {
                assert_eq!(
                    first["type"], "start",
                    "portrace's first record is not the start record: {first}"
                );
                return;
            }
            if self.stdout_closed || Instant::now() >= deadline {
                let why = if self.stdout_closed {
                    "exited"
                } else {
                    "timed out"
                };
                let (status, stderr) = self.kill_and_collect();
                panic!(
                    "portrace {:?} {why} before its start record ({status}):\n\
                     --- stdout (not JSON)\n{}\n--- stderr\n{stderr}",
                    self.args,
                    self.garbage.join("\n")
                );
            }
            self.pump_for(
                deadline
                    .saturating_duration_since(Instant::now())
                    .min(POLL * 10),
            );
        }
    }

    /// The records received so far.
    pub fn records(&mut self) -> &[Value] {
        self.pump_for(Duration::ZERO);
        &self.records
    }

    /// The transitions received so far.
    pub fn transitions(&mut self) -> Vec<Transition> {
        self.pump_for(Duration::ZERO);
        transitions(&self.records)
    }

    /// The socket records (the start-up inventory) received so far.
    pub fn socket_records(&mut self) -> Vec<SocketRecord> {
        self.pump_for(Duration::ZERO);
        socket_records(&self.records)
    }

    /// Runs portrace with exactly `args` until it exits by itself (as `--snapshot` does),
    /// killing it past `timeout`; returns what it printed and how long it took.
    pub fn run_once(args: &[&str], timeout: Duration) -> (Finished, Duration) {
        let mut cmd = Command::new(Portrace::bin());
        cmd.args(args);
        let started = Instant::now();
        let finished = run_bounded(&format!("portrace {}", args.join(" ")), cmd, timeout);
        (finished, started.elapsed())
    }

    /// Waits until `done(records so far)` holds or `timeout` passes; returns whether it held.
    /// The test then stops portrace and asserts, so a shortfall shows as a full timeline.
    pub fn wait_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&[Value]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.records) {
                return true;
            }
            if self.stdout_closed || Instant::now() >= deadline {
                return false;
            }
            self.pump_for(
                deadline
                    .saturating_duration_since(Instant::now())
                    .min(POLL * 10),
            );
        }
    }

    /// With a text format: waits until a line of output (not JSON) holds `needle` or
    /// `timeout` passes; returns whether one did.
    pub fn wait_for_text(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.garbage.iter().any(|line| line.contains(needle)) {
                return true;
            }
            if self.stdout_closed || Instant::now() >= deadline {
                return false;
            }
            self.pump_for(deadline.saturating_duration_since(Instant::now()).min(POLL * 10));
        }
    }

    /// Waits until at least `n` transition records arrived or `timeout` passes; returns how
    /// many arrived.
    pub fn wait_for_transitions(&mut self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        while self.n_transitions < n && !self.stdout_closed && Instant::now() < deadline {
            self.pump_for(
                deadline
                    .saturating_duration_since(Instant::now())
                    .min(POLL * 10),
            );
        }
        self.n_transitions
    }

    /// Waits until `n` transitions are accounted for, received or reported lost, or
    /// `timeout` passes; returns (received, lost) so far.
    pub fn wait_accounted(&mut self, n: u64, timeout: Duration) -> (usize, u64) {
        let deadline = Instant::now() + timeout;
        while (self.n_transitions as u64 + self.n_lost) < n
            && !self.stdout_closed
            && Instant::now() < deadline
        {
            self.pump_for(
                deadline
                    .saturating_duration_since(Instant::now())
                    .min(POLL * 10),
            );
        }
        (self.n_transitions, self.n_lost)
    }

    /// Waits for `n` transitions (at most `timeout`), then for `settle` in which no more
    /// need arrive, stops portrace and checks that it exited cleanly
    /// ([`Run::assert_clean`]); its stderr is printed, shown only if the test fails.
    pub fn collect(mut self, n: usize, timeout: Duration, settle: Duration) -> Run {
        self.wait_for_transitions(n, timeout);
        if !settle.is_zero() {
            self.wait_for_transitions(usize::MAX, settle);
        }
        let run = self.stop();
        run.assert_clean();
        eprintln!("portrace {:?} stderr:\n{}", run.args, run.stderr);
        run
    }

    /// Sends SIGINT, waits for portrace to exit (at most [`STOP_TIMEOUT`], then SIGKILL and
    /// panic) and returns everything it printed.
    pub fn stop(mut self) -> Run {
        let mut child = self.child.take().expect("portrace is running");
        // Only the process this fixture started, by its id.
        // SAFETY: kill(2) with a pid we own and a valid signal number.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    // Keep draining stdout so a full pipe cannot stall portrace's exit.
                    self.pump_for(POLL);
                }
                Ok(None) => {
                    let _ = child.kill();
                    let status = child.wait();
                    self.drain(Duration::from_secs(5));
                    let stderr = self
                        .stderr
                        .recv_timeout(Duration::from_secs(5))
                        .unwrap_or_default();
                    panic!(
                        "portrace {:?} did not exit within {STOP_TIMEOUT:?} of SIGINT (killed: \
                         {status:?}); {} records so far\n--- stderr\n{stderr}",
                        self.args,
                        self.records.len()
                    );
                }
                Err(e) => panic!("waiting for portrace: {e}"),
            }
        };
        self.drain(Duration::from_secs(10));
        Run {
            args: std::mem::take(&mut self.args),
            records: std::mem::take(&mut self.records),
            garbage: std::mem::take(&mut self.garbage),
            stderr: self
                .stderr
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|_| "(stderr not available)".into()),
            status,
        }
    }

    /// Waits up to `wait` for a line, then takes every line already queued.
    fn pump_for(&mut self, wait: Duration) {
        let mut next = if wait.is_zero() {
            self.lines.try_recv().map_err(|e| match e {
                TryRecvError::Empty => RecvTimeoutError::Timeout,
                TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
            })
        } else {
            self.lines.recv_timeout(wait)
        };
        loop {
            match next {
                Ok(line) => match serde_json::from_str::<Value>(&line) {
                    Ok(value) if value.is_object() => {
                        if value["type"] == "transition" {
                            self.n_transitions += 1;
                        } else if value["type"] == "lost" {
                            self.n_lost += value["count"].as_u64().unwrap_or(0);
                        }
                        self.records.push(value);
                    }
                    _ => self.garbage.push(line),
                },
                Err(RecvTimeoutError::Timeout) => return,
                Err(RecvTimeoutError::Disconnected) => {
                    self.stdout_closed = true;
                    return;
                }
            }
            next = self.lines.try_recv().map_err(|e| match e {
                TryRecvError::Empty => RecvTimeoutError::Timeout,
                TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
            });
        }
    }

    /// After exit: receives lines until stdout closes or `grace` passes.
    fn drain(&mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        while !self.stdout_closed && Instant::now() < deadline {
            self.pump_for(
                deadline
                    .saturating_duration_since(Instant::now())
                    .min(POLL * 20),
            );
        }
    }

    fn kill_and_collect(&mut self) -> (String, String) {
        let status = match self.child.take() {
            Some(mut child) => {
                let _ = child.kill();
                format!("{:?}", child.wait())
            }
            None => "already reaped".into(),
        };
        self.drain(Duration::from_secs(2));
        let stderr = self
            .stderr
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_default();
        (status, stderr)
    }
}

impl Drop for Portrace {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Run {
    /// The transition records, parsed (panics on a malformed one).
    pub fn transitions(&self) -> Vec<Transition> {
        transitions(&self.records)
    }

    /// The socket records: the inventory of sockets older than portrace.
    pub fn socket_records(&self) -> Vec<SocketRecord> {
        socket_records(&self.records)
    }

    /// The start record's `ts_ns`: when tracing started.
    pub fn start_ts_ns(&self) -> u64 {
        self.records
            .first()
            .filter(|r| r["type"] == "start")
            .and_then(|r| r["ts_ns"].as_u64())
            .unwrap_or_else(|| panic!("no start record with a ts_ns: {:?}", self.records.first()))
    }

    /// Panics unless portrace exited with status 0, printed only JSON objects, began with
    /// the start record, printed its socket records (if any) right after it, ended with the
    /// end record, and printed no panic.
    pub fn assert_clean(&self) {
        let context = || {
            format!(
                "portrace {:?}, status {}\n--- stderr\n{}",
                self.args, self.status, self.stderr
            )
        };
        assert!(
            self.status.success(),
            "portrace did not exit with status 0\n{}",
            context()
        );
        assert!(
            !looks_like_panic(&self.stderr),
            "portrace panicked\n{}",
            context()
        );
        assert!(
            self.garbage.is_empty(),
            "portrace printed lines that are not JSON objects: {:?}\n{}",
            &self.garbage[..self.garbage.len().min(20)],
            context()
        );
        let first = self.records.first().map(|r| r["type"].clone());
        let last = self.records.last().map(|r| r["type"].clone());
        assert_eq!(
            first,
            Some(Value::from("start")),
            "the first record is not the start record\n{}",
            context()
        );
        assert_eq!(
            last,
            Some(Value::from("end")),
            "the last record is not the end record\n{}",
            context()
        );
        let start = &self.records[0];
        assert_eq!(start["schema"], 1, "start record {start}");
        for key in ["portrace", "time", "host", "kernel"] {
            assert!(
                start[key].is_string(),
                "start record lacks a string {key:?}: {start}"
            );
        }
        assert!(start["ts_ns"].is_u64(), "start record lacks ts_ns: {start}");
        // Process, namespace and cgroup details may come between socket records.
        let detail = |r: &Value| r["type"] == "process" || r["type"] == "netns" || r["type"] == "cgroup";
        let inventory_end = self.records[1..]
            .iter()
            .position(|r| r["type"] != "socket" && !detail(r))
            .map_or(self.records.len(), |i| i + 1);
        if let Some(late) = self.records[inventory_end..]
            .iter()
            .find(|r| r["type"] == "socket")
        {
            panic!(
                "a socket record after the inventory (they come right after the start \
                 record): {late}\n{}",
                context()
            );
        }
        // Every owner is announced by a process record, every namespace by a netns record,
        // every owner's cgroup by a cgroup record, before the first record that names it.
        let mut processes = std::collections::HashSet::new();
        let mut namespaces = std::collections::HashSet::new();
        let mut cgroups = std::collections::HashSet::new();
        for r in &self.records {
            match r["type"].as_str() {
                Some("process") => {
                    processes.insert(r["pid"].as_u64().expect("a process record's pid"));
                }
                Some("netns") => {
                    namespaces.insert(r["netns"].as_u64().expect("a netns record's netns"));
                }
                Some("cgroup") => {
                    cgroups.insert(r["id"].as_u64().expect("a cgroup record's id"));
                }
                Some("socket" | "transition") => {
                    if let Some(pid) = r["owner_pid"].as_u64() {
                        assert!(processes.contains(&pid), "no process record before {r}\n{}", context());
                    }
                    let netns = r["netns"].as_u64().unwrap_or(0);
                    assert!(netns == 0 || namespaces.contains(&netns), "no netns record before {r}\n{}", context());
                    if let Some(id) = r["owner_cgroup"].as_u64() {
                        assert!(cgroups.contains(&id), "no cgroup record before {r}\n{}", context());
                    }
                }
                _ => {}
            }
        }
        let n = self
            .records
            .iter()
            .filter(|r| r["type"] == "transition")
            .count() as u64;
        let end = self.records.last().expect("records");
        assert_eq!(
            end["transitions"].as_u64(),
            Some(n),
            "end record's transition count: {end}"
        );
    }

    /// The `end` record, if portrace printed one.
    pub fn end(&self) -> Option<&Value> {
        self.records.iter().rev().find(|r| r["type"] == "end")
    }

    /// Parses the first line of the stderr summary; panics with the stderr if it does not
    /// read `portrace: {N} transitions in {secs} s, {L} lost`.
    pub fn summary(&self) -> Summary {
        let first = self.stderr.lines().next().unwrap_or("");
        parse_summary(first).unwrap_or_else(|| {
            panic!(
                "stderr's first line is not `portrace: N transitions in S s, L lost`:\n{}",
                self.stderr
            )
        })
    }
}

fn parse_summary(line: &str) -> Option<Summary> {
    let rest = line.strip_prefix("portrace: ")?;
    let (n, rest) = rest.split_once(" transitions in ")?;
    let (secs, rest) = rest.split_once(" s, ")?;
    let lost = rest.strip_suffix(" lost")?;
    Some(Summary {
        transitions: n.parse().ok()?,
        secs: secs.parse().ok()?,
        lost: lost.parse().ok()?,
    })
}

/// Whether text carries Rust panic or backtrace output.
pub fn looks_like_panic(text: &str) -> bool {
    ["panicked at", "stack backtrace", "RUST_BACKTRACE"]
        .iter()
        .any(|s| text.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line_parses() {
        assert_eq!(
            parse_summary("portrace: 200002 transitions in 3.25 s, 0 lost"),
            Some(Summary {
                transitions: 200_002,
                secs: 3.25,
                lost: 0
            })
        );
        assert_eq!(parse_summary("portrace: 5 transitions in 1 s"), None);
    }

    #[test]
    fn panic_text_is_recognised() {
        assert!(looks_like_panic(
            "thread 'main' panicked at src/main.rs:1:1"
        ));
        assert!(!looks_like_panic(
            "error: invalid value '70000' for '--port <PORT>'"
        ));
    }
}
