//! The owner labels (`comm`, `port`, `service`) and the cap on their cardinality. A label takes at
//! most `limit` distinct values over a run: the first `limit` values seen (for `port`,
//! seen serving: listening, or on an established connection) keep their own series,
//! every other one is folded into `other`, and each observation folded is counted. So the number of series, and the memory they take, is bounded whatever the
//! host runs, and a series once created never changes its meaning.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use crate::alerts::PortRange;
use crate::record::{Comm, Transition};
use crate::tcp_state::TcpState;

/// The value of a label whose value was folded by the cap.
pub const OTHER: &str = "other";
/// The `comm` of a socket whose owner is unknown.
pub const UNKNOWN: &str = "unknown";

/// A label's values, capped: maps a raw value to the text of its series' label.
#[derive(Debug)]
pub struct LabelCap<K> {
    limit: usize,
    kept: HashMap<K, Arc<str>>,
    other: Arc<str>,
    /// Observations whose value was folded into `other`.
    folded: u64,
}

impl<K: Hash + Eq + Copy> LabelCap<K> {
    pub fn new(limit: usize) -> LabelCap<K> {
        LabelCap { limit, kept: HashMap::new(), other: Arc::from(OTHER), folded: 0 }
    }

    /// The label text for `key`, made by `text` the first time `key` is kept. A key seen
    /// when `limit` others are kept already is folded into `other`.
    pub fn value(&mut self, key: K, text: impl FnOnce() -> String) -> Arc<str> {
        self.value_if(key, true, text)
    }

    /// As [`Self::value`], but a key not kept yet is kept only when `admit` says so;
    /// otherwise it is folded without taking a place.
    pub fn value_if(&mut self, key: K, admit: bool, text: impl FnOnce() -> String) -> Arc<str> {
        if let Some(value) = self.kept.get(&key) {
            return value.clone();
        }
        if !admit || self.kept.len() >= self.limit {
            self.folded += 1;
            return self.other.clone();
        }
        let value: Arc<str> = Arc::from(text());
        self.kept.insert(key, value.clone());
        value
    }

    /// Observations folded into `other` so far.
    pub fn folded(&self) -> u64 {
        self.folded
    }

    /// Distinct values with their own series.
    pub fn kept(&self) -> usize {
        self.kept.len()
    }
}

/// The owner labels of one observation. `None` when owner labels are off.
///
/// A systemd unit or container label belongs here too, next to `comm`, capped the same
/// way, once the owner's cgroup is part of the transition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct OwnerLabels {
    pub comm: Option<Arc<str>>,
    pub port: Option<Arc<str>>,
    /// What the owner's cgroup names: `pod/UID`, `RUNTIME/ID12` for a container, or the
    /// systemd unit (else the cgroup's path).
    pub service: Option<Arc<str>>,
}

/// What a socket's service port is, for the `port` label: the local port, unless it is
/// in the host's ephemeral range or not bound yet (the socket connects out), then the
/// remote port.
pub fn service_port(sport: u16, dport: u16, ephemeral: &PortRange) -> u16 {
    let outgoing = dport != 0 && (sport == 0 || (ephemeral.low..=ephemeral.high).contains(&sport));
    if outgoing {
        dport
    } else {
        sport
    }
}

/// Network namespaces whose own ephemeral range is remembered at most; sockets of later
/// ones are judged by the host's range.
const MAX_RANGES: usize = 65_536;

/// Cgroups whose `service` label is remembered at most; past it the map starts afresh (a
/// cgroup seen again is named again by its next `cgroup` record).
const MAX_SERVICES: usize = 16_384;

/// The `service` label of a cgroup: its pod, its container, or its systemd unit; its path
/// when it names none of them.
pub fn service_name(g: &crate::record::CgroupInfo) -> String {
    let identity = g.identity();
    let name = if let Some(pod) = identity.pod {
        format!("pod/{pod}")
    } else if let Some(c) = identity.container {
        format!("{}/{}", c.runtime.name(), c.id.get(..12).unwrap_or(&c.id))
    } else if let Some(unit) = identity.unit {
        unit
    } else {
        g.path.clone().unwrap_or_else(|| UNKNOWN.to_string())
    };
    crate::escape::text(&name).into_owned()
}

/// Gives each transition its owner labels, capped.
#[derive(Debug)]
pub struct OwnerLabeler {
    on: bool,
    comm: LabelCap<Option<Comm>>,
    port: LabelCap<u16>,
    /// Keyed by a hash of the name: a unit restarted in a new cgroup keeps its series.
    service: LabelCap<u64>,
    services: HashMap<u64, Arc<str>>,
    /// The host's ephemeral range, and each namespace's own when known.
    ephemeral: PortRange,
    ranges: HashMap<u32, PortRange>,
}

impl OwnerLabeler {
    /// `on`: whether owner labels are exported at all; `limit`: values kept per label.
    pub fn new(on: bool, limit: usize, ephemeral: PortRange) -> OwnerLabeler {
        OwnerLabeler {
            on,
            comm: LabelCap::new(limit),
            port: LabelCap::new(limit),
            service: LabelCap::new(limit),
            services: HashMap::new(),
            ephemeral,
            ranges: HashMap::new(),
        }
    }

    /// The cgroup `g` is named by its record: its owners' `service` label.
    pub fn cgroup(&mut self, g: &crate::record::CgroupInfo) {
        if !self.on {
            return;
        }
        if self.services.len() >= MAX_SERVICES && !self.services.contains_key(&g.id) {
            self.services.clear();
        }
        self.services.insert(g.id, Arc::from(service_name(g)));
    }

    /// Network namespace `netns` picks local ports from `range`.
    pub fn namespace(&mut self, netns: u32, range: (u16, u16)) {
        if self.on && (self.ranges.len() < MAX_RANGES || self.ranges.contains_key(&netns)) {
            self.ranges.insert(netns, PortRange { low: range.0, high: range.1, source: String::new() });
        }
    }

    pub fn enabled(&self) -> bool {
        self.on
    }

    pub fn of(&mut self, t: &Transition) -> OwnerLabels {
        if !self.on {
            return OwnerLabels::default();
        }
        let owner = t.owner.map(|o| o.comm);
        let comm = self.comm.value(owner, || owner.map_or_else(|| UNKNOWN.to_string(), |c| crate::escape::comm(&c)));
        let port = service_port(t.ends.sport, t.ends.dport, self.ranges.get(&t.ends.netns).unwrap_or(&self.ephemeral));
        // A port earns its own series when something is shown to serve there: a socket
        // listens on it, or a connection to or from it completes its handshake. Probes of
        // ports nobody serves (a scan, connects refused) cannot use up the places.
        let serves = t.newstate == TcpState::Listen || t.newstate == TcpState::Established;
        let port = self.port.value_if(port, serves, || port.to_string());
        let name: Arc<str> = t
            .owner
            .and_then(|o| self.services.get(&o.cgroup).cloned())
            .unwrap_or_else(|| Arc::from(UNKNOWN));
        let key = {
            use std::hash::Hasher as _;
            let mut h = std::collections::hash_map::DefaultHasher::new();
            h.write(name.as_bytes());
            h.finish()
        };
        let service = self.service.value(key, || name.to_string());
        OwnerLabels { comm: Some(comm), port: Some(port), service: Some(service) }
    }

    /// Observations folded into `other`, per label name.
    pub fn folded(&self) -> [(&'static str, u64); 3] {
        [("comm", self.comm.folded()), ("port", self.port.folded()), ("service", self.service.folded())]
    }

    /// Distinct values with their own series, per label name (none when labels are off).
    pub fn kept(&self) -> Vec<(&'static str, usize)> {
        if !self.on {
            return Vec::new();
        }
        vec![("comm", self.comm.kept()), ("port", self.port.kept()), ("service", self.service.kept())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range() -> PortRange {
        PortRange { low: 32768, high: 60999, source: "test".into() }
    }

    #[test]
    fn the_first_values_keep_their_series_and_the_rest_fold_into_other() {
        let mut cap = LabelCap::new(2);
        assert_eq!(&*cap.value(80u16, || "80".into()), "80");
        assert_eq!(&*cap.value(443, || "443".into()), "443");
        assert_eq!(&*cap.value(80, || unreachable!("kept already")), "80");
        assert_eq!(&*cap.value(22, || "22".into()), OTHER);
        assert_eq!(&*cap.value(25, || "25".into()), OTHER);
        assert_eq!(&*cap.value(443, || unreachable!("kept already")), "443", "a kept value stays kept");
        assert_eq!((cap.kept(), cap.folded()), (2, 2));
    }

    #[test]
    fn a_zero_limit_folds_everything() {
        let mut cap = LabelCap::new(0);
        assert_eq!(&*cap.value(1u16, || "1".into()), OTHER);
        assert_eq!(cap.folded(), 1);
    }

    #[test]
    fn the_service_port_is_the_one_outside_the_ephemeral_range() {
        let r = range();
        assert_eq!(service_port(8080, 40000, &r), 8080, "an accepted connection: its local port");
        assert_eq!(service_port(40000, 5432, &r), 5432, "an outgoing connection: the remote port");
        assert_eq!(service_port(443, 0, &r), 443, "a listener");
        assert_eq!(service_port(40000, 0, &r), 40000, "a listener on a port of the range");
        assert_eq!(service_port(0, 80, &r), 80, "a connect before its port is bound");
    }

    #[test]
    fn owner_labels_are_off_unless_asked_for() {
        let mut off = OwnerLabeler::new(false, 10, range());
        let t = crate::metrics::tests::transition(crate::tcp_state::TcpState::Close, crate::tcp_state::TcpState::Listen);
        assert_eq!(off.of(&t), OwnerLabels::default());
        let mut on = OwnerLabeler::new(true, 10, range());
        let labels = on.of(&t);
        assert_eq!(labels.comm.as_deref(), Some("nginx"));
        assert_eq!(labels.port.as_deref(), Some("8080"));
        let mut unowned = t.clone();
        unowned.owner = None;
        assert_eq!(on.of(&unowned).comm.as_deref(), Some(UNKNOWN));
    }

    #[test]
    fn a_port_gets_its_series_only_once_something_serves_there() {
        use crate::tcp_state::TcpState::*;
        let mut on = OwnerLabeler::new(true, 1, range());
        let mut probe = crate::metrics::tests::transition(SynSent, Close);
        (probe.ends.sport, probe.ends.dport) = (40000, 23);
        assert_eq!(on.of(&probe).port.as_deref(), Some(OTHER), "a refused probe takes no place");
        let mut connect = crate::metrics::tests::transition(Close, SynSent);
        (connect.ends.sport, connect.ends.dport) = (0, 443);
        assert_eq!(on.of(&connect).port.as_deref(), Some(OTHER), "not shown serving yet");
        let mut established = crate::metrics::tests::transition(SynSent, Established);
        (established.ends.sport, established.ends.dport) = (40001, 443);
        assert_eq!(on.of(&established).port.as_deref(), Some("443"));
        assert_eq!(on.of(&connect).port.as_deref(), Some("443"), "kept from then on");
        let mut listener = crate::metrics::tests::transition(Close, Listen);
        listener.ends.sport = 8080;
        assert_eq!(on.of(&listener).port.as_deref(), Some(OTHER), "the one place is taken");
        assert_eq!(on.folded()[1], ("port", 3));
    }

    #[test]
    fn each_namespace_is_judged_by_its_own_range() {
        let mut on = OwnerLabeler::new(true, 10, range());
        let mut t = crate::metrics::tests::transition(TcpState::SynSent, TcpState::Established);
        (t.ends.sport, t.ends.dport, t.ends.netns) = (5000, 443, 9);
        assert_eq!(on.of(&t).port.as_deref(), Some("5000"), "outside the host's range");
        on.namespace(9, (1024, 65000));
        assert_eq!(on.of(&t).port.as_deref(), Some("443"), "inside the namespace's range");
    }

    #[test]
    fn hostile_process_names_are_escaped() {
        let mut on = OwnerLabeler::new(true, 10, range());
        let mut t = crate::metrics::tests::transition(crate::tcp_state::TcpState::Close, crate::tcp_state::TcpState::Listen);
        t.owner.as_mut().unwrap().comm = Comm::new("a\x1b[2J\"\n");
        let comm = on.of(&t).comm.unwrap();
        assert!(!comm.contains('\x1b') && !comm.contains('\n'), "{comm:?}");
    }
}
