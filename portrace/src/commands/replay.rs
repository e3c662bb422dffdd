//! `portrace replay`: a recording's timeline printed through the same output sinks as the
//! live tracer, filtered again if asked; `--info` describes the recording instead. A
//! recording cut short is read up to the cut, with a warning on stderr saying where; then
//! the output has no end record, as a live run that did not stop normally has none, and
//! the exit status is still 0.

use std::fmt::Write as _;
use std::io::{self, BufRead, Write};
use std::path::PathBuf;

use anyhow::Context as _;

use super::alert_args::AlertArgs;
use super::filter_args::FilterArgs;
use super::output_args::{check_alerts_only, stdout_sink, ColorChoice, OutputFormat};
use crate::alerts::sink::{AlertHandle, AlertOptions};
use crate::alerts::PortRange;
use crate::clock::Rfc3339;
use crate::engine::replay::{self, ReplayError};
use crate::filter::FilterSpec;
use crate::pipeline::{self, Consumers, ToSink};
use crate::record::Timestamp;
use crate::tracefile::input::Input;
use crate::tracefile::{filter_flags, status::human_bytes, End, ReadOptions, Record, TraceReader};
use crate::transition_filter::TransitionFilter;

/// `portrace replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// A recording made with `portrace record` (`-`: standard input).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Output format.
    #[arg(short = 'f', long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,

    /// When to colour the text output.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,

    /// Describe the recording (host, kernel, times, filters, clock, tracepoint layout,
    /// losses) instead of printing its records.
    #[arg(long)]
    pub info: bool,

    /// Read a damaged recording up to the damage instead of refusing it.
    #[arg(long)]
    pub salvage: bool,

    /// Add each transition's cause in plain words, as live tracing does.
    #[arg(long)]
    pub explain: bool,

    #[command(flatten)]
    pub filter: FilterArgs,

    /// Show only the alerts (and lost-record lines, which say alerts may be missing).
    #[arg(long, help_heading = "Alerts")]
    pub alerts_only: bool,

    #[command(flatten)]
    pub alerts: AlertArgs,
}

/// `portrace replay`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayConfig {
    pub file: PathBuf,
    pub filter: FilterSpec,
    pub format: OutputFormat,
    pub color: ColorChoice,
    pub info: bool,
    pub salvage: bool,
    pub explain: bool,
    pub alerts: AlertOptions,
}

impl ReplayArgs {
    pub fn into_config(self) -> ReplayConfig {
        let r = self;
        ReplayConfig {
            file: r.file,
            filter: r.filter.into_spec(),
            format: r.format,
            color: r.color,
            info: r.info,
            salvage: r.salvage,
            explain: r.explain,
            alerts: r.alerts.into_options(r.alerts_only),
        }
    }
}

/// Opens the recording `path` names (`-`: standard input, read as it comes).
pub(super) fn open(path: &std::path::Path, salvage: bool) -> anyhow::Result<TraceReader<io::BufReader<std::fs::File>>> {
    Ok(Input::once(path)?.open(ReadOptions { salvage })?)
}

/// `portrace replay`.
pub fn execute(config: ReplayConfig) -> anyhow::Result<()> {
    let mut reader = open(&config.file, config.salvage)?;
    if config.info {
        return info(&mut reader);
    }
    check_alerts_only(config.format, config.alerts.only)?;
    let mut sink = stdout_sink(config.format, config.color, config.explain);
    let alerts = config.alerts.enabled.then(|| AlertHandle::new(config.alerts.rules.clone(), PortRange::kernel_default()));
    let mut filter = TransitionFilter::new(config.filter);
    let consumers = Consumers {
        alerts: alerts.as_ref(),
        output: Some(ToSink::new(sink.as_mut(), config.alerts.output_only())),
        ..Consumers::default()
    };
    let mut pipeline = replay::pipeline_for(&reader, consumers);
    let driven = match replay::drive(&mut reader, &mut filter, &mut pipeline) {
        Ok(driven) => driven,
        Err(ReplayError::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if driven.end.is_none() {
        // A recording cut short: what the detectors hold is judged at the cut.
        match pipeline.tick(driven.last).and_then(|()| pipeline.flush()) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            other => other.context("writing output")?,
        }
    }
    let replayed = replay::replayed(&reader, pipeline, driven.end);
    let mut stderr = io::stderr().lock();
    replayed.summary.write_text(&mut stderr)?;
    reader.header().features.write_summary(&mut stderr)?;
    if let Some(handle) = &alerts {
        handle.lock().write_summary(&mut stderr)?;
    }
    replayed.print_warnings();
    pipeline::fail_on_alert(config.alerts.fail, alerts.as_ref())
}

/// `portrace replay --info`: what the recording says about itself, and its totals.
fn info<R: BufRead>(reader: &mut TraceReader<R>) -> anyhow::Result<()> {
    let h = reader.header().clone();
    let (mut sockets, mut transitions, mut lost_records) = (0u64, 0u64, 0u64);
    let (mut processes, mut namespaces) = (0u64, 0u64);
    let mut lost = End::NO_LOSS;
    let mut end = None;
    let mut last = h.start;
    while let Some(record) = reader.next_record()? {
        match record {
            Record::Socket(s) => {
                sockets += 1;
                last = last.max(s.time);
            }
            Record::Transition(t) => {
                transitions += 1;
                last = last.max(t.time);
            }
            Record::Process(p) => {
                processes += 1;
                last = last.max(p.time);
            }
            Record::Netns(n) => {
                namespaces += 1;
                last = last.max(n.time);
            }
            Record::Cgroup(g) => last = last.max(g.time),
            Record::Lost(l) => {
                lost_records += 1;
                last = last.max(l.time);
                for slot in &mut lost {
                    if slot.0 == l.cause {
                        slot.1 = slot.1.saturating_add(l.count);
                    }
                }
            }
            Record::End(e) => end = Some(e),
        }
    }
    let mut text = String::new();
    // Everything the header says was written by whoever wrote the file.
    let esc = |s: &str| crate::escape::text(s).into_owned();
    let time = |t: Timestamp| format!("{} (CLOCK_MONOTONIC {} ns)", Rfc3339::new(t.unix_ns), t.mono_ns);
    let _ = writeln!(text, "file:         {} ({}, format version {})", esc(reader.name()), human_bytes(reader.bytes_read()), h.version);
    let _ = writeln!(text, "recorded by:  portrace {}", esc(&h.portrace));
    let _ = writeln!(text, "host:         {}", esc(&h.host));
    let _ = writeln!(text, "kernel:       {}", esc(&h.kernel));
    let _ = writeln!(text, "started:      {}", time(h.start));
    match (&end, reader.warning()) {
        (Some(e), _) => {
            let secs = e.time.mono_ns.saturating_sub(h.start.mono_ns) as f64 / 1e9;
            let _ = writeln!(text, "ended:        {} ({secs:.2} s later)", time(e.time));
        }
        (None, Some(w)) => {
            let _ = writeln!(text, "ended:        not recorded: cut at byte {}; last record at {}", w.offset, time(last));
        }
        (None, None) => {
            let _ = writeln!(text, "ended:        not recorded");
        }
    }
    let flags = filter_flags(&h.filter);
    let _ = writeln!(text, "filter:       {}", if flags.is_empty() { "none (every transition)".into() } else { esc(&flags) });
    let _ = writeln!(text, "ring buffer:  {}", human_bytes(u64::from(h.ring_size)));
    let _ = writeln!(text, "compression:  {}", if h.compressed { "LZ4 blocks" } else { "none" });
    let _ = writeln!(text, "clock:        wall clock = CLOCK_MONOTONIC + {} ns", h.clock_offset_ns);
    let l = h.layout;
    let _ = writeln!(
        text,
        "tracepoint:   sock:inet_sock_set_state offsets: skaddr {}, oldstate {}, newstate {}, sport {}, \
         dport {}, family {}, protocol {} ({} bytes), saddr {}, daddr {}, saddr_v6 {}, daddr_v6 {}",
        l.skaddr, l.oldstate, l.newstate, l.sport, l.dport, l.family, l.protocol, l.protocol_size, l.saddr,
        l.daddr, l.saddr_v6, l.daddr_v6
    );
    match h.sock_layout {
        Some(s) if s.valid != 0 => {
            let _ = writeln!(text, "socket BTF:   offsets read (cookie {}, network namespace {}, sk_err {})", s.cookie, s.net, s.err);
        }
        _ => {
            let _ = writeln!(text, "socket BTF:   not available: owners, timewait and close details were not read");
        }
    }
    for (feature, state) in h.features.iter() {
        let how = match (state.on, &state.reason) {
            (true, None) => "on".to_owned(),
            (true, Some(what)) => format!("on, limited: {}", esc(what)),
            (false, why) => format!("off: {}", esc(why.as_deref().unwrap_or(""))),
        };
        let _ = writeln!(text, "feature:      {} {how}", feature.name());
    }
    // A recording made before features were written says what did not work in notes.
    if h.features.is_empty() {
        for note in &h.notes {
            let _ = writeln!(text, "note:         {}", esc(note));
        }
    }
    if let Some(args) = &h.command {
        let _ = writeln!(text, "command:      {} (only its sockets were traced)", esc(&crate::command::shell_words(args)));
    }
    let total_lost: u64 = lost.iter().map(|&(_, n)| n).sum();
    let _ = write!(
        text,
        "records:      {sockets} sockets at start, {transitions} transitions, {total_lost} transitions lost"
    );
    if total_lost > 0 {
        let causes: Vec<String> =
            lost.iter().filter(|&&(_, n)| n > 0).map(|&(c, n)| format!("{n} {}", c.name())).collect();
        let _ = write!(text, " ({}, in {lost_records} lost records)", causes.join(", "));
    }
    text.push('\n');
    let _ = writeln!(text, "details:      {processes} processes, {namespaces} network namespaces");
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        other => other.context("writing output")?,
    }
    replay::print_warning(reader.warning());
    Ok(())
}
