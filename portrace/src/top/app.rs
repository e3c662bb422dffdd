//! The loop of `portrace top`: one channel brings everything that can change the screen
//! (records from the live trace, keys and resizes from the input thread, lines written to
//! standard error), the model takes them, and the screen is redrawn when something
//! changed, at most [`FRAME`] apart, and once a second for the clocks. Where the time and
//! the browsing actions come from is a [`Source`]: the live clock, or a recording's cursor.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event};
use ratatui::layout::Rect;

use crate::clock::Zone;
use crate::output::Start;
use crate::record::{Lost, SocketRecord, Timestamp, Transition};

use super::input::{self, Mode};
use super::model::{Action, Top};
use super::render;
use super::terminal::Screen;

/// The shortest time between two frames: at most some 15 redraws a second.
pub const FRAME: Duration = Duration::from_millis(66);
/// Redraw at least this often, for the clocks.
const CLOCK: Duration = Duration::from_secs(1);
/// How often the input thread looks whether it should stop.
const INPUT_POLL: Duration = Duration::from_millis(100);

/// Something for the UI.
#[derive(Debug)]
pub enum Msg {
    Start(Start),
    Socket(SocketRecord),
    Transition(Transition),
    Lost(Lost),
    Cgroup(crate::record::CgroupInfo),
    End,
    /// The live run's inventory is done: tracing is under way.
    Tracing,
    /// A line written to standard error while the screen was ours.
    Stderr(String),
    Input(Event),
    /// The live trace is over: its sink is gone.
    TraceOver,
}

/// Where time and the browsing actions come from.
pub trait Source {
    /// The time the model shows.
    fn now(&mut self) -> Option<Timestamp>;
    /// An action the model left to the source (moving through a recording).
    fn act(&mut self, top: &mut Top, action: Action);
    /// Moves on by itself (a recording playing); returns how soon it wants to move again.
    fn advance(&mut self, top: &mut Top) -> Option<Duration>;
}

/// Why the loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The user quit.
    Quit,
    /// The trace ended by itself (an error, a signal).
    TraceOver,
}

/// Set by the SIGTERM handler [`quit_on_sigterm`] installs.
static TERMINATED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigterm(_: libc::c_int) {
    TERMINATED.store(true, Ordering::Relaxed);
}

/// Makes SIGTERM end the loop (within a second) like the quit key, so the terminal is
/// restored. For browsing: the live run has the trace's own handler.
pub fn quit_on_sigterm() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_sigterm as *const () as libc::sighandler_t);
    }
}

/// Applies a record or an event to the model; says whether the loop should end.
fn handle(msg: Msg, top: &mut Top, source: &mut dyn Source) -> Option<Ended> {
    match msg {
        Msg::Start(s) => top.table_mut().start(&s),
        Msg::Socket(s) => top.table_mut().socket(&s),
        Msg::Transition(t) => top.transition(&t),
        Msg::Lost(l) => top.table_mut().lost(&l),
        Msg::Cgroup(g) => top.table_mut().cgroup(&g),
        Msg::End => top.table_mut().end(),
        Msg::Tracing => top.source = "live".into(),
        Msg::Stderr(line) => top.message = Some(line),
        Msg::Input(Event::Key(key)) => {
            let mode = Mode { editing_filter: top.editing_filter, overlay: top.overlay, browsing: top.cursor.is_some() };
            if let Some(action) = input::action(key, mode) {
                if !top.apply(action) {
                    source.act(top, action);
                }
            }
            if top.quit_requested() {
                return Some(Ended::Quit);
            }
        }
        Msg::Input(_) => {}
        Msg::TraceOver => return Some(Ended::TraceOver),
    }
    None
}

/// Runs the UI until the user quits or the trace is over.
pub fn run(
    screen: &mut Screen,
    top: &mut Top,
    rx: &Receiver<Msg>,
    source: &mut dyn Source,
    zone: Zone,
) -> anyhow::Result<Ended> {
    let mut dirty = true;
    let mut last_draw: Option<Instant> = None;
    let color = crate::color::allowed();
    loop {
        if TERMINATED.load(Ordering::Relaxed) {
            return Ok(Ended::Quit);
        }
        let wanted = source.advance(top);
        if wanted.is_some() {
            dirty = true;
        }
        let now = Instant::now();
        let frame_due = last_draw.map_or(now, |t| t + FRAME);
        let clock_due = last_draw.map_or(now, |t| t + CLOCK);
        if (dirty && now >= frame_due) || now >= clock_due {
            if let Some(time) = source.now() {
                top.tick(time);
            }
            let size = screen.terminal.size()?;
            top.page = render::page_rows(Rect::new(0, 0, size.width, size.height));
            screen.terminal.draw(|f| {
                render::draw(f, top, zone);
                if !color {
                    render::without_colors(f.buffer_mut());
                }
            })?;
            dirty = false;
            last_draw = Some(now);
        }
        let now = Instant::now();
        let mut wait = last_draw.map_or(Duration::ZERO, |t| (t + CLOCK).saturating_duration_since(now));
        if dirty {
            wait = wait.min(frame_due.saturating_duration_since(now));
        }
        if let Some(w) = wanted {
            wait = wait.min(w);
        }
        let first = match rx.recv_timeout(wait) {
            Ok(msg) => msg,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return Ok(Ended::TraceOver),
        };
        dirty = true;
        if let Some(ended) = handle(first, top, source) {
            return Ok(ended);
        }
        // Take what else is waiting, so a burst costs one frame; bounded, so keys are
        // still read under a flood of records.
        for msg in rx.try_iter().take(100_000) {
            if let Some(ended) = handle(msg, top, source) {
                return Ok(ended);
            }
        }
    }
}

/// Reads keys and resizes into `tx` until `stop` is set or the terminal is gone.
pub fn spawn_input(tx: Sender<Msg>, stop: Arc<AtomicBool>) -> anyhow::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("input".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match event::poll(INPUT_POLL) {
                    Ok(true) => match event::read() {
                        Ok(ev) => {
                            if tx.send(Msg::Input(ev)).is_err() {
                                break;
                            }
                        }
                        Err(_) => break,
                    },
                    Ok(false) => {}
                    Err(_) => break,
                }
            }
        })
        .map_err(|e| anyhow::anyhow!("cannot start the input thread: {e}"))
}
