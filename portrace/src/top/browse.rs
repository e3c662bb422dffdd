//! `portrace top --from FILE`: a recording on the same screen, at a moment the user moves
//! through: one transition at a time, ten seconds at a time, to either end, or played at
//! a chosen speed. The records are those the user's filters keep, applied again as in
//! `portrace replay`; the table at a moment is the records applied from the start up to
//! it. The recording is paged: a first pass counts the records kept and notes the last
//! instant, then at most one page ([`PAGE`] records, aligned on multiples of it) is held,
//! the one around the moment shown, read on from an open reader when the user moves past
//! it. Going back rebuilds the table by reading the recording again from the start with
//! a fresh filter (which keeps the same records each time), applying records without
//! holding them. Memory is bounded by the page plus the table, whatever the recording's
//! length, and the whole recording can be browsed.

use std::collections::VecDeque;
use std::io::BufRead;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::clock::{Clock, Zone};
use crate::filter::FilterSpec;
use crate::output::Start;
use crate::record::{Timestamp, Transition};
use crate::transition_filter::TransitionFilter;
use crate::tracefile::input::Input as Recording;
use crate::tracefile::{ReadError, ReadOptions, Record, TraceReader};

use super::app::{self, Msg, Source};
use super::model::{Action, Cursor, Table, Top};
use super::terminal::Screen;

/// How far `[` and `]` move.
const JUMP_NS: u64 = 10_000_000_000;
/// The records held at once: one page of those the filters keep.
pub const PAGE: usize = 65_536;

/// The fastest play speed, times real time.
const MAX_SPEED: u32 = 1024;

/// A recording's reader, whatever it reads from.
type Input = TraceReader<Box<dyn BufRead>>;
/// Opens the recording again, at its start.
type Open = Box<dyn Fn() -> Result<Input, ReadError>>;

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

/// The records the user's filters keep, in order, from the start of a recording.
struct Kept {
    reader: Input,
    filter: TransitionFilter,
    /// Transitions the filter let through and not returned yet, oldest first.
    ready: VecDeque<Transition>,
    batch: Vec<Transition>,
}

impl Kept {
    fn open(open: &Open, spec: &FilterSpec) -> Result<Kept, ReadError> {
        Ok(Kept { reader: open()?, filter: TransitionFilter::new(spec.clone()), ready: VecDeque::new(), batch: Vec::new() })
    }

    fn next(&mut self) -> Result<Option<Record>, ReadError> {
        loop {
            if let Some(t) = self.ready.pop_front() {
                return Ok(Some(Record::Transition(t)));
            }
            let Some(record) = self.reader.next_record()? else {
                return Ok(None);
            };
            match record {
                Record::Socket(s) if !self.filter.spec().matches_socket(&s) || !self.filter.cgroup_passes(s.owner.as_ref()) => {}
                Record::Cgroup(g) => self.filter.cgroup(&g),
                Record::Process(_) | Record::Netns(_) => {}
                Record::Transition(t) => {
                    self.filter.offer(t, &mut self.batch);
                    self.ready.extend(self.batch.drain(..));
                }
                other => return Ok(Some(other)),
            }
        }
    }
}

/// A recording, one page of it in memory, and where in it the screen stands.
pub struct Browser {
    open: Open,
    spec: FilterSpec,
    /// The most records held.
    page: usize,
    start: Start,
    clock: Clock,
    /// The records the filters keep in the whole recording, counted by the first pass.
    total: usize,
    /// The records held: those from `window_start` on, a page starting at a multiple of
    /// `page` (or, after a read failed, what could be read of it).
    window: Vec<Record>,
    window_start: usize,
    /// Reads on after the last record of `window`; `None` once reading again failed.
    next: Option<Kept>,
    /// Records applied to the model's table; at least `window_start` and at most the end of
    /// the window, unless reading the recording again failed.
    position: usize,
    /// The moment shown.
    at: Timestamp,
    last: Timestamp,
    /// Playing since this instant, from the moment `at` had then.
    playing: Option<(Instant, u64)>,
    speed: u32,
    /// Why the recording stopped early, if it did.
    pub warning: Option<String>,
    /// Why reading the recording again failed, if it did: from there on it is shown up to
    /// where the reading stopped.
    trouble: Option<String>,
}

fn record_time(r: &Record) -> Timestamp {
    match r {
        Record::Socket(s) => s.time,
        Record::Transition(t) => t.time,
        Record::Lost(l) => l.time,
        Record::Process(p) => p.time,
        Record::Netns(n) => n.time,
        Record::Cgroup(g) => g.time,
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
        Record::Cgroup(g) => table.cgroup(g),
        Record::Process(_) | Record::Netns(_) => {}
    }
}

impl Browser {
    /// Opens the recording at `path`, keeping what `filter` lets through, and reads it once
    /// to count those records.
    pub fn load(path: &Path, filter: FilterSpec, salvage: bool) -> anyhow::Result<Browser> {
        let recording = Recording::rereadable(path)?;
        let options = ReadOptions { salvage };
        let open: Open = Box::new(move || {
            TraceReader::new(Box::new(recording.bytes()?) as Box<dyn BufRead>, recording.name(), options)
        });
        Browser::paged(open, filter, PAGE)
    }

    /// A recording held in `bytes`, named `name`, paged by `page` records.
    #[cfg(test)]
    pub fn from_bytes(bytes: &[u8], name: &str, filter: FilterSpec, page: usize) -> anyhow::Result<Browser> {
        let bytes: std::sync::Arc<[u8]> = bytes.into();
        let name = name.to_owned();
        let open: Open = Box::new(move || {
            let src = std::io::Cursor::new(std::sync::Arc::clone(&bytes));
            TraceReader::new(Box::new(src) as Box<dyn BufRead>, name.clone(), ReadOptions::default())
        });
        Browser::paged(open, filter, page)
    }

    /// A recording whose file is `first` when the browser counts its records, and `later`
    /// each time it reads it again: one that changed while it was browsed.
    #[cfg(test)]
    pub fn changing(first: &[u8], later: &[u8], filter: FilterSpec, page: usize) -> anyhow::Result<Browser> {
        let (first, later): (std::sync::Arc<[u8]>, std::sync::Arc<[u8]>) = (first.into(), later.into());
        let opened = std::cell::Cell::new(0_u32);
        let open: Open = Box::new(move || {
            let bytes = if opened.get() == 0 { &first } else { &later };
            opened.set(opened.get() + 1);
            let src = std::io::Cursor::new(std::sync::Arc::clone(bytes));
            TraceReader::new(Box::new(src) as Box<dyn BufRead>, "changing.ptr", ReadOptions::default())
        });
        Browser::paged(open, filter, page)
    }

    /// Reads what `open` opens once, counting the records `filter` keeps; holds at most
    /// `page` of them from then on.
    fn paged(open: Open, filter: FilterSpec, page: usize) -> anyhow::Result<Browser> {
        anyhow::ensure!(page > 0, "a page holds at least one record");
        let mut first = Kept::open(&open, &filter)?;
        let header = first.reader.header().clone();
        let start = Start { time: header.start, host: header.host.clone(), kernel: header.kernel.clone(), features: header.features.clone() };
        let mut total = 0;
        let mut last = start.time;
        while let Some(record) = first.next()? {
            total += 1;
            last = last.max(record_time(&record));
        }
        let warning = first.reader.warning().map(|w| format!("recording cut short: {w}"));
        drop(first);
        let next = Kept::open(&open, &filter)?;
        Ok(Browser {
            open,
            spec: filter,
            page,
            clock: Clock::from_offset(header.clock_offset_ns),
            at: start.time,
            start,
            total,
            window: Vec::new(),
            window_start: 0,
            next: Some(next),
            position: 0,
            last,
            playing: None,
            speed: 1,
            warning,
            trouble: None,
        })
    }

    /// The records the filters keep in the whole recording.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The records held in memory now.
    pub fn held(&self) -> usize {
        self.window.len()
    }

    fn cursor(&self) -> Cursor {
        Cursor {
            position: self.position,
            total: self.total,
            first: self.start.time,
            last: self.last,
            playing: self.playing.is_some(),
            speed: self.speed,
        }
    }

    fn publish(&self, top: &mut Top) {
        if let Some(trouble) = &self.trouble {
            top.message = Some(trouble.clone());
        }
        top.cursor = Some(self.cursor());
        top.tick(self.at);
    }

    /// Notes that reading the recording again failed, or found fewer records than the
    /// first pass: it is shown up to there.
    fn failed(&mut self, why: String) {
        self.next = None;
        self.trouble = Some(format!("cannot read the recording again ({why}): shown up to where that stopped"));
    }

    /// Record `i` (at least `window_start`), reading on page by page to it; `None` past the
    /// end, or if reading failed.
    fn record(&mut self, i: usize) -> Option<&Record> {
        if i < self.window_start {
            return None;
        }
        while i >= self.window_start + self.window.len() {
            let from = self.window_start + self.window.len();
            if from >= self.total {
                return None;
            }
            let mut kept = self.next.take()?;
            // The page read replaces the one held, in the same allocation.
            let mut page = std::mem::take(&mut self.window);
            page.clear();
            let mut trouble = None;
            while page.len() < self.page {
                match read_on(&mut kept, from + page.len(), self.total) {
                    Ok(Some(r)) => page.push(r),
                    Ok(None) => break,
                    Err(why) => {
                        trouble = Some(why);
                        break;
                    }
                }
            }
            self.window_start = from;
            self.window = page;
            match trouble {
                Some(why) => self.failed(why),
                None => self.next = Some(kept),
            }
        }
        self.window.get(i - self.window_start)
    }

    /// Rebuilds the table from the start with the first `upto` records, and makes the
    /// window the page that holds record `upto`. Unless that is the first page, and held,
    /// this reads the recording again from the start. Returns the latest time among the
    /// records applied.
    fn rebuild(&mut self, top: &mut Top, upto: usize) -> Option<Timestamp> {
        let mut table = Table::new();
        table.start(&self.start);
        let mut latest = None;
        if self.window_start == 0 && upto <= self.window.len() {
            for r in &self.window[..upto] {
                apply(&mut table, r);
                latest = latest.max(Some(record_time(r)));
            }
            self.position = upto;
            top.set_table(table);
            return latest;
        }
        let upto = upto.min(self.total);
        self.window.clear();
        self.window_start = upto - upto % self.page;
        self.next = None;
        self.position = 0;
        let mut kept = match Kept::open(&self.open, &self.spec) {
            Ok(kept) => kept,
            Err(e) => {
                self.failed(e.to_string());
                top.set_table(table);
                return latest;
            }
        };
        let end = self.total.min(self.window_start.saturating_add(self.page));
        let mut read = 0;
        let mut trouble = None;
        while read < end {
            let r = match read_on(&mut kept, read, self.total) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(why) => {
                    trouble = Some(why);
                    break;
                }
            };
            if read < upto {
                apply(&mut table, &r);
                latest = latest.max(Some(record_time(&r)));
                self.position = read + 1;
            }
            if read >= self.window_start {
                self.window.push(r);
            }
            read += 1;
        }
        match trouble {
            Some(why) => self.failed(why),
            None => self.next = Some(kept),
        }
        top.set_table(table);
        latest
    }

    /// The index of the last transition among the first `before` records: in the window
    /// if it holds one, else found by reading the recording again from the start.
    fn last_transition_before(&mut self, before: usize) -> Option<usize> {
        let held = before.saturating_sub(self.window_start).min(self.window.len());
        if let Some(i) = self.window[..held].iter().rposition(|r| matches!(r, Record::Transition(_))) {
            return Some(self.window_start + i);
        }
        // Those of the window before `before` are not transitions.
        let upto = before.min(self.window_start);
        if upto == 0 {
            return None;
        }
        let mut kept = match Kept::open(&self.open, &self.spec) {
            Ok(kept) => kept,
            Err(e) => {
                self.failed(e.to_string());
                return None;
            }
        };
        let mut found = None;
        for read in 0..upto {
            match read_on(&mut kept, read, self.total) {
                Ok(Some(Record::Transition(_))) => found = Some(read),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(why) => {
                    self.failed(why);
                    break;
                }
            }
        }
        found
    }

    /// Applies records up to (and including) those at `target`.
    fn forward_to(&mut self, top: &mut Top, target: u64) {
        while let Some(r) = self.record(self.position) {
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
        // Everything up to the next transition, itself included; without one, to the end.
        while let Some(r) = self.record(self.position) {
            let transition = matches!(r, Record::Transition(_)).then(|| record_time(r).mono_ns);
            apply(top.table_mut(), r);
            self.position += 1;
            if let Some(time) = transition {
                self.at = self.clock.timestamp(time.max(self.at.mono_ns));
                return;
            }
        }
        self.forward_to(top, self.last.mono_ns);
    }

    fn step_back(&mut self, top: &mut Top) {
        let Some(last) = self.last_transition_before(self.position) else {
            return self.to_start(top);
        };
        let at = self.rebuild(top, last).unwrap_or(self.start.time);
        self.at = self.clock.timestamp(at.mono_ns.max(self.start.time.mono_ns));
    }
}

/// The record kept after the first `read` of them, if there are more than that of the
/// `total` the first pass counted; why not, if reading it failed or it is missing.
fn read_on(kept: &mut Kept, read: usize, total: usize) -> Result<Option<Record>, String> {
    if read >= total {
        return Ok(None);
    }
    match kept.next() {
        Ok(Some(r)) => Ok(Some(r)),
        Ok(None) => Err(format!("it has {read} records the filters keep, not {total}")),
        Err(e) => Err(e.to_string()),
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
                    None if self.position >= self.total => None,
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
