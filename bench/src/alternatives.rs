//! What other designs of the state program would cost on this machine: reference programs,
//! built instruction by instruction, attached to `sock:inet_sock_set_state` together
//! during untraced loopback storms, each one's `run_time_ns / run_cnt` read as the
//! tracers' programs are. They answer whether a BTF-typed tracepoint program keeping the
//! owner in socket-local storage would bring the kernel's share near the target:
//! - `raw empty`: an empty raw tracepoint program (portrace's main program's type);
//! - `tp_btf empty`: an empty BTF-typed tracepoint program, which reads the socket
//!   through typed pointers instead of probe reads;
//! - `tp_btf, storage made on every hit`: socket-local storage got on every hit (made
//!   when missing) and a counter in it incremented;
//! - `tp_btf, storage made at birth`: the same, made only when the socket leaves CLOSE
//!   or LISTEN (as an owner is recorded), looked up otherwise;
//! - `raw, hash lookup`: one lookup keyed by the socket's address in a hash map of
//!   262,144 entries, like portrace's owner map (mostly missing: it stays empty).
//!
//! And on `timer:timer_start`, during an untraced run of the quiet cost's timer-heavy
//! work, what the timer programs' way out for a timer that is not a timewait socket's
//! would cost in each type of program: empty, and reading the timer's function to
//! compare it, by a probe read (raw tracepoint, as portrace does) or by a plain load
//! through the typed pointer (`tp_btf`).

use std::time::Duration;

use serde_json::{json, Value};

use portrace::btf::Btf;

use crate::bpf::{self, insn, load_map, Floor, ProgInfo};
use crate::measure::{self, Bench, Transport};
use crate::sys::Result;

const PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
const PROG_TYPE_TRACING: u32 = 26;
const ATTACH_TRACE_RAW_TP: u32 = 23;
const MAP_TYPE_HASH: u32 = 1;
const MAP_TYPE_SK_STORAGE: u32 = 24;
const MAP_F_NO_PREALLOC: u32 = 1;
const FUNC_MAP_LOOKUP_ELEM: i32 = 1;
const FUNC_PROBE_READ_KERNEL: i32 = 113;
const FUNC_SK_STORAGE_GET: i32 = 107;
const SK_STORAGE_GET_F_CREATE: i32 = 1;
const TCP_CLOSE: i32 = 7;
const TCP_LISTEN: i32 = 10;

/// One reference program's cost over a round.
#[derive(Clone, Debug)]
pub struct Cost {
    pub name: &'static str,
    pub runs: u64,
    pub ns_per_run: Option<f64>,
}

/// A round: each program's cost, and why a program could not be measured.
#[derive(Clone, Debug, Default)]
pub struct Round {
    pub costs: Vec<Cost>,
    pub missing: Vec<String>,
}

/// The reference programs, attached; kept alive for as long as the value lives.
struct Attached {
    programs: Vec<(&'static str, Floor)>,
    missing: Vec<String>,
    _maps: Vec<std::os::fd::OwnedFd>,
}

/// Runs `rounds` untraced loopback storms with the reference programs attached.
pub fn measure(bench: &mut Bench, rounds: u64) -> Result<Vec<Round>> {
    let _stats = bpf::enable_stats().map_err(|e| format!("BPF_ENABLE_STATS: {e}"))?;
    let target = state_tracepoint_type();
    let mut out = Vec::new();
    for round in 1..=rounds {
        let attached = attach(&target);
        let before: Vec<Option<ProgInfo>> =
            attached.programs.iter().map(|(_, p)| p.info()).collect();
        let run = measure::untraced(bench, Transport::Loopback, 1000 + round)?;
        if let Err(e) = &run.result {
            return Err(format!("the storm with the reference programs failed: {e}").into());
        }
        let costs = costs_since(&attached, before);
        eprintln!("bench: reference programs round {round}: {}", line(&costs));
        out.push(Round {
            costs,
            missing: attached.missing,
        });
        crate::sys::sleep(Duration::from_millis(200))?;
    }
    Ok(out)
}

fn line(costs: &[Cost]) -> String {
    costs
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c.name,
                c.ns_per_run.map_or("-".into(), |n| format!("{n:.0} ns"))
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The vmlinux BTF id BTF-typed programs on `sock:inet_sock_set_state` attach to.
fn state_tracepoint_type() -> std::result::Result<u32, String> {
    let btf = Btf::from_kernel().map_err(|e| e.to_string())?;
    btf.typedef("btf_trace_inet_sock_set_state")
        .ok_or_else(|| "vmlinux BTF has no btf_trace_inet_sock_set_state".to_string())
}

/// Loads and attaches every reference program this kernel takes; `target`: what
/// [`state_tracepoint_type`] found.
fn attach(target: &std::result::Result<u32, String>) -> Attached {
    let mut a = Attached {
        programs: Vec::new(),
        missing: Vec::new(),
        _maps: Vec::new(),
    };
    let empty = [insn(0xb7, 0, 0, 0, 0), insn(0x95, 0, 0, 0, 0)];
    let add =
        |a: &mut Attached, name: &'static str, attached: std::io::Result<Floor>| match attached {
            Ok(p) => a.programs.push((name, p)),
            Err(e) => a.missing.push(format!("{name}: {e}")),
        };
    let raw = |insns: &[u64], name| {
        bpf::load(PROG_TYPE_RAW_TRACEPOINT, insns, name, None)
            .and_then(|p| bpf::attach_raw(p, Some("inet_sock_set_state")))
    };
    add(&mut a, "raw empty", raw(&empty, "ref_raw_empty"));
    let typed = |insns: &[u64], name| -> std::io::Result<Floor> {
        let id = target
            .as_ref()
            .map_err(|e| std::io::Error::other(e.clone()))?;
        bpf::load(
            PROG_TYPE_TRACING,
            insns,
            name,
            Some((ATTACH_TRACE_RAW_TP, *id)),
        )
        .and_then(|p| bpf::attach_raw(p, None))
    };
    add(&mut a, "tp_btf empty", typed(&empty, "ref_btf_empty"));
    for (name, at_birth, prog_name) in [
        ("tp_btf, storage made on every hit", false, "ref_btf_store"),
        ("tp_btf, storage made at birth", true, "ref_btf_birth"),
    ] {
        match storage_map() {
            Ok(map) => {
                add(
                    &mut a,
                    name,
                    typed(&storage_program(&map, at_birth), prog_name),
                );
                a._maps.push(map);
            }
            Err(e) => a.missing.push(format!("{name}: {e}")),
        }
    }
    match bpf::map_create((MAP_TYPE_HASH, 8, 32, 262_144, MAP_F_NO_PREALLOC), None) {
        Ok(map) => {
            add(
                &mut a,
                "raw, hash lookup",
                raw(&lookup_program(&map), "ref_raw_lookup"),
            );
            a._maps.push(map);
        }
        Err(e) => a.missing.push(format!("hash map: {e}")),
    }
    a
}

/// Runs the quiet cost's work once, untraced, with the timer reference programs attached.
pub fn measure_timers(seconds: u64, dir: &std::path::Path) -> Result<Round> {
    let _stats = bpf::enable_stats().map_err(|e| format!("BPF_ENABLE_STATS: {e}"))?;
    let attached = attach_timers();
    let before: Vec<Option<ProgInfo>> = attached.programs.iter().map(|(_, p)| p.info()).collect();
    let topo = crate::netns::Topology::veth()?;
    crate::quiet::work(&topo, seconds, dir, "timer-references")?;
    let round = Round { costs: costs_since(&attached, before), missing: attached.missing };
    eprintln!("bench: reference programs on timer_start: {}", line(&round.costs));
    Ok(round)
}

/// Each program's runs and ns per run since `before`.
fn costs_since(attached: &Attached, before: Vec<Option<ProgInfo>>) -> Vec<Cost> {
    attached
        .programs
        .iter()
        .zip(before)
        .map(|((name, p), before)| {
            let (after, before) = (p.info().unwrap_or_default(), before.unwrap_or_default());
            let runs = after.run_cnt.saturating_sub(before.run_cnt);
            let time = after.run_time_ns.saturating_sub(before.run_time_ns);
            Cost { name, runs, ns_per_run: (runs > 0).then(|| time as f64 / runs as f64) }
        })
        .collect()
}

/// The timer reference programs this kernel takes, attached to `timer:timer_start`.
fn attach_timers() -> Attached {
    let mut a = Attached { programs: Vec::new(), missing: Vec::new(), _maps: Vec::new() };
    let found = Btf::from_kernel().map_err(|e| e.to_string()).and_then(|btf| {
        let target = btf
            .typedef("btf_trace_timer_start")
            .ok_or_else(|| "vmlinux BTF has no btf_trace_timer_start".to_string())?;
        let function = btf.member("timer_list", "function").map_err(|e| e.to_string())?;
        Ok((target, function.offset as i16))
    });
    let (target, offset) = match found {
        Ok(found) => found,
        Err(e) => {
            a.missing.push(format!("timer_start: {e}"));
            return a;
        }
    };
    let empty = [insn(0xb7, 0, 0, 0, 0), insn(0x95, 0, 0, 0, 0)];
    let raw = |insns: &[u64], name| {
        bpf::load(PROG_TYPE_RAW_TRACEPOINT, insns, name, None).and_then(|p| bpf::attach_raw(p, Some("timer_start")))
    };
    let typed = |insns: &[u64], name| {
        bpf::load(PROG_TYPE_TRACING, insns, name, Some((ATTACH_TRACE_RAW_TP, target))).and_then(|p| bpf::attach_raw(p, None))
    };
    for (name, attached) in [
        ("timer_start raw empty", raw(&empty, "ref_tmr_raw")),
        ("timer_start raw, function probe-read", raw(&probe_read_function(offset), "ref_tmr_read")),
        ("timer_start tp_btf empty", typed(&empty, "ref_tmr_btf")),
        ("timer_start tp_btf, function loaded", typed(&load_function(offset), "ref_tmr_load")),
    ] {
        match attached {
            Ok(p) => a.programs.push((name, p)),
            Err(e) => a.missing.push(format!("{name}: {e}")),
        }
    }
    a
}

/// The way out of portrace's timer programs, in a raw tracepoint: the timer's function
/// copied by a probe read and compared with an address no timer has.
fn probe_read_function(offset: i16) -> Vec<u64> {
    vec![
        insn(0x79, 3, 1, 0, 0),      // r3 = ctx[0]: the timer
        insn(0x07, 3, 0, 0, offset.into()), // r3 += offsetof(struct timer_list, function)
        insn(0xbf, 1, 10, 0, 0),     // r1 = fp
        insn(0x07, 1, 0, 0, -8),     // r1 -= 8
        insn(0xb7, 2, 0, 0, 8),      // r2 = 8
        insn(0x85, 0, 0, 0, FUNC_PROBE_READ_KERNEL),
        insn(0x79, 1, 10, -8, 0),    // r1 = *(fp - 8): the function
        insn(0x55, 1, 0, 0, 1),      // if r1 != 1 goto next (the compare)
        insn(0xb7, 0, 0, 0, 0),
        insn(0x95, 0, 0, 0, 0),
    ]
}

/// The same in a BTF-typed program: the timer's function loaded through the typed pointer.
fn load_function(offset: i16) -> Vec<u64> {
    vec![
        insn(0x79, 1, 1, 0, 0),      // r1 = ctx[0]: the timer (struct timer_list *)
        insn(0x79, 1, 1, offset, 0), // r1 = timer->function
        insn(0x55, 1, 0, 0, 1),      // if r1 != 1 goto next (the compare)
        insn(0xb7, 0, 0, 0, 0),
        insn(0x95, 0, 0, 0, 0),
    ]
}

/// Socket storage of a `u64`, keyed (as the kernel requires) by an `int`.
fn storage_map() -> std::io::Result<std::os::fd::OwnedFd> {
    let btf = bpf::btf_load(&int_and_u64_btf())?;
    bpf::map_create(
        (MAP_TYPE_SK_STORAGE, 4, 8, 0, MAP_F_NO_PREALLOC),
        Some((&btf, 1, 2)),
    )
}

/// A BTF blob of two types: [1] a signed 4-byte `int`, [2] an 8-byte `u64`.
fn int_and_u64_btf() -> Vec<u8> {
    let strings = b"\0int\0u64\0";
    let mut types = Vec::new();
    for (name_off, size, encoding) in [(1u32, 4u32, (1u32 << 24) | 32), (5, 8, 64)] {
        // struct btf_type { name_off, info (kind INT = 1 << 24), size }, then the encoding.
        for word in [name_off, 1 << 24, size, encoding] {
            types.extend_from_slice(&word.to_le_bytes());
        }
    }
    let mut blob = Vec::new();
    blob.extend_from_slice(&0xeb9f_u16.to_le_bytes());
    blob.extend_from_slice(&[1, 0]); // version, flags
    for word in [
        24u32,
        0,
        types.len() as u32,
        types.len() as u32,
        strings.len() as u32,
    ] {
        blob.extend_from_slice(&word.to_le_bytes());
    }
    blob.extend_from_slice(&types);
    blob.extend_from_slice(strings);
    blob
}

/// `tp_btf`: the socket's storage got (made when missing, or, with `at_birth`, only when
/// the socket leaves CLOSE or LISTEN) and its counter incremented.
fn storage_program(map: &std::os::fd::OwnedFd, at_birth: bool) -> Vec<u64> {
    let mut p = vec![
        insn(0x79, 6, 1, 0, 0),                       // r6 = ctx[0]: the socket
        insn(0x79, 7, 1, 8, 0),                       // r7 = ctx[1]: the old state
        insn(0xb7, 4, 0, 0, SK_STORAGE_GET_F_CREATE), // r4 = make when missing
    ];
    if at_birth {
        p.extend([
            insn(0x16, 7, 0, 2, TCP_CLOSE),  // if w7 == CLOSE: keep r4
            insn(0x16, 7, 0, 1, TCP_LISTEN), // if w7 == LISTEN: keep r4
            insn(0xb7, 4, 0, 0, 0),          // r4 = look up only
        ]);
    }
    p.extend(load_map(1, map)); // r1 = map
    p.extend([
        insn(0xbf, 2, 6, 0, 0), // r2 = socket
        insn(0xb7, 3, 0, 0, 0), // r3 = NULL (no initial value)
        insn(0x85, 0, 0, 0, FUNC_SK_STORAGE_GET),
        insn(0x15, 0, 0, 3, 0), // if r0 == NULL skip 3
        insn(0x79, 1, 0, 0, 0), // r1 = *r0
        insn(0x07, 1, 0, 0, 1), // r1 += 1
        insn(0x7b, 0, 1, 0, 0), // *r0 = r1
        insn(0xb7, 0, 0, 0, 0),
        insn(0x95, 0, 0, 0, 0),
    ]);
    p
}

/// Raw tracepoint: a lookup keyed by the socket's address.
fn lookup_program(map: &std::os::fd::OwnedFd) -> Vec<u64> {
    let mut p = vec![
        insn(0x79, 6, 1, 0, 0),   // r6 = ctx[0]: the socket
        insn(0x7b, 10, 6, -8, 0), // *(fp - 8) = r6
    ];
    p.extend(load_map(1, map));
    p.extend([
        insn(0xbf, 2, 10, 0, 0), // r2 = fp
        insn(0x07, 2, 0, 0, -8), // r2 -= 8
        insn(0x85, 0, 0, 0, FUNC_MAP_LOOKUP_ELEM),
        insn(0xb7, 0, 0, 0, 0),
        insn(0x95, 0, 0, 0, 0),
    ]);
    p
}

/// Per program, the lowest and highest ns per run over the rounds.
fn ranges(rounds: &[Round]) -> Vec<(&'static str, u64, f64, f64)> {
    let mut out: Vec<(&'static str, u64, f64, f64)> = Vec::new();
    for c in rounds.iter().flat_map(|r| &r.costs) {
        let Some(ns) = c.ns_per_run else { continue };
        match out.iter_mut().find(|o| o.0 == c.name) {
            Some(o) => *o = (o.0, o.1 + c.runs, o.2.min(ns), o.3.max(ns)),
            None => out.push((c.name, c.runs, ns, ns)),
        }
    }
    out
}

pub fn table(rounds: &[Round]) -> String {
    titled(&format!("reference programs on sock:inet_sock_set_state ({} untraced loopback storms)", rounds.len()), rounds)
}

/// The timer reference programs' table.
pub fn timer_table(round: &Round, seconds: u64) -> String {
    titled(&format!("reference programs on timer:timer_start (the quiet cost's work, {seconds} s, untraced)"), std::slice::from_ref(round))
}

fn titled(title: &str, rounds: &[Round]) -> String {
    let mut t = format!("{title}:\n| program | runs | ns per run |\n|---|---:|---:|\n");
    for (name, runs, lo, hi) in ranges(rounds) {
        t += &format!("| {name} | {runs} | {lo:.0}-{hi:.0} |\n");
    }
    for m in rounds
        .iter()
        .flat_map(|r| &r.missing)
        .collect::<std::collections::BTreeSet<_>>()
    {
        t += &format!("- not measured: {m}\n");
    }
    t
}

pub fn json(rounds: &[Round]) -> Value {
    json!(rounds
        .iter()
        .map(|r| json!({
            "programs": r.costs.iter().map(|c| json!({"name": c.name, "runs": c.runs, "ns_per_run": c.ns_per_run})).collect::<Vec<_>>(),
            "not_measured": r.missing,
        }))
        .collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_span_the_rounds() {
        let round = |ns: f64| Round {
            costs: vec![
                Cost {
                    name: "a",
                    runs: 10,
                    ns_per_run: Some(ns),
                },
                Cost {
                    name: "b",
                    runs: 0,
                    ns_per_run: None,
                },
            ],
            missing: vec![],
        };
        assert_eq!(
            ranges(&[round(50.0), round(70.0)]),
            vec![("a", 20, 50.0, 70.0)]
        );
    }

    #[test]
    fn every_reference_program_loads_and_counts_real_transitions() {
        // As root (the benchmark's own requirement), the real kernel.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let _stats = bpf::enable_stats().expect("BPF_ENABLE_STATS");
        let a = attach(&state_tracepoint_type());
        assert!(a.missing.is_empty(), "{:?}", a.missing);
        assert_eq!(a.programs.len(), 5);
        // CLOSE->LISTEN, LISTEN->CLOSE: every program runs for both.
        drop(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
        for (name, p) in &a.programs {
            assert!(p.info().unwrap().run_cnt >= 2, "{name}");
        }
    }

    #[test]
    fn every_timer_reference_program_loads_and_runs() {
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let _stats = bpf::enable_stats().expect("BPF_ENABLE_STATS");
        let a = attach_timers();
        assert!(a.missing.is_empty(), "{:?}", a.missing);
        assert_eq!(a.programs.len(), 4);
        // A timer the test arms: a socket read with a timeout waits on a kernel timer.
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(std::time::Duration::from_millis(20))).unwrap();
        let _ = socket.recv(&mut [0u8; 1]);
        for (name, p) in &a.programs {
            assert!(p.info().unwrap().run_cnt >= 1, "{name}");
        }
    }
}
