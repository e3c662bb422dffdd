//! The TIME_WAIT pile-up detector. Each connection in TIME_WAIT keeps its 4-tuple, so
//! the connections from one local address to one remote address and port can have at most
//! as many TIME_WAITs as the local port range has ports: past that, connect() fails with
//! EADDRNOTAVAIL. Per (network namespace, local address, remote address, remote port):
//! the sockets in TIME_WAIT now, and the rate at which sockets entered TIME_WAIT over
//! `time_wait.window`. Alerts when the count reaches `time_wait.percent` of the
//! namespace's `ip_local_port_range` (or `time_wait.count`, when set), or when at the
//! current rate the rest of the range would be used up within `time_wait.lifetime` (the
//! kernel's 60 s TIME_WAIT), with the time to exhaustion at that rate. Server-side
//! TIME_WAITs spread over their clients' ports, one per peer port, and never pile up here.
//!
//! The rate's window is kept as runs of entries into TIME_WAIT ([`super::window`]): a few
//! dozen entries a window, however many sockets; the window is exact to within 1/64 of its
//! length, the count in it exact.

use foldhash::HashMap;
use std::net::IpAddr;

use super::close_wait::seconds;
use super::rules::Rules;
use super::window::Runs;
use super::{endpoint, Alert, AlertKind, Ctx, Evidence, Severity, Subject, REFRESH_NS};
use crate::record::{SocketRecord, Timestamp, Transition};
use crate::tcp_state::TcpState;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    netns: u32,
    local: IpAddr,
    remote: IpAddr,
    port: u16,
}

#[derive(Default)]
struct Group {
    count: u64,
    /// When a socket last entered TIME_WAIT.
    last: Option<Timestamp>,
    /// Sockets that entered TIME_WAIT within the window, uncapped: a run takes every entry
    /// of a slice, so there are about 65 runs a window however many sockets entered.
    entered: Runs<()>,
}

/// The groups live in slots, and each socket in TIME_WAIT names its group's slot: in a
/// storm tens of thousands of sockets are in TIME_WAIT at once, and a slot number keeps
/// each socket's entry at 16 bytes where the whole key (two addresses) took 48, a third of
/// the memory and of the cache lines its lookups touch.
#[derive(Default)]
pub struct TimeWait {
    /// The slot of each group, by its key.
    slots: HashMap<Key, u32>,
    /// Each slot's group and key; `None` for a slot freed, which `free` lists for reuse.
    groups: Vec<Option<(Key, Group)>>,
    free: Vec<u32>,
    /// The slot of the group of each socket in TIME_WAIT.
    sockets: HashMap<u64, u32>,
}

impl TimeWait {
    pub fn on_socket(&mut self, s: &SocketRecord) {
        if s.state == TcpState::TimeWait {
            let key = Key { netns: s.ends.netns, local: s.ends.saddr, remote: s.ends.daddr, port: s.ends.dport };
            self.enter(s.socket, key, None, 0);
        }
    }

    pub fn on_transition(&mut self, t: &Transition, ctx: &mut Ctx, out: &mut Vec<Alert>) {
        // Only a socket leaving TIME_WAIT can be one of those counted: asking the map
        // about every transition cost a probe of a table of tens of thousands of sockets,
        // nearly always in vain.
        let leaving = if t.oldstate == TcpState::TimeWait { self.sockets.remove(&t.socket) } else { None };
        if let Some(slot) = leaving {
            if let Some((_, g)) = self.group_mut(slot) {
                g.count = g.count.saturating_sub(1);
                if g.count == 0 && g.entered.is_empty() {
                    self.release(slot);
                }
            }
        }
        if t.newstate != TcpState::TimeWait {
            return;
        }
        let key = Key { netns: t.ends.netns, local: t.ends.saddr, remote: t.ends.daddr, port: t.ends.dport };
        let now = t.time.mono_ns;
        let window = ctx.rules.time_wait.window_ns;
        let g = self.enter(t.socket, key, Some(t.time), window);
        g.entered.forget_before(now.saturating_sub(window));
        let g = &*g;
        // Building an alert is costly: at most once a second while a pile-up lasts.
        let subject = Subject::Peer { netns: key.netns, local: key.local, remote: key.remote, port: key.port };
        if !ctx.due(AlertKind::TimeWaitPileup, &subject, now, REFRESH_NS) {
            return;
        }
        if let Some(alert) = judge(key, g, ctx, t.time, g.entered.events()) {
            ctx.raise(alert, out);
        }
    }

    /// At the end of the trace: the latest evidence of every peer that alerted and still
    /// piles up, for the summary (during the trace it is refreshed at most once a second).
    pub fn refresh(&mut self, ctx: &mut Ctx, end: Timestamp) {
        let mut groups: Vec<&(Key, Group)> = self.groups.iter().flatten().collect();
        groups.sort_unstable_by_key(|(k, _)| (k.netns, k.local, k.remote, k.port));
        for (key, g) in groups {
            let subject = Subject::Peer { netns: key.netns, local: key.local, remote: key.remote, port: key.port };
            if ctx.alerted(AlertKind::TimeWaitPileup, &subject) {
                let time = g.last.unwrap_or(end);
                let from = time.mono_ns.saturating_sub(ctx.rules.time_wait.window_ns);
                let entered = g.entered.events_since(from);
                if let Some(alert) = judge(*key, g, ctx, time, entered) {
                    ctx.update(alert);
                }
            }
        }
    }

    /// Counts `socket` in its group; `time`: when it entered TIME_WAIT, if seen, counted in
    /// the rate's `window`.
    fn enter(&mut self, socket: u64, key: Key, time: Option<Timestamp>, window: u64) -> &mut Group {
        let slot = match self.slots.get(&key) {
            Some(&slot) => slot,
            None => self.occupy(key),
        };
        self.sockets.insert(socket, slot);
        let (_, g) = self.groups[slot as usize].get_or_insert_with(|| (key, Group::default()));
        g.count += 1;
        if let Some(t) = time {
            g.entered.push(t.mono_ns, (), window);
            g.last = Some(t);
        }
        g
    }

    /// Drops rate history older than the window, and groups left empty.
    pub fn expire(&mut self, now: u64, rules: &Rules) {
        let from = now.saturating_sub(rules.time_wait.window_ns);
        for slot in 0..self.groups.len() as u32 {
            let Some((_, g)) = self.group_mut(slot) else { continue };
            g.entered.forget_before(from);
            if g.count == 0 && g.entered.is_empty() {
                self.release(slot);
            }
        }
    }

    /// The entries (runs) holding a peer's rate window, and the sockets that entered
    /// TIME_WAIT in it.
    #[cfg(test)]
    pub(super) fn entries(&self, netns: u32, local: IpAddr, remote: IpAddr, port: u16) -> Option<(usize, u64)> {
        let slot = *self.slots.get(&Key { netns, local, remote, port })?;
        self.groups[slot as usize].as_ref().map(|(_, g)| (g.entered.runs(), g.entered.events()))
    }

    fn group_mut(&mut self, slot: u32) -> Option<&mut (Key, Group)> {
        self.groups.get_mut(slot as usize).and_then(Option::as_mut)
    }

    /// A slot for a new group `key`: a freed one, or a new one.
    fn occupy(&mut self, key: Key) -> u32 {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.groups.push(None);
                (self.groups.len() - 1) as u32
            }
        };
        self.groups[slot as usize] = Some((key, Group::default()));
        self.slots.insert(key, slot);
        slot
    }

    /// Frees the slot of a group no socket is in (its count is 0).
    fn release(&mut self, slot: u32) {
        if let Some((key, _)) = self.groups.get_mut(slot as usize).and_then(Option::take) {
            self.slots.remove(&key);
            self.free.push(slot);
        }
    }
}

/// The alert the group `key` raises now, if its TIME_WAITs pile up.
/// `entered`: how many sockets entered TIME_WAIT within the window before `time`.
fn judge(key: Key, g: &Group, ctx: &Ctx, time: Timestamp, entered: u64) -> Option<Alert> {
    let r = &ctx.rules.time_wait;
    let size = ctx.port_range_size(key.netns);
    let threshold = r.count.map_or_else(|| (size * u64::from(r.percent)).div_ceil(100), u64::from);
    let rate = entered as f64 / (r.window_ns as f64 / 1e9);
    let left = size.saturating_sub(g.count);
    let exhaustion_s = if rate > 0.0 { left as f64 / rate } else { f64::INFINITY };
    let by_count = g.count >= threshold;
    let by_rate = exhaustion_s <= r.lifetime_ns as f64 / 1e9;
    if !(by_count || by_rate) {
        return None;
    }
    let range = ctx.port_range(key.netns);
    let subject = Subject::Peer { netns: key.netns, local: key.local, remote: key.remote, port: key.port };
    let share = g.count as f64 / size as f64;
    let exhaustion = if exhaustion_s.is_finite() {
        format!("exhausted in about {}", seconds((exhaustion_s * 1e9) as u64))
    } else {
        "not being used up now".to_string()
    };
    Some(Alert {
        kind: AlertKind::TimeWaitPileup,
        severity: if share >= 0.9 { Severity::Critical } else { Severity::Warning },
        time,
        subject,
        summary: format!(
            "{} sockets in TIME_WAIT from {} to {} ({:.0}% of the local port range {}-{}, from {}); \
             {:.1} new per second: the range is {exhaustion}",
            g.count,
            key.local,
            endpoint(key.remote, key.port),
            share * 100.0,
            range.low,
            range.high,
            range.source,
            rate
        ),
        process: None,
        netns: Some(key.netns),
        evidence: vec![
            ("time_wait", Evidence::Int(g.count)),
            ("threshold", Evidence::Int(threshold)),
            ("port_range", Evidence::Text(format!("{}-{}", range.low, range.high))),
            ("port_range_source", Evidence::Text(range.source.clone())),
            ("range_used", Evidence::Real(share)),
            ("rate_per_s", Evidence::Real(rate)),
            (
                "exhaustion_ns",
                if exhaustion_s.is_finite() { Evidence::Int((exhaustion_s * 1e9) as u64) } else { Evidence::Null },
            ),
            ("by", Evidence::Text(if by_count { "count" } else { "rate" }.into())),
        ],
    })
}
