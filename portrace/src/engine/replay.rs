//! Reading a recording back: its records go through the user's filter, applied again in
//! userspace by the rules the kernel program applies ([`TransitionFilter`]), into the
//! pipeline, as the live run sent them: start, socket records, transitions and losses in
//! their order, end. A recording cut short is read up to the cut; then there is no end
//! record, as a live run that did not stop normally has none.

use std::io::{self, BufRead};

use crate::details::Details;
use crate::pipeline::{Consumers, Pipeline};
use crate::output::Start;
use crate::summary::Summary;
use crate::tracefile::{End, ReadError, Record, TraceReader, Warning};
use crate::transition_filter::TransitionFilter;

/// What a replay found.
pub struct Replayed {
    /// The counts of what was written, as the live run's summary counts them.
    pub summary: Summary,
    /// The recording's end record, if it has one.
    pub end: Option<End>,
    /// Why the recording stopped before its end record, if it did.
    pub warning: Option<Warning>,
    /// Process and namespace records dropped at the bounds of what is held (see
    /// `details.rs`) before a record named them.
    pub details_dropped: u64,
}

impl Replayed {
    /// Says on stderr why the recording stopped short, and what details were dropped.
    pub fn print_warnings(&self) {
        print_warning(self.warning.as_ref());
        if self.details_dropped > 0 {
            eprintln!(
                "portrace: warning: {} process or namespace records of the recording were dropped \
                 before a record named them (at most {} processes, {} MiB of their details, and {} \
                 namespaces are held at once); those processes are shown without details",
                self.details_dropped,
                crate::details::HELD_PROCESSES_MAX,
                crate::details::HELD_BYTES_MAX >> 20,
                crate::details::HELD_NAMESPACES_MAX,
            );
        }
    }
}

/// Says on stderr why a recording stopped short, if it did.
pub fn print_warning(warning: Option<&Warning>) {
    if let Some(w) = warning {
        eprintln!("portrace: warning: {w}");
    }
}

/// A replay that could not go on.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("writing output: {0}")]
    Write(#[from] io::Error),
}

/// What [`drive`] read: the recording's end record, if it has one, and the time of its
/// last record.
pub struct Driven {
    pub end: Option<End>,
    pub last: crate::record::Timestamp,
}

/// A pipeline for a recording read by `reader`: its start, the details it records.
pub fn pipeline_for<'a, R: BufRead>(reader: &TraceReader<R>, consumers: Consumers<'a>) -> Pipeline<'a> {
    Pipeline::new(reader.header().start, Details::recorded(), consumers)
}

/// Moves a recording's records through `filter` into `pipeline`: start, socket records,
/// transitions and losses in their order, and the end if the recording has one. Without
/// an end record (a recording cut short), the counts end at the last record read and
/// nothing else is ended: the caller says how the run is wound up.
pub fn drive<R: BufRead>(
    reader: &mut TraceReader<R>,
    filter: &mut TransitionFilter,
    pipeline: &mut Pipeline<'_>,
) -> Result<Driven, ReplayError> {
    let header = reader.header();
    let start = Start {
        time: header.start,
        host: header.host.clone(),
        kernel: header.kernel.clone(),
        features: header.features.clone(),
    };
    let mut last = start.time;
    pipeline.start(&start)?;
    let mut batch = Vec::new();
    let mut end = None;
    while let Some(record) = reader.next_record()? {
        match record {
            Record::Socket(s) => {
                last = last.max(s.time);
                if filter.spec().matches_socket(&s) && filter.cgroup_passes(s.owner.as_ref()) {
                    pipeline.socket(&s)?;
                }
            }
            Record::Process(p) => {
                last = last.max(p.time);
                pipeline.details().recorded_process(p);
            }
            Record::Netns(n) => {
                last = last.max(n.time);
                pipeline.details().recorded_netns(n);
            }
            Record::Cgroup(g) => {
                last = last.max(g.time);
                filter.cgroup(&g);
                pipeline.details().recorded_cgroup(g);
            }
            Record::Transition(t) => {
                last = last.max(t.time);
                filter.offer(t, &mut batch);
                for t in batch.drain(..) {
                    pipeline.transition(&t)?;
                }
            }
            Record::Lost(l) => {
                last = last.max(l.time);
                pipeline.lost(&l)?;
            }
            Record::End(e) => end = Some(e),
        }
    }
    match end {
        Some(e) => pipeline.end(e.time)?,
        None => pipeline.cut(last),
    }
    pipeline.flush()?;
    Ok(Driven { end, last })
}

/// Moves a recording's records through `filter` to `consumers` ([`drive`]); a recording
/// cut short is finished at its last record ([`Pipeline::finish`]).
pub fn replay_into<R: BufRead>(
    reader: &mut TraceReader<R>,
    filter: &mut TransitionFilter,
    consumers: Consumers<'_>,
) -> Result<Replayed, ReplayError> {
    let mut pipeline = pipeline_for(reader, consumers);
    let driven = drive(reader, filter, &mut pipeline)?;
    if driven.end.is_none() {
        pipeline.finish(driven.last)?;
        pipeline.flush()?;
    }
    Ok(replayed(reader, pipeline, driven.end))
}

/// What a replay found, once `pipeline` is done.
pub fn replayed<R: BufRead>(reader: &TraceReader<R>, pipeline: Pipeline<'_>, end: Option<End>) -> Replayed {
    let (summary, details) = pipeline.into_parts();
    Replayed { summary, end, warning: reader.warning().cloned(), details_dropped: details.dropped() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::FilterSpec;
    use crate::output::{self, Format, Sink, Start};
    use crate::record::{Timestamp, Transition};
    use crate::tracefile::ReadOptions;
    use std::io::{self, Write};
    use crate::clock::Zone;
    use crate::output::TextOptions;
    use crate::record::{Comm, EndReason, Endpoints, Family, LossCause, Lost, Owner, OwnerSource, SocketRecord};
    use crate::tcp_state::TcpState;
    use crate::destination::RunSetup;
    use crate::tracefile::{FileSink, WriteOptions};
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::{Arc, Mutex};

    /// A writer the test reads after the sink that owns it is gone.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    const OFFSET: i128 = 1_795_920_067_000_000_000;

    fn ts(mono_ns: u64) -> Timestamp {
        Timestamp { mono_ns, unix_ns: i128::from(mono_ns) + OFFSET }
    }

    enum Step {
        S(SocketRecord),
        T(Transition),
        L(Lost),
        Drain,
    }

    /// A run: a listener from the inventory, a client that connects (its connect first
    /// seen without a local port) and closes, the server's child, a loss in between.
    fn run() -> Vec<Step> {
        use TcpState::*;
        let listener = SocketRecord {
            time: ts(1_000),
            socket: 1,
            family: Family::Ipv4,
            ends: Endpoints {
                saddr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                sport: 8080,
                daddr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                dport: 0,
                netns: 7,
            },
            state: Listen,
            owner: Some(Owner { pid: 10, comm: Comm::new("server"), source: OwnerSource::Inventory, cgroup: 0 }),
            inode: 99,
            uid: 0,
            cookie: 5,
        };
        let other = SocketRecord { socket: 2, ends: Endpoints { sport: 22, ..listener.ends }, owner: None, ..listener.clone() };
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let client = |time, sport, old, new| Transition {
            time: ts(time),
            socket: 3,
            oldstate: old,
            newstate: new,
            prev_state_ns: (old != Close).then_some(time - 2_000),
            owner: Some(Owner { pid: 20, comm: Comm::new("client"), source: OwnerSource::Syscall, cgroup: 0 }),
            ..t(3, sport, old, new).between((lo, sport), (lo, 8080))
        };
        let child = |time, old, new| Transition {
            time: ts(time),
            socket: 4,
            owner: Some(Owner { pid: 10, comm: Comm::new("server"), source: OwnerSource::Listener, cgroup: 0 }),
            ..t(4, 8080, old, new).between((lo, 8080), (lo, 41000))
        };
        let mut closing = client(9_000, 41000, SynSent, Close);
        closing.reason = Some(EndReason::ResetByPeer);
        closing.error = Some(104);
        vec![
            Step::S(listener),
            Step::S(other),
            Step::Drain,
            Step::T(client(2_000, 0, Close, SynSent)),
            Step::T(client(4_000, 41000, SynSent, Established)),
            Step::T(child(4_100, Listen, SynRecv)),
            Step::Drain,
            Step::L(Lost { time: ts(5_000), count: 3, cause: LossCause::RingFull }),
            Step::T(child(6_000, SynRecv, Established)),
            Step::T(t(5, 22, Established, FinWait1)),
            Step::Drain,
            Step::T(closing),
        ]
    }

    /// Feeds `steps` to `sink` as the live run does, keeping the transitions `keep` lets
    /// through (the kernel's filter), and ends the run.
    fn live(sink: &mut dyn Sink, steps: &[Step], keep: &dyn Fn(&Transition) -> bool, sockets: &dyn Fn(&SocketRecord) -> bool) {
        let start = Start { time: ts(1_000), host: "h".into(), kernel: "6.18".into(), features: Default::default() };
        let mut summary = Summary::new(start.time);
        sink.start(&start).unwrap();
        for step in steps {
            match step {
                Step::S(s) if sockets(s) => sink.socket(s).unwrap(),
                Step::S(_) => {}
                Step::T(t) if keep(t) => {
                    summary.add_transition(t);
                    sink.transition(t).unwrap();
                }
                Step::T(_) => {}
                Step::L(l) => {
                    summary.add_lost(l);
                    sink.lost(l).unwrap();
                }
                Step::Drain => sink.flush().unwrap(),
            }
        }
        summary.finish(ts(20_000));
        sink.end(&summary).unwrap();
        sink.flush().unwrap();
    }

    /// A compressed recording sink, as `portrace record --compress` makes.
    fn compressed_sink() -> FileSink<Vec<u8>> {
        let setup = RunSetup {
            clock_offset_ns: OFFSET,
            layout: portrace_ebpf::Layout::ZERO,
            sock_layout: None,
            filter: FilterSpec::default(),
            ring_size: 4096,
            command: None,
        };
        FileSink::new(Vec::new(), "run.ptr", setup, WriteOptions { compress: true })
    }

    fn recording(steps: &[Step]) -> Vec<u8> {
        let mut sink = compressed_sink();
        live(&mut sink, steps, &|_| true, &|_| true);
        sink.into_inner()
    }

    fn sink_for(format: Format, out: &Shared) -> Box<dyn Sink + Send> {
        output::sink(format, Box::new(out.clone()), TextOptions { color: false, zone: Zone::Fixed(3600), explain: false })
    }

    fn replayed(file: &[u8], format: Format, filter: FilterSpec) -> (String, Replayed) {
        let out = Shared::default();
        let mut sink = sink_for(format, &out);
        let mut reader = TraceReader::new(file, "run.ptr", ReadOptions::default()).unwrap();
        let replayed = replay_into(&mut reader, &mut TransitionFilter::new(filter), Consumers::writing(sink.as_mut())).unwrap();
        drop(sink);
        (out.text(), replayed)
    }

    #[test]
    fn a_replay_prints_exactly_what_the_live_run_printed() {
        let steps = run();
        let file = recording(&steps);
        for format in [Format::Json, Format::Text, Format::Csv] {
            let out = Shared::default();
            live(sink_for(format, &out).as_mut(), &steps, &|_| true, &|_| true);
            let (replay, replayed) = replayed(&file, format, FilterSpec::default());
            assert_eq!(replay, out.text(), "{format:?}");
            assert!(replayed.warning.is_none());
            assert_eq!(replayed.summary.transitions(), 6);
            assert_eq!(replayed.end.map(|e| e.lost_total()), Some(3));
        }
    }

    #[test]
    fn filters_keep_what_the_kernel_would_have_kept() {
        let steps = run();
        let file = recording(&steps);
        let cases = [
            FilterSpec { lports: vec![41000], ..Default::default() },
            FilterSpec { ports: vec![8080], ..Default::default() },
            FilterSpec { states: vec![TcpState::Established], ..Default::default() },
            FilterSpec { pids: vec![10], ..Default::default() },
            FilterSpec { comm: Some("client".into()), lports: vec![41000], ..Default::default() },
            // The connect passes, the transition that shows its port does not.
            FilterSpec { states: vec![TcpState::Close], ports: vec![8080], ..Default::default() },
        ];
        for spec in cases {
            // The kernel keeps the client's unbound connect when its next transition
            // passes; by port 41000 that is the first client transition too.
            let held_ok = |t: &Transition| {
                t.ends.sport == 0 && t.socket == 3 && spec.matches_transition(&Transition { ends: Endpoints { sport: 41000, ..t.ends }, ..t.clone() })
            };
            let keep = |t: &Transition| spec.matches_transition(t) || held_ok(t);
            let out = Shared::default();
            live(sink_for(Format::Json, &out).as_mut(), &steps, &keep, &|s| spec.matches_socket(s));
            let (replay, _) = replayed(&file, Format::Json, spec.clone());
            assert_eq!(replay, out.text(), "{spec:?}");
        }
    }

    #[test]
    fn a_cut_recording_replays_up_to_the_cut_and_has_no_end() {
        let steps = run();
        let file = recording(&steps);
        let out = Shared::default();
        live(sink_for(Format::Json, &out).as_mut(), &steps, &|_| true, &|_| true);
        let full = out.text();
        let mut previous = 0;
        for cut in (0..file.len()).rev() {
            let Ok(mut reader) = TraceReader::new(&file[..cut], "run.ptr", ReadOptions::default()) else {
                continue;
            };
            let out = Shared::default();
            let mut sink = sink_for(Format::Json, &out);
            let replayed =
                replay_into(&mut reader, &mut TransitionFilter::new(FilterSpec::default()), Consumers::writing(sink.as_mut()))
                    .unwrap();
            drop(sink);
            let text = out.text();
            assert!(full.starts_with(&text), "cut at {cut}: not a prefix:\n{text}");
            assert!(!text.contains("\"type\":\"end\""), "cut at {cut}");
            let warning = replayed.warning.expect("a cut is reported");
            assert!(warning.to_string().contains("cut at byte"), "{warning}");
            previous = previous.max(text.lines().count());
        }
        assert!(previous > 3, "some cut kept transitions");
    }

    fn t(socket: u64, sport: u16, old: TcpState, new: TcpState) -> Transition {
        Transition {
            time: Timestamp { mono_ns: socket * 10, unix_ns: 0 },
            pid: 1,
            comm: Comm::new("c"),
            socket,
            family: Family::Ipv4,
            ends: Endpoints {
                saddr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                sport,
                daddr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                dport: 80,
                netns: 0,
            },
            oldstate: old,
            newstate: new,
            prev_state_ns: None,
            prev_state_at_least: false,
            owner: Some(Owner { pid: 1, comm: Comm::new("c"), source: OwnerSource::Syscall, cgroup: 0 }),
            reason: None,
            error: None,
            retransmits: 0,
        }
    }

    #[test]
    fn unbound_connects_wait_for_their_port_like_in_the_kernel() {
        use TcpState::*;
        let mut f = TransitionFilter::new(FilterSpec { lports: vec![5000], ..Default::default() });
        let mut out = Vec::new();
        f.offer(t(1, 0, Close, SynSent), &mut out);
        assert!(out.is_empty(), "held until the port is known");
        f.offer(t(1, 5000, SynSent, Established), &mut out);
        assert_eq!(out.iter().map(|t| (t.socket, t.newstate)).collect::<Vec<_>>(), [(1, SynSent), (1, Established)]);
        out.clear();
        f.offer(t(2, 0, Close, SynSent), &mut out);
        f.offer(t(2, 6000, SynSent, Established), &mut out);
        assert!(out.is_empty(), "another port: dropped with what follows");
        f.offer(t(3, 5000, Close, Listen), &mut out);
        assert_eq!(out.len(), 1);

        // The held connect is judged itself, with its port: a state filter may keep it
        // and not the transition that showed the port.
        let mut f =
            TransitionFilter::new(FilterSpec { lports: vec![5000], states: vec![Close], ..Default::default() });
        let mut out = Vec::new();
        f.offer(t(1, 0, Close, SynSent), &mut out);
        f.offer(t(1, 5000, SynSent, Established), &mut out);
        assert_eq!(out.iter().map(|t| (t.socket, t.ends.sport, t.newstate)).collect::<Vec<_>>(), [(1, 0, SynSent)]);

        // Without a local-port condition nothing is held.
        let mut f = TransitionFilter::new(FilterSpec { rports: vec![80], ..Default::default() });
        let mut out = Vec::new();
        f.offer(t(1, 0, Close, SynSent), &mut out);
        assert_eq!(out.len(), 1);
    }

    /// A recording made to inflate: every record alike but for its time and socket, so
    /// that LZ4 packs each into under 3 bytes (about 2 MB here). 10,000 connections more than a
    /// report keeps as rows, and one socket that stays in CLOSE_WAIT over and over, more
    /// times than a state keeps exact samples. The report of it holds no more than its
    /// bounds, prints a bounded text, and says what it left out.
    #[test]
    fn a_report_of_a_recording_that_inflates_stays_within_its_bounds() {
        use crate::report::{Report, ReportOptions, EXACT_SAMPLES_MAX, ROWS_MAX, STAYS_KEPT};
        use TcpState::*;
        let mut sink = compressed_sink();
        let start = Start { time: ts(1_000), host: "h".into(), kernel: "6.18".into(), features: Default::default() };
        let mut summary = Summary::new(start.time);
        sink.start(&start).unwrap();
        let conns = ROWS_MAX as u64 + 10_000;
        let flips = EXACT_SAMPLES_MAX as u64 + 100_000;
        let mut time = 1_000;
        let mut put = |sink: &mut FileSink<Vec<u8>>, socket, old, new, ns| {
            time += 1;
            let t = Transition { time: ts(time), prev_state_ns: ns, ..t(socket, 40_000, old, new) };
            summary.add_transition(&t);
            sink.transition(&t).unwrap();
        };
        for socket in 1..=conns {
            put(&mut sink, socket, Close, SynSent, None);
            put(&mut sink, socket, SynSent, Established, Some(1_000));
        }
        for i in 0..flips {
            put(&mut sink, 1, CloseWait, CloseWait, Some(1_000 + i % 1_000));
        }
        summary.finish(ts(time + 1));
        sink.end(&summary).unwrap();
        let file = sink.into_inner();
        let records = 2 * conns + flips;
        assert!((file.len() as u64) < 3 * records, "{} bytes for {records} records", file.len());

        let mut report = Report::new(ReportOptions { by_port: true, by_process: true, top: 10 });
        let mut reader = TraceReader::new(&file[..], "run.ptr", ReadOptions::default()).unwrap();
        let consumers = Consumers { report: Some(&mut report), ..Consumers::default() };
        replay_into(&mut reader, &mut TransitionFilter::new(FilterSpec::default()), consumers).unwrap();
        let held = report.held();
        assert_eq!(held.rows, ROWS_MAX);
        assert_eq!(held.most_stays, STAYS_KEPT);
        assert!(held.exact_samples <= 12 * EXACT_SAMPLES_MAX, "{held:?}");
        assert_eq!(held.histograms, 1, "CLOSE_WAIT's samples moved to a histogram: {held:?}");
        assert!(held.candidates <= 3 * 2 * 10, "{held:?}");

        let mut text = Vec::new();
        report.write_text(&mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.len() < 64 << 10, "{} bytes of text", text.len());
        assert!(text.contains(&format!("the report keeps the first {ROWS_MAX} connections as rows; after them 20000 transitions (10000 begun)")), "{text}");
        assert!(text.contains(&format!("{} stays after the first {STAYS_KEPT}", flips + 1 - STAYS_KEPT as u64)), "{text}");
        assert!(text.contains(&format!("[{} more stays not kept]", flips + 1 - STAYS_KEPT as u64)), "{text}");
        let mut lines = text.lines().skip_while(|l| !l.starts_with("Time in state ("));
        let close_wait = lines.find(|l| l.starts_with("CLOSE_WAIT")).unwrap();
        assert!(close_wait.contains('~'), "{close_wait}");
        assert!(text.contains("(from the stays the rows keep: see NOT KEPT above)"), "{text}");

        let mut json = Vec::new();
        report.write_json(&mut json).unwrap();
        assert!(json.len() < ROWS_MAX * 1_024, "{} bytes of JSON", json.len());
        let doc: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(doc["connections"].as_array().unwrap().len(), ROWS_MAX);
        assert_eq!(doc["not_kept"]["transitions"], 20_000);
        assert_eq!(doc["connections"][0]["stays_not_kept"], flips + 1 - STAYS_KEPT as u64);
        let cw = doc["time_in_state"].as_array().unwrap().iter().find(|s| s["state"] == "CLOSE_WAIT").unwrap();
        assert_eq!(cw["count"], flips);
        assert_eq!(cw["approximate"], true);
        assert_eq!(cw["max_ns"], 1_999);
        // The median of 1,000 ns to 1,999 ns, each as often: 1,499 ns, within 1/32.
        let p50 = cw["p50_ns"].as_u64().unwrap();
        assert!((1_499..=1_499 + 1_499 / 32).contains(&p50), "{p50}");
    }
}
