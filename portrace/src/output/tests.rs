//! Tests of the output formats: the lines text, JSON and CSV give each record kind,
//! checked against snapshots or parsed back; the pieces the formats share (addresses,
//! microsecond fractions); and that no format allocates per record.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use super::*;
use crate::record::{Comm, EndReason, Endpoints, Family, LossCause, Owner, OwnerSource};
use crate::tcp_state::TcpState::{self, *};

/// A writer the test keeps a handle on after giving the sink its own.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SharedBuf {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).expect("output is UTF-8")
    }
}

/// 2026-11-29T02:41:07.123456789Z, when the kernel's monotonic clock read 123456789.
const UNIX0: i128 = 1_795_920_067_123_456_789;
const MONO0: u64 = 123_456_789;
/// UTC+01:00, so that local times differ visibly from the UTC ones.
const ZONE: Zone = Zone::Fixed(3600);
/// The initial network namespace's inode number, as on most hosts.
const NETNS: u32 = 4_026_531_840;

fn at(after_ns: u64) -> Timestamp {
    Timestamp { mono_ns: MONO0 + after_ns, unix_ns: UNIX0 + i128::from(after_ns) }
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn family_of(addr: IpAddr) -> Family {
    if addr.is_ipv6() {
        Family::Ipv6
    } else {
        Family::Ipv4
    }
}

fn owner(pid: u32, comm: &str, source: OwnerSource) -> Option<Owner> {
    Some(Owner { pid, comm: Comm::new(comm), source, cgroup: 0 })
}

/// A transition with no owner, no ending and nothing predating the trace; the tests set
/// those with struct update syntax.
#[allow(clippy::too_many_arguments, reason = "a test fixture spelling out every field")]
fn tr(
    after_ns: u64,
    pid: u32,
    comm: Comm,
    socket: u64,
    (saddr, sport): (IpAddr, u16),
    (daddr, dport): (IpAddr, u16),
    (oldstate, newstate): (TcpState, TcpState),
    prev_state_ns: Option<u64>,
) -> Transition {
    Transition {
        family: family_of(saddr),
        ..Transition::example(socket, oldstate, newstate)
            .at(at(after_ns))
            .on_cpu(pid, comm)
            .between((saddr, sport), (daddr, dport))
            .after(prev_state_ns)
            .in_netns(NETNS)
    }
}

/// A socket of the inventory, taken when tracing started.
fn sock(
    socket: u64,
    (saddr, sport): (IpAddr, u16),
    (daddr, dport): (IpAddr, u16),
    state: TcpState,
    owner: Option<Owner>,
    (inode, uid): (u64, u32),
) -> SocketRecord {
    SocketRecord {
        time: at(0),
        socket,
        family: family_of(saddr),
        ends: Endpoints { saddr, sport, daddr, dport, netns: NETNS },
        state,
        owner,
        inode,
        uid,
        cookie: 4096 + socket,
    }
}

enum Event {
    S(SocketRecord),
    T(Transition),
    L(Lost),
}

/// A comm with a comma, a quote, an invalid UTF-8 byte and a control character.
fn odd_comm() -> Comm {
    Comm::from_kernel(b"a,b\"c\xff\x01d\0\0\0\0\0\0\0\0")
}

/// How many inventory sockets [`events`] starts with.
const SOCKETS: usize = 4;

fn events() -> Vec<Event> {
    use EndReason::*;
    use OwnerSource::*;
    let any4 = v4(0, 0, 0, 0);
    let any6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    let lo = v4(127, 0, 0, 1);
    let v6_short = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let v6_long: IpAddr = "2001:db8:85a3:1234:5678:8a2e:370:7334".parse().unwrap();
    let v6_peer: IpAddr = "2001:db8::2".parse().unwrap();
    let sshd_session = ((v4(10, 0, 0, 5), 22), (v4(192, 168, 1, 20), 51234));
    let curl = Comm::new("curl");
    vec![
        // The inventory: sshd's listener and one of its sessions, nginx's IPv6 listener,
        // and a TIME_WAIT socket, which no process owns any more and whose long IPv6
        // address widens LOCAL.
        Event::S(sock(
            1,
            (any4, 22),
            (any4, 0),
            Listen,
            owner(612, "sshd", Inventory),
            (12345, 0),
        )),
        Event::S(sock(
            12,
            sshd_session.0,
            sshd_session.1,
            Established,
            owner(911, "sshd", Inventory),
            (23456, 0),
        )),
        Event::S(sock(
            30,
            (any6, 8080),
            (any6, 0),
            Listen,
            owner(300, "nginx", Inventory),
            (34567, 33),
        )),
        Event::S(sock(40, (v6_long, 443), (v6_peer, 50001), TimeWait, None, (0, 0))),
        // Connect from CLOSE: portrace did not see the socket enter CLOSE.
        Event::T(Transition {
            owner: owner(4242, "curl", Syscall),
            ..tr(0, 4242, curl, 7, (lo, 54321), (lo, 8080), (Close, SynSent), None)
        }),
        Event::T(Transition {
            owner: owner(4242, "curl", Syscall),
            ..tr(
                84_123,
                4242,
                curl,
                7,
                (lo, 54321),
                (lo, 8080),
                (SynSent, Established),
                Some(84_123),
            )
        }),
        // The peer closes a session that predates the trace: the FIN is handled on the
        // idle task, the owner comes from the inventory, and the time in ESTABLISHED
        // counts from the start.
        Event::T(Transition {
            prev_state_at_least: true,
            owner: owner(911, "sshd", Inventory),
            ..tr(
                1_000_000,
                0,
                Comm::new("swapper/1"),
                12,
                sshd_session.0,
                sshd_session.1,
                (Established, CloseWait),
                Some(123_000_000_000),
            )
        }),
        // The widest IPv4 text, in a process with an awkward name; a very short duration.
        Event::T(Transition {
            owner: Some(Owner { pid: 4_194_304, comm: odd_comm(), source: Syscall, cgroup: 0 }),
            ..tr(
                1_500_000,
                4_194_304,
                odd_comm(),
                123_456,
                (v4(255, 255, 255, 255), 65535),
                (v4(10, 1, 2, 3), 443),
                (FinWait1, FinWait2),
                Some(850),
            )
        }),
        Event::L(Lost { time: at(2_000_000), count: 12, cause: LossCause::RingFull }),
        // A short IPv6 address fits the starting width. A child of nginx's listener,
        // owned by nginx until it is accepted.
        Event::T(Transition {
            owner: owner(300, "nginx", Listener),
            ..tr(
                2_500_000,
                0,
                Comm::new("swapper/0"),
                31,
                (v6_short, 8080),
                (v6_short, 40000),
                (SynRecv, Established),
                Some(3_219),
            )
        }),
        // A long one widens LOCAL, then REMOTE grows for a longer peer.
        Event::T(Transition {
            owner: owner(300, "nginx", Listener),
            ..tr(
                3_000_000,
                0,
                Comm::new("swapper/0"),
                32,
                (v6_long, 443),
                (v6_peer, 50000),
                (Listen, SynRecv),
                Some(1_234_567),
            )
        }),
        Event::T(Transition {
            owner: owner(301, "nginx", Syscall),
            ..tr(
                3_500_000,
                301,
                Comm::new("nginx"),
                33,
                (v6_peer, 443),
                (v6_long, 65535),
                (Established, FinWait1),
                Some(12_345_678),
            )
        }),
        // A very long duration, from the TIME_WAIT of a socket seen days ago; nobody
        // owns a TIME_WAIT socket.
        Event::T(Transition {
            reason: Some(ActiveClose),
            ..tr(
                4_000_000,
                0,
                Comm::new("swapper/3"),
                7,
                (lo, 54321),
                (lo, 8080),
                (TimeWait, Close),
                Some(273_600_000_000_000),
            )
        }),
        Event::L(Lost { time: at(4_500_000), count: 1, cause: LossCause::Skipped }),
        Event::L(Lost { time: at(5_000_000), count: 3, cause: LossCause::Malformed }),
        Event::T(Transition {
            owner: owner(4242, "curl", Syscall),
            reason: Some(Refused),
            error: Some(libc::ECONNREFUSED),
            ..tr(
                5_500_000,
                4242,
                curl,
                8,
                (lo, 54322),
                (lo, 8081),
                (SynSent, Close),
                Some(1_500_000_000),
            )
        }),
        Event::T(Transition {
            owner: owner(5150, "wget", Syscall),
            reason: Some(ConnectTimeout),
            error: Some(libc::ETIMEDOUT),
            retransmits: 6,
            ..tr(
                6_000_000,
                0,
                Comm::new("swapper/2"),
                50,
                (v4(10, 0, 0, 5), 40000),
                (v4(203, 0, 113, 9), 80),
                (SynSent, Close),
                Some(127_000_000_000),
            )
        }),
        Event::T(Transition {
            owner: owner(300, "nginx", Listener),
            reason: Some(ResetByPeer),
            error: Some(libc::ECONNRESET),
            ..tr(
                6_500_000,
                0,
                Comm::new("swapper/0"),
                31,
                (v6_short, 8080),
                (v6_short, 40000),
                (Established, Close),
                Some(3_996_781),
            )
        }),
        // An errno without a name here.
        Event::T(Transition {
            owner: owner(911, "sshd", Syscall),
            reason: Some(Error),
            error: Some(999),
            ..tr(
                7_000_000,
                911,
                Comm::new("sshd"),
                12,
                sshd_session.0,
                sshd_session.1,
                (CloseWait, Close),
                Some(6_000_000),
            )
        }),
    ]
}

fn start_record() -> Start {
    Start { time: at(0), host: "web-1".into(), kernel: "6.1.0-28-amd64".into(), features: Features::default() }
}

#[test]
fn a_ring_record_takes_its_header_and_its_data_rounded_to_8() {
    assert_eq!(RingRead::bytes_of(128), 136);
    assert_eq!(RingRead::bytes_of(121), 136);
    assert_eq!(RingRead::bytes_of(0), 8);
    let mut read = RingRead { records: 0, bytes: 0, size: 4096 };
    read.add(128);
    read.add(0);
    assert_eq!((read.records, read.bytes), (2, 136 + 8));
    let read = RingRead { records: 2, bytes: 2048, size: 4096 };
    assert_eq!(read.fill(), 0.5);
    assert_eq!(RingRead { bytes: 9000, ..read }.fill(), 1.0, "never more than full");
    assert_eq!(RingRead { size: 0, ..read }.fill(), 0.0);
}

#[test]
fn a_degraded_run_says_so_at_the_start_in_text_and_json() {
    let mut start = start_record();
    start.features.on(crate::features::Feature::LiveTimeline);
    start.features.off(
        crate::features::Feature::TimeWait,
        "timer_start did not load: the kernel's verifier rejected it: combined stack size of 2 calls is 560. Too large",
    );
    start.features.limited(crate::features::Feature::Owners, "no kernel \"BTF\"\x1b");
    let first = |format| written(format, TextOptions::default(), |sink| sink.start(&start));
    insta::assert_snapshot!(first(Format::Text), @r#"
    # owners limited: no kernel "BTF"?
    # TIME_WAIT off: timer_start did not load: the kernel's verifier rejected it: combined stack size of 2 calls is 560. Too large
    "#);
    let json: serde_json::Value = serde_json::from_str(first(Format::Json).trim()).unwrap();
    assert_eq!(json["features"]["live_timeline"], serde_json::json!({"on": true, "reason": null}));
    assert_eq!(json["features"]["time_wait"]["on"], false);
    assert_eq!(json["features"]["owners"]["reason"], "no kernel \"BTF\"\u{1b}");
    let plain = written(Format::Json, TextOptions::default(), |sink| sink.start(&start_record()));
    assert!(!plain.contains("features"), "no feature known, none written: {plain}");
}

/// What a fresh sink of `format` writes for what `feed` hands it, flushed.
fn written(format: Format, text: TextOptions, feed: impl FnOnce(&mut dyn Sink) -> io::Result<()>) -> String {
    let buf = SharedBuf::default();
    let mut sink = sink(format, Box::new(buf.clone()), text);
    feed(sink.as_mut()).unwrap();
    sink.flush().unwrap();
    buf.text()
}

/// Feeds the start record, every event, and the end record to a fresh sink.
fn render(format: Format, text: TextOptions) -> String {
    render_events(format, text, events())
}

fn render_events(format: Format, text: TextOptions, events: Vec<Event>) -> String {
    let out = written(format, text, |sink| {
        let mut summary = Summary::new(at(0));
        sink.start(&start_record())?;
        for event in events {
            match event {
                Event::S(s) => sink.socket(&s)?,
                Event::T(t) => {
                    summary.add_transition(&t);
                    sink.transition(&t)?;
                }
                Event::L(l) => {
                    summary.add_lost(&l);
                    sink.lost(&l)?;
                }
            }
        }
        summary.finish(at(8_000_000));
        sink.end(&summary)
    });
    // Snapshots must not change with every release.
    out.replace(&format!("\"portrace\":\"{VERSION}\""), "\"portrace\":\"[version]\"")
}

/// What `portrace --snapshot` writes: the start, the inventory, the end.
fn render_snapshot_run(format: Format) -> String {
    let sockets = events().into_iter().filter(|e| matches!(e, Event::S(_))).collect();
    render_events(format, plain(), sockets)
}

/// Every reason a connection can end for.
fn all_reasons() -> [EndReason; 11] {
    use EndReason::*;
    // Fails to compile when a reason is added, until EndReason::ALL lists it too.
    match ActiveClose {
        ActiveClose | PassiveClose | Refused | ConnectTimeout | ResetByPeer | ResetSent
        | ConnectAborted | FinWait2Timeout | TimeWaitKilled | ListenerClosed | Error => {}
    }
    EndReason::ALL
}

/// A last transition for each reason, with the state change and error that go with it,
/// then the corner cases of the note: a timeout after one retransmission, retransmits
/// that only a timeout shows, errors without a name or without a reason.
fn endings() -> Vec<Event> {
    use EndReason::*;
    let local = (v4(10, 0, 0, 5), 40000);
    let remote = (v4(203, 0, 113, 9), 443);
    let ending = |i: u64, reason: Option<EndReason>, error: Option<i32>, retransmits: u8| {
        let from = match reason {
            Some(ActiveClose | TimeWaitKilled) => TimeWait,
            Some(PassiveClose) => LastAck,
            Some(Refused | ConnectTimeout | ConnectAborted) => SynSent,
            Some(FinWait2Timeout) => FinWait2,
            Some(ListenerClosed) => Listen,
            Some(ResetByPeer | ResetSent | Error) | None => Established,
        };
        Event::T(Transition {
            owner: owner(7000 + i as u32, "client", OwnerSource::Syscall),
            reason,
            error,
            retransmits,
            ..tr(
                i * 1_000,
                0,
                Comm::new("swapper/0"),
                100 + i,
                local,
                remote,
                (from, Close),
                Some(2_000_000),
            )
        })
    };
    let mut events: Vec<Event> = all_reasons()
        .into_iter()
        .enumerate()
        .map(|(i, reason)| {
            let (error, retransmits) = match reason {
                Refused => (Some(libc::ECONNREFUSED), 0),
                ConnectTimeout => (Some(libc::ETIMEDOUT), 6),
                ResetByPeer => (Some(libc::ECONNRESET), 0),
                Error => (Some(libc::EHOSTUNREACH), 0),
                _ => (None, 0),
            };
            ending(i as u64, Some(reason), error, retransmits)
        })
        .collect();
    events.push(ending(11, Some(ConnectTimeout), Some(libc::ETIMEDOUT), 1));
    events.push(ending(12, Some(ResetByPeer), Some(libc::ECONNRESET), 3));
    events.push(ending(13, Some(Error), Some(999), 0));
    events.push(ending(14, None, Some(libc::EPIPE), 0));
    events
}

fn plain() -> TextOptions {
    TextOptions { color: false, zone: ZONE, explain: false }
}

fn colored() -> TextOptions {
    TextOptions { color: true, zone: ZONE, explain: false }
}

/// Removes ANSI SGR sequences (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            assert_eq!(chars.next(), Some('['));
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
                assert!(c.is_ascii_digit() || c == ';', "unexpected escape {c:?}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn text_snapshot() {
    insta::assert_snapshot!(render(Format::Text, plain()));
}

#[test]
fn text_color_snapshot() {
    // Escapes shown visibly so the snapshot can be reviewed.
    insta::assert_snapshot!(render(Format::Text, colored()).replace('\x1b', "<ESC>"));
}

#[test]
fn json_snapshot() {
    insta::assert_snapshot!(render(Format::Json, plain()));
}

#[test]
fn csv_snapshot() {
    insta::assert_snapshot!(render(Format::Csv, plain()));
}

#[test]
fn text_endings_snapshot() {
    insta::assert_snapshot!(render_events(Format::Text, plain(), endings()));
}

#[test]
fn colour_only_adds_escapes() {
    let out = render(Format::Text, colored());
    assert!(out.contains("\x1b[32mESTABLISHED\x1b[0m"), "{out}");
    assert!(out.contains("\x1b[1;31m** 12 transitions lost"), "{out}");
    assert!(out.starts_with("\x1b[1mSTATE "), "{out}");
    assert!(out.contains("\n\x1b[34mLISTEN\x1b[0m       0.0.0.0:22 "), "{out}");
    assert!(out.contains("\n\n\x1b[1mTIME "), "{out}");
    // Padding is computed on the visible text: without the escapes the lines are
    // exactly the plain ones.
    assert_eq!(strip_ansi(&out), render(Format::Text, plain()));
    let out = render_events(Format::Text, colored(), endings());
    assert_eq!(strip_ansi(&out), render_events(Format::Text, plain(), endings()));
}

/// Where each header label starts and ends, by byte offset.
fn label_spans(header: &str) -> Vec<(&str, usize, usize)> {
    let mut spans = Vec::new();
    let mut offset = 0;
    for word in header.split(' ') {
        if !word.is_empty() {
            spans.push((word, offset, offset + word.len()));
        }
        offset += word.len() + 1;
    }
    spans
}

/// Checks that every line under each header (up to the next header or blank line) lines
/// up with it: a value starts where its label starts, or, for the labels in `right`,
/// ends where its label ends. The last label's column is free text at the end of the
/// line and may be empty. Returns the headers' lengths, in order.
fn assert_aligned(
    lines: &[&str],
    headers: &[usize],
    labels: &[&str],
    right: &[&str],
) -> Vec<usize> {
    let mut lengths = Vec::new();
    for (n, &h) in headers.iter().enumerate() {
        let spans = label_spans(lines[h]);
        let names: Vec<&str> = spans.iter().map(|s| s.0).collect();
        assert_eq!(names, labels);
        lengths.push(lines[h].len());
        let (_, last_start, _) = *spans.last().unwrap();
        let mut checked = 0;
        for line in lines[h + 1..].iter().take_while(|l| !l.is_empty()) {
            if line.contains(" ** ") {
                continue; // lost lines are not columnar
            }
            if label_spans(line).first().map(|s| s.0) == Some(labels[0]) {
                break; // the next header
            }
            checked += 1;
            let bytes = line.as_bytes();
            let is_space = |i: usize| bytes.get(i).is_none_or(|&b| b == b' ');
            for &(name, start, end) in &spans[..spans.len() - 1] {
                if right.contains(&name) {
                    assert!(!is_space(end - 1) && is_space(end), "{name} in {line:?}");
                } else {
                    assert!(
                        !is_space(start) && (start == 0 || is_space(start - 1)),
                        "{name} in {line:?}"
                    );
                }
            }
            // The last column: nothing, or text starting under its label, without
            // padding after it.
            if line.len() != last_start - 1 {
                assert!(is_space(last_start - 1) && !is_space(last_start), "{line:?}");
                assert!(!line.ends_with(' '), "{line:?}");
            }
        }
        assert!(checked > 0, "header {n} has lines under it");
    }
    lengths
}

#[test]
fn text_reprints_the_header_when_columns_widen_and_stays_aligned() {
    let out = render(Format::Text, plain());
    let lines: Vec<&str> = out.lines().collect();

    // The socket block first: its header, again when the long IPv6 address widens
    // LOCAL, then a blank line.
    let socket_headers: Vec<usize> =
        (0..lines.len()).filter(|&i| lines[i].starts_with("STATE ")).collect();
    assert_eq!(socket_headers, [0, 4], "{out}");
    assert_eq!(
        lines[0],
        "STATE        LOCAL                  REMOTE                 PID     COMM            SOCKET"
    );
    assert_eq!(lines[6], "", "{out}");
    let widths = assert_aligned(
        &lines,
        &socket_headers,
        &["STATE", "LOCAL", "REMOTE", "PID", "COMM", "SOCKET"],
        &[],
    );
    assert!(widths[0] < widths[1], "{widths:?}");

    let headers: Vec<usize> =
        (0..lines.len()).filter(|&i| lines[i].starts_with("TIME ")).collect();
    // First transition; the long IPv6 local address; the long IPv6 remote address.
    assert_eq!(headers.len(), 3, "{out}");
    assert_eq!(headers[0], SOCKETS + 3, "{out}");
    assert!(lines[headers[1] + 1].contains("[2001:db8:85a3:1234:5678:8a2e:370:7334]:443 "));
    assert!(lines[headers[2] + 1].contains(" [2001:db8:85a3:1234:5678:8a2e:370:7334]:65535 "));
    assert_eq!(
        lines[headers[0]],
        "TIME                PID COMM            SOCKET LOCAL                  REMOTE                 \
         TRANSITION                   PREV NOTE"
    );
    let widths = assert_aligned(
        &lines,
        &headers,
        &["TIME", "PID", "COMM", "SOCKET", "LOCAL", "REMOTE", "TRANSITION", "PREV", "NOTE"],
        &["PID", "SOCKET", "PREV"],
    );
    // Columns only ever grow.
    assert!(widths.windows(2).all(|w| w[0] < w[1]), "{widths:?}");
}

#[test]
fn text_widens_prev_for_durations_of_days() {
    let mut t = tr(
        0,
        1,
        Comm::new("x"),
        1,
        (v4(10, 0, 0, 1), 1),
        (v4(10, 0, 0, 2), 2),
        (Established, FinWait1),
        Some(7_200_000_000_000),
    );
    let mut long = t.clone();
    long.prev_state_ns = Some(1_000 * 86_400_000_000_000);
    long.prev_state_at_least = true;
    t.reason = Some(EndReason::ActiveClose);
    long.reason = Some(EndReason::ActiveClose);
    let out = render_events(
        Format::Text,
        plain(),
        vec![Event::T(t.clone()), Event::T(long), Event::T(t)],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(lines[0].ends_with("   PREV NOTE"), "{out}");
    assert!(lines[1].ends_with("    2h00m closed by this side"), "{out}");
    assert!(lines[2].ends_with("      PREV NOTE"), "{out}");
    assert!(lines[3].ends_with(" >1000d00h closed by this side"), "{out}");
    assert!(lines[4].ends_with("      2h00m closed by this side"), "{out}");
    assert_aligned(
        &lines,
        &[0, 2],
        &["TIME", "PID", "COMM", "SOCKET", "LOCAL", "REMOTE", "TRANSITION", "PREV", "NOTE"],
        &["PID", "SOCKET", "PREV"],
    );
}

#[test]
fn text_shows_owners_unknown_durations_and_safe_comms() {
    let out = render(Format::Text, plain());
    let lines: Vec<&str> = out.lines().collect();
    let first = lines[SOCKETS + 4];
    assert!(first.starts_with("03:41:07.123456    4242 curl "), "{first}");
    assert!(first.ends_with(&format!("CLOSE -> SYN_SENT{}?", " ".repeat(15))), "{first}");
    // The owner, not the idle task that was on the CPU.
    assert!(out.contains("03:41:07.124456     911 sshd                12 "), "{out}");
    assert!(!out.contains("swapper"), "{out}");
    // Nobody owns a TIME_WAIT socket.
    assert!(out.contains("03:41:07.127456       - -                    7 "), "{out}");
    // A byte that is not UTF-8 and a control byte, shown as escapes.
    assert!(out.contains(" 4194304 a,b\"c\\xff\\x01d  123456 255.255.255.255:65535  "), "{out}");
    assert!(out.contains(
        "03:41:07.125456 ** 12 transitions lost: ring buffer full (try a larger --ring-size)\n"
    ));
    assert!(out.contains("** 1 transition lost: skipped by the kernel (another BPF program was running on that CPU)\n"));
    assert!(out.contains("** 3 transitions lost: malformed records\n"));
    assert!(!out.contains("web-1"), "the start record prints nothing");
}

#[test]
fn text_notes_say_how_connections_ended() {
    let out = render(Format::Text, plain());
    assert!(out.contains(" ESTABLISHED -> CLOSE_WAIT  >2m03s\n"), "a lower bound: {out}");
    assert!(out.contains(" TIME_WAIT -> CLOSE          3d04h closed by this side\n"), "{out}");
    assert!(out.contains(" 1.50s connection refused (ECONNREFUSED)\n"), "{out}");
    assert!(
        out.contains(" 2m07s connect timed out (ETIMEDOUT), after 6 retransmits\n"),
        "{out}"
    );
    assert!(out.contains(" 3.99ms reset by peer (ECONNRESET)\n"), "{out}");
    assert!(out.contains(" 6.00ms error (E999)\n"), "{out}");

    let out = render_events(Format::Text, plain(), endings());
    for reason in all_reasons() {
        assert!(out.contains(&format!(" 2.00ms {}", reason.describe())), "{reason:?}: {out}");
    }
    assert!(out.contains("connect timed out (ETIMEDOUT), after 1 retransmit\n"), "{out}");
    assert!(out.contains(" reset by peer (ECONNRESET)\n"), "only a timeout counts them");
    assert!(out.contains(" 2.00ms (EPIPE)\n"), "an error without a reason: {out}");
}

#[test]
fn text_socket_block_is_like_ss_with_owners() {
    let out = render(Format::Text, plain());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        &lines[..7],
        [
            "STATE        LOCAL                  REMOTE                 PID     COMM            SOCKET",
            "LISTEN       0.0.0.0:22             *:*                    612     sshd            1",
            "ESTABLISHED  10.0.0.5:22            192.168.1.20:51234     911     sshd            12",
            "LISTEN       [::]:8080              *:*                    300     nginx           30",
            "STATE        LOCAL                                       REMOTE                 PID     COMM            SOCKET",
            "TIME_WAIT    [2001:db8:85a3:1234:5678:8a2e:370:7334]:443 [2001:db8::2]:50001    -       -               40",
            "",
        ]
    );
    assert!(lines[7].starts_with("TIME "), "{out}");

    // A snapshot run prints the block alone.
    let snapshot = render_snapshot_run(Format::Text);
    assert_eq!(snapshot, lines[..6].join("\n") + "\n");
}

#[test]
fn text_separates_a_socket_block_from_a_loss_after_it() {
    let mut events = events();
    events.truncate(SOCKETS);
    events.push(Event::L(Lost { time: at(0), count: 2, cause: LossCause::RingFull }));
    let out = render_events(Format::Text, plain(), events);
    let lines: Vec<&str> = out.lines().collect();
    // Two headers, the sockets, a blank line, the loss.
    assert_eq!(lines.len(), SOCKETS + 4, "{out}");
    assert_eq!(lines[SOCKETS + 2], "");
    assert!(lines[SOCKETS + 3].contains(" ** 2 transitions lost"), "{out}");
}

const START_KEYS: &[&str] = &["type", "schema", "portrace", "time", "ts_ns", "host", "kernel"];
const SOCKET_KEYS: &[&str] = &[
    "type",
    "time",
    "ts_ns",
    "socket",
    "family",
    "saddr",
    "sport",
    "daddr",
    "dport",
    "state",
    "owner_pid",
    "owner_comm",
    "owner_source",
    "owner_cgroup",
    "netns",
    "inode",
    "uid",
];
const TRANSITION_KEYS: &[&str] = &[
    "type",
    "time",
    "ts_ns",
    "pid",
    "comm",
    "socket",
    "family",
    "saddr",
    "sport",
    "daddr",
    "dport",
    "oldstate",
    "newstate",
    "prev_state_us",
    "prev_state_at_least",
    "owner_pid",
    "owner_comm",
    "owner_source",
    "owner_cgroup",
    "reason",
    "error",
    "retransmits",
    "netns",
];
const LOST_KEYS: &[&str] = &["type", "time", "ts_ns", "count", "cause"];
const PROCESS_KEYS: &[&str] =
    &["type", "time", "ts_ns", "pid", "comm", "ppid", "exe", "cmdline", "uid", "user", "cgroup"];
const NETNS_KEYS: &[&str] = &["type", "time", "ts_ns", "netns", "port_range"];
const CGROUP_KEYS: &[&str] =
    &["type", "time", "ts_ns", "id", "path", "unit", "user", "container", "runtime", "pod"];
const END_KEYS: &[&str] =
    &["type", "time", "ts_ns", "transitions", "lost", "lost_by_cause", "by_transition"];

/// Parses JSON lines, checking that each has the documented keys in order.
fn parse_json_lines(out: &str) -> Vec<serde_json::Value> {
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for value in &lines {
        let object = value.as_object().expect("each line is an object");
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        let want = match object["type"].as_str().unwrap() {
            "start" => START_KEYS,
            "socket" => SOCKET_KEYS,
            "transition" => TRANSITION_KEYS,
            "lost" => LOST_KEYS,
            "process" => PROCESS_KEYS,
            "netns" => NETNS_KEYS,
            "cgroup" => CGROUP_KEYS,
            "end" => END_KEYS,
            other => panic!("unknown type {other}"),
        };
        assert_eq!(keys, want);
    }
    lines
}

#[test]
fn every_json_line_parses_with_the_documented_keys_in_order() {
    let out = render(Format::Json, plain());
    let lines = parse_json_lines(&out);
    assert_eq!(lines.len(), events().len() + 2);

    let start = &lines[0];
    assert_eq!(start["schema"], 1);
    assert_eq!(start["portrace"], "[version]");
    assert_eq!(start["time"], "2026-11-29T02:41:07.123456Z");
    assert_eq!(start["ts_ns"], MONO0);
    assert_eq!(start["kernel"], "6.1.0-28-amd64");

    let unknown = &lines[SOCKETS + 1];
    assert_eq!(unknown["oldstate"], "CLOSE");
    assert!(unknown["prev_state_us"].is_null());
    assert_eq!(unknown["prev_state_at_least"], false);
    let connect = &lines[SOCKETS + 2];
    assert_eq!(connect["prev_state_us"].as_f64(), Some(84.123));
    assert!(out.contains("\"prev_state_us\":84.123,"), "exactly three decimals");
    assert!(out.contains("\"prev_state_us\":0.850,"), "exactly three decimals");
    assert_eq!(connect["time"], "2026-11-29T02:41:07.123540Z");
    assert_eq!(connect["ts_ns"], MONO0 + 84_123);
    assert_eq!(connect["owner_pid"], 4242);
    assert_eq!(connect["owner_comm"], "curl");
    assert_eq!(connect["owner_source"], "syscall");
    assert!(connect["reason"].is_null() && connect["error"].is_null());
    assert_eq!(connect["retransmits"], 0);
    assert_eq!(connect["netns"], NETNS);
    // The on-CPU task and the owner are separate.
    let predates = &lines[SOCKETS + 3];
    assert_eq!(predates["pid"], 0);
    assert_eq!(predates["comm"], "swapper/1");
    assert_eq!(predates["owner_pid"], 911);
    assert_eq!(predates["owner_comm"], "sshd");
    assert_eq!(predates["owner_source"], "inventory");
    assert_eq!(predates["prev_state_at_least"], true);
    let odd = &lines[SOCKETS + 4];
    assert_eq!(odd["comm"], "a,b\"c\u{fffd}\u{1}d");
    assert_eq!(odd["owner_comm"], "a,b\"c\u{fffd}\u{1}d");
    assert_eq!(odd["saddr"], "255.255.255.255");
    assert_eq!(lines[SOCKETS + 6]["saddr"], "::1");
    assert_eq!(lines[SOCKETS + 6]["owner_source"], "listener");
    let v6 = &lines[SOCKETS + 7];
    assert_eq!(v6["family"], "ipv6");
    assert_eq!(v6["saddr"], "2001:db8:85a3:1234:5678:8a2e:370:7334");
    assert_eq!(v6["daddr"], "2001:db8::2");
    let time_wait = &lines[SOCKETS + 9];
    assert!(time_wait["owner_pid"].is_null() && time_wait["owner_comm"].is_null());
    assert_eq!(time_wait["owner_source"], "unknown");
    assert_eq!(time_wait["reason"], "active_close");
    assert!(time_wait["error"].is_null());
    let refused = &lines[SOCKETS + 12];
    assert_eq!(refused["reason"], "refused");
    assert_eq!(refused["error"], "ECONNREFUSED");
    let timeout = &lines[SOCKETS + 13];
    assert_eq!(timeout["reason"], "connect_timeout");
    assert_eq!(timeout["error"], "ETIMEDOUT");
    assert_eq!(timeout["retransmits"], 6);
    assert_eq!(lines[SOCKETS + 14]["error"], "ECONNRESET");
    assert_eq!(lines[SOCKETS + 15]["reason"], "error");
    assert_eq!(lines[SOCKETS + 15]["error"], "E999");

    let end = lines.last().unwrap();
    assert_eq!(end["transitions"], 12);
    assert_eq!(end["lost"], 16);
    assert_eq!(
        end["lost_by_cause"],
        serde_json::json!({"ring_full": 12, "skipped": 1, "malformed": 3, "unreadable": 0, "timewait": 0, "gap": 0})
    );
    let kinds: Vec<&str> =
        end["by_transition"].as_object().unwrap().keys().map(String::as_str).collect();
    // By (old, new) kernel number: ESTABLISHED 1, SYN_SENT 2, SYN_RECV 3, FIN_WAIT1 4,
    // TIME_WAIT 6, CLOSE 7, CLOSE_WAIT 8, LISTEN 10.
    assert_eq!(
        kinds,
        [
            "ESTABLISHED->FIN_WAIT1",
            "ESTABLISHED->CLOSE",
            "ESTABLISHED->CLOSE_WAIT",
            "SYN_SENT->ESTABLISHED",
            "SYN_SENT->CLOSE",
            "SYN_RECV->ESTABLISHED",
            "FIN_WAIT1->FIN_WAIT2",
            "TIME_WAIT->CLOSE",
            "CLOSE->SYN_SENT",
            "CLOSE_WAIT->CLOSE",
            "LISTEN->SYN_RECV",
        ]
    );
}

#[test]
fn json_socket_records() {
    let out = render(Format::Json, plain());
    let lines = parse_json_lines(&out);
    let sockets: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["type"] == "socket").collect();
    assert_eq!(sockets.len(), SOCKETS);
    assert!(lines[1..=SOCKETS].iter().all(|l| l["type"] == "socket"), "after start");
    assert_eq!(
        *sockets[0],
        serde_json::json!({
            "type": "socket", "time": "2026-11-29T02:41:07.123456Z", "ts_ns": MONO0,
            "socket": 1, "family": "ipv4", "saddr": "0.0.0.0", "sport": 22,
            "daddr": "0.0.0.0", "dport": 0, "state": "LISTEN", "owner_pid": 612,
            "owner_comm": "sshd", "owner_source": "inventory", "owner_cgroup": null, "netns": NETNS,
            "inode": 12345, "uid": 0,
        })
    );
    assert_eq!(sockets[1]["state"], "ESTABLISHED");
    assert_eq!(sockets[1]["daddr"], "192.168.1.20");
    assert_eq!(sockets[1]["dport"], 51234);
    assert_eq!(sockets[2]["family"], "ipv6");
    assert_eq!(sockets[2]["saddr"], "::");
    assert_eq!(sockets[2]["uid"], 33);
    let orphan = sockets[3];
    assert_eq!(orphan["state"], "TIME_WAIT");
    assert!(orphan["owner_pid"].is_null() && orphan["owner_comm"].is_null());
    assert_eq!(orphan["owner_source"], "unknown");
    assert_eq!(orphan["inode"], 0);

    // A snapshot run: start, the sockets, end.
    let snapshot = parse_json_lines(&render_snapshot_run(Format::Json));
    let types: Vec<&str> = snapshot.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["start", "socket", "socket", "socket", "socket", "end"]);
    assert_eq!(snapshot[5]["transitions"], 0);
}

#[test]
fn process_and_netns_details_are_json_records_only() {
    let full = crate::record::ProcessInfo {
        time: at(5),
        pid: 4242,
        comm: Comm::new("curl"),
        ppid: Some(4100),
        exe: Some("/usr/bin/curl".into()),
        cmdline: Some(vec!["curl".into(), "-d".into(), "a \"quoted\"\n arg".into()]),
        uid: Some(1000),
        user: Some("alice".into()),
        cgroup: Some("/user.slice".into()),
        start_ticks: Some(99),
    };
    let gone = crate::record::ProcessInfo {
        pid: 77,
        comm: Comm::new("sh"),
        ppid: None,
        exe: None,
        cmdline: None,
        uid: None,
        user: None,
        cgroup: None,
        start_ticks: None,
        ..full.clone()
    };
    let ns = crate::record::NetnsInfo { time: at(5), netns: NETNS, port_range: Some((32768, 60999)) };
    let unknown_ns = crate::record::NetnsInfo { port_range: None, netns: 1, ..ns };
    let write = |format: Format| {
        written(format, plain(), |sink| {
            sink.process(&full)?;
            sink.process(&gone)?;
            sink.netns(&ns)?;
            sink.netns(&unknown_ns)
        })
    };
    let lines = parse_json_lines(&write(Format::Json));
    assert_eq!(
        lines[0],
        serde_json::json!({
            "type": "process", "time": "2026-11-29T02:41:07.123456Z", "ts_ns": MONO0 + 5,
            "pid": 4242, "comm": "curl", "ppid": 4100, "exe": "/usr/bin/curl",
            "cmdline": ["curl", "-d", "a \"quoted\"\n arg"], "uid": 1000, "user": "alice",
            "cgroup": "/user.slice",
        })
    );
    for key in ["ppid", "exe", "cmdline", "uid", "user", "cgroup"] {
        assert!(lines[1][key].is_null(), "{key} of a process that is gone");
    }
    assert_eq!((&lines[1]["pid"], &lines[1]["comm"]), (&serde_json::json!(77), &serde_json::json!("sh")));
    assert_eq!(lines[2]["port_range"], serde_json::json!([32768, 60999]));
    assert_eq!(lines[2]["netns"], NETNS);
    assert!(lines[3]["port_range"].is_null());
    // The text and CSV formats show owners by pid and name, as before.
    assert_eq!(write(Format::Text), "");
    assert_eq!(write(Format::Csv), "");
}

#[test]
fn cgroups_are_named_in_json_and_csv() {
    let pod = "0b7c5c2e_8f4a_4f1e_9d3a_6a1b2c3d4e5f";
    let id = "4f1c0e9a2b3d4c5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6";
    let container = crate::record::CgroupInfo {
        time: at(5),
        id: 4242,
        path: Some(format!("/kubepods.slice/kubepods-pod{pod}.slice/cri-containerd-{id}.scope")),
    };
    let hostile = crate::record::CgroupInfo { time: at(5), id: 77, path: Some("/system.slice/=x\x1b[31m,.service".into()) };
    let gone = crate::record::CgroupInfo { time: at(5), id: 78, path: None };
    let owned = |cgroup: u64, socket: u64| Transition {
        owner: Some(Owner { pid: 9, comm: Comm::new("app"), source: OwnerSource::Syscall, cgroup }),
        ..tr(6, 9, Comm::new("app"), socket, (v4(10, 0, 0, 1), 5000), (v4(10, 0, 0, 2), 80), (Close, SynSent), None)
    };
    let write = |format: Format| {
        written(format, plain(), |sink| {
            for (g, socket) in [(&container, 1), (&hostile, 2), (&gone, 3)] {
                sink.cgroup(g)?;
                sink.transition(&owned(g.id, socket))?;
            }
            // An id no cgroup record named.
            sink.transition(&owned(99, 4))
        })
    };
    let lines = parse_json_lines(&write(Format::Json));
    assert_eq!(
        lines[0],
        serde_json::json!({
            "type": "cgroup", "time": "2026-11-29T02:41:07.123456Z", "ts_ns": MONO0 + 5, "id": 4242,
            "path": container.path, "unit": format!("cri-containerd-{id}.scope"), "user": null,
            "container": id, "runtime": "containerd", "pod": pod.replace('_', "-"),
        })
    );
    assert_eq!(lines[1]["owner_cgroup"], 4242);
    assert_eq!(lines[2]["unit"], "=x\x1b[31m,.service", "JSON escapes the control character");
    assert!(lines[4]["path"].is_null() && lines[4]["unit"].is_null());
    assert_eq!(lines[6]["owner_cgroup"], 99);
    let rows = parse_csv(&write(Format::Csv));
    let header = csv_columns();
    let col = |row: &[String], name: &str| row[header.iter().position(|&h| h == name).unwrap()].clone();
    assert_eq!(rows.len(), 5, "a header and the transitions; cgroups have no rows of their own");
    assert_eq!(col(&rows[1], "owner_cgroup"), "4242");
    assert_eq!(col(&rows[1], "cgroup_unit"), format!("cri-containerd-{id}.scope"));
    assert_eq!(col(&rows[1], "container"), id);
    assert_eq!(col(&rows[1], "pod"), pod.replace('_', "-"));
    assert_eq!(col(&rows[2], "cgroup_unit"), "'=x\\x1b[31m,.service", "escaped and kept from being a formula");
    assert_eq!((col(&rows[3], "owner_cgroup"), col(&rows[3], "cgroup_unit")), ("78".into(), String::new()));
    assert_eq!((col(&rows[4], "owner_cgroup"), col(&rows[4], "pod")), ("99".into(), String::new()));
}

#[test]
fn every_reason_has_its_name_in_json_and_csv() {
    let reasons = all_reasons();
    let json = parse_json_lines(&render_events(Format::Json, plain(), endings()));
    let csv = parse_csv(&render_events(Format::Csv, plain(), endings()));
    for (i, reason) in reasons.into_iter().enumerate() {
        assert_eq!(json[i + 1]["reason"], reason.name());
        assert_eq!(csv[i + 1][18], reason.name());
    }
    // Names are distinct.
    let mut names: Vec<&str> = reasons.iter().map(|r| r.name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), reasons.len());
    // The corner cases after the reasons: no reason, an error without a name.
    let last = json.len() - 2;
    assert!(json[last]["reason"].is_null());
    assert_eq!(json[last]["error"], "EPIPE");
    assert_eq!(json[last - 1]["error"], "E999");
    assert_eq!(csv[csv.len() - 1][18], "");
    assert_eq!(csv[csv.len() - 1][19], "EPIPE");
}

/// A strict RFC 4180 reader for the test: rows of fields, quotes doubled inside
/// quoted fields, rows ending in `\n`.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => {
                assert!(field.is_empty(), "quote inside an unquoted field");
                quoted = true;
            }
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(!quoted && field.is_empty() && row.is_empty(), "text ends with a full row");
    rows
}

/// The CSV header's column names.
fn csv_columns() -> Vec<&'static str> {
    csv::HEADER.trim_end().split(',').collect()
}

#[test]
fn csv_rows_have_every_column() {
    let out = render(Format::Csv, plain());
    let rows = parse_csv(&out);
    let header = csv_columns();
    assert_eq!(header.len(), 28);
    assert_eq!(rows[0], header);
    assert_eq!(rows.len(), events().len() + 1, "no start or end rows");
    for row in &rows {
        assert_eq!(row.len(), header.len(), "{row:?}");
    }
    let col = |row: &[String], name: &str| -> String {
        row[header.iter().position(|&h| h == name).unwrap()].clone()
    };

    let listener = &rows[1];
    assert_eq!(
        listener.join(","),
        "socket,2026-11-29T02:41:07.123456Z,123456789,,,1,ipv4,0.0.0.0,22,0.0.0.0,0,,LISTEN,,,\
         612,sshd,inventory,,,,4026531840,,,,,,"
    );
    let orphan = &rows[SOCKETS];
    assert_eq!(col(orphan, "newstate"), "TIME_WAIT");
    assert_eq!(col(orphan, "saddr"), "2001:db8:85a3:1234:5678:8a2e:370:7334");
    assert_eq!(&orphan[15..18], ["", "", "unknown"]);

    let unknown = &rows[SOCKETS + 1];
    assert_eq!(col(unknown, "prev_state_us"), "", "unknown prev is empty");
    assert_eq!(col(unknown, "prev_state_at_least"), "false");
    assert_eq!(&unknown[15..], ["4242", "curl", "syscall", "", "", "0", "4026531840", "", "", "", "", "", ""]);
    assert_eq!(col(&rows[SOCKETS + 3], "prev_state_at_least"), "true");
    let odd = &rows[SOCKETS + 4];
    assert_eq!(odd[0], "transition");
    assert_eq!(col(odd, "comm"), "a,b\"c\\xff\\x01d");
    assert_eq!(col(odd, "owner_comm"), "a,b\"c\\xff\\x01d");
    assert_eq!(col(odd, "prev_state_us"), "0.850");
    assert_eq!(&odd[22..24], ["", ""]);
    let lost = &rows[SOCKETS + 5];
    assert_eq!(lost[0], "lost");
    assert_eq!(lost[1], "2026-11-29T02:41:07.125456Z");
    assert!(lost[3..22].iter().all(String::is_empty), "{lost:?}");
    assert_eq!(&lost[22..24], ["12", "ring_full"]);
    assert!(lost[24..].iter().all(String::is_empty), "{lost:?}");
    let time_wait = &rows[SOCKETS + 9];
    assert_eq!(&time_wait[15..20], ["", "", "unknown", "active_close", ""]);
    let timeout = &rows[SOCKETS + 13];
    assert_eq!(&timeout[18..21], ["connect_timeout", "ETIMEDOUT", "6"]);
    assert_eq!(col(&rows[SOCKETS + 15], "error"), "E999");

    // A snapshot run: the header and the sockets.
    let snapshot = parse_csv(&render_snapshot_run(Format::Csv));
    assert_eq!(snapshot.len(), SOCKETS + 1);
    assert!(snapshot[1..].iter().all(|row| row[0] == "socket"));
}

#[test]
fn csv_quotes_only_when_needed() {
    let mut buf = Vec::new();
    csv::push_field(&mut buf, b"plain name");
    buf.push(b'|');
    csv::push_field(&mut buf, b"\"q\"");
    buf.push(b'|');
    csv::push_field(&mut buf, b"two\r\nlines");
    buf.push(b'|');
    csv::push_field(&mut buf, b"=1+2,\"x\"");
    buf.push(b'|');
    csv::push_field(&mut buf, b"\x1b[2J\xff");
    assert_eq!(
        String::from_utf8(buf).unwrap(),
        "plain name|\"\"\"q\"\"\"|two\\x0d\\x0alines|\"'=1+2,\"\"x\"\"\"|\\x1b[2J\\xff"
    );
}

#[test]
fn csv_header_is_written_once_even_without_start() {
    let buf = SharedBuf::default();
    let mut sink = sink(Format::Csv, Box::new(buf.clone()), TextOptions::default());
    sink.lost(&Lost { time: at(0), count: 2, cause: LossCause::Skipped }).unwrap();
    sink.end(&Summary::new(at(0))).unwrap();
    let out = buf.text();
    assert_eq!(out.matches("type,time").count(), 1, "{out}");
    assert!(out.starts_with(csv::HEADER));
}

#[test]
fn addresses_render_like_std() {
    let cases: [IpAddr; 8] = [
        v4(0, 0, 0, 0),
        v4(255, 255, 255, 255),
        v4(10, 20, 0, 7),
        v4(9, 99, 100, 199),
        v4(127, 63, 0, 1),
        "::".parse().unwrap(),
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
        "::ffff:192.0.2.1".parse().unwrap(),
    ];
    for addr in cases {
        assert_eq!(AddrText::ip(addr).as_bytes(), addr.to_string().as_bytes());
        let mut line = b"x".to_vec();
        push_ip(&mut line, addr);
        assert_eq!(line, format!("x{addr}").as_bytes());
        assert_eq!(
            AddrText::with_port(addr, 65535).as_bytes(),
            std::net::SocketAddr::new(addr, 65535).to_string().as_bytes()
        );
    }
    let widest = AddrText::with_port(cases[6], 65535);
    assert_eq!(widest.as_bytes().len(), 47);
    assert_eq!(AddrText::with_port(cases[1], 65535).as_bytes().len(), 21);
}

#[test]
fn micros_have_three_decimals() {
    let render = |ns| {
        let mut buf = Vec::new();
        push_micros(&mut buf, ns);
        String::from_utf8(buf).unwrap()
    };
    assert_eq!(render(0), "0.000");
    assert_eq!(render(7), "0.007");
    assert_eq!(render(84_123), "84.123");
    assert_eq!(render(1_000_000), "1000.000");
    assert_eq!(render(u64::MAX), "18446744073709551.615");
}

/// Counts the allocations of the current thread, for the test below; other threads'
/// allocations (tests running in parallel) do not disturb the count.
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    }

    fn count() {
        // Not during thread teardown, when the counter may be gone already.
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }

    pub struct Counting;

    // SAFETY: every call is passed on to the system allocator unchanged.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count();
            // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            count();
            // SAFETY: as for `alloc`.
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            count();
            // SAFETY: `ptr` came from this allocator, that is from `System`.
            unsafe { System.realloc(ptr, layout, new_size) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: `ptr` came from this allocator, that is from `System`.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    /// Allocations made by this thread so far.
    pub fn allocations() -> u64 {
        ALLOCATIONS.with(Cell::get)
    }
}

#[test]
fn no_format_allocates_per_record() {
    let mut records = events();
    records.extend(endings());
    for format in [Format::Text, Format::Json, Format::Csv] {
        for text in [plain(), colored()] {
            let mut sink = sink(format, Box::new(io::sink()), text);
            sink.start(&start_record()).unwrap();
            let feed = |sink: &mut Box<dyn Sink + Send>| {
                for record in &records {
                    match record {
                        Event::S(s) => sink.socket(s).unwrap(),
                        Event::T(t) => sink.transition(t).unwrap(),
                        Event::L(l) => sink.lost(l).unwrap(),
                    }
                }
            };
            // The first pass may grow the line buffer to its final size.
            feed(&mut sink);
            let before = counting::allocations();
            feed(&mut sink);
            feed(&mut sink);
            assert_eq!(counting::allocations(), before, "{format:?}");
        }
    }
}

/// Throughput of the JSON path to a buffered file. Run it optimised:
/// `cargo test -p portrace --release --lib -- --ignored json_throughput --nocapture`.
#[test]
#[ignore = "a benchmark; only meaningful in a release build"]
fn json_throughput() {
    let path = std::env::temp_dir().join(format!("portrace-json-bench-{}", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    let mut sink =
        sink(Format::Json, Box::new(io::BufWriter::new(file)), TextOptions::default());
    let sample: Vec<Transition> = events()
        .into_iter()
        .filter_map(|e| match e {
            Event::T(t) => Some(t),
            Event::S(_) | Event::L(_) => None,
        })
        .collect();
    const N: usize = 3_000_000;
    let before = counting::allocations();
    let started = std::time::Instant::now();
    for i in 0..N {
        sink.transition(&sample[i % sample.len()]).unwrap();
    }
    sink.flush().unwrap();
    let elapsed = started.elapsed();
    assert_eq!(counting::allocations(), before, "allocation-free");
    let size = std::fs::metadata(&path).unwrap().len();
    std::fs::remove_file(&path).unwrap();
    let rate = N as f64 / elapsed.as_secs_f64();
    println!("{rate:.0} events/s, {:.0} MB/s", size as f64 / elapsed.as_secs_f64() / 1e6);
    if !cfg!(debug_assertions) {
        assert!(rate > 1_000_000.0, "{rate:.0} events/s");
    }
}
