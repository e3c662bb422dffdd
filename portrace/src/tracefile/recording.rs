//! `portrace record`'s output: the recording file, created before tracing starts so that a
//! bad path fails at once, handed to the live engine as a [`FileSink`], with the status
//! line on a terminal. The file is made by [`crate::outfile`]: mode 0600, under a
//! temporary name until tracing has started, then renamed to the name given (replacing an
//! existing file only with `--force`), so a failed start leaves nothing behind and keeps
//! the file it would have replaced. It is synced when the header is written, every
//! [`SYNC_EVERY`](super::writer::SYNC_EVERY) bytes and at its end.

use std::io::{self, IsTerminal as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context as _;

use super::status::StatusLine;
use crate::outfile::{Pending, RECORDING_MODE};
use super::{FileSink, WriteOptions};
use crate::output::Sink;
use crate::destination::{Output, Progress, RunSetup};

/// A recording being made.
pub struct Recording {
    path: PathBuf,
    file: Option<Pending>,
    /// Whether the file has its name: tracing started.
    committed: bool,
    options: WriteOptions,
    written: Arc<AtomicU64>,
    status: Option<StatusLine>,
}

impl Recording {
    /// Creates the file for `path`, under a temporary name; an existing file at `path` is an
    /// error unless `force`, and a symbolic link always is.
    pub fn create(path: &Path, force: bool, options: WriteOptions) -> anyhow::Result<Recording> {
        let file = Pending::create(path, RECORDING_MODE, force).context("cannot create the recording")?;
        Ok(Recording {
            path: path.to_path_buf(),
            file: Some(file),
            committed: false,
            options,
            written: Arc::default(),
            status: None,
        })
    }

    /// Ends the recording with the run's `result`. If the run failed before tracing
    /// started, the temporary file is removed and whatever was at the path is untouched;
    /// if it failed after but wrote nothing, the empty file is removed.
    pub fn finish(mut self, result: anyhow::Result<()>) -> anyhow::Result<()> {
        drop(self.file.take());
        if result.is_err() && self.committed && self.written.load(Ordering::Relaxed) == 0 {
            let _ = std::fs::remove_file(&self.path);
        }
        result
    }
}

impl Output for Recording {
    fn open(&mut self, setup: RunSetup) -> anyhow::Result<Box<dyn Sink + Send>> {
        let pending = self.file.take().context("the recording was opened twice")?;
        // The programs are attached: the recording takes its name now.
        let file = pending.commit().context("cannot create the recording")?;
        self.committed = true;
        let sink = FileSink::new(file, self.path.display().to_string(), setup, self.options).syncing(|f| f.sync_data());
        self.written = sink.bytes_written();
        if io::stderr().is_terminal() {
            self.status = Some(StatusLine::new(self.path.display().to_string(), Arc::clone(&self.written)));
        }
        Ok(Box::new(sink))
    }

    fn name(&self) -> String {
        "the recording".into()
    }

    fn banner(&self) -> String {
        format!("portrace: recording TCP state transitions to {}; Ctrl-C to stop", self.path.display())
    }

    fn shows_progress(&self) -> bool {
        self.status.is_some()
    }

    fn progress(&mut self, p: &Progress) {
        if let Some(status) = &mut self.status {
            status.show(p.transitions, p.lost, p.elapsed);
        }
    }

    fn stopped(&mut self) {
        if let Some(status) = &mut self.status {
            status.clear();
        }
    }
}
