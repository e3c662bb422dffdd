//! Reading recordings back: `portrace replay` prints a recording's timeline through the
//! same output sinks as the live tracer (start, inventory, transitions, losses where they
//! happened, end), with the user's filters applied again in userspace by the rules the
//! kernel program applies; `portrace replay --info` describes the recording; `portrace
//! report` feeds it to a [`Report`]. A recording cut short is read up to the cut, with a
//! warning on stderr saying where; then the output has no end record, as a live run that
//! did not stop normally has none, and the exit status is still 0.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, IsTerminal as _, Write};

use anyhow::Context as _;

use crate::details::{Detail, Details};
use crate::alerts::section::AlertSection;
use crate::alerts::sink::AlertHandle;
use crate::alerts::{Fired, PortRange};
use crate::cli::{ColorChoice, OutputFormat, ReplayConfig, ReportConfig, ReportFormat};
use crate::clock::Rfc3339;
use crate::filter::FilterSpec;
use crate::output::{self, Format, Sink, Start};
use crate::record::{Timestamp, Transition};
use crate::report::{Report, ReportOptions};
use crate::summary::Summary;
use crate::tracefile::input::Input;
use crate::tracefile::{filter_flags, status::human_bytes, End, ReadError, ReadOptions, Record, TraceReader, Warning};

/// Held `CLOSE -> SYN_SENT` transitions at most, as in the kernel program's hold map.
const HOLD_MAX: usize = portrace_ebpf::HOLD_ENTRIES as usize;

/// A user's filter applied to recorded transitions in order, as the kernel program applies
/// it: including the hold of a `CLOSE -> SYN_SENT` whose local port is not bound yet, when
/// the filter has local-port conditions (see [`FilterSpec::matches_transition`]).
pub struct TransitionFilter {
    spec: FilterSpec,
    /// The filter without its local-port conditions, when it has any.
    unbound: Option<FilterSpec>,
    held: HashMap<u64, Transition>,
    /// With `--cgroup`: the recorded cgroups' paths, by id (bounded like the details).
    cgroup_paths: HashMap<u64, Option<String>>,
}

impl TransitionFilter {
    pub fn new(spec: FilterSpec) -> TransitionFilter {
        let unbound = (!spec.lports.is_empty() || !spec.ports.is_empty())
            .then(|| FilterSpec { lports: Vec::new(), ports: Vec::new(), ..spec.clone() });
        TransitionFilter { spec, unbound, held: HashMap::new(), cgroup_paths: HashMap::new() }
    }

    /// A recorded cgroup record: its path, for `--cgroup`.
    pub fn cgroup(&mut self, g: &crate::record::CgroupInfo) {
        if self.spec.cgroup.is_some() {
            if self.cgroup_paths.len() >= 1 << 16 {
                self.cgroup_paths.clear();
            }
            self.cgroup_paths.insert(g.id, g.path.clone());
        }
    }

    /// Whether an owner passes `--cgroup`, by its recorded cgroup's path.
    pub fn cgroup_passes(&self, owner: Option<&crate::record::Owner>) -> bool {
        if self.spec.cgroup.is_none() {
            return true;
        }
        let path = owner.and_then(|o| self.cgroup_paths.get(&o.cgroup)).and_then(|p| p.as_deref());
        self.spec.matches_cgroup(path)
    }

    pub fn spec(&self) -> &FilterSpec {
        &self.spec
    }

    /// Takes the next transition; pushes onto `out` what the filter lets through now.
    pub fn offer(&mut self, t: Transition, out: &mut Vec<Transition>) {
        if !self.cgroup_passes(t.owner.as_ref()) {
            return;
        }
        if let Some(unbound) = &self.unbound {
            if t.sport == 0 && t.newstate == crate::tcp_state::TcpState::SynSent {
                if unbound.matches_transition(&t) && (self.held.len() < HOLD_MAX || self.held.contains_key(&t.socket)) {
                    self.held.insert(t.socket, t);
                }
                return;
            }
            if let Some(held) = self.held.remove(&t.socket) {
                // Judged again with the port the socket has now; written as it was made.
                if self.spec.matches_transition(&Transition { sport: t.sport, ..held.clone() }) {
                    out.push(held);
                }
            }
        }
        if self.spec.matches_transition(&t) {
            out.push(t);
        }
    }
}

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

/// A replay that could not go on.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("writing output: {0}")]
    Write(#[from] io::Error),
}

/// Moves a recording's records through `filter` into `sink` (and `report`, if given), as
/// the live run moved them: start, socket records, transitions and losses in their order,
/// end. Without an end record (a recording cut short), no end is written to the sink; the
/// summary and the report then end at the last record read.
pub fn replay_into<R: BufRead>(
    reader: &mut TraceReader<R>,
    filter: &mut TransitionFilter,
    sink: &mut dyn Sink,
    mut report: Option<&mut Report>,
) -> Result<Replayed, ReplayError> {
    let header = reader.header();
    let start = Start {
        time: header.start,
        host: header.host.clone(),
        kernel: header.kernel.clone(),
        features: header.features.clone(),
    };
    let mut summary = Summary::new(start.time);
    let mut last = start.time;
    sink.start(&start)?;
    let mut batch = Vec::new();
    let mut end = None;
    let mut details = Details::recorded();
    while let Some(record) = reader.next_record()? {
        match record {
            Record::Socket(s) => {
                last = last.max(s.time);
                if filter.spec().matches_socket(&s) && filter.cgroup_passes(s.owner.as_ref()) {
                    details.before(s.owner.as_ref(), s.netns, s.time, |d| announce(sink, d))?;
                    if let Some(report) = report.as_deref_mut() {
                        report.add_socket(&s);
                    }
                    sink.socket(&s)?;
                }
            }
            Record::Process(p) => {
                last = last.max(p.time);
                details.recorded_process(p);
            }
            Record::Netns(n) => {
                last = last.max(n.time);
                details.recorded_netns(n);
            }
            Record::Cgroup(g) => {
                last = last.max(g.time);
                filter.cgroup(&g);
                details.recorded_cgroup(g);
            }
            Record::Transition(t) => {
                last = last.max(t.time);
                filter.offer(t, &mut batch);
                for t in batch.drain(..) {
                    details.before(t.owner.as_ref(), t.netns, t.time, |d| announce(sink, d))?;
                    summary.add_transition(&t);
                    if let Some(report) = report.as_deref_mut() {
                        report.add_transition(&t);
                    }
                    sink.transition(&t)?;
                }
            }
            Record::Lost(l) => {
                last = last.max(l.time);
                summary.add_lost(&l);
                if let Some(report) = report.as_deref_mut() {
                    report.add_lost(&l);
                }
                sink.lost(&l)?;
            }
            Record::End(e) => end = Some(e),
        }
    }
    let finish = end.map_or(last, |e| e.time);
    summary.finish(finish);
    if let Some(report) = report {
        report.finish(finish);
    }
    if end.is_some() {
        sink.end(&summary)?;
    }
    sink.flush()?;
    Ok(Replayed { summary, end, warning: reader.warning().cloned(), details_dropped: details.dropped() })
}

/// Writes a process or namespace detail to `sink`.
pub fn announce(sink: &mut dyn Sink, detail: Detail<'_>) -> io::Result<()> {
    match detail {
        Detail::Process(p) => sink.process(p),
        Detail::Netns(n) => sink.netns(n),
        Detail::Cgroup(g) => sink.cgroup(g),
    }
}

/// Opens the recording `path` names (`-`: standard input, read as it comes).
fn open(path: &std::path::Path, salvage: bool) -> anyhow::Result<TraceReader<io::BufReader<std::fs::File>>> {
    Ok(Input::once(path)?.open(ReadOptions { salvage })?)
}

fn print_warning(warning: Option<&Warning>) {
    if let Some(w) = warning {
        eprintln!("portrace: warning: {w}");
    }
}

/// The warnings of a replay: the reader's, and details dropped at their bounds.
fn print_warnings(replayed: &Replayed) {
    print_warning(replayed.warning.as_ref());
    if replayed.details_dropped > 0 {
        eprintln!(
            "portrace: warning: {} process or namespace records of the recording were dropped \
             before a record named them (at most {} processes, {} MiB of their details, and {} \
             namespaces are held at once); those processes are shown without details",
            replayed.details_dropped,
            crate::details::HELD_PROCESSES_MAX,
            crate::details::HELD_BYTES_MAX >> 20,
            crate::details::HELD_NAMESPACES_MAX,
        );
    }
}

/// `portrace replay`.
pub fn replay(config: ReplayConfig) -> anyhow::Result<()> {
    let mut reader = open(&config.file, config.salvage)?;
    if config.info {
        return info(&mut reader);
    }
    let stdout = io::stdout();
    let color = match config.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => stdout.is_terminal() && crate::color::allowed(),
    };
    let format = match config.format {
        OutputFormat::Text => Format::Text,
        OutputFormat::Json => Format::Json,
        OutputFormat::Csv => Format::Csv,
    };
    if config.alerts.only && format == Format::Csv {
        anyhow::bail!(
            "--alerts-only shows alerts, and the CSV format has no rows for them: use --format text or json"
        );
    }
    let out = Box::new(io::BufWriter::with_capacity(1 << 16, stdout));
    let sink = output::sink(format, out, output::TextOptions { explain: config.explain, ..output::TextOptions::system(color) });
    let alerts = config.alerts.enabled.then(|| AlertHandle::new(config.alerts.rules.clone(), PortRange::kernel_default()));
    let mut sink: Box<dyn Sink + Send> = match &alerts {
        Some(handle) => Box::new(handle.wrap(sink, config.alerts.only)),
        None => sink,
    };
    let mut filter = TransitionFilter::new(config.filter);
    let replayed = match replay_into(&mut reader, &mut filter, sink.as_mut(), None) {
        Ok(replayed) => replayed,
        Err(ReplayError::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if replayed.end.is_none() {
        // A recording cut short: what the detectors hold is judged at the cut.
        match sink.tick(replayed.summary.end()).and_then(|()| sink.flush()) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            other => other.context("writing output")?,
        }
    }
    let mut stderr = io::stderr().lock();
    replayed.summary.write_text(&mut stderr)?;
    reader.header().features.write_summary(&mut stderr)?;
    if let Some(handle) = &alerts {
        handle.lock().write_summary(&mut stderr)?;
    }
    print_warnings(&replayed);
    fail_on_alert(config.alerts.fail, alerts.as_ref())
}

/// `--fail-on-alert`: an error carrying the number of alerts when any fired.
fn fail_on_alert(fail: bool, alerts: Option<&AlertHandle>) -> anyhow::Result<()> {
    match alerts.map(|h| h.lock().fired()) {
        Some(fired) if fired > 0 && fail => Err(Fired(fired).into()),
        _ => Ok(()),
    }
}

/// `portrace report`.
pub fn report(config: ReportConfig) -> anyhow::Result<()> {
    let mut reader = open(&config.file, config.salvage)?;
    let options = ReportOptions { by_port: config.by_port, by_process: config.by_process, top: config.top };
    let mut report = Report::new(options);
    let mut filter = TransitionFilter::new(config.filter);
    let alerts = config.alerts.enabled.then(|| AlertHandle::new(config.alerts.rules.clone(), PortRange::kernel_default()));
    let replayed = match &alerts {
        Some(handle) => {
            let mut sink = handle.wrap(Box::new(Discard), false);
            let replayed = replay_into(&mut reader, &mut filter, &mut sink, Some(&mut report))?;
            sink.finish_at(replayed.summary.end())?;
            report.set_alerts(AlertSection::of(&handle.lock()));
            replayed
        }
        None => replay_into(&mut reader, &mut filter, &mut Discard, Some(&mut report))?,
    };
    print_warnings(&replayed);
    // What the recorded run could not see: the report leaves it out too.
    for note in reader.header().features.notes() {
        eprintln!("portrace: the recorded run had {note}");
    }
    let mut out = io::BufWriter::new(io::stdout().lock());
    let section = alerts.as_ref().filter(|_| config.alerts.only).map(|h| AlertSection::of(&h.lock()));
    let written = match (config.format, section) {
        (ReportFormat::Text, Some(section)) => section.write_text(&mut out),
        (ReportFormat::Json, Some(section)) => section.write_json(&mut out),
        (ReportFormat::Text, None) => report.write_text(&mut out),
        (ReportFormat::Json, None) => report.write_json(&mut out),
    };
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
        other => other.context("writing the report")?,
    }
    fail_on_alert(config.alerts.fail, alerts.as_ref())
}

/// A sink that keeps nothing, for a report that needs only the records.
struct Discard;

impl Sink for Discard {
    fn start(&mut self, _: &Start) -> io::Result<()> {
        Ok(())
    }
    fn socket(&mut self, _: &crate::record::SocketRecord) -> io::Result<()> {
        Ok(())
    }
    fn transition(&mut self, _: &Transition) -> io::Result<()> {
        Ok(())
    }
    fn lost(&mut self, _: &crate::record::Lost) -> io::Result<()> {
        Ok(())
    }
    fn end(&mut self, _: &Summary) -> io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `portrace replay --info`: what the recording says about itself, and its totals.
fn info<R: BufRead>(reader: &mut TraceReader<R>) -> anyhow::Result<()> {
    let h = reader.header().clone();
    let (mut sockets, mut transitions, mut lost_records) = (0u64, 0u64, 0u64);
    let (mut processes, mut namespaces) = (0u64, 0u64);
    let mut lost = End::NO_LOSS;
    let mut end = None;
    let mut last = h.start;
    while let Some(record) = reader.next_record()? {
        match record {
            Record::Socket(s) => {
                sockets += 1;
                last = last.max(s.time);
            }
            Record::Transition(t) => {
                transitions += 1;
                last = last.max(t.time);
            }
            Record::Process(p) => {
                processes += 1;
                last = last.max(p.time);
            }
            Record::Netns(n) => {
                namespaces += 1;
                last = last.max(n.time);
            }
            Record::Cgroup(g) => last = last.max(g.time),
            Record::Lost(l) => {
                lost_records += 1;
                last = last.max(l.time);
                for slot in &mut lost {
                    if slot.0 == l.cause {
                        slot.1 = slot.1.saturating_add(l.count);
                    }
                }
            }
            Record::End(e) => end = Some(e),
        }
    }
    let mut text = String::new();
    // Everything the header says was written by whoever wrote the file.
    let esc = |s: &str| crate::escape::text(s).into_owned();
    let time = |t: Timestamp| format!("{} (CLOCK_MONOTONIC {} ns)", Rfc3339::new(t.unix_ns), t.mono_ns);
    let _ = writeln!(text, "file:         {} ({}, format version {})", esc(reader.name()), human_bytes(reader.bytes_read()), h.version);
    let _ = writeln!(text, "recorded by:  portrace {}", esc(&h.portrace));
    let _ = writeln!(text, "host:         {}", esc(&h.host));
    let _ = writeln!(text, "kernel:       {}", esc(&h.kernel));
    let _ = writeln!(text, "started:      {}", time(h.start));
    match (&end, reader.warning()) {
        (Some(e), _) => {
            let secs = e.time.mono_ns.saturating_sub(h.start.mono_ns) as f64 / 1e9;
            let _ = writeln!(text, "ended:        {} ({secs:.2} s later)", time(e.time));
        }
        (None, Some(w)) => {
            let _ = writeln!(text, "ended:        not recorded: cut at byte {}; last record at {}", w.offset, time(last));
        }
        (None, None) => {
            let _ = writeln!(text, "ended:        not recorded");
        }
    }
    let flags = filter_flags(&h.filter);
    let _ = writeln!(text, "filter:       {}", if flags.is_empty() { "none (every transition)".into() } else { esc(&flags) });
    let _ = writeln!(text, "ring buffer:  {}", human_bytes(u64::from(h.ring_size)));
    let _ = writeln!(text, "compression:  {}", if h.compressed { "LZ4 blocks" } else { "none" });
    let _ = writeln!(text, "clock:        wall clock = CLOCK_MONOTONIC + {} ns", h.clock_offset_ns);
    let l = h.layout;
    let _ = writeln!(
        text,
        "tracepoint:   sock:inet_sock_set_state offsets: skaddr {}, oldstate {}, newstate {}, sport {}, \
         dport {}, family {}, protocol {} ({} bytes), saddr {}, daddr {}, saddr_v6 {}, daddr_v6 {}",
        l.skaddr, l.oldstate, l.newstate, l.sport, l.dport, l.family, l.protocol, l.protocol_size, l.saddr,
        l.daddr, l.saddr_v6, l.daddr_v6
    );
    match h.sock_layout {
        Some(s) if s.valid != 0 => {
            let _ = writeln!(text, "socket BTF:   offsets read (cookie {}, network namespace {}, sk_err {})", s.cookie, s.net, s.err);
        }
        _ => {
            let _ = writeln!(text, "socket BTF:   not available: owners, timewait and close details were not read");
        }
    }
    for (feature, state) in h.features.iter() {
        let how = match (state.on, &state.reason) {
            (true, None) => "on".to_owned(),
            (true, Some(what)) => format!("on, limited: {}", esc(what)),
            (false, why) => format!("off: {}", esc(why.as_deref().unwrap_or(""))),
        };
        let _ = writeln!(text, "feature:      {} {how}", feature.name());
    }
    // A recording made before features were written says what did not work in notes.
    if h.features.is_empty() {
        for note in &h.notes {
            let _ = writeln!(text, "note:         {}", esc(note));
        }
    }
    if let Some(args) = &h.command {
        let _ = writeln!(text, "command:      {} (only its sockets were traced)", esc(&crate::command::shell_words(args)));
    }
    let total_lost: u64 = lost.iter().map(|&(_, n)| n).sum();
    let _ = write!(
        text,
        "records:      {sockets} sockets at start, {transitions} transitions, {total_lost} transitions lost"
    );
    if total_lost > 0 {
        let causes: Vec<String> =
            lost.iter().filter(|&&(_, n)| n > 0).map(|&(c, n)| format!("{n} {}", c.name())).collect();
        let _ = write!(text, " ({}, in {lost_records} lost records)", causes.join(", "));
    }
    text.push('\n');
    let _ = writeln!(text, "details:      {processes} processes, {namespaces} network namespaces");
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        other => other.context("writing output")?,
    }
    print_warning(reader.warning());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Zone;
    use crate::output::TextOptions;
    use crate::record::{Comm, EndReason, Family, LossCause, Lost, Owner, OwnerSource, SocketRecord};
    use crate::tcp_state::TcpState;
    use crate::tracefile::{FileSink, RunSetup, WriteOptions};
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
            saddr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            sport: 8080,
            daddr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dport: 0,
            state: Listen,
            owner: Some(Owner { pid: 10, comm: Comm::new("server"), source: OwnerSource::Inventory, cgroup: 0 }),
            netns: 7,
            inode: 99,
            uid: 0,
            cookie: 5,
        };
        let other = SocketRecord { socket: 2, sport: 22, owner: None, ..listener.clone() };
        let client = |time, sport, old, new| Transition {
            time: ts(time),
            sport,
            dport: 8080,
            socket: 3,
            oldstate: old,
            newstate: new,
            prev_state_ns: (old != Close).then_some(time - 2_000),
            owner: Some(Owner { pid: 20, comm: Comm::new("client"), source: OwnerSource::Syscall, cgroup: 0 }),
            ..t(3, sport, old, new)
        };
        let child = |time, old, new| Transition {
            time: ts(time),
            socket: 4,
            dport: 41000,
            owner: Some(Owner { pid: 10, comm: Comm::new("server"), source: OwnerSource::Listener, cgroup: 0 }),
            ..t(4, 8080, old, new)
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
        let replayed = replay_into(&mut reader, &mut TransitionFilter::new(filter), sink.as_mut(), None).unwrap();
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
                t.sport == 0 && t.socket == 3 && spec.matches_transition(&Transition { sport: 41000, ..t.clone() })
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
                replay_into(&mut reader, &mut TransitionFilter::new(FilterSpec::default()), sink.as_mut(), None).unwrap();
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
            saddr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            sport,
            daddr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            dport: 80,
            oldstate: old,
            newstate: new,
            prev_state_ns: None,
            prev_state_at_least: false,
            owner: Some(Owner { pid: 1, comm: Comm::new("c"), source: OwnerSource::Syscall, cgroup: 0 }),
            reason: None,
            error: None,
            retransmits: 0,
            netns: 0,
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
        assert_eq!(out.iter().map(|t| (t.socket, t.sport, t.newstate)).collect::<Vec<_>>(), [(1, 0, SynSent)]);

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
        replay_into(&mut reader, &mut TransitionFilter::new(FilterSpec::default()), &mut Discard, Some(&mut report))
            .unwrap();
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
