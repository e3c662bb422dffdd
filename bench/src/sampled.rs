//! A loopback storm traced by portrace while `perf record` samples it, and the call
//! stacks perf recorded: what the two breakdowns (`breakdown`, `tracepoint_cost`) are
//! made from.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::netns::Topology;
use crate::quiet;
use crate::sys::{self, Error, Out, Proc, Result};
use crate::workload::{self, Shape};

/// What a sampled storm left: the transitions portrace counted, and `perf script`'s text.
pub struct Sampled {
    pub transitions: u64,
    pub script: String,
}

/// How a storm is sampled.
pub struct Sampling<'a> {
    pub perf: &'a Path,
    /// `perf record`'s arguments before `-o FILE`.
    pub args: &'a [&'a str],
    /// Sample portrace's process only (`-p PID`).
    pub of_portrace: bool,
    /// The port the workload listens on.
    pub port: u16,
    /// What names the run's files in the work directory.
    pub name: &'a str,
}

/// Runs the loopback workload with `portrace --format json --port PORT` tracing it and
/// `perf record` sampling it as `how` says.
pub fn storm(portrace: &Path, shape: &Shape, dir: &Path, how: &Sampling) -> Result<Sampled> {
    let Sampling { perf, args: perf_args, of_portrace, port, name } = *how;
    let topo = Topology::loopback()?;
    let out = dir.join(format!("{name}-portrace.json"));
    let port_arg = port.to_string();
    let mut tracer = quiet::start_portrace(portrace, &["--format", "json", "--port", &port_arg], &out)?;
    sys::sleep(Duration::from_millis(300))?;
    let data = dir.join(format!("{name}.perf.data"));
    let err = dir.join(format!("{name}.perf.err"));
    let mut record = Command::new(perf);
    record.arg("record").args(perf_args).arg("-o").arg(&data);
    if of_portrace {
        record.args(["-p", &tracer.pid.to_string()]);
    }
    let mut sampler = Proc::spawn("perf record", record, Out::Null, Out::File(&err))?;
    sys::sleep(Duration::from_millis(500))?;
    let server = workload::start_server(&topo, shape, port, dir)?;
    let ran = workload::run_client(&topo, shape, port, dir, server);
    // The records still in the ring are drained within the poll interval.
    sys::sleep(Duration::from_secs(1))?;
    let recorded = sampler.stop(libc::SIGINT, Duration::from_secs(60));
    tracer.stop(libc::SIGINT, Duration::from_secs(20));
    ran?;
    // perf stops on SIGINT by raising it again once its file is written.
    let written = std::fs::metadata(&data).is_ok_and(|m| m.len() > 0);
    if !written {
        let why = std::fs::read_to_string(&err).unwrap_or_default();
        return Err(Error::Failed(format!("perf record {}: {}", recorded.describe(), why.trim())));
    }
    let transitions = transitions_of(&std::fs::read_to_string(&out).unwrap_or_default())
        .ok_or_else(|| Error::Failed("portrace wrote no end record".into()))?;
    let mut script = Command::new(perf);
    script.args(["script", "-F", "ip,sym", "-i"]).arg(&data);
    let script = sys::output_of(&mut script).ok_or_else(|| Error::Failed("perf script failed".into()))?;
    let _ = std::fs::remove_file(&data);
    Ok(Sampled { transitions, script })
}

/// Samples counted by part (a stage, a component), at one sample per `period_ns` of CPU.
pub struct Parts<'a> {
    pub transitions: u64,
    pub period_ns: u64,
    pub counts: &'a BTreeMap<&'static str, u64>,
}

impl Parts<'_> {
    /// The CPU time `samples` stand for, per transition.
    pub fn ns_per_transition(&self, samples: u64) -> f64 {
        if self.transitions == 0 {
            return 0.0;
        }
        (samples * self.period_ns) as f64 / self.transitions as f64
    }

    /// A Markdown table of the parts in `order` (first column `label`), each with its
    /// share of `total` samples, and a last row for the `total`.
    pub fn table(&self, label: &str, order: impl Iterator<Item = &'static str>, total: u64) -> String {
        let mut out = format!("| {label} | ns per transition | share |\n|---|---:|---:|\n");
        for part in order {
            let n = self.counts.get(part).copied().unwrap_or(0);
            out.push_str(&format!(
                "| {part} | {:.0} | {:.1}% |\n",
                self.ns_per_transition(n),
                100.0 * n as f64 / total.max(1) as f64
            ));
        }
        out.push_str(&format!("| all | {:.0} | 100% |\n", self.ns_per_transition(total)));
        out
    }

    /// The JSON of a run: its period, transitions, `samples` in all and each part's ns.
    pub fn json(&self, samples: u64) -> Value {
        json!({
            "period_ns": self.period_ns,
            "transitions": self.transitions,
            "samples": samples,
            "ns_per_transition": self.counts.iter().map(|(p, n)| (p.to_string(), json!(self.ns_per_transition(*n)))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// The transitions portrace's `end` record counted.
fn transitions_of(output: &str) -> Option<u64> {
    let end = output.lines().rev().find(|l| l.contains("\"type\":\"end\""))?;
    let value: Value = serde_json::from_str(end).ok()?;
    value.get("transitions")?.as_u64()
}

/// Calls `each` with every sample's stack in `perf script -F ip,sym` output, innermost
/// frame first, each frame a symbol without its offset (one sample a block, one frame a
/// line `addr symbol+off (dso)`, blocks apart by an empty line).
pub fn each_stack<'a>(script: &'a str, mut each: impl FnMut(&[&'a str])) {
    let mut frames: Vec<&str> = Vec::new();
    for line in script.lines() {
        if line.trim().is_empty() {
            if !frames.is_empty() {
                each(&frames);
                frames.clear();
            }
        } else if line.starts_with([' ', '\t']) {
            let mut parts = line.trim().splitn(2, ' ');
            let _address = parts.next();
            if let Some(symbol) = parts.next() {
                let symbol = symbol.split(" (").next().unwrap_or(symbol);
                frames.push(symbol.rsplit_once("+0x").map_or(symbol, |(s, _)| s));
            }
        }
    }
    if !frames.is_empty() {
        each(&frames);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_are_read_block_by_block_without_offsets_or_objects() {
        let script = "\n\t 55d0 portrace::decode::from_event+0x12 (/usr/bin/portrace)\n\t 55d1 main+0x40 (/usr/bin/portrace)\n\n\
                      \t ffff tcp_ack+0x8 ([kernel.kallsyms])\n\n\n\t 1 [unknown] ([unknown])\n";
        let mut stacks = Vec::new();
        each_stack(script, |frames| stacks.push(frames.to_vec()));
        assert_eq!(stacks, vec![vec!["portrace::decode::from_event", "main"], vec!["tcp_ack"], vec!["[unknown]"]]);
    }

    #[test]
    fn parts_are_given_in_ns_per_transition_and_as_shares_of_the_total() {
        let counts = BTreeMap::from([("decode", 100), ("alerts", 50)]);
        let parts = Parts { transitions: 200_000, period_ns: 100_000, counts: &counts };
        assert_eq!(parts.ns_per_transition(3_000), 1_500.0);
        let table = parts.table("stage", ["decode", "alerts", "absent"].into_iter(), 300);
        assert!(table.starts_with("| stage | ns per transition | share |\n"), "{table}");
        assert!(table.contains("| decode | 50 | 33.3% |\n"), "{table}");
        assert!(table.contains("| absent | 0 | 0.0% |\n"), "{table}");
        assert!(table.ends_with("| all | 150 | 100% |\n"), "{table}");
        assert_eq!(parts.json(300)["ns_per_transition"]["alerts"], 25.0);
    }

    #[test]
    fn the_end_record_gives_the_transitions() {
        let out = "{\"type\":\"start\"}\n{\"type\":\"end\",\"transitions\":200002,\"lost\":0}\n";
        assert_eq!(transitions_of(out), Some(200_002));
        assert_eq!(transitions_of("{\"type\":\"start\"}\n"), None);
    }
}
