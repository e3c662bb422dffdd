//! A count of the `sock:inet_sock_set_state` hits that does not depend on BPF, to catch the
//! hits the kernel hands to no BPF program and counts nowhere.
//!
//! The kernel can run the tracepoint's other probes for a hit and neither of portrace's
//! programs, without counting a skipped run: measured on Linux 6.18 as whole softirq
//! batches (hundreds of transitions) that ftrace recorded while both programs' run counts
//! and `recursion_misses` stood still. To see such gaps, portrace enables the same event in
//! a private ftrace instance of its own (`<tracefs>/instances/portrace-<pid>`, a small
//! buffer nobody reads, which once full drops and counts each new event) and compares the number of events the instance took
//! with the number of hits the primary program was handed: the runs it counted itself plus
//! the runs the kernel says it skipped.
//!
//! Comparison without false alarms: the instance's probe is registered after the programs'
//! probes, so for any one hit it runs after them, and a hit that began before the
//! registration is not counted by the instance at all. So when the program side is read
//! once before the instance is enabled, and at each check the instance is read before the
//! program side, every hit the instance counted is already in the program-side count unless
//! the kernel dropped it: `instance - (programs - programs at start)` never exceeds the
//! number of hits the programs missed silently. Hits still in flight only make it smaller.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where the event lives in an instance.
const EVENT: &str = "events/sock/inet_sock_set_state";
/// Per-CPU buffer of the instance, in KiB: events are counted, never read.
const BUFFER_KB: &str = "16";
const PREFIX: &str = "portrace-";

/// A private ftrace instance with `sock:inet_sock_set_state` enabled. Dropping it removes
/// the instance.
#[derive(Debug)]
pub struct HitCounter {
    dir: PathBuf,
}

impl HitCounter {
    /// Creates and enables the instance under `tracefs` (the mount point). Instances that
    /// earlier portrace processes left behind (killed before removing theirs) are removed
    /// first.
    pub fn start(tracefs: &Path) -> Result<HitCounter, String> {
        let instances = tracefs.join("instances");
        remove_stale(&instances);
        let dir = instances.join(format!("{PREFIX}{}", std::process::id()));
        fs::create_dir(&dir).map_err(|e| format!("cannot create the ftrace instance {}: {e}", dir.display()))?;
        let counter = HitCounter { dir };
        let write = |file: &str, value: &str| {
            let path = counter.dir.join(file);
            fs::write(&path, value).map_err(|e| format!("cannot write {value} to {}: {e}", path.display()))
        };
        write("buffer_size_kb", BUFFER_KB)?;
        // Not overwriting: an overwrite takes a page of events out of the `entries` count
        // and adds them to `overrun`, and a read that falls between the two counts them
        // twice. Without it every count in the stats file only grows, and once the buffer
        // is full an event costs the kernel only the failed reservation.
        write("options/overwrite", "0")?;
        write(&format!("{EVENT}/enable"), "1")?;
        Ok(counter)
    }

    /// Events the instance has taken since it was enabled, over all CPUs.
    pub fn total(&self) -> io::Result<u64> {
        let mut total = 0u64;
        for entry in fs::read_dir(self.dir.join("per_cpu"))? {
            let entry = entry?;
            if !entry.file_name().to_string_lossy().starts_with("cpu") {
                continue;
            }
            let text = fs::read_to_string(entry.path().join("stats"))?;
            total += events_taken(&text)
                .ok_or_else(|| io::Error::other(format!("unexpected {}", entry.path().join("stats").display())))?;
        }
        Ok(total)
    }
}

impl Drop for HitCounter {
    fn drop(&mut self) {
        let _ = fs::write(self.dir.join(EVENT).join("enable"), "0");
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Events a CPU's ring buffer was offered, from its `per_cpu/cpuN/stats` in a buffer that
/// does not overwrite: those written (`entries`, plus `read events` once read), those
/// dropped because it was full (`dropped events`) or lost to nested writers (`commit
/// overrun`). Each of these only grows, so a sum read while events arrive counts only
/// events that happened before the read ended.
pub fn events_taken(stats: &str) -> Option<u64> {
    let field = |name: &str| -> Option<u64> {
        stats.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim().parse().ok()).flatten()
        })
    };
    Some(
        field("entries")?
            + field("dropped events")?
            + field("commit overrun").unwrap_or(0)
            + field("read events").unwrap_or(0),
    )
}

/// Hits the primary program missed without the kernel counting them, at most: the
/// instance's count beyond the program-side count since the instance was enabled.
pub fn unseen(instance: u64, programs_now: u64, programs_at_start: u64) -> u64 {
    instance.saturating_sub(programs_now.saturating_sub(programs_at_start))
}

/// Removes the instances of portrace processes that no longer exist.
fn remove_stale(instances: &Path) {
    let Ok(entries) = fs::read_dir(instances) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)).and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::write(entry.path().join(EVENT).join("enable"), "0");
            let _ = fs::remove_dir(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATS: &str = "entries: 228\noverrun: 0\ncommit overrun: 1\nbytes: 15476\n\
                         oldest event ts:  9977.267317\nnow ts:  9978.321000\n\
                         dropped events: 100329\nread events: 3\n";

    #[test]
    fn counts_written_dropped_and_read_events() {
        assert_eq!(events_taken(STATS), Some(228 + 100329 + 1 + 3));
        assert_eq!(events_taken("entries: 5\ndropped events: 0\n"), Some(5));
        assert_eq!(events_taken("entries: 5\n"), None);
        assert_eq!(events_taken("entries: x\ndropped events: 0\n"), None);
    }

    #[test]
    fn a_gap_is_what_the_instance_saw_beyond_the_programs() {
        // 1000 hits since the start, the programs were handed 374 of them.
        assert_eq!(unseen(1000, 5374, 5000), 626);
        // Programs ahead of the instance (hits in flight): no gap.
        assert_eq!(unseen(1000, 6010, 5000), 0);
        assert_eq!(unseen(0, 0, 0), 0);
    }

    #[test]
    fn counts_hits_in_a_real_instance() {
        // As root with tracefs mounted (portrace's own requirements), a real instance.
        if unsafe { libc::geteuid() } != 0 || !Path::new("/sys/kernel/tracing/instances").is_dir() {
            return;
        }
        let counter = HitCounter::start(Path::new("/sys/kernel/tracing")).expect("instance");
        let dir = counter.dir.clone();
        assert!(dir.join(EVENT).join("enable").exists());
        assert_eq!(fs::read_to_string(dir.join("options/overwrite")).unwrap().trim(), "0");
        let before = counter.total().expect("stats");
        // A loopback connection, opened and closed: several state changes.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        drop(client);
        drop(server);
        drop(listener);
        let after = counter.total().expect("stats");
        assert!(after >= before + 4, "{before} -> {after}");
        drop(counter);
        assert!(!dir.exists(), "the instance is removed");
    }
}
