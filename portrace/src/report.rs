//! The trace report: what people otherwise work out by hand from a trace. This module
//! owns the per-connection table (each socket's states with the time spent in each, its
//! lifetime and how it ended), the from-state x to-state transition matrix, the
//! time-in-state distributions (overall, and optionally per service port and per owning
//! process), the slowest handshakes, the longest CLOSE_WAITs, TIME_WAIT counts per peer,
//! and the totals and losses that say how complete all of that is; rendered as text for
//! people ([`Report::write_text`]) and as one JSON document ([`Report::write_json`]).
//!
//! Feed a [`Report`] the records of a run (or of a saved trace) in the order they arrive:
//! [`Report::add_socket`] for the start-up inventory, then [`Report::add_transition`] and
//! [`Report::add_lost`], then [`Report::finish`] with the end of the trace, then write it.
//! Adding a record is a hash lookup by socket id and, for most transitions, one push of
//! the duration onto that connection's list; everything else is computed once, in
//! `finish`.
//!
//! # Definitions
//!
//! - **Connection**: one socket id (see `socket` in `docs/json.md`): a connection from
//!   its creation to CLOSE, including its TIME_WAIT, or a listener. Each has a **role**:
//!   a *listener* (seen in LISTEN as its own state); a *server* connection (a child of a
//!   listener, first reported as `LISTEN -> SYN_RECV`, or seen in SYN_RECV); a *client*
//!   connection (seen in SYN_SENT). A connection first seen after its handshake (from the
//!   inventory, or after lost records) is a server connection when its local address and
//!   port match a listener of the trace (same network namespace, the listener bound to that
//!   address or to the wildcard address), and a client connection otherwise.
//! - **Service port**: the port that names the service a connection is about. For a
//!   listener and a server connection it is the local port (the port listened on); for a
//!   client connection, the remote port (the port connected to). `--by-port` groups by it.
//! - **Process**: the command name of the connection's owner (the last owner the trace
//!   gave it), `-` when unknown. `--by-process` groups by it.
//! - **Stay**: a period a connection spent in one state. A stay is *complete* when the
//!   trace shows the connection leaving the state; its time is the transition's
//!   `prev_state_ns`. The time is *unknown* (`?`) when portrace did not see the state
//!   begin (lost records), and a *lower bound* (`>=`) when the connection was already in
//!   the state when the trace started. A stay still going on when the trace ended is
//!   *ongoing*: its time so far is a lower bound too (`>=`). The state a connection was
//!   created from is no stay: CLOSE before a `connect` or `listen`, and the listener's
//!   LISTEN a child is cloned from.
//! - **Lifetime**: from the first to the last time the connection was seen: from its
//!   creation (or, for a connection that existed before it was first seen, from the moment
//!   it entered its first known state, a lower bound), to its transition into CLOSE, or to
//!   the end of the trace while it is still open (a lower bound again).
//! - **Children** of a listener: the `LISTEN -> SYN_RECV` transitions whose local address
//!   and port and network namespace match it, by the same rule as above. When several
//!   listeners match, the one still listening wins, then the one bound to the exact
//!   address, then the most recent.
//! - **Percentiles** are nearest-rank over the exact samples: the p-th percentile of n
//!   sorted durations is the one at rank ⌈p·n/100⌉ (counting from 1), the smallest sample
//!   with at least p% of the samples at or below it; it is always an observed value. The
//!   samples are the complete stays with a known time, lower bounds included (a
//!   percentile or maximum that falls on a lower bound is marked as one); unknown times
//!   and ongoing stays are counted apart. The overall table keeps up to
//!   [`EXACT_SAMPLES_MAX`] exact samples per state (8 bytes each); past that, the state's
//!   samples move to a histogram of fixed size with buckets at most 1/32 of their value
//!   wide, and its percentiles are the largest value of their bucket, marked `~` (text) and
//!   `"approximate": true` (JSON); its count and maximum stay exact.
//! - **Bounds**: the report keeps the first [`ROWS_MAX`] connections as rows, and each row
//!   its first [`STAYS_KEPT`] stays: about 800 bytes a row at most, so about 40 MB, plus
//!   at most 4 MB of exact samples per state. Transitions of later sockets count in the
//!   totals, the matrix and time in state; later stays of a row also count in the lists and
//!   in TIME_WAIT per peer. The groups by port and by process are made of the rows' stays.
//!   What was not kept is said under the totals (`NOT KEPT`), in the row (`[N more stays
//!   not kept]`) and in the JSON document (`not_kept`, `stays_not_kept`).
//! - **Handshake** time: a client connection's time in SYN_SENT (until ESTABLISHED, or
//!   until it failed: refused, timed out, abandoned), and a server connection's time in
//!   SYN_RECV, listed apart. The kernel creates a server child when the handshake's last
//!   ACK arrives, so SYN_RECV covers only the end of the server's side of the handshake.
//! - **TIME_WAIT per peer**: the connections seen in TIME_WAIT (entering it during the
//!   trace, or already in it at the start) by remote address, with how many of them were
//!   still in TIME_WAIT at the end.
//! - **Time span**: from the first record (the inventory, a transition or a loss) to the
//!   end given to [`Report::finish`].
//!
//! # The text report
//!
//! Sections, each an aligned table: the totals and, when anything was lost, a warning
//! that the figures may be incomplete; the connections; the transition matrix (states in
//! the order of a connection's life, from CLOSE, `.` for none); time in state; the slowest
//! handshakes; the longest CLOSE_WAITs; TIME_WAIT per peer. Durations are shown for people
//! with three significant digits, truncated (`84.1us`, `1.23ms`, `2.30s`), then `2m03s`,
//! `1h02m`, `3d04h`.
//!
//! The connection table shows at most [`TEXT_ROWS`] rows. When there are more, it keeps the
//! most interesting ones: listeners first, then connections that ended abnormally (any end
//! other than a normal active or passive close or a listener closed, or with an error),
//! then connections still open at the end, then the others; within each of these classes
//! the longest-lived first. The rows kept are shown in order of first sight, followed by a
//! line saying how many of each class were left out. The lists of slowest handshakes and
//! longest CLOSE_WAITs have [`ReportOptions::top`] rows, and so has TIME_WAIT per peer, with
//! a line saying how many peers were left out. The JSON document has every connection and
//! every peer.
//!
//! # The JSON document
//!
//! [`Report::write_json`] writes one JSON object, on one line, keys in the order given
//! here. Durations are integer nanoseconds (`*_ns`); a duration that is a lower bound has
//! a companion `*_at_least` boolean. Times are an RFC 3339 UTC string (`time`) and the
//! kernel's `CLOCK_MONOTONIC` nanoseconds (`ts_ns`), as in `docs/json.md`. Names of states,
//! end reasons, owner sources, loss causes and errors are those of `docs/json.md`.
//!
//! | key | type | meaning |
//! | --- | --- | --- |
//! | `type` | string | `"report"` |
//! | `schema` | integer | The version of this document's layout: `1`. Fields are only added within a version. |
//! | `portrace` | string | portrace's version. |
//! | `start` | object | The first record: `{"time": ..., "ts_ns": ...}`. |
//! | `end` | object | The end of the trace, in the same form. |
//! | `span_ns` | integer | From `start` to `end`. |
//! | `complete` | boolean | `false` when transitions were lost: every figure may then be incomplete. |
//! | `options` | object | `{"by_port": bool, "by_process": bool, "top": integer}` |
//! | `totals` | object | Below. |
//! | `not_kept` | object | Present only when a bound was reached: `rows_max`, `stays_kept` (the bounds), `transitions` and `sockets` (of sockets without a row), `begun` (connections begun among those transitions), `stays` (stays of rows not kept). |
//! | `connections` | array | Every connection kept as a row (the first `rows_max`), in order of first sight (below). |
//! | `transitions` | array | The matrix: `{"from": state, "to": state, "count": integer}` for every kind of transition seen, states in the order of a connection's life (`CLOSE`, `LISTEN`, `SYN_SENT`, `SYN_RECV`, `NEW_SYN_RECV`, `ESTABLISHED`, `FIN_WAIT1`, `FIN_WAIT2`, `CLOSING`, `TIME_WAIT`, `CLOSE_WAIT`, `LAST_ACK`), from-state first. |
//! | `time_in_state` | array | One object per state with any stay, in the same order (below). |
//! | `by_port` | array or null | `{"port": integer, "time_in_state": [...]}` per service port, by port number; `null` unless asked for. |
//! | `by_process` | array or null | `{"comm": string or null, "time_in_state": [...]}` per owner command name (`null`: unknown owner), unknown first, then by name; `null` unless asked for. |
//! | `slowest_client_handshakes` | array | The `top` longest SYN_SENT stays, longest first (stay objects, below). |
//! | `slowest_server_handshakes` | array | The `top` longest SYN_RECV stays. |
//! | `longest_close_waits` | array | The `top` longest CLOSE_WAIT stays, ongoing ones included. |
//! | `time_wait_by_peer` | array | Every peer: `{"peer": address, "count": integer, "at_end": integer}`, most connections first, then by address. |
//!
//! `totals`: `transitions` (integer), `connections` (all rows), `listeners`, `clients`,
//! `servers`, `from_inventory` (rows that existed when the trace started), `open_at_end`,
//! `unknown_durations` (stays whose time is unknown), `children_without_listener` (`LISTEN
//! -> SYN_RECV` transitions no listener of the trace matched), `lost` (all causes) and
//! `lost_by_cause` (`{"ring_full": n, "skipped": n, "malformed": n}`).
//!
//! A connection: `socket`, `role` (`"listener"`, `"client"`, `"server"`), `family`,
//! `saddr`, `sport`, `daddr`, `dport`, `netns`, `service_port`, `owner_pid` and
//! `owner_comm` (null when unknown), `owner_source` (`"unknown"` when unknown), `first` (a
//! time object: when it was first known to exist), `first_at_least` (it existed before
//! that), `last` (its transition into CLOSE, or the end of the trace while open),
//! `lifetime_ns`, `lifetime_at_least`, `open` (still open at the end), `reason` (the
//! [`EndReason`] name, or null when open or unknown), `error` (errno name or null),
//! `retransmits`, `children` (an integer for listeners, null for others),
//! `stays_not_kept` (only when the row has more than `stays_kept` stays), and `states`: its
//! stays in order, each `{"state", "ns" (null when unknown), "at_least" (a lower bound:
//! older than the trace, or ongoing), "ongoing" (still in the state at the end),
//! "gap_before" (states may be missing before this one: records were lost), "then" (the
//! state it left for, null while ongoing)}`.
//!
//! A `time_in_state` entry: `state`, `count` (complete stays with a known time),
//! `lower_bounds` (how many of those are lower bounds), `unknown`, `at_end` (ongoing stays,
//! not in `count`), then `p50_ns`, `p50_at_least`, `p90_ns`, `p90_at_least`, `p99_ns`,
//! `p99_at_least`, `max_ns`, `max_at_least` (null when `count` is 0), and `approximate`
//! (`true`, only when the percentiles come from a histogram).
//!
//! A stay in the lists: `socket`, `owner_pid`, `owner_comm`, `saddr`, `sport`, `daddr`,
//! `dport`, `ns`, `at_least`, `ongoing`, `then` (null while ongoing), `reason` (the
//! connection's end reason when `then` is `"CLOSE"`, else null).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, SocketAddr};

use crate::clock::Rfc3339;
use crate::record::{
    Comm, EndReason, Family, LossCause, Lost, Owner, SocketRecord, Timestamp, Transition,
};
use crate::tcp_state::TcpState;

/// The most connection rows the text report shows.
pub const TEXT_ROWS: usize = 50;

/// The most connections a report keeps as rows: the first ones seen. The transitions of
/// later sockets are counted in the totals, the transition matrix and time in state only.
pub const ROWS_MAX: usize = 50_000;

/// The most stays a row keeps, its first ones. Later stays of the connection still count
/// in time in state, in the lists and in TIME_WAIT per peer, and the row says how many
/// it does not show.
pub const STAYS_KEPT: usize = 16;

/// The most exact samples the overall time in state keeps for one state. Past it, that
/// state's samples move to a histogram whose buckets are at most 1/32 of their value wide,
/// and its percentiles are marked approximate (`~`); its maximum stays exact.
pub const EXACT_SAMPLES_MAX: usize = 500_000;

/// The version of the JSON document's layout.
pub const JSON_SCHEMA: u32 = 1;

/// What the report breaks down and how long its lists are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportOptions {
    /// Time in state per service port, too.
    pub by_port: bool,
    /// Time in state per owning process (command name), too.
    pub by_process: bool,
    /// Rows in the "slowest" and "longest" lists and in TIME_WAIT per peer (text).
    pub top: usize,
}

impl Default for ReportOptions {
    fn default() -> ReportOptions {
        ReportOptions { by_port: false, by_process: false, top: 10 }
    }
}

/// What a connection is to this host; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Listener,
    Client,
    Server,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Listener => "listener",
            Role::Client => "client",
            Role::Server => "server",
        }
    }
}

/// The states in the order a connection lives through them, the order every table uses.
const LIFE_ORDER: [TcpState; 12] = [
    TcpState::Close,
    TcpState::Listen,
    TcpState::SynSent,
    TcpState::SynRecv,
    TcpState::NewSynRecv,
    TcpState::Established,
    TcpState::FinWait1,
    TcpState::FinWait2,
    TcpState::Closing,
    TcpState::TimeWait,
    TcpState::CloseWait,
    TcpState::LastAck,
];

/// A state's index in per-state arrays: the kernel numbers them 1 to 12.
fn slot(state: TcpState) -> usize {
    usize::from(state.kernel_number()) - 1
}

/// Every loss cause, in the order the report lists them.
const CAUSES: [LossCause; LossCause::ALL.len()] = LossCause::ALL;

fn cause_slot(cause: LossCause) -> usize {
    cause.index()
}

/// A complete stay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stay {
    state: TcpState,
    /// The state it left for.
    then: TcpState,
    ns: Option<u64>,
    at_least: bool,
    /// The previous transitions of the connection were not all seen.
    gap_before: bool,
}

/// The state an open connection is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Current {
    state: TcpState,
    /// When it entered the state; for a socket of the inventory, when the inventory was
    /// taken (the connection is older: see `Conn::since_at_least`).
    entered: Timestamp,
}

/// How a connection ended, from its transition into CLOSE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ending {
    reason: Option<EndReason>,
    error: Option<i32>,
    retransmits: u8,
}

impl Ending {
    /// An end other than a normal close.
    fn abnormal(&self) -> bool {
        self.error.is_some()
            || !matches!(
                self.reason,
                None | Some(
                    EndReason::ActiveClose | EndReason::PassiveClose | EndReason::ListenerClosed
                )
            )
    }
}

/// One row of the connection table.
#[derive(Clone, Debug)]
struct Conn {
    socket: u64,
    family: Family,
    local: (IpAddr, u16),
    remote: (IpAddr, u16),
    netns: u32,
    owner: Option<Owner>,
    /// `None` until a state says; resolved by the listeners at the end.
    role: Option<Role>,
    inventory: bool,
    /// When it was first known to exist.
    since: Timestamp,
    /// It existed before `since`.
    since_at_least: bool,
    /// Its latest transition (or the inventory).
    last: Timestamp,
    stays: Vec<Stay>,
    /// `None` once closed.
    now: Option<Current>,
    ending: Option<Ending>,
    children: u64,
    /// Stays after the first [`STAYS_KEPT`], counted but not kept.
    stays_cut: u64,
    /// One of the stays not kept was in TIME_WAIT.
    time_wait_cut: bool,
}

/// What the report counted without keeping it, by its bounds.
#[derive(Clone, Debug, Default)]
struct Cut {
    /// Sockets of the inventory that got no row (past [`ROWS_MAX`]).
    sockets: u64,
    /// Transitions of sockets that got no row.
    transitions: u64,
    /// Of those, births (from CLOSE, or a listener's child): connections begun.
    births: u64,
    /// Stays of rows past their first [`STAYS_KEPT`].
    stays: u64,
    /// The longest of those stays for the lists (client handshakes, server handshakes,
    /// CLOSE_WAITs), trimmed to the lists' length as they grow.
    picks: [Vec<Pick>; 3],
}

/// Which list a stay in `state` is a candidate for.
fn list_of(state: TcpState) -> Option<usize> {
    match state {
        TcpState::SynSent => Some(0),
        TcpState::SynRecv => Some(1),
        TcpState::CloseWait => Some(2),
        _ => None,
    }
}

/// A stay picked for one of the lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pick {
    row: usize,
    ns: u64,
    at_least: bool,
    /// The state it left for; `None` while ongoing.
    then: Option<TcpState>,
}

/// A duration chosen from the samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sample {
    ns: u64,
    at_least: bool,
}

impl Sample {
    /// A sample packed in one word, the lower-bound flag in the low bit, so that the
    /// samples sort as plain integers (by duration, then exact before lower bound) and take
    /// 8 bytes each. Durations above 2^63 ns (292 years) are clamped.
    fn pack(ns: u64, at_least: bool) -> u64 {
        (ns.min(u64::MAX >> 1) << 1) | u64::from(at_least)
    }

    fn unpack(word: u64) -> Sample {
        Sample { ns: word >> 1, at_least: word & 1 == 1 }
    }
}

/// The nearest-rank `p`-th percentile (0 < p <= 100) of `sorted`: the sample at rank
/// ⌈p·n/100⌉, counting from 1. `None` when there are no samples.
fn nearest_rank(sorted: &[u64], p: u64) -> Option<u64> {
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
const BUCKETS: usize = ((63 - SUB_BITS) as usize + 1) * SUBS as usize;

/// The bucket of a duration: exact below 32 ns, then 32 buckets per power of two.
fn bucket(ns: u64) -> usize {
    if ns < SUBS {
        return ns as usize;
    }
    let e = 63 - ns.leading_zeros();
    let sub = (ns >> (e - SUB_BITS)) & (SUBS - 1);
    ((u64::from(e - SUB_BITS) + 1) * SUBS + sub) as usize
}

/// The largest duration in bucket `b`.
fn bucket_high(b: usize) -> u64 {
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
struct Histogram {
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
struct Gather {
    samples: Vec<u64>,
    /// Every sample once there were more than the limit.
    histogram: Option<Box<Histogram>>,
    /// Samples in all, lower bounds among them, and the largest (packed).
    count: u64,
    lower_bounds: u64,
    max: Option<u64>,
    unknown: u64,
    at_end: u64,
}

impl Gather {
    /// Adds a packed sample; more than `limit` exact ones move to the histogram.
    fn add(&mut self, word: u64, limit: usize) {
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
struct Gathers([Gather; 12]);

impl Gathers {
    /// Adds a stay; a state's exact samples past `limit` move to its histogram.
    fn stay(&mut self, stay: &Stay, limit: usize) {
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
    fn into_stats(mut self) -> Vec<Stats> {
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

/// Time in one state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stats {
    state: TcpState,
    /// Complete stays with a known time (the samples).
    count: u64,
    /// Samples that are lower bounds.
    lower_bounds: u64,
    /// Complete stays with an unknown time.
    unknown: u64,
    /// Stays still going on at the end.
    at_end: u64,
    p50: Option<Sample>,
    p90: Option<Sample>,
    p99: Option<Sample>,
    max: Option<Sample>,
    /// The percentiles come from a histogram (more than [`EXACT_SAMPLES_MAX`] samples).
    approximate: bool,
}

/// TIME_WAIT towards one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Peer {
    addr: IpAddr,
    count: u64,
    at_end: u64,
}

/// Everything computed from the rows at the end.
#[derive(Clone, Debug)]
struct Analysis {
    end: Timestamp,
    /// Row indexes in order of first sight.
    order: Vec<usize>,
    roles: Vec<Role>,
    listeners: u64,
    clients: u64,
    servers: u64,
    open_at_end: u64,
    unknown_durations: u64,
    time_in_state: Vec<Stats>,
    by_port: Option<Vec<(u16, Vec<Stats>)>>,
    by_process: Option<Vec<(Option<Comm>, Vec<Stats>)>>,
    client_handshakes: Vec<Pick>,
    server_handshakes: Vec<Pick>,
    close_waits: Vec<Pick>,
    peers: Vec<Peer>,
}

/// The report of one trace; see the module documentation.
#[derive(Clone, Debug)]
pub struct Report {
    options: ReportOptions,
    conns: Vec<Conn>,
    /// Row of each socket id.
    index: HashMap<u64, usize>,
    /// Rows of listeners, by local port.
    listeners: HashMap<u16, Vec<usize>>,
    /// Transitions by (from, to) state slot.
    matrix: [[u64; 12]; 12],
    transitions: u64,
    lost: [u64; LossCause::ALL.len()],
    unmatched_children: u64,
    /// The earliest and latest record.
    first: Option<Timestamp>,
    last: Option<Timestamp>,
    end: Option<Timestamp>,
    analysis: Option<Analysis>,
    /// The Alerts section, when the detectors ran.
    alerts: Option<crate::alerts::section::AlertSection>,
    /// Time in state over every stay, gathered as they come.
    overall: Gathers,
    cut: Cut,
}

impl Report {
    pub fn new(options: ReportOptions) -> Report {
        Report {
            options,
            conns: Vec::new(),
            index: HashMap::new(),
            listeners: HashMap::new(),
            matrix: [[0; 12]; 12],
            transitions: 0,
            lost: [0; LossCause::ALL.len()],
            unmatched_children: 0,
            first: None,
            last: None,
            end: None,
            analysis: None,
            alerts: None,
            overall: Gathers::default(),
            cut: Cut::default(),
        }
    }

    /// A socket of the start-up inventory: a row in its initial state, with its owner. A
    /// socket id already known is left alone.
    pub fn add_socket(&mut self, s: &SocketRecord) {
        self.analysis = None;
        self.seen(s.time);
        if self.index.contains_key(&s.socket) {
            return;
        }
        if self.conns.len() >= ROWS_MAX {
            self.cut.sockets += 1;
            return;
        }
        let row = self.conns.len();
        let open = s.state != TcpState::Close;
        self.conns.push(Conn {
            socket: s.socket,
            family: s.family,
            local: (s.saddr, s.sport),
            remote: (s.daddr, s.dport),
            netns: s.netns,
            owner: s.owner,
            role: None,
            inventory: true,
            since: s.time,
            since_at_least: true,
            last: s.time,
            stays: Vec::new(),
            now: open.then_some(Current { state: s.state, entered: s.time }),
            ending: None,
            children: 0,
            stays_cut: 0,
            time_wait_cut: false,
        });
        self.index.insert(s.socket, row);
        let role = match s.state {
            TcpState::Listen => Some(Role::Listener),
            TcpState::SynSent => Some(Role::Client),
            TcpState::SynRecv | TcpState::NewSynRecv => Some(Role::Server),
            _ => None,
        };
        self.set_role(row, role);
    }

    pub fn add_transition(&mut self, t: &Transition) {
        use TcpState::{Close, Listen, SynRecv, SynSent};
        self.analysis = None;
        self.seen(t.time);
        self.transitions += 1;
        self.matrix[slot(t.oldstate)][slot(t.newstate)] += 1;

        let child_birth = t.oldstate == Listen && t.newstate == SynRecv;
        let (row, fresh) = match self.index.get(&t.socket) {
            Some(&row) => (row, false),
            None if self.conns.len() >= ROWS_MAX => return self.add_without_row(t),
            None => {
                let row = self.conns.len();
                let birth = t.oldstate == Close || child_birth;
                let since = match t.prev_state_ns {
                    Some(ns) if !birth => earlier(t.time, ns),
                    _ => t.time,
                };
                self.conns.push(Conn {
                    socket: t.socket,
                    family: t.family,
                    local: (t.saddr, t.sport),
                    remote: (t.daddr, t.dport),
                    netns: t.netns,
                    owner: None,
                    role: None,
                    inventory: false,
                    since,
                    since_at_least: !birth,
                    last: t.time,
                    stays: Vec::new(),
                    now: None,
                    ending: None,
                    children: 0,
                    stays_cut: 0,
                    time_wait_cut: false,
                });
                self.index.insert(t.socket, row);
                (row, true)
            }
        };
        if child_birth && fresh {
            match self.find_listener(t.netns, t.saddr, t.sport) {
                Some(listener) => self.conns[listener].children += 1,
                None => self.unmatched_children += 1,
            }
        }

        let c = &mut self.conns[row];
        let birth = t.oldstate == Close || (fresh && child_birth);
        let mut trim = None;
        if !birth {
            let gap_before = match c.now {
                Some(now) => now.state != t.oldstate,
                None => !fresh,
            };
            let stay = Stay {
                state: t.oldstate,
                then: t.newstate,
                ns: t.prev_state_ns,
                at_least: t.prev_state_at_least,
                gap_before,
            };
            self.overall.stay(&stay, EXACT_SAMPLES_MAX);
            if c.stays.len() < STAYS_KEPT {
                c.stays.push(stay);
            } else {
                c.stays_cut += 1;
                c.time_wait_cut |= stay.state == TcpState::TimeWait;
                self.cut.stays += 1;
                if let (Some(ns), Some(list)) = (stay.ns, list_of(stay.state)) {
                    let then = Some(stay.then);
                    self.cut.picks[list].push(Pick { row, ns, at_least: stay.at_least, then });
                    trim = Some(list);
                }
            }
        }
        if t.newstate == Close {
            c.now = None;
            c.ending =
                Some(Ending { reason: t.reason, error: t.error, retransmits: t.retransmits });
        } else {
            c.now = Some(Current { state: t.newstate, entered: t.time });
            c.ending = None;
        }
        c.last = c.last.max(t.time);
        c.family = t.family;
        c.local = merge(c.local, (t.saddr, t.sport));
        c.remote = merge(c.remote, (t.daddr, t.dport));
        if t.netns != 0 {
            c.netns = t.netns;
        }
        if t.owner.is_some() {
            c.owner = t.owner;
        }
        let role = if t.newstate == Listen || (t.oldstate == Listen && !child_birth) {
            Some(Role::Listener)
        } else if child_birth || t.oldstate == SynRecv || t.newstate == SynRecv {
            Some(Role::Server)
        } else if t.oldstate == SynSent || t.newstate == SynSent {
            Some(Role::Client)
        } else {
            None
        };
        self.set_role(row, role);
        // The candidates for a list are trimmed to its length when they reach twice that.
        if let Some(list) = trim {
            let top = self.options.top.max(1);
            if self.cut.picks[list].len() >= 2 * top {
                keep_longest(&mut self.cut.picks[list], top, &self.conns);
            }
        }
    }

    /// A transition of a socket that got no row: it counts in the totals, the matrix (done
    /// by the caller), time in state, and a new server connection among its listener's
    /// children.
    fn add_without_row(&mut self, t: &Transition) {
        let child_birth = t.oldstate == TcpState::Listen && t.newstate == TcpState::SynRecv;
        self.cut.transitions += 1;
        if t.oldstate == TcpState::Close || child_birth {
            self.cut.births += 1;
        } else {
            let stay = Stay {
                state: t.oldstate,
                then: t.newstate,
                ns: t.prev_state_ns,
                at_least: t.prev_state_at_least,
                gap_before: false,
            };
            self.overall.stay(&stay, EXACT_SAMPLES_MAX);
        }
        if child_birth {
            match self.find_listener(t.netns, t.saddr, t.sport) {
                Some(listener) => self.conns[listener].children += 1,
                None => self.unmatched_children += 1,
            }
        }
    }

    pub fn add_lost(&mut self, l: &Lost) {
        self.analysis = None;
        self.seen(l.time);
        self.lost[cause_slot(l.cause)] += l.count;
    }

    /// Ends the trace at `end`: connections not closed by then are open, their current
    /// stays ongoing. Computes the distributions and lists.
    /// Adds the Alerts section (text) and the `alerts` and `alert_subjects` members
    /// (JSON, documented in docs/json.md).
    pub fn set_alerts(&mut self, alerts: crate::alerts::section::AlertSection) {
        self.alerts = Some(alerts);
    }

    pub fn finish(&mut self, end: Timestamp) {
        self.end = Some(end);
        self.analysis = Some(self.analyze(end));
    }

    /// Gives a row its role, if it has none yet; a new listener is indexed by its port.
    fn set_role(&mut self, row: usize, role: Option<Role>) {
        let c = &mut self.conns[row];
        if c.role.is_some() || role.is_none() {
            return;
        }
        c.role = role;
        if role == Some(Role::Listener) {
            self.listeners.entry(c.local.1).or_default().push(row);
        }
    }

    /// The listener a socket at `addr:port` in `netns` belongs to; see the module
    /// documentation for the rule.
    fn find_listener(&self, netns: u32, addr: IpAddr, port: u16) -> Option<usize> {
        let rows = self.listeners.get(&port)?;
        rows.iter()
            .copied()
            .filter(|&row| {
                let l = &self.conns[row];
                (l.netns == netns || l.netns == 0 || netns == 0)
                    && (l.local.0 == addr || l.local.0.is_unspecified())
            })
            .max_by_key(|&row| {
                let l = &self.conns[row];
                let listening = l.now.is_some_and(|now| now.state == TcpState::Listen);
                (listening, l.local.0 == addr, row)
            })
    }

    fn seen(&mut self, time: Timestamp) {
        self.first = Some(self.first.map_or(time, |first| first.min(time)));
        self.last = Some(self.last.map_or(time, |last| last.max(time)));
    }

    /// The start of the time span: the first record, or the end when there was none.
    fn start(&self, end: Timestamp) -> Timestamp {
        self.first.unwrap_or(end)
    }

    /// The analysis made by `finish`, or, before it (or after records added since), one
    /// made now with the latest record as the end.
    fn analysis(&self) -> Cow<'_, Analysis> {
        match &self.analysis {
            Some(analysis) => Cow::Borrowed(analysis),
            None => {
                let end = self.end.or(self.last).unwrap_or(Timestamp { mono_ns: 0, unix_ns: 0 });
                Cow::Owned(self.analyze(end))
            }
        }
    }

    fn analyze(&self, end: Timestamp) -> Analysis {
        let mut order: Vec<usize> = (0..self.conns.len()).collect();
        order.sort_by_key(|&row| (self.conns[row].since.mono_ns, self.conns[row].socket));
        let roles: Vec<Role> = self
            .conns
            .iter()
            .map(|c| {
                c.role.unwrap_or_else(|| {
                    if self.find_listener(c.netns, c.local.0, c.local.1).is_some() {
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
                let peer = c.remote.0;
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
    fn ongoing(c: &Conn, end: Timestamp) -> Option<(TcpState, u64)> {
        c.now.map(|now| (now.state, end.mono_ns.saturating_sub(now.entered.mono_ns)))
    }

    /// A row's lifetime and whether it is a lower bound.
    fn lifetime(c: &Conn, end: Timestamp) -> (u64, bool) {
        let last = if c.now.is_some() { end } else { c.last };
        (last.mono_ns.saturating_sub(c.since.mono_ns), c.since_at_least || c.now.is_some())
    }

    fn lost_total(&self) -> u64 {
        self.lost.iter().sum()
    }
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

/// `time` moved back by `ns`.
fn earlier(time: Timestamp, ns: u64) -> Timestamp {
    let mono_ns = time.mono_ns.saturating_sub(ns);
    Timestamp { mono_ns, unix_ns: time.unix_ns.saturating_sub(i128::from(time.mono_ns - mono_ns)) }
}

/// An endpoint with what a later record knows filled in: an address or port that is
/// unspecified in `later` keeps its earlier value.
fn merge(earlier: (IpAddr, u16), later: (IpAddr, u16)) -> (IpAddr, u16) {
    (
        if later.0.is_unspecified() { earlier.0 } else { later.0 },
        if later.1 == 0 { earlier.1 } else { later.1 },
    )
}

fn service_port(c: &Conn, role: Role) -> u16 {
    match role {
        Role::Listener | Role::Server => c.local.1,
        Role::Client => c.remote.1,
    }
}

/// Keeps the `n` longest picks, longest first, ties by socket id: a linear selection,
/// then a sort of only what is kept.
fn keep_longest(picks: &mut Vec<Pick>, n: usize, conns: &[Conn]) {
    let longest_first =
        |a: &Pick, b: &Pick| b.ns.cmp(&a.ns).then(conns[a.row].socket.cmp(&conns[b.row].socket));
    if n > 0 && picks.len() > n {
        picks.select_nth_unstable_by(n - 1, longest_first);
    }
    picks.truncate(n);
    picks.sort_unstable_by(longest_first);
}

/// The C name of an errno TCP reports (the names `docs/json.md` lists), else `E<number>`.
fn errno_name(errno: i32) -> Cow<'static, str> {
    match crate::output::errno_name(errno) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(format!("E{errno}")),
    }
}

// ---------------------------------------------------------------------------------------
// Text

/// A duration for people: three significant digits, truncated, in ns, us, ms or s below a
/// minute (`850ns`, `3.21us`, `84.1us`, `841us`, `1.23ms`, `2.30s`, `12.3s`), then `2m03s`,
/// `1h02m`, `3d04h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Human(u64);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SEC: u64 = 1_000_000_000;
        const MINUTE: u64 = 60 * SEC;
        const HOUR: u64 = 60 * MINUTE;
        const DAY: u64 = 24 * HOUR;
        let ns = self.0;
        if ns >= DAY {
            return write!(f, "{}d{:02}h", ns / DAY, ns % DAY / HOUR);
        }
        if ns >= HOUR {
            return write!(f, "{}h{:02}m", ns / HOUR, ns % HOUR / MINUTE);
        }
        if ns >= MINUTE {
            return write!(f, "{}m{:02}s", ns / MINUTE, ns % MINUTE / SEC);
        }
        let Some(&(unit, name)) =
            [(SEC, "s"), (1_000_000, "ms"), (1_000, "us")].iter().find(|&&(unit, _)| ns >= unit)
        else {
            return write!(f, "{ns}ns");
        };
        let (whole, rest) = (ns / unit, ns % unit);
        match whole {
            100.. => write!(f, "{whole}{name}"),
            10..=99 => write!(f, "{whole}.{}{name}", rest * 10 / unit),
            _ => write!(f, "{whole}.{:02}{name}", rest * 100 / unit),
        }
    }
}

/// A duration cell: `?` when unknown, `>=` in front of a lower bound.
fn duration_text(ns: Option<u64>, at_least: bool) -> String {
    match ns {
        None => "?".to_string(),
        Some(ns) if at_least => format!(">={}", Human(ns)),
        Some(ns) => Human(ns).to_string(),
    }
}

fn sample_text(sample: Option<Sample>) -> String {
    sample.map_or_else(|| "-".to_string(), |s| duration_text(Some(s.ns), s.at_least))
}

/// A percentile, `~` before it when it comes from a histogram.
fn approximate_text(sample: Option<Sample>, approximate: bool) -> String {
    match sample {
        Some(_) if approximate => format!("~{}", sample_text(sample)),
        _ => sample_text(sample),
    }
}

/// A command name for a table: anything but printable ASCII as `?`, so that a process
/// name cannot break the alignment or send escape sequences.
fn comm_text(comm: &Comm) -> String {
    comm.as_bytes()
        .iter()
        .map(|&b| if b.is_ascii_graphic() || b == b' ' { char::from(b) } else { '?' })
        .collect()
}

/// `pid/comm`, or `-`.
fn owner_text(owner: Option<&Owner>) -> String {
    owner.map_or_else(|| "-".to_string(), |o| format!("{}/{}", o.pid, comm_text(&o.comm)))
}

/// `addr:port` (`[v6]:port`), or `*:*` for no address at all (a listener's remote end).
fn endpoint_text((addr, port): (IpAddr, u16)) -> String {
    if addr.is_unspecified() && port == 0 {
        "*:*".to_string()
    } else {
        SocketAddr::new(addr, port).to_string()
    }
}

/// How a row ended: `open`, or the reason, the error and the retransmissions.
fn ending_text(c: &Conn) -> String {
    let Some(ending) = c.ending.filter(|_| c.now.is_none()) else {
        return "open".to_string();
    };
    let mut text = ending.reason.map_or("closed", EndReason::describe).to_string();
    if let Some(errno) = ending.error {
        text.push_str(&format!(" ({})", errno_name(errno)));
    }
    if ending.retransmits > 0 {
        let s = if ending.retransmits == 1 { "" } else { "s" };
        text.push_str(&format!(", after {} retransmit{s}", ending.retransmits));
    }
    text
}

/// A row's stays: `SYN_SENT 84.1us > ESTABLISHED 2.30s > ...`, `...` where states were
/// missed, the ongoing stay last.
fn states_text(c: &Conn, end: Timestamp) -> String {
    let mut parts: Vec<String> = Vec::with_capacity(c.stays.len() + 1);
    for stay in &c.stays {
        if stay.gap_before {
            parts.push("...".to_string());
        }
        parts.push(format!("{} {}", stay.state, duration_text(stay.ns, stay.at_least)));
    }
    if c.stays_cut > 0 {
        parts.push(format!("[{} not kept]", plural(c.stays_cut, "more stay", "more stays")));
    }
    if let Some((state, ns)) = Report::ongoing(c, end) {
        parts.push(format!("{state} {}", duration_text(Some(ns), true)));
    }
    if parts.is_empty() {
        return "-".to_string();
    }
    parts.join(" > ")
}

/// An aligned table: columns separated by two spaces, the last one unpadded.
struct Table {
    heads: Vec<&'static str>,
    /// Right-aligned columns (numbers, durations).
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns given as `(head, right-aligned)`.
    fn new(columns: &[(&'static str, bool)]) -> Table {
        Table {
            heads: columns.iter().map(|&(h, _)| h).collect(),
            right: columns.iter().map(|&(_, r)| r).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.heads.len());
        self.rows.push(cells);
    }

    fn write(&self, w: &mut impl Write) -> io::Result<()> {
        let mut widths: Vec<usize> = self.heads.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.len());
            }
        }
        let heads: Vec<String> = self.heads.iter().map(|h| h.to_string()).collect();
        for cells in std::iter::once(&heads).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i] - cell.len();
                if self.right[i] {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    if i + 1 < cells.len() {
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                }
            }
            writeln!(w, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// The connection table's classes, most interesting first.
fn interest(c: &Conn, role: Role) -> u8 {
    if role == Role::Listener {
        0
    } else if c.now.is_none() && c.ending.is_some_and(|e| e.abnormal()) {
        1
    } else if c.now.is_some() {
        2
    } else {
        3
    }
}

const CLASS_NAMES: [&str; 4] = ["listeners", "ended abnormally", "still open", "closed normally"];

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl Report {
    /// The report for people; see the module documentation.
    pub fn write_text(&self, w: &mut impl Write) -> io::Result<()> {
        let a = self.analysis();
        let mut out = BufWriter::new(w);
        self.text_totals(&mut out, &a)?;
        self.text_connections(&mut out, &a)?;
        self.text_matrix(&mut out)?;
        self.text_time_in_state(&mut out, &a)?;
        let top = self.options.top;
        writeln!(out, "\nSlowest client handshakes (time in SYN_SENT, top {top})")?;
        self.text_picks(&mut out, &a.client_handshakes, TcpState::SynSent)?;
        writeln!(out, "\nSlowest server handshakes (time in SYN_RECV, top {top})")?;
        self.text_picks(&mut out, &a.server_handshakes, TcpState::SynRecv)?;
        writeln!(out, "\nLongest CLOSE_WAITs (the application has not closed yet; top {top})")?;
        self.text_picks(&mut out, &a.close_waits, TcpState::CloseWait)?;
        self.text_peers(&mut out, &a)?;
        if let Some(alerts) = &self.alerts {
            alerts.write_text(&mut out)?;
        }
        out.flush()
    }

    fn text_totals(&self, w: &mut impl Write, a: &Analysis) -> io::Result<()> {
        let start = self.start(a.end);
        let span = a.end.mono_ns.saturating_sub(start.mono_ns);
        let inventory = self.conns.iter().filter(|c| c.inventory).count() as u64;
        writeln!(w, "portrace report")?;
        writeln!(
            w,
            "  trace        {} to {} ({})",
            Rfc3339::new(start.unix_ns),
            Rfc3339::new(a.end.unix_ns),
            Human(span)
        )?;
        writeln!(w, "  transitions  {}", self.transitions)?;
        writeln!(
            w,
            "  connections  {}: {}, {}, {}; {} from the start-up inventory, {} at the end",
            self.conns.len(),
            plural(a.listeners, "listener", "listeners"),
            plural(a.clients, "client", "clients"),
            plural(a.servers, "server", "servers"),
            inventory,
            plural(a.open_at_end, "still open", "still open"),
        )?;
        if self.unmatched_children > 0 {
            writeln!(
                w,
                "               {} accepted by no listener of the trace",
                plural(self.unmatched_children, "server connection", "server connections")
            )?;
        }
        self.text_cut(w)?;
        let lost = self.lost_total();
        if lost == 0 {
            writeln!(w, "  lost         none")?;
            return Ok(());
        }
        let causes: Vec<String> = CAUSES
            .into_iter()
            .filter(|&c| self.lost[cause_slot(c)] > 0)
            .map(|c| format!("{} {}", c.name(), self.lost[cause_slot(c)]))
            .collect();
        writeln!(
            w,
            "  lost         {} ({})",
            plural(lost, "transition", "transitions"),
            causes.join(", ")
        )?;
        writeln!(w)?;
        writeln!(
            w,
            "!! WARNING: {} LOST: every figure below may be incomplete.",
            plural(lost, "TRANSITION WAS", "TRANSITIONS WERE")
        )?;
        writeln!(
            w,
            "!! Connections can be missing, and states and durations unknown (`?`) or wrong."
        )
    }

    /// What the report's bounds left out, said under the totals when anything was.
    fn text_cut(&self, w: &mut impl Write) -> io::Result<()> {
        let cut = &self.cut;
        if cut.transitions > 0 || cut.sockets > 0 {
            let mut parts = Vec::new();
            if cut.transitions > 0 {
                let transitions = plural(cut.transitions, "transition", "transitions");
                parts.push(format!("{transitions} ({} begun)", cut.births));
            }
            if cut.sockets > 0 {
                parts.push(plural(cut.sockets, "socket of the inventory", "sockets of the inventory"));
            }
            writeln!(
                w,
                "  NOT KEPT     the report keeps the first {ROWS_MAX} connections as rows; after them \
                 {} count only in the totals, the matrix and time in state (not in the rows, \
                 lists, groups or TIME_WAIT per peer)",
                parts.join(" and "),
            )?;
        }
        if cut.stays > 0 {
            writeln!(
                w,
                "  NOT KEPT     {} after the first {STAYS_KEPT} of their connection: counted in \
                 time in state, the lists and TIME_WAIT per peer, not shown in the rows or the \
                 groups by port and process",
                plural(cut.stays, "stay", "stays"),
            )?;
        }
        Ok(())
    }

    fn text_connections(&self, w: &mut impl Write, a: &Analysis) -> io::Result<()> {
        let shown: Vec<usize> = if a.order.len() <= TEXT_ROWS {
            a.order.clone()
        } else {
            let mut ranked = a.order.clone();
            ranked.sort_by_key(|&row| {
                let c = &self.conns[row];
                (interest(c, a.roles[row]), std::cmp::Reverse(Self::lifetime(c, a.end).0))
            });
            ranked.truncate(TEXT_ROWS);
            // Back to order of first sight: `order` ranks every row.
            let mut rank = vec![0usize; self.conns.len()];
            for (i, &row) in a.order.iter().enumerate() {
                rank[row] = i;
            }
            ranked.sort_by_key(|&row| rank[row]);
            ranked
        };
        writeln!(w, "\nConnections ({}, in order of first sight)", self.conns.len())?;
        let mut table = Table::new(&[
            ("SOCKET", true),
            ("ROLE", false),
            ("OWNER", false),
            ("LOCAL", false),
            ("REMOTE", false),
            ("START", true),
            ("LIFETIME", true),
            ("CHILDREN", true),
            ("END", false),
            ("STATES", false),
        ]);
        let start = self.start(a.end);
        for &row in &shown {
            let c = &self.conns[row];
            let role = a.roles[row];
            let (lifetime, at_least) = Self::lifetime(c, a.end);
            table.row(vec![
                c.socket.to_string(),
                role.name().to_string(),
                owner_text(c.owner.as_ref()),
                endpoint_text(c.local),
                endpoint_text(c.remote),
                format!("+{}", Human(c.since.mono_ns.saturating_sub(start.mono_ns))),
                duration_text(Some(lifetime), at_least),
                if role == Role::Listener { c.children.to_string() } else { "-".to_string() },
                ending_text(c),
                states_text(c, a.end),
            ]);
        }
        table.write(w)?;
        if shown.len() < self.conns.len() {
            let mut hidden = [0u64; 4];
            let mut is_shown = vec![false; self.conns.len()];
            for &row in &shown {
                is_shown[row] = true;
            }
            for (row, c) in self.conns.iter().enumerate() {
                if !is_shown[row] {
                    hidden[usize::from(interest(c, a.roles[row]))] += 1;
                }
            }
            let parts: Vec<String> = hidden
                .iter()
                .zip(CLASS_NAMES)
                .filter(|&(&n, _)| n > 0)
                .map(|(n, name)| format!("{n} {name}"))
                .collect();
            writeln!(
                w,
                "... {} not shown ({}); the JSON report has every row",
                plural(
                    (self.conns.len() - shown.len()) as u64,
                    "more connection",
                    "more connections"
                ),
                parts.join(", ")
            )?;
        }
        writeln!(
            w,
            "START: time since the trace began. Durations: \">=\" at least (older than the trace, \
             or still going at the end), \"?\" unknown, \"...\" states missed."
        )
    }

    fn text_matrix(&self, w: &mut impl Write) -> io::Result<()> {
        writeln!(w, "\nTransitions (rows: from, columns: to)")?;
        let from: Vec<TcpState> = LIFE_ORDER
            .into_iter()
            .filter(|&s| self.matrix[slot(s)].iter().any(|&n| n > 0))
            .collect();
        let to: Vec<TcpState> = LIFE_ORDER
            .into_iter()
            .filter(|&s| self.matrix.iter().any(|row| row[slot(s)] > 0))
            .collect();
        if from.is_empty() {
            return writeln!(w, "(none)");
        }
        let mut columns = vec![("FROM \\ TO", false)];
        columns.extend(to.iter().map(|s| (s.name(), true)));
        let mut table = Table::new(&columns);
        for &old in &from {
            let mut cells = vec![old.name().to_string()];
            cells.extend(to.iter().map(|&new| match self.matrix[slot(old)][slot(new)] {
                0 => ".".to_string(),
                n => n.to_string(),
            }));
            table.row(cells);
        }
        table.write(w)
    }

    fn text_time_in_state(&self, w: &mut impl Write, a: &Analysis) -> io::Result<()> {
        writeln!(
            w,
            "\nTime in state (complete stays; nearest-rank percentiles of exact samples; {} unknown)",
            a.unknown_durations
        )?;
        stats_table(None, [(String::new(), &a.time_in_state[..])]).write(w)?;
        writeln!(
            w,
            "COUNT: stays with a known time, LOWER of them lower bounds; UNKNOWN and AT_END \
             (still in the state at the end) are not in COUNT."
        )?;
        if a.time_in_state.iter().any(|s| s.approximate) {
            writeln!(
                w,
                "~: a state with more than {EXACT_SAMPLES_MAX} samples has percentiles from a \
                 histogram, within 1/32 of the exact value (MAX stays exact)."
            )?;
        }
        let groups_cut = self.cut.stays > 0 || self.cut.transitions > 0;
        if let Some(groups) = &a.by_port {
            writeln!(w, "\nTime in state by service port (local port of listeners and servers, remote port of clients)")?;
            if groups_cut {
                writeln!(w, "(from the stays the rows keep: see NOT KEPT above)")?;
            }
            let groups = groups.iter().map(|(port, stats)| (port.to_string(), &stats[..]));
            stats_table(Some("PORT"), groups).write(w)?;
        }
        if let Some(groups) = &a.by_process {
            writeln!(w, "\nTime in state by process (owner's command name)")?;
            if groups_cut {
                writeln!(w, "(from the stays the rows keep: see NOT KEPT above)")?;
            }
            let groups = groups.iter().map(|(comm, stats)| {
                (comm.as_ref().map_or_else(|| "-".to_string(), comm_text), &stats[..])
            });
            stats_table(Some("PROCESS"), groups).write(w)?;
        }
        Ok(())
    }

    fn text_picks(&self, w: &mut impl Write, picks: &[Pick], state: TcpState) -> io::Result<()> {
        if picks.is_empty() {
            return writeln!(w, "(none)");
        }
        let mut table = Table::new(&[
            ("SOCKET", true),
            ("OWNER", false),
            ("LOCAL", false),
            ("REMOTE", false),
            ("TIME", true),
            ("THEN", false),
        ]);
        for pick in picks {
            let c = &self.conns[pick.row];
            let then = match pick.then {
                None => format!("still in {state} at the end (ongoing)"),
                Some(TcpState::Close) => format!("CLOSE: {}", ending_text(c)),
                Some(next) => next.name().to_string(),
            };
            table.row(vec![
                c.socket.to_string(),
                owner_text(c.owner.as_ref()),
                endpoint_text(c.local),
                endpoint_text(c.remote),
                duration_text(Some(pick.ns), pick.at_least),
                then,
            ]);
        }
        table.write(w)
    }

    fn text_peers(&self, w: &mut impl Write, a: &Analysis) -> io::Result<()> {
        writeln!(w, "\nTIME_WAIT by peer (connections seen in TIME_WAIT, by remote address)")?;
        if a.peers.is_empty() {
            return writeln!(w, "(none)");
        }
        let mut table = Table::new(&[("PEER", false), ("TIME_WAIT", true), ("AT_END", true)]);
        for p in a.peers.iter().take(self.options.top) {
            table.row(vec![p.addr.to_string(), p.count.to_string(), p.at_end.to_string()]);
        }
        table.write(w)?;
        if a.peers.len() > self.options.top {
            let more = (a.peers.len() - self.options.top) as u64;
            writeln!(
                w,
                "... {} not shown; the JSON report has every peer",
                plural(more, "more peer", "more peers")
            )?;
        }
        Ok(())
    }
}

/// A time-in-state table; with `group`, a first column naming each group of rows (on its
/// first row only).
fn stats_table<'a>(
    group: Option<&'static str>,
    groups: impl IntoIterator<Item = (String, &'a [Stats])>,
) -> Table {
    let mut columns = Vec::new();
    if let Some(head) = group {
        columns.push((head, false));
    }
    columns.extend([
        ("STATE", false),
        ("COUNT", true),
        ("P50", true),
        ("P90", true),
        ("P99", true),
        ("MAX", true),
        ("LOWER", true),
        ("UNKNOWN", true),
        ("AT_END", true),
    ]);
    let mut table = Table::new(&columns);
    for (name, stats) in groups {
        for (i, s) in stats.iter().enumerate() {
            let mut cells = Vec::with_capacity(columns.len());
            if group.is_some() {
                cells.push(if i == 0 { name.clone() } else { String::new() });
            }
            cells.extend([
                s.state.name().to_string(),
                s.count.to_string(),
                approximate_text(s.p50, s.approximate),
                approximate_text(s.p90, s.approximate),
                approximate_text(s.p99, s.approximate),
                sample_text(s.max),
                s.lower_bounds.to_string(),
                s.unknown.to_string(),
                s.at_end.to_string(),
            ]);
            table.row(cells);
        }
    }
    table
}

// ---------------------------------------------------------------------------------------
// JSON

/// A streaming JSON writer that places the commas: `key` then one value, or values in an
/// array.
struct Json<W: Write> {
    w: W,
    /// A value was written at this level: the next one needs a comma.
    comma: bool,
}

impl<W: Write> Json<W> {
    fn sep(&mut self) -> io::Result<()> {
        if self.comma {
            self.w.write_all(b",")?;
        }
        self.comma = true;
        Ok(())
    }

    fn open(&mut self, bracket: u8) -> io::Result<()> {
        self.sep()?;
        self.w.write_all(&[bracket])?;
        self.comma = false;
        Ok(())
    }

    fn close(&mut self, bracket: u8) -> io::Result<()> {
        self.w.write_all(&[bracket])?;
        self.comma = true;
        Ok(())
    }

    fn key(&mut self, key: &str) -> io::Result<()> {
        self.sep()?;
        self.w.write_all(b"\"")?;
        self.w.write_all(key.as_bytes())?;
        self.w.write_all(b"\":")?;
        self.comma = false;
        Ok(())
    }

    fn u64(&mut self, key: &str, value: u64) -> io::Result<()> {
        self.key(key)?;
        self.sep()?;
        self.w.write_all(itoa::Buffer::new().format(value).as_bytes())
    }

    fn bool(&mut self, key: &str, value: bool) -> io::Result<()> {
        self.key(key)?;
        self.sep()?;
        self.w.write_all(if value { b"true" } else { b"false" })
    }

    fn null(&mut self, key: &str) -> io::Result<()> {
        self.key(key)?;
        self.sep()?;
        self.w.write_all(b"null")
    }

    fn opt_u64(&mut self, key: &str, value: Option<u64>) -> io::Result<()> {
        match value {
            Some(v) => self.u64(key, v),
            None => self.null(key),
        }
    }

    fn str(&mut self, key: &str, value: &str) -> io::Result<()> {
        if value.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f) {
            return self.bytes(key, value.as_bytes());
        }
        self.key(key)?;
        self.sep()?;
        self.w.write_all(b"\"")?;
        self.w.write_all(value.as_bytes())?;
        self.w.write_all(b"\"")
    }

    /// An address as a string (it needs no escaping).
    fn addr(&mut self, key: &str, addr: IpAddr) -> io::Result<()> {
        self.key(key)?;
        self.sep()?;
        write!(self.w, "\"{addr}\"")
    }

    fn opt_str(&mut self, key: &str, value: Option<&str>) -> io::Result<()> {
        match value {
            Some(v) => self.str(key, v),
            None => self.null(key),
        }
    }

    /// A string value from bytes: `"` and `\` escaped, control characters as `\u00XX`,
    /// invalid UTF-8 replaced by U+FFFD.
    fn bytes(&mut self, key: &str, value: &[u8]) -> io::Result<()> {
        self.key(key)?;
        self.sep()?;
        let mut text = String::with_capacity(value.len() + 2);
        text.push('"');
        for c in String::from_utf8_lossy(value).chars() {
            match c {
                '"' => text.push_str("\\\""),
                '\\' => text.push_str("\\\\"),
                c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                    text.push_str(&format!("\\u{:04x}", u32::from(c)));
                }
                c => text.push(c),
            }
        }
        text.push('"');
        self.w.write_all(text.as_bytes())
    }

    fn time(&mut self, key: &str, time: Timestamp) -> io::Result<()> {
        self.key(key)?;
        self.open(b'{')?;
        self.str("time", Rfc3339::new(time.unix_ns).as_str())?;
        self.u64("ts_ns", time.mono_ns)?;
        self.close(b'}')
    }

    fn owner(&mut self, owner: Option<&Owner>) -> io::Result<()> {
        match owner {
            Some(o) => {
                self.u64("owner_pid", u64::from(o.pid))?;
                self.bytes("owner_comm", o.comm.as_bytes())
            }
            None => {
                self.null("owner_pid")?;
                self.null("owner_comm")
            }
        }
    }

    fn endpoints(&mut self, c: &Conn) -> io::Result<()> {
        self.addr("saddr", c.local.0)?;
        self.u64("sport", u64::from(c.local.1))?;
        self.addr("daddr", c.remote.0)?;
        self.u64("dport", u64::from(c.remote.1))
    }

    fn sample(&mut self, name: &str, sample: Option<Sample>) -> io::Result<()> {
        match sample {
            Some(s) => {
                self.u64(&format!("{name}_ns"), s.ns)?;
                self.bool(&format!("{name}_at_least"), s.at_least)
            }
            None => {
                self.null(&format!("{name}_ns"))?;
                self.null(&format!("{name}_at_least"))
            }
        }
    }

    fn stats(&mut self, key: &str, stats: &[Stats]) -> io::Result<()> {
        self.key(key)?;
        self.open(b'[')?;
        for s in stats {
            self.open(b'{')?;
            self.str("state", s.state.name())?;
            self.u64("count", s.count)?;
            self.u64("lower_bounds", s.lower_bounds)?;
            self.u64("unknown", s.unknown)?;
            self.u64("at_end", s.at_end)?;
            self.sample("p50", s.p50)?;
            self.sample("p90", s.p90)?;
            self.sample("p99", s.p99)?;
            self.sample("max", s.max)?;
            if s.approximate {
                self.bool("approximate", true)?;
            }
            self.close(b'}')?;
        }
        self.close(b']')
    }
}

impl Report {
    /// The report as one JSON document; see the module documentation.
    pub fn write_json(&self, w: &mut impl Write) -> io::Result<()> {
        let a = self.analysis();
        let mut j = Json { w: BufWriter::new(w), comma: false };
        let start = self.start(a.end);
        j.open(b'{')?;
        j.str("type", "report")?;
        j.u64("schema", u64::from(JSON_SCHEMA))?;
        j.str("portrace", env!("CARGO_PKG_VERSION"))?;
        j.time("start", start)?;
        j.time("end", a.end)?;
        j.u64("span_ns", a.end.mono_ns.saturating_sub(start.mono_ns))?;
        j.bool("complete", self.lost_total() == 0)?;

        j.key("options")?;
        j.open(b'{')?;
        j.bool("by_port", self.options.by_port)?;
        j.bool("by_process", self.options.by_process)?;
        j.u64("top", self.options.top as u64)?;
        j.close(b'}')?;

        j.key("totals")?;
        j.open(b'{')?;
        j.u64("transitions", self.transitions)?;
        j.u64("connections", self.conns.len() as u64)?;
        j.u64("listeners", a.listeners)?;
        j.u64("clients", a.clients)?;
        j.u64("servers", a.servers)?;
        j.u64("from_inventory", self.conns.iter().filter(|c| c.inventory).count() as u64)?;
        j.u64("open_at_end", a.open_at_end)?;
        j.u64("unknown_durations", a.unknown_durations)?;
        j.u64("children_without_listener", self.unmatched_children)?;
        j.u64("lost", self.lost_total())?;
        j.key("lost_by_cause")?;
        j.open(b'{')?;
        for cause in CAUSES {
            j.u64(cause.name(), self.lost[cause_slot(cause)])?;
        }
        j.close(b'}')?;
        j.close(b'}')?;
        let cut = &self.cut;
        if cut.transitions > 0 || cut.sockets > 0 || cut.stays > 0 {
            j.key("not_kept")?;
            j.open(b'{')?;
            j.u64("rows_max", ROWS_MAX as u64)?;
            j.u64("stays_kept", STAYS_KEPT as u64)?;
            j.u64("transitions", cut.transitions)?;
            j.u64("begun", cut.births)?;
            j.u64("sockets", cut.sockets)?;
            j.u64("stays", cut.stays)?;
            j.close(b'}')?;
        }

        j.key("connections")?;
        j.open(b'[')?;
        for &row in &a.order {
            self.json_connection(&mut j, row, &a)?;
        }
        j.close(b']')?;

        j.key("transitions")?;
        j.open(b'[')?;
        for old in LIFE_ORDER {
            for new in LIFE_ORDER {
                let n = self.matrix[slot(old)][slot(new)];
                if n > 0 {
                    j.open(b'{')?;
                    j.str("from", old.name())?;
                    j.str("to", new.name())?;
                    j.u64("count", n)?;
                    j.close(b'}')?;
                }
            }
        }
        j.close(b']')?;

        j.stats("time_in_state", &a.time_in_state)?;
        match &a.by_port {
            Some(groups) => {
                j.key("by_port")?;
                j.open(b'[')?;
                for (port, stats) in groups {
                    j.open(b'{')?;
                    j.u64("port", u64::from(*port))?;
                    j.stats("time_in_state", stats)?;
                    j.close(b'}')?;
                }
                j.close(b']')?;
            }
            None => j.null("by_port")?,
        }
        match &a.by_process {
            Some(groups) => {
                j.key("by_process")?;
                j.open(b'[')?;
                for (comm, stats) in groups {
                    j.open(b'{')?;
                    match comm {
                        Some(comm) => j.bytes("comm", comm.as_bytes())?,
                        None => j.null("comm")?,
                    }
                    j.stats("time_in_state", stats)?;
                    j.close(b'}')?;
                }
                j.close(b']')?;
            }
            None => j.null("by_process")?,
        }
        self.json_picks(&mut j, "slowest_client_handshakes", &a.client_handshakes)?;
        self.json_picks(&mut j, "slowest_server_handshakes", &a.server_handshakes)?;
        self.json_picks(&mut j, "longest_close_waits", &a.close_waits)?;

        j.key("time_wait_by_peer")?;
        j.open(b'[')?;
        for p in &a.peers {
            j.open(b'{')?;
            j.addr("peer", p.addr)?;
            j.u64("count", p.count)?;
            j.u64("at_end", p.at_end)?;
            j.close(b'}')?;
        }
        j.close(b']')?;
        if let Some(alerts) = &self.alerts {
            j.key("alerts")?;
            j.sep()?;
            j.w.write_all(&alerts.json_alerts())?;
            j.key("alert_subjects")?;
            j.sep()?;
            j.w.write_all(&alerts.json_subjects())?;
        }
        j.close(b'}')?;
        j.w.write_all(b"\n")?;
        j.w.flush()
    }

    fn json_connection<W: Write>(
        &self,
        j: &mut Json<W>,
        row: usize,
        a: &Analysis,
    ) -> io::Result<()> {
        let c = &self.conns[row];
        let role = a.roles[row];
        let (lifetime, lifetime_at_least) = Self::lifetime(c, a.end);
        j.open(b'{')?;
        j.u64("socket", c.socket)?;
        j.str("role", role.name())?;
        j.str("family", c.family.name())?;
        j.endpoints(c)?;
        j.u64("netns", u64::from(c.netns))?;
        j.u64("service_port", u64::from(service_port(c, role)))?;
        j.owner(c.owner.as_ref())?;
        j.str("owner_source", c.owner.map_or("unknown", |o| o.source.name()))?;
        j.time("first", c.since)?;
        j.bool("first_at_least", c.since_at_least)?;
        j.time("last", if c.now.is_some() { a.end } else { c.last })?;
        j.u64("lifetime_ns", lifetime)?;
        j.bool("lifetime_at_least", lifetime_at_least)?;
        j.bool("open", c.now.is_some())?;
        let ending = c.ending.filter(|_| c.now.is_none());
        j.opt_str("reason", ending.and_then(|e| e.reason).map(EndReason::name))?;
        match ending.and_then(|e| e.error) {
            Some(errno) => j.str("error", &errno_name(errno))?,
            None => j.null("error")?,
        }
        j.u64("retransmits", ending.map_or(0, |e| u64::from(e.retransmits)))?;
        j.opt_u64("children", (role == Role::Listener).then_some(c.children))?;
        if c.stays_cut > 0 {
            j.u64("stays_not_kept", c.stays_cut)?;
        }
        j.key("states")?;
        j.open(b'[')?;
        for stay in &c.stays {
            j.open(b'{')?;
            j.str("state", stay.state.name())?;
            j.opt_u64("ns", stay.ns)?;
            j.bool("at_least", stay.at_least)?;
            j.bool("ongoing", false)?;
            j.bool("gap_before", stay.gap_before)?;
            j.str("then", stay.then.name())?;
            j.close(b'}')?;
        }
        if let Some((state, ns)) = Self::ongoing(c, a.end) {
            j.open(b'{')?;
            j.str("state", state.name())?;
            j.u64("ns", ns)?;
            j.bool("at_least", true)?;
            j.bool("ongoing", true)?;
            j.bool("gap_before", false)?;
            j.null("then")?;
            j.close(b'}')?;
        }
        j.close(b']')?;
        j.close(b'}')
    }

    fn json_picks<W: Write>(&self, j: &mut Json<W>, key: &str, picks: &[Pick]) -> io::Result<()> {
        j.key(key)?;
        j.open(b'[')?;
        for pick in picks {
            let c = &self.conns[pick.row];
            j.open(b'{')?;
            j.u64("socket", c.socket)?;
            j.owner(c.owner.as_ref())?;
            j.endpoints(c)?;
            j.u64("ns", pick.ns)?;
            j.bool("at_least", pick.at_least)?;
            j.bool("ongoing", pick.then.is_none())?;
            j.opt_str("then", pick.then.map(TcpState::name))?;
            let reason = match pick.then {
                Some(TcpState::Close) => c.ending.and_then(|e| e.reason).map(EndReason::name),
                _ => None,
            };
            j.opt_str("reason", reason)?;
            j.close(b'}')?;
        }
        j.close(b']')
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::record::OwnerSource;
    use TcpState::*;

    const US: u64 = 1_000;
    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;
    /// 2026-11-29T02:41:07Z, when the monotonic clock read 1000 s: the trace's start.
    const UNIX0: i128 = 1_795_920_067_000_000_000;
    const MONO0: u64 = 1_000 * S;
    const NETNS: u32 = 4_026_531_840;
    /// When the traces of these tests end.
    const END: u64 = 65 * S;

    fn at(after_ns: u64) -> Timestamp {
        Timestamp { mono_ns: MONO0 + after_ns, unix_ns: UNIX0 + i128::from(after_ns) }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    const ANY: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

    fn owner(pid: u32, comm: &str, source: OwnerSource) -> Option<Owner> {
        Some(Owner { pid, comm: Comm::new(comm), source, cgroup: 0 })
    }

    fn nginx(source: OwnerSource) -> Option<Owner> {
        owner(300, "nginx", source)
    }

    fn curl() -> Option<Owner> {
        owner(4242, "curl", OwnerSource::Syscall)
    }

    fn inventory(
        socket: u64,
        local: (IpAddr, u16),
        remote: (IpAddr, u16),
        state: TcpState,
        owner: Option<Owner>,
    ) -> SocketRecord {
        SocketRecord {
            time: at(0),
            socket,
            family: Family::Ipv4,
            saddr: local.0,
            sport: local.1,
            daddr: remote.0,
            dport: remote.1,
            state,
            owner,
            netns: NETNS,
            inode: 1000 + socket,
            uid: 0,
            cookie: 5000 + socket,
        }
    }

    /// One connection's transitions: its endpoints, owner, and how it ends (set on its
    /// transition into CLOSE).
    #[derive(Clone, Copy)]
    struct Script {
        socket: u64,
        local: (IpAddr, u16),
        remote: (IpAddr, u16),
        owner: Option<Owner>,
        reason: Option<EndReason>,
        error: Option<i32>,
        retransmits: u8,
        netns: u32,
    }

    impl Script {
        fn new(
            socket: u64,
            local: (IpAddr, u16),
            remote: (IpAddr, u16),
            owner: Option<Owner>,
        ) -> Script {
            Script {
                socket,
                local,
                remote,
                owner,
                reason: None,
                error: None,
                retransmits: 0,
                netns: NETNS,
            }
        }

        fn ends(self, reason: EndReason, error: Option<i32>) -> Script {
            Script { reason: Some(reason), error, ..self }
        }

        fn transition(
            &self,
            after_ns: u64,
            old: TcpState,
            new: TcpState,
            prev: Option<u64>,
        ) -> Transition {
            let closing = new == Close;
            Transition {
                time: at(after_ns),
                pid: 0,
                comm: Comm::new("swapper/1"),
                socket: self.socket,
                family: Family::Ipv4,
                saddr: self.local.0,
                sport: self.local.1,
                daddr: self.remote.0,
                dport: self.remote.1,
                oldstate: old,
                newstate: new,
                prev_state_ns: prev,
                prev_state_at_least: false,
                owner: self.owner,
                reason: if closing { self.reason } else { None },
                error: if closing { self.error } else { None },
                retransmits: if closing { self.retransmits } else { 0 },
                netns: self.netns,
            }
        }

        /// Plays `first` at `t0` with no time in its old state, then each `(ns, next)`:
        /// `ns` in the current state, then into `next`. Returns when the last one happened.
        fn play(
            &self,
            r: &mut Report,
            t0: u64,
            first: (TcpState, TcpState),
            steps: &[(u64, TcpState)],
        ) -> u64 {
            r.add_transition(&self.transition(t0, first.0, first.1, None));
            let (mut now, mut state) = (t0, first.1);
            for &(ns, next) in steps {
                now += ns;
                r.add_transition(&self.transition(now, state, next, Some(ns)));
                state = next;
            }
            now
        }
    }

    /// The trace most tests look at, ending at [`END`] (65 s):
    ///
    /// - 1: nginx's listener on 0.0.0.0:8080, from the inventory, open to the end;
    /// - 2: a server connection of nginx from the inventory, closed by the peer at 2.5 s;
    /// - 3: a TIME_WAIT from the inventory, with no owner, expiring at 20 s;
    /// - 10: curl, client-first close through TIME_WAIT;
    /// - 20: an nginx child, server-first close, in TIME_WAIT at the end;
    /// - 11: curl, refused; 12: curl, connect timeout;
    /// - 13: python, in CLOSE_WAIT at the end;
    /// - 21: an nginx child reset by its peer;
    /// - 3 transitions lost at 30 s, then 15: first seen in ESTABLISHED (its entry lost),
    ///   then aborted;
    /// - 14: curl, in TIME_WAIT at the end.
    fn scenario(options: ReportOptions) -> Report {
        use EndReason::*;
        use OwnerSource::{Inventory, Listener};
        let mut r = Report::new(options);
        let server = (ip(1), 8080);
        r.add_socket(&inventory(1, (ANY, 8080), (ANY, 0), Listen, nginx(Inventory)));
        r.add_socket(&inventory(2, server, (ip(9), 40000), Established, nginx(Inventory)));
        r.add_socket(&inventory(3, (ip(1), 50100), (ip(2), 443), TimeWait, None));

        let s2 = Script::new(2, server, (ip(9), 40000), nginx(Inventory)).ends(PassiveClose, None);
        r.add_transition(&Transition {
            prev_state_at_least: true,
            ..s2.transition(2 * S, Established, CloseWait, Some(2 * S))
        });
        r.add_transition(&s2.transition(2500 * MS, CloseWait, LastAck, Some(500 * MS)));
        r.add_transition(&s2.transition(2500 * MS + 100 * US, LastAck, Close, Some(100 * US)));

        let s10 = Script::new(10, (ip(1), 50000), (ip(2), 443), curl()).ends(ActiveClose, None);
        s10.play(
            &mut r,
            100 * MS,
            (Close, SynSent),
            &[
                (84_123, Established),
                (2300 * MS, FinWait1),
                (40 * US, FinWait2),
                (1200 * US, TimeWait),
                (60 * S, Close),
            ],
        );

        let s20 = Script::new(20, server, (ip(3), 41000), nginx(Listener));
        s20.play(
            &mut r,
            S,
            (Listen, SynRecv),
            &[
                (30 * US, Established),
                (1500 * MS, FinWait1),
                (50 * US, FinWait2),
                (2 * MS, TimeWait),
            ],
        );

        let s11 = Script::new(11, (ip(1), 50001), (ip(2), 81), curl())
            .ends(Refused, Some(libc::ECONNREFUSED));
        s11.play(&mut r, 3 * S, (Close, SynSent), &[(150 * US, Close)]);

        let s12 = Script {
            retransmits: 2,
            ..Script::new(12, (ip(1), 50002), (ip(5), 443), curl())
                .ends(ConnectTimeout, Some(libc::ETIMEDOUT))
        };
        s12.play(&mut r, 4 * S, (Close, SynSent), &[(7 * S, Close)]);

        let s13 = Script::new(
            13,
            (ip(1), 50003),
            (ip(2), 443),
            owner(77, "python", OwnerSource::Syscall),
        );
        s13.play(&mut r, 5 * S, (Close, SynSent), &[(200 * US, Established), (10 * S, CloseWait)]);

        let s21 = Script::new(21, server, (ip(4), 42000), nginx(Listener))
            .ends(ResetByPeer, Some(libc::ECONNRESET));
        s21.play(&mut r, 6 * S, (Listen, SynRecv), &[(250 * US, Established), (S, Close)]);

        let s3 = Script::new(3, (ip(1), 50100), (ip(2), 443), None).ends(ActiveClose, None);
        r.add_transition(&Transition {
            prev_state_at_least: true,
            ..s3.transition(20 * S, TimeWait, Close, Some(20 * S))
        });

        r.add_lost(&Lost { time: at(30 * S), count: 3, cause: LossCause::RingFull });

        let s15 = Script::new(15, (ip(1), 50005), (ip(6), 80), curl()).ends(ResetSent, None);
        r.add_transition(&s15.transition(31 * S, Established, FinWait1, None));
        r.add_transition(&s15.transition(31 * S + 60 * US, FinWait1, Close, Some(60 * US)));

        let s14 = Script::new(14, (ip(1), 50004), (ip(2), 443), curl());
        s14.play(
            &mut r,
            40 * S,
            (Close, SynSent),
            &[(MS, Established), (3 * S, FinWait1), (100 * US, FinWait2), (900 * US, TimeWait)],
        );

        r.finish(at(END));
        r
    }

    fn analysis(r: &Report) -> &Analysis {
        r.analysis.as_ref().expect("finished")
    }

    /// A row as the text table shows it: role, owner, lifetime, end, states.
    fn row(r: &Report, socket: u64) -> [String; 5] {
        let a = analysis(r);
        let index = r.index[&socket];
        let c = &r.conns[index];
        let (lifetime, at_least) = Report::lifetime(c, a.end);
        [
            a.roles[index].name().to_string(),
            owner_text(c.owner.as_ref()),
            duration_text(Some(lifetime), at_least),
            ending_text(c),
            states_text(c, a.end),
        ]
    }

    fn stats(list: &[Stats], state: TcpState) -> Stats {
        *list.iter().find(|s| s.state == state).unwrap_or_else(|| panic!("no {state}"))
    }

    fn exact(ns: u64) -> Option<Sample> {
        Some(Sample { ns, at_least: false })
    }

    fn lower(ns: u64) -> Option<Sample> {
        Some(Sample { ns, at_least: true })
    }

    fn text(r: &Report) -> String {
        let mut out = Vec::new();
        r.write_text(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn json(r: &Report) -> serde_json::Value {
        let mut out = Vec::new();
        r.write_json(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("}\n") && text.matches('\n').count() == 1, "one line: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    #[test]
    fn each_connection_row_shows_its_states_and_durations() {
        let r = scenario(ReportOptions::default());
        let expect = |socket, want: [&str; 5]| {
            assert_eq!(row(&r, socket), want.map(String::from), "socket {socket}")
        };
        expect(1, ["listener", "300/nginx", ">=1m05s", "open", "LISTEN >=1m05s"]);
        expect(
            2,
            [
                "server",
                "300/nginx",
                ">=2.50s",
                "closed by the peer",
                "ESTABLISHED >=2.00s > CLOSE_WAIT 500ms > LAST_ACK 100us",
            ],
        );
        expect(3, ["client", "-", ">=20.0s", "closed by this side", "TIME_WAIT >=20.0s"]);
        // 84.123us + 2.3s + 40us + 1.2ms + 60s = 62.301324123s.
        expect(10, [
            "client",
            "4242/curl",
            "1m02s",
            "closed by this side",
            "SYN_SENT 84.1us > ESTABLISHED 2.30s > FIN_WAIT1 40.0us > FIN_WAIT2 1.20ms > TIME_WAIT 1m00s",
        ]);
        // In TIME_WAIT from 2.50208s to the end at 65s: 62.49792s so far.
        expect(20, [
            "server",
            "300/nginx",
            ">=1m04s",
            "open",
            "SYN_RECV 30.0us > ESTABLISHED 1.50s > FIN_WAIT1 50.0us > FIN_WAIT2 2.00ms > TIME_WAIT >=1m02s",
        ]);
        expect(
            11,
            ["client", "4242/curl", "150us", "connection refused (ECONNREFUSED)", "SYN_SENT 150us"],
        );
        expect(
            12,
            [
                "client",
                "4242/curl",
                "7.00s",
                "connect timed out (ETIMEDOUT), after 2 retransmits",
                "SYN_SENT 7.00s",
            ],
        );
        expect(
            13,
            [
                "client",
                "77/python",
                ">=1m00s",
                "open",
                "SYN_SENT 200us > ESTABLISHED 10.0s > CLOSE_WAIT >=49.9s",
            ],
        );
        expect(
            21,
            [
                "server",
                "300/nginx",
                "1.00s",
                "reset by peer (ECONNRESET)",
                "SYN_RECV 250us > ESTABLISHED 1.00s",
            ],
        );
        expect(
            15,
            [
                "client",
                "4242/curl",
                ">=60.0us",
                "aborted: reset sent",
                "ESTABLISHED ? > FIN_WAIT1 60.0us",
            ],
        );
        expect(14, [
            "client",
            "4242/curl",
            ">=25.0s",
            "open",
            "SYN_SENT 1.00ms > ESTABLISHED 3.00s > FIN_WAIT1 100us > FIN_WAIT2 900us > TIME_WAIT >=21.9s",
        ]);

        // Exact figures behind the rounded text.
        let c10 = &r.conns[r.index[&10]];
        assert_eq!(Report::lifetime(c10, at(END)), (62_301_324_123, false));
        let c20 = &r.conns[r.index[&20]];
        assert_eq!(Report::ongoing(c20, at(END)), Some((TimeWait, 62_497_920_000)));
        // The listener's children: 20 and 21, matched on the wildcard address.
        assert_eq!(r.conns[r.index[&1]].children, 2);
        assert_eq!(r.unmatched_children, 0);
        // Rows in order of first sight.
        let order: Vec<u64> = analysis(&r).order.iter().map(|&i| r.conns[i].socket).collect();
        assert_eq!(order, [1, 2, 3, 10, 20, 11, 12, 13, 21, 15, 14]);
    }

    #[test]
    fn transition_matrix_counts_every_kind() {
        let r = scenario(ReportOptions::default());
        let mut seen = Vec::new();
        for old in LIFE_ORDER {
            for new in LIFE_ORDER {
                let n = r.matrix[slot(old)][slot(new)];
                if n > 0 {
                    seen.push((old, new, n));
                }
            }
        }
        assert_eq!(
            seen,
            [
                (Close, SynSent, 5),
                (Listen, SynRecv, 2),
                (SynSent, Close, 2),
                (SynSent, Established, 3),
                (SynRecv, Established, 2),
                (Established, Close, 1),
                (Established, FinWait1, 4),
                (Established, CloseWait, 2),
                (FinWait1, Close, 1),
                (FinWait1, FinWait2, 3),
                (FinWait2, TimeWait, 3),
                (TimeWait, Close, 2),
                (CloseWait, LastAck, 1),
                (LastAck, Close, 1),
            ]
        );
        assert_eq!(r.transitions, 32);
        assert_eq!(seen.iter().map(|&(_, _, n)| n).sum::<u64>(), 32);

        // The text table: rows are from-states, columns to-states, both in life order.
        let text = text(&r);
        let matrix: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("Transitions"))
            .skip(1)
            .take_while(|l| !l.is_empty())
            .collect();
        assert_eq!(
            matrix[0],
            "FROM \\ TO    CLOSE  SYN_SENT  SYN_RECV  ESTABLISHED  FIN_WAIT1  FIN_WAIT2  TIME_WAIT  CLOSE_WAIT  LAST_ACK"
        );
        assert_eq!(
            matrix[1],
            "CLOSE            .         5         .            .          .          .          .           .         ."
        );
        assert_eq!(
            matrix[5],
            "ESTABLISHED      1         .         .            .          4          .          .           2         ."
        );
        assert_eq!(matrix.len(), 11, "{text}");
    }

    #[test]
    fn histogram_buckets_are_within_a_32nd_of_their_values() {
        let mut ns = 0u64;
        while ns < u64::MAX >> 1 {
            let b = bucket(ns);
            assert!(b < BUCKETS, "{ns}");
            let high = bucket_high(b);
            assert!(high >= ns && high - ns <= ns / 32, "{ns}: bucket {b} ends at {high}");
            assert_eq!(bucket(high), b, "{ns}");
            ns += ns / 8 + 1;
        }
        // Past the limit the percentiles come from buckets; below it they are exact.
        let mut g = Gather::default();
        for ns in 1..=1_000u64 {
            g.add(Sample::pack(ns * 1_000, false), 500);
        }
        assert!(g.histogram.is_some() && g.samples.is_empty());
        let stats = Gathers([(); 12].map(|_| g.clone())).into_stats();
        let s = stats[0];
        assert!(s.approximate);
        assert_eq!((s.count, s.max), (1_000, Some(Sample { ns: 1_000_000, at_least: false })));
        let p50 = s.p50.unwrap().ns;
        assert!((500_000..=500_000 + 500_000 / 32).contains(&p50), "{p50}");
    }

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(nearest_rank(&[], 50), None);
        assert_eq!(nearest_rank(&[7], 50), Some(7));
        assert_eq!(nearest_rank(&[7], 99), Some(7));
        let ten: Vec<u64> = (1..=10).collect();
        // Ranks ⌈5⌉, ⌈9⌉, ⌈9.9⌉ = 10.
        assert_eq!(nearest_rank(&ten, 50), Some(5));
        assert_eq!(nearest_rank(&ten, 90), Some(9));
        assert_eq!(nearest_rank(&ten, 99), Some(10));
        assert_eq!(nearest_rank(&ten, 100), Some(10));
        let three = [10, 20, 30];
        // Ranks ⌈1.5⌉ = 2, ⌈2.7⌉ = 3.
        assert_eq!(nearest_rank(&three, 50), Some(20));
        assert_eq!(nearest_rank(&three, 90), Some(30));
        // 200 samples: ranks 100, 180, 198.
        let many: Vec<u64> = (1..=200).collect();
        assert_eq!([50, 90, 99].map(|p| nearest_rank(&many, p)), [Some(100), Some(180), Some(198)]);
    }

    #[test]
    fn samples_pack_their_lower_bound_flag() {
        for (ns, at_least) in [(0, false), (1, true), (84_123, false), (u64::MAX >> 1, true)] {
            assert_eq!(Sample::unpack(Sample::pack(ns, at_least)), Sample { ns, at_least });
        }
        // Sorting packed words sorts by duration.
        assert!(Sample::pack(5, true) < Sample::pack(6, false));
        assert_eq!(Sample::unpack(Sample::pack(u64::MAX, false)).ns, u64::MAX >> 1);
    }

    #[test]
    fn time_in_state_in_the_scenario() {
        let r = scenario(ReportOptions::default());
        let a = analysis(&r);
        let states: Vec<TcpState> = a.time_in_state.iter().map(|s| s.state).collect();
        assert_eq!(
            states,
            [
                Listen,
                SynSent,
                SynRecv,
                Established,
                FinWait1,
                FinWait2,
                TimeWait,
                CloseWait,
                LastAck
            ]
        );

        // 84.123us, 150us, 200us, 1ms, 7s: ranks 3, 5, 5.
        assert_eq!(
            stats(&a.time_in_state, SynSent),
            Stats {
                state: SynSent,
                count: 5,
                lower_bounds: 0,
                unknown: 0,
                at_end: 0,
                p50: exact(200 * US),
                p90: exact(7 * S),
                p99: exact(7 * S),
                max: exact(7 * S),
                approximate: false,
            }
        );
        // 1s, 1.5s, >=2s, 2.3s, 3s, 10s and one unknown (socket 15): the median is the
        // lower bound from the inventory, and is flagged.
        assert_eq!(
            stats(&a.time_in_state, Established),
            Stats {
                state: Established,
                count: 6,
                lower_bounds: 1,
                unknown: 1,
                at_end: 0,
                p50: lower(2 * S),
                p90: exact(10 * S),
                p99: exact(10 * S),
                max: exact(10 * S),
                approximate: false,
            }
        );
        // >=20s (inventory) and 60s; sockets 14 and 20 still in TIME_WAIT at the end.
        let tw = stats(&a.time_in_state, TimeWait);
        assert_eq!((tw.count, tw.lower_bounds, tw.at_end), (2, 1, 2));
        assert_eq!((tw.p50, tw.max), (lower(20 * S), exact(60 * S)));
        // 40us, 50us, 60us, 100us: ranks 2, 4, 4.
        let fw1 = stats(&a.time_in_state, FinWait1);
        assert_eq!(
            (fw1.count, fw1.p50, fw1.p90, fw1.max),
            (4, exact(50 * US), exact(100 * US), exact(100 * US))
        );
        let cw = stats(&a.time_in_state, CloseWait);
        assert_eq!((cw.count, cw.at_end, cw.max), (1, 1, exact(500 * MS)));
        let listen = stats(&a.time_in_state, Listen);
        assert_eq!((listen.count, listen.at_end, listen.max), (0, 1, None));
        assert_eq!(a.unknown_durations, 1);
        assert!(a.by_port.is_none() && a.by_process.is_none());
    }

    #[test]
    fn percentiles_of_a_hundred_handshakes() {
        let mut r = Report::new(ReportOptions::default());
        // SYN_SENT for 1ms, 2ms, ... 100ms, added in a scrambled order (37 is coprime with
        // 100, so k*37 mod 100 visits every value once).
        for k in 0..100u64 {
            let ms = (k * 37) % 100 + 1;
            let s = Script::new(100 + k, (ip(1), 30000 + k as u16), (ip(2), 443), curl());
            s.play(&mut r, k * S, (Close, SynSent), &[(ms * MS, Established)]);
        }
        // Three more whose SYN_SENT began unseen.
        for k in 0..3u64 {
            let s = Script::new(300 + k, (ip(1), 31000 + k as u16), (ip(2), 443), curl());
            r.add_transition(&s.transition(200 * S, SynSent, Established, None));
        }
        r.finish(at(300 * S));
        let syn = stats(&analysis(&r).time_in_state, SynSent);
        assert_eq!(
            (syn.count, syn.unknown, syn.p50, syn.p90, syn.p99, syn.max),
            (100, 3, exact(50 * MS), exact(90 * MS), exact(99 * MS), exact(100 * MS))
        );
        // The slowest ten, longest first.
        let slowest: Vec<u64> = analysis(&r).client_handshakes.iter().map(|p| p.ns / MS).collect();
        assert_eq!(slowest, [100, 99, 98, 97, 96, 95, 94, 93, 92, 91]);
    }

    #[test]
    fn groups_by_service_port_and_process() {
        let r = scenario(ReportOptions { by_port: true, by_process: true, top: 10 });
        let a = analysis(&r);
        let ports: Vec<u16> = a.by_port.as_ref().unwrap().iter().map(|&(p, _)| p).collect();
        // Servers and the listener by their local port 8080; clients by the remote port.
        assert_eq!(ports, [80, 81, 443, 8080]);
        let port = |p: u16| &a.by_port.as_ref().unwrap().iter().find(|g| g.0 == p).unwrap().1;
        // Sockets 10, 12, 13, 14: 84.123us, 200us, 1ms, 7s.
        let syn443 = stats(port(443), SynSent);
        assert_eq!((syn443.count, syn443.p50, syn443.max), (4, exact(200 * US), exact(7 * S)));
        let syn_recv = stats(port(8080), SynRecv);
        assert_eq!(
            (syn_recv.count, syn_recv.p50, syn_recv.max),
            (2, exact(30 * US), exact(250 * US))
        );
        assert_eq!(stats(port(8080), Listen).at_end, 1);
        assert_eq!(stats(port(81), SynSent).max, exact(150 * US));

        let processes: Vec<Option<String>> = a
            .by_process
            .as_ref()
            .unwrap()
            .iter()
            .map(|(c, _)| c.map(|c| c.to_str_lossy().into_owned()))
            .collect();
        assert_eq!(
            processes,
            [None, Some("curl".into()), Some("nginx".into()), Some("python".into())]
        );
        let process = |i: usize| &a.by_process.as_ref().unwrap()[i].1;
        // Unknown owner: the TIME_WAIT from the inventory.
        assert_eq!(process(0).len(), 1);
        assert_eq!(stats(process(0), TimeWait).max, lower(20 * S));
        // curl: 10, 11, 12, 14 (15's SYN_SENT predates its first sight).
        assert_eq!(stats(process(1), SynSent).count, 4);
        assert_eq!(stats(process(3), CloseWait).at_end, 1);
    }

    #[test]
    fn slowest_handshakes_and_longest_close_waits() {
        let r = scenario(ReportOptions::default());
        let a = analysis(&r);
        let list = |picks: &[Pick]| -> Vec<(u64, u64, bool, Option<TcpState>)> {
            picks.iter().map(|p| (r.conns[p.row].socket, p.ns, p.at_least, p.then)).collect()
        };
        assert_eq!(
            list(&a.client_handshakes),
            [
                (12, 7 * S, false, Some(Close)),
                (14, MS, false, Some(Established)),
                (13, 200 * US, false, Some(Established)),
                (11, 150 * US, false, Some(Close)),
                (10, 84_123, false, Some(Established)),
            ]
        );
        assert_eq!(
            list(&a.server_handshakes),
            [(21, 250 * US, false, Some(Established)), (20, 30 * US, false, Some(Established))]
        );
        // Socket 13 has been in CLOSE_WAIT since 15.0002s: ongoing, and first.
        assert_eq!(
            list(&a.close_waits),
            [(13, 49_999_800_000, true, None), (2, 500 * MS, false, Some(LastAck))]
        );

        // The lists keep `top` rows.
        let r = scenario(ReportOptions { top: 2, ..ReportOptions::default() });
        let sockets: Vec<u64> =
            analysis(&r).client_handshakes.iter().map(|p| r.conns[p.row].socket).collect();
        assert_eq!(sockets, [12, 14]);

        let text = text(&scenario(ReportOptions::default()));
        assert!(text.contains("   13  77/python  10.0.0.1:50003  10.0.0.2:443    >=49.9s  still in CLOSE_WAIT at the end (ongoing)\n"), "{text}");
        assert!(
            text.contains("  7.00s  CLOSE: connect timed out (ETIMEDOUT), after 2 retransmits\n"),
            "{text}"
        );
    }

    #[test]
    fn time_wait_per_peer() {
        let r = scenario(ReportOptions::default());
        assert_eq!(
            analysis(&r).peers,
            [Peer { addr: ip(2), count: 3, at_end: 1 }, Peer { addr: ip(3), count: 1, at_end: 1 }]
        );
        // Text keeps `top` peers and says how many more there are.
        let r = scenario(ReportOptions { top: 1, ..ReportOptions::default() });
        let text = text(&r);
        assert!(text.contains("PEER      TIME_WAIT  AT_END\n10.0.0.2          3       1\n... 1 more peer not shown"), "{text}");
    }

    #[test]
    fn totals_and_the_loss_warning() {
        let r = scenario(ReportOptions::default());
        let a = analysis(&r);
        assert_eq!((a.listeners, a.clients, a.servers, a.open_at_end), (1, 7, 3, 4));
        assert_eq!(r.lost_total(), 3);
        let text = text(&r);
        assert!(text.starts_with(
            "portrace report\n  trace        2026-11-29T02:41:07.000000Z to 2026-11-29T02:42:12.000000Z (1m05s)\n  transitions  32\n"
        ), "{text}");
        assert!(text.contains("  connections  11: 1 listener, 7 clients, 3 servers; 3 from the start-up inventory, 4 still open at the end\n"), "{text}");
        assert!(text.contains("  lost         3 transitions (ring_full 3)\n"), "{text}");
        assert!(
            text.contains(
                "!! WARNING: 3 TRANSITIONS WERE LOST: every figure below may be incomplete."
            ),
            "{text}"
        );

        // Without losses: no warning.
        let mut r = Report::new(ReportOptions::default());
        Script::new(1, (ip(1), 40000), (ip(2), 80), curl()).play(
            &mut r,
            S,
            (Close, SynSent),
            &[(MS, Established)],
        );
        r.finish(at(2 * S));
        let text = self::text(&r);
        assert!(text.contains("  lost         none\n") && !text.contains("WARNING"), "{text}");
    }

    #[test]
    fn text_report() {
        let r = scenario(ReportOptions { by_port: true, by_process: true, top: 10 });
        insta::assert_snapshot!(text(&r));
    }

    #[test]
    fn json_report() {
        let r = scenario(ReportOptions { by_port: true, by_process: false, top: 10 });
        let j = json(&r);
        assert_eq!(j["type"], "report");
        assert_eq!(j["schema"], 1);
        assert_eq!(j["start"]["time"], "2026-11-29T02:41:07.000000Z");
        assert_eq!(j["end"]["ts_ns"], MONO0 + END);
        assert_eq!(j["span_ns"], END);
        assert_eq!(j["complete"], false);
        let totals = &j["totals"];
        assert_eq!(totals["transitions"], 32);
        assert_eq!(totals["connections"], 11);
        assert_eq!(
            (&totals["listeners"], &totals["clients"], &totals["servers"]),
            (&1.into(), &7.into(), &3.into())
        );
        assert_eq!(totals["open_at_end"], 4);
        assert_eq!(totals["from_inventory"], 3);
        assert_eq!(totals["unknown_durations"], 1);
        assert_eq!(totals["lost"], 3);
        assert_eq!(
            totals["lost_by_cause"],
            serde_json::json!({"ring_full": 3, "skipped": 0, "malformed": 0, "unreadable": 0, "timewait": 0, "gap": 0})
        );

        let conns = j["connections"].as_array().unwrap();
        assert_eq!(conns.len(), 11);
        let conn = |socket: u64| conns.iter().find(|c| c["socket"] == socket).unwrap();
        let c10 = conn(10);
        assert_eq!(c10["role"], "client");
        assert_eq!(c10["service_port"], 443);
        assert_eq!(
            (&c10["owner_pid"], &c10["owner_comm"], &c10["owner_source"]),
            (&4242.into(), &"curl".into(), &"syscall".into())
        );
        assert_eq!(c10["lifetime_ns"], 62_301_324_123u64);
        assert_eq!(c10["reason"], "active_close");
        assert_eq!(c10["children"], serde_json::Value::Null);
        let states: Vec<(&str, u64)> = c10["states"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["state"].as_str().unwrap(), s["ns"].as_u64().unwrap()))
            .collect();
        assert_eq!(
            states,
            [
                ("SYN_SENT", 84_123),
                ("ESTABLISHED", 2300 * MS),
                ("FIN_WAIT1", 40 * US),
                ("FIN_WAIT2", 1200 * US),
                ("TIME_WAIT", 60 * S)
            ]
        );
        assert_eq!(c10["states"][4]["then"], "CLOSE");

        let c13 = conn(13);
        assert_eq!(c13["open"], true);
        assert_eq!(c13["reason"], serde_json::Value::Null);
        assert_eq!(
            c13["states"][2],
            serde_json::json!({"state": "CLOSE_WAIT", "ns": 49_999_800_000u64, "at_least": true, "ongoing": true, "gap_before": false, "then": null})
        );
        let c12 = conn(12);
        assert_eq!((&c12["error"], &c12["retransmits"]), (&"ETIMEDOUT".into(), &2.into()));
        let c1 = conn(1);
        assert_eq!(
            (&c1["role"], &c1["children"], &c1["daddr"]),
            (&"listener".into(), &2.into(), &"0.0.0.0".into())
        );
        assert_eq!(conn(15)["states"][0]["ns"], serde_json::Value::Null);
        assert_eq!(conn(2)["first_at_least"], true);

        let transitions = j["transitions"].as_array().unwrap();
        assert_eq!(transitions.len(), 14);
        assert_eq!(
            transitions[0],
            serde_json::json!({"from": "CLOSE", "to": "SYN_SENT", "count": 5})
        );
        assert!(transitions
            .contains(&serde_json::json!({"from": "ESTABLISHED", "to": "FIN_WAIT1", "count": 4})));

        let established = j["time_in_state"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["state"] == "ESTABLISHED")
            .unwrap();
        assert_eq!(established["count"], 6);
        assert_eq!(
            (&established["p50_ns"], &established["p50_at_least"]),
            (&(2 * S).into(), &true.into())
        );
        assert_eq!(
            (&established["max_ns"], &established["max_at_least"]),
            (&(10 * S).into(), &false.into())
        );
        let listen =
            j["time_in_state"].as_array().unwrap().iter().find(|s| s["state"] == "LISTEN").unwrap();
        assert_eq!((&listen["p50_ns"], &listen["at_end"]), (&serde_json::Value::Null, &1.into()));

        let ports: Vec<u64> =
            j["by_port"].as_array().unwrap().iter().map(|g| g["port"].as_u64().unwrap()).collect();
        assert_eq!(ports, [80, 81, 443, 8080]);
        assert_eq!(j["by_process"], serde_json::Value::Null);

        let sockets = |key: &str| -> Vec<u64> {
            j[key].as_array().unwrap().iter().map(|p| p["socket"].as_u64().unwrap()).collect()
        };
        assert_eq!(sockets("slowest_client_handshakes"), [12, 14, 13, 11, 10]);
        assert_eq!(sockets("slowest_server_handshakes"), [21, 20]);
        assert_eq!(sockets("longest_close_waits"), [13, 2]);
        assert_eq!(j["slowest_client_handshakes"][0]["reason"], "connect_timeout");
        assert_eq!(j["longest_close_waits"][0]["ongoing"], true);
        assert_eq!(
            j["time_wait_by_peer"],
            serde_json::json!([{"peer": "10.0.0.2", "count": 3, "at_end": 1}, {"peer": "10.0.0.3", "count": 1, "at_end": 1}])
        );
    }

    #[test]
    fn json_escapes_command_names() {
        let mut r = Report::new(ReportOptions { by_process: true, ..ReportOptions::default() });
        let odd = Some(Owner {
            pid: 9,
            comm: Comm::from_kernel(b"a\"b\\c\x01\xff\0\0\0\0\0\0\0\0\0"),
            source: OwnerSource::Syscall, cgroup: 0
        });
        Script::new(1, (ip(1), 40000), (ip(2), 80), odd).play(
            &mut r,
            S,
            (Close, SynSent),
            &[(MS, Established)],
        );
        r.finish(at(2 * S));
        let j = json(&r);
        assert_eq!(j["connections"][0]["owner_comm"], "a\"b\\c\u{1}\u{fffd}");
        assert_eq!(j["by_process"][0]["comm"], "a\"b\\c\u{1}\u{fffd}");
        // And in text, the odd bytes are `?`.
        assert!(text(&r).contains(" 9/a\"b\\c?? "), "{}", text(&r));
    }

    #[test]
    fn text_keeps_the_most_interesting_rows() {
        let mut r = Report::new(ReportOptions::default());
        r.add_socket(&inventory(1, (ANY, 80), (ANY, 0), Listen, nginx(OwnerSource::Inventory)));
        // 60 short connections closed normally, one refused and one still open, all later
        // than the listener.
        for k in 0..60u64 {
            let s = Script::new(100 + k, (ip(1), 40000 + k as u16), (ip(2), 443), curl())
                .ends(EndReason::ActiveClose, None);
            s.play(
                &mut r,
                S + k * MS,
                (Close, SynSent),
                &[(MS, Established), (k * US + 1, TimeWait), (MS, Close)],
            );
        }
        let refused = Script::new(7, (ip(1), 39000), (ip(2), 81), curl())
            .ends(EndReason::Refused, Some(libc::ECONNREFUSED));
        refused.play(&mut r, 2 * S, (Close, SynSent), &[(US, Close)]);
        Script::new(8, (ip(1), 39001), (ip(2), 443), curl()).play(
            &mut r,
            3 * S,
            (Close, SynSent),
            &[(US, Established)],
        );
        r.finish(at(10 * S));

        let text = text(&r);
        let rows: Vec<u64> = text
            .lines()
            .skip_while(|l| !l.starts_with("SOCKET  ROLE"))
            .skip(1)
            .take_while(|l| !l.starts_with("..."))
            .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(rows.len(), TEXT_ROWS);
        // The listener, the refused and the open one, then the 47 longest-lived of the
        // others (the later ones stayed longer in ESTABLISHED), in order of first sight.
        let mut want = vec![1];
        want.extend(113..160);
        want.extend([7, 8]);
        assert_eq!(rows, want);
        assert!(
            text.contains("\n... 13 more connections not shown (13 closed normally); the JSON report has every row\n"),
            "{text}"
        );
        assert_eq!(json(&r)["connections"].as_array().unwrap().len(), 63);
    }

    #[test]
    fn gaps_inventory_and_unknown_listeners() {
        let mut r = Report::new(ReportOptions::default());
        // Two listeners on port 80: one on the wildcard address in another namespace, one
        // on 10.0.0.1 in ours.
        let other_ns = Script { netns: 77, ..Script::new(1, (ANY, 80), (ANY, 0), None) };
        other_ns.play(&mut r, 0, (Close, Listen), &[]);
        Script::new(2, (ip(1), 80), (ANY, 0), None).play(&mut r, 0, (Close, Listen), &[]);
        // A child in our namespace, and one on port 81 that no listener owns.
        Script::new(3, (ip(1), 80), (ip(9), 5000), None).play(&mut r, S, (Listen, SynRecv), &[]);
        Script::new(4, (ip(1), 81), (ip(9), 5001), None).play(&mut r, S, (Listen, SynRecv), &[]);
        // A client whose ESTABLISHED -> FIN_WAIT1 and FIN_WAIT1 -> FIN_WAIT2 were lost.
        let s5 = Script::new(5, (ip(1), 40000), (ip(2), 80), curl());
        s5.play(&mut r, S, (Close, SynSent), &[(MS, Established)]);
        r.add_transition(&s5.transition(3 * S, FinWait2, TimeWait, None));
        // A connection from the inventory that never changed state: a server connection,
        // since its local end matches listener 2.
        r.add_socket(&inventory(6, (ip(1), 80), (ip(9), 6000), Established, None));
        r.finish(at(5 * S));

        assert_eq!(r.conns[r.index[&1]].children, 0);
        assert_eq!(r.conns[r.index[&2]].children, 1);
        assert_eq!(r.unmatched_children, 1);
        assert_eq!(row(&r, 5)[4], "SYN_SENT 1.00ms > ... > FIN_WAIT2 ? > TIME_WAIT >=2.00s");
        // The inventory was taken at the start (at(0)), so it has been open at least 5s.
        assert_eq!(
            row(&r, 6),
            ["server", "-", ">=5.00s", "open", "ESTABLISHED >=5.00s"].map(String::from)
        );
        let text = text(&r);
        assert!(
            text.contains("1 server connection accepted by no listener of the trace"),
            "{text}"
        );
        let j = json(&r);
        assert_eq!(j["totals"]["children_without_listener"], 1);
        assert_eq!(
            j["connections"].as_array().unwrap().iter().find(|c| c["socket"] == 5).unwrap()
                ["states"][1]["gap_before"],
            true
        );
    }

    #[test]
    fn report_before_finish_ends_at_the_last_record() {
        let mut r = Report::new(ReportOptions::default());
        Script::new(1, (ip(1), 40000), (ip(2), 80), curl()).play(
            &mut r,
            S,
            (Close, SynSent),
            &[(MS, Established)],
        );
        r.add_lost(&Lost { time: at(3 * S), count: 1, cause: LossCause::Skipped });
        let j = json(&r);
        assert_eq!(j["span_ns"], 2 * S);
        assert_eq!(j["connections"][0]["states"][1]["ns"], 2 * S - MS);
        assert!(text(&r).contains("!! WARNING: 1 TRANSITION WAS LOST"));
        // An empty report renders too.
        let empty = Report::new(ReportOptions::default());
        assert!(text(&empty).contains("Connections (0, in order of first sight)"));
        assert_eq!(json(&empty)["connections"], serde_json::json!([]));
    }

    #[test]
    fn human_durations() {
        let h = |ns: u64| Human(ns).to_string();
        assert_eq!(h(0), "0ns");
        assert_eq!(h(999), "999ns");
        assert_eq!(h(1_000), "1.00us");
        assert_eq!(h(84_123), "84.1us");
        assert_eq!(h(841_999), "841us");
        assert_eq!(h(1_234_567), "1.23ms");
        assert_eq!(h(12_345_678), "12.3ms");
        assert_eq!(h(2_300_000_000), "2.30s");
        assert_eq!(h(59_999_999_999), "59.9s");
        assert_eq!(h(60 * S), "1m00s");
        assert_eq!(h(123 * S), "2m03s");
        assert_eq!(h(3_720 * S), "1h02m");
        assert_eq!(h(273_600 * S), "3d04h");
        assert_eq!(duration_text(None, true), "?");
        assert_eq!(duration_text(Some(2 * S), true), ">=2.00s");
    }

    #[test]
    fn state_slots_follow_kernel_numbers() {
        for state in TcpState::ALL {
            assert_eq!(TcpState::ALL[slot(state)], state);
        }
        let mut life = LIFE_ORDER.to_vec();
        life.sort();
        assert_eq!(life, TcpState::ALL.to_vec(), "LIFE_ORDER has every state once");
    }
}
