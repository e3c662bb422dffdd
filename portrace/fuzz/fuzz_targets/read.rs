//! Fuzz target `read`: any bytes given to the recording reader must give an error or
//! records (with or without a warning), never a panic or a hang; and whatever it reads
//! must survive a round trip: written again through the recorder and read back, the same
//! header (but for the portrace version, which the recorder always writes as its own, and
//! the notes, which it writes from the features) and
//! records (the end record aside, which the recorder only writes from a run's own totals).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portrace::output::{Sink, Start, VERSION};
use portrace::destination::RunSetup;
use portrace::tracefile::{read_all, FileSink, ReadOptions, Record, WriteOptions};

fuzz_target!(|data: &[u8]| {
    for salvage in [false, true] {
        let Ok((header, records, _warning)) = read_all(data, "fuzz", ReadOptions { salvage }) else {
            continue;
        };
        let setup = RunSetup {
            clock_offset_ns: header.clock_offset_ns,
            layout: header.layout,
            sock_layout: header.sock_layout,
            filter: header.filter.clone(),
            ring_size: header.ring_size,
            command: header.command.clone(),
        };
        let options = WriteOptions { compress: header.compressed };
        let mut sink = FileSink::new(Vec::new(), "again", setup, options);
        let start = Start { time: header.start, host: header.host.clone(), kernel: header.kernel.clone(), features: header.features.clone() };
        sink.start(&start).expect("writing to memory");
        let mut kept = Vec::new();
        for record in &records {
            match record {
                Record::Socket(s) => sink.socket(s).expect("writing to memory"),
                Record::Transition(t) => sink.transition(t).expect("writing to memory"),
                Record::Lost(l) => sink.lost(l).expect("writing to memory"),
                Record::Process(p) => sink.process(p).expect("writing to memory"),
                Record::Netns(n) => sink.netns(n).expect("writing to memory"),
                Record::Cgroup(g) => sink.cgroup(g).expect("writing to memory"),
                Record::End(_) => continue,
            }
            kept.push(record.clone());
        }
        sink.flush().expect("writing to memory");
        let again = sink.into_inner();
        let (header2, records2, warning2) = read_all(&again, "again", ReadOptions::default())
            .expect("a recording portrace wrote reads back");
        // The recorder writes its notes from the features, whatever notes were read.
        let notes = header.features.notes();
        assert_eq!(header2, portrace::tracefile::Header { portrace: VERSION.to_string(), notes, ..header });
        assert_eq!(records2, kept);
        assert!(warning2.is_some_and(|w| w.is_cut()), "no end record was written again");
    }
});
