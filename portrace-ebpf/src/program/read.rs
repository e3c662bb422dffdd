//! Reading a transition: from the socket (main program, offsets from BTF) or from the
//! classic tracepoint's record (backup, offsets from tracefs), with the probe reads that
//! fail rather than fault.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_ktime_get_ns, bpf_probe_read_kernel,
        generated::{
            bpf_get_current_comm as get_comm_into, bpf_probe_read_kernel as probe_read_into,
        },
    },
    programs::TracePointContext,
    EbpfContext as _,
};
use portrace_ebpf::{
    logic::{v4_on_the_wire, words},
    Event, AF_INET, AF_INET6, IPPROTO_TCP,
};

use super::maps::{Slot, HEAD, INET_WINDOW};
use super::record::*;
use super::{lay, sock};

/// Reads a transition from the classic tracepoint's record into `ev`; `false` when it is
/// not TCP's.
#[inline(never)]
pub(super) fn read_tracepoint(ev: &mut Event, ctx: &TracePointContext) -> Result<bool, i32> {
    // SAFETY: bpf_ktime_get_ns reads the clock; it has no preconditions.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let protocol = if lay!(protocol_size) == 1 {
        // SAFETY: read_at copies from the tracepoint's record at an offset taken from this kernel's tracefs format; the copy is a checked probe read that fails rather than faults.
        u16::from(unsafe { ctx.read_at::<u8>(lay!(protocol) as usize)? })
    } else {
        // SAFETY: read_at copies from the tracepoint's record at an offset taken from this kernel's tracefs format; the copy is a checked probe read that fails rather than faults.
        unsafe { ctx.read_at::<u16>(lay!(protocol) as usize)? }
    };
    if protocol != IPPROTO_TCP {
        return Ok(false);
    }
    // SAFETY: read_at copies from the tracepoint's record at an offset taken from this kernel's tracefs format; the copy is a checked probe read that fails rather than faults.
    let family: u16 = unsafe { ctx.read_at(lay!(family) as usize)? };
    // SAFETY: read_at copies from the tracepoint's record at an offset taken from this kernel's tracefs format; the copy is a checked probe read that fails rather than faults.
    let oldstate: i32 = unsafe { ctx.read_at(lay!(oldstate) as usize)? };
    // SAFETY: read_at copies from the tracepoint's record at an offset taken from this kernel's tracefs format; the copy is a checked probe read that fails rather than faults.
    let newstate: i32 = unsafe { ctx.read_at(lay!(newstate) as usize)? };
    // SAFETY: read_at copies from the tracepoint's record at an offset taken from this kernel's tracefs format; the copy is a checked probe read that fails rather than faults.
    reset(
        ev,
        ts_ns,
        unsafe { ctx.read_at(lay!(skaddr) as usize)? },
        family,
    );
    // SAFETY: read_at copies from the tracepoint's record at an offset taken from this kernel's tracefs format; the copy is a checked probe read that fails rather than faults.
    ev.sport = unsafe { ctx.read_at(lay!(sport) as usize)? };
    // SAFETY: read_at copies from the tracepoint's record at an offset taken from this kernel's tracefs format; the copy is a checked probe read that fails rather than faults.
    ev.dport = unsafe { ctx.read_at(lay!(dport) as usize)? };
    ev.oldstate = oldstate as u8;
    ev.newstate = newstate as u8;
    let record = ctx.as_ptr() as u64;
    match family {
        AF_INET => {
            read_into(first4(&mut ev.saddr), record + lay!(saddr) as u64)?;
            read_into(first4(&mut ev.daddr), record + lay!(daddr) as u64)?;
        }
        AF_INET6 => {
            read_into(&mut ev.saddr, record + lay!(saddr_v6) as u64)?;
            read_into(&mut ev.daddr, record + lay!(daddr_v6) as u64)?;
            unmap_v4(ev);
        }
        _ => return Err(0),
    }
    Ok(true)
}

/// The first four bytes of an address: where an IPv4 address goes.
#[inline(always)]
pub(super) fn first4(a: &mut [u8; 16]) -> &mut [u8; 4] {
    // SAFETY: [u8; 16] starts with 4 bytes, and [u8; 4] has alignment 1.
    unsafe { &mut *(a.as_mut_ptr() as *mut [u8; 4]) }
}

/// Reads a kernel value at `offset` bytes from `base`.
pub(super) fn kread<T>(base: u64, offset: u16) -> Result<T, i32> {
    // SAFETY: a probe read of kernel memory: a bad address makes it fail, never fault.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T).map_err(|e| e as i32) }
}

/// Reads `size_of::<T>()` kernel bytes at `address` straight into `dst` (a record slot's
/// field), with no copy on the stack.
#[inline(always)]
pub(super) fn read_into<T>(dst: &mut T, address: u64) -> Result<(), i32> {
    // SAFETY: the helper writes exactly size_of::<T>() bytes into `dst`, and T here is
    // always an array of bytes, valid for any content.
    let ret = unsafe {
        probe_read_into(
            dst as *mut T as *mut c_void,
            core::mem::size_of::<T>() as u32,
            address as *const c_void,
        )
    };
    if ret < 0 {
        Err(ret as i32)
    } else {
        Ok(())
    }
}

/// The current task's command, straight into `dst`.
#[inline(always)]
pub(super) fn comm_into(dst: &mut [u8; 16]) {
    // SAFETY: the helper writes at most 16 bytes, NUL-padded; on failure it zeroes them.
    unsafe { get_comm_into(dst.as_mut_ptr() as *mut c_void, 16) };
}

/// Reads a transition made at `ts_ns` from the socket into the slot's record:
/// [`Read::NotTcp`] when it is
/// not a TCP socket's, [`Read::Whole`] when the socket's head could be read in one piece
/// (into the slot's `head`; see [`head_fits`]), with the namespace and cookie then read
/// too, [`Read::Transition`] otherwise.
#[inline(never)]
pub(super) fn read_socket(
    slot: &mut Slot,
    sk: *const c_void,
    oldstate: u8,
    newstate: u8,
    ts_ns: u64,
) -> Result<Read, i32> {
    let sk = sk as u64;
    let protocol = if sock!(protocol_size) == 1 {
        u16::from(kread::<u8>(sk, sock!(protocol))?)
    } else {
        kread::<u16>(sk, sock!(protocol))?
    };
    if protocol != IPPROTO_TCP {
        return Ok(Read::NotTcp);
    }
    // One read of the head instead of one per field: family, remote port, addresses,
    // namespace and cookie all lie in it.
    let Slot {
        event: ev,
        head,
        inet,
    } = slot;
    if head_fits() && read_into(head, sk).is_ok() {
        let family = u16_at(head, sock!(family).into());
        reset(ev, ts_ns, sk, family);
        ev.dport = u16::from_be(u16_at(head, sock!(dport).into()));
        ev.oldstate = oldstate;
        ev.newstate = newstate;
        match family {
            AF_INET => {
                // The local address and port the tracepoint reports are `inet_sock`'s,
                // outside the head: one read when they are neighbours.
                let (saddr, sport) = (sock!(saddr) as usize, sock!(sport) as usize);
                let low = saddr.min(sport);
                if (saddr + 4).max(sport + 2) - low <= INET_WINDOW
                    && read_into(inet, sk + low as u64).is_ok()
                {
                    ev.sport = u16::from_be(u16_at(inet, sport - low));
                    copy_at(inet, saddr - low, first4(&mut ev.saddr));
                } else {
                    ev.sport = u16::from_be(kread(sk, sock!(sport))?);
                    read_into(first4(&mut ev.saddr), sk + sock!(saddr) as u64)?;
                }
                copy_at(head, sock!(daddr).into(), first4(&mut ev.daddr));
            }
            AF_INET6 => {
                ev.sport = u16::from_be(kread(sk, sock!(sport))?);
                copy_at(head, sock!(saddr_v6).into(), &mut ev.saddr);
                copy_at(head, sock!(daddr_v6).into(), &mut ev.daddr);
                unmap_v4(ev);
            }
            _ => return Err(0),
        }
        let net = u64_at(head, sock!(net).into());
        ev.netns = if net == 0 {
            0
        } else {
            kread(net, sock!(net_inum)).unwrap_or(0)
        };
        ev.aux = u64_at(head, sock!(cookie).into());
        return Ok(Read::Whole);
    }
    let family: u16 = kread(sk, sock!(family))?;
    reset(ev, ts_ns, sk, family);
    ev.sport = u16::from_be(kread(sk, sock!(sport))?);
    ev.dport = u16::from_be(kread(sk, sock!(dport))?);
    ev.oldstate = oldstate;
    ev.newstate = newstate;
    read_addresses(ev, sk, sock!(saddr))?;
    Ok(Read::Transition)
}

/// What [`read_socket`] read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Read {
    /// Not a TCP socket: nothing to report.
    NotTcp,
    /// A transition, without its namespace and cookie.
    Transition,
    /// A transition with its namespace and cookie.
    Whole,
}

/// Whether every `sock_common` field the main program reads lies in the first [`HEAD`]
/// bytes of the socket on this kernel (its BTF's offsets).
#[inline(always)]
fn head_fits() -> bool {
    let within = |at: u16, size: usize| at as usize + size <= HEAD;
    sock!(valid) != 0
        && within(sock!(family), 2)
        && within(sock!(dport), 2)
        && within(sock!(daddr), 4)
        && within(sock!(saddr_v6), 16)
        && within(sock!(daddr_v6), 16)
        && within(sock!(net), 8)
        && within(sock!(cookie), 8)
}

/// Copies `N` bytes of `buf` (the socket's head, or the window around `inet_sock`'s
/// address and port) at `at` into `dst`; leaves `dst` as it is past the end of `buf`,
/// which the callers rule out. A byte at a time, each behind the same bound: the verifier
/// sees every index in range, and nothing can panic.
#[inline(always)]
fn copy_at<const L: usize, const N: usize>(buf: &[u8; L], at: usize, dst: &mut [u8; N]) {
    if at > L || L - at < N {
        return;
    }
    for (i, b) in dst.iter_mut().enumerate() {
        if let Some(&byte) = buf.get(at + i) {
            *b = byte;
        }
    }
}

/// The `u16` in `buf` at `at` (0 past its end).
#[inline(always)]
fn u16_at<const L: usize>(buf: &[u8; L], at: usize) -> u16 {
    let mut bytes = [0u8; 2];
    copy_at(buf, at, &mut bytes);
    u16::from_ne_bytes(bytes)
}

/// The `u64` in `buf` at `at` (0 past its end).
#[inline(always)]
fn u64_at<const L: usize>(buf: &[u8; L], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    copy_at(buf, at, &mut bytes);
    u64::from_ne_bytes(bytes)
}

/// Reads the addresses from a socket (`saddr_at`: where its local IPv4 address is).
#[inline(always)]
pub(super) fn read_addresses(ev: &mut Event, sk: u64, saddr_at: u16) -> Result<(), i32> {
    match ev.family {
        AF_INET => {
            read_into(first4(&mut ev.saddr), sk + saddr_at as u64)?;
            read_into(first4(&mut ev.daddr), sk + sock!(daddr) as u64)?;
        }
        AF_INET6 => {
            read_into(&mut ev.saddr, sk + sock!(saddr_v6) as u64)?;
            read_into(&mut ev.daddr, sk + sock!(daddr_v6) as u64)?;
            unmap_v4(ev);
        }
        _ => return Err(0),
    }
    Ok(())
}

/// The socket's network namespace inode number (0 when it cannot be read).
pub(super) fn netns_of(sk: u64) -> u32 {
    let net: u64 = kread(sk, sock!(net)).unwrap_or(0);
    if net == 0 {
        return 0;
    }
    kread(net, sock!(net_inum)).unwrap_or(0)
}

/// An IPv6 socket whose addresses are v4-mapped (or unspecified) is IPv4 on the wire.
pub(super) fn unmap_v4(ev: &mut Event) {
    if let Some((s, d)) = v4_on_the_wire(words(&ev.saddr), words(&ev.daddr)) {
        ev.family = AF_INET;
        clear16(&mut ev.saddr);
        clear16(&mut ev.daddr);
        *first4(&mut ev.saddr) = s.to_ne_bytes();
        *first4(&mut ev.daddr) = d.to_ne_bytes();
    }
}
