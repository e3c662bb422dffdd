use std::net::Ipv4Addr;

use super::analysis::*;
use super::text::*;
use super::*;
use crate::format::HumanDuration;
use crate::record::{Lost, OwnerSource, SocketRecord, Transition};
use TcpState::*;

const US: u64 = 1_000;
const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;
/// 2026-11-29T02:41:07Z, when the monotonic clock read 1000 s: the trace's start.
const UNIX0: i128 = 1_795_920_067_000_000_000;
const MONO0: u64 = 1_000 * S;
const NETNS: u32 = 4_026_531_840;
/// When the traces of these tests end.
const END: u64 = 65 * S;

fn at(after_ns: u64) -> Timestamp {
    Timestamp { mono_ns: MONO0 + after_ns, unix_ns: UNIX0 + i128::from(after_ns) }
}

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

const ANY: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

fn owner(pid: u32, comm: &str, source: OwnerSource) -> Option<Owner> {
    Some(Owner { pid, comm: Comm::new(comm), source, cgroup: 0 })
}

fn nginx(source: OwnerSource) -> Option<Owner> {
    owner(300, "nginx", source)
}

fn curl() -> Option<Owner> {
    owner(4242, "curl", OwnerSource::Syscall)
}

fn inventory(
    socket: u64,
    local: (IpAddr, u16),
    remote: (IpAddr, u16),
    state: TcpState,
    owner: Option<Owner>,
) -> SocketRecord {
    SocketRecord {
        time: at(0),
        socket,
        family: Family::Ipv4,
        ends: Endpoints { saddr: local.0, sport: local.1, daddr: remote.0, dport: remote.1, netns: NETNS },
        state,
        owner,
        inode: 1000 + socket,
        uid: 0,
        cookie: 5000 + socket,
    }
}

/// One connection's transitions: its endpoints, owner, and how it ends (set on its
/// transition into CLOSE).
#[derive(Clone, Copy)]
struct Script {
    socket: u64,
    local: (IpAddr, u16),
    remote: (IpAddr, u16),
    owner: Option<Owner>,
    reason: Option<EndReason>,
    error: Option<i32>,
    retransmits: u8,
    netns: u32,
}

impl Script {
    fn new(
        socket: u64,
        local: (IpAddr, u16),
        remote: (IpAddr, u16),
        owner: Option<Owner>,
    ) -> Script {
        Script {
            socket,
            local,
            remote,
            owner,
            reason: None,
            error: None,
            retransmits: 0,
            netns: NETNS,
        }
    }

    fn ends(self, reason: EndReason, error: Option<i32>) -> Script {
        Script { reason: Some(reason), error, ..self }
    }

    fn transition(
        &self,
        after_ns: u64,
        old: TcpState,
        new: TcpState,
        prev: Option<u64>,
    ) -> Transition {
        let closing = new == Close;
        Transition {
            reason: if closing { self.reason } else { None },
            error: if closing { self.error } else { None },
            retransmits: if closing { self.retransmits } else { 0 },
            ..Transition::example(self.socket, old, new)
                .at(at(after_ns))
                .on_cpu(0, Comm::new("swapper/1"))
                .between(self.local, self.remote)
                .after(prev)
                .owned_by(self.owner)
                .in_netns(self.netns)
        }
    }

    /// Plays `first` at `t0` with no time in its old state, then each `(ns, next)`:
    /// `ns` in the current state, then into `next`. Returns when the last one happened.
    fn play(
        &self,
        r: &mut Report,
        t0: u64,
        first: (TcpState, TcpState),
        steps: &[(u64, TcpState)],
    ) -> u64 {
        r.add_transition(&self.transition(t0, first.0, first.1, None));
        let (mut now, mut state) = (t0, first.1);
        for &(ns, next) in steps {
            now += ns;
            r.add_transition(&self.transition(now, state, next, Some(ns)));
            state = next;
        }
        now
    }
}

/// The trace most tests look at, ending at [`END`] (65 s):
///
/// - 1: nginx's listener on 0.0.0.0:8080, from the inventory, open to the end;
/// - 2: a server connection of nginx from the inventory, closed by the peer at 2.5 s;
/// - 3: a TIME_WAIT from the inventory, with no owner, expiring at 20 s;
/// - 10: curl, client-first close through TIME_WAIT;
/// - 20: an nginx child, server-first close, in TIME_WAIT at the end;
/// - 11: curl, refused; 12: curl, connect timeout;
/// - 13: python, in CLOSE_WAIT at the end;
/// - 21: an nginx child reset by its peer;
/// - 3 transitions lost at 30 s, then 15: first seen in ESTABLISHED (its entry lost),
///   then aborted;
/// - 14: curl, in TIME_WAIT at the end.
fn scenario(options: ReportOptions) -> Report {
    use EndReason::*;
    use OwnerSource::{Inventory, Listener};
    let mut r = Report::new(options);
    let server = (ip(1), 8080);
    r.add_socket(&inventory(1, (ANY, 8080), (ANY, 0), Listen, nginx(Inventory)));
    r.add_socket(&inventory(2, server, (ip(9), 40000), Established, nginx(Inventory)));
    r.add_socket(&inventory(3, (ip(1), 50100), (ip(2), 443), TimeWait, None));

    let s2 = Script::new(2, server, (ip(9), 40000), nginx(Inventory)).ends(PassiveClose, None);
    r.add_transition(&Transition {
        prev_state_at_least: true,
        ..s2.transition(2 * S, Established, CloseWait, Some(2 * S))
    });
    r.add_transition(&s2.transition(2500 * MS, CloseWait, LastAck, Some(500 * MS)));
    r.add_transition(&s2.transition(2500 * MS + 100 * US, LastAck, Close, Some(100 * US)));

    let s10 = Script::new(10, (ip(1), 50000), (ip(2), 443), curl()).ends(ActiveClose, None);
    s10.play(
        &mut r,
        100 * MS,
        (Close, SynSent),
        &[
            (84_123, Established),
            (2300 * MS, FinWait1),
            (40 * US, FinWait2),
            (1200 * US, TimeWait),
            (60 * S, Close),
        ],
    );

    let s20 = Script::new(20, server, (ip(3), 41000), nginx(Listener));
    s20.play(
        &mut r,
        S,
        (Listen, SynRecv),
        &[
            (30 * US, Established),
            (1500 * MS, FinWait1),
            (50 * US, FinWait2),
            (2 * MS, TimeWait),
        ],
    );

    let s11 = Script::new(11, (ip(1), 50001), (ip(2), 81), curl())
        .ends(Refused, Some(libc::ECONNREFUSED));
    s11.play(&mut r, 3 * S, (Close, SynSent), &[(150 * US, Close)]);

    let s12 = Script {
        retransmits: 2,
        ..Script::new(12, (ip(1), 50002), (ip(5), 443), curl())
            .ends(ConnectTimeout, Some(libc::ETIMEDOUT))
    };
    s12.play(&mut r, 4 * S, (Close, SynSent), &[(7 * S, Close)]);

    let s13 = Script::new(
        13,
        (ip(1), 50003),
        (ip(2), 443),
        owner(77, "python", OwnerSource::Syscall),
    );
    s13.play(&mut r, 5 * S, (Close, SynSent), &[(200 * US, Established), (10 * S, CloseWait)]);

    let s21 = Script::new(21, server, (ip(4), 42000), nginx(Listener))
        .ends(ResetByPeer, Some(libc::ECONNRESET));
    s21.play(&mut r, 6 * S, (Listen, SynRecv), &[(250 * US, Established), (S, Close)]);

    let s3 = Script::new(3, (ip(1), 50100), (ip(2), 443), None).ends(ActiveClose, None);
    r.add_transition(&Transition {
        prev_state_at_least: true,
        ..s3.transition(20 * S, TimeWait, Close, Some(20 * S))
    });

    r.add_lost(&Lost { time: at(30 * S), count: 3, cause: LossCause::RingFull });

    let s15 = Script::new(15, (ip(1), 50005), (ip(6), 80), curl()).ends(ResetSent, None);
    r.add_transition(&s15.transition(31 * S, Established, FinWait1, None));
    r.add_transition(&s15.transition(31 * S + 60 * US, FinWait1, Close, Some(60 * US)));

    let s14 = Script::new(14, (ip(1), 50004), (ip(2), 443), curl());
    s14.play(
        &mut r,
        40 * S,
        (Close, SynSent),
        &[(MS, Established), (3 * S, FinWait1), (100 * US, FinWait2), (900 * US, TimeWait)],
    );

    r.finish(at(END));
    r
}

fn analysis(r: &Report) -> &Analysis {
    r.analysis.as_ref().expect("finished")
}

/// A row as the text table shows it: role, owner, lifetime, end, states.
fn row(r: &Report, socket: u64) -> [String; 5] {
    let a = analysis(r);
    let index = r.index[&socket];
    let c = &r.conns[index];
    let (lifetime, at_least) = Report::lifetime(c, a.end);
    [
        a.roles[index].name().to_string(),
        owner_text(c.owner.as_ref()),
        duration_text(Some(lifetime), at_least),
        ending_text(c),
        states_text(c, a.end),
    ]
}

fn stats(list: &[Stats], state: TcpState) -> Stats {
    *list.iter().find(|s| s.state == state).unwrap_or_else(|| panic!("no {state}"))
}

fn exact(ns: u64) -> Option<Sample> {
    Some(Sample { ns, at_least: false })
}

fn lower(ns: u64) -> Option<Sample> {
    Some(Sample { ns, at_least: true })
}

fn text(r: &Report) -> String {
    let mut out = Vec::new();
    r.write_text(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn json(r: &Report) -> serde_json::Value {
    let mut out = Vec::new();
    r.write_json(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.ends_with("}\n") && text.matches('\n').count() == 1, "one line: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn each_connection_row_shows_its_states_and_durations() {
    let r = scenario(ReportOptions::default());
    let expect = |socket, want: [&str; 5]| {
        assert_eq!(row(&r, socket), want.map(String::from), "socket {socket}")
    };
    expect(1, ["listener", "300/nginx", ">=1m05s", "open", "LISTEN >=1m05s"]);
    expect(
        2,
        [
            "server",
            "300/nginx",
            ">=2.50s",
            "closed by the peer",
            "ESTABLISHED >=2.00s > CLOSE_WAIT 500ms > LAST_ACK 100us",
        ],
    );
    expect(3, ["client", "-", ">=20.0s", "closed by this side", "TIME_WAIT >=20.0s"]);
    // 84.123us + 2.3s + 40us + 1.2ms + 60s = 62.301324123s.
    expect(10, [
        "client",
        "4242/curl",
        "1m02s",
        "closed by this side",
        "SYN_SENT 84.1us > ESTABLISHED 2.30s > FIN_WAIT1 40.0us > FIN_WAIT2 1.20ms > TIME_WAIT 1m00s",
    ]);
    // In TIME_WAIT from 2.50208s to the end at 65s: 62.49792s so far.
    expect(20, [
        "server",
        "300/nginx",
        ">=1m04s",
        "open",
        "SYN_RECV 30.0us > ESTABLISHED 1.50s > FIN_WAIT1 50.0us > FIN_WAIT2 2.00ms > TIME_WAIT >=1m02s",
    ]);
    expect(
        11,
        ["client", "4242/curl", "150us", "connection refused (ECONNREFUSED)", "SYN_SENT 150us"],
    );
    expect(
        12,
        [
            "client",
            "4242/curl",
            "7.00s",
            "connect timed out (ETIMEDOUT), after 2 retransmits",
            "SYN_SENT 7.00s",
        ],
    );
    expect(
        13,
        [
            "client",
            "77/python",
            ">=1m00s",
            "open",
            "SYN_SENT 200us > ESTABLISHED 10.0s > CLOSE_WAIT >=49.9s",
        ],
    );
    expect(
        21,
        [
            "server",
            "300/nginx",
            "1.00s",
            "reset by peer (ECONNRESET)",
            "SYN_RECV 250us > ESTABLISHED 1.00s",
        ],
    );
    expect(
        15,
        [
            "client",
            "4242/curl",
            ">=60.0us",
            "aborted: reset sent",
            "ESTABLISHED ? > FIN_WAIT1 60.0us",
        ],
    );
    expect(14, [
        "client",
        "4242/curl",
        ">=25.0s",
        "open",
        "SYN_SENT 1.00ms > ESTABLISHED 3.00s > FIN_WAIT1 100us > FIN_WAIT2 900us > TIME_WAIT >=21.9s",
    ]);

    // Exact figures behind the rounded text.
    let c10 = &r.conns[r.index[&10]];
    assert_eq!(Report::lifetime(c10, at(END)), (62_301_324_123, false));
    let c20 = &r.conns[r.index[&20]];
    assert_eq!(Report::ongoing(c20, at(END)), Some((TimeWait, 62_497_920_000)));
    // The listener's children: 20 and 21, matched on the wildcard address.
    assert_eq!(r.conns[r.index[&1]].children, 2);
    assert_eq!(r.unmatched_children, 0);
    // Rows in order of first sight.
    let order: Vec<u64> = analysis(&r).order.iter().map(|&i| r.conns[i].socket).collect();
    assert_eq!(order, [1, 2, 3, 10, 20, 11, 12, 13, 21, 15, 14]);
}

#[test]
fn transition_matrix_counts_every_kind() {
    let r = scenario(ReportOptions::default());
    let mut seen = Vec::new();
    for old in LIFE_ORDER {
        for new in LIFE_ORDER {
            let n = r.matrix[slot(old)][slot(new)];
            if n > 0 {
                seen.push((old, new, n));
            }
        }
    }
    assert_eq!(
        seen,
        [
            (Close, SynSent, 5),
            (Listen, SynRecv, 2),
            (SynSent, Close, 2),
            (SynSent, Established, 3),
            (SynRecv, Established, 2),
            (Established, Close, 1),
            (Established, FinWait1, 4),
            (Established, CloseWait, 2),
            (FinWait1, Close, 1),
            (FinWait1, FinWait2, 3),
            (FinWait2, TimeWait, 3),
            (TimeWait, Close, 2),
            (CloseWait, LastAck, 1),
            (LastAck, Close, 1),
        ]
    );
    assert_eq!(r.transitions, 32);
    assert_eq!(seen.iter().map(|&(_, _, n)| n).sum::<u64>(), 32);

    // The text table: rows are from-states, columns to-states, both in life order.
    let text = text(&r);
    let matrix: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Transitions"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(
        matrix[0],
        "FROM \\ TO    CLOSE  SYN_SENT  SYN_RECV  ESTABLISHED  FIN_WAIT1  FIN_WAIT2  TIME_WAIT  CLOSE_WAIT  LAST_ACK"
    );
    assert_eq!(
        matrix[1],
        "CLOSE            .         5         .            .          .          .          .           .         ."
    );
    assert_eq!(
        matrix[5],
        "ESTABLISHED      1         .         .            .          4          .          .           2         ."
    );
    assert_eq!(matrix.len(), 11, "{text}");
}

#[test]
fn histogram_buckets_are_within_a_32nd_of_their_values() {
    let mut ns = 0u64;
    while ns < u64::MAX >> 1 {
        let b = bucket(ns);
        assert!(b < BUCKETS, "{ns}");
        let high = bucket_high(b);
        assert!(high >= ns && high - ns <= ns / 32, "{ns}: bucket {b} ends at {high}");
        assert_eq!(bucket(high), b, "{ns}");
        ns += ns / 8 + 1;
    }
    // Past the limit the percentiles come from buckets; below it they are exact.
    let mut g = Gather::default();
    for ns in 1..=1_000u64 {
        g.add(Sample::pack(ns * 1_000, false), 500);
    }
    assert!(g.histogram.is_some() && g.samples.is_empty());
    let stats = Gathers([(); 12].map(|_| g.clone())).into_stats();
    let s = stats[0];
    assert!(s.approximate);
    assert_eq!((s.count, s.max), (1_000, Some(Sample { ns: 1_000_000, at_least: false })));
    let p50 = s.p50.unwrap().ns;
    assert!((500_000..=500_000 + 500_000 / 32).contains(&p50), "{p50}");
}

#[test]
fn nearest_rank_percentiles() {
    assert_eq!(nearest_rank(&[], 50), None);
    assert_eq!(nearest_rank(&[7], 50), Some(7));
    assert_eq!(nearest_rank(&[7], 99), Some(7));
    let ten: Vec<u64> = (1..=10).collect();
    // Ranks ⌈5⌉, ⌈9⌉, ⌈9.9⌉ = 10.
    assert_eq!(nearest_rank(&ten, 50), Some(5));
    assert_eq!(nearest_rank(&ten, 90), Some(9));
    assert_eq!(nearest_rank(&ten, 99), Some(10));
    assert_eq!(nearest_rank(&ten, 100), Some(10));
    let three = [10, 20, 30];
    // Ranks ⌈1.5⌉ = 2, ⌈2.7⌉ = 3.
    assert_eq!(nearest_rank(&three, 50), Some(20));
    assert_eq!(nearest_rank(&three, 90), Some(30));
    // 200 samples: ranks 100, 180, 198.
    let many: Vec<u64> = (1..=200).collect();
    assert_eq!([50, 90, 99].map(|p| nearest_rank(&many, p)), [Some(100), Some(180), Some(198)]);
}

#[test]
fn samples_pack_their_lower_bound_flag() {
    for (ns, at_least) in [(0, false), (1, true), (84_123, false), (u64::MAX >> 1, true)] {
        assert_eq!(Sample::unpack(Sample::pack(ns, at_least)), Sample { ns, at_least });
    }
    // Sorting packed words sorts by duration.
    assert!(Sample::pack(5, true) < Sample::pack(6, false));
    assert_eq!(Sample::unpack(Sample::pack(u64::MAX, false)).ns, u64::MAX >> 1);
}

#[test]
fn time_in_state_in_the_scenario() {
    let r = scenario(ReportOptions::default());
    let a = analysis(&r);
    let states: Vec<TcpState> = a.time_in_state.iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        [
            Listen,
            SynSent,
            SynRecv,
            Established,
            FinWait1,
            FinWait2,
            TimeWait,
            CloseWait,
            LastAck
        ]
    );

    // 84.123us, 150us, 200us, 1ms, 7s: ranks 3, 5, 5.
    assert_eq!(
        stats(&a.time_in_state, SynSent),
        Stats {
            state: SynSent,
            count: 5,
            lower_bounds: 0,
            unknown: 0,
            at_end: 0,
            p50: exact(200 * US),
            p90: exact(7 * S),
            p99: exact(7 * S),
            max: exact(7 * S),
            approximate: false,
        }
    );
    // 1s, 1.5s, >=2s, 2.3s, 3s, 10s and one unknown (socket 15): the median is the
    // lower bound from the inventory, and is flagged.
    assert_eq!(
        stats(&a.time_in_state, Established),
        Stats {
            state: Established,
            count: 6,
            lower_bounds: 1,
            unknown: 1,
            at_end: 0,
            p50: lower(2 * S),
            p90: exact(10 * S),
            p99: exact(10 * S),
            max: exact(10 * S),
            approximate: false,
        }
    );
    // >=20s (inventory) and 60s; sockets 14 and 20 still in TIME_WAIT at the end.
    let tw = stats(&a.time_in_state, TimeWait);
    assert_eq!((tw.count, tw.lower_bounds, tw.at_end), (2, 1, 2));
    assert_eq!((tw.p50, tw.max), (lower(20 * S), exact(60 * S)));
    // 40us, 50us, 60us, 100us: ranks 2, 4, 4.
    let fw1 = stats(&a.time_in_state, FinWait1);
    assert_eq!(
        (fw1.count, fw1.p50, fw1.p90, fw1.max),
        (4, exact(50 * US), exact(100 * US), exact(100 * US))
    );
    let cw = stats(&a.time_in_state, CloseWait);
    assert_eq!((cw.count, cw.at_end, cw.max), (1, 1, exact(500 * MS)));
    let listen = stats(&a.time_in_state, Listen);
    assert_eq!((listen.count, listen.at_end, listen.max), (0, 1, None));
    assert_eq!(a.unknown_durations, 1);
    assert!(a.by_port.is_none() && a.by_process.is_none());
}

#[test]
fn percentiles_of_a_hundred_handshakes() {
    let mut r = Report::new(ReportOptions::default());
    // SYN_SENT for 1ms, 2ms, ... 100ms, added in a scrambled order (37 is coprime with
    // 100, so k*37 mod 100 visits every value once).
    for k in 0..100u64 {
        let ms = (k * 37) % 100 + 1;
        let s = Script::new(100 + k, (ip(1), 30000 + k as u16), (ip(2), 443), curl());
        s.play(&mut r, k * S, (Close, SynSent), &[(ms * MS, Established)]);
    }
    // Three more whose SYN_SENT began unseen.
    for k in 0..3u64 {
        let s = Script::new(300 + k, (ip(1), 31000 + k as u16), (ip(2), 443), curl());
        r.add_transition(&s.transition(200 * S, SynSent, Established, None));
    }
    r.finish(at(300 * S));
    let syn = stats(&analysis(&r).time_in_state, SynSent);
    assert_eq!(
        (syn.count, syn.unknown, syn.p50, syn.p90, syn.p99, syn.max),
        (100, 3, exact(50 * MS), exact(90 * MS), exact(99 * MS), exact(100 * MS))
    );
    // The slowest ten, longest first.
    let slowest: Vec<u64> = analysis(&r).client_handshakes.iter().map(|p| p.ns / MS).collect();
    assert_eq!(slowest, [100, 99, 98, 97, 96, 95, 94, 93, 92, 91]);
}

#[test]
fn groups_by_service_port_and_process() {
    let r = scenario(ReportOptions { by_port: true, by_process: true, top: 10 });
    let a = analysis(&r);
    let ports: Vec<u16> = a.by_port.as_ref().unwrap().iter().map(|&(p, _)| p).collect();
    // Servers and the listener by their local port 8080; clients by the remote port.
    assert_eq!(ports, [80, 81, 443, 8080]);
    let port = |p: u16| &a.by_port.as_ref().unwrap().iter().find(|g| g.0 == p).unwrap().1;
    // Sockets 10, 12, 13, 14: 84.123us, 200us, 1ms, 7s.
    let syn443 = stats(port(443), SynSent);
    assert_eq!((syn443.count, syn443.p50, syn443.max), (4, exact(200 * US), exact(7 * S)));
    let syn_recv = stats(port(8080), SynRecv);
    assert_eq!(
        (syn_recv.count, syn_recv.p50, syn_recv.max),
        (2, exact(30 * US), exact(250 * US))
    );
    assert_eq!(stats(port(8080), Listen).at_end, 1);
    assert_eq!(stats(port(81), SynSent).max, exact(150 * US));

    let processes: Vec<Option<String>> = a
        .by_process
        .as_ref()
        .unwrap()
        .iter()
        .map(|(c, _)| c.map(|c| c.to_str_lossy().into_owned()))
        .collect();
    assert_eq!(
        processes,
        [None, Some("curl".into()), Some("nginx".into()), Some("python".into())]
    );
    let process = |i: usize| &a.by_process.as_ref().unwrap()[i].1;
    // Unknown owner: the TIME_WAIT from the inventory.
    assert_eq!(process(0).len(), 1);
    assert_eq!(stats(process(0), TimeWait).max, lower(20 * S));
    // curl: 10, 11, 12, 14 (15's SYN_SENT predates its first sight).
    assert_eq!(stats(process(1), SynSent).count, 4);
    assert_eq!(stats(process(3), CloseWait).at_end, 1);
}

#[test]
fn slowest_handshakes_and_longest_close_waits() {
    let r = scenario(ReportOptions::default());
    let a = analysis(&r);
    let list = |picks: &[Pick]| -> Vec<(u64, u64, bool, Option<TcpState>)> {
        picks.iter().map(|p| (r.conns[p.row].socket, p.ns, p.at_least, p.then)).collect()
    };
    assert_eq!(
        list(&a.client_handshakes),
        [
            (12, 7 * S, false, Some(Close)),
            (14, MS, false, Some(Established)),
            (13, 200 * US, false, Some(Established)),
            (11, 150 * US, false, Some(Close)),
            (10, 84_123, false, Some(Established)),
        ]
    );
    assert_eq!(
        list(&a.server_handshakes),
        [(21, 250 * US, false, Some(Established)), (20, 30 * US, false, Some(Established))]
    );
    // Socket 13 has been in CLOSE_WAIT since 15.0002s: ongoing, and first.
    assert_eq!(
        list(&a.close_waits),
        [(13, 49_999_800_000, true, None), (2, 500 * MS, false, Some(LastAck))]
    );

    // The lists keep `top` rows.
    let r = scenario(ReportOptions { top: 2, ..ReportOptions::default() });
    let sockets: Vec<u64> =
        analysis(&r).client_handshakes.iter().map(|p| r.conns[p.row].socket).collect();
    assert_eq!(sockets, [12, 14]);

    let text = text(&scenario(ReportOptions::default()));
    assert!(text.contains("   13  77/python  10.0.0.1:50003  10.0.0.2:443    >=49.9s  still in CLOSE_WAIT at the end (ongoing)\n"), "{text}");
    assert!(
        text.contains("  7.00s  CLOSE: connect timed out (ETIMEDOUT), after 2 retransmits\n"),
        "{text}"
    );
}

#[test]
fn time_wait_per_peer() {
    let r = scenario(ReportOptions::default());
    assert_eq!(
        analysis(&r).peers,
        [Peer { addr: ip(2), count: 3, at_end: 1 }, Peer { addr: ip(3), count: 1, at_end: 1 }]
    );
    // Text keeps `top` peers and says how many more there are.
    let r = scenario(ReportOptions { top: 1, ..ReportOptions::default() });
    let text = text(&r);
    assert!(text.contains("PEER      TIME_WAIT  AT_END\n10.0.0.2          3       1\n... 1 more peer not shown"), "{text}");
}

#[test]
fn totals_and_the_loss_warning() {
    let r = scenario(ReportOptions::default());
    let a = analysis(&r);
    assert_eq!((a.listeners, a.clients, a.servers, a.open_at_end), (1, 7, 3, 4));
    assert_eq!(r.lost_total(), 3);
    let text = text(&r);
    assert!(text.starts_with(
        "portrace report\n  trace        2026-11-29T02:41:07.000000Z to 2026-11-29T02:42:12.000000Z (1m05s)\n  transitions  32\n"
    ), "{text}");
    assert!(text.contains("  connections  11: 1 listener, 7 clients, 3 servers; 3 from the start-up inventory, 4 still open at the end\n"), "{text}");
    assert!(text.contains("  lost         3 transitions (ring_full 3)\n"), "{text}");
    assert!(
        text.contains(
            "!! WARNING: 3 TRANSITIONS WERE LOST: every figure below may be incomplete."
        ),
        "{text}"
    );

    // Without losses: no warning.
    let mut r = Report::new(ReportOptions::default());
    Script::new(1, (ip(1), 40000), (ip(2), 80), curl()).play(
        &mut r,
        S,
        (Close, SynSent),
        &[(MS, Established)],
    );
    r.finish(at(2 * S));
    let text = self::text(&r);
    assert!(text.contains("  lost         none\n") && !text.contains("WARNING"), "{text}");
}

#[test]
fn text_report() {
    let r = scenario(ReportOptions { by_port: true, by_process: true, top: 10 });
    insta::assert_snapshot!(text(&r));
}

#[test]
fn json_report() {
    let r = scenario(ReportOptions { by_port: true, by_process: false, top: 10 });
    let j = json(&r);
    assert_eq!(j["type"], "report");
    assert_eq!(j["schema"], 1);
    assert_eq!(j["start"]["time"], "2026-11-29T02:41:07.000000Z");
    assert_eq!(j["end"]["ts_ns"], MONO0 + END);
    assert_eq!(j["span_ns"], END);
    assert_eq!(j["complete"], false);
    let totals = &j["totals"];
    assert_eq!(totals["transitions"], 32);
    assert_eq!(totals["connections"], 11);
    assert_eq!(
        (&totals["listeners"], &totals["clients"], &totals["servers"]),
        (&1.into(), &7.into(), &3.into())
    );
    assert_eq!(totals["open_at_end"], 4);
    assert_eq!(totals["from_inventory"], 3);
    assert_eq!(totals["unknown_durations"], 1);
    assert_eq!(totals["lost"], 3);
    assert_eq!(
        totals["lost_by_cause"],
        serde_json::json!({"ring_full": 3, "skipped": 0, "malformed": 0, "unreadable": 0, "timewait": 0, "gap": 0})
    );

    let conns = j["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 11);
    let conn = |socket: u64| conns.iter().find(|c| c["socket"] == socket).unwrap();
    let c10 = conn(10);
    assert_eq!(c10["role"], "client");
    assert_eq!(c10["service_port"], 443);
    assert_eq!(
        (&c10["owner_pid"], &c10["owner_comm"], &c10["owner_source"]),
        (&4242.into(), &"curl".into(), &"syscall".into())
    );
    assert_eq!(c10["lifetime_ns"], 62_301_324_123u64);
    assert_eq!(c10["reason"], "active_close");
    assert_eq!(c10["children"], serde_json::Value::Null);
    let states: Vec<(&str, u64)> = c10["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["state"].as_str().unwrap(), s["ns"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        states,
        [
            ("SYN_SENT", 84_123),
            ("ESTABLISHED", 2300 * MS),
            ("FIN_WAIT1", 40 * US),
            ("FIN_WAIT2", 1200 * US),
            ("TIME_WAIT", 60 * S)
        ]
    );
    assert_eq!(c10["states"][4]["then"], "CLOSE");

    let c13 = conn(13);
    assert_eq!(c13["open"], true);
    assert_eq!(c13["reason"], serde_json::Value::Null);
    assert_eq!(
        c13["states"][2],
        serde_json::json!({"state": "CLOSE_WAIT", "ns": 49_999_800_000u64, "at_least": true, "ongoing": true, "gap_before": false, "then": null})
    );
    let c12 = conn(12);
    assert_eq!((&c12["error"], &c12["retransmits"]), (&"ETIMEDOUT".into(), &2.into()));
    let c1 = conn(1);
    assert_eq!(
        (&c1["role"], &c1["children"], &c1["daddr"]),
        (&"listener".into(), &2.into(), &"0.0.0.0".into())
    );
    assert_eq!(conn(15)["states"][0]["ns"], serde_json::Value::Null);
    assert_eq!(conn(2)["first_at_least"], true);

    let transitions = j["transitions"].as_array().unwrap();
    assert_eq!(transitions.len(), 14);
    assert_eq!(
        transitions[0],
        serde_json::json!({"from": "CLOSE", "to": "SYN_SENT", "count": 5})
    );
    assert!(transitions
        .contains(&serde_json::json!({"from": "ESTABLISHED", "to": "FIN_WAIT1", "count": 4})));

    let established = j["time_in_state"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["state"] == "ESTABLISHED")
        .unwrap();
    assert_eq!(established["count"], 6);
    assert_eq!(
        (&established["p50_ns"], &established["p50_at_least"]),
        (&(2 * S).into(), &true.into())
    );
    assert_eq!(
        (&established["max_ns"], &established["max_at_least"]),
        (&(10 * S).into(), &false.into())
    );
    let listen =
        j["time_in_state"].as_array().unwrap().iter().find(|s| s["state"] == "LISTEN").unwrap();
    assert_eq!((&listen["p50_ns"], &listen["at_end"]), (&serde_json::Value::Null, &1.into()));

    let ports: Vec<u64> =
        j["by_port"].as_array().unwrap().iter().map(|g| g["port"].as_u64().unwrap()).collect();
    assert_eq!(ports, [80, 81, 443, 8080]);
    assert_eq!(j["by_process"], serde_json::Value::Null);

    let sockets = |key: &str| -> Vec<u64> {
        j[key].as_array().unwrap().iter().map(|p| p["socket"].as_u64().unwrap()).collect()
    };
    assert_eq!(sockets("slowest_client_handshakes"), [12, 14, 13, 11, 10]);
    assert_eq!(sockets("slowest_server_handshakes"), [21, 20]);
    assert_eq!(sockets("longest_close_waits"), [13, 2]);
    assert_eq!(j["slowest_client_handshakes"][0]["reason"], "connect_timeout");
    assert_eq!(j["longest_close_waits"][0]["ongoing"], true);
    assert_eq!(
        j["time_wait_by_peer"],
        serde_json::json!([{"peer": "10.0.0.2", "count": 3, "at_end": 1}, {"peer": "10.0.0.3", "count": 1, "at_end": 1}])
    );
}

#[test]
fn json_escapes_command_names() {
    let mut r = Report::new(ReportOptions { by_process: true, ..ReportOptions::default() });
    let odd = Some(Owner {
        pid: 9,
        comm: Comm::from_kernel(b"a\"b\\c\x01\xff\0\0\0\0\0\0\0\0\0"),
        source: OwnerSource::Syscall, cgroup: 0
    });
    Script::new(1, (ip(1), 40000), (ip(2), 80), odd).play(
        &mut r,
        S,
        (Close, SynSent),
        &[(MS, Established)],
    );
    r.finish(at(2 * S));
    let j = json(&r);
    assert_eq!(j["connections"][0]["owner_comm"], "a\"b\\c\u{1}\u{fffd}");
    assert_eq!(j["by_process"][0]["comm"], "a\"b\\c\u{1}\u{fffd}");
    // And in text, the odd bytes are `?`.
    assert!(text(&r).contains(" 9/a\"b\\c?? "), "{}", text(&r));
}

#[test]
fn text_keeps_the_most_interesting_rows() {
    let mut r = Report::new(ReportOptions::default());
    r.add_socket(&inventory(1, (ANY, 80), (ANY, 0), Listen, nginx(OwnerSource::Inventory)));
    // 60 short connections closed normally, one refused and one still open, all later
    // than the listener.
    for k in 0..60u64 {
        let s = Script::new(100 + k, (ip(1), 40000 + k as u16), (ip(2), 443), curl())
            .ends(EndReason::ActiveClose, None);
        s.play(
            &mut r,
            S + k * MS,
            (Close, SynSent),
            &[(MS, Established), (k * US + 1, TimeWait), (MS, Close)],
        );
    }
    let refused = Script::new(7, (ip(1), 39000), (ip(2), 81), curl())
        .ends(EndReason::Refused, Some(libc::ECONNREFUSED));
    refused.play(&mut r, 2 * S, (Close, SynSent), &[(US, Close)]);
    Script::new(8, (ip(1), 39001), (ip(2), 443), curl()).play(
        &mut r,
        3 * S,
        (Close, SynSent),
        &[(US, Established)],
    );
    r.finish(at(10 * S));

    let text = text(&r);
    let rows: Vec<u64> = text
        .lines()
        .skip_while(|l| !l.starts_with("SOCKET  ROLE"))
        .skip(1)
        .take_while(|l| !l.starts_with("..."))
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(rows.len(), TEXT_ROWS);
    // The listener, the refused and the open one, then the 47 longest-lived of the
    // others (the later ones stayed longer in ESTABLISHED), in order of first sight.
    let mut want = vec![1];
    want.extend(113..160);
    want.extend([7, 8]);
    assert_eq!(rows, want);
    assert!(
        text.contains("\n... 13 more connections not shown (13 closed normally); the JSON report has every row\n"),
        "{text}"
    );
    assert_eq!(json(&r)["connections"].as_array().unwrap().len(), 63);
}

#[test]
fn gaps_inventory_and_unknown_listeners() {
    let mut r = Report::new(ReportOptions::default());
    // Two listeners on port 80: one on the wildcard address in another namespace, one
    // on 10.0.0.1 in ours.
    let other_ns = Script { netns: 77, ..Script::new(1, (ANY, 80), (ANY, 0), None) };
    other_ns.play(&mut r, 0, (Close, Listen), &[]);
    Script::new(2, (ip(1), 80), (ANY, 0), None).play(&mut r, 0, (Close, Listen), &[]);
    // A child in our namespace, and one on port 81 that no listener owns.
    Script::new(3, (ip(1), 80), (ip(9), 5000), None).play(&mut r, S, (Listen, SynRecv), &[]);
    Script::new(4, (ip(1), 81), (ip(9), 5001), None).play(&mut r, S, (Listen, SynRecv), &[]);
    // A client whose ESTABLISHED -> FIN_WAIT1 and FIN_WAIT1 -> FIN_WAIT2 were lost.
    let s5 = Script::new(5, (ip(1), 40000), (ip(2), 80), curl());
    s5.play(&mut r, S, (Close, SynSent), &[(MS, Established)]);
    r.add_transition(&s5.transition(3 * S, FinWait2, TimeWait, None));
    // A connection from the inventory that never changed state: a server connection,
    // since its local end matches listener 2.
    r.add_socket(&inventory(6, (ip(1), 80), (ip(9), 6000), Established, None));
    r.finish(at(5 * S));

    assert_eq!(r.conns[r.index[&1]].children, 0);
    assert_eq!(r.conns[r.index[&2]].children, 1);
    assert_eq!(r.unmatched_children, 1);
    assert_eq!(row(&r, 5)[4], "SYN_SENT 1.00ms > ... > FIN_WAIT2 ? > TIME_WAIT >=2.00s");
    // The inventory was taken at the start (at(0)), so it has been open at least 5s.
    assert_eq!(
        row(&r, 6),
        ["server", "-", ">=5.00s", "open", "ESTABLISHED >=5.00s"].map(String::from)
    );
    let text = text(&r);
    assert!(
        text.contains("1 server connection accepted by no listener of the trace"),
        "{text}"
    );
    let j = json(&r);
    assert_eq!(j["totals"]["children_without_listener"], 1);
    assert_eq!(
        j["connections"].as_array().unwrap().iter().find(|c| c["socket"] == 5).unwrap()
            ["states"][1]["gap_before"],
        true
    );
}

#[test]
fn report_before_finish_ends_at_the_last_record() {
    let mut r = Report::new(ReportOptions::default());
    Script::new(1, (ip(1), 40000), (ip(2), 80), curl()).play(
        &mut r,
        S,
        (Close, SynSent),
        &[(MS, Established)],
    );
    r.add_lost(&Lost { time: at(3 * S), count: 1, cause: LossCause::Skipped });
    let j = json(&r);
    assert_eq!(j["span_ns"], 2 * S);
    assert_eq!(j["connections"][0]["states"][1]["ns"], 2 * S - MS);
    assert!(text(&r).contains("!! WARNING: 1 TRANSITION WAS LOST"));
    // An empty report renders too.
    let empty = Report::new(ReportOptions::default());
    assert!(text(&empty).contains("Connections (0, in order of first sight)"));
    assert_eq!(json(&empty)["connections"], serde_json::json!([]));
}

#[test]
fn human_durations() {
    let h = |ns: u64| HumanDuration(ns).to_string();
    assert_eq!(h(0), "0ns");
    assert_eq!(h(999), "999ns");
    assert_eq!(h(1_000), "1.00us");
    assert_eq!(h(84_123), "84.1us");
    assert_eq!(h(841_999), "841us");
    assert_eq!(h(1_234_567), "1.23ms");
    assert_eq!(h(12_345_678), "12.3ms");
    assert_eq!(h(2_300_000_000), "2.30s");
    assert_eq!(h(59_999_999_999), "59.9s");
    assert_eq!(h(60 * S), "1m00s");
    assert_eq!(h(123 * S), "2m03s");
    assert_eq!(h(3_720 * S), "1h02m");
    assert_eq!(h(273_600 * S), "3d04h");
    assert_eq!(duration_text(None, true), "?");
    assert_eq!(duration_text(Some(2 * S), true), ">=2.00s");
}

#[test]
fn state_slots_follow_kernel_numbers() {
    for state in TcpState::ALL {
        assert_eq!(TcpState::ALL[slot(state)], state);
    }
    let mut life = LIFE_ORDER.to_vec();
    life.sort();
    assert_eq!(life, TcpState::ALL.to_vec(), "LIFE_ORDER has every state once");
}
