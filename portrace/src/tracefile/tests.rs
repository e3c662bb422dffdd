//! Tests of the recording format: what the writer writes the reader gives back exactly,
//! and the reader's answer to every way a file can be wrong (cut at every byte, any bit
//! flipped, empty, foreign, newer, damaged in the middle, followed by junk), which must
//! always be a warning or an error, never a panic, a hang, or silently wrong records.
#![allow(
    clippy::manual_is_multiple_of,
    reason = "the workspace's rust-version (1.85) predates u64::is_multiple_of"
)]

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::codec::{self, TimeBase};
use super::*;
use crate::destination::RunSetup;
use crate::output::{Sink, Start};
use crate::record::{Comm, EndReason, Endpoints, Family, LossCause, NetnsInfo, Owner, OwnerSource, ProcessInfo};
use crate::summary::Summary;
use crate::tcp_state::TcpState;

const UNIX0: i128 = 1_795_920_067_123_456_789;
const MONO0: u64 = 123_456_789;
const NAME: &str = "test.ptr";

fn at(after_ns: u64) -> Timestamp {
    Timestamp { mono_ns: MONO0 + after_ns, unix_ns: UNIX0 + i128::from(after_ns) }
}

fn setup() -> RunSetup {
    RunSetup {
        clock_offset_ns: UNIX0 - i128::from(MONO0),
        layout: crate::tracefs::tests::LAYOUT_6_18,
        sock_layout: Some(SockLayout { family: 16, cookie: 88, valid: 1, ..SockLayout::ZERO }),
        filter: FilterSpec { ports: vec![8080], states: vec![TcpState::Listen], ..Default::default() },
        ring_size: 8 << 20,
        command: None,
    }
}

fn start() -> Start {
    let mut features = crate::features::Features::default();
    features.on(crate::features::Feature::LiveTimeline);
    features.off(crate::features::Feature::TimeWait, "timewait sockets are not followed on this kernel");
    Start { time: at(0), host: "web-1".into(), kernel: "6.18.0-test".into(), features }
}

fn v4(d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, d))
}

fn transition(i: u64) -> Transition {
    let v6 = i % 5 == 4;
    let (saddr, daddr) = if v6 {
        (IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)), IpAddr::V6(Ipv6Addr::LOCALHOST))
    } else {
        (v4(1), v4(2))
    };
    let closing = i % 3 == 2;
    let old = TcpState::ALL[(i % 12) as usize];
    let new = if closing { TcpState::Close } else { TcpState::ALL[((i + 1) % 12) as usize] };
    let owner = (i % 4 != 3).then(|| Owner {
        pid: 4242,
        comm: Comm::new("curl"),
        source: [OwnerSource::Syscall, OwnerSource::Listener, OwnerSource::Inventory][(i % 3) as usize],
        cgroup: if i % 5 == 0 { 0 } else { 9000 + i % 3 },
    });
    let on_cpu = if i % 4 == 0 { Comm::new("swapper/1") } else { Comm::from_kernel(b"odd\xff\x01name\0\0\0\0\0\0\0") };
    Transition {
        family: if v6 { Family::Ipv6 } else { Family::Ipv4 },
        prev_state_at_least: i % 10 == 1,
        reason: closing.then_some(EndReason::Refused),
        error: closing.then_some(if i % 2 == 0 { 111 } else { -5 }),
        retransmits: if closing { 6 } else { 0 },
        ..Transition::example(i / 3 + 1, old, new)
            // A little out of order now and then, as records from different CPUs are.
            .at(at(1_000 * i + if i % 7 == 3 { 0 } else { 500 }))
            .on_cpu((i % 4) as u32 * 1000, on_cpu)
            .between((saddr, 40_000 + (i % 100) as u16), (daddr, 8080))
            .after((i % 6 != 0).then_some(i * 12_345))
            .owned_by(owner)
            .in_netns(4_026_531_840)
    }
}

fn socket(i: u64) -> SocketRecord {
    SocketRecord {
        time: at(0),
        socket: 1000 + i,
        family: Family::Ipv4,
        ends: Endpoints {
            saddr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            sport: 22 + i as u16,
            daddr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dport: 0,
            netns: 4_026_531_840,
        },
        state: TcpState::Listen,
        owner: (i % 2 == 0).then(|| Owner { pid: 612, comm: Comm::new("sshd"), source: OwnerSource::Inventory, cgroup: 0 }),
        inode: 12_345 + i,
        uid: 0,
        cookie: 1 << 40 | i,
    }
}

fn lost(i: u64) -> Lost {
    Lost { time: at(1_000 * i + 999), count: i, cause: LossCause::RingFull }
}

/// A process's details: every field for even `i`, none but the required ones for odd.
fn process(i: u64) -> ProcessInfo {
    let full = i % 2 == 0;
    ProcessInfo {
        time: at(1_000 * i + 1),
        pid: 4000 + i as u32,
        comm: Comm::new(&format!("proc{i}")),
        ppid: full.then_some(1),
        exe: full.then(|| format!("/usr/bin/caf\u{e9} {i}")),
        cmdline: full.then(|| vec![format!("proc{i}"), String::new(), "--flag=\"x\"".into()]),
        uid: full.then_some(1000),
        user: full.then(|| "alice".into()),
        cgroup: full.then(|| "/system.slice/x.service".into()),
        start_ticks: full.then_some(123_456 + i),
    }
}

fn netns(i: u64) -> NetnsInfo {
    NetnsInfo { time: at(1_000 * i + 1), netns: 4_026_531_840 + i as u32, port_range: (i % 2 == 0).then_some((32768, 60999)) }
}

/// The records of a small recording in the order a run writes them, the drains (flushes)
/// marked by `None`.
fn script(n: u64) -> Vec<Option<Record>> {
    let mut out: Vec<Option<Record>> = vec![Some(Record::Netns(netns(0))), Some(Record::Netns(netns(1)))];
    out.extend((0..3).map(|i| Some(Record::Process(process(i)))));
    out.extend((0..3).map(|i| Some(Record::Socket(socket(i)))));
    out.push(None);
    for i in 0..n {
        if i % 7 == 0 {
            out.push(Some(Record::Process(process(i + 3))));
        }
        out.push(Some(Record::Transition(transition(i))));
        if i % 9 == 8 {
            out.push(Some(Record::Lost(lost(i))));
        }
        if i % 4 == 3 {
            out.push(None);
        }
    }
    out
}

/// Writes `script` through a [`FileSink`] as the live engine would; returns the file and
/// the records it should read back (the end record included).
fn record(script: &[Option<Record>], options: WriteOptions) -> (Vec<u8>, Vec<Record>) {
    let mut sink = FileSink::new(Vec::new(), NAME, setup(), options);
    let (bytes, records) = feed(&mut sink, script).expect("writing to memory cannot fail");
    assert_eq!(bytes, sink.bytes_written().load(std::sync::atomic::Ordering::Relaxed));
    (sink.into_inner(), records)
}

/// Feeds `script` to `sink`, ending it; returns the bytes the sink says it wrote and the
/// records it was given.
fn feed<W: Write>(sink: &mut FileSink<W>, script: &[Option<Record>]) -> io::Result<(u64, Vec<Record>)> {
    let mut summary = Summary::new(at(0));
    let mut given = Vec::new();
    sink.start(&start())?;
    for step in script {
        match step {
            None => sink.flush()?,
            Some(Record::Socket(s)) => sink.socket(s)?,
            Some(Record::Process(p)) => sink.process(p)?,
            Some(Record::Netns(n)) => sink.netns(n)?,
            Some(Record::Cgroup(g)) => sink.cgroup(g)?,
            Some(Record::Transition(t)) => {
                summary.add_transition(t);
                sink.transition(t)?
            }
            Some(Record::Lost(l)) => {
                summary.add_lost(l);
                sink.lost(l)?
            }
            Some(Record::End(_)) => unreachable!("scripts end through the summary"),
        }
        given.extend(step.clone());
    }
    summary.finish(at(10_000_000));
    sink.end(&summary)?;
    given.push(Record::End(End {
        time: at(10_000_000),
        transitions: summary.transitions(),
        lost: summary.lost_by_cause(),
    }));
    Ok((sink.bytes_written().load(std::sync::atomic::Ordering::Relaxed), given))
}

fn expected_header(compressed: bool) -> Header {
    let s = setup();
    Header {
        version: FORMAT_VERSION,
        portrace: crate::output::VERSION.to_string(),
        host: "web-1".into(),
        kernel: "6.18.0-test".into(),
        start: at(0),
        clock_offset_ns: s.clock_offset_ns,
        layout: s.layout,
        sock_layout: s.sock_layout,
        filter: s.filter,
        ring_size: s.ring_size,
        compressed,
        notes: vec!["TIME_WAIT off: timewait sockets are not followed on this kernel".into()],
        command: s.command,
        features: start().features,
    }
}

fn read(bytes: &[u8]) -> Result<(Header, Vec<Record>, Option<Warning>), ReadError> {
    read_all(bytes, NAME, ReadOptions::default())
}

/// Where each block starts, found by walking the framing the way the spec describes it.
fn block_offsets(file: &[u8]) -> Vec<usize> {
    let body_len = u32::from_le_bytes(file[12..16].try_into().unwrap()) as usize;
    let mut at = PREAMBLE_LEN + body_len + CRC_LEN;
    let mut out = Vec::new();
    while at < file.len() {
        out.push(at);
        let stored = u32::from_le_bytes(file[at..at + 4].try_into().unwrap()) as usize;
        at += BLOCK_HEADER_LEN + stored + CRC_LEN;
    }
    assert_eq!(at, file.len(), "blocks end exactly at the end of the file");
    out
}

/// A block framed as the spec says, around `payload` (uncompressed).
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.push(0);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The file's header alone (everything before the first block).
fn header_bytes(file: &[u8]) -> &[u8] {
    &file[..block_offsets(file)[0]]
}

#[test]
fn what_is_written_reads_back_exactly() {
    for compress in [false, true] {
        let (file, given) = record(&script(40), WriteOptions { compress });
        let (header, records, warning) = read(&file).unwrap();
        assert_eq!(header, expected_header(compress));
        assert_eq!(warning, None);
        assert_eq!(records, given, "compress: {compress}");
        assert!(matches!(records.last(), Some(Record::End(e)) if e.transitions == 40 && e.lost_total() == 8 + 17 + 26 + 35));
    }
}

#[test]
fn each_flush_closes_a_block_and_empty_flushes_write_nothing() {
    let mut sink = FileSink::new(Vec::new(), NAME, setup(), WriteOptions::default());
    sink.start(&start()).unwrap();
    let header_len = sink.bytes_written().load(std::sync::atomic::Ordering::Relaxed);
    sink.flush().unwrap();
    sink.flush().unwrap();
    assert_eq!(sink.bytes_written().load(std::sync::atomic::Ordering::Relaxed), header_len);
    sink.transition(&transition(1)).unwrap();
    sink.transition(&transition(2)).unwrap();
    sink.flush().unwrap();
    sink.transition(&transition(3)).unwrap();
    sink.flush().unwrap();
    let file = sink.into_inner();
    assert_eq!(block_offsets(&file).len(), 2);
    let (_, records, warning) = read(&file).unwrap();
    assert_eq!(records.len(), 3);
    assert_eq!(warning.map(|w| w.kind), Some(WarningKind::NoEnd), "no end record was written");
}

#[test]
fn large_drains_are_split_into_bounded_blocks() {
    let script: Vec<Option<Record>> = (0..20_000).map(|i| Some(Record::Transition(transition(i)))).collect();
    for compress in [false, true] {
        let (file, given) = record(&script, WriteOptions { compress });
        let blocks = block_offsets(&file);
        assert!(blocks.len() >= 3, "{} blocks", blocks.len());
        for &b in &blocks {
            let raw = u32::from_le_bytes(file[b + 4..b + 8].try_into().unwrap()) as usize;
            assert!(raw < BLOCK_TARGET + 1024, "a block of {raw} bytes");
        }
        assert_eq!(read(&file).unwrap().1, given);
    }
}

#[test]
fn compression_shrinks_repetitive_blocks_and_keeps_them_exact() {
    let script: Vec<Option<Record>> = (0..5_000).map(|i| Some(Record::Transition(transition(i)))).collect();
    let (plain, _) = record(&script, WriteOptions { compress: false });
    let (packed, given) = record(&script, WriteOptions { compress: true });
    assert!(packed.len() * 2 < plain.len(), "{} compressed vs {} plain", packed.len(), plain.len());
    assert_eq!(read(&packed).unwrap().1, given);
    // Transitions are small: under 70 bytes each on average even uncompressed.
    assert!(plain.len() < 5_000 * 70, "{} bytes", plain.len());
}

#[test]
fn every_prefix_reads_up_to_its_last_complete_block() {
    for compress in [false, true] {
        let (file, given) = record(&script(24), WriteOptions { compress });
        let blocks = block_offsets(&file);
        let header_len = blocks[0];
        // Records available after each complete block.
        let mut complete = vec![(header_len, 0usize)];
        for (i, &b) in blocks.iter().enumerate() {
            let end = blocks.get(i + 1).copied().unwrap_or(file.len());
            let (_, records, _) = read(&file[..end]).unwrap();
            assert!(end > b);
            complete.push((end, records.len()));
        }
        for cut in 0..file.len() {
            match read(&file[..cut]) {
                Err(e) => {
                    assert!(cut < header_len, "a cut at {cut}, after the header, is an error: {e}");
                    let want = if cut == 0 { ErrorKind::Empty } else { ErrorKind::Truncated };
                    assert_eq!(e.kind, want, "cut at {cut}: {e}");
                    assert!(e.to_string().starts_with("test.ptr: at byte "), "{e}");
                }
                Ok((_, records, warning)) => {
                    assert!(cut >= header_len, "a cut at {cut} inside the header read as Ok");
                    let warning = warning.unwrap_or_else(|| panic!("a cut at {cut} gave no warning"));
                    let &(block_end, n) = complete.iter().rev().find(|(end, _)| *end <= cut).unwrap();
                    assert_eq!(records[..], given[..n], "cut at {cut}");
                    assert_eq!(warning.records, n as u64);
                    assert_eq!(warning.offset, block_end as u64, "cut at {cut}: {warning}");
                    let kind = if block_end == cut { WarningKind::NoEnd } else {
                        WarningKind::CutInBlock { ignored: (cut - block_end) as u64 }
                    };
                    assert_eq!(warning.kind, kind, "cut at {cut}");
                    assert!(warning.to_string().contains(&format!("cut at byte {block_end}")), "{warning}");
                }
            }
        }
        let (_, all, warning) = read(&file).unwrap();
        assert_eq!((all, warning), (given, None));
    }
}

/// A deterministic pseudo-random sequence (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Reading a damaged file must say so: an error, or records with a warning, whose records
/// are those of the intact file up to where the damage was found.
fn assert_damage_noticed(damaged: &[u8], intact: &[Record], what: &str) {
    for salvage in [false, true] {
        match read_all(damaged, NAME, ReadOptions { salvage }) {
            Err(e) => {
                assert!(!salvage || e.offset < header_len_of(damaged), "{what}: salvage still failed after the header: {e}");
                assert!(e.to_string().contains("at byte"), "{what}: {e}");
            }
            Ok((_, records, warning)) => {
                assert!(warning.is_some(), "{what}: damage went unnoticed");
                assert!(records.len() <= intact.len(), "{what}: more records than written");
                if salvage {
                    // Damaged blocks are skipped: what is read is the intact file's records
                    // less some, in order.
                    let mut rest = intact.iter();
                    for (i, r) in records.iter().enumerate() {
                        assert!(rest.any(|x| x == r), "{what}: salvaged record {i} was not written, or not in this order");
                    }
                } else {
                    assert_eq!(records[..], intact[..records.len()], "{what}: records differ before the damage");
                }
            }
        }
    }
}

fn header_len_of(file: &[u8]) -> u64 {
    if file.len() < PREAMBLE_LEN {
        // Cut inside the preamble: every error is in the header.
        return PREAMBLE_LEN as u64;
    }
    let body = u32::from_le_bytes(file[12..16].try_into().unwrap()) as u64;
    PREAMBLE_LEN as u64 + body.min(MAX_HEADER_LEN.into()) + CRC_LEN as u64
}

#[test]
fn every_bit_flip_near_the_start_is_noticed() {
    for compress in [false, true] {
        let (file, given) = record(&script(30), WriteOptions { compress });
        let span = file.len().min(600);
        for byte in 0..span {
            for bit in 0..8 {
                let mut damaged = file.clone();
                damaged[byte] ^= 1 << bit;
                assert_damage_noticed(&damaged, &given, &format!("bit {bit} of byte {byte} (compress {compress})"));
            }
        }
    }
}

#[test]
fn random_damage_anywhere_is_noticed() {
    let mut rng = Rng(0x5eed_f00d_d00d);
    for compress in [false, true] {
        let (file, given) = record(&script(300), WriteOptions { compress });
        for round in 0..2_000 {
            let mut damaged = file.clone();
            let flips = 1 + rng.below(4);
            for _ in 0..flips {
                let at = rng.below(damaged.len());
                damaged[at] ^= 1 << rng.below(8);
            }
            if damaged == file {
                continue;
            }
            // Now and then also cut the damaged file short.
            if round % 5 == 0 {
                let len = rng.below(damaged.len());
                damaged.truncate(len);
            }
            assert_damage_noticed(&damaged, &given, &format!("round {round} (compress {compress})"));
        }
    }
}

#[test]
fn a_damaged_block_in_the_middle_is_an_error_unless_salvaging() {
    let (file, given) = record(&script(24), WriteOptions::default());
    let blocks = block_offsets(&file);
    let victim = blocks[3];
    let before = read(&file[..victim]).unwrap().1.len();
    let mut damaged = file.clone();
    damaged[victim + BLOCK_HEADER_LEN + 2] ^= 0x10;
    let err = read(&damaged).unwrap_err();
    assert_eq!((err.kind, err.offset), (ErrorKind::Corrupt, victim as u64));
    assert!(err.message.contains("the block's checksum does not match"), "{err}");
    assert!(err.message.contains(&format!("the {before} records before it")), "{err}");
    assert!(err.message.contains("--salvage"), "{err}");

    // Salvaging skips the damaged block and reads every block after it.
    let (_, records, warning) = read_all(&damaged, NAME, ReadOptions { salvage: true }).unwrap();
    let after = read_all(&[header_bytes(&file), &file[blocks[4]..]].concat(), NAME, ReadOptions::default()).unwrap().1;
    assert_eq!(records[..before], given[..before]);
    assert_eq!(records[before..], after[..]);
    assert!(records.len() < given.len() && matches!(records.last(), Some(Record::End(_))));
    let warning = warning.unwrap();
    assert_eq!(warning.offset, victim as u64);
    assert_eq!(warning.kind, WarningKind::Salvaged { ignored: (blocks[4] - victim) as u64, regions: 1 });
    assert!(warning.to_string().contains(&format!("damaged at byte {victim}")), "{warning}");
    assert!(warning.to_string().contains("skipped"), "{warning}");
}

#[test]
fn salvage_goes_on_after_damaged_framing_and_undecodable_blocks() {
    for compress in [false, true] {
        let (file, given) = record(&script(60), WriteOptions { compress });
        let blocks = block_offsets(&file);
        assert!(blocks.len() > 8, "{} blocks", blocks.len());
        let only = |from: usize, to: usize| {
            let mut part = header_bytes(&file).to_vec();
            part.extend_from_slice(&file[blocks[from]..blocks.get(to).copied().unwrap_or(file.len())]);
            read(&part).unwrap().1.into_iter().filter(|r| !matches!(r, Record::End(_))).collect::<Vec<_>>()
        };
        let mut damaged = file.clone();
        // Block 2's stored length: the framing no longer says where block 3 starts.
        damaged[blocks[2] + 2] ^= 0x40;
        // Block 5: its raw length claims one byte more (the checksum recomputed), so it
        // does not decode as it says.
        let raw = u32::from_le_bytes(damaged[blocks[5] + 4..blocks[5] + 8].try_into().unwrap()) + 1;
        damaged[blocks[5] + 4..blocks[5] + 8].copy_from_slice(&raw.to_le_bytes());
        if !compress {
            damaged[blocks[5]..blocks[5] + 4].copy_from_slice(&raw.to_le_bytes());
        }
        let (b5, b6) = (blocks[5], blocks[6]);
        let crc = crc32fast::hash(&damaged[b5..b6 - CRC_LEN]);
        damaged[b6 - CRC_LEN..b6].copy_from_slice(&crc.to_le_bytes());
        let (_, records, warning) = read_all(&damaged, NAME, ReadOptions { salvage: true }).unwrap();
        let mut expected = only(0, 2);
        expected.extend(only(3, 5));
        expected.extend(only(6, blocks.len()));
        expected.push(given.last().unwrap().clone());
        assert_eq!(records, expected, "compress {compress}");
        let warning = warning.unwrap();
        let WarningKind::Salvaged { regions, .. } = warning.kind else { panic!("{warning}") };
        assert_eq!((warning.offset, regions), (blocks[2] as u64, 2), "compress {compress}: {warning}");
        // Without --salvage, still an error naming the first damage.
        assert_eq!(read(&damaged).unwrap_err().offset, blocks[2] as u64);
    }
}

#[test]
fn salvage_skips_many_damaged_blocks_in_a_row_without_recursion() {
    let (file, _) = record(&script(8), WriteOptions::default());
    let mut damaged = header_bytes(&file).to_vec();
    // 50,000 blocks whose one record runs past its block, then the file.
    let junk = frame(&[0x01, 0x7f]);
    for _ in 0..50_000 {
        damaged.extend_from_slice(&junk);
    }
    damaged.extend_from_slice(&file[block_offsets(&file)[0]..]);
    let (_, records, warning) = read_all(&damaged, NAME, ReadOptions { salvage: true }).unwrap();
    assert_eq!(records, read(&file).unwrap().1);
    let warning = warning.unwrap();
    assert!(matches!(warning.kind, WarningKind::Salvaged { regions: 50_000, .. }), "{warning}");
}

#[test]
fn a_damaged_last_block_or_a_zeroed_tail_is_a_cut() {
    let (file, given) = record(&script(24), WriteOptions::default());
    let blocks = block_offsets(&file);
    let last = *blocks.last().unwrap();
    let mut damaged = file.clone();
    damaged[last + BLOCK_HEADER_LEN] ^= 1;
    let (_, records, warning) = read(&damaged).unwrap();
    let warning = warning.unwrap();
    assert_eq!(warning.offset, last as u64);
    assert!(matches!(warning.kind, WarningKind::DamagedTail { .. }), "{warning}");
    assert_eq!(records[..], given[..records.len()]);

    // A crash can leave the file longer than what reached the disk, padded with zeros.
    let mut zeroed = file[..last].to_vec();
    zeroed.resize(file.len() + 4096, 0);
    let (_, records, warning) = read(&zeroed).unwrap();
    let warning = warning.unwrap();
    assert_eq!((warning.offset, warning.records), (last as u64, records.len() as u64));
    assert_eq!(warning.kind, WarningKind::DamagedTail { ignored: (zeroed.len() - last) as u64 });
    assert!(warning.to_string().contains("as after a crash"), "{warning}");
}

#[test]
fn an_empty_file_is_an_error() {
    let err = read(b"").unwrap_err();
    assert_eq!((err.kind, err.offset), (ErrorKind::Empty, 0));
    assert_eq!(
        err.to_string(),
        "test.ptr: at byte 0: the file is empty, so it is not a portrace recording (a recorder \
         that stopped before tracing began leaves an empty file)"
    );
}

#[test]
fn foreign_files_are_named_for_what_they_are() {
    let cases: &[(&[u8], &str)] = &[
        (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "it is a PNG image"),
        (b"{\"type\":\"start\",\"schema\":1}\n", "it looks like JSON"),
        (b"TIME            PID COMM\n", "it looks like text"),
        (b"\x1f\x8b\x08\0\0\0\0\0", "gzip-compressed"),
        (b"\x7fELF\x02\x01\x01", "an executable"),
        (b"\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", "does not start with the recording signature"),
        (b"\x89", "does not start with the recording signature"),
    ];
    for (bytes, what) in cases {
        let Err(err) = read(bytes) else { panic!("{what}: read as a recording") };
        if bytes.len() == 1 {
            // A lone first byte of the signature is a recording cut inside its header.
            assert_eq!(err.kind, ErrorKind::Truncated, "{err}");
            continue;
        }
        assert_eq!(err.kind, ErrorKind::Foreign, "{err}");
        assert!(err.message.contains(what), "{what}: {err}");
        assert!(err.message.contains("portrace record -o FILE"), "{err}");
    }
}

#[test]
fn a_newer_format_version_asks_for_a_newer_portrace() {
    let (mut file, _) = record(&script(3), WriteOptions::default());
    file[8..10].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let err = read(&file).unwrap_err();
    assert_eq!((err.kind, err.offset), (ErrorKind::Newer, 8));
    assert_eq!(
        err.to_string(),
        format!(
            "test.ptr: at byte 8: the recording is in format version {}, written by a newer \
             portrace; this portrace reads versions up to {FORMAT_VERSION}: read it with a newer \
             portrace",
            FORMAT_VERSION + 1
        )
    );
    let (mut flagged, _) = record(&script(3), WriteOptions::default());
    flagged[10] = 1;
    let err = read(&flagged).unwrap_err();
    assert_eq!((err.kind, err.offset), (ErrorKind::Newer, 10), "{err}");
}

#[test]
fn unknown_records_header_fields_and_trailing_fields_are_skipped() {
    let (file, given) = record(&script(2), WriteOptions::default());
    let mut patched = header_bytes(&file).to_vec();
    // An unknown header field, appended to the header body; the header's length and
    // checksum are fixed up.
    let body_end = patched.len() - CRC_LEN;
    patched.truncate(body_end);
    patched.extend_from_slice(&[200, 3, b'n', b'e', b'w']);
    let body_len = (patched.len() - PREAMBLE_LEN) as u32;
    patched[12..16].copy_from_slice(&body_len.to_le_bytes());
    let crc = crc32fast::hash(&patched);
    patched.extend_from_slice(&crc.to_le_bytes());
    // A block with an unknown record kind, and a transition with two bytes of fields
    // from the future at the end of its body.
    let mut payload = vec![99, 4, 1, 2, 3, 4];
    let mut body = Vec::new();
    let mut time = TimeBase::new(setup().clock_offset_ns);
    let t = transition(5);
    codec::put_transition(&mut payload, &mut body, &mut time, &t);
    let len_at = 6 + 1;
    assert_eq!(usize::from(payload[len_at]), body.len(), "a one-byte length");
    payload[len_at] += 2;
    payload.extend_from_slice(&[0xab, 0xcd]);
    patched.extend_from_slice(&frame(&payload));
    let (header, records, warning) = read(&patched).unwrap();
    assert_eq!(header, expected_header(false));
    assert_eq!(records, vec![Record::Transition(t)]);
    assert_eq!(warning.map(|w| w.kind), Some(WarningKind::NoEnd));
    assert!(given.len() > 1);
}

#[test]
fn data_after_the_end_record_is_reported_and_ignored() {
    let (file, given) = record(&script(6), WriteOptions::default());
    let mut twice = file.clone();
    twice.extend_from_slice(&file);
    let (_, records, warning) = read(&twice).unwrap();
    assert_eq!(records, given);
    let warning = warning.unwrap();
    assert_eq!((warning.offset, warning.kind), (file.len() as u64, WarningKind::AfterEnd { ignored: file.len() as u64 }));
    assert!(!warning.is_cut());
}

#[test]
fn malformed_records_inside_a_sound_block_are_errors() {
    let (file, _) = record(&script(2), WriteOptions::default());
    let mut bad = header_bytes(&file).to_vec();
    let at = bad.len();
    // A transition whose states are numbers the kernel does not use: the states byte is
    // the one that differs between two transitions that differ only in their new state.
    let encode = |t: &Transition| {
        let (mut payload, mut body) = (Vec::new(), Vec::new());
        codec::put_transition(&mut payload, &mut body, &mut TimeBase::new(0), t);
        payload
    };
    let t = transition(1);
    let payload = encode(&t);
    let other = encode(&Transition { newstate: TcpState::NewSynRecv, ..t.clone() });
    let diff: Vec<usize> = (0..payload.len()).filter(|&i| payload[i] != other[i]).collect();
    assert_eq!(diff.len(), 1);
    let mut broken = payload.clone();
    broken[diff[0]] = 0xff;
    bad.extend_from_slice(&frame(&broken));
    bad.extend_from_slice(&frame(&payload));
    match read(&bad) {
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::Corrupt, "{e}");
            assert!(e.offset >= at as u64, "{e}");
            assert!(e.message.contains("record 1 of the block"), "{e}");
        }
        Ok(r) => panic!("a transition with state 15 was read: {r:?}"),
    }
}

/// A writer that accepts `limit` bytes, then fails as a full disk does; counts the calls
/// made after it failed.
struct FullDisk {
    data: Vec<u8>,
    limit: usize,
    calls_after_full: usize,
}

impl Write for FullDisk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.limit - self.data.len();
        if room == 0 {
            self.calls_after_full += 1;
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let n = buf.len().min(room);
        self.data.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_full_disk_stops_the_recording_and_keeps_what_was_written() {
    let script = script(60);
    let (complete, given) = record(&script, WriteOptions::default());
    let blocks = block_offsets(&complete);
    let mut limits: Vec<usize> = (0..complete.len()).step_by(37).collect();
    limits.extend(blocks.iter().flat_map(|&b| [b, b + 1]));
    for limit in limits {
        let disk = FullDisk { data: Vec::new(), limit, calls_after_full: 0 };
        let mut sink = FileSink::new(disk, NAME, setup(), WriteOptions::default());
        let err = feed(&mut sink, &script).expect_err("the disk fills up");
        assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
        let message = err.to_string();
        assert!(message.starts_with("test.ptr: writing the "), "{message}");
        assert!(message.contains("No space left on device"), "{message}");
        assert!(message.contains("portrace replay test.ptr"), "{message}");
        // Every call after the failure fails at once, without touching the disk.
        for _ in 0..3 {
            assert!(sink.transition(&transition(1)).is_err());
            assert!(sink.flush().is_err());
        }
        let disk = sink.into_inner();
        assert_eq!(disk.calls_after_full, 1, "limit {limit}: only the failing write met the full disk");
        assert_eq!(disk.data[..], complete[..limit], "limit {limit}: what was written is the recording's start");
        match read(&disk.data) {
            Ok((_, records, warning)) => {
                assert!(warning.is_some_and(|w| w.is_cut()), "limit {limit}");
                assert_eq!(records[..], given[..records.len()], "limit {limit}");
                let safe = format!("the {} records written before it", records.len());
                assert!(message.contains(&safe), "limit {limit}: {message}");
            }
            Err(e) => assert!(limit < blocks[0] && e.offset <= limit as u64, "limit {limit}: {e}"),
        }
    }
}

#[test]
fn records_before_the_header_are_refused() {
    let mut sink = FileSink::new(Vec::new(), NAME, setup(), WriteOptions::default());
    let err = sink.transition(&transition(0)).unwrap_err();
    assert!(err.to_string().contains("before the header"), "{err}");
    assert!(sink.flush().is_ok(), "flushing an unstarted sink is harmless");
    assert!(sink.into_inner().is_empty());
}

#[test]
fn filter_flags_render_as_typed() {
    let spec = FilterSpec {
        lports: vec![80],
        ports: vec![443, 8443],
        nets: vec!["10.0.0.0/8".parse().unwrap()],
        family: Some(Family::Ipv4),
        pids: vec![7],
        comm: Some("nginx".into()),
        states: vec![TcpState::TimeWait],
        ..Default::default()
    };
    assert_eq!(
        filter_flags(&spec),
        "--lport 80 --port 443 --port 8443 --addr 10.0.0.0/8 -4 --pid 7 --comm \"nginx\" --state TIME_WAIT"
    );
    assert_eq!(filter_flags(&FilterSpec::default()), "");
}


#[test]
fn a_header_field_given_twice_is_refused() {
    let (file, _) = record(&script(1), WriteOptions::default());
    let mut header = header_bytes(&file).to_vec();
    header.truncate(header.len() - CRC_LEN);
    header.extend_from_slice(&[2, 5, b'o', b't', b'h', b'e', b'r']);
    let body_len = (header.len() - PREAMBLE_LEN) as u32;
    header[12..16].copy_from_slice(&body_len.to_le_bytes());
    let crc = crc32fast::hash(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    let err = read(&header).unwrap_err();
    assert_eq!((err.kind, err.offset), (ErrorKind::Corrupt, PREAMBLE_LEN as u64));
    assert!(err.message.contains("header field 2 appears twice"), "{err}");
}

#[test]
fn the_checksum_is_the_crc32_of_zlib_and_png() {
    // The check value of CRC-32/ISO-HDLC, as the spec says.
    assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
}

#[test]
fn filter_flags_name_every_command_name() {
    let spec = FilterSpec { comm: Some("nginx".into()), more_comms: vec!["sshd".into()], ..Default::default() };
    assert_eq!(filter_flags(&spec), "--comm \"nginx\" --comm \"sshd\"");
}
