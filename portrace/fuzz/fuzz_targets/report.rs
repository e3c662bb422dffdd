//! Fuzz target `report`: any bytes read as a recording into `portrace report` (every
//! grouping on) must give an error or a report in text and JSON, never a panic or a hang.
#![no_main]

use std::io;

use libfuzzer_sys::fuzz_target;
use portrace::filter::FilterSpec;
use portrace::engine::replay::replay_into;
use portrace::pipeline::{Consumers, ToSink};
use portrace::report::{Report, ReportOptions};
use portrace::tracefile::{ReadOptions, TraceReader};
use portrace::transition_filter::TransitionFilter;

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = TraceReader::new(data, "fuzz", ReadOptions { salvage: true }) else {
        return;
    };
    let mut report = Report::new(ReportOptions { by_port: true, by_process: true, top: 5 });
    let mut sink = portrace::output::sink(portrace::output::Format::Json, Box::new(io::sink()), Default::default());
    let mut filter = TransitionFilter::new(FilterSpec::default());
    let consumers = Consumers { report: Some(&mut report), output: Some(ToSink::new(sink.as_mut(), false)), ..Consumers::default() };
    if replay_into(&mut reader, &mut filter, consumers).is_ok() {
        report.write_text(&mut io::sink()).expect("writing to nowhere");
        report.write_json(&mut io::sink()).expect("writing to nowhere");
    }
});
