//! A program in a pseudo-terminal, as a user would run it in a terminal emulator:
//! [`Pty::spawn`] opens a pty of a given size, starts the program as the session leader
//! with the pty as its controlling terminal, and keeps everything it writes; the test reads
//! the screen through a VT100 parser, types keys, waits for the exit within a deadline,
//! and asks whether the terminal was left in its normal (cooked, echoing) mode. The child
//! is killed and reaped on drop if it is still running.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(20);

/// A running program in a pseudo-terminal.
pub struct Pty {
    label: String,
    child: Option<Child>,
    master: std::fs::File,
    /// The terminal side, kept open here so its modes can be read after the child exits.
    slave: OwnedFd,
    output: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    size: (u16, u16),
}

fn check(label: &str, rc: libc::c_int) {
    assert!(rc >= 0, "{label}: {}", std::io::Error::last_os_error());
}

impl Pty {
    /// Starts `program args...` in a `cols` x `rows` pseudo-terminal, with `TERM=xterm`.
    pub fn spawn(program: &Path, args: &[&str], cols: u16, rows: u16) -> Pty {
        Pty::spawn_as(program, args, cols, rows, None)
    }

    /// [`Pty::spawn`], as user and group `uid` when given (an unprivileged run).
    pub fn spawn_as(program: &Path, args: &[&str], cols: u16, rows: u16, uid: Option<u32>) -> Pty {
        let (mut master, mut slave): (RawFd, RawFd) = (-1, -1);
        let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: both out-pointers are valid; the name may be null; `size` is read only.
        let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
        check("openpty", rc);
        // SAFETY: openpty returned two open descriptors that nothing else owns.
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        for fd in [master.as_raw_fd(), slave.as_raw_fd()] {
            // SAFETY: plain fcntl on an open descriptor: neither leaks into the child as is.
            check("fcntl", unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) });
        }
        let stdio = || Stdio::from(slave.try_clone().expect("dup of the pty"));
        let mut cmd = Command::new(program);
        cmd.args(args).env("TERM", "xterm").stdin(stdio()).stdout(stdio()).stderr(stdio());
        // SAFETY: setsid and ioctl are async-signal-safe; the child makes its standard
        // input (the pty) its controlling terminal, as a terminal emulator's shell has it.
        unsafe {
            if let Some(uid) = uid {
                std::os::unix::process::CommandExt::uid(&mut cmd, uid);
                std::os::unix::process::CommandExt::gid(&mut cmd, uid);
            }
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let label = format!("{} {}", program.display(), args.join(" "));
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {label}: {e}"));
        drop(cmd);
        let master = std::fs::File::from(master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (output, stop) = (Arc::clone(&output), Arc::clone(&stop));
            let fd = master.as_raw_fd();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
                    // SAFETY: one valid pollfd; the descriptor outlives this thread (joined
                    // before the File is dropped).
                    let ready = unsafe { libc::poll(&mut pfd, 1, POLL.as_millis() as i32) };
                    if ready > 0 {
                        // SAFETY: `buf` is valid for its length.
                        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                        if n > 0 {
                            output.lock().unwrap().extend_from_slice(&buf[..n as usize]);
                            continue;
                        }
                    }
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if ready > 0 {
                        // Readable but nothing read (hang-up): do not spin.
                        std::thread::sleep(POLL);
                    }
                }
            })
        };
        Pty { label, child: Some(child), master, slave, output, stop, reader: Some(reader), size: (cols, rows) }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Everything the program wrote so far, escapes included.
    pub fn raw(&self) -> Vec<u8> {
        self.output.lock().unwrap().clone()
    }

    /// The screen as a terminal shows it now.
    pub fn screen(&self) -> String {
        let mut parser = vt100::Parser::new(self.size.1, self.size.0, 0);
        parser.process(&self.raw());
        parser.screen().contents()
    }

    /// Waits until the screen satisfies `want`; panics with the screen after `timeout`.
    pub fn wait_screen(&mut self, what: &str, timeout: Duration, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if want(&screen) {
                return screen;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("{} exited ({status}) before the screen showed {what}:\n{screen}", self.label);
            }
            assert!(Instant::now() < deadline, "{}: the screen did not show {what} within {timeout:?}:\n{screen}", self.label);
            std::thread::sleep(POLL);
        }
    }

    /// Types `keys`.
    pub fn type_keys(&mut self, keys: &[u8]) {
        self.master.write_all(keys).and_then(|()| self.master.flush()).expect("writing to the pty");
    }

    /// Waits for the program to exit; panics with the screen after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("not waited for yet");
        loop {
            if let Some(status) = child.try_wait().expect("waitpid") {
                self.child = None;
                // Let the reader take what the program wrote last.
                std::thread::sleep(POLL * 3);
                return status;
            }
            if Instant::now() >= deadline {
                let screen = self.screen();
                panic!("{} did not exit within {timeout:?}:\n{screen}", self.label);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Whether the terminal is in its normal mode: canonical input, echo, signals.
    pub fn cooked(&self) -> bool {
        // SAFETY: termios is plain data, filled in by tcgetattr on an open descriptor.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        check("tcgetattr", unsafe { libc::tcgetattr(self.slave.as_raw_fd(), &mut t) });
        let want = libc::ICANON | libc::ECHO | libc::ISIG;
        t.c_lflag & want == want
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}
