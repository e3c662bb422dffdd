//! What a trace observed, per edge of the state diagram: how many times each (old, new)
//! transition happened, the median time spent in the state it left, and for the last
//! transitions of connections, why they ended; with the trace's span and totals. Pure:
//! transitions in, figures out.

use std::collections::{BTreeMap, HashSet};

use crate::record::{EndReason, Timestamp, Transition};
use crate::tcp_state::TcpState;

/// One (old, new) pair's figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EdgeStats {
    pub count: u64,
    /// Known times in the state left, in nanoseconds (lower bounds excluded).
    samples: Vec<u64>,
    /// How many of them ended the connection, by reason.
    pub reasons: BTreeMap<EndReason, u64>,
}

impl EdgeStats {
    /// The median time in the state left (nearest rank), when any was known.
    pub fn median_ns(&self) -> Option<u64> {
        if self.samples.is_empty() {
            return None;
        }
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        // Nearest rank: the ceil(n/2)-th smallest.
        Some(sorted[sorted.len().div_ceil(2) - 1])
    }

    /// Adds another edge's figures into this one.
    pub fn absorb(&mut self, other: &EdgeStats) {
        self.count += other.count;
        self.samples.extend_from_slice(&other.samples);
        for (&r, &n) in &other.reasons {
            *self.reasons.entry(r).or_default() += n;
        }
    }

    /// How many samples the median is taken from.
    pub fn timed(&self) -> usize {
        self.samples.len()
    }
}

/// Everything the diagram shows about a trace.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub edges: BTreeMap<(TcpState, TcpState), EdgeStats>,
    /// The host the trace was made on.
    pub host: String,
    /// When the trace started and ended (the end: its last record, if it has no end).
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
    pub transitions: u64,
    sockets: HashSet<u64>,
    pub lost: u64,
    /// The filter the data was taken with, as flags (empty: none).
    pub filter: String,
}

impl Observed {
    pub fn add(&mut self, t: &Transition) {
        let e = self.edges.entry((t.oldstate, t.newstate)).or_default();
        e.count += 1;
        if let (Some(ns), false) = (t.prev_state_ns, t.prev_state_at_least) {
            e.samples.push(ns);
        }
        if let Some(reason) = t.reason {
            *e.reasons.entry(reason).or_default() += 1;
        }
        self.transitions += 1;
        self.sockets.insert(t.socket);
        self.end = Some(self.end.map_or(t.time, |end| end.max(t.time)));
        self.start.get_or_insert(t.time);
    }

    /// Sockets seen in a transition.
    pub fn sockets(&self) -> usize {
        self.sockets.len()
    }

    pub fn count(&self, old: TcpState, new: TcpState) -> u64 {
        self.edges.get(&(old, new)).map_or(0, |e| e.count)
    }

    /// The trace's length in nanoseconds, when both ends are known.
    pub fn span_ns(&self) -> Option<u64> {
        Some(self.end?.mono_ns.saturating_sub(self.start?.mono_ns))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::record::Comm;
    use std::net::{IpAddr, Ipv4Addr};
    use TcpState::*;

    pub(crate) fn tr(socket: u64, at: u64, old: TcpState, new: TcpState, prev: Option<u64>) -> Transition {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Transition::example(socket, old, new)
            .at(Timestamp { mono_ns: at, unix_ns: i128::from(at) })
            .on_cpu(1, Comm::new("c"))
            .between((lo, 1), (lo, 2))
            .after(prev)
            .in_netns(1)
    }

    #[test]
    fn counts_and_medians_per_edge() {
        let mut o = Observed::default();
        for (i, ns) in [Some(30), Some(10), None, Some(20), Some(1000)].into_iter().enumerate() {
            o.add(&tr(i as u64, 100 + i as u64, SynSent, Established, ns));
        }
        o.add(&Transition { prev_state_at_least: true, ..tr(9, 50, Listen, Close, Some(5)) });
        let e = &o.edges[&(SynSent, Established)];
        assert_eq!((e.count, e.timed()), (5, 4));
        assert_eq!(e.median_ns(), Some(20), "nearest rank of 10, 20, 30, 1000");
        assert_eq!(o.edges[&(Listen, Close)].median_ns(), None, "a lower bound is no sample");
        assert_eq!((o.transitions, o.sockets()), (6, 6));
        assert_eq!((o.start.unwrap().mono_ns, o.end.unwrap().mono_ns), (100, 104));
        assert_eq!(o.count(Established, Close), 0);
    }

    #[test]
    fn reasons_are_counted_on_the_edge_that_ends() {
        let mut o = Observed::default();
        for reason in [EndReason::Refused, EndReason::Refused, EndReason::ConnectTimeout] {
            o.add(&Transition { reason: Some(reason), ..tr(1, 1, SynSent, Close, None) });
        }
        let r = &o.edges[&(SynSent, Close)].reasons;
        assert_eq!((r[&EndReason::Refused], r[&EndReason::ConnectTimeout]), (2, 1));
    }
}
