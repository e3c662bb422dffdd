//! How long a live run took to start, stage by stage, from the moment `main` began to the
//! first record shown: what `--verbose` prints, and what the benchmark's start-up figure
//! is made of.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static BEGAN: OnceLock<Instant> = OnceLock::new();

/// Notes that the program began: called first thing in `main`. Later calls change nothing.
pub fn began() {
    BEGAN.get_or_init(Instant::now);
}

/// The stages of one start-up, in order.
#[derive(Debug)]
pub struct Startup {
    began: Instant,
    last: Instant,
    stages: Vec<Stage>,
}

/// A stage, and the parts of it measured inside it (on other threads, some of them).
#[derive(Debug)]
pub struct Stage {
    pub name: &'static str,
    pub took: Duration,
    pub parts: Vec<(&'static str, Duration)>,
}

impl Default for Startup {
    fn default() -> Self {
        Startup::new()
    }
}

impl Startup {
    /// A start-up measured from [`began`] (or from now, if `main` did not note it).
    pub fn new() -> Startup {
        let began = *BEGAN.get_or_init(Instant::now);
        Startup { began, last: began, stages: Vec::new() }
    }

    /// Ends the stage `name` now: it lasted since the previous stage ended.
    pub fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.stages.push(Stage { name, took: now.saturating_duration_since(self.last), parts: Vec::new() });
        self.last = now;
    }

    /// Adds a part of the last stage, measured inside it.
    pub fn part(&mut self, name: &'static str, took: Duration) {
        if let Some(stage) = self.stages.last_mut() {
            stage.parts.push((name, took));
        }
    }

    /// From the beginning to the end of the last stage.
    pub fn total(&self) -> Duration {
        self.last.saturating_duration_since(self.began)
    }

    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// One line: `started in 93.1 ms: checks 1.2 ms, kernel offsets 10.0 ms (BTF 9.8 ms),
    /// loading 40.2 ms (...), ...`.
    pub fn describe(&self) -> String {
        let mut text = format!("started in {}", ms(self.total()));
        for (i, stage) in self.stages.iter().enumerate() {
            let _ = write!(text, "{}{} {}", if i == 0 { ": " } else { ", " }, stage.name, ms(stage.took));
            for (j, (name, took)) in stage.parts.iter().enumerate() {
                let _ = write!(text, "{}{name} {}", if j == 0 { " (" } else { ", " }, ms(*took));
            }
            if !stage.parts.is_empty() {
                text.push(')');
            }
        }
        text
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_add_up_to_the_total_and_parts_do_not_move_the_clock() {
        let mut s = Startup::new();
        std::thread::sleep(Duration::from_millis(2));
        s.mark("checks");
        s.part("BTF", Duration::from_millis(7));
        s.part("kallsyms", Duration::from_micros(2500));
        std::thread::sleep(Duration::from_millis(2));
        s.mark("loading");
        let marked: Duration = s.stages().iter().map(|stage| stage.took).sum();
        assert_eq!(s.total(), marked, "{s:?}");
        assert!(s.stages()[0].took >= Duration::from_millis(2));
        let line = s.describe();
        assert!(line.starts_with("started in "), "{line}");
        assert!(line.contains(" ms (BTF 7.0 ms, kallsyms 2.5 ms), loading "), "{line}");
    }
}
