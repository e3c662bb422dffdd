//! The status line `portrace record` keeps on a terminal's stderr while it records: how
//! many transitions were written, how many lost, how large the file is and how long it has
//! run, redrawn in place (carriage return, then erase to the end of the line) a few times
//! a second, and erased before anything else is printed.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the line is redrawn.
pub const INTERVAL: Duration = Duration::from_millis(250);

/// The status line of one recording.
pub struct StatusLine {
    path: String,
    bytes: Arc<AtomicU64>,
    shown: bool,
    line: String,
}

impl StatusLine {
    /// A status line for the recording at `path`, whose writer counts its bytes in `bytes`.
    pub fn new(path: impl Into<String>, bytes: Arc<AtomicU64>) -> StatusLine {
        StatusLine { path: path.into(), bytes, shown: false, line: String::with_capacity(128) }
    }

    /// The line's text.
    pub fn text(&mut self, transitions: u64, lost: u64, elapsed: Duration) -> &str {
        use std::fmt::Write as _;
        self.line.clear();
        let _ = write!(
            self.line,
            "portrace: recording to {}: {transitions} transitions, {lost} lost, {}, {}",
            self.path,
            human_bytes(self.bytes.load(Ordering::Relaxed)),
            clock(elapsed)
        );
        &self.line
    }

    /// Redraws the line on stderr.
    pub fn show(&mut self, transitions: u64, lost: u64, elapsed: Duration) {
        let text = format!("\r{}\x1b[K", self.text(transitions, lost, elapsed));
        let mut err = io::stderr().lock();
        // A status line that cannot be shown is not worth stopping a recording for.
        let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
        self.shown = true;
    }

    /// Erases the line, if it was shown, so that what follows starts on a clean line.
    pub fn clear(&mut self) {
        if self.shown {
            let mut err = io::stderr().lock();
            let _ = err.write_all(b"\r\x1b[K").and_then(|()| err.flush());
            self.shown = false;
        }
    }
}

/// `512 B`, `1.5 KiB`, `12.0 MiB`, `3.2 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `MM:SS`, or `H:MM:SS` from an hour on.
pub fn clock(elapsed: Duration) -> String {
    let s = elapsed.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{:02}:{:02}", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12 << 20), "12.0 MiB");
        assert_eq!(human_bytes(u64::MAX), "16777216.0 TiB");
        assert_eq!(clock(Duration::from_secs(83)), "01:23");
        assert_eq!(clock(Duration::from_secs(3723)), "1:02:03");
    }

    #[test]
    fn the_line_says_everything_on_one_line() {
        let bytes = Arc::new(AtomicU64::new(3 << 20));
        let mut line = StatusLine::new("trace.ptr", bytes);
        let text = line.text(1234, 5, Duration::from_secs(61)).to_string();
        assert_eq!(text, "portrace: recording to trace.ptr: 1234 transitions, 5 lost, 3.0 MiB, 01:01");
        assert!(!text.contains('\n'));
    }
}
