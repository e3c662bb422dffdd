//! vm_scenario: the short scenario `cargo xtask vm-test` runs on each kernel of its matrix
//! (in a QEMU guest, or on the host). In a network namespace of its own it starts
//! portrace, then two servers and three clients as separate processes: a connection the
//! client closes first (the client goes to TIME_WAIT), one the server closes first (the
//! server's socket does), and a connect to a port nobody listens on (refused); then it
//! deletes the namespace, which ends both TIME_WAITs. Every
//! port is fixed in advance, so each transition's addresses, ports and owner are known;
//! `portrace_tests::scenario` says what portrace must print and compares. It prints one
//! JSON line, `{"type":"vm_scenario","pass":...,"problems":[...]}`, and exits 0 only
//! when the run passed.
//!
//! ```text
//! vm_scenario --portrace PATH --tcpload PATH [--filtered] [--base-port PORT]
//! ```
//!
//! Without `--filtered` portrace runs with no filter, and only the namespace's
//! transitions are compared (the host may have other traffic). With `--filtered` it runs
//! with `--addr`, `--port`, `--pid`, `--comm` and `--state` chosen so that each leaves out
//! something the others keep, and everything it prints is compared with the subset the
//! filters keep. Every wait has a deadline; every process and the namespace are removed
//! when the run ends, passed or not.

use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::time::Duration;

use portrace_tests::netns::Netns;
use portrace_tests::records::{lost_total, transitions};
use portrace_tests::scenario::{
    check, ExpectedSocket, Filters, Outcome, Plan, Ports, Process, ADDR,
};
use portrace_tests::tcpload::{Closer, Tcpload};
use portrace_tests::{Portrace, Proc};
use serde_json::Value;

/// How long portrace may take to deliver the expected transitions once the workload is
/// done: generous, for software emulation.
const RECORDS_TIMEOUT: Duration = Duration::from_secs(30);
/// How long portrace may take to load and attach its programs and print its start record.
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// After the expected count arrived: time for a duplicate or a stray record to show.
const SETTLE: Duration = Duration::from_millis(500);
/// The server's name in the scenario (a link to tcpload), so `--comm` can tell it apart.
const SERVER_COMM: &str = "vmsrv";
const CLIENT_COMM: &str = "tcpload";
const USAGE: &str =
    "usage: vm_scenario --portrace PATH --tcpload PATH [--filtered] [--base-port PORT]";

struct Options {
    portrace: String,
    tcpload: String,
    filtered: bool,
    base_port: u16,
}

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let (mut portrace, mut tcpload, mut filtered, mut base_port) = (None, None, false, None);
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or(format!("{flag} needs a value"));
        match arg.as_str() {
            "--portrace" => portrace = Some(value("--portrace")?),
            "--tcpload" => tcpload = Some(value("--tcpload")?),
            "--filtered" => filtered = true,
            "--base-port" => {
                let text = value("--base-port")?;
                let port: u16 = text
                    .parse()
                    .ok()
                    .filter(|p| (1024..=65530).contains(p))
                    .ok_or(format!(
                        "--base-port {text}: expected a port from 1024 to 65530"
                    ))?;
                base_port = Some(port);
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(Options {
        portrace: portrace.ok_or(format!("--portrace is required\n{USAGE}"))?,
        tcpload: tcpload.ok_or(format!("--tcpload is required\n{USAGE}"))?,
        filtered,
        // Above the namespace's ephemeral range (1024-65000), apart from the tests' ports.
        base_port: base_port.unwrap_or(if filtered { 65420 } else { 65410 }),
    })
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(err) => {
            eprintln!("vm_scenario: {err}");
            return ExitCode::from(2);
        }
    };
    // Read by the Portrace fixture; set before any thread exists.
    std::env::set_var("PORTRACE_BIN", &options.portrace);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"));
    let mode = if options.filtered {
        "filtered"
    } else {
        "unfiltered"
    };
    // The fixtures report trouble by panicking (with what the process printed); their
    // Drop impls kill and reap the processes and delete the namespace on the way out. The
    // message becomes the result's problem, so the hook only says where.
    panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map_or("?".into(), |l| format!("{}:{}", l.file(), l.line()));
        eprintln!("vm_scenario: a check failed at {at}");
    }));
    let mut full_message = None;
    let outcome = match panic::catch_unwind(AssertUnwindSafe(|| run(&options))) {
        Ok(outcome) => outcome,
        Err(payload) => {
            let why = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the scenario panicked".into());
            let short = why.lines().next().unwrap_or("").to_string();
            full_message = Some(why);
            Outcome::broken(mode, &[], short)
        }
    };
    println!("{}", outcome.to_json(&kernel));
    for problem in &outcome.problems {
        eprintln!("vm_scenario {mode}: {problem}");
    }
    if let Some(full) = &full_message {
        eprintln!("vm_scenario {mode}: in full:\n{full}");
    }
    if outcome.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// portrace's first line of complaint, shortened when it is a verifier's refusal
/// (`portrace: loading NAME: ... Verifier output: VERDICT`) to the program and verdict.
fn refusal(said: &str) -> String {
    let program = said
        .split_once("loading ")
        .and_then(|(_, rest)| rest.split_once(':'))
        .map(|(name, _)| name);
    match (program, said.split_once("Verifier output:")) {
        (Some(program), Some((_, verdict))) => {
            format!("the verifier refused {program}: {}", verdict.trim())
        }
        _ => said.trim().to_string(),
    }
}

/// A process held at its start line: spawned, its pid known, not yet on the network.
fn held(proc: Proc, comm: &str) -> (Process, Proc) {
    (
        Process {
            pid: proc.pid(),
            comm: comm.to_string(),
        },
        proc,
    )
}

fn run(options: &Options) -> Outcome {
    let mode = if options.filtered {
        "filtered"
    } else {
        "unfiltered"
    };
    let ports = Ports::from_base(options.base_port);
    let ns = Netns::create();
    let load = Tcpload::new(&options.tcpload);
    let renamed = load.renamed(SERVER_COMM);
    let at = |port: u16| format!("{ADDR}:{port}");
    let bind = |port: u16| ["--bind".to_string(), at(port), "--wait-stdin".to_string()];
    let client = |to: u16, closer: Closer, from: u16, extra: &[&str]| {
        let bind = bind(from);
        let mut args: Vec<&str> = bind.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        load.spawn_client_with(&ns, &at(to), 1, 1, closer, &args)
    };
    // Everyone waits at the start line, so the pids can go into the filter first.
    let (server_a, mut server_a_proc) = held(
        renamed
            .load()
            .spawn_server_held(&ns, &at(ports.listen_a), 1, Closer::Client, &[]),
        SERVER_COMM,
    );
    let (server_b, mut server_b_proc) = held(
        load.spawn_server_held(&ns, &at(ports.listen_b), 1, Closer::Server, &[]),
        CLIENT_COMM,
    );
    let (client_a, mut client_a_proc) = held(
        client(ports.listen_a, Closer::Client, ports.client_a, &[]),
        CLIENT_COMM,
    );
    let (client_b, mut client_b_proc) = held(
        client(ports.listen_b, Closer::Server, ports.client_b, &[]),
        CLIENT_COMM,
    );
    let (client_refused, mut client_refused_proc) = held(
        client(
            ports.refused,
            Closer::Client,
            ports.client_refused,
            &["--expect", "refused"],
        ),
        CLIENT_COMM,
    );
    let plan = Plan {
        ports,
        server_a,
        server_b,
        client_a,
        client_b,
        client_refused,
    };
    let filters = options
        .filtered
        .then(|| Filters::narrowing(&plan, CLIENT_COMM));
    let expected: Vec<ExpectedSocket> = match &filters {
        Some(filters) => filters.keep(&plan.expected()),
        None => plan.expected(),
    };
    let args = filters.as_ref().map(Filters::args).unwrap_or_default();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut portrace = Portrace::spawn(&args);
    // The fixture's own wait gives up after 15 s: software emulation verifies a program
    // ten to a hundred times slower than the host (13 s for the main program on 6.1).
    let ready = portrace.wait_until(READY_TIMEOUT, |records| !records.is_empty());
    let started = portrace
        .records()
        .first()
        .is_some_and(|r| r["type"] == "start");
    if !ready || !started {
        let waited = READY_TIMEOUT.as_secs();
        let run = portrace.stop();
        eprintln!("vm_scenario: portrace's stderr:\n{}", run.stderr);
        let said = run
            .stderr
            .lines()
            .find(|l| !l.trim().is_empty())
            .map(refusal)
            .unwrap_or_else(|| format!("it printed nothing within {waited} s"));
        return Outcome::broken(
            mode,
            &expected,
            format!("portrace did not start ({}): {said}", run.status),
        );
    }

    Tcpload::release_server(&mut server_a_proc);
    Tcpload::release_server(&mut server_b_proc);
    Tcpload::go(&mut client_a_proc);
    Tcpload::finish_client(client_a_proc, 1);
    Tcpload::go(&mut client_b_proc);
    Tcpload::finish_client(client_b_proc, 1);
    Tcpload::go(&mut client_refused_proc);
    Tcpload::finish_client(client_refused_proc, 1);
    server_a_proc.wait_success(portrace_tests::tcpload::WAIT);
    server_b_proc.wait_success(portrace_tests::tcpload::WAIT);

    // Unfiltered, only this namespace's records count; filtered, every record does.
    let netns = ns.inode();
    // Deleting the namespace ends its TIME_WAITs (the kernel kills them as it tears the
    // namespace down, shortly after): both connections' TIME_WAIT then shows its end.
    drop(ns);
    let ours = move |r: &Value| options.filtered || r["netns"].as_u64() == Some(netns);
    let want: usize = expected.iter().map(|s| s.edges.len()).sum();
    portrace.wait_until(RECORDS_TIMEOUT, |records| {
        records
            .iter()
            .filter(|r| r["type"] == "transition" && ours(r))
            .count()
            >= want
    });
    std::thread::sleep(SETTLE);
    let run = portrace.stop();
    // What portrace said about the kernel (features it turned off, and why) goes with
    // the result, for whoever reads a failure.
    eprintln!("vm_scenario: portrace's stderr:\n{}", run.stderr);
    if !run.status.success() {
        return Outcome::broken(
            mode,
            &expected,
            format!("portrace exited with {}: {}", run.status, run.stderr.trim()),
        );
    }
    let records: Vec<Value> = run.records.iter().filter(|r| ours(r)).cloned().collect();
    let lost = lost_total(&run.records);
    check(mode, &expected, &transitions(&records), lost.transitions())
}
