//! Fuzz target `diagram`: the transitions of any bytes read as a recording, drawn as the
//! state diagram in every format and, for the first sockets, as `--conn` sequence
//! diagrams, must give a drawing or an error naming the socket, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portrace::diagram::{figure::Figure, sequence, stats::Observed};
use portrace::tracefile::{ReadOptions, Record, TraceReader};

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = TraceReader::new(data, "fuzz", ReadOptions { salvage: true }) else {
        return;
    };
    let mut observed = Observed::default();
    let mut all = Vec::new();
    while let Ok(Some(record)) = reader.next_record() {
        if let Record::Transition(t) = record {
            observed.add(&t);
            all.push(t);
        }
    }
    let figure = Figure::new(&observed);
    let _ = portrace::diagram::svg::render(&figure);
    let _ = portrace::diagram::dot::render(&figure);
    let _ = portrace::diagram::mermaid::render(&figure);
    let _ = portrace::diagram::text::render(&figure);
    let mut ids: Vec<u64> = all.iter().map(|t| t.socket).take(4).collect();
    ids.push(u64::MAX);
    for id in ids {
        if let Ok(c) = sequence::find(&all, id) {
            let _ = sequence::render_text(&c);
            let _ = sequence::render_svg(&c);
        }
    }
});
