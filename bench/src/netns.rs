//! The network namespaces one workload run uses, created fresh for every run so that no
//! TIME_WAIT socket of an earlier run is still around: `pbench-<pid>-<n>`, with loopback
//! up, ephemeral ports kept below the benchmark's listening ports (63000-63099) and
//! `tcp_tw_reuse` off (each connect takes a free port, every TIME_WAIT lasts its 60 s and
//! the kernel emits exactly the transitions the ground truth expects). The loopback
//! transport runs client and server in one namespace on 127.63.0.1; the veth transport
//! runs the client in one namespace (169.254.63.1) and the server in another
//! (169.254.63.2), joined by a veth pair. The tracers stay in the root namespace, where the
//! tracepoint sees every namespace.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::sys::{self, run_bounded, run_bounded_always, Result};

const PREFIX: &str = "pbench-";
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Ephemeral ports: everything below the benchmark's listening ports.
const PORT_RANGE: &str = "net.ipv4.ip_local_port_range=1024 62999";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A namespace of this run; deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn create() -> Result<Netns> {
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "add", &name]);
        run_bounded(&format!("ip netns add {name}"), cmd, SETUP_TIMEOUT)?;
        sys::register_namespace(&name);
        let ns = Netns { name };
        ns.exec("ip", &["link", "set", "lo", "up"])?;
        ns.exec("sysctl", &["-q", "-w", PORT_RANGE])?;
        ns.exec("sysctl", &["-q", "-w", "net.ipv4.tcp_tw_reuse=0"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `program` run inside the namespace; `ip` execs it, so the pid is the program's.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    pub fn exec(&self, program: &str, args: &[&str]) -> Result<()> {
        let mut cmd = self.command(program);
        cmd.args(args);
        run_bounded(
            &format!("{program} {} in {}", args.join(" "), self.name),
            cmd,
            SETUP_TIMEOUT,
        )
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "delete", &self.name]);
        match run_bounded_always("ip netns delete", cmd, SETUP_TIMEOUT) {
            // Left registered otherwise: the final clean-up tries again.
            Ok(()) => sys::forget_namespace(&self.name),
            Err(e) => eprintln!("bench: could not delete namespace {}: {e}", self.name),
        }
    }
}

/// Where one run's client and server live and how the client reaches the server.
pub struct Topology {
    /// The server's namespace (the client's too, on loopback).
    pub server_ns: Netns,
    /// The client's namespace, when it has its own (veth).
    pub client_ns: Option<Netns>,
    /// The address the server listens on; every transition of the workload has it at one
    /// end, which is how the benchmark tells its own traffic from anyone else's.
    pub server_addr: Ipv4Addr,
}

impl Topology {
    pub fn client_ns(&self) -> &Netns {
        self.client_ns.as_ref().unwrap_or(&self.server_ns)
    }

    /// One namespace; the server on 127.63.0.1 (the client's source is 127.0.0.1).
    pub fn loopback() -> Result<Topology> {
        Ok(Topology {
            server_ns: Netns::create()?,
            client_ns: None,
            server_addr: Ipv4Addr::new(127, 63, 0, 1),
        })
    }

    /// Two namespaces joined by a veth pair: client 169.254.63.1, server 169.254.63.2.
    pub fn veth() -> Result<Topology> {
        let server_ns = Netns::create()?;
        let client_ns = Netns::create()?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let (here, there) = (format!("pbv{n}c"), format!("pbv{n}s"));
        client_ns.exec(
            "ip",
            &[
                "link",
                "add",
                &here,
                "type",
                "veth",
                "peer",
                "name",
                &there,
                "netns",
                server_ns.name(),
            ],
        )?;
        client_ns.exec("ip", &["addr", "add", "169.254.63.1/30", "dev", &here])?;
        server_ns.exec("ip", &["addr", "add", "169.254.63.2/30", "dev", &there])?;
        client_ns.exec("ip", &["link", "set", &here, "up"])?;
        server_ns.exec("ip", &["link", "set", &there, "up"])?;
        Ok(Topology {
            server_ns,
            client_ns: Some(client_ns),
            server_addr: Ipv4Addr::new(169, 254, 63, 2),
        })
    }
}

/// Deletes `pbench-<pid>-<n>` namespaces whose benchmark process is gone (one that was
/// SIGKILLed before it could clean up). Namespaces of a live benchmark are left alone.
pub fn remove_stale() {
    let Some(list) = sys::output_of(Command::new("ip").args(["netns", "list"])) else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "delete", name]);
            let _ = run_bounded_always("ip netns delete (stale)", cmd, SETUP_TIMEOUT);
        }
    }
}
