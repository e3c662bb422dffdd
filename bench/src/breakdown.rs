//! Where portrace's own CPU goes in a storm: its process sampled with `perf record` (a
//! sample every [`PERIOD_NS`] of its CPU time, with its call stacks) while the loopback
//! workload runs, each sample put in one stage of its pipeline by the innermost portrace
//! function on its stack, and each stage's CPU given in nanoseconds per transition.
//!
//! The kernel programs' side is not sampled here: their cost per run comes from the
//! kernel's own statistics in the main table (`programs` in the JSON), which are exact
//! where sampling is not (a virtual machine without a PMU samples on a timer, whose
//! interrupts wait for the end of every section run with interrupts off, such as a BPF
//! map's bucket lock, and land there).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::netns::Topology;
use crate::quiet;
use crate::sys::{self, Error, Out, Proc, Result};
use crate::workload::{self, Shape};

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

/// Samples per stage from `perf script` output: one sample a block, its frames one a line
/// (`addr symbol+off (dso)`), blocks apart by an empty line.
pub fn tally(script: &str) -> BTreeMap<&'static str, u64> {
    let mut counts = BTreeMap::new();
    let mut frames: Vec<&str> = Vec::new();
    let mut flush = |frames: &mut Vec<&str>| {
        if !frames.is_empty() {
            *counts.entry(stage_of(frames)).or_insert(0) += 1;
            frames.clear();
        }
    };
    for line in script.lines() {
        if line.trim().is_empty() {
            flush(&mut frames);
        } else if line.starts_with([' ', '\t']) {
            let mut parts = line.trim().splitn(2, ' ');
            let _address = parts.next();
            if let Some(symbol) = parts.next() {
                let symbol = symbol.split(" (").next().unwrap_or(symbol);
                frames.push(symbol.rsplit_once("+0x").map_or(symbol, |(s, _)| s));
            }
        }
    }
    flush(&mut frames);
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
    pub fn ns_per_transition(&self, samples: u64) -> f64 {
        if self.transitions == 0 {
            return 0.0;
        }
        (samples * PERIOD_NS) as f64 / self.transitions as f64
    }

    pub fn table(&self) -> String {
        let mut out = format!(
            "Where portrace's process CPU goes ({} transitions, {} samples of {} us of its CPU each):\n\n",
            self.transitions,
            self.samples,
            PERIOD_NS / 1000
        );
        out.push_str("| stage | ns per transition | share |\n|---|---:|---:|\n");
        let order = STAGES.iter().map(|(s, _)| *s).chain([WRITE, OTHER]);
        for stage in order {
            let n = self.stages.get(stage).copied().unwrap_or(0);
            out.push_str(&format!(
                "| {stage} | {:.0} | {:.1}% |\n",
                self.ns_per_transition(n),
                100.0 * n as f64 / self.samples.max(1) as f64
            ));
        }
        out.push_str(&format!("| all | {:.0} | 100% |\n", self.ns_per_transition(self.samples)));
        out
    }

    pub fn json(&self) -> Value {
        json!({
            "period_ns": PERIOD_NS,
            "transitions": self.transitions,
            "samples": self.samples,
            "ns_per_transition": self.stages.iter().map(|(s, n)| (s.to_string(), json!(self.ns_per_transition(*n)))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// The transitions portrace's `end` record counted.
fn transitions_of(output: &str) -> Option<u64> {
    let end = output.lines().rev().find(|l| l.contains("\"type\":\"end\""))?;
    let value: Value = serde_json::from_str(end).ok()?;
    value.get("transitions")?.as_u64()
}

/// One run: portrace on the loopback workload with its process sampled.
pub fn measure(portrace: &Path, perf: &Path, shape: &Shape, dir: &Path) -> Result<Breakdown> {
    let topo = Topology::loopback()?;
    let out = dir.join("breakdown-portrace.json");
    let port = PORT.to_string();
    let mut tracer = quiet::start_portrace(portrace, &["--format", "json", "--port", &port], &out)?;
    sys::sleep(Duration::from_millis(300))?;
    let data = dir.join("breakdown.perf.data");
    let mut record = Command::new(perf);
    record
        .args(["record", "-e", "task-clock", "-c", &PERIOD_NS.to_string(), "--call-graph", "dwarf,16384", "-q", "-o"])
        .arg(&data)
        .args(["-p", &tracer.pid.to_string()]);
    let mut sampler = Proc::spawn("perf record", record, Out::Null, Out::File(&dir.join("breakdown.perf.err")))?;
    sys::sleep(Duration::from_millis(500))?;
    let server = workload::start_server(&topo, shape, PORT, dir)?;
    let ran = workload::run_client(&topo, shape, PORT, dir, server);
    // The records still in the ring are drained within the poll interval.
    sys::sleep(Duration::from_secs(1))?;
    let recorded = sampler.stop(libc::SIGINT, Duration::from_secs(60));
    tracer.stop(libc::SIGINT, Duration::from_secs(20));
    ran?;
    // perf stops on SIGINT by raising it again once its file is written.
    let written = std::fs::metadata(&data).is_ok_and(|m| m.len() > 0);
    if !written {
        let err = std::fs::read_to_string(dir.join("breakdown.perf.err")).unwrap_or_default();
        return Err(Error::Failed(format!("perf record {}: {}", recorded.describe(), err.trim())));
    }
    let transitions = transitions_of(&std::fs::read_to_string(&out).unwrap_or_default())
        .ok_or_else(|| Error::Failed("portrace wrote no end record".into()))?;
    let mut script = Command::new(perf);
    script.args(["script", "-F", "ip,sym", "-i"]).arg(&data);
    let text = sys::output_of(&mut script).ok_or_else(|| Error::Failed("perf script failed".into()))?;
    let stages = tally(&text);
    let samples = stages.values().sum();
    let _ = std::fs::remove_file(&data);
    Ok(Breakdown { transitions, samples, stages })
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
        assert_eq!(b.ns_per_transition(3_000), 1_500.0);
        assert_eq!(b.ns_per_transition(100), 50.0);
        assert!(b.table().contains("| decode | 50 | 3.3% |"));
    }
}
