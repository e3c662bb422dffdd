//! A run from start to end. Live: check the environment, load the kernel programs, take
//! the inventory of existing sockets, then move records from the ring buffer through
//! decoding and the timeline to the output sink until a signal, `--duration` or `--count`
//! ends it, reporting every loss in the stream as it is noticed and in the summary at the
//! end. `--snapshot`: print the inventory and stop. `record` is the same run with another
//! [`Output`]: a recording file instead of standard output, and a status line.

use std::io::{self, IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::{interval, sleep, MissedTickBehavior};

use crate::alerts::section::AlertSection;
use crate::alerts::sink::AlertHandle;
use crate::alerts::{Fired, PortRange};
use crate::cli::{ColorChoice, Config, OutputFormat, RecordConfig};
use crate::clock::Clock;
use crate::decode;
use crate::inventory;
use crate::loader::{self, Counters, Setup, Tracer};
use crate::output::{self, Format, Sink, Start};
use crate::record::{Comm, LossCause, Lost, Owner, OwnerSource, SocketRecord, Timestamp, Transition};
use crate::report::{Report, ReportOptions};
use crate::summary::Summary;
use crate::timeline::Timeline;
use crate::tracefile::{self, RunSetup};
use crate::{btf, preflight, tracefs};

/// How often the ring buffer is drained. The kernel program wakes the reader only when the
/// ring is a quarter full, so this bounds how late a quiet host's events appear.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Sockets the tracker remembers at most (about 100 bytes each).
const MAX_TRACKED_SOCKETS: usize = 4_000_000;

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Signal,
    Duration,
    Count,
    /// The reader of our output went away (`portrace | head`): end quietly.
    BrokenPipe,
    /// Writing the output failed (a full disk): stop, say so, keep what was written.
    WriteFailed,
}

/// Where a trace's records go: standard output in the chosen format, or a recording.
pub trait Output {
    /// The sink for the run, made once the kernel programs are attached. `setup` says
    /// what a recording's header needs beyond the start record.
    fn open(&mut self, setup: RunSetup) -> anyhow::Result<Box<dyn Sink + Send>>;
    /// What the output is, for messages (`writing {name}: ...`): "output" for standard
    /// output, "the recording" for a recording, whose errors name its path.
    fn name(&self) -> String;
    /// The line printed on a terminal's stderr when tracing starts.
    fn banner(&self) -> String;
    /// Whether [`Output::progress`] is wanted (a few times a second while tracing).
    fn shows_progress(&self) -> bool {
        false
    }
    fn progress(&mut self, _progress: &Progress) {}
    /// Tracing is over; called before the summary is printed.
    fn stopped(&mut self) {}
}

/// How a run is going.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub transitions: u64,
    pub lost: u64,
    pub elapsed: Duration,
}

/// Standard output, in the format and colours the user chose.
struct Stdout {
    format: OutputFormat,
    color: ColorChoice,
}

impl Output for Stdout {
    fn open(&mut self, _setup: RunSetup) -> anyhow::Result<Box<dyn Sink + Send>> {
        Ok(new_sink(self.format, self.color))
    }

    fn name(&self) -> String {
        "output".into()
    }

    fn banner(&self) -> String {
        "portrace: tracing TCP state transitions; Ctrl-C to stop".into()
    }
}

/// Runs portrace live with `config`.
pub async fn run(config: Config) -> anyhow::Result<()> {
    if config.snapshot {
        // The inventory needs no eBPF: without privileges it is partial, not impossible.
        if preflight::check_privileges().is_err() {
            eprintln!(
                "portrace: not running as root: listing this network namespace's sockets only, \
                 with owners only for your own processes (run as root for all of them)"
            );
        }
        return snapshot(&config);
    }
    if config.alerts.only && config.format == OutputFormat::Csv {
        anyhow::bail!(
            "--alerts-only shows alerts, and the CSV format has no rows for them: use --format text or json"
        );
    }
    preflight::check_privileges()?;
    let mut out = Stdout { format: config.format, color: config.color };
    trace(&config, &mut out).await
}

/// `portrace record`: the live run, into a recording.
pub async fn record(config: RecordConfig) -> anyhow::Result<()> {
    preflight::check_privileges()?;
    let options = tracefile::WriteOptions { compress: config.compress };
    let mut recording = tracefile::Recording::create(&config.output, config.force, options)?;
    let result = trace(&config.trace, &mut recording).await;
    recording.finish(result)
}

/// Traces until the run ends, into `out`.
async fn trace(config: &Config, out: &mut dyn Output) -> anyhow::Result<()> {
    let kernel = preflight::check_kernel()?;
    let tracefs = tracefs::ensure_mounted()?;
    if tracefs.mounted_by_us {
        eprintln!("portrace: tracefs was not mounted; mounted it at {}", tracefs.path.display());
    }
    // The kernel's symbol table and its BTF are each some 25 ms to read: read them at once.
    let (sock, tw_handler) = std::thread::scope(|scope| {
        let symbols = scope.spawn(loader::tw_timer_handler);
        let sock = btf::Btf::from_kernel().and_then(|b| btf::sock_layout(&b)).map_err(|e| e.to_string());
        let tw_handler = symbols.join().unwrap_or_else(|_| Err("reading /proc/kallsyms failed".to_string()));
        (sock, tw_handler)
    });
    let setup = Setup {
        layout: tracefs::read_layout(&tracefs.path)?,
        sock,
        tw_handler,
        kfree_skb_has_rx_sk: std::fs::read_to_string(tracefs.path.join("events/skb/kfree_skb/format"))
            .is_ok_and(|f| f.contains(" rx_sk;")),
        filter: config.filter.to_kernel()?,
        ring_size: config.ring_size,
    };
    let (layout, sock_layout) = (setup.layout, setup.sock.as_ref().ok().copied());
    let (mut tracer, ring) = loader::load(setup)?;
    for limitation in &tracer.limitations {
        eprintln!("portrace: {limitation}");
    }
    // SAFETY: the ring buffer owns its descriptor and moves into the AsyncFd, which keeps
    // it open for as long as it is registered.
    let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("watching the ring buffer: {e}"))?;

    let clock = Clock::capture();
    let start = clock.now();
    let sink = out.open(RunSetup {
        clock_offset_ns: clock.offset_ns(),
        layout,
        sock_layout,
        filter: config.filter.clone(),
        ring_size: config.ring_size,
        notes: tracer.limitations.clone(),
    })?;
    let alerts = config.alerts.enabled.then(|| AlertHandle::new(config.alerts.rules.clone(), PortRange::of_this_host()));
    let mut sink: Box<dyn Sink + Send> = match &alerts {
        Some(handle) => Box::new(handle.wrap(sink, config.alerts.only)),
        None => sink,
    };
    // The programs are attached: tracing has started, and says so at once. Sockets that
    // change state from now on are seen; those that existed before are learned next, and
    // their owners handed to the kernel program.
    let host = read_trimmed("/proc/sys/kernel/hostname");
    let started = sink
        .start(&Start { time: start, host, kernel: kernel.to_string() })
        .and_then(|()| sink.flush());
    let mut timeline = Timeline::new(clock, MAX_TRACKED_SOCKETS, start.mono_ns, tracer.timewait_tracked);
    let mut sockets = take_inventory(start);
    for s in &mut sockets {
        timeline.adopt(s);
        if let (Some(owner), true) = (s.owner, s.cookie != 0) {
            let kernel_owner = portrace_ebpf::Owner {
                pid: owner.pid,
                source: portrace_ebpf::owner_source::INVENTORY,
                _pad: [0; 3],
                comm: comm_bytes(&owner.comm),
            };
            let mut added = tracer.add_inventory_owner(s.cookie, kernel_owner);
            if s.state == crate::tcp_state::TcpState::Listen && added.is_ok() {
                added = tracer.add_inventory_listener(s.netns, s.sport, kernel_owner);
            }
            if let Err(e) = added {
                eprintln!("portrace: {e:#}; later transitions of older sockets may lack their owner");
                break;
            }
        }
    }
    let progress = out.shows_progress().then(Instant::now);
    let mut session = Session {
        tracer,
        clock,
        sink: &mut sink,
        timeline,
        summary: Summary::new(start),
        report: config.summary.then(|| Report::new(ReportOptions::default())),
        count: config.count,
        seen: Counters::default(),
        skipped_reported: 0,
        batch: Vec::new(),
        failure: None,
        out,
        progress,
    };
    let opened = started.and_then(|()| {
        for s in sockets.iter().filter(|s| config.filter.matches_socket(s)) {
            if let Some(report) = &mut session.report {
                report.add_socket(s);
            }
            session.sink.socket(s)?;
        }
        session.sink.flush()
    });
    let stop = match session.sink_result(opened.map(|()| None)) {
        Some(stop) => stop,
        None => {
            if io::stderr().is_terminal() {
                eprintln!("{}", session.out.banner());
            }
            session.event_loop(ring, config.duration).await?
        }
    };
    session.out.stopped();
    if stop == Stop::BrokenPipe {
        return Ok(());
    }
    let end = session.clock.now();
    session.summary.finish(end);
    if stop != Stop::WriteFailed {
        let ended = session.sink.end(&session.summary).and_then(|()| session.sink.flush());
        if session.sink_result(ended.map(|()| None)) == Some(Stop::BrokenPipe) {
            return Ok(());
        }
    }
    let mut stderr = io::stderr().lock();
    session.summary.write_text(&mut stderr)?;
    let timer_misses = session.tracer.timer_misses();
    if timer_misses > 0 {
        writeln!(
            stderr,
            "  the kernel skipped the timewait timer programs {timer_misses} times: some TIME_WAIT \
             transitions may be missing"
        )?;
    }
    let c = session.seen;
    if c.owners_full > 0 || c.timewait_full > 0 {
        writeln!(
            stderr,
            "  the kernel program's maps were full: {} owners and {} timewait sockets not remembered",
            c.owners_full, c.timewait_full
        )?;
    }
    if let Some(handle) = &alerts {
        handle.lock().write_summary(&mut stderr)?;
    }
    if let Some(report) = &mut session.report {
        report.finish(end);
        if let Some(handle) = &alerts {
            report.set_alerts(AlertSection::of(&handle.lock()));
        }
        writeln!(stderr)?;
        report.write_text(&mut stderr)?;
    }
    stderr.flush()?;
    match session.failure.take() {
        Some(e) => Err(e).context(format!("writing {}", session.out.name())),
        None => fail_on_alert(config, alerts.as_ref()),
    }
}

/// `--fail-on-alert`: an error carrying the number of alerts when any fired.
fn fail_on_alert(config: &Config, alerts: Option<&AlertHandle>) -> anyhow::Result<()> {
    match alerts.map(|h| h.lock().fired()) {
        Some(fired) if fired > 0 && config.alerts.fail => Err(Fired(fired).into()),
        _ => Ok(()),
    }
}

/// `--snapshot`: the inventory alone.
fn snapshot(config: &Config) -> anyhow::Result<()> {
    let clock = Clock::capture();
    let start = clock.now();
    let mut sink = new_sink(config.format, config.color);
    let mut sockets = take_inventory(start);
    for (id, s) in sockets.iter_mut().enumerate() {
        s.socket = id as u64 + 1;
    }
    let kernel = preflight::KernelRelease::current().map(|k| k.to_string()).unwrap_or_default();
    let write = || -> io::Result<()> {
        sink.start(&Start { time: start, host: read_trimmed("/proc/sys/kernel/hostname"), kernel })?;
        for s in sockets.iter().filter(|s| config.filter.matches_socket(s)) {
            sink.socket(s)?;
        }
        let mut summary = Summary::new(start);
        summary.finish(clock.now());
        sink.end(&summary)?;
        sink.flush()
    };
    match write() {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing output"),
    }
}

/// The sockets that exist now; a failure to take the inventory is reported, not fatal.
fn take_inventory(time: Timestamp) -> Vec<SocketRecord> {
    let inventory = match inventory::collect() {
        Ok(inventory) => inventory,
        Err(e) => {
            eprintln!("portrace: cannot list the existing sockets ({e}); only new transitions will be shown");
            return Vec::new();
        }
    };
    for warning in &inventory.warnings {
        eprintln!("portrace: {warning}");
    }
    inventory
        .sockets
        .into_iter()
        .map(|s| SocketRecord {
            time,
            socket: 0,
            family: s.family,
            saddr: s.saddr,
            sport: s.sport,
            daddr: s.daddr,
            dport: s.dport,
            state: s.state,
            owner: s.owner.map(|(pid, comm)| Owner { pid, comm, source: OwnerSource::Inventory }),
            netns: s.netns,
            inode: s.inode,
            uid: s.uid,
            cookie: s.cookie,
        })
        .collect()
}

fn comm_bytes(comm: &Comm) -> [u8; 16] {
    let mut out = [0u8; 16];
    let b = comm.as_bytes();
    out[..b.len().min(15)].copy_from_slice(&b[..b.len().min(15)]);
    out
}

fn new_sink(format: OutputFormat, color: ColorChoice) -> Box<dyn Sink + Send> {
    let stdout = io::stdout();
    let color = match color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let format = match format {
        OutputFormat::Text => Format::Text,
        OutputFormat::Json => Format::Json,
        OutputFormat::Csv => Format::Csv,
    };
    let out = Box::new(io::BufWriter::with_capacity(1 << 16, stdout));
    output::sink(format, out, output::TextOptions::system(color))
}

struct Session<'a> {
    tracer: Tracer,
    clock: Clock,
    sink: &'a mut Box<dyn Sink + Send>,
    timeline: Timeline,
    summary: Summary,
    /// The report `--summary` prints at the end, fed what the sink is fed.
    report: Option<Report>,
    count: Option<u64>,
    /// Counter totals already reported.
    seen: Counters,
    /// Skipped runs already reported as lost.
    skipped_reported: u64,
    /// Transitions made visible by one record (reused).
    batch: Vec<Transition>,
    /// The write error that stopped the run ([`Stop::WriteFailed`]).
    failure: Option<io::Error>,
    out: &'a mut dyn Output,
    /// When tracing started, if the output shows progress.
    progress: Option<Instant>,
}

impl Session<'_> {
    async fn event_loop(
        &mut self,
        mut ring: AsyncFd<RingBuf<MapData>>,
        duration: Option<Duration>,
    ) -> anyhow::Result<Stop> {
        let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let deadline = sleep(duration.unwrap_or(Duration::MAX / 4));
        tokio::pin!(deadline);
        let mut tick = interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut next_progress = Instant::now();
        let stop = loop {
            let woken_by = tokio::select! {
                _ = sigint.recv() => Some(Stop::Signal),
                _ = sigterm.recv() => Some(Stop::Signal),
                _ = &mut deadline, if duration.is_some() => Some(Stop::Duration),
                guard = ring.readable_mut() => {
                    guard.context("waiting for the ring buffer")?.clear_ready();
                    None
                }
                _ = tick.tick() => None,
            };
            if let Some(stop) = self.drain(ring.get_mut())? {
                break stop;
            }
            if let Some(stop) = woken_by {
                break stop;
            }
            if let Some(started) = self.progress {
                let now = Instant::now();
                if now >= next_progress {
                    next_progress = now + tracefile::status::INTERVAL;
                    let progress = Progress {
                        transitions: self.summary.transitions(),
                        lost: self.summary.lost_total(),
                        elapsed: now - started,
                    };
                    self.out.progress(&progress);
                }
            }
        };
        if !matches!(stop, Stop::BrokenPipe | Stop::Count | Stop::WriteFailed) {
            // Whatever the kernel wrote before we stopped is part of the trace.
            if let Some(stop) = self.drain(ring.get_mut())? {
                return Ok(stop);
            }
        }
        Ok(stop)
    }

    /// Moves every waiting record through the timeline to the sink, then reports losses.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> anyhow::Result<Option<Stop>> {
        let mut stop = None;
        let mut emptied = true;
        while let Some(item) = ring.next() {
            let result = match decode::decode(&item) {
                Ok(d) => {
                    self.timeline.push(&d, &mut self.batch);
                    self.write_batch()
                }
                Err(err) => {
                    eprintln!("portrace: dropped a malformed record from the kernel: {err}");
                    self.report_lost(1, LossCause::Malformed).map(|()| None)
                }
            };
            stop = self.sink_result(result);
            if stop.is_some() {
                emptied = false;
                break;
            }
        }
        if emptied {
            // Timewait timer removals not followed by a re-arm or expiry: killed.
            let now = self.clock.now();
            self.timeline.settle(now.mono_ns, self.seen.tw_ring_full > 0, &mut self.batch);
            let written = self.write_batch().and_then(|stop| self.sink.tick(now).map(|()| stop));
            stop = self.sink_result(written);
        }
        if !matches!(stop, Some(Stop::BrokenPipe | Stop::WriteFailed)) {
            let checked = self.check_losses().map(|()| None);
            stop = stop.or(self.sink_result(checked));
        }
        if stop != Some(Stop::WriteFailed) {
            let flushed = self.sink.flush().map(|()| None);
            if let Some(s) = self.sink_result(flushed) {
                stop = Some(s);
            }
        }
        Ok(stop)
    }

    /// Writes the transitions the timeline made visible, up to `--count`; says when the
    /// count is reached.
    fn write_batch(&mut self) -> io::Result<Option<Stop>> {
        let Session { batch, summary, sink, count, report, .. } = self;
        let reached = |summary: &Summary| count.is_some_and(|n| summary.transitions() >= n);
        for t in batch.drain(..) {
            if reached(summary) {
                break;
            }
            summary.add_transition(&t);
            if let Some(report) = report {
                report.add_transition(&t);
            }
            sink.transition(&t)?;
        }
        Ok(reached(summary).then_some(Stop::Count))
    }

    /// Reports losses the kernel programs counted since the last check.
    fn check_losses(&mut self) -> io::Result<()> {
        let counters = self.tracer.counters().map_err(io::Error::other)?;
        let before = self.seen;
        self.seen = counters;
        for (now, then, cause) in [
            (counters.ring_full, before.ring_full, LossCause::RingFull),
            (counters.tw_ring_full, before.tw_ring_full, LossCause::TimeWait),
            (counters.unreadable, before.unreadable, LossCause::Unreadable),
        ] {
            if now > then {
                self.report_lost(now - then, cause)?;
            }
        }
        let stats = self.tracer.prog_stats().map_err(io::Error::other)?;
        // A run the kernel skipped is lost unless the backup program recorded it.
        let rescued = if self.tracer.backed_up { counters.rescued } else { 0 };
        let skipped = stats.recursion_misses.unwrap_or(0).saturating_sub(rescued);
        if skipped > self.skipped_reported {
            let new = skipped - self.skipped_reported;
            self.skipped_reported = skipped;
            self.report_lost(new, LossCause::Skipped)?;
        }
        Ok(())
    }

    fn report_lost(&mut self, count: u64, cause: LossCause) -> io::Result<()> {
        let lost = Lost { time: self.clock.now(), count, cause };
        self.summary.add_lost(&lost);
        if let Some(report) = &mut self.report {
            report.add_lost(&lost);
        }
        self.sink.lost(&lost)
    }

    /// A broken pipe ends the run quietly; any other output error ends it too, and is
    /// kept to be reported once the run is wound up.
    fn sink_result(&mut self, result: io::Result<Option<Stop>>) -> Option<Stop> {
        match result {
            Ok(stop) => stop,
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Some(Stop::BrokenPipe),
            Err(e) => {
                self.failure.get_or_insert(e);
                Some(Stop::WriteFailed)
            }
        }
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
}
