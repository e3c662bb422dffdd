//! Tests of the codec: round trips of every record kind and of the header, and refusals
//! of malformed input.

use portrace_ebpf::Layout;

use crate::tracefile::{Header, Record};
use super::decode::filter_from;
use super::encode::{put_field, put_filter};
use super::*;
use crate::features::{Feature, Features};
use crate::filter::FilterSpec;
use crate::process_info::MAX_ARGS;
use crate::record::{CgroupInfo, Family, ProcessInfo, Transition};

#[test]
fn the_traced_command_round_trips_in_the_header() {
    let mut h = Header {
        version: 1,
        portrace: "0.1.0".into(),
        host: "h".into(),
        kernel: "k".into(),
        start: Timestamp { mono_ns: 1, unix_ns: 2 },
        clock_offset_ns: 3,
        layout: Layout::ZERO,
        sock_layout: None,
        filter: FilterSpec::default(),
        ring_size: 4096,
        compressed: false,
        notes: vec!["a note".into()],
        command: Some(vec!["sh".into(), "-c".into(), "echo 'a b'".into(), String::new(), "é".into()]),
        features: Features::default(),
    };
    let mut buf = Vec::new();
    put_header_fields(&mut buf, &h);
    assert_eq!(header_fields(&buf, 1).unwrap(), h);
    h.command = None;
    let mut buf = Vec::new();
    put_header_fields(&mut buf, &h);
    assert_eq!(header_fields(&buf, 1).unwrap(), h);
}

#[test]
fn features_round_trip_and_old_headers_have_none() {
    let mut h = header_fields(&minimal_fields(), 1).expect("a header without features reads");
    assert!(h.features.is_empty(), "a recording made before features were written knows none");
    h.features.on(Feature::LiveTimeline);
    h.features.off(Feature::TimeWait, "timer_start did not load: the kernel's verifier rejected it");
    h.features.limited(Feature::Owners, "no kernel BTF");
    let mut buf = Vec::new();
    put_header_fields(&mut buf, &h);
    assert_eq!(header_fields(&buf, 1).unwrap().features, h.features);

    // A feature a later portrace knows (code 200) is skipped; a cut one is refused.
    let mut later = minimal_fields();
    put_field(&mut later, key::FEATURE, &[200, 1]);
    assert!(header_fields(&later, 1).unwrap().features.is_empty());
    let mut cut = minimal_fields();
    put_field(&mut cut, key::FEATURE, &[3]);
    let err = header_fields(&cut, 1).unwrap_err();
    assert!(err.contains("a feature needs 2 bytes"), "{err}");
}

/// The required fields alone, as an old recording has them.
fn minimal_fields() -> Vec<u8> {
    let mut buf = Vec::new();
    put_field(&mut buf, key::PORTRACE, b"0.1.0");
    let mut start = 1u64.to_le_bytes().to_vec();
    start.extend_from_slice(&2i128.to_le_bytes());
    put_field(&mut buf, key::START, &start);
    put_field(&mut buf, key::CLOCK, &3i128.to_le_bytes());
    buf
}

#[test]
fn varints_round_trip_at_every_width() {
    let mut values = vec![0u64, 1, 127, 128, 255, 300, 16_383, 16_384, u64::MAX, u64::MAX - 1];
    values.extend((0..64).map(|s| 1u64 << s));
    for n in values {
        let mut buf = Vec::new();
        put_varint(&mut buf, n);
        assert!(buf.len() <= 10);
        let mut c = Cursor::new(&buf);
        assert_eq!(c.varint(), Ok(n));
        assert!(c.is_empty());
    }
}

#[test]
fn overlong_and_short_varints_are_refused() {
    assert!(Cursor::new(&[0xff; 11]).varint().is_err());
    assert!(Cursor::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]).varint().is_err());
    assert!(Cursor::new(&[0x80, 0x80]).varint().unwrap_err().contains("needed"));
    assert!(Cursor::new(&[0xff; 20]).varint128().is_err());
}

#[test]
fn zigzag_round_trips_extremes() {
    for n in [0i64, 1, -1, 63, -64, i64::MAX, i64::MIN] {
        assert_eq!(unzigzag(zigzag(n)), n);
    }
    for n in [0i128, -1, i128::MAX, i128::MIN] {
        assert_eq!(unzigzag128(zigzag128(n)), n);
    }
    assert_eq!(zigzag(-1), 1, "small negative numbers stay small");
}

#[test]
fn times_are_deltas_and_deviations() {
    let mut time = TimeBase::new(1_000);
    let mut buf = Vec::new();
    let a = Timestamp { mono_ns: 5_000_000_000, unix_ns: 5_000_001_000 };
    let b = Timestamp { mono_ns: 4_999_999_990, unix_ns: 4_999_999_990 };
    time.put(&mut buf, a);
    let first = buf.len();
    time.put(&mut buf, b);
    assert_eq!(buf.len() - first, 1 + 2, "an out-of-order time close by is two small numbers");
    let mut back = TimeBase::new(1_000);
    let mut c = Cursor::new(&buf);
    assert_eq!(back.get(&mut c), Ok(a));
    assert_eq!(back.get(&mut c), Ok(b));
}

#[test]
fn comm_bytes_keep_their_form() {
    assert_eq!(comm_from_bytes(b"nginx"), Comm::new("nginx"));
    let odd = Comm::from_kernel(b"a\xffb\0\0\0\0\0\0\0\0\0\0\0\0\0");
    assert_eq!(comm_from_bytes(odd.as_bytes()), odd);
    // A NUL ends the name, as in the kernel, and nothing after it is kept, so that two
    // names that print alike compare alike.
    assert_eq!(comm_from_bytes(b"tc\x8c\0\xa0\0\x18"), Comm::from_kernel(b"tc\x8c\0\0\0\0\0\0\0\0\0\0\0\0\0"));
    assert_eq!(comm_from_bytes(b"ab\0cd"), Comm::new("ab"));
    assert_eq!(comm_from_bytes(b""), Comm::new(""));
}

#[test]
fn filter_round_trips() {
    let spec = FilterSpec {
        lports: vec![80, 443],
        rports: vec![5432],
        ports: vec![22],
        nets: vec!["10.0.0.0/8".parse().unwrap(), "2001:db8::/32".parse().unwrap()],
        pids: vec![1, 4_194_304],
        comm: Some("postgres".into()),
        more_comms: Vec::new(),
        family: Some(Family::Ipv6),
        states: vec![TcpState::CloseWait, TcpState::Listen],
        cgroup: Some(crate::filter::CgroupFilter {
            path: "/kubepods.slice".into(),
            given: "/kubepods.slice".into(),
            id: 0,
            level: 0,
        }),
        netns: vec![4026531840],
    };
    let mut buf = Vec::new();
    put_filter(&mut buf, &spec);
    assert_eq!(filter_from(&buf), Ok(spec));
    let mut empty = Vec::new();
    put_filter(&mut empty, &FilterSpec::default());
    assert_eq!(filter_from(&empty), Ok(FilterSpec::default()));
}

#[test]
fn codes_round_trip() {
    for r in EndReason::ALL {
        assert_eq!(reason_from(reason_code(r)), Some(r));
    }
    for s in [OwnerSource::Syscall, OwnerSource::Listener, OwnerSource::Inventory] {
        assert_eq!(owner_source_from(owner_source_code(s)), Some(s));
    }
    for l in LossCause::ALL {
        assert_eq!(cause_from(cause_code(l)), Some(l));
    }
    assert_eq!(reason_from(0), None);
    assert_eq!(reason_from(12), None);
}

/// A crafted process record with the most arguments a record may hold, each of the
/// longest length, decodes to a command line held to the live bound: the arguments
/// that fit in `MAX_CMDLINE` bytes, then a note saying how many were not kept.
#[test]
fn a_process_record_of_256_arguments_of_4_kib_decodes_capped() {
    use crate::process_info::MAX_CMDLINE;
    let args: Vec<String> = (0..MAX_ARGS).map(|i| format!("{i:04}").repeat(MAX_TEXT / 4)).collect();
    assert!(args.iter().all(|a| a.len() == MAX_TEXT));
    let p = ProcessInfo {
        time: Timestamp { mono_ns: 7, unix_ns: 8 },
        pid: 4242,
        comm: Comm::new("hog"),
        ppid: Some(1),
        exe: Some("/usr/bin/hog".into()),
        cmdline: Some(args.clone()),
        uid: Some(0),
        user: Some("root".into()),
        cgroup: None,
        start_ticks: Some(99),
    };
    let (mut buf, mut body) = (Vec::new(), Vec::new());
    put_process(&mut buf, &mut body, &mut TimeBase::new(0), &p);
    assert!(buf.len() > MAX_ARGS * MAX_TEXT, "the record holds every argument in full ({} bytes)", buf.len());

    let mut c = Cursor::new(&buf);
    let Ok(Some(Record::Process(back))) = record(&mut c, &mut TimeBase::new(0)) else {
        panic!("the process record does not decode");
    };
    assert!(c.is_empty());
    let cmdline = back.cmdline.clone().expect("the command line is kept");
    let (note, kept) = cmdline.split_last().unwrap();
    let held: usize = kept.iter().map(String::len).sum();
    assert!(held <= MAX_CMDLINE, "{held} bytes of arguments held");
    assert_eq!(kept.len(), MAX_CMDLINE / MAX_TEXT, "as many whole arguments as fit");
    assert_eq!(kept, &args[..kept.len()], "the first arguments, unchanged");
    assert_eq!(note, &format!("... ({} more arguments)", MAX_ARGS - kept.len()));
    assert!(held + note.len() <= MAX_CMDLINE + 40, "the note is short");
    // The rest of the record is read as written.
    assert_eq!(ProcessInfo { cmdline: p.cmdline.clone(), ..back }, p);
}

#[test]
fn cgroup_records_round_trip() {
    let time = Timestamp { mono_ns: 5, unix_ns: 5 };
    for path in [Some("/kubepods.slice/kubepods-pod0b7c5c2e_8f4a_4f1e_9d3a_6a1b2c3d4e5f.slice".to_string()), None] {
        let g = CgroupInfo { time, id: 1 << 40, path };
        let (mut buf, mut body) = (Vec::new(), Vec::new());
        put_cgroup(&mut buf, &mut body, &mut TimeBase::new(0), &g);
        let mut c = Cursor::new(&buf);
        assert_eq!(record(&mut c, &mut TimeBase::new(0)), Ok(Some(Record::Cgroup(g))));
        assert!(c.is_empty());
    }
}

#[test]
fn records_and_filters_written_before_cgroups_still_read() {
    let t = Transition::example(3, TcpState::Close, TcpState::SynSent)
        .at(Timestamp { mono_ns: 9, unix_ns: 9 })
        .on_cpu(1, Comm::new("c"))
        .between(("10.0.0.1".parse().unwrap(), 1000), ("10.0.0.2".parse().unwrap(), 80))
        .owned_by(Some(Owner { pid: 1, comm: Comm::new("c"), source: OwnerSource::Syscall, cgroup: 0 }))
        .in_netns(7);
    let (mut buf, mut body) = (Vec::new(), Vec::new());
    put_transition(&mut buf, &mut body, &mut TimeBase::new(0), &t);
    // Without the trailing cgroup id (one byte, 0), as earlier versions wrote it.
    assert_eq!(buf.pop(), Some(0));
    assert!(buf[1] < 0x80, "a one-byte length");
    buf[1] -= 1;
    let mut c = Cursor::new(&buf);
    assert_eq!(record(&mut c, &mut TimeBase::new(0)), Ok(Some(Record::Transition(t.clone()))));
    // With it, the id is read.
    let with = Transition { owner: t.owner.map(|o| Owner { cgroup: 4242, ..o }), ..t };
    let mut buf = Vec::new();
    put_transition(&mut buf, &mut body, &mut TimeBase::new(0), &with);
    assert_eq!(record(&mut Cursor::new(&buf), &mut TimeBase::new(0)), Ok(Some(Record::Transition(with))));
    // A filter without the trailing --cgroup and --netns fields.
    let spec = FilterSpec { ports: vec![22], ..FilterSpec::default() };
    let mut f = Vec::new();
    put_filter(&mut f, &spec);
    f.truncate(f.len() - 2);
    assert_eq!(filter_from(&f), Ok(spec));
}
