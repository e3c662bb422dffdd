//! What portrace reads about a network namespace when it first sees a socket in it: the
//! range of local ports `connect()` picks from (`net.ipv4.ip_local_port_range`), which is
//! the namespace's own, not the host's. It is read on a short-lived thread that enters
//! the namespace, so the rest of portrace never changes namespace.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;

use crate::inventory;
use crate::procfs::{self, Namespace};

/// Where the range is, as seen from inside a namespace.
const PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// `"32768\t60999\n"` -> (32768, 60999).
pub fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi)), None) if lo <= hi => Some((lo, hi)),
        _ => None,
    }
}

/// The port range of network namespace `netns`. `pid` is a process believed to be in
/// it (the owner of a socket there); when it is gone, or was not in it, the namespaces of
/// all processes and those `ip netns` names are searched. `None` when the namespace can
/// no longer be found or entered.
pub fn port_range(netns: u32, pid: Option<u32>) -> Option<(u16, u16)> {
    let own = procfs::thread_netns().ok()?;
    if netns == own {
        return fs::read_to_string(PORT_RANGE).ok().and_then(|t| parse_port_range(&t));
    }
    let by_pid = pid.and_then(|pid| {
        let path = PathBuf::from(procfs::PROC).join(pid.to_string()).join("ns/net");
        let link = fs::read_link(&path).ok()?;
        let inode = procfs::parse_netns_link(std::os::unix::ffi::OsStrExt::as_bytes(link.as_os_str()))?;
        (inode == netns).then_some(Namespace { inode, path })
    });
    let ns = match by_pid {
        Some(ns) => ns,
        None => procfs::network_namespaces().ok()?.into_iter().find(|ns| ns.inode == netns)?,
    };
    read_inside(ns, Path::new(PORT_RANGE))
}

fn read_inside(ns: Namespace, file: &'static Path) -> Option<(u16, u16)> {
    thread::Builder::new()
        .name("portrace-netns".into())
        .spawn(move || {
            inventory::enter(&ns).ok()?;
            // /proc/sys/net answers for the namespace of the thread that opens it.
            fs::read_to_string(file).ok().and_then(|t| parse_port_range(&t))
        })
        .ok()?
        .join()
        .ok()
        .flatten()
}

/// Where `ip netns add` mounts the namespaces it names (`/var/run/netns` is a link here).
const NAMED_DIR: &str = "/run/netns";

/// `NSFS_MAGIC`: the file system of namespace files.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Whether `name` can be a name `ip netns` gave: one path component, no NUL, not `.` or
/// `..`, at most 255 bytes.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// The inode number of the network namespace `ip netns` named `name`: the file
/// /run/netns/NAME, opened without following a link, must be a namespace.
pub fn named(name: &str) -> Result<u32, String> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let shown = crate::escape::text(name);
    if !valid_name(name) {
        return Err(format!(
            "'{shown}' is neither a network namespace's inode number nor a name ip netns can give (one path component)"
        ));
    }
    let dir = fs::File::open(NAMED_DIR)
        .map_err(|e| format!("no network namespace is named '{shown}': cannot open {NAMED_DIR} ({e})"))?;
    let c = std::ffi::CString::new(name).expect("checked: no NUL");
    // SAFETY: a valid directory descriptor and a NUL-terminated name.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENOENT) => format!("no network namespace is named '{shown}' (see ip netns list)"),
            Some(libc::ELOOP) => format!("{NAMED_DIR}/{shown} is a symbolic link, not a namespace ip netns made"),
            _ => format!("cannot open {NAMED_DIR}/{shown}: {e}"),
        });
    }
    // SAFETY: the descriptor was just returned and is owned here alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: fstatfs and fstat fill the zeroed structs; the descriptor is open.
    let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut sfs) } != 0 || unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(format!("cannot read {NAMED_DIR}/{shown}: {}", std::io::Error::last_os_error()));
    }
    if sfs.f_type as i64 != NSFS_MAGIC {
        return Err(format!("{NAMED_DIR}/{shown} is not a network namespace (is the namespace mounted? see ip netns list)"));
    }
    u32::try_from(st.st_ino).map_err(|_| format!("{NAMED_DIR}/{shown} has an inode number that is no namespace's"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_parse() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range("1024 1024"), Some((1024, 1024)));
        assert_eq!(parse_port_range("60999 32768"), None);
        assert_eq!(parse_port_range("32768"), None);
        assert_eq!(parse_port_range("1 2 3"), None);
        assert_eq!(parse_port_range("a b"), None);
    }

    #[test]
    fn this_namespace_range_is_the_sysctl() {
        let own = procfs::thread_netns().unwrap();
        let expected = parse_port_range(&fs::read_to_string(PORT_RANGE).unwrap());
        assert!(expected.is_some());
        assert_eq!(port_range(own, None), expected);
        assert_eq!(port_range(own, Some(std::process::id())), expected);
    }

    #[test]
    fn an_unknown_namespace_has_no_range() {
        assert_eq!(port_range(1, Some(std::process::id())), None);
    }
}
