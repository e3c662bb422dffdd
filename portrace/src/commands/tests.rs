//! The command line parsed into tasks: flags, lists, values refused, help.
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use super::output_args::{ColorChoice, OutputFormat};
use super::record::RecordTarget;
use super::report::ReportFormat;
use super::*;
use crate::alerts::rules::Expect;
use crate::alerts::AlertKind;
use crate::filter::FilterSpec;
use crate::record::Family;
use crate::tcp_state::TcpState;
use crate::units::{parse_duration, parse_ring_size};

fn task(args: &[&str]) -> Result<Task, String> {
    let mut argv = vec!["portrace"];
    argv.extend_from_slice(args);
    Args::try_parse_from(argv).map(Args::into_task).map_err(|e| e.to_string())
}

fn parse(args: &[&str]) -> Result<Config, String> {
    match task(args)? {
        Task::Live(config) => Ok(config),
        other => panic!("{args:?} is not live tracing: {other:?}"),
    }
}

#[test]
fn no_arguments_trace_everything_as_text() {
    let c = parse(&[]).unwrap();
    assert_eq!(c.filter, FilterSpec::default());
    assert_eq!(c.format, OutputFormat::Text);
    assert_eq!(c.ring_size, 4 << 20);
    assert_eq!((c.duration, c.count), (None, None));
}

#[test]
fn bcc_style_flags_work() {
    let c = parse(&["-L", "80", "-L", "443", "-D", "5432", "-4", "--state", "time-wait"]).unwrap();
    assert_eq!(c.filter.lports, vec![80, 443]);
    assert_eq!(c.filter.rports, vec![5432]);
    assert_eq!(c.filter.family, Some(Family::Ipv4));
    assert_eq!(c.filter.states, vec![TcpState::TimeWait]);
}

#[test]
fn repeatable_filters_take_comma_lists() {
    let c = parse(&[
        "-L", "80,443", "-L", "8080", "-D", "5432,6432", "--port", "22,2222", "--addr", "10.0.0.0/8,::1",
        "--pid", "7,9", "--state", "LISTEN,close-wait",
    ])
    .unwrap();
    assert_eq!(c.filter.lports, vec![80, 443, 8080]);
    assert_eq!(c.filter.rports, vec![5432, 6432]);
    assert_eq!(c.filter.ports, vec![22, 2222]);
    assert_eq!(c.filter.nets.iter().map(ToString::to_string).collect::<Vec<_>>(), ["10.0.0.0/8", "::1/128"]);
    assert_eq!(c.filter.pids, vec![7, 9]);
    assert_eq!(c.filter.states, vec![TcpState::Listen, TcpState::CloseWait]);
    // A bad item is named, not the whole list.
    let err = parse(&["-L", "80,x"]).unwrap_err();
    assert!(err.contains("'x' is not a port number"), "{err}");
    let err = parse(&["--pid", "7,0"]).unwrap_err();
    assert!(err.contains("0 is no process"), "{err}");
    let Task::Replay(r) = task(&["replay", "t.ptr", "--port", "80,443"]).unwrap() else { panic!("not a replay") };
    assert_eq!(r.filter.ports, vec![80, 443]);
}

#[test]
fn every_flag_reaches_the_config() {
    let c = parse(&[
        "--port", "22", "--addr", "10.0.0.0/8", "-6", "--pid", "7", "--format", "json",
        "--duration", "1m", "--count", "5", "--ring-size", "64K", "--color", "never",
    ])
    .unwrap();
    assert_eq!(c.filter.ports, vec![22]);
    assert_eq!(c.filter.nets[0].to_string(), "10.0.0.0/8");
    assert_eq!(c.filter.family, Some(Family::Ipv6));
    assert_eq!(c.filter.pids, vec![7]);
    assert!(!c.snapshot);
    assert_eq!(c.format, OutputFormat::Json);
    assert_eq!(c.duration, Some(Duration::from_secs(60)));
    assert_eq!(c.count, Some(5));
    assert_eq!(c.ring_size, 65536);
    assert_eq!(c.color, ColorChoice::Never);
}

#[test]
fn bad_values_are_named_in_the_error() {
    let cases: &[(&[&str], &str)] = &[
        (&["--port", "70000"], "port 70000 is out of range"),
        (&["-L", "x"], "'x' is not a port number"),
        (&["--state", "ESTABLISH"], "unknown TCP state 'ESTABLISH'"),
        (&["--addr", "10.0.0.0/33"], "prefix length '/33' is out of range"),
        (&["--addr", "example.com"], "'example.com' is not an IP address"),
        (&["--ring-size", "1000"], "must be a power of two"),
        (&["--ring-size", "3M"], "must be a power of two"),
        (&["--ring-size", "lots"], "'lots' is not a size"),
        (&["--format", "xml"], "invalid value 'xml' for '--format"),
        (&["--duration", "soon"], "'soon' is not a duration"),
        (&["--duration", "0s"], "out of range"),
        (&["--count", "0"], "--count"),
        (&["-4", "-6"], "cannot be used with"),
        (&["--pid=-3"], "invalid value '-3' for '--pid"),
        (&["--pid", "0"], "0 is no process: process ids start at 1"),
        (&["--pid", "abc"], "'abc' is not a process id: give the number ps shows"),
        (&["--pid", "4294967295"], "'4294967295' is not a process id"),
        (&["--comm", "a-name-longer-than-15"], "the kernel keeps 1 to 15 bytes"),
    ];
    for (args, expected) in cases {
        let err = parse(args).expect_err(&format!("{args:?} should be refused"));
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

#[test]
fn record_dir_is_the_flight_recorder_with_checked_bounds() {
    let Task::Record(r) = task(&["record", "--dir", "/var/lib/f", "--port", "80"]).unwrap() else {
        panic!("not a recording");
    };
    let defaults = crate::flight::FlightOptions {
        dir: PathBuf::from("/var/lib/f"),
        rotate: Duration::from_secs(600),
        keep: 12,
        max_size: None,
    };
    assert_eq!(r.target, RecordTarget::Dir(defaults));
    assert_eq!(r.trace.filter.ports, vec![80]);
    let Task::Record(r) =
        task(&["record", "--dir", "d", "--rotate", "1h", "--keep", "3", "--max-size", "64M", "--compress"]).unwrap()
    else {
        panic!("not a recording");
    };
    let RecordTarget::Dir(f) = r.target else { panic!("not the flight recorder") };
    assert_eq!((f.rotate, f.keep, f.max_size, r.compress), (Duration::from_secs(3600), 3, Some(64 << 20), true));
    let cases: &[(&[&str], &str)] = &[
        (&["record", "--dir", "d", "--keep", "0"], "--keep 0 would keep no finished recording"),
        (&["record", "--dir", "d", "--keep", "many"], "'many' is not a number of files"),
        (&["record", "--dir", "d", "--rotate", "500ms"], "a file must cover at least 1s"),
        (&["record", "--dir", "d", "--rotate", "soon"], "'soon' is not a duration"),
        (&["record", "--dir", "d", "--max-size", "1K"], "--max-size 1K is too small"),
        (&["record", "--dir", "d", "--max-size", "big"], "'big' is not a size"),
        (&["record", "--dir", "d", "-o", "t.ptr"], "cannot be used with"),
        (&["record", "--dir", "d", "--force"], "cannot be used with"),
        (&["record", "-o", "t.ptr", "--keep", "3"], "cannot be used with"),
        (&["record", "-o", "t.ptr", "--rotate", "1m"], "cannot be used with"),
        (&["record", "-o", "t.ptr", "--max-size", "1G"], "cannot be used with"),
        (&["record", "--rotate", "1m"], "--dir"),
    ];
    for (args, expected) in cases {
        let err = task(args).expect_err(&format!("{args:?} should be refused"));
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

#[test]
fn record_takes_every_live_filter_and_limit() {
    let Task::Record(r) = task(&[
        "record", "-o", "t.ptr", "--port", "80", "-L", "81", "-D", "82", "--addr", "10.0.0.0/8", "-4",
        "--pid", "7", "--comm", "nginx", "--state", "LISTEN", "--duration", "5s", "--count", "9",
        "--ring-size", "64K", "--compress", "--force", "--summary",
    ])
    .unwrap() else {
        panic!("not a recording");
    };
    assert_eq!(r.target, RecordTarget::File { path: PathBuf::from("t.ptr"), force: true });
    assert!(r.compress && r.trace.summary);
    let f = &r.trace.filter;
    assert_eq!((&f.ports[..], &f.lports[..], &f.rports[..]), (&[80][..], &[81][..], &[82][..]));
    assert_eq!((f.family, &f.pids[..], f.comm.as_deref()), (Some(Family::Ipv4), &[7][..], Some("nginx")));
    assert_eq!(f.states, vec![TcpState::Listen]);
    assert_eq!(f.nets.len(), 1);
    assert_eq!((r.trace.duration, r.trace.count, r.trace.ring_size), (Some(Duration::from_secs(5)), Some(9), 65536));
    assert!(!r.trace.snapshot);
}

#[test]
fn replay_and_report_take_a_file_and_filters() {
    let Task::Replay(r) = task(&["replay", "t.ptr", "--port", "443", "-f", "csv", "--salvage"]).unwrap() else {
        panic!("not a replay");
    };
    assert_eq!((r.file, r.format, r.salvage, r.info), (PathBuf::from("t.ptr"), OutputFormat::Csv, true, false));
    assert_eq!(r.filter.ports, vec![443]);
    let Task::Report(r) = task(&["report", "t.ptr", "--format", "json", "--by-port", "--top", "3", "-6"]).unwrap()
    else {
        panic!("not a report");
    };
    assert_eq!((r.format, r.by_port, r.by_process, r.top), (ReportFormat::Json, true, false, 3));
    assert_eq!(r.filter.family, Some(Family::Ipv6));
}

#[test]
fn live_flags_stay_at_the_top_level() {
    let c = parse(&["--port", "80", "--summary"]).unwrap();
    assert_eq!(c.filter.ports, vec![80]);
    assert!(c.summary);
    assert!(!parse(&[]).unwrap().summary);
}

#[test]
fn commands_refuse_what_does_not_belong_to_them() {
    let cases: &[(&[&str], &str)] = &[
        // Flags of live tracing come after a command, never before it.
        (&["--port", "80", "record", "-o", "t.ptr"], "unexpected argument 'record'"),
        (&["record"], "--output <FILE>"),
        (&["record", "-o", "t.ptr", "--format", "json"], "unexpected argument '--format'"),
        (&["record", "-o", "t.ptr", "--snapshot"], "unexpected argument '--snapshot'"),
        (&["replay"], "<FILE>"),
        (&["replay", "t.ptr", "--duration", "5s"], "unexpected argument '--duration'"),
        (&["report", "t.ptr", "--format", "csv"], "invalid value 'csv'"),
        (&["report", "t.ptr", "--top", "0"], "--top"),
        (&["record", "-o", "t.ptr", "--port", "70000"], "port 70000 is out of range"),
        (&["replay", "t.ptr", "--state", "ESTABLISH"], "unknown TCP state 'ESTABLISH'"),
    ];
    for (args, expected) in cases {
        let err = task(args).expect_err(&format!("{args:?} should be refused"));
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

#[test]
fn diagram_takes_a_source_an_output_and_filters() {
    let Task::Diagram(d) = task(&["diagram", "-o", "tcp.svg", "--port", "443", "--duration", "30s"]).unwrap() else {
        panic!("not a diagram");
    };
    assert_eq!((d.output, d.from, d.conn, d.format), (Some(PathBuf::from("tcp.svg")), None, None, None));
    assert_eq!((d.trace.filter.ports.clone(), d.trace.duration), (vec![443], Some(Duration::from_secs(30))));
    let Task::Diagram(d) = task(&["diagram", "--from", "t.ptr", "--conn", "7", "-f", "text"]).unwrap() else {
        panic!("not a diagram");
    };
    assert_eq!((d.from, d.conn, d.format), (Some(PathBuf::from("t.ptr")), Some(7), Some(crate::diagram::DiagramFormat::Text)));
    for (args, expected) in [
        (&["diagram", "--conn", "7"][..], "--from <FILE>"),
        (&["diagram", "--from", "t.ptr", "--duration", "5s"], "cannot be used with"),
        (&["diagram", "-f", "png"], "invalid value 'png'"),
        (&["diagram", "--from", "t.ptr", "--conn", "x"], "invalid value 'x'"),
    ] {
        let err = task(args).expect_err(&format!("{args:?} should be refused"));
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

#[test]
fn top_takes_filters_and_a_recording() {
    let Task::Top(t) = task(&["top", "--port", "443", "--ring-size", "64K"]).unwrap() else {
        panic!("not top");
    };
    assert_eq!((t.from, t.ring_size, t.salvage), (None, 65536, false));
    assert_eq!(t.filter.ports, vec![443]);
    let Task::Top(t) = task(&["top", "--from", "t.ptr", "--salvage", "-s", "LISTEN"]).unwrap() else {
        panic!("not top");
    };
    assert_eq!((t.from, t.salvage), (Some(PathBuf::from("t.ptr")), true));
    assert_eq!(t.filter.states, vec![TcpState::Listen]);
    for (args, expected) in [
        (&["top", "--salvage"][..], "--from"),
        (&["top", "--from", "t.ptr", "--ring-size", "64K"][..], "cannot be used with"),
        (&["top", "--format", "json"][..], "unexpected argument '--format'"),
    ] {
        let err = task(args).expect_err(&format!("{args:?} should be refused"));
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

#[test]
fn a_command_after_the_double_dash_is_traced_alone() {
    let c = parse(&["--port", "80", "-f", "json", "--", "sh", "-c", "curl -s x --port 1", "--as-root"]).unwrap();
    let spec = c.command.expect("a command");
    let argv: Vec<&str> = spec.argv.iter().map(|a| a.to_str().unwrap()).collect();
    assert_eq!(argv, ["sh", "-c", "curl -s x --port 1", "--as-root"], "everything after -- is the command's");
    assert!(!spec.as_root);
    assert_eq!(c.filter.ports, vec![80]);
    assert_eq!(c.format, OutputFormat::Json);
    let c = parse(&["--as-root", "--", "id"]).unwrap();
    assert!(c.command.unwrap().as_root);
    assert_eq!(parse(&[]).unwrap().command, None);
    let Task::Record(r) = task(&["record", "-o", "t.ptr", "--count", "3", "--", "make", "test"]).unwrap() else {
        panic!("not a recording");
    };
    assert_eq!(r.trace.command.unwrap().argv, vec![OsString::from("make"), OsString::from("test")]);
    assert_eq!(r.trace.count, Some(3));
}

#[test]
fn command_flags_are_refused_where_they_make_no_sense() {
    let cases: &[(&[&str], &str)] = &[
        (&["--as-root"], "--as-root"),
        (&["--snapshot", "--", "true"], "cannot be used with"),
        (&["sh", "-c", "true"], "unexpected argument 'sh'"),
        (&["replay", "t.ptr", "--", "true"], "unexpected argument"),
        (&["report", "t.ptr", "--", "true"], "unexpected argument"),
    ];
    for (args, expected) in cases {
        let err = task(args).expect_err(&format!("{args:?} should be refused"));
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

#[test]
fn alert_flags_override_the_rules_file() {
    let dir = std::env::temp_dir().join(format!("portrace-cli-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rules.toml");
    std::fs::write(&file, "expect = [\"sshd:22\"]\n[scan]\ntargets = 5\nfailures = 3\n").unwrap();
    let path = file.display().to_string();
    let c = parse(&[
        "--rules", &path, "--scan-targets", "7", "--expect", "nginx:*", "--close-wait-after", "2s",
        "--time-wait-count", "100", "--disable-alert", "new-listener", "--alerts-only", "--fail-on-alert",
    ])
    .unwrap();
    let r = &c.alerts.rules;
    assert_eq!((r.scan.targets, r.scan.failures), (7, 3));
    assert_eq!(r.expect, vec![Expect::parse("sshd:22").unwrap(), Expect::parse("nginx:*").unwrap()]);
    assert_eq!(r.close_wait.after_ns, 2_000_000_000);
    assert_eq!(r.time_wait.count, Some(100));
    assert_eq!(r.disabled, vec![AlertKind::NewListener]);
    assert!(c.alerts.enabled && c.alerts.only && c.alerts.fail);
    assert!(!parse(&["--no-alerts"]).unwrap().alerts.enabled);
    let Task::Report(r) = task(&["report", "t.ptr", "--alerts-only", "--handshake-failures", "2"]).unwrap() else {
        panic!("not a report");
    };
    assert!(r.alerts.only);
    assert_eq!(r.alerts.rules.handshake.failures, 2);
    let Task::Record(r) = task(&["record", "-o", "t.ptr", "--expect", "a:1"]).unwrap() else {
        panic!("not a recording");
    };
    assert_eq!(r.trace.alerts.rules.expect.len(), 1);

    std::fs::write(&file, "[scan]\ntargest = 5\n").unwrap();
    let err = parse(&["--rules", &path]).unwrap_err();
    assert!(err.contains("unknown field `targest`") && err.contains(&path), "{err}");
    // A rules file quoted in an error reaches the terminal escaped, its lines kept.
    std::fs::write(&file, "repeat = \"\x1b]0;pwn\x07\n").unwrap();
    let err = parse(&["--rules", &path]).unwrap_err();
    assert!(err.contains("\\x1b]0;pwn\\x07") && !err.contains('\x1b') && err.contains('\n'), "{err:?}");
    std::fs::remove_dir_all(&dir).unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--expect", "nginx"], "'nginx' is not NAME:PORT"),
        (&["--scan-failure-rate", "101"], "--scan-failure-rate"),
        (&["--close-wait-after", "soon"], "'soon' is not a duration"),
        (&["--disable-alert", "worms"], "unknown alert 'worms'"),
        (&["--rules", "/nonexistent.toml"], "cannot read rules file /nonexistent.toml"),
        (&["--no-alerts", "--fail-on-alert"], "cannot be used with"),
        (&["record", "-o", "t.ptr", "--alerts-only"], "unexpected argument '--alerts-only'"),
    ];
    for (args, expected) in cases {
        let err = task(args).expect_err(&format!("{args:?} should be refused"));
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

#[test]
fn explain_is_a_live_and_replay_flag() {
    assert!(parse(&["--explain"]).unwrap().explain);
    assert!(!parse(&[]).unwrap().explain);
    let Task::Replay(r) = task(&["replay", "t.ptr", "--explain"]).unwrap() else { panic!("not a replay") };
    assert!(r.explain);
}

/// Every help text, short and long, of every command fits 80 columns when the terminal
/// is that wide, and lists the exit statuses.
#[test]
fn help_fits_80_columns_and_lists_exit_statuses() {
    use clap::CommandFactory as _;
    let mut top = Args::command().term_width(80);
    top.build();
    let mut commands = vec![top.clone()];
    commands.extend(top.get_subcommands().filter(|c| !c.is_hide_set()).cloned());
    assert!(commands.len() >= 7);
    for mut command in commands {
        let name = command.get_name().to_owned();
        for help in [command.render_help().to_string(), command.render_long_help().to_string()] {
            for line in help.lines() {
                assert!(line.chars().count() <= 80, "{name}: a line of {} columns:\n{line}", line.chars().count());
            }
        }
    }
    let help = top.render_long_help().to_string();
    assert!(help.contains("Exit status:\n  0    success"), "{help}");
    for (code, _) in EXIT_STATUS {
        assert!(help.contains(&format!("\n  {code:<3}  ")), "exit status {code}:\n{help}");
    }
    assert!(!help.contains("generate"), "the packaging command is hidden:\n{help}");
}

#[test]
fn generate_writes_pages_or_completions_and_is_offline() {
    let task = |args: &[&str]| {
        let argv = std::iter::once("portrace").chain(args.iter().copied());
        Args::try_parse_task(argv, None).map_err(|e| e.to_string())
    };
    let t = task(&["generate", "man", "/tmp/x"]).unwrap();
    assert!(t.is_offline());
    assert_eq!(t, Task::Generate(crate::manual::Generate::Man { dir: PathBuf::from("/tmp/x") }));
    assert_eq!(
        task(&["generate", "complete", "zsh"]).unwrap(),
        Task::Generate(crate::manual::Generate::Completion { shell: clap_complete::Shell::Zsh })
    );
    assert!(task(&["generate", "complete", "tcsh"]).unwrap_err().contains("invalid value 'tcsh'"));
    // Everything else parses as before.
    assert_eq!(task(&["--port", "80"]).unwrap(), Args::try_parse_from(["portrace", "--port", "80"]).unwrap().into_task());
    assert!(task(&["--port", "80", "generate"]).unwrap_err().contains("unexpected argument 'generate'"));
}

#[test]
fn durations_take_units() {
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
    assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_duration("1h 15m"), Ok(Duration::from_secs(4500)));
    assert_eq!(parse_duration("2days"), Ok(Duration::from_secs(2 * 86400)));
    assert!(parse_duration("10x").is_err());
    assert!(parse_duration("1m30").is_err());
    assert!(parse_duration("2years").is_err(), "more than a year");
    assert!(parse_duration("0s").is_err());
    assert!(parse_duration("").is_err());
}

#[test]
fn ring_sizes_take_suffixes() {
    assert_eq!(parse_ring_size("4096"), Ok(4096));
    assert_eq!(parse_ring_size("4M"), Ok(4 << 20));
    assert_eq!(parse_ring_size("64KiB"), Ok(64 << 10));
    assert_eq!(parse_ring_size("64ki"), Ok(64 << 10));
    assert_eq!(parse_ring_size("8mb"), Ok(8 << 20));
    assert_eq!(parse_ring_size("1G"), Ok(1 << 30));
    assert!(parse_ring_size("2G").is_err());
    assert!(parse_ring_size("2048").is_err());
}

#[test]
fn comm_is_repeatable_and_takes_lists() {
    let c = parse(&["--comm", "nginx,sshd", "--comm", "curl"]).unwrap();
    assert_eq!(c.filter.comm.as_deref(), Some("nginx"));
    assert_eq!(c.filter.more_comms, ["sshd", "curl"]);
    let c = parse(&["--comm", "nginx"]).unwrap();
    assert_eq!((c.filter.comm.as_deref(), c.filter.more_comms.len()), (Some("nginx"), 0));
    // Each name is checked on its own.
    let err = parse(&["--comm", "nginx,a-name-of-16-bytes"]).unwrap_err();
    assert!(err.contains("'a-name-of-16-bytes' cannot be a command name"), "{err}");
    let err = parse(&["--comm", "nginx,"]).unwrap_err();
    assert!(err.contains("'' cannot be a command name"), "{err}");
    let Task::Replay(r) = task(&["replay", "t.ptr", "--comm", "a,b"]).unwrap() else { panic!("not a replay") };
    assert_eq!((r.filter.comm.as_deref(), &r.filter.more_comms[..]), (Some("a"), &["b".to_string()][..]));
}
