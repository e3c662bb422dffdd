//! The reading side of the format: [`TraceReader`] checks the header, then hands out the
//! records block by block, verifying each block's length and checksum before decoding
//! anything in it. It holds at most one block in memory and reads the file front to back,
//! once, so it terminates on any input; every length it is given is checked against a
//! bound before it is used.
//!
//! How it treats what it cannot read:
//! - a file that ends inside a block, or after a complete block without an end record, or
//!   whose last block is damaged or followed only by zero bytes (a recorder killed, a full
//!   disk, a crash): the records before are returned, then a [`Warning`] saying at which
//!   byte the recording was cut and how many records were read;
//! - anything else (an empty or foreign file, a newer format version, a damaged header, a
//!   damaged block with more after it): a [`ReadError`] naming the file, the byte offset
//!   and what to do. With [`ReadOptions::salvage`], damage after the header is skipped
//!   instead: blocks decode on their own, so the reader looks for the next block whose
//!   framing and checksum hold (byte by byte from the damage on, hashing at most
//!   [`RESYNC_HASH_BUDGET`] bytes per damaged region) and goes on from there; the warning
//!   says where the first damage was and how many regions and bytes were skipped.
//!
//! The reader's state and its walk over blocks are here; `header` reads and checks the
//! preamble and the header, `damage` decides what damage means (a cut, an error, or a
//! region `--salvage` skips) and finds the next good block, and `errors` holds the errors
//! and warnings with their messages.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use super::codec::{self, Cursor, TimeBase};
use super::{Header, Record, BLOCK_HEADER_LEN, BLOCK_LZ4, CRC_LEN, MAX_BLOCK_LEN};

mod damage;
mod errors;
mod header;

pub use errors::{ErrorKind, ReadError, Skipped, Warning, WarningKind};
use header::read_header;

/// Under the fuzzer (cargo-fuzz builds with `--cfg fuzzing`), checksums are not enforced,
/// so that mutated inputs reach the decoding of headers and records instead of stopping
/// at almost every checksum; everything else is checked as always.
const SKIP_CRC: bool = cfg!(fuzzing);

/// How far past a damaged block or an end record the reader looks to describe what
/// follows (whether it is only zero bytes, and how much of it there is).
const TAIL_SCAN_LIMIT: u64 = 64 << 20;

/// While looking for the next good block after damage (`--salvage`), the most bytes
/// hashed to test candidate blocks; past that the rest of the file is ignored, with a
/// warning. It bounds the time a region of forged block headers can take.
pub const RESYNC_HASH_BUDGET: u64 = 256 << 20;

/// How to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Stop with a warning, instead of an error, at damage after the header.
    pub salvage: bool,
}

/// Reads a recording record by record.
pub struct TraceReader<R: BufRead> {
    src: R,
    name: String,
    options: ReadOptions,
    header: Header,
    /// File offset of the next unread byte.
    offset: u64,
    /// The current block's records (decompressed), and how far they have been read.
    payload: Vec<u8>,
    pos: usize,
    /// File offset where the current block starts.
    block_start: u64,
    /// Records already returned from the current block.
    in_block: u64,
    /// Whether the current block was stored compressed.
    block_lz4: bool,
    /// The current block as stored (reused).
    stored: Vec<u8>,
    /// Bytes read from `src` but not used yet (after damage, while looking for the next
    /// block): they come before the rest of `src`, from `pending_pos` on.
    pending: Vec<u8>,
    pending_pos: usize,
    /// Damage skipped so far (`salvage`).
    skipped: Option<Skipped>,
    time: TimeBase,
    records: u64,
    warning: Option<Warning>,
    ended: bool,
    done: bool,
}

impl TraceReader<BufReader<File>> {
    /// Opens the recording at `path` and reads its header.
    pub fn open(path: &Path, options: ReadOptions) -> Result<Self, ReadError> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|e| ReadError {
            file: name.clone(),
            offset: 0,
            kind: ErrorKind::Io,
            message: format!("cannot open it: {e}"),
        })?;
        TraceReader::new(BufReader::with_capacity(1 << 16, file), name, options)
    }
}

impl<R: BufRead> TraceReader<R> {
    /// Reads the header from `src`, which `name` names in errors and warnings.
    pub fn new(mut src: R, name: impl Into<String>, options: ReadOptions) -> Result<Self, ReadError> {
        let name = name.into();
        let (header, offset) = read_header(&mut src, &name)?;
        let time = TimeBase::new(header.clock_offset_ns);
        Ok(TraceReader {
            src,
            name,
            options,
            header,
            offset,
            payload: Vec::new(),
            pos: 0,
            block_start: offset,
            in_block: 0,
            block_lz4: false,
            stored: Vec::new(),
            pending: Vec::new(),
            pending_pos: 0,
            skipped: None,
            time,
            records: 0,
            warning: None,
            ended: false,
            done: false,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// What errors and warnings call the recording: its path, or "standard input".
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Records returned so far.
    pub fn records_read(&self) -> u64 {
        self.records
    }

    /// Bytes of the file read so far.
    pub fn bytes_read(&self) -> u64 {
        self.offset
    }

    /// Why the records stopped early, once [`TraceReader::next_record`] returned `None`.
    pub fn warning(&self) -> Option<&Warning> {
        self.warning.as_ref()
    }

    /// Whether the end record was read.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The next record; `None` at the end of the recording (see [`TraceReader::warning`]
    /// for whether it ended properly). After `None` or an error, always `None`.
    pub fn next_record(&mut self) -> Result<Option<Record>, ReadError> {
        loop {
            if self.done {
                return Ok(None);
            }
            if self.pos < self.payload.len() {
                if self.ended {
                    let at = self.payload_offset(self.pos);
                    return self.after_end(at);
                }
                let mut c = Cursor::new(&self.payload[self.pos..]);
                match codec::record(&mut c, &mut self.time) {
                    Ok(record) => {
                        // Every record is at least a tag and a length: progress is certain.
                        self.pos += c.pos().max(1);
                        self.in_block += 1;
                        if let Some(record) = record {
                            self.records += 1;
                            if matches!(record, Record::End(_)) {
                                self.ended = true;
                            }
                            return Ok(Some(record));
                        }
                    }
                    Err(e) => {
                        let detail = format!(
                            "record {} of the block at byte {} is malformed: {e}",
                            self.in_block + 1,
                            self.block_start
                        );
                        let at = self.payload_offset(self.pos);
                        if self.options.salvage {
                            // The block's framing held: the next one starts where it ends.
                            let rest = self.block_end().saturating_sub(at);
                            self.note_skipped(at, rest, detail);
                            self.payload.clear();
                            self.pos = 0;
                            continue;
                        }
                        self.done = true;
                        return self.corrupt(at, detail, false).map(|()| None);
                    }
                }
                continue;
            }
            if !self.next_block()? {
                return Ok(None);
            }
        }
    }

    /// Reads the next block into `payload`; `false` when there is none (the reading is
    /// over, with a warning if it did not end properly).
    fn next_block(&mut self) -> Result<bool, ReadError> {
        let start = self.offset;
        let mut head = [0u8; BLOCK_HEADER_LEN];
        let got = self.read_up_to(&mut head)?;
        if got == 0 {
            self.done = true;
            if !self.ended {
                self.warn(start, WarningKind::NoEnd, String::new());
            } else if let Some(s) = self.skipped.take() {
                self.warn(s.offset, WarningKind::Salvaged { ignored: s.bytes, regions: s.regions }, s.detail);
            }
            return Ok(false);
        }
        if self.ended {
            self.offset += got as u64;
            return self.after_end(start).map(|_| false);
        }
        if got < BLOCK_HEADER_LEN {
            self.done = true;
            self.warn(start, WarningKind::CutInBlock { ignored: got as u64 }, String::new());
            return Ok(false);
        }
        let stored_len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let raw_len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let flags = head[8];
        let lz4 = flags & BLOCK_LZ4 != 0;
        let problem = if head.iter().all(|&b| b == 0) {
            Some("zero bytes where a block should start".to_string())
        } else if flags & !BLOCK_LZ4 != 0 {
            Some(format!("unknown block flags {flags:#04x} (written by a newer portrace?)"))
        } else if raw_len == 0 || raw_len > MAX_BLOCK_LEN {
            Some(format!("a block of {raw_len} bytes (1 to {MAX_BLOCK_LEN} are possible)"))
        } else if !lz4 && stored_len != raw_len {
            Some(format!("an uncompressed block stored in {stored_len} bytes but {raw_len} long"))
        } else if lz4 && (stored_len == 0 || stored_len as usize > lz4_flex::block::get_maximum_output_size(raw_len as usize)) {
            Some(format!("a block of {raw_len} bytes compressed into {stored_len}"))
        } else {
            None
        };
        if let Some(detail) = problem {
            self.offset += got as u64;
            let detail = format!("the block header is damaged: {detail}");
            return self.damaged_framing(start, head[1..got].to_vec(), detail);
        }
        let want = u64::from(stored_len) + CRC_LEN as u64;
        self.stored.clear();
        let from = self.pending_pos;
        let upto = from + (want as usize).min(self.pending.len() - from);
        self.pending_pos = upto;
        self.stored.extend_from_slice(&self.pending[from..upto]);
        let rest = want - self.stored.len() as u64;
        let read = (&mut self.src).take(rest).read_to_end(&mut self.stored);
        read.map_err(|e| self.io_error(start, e))?;
        let got_body = self.stored.len();
        self.offset += (BLOCK_HEADER_LEN + got_body) as u64;
        if (got_body as u64) < want {
            let ignored = (BLOCK_HEADER_LEN + got_body) as u64;
            if self.options.salvage {
                // A damaged length can point past the end: a good block may follow.
                let mut pending = head[1..].to_vec();
                pending.extend_from_slice(&self.stored);
                self.offset = start + 1;
                self.pending = pending;
                self.pending_pos = 0;
                if let Some(skipped) = self.resync()? {
                    let detail = format!("the block says it is {stored_len} bytes long, past the end of the file");
                    self.note_skipped(start, skipped + 1, detail);
                    return Ok(self.skip_block());
                }
                self.pending_pos = self.pending.len();
                self.offset = start + ignored;
            }
            self.done = true;
            self.warn(start, WarningKind::CutInBlock { ignored }, String::new());
            return Ok(false);
        }
        let body_len = stored_len as usize;
        let expected = u32::from_le_bytes([
            self.stored[body_len],
            self.stored[body_len + 1],
            self.stored[body_len + 2],
            self.stored[body_len + 3],
        ]);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        crc.update(&self.stored[..body_len]);
        let actual = crc.finalize();
        if actual != expected && !SKIP_CRC {
            let detail = format!("the block's checksum does not match: {actual:#010x} computed, {expected:#010x} stored");
            // The next block may start anywhere after this one's first byte (its length
            // may be what is damaged).
            let mut consumed = head[1..].to_vec();
            consumed.extend_from_slice(&self.stored);
            return self.damaged_framing(start, consumed, detail);
        }
        self.stored.truncate(body_len);
        if lz4 {
            self.payload.clear();
            self.payload.resize(raw_len as usize, 0);
            match lz4_flex::block::decompress_into(&self.stored, &mut self.payload) {
                Ok(n) if n == raw_len as usize => {}
                Ok(n) => {
                    let detail = format!("the block decompresses to {n} bytes, not the {raw_len} it says");
                    return self.undecodable_block(start, detail);
                }
                Err(e) => {
                    let detail = format!("the block does not decompress: {e}");
                    return self.undecodable_block(start, detail);
                }
            }
        } else {
            std::mem::swap(&mut self.payload, &mut self.stored);
        }
        self.pos = 0;
        self.in_block = 0;
        self.block_lz4 = lz4;
        self.block_start = start;
        self.time.prev_ns = 0;
        Ok(true)
    }

    /// The file offset of byte `pos` of the current block's records: exact for a block
    /// stored uncompressed, the block's own offset for a compressed one.
    fn payload_offset(&self, pos: usize) -> u64 {
        if self.block_lz4 {
            self.block_start
        } else {
            self.block_start + (BLOCK_HEADER_LEN + pos) as u64
        }
    }

    fn warn(&mut self, offset: u64, kind: WarningKind, detail: String) {
        let skipped = self.skipped.take();
        self.warning = Some(Warning { file: self.name.clone(), offset, records: self.records, kind, detail, skipped });
    }

    fn read_up_to(&mut self, buf: &mut [u8]) -> Result<usize, ReadError> {
        let from_pending = self.take_pending(buf.len());
        let n = from_pending.len();
        buf[..n].copy_from_slice(from_pending);
        let more = read_up_to(&mut self.src, &mut buf[n..]).map_err(|e| self.io_error(self.offset, e))?;
        Ok(n + more)
    }

    /// Up to `n` bytes of `pending`, consumed.
    fn take_pending(&mut self, n: usize) -> &[u8] {
        let from = self.pending_pos;
        let to = from + n.min(self.pending.len() - from);
        self.pending_pos = to;
        &self.pending[from..to]
    }

    /// The file offset just past the current block.
    fn block_end(&self) -> u64 {
        self.offset
    }

    fn io_error(&self, offset: u64, e: io::Error) -> ReadError {
        ReadError { file: self.name.clone(), offset, kind: ErrorKind::Io, message: format!("reading failed: {e}") }
    }
}

/// Fills `buf` as far as the source allows; the count is short only at the end of it.
fn read_up_to(src: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match src.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads a whole recording held in memory: the header, every record, and the warning if
/// it was cut. For tests and fuzzing; `portrace replay` streams with [`TraceReader`].
pub fn read_all(
    bytes: &[u8],
    name: &str,
    options: ReadOptions,
) -> Result<(Header, Vec<Record>, Option<Warning>), ReadError> {
    let mut reader = TraceReader::new(bytes, name, options)?;
    let mut records = Vec::new();
    while let Some(record) = reader.next_record()? {
        records.push(record);
    }
    Ok((reader.header().clone(), records, reader.warning().cloned()))
}
