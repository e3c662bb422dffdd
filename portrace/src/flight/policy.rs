//! The flight recorder's rules, pure: it reads no clock and touches no file. How its
//! files are named (from the UTC time their span starts, to the microsecond, so that
//! names sort as the spans do), which names are its own, when the file being written is
//! due to be closed, and which of its files retention removes.
//!
//! A file goes through three names:
//! - `.portrace-20261207T081953.123456Z.ptr.tmp` while its header and inventory are
//!   written (hidden from `DIR/*`, never a file without a header under a visible name);
//! - `portrace-20261207T081953.123456Z.ptr.part` while it is being recorded, and after a
//!   recorder was killed or stopped by a full disk: readable up to its last complete block;
//! - `portrace-20261207T081953.123456Z.ptr` once its end record is written: whole.

use std::time::Duration;

use crate::clock::civil_from_days;

/// The shortest rotation interval accepted.
pub const MIN_ROTATE: Duration = Duration::from_secs(1);
/// The smallest `--max-size` accepted: a header and an inventory must fit with room to spare.
pub const MIN_MAX_SIZE: u64 = 64 << 10;

const PREFIX: &str = "portrace-";
const TEMP_PREFIX: &str = ".portrace-";
const FINISHED: &str = ".ptr";
const PART: &str = ".ptr.part";
const TEMP: &str = ".ptr.tmp";
/// `20261207T081953.123456Z`.
const STAMP_LEN: usize = 23;

/// How far a file of the flight recorder has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// Its header and inventory are being written.
    Creating,
    /// Being recorded, or left so by a recorder that did not end it.
    Open,
    /// Its end record is written.
    Finished,
}

/// A file name of the flight recorder: when its span started, and its stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileName {
    /// Microseconds since the Unix epoch, UTC.
    pub start_us: i64,
    pub stage: Stage,
}

impl FileName {
    /// The name of the file whose span starts at `unix_ns`, at `stage`.
    pub fn new(unix_ns: i128, stage: Stage) -> FileName {
        FileName { start_us: unix_ns.div_euclid(1000).clamp(0, MAX_US) as i64, stage }
    }

    pub fn at(self, stage: Stage) -> FileName {
        FileName { stage, ..self }
    }

    /// The file name.
    pub fn render(self) -> String {
        let secs = self.start_us.div_euclid(1_000_000);
        let micros = self.start_us.rem_euclid(1_000_000);
        let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
        let sod = secs.rem_euclid(86_400);
        let stamp = format!(
            "{y:04}{mo:02}{d:02}T{:02}{:02}{:02}.{micros:06}Z",
            sod / 3600,
            sod / 60 % 60,
            sod % 60
        );
        match self.stage {
            Stage::Creating => format!("{TEMP_PREFIX}{stamp}{TEMP}"),
            Stage::Open => format!("{PREFIX}{stamp}{PART}"),
            Stage::Finished => format!("{PREFIX}{stamp}{FINISHED}"),
        }
    }

    /// The name's meaning if it is exactly one the recorder makes, else `None`: nothing
    /// else in the directory is ever touched.
    pub fn parse(name: &str) -> Option<FileName> {
        let (rest, stage) = if let Some(r) = name.strip_prefix(TEMP_PREFIX) {
            (r.strip_suffix(TEMP)?, Stage::Creating)
        } else {
            let r = name.strip_prefix(PREFIX)?;
            match r.strip_suffix(PART) {
                Some(r) => (r, Stage::Open),
                None => (r.strip_suffix(FINISHED)?, Stage::Finished),
            }
        };
        let b = rest.as_bytes();
        if b.len() != STAMP_LEN || b[8] != b'T' || b[15] != b'.' || b[22] != b'Z' {
            return None;
        }
        let digits = |r: std::ops::Range<usize>| -> Option<i64> {
            let part = &b[r];
            part.iter().all(u8::is_ascii_digit).then(|| part.iter().fold(0i64, |n, &c| n * 10 + i64::from(c - b'0')))
        };
        let (y, mo, d) = (digits(0..4)?, digits(4..6)?, digits(6..8)?);
        let (h, mi, s, us) = (digits(9..11)?, digits(11..13)?, digits(13..15)?, digits(16..22)?);
        if !(1970..=9999).contains(&y) || !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 59 {
            return None;
        }
        let days = days_from_civil(y, mo, d);
        let parsed = FileName { start_us: ((days * 86_400 + h * 3600 + mi * 60 + s) * 1_000_000) + us, stage };
        // Only the one spelling the recorder writes (no 31st of February).
        (parsed.render() == name).then_some(parsed)
    }
}

/// The last microsecond of year 9999.
const MAX_US: i128 = 253_402_300_800_000_000 - 1;

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Names files so that each is later than the one before, even when two spans start in
/// the same microsecond or the wall clock steps back: names then sort as files were made.
#[derive(Clone, Copy, Debug, Default)]
pub struct Namer {
    last_us: Option<i64>,
}

impl Namer {
    /// The name for a file whose span starts at `unix_ns` (wall clock).
    pub fn next(&mut self, unix_ns: i128) -> FileName {
        let mut name = FileName::new(unix_ns, Stage::Creating);
        if let Some(last) = self.last_us {
            name.start_us = name.start_us.max(last + 1);
        }
        self.last_us = Some(name.start_us);
        name
    }

    /// Skips past `name` (taken already by a file planted in the directory).
    pub fn taken(&mut self, name: FileName) {
        self.last_us = Some(self.last_us.map_or(name.start_us, |l| l.max(name.start_us)));
    }
}

/// When to close a file, and how many to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// A file covers at most this long.
    pub rotate: Duration,
    /// A file is closed once it holds at least this many bytes.
    pub max_size: Option<u64>,
    /// Files kept besides the one being written, at least 1.
    pub keep: usize,
}

impl Policy {
    /// Whether the file opened at `opened_ns` (monotonic), now `bytes` long, is to be
    /// closed at `now_ns`.
    pub fn due(&self, opened_ns: u64, now_ns: u64, bytes: u64) -> bool {
        let rotate_ns = u64::try_from(self.rotate.as_nanos()).unwrap_or(u64::MAX);
        now_ns.saturating_sub(opened_ns) >= rotate_ns || self.max_size.is_some_and(|max| bytes >= max)
    }

    /// Of the directory's entries `names`, those retention removes, oldest first: every
    /// file of the recorder but `current` (the one being written), finished or left open
    /// by an earlier run, beyond the newest `keep`; and every file left half created.
    /// When `current` is `finishing` (its end record written, about to take its finished
    /// name), it is one of the `keep`: so the directory never holds more than `keep`
    /// finished files, even for an instant. Names the recorder does not make are never
    /// listed.
    pub fn to_remove<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
        current: Option<FileName>,
        finishing: bool,
    ) -> Vec<String> {
        let mut kept: Vec<(FileName, &str)> = Vec::new();
        let mut out = Vec::new();
        for name in names {
            let Some(parsed) = FileName::parse(name) else { continue };
            if current.is_some_and(|c| c.start_us == parsed.start_us) {
                continue;
            }
            match parsed.stage {
                Stage::Creating => out.push((parsed, name)),
                Stage::Open | Stage::Finished => kept.push((parsed, name)),
            }
        }
        kept.sort_unstable();
        let others = if finishing && current.is_some() { self.keep.saturating_sub(1) } else { self.keep };
        let surplus = kept.len().saturating_sub(others);
        out.extend(kept.into_iter().take(surplus));
        out.sort_unstable();
        out.into_iter().map(|(_, name)| name.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: i128 = 1_000_000_000;
    /// 2026-12-07T08:19:53.123456789Z.
    const T: i128 = 1_796_631_593 * NS + 123_456_789;

    #[test]
    fn names_carry_the_utc_start_to_the_microsecond() {
        let n = FileName::new(T, Stage::Finished);
        assert_eq!(n.render(), "portrace-20261207T081953.123456Z.ptr");
        assert_eq!(n.at(Stage::Open).render(), "portrace-20261207T081953.123456Z.ptr.part");
        assert_eq!(n.at(Stage::Creating).render(), ".portrace-20261207T081953.123456Z.ptr.tmp");
        for stage in [Stage::Creating, Stage::Open, Stage::Finished] {
            assert_eq!(FileName::parse(&n.at(stage).render()), Some(n.at(stage)));
        }
        assert_eq!(FileName::new(0, Stage::Finished).render(), "portrace-19700101T000000.000000Z.ptr");
        let leap = FileName::new((951_782_400 + 86_399) * NS, Stage::Finished);
        assert_eq!(leap.render(), "portrace-20000229T235959.000000Z.ptr");
        assert_eq!(FileName::parse(&leap.render()), Some(leap));
    }

    #[test]
    fn only_the_recorders_own_spellings_are_its_files() {
        for name in [
            "portrace-20261207T081953.123456Z.ptr.bak",
            "portrace-20261207T081953.123456Z",
            "portrace-20261207T081953.12345Z.ptr",
            "portrace-20261207T081953.1234567Z.ptr",
            "portrace-20261207t081953.123456Z.ptr",
            "portrace-20260230T081953.123456Z.ptr",
            "portrace-20261207T246000.000000Z.ptr",
            "portrace-2026120/T081953.123456Z.ptr",
            "Portrace-20261207T081953.123456Z.ptr",
            "xportrace-20261207T081953.123456Z.ptr",
            ".portrace-20261207T081953.123456Z.ptr",
            "portrace-20261207T081953.123456Z.ptr.tmp",
            "portrace-+2026120T081953.123456Z.ptr",
            "notes.txt",
            "",
        ] {
            assert_eq!(FileName::parse(name), None, "{name:?}");
        }
    }

    #[test]
    fn names_sort_as_spans_start_and_never_repeat() {
        let mut namer = Namer::default();
        let a = namer.next(T);
        let b = namer.next(T);
        let c = namer.next(T - NS);
        let d = namer.next(T + 5 * NS);
        assert!(a < b && b < c && c < d, "{a:?} {b:?} {c:?} {d:?}");
        let rendered: Vec<String> = [a, b, c, d].iter().map(|n| n.at(Stage::Finished).render()).collect();
        let mut sorted = rendered.clone();
        sorted.sort();
        assert_eq!(rendered, sorted);
        namer.taken(FileName::new(T + 10 * NS, Stage::Open));
        assert!(namer.next(T).start_us > T.div_euclid(1000) as i64 + 10_000_000);
    }

    #[test]
    fn a_file_is_due_at_its_interval_or_its_size() {
        let p = Policy { rotate: Duration::from_secs(600), max_size: None, keep: 12 };
        let s = 1_000_000_000u64;
        assert!(!p.due(5 * s, 604 * s, u64::MAX / 2));
        assert!(p.due(5 * s, 605 * s, 0));
        assert!(!p.due(5 * s, 3 * s, 0), "a clock before the opening is not due");
        let sized = Policy { max_size: Some(1 << 20), ..p };
        assert!(!sized.due(0, s, (1 << 20) - 1));
        assert!(sized.due(0, s, 1 << 20));
    }

    #[test]
    fn retention_removes_the_oldest_of_its_own_files_only() {
        let name = |secs: i128, stage| FileName::new(T + secs * NS, stage).render();
        let current = FileName::new(T + 100 * NS, Stage::Open);
        let names = [
            name(3, Stage::Finished),
            name(1, Stage::Finished),
            name(2, Stage::Open), // left by a killed run
            name(4, Stage::Finished),
            name(5, Stage::Creating), // left half created
            current.render(),
            "notes.txt".to_string(),
            "portrace-1.ptr".to_string(),
        ];
        let p = Policy { rotate: Duration::from_secs(1), max_size: None, keep: 2 };
        let removed = p.to_remove(names.iter().map(String::as_str), Some(current), false);
        assert_eq!(removed, [name(1, Stage::Finished), name(2, Stage::Open), name(5, Stage::Creating)]);
        // The current file being finished is one of the 2 kept.
        let removed = p.to_remove(names.iter().map(String::as_str), Some(current), true);
        assert_eq!(removed, [name(1, Stage::Finished), name(2, Stage::Open), name(3, Stage::Finished), name(5, Stage::Creating)]);
        let keep_all = Policy { keep: 12, ..p };
        assert_eq!(keep_all.to_remove(names.iter().map(String::as_str), Some(current), true), [name(5, Stage::Creating)]);
        // The file being written is never removed, whatever its stage.
        let one = Policy { keep: 1, ..p };
        for finishing in [false, true] {
            let removed = one.to_remove(names.iter().map(String::as_str), Some(current.at(Stage::Creating)), finishing);
            assert!(!removed.contains(&current.render()));
            assert_eq!(removed.len(), 4 + usize::from(finishing));
        }
    }
}
