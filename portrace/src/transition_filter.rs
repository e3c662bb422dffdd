//! A user's filter applied to recorded transitions in order, as the kernel program applies
//! it to live ones: `replay`, `report`, `diagram --from` and `top --from` see what a live
//! run with the same filter would have shown.

use std::collections::HashMap;

use crate::filter::FilterSpec;
use crate::record::{Endpoints, Transition};

/// Held `CLOSE -> SYN_SENT` transitions at most, as in the kernel program's hold map.
const HOLD_MAX: usize = portrace_ebpf::HOLD_ENTRIES as usize;

/// A user's filter applied to recorded transitions in order, as the kernel program applies
/// it: including the hold of a `CLOSE -> SYN_SENT` whose local port is not bound yet, when
/// the filter has local-port conditions (see [`FilterSpec::matches_transition`]).
pub struct TransitionFilter {
    spec: FilterSpec,
    /// The filter without its local-port conditions, when it has any.
    unbound: Option<FilterSpec>,
    held: HashMap<u64, Transition>,
    /// With `--cgroup`: the recorded cgroups' paths, by id (bounded like the details).
    cgroup_paths: HashMap<u64, Option<String>>,
}

impl TransitionFilter {
    pub fn new(spec: FilterSpec) -> TransitionFilter {
        let unbound = (!spec.lports.is_empty() || !spec.ports.is_empty())
            .then(|| FilterSpec { lports: Vec::new(), ports: Vec::new(), ..spec.clone() });
        TransitionFilter { spec, unbound, held: HashMap::new(), cgroup_paths: HashMap::new() }
    }

    /// A recorded cgroup record: its path, for `--cgroup`.
    pub fn cgroup(&mut self, g: &crate::record::CgroupInfo) {
        if self.spec.cgroup.is_some() {
            if self.cgroup_paths.len() >= 1 << 16 {
                self.cgroup_paths.clear();
            }
            self.cgroup_paths.insert(g.id, g.path.clone());
        }
    }

    /// Whether an owner passes `--cgroup`, by its recorded cgroup's path.
    pub fn cgroup_passes(&self, owner: Option<&crate::record::Owner>) -> bool {
        if self.spec.cgroup.is_none() {
            return true;
        }
        let path = owner.and_then(|o| self.cgroup_paths.get(&o.cgroup)).and_then(|p| p.as_deref());
        self.spec.matches_cgroup(path)
    }

    pub fn spec(&self) -> &FilterSpec {
        &self.spec
    }

    /// Takes the next transition; pushes onto `out` what the filter lets through now.
    pub fn offer(&mut self, t: Transition, out: &mut Vec<Transition>) {
        if !self.cgroup_passes(t.owner.as_ref()) {
            return;
        }
        if let Some(unbound) = &self.unbound {
            if t.ends.sport == 0 && t.newstate == crate::tcp_state::TcpState::SynSent {
                if unbound.matches_transition(&t) && (self.held.len() < HOLD_MAX || self.held.contains_key(&t.socket)) {
                    self.held.insert(t.socket, t);
                }
                return;
            }
            if let Some(held) = self.held.remove(&t.socket) {
                // Judged again with the port the socket has now; written as it was made.
                if self.spec.matches_transition(&Transition { ends: Endpoints { sport: t.ends.sport, ..held.ends }, ..held.clone() }) {
                    out.push(held);
                }
            }
        }
        if self.spec.matches_transition(&t) {
            out.push(t);
        }
    }
}
