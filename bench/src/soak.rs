//! `portrace-bench soak`: `portrace serve` for a long run at a steady connection rate,
//! with owner labels, scraped every second like Prometheus would. It answers two
//! questions: does its memory stay flat over time (no per-socket state outliving its
//! socket, a bounded label table), and how long does a scrape take while the tracer is
//! busy? The workload runs on loopback between 127.0.0.1 and 127.0.0.77, one listening
//! port per service, and serve is filtered to 127.0.0.77, so that nothing else on the
//! host counts. Everything is bounded: the run lasts --minutes, then serve is stopped
//! and the listeners and clients end with the process.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::Args;

/// The servers' address: on loopback, and named by serve's filter.
const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 77);

#[derive(Clone, Debug, Args)]
pub struct SoakOptions {
    /// The portrace binary (cargo xtask soak passes the release build).
    #[arg(long)]
    pub portrace: PathBuf,

    /// How long serve runs under load.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub minutes: u64,

    /// Connections per second, spread over the services.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..=20_000))]
    pub rate: u64,

    /// Services: listening ports, from --first-port on (each gets its own `port` label).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    pub services: u64,

    /// The first listening port (keep it below the ephemeral range).
    #[arg(long, default_value_t = 21000)]
    pub first_port: u16,

    /// serve's --listen port.
    #[arg(long, default_value_t = 19978)]
    pub metrics_port: u16,
}

/// Kills and reaps the child on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    Some(line.split_whitespace().next()?.parse::<u64>().ok()? * 1024)
}

/// One scrape as Prometheus makes it: the body and how long it took, connect to last byte.
fn scrape(addr: SocketAddr, path: &str) -> Result<(String, Duration), String> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(|e| format!("send: {e}"))?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(|e| format!("read: {e}"))?;
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{path}: {}", head.lines().next().unwrap_or("")));
    }
    Ok((body.to_string(), took))
}

/// The sum of a counter family's samples in an exposition.
fn sum_of(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |sum, v| sum + v)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

pub fn main(o: SoakOptions) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    let ports: Vec<u16> = (0..o.services as u16).map(|k| o.first_port + k).collect();
    // The services: each accepts, reads to the client's FIN, closes (the client closes
    // first, so the client side goes through TIME_WAIT).
    for &port in &ports {
        let listener = TcpListener::bind((SERVER_ADDR, port)).map_err(|e| format!("listening on {SERVER_ADDR}:{port}: {e}"))?;
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut stream = stream;
                let mut buf = [0u8; 64];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            }
        });
    }
    let metrics: SocketAddr = (Ipv4Addr::LOCALHOST, o.metrics_port).into();
    let serve = Command::new(&o.portrace)
        .args(["serve", "--listen", &metrics.to_string(), "--owner-labels", "--addr", "127.0.0.77/32"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", o.portrace.display()))?;
    let serve = Reaped(serve);
    let pid = serve.0.id();
    let ready = Instant::now();
    loop {
        if scrape(metrics, "/healthz").is_ok() {
            break;
        }
        if ready.elapsed() > Duration::from_secs(30) {
            return Err("serve was not healthy within 30 s".into());
        }
        thread::sleep(Duration::from_millis(100));
    }

    // The clients: four threads, each paced to a quarter of the rate.
    let opened = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    const CLIENTS: u64 = 4;
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (stop, opened, failed, ports) = (stop.clone(), opened.clone(), failed.clone(), ports.clone());
        let interval = Duration::from_secs_f64(CLIENTS as f64 / o.rate as f64);
        clients.push(thread::spawn(move || {
            let start = Instant::now();
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                let due = start + interval * n as u32;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
                let port = ports[((n * CLIENTS + c) % ports.len() as u64) as usize];
                match TcpStream::connect((SERVER_ADDR, port)) {
                    Ok(stream) => {
                        drop(stream);
                        opened.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                n += 1;
            }
        }));
    }

    let started = Instant::now();
    let total = Duration::from_secs(o.minutes * 60);
    let mut latencies = Vec::new();
    let mut errors = 0u64;
    let mut rss = Vec::new();
    let mut last = String::new();
    while started.elapsed() < total {
        let tick = Instant::now();
        match scrape(metrics, "/metrics") {
            Ok((body, took)) => {
                latencies.push(took);
                last = body;
            }
            Err(e) => {
                errors += 1;
                eprintln!("soak: scrape failed: {e}");
            }
        }
        let at = started.elapsed().as_secs();
        if rss.last().is_none_or(|&(t, _)| at >= t + 30) {
            let bytes = rss_bytes(pid).ok_or("serve exited")?;
            rss.push((at, bytes));
            eprintln!(
                "soak: {at:>4} s  rss {:.1} MiB  transitions {:.0}  connections {}",
                bytes as f64 / (1 << 20) as f64,
                sum_of(&last, "portrace_transitions_total"),
                opened.load(Ordering::Relaxed)
            );
        }
        thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
    }
    let end_rss = rss_bytes(pid).ok_or("serve exited")?;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.join();
    }
    let health = scrape(metrics, "/healthz").map(|_| "200").unwrap_or("not 200");
    drop(serve);

    latencies.sort();
    let series = last.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count();
    let transitions = sum_of(&last, "portrace_transitions_total");
    let lost = sum_of(&last, "portrace_lost_transitions_total");
    let drift = sum_of(&last, "portrace_socket_drift_total");
    let folded = sum_of(&last, "portrace_label_values_folded_total");
    // "Start": once every series exists (TIME_WAIT ends appear after 60 s).
    let warm = rss.iter().find(|&&(t, _)| t >= 90).or(rss.first()).copied().unwrap_or((0, 0));
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!("portrace serve soak: {} min, {} conn/s over {} services, owner labels on", o.minutes, o.rate, o.services);
    println!("  connections opened       {} ({} failed)", opened.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("  transitions counted      {transitions:.0}");
    println!("  lost transitions         {lost:.0}");
    println!("  socket-count drift       {drift:.0}");
    println!("  labels folded            {folded:.0}");
    println!("  series in the exposition {series} ({} bytes)", last.len());
    println!("  RSS first sample         {:.1} MiB at {} s", mib(rss[0].1), rss[0].0);
    println!("  RSS start (warm)         {:.1} MiB at {} s", mib(warm.1), warm.0);
    println!("  RSS end                  {:.1} MiB ({:+.1}% from warm start)", mib(end_rss), (end_rss as f64 / warm.1 as f64 - 1.0) * 100.0);
    println!(
        "  scrape latency           p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} scrapes ({errors} failed)",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        latencies.len()
    );
    println!("  /healthz at the end      {health}");
    let samples: Vec<String> = rss.iter().map(|&(t, b)| format!("{t}s:{:.1}", mib(b))).collect();
    println!("  RSS samples (MiB)        {}", samples.join(" "));
    if transitions < 1_000_000.0 && o.minutes >= 10 {
        return Err(format!("only {transitions:.0} transitions: the soak needs at least a million"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_only_the_named_family() {
        let text = "# TYPE a counter\na_total{x=\"1\"} 2\na_total{x=\"2\"} 3\na_total_other 7\nb_total 1\n";
        assert_eq!(sum_of(text, "a_total"), 5.0);
        assert_eq!(sum_of(text, "b_total"), 1.0);
    }

    #[test]
    fn percentiles_pick_the_rank() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&d, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&d, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&[], 0.99), Duration::ZERO);
    }
}
