//! The filter flags, shared by live tracing, `record`, `replay`, `report`, `diagram`,
//! `top` and `serve`, and their validation into a [`FilterSpec`].

use crate::filter::{FilterSpec, IpNet};
use crate::record::Family;
use crate::tcp_state::TcpState;
use crate::units::parse_port;

/// The filter flags, shared by live tracing, `record`, `replay` and `report`.
#[derive(Debug, Default, clap::Args)]
#[command(next_help_heading = "Filters")]
pub struct FilterArgs {
    /// Keep connections whose local port is PORT (repeatable, or a list: -L 80,443).
    #[arg(short = 'L', long = "lport", value_name = "PORT", value_parser = parse_port, value_delimiter = ',')]
    pub lport: Vec<u16>,

    /// Keep connections whose remote port is PORT (repeatable, or a list).
    #[arg(short = 'D', long = "rport", value_name = "PORT", value_parser = parse_port, value_delimiter = ',')]
    pub rport: Vec<u16>,

    /// Keep connections with PORT at either end (repeatable, or a list).
    #[arg(long = "port", value_name = "PORT", value_parser = parse_port, value_delimiter = ',')]
    pub port: Vec<u16>,

    /// Keep connections with an endpoint in this address or network (repeatable, or a
    /// list: --addr 10.0.0.0/8,::1).
    #[arg(long = "addr", value_name = "IP[/LEN]", value_parser = clap::value_parser!(IpNet), value_delimiter = ',')]
    pub addr: Vec<IpNet>,

    /// IPv4 only (IPv6 sockets with v4-mapped addresses count as IPv4).
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// IPv6 only.
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,

    /// Keep sockets owned by process PID (repeatable, or a list).
    #[arg(short = 'p', long = "pid", value_name = "PID", value_parser = parse_pid, value_delimiter = ',')]
    pub pid: Vec<u32>,

    /// Keep sockets owned by a process whose command name is COMM (as in ps -o comm;
    /// repeatable, or a list: --comm nginx,sshd). The kernel program matches one name:
    /// with more, it passes every owner's transitions and portrace matches the names.
    #[arg(long = "comm", value_name = "COMM", value_parser = parse_comm, value_delimiter = ',')]
    pub comm: Vec<String>,

    /// Keep transitions into or out of STATE, e.g. ESTABLISHED or close-wait (repeatable,
    /// or a list).
    #[arg(short = 's', long = "state", value_name = "STATE", value_parser = parse_state, value_delimiter = ',')]
    pub state: Vec<TcpState>,

    /// Keep sockets whose owner runs in this cgroup v2 or below it: a directory under
    /// /sys/fs/cgroup, or a path as /proc/PID/cgroup shows it (/system.slice/nginx.service).
    /// Live, the kernel decides it in the owner's own system call; a replay matches the
    /// recorded cgroup paths.
    #[arg(long = "cgroup", value_name = "PATH", value_parser = crate::filter::CgroupFilter::parse)]
    pub cgroup: Option<crate::filter::CgroupFilter>,

    /// Keep sockets in this network namespace: its inode number (lsns -t net), or a name
    /// from ip netns (repeatable).
    #[arg(long = "netns", value_name = "NS", value_parser = crate::filter::parse_netns)]
    pub netns: Vec<u32>,
}

impl FilterArgs {
    pub fn into_spec(self) -> FilterSpec {
        let family = match (self.ipv4, self.ipv6) {
            (true, _) => Some(Family::Ipv4),
            (_, true) => Some(Family::Ipv6),
            _ => None,
        };
        let mut comms = self.comm.into_iter();
        FilterSpec {
            lports: self.lport,
            rports: self.rport,
            ports: self.port,
            nets: self.addr,
            pids: self.pid,
            comm: comms.next(),
            more_comms: comms.collect(),
            family,
            states: self.state,
            cgroup: self.cgroup,
            netns: self.netns,
        }
    }
}

/// A process id: a positive number.
fn parse_pid(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(0) => Err("0 is no process: process ids start at 1 (see ps -e)".to_owned()),
        Ok(pid) if pid <= i32::MAX as u32 => Ok(pid),
        _ => Err(format!("'{text}' is not a process id: give the number ps shows in its PID column")),
    }
}

fn parse_comm(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > 15 {
        return Err(format!(
            "'{text}' cannot be a command name: the kernel keeps 1 to 15 bytes of it (see ps -o comm)"
        ));
    }
    Ok(text.to_string())
}

fn parse_state(text: &str) -> Result<TcpState, String> {
    TcpState::parse(text).map_err(|e| e.to_string())
}
