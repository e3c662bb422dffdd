//! Where a live run's records go, chosen by the command that runs it: standard output,
//! a recording, the flight recorder, the metrics exporter, the screen of `top`, the
//! diagram's collector. The engine opens the [`Output`] once the kernel programs are
//! attached, with what it learned attaching them ([`RunSetup`]), and tells it how the run
//! goes.

use std::time::Duration;

use portrace_ebpf::{Layout, SockLayout};

use crate::filter::FilterSpec;
use crate::output::Sink;

/// What the live engine knows about a run beyond the start record, for the header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSetup {
    pub clock_offset_ns: i128,
    pub layout: Layout,
    pub sock_layout: Option<SockLayout>,
    pub filter: FilterSpec,
    pub ring_size: u32,
    /// The command traced, its arguments.
    pub command: Option<Vec<String>>,
}

/// Where a trace's records go: standard output in the chosen format, or a recording.
pub trait Output {
    /// The sink for the run, made once the kernel programs are attached. `setup` says
    /// what a recording's header needs beyond the start record.
    fn open(&mut self, setup: RunSetup) -> anyhow::Result<Box<dyn Sink + Send>>;
    /// What the output is, for messages (`writing {name}: ...`): "output" for standard
    /// output, "the recording" for a recording, whose errors name its path.
    fn name(&self) -> String;
    /// The line printed on a terminal's stderr when tracing starts (none if empty).
    fn banner(&self) -> String;
    /// Whether [`Output::progress`] is wanted (a few times a second while tracing).
    fn shows_progress(&self) -> bool {
        false
    }
    fn progress(&mut self, _progress: &Progress) {}
    /// The inventory is written: from now on, every record is a change as it happens.
    fn tracing(&mut self) {}
    /// Tracing is over; called before the summary is printed.
    fn stopped(&mut self) {}
    /// Whether the records go to standard output (then a traced command's own standard
    /// output goes to standard error, away from them).
    fn uses_stdout(&self) -> bool {
        false
    }
}

/// How a run is going.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub transitions: u64,
    pub lost: u64,
    pub elapsed: Duration,
}
