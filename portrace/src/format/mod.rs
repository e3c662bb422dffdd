//! How portrace writes values, in one place: durations for people ([`HumanDuration`],
//! [`CompactDuration`]), errno values ([`errno`]), JSON strings and documents ([`json`]),
//! and numbers and short texts appended to a line buffer ([`line`]). Every format, report
//! and message that shows one of these goes through here, so that one value always reads
//! the same.

pub mod duration;
pub mod errno;
pub mod json;
pub mod line;

pub use duration::{CompactDuration, HumanDuration};
