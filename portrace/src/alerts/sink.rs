//! A run's alerts: how it handles them ([`AlertOptions`]), and a shared hold on its
//! [`Detectors`] ([`AlertHandle`]): the pipeline feeds them every record (see
//! `pipeline/alerts.rs`), and the end of the run reads them for the summary, the report's
//! Alerts section and `--fail-on-alert`.

use std::sync::{Arc, Mutex, MutexGuard};

use super::rules::Rules;
use super::{Detectors, PortRange};

/// How a run handles alerts: which rules, whether only alerts are shown, whether any
/// alert makes the run fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertOptions {
    /// `false` with `--no-alerts`.
    pub enabled: bool,
    pub rules: Rules,
    /// `--alerts-only`: the timeline shows alerts (and losses) only.
    pub only: bool,
    /// `--fail-on-alert`.
    pub fail: bool,
}

impl Default for AlertOptions {
    fn default() -> AlertOptions {
        AlertOptions { enabled: true, rules: Rules::default(), only: false, fail: false }
    }
}

impl AlertOptions {
    /// Whether the output shows only alerts (and losses): `--alerts-only` with the
    /// detectors on (with `--no-alerts`, it has nothing to keep).
    pub fn output_only(&self) -> bool {
        self.enabled && self.only
    }
}

/// A shared hold on a run's detectors.
#[derive(Clone)]
pub struct AlertHandle(Arc<Mutex<Detectors>>);

impl AlertHandle {
    pub fn new(rules: Rules, fallback_range: PortRange) -> AlertHandle {
        AlertHandle(Arc::new(Mutex::new(Detectors::new(rules, fallback_range))))
    }

    /// The detectors (a poisoned lock is taken over: the detectors hold no invariant a
    /// panic elsewhere could break).
    pub fn lock(&self) -> MutexGuard<'_, Detectors> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
