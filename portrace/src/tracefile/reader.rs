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

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use super::codec::{self, Cursor, TimeBase};
use super::{
    Header, Record, BLOCK_HEADER_LEN, BLOCK_LZ4, CRC_LEN, FORMAT_VERSION, MAGIC, MAX_BLOCK_LEN,
    MAX_HEADER_LEN, PREAMBLE_LEN,
};

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

/// What kind of file could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The file could not be opened or read.
    Io,
    /// The file is empty.
    Empty,
    /// The file is not a portrace recording.
    Foreign,
    /// The file was written in a newer format version, or with features this portrace
    /// does not know.
    Newer,
    /// The file ends inside its header: nothing was recorded.
    Truncated,
    /// The header, or a block with more data after it, is damaged.
    Corrupt,
}

/// A file that cannot be read, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}: at byte {offset}: {message}")]
pub struct ReadError {
    pub file: String,
    pub offset: u64,
    pub kind: ErrorKind,
    pub message: String,
}

/// Why a recording's records stop before a proper end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WarningKind {
    /// The file ends `ignored` bytes into the block that starts at the offset.
    CutInBlock { ignored: u64 },
    /// The file ends after a complete block, without an end record.
    NoEnd,
    /// The block at the offset is damaged and the file holds nothing but it, or zero
    /// bytes, after that point (`ignored` bytes from the offset on).
    DamagedTail { ignored: u64 },
    /// Damage at the offset, with more data after it; read with `salvage`. `ignored`
    /// bytes in `regions` damaged regions were skipped, the first at the offset; the
    /// blocks after each region that decode were read.
    Salvaged { ignored: u64, regions: u64 },
    /// `ignored` bytes follow the end record, from the offset on.
    AfterEnd { ignored: u64 },
}

/// A recording that was read, but not to a proper end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub file: String,
    /// Where the recording stops being readable.
    pub offset: u64,
    /// Records read before that point.
    pub records: u64,
    pub kind: WarningKind,
    /// What was wrong, for the damaged kinds.
    pub detail: String,
    /// Damage skipped with `salvage` before the recording stopped this way (for every
    /// kind but [`WarningKind::Salvaged`], which says it itself).
    pub skipped: Option<Skipped>,
}

/// Damaged regions `--salvage` skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Where the first one starts.
    pub offset: u64,
    pub regions: u64,
    pub bytes: u64,
    /// What was wrong at the first one.
    pub detail: String,
}

impl Warning {
    /// Whether the recording was cut short (everything but [`WarningKind::AfterEnd`]).
    pub fn is_cut(&self) -> bool {
        !matches!(self.kind, WarningKind::AfterEnd { .. })
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_kind(f)?;
        match &self.skipped {
            Some(s) => write!(
                f,
                "; before that, --salvage skipped {} bytes in {} damaged {} from byte {} ({})",
                s.bytes,
                s.regions,
                if s.regions == 1 { "region" } else { "regions" },
                s.offset,
                s.detail
            ),
            None => Ok(()),
        }
    }
}

impl Warning {
    fn fmt_kind(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (file, at, n) = (&self.file, self.offset, self.records);
        match self.kind {
            WarningKind::CutInBlock { ignored } => write!(
                f,
                "{file}: the recording is cut at byte {at}: the file ends {ignored} bytes into \
                 the block that starts there (the recorder was killed, ran out of disk space, \
                 or is still writing); read {} from the complete blocks before it",
                records(n)
            ),
            WarningKind::NoEnd => write!(
                f,
                "{file}: the recording is cut at byte {at}: it ends after a complete block but \
                 without an end record (the recorder was killed or is still writing); read {} \
                 before it",
                records(n)
            ),
            WarningKind::DamagedTail { ignored } => write!(
                f,
                "{file}: the recording is cut at byte {at}: the last {ignored} bytes are not a \
                 complete block ({}), as after a crash; read {} before it",
                self.detail,
                records(n)
            ),
            WarningKind::Salvaged { ignored, regions } => write!(
                f,
                "{file}: the recording is damaged at byte {at}: {}; skipped {ignored} bytes in \
                 {regions} damaged {} from there on and read {} from the blocks that decode",
                self.detail,
                if regions == 1 { "region" } else { "regions" },
                records(n)
            ),
            WarningKind::AfterEnd { ignored } => write!(
                f,
                "{file}: ignored {ignored} bytes after the end record, from byte {at} (another \
                 file appended to this one?); read {}",
                records(n)
            ),
        }
    }
}

/// `1 record`, `2 records`.
fn records(n: u64) -> String {
    if n == 1 {
        "1 record".into()
    } else {
        format!("{n} records")
    }
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

    /// Damage at `at`. When `may_be_tail` (the damage is in the block's framing, as a crash
    /// leaves it) and nothing but zero bytes follows, the recording was cut there: a
    /// warning. Otherwise an error, or a warning when salvaging.
    fn corrupt(&mut self, at: u64, detail: String, may_be_tail: bool) -> Result<(), ReadError> {
        self.done = true;
        let (rest, zeros) = self.scan_rest()?;
        let ignored = self.offset.saturating_sub(at) + rest;
        if may_be_tail && (rest == 0 || zeros) {
            self.warn(at, WarningKind::DamagedTail { ignored }, detail);
            return Ok(());
        }
        if self.options.salvage {
            let (at, detail, ignored, regions) = match self.skipped.take() {
                Some(s) => (s.offset, s.detail, s.bytes.saturating_add(ignored), s.regions + 1),
                None => (at, detail, ignored, 1),
            };
            self.warn(at, WarningKind::Salvaged { ignored, regions }, detail);
            return Ok(());
        }
        Err(ReadError {
            file: self.name.clone(),
            offset: at,
            kind: ErrorKind::Corrupt,
            message: format!(
                "{detail}; the {} before it can be read with `portrace replay --salvage`",
                records(self.records)
            ),
        })
    }

    /// Data after the end record, from byte `at` on: a warning, and the reading is over.
    fn after_end(&mut self, at: u64) -> Result<Option<Record>, ReadError> {
        self.done = true;
        let (rest, _) = self.scan_rest()?;
        let ignored = self.offset.saturating_sub(at) + rest;
        self.warn(at, WarningKind::AfterEnd { ignored }, String::new());
        Ok(None)
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

    /// Reads what is left of the file (up to [`TAIL_SCAN_LIMIT`]): how many bytes, and
    /// whether they are all zero.
    fn scan_rest(&mut self) -> Result<(u64, bool), ReadError> {
        let pending = &self.pending[self.pending_pos..];
        let (mut n, mut zeros) = (pending.len() as u64, pending.iter().all(|&b| b == 0));
        self.pending_pos = self.pending.len();
        while n < TAIL_SCAN_LIMIT {
            let buf = match self.src.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_error(self.offset + n, e)),
            };
            if buf.is_empty() {
                break;
            }
            let len = buf.len();
            zeros &= buf.iter().all(|&b| b == 0);
            self.src.consume(len);
            n += len as u64;
        }
        Ok((n, zeros))
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

    /// Leaves no records of the current block to read, so that the next call reads the
    /// next block (no recursion however many blocks are skipped in a row).
    fn skip_block(&mut self) -> bool {
        self.payload.clear();
        self.pos = 0;
        true
    }

    /// The file offset just past the current block.
    fn block_end(&self) -> u64 {
        self.offset
    }

    /// Counts `bytes` skipped from `at` (`salvage`), the first time with `detail`.
    fn note_skipped(&mut self, at: u64, bytes: u64, detail: String) {
        match &mut self.skipped {
            Some(s) => {
                s.regions += 1;
                s.bytes = s.bytes.saturating_add(bytes);
            }
            None => self.skipped = Some(Skipped { offset: at, regions: 1, bytes, detail }),
        }
    }

    /// A block whose framing and checksum held but whose records cannot be had: the next
    /// block starts right after it.
    fn undecodable_block(&mut self, start: u64, detail: String) -> Result<bool, ReadError> {
        if self.options.salvage {
            self.note_skipped(start, self.offset - start, detail);
            return Ok(self.skip_block());
        }
        self.done = true;
        self.corrupt(start, detail, false).map(|()| false)
    }

    /// A block at `start` whose framing is damaged; `consumed` holds the bytes after its
    /// first one that were read (up to `self.offset`). Without `salvage`, or when nothing
    /// but zero bytes follows, as [`TraceReader::corrupt`] says; with it, the reading goes
    /// on at the next block that holds together.
    fn damaged_framing(&mut self, start: u64, consumed: Vec<u8>, detail: String) -> Result<bool, ReadError> {
        if !self.options.salvage {
            self.done = true;
            return self.corrupt(start, detail, true).map(|()| false);
        }
        // Put the bytes after the damaged block's first one back in front of the rest.
        let mut pending = consumed;
        pending.extend_from_slice(&self.pending[self.pending_pos..]);
        self.offset = start + 1;
        self.pending = pending;
        self.pending_pos = 0;
        match self.resync()? {
            Some(skipped) => {
                self.note_skipped(start, skipped + 1, detail);
                Ok(self.skip_block())
            }
            None => {
                // No good block after it: as without salvage, a damaged tail or damage.
                self.done = true;
                self.corrupt(start, detail, true).map(|()| false)
            }
        }
    }

    /// Looks for the next block whose header is plausible and whose checksum matches,
    /// from the front of `pending` (then `src`) on. On success the block starts at the
    /// front of `pending`, `offset` is its file offset, and the bytes skipped are
    /// returned; `None` when the file ends first or [`RESYNC_HASH_BUDGET`] is spent.
    fn resync(&mut self) -> Result<Option<u64>, ReadError> {
        let mut hashed = 0u64;
        let mut skipped = 0u64;
        loop {
            // Keep what is buffered small: drop what was passed.
            if self.pending_pos >= 1 << 20 {
                self.pending.drain(..self.pending_pos);
                self.pending_pos = 0;
            }
            if !self.buffer(BLOCK_HEADER_LEN)? {
                return Ok(None);
            }
            let p = self.pending_pos;
            let head: [u8; BLOCK_HEADER_LEN] = self.pending[p..p + BLOCK_HEADER_LEN].try_into().expect("nine bytes");
            if let Some(stored_len) = plausible_block(&head) {
                let total = BLOCK_HEADER_LEN + stored_len as usize + CRC_LEN;
                if self.buffer(total)? {
                    hashed += total as u64;
                    if hashed > RESYNC_HASH_BUDGET {
                        return Ok(None);
                    }
                    let block = &self.pending[p..p + total];
                    let body_end = BLOCK_HEADER_LEN + stored_len as usize;
                    let expected = u32::from_le_bytes(block[body_end..].try_into().expect("four bytes"));
                    if SKIP_CRC || crc32fast::hash(&block[..body_end]) == expected {
                        return Ok(Some(skipped));
                    }
                }
            }
            self.pending_pos += 1;
            self.offset += 1;
            skipped += 1;
        }
    }

    /// Makes `pending` hold at least `n` bytes from `pending_pos` on, reading from `src`;
    /// `false` when the file ends first.
    fn buffer(&mut self, n: usize) -> Result<bool, ReadError> {
        while self.pending.len() - self.pending_pos < n {
            let buf = match self.src.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_error(self.offset, e)),
            };
            if buf.is_empty() {
                return Ok(false);
            }
            let len = buf.len();
            self.pending.extend_from_slice(buf);
            self.src.consume(len);
        }
        Ok(true)
    }

    fn io_error(&self, offset: u64, e: io::Error) -> ReadError {
        ReadError { file: self.name.clone(), offset, kind: ErrorKind::Io, message: format!("reading failed: {e}") }
    }
}

/// The stored length of the block whose header is `head`, if that header could be one
/// this format writes.
fn plausible_block(head: &[u8; BLOCK_HEADER_LEN]) -> Option<u32> {
    let stored_len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let raw_len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let flags = head[8];
    let lz4 = flags & BLOCK_LZ4 != 0;
    let ok = flags & !BLOCK_LZ4 == 0
        && raw_len != 0
        && raw_len <= MAX_BLOCK_LEN
        && if lz4 {
            stored_len != 0 && stored_len as usize <= lz4_flex::block::get_maximum_output_size(raw_len as usize)
        } else {
            stored_len == raw_len
        };
    ok.then_some(stored_len)
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

/// Reads and checks the header; returns it and its length in bytes.
fn read_header(src: &mut impl Read, name: &str) -> Result<(Header, u64), ReadError> {
    let error = |offset: u64, kind: ErrorKind, message: String| ReadError {
        file: name.to_string(),
        offset,
        kind,
        message,
    };
    let io = |offset: u64, e: io::Error| error(offset, ErrorKind::Io, format!("reading failed: {e}"));
    let mut pre = [0u8; PREAMBLE_LEN];
    let got = read_up_to(src, &mut pre).map_err(|e| io(0, e))?;
    if got == 0 {
        return Err(error(
            0,
            ErrorKind::Empty,
            "the file is empty, so it is not a portrace recording (a recorder that stopped \
             before tracing began leaves an empty file)"
                .into(),
        ));
    }
    let seen = got.min(MAGIC.len());
    if pre[..seen] != MAGIC[..seen] {
        return Err(error(
            0,
            ErrorKind::Foreign,
            format!(
                "this is not a portrace recording: {}; `portrace replay` and `portrace report` \
                 read files made with `portrace record -o FILE`",
                identify(&pre[..got])
            ),
        ));
    }
    let truncated = |at: usize, total: u64| {
        error(
            at as u64,
            ErrorKind::Truncated,
            format!(
                "the file ends inside its {total}-byte header: the recorder stopped before it \
                 wrote anything else, so there is nothing to read"
            ),
        )
    };
    if got < PREAMBLE_LEN {
        return Err(truncated(got, PREAMBLE_LEN as u64));
    }
    let version = u16::from_le_bytes([pre[8], pre[9]]);
    if version > FORMAT_VERSION {
        return Err(error(
            8,
            ErrorKind::Newer,
            format!(
                "the recording is in format version {version}, written by a newer portrace; this \
                 portrace reads versions up to {FORMAT_VERSION}: read it with a newer portrace"
            ),
        ));
    }
    if version == 0 {
        return Err(error(8, ErrorKind::Corrupt, "the header is damaged: format version 0 does not exist".into()));
    }
    let flags = u16::from_le_bytes([pre[10], pre[11]]);
    if flags != 0 {
        return Err(error(
            10,
            ErrorKind::Newer,
            format!(
                "the recording uses features this portrace does not know (header flags \
                 {flags:#06x}): read it with a newer portrace"
            ),
        ));
    }
    let body_len = u32::from_le_bytes([pre[12], pre[13], pre[14], pre[15]]);
    if body_len > MAX_HEADER_LEN {
        return Err(error(
            12,
            ErrorKind::Corrupt,
            format!("the header is damaged: it says it is {body_len} bytes long (at most {MAX_HEADER_LEN})"),
        ));
    }
    let total = PREAMBLE_LEN as u64 + u64::from(body_len) + CRC_LEN as u64;
    let mut rest = Vec::new();
    let got_rest = src
        .take(u64::from(body_len) + CRC_LEN as u64)
        .read_to_end(&mut rest)
        .map_err(|e| io(PREAMBLE_LEN as u64, e))?;
    if (got_rest as u64) < u64::from(body_len) + CRC_LEN as u64 {
        return Err(truncated(PREAMBLE_LEN + got_rest, total));
    }
    let body = &rest[..body_len as usize];
    let stored = u32::from_le_bytes([
        rest[body_len as usize],
        rest[body_len as usize + 1],
        rest[body_len as usize + 2],
        rest[body_len as usize + 3],
    ]);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&pre);
    crc.update(body);
    if crc.finalize() != stored && !SKIP_CRC {
        return Err(error(
            total - CRC_LEN as u64,
            ErrorKind::Corrupt,
            "the header is damaged (its checksum does not match): the recording cannot be \
             interpreted without it"
                .into(),
        ));
    }
    let header = codec::header_fields(body, version).map_err(|e| {
        error(PREAMBLE_LEN as u64, ErrorKind::Corrupt, format!("the header is malformed: {e}"))
    })?;
    Ok((header, total))
}

/// A guess at what a foreign file is, from its first bytes.
fn identify(start: &[u8]) -> String {
    let known: [(&[u8], &str); 9] = [
        (b"\x89PNG", "it is a PNG image"),
        (b"\x1f\x8b", "it is gzip-compressed (gunzip it first if it holds a recording)"),
        (b"\x28\xb5\x2f\xfd", "it is zstd-compressed (unzstd it first if it holds a recording)"),
        (b"\xfd7zXZ\0", "it is xz-compressed (unxz it first if it holds a recording)"),
        (b"BZh", "it is bzip2-compressed (bunzip2 it first if it holds a recording)"),
        (b"\x7fELF", "it is an executable (ELF)"),
        (b"\xd4\xc3\xb2\xa1", "it is a packet capture (pcap)"),
        (b"\xa1\xb2\xc3\xd4", "it is a packet capture (pcap)"),
        (b"\x0a\x0d\x0d\x0a", "it is a packet capture (pcapng)"),
    ];
    if let Some((_, what)) = known.iter().find(|(magic, _)| start.starts_with(magic)) {
        return what.to_string();
    }
    let text = start.iter().all(|&b| b.is_ascii_graphic() || b.is_ascii_whitespace());
    match start.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | Some(b'[') if text => {
            "it looks like JSON (portrace --format json output is text, not a recording)".into()
        }
        _ if text => "it looks like text (portrace's text and CSV output are not recordings)".into(),
        _ => "it does not start with the recording signature".into(),
    }
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
