//! Taking records in: each inventory socket, transition and loss updates the rows, the
//! transition matrix, the loss counts and the overall time in state as it comes.

use std::collections::HashMap;
use std::net::IpAddr;

use super::analysis::keep_longest;
use super::*;
use crate::record::{Lost, SocketRecord, Transition};

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
            ends: s.ends,
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
                    ends: t.ends,
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
            match self.find_listener(t.ends.netns, t.ends.saddr, t.ends.sport) {
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
        c.ends = c.ends.updated_by(t.ends);
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
            match self.find_listener(t.ends.netns, t.ends.saddr, t.ends.sport) {
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
            self.listeners.entry(c.ends.sport).or_default().push(row);
        }
    }

    /// The listener a socket at `addr:port` in `netns` belongs to; see the module
    /// documentation for the rule.
    pub(super) fn find_listener(&self, netns: u32, addr: IpAddr, port: u16) -> Option<usize> {
        let rows = self.listeners.get(&port)?;
        rows.iter()
            .copied()
            .filter(|&row| {
                let l = &self.conns[row];
                (l.ends.netns == netns || l.ends.netns == 0 || netns == 0)
                    && (l.ends.saddr == addr || l.ends.saddr.is_unspecified())
            })
            .max_by_key(|&row| {
                let l = &self.conns[row];
                let listening = l.now.is_some_and(|now| now.state == TcpState::Listen);
                (listening, l.ends.saddr == addr, row)
            })
    }

    fn seen(&mut self, time: Timestamp) {
        self.first = Some(self.first.map_or(time, |first| first.min(time)));
        self.last = Some(self.last.map_or(time, |last| last.max(time)));
    }
}


/// `time` moved back by `ns`.
fn earlier(time: Timestamp, ns: u64) -> Timestamp {
    let mono_ns = time.mono_ns.saturating_sub(ns);
    Timestamp { mono_ns, unix_ns: time.unix_ns.saturating_sub(i128::from(time.mono_ns - mono_ns)) }
}
