//! Where the state tracepoint's cost goes in the kernel, including the parts the BPF
//! statistics do not see: the whole machine sampled with `perf record -a` (a sample every
//! [`PERIOD_NS`] of CPU time, with kernel call stacks) while portrace traces the loopback
//! workload, and each sample taken inside the tracepoint's call put in one component by
//! the frames above it:
//!
//! - portrace's main program: the raw tracepoint's BPF run (`bpf_trace_run3`);
//! - the backup program: the classic tracepoint's BPF run (`trace_call_bpf`);
//! - the classic tracepoint's own work before the backup runs (`perf_trace_...`: it
//!   builds the whole tracepoint record for every hit);
//! - the hit count: the event of portrace's ftrace instance (`trace_event_raw_event_...`),
//!   whose ring buffer is full and drops each event, counting it;
//! - the tracepoint's call itself (the rest under `__traceiter_...`).
//!
//! Only the first two are in the BPF statistics. Sampling is coarser than those (a
//! virtual machine without a PMU samples on a timer, see `breakdown`), so the main
//! program's share here is also a check of the method against the statistics.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::sampled;
use crate::sys::Result;
use crate::workload::Shape;

/// A sample per this much CPU time, on every CPU (`perf record -c`, cpu-clock).
pub const PERIOD_NS: u64 = 100_000;
/// The port this run's workload listens on (the benchmark's range, next to the breakdown's).
const PORT: u16 = 63_098;
/// The tracepoint's call, the frame every sample counted here is under.
const TRACEPOINT: &str = "__traceiter_inet_sock_set_state";

pub const MAIN: &str = "main program (raw tracepoint, in the BPF statistics)";
pub const BACKUP: &str = "backup program (classic tracepoint, in the BPF statistics)";
pub const RECORD: &str = "classic tracepoint's record, built for every hit before the backup runs";
pub const HIT_COUNT: &str = "hit count (portrace's ftrace instance event, dropped and counted)";
pub const CALL: &str = "the tracepoint's call itself";
const ORDER: [&str; 5] = [MAIN, BACKUP, RECORD, HIT_COUNT, CALL];

/// The component a sample's stack (innermost frame first) belongs to, if it was taken in
/// the state tracepoint's call. The innermost of the marking frames decides: a backup run
/// is under the classic tracepoint's frame, and both are under the tracepoint's call.
pub fn component_of(frames: &[&str]) -> Option<&'static str> {
    let at = frames.iter().position(|f| *f == TRACEPOINT)?;
    for frame in &frames[..at] {
        let component = match *frame {
            "bpf_trace_run3" => MAIN,
            "trace_call_bpf" => BACKUP,
            "perf_trace_inet_sock_set_state" => RECORD,
            "trace_event_raw_event_inet_sock_set_state" => HIT_COUNT,
            _ => continue,
        };
        return Some(component);
    }
    Some(CALL)
}

/// Samples per component from `perf script` output, and the number of samples in all.
pub fn tally(script: &str) -> (BTreeMap<&'static str, u64>, u64) {
    let mut counts = BTreeMap::new();
    let mut all = 0;
    sampled::each_stack(script, |frames| {
        all += 1;
        if let Some(component) = component_of(frames) {
            *counts.entry(component).or_insert(0) += 1;
        }
    });
    (counts, all)
}

/// What one run found.
#[derive(Debug, Clone)]
pub struct TracepointCost {
    pub transitions: u64,
    /// Samples of the whole machine during the run.
    pub samples: u64,
    pub components: BTreeMap<&'static str, u64>,
}

impl TracepointCost {
    fn parts(&self) -> sampled::Parts<'_> {
        sampled::Parts { transitions: self.transitions, period_ns: PERIOD_NS, counts: &self.components }
    }

    fn in_tracepoint(&self) -> u64 {
        self.components.values().sum()
    }

    pub fn table(&self) -> String {
        let head = format!(
            "Where the state tracepoint's kernel time goes ({} transitions; the machine sampled every {} us of CPU, {} samples, {} in the tracepoint's call):\n\n",
            self.transitions,
            PERIOD_NS / 1000,
            self.samples,
            self.in_tracepoint()
        );
        head + &self.parts().table("component", ORDER.into_iter(), self.in_tracepoint())
    }

    pub fn json(&self) -> Value {
        self.parts().json(self.samples)
    }
}

/// One run: portrace on the loopback workload, the machine sampled.
pub fn measure(portrace: &Path, perf: &Path, shape: &Shape, dir: &Path) -> Result<TracepointCost> {
    let period = PERIOD_NS.to_string();
    let args = ["-a", "-e", "cpu-clock", "-c", &period, "-g", "-q"];
    let how = sampled::Sampling { perf, args: &args, of_portrace: false, port: PORT, name: "tracepoint-cost" };
    let run = sampled::storm(portrace, shape, dir, &how)?;
    let (components, samples) = tally(&run.script);
    Ok(TracepointCost { transitions: run.transitions, samples, components })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_in_the_tracepoint_belongs_to_the_innermost_marking_frame() {
        let main = ["htab_map_update_elem", "bpf_prog_2291524d82eae13e_process", "bpf_prog_84975136cf9b834c_inet_sock_set_state", "bpf_trace_run3", TRACEPOINT, "tcp_set_state"];
        assert_eq!(component_of(&main), Some(MAIN));
        let backup = ["bpf_prog_4d3e_inet_sock_set_state_backup", "trace_call_bpf", "perf_trace_run_bpf_submit", "perf_trace_inet_sock_set_state", TRACEPOINT];
        assert_eq!(component_of(&backup), Some(BACKUP));
        let record = ["perf_trace_buf_alloc", "perf_trace_inet_sock_set_state", TRACEPOINT];
        assert_eq!(component_of(&record), Some(RECORD));
        let hits = ["ring_buffer_lock_reserve", "trace_event_buffer_reserve", "trace_event_raw_event_inet_sock_set_state", TRACEPOINT];
        assert_eq!(component_of(&hits), Some(HIT_COUNT));
        assert_eq!(component_of(&[TRACEPOINT, "tcp_set_state"]), Some(CALL));
        // A frame above the tracepoint's call says nothing of the sample's component.
        assert_eq!(component_of(&["read_tsc", TRACEPOINT, "bpf_trace_run3"]), Some(CALL));
        assert_eq!(component_of(&["tcp_v4_rcv", "ip_local_deliver"]), None);
    }

    #[test]
    fn samples_are_tallied_by_component_and_counted_in_all() {
        let script = format!(
            "\n\t 1 htab_map_update_elem+0x1de ([kernel.kallsyms])\n\t 2 bpf_trace_run3+0x5 ([kernel.kallsyms])\n\t 3 {TRACEPOINT}+0x2 ([kernel.kallsyms])\n\n\
             \t 4 ring_buffer_lock_reserve+0x9 ([kernel.kallsyms])\n\t 5 trace_event_raw_event_inet_sock_set_state+0x1 ([kernel.kallsyms])\n\t 6 {TRACEPOINT}+0x2 ([kernel.kallsyms])\n\n\
             \t 7 tcp_ack+0x10 ([kernel.kallsyms])\n"
        );
        let (counts, all) = tally(&script);
        assert_eq!(all, 3);
        assert_eq!(counts.get(MAIN), Some(&1));
        assert_eq!(counts.get(HIT_COUNT), Some(&1));
        assert_eq!(counts.values().sum::<u64>(), 2, "the sample outside the tracepoint is in no component");
    }

    #[test]
    fn the_table_gives_each_component_in_ns_per_transition() {
        let c = TracepointCost {
            transitions: 200_000,
            samples: 20_000,
            components: BTreeMap::from([(MAIN, 2_000), (HIT_COUNT, 400)]),
        };
        assert_eq!(c.parts().ns_per_transition(2_000), 1_000.0);
        let table = c.table();
        assert!(table.contains(&format!("| {HIT_COUNT} | 200 | 16.7% |")), "{table}");
        assert!(table.contains("| all | 1200 | 100% |"), "{table}");
    }
}
