//! The start-up inventory: every TCP socket that already exists on the host, in every
//! state and every network namespace, with the process that owns it (what `ss -tanpe`
//! shows, namespace by namespace). This module owns walking the namespaces, each on a
//! short-lived thread of its own, joining the sock_diag dumps ([`crate::sock_diag`]) with
//! the descriptor owners from /proc ([`crate::procfs`]), and the order the sockets are
//! listed in: listeners first, so the first lines answer "what listens, and who owns it".

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::thread::{self, JoinHandle};

use crate::procfs::{self, Namespace, Owners};
use crate::record::{Comm, Endpoints, Family, Owner, OwnerSource, SocketRecord, Timestamp};
use crate::sock_diag::{DiagError, DiagSocket, Dump, SockDiag};
use crate::tcp_state::TcpState;

/// One socket that existed when the inventory was taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InventorySocket {
    /// IPv4 for IPv6 sockets whose addresses are v4-mapped (the addresses are then IPv4).
    pub family: Family,
    /// Its addresses and ports, and the inode of its network namespace (as
    /// `/proc/PID/ns/net` shows it).
    pub ends: Endpoints,
    /// From the kernel's state number as sock_diag reports it. Request sockets (a
    /// connection's server side before the handshake completes, `NEW_SYN_RECV` in the
    /// kernel) are reported as `SYN_RECV`; timewait sockets as `TIME_WAIT`, or as
    /// `FIN_WAIT2` for an orphan waiting for its peer's FIN.
    pub state: TcpState,
    /// The socket's inode; 0 for sockets without a file: timewait and request sockets,
    /// connections still waiting in a listener's accept queue, and sockets their process
    /// has closed (orphans).
    pub inode: u64,
    /// The socket's owner uid; sock_diag reports 0 for timewait and request sockets.
    pub uid: u32,
    /// The kernel's socket cookie (`idiag_cookie[0] | idiag_cookie[1] << 32`), the same
    /// value `bpf_get_socket_cookie` gives. The kernel assigns it on first use, so it
    /// never reads 0; the socket a completed handshake creates keeps its request socket's
    /// cookie.
    pub cookie: u64,
    /// The pid and command of the process holding the socket in a file descriptor (the
    /// lowest pid when several do); `None` for sockets without an inode and sockets whose
    /// holder could not be seen.
    pub owner: Option<(u32, Comm)>,
}

impl InventorySocket {
    pub fn is_listener(&self) -> bool {
        self.state == TcpState::Listen
    }

    /// The record portrace reports for this socket, taken at `time` and given the id
    /// `socket`; its owner is marked as coming from the inventory.
    pub fn to_record(&self, time: Timestamp, socket: u64) -> SocketRecord {
        SocketRecord {
            time,
            socket,
            family: self.family,
            ends: self.ends,
            state: self.state,
            owner: self.owner.map(|(pid, comm)| Owner {
                pid,
                comm,
                source: OwnerSource::Inventory, cgroup: 0
            }),
            inode: self.inode,
            uid: self.uid,
            cookie: self.cookie,
        }
    }

    /// The listing order: listeners first, then by state (in the kernel's numbering), then
    /// by local address and port, remote address and port, namespace and cookie.
    fn order_key(&self) -> impl Ord {
        (
            !self.is_listener(),
            self.state,
            self.ends.saddr,
            self.ends.sport,
            self.ends.daddr,
            self.ends.dport,
            self.ends.netns,
            self.cookie,
        )
    }
}

/// Every TCP socket on the host when [`collect`] ran.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    /// In listing order: listeners first, then by state, then by local address and port.
    pub sockets: Vec<InventorySocket>,
    /// How many network namespaces were dumped.
    pub namespaces: usize,
    /// What could not be seen, one sentence each: namespaces that could not be entered or
    /// dumped, interrupted dumps, processes whose descriptors could not be read.
    pub warnings: Vec<String>,
}

impl Inventory {
    /// The listening sockets (they come first).
    pub fn listeners(&self) -> impl Iterator<Item = &InventorySocket> {
        self.sockets.iter().take_while(|s| s.is_listener())
    }

    /// The sockets of one network namespace, in listing order.
    pub fn in_namespace(&self, netns: u32) -> impl Iterator<Item = &InventorySocket> {
        self.sockets.iter().filter(move |s| s.ends.netns == netns)
    }
}

/// Why no inventory could be taken at all. Trouble with one namespace other than
/// portrace's own is a warning in [`Inventory::warnings`] instead.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(
        "cannot list network namespaces: {0}; portrace reads /proc/self/ns/net and \
         /proc/PID/ns/net, so procfs must be mounted at /proc"
    )]
    Namespaces(#[source] io::Error),
    #[error(
        "cannot list the TCP sockets of portrace's own network namespace net:[{netns}]: {source}"
    )]
    Dump {
        netns: u32,
        #[source]
        source: NamespaceError,
    },
    #[error(
        "cannot scan /proc for the processes owning sockets: {0}; procfs must be mounted at /proc"
    )]
    Owners(#[source] io::Error),
}

/// Why the sockets of one namespace could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("cannot open {path}: {source} (the namespace may have gone away meanwhile)")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot enter it with setns: {0} (portrace needs CAP_SYS_ADMIN; run it as root)")]
    Enter(#[source] io::Error),
    #[error("{path} now refers to net:[{found}] (its process exited and the pid was reused)")]
    Replaced { path: PathBuf, found: u32 },
    #[error("cannot tell which network namespace a thread is in: {0}")]
    Current(#[source] io::Error),
    #[error("cannot start a thread to enter it: {0}")]
    Thread(#[source] io::Error),
    #[error("the thread dumping it panicked; this is a portrace bug, please report it")]
    Panicked,
    #[error(transparent)]
    Diag(#[from] DiagError),
}

/// Takes the inventory: lists the network namespaces (portrace's own first), dumps the
/// TCP sockets of each, IPv4 and IPv6, then scans /proc for the processes holding them.
/// The owners are scanned after the dumps, so every socket that still exists was already
/// in its holder's descriptor table when the scan looked.
///
/// Fails only when portrace's own namespace cannot be dumped (IPv4) or /proc cannot be
/// read; every other problem becomes a warning and the inventory goes on without it.
pub fn collect() -> Result<Inventory, InventoryError> {
    let mut warnings = Vec::new();
    let dumped = dump_namespaces(&mut warnings)?;
    let owners = procfs::socket_owners().map_err(InventoryError::Owners)?;
    if owners.unreadable > 0 {
        warnings.push(format!(
            "the file descriptors of {} processes could not be read, so their sockets show no \
             owner; run portrace as root to see every owner",
            owners.unreadable
        ));
    }
    let namespaces = dumped.len();
    let sockets = assemble(dumped.into_iter().map(|d| (d.netns, d.sockets)).collect(), &owners, &mut warnings);
    Ok(Inventory { sockets, namespaces, warnings })
}

/// The TCP sockets of one network namespace, IPv4 and IPv6, without their owners.
#[derive(Debug)]
pub struct NamespaceSockets {
    /// The namespace's inode.
    pub netns: u32,
    pub sockets: Vec<DiagSocket>,
    /// Both dumps ran to their end and the kernel flagged neither as interrupted by
    /// changes: a socket missing from `sockets` did not exist.
    pub whole: bool,
}

/// Dumps the TCP sockets of every network namespace (portrace's own first), as many at
/// once as there are CPUs. Fails only when portrace's own namespace cannot be dumped
/// (IPv4); other problems are pushed onto `warnings` and the namespace is left out or
/// marked as not whole.
pub fn dump_namespaces(warnings: &mut Vec<String>) -> Result<Vec<NamespaceSockets>, InventoryError> {
    let namespaces = procfs::network_namespaces().map_err(InventoryError::Namespaces)?;
    // The kernel walks its whole established-socket hash table for every dump, shared by
    // all namespaces: each namespace costs about the same however few sockets it has, so
    // as many namespaces are dumped at once as there are CPUs.
    let parallel = thread::available_parallelism().map_or(1, |n| n.get());
    let mut outcomes = Vec::with_capacity(namespaces.len());
    for batch in namespaces.chunks(parallel) {
        let started: Vec<_> = batch.iter().cloned().map(start_dump).collect();
        outcomes.extend(started.into_iter().map(finish_dump));
    }

    let mut dumped = Vec::with_capacity(namespaces.len());
    for (i, (ns, outcome)) in namespaces.iter().zip(outcomes).enumerate() {
        let inode = ns.inode;
        match outcome {
            Ok([v4, v6]) => {
                let mut sockets = Vec::new();
                let mut whole = true;
                for (name, dump) in [("IPv4", v4), ("IPv6", v6)] {
                    whole &= dump.as_ref().is_ok_and(|d| !d.interrupted);
                    match dump {
                        Ok(dump) => sockets.extend(take(dump, inode, name, warnings)),
                        // Without its own IPv4 sockets portrace has no inventory worth the
                        // name; an IPv6 failure may just mean IPv6 is disabled.
                        Err(e) if i == 0 && name == "IPv4" => {
                            return Err(InventoryError::Dump { netns: inode, source: e.into() })
                        }
                        Err(e) => warnings.push(format!("network namespace net:[{inode}]: {e}")),
                    }
                }
                dumped.push(NamespaceSockets { netns: inode, sockets, whole });
            }
            Err(source) if i == 0 => return Err(InventoryError::Dump { netns: inode, source }),
            Err(e) => warnings.push(format!(
                "network namespace net:[{inode}] ({}) skipped: {e}",
                ns.path.display()
            )),
        }
    }
    Ok(dumped)
}

/// A dump's sockets, noting an interrupted dump.
fn take(dump: Dump, netns: u32, family: &str, warnings: &mut Vec<String>) -> Vec<DiagSocket> {
    if dump.interrupted {
        warnings.push(format!(
            "network namespace net:[{netns}]: the {family} dump was interrupted by socket \
             changes, so a socket that changed meanwhile may be missing"
        ));
    }
    dump.sockets
}

/// Joins the dumped sockets of each namespace with their owners, and puts them in
/// listing order. A socket listed twice in one namespace (an interrupted dump repeats
/// entries) is kept once; one in an unknown state is left out with a warning.
fn assemble(
    dumped: Vec<(u32, Vec<DiagSocket>)>,
    owners: &Owners,
    warnings: &mut Vec<String>,
) -> Vec<InventorySocket> {
    let mut seen = std::collections::HashSet::new();
    let mut sockets = Vec::new();
    for (netns, dump) in dumped {
        for s in dump {
            let Some(state) = TcpState::from_kernel(s.state) else {
                warnings.push(format!(
                    "network namespace net:[{netns}]: left out a socket {}:{} -> {}:{} in \
                     state {}, which portrace does not know",
                    s.saddr, s.sport, s.daddr, s.dport, s.state
                ));
                continue;
            };
            if s.cookie != 0 && !seen.insert((netns, s.cookie)) {
                continue;
            }
            let inode = u64::from(s.inode);
            sockets.push(InventorySocket {
                family: s.family,
                ends: s.ends(netns),
                state,
                inode,
                uid: s.uid,
                cookie: s.cookie,
                owner: if inode == 0 { None } else { owners.get(inode) },
            });
        }
    }
    sockets.sort_by_cached_key(InventorySocket::order_key);
    sockets
}

/// The IPv4 and IPv6 dumps of one namespace.
type NamespaceDump = [Result<Dump, DiagError>; 2];

/// Starts dumping the IPv4 and IPv6 TCP sockets of `ns` on a thread of its own, which
/// enters the namespace (unless it already is in it) and ends with the dump, so no other
/// thread ever changes namespace. The netlink socket is created inside the namespace,
/// which is what binds the dump to it.
fn start_dump(
    ns: Namespace,
) -> Result<JoinHandle<Result<NamespaceDump, NamespaceError>>, NamespaceError> {
    thread::Builder::new()
        .name("portrace-netns".into())
        .spawn(move || {
            enter(&ns)?;
            let mut diag = SockDiag::open()?;
            Ok([diag.dump_tcp(Family::Ipv4), diag.dump_tcp(Family::Ipv6)])
        })
        .map_err(NamespaceError::Thread)
}

/// Waits for a dump [`start_dump`] started.
fn finish_dump(
    started: Result<JoinHandle<Result<NamespaceDump, NamespaceError>>, NamespaceError>,
) -> Result<NamespaceDump, NamespaceError> {
    started?.join().unwrap_or(Err(NamespaceError::Panicked))
}

/// Moves the calling thread into `ns`, and checks it got there.
pub(crate) fn enter(ns: &Namespace) -> Result<(), NamespaceError> {
    if procfs::thread_netns().map_err(NamespaceError::Current)? == ns.inode {
        return Ok(());
    }
    let file = File::open(&ns.path)
        .map_err(|source| NamespaceError::Open { path: ns.path.clone(), source })?;
    // SAFETY: setns takes a descriptor that stays open for the call and a flag; it changes
    // only the calling thread, which exits after the dump.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(NamespaceError::Enter(io::Error::last_os_error()));
    }
    let now = procfs::thread_netns().map_err(NamespaceError::Current)?;
    if now != ns.inode {
        return Err(NamespaceError::Replaced { path: ns.path.clone(), found: now });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write as _};
    use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
    use std::os::unix::fs::MetadataExt;
    use std::process::{Child, ChildStdin, Command, Stdio};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    fn diag(state: u8, sport: u16, dport: u16, inode: u32, cookie: u64) -> DiagSocket {
        DiagSocket {
            family: Family::Ipv4,
            state,
            saddr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            sport,
            daddr: IpAddr::V4(if dport == 0 { Ipv4Addr::UNSPECIFIED } else { Ipv4Addr::LOCALHOST }),
            dport,
            ifindex: 0,
            uid: 0,
            inode,
            cookie,
        }
    }

    #[test]
    fn listeners_come_first_then_state_then_local_address() {
        let owners = Owners {
            sockets: [(11, (42, Comm::new("sshd"))), (12, (43, Comm::new("web")))].into(),
            unreadable: 0,
        };
        let root = vec![
            diag(1, 22, 50000, 12, 1), // ESTABLISHED
            diag(10, 80, 0, 11, 2),    // LISTEN
            diag(6, 50001, 80, 0, 3),  // TIME_WAIT
            diag(10, 22, 0, 12, 4),    // LISTEN
            diag(1, 22, 40000, 0, 5),  // ESTABLISHED, no inode
            diag(99, 1, 2, 13, 6),     // unknown state
            diag(1, 22, 50000, 12, 1), // repeated by an interrupted dump
        ];
        let other = vec![diag(10, 22, 0, 77, 9)];
        let mut warnings = Vec::new();
        let s = assemble(vec![(100, root), (200, other)], &owners, &mut warnings);
        let got: Vec<(TcpState, u16, u16, u32)> =
            s.iter().map(|s| (s.state, s.ends.sport, s.ends.dport, s.ends.netns)).collect();
        assert_eq!(
            got,
            [
                (TcpState::Listen, 22, 0, 100),
                (TcpState::Listen, 22, 0, 200),
                (TcpState::Listen, 80, 0, 100),
                (TcpState::Established, 22, 40000, 100),
                (TcpState::Established, 22, 50000, 100),
                (TcpState::TimeWait, 50001, 80, 100),
            ]
        );
        assert_eq!(s[0].owner, Some((43, Comm::new("web"))));
        assert_eq!(s[1].owner, None, "inode 77 has no holder");
        assert_eq!(s[2].owner, Some((42, Comm::new("sshd"))));
        assert_eq!(s[3].owner, None, "no inode, no owner");
        assert_eq!(s[5].inode, 0);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("state 99"), "{warnings:?}");
        let inv = Inventory { sockets: s, namespaces: 2, warnings };
        assert_eq!(inv.listeners().count(), 3);
        assert_eq!(inv.in_namespace(200).count(), 1);
    }

    #[test]
    fn record_carries_the_inventory_owner() {
        let s = InventorySocket {
            family: Family::Ipv4,
            ends: Endpoints {
                saddr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                sport: 1,
                daddr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                dport: 0,
                netns: 5,
            },
            state: TcpState::Listen,
            inode: 6,
            uid: 7,
            cookie: 8,
            owner: Some((9, Comm::new("x"))),
        };
        let time = Timestamp { mono_ns: 1, unix_ns: 2 };
        let r = s.to_record(time, 3);
        assert_eq!(
            r.owner,
            Some(Owner { pid: 9, comm: Comm::new("x"), source: OwnerSource::Inventory, cgroup: 0 })
        );
        assert_eq!(
            (r.socket, r.ends.netns, r.inode, r.uid, r.cookie, r.state),
            (3, 5, 6, 7, 8, TcpState::Listen)
        );
    }

    fn own_netns() -> u32 {
        let link = std::fs::read_link("/proc/self/ns/net").unwrap();
        procfs::parse_netns_link(link.as_os_str().as_encoded_bytes()).unwrap()
    }

    fn inode_of(fd: &impl AsRawFd) -> u64 {
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        procfs::parse_socket_link(link.as_os_str().as_encoded_bytes()).unwrap()
    }

    #[test]
    fn finds_this_processs_listener_and_connection_in_its_own_namespace() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (server, _) = listener.accept().unwrap();
        let cport = client.local_addr().unwrap().port();

        let inv = collect().unwrap();
        let netns = own_netns();
        let me = std::process::id();
        let own: Vec<&InventorySocket> = inv.in_namespace(netns).collect();
        assert!(inv.namespaces >= 1);

        let l = own.iter().find(|s| s.is_listener() && s.ends.sport == port).expect("listener found");
        assert_eq!(l.family, Family::Ipv4);
        assert_eq!(l.ends.saddr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(l.inode, inode_of(&listener));
        // SAFETY: geteuid has no preconditions.
        assert_eq!(l.uid, unsafe { libc::geteuid() });
        assert_ne!(l.cookie, 0);
        assert_eq!(l.owner.map(|o| o.0), Some(me));
        let comm = std::fs::read("/proc/self/comm").unwrap();
        assert_eq!(l.owner.unwrap().1.as_bytes(), comm.strip_suffix(b"\n").unwrap());

        let c = own.iter().find(|s| s.ends.sport == cport && s.ends.dport == port).expect("client side");
        let s = own.iter().find(|s| s.ends.sport == port && s.ends.dport == cport).expect("server side");
        assert_eq!((c.state, s.state), (TcpState::Established, TcpState::Established));
        assert_eq!((c.inode, s.inode), (inode_of(&client), inode_of(&server)));
        assert_eq!((c.owner.map(|o| o.0), s.owner.map(|o| o.0)), (Some(me), Some(me)));
        assert_ne!(c.cookie, s.cookie);

        let listeners_end =
            inv.sockets.iter().position(|s| !s.is_listener()).unwrap_or(inv.sockets.len());
        assert!(inv.sockets[listeners_end..].iter().all(|s| !s.is_listener()), "listeners first");
    }

    static NEXT_NS: AtomicU32 = AtomicU32::new(0);
    const NS_PREFIX: &str = "portrace-inv-";

    /// A network namespace made with `ip netns add`, named `portrace-inv-<pid>-<n>`,
    /// deleted on drop (also on panic).
    struct TestNetns {
        name: String,
    }

    impl TestNetns {
        fn create() -> TestNetns {
            remove_stale_netns();
            let name = format!(
                "{NS_PREFIX}{}-{}",
                std::process::id(),
                NEXT_NS.fetch_add(1, Ordering::Relaxed)
            );
            run(Command::new("ip").args(["netns", "add", &name]));
            let ns = TestNetns { name };
            run(Command::new("ip")
                .args(["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]));
            ns
        }

        fn inode(&self) -> u32 {
            let meta = std::fs::metadata(format!("/run/netns/{}", self.name)).unwrap();
            u32::try_from(meta.ino()).unwrap()
        }
    }

    impl Drop for TestNetns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "delete", &self.name]).status();
        }
    }

    /// Deletes the namespaces of earlier test runs that were killed before their drop ran
    /// (their pid no longer exists).
    fn remove_stale_netns() {
        let Ok(entries) = std::fs::read_dir("/run/netns") else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix(NS_PREFIX).and_then(|rest| rest.split('-').next())
            else {
                continue;
            };
            if !std::path::Path::new("/proc").join(pid).exists() {
                let _ = Command::new("ip").args(["netns", "delete", &name]).status();
            }
        }
    }

    fn run(cmd: &mut Command) {
        let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A child process, killed and reaped on drop.
    struct TestChild {
        child: Child,
        _stdin: ChildStdin,
    }

    impl Drop for TestChild {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Runs in the test namespace as uid 65534: listeners on 127.0.0.1:7000 and :7001 and
    /// these connections, then prints the client ports and waits for stdin to close.
    /// - `c1`/`s1` stay ESTABLISHED;
    /// - `c2` closes first and `s2` after reading its FIN: `c2` ends in TIME_WAIT;
    /// - `c3` shuts down its sending side: `c3` in FIN_WAIT2, `s3` in CLOSE_WAIT, both open;
    /// - `c4` closes while `s4` stays open: `c4` an orphan in FIN_WAIT2, `s4` in CLOSE_WAIT;
    /// - `c5` connects to port 7001, whose listener has TCP_DEFER_ACCEPT (option 9): the
    ///   server side stays a request socket (NEW_SYN_RECV) until data arrives.
    const CHILD: &str = r#"
use strict; use warnings; use IO::Socket::INET; use Socket qw(IPPROTO_TCP);
$| = 1;
sub listener {
    IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $_[0], Listen => 16,
                          ReuseAddr => 1) or die "listen: $!";
}
sub connected { IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $_[0]) or die "connect: $!" }
my $l = listener(7000);
my $d = listener(7001);
setsockopt($d, IPPROTO_TCP, 9, 30) or die "TCP_DEFER_ACCEPT: $!";
sub pair { my $c = connected(7000); my $s = $l->accept or die "accept: $!"; ($c, $s) }
my ($c1, $s1) = pair();
my ($c2, $s2) = pair(); my $p2 = $c2->sockport; close $c2;
my $buf; sysread($s2, $buf, 1); close $s2;
my ($c3, $s3) = pair(); shutdown($c3, 1);
my ($c4, $s4) = pair(); my $p4 = $c4->sockport; close $c4;
my $c5 = connected(7001);
print join(' ', 'ready', $c1->sockport, $p2, $c3->sockport, $p4, $c5->sockport), "\n";
<STDIN>;
"#;

    #[test]
    fn finds_listener_connections_and_owner_in_another_namespace() {
        // It creates a network namespace: root only. Skipped, with a line, for another
        // user; CI runs as root and must run it.
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            assert!(std::env::var_os("CI").is_none_or(|v| v.is_empty()), "CI runs the tests as root");
            let _ = writeln!(std::io::stderr(), "skipped inventory::tests::finds_listener_connections_and_owner_in_another_namespace: it needs root (it creates a network namespace)");
            return;
        }
        let ns = TestNetns::create();
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ])
            .args(["perl", "-e", CHILD])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start perl in the test namespace");
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take().unwrap();
        // `ip netns exec` and `setpriv` exec their program, so perl keeps the child's pid.
        let child = TestChild { child, _stdin: stdin };
        let pid = child.child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line =
            rx.recv_timeout(Duration::from_secs(10)).expect("the perl child never got ready");
        let ports: Vec<u16> = line.split_whitespace().skip(1).map(|p| p.parse().unwrap()).collect();
        assert_eq!(ports.len(), 5, "child said {line:?}");
        let [p1, p2, p3, p4, p5] = [ports[0], ports[1], ports[2], ports[3], ports[4]];
        let netns = ns.inode();

        // The FINs travel through loopback's softirq: poll until the closing states settle.
        let deadline = Instant::now() + Duration::from_secs(5);
        let (inv, sockets) = loop {
            let inv = collect().unwrap();
            let sockets: Vec<InventorySocket> = inv.in_namespace(netns).cloned().collect();
            let settled = sockets.iter().any(|s| s.ends.sport == p2 && s.state == TcpState::TimeWait)
                && sockets.iter().any(|s| s.ends.sport == p4 && s.state == TcpState::FinWait2);
            if settled || Instant::now() > deadline {
                break (inv, sockets);
            }
            thread::sleep(Duration::from_millis(20));
        };
        let shown: Vec<String> = sockets
            .iter()
            .map(|s| {
                format!(
                    "{} {}:{} {}:{} inode={} uid={} cookie={:#x} owner={:?}",
                    s.state,
                    s.ends.saddr,
                    s.ends.sport,
                    s.ends.daddr,
                    s.ends.dport,
                    s.inode,
                    s.uid,
                    s.cookie,
                    s.owner.map(|o| o.0)
                )
            })
            .collect();
        eprintln!("namespace net:[{netns}]:\n  {}", shown.join("\n  "));
        assert!(
            !inv.warnings.iter().any(|w| w.contains(&format!("net:[{netns}]"))),
            "{:?}",
            inv.warnings
        );

        let find = |sport: u16, dport: u16| {
            sockets
                .iter()
                .find(|s| s.ends.sport == sport && s.ends.dport == dport)
                .unwrap_or_else(|| panic!("no socket {sport} -> {dport} in {shown:#?}"))
        };
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let perl = Some((pid, Comm::new("perl")));

        let l = find(7000, 0);
        assert_eq!(
            (l.state, l.family, l.ends.saddr, l.ends.netns),
            (TcpState::Listen, Family::Ipv4, localhost, netns)
        );
        assert_eq!(l.owner, perl);
        assert_eq!(l.uid, 65534);
        assert_ne!(l.inode, 0);
        assert_eq!(sockets.first(), Some(l), "the listeners come first, 7000 before 7001");
        assert_eq!(find(7001, 0).owner, perl);

        for (sport, dport, state) in [
            (p1, 7000, TcpState::Established),
            (7000, p1, TcpState::Established),
            (p3, 7000, TcpState::FinWait2),
            (7000, p3, TcpState::CloseWait),
            (7000, p4, TcpState::CloseWait),
            (p5, 7001, TcpState::Established),
        ] {
            let s = find(sport, dport);
            assert_eq!((s.state, s.ends.daddr), (state, localhost), "{sport} -> {dport}");
            assert_eq!(s.owner, perl, "{sport} -> {dport}");
            assert_eq!(s.uid, 65534, "{sport} -> {dport}");
            assert_ne!(s.inode, 0);
        }
        // Sockets without a file: no inode, no owner, and sock_diag reports uid 0 for them.
        let tw = find(p2, 7000);
        assert_eq!((tw.state, tw.inode, tw.owner, tw.uid), (TcpState::TimeWait, 0, None, 0));
        let orphan = find(p4, 7000);
        assert_eq!((orphan.state, orphan.inode, orphan.owner), (TcpState::FinWait2, 0, None));
        // sock_diag reports a request socket (NEW_SYN_RECV in the kernel) as SYN_RECV.
        let request = find(7001, p5);
        assert_eq!(
            (request.state, request.inode, request.owner, request.uid),
            (TcpState::SynRecv, 0, None, 0)
        );
        assert_ne!(request.cookie, 0);
        assert_eq!(sockets.len(), 11, "{shown:#?}");

        drop(child);
        drop(ns);
    }
}
