//! Incident alerts: this module owns the [`Detectors`] engine that raises [`Alert`]s
//! (what fired, when, about what, for which process, with its evidence; the record itself
//! is defined with the others, in [`crate::record::alert`]) from the same records every
//! output consumes: the start-up inventory ([`Detectors::on_socket`]), transitions
//! ([`Detectors::on_transition`]), process and network-namespace details
//! ([`Detectors::on_process`], [`Detectors::on_netns`]), the passing of time
//! ([`Detectors::tick`]) and the end of the trace ([`Detectors::finish`]).
//! One file per detector: [`scan`], [`new_listener`], [`owner`] (unexpected owners),
//! [`close_wait`], [`time_wait`], [`handshake`]; their thresholds come from [`rules`], and
//! the windows that scan, TIME_WAIT and handshake rates are counted over are [`window`]'s
//! runs of events (exact to within 1/64 of the window).
//!
//! The engine is pure and deterministic: it reads no clock and no file, only the records'
//! own timestamps (the kernel's monotonic nanoseconds), so a recording fed to it gives the
//! alerts the live run gave. Time-based checks (a CLOSE_WAIT growing old) run on a fixed
//! one-second grid of those timestamps, whoever calls [`Detectors::tick`] and how often.
//!
//! Alerts are deduplicated per kind and [`Subject`] (a process, a listener, a destination,
//! a peer): a subject alerts once, then again only after [`rules::Rules::repeat_ns`] if the
//! condition still holds. In between, its evidence keeps being updated (at most once a
//! second of trace time) in the [`Logged`] entry the end-of-run summary shows.

pub mod close_wait;
pub mod handshake;
pub mod new_listener;
pub mod owner;
pub mod rules;
pub mod scan;
pub mod section;
pub mod sink;
pub mod time_wait;
pub mod window;

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt};
use std::io::{self, Write};

use crate::record::{Comm, NetnsInfo, Owner, ProcessInfo, SocketRecord, Timestamp, Transition};
use rules::Rules;

pub use crate::record::alert::{Alert, AlertKind, AlertProcess, Evidence, Severity, Subject};
use crate::record::alert::endpoint;

/// How often time-based checks run, on a grid of trace time.
pub const CHECK_GRID_NS: u64 = 1_000_000_000;
/// How often costly evidence (a scan's) is refreshed between two alerts.
pub const REFRESH_NS: u64 = 1_000_000_000;
/// Emitted alerts kept for the report; later ones are counted, not kept.
const HISTORY_MAX: usize = 10_000;
/// The kernel's default `net.ipv4.ip_local_port_range`.
pub const DEFAULT_PORT_RANGE: (u16, u16) = (32768, 60999);

/// A subject's alerts over the run, for the summary.
#[derive(Clone, Debug, PartialEq)]
pub struct Logged {
    /// The first alert emitted.
    pub first: Alert,
    /// The latest evidence (emitted or not).
    pub latest: Alert,
    /// How many alerts were emitted.
    pub fired: u32,
    last_emit_ns: u64,
    last_update_ns: u64,
}

/// The ports connect() picks from in a namespace, and where portrace learned them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub low: u16,
    pub high: u16,
    /// Where the range comes from, for the alert ("netns 4026531840", "this host's
    /// net.ipv4.ip_local_port_range", "the kernel's default").
    pub source: String,
}

impl PortRange {
    pub fn size(&self) -> u64 {
        u64::from(self.high.saturating_sub(self.low)) + 1
    }

    /// The range used for a recording without namespace details: the kernel's default.
    pub fn kernel_default() -> PortRange {
        PortRange {
            low: DEFAULT_PORT_RANGE.0,
            high: DEFAULT_PORT_RANGE.1,
            source: "the kernel's default (the recording does not say)".into(),
        }
    }

    /// Parses the text of /proc/sys/net/ipv4/ip_local_port_range (`32768\t60999`).
    pub fn parse_proc(text: &str, source: &str) -> Option<PortRange> {
        let mut it = text.split_whitespace().map(|w| w.parse::<u16>());
        let (Some(Ok(low)), Some(Ok(high)), None) = (it.next(), it.next(), it.next()) else {
            return None;
        };
        (low <= high).then(|| PortRange { low, high, source: source.into() })
    }

    /// This host's range, read from /proc (live runs), or the kernel's default.
    pub fn of_this_host() -> PortRange {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|t| PortRange::parse_proc(&t, "this host's net.ipv4.ip_local_port_range"))
            .unwrap_or_else(|| PortRange { source: "the kernel's default".into(), ..PortRange::kernel_default() })
    }
}

/// What detectors share: the rules, what is known of processes and namespaces, and the
/// log that deduplicates their alerts.
pub struct Ctx {
    pub rules: Rules,
    fallback_range: PortRange,
    processes: HashMap<u32, ProcessInfo>,
    ranges: HashMap<u32, (u16, u16)>,
    log: BTreeMap<(AlertKind, Subject), Logged>,
    /// Emission order of the log's keys (first emission).
    order: Vec<(AlertKind, Subject)>,
    history: Vec<Alert>,
    fired: u64,
}

impl Ctx {
    fn new(rules: Rules, fallback_range: PortRange) -> Ctx {
        Ctx {
            rules,
            fallback_range,
            processes: HashMap::new(),
            ranges: HashMap::new(),
            log: BTreeMap::new(),
            order: Vec::new(),
            history: Vec::new(),
            fired: 0,
        }
    }

    /// The process `pid` with command `comm`, with its details when known.
    pub fn process(&self, pid: u32, comm: Comm) -> AlertProcess {
        AlertProcess { pid, comm, info: self.processes.get(&pid).cloned() }
    }

    /// The owner as an alert's process.
    pub fn owner_process(&self, owner: Option<&Owner>) -> Option<AlertProcess> {
        owner.map(|o| self.process(o.pid, o.comm))
    }

    /// The file name of a process's executable, when known.
    pub fn exe_name(&self, pid: u32) -> Option<&str> {
        let exe = self.processes.get(&pid)?.exe.as_deref()?;
        let exe = exe.strip_suffix(" (deleted)").unwrap_or(exe);
        exe.rsplit('/').next()
    }

    /// The local port range of a network namespace.
    /// The number of ports in [`Ctx::port_range`], without building its description.
    pub fn port_range_size(&self, netns: u32) -> u64 {
        match self.ranges.get(&netns) {
            Some(&(low, high)) => u64::from(high.saturating_sub(low)) + 1,
            None => self.fallback_range.size(),
        }
    }

    pub fn port_range(&self, netns: u32) -> PortRange {
        match self.ranges.get(&netns) {
            Some(&(low, high)) => PortRange { low, high, source: format!("netns {netns}") },
            None => self.fallback_range.clone(),
        }
    }

    /// Whether a detector should build its alert for `subject` now: the subject has not
    /// alerted yet, may alert again, or its evidence is due for a refresh.
    /// Detectors whose alerts are costly to build pass a `refresh_ns` to update the
    /// evidence at most that often, and refresh it at the end themselves.
    pub fn due(&self, kind: AlertKind, subject: &Subject, now_ns: u64, refresh_ns: u64) -> bool {
        if !self.rules.enabled(kind) {
            return false;
        }
        match self.log.get(&(kind, *subject)) {
            None => true,
            Some(l) => {
                now_ns >= l.last_emit_ns.saturating_add(self.rules.repeat_ns)
                    || now_ns >= l.last_update_ns.saturating_add(refresh_ns)
            }
        }
    }

    /// The earliest time after `after_ns` at which a subject of `kind` that alerted may
    /// alert again.
    pub fn next_repeat(&self, kind: AlertKind, after_ns: u64) -> Option<u64> {
        self.log
            .range((kind, Subject::Process(0))..)
            .take_while(|((k, _), _)| *k == kind)
            .map(|(_, l)| l.last_emit_ns.saturating_add(self.rules.repeat_ns))
            .filter(|&t| t > after_ns)
            .min()
    }

    /// Whether `subject` alerted already.
    pub fn alerted(&self, kind: AlertKind, subject: &Subject) -> bool {
        self.log.contains_key(&(kind, *subject))
    }

    /// Replaces the latest evidence of a subject that alerted already, emitting nothing.
    pub fn update(&mut self, alert: Alert) {
        if let Some(l) = self.log.get_mut(&(alert.kind, alert.subject)) {
            l.last_update_ns = l.last_update_ns.max(alert.time.mono_ns);
            l.latest = alert;
        }
    }

    /// Takes a detector's alert: emits it into `out` unless its subject alerted less than
    /// `repeat` ago, and keeps its evidence as the subject's latest either way.
    pub fn raise(&mut self, alert: Alert, out: &mut Vec<Alert>) {
        if !self.rules.enabled(alert.kind) {
            return;
        }
        let now = alert.time.mono_ns;
        let key = (alert.kind, alert.subject);
        let emit = match self.log.get_mut(&key) {
            None => {
                self.order.push(key);
                self.log.insert(
                    key,
                    Logged { first: alert.clone(), latest: alert.clone(), fired: 1, last_emit_ns: now, last_update_ns: now },
                );
                true
            }
            Some(l) => {
                let again = now >= l.last_emit_ns.saturating_add(self.rules.repeat_ns);
                if again {
                    l.fired += 1;
                    l.last_emit_ns = now;
                }
                l.last_update_ns = now;
                l.latest = alert.clone();
                again
            }
        };
        if emit {
            self.fired += 1;
            if self.history.len() < HISTORY_MAX {
                self.history.push(alert.clone());
            }
            out.push(alert);
        }
    }
}

/// The timestamp of `mono_ns`, given a timestamp of the same clock.
pub fn at(reference: Timestamp, mono_ns: u64) -> Timestamp {
    let delta = i128::from(mono_ns) - i128::from(reference.mono_ns);
    // Saturating: a recording may claim any wall-clock time.
    Timestamp { mono_ns, unix_ns: reference.unix_ns.saturating_add(delta) }
}

/// Repeat points (a process in CLOSE_WAIT alerting again) checked within one gap between
/// records at most; later ones in the same gap are skipped, and counted.
pub const REPEAT_POINTS_MAX: usize = 100;

/// The first grid point after `t`, if one is representable.
fn grid_after(t: u64) -> Option<u64> {
    (t / CHECK_GRID_NS).checked_add(1)?.checked_mul(CHECK_GRID_NS)
}

/// The first grid point at or after `t`, if one is representable.
fn ceil_grid(t: u64) -> Option<u64> {
    t.div_ceil(CHECK_GRID_NS).checked_mul(CHECK_GRID_NS)
}

/// Where the grid stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NextCheck {
    /// No time seen yet.
    Unset,
    At(u64),
    /// Past the last representable grid point.
    Never,
}

/// The detectors, fed every record of a trace in order.
pub struct Detectors {
    ctx: Ctx,
    scan: scan::Scan,
    new_listener: new_listener::NewListener,
    owner: owner::Owners,
    close_wait: close_wait::CloseWait,
    time_wait: time_wait::TimeWait,
    handshake: handshake::Handshake,
    /// The next grid point at which time-based checks run.
    next_check: NextCheck,
    /// Grid points checked so far: the work [`Detectors::tick`] did.
    checks: u64,
    /// Gaps whose repeats were cut at [`REPEAT_POINTS_MAX`].
    repeats_cut: u64,
    /// Visit every grid point (the reference behaviour the tests compare with).
    step_every_point: bool,
    /// The latest time seen.
    latest: Option<Timestamp>,
    finished: bool,
}

impl Detectors {
    /// An engine with `rules`. `fallback_range` is the local port range used for
    /// namespaces no [`NetnsInfo`] describes.
    pub fn new(rules: Rules, fallback_range: PortRange) -> Detectors {
        Detectors {
            ctx: Ctx::new(rules, fallback_range),
            scan: scan::Scan::default(),
            new_listener: new_listener::NewListener,
            owner: owner::Owners::default(),
            close_wait: close_wait::CloseWait::default(),
            time_wait: time_wait::TimeWait::default(),
            handshake: handshake::Handshake::default(),
            next_check: NextCheck::Unset,
            checks: 0,
            repeats_cut: 0,
            step_every_point: false,
            latest: None,
            finished: false,
        }
    }

    pub fn rules(&self) -> &Rules {
        &self.ctx.rules
    }

    /// A socket of the start-up inventory.
    pub fn on_socket(&mut self, s: &SocketRecord, out: &mut Vec<Alert>) {
        self.tick(s.time, out);
        self.owner.on_socket(s, &mut self.ctx, out);
        self.close_wait.on_socket(s);
        self.time_wait.on_socket(s);
    }

    pub fn on_transition(&mut self, t: &Transition, out: &mut Vec<Alert>) {
        self.tick(t.time, out);
        let ctx = &mut self.ctx;
        self.scan.on_transition(t, ctx, out);
        self.new_listener.on_transition(t, ctx, out);
        self.owner.on_transition(t, ctx, out);
        self.close_wait.on_transition(t);
        self.time_wait.on_transition(t, ctx, out);
        self.handshake.on_transition(t, ctx, out);
    }

    pub fn on_process(&mut self, p: &ProcessInfo) {
        self.ctx.processes.insert(p.pid, p.clone());
    }

    pub fn on_netns(&mut self, n: &NetnsInfo) {
        if let Some(range) = n.port_range {
            self.ctx.ranges.insert(n.netns, range);
        }
    }

    /// Time has passed up to `now`: runs the time-based checks at the grid points reached
    /// since the last call, so that the checks see the same records at the same grid
    /// points however often this is called.
    ///
    /// Between two records nothing changes but the clock, so only some grid points can
    /// do anything: the first one reached, those where a socket's CLOSE_WAIT reaches the
    /// threshold, those where a process that alerted may alert again (`repeat`), and the
    /// last one before `now` (the latest evidence, and what the windows of the other
    /// detectors forget, which only grows with time). Those are the points visited, found
    /// directly, never by stepping over the grid; the others would only have rewritten
    /// evidence the last point rewrites again. So a call does at most
    /// [`REPEAT_POINTS_MAX`] + 2 checks plus one per socket newly over the threshold,
    /// whatever the gap: past that many repeats the engine jumps to the last point and
    /// counts the gap as cut ([`Detectors::repeats_cut`]). Times near `u64::MAX` stop the
    /// grid at its last representable point.
    pub fn tick(&mut self, now: Timestamp, out: &mut Vec<Alert>) {
        if self.finished {
            return;
        }
        if self.latest.is_none_or(|l| now.mono_ns > l.mono_ns) {
            self.latest = Some(now);
        }
        let first = match self.next_check {
            NextCheck::Unset => grid_after(now.mono_ns),
            NextCheck::At(next) => Some(next),
            NextCheck::Never => None,
        };
        let Some(mut next) = first else {
            self.next_check = NextCheck::Never;
            return;
        };
        if next > now.mono_ns {
            self.next_check = NextCheck::At(next);
            return;
        }
        // The last grid point not after `now`: at least `next`, which is a grid point.
        let last = now.mono_ns / CHECK_GRID_NS * CHECK_GRID_NS;
        let mut repeats = 0usize;
        loop {
            self.check(at(now, next), out);
            self.checks += 1;
            if next >= last || self.step_every_point {
                if next >= last {
                    break;
                }
                next += CHECK_GRID_NS;
                continue;
            }
            let after = self.ctx.rules.close_wait.after_ns;
            let oldest_due = self.close_wait.next_due(after).unwrap_or(u64::MAX);
            let following = next + CHECK_GRID_NS;
            next = if oldest_due > following {
                // Nothing is over the threshold yet: the next point that can do anything
                // is the one where the oldest socket gets there.
                match ceil_grid(oldest_due) {
                    Some(point) if point <= last => point,
                    _ => break,
                }
            } else {
                let crossing = self.close_wait.next_crossing(next, after).and_then(ceil_grid);
                let repeat = self.ctx.next_repeat(AlertKind::CloseWaitLeak, next).and_then(ceil_grid);
                match (crossing, repeat) {
                    (Some(c), _) if c <= last && repeat.is_none_or(|r| c <= r) => c.max(following),
                    (_, Some(r)) if r <= last => {
                        repeats += 1;
                        if repeats > REPEAT_POINTS_MAX {
                            self.repeats_cut += 1;
                            last
                        } else {
                            r.max(following)
                        }
                    }
                    _ => last,
                }
            };
        }
        self.next_check = match grid_after(last) {
            Some(point) => NextCheck::At(point),
            None => NextCheck::Never,
        };
    }

    /// How many times a gap between two records held more than [`REPEAT_POINTS_MAX`]
    /// repeat points, so that the repeats in it past those were not emitted.
    pub fn repeats_cut(&self) -> u64 {
        self.repeats_cut
    }

    /// The trace ended at `end`: the grid checks up to `end` run, then the time-based
    /// checks once more at `end` itself. Later calls do nothing.
    pub fn finish(&mut self, end: Timestamp, out: &mut Vec<Alert>) {
        if self.finished {
            return;
        }
        self.tick(end, out);
        self.check(end, out);
        self.scan.refresh(&mut self.ctx);
        self.time_wait.refresh(&mut self.ctx, end);
        self.finished = true;
    }

    fn check(&mut self, now: Timestamp, out: &mut Vec<Alert>) {
        self.close_wait.check(now, &mut self.ctx, out);
        self.scan.expire(now.mono_ns, &self.ctx.rules);
        self.handshake.expire(now.mono_ns, &self.ctx.rules);
        self.time_wait.expire(now.mono_ns, &self.ctx.rules);
    }

    /// Alerts emitted so far.
    pub fn fired(&self) -> u64 {
        self.ctx.fired
    }

    /// Every subject that alerted, in the order of its first alert.
    pub fn logged(&self) -> impl Iterator<Item = &Logged> {
        self.ctx.order.iter().filter_map(|k| self.ctx.log.get(k))
    }

    /// The alerts emitted, in order (the first [`HISTORY_MAX`]).
    pub fn history(&self) -> &[Alert] {
        &self.ctx.history
    }

    /// The end-of-run summary of the alerts, for stderr.
    pub fn write_summary(&self, w: &mut dyn Write) -> io::Result<()> {
        write_summary(w, self.fired(), self.logged())?;
        if self.repeats_cut > 0 {
            writeln!(
                w,
                "  (in {} long {} between records, repeats of a CLOSE_WAIT alert past the first \
                 {REPEAT_POINTS_MAX} were not emitted; the latest evidence is kept)",
                self.repeats_cut,
                if self.repeats_cut == 1 { "gap" } else { "gaps" }
            )?;
        }
        Ok(())
    }
}

/// `N alerts`, then one line per subject with its latest evidence.
pub fn write_summary<'a>(
    w: &mut dyn Write,
    fired: u64,
    logged: impl Iterator<Item = &'a Logged>,
) -> io::Result<()> {
    let logged: Vec<&Logged> = logged.collect();
    if logged.is_empty() {
        return writeln!(w, "  alerts: none");
    }
    writeln!(
        w,
        "  ALERTS: {fired} fired about {} {}",
        logged.len(),
        if logged.len() == 1 { "subject" } else { "subjects" }
    )?;
    for l in logged.iter().take(SUMMARY_LINES) {
        let a = &l.latest;
        let times = if l.fired > 1 { format!(" ({} times)", l.fired) } else { String::new() };
        let mut line = Vec::new();
        crate::output::push_printable(
            &mut line,
            &format!("  ALERT {} {} [{}]{times}: {}", a.severity.label(), a.kind, a.subject, a.summary),
        );
        line.push(b'\n');
        w.write_all(&line)?;
    }
    if logged.len() > SUMMARY_LINES {
        writeln!(
            w,
            "  ... and {} more subjects (`--format json` or `portrace report` has them all)",
            logged.len() - SUMMARY_LINES
        )?;
    }
    Ok(())
}

/// Subjects listed in the end-of-run summary at most.
const SUMMARY_LINES: usize = 20;

/// Why a command that found alerts exits with status 3 under `--fail-on-alert`.
#[derive(Debug, thiserror::Error)]
#[error("{0} alert(s) fired (--fail-on-alert)")]
pub struct Fired(pub u64);

/// The exit status of a run that ended with [`Fired`].
pub const FIRED_EXIT_CODE: u8 = 3;

/// Names of shells, for the unexpected-owner detector.
pub const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "mksh", "pdksh", "fish", "csh", "tcsh", "ash", "busybox"];

/// Whether `name` is a shell or a script interpreter (a version suffix allowed:
/// `python3.11`, `perl5.36`, `lua5.4`).
pub fn shell_or_interpreter(name: &str) -> Option<&'static str> {
    if SHELLS.contains(&name) {
        return Some("a shell");
    }
    const INTERPRETERS: &[&str] =
        &["python", "perl", "ruby", "php", "node", "nodejs", "lua", "luajit", "tclsh", "pwsh", "deno", "bun", "irb", "jrunscript", "osascript", "Rscript"];
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    INTERPRETERS.contains(&base).then_some("an interpreter")
}

#[cfg(test)]
pub(crate) mod tests;
