//! The kernel matrix's scenario, as data and a check: [`Plan`] names the processes and
//! ports of one run (two servers, three clients, every port fixed in advance with
//! `--bind`), [`Plan::expected`] says which sockets it makes and every transition,
//! address, port and owner portrace must report for each, [`Filters::keep`] narrows that to
//! what a filtered portrace keeps, and [`check`] compares what portrace printed with it
//! and lists every difference in a line a person can act on. Pure: no process, clock or
//! file, so every rule is unit-tested without root; `bin/vm_scenario.rs` drives it.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::records::{by_socket, Owner, Transition, OWN_SYSCALL_EDGES};
use crate::seq::{
    CHILD_ACTIVE_ENDED, CHILD_PASSIVE, CLIENT_ACTIVE_ENDED, CLIENT_PASSIVE, LISTENER, REFUSED,
};

/// The loopback address every socket of the scenario uses.
pub const ADDR: &str = "127.0.0.1";
/// A listener's remote end.
const NO_PEER: (&str, u16) = ("0.0.0.0", 0);

/// One process of the scenario: its pid and command name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub comm: String,
}

/// Who and where: the first server (its client closes first) listens on `ports.listen_a`,
/// the second (it closes first) on `ports.listen_b`; `refused` is a port nobody listens
/// on; each client connects from its own fixed port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub ports: Ports,
    pub server_a: Process,
    pub server_b: Process,
    pub client_a: Process,
    pub client_b: Process,
    pub client_refused: Process,
}

/// The scenario's ports: three it connects to, three it connects from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    pub listen_a: u16,
    pub listen_b: u16,
    pub refused: u16,
    pub client_a: u16,
    pub client_b: u16,
    pub client_refused: u16,
}

impl Ports {
    /// Six consecutive ports from `base`.
    pub fn from_base(base: u16) -> Ports {
        Ports {
            listen_a: base,
            listen_b: base + 1,
            refused: base + 2,
            client_a: base + 3,
            client_b: base + 4,
            client_refused: base + 5,
        }
    }
}

/// One socket the scenario makes and everything portrace must say about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedSocket {
    /// Names it in messages: `"listener A"`, `"child B"`, `"client refused"`.
    pub role: String,
    /// Its transitions, `OLD->NEW`, in order.
    pub edges: Vec<String>,
    /// The local and remote ends every one of its transitions carries.
    pub local: (String, u16),
    pub remote: (String, u16),
    pub owner: Process,
    /// `owner_source` until the owner's own system call: `"syscall"` or `"listener"`.
    pub first_source: &'static str,
    /// `reason` and `error` of its transition into CLOSE, when the scenario fixes them.
    pub close_reason: Option<(&'static str, Option<&'static str>)>,
}

impl ExpectedSocket {
    fn new(
        role: &str,
        edges: &[&str],
        local: u16,
        remote: (&str, u16),
        owner: &Process,
        first_source: &'static str,
    ) -> ExpectedSocket {
        ExpectedSocket {
            role: role.to_string(),
            edges: edges.iter().map(|e| e.to_string()).collect(),
            local: (ADDR.to_string(), local),
            remote: (remote.0.to_string(), remote.1),
            owner: owner.clone(),
            first_source,
            close_reason: None,
        }
    }

    /// The edge that tells this socket from another on the same local port: its first.
    fn key(&self) -> Option<(u16, &str)> {
        self.edges.first().map(|e| (self.local.1, e.as_str()))
    }
}

impl Plan {
    /// Every socket of the scenario with all its transitions, as an unfiltered portrace
    /// must show them.
    pub fn expected(&self) -> Vec<ExpectedSocket> {
        let p = &self.ports;
        let mut refused = ExpectedSocket::new(
            "client refused",
            REFUSED,
            p.client_refused,
            (ADDR, p.refused),
            &self.client_refused,
            "syscall",
        );
        refused.close_reason = Some(("refused", Some("ECONNREFUSED")));
        // The run ends each TIME_WAIT by deleting the namespace while portrace traces: a
        // Linux before 6.11 shows an orphan's move into TIME_WAIT only when its timewait
        // socket ends, and the scenario cannot wait the 60 s of a natural end.
        let killed = |mut socket: ExpectedSocket| {
            socket.close_reason = Some(("time_wait_killed", None));
            socket
        };
        vec![
            ExpectedSocket::new(
                "listener A",
                LISTENER,
                p.listen_a,
                NO_PEER,
                &self.server_a,
                "syscall",
            ),
            ExpectedSocket::new(
                "child A (client closes first)",
                CHILD_PASSIVE,
                p.listen_a,
                (ADDR, p.client_a),
                &self.server_a,
                "listener",
            ),
            killed(ExpectedSocket::new(
                "client A (closes first, TIME_WAIT)",
                CLIENT_ACTIVE_ENDED,
                p.client_a,
                (ADDR, p.listen_a),
                &self.client_a,
                "syscall",
            )),
            ExpectedSocket::new(
                "listener B",
                LISTENER,
                p.listen_b,
                NO_PEER,
                &self.server_b,
                "syscall",
            ),
            killed(ExpectedSocket::new(
                "child B (server closes first, TIME_WAIT)",
                CHILD_ACTIVE_ENDED,
                p.listen_b,
                (ADDR, p.client_b),
                &self.server_b,
                "listener",
            )),
            ExpectedSocket::new(
                "client B (server closes first)",
                CLIENT_PASSIVE,
                p.client_b,
                (ADDR, p.listen_b),
                &self.client_b,
                "syscall",
            ),
            refused,
        ]
    }
}

/// portrace's filter flags as the scenario sets them, and the model of what they keep:
/// every non-empty list must match (values within a list are alternatives); ports match
/// either end, owners by pid and command name, states a transition into or out of one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    pub addr: Option<String>,
    pub ports: Vec<u16>,
    pub pids: Vec<u32>,
    pub comm: Option<String>,
    pub states: Vec<String>,
}

impl Filters {
    /// The filtered run's choice for `plan`: each filter but `--addr` (all of the scenario
    /// is on loopback) leaves out something the others keep. `--port` drops server B's
    /// sockets (their owner is in `--pid`, their name is `--comm`'s); `--comm` drops server
    /// A's listener and child (its pid is in `--pid`, its port in `--port`, LISTEN in
    /// `--state`); `--pid` drops the refused client (its port is in `--port`); `--state`
    /// drops client A's ESTABLISHED -> FIN_WAIT1. What is left is client A's connect, its
    /// establishment, and its way into and out of TIME_WAIT.
    pub fn narrowing(plan: &Plan, client_comm: &str) -> Filters {
        Filters {
            addr: Some(format!("{ADDR}/8")),
            ports: vec![plan.ports.listen_a, plan.ports.refused],
            pids: vec![plan.server_a.pid, plan.server_b.pid, plan.client_a.pid],
            comm: Some(client_comm.to_string()),
            states: ["LISTEN", "SYN_SENT", "FIN_WAIT2", "TIME_WAIT"]
                .map(String::from)
                .to_vec(),
        }
    }

    /// portrace's command-line flags for these filters.
    pub fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(addr) = &self.addr {
            args.extend(["--addr".to_string(), addr.clone()]);
        }
        for port in &self.ports {
            args.extend(["--port".to_string(), port.to_string()]);
        }
        for pid in &self.pids {
            args.extend(["--pid".to_string(), pid.to_string()]);
        }
        if let Some(comm) = &self.comm {
            args.extend(["--comm".to_string(), comm.clone()]);
        }
        for state in &self.states {
            args.extend(["--state".to_string(), state.clone()]);
        }
        args
    }

    /// What of `sockets` these filters keep: sockets whose owner or ports do not match
    /// vanish, and of the others only the transitions into or out of a kept state remain.
    /// `--addr` is not modelled beyond the loopback network every socket here is in.
    pub fn keep(&self, sockets: &[ExpectedSocket]) -> Vec<ExpectedSocket> {
        sockets
            .iter()
            .filter(|s| {
                (self.ports.is_empty()
                    || self.ports.contains(&s.local.1)
                    || self.ports.contains(&s.remote.1))
                    && (self.pids.is_empty() || self.pids.contains(&s.owner.pid))
                    && self.comm.as_ref().is_none_or(|c| *c == s.owner.comm)
            })
            .filter_map(|s| {
                let edges: Vec<String> = s
                    .edges
                    .iter()
                    .filter(|edge| {
                        self.states.is_empty()
                            || edge
                                .split("->")
                                .any(|state| self.states.iter().any(|k| k == state))
                    })
                    .cloned()
                    .collect();
                (!edges.is_empty()).then(|| ExpectedSocket { edges, ..s.clone() })
            })
            .collect()
    }
}

/// How one run compared with what was expected.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// `"unfiltered"` or `"filtered"`.
    pub mode: String,
    /// Transitions expected and transitions observed.
    pub expected: usize,
    pub observed: usize,
    /// Whether a transition into TIME_WAIT was expected, and whether one was seen on a
    /// socket that should have it.
    pub time_wait_expected: bool,
    pub time_wait_seen: bool,
    /// Each difference, one line each; empty when the run passed.
    pub problems: Vec<String>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// The one-line JSON the host reads.
    pub fn to_json(&self, kernel: &str) -> Value {
        json!({
            "type": "vm_scenario",
            "mode": self.mode,
            "kernel": kernel,
            "pass": self.passed(),
            "expected": self.expected,
            "observed": self.observed,
            "time_wait_expected": self.time_wait_expected,
            "time_wait_seen": self.time_wait_seen,
            "problems": self.problems,
        })
    }

    /// An outcome for a run that could not be compared at all (portrace did not start, a
    /// workload process failed): `why` is the problem.
    pub fn broken(mode: &str, expected: &[ExpectedSocket], why: String) -> Outcome {
        Outcome {
            mode: mode.to_string(),
            expected: expected.iter().map(|s| s.edges.len()).sum(),
            observed: 0,
            time_wait_expected: expects_time_wait(expected),
            time_wait_seen: false,
            problems: vec![why],
        }
    }
}

fn expects_time_wait(expected: &[ExpectedSocket]) -> bool {
    expected
        .iter()
        .any(|s| s.edges.iter().any(|e| e.ends_with("->TIME_WAIT")))
}

fn end(addr: &str, port: u16) -> String {
    format!("{addr}:{port}")
}

/// Compares the transitions portrace printed with `expected`: every expected socket shows
/// up exactly once with exactly its transitions in order, each carrying the socket's local
/// and remote address and port (so a `LISTEN -> SYN_RECV` with remote port 0 is caught),
/// its owner's pid and command, the right `owner_source`, and, where fixed, the reason
/// and error of its end; no other socket shows up; no transition was reported lost.
pub fn check(
    mode: &str,
    expected: &[ExpectedSocket],
    observed: &[Transition],
    lost: u64,
) -> Outcome {
    let mut problems = Vec::new();
    if lost > 0 {
        problems.push(format!("portrace reported {lost} lost transitions"));
    }
    // Observed sockets by (local port, first edge): unique among the scenario's sockets.
    let mut found: BTreeMap<(u16, String), Vec<_>> = BTreeMap::new();
    for socket in by_socket(observed) {
        let key = (socket.local_port(), socket.first().edge());
        found.entry(key).or_default().push(socket);
    }
    let mut time_wait_seen = false;
    for want in expected {
        let Some((port, first)) = want.key() else {
            continue;
        };
        let Some(sockets) = found.remove(&(port, first.to_string())) else {
            problems.push(format!(
                "{}: missing (expected [{}] on local port {port})",
                want.role,
                want.edges.join(", ")
            ));
            continue;
        };
        // A child the kernel created twice for one request (two CPUs handled the
        // handshake's last ACK at once, as a retransmitted SYN-ACK under slow emulation
        // can cause): the one that lost the race is closed at once. Both are real, and
        // portrace shows both; the connection's child is the other one.
        let (raced, sockets): (Vec<_>, Vec<_>) = sockets.into_iter().partition(|s| {
            first == "LISTEN->SYN_RECV" && s.edges() == ["LISTEN->SYN_RECV", "SYN_RECV->CLOSE"]
        });
        let sockets = if sockets.is_empty() { raced } else { sockets };
        if sockets.len() > 1 {
            problems.push(format!(
                "{}: {} sockets instead of one (ids {:?})",
                want.role,
                sockets.len(),
                sockets.iter().map(|s| s.socket).collect::<Vec<_>>()
            ));
        }
        let socket = &sockets[0];
        let edges = socket.edges();
        if edges != want.edges {
            problems.push(format!(
                "{}: transitions [{}], expected [{}]",
                want.role,
                edges.join(", "),
                want.edges.join(", ")
            ));
        }
        time_wait_seen |= edges.iter().any(|e| e.ends_with("->TIME_WAIT"))
            && want.edges.iter().any(|e| e.ends_with("->TIME_WAIT"));
        let owner = Owner {
            who: &want.role,
            pid: want.owner.pid,
            comm: &want.owner.comm,
            first: want.first_source,
            own: OWN_SYSCALL_EDGES,
        };
        for (t, source) in socket.transitions.iter().zip(owner.sources(socket)) {
            let what = format!("{} {}", want.role, t.edge());
            let (local, remote) = (end(&t.saddr, t.sport), end(&t.daddr, t.dport));
            let (want_local, want_remote) = (
                end(&want.local.0, want.local.1),
                end(&want.remote.0, want.remote.1),
            );
            if local != want_local || remote != want_remote {
                problems.push(format!(
                    "{what}: {local} -> {remote}, expected {want_local} -> {want_remote}"
                ));
            }
            if t.owner_pid != Some(owner.pid)
                || t.owner_comm.as_deref() != Some(owner.comm)
                || t.owner_source != source
            {
                problems.push(format!(
                    "{what}: owner {}/{}/{}, expected {}/{}/{source} (on the CPU: {}/{})",
                    t.owner_pid.map_or("-".into(), |p| p.to_string()),
                    t.owner_comm.as_deref().unwrap_or("-"),
                    t.owner_source,
                    owner.pid,
                    owner.comm,
                    t.pid,
                    t.comm
                ));
            }
            if let Some((reason, error)) = want.close_reason.filter(|_| t.newstate == "CLOSE") {
                if t.reason.as_deref() != Some(reason) || t.error.as_deref() != error {
                    problems.push(format!(
                        "{what}: reason {:?} error {:?}, expected {reason:?} {error:?}",
                        t.reason, t.error
                    ));
                }
            }
        }
    }
    for ((port, first), sockets) in found {
        for socket in sockets {
            problems.push(format!(
                "unexpected socket {} (local port {port}, first {first}): [{}]",
                socket.socket,
                socket.edges().join(", ")
            ));
        }
    }
    let time_wait_expected = expects_time_wait(expected);
    if time_wait_expected && !time_wait_seen {
        problems.push("no transition into TIME_WAIT was seen".into());
    }
    Outcome {
        mode: mode.to_string(),
        expected: expected.iter().map(|s| s.edges.len()).sum(),
        observed: observed.len(),
        time_wait_expected,
        time_wait_seen,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(pid: u32, comm: &str) -> Process {
        Process {
            pid,
            comm: comm.into(),
        }
    }

    fn plan() -> Plan {
        Plan {
            ports: Ports::from_base(65400),
            server_a: process(10, "vmsrv"),
            server_b: process(11, "tcpload"),
            client_a: process(20, "tcpload"),
            client_b: process(21, "tcpload"),
            client_refused: process(22, "tcpload"),
        }
    }

    /// The transitions a correct portrace prints for `sockets`, one socket id each.
    fn perfect(sockets: &[ExpectedSocket]) -> Vec<Transition> {
        let mut out = Vec::new();
        for (id, s) in sockets.iter().enumerate() {
            let owner = Owner {
                who: &s.role,
                pid: s.owner.pid,
                comm: &s.owner.comm,
                first: s.first_source,
                own: OWN_SYSCALL_EDGES,
            };
            let mut acted = false;
            for edge in &s.edges {
                acted |= owner.own.contains(&edge.as_str());
                let (old, new) = edge.split_once("->").expect("an edge");
                let closing = new == "CLOSE";
                out.push(Transition {
                    time: "2026-12-07T00:00:00.000000Z".into(),
                    ts_ns: out.len() as u64,
                    pid: 0,
                    comm: "swapper/0".into(),
                    socket: id as u64 + 1,
                    family: "ipv4".into(),
                    saddr: s.local.0.clone(),
                    sport: s.local.1,
                    daddr: s.remote.0.clone(),
                    dport: s.remote.1,
                    oldstate: old.into(),
                    newstate: new.into(),
                    prev_state_us: None,
                    prev_state_at_least: false,
                    owner_pid: Some(s.owner.pid),
                    owner_comm: Some(s.owner.comm.clone()),
                    owner_source: if acted { "syscall" } else { s.first_source }.into(),
                    reason: s.close_reason.filter(|_| closing).map(|r| r.0.into()),
                    error: s
                        .close_reason
                        .filter(|_| closing)
                        .and_then(|r| r.1.map(String::from)),
                    retransmits: 0,
                });
            }
        }
        out
    }

    #[test]
    fn a_child_the_kernel_dropped_after_losing_a_race_is_no_duplicate() {
        let expected = plan().expected();
        let mut seen = perfect(&expected);
        let child = seen
            .iter()
            .find(|t| t.oldstate == "LISTEN" && t.newstate == "SYN_RECV")
            .expect("a child in the plan")
            .clone();
        let mut lost_race = child.clone();
        lost_race.socket = 77;
        let mut closed = child.clone();
        closed.socket = 77;
        closed.oldstate = "SYN_RECV".into();
        closed.newstate = "CLOSE".into();
        seen.push(lost_race);
        seen.push(closed.clone());
        let outcome = check("unfiltered", &expected, &seen, 0);
        assert_eq!(outcome.problems, Vec::<String>::new());
        // Any other second child is still a duplicate.
        let mut established = closed;
        established.newstate = "ESTABLISHED".into();
        seen.pop();
        seen.push(established);
        let outcome = check("unfiltered", &expected, &seen, 0);
        assert!(!outcome.problems.is_empty(), "a second child that went on is a duplicate");
        assert!(outcome.problems.join("\n").contains("2 sockets instead of one"), "{:?}", outcome.problems);
    }

    #[test]
    fn a_perfect_run_passes_with_time_wait_seen() {
        let expected = plan().expected();
        let outcome = check("unfiltered", &expected, &perfect(&expected), 0);
        assert_eq!(outcome.problems, Vec::<String>::new());
        assert_eq!((outcome.expected, outcome.observed), (28, 28));
        assert!(outcome.time_wait_seen && outcome.time_wait_expected);
        assert_eq!(outcome.to_json("6.1.0-50-amd64")["pass"], true);
    }

    #[test]
    fn remote_port_zero_on_syn_recv_fails() {
        let expected = plan().expected();
        let mut seen = perfect(&expected);
        let syn_recv = seen
            .iter_mut()
            .find(|t| t.edge() == "LISTEN->SYN_RECV" && t.sport == 65400)
            .expect("child A's first transition");
        syn_recv.dport = 0;
        let outcome = check("unfiltered", &expected, &seen, 0);
        assert_eq!(
            outcome.problems,
            [
                "child A (client closes first) LISTEN->SYN_RECV: 127.0.0.1:65400 -> 127.0.0.1:0, \
              expected 127.0.0.1:65400 -> 127.0.0.1:65403"
            ]
        );
        assert!(!outcome.passed());
    }

    #[test]
    fn owner_of_the_cpu_instead_of_the_socket_fails() {
        let expected = plan().expected();
        let mut seen = perfect(&expected);
        let t = seen
            .iter_mut()
            .find(|t| t.edge() == "ESTABLISHED->CLOSE_WAIT" && t.sport == 65400)
            .expect("child A's CLOSE_WAIT");
        t.owner_pid = Some(20);
        let outcome = check("unfiltered", &expected, &seen, 0);
        assert_eq!(outcome.problems.len(), 1, "{:?}", outcome.problems);
        assert!(outcome.problems[0].contains("owner 20/vmsrv/listener, expected 10/vmsrv/listener"));
    }

    #[test]
    fn missing_duplicate_and_unexpected_sockets_are_named() {
        let expected = plan().expected();
        let mut seen = perfect(&expected);
        // Client A's TIME_WAIT never shows; the refused client shows twice; a stranger.
        seen.retain(|t| {
            (t.newstate != "TIME_WAIT" && t.oldstate != "TIME_WAIT") || t.sport != 65403
        });
        let refused: Vec<Transition> = seen
            .iter()
            .filter(|t| t.sport == 65405)
            .map(|t| Transition {
                socket: 99,
                ..t.clone()
            })
            .collect();
        seen.extend(refused);
        let mut stranger = seen[0].clone();
        stranger.socket = 100;
        stranger.sport = 1234;
        seen.push(stranger);
        let outcome = check("unfiltered", &expected, &seen, 2);
        let problems = outcome.problems.join("\n");
        assert!(
            problems.contains("portrace reported 2 lost transitions"),
            "{problems}"
        );
        assert!(problems.contains("client A (closes first, TIME_WAIT): transitions [CLOSE->SYN_SENT, SYN_SENT->ESTABLISHED, ESTABLISHED->FIN_WAIT1, FIN_WAIT1->FIN_WAIT2], expected"), "{problems}");
        assert!(
            problems.contains("client refused: 2 sockets instead of one"),
            "{problems}"
        );
        assert!(
            problems.contains("unexpected socket 100 (local port 1234"),
            "{problems}"
        );
        // Child B still reached TIME_WAIT.
        assert!(outcome.time_wait_seen);
        let none = check("unfiltered", &expected, &[], 0);
        assert_eq!(
            none.problems.len(),
            expected.len() + 1,
            "{:?}",
            none.problems
        );
        assert!(none
            .problems
            .last()
            .is_some_and(|p| p.contains("TIME_WAIT")));
    }

    #[test]
    fn wrong_refusal_reason_fails() {
        let expected = plan().expected();
        let mut seen = perfect(&expected);
        let t = seen
            .iter_mut()
            .find(|t| t.edge() == "SYN_SENT->CLOSE")
            .expect("the refused connect");
        t.reason = Some("connect_timeout".into());
        let outcome = check("unfiltered", &expected, &seen, 0);
        assert_eq!(outcome.problems.len(), 1, "{:?}", outcome.problems);
        assert!(outcome.problems[0].starts_with("client refused SYN_SENT->CLOSE: reason"));
    }

    #[test]
    fn each_filter_leaves_out_what_the_others_keep() {
        let plan = plan();
        let filters = Filters::narrowing(&plan, "tcpload");
        let kept = filters.keep(&plan.expected());
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(kept[0].role, "client A (closes first, TIME_WAIT)");
        assert_eq!(
            kept[0].edges,
            [
                "CLOSE->SYN_SENT",
                "SYN_SENT->ESTABLISHED",
                "FIN_WAIT1->FIN_WAIT2",
                "FIN_WAIT2->TIME_WAIT",
                "TIME_WAIT->CLOSE"
            ]
        );
        // Without one filter, what it alone left out comes back.
        let roles = |f: &Filters| -> Vec<String> {
            f.keep(&plan.expected())
                .into_iter()
                .map(|s| s.role)
                .collect()
        };
        let without_port = Filters {
            ports: vec![],
            ..filters.clone()
        };
        assert!(roles(&without_port)
            .iter()
            .any(|r| r.starts_with("child B")));
        let without_comm = Filters {
            comm: None,
            ..filters.clone()
        };
        assert!(roles(&without_comm).iter().any(|r| r == "listener A"));
        assert!(roles(&without_comm)
            .iter()
            .any(|r| r.starts_with("child A")));
        let without_pid = Filters {
            pids: vec![],
            ..filters.clone()
        };
        assert!(roles(&without_pid).iter().any(|r| r == "client refused"));
        let without_state = Filters {
            states: vec![],
            ..filters.clone()
        };
        assert_eq!(without_state.keep(&plan.expected())[0].edges.len(), 6);
        assert_eq!(
            filters.args().join(" "),
            "--addr 127.0.0.1/8 --port 65400 --port 65402 --pid 10 --pid 11 --pid 20 \
             --comm tcpload --state LISTEN --state SYN_SENT --state FIN_WAIT2 --state TIME_WAIT"
        );
        let kept = perfect(&filters.keep(&plan.expected()));
        let outcome = check("filtered", &filters.keep(&plan.expected()), &kept, 0);
        assert!(
            outcome.passed() && outcome.time_wait_seen,
            "{:?}",
            outcome.problems
        );
        // The unfiltered stream is not what the filter keeps.
        let everything = perfect(&plan.expected());
        assert!(!check("filtered", &filters.keep(&plan.expected()), &everything, 0).passed());
    }
}
