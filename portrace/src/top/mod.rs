//! `portrace top`: a full-screen view of the host's TCP sockets, updated by the traced
//! transitions themselves, or of a recording the user moves through in time. Split as
//! model (state, no terminal), render (ratatui, from the model only), input (keys to
//! actions), terminal (setup and guaranteed restoration), app (the loop), and the two
//! sources: live (the live run into a channel) and browse (a recording read page by page,
//! in bounded memory).

pub mod app;
pub mod browse;
pub mod input;
pub mod live;
pub mod model;
pub mod render;
pub mod terminal;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use crate::filter::FilterSpec;

/// `portrace top`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopConfig {
    /// A recording to browse; live when `None`.
    pub from: Option<PathBuf>,
    pub salvage: bool,
    pub ring_size: u32,
    pub filter: FilterSpec,
}

/// Runs `portrace top` as configured.
pub fn top(config: TopConfig) -> anyhow::Result<()> {
    terminal::check_terminal()?;
    match config.from {
        Some(path) => browse::browse(&path, config.filter, config.salvage),
        None => live::live(config),
    }
}
