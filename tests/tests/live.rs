//! End-to-end scenarios against the real kernel: each test creates its own network
//! namespace, runs a tcpload server and tcpload clients in it as separate processes, and
//! traces them with the real portrace binary running in the root namespace. Every test
//! uses its own listening port (above 65000, outside the namespace's ephemeral range), and
//! portrace's filter selects only that test's traffic. Each asserts the exact sequence of
//! transitions of every socket it traced (the side that closes first ends in TIME_WAIT,
//! which portrace follows on the same socket), the owner of every transition where the
//! test knows the processes, and, for the filters, that traffic made in the same run
//! outside the filter is absent.
//!
//! These tests need root (eBPF, namespaces) and run one at a time.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use portrace_tests::seq::{
    CHILD_ACTIVE, CHILD_PASSIVE, CLIENT_ACTIVE, CLIENT_ACTIVE_ENDED, CLIENT_PASSIVE, LISTENER,
    REFUSED,
};
use portrace_tests::tcpload::WAIT;
use portrace_tests::{
    assert_all, assert_none, assert_owner, client_closes_first, assert_sequences, check_socket_invariants, lost_total,
    by_socket, expected_total, assert_end, privileged, tcpload, timeline, Closer, Expect, Netns, Owner, Portrace, Run, SocketTimeline, Tcpload,
    Transition,
};

/// Connections per filter scenario: enough to see repetition, few enough to stay fast.
const N: usize = 3;
/// How long to wait for the records that the finished traffic must produce.
const RECORDS_TIMEOUT: Duration = Duration::from_secs(15);

/// The transition of `timeline` with edge `edge`.
fn find<'a>(ts: &'a [Transition], edge: &str) -> &'a Transition {
    ts.iter()
        .find(|t| t.edge() == edge)
        .unwrap_or_else(|| panic!("no {edge} in:\n{}", timeline(ts)))
}

/// One connection between a server and a client process, traced with `--port`; checks
/// each socket's exact sequence, the ports and addresses, that the transitions made in a
/// process's own system call carry its pid, the owner of every transition, and why the
/// passive closer's socket and the listener ended.
fn single_connection(port: u16, host: &str, family: &str, closer: Closer) {
    privileged!();
    let ns = Netns::create();
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
            count: 1,
            edges: client_seq,
        },
        Expect {
            role: "child",
            count: 1,
            edges: child_seq,
        },
    ];
    let port_text = port.to_string();
    let portrace = Portrace::start(&["--port", &port_text]);
    let endpoint = if family == "ipv6" {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let server = load.server(&ns, &endpoint, 1, closer);
    let server_pid = server.pid();
    let client = load.spawn_client(&ns, &endpoint, 1, 1, closer, false);
    let client_pid = client.pid();
    Tcpload::finish_client(client, 1);
    server.wait_success(WAIT);
    let run = portrace.collect(expected_total(&expect), RECORDS_TIMEOUT, Duration::ZERO);

    let ts = run.transitions();
    let roles = assert_sequences(&ts, &expect);
    check_socket_invariants(&ts, Some(family));
    let listener = &roles.get("listener")[0].transitions;
    let client = &roles.get("client")[0].transitions;
    let child = &roles.get("child")[0].transitions;
    let any = if family == "ipv6" { "::" } else { "0.0.0.0" };

    assert_all(
        listener,
        "the listener is bound to the server's address and port",
        |t| t.saddr == host && t.sport == port && t.daddr == any && t.dport == 0,
    );
    assert_all(client, "the client connects to the server", |t| {
        t.daddr == host && t.dport == port
    });
    assert_eq!(
        client[0].sport,
        0,
        "the client's CLOSE->SYN_SENT shows the port as the kernel reports it (0):\n{}",
        timeline(&ts)
    );
    let client_port = client[1].sport;
    assert!(
        client_port > 0,
        "the client's local port is bound after connect():\n{}",
        timeline(&ts)
    );
    assert_all(
        &client[1..],
        "the client keeps its local address and port",
        |t| t.sport == client_port && t.saddr == host,
    );
    assert_all(
        child,
        "the server's child is the other end of the client's connection",
        |t| t.saddr == host && t.sport == port && t.daddr == host && t.dport == client_port,
    );

    let sockets = (
        &roles.get("listener")[0],
        &roles.get("client")[0],
        &roles.get("child")[0],
    );
    assert_owner(&ts, sockets.0, &Owner::usual("server", server_pid, "tcpload", "syscall"));
    assert_owner(&ts, sockets.1, &Owner::usual("client", client_pid, "tcpload", "syscall"));
    assert_owner(&ts, sockets.2, &Owner::usual("server", server_pid, "tcpload", "listener"));
    assert_end(&ts, sockets.0, "listener_closed", None, None);
    let passive = match closer {
        Closer::Client => sockets.2,
        Closer::Server => sockets.1,
    };
    assert_end(&ts, passive, "passive_close", None, None);

    // Transitions made in a process's own system call carry that process.
    let own = |ts: &[Transition], edge: &str, pid: u32, who: &str| {
        let t = find(ts, edge);
        assert!(
            t.pid == pid && t.comm == "tcpload",
            "{edge} is made by the {who} (pid {pid}) in its own system call, but shows pid {} comm {:?}\n{}",
            t.pid,
            t.comm,
            timeline(&ts_all(listener, client, child))
        );
    };
    own(listener, "CLOSE->LISTEN", server_pid, "server");
    own(client, "CLOSE->SYN_SENT", client_pid, "client");
    match closer {
        Closer::Client => {
            own(client, "ESTABLISHED->FIN_WAIT1", client_pid, "client");
            own(child, "CLOSE_WAIT->LAST_ACK", server_pid, "server");
        }
        Closer::Server => {
            own(child, "ESTABLISHED->FIN_WAIT1", server_pid, "server");
            own(client, "CLOSE_WAIT->LAST_ACK", client_pid, "client");
        }
    }
}

fn ts_all(a: &[Transition], b: &[Transition], c: &[Transition]) -> Vec<Transition> {
    let mut all: Vec<Transition> = a.iter().chain(b).chain(c).cloned().collect();
    all.sort_by_key(|t| t.ts_ns);
    all
}

#[test]
fn client_closes_first_ipv4() {
    single_connection(65101, "127.0.0.1", "ipv4", Closer::Client);
}

#[test]
fn server_closes_first_ipv4() {
    single_connection(65102, "127.0.0.1", "ipv4", Closer::Server);
}

#[test]
fn client_closes_first_ipv6() {
    single_connection(65104, "::1", "ipv6", Closer::Client);
}

#[test]
fn connection_refused() {
    privileged!();
    let ns = Netns::create();
    let expect = [Expect {
        role: "client",
        count: 2,
        edges: REFUSED,
    }];
    let portrace = Portrace::start(&["--port", "65103"]);
    tcpload!().client_refused(&ns, "127.0.0.1:65103", 2);
    let run = portrace.collect(expected_total(&expect), RECORDS_TIMEOUT, Duration::ZERO);
    let ts = run.transitions();
    let roles = assert_sequences(&ts, &expect);
    check_socket_invariants(&ts, Some("ipv4"));
    assert_all(&ts, "the refused clients connect to the closed port", |t| {
        t.daddr == "127.0.0.1" && t.dport == 65103
    });
    for client in roles.get("client") {
        assert_end(&ts, client, "refused", Some("ECONNREFUSED"), None);
    }
}

/// Two servers, each with `N` client-closes-first connections: the `outside` one's traffic
/// runs to completion first, then the `inside` one's, all traced with `filter`. Returns the
/// transitions after checking they are exactly `expect`. The caller holds the privileged
/// lock (`privileged!()`).
fn inside_and_outside(
    filter: &[&str],
    inside: &[&str],
    outside: &[&str],
    expect: &[Expect<'_>],
) -> Vec<Transition> {
    let ns = Netns::create();
    let load = tcpload!();
    let portrace = Portrace::start(filter);
    let servers: Vec<_> = inside
        .iter()
        .chain(outside)
        .map(|endpoint| {
            load.server(
                &ns,
                endpoint.trim_start_matches("mapped:"),
                N,
                Closer::Client,
            )
        })
        .collect();
    // A `mapped:` endpoint is listened on as given and connected to through an IPv6 socket
    // with the v4-mapped address, so both of that connection's ends are IPv4 to portrace.
    let connect = |endpoint: &str| match endpoint.strip_prefix("mapped:") {
        Some(v4) => {
            let (ip, port) = v4.rsplit_once(':').expect("ip:port");
            format!("[::ffff:{ip}]:{port}")
        }
        None => endpoint.to_string(),
    };
    for endpoint in outside.iter().chain(inside) {
        load.client(&ns, &connect(endpoint), N, 1, Closer::Client);
    }
    for server in servers {
        server.wait_success(WAIT);
    }
    let run = portrace.collect(expected_total(expect), RECORDS_TIMEOUT, Duration::ZERO);
    let ts = run.transitions();
    assert_sequences(&ts, expect);
    check_socket_invariants(&ts, None);
    ts
}

#[test]
fn filter_lport() {
    privileged!();
    // The local port is the listener's and its children's; the clients have it as their
    // remote port and are left out.
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
    let ts = inside_and_outside(
        &["--lport", "65111"],
        &["127.0.0.1:65111"],
        &["127.0.0.1:65112"],
        &expect,
    );
    assert_all(&ts, "every transition has local port 65111", |t| {
        t.sport == 65111
    });
}

#[test]
fn filter_rport() {
    privileged!();
    // Only the clients have the server's port as their remote port.
    let expect = [Expect {
        role: "client",
        count: N,
        edges: CLIENT_ACTIVE,
    }];
    let ts = inside_and_outside(
        &["--rport", "65113"],
        &["127.0.0.1:65113"],
        &["127.0.0.1:65114"],
        &expect,
    );
    assert_all(&ts, "every transition has remote port 65113", |t| {
        t.dport == 65113
    });
}

#[test]
fn filter_port() {
    privileged!();
    let expect = client_closes_first(N);
    let ts = inside_and_outside(
        &["--port", "65115"],
        &["127.0.0.1:65115"],
        &["127.0.0.1:65116"],
        &expect,
    );
    assert_all(&ts, "every transition has port 65115 at one end", |t| {
        t.has_port(65115)
    });
}

/// Servers on two addresses, the same port; `filter` must keep 127.0.0.10's traffic only.
/// The clients' own address is 127.0.0.1 (the kernel's source for any 127/8 destination),
/// so a network that held 127.0.0.1 would match everything: the CIDR case uses 127.0.0.8/30.
fn addr_filter(filter: &str, port: u16) {
    privileged!();
    let expect = client_closes_first(N);
    let inside = format!("127.0.0.10:{port}");
    let outside = format!("127.0.0.20:{port}");
    let ts = inside_and_outside(&["--addr", filter], &[&inside], &[&outside], &expect);
    assert_all(&ts, "every transition has 127.0.0.10 at one end", |t| {
        t.has_addr("127.0.0.10")
    });
    assert_none(&ts, "127.0.0.20 is outside the filter", |t| {
        t.has_addr("127.0.0.20")
    });
}

#[test]
fn filter_addr_exact() {
    addr_filter("127.0.0.10/32", 65117);
}

#[test]
fn filter_addr_cidr() {
    addr_filter("127.0.0.8/30", 65118);
}

#[test]
fn filter_ipv4_only() {
    privileged!();
    // Inside: an IPv4 client of the server on 127.0.0.1, and an IPv6 client socket talking
    // to the server on 127.0.0.2 through the v4-mapped address (portrace shows such a
    // connection as IPv4). Outside: the same port over IPv6.
    let expect = [
        Expect {
            role: "listener",
            count: 2,
            edges: LISTENER,
        },
        Expect {
            role: "client",
            count: 2 * N,
            edges: CLIENT_ACTIVE,
        },
        Expect {
            role: "child",
            count: 2 * N,
            edges: CHILD_PASSIVE,
        },
    ];
    let ts = inside_and_outside(
        &["-4", "--port", "65119"],
        &["127.0.0.1:65119", "mapped:127.0.0.2:65119"],
        &["[::1]:65119"],
        &expect,
    );
    assert_all(&ts, "only IPv4 is shown", |t| {
        t.family == "ipv4" && !t.saddr.contains(':') && !t.daddr.contains(':')
    });
}

#[test]
fn filter_ipv6_only() {
    privileged!();
    // Inside: IPv6 over ::1. Outside, on the same port: IPv4, and an IPv6 socket talking
    // IPv4 through the v4-mapped address (an IPv4 connection to portrace).
    let expect = client_closes_first(N);
    let ts = inside_and_outside(
        &["--ipv6", "--port", "65120"],
        &["[::1]:65120"],
        &["127.0.0.1:65120", "mapped:127.0.0.2:65120"],
        &expect,
    );
    assert_all(&ts, "only IPv6 is shown", |t| {
        t.family == "ipv6" && t.saddr.contains(':') && t.daddr.contains(':')
    });
}

#[test]
fn filter_pid() {
    privileged!();
    let ns = Netns::create();
    let load = tcpload!();
    // `--pid` keeps the sockets the process owns. Client A is held at its start line so its
    // pid can go into the filter before it makes any traffic; client B runs at the same
    // time with the same server, which starts only once portrace is attached. The server
    // listens on every address; A connects through 127.0.0.30 and B through 127.0.0.31 so
    // their sockets can be told apart.
    let mut client_a = load.spawn_client(&ns, "127.0.0.30:65121", N, 1, Closer::Client, true);
    let pid_a = client_a.pid();
    let pid_text = pid_a.to_string();
    let portrace = Portrace::start(&["--pid", &pid_text]);
    let server = load.server(&ns, "0.0.0.0:65121", 2 * N, Closer::Client);
    let server_pid = server.pid();
    let client_b = load.spawn_client(&ns, "127.0.0.31:65121", N, 1, Closer::Client, false);
    let pid_b = client_b.pid();
    Tcpload::go(&mut client_a);
    Tcpload::finish_client(client_a, N);
    Tcpload::finish_client(client_b, N);
    server.wait_success(WAIT);

    // Every transition of A's sockets, those the kernel makes in softirq while another
    // process is on the CPU included; nothing of B's or the server's.
    let expect = [Expect {
        role: "client",
        count: N,
        edges: CLIENT_ACTIVE,
    }];
    let run = portrace.collect(expected_total(&expect), RECORDS_TIMEOUT, Duration::ZERO);
    let ts = run.transitions();
    let roles = assert_sequences(&ts, &expect);
    check_socket_invariants(&ts, Some("ipv4"));
    for socket in roles.get("client") {
        assert_owner(&ts, socket, &Owner::usual("client A", pid_a, "tcpload", "syscall"));
    }
    assert_all(&ts, "client A connects through 127.0.0.30", |t| {
        t.daddr == "127.0.0.30" && t.dport == 65121
    });
    assert_none(
        &ts,
        &format!("the server's (pid {server_pid}) and client B's (pid {pid_b}) sockets are absent"),
        |t| t.owner_pid == Some(server_pid) || t.owner_pid == Some(pid_b),
    );
}

#[test]
fn filter_state() {
    privileged!();
    let ns = Netns::create();
    let load = tcpload!();
    // Two servers on the same port: on 127.0.0.1 the client closes first (the server's
    // child passes through CLOSE_WAIT), on 127.0.0.2 the server does (the client does).
    // `--port` scopes the run to this test's traffic.
    let portrace = Portrace::start(&["--state", "CLOSE_WAIT", "--port", "65122"]);
    let passive = load.server(&ns, "127.0.0.1:65122", N, Closer::Client);
    let active = load.server(&ns, "127.0.0.2:65122", N, Closer::Server);
    load.client(&ns, "127.0.0.1:65122", N, 1, Closer::Client);
    load.client(&ns, "127.0.0.2:65122", N, 1, Closer::Server);
    passive.wait_success(WAIT);
    active.wait_success(WAIT);
    let close_wait: &[&str] = &["ESTABLISHED->CLOSE_WAIT", "CLOSE_WAIT->LAST_ACK"];
    let expect = [Expect {
        role: "closewait",
        count: 2 * N,
        edges: close_wait,
    }];
    let run = portrace.collect(expected_total(&expect), RECORDS_TIMEOUT, Duration::ZERO);
    let ts = run.transitions();
    let roles = assert_sequences(&ts, &expect);
    check_socket_invariants(&ts, Some("ipv4"));
    let children = roles
        .get("closewait")
        .iter()
        .filter(|s| s.first().sport == 65122)
        .count();
    let clients = roles
        .get("closewait")
        .iter()
        .filter(|s| s.first().dport == 65122)
        .count();
    assert_eq!(
        (children, clients),
        (N, N),
        "CLOSE_WAIT is the server child's state when the client closes first, the client's when the server does\n{}",
        timeline(&ts)
    );
}

/// `--state CLOSE` with a local-port filter (`--port` is either end): a connect, held by the
/// kernel program until the socket's next transition shows its port, is kept although that
/// transition is not; and a client whose timewait timer the kernel moves is not taken for
/// killed. The server closes seconds after its clients: their timewait sockets, waiting in
/// FIN_WAIT2 for its FIN, then have their 60 s timer removed and re-armed in another
/// bucket of the kernel's timer wheel. The removal passes the filter (it would be a move
/// to CLOSE if nothing followed it); the re-arm, FIN_WAIT2 -> TIME_WAIT, does not.
#[test]
fn filter_state_close_keeps_connects_and_sees_no_kill_in_a_moved_timer() {
    privileged!();
    let ns = Netns::create();
    let load = tcpload!();
    let mut portrace = Portrace::start(&["--state", "CLOSE", "--port", "65146"]);
    let mut server = load.server_with(&ns, "127.0.0.1:65146", N, Closer::Client, &["--keep-open"]);
    load.client(&ns, "127.0.0.1:65146", N, 1, Closer::Client);
    server.wait_line(&format!("done {N}"), WAIT);
    // Wheel buckets for a 60 s timer span 2 s at 250 Hz, 4 s at 1000 Hz, 5.1 s at 100 Hz.
    std::thread::sleep(Duration::from_millis(5_500));
    server.close_stdin();
    server.wait_success(WAIT);
    let expect = [
        Expect {
            role: "listener",
            count: 1,
            edges: LISTENER,
        },
        Expect {
            role: "client",
            count: N,
            edges: &["CLOSE->SYN_SENT"],
        },
        Expect {
            role: "child",
            count: N,
            edges: &["LAST_ACK->CLOSE"],
        },
    ];
    portrace.wait_for_transitions(expected_total(&expect), RECORDS_TIMEOUT);
    // A removal is taken for a kill once nothing followed it for 20 ms: give it the time.
    std::thread::sleep(Duration::from_millis(300));
    let run = portrace.stop();
    run.assert_clean();
    let ts = run.transitions();
    let roles = assert_sequences(&ts, &expect);
    assert_all(&ts, "no TIME_WAIT is said to be cut short", |t| t.reason.as_deref() != Some("time_wait_killed"));
    assert!(
        roles.get("client").iter().all(|s| s.first().dport == 65146),
        "the connects are the clients' own:\n{}",
        timeline(&ts)
    );
    // The clients are in TIME_WAIT now, so their timers did move.
    let time_wait = ns.time_wait_ports(65146);
    assert_eq!(time_wait.len(), N, "every client is in TIME_WAIT: {time_wait:?}");
}

/// Stops portrace once it has accounted for (received or reported lost) every transition
/// of `connections` client-closes-first connections to `port` in `ns` and the kernel's own
/// list of TIME_WAIT sockets has stopped changing (or `timeout` passed). Every connection
/// makes 10 transitions and the listener 2; a client's TIME_WAIT that the kernel ends
/// early (the namespace ignores resets, RFC 1337, but not every cause) is one more
/// transition, `TIME_WAIT->CLOSE`. Which ones is the kernel's choice, so the kernel is
/// asked: returns the run and the local ports of the clients in TIME_WAIT just
/// before portrace was stopped and just after, for the caller to compare.
fn stop_when_settled(
    mut portrace: Portrace,
    ns: &Netns,
    port: u16,
    connections: usize,
    timeout: Duration,
) -> (Run, BTreeSet<u16>, BTreeSet<u16>) {
    // The kernel's list is only worth comparing while its TIME_WAITs last (60 s): stop well
    // before, so a run that never settles fails on what is missing, not on expiries.
    let deadline = Instant::now() + timeout.min(Duration::from_secs(40));
    let base = connections as u64 * 10 + 2;
    let mut time_wait = ns.time_wait_ports(port);
    loop {
        let killed = connections.saturating_sub(time_wait.len()) as u64;
        let left = deadline.saturating_duration_since(Instant::now());
        let (received, lost) =
            portrace.wait_accounted(base + killed, left.min(Duration::from_secs(1)));
        let again = ns.time_wait_ports(port);
        let settled = again == time_wait && received as u64 + lost >= base + killed;
        time_wait = again;
        if settled || Instant::now() >= deadline {
            break;
        }
    }
    let run = portrace.stop();
    run.assert_clean();
    let after = ns.time_wait_ports(port);
    (run, time_wait, after)
}

/// At 40,000 connections/s the kernel skips the main program hundreds of times a burst,
/// often in the narrow moments as it starts or ends a run (the backup program's notes are
/// for those), and a softirq that lands just before the backup program starts handles a
/// whole batch of packets with no backup runs at all. Every transition must then be shown
/// once or counted lost: none twice, none missing without a count. (Losses are allowed
/// here, unlike at 15,000/s above, because the kernel's uncounted gap, which portrace
/// counts from ftrace's tally, is likelier at this rate.)
/// The sockets still open when portrace stops are checked against the kernel's socket
/// table (a hole there is a transition lost with no count): listening, established and
/// CLOSE_WAIT sockets, IPv4 and IPv6, in a namespace. The kernel lists every one as
/// portrace has it, so portrace says it checked them and reports nothing lost.
#[test]
fn sockets_open_at_the_end_are_checked_against_the_kernel() {
    privileged!();
    let ns = Netns::create();
    let load = tcpload!();
    let (v4, v6) = ("127.0.0.1:65143", "[::1]:65144");
    let mut portrace = Portrace::start(&["--port", "65143", "--port", "65144"]);
    // Established both ways: the server reads until the client's EOF, the client holds.
    let server4 = load.server(&ns, v4, N, Closer::Client);
    let mut client4 = load.spawn_client_with(&ns, v4, N, 1, Closer::Client, &["--hold"]);
    client4.wait_line(&format!("connected {N}"), WAIT);
    // CLOSE_WAIT: the server closes each connection at once, the client holds its end.
    let server6 = load.server(&ns, v6, N, Closer::Server);
    let mut client6 = load.spawn_client_with(&ns, v6, N, 1, Closer::Server, &["--hold"]);
    client6.wait_line(&format!("connected {N}"), WAIT);
    let settled = portrace.wait_until(RECORDS_TIMEOUT, |r| {
        let ts = portrace_tests::records::transitions(r);
        let count = |edge: &str| ts.iter().filter(|t| t.edge() == edge).count();
        count("SYN_RECV->ESTABLISHED") == 2 * N && count("ESTABLISHED->CLOSE_WAIT") == N
    });
    // Past the time a socket's last transition must be old for the check to judge it.
    std::thread::sleep(Duration::from_millis(500));
    let run = portrace.stop();
    Tcpload::go(&mut client4);
    Tcpload::go(&mut client6);
    Tcpload::finish_client(client4, N);
    Tcpload::finish_client(client6, N);
    server4.wait_success(WAIT);
    server6.wait_success(WAIT);

    run.assert_clean();
    assert!(settled, "the connections did not show up:\n{}", timeline(&run.transitions()));
    let losses = lost_total(&run.records);
    assert_eq!(
        (losses.in_stream, losses.at_end),
        (0, Some(0)),
        "no transition is lost, and none may be reported lost: {:?}\n{}",
        losses.by_cause,
        run.stderr
    );
    // The IPv4 client and server ends (established) and the IPv6 client ends (CLOSE_WAIT)
    // at least; the listeners too while their servers still listen.
    let checked: usize = run
        .stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_suffix(" sockets still open checked against the kernel's socket table: every one as the kernel lists it")
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("portrace does not say it checked the open sockets:\n{}", run.stderr));
    assert!(checked >= 3 * N, "{checked} sockets checked, fewer than the {} open:\n{}", 3 * N, run.stderr);
}

#[test]
fn burst_at_40000_per_second_shows_every_transition_once_or_counts_it_lost() {
    const CONNECTIONS: usize = 10_000;
    privileged!();
    let ns = Netns::create();
    let load = tcpload!();
    let portrace = Portrace::start(&["--port", "65133"]);
    let server = load.server(&ns, "127.0.0.1:65133", CONNECTIONS, Closer::Client);
    let client = load.spawn_client_with(&ns, "127.0.0.1:65133", CONNECTIONS, 2, Closer::Client, &["--rate", "40000"]);
    Tcpload::finish_client(client, CONNECTIONS);
    server.wait_success(WAIT);
    let (run, time_wait, after) = stop_when_settled(portrace, &ns, 65133, CONNECTIONS, Duration::from_secs(60));
    assert_eq!(after, time_wait, "a client's TIME_WAIT began or ended while portrace was being stopped");
    let killed = CONNECTIONS - time_wait.len();
    let roles: [(&str, &[&str]); 4] = [
        ("listener", LISTENER),
        ("client", CLIENT_ACTIVE),
        ("killed client", CLIENT_ACTIVE_ENDED),
        ("child", CHILD_PASSIVE),
    ];
    let expected = 2 + time_wait.len() * CLIENT_ACTIVE.len() + killed * CLIENT_ACTIVE_ENDED.len()
        + CONNECTIONS * CHILD_PASSIVE.len();
    let ts = run.transitions();
    let losses = lost_total(&run.records);
    eprintln!(
        "burst at 40,000/s: {} shown and {} lost (by cause {:?}) of {expected}",
        ts.len(),
        losses.in_stream,
        losses.by_cause
    );
    // Each socket shows a part of what its kind of socket goes through, in order, with no
    // transition twice.
    for socket in by_socket(&ts) {
        let edges = socket.edges();
        let fits = |of: &[&str]| {
            let mut rest = of.iter();
            edges.iter().all(|e| rest.any(|o| o == e))
        };
        assert!(
            roles.iter().any(|(_, of)| fits(of)),
            "socket {} shows {edges:?}, which is no socket's sequence here (a transition twice, \
             or out of order); the kinds: {roles:?}",
            socket.socket
        );
    }
    // Dropped timewait records (timer bookkeeping) hide a transition only when they were a
    // TIME_WAIT being killed: then a killed client may show no end, uncounted.
    let accounted = ts.len() as u64 + losses.transitions();
    let hidden_at_most = losses.hidden_at_most(killed);
    assert!(
        accounted <= expected as u64 && expected as u64 - accounted <= hidden_at_most,
        "every transition shown once or counted lost: {} shown + {} lost = {accounted} of \
         {expected} ({killed} TIME_WAITs killed by the kernel; {} timewait records dropped)",
        ts.len(),
        losses.transitions(),
        losses.timewait_records()
    );
    assert_eq!(losses.at_end, Some(losses.in_stream), "the end record counts the same losses");
}

#[test]
fn tiny_ring_reports_losses() {
    const CONNECTIONS: usize = 5_000;
    privileged!();
    let ns = Netns::create();
    let load = tcpload!();
    let portrace = Portrace::start(&["--ring-size", "4096", "--port", "65131"]);
    let server = load.server(&ns, "127.0.0.1:65131", CONNECTIONS, Closer::Client);
    load.client(&ns, "127.0.0.1:65131", CONNECTIONS, 4, Closer::Client);
    server.wait_success(WAIT);
    let (run, before, after) = stop_when_settled(portrace, &ns, 65131, CONNECTIONS, RECORDS_TIMEOUT);
    // With the ring overflowing, portrace's own count cannot tell when the traffic's last
    // transitions are in: a client may enter TIME_WAIT, or leave it, while portrace stops.
    // Those may or may not be in the run, and either is right.
    // Killed for sure: listed at neither time. Entered TIME_WAIT late: the end of its
    // close may come after the run (softirqs deferred to ksoftirqd on a busy host), up to
    // its FIN_WAIT1 -> FIN_WAIT2 and FIN_WAIT2 -> TIME_WAIT and its server's LAST_ACK ->
    // CLOSE, which the same ACKs make; left it late: its TIME_WAIT -> CLOSE may be there.
    const LATE_CLOSE: u64 = 3;
    let killed = CONNECTIONS - before.union(&after).count();
    let (entered_late, killed_late) = (after.difference(&before).count(), before.difference(&after).count());
    let expected_max = CONNECTIONS as u64 * 10 + 2 + (killed + killed_late) as u64;
    let expected = expected_max - killed_late as u64 - LATE_CLOSE * entered_late as u64;
    let ts = run.transitions();
    let losses = lost_total(&run.records);
    let summary = run.summary();
    let received = ts.len() as u64;
    // What the run shows of each client that entered TIME_WAIT late, and of its server side.
    let late: Vec<(u16, Vec<String>)> = after
        .difference(&before)
        .map(|port| (*port, ts.iter().filter(|t| t.sport == *port || t.dport == *port).map(|t| t.edge()).collect()))
        .collect();
    let numbers = format!(
        "expected {expected} to {expected_max} transitions ({killed} TIME_WAITs killed by the \
         kernel; while portrace stopped, {killed_late} left TIME_WAIT and {entered_late} entered it, \
         shown as {late:?}): received \
         {received}, lost {} in {} lost records by cause {:?}, end record lost {:?}, summary \
         {summary:?}",
        losses.in_stream, losses.records, losses.by_cause, losses.at_end
    );
    eprintln!("tiny ring: {numbers}");

    assert!(
        losses.records >= 1 && losses.in_stream > 0,
        "a 4 KiB ring must overflow: {numbers}"
    );
    assert!(
        run.records
            .iter()
            .filter(|r| r["type"] == "lost")
            .all(|r| r["count"].as_u64() > Some(0)),
        "every lost record counts something: {numbers}"
    );
    assert!(
        summary.lost > 0,
        "the summary reports the losses: {numbers}\n{}",
        run.stderr
    );
    assert_eq!(
        summary.transitions, received,
        "the summary counts what was printed: {numbers}"
    );
    assert_eq!(
        losses.at_end,
        Some(losses.in_stream),
        "the end record totals the lost records: {numbers}"
    );
    assert_eq!(
        summary.lost, losses.in_stream,
        "the summary totals the lost records: {numbers}"
    );

    // Nothing is invented: every edge is one the traffic made, at most as often as it did.
    let made: Vec<(&str, usize)> = LISTENER
        .iter()
        .map(|e| (*e, 1))
        .chain(
            CLIENT_ACTIVE
                .iter()
                .chain(CHILD_PASSIVE)
                .map(|e| (*e, CONNECTIONS)),
        )
        .chain([("TIME_WAIT->CLOSE", killed + killed_late)])
        .collect();
    for t in &ts {
        assert!(
            made.iter().any(|(e, _)| *e == t.edge()),
            "{} was not made by the traffic: {numbers}",
            t.line()
        );
    }
    for (edge, per) in &made {
        let n = ts.iter().filter(|t| t.edge() == *edge).count();
        assert!(
            n <= *per,
            "{edge} seen {n} times, at most {per} happened: {numbers}"
        );
    }
    assert!(
        received <= expected_max,
        "more transitions than the traffic made: {numbers}"
    );
    // A transition that finds the ring full is counted after the filter, so received +
    // lost is exact when every loss is `ring_full`, but for kills: a dropped timewait
    // record (`timewait`, timer bookkeeping) can hide a killed TIME_WAIT's end. A
    // transition the kernel skipped the program for (`skipped`, from the program's
    // recursion misses) is counted before the filter can see it, so it may have been
    // anyone's: then only `>=` holds.
    let accounted = received + losses.transitions();
    if losses.by_cause.keys().all(|cause| cause == "ring_full" || cause == "timewait") {
        let hidden_at_most = losses.hidden_at_most(killed + killed_late);
        assert!(
            (expected.saturating_sub(hidden_at_most)..=expected_max).contains(&accounted),
            "received + lost must account for every transition: {numbers}"
        );
    } else {
        assert!(accounted >= expected, "received + lost must cover every transition: {numbers}");
    }
}

/// A burst that makes the kernel skip portrace's main program many times (a softirq
/// interrupting it): the backup program must recover every one, and nothing may be lost.
/// The 20,000-connection burst at the machine's maximum rate is measured by `cargo xtask
/// bench` (docs/benchmark.md). There, at 30,000 connections/s and more on a 2-CPU machine,
/// the kernel sometimes runs the tracepoint's other probes (ftrace's) but neither of
/// portrace's programs, and counts no miss: rarely at 15,000/s, more at higher rates.
/// portrace counts those as lost (see the README's caveats); this test asks for none, and
/// the next one, at 40,000/s, for each transition shown once or counted lost.
#[test]
fn burst_5000_connections_at_15000_per_second_lossless() {
    const CONNECTIONS: usize = 5_000;
    privileged!();
    let ns = Netns::create();
    let load = tcpload!();
    let portrace = Portrace::start(&["--port", "65132"]);
    let server = load.server(&ns, "127.0.0.1:65132", CONNECTIONS, Closer::Client);
    let started = Instant::now();
    // 15,000 connections/s: fast enough that the kernel skips the main program hundreds of
    // times (a softirq interrupting it), below the rate where it skips BPF altogether.
    let client = load.spawn_client_with(
        &ns,
        "127.0.0.1:65132",
        CONNECTIONS,
        2,
        Closer::Client,
        &["--rate", "15000"],
    );
    Tcpload::finish_client(client, CONNECTIONS);
    let elapsed = started.elapsed();
    server.wait_success(WAIT);
    // Until every transition is accounted for, received or lost (a shortfall then shows
    // in the assertions below at once instead of at the deadline).
    let (run, time_wait, after) =
        stop_when_settled(portrace, &ns, 65132, CONNECTIONS, Duration::from_secs(60));
    assert_eq!(
        after, time_wait,
        "a client's TIME_WAIT began or ended while portrace was being stopped, so the run cannot \
         be compared with the kernel's list"
    );
    let killed = CONNECTIONS - time_wait.len();
    let expect = [
        Expect {
            role: "listener",
            count: 1,
            edges: LISTENER,
        },
        Expect {
            role: "client",
            count: time_wait.len(),
            edges: CLIENT_ACTIVE,
        },
        Expect {
            role: "killed",
            count: killed,
            edges: CLIENT_ACTIVE_ENDED,
        },
        Expect {
            role: "child",
            count: CONNECTIONS,
            edges: CHILD_PASSIVE,
        },
    ];
    let expected = expected_total(&expect);
    let losses = lost_total(&run.records);
    let summary = run.summary();
    let ts = run.transitions();
    eprintln!(
        "burst: {CONNECTIONS} connections in {:.3} s ({:.0}/s); {} of {expected} transitions \
         ({killed} TIME_WAITs killed by the kernel); lost {} (by cause {:?}, end record {:?}); \
         summary {summary:?}",
        elapsed.as_secs_f64(),
        CONNECTIONS as f64 / elapsed.as_secs_f64(),
        ts.len(),
        losses.in_stream,
        losses.by_cause,
        losses.at_end
    );
    // portrace itself loses nothing at this rate. The kernel may still hand a few hits to no
    // BPF program at all (docs/caveats.md): those are counted (`skipped`) and must account
    // for exactly what is missing, but then no socket-by-socket comparison can hold.
    let skipped = losses.by_cause.get("skipped").copied().unwrap_or(0);
    assert_eq!(
        (losses.in_stream - skipped, losses.at_end, summary.lost),
        (0, Some(losses.in_stream), losses.in_stream),
        "an unpaced burst of {CONNECTIONS} connections must lose nothing but what the kernel \
         skipped (lost records {:?})",
        losses.by_cause
    );
    if skipped > 0 {
        // A skipped hit is counted before the filter sees it, so it may have been another
        // socket's: what is missing is at most what was skipped.
        let shown = ts.len() as u64;
        assert!(
            shown <= expected as u64 && shown + skipped >= expected as u64,
            "with {skipped} hits skipped by the kernel, {shown} of {expected} transitions shown"
        );
        check_socket_invariants(&ts, Some("ipv4"));
        eprintln!("burst: the kernel skipped {skipped} hits; compared by count only");
        return;
    }
    // Sockets first: a shortfall then names the sockets that lack transitions, and what
    // each one did.
    let roles = assert_sequences(&ts, &expect);
    assert_eq!(
        ts.len(),
        expected,
        "every transition of {CONNECTIONS} connections, exactly once ({killed} of the clients' \
         TIME_WAITs were ended early by the kernel)"
    );
    check_socket_invariants(&ts, Some("ipv4"));
    // The clients portrace shows in TIME_WAIT are exactly those the kernel lists in
    // TIME_WAIT, each once; the others left TIME_WAIT early, killed. (A killed one's port may
    // be in the kernel's list all the same: a later connection took the freed port.)
    let mut shown: Vec<u16> = roles
        .get("client")
        .iter()
        .map(SocketTimeline::local_port)
        .collect();
    shown.sort_unstable();
    let listed: Vec<u16> = time_wait.iter().copied().collect();
    if shown != listed {
        let shown_set: BTreeSet<u16> = shown.iter().copied().collect();
        panic!(
            "the clients portrace shows in TIME_WAIT are not those the kernel lists: {} shown, \
             {} listed; shown only by portrace (or twice): {:?}; listed only by the kernel: \
             {:?}",
            shown.len(),
            listed.len(),
            shown
                .windows(2)
                .filter(|w| w[0] == w[1])
                .map(|w| w[0])
                .chain(shown_set.difference(&time_wait).copied())
                .take(20)
                .collect::<Vec<_>>(),
            time_wait
                .difference(&shown_set)
                .take(20)
                .collect::<Vec<_>>()
        );
    }
    for client in roles.get("killed") {
        assert_end(&ts, client, "time_wait_killed", None, None);
    }
}
