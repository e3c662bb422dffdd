//! One measured run. An untraced run is the workload alone, in fresh namespaces. A traced
//! run is the same workload with one tracer, measured like this:
//!
//! 1. switch the kernel's BPF run-time statistics on and attach the empty raw tracepoint
//!    floor program to `sock:inet_sock_set_state`;
//! 2. start the tracer and wait until it is ready: for portrace until its `start` record,
//!    for bcc until its header (both written after attaching); for libbpf-tools and
//!    bpftrace until the kernel first runs one of their programs, which the benchmark
//!    provokes every 2 ms with a listen() and close() of its own (two transitions on an
//!    unrelated port). Start-up time is launch to ready. Then attach the empty classic
//!    tracepoint floor (after the tracer, so that its probe does not run ahead of the
//!    tracer's programs);
//! 3. find the tracer's programs (the `prog_id`s in its `/proc/PID/fdinfo`, or else the
//!    programs that appeared since it started) and read their counters, the floors'
//!    counters, the tracer's CPU time and the machine's busy time;
//! 4. run the workload; wait until the tracer's output has stopped growing for a second
//!    (it has written everything it will);
//! 5. read everything again (the deltas are the run's), and the tracer's peak RSS while
//!    it still holds what the run gave it (20,000 TIME_WAIT sockets stay live for 60 s);
//! 6. stop the tracer with SIGINT (SIGKILL after 20 s) and read its output.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::bpf::{self, ProgInfo};
use crate::cli::TracerKind;
use crate::netns::Topology;
use crate::procfs;
use crate::sys::{self, Error, Out, Proc, Result};
use crate::tracers::{self, Located, Parsed, Target};
use crate::truth::{self, Score};
use crate::workload::{self, Outcome, Shape};

/// How long a tracer may take to become ready (bcc compiles for seconds).
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// The tracer's output must not grow for this long before the run counts as drained.
const QUIET: Duration = Duration::from_secs(1);
/// At most this long is waited for the output to go quiet.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Which transport a run used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Transport {
    Loopback,
    Veth,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Loopback => "loopback",
            Transport::Veth => "veth",
        }
    }

    fn topology(self) -> Result<Topology> {
        match self {
            Transport::Loopback => Topology::loopback(),
            Transport::Veth => Topology::veth(),
        }
    }
}

/// What the benchmark needs for every run.
pub struct Bench {
    pub shape: Shape,
    pub runs_dir: PathBuf,
    pub keep_raw: bool,
    next_port: u16,
}

impl Bench {
    pub fn new(shape: Shape, runs_dir: PathBuf, keep_raw: bool) -> Bench {
        Bench {
            shape,
            runs_dir,
            keep_raw,
            next_port: 0,
        }
    }

    /// A port of 63000-63099 for the next run (fresh namespaces make reuse harmless).
    fn port(&mut self) -> u16 {
        let p = 63000 + self.next_port % 100;
        self.next_port += 1;
        p
    }

    fn run_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.runs_dir.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Failed(format!("creating {}: {e}", dir.display())))?;
        Ok(dir)
    }
}

/// The machine around a run: how much CPU others used, and who was busy.
#[derive(Clone, Debug, Default)]
pub struct Surroundings {
    /// CPU used by everything but the workload, the tracer and the benchmark, in cores
    /// (an approximation: /proc/stat's user + nice + system minus ours, per second).
    pub other_cores: f64,
    /// Heavy processes of others seen at the start of the run.
    pub strangers: Vec<String>,
}

fn surroundings_start(ours: &[i32]) -> (Duration, Duration, Instant, Vec<String>) {
    (
        procfs::busy_cpu(),
        procfs::self_cpu(),
        Instant::now(),
        procfs::busy_strangers(ours),
    )
}

fn surroundings_end(
    start: (Duration, Duration, Instant, Vec<String>),
    ours: Duration,
) -> Surroundings {
    let (busy0, self0, t0, strangers) = start;
    let busy = procfs::busy_cpu().saturating_sub(busy0);
    let mine = procfs::self_cpu().saturating_sub(self0);
    let other = busy.saturating_sub(ours + mine);
    let wall = t0.elapsed().as_secs_f64().max(1e-3);
    Surroundings {
        other_cores: other.as_secs_f64() / wall,
        strangers,
    }
}

/// Other processes may use this much CPU (in cores) during a run before it counts as
/// disturbed and is done again.
const DISTURBED_CORES: f64 = 0.35;

/// `why` with the disturbances every run can have (other processes' CPU, others' BPF
/// programs) added, joined; `None` when there is none.
fn disturbances(s: &Surroundings, foreign_programs: &[String], mut why: Vec<String>) -> Option<String> {
    if s.other_cores > DISTURBED_CORES {
        why.push(format!("other processes used {:.2} cores", s.other_cores));
    }
    if !foreign_programs.is_empty() {
        why.push(format!(
            "BPF programs of others were loaded: {}",
            foreign_programs.join(", ")
        ));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

#[derive(Clone, Debug)]
pub struct UntracedRun {
    pub transport: Transport,
    pub round: u64,
    pub port: u16,
    pub result: std::result::Result<Outcome, String>,
    pub surroundings: Surroundings,
    /// BPF programs of others loaded during the run.
    pub foreign_programs: Vec<String>,
}

impl UntracedRun {
    /// Why the run's numbers cannot be trusted, if they cannot.
    pub fn disturbed(&self) -> Option<String> {
        disturbances(&self.surroundings, &self.foreign_programs, Vec::new())
    }
}

/// BPF programs loaded now that are not in `ours` (another tracer someone runs slows
/// every transition down, so a run with one is disturbed).
pub fn foreign_programs(ours: &BTreeSet<u32>) -> Vec<String> {
    bpf::prog_ids()
        .into_iter()
        .filter(|id| !ours.contains(id))
        .filter_map(bpf::prog_info)
        .map(|p| format!("{} ({}, id {})", p.name, p.type_name(), p.id))
        .collect()
}

/// A program's counters over the run.
#[derive(Clone, Debug, Default)]
pub struct ProgDelta {
    pub id: u32,
    pub name: String,
    pub prog_type: String,
    pub on_state_tracepoint: bool,
    pub run_cnt: u64,
    pub run_time_ns: u64,
    pub recursion_misses: u64,
}

impl ProgDelta {
    fn between(before: &ProgInfo, after: &ProgInfo, on_state: bool) -> ProgDelta {
        ProgDelta {
            id: after.id,
            name: after.name.clone(),
            prog_type: after.type_name().to_string(),
            on_state_tracepoint: on_state,
            run_cnt: after.run_cnt.saturating_sub(before.run_cnt),
            run_time_ns: after.run_time_ns.saturating_sub(before.run_time_ns),
            recursion_misses: after
                .recursion_misses
                .saturating_sub(before.recursion_misses),
        }
    }

    pub fn ns_per_run(&self) -> Option<f64> {
        (self.run_cnt > 0).then(|| self.run_time_ns as f64 / self.run_cnt as f64)
    }

    /// The hits the kernel handed to the program: its runs and the runs it skipped
    /// because the program was already running on that CPU.
    pub fn handed(&self) -> u64 {
        self.run_cnt.saturating_add(self.recursion_misses)
    }

    /// Of `expected` hits, how many the kernel did not hand to the program.
    pub fn not_handed(&self, expected: u64) -> u64 {
        expected.saturating_sub(self.handed())
    }
}

/// How the tracer came up.
#[derive(Clone, Debug, Default)]
pub struct Startup {
    /// Launch until the kernel first ran one of its programs.
    pub attached: Option<Duration>,
    /// Launch until its start line (portrace's start record, the peers' header).
    pub announced: Option<Duration>,
    /// The start-up time the benchmark reports (see the module documentation).
    pub ready: Duration,
}

#[derive(Clone, Debug)]
pub struct TracedRun {
    pub transport: Transport,
    pub round: u64,
    pub tracer: TracerKind,
    pub port: u16,
    /// Why the run could not be measured, if it could not.
    pub error: Option<String>,
    pub workload: Option<Outcome>,
    /// The untraced run right before it.
    pub untraced_rate: Option<f64>,
    pub startup: Startup,
    pub parsed: Parsed,
    pub score: Score,
    /// The tracer's CPU time (it and its descendants) from the workload's start to drained.
    pub cpu: Duration,
    pub peak_rss: Option<u64>,
    pub programs: Vec<ProgDelta>,
    /// How the tracer's programs were found: "fdinfo" or "new since start".
    pub programs_found_by: String,
    pub floor_raw: Option<ProgDelta>,
    pub floor_classic: Option<ProgDelta>,
    pub floor_errors: Vec<String>,
    pub stats_enabled: bool,
    pub tracer_exit: String,
    pub stderr_tail: String,
    pub surroundings: Surroundings,
    /// BPF programs of others loaded during the run.
    pub foreign_programs: Vec<String>,
}

impl TracedRun {
    /// Transitions on the tracepoint during the run that were not the workload's: the
    /// raw floor program is handed every transition of the machine.
    pub fn foreign_transitions(&self) -> Option<u64> {
        let hits = self.floor_raw.as_ref()?.handed();
        (self.score.expected > 0).then(|| hits.saturating_sub(self.score.expected))
    }

    /// Why the run's numbers cannot be trusted, if they cannot: other people's
    /// connections went through the tracepoint (unfiltered peers print and lose them too),
    /// or other processes took the CPU.
    pub fn disturbed(&self) -> Option<String> {
        let mut why = Vec::new();
        if let Some(f) = self.foreign_transitions() {
            if f > self.score.expected / 100 + 100 {
                why.push(format!(
                    "{f} transitions of others went through the tracepoint"
                ));
            }
        }
        disturbances(&self.surroundings, &self.foreign_programs, why)
    }

    /// Hits of the workload's transitions that the kernel handed to no BPF program: the
    /// raw floor, an empty program on the same tracepoint, got neither a run nor a counted
    /// miss for them. A lower bound: others' transitions during the run add to the floor's
    /// count.
    pub fn unhanded_hits(&self) -> Option<u64> {
        let floor = self.floor_raw.as_ref()?;
        (self.score.expected > 0).then(|| floor.not_handed(self.score.expected))
    }

    /// Transitions missing that the tracer did not report as lost.
    pub fn silent(&self) -> u64 {
        self.score.missing().saturating_sub(self.parsed.lost)
    }

    /// Runs the kernel skipped, over all its programs.
    pub fn skips(&self) -> u64 {
        self.programs.iter().map(|p| p.recursion_misses).sum()
    }
}

pub fn untraced(bench: &mut Bench, transport: Transport, round: u64) -> Result<UntracedRun> {
    let port = bench.port();
    let dir = bench.run_dir(&format!("{}-r{round}-untraced-{port}", transport.name()))?;
    let topo = transport.topology()?;
    let start = surroundings_start(&[]);
    let mut foreign = foreign_programs(&BTreeSet::new());
    let result = (|| {
        let server = workload::start_server(&topo, &bench.shape, port, &dir)?;
        workload::run_client(&topo, &bench.shape, port, &dir, server)
    })();
    let result = match result {
        Ok(o) => Ok(o),
        Err(Error::Interrupted) => return Err(Error::Interrupted),
        Err(Error::Failed(e)) => Err(e),
    };
    let ours = result
        .as_ref()
        .map(|o| o.client_cpu + o.server_cpu)
        .unwrap_or_default();
    let surroundings = surroundings_end(start, ours);
    for p in foreign_programs(&BTreeSet::new()) {
        if !foreign.contains(&p) {
            foreign.push(p);
        }
    }
    drop(topo);
    settle()?;
    Ok(UntracedRun {
        transport,
        round,
        port,
        result,
        surroundings,
        foreign_programs: foreign,
    })
}

/// How quiet the machine was before a pair of runs.
#[derive(Clone, Debug, Default)]
pub struct Quiet {
    pub waited: Duration,
    pub transitions_per_s: f64,
    pub other_cores: f64,
    pub quiet: bool,
}

/// Waits, at most `max`, for a second in which the machine makes fewer than 200 TCP
/// state transitions (counted with the raw floor program), other processes use less than
/// a quarter of a core and no one else's BPF program is loaded (another engineer's tests
/// may be running).
pub fn wait_for_quiet(max: Duration) -> Result<Quiet> {
    let started = Instant::now();
    let (Ok(_stats), Ok(floor)) = (bpf::enable_stats(), bpf::floor_raw()) else {
        return Ok(Quiet {
            quiet: true,
            ..Quiet::default()
        });
    };
    let mut reported = false;
    loop {
        let hits0 = floor.info().map_or(0, |i| i.run_cnt);
        let (busy0, self0, t0) = (procfs::busy_cpu(), procfs::self_cpu(), Instant::now());
        sys::sleep(Duration::from_secs(1))?;
        let secs = t0.elapsed().as_secs_f64();
        let rate = floor.info().map_or(0, |i| i.run_cnt).saturating_sub(hits0) as f64 / secs;
        let other = procfs::busy_cpu()
            .saturating_sub(busy0)
            .saturating_sub(procfs::self_cpu().saturating_sub(self0));
        let cores = other.as_secs_f64() / secs;
        let own: BTreeSet<u32> = floor.info().map(|i| i.id).into_iter().collect();
        let foreign = foreign_programs(&own);
        let quiet = rate < 200.0 && cores < 0.25 && foreign.is_empty();
        if quiet || started.elapsed() >= max {
            return Ok(Quiet {
                waited: started.elapsed(),
                transitions_per_s: rate,
                other_cores: cores,
                quiet,
            });
        }
        if !reported {
            eprintln!(
                "bench: waiting for a quiet machine ({rate:.0} transitions/s, {cores:.2} cores used by others, {} BPF programs of others; at most {max:?})",
                foreign.len()
            );
            reported = true;
        }
    }
}

/// Lets the kernel finish tearing the last run's namespaces down.
fn settle() -> Result<()> {
    sys::sleep(Duration::from_millis(500))
}

fn head(path: &Path, n: usize) -> String {
    let mut buf = vec![0u8; n];
    let got = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut buf))
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..got]).into_owned()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Two transitions nobody else cares about: listen() on an ephemeral port, then close().
fn probe() {
    if let Ok(l) = std::net::TcpListener::bind("127.0.0.1:0") {
        drop(l);
    }
}

fn infos(ids: &BTreeSet<u32>) -> Vec<ProgInfo> {
    ids.iter().filter_map(|&id| bpf::prog_info(id)).collect()
}

pub fn traced(
    bench: &mut Bench,
    tracer: &Located,
    transport: Transport,
    round: u64,
    untraced_rate: Option<f64>,
) -> Result<TracedRun> {
    let port = bench.port();
    let dir = bench.run_dir(&format!(
        "{}-r{round}-{}-{port}",
        transport.name(),
        tracer.kind.name()
    ))?;
    let topo = transport.topology()?;
    let target = Target {
        port,
        server_addr: topo.server_addr,
    };
    let mut run = TracedRun {
        transport,
        round,
        tracer: tracer.kind,
        port,
        error: None,
        workload: None,
        untraced_rate,
        startup: Startup::default(),
        parsed: Parsed::default(),
        score: Score::default(),
        cpu: Duration::ZERO,
        peak_rss: None,
        programs: Vec::new(),
        programs_found_by: String::new(),
        floor_raw: None,
        floor_classic: None,
        floor_errors: Vec::new(),
        stats_enabled: false,
        tracer_exit: String::new(),
        stderr_tail: String::new(),
        surroundings: Surroundings::default(),
        foreign_programs: Vec::new(),
    };

    let stats = match bpf::enable_stats() {
        Ok(s) => Some(s),
        Err(e) => {
            run.floor_errors.push(format!("BPF_ENABLE_STATS: {e}"));
            None
        }
    };
    run.stats_enabled = stats.is_some();
    let floor_raw = bpf::floor_raw()
        .map_err(|e| run.floor_errors.push(format!("raw tracepoint floor: {e}")))
        .ok();
    let before: BTreeSet<u32> = bpf::prog_ids().into_iter().collect();

    let stdout = dir.join("tracer.out");
    let stderr = dir.join("tracer.err");
    let cmd = tracer
        .command(target, &dir)
        .map_err(|e| Error::Failed(format!("writing the tracer's script: {e}")))?;
    let mut proc = Proc::spawn(
        tracer.kind.name(),
        cmd,
        Out::File(&stdout),
        Out::File(&stderr),
    )?;

    // 2. Ready.
    let launched = proc.started;
    let waits_for_announcement = tracer.announces_after_attach();
    let ready = loop {
        let now = launched.elapsed();
        if run.startup.announced.is_none() && tracer.announced(&head(&stdout, 4096)) {
            run.startup.announced = Some(now);
        }
        // Probe until ready: bcc writes its header only when its first event is flushed.
        probe();
        if run.startup.attached.is_none() {
            let held = procfs::held_programs_of(&[proc.pid]);
            let seen = if run.stats_enabled {
                held.iter()
                    .filter_map(|&id| bpf::prog_info(id))
                    .any(|p| p.run_cnt > 0)
            } else {
                !held.is_empty()
            };
            if seen {
                run.startup.attached = Some(launched.elapsed());
            }
        }
        if let Some(attached) = run.startup.attached {
            if !waits_for_announcement {
                break attached;
            }
            if let Some(announced) = run.startup.announced {
                break announced;
            }
        }
        if let Some(exit) = proc.poll() {
            let err = std::fs::read_to_string(&stderr).unwrap_or_default();
            run.error = Some(format!(
                "{} {} during start-up: {}",
                tracer.kind.name(),
                exit.describe(),
                tail(&err, 5)
            ));
            run.tracer_exit = exit.describe();
            drop(topo);
            settle()?;
            return Ok(run);
        }
        if now > READY_TIMEOUT {
            let exit = proc.stop(libc::SIGKILL, Duration::from_secs(2));
            run.tracer_exit = exit.describe();
            run.error = Some(format!(
                "{} was not ready within {READY_TIMEOUT:?}",
                tracer.kind.name()
            ));
            drop(topo);
            settle()?;
            return Ok(run);
        }
        sys::sleep(Duration::from_millis(2))?;
    };
    run.startup.ready = ready;
    // The classic floor comes after the tracer: a classic tracepoint opened first would
    // put its probe ahead of a tracer's raw tracepoint program for every hit, an order a
    // tracer like portrace checks at start-up and adapts to; the benchmark must not
    // impose it.
    let floor_classic = bpf::floor_classic()
        .map_err(|e| {
            run.floor_errors
                .push(format!("classic tracepoint floor: {e}"))
        })
        .ok();

    // 3. Its programs and the counters before the workload.
    let mut ids = procfs::held_programs_of(&procfs::tree(proc.pid));
    run.programs_found_by = "fdinfo".into();
    if ids.is_empty() {
        let floor_ids: BTreeSet<u32> = [&floor_raw, &floor_classic]
            .iter()
            .filter_map(|f| f.as_ref()?.info())
            .map(|i| i.id)
            .collect();
        ids = bpf::prog_ids()
            .into_iter()
            .filter(|id| !before.contains(id) && !floor_ids.contains(id))
            .collect();
        run.programs_found_by = "new since start".into();
    }
    let mut ours = ids.clone();
    ours.extend(
        [&floor_raw, &floor_classic]
            .iter()
            .filter_map(|f| f.as_ref()?.info())
            .map(|i| i.id),
    );
    run.foreign_programs = foreign_programs(&ours);
    let progs_before = infos(&ids);
    let raw_before = floor_raw.as_ref().and_then(|f| f.info());
    let classic_before = floor_classic.as_ref().and_then(|f| f.info());
    let cpu_before = procfs::tree_cpu(proc.pid);
    let around = surroundings_start(&procfs::tree(proc.pid));

    // 4. The workload, then the drain.
    let workload = (|| {
        let server = workload::start_server(&topo, &bench.shape, port, &dir)?;
        workload::run_client(&topo, &bench.shape, port, &dir, server)
    })();
    match workload {
        Ok(o) => run.workload = Some(o),
        Err(Error::Interrupted) => return Err(Error::Interrupted),
        Err(Error::Failed(e)) => run.error = Some(format!("workload: {e}")),
    }
    let drain_start = Instant::now();
    let mut last = (file_len(&stdout), Instant::now());
    while drain_start.elapsed() < DRAIN_TIMEOUT && proc.poll().is_none() {
        sys::sleep(Duration::from_millis(50))?;
        let len = file_len(&stdout);
        if len != last.0 {
            last = (len, Instant::now());
        } else if last.1.elapsed() >= QUIET {
            break;
        }
    }

    // 5. The counters after.
    for p in foreign_programs(&ours) {
        if !run.foreign_programs.contains(&p) {
            run.foreign_programs.push(p);
        }
    }
    run.cpu = procfs::tree_cpu(proc.pid).saturating_sub(cpu_before);
    run.peak_rss = procfs::peak_rss(proc.pid);
    let progs_after = infos(&ids);
    for after in &progs_after {
        let before = progs_before
            .iter()
            .find(|b| b.id == after.id)
            .cloned()
            .unwrap_or_default();
        run.programs.push(ProgDelta::between(
            &before,
            after,
            tracer.on_state_tracepoint(after),
        ));
    }
    let delta = |before: Option<ProgInfo>, after: Option<ProgInfo>| match (before, after) {
        (Some(b), Some(a)) => Some(ProgDelta::between(&b, &a, true)),
        _ => None,
    };
    run.floor_raw = delta(raw_before, floor_raw.as_ref().and_then(|f| f.info()));
    run.floor_classic = delta(
        classic_before,
        floor_classic.as_ref().and_then(|f| f.info()),
    );
    let workload_cpu = run
        .workload
        .as_ref()
        .map(|o| o.client_cpu + o.server_cpu)
        .unwrap_or_default();
    run.surroundings = surroundings_end(around, workload_cpu + run.cpu);

    // 6. Stop it and read what it wrote.
    let exit = proc.stop(libc::SIGINT, Duration::from_secs(20));
    run.tracer_exit = exit.describe();
    drop(floor_raw);
    drop(floor_classic);
    drop(stats);
    let err_text = std::fs::read_to_string(&stderr).unwrap_or_default();
    run.stderr_tail = tail(&err_text, 5);
    match tracers::parse(tracer.kind, &stdout, &err_text, target) {
        Ok(p) => run.parsed = p,
        Err(e) => {
            run.error = run
                .error
                .take()
                .or(Some(format!("reading the tracer's output: {e}")))
        }
    }
    if run.workload.is_some() {
        run.score = truth::score(&truth::expected(bench.shape.count), &run.parsed.kinds);
    }
    if !bench.keep_raw {
        let _ = std::fs::remove_file(&stdout);
    }
    drop(topo);
    settle()?;
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floor(runs: u64, misses: u64) -> ProgDelta {
        ProgDelta { run_cnt: runs, recursion_misses: misses, ..ProgDelta::default() }
    }

    #[test]
    fn a_counted_miss_is_a_hit_the_program_was_handed() {
        // A round where the floor ran 199,934 times and missed 68 runs it was handed
        // while already running: every hit reached it.
        assert_eq!(floor(199_934, 68).handed(), 200_002);
        assert_eq!(floor(199_934, 68).not_handed(200_002), 0);
        // Rounds where hits reached no program at all.
        assert_eq!(floor(199_856, 0).not_handed(200_002), 146);
        assert_eq!(floor(199_892, 54).not_handed(200_002), 56);
        // Others' transitions can push the count past the workload's.
        assert_eq!(floor(12, 1).not_handed(10), 0);
        assert_eq!(floor(u64::MAX, 1).handed(), u64::MAX);
    }
}
