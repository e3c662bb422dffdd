//! The tracers compared: how to find each one, start it on the workload's port, tell when
//! it is ready, which of its BPF programs sit on `sock:inet_sock_set_state`, and how to
//! read what it printed.
//!
//! - portrace: `portrace --format json --port P`; ready at its `start` record (written
//!   after its programs are attached); losses from its `lost` records and `end` record.
//! - libbpf-tools `tcpstates`: its `-L` and `-D` filters must both match (a connection's
//!   client side has the port only as remote port, the server side only as local port),
//!   so it runs unfiltered and the benchmark keeps the workload's lines; losses from its
//!   `lost N events on CPU #C` messages. It prints its header only at exit when its output
//!   is not a terminal, so it is ready when the kernel first runs its program.
//! - bcc `tcpstates-bpfcc`: unfiltered for the same reason; compiles its program at start
//!   (kernel headers needed; see `peers::bcc_headers`); ready at its header line, which
//!   follows the attach; losses from `Possibly lost N samples`.
//! - bpftrace: a script filtering on the protocol and the port in the kernel; ready when
//!   the kernel first runs its program (it prints `Attaching 1 probe...` before it
//!   attaches); losses from `Lost N events`.
//!
//! Output is matched to the workload by port and by the server's address at one end.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::bpf::ProgInfo;
use crate::cli::TracerKind;
use crate::truth;

/// A tracer ready to be started: its program and the environment it needs.
#[derive(Clone, Debug)]
pub struct Located {
    pub kind: TracerKind,
    pub program: PathBuf,
    pub version: String,
    /// Extra environment (bcc: where its kernel headers are).
    pub env: Vec<(String, String)>,
}

/// What the benchmark matches a tracer's output against.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub port: u16,
    pub server_addr: Ipv4Addr,
}

impl Located {
    /// The command that traces `target`; `scratch` is a directory for a script file.
    pub fn command(&self, target: Target, scratch: &Path) -> std::io::Result<Command> {
        let mut cmd = Command::new(&self.program);
        match self.kind {
            TracerKind::Portrace => {
                cmd.args(["--format", "json", "--port", &target.port.to_string()]);
            }
            TracerKind::LibbpfTools | TracerKind::Bcc => {}
            TracerKind::Bpftrace => {
                let script = scratch.join(format!("tcpstates-{}.bt", target.port));
                std::fs::write(&script, bpftrace_script(target.port))?;
                cmd.arg(script);
            }
        }
        // Python would otherwise flush every line because of the caller's environment;
        // bcc's tcpstates flushes each line itself anyway.
        cmd.env_remove("PYTHONUNBUFFERED");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        Ok(cmd)
    }

    /// Whether the tracer's start line is written after its programs are attached, so it
    /// marks readiness. When not (bpftrace announces before attaching; libbpf-tools'
    /// header stays buffered until exit), readiness is the kernel's first run of one of
    /// its programs.
    pub fn announces_after_attach(&self) -> bool {
        matches!(self.kind, TracerKind::Portrace | TracerKind::Bcc)
    }

    /// Whether the first bytes of its output contain its start line.
    pub fn announced(&self, head: &str) -> bool {
        match self.kind {
            TracerKind::Portrace => head
                .lines()
                .next()
                .is_some_and(|l| l.contains("\"type\":\"start\"")),
            TracerKind::LibbpfTools | TracerKind::Bcc => head.contains("SKADDR"),
            TracerKind::Bpftrace => head.contains("Attaching"),
        }
    }

    /// Whether `prog` is one of its programs on `sock:inet_sock_set_state` (portrace also
    /// loads timewait timer and packet programs; the peers load only the one).
    pub fn on_state_tracepoint(&self, prog: &ProgInfo) -> bool {
        match self.kind {
            // The kernel keeps 15 bytes of a name: inet_sock_set_state (raw tracepoint) and
            // inet_sock_set_state_backup (classic) both read "inet_sock_set_s".
            TracerKind::Portrace => prog.name.starts_with("inet_sock_set"),
            _ => true,
        }
    }
}

/// The bpftrace program: the workload's port at either end, TCP only, decided in the
/// kernel; one line per transition, states as numbers.
pub fn bpftrace_script(port: u16) -> String {
    format!(
        "tracepoint:sock:inet_sock_set_state\n\
         /args->protocol == 6 && (args->sport == {port} || args->dport == {port})/\n\
         {{\n\
         \tprintf(\"%llx %d %s %s %d %s %d %d %d\\n\", args->skaddr, pid, comm,\n\
         \t\tntop(args->family, args->saddr), args->sport, ntop(args->family, args->daddr), args->dport,\n\
         \t\targs->oldstate, args->newstate);\n\
         }}\n"
    )
}

/// What a tracer printed, counted.
#[derive(Clone, Debug, Default)]
pub struct Parsed {
    /// Transitions of the workload, per kind.
    pub kinds: BTreeMap<String, u64>,
    /// Every transition it printed, the workload's or not.
    pub transitions: u64,
    /// Losses it reported.
    pub lost: u64,
    /// portrace: losses by cause, from its end record.
    pub lost_by_cause: BTreeMap<String, u64>,
    /// portrace: its end record was there (it stopped cleanly).
    pub end_record: bool,
    /// portrace: the end record's transition count.
    pub end_transitions: Option<u64>,
    /// Lines it printed that the benchmark could not read.
    pub unreadable: u64,
}

impl Parsed {
    fn count(&mut self, target: Target, t: Seen<'_>) {
        self.transitions += 1;
        let ours_port = t.sport == target.port || t.dport == target.port;
        let server = target.server_addr.to_string();
        let ours_addr = t.saddr == server || t.daddr == server;
        if ours_port && ours_addr {
            *self.kinds.entry(truth::kind(t.old, t.new)).or_insert(0) += 1;
        }
    }
}

struct Seen<'a> {
    saddr: &'a str,
    sport: u16,
    daddr: &'a str,
    dport: u16,
    old: &'a str,
    new: &'a str,
}

/// Reads the tracer's standard output file and standard error text.
pub fn parse(
    kind: TracerKind,
    stdout: &Path,
    stderr: &str,
    target: Target,
) -> std::io::Result<Parsed> {
    let mut p = Parsed::default();
    let file = std::fs::File::open(stdout)?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = String::new();
    let mut stdout_losses = 0;
    // Bounded by the file's size.
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let l = line.trim_end();
        match kind {
            TracerKind::Portrace => parse_portrace_line(&mut p, l, target),
            TracerKind::LibbpfTools | TracerKind::Bcc => parse_tcpstates_line(&mut p, l, target),
            TracerKind::Bpftrace => parse_bpftrace_line(&mut p, l, target),
        }
        if kind != TracerKind::Portrace {
            stdout_losses += reported_losses(l);
        }
    }
    if kind != TracerKind::Portrace {
        p.lost = stdout_losses + stderr.lines().map(reported_losses).sum::<u64>();
    }
    Ok(p)
}

fn parse_portrace_line(p: &mut Parsed, line: &str, target: Target) {
    if line.is_empty() {
        return;
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        p.unreadable += 1;
        return;
    };
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("");
    let n = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    match s("type") {
        "transition" => p.count(
            target,
            Seen {
                saddr: s("saddr"),
                sport: n("sport") as u16,
                daddr: s("daddr"),
                dport: n("dport") as u16,
                old: s("oldstate"),
                new: s("newstate"),
            },
        ),
        "lost" => {
            p.lost += n("count");
        }
        "end" => {
            p.end_record = true;
            p.end_transitions = v.get("transitions").and_then(|x| x.as_u64());
            if let Some(total) = v.get("lost").and_then(|x| x.as_u64()) {
                // The end record's total is authoritative (it includes losses noticed at
                // shutdown after the last `lost` record).
                p.lost = p.lost.max(total);
            }
            if let Some(causes) = v.get("lost_by_cause").and_then(|x| x.as_object()) {
                for (cause, count) in causes {
                    p.lost_by_cause
                        .insert(cause.clone(), count.as_u64().unwrap_or(0));
                }
            }
        }
        _ => {}
    }
}

/// libbpf-tools and bcc: `SKADDR PID COMM LADDR LPORT RADDR RPORT OLD -> NEW MS`, read
/// backwards from the arrow since COMM may hold spaces.
fn parse_tcpstates_line(p: &mut Parsed, line: &str, target: Target) {
    let t: Vec<&str> = line.split_whitespace().collect();
    let Some(arrow) = t.iter().position(|&w| w == "->") else {
        return;
    };
    if arrow < 5 || arrow + 1 >= t.len() {
        return;
    }
    let (Ok(lport), Ok(rport)) = (t[arrow - 4].parse::<u16>(), t[arrow - 2].parse::<u16>()) else {
        // The header line.
        return;
    };
    p.count(
        target,
        Seen {
            saddr: t[arrow - 5],
            sport: lport,
            daddr: t[arrow - 3],
            dport: rport,
            old: t[arrow - 1],
            new: t[arrow + 1],
        },
    );
}

/// bpftrace: `SKADDR PID COMM SADDR SPORT DADDR DPORT OLD NEW`, read from the end.
fn parse_bpftrace_line(p: &mut Parsed, line: &str, target: Target) {
    let t: Vec<&str> = line.split_whitespace().collect();
    if t.len() < 9 {
        return;
    }
    let n = t.len();
    let (Ok(sport), Ok(dport), Ok(old), Ok(new)) = (
        t[n - 5].parse::<u16>(),
        t[n - 3].parse::<u16>(),
        t[n - 2].parse::<u64>(),
        t[n - 1].parse::<u64>(),
    ) else {
        return;
    };
    let (Some(old), Some(new)) = (truth::state_name(old), truth::state_name(new)) else {
        p.unreadable += 1;
        return;
    };
    p.count(
        target,
        Seen {
            saddr: t[n - 6],
            sport,
            daddr: t[n - 4],
            dport,
            old,
            new,
        },
    );
}

/// The number in a loss message: `lost 12 events on CPU #1` (libbpf-tools), `Possibly
/// lost 12 samples` (bcc), `Lost 12 events` (bpftrace).
pub fn reported_losses(line: &str) -> u64 {
    let words: Vec<&str> = line.split_whitespace().collect();
    for pair in words.windows(2) {
        if pair[0].eq_ignore_ascii_case("lost") {
            if let Ok(n) = pair[1].parse::<u64>() {
                return n;
            }
        }
    }
    0
}

/// Finds `name` on PATH or in the sbin directories (Debian puts the tools in /usr/sbin).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/usr/sbin", "/sbin", "/usr/bin", "/usr/local/sbin"]
                .iter()
                .map(PathBuf::from),
        )
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            port: 63090,
            server_addr: Ipv4Addr::new(127, 63, 0, 1),
        }
    }

    fn write(lines: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "bench-parse-{}-{}",
            std::process::id(),
            lines.len()
        ));
        std::fs::write(&p, lines).unwrap();
        p
    }

    #[test]
    fn reads_libbpf_and_bcc_lines() {
        let out = "SKADDR           PID     COMM       LADDR           LPORT RADDR           RPORT OLDSTATE    -> NEWSTATE    MS\n\
ffff88815371b780 19981   tcpload    127.63.0.1      63090 0.0.0.0         0     CLOSE       -> LISTEN      0.000\n\
ffff88815371e5c0 19981   tcpload    127.0.0.1       0     127.63.0.1      63090 CLOSE       -> SYN_SENT    0.000\n\
ffff88815371e5c0 0       swapper/1  127.0.0.1       42140 127.63.0.1      63090 FIN_WAIT2   -> CLOSE       0.019\n\
ffff88815371e5c0 0       swapper/1  127.0.0.1       42140 127.0.0.1       63090 FIN_WAIT2   -> CLOSE       0.019\n";
        let path = write(out);
        let p = parse(
            TracerKind::LibbpfTools,
            &path,
            "lost 7 events on CPU #1\n",
            target(),
        )
        .unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(p.transitions, 4);
        assert_eq!(p.kinds.get("CLOSE->LISTEN"), Some(&1));
        assert_eq!(p.kinds.get("CLOSE->SYN_SENT"), Some(&1));
        assert_eq!(p.kinds.get("FIN_WAIT2->TIME_WAIT|CLOSE"), Some(&1));
        assert_eq!(p.lost, 7);
    }

    #[test]
    fn reads_bpftrace_lines() {
        let out = "Attaching 1 probe...\n\
ffff888153719280 20599 tcpload 127.0.0.1 0 127.63.0.1 63090 7 2\n\
ffff888153719280 22 ksoftirqd/1 127.0.0.1 50108 127.63.0.1 63090 5 7\n\n\nLost 3 events\n";
        let path = write(out);
        let p = parse(TracerKind::Bpftrace, &path, "", target()).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(p.transitions, 2);
        assert_eq!(p.kinds.get("FIN_WAIT2->TIME_WAIT|CLOSE"), Some(&1));
        assert_eq!(p.lost, 3);
    }

    #[test]
    fn reads_portrace_records() {
        let out = r#"{"type":"start","schema":1}
{"type":"transition","saddr":"127.0.0.1","sport":50000,"daddr":"127.63.0.1","dport":63090,"oldstate":"FIN_WAIT2","newstate":"TIME_WAIT"}
{"type":"lost","count":2,"cause":"ring_full"}
{"type":"end","transitions":1,"lost":5,"lost_by_cause":{"ring_full":2,"skipped":3,"malformed":0}}
"#;
        let path = write(out);
        let p = parse(TracerKind::Portrace, &path, "", target()).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(p.kinds.get("FIN_WAIT2->TIME_WAIT|CLOSE"), Some(&1));
        assert_eq!(p.lost, 5);
        assert!(p.end_record);
        assert_eq!(p.lost_by_cause.get("skipped"), Some(&3));
    }

    #[test]
    fn loss_messages() {
        assert_eq!(reported_losses("Possibly lost 12 samples"), 12);
        assert_eq!(reported_losses("lost 9 events on CPU #0"), 9);
        assert_eq!(reported_losses("ERROR: whatever"), 0);
    }

    #[test]
    fn script_filters_in_the_kernel() {
        let s = bpftrace_script(63001);
        assert!(s.contains("args->sport == 63001 || args->dport == 63001"));
        assert!(s.contains("args->protocol == 6"));
    }
}
