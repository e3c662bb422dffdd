//! Prometheus metrics of a live trace: the metric families and their registry
//! ([`Metrics`]), the sink that feeds them from the record stream ([`MetricsSink`]), the
//! owner labels and their cardinality cap ([`labels`]), the per-state socket counts and
//! their check against the kernel ([`states`]), and what the health endpoint answers
//! ([`health`]). Exposition is the `prometheus-client` crate's; serving it over HTTP is
//! the exporter's business (the serve module). docs/serve.md lists every metric.

pub mod health;
pub mod labels;
mod sink;
pub mod states;

use std::fmt;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabel as _, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use labels::OwnerLabels;
pub use sink::{Checker, Lister, MetricsSink};

/// The states whose time is measured, and what the time in each one says.
pub const TIMED_STATES: [crate::tcp_state::TcpState; 5] = [
    crate::tcp_state::TcpState::SynSent,
    crate::tcp_state::TcpState::Established,
    crate::tcp_state::TcpState::CloseWait,
    crate::tcp_state::TcpState::FinWait2,
    crate::tcp_state::TcpState::TimeWait,
];

/// Bucket bounds of the time-in-state histograms, in seconds: 100 µs (a loopback
/// handshake) to an hour (a long-lived connection), about three per decade.
pub const BUCKETS: [f64; 16] =
    [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

/// The labels of one series: up to two fixed ones, then the owner labels when enabled.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Labels {
    fixed: [Option<(&'static str, &'static str)>; 2],
    owner: OwnerLabels,
}

impl Labels {
    pub fn none() -> Labels {
        Labels { fixed: [None, None], owner: OwnerLabels::default() }
    }

    pub fn one(key: &'static str, value: &'static str) -> Labels {
        Labels { fixed: [Some((key, value)), None], owner: OwnerLabels::default() }
    }

    pub fn two(k1: &'static str, v1: &'static str, k2: &'static str, v2: &'static str) -> Labels {
        Labels { fixed: [Some((k1, v1)), Some((k2, v2))], owner: OwnerLabels::default() }
    }

    pub fn with_owner(mut self, owner: OwnerLabels) -> Labels {
        self.owner = owner;
        self
    }
}

impl EncodeLabelSet for Labels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        for (key, value) in self.fixed.iter().flatten() {
            (*key, *value).encode(encoder.encode_label())?;
        }
        if let Some(comm) = &self.owner.comm {
            ("comm", &**comm).encode(encoder.encode_label())?;
        }
        if let Some(port) = &self.owner.port {
            ("port", &**port).encode(encoder.encode_label())?;
        }
        if let Some(service) = &self.owner.service {
            ("service", &**service).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

fn state_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Every metric portrace exports, registered once.
pub struct Metrics {
    registry: Registry,
    pub transitions: Family<Labels, Counter>,
    pub sockets: Family<Labels, Gauge>,
    pub ends: Family<Labels, Counter>,
    pub state_seconds: Histograms,
    pub lost: Family<Labels, Counter>,
    pub alerts: Family<Labels, Counter>,
    pub features: Family<Labels, Gauge>,
    pub checks: Counter,
    pub drift: Family<Labels, Counter>,
    pub folded: Family<Labels, Counter>,
    pub label_values: Family<Labels, Gauge>,
    pub ring_size: Gauge,
    /// How full the ring buffer was at each read of it, as a share of its size.
    pub ring_fill: Histogram,
    /// Records read from the ring buffer (`rate()` gives records per second).
    pub records: Counter,
    pub start_time: Gauge,
    pub build_info: Family<Labels, Gauge>,
}

/// Buckets of the ring buffer's fill, as a share of its size: the kernel wakes the reader
/// at a quarter, and records are lost at 1.
pub const FILL_BUCKETS: [f64; 9] = [0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0];

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("portrace");
        let transitions = Family::<Labels, Counter>::default();
        let sockets = Family::<Labels, Gauge>::default();
        let ends = Family::<Labels, Counter>::default();
        let state_seconds: Histograms = Family::new_with_constructor(state_histogram);
        let lost = Family::<Labels, Counter>::default();
        let alerts = Family::<Labels, Counter>::default();
        let features = Family::<Labels, Gauge>::default();
        let checks = Counter::default();
        let drift = Family::<Labels, Counter>::default();
        let folded = Family::<Labels, Counter>::default();
        let label_values = Family::<Labels, Gauge>::default();
        let ring_size = Gauge::default();
        let ring_fill = Histogram::new(FILL_BUCKETS);
        let records = Counter::default();
        let start_time = Gauge::default();
        let build_info = Family::<Labels, Gauge>::default();
        registry.register(
            "transitions",
            "TCP state transitions, by the state left (from) and the state entered (to)",
            transitions.clone(),
        );
        registry.register(
            "sockets",
            "TCP sockets in each state: the start-up inventory kept up to date by the transitions \
             and checked against the kernel's socket table",
            sockets.clone(),
        );
        registry.register(
            "connection_ends",
            "Sockets closed, by why they ended (refused, connect_timeout, reset_by_peer, reset_sent, \
             active_close, passive_close, time_wait_killed, ...)",
            ends.clone(),
        );
        registry.register(
            "state_duration_seconds",
            "Time a socket spent in a state, observed when it left it: SYN_SENT is connect latency, \
             ESTABLISHED a connection's lifetime",
            state_seconds.clone(),
        );
        registry.register(
            "lost_transitions",
            "Transitions lost before they reached portrace, by cause",
            lost.clone(),
        );
        registry.register("alerts", "Alerts raised, by kind and severity", alerts.clone());
        registry.register(
            "feature_enabled",
            "Whether each tracing feature works on this kernel (1) or not (0)",
            features.clone(),
        );
        registry.register(
            "socket_checks",
            "Checks of the per-state socket counts against the kernel's socket table",
            checks.clone(),
        );
        registry.register(
            "socket_drift",
            "Sockets the per-state counts had wrong, by state, found and corrected by the checks",
            drift.clone(),
        );
        registry.register(
            "label_values_folded",
            "Observations whose owner label value was folded into \"other\" by the cardinality cap, by label",
            folded.clone(),
        );
        registry.register(
            "label_values",
            "Distinct values of each owner label with their own series (at most the cap)",
            label_values.clone(),
        );
        registry.register("ring_size_bytes", "Size of the kernel's ring buffer", ring_size.clone());
        registry.register(
            "ring_fill_ratio",
            "How full the kernel's ring buffer was when portrace read it, as a share of its size, one \
             observation per read (records are lost at 1: raise --ring-size when reads come near it)",
            ring_fill.clone(),
        );
        registry.register("ring_records", "Records read from the kernel's ring buffer", records.clone());
        registry.register("start_time_seconds", "When tracing started, in seconds since the Unix epoch", start_time.clone());
        registry.register("build_info", "portrace's version (the value is always 1)", build_info.clone());
        build_info.get_or_create(&Labels::one("version", crate::output::VERSION)).set(1);
        for state in states::COUNTED {
            sockets.get_or_create(&Labels::one("state", state.name())).set(0);
        }
        for cause in crate::record::LossCause::ALL {
            lost.get_or_create(&Labels::one("cause", cause.name())).inc_by(0);
        }
        Arc::new(Metrics {
            registry,
            transitions,
            sockets,
            ends,
            state_seconds,
            lost,
            alerts,
            features,
            checks,
            drift,
            folded,
            label_values,
            ring_size,
            ring_fill,
            records,
            start_time,
            build_info,
        })
    }

    /// The exposition: OpenMetrics text (which Prometheus reads), ending in `# EOF`.
    pub fn encode(&self, out: &mut String) -> fmt::Result {
        prometheus_client::encoding::text::encode(out, &self.registry)
    }
}

/// The `Content-Type` of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `Content-Type` of [`to_text_format`]'s text.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The crate's OpenMetrics text as Prometheus's older text format (0.0.4), for clients
/// that do not ask for OpenMetrics (`promtool check metrics`, curl, older scrapers). The
/// samples are the same; what differs is how a family is named: OpenMetrics names a
/// counter family without the `_total` its samples carry, the older format with it. So
/// counters' `HELP` and `TYPE` lines get `_total`, `unknown` becomes `untyped`, and the
/// `UNIT` and `EOF` lines, which the older format lacks, go.
pub fn to_text_format(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut lines = openmetrics.lines().peekable();
    while let Some(line) = lines.next() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let is_counter = lines.peek().is_some_and(|next| *next == format!("# TYPE {name} counter"));
            let suffix = if is_counter { "_total" } else { "" };
            out.push_str(&format!("# HELP {name}{suffix} {help}\n"));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let line = match kind {
                "counter" => format!("# TYPE {name}_total counter"),
                "unknown" => format!("# TYPE {name} untyped"),
                _ => line.to_string(),
            };
            out.push_str(&line);
            out.push('\n');
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::record::{Comm, Endpoints, Owner, OwnerSource, Timestamp, Transition};
    use crate::tcp_state::TcpState;

    /// A transition of an nginx socket on port 8080, in `(from, to)`.
    pub(crate) fn transition(from: TcpState, to: TcpState) -> Transition {
        Transition {
            time: Timestamp { mono_ns: 1_000, unix_ns: 1_000 },
            pid: 7,
            comm: Comm::new("nginx"),
            ends: Endpoints {
                saddr: [127, 0, 0, 1].into(),
                sport: 8080,
                daddr: "0.0.0.0".parse().unwrap(),
                dport: 0,
                netns: 1,
            },
            owner: Some(Owner { pid: 7, comm: Comm::new("nginx"), source: OwnerSource::Syscall, cgroup: 0 }),
            ..Transition::example(1, from, to)
        }
    }

    #[test]
    fn labels_encode_in_order_and_escaped() {
        let metrics = Metrics::new();
        let owner = OwnerLabels { comm: Some("a\"b".into()), port: Some("80".into()), service: Some("nginx.service".into()) };
        metrics.transitions.get_or_create(&Labels::two("from", "LISTEN", "to", "CLOSE").with_owner(owner)).inc();
        let mut text = String::new();
        metrics.encode(&mut text).unwrap();
        assert!(
            text.contains("portrace_transitions_total{from=\"LISTEN\",to=\"CLOSE\",comm=\"a\\\"b\",port=\"80\",service=\"nginx.service\"} 1\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
        assert!(text.contains("portrace_sockets{state=\"TIME_WAIT\"} 0\n"), "every state from the start: {text}");
    }

    #[test]
    fn the_older_text_format_names_counter_families_with_total() {
        let metrics = Metrics::new();
        metrics.transitions.get_or_create(&Labels::two("from", "CLOSE", "to", "LISTEN")).inc();
        let mut open = String::new();
        metrics.encode(&mut open).unwrap();
        let text = to_text_format(&open);
        assert!(text.contains("# HELP portrace_transitions_total TCP state transitions"), "{text}");
        assert!(text.contains("# TYPE portrace_transitions_total counter\n"), "{text}");
        assert!(text.contains("portrace_transitions_total{from=\"CLOSE\",to=\"LISTEN\"} 1\n"), "{text}");
        assert!(text.contains("# TYPE portrace_sockets gauge\n# portrace_sockets") || text.contains("# TYPE portrace_sockets gauge\nportrace_sockets"), "{text}");
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
        let samples = |t: &str| t.lines().filter(|l| !l.starts_with('#')).map(str::to_string).collect::<Vec<_>>();
        assert_eq!(samples(&open), samples(&text), "the samples are the same");
    }
}
