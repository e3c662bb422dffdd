//! `portrace serve`: the live trace as Prometheus metrics over HTTP. Binds its port first
//! (a busy port or a foreign address fails before anything is loaded), starts the HTTP
//! thread ([`http`]), then runs the live trace ([`crate::engine::trace`]) into a
//! [`MetricsSink`], with, when given, a second output beside it fed the same records
//! through a [`Tee`].

pub mod http;
pub mod listen;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::alerts::PortRange;
use crate::clock::monotonic_ns;
use crate::filter::FilterSpec;
use crate::inventory;
use crate::metrics::health::Health;
use crate::metrics::labels::OwnerLabeler;
use crate::metrics::states::StateTable;
use crate::metrics::{Checker, Metrics, MetricsSink};
use crate::output::{Sink, Tee};
use crate::preflight;
use crate::record::{SocketRecord, Timestamp};
use crate::destination::{Output, RunSetup};
use crate::engine::{self, TraceOptions};
use crate::tcp_state::TcpState;

/// `portrace serve`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeConfig {
    /// The trace; its output options are unused.
    pub trace: TraceOptions,
    pub listen: SocketAddr,
    /// A flight recorder kept beside the metrics (`--record-dir`).
    pub record: Option<Recording>,
    /// Label series with the owner's process name and service port.
    pub owner_labels: bool,
    /// Distinct values kept per owner label; the rest fold into `other`.
    pub label_limit: usize,
    /// How often the per-state counts are checked against the kernel; `None`: never.
    pub check_interval: Option<Duration>,
}

/// The flight recorder `serve --record-dir` keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recording {
    pub flight: crate::flight::FlightOptions,
    pub compress: bool,
}

/// Runs `portrace serve` until a signal (or `--duration`) ends it; with `--record-dir`,
/// keeping a flight recorder of the same records.
pub async fn serve(config: ServeConfig) -> anyhow::Result<u8> {
    let also: Option<Box<dyn Output>> = match &config.record {
        Some(recording) => {
            preflight::check_privileges()?;
            let options = crate::tracefile::WriteOptions { compress: recording.compress };
            Some(Box::new(crate::flight::FlightRecorder::create(&recording.flight, options)?))
        }
        None => None,
    };
    serve_with(config, also).await
}

/// Runs `portrace serve`, feeding `also` (a recording, say) the same records as the
/// metrics.
pub async fn serve_with(config: ServeConfig, also: Option<Box<dyn Output>>) -> anyhow::Result<u8> {
    preflight::check_privileges()?;
    let listener = listen::bind(config.listen)?;
    let listen = listener.local_addr().unwrap_or(config.listen);
    let metrics = Metrics::new();
    metrics.ring_size.set(i64::from(config.trace.ring_size));
    let health = Arc::new(Health::default());
    http::spawn(listener, metrics.clone(), health.clone())?;
    let mut out = Serve { config: config.clone(), listen, metrics, health, also };
    engine::trace(&config.trace, &mut out).await
}

struct Serve {
    config: ServeConfig,
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    also: Option<Box<dyn Output>>,
}

impl Output for Serve {
    fn open(&mut self, setup: RunSetup) -> anyhow::Result<Box<dyn Sink + Send>> {
        let owners = OwnerLabeler::new(self.config.owner_labels, self.config.label_limit, PortRange::of_this_host());
        // The kernel's table lists whole sockets, without owners: it can be held against
        // the counts only when the filter keeps whole sockets too.
        let filter = &self.config.trace.filter;
        let checker = match self.config.check_interval {
            Some(every) if filter.keeps_whole_sockets() => {
                Some(Checker::new(every.as_nanos() as u64, lister(filter.clone())))
            }
            _ => None,
        };
        let sink: Box<dyn Sink + Send> =
            Box::new(MetricsSink::new(self.metrics.clone(), self.health.clone(), owners, checker));
        match &mut self.also {
            Some(also) => Ok(Box::new(Tee::new(sink, also.open(setup)?))),
            None => Ok(sink),
        }
    }

    fn name(&self) -> String {
        match &self.also {
            Some(also) => also.name(),
            None => "the metrics".into(),
        }
    }

    fn banner(&self) -> String {
        format!("portrace: serving metrics on http://{}/metrics; Ctrl-C to stop", self.listen)
    }

    fn tracing(&mut self) {
        if let Some(also) = &mut self.also {
            also.tracing();
        }
    }

    fn stopped(&mut self) {
        self.health.stopped();
        if let Some(also) = &mut self.also {
            also.stopped();
        }
    }
}

/// Lists the kernel's TCP sockets that `filter` keeps, per state. A listing some of whose
/// namespaces changed while being dumped is not used (the next check takes another).
fn lister(filter: FilterSpec) -> crate::metrics::Lister {
    Box::new(move || {
        let listed_ns = monotonic_ns();
        let mut warnings = Vec::new();
        let dumped = match inventory::dump_namespaces(&mut warnings) {
            Ok(dumped) => dumped,
            Err(e) => {
                eprintln!("portrace: cannot list the sockets to check the per-state counts: {e}");
                return None;
            }
        };
        let mut table = StateTable::default();
        for ns in &dumped {
            if !ns.whole {
                return None;
            }
            for s in &ns.sockets {
                let Some(state) = TcpState::from_kernel(s.state) else { continue };
                let record = SocketRecord {
                    time: Timestamp { mono_ns: listed_ns, unix_ns: 0 },
                    socket: 0,
                    family: s.family,
                    ends: s.ends(ns.netns),
                    state,
                    owner: None,
                    inode: u64::from(s.inode),
                    uid: s.uid,
                    cookie: s.cookie,
                };
                if filter.matches_socket(&record) {
                    table.add(state, 1);
                }
            }
        }
        Some((table, listed_ns))
    })
}
