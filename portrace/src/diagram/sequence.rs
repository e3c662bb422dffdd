//! One connection as a sequence diagram (`portrace diagram --conn ID`): the socket ID and
//! its peer on the same host (the socket with the reversed addresses and ports, in the
//! same network namespace, alive at the same time) side by side, client on the left,
//! time flowing down, each transition with its time and cause, and the segments that one
//! side's transition sends and the other's receives drawn between them. A peer on another
//! host, or not in the trace, leaves one side drawn, and the figure says so.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use super::svg::esc;
use crate::explain::explain;
use crate::format::HumanDuration;
use crate::record::{Owner, Transition};
use crate::tcp_state::TcpState::{self, *};

/// What a socket is in its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
    Listener,
    /// Seen only after its start: its role is not known.
    Socket,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
            Role::Listener => "listener",
            Role::Socket => "socket",
        }
    }
}

/// One socket of the connection.
#[derive(Clone, Debug)]
pub struct Side {
    pub socket: u64,
    pub role: Role,
    pub local: (IpAddr, u16),
    pub remote: (IpAddr, u16),
    pub owner: Option<Owner>,
    pub transitions: Vec<Transition>,
}

impl Side {
    fn new(socket: u64, transitions: Vec<Transition>) -> Side {
        let bound = transitions.iter().find(|t| t.ends.sport != 0).unwrap_or(&transitions[0]);
        let role = match transitions[0].oldstate {
            _ if transitions.iter().any(|t| t.newstate == Listen) => Role::Listener,
            _ if transitions.iter().any(|t| t.newstate == SynSent || t.oldstate == SynSent) => Role::Client,
            _ if transitions.iter().any(|t| t.oldstate == Listen || t.newstate == SynRecv) => Role::Server,
            _ => Role::Socket,
        };
        Side {
            socket,
            role,
            local: (bound.ends.saddr, bound.ends.sport),
            remote: (bound.ends.daddr, bound.ends.dport),
            owner: transitions.iter().rev().find_map(|t| t.owner),
            transitions,
        }
    }

    /// `client, socket 4, 127.0.0.1:50190, fetcher (pid 14127)`.
    pub fn describe(&self) -> String {
        let owner = match self.owner {
            Some(o) => format!("{} (pid {})", crate::escape::comm(&o.comm), o.pid),
            None => "owner unknown".to_string(),
        };
        format!("{}, socket {}, {}, {owner}", self.role.name(), self.socket, endpoint(self.local))
    }

    /// Whether `t` is of a socket with this one's addresses and ports reversed, in the
    /// same network namespace (or one of them unknown).
    fn reversed_by(&self, t: &Transition) -> bool {
        t.ends.saddr == self.remote.0
            && t.ends.sport == self.remote.1
            && t.ends.daddr == self.local.0
            && t.ends.dport == self.local.1
            && (t.ends.netns == 0 || self.transitions[0].ends.netns == 0 || t.ends.netns == self.transitions[0].ends.netns)
    }

    fn first_ns(&self) -> u64 {
        self.transitions[0].time.mono_ns
    }

    fn last_ns(&self) -> u64 {
        self.transitions[self.transitions.len() - 1].time.mono_ns
    }
}

fn endpoint((addr, port): (IpAddr, u16)) -> String {
    match addr {
        IpAddr::V6(a) => format!("[{a}]:{port}"),
        IpAddr::V4(a) => format!("{a}:{port}"),
    }
}

/// A connection: its two sides, or one and why the other is missing.
#[derive(Clone, Debug)]
pub struct Connection {
    /// The client when there are two sides, else the socket asked for.
    pub left: Side,
    pub right: Option<Side>,
    /// Why there is no right side.
    pub alone: Option<String>,
}

/// Transitions of one socket drawn at most: a connection has a dozen, and the layout
/// pairs rows, so more would only make a figure no one can read, slowly.
pub const SIDE_MAX: usize = 2_000;
/// Transitions of possible peers (sockets with the reversed addresses and ports, over
/// the whole trace, as ports are reused) kept at most while looking for the peer.
pub const PEERS_MAX: usize = 100_000;

/// What `--conn ID` keeps of a trace, in up to three passes over it: first the socket's
/// own transitions ([`Kept::first_pass`]); then, once its addresses are known, the
/// numbers of the sockets that may be its peer ([`Kept::second_pass`]); then all of
/// their transitions ([`Kept::third_pass`]). Nothing else is kept, and each part is
/// capped ([`SIDE_MAX`], [`PEERS_MAX`]), so memory is bounded whatever the trace.
#[derive(Debug)]
pub struct Kept {
    id: u64,
    mine: Vec<Transition>,
    candidates: BTreeSet<u64>,
    peers: BTreeMap<u64, Vec<Transition>>,
    peers_kept: usize,
    /// The lowest and highest socket numbers seen, for an error naming a missing one.
    range: Option<(u64, u64)>,
    side: Option<Side>,
    /// Transitions left out because a cap was reached.
    pub dropped: u64,
}

impl Kept {
    pub fn new(id: u64) -> Kept {
        Kept { id, mine: Vec::new(), candidates: BTreeSet::new(), peers: BTreeMap::new(), peers_kept: 0, range: None, side: None, dropped: 0 }
    }

    pub fn first_pass(&mut self, t: &Transition) {
        self.range = Some(self.range.map_or((t.socket, t.socket), |(lo, hi)| (lo.min(t.socket), hi.max(t.socket))));
        if t.socket == self.id {
            if self.mine.len() < SIDE_MAX {
                self.mine.push(t.clone());
            } else {
                self.dropped += 1;
            }
        }
    }

    /// Ends the first pass; whether a second one can find a peer.
    pub fn wants_second_pass(&mut self) -> bool {
        if self.side.is_none() && !self.mine.is_empty() {
            self.side = Some(Side::new(self.id, std::mem::take(&mut self.mine)));
        }
        self.side.as_ref().is_some_and(|s| s.role != Role::Listener)
    }

    pub fn second_pass(&mut self, t: &Transition) {
        let Some(side) = &self.side else { return };
        if t.socket == self.id || !side.reversed_by(t) || self.candidates.contains(&t.socket) {
            return;
        }
        if self.candidates.len() < PEERS_MAX {
            self.candidates.insert(t.socket);
        } else {
            self.dropped += 1;
        }
    }

    /// Ends the second pass; whether a third one is needed.
    pub fn wants_third_pass(&self) -> bool {
        !self.candidates.is_empty()
    }

    pub fn third_pass(&mut self, t: &Transition) {
        if !self.candidates.contains(&t.socket) {
            return;
        }
        let kept = self.peers.entry(t.socket).or_default();
        if self.peers_kept < PEERS_MAX && kept.len() < SIDE_MAX {
            kept.push(t.clone());
            self.peers_kept += 1;
        } else {
            self.dropped += 1;
        }
    }

    /// The connection: the socket and its peer, the one alive at the same time whose
    /// start is closest to the socket's (ports are reused, so an older or later
    /// connection may match too).
    pub fn connection(mut self) -> Result<Connection, String> {
        self.wants_second_pass();
        let id = self.id;
        let Some(side) = self.side else {
            return Err(match self.range {
                None => format!("no socket {id}: the trace has no transitions"),
                Some((lo, hi)) => format!(
                    "no socket {id} in this trace (its sockets are numbered {lo} to {hi}): pick one from the SOCKET column of `portrace replay FILE`"
                ),
            });
        };
        if side.role == Role::Listener {
            return Ok(Connection { left: side, right: None, alone: Some("a listening socket has no peer".into()) });
        }
        let peer = self
            .peers
            .into_iter()
            .filter(|(_, ts)| !ts.is_empty())
            .map(|(s, ts)| Side::new(s, ts))
            .filter(|p| p.first_ns() <= side.last_ns() && side.first_ns() <= p.last_ns())
            .min_by_key(|p| p.first_ns().abs_diff(side.first_ns()));
        Ok(match peer {
            Some(peer) => {
                let (left, right) = if side.role == Role::Server || peer.role == Role::Client { (peer, side) } else { (side, peer) };
                Connection { left, right: Some(right), alone: None }
            }
            None => Connection {
                alone: Some(format!(
                    "the peer {} is on another host or outside the trace: only this side is drawn",
                    endpoint(side.remote)
                )),
                left: side,
                right: None,
            },
        })
    }
}

/// Finds socket `id` in `all` and its peer, in passes over `all` as over a file.
pub fn find(all: &[Transition], id: u64) -> Result<Connection, String> {
    let mut kept = Kept::new(id);
    all.iter().for_each(|t| kept.first_pass(t));
    if kept.wants_second_pass() {
        all.iter().for_each(|t| kept.second_pass(t));
        if kept.wants_third_pass() {
            all.iter().for_each(|t| kept.third_pass(t));
        }
    }
    kept.connection()
}

/// A segment one side sends with a transition and the other receives with one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Segment {
    HandshakeAck,
    Fin,
    FinAck,
}

impl Segment {
    fn name(self) -> &'static str {
        match self {
            Segment::HandshakeAck => "ACK",
            Segment::Fin => "FIN",
            Segment::FinAck => "ACK of FIN",
        }
    }
}

fn sends(old: TcpState, new: TcpState) -> Option<Segment> {
    match (old, new) {
        (SynSent, Established) => Some(Segment::HandshakeAck),
        (Established, FinWait1) | (CloseWait, LastAck) => Some(Segment::Fin),
        (Established, CloseWait) | (FinWait2, TimeWait) | (FinWait1, Closing) => Some(Segment::FinAck),
        _ => None,
    }
}

fn receives(old: TcpState, new: TcpState) -> Option<Segment> {
    match (old, new) {
        (Listen, SynRecv) => Some(Segment::HandshakeAck),
        (Established, CloseWait) | (FinWait2, TimeWait) | (FinWait1, Closing) => Some(Segment::Fin),
        (FinWait1, FinWait2) | (LastAck, Close) | (Closing, TimeWait) => Some(Segment::FinAck),
        _ => None,
    }
}

/// A row of the figure: a transition of one side.
struct Row<'a> {
    right: bool,
    t: &'a Transition,
}

/// Clock skew allowed between a send and its receipt, recorded on different CPUs.
const SKEW_NS: u64 = 1_000_000;

/// The transitions of both sides in time order, and the segments between them as
/// (sending row, receiving row, segment).
fn layout(c: &Connection) -> (Vec<Row<'_>>, Vec<(usize, usize, Segment)>) {
    let mut rows: Vec<Row<'_>> = c.left.transitions.iter().map(|t| Row { right: false, t }).collect();
    if let Some(r) = &c.right {
        rows.extend(r.transitions.iter().map(|t| Row { right: true, t }));
    }
    rows.sort_by_key(|r| (r.t.time.mono_ns, r.right));
    let mut arrows = Vec::new();
    let mut used = vec![false; rows.len()];
    for (i, rx) in rows.iter().enumerate() {
        let Some(segment) = receives(rx.t.oldstate, rx.t.newstate) else { continue };
        let send = (0..rows.len()).find(|&j| {
            !used[j]
                && rows[j].right != rx.right
                && sends(rows[j].t.oldstate, rows[j].t.newstate) == Some(segment)
                && rows[j].t.time.mono_ns <= rx.t.time.mono_ns.saturating_add(SKEW_NS)
        });
        if let Some(j) = send {
            used[j] = true;
            if j < i {
                arrows.push((j, i, segment));
            }
        }
    }
    (rows, arrows)
}

fn since(t: &Transition, first: u64) -> String {
    format!("+{}", HumanDuration(t.time.mono_ns.saturating_sub(first)))
}

/// [`since`] with `µs` for `us`, for the picture.
fn since_svg(t: &Transition, first: u64) -> String {
    since(t, first).replace("us", "µs")
}

fn title(c: &Connection) -> String {
    match &c.right {
        Some(r) => format!("TCP connection {} ⇄ {}", endpoint(c.left.local), endpoint(r.local)),
        None if c.left.role == Role::Listener => format!("TCP listener {}", endpoint(c.left.local)),
        None => format!("TCP connection {} → {}", endpoint(c.left.local), endpoint(c.left.remote)),
    }
}

/// The connection as text: one line per transition, the client's on the left.
pub fn render_text(c: &Connection) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}", title(c));
    let _ = writeln!(s, "  left:  {}", c.left.describe());
    match (&c.right, &c.alone) {
        (Some(r), _) => {
            let _ = writeln!(s, "  right: {}", r.describe());
        }
        (None, Some(why)) => {
            let _ = writeln!(s, "  right: none: {why}");
        }
        (None, None) => {}
    }
    let _ = writeln!(s);
    let (rows, arrows) = layout(c);
    let first = rows[0].t.time.mono_ns;
    let left = format!("{} (socket {})", c.left.role.name().to_uppercase(), c.left.socket);
    let right = c.right.as_ref().map_or("PEER (not traced)".to_string(), |r| format!("{} (socket {})", r.role.name().to_uppercase(), r.socket));
    let _ = writeln!(s, "{:<9} {:<26} {:<26} CAUSE", "TIME", left, right);
    for (i, row) in rows.iter().enumerate() {
        let edge = format!("{} -> {}", row.t.oldstate.name(), row.t.newstate.name());
        let (l, r) = if row.right { (String::new(), edge) } else { (edge, String::new()) };
        let e = explain(row.t);
        let mut cause = e.cause;
        if let Some(&(j, _, seg)) = arrows.iter().find(|a| a.1 == i) {
            let _ = write!(cause, " (the {} sent at {})", seg.name(), since(rows[j].t, first));
        }
        if let Some(linux) = e.linux {
            let _ = write!(cause, " [Linux: {linux}]");
        }
        let _ = writeln!(s, "{:<9} {:<26} {:<26} {}", since(row.t, first), l, r, cause);
    }
    s
}

/// Splits `text` into lines of at most `width` characters, at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

const SEQ_WIDTH: f64 = 1180.0;
const LEFT_X: f64 = 450.0;
const RIGHT_X: f64 = 730.0;
const TOP: f64 = 150.0;
const WRAP: usize = 52;

/// The colour of the lifeline while in `state`.
fn state_color(state: TcpState) -> &'static str {
    match state {
        Established => "#2a9d8f",
        SynSent | SynRecv | NewSynRecv => "#e9c46a",
        Listen => "#457b9d",
        CloseWait | LastAck | Closing => "#b5838d",
        FinWait1 | FinWait2 | TimeWait => "#6d9dc5",
        Close => "#c5c9d0",
    }
}

/// The connection as an SVG sequence diagram.
pub fn render_svg(c: &Connection) -> String {
    let (rows, arrows) = layout(c);
    let first = rows[0].t.time.mono_ns;
    // Each row as tall as its text.
    let texts: Vec<Vec<String>> = rows.iter().map(|r| wrap(&explain(r.t).to_string(), WRAP)).collect();
    let mut ys = Vec::with_capacity(rows.len());
    let mut y = TOP + 20.0;
    for t in &texts {
        ys.push(y);
        y += 30.0 + 14.0 * t.len() as f64;
    }
    let bottom = y;
    let height = bottom + 50.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{SEQ_WIDTH}" height="{height}" viewBox="0 0 {SEQ_WIDTH} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, "<title>{}</title>", esc(&title(c)));
    let _ = writeln!(
        s,
        r##"<defs><marker id="seg" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" markerHeight="8" markerUnits="userSpaceOnUse" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#333"/></marker></defs>"##
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(s, r##"<text x="24" y="36" font-size="20" font-weight="bold" fill="#1d3557">{}</text>"##, esc(&title(c)));
    let started = crate::clock::Rfc3339::new(rows[0].t.time.unix_ns);
    let _ = writeln!(
        s,
        r##"<text x="24" y="58" fill="#555">from {}; time flows down, not to scale; each transition with its time since the first, and its cause</text>"##,
        started.as_str()
    );
    if let Some(why) = &c.alone {
        let _ = writeln!(s, r##"<text x="24" y="78" fill="#e07000">{}</text>"##, esc(why));
    }
    // Column heads.
    let head = |s: &mut String, x: f64, side: Option<&Side>| {
        let (a, b) = match side {
            Some(side) => (
                format!("{} · socket {}", side.role.name(), side.socket),
                format!(
                    "{} · {}",
                    endpoint(side.local),
                    side.owner.map_or("owner unknown".to_string(), |o| format!("{} ({})", crate::escape::comm(&o.comm), o.pid))
                ),
            ),
            None => ("peer, not traced".to_string(), endpoint(c.left.remote)),
        };
        let _ = writeln!(
            s,
            r##"<g class="head"><text x="{x}" y="{}" text-anchor="middle" font-size="15" font-weight="bold" fill="#1d3557">{}</text><text x="{x}" y="{}" text-anchor="middle" fill="#444">{}</text></g>"##,
            TOP - 32.0,
            esc(&a),
            TOP - 14.0,
            esc(&b)
        );
    };
    head(&mut s, LEFT_X, Some(&c.left));
    head(&mut s, RIGHT_X, c.right.as_ref());
    // Lifelines: one segment per state, coloured by it.
    for (right, x) in [(false, LEFT_X), (true, RIGHT_X)] {
        let mine: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].right == right).collect();
        if mine.is_empty() {
            let _ = writeln!(s, r##"<line x1="{x}" y1="{TOP}" x2="{x}" y2="{bottom}" stroke="#c5c9d0" stroke-dasharray="4 4"/>"##);
            continue;
        }
        let first_state = rows[mine[0]].t.oldstate;
        let mut from_y = TOP;
        let mut state = first_state;
        for &i in &mine {
            let _ = writeln!(
                s,
                r#"<line x1="{x}" y1="{from_y}" x2="{x}" y2="{}" stroke="{}" stroke-width="6"/>"#,
                ys[i],
                state_color(state)
            );
            from_y = ys[i];
            state = rows[i].t.newstate;
        }
        let _ = writeln!(s, r#"<line x1="{x}" y1="{from_y}" x2="{x}" y2="{bottom}" stroke="{}" stroke-width="6"/>"#, state_color(state));
    }
    for &(j, i, seg) in &arrows {
        let (x1, x2) = if rows[j].right { (RIGHT_X - 6.0, LEFT_X + 6.0) } else { (LEFT_X + 6.0, RIGHT_X - 6.0) };
        let (y1, y2) = (ys[j], ys[i]);
        let _ = writeln!(
            s,
            r##"<g class="segment" data-segment="{}"><line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#333" stroke-width="1.3" marker-end="url(#seg)"/><text x="{}" y="{}" text-anchor="middle" font-size="11" fill="#333">{}</text></g>"##,
            seg.name(),
            (x1 + x2) / 2.0,
            (y1 + y2) / 2.0 - 5.0,
            seg.name()
        );
    }
    for (i, row) in rows.iter().enumerate() {
        let y = ys[i];
        let (x, tx, anchor) = if row.right { (RIGHT_X, RIGHT_X + 18.0, "start") } else { (LEFT_X, LEFT_X - 18.0, "end") };
        let _ = write!(
            s,
            r##"<g class="transition" data-socket="{}" data-from="{}" data-to="{}"><circle cx="{x}" cy="{y}" r="6" fill="white" stroke="#1d3557" stroke-width="2"/><text x="20" y="{}" font-size="11" fill="#555">{}</text><text x="{tx}" y="{}" text-anchor="{anchor}" font-weight="bold" fill="#1d3557">{} → {}</text>"##,
            row.t.socket,
            row.t.oldstate.name(),
            row.t.newstate.name(),
            y + 4.0,
            esc(&since_svg(row.t, first)),
            y + 4.0,
            row.t.oldstate.name(),
            row.t.newstate.name(),
        );
        for (k, line) in texts[i].iter().enumerate() {
            let _ = write!(
                s,
                r##"<text x="{tx}" y="{}" text-anchor="{anchor}" font-size="11" fill="#444">{}</text>"##,
                y + 20.0 + 14.0 * k as f64,
                esc(line)
            );
        }
        let _ = writeln!(s, "</g>");
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagram::stats::tests::tr;
    use crate::record::Endpoints;
    use std::net::Ipv4Addr;

    fn at(socket: u64, ns: u64, old: TcpState, new: TcpState, local: u16, remote: u16) -> Transition {
        let t = tr(socket, ns, old, new, Some(1000));
        Transition { ends: Endpoints { sport: local, dport: remote, ..t.ends }, ..t }
    }

    /// A client (socket 4, port 50190) and the server's child (socket 5, port 7180) on
    /// loopback, the client closing first; an older connection on the same ports (socket
    /// 2), and a listener (socket 1).
    fn trace() -> Vec<Transition> {
        vec![
            at(1, 0, Close, Listen, 7180, 0),
            at(2, 10, LastAck, Close, 7180, 50190),
            at(4, 1_000_000_000, Close, SynSent, 0, 7180),
            at(4, 1_000_370_000, SynSent, Established, 50190, 7180),
            at(5, 1_000_383_000, Listen, SynRecv, 7180, 50190),
            at(5, 1_000_397_000, SynRecv, Established, 7180, 50190),
            at(4, 1_000_430_000, Established, FinWait1, 50190, 7180),
            at(5, 1_000_440_000, Established, CloseWait, 7180, 50190),
            at(4, 1_000_450_000, FinWait1, FinWait2, 50190, 7180),
            at(5, 1_000_500_000, CloseWait, LastAck, 7180, 50190),
            at(4, 1_000_510_000, FinWait2, TimeWait, 50190, 7180),
            at(5, 1_000_520_000, LastAck, Close, 7180, 50190),
        ]
    }

    #[test]
    fn the_peer_is_the_reversed_socket_of_the_same_time() {
        let all = trace();
        for id in [4, 5] {
            let c = find(&all, id).unwrap();
            assert_eq!((c.left.socket, c.left.role), (4, Role::Client), "asked for {id}");
            let right = c.right.expect("a peer");
            assert_eq!((right.socket, right.role), (5, Role::Server));
            assert_eq!(c.left.local, (IpAddr::V4(Ipv4Addr::LOCALHOST), 50190), "the port bound after connect");
        }
    }

    #[test]
    fn a_socket_alone_says_why() {
        let all = trace();
        let listener = find(&all, 1).unwrap();
        assert!(listener.right.is_none() && listener.alone.unwrap().contains("listening"));
        let only: Vec<Transition> = all.iter().filter(|t| t.socket == 4).cloned().collect();
        let c = find(&only, 4).unwrap();
        assert!(c.alone.unwrap().contains("127.0.0.1:7180 is on another host"));
        let err = find(&all, 99).unwrap_err();
        assert!(err.contains("no socket 99") && err.contains("1 to 5"), "{err}");
    }

    #[test]
    fn only_the_socket_and_its_possible_peers_are_kept_and_capped() {
        // 200,000 connections on other ports around the one asked for: nothing of them is
        // kept, and a socket with too many transitions keeps the first SIDE_MAX.
        let mut all = trace();
        for i in 0..200_000u64 {
            all.push(at(100 + i, 2_000_000_000 + i, Close, SynSent, 1024 + (i % 50_000) as u16, 9));
        }
        for i in 0..(SIDE_MAX as u64 + 10) {
            all.push(at(5, 1_000_600_000 + i, Established, Established, 7180, 50190));
        }
        let mut kept = Kept::new(4);
        all.iter().for_each(|t| kept.first_pass(t));
        assert!(kept.wants_second_pass());
        all.iter().for_each(|t| kept.second_pass(t));
        assert!(kept.wants_third_pass());
        all.iter().for_each(|t| kept.third_pass(t));
        assert_eq!(kept.peers.keys().copied().collect::<Vec<_>>(), [2, 5], "only reversed sockets");
        assert_eq!(kept.peers_kept, 1 + SIDE_MAX);
        // Socket 5's five, then SIDE_MAX + 10 more: the last 15 are past the cap.
        assert_eq!(kept.dropped, 15);
        let c = kept.connection().unwrap();
        assert_eq!(c.right.unwrap().transitions.len(), SIDE_MAX);
    }

    #[test]
    fn segments_go_from_the_sender_to_the_receiver() {
        let c = find(&trace(), 4).unwrap();
        let (rows, arrows) = layout(&c);
        let named: Vec<(String, String, &str)> = arrows
            .iter()
            .map(|&(j, i, seg)| {
                let e = |r: &Row<'_>| format!("{}:{}->{}", r.t.socket, r.t.oldstate.name(), r.t.newstate.name());
                (e(&rows[j]), e(&rows[i]), seg.name())
            })
            .collect();
        let expect = |a: &str, b: &str, s: &'static str| (a.to_string(), b.to_string(), s);
        assert_eq!(
            named,
            vec![
                expect("4:SYN_SENT->ESTABLISHED", "5:LISTEN->SYN_RECV", "ACK"),
                expect("4:ESTABLISHED->FIN_WAIT1", "5:ESTABLISHED->CLOSE_WAIT", "FIN"),
                expect("5:ESTABLISHED->CLOSE_WAIT", "4:FIN_WAIT1->FIN_WAIT2", "ACK of FIN"),
                expect("5:CLOSE_WAIT->LAST_ACK", "4:FIN_WAIT2->TIME_WAIT", "FIN"),
                expect("4:FIN_WAIT2->TIME_WAIT", "5:LAST_ACK->CLOSE", "ACK of FIN"),
            ]
        );
    }

    #[test]
    fn times_at_the_end_of_the_clock_are_drawn_too() {
        // A recording is anyone's file: its times can be anything, up to the last
        // nanosecond a u64 holds.
        // (The trace's last transition comes 1,000,520,000 ns after its first.)
        let shift = u64::MAX - 1_000_520_001;
        let late: Vec<Transition> = trace()
            .into_iter()
            .map(|t| Transition { time: crate::record::Timestamp { mono_ns: shift + t.time.mono_ns, ..t.time }, ..t })
            .collect();
        let c = find(&late, 4).unwrap();
        assert_eq!(layout(&c).1.len(), 5, "every segment found");
        assert!(render_text(&c).contains("FIN_WAIT2"));
        assert!(render_svg(&c).contains("</svg>"));
    }

    #[test]
    fn text_sequence_snapshot() {
        let c = find(&trace(), 5).unwrap();
        insta::assert_snapshot!(render_text(&c));
    }

    #[test]
    fn svg_sequence_has_every_transition() {
        let c = find(&trace(), 4).unwrap();
        let svg = render_svg(&c);
        let doc = roxmltree::Document::parse(&svg).expect("the SVG is XML");
        let transitions: Vec<(String, String)> = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("transition"))
            .map(|n| (n.attribute("data-socket").unwrap().to_string(), n.attribute("data-to").unwrap().to_string()))
            .collect();
        assert_eq!(transitions.len(), 10);
        assert_eq!(doc.descendants().filter(|n| n.attribute("class") == Some("segment")).count(), 5);
        let text: String = doc.descendants().filter(|n| n.is_text()).map(|n| n.text().unwrap()).collect();
        assert!(text.contains("received SYN-ACK, sent ACK"), "causes are written");
    }
}
