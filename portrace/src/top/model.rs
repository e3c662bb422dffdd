//! The state of `portrace top`, with no terminal in it: the table of sockets keyed by
//! portrace's socket id (built from the inventory's socket records and every transition),
//! the ring of recent transitions, the loss counters, and what the user chose to see
//! (filter text, sort key, pause, selected row, open overlay). Time is the kernel's
//! CLOCK_MONOTONIC, set from outside with [`Table::tick`], so that everything here is
//! deterministic and tested without root or a terminal. The renderer reads this model and
//! nothing else; the driver feeds it records and actions.

use std::cmp::Ordering;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use crate::output::Start;
use crate::cgroup::CgroupInfo;
use crate::record::{EndReason, Endpoints, Family, LossCause, Lost, Owner, SocketRecord, Timestamp, Transition};
use crate::tcp_state::TcpState;

/// How long a new socket or a state change stays highlighted.
pub const HIGHLIGHT_NS: u64 = 2_000_000_000;
/// How long a closed socket stays in the table after its last transition.
pub const LINGER_NS: u64 = 3_000_000_000;
/// Recent transitions kept for the transitions pane.
pub const RECENT_CAP: usize = 1_000;
/// Transitions kept per socket for its timeline.
pub const HISTORY_CAP: usize = 64;
/// Sockets the table holds at most; past it, closed sockets go first, then the ones that
/// changed longest ago.
pub const MAX_SOCKETS: usize = 500_000;

/// What last happened to a socket, for its highlight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Listed by the inventory at start: nothing to highlight.
    Inventory,
    /// First seen being created (a connect, a listen, a child of a listener).
    New,
    /// Changed state.
    State,
    /// Went to CLOSE: shown until [`LINGER_NS`] has passed.
    Closed,
}

/// One socket: where it is, who owns it, its state and since when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conn {
    pub id: u64,
    pub family: Family,
    pub ends: Endpoints,
    pub state: TcpState,
    pub owner: Option<Owner>,
    /// When it entered `state`; a lower bound when `entered_at_least` (it was already in
    /// the state when tracing started).
    pub entered_ns: u64,
    pub entered_at_least: bool,
    /// When it was created; a lower bound when `born_at_least`.
    pub born_ns: u64,
    pub born_at_least: bool,
    /// When `change` happened.
    pub changed_ns: u64,
    pub change: Change,
    /// Why it ended, once it went to CLOSE, and the error the kernel gave.
    pub reason: Option<EndReason>,
    pub error: Option<i32>,
    /// Its transitions, oldest first, the last [`HISTORY_CAP`] of them.
    pub history: VecDeque<Transition>,
    /// Transitions that fell out of `history`.
    pub history_dropped: u64,
}

impl Conn {
    pub fn is_closed(&self) -> bool {
        self.change == Change::Closed
    }

    /// Whether the socket is highlighted at `now_ns`.
    pub fn highlighted(&self, now_ns: u64) -> bool {
        self.change != Change::Inventory && now_ns.saturating_sub(self.changed_ns) < HIGHLIGHT_NS
    }

    /// Time in the current state at `now_ns`.
    pub fn in_state_ns(&self, now_ns: u64) -> u64 {
        now_ns.saturating_sub(self.entered_ns)
    }

    pub fn age_ns(&self, now_ns: u64) -> u64 {
        now_ns.saturating_sub(self.born_ns)
    }

    /// The lower-cased text the filter looks in: pid, command, endpoints, state.
    fn search_text(&self) -> String {
        let (pid, comm) = match &self.owner {
            Some(o) => (o.pid.to_string(), crate::escape::comm(&o.comm)),
            None => (String::new(), String::new()),
        };
        format!(
            "{pid} {comm} {} {} {}",
            endpoint(self.ends.saddr, self.ends.sport),
            endpoint(self.ends.daddr, self.ends.dport),
            self.state.name()
        )
        .to_lowercase()
    }
}

/// `addr:port`, IPv6 in brackets; `*` for an unspecified address or port.
pub fn endpoint(addr: IpAddr, port: u16) -> String {
    let host = if addr.is_unspecified() {
        "*".to_string()
    } else {
        match addr {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => format!("[{a}]"),
            },
        }
    };
    if port == 0 {
        format!("{host}:*")
    } else {
        format!("{host}:{port}")
    }
}

/// The sockets and transitions seen so far.
#[derive(Clone, Debug)]
pub struct Table {
    sockets: HashMap<u64, Conn>,
    recent: VecDeque<Transition>,
    transitions: u64,
    lost: [u64; LossCause::ALL.len()],
    start: Option<Start>,
    ended: bool,
    now: Option<Timestamp>,
    /// Sockets dropped to stay within `max_sockets`.
    evicted: u64,
    /// [`MAX_SOCKETS`], unless a test asks for fewer.
    max_sockets: usize,
    /// What each cgroup announced so far is: its path and what the path names (at most
    /// [`MAX_CGROUPS`]; past that they are forgotten and owners show the id alone).
    cgroups: HashMap<u64, CgroupName>,
}

/// Cgroups a table names at most.
const MAX_CGROUPS: usize = 1 << 16;

/// A cgroup as the details pane shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupName {
    pub path: Option<String>,
    /// The unit, container or pod the path names ([`crate::cgroup::Identity::label`]).
    pub label: Option<String>,
}

impl Default for Table {
    fn default() -> Table {
        Table::with_capacity(MAX_SOCKETS)
    }
}

impl Table {
    pub fn new() -> Table {
        Table::default()
    }

    /// A table of at most `max_sockets` sockets.
    pub fn with_capacity(max_sockets: usize) -> Table {
        Table {
            sockets: HashMap::new(),
            recent: VecDeque::new(),
            transitions: 0,
            lost: [0; LossCause::ALL.len()],
            start: None,
            ended: false,
            now: None,
            evicted: 0,
            max_sockets: max_sockets.max(1),
            cgroups: HashMap::new(),
        }
    }

    /// Tracing started.
    pub fn start(&mut self, start: &Start) {
        self.start = Some(start.clone());
        self.now = Some(self.now.map_or(start.time, |n| n.max(start.time)));
    }

    /// A cgroup first seen as an owner's.
    pub fn cgroup(&mut self, g: &CgroupInfo) {
        if self.cgroups.len() >= MAX_CGROUPS && !self.cgroups.contains_key(&g.id) {
            self.cgroups.clear();
        }
        self.cgroups.insert(g.id, CgroupName { path: g.path.clone(), label: g.identity().label() });
    }

    /// What cgroup `id` is, when it was announced.
    pub fn cgroup_name(&self, id: u64) -> Option<&CgroupName> {
        self.cgroups.get(&id)
    }

    /// A socket that existed when tracing started.
    pub fn socket(&mut self, s: &SocketRecord) {
        let t = s.time.mono_ns;
        let conn = Conn {
            id: s.socket,
            family: s.family,
            ends: s.ends,
            state: s.state,
            owner: s.owner,
            entered_ns: t,
            entered_at_least: true,
            born_ns: t,
            born_at_least: true,
            changed_ns: t,
            change: Change::Inventory,
            reason: None,
            error: None,
            history: VecDeque::new(),
            history_dropped: 0,
        };
        self.make_room(s.socket);
        self.sockets.insert(s.socket, conn);
    }

    /// A transition: creates the socket if it is new, moves it otherwise.
    pub fn transition(&mut self, t: &Transition) {
        self.transitions += 1;
        let at = t.time.mono_ns;
        let trace_start = self.start.as_ref().map_or(at, |s| s.time.mono_ns);
        if !self.sockets.contains_key(&t.socket) {
            self.make_room(t.socket);
        }
        let conn = self.sockets.entry(t.socket).or_insert_with(|| {
            // Created before our eyes: from CLOSE (connect, listen) or as a listener's child.
            let created = t.oldstate == TcpState::Close || t.oldstate == TcpState::Listen;
            let (born_ns, born_at_least) = if created {
                (at, false)
            } else {
                (trace_start.min(at.saturating_sub(t.prev_state_ns.unwrap_or(0))), true)
            };
            Conn {
                id: t.socket,
                family: t.family,
                ends: t.ends,
                state: t.oldstate,
                owner: None,
                entered_ns: at,
                entered_at_least: false,
                born_ns,
                born_at_least,
                changed_ns: at,
                change: if created { Change::New } else { Change::State },
                reason: None,
                error: None,
                history: VecDeque::new(),
                history_dropped: 0,
            }
        });
        // A socket closed and used again (a second connect on the same descriptor) is
        // born again.
        let reborn = t.oldstate == TcpState::Close && conn.change == Change::Closed;
        if reborn {
            conn.born_ns = at;
            conn.born_at_least = false;
        }
        conn.family = t.family;
        conn.ends = t.ends;
        if t.owner.is_some() {
            conn.owner = t.owner;
        }
        conn.state = t.newstate;
        conn.entered_ns = at;
        conn.entered_at_least = false;
        conn.changed_ns = at;
        conn.change = if t.newstate == TcpState::Close {
            Change::Closed
        } else if !conn.born_at_least && at.saturating_sub(conn.born_ns) < HIGHLIGHT_NS {
            // Still new: a connection that is set up within the highlight stays new.
            Change::New
        } else {
            Change::State
        };
        if t.newstate == TcpState::Close {
            conn.reason = t.reason;
            conn.error = t.error;
        } else {
            conn.reason = None;
            conn.error = None;
        }
        if conn.history.len() == HISTORY_CAP {
            conn.history.pop_front();
            conn.history_dropped += 1;
        }
        conn.history.push_back(t.clone());
        if self.recent.len() == RECENT_CAP {
            self.recent.pop_front();
        }
        self.recent.push_back(t.clone());
        if self.now.is_none_or(|n| n.mono_ns < at) {
            self.now = Some(t.time);
        }
    }

    pub fn lost(&mut self, lost: &Lost) {
        let slot = &mut self.lost[lost.cause.index()];
        *slot = slot.saturating_add(lost.count);
    }

    /// Tracing ended (the end record).
    pub fn end(&mut self) {
        self.ended = true;
    }

    /// Sets the clock to `now` and lets closed sockets whose time is up go.
    pub fn tick(&mut self, now: Timestamp) {
        self.now = Some(now);
        let now_ns = now.mono_ns;
        self.sockets.retain(|_, c| !(c.is_closed() && now_ns.saturating_sub(c.changed_ns) >= LINGER_NS));
    }

    /// Keeps the table within [`MAX_SOCKETS`] before `incoming` is added.
    fn make_room(&mut self, incoming: u64) {
        if self.sockets.len() < self.max_sockets || self.sockets.contains_key(&incoming) {
            return;
        }
        let before = self.sockets.len();
        self.sockets.retain(|_, c| !c.is_closed());
        if self.sockets.len() >= self.max_sockets {
            if let Some(oldest) = self.sockets.values().min_by_key(|c| (c.changed_ns, c.id)).map(|c| c.id) {
                self.sockets.remove(&oldest);
            }
        }
        self.evicted += (before - self.sockets.len()) as u64;
    }

    pub fn now(&self) -> Timestamp {
        self.now.unwrap_or(Timestamp { mono_ns: 0, unix_ns: 0 })
    }

    pub fn start_record(&self) -> Option<&Start> {
        self.start.as_ref()
    }

    pub fn ended(&self) -> bool {
        self.ended
    }

    pub fn get(&self, id: u64) -> Option<&Conn> {
        self.sockets.get(&id)
    }

    pub fn sockets(&self) -> impl Iterator<Item = &Conn> {
        self.sockets.values()
    }

    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// The recent transitions, oldest first.
    pub fn recent(&self) -> &VecDeque<Transition> {
        &self.recent
    }

    pub fn transitions(&self) -> u64 {
        self.transitions
    }

    pub fn lost_total(&self) -> u64 {
        self.lost.iter().fold(0u64, |a, &n| a.saturating_add(n))
    }

    pub fn lost_by_cause(&self) -> impl Iterator<Item = (LossCause, u64)> + '_ {
        LossCause::ALL.into_iter().map(|c| (c, self.lost[c.index()]))
    }

    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Open sockets per state (closed ones not counted), in [`TcpState::ALL`] order.
    pub fn state_counts(&self) -> [(TcpState, usize); 12] {
        let mut counts = TcpState::ALL.map(|s| (s, 0));
        for c in self.sockets.values().filter(|c| !c.is_closed()) {
            if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == c.state) {
                slot.1 += 1;
            }
        }
        counts
    }
}

/// The column the table is sorted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    /// Most recently changed first.
    Changed,
    /// Youngest first.
    Age,
    /// Longest in its state first.
    InState,
    State,
    Process,
    Local,
    Remote,
}

impl SortKey {
    pub const ALL: [SortKey; 7] =
        [SortKey::Changed, SortKey::Age, SortKey::InState, SortKey::State, SortKey::Process, SortKey::Local, SortKey::Remote];

    pub fn name(self) -> &'static str {
        match self {
            SortKey::Changed => "last change",
            SortKey::Age => "age",
            SortKey::InState => "time in state",
            SortKey::State => "state",
            SortKey::Process => "process",
            SortKey::Local => "local",
            SortKey::Remote => "remote",
        }
    }

    fn next(self) -> SortKey {
        let i = SortKey::ALL.iter().position(|&k| k == self).unwrap_or(0);
        SortKey::ALL[(i + 1) % SortKey::ALL.len()]
    }

    fn compare(self, a: &Conn, b: &Conn) -> Ordering {
        let by_addr = |x: IpAddr, y: IpAddr| ip_key(x).cmp(&ip_key(y));
        let primary = match self {
            SortKey::Changed => b.changed_ns.cmp(&a.changed_ns),
            SortKey::Age => b.born_ns.cmp(&a.born_ns),
            SortKey::InState => a.entered_ns.cmp(&b.entered_ns),
            SortKey::State => a.state.name().cmp(b.state.name()),
            SortKey::Process => {
                let key = |c: &Conn| c.owner.map(|o| (o.comm.as_bytes().to_vec(), o.pid));
                // Sockets with an owner before those without.
                match (key(a), key(b)) {
                    (Some(x), Some(y)) => x.cmp(&y),
                    (Some(_), None) => Ordering::Less,
                    (None, Some(_)) => Ordering::Greater,
                    (None, None) => Ordering::Equal,
                }
            }
            SortKey::Local => by_addr(a.ends.saddr, b.ends.saddr).then(a.ends.sport.cmp(&b.ends.sport)),
            SortKey::Remote => by_addr(a.ends.daddr, b.ends.daddr).then(a.ends.dport.cmp(&b.ends.dport)),
        };
        primary.then(b.id.cmp(&a.id))
    }
}

/// Sorts IPv4 (and v4-mapped) before IPv6, each numerically.
fn ip_key(addr: IpAddr) -> (u8, u128) {
    match addr {
        IpAddr::V4(a) => (4, u128::from(u32::from(a))),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => (4, u128::from(u32::from(v4))),
            None => (6, u128::from(a)),
        },
    }
}

/// A window over the main screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlay {
    None,
    Help,
    /// One socket's timeline, scrolled down by `scroll` lines.
    Timeline { socket: u64, scroll: usize },
}

/// Where a recording being browsed (`--from FILE`) stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// Records applied so far, of `total`.
    pub position: usize,
    pub total: usize,
    /// The recording's first and last instants.
    pub first: Timestamp,
    pub last: Timestamp,
    pub playing: bool,
    /// Play speed, times real time.
    pub speed: u32,
}

/// What the user does; [`super::input`] maps keys to these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Quit,
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
    /// Start editing the filter.
    EditFilter,
    FilterChar(char),
    FilterBackspace,
    /// Keep the filter being edited.
    FilterDone,
    /// Clear the filter and stop editing.
    FilterClear,
    CycleSort,
    ReverseSort,
    TogglePause,
    OpenTimeline,
    Help,
    /// Close the overlay (help, timeline).
    Close,
    /// Browsing a recording: one record forward or back, ten seconds forward or back, the
    /// first or last record, faster or slower play.
    StepForward,
    StepBack,
    JumpForward,
    JumpBack,
    ToStart,
    ToEnd,
    Faster,
    Slower,
}

/// Everything `portrace top` shows: the table (live, or frozen while paused) and the
/// user's choices.
#[derive(Clone, Debug)]
pub struct Top {
    table: Table,
    /// The table as it was when the display was paused.
    frozen: Option<Table>,
    /// Transitions received since the pause.
    pub pending: u64,
    pub filter: String,
    pub editing_filter: bool,
    pub sort: SortKey,
    pub reverse: bool,
    selected: Option<u64>,
    /// The selected row's index when it was last seen, for when it goes away.
    selected_index: usize,
    pub overlay: Overlay,
    /// Rows one page moves by (set by the driver from the screen's size).
    pub page: usize,
    /// Set when browsing a recording.
    pub cursor: Option<Cursor>,
    /// A message for the status bar (the last line written to stderr, a recording's cut).
    pub message: Option<String>,
    /// The source's name: "live" or the recording's path.
    pub source: String,
    quit: bool,
    /// The socket whose timeline is open, as last seen: it stays readable after the
    /// socket has left the table.
    timeline_copy: Option<Conn>,
}

impl Top {
    pub fn new(source: impl Into<String>) -> Top {
        Top {
            table: Table::new(),
            frozen: None,
            pending: 0,
            filter: String::new(),
            editing_filter: false,
            sort: SortKey::Changed,
            reverse: false,
            selected: None,
            selected_index: 0,
            overlay: Overlay::None,
            page: 10,
            cursor: None,
            message: None,
            source: source.into(),
            quit: false,
            timeline_copy: None,
        }
    }

    /// The table records go into.
    pub fn table_mut(&mut self) -> &mut Table {
        &mut self.table
    }

    pub fn live_table(&self) -> &Table {
        &self.table
    }

    /// Replaces the table (a recording rebuilt up to an earlier point).
    pub fn set_table(&mut self, table: Table) {
        self.table = table;
    }

    /// The table as shown: frozen while paused.
    pub fn shown(&self) -> &Table {
        self.frozen.as_ref().unwrap_or(&self.table)
    }

    pub fn paused(&self) -> bool {
        self.frozen.is_some()
    }

    pub fn quit_requested(&self) -> bool {
        self.quit
    }

    /// Feeds a transition to the table, counting it as pending while paused.
    pub fn transition(&mut self, t: &Transition) {
        self.table.transition(t);
        if self.frozen.is_some() {
            self.pending += 1;
        }
    }

    /// Sets the clock; the frozen table keeps its own.
    pub fn tick(&mut self, now: Timestamp) {
        self.table.tick(now);
        self.refresh_timeline();
    }

    /// Keeps the open timeline's copy of its socket up to date.
    pub fn refresh_timeline(&mut self) {
        if let Overlay::Timeline { socket, .. } = self.overlay {
            if let Some(c) = self.shown().get(socket) {
                self.timeline_copy = Some(c.clone());
            }
        }
    }

    /// The rows shown: the shown table's sockets that pass the filter, sorted.
    pub fn rows(&self) -> Vec<&Conn> {
        let words: Vec<String> = self.filter.split_whitespace().map(str::to_lowercase).collect();
        let mut rows: Vec<&Conn> = self
            .shown()
            .sockets()
            .filter(|c| {
                if words.is_empty() {
                    return true;
                }
                let text = c.search_text();
                words.iter().all(|w| text.contains(w.as_str()))
            })
            .collect();
        let key = self.sort;
        rows.sort_by(|a, b| {
            let o = key.compare(a, b);
            if self.reverse {
                o.reverse()
            } else {
                o
            }
        });
        rows
    }

    /// The selected row's index in `rows`: the selected socket if it is there, else the
    /// row where it was, else the first.
    pub fn selected_index(&self, rows: &[&Conn]) -> Option<usize> {
        if rows.is_empty() {
            return None;
        }
        if let Some(id) = self.selected {
            if let Some(i) = rows.iter().position(|c| c.id == id) {
                return Some(i);
            }
        }
        Some(self.selected_index.min(rows.len() - 1))
    }

    /// Does what the user asked. Actions for browsing are left to the browser (it owns the
    /// recording); this returns `false` for them.
    pub fn apply(&mut self, action: Action) -> bool {
        let page = self.page.max(1);
        match action {
            Action::Quit => self.quit = true,
            Action::Up | Action::Down | Action::PageUp | Action::PageDown | Action::Home | Action::End => {
                if let Overlay::Timeline { scroll, .. } = &mut self.overlay {
                    *scroll = match action {
                        Action::Up => scroll.saturating_sub(1),
                        Action::Down => scroll.saturating_add(1),
                        Action::PageUp => scroll.saturating_sub(page),
                        Action::PageDown => scroll.saturating_add(page),
                        Action::Home => 0,
                        _ => usize::MAX / 2,
                    };
                    return true;
                }
                let (ids, current) = {
                    let rows = self.rows();
                    (rows.iter().map(|c| c.id).collect::<Vec<_>>(), self.selected_index(&rows))
                };
                let Some(current) = current else { return true };
                let last = ids.len() - 1;
                let target = match action {
                    Action::Up => current.saturating_sub(1),
                    Action::Down => (current + 1).min(last),
                    Action::PageUp => current.saturating_sub(page),
                    Action::PageDown => (current + page).min(last),
                    Action::Home => 0,
                    _ => last,
                };
                self.selected = Some(ids[target]);
                self.selected_index = target;
            }
            Action::EditFilter => self.editing_filter = true,
            Action::FilterChar(c) => {
                if self.filter.chars().count() < 64 && !c.is_control() {
                    self.filter.push(c);
                }
            }
            Action::FilterBackspace => {
                self.filter.pop();
            }
            Action::FilterDone => self.editing_filter = false,
            Action::FilterClear => {
                self.filter.clear();
                self.editing_filter = false;
            }
            Action::CycleSort => self.sort = self.sort.next(),
            Action::ReverseSort => self.reverse = !self.reverse,
            Action::TogglePause => {
                if self.cursor.is_some() {
                    return false;
                }
                if self.frozen.take().is_none() {
                    self.frozen = Some(self.table.clone());
                }
                self.pending = 0;
            }
            Action::OpenTimeline => {
                let chosen = {
                    let rows = self.rows();
                    self.selected_index(&rows).map(|i| (i, rows[i].clone()))
                };
                if let Some((i, conn)) = chosen {
                    self.selected = Some(conn.id);
                    self.selected_index = i;
                    self.overlay = Overlay::Timeline { socket: conn.id, scroll: 0 };
                    self.timeline_copy = Some(conn);
                }
            }
            Action::Help => {
                self.overlay = if self.overlay == Overlay::Help { Overlay::None } else { Overlay::Help };
            }
            Action::Close => self.overlay = Overlay::None,
            Action::StepForward
            | Action::StepBack
            | Action::JumpForward
            | Action::JumpBack
            | Action::ToStart
            | Action::ToEnd
            | Action::Faster
            | Action::Slower => return false,
        }
        true
    }

    /// The socket whose timeline is open, as shown.
    pub fn timeline_socket(&self) -> Option<&Conn> {
        match self.overlay {
            Overlay::Timeline { socket, .. } => self.shown().get(socket).or(self.timeline_copy.as_ref()),
            _ => None,
        }
    }
}
