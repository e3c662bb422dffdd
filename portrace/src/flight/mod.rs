//! The flight recorder, `portrace record --dir DIR --rotate 10m --keep 12`: a rolling
//! window of recordings in a directory, so that after an incident the last hours are
//! there to `report` and `diagram`. Each file is a recording of its own (header, start,
//! an inventory of the sockets open at its start, its records, an end record with the
//! counts of its span); at most `--keep` of them are kept besides the one being written,
//! oldest removed first. [`FlightRecorder`] is an [`Output`] of the live engine, so any
//! command that runs the engine can keep a flight recording.
//!
//! - [`policy`]: names, when to rotate, what retention removes (pure);
//! - [`dir`]: the directory, used only through its descriptor;
//! - [`open_sockets`]: the sockets open at a moment, learned from the stream;
//! - [`sink`]: the rotating sink that ties them together.
//!
//! The first file is created (under its hidden name) before the kernel programs are
//! loaded, so that a directory that cannot be written fails the command at once; if the
//! run fails before tracing starts, it is removed.

pub mod dir;
pub mod open_sockets;
pub mod policy;
pub mod sink;

use std::fs::File;
use std::io::{self, IsTerminal as _};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

use self::dir::Dir;
use self::policy::{FileName, Namer, Policy};
use self::sink::RotatingSink;
use crate::output::Sink;
use crate::destination::{Output, Progress, RunSetup};
use crate::tracefile::status::StatusLine;
use crate::tracefile::WriteOptions;

/// `--rotate` when not given.
pub const DEFAULT_ROTATE: Duration = Duration::from_secs(600);
/// `--keep` when not given: with the default rotation, two hours.
pub const DEFAULT_KEEP: usize = 12;

/// What the flight recorder is asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlightOptions {
    pub dir: PathBuf,
    pub rotate: Duration,
    pub keep: usize,
    /// Rotate, too, once a file holds this many bytes.
    pub max_size: Option<u64>,
}

/// The flight recorder as an output of the live engine.
pub struct FlightRecorder {
    dir: Arc<Dir>,
    policy: Policy,
    options: WriteOptions,
    namer: Namer,
    /// The first file, created before tracing starts, until the engine opens the output.
    first: Option<(File, FileName)>,
    total: Arc<AtomicU64>,
    status: Option<StatusLine>,
}

impl FlightRecorder {
    /// Opens the directory (creating it if it does not exist) and creates the first file.
    pub fn create(flight: &FlightOptions, options: WriteOptions) -> anyhow::Result<FlightRecorder> {
        anyhow::ensure!(flight.keep >= 1, "--keep must be at least 1");
        let dir = Dir::open(&flight.dir)?;
        let mut namer = Namer::default();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128);
        let mut name = namer.next(now);
        let mut attempts = 0;
        let file = loop {
            match dir.create(&name.render()) {
                Ok(file) => break file,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 64 => {
                    attempts += 1;
                    namer.taken(name);
                    name = namer.next(now);
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot create a recording in {}", flight.dir.display())
                    })
                }
            }
        };
        Ok(FlightRecorder {
            dir: Arc::new(dir),
            policy: Policy { rotate: flight.rotate, max_size: flight.max_size, keep: flight.keep },
            options,
            namer,
            first: Some((file, name)),
            total: Arc::default(),
            status: None,
        })
    }
}

impl Drop for FlightRecorder {
    fn drop(&mut self) {
        // Tracing never started: the first file, still hidden, holds nothing.
        if let Some((file, name)) = self.first.take() {
            drop(file);
            let _ = self.dir.remove(&name.render());
        }
    }
}

impl Output for FlightRecorder {
    fn open(&mut self, setup: RunSetup) -> anyhow::Result<Box<dyn Sink + Send>> {
        let (file, name) = self.first.take().context("the flight recorder was opened twice")?;
        let sink = RotatingSink::new(
            Arc::clone(&self.dir),
            self.policy,
            self.options,
            setup,
            self.namer,
            file,
            name,
            Arc::clone(&self.total),
        );
        if io::stderr().is_terminal() {
            self.status = Some(StatusLine::new(self.dir.path().display().to_string(), Arc::clone(&self.total)));
        }
        Ok(Box::new(sink))
    }

    fn name(&self) -> String {
        "the flight recording".into()
    }

    fn banner(&self) -> String {
        let size = self.policy.max_size.map_or(String::new(), |m| format!(" or {m} bytes"));
        format!(
            "portrace: recording TCP state transitions into {}, a file every {:?}{size}, the last {} kept; Ctrl-C to stop",
            self.dir.path().display(),
            self.policy.rotate,
            self.policy.keep
        )
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
