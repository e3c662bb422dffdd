//! Micro-benchmark of portrace's userspace path, the part that runs once per transition
//! after the kernel wrote its record: decoding the ring-buffer bytes
//! ([`portrace::decode::decode`]), the timeline (socket ids, time in state, the move into
//! TIME_WAIT and its end, [`portrace::timeline::Timeline`]) and rendering through the
//! output sink of each format ([`portrace::output::sink`]) into a `BufWriter<File>` in a
//! temporary directory, as portrace writes to a redirected standard output.
//!
//! The input is synthetic but shaped like the real thing: batches of loopback connections
//! whose client closes first, twelve records per connection (ten state transitions, the
//! timewait timer being armed, and its expiry), encoded once with
//! [`portrace::decode::encode`] exactly as the kernel program lays them out. Throughput is
//! counted in transitions written (eleven per connection), so records that produce no
//! output line are overhead, not credit. The target is at least one million transitions
//! per second on one core in JSON.
//!
//! `cargo bench -p portrace --bench userspace` (add `-- --quick` for a faster, rougher run).

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use portrace::clock::{Clock, Zone};
use portrace::decode::{decode, encode};
use portrace::output::{self, Format, Sink, Start, TextOptions};
use portrace::record::Transition;
use portrace::timeline::Timeline;
use portrace_ebpf::{kind, owner_source, tcp, Event, AF_INET, EVENT_SIZE};

/// Connections per batch (one criterion iteration processes one batch).
const CONNECTIONS: u64 = 256;
/// Transitions the timeline turns one connection's records into.
const TRANSITIONS_PER_CONNECTION: u64 = 11;
/// The output file is emptied (outside the timed part) once it grows past this.
const MAX_FILE_BYTES: u64 = 256 << 20;
const SERVER_PORT: u16 = 63000;

fn comm(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..name.len()].copy_from_slice(name.as_bytes());
    out
}

fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&a);
    out
}

/// A record template: an IPv4 loopback transition on the CPU of task 4242 (`tcpload`).
fn base() -> Event {
    Event {
        ts_ns: 0,
        skaddr: 0,
        aux: 0,
        saddr: v4([127, 0, 0, 1]),
        daddr: v4([127, 63, 0, 1]),
        pid: 4242,
        tid: 4243,
        comm: comm("tcpload"),
        owner_pid: 4242,
        error: 0,
        owner_comm: comm("tcpload"),
        sport: 0,
        dport: SERVER_PORT,
        family: AF_INET,
        oldstate: tcp::CLOSE,
        newstate: tcp::SYN_SENT,
        kind: kind::TRANSITION,
        owner_source: owner_source::SYSCALL,
        tw_substate: 0,
        retransmits: 0,
        netns: 4026532000,
        owner_cgroup: 0,
    }
}

/// The records of one batch of connections, in the order the kernel emits them, encoded.
fn batch() -> Vec<[u8; EVENT_SIZE]> {
    let mut records = Vec::new();
    let mut ts = 1_000_000_000u64;
    let mut push = |mut ev: Event| {
        ts += 1_500;
        ev.ts_ns = ts;
        records.push(encode(&ev));
    };
    let mut timewaits = Vec::new();
    for i in 0..CONNECTIONS {
        let client = 0xffff_8880_1000_0000 + i * 0x1000;
        let child = client + 0x800;
        let tw = 0xffff_8880_9000_0000 + i * 0x100;
        let eph = 40_000 + i as u16;
        let client_ev = |old: u8, new: u8, sport: u16| Event {
            skaddr: client,
            sport,
            oldstate: old,
            newstate: new,
            ..base()
        };
        let child_ev = |old: u8, new: u8| Event {
            skaddr: child,
            saddr: v4([127, 63, 0, 1]),
            daddr: v4([127, 0, 0, 1]),
            sport: SERVER_PORT,
            dport: eph,
            oldstate: old,
            newstate: new,
            owner_source: owner_source::LISTENER,
            ..base()
        };
        push(client_ev(tcp::CLOSE, tcp::SYN_SENT, 0));
        push(child_ev(tcp::LISTEN, tcp::SYN_RECV));
        push(child_ev(tcp::SYN_RECV, tcp::ESTABLISHED));
        push(client_ev(tcp::SYN_SENT, tcp::ESTABLISHED, eph));
        push(client_ev(tcp::ESTABLISHED, tcp::FIN_WAIT1, eph));
        push(child_ev(tcp::ESTABLISHED, tcp::CLOSE_WAIT));
        push(client_ev(tcp::FIN_WAIT1, tcp::FIN_WAIT2, eph));
        push(child_ev(tcp::CLOSE_WAIT, tcp::LAST_ACK));
        push(Event {
            kind: kind::HANDOVER,
            aux: tw,
            tw_substate: tcp::TIME_WAIT,
            ..client_ev(tcp::FIN_WAIT2, tcp::TIME_WAIT, eph)
        });
        push(Event {
            kind: kind::TW_ARMED,
            aux: tw,
            tw_substate: tcp::TIME_WAIT,
            owner_source: owner_source::UNKNOWN,
            ..client_ev(tcp::TIME_WAIT, tcp::TIME_WAIT, eph)
        });
        push(child_ev(tcp::LAST_ACK, tcp::CLOSE));
        timewaits.push((client, tw, eph));
    }
    // The timewait sockets expire in the same order (60 s later in reality).
    for (client, tw, eph) in timewaits {
        push(Event {
            skaddr: client,
            aux: tw,
            sport: eph,
            kind: kind::TW_EXPIRE,
            tw_substate: tcp::TIME_WAIT,
            oldstate: tcp::TIME_WAIT,
            newstate: tcp::CLOSE,
            owner_source: owner_source::UNKNOWN,
            pid: 0,
            comm: comm("swapper/1"),
            ..base()
        });
    }
    records
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("portrace-bench-userspace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::Text => "text",
        Format::Json => "json",
        Format::Csv => "csv",
    }
}

fn userspace(c: &mut Criterion) {
    let records = batch();
    let tmp = TempDir::new();
    let clock = Clock::from_offset(1_800_000_000_000_000_000);
    let mut group = c.benchmark_group("userspace");
    group.throughput(Throughput::Elements(
        CONNECTIONS * TRANSITIONS_PER_CONNECTION,
    ));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.sample_size(20);
    for format in [Format::Json, Format::Text, Format::Csv] {
        let name = format_name(format);
        let path = tmp.0.join(format!("out.{name}"));
        let file = File::create(&path).expect("creating the output file");
        let mut truncator = file.try_clone().expect("cloning the output file handle");
        let out: Box<dyn Write + Send> = Box::new(BufWriter::with_capacity(1 << 16, file));
        let text = TextOptions {
            color: false,
            zone: Zone::Fixed(0),
            explain: false,
        };
        let mut sink: Box<dyn Sink + Send> = output::sink(format, out, text);
        sink.start(&Start {
            time: clock.timestamp(1_000_000_000),
            host: "bench".into(),
            kernel: "6.18.0".into(),
            features: Default::default(),
        })
        .expect("writing the start record");
        let mut timeline = Timeline::new(clock, 4_000_000, 1_000_000_000, true);
        let mut out_batch: Vec<Transition> = Vec::with_capacity(16);
        group.bench_function(BenchmarkId::new("decode+timeline+render", name), |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let mut written = 0u64;
                    for bytes in &records {
                        let d = decode(bytes).expect("a well-formed record");
                        timeline.push(&d, &mut out_batch);
                        for t in out_batch.drain(..) {
                            sink.transition(&t).expect("writing a transition");
                            written += 1;
                        }
                    }
                    sink.flush().expect("flushing the output");
                    elapsed += started.elapsed();
                    assert_eq!(written, CONNECTIONS * TRANSITIONS_PER_CONNECTION);
                    // Outside the timed part: keep the file from filling the disk.
                    if truncator.metadata().map(|m| m.len()).unwrap_or(0) > MAX_FILE_BYTES {
                        truncator.set_len(0).expect("truncating the output file");
                        truncator
                            .seek(SeekFrom::Start(0))
                            .expect("rewinding the output file");
                    }
                }
                elapsed
            });
        });
    }
    group.finish();
}

criterion_group!(benches, userspace);
criterion_main!(benches);
