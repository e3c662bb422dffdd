//! The unexpected-owner detector, two checks:
//!
//! - **Allowlist** (only when there are `--expect NAME:PORT` entries): a listening or
//!   established socket whose owner is not allowed on its port alerts. The port is the
//!   local one for a listener and the server side of a connection (`SYN_RECV ->
//!   ESTABLISHED`, or an inventory socket whose local port has a listener in its
//!   namespace), the remote one for the client side (`SYN_SENT -> ESTABLISHED`). NAME
//!   matches the command name or the executable's file name. One alert per process, port
//!   and side; sockets of unknown owner cannot be judged and are left alone.
//! - **Shells** (always): a shell (sh, bash, dash, zsh, ...) that opens an outbound
//!   connection (`CLOSE -> SYN_SENT`), the shape of a reverse shell, alerts, unless an
//!   expectation allows it on the remote port. One alert per process. **Interpreters**
//!   (python, perl, ruby, php, node, lua, ...) alike only when asked
//!   (`--alert-interpreters`, `interpreters = true`): most services are interpreters, and
//!   their outbound connections are ordinary traffic.

use foldhash::HashMap;

use super::{endpoint, shell_or_interpreter, Alert, AlertKind, Ctx, Evidence, Severity, Subject};
use crate::record::{Endpoints, Owner, SocketRecord, Timestamp, Transition};
use crate::tcp_state::TcpState;
use std::net::IpAddr;

/// Destinations listed in an alert at most.
const SAMPLE: usize = 10;

#[derive(Default)]
pub struct Owners {
    /// Listening sockets per (netns, port), to tell servers from clients in the inventory.
    listeners: HashMap<(u32, u16), u32>,
    /// Sockets seen per allowlist subject.
    seen: HashMap<Subject, u64>,
    /// Outbound connects per shell or interpreter process: count, first destinations.
    outbound: HashMap<u32, (u64, Vec<(IpAddr, u16)>)>,
}

/// A socket to judge against the allowlist.
struct Seen {
    time: Timestamp,
    owner: Owner,
    ends: Endpoints,
    state: TcpState,
    client: bool,
}

impl Owners {
    pub fn on_socket(&mut self, s: &SocketRecord, ctx: &mut Ctx, out: &mut Vec<Alert>) {
        let client = match s.state {
            TcpState::Listen => {
                *self.listeners.entry((s.ends.netns, s.ends.sport)).or_default() += 1;
                false
            }
            TcpState::Established => !self.listeners.contains_key(&(s.ends.netns, s.ends.sport)),
            _ => return,
        };
        let Some(owner) = s.owner else { return };
        let seen = Seen {
            time: s.time,
            owner,
            ends: s.ends,
            state: s.state,
            client,
        };
        self.judge(&seen, ctx, out);
    }

    pub fn on_transition(&mut self, t: &Transition, ctx: &mut Ctx, out: &mut Vec<Alert>) {
        let client = match (t.oldstate, t.newstate) {
            (TcpState::Close, TcpState::Listen) => {
                *self.listeners.entry((t.ends.netns, t.ends.sport)).or_default() += 1;
                false
            }
            (TcpState::Listen, TcpState::Close) => {
                if let Some(n) = self.listeners.get_mut(&(t.ends.netns, t.ends.sport)) {
                    *n -= 1;
                    if *n == 0 {
                        self.listeners.remove(&(t.ends.netns, t.ends.sport));
                    }
                }
                return;
            }
            (TcpState::SynRecv, TcpState::Established) => false,
            (TcpState::SynSent, TcpState::Established) => true,
            (TcpState::Close, TcpState::SynSent) => {
                self.outbound(t, ctx, out);
                return;
            }
            _ => return,
        };
        let Some(owner) = t.owner else { return };
        let seen = Seen {
            time: t.time,
            owner,
            ends: t.ends,
            state: t.newstate,
            client,
        };
        self.judge(&seen, ctx, out);
    }

    fn allowed(ctx: &Ctx, owner: &Owner, port: u16) -> bool {
        let comm = owner.comm.to_str_lossy();
        let exe = ctx.exe_name(owner.pid);
        ctx.rules.expect.iter().any(|e| e.allows(&comm, exe, port))
    }

    fn judge(&mut self, s: &Seen, ctx: &mut Ctx, out: &mut Vec<Alert>) {
        if ctx.rules.expect.is_empty() {
            return;
        }
        let port = if s.client { s.ends.dport } else { s.ends.sport };
        if Owners::allowed(ctx, &s.owner, port) {
            return;
        }
        let subject = Subject::Service { pid: s.owner.pid, port, client: s.client };
        let count = self.seen.entry(subject).or_default();
        *count += 1;
        let count = *count;
        if !ctx.due(AlertKind::UnexpectedOwner, &subject, s.time.mono_ns, 0) {
            return;
        }
        let process = ctx.process(s.owner.pid, s.owner.comm);
        let (local, remote) = (endpoint(s.ends.saddr, s.ends.sport), endpoint(s.ends.daddr, s.ends.dport));
        let what = match (s.state, s.client) {
            (TcpState::Listen, _) => format!("listens on {local}"),
            (_, false) => format!("serves {local} to {remote}"),
            (_, true) => format!("is connected to {remote}"),
        };
        let allowed: Vec<String> = ctx
            .rules
            .expect
            .iter()
            .filter(|e| e.port.is_none_or(|p| p == port))
            .map(|e| e.name.clone())
            .collect();
        let alert = Alert {
            kind: AlertKind::UnexpectedOwner,
            severity: Severity::Warning,
            time: s.time,
            subject,
            summary: format!("{} {what}: no --expect allows it on port {port}", process.describe()),
            process: Some(process),
            netns: Some(s.ends.netns),
            evidence: vec![
                ("check", Evidence::Text("allowlist".into())),
                ("state", Evidence::Text(s.state.name().into())),
                ("side", Evidence::Text(if s.client { "client" } else { "server" }.into())),
                ("port", Evidence::Int(u64::from(port))),
                ("local", Evidence::Text(local)),
                ("remote", Evidence::Text(remote)),
                ("sockets", Evidence::Int(count)),
                ("allowed", Evidence::List(allowed)),
            ],
        };
        ctx.raise(alert, out);
    }

    fn outbound(&mut self, t: &Transition, ctx: &mut Ctx, out: &mut Vec<Alert>) {
        let Some(owner) = t.owner else { return };
        let comm = owner.comm.to_str_lossy();
        let what = shell_or_interpreter(&comm).or_else(|| ctx.exe_name(owner.pid).and_then(shell_or_interpreter));
        let Some(what) = what else { return };
        if what != "a shell" && !ctx.rules.interpreters {
            return;
        }
        if Owners::allowed(ctx, &owner, t.ends.dport) {
            return;
        }
        let (count, sample) = self.outbound.entry(owner.pid).or_default();
        *count += 1;
        let dest = (t.ends.daddr, t.ends.dport);
        if sample.len() < SAMPLE && !sample.contains(&dest) {
            sample.push(dest);
        }
        let subject = Subject::Process(owner.pid);
        if !ctx.due(AlertKind::UnexpectedOwner, &subject, t.time.mono_ns, 0) {
            return;
        }
        let (count, sample) = (*count, sample.clone());
        let process = ctx.process(owner.pid, owner.comm);
        let alert = Alert {
            kind: AlertKind::UnexpectedOwner,
            severity: Severity::Warning,
            time: t.time,
            subject,
            summary: format!(
                "{}, {what}, opened an outbound connection to {} ({count} so far)",
                process.describe(),
                endpoint(t.ends.daddr, t.ends.dport)
            ),
            process: Some(process),
            netns: Some(t.ends.netns),
            evidence: vec![
                ("check", Evidence::Text(if what == "a shell" { "shell" } else { "interpreter" }.into())),
                ("destination", Evidence::Text(endpoint(t.ends.daddr, t.ends.dport))),
                ("connects", Evidence::Int(count)),
                ("sample", Evidence::List(sample.iter().map(|&(a, p)| endpoint(a, p)).collect())),
            ],
        };
        ctx.raise(alert, out);
    }
}
