//! The state diagram as Graphviz DOT (`dot -Tpng`): the RFC's boxes and edges, observed
//! ones solid and labelled with their figures, unseen ones faint, Linux ones dashed orange.
//! Graphviz lays it out; ranks keep the classic top-to-bottom order.

use std::fmt::Write as _;

use super::figure::{self, Figure};
use super::model::Place;

/// Escapes a DOT string's contents.
fn q(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub fn render(f: &Figure<'_>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "digraph tcp_states {{");
    let _ = writeln!(
        s,
        "  label=\"{}\\n{}\"; labelloc=t; fontname=\"Helvetica\"; nodesep=0.6; ranksep=0.5;",
        q(&f.title()),
        q(&f.subtitle())
    );
    let _ = writeln!(s, "  node [shape=box style=\"rounded,filled\" fontname=\"Helvetica\" fillcolor=\"#e8f1fb\" color=\"#1d3557\"];");
    let _ = writeln!(s, "  edge [fontname=\"Helvetica\" fontsize=10 color=\"#1d3557\"];");
    for p in Place::ALL {
        let _ = writeln!(s, "  {} [label=\"{}\\n{}\"];", p.id(), p.rfc_name(), p.state().name());
    }
    for ranks in [
        &[Place::SynReceived, Place::SynSent][..],
        &[Place::FinWait1, Place::CloseWait],
        &[Place::FinWait2, Place::Closing, Place::LastAck],
        &[Place::TimeWait, Place::ClosedEnd],
    ] {
        let ids: Vec<&str> = ranks.iter().map(|p| p.id()).collect();
        let _ = writeln!(s, "  {{ rank=same; {}; }}", ids.join("; "));
    }
    for e in &f.standard {
        let mark = e.note.map(|n| format!(" [{n}]")).unwrap_or_default();
        match &e.stats {
            Some(stats) => {
                let _ = writeln!(
                    s,
                    "  {} -> {} [label=\"{}{mark}\\n{}\" penwidth=2];",
                    e.edge.from.id(),
                    e.edge.to.id(),
                    q(&e.edge.rfc_label()),
                    q(&figure::figures(stats))
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "  {} -> {} [label=\"{}{mark}\" color=\"#c5c9d0\" fontcolor=\"#b0b4ba\"];",
                    e.edge.from.id(),
                    e.edge.to.id(),
                    q(&e.edge.rfc_label())
                );
            }
        }
    }
    for l in &f.linux {
        let _ = writeln!(
            s,
            "  {} -> {} [label=\"Linux: {}\\n{}\" style=dashed color=\"#e07000\" fontcolor=\"#e07000\" constraint=false];",
            l.from.id(),
            l.to.id(),
            q(l.note),
            q(&figure::figures(l.stats))
        );
    }
    for (i, note) in f.notes.iter().enumerate() {
        let _ = writeln!(s, "  // [{}] Linux: {}", i + 1, note);
    }
    let _ = writeln!(s, "}}");
    s
}
