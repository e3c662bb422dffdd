//! The alert rules: every detector's thresholds with their defaults, the `--expect`
//! allowlist, and the TOML rules file (`--rules FILE`) that sets them. Unknown keys are
//! errors that name the key and the file; every value is validated.
//!
//! A `window` is exact to within 1/64 of its length: an event is counted until it is as
//! old as the window, and may be counted for up to 1/64 of it longer ([`super::window`]).
//!
//! ```toml
//! repeat = "60s"               # a subject alerts again only after this long
//! disable = ["new_listener"]   # detectors to turn off
//! expect = ["nginx:443", "sshd:22", "backup:*"]
//! interpreters = false         # true: interpreters connecting out alert, as shells do
//!
//! [scan]
//! window = "10s"
//! targets = 20                 # distinct destinations (address:port) of SYNs in the window
//! failures = 10                # distinct destinations whose connect failed in the window
//! failure_rate = 50            # percent of the connects that ended in the window
//!
//! [close_wait]
//! after = "30s"
//!
//! [time_wait]
//! percent = 50                 # of the local port range, per peer
//! # count = 1000               # or an absolute number of sockets
//! lifetime = "60s"             # the kernel's TIME_WAIT length
//! window = "10s"               # over which the rate is measured
//!
//! [handshake]
//! window = "60s"
//! failures = 5
//! failure_rate = 50
//! ```

use std::path::Path;

use serde::Deserialize;

use super::AlertKind;

const SECOND: u64 = 1_000_000_000;

/// One `--expect NAME:PORT`: processes named NAME may listen on, serve or connect to
/// PORT (`None`: any port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect {
    pub name: String,
    pub port: Option<u16>,
}

impl Expect {
    /// Parses `NAME:PORT` or `NAME:*`.
    pub fn parse(text: &str) -> Result<Expect, String> {
        let (name, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("'{text}' is not NAME:PORT (e.g. nginx:443, or sshd:* for any port)"))?;
        if name.is_empty() || name.contains('/') {
            return Err(format!(
                "'{text}': '{name}' is not a program name (the command name, or the executable's file name)"
            ));
        }
        let port = match port {
            "*" => None,
            p => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or_else(|| format!("'{text}': '{p}' is not a port (1-65535, or * for any)"))?,
            ),
        };
        Ok(Expect { name: name.to_string(), port })
    }

    /// Whether this expectation allows a process with these names on `port`. A command
    /// name is at most 15 bytes: a longer NAME matches the command name it starts with.
    pub fn allows(&self, comm: &str, exe_name: Option<&str>, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let truncated = &self.name.as_bytes()[..self.name.len().min(15)];
        comm == self.name || (self.name.len() > 15 && comm.as_bytes() == truncated) || exe_name == Some(self.name.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanRules {
    pub window_ns: u64,
    pub targets: u32,
    pub failures: u32,
    pub failure_pct: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseWaitRules {
    pub after_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeWaitRules {
    pub percent: u32,
    pub count: Option<u32>,
    pub lifetime_ns: u64,
    pub window_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeRules {
    pub window_ns: u64,
    pub failures: u32,
    pub failure_pct: u32,
}

/// Every detector's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    pub repeat_ns: u64,
    pub disabled: Vec<AlertKind>,
    pub expect: Vec<Expect>,
    /// Whether a script interpreter (python, node, ...) opening an outbound connection is
    /// an `unexpected_owner` warning, as a shell's is. Off by default: most services are
    /// interpreters, and their connections are ordinary traffic.
    pub interpreters: bool,
    pub scan: ScanRules,
    pub close_wait: CloseWaitRules,
    pub time_wait: TimeWaitRules,
    pub handshake: HandshakeRules,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            repeat_ns: 60 * SECOND,
            disabled: Vec::new(),
            expect: Vec::new(),
            interpreters: false,
            scan: ScanRules { window_ns: 10 * SECOND, targets: 20, failures: 10, failure_pct: 50 },
            close_wait: CloseWaitRules { after_ns: 30 * SECOND },
            time_wait: TimeWaitRules { percent: 50, count: None, lifetime_ns: 60 * SECOND, window_ns: 10 * SECOND },
            handshake: HandshakeRules { window_ns: 60 * SECOND, failures: 5, failure_pct: 50 },
        }
    }
}

impl Rules {
    pub fn enabled(&self, kind: AlertKind) -> bool {
        !self.disabled.contains(&kind)
    }

    /// The rules of a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Rules, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read rules file {}: {e}", path.display()))?;
        Rules::from_toml(&text).map_err(|e| format!("rules file {}: {e}", path.display()))
    }

    /// The rules of a TOML document over the defaults.
    pub fn from_toml(text: &str) -> Result<Rules, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
        let mut rules = Rules::default();
        if let Some(d) = file.repeat {
            rules.repeat_ns = d.positive("repeat")?;
        }
        for name in file.disable.unwrap_or_default() {
            let kind = AlertKind::parse(&name).map_err(|e| format!("disable: {e}"))?;
            if !rules.disabled.contains(&kind) {
                rules.disabled.push(kind);
            }
        }
        if let Some(on) = file.interpreters {
            rules.interpreters = on;
        }
        for e in file.expect.unwrap_or_default() {
            rules.expect.push(Expect::parse(&e).map_err(|e| format!("expect: {e}"))?);
        }
        if let Some(s) = file.scan {
            set_duration(&mut rules.scan.window_ns, s.window, "scan.window")?;
            set_count(&mut rules.scan.targets, s.targets, "scan.targets")?;
            set_count(&mut rules.scan.failures, s.failures, "scan.failures")?;
            set_percent(&mut rules.scan.failure_pct, s.failure_rate, "scan.failure_rate")?;
        }
        if let Some(c) = file.close_wait {
            set_duration(&mut rules.close_wait.after_ns, c.after, "close_wait.after")?;
        }
        if let Some(t) = file.time_wait {
            set_percent(&mut rules.time_wait.percent, t.percent, "time_wait.percent")?;
            if let Some(n) = t.count {
                let mut count = 0;
                set_count(&mut count, Some(n), "time_wait.count")?;
                rules.time_wait.count = Some(count);
            }
            set_duration(&mut rules.time_wait.lifetime_ns, t.lifetime, "time_wait.lifetime")?;
            set_duration(&mut rules.time_wait.window_ns, t.window, "time_wait.window")?;
        }
        if let Some(h) = file.handshake {
            set_duration(&mut rules.handshake.window_ns, h.window, "handshake.window")?;
            set_count(&mut rules.handshake.failures, h.failures, "handshake.failures")?;
            set_percent(&mut rules.handshake.failure_pct, h.failure_rate, "handshake.failure_rate")?;
        }
        Ok(rules)
    }
}

fn set_duration(slot: &mut u64, value: Option<Duration>, key: &str) -> Result<(), String> {
    if let Some(d) = value {
        *slot = d.positive(key)?;
    }
    Ok(())
}

fn set_count(slot: &mut u32, value: Option<i64>, key: &str) -> Result<(), String> {
    if let Some(n) = value {
        *slot = u32::try_from(n)
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| format!("{key} = {n}: must be a whole number of at least 1"))?;
    }
    Ok(())
}

fn set_percent(slot: &mut u32, value: Option<i64>, key: &str) -> Result<(), String> {
    if let Some(n) = value {
        *slot = u32::try_from(n)
            .ok()
            .filter(|&n| (1..=100).contains(&n))
            .ok_or_else(|| format!("{key} = {n}: must be a percentage from 1 to 100"))?;
    }
    Ok(())
}

/// A duration in the file: `"10s"`, `"250ms"`, `"5m"`, or a number of seconds.
#[derive(Debug)]
enum Duration {
    Text(String),
    Seconds(f64),
}

impl Duration {
    fn positive(&self, key: &str) -> Result<u64, String> {
        let parsed = match self {
            Duration::Text(t) => crate::units::parse_duration(t),
            Duration::Seconds(s) => crate::units::parse_duration(&s.to_string()),
        };
        parsed.map(|d| d.as_nanos() as u64).map_err(|e| format!("{key}: {e}"))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as \"10s\", \"250ms\", \"5m\", or a number of seconds")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                Ok(Duration::Text(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
                Ok(Duration::Seconds(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
                Ok(Duration::Seconds(v as f64))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Duration, E> {
                Ok(Duration::Seconds(v))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    repeat: Option<Duration>,
    disable: Option<Vec<String>>,
    expect: Option<Vec<String>>,
    interpreters: Option<bool>,
    scan: Option<ScanFile>,
    close_wait: Option<CloseWaitFile>,
    time_wait: Option<TimeWaitFile>,
    handshake: Option<HandshakeFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanFile {
    window: Option<Duration>,
    targets: Option<i64>,
    failures: Option<i64>,
    failure_rate: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseWaitFile {
    after: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeWaitFile {
    percent: Option<i64>,
    count: Option<i64>,
    lifetime: Option<Duration>,
    window: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HandshakeFile {
    window: Option<Duration>,
    failures: Option<i64>,
    failure_rate: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_is_the_defaults() {
        let doc = include_str!("rules.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.strip_prefix("//!").unwrap_or(l).trim_start())
            .collect::<Vec<_>>()
            .join("\n");
        let rules = Rules::from_toml(&doc).unwrap();
        let expected = Rules {
            disabled: vec![AlertKind::NewListener],
            expect: vec![
                Expect { name: "nginx".into(), port: Some(443) },
                Expect { name: "sshd".into(), port: Some(22) },
                Expect { name: "backup".into(), port: None },
            ],
            ..Rules::default()
        };
        assert_eq!(rules, expected);
    }

    #[test]
    fn values_are_read_and_overlaid_on_the_defaults() {
        let rules = Rules::from_toml(
            "repeat = 5\n[close_wait]\nafter = \"2s\"\n[time_wait]\ncount = 200\n[scan]\ntargets = 3\nwindow = 1.5",
        )
        .unwrap();
        assert_eq!(rules.repeat_ns, 5 * SECOND);
        assert_eq!(rules.close_wait.after_ns, 2 * SECOND);
        assert_eq!(rules.time_wait.count, Some(200));
        assert_eq!(rules.time_wait.percent, 50);
        assert_eq!((rules.scan.targets, rules.scan.window_ns, rules.scan.failures), (3, 1_500_000_000, 10));
    }

    #[test]
    fn bad_files_name_the_key() {
        let cases = [
            ("colour = 1", "unknown field `colour`"),
            ("[scan]\ntarget = 3", "unknown field `target`"),
            ("[scan]\ntargets = 0", "scan.targets = 0"),
            ("[handshake]\nfailure_rate = 150", "handshake.failure_rate = 150"),
            ("[close_wait]\nafter = \"soon\"", "close_wait.after: 'soon' is not a duration"),
            ("expect = [\"nginx\"]", "'nginx' is not NAME:PORT"),
            ("expect = [\"nginx:http\"]", "'http' is not a port"),
            ("disable = [\"worms\"]", "unknown alert 'worms'"),
            ("[time_wait]\nwindow = true", "a duration such as"),
        ];
        for (text, expected) in cases {
            let err = Rules::from_toml(text).expect_err(text);
            assert!(err.contains(expected), "{text:?}: {err}");
        }
        let err = Rules::from_file(Path::new("/nonexistent/rules.toml")).unwrap_err();
        assert!(err.contains("/nonexistent/rules.toml"), "{err}");
    }

    #[test]
    fn expectations_match_comm_or_exe_and_port() {
        let e = Expect::parse("nginx:443").unwrap();
        assert!(e.allows("nginx", None, 443));
        assert!(!e.allows("nginx", None, 80));
        assert!(!e.allows("apache2", None, 443));
        assert!(e.allows("worker", Some("nginx"), 443));
        let any = Expect::parse("a-very-long-program-name:*").unwrap();
        assert!(any.allows("a-very-long-pro", None, 1));
        assert!(Expect::parse("x:0").is_err());
        assert!(Expect::parse("/usr/bin/x:1").unwrap_err().contains("not a program name"));
    }
}
