//! Processes and clean-up. Every process the benchmark starts is registered by pid and
//! reaped here with `wait4` (which also gives its CPU time); every network namespace it
//! creates is registered by name. Whatever way the benchmark ends (normally, with an
//! error, on Ctrl-C or SIGTERM, or by a panic unwinding through [`CleanupGuard`]), the
//! registered processes are stopped by pid and the namespaces deleted. Children also get
//! `PR_SET_PDEATHSIG`, so even a SIGKILLed benchmark does not leave them running; the
//! namespaces of such a run are removed by the next one (see `netns::remove_stale`).
//! Every wait here is bounded and checks for an interruption.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// What the clean-up must undo.
struct Registry {
    pids: Vec<i32>,
    namespaces: Vec<String>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    pids: Vec::new(),
    namespaces: Vec::new(),
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

extern "C" fn on_signal(_signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT, SIGTERM and SIGHUP only set a flag; the loops below see it and unwind, so the
/// clean-up runs in normal code rather than in a signal handler.
pub fn install_signal_handlers() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The benchmark's error: a message, or an interruption by a signal.
#[derive(Debug)]
pub enum Error {
    Interrupted,
    Failed(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Interrupted => f.write_str("interrupted"),
            Error::Failed(message) => f.write_str(message),
        }
    }
}

impl From<String> for Error {
    fn from(message: String) -> Error {
        Error::Failed(message)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Fails with [`Error::Interrupted`] once a signal arrived.
pub fn check() -> Result<()> {
    if interrupted() {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

/// Sleeps `d`, in short steps, unless interrupted.
pub fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

pub fn register_namespace(name: &str) {
    registry().namespaces.push(name.to_string());
}

pub fn forget_namespace(name: &str) {
    registry().namespaces.retain(|n| n != name);
}

/// Undoes everything still registered: stops the processes (SIGTERM, then SIGKILL after
/// two seconds) and deletes the namespaces. Idempotent.
pub fn cleanup_all() {
    let (pids, namespaces) = {
        let mut r = registry();
        (
            std::mem::take(&mut r.pids),
            std::mem::take(&mut r.namespaces),
        )
    };
    for &pid in &pids {
        // SAFETY: plain system call; the pid is one of our own unreaped children, so it
        // cannot have been reused by another process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut left: Vec<i32> = pids;
    while !left.is_empty() && Instant::now() < deadline {
        left.retain(|&pid| reap(pid, false).is_none());
        std::thread::sleep(Duration::from_millis(20));
    }
    for &pid in &left {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = reap(pid, true);
    }
    for name in namespaces {
        let _ = Command::new("ip")
            .args(["netns", "delete", &name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs [`cleanup_all`] when dropped, also while a panic unwinds.
pub struct CleanupGuard;

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        cleanup_all();
    }
}

/// How a process ended, and the CPU time it (and its reaped children) used.
#[derive(Clone, Copy, Debug)]
pub struct Exit {
    /// The exit code, or `None` when a signal ended it.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub cpu: Duration,
}

impl Exit {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    pub fn describe(&self) -> String {
        match (self.code, self.signal) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(signal)) => format!("was killed by signal {signal}"),
            _ => "ended".into(),
        }
    }
}

/// Reaps `pid` if it has ended (or waits for it, with `block`).
fn reap(pid: i32, block: bool) -> Option<Exit> {
    let mut status = 0;
    // SAFETY: rusage is plain old data; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let flags = if block { 0 } else { libc::WNOHANG };
    // SAFETY: valid pointers to locals.
    let rc = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
    if rc != pid {
        return None;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    let cpu = tv(usage.ru_utime) + tv(usage.ru_stime);
    let (code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    };
    Some(Exit { code, signal, cpu })
}

/// A process the benchmark started; stopped by pid (SIGKILL) if dropped while running.
pub struct Proc {
    pub pid: i32,
    pub label: String,
    pub started: Instant,
    exit: Option<Exit>,
}

/// Where a started process's standard output or error goes.
pub enum Out<'a> {
    Null,
    File(&'a Path),
}

fn stdio(out: Out<'_>) -> Result<Stdio> {
    match out {
        Out::Null => Ok(Stdio::null()),
        Out::File(path) => File::create(path)
            .map(Stdio::from)
            .map_err(|e| Error::Failed(format!("creating {}: {e}", path.display()))),
    }
}

impl Proc {
    /// Starts `cmd` with no standard input, its output going to `stdout` and `stderr`.
    pub fn spawn(label: &str, cmd: Command, stdout: Out<'_>, stderr: Out<'_>) -> Result<Proc> {
        check()?;
        Proc::spawn_always(label, cmd, stdout, stderr)
    }

    /// [`Proc::spawn`] even after an interruption (for clean-up commands).
    fn spawn_always(
        label: &str,
        mut cmd: Command,
        stdout: Out<'_>,
        stderr: Out<'_>,
    ) -> Result<Proc> {
        cmd.stdin(Stdio::null())
            .stdout(stdio(stdout)?)
            .stderr(stdio(stderr)?);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let started = Instant::now();
        // Registered under the lock it is spawned in, so a clean-up cannot miss it.
        let mut r = registry();
        let child = cmd
            .spawn()
            .map_err(|e| Error::Failed(format!("starting {label}: {e}")))?;
        let pid = child.id() as i32;
        r.pids.push(pid);
        drop(r);
        // The pid is reaped with wait4 below, never through `child`.
        drop(child);
        Ok(Proc {
            pid,
            label: label.to_string(),
            started,
            exit: None,
        })
    }

    /// Whether it has ended (reaping it if so).
    pub fn poll(&mut self) -> Option<Exit> {
        if self.exit.is_none() {
            if let Some(exit) = reap(self.pid, false) {
                registry().pids.retain(|&p| p != self.pid);
                self.exit = Some(exit);
            }
        }
        self.exit
    }

    /// Waits for it to end, at most `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Result<Exit> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = self.poll() {
                return Ok(exit);
            }
            check()?;
            if Instant::now() >= deadline {
                return Err(Error::Failed(format!(
                    "{} did not end within {timeout:?}",
                    self.label
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal`, waits `grace` for it to end, then SIGKILLs it.
    pub fn stop(&mut self, signal: i32, grace: Duration) -> Exit {
        if let Some(exit) = self.poll() {
            return exit;
        }
        // SAFETY: our own unreaped child.
        unsafe { libc::kill(self.pid, signal) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(exit) = self.poll() {
                return exit;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: as above.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        let exit = reap(self.pid, true).unwrap_or(Exit {
            code: None,
            signal: Some(9),
            cpu: Duration::ZERO,
        });
        registry().pids.retain(|&p| p != self.pid);
        self.exit = Some(exit);
        exit
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exit.is_none() {
            self.stop(libc::SIGKILL, Duration::from_secs(2));
        }
    }
}

/// Runs `cmd` to completion within `timeout`; fails unless it succeeds.
pub fn run_bounded(label: &str, cmd: Command, timeout: Duration) -> Result<()> {
    check()?;
    run_bounded_always(label, cmd, timeout)
}

/// [`run_bounded`] even after an interruption, for clean-up (deleting a namespace).
pub fn run_bounded_always(label: &str, cmd: Command, timeout: Duration) -> Result<()> {
    let dir = std::env::temp_dir();
    let err_path = dir.join(format!("portrace-bench-{}-cmd.err", std::process::id()));
    let mut p = Proc::spawn_always(label, cmd, Out::Null, Out::File(&err_path))?;
    let deadline = Instant::now() + timeout;
    let result = loop {
        if let Some(exit) = p.poll() {
            break Ok(exit);
        }
        if Instant::now() >= deadline {
            break Err(Error::Failed(format!(
                "{label} did not end within {timeout:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&err_path);
    let exit = result?;
    if exit.success() {
        Ok(())
    } else {
        Err(Error::Failed(format!(
            "{label} {}: {}",
            exit.describe(),
            stderr.trim()
        )))
    }
}

/// Runs `cmd` and returns its standard output (for version queries and the like), or
/// `None` if it fails.
pub fn output_of(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
