//! The sockets open at a moment of the stream, learned from the stream itself: the
//! inventory's `socket` records, then every transition (a socket is open from its first
//! transition to one into CLOSE). When the flight recorder starts a new file, these are
//! written as its own inventory, with the ids the stream uses, so that a file read alone
//! shows a socket already open as open since its start, not as appearing from nowhere.
//! Pure: fed records, it reads no clock and no file.
//!
//! What it can know is what the stream showed: with a filter that drops some of a
//! socket's transitions (`--state`), a socket whose close was dropped stays listed.
//! At most [`MAX_OPEN`] sockets are remembered; past that, new ones are not, and counted.

use std::collections::HashMap;

use crate::record::{Endpoints, SocketRecord, Timestamp, Transition};
use crate::tcp_state::TcpState;

/// Sockets remembered at most (about 150 bytes each).
pub const MAX_OPEN: usize = 1 << 20;

#[derive(Debug, Default)]
pub struct OpenSockets {
    open: HashMap<u64, SocketRecord>,
    /// Sockets not remembered because [`MAX_OPEN`] were.
    untracked: u64,
}

impl OpenSockets {
    /// A socket of the inventory.
    pub fn socket(&mut self, s: &SocketRecord) {
        if s.state == TcpState::Close {
            self.open.remove(&s.socket);
        } else if self.open.len() < MAX_OPEN || self.open.contains_key(&s.socket) {
            self.open.insert(s.socket, s.clone());
        } else {
            self.untracked += 1;
        }
    }

    /// A transition: the socket is now in its new state, or gone.
    pub fn transition(&mut self, t: &Transition) {
        if t.newstate == TcpState::Close {
            self.open.remove(&t.socket);
            return;
        }
        if let Some(s) = self.open.get_mut(&t.socket) {
            s.state = t.newstate;
            // Ports bound late (a connect's local port) show in later transitions.
            s.ends = Endpoints { netns: s.ends.netns, ..t.ends };
            if t.owner.is_some() {
                s.owner = t.owner;
            }
            return;
        }
        if self.open.len() >= MAX_OPEN {
            self.untracked += 1;
            return;
        }
        self.open.insert(
            t.socket,
            SocketRecord {
                time: t.time,
                socket: t.socket,
                family: t.family,
                ends: t.ends,
                state: t.newstate,
                owner: t.owner,
                // Not in a transition; 0 is "none known" for each.
                inode: 0,
                uid: 0,
                cookie: 0,
            },
        );
    }

    /// The open sockets as an inventory taken at `time`, by socket id.
    pub fn inventory(&self, time: Timestamp) -> Vec<SocketRecord> {
        let mut out: Vec<SocketRecord> = self.open.values().map(|s| SocketRecord { time, ..s.clone() }).collect();
        out.sort_unstable_by_key(|s| s.socket);
        out
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Sockets not remembered for lack of room.
    pub fn untracked(&self) -> u64 {
        self.untracked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Comm, Family, Owner, OwnerSource};

    fn at(ns: u64) -> Timestamp {
        Timestamp { mono_ns: ns, unix_ns: i128::from(ns) }
    }

    fn t(socket: u64, old: TcpState, new: TcpState, sport: u16) -> Transition {
        Transition {
            time: at(socket * 10),
            ends: Endpoints {
                saddr: [127, 0, 0, 1].into(),
                sport,
                daddr: [127, 0, 0, 2].into(),
                dport: 80,
                netns: 4026531840,
            },
            ..Transition::example(socket, old, new)
        }
    }

    #[test]
    fn sockets_are_open_from_their_first_transition_to_close() {
        let mut o = OpenSockets::default();
        let owner = Owner { pid: 9, comm: Comm::new("srv"), source: OwnerSource::Inventory, cgroup: 0 };
        let listener = SocketRecord {
            time: at(0),
            socket: 1,
            family: Family::Ipv4,
            ends: Endpoints { saddr: [0, 0, 0, 0].into(), sport: 80, daddr: [0, 0, 0, 0].into(), dport: 0, netns: 7 },
            state: TcpState::Listen,
            owner: Some(owner),
            inode: 42,
            uid: 1000,
            cookie: 5,
        };
        o.socket(&listener);
        o.transition(&t(2, TcpState::Close, TcpState::SynSent, 0));
        o.transition(&t(2, TcpState::SynSent, TcpState::Established, 5000));
        o.transition(&t(3, TcpState::Close, TcpState::SynSent, 0));
        o.transition(&t(3, TcpState::SynSent, TcpState::Close, 0));
        let inv = o.inventory(at(99));
        assert_eq!(inv.iter().map(|s| (s.socket, s.state, s.ends.sport)).collect::<Vec<_>>(), [
            (1, TcpState::Listen, 80),
            (2, TcpState::Established, 5000)
        ]);
        assert!(inv.iter().all(|s| s.time == at(99)));
        assert_eq!((inv[0].inode, inv[0].uid, inv[0].owner), (42, 1000, Some(owner)), "the inventory's facts are kept");
        o.transition(&t(1, TcpState::Listen, TcpState::Close, 80));
        o.transition(&t(2, TcpState::FinWait2, TcpState::TimeWait, 5000));
        assert_eq!(o.inventory(at(100)).iter().map(|s| (s.socket, s.state)).collect::<Vec<_>>(), [(2, TcpState::TimeWait)]);
        o.transition(&t(2, TcpState::TimeWait, TcpState::Close, 5000));
        assert!(o.is_empty());
        assert_eq!(o.untracked(), 0);
    }
}
