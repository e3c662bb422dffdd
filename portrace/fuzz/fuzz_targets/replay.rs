//! Fuzz target `replay`: any bytes replayed through a filter into the text, JSON and CSV
//! output formats, with the alert engine on as `portrace replay` has it by default, must
//! give an error or output, never a panic or a hang, whatever odd values (times near the
//! end of the clock, gaps of centuries, addresses, command names, error numbers) the
//! records hold.
#![no_main]

use std::io;

use libfuzzer_sys::fuzz_target;
use portrace::alerts::rules::Rules;
use portrace::alerts::sink::AlertHandle;
use portrace::alerts::PortRange;
use portrace::filter::FilterSpec;
use portrace::output::{self, Format, TextOptions};
use portrace::engine::replay::replay_into;
use portrace::pipeline::{Consumers, ToSink};
use portrace::tcp_state::TcpState;
use portrace::tracefile::{ReadOptions, TraceReader};
use portrace::transition_filter::TransitionFilter;

fuzz_target!(|data: &[u8]| {
    let filters = [
        FilterSpec::default(),
        FilterSpec { lports: vec![80, 443], ..Default::default() },
        FilterSpec {
            ports: vec![8080],
            states: vec![TcpState::SynSent, TcpState::TimeWait],
            nets: vec!["10.0.0.0/8".parse().unwrap(), "2001:db8::/32".parse().unwrap()],
            comm: Some("curl".into()),
            cgroup: Some(portrace::filter::CgroupFilter::parse("/system.slice").unwrap()),
            netns: vec![4026531840],
            ..Default::default()
        },
    ];
    let formats = [Format::Text, Format::Json, Format::Csv];
    for (filter, format) in filters.into_iter().zip(formats) {
        let Ok(mut reader) = TraceReader::new(data, "fuzz", ReadOptions { salvage: true }) else {
            return;
        };
        let mut rules = Rules::default();
        rules.close_wait.after_ns = 1_000_000_000;
        rules.repeat_ns = 1_000_000_000;
        let alerts = AlertHandle::new(rules, PortRange::kernel_default());
        let mut sink = output::sink(format, Box::new(io::sink()), TextOptions::default());
        let consumers =
            Consumers { alerts: Some(&alerts), output: Some(ToSink::new(sink.as_mut(), false)), ..Consumers::default() };
        let _ = replay_into(&mut reader, &mut TransitionFilter::new(filter), consumers);
    }
});
