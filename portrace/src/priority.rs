//! portrace's own scheduling priority. In a burst, the traced workload, the softirqs that
//! carry its packets and portrace's reader share the CPUs; a reader that gets too little of
//! them lets the ring buffer fill, and the kernel then drops transitions (counted, but
//! lost). So a tracing portrace runs at nice -10 when it may (root may), or keeps a higher
//! priority it was started with. A command it runs (`portrace -- CMD`) gets back the
//! priority portrace was started with.

use std::sync::OnceLock;

/// The nice value a tracing portrace runs at.
pub const NICE: i32 = -10;

static STARTED_WITH: OnceLock<i32> = OnceLock::new();

/// Raises the calling thread's priority to [`NICE`], unless it is higher already, and
/// remembers the priority it had. Threads started afterwards inherit it (Linux keeps nice
/// values per thread), so call this before starting any. Returns the nice value now in
/// force, or `None` when it cannot be read.
pub fn raise() -> Option<i32> {
    let before = current()?;
    let _ = STARTED_WITH.set(before);
    if before > NICE {
        // SAFETY: plain system call on the calling thread. Refused without CAP_SYS_NICE:
        // portrace then runs at the priority it has.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICE) };
    }
    current()
}

/// The nice value portrace was started with, once [`raise`] has run.
pub fn started_with() -> Option<i32> {
    STARTED_WITH.get().copied()
}

/// The calling thread's nice value.
fn current() -> Option<i32> {
    // getpriority returns -1 both for nice -1 and for an error: errno tells them apart.
    // SAFETY: errno is thread-local; getpriority is a plain system call.
    unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, 0);
        (*libc::__errno_location() == 0).then_some(nice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raises_to_nice_minus_10_as_root_and_remembers_the_start() {
        // Run in a thread of its own, whose priority nothing else shares.
        std::thread::spawn(|| {
            let before = current().expect("nice value");
            let now = raise().expect("nice value");
            assert_eq!(started_with(), Some(before));
            if unsafe { libc::geteuid() } == 0 {
                assert_eq!(now, before.min(NICE));
            } else {
                assert!(now == before || now == NICE, "{before} -> {now}");
            }
        })
        .join()
        .unwrap();
    }
}
