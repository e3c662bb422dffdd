//! What to trace: parsing the values users give to the filter flags (ports, addresses and
//! networks, states) and building the [`Filter`] the kernel program applies before it
//! reserves anything in the ring buffer.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use portrace_ebpf::{Filter, Net, AF_INET, AF_INET6, MAX_NETNS, MAX_NETS, MAX_PIDS, MAX_PORTS};

use crate::record::{Endpoints, Family, Owner, SocketRecord, Transition};
use crate::tcp_state::TcpState;

/// An address prefix: `10.0.0.0/8`, `2001:db8::/32`, or a bare address (all its bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(text: &str) -> Result<IpNet, String> {
        let (addr_text, len_text) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| {
            format!("'{addr_text}' is not an IP address (expected e.g. 10.0.0.1, 10.0.0.0/8 or 2001:db8::/32)")
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len_text {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => {
                    return Err(format!(
                        "prefix length '/{l}' is out of range for an {} address (0 to {max})",
                        if addr.is_ipv4() { "IPv4" } else { "IPv6" }
                    ))
                }
            },
        };
        Ok(IpNet { addr, prefix_len })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl IpNet {
    /// The network in the kernel's form: IPv4 v4-mapped, address masked.
    fn to_kernel(self) -> Net {
        let (octets, len) = match self.addr {
            IpAddr::V4(a) => (a.to_ipv6_mapped().octets(), 96 + u32::from(self.prefix_len)),
            IpAddr::V6(a) => (a.octets(), u32::from(self.prefix_len)),
        };
        let mask = (!0u128).checked_shl(128 - len).unwrap_or(0).to_be_bytes();
        let mut addr = [0u8; 16];
        for i in 0..16 {
            addr[i] = octets[i] & mask[i];
        }
        Net { addr, mask }
    }

    /// Whether `addr` lies in the network (IPv4 and v4-mapped IPv6 addresses compare equal).
    pub fn contains(&self, addr: IpAddr) -> bool {
        let net = self.to_kernel();
        let a = match addr {
            IpAddr::V4(a) => a.to_ipv6_mapped(),
            IpAddr::V6(a) => a,
        };
        a.octets().iter().zip(net.mask).zip(net.addr).all(|((a, m), n)| a & m == n)
    }
}
/// The user's filter, as given on the command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilterSpec {
    pub lports: Vec<u16>,
    pub rports: Vec<u16>,
    pub ports: Vec<u16>,
    pub nets: Vec<IpNet>,
    pub pids: Vec<u32>,
    /// The owner's command name (at most 15 bytes, as the kernel keeps it): the first one
    /// given.
    pub comm: Option<String>,
    /// The other command names given: an owner named by any of the names passes. The
    /// kernel program matches one name, so with more than one, names are matched in
    /// userspace ([`FilterSpec::comm_in_kernel`]); a recording's header keeps the first.
    pub more_comms: Vec<String>,
    pub family: Option<Family>,
    pub states: Vec<TcpState>,
    /// The owner's cgroup is this one or below it (`--cgroup`).
    pub cgroup: Option<CgroupFilter>,
    /// The socket's network namespace is one of these inode numbers (`--netns`).
    pub netns: Vec<u32>,
}

/// `--cgroup`: a cgroup v2 path, and, once resolved on this host, the cgroup's id and level
/// for the kernel program.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupFilter {
    /// The path under the cgroup2 mount, starting with `/` (`/system.slice`).
    pub path: String,
    /// The value as the user gave it (resolved on this host against its cgroup2 mount).
    pub given: String,
    /// The cgroup's id and level, when resolved (live runs); 0 and 0 otherwise.
    pub id: u64,
    pub level: u32,
}

impl CgroupFilter {
    /// From a user's value: a path under `/sys/fs/cgroup`, or a cgroup path as
    /// /proc/PID/cgroup shows it. `..` is refused.
    pub fn parse(text: &str) -> Result<CgroupFilter, String> {
        if text.is_empty() || text.contains('\0') {
            return Err(format!("'{}' is not a cgroup path (e.g. /system.slice/nginx.service)", crate::escape::text(text)));
        }
        // The usual mount points: unified (`/sys/fs/cgroup`) and hybrid hosts'
        // (`/sys/fs/cgroup/unified`). A live run resolves the value against the real one.
        let given = std::path::Path::new(text);
        let mount = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .map(std::path::Path::new)
            .find(|m| given.starts_with(m))
            .unwrap_or(std::path::Path::new("/sys/fs/cgroup"));
        let rel = crate::cgroup::resolve::relative_to_mount(mount, given).map_err(|e| e.to_string())?;
        Ok(CgroupFilter { path: format!("/{}", rel.to_string_lossy()), given: text.to_string(), id: 0, level: 0 })
    }

    /// Resolved against this host's cgroup2 hierarchy: the cgroup must exist there.
    pub fn resolve(&self) -> Result<CgroupFilter, crate::cgroup::CgroupError> {
        let hierarchy = crate::cgroup::Hierarchy::open()?;
        let dir = hierarchy.cgroup(std::path::Path::new(&self.given))?;
        Ok(CgroupFilter { path: dir.path, given: self.given.clone(), id: dir.id, level: dir.level })
    }

    /// Whether a cgroup at `path` is this one or below it (component by component).
    pub fn contains(&self, path: &str) -> bool {
        let base = self.path.trim_end_matches('/');
        base.is_empty() || path == base || path.strip_prefix(base).is_some_and(|rest| rest.starts_with('/'))
    }
}

/// Parses a `--netns` value: a namespace's inode number (as `ls -Li /proc/PID/ns/net` or
/// `lsns -t net` shows it), or the name of one `ip netns add` made, looked up in
/// /run/netns.
pub fn parse_netns(text: &str) -> Result<u32, String> {
    if let Ok(n) = text.parse::<u32>() {
        if n == 0 {
            return Err("network namespace 0 does not exist: give an inode number (lsns -t net) or a name from ip netns".into());
        }
        return Ok(n);
    }
    crate::netns_info::named(text)
}

/// A filter the kernel program cannot hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("too many {flag} values ({given}): portrace filters on at most {max}")]
pub struct TooMany {
    pub flag: &'static str,
    pub given: usize,
    pub max: usize,
}

impl FilterSpec {
    /// Builds the kernel program's filter.
    pub fn to_kernel(&self) -> Result<Filter, TooMany> {
        fn check(flag: &'static str, given: usize, max: usize) -> Result<(), TooMany> {
            if given > max {
                return Err(TooMany { flag, given, max });
            }
            Ok(())
        }
        check("--lport", self.lports.len(), MAX_PORTS)?;
        check("--rport", self.rports.len(), MAX_PORTS)?;
        check("--port", self.ports.len(), MAX_PORTS)?;
        check("--addr", self.nets.len(), MAX_NETS)?;
        check("--pid", self.pids.len(), MAX_PIDS)?;
        check("--netns", self.netns.len(), MAX_NETNS)?;
        let mut f = Filter::ALL;
        f.lports[..self.lports.len()].copy_from_slice(&self.lports);
        f.rports[..self.rports.len()].copy_from_slice(&self.rports);
        f.ports[..self.ports.len()].copy_from_slice(&self.ports);
        f.pids[..self.pids.len()].copy_from_slice(&self.pids);
        for (slot, net) in f.nets.iter_mut().zip(&self.nets) {
            *slot = net.to_kernel();
        }
        f.n_lports = self.lports.len() as u16;
        f.n_rports = self.rports.len() as u16;
        f.n_ports = self.ports.len() as u16;
        f.n_nets = self.nets.len() as u32;
        f.n_pids = self.pids.len() as u32;
        f.family = match self.family {
            None => 0,
            Some(Family::Ipv4) => AF_INET,
            Some(Family::Ipv6) => AF_INET6,
        };
        f.states = self.states.iter().fold(0, |bits, s| bits | 1 << s.kernel_number());
        if let Some(comm) = self.comm.as_ref().filter(|_| self.comm_in_kernel()) {
            let bytes = comm.as_bytes();
            f.comm[..bytes.len().min(15)].copy_from_slice(&bytes[..bytes.len().min(15)]);
            f.match_comm = 1;
        }
        f.netns[..self.netns.len()].copy_from_slice(&self.netns);
        f.n_netns = self.netns.len() as u32;
        if let Some(c) = &self.cgroup {
            f.cgroup_id = c.id;
            f.cgroup_level = c.level;
        }
        f.hold_unbound = u16::from(!self.lports.is_empty() || !self.ports.is_empty());
        Ok(f)
    }
}

impl FilterSpec {
    /// Whether the filter keeps every transition of a socket or none: it looks only at
    /// what a socket keeps for life (family, ports, addresses), not at states or owners.
    /// (A `CLOSE -> SYN_SENT` the port filters drop comes first, so it leaves no hole.)
    pub fn keeps_whole_sockets(&self) -> bool {
        self.states.is_empty() && self.pids.is_empty() && self.comm.is_none() && self.cgroup.is_none()
    }

    /// Whether `owner` passes `--comm`: its command name is one of the names given (an
    /// unknown owner passes only when no name is given).
    pub fn matches_comm(&self, owner: Option<&Owner>) -> bool {
        let Some(first) = &self.comm else { return true };
        let named = |c: &String| owner.is_some_and(|o| o.comm.as_bytes() == &c.as_bytes()[..c.len().min(15)]);
        named(first) || self.more_comms.iter().any(named)
    }

    /// Whether the kernel program applies `--comm` itself: it matches one name. With more,
    /// it lets every owner through and the live engine matches the names.
    pub fn comm_in_kernel(&self) -> bool {
        self.more_comms.is_empty()
    }

    /// Whether an owner whose cgroup is at `path` passes `--cgroup` (always, without it).
    /// The kernel program decides this for transitions; replays and the inventory ask here,
    /// with the path the cgroup's id resolved to.
    pub fn matches_cgroup(&self, path: Option<&str>) -> bool {
        self.cgroup.as_ref().is_none_or(|c| path.is_some_and(|p| c.contains(p)))
    }

    /// Whether a socket from the inventory passes the filter, by the rules the kernel
    /// program applies to transitions (its state counts as both ends of a transition).
    pub fn matches_socket(&self, s: &SocketRecord) -> bool {
        self.family.is_none_or(|f| f == s.family)
            && (self.states.is_empty() || self.states.contains(&s.state))
            && (self.pids.is_empty() || s.owner.is_some_and(|o| self.pids.contains(&o.pid)))
            && self.matches_comm(s.owner.as_ref())
            && self.matches_ends(&s.ends)
    }

    /// Whether a transition passes the filter, by the rules the kernel program applies
    /// (`passes` in `portrace-ebpf/src/program/filter.rs`): the family; a state filter matching the
    /// state left or the state entered; the owner's pid and command name, which need a known
    /// owner; the local, remote and either-end ports; an endpoint in one of the networks.
    /// Every condition given must hold, and within one flag any value does.
    ///
    /// The kernel program also holds a `CLOSE -> SYN_SENT` whose local port is not bound
    /// yet (`sport` 0) until the socket's next transition shows the port; a caller
    /// replaying transitions does that itself, judging the held transition without the
    /// local-port conditions (`lports` and `ports` cleared), then again with the port the
    /// next transition shows, and releasing it only if it passes then.
    pub fn matches_transition(&self, t: &Transition) -> bool {
        let owner = t.owner.as_ref();
        self.family.is_none_or(|f| f == t.family)
            && (self.states.is_empty() || self.states.contains(&t.oldstate) || self.states.contains(&t.newstate))
            && (self.pids.is_empty() || owner.is_some_and(|o| self.pids.contains(&o.pid)))
            && self.matches_comm(owner)
            && self.matches_ends(&t.ends)
    }

    /// The conditions on a socket's endpoints: the local, remote and either-end ports, an
    /// address in one of the networks, the network namespace.
    fn matches_ends(&self, e: &Endpoints) -> bool {
        let any = |list: &[u16], port: u16| list.is_empty() || list.contains(&port);
        any(&self.lports, e.sport)
            && any(&self.rports, e.dport)
            && (self.ports.is_empty() || self.ports.contains(&e.sport) || self.ports.contains(&e.dport))
            && (self.nets.is_empty() || self.nets.iter().any(|n| n.contains(e.saddr) || n.contains(e.daddr)))
            && (self.netns.is_empty() || self.netns.contains(&e.netns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::parse_port;

    #[test]
    fn ports_out_of_range_say_so() {
        assert_eq!(parse_port("8080"), Ok(8080));
        assert_eq!(parse_port("65535"), Ok(65535));
        assert_eq!(parse_port("70000").unwrap_err(), "port 70000 is out of range: ports are 1 to 65535");
        assert_eq!(parse_port("0").unwrap_err(), "port 0 is out of range: ports are 1 to 65535");
        assert_eq!(parse_port("http").unwrap_err(), "'http' is not a port number (1 to 65535)");
        assert!(parse_port("-1").is_err());
    }

    #[test]
    fn networks_parse_and_reject_bad_prefixes() {
        let n: IpNet = "10.1.2.0/24".parse().unwrap();
        assert_eq!(n, IpNet { addr: "10.1.2.0".parse().unwrap(), prefix_len: 24 });
        assert_eq!("::1".parse::<IpNet>().unwrap().prefix_len, 128);
        assert_eq!("127.0.0.1".parse::<IpNet>().unwrap().prefix_len, 32);
        let err = "10.0.0.0/33".parse::<IpNet>().unwrap_err();
        assert_eq!(err, "prefix length '/33' is out of range for an IPv4 address (0 to 32)");
        assert!("2001:db8::/129".parse::<IpNet>().unwrap_err().contains("IPv6"));
        assert!("10.0.0/8".parse::<IpNet>().unwrap_err().contains("'10.0.0' is not an IP address"));
        assert!("10.0.0.0/x".parse::<IpNet>().is_err());
    }

    #[test]
    fn networks_match_like_the_kernel_program() {
        let n: IpNet = "10.1.2.0/24".parse().unwrap();
        assert!(n.contains("10.1.2.200".parse().unwrap()));
        assert!(!n.contains("10.1.3.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.2.3".parse().unwrap()), "v4-mapped is IPv4");
        assert!(!n.contains("2001:db8::1".parse().unwrap()));
        let everything: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(everything.contains("192.0.2.1".parse().unwrap()));
        assert!(!everything.contains("2001:db8::1".parse().unwrap()), "/0 of IPv4 is all of IPv4 only");
        let v6: IpNet = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        let all6: IpNet = "::/0".parse().unwrap();
        assert!(all6.contains("2001:db9::1".parse().unwrap()));
    }

    #[test]
    fn cgroup_paths_are_taken_under_the_mount_and_matched_by_component() {
        let parse = |t: &str| CgroupFilter::parse(t).map(|c| c.path);
        assert_eq!(parse("/sys/fs/cgroup/system.slice").unwrap(), "/system.slice");
        assert_eq!(parse("/sys/fs/cgroup/unified/system.slice/").unwrap(), "/system.slice");
        assert_eq!(parse("/system.slice//nginx.service").unwrap(), "/system.slice/nginx.service");
        assert_eq!(parse("/sys/fs/cgroup").unwrap(), "/");
        assert!(parse("/system.slice/../..").unwrap_err().contains("may not contain '..'"));
        assert!(parse("").unwrap_err().contains("is not a cgroup path"));
        assert!(parse("a\0b").unwrap_err().contains("is not a cgroup path"));
        let slice = CgroupFilter::parse("/system.slice").unwrap();
        assert!(slice.contains("/system.slice"));
        assert!(slice.contains("/system.slice/nginx.service"));
        assert!(!slice.contains("/system.slicex/nginx.service"), "a sibling that starts alike");
        assert!(!slice.contains("/user.slice"));
        assert!(CgroupFilter::parse("/").unwrap().contains("/anything"));
        let spec = FilterSpec { cgroup: Some(slice), ..FilterSpec::default() };
        assert!(spec.matches_cgroup(Some("/system.slice/a.service")));
        assert!(!spec.matches_cgroup(None), "an owner whose cgroup is unknown does not pass");
        assert!(FilterSpec::default().matches_cgroup(None));
        assert!(!spec.keeps_whole_sockets());
    }

    #[test]
    fn netns_values_are_numbers_or_valid_names() {
        assert_eq!(parse_netns("4026531840"), Ok(4026531840));
        assert!(parse_netns("0").unwrap_err().contains("does not exist"));
        for bad in ["a/b", "..", ".", "", "x\0y"] {
            assert!(parse_netns(bad).unwrap_err().contains("neither a network namespace's inode number"), "{bad:?}");
        }
        assert!(parse_netns(&"n".repeat(256)).is_err());
        assert!(crate::netns_info::valid_name("blue-1"));
    }

    #[test]
    fn kernel_filter_carries_every_value() {
        let spec = FilterSpec {
            lports: vec![80, 443],
            rports: vec![5432],
            ports: vec![],
            nets: vec!["192.168.0.0/16".parse().unwrap()],
            pids: vec![42],
            comm: Some("postgres".into()),
            more_comms: Vec::new(),
            family: Some(Family::Ipv4),
            states: vec![TcpState::CloseWait, TcpState::Listen],
            cgroup: Some(CgroupFilter { path: "/system.slice".into(), given: "/system.slice".into(), id: 77, level: 1 }),
            netns: vec![4026531840, 4026532001],
        };
        let f = spec.to_kernel().unwrap();
        assert_eq!((f.cgroup_id, f.cgroup_level, f.n_netns), (77, 1, 2));
        assert_eq!(f.netns[..2], [4026531840, 4026532001]);
        assert_eq!((f.n_lports, &f.lports[..2]), (2, &[80, 443][..]));
        assert_eq!((f.n_rports, f.rports[0]), (1, 5432));
        assert_eq!(f.n_ports, 0);
        assert_eq!((f.n_pids, f.pids[0]), (1, 42));
        assert_eq!(f.family, AF_INET);
        assert_eq!(f.states, 1 << 8 | 1 << 10);
        assert_eq!(f.hold_unbound, 1, "a local-port filter holds unbound SYN_SENT");
        assert_eq!(f.n_nets, 1);
        assert_eq!((f.match_comm, &f.comm[..9]), (1, &b"postgres\0"[..]));
        assert_eq!(&f.nets[0].addr[10..], &[0xff, 0xff, 192, 168, 0, 0]);
        assert_eq!(&f.nets[0].mask[..], &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0][..]);
    }

    #[test]
    fn inventory_sockets_match_like_transitions() {
        use crate::record::{Comm, Owner, OwnerSource, Timestamp};
        let socket = SocketRecord {
            time: Timestamp { mono_ns: 0, unix_ns: 0 },
            socket: 1,
            family: Family::Ipv4,
            ends: Endpoints {
                saddr: "10.0.0.1".parse().unwrap(),
                sport: 443,
                daddr: "10.0.0.9".parse().unwrap(),
                dport: 50000,
                netns: 1,
            },
            state: TcpState::Established,
            owner: Some(Owner { pid: 7, comm: Comm::new("nginx"), source: OwnerSource::Inventory, cgroup: 0 }),
            inode: 1,
            uid: 0,
            cookie: 1,
        };
        let yes = |spec: FilterSpec| assert!(spec.matches_socket(&socket), "{spec:?}");
        let no = |spec: FilterSpec| assert!(!spec.matches_socket(&socket), "{spec:?}");
        yes(FilterSpec::default());
        yes(FilterSpec { lports: vec![443], ..Default::default() });
        no(FilterSpec { lports: vec![50000], ..Default::default() });
        yes(FilterSpec { ports: vec![50000], ..Default::default() });
        yes(FilterSpec { nets: vec!["10.0.0.8/29".parse().unwrap()], ..Default::default() });
        no(FilterSpec { nets: vec!["10.1.0.0/16".parse().unwrap()], ..Default::default() });
        yes(FilterSpec { pids: vec![7], comm: Some("nginx".into()), ..Default::default() });
        no(FilterSpec { comm: Some("apache2".into()), ..Default::default() });
        no(FilterSpec { family: Some(Family::Ipv6), ..Default::default() });
        no(FilterSpec { states: vec![TcpState::Listen], ..Default::default() });
    }

    #[test]
    fn transitions_match_like_the_kernel_program() {
        use crate::record::{Comm, Owner, OwnerSource, Timestamp};
        let t = Transition::example(1, TcpState::SynRecv, TcpState::Established)
            .at(Timestamp { mono_ns: 0, unix_ns: 0 })
            .on_cpu(0, Comm::new("swapper/0"))
            .between(("10.0.0.1".parse().unwrap(), 443), ("10.0.0.9".parse().unwrap(), 50000))
            .owned_by(Some(Owner { pid: 7, comm: Comm::new("nginx"), source: OwnerSource::Listener, cgroup: 0 }))
            .in_netns(1);
        let yes = |spec: FilterSpec| assert!(spec.matches_transition(&t), "{spec:?}");
        let no = |spec: FilterSpec| assert!(!spec.matches_transition(&t), "{spec:?}");
        yes(FilterSpec::default());
        yes(FilterSpec { states: vec![TcpState::SynRecv], ..Default::default() });
        yes(FilterSpec { states: vec![TcpState::Listen, TcpState::Established], ..Default::default() });
        no(FilterSpec { states: vec![TcpState::Listen], ..Default::default() });
        yes(FilterSpec { lports: vec![80, 443], rports: vec![50000], ..Default::default() });
        no(FilterSpec { lports: vec![50000], ..Default::default() });
        no(FilterSpec { rports: vec![443], ..Default::default() });
        yes(FilterSpec { ports: vec![50000], ..Default::default() });
        no(FilterSpec { ports: vec![80], ..Default::default() });
        yes(FilterSpec { nets: vec!["10.0.0.8/29".parse().unwrap()], ..Default::default() });
        yes(FilterSpec { nets: vec!["::ffff:10.0.0.1".parse().unwrap()], ..Default::default() });
        no(FilterSpec { nets: vec!["10.1.0.0/16".parse().unwrap()], ..Default::default() });
        yes(FilterSpec { pids: vec![3, 7], comm: Some("nginx".into()), ..Default::default() });
        no(FilterSpec { pids: vec![0], ..Default::default() });
        no(FilterSpec { comm: Some("swapper/0".into()), ..Default::default() });
        no(FilterSpec { family: Some(Family::Ipv6), ..Default::default() });
        let unowned = Transition { owner: None, ..t.clone() };
        assert!(!FilterSpec { pids: vec![7], ..Default::default() }.matches_transition(&unowned));
        assert!(!FilterSpec { comm: Some("nginx".into()), ..Default::default() }.matches_transition(&unowned));
    }

    #[test]
    fn an_empty_spec_keeps_everything() {
        assert_eq!(FilterSpec::default().to_kernel().unwrap(), Filter::ALL);
    }

    #[test]
    fn too_many_values_are_refused_by_name() {
        let spec = FilterSpec { ports: (1..=9).collect(), ..Default::default() };
        assert_eq!(
            spec.to_kernel().unwrap_err().to_string(),
            "too many --port values (9): portrace filters on at most 8"
        );
    }

    #[test]
    fn several_command_names_match_any_and_are_left_to_userspace() {
        use crate::record::{Comm, OwnerSource};
        let owned = |comm| Some(Owner { pid: 7, comm: Comm::new(comm), source: OwnerSource::Syscall, cgroup: 0 });
        let spec = FilterSpec { comm: Some("nginx".into()), more_comms: vec!["sshd".into()], ..Default::default() };
        assert!(spec.matches_comm(owned("nginx").as_ref()));
        assert!(spec.matches_comm(owned("sshd").as_ref()));
        assert!(!spec.matches_comm(owned("curl").as_ref()));
        assert!(!spec.matches_comm(None), "an unknown owner has no name to match");
        assert!(FilterSpec::default().matches_comm(None));
        let t = |comm| Transition { owner: owned(comm), ..Transition::example(1, TcpState::Close, TcpState::SynSent) };
        assert!(spec.matches_transition(&t("sshd")));
        assert!(!spec.matches_transition(&t("curl")));
        // The kernel program matches one name: with two, it lets every owner through.
        assert!(!spec.comm_in_kernel());
        assert_eq!(spec.to_kernel().unwrap().match_comm, 0);
        let one = FilterSpec { comm: Some("nginx".into()), ..Default::default() };
        assert!(one.comm_in_kernel());
        assert_eq!(one.to_kernel().unwrap().match_comm, 1);
    }
}
