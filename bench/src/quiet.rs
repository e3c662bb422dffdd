//! The quiet cost: what portrace costs a host busy with work that is not TCP while it
//! traces nothing. Its timer programs run for every kernel timer armed, removed or
//! expired, TCP's or not, so the work here arms and removes timers as fast as it can:
//! UDP datagrams of 4000 bytes over a veth pair with a 1500-byte MTU, each sent in three
//! IP fragments, whose reassembly on the receiving side arms a timer and removes it (two
//! timer events per datagram, some 80,000 a second here).
//!
//! Each round is an untraced run of the work, then a run with `portrace` started with no
//! flags (every program attached, its output to a file). Reported: the work's rate traced
//! over untraced (median of the rounds), and the CPU portrace itself took while the work
//! ran: its programs' run time (the kernel's BPF statistics) and its process's CPU time,
//! as a share of the machine's CPU over the run. That share bounds what the work can lose;
//! the rate ratio shows what it did lose, within the machine's run-to-run noise.

use std::net::{SocketAddrV4, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::bpf::{self, ProgInfo};
use crate::netns::Topology;
use crate::procfs;
use crate::sys::{self, Error, Out, Proc, Result};

/// Bytes per datagram: three fragments at a 1500-byte MTU.
pub const DATAGRAM: usize = 4000;
/// The UDP port the sink listens on.
const PORT: u16 = 63_999;
/// How long portrace may take to start.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// One round's figures.
#[derive(Debug, Clone)]
pub struct Round {
    pub untraced_rate: f64,
    pub traced_rate: f64,
    /// portrace's programs that ran during the traced run: name, runs, run time.
    pub programs: Vec<(String, u64, u64)>,
    /// portrace's process CPU time during the traced run.
    pub user_cpu: Duration,
    /// The traced run's wall time.
    pub wall: Duration,
}

impl Round {
    fn kernel_ns(&self) -> u64 {
        self.programs.iter().map(|(_, _, ns)| ns).sum()
    }

    /// portrace's share of the machine's CPU over the traced run.
    pub fn cpu_share(&self, cpus: usize) -> f64 {
        let used = self.kernel_ns() as f64 + self.user_cpu.as_nanos() as f64;
        used / (self.wall.as_nanos() as f64 * cpus as f64)
    }
}

/// Sends `DATAGRAM`-byte datagrams to `to` for `seconds`; prints how many were sent.
pub fn flood(to: SocketAddrV4, seconds: u64) -> std::io::Result<()> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    let payload = vec![0x5a_u8; DATAGRAM];
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut sent = 0u64;
    while Instant::now() < end {
        for _ in 0..64 {
            // A full socket buffer or a fragment dropped on the way is the work's own
            // business: what counts is what arrives.
            if socket.send_to(&payload, to).is_ok() {
                sent += 1;
            }
        }
    }
    println!("sent {sent}");
    Ok(())
}

/// Receives on `at` until nothing has come for a second after the first datagram (or for
/// `seconds` + 5 s in all); prints how many datagrams arrived and over how long.
pub fn sink(at: SocketAddrV4, seconds: u64) -> std::io::Result<()> {
    let socket = UdpSocket::bind(at)?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    println!("ready");
    let deadline = Instant::now() + Duration::from_secs(seconds + 5);
    let mut buf = vec![0u8; 65_536];
    let (mut received, mut first, mut last) = (0u64, None, Instant::now());
    while Instant::now() < deadline {
        match socket.recv(&mut buf) {
            Ok(_) => {
                let now = Instant::now();
                first.get_or_insert(now);
                last = now;
                received += 1;
            }
            Err(_) if first.is_some() && last.elapsed() > Duration::from_secs(1) => break,
            Err(_) => {}
        }
    }
    let span = first.map_or(Duration::ZERO, |f| last.saturating_duration_since(f));
    println!("received {received} in {:.6}", span.as_secs_f64());
    Ok(())
}

/// Runs the work once in `topo`: datagrams received per second.
pub fn work(topo: &Topology, seconds: u64, dir: &Path, label: &str) -> Result<f64> {
    let exe = std::env::current_exe().map_err(|e| format!("finding this program: {e}"))?;
    let to = SocketAddrV4::new(topo.server_addr, PORT);
    let sink_out = dir.join(format!("{label}-sink.txt"));
    let mut cmd = topo.server_ns.command(&exe);
    cmd.args(["udp-sink", "--at", &to.to_string(), "--seconds", &seconds.to_string()]);
    let mut sink = Proc::spawn("udp sink", cmd, Out::File(&sink_out), Out::Null)?;
    let ready = Instant::now();
    while !std::fs::read_to_string(&sink_out).unwrap_or_default().contains("ready") {
        if ready.elapsed() > Duration::from_secs(10) {
            return Err(Error::Failed("the UDP sink did not start within 10 s".into()));
        }
        sys::sleep(Duration::from_millis(20))?;
    }
    let mut cmd = topo.client_ns().command(&exe);
    cmd.args(["udp-flood", "--to", &to.to_string(), "--seconds", &seconds.to_string()]);
    sys::run_bounded("udp flood", cmd, Duration::from_secs(seconds + 30))?;
    let exit = sink.wait(Duration::from_secs(seconds + 15))?;
    if !exit.success() {
        return Err(Error::Failed(format!("the UDP sink {}", exit.describe())));
    }
    let text = std::fs::read_to_string(&sink_out).unwrap_or_default();
    parse_sink(&text).ok_or_else(|| Error::Failed(format!("the UDP sink said: {text:?}")))
}

/// `received N in S` → N / S.
pub fn parse_sink(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("received "))?;
    let mut words = line.split_whitespace();
    let n: f64 = words.nth(1)?.parse().ok()?;
    let secs: f64 = words.nth(1)?.parse().ok()?;
    (secs > 0.0 && n > 0.0).then(|| n / secs)
}

fn programs_of(pid: i32) -> Vec<ProgInfo> {
    procfs::held_programs_of(&procfs::tree(pid)).into_iter().filter_map(bpf::prog_info).collect()
}

/// One untraced run and one traced run.
fn round(portrace: &Path, seconds: u64, dir: &Path, n: u64) -> Result<Round> {
    let topo = Topology::veth()?;
    let untraced_rate = work(&topo, seconds, dir, &format!("untraced-{n}"))?;
    let _stats = bpf::enable_stats().map_err(|e| format!("switching BPF statistics on: {e}"))?;
    let out = dir.join(format!("quiet-portrace-{n}.json"));
    let mut tracer = start_portrace(portrace, &["--format", "json"], &out)?;
    // Its start-up (the inventory, the first reads) is over before the work begins.
    sys::sleep(Duration::from_millis(500))?;
    let before = programs_of(tracer.pid);
    let cpu_before = procfs::tree_cpu(tracer.pid);
    let began = Instant::now();
    let traced_rate = work(&topo, seconds, dir, &format!("traced-{n}"));
    let wall = began.elapsed();
    let after = programs_of(tracer.pid);
    let user_cpu = procfs::tree_cpu(tracer.pid).saturating_sub(cpu_before);
    tracer.stop(libc::SIGINT, Duration::from_secs(20));
    let programs = after
        .iter()
        .filter_map(|a| {
            let b = before.iter().find(|b| b.id == a.id)?;
            Some((a.name.clone(), a.run_cnt.saturating_sub(b.run_cnt), a.run_time_ns.saturating_sub(b.run_time_ns)))
        })
        .collect();
    Ok(Round { untraced_rate, traced_rate: traced_rate?, programs, user_cpu, wall })
}

/// Starts `portrace args...` with its output to `out` and waits for its start record.
pub fn start_portrace(portrace: &Path, args: &[&str], out: &Path) -> Result<Proc> {
    let mut cmd = Command::new(portrace);
    cmd.args(args);
    let mut tracer = Proc::spawn("portrace", cmd, Out::File(out), Out::Null)?;
    let started = Instant::now();
    while !std::fs::read_to_string(out).unwrap_or_default().contains("\"type\":\"start\"") {
        if let Some(exit) = tracer.poll() {
            return Err(Error::Failed(format!("portrace {} before it started", exit.describe())));
        }
        if started.elapsed() > READY_TIMEOUT {
            return Err(Error::Failed("portrace did not start within 30 s".into()));
        }
        sys::sleep(Duration::from_millis(10))?;
    }
    Ok(tracer)
}

/// The whole measurement: `rounds` rounds of `seconds` each.
pub fn measure(portrace: &Path, rounds: u64, seconds: u64, dir: &Path) -> Result<Vec<Round>> {
    let mut all = Vec::new();
    for n in 1..=rounds {
        let r = round(portrace, seconds, dir, n)?;
        eprintln!(
            "bench: quiet cost round {n}: untraced {:.0} datagrams/s, traced {:.0} ({:.3}x); portrace took {:.3}% of the CPU",
            r.untraced_rate,
            r.traced_rate,
            r.traced_rate / r.untraced_rate,
            100.0 * r.cpu_share(cpus())
        );
        all.push(r);
    }
    Ok(all)
}

pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The figures of all rounds: median rate ratio, median CPU share, and each timer
/// program's runs per second and ns per run over all rounds.
pub struct Summary {
    pub ratio: f64,
    pub cpu_share: f64,
    pub events_per_s: f64,
    pub programs: Vec<(String, f64, f64)>,
}

pub fn summarize(rounds: &[Round]) -> Summary {
    let ratio = median(rounds.iter().map(|r| r.traced_rate / r.untraced_rate).collect());
    let cpu_share = median(rounds.iter().map(|r| r.cpu_share(cpus())).collect());
    let wall: f64 = rounds.iter().map(|r| r.wall.as_secs_f64()).sum();
    let mut names: Vec<String> = rounds.iter().flat_map(|r| r.programs.iter().map(|p| p.0.clone())).collect();
    names.sort();
    names.dedup();
    let programs: Vec<(String, f64, f64)> = names
        .into_iter()
        .map(|name| {
            let (runs, ns) = rounds
                .iter()
                .flat_map(|r| r.programs.iter().filter(|p| p.0 == name))
                .fold((0u64, 0u64), |(r, n), p| (r + p.1, n + p.2));
            (name, runs as f64 / wall, if runs > 0 { ns as f64 / runs as f64 } else { 0.0 })
        })
        .filter(|(_, per_s, _)| *per_s > 0.0)
        .collect();
    let events_per_s = programs.iter().filter(|(n, _, _)| n.starts_with("timer_")).map(|p| p.1).sum();
    Summary { ratio, cpu_share, events_per_s, programs }
}

pub fn table(s: &Summary, rounds: usize, seconds: u64) -> String {
    let mut text = format!(
        "quiet cost ({rounds} rounds of {seconds} s; UDP in {DATAGRAM}-byte datagrams, fragmented over veth, portrace idle): \
         rate traced/untraced {:.3} (target >= 0.99), portrace's CPU share {:.3}% (target < 1%), {:.0} timer events/s\n",
        s.ratio,
        100.0 * s.cpu_share,
        s.events_per_s
    );
    for (name, per_s, ns) in &s.programs {
        text.push_str(&format!("  {name:<28} {per_s:>10.0} runs/s {ns:>8.1} ns/run\n"));
    }
    text
}

pub fn json(rounds: &[Round], s: &Summary) -> Value {
    json!({
        "rate_ratio": s.ratio,
        "cpu_share": s.cpu_share,
        "timer_events_per_s": s.events_per_s,
        "programs": s.programs.iter().map(|(n, per_s, ns)| json!({"name": n, "runs_per_s": per_s, "ns_per_run": ns})).collect::<Vec<_>>(),
        "rounds": rounds.iter().map(|r| json!({
            "untraced_rate": r.untraced_rate,
            "traced_rate": r.traced_rate,
            "wall_s": r.wall.as_secs_f64(),
            "user_cpu_s": r.user_cpu.as_secs_f64(),
            "programs": r.programs.iter().map(|(n, runs, ns)| json!({"name": n, "runs": runs, "run_time_ns": ns})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_sink_line() {
        assert_eq!(parse_sink("ready\nreceived 1000 in 2.000000\n"), Some(500.0));
        assert_eq!(parse_sink("ready\nreceived 0 in 0.000000\n"), None);
        assert_eq!(parse_sink("ready\n"), None);
    }

    #[test]
    fn summary_takes_medians_and_rates() {
        let r = |u: f64, t: f64| Round {
            untraced_rate: u,
            traced_rate: t,
            programs: vec![("timer_start".into(), 1000, 50_000), ("timer_cancel".into(), 1000, 30_000)],
            user_cpu: Duration::from_millis(1),
            wall: Duration::from_secs(1),
        };
        let s = summarize(&[r(100.0, 99.0), r(100.0, 98.0), r(100.0, 100.0)]);
        assert!((s.ratio - 0.99).abs() < 1e-9);
        assert!((s.events_per_s - 2000.0).abs() < 1e-9, "{}", s.events_per_s);
        let start = s.programs.iter().find(|p| p.0 == "timer_start").unwrap();
        assert!((start.1 - 1000.0).abs() < 1e-9 && (start.2 - 50.0).abs() < 1e-9, "{:?}", s.programs);
        // (80 us of programs + 1 ms of process) over 1 s of 1..n CPUs.
        let share = r(1.0, 1.0).cpu_share(2);
        assert!((share - 0.00108 / 2.0).abs() < 1e-9, "{share}");
    }
}
