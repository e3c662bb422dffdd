//! The handshake-trouble detector. Clients, per destination (network namespace, remote
//! address and port): connects that succeeded (`SYN_SENT -> ESTABLISHED`) against those
//! refused, timed out or failed with an error (`SYN_SENT -> CLOSE`). Listeners, per local
//! address and port: accepted connections that completed their handshake (`SYN_RECV ->
//! ESTABLISHED`) against those that did not (`SYN_RECV -> CLOSE`). Alerts when, within
//! `handshake.window`, `handshake.failures` or more failed and they are at least
//! `handshake.failure_rate` percent of the handshakes that ended.
//!
//! The window is kept as runs of outcomes ([`super::window`]): a storm of handshakes to one
//! destination costs a few dozen entries a window, not one per handshake; the window is
//! exact to within 1/64 of its length, the counts in it exact.

use foldhash::HashMap;
use std::net::IpAddr;

use super::close_wait::seconds;
use super::rules::Rules;
use super::window::Runs;
use super::{endpoint, Alert, AlertKind, AlertProcess, Ctx, Evidence, Severity, Subject};
use crate::record::{EndReason, Owner, Transition};
use crate::tcp_state::TcpState;

/// Handshakes kept per subject at most (the oldest go first).
const MAX_EVENTS: u64 = 100_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Refused,
    TimedOut,
    Failed,
}

#[derive(Default)]
struct Window {
    /// The handshakes that ended in the window, by outcome.
    ends: Runs<Outcome>,
    failures: Failures,
    last_ns: u64,
}

/// The failed handshakes in a window, by outcome.
#[derive(Default)]
struct Failures {
    failed: u64,
    refused: u64,
    timed_out: u64,
}

impl Failures {
    /// Counts `n` handshakes with outcome `o` in (`add`) or out of the window.
    fn count(&mut self, o: Outcome, n: u32, add: bool) {
        let slot = match o {
            Outcome::Ok => return,
            Outcome::Refused => &mut self.refused,
            Outcome::TimedOut => &mut self.timed_out,
            Outcome::Failed => &mut self.failed,
        };
        if add {
            *slot += u64::from(n);
        } else {
            *slot -= u64::from(n);
        }
    }

    fn total(&self) -> u64 {
        self.failed + self.refused + self.timed_out
    }
}

#[derive(Default)]
pub struct Handshake {
    clients: HashMap<(u32, IpAddr, u16), Window>,
    listeners: HashMap<(u32, IpAddr, u16), Window>,
}

impl Handshake {
    pub fn on_transition(&mut self, t: &Transition, ctx: &mut Ctx, out: &mut Vec<Alert>) {
        let client = match (t.oldstate, t.newstate) {
            (TcpState::SynSent, TcpState::Established | TcpState::Close) => true,
            (TcpState::SynRecv, TcpState::Established | TcpState::Close) => false,
            _ => return,
        };
        let outcome = match (t.newstate, t.reason) {
            (TcpState::Established, _) => Outcome::Ok,
            (_, Some(EndReason::Refused)) => Outcome::Refused,
            (_, Some(EndReason::ConnectTimeout)) => Outcome::TimedOut,
            // The application gave up on its connect: no verdict on the peer.
            (_, Some(EndReason::ConnectAborted)) if client => return,
            _ => Outcome::Failed,
        };
        let now = t.time.mono_ns;
        let (map, key) = if client {
            (&mut self.clients, (t.ends.netns, t.ends.daddr, t.ends.dport))
        } else {
            (&mut self.listeners, (t.ends.netns, t.ends.saddr, t.ends.sport))
        };
        let r = &ctx.rules.handshake;
        let w = map.entry(key).or_default();
        w.ends.push(now, outcome, r.window_ns);
        w.last_ns = w.last_ns.max(now);
        w.failures.count(outcome, 1, true);
        let from = now.saturating_sub(r.window_ns);
        w.ends.prune(from, MAX_EVENTS, |o, n| w.failures.count(o, n, false));
        let total = w.ends.events();
        let failures = w.failures.total();
        if failures < u64::from(r.failures) || failures * 100 < u64::from(r.failure_pct) * total {
            return;
        }
        let (netns, addr, port) = key;
        let subject = if client {
            Subject::Destination { netns, addr, port }
        } else {
            Subject::Listener { netns, addr, port }
        };
        if !ctx.due(AlertKind::HandshakeTrouble, &subject, now, 0) {
            return;
        }
        let Failures { failed: other, refused, timed_out } = w.failures;
        let process: Option<AlertProcess> = t.owner.as_ref().map(|o: &Owner| ctx.process(o.pid, o.comm));
        let place = endpoint(addr, port);
        let window = seconds(r.window_ns);
        let summary = if client {
            let mut parts = Vec::new();
            if refused > 0 {
                parts.push(format!("{refused} refused"));
            }
            if timed_out > 0 {
                parts.push(format!("{timed_out} timed out"));
            }
            if other > 0 {
                parts.push(format!("{other} failed otherwise"));
            }
            let who = process.as_ref().map_or_else(String::new, |p| format!(" (latest by {})", p.describe()));
            format!(
                "connects to {place} failing: {failures} of {total} within {window} ({}){who}",
                parts.join(", ")
            )
        } else {
            let who = process.as_ref().map_or_else(String::new, |p| format!(" of {}", p.describe()));
            format!(
                "handshakes on listener {place}{who} failing: {failures} of {total} accepted connections did not complete within {window}"
            )
        };
        let alert = Alert {
            kind: AlertKind::HandshakeTrouble,
            severity: Severity::Warning,
            time: t.time,
            subject,
            summary,
            process,
            netns: Some(netns),
            evidence: vec![
                ("side", Evidence::Text(if client { "client" } else { "listener" }.into())),
                ("address", Evidence::Text(place)),
                ("handshakes", Evidence::Int(total)),
                ("failed", Evidence::Int(failures)),
                ("refused", Evidence::Int(refused)),
                ("timed_out", Evidence::Int(timed_out)),
                ("other_failures", Evidence::Int(other)),
                ("failure_rate", Evidence::Real(failures as f64 / total as f64)),
                ("window_ns", Evidence::Int(r.window_ns)),
            ],
        };
        ctx.raise(alert, out);
    }

    /// The entries (runs) holding the handshakes that ended towards a destination, and
    /// how many ended, in the window.
    #[cfg(test)]
    pub(super) fn entries(&self, netns: u32, addr: IpAddr, port: u16) -> Option<(usize, u64)> {
        self.clients.get(&(netns, addr, port)).map(|w| (w.ends.runs(), w.ends.events()))
    }

    /// Forgets subjects with nothing in the window.
    pub fn expire(&mut self, now: u64, rules: &Rules) {
        let window = rules.handshake.window_ns;
        self.clients.retain(|_, w| w.last_ns.saturating_add(window) >= now);
        self.listeners.retain(|_, w| w.last_ns.saturating_add(window) >= now);
    }
}
