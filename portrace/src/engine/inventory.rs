//! The sockets that existed before the trace: listed from the kernel ([`take`]), their
//! owners' cgroups read ([`adopt_cgroups`]), handed to the timeline and to the kernel
//! program (`adopt`) so that their later transitions name their owners; and
//! `--snapshot`, the listing alone ([`snapshot`]).

use std::collections::HashMap;
use std::io;

use anyhow::Context as _;

use crate::clock::Clock;
use crate::filter::FilterSpec;
use crate::loader::Tracer;
use crate::output::{Sink, Start};
use crate::record::{Owner, SocketRecord, Timestamp};
use crate::summary::Summary;
use crate::tcp_state::TcpState;
use crate::timeline::Timeline;
use crate::{inventory, preflight};

/// The sockets that exist now; a failure to take the inventory is reported, not fatal.
pub fn take(time: Timestamp) -> Vec<SocketRecord> {
    let inventory = match inventory::collect() {
        Ok(inventory) => inventory,
        Err(e) => {
            eprintln!("portrace: cannot list the existing sockets ({e}); only new transitions will be shown");
            return Vec::new();
        }
    };
    for warning in &inventory.warnings {
        eprintln!("portrace: {warning}");
    }
    inventory
        .sockets
        .into_iter()
        .map(|s| s.to_record(time, 0))
        .collect()
}

/// Sets the cgroup of each inventory socket's owner, from the cgroup /proc/PID/cgroup
/// names now, and returns those cgroups' paths by id.
pub fn adopt_cgroups(sockets: &mut [SocketRecord]) -> HashMap<u64, String> {
    let resolver = crate::cgroup::Resolver::live();
    let mut by_pid: HashMap<u32, u64> = HashMap::new();
    let mut paths = HashMap::new();
    for owner in sockets.iter_mut().filter_map(|s| s.owner.as_mut()) {
        owner.cgroup = *by_pid.entry(owner.pid).or_insert_with(|| {
            let path = std::fs::read(format!("/proc/{}/cgroup", owner.pid))
                .ok()
                .and_then(|raw| crate::process_info::parse_cgroup(&raw));
            let Some(path) = path else { return 0 };
            let id = resolver.id(&path).unwrap_or(0);
            if id != 0 {
                paths.insert(id, path);
            }
            id
        });
    }
    paths
}

/// Whether a socket's owner is in the cgroup `filter` names, by the paths
/// [`adopt_cgroups`] found.
pub fn in_cgroup(filter: &FilterSpec, paths: &HashMap<u64, String>, s: &SocketRecord) -> bool {
    filter.matches_cgroup(s.owner.and_then(|o| paths.get(&o.cgroup)).map(String::as_str))
}

/// Hands the inventory to the timeline, and each owned socket's owner (a listener's for
/// its port too) to the kernel program.
pub(super) fn adopt(
    sockets: &mut [SocketRecord],
    filter: &FilterSpec,
    cgroup_paths: &HashMap<u64, String>,
    timeline: &mut Timeline,
    tracer: &mut Tracer,
) {
    let owner_in_filter_cgroup =
        |o: &Owner| filter.matches_cgroup(cgroup_paths.get(&o.cgroup).map(String::as_str)) && filter.cgroup.is_some();
    for s in sockets {
        timeline.adopt(s);
        if let (Some(owner), true) = (s.owner, s.cookie != 0) {
            let in_cgroup = owner_in_filter_cgroup(&owner);
            let mut added = tracer.add_inventory_owner(s.cookie, &owner, in_cgroup);
            if s.state == TcpState::Listen && added.is_ok() {
                added = tracer.add_inventory_listener(s.ends.netns, s.ends.sport, &owner, in_cgroup);
            }
            if let Err(e) = added {
                eprintln!("portrace: {e:#}; later transitions of older sockets may lack their owner");
                break;
            }
        }
    }
}

/// The host's name, for the start record.
pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// `--snapshot`: the sockets `filter` keeps, written to `sink` between a start and an end.
pub fn snapshot(filter: &FilterSpec, sink: &mut dyn Sink) -> anyhow::Result<()> {
    let clock = Clock::capture();
    let start = clock.now();
    let mut sockets = take(start);
    for (id, s) in sockets.iter_mut().enumerate() {
        s.socket = id as u64 + 1;
    }
    let kernel = preflight::KernelRelease::current().map(|k| k.to_string()).unwrap_or_default();
    let resolved = match &filter.cgroup {
        Some(c) => FilterSpec { cgroup: Some(c.resolve()?), ..filter.clone() },
        None => filter.clone(),
    };
    let cgroup_paths = adopt_cgroups(&mut sockets);
    let write = || -> io::Result<()> {
        let host = hostname();
        // No program is loaded: no feature is known.
        sink.start(&Start { time: start, host, kernel, features: Default::default() })?;
        for s in sockets.iter().filter(|s| filter.matches_socket(s) && in_cgroup(&resolved, &cgroup_paths, s)) {
            sink.socket(s)?;
        }
        let mut summary = Summary::new(start);
        summary.finish(clock.now());
        sink.end(&summary)?;
        sink.flush()
    };
    match write() {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing output"),
    }
}
