//! The capabilities the systemd unit grants (portrace/dist/portrace.service), checked
//! against the real binary and real traffic. portrace runs as `nobody` with exactly the
//! unit's set as ambient capabilities and no-new-privs, as systemd starts it
//! (`DynamicUser=`, `AmbientCapabilities=`, `NoNewPrivileges=`): it traces a connection
//! made in a test namespace, finds the owner of another user's socket, and tracks
//! TIME_WAIT. Then each capability is left out in turn, and what it is there for must
//! stop working, as docs/install.md says. Needs root (setpriv, namespaces, eBPF).

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use portrace_tests::process::run_bounded;
use portrace_tests::{privileged, Closer, Netns, Portrace, Tcpload};
use serde_json::Value;

/// The unit file as shipped in the package.
const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../portrace/dist/portrace.service");
/// What the unit grants, and what docs/install.md explains.
const CAPS: [&str; 5] = ["CAP_BPF", "CAP_PERFMON", "CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE", "CAP_SYSLOG"];
/// The test's listening port in its namespace (the other tests use other ports).
const PORT: u16 = 65231;
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// The capabilities named on the unit's `KEY=` lines.
fn unit_caps(key: &str) -> Vec<String> {
    let unit = fs::read_to_string(UNIT).unwrap_or_else(|e| panic!("cannot read {UNIT}: {e}"));
    let mut caps: Vec<String> = unit
        .lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .flat_map(|value| value.split_whitespace().map(str::to_owned))
        .collect();
    caps.sort();
    caps
}

#[test]
fn the_unit_grants_exactly_the_capabilities_documented() {
    let mut expected: Vec<String> = CAPS.iter().map(|c| c.to_string()).collect();
    expected.sort();
    assert_eq!(unit_caps("AmbientCapabilities"), expected);
    assert_eq!(unit_caps("CapabilityBoundingSet"), expected);
    let doc = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/install.md")).expect("docs/install.md");
    for cap in CAPS {
        assert!(doc.contains(cap), "docs/install.md does not explain {cap}");
    }
}

/// A copy of the binary that `nobody` can run (the build directory may not be
/// reachable for it), in a directory removed on drop.
struct ServiceBinary {
    dir: PathBuf,
    bin: PathBuf,
}

impl ServiceBinary {
    fn new() -> ServiceBinary {
        let dir = std::env::temp_dir().join(format!("portrace-service-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).expect("temp dir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod dir");
        let bin = dir.join("portrace");
        fs::copy(Portrace::bin(), &bin).expect("copy the binary");
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod binary");
        ServiceBinary { dir, bin }
    }

    /// `portrace ARGS` as `nobody`, with exactly `caps` (ambient, inheritable, bounding)
    /// and no-new-privs.
    fn command(&self, caps: &[&str], args: &[&str]) -> Command {
        let list: String = std::iter::once("-all".to_owned())
            .chain(caps.iter().map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase())))
            .collect::<Vec<_>>()
            .join(",");
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid", "nobody", "--regid", "nogroup", "--clear-groups", "--no-new-privs"])
            .arg(format!("--inh-caps={list}"))
            .arg(format!("--ambient-caps={list}"))
            .arg(format!("--bounding-set={list}"))
            .arg(&self.bin)
            .args(args);
        cmd
    }

    fn run(&self, caps: &[&str], args: &[&str]) -> portrace_tests::process::Finished {
        let label = format!("portrace {} with {}", args.join(" "), caps.join(","));
        run_bounded(&label, self.command(caps, args), RUN_TIMEOUT)
    }

    /// `portrace doctor --json` with `caps`.
    fn doctor(&self, caps: &[&str]) -> Value {
        let out = self.run(caps, &["doctor", "--json"]);
        let line = out.stdout.first().unwrap_or_else(|| panic!("doctor printed nothing: {}", out.stderr));
        serde_json::from_str(line).unwrap_or_else(|e| panic!("doctor --json: {e}: {line}"))
    }

    /// The owner pid `--snapshot` gives the socket listening on `port` (in the host's
    /// namespace).
    fn snapshot_owner(&self, caps: &[&str], port: u16) -> Option<u64> {
        let out = self.run(caps, &["--snapshot", "-f", "json", "--port", &port.to_string()]);
        out.assert_success();
        let record = out
            .stdout
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|r| r["type"] == "socket" && r["sport"] == port)
            .unwrap_or_else(|| panic!("the listener on {port} is not in the snapshot: {:?}", out.stdout));
        record["owner_pid"].as_u64()
    }
}

impl Drop for ServiceBinary {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn without(cap: &str) -> Vec<&'static str> {
    CAPS.iter().copied().filter(|c| *c != cap).collect()
}

fn feature(doctor: &Value, name: &str) -> (bool, String) {
    let f = doctor["features"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["name"] == name))
        .unwrap_or_else(|| panic!("no feature {name}: {doctor}"));
    (f["on"].as_bool().unwrap_or(false), f["reason"].as_str().unwrap_or_default().to_owned())
}

fn sysctl(name: &str) -> i64 {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")).trim().parse().expect("a number")
}

/// Whether /proc/kallsyms shows addresses only to a process with CAP_SYSLOG here
/// (kernel/kallsyms.c: kptr_restrict 1, or 0 with perf_event_paranoid above 1; with 2
/// nobody sees them).
fn kallsyms_needs_syslog() -> bool {
    let restrict = sysctl("kernel.kptr_restrict");
    restrict == 1 || (restrict == 0 && sysctl("kernel.perf_event_paranoid") > 1)
}

/// Whether only root can list tracefs here (its usual mode, 0700).
fn tracefs_root_only() -> bool {
    let mode = fs::metadata("/sys/kernel/tracing").expect("tracefs is mounted").permissions().mode();
    mode & 0o005 != 0o005
}

#[test]
fn with_the_units_capabilities_a_non_root_user_traces_a_real_connection() {
    let _guard = privileged();
    let service = ServiceBinary::new();
    let ns = Netns::create();
    let load = Tcpload::new(env!("CARGO_BIN_EXE_tcpload"));
    let server = load.server(&ns, &format!("127.0.0.1:{PORT}"), 1, Closer::Client);
    let args = ["-f", "json", "--port", &PORT.to_string()];
    let mut portrace = Portrace::spawn_command(service.command(&CAPS, &args), &args);
    portrace.wait_ready();
    load.client(&ns, &format!("127.0.0.1:{PORT}"), 1, 1, Closer::Client);
    server.wait_success(portrace_tests::tcpload::WAIT);
    // The client's 5 and the accepted socket's 5 (seq::CLIENT_ACTIVE, seq::CHILD_PASSIVE),
    // and the listener's close (it was listening before portrace started).
    let seen = portrace.wait_for_transitions(11, Duration::from_secs(15));
    let run = portrace.stop();
    let shown = format!("{seen} transitions\n--- stderr\n{}", run.stderr);
    assert!(run.status.success(), "{shown}");
    let transitions = run.transitions();
    let edges: Vec<String> = transitions.iter().map(|t| format!("{}->{}", t.oldstate, t.newstate)).collect();
    for edge in ["LISTEN->CLOSE", "CLOSE->SYN_SENT", "SYN_SENT->ESTABLISHED", "LISTEN->SYN_RECV", "SYN_RECV->ESTABLISHED"] {
        assert!(edges.iter().any(|e| e == edge), "{edge} missing from {edges:?}\n{shown}");
    }
    assert!(transitions.iter().all(|t| t.sport == PORT || t.dport == PORT), "{edges:?}");
    assert!(transitions.iter().any(|t| t.comm == "tcpload"), "{shown}");
    // With kptr_restrict 2 not even CAP_SYSLOG shows kernel addresses.
    if sysctl("kernel.kptr_restrict") < 2 {
        assert!(edges.iter().any(|e| e == "FIN_WAIT2->TIME_WAIT"), "TIME_WAIT is tracked: {edges:?}\n{shown}");
        assert!(!run.stderr.contains("TIME_WAIT off"), "{shown}");
    }
    // The one feature the unit goes without (docs/install.md): the ftrace instance would
    // take CAP_DAC_OVERRIDE.
    assert!(run.stderr.contains("hit count off"), "{shown}");

    let doctor = service.doctor(&CAPS);
    assert_eq!(doctor["core_ok"], true, "{doctor}");
    assert_eq!((doctor["capabilities"]["CAP_BPF"].as_bool(), doctor["capabilities"]["CAP_PERFMON"].as_bool()), (Some(true), Some(true)));
    assert_eq!(doctor["capabilities"]["CAP_SYS_ADMIN"], false, "the unit does not grant CAP_SYS_ADMIN: {doctor}");
    assert!(doctor["programs"].as_array().is_some_and(|p| p.iter().all(|p| p["loaded"] == true)), "{doctor}");

    // Another user's socket (this test runs as root): its owner is found.
    let listener = TcpListener::bind("127.0.0.1:0").expect("a listener in the host's namespace");
    let port = listener.local_addr().unwrap().port();
    assert_eq!(service.snapshot_owner(&CAPS, port), Some(u64::from(std::process::id())));
}

#[test]
fn without_any_one_of_the_units_capabilities_something_stops_working() {
    let _guard = privileged();
    let service = ServiceBinary::new();
    let live = ["--count", "1", "--duration", "2s", "-f", "json"];

    for cap in ["CAP_BPF", "CAP_PERFMON"] {
        let out = service.run(&without(cap), &live);
        assert_eq!(out.status.code(), Some(1), "{cap}: {}", out.stderr);
        assert!(out.stderr.contains(&format!("lacks {cap}")), "{cap}: {}", out.stderr);
    }

    let out = service.run(&without("CAP_DAC_READ_SEARCH"), &live);
    if tracefs_root_only() {
        assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
        assert!(out.stderr.contains("cannot list /sys/kernel/tracing"), "{}", out.stderr);
    } else {
        out.assert_success();
    }

    let listener = TcpListener::bind("127.0.0.1:0").expect("a listener in the host's namespace");
    let port = listener.local_addr().unwrap().port();
    assert_eq!(service.snapshot_owner(&CAPS, port), Some(u64::from(std::process::id())));
    assert_eq!(service.snapshot_owner(&without("CAP_SYS_PTRACE"), port), None, "another user's /proc/PID/fd needs CAP_SYS_PTRACE");

    let (with, _) = feature(&service.doctor(&CAPS), "TIME_WAIT");
    let (without_syslog, reason) = feature(&service.doctor(&without("CAP_SYSLOG")), "TIME_WAIT");
    if kallsyms_needs_syslog() {
        assert!(with, "TIME_WAIT with CAP_SYSLOG");
        assert!(!without_syslog && reason.contains("kptr_restrict"), "TIME_WAIT without CAP_SYSLOG: {reason}");
    } else {
        assert_eq!(with, without_syslog, "here kallsyms does not depend on CAP_SYSLOG");
    }
    drop(listener);
    assert!(Path::new(&service.bin).is_file());
}
