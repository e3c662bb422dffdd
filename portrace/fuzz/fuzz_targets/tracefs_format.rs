//! Fuzz target `tracefs_format`: any text given to the parser of a tracepoint's `format`
//! file, and to the look-up of one field in it, must give a layout (a position) or an
//! error, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portrace::tracefs::{field_position, parse_format};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = parse_format(text);
    for name in ["skaddr", "oldstate", "newstate", "sport", "saddr_v6"] {
        let _ = field_position(text, name);
    }
});
