//! `portrace doctor` as root on this machine: it loads every kernel program without
//! attaching any, says how each load went in its JSON object, and says the core timeline
//! can run (exit status 0). Needs root, as every test that loads the programs does.

use std::time::Duration;

use portrace_tests::{privileged, Portrace};
use serde_json::Value;

/// Every program the kernel object holds (portrace-ebpf/src/program.rs).
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
