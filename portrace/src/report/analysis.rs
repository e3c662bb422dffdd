//! The analysis made at the end: roles, time in state (exact percentiles, or a
//! histogram's past [`EXACT_SAMPLES_MAX`](super::EXACT_SAMPLES_MAX) samples), the
//! slowest and longest lists and TIME_WAIT per peer.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;

use super::*;


/// The nearest-rank `p`-th percentile (0 < p <= 100) of `sorted`: the sample at rank
/// ⌈p·n/100⌉, counting from 1. `None` when there are no samples.
pub(super) fn nearest_rank(sorted: &[u64], p: u64) -> Option<u64> {
    let n = sorted.len() as u64;
    if n == 0 {
        return None;
    }
    let rank = (p * n).div_ceil(100).clamp(1, n);
    Some(sorted[(rank - 1) as usize])
}

/// Sub-buckets per power of two in a [`Histogram`]: a bucket is at most 1/32 of its
/// values wide.
const SUB_BITS: u32 = 5;
const SUBS: u64 = 1 << SUB_BITS;
/// Buckets for packed samples' durations, which are below 2^63.
pub(super) const BUCKETS: usize = ((63 - SUB_BITS) as usize + 1) * SUBS as usize;

/// The bucket of a duration: exact below 32 ns, then 32 buckets per power of two.
pub(super) fn bucket(ns: u64) -> usize {
    if ns < SUBS {
        return ns as usize;
    }
    let e = 63 - ns.leading_zeros();
    let sub = (ns >> (e - SUB_BITS)) & (SUBS - 1);
    ((u64::from(e - SUB_BITS) + 1) * SUBS + sub) as usize
}

/// The largest duration in bucket `b`.
pub(super) fn bucket_high(b: usize) -> u64 {
    let b = b as u64;
    if b < SUBS {
        return b;
    }
    let shift = (b / SUBS - 1) as u32;
    let low = (SUBS + b % SUBS) << shift;
    low + ((1u64 << shift) - 1)
}

/// Samples counted by bucket, exact ones and lower bounds apart: a fixed 30 KiB whatever
/// their number.
#[derive(Clone, Debug)]
pub(super) struct Histogram {
    /// Index `2 * bucket + at_least`, so that counts come in the samples' sort order.
    counts: Vec<u64>,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram { counts: vec![0; 2 * BUCKETS] }
    }

    fn add(&mut self, word: u64) {
        let s = Sample::unpack(word);
        self.counts[2 * bucket(s.ns) + usize::from(s.at_least)] += 1;
    }

    /// The nearest-rank `p`-th percentile of `n` samples, as the largest duration of its
    /// bucket (at most `max`).
    fn nearest_rank(&self, n: u64, p: u64, max: u64) -> Option<Sample> {
        if n == 0 {
            return None;
        }
        let rank = (p * n).div_ceil(100).clamp(1, n);
        let mut seen = 0;
        for (i, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let ns = bucket_high(i / 2).min(max);
                return Some(Sample { ns, at_least: i % 2 == 1 });
            }
        }
        None
    }
}

/// The stays of one state, while they are being gathered: exact samples, up to a limit,
/// then a histogram.
#[derive(Clone, Debug, Default)]
pub(super) struct Gather {
    pub(super) samples: Vec<u64>,
    /// Every sample once there were more than the limit.
    pub(super) histogram: Option<Box<Histogram>>,
    /// Samples in all, lower bounds among them, and the largest (packed).
    count: u64,
    lower_bounds: u64,
    max: Option<u64>,
    unknown: u64,
    at_end: u64,
}

impl Gather {
    /// Adds a packed sample; more than `limit` exact ones move to the histogram.
    pub(super) fn add(&mut self, word: u64, limit: usize) {
        self.count += 1;
        self.lower_bounds += word & 1;
        self.max = Some(self.max.map_or(word, |m| m.max(word)));
        if let Some(h) = &mut self.histogram {
            h.add(word);
            return;
        }
        self.samples.push(word);
        if self.samples.len() > limit {
            let mut h = Box::new(Histogram::new());
            for &w in &self.samples {
                h.add(w);
            }
            self.samples = Vec::new();
            self.histogram = Some(h);
        }
    }
}

/// The stays of every state, gathered for one group.
#[derive(Clone, Debug, Default)]
pub(super) struct Gathers(pub(super) [Gather; 12]);

impl Gathers {
    /// Adds a stay; a state's exact samples past `limit` move to its histogram.
    pub(super) fn stay(&mut self, stay: &Stay, limit: usize) {
        let g = &mut self.0[slot(stay.state)];
        match stay.ns {
            Some(ns) => g.add(Sample::pack(ns, stay.at_least), limit),
            None => g.unknown += 1,
        }
    }

    /// Stays with an unknown time, in every state.
    fn unknown(&self) -> u64 {
        self.0.iter().map(|g| g.unknown).sum()
    }

    fn ongoing(&mut self, state: TcpState) {
        self.0[slot(state)].at_end += 1;
    }

    /// The figures of each state with any stay, in life order.
    pub(super) fn into_stats(mut self) -> Vec<Stats> {
        LIFE_ORDER
            .into_iter()
            .filter_map(|state| {
                let g = &mut self.0[slot(state)];
                if g.count == 0 && g.unknown == 0 && g.at_end == 0 {
                    return None;
                }
                g.samples.sort_unstable();
                let max = g.max.map(Sample::unpack);
                let pick = |p| match &g.histogram {
                    Some(h) => h.nearest_rank(g.count, p, max.map_or(0, |m| m.ns)),
                    None => nearest_rank(&g.samples, p).map(Sample::unpack),
                };
                Some(Stats {
                    state,
                    count: g.count,
                    lower_bounds: g.lower_bounds,
                    unknown: g.unknown,
                    at_end: g.at_end,
                    p50: pick(50),
                    p90: pick(90),
                    p99: pick(99),
                    max,
                    approximate: g.histogram.is_some(),
                })
            })
            .collect()
    }
}

impl Report {

    /// The start of the time span: the first record, or the end when there was none.
    pub(super) fn start(&self, end: Timestamp) -> Timestamp {
        self.first.unwrap_or(end)
    }

    /// The analysis made by `finish`, or, before it (or after records added since), one
    /// made now with the latest record as the end.
    pub(super) fn analysis(&self) -> Cow<'_, Analysis> {
        match &self.analysis {
            Some(analysis) => Cow::Borrowed(analysis),
            None => {
                let end = self.end.or(self.last).unwrap_or(Timestamp { mono_ns: 0, unix_ns: 0 });
                Cow::Owned(self.analyze(end))
            }
        }
    }

    pub(super) fn analyze(&self, end: Timestamp) -> Analysis {
        let mut order: Vec<usize> = (0..self.conns.len()).collect();
        order.sort_by_key(|&row| (self.conns[row].since.mono_ns, self.conns[row].socket));
        let roles: Vec<Role> = self
            .conns
            .iter()
            .map(|c| {
                c.role.unwrap_or_else(|| {
                    if self.find_listener(c.ends.netns, c.ends.saddr, c.ends.sport).is_some() {
                        Role::Server
                    } else {
                        Role::Client
                    }
                })
            })
            .collect();

        let mut overall = self.overall.clone();
        let mut by_port: HashMap<u16, Gathers> = HashMap::new();
        let mut by_process: HashMap<Option<Comm>, Gathers> = HashMap::new();
        let [mut client_handshakes, mut server_handshakes, mut close_waits] =
            self.cut.picks.clone();
        let mut peers: HashMap<IpAddr, Peer> = HashMap::new();
        let (mut listeners, mut clients, mut servers, mut open_at_end) = (0, 0, 0, 0);
        let unknown_durations = self.overall.unknown();

        for (row, c) in self.conns.iter().enumerate() {
            let role = roles[row];
            match role {
                Role::Listener => listeners += 1,
                Role::Client => clients += 1,
                Role::Server => servers += 1,
            }
            let mut port_group =
                self.options.by_port.then(|| by_port.entry(service_port(c, role)).or_default());
            // Two groups cannot be borrowed from one map at once; the process group goes
            // through its own map.
            let mut process_group = self
                .options
                .by_process
                .then(|| by_process.entry(c.owner.map(|o| o.comm)).or_default());
            // The overall gathers have every stay already; the groups are made of the
            // rows' stays, bounded by `ROWS_MAX` and `STAYS_KEPT`.
            let mut time_wait = c.time_wait_cut;
            for stay in &c.stays {
                if let Some(g) = port_group.as_deref_mut() {
                    g.stay(stay, usize::MAX);
                }
                if let Some(g) = process_group.as_deref_mut() {
                    g.stay(stay, usize::MAX);
                }
                let Some(ns) = stay.ns else {
                    time_wait |= stay.state == TcpState::TimeWait;
                    continue;
                };
                let pick = Pick { row, ns, at_least: stay.at_least, then: Some(stay.then) };
                match stay.state {
                    TcpState::SynSent => client_handshakes.push(pick),
                    TcpState::SynRecv => server_handshakes.push(pick),
                    TcpState::CloseWait => close_waits.push(pick),
                    TcpState::TimeWait => time_wait = true,
                    _ => {}
                }
            }
            let mut time_wait_at_end = false;
            if let Some(now) = c.now {
                open_at_end += 1;
                overall.ongoing(now.state);
                if let Some(g) = port_group {
                    g.ongoing(now.state);
                }
                if let Some(g) = process_group {
                    g.ongoing(now.state);
                }
                let ns = end.mono_ns.saturating_sub(now.entered.mono_ns);
                let pick = Pick { row, ns, at_least: true, then: None };
                match now.state {
                    TcpState::SynSent => client_handshakes.push(pick),
                    TcpState::SynRecv => server_handshakes.push(pick),
                    TcpState::CloseWait => close_waits.push(pick),
                    TcpState::TimeWait => time_wait_at_end = true,
                    _ => {}
                }
            }
            if time_wait || time_wait_at_end {
                let peer = c.ends.daddr;
                let p = peers.entry(peer).or_insert(Peer { addr: peer, count: 0, at_end: 0 });
                p.count += 1;
                p.at_end += u64::from(time_wait_at_end);
            }
        }

        let top = self.options.top;
        for picks in [&mut client_handshakes, &mut server_handshakes, &mut close_waits] {
            keep_longest(picks, top, &self.conns);
        }
        let mut peers: Vec<Peer> = peers.into_values().collect();
        peers.sort_unstable_by(|a, b| b.count.cmp(&a.count).then(a.addr.cmp(&b.addr)));

        let by_port = self.options.by_port.then(|| {
            let mut groups: Vec<_> =
                by_port.into_iter().map(|(p, g)| (p, g.into_stats())).collect();
            groups.sort_unstable_by_key(|&(port, _)| port);
            groups
        });
        let by_process = self.options.by_process.then(|| {
            let mut groups: Vec<_> =
                by_process.into_iter().map(|(c, g)| (c, g.into_stats())).collect();
            groups.sort_unstable_by(|(a, _), (b, _)| {
                a.as_ref().map(Comm::as_bytes).cmp(&b.as_ref().map(Comm::as_bytes))
            });
            groups
        });

        Analysis {
            end,
            order,
            roles,
            listeners,
            clients,
            servers,
            open_at_end,
            unknown_durations,
            time_in_state: overall.into_stats(),
            by_port,
            by_process,
            client_handshakes,
            server_handshakes,
            close_waits,
            peers,
        }
    }

    /// The ongoing stay of an open row at `end`.
    pub(super) fn ongoing(c: &Conn, end: Timestamp) -> Option<(TcpState, u64)> {
        c.now.map(|now| (now.state, end.mono_ns.saturating_sub(now.entered.mono_ns)))
    }

    /// A row's lifetime and whether it is a lower bound.
    pub(super) fn lifetime(c: &Conn, end: Timestamp) -> (u64, bool) {
        let last = if c.now.is_some() { end } else { c.last };
        (last.mono_ns.saturating_sub(c.since.mono_ns), c.since_at_least || c.now.is_some())
    }

    pub(super) fn lost_total(&self) -> u64 {
        self.lost.iter().sum()
    }
}


/// Keeps the `n` longest picks, longest first, ties by socket id: a linear selection,
/// then a sort of only what is kept.
pub(super) fn keep_longest(picks: &mut Vec<Pick>, n: usize, conns: &[Conn]) {
    let longest_first =
        |a: &Pick, b: &Pick| b.ns.cmp(&a.ns).then(conns[a.row].socket.cmp(&conns[b.row].socket));
    if n > 0 && picks.len() > n {
        picks.select_nth_unstable_by(n - 1, longest_first);
    }
    picks.truncate(n);
    picks.sort_unstable_by(longest_first);
}


/// What a report holds, to check its bounds.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Held {
    pub rows: usize,
    /// The most stays one row keeps.
    pub most_stays: usize,
    /// Exact samples of the overall time in state.
    pub exact_samples: usize,
    pub histograms: usize,
    /// Candidates for the lists from stays rows do not keep.
    pub candidates: usize,
}

#[cfg(test)]
impl Report {
    pub(crate) fn held(&self) -> Held {
        Held {
            rows: self.conns.len().max(self.index.len()),
            most_stays: self.conns.iter().map(|c| c.stays.len()).max().unwrap_or(0),
            exact_samples: self.overall.0.iter().map(|g| g.samples.len()).sum(),
            histograms: self.overall.0.iter().filter(|g| g.histogram.is_some()).count(),
            candidates: self.cut.picks.iter().map(Vec::len).sum(),
        }
    }
}
