//! `portrace record`'s output: the recording file, created before tracing starts so that a
//! bad path fails at once, handed to the live engine as a [`FileSink`], with the status
//! line on a terminal. A file this command created and never wrote to (tracing could not
//! start) is removed again, so a failed attempt leaves nothing behind.

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context as _;

use super::status::StatusLine;
use super::{FileSink, RunSetup, WriteOptions};
use crate::output::Sink;
use crate::run::{Output, Progress};

/// A recording being made.
pub struct Recording {
    path: PathBuf,
    file: Option<File>,
    options: WriteOptions,
    written: Arc<AtomicU64>,
    status: Option<StatusLine>,
}

impl Recording {
    /// Creates the file at `path`; an existing file is an error unless `force`.
    pub fn create(path: &Path, force: bool, options: WriteOptions) -> anyhow::Result<Recording> {
        let mut open = OpenOptions::new();
        open.write(true);
        if force {
            open.create(true).truncate(true);
        } else {
            open.create_new(true);
        }
        let file = open.open(path).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => anyhow::anyhow!(
                "{} already exists: choose another name, or add --force to overwrite it",
                path.display()
            ),
            _ => anyhow::anyhow!("cannot create the recording {}: {e}", path.display()),
        })?;
        Ok(Recording { path: path.to_path_buf(), file: Some(file), options, written: Arc::default(), status: None })
    }

    /// Ends the recording with the run's `result`. If the run failed before anything was
    /// written, the empty file is removed.
    pub fn finish(self, result: anyhow::Result<()>) -> anyhow::Result<()> {
        if result.is_err() && self.written.load(Ordering::Relaxed) == 0 {
            let _ = std::fs::remove_file(&self.path);
        }
        result
    }
}

impl Output for Recording {
    fn open(&mut self, setup: RunSetup) -> anyhow::Result<Box<dyn Sink + Send>> {
        let file = self.file.take().context("the recording was opened twice")?;
        let sink = FileSink::new(file, self.path.display().to_string(), setup, self.options);
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
