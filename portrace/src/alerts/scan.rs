//! The scan detector: one process sending SYNs to many distinct destinations
//! (address:port) within a window, or whose connects fail to many distinct destinations
//! at a high rate: how a port scan or a worm looks from the host it runs on. A client
//! retrying one dead destination is not a scan (that is handshake trouble): failures count
//! by distinct destination.
//!
//! Per owning process, within `scan.window`: the SYNs sent (`CLOSE -> SYN_SENT`) with
//! their destination, and the connects that ended (`SYN_SENT -> ESTABLISHED` succeeded;
//! `SYN_SENT -> CLOSE` refused, timed out, reset, failed with an error or abandoned failed).
//! Alerts when the distinct destinations reach `scan.targets`, or when the distinct
//! destinations of failed connects reach `scan.failures` and failures are at least
//! `scan.failure_rate` percent of the connects that ended.
//!
//! The window is kept as runs of events ([`super::window`]): a process connecting to one
//! destination over and over costs a few dozen entries a window, not one per SYN; the
//! window is exact to within 1/64 of its length, the counts in it exact.

use foldhash::HashMap;
use std::net::IpAddr;

use super::rules::Rules;
use super::window::Runs;
use super::{endpoint, Alert, AlertKind, Ctx, Evidence, Severity, Subject, REFRESH_NS};
use crate::record::{Comm, EndReason, Timestamp, Transition};
use crate::tcp_state::TcpState;

/// Destinations listed in an alert at most.
const SAMPLE: usize = 10;
/// Events kept per process at most (the oldest go first).
const MAX_EVENTS: u64 = 100_000;

type Dest = (IpAddr, u16);

#[derive(Default)]
struct Process {
    comm: Comm,
    netns: u32,
    last_ns: u64,
    last_time: Option<Timestamp>,
    /// SYNs in the window, by destination.
    syns: Runs<Dest>,
    /// SYNs per destination in the window.
    dests: HashMap<Dest, u32>,
    /// Connects that ended in the window, by destination and whether they failed.
    ends: Runs<(Dest, bool)>,
    /// Failed connects in the window.
    failed: u32,
    /// Failed connects per destination in the window.
    failed_dests: HashMap<Dest, u32>,
}

impl Process {
    fn prune(&mut self, now: u64, window: u64) {
        let from = now.saturating_sub(window);
        self.syns.prune(from, MAX_EVENTS, |d, n| decrement(&mut self.dests, d, n));
        self.ends.prune(from, MAX_EVENTS, |(d, failed), n| {
            if failed {
                self.failed -= n;
                decrement(&mut self.failed_dests, d, n);
            }
        });
    }
}

/// Takes `by` events of `d` out of its count, forgetting it at 0.
fn decrement(map: &mut HashMap<Dest, u32>, d: Dest, by: u32) {
    if let Some(n) = map.get_mut(&d) {
        *n -= by;
        if *n == 0 {
            map.remove(&d);
        }
    }
}

/// Whether a connect that ended this way failed.
fn failed(reason: Option<EndReason>) -> bool {
    matches!(
        reason,
        Some(
            EndReason::Refused
                | EndReason::ConnectTimeout
                | EndReason::ResetByPeer
                | EndReason::Error
                | EndReason::ConnectAborted
        )
    )
}

/// Whether a process's window meets the scan rules.
fn holds(p: &Process, rules: &Rules) -> bool {
    let r = &rules.scan;
    let rate_ok = u64::from(p.failed) * 100 >= u64::from(r.failure_pct) * p.ends.events();
    p.dests.len() >= r.targets as usize || (p.failed_dests.len() >= r.failures as usize && rate_ok)
}

fn build(pid: u32, p: &Process, ctx: &Ctx, time: Timestamp) -> Alert {
    let window = ctx.rules.scan.window_ns;
    let mut sample = Vec::new();
    for d in p.syns.iter().map(|run| run.key) {
        if sample.len() == SAMPLE {
            break;
        }
        if !sample.contains(&d) {
            sample.push(d);
        }
    }
    let mut hosts: Vec<IpAddr> = p.dests.keys().map(|d| d.0).collect();
    hosts.sort_unstable();
    hosts.dedup();
    let mut ports: Vec<u16> = p.dests.keys().map(|d| d.1).collect();
    ports.sort_unstable();
    ports.dedup();
    let ended = p.ends.events();
    let rate = if ended == 0 { 0.0 } else { f64::from(p.failed) / ended as f64 };
    let process = ctx.process(pid, p.comm);
    let window_s = window as f64 / 1e9;
    let mut summary = format!(
        "{} sent SYNs to {} destinations ({} {}, {} {}) within {window_s}s",
        process.describe(),
        p.dests.len(),
        hosts.len(),
        if hosts.len() == 1 { "host" } else { "hosts" },
        ports.len(),
        if ports.len() == 1 { "port" } else { "ports" },
    );
    if ended > 0 {
        summary.push_str(&format!("; {} of {ended} connects failed ({:.0}%)", p.failed, rate * 100.0));
    }
    Alert {
        kind: AlertKind::Scan,
        severity: Severity::Critical,
        time,
        subject: Subject::Process(pid),
        summary,
        process: Some(process),
        netns: Some(p.netns),
        evidence: vec![
            ("targets", Evidence::Int(p.dests.len() as u64)),
            ("hosts", Evidence::Int(hosts.len() as u64)),
            ("ports", Evidence::Int(ports.len() as u64)),
            ("syns", Evidence::Int(p.syns.events())),
            ("sample", Evidence::List(sample.iter().map(|&(a, port)| endpoint(a, port)).collect())),
            ("connects_ended", Evidence::Int(ended)),
            ("connects_failed", Evidence::Int(u64::from(p.failed))),
            ("failed_targets", Evidence::Int(p.failed_dests.len() as u64)),
            ("failure_rate", Evidence::Real(rate)),
            ("window_ns", Evidence::Int(window)),
        ],
    }
}

#[derive(Default)]
pub struct Scan {
    processes: HashMap<u32, Process>,
}

impl Scan {
    pub fn on_transition(&mut self, t: &Transition, ctx: &mut Ctx, out: &mut Vec<Alert>) {
        let Some(owner) = t.owner else { return };
        let now = t.time.mono_ns;
        let dest = (t.ends.daddr, t.ends.dport);
        let window = ctx.rules.scan.window_ns;
        let p = match (t.oldstate, t.newstate) {
            (TcpState::Close, TcpState::SynSent) => {
                let p = self.processes.entry(owner.pid).or_default();
                p.syns.push(now, dest, window);
                *p.dests.entry(dest).or_default() += 1;
                p
            }
            (TcpState::SynSent, TcpState::Established | TcpState::Close) => {
                let Some(p) = self.processes.get_mut(&owner.pid) else { return };
                let failed = t.newstate == TcpState::Close && failed(t.reason);
                p.ends.push(now, (dest, failed), window);
                if failed {
                    p.failed += 1;
                    *p.failed_dests.entry(dest).or_default() += 1;
                }
                p
            }
            _ => return,
        };
        p.comm = owner.comm;
        p.netns = t.ends.netns;
        if now >= p.last_ns {
            p.last_ns = now;
            p.last_time = Some(t.time);
        }
        p.prune(now, window);
        let subject = Subject::Process(owner.pid);
        if !holds(p, &ctx.rules) || !ctx.due(AlertKind::Scan, &subject, now, REFRESH_NS) {
            return;
        }
        let alert = build(owner.pid, p, ctx, t.time);
        ctx.raise(alert, out);
    }

    /// At the end of the trace: the latest evidence of every process that alerted and
    /// is still scanning, for the summary.
    pub fn refresh(&mut self, ctx: &mut Ctx) {
        let mut pids: Vec<u32> = self.processes.keys().copied().collect();
        pids.sort_unstable();
        for pid in pids {
            let p = &self.processes[&pid];
            let Some(time) = p.last_time else { continue };
            if ctx.alerted(AlertKind::Scan, &Subject::Process(pid)) && holds(p, &ctx.rules) {
                let alert = build(pid, p, ctx, time);
                ctx.update(alert);
            }
        }
    }

    /// The entries (runs) holding a process's SYNs and ended connects in the window.
    #[cfg(test)]
    pub(super) fn entries(&self, pid: u32) -> Option<(usize, usize)> {
        self.processes.get(&pid).map(|p| (p.syns.runs(), p.ends.runs()))
    }

    /// Forgets processes that sent nothing within the window.
    pub fn expire(&mut self, now: u64, rules: &Rules) {
        let window = rules.scan.window_ns;
        self.processes.retain(|_, p| p.last_ns.saturating_add(window) >= now);
    }
}
