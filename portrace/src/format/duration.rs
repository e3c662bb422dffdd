//! Durations for people: [`HumanDuration`] with three significant digits, for timelines,
//! reports and diagrams, and [`CompactDuration`] in the fewest characters, for `top`'s
//! columns. From a minute on they read the same.

use std::fmt;

/// A duration in nanoseconds for people: three significant digits, truncated, in ns, us,
/// ms or s below a minute (`850ns`, `3.21us`, `84.1us`, `841us`, `1.23ms`, `2.30s`,
/// `12.3s`), then `2m03s`, `1h02m`, `3d04h`. Digits are truncated, not rounded, so the
/// text never claims more time than passed. The longest is `213503d23h` (`u64::MAX`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub u64);

const US: u64 = 1_000;
const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;
const MIN: u64 = 60 * S;
const H: u64 = 60 * MIN;
const D: u64 = 24 * H;

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0;
        if ns < US {
            write!(f, "{ns}ns")
        } else if ns < 10 * US {
            write!(f, "{}.{:02}us", ns / US, ns % US / 10)
        } else if ns < 100 * US {
            write!(f, "{}.{}us", ns / US, ns % US / 100)
        } else if ns < MS {
            write!(f, "{}us", ns / US)
        } else if ns < 10 * MS {
            write!(f, "{}.{:02}ms", ns / MS, ns % MS / 10_000)
        } else if ns < 100 * MS {
            write!(f, "{}.{}ms", ns / MS, ns % MS / 100_000)
        } else if ns < S {
            write!(f, "{}ms", ns / MS)
        } else if ns < 10 * S {
            write!(f, "{}.{:02}s", ns / S, ns % S / 10_000_000)
        } else if ns < MIN {
            write!(f, "{}.{}s", ns / S, ns % S / 100_000_000)
        } else {
            minutes_and_up(f, ns)
        }
    }
}

/// A duration in nanoseconds in the fewest characters that still say it, truncated:
/// `850us`, `12ms`, `4.2s`, then `4m05s`, `2h03m`, `3d04h` as [`HumanDuration`] (below a
/// microsecond: `0us`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactDuration(pub u64);

impl fmt::Display for CompactDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0;
        if ns < MS {
            write!(f, "{}us", ns / US)
        } else if ns < S {
            write!(f, "{}ms", ns / MS)
        } else if ns < MIN {
            write!(f, "{}.{}s", ns / S, ns % S / 100_000_000)
        } else {
            minutes_and_up(f, ns)
        }
    }
}

/// `2m03s`, `1h02m`, `3d04h`: the two largest units, for a minute and more.
fn minutes_and_up(f: &mut fmt::Formatter<'_>, ns: u64) -> fmt::Result {
    if ns < H {
        write!(f, "{}m{:02}s", ns / MIN, ns % MIN / S)
    } else if ns < D {
        write!(f, "{}h{:02}m", ns / H, ns % H / MIN)
    } else {
        write!(f, "{}d{:02}h", ns / D, ns % D / H)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn human(ns: u64) -> String {
        HumanDuration(ns).to_string()
    }

    #[test]
    fn durations_pick_a_unit_by_size() {
        assert_eq!(human(0), "0ns");
        assert_eq!(human(850), "850ns");
        assert_eq!(human(3_000), "3.00us");
        assert_eq!(human(3_219), "3.21us");
        assert_eq!(human(84_123), "84.1us");
        assert_eq!(human(841_999), "841us");
        assert_eq!(human(1_234_567), "1.23ms");
        assert_eq!(human(12_345_678), "12.3ms");
        assert_eq!(human(123_456_789), "123ms");
        assert_eq!(human(1_500_000_000), "1.50s");
        assert_eq!(human(12_345_678_901), "12.3s");
        assert_eq!(human(123_000_000_000), "2m03s");
        assert_eq!(human(3_599_999_999_999), "59m59s");
        assert_eq!(human(3_720_000_000_000), "1h02m");
        assert_eq!(human(273_600_000_000_000), "3d04h");
    }

    #[test]
    fn durations_truncate_at_unit_boundaries() {
        assert_eq!(human(999), "999ns");
        assert_eq!(human(9_999), "9.99us");
        assert_eq!(human(99_999), "99.9us");
        assert_eq!(human(999_999), "999us");
        assert_eq!(human(59_999_999_999), "59.9s");
    }
}
