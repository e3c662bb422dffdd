//! Child processes the tests start: [`Proc`] owns one, collects its stdout line by line on
//! a background thread and its stderr as text, waits for it only within a deadline, and
//! kills and reaps it when dropped, so a failing test never leaves a process behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// How often a bounded wait looks at the process again.
const POLL: Duration = Duration::from_millis(5);
/// How long to wait for a dead process's pipes to reach EOF.
const PIPE_GRACE: Duration = Duration::from_secs(5);

/// A process that has exited, with all it printed.
#[derive(Debug)]
pub struct Finished {
    pub label: String,
    pub status: ExitStatus,
    pub stdout: Vec<String>,
    pub stderr: String,
}

impl Finished {
    /// Panics, showing everything the process printed, unless it exited with status 0.
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.status.success(),
            "{} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            self.label,
            self.status,
            self.stdout.join("\n"),
            self.stderr
        );
        self
    }
}

/// A running child process, killed (SIGKILL) and reaped on drop if still running.
pub struct Proc {
    label: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    seen: Vec<String>,
    stderr: Receiver<String>,
    stderr_text: Option<String>,
}

impl Proc {
    /// Starts `cmd` with stdin, stdout and stderr piped. `label` names it in messages.
    pub fn spawn(label: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {label} ({cmd:?}): {e}"));
        let stdin = child.stdin.take();
        let out = child.stdout.take().expect("stdout is piped");
        let err = child.stderr.take().expect("stderr is piped");
        let (out_tx, stdout) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if out_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = read_all_in_background(err);
        Proc {
            label: label.to_string(),
            child: Some(child),
            stdin,
            stdout,
            seen: Vec::new(),
            stderr,
            stderr_text: None,
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The process id. With `ip netns exec` this is the program's own id, since `ip` execs it.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the process is running").id()
    }

    /// Closes the process's stdin: it reads EOF.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Writes one line to the process's stdin.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is piped");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("writing to {}'s stdin: {e}", self.label));
    }

    /// Waits until the process prints `want` as a whole line. Panics, with what it printed,
    /// if it exits first or the deadline passes.
    pub fn wait_line(&mut self, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    let hit = line == want;
                    self.seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let status = self.kill_and_reap();
                    let stderr = self.stderr_text();
                    panic!(
                        "{} did not print {want:?} within {timeout:?} (then killed: {status}):\n\
                         --- stdout\n{}\n--- stderr\n{}",
                        self.label,
                        self.seen.join("\n"),
                        stderr
                    );
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.reap_within(PIPE_GRACE);
                    let stderr = self.stderr_text();
                    panic!(
                        "{} exited ({status}) before printing {want:?}:\n--- stdout\n{}\n--- stderr\n{}",
                        self.label,
                        self.seen.join("\n"),
                        stderr
                    );
                }
            }
        }
    }

    /// Waits for the process to exit on its own. Past the deadline it is killed and the
    /// test panics with what it printed.
    pub fn wait(mut self, timeout: Duration) -> Finished {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("the process is running");
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
                Ok(None) => {
                    let status = self.kill_and_reap();
                    self.drain_stdout(PIPE_GRACE);
                    let stderr = self.stderr_text();
                    panic!(
                        "{} did not finish within {timeout:?} (then killed: {status}):\n\
                         --- stdout\n{}\n--- stderr\n{}",
                        self.label,
                        self.seen.join("\n"),
                        stderr
                    );
                }
                Err(e) => panic!("waiting for {}: {e}", self.label),
            }
        };
        self.child = None;
        self.drain_stdout(PIPE_GRACE);
        Finished {
            label: self.label.clone(),
            status,
            stdout: std::mem::take(&mut self.seen),
            stderr: self.stderr_text(),
        }
    }

    /// [`Proc::wait`], then panics unless the process exited with status 0.
    pub fn wait_success(self, timeout: Duration) -> Finished {
        let finished = self.wait(timeout);
        finished.assert_success();
        finished
    }

    /// Collects stdout lines until the pipe closes or `grace` passes.
    fn drain_stdout(&mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => return,
            }
        }
    }

    /// Everything the process wrote on stderr; call once it has exited (or been killed).
    fn stderr_text(&mut self) -> String {
        if self.stderr_text.is_none() {
            let text = self.stderr.recv_timeout(PIPE_GRACE);
            self.stderr_text = Some(text.unwrap_or_else(|_| "(stderr not available)".into()));
        }
        self.stderr_text.clone().unwrap_or_default()
    }

    /// Waits for an exit that is already under way (its stdout closed), bounded; kills the
    /// process if it lingers.
    fn reap_within(&mut self, grace: Duration) -> String {
        let deadline = Instant::now() + grace;
        let Some(child) = self.child.as_mut() else {
            return "already reaped".into();
        };
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.to_string();
            }
            thread::sleep(POLL);
        }
        self.kill_and_reap()
    }

    fn kill_and_reap(&mut self) -> String {
        let Some(mut child) = self.child.take() else {
            return "already reaped".into();
        };
        // Only this child, by its own id: `Child::kill` sends SIGKILL to that pid.
        let _ = child.kill();
        match child.wait() {
            Ok(status) => status.to_string(),
            Err(e) => format!("wait failed: {e}"),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stdin = None;
        let _ = self.kill_and_reap();
    }
}

/// Reads a pipe to its end on a background thread; the text arrives on the channel.
pub(crate) fn read_all_in_background(mut pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    rx
}

/// Runs `cmd` to completion within `timeout` (killing it past that) and returns its
/// status and output; stdin is closed.
pub fn run_bounded(label: &str, cmd: Command, timeout: Duration) -> Finished {
    let mut proc = Proc::spawn(label, cmd);
    proc.stdin = None;
    proc.wait(timeout)
}
