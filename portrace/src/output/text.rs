//! The text format for people: this module owns the aligned column layout, the human
//! durations of the PREV column, the notes on how connections ended, the lost-record
//! lines, the block of sockets that existed at start, and the optional ANSI colours.
//!
//! Transitions are shown under `TIME PID COMM SOCKET LOCAL REMOTE TRANSITION PREV NOTE`,
//! where PID and COMM are the socket's owner (`-` when unknown), not the task that happened
//! to be on the CPU; PREV has a `>` in front when it is a lower bound (the socket predates
//! the trace), and NOTE, free text at the end of the line, says why the connection ended.
//! With `--explain`, ` -- ` and the transition's cause in plain words end the line.
//! The inventory sockets, when there are any, come first in a block of their own, like
//! `ss` with owners: `STATE LOCAL REMOTE PID COMM SOCKET`; a blank line separates it from
//! what follows.
//!
//! Columns that can outgrow their starting width (PID, SOCKET, LOCAL, REMOTE, TRANSITION,
//! PREV) widen when a longer value arrives, and the header is printed again at that point,
//! so every line under a header lines up with it; they never shrink. Padding is computed
//! on the visible text, never on escape codes. Command names are shown byte by byte with
//! anything but printable ASCII replaced by `?`, so that a process name cannot move the
//! columns or send escape sequences to the terminal.

use std::fmt;
use std::io::{self, Write};

use super::{AddrText, Sink, Start, TextOptions};
use crate::clock::LocalTime;
use crate::format::HumanDuration;
use crate::format::errno::push_tcp_name;
use crate::record::{EndReason, LossCause, Lost, Owner, SocketRecord, Transition};
use crate::summary::Summary;
use crate::tcp_state::TcpState;

const TIME_WIDTH: usize = crate::clock::TimeOfDay::LEN;
/// The kernel keeps at most 15 bytes of a command name.
const COMM_WIDTH: usize = 15;
/// `NEW_SYN_RECV`, the longest state name.
const STATE_WIDTH: usize = 12;

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const BOLD_RED: &str = "\x1b[1;31m";

/// The widths of the transition columns that can grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Widths {
    pid: usize,
    socket: usize,
    local: usize,
    remote: usize,
    transition: usize,
    prev: usize,
}

impl Widths {
    const INITIAL: Widths = Widths {
        // pid_max is at most 4194304.
        pid: 7,
        socket: 6,
        // 255.255.255.255:65535
        local: 22,
        remote: 22,
        // ESTABLISHED -> CLOSE_WAIT, the longest transition the kernel reports in practice.
        transition: 25,
        // Every duration below a day fits, lower bounds included: `84.1us`, `>59m59s`.
        prev: 7,
    };

    fn max(self, other: Widths) -> Widths {
        Widths {
            pid: self.pid.max(other.pid),
            socket: self.socket.max(other.socket),
            local: self.local.max(other.local),
            remote: self.remote.max(other.remote),
            transition: self.transition.max(other.transition),
            prev: self.prev.max(other.prev),
        }
    }
}

/// The widths of the socket block's columns that can grow. SOCKET is last and unpadded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SocketWidths {
    local: usize,
    remote: usize,
    pid: usize,
}

impl SocketWidths {
    const INITIAL: SocketWidths = SocketWidths { local: 22, remote: 22, pid: 7 };

    fn max(self, other: SocketWidths) -> SocketWidths {
        SocketWidths {
            local: self.local.max(other.local),
            remote: self.remote.max(other.remote),
            pid: self.pid.max(other.pid),
        }
    }
}

pub(super) struct TextSink {
    out: Box<dyn Write + Send>,
    line: Vec<u8>,
    color: bool,
    local_time: LocalTime,
    /// `--explain`: each transition's cause at the end of its line.
    explain: bool,
    widths: Widths,
    /// The transition header is the last header printed.
    header_printed: bool,
    socket_widths: SocketWidths,
    /// The last line written belongs to the socket block.
    in_socket_block: bool,
    /// Anything at all was written.
    written: bool,
}

impl TextSink {
    pub(super) fn new(out: Box<dyn Write + Send>, options: TextOptions) -> TextSink {
        TextSink {
            out,
            line: Vec::with_capacity(256),
            color: options.color,
            local_time: LocalTime::new(options.zone),
            explain: options.explain,
            widths: Widths::INITIAL,
            header_printed: false,
            socket_widths: SocketWidths::INITIAL,
            in_socket_block: false,
            written: false,
        }
    }

    /// Appends the transition header for the current widths to `self.line`.
    fn push_header(&mut self) {
        let w = self.widths;
        let line = &mut self.line;
        if self.color {
            line.extend_from_slice(BOLD.as_bytes());
        }
        pad_right(line, b"TIME", TIME_WIDTH);
        line.push(b' ');
        pad_left(line, b"PID", w.pid);
        line.push(b' ');
        pad_right(line, b"COMM", COMM_WIDTH);
        line.push(b' ');
        pad_left(line, b"SOCKET", w.socket);
        line.push(b' ');
        pad_right(line, b"LOCAL", w.local);
        line.push(b' ');
        pad_right(line, b"REMOTE", w.remote);
        line.push(b' ');
        pad_right(line, b"TRANSITION", w.transition);
        line.push(b' ');
        pad_left(line, b"PREV", w.prev);
        line.extend_from_slice(b" NOTE");
        if self.color {
            line.extend_from_slice(RESET.as_bytes());
        }
        line.push(b'\n');
    }

    /// Appends the socket block's header for the current widths to `self.line`.
    fn push_socket_header(&mut self) {
        let w = self.socket_widths;
        let line = &mut self.line;
        if self.color {
            line.extend_from_slice(BOLD.as_bytes());
        }
        pad_right(line, b"STATE", STATE_WIDTH);
        line.push(b' ');
        pad_right(line, b"LOCAL", w.local);
        line.push(b' ');
        pad_right(line, b"REMOTE", w.remote);
        line.push(b' ');
        pad_right(line, b"PID", w.pid);
        line.push(b' ');
        pad_right(line, b"COMM", COMM_WIDTH);
        line.extend_from_slice(b" SOCKET");
        if self.color {
            line.extend_from_slice(RESET.as_bytes());
        }
        line.push(b'\n');
    }

    /// Starts a line that is not part of the socket block: clears `self.line` and, right
    /// after the block, puts the blank line that ends it.
    fn leave_socket_block(&mut self) {
        self.line.clear();
        if self.in_socket_block {
            self.in_socket_block = false;
            self.line.push(b'\n');
        }
    }

    /// Writes `self.line`.
    fn emit(&mut self) -> io::Result<()> {
        self.written = true;
        self.out.write_all(&self.line)
    }
}

impl Sink for TextSink {
    /// Says, before any record, what this run cannot show: one `#` line per feature off
    /// or limited. Nothing when the run has everything.
    fn start(&mut self, start: &Start) -> io::Result<()> {
        for note in start.features.notes() {
            self.line.clear();
            self.line.extend_from_slice(b"# ");
            self.line.extend_from_slice(crate::escape::text(&note).as_bytes());
            self.line.push(b'\n');
            self.out.write_all(&self.line)?;
        }
        Ok(())
    }

    fn socket(&mut self, s: &SocketRecord) -> io::Result<()> {
        let local = AddrText::with_port(s.ends.saddr, s.ends.sport);
        let remote = if s.ends.dport == 0 && s.ends.daddr.is_unspecified() {
            let mut any = AddrText::empty();
            any.push(b"*:*");
            any
        } else {
            AddrText::with_port(s.ends.daddr, s.ends.dport)
        };
        let mut pid_buf = itoa::Buffer::new();
        let pid = owner_pid(s.owner.as_ref(), &mut pid_buf);

        let needed = SocketWidths {
            local: local.as_bytes().len(),
            remote: remote.as_bytes().len(),
            pid: pid.len(),
        };
        let widths = self.socket_widths.max(needed);
        self.line.clear();
        if !self.in_socket_block {
            if self.written {
                self.line.push(b'\n');
            }
            self.in_socket_block = true;
            self.header_printed = false;
            self.socket_widths = widths;
            self.push_socket_header();
        } else if widths != self.socket_widths {
            self.socket_widths = widths;
            self.push_socket_header();
        }

        let line = &mut self.line;
        let state = s.state.name().as_bytes();
        if self.color {
            line.extend_from_slice(state_color(s.state).as_bytes());
            line.extend_from_slice(state);
            line.extend_from_slice(RESET.as_bytes());
        } else {
            line.extend_from_slice(state);
        }
        push_spaces(line, STATE_WIDTH.saturating_sub(state.len()));
        line.push(b' ');
        pad_right(line, local.as_bytes(), widths.local);
        line.push(b' ');
        pad_right(line, remote.as_bytes(), widths.remote);
        line.push(b' ');
        pad_right(line, pid, widths.pid);
        line.push(b' ');
        push_comm(line, s.owner.as_ref());
        line.push(b' ');
        line.extend_from_slice(itoa::Buffer::new().format(s.socket).as_bytes());
        line.push(b'\n');
        self.emit()
    }

    fn transition(&mut self, t: &Transition) -> io::Result<()> {
        let time = self.local_time.time_of_day(t.time.unix_ns);
        let mut pid_buf = itoa::Buffer::new();
        let pid = owner_pid(t.owner.as_ref(), &mut pid_buf);
        let mut socket_buf = itoa::Buffer::new();
        let socket = socket_buf.format(t.socket).as_bytes();
        let local = AddrText::with_port(t.ends.saddr, t.ends.sport);
        let remote = AddrText::with_port(t.ends.daddr, t.ends.dport);
        let transition_len = t.oldstate.name().len() + " -> ".len() + t.newstate.name().len();
        let mut prev = DurationText::default();
        match t.prev_state_ns {
            Some(ns) => {
                // The text always fits the buffer, so the writes cannot fail.
                if t.prev_state_at_least {
                    let written = fmt::Write::write_str(&mut prev, ">");
                    debug_assert!(written.is_ok());
                }
                let written =
                    fmt::Write::write_fmt(&mut prev, format_args!("{}", HumanDuration(ns)));
                debug_assert!(written.is_ok());
            }
            None => {
                let written = fmt::Write::write_str(&mut prev, "?");
                debug_assert!(written.is_ok());
            }
        }

        let needed = Widths {
            pid: pid.len(),
            socket: socket.len(),
            local: local.as_bytes().len(),
            remote: remote.as_bytes().len(),
            transition: transition_len,
            prev: prev.as_bytes().len(),
        };
        let widths = self.widths.max(needed);
        self.leave_socket_block();
        if widths != self.widths || !self.header_printed {
            self.widths = widths;
            self.header_printed = true;
            self.push_header();
        }

        let line = &mut self.line;
        line.extend_from_slice(time.as_bytes());
        line.push(b' ');
        pad_left(line, pid, widths.pid);
        line.push(b' ');
        push_comm(line, t.owner.as_ref());
        line.push(b' ');
        pad_left(line, socket, widths.socket);
        line.push(b' ');
        pad_right(line, local.as_bytes(), widths.local);
        line.push(b' ');
        pad_right(line, remote.as_bytes(), widths.remote);
        line.push(b' ');
        line.extend_from_slice(t.oldstate.name().as_bytes());
        line.extend_from_slice(b" -> ");
        if self.color {
            line.extend_from_slice(state_color(t.newstate).as_bytes());
            line.extend_from_slice(t.newstate.name().as_bytes());
            line.extend_from_slice(RESET.as_bytes());
        } else {
            line.extend_from_slice(t.newstate.name().as_bytes());
        }
        push_spaces(line, widths.transition - transition_len);
        line.push(b' ');
        pad_left(line, prev.as_bytes(), widths.prev);
        if t.reason.is_some() || t.error.is_some() {
            line.push(b' ');
            push_note(line, t);
        }
        if self.explain {
            line.extend_from_slice(b" -- ");
            line.extend_from_slice(crate::explain::explain(t).to_string().as_bytes());
        }
        line.push(b'\n');
        self.emit()
    }

    fn lost(&mut self, lost: &Lost) -> io::Result<()> {
        let time = self.local_time.time_of_day(lost.time.unix_ns);
        self.leave_socket_block();
        let line = &mut self.line;
        line.extend_from_slice(time.as_bytes());
        line.push(b' ');
        if self.color {
            line.extend_from_slice(BOLD_RED.as_bytes());
        }
        line.extend_from_slice(b"** ");
        line.extend_from_slice(itoa::Buffer::new().format(lost.count).as_bytes());
        line.extend_from_slice(if lost.count == 1 {
            b" transition lost: "
        } else {
            b" transitions lost: "
        });
        line.extend_from_slice(loss_reason(lost.cause).as_bytes());
        if self.color {
            line.extend_from_slice(RESET.as_bytes());
        }
        line.push(b'\n');
        self.emit()
    }

    fn alert(&mut self, alert: &crate::record::Alert) -> io::Result<()> {
        let time = self.local_time.time_of_day(alert.time.unix_ns);
        self.leave_socket_block();
        super::push_alert_text(&mut self.line, time.as_bytes(), alert, self.color);
        self.emit()
    }

    fn end(&mut self, _summary: &Summary) -> io::Result<()> {
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The owner's pid as text, `-` when the owner is unknown.
fn owner_pid<'a>(owner: Option<&Owner>, buf: &'a mut itoa::Buffer) -> &'a [u8] {
    match owner {
        Some(owner) => buf.format(owner.pid).as_bytes(),
        None => b"-",
    }
}

/// Appends the owner's command name, `-` when the owner is unknown, in the COMM column:
/// control characters and bytes that are not UTF-8 escaped ([`crate::escape`]), padded to
/// the column's width.
fn push_comm(line: &mut Vec<u8>, owner: Option<&Owner>) {
    let comm = owner.map_or(&b"-"[..], |owner| owner.comm.as_bytes());
    let width = crate::escape::push_bytes(line, comm);
    push_spaces(line, COMM_WIDTH.saturating_sub(width));
}

/// Appends the NOTE of a transition: why the connection ended (`connection refused`), the
/// error in parentheses (`(ECONNREFUSED)`), and for a connect that timed out, how many
/// times the SYN was sent again (`, after 6 retransmits`).
fn push_note(line: &mut Vec<u8>, t: &Transition) {
    if let Some(reason) = t.reason {
        line.extend_from_slice(reason.describe().as_bytes());
    }
    if let Some(errno) = t.error {
        if t.reason.is_some() {
            line.push(b' ');
        }
        line.push(b'(');
        push_tcp_name(line, errno);
        line.push(b')');
    }
    if t.reason == Some(EndReason::ConnectTimeout) && t.retransmits > 0 {
        line.extend_from_slice(b", after ");
        line.extend_from_slice(itoa::Buffer::new().format(t.retransmits).as_bytes());
        line.extend_from_slice(if t.retransmits == 1 { b" retransmit" } else { b" retransmits" });
    }
}

fn loss_reason(cause: LossCause) -> &'static str {
    match cause {
        LossCause::RingFull => "ring buffer full (try a larger --ring-size)",
        LossCause::Skipped => "skipped by the kernel (another BPF program was running on that CPU)",
        LossCause::Malformed => "malformed records",
        LossCause::Unreadable => "unreadable in the kernel (a socket field could not be read)",
        LossCause::TimeWait => "timewait timer records dropped, ring buffer full (a TIME_WAIT cut short meanwhile may show no end)",
        LossCause::Gap => "missing from sockets' sequences, counted nowhere by the kernel",
    }
}

/// The ANSI colour of a state, by what it means for the connection: green when up, yellow
/// while opening, blue when listening, magenta when the peer closed first, cyan when we
/// closed first, red when gone.
fn state_color(state: TcpState) -> &'static str {
    match state {
        TcpState::Established => "\x1b[32m",
        TcpState::SynSent | TcpState::SynRecv | TcpState::NewSynRecv => "\x1b[33m",
        TcpState::Listen => "\x1b[34m",
        TcpState::CloseWait | TcpState::LastAck | TcpState::Closing => "\x1b[35m",
        TcpState::FinWait1 | TcpState::FinWait2 | TcpState::TimeWait => "\x1b[36m",
        TcpState::Close => "\x1b[31m",
    }
}

fn push_spaces(line: &mut Vec<u8>, n: usize) {
    line.resize(line.len() + n, b' ');
}

/// Appends `text` left-aligned in `width` columns (all text here is ASCII: one byte, one
/// column).
fn pad_right(line: &mut Vec<u8>, text: &[u8], width: usize) {
    line.extend_from_slice(text);
    push_spaces(line, width.saturating_sub(text.len()));
}

/// Appends `text` right-aligned in `width` columns.
fn pad_left(line: &mut Vec<u8>, text: &[u8], width: usize) {
    push_spaces(line, width.saturating_sub(text.len()));
    line.extend_from_slice(text);
}

/// Room for any [`HumanDuration`] (`213503d23h` is the longest) after a `>`.
#[derive(Default)]
struct DurationText {
    buf: [u8; 16],
    len: usize,
}

impl DurationText {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl fmt::Write for DurationText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let slot = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_below_a_day_fit_the_column() {
        let mut ns = 1;
        while ns < 86_400_000_000_000 {
            let lower_bound = format!(">{}", HumanDuration(ns));
            assert!(lower_bound.len() <= Widths::INITIAL.prev, "{ns}: {lower_bound}");
            ns = ns * 3 + 1;
        }
        let mut longest = DurationText::default();
        fmt::Write::write_fmt(&mut longest, format_args!("{}", HumanDuration(u64::MAX))).unwrap();
        assert_eq!(longest.as_bytes(), b"213503d23h");
    }

    #[test]
    fn every_state_has_a_colour() {
        for state in TcpState::ALL {
            let code = state_color(state);
            assert!(code.starts_with("\x1b[3") && code.ends_with('m'), "{state}");
        }
        assert_eq!(state_color(TcpState::Established), "\x1b[32m");
        assert_eq!(state_color(TcpState::Close), "\x1b[31m");
    }
}
