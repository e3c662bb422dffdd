//! A live run from start to end: the probes are attached (`probes`), the output
//! opened, the sockets that existed before the trace written, then the session drains the
//! kernel's records into the pipeline until the run ends; the summary, the run's own
//! notes ([`crate::summary::Ending`]), the command's sockets still open, the alerts and the
//! `--summary` report close it on stderr. With a command (`portrace -- CMD`), the run
//! starts it once the programs are attached, ends when it exits, and returns its exit
//! status (see [`crate::command`]).

use std::io::{self, IsTerminal as _, Write as _};
use std::time::Instant;

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};

use crate::summary::Ending;
use super::inventory as older;
use super::probes::{self, Probes};
use super::session::{Session, Stop, Stops};
use super::TraceOptions;
use crate::alerts::section::AlertSection;
use crate::alerts::sink::AlertHandle;
use crate::alerts::PortRange;
use crate::clock::Clock;
use crate::command::{self, CommandSpec, CommandStdout, Identity, Running};
use crate::details::Details;
use crate::loss_ledger::LossLedger;
use crate::output::Start;
use crate::pipeline::{self, Consumers, Pipeline};
use crate::record::{LossCause, SocketRecord};
use crate::report::{Report, ReportOptions};
use crate::startup::Startup;
use crate::still_open::StillOpen;
use crate::timeline::Timeline;
use crate::destination::{Output, RunSetup};

/// Sockets the tracker remembers at most (about 100 bytes each).
const MAX_TRACKED_SOCKETS: usize = 4_000_000;

/// What running a command needs, checked before anything is loaded.
struct CommandPlan<'a> {
    spec: &'a CommandSpec,
    identity: Option<Identity>,
}

fn plan_command(spec: &CommandSpec) -> anyhow::Result<CommandPlan<'_>> {
    command::check_pid_namespace().map_err(anyhow::Error::msg)?;
    let not_run = |reason: String| command::NotRun { name: spec.name(), reason };
    command::resolve(&spec.argv[0], std::env::var_os("PATH").as_deref()).map_err(not_run)?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let run_as = command::choose_user(euid, &command::Invocation::current(), spec.as_root, command::user_by_name)
        .map_err(anyhow::Error::msg)?;
    let name = crate::escape::text(&spec.name()).into_owned();
    let identity = match run_as {
        command::RunAs::Own => None,
        command::RunAs::User { uid, gid, via } => {
            let id = command::identity(uid, gid);
            if io::stderr().is_terminal() {
                let user = id.user.as_ref().map_or_else(|| format!("uid {uid}"), |(n, _)| n.to_string_lossy().into_owned());
                eprintln!("portrace: running {name} as {user} (who asked for root, from {via}); --as-root runs it as root");
            }
            Some(id)
        }
        command::RunAs::Root(why) => {
            // Said whether or not stderr is a terminal: it matters most in logs.
            eprintln!("portrace: running {name} as root ({why})");
            None
        }
    };
    Ok(CommandPlan { spec, identity })
}

/// Traces until the run ends, into `out`; with a command, waits for it and returns its
/// exit status.
pub async fn trace(options: &TraceOptions, out: &mut dyn Output) -> anyhow::Result<u8> {
    let plan = options.command.as_ref().map(plan_command).transpose()?;
    let mut running = None;
    let traced = trace_until_stopped(options, out, plan, &mut running).await;
    let Some(mut running) = running else { return traced.map(|()| 0) };
    if running.status().is_none() {
        eprintln!("portrace: the trace has ended; waiting for the command (pid {}) to exit", running.pid());
        wait_forwarding(&mut running).await;
    }
    let status = running.status().expect("the command has exited");
    let code = command::exit_code(status);
    if code != 0 || traced.is_err() {
        eprintln!("portrace: the command {}", command::describe(status));
    }
    traced.map(|()| code)
}

/// Waits for the command to exit, passing SIGTERM and SIGHUP on to it.
async fn wait_forwarding(running: &mut Running) {
    let (Ok(mut sigterm), Ok(mut sighup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
        running.exited().await;
        return;
    };
    loop {
        tokio::select! {
            _ = running.exited() => return,
            _ = sigterm.recv() => running.signal(libc::SIGTERM),
            _ = sighup.recv() => running.signal(libc::SIGHUP),
        }
    }
}

async fn trace_until_stopped(
    options: &TraceOptions,
    out: &mut dyn Output,
    plan: Option<CommandPlan<'_>>,
    running: &mut Option<Running>,
) -> anyhow::Result<()> {
    let mut startup = Startup::new();
    let mut stops = Stops::install()?;
    let Probes { mut tracer, mut ring, hits, kernel, layout, sock_layout, filter } =
        probes::attach(&options.filter, options.ring_size, plan.is_some(), &mut startup)?;

    let clock = Clock::capture();
    let start = clock.now();
    let mut sink = out.open(RunSetup {
        clock_offset_ns: clock.offset_ns(),
        layout,
        sock_layout,
        filter: options.filter.clone(),
        ring_size: options.ring_size,
        command: options.command.as_ref().map(|c| c.argv.iter().map(|a| a.to_string_lossy().into_owned()).collect()),
    })?;
    let alerts = options.alerts.enabled.then(|| AlertHandle::new(options.alerts.rules.clone(), PortRange::of_this_host()));
    let mut report = options.summary.then(|| Report::new(ReportOptions::default()));
    let mut still_open = plan.as_ref().map(|_| StillOpen::new());
    // The session, and the pipeline in it, end here: the consumers it borrowed are read
    // below.
    let (summary, ending, features, failure, output_name, end) = {
        let consumers = Consumers {
            report: report.as_mut(),
            still_open: still_open.as_mut(),
            alerts: alerts.as_ref(),
            output: Some(pipeline::ToSink::new(sink.as_mut(), options.alerts.output_only())),
        };
        let mut pipeline = Pipeline::new(start, Details::live(), consumers);
        // The programs are attached: tracing has started, and says so at once. Sockets that
        // change state from now on are seen; those that existed before are learned next, and
        // their owners handed to the kernel program.
        let host = older::hostname();
        let started = pipeline
            .start(&Start { time: start, host, kernel: kernel.to_string(), features: tracer.features.clone() })
            .and_then(|()| pipeline.flush());
        let mut timeline = Timeline::new(clock, MAX_TRACKED_SOCKETS, start.mono_ns, tracer.timewait_tracked);
        // A traced command owns no socket older than the trace: no inventory is needed.
        let mut sockets = if plan.is_none() { older::take(start) } else { Vec::new() };
        let cgroup_paths = older::adopt_cgroups(&mut sockets);
        older::adopt(&mut sockets, &filter, &cgroup_paths, &mut timeline, &mut tracer);
        let progress = out.shows_progress().then(Instant::now);
        let mut session = Session {
            tracer,
            clock,
            pipeline,
            timeline,
            count: options.count,
            comms: (!options.filter.comm_in_kernel()).then(|| options.filter.clone()),
            ledger: LossLedger::default(),
            ring_size: options.ring_size,
            gap_check: plan.is_none() && options.filter.keeps_whole_sockets(),
            end_check: None,
            hits,
            batch: Vec::new(),
            failure: None,
            out,
            progress,
            command: None,
            checked_at: None,
            drained: 0,
        };
        // Transitions made while the inventory was taken, held back until the inventory is
        // written: a socket both show is shown by its transitions alone.
        let mut early = Vec::new();
        let (early_read, malformed) = session.take_early(ring.get_mut(), &mut early);
        let twins = session.timeline.born_during_inventory(&sockets, &early);
        let opened = started.and_then(|()| {
            let kept = |s: &&SocketRecord| {
                options.filter.matches_socket(s) && older::in_cgroup(&filter, &cgroup_paths, s) && !twins.contains(&s.socket)
            };
            for s in sockets.iter().filter(kept) {
                session.pipeline.socket(s)?;
            }
            if early_read.records > 0 {
                session.pipeline.ring_read(&early_read)?;
            }
            if malformed > 0 {
                session.report_lost(malformed, LossCause::Malformed)?;
            }
            session.batch = early;
            if session.write_batch()?.is_some() {
                return Ok(Some(Stop::Count));
            }
            session.pipeline.flush().map(|()| None)
        });
        startup.mark("inventory and first output");
        crate::heap::give_back_free_pages();
        if options.verbose {
            eprintln!("portrace: {}", startup.describe());
        }
        let stop = match session.sink_result(opened) {
            Some(stop) => stop,
            // Stopped while the run was starting (Ctrl-C during the inventory): the command is
            // not started at all.
            None if plan.is_some() && stops.arrived().await => {
                eprintln!("portrace: stopped by a signal before the command was started");
                Stop::Signal
            }
            None => {
                if let Some(plan) = &plan {
                    // The programs are attached: start the command, traced from its first step.
                    let stdout = if session.out.uses_stdout() { CommandStdout::Stderr } else { CommandStdout::Inherit };
                    let held = command::spawn_held(plan.spec, plan.identity.clone(), stdout)?;
                    session.tracer.follow(held.pid())?;
                    session.command = Some(held.release()?);
                } else if io::stderr().is_terminal() && !session.out.banner().is_empty() {
                    eprintln!("{}", session.out.banner());
                }
                session.out.tracing();
                let stop = session.event_loop(ring, options.duration, &mut stops).await;
                *running = session.command.take();
                stop?
            }
        };
        session.out.stopped();
        if stop == Stop::BrokenPipe {
            return Ok(());
        }
        let end = session.clock.now();
        let ended = match stop {
            Stop::WriteFailed => session.pipeline.finish(end).map(|()| None),
            _ => session.pipeline.end(end).and_then(|()| session.pipeline.flush()).map(|()| None),
        };
        if session.sink_result(ended) == Some(Stop::BrokenPipe) {
            return Ok(());
        }
        let Session { tracer, timeline, ledger, end_check, failure, out, pipeline, .. } = session;
        let (summary, _) = pipeline.into_parts();
        let output_name = out.name();
        let ending = Ending {
            timer_misses: tracer.timer_misses(),
            end_check,
            duplicates: timeline.duplicates(),
            counters: ledger.seen(),
            unfollowed: tracer.newtask_misses(),
        };
        (summary, ending, tracer.features, failure, output_name, end)
    };
    let mut stderr = io::stderr().lock();
    summary.write_text(&mut stderr)?;
    features.write_summary(&mut stderr)?;
    ending.write_text(&mut stderr)?;
    if let Some(open) = &still_open {
        open.write_text(&mut stderr, end, summary.lost_total())?;
    }
    if let Some(handle) = &alerts {
        handle.lock().write_summary(&mut stderr)?;
    }
    if let Some(report) = &mut report {
        if let Some(handle) = &alerts {
            report.set_alerts(AlertSection::of(&handle.lock()));
        }
        writeln!(stderr)?;
        report.write_text(&mut stderr)?;
    }
    stderr.flush()?;
    match failure {
        Some(e) => Err(e).context(format!("writing {output_name}")),
        None => pipeline::fail_on_alert(options.alerts.fail, alerts.as_ref()),
    }
}
