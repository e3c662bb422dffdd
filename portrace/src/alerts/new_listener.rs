//! The new-listener detector: a socket that starts listening after portrace started
//! (`CLOSE -> LISTEN`), with who opened it and where. Listeners of the start-up inventory
//! are not new. One alert per listening address, port and owner.

use super::{endpoint, Alert, AlertKind, Ctx, Evidence, Severity, Subject};
use crate::record::Transition;
use crate::tcp_state::TcpState;

pub struct NewListener;

impl NewListener {
    pub fn on_transition(&mut self, t: &Transition, ctx: &mut Ctx, out: &mut Vec<Alert>) {
        if (t.oldstate, t.newstate) != (TcpState::Close, TcpState::Listen) {
            return;
        }
        let subject = Subject::Listener { netns: t.ends.netns, addr: t.ends.saddr, port: t.ends.sport };
        if !ctx.due(AlertKind::NewListener, &subject, t.time.mono_ns, 0) {
            return;
        }
        let process = ctx.owner_process(t.owner.as_ref());
        let who = process.as_ref().map_or_else(|| "an unknown process".to_string(), |p| p.describe());
        let address = endpoint(t.ends.saddr, t.ends.sport);
        let alert = Alert {
            kind: AlertKind::NewListener,
            severity: Severity::Info,
            time: t.time,
            subject,
            summary: format!("{who} started listening on {address}"),
            process,
            netns: Some(t.ends.netns),
            evidence: vec![
                ("address", Evidence::Text(address)),
                ("port", Evidence::Int(u64::from(t.ends.sport))),
                ("socket", Evidence::Int(t.socket)),
            ],
        };
        ctx.raise(alert, out);
    }
}
