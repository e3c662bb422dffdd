//! Checks run before any eBPF is loaded: does this process have the capabilities to load
//! and attach portrace's program, and does this kernel have BPF ring buffers.
//!
//! This module owns those two decisions and their error messages, each of which says what
//! is wrong and what the user can do about it. Kernel support is decided by trying the
//! feature (creating a ring buffer map), never by the version number, because distribution
//! kernels backport features; the version only appears in messages.

use std::ffi::CStr;
use std::fmt;
use std::fs;
use std::io;

use crate::format::errno;

/// Capability numbers (`include/uapi/linux/capability.h`).
pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// Why portrace cannot start on this machine, as this process runs.
///
/// Each message is complete on its own (print it with `{}`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "this process lacks {} (or else CAP_SYS_ADMIN): loading and attaching its eBPF \
         program needs CAP_BPF and CAP_PERFMON together, or CAP_SYS_ADMIN, which is also what \
         mounting tracefs takes when it is not mounted. {}",
        .missing.join(" and "),
        remedy(.binary)
    )]
    MissingCapabilities { missing: Vec<&'static str>, binary: String },
    #[error(
        "cannot read this process's capabilities from /proc/self/status ({cause}); portrace \
         needs /proc: mount it (`mount -t proc proc /proc`) and start portrace again"
    )]
    ProcStatus { cause: String },
    #[error(
        "the kernel refused to create a BPF map (EPERM): portrace needs CAP_BPF and \
         CAP_PERFMON together, or CAP_SYS_ADMIN. {} If it already runs as root, something \
         else forbids bpf(): a container's seccomp profile, kernel lockdown, or, before Linux \
         5.11, a locked-memory limit too low for BPF maps (raise it with `ulimit -l \
         unlimited`)",
        remedy(.binary)
    )]
    BpfNotPermitted { binary: String },
    #[error(
        "this kernel ({release}) has no BPF ring buffers; portrace needs Linux 5.8 or newer{}",
        no_ringbuf_advice(.release)
    )]
    NoRingBuffer { release: KernelRelease },
    #[error(
        "this kernel ({release}) has no bpf() system call (it was built without \
         CONFIG_BPF_SYSCALL); portrace needs eBPF: boot a kernel that has it"
    )]
    NoBpfSyscall { release: KernelRelease },
    #[error(
        "creating a test BPF ring buffer on this kernel ({release}) failed with {}{}",
        errno::described(*.errno),
        probe_advice(*.errno)
    )]
    RingBufProbe { release: KernelRelease, errno: i32 },
    #[error(
        "uname() failed with {}, so portrace cannot tell which kernel this is; please report \
         this to the portrace developers",
        errno::described(*.errno)
    )]
    Uname { errno: i32 },
}

/// The advice on how to run portrace with the capabilities it needs. File capabilities
/// apply to whoever runs the file, so they go only on a copy that one group can run, and
/// that group is as trusted as root (see SECURITY.md).
fn remedy(binary: &str) -> String {
    format!(
        "Run it as root (`sudo portrace`). To let chosen users trace without sudo, give the \
         capabilities to a copy only their group can run: `sudo groupadd portrace && sudo \
         install -o root -g portrace -m 0750 {binary} /usr/local/sbin/portrace && sudo setcap \
         cap_bpf,cap_perfmon,cap_dac_read_search,cap_sys_admin+ep /usr/local/sbin/portrace`, \
         then add them with `sudo usermod -aG portrace USER` (cap_dac_read_search lets it read \
         tracefs, which only root can read by default). Members of that group can see every \
         process's connections: add only users you would trust with root, and never set these \
         capabilities on a binary everyone can run."
    )
}

fn no_ringbuf_advice(release: &KernelRelease) -> String {
    match release.version {
        Some((major, minor, _)) if (major, minor) >= (5, 8) => format!(
            " (this one reports version {major}.{minor}, which should have them, so they were \
             probably left out of its build): boot a kernel with BPF ring buffers"
        ),
        _ => ": boot a newer kernel".to_owned(),
    }
}

fn probe_advice(errno: i32) -> &'static str {
    if errno == libc::ENOMEM {
        "; free some memory, and on kernels before 5.11 raise the locked-memory limit \
         (`ulimit -l unlimited`), then start portrace again"
    } else {
        "; portrace cannot run without BPF ring buffers: please report this to the portrace \
         developers with the output of `uname -r`"
    }
}

/// The effective capability set from the text of `/proc/<pid>/status`.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let hex = line.strip_prefix("CapEff:")?.trim();
        u64::from_str_radix(hex, 16).ok()
    })
}

/// Decides whether the effective capability set `cap_eff` can load and attach portrace's
/// program: CAP_SYS_ADMIN alone, or CAP_BPF and CAP_PERFMON together. `binary` is the path
/// shown in the `setcap` advice.
pub fn check_capabilities(cap_eff: u64, binary: &str) -> Result<(), PreflightError> {
    let has = |cap: u32| cap_eff & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    let missing = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|&(cap, _)| !has(cap))
        .map(|(_, name)| name)
        .collect();
    Err(PreflightError::MissingCapabilities { missing, binary: binary.to_owned() })
}

/// The path of the running binary, for the `setcap` advice.
fn binary_path() -> String {
    std::env::current_exe()
        .map(|path| path.display().to_string())
        .unwrap_or_else(|_| "$(command -v portrace)".to_owned())
}

/// Checks that this process may load and attach portrace's eBPF program, from the
/// `CapEff` line of `/proc/self/status`.
pub fn check_privileges() -> Result<(), PreflightError> {
    let status = fs::read_to_string("/proc/self/status")
        .map_err(|e| PreflightError::ProcStatus { cause: e.to_string() })?;
    let cap_eff = parse_cap_eff(&status)
        .ok_or_else(|| PreflightError::ProcStatus { cause: "it has no CapEff line".to_owned() })?;
    check_capabilities(cap_eff, &binary_path())
}

/// The running kernel's release string and, when it starts with one, its version number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelRelease {
    /// As `uname -r` prints it, e.g. `5.14.0-427.13.1.el9_4.x86_64`.
    pub release: String,
    /// The leading `major.minor.patch`; missing parts are 0. `None` when the release does
    /// not start with a number. For messages only: features are probed, not inferred.
    pub version: Option<(u32, u32, u32)>,
}

impl KernelRelease {
    /// Reads the version number at the start of a release string, leniently: everything
    /// after the first character that is neither a digit nor a dot is ignored.
    pub fn parse(release: &str) -> KernelRelease {
        let numeric_end =
            release.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(release.len());
        let mut numbers = release[..numeric_end].split('.').map(|part| part.parse::<u32>().ok());
        let version = match numbers.next().flatten() {
            Some(major) => {
                let minor = numbers.next().flatten();
                let patch = minor.and_then(|_| numbers.next().flatten());
                Some((major, minor.unwrap_or(0), patch.unwrap_or(0)))
            }
            None => None,
        };
        KernelRelease { release: release.to_owned(), version }
    }

    /// The running kernel's release, from `uname(2)`.
    pub fn current() -> Result<KernelRelease, PreflightError> {
        // SAFETY: utsname is plain arrays of c_char, for which all zeroes is valid.
        let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: uts is a valid, writable utsname.
        if unsafe { libc::uname(&mut uts) } != 0 {
            let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
            return Err(PreflightError::Uname { errno });
        }
        // SAFETY: the kernel NUL-terminates each field, and the zeroed buffer guarantees a
        // terminator even if it did not.
        let release = unsafe { CStr::from_ptr(uts.release.as_ptr()) };
        Ok(KernelRelease::parse(&release.to_string_lossy()))
    }
}

impl fmt::Display for KernelRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.release)
    }
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_TYPE_RINGBUF: u32 = 27;

/// The leading members of the kernel's `union bpf_attr` for `BPF_MAP_CREATE`; the kernel
/// treats the members after `size` bytes as zero.
#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

/// Creates and closes a BPF ring buffer map through the raw `bpf(2)` system call, returning
/// the errno when the kernel refuses.
///
/// The ring buffer is one page (4096 bytes on most machines): its size must be a power of
/// two multiple of the page size, so a fixed 4096 would fail on 16K- or 64K-page kernels.
pub fn probe_ringbuf() -> Result<(), i32> {
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let max_entries = u32::try_from(page).ok().filter(|p| p.is_power_of_two()).unwrap_or(4096);
    let attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_RINGBUF,
        key_size: 0,
        value_size: 0,
        max_entries,
        map_flags: 0,
    };
    // SAFETY: attr is a valid, initialised attribute block of the size passed, and it
    // lives until the call returns; the kernel only reads it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            &attr as *const MapCreateAttr,
            std::mem::size_of::<MapCreateAttr>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    // SAFETY: fd is a descriptor the kernel just returned to us and nothing else owns.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

/// The error for a failed ring buffer probe: EINVAL means the kernel does not know the map
/// type, EPERM means this process may not use bpf().
pub fn ringbuf_error(release: KernelRelease, errno: i32, binary: &str) -> PreflightError {
    match errno {
        libc::EINVAL => PreflightError::NoRingBuffer { release },
        libc::EPERM => PreflightError::BpfNotPermitted { binary: binary.to_owned() },
        libc::ENOSYS => PreflightError::NoBpfSyscall { release },
        errno => PreflightError::RingBufProbe { release, errno },
    }
}

/// Reads the kernel release and checks, by creating one, that the kernel has BPF ring
/// buffers.
pub fn check_kernel() -> Result<KernelRelease, PreflightError> {
    let release = KernelRelease::current()?;
    match probe_ringbuf() {
        Ok(()) => Ok(release),
        Err(errno) => Err(ringbuf_error(release, errno, &binary_path())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIN: &str = "/usr/local/bin/portrace";
    const ROOT_MASK: u64 = 0x0000_01ff_ffff_ffff;

    fn bit(cap: u32) -> u64 {
        1 << cap
    }

    #[test]
    fn reads_cap_eff_from_status() {
        let status = "Name:\tportrace\nCapInh:\t0000000000000000\nCapPrm:\t000001fffeffffff\n\
                      CapEff:\t000001fffeffffff\nCapBnd:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x0000_01ff_feff_ffff));
        assert_eq!(parse_cap_eff("Name:\tx\nCapPrm:\t0\n"), None);
        assert_eq!(parse_cap_eff("CapEff:\tnot-hex\n"), None);
    }

    #[test]
    fn enough_capabilities() {
        assert_eq!(check_capabilities(ROOT_MASK, BIN), Ok(()));
        // Root without CAP_SYS_RESOURCE, as on this machine.
        assert_eq!(check_capabilities(ROOT_MASK & !bit(24), BIN), Ok(()));
        assert_eq!(check_capabilities(bit(CAP_BPF) | bit(CAP_PERFMON), BIN), Ok(()));
        assert_eq!(check_capabilities(bit(CAP_SYS_ADMIN), BIN), Ok(()));
    }

    #[test]
    fn missing_capabilities() {
        let missing = |mask| match check_capabilities(mask, BIN) {
            Err(PreflightError::MissingCapabilities { missing, binary }) => {
                assert_eq!(binary, BIN);
                missing
            }
            other => panic!("expected MissingCapabilities for {mask:#x}, got {other:?}"),
        };
        assert_eq!(missing(0), vec!["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(missing(bit(CAP_BPF)), vec!["CAP_PERFMON"]);
        assert_eq!(missing(bit(CAP_PERFMON)), vec!["CAP_BPF"]);
        // Everything but the three that matter is still not enough.
        let others = ROOT_MASK & !bit(CAP_SYS_ADMIN) & !bit(CAP_BPF) & !bit(CAP_PERFMON);
        assert_eq!(missing(others), vec!["CAP_BPF", "CAP_PERFMON"]);
    }

    #[test]
    fn missing_capabilities_message() {
        let err = check_capabilities(bit(CAP_BPF), BIN).unwrap_err();
        assert_eq!(
            err.to_string(),
            "this process lacks CAP_PERFMON (or else CAP_SYS_ADMIN): loading and attaching \
             its eBPF program needs CAP_BPF and CAP_PERFMON together, or CAP_SYS_ADMIN, which \
             is also what mounting tracefs takes when it is not mounted. Run it as root \
             (`sudo portrace`). To let chosen users trace without sudo, give the capabilities \
             to a copy only their group can run: `sudo groupadd portrace && sudo install -o \
             root -g portrace -m 0750 /usr/local/bin/portrace /usr/local/sbin/portrace && sudo \
             setcap cap_bpf,cap_perfmon,cap_dac_read_search,cap_sys_admin+ep \
             /usr/local/sbin/portrace`, then add them with `sudo usermod -aG portrace USER` \
             (cap_dac_read_search lets it read tracefs, which only root can read by default). \
             Members of that group can see every process's connections: add only users you \
             would trust with root, and never set these capabilities on a binary everyone can \
             run."
        );
        // Never the advice to give the capabilities to a binary anyone can run.
        assert!(!err.to_string().contains(&format!("+ep {BIN}")), "{err}");
        let err = check_capabilities(0, BIN).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "this process lacks CAP_BPF and CAP_PERFMON (or else CAP_SYS_ADMIN): "
            ),
            "{err}"
        );
    }

    #[test]
    fn parses_release_strings() {
        let version = |release: &str| KernelRelease::parse(release).version;
        assert_eq!(version("6.18.44-fc-v769"), Some((6, 18, 44)));
        assert_eq!(version("5.14.0-427.13.1.el9_4.x86_64"), Some((5, 14, 0)));
        assert_eq!(version("4.19.0"), Some((4, 19, 0)));
        assert_eq!(version("6.1"), Some((6, 1, 0)));
        assert_eq!(version("5.4.0-42-generic"), Some((5, 4, 0)));
        assert_eq!(version("6.10.0-rc3+"), Some((6, 10, 0)));
        assert_eq!(version("6"), Some((6, 0, 0)));
        assert_eq!(version("6..3"), Some((6, 0, 0)));
        assert_eq!(version(""), None);
        assert_eq!(version("linux-5.10"), None);
        assert_eq!(version("99999999999.1"), None);
        let release = KernelRelease::parse("5.14.0-427.13.1.el9_4.x86_64");
        assert_eq!(release.release, "5.14.0-427.13.1.el9_4.x86_64");
        assert_eq!(release.to_string(), "5.14.0-427.13.1.el9_4.x86_64");
    }

    #[test]
    fn ringbuf_errors_by_errno() {
        let old = KernelRelease::parse("5.4.0-42-generic");
        let err = ringbuf_error(old.clone(), libc::EINVAL, BIN);
        assert_eq!(err, PreflightError::NoRingBuffer { release: old.clone() });
        assert_eq!(
            err.to_string(),
            "this kernel (5.4.0-42-generic) has no BPF ring buffers; portrace needs Linux 5.8 \
             or newer: boot a newer kernel"
        );

        let odd = KernelRelease::parse("5.10.0-custom");
        assert_eq!(
            ringbuf_error(odd, libc::EINVAL, BIN).to_string(),
            "this kernel (5.10.0-custom) has no BPF ring buffers; portrace needs Linux 5.8 or \
             newer (this one reports version 5.10, which should have them, so they were \
             probably left out of its build): boot a kernel with BPF ring buffers"
        );

        let unknown = KernelRelease::parse("mystery");
        assert_eq!(
            ringbuf_error(unknown, libc::EINVAL, BIN).to_string(),
            "this kernel (mystery) has no BPF ring buffers; portrace needs Linux 5.8 or newer: \
             boot a newer kernel"
        );

        let err = ringbuf_error(old.clone(), libc::EPERM, BIN);
        assert_eq!(err, PreflightError::BpfNotPermitted { binary: BIN.into() });
        let text = err.to_string();
        assert!(text.starts_with("the kernel refused to create a BPF map (EPERM): "), "{text}");
        assert!(text.contains("`sudo portrace`"), "{text}");
        assert!(text.contains("-m 0750 /usr/local/bin/portrace /usr/local/sbin/portrace"), "{text}");
        assert!(!text.contains("+ep /usr/local/bin/portrace"), "{text}");

        assert_eq!(
            ringbuf_error(old.clone(), libc::ENOSYS, BIN),
            PreflightError::NoBpfSyscall { release: old.clone() }
        );
        assert_eq!(
            ringbuf_error(old.clone(), libc::ENOMEM, BIN).to_string(),
            "creating a test BPF ring buffer on this kernel (5.4.0-42-generic) failed with \
             ENOMEM (out of memory); free some memory, and on kernels before 5.11 raise the \
             locked-memory limit (`ulimit -l unlimited`), then start portrace again"
        );
        assert_eq!(
            ringbuf_error(old, libc::EBADF, BIN).to_string(),
            "creating a test BPF ring buffer on this kernel (5.4.0-42-generic) failed with \
             errno 9 (Bad file descriptor (os error 9)); portrace cannot run without BPF ring \
             buffers: please report this to the portrace developers with the output of \
             `uname -r`"
        );
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn current_release_matches_proc() {
        let release = KernelRelease::current().expect("uname works");
        let proc = fs::read_to_string("/proc/sys/kernel/osrelease").expect("/proc is mounted");
        assert_eq!(release.release, proc.trim());
        assert!(release.version.is_some(), "Linux releases start with a number: {release}");
    }

    /// Needs root, which development machines and CI have: there the running kernel (6.18
    /// or newer) must have ring buffers and root must pass the privilege check.
    #[test]
    fn root_passes_both_checks() {
        if !is_root() {
            eprintln!("skipped: not running as root");
            return;
        }
        assert_eq!(check_privileges(), Ok(()));
        assert_eq!(probe_ringbuf(), Ok(()));
        let release = check_kernel().expect("this kernel has BPF ring buffers");
        assert!(release.version >= Some((5, 8, 0)), "{release:?}");
    }
}
