//! The true timeline of a connection, end to end against the real kernel: who owns each
//! socket at every transition (not just who was on the CPU), the TIME_WAIT the kernel hides
//! behind a timewait socket (entered, killed early, expired), why each connection ended,
//! and the sockets that existed before portrace started (the start-up inventory and
//! `--snapshot`). Each test creates its own network namespaces, runs tcpload servers and
//! clients in them as separate processes, traces them with the real portrace binary in the
//! root namespace, and asserts the exact sequence of transitions of every socket it traced
//! and the owner of every transition.
//!
//! Every test uses its own listening ports (above 65000, outside the namespaces' ephemeral
//! range). The one test that waits for a real 60-second TIME_WAIT expiry comes last. These
//! tests need root (eBPF, namespaces) and run one at a time.

use std::time::Duration;

use portrace_tests::seq::{
    CHILD_ACTIVE, CHILD_ACTIVE_ENDED, CHILD_PASSIVE, CHILD_RESET, CLIENT_ACTIVE,
    CLIENT_ACTIVE_ENDED, CLIENT_PASSIVE, CLIENT_RESET, LISTENER, REFUSED,
};
use portrace_tests::tcpload::WAIT;
use portrace_tests::{
    assert_all, assert_none, assert_owner, client_closes_first, assert_sequences, check_socket_invariants, inventory,
    expected_total, assert_end, privileged, tcpload, timeline, transitions, Closer, Expect, Netns, Owner, Portrace, Proc, Roles,
    SocketRecord, Tcpload, Transition, OWN_SYSCALL_EDGES,
};
use serde_json::Value;

/// Connections per multi-connection scenario: enough to see repetition, few enough to stay
/// fast.
const N: usize = 3;
/// How long to wait for the records that finished traffic must produce.
const RECORDS_TIMEOUT: Duration = Duration::from_secs(15);
/// How long to keep reading after the expected records arrived, so that a transition
/// portrace should not have printed (an early `TIME_WAIT->CLOSE`) has time to show up.
const SETTLE: Duration = Duration::from_millis(500);
/// How long a client or server may take to report that its connections are open.
const LINE_TIMEOUT: Duration = Duration::from_secs(10);
/// The command name tcpload has.
const TCPLOAD: &str = "tcpload";

/// How many transitions among `records` have edge `edge`.
fn count_edge(records: &[Value], edge: &str) -> usize {
    transitions(records)
        .iter()
        .filter(|t| t.edge() == edge)
        .count()
}

/// Waits until, for every `(edge, n)`, at least `n` transitions with that edge arrived;
/// returns whether they did within `timeout`.
fn wait_edges(portrace: &mut Portrace, want: &[(&str, usize)], timeout: Duration) -> bool {
    portrace.wait_until(timeout, |records| {
        want.iter().all(|(edge, n)| count_edge(records, edge) >= *n)
    })
}

/// [`assert_owner`] for every socket of each role.
fn assert_role_owners(ts: &[Transition], roles: &Roles, owners: &[(&str, Owner<'_>)]) {
    for (role, owner) in owners {
        for socket in roles.get(role) {
            assert_owner(ts, socket, owner);
        }
    }
}

/// The server child transitions the kernel makes in softirq (not in the server's own
/// system calls): how many show another process than the owner on the CPU, of how many.
fn child_softirq_pids(roles: &Roles) -> (usize, usize) {
    let softirq: Vec<&Transition> = roles
        .get("child")
        .iter()
        .flat_map(|s| &s.transitions)
        .filter(|t| !OWN_SYSCALL_EDGES.contains(&t.edge().as_str()))
        .collect();
    let differ = softirq
        .iter()
        .filter(|t| Some(t.pid) != t.owner_pid)
        .count();
    (differ, softirq.len())
}

/// CLOCK_MONOTONIC now, in nanoseconds: the clock of portrace's `ts_ns`.
fn mono_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

// ---------------------------------------------------------------------------------------
// Owners
// ---------------------------------------------------------------------------------------

/// The sockets and processes of one traced client/server run.
struct Traced {
    ts: Vec<Transition>,
    roles: Roles,
    server_pid: u32,
    client_pid: u32,
}

/// `N` connections from a client in `client_ns` to a server in `server_ns` listening on
/// `server_ip:port`, `closer` closing first, traced with `--port`. Asserts the exact
/// sequence of every socket, the addresses, and the owner of every transition: the
/// listener and the clients are their creators' from their first transition (`syscall`);
/// a server child is the server's through its listener (`listener`) until the server's own
/// close or shutdown, and `syscall` from then on.
fn owned_connections(
    server_ns: &Netns,
    client_ns: &Netns,
    server_ip: &str,
    client_ip: &str,
    port: u16,
    closer: Closer,
) -> Traced {
    let load = tcpload!();
    let (client_seq, child_seq) = match closer {
        Closer::Client => (CLIENT_ACTIVE, CHILD_PASSIVE),
        Closer::Server => (CLIENT_PASSIVE, CHILD_ACTIVE),
    };
    let expect = [
        Expect {
            role: "listener",
            count: 1,
            edges: LISTENER,
        },
        Expect {
            role: "client",
            count: N,
            edges: client_seq,
        },
        Expect {
            role: "child",
            count: N,
            edges: child_seq,
        },
    ];
    let port_text = port.to_string();
    let portrace = Portrace::start(&["--port", &port_text]);
    let endpoint = format!("{server_ip}:{port}");
    let server = load.server(server_ns, &endpoint, N, closer);
    let server_pid = server.pid();
    let client = load.spawn_client(client_ns, &endpoint, N, 1, closer, false);
    let client_pid = client.pid();
    Tcpload::finish_client(client, N);
    server.wait_success(WAIT);
    let run = portrace.collect(expected_total(&expect), RECORDS_TIMEOUT, SETTLE);

    let ts = run.transitions();
    let roles = assert_sequences(&ts, &expect);
    check_socket_invariants(&ts, Some("ipv4"));
    assert_all(
        &roles.get("listener")[0].transitions,
        "the listener is bound to the server's address and port",
        |t| t.saddr == server_ip && t.sport == port && t.daddr == "0.0.0.0" && t.dport == 0,
    );
    for client in roles.get("client") {
        assert_all(
            &client.transitions[1..],
            "a client goes from its own address to the server",
            |t| t.saddr == client_ip && t.daddr == server_ip && t.dport == port,
        );
    }
    for child in roles.get("child") {
        assert_all(
            &child.transitions,
            "a child goes from the server's address to the client",
            |t| t.saddr == server_ip && t.sport == port && t.daddr == client_ip,
        );
    }
    assert_role_owners(
        &ts,
        &roles,
        &[
            ("listener", Owner::usual("server", server_pid, TCPLOAD, "syscall")),
            ("client", Owner::usual("client", client_pid, TCPLOAD, "syscall")),
            ("child", Owner::usual("server", server_pid, TCPLOAD, "listener")),
        ],
    );
    Traced {
        ts,
        roles,
        server_pid,
        client_pid,
    }
}

/// The server child's transitions driven by packets run in softirq, on loopback and over
/// veth alike right in the sending process's system call (usually the client's), so the
/// on-CPU pid must differ from the owner at least once: what the owner fields are for.
fn assert_owner_not_on_cpu(traced: &Traced, path: &str) {
    let (differ, of) = child_softirq_pids(&traced.roles);
    eprintln!(
        "{path}: {differ} of {of} softirq transitions of the server's children (pid {}) ran \
         while another process was on the CPU (client pid {})",
        traced.server_pid, traced.client_pid
    );
    assert!(
        differ > 0,
        "{path}: the server's children's softirq transitions all ran with the server on the \
         CPU, so this run does not show the owner differing from the on-CPU process:\n{}",
        timeline(&traced.ts)
    );
}

fn owners_on_loopback(port: u16, closer: Closer) {
    privileged!();
    let ns = Netns::create();
    let traced = owned_connections(&ns, &ns, "127.0.0.1", "127.0.0.1", port, closer);
    assert_owner_not_on_cpu(&traced, &format!("loopback, {closer:?} closes first"));
}

/// A veth pair between a client namespace and a server namespace, link-local IPv4.
fn owners_over_veth(port: u16, subnet: u8, closer: Closer) {
    privileged!();
    let client_ns = Netns::create();
    let server_ns = Netns::create();
    let client_ip = format!("169.254.{subnet}.1");
    let server_ip = format!("169.254.{subnet}.2");
    client_ns.veth(
        &format!("{client_ip}/30"),
        &server_ns,
        &format!("{server_ip}/30"),
    );
    let traced = owned_connections(&server_ns, &client_ns, &server_ip, &client_ip, port, closer);
    assert_owner_not_on_cpu(&traced, &format!("veth, {closer:?} closes first"));
}

#[test]
fn owner_loopback_client_closes_first() {
    owners_on_loopback(65150, Closer::Client);
}

#[test]
fn owner_loopback_server_closes_first() {
    owners_on_loopback(65151, Closer::Server);
}

#[test]
fn owner_veth_client_closes_first() {
    owners_over_veth(65152, 20, Closer::Client);
}

#[test]
fn owner_veth_server_closes_first() {
    owners_over_veth(65153, 21, Closer::Server);
}

// ---------------------------------------------------------------------------------------
// Filters on the owner
// ---------------------------------------------------------------------------------------

/// A server started from `server_load` (held until portrace runs with the filter
/// `filter(server pid)`), `N` client-closes-first connections from a plain tcpload client.
/// The filter must keep every transition of the server's listener and children (all five
/// of each child, the softirq ones included) and nothing of the client's sockets.
fn server_only(port: u16, server_load: &Tcpload, comm: &str, filter: impl Fn(u32) -> Vec<String>) {
    privileged!();
    let ns = Netns::create();
    let endpoint = format!("127.0.0.1:{port}");
    let mut server = server_load.spawn_server_held(&ns, &endpoint, N, Closer::Client, &[]);
    let server_pid = server.pid();
    let args = filter(server_pid);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let portrace = Portrace::start(&args);
    Tcpload::release_server(&mut server);
    let client = tcpload!().spawn_client(&ns, &endpoint, N, 1, Closer::Client, false);
    let client_pid = client.pid();
    Tcpload::finish_client(client, N);
    server.wait_success(WAIT);
    let expect = [
        Expect {
            role: "listener",
            count: 1,
            edges: LISTENER,
        },
        Expect {
            role: "child",
            count: N,
            edges: CHILD_PASSIVE,
        },
    ];
    let run = portrace.collect(expected_total(&expect), RECORDS_TIMEOUT, SETTLE);
    let ts = run.transitions();
    let roles = assert_sequences(&ts, &expect);
    check_socket_invariants(&ts, Some("ipv4"));
    assert_role_owners(
        &ts,
        &roles,
        &[
            ("listener", Owner::usual("server", server_pid, comm, "syscall")),
            ("child", Owner::usual("server", server_pid, comm, "listener")),
        ],
    );
    assert_none(
        &ts,
        &format!("the client's (pid {client_pid}) sockets are outside the filter"),
        |t| t.dport == port || t.owner_pid == Some(client_pid),
    );
    assert_all(&ts, "every transition is on the server's port", |t| {
        t.sport == port
    });
}

#[test]
fn filter_pid_keeps_every_transition_of_the_owners_sockets() {
    server_only(65155, &tcpload!(), TCPLOAD, |pid| {
        ["--port", "65155", "--pid", &pid.to_string()]
            .iter()
            .map(|s| s.to_string())
            .collect()
    });
}

#[test]
fn filter_comm_keeps_every_transition_of_the_owners_sockets() {
    // The server runs as `tcpsrv` (a link to tcpload); the client keeps the name tcpload.
    let renamed = tcpload!().renamed("tcpsrv");
    server_only(65156, renamed.load(), "tcpsrv", |_| {
        ["--port", "65156", "--comm", "tcpsrv"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    });
}

// ---------------------------------------------------------------------------------------
// Sockets older than portrace
// ---------------------------------------------------------------------------------------

/// A listener and one established connection made before portrace starts: the server
/// (which has accepted it, and accepts `accepts` connections in all) and the client (which
/// holds it open until told to close).
struct OldConnection {
    // Fields drop in this order: the processes before their namespace.
    server: Proc,
    client: Proc,
    ns: Netns,
    port: u16,
}

impl OldConnection {
    fn open(port: u16, accepts: usize) -> OldConnection {
        let ns = Netns::create();
        let load = tcpload!();
        let endpoint = format!("127.0.0.1:{port}");
        let mut server = load.server_with(&ns, &endpoint, accepts, Closer::Client, &["--announce"]);
        let mut client = load.spawn_client_with(&ns, &endpoint, 1, 1, Closer::Client, &["--hold"]);
        client.wait_line("connected 1", LINE_TIMEOUT);
        server.wait_line("accepted", LINE_TIMEOUT);
        OldConnection {
            server,
            client,
            ns,
            port,
        }
    }

    /// Has the client close its end (it closes first), and waits for both to finish.
    fn close(self) -> Netns {
        let OldConnection {
            ns,
            server,
            mut client,
            ..
        } = self;
        Tcpload::go(&mut client);
        Tcpload::finish_client(client, 1);
        server.wait_success(WAIT);
        ns
    }

    /// The three socket records of this connection, as `(listener, client end, server end)`,
    /// after checking each one's addresses, state, owner, namespace, inode and uid.
    fn check_inventory<'a>(
        &self,
        sockets: &'a [SocketRecord],
    ) -> (&'a SocketRecord, &'a SocketRecord, &'a SocketRecord) {
        let port = self.port;
        let shown = || format!("socket records:\n{}", inventory(sockets));
        assert_eq!(
            sockets.len(),
            3,
            "the inventory with --port {port} holds the listener and both ends of the \
             connection, nothing else\n{}",
            shown()
        );
        let find = |what: &str, good: &dyn Fn(&SocketRecord) -> bool| -> &'a SocketRecord {
            let found: Vec<&SocketRecord> = sockets.iter().filter(|s| good(s)).collect();
            assert_eq!(found.len(), 1, "exactly one {what}\n{}", shown());
            found[0]
        };
        let listener = find("listener (LISTEN on 127.0.0.1:{port})", &|s| {
            s.state == "LISTEN" && s.saddr == "127.0.0.1" && s.sport == port && s.dport == 0
        });
        let client = find("client end (ESTABLISHED to the port)", &|s| {
            s.state == "ESTABLISHED" && s.dport == port && s.daddr == "127.0.0.1"
        });
        let child = find("server end (ESTABLISHED from the port)", &|s| {
            s.state == "ESTABLISHED" && s.sport == port && s.dport == client.sport
        });
        let netns = self.ns.inode();
        for (socket, who, pid) in [
            (listener, "server", self.server.pid()),
            (client, "client", self.client.pid()),
            (child, "server", self.server.pid()),
        ] {
            assert!(
                socket.owner_pid == Some(pid)
                    && socket.owner_comm.as_deref() == Some(TCPLOAD)
                    && socket.owner_source == "inventory",
                "socket {} is held by the {who} (pid {pid}), owner source inventory:\n  {}\n{}",
                socket.socket,
                socket.line(),
                shown()
            );
            assert!(
                socket.family == "ipv4"
                    && socket.netns == netns
                    && socket.inode != 0
                    && socket.uid == 0,
                "socket {} is an IPv4 socket of namespace {netns} with a file (inode), made \
                 by root:\n  {}",
                socket.socket,
                socket.line()
            );
        }
        let mut ids: Vec<u64> = sockets.iter().map(|s| s.socket).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 3, "socket ids are unique\n{}", shown());
        (listener, client, child)
    }
}

#[test]
fn inventory_then_transitions_of_older_sockets() {
    privileged!();
    // The server accepts one more connection, made while portrace runs: its child belongs
    // to the owner of a listener portrace only knows from the inventory.
    let old = OldConnection::open(65160, 2);
    let (server_pid, client_pid) = (old.server.pid(), old.client.pid());
    let mut portrace = Portrace::start(&["--port", "65160"]);
    portrace.wait_until(RECORDS_TIMEOUT, |records| {
        records.iter().filter(|r| r["type"] == "socket").count() >= 3
    });
    let early = portrace.socket_records();
    let (listener_id, client_id, child_id) = {
        let (l, c, s) = old.check_inventory(&early);
        (l.socket, c.socket, s.socket)
    };
    let new_client = tcpload!().spawn_client(&old.ns, "127.0.0.1:65160", 1, 1, Closer::Client, false);
    let new_client_pid = new_client.pid();
    Tcpload::finish_client(new_client, 1);
    let ns = old.close();
    let expect = [
        Expect {
            role: "listener",
            count: 1,
            edges: &["LISTEN->CLOSE"],
        },
        Expect {
            role: "client",
            count: 1,
            edges: &[
                "ESTABLISHED->FIN_WAIT1",
                "FIN_WAIT1->FIN_WAIT2",
                "FIN_WAIT2->TIME_WAIT",
            ],
        },
        Expect {
            role: "child",
            count: 1,
            edges: &[
                "ESTABLISHED->CLOSE_WAIT",
                "CLOSE_WAIT->LAST_ACK",
                "LAST_ACK->CLOSE",
            ],
        },
        Expect {
            role: "new client",
            count: 1,
            edges: CLIENT_ACTIVE,
        },
        Expect {
            role: "new child",
            count: 1,
            edges: CHILD_PASSIVE,
        },
    ];
    let run = portrace.collect(expected_total(&expect), RECORDS_TIMEOUT, SETTLE);
    drop(ns);
    let ts = run.transitions();
    let roles = assert_sequences(&ts, &expect);
    check_socket_invariants(&ts, Some("ipv4"));
    assert_eq!(
        run.socket_records(),
        early,
        "the socket records seen while tracing are the run's whole inventory"
    );

    // The same sockets, under the ids of their socket records.
    for (role, id) in [
        ("listener", listener_id),
        ("client", client_id),
        ("child", child_id),
    ] {
        let socket = &roles.get(role)[0];
        assert_eq!(
            socket.socket,
            id,
            "the {role}'s transitions carry the id of its socket record\nsocket records:\n{}\
             observed timeline:\n{}",
            inventory(&early),
            timeline(&ts)
        );
    }
    // Owners: known from the inventory until the owner's own close, first-hand from then.
    assert_role_owners(
        &ts,
        &roles,
        &[
            (
                "listener",
                Owner::usual("server", server_pid, TCPLOAD, "inventory"),
            ),
            ("client", Owner::usual("client", client_pid, TCPLOAD, "inventory")),
            ("child", Owner::usual("server", server_pid, TCPLOAD, "inventory")),
            (
                "new client",
                Owner::usual("client", new_client_pid, TCPLOAD, "syscall"),
            ),
            (
                "new child",
                Owner::usual("server", server_pid, TCPLOAD, "listener"),
            ),
        ],
    );
    assert_eq!(
        roles.get("new child")[0].last().dport,
        roles.get("new client")[0].local_port(),
        "the new child is the new client's connection\n{}",
        timeline(&ts)
    );
    // Each socket's first transition left a state it was in before portrace started: a
    // lower bound counted from portrace's start.
    let start = run.start_ts_ns();
    for role in ["listener", "client", "child"] {
        let first = roles.get(role)[0].first();
        let since_start = (first.ts_ns - start) as f64 / 1000.0;
        let ok = first.prev_state_at_least
            && first
                .prev_state_us
                .is_some_and(|us| (us - since_start).abs() <= 2000.0);
        assert!(
            ok,
            "the {role}'s first transition has prev_state_at_least and prev_state_us counted \
             from portrace's start ({since_start:.3} us before it):\n  {}\nobserved timeline:\n{}",
            first.line(),
            timeline(&ts)
        );
    }
}

#[test]
fn snapshot_lists_the_listener_and_its_owner() {
    privileged!();
    let old = OldConnection::open(65161, 1);
    let server_pid = old.server.pid();
    let port = old.port;
    let snapshot = |format: &str| {
        let (out, took) = Portrace::run_once(
            &["--snapshot", "--format", format, "--port", "65161"],
            Duration::from_secs(15),
        );
        out.assert_success();
        assert!(
            took < Duration::from_secs(5),
            "portrace --snapshot --format {format} took {took:?}"
        );
        out
    };

    // JSON: the start record, the three socket records, the end record.
    let json = snapshot("json");
    let records: Vec<Value> = json
        .stdout
        .iter()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("--snapshot printed a line that is not JSON ({e}): {l}"))
        })
        .collect();
    let types: Vec<&str> = records.iter().filter_map(|r| r["type"].as_str()).collect();
    assert_eq!(
        types,
        ["start", "socket", "socket", "socket", "end"],
        "--snapshot --format json prints the start record, the inventory and the end \
         record:\n{}",
        json.stdout.join("\n")
    );
    let sockets = portrace_tests::socket_records(&records);
    old.check_inventory(&sockets);
    assert_eq!(
        records[4]["transitions"], 0,
        "a snapshot traces nothing: {}",
        records[4]
    );

    // Text: a table with a row for the listener that names its port, state and owner.
    let text = snapshot("text");
    let listener_row = text.stdout.iter().find(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        words.contains(&"LISTEN")
            && words.iter().any(|w| w.ends_with(&format!(":{port}")))
            && words
                .iter()
                .any(|w| w.trim_matches(|c: char| !c.is_ascii_digit()) == server_pid.to_string())
    });
    assert!(
        listener_row.is_some(),
        "--snapshot --format text has a LISTEN row for 127.0.0.1:{port} owned by pid \
         {server_pid}:\n{}",
        text.stdout.join("\n")
    );

    // CSV: the header, then one `socket` row per socket, the listener's with its owner.
    let csv = snapshot("csv");
    let header: Vec<&str> = csv
        .stdout
        .first()
        .map(|h| h.split(',').collect())
        .unwrap_or_default();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("CSV header lacks {name:?}: {header:?}"))
    };
    let rows: Vec<Vec<&str>> = csv.stdout[1..]
        .iter()
        .map(|l| l.split(',').collect())
        .collect();
    assert!(
        rows.len() == 3
            && rows
                .iter()
                .all(|r| r.len() == header.len() && r[0] == "socket"),
        "--snapshot --format csv prints three `socket` rows of {} columns:\n{}",
        header.len(),
        csv.stdout.join("\n")
    );
    let listener = rows.iter().find(|r| r[column("newstate")] == "LISTEN");
    assert!(
        listener.is_some_and(|r| r[column("sport")] == port.to_string()
            && r[column("owner_pid")] == server_pid.to_string()
            && r[column("owner_comm")] == TCPLOAD
            && r[column("owner_source")] == "inventory"),
        "the CSV snapshot's LISTEN row shows port {port} and owner {server_pid}/tcpload/inventory:\n{}",
        csv.stdout.join("\n")
    );
    drop(old.close());
}

// ---------------------------------------------------------------------------------------
// Why a connection ended
// ---------------------------------------------------------------------------------------

#[test]
fn reason_refused() {
    privileged!();
    let ns = Netns::create();
    let portrace = Portrace::start(&["--port", "65170"]);
    let client = tcpload!().spawn_client_with(
        &ns,
        "127.0.0.1:65170",
        1,
        1,
        Closer::Client,
        &["--expect", "refused"],
    );
    let client_pid = client.pid();
    Tcpload::finish_client(client, 1);
    let expect = [Expect {
        role: "client",
        count: 1,
        edges: REFUSED,
    }];
    let run = portrace.collect(expected_total(&expect), RECORDS_TIMEOUT, SETTLE);
    let ts = run.transitions();
    let roles = assert_sequences(&ts, &expect);
    check_socket_invariants(&ts, Some("ipv4"));
    assert_role_owners(
        &ts,
        &roles,
        &[("client", Owner::usual("client", client_pid, TCPLOAD, "syscall"))],
    );
    // The peer answered the first SYN with a reset: nothing was retransmitted.
    assert_end(
        &ts,
        &roles.get("client")[0],
        "refused",
        Some("ECONNREFUSED"),
        Some(0),
    );
}

/// One connection that ends in a reset: the side named `aborter` closes with SO_LINGER 0
/// at once, the other reads until the reset. Checks both ends' sequences, owners and end
/// reasons.
fn reset_connection(port: u16, aborter: Closer) {
    privileged!();
    let ns = Netns::create();
    let load = tcpload!();
    let endpoint = format!("127.0.0.1:{port}");
    let port_text = port.to_string();
    let portrace = Portrace::start(&["--port", &port_text]);
    let (server_extra, client_extra): (&[&str], &[&str]) = match aborter {
        Closer::Server => (&["--linger0"], &["--expect", "reset"]),
        Closer::Client => (&["--expect", "reset"], &["--linger0"]),
    };
    let server = load.server_with(&ns, &endpoint, 1, aborter, server_extra);
    let server_pid = server.pid();
    let client = load.spawn_client_with(&ns, &endpoint, 1, 1, aborter, client_extra);
    let client_pid = client.pid();
    Tcpload::finish_client(client, 1);
    server.wait_success(WAIT);
    let expect = [
        Expect {
            role: "listener",
            count: 1,
            edges: LISTENER,
        },
        Expect {
            role: "client",
            count: 1,
            edges: CLIENT_RESET,
        },
        Expect {
            role: "child",
            count: 1,
            edges: CHILD_RESET,
        },
    ];
    let run = portrace.collect(expected_total(&expect), RECORDS_TIMEOUT, SETTLE);
    let ts = run.transitions();
    let roles = assert_sequences(&ts, &expect);
    check_socket_invariants(&ts, Some("ipv4"));

    // A close with SO_LINGER 0 is the owner's own system call: ESTABLISHED->CLOSE then
    // happens in it, like a FIN_WAIT1 would in an ordinary close.
    let abort_edges: Vec<&str> = OWN_SYSCALL_EDGES
        .iter()
        .copied()
        .chain(["ESTABLISHED->CLOSE"])
        .collect();
    let mut child_owner = Owner::usual("server", server_pid, TCPLOAD, "listener");
    let mut client_owner = Owner::usual("client", client_pid, TCPLOAD, "syscall");
    match aborter {
        Closer::Server => child_owner.own = &abort_edges,
        Closer::Client => client_owner.own = &abort_edges,
    }
    assert_role_owners(
        &ts,
        &roles,
        &[
            ("listener", Owner::usual("server", server_pid, TCPLOAD, "syscall")),
            ("client", client_owner),
            ("child", child_owner),
        ],
    );

    let (aborted, reset) = match aborter {
        Closer::Server => (&roles.get("child")[0], &roles.get("client")[0]),
        Closer::Client => (&roles.get("client")[0], &roles.get("child")[0]),
    };
    assert_end(&ts, aborted, "reset_sent", None, None);
    assert_end(&ts, reset, "reset_by_peer", Some("ECONNRESET"), None);
    assert_end(
        &ts,
        &roles.get("listener")[0],
        "listener_closed",
        None,
        None,
    );
}

#[test]
fn reason_reset_by_peer() {
    reset_connection(65171, Closer::Server);
}

#[test]
fn reason_local_abort() {
    reset_connection(65172, Closer::Client);
}

#[test]
fn reason_connect_timeout() {
    privileged!();
    let ns = Netns::create();
    // One SYN retransmission: connect gives up after 1 s + 2 s. The peer is the far end of a
    // veth pair that is down: every SYN the client sends is dropped there, silently (no
    // reset, no ICMP error), and a permanent neighbour entry means no ARP is needed.
    ns.sysctl("net.ipv4.tcp_syn_retries=1");
    ns.exec(
        "ip",
        &[
            "link", "add", "ptdrop0", "type", "veth", "peer", "name", "ptdrop1",
        ],
    );
    ns.exec("ip", &["addr", "add", "169.254.30.1/30", "dev", "ptdrop0"]);
    ns.exec("ip", &["link", "set", "ptdrop0", "up"]);
    ns.exec(
        "ip",
        &[
            "neigh",
            "replace",
            "169.254.30.2",
            "lladdr",
            "02:00:00:00:00:02",
            "dev",
            "ptdrop0",
            "nud",
            "permanent",
        ],
    );
    let portrace = Portrace::start(&["--port", "65173"]);
    let client = tcpload!().spawn_client_with(
        &ns,
        "169.254.30.2:65173",
        1,
        1,
        Closer::Client,
        &["--expect", "timeout"],
    );
    let client_pid = client.pid();
    Tcpload::finish_client(client, 1);
    let expect = [Expect {
        role: "client",
        count: 1,
        edges: REFUSED,
    }];
    let run = portrace.collect(expected_total(&expect), RECORDS_TIMEOUT, SETTLE);
    let ts = run.transitions();
    let roles = assert_sequences(&ts, &expect);
    check_socket_invariants(&ts, Some("ipv4"));
    let client = &roles.get("client")[0];
    assert_role_owners(
        &ts,
        &roles,
        &[("client", Owner::usual("client", client_pid, TCPLOAD, "syscall"))],
    );
    assert_end(&ts, client, "connect_timeout", Some("ETIMEDOUT"), None);
    let last = client.last();
    assert!(
        last.retransmits >= 1,
        "the SYN was retransmitted before the connect timed out:\n  {}",
        last.line()
    );
    assert!(
        last.prev_state_us
            .is_some_and(|us| (2_500_000.0..5_000_000.0).contains(&us)),
        "with one SYN retransmission the connect times out about 3 s after it began:\n  {}",
        last.line()
    );
}

// ---------------------------------------------------------------------------------------
// TIME_WAIT
// ---------------------------------------------------------------------------------------

#[test]
fn time_wait_entered_by_the_active_closer() {
    privileged!();
    let ns = Netns::create();
    let load = tcpload!();
    let portrace = Portrace::start(&["--port", "65180"]);
    let server = load.server(&ns, "127.0.0.1:65180", N, Closer::Client);
    let server_pid = server.pid();
    let client = load.spawn_client(&ns, "127.0.0.1:65180", N, 1, Closer::Client, false);
    let client_pid = client.pid();
    Tcpload::finish_client(client, N);
    server.wait_success(WAIT);
    let expect = client_closes_first(N);
    let run = portrace.collect(expected_total(&expect), RECORDS_TIMEOUT, SETTLE);
    let ts = run.transitions();
    // Exact: the clients' last transition is FIN_WAIT2->TIME_WAIT, and none has left
    // TIME_WAIT (that takes 60 s).
    let roles = assert_sequences(&ts, &expect);
    check_socket_invariants(&ts, Some("ipv4"));
    assert_role_owners(
        &ts,
        &roles,
        &[
            ("listener", Owner::usual("server", server_pid, TCPLOAD, "syscall")),
            ("client", Owner::usual("client", client_pid, TCPLOAD, "syscall")),
            ("child", Owner::usual("server", server_pid, TCPLOAD, "listener")),
        ],
    );
    for client in roles.get("client") {
        let established = &client.transitions[1];
        let time_wait = client.last();
        assert!(
            time_wait.prev_state_us.is_some()
                && (
                    time_wait.saddr.as_str(),
                    time_wait.sport,
                    time_wait.daddr.as_str(),
                    time_wait.dport
                ) == (
                    established.saddr.as_str(),
                    established.sport,
                    established.daddr.as_str(),
                    established.dport
                ),
            "the TIME_WAIT transition continues the connection (same 4-tuple, time in \
             FIN_WAIT2 known):\n  {}\n  {}",
            established.line(),
            time_wait.line()
        );
    }
    for child in roles.get("child") {
        assert_end(&ts, child, "passive_close", None, None);
    }
    assert_end(
        &ts,
        &roles.get("listener")[0],
        "listener_closed",
        None,
        None,
    );
}

#[test]
fn time_wait_killed_by_reuse_and_by_namespace_deletion() {
    privileged!();
    let ns = Netns::create();
    let load = tcpload!();
    // The server closes first, so its child goes to TIME_WAIT; both connections come from
    // the same client address and port, so the second SYN hits the first one's timewait
    // socket, which the kernel kills to let the new connection in.
    let mut portrace = Portrace::start(&["--port", "65181"]);
    let server = load.server(&ns, "127.0.0.1:65181", 2, Closer::Server);
    let server_pid = server.pid();
    let connect = |portrace: &mut Portrace, n: usize| {
        let client = load.spawn_client_with(
            &ns,
            "127.0.0.1:65181",
            1,
            1,
            Closer::Server,
            &["--bind", "127.0.0.1:65182"],
        );
        let pid = client.pid();
        Tcpload::finish_client(client, 1);
        // Both ends are done (client closed, server child in TIME_WAIT) before going on.
        wait_edges(
            portrace,
            &[("FIN_WAIT2->TIME_WAIT", n), ("LAST_ACK->CLOSE", n)],
            RECORDS_TIMEOUT,
        );
        pid
    };
    let first_pid = connect(&mut portrace, 1);
    let second_pid = connect(&mut portrace, 2);
    server.wait_success(WAIT);
    wait_edges(
        &mut portrace,
        &[("TIME_WAIT->CLOSE", 1), ("LISTEN->CLOSE", 1)],
        RECORDS_TIMEOUT,
    );

    // Deleting the namespace kills the timewait sockets left in it.
    let deleted_at = mono_now_ns();
    drop(ns);
    wait_edges(
        &mut portrace,
        &[("TIME_WAIT->CLOSE", 2)],
        Duration::from_secs(20),
    );
    let expect = [
        Expect {
            role: "listener",
            count: 1,
            edges: LISTENER,
        },
        Expect {
            role: "client",
            count: 2,
            edges: CLIENT_PASSIVE,
        },
        Expect {
            role: "child",
            count: 2,
            edges: CHILD_ACTIVE_ENDED,
        },
    ];
    let run = portrace.collect(expected_total(&expect), RECORDS_TIMEOUT, SETTLE);
    let ts = run.transitions();
    let roles = assert_sequences(&ts, &expect);
    check_socket_invariants(&ts, Some("ipv4"));
    let clients = roles.get("client");
    assert_owner(
        &ts,
        &clients[0],
        &Owner::usual("client", first_pid, TCPLOAD, "syscall"),
    );
    assert_owner(
        &ts,
        &clients[1],
        &Owner::usual("client", second_pid, TCPLOAD, "syscall"),
    );
    assert_role_owners(
        &ts,
        &roles,
        &[
            ("listener", Owner::usual("server", server_pid, TCPLOAD, "syscall")),
            ("child", Owner::usual("server", server_pid, TCPLOAD, "listener")),
        ],
    );
    assert_all(
        &ts,
        "every connection is 127.0.0.1:65182 <-> 127.0.0.1:65181",
        |t| {
            // A client (its first transition before the port shows), or a listener or child.
            let client = (t.sport == 65182 || t.sport == 0) && t.dport == 65181;
            let server = t.sport == 65181 && (t.dport == 65182 || t.dport == 0);
            client || server
        },
    );

    let (old, new) = (&roles.get("child")[0], &roles.get("child")[1]);
    for child in [old, new] {
        assert_end(&ts, child, "time_wait_killed", None, None);
        assert!(
            child.last().prev_state_us.is_some_and(|us| us < 60e6),
            "a killed TIME_WAIT ends before its 60 s are up:\n  {}",
            child.last().line()
        );
    }
    // The new SYN kills the old timewait socket before the new child exists.
    let killed = old.last();
    assert!(
        killed.ts_ns <= new.first().ts_ns && killed.ts_ns < deleted_at,
        "the first connection's TIME_WAIT ends when the second connection's SYN arrives:\n  {}\n  {}",
        killed.line(),
        new.first().line()
    );
    assert!(
        new.last().ts_ns >= deleted_at,
        "the second connection's TIME_WAIT ends when its namespace is deleted (at {deleted_at}):\n  {}",
        new.last().line()
    );
}

/// Waits for a real TIME_WAIT expiry (60 s): kept last in the file, and to one connection.
#[test]
fn waits_for_time_wait_expiry() {
    privileged!();
    let ns = Netns::create();
    let load = tcpload!();
    let mut portrace = Portrace::start(&["--port", "65190"]);
    let server = load.server(&ns, "127.0.0.1:65190", 1, Closer::Client);
    let server_pid = server.pid();
    let client = load.spawn_client(&ns, "127.0.0.1:65190", 1, 1, Closer::Client, false);
    let client_pid = client.pid();
    Tcpload::finish_client(client, 1);
    server.wait_success(WAIT);
    wait_edges(
        &mut portrace,
        &[("TIME_WAIT->CLOSE", 1)],
        Duration::from_secs(70),
    );
    let expect = [
        Expect {
            role: "listener",
            count: 1,
            edges: LISTENER,
        },
        Expect {
            role: "client",
            count: 1,
            edges: CLIENT_ACTIVE_ENDED,
        },
        Expect {
            role: "child",
            count: 1,
            edges: CHILD_PASSIVE,
        },
    ];
    let run = portrace.collect(expected_total(&expect), RECORDS_TIMEOUT, SETTLE);
    drop(ns);
    let ts = run.transitions();
    let roles = assert_sequences(&ts, &expect);
    check_socket_invariants(&ts, Some("ipv4"));
    assert_role_owners(
        &ts,
        &roles,
        &[
            ("listener", Owner::usual("server", server_pid, TCPLOAD, "syscall")),
            ("client", Owner::usual("client", client_pid, TCPLOAD, "syscall")),
            ("child", Owner::usual("server", server_pid, TCPLOAD, "listener")),
        ],
    );
    let client = &roles.get("client")[0];
    assert_end(&ts, client, "active_close", None, None);
    // The timewait timer is armed for 60 s, and the timer wheel only ever fires late: with
    // this kernel's HZ=250 a 60 s timer sits in a bucket 512 jiffies (2.048 s) wide, so it
    // fires between 60.004 and 62.048 s later, plus softirq latency.
    let expired = client.last();
    eprintln!("TIME_WAIT expiry: {}", expired.line());
    assert!(
        expired
            .prev_state_us
            .is_some_and(|us| (59e6..=62.5e6).contains(&us)),
        "TIME_WAIT lasts 60 s (to the timer wheel's granularity):\n  {}\nobserved timeline:\n{}",
        expired.line(),
        timeline(&ts)
    );
}
