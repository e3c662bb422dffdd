//! The state diagram as SVG: the classic layout from [`super::model`], observed edges drawn
//! solid with their count and median (thicker the more often seen), standard edges never
//! seen drawn faint, Linux edges dashed in orange into small CLOSED boxes of their own, a
//! title with the span and totals, and a legend. Every state and edge group carries
//! `data-*` attributes (kernel state names, counts) for programs that read the figure.

use std::fmt::Write as _;

use super::figure::{self, Figure};
use super::model::{Place, BOX_H, BOX_W, FIGURE_BOTTOM, WIDTH};

const INK: &str = "#1d3557";
const FAINT: &str = "#c5c9d0";
const LINUX: &str = "#e07000";
const NOTE_MARKS: [&str; 9] = ["¹", "²", "³", "⁴", "⁵", "⁶", "⁷", "⁸", "⁹"];

/// Escapes text for XML content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// `us` as `µs`, for a figure people read.
fn micro(text: &str) -> String {
    text.replace("us", "µs")
}

fn note_mark(n: usize) -> &'static str {
    NOTE_MARKS.get(n - 1).copied().unwrap_or("*")
}

/// Renders the figure as an SVG document.
pub fn render(f: &Figure<'_>) -> String {
    let legend_lines = 4 + f.linux.len() + f.notes.len();
    let height = FIGURE_BOTTOM + 40.0 + 22.0 * legend_lines as f64 + 20.0;
    let mut s = String::with_capacity(32 * 1024);
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">"##
    );
    let _ = writeln!(s, "<title>{}</title>", esc(&f.title()));
    let _ = writeln!(s, "<defs>");
    for (id, color) in [("arrow", INK), ("arrow-faint", FAINT), ("arrow-linux", LINUX)] {
        let _ = writeln!(
            s,
            r##"<marker id="{id}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" markerUnits="userSpaceOnUse" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{color}"/></marker>"##
        );
    }
    let _ = writeln!(s, "</defs>");
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let _ = writeln!(s, r##"<text x="24" y="36" font-size="22" font-weight="bold" fill="{INK}">{}</text>"##, esc(&f.title()));
    let _ = writeln!(s, r##"<text x="24" y="60" font-size="13" fill="#444">{}</text>"##, esc(&micro(&f.subtitle())));
    let _ = writeln!(
        s,
        r##"<text x="24" y="80" font-size="12" fill="#666">On each edge: the RFC's event / action, then how many times it was seen and the median time spent in the state it left.</text>"##
    );

    // Boxes first, edges over them.
    let _ = writeln!(s, r##"<g id="states">"##);
    for place in Place::ALL {
        state_box(&mut s, f, place);
    }
    let _ = writeln!(s, "</g>");
    let _ = writeln!(s, r##"<g id="edges">"##);
    for std in &f.standard {
        standard_edge(&mut s, std);
    }
    let _ = writeln!(s, "</g>");
    let _ = writeln!(s, r##"<g id="linux-edges">"##);
    for (i, l) in f.linux.iter().enumerate() {
        linux_edge(&mut s, l, i);
    }
    let _ = writeln!(s, "</g>");
    legend(&mut s, f);
    s.push_str("</svg>\n");
    s
}

/// Whether any transition of the trace entered or left `place`'s state.
fn touched(f: &Figure<'_>, place: Place) -> bool {
    f.standard.iter().any(|e| e.stats.is_some() && (e.edge.from == place || e.edge.to == place))
        || f.linux.iter().any(|l| l.from == place || l.to == place)
}

fn state_box(s: &mut String, f: &Figure<'_>, place: Place) {
    let (cx, cy) = place.center();
    let (x, y) = (cx - BOX_W / 2.0, cy - BOX_H / 2.0);
    let seen = touched(f, place);
    let (fill, stroke, text) = if seen { ("#e8f1fb", INK, INK) } else { ("#f7f7f7", FAINT, "#9aa0a6") };
    let rfc = place.rfc_name();
    let kernel = place.state().name();
    let _ = writeln!(
        s,
        r##"<g class="state" data-state="{kernel}" data-rfc="{rfc}" data-seen="{seen}"><rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="8" fill="{fill}" stroke="{stroke}" stroke-width="1.5"/><text x="{cx}" y="{}" text-anchor="middle" font-size="15" font-weight="bold" fill="{text}">{rfc}</text><text x="{cx}" y="{}" text-anchor="middle" font-size="10" fill="{text}" opacity="0.8">{kernel}</text></g>"##,
        cy + 2.0,
        cy + 16.0,
    );
}

fn points(path: &[(f64, f64)]) -> String {
    path.iter().map(|(x, y)| format!("{x},{y}")).collect::<Vec<_>>().join(" ")
}

/// The stroke width for an edge seen `count` times: thicker the more, within reason.
fn width(count: u64) -> f64 {
    let w = 1.6 + (count.max(1) as f64).log10() * 0.9;
    (w.min(5.0) * 10.0).round() / 10.0
}

fn standard_edge(s: &mut String, e: &figure::Standard<'_>) {
    let (old, new) = e.edge.states();
    let (x, y, anchor) = e.edge.label_at();
    let mark = e.note.map(note_mark).unwrap_or("");
    let path = points(&e.edge.path());
    match &e.stats {
        Some(stats) => {
            let _ = writeln!(
                s,
                r##"<g class="edge rfc seen" data-from="{}" data-to="{}" data-count="{}" data-median-ns="{}"><polyline points="{path}" fill="none" stroke="{INK}" stroke-width="{}" marker-end="url(#arrow)"/><text x="{x}" y="{y}" text-anchor="{}" font-size="11" fill="#555">{}{mark}</text><text x="{x}" y="{}" text-anchor="{}" font-weight="bold" fill="{INK}">{}</text>"##,
                old.name(),
                new.name(),
                stats.count,
                stats.median_ns().map_or(String::new(), |n| n.to_string()),
                width(stats.count),
                anchor.svg(),
                esc(&e.edge.rfc_label()),
                y + 15.0,
                anchor.svg(),
                esc(&micro(&figure::figures(stats))),
            );
            let reasons = figure::reasons(stats);
            if !reasons.is_empty() {
                let _ = write!(
                    s,
                    r##"<text x="{x}" y="{}" text-anchor="{}" font-size="11" fill="{INK}">{}</text>"##,
                    y + 29.0,
                    anchor.svg(),
                    esc(&reasons)
                );
            }
            let _ = writeln!(s, "</g>");
        }
        None => {
            let _ = writeln!(
                s,
                r##"<g class="edge rfc unseen" data-from="{}" data-to="{}" data-count="0"><polyline points="{path}" fill="none" stroke="{FAINT}" stroke-width="1.2" marker-end="url(#arrow-faint)"/><text x="{x}" y="{y}" text-anchor="{}" font-size="11" fill="{FAINT}">{}{mark}</text></g>"##,
                old.name(),
                new.name(),
                anchor.svg(),
                esc(&e.edge.rfc_label()),
            );
        }
    }
}

/// The point where the segment from `from` (a box's centre) towards `to` leaves the box.
fn border(from: (f64, f64), to: (f64, f64), w: f64, h: f64) -> (f64, f64) {
    let (dx, dy) = (to.0 - from.0, to.1 - from.1);
    if dx == 0.0 && dy == 0.0 {
        return from;
    }
    let tx = if dx == 0.0 { f64::INFINITY } else { (w / 2.0) / dx.abs() };
    let ty = if dy == 0.0 { f64::INFINITY } else { (h / 2.0) / dy.abs() };
    let t = tx.min(ty);
    (from.0 + dx * t, from.1 + dy * t)
}

const STUB_W: f64 = 76.0;
const STUB_H: f64 = 28.0;

fn linux_edge(s: &mut String, l: &figure::Linux<'_>, index: usize) {
    let from = l.from.center();
    let stub = if l.to == Place::ClosedEnd { l.from.stub() } else { None };
    let _ = write!(
        s,
        r##"<g class="edge linux" data-from="{}" data-to="{}" data-count="{}" data-median-ns="{}">"##,
        l.old.name(),
        l.new.name(),
        l.stats.count,
        l.stats.median_ns().map_or(String::new(), |n| n.to_string())
    );
    let w = width(l.stats.count);
    let (label_x, label_y) = match stub {
        Some(to) => {
            let a = border(from, to, BOX_W, BOX_H);
            let b = border(to, from, STUB_W, STUB_H);
            let _ = write!(
                s,
                r##"<rect x="{}" y="{}" width="{STUB_W}" height="{STUB_H}" rx="6" fill="#fff4e6" stroke="{LINUX}" stroke-dasharray="4 3"/><text x="{}" y="{}" text-anchor="middle" font-size="11" font-weight="bold" fill="{LINUX}">CLOSED</text>"##,
                to.0 - STUB_W / 2.0,
                to.1 - STUB_H / 2.0,
                to.0,
                to.1 + 4.0
            );
            let _ = write!(
                s,
                r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{LINUX}" stroke-width="{w}" stroke-dasharray="7 4" marker-end="url(#arrow-linux)"/>"##,
                a.0, a.1, b.0, b.1
            );
            (to.0, to.1 + STUB_H / 2.0 + 15.0)
        }
        None => {
            // Anywhere else: a curve between the two boxes, bent to one side so that it
            // does not lie on a standard edge.
            let to = l.to.center();
            let a = border(from, to, BOX_W, BOX_H);
            let b = border(to, from, BOX_W, BOX_H);
            let (mx, my) = ((a.0 + b.0) / 2.0, (a.1 + b.1) / 2.0);
            let (dx, dy) = (b.0 - a.0, b.1 - a.1);
            let len = (dx * dx + dy * dy).sqrt().max(1.0);
            let bend = 60.0 + 20.0 * (index % 3) as f64;
            let (cx, cy) = (mx - dy / len * bend, my + dx / len * bend);
            let _ = write!(
                s,
                r##"<path d="M{},{} Q{cx},{cy} {},{}" fill="none" stroke="{LINUX}" stroke-width="{w}" stroke-dasharray="7 4" marker-end="url(#arrow-linux)"/>"##,
                a.0, a.1, b.0, b.1
            );
            ((mx + cx) / 2.0, (my + cy) / 2.0)
        }
    };
    let _ = write!(
        s,
        r##"<text x="{label_x}" y="{label_y}" text-anchor="middle" font-weight="bold" fill="{LINUX}">{}</text>"##,
        esc(&micro(&figure::figures(l.stats)))
    );
    let reasons = figure::reasons(l.stats);
    if !reasons.is_empty() {
        let _ = write!(
            s,
            r##"<text x="{label_x}" y="{}" text-anchor="middle" font-size="10" fill="{LINUX}">{}</text>"##,
            label_y + 13.0,
            esc(&reasons)
        );
    }
    let _ = writeln!(s, "</g>");
}

fn legend(s: &mut String, f: &Figure<'_>) {
    let mut y = FIGURE_BOTTOM + 40.0;
    let _ = writeln!(s, r##"<g id="legend">"##);
    let _ = writeln!(s, r##"<line x1="24" y1="{}" x2="{}" y2="{}" stroke="#ddd"/>"##, y - 22.0, WIDTH - 24.0, y - 22.0);
    let sample = |s: &mut String, y: f64, stroke: &str, marker: &str, dash: &str, text: &str| {
        let _ = writeln!(
            s,
            r##"<line x1="30" y1="{}" x2="90" y2="{}" stroke="{stroke}" stroke-width="2.5"{dash} marker-end="url(#{marker})"/><text x="104" y="{}" fill="#333">{}</text>"##,
            y - 4.0,
            y - 4.0,
            y,
            esc(text)
        );
    };
    sample(s, y, INK, "arrow", "", "an RFC 9293 transition this trace saw: the RFC's event / action, how many times, the median time in the state it left (thicker: more often)");
    y += 22.0;
    sample(s, y, FAINT, "arrow-faint", "", "an RFC 9293 transition this trace did not see");
    y += 22.0;
    let what = if f.linux.is_empty() {
        "seen, but not in RFC 9293's figure (Linux): none in this trace"
    } else {
        "seen, but not in RFC 9293's figure (Linux):"
    };
    sample(s, y, LINUX, "arrow-linux", r##" stroke-dasharray="7 4""##, what);
    for l in &f.linux {
        y += 22.0;
        let _ = writeln!(
            s,
            r##"<text x="120" y="{y}" fill="{LINUX}"><tspan font-weight="bold">{} ({})</tspan> {}: {}</text>"##,
            esc(&figure::linux_name(l)),
            esc(&format!("{} -> {}", l.old.name(), l.new.name())),
            esc(&micro(&figure::figures(l.stats))),
            esc(l.note)
        );
    }
    for (i, note) in f.notes.iter().enumerate() {
        y += 22.0;
        let edges: Vec<String> = f
            .standard
            .iter()
            .filter(|e| e.note == Some(i + 1))
            .map(|e| format!("{} → {}", e.edge.from.rfc_name(), e.edge.to.rfc_name()))
            .collect();
        let _ = writeln!(
            s,
            r##"<text x="30" y="{y}" fill="#333"><tspan font-weight="bold">{} Linux, {}:</tspan> {}</text>"##,
            note_mark(i + 1),
            esc(&edges.join(", ")),
            esc(note)
        );
    }
    y += 22.0;
    let _ = writeln!(
        s,
        r##"<text x="30" y="{y}" fill="#666">Boxes carry RFC 9293's names, with Linux's (as portrace prints them) beneath. Made by portrace diagram.</text>"##
    );
    let _ = writeln!(s, "</g>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("a<b & \"c\" 'd'>"), "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;");
        assert_eq!(esc("x\u{1b}y"), "x?y");
    }

    #[test]
    fn busier_edges_are_thicker_within_bounds() {
        assert!(width(1) < width(100));
        assert!(width(u64::MAX) <= 5.0);
    }
}
