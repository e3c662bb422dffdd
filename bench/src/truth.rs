//! The ground truth: which transitions a run of the workload must produce. tcpload exits
//! non-zero unless every one of its N connections opened and closed normally, so a run
//! that succeeded produced exactly, per connection, ten transitions: the closer's
//! CLOSE->SYN_SENT or LISTEN->SYN_RECV, ->ESTABLISHED, ESTABLISHED->FIN_WAIT1,
//! FIN_WAIT1->FIN_WAIT2, and FIN_WAIT2->TIME_WAIT (portrace) or FIN_WAIT2->CLOSE (the
//! peers, which never see TIME_WAIT; either counts as the closer's last transition), and
//! the other side's ESTABLISHED->CLOSE_WAIT, CLOSE_WAIT->LAST_ACK, LAST_ACK->CLOSE; plus
//! the listener's CLOSE->LISTEN and LISTEN->CLOSE once. Whichever side closes first, the
//! same ten kinds occur once per connection; only who goes through which changes.
//!
//! A tracer's output is counted per kind; a kind's matched count is at most what was
//! expected of it, anything beyond is extra, and captured% = matched / expected.

use std::collections::BTreeMap;

/// The kinds, in the order a connection goes through them.
pub const KINDS: [&str; 12] = [
    "CLOSE->LISTEN",
    "CLOSE->SYN_SENT",
    "LISTEN->SYN_RECV",
    "SYN_RECV->ESTABLISHED",
    "SYN_SENT->ESTABLISHED",
    "ESTABLISHED->FIN_WAIT1",
    "ESTABLISHED->CLOSE_WAIT",
    "FIN_WAIT1->FIN_WAIT2",
    "CLOSE_WAIT->LAST_ACK",
    "FIN_WAIT2->TIME_WAIT|CLOSE",
    "LAST_ACK->CLOSE",
    "LISTEN->CLOSE",
];

/// The kernel's TCP state names by number (include/net/tcp_states.h).
pub fn state_name(n: u64) -> Option<&'static str> {
    Some(match n {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => return None,
    })
}

/// The kind a transition counts as; FIN_WAIT2->TIME_WAIT and FIN_WAIT2->CLOSE are the
/// same kind. Anything else is returned as `OLD->NEW` (counted as unexpected).
pub fn kind(old: &str, new: &str) -> String {
    if old == "FIN_WAIT2" && (new == "TIME_WAIT" || new == "CLOSE") {
        return "FIN_WAIT2->TIME_WAIT|CLOSE".to_string();
    }
    format!("{old}->{new}")
}

/// How many of each kind `connections` connections produce.
pub fn expected(connections: u64) -> BTreeMap<String, u64> {
    KINDS
        .iter()
        .map(|&k| {
            let n = if k == "CLOSE->LISTEN" || k == "LISTEN->CLOSE" {
                1
            } else {
                connections
            };
            (k.to_string(), n)
        })
        .collect()
}

/// A tracer's count set against the truth.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Score {
    pub expected: u64,
    pub matched: u64,
    /// Transitions beyond what was expected (of an expected kind, or of another kind).
    pub extra: u64,
    /// Per kind: expected minus matched, only kinds with something missing.
    pub missing_by_kind: BTreeMap<String, u64>,
}

impl Score {
    pub fn missing(&self) -> u64 {
        self.expected - self.matched
    }

    pub fn captured_pct(&self) -> f64 {
        if self.expected == 0 {
            return 0.0;
        }
        100.0 * self.matched as f64 / self.expected as f64
    }
}

pub fn score(expected: &BTreeMap<String, u64>, captured: &BTreeMap<String, u64>) -> Score {
    let mut s = Score::default();
    for (k, &want) in expected {
        let got = captured.get(k).copied().unwrap_or(0);
        s.expected += want;
        s.matched += got.min(want);
        s.extra += got.saturating_sub(want);
        if got < want {
            s.missing_by_kind.insert(k.clone(), want - got);
        }
    }
    s.extra += captured
        .iter()
        .filter(|(k, _)| !expected.contains_key(*k))
        .map(|(_, &n)| n)
        .sum::<u64>();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_per_connection_plus_the_listener() {
        let e = expected(20_000);
        assert_eq!(e.values().sum::<u64>(), 200_002);
        assert_eq!(kind("FIN_WAIT2", "TIME_WAIT"), kind("FIN_WAIT2", "CLOSE"));
    }

    #[test]
    fn scoring_caps_each_kind() {
        let e = expected(2);
        let mut c = e.clone();
        c.insert("FIN_WAIT1->FIN_WAIT2".into(), 1);
        c.insert("LAST_ACK->CLOSE".into(), 3);
        c.insert("TIME_WAIT->CLOSE".into(), 2);
        let s = score(&e, &c);
        assert_eq!(s.expected, 22);
        assert_eq!(s.matched, 21);
        assert_eq!(s.missing(), 1);
        assert_eq!(s.extra, 3);
        assert_eq!(s.missing_by_kind.get("FIN_WAIT1->FIN_WAIT2"), Some(&1));
        assert!((s.captured_pct() - 100.0 * 21.0 / 22.0).abs() < 1e-9);
    }
}
