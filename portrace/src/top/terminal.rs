//! The terminal while `portrace top` runs: raw mode and the alternate screen, the cursor
//! hidden, and standard error captured (what portrace would print there would scribble
//! over the screen; the lines go to the status bar instead, and are printed once the
//! screen is back). [`Screen`] sets it all up and puts it all back in its `Drop`; a panic
//! hook puts it back too before the panic message is printed, so the terminal is restored
//! on every way out.

use std::io::{self, BufRead as _, IsTerminal as _, Write as _};
use std::os::fd::{FromRawFd as _, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;

use crossterm::{cursor, execute, terminal};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

/// Whether the terminal is in our hands (raw mode, alternate screen).
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Standard error as it was, while it is captured.
static CAPTURE: Mutex<Option<Capture>> = Mutex::new(None);
static HOOK: Once = Once::new();

/// Standard error redirected into a pipe, and the thread reading it.
struct Capture {
    /// A duplicate of the real standard error, put back at the end.
    saved: RawFd,
    reader: Option<JoinHandle<()>>,
    /// Every line captured, to print once the screen is restored.
    lines: Arc<Mutex<Vec<String>>>,
}

/// Checks that `portrace top` can have a terminal: standard input and output must be one.
pub fn check_terminal() -> anyhow::Result<()> {
    if !io::stdout().is_terminal() || !io::stdin().is_terminal() {
        anyhow::bail!(
            "portrace top needs a terminal: its standard input and output are not one. \
             For a plain timeline that can be piped or saved, run `portrace` (or \
             `portrace replay FILE` for a recording)"
        );
    }
    Ok(())
}

/// The terminal, set up for the full-screen view until dropped.
pub struct Screen {
    pub terminal: Terminal<CrosstermBackend<io::Stdout>>,
}

impl Screen {
    /// Captures standard error (each line goes to `on_line` as well), enters raw mode and
    /// the alternate screen, hides the cursor.
    pub fn enter(on_line: impl Fn(String) + Send + 'static) -> anyhow::Result<Screen> {
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        capture_stderr(on_line)?;
        // From here on, any failure restores what was done.
        ACTIVE.store(true, Ordering::SeqCst);
        let set_up = (|| -> io::Result<Terminal<CrosstermBackend<io::Stdout>>> {
            terminal::enable_raw_mode()?;
            execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
            let mut t = Terminal::new(CrosstermBackend::new(io::stdout()))?;
            t.clear()?;
            Ok(t)
        })();
        match set_up {
            Ok(terminal) => Ok(Screen { terminal }),
            Err(e) => {
                restore();
                Err(anyhow::anyhow!("cannot set up the terminal: {e}"))
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves the alternate screen and raw mode, shows the cursor, puts standard error back
/// and prints what was captured. Does it once, however often it is called.
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let mut out = io::stdout();
        let _ = execute!(out, terminal::LeaveAlternateScreen, cursor::Show);
        let _ = terminal::disable_raw_mode();
        let _ = out.flush();
    }
    // A panic while the lock is held must not stop the terminal's restoration.
    let capture = match CAPTURE.lock() {
        Ok(mut c) => c.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    };
    if let Some(mut c) = capture {
        // SAFETY: `saved` is the duplicate of standard error made by capture_stderr, open
        // until here; dup2 onto 2 closes the pipe's write end, so the reader sees its end.
        unsafe {
            libc::dup2(c.saved, 2);
            libc::close(c.saved);
        }
        if let Some(reader) = c.reader.take() {
            // A child process that inherited standard error could hold the pipe open:
            // wait for the reader a little, not forever.
            let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
            while !reader.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
        let lines = std::mem::take(&mut *c.lines.lock().unwrap_or_else(|p| p.into_inner()));
        let mut err = io::stderr().lock();
        for line in lines {
            let _ = writeln!(err, "{line}");
        }
    }
}

fn capture_stderr(on_line: impl Fn(String) + Send + 'static) -> anyhow::Result<()> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        anyhow::bail!("cannot capture standard error: pipe: {}", io::Error::last_os_error());
    }
    let (read_end, write_end) = (fds[0], fds[1]);
    // SAFETY: plain descriptor calls on descriptors this function owns or on 2.
    let saved = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) };
    if saved < 0 || unsafe { libc::dup2(write_end, 2) } < 0 {
        let e = io::Error::last_os_error();
        // SAFETY: closing descriptors this function opened.
        unsafe {
            libc::close(read_end);
            libc::close(write_end);
            if saved >= 0 {
                libc::close(saved);
            }
        }
        anyhow::bail!("cannot capture standard error: {e}");
    }
    // SAFETY: the write end is now also open as 2; this copy is no longer needed.
    unsafe { libc::close(write_end) };
    // SAFETY: `read_end` is a pipe descriptor owned by nothing else; the File owns it now.
    let pipe = unsafe { std::fs::File::from_raw_fd(read_end) };
    let lines = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&lines);
    let reader = std::thread::Builder::new()
        .name("stderr".into())
        .spawn(move || {
            for line in io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                kept.lock().unwrap_or_else(|p| p.into_inner()).push(line.clone());
                on_line(line);
            }
        })
        .map_err(|e| {
            // SAFETY: `saved` is the real standard error, duplicated above.
            unsafe {
                libc::dup2(saved, 2);
                libc::close(saved);
            }
            anyhow::anyhow!("cannot start a thread: {e}")
        })?;
    *CAPTURE.lock().unwrap_or_else(|p| p.into_inner()) = Some(Capture { saved, reader: Some(reader), lines });
    Ok(())
}
