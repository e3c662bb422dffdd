//! The report (`portrace report`, `--summary`) as an observer: it is fed the sockets,
//! transitions and losses the output is fed, and ends where the stream ends.

use std::io;

use super::Observer;
use crate::record::{Lost, SocketRecord, Timestamp, Transition};
use crate::report::Report;

impl Observer for Report {
    fn socket(&mut self, s: &SocketRecord) -> io::Result<()> {
        self.add_socket(s);
        Ok(())
    }
    fn transition(&mut self, t: &Transition) -> io::Result<()> {
        self.add_transition(t);
        Ok(())
    }
    fn lost(&mut self, lost: &Lost) -> io::Result<()> {
        self.add_lost(lost);
        Ok(())
    }
    fn finish(&mut self, end: Timestamp) {
        Report::finish(self, end);
    }
}
