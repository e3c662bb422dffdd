//! The diagram every renderer draws: RFC 9293's edges paired with what the trace observed
//! on each, the Linux edges the trace observed that the RFC's figure does not have, the
//! numbered notes on what Linux does differently, and the texts every format shares (the
//! title, the span, an edge's figures). Renderers only lay these out.

use std::collections::BTreeMap;

use super::model::{self, Edge, Mapped, Place, EDGES};
use super::stats::{EdgeStats, Observed};
use crate::clock::Rfc3339;
use crate::format::HumanDuration;
use crate::record::EndReason;
use crate::tcp_state::TcpState;

/// A standard edge and what was seen on it.
pub struct Standard<'a> {
    pub edge: &'a Edge,
    /// The kernel transitions counted on it (one, but for SYN-RECEIVED's request-socket
    /// stage folded in).
    pub stats: Option<EdgeStats>,
    /// The number of its Linux note, if it has one.
    pub note: Option<usize>,
}

/// An observed edge the RFC's figure does not have.
pub struct Linux<'a> {
    pub old: TcpState,
    pub new: TcpState,
    pub from: Place,
    pub to: Place,
    pub stats: &'a EdgeStats,
    pub note: &'static str,
}

pub struct Figure<'a> {
    pub observed: &'a Observed,
    pub standard: Vec<Standard<'a>>,
    pub linux: Vec<Linux<'a>>,
    /// The distinct Linux notes of the standard edges, numbered from 1.
    pub notes: Vec<&'static str>,
}

impl<'a> Figure<'a> {
    pub fn new(observed: &'a Observed) -> Figure<'a> {
        let mut notes: Vec<&'static str> = Vec::new();
        let mut standard: Vec<Standard<'a>> = EDGES
            .iter()
            .map(|edge| {
                let note = edge.linux.map(|n| match notes.iter().position(|&m| m == n) {
                    Some(i) => i + 1,
                    None => {
                        notes.push(n);
                        notes.len()
                    }
                });
                Standard { edge, stats: None, note }
            })
            .collect();
        let mut linux = Vec::new();
        for (&(old, new), stats) in &observed.edges {
            match model::map(old, new) {
                Mapped::Standard(i) => merge(&mut standard[i].stats, stats),
                Mapped::Linux { from, to } => {
                    linux.push(Linux { old, new, from, to, stats, note: model::linux_note(old, new) })
                }
            }
        }
        Figure { observed, standard, linux, notes }
    }

    /// `TCP state diagram (RFC 9293), observed on HOST`.
    pub fn title(&self) -> String {
        match self.observed.host.as_str() {
            "" => "TCP state diagram (RFC 9293), observed".to_string(),
            host => format!("TCP state diagram (RFC 9293), observed on {host}"),
        }
    }

    /// The span and totals: `2026-...Z to 2026-...Z (10.0s): 710 transitions of 145 sockets, 0 lost`.
    pub fn subtitle(&self) -> String {
        let o = self.observed;
        let span = match (o.start, o.end) {
            (Some(s), Some(e)) => format!(
                "{} to {} ({})",
                Rfc3339::new(s.unix_ns).as_str(),
                Rfc3339::new(e.unix_ns).as_str(),
                HumanDuration(o.span_ns().unwrap_or(0))
            ),
            _ => "nothing traced".to_string(),
        };
        let lost = if o.lost == 0 { "none lost".to_string() } else { format!("{} lost", o.lost) };
        let mut text = format!("{span}: {} transitions of {} sockets, {lost}", o.transitions, o.sockets());
        if !o.filter.is_empty() {
            text.push_str(&format!("; filter {}", o.filter));
        }
        text
    }
}

/// Adds `stats` into `slot`.
fn merge(slot: &mut Option<EdgeStats>, stats: &EdgeStats) {
    match slot {
        None => *slot = Some(stats.clone()),
        Some(s) => s.absorb(stats),
    }
}

/// `70×, median 2.88us`: a count and the median time in the state left.
pub fn figures(stats: &EdgeStats) -> String {
    match stats.median_ns() {
        Some(ns) => format!("{}×, median {}", stats.count, HumanDuration(ns)),
        None => format!("{}×", stats.count),
    }
}

/// The end reasons worth showing on an edge: `refused 3, connect timed out 1`; empty when
/// every end was the edge's ordinary one.
pub fn reasons(stats: &EdgeStats) -> String {
    let ordinary = |r: &EndReason| matches!(r, EndReason::PassiveClose | EndReason::ActiveClose | EndReason::ListenerClosed);
    if stats.reasons.keys().all(ordinary) {
        return String::new();
    }
    let by: BTreeMap<_, _> = stats.reasons.iter().collect();
    by.iter().map(|(r, n)| format!("{} {n}", r.describe())).collect::<Vec<_>>().join(", ")
}

/// `ESTABLISHED -> CLOSED`, in the RFC's names.
pub fn linux_name(l: &Linux<'_>) -> String {
    format!("{} → {}", l.from.rfc_name(), l.to.rfc_name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagram::stats::tests::tr;
    use TcpState::*;

    #[test]
    fn observed_pairs_land_on_their_edges() {
        let mut o = Observed::default();
        o.add(&tr(1, 10, Listen, SynRecv, None));
        o.add(&tr(2, 11, Listen, NewSynRecv, None));
        o.add(&tr(3, 12, Established, Close, Some(5)));
        let f = Figure::new(&o);
        let listen_syn = f.standard.iter().find(|s| s.edge.from == Place::Listen && s.edge.to == Place::SynReceived).unwrap();
        assert_eq!(listen_syn.stats.as_ref().map(|s| s.count), Some(1), "the request socket is Linux's own");
        assert!(listen_syn.note.is_some());
        assert_eq!(f.linux.len(), 2);
        assert_eq!(linux_name(&f.linux[0]), "ESTABLISHED → CLOSED");
        assert_eq!(linux_name(&f.linux[1]), "LISTEN → SYN-RECEIVED");
        assert_eq!(f.standard.iter().filter(|s| s.stats.is_some()).count(), 1);
        assert_eq!(f.notes.len(), 4, "four distinct Linux notes on standard edges");
    }

    #[test]
    fn figures_and_reasons_read_well() {
        let mut o = Observed::default();
        o.add(&tr(1, 10, SynSent, Close, Some(63_500)));
        o.add(&crate::record::Transition { reason: Some(EndReason::Refused), ..tr(2, 11, SynSent, Close, None) });
        let e = &o.edges[&(SynSent, Close)];
        assert_eq!(figures(e), "2×, median 63.5us");
        assert_eq!(reasons(e), "connection refused 1");
        let mut p = Observed::default();
        p.add(&crate::record::Transition { reason: Some(EndReason::PassiveClose), ..tr(2, 11, LastAck, Close, None) });
        assert_eq!(reasons(&p.edges[&(LastAck, Close)]), "");
    }
}
