//! Recordings: portrace's own file format for traces that outlive the incident. This
//! module owns the format (specified in `docs/trace-format.md`): a self-describing header
//! (format version, portrace version, host, kernel, clock mapping, tracepoint layout,
//! filters), then blocks of records, each block length-prefixed, checksummed with CRC-32
//! and optionally LZ4-compressed, written once per drain of the ring buffer. The writer is
//! an [`output::Sink`](crate::output::Sink), [`FileSink`], so the live engine feeds a file
//! exactly as it feeds standard output; the reader, [`TraceReader`], gives the records
//! back and never panics or loops on any input: a file cut short (a recorder killed, a
//! full disk) reads up to its last complete block with a [`Warning`] saying where it was
//! cut, and anything else it cannot read is a [`ReadError`] naming the file, the byte
//! offset and what to do.

pub mod codec;
pub mod input;
mod reader;
mod recording;
pub mod status;
mod writer;

use portrace_ebpf::{Layout, SockLayout};

use crate::features::Features;
use crate::filter::FilterSpec;
use crate::record::{LossCause, Lost, NetnsInfo, ProcessInfo, SocketRecord, Timestamp, Transition};

pub use reader::{read_all, ErrorKind, ReadError, ReadOptions, TraceReader, Warning, WarningKind};
pub use recording::Recording;
pub use writer::{encode_header, FileSink, WriteOptions};

/// The first eight bytes of every recording. Like PNG's signature: a non-ASCII first byte,
/// so that no text file starts this way, and CR LF, LF and ^Z, so that a transfer that
/// rewrites line endings shows as a foreign file rather than as corruption further in.
pub const MAGIC: [u8; 8] = *b"\x89PTR\r\n\x1a\n";

/// The format version this portrace writes and the newest it reads.
pub const FORMAT_VERSION: u16 = 1;

/// Magic, version, header flags and header length, before the header's fields.
pub const PREAMBLE_LEN: usize = 16;
/// A block's stored length, raw length and flags, before its payload.
pub const BLOCK_HEADER_LEN: usize = 9;
/// The CRC-32 after a header or a block.
pub const CRC_LEN: usize = 4;
/// The largest header body a reader accepts.
pub const MAX_HEADER_LEN: u32 = 1 << 20;
/// The largest block payload (uncompressed) a reader accepts. The writer closes a block
/// once it holds [`BLOCK_TARGET`] bytes, and a record is far smaller than the difference.
pub const MAX_BLOCK_LEN: u32 = 4 << 20;
/// The size at which the writer closes a block before the drain is over: a drain under
/// heavy load can hold tens of thousands of records, and a block this size (some 1300
/// transitions) is still one efficient write, and all a crash can take from the file.
pub const BLOCK_TARGET: usize = 64 << 10;
/// Block flag: the payload is LZ4-compressed (block format, no frame).
pub const BLOCK_LZ4: u8 = 1;

/// What a recording says about itself: everything in its header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The format version the file was written in.
    pub version: u16,
    /// The version of the portrace that wrote it.
    pub portrace: String,
    pub host: String,
    /// The kernel release (`uname -r`) of the traced host.
    pub kernel: String,
    /// When tracing started.
    pub start: Timestamp,
    /// The clock mapping: wall-clock nanoseconds minus CLOCK_MONOTONIC nanoseconds, as
    /// measured when tracing started. Every time in the file is mapped with it.
    pub clock_offset_ns: i128,
    /// The `sock:inet_sock_set_state` field offsets read from tracefs.
    pub layout: Layout,
    /// The socket offsets read from the kernel's BTF, when there were any.
    pub sock_layout: Option<SockLayout>,
    /// The filter the recording was made with, as the user gave it.
    pub filter: FilterSpec,
    /// The ring buffer's size in bytes.
    pub ring_size: u32,
    /// Whether the recorder was asked to compress blocks (each block says whether it is).
    pub compressed: bool,
    /// What did not work on the traced kernel, for people; written from `features` (so
    /// that an older portrace shows them too).
    pub notes: Vec<String>,
    /// The command traced (`portrace record -- CMD ARGS...`), its arguments.
    pub command: Option<Vec<String>>,
    /// What worked on the traced kernel and what did not; empty for a recording made
    /// before portrace wrote them (its `notes` still say what did not work).
    pub features: Features,
}

/// The end record: when the recording stopped, and its totals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct End {
    pub time: Timestamp,
    /// Transition records written.
    pub transitions: u64,
    /// Transitions lost, by cause, every cause listed.
    pub lost: [(LossCause, u64); LossCause::ALL.len()],
}

impl End {
    pub const NO_LOSS: [(LossCause, u64); LossCause::ALL.len()] = [
        (LossCause::RingFull, 0),
        (LossCause::Skipped, 0),
        (LossCause::Malformed, 0),
        (LossCause::Unreadable, 0),
        (LossCause::TimeWait, 0),
        (LossCause::Gap, 0),
    ];

    /// Transitions lost, all causes together.
    pub fn lost_total(&self) -> u64 {
        self.lost.iter().fold(0u64, |sum, &(_, n)| sum.saturating_add(n))
    }
}

/// One record of a recording, in the order it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Socket(SocketRecord),
    Transition(Transition),
    Lost(Lost),
    Process(ProcessInfo),
    Netns(NetnsInfo),
    Cgroup(crate::record::CgroupInfo),
    End(End),
}

/// Renders a filter as the command-line flags that make it (`--port 80 --state LISTEN`),
/// empty for no filter.
pub fn filter_flags(f: &FilterSpec) -> String {
    let mut parts: Vec<String> = Vec::new();
    parts.extend(f.lports.iter().map(|p| format!("--lport {p}")));
    parts.extend(f.rports.iter().map(|p| format!("--rport {p}")));
    parts.extend(f.ports.iter().map(|p| format!("--port {p}")));
    parts.extend(f.nets.iter().map(|n| format!("--addr {n}")));
    match f.family {
        Some(crate::record::Family::Ipv4) => parts.push("-4".into()),
        Some(crate::record::Family::Ipv6) => parts.push("-6".into()),
        None => {}
    }
    parts.extend(f.pids.iter().map(|p| format!("--pid {p}")));
    parts.extend(f.comm.iter().chain(&f.more_comms).map(|comm| format!("--comm {comm:?}")));
    parts.extend(f.states.iter().map(|s| format!("--state {s}")));
    parts.join(" ")
}

#[cfg(test)]
mod tests;
