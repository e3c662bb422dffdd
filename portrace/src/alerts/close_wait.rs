//! The CLOSE_WAIT leak detector: sockets that stay in CLOSE_WAIT (the peer closed, the
//! application has not) for `close_wait.after` or longer, grouped by owning process. A
//! socket already in CLOSE_WAIT when the trace started counts from the start (its age is a
//! lower bound). Checked on the one-second grid and at the end of the trace.

use std::collections::BTreeMap;

use foldhash::HashMap;

use super::{endpoint, Alert, AlertKind, Ctx, Evidence, Severity, Subject};
use crate::record::{Comm, Endpoints, Owner, SocketRecord, Timestamp, Transition};
use crate::tcp_state::TcpState;

/// Sockets listed in an alert at most.
const SAMPLE: usize = 10;

struct Entry {
    owner: Option<Owner>,
    ends: Endpoints,
    at_least: bool,
}

#[derive(Default)]
pub struct CloseWait {
    /// Sockets in CLOSE_WAIT by (entry time, socket id): the oldest first.
    entries: BTreeMap<(u64, u64), Entry>,
    /// Entry time of each socket in CLOSE_WAIT.
    by_socket: HashMap<u64, u64>,
}

impl CloseWait {
    pub fn on_socket(&mut self, s: &SocketRecord) {
        if s.state == TcpState::CloseWait {
            let entry = Entry { owner: s.owner, ends: s.ends, at_least: true };
            self.insert(s.socket, s.time.mono_ns, entry);
        }
    }

    pub fn on_transition(&mut self, t: &Transition) {
        if let Some(since) = self.by_socket.remove(&t.socket) {
            self.entries.remove(&(since, t.socket));
        }
        if t.newstate == TcpState::CloseWait {
            let entry = Entry { owner: t.owner, ends: t.ends, at_least: false };
            self.insert(t.socket, t.time.mono_ns, entry);
        }
    }

    fn insert(&mut self, socket: u64, since: u64, entry: Entry) {
        if let Some(old) = self.by_socket.insert(socket, since) {
            self.entries.remove(&(old, socket));
        }
        self.entries.insert((since, socket), entry);
    }

    /// When the oldest socket in CLOSE_WAIT reaches the threshold `after`, if any is.
    pub fn next_due(&self, after: u64) -> Option<u64> {
        self.entries.keys().next().map(|&(since, _)| since.saturating_add(after))
    }

    /// The earliest time after `now` at which a socket in CLOSE_WAIT reaches the threshold
    /// `after`, if one does.
    pub fn next_crossing(&self, now: u64, after: u64) -> Option<u64> {
        // Sockets with `since + after > now`: those that entered after `now - after`.
        let from = match now.checked_sub(after) {
            Some(limit) => (limit.checked_add(1)?, 0),
            None => (0, 0),
        };
        self.entries.range(from..).next().map(|(&(since, _), _)| since.saturating_add(after))
    }

    /// Alerts for every process with sockets in CLOSE_WAIT for the threshold or longer
    /// at `now`.
    pub fn check(&mut self, now: Timestamp, ctx: &mut Ctx, out: &mut Vec<Alert>) {
        let after = ctx.rules.close_wait.after_ns;
        let Some(limit) = now.mono_ns.checked_sub(after) else { return };
        // Per owner pid (0: unknown): the over-age sockets, oldest first.
        let mut groups: BTreeMap<u32, Vec<(u64, u64, &Entry)>> = BTreeMap::new();
        for (&(since, socket), e) in self.entries.range(..=(limit, u64::MAX)) {
            groups.entry(e.owner.map_or(0, |o| o.pid)).or_default().push((since, socket, e));
        }
        for (pid, sockets) in groups {
            let subject = Subject::Process(pid);
            if !ctx.due(AlertKind::CloseWaitLeak, &subject, now.mono_ns, 0) {
                continue;
            }
            let (oldest, _, first) = sockets[0];
            let age = now.mono_ns - oldest;
            let at_least = first.at_least;
            let comm = first.owner.map_or_else(Comm::default, |o| o.comm);
            let process = (pid != 0).then(|| ctx.process(pid, comm));
            let who = process.as_ref().map_or_else(|| "sockets of unknown owner:".to_string(), |p| format!("{} has", p.describe()));
            let sample: Vec<String> = sockets
                .iter()
                .take(SAMPLE)
                .map(|&(since, socket, e)| {
                    format!(
                        "{} <- {} for {}{} (socket {socket})",
                        endpoint(e.ends.saddr, e.ends.sport),
                        endpoint(e.ends.daddr, e.ends.dport),
                        if e.at_least { ">=" } else { "" },
                        seconds(now.mono_ns - since)
                    )
                })
                .collect();
            let alert = Alert {
                kind: AlertKind::CloseWaitLeak,
                severity: Severity::Warning,
                time: now,
                subject,
                summary: format!(
                    "{who} {} {} in CLOSE_WAIT for over {} (oldest {}{}): the application is not closing them",
                    sockets.len(),
                    if sockets.len() == 1 { "socket" } else { "sockets" },
                    seconds(after),
                    if at_least { ">=" } else { "" },
                    seconds(age)
                ),
                process,
                netns: Some(first.ends.netns),
                evidence: vec![
                    ("sockets", Evidence::Int(sockets.len() as u64)),
                    ("oldest_ns", Evidence::Int(age)),
                    ("oldest_at_least", Evidence::Bool(at_least)),
                    ("threshold_ns", Evidence::Int(after)),
                    ("sample", Evidence::List(sample)),
                ],
            };
            ctx.raise(alert, out);
        }
    }
}

/// `2.5s`, `30s`, `120s`: tenths of a second below 100 s, none when zero.
pub(crate) fn seconds(ns: u64) -> String {
    // Saturating: a recording can hold any durations, up to the end of the clock.
    let tenths = ns.saturating_add(50_000_000) / 100_000_000;
    let (whole, tenth) = (tenths / 10, tenths % 10);
    if whole >= 100 || tenth == 0 {
        format!("{}s", ns.saturating_add(500_000_000) / 1_000_000_000)
    } else {
        format!("{whole}.{tenth}s")
    }
}

#[cfg(test)]
mod tests {
    use super::seconds;

    #[test]
    fn durations_read_in_seconds_up_to_the_end_of_the_clock() {
        assert_eq!(seconds(2_500_000_000), "2.5s");
        assert_eq!(seconds(30_000_000_000), "30s");
        assert_eq!(seconds(120_400_000_000), "120s");
        // The fuzzer's find: a CLOSE_WAIT lasting nearly u64::MAX nanoseconds overflowed
        // the rounding.
        assert_eq!(seconds(u64::MAX), "18446744073s");
        assert_eq!(seconds(u64::MAX - 40_000_000), "18446744073s");
    }
}
