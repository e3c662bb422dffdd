//! The recorder's side of the format: [`FileSink`], an output sink that writes a
//! recording. Records are encoded into a block buffer kept for the whole run; each
//! `flush` (the live engine flushes once per drain of the ring buffer) closes the block,
//! compresses it if asked, appends its checksum and hands it to the writer in one call.
//! Nothing is allocated per record, nothing is synced to disk per block, and a file cut at
//! any point keeps every block written before the cut. A sink given a way to sync
//! ([`FileSink::syncing`]) syncs after the header, once every [`SYNC_EVERY`] bytes, and
//! after the end record, so that a crash of the machine loses at most that much.
//!
//! Once a write fails (a full disk, an I/O error), the sink stops: every later call
//! returns the same error at once, without writing, so a caller that keeps calling it
//! cannot spin on a disk that stays full, and a half-written block is never followed by
//! another that could be mistaken for a continuation.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::codec::{self, TimeBase};
use super::{End, Header, BLOCK_HEADER_LEN, BLOCK_LZ4, BLOCK_TARGET, FORMAT_VERSION, MAGIC};
use crate::destination::RunSetup;
use crate::output::{Sink, Start, VERSION};
use crate::record::{Lost, NetnsInfo, ProcessInfo, SocketRecord, Transition};
use crate::summary::Summary;

/// Bytes written between two syncs of a recording.
pub const SYNC_EVERY: u64 = 16 << 20;

/// How a recording is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Compress each block with LZ4 (kept uncompressed when that does not make it smaller).
    pub compress: bool,
}

/// An output sink writing a recording to `W` (a file, or a `Vec<u8>` in tests).
pub struct FileSink<W: Write> {
    out: W,
    /// The destination's name for error messages.
    name: String,
    setup: RunSetup,
    options: WriteOptions,
    time: TimeBase,
    /// The records of the block being built.
    block: Vec<u8>,
    /// Scratch space for one record's body.
    body: Vec<u8>,
    /// The block as written: header, payload, checksum.
    frame: Vec<u8>,
    /// Bytes written so far, shared with whoever shows progress.
    written: Arc<AtomicU64>,
    /// Bytes written so far (the file offset of the next block).
    offset: u64,
    /// Records in the block being built, and in the blocks written.
    pending: u64,
    committed: u64,
    /// The first write error, repeated to every later call.
    failed: Option<(io::ErrorKind, String)>,
    started: bool,
    /// Makes what was written durable (`fsync`); none for a writer in memory.
    sync: Option<fn(&mut W) -> io::Result<()>>,
    /// The offset at the last sync.
    synced: u64,
}

impl<W: Write> FileSink<W> {
    /// A sink writing to `out`, which `name` names in errors (the file's path). `setup`
    /// goes into the header with what [`Sink::start`] brings.
    pub fn new(out: W, name: impl Into<String>, setup: RunSetup, options: WriteOptions) -> FileSink<W> {
        let time = TimeBase::new(setup.clock_offset_ns);
        FileSink {
            out,
            name: name.into(),
            setup,
            options,
            time,
            block: Vec::with_capacity(BLOCK_TARGET + 4096),
            body: Vec::with_capacity(256),
            frame: Vec::with_capacity(BLOCK_TARGET + 4096),
            written: Arc::new(AtomicU64::new(0)),
            offset: 0,
            pending: 0,
            committed: 0,
            failed: None,
            started: false,
            sync: None,
            synced: 0,
        }
    }

    /// Syncs the writer with `sync` after the header, every [`SYNC_EVERY`] bytes and at
    /// the end.
    pub fn syncing(mut self, sync: fn(&mut W) -> io::Result<()>) -> FileSink<W> {
        self.sync = Some(sync);
        self
    }

    /// Flushes and syncs, if this sink syncs; `always` at the header and the end, else
    /// only once [`SYNC_EVERY`] bytes were written since the last sync.
    fn sync(&mut self, always: bool) -> io::Result<()> {
        let Some(sync) = self.sync else { return Ok(()) };
        if !always && self.offset - self.synced < SYNC_EVERY {
            return Ok(());
        }
        if let Err(e) = self.out.flush().and_then(|()| sync(&mut self.out)) {
            return Err(self.fail(e, "data to disk (fsync)"));
        }
        self.synced = self.offset;
        Ok(())
    }

    /// A handle on the number of bytes written so far, for a progress display.
    pub fn bytes_written(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.written)
    }

    /// The writer, once recording is over.
    pub fn into_inner(self) -> W {
        self.out
    }

    /// The error every call returns once a write failed.
    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some((kind, message)) => Err(io::Error::new(*kind, message.clone())),
            None if !self.started => {
                Err(io::Error::other(format!("{}: a record was written before the header", self.name)))
            }
            None => Ok(()),
        }
    }

    /// Writes `self.frame` at the current offset.
    fn write_frame(&mut self, what: &str) -> io::Result<()> {
        match self.out.write_all(&self.frame) {
            Ok(()) => {
                self.offset += self.frame.len() as u64;
                self.written.store(self.offset, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(self.fail(e, what)),
        }
    }

    fn fail(&mut self, e: io::Error, what: &str) -> io::Error {
        let message = format!(
            "{}: writing the {what} at byte {} failed: {e}; the recording stops there, and the \
             {} records written before it can be read with `portrace replay {}`",
            self.name, self.offset, self.committed, self.name
        );
        self.failed = Some((e.kind(), message.clone()));
        io::Error::new(e.kind(), message)
    }

    /// Closes the block being built, if it holds anything, and writes it.
    fn emit_block(&mut self) -> io::Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let raw_len = self.block.len();
        self.frame.clear();
        self.frame.resize(BLOCK_HEADER_LEN, 0);
        let mut flags = 0;
        if self.options.compress {
            self.frame.resize(BLOCK_HEADER_LEN + lz4_flex::block::get_maximum_output_size(raw_len), 0);
            match lz4_flex::block::compress_into(&self.block, &mut self.frame[BLOCK_HEADER_LEN..]) {
                Ok(n) if n < raw_len => {
                    self.frame.truncate(BLOCK_HEADER_LEN + n);
                    flags = BLOCK_LZ4;
                }
                _ => self.frame.truncate(BLOCK_HEADER_LEN),
            }
        }
        if flags & BLOCK_LZ4 == 0 {
            self.frame.extend_from_slice(&self.block);
        }
        let stored_len = (self.frame.len() - BLOCK_HEADER_LEN) as u32;
        self.frame[0..4].copy_from_slice(&stored_len.to_le_bytes());
        self.frame[4..8].copy_from_slice(&(raw_len as u32).to_le_bytes());
        self.frame[8] = flags;
        let crc = crc32fast::hash(&self.frame);
        self.frame.extend_from_slice(&crc.to_le_bytes());
        self.block.clear();
        self.time.prev_ns = 0;
        self.write_frame("block")?;
        self.committed += std::mem::take(&mut self.pending);
        Ok(())
    }

    /// Closes the block early when it has grown large (a long drain, a big inventory).
    fn maybe_emit(&mut self) -> io::Result<()> {
        if self.block.len() >= BLOCK_TARGET {
            self.emit_block()?;
        }
        Ok(())
    }

    fn header(&self, start: &Start) -> Header {
        Header {
            version: FORMAT_VERSION,
            portrace: VERSION.to_string(),
            host: start.host.clone(),
            kernel: start.kernel.clone(),
            start: start.time,
            clock_offset_ns: self.setup.clock_offset_ns,
            layout: self.setup.layout,
            sock_layout: self.setup.sock_layout,
            filter: self.setup.filter.clone(),
            ring_size: self.setup.ring_size,
            compressed: self.options.compress,
            notes: start.features.notes(),
            command: self.setup.command.clone(),
            features: start.features.clone(),
        }
    }
}

/// The header's bytes: preamble, fields, checksum.
pub fn encode_header(h: &Header, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&h.version.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    let body_start = out.len();
    codec::put_header_fields(out, h);
    let body_len = (out.len() - body_start) as u32;
    out[12..16].copy_from_slice(&body_len.to_le_bytes());
    let crc = crc32fast::hash(out);
    out.extend_from_slice(&crc.to_le_bytes());
}

impl<W: Write> Sink for FileSink<W> {
    fn start(&mut self, start: &Start) -> io::Result<()> {
        if let Some((kind, message)) = &self.failed {
            return Err(io::Error::new(*kind, message.clone()));
        }
        if self.started {
            return Err(io::Error::other(format!("{}: the recording was started twice", self.name)));
        }
        let header = self.header(start);
        let mut frame = std::mem::take(&mut self.frame);
        encode_header(&header, &mut frame);
        self.frame = frame;
        self.write_frame("header")?;
        self.started = true;
        self.sync(true)
    }

    fn socket(&mut self, s: &SocketRecord) -> io::Result<()> {
        self.check()?;
        codec::put_socket(&mut self.block, &mut self.body, &mut self.time, s);
        self.pending += 1;
        self.maybe_emit()
    }

    fn transition(&mut self, t: &Transition) -> io::Result<()> {
        self.check()?;
        codec::put_transition(&mut self.block, &mut self.body, &mut self.time, t);
        self.pending += 1;
        self.maybe_emit()
    }

    fn process(&mut self, p: &ProcessInfo) -> io::Result<()> {
        self.check()?;
        codec::put_process(&mut self.block, &mut self.body, &mut self.time, p);
        self.pending += 1;
        self.maybe_emit()
    }

    fn netns(&mut self, n: &NetnsInfo) -> io::Result<()> {
        self.check()?;
        codec::put_netns(&mut self.block, &mut self.body, &mut self.time, n);
        self.pending += 1;
        self.maybe_emit()
    }

    fn cgroup(&mut self, g: &crate::record::CgroupInfo) -> io::Result<()> {
        self.check()?;
        codec::put_cgroup(&mut self.block, &mut self.body, &mut self.time, g);
        self.pending += 1;
        self.maybe_emit()
    }

    fn lost(&mut self, lost: &Lost) -> io::Result<()> {
        self.check()?;
        codec::put_lost(&mut self.block, &mut self.body, &mut self.time, lost);
        self.pending += 1;
        self.maybe_emit()
    }

    fn end(&mut self, summary: &Summary) -> io::Result<()> {
        self.check()?;
        let end = End { time: summary.end(), transitions: summary.transitions(), lost: summary.lost_by_cause() };
        codec::put_end(&mut self.block, &mut self.body, &mut self.time, &end);
        self.pending += 1;
        self.emit_block()?;
        self.flush()?;
        self.sync(true)
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.started && self.failed.is_none() {
            return self.out.flush();
        }
        self.check()?;
        self.emit_block()?;
        if let Err(e) = self.out.flush() {
            return Err(self.fail(e, "buffered data"));
        }
        self.sync(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Comm, Endpoints, Family, Timestamp};
    use crate::tcp_state::TcpState;

    /// A writer that counts the syncs asked of it and when they came.
    #[derive(Default)]
    struct Disk {
        data: Vec<u8>,
        synced_at: Vec<usize>,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.data.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn at(ns: u64) -> Timestamp {
        Timestamp { mono_ns: ns, unix_ns: i128::from(ns) }
    }

    fn transition(i: u64) -> Transition {
        Transition {
            time: at(i * 1000),
            pid: 7,
            // Incompressible names keep the blocks large.
            comm: Comm::new(&format!("{:015x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15))),
            socket: i,
            family: Family::Ipv4,
            ends: Endpoints {
                saddr: [10, 0, 0, 1].into(),
                sport: (i % 60_000) as u16,
                daddr: [10, 0, 0, 2].into(),
                dport: 80,
                netns: 0,
            },
            oldstate: TcpState::SynSent,
            newstate: TcpState::Established,
            prev_state_ns: Some(i),
            prev_state_at_least: false,
            owner: None,
            reason: None,
            error: None,
            retransmits: 0,
        }
    }

    /// What the sync tests record with.
    fn sync_setup() -> RunSetup {
        RunSetup {
            clock_offset_ns: 0,
            layout: crate::tracefs::tests::LAYOUT_6_18,
            sock_layout: None,
            filter: Default::default(),
            ring_size: 1 << 20,
            command: None,
        }
    }

    #[test]
    fn syncs_after_the_header_periodically_and_at_the_end() {
        let setup = sync_setup();
        let mut sink = FileSink::new(Disk::default(), "t.ptr", setup, WriteOptions::default()).syncing(|d| {
            d.synced_at.push(d.data.len());
            Ok(())
        });
        let start = Start { time: at(0), host: "h".into(), kernel: "k".into(), features: Default::default() };
        sink.start(&start).unwrap();
        assert_eq!(sink.out.synced_at.len(), 1, "synced after the header");
        let mut i = 0;
        while sink.offset < 2 * SYNC_EVERY + SYNC_EVERY / 2 {
            sink.transition(&transition(i)).unwrap();
            i += 1;
            if i % 100 == 0 {
                sink.flush().unwrap();
            }
        }
        sink.flush().unwrap();
        let periodic = sink.out.synced_at.len() - 1;
        assert_eq!(periodic, 2, "one sync per {SYNC_EVERY} bytes: {:?}", sink.out.synced_at);
        let mut summary = Summary::new(at(0));
        summary.finish(at(i * 1000));
        sink.end(&summary).unwrap();
        let disk = sink.into_inner();
        assert_eq!(disk.synced_at.last(), Some(&disk.data.len()), "the end record is synced");
        assert_eq!(disk.synced_at.len(), 4);
    }

    #[test]
    fn a_failed_sync_stops_the_recording() {
        let setup = sync_setup();
        let mut sink = FileSink::new(Vec::new(), "t.ptr", setup, WriteOptions::default())
            .syncing(|_| Err(io::Error::from_raw_os_error(libc::EIO)));
        let start = Start { time: at(0), host: "h".into(), kernel: "k".into(), features: Default::default() };
        let err = sink.start(&start).unwrap_err();
        assert!(err.to_string().contains("(fsync)"), "{err}");
        assert!(sink.transition(&transition(1)).is_err(), "nothing is written after a failed sync");
    }
}
