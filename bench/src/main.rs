//! portrace-bench: does portrace capture every transition at the machine's maximum
//! connection rate, and what does that cost, side by side with the peers (libbpf-tools'
//! and bcc's tcpstates, bpftrace)? For each transport (loopback, veth) and round, every
//! tracer gets an untraced run of the workload followed by a traced one; each traced run
//! is scored against the ground truth and measured for losses, kernel skips, CPU, rate,
//! start-up, memory and in-kernel cost. One table goes to standard output, the full
//! results to a JSON file. `cargo xtask bench` builds the binaries and runs this.

mod bpf;
mod breakdown;
mod cli;
mod measure;
mod netns;
mod paced;
mod peers;
mod procfs;
mod quiet;
mod alternatives;
mod report;
mod sampled;
mod soak;
mod sys;
mod tracepoint_cost;
mod tracers;
mod truth;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use serde_json::json;

use cli::{Cli, Command, Options, TracerKind, TransportChoice};
use measure::{Bench, TracedRun, Transport, UntracedRun};
use sys::Error;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::PacedClient(o) => match paced::main(o) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("paced client: {e}");
                ExitCode::FAILURE
            }
        },
        Command::UdpFlood(o) => io_exit("udp flood", quiet::flood(o.to, o.seconds)),
        Command::UdpSink(o) => io_exit("udp sink", quiet::sink(o.at, o.seconds)),
        Command::Soak(o) => match soak::main(o) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("soak: FAILED: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(o) => {
            sys::install_signal_handlers();
            let guard = sys::CleanupGuard;
            let result = run(o);
            drop(guard);
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(Error::Interrupted) => {
                    eprintln!("bench: interrupted; processes stopped and namespaces removed");
                    ExitCode::from(130)
                }
                Err(Error::Failed(e)) => {
                    eprintln!("bench: FAILED: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn io_exit(what: &str, result: std::io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{what}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

fn run(mut o: Options) -> sys::Result<()> {
    if !peers::is_root() {
        return Err(Error::Failed(
            "the benchmark loads BPF programs and creates network namespaces: run it as root"
                .into(),
        ));
    }
    for tool in ["ip", "sysctl"] {
        peers::require_tool(tool)?;
    }
    o.portrace = absolute(&o.portrace);
    o.tcpload = absolute(&o.tcpload);
    o.out = absolute(&o.out);
    o.work_dir = absolute(&o.work_dir);
    if !o.tcpload.is_file() {
        return Err(Error::Failed(format!(
            "{} does not exist (cargo build --release -p portrace-tests --bin tcpload)",
            o.tcpload.display()
        )));
    }
    std::fs::create_dir_all(&o.work_dir)
        .map_err(|e| format!("creating {}: {e}", o.work_dir.display()))?;
    // Others may rebuild target/release while this runs: every run uses these copies.
    let bin_dir = o.work_dir.join("bin");
    std::fs::create_dir_all(&bin_dir)
        .map_err(|e| format!("creating {}: {e}", bin_dir.display()))?;
    for (what, path) in [("portrace", &mut o.portrace), ("tcpload", &mut o.tcpload)] {
        let copy = bin_dir.join(what);
        if path.is_file() && *path != copy {
            let _ = std::fs::remove_file(&copy);
            std::fs::copy(&*path, &copy).map_err(|e| format!("copying {}: {e}", path.display()))?;
            *path = copy;
        }
    }
    netns::remove_stale();
    if o.install_peers {
        peers::install(&o.work_dir)?;
    }
    sys::check()?;

    let tracer_kinds = o.tracer_list();
    let mut located = Vec::new();
    let mut unavailable: Vec<(TracerKind, String)> = Vec::new();
    for &kind in &tracer_kinds {
        match peers::locate(kind, &o) {
            Ok(l) => {
                eprintln!(
                    "bench: {}: {} ({})",
                    kind.name(),
                    l.program.display(),
                    l.version
                );
                located.push(l);
            }
            Err(why) => {
                eprintln!("bench: {}: {why}", kind.name());
                unavailable.push((kind, why));
            }
        }
    }
    let transports = match o.transport {
        TransportChoice::Loopback => vec![Transport::Loopback],
        TransportChoice::Veth => vec![Transport::Veth],
        TransportChoice::Both => vec![Transport::Loopback, Transport::Veth],
    };
    let shape = workload::Shape {
        count: o.count,
        concurrency: o.concurrency,
        rate: o.rate,
        closer: o.closer,
        tcpload: o.tcpload.clone(),
        self_exe: std::env::current_exe().map_err(|e| format!("finding this program: {e}"))?,
    };
    eprintln!(
        "bench: {} connections, concurrency {}, {}, {} closes first; {} round(s) on {}; ports 63000-63099",
        o.count,
        o.concurrency,
        o.rate.describe(),
        o.closer.name(),
        o.rounds,
        transports.iter().map(|t| t.name()).collect::<Vec<_>>().join(" and ")
    );
    let mut bench = Bench::new(shape.clone(), o.work_dir.join("runs"), o.keep_raw);
    let started = std::time::Instant::now();
    let mut untraced: Vec<UntracedRun> = Vec::new();
    let mut traced: Vec<TracedRun> = Vec::new();
    let mut discarded: Vec<serde_json::Value> = Vec::new();
    let mut waits: Vec<measure::Quiet> = Vec::new();
    for &transport in &transports {
        for round in 1..=o.rounds {
            for tracer in &located {
                // An untraced run, then the traced one; both again if others disturbed them.
                for attempt in 0..=o.retries {
                    let quiet =
                        measure::wait_for_quiet(std::time::Duration::from_secs(o.quiet_wait))?;
                    waits.push(quiet);
                    let u = measure::untraced(&mut bench, transport, round)?;
                    let rate = u.result.as_ref().ok().map(|o| o.rate);
                    match &u.result {
                        Ok(w) => eprintln!(
                            "bench: {} round {round}: untraced {:.0} conn/s",
                            transport.name(),
                            w.rate
                        ),
                        Err(e) => eprintln!(
                            "bench: {} round {round}: untraced run failed: {e}",
                            transport.name()
                        ),
                    }
                    let t = measure::traced(&mut bench, tracer, transport, round, rate)?;
                    eprintln!(
                        "bench: {} round {round}: {}",
                        transport.name(),
                        progress(&t)
                    );
                    let disturbed: Vec<String> = [u.disturbed(), t.disturbed()]
                        .into_iter()
                        .flatten()
                        .collect();
                    if !disturbed.is_empty() && attempt < o.retries {
                        eprintln!(
                            "bench: disturbed ({}); running the pair again",
                            disturbed.join("; ")
                        );
                        discarded.push(json!({
                            "why": disturbed,
                            "untraced": report::untraced_json(&u),
                            "traced": report::traced_json(&t),
                        }));
                        continue;
                    }
                    untraced.push(u);
                    traced.push(t);
                    break;
                }
            }
        }
    }

    let mut rows = Vec::new();
    for &transport in &transports {
        for &kind in &tracer_kinds {
            if let Some((_, why)) = unavailable.iter().find(|(k, _)| *k == kind) {
                rows.push(report::Row {
                    transport: Some(transport),
                    tracer: Some(kind),
                    unavailable: Some(why.clone()),
                    ..report::Row::default()
                });
            } else {
                rows.push(report::row(transport, kind, &traced));
            }
        }
    }
    for row in rows.iter_mut() {
        if row.tracer == Some(TracerKind::Portrace) && row.unavailable.is_none() {
            report::judge(row);
        }
    }
    let table = report::table(&rows, &untraced);
    let notes = report::notes(&rows, &untraced);
    // The quiet cost: portrace idle on a host busy with timers that are not TCP's.
    let quiet_rounds = if o.quiet_rounds > 0 && located.iter().any(|l| l.kind == TracerKind::Portrace) {
        measure::wait_for_quiet(std::time::Duration::from_secs(o.quiet_wait))?;
        quiet::measure(&o.portrace, o.quiet_rounds, o.quiet_seconds, &o.work_dir)?
    } else {
        Vec::new()
    };
    let quiet_summary = (!quiet_rounds.is_empty()).then(|| quiet::summarize(&quiet_rounds));
    // What other designs of the state program would cost here.
    let reference = if o.reference_rounds > 0 {
        measure::wait_for_quiet(std::time::Duration::from_secs(o.quiet_wait))?;
        alternatives::measure(&mut bench, o.reference_rounds)?
    } else {
        Vec::new()
    };
    // And of the timer programs' way out, on the quiet cost's work.
    let timer_reference = if o.reference_rounds > 0 && !quiet_rounds.is_empty() {
        measure::wait_for_quiet(std::time::Duration::from_secs(o.quiet_wait))?;
        Some(alternatives::measure_timers(o.quiet_seconds, &o.work_dir)?)
    } else {
        None
    };
    // Where portrace's own CPU goes, stage by stage (needs perf).
    // And where the state tracepoint's kernel time goes, the BPF statistics' blind spots
    // included (needs perf too).
    let (breakdown, tracepoint_cost) = if o.breakdown && located.iter().any(|l| l.kind == TracerKind::Portrace) {
        match tracers::find_program("perf") {
            Some(perf) => {
                measure::wait_for_quiet(std::time::Duration::from_secs(o.quiet_wait))?;
                let process = breakdown::measure(&o.portrace, &perf, &shape, &o.work_dir)?;
                measure::wait_for_quiet(std::time::Duration::from_secs(o.quiet_wait))?;
                let kernel = tracepoint_cost::measure(&o.portrace, &perf, &shape, &o.work_dir)?;
                (Some(process), Some(kernel))
            }
            None => {
                eprintln!("bench: no breakdown of portrace's CPU: it needs perf (`apt-get install linux-perf`, or run with --install-peers)");
                (None, None)
            }
        }
    } else {
        (None, None)
    };
    println!();
    println!(
        "portrace benchmark: {} connections x {} rounds, concurrency {}, {}, {} closes first ({:.0} s)",
        o.count,
        o.rounds,
        o.concurrency,
        o.rate.describe(),
        o.closer.name(),
        started.elapsed().as_secs_f64()
    );
    println!("targets for portrace: captured 100%, 0 lost, 0 silent misses, rate ratio >= 0.8, CPU <= 1.0 us per transition (process and programs), in-kernel <= 250 ns per transition (all programs), start-up < 100 ms, peak RSS <= 24 MB");
    println!();
    print!("{table}");
    if !notes.is_empty() {
        println!();
        print!("{notes}");
    }
    let quiet_table = quiet_summary.as_ref().map(|s| quiet::table(s, quiet_rounds.len(), o.quiet_seconds));
    if let Some(text) = &quiet_table {
        println!();
        print!("{text}");
    }
    let reference_table = (!reference.is_empty()).then(|| alternatives::table(&reference));
    if let Some(text) = &reference_table {
        println!();
        print!("{text}");
    }
    let timer_reference_table = timer_reference.as_ref().map(|r| alternatives::timer_table(r, o.quiet_seconds));
    if let Some(text) = &timer_reference_table {
        println!();
        print!("{text}");
    }
    let breakdown_table = breakdown.as_ref().map(breakdown::Breakdown::table);
    if let Some(text) = &breakdown_table {
        println!();
        print!("{text}");
    }
    let tracepoint_table = tracepoint_cost.as_ref().map(tracepoint_cost::TracepointCost::table);
    if let Some(text) = &tracepoint_table {
        println!();
        print!("{text}");
    }

    let results = json!({
        "schema": 1,
        "generated_unix_s": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "machine": {
            "kernel": peers::kernel_release(),
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        },
        "options": {
            "count": o.count, "concurrency": o.concurrency, "rate": o.rate.describe(),
            "close_first": o.closer.name(), "transports": transports.iter().map(|t| t.name()).collect::<Vec<_>>(),
            "tracers": tracer_kinds.iter().map(|k| k.name()).collect::<Vec<_>>(), "rounds": o.rounds,
            "ports": "63000-63099",
        },
        "tracers": located.iter().map(|l| json!({
            "tracer": l.kind.name(), "program": l.program, "version": l.version,
            "env": l.env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "command": l.command(tracers::Target { port: 0, server_addr: std::net::Ipv4Addr::UNSPECIFIED }, &o.work_dir)
                .map(|c| format!("{c:?}")).unwrap_or_default(),
        })).collect::<Vec<_>>(),
        "unavailable": unavailable.iter().map(|(k, why)| json!({"tracer": k.name(), "why": why})).collect::<Vec<_>>(),
        "summary": rows.iter().map(report::row_json).collect::<Vec<_>>(),
        "untraced_runs": untraced.iter().map(report::untraced_json).collect::<Vec<_>>(),
        "traced_runs": traced.iter().map(report::traced_json).collect::<Vec<_>>(),
        "discarded_runs": discarded,
        "quiet_waits": waits.iter().map(|q| json!({
            "waited_s": q.waited.as_secs_f64(), "transitions_per_s": q.transitions_per_s,
            "other_cores": q.other_cores, "quiet": q.quiet,
        })).collect::<Vec<_>>(),
        "table_markdown": table,
        "notes": notes,
        "quiet_cost": quiet_summary.as_ref().map(|s| quiet::json(&quiet_rounds, s)),
        "quiet_cost_table": quiet_table,
        "reference_programs": (!reference.is_empty()).then(|| alternatives::json(&reference)),
        "reference_programs_table": reference_table,
        "reference_timer_programs": timer_reference.as_ref().map(|r| alternatives::json(std::slice::from_ref(r))),
        "reference_timer_programs_table": timer_reference_table,
        "breakdown": breakdown.as_ref().map(breakdown::Breakdown::json),
        "breakdown_table": breakdown_table,
        "tracepoint_cost": tracepoint_cost.as_ref().map(tracepoint_cost::TracepointCost::json),
        "tracepoint_cost_table": tracepoint_table,
    });
    if let Some(dir) = o.out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let text =
        serde_json::to_string_pretty(&results).map_err(|e| format!("encoding the results: {e}"))?;
    std::fs::write(&o.out, text).map_err(|e| format!("writing {}: {e}", o.out.display()))?;
    println!();
    println!("full results: {}", o.out.display());
    Ok(())
}

fn progress(t: &TracedRun) -> String {
    if let Some(e) = &t.error {
        return format!("{}: FAILED: {e}", t.tracer.name());
    }
    format!(
        "{}: captured {:.3}% ({}/{}), lost {}, skips {}, CPU {:.2} us/event, rate {:.0} conn/s, start-up {:.0} ms, peak RSS {:.1} MB",
        t.tracer.name(),
        t.score.captured_pct(),
        t.score.matched,
        t.score.expected,
        t.parsed.lost,
        t.skips(),
        if t.parsed.transitions > 0 { t.cpu.as_nanos() as f64 / t.parsed.transitions as f64 / 1000.0 } else { 0.0 },
        t.workload.as_ref().map_or(0.0, |w| w.rate),
        t.startup.ready.as_secs_f64() * 1000.0,
        t.peak_rss.unwrap_or(0) as f64 / 1e6,
    )
}
