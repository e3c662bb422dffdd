//! A live run from start to end: checks the environment, loads the kernel program, then
//! moves events from the ring buffer through decoding and socket tracking to the output
//! sink until a signal, `--duration` or `--count` ends it, and reports every loss in the
//! stream as it is noticed and in the summary at the end.

use std::io::{self, IsTerminal as _, Write as _};
use std::time::Duration;

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::{interval, sleep, MissedTickBehavior};

use crate::cli::{ColorChoice, Config, OutputFormat};
use crate::clock::Clock;
use crate::decode;
use crate::loader::{self, Counters, Tracer};
use crate::output::{self, Format, Sink, Start};
use crate::record::{LossCause, Lost, Transition};
use crate::sockets::Sockets;
use crate::summary::Summary;
use crate::{preflight, tracefs};

/// How often the ring buffer is drained. The kernel program wakes the reader only when the
/// ring is a quarter full, so this bounds how late a quiet host's events appear.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Sockets the tracker remembers at most (about 40 bytes each).
const MAX_TRACKED_SOCKETS: usize = 4_000_000;

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Signal,
    Duration,
    Count,
    /// The reader of our output went away (`portrace | head`): end quietly.
    BrokenPipe,
}

/// Runs portrace live with `config`.
pub async fn run(config: Config) -> anyhow::Result<()> {
    preflight::check_privileges()?;
    let kernel = preflight::check_kernel()?;
    let tracefs = tracefs::ensure_mounted()?;
    if tracefs.mounted_by_us {
        eprintln!("portrace: tracefs was not mounted; mounted it at {}", tracefs.path.display());
    }
    let layout = tracefs::read_layout(&tracefs.path)?;
    let filter = config.filter.to_kernel()?;
    let sock = crate::btf::Btf::from_kernel()
        .and_then(|btf| crate::btf::sock_layout(&btf))
        .map_err(|e| e.to_string());
    let (tracer, ring) = loader::load(&layout, sock, &filter, config.ring_size)?;
    if let Some(why) = &tracer.backup_missing {
        eprintln!(
            "portrace: the backup program is not running ({why}); transitions the kernel skips \
             under heavy load will be counted as lost, not recovered"
        );
    }
    // SAFETY: the ring buffer owns its descriptor and moves into the AsyncFd, which keeps
    // it open for as long as it is registered.
    let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("watching the ring buffer: {e}"))?;

    let clock = Clock::capture();
    let stdout = io::stdout();
    let color = match config.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let format = match config.format {
        OutputFormat::Text => Format::Text,
        OutputFormat::Json => Format::Json,
        OutputFormat::Csv => Format::Csv,
    };
    let out = Box::new(io::BufWriter::with_capacity(1 << 16, stdout));
    let sink = output::sink(format, out, output::TextOptions::system(color));
    let start = clock.now();
    let mut session = Session {
        tracer,
        clock,
        sink,
        sockets: Sockets::new(MAX_TRACKED_SOCKETS),
        summary: Summary::new(start),
        count: config.count,
        seen: Counters::default(),
        skipped_reported: 0,
    };
    let started = session.sink.start(&Start {
        time: start,
        host: read_trimmed("/proc/sys/kernel/hostname"),
        kernel: kernel.to_string(),
    });
    let stop = match started.and_then(|()| session.sink.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Stop::BrokenPipe,
        Err(e) => return Err(e).context("writing output"),
        Ok(()) => {
            if io::stderr().is_terminal() {
                eprintln!("portrace: tracing TCP state transitions; Ctrl-C to stop");
            }
            session.event_loop(ring, config.duration).await?
        }
    };
    if stop == Stop::BrokenPipe {
        return Ok(());
    }
    let end = session.clock.now();
    session.summary.finish(end);
    match session.sink.end(&session.summary).and_then(|()| session.sink.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
        other => other.context("writing output")?,
    }
    let mut stderr = io::stderr().lock();
    session.summary.write_text(&mut stderr)?;
    stderr.flush()?;
    Ok(())
}

struct Session {
    tracer: Tracer,
    clock: Clock,
    sink: Box<dyn Sink + Send>,
    sockets: Sockets,
    summary: Summary,
    count: Option<u64>,
    /// Counter totals already reported.
    seen: Counters,
    /// Skipped runs already reported as lost.
    skipped_reported: u64,
}

impl Session {
    async fn event_loop(&mut self, mut ring: AsyncFd<RingBuf<MapData>>, duration: Option<Duration>) -> anyhow::Result<Stop> {
        let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let deadline = sleep(duration.unwrap_or(Duration::MAX / 4));
        tokio::pin!(deadline);
        let mut tick = interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
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
        };
        if stop != Stop::BrokenPipe && stop != Stop::Count {
            // Whatever the kernel wrote before we stopped is part of the trace.
            if let Some(stop) = self.drain(ring.get_mut())? {
                return Ok(stop);
            }
        }
        Ok(stop)
    }

    /// Moves every waiting event to the sink, then reports new losses.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> anyhow::Result<Option<Stop>> {
        let mut stop = None;
        while let Some(item) = ring.next() {
            let result = match decode::decode(&item) {
                Ok(d) => {
                    let seen = self.sockets.observe(&d);
                    let t = Transition {
                        time: self.clock.timestamp(d.ts_ns),
                        pid: d.pid,
                        comm: d.comm,
                        socket: seen.socket,
                        family: d.family,
                        saddr: d.saddr,
                        sport: d.sport,
                        daddr: d.daddr,
                        dport: d.dport,
                        oldstate: d.oldstate,
                        newstate: d.newstate,
                        prev_state_ns: seen.prev_state_ns,
                    };
                    self.summary.add_transition(&t);
                    self.sink.transition(&t)
                }
                Err(err) => {
                    eprintln!("portrace: dropped a malformed record from the kernel: {err}");
                    self.report_lost(1, LossCause::Malformed)
                }
            };
            if let Some(s) = sink_result(result)? {
                stop = Some(s);
                break;
            }
            if self.count.is_some_and(|n| self.summary.transitions() >= n) {
                stop = Some(Stop::Count);
                break;
            }
        }
        if stop != Some(Stop::BrokenPipe) {
            if let Some(s) = sink_result(self.check_losses())? {
                stop = stop.or(Some(s));
            }
        }
        if let Some(s) = sink_result(self.sink.flush())? {
            stop = Some(s);
        }
        Ok(stop)
    }

    /// Reports losses the kernel program counted since the last check.
    fn check_losses(&mut self) -> io::Result<()> {
        let counters = self.tracer.counters().map_err(io::Error::other)?;
        let ring_full = counters.ring_full - self.seen.ring_full;
        self.seen = counters;
        if ring_full > 0 {
            self.report_lost(ring_full, LossCause::RingFull)?;
        }
        let stats = self.tracer.prog_stats().map_err(io::Error::other)?;
        // A run the kernel skipped is lost unless the backup program recorded it.
        let skipped = stats.recursion_misses.unwrap_or(0).saturating_sub(counters.rescued);
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
        self.sink.lost(&lost)
    }
}

/// A broken pipe ends the run quietly; any other output error is fatal.
fn sink_result(result: io::Result<()>) -> anyhow::Result<Option<Stop>> {
    match result {
        Ok(()) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(Some(Stop::BrokenPipe)),
        Err(e) => Err(e).context("writing output"),
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
}
