//! Process and namespace details, announced once, just before the first record that
//! names them: a `process` record before the first socket or transition owned by a pid,
//! a `netns` record before the first one in a namespace. Live, the details are read from
//! /proc when first needed and remembered, so that a process that exits later is still
//! named in full; a pid seen again under another command name (an exec, or a new process
//! reusing the pid) is read again. From a recording, the recorded details are held until a
//! record that passes the filter names them, so a filtered replay announces exactly the
//! processes its records name, in the order a live run with that filter would have.
//! What a recording makes it hold is bounded: [`HELD_PROCESSES_MAX`] processes and
//! [`HELD_BYTES_MAX`] bytes of their details, [`HELD_NAMESPACES_MAX`] namespaces; past
//! those the oldest held are dropped and counted ([`Details::dropped`]), and their
//! processes are then announced without details.

use std::collections::VecDeque;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::io;

use crate::netns_info;
use crate::process_info::{held_bytes, ProcessReader};
use crate::cgroup::{CgroupInfo, Resolver};
use crate::record::{Comm, NetnsInfo, Owner, ProcessInfo, Timestamp};

/// Processes remembered at most; past this the memory is cleared and processes are read
/// (and announced) again when next seen.
const MAX_PROCESSES: usize = 1 << 18;

/// Programs read at their exec and not seen owning a socket yet, kept at most (a few KB
/// each). An exec read helps a process that connects and exits within milliseconds of
/// starting; past this many, those read are forgotten, and read again when first seen.
const MAX_PREFETCHED: usize = 8192;

/// Recorded processes held at most, waiting for a record that names them.
pub const HELD_PROCESSES_MAX: usize = 8192;

/// Bytes of recorded process details held at most (as [`held_bytes`] counts them): a
/// process's details are at most about 21 KB, so the count bounds them first unless they
/// are large.
pub const HELD_BYTES_MAX: usize = 64 << 20;

/// Recorded namespaces held at most.
pub const HELD_NAMESPACES_MAX: usize = 65_536;

/// A detail to write before a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail<'a> {
    Process(&'a ProcessInfo),
    Netns(&'a NetnsInfo),
    Cgroup(&'a CgroupInfo),
}

/// Cgroups remembered as announced at most, live; past this the memory is cleared and
/// cgroups are announced again when next seen. Recorded cgroups held at most, likewise.
const MAX_CGROUPS: usize = 1 << 16;

/// Where details come from.
enum Source {
    /// Read from this host's /proc (and cgroup paths from its cgroup2 hierarchy).
    Live { reader: ProcessReader, cgroups: Resolver },
    /// Given by a recording's records.
    Recorded,
}

pub struct Details {
    source: Source,
    /// Live: the command name each pid was last read under.
    read_as: HashMap<u32, Comm>,
    /// Live: namespaces already read.
    netns_read: HashSet<u32>,
    /// Details known and not announced yet.
    processes: HashMap<u32, ProcessInfo>,
    namespaces: HashMap<u32, NetnsInfo>,
    /// Live: cgroups already read. Both: cgroups known and not announced yet.
    cgroup_read: HashSet<u64>,
    cgroups: HashMap<u64, CgroupInfo>,
    /// Recorded: the pids and namespaces held, oldest first (with stale entries for those
    /// since announced or replaced, skipped when met), and the bytes held.
    process_order: VecDeque<(u32, Timestamp)>,
    netns_order: VecDeque<u32>,
    bytes: usize,
    dropped: u64,
}

impl Details {
    /// Details read from this host's /proc.
    pub fn live() -> Details {
        Details::with_source(Source::Live { reader: ProcessReader::default(), cgroups: Resolver::live() })
    }

    /// Live details read through `reader` (tests point it at a fake /proc).
    pub fn live_from(reader: ProcessReader) -> Details {
        Details::with_source(Source::Live { reader, cgroups: Resolver::default() })
    }

    /// Details given by a recording's `process` and `netns` records.
    pub fn recorded() -> Details {
        Details::with_source(Source::Recorded)
    }

    fn with_source(source: Source) -> Details {
        Details {
            source,
            read_as: HashMap::new(),
            netns_read: HashSet::new(),
            processes: HashMap::new(),
            namespaces: HashMap::new(),
            cgroup_read: HashSet::new(),
            cgroups: HashMap::new(),
            process_order: VecDeque::new(),
            netns_order: VecDeque::new(),
            bytes: 0,
            dropped: 0,
        }
    }

    /// A recorded `process` record: held until a record names its pid. Past the bounds,
    /// the oldest held are dropped.
    pub fn recorded_process(&mut self, p: ProcessInfo) {
        self.bytes += held_bytes(&p);
        self.process_order.push_back((p.pid, p.time));
        if let Some(old) = self.processes.insert(p.pid, p) {
            self.bytes -= held_bytes(&old);
        }
        while self.processes.len() > HELD_PROCESSES_MAX || self.bytes > HELD_BYTES_MAX {
            let Some((pid, time)) = self.process_order.pop_front() else { break };
            if self.processes.get(&pid).is_some_and(|p| p.time == time) {
                let old = self.processes.remove(&pid).expect("just found");
                self.bytes -= held_bytes(&old);
                self.dropped += 1;
            }
        }
        // Entries of processes announced or replaced: dropped when they outnumber the rest.
        if self.process_order.len() > 2 * self.processes.len() + 64 {
            let processes = &self.processes;
            self.process_order.retain(|(pid, time)| processes.get(pid).is_some_and(|p| p.time == *time));
        }
    }

    /// A recorded `netns` record: held until a record is in its namespace. Past the
    /// bound, the oldest held are dropped.
    pub fn recorded_netns(&mut self, n: NetnsInfo) {
        if self.namespaces.insert(n.netns, n).is_none() {
            self.netns_order.push_back(n.netns);
        }
        while self.namespaces.len() > HELD_NAMESPACES_MAX {
            let Some(netns) = self.netns_order.pop_front() else { break };
            if self.namespaces.remove(&netns).is_some() {
                self.dropped += 1;
            }
        }
        if self.netns_order.len() > 2 * self.namespaces.len() + 64 {
            let namespaces = &self.namespaces;
            self.netns_order.retain(|netns| namespaces.contains_key(netns));
        }
    }

    /// A recorded `cgroup` record: held until a record names its id. Past the bound, every
    /// held one is dropped (and counted).
    pub fn recorded_cgroup(&mut self, g: CgroupInfo) {
        if self.cgroups.len() >= MAX_CGROUPS && !self.cgroups.contains_key(&g.id) {
            self.dropped += self.cgroups.len() as u64;
            self.cgroups.clear();
        }
        self.cgroups.insert(g.id, g);
    }

    /// Recorded details dropped at the bounds before a record named them.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Recorded processes held, and the bytes of their details.
    pub fn held(&self) -> (usize, usize) {
        (self.processes.len(), self.bytes)
    }

    /// Process `pid` started the program `comm` (exec): reads its details now, while it
    /// runs, for when it is first seen owning a socket. Live only.
    pub fn exec(&mut self, pid: u32, comm: Comm, time: Timestamp) {
        if let Source::Live { reader, .. } = &mut self.source {
            let info = reader.read(pid, comm, time);
            if self.read_as.len() >= MAX_PROCESSES {
                self.read_as.clear();
            }
            self.read_as.insert(pid, comm);
            self.processes.insert(pid, info);
            if self.processes.len() > MAX_PREFETCHED {
                // Mostly programs that never own a socket: forget them rather than grow.
                for pid in self.processes.keys() {
                    self.read_as.remove(pid);
                }
                self.processes.clear();
            }
        }
    }

    /// Writes, through `emit`, the details a record owned by `owner` in namespace
    /// `netns` (0: unknown) names and that were not announced yet.
    pub fn before(
        &mut self,
        owner: Option<&Owner>,
        netns: u32,
        time: Timestamp,
        mut emit: impl FnMut(Detail<'_>) -> io::Result<()>,
    ) -> io::Result<()> {
        if let Source::Live { reader, cgroups } = &mut self.source {
            if let Some(id) = owner.map(|o| o.cgroup).filter(|&id| id != 0) {
                if !self.cgroup_read.contains(&id) {
                    if self.cgroup_read.len() >= MAX_CGROUPS {
                        self.cgroup_read.clear();
                    }
                    self.cgroup_read.insert(id);
                    let path = cgroups.path(id).map(|p| p.to_string());
                    self.cgroups.insert(id, CgroupInfo { time, id, path });
                }
            }
            if let Some(owner) = owner {
                if self.read_as.get(&owner.pid) != Some(&owner.comm) {
                    if self.read_as.len() >= MAX_PROCESSES {
                        self.read_as.clear();
                    }
                    self.read_as.insert(owner.pid, owner.comm);
                    self.processes.insert(owner.pid, reader.read(owner.pid, owner.comm, time));
                }
            }
            if netns != 0 && self.netns_read.insert(netns) {
                let port_range = netns_info::port_range(netns, owner.map(|o| o.pid));
                self.namespaces.insert(netns, NetnsInfo { time, netns, port_range });
            }
        }
        // Nearly always nothing is waiting: no lookup then (this runs for every record).
        if !self.namespaces.is_empty() {
            if let Some(n) = self.namespaces.remove(&netns) {
                emit(Detail::Netns(&n))?;
            }
        }
        if !self.cgroups.is_empty() {
            if let Some(g) = owner.and_then(|o| self.cgroups.remove(&o.cgroup)) {
                emit(Detail::Cgroup(&g))?;
            }
        }
        if !self.processes.is_empty() {
            if let Some(p) = owner.and_then(|o| self.processes.remove(&o.pid)) {
                if matches!(self.source, Source::Recorded) {
                    self.bytes -= held_bytes(&p);
                }
                emit(Detail::Process(&p))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::OwnerSource;
    use std::fs;
    use std::path::PathBuf;

    fn at(ns: u64) -> Timestamp {
        Timestamp { mono_ns: ns, unix_ns: i128::from(ns) }
    }

    fn owner(pid: u32, comm: &str) -> Owner {
        Owner { pid, comm: Comm::new(comm), source: OwnerSource::Syscall, cgroup: 0 }
    }

    /// A fake /proc with one process, 4242, running /usr/bin/curl.
    fn fake_proc() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("portrace-details-{}-{:?}", std::process::id(), std::thread::current().id()));
        let p = dir.join("4242");
        fs::create_dir_all(&p).unwrap();
        fs::write(p.join("status"), "Name:\tcurl\nPPid:\t1\nUid:\t0\t0\t0\t0\n").unwrap();
        fs::write(p.join("cmdline"), "curl\0http://x/\0").unwrap();
        fs::write(p.join("cgroup"), "0::/user.slice\n").unwrap();
        fs::write(dir.join("passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        dir
    }

    fn announced(details: &mut Details, owner: Option<&Owner>, netns: u32, t: u64) -> Vec<String> {
        let mut out = Vec::new();
        details
            .before(owner, netns, at(t), |d| {
                out.push(match d {
                    Detail::Process(p) => format!("process {} {} {:?}", p.pid, p.comm.to_str_lossy(), p.cmdline),
                    Detail::Netns(n) => format!("netns {}", n.netns),
                    Detail::Cgroup(g) => format!("cgroup {} {:?}", g.id, g.path),
                });
                Ok(())
            })
            .unwrap();
        out
    }

    #[test]
    fn live_processes_are_read_once_per_command_name() {
        let dir = fake_proc();
        let mut details = Details::live_from(ProcessReader::new(&dir, &dir.join("passwd")));
        let curl = owner(4242, "curl");
        let first = announced(&mut details, Some(&curl), 0, 1);
        assert_eq!(first, vec![r#"process 4242 curl Some(["curl", "http://x/"])"#]);
        assert!(announced(&mut details, Some(&curl), 0, 2).is_empty());
        // The same pid under another name: an exec, or the pid reused. Read again.
        fs::write(dir.join("4242/cmdline"), "wget\0").unwrap();
        let again = announced(&mut details, Some(&owner(4242, "wget")), 0, 3);
        assert_eq!(again, vec![r#"process 4242 wget Some(["wget"])"#]);
        // Without an owner there is nothing to announce about a process.
        assert!(announced(&mut details, None, 0, 4).is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn live_namespaces_are_read_once() {
        let own = crate::procfs::thread_netns().unwrap();
        let mut details = Details::live();
        let first = announced(&mut details, None, own, 1);
        assert_eq!(first, vec![format!("netns {own}")]);
        assert!(announced(&mut details, None, own, 2).is_empty());
    }

    #[test]
    fn recorded_details_wait_for_a_record_that_names_them() {
        let mut details = Details::recorded();
        let info = |pid, comm: &str| ProcessInfo {
            time: at(1),
            pid,
            comm: Comm::new(comm),
            ppid: Some(1),
            exe: None,
            cmdline: Some(vec![comm.to_string()]),
            uid: None,
            user: None,
            cgroup: None,
            start_ticks: None,
        };
        details.recorded_process(info(10, "a"));
        details.recorded_process(info(20, "b"));
        details.recorded_netns(NetnsInfo { time: at(1), netns: 7, port_range: Some((1000, 2000)) });
        // A record of pid 20 in namespace 7 (pid 10's records were filtered out).
        let out = announced(&mut details, Some(&owner(20, "b")), 7, 2);
        assert_eq!(out, vec!["netns 7".to_string(), r#"process 20 b Some(["b"])"#.to_string()]);
        assert!(announced(&mut details, Some(&owner(20, "b")), 7, 3).is_empty());
        // A later record of the same pid: the newer details come with it.
        details.recorded_process(info(20, "c"));
        let out = announced(&mut details, Some(&owner(20, "c")), 7, 4);
        assert_eq!(out, vec![r#"process 20 c Some(["c"])"#.to_string()]);
    }

    /// A recording whose process records name processes no record owns: what is held
    /// stays within the count and the bytes, and the oldest are the ones dropped.
    #[test]
    fn recorded_details_held_are_bounded_in_count_and_bytes() {
        let big = |pid: u32| ProcessInfo {
            time: at(u64::from(pid)),
            pid,
            comm: Comm::new("big"),
            ppid: None,
            exe: Some("e".repeat(4096)),
            cmdline: Some(vec!["a".repeat(4096); 2]),
            uid: None,
            user: Some("u".repeat(4096)),
            cgroup: Some("c".repeat(4096)),
            start_ticks: None,
        };
        let mut details = Details::recorded();
        let n = 4 * HELD_PROCESSES_MAX as u32;
        for pid in 1..=n {
            details.recorded_process(big(pid));
            let (count, bytes) = details.held();
            assert!(count <= HELD_PROCESSES_MAX && bytes <= HELD_BYTES_MAX, "{count} {bytes}");
        }
        let (count, bytes) = details.held();
        assert_eq!(u64::from(n) - count as u64, details.dropped());
        assert!(bytes > HELD_BYTES_MAX - 2 * held_bytes(&big(1)), "held up to the bound: {bytes}");
        // The newest are kept, the oldest dropped.
        assert_eq!(announced(&mut details, Some(&owner(n, "big")), 0, 1).len(), 1);
        assert!(announced(&mut details, Some(&owner(1, "big")), 0, 1).is_empty());
        assert_eq!(details.held().1, bytes - held_bytes(&big(n)));

        for netns in 1..=HELD_NAMESPACES_MAX as u32 + 10 {
            details.recorded_netns(NetnsInfo { time: at(1), netns, port_range: None });
        }
        assert_eq!(details.namespaces.len(), HELD_NAMESPACES_MAX);
        assert!(announced(&mut details, None, 10, 1).is_empty(), "the oldest dropped");
        assert_eq!(announced(&mut details, None, 11, 1), vec!["netns 11".to_string()]);
    }
}
