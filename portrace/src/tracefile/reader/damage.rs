//! What the reader does at damage: whether it is a cut (nothing but zero bytes after it)
//! or an error, how `--salvage` counts the regions it skips, and the search for the next
//! block whose framing and checksum hold.

use std::io::{self, BufRead};

use super::errors::records;
use super::{ErrorKind, ReadError, Skipped, TraceReader, WarningKind, RESYNC_HASH_BUDGET, SKIP_CRC, TAIL_SCAN_LIMIT};
use crate::tracefile::{Record, BLOCK_HEADER_LEN, BLOCK_LZ4, CRC_LEN, MAX_BLOCK_LEN};

impl<R: BufRead> TraceReader<R> {
    /// Damage at `at`. When `may_be_tail` (the damage is in the block's framing, as a crash
    /// leaves it) and nothing but zero bytes follows, the recording was cut there: a
    /// warning. Otherwise an error, or a warning when salvaging.
    pub(super) fn corrupt(&mut self, at: u64, detail: String, may_be_tail: bool) -> Result<(), ReadError> {
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
    pub(super) fn after_end(&mut self, at: u64) -> Result<Option<Record>, ReadError> {
        self.done = true;
        let (rest, _) = self.scan_rest()?;
        let ignored = self.offset.saturating_sub(at) + rest;
        self.warn(at, WarningKind::AfterEnd { ignored }, String::new());
        Ok(None)
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

    /// Leaves no records of the current block to read, so that the next call reads the
    /// next block (no recursion however many blocks are skipped in a row).
    pub(super) fn skip_block(&mut self) -> bool {
        self.payload.clear();
        self.pos = 0;
        true
    }

    /// Counts `bytes` skipped from `at` (`salvage`), the first time with `detail`.
    pub(super) fn note_skipped(&mut self, at: u64, bytes: u64, detail: String) {
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
    pub(super) fn undecodable_block(&mut self, start: u64, detail: String) -> Result<bool, ReadError> {
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
    pub(super) fn damaged_framing(&mut self, start: u64, consumed: Vec<u8>, detail: String) -> Result<bool, ReadError> {
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
    pub(super) fn resync(&mut self) -> Result<Option<u64>, ReadError> {
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
