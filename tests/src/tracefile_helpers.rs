//! Recordings in the end-to-end tests: [`Recorder`] runs `portrace record` into a file,
//! waits until it has written its header (it is then attached and tracing), and stops it
//! with SIGINT as a user would, or kills it with SIGKILL; [`replay`] runs `portrace replay`
//! on a recording and parses its JSON lines; [`SocketKey`] and [`by_connection`] group two
//! separate runs' transitions by connection, since each run numbers its sockets itself;
//! [`Tmpfs`] is a small file system that fills up, unmounted on drop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::portrace::{looks_like_panic, READY_TIMEOUT, STOP_TIMEOUT};
use crate::process::{read_all_in_background, run_bounded, Finished};
use crate::Portrace;

/// How long a replay may take.
pub const REPLAY_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(5);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh path for a recording, in a directory of its own that is removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "portrace-rec-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Default for TempDir {
    fn default() -> TempDir {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A running `portrace record`; killed (SIGKILL) and reaped on drop if the test did not
/// stop it.
pub struct Recorder {
    args: Vec<String>,
    path: PathBuf,
    child: Option<Child>,
    stderr: Receiver<String>,
}

/// How a recorder ended.
#[derive(Debug)]
pub struct Stopped {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stderr: String,
    /// The recording's size when the recorder had exited.
    pub bytes: u64,
}

impl Recorder {
    /// Starts `portrace record -o path args...` and waits (at most [`READY_TIMEOUT`]) until
    /// the recording holds its header: portrace writes it once its programs are attached,
    /// so from then on every transition that passes the filter is recorded.
    pub fn start(path: &Path, args: &[&str]) -> Recorder {
        let mut all = vec!["record".to_string(), "-o".to_string(), path.display().to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        Recorder::start_with(path, all)
    }

    /// Starts the flight recorder, `portrace record --dir dir args...`, and waits like
    /// [`Recorder::start`] until a file in `dir` holds its header. [`Recorder::bytes`] is
    /// then the size of all the files in `dir`.
    pub fn start_dir(dir: &Path, args: &[&str]) -> Recorder {
        let mut all = vec!["record".to_string(), "--dir".to_string(), dir.display().to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        Recorder::start_with(dir, all)
    }

    fn start_with(path: &Path, all: Vec<String>) -> Recorder {
        let bin = Portrace::bin();
        let mut child = Command::new(&bin)
            .args(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stderr = read_all_in_background(child.stderr.take().expect("stderr is piped"));
        let mut recorder = Recorder { args: all, path: path.to_path_buf(), child: Some(child), stderr };
        let deadline = Instant::now() + READY_TIMEOUT;
        while recorder.bytes() == 0 {
            let exited = recorder.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                let why = if exited.is_some() { "exited" } else { "timed out" };
                let stopped = recorder.kill();
                panic!(
                    "portrace {:?} {why} before it wrote the recording's header ({}):\n{}",
                    stopped.args, stopped.status, stopped.stderr
                );
            }
            std::thread::sleep(POLL);
        }
        recorder
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the recorder is running").id()
    }

    /// The recording's size now (for a flight recorder, that of the files in its
    /// directory whose names do not start with a dot: those with their header).
    pub fn bytes(&self) -> u64 {
        match std::fs::read_dir(&self.path) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum(),
            Err(_) => std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0),
        }
    }

    /// Waits (at most `timeout`) until the recording holds at least `bytes` bytes; returns
    /// its size then.
    pub fn wait_for_bytes(&self, bytes: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        while self.bytes() < bytes && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        self.bytes()
    }

    /// Sends SIGINT, as Ctrl-C does, and waits for the recorder to exit.
    pub fn stop(self) -> Stopped {
        self.signal_and_wait(libc::SIGINT, STOP_TIMEOUT)
    }

    /// Kills the recorder with SIGKILL (it gets no chance to write anything more).
    pub fn kill(self) -> Stopped {
        self.signal_and_wait(libc::SIGKILL, STOP_TIMEOUT)
    }

    /// Waits (at most `timeout`) for the recorder to exit by itself.
    pub fn wait(self, timeout: Duration) -> Stopped {
        self.signal_and_wait(0, timeout)
    }

    fn signal_and_wait(mut self, signal: i32, timeout: Duration) -> Stopped {
        let mut child = self.child.take().expect("the recorder is running");
        if signal != 0 {
            // Only the process this fixture started, by its id.
            // SAFETY: kill(2) with a pid we own and a valid signal number.
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        }
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
                Ok(None) => {
                    let _ = child.kill();
                    let status = child.wait();
                    let stderr = self.stderr.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
                    panic!(
                        "portrace {:?} did not exit within {timeout:?} (signal {signal}; killed: \
                         {status:?})\n--- stderr\n{stderr}",
                        self.args
                    );
                }
                Err(e) => panic!("waiting for portrace: {e}"),
            }
        };
        let stderr = self.stderr.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
        Stopped { args: std::mem::take(&mut self.args), status, stderr, bytes: self.bytes() }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What `portrace replay` printed.
#[derive(Debug)]
pub struct Replay {
    pub finished: Finished,
    pub records: Vec<Value>,
    /// stdout lines that were not JSON objects.
    pub garbage: Vec<String>,
}

impl Replay {
    /// The transition records.
    pub fn transitions(&self) -> Vec<&Value> {
        self.records.iter().filter(|r| r["type"] == "transition").collect()
    }

    /// Panics unless the replay exited with status 0, printed only JSON objects, began
    /// with the start record, and printed no panic.
    pub fn assert_read(&self) {
        let f = &self.finished;
        let context = || format!("{}: status {}\n--- stderr\n{}", f.label, f.status, f.stderr);
        assert!(f.status.success(), "replay failed\n{}", context());
        assert!(!looks_like_panic(&f.stderr), "replay panicked\n{}", context());
        assert!(self.garbage.is_empty(), "replay printed non-JSON lines {:?}\n{}", self.garbage, context());
        assert_eq!(self.records.first().map(|r| &r["type"]), Some(&Value::from("start")), "{}", context());
    }

    /// The end record, if the replay printed one.
    pub fn end(&self) -> Option<&Value> {
        self.records.iter().find(|r| r["type"] == "end")
    }
}

/// Runs `portrace replay path --format json args...` to completion.
pub fn replay(path: &Path, args: &[&str]) -> Replay {
    let mut cmd = Command::new(Portrace::bin());
    cmd.arg("replay").arg(path).args(["--format", "json"]).args(args);
    let label = format!("portrace replay {} --format json {}", path.display(), args.join(" "));
    let finished = run_bounded(&label, cmd, REPLAY_TIMEOUT);
    let mut records = Vec::new();
    let mut garbage = Vec::new();
    for line in &finished.stdout {
        match serde_json::from_str::<Value>(line) {
            Ok(v) if v.is_object() => records.push(v),
            _ => garbage.push(line.clone()),
        }
    }
    Replay { finished, records, garbage }
}

/// Runs `portrace args...` to completion (`replay --info`, `report`).
pub fn portrace(args: &[&str]) -> Finished {
    let mut cmd = Command::new(Portrace::bin());
    cmd.args(args);
    run_bounded(&format!("portrace {}", args.join(" ")), cmd, REPLAY_TIMEOUT)
}

/// A connection as two separate runs of portrace can both name it, whatever socket ids
/// they gave it: its network namespace and the (local port, remote port) pairs its
/// transitions showed once its local port was bound. Empty for a socket seen only before
/// its port was bound (a `CLOSE -> SYN_SENT`).
pub type SocketKey = (u64, Vec<(u64, u64)>);

/// The transitions of one run grouped by connection: for each [`SocketKey`], the sockets
/// the run showed with it (usually one; more when the run numbered parts of a connection
/// apart), each with its id and its transitions in the order they were printed, sockets
/// in the order they were first seen; and apart, the transitions of sockets never seen
/// with a bound port.
pub type Connections<'a> = BTreeMap<SocketKey, Vec<(u64, Vec<&'a Value>)>>;

/// Groups transitions by connection; see [`Connections`].
pub fn by_connection<'a>(transitions: &[&'a Value]) -> (Connections<'a>, Vec<&'a Value>) {
    let mut by_id: Vec<(u64, Vec<&Value>)> = Vec::new();
    let mut index: BTreeMap<u64, usize> = BTreeMap::new();
    for t in transitions {
        let id = t["socket"].as_u64().expect("socket id");
        let i = *index.entry(id).or_insert_with(|| {
            by_id.push((id, Vec::new()));
            by_id.len() - 1
        });
        by_id[i].1.push(t);
    }
    let mut out: Connections<'a> = BTreeMap::new();
    let mut unbound = Vec::new();
    for (id, ts) in by_id {
        let mut ports: Vec<(u64, u64)> = ts
            .iter()
            .filter(|t| t["sport"] != 0)
            .map(|t| (t["sport"].as_u64().unwrap(), t["dport"].as_u64().unwrap()))
            .collect();
        ports.sort_unstable();
        ports.dedup();
        if ports.is_empty() {
            unbound.extend(ts);
            continue;
        }
        let key = (ts[0]["netns"].as_u64().unwrap_or(0), ports);
        out.entry(key).or_default().push((id, ts));
    }
    (out, unbound)
}

/// Microseconds since the epoch of an RFC 3339 UTC time with microseconds, as portrace
/// writes them (`2026-11-29T02:41:07.123456Z`).
pub fn rfc3339_us(text: &str) -> i64 {
    let bad = || panic!("{text:?} is not an RFC 3339 UTC time with microseconds");
    let b = text.as_bytes();
    if b.len() != 27 || b[26] != b'Z' {
        bad();
    }
    let num = |range: std::ops::Range<usize>| -> i64 { text[range].parse().unwrap_or_else(|_| bad()) };
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    // Days from 1970-01-01 to the date, the civil calendar's usual era arithmetic.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + num(11..13) * 3600 + num(14..16) * 60 + num(17..19);
    secs * 1_000_000 + num(20..26)
}

/// A tmpfs of `size` bytes mounted on a new directory; unmounted and removed on drop.
pub struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Tmpfs {
        Tmpfs::mount_with(&format!("size={size}"))
    }

    /// A tmpfs mounted with `options` (`ro,size=64k`).
    pub fn mount_with(options: &str) -> Tmpfs {
        let dir = TempDir::new();
        let mut cmd = Command::new("mount");
        cmd.args(["-t", "tmpfs", "-o", options, "tmpfs"]).arg(dir.path());
        run_bounded("mount tmpfs", cmd, Duration::from_secs(10)).assert_success();
        Tmpfs { dir }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.file(name)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let mut cmd = Command::new("umount");
        cmd.arg(self.dir.path());
        let _ = run_bounded("umount tmpfs", cmd, Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_parse_to_microseconds() {
        assert_eq!(rfc3339_us("1970-01-01T00:00:00.000001Z"), 1);
        assert_eq!(rfc3339_us("2000-03-01T00:00:00.000000Z"), 951_868_800_000_000);
        assert_eq!(rfc3339_us("2026-11-29T02:41:07.123456Z"), 1_795_920_067_123_456);
    }
}
