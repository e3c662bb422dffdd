//! Loading programs: one at a time ([`load_program`]) or all at once on a few threads
//! ([`load_in_parallel`]), each load with its time, the verifier's instruction count or
//! why it failed, and the messages a failure gives; and `portrace doctor`'s [`probe`],
//! which loads every program without attaching any and says which features that leaves.

use std::os::fd::AsFd;
use std::time::Instant;

use anyhow::anyhow;
use aya::programs::{Program, ProgramError};
use aya::Ebpf;
use portrace_ebpf::TaskLayout;

use super::tracer::prog_stats;
use super::typed::typed;
use super::{open, purpose, Setup, BACKUP, BACKUP_BOUNDED, EXEC_PROGRAM, EXIT_PROGRAM, MAIN, NEWTASK_PROGRAM, PACKET_PROGRAM, TIMER_PROGRAMS};
use crate::features::{self, Facts, Features};
use crate::load_error::{self, LoadFailure};
use crate::preflight;

/// How loading one program went.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgramLoad {
    pub name: String,
    pub purpose: &'static str,
    /// Loaded, or why not.
    pub result: Result<(), LoadFailure>,
    /// How long `BPF_PROG_LOAD` (and the verifier) took, in milliseconds.
    pub load_ms: f64,
    /// Instructions the verifier processed (`verified_insns`, Linux 5.16 and later);
    /// `None` when the kernel does not say, or the program did not load.
    pub verified_insns: Option<u64>,
}

/// Loads one program of the opened object, without attaching it. A program already loaded
/// ([`load_in_parallel`]) is taken as it is. `types`: the stand-in BTF a typed program
/// loads with ([`super::typed`]).
pub fn load_program(ebpf: &mut Ebpf, name: &str, types: Option<&aya::Btf>) -> ProgramLoad {
    match ebpf.program_mut(name) {
        None => ProgramLoad {
            name: name.to_owned(),
            purpose: purpose(name),
            result: Err(LoadFailure::Missing),
            load_ms: 0.0,
            verified_insns: None,
        },
        Some(program) => load_one(name, program, types),
    }
}

fn load_one(name: &str, program: &mut Program, types: Option<&aya::Btf>) -> ProgramLoad {
    let started = Instant::now();
    let outcome = if program.fd().is_ok() {
        Ok(())
    } else {
        match &mut *program {
            Program::RawTracePoint(p) => p.load().map_err(failure),
            Program::TracePoint(p) => p.load().map_err(failure),
            Program::BtfTracePoint(p) => match (typed(name), types) {
                (Some(t), Some(types)) => p.load(t.tracepoint, types).map_err(failure),
                (_, None) => Err(LoadFailure::Other("no stand-in BTF for typed programs on this kernel".to_owned())),
                (None, _) => Err(LoadFailure::Other(format!("{name} is not a typed program portrace knows"))),
            },
            other => Err(LoadFailure::Other(format!("{:?} programs are not loaded by portrace", other.prog_type()))),
        }
    };
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let verified_insns = match &outcome {
        Ok(()) => program.fd().ok().and_then(|fd| prog_stats(fd.as_fd()).ok()).and_then(|s| s.verified_insns),
        Err(_) => None,
    };
    ProgramLoad { name: name.to_owned(), purpose: purpose(name), result: outcome, load_ms, verified_insns }
}

/// Loads the programs `names` of the opened object at once, one thread per CPU (at most
/// four): a privileged load's verification runs in parallel with others'. Returns each
/// program's load, in the order of `names`; attaching is left to the caller, in its order.
pub fn load_in_parallel(ebpf: &mut Ebpf, names: &[&str], types: Option<&aya::Btf>) -> Vec<ProgramLoad> {
    let mut programs: Vec<(&str, &mut Program)> = ebpf.programs_mut().filter(|(name, _)| names.contains(name)).collect();
    programs.sort_by_key(|(name, _)| names.iter().position(|n| n == name));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
    let mut loads: Vec<ProgramLoad> = if threads == 1 || programs.len() < 2 {
        programs.into_iter().map(|(name, program)| load_one(name, program, types)).collect()
    } else {
        // Deal the programs out round-robin, so that the largest ones (first) are spread.
        let mut shares: Vec<Vec<(usize, &str, &mut Program)>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, (name, program)) in programs.into_iter().enumerate() {
            shares[i % threads].push((i, name, program));
        }
        let mut loads: Vec<(usize, ProgramLoad)> = std::thread::scope(|scope| {
            let handles: Vec<_> = shares
                .into_iter()
                .map(|share| {
                    scope.spawn(move || share.into_iter().map(|(i, name, program)| (i, load_one(name, program, types))).collect::<Vec<_>>())
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
        });
        loads.sort_by_key(|(i, _)| *i);
        loads.into_iter().map(|(_, load)| load).collect()
    };
    for name in names {
        if !loads.iter().any(|l| l.name == *name) {
            loads.push(load_program(ebpf, name, types));
        }
    }
    loads
}

/// Turns aya's load error into what portrace tells the user.
fn failure(err: ProgramError) -> LoadFailure {
    match err {
        ProgramError::LoadError { io_error, verifier_log } => {
            LoadFailure::from_load(io_error.raw_os_error().unwrap_or(0), &verifier_log.to_string())
        }
        ProgramError::SyscallError(e) => {
            LoadFailure::from_load(e.io_error.raw_os_error().unwrap_or(0), "")
        }
        other => LoadFailure::Other(other.to_string()),
    }
}

/// What the messages need to know of this process and kernel.
pub fn error_context() -> load_error::Context {
    let cap_eff = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| preflight::parse_cap_eff(&s));
    let kernel = preflight::KernelRelease::current().map(|k| k.release).unwrap_or_else(|_| "unknown".into());
    load_error::Context { cap_eff, kernel }
}

/// A program's failed load as an error for the user.
pub(super) fn load_failed(load: &ProgramLoad) -> anyhow::Error {
    match &load.result {
        Ok(()) => anyhow!("{} loaded", load.name),
        Err(f) => anyhow!(load_error::message(&load.name, load.purpose, f, &error_context())),
    }
}

/// A program's state in the features: loaded (and attached), or why not.
fn outcome(load: &ProgramLoad) -> Result<(), String> {
    load.result.as_ref().map(|_| ()).map_err(|f| format!("{} did not load: {}", load.name, f.reason()))
}

/// `portrace doctor`: opens the object with `setup` and loads every program in it, in
/// the object's order, attaching none. Returns each program's load and the features the
/// outcome would give a live run.
/// `task_error` says why the task tracepoints' layout could not be read, when it could not
/// (then `setup.command` is `None`).
pub fn probe(setup: &Setup, task_error: Option<String>) -> anyhow::Result<(Vec<ProgramLoad>, Features)> {
    let mut ebpf = open(setup)?;
    let mut names: Vec<String> = ebpf.programs().map(|(name, _)| name.to_owned()).collect();
    // The object's order is a hash map's: sort by the order a live run loads them in.
    let rank = |n: &str| {
        [MAIN, BACKUP, BACKUP_BOUNDED, "timer_start_typed", "timer_start", "timer_expire_entry", "timer_cancel_typed",
         "timer_cancel", PACKET_PROGRAM, EXEC_PROGRAM, NEWTASK_PROGRAM, EXIT_PROGRAM]
            .iter()
            .position(|&k| k == n)
            .unwrap_or(usize::MAX)
    };
    names.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let loads = load_in_parallel(&mut ebpf, &names, setup.typed.as_ref().ok());
    let of = |name: &str| -> Result<(), String> {
        loads.iter().find(|l| l.name == name).map_or_else(|| Err(format!("the object has no {name}")), outcome)
    };
    let classic = of(BACKUP).or_else(|first| of(BACKUP_BOUNDED).map_err(|second| format!("{first}; and then {second}")));
    let timers = TIMER_PROGRAMS.iter().try_for_each(|n| of(n));
    let facts = Facts {
        sock: setup.sock.as_ref().map(|_| ()).map_err(Clone::clone),
        main: of(MAIN),
        classic,
        tw_handler: setup.tw_handler.known(),
        timers,
        packets: packets_fact(setup, || of(PACKET_PROGRAM)),
        exec: of(EXEC_PROGRAM),
        command: Some(match &setup.command {
            Some((task, _)) => of(NEWTASK_PROGRAM).map(|()| exit_fact(task, || of(EXIT_PROGRAM))),
            None => Err(task_error.unwrap_or_else(|| "the task tracepoints' layout was not read".to_owned())),
        }),
    };
    Ok((loads, features::decide(&facts)))
}

/// The packet program sees a timewait socket receive its peer's FIN: by the socket
/// `skb:kfree_skb` names (Linux 6.11 and later), or else by the packet's addresses and
/// ports, which needs `struct sk_buff`'s header offsets from BTF.
pub(super) fn packets_fact(setup: &Setup, load: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    let packet_offsets = setup.sock.as_ref().is_ok_and(|sock| sock.skb_head != 0);
    if setup.kfree_skb_has_rx_sk || packet_offsets {
        load()
    } else {
        Err("skb:kfree_skb does not name the receiving socket before Linux 6.11, and this kernel's BTF \
             does not say where a packet's headers are"
            .to_owned())
    }
}

pub(super) fn exit_fact(task: &TaskLayout, load: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    if task.exit_group_dead != 0 {
        load()
    } else {
        Err("sched:sched_process_exit does not say when a whole process has exited on this kernel".to_owned())
    }
}
