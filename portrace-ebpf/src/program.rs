//! portrace's kernel program: on every `sock:inet_sock_set_state` tracepoint hit it keeps
//! TCP transitions only, applies the user's filter, and writes the survivors into a ring
//! buffer. Nothing is reserved for a transition the filter drops; every transition that
//! finds the ring full is counted.
//!
//! Field offsets come from userspace (`LAYOUT`, read from tracefs at start-up), so the same
//! object runs on kernels whose tracepoint layout differs.

use core::ffi::c_void;
use core::ptr::{addr_of, read_volatile};

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
    },
    macros::{map, raw_tracepoint, tracepoint},
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::{RawTracePointContext, TracePointContext},
};
use portrace_ebpf::{
    counter, tcp, Event, Filter, Layout, SockLayout, AF_INET, AF_INET6, HOLD_ENTRIES,
    IPPROTO_TCP, MAX_NETS, MAX_PIDS, MAX_PORTS,
};

/// Tracepoint field offsets, set by userspace before load.
#[no_mangle]
static LAYOUT: Layout = Layout::ZERO;

/// Socket field offsets for the backup program, set by userspace from BTF before load.
#[no_mangle]
static SOCK: SockLayout = SockLayout::ZERO;

/// What to keep, set by userspace before load.
#[no_mangle]
static FILTER: Filter = Filter::ALL;

/// Wake the reader only once this many bytes wait in the ring; below that the reader finds
/// them by polling. A wakeup per event costs the traced host several microseconds each
/// time, and makes the program long enough to be interrupted and skipped.
#[no_mangle]
static WAKEUP_BYTES: u64 = 0;

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// `CLOSE -> SYN_SENT` transitions held until their socket's local port is known.
#[map]
static HOLD: LruHashMap<u64, Event> = LruHashMap::with_max_entries(HOLD_ENTRIES, 0);

/// Per CPU: 1 while the main program runs there. The kernel never runs a tracepoint program
/// inside itself: a transition that fires while it runs (a softirq interrupting it) is
/// skipped for it. The backup program sees this flag set exactly then.
#[map]
static BUSY: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// The main program, on the classic tracepoint.
#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let busy = BUSY.get_ptr_mut(0);
    if let Some(busy) = busy {
        unsafe { *busy = 1 };
    }
    let _ = from_tracepoint(&ctx);
    if let Some(busy) = busy {
        unsafe { *busy = 0 };
    }
    0
}

/// The backup program, on the raw tracepoint, which the kernel guards per program rather
/// than per CPU: it records a transition only when the main program is mid-run on this CPU
/// and was therefore skipped for it, reading the socket itself.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state_backup(ctx: RawTracePointContext) -> i32 {
    match BUSY.get(0) {
        Some(&1) => {}
        _ => return 0,
    }
    bump(counter::RESCUED);
    let sk: *const c_void = ctx.arg(0);
    let oldstate: u64 = ctx.arg(1);
    let newstate: u64 = ctx.arg(2);
    let _ = from_socket(sk, oldstate as u8, newstate as u8);
    0
}

/// Reads a global that userspace rewrote before load; volatile so the compiler does not
/// fold in the placeholder value.
macro_rules! global {
    ($place:expr) => {
        unsafe { read_volatile(addr_of!($place)) }
    };
}

fn from_tracepoint(ctx: &TracePointContext) -> Result<(), i32> {
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let layout: Layout = global!(LAYOUT);
    let protocol = if layout.protocol_size == 1 {
        u16::from(unsafe { ctx.read_at::<u8>(layout.protocol as usize)? })
    } else {
        unsafe { ctx.read_at::<u16>(layout.protocol as usize)? }
    };
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let mut ev = read_event(ctx, &layout)?;
    ev.ts_ns = ts_ns;
    process(ev);
    Ok(())
}

/// Reads a kernel value at `offset` bytes from `base`.
fn kread<T>(base: *const c_void, offset: u16) -> Result<T, i32> {
    unsafe { bpf_probe_read_kernel(base.cast::<u8>().add(offset as usize).cast::<T>()).map_err(|e| e as i32) }
}

fn from_socket(sk: *const c_void, oldstate: u8, newstate: u8) -> Result<(), i32> {
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let l: SockLayout = global!(SOCK);
    let protocol = if l.protocol_size == 1 {
        u16::from(kread::<u8>(sk, l.protocol)?)
    } else {
        kread::<u16>(sk, l.protocol)?
    };
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let family: u16 = kread(sk, l.family)?;
    let mut ev = Event {
        ts_ns,
        skaddr: sk as u64,
        saddr: [0; 16],
        daddr: [0; 16],
        pid: 0,
        tid: 0,
        comm: [0; 16],
        sport: u16::from_be(kread(sk, l.sport)?),
        dport: u16::from_be(kread(sk, l.dport)?),
        family,
        oldstate,
        newstate,
    };
    match family {
        AF_INET => {
            let s: [u8; 4] = kread(sk, l.saddr)?;
            let d: [u8; 4] = kread(sk, l.daddr)?;
            ev.saddr[..4].copy_from_slice(&s);
            ev.daddr[..4].copy_from_slice(&d);
        }
        AF_INET6 => {
            ev.saddr = kread(sk, l.saddr_v6)?;
            ev.daddr = kread(sk, l.daddr_v6)?;
            unmap_v4(&mut ev);
        }
        _ => return Err(0),
    }
    process(ev);
    Ok(())
}

/// Everything after reading: the filter, holding unbound `SYN_SENT`s, and output.
fn process(mut ev: Event) {
    let pid_tgid = bpf_get_current_pid_tgid();
    ev.pid = (pid_tgid >> 32) as u32;
    ev.tid = pid_tgid as u32;

    let hold_unbound = global!(FILTER.hold_unbound) != 0;
    if hold_unbound {
        if ev.sport == 0 && ev.newstate == tcp::SYN_SENT {
            // The local port is bound right after this transition: keep it until the
            // socket's next transition tells whether the port matches.
            if passes(&ev, true) {
                ev.comm = bpf_get_current_comm().unwrap_or_default();
                let _ = HOLD.insert(&ev.skaddr, &ev, 0);
            }
            return;
        }
        if let Some(held) = unsafe { HOLD.get(&ev.skaddr) } {
            let held = *held;
            let _ = HOLD.remove(&ev.skaddr);
            if passes(&ev, false) {
                emit(&held);
                bump(counter::RELEASED);
            }
        }
    }
    if !passes(&ev, false) {
        return;
    }
    ev.comm = bpf_get_current_comm().unwrap_or_default();
    emit(&ev);
}

/// Builds the event from the tracepoint record.
fn read_event(ctx: &TracePointContext, l: &Layout) -> Result<Event, i32> {
    let family: u16 = unsafe { ctx.read_at(l.family as usize)? };
    let oldstate: i32 = unsafe { ctx.read_at(l.oldstate as usize)? };
    let newstate: i32 = unsafe { ctx.read_at(l.newstate as usize)? };
    let mut ev = Event {
        ts_ns: 0,
        skaddr: unsafe { ctx.read_at(l.skaddr as usize)? },
        saddr: [0; 16],
        daddr: [0; 16],
        pid: 0,
        tid: 0,
        comm: [0; 16],
        sport: unsafe { ctx.read_at(l.sport as usize)? },
        dport: unsafe { ctx.read_at(l.dport as usize)? },
        family,
        oldstate: oldstate as u8,
        newstate: newstate as u8,
    };
    match family {
        AF_INET => {
            let s: [u8; 4] = unsafe { ctx.read_at(l.saddr as usize)? };
            let d: [u8; 4] = unsafe { ctx.read_at(l.daddr as usize)? };
            ev.saddr[..4].copy_from_slice(&s);
            ev.daddr[..4].copy_from_slice(&d);
        }
        AF_INET6 => {
            ev.saddr = unsafe { ctx.read_at(l.saddr_v6 as usize)? };
            ev.daddr = unsafe { ctx.read_at(l.daddr_v6 as usize)? };
            unmap_v4(&mut ev);
        }
        _ => return Err(0),
    }
    Ok(ev)
}

/// An IPv6 socket whose addresses are v4-mapped (or unspecified) is IPv4 on the wire.
fn unmap_v4(ev: &mut Event) {
    let (s, d) = (words(&ev.saddr), words(&ev.daddr));
    let s_v4 = is_v4_mapped(s) || s == [0; 4];
    let d_v4 = is_v4_mapped(d) || d == [0; 4];
    if s_v4 && d_v4 && (is_v4_mapped(s) || is_v4_mapped(d)) {
        ev.family = AF_INET;
        ev.saddr = [0; 16];
        ev.daddr = [0; 16];
        ev.saddr[..4].copy_from_slice(&s[3].to_ne_bytes());
        ev.daddr[..4].copy_from_slice(&d[3].to_ne_bytes());
    }
}

fn words(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}

const V4_MAPPED_MARK: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

fn is_v4_mapped(w: [u32; 4]) -> bool {
    w[0] == 0 && w[1] == 0 && w[2] == V4_MAPPED_MARK
}

/// The address as the filter compares it: IPv4 addresses v4-mapped.
fn filter_words(ev: &Event, a: &[u8; 16]) -> [u32; 4] {
    let w = words(a);
    if ev.family == AF_INET {
        [0, 0, V4_MAPPED_MARK, w[0]]
    } else {
        w
    }
}

/// Whether the transition passes the user's filter. With `local_port_unknown`, conditions
/// on the local port count as met.
fn passes(ev: &Event, local_port_unknown: bool) -> bool {
    let family = global!(FILTER.family);
    if family != 0 && family != ev.family {
        return false;
    }
    let states = global!(FILTER.states);
    if states != 0 {
        let bit = |s: u8| s <= tcp::MAX && (states >> s) & 1 != 0;
        if !bit(ev.oldstate) && !bit(ev.newstate) {
            return false;
        }
    }
    let n_pids = global!(FILTER.n_pids) as usize;
    if n_pids != 0 {
        let mut found = false;
        for i in 0..MAX_PIDS {
            if i < n_pids && global!(FILTER.pids[i]) == ev.pid {
                found = true;
            }
        }
        if !found {
            return false;
        }
    }
    if !local_port_unknown && !port_listed(global!(FILTER.n_lports), |i| global!(FILTER.lports[i]), ev.sport) {
        return false;
    }
    if !port_listed(global!(FILTER.n_rports), |i| global!(FILTER.rports[i]), ev.dport) {
        return false;
    }
    let n_ports = global!(FILTER.n_ports);
    if n_ports != 0
        && !local_port_unknown
        && !port_listed(n_ports, |i| global!(FILTER.ports[i]), ev.sport)
        && !port_listed(n_ports, |i| global!(FILTER.ports[i]), ev.dport)
    {
        return false;
    }
    let n_nets = global!(FILTER.n_nets) as usize;
    if n_nets != 0 {
        let (s, d) = (filter_words(ev, &ev.saddr), filter_words(ev, &ev.daddr));
        let mut found = false;
        for i in 0..MAX_NETS {
            if i < n_nets {
                let addr = words(&global!(FILTER.nets[i].addr));
                let mask = words(&global!(FILTER.nets[i].mask));
                if in_net(s, addr, mask) || in_net(d, addr, mask) {
                    found = true;
                }
            }
        }
        if !found {
            return false;
        }
    }
    true
}

/// True when the list is empty or holds `port`.
fn port_listed(n: u16, at: impl Fn(usize) -> u16, port: u16) -> bool {
    if n == 0 {
        return true;
    }
    let mut found = false;
    for i in 0..MAX_PORTS {
        if i < n as usize && at(i) == port {
            found = true;
        }
    }
    found
}

fn in_net(a: [u32; 4], net: [u32; 4], mask: [u32; 4]) -> bool {
    a[0] & mask[0] == net[0]
        && a[1] & mask[1] == net[1]
        && a[2] & mask[2] == net[2]
        && a[3] & mask[3] == net[3]
}

fn emit(ev: &Event) {
    match EVENTS.reserve::<Event>(0) {
        Some(mut slot) => {
            slot.write(*ev);
            let flags = if EVENTS.query(BPF_RB_AVAIL_DATA.into()) >= global!(WAKEUP_BYTES) {
                BPF_RB_FORCE_WAKEUP
            } else {
                BPF_RB_NO_WAKEUP
            };
            slot.submit(flags.into());
            bump(counter::EMITTED);
        }
        None => bump(counter::RING_FULL),
    }
}

fn bump(index: u32) {
    if let Some(count) = COUNTERS.get_ptr_mut(index) {
        unsafe { *count += 1 };
    }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
