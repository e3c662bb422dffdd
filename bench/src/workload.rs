//! One run of the workload: a tcpload server in the server's namespace that accepts
//! exactly N connections, then a client in the client's namespace that makes them (tcpload
//! unpaced, or this benchmark's own paced client for `--rate`), each its own process. Both
//! must succeed and say `done N`; the client's connection rate comes from its `--stats`
//! line (`... N connections in S s (R/s)`), measured inside the client from its start to
//! its last connection's close.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cli::{Closer, Rate};
use crate::netns::Topology;
use crate::sys::{self, Error, Out, Proc, Result};

/// How long tcpload itself may take before it gives up.
const TCPLOAD_TIMEOUT_SECS: u64 = 120;
/// How long the benchmark waits for either process: longer than tcpload's own deadline.
const WAIT: Duration = Duration::from_secs(TCPLOAD_TIMEOUT_SECS + 15);

/// The workload's shape.
#[derive(Clone, Debug)]
pub struct Shape {
    pub count: u64,
    pub concurrency: u64,
    pub rate: Rate,
    pub closer: Closer,
    pub tcpload: PathBuf,
    /// This benchmark's own binary, for the paced client.
    pub self_exe: PathBuf,
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Connections per second while connections were being opened, stalls left out (what
    /// the rate columns use; see [`Progress`]).
    pub rate: f64,
    /// Connections per second over the whole client run, from its own `--stats` line.
    pub rate_end_to_end: f64,
    /// SYNs the server's namespace dropped because its accept queue was full
    /// (`TcpExtListenOverflows`); each costs one client thread a 1 s SYN retransmission.
    pub listen_overflows: u64,
    /// The client's elapsed time.
    pub elapsed: Duration,
    pub client_cpu: Duration,
    pub server_cpu: Duration,
    /// From the server's start to the client's exit.
    pub wall: Duration,
}

/// A started server: listening once this exists.
pub struct Server {
    proc: Proc,
    out: PathBuf,
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Starts the server on `port` and waits until it listens.
pub fn start_server(topo: &Topology, shape: &Shape, port: u16, dir: &Path) -> Result<Server> {
    let out = dir.join("server.out");
    let err = dir.join("server.err");
    let mut cmd = topo.server_ns.command(&shape.tcpload);
    let close = match shape.closer {
        Closer::Server => "first",
        Closer::Client => "second",
    };
    cmd.args([
        "server",
        "--listen",
        &format!("{}:{port}", topo.server_addr),
        "--count",
        &shape.count.to_string(),
    ])
    .args([
        "--close",
        close,
        "--timeout",
        &TCPLOAD_TIMEOUT_SECS.to_string(),
    ]);
    let mut proc = Proc::spawn("tcpload server", cmd, Out::File(&out), Out::File(&err))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if read(&out).lines().any(|l| l == "ready") {
            return Ok(Server { proc, out });
        }
        if let Some(exit) = proc.poll() {
            return Err(Error::Failed(format!(
                "tcpload server {}: {}",
                exit.describe(),
                read(&err).trim()
            )));
        }
        if Instant::now() > deadline {
            return Err(Error::Failed(
                "tcpload server did not print `ready` within 10 s".into(),
            ));
        }
        sys::sleep(Duration::from_millis(2))?;
    }
}

/// Runs the client to completion, then waits for the server.
pub fn run_client(
    topo: &Topology,
    shape: &Shape,
    port: u16,
    dir: &Path,
    mut server: Server,
) -> Result<Outcome> {
    let started = Instant::now();
    let out = dir.join("client.out");
    let err = dir.join("client.err");
    let connect = format!("{}:{port}", topo.server_addr);
    let close = match shape.closer {
        Closer::Client => "first",
        Closer::Server => "second",
    };
    let (count, concurrency) = (shape.count.to_string(), shape.concurrency.to_string());
    let cmd = match shape.rate {
        Rate::Unpaced => {
            let mut cmd = topo.client_ns().command(&shape.tcpload);
            cmd.args([
                "client",
                "--connect",
                &connect,
                "--count",
                &count,
                "--concurrency",
                &concurrency,
            ])
            .args([
                "--close",
                close,
                "--timeout",
                &TCPLOAD_TIMEOUT_SECS.to_string(),
                "--stats",
            ]);
            cmd
        }
        Rate::PerSecond(rate) => {
            let mut cmd = topo.client_ns().command(&shape.self_exe);
            cmd.args([
                "paced-client",
                "--connect",
                &connect,
                "--count",
                &count,
                "--concurrency",
                &concurrency,
            ])
            .args([
                "--rate",
                &rate.to_string(),
                "--close",
                close,
                "--timeout",
                &TCPLOAD_TIMEOUT_SECS.to_string(),
            ]);
            cmd
        }
    };
    let mut client = Proc::spawn("client", cmd, Out::File(&out), Out::File(&err))?;
    let mut progress = Progress::new();
    let deadline = Instant::now() + WAIT;
    let client_exit = loop {
        if let Some(exit) = client.poll() {
            break exit;
        }
        progress.sample(client.pid, server.proc.pid);
        if Instant::now() > deadline {
            return Err(Error::Failed(format!(
                "the client did not end within {WAIT:?}"
            )));
        }
        sys::sleep(Duration::from_millis(2))?;
    };
    let client_err = read(&err);
    if !client_exit.success()
        || !read(&out)
            .lines()
            .any(|l| l == format!("done {}", shape.count))
    {
        server.proc.stop(libc::SIGKILL, Duration::from_secs(2));
        return Err(Error::Failed(format!(
            "client {}: {}",
            client_exit.describe(),
            client_err.trim()
        )));
    }
    let wall = started.elapsed();
    let server_exit = server.proc.wait(Duration::from_secs(20))?;
    if !server_exit.success()
        || !read(&server.out)
            .lines()
            .any(|l| l == format!("done {}", shape.count))
    {
        return Err(Error::Failed(format!(
            "tcpload server {}: {}",
            server_exit.describe(),
            read(&server.out.with_extension("err")).trim()
        )));
    }
    let (elapsed, rate_end_to_end) = parse_stats(&client_err).ok_or_else(|| {
        Error::Failed(format!(
            "no rate in the client's output: {}",
            client_err.trim()
        ))
    })?;
    Ok(Outcome {
        rate: progress.rate().unwrap_or(rate_end_to_end),
        rate_end_to_end,
        listen_overflows: progress.overflows,
        elapsed,
        client_cpu: client_exit.cpu,
        server_cpu: server_exit.cpu,
        wall,
    })
}

/// The client's progress, sampled every 2 ms from `/proc/PID/net/snmp` of its namespace
/// (`Tcp: ActiveOpens`, one per connect). An unpaced tcpload client outruns its server:
/// the accept queue fills (4096) and the kernel drops a few SYNs, and each dropped SYN
/// stalls one client thread for the 1 s SYN retransmission timeout, whatever traces the
/// run (tcpload gives each thread a fixed share, so the run then ends a second later). The
/// end-to-end rate swings between about 100,000 and 16,000 connections per second from run
/// to run for that reason alone; the rate over the time during which connections were
/// being opened (2 ms intervals in which the count did not move are left out) does not,
/// so the benchmark compares that.
struct Progress {
    last: Option<(Instant, u64)>,
    active: Duration,
    opened: u64,
    overflows: u64,
}

fn tcp_field(text: &str, prefix: &str, name: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with(prefix));
    let header = lines.next()?;
    let values = lines.next()?;
    let i = header.split_whitespace().position(|h| h == name)?;
    values.split_whitespace().nth(i)?.parse().ok()
}

impl Progress {
    fn new() -> Progress {
        Progress {
            last: None,
            active: Duration::ZERO,
            opened: 0,
            overflows: 0,
        }
    }

    fn sample(&mut self, client: i32, server: i32) {
        if let Ok(netstat) = std::fs::read_to_string(format!("/proc/{server}/net/netstat")) {
            if let Some(n) = tcp_field(&netstat, "TcpExt:", "ListenOverflows") {
                self.overflows = n;
            }
        }
        // Until `ip netns exec` has entered the namespace and exec'd the client, /proc
        // shows the root namespace's counters; the client's namespace is fresh, so its
        // counter starts at zero.
        let comm = std::fs::read_to_string(format!("/proc/{client}/comm")).unwrap_or_default();
        if comm.trim() == "ip" || comm.is_empty() {
            return;
        }
        let Ok(snmp) = std::fs::read_to_string(format!("/proc/{client}/net/snmp")) else {
            return;
        };
        let Some(count) = tcp_field(&snmp, "Tcp:", "ActiveOpens") else {
            return;
        };
        let now = Instant::now();
        if let Some((t, n)) = self.last {
            if count > n {
                self.active += now - t;
                self.opened += count - n;
            }
        } else if count > 0 {
            // Connections opened before the first sample: their time is unknown.
            self.last = Some((now, count));
            return;
        }
        self.last = Some((now, count));
    }

    /// Connections per second while connections were being opened.
    fn rate(&self) -> Option<f64> {
        (self.active > Duration::from_millis(20) && self.opened > 0)
            .then(|| self.opened as f64 / self.active.as_secs_f64())
    }
}

/// `tcpload client: 20000 connections in 1.523 s (13132/s)` -> (1.523 s, 20000 / 1.523).
pub fn parse_stats(text: &str) -> Option<(Duration, f64)> {
    for line in text.lines() {
        let Some((head, tail)) = line.split_once(" connections in ") else {
            continue;
        };
        let n: f64 = head.rsplit(' ').next()?.parse().ok()?;
        let secs: f64 = tail.split_whitespace().next()?.parse().ok()?;
        if secs > 0.0 {
            return Some((Duration::from_secs_f64(secs), n / secs));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_stats_line() {
        let (d, r) =
            parse_stats("tcpload client: 20000 connections in 1.600 s (12500/s)\n").unwrap();
        assert_eq!(d, Duration::from_millis(1600));
        assert!((r - 12500.0).abs() < 1e-6);
        assert!(parse_stats("nothing here").is_none());
    }
}
