//! Binding the metrics port before anything is loaded, so that a port in use or an
//! address that is not this host's is refused at once, with what to do about it.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::MetadataExt as _;

/// The address `portrace serve` listens on unless told.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9977";

/// Binds `addr` (std sets `SO_REUSEADDR`: connections of an earlier run still in
/// TIME_WAIT do not keep the port busy).
pub fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| {
        let holder = if e.kind() == io::ErrorKind::AddrInUse { holder(addr.port()) } else { None };
        anyhow::anyhow!(describe(addr, &e, holder.as_deref()))
    })
}

/// The message for a failure to bind `addr`; `holder` names the process listening there
/// when known.
pub fn describe(addr: SocketAddr, err: &io::Error, holder: Option<&str>) -> String {
    match err.kind() {
        io::ErrorKind::AddrInUse => {
            let who = holder.map_or_else(|| "another program".to_string(), |h| h.to_string());
            format!(
                "--listen {addr}: port {port} is already in use by {who}: stop it, or give portrace another \
                 port with --listen {ip}:PORT",
                port = addr.port(),
                ip = if addr.is_ipv6() { format!("[{}]", addr.ip()) } else { addr.ip().to_string() },
            )
        }
        io::ErrorKind::AddrNotAvailable => format!(
            "--listen {addr}: {ip} is not an address of this host: give one of its own addresses \
             (`ip -brief address` lists them), 127.0.0.1 to serve this host only, or 0.0.0.0 to serve \
             every interface",
            ip = addr.ip()
        ),
        _ => format!("--listen {addr}: cannot listen there: {err}"),
    }
}

/// The process listening on TCP `port` in this network namespace, as `name (pid N)`.
fn holder(port: u16) -> Option<String> {
    let own_netns = std::fs::metadata("/proc/self/ns/net").ok()?.ino();
    let inventory = crate::inventory::collect().ok()?;
    let listener = inventory.listeners().find(|s| s.ends.sport == port && u64::from(s.ends.netns) == own_netns)?;
    let (pid, comm) = listener.owner?;
    Some(format!("{} (pid {pid})", crate::escape::comm(&comm)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_port_names_the_holder_and_the_flag() {
        let addr: SocketAddr = "127.0.0.1:9977".parse().unwrap();
        let err = io::Error::from(io::ErrorKind::AddrInUse);
        let text = describe(addr, &err, Some("nginx (pid 12)"));
        assert_eq!(
            text,
            "--listen 127.0.0.1:9977: port 9977 is already in use by nginx (pid 12): stop it, or give \
             portrace another port with --listen 127.0.0.1:PORT"
        );
        let v6: SocketAddr = "[::1]:9977".parse().unwrap();
        assert!(describe(v6, &err, None).contains("another program: stop it, or give portrace another port with --listen [::1]:PORT"));
    }

    #[test]
    fn an_address_of_another_host_says_what_to_give() {
        let addr: SocketAddr = "192.0.2.7:9977".parse().unwrap();
        let text = describe(addr, &io::Error::from(io::ErrorKind::AddrNotAvailable), None);
        assert!(text.starts_with("--listen 192.0.2.7:9977: 192.0.2.7 is not an address of this host"), "{text}");
        assert!(text.contains("127.0.0.1"), "{text}");
    }

    #[test]
    fn binding_a_busy_port_fails_with_the_message() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let err = bind(taken.local_addr().unwrap()).unwrap_err().to_string();
        assert!(err.contains("is already in use by"), "{err}");
        let err = bind("192.0.2.7:9977".parse().unwrap()).unwrap_err().to_string();
        assert!(err.contains("is not an address of this host"), "{err}");
    }
}
