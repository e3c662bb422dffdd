//! [`RotatingSink`]: the output sink of the flight recorder. It writes the records into
//! the current file through a [`FileSink`], and when the [`Policy`] says the file is due
//! (checked at each flush, after a whole drain of the ring buffer is written) it rotates:
//!
//! 1. the current file gets its end record, with the counts of its own span (the
//!    transitions and losses written into it), and is synced;
//! 2. retention removes the oldest files beyond `--keep`, this one counted, and it is
//!    renamed from `.ptr.part` to `.ptr` (so there are never more than `--keep`);
//! 3. a new file is created under a hidden name, gets its header, a start record at the
//!    rotation time, and an inventory: a `socket` record for each socket the stream shows
//!    open ([`OpenSockets`]), each preceded by its owner's and namespace's details; it is
//!    then renamed to `.ptr.part`.
//!
//! So every visible file has a header, every finished file is whole on its own, and a
//! transition is in exactly one file: the one being written when it was drained. Details
//! (`process`, `netns` records) are remembered, within bounds, and written again in a
//! later file before the first record that names them there.
//!
//! A write that fails (a full disk) stops the recorder: the file being written is cut
//! back to its last complete block, and every later call returns the error, which ends
//! the run with a message naming the file. Files already finished are not touched.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::dir::Dir;
use super::open_sockets::OpenSockets;
use super::policy::{FileName, Namer, Policy, Stage};
use crate::output::{Sink, Start};
use crate::process_info::held_bytes;
use crate::record::{CgroupInfo, Lost, NetnsInfo, Owner, ProcessInfo, SocketRecord, Timestamp, Transition};
use crate::summary::Summary;
use crate::destination::RunSetup;
use crate::tracefile::{FileSink, WriteOptions};

/// Processes whose details are remembered at most, and their bytes; past either, the
/// memory is cleared and later files name those processes without details.
const REMEMBERED_PROCESSES: usize = 8192;
const REMEMBERED_BYTES: usize = 64 << 20;
const REMEMBERED_NAMESPACES: usize = 65_536;
const REMEMBERED_CGROUPS: usize = 16_384;
/// Names tried when a file name is taken (by a file planted in the directory).
const NAME_ATTEMPTS: usize = 64;

/// The file being written.
struct Current {
    sink: FileSink<File>,
    name: FileName,
    /// When its span started.
    opened: Timestamp,
    /// The latest time of a record written into it.
    last: Timestamp,
    summary: Summary,
    written: Arc<AtomicU64>,
    /// Pids, namespaces and cgroups whose details are in this file already.
    processes: HashSet<u32>,
    namespaces: HashSet<u32>,
    cgroups: HashSet<u64>,
}

/// Details of processes, namespaces and cgroups seen so far, to repeat in later files.
#[derive(Default)]
struct Remembered {
    processes: HashMap<u32, ProcessInfo>,
    bytes: usize,
    namespaces: HashMap<u32, NetnsInfo>,
    cgroups: HashMap<u64, CgroupInfo>,
}

impl Remembered {
    fn process(&mut self, p: &ProcessInfo) {
        if self.processes.len() >= REMEMBERED_PROCESSES || self.bytes >= REMEMBERED_BYTES {
            self.processes.clear();
            self.bytes = 0;
        }
        self.bytes += held_bytes(p);
        if let Some(old) = self.processes.insert(p.pid, p.clone()) {
            self.bytes = self.bytes.saturating_sub(held_bytes(&old));
        }
    }

    fn netns(&mut self, n: &NetnsInfo) {
        if self.namespaces.len() >= REMEMBERED_NAMESPACES {
            self.namespaces.clear();
        }
        self.namespaces.insert(n.netns, *n);
    }

    fn cgroup(&mut self, g: &CgroupInfo) {
        if self.cgroups.len() >= REMEMBERED_CGROUPS {
            self.cgroups.clear();
        }
        self.cgroups.insert(g.id, g.clone());
    }
}

/// A sink that writes a rolling series of recordings into a directory.
pub struct RotatingSink {
    dir: Arc<Dir>,
    policy: Policy,
    options: WriteOptions,
    setup: RunSetup,
    namer: Namer,
    /// The run's start record: each file's start repeats it at the file's own time.
    run_start: Option<Start>,
    current: Option<Current>,
    open: OpenSockets,
    details: Remembered,
    /// The latest trace time the engine reported ([`Sink::tick`]).
    now: Option<Timestamp>,
    /// Bytes written into every file so far, for a progress display.
    total: Arc<AtomicU64>,
    /// Bytes of the files already closed.
    closed_bytes: u64,
    /// The error that stopped the recorder, repeated to every later call.
    failed: Option<(io::ErrorKind, String)>,
    ended: bool,
}

impl RotatingSink {
    /// A sink whose first file, `file`, was created as `name` (stage [`Stage::Creating`])
    /// in `dir`; `total` counts the bytes written into all files.
    #[allow(clippy::too_many_arguments, reason = "one constructor, called once, by the flight recorder")]
    pub(super) fn new(
        dir: Arc<Dir>,
        policy: Policy,
        options: WriteOptions,
        setup: RunSetup,
        namer: Namer,
        file: File,
        name: FileName,
        total: Arc<AtomicU64>,
    ) -> RotatingSink {
        let mut sink = RotatingSink {
            dir,
            policy,
            options,
            setup,
            namer,
            run_start: None,
            current: None,
            open: OpenSockets::default(),
            details: Remembered::default(),
            now: None,
            total,
            closed_bytes: 0,
            failed: None,
            ended: false,
        };
        let zero = Timestamp { mono_ns: 0, unix_ns: 0 };
        sink.current = Some(sink.current_for(file, name, zero));
        sink
    }

    fn current_for(&self, file: File, name: FileName, opened: Timestamp) -> Current {
        let shown = self.dir.shown(&name.at(Stage::Open).render());
        let sink = FileSink::new(file, shown, self.setup.clone(), self.options).syncing(|f| f.sync_data());
        let written = sink.bytes_written();
        Current {
            sink,
            name,
            opened,
            last: opened,
            summary: Summary::new(opened),
            written,
            processes: HashSet::new(),
            namespaces: HashSet::new(),
            cgroups: HashSet::new(),
        }
    }

    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some((kind, message)) => Err(io::Error::new(*kind, message.clone())),
            None if self.ended => Err(io::Error::other("the flight recording has ended")),
            None => Ok(()),
        }
    }

    fn current(&mut self) -> io::Result<&mut Current> {
        self.check()?;
        self.current.as_mut().ok_or_else(|| io::Error::other("the flight recorder has no file open"))
    }

    /// Passes `result` on; an error stops the recorder ([`RotatingSink::stop`]).
    fn guard<T>(&mut self, result: io::Result<T>) -> io::Result<T> {
        match result {
            Ok(v) => Ok(v),
            Err(e) if self.failed.is_some() => Err(e),
            Err(e) => Err(self.stop(e)),
        }
    }

    /// Stops the recorder after `e`: the file being written is cut back to its last
    /// complete block (or removed, if it had no visible name yet); the error, saying so,
    /// is kept for every later call.
    fn stop(&mut self, e: io::Error) -> io::Error {
        let dir = self.dir.path().display().to_string();
        let fate = match self.current.take() {
            Some(cur) if cur.name.stage == Stage::Creating => {
                drop(cur.sink);
                let _ = self.dir.remove(&cur.name.render());
                "the file it was starting was removed".to_string()
            }
            Some(cur) => {
                let complete = cur.written.load(Ordering::Relaxed);
                let file = cur.sink.into_inner();
                // Whatever of the failed block reached the disk goes: the file ends at its
                // last complete block, as a reader reads it anyway.
                let _ = file.set_len(complete).and_then(|()| file.sync_all());
                format!(
                    "{} reads up to its last complete block (byte {complete})",
                    self.dir.shown(&cur.name.render())
                )
            }
            None => "no file was open".to_string(),
        };
        let message = format!(
            "{e}; the flight recorder stops: the finished files in {dir} are whole, and {fate}; \
             free space in {dir} (or lower --keep or --max-size) and start it again"
        );
        self.failed = Some((e.kind(), message.clone()));
        io::Error::new(e.kind(), message)
    }

    /// Writes the details of `owner` and of `netns` into the current file, if they are
    /// remembered and not there yet.
    fn announce(&mut self, owner: Option<&Owner>, netns: u32) -> io::Result<()> {
        let Some(cur) = self.current.as_mut() else { return Ok(()) };
        if let Some(owner) = owner {
            if cur.processes.insert(owner.pid) {
                if let Some(p) = self.details.processes.get(&owner.pid) {
                    cur.sink.process(p)?;
                }
            }
            if owner.cgroup != 0 && cur.cgroups.insert(owner.cgroup) {
                if let Some(g) = self.details.cgroups.get(&owner.cgroup) {
                    cur.sink.cgroup(g)?;
                }
            }
        }
        if netns != 0 && cur.namespaces.insert(netns) {
            if let Some(n) = self.details.namespaces.get(&netns) {
                cur.sink.netns(n)?;
            }
        }
        Ok(())
    }

    fn note_time(&mut self, time: Timestamp) {
        if let Some(cur) = self.current.as_mut() {
            if time.mono_ns > cur.last.mono_ns {
                cur.last = time;
            }
        }
    }

    /// Ends the current file at `at` (or its last record, if later) and gives it its
    /// finished name. Returns the time it ended.
    fn close_current(&mut self, at: Timestamp) -> io::Result<Timestamp> {
        let cur = self.current()?;
        let end = if cur.last.mono_ns > at.mono_ns { cur.last } else { at };
        cur.summary.finish(end);
        let summary = cur.summary.clone();
        let ended = cur.sink.end(&summary);
        self.guard(ended)?;
        // Room is made before the file takes its finished name: never more than --keep.
        self.retain(true);
        let cur = self.current.take().expect("the current file was just ended");
        self.closed_bytes += cur.written.load(Ordering::Relaxed);
        drop(cur.sink);
        let (from, to) = (cur.name.render(), cur.name.at(Stage::Finished).render());
        if let Err(e) = self.dir.rename(&from, &to).and_then(|()| self.dir.sync()) {
            // The file is whole; only its name says otherwise.
            eprintln!("portrace: cannot rename {} to {to} ({e}); it is whole nonetheless", self.dir.shown(&from));
        }
        Ok(end)
    }

    /// Removes the recorder's files beyond `--keep`, counting the current file among them
    /// when it is `finishing`; a failure is said, not fatal.
    fn retain(&mut self, finishing: bool) {
        let current = self.current.as_ref().map(|c| c.name);
        let names = match self.dir.names() {
            Ok(names) => names,
            Err(e) => {
                eprintln!("portrace: cannot list {} to remove old recordings: {e}", self.dir.path().display());
                return;
            }
        };
        // Only regular files of this user's count: a link or a directory planted under a
        // name of the recorder's is neither removed nor counted.
        let own = names.iter().filter(|n| FileName::parse(n).is_some() && self.dir.is_own_file(n).unwrap_or(false));
        for name in self.policy.to_remove(own.map(String::as_str), current, finishing) {
            match self.dir.remove(&name) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => eprintln!("portrace: cannot remove the old recording {}: {e}", self.dir.shown(&name)),
            }
        }
        let _ = self.dir.sync();
    }

    /// Starts a new file at `at`: header, start record, inventory, then its visible name.
    fn open_next(&mut self, at: Timestamp) -> io::Result<()> {
        let mut name = self.namer.next(at.unix_ns);
        let mut attempts = 0;
        let file = loop {
            match self.dir.create(&name.render()) {
                Ok(file) => break file,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < NAME_ATTEMPTS => {
                    attempts += 1;
                    self.namer.taken(name);
                    name = self.namer.next(at.unix_ns);
                }
                Err(e) => {
                    let message = format!("cannot create {}: {e}", self.dir.shown(&name.render()));
                    return Err(self.stop(io::Error::new(e.kind(), message)));
                }
            }
        };
        self.current = Some(self.current_for(file, name, at));
        let start = Start { time: at, ..self.run_start.clone().expect("a file is rotated after the run started") };
        let written = self.start_file(&start);
        self.guard(written)?;
        self.publish()
    }

    /// Writes the header, and the inventory of the sockets open, into the current file.
    fn start_file(&mut self, start: &Start) -> io::Result<()> {
        self.current()?.sink.start(start)?;
        for s in self.open.inventory(start.time) {
            self.announce(s.owner.as_ref(), s.ends.netns)?;
            self.current()?.sink.socket(&s)?;
        }
        self.current()?.sink.flush()
    }

    /// Gives the current file, once its header is written, its visible in-progress name.
    fn publish(&mut self) -> io::Result<()> {
        let Some(cur) = self.current.as_mut() else { return Ok(()) };
        if cur.name.stage != Stage::Creating {
            return Ok(());
        }
        let (from, to) = (cur.name.render(), cur.name.at(Stage::Open).render());
        let renamed = self.dir.rename(&from, &to).and_then(|()| self.dir.sync());
        let renamed = renamed.map_err(|e| io::Error::new(e.kind(), format!("cannot rename {} to {to}: {e}", self.dir.shown(&from))));
        self.guard(renamed)?;
        let cur = self.current.as_mut().expect("still open");
        cur.name = cur.name.at(Stage::Open);
        Ok(())
    }

    fn update_total(&self) {
        let current = self.current.as_ref().map_or(0, |c| c.written.load(Ordering::Relaxed));
        self.total.store(self.closed_bytes + current, Ordering::Relaxed);
    }
}

impl Sink for RotatingSink {
    fn start(&mut self, start: &Start) -> io::Result<()> {
        self.run_start = Some(start.clone());
        let cur = self.current()?;
        cur.opened = start.time;
        cur.last = start.time;
        cur.summary = Summary::new(start.time);
        let started = cur.sink.start(start);
        self.guard(started)
    }

    fn socket(&mut self, s: &SocketRecord) -> io::Result<()> {
        self.check()?;
        self.open.socket(s);
        self.note_time(s.time);
        let written = self.announce(s.owner.as_ref(), s.ends.netns).and_then(|()| self.current()?.sink.socket(s));
        self.guard(written)
    }

    fn process(&mut self, p: &ProcessInfo) -> io::Result<()> {
        self.check()?;
        self.details.process(p);
        let cur = self.current()?;
        cur.processes.insert(p.pid);
        let written = cur.sink.process(p);
        self.guard(written)
    }

    fn netns(&mut self, n: &NetnsInfo) -> io::Result<()> {
        self.check()?;
        self.details.netns(n);
        let cur = self.current()?;
        cur.namespaces.insert(n.netns);
        let written = cur.sink.netns(n);
        self.guard(written)
    }

    fn cgroup(&mut self, g: &CgroupInfo) -> io::Result<()> {
        self.check()?;
        self.details.cgroup(g);
        let cur = self.current()?;
        cur.cgroups.insert(g.id);
        let written = cur.sink.cgroup(g);
        self.guard(written)
    }

    fn transition(&mut self, t: &Transition) -> io::Result<()> {
        self.check()?;
        self.open.transition(t);
        self.note_time(t.time);
        let written = self.announce(t.owner.as_ref(), t.ends.netns).and_then(|()| {
            let cur = self.current()?;
            cur.summary.add_transition(t);
            cur.sink.transition(t)
        });
        self.guard(written)
    }

    fn lost(&mut self, lost: &Lost) -> io::Result<()> {
        self.check()?;
        self.note_time(lost.time);
        let cur = self.current()?;
        cur.summary.add_lost(lost);
        let written = cur.sink.lost(lost);
        self.guard(written)
    }

    fn tick(&mut self, now: Timestamp) -> io::Result<()> {
        self.now = Some(now);
        Ok(())
    }

    /// Ends the last file with the counts of its own span (not the run's, which `summary`
    /// holds).
    fn end(&mut self, summary: &Summary) -> io::Result<()> {
        self.close_current(summary.end())?;
        self.ended = true;
        let untracked = self.open.untracked();
        if untracked > 0 {
            eprintln!(
                "portrace: {untracked} sockets were not remembered for the inventories of later files \
                 (more than {} open at once): files after the first may show them appearing from nowhere",
                super::open_sockets::MAX_OPEN
            );
        }
        self.update_total();
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.ended && self.failed.is_none() {
            return Ok(());
        }
        let flushed = self.current()?.sink.flush();
        self.guard(flushed)?;
        let first = self.current.as_ref().is_some_and(|c| c.name.stage == Stage::Creating);
        self.publish()?;
        if first {
            // Files of earlier runs beyond --keep, and any left half created.
            self.retain(false);
        }
        let cur = self.current.as_ref().expect("a file is open while recording");
        let bytes = cur.written.load(Ordering::Relaxed);
        if let Some(now) = self.now.filter(|now| self.policy.due(cur.opened.mono_ns, now.mono_ns, bytes)) {
            let ended = self.close_current(now)?;
            self.open_next(ended)?;
        }
        self.update_total();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::record::{Comm, Endpoints, Family, LossCause, OwnerSource};
    use crate::tcp_state::TcpState;
    use crate::tracefile::{read_all, End, ReadOptions, Record};

    const S: u64 = 1_000_000_000;
    /// Wall clock minus monotonic clock in these tests: 2026-12-07T08:19:53Z at mono 0.
    const OFFSET: i128 = 1_796_631_593_000_000_000;

    use crate::test_dir::TempDir;

    fn at(mono_ns: u64) -> Timestamp {
        Timestamp { mono_ns, unix_ns: OFFSET + i128::from(mono_ns) }
    }

    fn owner() -> Owner {
        Owner { pid: 9, comm: Comm::new("client"), source: OwnerSource::Inventory, cgroup: 42 }
    }

    fn transition(socket: u64, old: TcpState, new: TcpState, time: u64) -> Transition {
        Transition {
            time: at(time),
            pid: 9,
            comm: Comm::new("client"),
            ends: Endpoints { saddr: [10, 0, 0, 1].into(), sport: 40_000, daddr: [10, 0, 0, 2].into(), dport: 80, netns: 77 },
            owner: Some(owner()),
            ..Transition::example(socket, old, new)
        }
    }

    fn sink_in(tag: &str, keep: usize) -> (TempDir, RotatingSink) {
        let tmp = TempDir::absent("flight-sink", tag);
        let path = tmp.0.clone();
        let dir = Arc::new(Dir::open(&path).expect("the directory"));
        let mut namer = Namer::default();
        let name = namer.next(at(0).unix_ns);
        let file = dir.create(&name.render()).unwrap();
        let setup = RunSetup {
            clock_offset_ns: OFFSET,
            layout: crate::tracefs::tests::LAYOUT_6_18,
            sock_layout: None,
            filter: Default::default(),
            ring_size: 1 << 20,
            command: None,
        };
        let policy = Policy { rotate: Duration::from_secs(1), max_size: None, keep };
        let sink = RotatingSink::new(dir, policy, WriteOptions::default(), setup, namer, file, name, Arc::default());
        (tmp, sink)
    }

    fn files(dir: &TempDir) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(&dir.0).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    fn read(dir: &TempDir, name: &str) -> (crate::tracefile::Header, Vec<Record>) {
        let bytes = std::fs::read(dir.0.join(name)).unwrap();
        let (header, records, warning) = read_all(&bytes, name, ReadOptions::default()).expect("readable");
        assert_eq!(warning, None, "{name} is whole");
        (header, records)
    }

    fn end_of(records: &[Record]) -> End {
        match records.last() {
            Some(Record::End(e)) => *e,
            other => panic!("the last record is not an end: {other:?}"),
        }
    }

    #[test]
    fn each_file_stands_alone_and_together_they_hold_each_record_once() {
        let (tmp, mut sink) = sink_in("rotate", 2);
        std::fs::write(tmp.0.join("notes.txt"), b"the operator's").unwrap();
        let start = Start { time: at(0), host: "h".into(), kernel: "k".into(), features: Default::default() };
        sink.start(&start).unwrap();
        let listener = SocketRecord {
            time: at(0),
            socket: 1,
            family: Family::Ipv4,
            ends: Endpoints { saddr: [0, 0, 0, 0].into(), sport: 80, daddr: [0, 0, 0, 0].into(), dport: 0, netns: 77 },
            state: TcpState::Listen,
            owner: Some(Owner { pid: 3, comm: Comm::new("server"), source: OwnerSource::Inventory, cgroup: 0 }),
            inode: 5,
            uid: 0,
            cookie: 6,
        };
        let process = ProcessInfo {
            time: at(0),
            pid: 9,
            comm: Comm::new("client"),
            ppid: Some(1),
            exe: Some("/usr/bin/client".into()),
            cmdline: Some(vec!["client".into()]),
            uid: Some(1000),
            user: None,
            cgroup: None,
            start_ticks: Some(12),
        };
        sink.socket(&listener).unwrap();
        sink.flush().unwrap();
        assert!(files(&tmp).iter().any(|n| n.ends_with(".ptr.part")), "visible once its header is written: {:?}", files(&tmp));
        // Span 1: a connect; span 2: established, and a loss; span 3: the close; span 4: quiet.
        let cgroup = CgroupInfo { time: at(0), id: 42, path: Some("/system.slice/client.service".into()) };
        sink.process(&process).unwrap();
        sink.cgroup(&cgroup).unwrap();
        sink.transition(&transition(2, TcpState::Close, TcpState::SynSent, S / 10)).unwrap();
        sink.tick(at(S / 2)).unwrap();
        sink.flush().unwrap();
        sink.tick(at(S)).unwrap();
        sink.flush().unwrap();
        sink.transition(&transition(2, TcpState::SynSent, TcpState::Established, S + 1)).unwrap();
        sink.lost(&Lost { time: at(S + 2), count: 3, cause: LossCause::RingFull }).unwrap();
        sink.tick(at(2 * S)).unwrap();
        sink.flush().unwrap();
        sink.transition(&transition(2, TcpState::Established, TcpState::Close, 2 * S + 1)).unwrap();
        sink.tick(at(3 * S)).unwrap();
        sink.flush().unwrap();
        let names = files(&tmp);
        assert_eq!(names.iter().filter(|n| n.ends_with(".ptr")).count(), 2, "keep 2: {names:?}");
        assert_eq!(names.iter().filter(|n| n.ends_with(".part")).count(), 1, "{names:?}");
        let mut run = Summary::new(at(0));
        run.finish(at(3 * S + S / 2));
        sink.end(&run).unwrap();
        sink.flush().unwrap();

        let names = files(&tmp);
        let finished: Vec<&String> = names.iter().filter(|n| n.ends_with(".ptr")).collect();
        assert_eq!(finished.len(), 2, "{names:?}");
        assert!(names.contains(&"notes.txt".to_string()), "nothing else is touched: {names:?}");
        assert_eq!(names.len(), 3, "no file in progress or half created is left: {names:?}");
        assert_eq!(std::fs::read(tmp.0.join("notes.txt")).unwrap(), b"the operator's");

        // Spans 3 and 4 are kept (2 was removed when 4 ended).
        let (h3, r3) = read(&tmp, finished[0]);
        let (h4, r4) = read(&tmp, finished[1]);
        assert_eq!(h3.start, at(2 * S));
        let (e3, e4) = (end_of(&r3), end_of(&r4));
        assert_eq!(e3.time, h4.start, "one file starts where the one before ended");
        assert_eq!(e4.time, at(3 * S + S / 2));
        // File 3's inventory: the listener, and the connection open since span 1, with its
        // owner's details before it.
        let kinds: Vec<String> = r3
            .iter()
            .map(|r| match r {
                Record::Socket(s) => format!("socket {} {}", s.socket, s.state.name()),
                Record::Process(p) => format!("process {}", p.pid),
                Record::Netns(n) => format!("netns {}", n.netns),
                Record::Cgroup(g) => format!("cgroup {}", g.id),
                Record::Transition(t) => format!("transition {} {}", t.socket, t.newstate.name()),
                Record::Lost(l) => format!("lost {}", l.count),
                Record::End(_) => "end".into(),
            })
            .collect();
        assert_eq!(kinds, ["socket 1 LISTEN", "process 9", "cgroup 42", "socket 2 ESTABLISHED", "transition 2 CLOSE", "end"]);
        match &r3[1] {
            Record::Process(p) => assert_eq!(p, &process, "the details are repeated whole"),
            other => panic!("{other:?}"),
        }
        match &r3[2] {
            Record::Cgroup(g) => assert_eq!(g, &cgroup, "the owner's cgroup too"),
            other => panic!("{other:?}"),
        }
        assert_eq!((e3.transitions, e3.lost_total()), (1, 0), "the counts of its own span");
        let kinds4: Vec<bool> = r4.iter().map(|r| matches!(r, Record::Socket(_))).collect();
        assert_eq!(kinds4, [true, false], "span 4: the listener, then the end: {r4:?}");
        assert_eq!((e4.transitions, e4.lost_total()), (0, 0));
    }

    #[test]
    fn losses_are_counted_in_the_file_they_were_written_in() {
        let (tmp, mut sink) = sink_in("lost", 5);
        let start = Start { time: at(0), host: "h".into(), kernel: "k".into(), features: Default::default() };
        sink.start(&start).unwrap();
        sink.flush().unwrap();
        sink.lost(&Lost { time: at(10), count: 4, cause: LossCause::Skipped }).unwrap();
        sink.transition(&transition(2, TcpState::Close, TcpState::SynSent, 20)).unwrap();
        sink.tick(at(S)).unwrap();
        sink.flush().unwrap();
        sink.lost(&Lost { time: at(S + 10), count: 2, cause: LossCause::RingFull }).unwrap();
        let mut run = Summary::new(at(0));
        run.finish(at(S + S / 2));
        sink.end(&run).unwrap();
        let names = files(&tmp);
        assert_eq!(names.len(), 2, "{names:?}");
        let ends: Vec<End> = names.iter().map(|n| end_of(&read(&tmp, n).1)).collect();
        assert_eq!((ends[0].transitions, ends[0].lost_total()), (1, 4));
        assert_eq!(ends[0].lost[LossCause::Skipped.index()].1, 4);
        assert_eq!((ends[1].transitions, ends[1].lost_total()), (0, 2));
        assert_eq!(ends[1].lost[LossCause::RingFull.index()].1, 2);
    }
}
