//! Following a connection into its timewait socket, which the state tracepoint never
//! reports: the timer programs (armed, removed, expired), the packet program for the
//! orphan's FIN_WAIT2 -> TIME_WAIT, and the hand-over that links the two sockets.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
    EbpfContext as _,
};
use portrace_ebpf::{
    counter, kind, owner_source, tcp, Event, Owner, TimeWaitEntry, TwTuple, AF_INET, AF_INET6,
    IPPROTO_TCP, REARM_WINDOW_NS,
};

use super::filter::*;
use super::globals::*;
use super::maps::*;
use super::read::*;
use super::record::*;
use super::transition::*;
use super::{global, sock};

/// How long after its timer was armed a timewait socket may still be matched to the full
/// socket's transition: they happen one after the other in the same kernel function, but
/// interrupts can come between, and a virtual CPU's host can stall it (as `REARM_WINDOW_NS`
/// says). The newest arming that matches is taken, so a stale one never wins over it.
pub(super) const PENDING_TW_NS: u64 = REARM_WINDOW_NS;

/// At a transition into CLOSE: if the connection just moved to a timewait socket (its timer
/// was armed a moment ago on this CPU, for the same ports), remember that socket and mark
/// the transition as a hand-over.
#[inline(never)]
pub(super) fn claim_timewait(ev: &mut Event, owner: &Owner) {
    if !matches!(ev.oldstate, tcp::FIN_WAIT1 | tcp::FIN_WAIT2 | tcp::CLOSING) {
        return;
    }
    let Some((tw, armed)) = take_pending_tw(ev) else {
        return;
    };
    let mut entry = TimeWaitEntry {
        skaddr: ev.skaddr,
        owner: *owner,
        substate: armed,
        _pad: [0; 7],
    };
    if TIMEWAITS.insert(&tw, &entry, 0).is_err() {
        bump(counter::TIMEWAIT_FULL);
        return;
    }
    if global!(KFREE_SKB_RX_SK) == 0 && sock!(skb_head) != 0 {
        remember_tuple(ev, tw);
    }
    ev.kind = kind::HANDOVER;
    ev.aux = tw;
    ev.tw_substate = armed;
    // The connection lives on in the timewait socket's state, not in CLOSE.
    ev.newstate = armed;
    // The timewait socket was live before this entry existed: the peer's FIN may have
    // reached it on another CPU meanwhile (FIN_WAIT2 -> TIME_WAIT), whose timer program
    // found no entry to report it by and noted the re-arm instead. The hand-over then
    // reports the state it has now, as of that re-arm (its time and task); without a
    // note, as of now. (When the other CPU's program sees the entry first and reports the
    // change too, userspace shows it once.) The note is read where it is, not copied.
    let early = EARLY_TW.get_ptr(&tw);
    // SAFETY: the map keeps the value's memory valid while the program runs; a value being
    // replaced meanwhile is only a hint gone stale.
    let early_substate = early.map(|e| unsafe { (*e).substate });
    let now = match early_substate {
        Some(noted) if noted != armed => Some(noted),
        _ => kread::<u8>(tw, sock!(tw_substate)).ok(),
    };
    if let Some(now) = now {
        if now != armed && matches!(now, tcp::TIME_WAIT | tcp::FIN_WAIT2 | tcp::CLOSING) && adopt(tw, &mut entry, now) {
            ev.tw_substate = now;
            ev.newstate = now;
            if let (Some(e), Some(noted)) = (early, early_substate) {
                if noted == now {
                    // SAFETY: a pointer the map gave for this CPU's (or this key's) value: valid while the program runs, and kept apart from nested runs on this CPU as the map's notes say.
                    unsafe {
                        ev.ts_ns = (*e).ts_ns;
                        ev.pid = ((*e).pid_tgid >> 32) as u32;
                        ev.tid = (*e).pid_tgid as u32;
                        ev.comm = (*e).comm;
                    }
                }
            }
        }
    }
    if early.is_some() {
        let _ = EARLY_TW.remove(&tw);
    }
}

/// Moves the entry just claimed for timewait socket `tw` to state `now`, which the
/// hand-over read from the socket, unless a program on another CPU (the peer's FIN arriving
/// there) made that change first and so reports it: returns whether the hand-over is to
/// report it. One of the two does, never both, so a change is neither shown nor counted
/// lost twice.
#[inline(always)]
fn adopt(tw: u64, entry: &mut TimeWaitEntry, now: u8) -> bool {
    match TIMEWAITS.get_ptr_mut(&tw) {
        // SAFETY: a pointer the map gave for this key's value, valid while the program runs.
        Some(claimed) => unsafe { swap_substate(claimed, now) != now },
        None => {
            // Removed meanwhile (a timer removal on another CPU): claimed again, as read.
            entry.substate = now;
            let _ = TIMEWAITS.insert(&tw, entry, 0);
            true
        }
    }
}

/// Sets a timewait entry's state atomically and returns the state it had: of two CPUs
/// making the same change at once, exactly one sees the state before it.
///
/// # Safety
/// `entry` points to a value of the timewait map, valid while the program runs.
#[inline(always)]
unsafe fn swap_substate(entry: *mut TimeWaitEntry, substate: u8) -> u8 {
    // The state and its padding are one aligned 8-byte word, the state its low byte.
    // SAFETY: as the caller promises; the word lies within the value (asserted below).
    unsafe {
        let word = (&raw mut (*entry).substate).cast::<u64>();
        core::intrinsics::atomic_xchg::<u64, { core::intrinsics::AtomicOrdering::SeqCst }>(word, u64::from(substate))
            as u8
    }
}

const _: () = {
    assert!(core::mem::offset_of!(TimeWaitEntry, substate) % 8 == 0);
    assert!(core::mem::offset_of!(TimeWaitEntry, substate) + 8 == core::mem::size_of::<TimeWaitEntry>());
    assert!(cfg!(target_endian = "little"));
};

/// Takes the timewait socket armed a moment ago on this CPU for the connection `ev` is a
/// transition of (same ports), if there is one: its address and its state when armed.
pub(super) fn take_pending_tw(ev: &Event) -> Option<(u64, u8)> {
    let pending = PENDING_TW.get_ptr_mut(0)?;
    let mut found = PENDING_TW_SLOTS;
    let mut newest = 0u64;
    for i in 0..PENDING_TW_SLOTS {
        // SAFETY: this CPU's map value, valid while the program runs.
        let p = unsafe { &(*pending).slots[i] };
        if p.tw != 0
            && p.sport == ev.sport
            && p.dport == ev.dport
            && ev.ts_ns.wrapping_sub(p.ts_ns) <= PENDING_TW_NS
            && (found == PENDING_TW_SLOTS || p.ts_ns > newest)
        {
            found = i;
            newest = p.ts_ns;
        }
    }
    if found >= PENDING_TW_SLOTS {
        return None;
    }
    // SAFETY: as above; `found` is a valid slot index.
    let slot = unsafe { &mut (*pending).slots[found] };
    let taken = (slot.tw, slot.substate);
    slot.tw = 0;
    Some(taken)
}

/// The timewait socket a timer belongs to, if it is a timewait timer.
pub(super) fn timewait_of(timer: u64) -> Option<u64> {
    let handler = TW_HANDLER.get(0).copied().unwrap_or(0);
    if handler == 0 || timer == 0 {
        return None;
    }
    let function: u64 = kread(timer, sock!(timer_function)).ok()?;
    if function != handler {
        return None;
    }
    Some(timer - sock!(tw_timer) as u64)
}

/// The timewait socket whose timer was removed a moment ago on this CPU, if it is `tw`.
pub(super) fn take_cancelled(tw: u64) -> Option<Removal> {
    let slot = CANCELLED.get_ptr_mut(0)?;
    // SAFETY: this CPU's map value, valid while the program runs.
    unsafe {
        if !take_mark(&raw mut (*slot).tw, (*slot).ts_ns, tw) {
            return None;
        }
        Some(Removal {
            entry: (*slot).entry,
            delivered: (*slot).delivered != 0,
        })
    }
}

/// What [`take_cancelled`] hands on of a removal.
pub(super) struct Removal {
    pub(super) entry: TimeWaitEntry,
    /// Whether the removal's record reached the ring buffer.
    pub(super) delivered: bool,
}

/// After a removal's follow-up: when userspace got the removal but not the follow-up, it
/// is told, so that it does not take the removal for a kill.
pub(super) fn followed(tw: u64, removal: &Removal, delivered: bool) {
    if removal.delivered && !delivered {
        // SAFETY: bpf_ktime_get_ns reads the clock; it has no preconditions.
        let _ = FOLLOWED.insert(&tw, &unsafe { bpf_ktime_get_ns() }, 0);
    }
}

/// Reports a timewait socket's new state, if it changed.
pub(super) fn substate_changed(tw: u64, entry: *mut TimeWaitEntry, substate: u8) {
    // SAFETY: a value of the timewait map, changed in place (no copy on the stack); valid
    // while the program runs.
    unsafe {
        if (*entry).substate == substate {
            return;
        }
        // A hand-over on another CPU may make the same change at the same moment: only the
        // one that swaps the state out reports it.
        let before = swap_substate(entry, substate);
        if before == substate {
            return;
        }
        timewait_report(tw, &*entry, kind::TW_ARMED, before);
    }
}

/// Reports a timewait socket's event, counting one that cannot be read. Returns whether
/// its record reached the ring buffer.
pub(super) fn timewait_report(tw: u64, entry: &TimeWaitEntry, kind: u8, before: u8) -> bool {
    match with_scratch(|ev| timewait_event(ev, tw, entry, kind, before)) {
        Some(Ok(delivered)) => delivered,
        _ => {
            bump(counter::UNREADABLE);
            false
        }
    }
}

/// `timer_start(struct timer_list *timer, unsigned long expires, unsigned int flags)`.
#[raw_tracepoint(tracepoint = "timer_start")]
pub fn timer_start(ctx: RawTracePointContext) -> i32 {
    on_start(ctx.arg(0))
}

/// The same, BTF-typed: the kernel runs it for every timer armed, and for all but the
/// timewait sockets' it ends after one plain load (see [`typed_timewait_timer`]).
#[btf_tracepoint(function = "timer_start")]
pub fn timer_start_typed(ctx: BtfTracePointContext) -> i32 {
    match typed_timewait_timer(&ctx) {
        Some(timer) => on_start(timer),
        None => 0,
    }
}

#[inline(always)]
fn on_start(timer: u64) -> i32 {
    let Some(tw) = timewait_of(timer) else {
        return 0;
    };
    let substate: u8 = kread(tw, sock!(tw_substate)).unwrap_or(0);
    offer_armed(tw, substate);
    armed(tw, substate);
    0
}

/// A typed timer program's first argument (`struct timer_list *`) when the timer is a
/// timewait socket's, as a plain number for the rest of the work. The kernel's other
/// timers, nearly all of them, end here after a plain load of the timer's function, which
/// the verifier checks against the structure's BTF and makes safe against a fault (a raw
/// tracepoint needs a probe read for it, about twice the cost of the whole run). The
/// address itself is then read by a probe read of the argument: the verifier's typed
/// pointer must not reach the functions shared with the raw programs, and this path is
/// the rare one.
#[inline(always)]
fn typed_timewait_timer(ctx: &BtfTracePointContext) -> Option<u64> {
    let handler = TW_HANDLER.get(0).copied().unwrap_or(0);
    let timer: *const u8 = ctx.arg(0);
    if handler == 0 || timer.is_null() {
        return None;
    }
    // SAFETY: `timer` is the tracepoint's typed pointer to a live `struct timer_list`, and
    // `timer_function` is that structure's `function` member's offset, from this kernel's
    // BTF; the verifier checks the load against the structure and guards it.
    let function = unsafe {
        core::ptr::read_volatile(timer.add(sock!(timer_function) as usize) as *const u64)
    };
    if function != handler {
        return None;
    }
    // SAFETY: the context is the tracepoint's array of arguments; the probe read fails
    // rather than faults.
    unsafe { bpf_probe_read_kernel(ctx.as_ptr() as *const u64) }.ok()
}

/// Offers a timewait socket just armed to the transition that follows a first arming: the
/// full socket the timewait socket replaces goes to CLOSE right after, on this CPU. A
/// re-arm has no such transition; and when one does follow what looked like a re-arm, the
/// address held a killed timewait socket a moment ago and now holds a new one, which the
/// transition claims.
#[inline(never)]
pub(super) fn offer_armed(tw: u64, substate: u8) {
    let Some(pending) = PENDING_TW.get_ptr_mut(0) else {
        return;
    };
    let sport: u16 = kread(tw, sock!(num)).unwrap_or(0);
    let dport: u16 = u16::from_be(kread(tw, sock!(dport)).unwrap_or(0));
    // SAFETY: this CPU's map value, valid while the program runs; written field by field.
    unsafe {
        let i = (*pending).next as usize % PENDING_TW_SLOTS;
        (*pending).next = (*pending).next.wrapping_add(1);
        let slot = &mut (*pending).slots[i];
        slot.tw = tw;
        slot.ts_ns = bpf_ktime_get_ns();
        slot.sport = sport;
        slot.dport = dport;
        slot.substate = substate;
    }
}

/// What a timewait socket's timer being armed means: the re-arm of a timer just removed,
/// a change of state of a timewait socket portrace knows, or one it does not know yet.
#[inline(never)]
pub(super) fn armed(tw: u64, substate: u8) {
    // A timewait socket never goes back from TIME_WAIT to FIN_WAIT2: an "arming" that does
    // is a new timewait socket in a killed one's memory, whose hand-over follows.
    let removal = take_cancelled(tw)
        .filter(|r| !(r.entry.substate == tcp::TIME_WAIT && substate == tcp::FIN_WAIT2));
    if let Some(mut r) = removal {
        // Re-armed: the same timewait socket goes on. Say so even when its state is the
        // same, so the removal reported a moment ago is not taken for its end.
        let before = r.entry.substate;
        r.entry.substate = substate;
        let _ = TIMEWAITS.insert(&tw, &r.entry, 0);
        let delivered = timewait_report(tw, &r.entry, kind::TW_ARMED, before);
        followed(tw, &r, delivered);
    } else if let Some(entry) = TIMEWAITS.get_ptr_mut(&tw) {
        substate_changed(tw, entry, substate);
    } else if rearm_of_unclaimed(tw) {
        note_early(tw, substate);
    }
}

/// Whether an arming of unclaimed timewait socket `tw` is a re-arm: the kernel removed the
/// timer a moment ago on this CPU (it removes a pending timer right before re-arming it,
/// in the same call; a first arming has no removal before it).
pub(super) fn rearm_of_unclaimed(tw: u64) -> bool {
    let Some(slot) = CANCELLED.get_ptr_mut(0) else {
        // Cannot tell: a note costs time but loses nothing.
        return true;
    };
    // SAFETY: this CPU's map value, valid while the program runs.
    unsafe { take_mark(&raw mut (*slot).unclaimed_tw, (*slot).unclaimed_ts_ns, tw) }
}

/// Whether a mark of this CPU's `CANCELLED` slot, made at `at`, names `tw` and is recent
/// enough to belong to this re-arm or expiry; if so, clears it (one follow-up per removal).
///
/// # Safety
/// `mark` points into this CPU's `CANCELLED` value.
#[inline(always)]
unsafe fn take_mark(mark: *mut u64, at: u64, tw: u64) -> bool {
    // SAFETY: as the caller promises.
    unsafe {
        if *mark != tw || bpf_ktime_get_ns().wrapping_sub(at) > REARM_WINDOW_NS {
            return false;
        }
        *mark = 0;
    }
    true
}

/// Notes a timewait socket re-armed before any hand-over claimed it (see `EARLY_TW`).
#[inline(never)]
pub(super) fn note_early(tw: u64, substate: u8) {
    let mut early = EarlyTw {
        // SAFETY: bpf_ktime_get_ns reads the clock; it has no preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        pid_tgid: bpf_get_current_pid_tgid(),
        comm: [0; 16],
        substate,
        _pad: [0; 7],
    };
    comm_into(&mut early.comm);
    let _ = EARLY_TW.insert(&tw, &early, 0);
}

/// `timer_expire_entry(struct timer_list *timer, unsigned long baseclk)`.
#[raw_tracepoint(tracepoint = "timer_expire_entry")]
pub fn timer_expire_entry(ctx: RawTracePointContext) -> i32 {
    let timer: u64 = ctx.arg(0);
    let Some(tw) = timewait_of(timer) else {
        return 0;
    };
    expired(tw);
    0
}

/// A timewait socket's life is over.
#[inline(never)]
pub(super) fn expired(tw: u64) {
    let removal = take_cancelled(tw);
    let mut entry = match &removal {
        Some(r) => r.entry,
        // SAFETY: the map value is read at once, while this program runs; the kernel keeps it valid until the program returns, even if another CPU deletes the entry.
        None => match unsafe { TIMEWAITS.get(&tw) } {
            Some(entry) => *entry,
            None => return,
        },
    };
    let _ = TIMEWAITS.remove(&tw);
    let before = entry.substate;
    entry.substate = kread(tw, sock!(tw_substate)).unwrap_or(entry.substate);
    let delivered = timewait_report(tw, &entry, kind::TW_EXPIRE, before);
    if let Some(r) = removal {
        followed(tw, &r, delivered);
    }
}

/// `timer_cancel(struct timer_list *timer)`.
#[raw_tracepoint(tracepoint = "timer_cancel")]
pub fn timer_cancel(ctx: RawTracePointContext) -> i32 {
    on_cancel(ctx.arg(0))
}

/// The same, BTF-typed (see [`timer_start_typed`]).
#[btf_tracepoint(function = "timer_cancel")]
pub fn timer_cancel_typed(ctx: BtfTracePointContext) -> i32 {
    match typed_timewait_timer(&ctx) {
        Some(timer) => on_cancel(timer),
        None => 0,
    }
}

#[inline(always)]
fn on_cancel(timer: u64) -> i32 {
    let Some(tw) = timewait_of(timer) else {
        return 0;
    };
    // SAFETY: the map value is read at once, while this program runs; the kernel keeps it valid until the program returns, even if another CPU deletes the entry.
    let Some(entry) = (unsafe { TIMEWAITS.get(&tw) }).copied() else {
        // Not claimed yet: an arming right after is a re-arm (see `rearm_of_unclaimed`).
        if let Some(slot) = CANCELLED.get_ptr_mut(0) {
            // SAFETY: this CPU's map value; written field by field.
            unsafe {
                (*slot).unclaimed_tw = tw;
                (*slot).unclaimed_ts_ns = bpf_ktime_get_ns();
            }
        }
        return 0;
    };
    let _ = TIMEWAITS.remove(&tw);
    let delivered = timewait_report(tw, &entry, kind::TW_CANCEL, entry.substate);
    if let Some(slot) = CANCELLED.get_ptr_mut(0) {
        // SAFETY: this CPU's map value; written field by field, with no copy on the stack.
        unsafe {
            (*slot).tw = tw;
            (*slot).ts_ns = bpf_ktime_get_ns();
            (*slot).entry = entry;
            (*slot).delivered = u64::from(delivered);
        }
    }
    0
}

/// `kfree_skb(struct sk_buff *skb, void *location, enum skb_drop_reason reason,
/// struct sock *rx_sk)`: a packet a timewait socket received and consumed. An orphan
/// waiting in FIN_WAIT2 moves to TIME_WAIT when its peer's FIN arrives, without any state
/// or timer event (the timer is re-armed within the same wheel bucket), so the packet is
/// the only sign.
#[raw_tracepoint(tracepoint = "kfree_skb")]
pub fn kfree_skb(ctx: RawTracePointContext) -> i32 {
    let tw: u64 = if global!(KFREE_SKB_RX_SK) != 0 {
        ctx.arg(3)
    } else if sock!(skb_head) != 0 {
        timewait_of_packet(ctx.arg(0)).unwrap_or(0)
    } else {
        0
    };
    if tw == 0 {
        return 0;
    }
    let Some(entry) = TIMEWAITS.get_ptr_mut(&tw) else {
        return 0;
    };
    // SAFETY: a pointer the map gave for this CPU's (or this key's) value: valid while the program runs, and kept apart from nested runs on this CPU as the map's notes say.
    let substate: u8 = kread(tw, sock!(tw_substate)).unwrap_or(unsafe { (*entry).substate });
    substate_changed(tw, entry, substate);
    0
}

/// Notes a timewait socket's addresses and ports (those of the transition handing the
/// connection over to it), for [`timewait_of_packet`].
#[inline(never)]
pub(super) fn remember_tuple(ev: &Event, tw: u64) {
    let tuple = TwTuple {
        local: ev.saddr,
        remote: ev.daddr,
        local_port: ev.sport,
        remote_port: ev.dport,
        family: ev.family,
        _pad: 0,
    };
    let _ = TW_TUPLES.insert(&tuple, &tw, 0);
}

/// The timewait socket a freed TCP packet was addressed to, if portrace knows one there:
/// the packet's destination is the socket's local end.
#[inline(never)]
pub(super) fn timewait_of_packet(skb: u64) -> Option<u64> {
    let head: u64 = kread(skb, sock!(skb_head)).ok()?;
    let network: u16 = kread(skb, sock!(skb_network_header)).ok()?;
    let transport: u16 = kread(skb, sock!(skb_transport_header)).ok()?;
    // (The kernel marks an unset header offset with all ones.)
    if head == 0 || network == u16::MAX || transport == u16::MAX {
        return None;
    }
    let ip = head + u64::from(network);
    let tcp = head + u64::from(transport);
    let mut tuple = TwTuple::default();
    let version: u8 = kread::<u8>(ip, 0).ok()? >> 4;
    match version {
        4 => {
            if kread::<u8>(ip, 9).ok()? != IPPROTO_TCP as u8 {
                return None;
            }
            read_into(first4(&mut tuple.remote), ip + 12).ok()?;
            read_into(first4(&mut tuple.local), ip + 16).ok()?;
            tuple.family = AF_INET;
        }
        6 => {
            if kread::<u8>(ip, 6).ok()? != IPPROTO_TCP as u8 {
                return None;
            }
            read_into(&mut tuple.remote, ip + 8).ok()?;
            read_into(&mut tuple.local, ip + 24).ok()?;
            tuple.family = AF_INET6;
        }
        _ => return None,
    }
    tuple.remote_port = u16::from_be(kread(tcp, 0).ok()?);
    tuple.local_port = u16::from_be(kread(tcp, 2).ok()?);
    // SAFETY: the map value is read at once, while this program runs; the kernel keeps it valid until the program returns, even if another CPU deletes the entry.
    let tw = unsafe { TW_TUPLES.get(&tuple) }.copied()?;
    // Still the connection the tuple was noted for: its ports are the timewait socket's.
    let local_port: u16 = kread(tw, sock!(num)).ok()?;
    let remote_port: u16 = u16::from_be(kread(tw, sock!(dport)).ok()?);
    (local_port == tuple.local_port && remote_port == tuple.remote_port).then_some(tw)
}

/// Reports an event of a timewait socket portrace saw a connection move to; `before` is
/// the state portrace last reported for it. Returns whether its record reached the ring
/// buffer.
#[inline(never)]
pub(super) fn timewait_event(
    ev: &mut Event,
    tw: u64,
    known: &TimeWaitEntry,
    kind: u8,
    before: u8,
) -> Result<bool, i32> {
    if global!(TRACE_COMMAND) != 0 && known.owner.traced == 0 {
        return Ok(false);
    }
    let family: u16 = kread(tw, sock!(family))?;
    // SAFETY: bpf_ktime_get_ns reads the clock; it has no preconditions.
    reset(ev, unsafe { bpf_ktime_get_ns() }, known.skaddr, family);
    ev.aux = tw;
    ev.kind = kind;
    ev.tw_substate = known.substate;
    ev.sport = kread(tw, sock!(num))?;
    ev.dport = u16::from_be(kread(tw, sock!(dport))?);
    read_addresses(ev, tw, sock!(rcv_saddr))?;
    ev.netns = netns_of(tw);
    set_owner(ev, &known.owner, known.owner.source);
    if known.owner.in_cgroup != 0 {
        ev.owner_source |= owner_source::IN_CGROUP;
    }
    // The states the filter sees: the timewait socket's, and CLOSE when it ends.
    ev.oldstate = before;
    ev.newstate = if kind == kind::TW_ARMED {
        known.substate
    } else {
        tcp::CLOSE
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    ev.pid = (pid_tgid >> 32) as u32;
    ev.tid = pid_tgid as u32;
    if !passes(ev, ev.sport.into(), ev.dport.into()) {
        return Ok(false);
    }
    comm_into(&mut ev.comm);
    Ok(emit(ev))
}
