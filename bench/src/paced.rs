//! The paced client behind `--rate N`: `concurrency` threads share a schedule in which
//! connection i starts at `i / N` seconds; each thread takes every `concurrency`-th
//! connection, sleeps until its slot, connects, and ends the connection the way tcpload
//! does (`first`: close at once; `second`: read to the server's EOF, then close). A thread
//! that falls behind does not sleep, so the rate is a ceiling. Like tcpload it prints
//! `done N` on standard output and `client: N connections in S s (R/s)` on standard error,
//! and fails on any unexpected error or after its timeout.

use std::io::Read;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::PacedOptions;

pub fn main(o: PacedOptions) -> Result<(), String> {
    if o.concurrency == 0 || o.rate <= 0.0 || !o.rate.is_finite() {
        return Err("--concurrency and --rate must be positive".into());
    }
    let second = match o.close.as_str() {
        "first" => false,
        "second" => true,
        other => return Err(format!("--close takes first or second, not {other:?}")),
    };
    let start = Instant::now();
    let deadline = start + Duration::from_secs(o.timeout);
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..o.concurrency.min(o.count.max(1)))
        .map(|t| {
            let done = done.clone();
            let o = o.clone();
            std::thread::spawn(move || -> Result<(), String> {
                let mut i = t;
                while i < o.count {
                    let slot = start + Duration::from_secs_f64(i as f64 / o.rate);
                    let now = Instant::now();
                    if now > deadline {
                        return Err("timed out".into());
                    }
                    if slot > now {
                        std::thread::sleep(slot - now);
                    }
                    let mut stream = TcpStream::connect(o.connect)
                        .map_err(|e| format!("connect to {}: {e}", o.connect))?;
                    if second {
                        let mut buf = [0u8; 512];
                        // Bounded by the server's close (and tcpload's own timeout there).
                        loop {
                            match stream.read(&mut buf) {
                                Ok(0) => break,
                                Ok(_) => {}
                                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                                Err(e) => return Err(format!("read: {e}")),
                            }
                        }
                    }
                    drop(stream);
                    done.fetch_add(1, Ordering::Relaxed);
                    i += o.concurrency;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| "a client thread panicked".to_string())??;
    }
    let secs = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    eprintln!(
        "client: {n} connections in {secs:.3} s ({:.0}/s)",
        n as f64 / secs.max(1e-9)
    );
    println!("done {n}");
    Ok(())
}
