//! TCP states: the kernel's numbers, the names portrace prints, and parsing of the names
//! users type on the command line.

use std::fmt;

use portrace_ebpf::tcp;

/// A TCP state as the kernel numbers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TcpState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    NewSynRecv,
}

impl TcpState {
    pub const ALL: [TcpState; 12] = [
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::Closing,
        TcpState::NewSynRecv,
    ];

    /// The state for a kernel state number, or `None` for a number the kernel does not use.
    pub fn from_kernel(n: u8) -> Option<TcpState> {
        Some(match n {
            tcp::ESTABLISHED => TcpState::Established,
            tcp::SYN_SENT => TcpState::SynSent,
            tcp::SYN_RECV => TcpState::SynRecv,
            tcp::FIN_WAIT1 => TcpState::FinWait1,
            tcp::FIN_WAIT2 => TcpState::FinWait2,
            tcp::TIME_WAIT => TcpState::TimeWait,
            tcp::CLOSE => TcpState::Close,
            tcp::CLOSE_WAIT => TcpState::CloseWait,
            tcp::LAST_ACK => TcpState::LastAck,
            tcp::LISTEN => TcpState::Listen,
            tcp::CLOSING => TcpState::Closing,
            tcp::NEW_SYN_RECV => TcpState::NewSynRecv,
            _ => return None,
        })
    }

    pub fn kernel_number(self) -> u8 {
        match self {
            TcpState::Established => tcp::ESTABLISHED,
            TcpState::SynSent => tcp::SYN_SENT,
            TcpState::SynRecv => tcp::SYN_RECV,
            TcpState::FinWait1 => tcp::FIN_WAIT1,
            TcpState::FinWait2 => tcp::FIN_WAIT2,
            TcpState::TimeWait => tcp::TIME_WAIT,
            TcpState::Close => tcp::CLOSE,
            TcpState::CloseWait => tcp::CLOSE_WAIT,
            TcpState::LastAck => tcp::LAST_ACK,
            TcpState::Listen => tcp::LISTEN,
            TcpState::Closing => tcp::CLOSING,
            TcpState::NewSynRecv => tcp::NEW_SYN_RECV,
        }
    }

    /// The kernel's name without the `TCP_` prefix, as printed and as in JSON.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait1 => "FIN_WAIT1",
            TcpState::FinWait2 => "FIN_WAIT2",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::Closing => "CLOSING",
            TcpState::NewSynRecv => "NEW_SYN_RECV",
        }
    }

    /// Parses a state name as users write it: any case, with or without the `TCP_` prefix,
    /// with `-` or `_` (`time-wait`, `TCP_TIME_WAIT`, `FIN_WAIT_1`, `closed`).
    pub fn parse(text: &str) -> Result<TcpState, UnknownState> {
        let upper = text.trim().to_ascii_uppercase().replace('-', "_");
        let bare = upper.strip_prefix("TCP_").unwrap_or(&upper);
        let bare = match bare {
            "FIN_WAIT_1" => "FIN_WAIT1",
            "FIN_WAIT_2" => "FIN_WAIT2",
            "CLOSED" => "CLOSE",
            "SYN_RECEIVED" => "SYN_RECV",
            other => other,
        };
        TcpState::ALL
            .into_iter()
            .find(|s| s.name() == bare)
            .ok_or_else(|| UnknownState(text.to_string()))
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// A state name that [`TcpState::parse`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown TCP state '{0}': expected one of {names}", names = state_names())]
pub struct UnknownState(pub String);

fn state_names() -> String {
    TcpState::ALL.iter().map(|s| s.name()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_numbers_round_trip() {
        for state in TcpState::ALL {
            assert_eq!(TcpState::from_kernel(state.kernel_number()), Some(state));
        }
        assert_eq!(TcpState::from_kernel(0), None);
        assert_eq!(TcpState::from_kernel(13), None);
    }

    #[test]
    fn parses_the_spellings_users_type() {
        assert_eq!(TcpState::parse("time-wait"), Ok(TcpState::TimeWait));
        assert_eq!(TcpState::parse("TCP_SYN_SENT"), Ok(TcpState::SynSent));
        assert_eq!(TcpState::parse("fin_wait_1"), Ok(TcpState::FinWait1));
        assert_eq!(TcpState::parse("Established"), Ok(TcpState::Established));
        assert_eq!(TcpState::parse("closed"), Ok(TcpState::Close));
    }

    #[test]
    fn unknown_state_lists_the_valid_ones() {
        let err = TcpState::parse("ESTABLISH").unwrap_err().to_string();
        assert!(err.starts_with("unknown TCP state 'ESTABLISH'"), "{err}");
        assert!(err.contains("CLOSE_WAIT"), "{err}");
    }
}
