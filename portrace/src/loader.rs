//! Loading and attaching the kernel programs, and everything userspace reads from or
//! writes to them. This is the only module that talks to aya: it hands the tracepoint
//! layout, the socket layout and the filter to the programs as read-only globals, sizes
//! the ring buffer, attaches the programs, and exposes the ring buffer, the loss counters,
//! the kernel's own statistics of the main program (`recursion_misses`: runs it skipped),
//! and the maps userspace maintains (owners of sockets older than the trace, timewait
//! sockets that were killed, and the traced command's processes). Programs are loaded one
//! at a time through [`load_program`], which says how each load went (time, the kernel's
//! count of verified instructions, or why it failed); the live run attaches what loaded,
//! and `portrace doctor` ([`probe`]) loads every program the same way without attaching.
//! Which features the outcome leaves on is decided by [`features::decide`].

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Instant;

use anyhow::{anyhow, Context as _};
use aya::maps::{HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{Program, ProgramError, RawTracePoint, TracePoint};
use aya::{Ebpf, EbpfLoader};
use portrace_ebpf::{counter, Filter, Layout, ListenKey, Owner, SockLayout, SockOwner, TaskLayout};

use crate::features::{self, Facts, Features};
use crate::load_error::{self, LoadFailure};
use crate::preflight;

/// The kernel programs, built by build.rs.
static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/portrace"));

/// The kernel programs' object as built, for what reads it without loading it.
pub fn object() -> &'static [u8] {
    PROGRAM
}

const MAIN: &str = "inet_sock_set_state";
const BACKUP: &str = "inet_sock_set_state_backup";
/// The same program for kernels without the `bpf_loop` helper (before Linux 5.17): its
/// search for the main program's note stops at a fixed depth.
const BACKUP_BOUNDED: &str = "inet_sock_set_state_backup_bounded";
const TIMER_PROGRAMS: [&str; 3] = ["timer_start", "timer_expire_entry", "timer_cancel"];
/// Sees the peer's FIN reach an orphan's timewait socket (FIN_WAIT2 becoming TIME_WAIT).
const PACKET_PROGRAM: &str = "kfree_skb";
/// The program that tells userspace at once about programs started (exec).
const EXEC_PROGRAM: &str = "sched_process_exec";
/// Follow the traced command's processes (`portrace -- CMD`).
const NEWTASK_PROGRAM: &str = "task_newtask";
const EXIT_PROGRAM: &str = "sched_process_exit";

/// What each kernel program is for, in a few words (messages, `portrace doctor`).
pub fn purpose(program: &str) -> &'static str {
    match program {
        MAIN => "every TCP state transition, with owners and close errors",
        BACKUP => "recovers transitions the kernel skips the main program for",
        BACKUP_BOUNDED => "the backup program for kernels without bpf_loop (before 5.17)",
        "timer_start" => "TIME_WAIT: a timewait socket's timer armed",
        "timer_expire_entry" => "TIME_WAIT: a timewait socket's timer expired",
        "timer_cancel" => "TIME_WAIT: a timewait socket's timer removed",
        PACKET_PROGRAM => "an orphan's FIN_WAIT2 becoming TIME_WAIT",
        EXEC_PROGRAM => "programs started during the trace, noticed at once",
        NEWTASK_PROGRAM => "`-- CMD`: follows the command's new processes",
        EXIT_PROGRAM => "`-- CMD`: forgets the command's exited processes",
        _ => "not described (a program this portrace does not know)",
    }
}

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
/// ([`load_in_parallel`]) is taken as it is.
pub fn load_program(ebpf: &mut Ebpf, name: &str) -> ProgramLoad {
    match ebpf.program_mut(name) {
        None => ProgramLoad {
            name: name.to_owned(),
            purpose: purpose(name),
            result: Err(LoadFailure::Missing),
            load_ms: 0.0,
            verified_insns: None,
        },
        Some(program) => load_one(name, program),
    }
}

fn load_one(name: &str, program: &mut Program) -> ProgramLoad {
    let started = Instant::now();
    let outcome = if program.fd().is_ok() {
        Ok(())
    } else {
        match &mut *program {
            Program::RawTracePoint(p) => p.load().map_err(failure),
            Program::TracePoint(p) => p.load().map_err(failure),
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
pub fn load_in_parallel(ebpf: &mut Ebpf, names: &[&str]) -> Vec<ProgramLoad> {
    let mut programs: Vec<(&str, &mut Program)> = ebpf.programs_mut().filter(|(name, _)| names.contains(name)).collect();
    programs.sort_by_key(|(name, _)| names.iter().position(|n| n == name));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
    let mut loads: Vec<ProgramLoad> = if threads == 1 || programs.len() < 2 {
        programs.into_iter().map(|(name, program)| load_one(name, program)).collect()
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
                    scope.spawn(move || share.into_iter().map(|(i, name, program)| (i, load_one(name, program))).collect::<Vec<_>>())
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
        });
        loads.sort_by_key(|(i, _)| *i);
        loads.into_iter().map(|(_, load)| load).collect()
    };
    for name in names {
        if !loads.iter().any(|l| l.name == *name) {
            loads.push(load_program(ebpf, name));
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
fn load_failed(load: &ProgramLoad) -> anyhow::Error {
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
        [MAIN, BACKUP, BACKUP_BOUNDED, "timer_start", "timer_expire_entry", "timer_cancel", PACKET_PROGRAM,
         EXEC_PROGRAM, NEWTASK_PROGRAM, EXIT_PROGRAM]
            .iter()
            .position(|&k| k == n)
            .unwrap_or(usize::MAX)
    };
    names.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let loads = load_in_parallel(&mut ebpf, &names);
    let of = |name: &str| -> Result<(), String> {
        loads.iter().find(|l| l.name == name).map_or_else(|| Err(format!("the object has no {name}")), outcome)
    };
    let classic = of(BACKUP).or_else(|first| of(BACKUP_BOUNDED).map_err(|second| format!("{first}; and then {second}")));
    let timers = TIMER_PROGRAMS.iter().try_for_each(|n| of(n));
    let facts = Facts {
        sock: setup.sock.as_ref().map(|_| ()).map_err(Clone::clone),
        main: of(MAIN),
        classic,
        tw_handler: setup.tw_handler.as_ref().map(|_| ()).map_err(Clone::clone),
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
fn packets_fact(setup: &Setup, load: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    let packet_offsets = setup.sock.as_ref().is_ok_and(|sock| sock.skb_head != 0);
    if setup.kfree_skb_has_rx_sk || packet_offsets {
        load()
    } else {
        Err("skb:kfree_skb does not name the receiving socket before Linux 6.11, and this kernel's BTF \
             does not say where a packet's headers are"
            .to_owned())
    }
}

fn exit_fact(task: &TaskLayout, load: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    if task.exit_group_dead != 0 {
        load()
    } else {
        Err("sched:sched_process_exit does not say when a whole process has exited on this kernel".to_owned())
    }
}

/// What the programs need to know about this kernel, and the user's choices.
pub struct Setup {
    /// Tracepoint record offsets, from tracefs.
    pub layout: Layout,
    /// Socket offsets, from BTF; why not, when they could not be had.
    pub sock: Result<SockLayout, String>,
    /// The address of `tw_timer_handler`, from /proc/kallsyms; why not, when unknown.
    pub tw_handler: Result<u64, String>,
    /// Whether `skb:kfree_skb` names the receiving socket (`rx_sk`, Linux 6.11 and later).
    pub kfree_skb_has_rx_sk: bool,
    pub filter: Filter,
    pub ring_size: u32,
    /// Set to keep only a command's sockets (`portrace -- CMD`): where the task
    /// tracepoints keep the fields the programs read, and how many processes the traced
    /// set may hold.
    pub command: Option<(TaskLayout, u32)>,
}

/// The attached programs and their maps. Dropping it detaches the programs.
pub struct Tracer {
    ebpf: Ebpf,
    counters: PerCpuArray<MapData, u64>,
    inventory: HashMap<MapData, u64, Owner>,
    listeners: HashMap<MapData, ListenKey, SockOwner>,
    /// Timewait timer removals whose follow-up userspace will not get (see
    /// [`Tracer::removal_followed`]).
    followed: HashMap<MapData, u64, u64>,
    /// The traced command's processes, when tracing a command.
    traced: Option<HashMap<MapData, u32, u8>>,
    /// The program whose skipped runs are losses: the raw tracepoint, or the classic one
    /// when it runs alone.
    primary: &'static str,
    /// Whether the classic tracepoint program backs the main one up.
    pub backed_up: bool,
    /// Whether connections are followed into their timewait sockets.
    pub timewait_tracked: bool,
    /// What works on this kernel, and what does not and why, for every reader of the run.
    pub features: Features,
    /// How long making the object's maps and relocating its programs took (the rest of
    /// loading is the verifier's and attaching).
    pub opened_in: std::time::Duration,
    /// How long verifying the programs took, all at once ([`load_in_parallel`]).
    pub verified_in: std::time::Duration,
}

/// Totals of the kernel programs' per-CPU counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub ring_full: u64,
    pub emitted: u64,
    pub released: u64,
    pub rescued: u64,
    pub owners_full: u64,
    pub timewait_full: u64,
    /// Transitions written at once, without the port they waited for: the hold map was full.
    pub hold_full: u64,
    /// Listeners not remembered: the listener map was full.
    pub listeners_full: u64,
    /// Timewait records that are no transition, dropped in a full ring.
    pub tw_ring_full: u64,
    pub unreadable: u64,
    pub unfollowed: u64,
    /// Runs of the primary program.
    pub entered: u64,
}

/// What the kernel itself counts for a program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgStats {
    /// Times the kernel skipped the program because it (or, for a classic tracepoint, any
    /// tracing program) was already running on that CPU. `None` when the kernel does not
    /// report it (before Linux 5.12).
    pub recursion_misses: Option<u64>,
    /// Runs and total run time; zero unless `kernel.bpf_stats_enabled` is set.
    pub run_count: u64,
    pub run_time_ns: u64,
    /// Instructions the verifier processed to accept the program; `None` before Linux 5.16.
    pub verified_insns: Option<u64>,
}

/// Opens the eBPF object: hands the programs their configuration and creates the maps.
/// Loads no program.
pub fn open(setup: &Setup) -> anyhow::Result<Ebpf> {
    let loader = std::thread::spawn(loader_without_kernel_btf).join().unwrap_or_else(|_| EbpfLoader::new());
    open_with(loader, setup)
}

/// Makes aya's loader without the kernel's BTF. aya 0.14's `EbpfLoader::new` reads and
/// parses `/sys/kernel/btf/vmlinux` whatever the caller wants (some 18 MB at its peak, and
/// 30 ms), and portrace's programs need none of it: they use no CO-RE relocation (portrace
/// finds the few offsets it needs itself, [`crate::btf`]), so [`open`] passes `btf(None)`.
/// Run on a thread of its own, which this function gives a filesystem view of its own
/// (`unshare(CLONE_FS)`) rooted in a directory without that path (`/proc/sys/kernel`), so
/// aya finds no file there; the thread is to end right after. Without the privilege for
/// that (CAP_SYS_CHROOT), the loader is made as usual.
fn loader_without_kernel_btf() -> EbpfLoader<'static> {
    // SAFETY: unshare(CLONE_FS) gives only this thread its own root and working directory;
    // chroot changes this thread's root alone then. Neither touches memory.
    let _isolated = unsafe { libc::unshare(libc::CLONE_FS) == 0 && libc::chroot(c"/proc/sys/kernel".as_ptr()) == 0 };
    let mut loader = EbpfLoader::new();
    loader.btf(None);
    loader
}

/// [`open`] with a loader made beforehand ([`Preparing`]).
fn open_with(loader: EbpfLoader<'static>, setup: &Setup) -> anyhow::Result<Ebpf> {
    // Shortened to this function's values, which the loader borrows.
    let mut loader: EbpfLoader<'_> = loader;
    // Wake the reader only when the ring is a quarter full; it polls for the rest.
    let wakeup_bytes = u64::from(setup.ring_size / 4);
    let sock = setup.sock.as_ref().copied().unwrap_or(SockLayout::ZERO);
    let classic_primary = u32::from(setup.sock.is_err());
    let tw_handler = match (&setup.sock, &setup.tw_handler) {
        (Ok(_), Ok(address)) => *address,
        _ => 0,
    };
    let trace_command = u32::from(setup.command.is_some());
    let (task, traced_entries) = setup.command.unwrap_or((TaskLayout::ZERO, 1));
    loader
        // The programs use no CO-RE relocations (portrace computes the offsets it needs
        // from BTF itself), so aya has nothing to relocate.
        .btf(None)
        .override_global("LAYOUT", &setup.layout, true)
        .override_global("SOCK", &sock, true)
        .override_global("FILTER", &setup.filter, true)
        .override_global("WAKEUP_BYTES", &wakeup_bytes, true)
        .override_global("CLASSIC_PRIMARY", &classic_primary, true)
        .override_global("TW_HANDLER", &tw_handler, true)
        .override_global("OWN_TGID", &std::process::id(), true)
        .override_global("TRACE_COMMAND", &trace_command, true)
        .override_global("TASK", &task, true)
        .override_global("KFREE_SKB_RX_SK", &u32::from(setup.kfree_skb_has_rx_sk), true)
        .map_max_entries("EVENTS", setup.ring_size)
        .map_max_entries("TRACED", traced_entries)
        .load(PROGRAM)
        .map_err(|e| explain(e.into()))
        .context("loading portrace's eBPF object")
}

/// Loads and attaches the programs. Returns the tracer and the ring buffer to read. The
/// core (the main program, or the classic one without BTF) and, with `-- CMD`, the
/// command's programs must load; every other program that fails only turns its feature off.
pub fn load(setup: Setup, loader: EbpfLoader<'static>) -> anyhow::Result<(Tracer, Ring)> {
    let opening = std::time::Instant::now();
    let mut ebpf = open_with(loader, &setup)?;
    let opened_in = opening.elapsed();
    let timewait_possible = setup.sock.is_ok() && setup.tw_handler.is_ok();
    // Every program the run attaches, verified at once; attached below one by one, in the
    // order that matters (a failed load is tried again there, and reported).
    let mut wanted = vec![BACKUP, EXEC_PROGRAM];
    if setup.sock.is_ok() {
        wanted.push(MAIN);
    }
    if timewait_possible {
        wanted.extend(TIMER_PROGRAMS);
        wanted.push(PACKET_PROGRAM);
    }
    if setup.command.is_some() {
        wanted.extend([NEWTASK_PROGRAM, EXIT_PROGRAM]);
    }
    let verifying = Instant::now();
    load_in_parallel(&mut ebpf, &wanted);
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

    let (timers, packets) = if timewait_possible {
        let timers = TIMER_PROGRAMS.iter().try_for_each(|name| attach_raw(&mut ebpf, name, name)).map_err(|e| format!("{e:#}"));
        let packets = packets_fact(&setup, || {
            attach_raw(&mut ebpf, PACKET_PROGRAM, PACKET_PROGRAM).map_err(|e| format!("{e:#}"))
        });
        (timers, packets)
    } else {
        (not_tried("needs BTF and tw_timer_handler"), not_tried("needs TIME_WAIT"))
    };
    let timewait_tracked = timewait_possible && timers.is_ok();

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
        tw_handler: setup.tw_handler.as_ref().map(|_| ()).map_err(Clone::clone),
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
        features,
        opened_in,
        verified_in,
    };
    Ok((tracer, Ring(ring)))
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

fn attach_raw(ebpf: &mut Ebpf, program: &str, tracepoint: &str) -> anyhow::Result<()> {
    let load = load_program(ebpf, program);
    if load.result.is_err() {
        return Err(load_failed(&load));
    }
    let p: &mut RawTracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| anyhow!("the eBPF object has no program {program} (a build problem)"))?
        .try_into()?;
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

fn classic<'a>(ebpf: &'a mut Ebpf, program: &str) -> anyhow::Result<&'a mut TracePoint> {
    Ok(ebpf
        .program_mut(program)
        .ok_or_else(|| anyhow!("the eBPF object has no program {program} (a build problem)"))?
        .try_into()?)
}

fn load_classic(ebpf: &mut Ebpf, program: &str) -> anyhow::Result<()> {
    let load = load_program(ebpf, program);
    match load.result {
        Ok(()) => Ok(()),
        Err(_) => Err(load_failed(&load)),
    }
}

fn attach_loaded_classic(ebpf: &mut Ebpf, program: &str, category: &str, name: &str) -> anyhow::Result<()> {
    classic(ebpf, program)?
        .attach(category, name)
        .map_err(|e| explain(e.into()))
        .with_context(|| format!("attaching {program} to the {category}:{name} tracepoint"))?;
    Ok(())
}

/// Turns a permission error into the advice a user needs: privileges only when the
/// effective capabilities really lack them; leaves other errors as they are.
fn explain(err: anyhow::Error) -> anyhow::Error {
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

impl Tracer {
    /// Sums each counter over all CPUs.
    pub fn counters(&self) -> anyhow::Result<Counters> {
        let read = |index: u32| -> anyhow::Result<u64> {
            let per_cpu = self.counters.get(&index, 0).context("reading the loss counters")?;
            Ok(per_cpu.iter().copied().fold(0u64, u64::wrapping_add))
        };
        Ok(Counters {
            ring_full: read(counter::RING_FULL)?,
            emitted: read(counter::EMITTED)?,
            released: read(counter::RELEASED)?,
            rescued: read(counter::RESCUED)?,
            owners_full: read(counter::OWNERS_FULL)?,
            timewait_full: read(counter::TIMEWAIT_FULL)?,
            hold_full: read(counter::HOLD_FULL)?,
            listeners_full: read(counter::LISTENERS_FULL)?,
            tw_ring_full: read(counter::TW_RING_FULL)?,
            unreadable: read(counter::UNREADABLE)?,
            unfollowed: read(counter::UNFOLLOWED)?,
            entered: read(counter::ENTERED)?,
        })
    }

    /// Whether the timer of timewait socket `tw`, removed at `removed_ns` (monotonic), was
    /// re-armed or expired without userspace getting that record (dropped in a full ring,
    /// or filtered out): then the removal was no kill. Forgets the note it finds.
    pub fn removal_followed(&mut self, tw: u64, removed_ns: u64) -> bool {
        let Ok(at) = self.followed.get(&tw, 0) else { return false };
        let _ = self.followed.remove(&tw);
        // The kernel program matched the follow-up to the removal within the window,
        // counted from a moment after the removal's record was stamped: twice the window
        // leaves room for that, and is still far less than a timewait socket's life.
        at >= removed_ns && at - removed_ns <= 2 * portrace_ebpf::REARM_WINDOW_NS
    }

    /// Hits of the state tracepoint handed to the primary program so far: the runs it
    /// counted and the runs the kernel skipped and counted.
    pub fn handed(&self) -> anyhow::Result<u64> {
        let entered = self.counters()?.entered;
        Ok(entered + self.prog_stats()?.recursion_misses.unwrap_or(0))
    }

    /// The kernel's statistics of the primary program.
    pub fn prog_stats(&self) -> anyhow::Result<ProgStats> {
        self.stats_of(self.primary)
    }

    /// Runs the kernel skipped of the timewait timer programs, summed.
    pub fn timer_misses(&self) -> u64 {
        if !self.timewait_tracked {
            return 0;
        }
        TIMER_PROGRAMS
            .iter()
            .filter_map(|name| self.stats_of(name).ok()?.recursion_misses)
            .sum()
    }

    fn stats_of(&self, name: &str) -> anyhow::Result<ProgStats> {
        let program = self.ebpf.program(name).ok_or_else(|| anyhow!("program {name} gone"))?;
        let fd = program.fd().context("program descriptor")?;
        prog_stats(fd.as_fd()).context("reading the program's statistics from the kernel")
    }

    /// Puts a process into the traced command's set: it and every process it starts from
    /// now on are traced. Only when tracing a command.
    pub fn follow(&mut self, pid: u32) -> anyhow::Result<()> {
        let traced = self.traced.as_mut().ok_or_else(|| anyhow!("not tracing a command"))?;
        traced.insert(pid, 1, 0).context("writing the traced-process map")
    }

    /// Runs the kernel skipped of the program that follows the command's new processes
    /// (each may be a process not followed).
    pub fn newtask_misses(&self) -> u64 {
        if self.traced.is_none() {
            return 0;
        }
        self.stats_of(NEWTASK_PROGRAM).ok().and_then(|s| s.recursion_misses).unwrap_or(0)
    }

    /// Tells the kernel program the owner of a socket older than the trace, by cookie.
    /// Tells the kernel program the owner of a socket older than the trace (by its
    /// cookie), so that its later transitions are attributed to it; `in_cgroup`: the owner
    /// is in the `--cgroup` the filter names.
    pub fn add_inventory_owner(&mut self, cookie: u64, owner: &crate::record::Owner, in_cgroup: bool) -> anyhow::Result<()> {
        self.inventory.insert(cookie, inventory_owner(owner, in_cgroup), 0).context("writing the inventory map")
    }

    /// Tells the kernel program the owner of a listener older than the trace, so that its
    /// new child sockets are attributed to it. An entry the program already has (the
    /// listener was re-created since) is left alone.
    pub fn add_inventory_listener(
        &mut self,
        netns: u32,
        port: u16,
        owner: &crate::record::Owner,
        in_cgroup: bool,
    ) -> anyhow::Result<()> {
        let key = ListenKey { netns, port, _pad: 0 };
        const BPF_NOEXIST: u64 = 1;
        let owner = inventory_owner(owner, in_cgroup);
        match self.listeners.insert(key, SockOwner { skaddr: 0, owner }, BPF_NOEXIST) {
            Ok(()) => Ok(()),
            Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(e).context("writing the listener map"),
        }
    }
}

/// The kernel program's record of an owner the inventory found.
fn inventory_owner(owner: &crate::record::Owner, in_cgroup: bool) -> Owner {
    let mut comm = [0u8; 16];
    let b = owner.comm.as_bytes();
    comm[..b.len().min(15)].copy_from_slice(&b[..b.len().min(15)]);
    Owner {
        pid: owner.pid,
        source: portrace_ebpf::owner_source::INVENTORY,
        traced: 0,
        in_cgroup: u8::from(in_cgroup),
        _pad: 0,
        comm,
        cgroup: owner.cgroup,
    }
}

/// The ring buffer the kernel programs write their records into.
pub struct Ring(RingBuf<MapData>);

impl Ring {
    /// The next record waiting, if any.
    pub fn next_record(&mut self) -> Option<impl std::ops::Deref<Target = [u8]> + '_> {
        self.0.next()
    }
}

impl AsRawFd for Ring {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

/// The address of the kernel symbol `name` in `/proc/kallsyms` text, read line by line
/// and no further than the symbol (the table is some 10 MB: it is never held whole).
pub fn find_symbol(kallsyms: impl std::io::BufRead, name: &str) -> Result<u64, String> {
    let mut kallsyms = kallsyms;
    let mut line = Vec::with_capacity(128);
    loop {
        line.clear();
        match kallsyms.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("cannot read /proc/kallsyms: {e}")),
        }
        let mut fields = line.split(|b| b.is_ascii_whitespace()).filter(|f| !f.is_empty());
        let (Some(address), Some(_kind), Some(symbol)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if symbol == name.as_bytes() {
            let address = std::str::from_utf8(address)
                .ok()
                .and_then(|a| u64::from_str_radix(a, 16).ok())
                .ok_or_else(|| format!("/proc/kallsyms has a malformed address for {name}"))?;
            if address == 0 {
                return Err(format!(
                    "kernel symbol addresses are hidden (kernel.kptr_restrict), so {name} cannot be found; \
                     run portrace as root, or set kernel.kptr_restrict=0"
                ));
            }
            return Ok(address);
        }
    }
    Err(format!("this kernel has no {name} symbol"))
}

/// The start-up work that does not depend on the checks before it, begun at once on
/// threads of its own ([`prepare`]): reading the kernel's symbol table (some 25 ms), and
/// making aya's loader ([`loader_without_kernel_btf`]).
pub struct Preparing {
    symbols: Option<std::thread::JoinHandle<(Result<u64, String>, std::time::Duration)>>,
    loader: std::thread::JoinHandle<(EbpfLoader<'static>, std::time::Duration)>,
}

/// Starts [`Preparing`]'s work.
pub fn prepare() -> Preparing {
    Preparing {
        symbols: Some(std::thread::spawn(|| timed(tw_timer_handler))),
        loader: std::thread::spawn(|| timed(loader_without_kernel_btf)),
    }
}

fn timed<T>(work: impl FnOnce() -> T) -> (T, std::time::Duration) {
    let began = Instant::now();
    let done = work();
    (done, began.elapsed())
}

impl Preparing {
    /// Waits for aya's loader; how long making it took.
    pub fn loader(self) -> (EbpfLoader<'static>, std::time::Duration) {
        self.loader.join().unwrap_or_else(|_| timed(|| std::thread::spawn(loader_without_kernel_btf).join().unwrap_or_else(|_| EbpfLoader::new())))
    }

    /// Waits for the timewait timer handler's address; how long finding it took.
    fn symbols(&mut self) -> (Result<u64, String>, std::time::Duration) {
        match self.symbols.take().map(std::thread::JoinHandle::join) {
            Some(Ok(found)) => found,
            Some(Err(_)) => (Err("reading /proc/kallsyms failed".to_string()), Default::default()),
            None => timed(tw_timer_handler),
        }
    }
}

/// The socket offsets from the kernel's BTF and the timewait timer handler's address, or
/// why not: what a run hands the programs beyond the tracepoint layout. With `preparing`,
/// the symbol table is read on a thread of its own while BTF is read here.
pub fn kernel_offsets(preparing: Option<&mut Preparing>) -> KernelOffsets {
    let (sock, btf_took) =
        timed(|| crate::btf::Btf::from_kernel().and_then(|b| crate::btf::sock_layout(&b)).map_err(|e| e.to_string()));
    let (tw_handler, kallsyms_took) = match preparing {
        Some(preparing) => preparing.symbols(),
        None => timed(tw_timer_handler),
    };
    KernelOffsets { sock, tw_handler, btf_took, kallsyms_took }
}

/// What [`kernel_offsets`] found, and how long each half took.
pub struct KernelOffsets {
    pub sock: Result<SockLayout, String>,
    pub tw_handler: Result<u64, String>,
    pub btf_took: std::time::Duration,
    pub kallsyms_took: std::time::Duration,
}

/// The timewait timer's handler, for the timer programs.
pub fn tw_timer_handler() -> Result<u64, String> {
    let file = std::fs::File::open("/proc/kallsyms").map_err(|e| format!("cannot read /proc/kallsyms: {e}"))?;
    find_symbol(std::io::BufReader::with_capacity(1 << 16, file), "tw_timer_handler")
}

/// `struct bpf_prog_info` offsets (include/uapi/linux/bpf.h); stable kernel ABI.
const INFO_RUN_TIME_NS: usize = 192;
const INFO_RUN_CNT: usize = 200;
const INFO_RECURSION_MISSES: usize = 208;
/// `__u32 verified_insns`, right after `recursion_misses` (Linux 5.16).
const INFO_VERIFIED_INSNS: usize = 216;
const INFO_LEN: usize = 224;

/// Reads a program's statistics with `BPF_OBJ_GET_INFO_BY_FD` (aya does not expose
/// `recursion_misses`).
fn prog_stats(fd: BorrowedFd<'_>) -> io::Result<ProgStats> {
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    let mut info = [0u8; INFO_LEN];
    let mut attr =
        InfoAttr { bpf_fd: fd.as_raw_fd() as u32, info_len: INFO_LEN as u32, info: info.as_mut_ptr() as u64 };
    // SAFETY: attr points to a valid buffer of info_len bytes that outlives the call.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, &mut attr as *mut InfoAttr, std::mem::size_of::<InfoAttr>())
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let filled = attr.info_len as usize;
    let field = |offset: usize| -> Option<u64> {
        (filled >= offset + 8).then(|| u64::from_ne_bytes(info[offset..offset + 8].try_into().unwrap()))
    };
    let field32 = |offset: usize| -> Option<u64> {
        (filled >= offset + 4).then(|| u64::from(u32::from_ne_bytes(info[offset..offset + 4].try_into().unwrap())))
    };
    Ok(ProgStats {
        verified_insns: field32(INFO_VERIFIED_INSNS),
        recursion_misses: field(INFO_RECURSION_MISSES),
        run_count: field(INFO_RUN_CNT).unwrap_or(0),
        run_time_ns: field(INFO_RUN_TIME_NS).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_symbol_and_refuses_hidden_addresses() {
        let text = "ffffffff82065730 t tw_timer_handler\nffffffff81000000 T _text\n";
        assert_eq!(find_symbol(text.as_bytes(), "tw_timer_handler"), Ok(0xffff_ffff_8206_5730));
        let hidden = "0000000000000000 t tw_timer_handler\n";
        assert!(find_symbol(hidden.as_bytes(), "tw_timer_handler").unwrap_err().contains("kptr_restrict"));
        assert!(find_symbol(text.as_bytes(), "nope").unwrap_err().contains("no nope symbol"));
        assert!(find_symbol(&b"garbage\n\nxyz t tw_timer_handler"[..], "tw_timer_handler").is_err());
    }

    #[test]
    fn this_kernel_exports_the_timewait_handler() {
        // As root the real addresses are visible; portrace needs root anyway.
        if unsafe { libc::geteuid() } == 0 {
            assert!(tw_timer_handler().is_ok());
        }
    }

    #[test]
    fn the_kernel_accepts_both_backup_programs() {
        // The program without `bpf_loop` is what a kernel before 5.17 gets: check here that
        // the verifier accepts it too, with the search it would run. Loading needs root,
        // which portrace needs anyway (CI runs its tests as root).
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let mut ebpf = EbpfLoader::new().btf(None).load(PROGRAM).expect("the object loads");
        for program in [BACKUP, BACKUP_BOUNDED] {
            load_classic(&mut ebpf, program).unwrap_or_else(|e| panic!("{program}: {e:#}"));
        }
    }
}
