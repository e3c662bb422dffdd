//! What a reader reports when it cannot read on: [`ReadError`] for a file it cannot read,
//! [`Warning`] for a recording read but not to a proper end, with their kinds and the
//! messages people see.

use std::fmt;

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
pub(super) fn records(n: u64) -> String {
    if n == 1 {
        "1 record".into()
    } else {
        format!("{n} records")
    }
}
