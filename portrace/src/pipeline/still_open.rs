//! The traced command's sockets still open ([`StillOpen`]) as an observer of transitions.

use std::io;

use super::Observer;
use crate::record::Transition;
use crate::still_open::StillOpen;

impl Observer for StillOpen {
    fn transition(&mut self, t: &Transition) -> io::Result<()> {
        self.add(t);
        Ok(())
    }
}
