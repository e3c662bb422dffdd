//! The state diagram as Mermaid (a `flowchart`, which, unlike Mermaid's state diagrams,
//! can style each edge): observed edges solid with their figures, unseen ones faint,
//! Linux ones dotted orange. Renders in GitHub, GitLab and most Markdown viewers.

use std::fmt::Write as _;

use super::figure::{self, Figure};
use super::model::Place;

/// Mermaid labels are quoted; quotes inside become `#quot;`.
fn q(text: &str) -> String {
    text.replace('"', "#quot;")
}

pub fn render(f: &Figure<'_>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "---\ntitle: \"{}\"\n---", q(&f.title()));
    let _ = writeln!(s, "flowchart TD");
    let _ = writeln!(s, "  %% {}", f.subtitle());
    for p in Place::ALL {
        let _ = writeln!(s, "  {}([\"{}\"])", p.id(), p.rfc_name());
    }
    let mut faint = Vec::new();
    let mut linux = Vec::new();
    let mut n = 0;
    for e in &f.standard {
        let mark = e.note.map(|n| format!(" [{n}]")).unwrap_or_default();
        let label = match &e.stats {
            Some(stats) => format!("{}{mark}<br/>{}", e.edge.rfc_label(), figure::figures(stats)),
            None => {
                faint.push(n);
                format!("{}{mark}", e.edge.rfc_label())
            }
        };
        let _ = writeln!(s, "  {} -->|\"{}\"| {}", e.edge.from.id(), q(&label), e.edge.to.id());
        n += 1;
    }
    for l in &f.linux {
        let _ = writeln!(
            s,
            "  {} -.->|\"Linux: {}<br/>{}\"| {}",
            l.from.id(),
            q(l.note),
            q(&figure::figures(l.stats)),
            l.to.id()
        );
        linux.push(n);
        n += 1;
    }
    let list = |v: &[usize]| v.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    if !faint.is_empty() {
        let _ = writeln!(s, "  linkStyle {} stroke:#c5c9d0,color:#b0b4ba", list(&faint));
    }
    if !linux.is_empty() {
        let _ = writeln!(s, "  linkStyle {} stroke:#e07000,color:#e07000", list(&linux));
    }
    for (i, note) in f.notes.iter().enumerate() {
        let _ = writeln!(s, "  %% [{}] Linux: {}", i + 1, note);
    }
    s
}
