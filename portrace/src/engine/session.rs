//! A live run's session, once the probes are attached: the event loop that drains the
//! ring buffer through decoding and the timeline into the pipeline until the run ends
//! (a signal, `--duration`, `--count`, the traced command's exit, or an output that
//! stopped), the reports of losses the [`LossLedger`] settles from the kernel's counts,
//! and the end-of-run check of the sockets still open against the kernel's listing.

use std::io;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::sleep;

use super::pace::Pace;

use crate::destination::{Output, Progress};
use crate::clock::Clock;
use crate::command::Running;
use crate::decode;
use crate::filter::FilterSpec;
use crate::gaps;
use crate::hitcount::HitCounter;
use crate::inventory;
use crate::loader::{Ring, Tracer};
use crate::loss_ledger::{Hits, LossLedger, Reading};
use crate::output::RingRead;
use crate::pipeline::Pipeline;
use crate::record::{LossCause, Lost, Transition};
use crate::tcp_state::TcpState;
use crate::timeline::Timeline;
use crate::tracefile;

/// How often, at most, the losses are checked while the run goes on: the check reads the
/// kernel programs' counters and statistics and the ftrace instance's per-CPU counts, which
/// cost more than draining a busy ring (the benchmark's breakdown measured it at an eighth
/// of portrace's CPU when it ran at every drain). A loss is reported this much later at
/// most, and the end of a run always checks.
const LOSS_CHECK_INTERVAL: Duration = Duration::from_millis(200);

/// How long portrace keeps reading after the traced command exited: the transitions its
/// exit set off (closes, handshakes finishing in softirq) are still on their way.
const COMMAND_GRACE: Duration = Duration::from_millis(150);

/// How long the end-of-run check lets transitions made while the kernel listed its sockets
/// reach the ring buffer before it reads them (see [`Session::check_ends`]).
const LISTING_GRACE: Duration = Duration::from_millis(20);
/// How often the ring is read while the end of a run waits for its last timewait timer
/// removals to be followed or found to be kills.
const REMOVAL_STEP: Duration = Duration::from_millis(10);

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stop {
    Signal,
    Duration,
    Count,
    /// The reader of our output went away (`portrace | head`): end quietly.
    BrokenPipe,
    /// Writing the output failed (a full disk): stop, say so, keep what was written.
    WriteFailed,
    /// The traced command exited.
    CommandExited,
}

/// The signals that end a run: SIGINT (Ctrl-C), SIGTERM, and SIGHUP (the terminal went
/// away, as when an SSH connection drops). Their handlers are installed before anything
/// that must be undone at the end (the kernel programs, the private ftrace instance), so
/// that from then on none of them ends the process before it has cleaned up; one that
/// arrives while the run is starting ends it as soon as it can stop.
pub(super) struct Stops {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Stops {
    pub fn install() -> anyhow::Result<Stops> {
        Ok(Stops {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    /// Whether a stopping signal has arrived already (it is taken), without waiting.
    ///
    /// Tokio's handler only notes a signal; its receivers learn of it when the runtime's
    /// driver runs, and the start-up runs without yielding to it. So this yields once
    /// first: the current-thread runtime then polls its driver without blocking, which
    /// hands over every signal that came before the yield.
    pub async fn arrived(&mut self) -> bool {
        tokio::task::yield_now().await;
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        [&mut self.int, &mut self.term, &mut self.hup].into_iter().any(|s| s.poll_recv(&mut cx).is_ready())
    }
}

pub(super) struct Session<'a> {
    pub tracer: Tracer,
    pub clock: Clock,
    /// Every record the run reports goes through it.
    pub pipeline: Pipeline<'a>,
    pub timeline: Timeline,
    pub count: Option<u64>,
    /// The filter, when the kernel program cannot match its command names (more than one
    /// `--comm`): transitions of other owners are dropped here.
    pub comms: Option<FilterSpec>,
    /// The losses reported so far.
    pub ledger: LossLedger,
    /// The kernel ring buffer's size.
    pub ring_size: u32,
    /// Whether holes in sockets' sequences mean lost transitions: the filter keeps whole
    /// sockets ([`crate::filter::FilterSpec::keeps_whole_sockets`]) and no command is traced (whose
    /// sockets are followed from the moment the kernel ties them to it).
    pub gap_check: bool,
    /// The end-of-run check, once made: open sockets judged, transitions found unseen.
    pub end_check: Option<(usize, u64)>,
    /// The count of the state tracepoint's hits that does not depend on BPF, and the
    /// primary program's count of hits when it started ([`crate::hitcount`]).
    pub hits: Option<(HitCounter, u64)>,
    /// Transitions made visible by one record (reused).
    pub batch: Vec<Transition>,
    /// The write error that stopped the run ([`Stop::WriteFailed`]).
    pub failure: Option<io::Error>,
    pub out: &'a mut dyn Output,
    /// When tracing started, if the output shows progress.
    pub progress: Option<Instant>,
    /// The traced command, while the event loop runs.
    pub command: Option<Running>,
    /// When the losses were last checked.
    pub checked_at: Option<Instant>,
    /// Records read from the ring so far.
    pub drained: u64,
}

impl Session<'_> {
    pub async fn event_loop(
        &mut self,
        mut ring: AsyncFd<Ring>,
        duration: Option<Duration>,
        stops: &mut Stops,
    ) -> anyhow::Result<Stop> {
        let deadline = sleep(duration.unwrap_or(Duration::MAX / 4));
        tokio::pin!(deadline);
        let mut pace = Pace::new();
        let tick = sleep(Pace::BUSY);
        tokio::pin!(tick);
        let mut next_progress = Instant::now();
        // With a command: the grace after it exited, and whether that has begun.
        let grace = sleep(Duration::MAX / 4);
        tokio::pin!(grace);
        let mut exited = false;
        let stop = loop {
            let woken_by = tokio::select! {
                // Ctrl-C reaches the command too (same process group): its end ends the run.
                _ = stops.int.recv() => if self.command.is_some() { None } else { Some(Stop::Signal) },
                _ = stops.term.recv() => match &self.command {
                    Some(command) if !exited => {
                        command.signal(libc::SIGTERM);
                        None
                    }
                    _ => Some(Stop::Signal),
                },
                // A hang-up ends the run as SIGTERM does, the command's first.
                _ = stops.hup.recv() => match &self.command {
                    Some(command) if !exited => {
                        command.signal(libc::SIGHUP);
                        None
                    }
                    _ => Some(Stop::Signal),
                },
                _ = exit_of(&mut self.command), if !exited => {
                    exited = true;
                    grace.as_mut().reset(tokio::time::Instant::now() + COMMAND_GRACE);
                    None
                }
                _ = &mut grace, if exited => Some(Stop::CommandExited),
                _ = &mut deadline, if duration.is_some() => Some(Stop::Duration),
                guard = ring.readable_mut() => {
                    guard.context("waiting for the ring buffer")?.clear_ready();
                    None
                }
                _ = &mut tick => None,
            };
            let drained = self.drained;
            if let Some(stop) = self.drain(ring.get_mut())? {
                break stop;
            }
            let wait = pace.after(self.drained - drained);
            tick.as_mut().reset(tokio::time::Instant::now() + wait);
            if let Some(stop) = woken_by {
                break stop;
            }
            if let Some(started) = self.progress {
                let now = Instant::now();
                if now >= next_progress {
                    next_progress = now + tracefile::status::INTERVAL;
                    let summary = self.pipeline.summary();
                    let progress = Progress {
                        transitions: summary.transitions(),
                        lost: summary.lost_total(),
                        elapsed: now - started,
                    };
                    self.out.progress(&progress);
                }
            }
        };
        if !matches!(stop, Stop::BrokenPipe | Stop::Count | Stop::WriteFailed) {
            // Whatever the kernel wrote before we stopped is part of the trace.
            if let Some(stop) = self.drain_and_check(ring.get_mut(), true)? {
                return Ok(stop);
            }
            if let Some(stop) = self.settle_removals(ring.get_mut()).await? {
                return Ok(stop);
            }
            if self.gap_check {
                if let Some(stop) = self.check_ends(ring.get_mut()).await? {
                    return Ok(stop);
                }
            }
        }
        Ok(stop)
    }

    /// At the end of a run: waits until every timewait timer removal already read is old
    /// enough to judge (only when one is pending, and at most the timeline's grace from
    /// now, even for a record stamped later than the clock reads), reading
    /// the ring meanwhile, so that a TIME_WAIT killed in the run's last moments ends the
    /// trace as killed, and one re-armed then goes on, instead of being left undecided.
    async fn settle_removals(&mut self, ring: &mut Ring) -> anyhow::Result<Option<Stop>> {
        let Some(due_ns) = self.timeline.removals_due_at(self.clock.now().mono_ns) else {
            return Ok(None);
        };
        loop {
            let now_ns = self.clock.now().mono_ns;
            if now_ns >= due_ns {
                // One more read settles them: the read settles whatever is due once the ring is empty.
                return self.drain(ring);
            }
            sleep(Duration::from_nanos(due_ns - now_ns).min(REMOVAL_STEP)).await;
            if let Some(stop) = self.drain(ring)? {
                return Ok(Some(stop));
            }
        }
    }

    /// At the end of a run: lists the kernel's TCP sockets, reads the records of
    /// transitions made meanwhile, and judges the sockets the timeline has as open against
    /// the listing ([`gaps::unseen_at_end`]), so that the last transitions of sockets,
    /// which no later record can show missing, are checked too. What no count explains is
    /// reported lost.
    async fn check_ends(&mut self, ring: &mut Ring) -> anyhow::Result<Option<Stop>> {
        let listed_ns = self.clock.now().mono_ns;
        let mut warnings = Vec::new();
        let dumped = match inventory::dump_namespaces(&mut warnings) {
            Ok(dumped) => dumped,
            Err(e) => {
                eprintln!(
                    "portrace: cannot list the sockets at the end of the run ({e}); the last \
                     transitions of open sockets were not checked for losses no count shows"
                );
                return Ok(None);
            }
        };
        let mut listing = gaps::Listing::default();
        for ns in dumped {
            let sockets =
                ns.sockets.iter().filter_map(|s| TcpState::from_kernel(s.state).map(|state| (s.ends(ns.netns), state)));
            listing.add_namespace(ns.netns, sockets, ns.whole);
        }
        sleep(LISTING_GRACE).await;
        if let Some(stop) = self.drain(ring)? {
            return Ok(Some(stop));
        }
        self.end_check = Some(self.timeline.check_against(&listing, listed_ns));
        let checked = self.check_losses().and_then(|()| self.pipeline.flush()).map(|()| None);
        Ok(self.sink_result(checked))
    }

    /// Moves the records waiting in the ring through the timeline into `out`, without
    /// writing them; returns the read, for the outputs to be told of once they are open
    /// (the ring's health counts every record), and how many could not be decoded.
    pub fn take_early(&mut self, ring: &mut Ring, out: &mut Vec<Transition>) -> (RingRead, u64) {
        let mut malformed = 0;
        let mut read = RingRead { records: 0, bytes: 0, size: self.ring_size };
        while let Some(item) = ring.next_record() {
            read.add(item.len());
            if !self.absorb(&item, out) {
                malformed += 1;
            }
        }
        (read, malformed)
    }

    /// Takes one ring record: an exec reads the process's details, anything else goes
    /// through the timeline, the transitions it makes visible onto `out`. `false` for a
    /// record that cannot be decoded (said on stderr; the caller counts it lost).
    fn absorb(&mut self, item: &[u8], out: &mut Vec<Transition>) -> bool {
        match decode::decode(item) {
            Ok(d) if d.kind == decode::Kind::Exec => {
                let time = self.clock.timestamp(d.ts_ns);
                self.pipeline.details().exec(d.pid, d.comm, time);
                true
            }
            Ok(d) => {
                self.timeline.push(&d, out);
                true
            }
            Err(err) => {
                eprintln!("portrace: dropped a malformed record from the kernel: {err}");
                false
            }
        }
    }

    /// Moves every waiting record through the timeline to the pipeline, then reports losses
    /// (at most every [`LOSS_CHECK_INTERVAL`] while the run goes on).
    fn drain(&mut self, ring: &mut Ring) -> anyhow::Result<Option<Stop>> {
        self.drain_and_check(ring, false)
    }

    /// [`Session::drain`], with the losses checked now whatever the interval (`final_check`:
    /// the run is ending).
    fn drain_and_check(&mut self, ring: &mut Ring, final_check: bool) -> anyhow::Result<Option<Stop>> {
        let mut stop = None;
        let mut emptied = true;
        let mut read = RingRead { records: 0, bytes: 0, size: self.ring_size };
        while let Some(item) = ring.next_record() {
            self.drained += 1;
            read.add(item.len());
            let mut batch = std::mem::take(&mut self.batch);
            let decoded = self.absorb(&item, &mut batch);
            self.batch = batch;
            let result = if decoded {
                self.write_batch()
            } else {
                self.report_lost(1, LossCause::Malformed).map(|()| None)
            };
            stop = self.sink_result(result);
            if stop.is_some() {
                emptied = false;
                break;
            }
        }
        if read.records > 0 && stop.is_none() {
            let told = self.pipeline.ring_read(&read).map(|()| None);
            stop = self.sink_result(told);
            emptied &= stop.is_none();
        }
        if emptied {
            // Timewait timer removals not followed by a re-arm or expiry: killed.
            let now = self.clock.now();
            let tracer = &mut self.tracer;
            self.timeline.settle(now.mono_ns, |tw, at| tracer.removal_followed(tw, at), &mut self.batch);
            let written = self.write_batch().and_then(|stop| self.pipeline.tick(now).map(|()| stop));
            stop = self.sink_result(written);
        }
        // A run that ends here (its count reached, its output gone) checks now.
        let due = final_check || stop.is_some() || self.checked_at.is_none_or(|at| at.elapsed() >= LOSS_CHECK_INTERVAL);
        if due && !matches!(stop, Some(Stop::BrokenPipe | Stop::WriteFailed)) {
            let checked = self.check_losses().map(|()| None);
            stop = stop.or(self.sink_result(checked));
        }
        if stop != Some(Stop::WriteFailed) {
            let flushed = self.pipeline.flush().map(|()| None);
            if let Some(s) = self.sink_result(flushed) {
                stop = Some(s);
            }
        }
        Ok(stop)
    }

    /// Writes the transitions the timeline made visible, up to `--count`; says when the
    /// count is reached.
    pub fn write_batch(&mut self) -> io::Result<Option<Stop>> {
        let count = self.count;
        let reached = |pipeline: &Pipeline<'_>| count.is_some_and(|n| pipeline.summary().transitions() >= n);
        // By reference, then cleared: moving each transition out of the batch (`drain`)
        // copied it with a call to memcpy, a few percent of the process in a storm.
        let mut written = Ok(());
        for t in &self.batch {
            if reached(&self.pipeline) {
                break;
            }
            if self.comms.as_ref().is_some_and(|f| !f.matches_comm(t.owner.as_ref())) {
                continue;
            }
            if let Err(e) = self.pipeline.transition(t) {
                written = Err(e);
                break;
            }
        }
        self.batch.clear();
        written?;
        Ok(reached(&self.pipeline).then_some(Stop::Count))
    }

    /// Reports losses the kernel programs counted since the last check, then the holes in
    /// sockets' sequences that no count explains ([`LossLedger`]).
    fn check_losses(&mut self) -> io::Result<()> {
        self.checked_at = Some(Instant::now());
        // Holes found so far: each is in a socket's sequence before a record already read,
        // so the counts read after this cover every loss counted for it.
        let unseen = self.timeline.unseen();
        let lost_total = self.pipeline.summary().lost_total();
        let weigh = LossLedger::wants_weighing(self.gap_check, unseen, lost_total, self.hits.is_some());
        let handed_before = if weigh { self.tracer.handed().ok() } else { None };
        // The independent count first, then the programs' side (see crate::hitcount).
        let instance = match self.hits.as_ref().map(|(counter, _)| counter.total()) {
            Some(Ok(total)) => Some(total),
            Some(Err(e)) => {
                eprintln!(
                    "portrace: reading the ftrace instance that counts the tracepoint's hits failed ({e}); \
                     transitions the kernel skips without counting them are no longer detected"
                );
                self.hits = None;
                None
            }
            None => None,
        };
        let counters = self.tracer.counters().map_err(io::Error::other)?;
        let stats = self.tracer.prog_stats().map_err(io::Error::other)?;
        let hits = match (&self.hits, instance) {
            (Some((_, at_start)), Some(total)) => Some(Hits { at_start: *at_start, total, handed_before }),
            _ => None,
        };
        let reading = Reading {
            unseen,
            lost_total,
            counters,
            recursion_misses: stats.recursion_misses,
            backed_up: self.tracer.backed_up,
            duplicates: self.timeline.duplicates(),
            hits,
            gap_check: self.gap_check,
        };
        for (count, cause) in self.ledger.settle(&reading) {
            self.report_lost(count, cause)?;
        }
        Ok(())
    }

    pub fn report_lost(&mut self, count: u64, cause: LossCause) -> io::Result<()> {
        let lost = Lost { time: self.clock.now(), count, cause };
        self.pipeline.lost(&lost)
    }

    /// A broken pipe ends the run quietly; any other output error ends it too, and is
    /// kept to be reported once the run is wound up.
    pub fn sink_result(&mut self, result: io::Result<Option<Stop>>) -> Option<Stop> {
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

/// The traced command's exit; never, without one.
async fn exit_of(command: &mut Option<Running>) {
    match command {
        Some(command) => {
            command.exited().await;
        }
        None => std::future::pending().await,
    }
}
