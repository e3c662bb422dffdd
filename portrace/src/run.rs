//! A run from start to end. Live: check the environment, load the kernel programs, take
//! the inventory of existing sockets, then move records from the ring buffer through
//! decoding and the timeline to the output sink until a signal (SIGINT, SIGTERM or SIGHUP), `--duration` or `--count`
//! ends it, reporting every loss in the stream as it is noticed and in the summary at the
//! end. `--snapshot`: print the inventory and stop. `record` is the same run with another
//! [`Output`]: a recording file instead of standard output, and a status line, or with
//! `--dir` the flight recorder's rolling series of files ([`crate::flight`]). With a
//! command (`portrace -- CMD`), the run starts it once the programs are attached, ends
//! when it exits, and returns its exit status (see [`crate::command`]).

use std::collections::HashMap;
use std::io::{self, IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::{interval, sleep, MissedTickBehavior};

use crate::alerts::section::AlertSection;
use crate::alerts::sink::AlertHandle;
use crate::alerts::{Fired, PortRange};
use crate::cli::{ColorChoice, Config, OutputFormat, RecordConfig, RecordTarget};
use crate::flight::FlightRecorder;
use crate::command::{self, CommandSpec, CommandStdout, Identity, Running};
use crate::clock::Clock;
use crate::decode;
use crate::features::Feature;
use crate::inventory;
use crate::loader::{self, Setup, Tracer};
use crate::loss_ledger::{Hits, LossLedger, Reading};
use crate::output::{self, Format, RingRead, Sink, Start};
use crate::priority;
use crate::startup::Startup;
use crate::record::{Comm, LossCause, Lost, Owner, OwnerSource, SocketRecord, Timestamp, Transition};
use crate::report::{Report, ReportOptions};
use crate::still_open::StillOpen;
use crate::summary::Summary;
use crate::timeline::Timeline;
use crate::details::Details;
use crate::replay;
use crate::tracefile::{self, RunSetup};
use crate::hitcount::HitCounter;
use crate::sockets::Endpoints;
use crate::tcp_state::TcpState;
use crate::{follow, gaps, preflight, tracefs};

/// How often the ring buffer is drained. The kernel program wakes the reader only when the
/// ring is a quarter full, so this bounds how late a quiet host's events appear.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How long portrace keeps reading after the traced command exited: the transitions its
/// exit set off (closes, handshakes finishing in softirq) are still on their way.
const COMMAND_GRACE: Duration = Duration::from_millis(150);

/// How long the end-of-run check lets transitions made while the kernel listed its sockets
/// reach the ring buffer before it reads them (see [`Session::check_ends`]).
const LISTING_GRACE: Duration = Duration::from_millis(20);

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
    /// The traced command exited.
    CommandExited,
}

/// Where a trace's records go: standard output in the chosen format, or a recording.
pub trait Output {
    /// The sink for the run, made once the kernel programs are attached. `setup` says
    /// what a recording's header needs beyond the start record.
    fn open(&mut self, setup: RunSetup) -> anyhow::Result<Box<dyn Sink + Send>>;
    /// What the output is, for messages (`writing {name}: ...`): "output" for standard
    /// output, "the recording" for a recording, whose errors name its path.
    fn name(&self) -> String;
    /// The line printed on a terminal's stderr when tracing starts (none if empty).
    fn banner(&self) -> String;
    /// Whether [`Output::progress`] is wanted (a few times a second while tracing).
    fn shows_progress(&self) -> bool {
        false
    }
    fn progress(&mut self, _progress: &Progress) {}
    /// The inventory is written: from now on, every record is a change as it happens.
    fn tracing(&mut self) {}
    /// Tracing is over; called before the summary is printed.
    fn stopped(&mut self) {}
    /// Whether the records go to standard output (then a traced command's own standard
    /// output goes to standard error, away from them).
    fn uses_stdout(&self) -> bool {
        false
    }
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
    explain: bool,
}

impl Output for Stdout {
    fn open(&mut self, _setup: RunSetup) -> anyhow::Result<Box<dyn Sink + Send>> {
        Ok(new_sink(self.format, self.color, self.explain))
    }

    fn name(&self) -> String {
        "output".into()
    }

    fn banner(&self) -> String {
        "portrace: tracing TCP state transitions; Ctrl-C to stop".into()
    }

    fn uses_stdout(&self) -> bool {
        true
    }
}

/// Runs portrace live with `config`. Returns the exit status: 0, or the traced command's.
pub async fn run(config: Config) -> anyhow::Result<u8> {
    if config.snapshot {
        // The inventory needs no eBPF: without privileges it is partial, not impossible.
        if preflight::check_privileges().is_err() {
            eprintln!(
                "portrace: not running as root: listing this network namespace's sockets only, \
                 with owners only for your own processes (run as root for all of them)"
            );
        }
        return snapshot(&config).map(|()| 0);
    }
    if config.alerts.only && config.format == OutputFormat::Csv {
        anyhow::bail!(
            "--alerts-only shows alerts, and the CSV format has no rows for them: use --format text or json"
        );
    }
    preflight::check_privileges()?;
    let mut out = Stdout { format: config.format, color: config.color, explain: config.explain };
    trace(&config, &mut out).await
}

/// `portrace record`: the live run, into a recording. Returns the exit status.
pub async fn record(config: RecordConfig) -> anyhow::Result<u8> {
    preflight::check_privileges()?;
    let options = tracefile::WriteOptions { compress: config.compress };
    match &config.target {
        RecordTarget::File { path, force } => {
            let mut recording = tracefile::Recording::create(path, *force, options)?;
            let result = trace(&config.trace, &mut recording).await;
            let code = result.as_ref().map_or(0, |&code| code);
            recording.finish(result.map(|_| ())).map(|()| code)
        }
        RecordTarget::Dir(flight) => {
            let mut recorder = FlightRecorder::create(flight, options)?;
            trace(&config.trace, &mut recorder).await
        }
    }
}

/// What running a command needs, checked before anything is loaded.
struct CommandPlan<'a> {
    spec: &'a CommandSpec,
    identity: Option<Identity>,
}

fn plan_command(spec: &CommandSpec) -> anyhow::Result<CommandPlan<'_>> {
    command::check_pid_namespace().map_err(anyhow::Error::msg)?;
    let not_run = |reason: String| command::NotRun { name: spec.name(), reason };
    command::resolve(&spec.argv[0], std::env::var_os("PATH").as_deref()).map_err(not_run)?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let run_as = command::choose_user(euid, &command::Invocation::current(), spec.as_root, command::user_by_name)
        .map_err(anyhow::Error::msg)?;
    let name = crate::escape::text(&spec.name()).into_owned();
    let identity = match run_as {
        command::RunAs::Own => None,
        command::RunAs::User { uid, gid, via } => {
            let id = command::identity(uid, gid);
            if io::stderr().is_terminal() {
                let user = id.user.as_ref().map_or_else(|| format!("uid {uid}"), |(n, _)| n.to_string_lossy().into_owned());
                eprintln!("portrace: running {name} as {user} (who asked for root, from {via}); --as-root runs it as root");
            }
            Some(id)
        }
        command::RunAs::Root(why) => {
            // Said whether or not stderr is a terminal: it matters most in logs.
            eprintln!("portrace: running {name} as root ({why})");
            None
        }
    };
    Ok(CommandPlan { spec, identity })
}

/// Traces until the run ends, into `out`; with a command, waits for it and returns its
/// exit status.
pub(crate) async fn trace(config: &Config, out: &mut dyn Output) -> anyhow::Result<u8> {
    let plan = config.command.as_ref().map(plan_command).transpose()?;
    let mut running = None;
    let traced = trace_until_stopped(config, out, plan, &mut running).await;
    let Some(mut running) = running else { return traced.map(|()| 0) };
    if running.status().is_none() {
        eprintln!("portrace: the trace has ended; waiting for the command (pid {}) to exit", running.pid());
        wait_forwarding(&mut running).await;
    }
    let status = running.status().expect("the command has exited");
    let code = command::exit_code(status);
    if code != 0 || traced.is_err() {
        eprintln!("portrace: the command {}", command::describe(status));
    }
    traced.map(|()| code)
}

/// Waits for the command to exit, passing SIGTERM and SIGHUP on to it.
async fn wait_forwarding(running: &mut Running) {
    let (Ok(mut sigterm), Ok(mut sighup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
        running.exited().await;
        return;
    };
    loop {
        tokio::select! {
            _ = running.exited() => return,
            _ = sigterm.recv() => running.signal(libc::SIGTERM),
            _ = sighup.recv() => running.signal(libc::SIGHUP),
        }
    }
}

/// The signals that end a run: SIGINT (Ctrl-C), SIGTERM, and SIGHUP (the terminal went
/// away, as when an SSH connection drops). Their handlers are installed before anything
/// that must be undone at the end (the kernel programs, the private ftrace instance), so
/// that from then on none of them ends the process before it has cleaned up; one that
/// arrives while the run is starting ends it as soon as it can stop.
struct Stops {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Stops {
    fn install() -> anyhow::Result<Stops> {
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
    async fn arrived(&mut self) -> bool {
        tokio::task::yield_now().await;
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        [&mut self.int, &mut self.term, &mut self.hup].into_iter().any(|s| s.poll_recv(&mut cx).is_ready())
    }
}

async fn trace_until_stopped(
    config: &Config,
    out: &mut dyn Output,
    plan: Option<CommandPlan<'_>>,
    running: &mut Option<Running>,
) -> anyhow::Result<()> {
    let mut startup = Startup::new();
    let mut stops = Stops::install()?;
    let kernel = preflight::check_kernel()?;
    // Before any thread starts: they all inherit it.
    priority::raise();
    let mut preparing = loader::prepare();
    let tracefs = tracefs::ensure_mounted()?;
    if tracefs.mounted_by_us {
        eprintln!("portrace: tracefs was not mounted; mounted it at {}", tracefs.path.display());
    }
    startup.mark("checks");
    let offsets = loader::kernel_offsets(Some(&mut preparing));
    let (sock, tw_handler) = (offsets.sock, offsets.tw_handler);
    startup.mark("kernel offsets");
    startup.part("BTF", offsets.btf_took);
    startup.part("kallsyms", offsets.kallsyms_took);
    let mut filter = config.filter.clone();
    if let Some(c) = &filter.cgroup {
        filter.cgroup = Some(c.resolve()?);
    }
    if !filter.netns.is_empty() && sock.is_err() {
        anyhow::bail!(
            "--netns needs the kernel's BTF (/sys/kernel/btf/vmlinux) to read a socket's namespace, and this kernel has none"
        );
    }
    let setup = Setup {
        layout: tracefs::read_layout(&tracefs.path)?,
        sock,
        tw_handler,
        kfree_skb_has_rx_sk: std::fs::read_to_string(tracefs.path.join("events/skb/kfree_skb/format"))
            .is_ok_and(|f| f.contains(" rx_sk;")),
        filter: filter.to_kernel()?,
        ring_size: config.ring_size,
        command: match &plan {
            Some(_) => Some((
                follow::read_task_layout(&tracefs.path)?,
                follow::traced_capacity(std::fs::read_to_string("/proc/sys/kernel/pid_max").ok().as_deref()),
            )),
            None => None,
        },
    };
    let (layout, sock_layout) = (setup.layout, setup.sock.as_ref().ok().copied());
    let (aya_loader, aya_took) = preparing.loader();
    let (mut tracer, ring) = loader::load(setup, aya_loader)?;
    startup.mark("loading");
    startup.part("aya's loader, beforehand", aya_took);
    startup.part("object and maps", tracer.opened_in);
    startup.part("verifying, in parallel", tracer.verified_in);
    // Hits the kernel hands to no program and counts nowhere show only against a count of
    // the hits that does not depend on BPF: read the programs' side, then start that count.
    let hits = match tracer.handed().map_err(|e| format!("{e:#}")) {
        Ok(handed) => HitCounter::start(&tracefs.path).map(|counter| (counter, handed)),
        Err(why) => Err(why),
    };
    let hits = match hits {
        Ok(hits) => {
            tracer.features.on(Feature::HitCount);
            Some(hits)
        }
        Err(why) => {
            tracer.features.off(
                Feature::HitCount,
                format!("transitions the kernel hands to no BPF program without counting them cannot be detected: {why}"),
            );
            None
        }
    };
    for note in tracer.features.notes() {
        eprintln!("portrace: {note}");
    }
    // SAFETY: the ring buffer owns its descriptor and moves into the AsyncFd, which keeps
    // it open for as long as it is registered.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("watching the ring buffer: {e}"))?;

    let clock = Clock::capture();
    let start = clock.now();
    let sink = out.open(RunSetup {
        clock_offset_ns: clock.offset_ns(),
        layout,
        sock_layout,
        filter: config.filter.clone(),
        ring_size: config.ring_size,
        command: config.command.as_ref().map(|c| c.argv.iter().map(|a| a.to_string_lossy().into_owned()).collect()),
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
        .start(&Start { time: start, host, kernel: kernel.to_string(), features: tracer.features.clone() })
        .and_then(|()| sink.flush());
    let mut timeline = Timeline::new(clock, MAX_TRACKED_SOCKETS, start.mono_ns, tracer.timewait_tracked);
    // A traced command owns no socket older than the trace: no inventory is needed.
    let mut sockets = if plan.is_none() { take_inventory(start) } else { Vec::new() };
    let cgroup_paths = adopt_cgroups(&mut sockets);
    let owner_in_filter_cgroup =
        |o: &Owner| filter.matches_cgroup(cgroup_paths.get(&o.cgroup).map(String::as_str)) && filter.cgroup.is_some();
    for s in &mut sockets {
        timeline.adopt(s);
        if let (Some(owner), true) = (s.owner, s.cookie != 0) {
            let kernel_owner = portrace_ebpf::Owner {
                pid: owner.pid,
                source: portrace_ebpf::owner_source::INVENTORY,
                traced: 0,
                in_cgroup: u8::from(owner_in_filter_cgroup(&owner)),
                _pad: 0,
                comm: comm_bytes(&owner.comm),
                cgroup: owner.cgroup,
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
        ledger: LossLedger::default(),
        ring_size: config.ring_size,
        gap_check: plan.is_none() && config.filter.keeps_whole_sockets(),
        end_check: None,
        hits,
        batch: Vec::new(),
        details: Details::live(),
        failure: None,
        out,
        progress,
        command: None,
        still_open: plan.as_ref().map(|_| StillOpen::new()),
    };
    // Transitions made while the inventory was taken, held back until the inventory is
    // written: a socket both show is shown by its transitions alone.
    let mut early = Vec::new();
    let malformed = session.take_early(ring.get_mut(), &mut early);
    let twins = session.timeline.born_during_inventory(&sockets, &early);
    let opened = started.and_then(|()| {
        let in_cgroup = |s: &SocketRecord| filter.matches_cgroup(s.owner.and_then(|o| cgroup_paths.get(&o.cgroup)).map(String::as_str));
        for s in sockets.iter().filter(|s| config.filter.matches_socket(s) && in_cgroup(s) && !twins.contains(&s.socket)) {
            let sink = &mut **session.sink;
            session.details.before(s.owner.as_ref(), s.netns, s.time, |d| replay::announce(sink, d))?;
            if let Some(report) = &mut session.report {
                report.add_socket(s);
            }
            session.sink.socket(s)?;
        }
        if malformed > 0 {
            session.report_lost(malformed, LossCause::Malformed)?;
        }
        session.batch = early;
        if session.write_batch()?.is_some() {
            return Ok(Some(Stop::Count));
        }
        session.sink.flush().map(|()| None)
    });
    startup.mark("inventory and first output");
    if config.verbose {
        eprintln!("portrace: {}", startup.describe());
    }
    let stop = match session.sink_result(opened) {
        Some(stop) => stop,
        // Stopped while the run was starting (Ctrl-C during the inventory): the command is
        // not started at all.
        None if plan.is_some() && stops.arrived().await => {
            eprintln!("portrace: stopped by a signal before the command was started");
            Stop::Signal
        }
        None => {
            if let Some(plan) = &plan {
                // The programs are attached: start the command, traced from its first step.
                let stdout = if session.out.uses_stdout() { CommandStdout::Stderr } else { CommandStdout::Inherit };
                let held = command::spawn_held(plan.spec, plan.identity.clone(), stdout)?;
                session.tracer.follow(held.pid())?;
                session.command = Some(held.release()?);
            } else if io::stderr().is_terminal() && !session.out.banner().is_empty() {
                eprintln!("{}", session.out.banner());
            }
            session.out.tracing();
            let stop = session.event_loop(ring, config.duration, &mut stops).await;
            *running = session.command.take();
            stop?
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
    session.tracer.features.write_summary(&mut stderr)?;
    let timer_misses = session.tracer.timer_misses();
    if timer_misses > 0 {
        writeln!(
            stderr,
            "  the kernel skipped the timewait timer programs {timer_misses} times: some TIME_WAIT \
             transitions may be missing"
        )?;
    }
    if let Some((checked, unseen)) = session.end_check.filter(|&(checked, _)| checked > 0) {
        let verdict = match unseen {
            0 => "every one as the kernel lists it".to_string(),
            n => format!("{n} transitions of these and earlier sockets missing"),
        };
        writeln!(stderr, "  {checked} sockets still open checked against the kernel's socket table: {verdict}")?;
    }
    let twice = session.timeline.duplicates();
    if twice > 0 {
        writeln!(
            stderr,
            "  {twice} transitions were recorded by both kernel programs (a CPU stalled between \
             them) and are shown once"
        )?;
    }
    let c = session.ledger.seen();
    if c.owners_full > 0 || c.timewait_full > 0 || c.listeners_full > 0 {
        writeln!(
            stderr,
            "  the kernel program's maps were full: {} owners, {} listeners and {} timewait sockets not remembered",
            c.owners_full, c.listeners_full, c.timewait_full
        )?;
    }
    if c.hold_full > 0 {
        writeln!(
            stderr,
            "  {} transitions were shown at once without the port they waited for (the hold map was full): \
             a connect's local port or a new child's peer port shows as 0, and a port filter let them through",
            c.hold_full
        )?;
    }
    let unfollowed = c.unfollowed + session.tracer.newtask_misses();
    if unfollowed > 0 {
        writeln!(
            stderr,
            "  {unfollowed} processes the command started could not be followed (the traced-process map \
             was full, or the kernel skipped the program): their sockets are missing"
        )?;
    }
    if let Some(open) = &session.still_open {
        open.write_text(&mut stderr, end, session.summary.lost_total())?;
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
    let mut sink = new_sink(config.format, config.color, false);
    let mut sockets = take_inventory(start);
    for (id, s) in sockets.iter_mut().enumerate() {
        s.socket = id as u64 + 1;
    }
    let kernel = preflight::KernelRelease::current().map(|k| k.to_string()).unwrap_or_default();
    let filter = match &config.filter.cgroup {
        Some(c) => crate::filter::FilterSpec { cgroup: Some(c.resolve()?), ..config.filter.clone() },
        None => config.filter.clone(),
    };
    let cgroup_paths = adopt_cgroups(&mut sockets);
    let in_cgroup =
        |s: &SocketRecord| filter.matches_cgroup(s.owner.and_then(|o| cgroup_paths.get(&o.cgroup)).map(String::as_str));
    let write = || -> io::Result<()> {
        let host = read_trimmed("/proc/sys/kernel/hostname");
        // No program is loaded: no feature is known.
        sink.start(&Start { time: start, host, kernel, features: Default::default() })?;
        for s in sockets.iter().filter(|s| config.filter.matches_socket(s) && in_cgroup(s)) {
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
            owner: s.owner.map(|(pid, comm)| Owner { pid, comm, source: OwnerSource::Inventory, cgroup: 0 }),
            netns: s.netns,
            inode: s.inode,
            uid: s.uid,
            cookie: s.cookie,
        })
        .collect()
}

/// Sets the cgroup of each inventory socket's owner, from the cgroup /proc/PID/cgroup
/// names now, and returns those cgroups' paths by id.
fn adopt_cgroups(sockets: &mut [SocketRecord]) -> HashMap<u64, String> {
    let resolver = crate::cgroup::Resolver::live();
    let mut by_pid: HashMap<u32, u64> = HashMap::new();
    let mut paths = HashMap::new();
    for owner in sockets.iter_mut().filter_map(|s| s.owner.as_mut()) {
        owner.cgroup = *by_pid.entry(owner.pid).or_insert_with(|| {
            let path = std::fs::read(format!("/proc/{}/cgroup", owner.pid))
                .ok()
                .and_then(|raw| crate::process_info::parse_cgroup(&raw));
            let Some(path) = path else { return 0 };
            let id = resolver.id(&path).unwrap_or(0);
            if id != 0 {
                paths.insert(id, path);
            }
            id
        });
    }
    paths
}

fn comm_bytes(comm: &Comm) -> [u8; 16] {
    let mut out = [0u8; 16];
    let b = comm.as_bytes();
    out[..b.len().min(15)].copy_from_slice(&b[..b.len().min(15)]);
    out
}

fn new_sink(format: OutputFormat, color: ColorChoice, explain: bool) -> Box<dyn Sink + Send> {
    let stdout = io::stdout();
    let color = match color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => stdout.is_terminal() && crate::color::allowed(),
    };
    let format = match format {
        OutputFormat::Text => Format::Text,
        OutputFormat::Json => Format::Json,
        OutputFormat::Csv => Format::Csv,
    };
    let out = Box::new(io::BufWriter::with_capacity(1 << 16, stdout));
    output::sink(format, out, output::TextOptions { explain, ..output::TextOptions::system(color) })
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
    /// The losses reported so far.
    ledger: LossLedger,
    /// The kernel ring buffer's size.
    ring_size: u32,
    /// Whether holes in sockets' sequences mean lost transitions: the filter keeps whole
    /// sockets ([`crate::filter::FilterSpec::keeps_whole_sockets`]) and no command is traced (whose
    /// sockets are followed from the moment the kernel ties them to it).
    gap_check: bool,
    /// The end-of-run check, once made: open sockets judged, transitions found unseen.
    end_check: Option<(usize, u64)>,
    /// The count of the state tracepoint's hits that does not depend on BPF, and the
    /// primary program's count of hits when it started ([`crate::hitcount`]).
    hits: Option<(HitCounter, u64)>,
    /// Transitions made visible by one record (reused).
    batch: Vec<Transition>,
    /// Owners' and namespaces' details, read when first seen.
    details: Details,
    /// The write error that stopped the run ([`Stop::WriteFailed`]).
    failure: Option<io::Error>,
    out: &'a mut dyn Output,
    /// When tracing started, if the output shows progress.
    progress: Option<Instant>,
    /// The traced command, while the event loop runs.
    command: Option<Running>,
    /// With a command: its sockets still open, fed what the sink is fed.
    still_open: Option<StillOpen>,
}

impl Session<'_> {
    async fn event_loop(
        &mut self,
        mut ring: AsyncFd<RingBuf<MapData>>,
        duration: Option<Duration>,
        stops: &mut Stops,
    ) -> anyhow::Result<Stop> {
        let deadline = sleep(duration.unwrap_or(Duration::MAX / 4));
        tokio::pin!(deadline);
        let mut tick = interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
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
            if self.gap_check {
                if let Some(stop) = self.check_ends(ring.get_mut()).await? {
                    return Ok(stop);
                }
            }
        }
        Ok(stop)
    }

    /// At the end of a run: lists the kernel's TCP sockets, reads the records of
    /// transitions made meanwhile, and judges the sockets the timeline has as open against
    /// the listing ([`gaps::unseen_at_end`]), so that the last transitions of sockets,
    /// which no later record can show missing, are checked too. What no count explains is
    /// reported lost.
    async fn check_ends(&mut self, ring: &mut RingBuf<MapData>) -> anyhow::Result<Option<Stop>> {
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
            let sockets = ns.sockets.iter().filter_map(|s| {
                let ends = Endpoints { saddr: s.saddr, sport: s.sport, daddr: s.daddr, dport: s.dport, netns: ns.netns };
                TcpState::from_kernel(s.state).map(|state| (ends, state))
            });
            listing.add_namespace(ns.netns, sockets, ns.whole);
        }
        sleep(LISTING_GRACE).await;
        if let Some(stop) = self.drain(ring)? {
            return Ok(Some(stop));
        }
        self.end_check = Some(self.timeline.check_against(&listing, listed_ns));
        let checked = self.check_losses().and_then(|()| self.sink.flush()).map(|()| None);
        Ok(self.sink_result(checked))
    }

    /// Moves the records waiting in the ring through the timeline into `out`, without
    /// writing them; returns how many could not be decoded.
    fn take_early(&mut self, ring: &mut RingBuf<MapData>, out: &mut Vec<Transition>) -> u64 {
        let mut malformed = 0;
        while let Some(item) = ring.next() {
            if !self.absorb(&item, out) {
                malformed += 1;
            }
        }
        malformed
    }

    /// Takes one ring record: an exec reads the process's details, anything else goes
    /// through the timeline, the transitions it makes visible onto `out`. `false` for a
    /// record that cannot be decoded (said on stderr; the caller counts it lost).
    fn absorb(&mut self, item: &[u8], out: &mut Vec<Transition>) -> bool {
        match decode::decode(item) {
            Ok(d) if d.kind == decode::Kind::Exec => {
                self.details.exec(d.pid, d.comm, self.clock.timestamp(d.ts_ns));
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

    /// Moves every waiting record through the timeline to the sink, then reports losses.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> anyhow::Result<Option<Stop>> {
        let mut stop = None;
        let mut emptied = true;
        let mut read = RingRead { records: 0, bytes: 0, size: self.ring_size };
        while let Some(item) = ring.next() {
            read.records += 1;
            read.bytes += RingRead::bytes_of(item.len());
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
            let told = self.sink.ring_read(&read).map(|()| None);
            stop = self.sink_result(told);
            emptied &= stop.is_none();
        }
        if emptied {
            // Timewait timer removals not followed by a re-arm or expiry: killed.
            let now = self.clock.now();
            let tracer = &mut self.tracer;
            self.timeline.settle(now.mono_ns, |tw, at| tracer.removal_followed(tw, at), &mut self.batch);
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
        let Session { batch, summary, sink, count, report, details, still_open, .. } = self;
        let reached = |summary: &Summary| count.is_some_and(|n| summary.transitions() >= n);
        for t in batch.drain(..) {
            if reached(summary) {
                break;
            }
            details.before(t.owner.as_ref(), t.netns, t.time, |d| replay::announce(&mut ***sink, d))?;
            summary.add_transition(&t);
            if let Some(report) = report {
                report.add_transition(&t);
            }
            if let Some(open) = still_open {
                open.add(&t);
            }
            sink.transition(&t)?;
        }
        Ok(reached(summary).then_some(Stop::Count))
    }

    /// Reports losses the kernel programs counted since the last check, then the holes in
    /// sockets' sequences that no count explains ([`LossLedger`]).
    fn check_losses(&mut self) -> io::Result<()> {
        // Holes found so far: each is in a socket's sequence before a record already read,
        // so the counts read after this cover every loss counted for it.
        let unseen = self.timeline.unseen();
        let weigh = LossLedger::wants_weighing(self.gap_check, unseen, self.summary.lost_total(), self.hits.is_some());
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
            lost_total: self.summary.lost_total(),
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

/// The traced command's exit; never, without one.
async fn exit_of(command: &mut Option<Running>) {
    match command {
        Some(command) => {
            command.exited().await;
        }
        None => std::future::pending().await,
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
}
