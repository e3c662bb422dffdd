//! Time: this module owns the mapping from the kernel's CLOCK_MONOTONIC nanoseconds (what
//! `bpf_ktime_get_ns` returns) to wall-clock time, and the allocation-free rendering of
//! wall-clock time that every output format uses: RFC 3339 UTC with microseconds for
//! machines, and the local time of day for people. The calendar arithmetic is done here by
//! hand (no date library), and the local UTC offset is looked up with `localtime_r` at
//! most once per minute of event time.

use std::fmt;

use crate::record::Timestamp;

const NS_PER_SEC: i128 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// Maps CLOCK_MONOTONIC nanoseconds to nanoseconds since the Unix epoch.
///
/// The offset between the two clocks is measured once, by [`Clock::capture`]; a step of the
/// wall clock later in the run (someone running `date -s`) is not followed, so every event
/// of a run is placed on one consistent time line. NTP slewing affects both clocks alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// `unix_ns - mono_ns`.
    offset_ns: i128,
}

impl Clock {
    /// How many (monotonic, realtime, monotonic) triples [`Clock::capture`] reads.
    const SAMPLES: usize = 8;

    /// Measures the offset between CLOCK_REALTIME and CLOCK_MONOTONIC now.
    ///
    /// Reads the monotonic clock, the real-time clock, then the monotonic clock again,
    /// several times, and keeps the sample whose two monotonic reads are closest together:
    /// the one least disturbed by preemption. The real-time read is taken to have happened
    /// half-way between the two monotonic reads.
    pub fn capture() -> Clock {
        let mut best: Option<(i128, i128)> = None; // (gap, offset)
        for _ in 0..Self::SAMPLES {
            let before = read_clock(libc::CLOCK_MONOTONIC);
            let real = read_clock(libc::CLOCK_REALTIME);
            let after = read_clock(libc::CLOCK_MONOTONIC);
            let gap = after - before;
            let offset = real - (before + gap / 2);
            if best.is_none_or(|(best_gap, _)| gap < best_gap) {
                best = Some((gap, offset));
            }
        }
        let (_, offset_ns) = best.expect("Clock::SAMPLES is not zero");
        Clock { offset_ns }
    }

    /// A clock with a known offset (`unix_ns = mono_ns + offset_ns`), for tests and replays.
    pub fn from_offset(offset_ns: i128) -> Clock {
        Clock { offset_ns }
    }

    /// `unix_ns - mono_ns`.
    pub fn offset_ns(&self) -> i128 {
        self.offset_ns
    }

    /// The timestamp of an instant the kernel recorded as `mono_ns`.
    pub fn timestamp(&self, mono_ns: u64) -> Timestamp {
        Timestamp { mono_ns, unix_ns: i128::from(mono_ns).saturating_add(self.offset_ns) }
    }

    /// The timestamp of the current instant.
    pub fn now(&self) -> Timestamp {
        self.timestamp(monotonic_ns())
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    // The monotonic clock counts from boot and is never negative.
    u64::try_from(read_clock(libc::CLOCK_MONOTONIC)).unwrap_or(0)
}

fn read_clock(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    // CLOCK_MONOTONIC and CLOCK_REALTIME exist on every Linux portrace can run on, and the
    // pointer is valid, so the call cannot fail.
    assert_eq!(rc, 0, "clock_gettime({clock}) failed");
    i128::from(ts.tv_sec) * NS_PER_SEC + i128::from(ts.tv_nsec)
}

/// The proleptic Gregorian date `(year, month 1..=12, day 1..=31)` of a day counted from
/// 1970-01-01 (day 0; negative before it).
///
/// The classic era-based conversion: days are shifted so that years start on March 1st
/// (the leap day becomes the last day of the year), then split into 400-year eras of
/// 146,097 days, years of the era, and a month from the day of that March-based year.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1st
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// 0000-01-01T00:00:00Z and 9999-12-31T23:59:59.999999999Z, the range four-digit years
/// can show.
const MIN_UNIX_NS: i128 = -62_167_219_200 * NS_PER_SEC;
const MAX_UNIX_NS: i128 = 253_402_300_800 * NS_PER_SEC - 1;

/// Splits nanoseconds since the epoch, within [`MIN_UNIX_NS`, `MAX_UNIX_NS`], into whole
/// seconds (rounded towards minus infinity) and the nanoseconds past them. Times from 1678
/// to 2261 fit an i64 and take the fast path: 128-bit division is a slow library call, and
/// this runs once per event.
fn split_ns(unix_ns: i128) -> (i64, u32) {
    const NS: i64 = NS_PER_SEC as i64;
    match i64::try_from(unix_ns) {
        Ok(ns) => (ns.div_euclid(NS), ns.rem_euclid(NS) as u32),
        // The clamp bounds the quotient to about ±2.6e11, well inside an i64.
        Err(_) => (unix_ns.div_euclid(NS_PER_SEC) as i64, unix_ns.rem_euclid(NS_PER_SEC) as u32),
    }
}

/// A rendered RFC 3339 UTC time with microseconds, `2026-11-29T02:41:07.123456Z`, held on
/// the stack. Write it with [`Rfc3339::as_bytes`] to an `io::Write` or with `Display` to a
/// `fmt::Write`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Rfc3339([u8; Rfc3339::LEN]);

impl Rfc3339 {
    pub const LEN: usize = 27;

    /// Where the six digits of microseconds are in the text.
    const MICROS: std::ops::Range<usize> = 20..26;

    /// Renders `unix_ns` (nanoseconds since the Unix epoch). The sub-microsecond part is
    /// truncated, not rounded, so a time never shows as later than it was. Times outside
    /// years 0000..=9999 are clamped to that range.
    pub fn new(unix_ns: i128) -> Rfc3339 {
        let (secs, sub_ns) = split_ns(unix_ns.clamp(MIN_UNIX_NS, MAX_UNIX_NS));
        Rfc3339::at(secs, sub_ns / 1_000)
    }

    /// The text of `micros` microseconds past second `secs` (as [`split_ns`] gives it).
    fn at(secs: i64, micros: u32) -> Rfc3339 {
        let (year, month, day) = civil_from_days(secs.div_euclid(SECS_PER_DAY));
        let sod = secs.rem_euclid(SECS_PER_DAY) as u32;

        let mut b = *b"0000-00-00T00:00:00.000000Z";
        put_digits(&mut b[0..4], year as u32);
        put_digits(&mut b[5..7], month);
        put_digits(&mut b[8..10], day);
        put_time_of_day(&mut b[11..26], sod, micros);
        Rfc3339(b)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits and punctuation are ever written.
        std::str::from_utf8(&self.0).expect("RFC 3339 text is ASCII")
    }
}

/// Renders RFC 3339 times of a stream whose times mostly share their second with the one
/// before (every event line carries one): the date and time of day are rendered again only
/// when the second changes; otherwise only the six digits of microseconds are, in place
/// in the line. The text is the same as [`Rfc3339::new`]'s.
#[derive(Clone, Copy)]
pub struct Rfc3339Cache {
    /// The whole second (as [`split_ns`] gives it) whose date and time of day `text` shows;
    /// its microseconds are those of an earlier time.
    second: i64,
    text: Rfc3339,
}

impl Rfc3339Cache {
    pub fn new() -> Rfc3339Cache {
        // No clamped time has this second, so the first time renders the text.
        Rfc3339Cache { second: i64::MIN, text: Rfc3339::new(0) }
    }

    /// Appends the text of `unix_ns`, as [`Rfc3339::new`] renders it, to `line`.
    #[inline]
    pub fn push(&mut self, line: &mut Vec<u8>, unix_ns: i128) {
        let (secs, sub_ns) = split_ns(unix_ns.clamp(MIN_UNIX_NS, MAX_UNIX_NS));
        if secs != self.second {
            self.text = Rfc3339::at(secs, 0);
            self.second = secs;
        }
        let start = line.len();
        line.extend_from_slice(&self.text.0);
        let micros = Rfc3339::MICROS;
        put_digits(&mut line[start + micros.start..start + micros.end], sub_ns / 1_000);
    }
}

impl Default for Rfc3339Cache {
    fn default() -> Rfc3339Cache {
        Rfc3339Cache::new()
    }
}

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl fmt::Debug for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A rendered time of day with microseconds, `HH:MM:SS.uuuuuu`, held on the stack.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TimeOfDay([u8; TimeOfDay::LEN]);

impl TimeOfDay {
    pub const LEN: usize = 15;

    /// The time of day of `unix_ns` in a zone `utc_offset_s` seconds east of UTC.
    /// Truncates to the microsecond like [`Rfc3339::new`].
    pub fn new(unix_ns: i128, utc_offset_s: i32) -> TimeOfDay {
        let local_ns = unix_ns.saturating_add(i128::from(utc_offset_s) * NS_PER_SEC);
        let (secs, sub_ns) = split_ns(local_ns.clamp(MIN_UNIX_NS, MAX_UNIX_NS));
        let sod = secs.rem_euclid(SECS_PER_DAY) as u32;
        let micros = sub_ns / 1_000;
        let mut b = *b"00:00:00.000000";
        put_time_of_day(&mut b, sod, micros);
        TimeOfDay(b)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("time of day text is ASCII")
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl fmt::Debug for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Writes `HH:MM:SS.uuuuuu` into a 15-byte slice already holding the punctuation.
fn put_time_of_day(b: &mut [u8], second_of_day: u32, micros: u32) {
    put_digits(&mut b[0..2], second_of_day / 3_600);
    put_digits(&mut b[3..5], second_of_day / 60 % 60);
    put_digits(&mut b[6..8], second_of_day % 60);
    put_digits(&mut b[9..15], micros);
}

/// Writes the low `out.len()` decimal digits of `n`, zero-padded.
fn put_digits(out: &mut [u8], mut n: u32) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Which UTC offset local times are shown in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Zone {
    /// The system's local time zone (the `TZ` variable, else `/etc/localtime`), as the C
    /// library resolves it, daylight saving time included.
    #[default]
    Local,
    /// A fixed offset, in seconds east of UTC (`-18000` for UTC-05:00).
    Fixed(i32),
}

/// Renders local times of day, looking the UTC offset up at most once per minute of event
/// time. Time-zone transitions happen on whole minutes, so the cache is never stale;
/// events that arrive slightly out of order across a minute boundary cost one extra
/// lookup each, not a wrong time.
#[derive(Clone, Debug)]
pub struct LocalTime {
    zone: Zone,
    /// The minute (Unix seconds / 60) `offset_s` was looked up for.
    cached_minute: Option<i64>,
    offset_s: i32,
}

impl LocalTime {
    pub fn new(zone: Zone) -> LocalTime {
        let offset_s = match zone {
            Zone::Local => 0,
            Zone::Fixed(offset) => offset,
        };
        LocalTime { zone, cached_minute: None, offset_s }
    }

    /// The offset east of UTC, in seconds, in force at `unix_s`.
    pub fn offset_at(&mut self, unix_s: i64) -> i32 {
        if self.zone == Zone::Local {
            let minute = unix_s.div_euclid(60);
            if self.cached_minute != Some(minute) {
                self.offset_s = system_utc_offset(unix_s);
                self.cached_minute = Some(minute);
            }
        }
        self.offset_s
    }

    /// The local time of day of `unix_ns`.
    pub fn time_of_day(&mut self, unix_ns: i128) -> TimeOfDay {
        let unix_s = unix_ns.div_euclid(NS_PER_SEC).clamp(i64::MIN.into(), i64::MAX.into());
        let offset = self.offset_at(unix_s as i64);
        TimeOfDay::new(unix_ns, offset)
    }
}

/// The system's UTC offset at `unix_s`, in seconds east; 0 when the C library cannot say.
fn system_utc_offset(unix_s: i64) -> i32 {
    // time_t is 64 bits on every target portrace builds for.
    let time = unix_s as libc::time_t;
    // SAFETY: `tm` is plain old data; an all-zero value is a valid (if meaningless) one.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the call; localtime_r is the
    // thread-safe variant and only writes to `tm`.
    let result = unsafe { libc::localtime_r(&time, &mut tm) };
    if result.is_null() {
        return 0;
    }
    i32::try_from(tm.tm_gmtoff).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inverse conversion, written independently of `civil_from_days` (counting whole
    /// years and months), to check it over a long range.
    fn days_from_civil_slow(year: i64, month: u32, day: u32) -> i64 {
        fn is_leap(y: i64) -> bool {
            y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
        }
        fn year_days(y: i64) -> i64 {
            if is_leap(y) {
                366
            } else {
                365
            }
        }
        let mut days = 0i64;
        if year >= 1970 {
            for y in 1970..year {
                days += year_days(y);
            }
        } else {
            for y in year..1970 {
                days -= year_days(y);
            }
        }
        const MONTH_DAYS: [i64; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        for m in 1..month {
            days += MONTH_DAYS[m as usize - 1];
            if m == 2 && is_leap(year) {
                days += 1;
            }
        }
        days + i64::from(day) - 1
    }

    fn rfc(unix_ns: i128) -> String {
        Rfc3339::new(unix_ns).as_str().to_string()
    }

    const S: i128 = NS_PER_SEC;

    #[test]
    fn cache_renders_as_rfc3339_new() {
        let mut cache = Rfc3339Cache::new();
        // Within a second, across seconds, back in time, before the epoch, and clamped.
        let times = [
            1_795_920_067 * S + 123_456_789,
            1_795_920_067 * S + 999_999_999,
            1_795_920_067 * S,
            1_795_920_068 * S + 1_000,
            1_795_920_067 * S + 5_000,
            -S / 2,
            -S,
            0,
            MAX_UNIX_NS + S,
            MAX_UNIX_NS,
            MIN_UNIX_NS - 1,
            MIN_UNIX_NS,
            1_795_920_068 * S + 1_999,
        ];
        for unix_ns in times {
            let mut line = b"x".to_vec();
            cache.push(&mut line, unix_ns);
            assert_eq!(line, format!("x{}", rfc(unix_ns)).as_bytes(), "at {unix_ns}");
        }
    }

    #[test]
    fn known_dates() {
        // Unix seconds from `date -u -d ... +%s`.
        assert_eq!(rfc(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc(951_782_400 * S), "2000-02-29T00:00:00.000000Z");
        assert_eq!(rfc(951_868_800 * S), "2000-03-01T00:00:00.000000Z");
        assert_eq!(rfc(4_107_456_000 * S), "2100-02-28T00:00:00.000000Z");
        // 2100 is not a leap year: the day after Feb 28 is March 1st.
        assert_eq!(rfc(4_107_542_400 * S), "2100-03-01T00:00:00.000000Z");
        assert_eq!(rfc(1_709_210_096 * S), "2024-02-29T12:34:56.000000Z");
        assert_eq!(rfc(1_795_920_067 * S + 123_456_789), "2026-11-29T02:41:07.123456Z");
        assert_eq!(rfc(-62_135_596_800 * S), "0001-01-01T00:00:00.000000Z");
        assert_eq!(rfc(10_413_792_000 * S + 5_000), "2300-01-01T00:00:00.000005Z");
        assert_eq!(rfc(253_402_300_799 * S + 999_999_999), "9999-12-31T23:59:59.999999Z");
    }

    #[test]
    fn before_the_epoch_counts_backwards() {
        assert_eq!(rfc(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(rfc(-S), "1969-12-31T23:59:59.000000Z");
        assert_eq!(rfc(-S - 500_000), "1969-12-31T23:59:58.999500Z");
    }

    #[test]
    fn microseconds_are_truncated_not_rounded() {
        assert_eq!(rfc(999), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc(S - 1), "1970-01-01T00:00:00.999999Z");
    }

    #[test]
    fn out_of_range_years_are_clamped() {
        assert_eq!(rfc(i128::MAX), "9999-12-31T23:59:59.999999Z");
        assert_eq!(rfc(i128::MIN), "0000-01-01T00:00:00.000000Z");
    }

    #[test]
    fn civil_from_days_matches_a_slow_count() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        // Every day from 1900 to 2200: consecutive days are consecutive dates.
        let mut expected = days_from_civil_slow(1900, 1, 1);
        let end = days_from_civil_slow(2200, 12, 31);
        assert_eq!(civil_from_days(expected), (1900, 1, 1));
        let mut prev = civil_from_days(expected - 1);
        assert_eq!(prev, (1899, 12, 31));
        while expected <= end {
            let (y, m, d) = civil_from_days(expected);
            assert_eq!(days_from_civil_slow(y, m, d), expected, "{y}-{m}-{d}");
            assert!((y, m, d) > prev, "{y}-{m}-{d} after {prev:?}");
            prev = (y, m, d);
            expected += 1;
        }
        assert_eq!(prev, (2200, 12, 31));
    }

    #[test]
    fn rfc3339_agrees_with_gmtime() {
        // An independent oracle: the C library's gmtime_r, every ~11.6 days over 400 years.
        let mut secs: i64 = -2_208_988_800; // 1900-01-01
        while secs < 10_413_792_000 {
            // SAFETY: zeroed tm is valid plain data; pointers are valid for the call.
            let mut tm: libc::tm = unsafe { std::mem::zeroed() };
            let t: libc::time_t = secs;
            assert!(!unsafe { libc::gmtime_r(&t, &mut tm) }.is_null());
            let want = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.000042Z",
                tm.tm_year + 1900,
                tm.tm_mon + 1,
                tm.tm_mday,
                tm.tm_hour,
                tm.tm_min,
                tm.tm_sec
            );
            assert_eq!(rfc(i128::from(secs) * S + 42_000), want);
            secs += 1_000_003;
        }
    }

    #[test]
    fn time_of_day_in_fixed_zones() {
        let t = 1_795_920_067 * S + 123_456_789; // 2026-11-29T02:41:07.123456789Z
        assert_eq!(TimeOfDay::new(t, 0).as_str(), "02:41:07.123456");
        assert_eq!(TimeOfDay::new(t, 5 * 3600 + 1800).as_str(), "08:11:07.123456");
        // West of UTC the day wraps backwards.
        assert_eq!(TimeOfDay::new(t, -8 * 3600).as_str(), "18:41:07.123456");
        assert_eq!(TimeOfDay::new(-1, 0).as_str(), "23:59:59.999999");
        assert_eq!(format!("[{:>17}]", TimeOfDay::new(0, 3600)), "[  01:00:00.000000]");
        // Beyond the 64-bit nanosecond range (after 2262) and at the extremes.
        let y2300 = 10_413_792_000 * S + 5_000; // 2300-01-01T00:00:00.000005Z
        assert_eq!(TimeOfDay::new(y2300, -60).as_str(), "23:59:00.000005");
        assert_eq!(TimeOfDay::new(i128::MAX, 3600).as_str(), "23:59:59.999999");
    }

    #[test]
    fn local_time_with_a_fixed_zone_never_asks_the_system() {
        let mut local = LocalTime::new(Zone::Fixed(-3 * 3600));
        assert_eq!(local.offset_at(0), -3 * 3600);
        assert_eq!(local.cached_minute, None);
        assert_eq!(local.time_of_day(1_795_920_067 * S).as_str(), "23:41:07.000000");
    }

    #[test]
    fn local_time_from_the_system_is_cached_per_minute() {
        let mut local = LocalTime::new(Zone::Local);
        let t = 1_795_920_067i64;
        let offset = local.offset_at(t);
        // Real zones are within UTC-12..UTC+14.
        assert!((-12 * 3600..=14 * 3600).contains(&offset), "{offset}");
        assert_eq!(offset, system_utc_offset(t));
        assert_eq!(local.cached_minute, Some(t / 60));
        assert_eq!(local.offset_at(t + 1), offset);
        assert_eq!(local.cached_minute, Some(t / 60));
        let tod = local.time_of_day(i128::from(t) * S);
        assert_eq!(tod, TimeOfDay::new(i128::from(t) * S, offset));
    }

    #[test]
    fn clock_maps_monotonic_to_unix() {
        let clock = Clock::from_offset(1_700_000_000 * S);
        let ts = clock.timestamp(5_000_000_123);
        assert_eq!(ts.mono_ns, 5_000_000_123);
        assert_eq!(ts.unix_ns, 1_700_000_005 * S + 123);
        // Offsets can be negative too (a clock set before the boot time would imply).
        let odd = Clock::from_offset(-10 * S);
        assert_eq!(odd.timestamp(3 * S as u64).unix_ns, -7 * S);
    }

    #[test]
    fn captured_clock_tracks_the_real_time() {
        let clock = Clock::capture();
        let now = clock.now();
        let real = read_clock(libc::CLOCK_REALTIME);
        // Both were read within a moment of each other; allow a generous second.
        assert!((real - now.unix_ns).abs() < S, "{} vs {}", real, now.unix_ns);
        // And the mapping is exactly an offset.
        assert_eq!(clock.timestamp(now.mono_ns + 1).unix_ns, now.unix_ns + 1);
        assert!(now.mono_ns > 0);
    }

    #[test]
    fn an_offset_from_a_recording_at_the_end_of_the_range_saturates() {
        let clock = Clock::from_offset(i128::MAX);
        assert_eq!(clock.timestamp(u64::MAX).unix_ns, i128::MAX);
        assert_eq!(Clock::from_offset(-5).timestamp(10).unix_ns, 5);
    }

}
