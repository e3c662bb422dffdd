//! `portrace top --from FILE`: a recording on the same screen, at a moment the user moves
//! through: one transition at a time, ten seconds at a time, to either end, or played at
//! a chosen speed. The recording is read once (with the tracefile reader, the user's
//! filters applied again as in `portrace replay`); the table at a moment is the recording's
//! records applied up to it, rebuilt from the start when the user goes back. It holds at
//! most [`RECORDS_MAX`] records (those the filters keep), so its memory is bounded, and
//! every move, a rebuild included, applies at most that many; a longer recording is shown
//! up to there, and the screen says so.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::clock::{Clock, Zone};
use crate::filter::FilterSpec;
use crate::output::Start;
use crate::record::Timestamp;
use crate::replay::TransitionFilter;
use crate::tracefile::{ReadOptions, Record, TraceReader};

use super::app::{self, Msg, Source};
use super::model::{Action, Cursor, Table, Top};
use super::terminal::Screen;

/// How far `[` and `]` move.
const JUMP_NS: u64 = 10_000_000_000;
/// The most records held: the first ones the filters keep, a few hundred MB at most.
pub const RECORDS_MAX: usize = 1_000_000;

/// The fastest play speed, times real time.
const MAX_SPEED: u32 = 1024;

/// `portrace top --from FILE`.
pub fn browse(path: &Path, filter: FilterSpec, salvage: bool) -> anyhow::Result<()> {
    let mut browser = Browser::load(path, filter, salvage)?;
    let (tx, rx) = mpsc::channel();
    let lines = tx.clone();
    let mut screen = Screen::enter(move |line| {
        let _ = lines.send(Msg::Stderr(line));
    })?;
    app::quit_on_sigterm();
    let mut top = Top::new(path.display().to_string());
    if let Some(w) = &browser.warning {
        top.message = Some(w.clone());
    }
    browser.to_start(&mut top);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let input = app::spawn_input(tx, std::sync::Arc::clone(&stop))?;
    let result = app::run(&mut screen, &mut top, &rx, &mut browser, Zone::Local);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = input.join();
    drop(screen);
    result.map(|_| ())
}

/// A recording held in memory, and where in it the screen stands.
pub struct Browser {
    start: Start,
    clock: Clock,
    records: Vec<Record>,
    /// Records applied to the model's table.
    position: usize,
    /// The moment shown.
    at: Timestamp,
    last: Timestamp,
    /// Playing since this instant, from the moment `at` had then.
    playing: Option<(Instant, u64)>,
    speed: u32,
    /// Why the recording stopped early, if it did.
    pub warning: Option<String>,
}

fn record_time(r: &Record) -> Timestamp {
    match r {
        Record::Socket(s) => s.time,
        Record::Transition(t) => t.time,
        Record::Lost(l) => l.time,
        Record::Process(p) => p.time,
        Record::Netns(n) => n.time,
        Record::End(e) => e.time,
    }
}

fn apply(table: &mut Table, r: &Record) {
    match r {
        Record::Socket(s) => table.socket(s),
        Record::Transition(t) => table.transition(t),
        Record::Lost(l) => table.lost(l),
        Record::End(_) => table.end(),
        // The view names owners by pid and command, which the other records carry.
        Record::Process(_) | Record::Netns(_) => {}
    }
}

impl Browser {
    /// Reads the recording at `path`, keeping what `filter` lets through.
    pub fn load(path: &Path, filter: FilterSpec, salvage: bool) -> anyhow::Result<Browser> {
        let mut reader = TraceReader::open(path, ReadOptions { salvage })?;
        Browser::read(&mut reader, filter)
    }

    /// Reads every record of `reader`, keeping what `filter` lets through.
    pub fn read<R: std::io::BufRead>(reader: &mut TraceReader<R>, filter: FilterSpec) -> anyhow::Result<Browser> {
        Browser::read_at_most(reader, filter, RECORDS_MAX)
    }

    /// Reads the first `max` records of `reader` that `filter` lets through.
    pub fn read_at_most<R: std::io::BufRead>(
        reader: &mut TraceReader<R>,
        filter: FilterSpec,
        max: usize,
    ) -> anyhow::Result<Browser> {
        let header = reader.header().clone();
        let start = Start { time: header.start, host: header.host.clone(), kernel: header.kernel.clone(), features: header.features.clone() };
        let mut filter = TransitionFilter::new(filter);
        let mut records = Vec::new();
        let mut batch = Vec::new();
        let mut full = false;
        while let Some(record) = reader.next_record()? {
            if records.len() >= max {
                full = true;
                break;
            }
            match record {
                Record::Socket(s) if !filter.spec().matches_socket(&s) => {}
                Record::Process(_) | Record::Netns(_) => {}
                Record::Transition(t) => {
                    filter.offer(t, &mut batch);
                    records.extend(batch.drain(..).map(Record::Transition));
                }
                other => records.push(other),
            }
        }
        records.truncate(max);
        let last = records.iter().map(record_time).max().unwrap_or(start.time).max(start.time);
        let warning = if full {
            Some(format!(
                "showing the recording up to {}: `top --from` holds the first {max} records the \
                 filters keep; narrow them (--port, --pid, --state) to see further, or read it \
                 all with `portrace report` or `portrace replay`",
                crate::clock::Rfc3339::new(last.unix_ns)
            ))
        } else {
            reader.warning().map(|w| format!("recording cut short: {w}"))
        };
        Ok(Browser {
            clock: Clock::from_offset(header.clock_offset_ns),
            at: start.time,
            start,
            records,
            position: 0,
            last,
            playing: None,
            speed: 1,
            warning,
        })
    }

    /// The records held.
    pub fn total(&self) -> usize {
        self.records.len()
    }

    fn cursor(&self) -> Cursor {
        Cursor {
            position: self.position,
            total: self.records.len(),
            first: self.start.time,
            last: self.last,
            playing: self.playing.is_some(),
            speed: self.speed,
        }
    }

    fn publish(&self, top: &mut Top) {
        top.cursor = Some(self.cursor());
        top.tick(self.at);
    }

    /// Rebuilds the table from the start with the first `upto` records.
    fn rebuild(&mut self, top: &mut Top, upto: usize) {
        let mut table = Table::new();
        table.start(&self.start);
        for r in &self.records[..upto] {
            apply(&mut table, r);
        }
        top.set_table(table);
        self.position = upto;
    }

    /// Applies records up to (and including) those at `target`.
    fn forward_to(&mut self, top: &mut Top, target: u64) {
        while let Some(r) = self.records.get(self.position) {
            if record_time(r).mono_ns > target {
                break;
            }
            apply(top.table_mut(), r);
            self.position += 1;
        }
        self.at = self.clock.timestamp(target.max(self.start.time.mono_ns));
    }

    /// Shows the moment `target` (monotonic nanoseconds).
    fn seek(&mut self, top: &mut Top, target: u64) {
        let target = target.clamp(self.start.time.mono_ns, self.last.mono_ns);
        if target < self.at.mono_ns {
            self.rebuild(top, 0);
        }
        self.forward_to(top, target);
    }

    /// The recording's start: the sockets of its inventory, before any transition.
    pub fn to_start(&mut self, top: &mut Top) {
        self.rebuild(top, 0);
        self.forward_to(top, self.start.time.mono_ns);
        self.publish(top);
    }

    fn step_forward(&mut self, top: &mut Top) {
        let next = self.records[self.position..].iter().position(|r| matches!(r, Record::Transition(_)));
        match next {
            Some(i) => {
                // Everything up to that transition, itself included.
                let end = self.position + i + 1;
                let target = record_time(&self.records[end - 1]).mono_ns;
                for r in &self.records[self.position..end] {
                    apply(top.table_mut(), r);
                }
                self.position = end;
                self.at = self.clock.timestamp(target.max(self.at.mono_ns));
            }
            None => self.forward_to(top, self.last.mono_ns),
        }
    }

    fn step_back(&mut self, top: &mut Top) {
        let Some(last) = self.records[..self.position].iter().rposition(|r| matches!(r, Record::Transition(_))) else {
            return self.to_start(top);
        };
        self.rebuild(top, last);
        let at = self.records[..last].iter().map(record_time).max().unwrap_or(self.start.time);
        self.at = self.clock.timestamp(at.mono_ns.max(self.start.time.mono_ns));
    }
}

impl Source for Browser {
    fn now(&mut self) -> Option<Timestamp> {
        Some(self.at)
    }

    fn act(&mut self, top: &mut Top, action: Action) {
        let at = self.at.mono_ns;
        match action {
            Action::TogglePause => {
                self.playing = match self.playing {
                    Some(_) => None,
                    None if self.position >= self.records.len() => None,
                    None => Some((Instant::now(), at)),
                };
            }
            Action::StepForward => {
                self.playing = None;
                self.step_forward(top);
            }
            Action::StepBack => {
                self.playing = None;
                self.step_back(top);
            }
            Action::JumpForward => self.seek(top, at.saturating_add(JUMP_NS)),
            Action::JumpBack => self.seek(top, at.saturating_sub(JUMP_NS)),
            Action::ToStart => {
                self.playing = None;
                self.to_start(top);
            }
            Action::ToEnd => {
                self.playing = None;
                self.seek(top, self.last.mono_ns);
            }
            Action::Faster => self.speed = (self.speed * 2).min(MAX_SPEED),
            Action::Slower => self.speed = (self.speed / 2).max(1),
            _ => {}
        }
        if let Some(p) = &mut self.playing {
            *p = (Instant::now(), self.at.mono_ns);
        }
        self.publish(top);
    }

    fn advance(&mut self, top: &mut Top) -> Option<Duration> {
        let (since, from) = self.playing?;
        let elapsed = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let target = from.saturating_add(elapsed.saturating_mul(u64::from(self.speed)));
        self.seek(top, target);
        if self.at.mono_ns >= self.last.mono_ns {
            self.playing = None;
        }
        self.publish(top);
        Some(app::FRAME)
    }
}
