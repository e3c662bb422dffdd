//! The alert flags, shared by live tracing, `record`, `replay` and `report`: thresholds,
//! the allowlist, and what alerts do to the exit status, validated into [`AlertOptions`].

use std::time::Duration;

use crate::alerts::rules::{Expect, Rules};
use crate::alerts::sink::AlertOptions;
use crate::alerts::AlertKind;
use crate::units::parse_duration;

/// Alert detectors: thresholds, the allowlist, and what alerts do to the exit status.
/// Defaults are in docs/usage.md's table (Alerts); a rules file sets them too, and flags override it.
#[derive(Debug, Default, clap::Args)]
#[command(next_help_heading = "Alerts")]
pub struct AlertArgs {
    /// Read thresholds and expectations from this TOML rules file (see docs/usage.md).
    #[arg(long = "rules", value_name = "FILE", value_parser = parse_rules_file)]
    pub rules: Option<Rules>,

    /// Allow processes named NAME (command name or executable file name) to listen on,
    /// serve or connect to PORT (`*`: any). With any --expect, other owners of listening
    /// or established sockets alert (repeatable).
    #[arg(long = "expect", value_name = "NAME:PORT", value_parser = Expect::parse)]
    pub expect: Vec<Expect>,

    /// Warn when a script interpreter (python, perl, node, ...) opens an outbound
    /// connection, as when a shell does (off by default: most services are interpreters).
    #[arg(long)]
    pub alert_interpreters: bool,

    /// Exit with status 3 when any alert fired.
    #[arg(long)]
    pub fail_on_alert: bool,

    /// Turn off one detector: scan, new-listener, unexpected-owner, close-wait-leak,
    /// time-wait-pileup, handshake-trouble (repeatable).
    #[arg(long = "disable-alert", value_name = "KIND", value_parser = AlertKind::parse)]
    pub disable: Vec<AlertKind>,

    /// Run no detector at all.
    #[arg(long, conflicts_with_all = ["fail_on_alert", "disable"])]
    pub no_alerts: bool,

    /// Scan: SYNs to this many distinct destinations (address:port) within the window
    /// [default: 20].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub scan_targets: Option<u32>,

    /// Scan: or connects failing to this many distinct destinations within the window
    /// [default: 10]...
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub scan_failures: Option<u32>,

    /// Scan: ...at this failure rate or more, in percent [default: 50].
    #[arg(long, value_name = "PCT", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub scan_failure_rate: Option<u32>,

    /// Scan: the window, exact to within 1/64 of its length [default: 10s].
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    pub scan_window: Option<Duration>,

    /// CLOSE_WAIT leak: sockets in CLOSE_WAIT this long [default: 30s].
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    pub close_wait_after: Option<Duration>,

    /// TIME_WAIT pile-up: TIME_WAIT sockets towards one peer, in percent of the local port
    /// range [default: 50]; or the range used up within 60 s at the current rate.
    #[arg(long, value_name = "PCT", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub time_wait_percent: Option<u32>,

    /// TIME_WAIT pile-up: this many instead of a percentage, whatever the range.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub time_wait_count: Option<u32>,

    /// Handshake trouble: this many failed handshakes per listener or destination within
    /// the window [default: 5]...
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub handshake_failures: Option<u32>,

    /// Handshake trouble: ...being at least this percentage of the handshakes [default: 50].
    #[arg(long, value_name = "PCT", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub handshake_failure_rate: Option<u32>,

    /// Handshake trouble: the window, exact to within 1/64 of its length [default: 60s].
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    pub handshake_window: Option<Duration>,

    /// A subject (process, listener, destination, peer) alerts again only after this long
    /// [default: 60s].
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    pub alert_repeat: Option<Duration>,
}

impl AlertArgs {
    /// The options: the rules file (or the defaults), then the flags over it.
    pub fn into_options(self, only: bool) -> AlertOptions {
        let mut r = self.rules.unwrap_or_default();
        let ns = |d: Duration| d.as_nanos() as u64;
        r.expect.extend(self.expect);
        r.interpreters |= self.alert_interpreters;
        for kind in self.disable {
            if !r.disabled.contains(&kind) {
                r.disabled.push(kind);
            }
        }
        if let Some(n) = self.scan_targets {
            r.scan.targets = n;
        }
        if let Some(n) = self.scan_failures {
            r.scan.failures = n;
        }
        if let Some(n) = self.scan_failure_rate {
            r.scan.failure_pct = n;
        }
        if let Some(d) = self.scan_window {
            r.scan.window_ns = ns(d);
        }
        if let Some(d) = self.close_wait_after {
            r.close_wait.after_ns = ns(d);
        }
        if let Some(n) = self.time_wait_percent {
            r.time_wait.percent = n;
        }
        if let Some(n) = self.time_wait_count {
            r.time_wait.count = Some(n);
        }
        if let Some(n) = self.handshake_failures {
            r.handshake.failures = n;
        }
        if let Some(n) = self.handshake_failure_rate {
            r.handshake.failure_pct = n;
        }
        if let Some(d) = self.handshake_window {
            r.handshake.window_ns = ns(d);
        }
        if let Some(d) = self.alert_repeat {
            r.repeat_ns = ns(d);
        }
        AlertOptions { enabled: !self.no_alerts, rules: r, only, fail: self.fail_on_alert }
    }
}

/// Reads the rules file with the user's own rights ([`crate::privilege::with_user_rights`]):
/// a binary given capabilities must not read, and quote in a parse error, a file its user
/// could not read. The error is escaped for the terminal.
fn parse_rules_file(path: &str) -> Result<Rules, String> {
    crate::privilege::with_user_rights(|| Rules::from_file(std::path::Path::new(path)))
        .map_err(|e| format!("cannot lower this process's capabilities to read {path} with your rights: {e}"))?
        .map_err(|e| e.split('\n').map(|line| crate::escape::text(line)).collect::<Vec<_>>().join("\n"))
}
