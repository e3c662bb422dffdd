//! RFC 9293's TCP state diagram as data: its eleven states (CLOSED drawn twice, where
//! connections begin and where they end, as in the textbook figure), its twenty edges with
//! their event / action labels, fixed coordinates in the classic layout (CLOSED on top,
//! the handshake below it, ESTABLISHED in the middle, the two ways to close on either
//! side, TIME-WAIT at the bottom), and how the kernel's (old, new) transitions map onto
//! it: onto a standard edge, or onto a Linux edge the RFC's figure does not have.

use crate::tcp_state::TcpState::{self, *};

/// A box of the diagram: a state, with CLOSED twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Place {
    /// CLOSED where connections begin (left by `listen` and `connect`).
    Closed,
    Listen,
    SynSent,
    SynReceived,
    Established,
    FinWait1,
    FinWait2,
    CloseWait,
    Closing,
    LastAck,
    TimeWait,
    /// CLOSED where connections end.
    ClosedEnd,
}

impl Place {
    pub const ALL: [Place; 12] = [
        Place::Closed,
        Place::Listen,
        Place::SynSent,
        Place::SynReceived,
        Place::Established,
        Place::FinWait1,
        Place::FinWait2,
        Place::CloseWait,
        Place::Closing,
        Place::LastAck,
        Place::TimeWait,
        Place::ClosedEnd,
    ];

    /// The RFC's name of the state.
    pub fn rfc_name(self) -> &'static str {
        match self {
            Place::Closed | Place::ClosedEnd => "CLOSED",
            Place::Listen => "LISTEN",
            Place::SynSent => "SYN-SENT",
            Place::SynReceived => "SYN-RECEIVED",
            Place::Established => "ESTABLISHED",
            Place::FinWait1 => "FIN-WAIT-1",
            Place::FinWait2 => "FIN-WAIT-2",
            Place::CloseWait => "CLOSE-WAIT",
            Place::Closing => "CLOSING",
            Place::LastAck => "LAST-ACK",
            Place::TimeWait => "TIME-WAIT",
        }
    }

    /// The kernel's state (as portrace prints it).
    pub fn state(self) -> TcpState {
        match self {
            Place::Closed | Place::ClosedEnd => Close,
            Place::Listen => Listen,
            Place::SynSent => SynSent,
            Place::SynReceived => SynRecv,
            Place::Established => Established,
            Place::FinWait1 => FinWait1,
            Place::FinWait2 => FinWait2,
            Place::CloseWait => CloseWait,
            Place::Closing => Closing,
            Place::LastAck => LastAck,
            Place::TimeWait => TimeWait,
        }
    }

    /// An identifier for DOT and Mermaid.
    pub fn id(self) -> &'static str {
        match self {
            Place::Closed => "CLOSED",
            Place::Listen => "LISTEN",
            Place::SynSent => "SYN_SENT",
            Place::SynReceived => "SYN_RECEIVED",
            Place::Established => "ESTABLISHED",
            Place::FinWait1 => "FIN_WAIT_1",
            Place::FinWait2 => "FIN_WAIT_2",
            Place::CloseWait => "CLOSE_WAIT",
            Place::Closing => "CLOSING",
            Place::LastAck => "LAST_ACK",
            Place::TimeWait => "TIME_WAIT",
            Place::ClosedEnd => "CLOSED_END",
        }
    }

    /// The box's centre in the SVG.
    pub fn center(self) -> (f64, f64) {
        let (x, y) = match self {
            Place::Closed => (580.0, 150.0),
            Place::Listen => (580.0, 300.0),
            Place::SynReceived => (230.0, 450.0),
            Place::SynSent => (930.0, 450.0),
            Place::Established => (580.0, 600.0),
            Place::FinWait1 => (230.0, 750.0),
            Place::CloseWait => (930.0, 750.0),
            Place::FinWait2 => (230.0, 910.0),
            Place::Closing => (580.0, 910.0),
            Place::LastAck => (930.0, 910.0),
            Place::TimeWait => (580.0, 1060.0),
            Place::ClosedEnd => (930.0, 1060.0),
        };
        (x + X0, y)
    }

    /// Where a Linux edge from this box into CLOSED ends: a small CLOSED box of its own
    /// beside it (the centre), in space the standard edges leave free.
    pub fn stub(self) -> Option<(f64, f64)> {
        let (x, y) = self.center();
        match self {
            Place::SynReceived | Place::FinWait1 | Place::FinWait2 => Some((x - 150.0, y)),
            Place::Established => Some((x + 215.0, y)),
            Place::Closing => Some((x + 185.0, y)),
            Place::CloseWait => Some((x + 160.0, y)),
            _ => None,
        }
    }

    /// The box a kernel state is drawn in: as the state left (`end` false) or entered.
    pub fn of(state: TcpState, end: bool) -> Place {
        match state {
            Close if end => Place::ClosedEnd,
            Close => Place::Closed,
            Listen => Place::Listen,
            SynSent => Place::SynSent,
            // The request socket is SYN-RECEIVED's first stage.
            SynRecv | NewSynRecv => Place::SynReceived,
            Established => Place::Established,
            FinWait1 => Place::FinWait1,
            FinWait2 => Place::FinWait2,
            CloseWait => Place::CloseWait,
            Closing => Place::Closing,
            LastAck => Place::LastAck,
            TimeWait => Place::TimeWait,
        }
    }
}

/// How far the figure is moved right, for the Linux edges on its left.
const X0: f64 = 70.0;
/// A box's size in the SVG.
pub const BOX_W: f64 = 160.0;
pub const BOX_H: f64 = 46.0;
/// The SVG's size.
pub const WIDTH: f64 = 1260.0;
/// Where the figure ends and the legend begins.
pub const FIGURE_BOTTOM: f64 = 1110.0;

/// How a label sits against its anchor point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anchor {
    Start,
    Middle,
    End,
}

impl Anchor {
    pub fn svg(self) -> &'static str {
        match self {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        }
    }
}

/// An edge of RFC 9293's diagram.
#[derive(Clone, Copy, Debug)]
pub struct Edge {
    pub from: Place,
    pub to: Place,
    /// What makes it happen (`rcv SYN`, `CLOSE`) and what the TCP does (`snd SYN,ACK`).
    pub event: &'static str,
    pub action: &'static str,
    /// The polyline it is drawn along, relative to nothing (absolute, before [`X0`]).
    path: &'static [(f64, f64)],
    /// Where its label goes (its first line's baseline), and how it sits there.
    label: (f64, f64, Anchor),
    /// How Linux does it differently, when it does.
    pub linux: Option<&'static str>,
}

impl Edge {
    /// `event / action`, or the event alone when the action is nothing.
    pub fn rfc_label(&self) -> String {
        if self.action.is_empty() {
            self.event.to_string()
        } else {
            format!("{} / {}", self.event, self.action)
        }
    }

    /// The kernel transition it stands for.
    pub fn states(&self) -> (TcpState, TcpState) {
        (self.from.state(), self.to.state())
    }

    pub fn path(&self) -> Vec<(f64, f64)> {
        self.path.iter().map(|&(x, y)| (x + X0, y)).collect()
    }

    pub fn label_at(&self) -> (f64, f64, Anchor) {
        (self.label.0 + X0, self.label.1, self.label.2)
    }
}

const CHILD: &str = "the listener stays in LISTEN: a new child socket enters SYN_RECV, created when the handshake's last ACK arrives";
const TIMEWAIT: &str = "a small timewait socket replaces the full socket; portrace follows it through its timer";
const TWO_MSL: &str = "Linux's TIME_WAIT lasts 60 s, not 2 MSL; a new connection to the same address can end it early";

/// The twenty edges, in the RFC's order from top to bottom.
pub const EDGES: [Edge; 20] = [
    Edge { from: Place::Closed, to: Place::Listen, event: "passive OPEN", action: "create TCB", path: &[(555.0, 173.0), (555.0, 277.0)], label: (545.0, 220.0, Anchor::End), linux: None },
    Edge { from: Place::Listen, to: Place::Closed, event: "CLOSE", action: "delete TCB", path: &[(605.0, 277.0), (605.0, 173.0)], label: (615.0, 220.0, Anchor::Start), linux: None },
    Edge { from: Place::Closed, to: Place::SynSent, event: "active OPEN", action: "create TCB, snd SYN", path: &[(660.0, 138.0), (1120.0, 138.0), (1120.0, 445.0), (1010.0, 445.0)], label: (880.0, 112.0, Anchor::Middle), linux: None },
    Edge { from: Place::SynSent, to: Place::Closed, event: "CLOSE", action: "delete TCB", path: &[(960.0, 427.0), (960.0, 162.0), (660.0, 162.0)], label: (970.0, 250.0, Anchor::Start), linux: None },
    Edge { from: Place::Listen, to: Place::SynReceived, event: "rcv SYN", action: "snd SYN,ACK", path: &[(500.0, 312.0), (260.0, 312.0), (260.0, 427.0)], label: (390.0, 334.0, Anchor::Middle), linux: Some(CHILD) },
    Edge { from: Place::Listen, to: Place::SynSent, event: "SEND", action: "snd SYN", path: &[(660.0, 305.0), (900.0, 305.0), (900.0, 427.0)], label: (780.0, 279.0, Anchor::Middle), linux: None },
    Edge { from: Place::SynReceived, to: Place::Listen, event: "rcv RST", action: "", path: &[(200.0, 427.0), (200.0, 285.0), (500.0, 285.0)], label: (350.0, 259.0, Anchor::Middle), linux: None },
    Edge { from: Place::SynSent, to: Place::SynReceived, event: "rcv SYN", action: "snd SYN,ACK", path: &[(850.0, 440.0), (310.0, 440.0)], label: (580.0, 414.0, Anchor::Middle), linux: None },
    Edge { from: Place::SynReceived, to: Place::Established, event: "rcv ACK of SYN", action: "", path: &[(310.0, 462.0), (550.0, 462.0), (550.0, 577.0)], label: (430.0, 484.0, Anchor::Middle), linux: Some("the child is established microseconds after it is created, in the same softirq") },
    Edge { from: Place::SynSent, to: Place::Established, event: "rcv SYN,ACK", action: "snd ACK", path: &[(850.0, 462.0), (610.0, 462.0), (610.0, 577.0)], label: (730.0, 484.0, Anchor::Middle), linux: None },
    Edge { from: Place::SynReceived, to: Place::FinWait1, event: "CLOSE", action: "snd FIN", path: &[(230.0, 473.0), (230.0, 727.0)], label: (220.0, 600.0, Anchor::End), linux: None },
    Edge { from: Place::Established, to: Place::FinWait1, event: "CLOSE", action: "snd FIN", path: &[(550.0, 623.0), (550.0, 740.0), (310.0, 740.0)], label: (420.0, 714.0, Anchor::Middle), linux: None },
    Edge { from: Place::Established, to: Place::CloseWait, event: "rcv FIN", action: "snd ACK", path: &[(610.0, 623.0), (610.0, 740.0), (850.0, 740.0)], label: (740.0, 714.0, Anchor::Middle), linux: None },
    Edge { from: Place::FinWait1, to: Place::FinWait2, event: "rcv ACK of FIN", action: "", path: &[(230.0, 773.0), (230.0, 887.0)], label: (220.0, 830.0, Anchor::End), linux: None },
    Edge { from: Place::FinWait1, to: Place::Closing, event: "rcv FIN", action: "snd ACK", path: &[(310.0, 762.0), (580.0, 762.0), (580.0, 887.0)], label: (440.0, 784.0, Anchor::Middle), linux: None },
    Edge { from: Place::CloseWait, to: Place::LastAck, event: "CLOSE", action: "snd FIN", path: &[(930.0, 773.0), (930.0, 887.0)], label: (940.0, 830.0, Anchor::Start), linux: None },
    Edge { from: Place::FinWait2, to: Place::TimeWait, event: "rcv FIN", action: "snd ACK", path: &[(230.0, 933.0), (230.0, 1060.0), (500.0, 1060.0)], label: (365.0, 1034.0, Anchor::Middle), linux: Some(TIMEWAIT) },
    Edge { from: Place::Closing, to: Place::TimeWait, event: "rcv ACK of FIN", action: "", path: &[(580.0, 933.0), (580.0, 1037.0)], label: (570.0, 985.0, Anchor::End), linux: Some(TIMEWAIT) },
    Edge { from: Place::LastAck, to: Place::ClosedEnd, event: "rcv ACK of FIN", action: "", path: &[(930.0, 933.0), (930.0, 1037.0)], label: (940.0, 985.0, Anchor::Start), linux: None },
    Edge { from: Place::TimeWait, to: Place::ClosedEnd, event: "Timeout=2MSL", action: "delete TCB", path: &[(660.0, 1060.0), (850.0, 1060.0)], label: (755.0, 1034.0, Anchor::Middle), linux: Some(TWO_MSL) },
];

/// Where a kernel transition goes in the diagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapped {
    /// One of [`EDGES`], by index.
    Standard(usize),
    /// An edge RFC 9293's figure does not have, between these boxes.
    Linux { from: Place, to: Place },
}

/// Maps the kernel's `old -> new` onto the diagram.
pub fn map(old: TcpState, new: TcpState) -> Mapped {
    let (from, to) = (Place::of(old, false), Place::of(new, true));
    // FIN-WAIT-1 straight to TIME-WAIT is in the RFC's text, not its figure: the figure
    // goes through CLOSING; a transition into CLOSED from LISTEN or SYN-SENT goes back to
    // the upper CLOSED, as in the figure.
    let to = match (from, to) {
        (Place::Listen | Place::SynSent, Place::ClosedEnd) => Place::Closed,
        _ => to,
    };
    // The request socket is Linux's own: drawn in SYN-RECEIVED's box, on no RFC edge.
    let request = old == NewSynRecv || new == NewSynRecv;
    match EDGES.iter().position(|e| e.from == from && e.to == to && !request) {
        Some(i) => Mapped::Standard(i),
        None => Mapped::Linux { from, to },
    }
}

/// Why a Linux edge happens, in a line for the legend.
pub fn linux_note(old: TcpState, new: TcpState) -> &'static str {
    match (old, new) {
        (FinWait2, Close) => "closed without TIME_WAIT: a reset, or no FIN from the peer within tcp_fin_timeout",
        (SynRecv, Close) => "a new connection dropped before the application used it (a reset)",
        (_, Close) => "closed without the FIN exchange: a reset sent or received, or an error",
        (_, NewSynRecv) | (NewSynRecv, _) => "a request socket, Linux's first stage of SYN-RECEIVED",
        _ => "a transition RFC 9293's figure does not have",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rfc_state_has_a_box_and_edges() {
        let mut names: Vec<&str> = Place::ALL.iter().map(|p| p.rfc_name()).collect();
        names.dedup();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 11, "the eleven states of RFC 9293");
        for p in Place::ALL {
            assert!(EDGES.iter().any(|e| e.from == p || e.to == p), "{p:?} has no edge");
        }
    }

    #[test]
    fn what_the_kernel_reports_maps_onto_the_figure() {
        let std = |old, new| matches!(map(old, new), Mapped::Standard(_));
        for (old, new) in [
            (Close, Listen),
            (Close, SynSent),
            (Listen, SynRecv),
            (SynRecv, Established),
            (SynSent, Established),
            (Established, FinWait1),
            (Established, CloseWait),
            (FinWait1, FinWait2),
            (FinWait2, TimeWait),
            (CloseWait, LastAck),
            (LastAck, Close),
            (TimeWait, Close),
            (Listen, Close),
            (SynSent, Close),
            (Closing, TimeWait),
        ] {
            assert!(std(old, new), "{old} -> {new}");
        }
        assert_eq!(map(Established, Close), Mapped::Linux { from: Place::Established, to: Place::ClosedEnd });
        assert_eq!(map(FinWait2, Close), Mapped::Linux { from: Place::FinWait2, to: Place::ClosedEnd });
        assert_eq!(map(SynSent, Close), Mapped::Standard(3));
    }

    #[test]
    fn edges_start_and_end_on_their_boxes() {
        let on_border = |p: Place, (x, y): (f64, f64)| {
            let (cx, cy) = p.center();
            let (dx, dy) = ((x - cx).abs(), (y - cy).abs());
            (dx <= BOX_W / 2.0 + 0.1 && (dy - BOX_H / 2.0).abs() < 0.1) || (dy <= BOX_H / 2.0 + 0.1 && (dx - BOX_W / 2.0).abs() < 0.1)
        };
        for e in EDGES {
            let path = e.path();
            assert!(on_border(e.from, path[0]), "{:?} -> {:?} starts off its box at {:?}", e.from, e.to, path[0]);
            assert!(on_border(e.to, *path.last().unwrap()), "{:?} -> {:?} ends off its box", e.from, e.to);
        }
    }
}
