//! A count of the `sock:inet_sock_set_state` hits that does not depend on BPF, to catch the
//! hits the kernel hands to no BPF program and counts nowhere.
//!
//! The kernel can run the tracepoint's other probes for a hit and neither of portrace's
//! programs, without counting a skipped run: measured on Linux 6.18 as whole softirq
//! batches (hundreds of transitions) that ftrace recorded while both programs' run counts
//! and `recursion_misses` stood still. To see such gaps, portrace enables the same event in
//! a private ftrace instance of its own (`<tracefs>/instances/portrace-<pid>-<start>`, a
//! small buffer nobody reads, which once full drops and counts each new event) and
//! compares the number of events the instance took with the number of hits the primary
//! program was handed: the runs it counted itself plus the runs the kernel says it skipped.
//!
//! An instance outlives a portrace killed before it could remove it (SIGKILL, a crash), so
//! each start removes the instances nobody owns. Ownership is not judged by the pid, which
//! is reused and means another process in another pid namespace: the owner keeps a file
//! of its instance open for as long as it runs, and the kernel refuses to remove an
//! instance with an open file (EBUSY), so removal is simply attempted and a live instance,
//! whoever and wherever its owner, stays. The name also carries the owner's start time
//! (clock ticks after boot, from `/proc/self/stat`), so that in the moment between creating
//! the instance and opening the file, a process of the same namespace with that pid and
//! that start time is taken as its owner too.
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
    /// A file of the instance, open while portrace runs: it marks the instance as owned
    /// (the kernel will not remove it while it is open).
    hold: Option<fs::File>,
}

impl HitCounter {
    /// Starts creating the instance on a thread of its own, not yet enabled: shrinking a
    /// new instance's buffers takes the kernel 5-30 ms, which can pass while the programs
    /// load. [`Creating::created`] waits for it; [`HitCounter::enable`] then enables it.
    pub fn create_in_background(tracefs: &Path) -> Creating {
        let tracefs = tracefs.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("hit-counter".into())
            .spawn(move || HitCounter::create(&tracefs))
            .map_err(|e| format!("cannot start a thread to create the ftrace instance: {e}"));
        Creating(Some(thread))
    }

    /// Creates the instance under `tracefs` (the mount point), its event not enabled.
    /// Instances that earlier portrace processes left behind (killed before removing
    /// theirs) are removed first.
    fn create(tracefs: &Path) -> Result<HitCounter, String> {
        let instances = tracefs.join("instances");
        remove_stale(&instances);
        let pid = std::process::id();
        let started = start_time(pid).ok_or("cannot read this process's start time from /proc/self/stat")?;
        let dir = instances.join(instance_name(pid, started));
        fs::create_dir(&dir).map_err(|e| format!("cannot create the ftrace instance {}: {e}", dir.display()))?;
        let hold = match fs::File::open(dir.join("buffer_size_kb")) {
            Ok(file) => file,
            Err(e) => {
                let _ = fs::remove_dir(&dir);
                return Err(format!("cannot open {}: {e}", dir.join("buffer_size_kb").display()));
            }
        };
        let counter = HitCounter { dir, hold: Some(hold) };
        counter.write("buffer_size_kb", BUFFER_KB)?;
        // Not overwriting: an overwrite takes a page of events out of the `entries` count
        // and adds them to `overrun`, and a read that falls between the two counts them
        // twice. Without it every count in the stats file only grows, and once the buffer
        // is full an event costs the kernel only the failed reservation.
        counter.write("options/overwrite", "0")?;
        Ok(counter)
    }

    /// Enables the event: from now on the instance counts the tracepoint's hits.
    pub fn enable(&self) -> Result<(), String> {
        self.write(&format!("{EVENT}/enable"), "1")
    }

    fn write(&self, file: &str, value: &str) -> Result<(), String> {
        let path = self.dir.join(file);
        fs::write(&path, value).map_err(|e| format!("cannot write {value} to {}: {e}", path.display()))
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
        // The held file first: the kernel refuses to remove an instance with a file open.
        drop(self.hold.take());
        let _ = fs::remove_dir(&self.dir);
    }
}

/// An instance being created on a thread of its own; dropped unfinished, it waits for the
/// thread, and the instance is removed.
pub struct Creating(Option<Result<std::thread::JoinHandle<Result<HitCounter, String>>, String>>);

impl Creating {
    /// The instance, once created (not enabled).
    pub fn created(mut self) -> Result<HitCounter, String> {
        match self.0.take() {
            Some(Ok(thread)) => thread.join().unwrap_or_else(|_| Err("the thread creating the ftrace instance panicked".into())),
            Some(Err(why)) => Err(why),
            None => Err("the ftrace instance was already taken".into()),
        }
    }
}

impl Drop for Creating {
    fn drop(&mut self) {
        if let Some(Ok(thread)) = self.0.take() {
            let _ = thread.join();
        }
    }
}

/// `portrace-<pid>-<start time>`.
fn instance_name(pid: u32, start_ticks: u64) -> String {
    format!("{PREFIX}{pid}-{start_ticks}")
}

/// The pid and start time an instance's name carries, `None` for a name of another form
/// (an instance portrace did not make, or one of an older portrace: `portrace-<pid>`).
fn parse_instance_name(name: &str) -> Option<(u32, u64)> {
    let (pid, start) = name.strip_prefix(PREFIX)?.split_once('-')?;
    Some((pid.parse().ok()?, start.parse().ok()?))
}

/// A process's start time, in clock ticks after boot: field 22 of `/proc/<pid>/stat`, read
/// after the command name (which may hold spaces and parentheses).
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_start_time(&stat)
}

fn stat_start_time(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // Fields from the state (field 3) on; the start time is field 22.
    after_comm.split_whitespace().nth(22 - 3)?.parse().ok()
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

/// Removes the instances no portrace owns any more; returns the names removed.
///
/// A live owner holds a file of its instance open, so the kernel refuses the removal
/// (EBUSY) whatever pid namespace the owner is in; an owner of this namespace that has not
/// opened it yet is recognised by its pid and start time. The instances of an older
/// portrace (`portrace-<pid>`, which held nothing open) are removed only when that pid is
/// gone.
fn remove_stale(instances: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(instances) else { return removed };
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        let Some(rest) = name.strip_prefix(PREFIX) else { continue };
        let orphan = match parse_instance_name(&name) {
            Some((pid, started)) => start_time(pid) != Some(started),
            None => match rest.parse::<u32>() {
                Ok(pid) => !Path::new(&format!("/proc/{pid}")).exists(),
                Err(_) => false,
            },
        };
        // Removing an instance disables its events; one still in use is refused (EBUSY).
        if orphan && fs::remove_dir(entry.path()).is_ok() {
            removed.push(name);
        }
    }
    removed
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
    fn names_carry_the_pid_and_start_time() {
        assert_eq!(instance_name(4242, 98765), "portrace-4242-98765");
        assert_eq!(parse_instance_name("portrace-4242-98765"), Some((4242, 98765)));
        assert_eq!(parse_instance_name("portrace-4242"), None);
        assert_eq!(parse_instance_name("portrace-x-1"), None);
        assert_eq!(parse_instance_name("other-1-2"), None);
        // A command name with spaces and parentheses does not shift the fields.
        let stat = "77 (a b) c) S 1 77 77 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 123456 1000 10";
        assert_eq!(stat_start_time(stat), Some(123456));
        let own = start_time(std::process::id()).expect("our own start time");
        assert!(own > 0);
    }

    /// As root with tracefs mounted: instances left by a killed portrace, by one whose pid
    /// was reused, and by a live one in another pid namespace (seen here as a pid that
    /// does not match, with its file held open).
    #[test]
    fn stale_instances_are_told_from_live_ones() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || !Path::new("/sys/kernel/tracing/instances").is_dir() {
            eprintln!("skipped: needs root and tracefs");
            return;
        }
        let instances = Path::new("/sys/kernel/tracing/instances");
        let me = std::process::id();
        let my_start = start_time(me).unwrap();
        // A dead owner: pid 1's start time is never this one.
        let killed = instance_name(1, my_start + 1_000_000);
        // A reused pid: ours, with another start time, no file held.
        let reused = instance_name(me, my_start + 1);
        // Alive elsewhere: a name that matches nothing here, but its file is held open.
        let elsewhere = instance_name(1, my_start + 2_000_000);
        // Alive here, not yet holding its file: a live pid (init) and its start time.
        let starting = instance_name(1, start_time(1).expect("pid 1's start time"));
        for name in [&killed, &reused, &elsewhere, &starting] {
            fs::create_dir(instances.join(name)).expect("instance");
        }
        fs::write(instances.join(&killed).join(EVENT).join("enable"), "1").unwrap();
        let held = fs::File::open(instances.join(&elsewhere).join("buffer_size_kb")).unwrap();
        let mut removed = remove_stale(instances);
        removed.sort();
        let still = |name: &str| instances.join(name).exists();
        let (kept_elsewhere, kept_starting) = (still(&elsewhere), still(&starting));
        drop(held);
        for name in [&elsewhere, &starting] {
            let _ = fs::remove_dir(instances.join(name));
        }
        let mut expected = vec![killed.clone(), reused.clone()];
        expected.sort();
        assert_eq!(removed, expected);
        assert!(!still(&killed) && !still(&reused));
        assert!(kept_elsewhere, "a live instance of another namespace is kept");
        assert!(kept_starting, "an instance of this process is kept");
    }

    /// A process has one instance name: the tests that make a real one take turns.
    static REAL_INSTANCE: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn counts_hits_in_a_real_instance() {
        // As root with tracefs mounted (portrace's own requirements), a real instance.
        if unsafe { libc::geteuid() } != 0 || !Path::new("/sys/kernel/tracing/instances").is_dir() {
            return;
        }
        let _turn = REAL_INSTANCE.lock().unwrap_or_else(|e| e.into_inner());
        let counter = HitCounter::create(Path::new("/sys/kernel/tracing")).expect("instance");
        counter.enable().expect("enable");
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

    #[test]
    fn an_instance_made_in_the_background_counts_only_once_enabled() {
        if unsafe { libc::geteuid() } != 0 || !Path::new("/sys/kernel/tracing/instances").is_dir() {
            return;
        }
        let _turn = REAL_INSTANCE.lock().unwrap_or_else(|e| e.into_inner());
        let tracefs = Path::new("/sys/kernel/tracing");
        let counter = HitCounter::create_in_background(tracefs).created().expect("instance");
        let dir = counter.dir.clone();
        assert_eq!(fs::read_to_string(dir.join(EVENT).join("enable")).unwrap().trim(), "0");
        // Shrunk to about BUFFER_KB (the kernel rounds to whole pages per CPU).
        let kb: u64 = fs::read_to_string(dir.join("buffer_size_kb")).unwrap().trim().parse().unwrap();
        assert!(kb <= 64, "{kb} KiB");
        let connection = || {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            drop(listener.accept().unwrap());
            drop(client);
        };
        connection();
        assert_eq!(counter.total().expect("stats"), 0, "not enabled yet");
        counter.enable().expect("enable");
        connection();
        assert!(counter.total().expect("stats") >= 4);
        drop(counter);
        assert!(!dir.exists(), "the instance is removed");

        // Dropped before it is taken, the instance is removed all the same.
        let pid = std::process::id();
        let name = instance_name(pid, start_time(pid).unwrap());
        drop(HitCounter::create_in_background(tracefs));
        assert!(!tracefs.join("instances").join(name).exists());
    }
}
