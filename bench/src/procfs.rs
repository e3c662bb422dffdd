//! What /proc says about the processes the benchmark measures: CPU time (utime + stime
//! of a process and all its live descendants, plus the time of descendants already
//! reaped, from `/proc/PID/stat`), peak resident memory (`VmHWM` in `/proc/PID/status`),
//! the BPF programs a process holds (`prog_id:` in `/proc/PID/fdinfo/*`, for program and
//! link descriptors), and the whole machine's busy time (`/proc/stat`), which tells how
//! much CPU other people's processes took during a run.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub fn clock_ticks() -> u64 {
    // SAFETY: plain library call.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces and
/// parentheses): field 3 (state) is index 0.
fn stat_fields(pid: i32) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 1..];
    Some(
        after
            .split_whitespace()
            .map(|f| f.parse::<u64>().unwrap_or(0))
            .collect(),
    )
}

/// The pids of the processes now (none when /proc cannot be read).
fn pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
}

/// Parent pid of every process.
fn parents() -> HashMap<i32, i32> {
    let mut map = HashMap::new();
    for pid in pids() {
        if let Some(fields) = stat_fields(pid) {
            // ppid is field 4, index 1 here.
            if let Some(&ppid) = fields.get(1) {
                map.insert(pid, ppid as i32);
            }
        }
    }
    map
}

/// `root` and every live descendant of it.
pub fn tree(root: i32) -> Vec<i32> {
    let parents = parents();
    let mut out = vec![root];
    let mut i = 0;
    // Bounded by the number of processes.
    while i < out.len() && i < 100_000 {
        let p = out[i];
        out.extend(parents.iter().filter(|&(_, &pp)| pp == p).map(|(&c, _)| c));
        i += 1;
    }
    out
}

/// CPU time of `root` and its descendants: utime + stime of each live one, plus cutime +
/// cstime of `root` (descendants it has reaped). Zero once `root` has exited.
pub fn tree_cpu(root: i32) -> Duration {
    let ticks = clock_ticks();
    let mut total = 0u64;
    for (i, pid) in tree(root).into_iter().enumerate() {
        let Some(f) = stat_fields(pid) else { continue };
        // utime, stime, cutime, cstime are fields 14-17, indexes 11-14 here.
        total += f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
        if i == 0 {
            total += f.get(13).copied().unwrap_or(0) + f.get(14).copied().unwrap_or(0);
        }
    }
    Duration::from_nanos(total * 1_000_000_000 / ticks)
}

/// Peak resident set size in bytes (`VmHWM`).
pub fn peak_rss(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024)
}

/// The BPF programs held by these processes, through program or link descriptors.
pub fn held_programs_of(pids: &[i32]) -> BTreeSet<u32> {
    let mut ids = BTreeSet::new();
    for &pid in pids {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
            continue;
        };
        for entry in dir.flatten() {
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            for line in text.lines() {
                if let Some(id) = line
                    .strip_prefix("prog_id:")
                    .and_then(|v| v.trim().parse::<u32>().ok())
                {
                    if id != 0 {
                        ids.insert(id);
                    }
                }
            }
        }
    }
    ids
}

/// The machine's busy CPU time: user + nice + system over all CPUs, from `/proc/stat`
/// (interrupt and softirq time, which no process is charged for, are left out).
pub fn busy_cpu() -> Duration {
    let Ok(text) = std::fs::read_to_string("/proc/stat") else {
        return Duration::ZERO;
    };
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return Duration::ZERO;
    };
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let ticks = f.first().copied().unwrap_or(0)
        + f.get(1).copied().unwrap_or(0)
        + f.get(2).copied().unwrap_or(0);
    Duration::from_nanos(ticks * 1_000_000_000 / clock_ticks())
}

/// This process's own CPU time (the benchmark's bookkeeping).
pub fn self_cpu() -> Duration {
    tree_cpu_single(std::process::id() as i32)
}

fn tree_cpu_single(pid: i32) -> Duration {
    let Some(f) = stat_fields(pid) else {
        return Duration::ZERO;
    };
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_nanos(ticks * 1_000_000_000 / clock_ticks())
}

/// Processes running now, other than this benchmark's, whose names say they are heavy
/// (builds, other tracers, other workloads): a sign the numbers may be disturbed.
pub fn busy_strangers(ours: &[i32]) -> Vec<String> {
    const HEAVY: [&str; 9] = [
        "rustc",
        "cargo",
        "cc1",
        "ld",
        "portrace",
        "tcpload",
        "bpftrace",
        "tcpstates",
        "python3",
    ];
    let mut found = Vec::new();
    let me = std::process::id() as i32;
    for pid in pids() {
        if pid == me || ours.contains(&pid) {
            continue;
        }
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        let comm = comm.trim();
        if HEAVY
            .iter()
            .any(|h| comm == *h || comm.starts_with(&format!("{h}-")))
        {
            found.push(format!("{comm}[{pid}]"));
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        assert!(peak_rss(std::process::id() as i32).unwrap() > 0);
        assert!(tree(std::process::id() as i32).contains(&(std::process::id() as i32)));
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(busy_cpu() > Duration::ZERO);
    }
}
