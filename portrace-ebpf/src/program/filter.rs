//! The user's filter, judged in the kernel so that nothing dropped is ever reserved.

use aya_ebpf::helpers::generated::bpf_get_current_ancestor_cgroup_id;
use portrace_ebpf::{
    logic::{in_net, ports_pass, Ports},
    owner_source, tcp, Event, CGROUP_LEVELS_SEARCHED, MAX_NETNS, MAX_NETS, MAX_PIDS,
};

use super::global;
use super::globals::*;

/// Whether the current task is in the `--cgroup` filter's cgroup or one below it (1), or
/// not (0, also when that filter is not set). Called in an owner's own system call only.
#[inline(never)]
pub(super) fn in_filter_cgroup() -> u8 {
    let id = global!(FILTER.cgroup_id);
    if id == 0 {
        return 0;
    }
    let level = global!(FILTER.cgroup_level);
    for i in 0..CGROUP_LEVELS_SEARCHED {
        // 0 past the task's own level: no deeper ancestor to compare.
        // SAFETY: the helper reads the current task's cgroup; it has no preconditions.
        let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id((level + i) as i32) };
        if ancestor == id {
            return 1;
        }
        if ancestor == 0 {
            break;
        }
    }
    0
}

/// Whether either of the event's addresses lies in one of the filter's networks (the
/// filter lists some).
#[inline(never)]
pub(super) fn in_filter_nets(ev: &Event, n_nets: usize) -> bool {
    for i in 0..MAX_NETS {
        if i >= n_nets {
            break;
        }
        if in_filter_net(ev.family, &ev.saddr, i) || in_filter_net(ev.family, &ev.daddr, i) {
            return true;
        }
    }
    false
}

/// Whether an address lies in the filter's network `i` (see [`in_net`]).
#[inline(always)]
pub(super) fn in_filter_net(family: u16, a: &[u8; 16], i: usize) -> bool {
    in_net(family, a, |j| {
        (
            global!(FILTER.nets[i].mask[j]),
            global!(FILTER.nets[i].addr[j]),
        )
    })
}

/// Whether the event passes the user's filter, taking `sport` and `dport` (ports,
/// [`PORT_UNSET`] or [`PORT_UNLISTED`]) for its ports.
#[inline(never)]
pub(super) fn passes(ev: &Event, sport: u32, dport: u32) -> bool {
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
            if i < n_pids
                && ev.owner_source != owner_source::UNKNOWN
                && global!(FILTER.pids[i]) == ev.owner_pid
            {
                found = true;
            }
        }
        if !found {
            return false;
        }
    }
    if global!(FILTER.match_comm) != 0 {
        if ev.owner_source == owner_source::UNKNOWN {
            return false;
        }
        for i in 0..16 {
            if global!(FILTER.comm[i]) != ev.owner_comm[i] {
                return false;
            }
        }
    }
    let lists = (
        Ports { n: global!(FILTER.n_lports), at: |i| global!(FILTER.lports[i]) },
        Ports { n: global!(FILTER.n_rports), at: |i| global!(FILTER.rports[i]) },
        Ports { n: global!(FILTER.n_ports), at: |i| global!(FILTER.ports[i]) },
    );
    if !ports_pass(lists.0, lists.1, lists.2, sport, dport) {
        return false;
    }
    if global!(FILTER.cgroup_id) != 0 && ev.owner_source & owner_source::IN_CGROUP == 0 {
        return false;
    }
    let n_netns = global!(FILTER.n_netns) as usize;
    if n_netns != 0 {
        let mut found = false;
        for i in 0..MAX_NETNS {
            if i < n_netns && global!(FILTER.netns[i]) == ev.netns {
                found = true;
            }
        }
        if !found {
            return false;
        }
    }
    let n_nets = global!(FILTER.n_nets) as usize;
    n_nets == 0 || in_filter_nets(ev, n_nets)
}
