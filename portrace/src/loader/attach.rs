//! A live run's loading: [`load`] verifies every program the run uses at once, attaches
//! them in the order that matters, learns from a calibration which state program the
//! kernel runs first, decides the features and hands back the [`Tracer`] and the [`Ring`].

use std::io;
use std::time::Instant;

use anyhow::{anyhow, Context as _};
use aya::maps::{HashMap, PerCpuArray, RingBuf};
use aya::programs::{BtfTracePoint, RawTracePoint, TracePoint};
use aya::{Ebpf, EbpfLoader};

use super::open::open_with;
use super::programs::{error_context, exit_fact, load_failed, load_in_parallel, load_program, packets_fact};
use super::typed::TIMERS;
use super::{Ring, Setup, Tracer, BACKUP, BACKUP_BOUNDED, EXEC_PROGRAM, EXIT_PROGRAM, MAIN, NEWTASK_PROGRAM, PACKET_PROGRAM, TIMER_PROGRAMS};
use crate::features::{self, Facts};

/// Loads and attaches the programs. Returns the tracer and the ring buffer to read. The
/// core (the main program, or the classic one without BTF) and, with `-- CMD`, the
/// command's programs must load; every other program that fails only turns its feature off.
pub fn load(mut setup: Setup, loader: EbpfLoader<'static>) -> anyhow::Result<(Tracer, Ring)> {
    let opening = std::time::Instant::now();
    let mut ebpf = open_with(loader, &setup)?;
    let opened_in = opening.elapsed();
    // The timer programs are verified while the handler's address may still be read.
    let timewait_possible = setup.sock.is_ok() && setup.tw_handler.may_be_found();
    // Every program the run attaches, verified at once; attached below one by one, in the
    // order that matters (a failed load is tried again there, and reported).
    let mut wanted = vec![BACKUP, EXEC_PROGRAM];
    if setup.sock.is_ok() {
        wanted.push(MAIN);
    }
    // The stand-in BTF the typed timer programs load with; freed once they are attached.
    let types = std::mem::replace(&mut setup.typed, Err("taken by the loader".to_owned())).ok();
    if timewait_possible {
        wanted.extend(TIMER_PROGRAMS.iter().map(|raw| timer_program(raw, types.is_some())));
        wanted.push(PACKET_PROGRAM);
    }
    if setup.command.is_some() {
        wanted.extend([NEWTASK_PROGRAM, EXIT_PROGRAM]);
    }
    let verifying = Instant::now();
    load_in_parallel(&mut ebpf, &wanted, types.as_ref());
    let verified_in = verifying.elapsed();

    let not_tried = |why: &str| Err::<(), String>(why.to_owned());
    let (primary, main, classic) = match &setup.sock {
        Ok(_) => {
            attach_raw(&mut ebpf, MAIN, "inet_sock_set_state")?;
            // The backup records what the kernel skips the main program for; without it
            // those transitions are still counted as lost.
            let classic = attach_classic(&mut ebpf).map(|_| calibrate(&ebpf));
            (MAIN, Ok(()), classic.map(|_| ()).map_err(|e| format!("{e:#}")))
        }
        Err(_) => {
            let classic = attach_classic(&mut ebpf)?;
            (classic, not_tried("not used without BTF"), Ok(()))
        }
    };
    let backed_up = setup.sock.is_ok() && classic.is_ok();

    // The timer programs need the handler's address before they are attached.
    let waiting = Instant::now();
    let (tw_handler, symbols_took) = setup.tw_handler.resolve();
    let symbols_waited = waiting.elapsed();
    let tw_handler = tw_handler.and_then(|address| write_tw_handler(&mut ebpf, address));
    let timewait_possible = timewait_possible && tw_handler.is_ok();
    let mut timer_programs = Vec::new();
    let (timers, packets) = if timewait_possible {
        let timers = TIMER_PROGRAMS
            .iter()
            .try_for_each(|raw| attach_timer(&mut ebpf, raw, types.as_ref()).map(|name| timer_programs.push(name)))
            .map_err(|e| format!("{e:#}"));
        let packets = packets_fact(&setup, || {
            attach_raw(&mut ebpf, PACKET_PROGRAM, PACKET_PROGRAM).map_err(|e| format!("{e:#}"))
        });
        (timers, packets)
    } else {
        (not_tried("needs BTF and tw_timer_handler"), not_tried("needs TIME_WAIT"))
    };
    let timewait_tracked = timewait_possible && timers.is_ok();
    drop(types);

    let exec = attach_classic_named(&mut ebpf, EXEC_PROGRAM, "sched", "sched_process_exec").map_err(|e| format!("{e:#}"));

    let (traced, command) = match setup.command {
        Some((task, _)) => {
            attach_classic_named(&mut ebpf, NEWTASK_PROGRAM, "task", "task_newtask")?;
            let exit = exit_fact(&task, || {
                attach_classic_named(&mut ebpf, EXIT_PROGRAM, "sched", "sched_process_exit").map_err(|e| format!("{e:#}"))
            });
            if let Err(why) = &exit {
                if task.exit_group_dead != 0 {
                    // Loaded but not attached: a real failure, not a kernel without the field.
                    return Err(anyhow!("{why}"));
                }
            }
            let map = HashMap::try_from(take_map(&mut ebpf, "TRACED")?).context("opening the traced-process map")?;
            (Some(map), Some(Ok(exit)))
        }
        None => (None, None),
    };
    let facts = Facts {
        sock: setup.sock.as_ref().map(|_| ()).map_err(Clone::clone),
        main,
        classic,
        tw_handler: tw_handler.map(|_| ()),
        timers,
        packets,
        exec,
        command,
    };
    let features = features::decide(&facts);

    let ring = RingBuf::try_from(take_map(&mut ebpf, "EVENTS")?).context("opening the ring buffer")?;
    let counters = PerCpuArray::try_from(take_map(&mut ebpf, "COUNTERS")?).context("opening the counters")?;
    let inventory = HashMap::try_from(take_map(&mut ebpf, "INVENTORY")?).context("opening the inventory map")?;
    let listeners = HashMap::try_from(take_map(&mut ebpf, "LISTENERS")?).context("opening the listener map")?;
    let followed = HashMap::try_from(take_map(&mut ebpf, "FOLLOWED")?).context("opening the timer follow-up map")?;
    let tracer = Tracer {
        ebpf,
        counters,
        inventory,
        listeners,
        followed,
        traced,
        primary,
        backed_up,
        timewait_tracked,
        timer_programs,
        features,
        opened_in,
        verified_in,
        symbols_took,
        symbols_waited,
    };
    Ok((tracer, Ring(ring)))
}

/// Hands the timer programs the timewait timer handler's address.
fn write_tw_handler(ebpf: &mut Ebpf, address: u64) -> Result<u64, String> {
    let map = ebpf.map_mut("TW_HANDLER").ok_or("the eBPF object has no map TW_HANDLER (a build problem)")?;
    let mut handler: aya::maps::Array<_, u64> =
        aya::maps::Array::try_from(map).map_err(|e| format!("opening the timer handler map: {e}"))?;
    handler.set(0, address, 0).map_err(|e| format!("writing the timer handler map: {e}"))?;
    Ok(address)
}

/// Which state program the kernel runs first for a hit, as the backup program learned it
/// from [`calibrate`]'s hit (the values of `ORDER` in the kernel program).
pub mod order {
    pub const UNKNOWN: u32 = 0;
    pub const MAIN_FIRST: u32 = 1;
    pub const BACKUP_FIRST: u32 = 2;
}

/// Makes two transitions of a socket of portrace's own (a loopback listener opened and
/// closed), which the programs recognise as the calibration and never show. The backup
/// program learns from the first whether the kernel runs it after the main program: then
/// it records exactly the hits the main one was skipped for; otherwise (a classic
/// tracepoint another tool opened earlier runs ahead) it records the hits that come while
/// the main one is mid-run. Returns what it learned.
fn calibrate(ebpf: &Ebpf) -> u32 {
    // bind and listen: CLOSE -> LISTEN; the drop: LISTEN -> CLOSE.
    let made = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).is_ok();
    let learned = ebpf
        .map("ORDER")
        .and_then(|m| aya::maps::Array::<_, u32>::try_from(m).ok())
        .and_then(|a| a.get(&0, 0).ok());
    match (made, learned) {
        (true, Some(order)) => order,
        _ => order::UNKNOWN,
    }
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<aya::maps::Map> {
    ebpf.take_map(name).ok_or_else(|| anyhow!("the eBPF object has no map {name} (a build problem)"))
}

/// The timer program a run verifies for the raw one `raw`: its typed twin when there is
/// one and a stand-in BTF to load it with.
fn timer_program(raw: &'static str, typed: bool) -> &'static str {
    match TIMERS.iter().find(|t| t.raw == raw) {
        Some(t) if typed => t.program,
        _ => raw,
    }
}

/// Loads and attaches the timer program for the raw one `raw`: its typed twin where it
/// loads and attaches (`types`: the stand-in BTF), else `raw` itself. Returns the name of
/// the one attached.
fn attach_timer(ebpf: &mut Ebpf, raw: &'static str, types: Option<&aya::Btf>) -> anyhow::Result<&'static str> {
    let program = timer_program(raw, types.is_some());
    if program != raw {
        let attached = (|| -> anyhow::Result<()> {
            let p: &mut BtfTracePoint = loaded(ebpf, program, types)?.try_into()?;
            p.attach().map_err(|e| explain(e.into())).with_context(|| format!("attaching {program}"))?;
            Ok(())
        })();
        // The raw program does the same where the typed one does not load or attach.
        if attached.is_ok() {
            return Ok(program);
        }
    }
    attach_raw(ebpf, raw, raw)?;
    Ok(raw)
}

/// Loads `program` (a failure as the user's message) and hands it back to be attached.
fn loaded<'a>(ebpf: &'a mut Ebpf, program: &str, types: Option<&aya::Btf>) -> anyhow::Result<&'a mut aya::programs::Program> {
    let load = load_program(ebpf, program, types);
    if load.result.is_err() {
        return Err(load_failed(&load));
    }
    ebpf.program_mut(program).ok_or_else(|| anyhow!("the eBPF object has no program {program} (a build problem)"))
}

fn attach_raw(ebpf: &mut Ebpf, program: &str, tracepoint: &str) -> anyhow::Result<()> {
    let p: &mut RawTracePoint = loaded(ebpf, program, None)?.try_into()?;
    p.attach(tracepoint)
        .map_err(|e| explain(e.into()))
        .with_context(|| format!("attaching {program} to the raw tracepoint {tracepoint}"))?;
    Ok(())
}

/// Loads and attaches the classic tracepoint program: the one that uses `bpf_loop`, or on
/// a kernel that refuses it, the one that does without. Returns its name.
fn attach_classic(ebpf: &mut Ebpf) -> anyhow::Result<&'static str> {
    let program = match load_classic(ebpf, BACKUP) {
        Ok(()) => BACKUP,
        Err(first) => {
            load_classic(ebpf, BACKUP_BOUNDED).map_err(|e| first.context(format!("and then: {e:#}")))?;
            BACKUP_BOUNDED
        }
    };
    attach_loaded_classic(ebpf, program, "sock", "inet_sock_set_state")?;
    Ok(program)
}

fn attach_classic_named(ebpf: &mut Ebpf, program: &str, category: &str, name: &str) -> anyhow::Result<()> {
    load_classic(ebpf, program)?;
    attach_loaded_classic(ebpf, program, category, name)
}

pub(super) fn load_classic(ebpf: &mut Ebpf, program: &str) -> anyhow::Result<()> {
    loaded(ebpf, program, None).map(|_| ())
}

fn attach_loaded_classic(ebpf: &mut Ebpf, program: &str, category: &str, name: &str) -> anyhow::Result<()> {
    let p: &mut TracePoint = loaded(ebpf, program, None)?.try_into()?;
    p.attach(category, name)
        .map_err(|e| explain(e.into()))
        .with_context(|| format!("attaching {program} to the {category}:{name} tracepoint"))?;
    Ok(())
}

/// Turns a permission error into the advice a user needs: privileges only when the
/// effective capabilities really lack them; leaves other errors as they are.
pub(super) fn explain(err: anyhow::Error) -> anyhow::Error {
    let denied = err.chain().any(|cause| {
        cause.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::PermissionDenied)
            || cause.to_string().contains("Operation not permitted")
    });
    match (denied, error_context().lacks_privileges()) {
        (false, _) => err,
        (true, true) => err.context(
            "the kernel refused portrace's eBPF program: it needs CAP_BPF and CAP_PERFMON \
             (or CAP_SYS_ADMIN); run it as root (sudo portrace)",
        ),
        (true, false) => err.context(
            "the kernel refused portrace's eBPF program although this process has the capabilities it \
             needs: something else forbids it here (kernel lockdown, a seccomp profile, a security module); \
             run `portrace doctor` to see what loads",
        ),
    }
}
