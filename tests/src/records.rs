//! portrace's JSON records as the tests see them: [`Transition`] parsed from a
//! `"type":"transition"` record and [`SocketRecord`] from a `"type":"socket"` record of the
//! start-up inventory, per-socket timelines in order of appearance, loss totals, and
//! assertions on the exact sequence of transitions of every socket and on the owner of
//! each transition, whose failure messages print the whole observed timeline.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde_json::Value;

/// Timelines longer than this are shown with their middle left out.
const TIMELINE_HEAD: usize = 300;
const TIMELINE_TAIL: usize = 50;
/// How many mismatching sockets a failure message lists one by one.
const MISMATCHES_SHOWN: usize = 20;

/// The values `owner_source` may take.
pub const OWNER_SOURCES: &[&str] = &["syscall", "listener", "inventory", "unknown"];
/// The values `reason` may take on a transition into CLOSE.
pub const REASONS: &[&str] = &[
    "active_close",
    "passive_close",
    "refused",
    "connect_timeout",
    "reset_by_peer",
    "reset_sent",
    "connect_aborted",
    "fin_wait2_timeout",
    "time_wait_killed",
    "listener_closed",
    "error",
];

/// The transitions that only ever happen in the socket's own process, inside its `listen`,
/// `connect`, `close` or `shutdown` system call (see the project's notes on what the kernel
/// emits). Once the owner made one of them, portrace knows the owner first-hand.
pub const OWN_SYSCALL_EDGES: &[&str] = &[
    "CLOSE->LISTEN",
    "CLOSE->SYN_SENT",
    "ESTABLISHED->FIN_WAIT1",
    "CLOSE_WAIT->LAST_ACK",
    "LISTEN->CLOSE",
];

/// One `"type":"transition"` record.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub time: String,
    pub ts_ns: u64,
    /// The process on the CPU when the kernel made the transition.
    pub pid: u32,
    pub comm: String,
    pub socket: u64,
    pub family: String,
    pub saddr: String,
    pub sport: u16,
    pub daddr: String,
    pub dport: u16,
    pub oldstate: String,
    pub newstate: String,
    /// `None` when portrace did not see the socket enter `oldstate`.
    pub prev_state_us: Option<f64>,
    /// The socket was in `oldstate` before portrace started: `prev_state_us` counts from
    /// portrace's start and is a lower bound.
    pub prev_state_at_least: bool,
    /// The process that owns the socket; `None` when portrace does not know it.
    pub owner_pid: Option<u32>,
    pub owner_comm: Option<String>,
    /// How portrace knows the owner: one of [`OWNER_SOURCES`].
    pub owner_source: String,
    /// Why the connection ended, on its transition into CLOSE; one of [`REASONS`].
    pub reason: Option<String>,
    /// The errno name the application was told (`"ECONNREFUSED"`), if any.
    pub error: Option<String>,
    /// SYN retransmissions (for a connect that timed out), on the transition into CLOSE.
    pub retransmits: u64,
}

/// An optional string field that must be present: a string or null.
fn opt_text(record: &Value, key: &str) -> Result<Option<String>, String> {
    match record.get(key) {
        None => Err(format!(
            "{key:?} is missing (it must be present, null or a string)"
        )),
        Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("{key:?} is neither null nor a string: {other}")),
    }
}

/// An optional pid field that must be present: an integer or null.
fn opt_pid(record: &Value, key: &str) -> Result<Option<u32>, String> {
    match record.get(key) {
        None => Err(format!(
            "{key:?} is missing (it must be present, null or a pid)"
        )),
        Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .map(Some)
            .ok_or_else(|| format!("{key:?} is neither null nor a pid: {v}")),
    }
}

/// `owner_pid`, `owner_comm`, `owner_source`, checked for consistency: both null exactly
/// when the source is `"unknown"`.
type OwnerFields = (Option<u32>, Option<String>, String);

fn owner_fields(record: &Value) -> Result<OwnerFields, String> {
    let pid = opt_pid(record, "owner_pid")?;
    let comm = opt_text(record, "owner_comm")?;
    let source = record["owner_source"]
        .as_str()
        .ok_or("\"owner_source\" is not a string")?
        .to_string();
    if !OWNER_SOURCES.contains(&source.as_str()) {
        return Err(format!(
            "owner_source {source:?} is not one of {OWNER_SOURCES:?}"
        ));
    }
    let unknown = source == "unknown";
    if unknown != pid.is_none() || unknown != comm.is_none() {
        return Err(format!(
            "owner_pid {pid:?} and owner_comm {comm:?} must be null exactly when owner_source is \"unknown\" (it is {source:?})"
        ));
    }
    Ok((pid, comm, source))
}

impl Transition {
    /// Parses a transition record; the error names the missing or mistyped field.
    pub fn from_json(record: &Value) -> Result<Transition, String> {
        let text = |key: &str| {
            record[key]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("{key:?} is not a string"))
        };
        let uint = |key: &str| {
            record[key]
                .as_u64()
                .ok_or_else(|| format!("{key:?} is not an unsigned integer"))
        };
        let port = |key: &str| {
            uint(key)
                .and_then(|p| u16::try_from(p).map_err(|_| format!("{key:?} = {p} is not a port")))
        };
        let prev_state_us = match &record["prev_state_us"] {
            Value::Null => None,
            Value::Number(n) => Some(
                n.as_f64()
                    .ok_or("\"prev_state_us\" is not a finite number")?,
            ),
            other => {
                return Err(format!(
                    "\"prev_state_us\" is neither null nor a number: {other}"
                ))
            }
        };
        if record.get("prev_state_us").is_none() {
            return Err(
                "\"prev_state_us\" is missing (it must be present, null or a number)".into(),
            );
        }
        let prev_state_at_least = record["prev_state_at_least"]
            .as_bool()
            .ok_or("\"prev_state_at_least\" is not a boolean")?;
        let (owner_pid, owner_comm, owner_source) = owner_fields(record)?;
        let reason = opt_text(record, "reason")?;
        if let Some(reason) = &reason {
            if !REASONS.contains(&reason.as_str()) {
                return Err(format!("reason {reason:?} is not one of {REASONS:?}"));
            }
        }
        Ok(Transition {
            time: text("time")?,
            ts_ns: uint("ts_ns")?,
            pid: uint("pid")
                .and_then(|p| u32::try_from(p).map_err(|_| format!("pid {p} does not fit u32")))?,
            comm: text("comm")?,
            socket: uint("socket")?,
            family: text("family")?,
            saddr: text("saddr")?,
            sport: port("sport")?,
            daddr: text("daddr")?,
            dport: port("dport")?,
            oldstate: text("oldstate")?,
            newstate: text("newstate")?,
            prev_state_us,
            prev_state_at_least,
            owner_pid,
            owner_comm,
            owner_source,
            reason,
            error: opt_text(record, "error")?,
            retransmits: uint("retransmits")?,
        })
    }

    /// `OLD->NEW`.
    pub fn edge(&self) -> String {
        format!("{}->{}", self.oldstate, self.newstate)
    }

    /// Whether either endpoint uses `port`.
    pub fn has_port(&self, port: u16) -> bool {
        self.sport == port || self.dport == port
    }

    /// Whether either endpoint has address `addr` (as portrace prints it).
    pub fn has_addr(&self, addr: &str) -> bool {
        self.saddr == addr || self.daddr == addr
    }

    /// One line of a printed timeline.
    pub fn line(&self) -> String {
        let prev = match (self.prev_state_us, self.prev_state_at_least) {
            (Some(us), false) => format!("{us:.3}us"),
            (Some(us), true) => format!(">={us:.3}us"),
            (None, _) => "-".into(),
        };
        let owner = match (self.owner_pid, &self.owner_comm) {
            (Some(pid), Some(comm)) => format!("{pid}/{comm}/{}", self.owner_source),
            _ => self.owner_source.clone(),
        };
        let mut line = format!(
            "{:>20} sock {:<6} pid {:<7} {:<15} {} {}:{} -> {}:{}  {:<24} prev {:<16} owner {}",
            self.ts_ns,
            self.socket,
            self.pid,
            self.comm,
            self.family,
            self.saddr,
            self.sport,
            self.daddr,
            self.dport,
            self.edge(),
            prev,
            owner
        );
        if let Some(reason) = &self.reason {
            let _ = write!(
                line,
                "  reason {reason} error {} retransmits {}",
                self.error.as_deref().unwrap_or("-"),
                self.retransmits
            );
        }
        line
    }
}

/// The transition records among `records`, in order. Panics on a malformed one.
pub fn transitions(records: &[Value]) -> Vec<Transition> {
    records
        .iter()
        .filter(|r| r["type"] == "transition")
        .map(|r| {
            Transition::from_json(r)
                .unwrap_or_else(|e| panic!("malformed transition record ({e}): {r}"))
        })
        .collect()
}

/// One `"type":"socket"` record: a socket that existed when portrace started.
#[derive(Clone, Debug, PartialEq)]
pub struct SocketRecord {
    pub socket: u64,
    pub family: String,
    pub saddr: String,
    pub sport: u16,
    pub daddr: String,
    pub dport: u16,
    /// The state it was in, a name from the same list as a transition's.
    pub state: String,
    pub owner_pid: Option<u32>,
    pub owner_comm: Option<String>,
    pub owner_source: String,
    /// The inode number of its network namespace.
    pub netns: u64,
    /// The socket's inode (0 for sockets without a file).
    pub inode: u64,
    pub uid: u32,
}

impl SocketRecord {
    /// Parses a socket record; the error names the missing or mistyped field.
    pub fn from_json(record: &Value) -> Result<SocketRecord, String> {
        let text = |key: &str| {
            record[key]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("{key:?} is not a string"))
        };
        let uint = |key: &str| {
            record[key]
                .as_u64()
                .ok_or_else(|| format!("{key:?} is not an unsigned integer"))
        };
        let port = |key: &str| {
            uint(key)
                .and_then(|p| u16::try_from(p).map_err(|_| format!("{key:?} = {p} is not a port")))
        };
        let (owner_pid, owner_comm, owner_source) = owner_fields(record)?;
        if !matches!(owner_source.as_str(), "inventory" | "unknown") {
            return Err(format!(
                "a socket record's owner_source is \"inventory\" or \"unknown\", not {owner_source:?}"
            ));
        }
        Ok(SocketRecord {
            socket: uint("socket")?,
            family: text("family")?,
            saddr: text("saddr")?,
            sport: port("sport")?,
            daddr: text("daddr")?,
            dport: port("dport")?,
            state: text("state")?,
            owner_pid,
            owner_comm,
            owner_source,
            netns: uint("netns")?,
            inode: uint("inode")?,
            uid: uint("uid")
                .and_then(|u| u32::try_from(u).map_err(|_| format!("uid {u} does not fit u32")))?,
        })
    }

    /// One line of a printed inventory.
    pub fn line(&self) -> String {
        let owner = match (self.owner_pid, &self.owner_comm) {
            (Some(pid), Some(comm)) => format!("{pid}/{comm}/{}", self.owner_source),
            _ => self.owner_source.clone(),
        };
        format!(
            "sock {:<6} {} {}:{} -> {}:{}  {:<12} owner {} netns {} inode {} uid {}",
            self.socket,
            self.family,
            self.saddr,
            self.sport,
            self.daddr,
            self.dport,
            self.state,
            owner,
            self.netns,
            self.inode,
            self.uid
        )
    }
}

/// The socket records among `records`, in order. Panics on a malformed one.
pub fn socket_records(records: &[Value]) -> Vec<SocketRecord> {
    records
        .iter()
        .filter(|r| r["type"] == "socket")
        .map(|r| {
            SocketRecord::from_json(r)
                .unwrap_or_else(|e| panic!("malformed socket record ({e}): {r}"))
        })
        .collect()
}

/// The socket records as text, one per line.
pub fn inventory(sockets: &[SocketRecord]) -> String {
    let mut out = String::new();
    for s in sockets {
        let _ = writeln!(out, "  {}", s.line());
    }
    if sockets.is_empty() {
        out.push_str("  (no socket records)\n");
    }
    out
}

/// The transitions of one socket, in the order portrace printed them.
#[derive(Clone, Debug)]
pub struct SocketTimeline {
    pub socket: u64,
    pub transitions: Vec<Transition>,
}

impl SocketTimeline {
    pub fn edges(&self) -> Vec<String> {
        self.transitions.iter().map(Transition::edge).collect()
    }

    pub fn first(&self) -> &Transition {
        &self.transitions[0]
    }

    pub fn last(&self) -> &Transition {
        self.transitions
            .last()
            .expect("a timeline has at least one transition")
    }

    /// The local port as the socket's last transition shows it (a client's first
    /// transition still has port 0).
    pub fn local_port(&self) -> u16 {
        self.last().sport
    }

    pub fn remote_port(&self) -> u16 {
        self.last().dport
    }
}

/// Groups transitions by `socket`, sockets in order of first appearance, each socket's
/// transitions in stream order.
pub fn by_socket(transitions: &[Transition]) -> Vec<SocketTimeline> {
    let mut index: HashMap<u64, usize> = HashMap::new();
    let mut out: Vec<SocketTimeline> = Vec::new();
    for t in transitions {
        let i = *index.entry(t.socket).or_insert_with(|| {
            out.push(SocketTimeline {
                socket: t.socket,
                transitions: Vec::new(),
            });
            out.len() - 1
        });
        out[i].transitions.push(t.clone());
    }
    out
}

/// Losses as portrace reported them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Losses {
    /// Sum of the `count`s of the `"type":"lost"` records.
    pub in_stream: u64,
    /// The same sums per `cause`.
    pub by_cause: BTreeMap<String, u64>,
    /// How many `lost` records there were.
    pub records: usize,
    /// The `end` record's `lost`, if there was an end record.
    pub at_end: Option<u64>,
}

impl Losses {
    /// Timewait records dropped (cause `timewait`): timer bookkeeping, each of which hides
    /// a transition only when it was a timewait socket being killed.
    pub fn timewait_records(&self) -> u64 {
        self.by_cause.get("timewait").copied().unwrap_or(0)
    }

    /// Transitions counted lost: every cause but `timewait`, which counts records.
    pub fn transitions(&self) -> u64 {
        self.in_stream - self.timewait_records()
    }

    /// Transitions that may be neither shown nor counted when the kernel killed `killed`
    /// TIME_WAITs: a dropped timewait record hides a killed one's end, and nothing else.
    pub fn hidden_at_most(&self, killed: usize) -> u64 {
        if self.timewait_records() > 0 {
            killed as u64
        } else {
            0
        }
    }
}

/// Adds up the `lost` records and reads the `end` record's total. Panics on a malformed
/// `lost` record.
pub fn lost_total(records: &[Value]) -> Losses {
    let mut losses = Losses::default();
    for r in records {
        match r["type"].as_str() {
            Some("lost") => {
                let count = r["count"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("lost record without a count: {r}"));
                let cause = r["cause"]
                    .as_str()
                    .unwrap_or_else(|| panic!("lost record without a cause: {r}"));
                losses.in_stream += count;
                *losses.by_cause.entry(cause.to_string()).or_default() += count;
                losses.records += 1;
            }
            Some("end") => losses.at_end = r["lost"].as_u64(),
            _ => {}
        }
    }
    losses
}

/// The transitions as text, one per line; a very long timeline keeps its head and tail.
pub fn timeline(transitions: &[Transition]) -> String {
    let mut out = String::new();
    let n = transitions.len();
    for (i, t) in transitions.iter().enumerate() {
        if n > TIMELINE_HEAD + TIMELINE_TAIL && i == TIMELINE_HEAD {
            let _ = writeln!(
                out,
                "    ... {} transitions left out ...",
                n - TIMELINE_HEAD - TIMELINE_TAIL
            );
        }
        if n <= TIMELINE_HEAD + TIMELINE_TAIL || i < TIMELINE_HEAD || i >= n - TIMELINE_TAIL {
            let _ = writeln!(out, "  {}", t.line());
        }
    }
    if n == 0 {
        out.push_str("  (no transitions)\n");
    }
    out
}

/// What one kind of socket must show: `count` sockets whose transitions are exactly
/// `edges` (`OLD->NEW`), in order.
#[derive(Clone, Copy, Debug)]
pub struct Expect<'a> {
    pub role: &'a str,
    pub count: usize,
    pub edges: &'a [&'a str],
}

/// The sockets of `n` connections whose client closes first: the listener, the clients
/// (ending in TIME_WAIT), the server's children.
pub fn client_closes_first(n: usize) -> [Expect<'static>; 3] {
    use crate::seq::{CHILD_PASSIVE, CLIENT_ACTIVE, LISTENER};
    [
        Expect { role: "listener", count: 1, edges: LISTENER },
        Expect { role: "client", count: n, edges: CLIENT_ACTIVE },
        Expect { role: "child", count: n, edges: CHILD_PASSIVE },
    ]
}

/// The sockets found for each role of an [`assert_sequences`] call.
#[derive(Clone, Debug, Default)]
pub struct Roles {
    roles: Vec<(String, Vec<SocketTimeline>)>,
}

impl Roles {
    /// The sockets of `role`, in order of appearance. Panics on an unknown role.
    pub fn get(&self, role: &str) -> &[SocketTimeline] {
        self.roles
            .iter()
            .find(|(r, _)| r == role)
            .map(|(_, s)| s.as_slice())
            .unwrap_or_else(|| panic!("no role {role:?} was expected"))
    }
}

/// Asserts that every socket among `transitions` shows exactly one of the expected
/// sequences and that each sequence is shown by exactly its `count` of sockets: nothing
/// missing, nothing extra, nothing out of order. On failure the message lists the
/// sockets that match no sequence and prints the whole observed timeline.
pub fn assert_sequences(transitions: &[Transition], expect: &[Expect<'_>]) -> Roles {
    for (i, a) in expect.iter().enumerate() {
        for b in &expect[i + 1..] {
            assert!(
                a.edges != b.edges,
                "roles {:?} and {:?} expect the same sequence",
                a.role,
                b.role
            );
        }
    }
    let mut roles = Roles {
        roles: expect
            .iter()
            .map(|e| (e.role.to_string(), Vec::new()))
            .collect(),
    };
    let mut unmatched = Vec::new();
    for socket in by_socket(transitions) {
        let edges = socket.edges();
        match expect
            .iter()
            .position(|e| e.edges.iter().copied().eq(edges.iter().map(String::as_str)))
        {
            Some(i) => roles.roles[i].1.push(socket),
            None => unmatched.push(socket),
        }
    }
    let counts_ok = expect
        .iter()
        .zip(&roles.roles)
        .all(|(e, (_, found))| found.len() == e.count);
    if counts_ok && unmatched.is_empty() {
        return roles;
    }
    let mut msg = String::from("the transitions per socket are not the expected ones\n");
    for (e, (_, found)) in expect.iter().zip(&roles.roles) {
        let _ = writeln!(
            msg,
            "  {:<10} expected {:>6} sockets, found {:>6}: [{}]",
            e.role,
            e.count,
            found.len(),
            e.edges.join(", ")
        );
    }
    if !unmatched.is_empty() {
        let _ = writeln!(
            msg,
            "{} sockets match no expected sequence:",
            unmatched.len()
        );
        for socket in unmatched.iter().take(MISMATCHES_SHOWN) {
            let _ = writeln!(
                msg,
                "  socket {}: [{}]",
                socket.socket,
                socket.edges().join(", ")
            );
            // Its records in full: a long timeline below may leave them out.
            for t in &socket.transitions {
                let _ = writeln!(msg, "    {}", t.line());
            }
        }
        if unmatched.len() > MISMATCHES_SHOWN {
            let _ = writeln!(msg, "  ... and {} more", unmatched.len() - MISMATCHES_SHOWN);
        }
        let mut shapes: BTreeMap<String, usize> = BTreeMap::new();
        for socket in &unmatched {
            *shapes.entry(socket.edges().join(", ")).or_default() += 1;
        }
        let _ = writeln!(msg, "unmatched sequences by shape:");
        for (shape, n) in shapes {
            let _ = writeln!(msg, "  {n:>6} x [{shape}]");
        }
    }
    let _ = write!(
        msg,
        "observed timeline ({} transitions):\n{}",
        transitions.len(),
        timeline(transitions)
    );
    panic!("{msg}");
}

/// Who must own a socket, and how portrace comes to know it.
#[derive(Clone, Copy, Debug)]
pub struct Owner<'a> {
    /// Names the owner in messages: `"server"`, `"client"`.
    pub who: &'a str,
    pub pid: u32,
    pub comm: &'a str,
    /// The `owner_source` until the owner's first own system call on the socket:
    /// `"syscall"` for a socket the owner created (its first transition is such a call),
    /// `"listener"` for a server's child socket, `"inventory"` for a socket older than
    /// portrace.
    pub first: &'a str,
    /// The edges that are the owner's own system calls on this socket: usually
    /// [`OWN_SYSCALL_EDGES`]; a test whose owner closes with SO_LINGER 0 adds
    /// `ESTABLISHED->CLOSE`.
    pub own: &'a [&'a str],
}

impl Owner<'_> {
    /// The `owner_source` each transition of `socket` must carry.
    pub fn sources(&self, socket: &SocketTimeline) -> Vec<&str> {
        let mut acted = false;
        socket
            .transitions
            .iter()
            .map(|t| {
                acted |= self.own.contains(&t.edge().as_str());
                if acted {
                    "syscall"
                } else {
                    self.first
                }
            })
            .collect()
    }
}

/// Asserts that every transition of `socket` carries `owner`'s pid and command and the
/// `owner_source` [`Owner::sources`] expects. On failure the message lists each wrong
/// transition and prints the whole observed timeline `all`.
pub fn assert_owner(all: &[Transition], socket: &SocketTimeline, owner: &Owner<'_>) {
    let mut wrong = String::new();
    for (t, source) in socket.transitions.iter().zip(owner.sources(socket)) {
        if t.owner_pid != Some(owner.pid)
            || t.owner_comm.as_deref() != Some(owner.comm)
            || t.owner_source != source
        {
            let _ = writeln!(
                wrong,
                "  expected owner {}/{}/{source}: {}",
                owner.pid,
                owner.comm,
                t.line()
            );
        }
    }
    if !wrong.is_empty() {
        panic!(
            "socket {} belongs to the {} (pid {}), but these transitions say otherwise:\n{wrong}\
             observed timeline ({} transitions):\n{}",
            socket.socket,
            owner.who,
            owner.pid,
            all.len(),
            timeline(all)
        );
    }
}

/// Checks what must hold for every socket whatever the filter: its transitions chain in
/// time (`ts_ns` never decreases within a socket); `prev_state_us` is null exactly when
/// portrace did not show the socket entering `oldstate` (its first transition, or after a
/// gap) and otherwise a non-negative number that matches the `ts_ns` difference, except on
/// the first transition of a socket older than portrace, which has `prev_state_at_least`
/// and a number (no other transition has `prev_state_at_least`); a transition has a
/// `reason` exactly when it goes into CLOSE, and an `error` or `retransmits` only with a
/// reason (portrace may leave the reason of a transition into CLOSE null when it cannot
/// tell, but every connection these tests make ends in a way it can tell); `time` is an
/// RFC 3339 UTC time; and, when given, `family` is the expected one.
///
/// Order is checked per socket and not across the whole stream: the kernel takes each
/// timestamp before it reserves the event's place in the ring, so two CPUs can interleave
/// events a few nanoseconds out of timestamp order, and a held `CLOSE->SYN_SENT` is
/// written out only with its socket's next transition.
pub fn check_socket_invariants(transitions: &[Transition], family: Option<&str>) {
    let fail = |what: String| -> ! {
        panic!(
            "{what}\nobserved timeline ({} transitions):\n{}",
            transitions.len(),
            timeline(transitions)
        )
    };
    for t in transitions {
        if let Some(family) = family {
            if t.family != family {
                fail(format!(
                    "family {:?} where {family:?} was expected: {}",
                    t.family,
                    t.line()
                ));
            }
        }
        if !looks_like_utc_time(&t.time) {
            fail(format!(
                "time {:?} is not an RFC 3339 UTC time: {}",
                t.time,
                t.line()
            ));
        }
        if t.reason.is_some() != (t.newstate == "CLOSE") {
            fail(format!(
                "a transition has a reason exactly when it goes into CLOSE: {}",
                t.line()
            ));
        }
        if (t.error.is_some() || t.retransmits != 0) && t.reason.is_none() {
            fail(format!(
                "an error or retransmits without a reason (they belong to the last \
                 transition): {}",
                t.line()
            ));
        }
    }
    for socket in by_socket(transitions) {
        let mut previous: Option<&Transition> = None;
        for t in &socket.transitions {
            if t.prev_state_at_least && previous.is_some() {
                fail(format!(
                    "socket {}: prev_state_at_least on a transition that is not its first: {}",
                    socket.socket,
                    t.line()
                ));
            }
            match (previous, t.prev_state_us) {
                (Some(p), _) if t.ts_ns < p.ts_ns => {
                    fail(format!("socket {} goes back in time:\n  {}\n  {}", socket.socket, p.line(), t.line()))
                }
                (Some(p), Some(us)) if p.newstate == t.oldstate => {
                    let expected = (t.ts_ns - p.ts_ns) as f64 / 1000.0;
                    if !(us >= 0.0 && (us - expected).abs() <= 1.0) {
                        fail(format!(
                            "socket {}: prev_state_us {us} but the socket entered {} {expected:.3} us earlier:\n  {}\n  {}",
                            socket.socket,
                            t.oldstate,
                            p.line(),
                            t.line()
                        ));
                    }
                }
                (Some(p), None) if p.newstate == t.oldstate => fail(format!(
                    "socket {}: prev_state_us is null although portrace showed it entering {}:\n  {}\n  {}",
                    socket.socket,
                    t.oldstate,
                    p.line(),
                    t.line()
                )),
                (Some(_), Some(us)) => fail(format!(
                    "socket {}: prev_state_us is {us} although portrace did not show it entering {}: {}",
                    socket.socket,
                    t.oldstate,
                    t.line()
                )),
                (None, Some(us)) if t.prev_state_at_least => {
                    if us < 0.0 {
                        fail(format!(
                            "socket {}: negative prev_state_us: {}",
                            socket.socket,
                            t.line()
                        ));
                    }
                }
                (None, Some(us)) => fail(format!(
                    "socket {}: its first transition has prev_state_us {us}, expected null \
                     (or prev_state_at_least for a socket older than portrace): {}",
                    socket.socket,
                    t.line()
                )),
                (None, None) if t.prev_state_at_least => fail(format!(
                    "socket {}: prev_state_at_least with a null prev_state_us: {}",
                    socket.socket,
                    t.line()
                )),
                (Some(_), None) | (None, None) => {}
            }
            previous = Some(t);
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`.
fn looks_like_utc_time(time: &str) -> bool {
    let b = time.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range)
            .is_some_and(|s| s.iter().all(u8::is_ascii_digit))
    };
    b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b.ends_with(b"Z")
        && (b.len() == 20 || (b[19] == b'.' && digits(20..b.len() - 1) && b.len() > 21))
}

/// Panics, with the timeline, if any transition satisfies `bad`.
pub fn assert_none(ts: &[Transition], what: &str, bad: impl Fn(&Transition) -> bool) {
    let found: Vec<String> = ts.iter().filter(|t| bad(t)).map(Transition::line).collect();
    assert!(
        found.is_empty(),
        "{what}: {} transitions that must be absent:\n{}\nobserved timeline:\n{}",
        found.len(),
        found.join("\n"),
        timeline(ts)
    );
}

/// Panics, with the timeline, unless every transition satisfies `good`.
pub fn assert_all(ts: &[Transition], what: &str, good: impl Fn(&Transition) -> bool) {
    assert_none(ts, what, |t| !good(t));
}

/// How many transitions `expect` describes in all.
pub fn expected_total(expect: &[Expect<'_>]) -> usize {
    expect.iter().map(|e| e.count * e.edges.len()).sum()
}

impl<'a> Owner<'a> {
    /// An owner whose own system calls on the socket are the usual ones (listen, connect,
    /// close: [`OWN_SYSCALL_EDGES`]); `first` is the owner source before its first one.
    pub fn usual(who: &'a str, pid: u32, comm: &'a str, first: &'a str) -> Owner<'a> {
        Owner { who, pid, comm, first, own: OWN_SYSCALL_EDGES }
    }
}

/// Panics unless `socket`'s last transition goes into CLOSE for `reason` with `error`
/// and, when given, `retransmits`.
pub fn assert_end(ts: &[Transition], socket: &SocketTimeline, reason: &str, error: Option<&str>, retransmits: Option<u64>) {
    let last = socket.last();
    let ok = last.newstate == "CLOSE"
        && last.reason.as_deref() == Some(reason)
        && last.error.as_deref() == error
        && retransmits.is_none_or(|n| last.retransmits == n);
    assert!(
        ok,
        "socket {} must end in CLOSE with reason {reason:?}, error {error:?}, retransmits \
         {retransmits:?}, but ends:\n  {}\nobserved timeline:\n{}",
        socket.socket,
        last.line(),
        timeline(ts)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(socket: u64, ts: u64, old: &str, new: &str, prev: Option<f64>) -> Value {
        let reason = (new == "CLOSE").then_some("active_close");
        json!({"type":"transition","time":"2026-11-29T02:41:07.123456Z","ts_ns":ts,"pid":1,
               "comm":"x","socket":socket,"family":"ipv4","saddr":"127.0.0.1","sport":1,
               "daddr":"127.0.0.1","dport":2,"oldstate":old,"newstate":new,"prev_state_us":prev,
               "prev_state_at_least":false,"owner_pid":7,"owner_comm":"tcpload",
               "owner_source":"syscall","reason":reason,"error":null,"retransmits":0,"netns":1})
    }

    #[test]
    fn groups_sockets_in_order_and_checks_sequences() {
        let records = vec![
            json!({"type":"start"}),
            record(2, 10, "CLOSE", "LISTEN", None),
            record(1, 11, "CLOSE", "SYN_SENT", None),
            record(2, 20, "LISTEN", "CLOSE", Some(0.01)),
            record(1, 2011, "SYN_SENT", "CLOSE", Some(2.0)),
            json!({"type":"lost","count":3,"cause":"ring_full"}),
            json!({"type":"end","lost":3}),
        ];
        let ts = transitions(&records);
        let sockets = by_socket(&ts);
        assert_eq!(
            sockets.iter().map(|s| s.socket).collect::<Vec<_>>(),
            vec![2, 1]
        );
        let roles = assert_sequences(
            &ts,
            &[
                Expect {
                    role: "listener",
                    count: 1,
                    edges: crate::seq::LISTENER,
                },
                Expect {
                    role: "client",
                    count: 1,
                    edges: crate::seq::REFUSED,
                },
            ],
        );
        assert_eq!(roles.get("client")[0].socket, 1);
        check_socket_invariants(&ts, Some("ipv4"));
        let losses = lost_total(&records);
        assert_eq!(
            (losses.in_stream, losses.at_end, losses.records),
            (3, Some(3), 1)
        );
    }

    #[test]
    #[should_panic(expected = "match no expected sequence")]
    fn reports_a_missing_transition() {
        let ts = transitions(&[record(1, 1, "CLOSE", "SYN_SENT", None)]);
        assert_sequences(
            &ts,
            &[Expect {
                role: "client",
                count: 1,
                edges: crate::seq::REFUSED,
            }],
        );
    }

    #[test]
    #[should_panic(expected = "expected null")]
    fn first_transition_must_have_null_prev() {
        let ts = transitions(&[record(1, 1, "CLOSE", "SYN_SENT", Some(1.0))]);
        check_socket_invariants(&ts, None);
    }

    #[test]
    fn an_inventory_socket_starts_with_a_lower_bound() {
        let mut first = record(1, 100, "ESTABLISHED", "FIN_WAIT1", Some(5.0));
        first["prev_state_at_least"] = json!(true);
        let ts = transitions(&[first, record(1, 1100, "FIN_WAIT1", "FIN_WAIT2", Some(1.0))]);
        check_socket_invariants(&ts, Some("ipv4"));
    }

    #[test]
    #[should_panic(expected = "not its first")]
    fn only_the_first_transition_is_a_lower_bound() {
        let mut second = record(1, 1100, "FIN_WAIT1", "FIN_WAIT2", Some(1.0));
        second["prev_state_at_least"] = json!(true);
        let ts = transitions(&[record(1, 100, "ESTABLISHED", "FIN_WAIT1", None), second]);
        check_socket_invariants(&ts, None);
    }

    #[test]
    #[should_panic(expected = "reason exactly when it goes into CLOSE")]
    fn a_reason_only_into_close() {
        let mut r = record(1, 100, "FIN_WAIT2", "TIME_WAIT", None);
        r["reason"] = json!("active_close");
        check_socket_invariants(&transitions(&[r]), None);
    }

    #[test]
    fn owner_fields_must_agree() {
        let mut r = record(1, 100, "CLOSE", "LISTEN", None);
        r["owner_source"] = json!("unknown");
        assert!(Transition::from_json(&r).is_err());
        r["owner_pid"] = Value::Null;
        r["owner_comm"] = Value::Null;
        assert_eq!(Transition::from_json(&r).unwrap().owner_pid, None);
        r["owner_source"] = json!("somebody");
        assert!(Transition::from_json(&r).is_err());
    }

    #[test]
    fn a_child_is_the_listeners_until_its_owner_acts() {
        let ts = transitions(&[
            record(3, 1, "LISTEN", "SYN_RECV", None),
            record(3, 2, "SYN_RECV", "ESTABLISHED", Some(0.001)),
            record(3, 3, "ESTABLISHED", "CLOSE_WAIT", Some(0.001)),
            record(3, 4, "CLOSE_WAIT", "LAST_ACK", Some(0.001)),
            record(3, 5, "LAST_ACK", "CLOSE", Some(0.001)),
        ]);
        let owner = Owner {
            who: "server",
            pid: 7,
            comm: "tcpload",
            first: "listener",
            own: OWN_SYSCALL_EDGES,
        };
        let socket = &by_socket(&ts)[0];
        assert_eq!(
            owner.sources(socket),
            ["listener", "listener", "listener", "syscall", "syscall"]
        );
    }

    #[test]
    fn socket_records_parse() {
        let r = json!({"type":"socket","time":"2026-11-29T02:41:07.123456Z","ts_ns":5,
            "socket":4,"family":"ipv4","saddr":"127.0.0.1","sport":80,"daddr":"0.0.0.0",
            "dport":0,"state":"LISTEN","owner_pid":9,"owner_comm":"srv",
            "owner_source":"inventory","netns":4026531840u64,"inode":123,"uid":0});
        let sockets = socket_records(&[json!({"type":"start"}), r.clone()]);
        assert_eq!(sockets.len(), 1);
        assert_eq!(
            (
                sockets[0].socket,
                sockets[0].state.as_str(),
                sockets[0].owner_pid
            ),
            (4, "LISTEN", Some(9))
        );
        let mut bad = r;
        bad["owner_source"] = json!("syscall");
        assert!(SocketRecord::from_json(&bad).is_err());
    }

    #[test]
    fn utc_times() {
        assert!(looks_like_utc_time("2026-11-29T02:41:07.123456Z"));
        assert!(looks_like_utc_time("2026-11-29T02:41:07Z"));
        assert!(!looks_like_utc_time("2026-11-29 02:41:07"));
        assert!(!looks_like_utc_time("2026-11-29T02:41:07.Z"));
    }
}
