//! Everything after a transition is read: its owner, the timewait hand-over at CLOSE, the
//! filter, holding a transition whose port the kernel has not set yet, and output.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, generated::bpf_get_current_cgroup_id};
use portrace_ebpf::{
    counter,
    logic::{made_by_owner, PORT_UNLISTED, PORT_UNSET},
    owner_source, tcp, Event, ListenKey, Owner, SockOwner,
};

use super::filter::*;
use super::globals::*;
use super::maps::*;
use super::read::*;
use super::record::*;
use super::timewait::*;
use super::{global, sock};

/// Everything after reading a state transition: owner, timewait hand-over, close details,
/// the filter, holding transitions whose ports the kernel has not set yet, and output.
#[inline(never)]
pub(super) fn process(ev: &mut Event, rescue: bool, located: bool) {
    let pid_tgid = bpf_get_current_pid_tgid();
    ev.pid = (pid_tgid >> 32) as u32;
    ev.tid = pid_tgid as u32;
    let sk = ev.skaddr;
    let have_btf = sock!(valid) != 0;
    // (`located`: the main program read the namespace and cookie with the socket's head.)
    if have_btf && !located {
        ev.netns = netns_of(sk);
        ev.aux = kread(sk, sock!(cookie)).unwrap_or(0);
    }

    // The owner, and whether the socket is the traced command's.
    let listen_key = ListenKey {
        netns: ev.netns,
        port: ev.sport,
        _pad: 0,
    };
    let mut learned = false;
    let mut traced = 0u8;
    let mut in_cgroup = 0u8;
    if made_by_owner(ev.oldstate, ev.newstate) && ev.pid != 0 {
        ev.owner_pid = ev.pid;
        comm_into(&mut ev.owner_comm);
        // The task on the CPU is the owner: one read of its command serves for both.
        ev.comm = ev.owner_comm;
        ev.owner_source = owner_source::SYSCALL;
        // The owner's own task is on the CPU: its cgroup is the owner's.
        // SAFETY: the helper reads the current task's cgroup; it has no preconditions.
        ev.owner_cgroup = unsafe { bpf_get_current_cgroup_id() };
        in_cgroup = in_filter_cgroup();
        learned = true;
        if global!(TRACE_COMMAND) != 0 {
            // A socket of the command stays the command's: a process closing it as it
            // exits is no longer in the traced set by then.
            // SAFETY: the map value is read at once, while this program runs; the kernel keeps it valid until the program returns, even if another CPU deletes the entry.
            let before = unsafe { OWNERS.get(&sk) }.map_or(0, |o| o.traced);
            // SAFETY: the map value is read at once, while this program runs; the kernel keeps it valid until the program returns, even if another CPU deletes the entry.
            traced = before | u8::from(unsafe { TRACED.get(&ev.pid) }.is_some());
        }
    } else if ev.oldstate == tcp::LISTEN && ev.newstate == tcp::SYN_RECV {
        // SAFETY: the map value is read at once, while this program runs; the kernel keeps it valid until the program returns, even if another CPU deletes the entry.
        if let Some(l) = unsafe { LISTENERS.get(&listen_key) } {
            set_owner(ev, &l.owner, owner_source::LISTENER);
            traced = l.owner.traced;
            in_cgroup = l.owner.in_cgroup;
            learned = true;
        }
    // SAFETY: the map value is read at once, while this program runs; the kernel keeps it valid until the program returns, even if another CPU deletes the entry.
    } else if let Some(o) = unsafe { OWNERS.get(&sk) } {
        set_owner(ev, o, o.source);
        traced = o.traced;
        in_cgroup = o.in_cgroup;
        if o.source != owner_source::SYSCALL
            && ev.newstate == tcp::CLOSE
            && ev.pid == o.pid
            && ev.pid != 0
        {
            // The owner's own process closed the socket (an abort: close with SO_LINGER 0):
            // it acted on the socket itself. (Other transitions its process happens to run,
            // such as a FIN processed from its socket backlog, keep their source.)
            ev.owner_source = owner_source::SYSCALL;
            learned = true;
        }
    } else if ev.aux != 0 {
        // SAFETY: the map value is read at once, while this program runs; the kernel keeps it valid until the program returns, even if another CPU deletes the entry.
        if let Some(o) = unsafe { INVENTORY.get(&ev.aux) } {
            set_owner(ev, o, owner_source::INVENTORY);
            in_cgroup = o.in_cgroup;
            learned = true;
        }
    }
    let owner = Owner {
        pid: ev.owner_pid,
        source: ev.owner_source,
        traced,
        in_cgroup,
        _pad: 0,
        comm: ev.owner_comm,
        cgroup: ev.owner_cgroup,
    };
    if in_cgroup != 0 {
        ev.owner_source |= owner_source::IN_CGROUP;
    }

    if ev.newstate == tcp::CLOSE {
        let _ = OWNERS.remove(&sk);
        if ev.oldstate == tcp::LISTEN {
            // SAFETY: the map value is read at once, while this program runs; the kernel keeps it valid until the program returns, even if another CPU deletes the entry.
            if let Some(l) = unsafe { LISTENERS.get(&listen_key) } {
                if l.skaddr == sk || l.skaddr == 0 {
                    let _ = LISTENERS.remove(&listen_key);
                }
            }
        }
        if have_btf {
            ev.error = kread(sk, sock!(err)).unwrap_or(0);
            ev.retransmits = kread(sk, sock!(retransmits)).unwrap_or(0);
            claim_timewait(ev, &owner);
        }
    } else if learned && ev.owner_source != owner_source::UNKNOWN {
        // An owner learned again (close() by the process whose connect() or listener named
        // it) is usually the one stored: then at most its source changes, a single byte
        // written in place. An insert allocates a new element and frees the old one, a
        // cost otherwise paid twice per connection; it is kept for a different owner, so
        // that another CPU reading the entry never sees half of one and half of another.
        // A new socket (it leaves CLOSE, or a child leaves its listener's LISTEN) has no
        // entry but a stale one: it is inserted without a lookup first.
        let birth = ev.oldstate == tcp::CLOSE || ev.oldstate == tcp::LISTEN;
        let stored = if birth { None } else { OWNERS.get_ptr_mut(&sk) };
        // SAFETY: the map value stays valid while the program runs.
        let same = stored.is_some_and(|p| unsafe {
            (*p).pid == owner.pid
                && (*p).traced == owner.traced
                && (*p).comm == owner.comm
                && (*p).cgroup == owner.cgroup
                && (*p).in_cgroup == owner.in_cgroup
        });
        match stored {
            // SAFETY: a pointer the map gave for this CPU's (or this key's) value: valid while the program runs, and kept apart from nested runs on this CPU as the map's notes say.
            Some(p) if same => unsafe {
                if (*p).source != owner.source {
                    (*p).source = owner.source;
                }
            },
            _ => {
                if OWNERS.insert(&sk, &owner, 0).is_err() {
                    bump(counter::OWNERS_FULL);
                }
            }
        }
        if ev.newstate == tcp::LISTEN {
            if LISTENERS
                .insert(&listen_key, &SockOwner { skaddr: sk, owner }, 0)
                .is_err()
            {
                bump(counter::LISTENERS_FULL);
            }
        }
    }

    // Filtering and output.
    if global!(TRACE_COMMAND) != 0 && traced == 0 {
        return;
    }
    // A transition held for a port its socket had not set yet goes out first, judged with
    // the port this transition shows. Only a socket's first transition is ever held, so
    // only a transition out of the held one's new state can follow it.
    let connect_held = ev.oldstate == tcp::SYN_SENT && global!(FILTER.hold_unbound) != 0;
    if connect_held || ev.oldstate == tcp::SYN_RECV {
        release_held(ev);
    }
    if ev.sport == 0 && ev.newstate == tcp::SYN_SENT && global!(FILTER.hold_unbound) != 0 {
        // A connect: its local port is bound right after this transition. The filter has a
        // condition on it, so unless the transition passes whatever port the kernel picks
        // (`--port 443` and a connect to port 443), it waits for the socket's next one to
        // tell.
        if passes(ev, PORT_UNSET, ev.dport.into()) {
            stamp_comm(ev);
            if rescue {
                ev.owner_source |= owner_source::BY_BACKUP;
            }
            if passes(ev, PORT_UNLISTED, ev.dport.into()) {
                emit(ev);
            } else {
                hold(ev);
            }
        }
        return;
    }
    if ev.dport == 0 && ev.oldstate == tcp::LISTEN && ev.newstate == tcp::SYN_RECV {
        // A child socket that some kernels (6.1, 6.12) create before they copy the peer's
        // address and port into it: the record waits for the child's next transition, a
        // moment later in the same softirq, which has them, and is judged then.
        stamp_comm(ev);
        if rescue {
            ev.owner_source |= owner_source::BY_BACKUP;
        }
        if passes(ev, ev.sport.into(), PORT_UNSET) {
            hold(ev);
        }
        return;
    }
    if !passes(ev, ev.sport.into(), ev.dport.into()) {
        return;
    }
    stamp_comm(ev);
    if rescue {
        ev.owner_source |= owner_source::BY_BACKUP;
    }
    emit(ev);
}

/// The task's command, unless the record already names the task it reports (a hand-over
/// that reports a change made on another CPU carries that task).
#[inline(always)]
pub(super) fn stamp_comm(ev: &mut Event) {
    if ev.comm[0] == 0 {
        comm_into(&mut ev.comm);
    }
}

/// Holds a transition until its socket's next one shows the port it lacks. When the hold
/// map is full it is written at once, as it is (it passed the filter with the port
/// unknown): shown without the port, and perhaps against a port filter it would have
/// failed, rather than lost; the count says how many.
pub(super) fn hold(ev: &Event) {
    if HOLD.insert(&ev.skaddr, ev, 0).is_err() {
        bump(counter::HOLD_FULL);
        emit(ev);
        return;
    }
    add_held(1);
}

/// Adds `n` (wrapping: `u64::MAX` takes one away) to the count of transitions held.
fn add_held(n: u64) {
    if let Some(count) = HELD.get_ptr_mut(0) {
        // SAFETY: the map's one u64, 8-byte aligned, valid while the program runs; every
        // CPU changes it with atomic adds only.
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                count, n,
            );
        }
    }
}

/// Writes out the transition held for `ev`'s socket, if any, now that `ev` shows the ports
/// it lacked. A held connect is judged with its local port but written as it was made (with
/// port 0: the port was not bound yet); a held child gets its addresses and ports, which it
/// had in all but the kernel's copy.
pub(super) fn release_held(ev: &Event) {
    // Nearly always nothing is held (no filter on local ports, or connects that passed it
    // at once): the search of the hold map is skipped. A socket's transitions come one at
    // a time, under its lock, so its own hold is counted before its next transition reads
    // the count.
    if !matches!(HELD.get(0), Some(&n) if n != 0) {
        return;
    }
    let Some(held) = HOLD.get_ptr_mut(&ev.skaddr) else {
        return;
    };
    // SAFETY: the map value stays valid until the removal below; nothing else on this CPU
    // writes this socket's entry meanwhile (its transitions come one at a time).
    unsafe {
        let child = (*held).oldstate == tcp::LISTEN;
        let pass = if child {
            // The kernel copies the peer's address and port into the child after its first
            // transition (and its own address, for a listener on a wildcard address).
            (*held).saddr = ev.saddr;
            (*held).daddr = ev.daddr;
            (*held).family = ev.family;
            (*held).sport = ev.sport;
            (*held).dport = ev.dport;
            passes(&*held, (*held).sport.into(), ev.dport.into())
        } else {
            passes(&*held, ev.sport.into(), (*held).dport.into())
        };
        if pass {
            emit(&*held);
            if !child {
                bump(counter::RELEASED);
            }
        }
    }
    if HOLD.remove(&ev.skaddr).is_ok() {
        add_held(u64::MAX);
    }
}

pub(super) fn set_owner(ev: &mut Event, o: &Owner, source: u8) {
    ev.owner_pid = o.pid;
    ev.owner_comm = o.comm;
    ev.owner_source = source;
    ev.owner_cgroup = o.cgroup;
}
