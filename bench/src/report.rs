//! From runs to the table and the JSON file. Each row is one tracer on one transport,
//! summed over its rounds: captured% over all expected transitions; reported losses,
//! kernel skips (`recursion_misses`) and silent misses summed; CPU per event as total CPU
//! over total transitions printed; the rate ratio as the mean of each traced run over the
//! untraced run right before it; the worst start-up and peak RSS; the in-kernel cost as
//! the sum, over the tracer's programs on `sock:inet_sock_set_state`, of each program's
//! run time per run, next to the same sum for empty programs attached the same way (the
//! floor). portrace's rows are checked against the targets.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::cli::TracerKind;
use crate::measure::{ProgDelta, TracedRun, Transport, UntracedRun};

/// The targets portrace's rows are held to (issue #14's).
pub mod target {
    pub const RATE_RATIO: f64 = 0.8;
    /// The tracer's process CPU and its programs' run time together, per transition.
    pub const CPU_NS_TOTAL: f64 = 1_000.0;
    /// Every program's run time together, per transition of the tracepoint.
    pub const KERNEL_NS_ALL: f64 = 250.0;
    pub const STARTUP_MS: f64 = 100.0;
    pub const PEAK_RSS_BYTES: u64 = 24_000_000;
}

/// One target's verdict.
#[derive(Clone, Debug)]
pub struct Verdict {
    pub target: &'static str,
    pub pass: Option<bool>,
    pub detail: String,
}

#[derive(Clone, Debug, Default)]
pub struct Row {
    pub transport: Option<Transport>,
    pub tracer: Option<TracerKind>,
    /// Why there are no numbers (not installed, failed to start).
    pub unavailable: Option<String>,
    pub runs: usize,
    pub failures: Vec<String>,
    pub expected: u64,
    pub matched: u64,
    pub extra: u64,
    pub missing_by_kind: BTreeMap<String, u64>,
    pub lost: u64,
    pub lost_by_cause: BTreeMap<String, u64>,
    pub skips: u64,
    pub skips_by_program: BTreeMap<String, u64>,
    pub silent: u64,
    /// Hits of the workload's transitions the kernel handed to no BPF program
    /// ([`TracedRun::unhanded_hits`]).
    pub unhanded_hits: u64,
    pub cpu_ns_per_event: Option<f64>,
    pub traced_rate: Option<f64>,
    pub untraced_rate: Option<f64>,
    pub rate_ratio: Option<f64>,
    pub startup_ms: Vec<f64>,
    pub peak_rss: Option<u64>,
    pub kernel_ns: Option<f64>,
    pub kernel_ns_by_program: BTreeMap<String, f64>,
    pub floor_ns: Option<f64>,
    pub all_programs_ns: Option<f64>,
    pub other_cores_max: f64,
    /// Runs kept although others disturbed them (every retry was disturbed too).
    pub disturbed: Vec<String>,
    pub verdicts: Vec<Verdict>,
}

impl Row {
    pub fn captured_pct(&self) -> Option<f64> {
        (self.expected > 0).then(|| 100.0 * self.matched as f64 / self.expected as f64)
    }

    pub fn startup_max(&self) -> Option<f64> {
        self.startup_ms
            .iter()
            .copied()
            .fold(None, |m, v| Some(m.map_or(v, |m: f64| m.max(v))))
    }

    pub fn floor_ratio(&self) -> Option<f64> {
        Some(self.kernel_ns? / self.floor_ns?)
    }

    /// The process's CPU per event plus its programs' run time per transition.
    pub fn total_cpu_ns(&self) -> Option<f64> {
        Some(self.cpu_ns_per_event? + self.all_programs_ns?)
    }
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// ns per run of each program, summed over runs, grouped by name and type.
fn per_program(runs: &[&TracedRun], on_state: bool) -> BTreeMap<String, (u64, u64, String)> {
    let mut groups: BTreeMap<String, (u64, u64, String)> = BTreeMap::new();
    for r in runs {
        for p in r
            .programs
            .iter()
            .filter(|p| !on_state || p.on_state_tracepoint)
        {
            let g = groups
                .entry(format!("{} ({})", p.name, p.prog_type))
                .or_insert((0, 0, p.prog_type.clone()));
            g.0 += p.run_time_ns;
            g.1 += p.run_cnt;
        }
    }
    groups
}

fn floor_ns(runs: &[&TracedRun], pick: impl Fn(&TracedRun) -> Option<&ProgDelta>) -> Option<f64> {
    let (t, n) = runs
        .iter()
        .filter_map(|r| pick(r))
        .fold((0u64, 0u64), |(t, n), p| (t + p.run_time_ns, n + p.run_cnt));
    (n > 0).then(|| t as f64 / n as f64)
}

/// The row of `tracer` on `transport`.
pub fn row(transport: Transport, tracer: TracerKind, runs: &[TracedRun]) -> Row {
    let mine: Vec<&TracedRun> = runs
        .iter()
        .filter(|r| r.transport == transport && r.tracer == tracer)
        .collect();
    let mut row = Row {
        transport: Some(transport),
        tracer: Some(tracer),
        ..Row::default()
    };
    let ok: Vec<&TracedRun> = mine.iter().copied().filter(|r| r.error.is_none()).collect();
    row.failures = mine
        .iter()
        .filter_map(|r| r.error.as_ref().map(|e| format!("round {}: {e}", r.round)))
        .collect();
    row.runs = ok.len();
    if ok.is_empty() {
        row.unavailable = Some(
            row.failures
                .first()
                .cloned()
                .unwrap_or_else(|| "no run".into()),
        );
        return row;
    }
    let mut ratios = Vec::new();
    let mut traced = Vec::new();
    let mut untraced = Vec::new();
    let (mut cpu_ns, mut events) = (0f64, 0u64);
    for r in &ok {
        row.expected += r.score.expected;
        row.matched += r.score.matched;
        row.extra += r.score.extra;
        for (k, n) in &r.score.missing_by_kind {
            *row.missing_by_kind.entry(k.clone()).or_insert(0) += n;
        }
        row.lost += r.parsed.lost;
        for (k, n) in &r.parsed.lost_by_cause {
            *row.lost_by_cause.entry(k.clone()).or_insert(0) += n;
        }
        row.skips += r.skips();
        for p in &r.programs {
            *row.skips_by_program
                .entry(format!("{} ({})", p.name, p.prog_type))
                .or_insert(0) += p.recursion_misses;
        }
        row.silent += r.silent();
        row.unhanded_hits += r.unhanded_hits().unwrap_or(0);
        cpu_ns += r.cpu.as_nanos() as f64;
        events += r.parsed.transitions;
        if let Some(w) = &r.workload {
            traced.push(w.rate);
            if let Some(u) = r.untraced_rate {
                untraced.push(u);
                ratios.push(w.rate / u);
            }
        }
        row.startup_ms.push(r.startup.ready.as_secs_f64() * 1000.0);
        row.peak_rss = row.peak_rss.max(r.peak_rss);
        row.other_cores_max = row.other_cores_max.max(r.surroundings.other_cores);
        if let Some(why) = r.disturbed() {
            row.disturbed.push(format!("round {}: {why}", r.round));
        }
    }
    row.cpu_ns_per_event = (events > 0).then(|| cpu_ns / events as f64);
    row.traced_rate = mean(&traced);
    row.untraced_rate = mean(&untraced);
    row.rate_ratio = mean(&ratios);

    let raw_floor = floor_ns(&ok, |r| r.floor_raw.as_ref());
    let classic_floor = floor_ns(&ok, |r| r.floor_classic.as_ref());
    let state = per_program(&ok, true);
    let mut kernel = 0.0;
    let mut floor = Some(0.0);
    for (name, (time, count, prog_type)) in &state {
        if *count > 0 {
            let ns = *time as f64 / *count as f64;
            row.kernel_ns_by_program.insert(name.clone(), ns);
            kernel += ns;
            let f = if prog_type == "tracepoint" {
                classic_floor
            } else {
                raw_floor
            };
            floor = floor.zip(f).map(|(a, b)| a + b);
        }
    }
    if !row.kernel_ns_by_program.is_empty() {
        row.kernel_ns = Some(kernel);
        row.floor_ns = floor;
    }
    let hits: u64 = ok
        .iter()
        .filter_map(|r| r.floor_raw.as_ref())
        .map(ProgDelta::handed)
        .sum();
    let all_time: u64 = ok
        .iter()
        .flat_map(|r| r.programs.iter())
        .map(|p| p.run_time_ns)
        .sum();
    row.all_programs_ns = (hits > 0 && all_time > 0).then(|| all_time as f64 / hits as f64);
    row
}

/// Checks portrace's rows against the targets; `libbpf` is libbpf-tools' row on the same
/// transport, if measured.
pub fn judge(row: &mut Row) {
    let mut v = Vec::new();
    let pct = row.captured_pct();
    v.push(Verdict {
        target: "captured 100%",
        pass: pct.map(|_| row.matched == row.expected),
        detail: format!(
            "{} of {} expected transitions{}",
            row.matched,
            row.expected,
            unhanded_clause(row.unhanded_hits)
        ),
    });
    v.push(Verdict {
        target: "0 reported losses",
        pass: Some(row.lost == 0),
        detail: format!("{}{}", row.lost, unhanded_clause(row.unhanded_hits)),
    });
    v.push(Verdict {
        target: "0 silent misses",
        pass: Some(row.silent == 0),
        detail: format!(
            "{} missing and not reported; the kernel skipped its programs {} times",
            row.silent, row.skips
        ),
    });
    v.push(Verdict {
        target: "traced/untraced rate >= 0.8",
        pass: row.rate_ratio.map(|r| r >= target::RATE_RATIO),
        detail: row.rate_ratio.map_or("not measured".into(), |r| format!("{r:.3}")),
    });
    v.push(Verdict {
        target: "CPU per transition, process and programs, <= 1.0 us",
        pass: row.total_cpu_ns().map(|t| t <= target::CPU_NS_TOTAL),
        detail: match (row.cpu_ns_per_event, row.all_programs_ns) {
            (Some(p), Some(k)) => format!("{:.2} us: {:.2} us in the process, {:.2} us in its programs", (p + k) / 1000.0, p / 1000.0, k / 1000.0),
            _ => "not measured".into(),
        },
    });
    v.push(Verdict {
        target: "start-up < 100 ms",
        pass: row.startup_max().map(|s| s < target::STARTUP_MS),
        detail: row.startup_max().map_or("not measured".into(), |s| format!("{s:.1} ms (worst round)")),
    });
    v.push(Verdict {
        target: "peak RSS <= 24 MB",
        pass: row.peak_rss.map(|b| b <= target::PEAK_RSS_BYTES),
        detail: row.peak_rss.map_or("not measured".into(), |b| format!("{:.1} MB", b as f64 / 1e6)),
    });
    v.push(Verdict {
        target: "in-kernel <= 250 ns per transition, all programs",
        pass: row.all_programs_ns.map(|k| k <= target::KERNEL_NS_ALL),
        detail: row.all_programs_ns.map_or("not measured".into(), |k| format!("{k:.0} ns")),
    });
    row.verdicts = v;
}

/// What a verdict on capture adds when the kernel handed some hits to no BPF program: no
/// program of any tracer could have seen them.
fn unhanded_clause(unhanded: u64) -> String {
    if unhanded == 0 {
        String::new()
    } else {
        format!("; the kernel handed {unhanded} hits to no BPF program")
    }
}

fn mark(pass: Option<bool>) -> &'static str {
    match pass {
        Some(true) => " PASS",
        Some(false) => " FAIL",
        None => " n/a",
    }
}

fn verdict(row: &Row, target: &str) -> &'static str {
    if row.verdicts.is_empty() {
        return "";
    }
    mark(
        row.verdicts
            .iter()
            .find(|v| v.target.starts_with(target))
            .and_then(|v| v.pass),
    )
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or("-".into(), f)
}

/// The Markdown table.
pub fn table(rows: &[Row], untraced: &[UntracedRun]) -> String {
    let header = [
        "tracer",
        "transport",
        "captured",
        "lost (reported)",
        "kernel skips",
        "silent misses",
        "CPU/event",
        "CPU/transition, with its programs",
        "rate traced/untraced",
        "start-up",
        "peak RSS",
        "kernel ns/event",
        "empty-program floor",
        "x floor",
        "all programs ns/transition",
    ];
    let mut lines: Vec<Vec<String>> = Vec::new();
    let mut transports: Vec<Transport> = rows.iter().filter_map(|r| r.transport).collect();
    transports.dedup();
    for t in transports {
        let rates: Vec<f64> = untraced
            .iter()
            .filter(|u| u.transport == t)
            .filter_map(|u| u.result.as_ref().ok())
            .map(|o| o.rate)
            .collect();
        let mut cells = vec!["(untraced)".to_string(), t.name().to_string()];
        cells.extend(vec!["-".to_string(); 5]);
        cells.push(opt(mean(&rates), |r| format!("{r:.0} conn/s")));
        cells.extend(vec!["-".to_string(); 6]);
        lines.push(cells);
        for r in rows.iter().filter(|r| r.transport == Some(t)) {
            let name = r.tracer.map_or("?", |k| k.name()).to_string();
            if let Some(why) = &r.unavailable {
                let mut cells = vec![name, t.name().to_string(), format!("{why}")];
                cells.extend(vec![String::new(); header.len() - 3]);
                lines.push(cells);
                continue;
            }
            lines.push(vec![
                name,
                t.name().to_string(),
                format!(
                    "{}{}",
                    opt(r.captured_pct(), |p| format!("{p:.3}%")),
                    verdict(r, "captured")
                ),
                format!("{}{}", r.lost, verdict(r, "0 reported")),
                r.skips.to_string(),
                format!("{}{}", r.silent, verdict(r, "0 silent")),
                opt(r.cpu_ns_per_event, |n| format!("{:.2} us", n / 1000.0)),
                format!(
                    "{}{}",
                    opt(r.total_cpu_ns(), |n| format!("{:.2} us", n / 1000.0)),
                    verdict(r, "CPU")
                ),
                format!(
                    "{}{}",
                    opt(r.rate_ratio, |x| format!(
                        "{x:.3} ({:.0}/{:.0})",
                        r.traced_rate.unwrap_or(0.0),
                        r.untraced_rate.unwrap_or(0.0)
                    )),
                    verdict(r, "traced")
                ),
                format!(
                    "{}{}",
                    opt(r.startup_max(), |s| format!("{s:.0} ms")),
                    verdict(r, "start-up")
                ),
                format!(
                    "{}{}",
                    opt(r.peak_rss.map(|b| b as f64), |b| format!(
                        "{:.1} MB",
                        b / 1e6
                    )),
                    verdict(r, "peak")
                ),
                opt(r.kernel_ns, |k| format!("{k:.0} ns")),
                opt(r.floor_ns, |f| format!("{f:.0} ns")),
                opt(r.floor_ratio(), |x| format!("{x:.1}x")),
                format!("{}{}", opt(r.all_programs_ns, |a| format!("{a:.0} ns")), verdict(r, "in-kernel")),
            ]);
        }
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for l in &lines {
        for (i, c) in l.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let fmt_row = |cells: &[String]| {
        let mut s = String::from("|");
        for (i, c) in cells.iter().enumerate() {
            let _ = write!(s, " {c:<w$} |", w = widths[i]);
        }
        s
    };
    let mut out = String::new();
    out.push_str(&fmt_row(
        &header.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
    ));
    out.push('\n');
    out.push('|');
    for w in &widths {
        out.push_str(&"-".repeat(w + 2));
        out.push('|');
    }
    out.push('\n');
    for l in &lines {
        out.push_str(&fmt_row(l));
        out.push('\n');
    }
    out
}

/// Notes under the table: what was missed, by kind, and what looked disturbed.
pub fn notes(rows: &[Row], untraced: &[UntracedRun]) -> String {
    let mut out = String::new();
    for r in rows.iter().filter(|r| r.unavailable.is_none()) {
        let name = format!(
            "{}/{}",
            r.tracer.map_or("?", |k| k.name()),
            r.transport.map_or("?", |t| t.name())
        );
        if !r.missing_by_kind.is_empty() {
            let mut kinds: Vec<(&String, &u64)> = r.missing_by_kind.iter().collect();
            kinds.sort_by(|a, b| b.1.cmp(a.1));
            let list: Vec<String> = kinds
                .iter()
                .take(4)
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = writeln!(out, "- {name}: missing {}", list.join(", "));
        }
        let skipped: Vec<String> = r
            .skips_by_program
            .iter()
            .filter(|(_, &n)| n > 0)
            .map(|(p, n)| format!("{p} {n}"))
            .collect();
        if !skipped.is_empty() {
            let _ = writeln!(out, "- {name}: kernel skipped {}", skipped.join(", "));
        }
        if !r.lost_by_cause.is_empty() && r.lost > 0 {
            let causes: Vec<String> = r
                .lost_by_cause
                .iter()
                .filter(|(_, &n)| n > 0)
                .map(|(c, n)| format!("{c} {n}"))
                .collect();
            let _ = writeln!(
                out,
                "- {name}: reported lost by cause: {}",
                causes.join(", ")
            );
        }
        if r.unhanded_hits > 0 {
            let _ = writeln!(
                out,
                "- {name}: the kernel handed {} of the workload's hits to no BPF program: the \
                 empty raw tracepoint program got neither a run nor a counted miss for them",
                r.unhanded_hits
            );
        }
        if r.extra > 0 {
            let _ = writeln!(
                out,
                "- {name}: {} transitions beyond the expected ones",
                r.extra
            );
        }
        for f in &r.failures {
            let _ = writeln!(out, "- {name}: a run failed: {f}");
        }
        for d in &r.disturbed {
            let _ = writeln!(
                out,
                "- {name}: disturbed by others even after the retries ({d}): take with care"
            );
        }
    }
    for u in untraced {
        if let Err(e) = &u.result {
            let _ = writeln!(
                out,
                "- untraced {} round {}: failed: {e}",
                u.transport.name(),
                u.round
            );
        }
    }
    out
}

fn prog_json(p: &ProgDelta) -> Value {
    json!({
        "id": p.id, "name": p.name, "type": p.prog_type, "on_inet_sock_set_state": p.on_state_tracepoint,
        "run_cnt": p.run_cnt, "run_time_ns": p.run_time_ns, "ns_per_run": p.ns_per_run(),
        "recursion_misses": p.recursion_misses,
    })
}

pub fn traced_json(r: &TracedRun) -> Value {
    json!({
        "transport": r.transport.name(), "round": r.round, "tracer": r.tracer.name(), "port": r.port,
        "error": r.error,
        "workload": r.workload.as_ref().map(|w| json!({
            "rate_conn_per_s": w.rate, "rate_end_to_end_conn_per_s": w.rate_end_to_end,
            "listen_overflows": w.listen_overflows, "elapsed_s": w.elapsed.as_secs_f64(),
            "client_cpu_s": w.client_cpu.as_secs_f64(), "server_cpu_s": w.server_cpu.as_secs_f64(),
            "wall_s": w.wall.as_secs_f64(),
        })),
        "untraced_rate_conn_per_s": r.untraced_rate,
        "rate_ratio": r.workload.as_ref().zip(r.untraced_rate).map(|(w, u)| w.rate / u),
        "startup": {
            "ready_ms": r.startup.ready.as_secs_f64() * 1000.0,
            "attached_ms": r.startup.attached.map(|d| d.as_secs_f64() * 1000.0),
            "announced_ms": r.startup.announced.map(|d| d.as_secs_f64() * 1000.0),
        },
        "captured": {
            "expected": r.score.expected, "matched": r.score.matched, "extra": r.score.extra,
            "captured_pct": r.score.captured_pct(), "missing_by_kind": r.score.missing_by_kind,
            "by_kind": r.parsed.kinds,
        },
        "transitions_printed": r.parsed.transitions,
        "unreadable_lines": r.parsed.unreadable,
        "lost_reported": r.parsed.lost,
        "lost_by_cause": r.parsed.lost_by_cause,
        "end_record": r.parsed.end_record,
        "end_record_transitions": r.parsed.end_transitions,
        "silent_misses": r.silent(),
        "kernel_skips": r.skips(),
        "tracer_cpu_s": r.cpu.as_secs_f64(),
        "cpu_ns_per_event": (r.parsed.transitions > 0).then(|| r.cpu.as_nanos() as f64 / r.parsed.transitions as f64),
        "peak_rss_bytes": r.peak_rss,
        "programs_found_by": r.programs_found_by,
        "programs": r.programs.iter().map(prog_json).collect::<Vec<_>>(),
        "floor_raw_tracepoint": r.floor_raw.as_ref().map(prog_json),
        "floor_classic_tracepoint": r.floor_classic.as_ref().map(prog_json),
        "floor_errors": r.floor_errors,
        "unhanded_hits": r.unhanded_hits(),
        "bpf_stats_enabled": r.stats_enabled,
        "tracer_exit": r.tracer_exit,
        "stderr_tail": r.stderr_tail,
        "other_processes_cores": r.surroundings.other_cores,
        "busy_processes_of_others": r.surroundings.strangers,
        "foreign_transitions": r.foreign_transitions(),
        "foreign_programs": r.foreign_programs,
        "disturbed": r.disturbed(),
    })
}

pub fn untraced_json(u: &UntracedRun) -> Value {
    json!({
        "transport": u.transport.name(), "round": u.round, "port": u.port,
        "error": u.result.as_ref().err(),
        "rate_conn_per_s": u.result.as_ref().ok().map(|o| o.rate),
        "rate_end_to_end_conn_per_s": u.result.as_ref().ok().map(|o| o.rate_end_to_end),
        "listen_overflows": u.result.as_ref().ok().map(|o| o.listen_overflows),
        "elapsed_s": u.result.as_ref().ok().map(|o| o.elapsed.as_secs_f64()),
        "client_cpu_s": u.result.as_ref().ok().map(|o| o.client_cpu.as_secs_f64()),
        "server_cpu_s": u.result.as_ref().ok().map(|o| o.server_cpu.as_secs_f64()),
        "other_processes_cores": u.surroundings.other_cores,
        "busy_processes_of_others": u.surroundings.strangers,
        "foreign_programs": u.foreign_programs,
        "disturbed": u.disturbed(),
    })
}

pub fn row_json(r: &Row) -> Value {
    json!({
        "tracer": r.tracer.map(|k| k.name()), "transport": r.transport.map(|t| t.name()),
        "unavailable": r.unavailable, "runs": r.runs, "failures": r.failures,
        "expected": r.expected, "matched": r.matched, "extra": r.extra, "captured_pct": r.captured_pct(),
        "missing_by_kind": r.missing_by_kind,
        "lost_reported": r.lost, "lost_by_cause": r.lost_by_cause,
        "kernel_skips": r.skips, "kernel_skips_by_program": r.skips_by_program,
        "silent_misses": r.silent,
        "cpu_ns_per_event": r.cpu_ns_per_event,
        "traced_rate_conn_per_s": r.traced_rate, "untraced_rate_conn_per_s": r.untraced_rate,
        "rate_ratio": r.rate_ratio,
        "startup_ms": r.startup_ms, "startup_ms_worst": r.startup_max(),
        "peak_rss_bytes": r.peak_rss,
        "kernel_ns_per_event": r.kernel_ns, "kernel_ns_per_run_by_program": r.kernel_ns_by_program,
        "floor_ns": r.floor_ns, "floor_ratio": r.floor_ratio(),
        "all_programs_ns_per_transition": r.all_programs_ns,
        "other_processes_cores_max": r.other_cores_max,
        "disturbed": r.disturbed,
        "targets": r.verdicts.iter().map(|v| json!({"target": v.target, "pass": v.pass, "detail": v.detail})).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_name_the_hits_no_program_was_handed() {
        let row = |unhanded_hits| Row {
            transport: Some(Transport::Loopback),
            tracer: Some(TracerKind::Portrace),
            unhanded_hits,
            ..Row::default()
        };
        let text = notes(&[row(200)], &[]);
        assert!(
            text.contains("- portrace/loopback: the kernel handed 200 of the workload's hits to no BPF program"),
            "{text}"
        );
        assert!(!notes(&[row(0)], &[]).contains("to no BPF program"));
    }

    #[test]
    fn capture_verdicts_say_when_the_kernel_handed_hits_to_no_program() {
        let judged = |unhanded_hits| {
            let mut row = Row {
                expected: 200_002,
                matched: 199_856,
                lost: 146,
                unhanded_hits,
                ..Row::default()
            };
            judge(&mut row);
            row.verdicts
        };
        let verdicts = judged(146);
        for target in ["captured 100%", "0 reported losses"] {
            let v = verdicts.iter().find(|v| v.target == target).expect("judged");
            assert_eq!(v.pass, Some(false), "{target}: the target is not bent");
            assert!(v.detail.ends_with("; the kernel handed 146 hits to no BPF program"), "{}", v.detail);
        }
        assert!(judged(0).iter().all(|v| !v.detail.contains("no BPF program")));
    }
}
