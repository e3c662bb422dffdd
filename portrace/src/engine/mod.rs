//! The engines that produce the stream of records: the live run ([`live::trace`]: probes
//! attached to the kernel, a session draining their ring buffer until the run ends) and
//! the replay of a recording ([`replay::replay_into`]). Both hand every record to a
//! [`crate::pipeline::Pipeline`]; what a live run's records go to is a
//! [`crate::destination::Output`].
//!
//! - `probes`: the checks, the kernel's layouts and the loading of the programs;
//! - [`inventory`]: the sockets that existed before the trace, and `--snapshot`;
//! - `session`: the event loop, the loss ledger's readings, the end-of-run check;
//! - `pace`: how often the event loop drains the ring;
//! - [`live`]: a live run from start to end, with a traced command if one is given;
//! - [`replay`]: a recording read back.

pub mod inventory;
pub mod live;
mod pace;
mod probes;
pub mod replay;
mod session;

use std::time::Duration;

use crate::alerts::sink::AlertOptions;
use crate::command::CommandSpec;
use crate::filter::FilterSpec;

pub use self::live::trace;

/// What a live run traces, and how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceOptions {
    pub filter: FilterSpec,
    /// `--duration`: the run ends after this long.
    pub duration: Option<Duration>,
    /// `--count`: the run ends after this many transitions.
    pub count: Option<u64>,
    /// The kernel ring buffer's size in bytes.
    pub ring_size: u32,
    /// Print a report of the trace on stderr at the end.
    pub summary: bool,
    /// Say how long each start-up stage took.
    pub verbose: bool,
    /// The command to run and trace alone (`portrace -- CMD`).
    pub command: Option<CommandSpec>,
    pub alerts: AlertOptions,
}

impl TraceOptions {
    /// A trace of what `filter` keeps, until stopped, with the default alerts.
    pub fn new(filter: FilterSpec, ring_size: u32) -> TraceOptions {
        TraceOptions {
            filter,
            duration: None,
            count: None,
            ring_size,
            summary: false,
            verbose: false,
            command: None,
            alerts: AlertOptions::default(),
        }
    }
}
