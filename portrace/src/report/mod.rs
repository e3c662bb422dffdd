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
//! This file holds the model (rows, stays, picks) and the public API; `feed.rs` takes
//! records in, `analysis.rs` computes what `finish` computes, `text.rs` and `json.rs`
//! render it.
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

mod analysis;
mod feed;
mod json;
mod text;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::IpAddr;

use crate::record::{Comm, EndReason, Endpoints, Family, LossCause, Owner, Timestamp};
use crate::tcp_state::TcpState;

use analysis::Gathers;

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
    /// As far as known: a later transition fills in an address, port or namespace
    /// unknown before.
    ends: Endpoints,
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


fn service_port(c: &Conn, role: Role) -> u16 {
    match role {
        Role::Listener | Role::Server => c.ends.sport,
        Role::Client => c.ends.dport,
    }
}
