//! Where portrace's own CPU goes in a storm: its process sampled with `perf record` (a
//! sample every [`PERIOD_NS`] of its CPU time, with its call stacks) while the loopback
//! workload runs, each sample put in one stage of its pipeline by the innermost portrace
//! function on its stack, and each stage's CPU given in nanoseconds per transition.
//!
//! The kernel programs' side is not sampled here: their cost per run comes from the
//! kernel's own statistics in the main table (`programs` in the JSON), which are exact
//! where sampling is not (`tracepoint_cost` samples the kernel's side for what those
//! statistics do not see) (a virtual machine without a PMU samples on a timer, whose
//! interrupts wait for the end of every section run with interrupts off, such as a BPF
//! map's bucket lock, and land there).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::sampled;
use crate::sys::Result;
use crate::workload::Shape;

/// A sample per this much of portrace's CPU time (`perf record -c`, task-clock).
pub const PERIOD_NS: u64 = 100_000;
/// The port the breakdown's workload listens on (the last of the benchmark's range).
const PORT: u16 = 63_099;

/// The stages, in pipeline order, with the module paths that belong to each. A sample
/// belongs to the stage of the innermost portrace function on its stack; samples in the
/// kernel's `write` path are the output's write whatever called it.
const STAGES: &[(&str, &[&str])] = &[
    ("ring drain (reading the ring, the event loop)", &["engine::", "loader::Ring", "aya::maps::ring_buf"]),
    ("pipeline (handing each record to its consumers)", &["pipeline", "destination"]),
    ("decode", &["decode"]),
    ("timeline (sockets, durations, TIME_WAIT)", &["timeline", "sockets", "gaps", "reasons"]),
    ("process details (/proc reads)", &["details", "process_info", "procfs", "netns_info", "cgroup"]),
    ("alerts", &["alerts"]),
    ("summary, report, still open", &["summary", "report", "still_open"]),
    ("output formatting", &["output", "format", "clock", "escape"]),
    ("loss checks (hit count, counters, ledger)", &["hitcount", "loader", "loss_ledger", "engine::session::Session::check_losses"]),
];
const WRITE: &str = "the output's write(2)";
const OTHER: &str = "other (start-up, runtime, unattributed)";

/// Which stage a sample's stack (innermost frame first) belongs to.
pub fn stage_of(frames: &[&str]) -> &'static str {
    if frames.iter().any(|f| matches!(*f, "ksys_write" | "__x64_sys_write" | "vfs_write")) {
        return WRITE;
    }
    for frame in frames {
        let Some(at) = frame.find("portrace::") else { continue };
        let path = &frame[at + "portrace::".len()..];
        // The longest prefix wins: `engine::session::Session::check_losses` before `engine::`.
        let best = STAGES
            .iter()
            .flat_map(|(stage, prefixes)| prefixes.iter().map(move |p| (*stage, *p)))
            .filter(|(_, p)| path.starts_with(p))
            .max_by_key(|(_, p)| p.len());
        if let Some((stage, _)) = best {
            return stage;
        }
        if frame.contains("aya::maps::ring_buf") {
            return STAGES[0].0;
        }
    }
    if frames.iter().any(|f| f.contains("aya::maps::ring_buf")) {
        return STAGES[0].0;
    }
    OTHER
}

/// Samples per stage from `perf script` output.
pub fn tally(script: &str) -> BTreeMap<&'static str, u64> {
    let mut counts = BTreeMap::new();
    sampled::each_stack(script, |frames| *counts.entry(stage_of(frames)).or_insert(0) += 1);
    counts
}

/// What one breakdown run found.
#[derive(Debug, Clone)]
pub struct Breakdown {
    pub transitions: u64,
    pub samples: u64,
    pub stages: BTreeMap<&'static str, u64>,
}

impl Breakdown {
    fn parts(&self) -> sampled::Parts<'_> {
        sampled::Parts { transitions: self.transitions, period_ns: PERIOD_NS, counts: &self.stages }
    }

    pub fn table(&self) -> String {
        let head = format!(
            "Where portrace's process CPU goes ({} transitions, {} samples of {} us of its CPU each):\n\n",
            self.transitions,
            self.samples,
            PERIOD_NS / 1000
        );
        let order = STAGES.iter().map(|(s, _)| *s).chain([WRITE, OTHER]);
        head + &self.parts().table("stage", order, self.samples)
    }

    pub fn json(&self) -> Value {
        self.parts().json(self.samples)
    }
}

/// One run: portrace on the loopback workload with its process sampled.
pub fn measure(portrace: &Path, perf: &Path, shape: &Shape, dir: &Path) -> Result<Breakdown> {
    let period = PERIOD_NS.to_string();
    let args = ["-e", "task-clock", "-c", &period, "--call-graph", "dwarf,16384", "-q"];
    let how = sampled::Sampling { perf, args: &args, of_portrace: true, port: PORT, name: "breakdown" };
    let run = sampled::storm(portrace, shape, dir, &how)?;
    let stages = tally(&run.script);
    let samples = stages.values().sum();
    Ok(Breakdown { transitions: run.transitions, samples, stages })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_belongs_to_its_innermost_portrace_function() {
        let stack = ["hashbrown::map::HashMap<K,V,S,A>::insert", "portrace::sockets::Sockets::observe", "portrace::timeline::Timeline::push", "portrace::engine::session::Session::drain"];
        assert_eq!(stage_of(&stack), "timeline (sockets, durations, TIME_WAIT)");
        let stack = ["itoa", "<portrace::output::json::JsonSink as portrace::output::Sink>::transition", "portrace::engine::session::Session::drain"];
        assert_eq!(stage_of(&stack), "output formatting");
        let stack = ["vsnprintf", "tracing_stats_read", "read", "portrace::hitcount::HitCounter::total", "portrace::engine::session::Session::check_losses"];
        assert_eq!(stage_of(&stack), "loss checks (hit count, counters, ledger)");
        let stack = ["portrace::engine::session::Session::drain"];
        assert_eq!(stage_of(&stack), STAGES[0].0);
        let stack = ["copy_folio_from_iter_atomic", "vfs_write", "ksys_write", "std::io::Write::write_all", "portrace::engine::session::Session::drain"];
        assert_eq!(stage_of(&stack), WRITE);
        assert_eq!(stage_of(&["epoll_wait", "tokio::runtime::park"]), OTHER);
    }

    #[test]
    fn perf_script_blocks_are_tallied_by_stage() {
        let script = "\n\t    55d0 portrace::decode::from_event+0x12 (/usr/bin/portrace)\n\t    55d1 portrace::engine::session::Session::absorb+0x40 (/usr/bin/portrace)\n\n\
                      \t    55e0 portrace::alerts::scan::Scan::on_transition+0x8 (/usr/bin/portrace)\n\n\
                      \t    55e0 portrace::alerts::scan::Scan::on_transition+0x8 (/usr/bin/portrace)\n";
        let counts = tally(script);
        assert_eq!(counts.get("decode"), Some(&1));
        assert_eq!(counts.get("alerts"), Some(&2));
        assert_eq!(counts.values().sum::<u64>(), 3);
    }

    #[test]
    fn ns_per_transition_is_samples_times_the_period_over_transitions() {
        let b = Breakdown { transitions: 200_000, samples: 3_000, stages: BTreeMap::from([("decode", 100)]) };
        assert_eq!(b.parts().ns_per_transition(3_000), 1_500.0);
        assert_eq!(b.parts().ns_per_transition(100), 50.0);
        assert!(b.table().contains("| decode | 50 | 3.3% |"));
    }
}
