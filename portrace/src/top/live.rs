//! `portrace top` on the live host: the live run ([`crate::engine::trace`]) with an [`Output`] whose
//! sink sends every record to the UI thread over a channel. The screen is taken only when
//! the kernel programs are attached (so errors before that print as usual), and given
//! back before an error after it is printed. Quitting the UI sets a flag the sink reports
//! as a broken pipe on the event loop's next flush (every drain, 10 to 80 ms apart): the
//! run then ends quietly, exactly as when `portrace | head` stops reading.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::clock::{Clock, Zone};
use crate::output::{Sink, Start};
use crate::preflight;
use crate::record::{Lost, SocketRecord, Timestamp, Transition};
use crate::destination::{Output, RunSetup};
use crate::engine::{self, TraceOptions};
use crate::summary::Summary;

use super::app::{self, Ended, Msg, Source};
use super::TopConfig;
use super::model::{Action, Top};
use super::terminal::Screen;

/// `portrace top` without `--from`.
pub fn live(config: TopConfig) -> anyhow::Result<()> {
    preflight::check_privileges()?;
    let trace = TraceOptions {
        alerts: crate::alerts::sink::AlertOptions { enabled: false, ..Default::default() },
        ..TraceOptions::new(config.filter, config.ring_size)
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    let mut out = ToScreen { ui: None, quit: Arc::new(AtomicBool::new(false)), tx: None };
    let traced = runtime.block_on(engine::trace(&trace, &mut out));
    // The sink is gone with the trace, which told the UI; wait for the screen to be back.
    let shown = match out.ui.take() {
        Some(ui) => ui.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the display thread panicked"))),
        None => Ok(Ended::Quit),
    };
    match (traced, shown) {
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e),
        (Ok(_), Ok(_)) => Ok(()),
    }
}

/// The live run's output: the screen.
struct ToScreen {
    ui: Option<JoinHandle<anyhow::Result<Ended>>>,
    /// Set when the UI is done: the sink then refuses records.
    quit: Arc<AtomicBool>,
    /// To tell the UI that tracing is under way.
    tx: Option<Sender<Msg>>,
}

impl Output for ToScreen {
    fn open(&mut self, setup: RunSetup) -> anyhow::Result<Box<dyn Sink + Send>> {
        let (tx, rx) = mpsc::channel();
        let lines = tx.clone();
        let mut screen = Screen::enter(move |line| {
            let _ = lines.send(Msg::Stderr(line));
        })?;
        let clock = Clock::from_offset(setup.clock_offset_ns);
        let quit = Arc::clone(&self.quit);
        let input_tx = tx.clone();
        let ui = std::thread::Builder::new()
            .name("display".into())
            .spawn(move || {
                let stop = Arc::new(AtomicBool::new(false));
                let input = app::spawn_input(input_tx, Arc::clone(&stop));
                let result = input.and_then(|input| {
                    let mut top = Top::new("starting: listing the sockets that exist");
                    let ended = app::run(&mut screen, &mut top, &rx, &mut LiveClock(clock), Zone::Local);
                    stop.store(true, Ordering::Relaxed);
                    let _ = input.join();
                    ended
                });
                quit.store(true, Ordering::SeqCst);
                // Gives the terminal back (and prints what went to stderr meanwhile).
                drop(screen);
                result
            })
            .map_err(|e| anyhow::anyhow!("cannot start the display thread: {e}"))?;
        self.ui = Some(ui);
        self.tx = Some(tx.clone());
        Ok(Box::new(ChannelSink { tx, quit: Arc::clone(&self.quit) }))
    }

    fn name(&self) -> String {
        "the screen".into()
    }

    fn banner(&self) -> String {
        String::new()
    }

    fn tracing(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Msg::Tracing);
        }
    }
}

/// The live clock, for the model's time.
struct LiveClock(Clock);

impl Source for LiveClock {
    fn now(&mut self) -> Option<Timestamp> {
        Some(self.0.now())
    }

    fn act(&mut self, _top: &mut Top, _action: Action) {}

    fn advance(&mut self, _top: &mut Top) -> Option<Duration> {
        None
    }
}

/// Sends records to the UI; once the UI is done, every call fails as a broken pipe.
struct ChannelSink {
    tx: Sender<Msg>,
    quit: Arc<AtomicBool>,
}

impl ChannelSink {
    fn send(&self, msg: Msg) -> io::Result<()> {
        if self.quit.load(Ordering::Relaxed) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        self.tx.send(msg).map_err(|_| io::ErrorKind::BrokenPipe.into())
    }
}

impl Sink for ChannelSink {
    fn start(&mut self, start: &Start) -> io::Result<()> {
        self.send(Msg::Start(start.clone()))
    }

    fn socket(&mut self, s: &SocketRecord) -> io::Result<()> {
        self.send(Msg::Socket(s.clone()))
    }

    fn transition(&mut self, t: &Transition) -> io::Result<()> {
        self.send(Msg::Transition(t.clone()))
    }

    fn lost(&mut self, lost: &Lost) -> io::Result<()> {
        self.send(Msg::Lost(*lost))
    }

    fn cgroup(&mut self, g: &crate::record::CgroupInfo) -> io::Result<()> {
        self.send(Msg::Cgroup(g.clone()))
    }

    fn end(&mut self, _summary: &Summary) -> io::Result<()> {
        self.send(Msg::End)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.quit.load(Ordering::Relaxed) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        Ok(())
    }
}

impl Drop for ChannelSink {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::TraceOver);
    }
}
