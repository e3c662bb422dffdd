//! Tests of `portrace top` without a terminal: the model's rules, the browsing of a
//! recording, and snapshots of every screen drawn on ratatui's TestBackend.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Color;
use ratatui::Terminal;

use super::browse::Browser;
use super::model::{Action, Change, Overlay, SortKey, Table, Top, LINGER_NS, RECENT_CAP};
use super::render;
use crate::clock::Zone;
use crate::filter::FilterSpec;
use crate::format::CompactDuration;
use crate::output::{Sink, Start};
use crate::record::{
    Comm, EndReason, Endpoints, Family, LossCause, Lost, Owner, OwnerSource, SocketRecord, Timestamp, Transition,
};
use crate::tcp_state::TcpState::{self, *};
use crate::destination::RunSetup;
use crate::tracefile::{FileSink, ReadOptions, TraceReader, WriteOptions};

/// 2026-12-02 08:41:07 UTC at the start, for fixed clocks in snapshots.
const OFFSET: i128 = 1_796_200_867_000_000_000 - 1_000_000_000_000;
const START: u64 = 1_000_000_000_000;
const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

fn ts(mono_ns: u64) -> Timestamp {
    Timestamp { mono_ns, unix_ns: i128::from(mono_ns) + OFFSET }
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn owner(pid: u32, comm: &str, source: OwnerSource) -> Option<Owner> {
    Some(Owner { pid, comm: Comm::new(comm), source, cgroup: 0 })
}

fn start() -> Start {
    Start { time: ts(START), host: "web1".into(), kernel: "6.18.0".into(), features: Default::default() }
}

fn inventory() -> Vec<SocketRecord> {
    let listener = SocketRecord {
        time: ts(START),
        socket: 1,
        family: Family::Ipv4,
        ends: Endpoints { saddr: v4(0, 0, 0, 0), sport: 80, daddr: v4(0, 0, 0, 0), dport: 0, netns: 4026531840 },
        state: Listen,
        owner: owner(812, "nginx", OwnerSource::Inventory),
        inode: 100,
        uid: 0,
        cookie: 9,
    };
    let ssh = SocketRecord {
        socket: 2,
        ends: Endpoints { saddr: v4(10, 0, 0, 5), sport: 22, daddr: v4(10, 0, 0, 9), dport: 51234, ..listener.ends },
        state: Established,
        owner: owner(1204, "sshd", OwnerSource::Inventory),
        inode: 101,
        cookie: 10,
        ..listener.clone()
    };
    let v6 = SocketRecord {
        socket: 3,
        family: Family::Ipv6,
        ends: Endpoints {
            saddr: IpAddr::V6(Ipv6Addr::LOCALHOST),
            sport: 5432,
            daddr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            dport: 0,
            ..listener.ends
        },
        state: Listen,
        owner: owner(990, "postgres", OwnerSource::Inventory),
        inode: 102,
        cookie: 11,
        ..listener.clone()
    };
    vec![listener, ssh, v6]
}

/// A transition of socket `id` at `at` (nanoseconds after the start).
#[allow(clippy::too_many_arguments, reason = "a test fixture that spells out every field it varies")]
fn tr(at: u64, id: u64, local: (IpAddr, u16), remote: (IpAddr, u16), old: TcpState, new: TcpState, was: Option<u64>, who: Option<Owner>) -> Transition {
    Transition::example(id, old, new)
        .at(ts(START + at))
        .on_cpu(who.map_or(0, |o| o.pid), who.map_or(Comm::new("swapper/0"), |o| o.comm))
        .between(local, remote)
        .after(was)
        .owned_by(who)
        .in_netns(4026531840)
}

/// The traffic after the inventory: a client connects out, nginx accepts a connection,
/// a connect is refused within one refresh, the ssh session starts closing.
fn traffic() -> Vec<Transition> {
    let me = v4(10, 0, 0, 5);
    let curl = owner(3001, "curl", OwnerSource::Syscall);
    let nginx_child = owner(812, "nginx", OwnerSource::Listener);
    let probe = owner(3050, "nc", OwnerSource::Syscall);
    let peer = (v4(93, 184, 216, 34), 443);
    let client = (v4(10, 0, 0, 7), 40112);
    let mut refused = tr(3 * SEC + 400 * MS, 12, (v4(127, 0, 0, 1), 41000), (v4(127, 0, 0, 1), 9), SynSent, Close, Some(80_000), probe);
    refused.reason = Some(EndReason::Refused);
    refused.error = Some(libc::ECONNREFUSED);
    let mut ssh_closing = tr(3 * SEC + 500 * MS, 2, (me, 22), (v4(10, 0, 0, 9), 51234), Established, FinWait1, Some(3 * SEC + 500 * MS), owner(1204, "sshd", OwnerSource::Syscall));
    ssh_closing.prev_state_at_least = true;
    vec![
        tr(SEC, 10, (me, 0), peer, Close, SynSent, None, curl),
        tr(SEC + 21 * MS, 10, (me, 43210), peer, SynSent, Established, Some(21 * MS), curl),
        tr(2 * SEC, 11, (me, 80), client, Listen, SynRecv, None, nginx_child),
        tr(2 * SEC + 300_000, 11, (me, 80), client, SynRecv, Established, Some(300_000), nginx_child),
        tr(3 * SEC + 400 * MS - 80_000, 12, (v4(127, 0, 0, 1), 0), (v4(127, 0, 0, 1), 9), Close, SynSent, None, probe),
        refused,
        ssh_closing,
    ]
}

/// The model after the inventory and the traffic, at `now` (after the start).
fn model(now: u64) -> Top {
    let mut top = Top::new("live");
    top.table_mut().start(&start());
    for s in inventory() {
        top.table_mut().socket(&s);
    }
    for t in traffic() {
        top.transition(&t);
    }
    top.tick(ts(START + now));
    top
}

fn draw(top: &Top, width: u16, height: u16) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| render::draw(f, top, Zone::Fixed(3600))).unwrap();
    terminal.backend().buffer().clone()
}

/// The screen as text, one line per row, trailing blanks trimmed.
fn text(buffer: &Buffer) -> String {
    let area = buffer.area;
    let mut out = String::new();
    for y in 0..area.height {
        let mut line = String::new();
        for x in 0..area.width {
            line.push_str(buffer[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn screen(top: &Top, width: u16, height: u16) -> String {
    text(&draw(top, width, height))
}

// ---- the model ----

#[test]
fn inventory_sockets_are_older_than_the_trace_and_not_highlighted() {
    let top = model(3 * SEC);
    let l = top.shown().get(1).unwrap();
    assert!(l.born_at_least && l.entered_at_least);
    assert_eq!(l.change, Change::Inventory);
    assert!(!l.highlighted(START + 3 * SEC));
    assert_eq!(l.age_ns(START + 3 * SEC), 3 * SEC);
}

#[test]
fn new_sockets_and_changes_are_highlighted_for_a_while() {
    let top = model(2 * SEC + MS);
    let child = top.shown().get(11).unwrap();
    assert_eq!((child.change, child.state), (Change::New, Established));
    assert!(!child.born_at_least);
    assert_eq!(child.born_ns, START + 2 * SEC);
    assert!(child.highlighted(START + 2 * SEC + MS));
    assert!(!child.highlighted(START + 4 * SEC + MS));
    // A socket first seen mid-life is a change, not a new socket, and its age is a bound.
    let top = model(4 * SEC);
    let ssh = top.shown().get(2).unwrap();
    assert_eq!((ssh.change, ssh.state), (Change::State, FinWait1));
    assert!(!ssh.entered_at_least && ssh.born_at_least);
}

#[test]
fn closed_sockets_linger_then_go() {
    let mut top = model(3 * SEC + 500 * MS);
    let refused = top.shown().get(12).unwrap();
    assert!(refused.is_closed());
    assert_eq!(refused.reason, Some(EndReason::Refused));
    top.tick(ts(START + 3 * SEC + 400 * MS + LINGER_NS - 1));
    assert!(top.shown().get(12).is_some(), "still within the linger time");
    top.tick(ts(START + 3 * SEC + 400 * MS + LINGER_NS));
    assert!(top.shown().get(12).is_none(), "gone after it");
    assert!(top.shown().get(10).is_some(), "open sockets stay");
}

#[test]
fn short_lived_states_stay_in_the_recent_transitions() {
    // The refused connect went CLOSE -> SYN_SENT -> CLOSE within 80 us: both transitions
    // are kept, whatever the refresh rate.
    let top = model(4 * SEC);
    let edges: Vec<(u64, TcpState, TcpState)> =
        top.shown().recent().iter().map(|t| (t.socket, t.oldstate, t.newstate)).collect();
    assert!(edges.contains(&(12, Close, SynSent)) && edges.contains(&(12, SynSent, Close)), "{edges:?}");
    assert_eq!(edges.len(), 7);
    let mut table = Table::new();
    for i in 0..(RECENT_CAP as u64 + 5) {
        table.transition(&tr(i, 100 + i, (v4(1, 1, 1, 1), 1), (v4(2, 2, 2, 2), 2), Close, SynSent, None, None));
    }
    assert_eq!(table.recent().len(), RECENT_CAP);
    assert_eq!(table.recent().front().unwrap().socket, 105, "the oldest go first");
    assert_eq!(table.transitions(), RECENT_CAP as u64 + 5);
}

#[test]
fn counts_per_state_leave_closed_sockets_out() {
    let top = model(3 * SEC + 500 * MS);
    let counts: Vec<(TcpState, usize)> = top.shown().state_counts().into_iter().filter(|&(_, n)| n > 0).collect();
    assert_eq!(counts, [(Established, 2), (FinWait1, 1), (Listen, 2)]);
}

#[test]
fn losses_are_counted_by_cause() {
    let mut table = Table::new();
    table.lost(&Lost { time: ts(START), count: 3, cause: LossCause::RingFull });
    table.lost(&Lost { time: ts(START), count: 2, cause: LossCause::Skipped });
    table.lost(&Lost { time: ts(START), count: 1, cause: LossCause::RingFull });
    assert_eq!(table.lost_total(), 6);
    let by: Vec<(LossCause, u64)> = table.lost_by_cause().filter(|&(_, n)| n > 0).collect();
    assert_eq!(by, [(LossCause::RingFull, 4), (LossCause::Skipped, 2)]);
}

#[test]
fn a_socket_closed_and_connected_again_is_new_again() {
    let mut table = Table::new();
    let a = (v4(10, 0, 0, 1), 5000);
    let b = (v4(10, 0, 0, 2), 80);
    table.transition(&tr(0, 1, a, b, Close, SynSent, None, None));
    table.transition(&tr(SEC, 1, a, b, SynSent, Close, Some(SEC), None));
    assert_eq!(table.get(1).unwrap().change, Change::Closed);
    table.transition(&tr(2 * SEC, 1, a, b, Close, SynSent, None, None));
    let c = table.get(1).unwrap();
    assert_eq!((c.change, c.state, c.history.len()), (Change::New, SynSent, 3));
}

#[test]
fn the_table_stays_within_its_capacity() {
    let mut table = Table::with_capacity(3);
    let ep = |p| (v4(10, 0, 0, 1), p);
    for id in 1..=3 {
        table.transition(&tr(id * SEC, id, ep(id as u16), ep(80), Close, SynSent, None, None));
    }
    table.transition(&tr(4 * SEC, 2, ep(2), ep(80), SynSent, Close, None, None));
    table.transition(&tr(5 * SEC, 4, ep(4), ep(80), Close, SynSent, None, None));
    assert!(table.get(2).is_none(), "the closed one goes first");
    table.transition(&tr(6 * SEC, 5, ep(5), ep(80), Close, SynSent, None, None));
    assert!(table.get(1).is_none(), "then the one unchanged the longest");
    assert_eq!((table.len(), table.evicted()), (3, 2));
}

#[test]
fn filter_words_must_all_match() {
    let mut top = model(3 * SEC + 500 * MS);
    let ids = |top: &Top| {
        let mut v: Vec<u64> = top.rows().iter().map(|c| c.id).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&top), [1, 2, 3, 10, 11, 12]);
    for c in "NGINX".chars() {
        top.apply(Action::FilterChar(c));
    }
    assert_eq!(ids(&top), [1, 11]);
    top.apply(Action::FilterChar(' '));
    for c in "estab".chars() {
        top.apply(Action::FilterChar(c));
    }
    assert_eq!(ids(&top), [11]);
    top.apply(Action::FilterClear);
    assert_eq!(ids(&top).len(), 6);
    top.filter = ":443".into();
    assert_eq!(ids(&top), [10]);
}

#[test]
fn sorting_and_selection_follow_the_socket() {
    let mut top = model(3 * SEC + 500 * MS);
    let order = |top: &Top| top.rows().iter().map(|c| c.id).collect::<Vec<_>>();
    assert_eq!(order(&top), [2, 12, 11, 10, 3, 1], "last change first");
    top.apply(Action::Down);
    top.apply(Action::Down);
    let rows = top.rows();
    assert_eq!(rows[top.selected_index(&rows).unwrap()].id, 11);
    drop(rows);
    while top.sort != SortKey::State {
        top.apply(Action::CycleSort);
    }
    let rows = top.rows();
    assert_eq!(rows.iter().map(|c| c.state.name()).collect::<Vec<_>>(), ["CLOSE", "ESTABLISHED", "ESTABLISHED", "FIN_WAIT1", "LISTEN", "LISTEN"]);
    assert_eq!(rows[top.selected_index(&rows).unwrap()].id, 11, "the selection stays on its socket");
    drop(rows);
    top.apply(Action::ReverseSort);
    assert_eq!(top.rows()[0].state, Listen);
    top.page = 4;
    top.apply(Action::Home);
    top.apply(Action::PageDown);
    let rows = top.rows();
    assert_eq!(top.selected_index(&rows), Some(4));
    drop(rows);
    top.apply(Action::End);
    top.apply(Action::Down);
    let rows = top.rows();
    assert_eq!(top.selected_index(&rows), Some(5), "stops at the last row");
}

#[test]
fn pause_freezes_the_display_not_the_collection() {
    let mut top = model(3 * SEC);
    top.apply(Action::TogglePause);
    assert!(top.paused());
    let more = tr(4 * SEC, 20, (v4(10, 0, 0, 5), 0), (v4(10, 0, 0, 1), 53), Close, SynSent, None, None);
    top.transition(&more);
    top.tick(ts(START + 5 * SEC));
    assert!(top.shown().get(20).is_none(), "not shown while paused");
    assert!(top.live_table().get(20).is_some(), "but collected");
    assert_eq!(top.pending, 1);
    assert_eq!(top.shown().now(), ts(START + 3 * SEC), "the clock is frozen too");
    top.apply(Action::TogglePause);
    assert!(!top.paused());
    assert!(top.shown().get(20).is_some());
}

#[test]
fn a_timeline_outlives_its_socket() {
    let mut top = model(3 * SEC + 500 * MS);
    top.filter = "nc".into();
    top.apply(Action::OpenTimeline);
    assert_eq!(top.overlay, Overlay::Timeline { socket: 12, scroll: 0 });
    top.tick(ts(START + 10 * SEC));
    assert!(top.shown().get(12).is_none());
    let c = top.timeline_socket().expect("kept");
    assert_eq!(c.history.iter().map(|t| t.newstate).collect::<Vec<_>>(), [SynSent, Close]);
    top.apply(Action::Close);
    assert_eq!(top.overlay, Overlay::None);
}

// ---- browsing a recording ----

/// A recording sink named `name` that has written the start and the inventory.
fn started_with_inventory(name: &str) -> FileSink<Vec<u8>> {
    let setup = RunSetup {
        clock_offset_ns: OFFSET,
        layout: portrace_ebpf::Layout::ZERO,
        sock_layout: None,
        filter: FilterSpec::default(),
        ring_size: 4096,
        command: None,
    };
    let mut sink = FileSink::new(Vec::new(), name, setup, WriteOptions { compress: false });
    sink.start(&start()).unwrap();
    for s in inventory() {
        sink.socket(&s).unwrap();
    }
    sink.flush().unwrap();
    sink
}

fn recording() -> Vec<u8> {
    let mut sink = started_with_inventory("run.ptr");
    for t in traffic() {
        sink.transition(&t).unwrap();
    }
    sink.lost(&Lost { time: ts(START + 3 * SEC), count: 2, cause: LossCause::RingFull }).unwrap();
    let mut summary = crate::summary::Summary::new(ts(START));
    summary.finish(ts(START + 20 * SEC));
    sink.end(&summary).unwrap();
    sink.flush().unwrap();
    sink.into_inner()
}

fn browser(filter: FilterSpec) -> (Browser, Top) {
    let mut b = Browser::from_bytes(&recording(), "run.ptr", filter, super::browse::PAGE).unwrap();
    let mut top = Top::new("run.ptr");
    b.to_start(&mut top);
    (b, top)
}

#[test]
fn a_recording_opens_at_its_start_with_its_inventory() {
    let (_, top) = browser(FilterSpec::default());
    let t = top.live_table();
    assert_eq!((t.len(), t.transitions()), (3, 0));
    assert_eq!(t.now(), ts(START));
    let c = top.cursor.unwrap();
    assert_eq!((c.position, c.total, c.playing), (3, 12, false), "3 sockets, 7 transitions, a loss, the end");
}

#[test]
fn stepping_moves_one_transition_at_a_time_both_ways() {
    use super::app::Source as _;
    let (mut b, mut top) = browser(FilterSpec::default());
    b.act(&mut top, Action::StepForward);
    assert_eq!(top.live_table().transitions(), 1);
    assert_eq!(top.live_table().get(10).unwrap().state, SynSent);
    assert_eq!(top.shown().now(), ts(START + SEC));
    b.act(&mut top, Action::StepForward);
    assert_eq!(top.live_table().get(10).unwrap().state, Established);
    b.act(&mut top, Action::StepBack);
    assert_eq!(top.live_table().get(10).unwrap().state, SynSent, "back to before the last one");
    assert_eq!(top.live_table().transitions(), 1);
    b.act(&mut top, Action::StepBack);
    assert!(top.live_table().get(10).is_none());
    assert_eq!(top.cursor.unwrap().position, 3);
}

#[test]
fn jumps_show_the_sockets_as_they_were_then() {
    use super::app::Source as _;
    let (mut b, mut top) = browser(FilterSpec::default());
    b.act(&mut top, Action::ToEnd);
    let t = top.live_table();
    assert_eq!((t.transitions(), t.lost_total()), (7, 2));
    assert!(t.ended());
    assert!(t.get(12).is_none(), "closed long before the end: gone");
    assert_eq!(t.now(), ts(START + 20 * SEC));
    b.act(&mut top, Action::JumpBack);
    b.act(&mut top, Action::JumpBack);
    // 20 s back: the start, with nothing yet.
    assert_eq!(top.live_table().transitions(), 0);
    b.act(&mut top, Action::ToEnd);
    b.act(&mut top, Action::ToStart);
    assert_eq!(top.live_table().transitions(), 0);
    assert_eq!(top.live_table().len(), 3);
}

#[test]
fn browsing_applies_the_users_filter() {
    use super::app::Source as _;
    let (mut b, mut top) = browser(FilterSpec { pids: vec![3001], ..Default::default() });
    b.act(&mut top, Action::ToEnd);
    let t = top.live_table();
    assert_eq!(t.transitions(), 2);
    assert!(t.get(10).is_some() && t.get(11).is_none());
}

#[test]
fn playing_stops_at_the_end() {
    use super::app::Source as _;
    let (mut b, mut top) = browser(FilterSpec::default());
    for _ in 0..10 {
        b.act(&mut top, Action::Faster);
    }
    assert_eq!(top.cursor.unwrap().speed, 1024);
    b.act(&mut top, Action::TogglePause);
    assert!(top.cursor.unwrap().playing);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while b.advance(&mut top).is_some() {
        assert!(std::time::Instant::now() < deadline, "20 s at 1024x takes 20 ms");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(!top.cursor.unwrap().playing);
    assert_eq!(top.live_table().transitions(), 7);
}

// ---- the screens ----

#[test]
fn snapshot_main_screen() {
    let top = model(3 * SEC + 600 * MS);
    insta::assert_snapshot!(screen(&top, 120, 30));
}

#[test]
fn snapshot_highlighted_changes() {
    // The cell styles: new sockets green, changes yellow, closed grey, the selected row
    // reversed; the markers say the same in text.
    let top = model(3 * SEC + 600 * MS);
    let buffer = draw(&top, 110, 14);
    insta::assert_debug_snapshot!(buffer);
}

#[test]
fn snapshot_a_closed_socket_lingers() {
    let mut top = model(3 * SEC + 600 * MS);
    top.tick(ts(START + 6 * SEC));
    let lingering = screen(&top, 120, 16);
    assert!(lingering.contains("│x 3050    nc") && lingering.contains("refused"), "{lingering}");
    insta::assert_snapshot!(lingering);
    top.tick(ts(START + 6 * SEC + 500 * MS));
    assert!(!screen(&top, 120, 16).contains("refused"), "gone 3 s after it closed");
}

#[test]
fn snapshot_filter_applied() {
    let mut top = model(3 * SEC + 600 * MS);
    top.apply(Action::EditFilter);
    for c in "nginx".chars() {
        top.apply(Action::FilterChar(c));
    }
    insta::assert_snapshot!("filter_typing", screen(&top, 120, 16));
    top.apply(Action::FilterDone);
    insta::assert_snapshot!("filter_applied", screen(&top, 120, 16));
}

#[test]
fn snapshot_sort_changed() {
    let mut top = model(3 * SEC + 600 * MS);
    while top.sort != SortKey::Remote {
        top.apply(Action::CycleSort);
    }
    top.apply(Action::ReverseSort);
    insta::assert_snapshot!(screen(&top, 120, 16));
}

#[test]
fn snapshot_paused() {
    let mut top = model(3 * SEC + 600 * MS);
    top.apply(Action::TogglePause);
    top.transition(&tr(4 * SEC, 30, (v4(10, 0, 0, 5), 0), (v4(10, 0, 0, 1), 53), Close, SynSent, None, None));
    top.transition(&tr(4 * SEC + MS, 30, (v4(10, 0, 0, 5), 0), (v4(10, 0, 0, 1), 53), SynSent, Close, None, None));
    top.table_mut().lost(&Lost { time: ts(START + 4 * SEC), count: 5, cause: LossCause::RingFull });
    top.tick(ts(START + 5 * SEC));
    let paused = screen(&top, 120, 16);
    assert!(paused.contains("PAUSED (2 new)") && !paused.contains("10.0.0.1:53"), "{paused}");
    insta::assert_snapshot!(paused);
}

#[test]
fn snapshot_timeline_open() {
    let mut top = model(3 * SEC + 600 * MS);
    top.filter = "curl".into();
    top.apply(Action::OpenTimeline);
    insta::assert_snapshot!(screen(&top, 120, 20));
}

#[test]
fn the_timeline_names_the_owners_cgroup() {
    let id = "4f1c0e9a2b3d4c5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6";
    let mut top = model(3 * SEC);
    top.table_mut().cgroup(&crate::record::CgroupInfo {
        time: ts(START),
        id: 77,
        path: Some(format!("/system.slice/docker-{id}.scope/\x1b[2Jx")),
    });
    let svc = Owner { pid: 900, comm: Comm::new("svc"), source: OwnerSource::Syscall, cgroup: 77 };
    let other = Owner { pid: 901, comm: Comm::new("other"), source: OwnerSource::Syscall, cgroup: 78 };
    let (local, remote) = ((v4(10, 0, 0, 5), 5000), (v4(10, 0, 0, 9), 80));
    top.transition(&tr(2 * SEC, 50, local, remote, Close, SynSent, None, Some(svc)));
    top.transition(&tr(2 * SEC, 51, (v4(10, 0, 0, 5), 5001), remote, Close, SynSent, None, Some(other)));
    top.tick(ts(START + 3 * SEC));
    top.filter = "svc".into();
    top.apply(Action::OpenTimeline);
    let shown = screen(&top, 160, 20);
    assert!(shown.contains(&format!(" cgroup: docker {}   /system.slice/docker-{id}.scope/\\x1b[2Jx", &id[..12])), "{shown}");
    top.apply(Action::Close);
    top.filter = "other".into();
    top.apply(Action::OpenTimeline);
    let shown = screen(&top, 160, 20);
    assert!(shown.contains(" cgroup: id 78"), "a cgroup not announced shows its id: {shown}");
}

#[test]
fn snapshot_help() {
    let mut top = model(3 * SEC + 600 * MS);
    top.apply(Action::Help);
    insta::assert_snapshot!("help_live", screen(&top, 120, 24));
    let (_, mut browsing) = browser(FilterSpec::default());
    browsing.apply(Action::Help);
    insta::assert_snapshot!("help_browsing", screen(&browsing, 120, 24));
}

#[test]
fn snapshot_narrow_terminal_keeps_the_endpoints() {
    let top = model(3 * SEC + 600 * MS);
    let narrow = screen(&top, 80, 16);
    assert!(narrow.contains("93.184.216.34:443") && narrow.contains("127.0.0.1:41000"), "{narrow}");
    insta::assert_snapshot!(narrow);
}

#[test]
fn snapshot_tiny_terminal() {
    let top = model(3 * SEC + 600 * MS);
    insta::assert_snapshot!(screen(&top, 30, 8));
}

#[test]
fn snapshot_browsing_a_recording() {
    use super::app::Source as _;
    let (mut b, mut top) = browser(FilterSpec::default());
    for _ in 0..5 {
        b.act(&mut top, Action::StepForward);
    }
    insta::assert_snapshot!(screen(&top, 120, 20));
}

#[test]
fn durations_are_short() {
    let cases = [
        (850_000, "850us"),
        (12 * MS, "12ms"),
        (4 * SEC + 250 * MS, "4.2s"),
        (245 * SEC, "4m05s"),
        (2 * 3600 * SEC + 180 * SEC, "2h03m"),
        (3 * 86_400 * SEC + 4 * 3600 * SEC, "3d04h"),
    ];
    for (ns, want) in cases {
        assert_eq!(CompactDuration(ns).to_string(), want);
    }
}

// ---- paging through a recording longer than the window ----

/// A recording of `n` connections, one every half second, each connecting (from port 0,
/// as the kernel reports a connect before its port is bound), established and closed; every
/// tenth with a loss, written in blocks of about twenty records.
fn long_recording(n: u64) -> Vec<u8> {
    let mut sink = started_with_inventory("long.ptr");
    let me = v4(10, 0, 0, 5);
    for k in 0..n {
        let at = SEC + k * 500 * MS;
        let id = 100 + k;
        let peer = (v4(93, 184, 216, 34), if k % 2 == 0 { 443 } else { 80 });
        let sport = 40_000 + u16::try_from(k).unwrap();
        let who = owner(4000 + u32::try_from(k).unwrap(), "curl", OwnerSource::Syscall);
        sink.transition(&tr(at, id, (me, 0), peer, Close, SynSent, None, who)).unwrap();
        sink.transition(&tr(at + 20 * MS, id, (me, sport), peer, SynSent, Established, Some(20 * MS), who)).unwrap();
        sink.transition(&tr(at + 300 * MS, id, (me, sport), peer, Established, Close, Some(280 * MS), who)).unwrap();
        if k % 10 == 9 {
            sink.lost(&Lost { time: ts(START + at + 400 * MS), count: 1, cause: LossCause::RingFull }).unwrap();
        }
        if k % 7 == 6 {
            sink.flush().unwrap();
        }
    }
    let mut summary = crate::summary::Summary::new(ts(START));
    summary.finish(ts(START + SEC + n * 500 * MS));
    sink.end(&summary).unwrap();
    sink.flush().unwrap();
    sink.into_inner()
}

/// The records `filter` keeps, all of them in memory, read as `top --from` read them
/// before it paged.
fn kept_records(file: &[u8], filter: FilterSpec) -> Vec<crate::tracefile::Record> {
    use crate::tracefile::Record;
    let mut reader = TraceReader::new(file, "long.ptr", ReadOptions::default()).unwrap();
    let mut filter = crate::transition_filter::TransitionFilter::new(filter);
    let (mut records, mut batch) = (Vec::new(), Vec::new());
    while let Some(record) = reader.next_record().unwrap() {
        match record {
            Record::Socket(s) if !filter.spec().matches_socket(&s) => {}
            Record::Process(_) | Record::Netns(_) | Record::Cgroup(_) => {}
            Record::Transition(t) => {
                filter.offer(t, &mut batch);
                records.extend(batch.drain(..).map(Record::Transition));
            }
            other => records.push(other),
        }
    }
    records
}

/// The table with the first `n` of `records` applied, at `now`, as the old in-memory
/// browser built it.
fn table_of(records: &[crate::tracefile::Record], n: usize, now: Timestamp) -> Table {
    use crate::tracefile::Record;
    let mut table = Table::new();
    table.start(&start());
    for r in &records[..n] {
        match r {
            Record::Socket(s) => table.socket(s),
            Record::Transition(t) => table.transition(t),
            Record::Lost(l) => table.lost(l),
            Record::End(_) => table.end(),
            Record::Process(_) | Record::Netns(_) | Record::Cgroup(_) => {}
        }
    }
    table.tick(now);
    table
}

/// What a table shows, in an order that does not depend on hashing.
fn fingerprint(t: &Table) -> String {
    let mut sockets: Vec<_> = t.sockets().collect();
    sockets.sort_by_key(|c| c.id);
    let lost: Vec<_> = t.lost_by_cause().collect();
    format!(
        "{sockets:?}\n{:?}\n{} transitions, lost {lost:?}, ended {}, now {:?}, evicted {}",
        t.recent(),
        t.transitions(),
        t.ended(),
        t.now(),
        t.evicted()
    )
}

/// A recording many windows long, browsed with a window of 8 records: moving across pages
/// both ways holds at most a window, reaches the recording's end, and shows at every step
/// the cursor and table of a browser that holds the whole recording, which are those of
/// the records applied from the start, with or without a filter that holds connects.
#[test]
fn a_recording_longer_than_the_window_is_browsed_to_its_end_with_bounded_memory() {
    use super::app::Source as _;
    const WINDOW: usize = 8;
    let file = long_recording(60);
    let moves = [
        [Action::StepForward; 20].as_slice(),
        &[Action::StepBack; 13],
        &[Action::JumpForward; 3],
        &[Action::StepForward; 4],
        &[Action::JumpBack; 2],
        &[Action::StepBack; 3],
        &[Action::ToEnd],
        &[Action::StepBack; 9],
        &[Action::StepForward; 2],
        &[Action::ToStart],
        &[Action::JumpForward; 7],
        &[Action::JumpBack],
        &[Action::ToEnd],
    ]
    .concat();
    for filter in [FilterSpec::default(), FilterSpec { ports: vec![443], ..Default::default() }] {
        let records = kept_records(&file, filter.clone());
        let mut paged = Browser::from_bytes(&file, "long.ptr", filter.clone(), WINDOW).unwrap();
        let mut whole = Browser::from_bytes(&file, "long.ptr", filter.clone(), usize::MAX).unwrap();
        assert_eq!(paged.total(), records.len());
        assert!(paged.total() > 10 * WINDOW, "{} records: many windows", paged.total());
        let (mut top, mut all) = (Top::new("long.ptr"), Top::new("long.ptr"));
        paged.to_start(&mut top);
        whole.to_start(&mut all);
        let mut pages_seen = std::collections::BTreeSet::new();
        for (i, &action) in moves.iter().enumerate() {
            paged.act(&mut top, action);
            whole.act(&mut all, action);
            assert!(paged.held() <= WINDOW, "move {i} ({action:?}): {} records held", paged.held());
            let cursor = top.cursor.unwrap();
            assert_eq!(Some(cursor), all.cursor, "move {i} ({action:?}), {filter:?}");
            let shown = fingerprint(top.live_table());
            assert_eq!(shown, fingerprint(all.live_table()), "move {i} ({action:?}), {filter:?}");
            let now = top.live_table().now();
            assert_eq!(shown, fingerprint(&table_of(&records, cursor.position, now)), "move {i} ({action:?})");
            pages_seen.insert(cursor.position / WINDOW);
        }
        assert!(pages_seen.len() > 5, "the moves crossed pages: {pages_seen:?}");
        let end = top.cursor.unwrap();
        assert_eq!((end.position, end.total), (records.len(), records.len()), "browsed to its end");
        assert!(top.live_table().ended());
        assert!(whole.held() == records.len() && paged.held() <= WINDOW);
    }
}

/// A recording cut shorter while it is browsed: the browser shows it up to where the
/// records stop, says why on the screen, and still holds at most a window.
#[test]
fn a_recording_that_shrinks_while_browsed_is_shown_up_to_where_it_stops() {
    use super::app::Source as _;
    const WINDOW: usize = 8;
    let (long, short) = (long_recording(30), long_recording(5));
    let shorter = kept_records(&short, FilterSpec::default()).len();
    let mut b = Browser::changing(&long, &short, FilterSpec::default(), WINDOW).unwrap();
    let total = b.total();
    assert!(total > shorter + WINDOW);
    let mut top = Top::new("changing.ptr");
    b.to_start(&mut top);
    assert!(top.message.is_none());
    b.act(&mut top, Action::ToEnd);
    let c = top.cursor.unwrap();
    // Read again, the recording runs out after the short one's records, its end included.
    assert_eq!((c.position, c.total), (shorter, total));
    assert!(b.held() <= WINDOW);
    let message = top.message.clone().unwrap();
    assert!(message.contains("cannot read the recording again"), "{message}");
    assert!(message.contains(&format!("not {total}")), "{message}");
    b.act(&mut top, Action::StepBack);
    assert!(top.cursor.unwrap().position < shorter);
    b.act(&mut top, Action::ToEnd);
    assert_eq!(top.cursor.unwrap().position, shorter);
}

#[test]
fn without_colours_the_screen_keeps_its_text_and_emphasis() {
    let top = model(1_500_000_000);
    let mut buffer = draw(&top, 110, 30);
    let coloured = |b: &Buffer| b.content.iter().filter(|c| c.fg != Color::Reset || c.bg != Color::Reset).count();
    let emphasised = |b: &Buffer| b.content.iter().filter(|c| !c.modifier.is_empty()).count();
    let (text_before, emphasis_before) = (text(&buffer), emphasised(&buffer));
    assert!(coloured(&buffer) > 0, "the fixture shows colours:\n{text_before}");
    render::without_colors(&mut buffer);
    assert_eq!(coloured(&buffer), 0);
    assert_eq!(text(&buffer), text_before);
    assert_eq!(emphasised(&buffer), emphasis_before);
}
