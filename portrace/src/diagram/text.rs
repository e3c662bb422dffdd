//! The state diagram as text for a terminal: the RFC's edges from top to bottom, each with
//! its event / action and what the trace saw on it (`.` when nothing), then the Linux
//! edges the RFC's figure does not have, then the notes on what Linux does differently.

use std::fmt::Write as _;

use super::figure::{self, Figure};

pub fn render(f: &Figure<'_>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}", f.title());
    let _ = writeln!(s, "{}", f.subtitle());
    let _ = writeln!(s);
    let _ = writeln!(s, "{:<13} {:<13} {:<38} {:>7}  MEDIAN TIME IN FROM", "FROM", "TO", "RFC 9293: EVENT / ACTION", "SEEN");
    for e in &f.standard {
        let mark = e.note.map(|n| format!(" [{n}]")).unwrap_or_default();
        let label = format!("{}{mark}", e.edge.rfc_label());
        let (count, median) = match &e.stats {
            Some(stats) => (
                stats.count.to_string(),
                stats.median_ns().map_or("?".to_string(), |ns| crate::format::HumanDuration(ns).to_string()),
            ),
            None => (".".to_string(), String::new()),
        };
        let mut line = format!("{:<13} {:<13} {:<38} {:>7}  {}", e.edge.from.rfc_name(), e.edge.to.rfc_name(), label, count, median);
        if let Some(stats) = &e.stats {
            let reasons = figure::reasons(stats);
            if !reasons.is_empty() {
                line.push_str(&format!("  ({reasons})"));
            }
        }
        let _ = writeln!(s, "{}", line.trim_end());
    }
    let _ = writeln!(s);
    if f.linux.is_empty() {
        let _ = writeln!(s, "Seen but not in RFC 9293's figure (Linux): none");
    } else {
        let _ = writeln!(s, "Seen but not in RFC 9293's figure (Linux):");
        for l in &f.linux {
            let median = l.stats.median_ns().map_or("?".to_string(), |ns| crate::format::HumanDuration(ns).to_string());
            let mut line = format!(
                "{:<13} {:<13} {:<38} {:>7}  {}",
                l.from.rfc_name(),
                l.to.rfc_name(),
                format!("{} -> {}", l.old.name(), l.new.name()),
                l.stats.count,
                median
            );
            let reasons = figure::reasons(l.stats);
            if !reasons.is_empty() {
                line.push_str(&format!("  ({reasons})"));
            }
            let _ = writeln!(s, "{line}");
            let _ = writeln!(s, "    {}", l.note);
        }
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "What Linux does differently:");
    for (i, note) in f.notes.iter().enumerate() {
        let _ = writeln!(s, "  [{}] {note}", i + 1);
    }
    s
}
