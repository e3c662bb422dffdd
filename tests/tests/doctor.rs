//! `portrace doctor` as root on this machine: it loads every kernel program without
//! attaching any, says how each load went in its JSON object, and says the core timeline
//! can run (exit status 0). Needs root, as every test that loads the programs does.

use std::time::Duration;

use portrace_tests::{privileged, Portrace};
use serde_json::Value;

/// Every program the kernel object holds (portrace-ebpf/src/program/).
const PROGRAMS: [&str; 10] = [
    "inet_sock_set_state",
    "inet_sock_set_state_backup",
    "inet_sock_set_state_backup_bounded",
    "timer_start",
    "timer_expire_entry",
    "timer_cancel",
    "kfree_skb",
    "sched_process_exec",
    "task_newtask",
    "sched_process_exit",
];

#[test]
fn doctor_loads_every_program_and_the_core_can_run() {
    privileged!();
    let (out, took) = Portrace::run_once(&["doctor", "--json"], Duration::from_secs(60));
    let shown = format!("status {}\n--- stdout\n{}\n--- stderr\n{}", out.status, out.stdout.join("\n"), out.stderr);
    assert_eq!(out.stdout.len(), 1, "one JSON object on one line\n{shown}");
    let doctor: Value = serde_json::from_str(&out.stdout[0]).unwrap_or_else(|e| panic!("not JSON: {e}\n{shown}"));
    assert_eq!(doctor["type"], "doctor", "{shown}");
    assert_eq!(doctor["schema"], 1, "{shown}");
    assert_eq!(doctor["ring_buffer"], true, "{shown}");
    assert_eq!(doctor["capabilities"]["CAP_BPF"], true, "root has CAP_BPF\n{shown}");
    let programs = doctor["programs"].as_array().unwrap_or_else(|| panic!("no programs\n{shown}"));
    let names: Vec<&str> = programs.iter().filter_map(|p| p["name"].as_str()).collect();
    for name in PROGRAMS {
        assert!(names.contains(&name), "{name} is not listed\n{shown}");
    }
    for p in programs {
        let loaded = p["loaded"].as_bool().unwrap_or_else(|| panic!("no `loaded`: {p}"));
        assert_eq!(loaded, p["error"].is_null(), "an error exactly when not loaded: {p}");
        assert!(p["load_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{p}");
        // verified_insns exists since Linux 5.16: this kernel has it.
        assert_eq!(loaded, p["verified_insns"].as_u64().is_some_and(|n| n > 0), "{p}");
    }
    let features: Vec<&str> =
        doctor["features"].as_array().into_iter().flatten().filter_map(|f| f["name"].as_str()).collect();
    for name in ["live timeline", "owners", "TIME_WAIT", "backup", "hit count", "close reasons", "-- CMD", "exec notices"] {
        assert!(features.contains(&name), "feature {name} is not listed\n{shown}");
    }
    assert_eq!(doctor["core_ok"], true, "the core timeline must run here as root\n{shown}");
    assert!(out.status.success(), "core_ok means exit status 0\n{shown}");
    assert!(took < Duration::from_secs(60), "{took:?}");
}

/// `--verbose` says how long each start-up stage took, and the stages add up to the total
/// from `main` to the first record shown, which is itself within the run's wall time.
#[test]
fn verbose_reports_the_start_up_stages() {
    privileged!();
    let (out, took) = Portrace::run_once(&["--verbose", "--duration", "500ms", "--port", "9"], Duration::from_secs(60));
    let shown = format!("status {}\n--- stderr\n{}", out.status, out.stderr);
    assert!(out.status.success(), "{shown}");
    let line = out.stderr.lines().find(|l| l.starts_with("portrace: started in ")).unwrap_or_else(|| panic!("no start-up line\n{shown}"));
    let ms = |text: &str| -> f64 { text.trim().trim_end_matches(" ms").parse().unwrap_or_else(|_| panic!("not a duration: {text:?}\n{shown}")) };
    let (total, stages) = line["portrace: started in ".len()..].split_once(": ").expect("stages after the total");
    let total = ms(total);
    // Top-level stages only: the parts in parentheses are inside them.
    let mut depth = 0;
    let mut top = String::new();
    for c in stages.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ if depth == 0 => top.push(c),
            _ => {}
        }
    }
    let named: Vec<(&str, f64)> = top
        .split(", ")
        .map(|stage| {
            let (name, value) = stage.trim().rsplit_once(' ').and_then(|(rest, unit)| {
                assert_eq!(unit, "ms", "{shown}");
                rest.rsplit_once(' ')
            }).unwrap_or_else(|| panic!("not `name N ms`: {stage:?}\n{shown}"));
            (name, ms(value))
        })
        .collect();
    let names: Vec<&str> = named.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["checks", "kernel offsets", "loading", "inventory and first output"], "{shown}");
    let sum: f64 = named.iter().map(|(_, v)| v).sum();
    assert!((sum - total).abs() < 0.5 + 0.01 * total, "stages sum to {sum} ms, total {total} ms\n{shown}");
    assert!(total > 0.0 && total < took.as_secs_f64() * 1000.0, "total {total} ms, run {took:?}\n{shown}");
    for part in ["BTF", "kallsyms", "object and maps", "verifying, in parallel"] {
        assert!(line.contains(&format!("{part} ")), "no {part}\n{shown}");
    }
}
