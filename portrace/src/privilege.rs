//! What portrace does with the capabilities it runs with. Tracing needs them (CAP_BPF and
//! CAP_PERFMON, or CAP_SYS_ADMIN, and for tracefs CAP_DAC_READ_SEARCH); reading a file
//! the user names never does, and must not get them: a binary given file capabilities
//! runs with them for whoever starts it, so a path read with them would let any user read
//! files only root may read. This module owns the two rules that follow:
//!
//! - the offline subcommands (`replay`, `report`, `diagram --from`, `top --from`) drop
//!   every capability ([`drop_all`]) before they open anything, and set no-new-privs, so
//!   that the rest of the run has the rights of the user who started it and no more;
//! - a file a live run reads for the user (`--rules`) is read with the process's effective
//!   capabilities lowered for the duration of the read ([`with_user_rights`]): the kernel
//!   then checks the file against the user's own uid and groups, and the file's content,
//!   which error messages may quote, is one the user could have read anyway.
//!
//! Capabilities are per thread: both run on the main thread before any other starts.

use std::io;

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// This thread's capability sets, as bit masks (bit N is capability N).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapSets {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
}

/// The calling thread's capability sets, from `capget(2)`.
pub fn current() -> io::Result<CapSets> {
    let mut header = CapHeader { version: CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and data are valid for the kernel to read and write, data holds the
    // two elements version 3 uses, and both outlive the call.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header as *mut CapHeader, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok(CapSets {
        effective: join(data[0].effective, data[1].effective),
        permitted: join(data[0].permitted, data[1].permitted),
        inheritable: join(data[0].inheritable, data[1].inheritable),
    })
}

/// Sets the calling thread's capability sets with `capset(2)`.
fn set(sets: CapSets) -> io::Result<()> {
    let mut header = CapHeader { version: CAPABILITY_VERSION_3, pid: 0 };
    let split = |v: u64| (v as u32, (v >> 32) as u32);
    let (e, p, i) = (split(sets.effective), split(sets.permitted), split(sets.inheritable));
    let data = [
        CapData { effective: e.0, permitted: p.0, inheritable: i.0 },
        CapData { effective: e.1, permitted: p.1, inheritable: i.1 },
    ];
    // SAFETY: header and data are valid and outlive the call; the kernel only reads data.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Drops every capability of the calling thread for good: the ambient set is cleared, the
/// effective, permitted and inheritable sets emptied, and no-new-privs set so that no
/// program it could run gains any back. Checked afterwards with `capget`.
pub fn drop_all() -> io::Result<()> {
    // SAFETY: prctl with these integer arguments has no memory-safety preconditions.
    let rc = unsafe {
        libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0)
    };
    // EINVAL: a kernel before 4.3, which has no ambient set to clear.
    if rc != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
        return Err(io::Error::last_os_error());
    }
    set(CapSets::default())?;
    // SAFETY: as above.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let now = current()?;
    if now != CapSets::default() {
        return Err(io::Error::other(format!("capabilities remain after dropping them: {now:?}")));
    }
    Ok(())
}

/// Runs `f` with the calling thread's effective capabilities lowered, so that files it
/// opens are checked against the user's own rights; raises them again afterwards (they
/// stay in the permitted set meanwhile). Without effective capabilities, just runs `f`.
pub fn with_user_rights<T>(f: impl FnOnce() -> T) -> io::Result<T> {
    let before = current()?;
    if before.effective == 0 {
        return Ok(f());
    }
    set(CapSets { effective: 0, ..before })?;
    let result = f();
    set(before)?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap_eff_from_proc() -> u64 {
        let status = std::fs::read_to_string("/proc/thread-self/status").expect("/proc is mounted");
        crate::preflight::parse_cap_eff(&status).expect("a CapEff line")
    }

    #[test]
    fn reads_the_same_sets_as_proc() {
        assert_eq!(current().expect("capget").effective, cap_eff_from_proc());
    }

    /// Runs in a thread of its own: capabilities are per thread, and dropping them must
    /// not change what the other tests run with.
    #[test]
    fn lowered_rights_are_restored_and_dropped_ones_are_gone() {
        std::thread::spawn(|| {
            let before = current().expect("capget");
            let inside = with_user_rights(|| (cap_eff_from_proc(), current().unwrap())).expect("lowered");
            assert_eq!(inside.0, 0, "no effective capability while reading for the user");
            assert_eq!(inside.1.permitted, before.permitted, "kept in the permitted set");
            assert_eq!(current().unwrap(), before, "restored afterwards");
            drop_all().expect("dropped");
            assert_eq!(cap_eff_from_proc(), 0);
            assert_eq!(current().unwrap(), CapSets::default());
            // For good: raising one again is refused.
            let raise = set(CapSets { effective: 1 << crate::preflight::CAP_DAC_READ_SEARCH, ..CapSets::default() });
            if before.permitted != 0 {
                assert!(raise.is_err(), "a dropped capability came back");
            }
            let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
            assert!(status.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["NoNewPrivs:", "1"]), "{status}");
        })
        .join()
        .expect("the test thread");
    }

    /// As root (development machines and CI), reading a root-only file shows the point:
    /// with the effective set lowered, a uid-0 process still owns it, but another user's
    /// private file is out of reach, exactly as for that uid without capabilities.
    #[test]
    fn lowered_rights_cannot_bypass_file_permissions() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: not running as root");
            return;
        }
        let dir = std::env::temp_dir().join(format!("portrace-privilege-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let private = dir.join("private");
        std::fs::write(&private, b"secret\n").unwrap();
        std::os::unix::fs::chown(&private, Some(65534), Some(65534)).unwrap();
        std::fs::set_permissions(&private, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let path = private.clone();
        let (with_caps, without) = std::thread::spawn(move || {
            let with_caps = std::fs::read(&path).is_ok();
            let without = with_user_rights(|| std::fs::read(&path).map_err(|e| e.kind())).unwrap();
            (with_caps, without)
        })
        .join()
        .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(with_caps, "root with CAP_DAC_OVERRIDE reads it");
        assert_eq!(without.map(drop), Err(io::ErrorKind::PermissionDenied));
    }
}
