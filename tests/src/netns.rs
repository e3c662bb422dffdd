//! Network namespaces for the tests: [`Netns`] creates a uniquely named one with only
//! loopback, up, and a local port range that leaves 65001-65535 free for the tests' own
//! listening ports, runs programs inside it, links it to another of the test's namespaces
//! with a veth pair, and deletes it on drop (its interfaces go with it). portrace itself
//! runs in the root namespace: the tracepoint sees every namespace, and its filters select
//! the test's own traffic.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::process::{run_bounded, Proc};

/// Prefix of every namespace the fixture creates: `portrace-t-<pid>-<n>`.
const PREFIX: &str = "portrace-t-";
/// Bound on each `ip` or `sysctl` invocation.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

static NEXT: AtomicU32 = AtomicU32::new(0);
/// Numbers the veth interfaces, so no two in one namespace share a name.
static NEXT_LINK: AtomicU32 = AtomicU32::new(0);

/// A network namespace owned by the test; deleted on drop. Drop the processes running in
/// it first (declare the `Netns` before them, so it is dropped after them).
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `portrace-t-<pid>-<n>`, brings `lo` up (127.0.0.0/8 and ::1 are then all
    /// usable) and sets `net.ipv4.ip_local_port_range` to `1024 65000`, so ports above
    /// 65000 are never picked as ephemeral ports and can serve as the tests' listening
    /// ports without ever colliding with a client's. Raises `net.core.somaxconn` to 65535,
    /// so tcpload's listen backlog holds a whole unpaced burst (an accept queue overflow
    /// drops handshakes, and the retries end some connections with resets). Sets
    /// `net.ipv4.tcp_tw_reuse` to 0: with the default (2, reuse on loopback) a connect may
    /// pick a local port whose previous connection to the same server is still in
    /// TIME_WAIT (once the second it entered TIME_WAIT is over), which kills that TIME_WAIT
    /// early, at a moment that depends on timing; with 0 each connect takes a free port.
    /// Sets `net.ipv4.tcp_rfc1337` to 1: otherwise a client's late ACK, which the server's
    /// listener answers with a reset once the server's side has closed, ends the client's
    /// TIME_WAIT (TIME_WAIT assassination), one transition more, at the kernel's whim,
    /// even in a workload of three connections. Kills have tests of their own, by a new
    /// connection's SYN and by the namespace's deletion, which RFC 1337 does not stop.
    /// Also deletes namespaces a previous, killed run of these tests left behind (their
    /// process no longer exists).
    pub fn create() -> Netns {
        remove_stale();
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        // From here on, Drop deletes the namespace even if the setup below fails.
        let ns = Netns { name };
        ns.exec("ip", &["link", "set", "lo", "up"]);
        ns.sysctl("net.ipv4.ip_local_port_range=1024 65000");
        ns.sysctl("net.ipv4.tcp_tw_reuse=0");
        ns.sysctl("net.core.somaxconn=65535");
        ns.sysctl("net.ipv4.tcp_rfc1337=1");
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's inode number: what portrace reports as `netns`, and what
    /// `/proc/PID/ns/net` shows for a process inside it.
    pub fn inode(&self) -> u64 {
        let path = format!("/run/netns/{}", self.name);
        std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("stat {path}: {e}"))
            .ino()
    }

    /// Sets a sysctl inside the namespace (`NAME=VALUE`, e.g. `net.ipv4.tcp_syn_retries=1`).
    pub fn sysctl(&self, setting: &str) {
        self.exec("sysctl", &["-w", setting]);
    }

    /// The kernel's own list of the TIME_WAIT sockets in the namespace whose remote port is
    /// `remote_port`, by local port (from `ss`, which asks the kernel through sock_diag):
    /// what a test compares portrace's timewait tracking with.
    pub fn time_wait_ports(&self, remote_port: u16) -> BTreeSet<u16> {
        let mut cmd = self.command("ss");
        cmd.args(["-Htan", "state", "time-wait"]);
        let label = format!("ss -Htan state time-wait in {}", self.name);
        let listed = run_bounded(&label, cmd, SETUP_TIMEOUT);
        listed.assert_success();
        // Each line: Recv-Q Send-Q Local:Port Peer:Port (no State column with a state filter).
        let port_of = |endpoint: &str| endpoint.rsplit(':').next()?.parse::<u16>().ok();
        listed
            .stdout
            .iter()
            .filter_map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                let local = port_of(words.get(2)?)?;
                let remote = port_of(words.get(3)?)?;
                (remote == remote_port).then_some(local)
            })
            .collect()
    }

    /// Links this namespace to `peer` with a veth pair: one end here with address `local`,
    /// the other in `peer` with address `remote` (both with their prefix length, e.g.
    /// `169.254.20.1/30` and `169.254.20.2/30`), both up. Returns the two interface names.
    /// The ends are deleted with their namespaces.
    pub fn veth(&self, local: &str, peer: &Netns, remote: &str) -> (String, String) {
        let n = NEXT_LINK.fetch_add(1, Ordering::Relaxed);
        let (here, there) = (format!("ptv{n}a"), format!("ptv{n}b"));
        self.exec(
            "ip",
            &[
                "link", "add", &here, "type", "veth", "peer", "name", &there, "netns", &peer.name,
            ],
        );
        self.exec("ip", &["addr", "add", local, "dev", &here]);
        peer.exec("ip", &["addr", "add", remote, "dev", &there]);
        self.exec("ip", &["link", "set", &here, "up"]);
        peer.exec("ip", &["link", "set", &there, "up"]);
        (here, there)
    }

    /// A command that runs `program` inside the namespace (`ip netns exec NAME program`).
    /// `ip` execs the program, so the child's pid is the program's own.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Starts `program args...` inside the namespace.
    pub fn spawn(&self, label: &str, program: &Path, args: &[&str]) -> Proc {
        let mut cmd = self.command(program);
        cmd.args(args);
        Proc::spawn(label, cmd)
    }

    /// Runs `program args...` inside the namespace to completion; panics unless it succeeds.
    pub fn exec(&self, program: &str, args: &[&str]) {
        let mut cmd = self.command(program);
        cmd.args(args);
        let label = format!("{program} {} in {}", args.join(" "), self.name);
        run_bounded(&label, cmd, SETUP_TIMEOUT).assert_success();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "delete", &self.name]);
        let finished = run_bounded("ip netns delete", cmd, SETUP_TIMEOUT);
        if !finished.status.success() && !std::thread::panicking() {
            panic!(
                "could not delete namespace {}: {}",
                self.name, finished.stderr
            );
        }
    }
}

fn ip(args: &[&str]) {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    run_bounded(&format!("ip {}", args.join(" ")), cmd, SETUP_TIMEOUT).assert_success();
}

/// Deletes `portrace-t-<pid>-<n>` namespaces whose creating process is gone (a run that
/// was killed before its Drop ran). Namespaces of live processes are left alone.
fn remove_stale() {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "list"]);
    let listed = run_bounded("ip netns list", cmd, SETUP_TIMEOUT);
    for line in &listed.stdout {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "delete", name]);
            let _ = run_bounded("ip netns delete (stale)", cmd, SETUP_TIMEOUT);
        }
    }
}
