//! What `/healthz` answers: healthy while tracing runs with every kernel program the
//! metrics need, and the ring buffer is being read. Shared between the tracing thread,
//! which reports, and the HTTP thread, which asks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::clock::monotonic_ns;
use crate::features::{Feature, Features};

/// The ring buffer unread this long makes the tracer unhealthy.
pub const STALL_NS: u64 = 5_000_000_000;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Loading,
    Tracing,
    /// Tracing started without a feature the metrics need: why.
    Missing(String),
    Stopped,
}

/// The tracer's health.
#[derive(Debug)]
pub struct Health {
    phase: Mutex<Phase>,
    /// When the ring buffer was last read (monotonic ns).
    last_read_ns: AtomicU64,
}

impl Default for Health {
    fn default() -> Health {
        Health { phase: Mutex::new(Phase::Loading), last_read_ns: AtomicU64::new(0) }
    }
}

/// The features the metrics need: every transition, why connections end, and, with owner
/// labels, the owners.
pub fn needed(owner_labels: bool) -> Vec<Feature> {
    let mut needed = vec![Feature::LiveTimeline, Feature::CloseReasons];
    if owner_labels {
        needed.push(Feature::Owners);
    }
    needed
}

impl Health {
    fn set(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase;
    }

    /// Tracing has started with `features`; `needed` must all be on.
    pub fn started(&self, features: &Features, needed: &[Feature]) {
        let missing: Vec<String> = needed
            .iter()
            .filter(|&&f| !features.is_on(f))
            .map(|&f| match features.get(f).and_then(|s| s.reason.as_deref()) {
                Some(why) => format!("{} is off: {}", f.name(), crate::features::printable(why)),
                None => format!("{} is off", f.name()),
            })
            .collect();
        self.read();
        self.set(if missing.is_empty() { Phase::Tracing } else { Phase::Missing(missing.join("; ")) });
    }

    /// The ring buffer was just read.
    pub fn read(&self) {
        self.last_read_ns.store(monotonic_ns(), Ordering::Relaxed);
    }

    pub fn stopped(&self) {
        self.set(Phase::Stopped);
    }

    /// `Ok` when healthy at `now_ns`, else why not.
    pub fn verdict(&self, now_ns: u64) -> Result<(), String> {
        match &*self.phase.lock().unwrap_or_else(|p| p.into_inner()) {
            Phase::Loading => Err("the kernel programs are not attached yet".into()),
            Phase::Missing(why) => Err(format!("tracing without what the metrics need: {why}")),
            Phase::Stopped => Err("tracing has stopped".into()),
            Phase::Tracing => {
                let last = self.last_read_ns.load(Ordering::Relaxed);
                let idle = now_ns.saturating_sub(last);
                if idle > STALL_NS {
                    Err(format!("the ring buffer has not been read for {} s", idle / 1_000_000_000))
                } else {
                    Ok(())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_on() -> Features {
        let mut f = Features::default();
        for feature in [Feature::LiveTimeline, Feature::CloseReasons, Feature::Owners] {
            f.on(feature);
        }
        f
    }

    #[test]
    fn healthy_only_while_tracing_with_what_is_needed() {
        let h = Health::default();
        assert!(h.verdict(monotonic_ns()).unwrap_err().contains("not attached"));
        h.started(&all_on(), &needed(true));
        assert_eq!(h.verdict(monotonic_ns()), Ok(()));
        h.stopped();
        assert_eq!(h.verdict(monotonic_ns()), Err("tracing has stopped".into()));
    }

    #[test]
    fn a_missing_feature_is_named_with_its_reason() {
        let h = Health::default();
        let mut f = all_on();
        f.off(Feature::Owners, "no BTF");
        h.started(&f, &needed(false));
        assert_eq!(h.verdict(monotonic_ns()), Ok(()), "owners are not needed without owner labels");
        h.started(&f, &needed(true));
        let why = h.verdict(monotonic_ns()).unwrap_err();
        assert!(why.contains("owners is off: no BTF"), "{why}");
    }

    #[test]
    fn a_stalled_reader_is_unhealthy() {
        let h = Health::default();
        h.started(&all_on(), &needed(false));
        let why = h.verdict(monotonic_ns() + STALL_NS + 2_000_000_000).unwrap_err();
        assert!(why.contains("has not been read for"), "{why}");
    }
}
