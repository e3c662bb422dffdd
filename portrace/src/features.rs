//! What a run can and cannot do on this kernel: this module owns the list of portrace's
//! features (the live timeline and everything optional around it), each one's state (on,
//! or off with the reason, and for a feature on, what it lacks here), and the words every
//! reader of a run sees them in: the text output's header, the end-of-run summary, the
//! JSON `start` record, a recording's header and `portrace doctor`. The loader decides the
//! states; everything else only shows them. Pure: it reads nothing and loads nothing.

use std::io::{self, Write};

/// One thing portrace does that depends on what the kernel gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Feature {
    /// Every transition as it happens: the main state program (or, without BTF, the
    /// classic one). Without it portrace cannot run at all.
    LiveTimeline,
    /// Each socket's owning process, not only the task on the CPU.
    Owners,
    /// Connections followed into their timewait sockets.
    TimeWait,
    /// A second program that records what the kernel skips the main one for.
    Backup,
    /// An ftrace count of the tracepoint's hits, to catch hits no program saw.
    HitCount,
    /// Why each connection ended (refused, reset, timed out), from `sk_err`.
    CloseReasons,
    /// `portrace -- CMD`: tracing one command and the processes it starts.
    Command,
    /// Programs started during the trace noticed at once (exec).
    ExecNotices,
}

impl Feature {
    pub const ALL: [Feature; 8] = [
        Feature::LiveTimeline,
        Feature::Owners,
        Feature::TimeWait,
        Feature::Backup,
        Feature::HitCount,
        Feature::CloseReasons,
        Feature::Command,
        Feature::ExecNotices,
    ];

    /// The name people read (`portrace doctor`, the text header, the summary).
    pub fn name(self) -> &'static str {
        match self {
            Feature::LiveTimeline => "live timeline",
            Feature::Owners => "owners",
            Feature::TimeWait => "TIME_WAIT",
            Feature::Backup => "backup",
            Feature::HitCount => "hit count",
            Feature::CloseReasons => "close reasons",
            Feature::Command => "-- CMD",
            Feature::ExecNotices => "exec notices",
        }
    }

    /// The key in the JSON `start` record's `features` object.
    pub fn key(self) -> &'static str {
        match self {
            Feature::LiveTimeline => "live_timeline",
            Feature::Owners => "owners",
            Feature::TimeWait => "time_wait",
            Feature::Backup => "backup",
            Feature::HitCount => "hit_count",
            Feature::CloseReasons => "close_reasons",
            Feature::Command => "command",
            Feature::ExecNotices => "exec_notices",
        }
    }

    /// The feature's number in a recording's header (docs/trace-format.md). Never reuse
    /// or renumber one: recordings keep them.
    pub fn code(self) -> u8 {
        match self {
            Feature::LiveTimeline => 1,
            Feature::Owners => 2,
            Feature::TimeWait => 3,
            Feature::Backup => 4,
            Feature::HitCount => 5,
            Feature::CloseReasons => 6,
            Feature::Command => 7,
            Feature::ExecNotices => 8,
        }
    }

    pub fn from_code(code: u8) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.code() == code)
    }
}

/// A feature's state in a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    pub on: bool,
    /// Off: why. On: what it lacks on this kernel, if anything.
    pub reason: Option<String>,
}

impl State {
    /// Whether a reader must be told: the feature is off, or works only in part.
    pub fn degraded(&self) -> bool {
        !self.on || self.reason.is_some()
    }
}

/// The state of each feature that applies to a run, in [`Feature::ALL`]'s order. Empty
/// when nothing is known (a snapshot, which loads no program; a recording made before
/// portrace wrote features). `-- CMD` is listed only for a run that traces a command, or
/// by `portrace doctor`, which lists every feature.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Features {
    states: Vec<(Feature, State)>,
}

impl Features {
    /// Sets `feature` on, with nothing missing. A feature set again takes the new state.
    pub fn on(&mut self, feature: Feature) {
        self.set(feature, State { on: true, reason: None });
    }

    /// Sets `feature` on, but lacking `what` on this kernel.
    pub fn limited(&mut self, feature: Feature, what: impl Into<String>) {
        self.set(feature, State { on: true, reason: Some(what.into()) });
    }

    /// Sets `feature` off, because of `why`.
    pub fn off(&mut self, feature: Feature, why: impl Into<String>) {
        self.set(feature, State { on: false, reason: Some(why.into()) });
    }

    pub fn set(&mut self, feature: Feature, state: State) {
        match self.states.iter_mut().find(|(f, _)| *f == feature) {
            Some((_, s)) => *s = state,
            None => {
                self.states.push((feature, state));
                self.states.sort_by_key(|&(f, _)| f);
            }
        }
    }

    pub fn get(&self, feature: Feature) -> Option<&State> {
        self.states.iter().find(|(f, _)| *f == feature).map(|(_, s)| s)
    }

    /// Whether `feature` is listed and on.
    pub fn is_on(&self, feature: Feature) -> bool {
        self.get(feature).is_some_and(|s| s.on)
    }

    pub fn iter(&self) -> impl Iterator<Item = (Feature, &State)> {
        self.states.iter().map(|(f, s)| (*f, s))
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// The features a reader must be told about: off, or on in part.
    pub fn degraded(&self) -> impl Iterator<Item = (Feature, &State)> {
        self.iter().filter(|(_, s)| s.degraded())
    }

    /// One line per degraded feature, for people: `TIME_WAIT off: <why>` or `TIME_WAIT
    /// limited: <what it lacks>`. Control characters in reasons are shown as `?`.
    pub fn notes(&self) -> Vec<String> {
        self.degraded()
            .map(|(f, s)| {
                let how = if s.on { "limited" } else { "off" };
                format!("{} {how}: {}", f.name(), printable(s.reason.as_deref().unwrap_or("")))
            })
            .collect()
    }

    /// The end-of-run summary's lines (stderr, after the totals): one per degraded
    /// feature, none when the run had everything.
    pub fn write_summary(&self, w: &mut impl Write) -> io::Result<()> {
        for note in self.notes() {
            writeln!(w, "  {note}")?;
        }
        Ok(())
    }
}

/// What the loader found, each part loaded (and, in a live run, attached) or why not.
/// The inputs of [`decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// The socket offsets from the kernel's BTF.
    pub sock: Result<(), String>,
    /// The main (raw tracepoint) state program.
    pub main: Result<(), String>,
    /// The classic state program, in either variant.
    pub classic: Result<(), String>,
    /// The timewait timer's handler address (asked of the kernel, or read from /proc/kallsyms).
    pub tw_handler: Result<(), String>,
    /// The three timer programs.
    pub timers: Result<(), String>,
    /// The `skb:kfree_skb` program (an orphan's FIN_WAIT2 to TIME_WAIT).
    pub packets: Result<(), String>,
    /// The exec program.
    pub exec: Result<(), String>,
    /// With `-- CMD` (always for `portrace doctor`): the new-task program, then inside
    /// whether exited processes are forgotten.
    pub command: Option<Result<Result<(), String>, String>>,
}

/// Which features the loader's findings leave on, and why each one off is off. The hit
/// count is no program's: the live run adds it once it has tried.
pub fn decide(f: &Facts) -> Features {
    let mut out = Features::default();
    let core = match &f.sock {
        Ok(()) => f.main.clone(),
        Err(_) => f.classic.clone(),
    };
    match &core {
        Ok(()) => out.on(Feature::LiveTimeline),
        Err(why) => out.off(Feature::LiveTimeline, why.clone()),
    }
    match (&f.sock, &core) {
        (_, Err(_)) => {
            for feature in [Feature::Owners, Feature::Backup, Feature::CloseReasons, Feature::TimeWait] {
                out.off(feature, "the live timeline is off");
            }
        }
        (Err(why), Ok(())) => {
            let why = format!("no kernel BTF ({why})");
            out.limited(
                Feature::Owners,
                format!("{why}: owners are known only from the owner's own system calls"),
            );
            out.off(Feature::CloseReasons, format!("{why}: the socket's error cannot be read"));
            out.off(Feature::TimeWait, format!("{why}: timewait sockets cannot be followed"));
            out.off(
                Feature::Backup,
                format!(
                    "{why}: the classic program is the main one, so transitions the kernel skips under \
                     heavy load are counted as lost, not recovered"
                ),
            );
        }
        (Ok(()), Ok(())) => {
            out.on(Feature::Owners);
            match &f.classic {
                Ok(()) => out.on(Feature::Backup),
                Err(why) => out.off(
                    Feature::Backup,
                    format!("{why}: transitions the kernel skips under heavy load are counted as lost, not recovered"),
                ),
            }
            match f.tw_handler.clone().and_then(|()| f.timers.clone()) {
                Ok(()) => match &f.packets {
                    Ok(()) => out.on(Feature::TimeWait),
                    Err(why) => out.limited(
                        Feature::TimeWait,
                        format!(
                            "an orphaned connection's move from FIN_WAIT2 to TIME_WAIT is shown only when its \
                             timewait socket ends ({why})"
                        ),
                    ),
                },
                Err(why) => out.off(Feature::TimeWait, why),
            }
            if out.is_on(Feature::TimeWait) {
                out.on(Feature::CloseReasons);
            } else {
                out.limited(
                    Feature::CloseReasons,
                    "without TIME_WAIT, a normal active close cannot be told from an abort in FIN_WAIT2",
                );
            }
        }
    }
    match &f.command {
        None => {}
        Some(Err(why)) => out.off(Feature::Command, why.clone()),
        Some(Ok(Ok(()))) => out.on(Feature::Command),
        Some(Ok(Err(why))) => out.limited(
            Feature::Command,
            format!("{why}: the command's exited processes stay in the traced set until their pid is reused"),
        ),
    }
    match &f.exec {
        Ok(()) => out.on(Feature::ExecNotices),
        Err(why) => out.off(
            Feature::ExecNotices,
            format!(
                "{why}: a process that exits within a few milliseconds of its connection may be named by its \
                 command alone"
            ),
        ),
    }
    out
}

/// `text` with every control character (C0, DEL, C1) replaced by `?`, so that bytes from
/// the kernel or a file never reach a terminal raw.
pub fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_distinct() {
        for f in Feature::ALL {
            assert_eq!(Feature::from_code(f.code()), Some(f));
        }
        assert_eq!(Feature::from_code(0), None);
        assert_eq!(Feature::from_code(200), None);
        let mut keys: Vec<_> = Feature::ALL.iter().map(|f| f.key()).collect();
        keys.dedup();
        assert_eq!(keys.len(), Feature::ALL.len());
    }

    #[test]
    fn states_keep_feature_order_and_the_last_word() {
        let mut f = Features::default();
        f.off(Feature::TimeWait, "no timer programs");
        f.on(Feature::LiveTimeline);
        f.limited(Feature::Owners, "only from system calls");
        f.on(Feature::TimeWait);
        let order: Vec<_> = f.iter().map(|(f, _)| f).collect();
        assert_eq!(order, [Feature::LiveTimeline, Feature::Owners, Feature::TimeWait]);
        assert!(f.is_on(Feature::TimeWait));
        assert!(!f.is_on(Feature::Backup), "a feature not listed is not on");
        assert_eq!(f.notes(), ["owners limited: only from system calls"]);
    }

    fn facts() -> Facts {
        Facts {
            sock: Ok(()),
            main: Ok(()),
            classic: Ok(()),
            tw_handler: Ok(()),
            timers: Ok(()),
            packets: Ok(()),
            exec: Ok(()),
            command: None,
        }
    }

    #[test]
    fn everything_loaded_is_everything_on() {
        let f = decide(&facts());
        assert_eq!(f.degraded().count(), 0, "{:?}", f.notes());
        assert!(f.get(Feature::Command).is_none(), "-- CMD is listed only when asked for");
        assert!(f.get(Feature::HitCount).is_none(), "the hit count is the live run's to add");
    }

    #[test]
    fn an_optional_rejection_degrades_only_its_feature() {
        let timers = "timer_start did not load: the kernel's verifier rejected it: combined stack size of 2 calls is 560. Too large";
        let f = decide(&Facts { timers: Err(timers.into()), command: Some(Ok(Err("no group_dead".into()))), ..facts() });
        assert!(f.is_on(Feature::LiveTimeline) && f.is_on(Feature::Owners) && f.is_on(Feature::Backup));
        assert_eq!(f.get(Feature::TimeWait), Some(&State { on: false, reason: Some(timers.into()) }));
        assert!(f.get(Feature::CloseReasons).is_some_and(|s| s.on && s.reason.is_some()));
        assert!(f.get(Feature::Command).is_some_and(|s| s.on && s.reason.as_deref().unwrap().starts_with("no group_dead")));
    }

    #[test]
    fn without_btf_the_classic_program_is_the_core() {
        let f = decide(&Facts { sock: Err("no /sys/kernel/btf/vmlinux".into()), main: Err("not used".into()), ..facts() });
        assert!(f.is_on(Feature::LiveTimeline));
        assert!(f.get(Feature::Owners).is_some_and(|s| s.on && s.reason.as_deref().unwrap().contains("no kernel BTF")));
        for off in [Feature::TimeWait, Feature::Backup, Feature::CloseReasons] {
            assert!(!f.is_on(off), "{off:?}");
        }
        let dead = decide(&Facts { sock: Err("no BTF".into()), classic: Err("rejected".into()), ..facts() });
        assert_eq!(dead.get(Feature::LiveTimeline), Some(&State { on: false, reason: Some("rejected".into()) }));
    }

    #[test]
    fn summary_lines_say_what_is_off_and_hide_control_bytes() {
        let mut f = Features::default();
        f.on(Feature::LiveTimeline);
        f.off(Feature::Backup, "the kernel's verifier rejected it:\x1b[31m too large\n");
        let mut out = Vec::new();
        f.write_summary(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "  backup off: the kernel's verifier rejected it:?[31m too large?\n"
        );
        let mut all_on = Features::default();
        all_on.on(Feature::LiveTimeline);
        let mut out = Vec::new();
        all_on.write_summary(&mut out).unwrap();
        assert!(out.is_empty(), "a run with everything says nothing more");
    }
}
