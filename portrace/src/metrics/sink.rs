//! The sink that turns the record stream into metrics. It keeps no per-socket state:
//! each transition carries what its metrics need (its states, the time spent in the
//! state it left, why it ended, its owner); the per-state counts are ten integers, the
//! owner labels a capped table.

use std::io;
use std::sync::Arc;

use crate::alerts::Alert;
use crate::metrics::health::Health;
use crate::metrics::labels::OwnerLabeler;
use crate::metrics::states::{Correction, StateCounts, StateTable, COUNTED};
use crate::metrics::{Labels, Metrics, TIMED_STATES};
use crate::output::{Sink, Start};
use crate::record::{Lost, NetnsInfo, SocketRecord, Timestamp, Transition};
use crate::summary::Summary;
use crate::tcp_state::TcpState;

/// How long after a listing the transitions made before it are taken to have been read
/// (the ring buffer is drained every 10 ms while records arrive, every 80 ms at most).
const SETTLE_NS: u64 = 200_000_000;

/// Lists the kernel's sockets per state: the counts and when (monotonic ns) they were
/// taken; `None` when they could not be (the check is skipped that time).
pub type Lister = Box<dyn FnMut() -> Option<(StateTable, u64)> + Send>;

/// The periodic check of the per-state counts against the kernel's socket table.
pub struct Checker {
    pub interval_ns: u64,
    pub list: Lister,
    next_ns: u64,
}

impl Checker {
    pub fn new(interval_ns: u64, list: Lister) -> Checker {
        Checker { interval_ns, list, next_ns: 0 }
    }
}

/// Feeds [`Metrics`] from the records.
pub struct MetricsSink {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    owners: OwnerLabeler,
    states: StateCounts,
    checker: Option<Checker>,
    /// Folded observations already added to the counter, per label.
    folded_reported: [u64; 3],
}

impl MetricsSink {
    pub fn new(metrics: Arc<Metrics>, health: Arc<Health>, owners: OwnerLabeler, checker: Option<Checker>) -> MetricsSink {
        MetricsSink { metrics, health, owners, states: StateCounts::default(), checker, folded_reported: [0; 3] }
    }

    fn show_state(&self, state: TcpState) {
        if COUNTED.contains(&state) {
            self.metrics.sockets.get_or_create(&Labels::one("state", state.name())).set(self.states.get(state));
        }
    }

    fn apply(&self, correction: &Correction) {
        self.metrics.checks.inc();
        for (state, delta) in correction.delta.iter() {
            if delta != 0 {
                self.metrics.drift.get_or_create(&Labels::one("state", state.name())).inc_by(delta.unsigned_abs());
            }
            self.show_state(state);
        }
    }

    fn report_folded(&mut self) {
        for (i, (label, folded)) in self.owners.folded().into_iter().enumerate() {
            if folded > self.folded_reported[i] {
                self.metrics.folded.get_or_create(&Labels::one("label", label)).inc_by(folded - self.folded_reported[i]);
                self.folded_reported[i] = folded;
            }
        }
        for (label, kept) in self.owners.kept() {
            self.metrics.label_values.get_or_create(&Labels::one("label", label)).set(kept as i64);
        }
    }

    /// Starts a check when one is due, applies it once settled.
    fn check(&mut self, now_ns: u64) {
        let Some(checker) = &mut self.checker else { return };
        if self.states.checking() {
            if let Some(correction) = self.states.settle(now_ns, SETTLE_NS) {
                self.apply(&correction);
            }
        } else if now_ns >= checker.next_ns {
            checker.next_ns = now_ns.saturating_add(checker.interval_ns);
            if let Some((listing, listed_ns)) = (checker.list)() {
                self.states.listed(listing, listed_ns);
            }
        }
    }
}

impl Sink for MetricsSink {
    fn start(&mut self, start: &Start) -> io::Result<()> {
        for (feature, state) in start.features.iter() {
            self.metrics.features.get_or_create(&Labels::one("feature", feature.key())).set(i64::from(state.on));
        }
        self.metrics.start_time.set((start.time.unix_ns / 1_000_000_000) as i64);
        let needed = super::health::needed(self.owners.enabled());
        self.health.started(&start.features, &needed);
        // The first check comes one interval after the start: the inventory is fresh.
        if let Some(checker) = &mut self.checker {
            checker.next_ns = start.time.mono_ns.saturating_add(checker.interval_ns);
        }
        Ok(())
    }

    fn socket(&mut self, s: &SocketRecord) -> io::Result<()> {
        self.states.socket(s.state);
        self.show_state(s.state);
        Ok(())
    }

    fn netns(&mut self, n: &NetnsInfo) -> io::Result<()> {
        if let Some(range) = n.port_range {
            self.owners.namespace(n.netns, range);
        }
        Ok(())
    }

    fn cgroup(&mut self, g: &crate::record::CgroupInfo) -> io::Result<()> {
        self.owners.cgroup(g);
        Ok(())
    }

    fn ring_read(&mut self, read: &crate::output::RingRead) -> io::Result<()> {
        self.metrics.ring_fill.observe(read.fill());
        self.metrics.records.inc_by(read.records);
        Ok(())
    }

    fn transition(&mut self, t: &Transition) -> io::Result<()> {
        let owner = self.owners.of(t);
        let m = &self.metrics;
        let edge = Labels::two("from", t.oldstate.name(), "to", t.newstate.name()).with_owner(owner.clone());
        m.transitions.get_or_create(&edge).inc();
        if let Some(reason) = t.reason {
            m.ends.get_or_create(&Labels::one("reason", reason.name()).with_owner(owner.clone())).inc();
        }
        if let (Some(ns), false) = (t.prev_state_ns, t.prev_state_at_least) {
            if TIMED_STATES.contains(&t.oldstate) {
                let labels = Labels::one("state", t.oldstate.name()).with_owner(owner);
                m.state_seconds.get_or_create(&labels).observe(ns as f64 / 1e9);
            }
        }
        self.states.transition(t.oldstate, t.newstate, t.time.mono_ns);
        self.show_state(t.oldstate);
        self.show_state(t.newstate);
        Ok(())
    }

    fn lost(&mut self, lost: &Lost) -> io::Result<()> {
        self.metrics.lost.get_or_create(&Labels::one("cause", lost.cause.name())).inc_by(lost.count);
        Ok(())
    }

    fn alert(&mut self, alert: &Alert) -> io::Result<()> {
        let labels = Labels::two("kind", alert.kind.name(), "severity", alert.severity.name());
        self.metrics.alerts.get_or_create(&labels).inc();
        Ok(())
    }

    fn tick(&mut self, now: Timestamp) -> io::Result<()> {
        self.health.read();
        self.report_folded();
        self.check(now.mono_ns);
        Ok(())
    }

    fn end(&mut self, _summary: &Summary) -> io::Result<()> {
        self.report_folded();
        self.health.stopped();
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::PortRange;
    use crate::metrics::tests::transition;
    use crate::record::{EndReason, LossCause};
    use std::sync::Mutex;
    use TcpState::*;

    fn sink(owner_labels: bool, limit: usize, checker: Option<Checker>) -> (MetricsSink, Arc<Metrics>) {
        let metrics = Metrics::new();
        let range = PortRange { low: 32768, high: 60999, source: "test".into() };
        let owners = OwnerLabeler::new(owner_labels, limit, range);
        (MetricsSink::new(metrics.clone(), Arc::new(Health::default()), owners, checker), metrics)
    }

    fn exposition(m: &Metrics) -> String {
        let mut text = String::new();
        m.encode(&mut text).unwrap();
        text
    }

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
    }

    #[test]
    fn a_connection_feeds_counters_gauges_ends_and_histograms() {
        let (mut s, m) = sink(false, 10, None);
        let mut connect = transition(Close, SynSent);
        connect.ends.sport = 40000;
        connect.ends.dport = 80;
        s.transition(&connect).unwrap();
        let mut established = transition(SynSent, Established);
        established.prev_state_ns = Some(2_000_000);
        s.transition(&established).unwrap();
        let mut reset = transition(Established, Close);
        reset.prev_state_ns = Some(3_000_000_000);
        reset.reason = Some(EndReason::ResetByPeer);
        s.transition(&reset).unwrap();
        // A lower bound (the socket predates the trace) is not a duration.
        let mut old = transition(Established, FinWait1);
        old.prev_state_ns = Some(5);
        old.prev_state_at_least = true;
        s.transition(&old).unwrap();
        s.lost(&Lost { time: connect.time, count: 3, cause: LossCause::RingFull }).unwrap();

        let text = exposition(&m);
        assert_eq!(line(&text, "portrace_transitions_total{from=\"CLOSE\",to=\"SYN_SENT\"}"), "portrace_transitions_total{from=\"CLOSE\",to=\"SYN_SENT\"} 1");
        assert!(text.contains("portrace_connection_ends_total{reason=\"reset_by_peer\"} 1\n"), "{text}");
        assert!(text.contains("portrace_state_duration_seconds_count{state=\"SYN_SENT\"} 1\n"), "{text}");
        assert!(text.contains("portrace_state_duration_seconds_bucket{le=\"0.005\",state=\"SYN_SENT\"} 1\n")
            || text.contains("portrace_state_duration_seconds_bucket{state=\"SYN_SENT\",le=\"0.005\"} 1\n"), "{text}");
        assert!(text.contains("portrace_state_duration_seconds_count{state=\"ESTABLISHED\"} 1\n"), "{text}");
        assert!(text.contains("portrace_state_duration_seconds_sum{state=\"ESTABLISHED\"} 3.0\n")
            || text.contains("portrace_state_duration_seconds_sum{state=\"ESTABLISHED\"} 3\n"), "{text}");
        assert!(text.contains("portrace_lost_transitions_total{cause=\"ring_full\"} 3\n"), "{text}");
        assert!(text.contains("portrace_sockets{state=\"ESTABLISHED\"} 0\n"), "{text}");
        assert!(text.contains("portrace_sockets{state=\"FIN_WAIT1\"} 1\n"), "{text}");
        assert!(!text.contains("comm="), "no owner labels unless asked: {text}");
    }

    #[test]
    fn every_end_reason_has_its_series() {
        let (mut s, m) = sink(false, 10, None);
        for reason in EndReason::ALL {
            let mut t = transition(SynSent, Close);
            t.reason = Some(reason);
            s.transition(&t).unwrap();
        }
        let text = exposition(&m);
        for reason in EndReason::ALL {
            let want = format!("portrace_connection_ends_total{{reason=\"{}\"}} 1\n", reason.name());
            assert!(text.contains(&want), "{want} in {text}");
        }
    }

    #[test]
    fn owner_labels_are_capped_and_the_folded_counted() {
        let (mut s, m) = sink(true, 2, None);
        for port in [8080, 8081, 8082, 8083] {
            let mut t = transition(Close, Listen);
            t.ends.sport = port;
            s.transition(&t).unwrap();
        }
        s.tick(Timestamp { mono_ns: 5, unix_ns: 5 }).unwrap();
        let text = exposition(&m);
        assert!(text.contains("portrace_transitions_total{from=\"CLOSE\",to=\"LISTEN\",comm=\"nginx\",port=\"8080\",service=\"unknown\"} 1\n"), "{text}");
        assert!(text.contains("portrace_transitions_total{from=\"CLOSE\",to=\"LISTEN\",comm=\"nginx\",port=\"other\",service=\"unknown\"} 2\n"), "{text}");
        assert!(text.contains("portrace_label_values_folded_total{label=\"port\"} 2\n"), "{text}");
        assert!(text.contains("portrace_label_values{label=\"port\"} 2\n"), "{text}");
        assert!(!text.contains("port=\"8082\""), "{text}");
    }

    #[test]
    fn each_read_of_the_ring_shows_its_fill_and_its_records() {
        let (mut s, m) = sink(false, 10, None);
        // A quarter full (where the kernel wakes the reader), then almost empty.
        s.ring_read(&crate::output::RingRead { records: 8192, bytes: 1 << 20, size: 4 << 20 }).unwrap();
        s.ring_read(&crate::output::RingRead { records: 1, bytes: 136, size: 4 << 20 }).unwrap();
        let text = exposition(&m);
        assert!(text.contains("portrace_ring_records_total 8193\n"), "{text}");
        assert!(text.contains("portrace_ring_fill_ratio_count 2\n"), "{text}");
        assert!(text.contains("portrace_ring_fill_ratio_bucket{le=\"0.001\"} 1\n"), "{text}");
        assert!(text.contains("portrace_ring_fill_ratio_bucket{le=\"0.1\"} 1\n"), "{text}");
        assert!(text.contains("portrace_ring_fill_ratio_bucket{le=\"0.25\"} 2\n"), "{text}");
    }

    #[test]
    fn the_service_label_names_the_owners_unit_container_or_pod() {
        let (mut s, m) = sink(true, 10, None);
        let cgroups = [
            (11, "/system.slice/nginx.service"),
            (12, "/system.slice/docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope"),
            (13, "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1d2e3f4a_5b6c_7d8e_9f00_112233445566.slice/cri-containerd-aa.scope"),
        ];
        for (id, path) in cgroups {
            s.cgroup(&crate::record::CgroupInfo { time: Timestamp { mono_ns: 0, unix_ns: 0 }, id, path: Some(path.into()) }).unwrap();
        }
        // A unit restarted in a new cgroup keeps its series.
        s.cgroup(&crate::record::CgroupInfo { time: Timestamp { mono_ns: 0, unix_ns: 0 }, id: 14, path: Some("/system.slice/nginx.service".into()) })
            .unwrap();
        for id in [11, 12, 13, 14, 99] {
            let mut t = transition(Close, Listen);
            t.owner.as_mut().unwrap().cgroup = id;
            s.transition(&t).unwrap();
        }
        s.tick(Timestamp { mono_ns: 5, unix_ns: 5 }).unwrap();
        let text = exposition(&m);
        for (service, n) in [
            ("nginx.service", 2),
            ("docker/0123456789ab", 1),
            ("pod/1d2e3f4a-5b6c-7d8e-9f00-112233445566", 1),
            ("unknown", 1),
        ] {
            let want = format!("comm=\"nginx\",port=\"8080\",service=\"{service}\"}} {n}\n");
            assert!(text.contains(&want), "{want} in {text}");
        }
        assert!(text.contains("portrace_label_values{label=\"service\"} 4\n"), "{text}");
    }

    #[test]
    fn the_counts_are_checked_against_the_listing_and_the_drift_counted() {
        let listing = Arc::new(Mutex::new(None::<(StateTable, u64)>));
        let shared = listing.clone();
        let checker = Checker::new(1_000_000_000, Box::new(move || *shared.lock().unwrap()));
        let (mut s, m) = sink(false, 10, Some(checker));
        let at = |ns| Timestamp { mono_ns: ns, unix_ns: 0 };
        s.start(&Start { time: at(0), host: String::new(), kernel: String::new(), features: Default::default() })
            .unwrap();
        let mut counted = transition(Close, SynSent);
        counted.time = at(10);
        s.transition(&counted).unwrap();
        // The kernel lists one CLOSE_WAIT socket and nothing else: SYN_SENT is wrong by
        // one, CLOSE_WAIT by one.
        let mut table = StateTable::default();
        table.add(CloseWait, 1);
        *listing.lock().unwrap() = Some((table, 1_000_000_000));
        s.tick(at(500_000_000)).unwrap();
        assert!(!s.states.checking(), "not due before the interval");
        s.tick(at(1_000_000_000)).unwrap();
        assert!(s.states.checking());
        s.tick(at(1_000_000_000 + SETTLE_NS)).unwrap();
        let text = exposition(&m);
        assert!(text.contains("portrace_socket_checks_total 1\n"), "{text}");
        assert!(text.contains("portrace_socket_drift_total{state=\"SYN_SENT\"} 1\n"), "{text}");
        assert!(text.contains("portrace_socket_drift_total{state=\"CLOSE_WAIT\"} 1\n"), "{text}");
        assert!(text.contains("portrace_sockets{state=\"CLOSE_WAIT\"} 1\n"), "{text}");
        assert!(text.contains("portrace_sockets{state=\"SYN_SENT\"} 0\n"), "{text}");
    }
}
