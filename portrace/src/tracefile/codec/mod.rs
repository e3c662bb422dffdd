//! The bytes of a recording below the block level: LEB128 varints and zigzag signed
//! integers, the encoding of each record kind (socket, transition, lost, end) and of the
//! header's fields, and a bounds-checked cursor that decodes them back. Every number a
//! file can hold is given a fixed code here (states, owner sources, end reasons, loss
//! causes), independent of the order of Rust enums, so that the format in
//! `docs/trace-format.md` does not change when the code is reorganised.
//!
//! Encoding appends to a caller's buffer and never allocates on its own; decoding checks
//! every length against what is left and returns a message instead of panicking.
//!
//! This module holds what both directions share: the record tags, header keys and flag
//! bits, the fixed codes, LEB128 varints and zigzag integers, the [`TimeBase`] and the
//! [`Cursor`]. `encode` appends records and the header's fields to a buffer; `decode`
//! reads them back.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::record::{Comm, EndReason, LossCause, Owner, OwnerSource, Timestamp};
use crate::process_info::MAX_TEXT;
use crate::tcp_state::TcpState;

mod decode;
mod encode;
#[cfg(test)]
mod tests;

pub use decode::{header_fields, record};
pub use encode::{
    put_cgroup, put_end, put_header_fields, put_lost, put_netns, put_process, put_socket, put_transition,
};

/// Record tags, the first byte of each record in a block.
pub mod tag {
    pub const SOCKET: u8 = 1;
    pub const TRANSITION: u8 = 2;
    pub const LOST: u8 = 3;
    pub const END: u8 = 4;
    pub const PROCESS: u8 = 5;
    pub const NETNS: u8 = 6;
    /// A cgroup's id and path (added after format version 1 was first written: readers
    /// that predate it skip it, as every unknown record).
    pub const CGROUP: u8 = 7;
}

/// Which optional fields a process record holds.
mod process_flag {
    pub const PPID: u8 = 1 << 0;
    pub const EXE: u8 = 1 << 1;
    pub const CMDLINE: u8 = 1 << 2;
    pub const UID: u8 = 1 << 3;
    pub const USER: u8 = 1 << 4;
    pub const CGROUP: u8 = 1 << 5;
    pub const START: u8 = 1 << 6;
    pub const ALL: u8 = PPID | EXE | CMDLINE | UID | USER | CGROUP | START;
}


/// Header field keys.
pub mod key {
    pub const PORTRACE: u8 = 1;
    pub const HOST: u8 = 2;
    pub const KERNEL: u8 = 3;
    pub const START: u8 = 4;
    pub const CLOCK: u8 = 5;
    pub const LAYOUT: u8 = 6;
    pub const SOCK_LAYOUT: u8 = 7;
    pub const FILTER: u8 = 8;
    pub const RING_SIZE: u8 = 9;
    pub const COMPRESSION: u8 = 10;
    pub const NOTE: u8 = 11;
    pub const COMMAND: u8 = 12;
    pub const FEATURE: u8 = 13;
}

/// Flag bits of transition and socket records.
mod flag {
    pub const FAMILY_V6: u8 = 1 << 0;
    pub const SADDR_V6: u8 = 1 << 1;
    pub const DADDR_V6: u8 = 1 << 2;
    pub const PREV: u8 = 1 << 3;
    pub const AT_LEAST: u8 = 1 << 4;
    pub const OWNER: u8 = 1 << 5;
    pub const REASON: u8 = 1 << 6;
    pub const ERROR: u8 = 1 << 7;
    /// The bits a socket record may use.
    pub const SOCKET_BITS: u8 = FAMILY_V6 | SADDR_V6 | DADDR_V6 | OWNER;
}

/// The longest command name the kernel keeps.
const COMM_MAX: usize = 15;

/// Appends `n` as an unsigned LEB128 varint (1 to 10 bytes).
pub fn put_varint(buf: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        buf.push(n as u8 | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

/// Appends a 128-bit unsigned LEB128 varint (1 to 19 bytes).
fn put_varint128(buf: &mut Vec<u8>, mut n: u128) {
    while n >= 0x80 {
        buf.push(n as u8 | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

fn zigzag128(n: i128) -> u128 {
    ((n << 1) ^ (n >> 127)) as u128
}

fn unzigzag128(n: u128) -> i128 {
    ((n >> 1) as i128) ^ -((n & 1) as i128)
}

/// The time base a block's records are encoded against: each record's monotonic time is
/// stored as the difference from the previous record's (0 at the start of a block), and
/// its wall-clock time as its deviation from the recording's clock mapping (0 for every
/// record portrace writes, since one mapping serves the whole run).
#[derive(Clone, Copy, Debug)]
pub struct TimeBase {
    pub prev_ns: u64,
    pub clock_offset_ns: i128,
}

impl TimeBase {
    pub fn new(clock_offset_ns: i128) -> TimeBase {
        TimeBase { prev_ns: 0, clock_offset_ns }
    }

    fn put(&mut self, buf: &mut Vec<u8>, t: Timestamp) {
        put_varint(buf, zigzag(t.mono_ns.wrapping_sub(self.prev_ns) as i64));
        let mapped = i128::from(t.mono_ns).wrapping_add(self.clock_offset_ns);
        put_varint128(buf, zigzag128(t.unix_ns.wrapping_sub(mapped)));
        self.prev_ns = t.mono_ns;
    }

    fn get(&mut self, c: &mut Cursor<'_>) -> Result<Timestamp, String> {
        let mono_ns = self.prev_ns.wrapping_add(unzigzag(c.varint()?) as u64);
        let deviation = unzigzag128(c.varint128()?);
        self.prev_ns = mono_ns;
        let unix_ns = i128::from(mono_ns).wrapping_add(self.clock_offset_ns).wrapping_add(deviation);
        Ok(Timestamp { mono_ns, unix_ns })
    }
}

fn owner_source_code(source: OwnerSource) -> u8 {
    match source {
        OwnerSource::Syscall => 1,
        OwnerSource::Listener => 2,
        OwnerSource::Inventory => 3,
    }
}

fn owner_source_from(code: u8) -> Option<OwnerSource> {
    Some(match code {
        1 => OwnerSource::Syscall,
        2 => OwnerSource::Listener,
        3 => OwnerSource::Inventory,
        _ => return None,
    })
}

fn reason_code(reason: EndReason) -> u8 {
    match reason {
        EndReason::ActiveClose => 1,
        EndReason::PassiveClose => 2,
        EndReason::Refused => 3,
        EndReason::ConnectTimeout => 4,
        EndReason::ResetByPeer => 5,
        EndReason::ResetSent => 6,
        EndReason::ConnectAborted => 7,
        EndReason::FinWait2Timeout => 8,
        EndReason::TimeWaitKilled => 9,
        EndReason::ListenerClosed => 10,
        EndReason::Error => 11,
    }
}

fn reason_from(code: u8) -> Option<EndReason> {
    Some(match code {
        1 => EndReason::ActiveClose,
        2 => EndReason::PassiveClose,
        3 => EndReason::Refused,
        4 => EndReason::ConnectTimeout,
        5 => EndReason::ResetByPeer,
        6 => EndReason::ResetSent,
        7 => EndReason::ConnectAborted,
        8 => EndReason::FinWait2Timeout,
        9 => EndReason::TimeWaitKilled,
        10 => EndReason::ListenerClosed,
        11 => EndReason::Error,
        _ => return None,
    })
}

pub fn cause_code(cause: LossCause) -> u8 {
    match cause {
        LossCause::RingFull => 1,
        LossCause::Skipped => 2,
        LossCause::Malformed => 3,
        LossCause::Unreadable => 4,
        LossCause::TimeWait => 5,
        LossCause::Gap => 6,
    }
}

fn cause_from(code: u8) -> Option<LossCause> {
    Some(match code {
        1 => LossCause::RingFull,
        2 => LossCause::Skipped,
        3 => LossCause::Malformed,
        4 => LossCause::Unreadable,
        5 => LossCause::TimeWait,
        6 => LossCause::Gap,
        _ => return None,
    })
}

/// Reads bytes from a slice, checking every length; errors are messages for people.
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Cursor<'a> {
        Cursor { buf, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let rest = &self.buf[self.pos.min(self.buf.len())..];
        if rest.len() < n {
            return Err(format!("{n} bytes needed, {} left", rest.len()));
        }
        self.pos += n;
        Ok(&rest[..n])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub fn varint(&mut self) -> Result<u64, String> {
        let mut n = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            if i == 9 && b > 1 {
                return Err("a number is too large for 64 bits".into());
            }
            n |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err("a number is too large for 64 bits".into())
    }

    fn varint128(&mut self) -> Result<u128, String> {
        let mut n = 0u128;
        for i in 0..19 {
            let b = self.u8()?;
            if i == 18 && b > 3 {
                return Err("a number is too large for 128 bits".into());
            }
            n |= u128::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err("a number is too large for 128 bits".into())
    }

    fn varint32(&mut self, what: &str) -> Result<u32, String> {
        let n = self.varint()?;
        u32::try_from(n).map_err(|_| format!("{what} {n} does not fit 32 bits"))
    }

    fn short(&mut self) -> Result<&'a [u8], String> {
        let n = self.u8()?;
        self.bytes(usize::from(n))
    }

    fn text(&mut self, what: &str) -> Result<String, String> {
        let len = self.varint()?;
        if len > MAX_TEXT as u64 {
            return Err(format!("a {what} of {len} bytes (at most {MAX_TEXT} are written)"));
        }
        let bytes = self.bytes(len as usize)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("the {what} is not UTF-8"))
    }

    fn addr(&mut self, v6: bool) -> Result<IpAddr, String> {
        Ok(if v6 {
            IpAddr::V6(Ipv6Addr::from(self.array::<16>()?))
        } else {
            IpAddr::V4(Ipv4Addr::from(self.array::<4>()?))
        })
    }

    fn comm(&mut self) -> Result<Comm, String> {
        let bytes = self.short()?;
        if bytes.len() > COMM_MAX {
            return Err(format!("a command name of {} bytes (the kernel keeps at most {COMM_MAX})", bytes.len()));
        }
        Ok(comm_from_bytes(bytes))
    }

    fn owner(&mut self) -> Result<Owner, String> {
        let pid = self.varint32("owner pid")?;
        let code = self.u8()?;
        let source = owner_source_from(code).ok_or_else(|| format!("unknown owner source code {code}"))?;
        Ok(Owner { pid, source, comm: self.comm()?, cgroup: 0 })
    }

    fn state(&mut self, n: u8) -> Result<TcpState, String> {
        TcpState::from_kernel(n).ok_or_else(|| format!("unknown TCP state number {n}"))
    }
}

/// A command name from at most 15 bytes, as the kernel hands it over: NUL-padded, ending
/// at its first NUL byte if it has one.
fn comm_from_bytes(bytes: &[u8]) -> Comm {
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len()).min(COMM_MAX);
    let mut raw = [0u8; 16];
    raw[..len].copy_from_slice(&bytes[..len]);
    Comm::from_kernel(&raw)
}
