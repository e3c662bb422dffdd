//! What /proc says about sockets: which processes hold which socket inodes in their file
//! descriptors (and their command names), and which network namespaces exist. Processes
//! come and go while /proc is read; a process or descriptor that vanishes mid-scan is
//! skipped silently, since a scan of a live system can only ever be a snapshot.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::record::Comm;

/// Where procfs is mounted.
pub const PROC: &str = "/proc";
/// Where `ip netns` keeps its named namespaces (bind mounts of namespace files).
pub const NAMED_NETNS: &str = "/run/netns";

/// The socket inode a descriptor's link names (`socket:[123]` -> 123), or `None` for a
/// descriptor that is not a socket.
pub fn parse_socket_link(target: &[u8]) -> Option<u64> {
    parse_bracketed(target, b"socket:[")
}

/// The namespace inode a `/proc/PID/ns/net` link names (`net:[4026531840]`).
pub fn parse_netns_link(target: &[u8]) -> Option<u32> {
    parse_bracketed(target, b"net:[").and_then(|n| u32::try_from(n).ok())
}

fn parse_bracketed(target: &[u8], prefix: &[u8]) -> Option<u64> {
    let digits = target.strip_prefix(prefix)?.strip_suffix(b"]")?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A network namespace and one file that refers to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    /// The namespace's inode number, as `/proc/PID/ns/net` shows it.
    pub inode: u32,
    /// A file to open to enter it (`/proc/PID/ns/net` of one of its processes, or a bind
    /// mount under /run/netns).
    pub path: PathBuf,
}

/// The network namespaces of all processes, plus those `ip netns` names (which may have no
/// process), each once. The namespace of this process (`/proc/self/ns/net`) comes first;
/// the rest follow in the order found. Fails only when this process's own namespace
/// cannot be read; unreadable entries of other processes are skipped.
pub fn network_namespaces() -> io::Result<Vec<Namespace>> {
    network_namespaces_in(Path::new(PROC), Path::new(NAMED_NETNS))
}

/// [`network_namespaces`] over a procfs at `proc` and named namespaces in `named`.
pub fn network_namespaces_in(proc: &Path, named: &Path) -> io::Result<Vec<Namespace>> {
    let own_path = proc.join("self/ns/net");
    let link = fs::read_link(&own_path)?;
    let own = parse_netns_link(link.as_os_str().as_bytes()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} links to {}, not net:[INODE]", own_path.display(), link.display()),
        )
    })?;
    let mut found = vec![Namespace { inode: own, path: own_path }];
    let mut seen = std::collections::HashSet::from([own]);
    for pid in pids(proc)? {
        let path = proc.join(pid.to_string()).join("ns/net");
        let Ok(link) = fs::read_link(&path) else { continue };
        if let Some(inode) = parse_netns_link(link.as_os_str().as_bytes()) {
            if seen.insert(inode) {
                found.push(Namespace { inode, path });
            }
        }
    }
    // Named namespaces are namespace files bind-mounted on plain files: their inode is the
    // namespace's, and their device the one all namespace files share (nsfs), which tells
    // them from a file whose bind mount has not happened yet or failed. A missing
    // directory just means no namespace was ever named.
    let nsfs = fs::metadata(&found[0].path).ok().map(|m| m.dev());
    if let (Some(nsfs), Ok(entries)) = (nsfs, fs::read_dir(named)) {
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let Ok(meta) = fs::metadata(&path) else { continue };
            let Ok(inode) = u32::try_from(meta.ino()) else { continue };
            if meta.dev() == nsfs && seen.insert(inode) {
                found.push(Namespace { inode, path });
            }
        }
    }
    Ok(found)
}

/// The inode of the network namespace the calling thread is in.
pub fn thread_netns() -> io::Result<u32> {
    let path = Path::new(PROC).join("thread-self/ns/net");
    let link = fs::read_link(&path)?;
    parse_netns_link(link.as_os_str().as_bytes()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} links to {}, not net:[INODE]", path.display(), link.display()),
        )
    })
}

/// Who holds which socket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owners {
    /// Socket inode -> (pid, command) of its owner. When several processes hold the same
    /// socket (a descriptor inherited across fork, or passed over a Unix socket), the
    /// owner is the one with the lowest pid, so repeated scans agree.
    pub sockets: HashMap<u64, (u32, Comm)>,
    /// Processes whose descriptors could not be read for a reason other than exiting
    /// (without root, other users' processes): their sockets have no owner.
    pub unreadable: usize,
}

impl Owners {
    pub fn get(&self, inode: u64) -> Option<(u32, Comm)> {
        self.sockets.get(&inode).copied()
    }
}

/// Scans `/proc/PID/fd/*` of every process for socket descriptors.
pub fn socket_owners() -> io::Result<Owners> {
    socket_owners_in(Path::new(PROC))
}

/// [`socket_owners`] over a procfs at `proc`. Fails only when `proc` cannot be listed.
///
/// Reading a descriptor's link costs the kernel a few microseconds and a busy host has
/// thousands, so the processes are split among as many threads as there are CPUs.
pub fn socket_owners_in(proc: &Path) -> io::Result<Owners> {
    let pids = pids(proc)?;
    let parallel = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = pids.len().div_ceil(parallel).max(1);
    let parts: Vec<Owners> = std::thread::scope(|scope| {
        let workers: Vec<_> =
            pids.chunks(chunk).map(|pids| scope.spawn(move || scan(proc, pids))).collect();
        // A scan does not panic; should one, its processes just show no owner.
        workers.into_iter().filter_map(|w| w.join().ok()).collect()
    });
    let mut owners = Owners::default();
    for part in parts {
        owners.unreadable += part.unreadable;
        for (inode, (pid, comm)) in part.sockets {
            match owners.sockets.entry(inode) {
                Entry::Occupied(mut e) if e.get().0 > pid => {
                    e.insert((pid, comm));
                }
                Entry::Occupied(_) => {}
                Entry::Vacant(e) => {
                    e.insert((pid, comm));
                }
            }
        }
    }
    Ok(owners)
}

/// The socket descriptors of `pids`, in ascending order.
fn scan(proc: &Path, pids: &[u32]) -> Owners {
    let mut owners = Owners::default();
    for &pid in pids {
        let dir = proc.join(pid.to_string());
        let fds = match fs::read_dir(dir.join("fd")) {
            Ok(fds) => fds,
            Err(e) if vanished(&e) => continue,
            Err(_) => {
                owners.unreadable += 1;
                continue;
            }
        };
        // The command is read once, at the first socket found, and only for processes
        // that may become an owner.
        let mut comm: Option<Comm> = None;
        for fd in fds {
            let Ok(fd) = fd else { continue };
            let Ok(target) = fs::read_link(fd.path()) else { continue };
            let Some(inode) = parse_socket_link(target.as_os_str().as_bytes()) else { continue };
            // Ascending pids: a socket already seen has its lowest holder.
            if owners.sockets.contains_key(&inode) {
                continue;
            }
            let name = match comm {
                Some(c) => c,
                None => match read_comm(&dir) {
                    Some(c) => *comm.insert(c),
                    // The process exited between listing its descriptors and now.
                    None => break,
                },
            };
            owners.sockets.insert(inode, (pid, name));
        }
    }
    owners
}

/// `/proc/PID/comm` without its newline; `None` when the process is gone.
fn read_comm(pid_dir: &Path) -> Option<Comm> {
    let raw = fs::read(pid_dir.join("comm")).ok()?;
    let name = raw.strip_suffix(b"\n").unwrap_or(&raw);
    let mut kernel = [0u8; 16];
    let len = name.len().min(15);
    kernel[..len].copy_from_slice(&name[..len]);
    Some(Comm::from_kernel(&kernel))
}

/// The numeric entries of `proc` (processes, not threads), in ascending order.
fn pids(proc: &Path) -> io::Result<Vec<u32>> {
    let mut pids: Vec<u32> =
        fs::read_dir(proc)?.flatten().filter_map(|e| parse_pid(&e.file_name())).collect();
    pids.sort_unstable();
    Ok(pids)
}

fn parse_pid(name: &OsStr) -> Option<u32> {
    let b = name.as_bytes();
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    name.to_str()?.parse().ok()
}

/// Errors that mean the process (or descriptor) is gone: ENOENT, and ESRCH from a dying
/// process.
fn vanished(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A scratch directory laid out like /proc, removed on drop.
    struct FakeProc(PathBuf);

    impl FakeProc {
        fn new(tag: &str) -> FakeProc {
            let dir =
                std::env::temp_dir().join(format!("portrace-procfs-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            FakeProc(dir)
        }

        /// A process with a command and descriptors linking to `targets`.
        fn process(&self, pid: &str, comm: Option<&str>, targets: &[&str]) {
            let dir = self.0.join(pid);
            fs::create_dir_all(dir.join("fd")).unwrap();
            fs::create_dir_all(dir.join("ns")).unwrap();
            if let Some(comm) = comm {
                fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
            }
            for (fd, target) in targets.iter().enumerate() {
                symlink(target, dir.join("fd").join(fd.to_string())).unwrap();
            }
        }

        fn netns(&self, pid: &str, inode: u32) {
            let ns = self.0.join(pid).join("ns");
            fs::create_dir_all(&ns).unwrap();
            symlink(format!("net:[{inode}]"), ns.join("net")).unwrap();
        }
    }

    impl Drop for FakeProc {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn parses_socket_links() {
        assert_eq!(parse_socket_link(b"socket:[123]"), Some(123));
        assert_eq!(parse_socket_link(b"socket:[18446744073709551615]"), Some(u64::MAX));
        assert_eq!(parse_socket_link(b"socket:[]"), None);
        assert_eq!(parse_socket_link(b"socket:[12"), None);
        assert_eq!(parse_socket_link(b"socket:[+12]"), None);
        assert_eq!(parse_socket_link(b"socket:[18446744073709551616]"), None, "overflow");
        assert_eq!(parse_socket_link(b"pipe:[123]"), None);
        assert_eq!(parse_socket_link(b"/dev/null"), None);
        assert_eq!(parse_socket_link(b"anon_inode:[eventpoll]"), None);
    }

    #[test]
    fn parses_netns_links() {
        assert_eq!(parse_netns_link(b"net:[4026531840]"), Some(4026531840));
        assert_eq!(parse_netns_link(b"net:[4294967296]"), None, "wider than u32");
        assert_eq!(parse_netns_link(b"mnt:[4026531841]"), None);
        assert_eq!(parse_netns_link(b"net:[x]"), None);
    }

    #[test]
    fn lowest_pid_owns_a_shared_socket_and_vanished_processes_are_skipped() {
        let proc = FakeProc::new("owners");
        // pid 300 forked 45: both hold socket 555. 45 must win whatever the dir order.
        proc.process("300", Some("worker"), &["/dev/null", "socket:[555]", "socket:[777]"]);
        proc.process("45", Some("nginx"), &["socket:[555]", "pipe:[9]"]);
        // A process whose comm is gone exited mid-scan: its sockets have no owner.
        proc.process("46", None, &["socket:[888]"]);
        // A pid directory without fd/ (exited before its descriptors were listed).
        fs::create_dir_all(proc.0.join("47")).unwrap();
        // Not processes.
        fs::create_dir_all(proc.0.join("self/fd")).unwrap();
        fs::write(proc.0.join("uptime"), "1 1\n").unwrap();

        let owners = socket_owners_in(&proc.0).unwrap();
        assert_eq!(owners.get(555), Some((45, Comm::new("nginx"))));
        assert_eq!(owners.get(777), Some((300, Comm::new("worker"))));
        assert_eq!(owners.get(888), None);
        assert_eq!(owners.get(9), None, "a pipe is not a socket");
        assert_eq!(owners.sockets.len(), 2);
        assert_eq!(owners.unreadable, 0);
    }

    #[test]
    fn long_and_non_utf8_commands_are_kept_as_the_kernel_has_them() {
        let proc = FakeProc::new("comm");
        proc.process("10", None, &["socket:[1]"]);
        fs::write(proc.0.join("10/comm"), b"abcdefghijklmno\xff\n").unwrap();
        let owners = socket_owners_in(&proc.0).unwrap();
        let (_, comm) = owners.get(1).unwrap();
        assert_eq!(comm.as_bytes(), b"abcdefghijklmno");
    }

    #[test]
    fn own_namespace_first_then_each_other_once() {
        let proc = FakeProc::new("netns");
        fs::create_dir_all(proc.0.join("self/ns")).unwrap();
        symlink("net:[500]", proc.0.join("self/ns/net")).unwrap();
        proc.netns("1", 400);
        proc.netns("2", 500);
        proc.netns("3", 600);
        proc.netns("4", 400);
        proc.process("5", Some("x"), &[]); // no ns/net link: exited
        let found = network_namespaces_in(&proc.0, &proc.0.join("no-such-dir")).unwrap();
        let inodes: Vec<u32> = found.iter().map(|n| n.inode).collect();
        assert_eq!(inodes, [500, 400, 600]);
        assert_eq!(found[0].path, proc.0.join("self/ns/net"));
        assert_eq!(
            found[1].path,
            proc.0.join("1/ns/net"),
            "the first process found keeps the path"
        );
    }

    #[test]
    fn unreadable_own_namespace_is_an_error() {
        let proc = FakeProc::new("nonetns");
        assert!(network_namespaces_in(&proc.0, &proc.0).is_err());
    }

    #[test]
    fn real_proc_lists_this_process_and_its_namespace() {
        let own = thread_netns().unwrap();
        let found = network_namespaces().unwrap();
        assert_eq!(found[0].inode, own);
        assert_eq!(found[0].path, Path::new("/proc/self/ns/net"));
        let mut inodes: Vec<u32> = found.iter().map(|n| n.inode).collect();
        inodes.sort_unstable();
        inodes.dedup();
        assert_eq!(inodes.len(), found.len(), "each namespace once");

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let link = fs::read_link(format!("/proc/self/fd/{}", {
            use std::os::fd::AsRawFd;
            listener.as_raw_fd()
        }))
        .unwrap();
        let inode = parse_socket_link(link.as_os_str().as_bytes()).unwrap();
        let owners = socket_owners().unwrap();
        let (pid, comm) = owners.get(inode).expect("this process's listener has an owner");
        assert_eq!(pid, std::process::id());
        let expected = fs::read("/proc/self/comm").unwrap();
        assert_eq!(comm.as_bytes(), expected.strip_suffix(b"\n").unwrap());
    }
}
