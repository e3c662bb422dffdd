//! The traced command's sockets that were still open when the trace ended
//! (`portrace -- CMD`), and the report of them printed at the end: the question a CI job
//! asks ("does the test suite leave connections in CLOSE_WAIT?"). Each socket's last
//! reported transition says its state, endpoints, owner and since when it has been in
//! that state; a socket whose last transition went into CLOSE is gone.

use std::collections::HashMap;
use std::io::{self, Write};

use crate::record::{Timestamp, Transition};
use crate::tcp_state::TcpState;

/// The sockets whose last transition did not close them.
#[derive(Clone, Debug, Default)]
pub struct StillOpen {
    by_socket: HashMap<u64, Transition>,
}

impl StillOpen {
    pub fn new() -> StillOpen {
        StillOpen::default()
    }

    /// Takes a transition the run reported.
    pub fn add(&mut self, t: &Transition) {
        if t.newstate == TcpState::Close {
            self.by_socket.remove(&t.socket);
        } else {
            self.by_socket.insert(t.socket, t.clone());
        }
    }

    /// The open sockets' last transitions: the states worth a look first (CLOSE_WAIT, then
    /// the other states in which the socket waits for its own process), then by socket id.
    pub fn sockets(&self) -> Vec<&Transition> {
        let mut open: Vec<&Transition> = self.by_socket.values().collect();
        open.sort_by_key(|t| (rank(t.newstate), t.socket));
        open
    }

    /// How many sockets are open in each state, in [`StillOpen::sockets`] order.
    pub fn counts(&self) -> Vec<(TcpState, usize)> {
        let mut counts: Vec<(TcpState, usize)> = Vec::new();
        for t in self.sockets() {
            match counts.last_mut() {
                Some((state, n)) if *state == t.newstate => *n += 1,
                _ => counts.push((t.newstate, 1)),
            }
        }
        counts
    }

    /// The report for stderr: a line with the count per state, then one line per socket
    /// (state, endpoints, owner, time in the state so far). `lost`: transitions lost in
    /// the run, which can make the list wrong; it says so.
    pub fn write_text(&self, w: &mut impl Write, end: Timestamp, lost: u64) -> io::Result<()> {
        let open = self.sockets();
        if open.is_empty() {
            writeln!(w, "portrace: none of the command's sockets was open when the trace ended")?;
        } else {
            let counts: Vec<String> = self.counts().iter().map(|(s, n)| format!("{n} {s}")).collect();
            let n = open.len();
            let verb = if n == 1 { "was" } else { "were" };
            writeln!(w, "portrace: {n} of the command's sockets {verb} open when the trace ended ({}):", counts.join(", "))?;
            let width = open.iter().map(|t| t.newstate.name().len()).max().unwrap_or(0);
            for t in open {
                let owner = match &t.owner {
                    Some(o) => format!("{}[{}]", crate::escape::comm(&o.comm), o.pid),
                    None => "owner unknown".to_string(),
                };
                let secs = end.mono_ns.saturating_sub(t.time.mono_ns) as f64 / 1e9;
                writeln!(
                    w,
                    "  {:<width$}  {} -> {}  {owner}  socket {}, for {secs:.3} s",
                    t.newstate.name(),
                    endpoint(t.ends.saddr, t.ends.sport),
                    endpoint(t.ends.daddr, t.ends.dport),
                    t.socket,
                )?;
            }
        }
        if lost > 0 {
            writeln!(w, "  ({lost} transitions were lost in this run: this list may be wrong)")?;
        }
        Ok(())
    }
}

/// Sort order: a connection the peer closed but the process did not comes first.
fn rank(state: TcpState) -> u8 {
    match state {
        TcpState::CloseWait => 0,
        TcpState::Established => 1,
        TcpState::Listen => 2,
        TcpState::SynSent | TcpState::SynRecv | TcpState::NewSynRecv => 3,
        TcpState::LastAck | TcpState::FinWait1 | TcpState::FinWait2 | TcpState::Closing => 4,
        TcpState::TimeWait => 5,
        TcpState::Close => 6,
    }
}

fn endpoint(addr: std::net::IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(addr, port).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Comm, Owner, OwnerSource};

    fn t(socket: u64, old: TcpState, new: TcpState, at_ms: u64) -> Transition {
        let lo = "127.0.0.1".parse().unwrap();
        Transition::example(socket, old, new)
            .at(Timestamp { mono_ns: at_ms * 1_000_000, unix_ns: 0 })
            .on_cpu(0, Comm::new("swapper/0"))
            .between((lo, 40_000 + socket as u16), (lo, 65_001))
            .owned_by(Some(Owner { pid: 42, comm: Comm::new("tcpload"), source: OwnerSource::Syscall, cgroup: 0 }))
            .in_netns(1)
    }

    fn text(open: &StillOpen, end_ms: u64, lost: u64) -> String {
        let mut out = Vec::new();
        open.write_text(&mut out, Timestamp { mono_ns: end_ms * 1_000_000, unix_ns: 0 }, lost).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn closed_sockets_leave_and_the_last_state_stays() {
        use TcpState::*;
        let mut open = StillOpen::new();
        for tr in [
            t(1, Close, SynSent, 0),
            t(1, SynSent, Established, 1),
            t(1, Established, CloseWait, 2),
            t(2, Close, SynSent, 3),
            t(2, SynSent, Close, 4),
            t(3, Close, Listen, 5),
            t(4, Close, SynSent, 6),
            t(4, SynSent, Established, 7),
            t(4, Established, FinWait1, 8),
            t(4, FinWait1, FinWait2, 9),
            t(4, FinWait2, TimeWait, 10),
        ] {
            open.add(&tr);
        }
        let left: Vec<(u64, TcpState)> = open.sockets().iter().map(|t| (t.socket, t.newstate)).collect();
        assert_eq!(left, vec![(1, CloseWait), (3, Listen), (4, TimeWait)]);
        assert_eq!(open.counts(), vec![(CloseWait, 1), (Listen, 1), (TimeWait, 1)]);
        let report = text(&open, 1002, 0);
        assert_eq!(
            report,
            "portrace: 3 of the command's sockets were open when the trace ended (1 CLOSE_WAIT, 1 LISTEN, 1 TIME_WAIT):\n\
             \x20 CLOSE_WAIT  127.0.0.1:40001 -> 127.0.0.1:65001  tcpload[42]  socket 1, for 1.000 s\n\
             \x20 LISTEN      127.0.0.1:40003 -> 127.0.0.1:65001  tcpload[42]  socket 3, for 0.997 s\n\
             \x20 TIME_WAIT   127.0.0.1:40004 -> 127.0.0.1:65001  tcpload[42]  socket 4, for 0.992 s\n"
        );
        open.add(&t(1, CloseWait, LastAck, 20));
        open.add(&t(1, LastAck, Close, 21));
        assert_eq!(open.counts(), vec![(Listen, 1), (TimeWait, 1)]);
    }

    #[test]
    fn an_empty_list_and_losses_are_said() {
        let open = StillOpen::new();
        assert_eq!(text(&open, 5, 0), "portrace: none of the command's sockets was open when the trace ended\n");
        let mut one = StillOpen::new();
        one.add(&t(7, TcpState::Close, TcpState::Listen, 0));
        let report = text(&one, 0, 3);
        assert!(report.starts_with("portrace: 1 of the command's sockets was open"), "{report}");
        assert!(report.ends_with("(3 transitions were lost in this run: this list may be wrong)\n"), "{report}");
    }
}
