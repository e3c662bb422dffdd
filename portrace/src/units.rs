//! The units the command line and the rules file take: durations (`30s`, `1m30s`, `1.5`),
//! byte sizes (`64K`, `4M`, `1GiB`), ring buffer sizes and port numbers. Each parser
//! returns a message that names the value it refuses.

use std::time::Duration;

/// Parses a duration: a plain number of seconds (`10`, `1.5`), one number with a unit
/// (`250ms`, `1.5s`, `5m`, `2h`), or humantime's forms (`1m30s`, `1h 15m`, `2days`).
/// Between 0 and a year, both excluded and included.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad = || format!("'{text}' is not a duration (expected e.g. 30s, 5m, 1m30s, 1h, 250ms, or seconds)");
    let seconds = match decimal_duration(t) {
        Some(seconds) => seconds,
        None => humantime::parse_duration(t).map_err(|_| bad())?.as_secs_f64(),
    };
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 366.0 * 86400.0 {
        return Err(format!("duration '{text}' is out of range (more than 0, at most a year)"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// The forms humantime does not take: seconds without a unit, and a fraction with a unit
/// (`1.5s`). `None` for anything else.
fn decimal_duration(t: &str) -> Option<f64> {
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().ok()?;
    match unit {
        "" | "s" => Some(value),
        "ms" => Some(value / 1000.0),
        "m" | "min" => Some(value * 60.0),
        "h" => Some(value * 3600.0),
        _ => None,
    }
}

/// Bytes with an optional K, M or G suffix (powers of 1024; `KB`, `KiB` and the like too);
/// `None` when it is not a size or does not fit in 64 bits.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let t = lower.strip_suffix('b').unwrap_or(&lower);
    let t = t.strip_suffix('i').unwrap_or(t);
    let (digits, scale) = match t.char_indices().last() {
        Some((i, 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'm')) => (&t[..i], 1 << 20),
        Some((i, 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    digits.parse::<u64>().ok().and_then(|n| n.checked_mul(scale))
}

/// Parses a ring buffer size: bytes with an optional K, M or G suffix (powers of 1024).
/// The kernel needs a power of two that is a multiple of the page size.
pub fn parse_ring_size(text: &str) -> Result<u32, String> {
    let bytes = parse_bytes(text).ok_or_else(|| format!("'{text}' is not a size (expected e.g. 4096, 64K or 4M)"))?;
    let page = page_size();
    if bytes < page || !bytes.is_power_of_two() || bytes > 1 << 30 {
        return Err(format!(
            "ring size {bytes} bytes is not usable: it must be a power of two from {page} (the page size) to 1G"
        ));
    }
    Ok(bytes as u32)
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u64
    } else {
        4096
    }
}

/// Parses a port number for the port filters.
pub fn parse_port(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        Ok(p) => Err(format!("port {p} is out of range: ports are 1 to 65535")),
        Err(_) => Err(format!("'{text}' is not a port number (1 to 65535)")),
    }
}
