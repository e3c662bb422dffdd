//! Why a connection ended, from what the kernel showed at its last transition: the state it
//! left, the error it set on the socket (`sk_err`, which the kernel sets before closing a
//! socket that was reset, refused or timed out), and whether its timewait socket is tracked.

use crate::record::EndReason;
use crate::tcp_state::TcpState;

/// The reason for a full socket's transition from `old` into CLOSE (not a hand-over to a
/// timewait socket). `timewait_tracked` says whether hand-overs are seen at all: without
/// them, a normal active close also ends in FIN_WAIT2 -> CLOSE.
pub fn end_reason(old: TcpState, error: i32, timewait_tracked: bool) -> EndReason {
    match error {
        libc::ECONNREFUSED => return EndReason::Refused,
        libc::ETIMEDOUT if old == TcpState::SynSent => return EndReason::ConnectTimeout,
        libc::ECONNRESET | libc::EPIPE => return EndReason::ResetByPeer,
        0 => {}
        _ => return EndReason::Error,
    }
    match old {
        TcpState::Listen => EndReason::ListenerClosed,
        TcpState::LastAck => EndReason::PassiveClose,
        TcpState::SynSent => EndReason::ConnectAborted,
        TcpState::FinWait2 if timewait_tracked => EndReason::FinWait2Timeout,
        TcpState::FinWait2 | TcpState::Closing | TcpState::TimeWait => EndReason::ActiveClose,
        // Leaving an open or half-open state straight for CLOSE with no error: this host
        // dropped the connection with a reset (SO_LINGER 0, close with unread data, a child
        // discarded by its listener, an orphan given up).
        TcpState::Established
        | TcpState::CloseWait
        | TcpState::SynRecv
        | TcpState::FinWait1
        | TcpState::NewSynRecv
        | TcpState::Close => EndReason::ResetSent,
    }
}

/// The reason for a timewait socket's end: its timer fired in `state`.
pub fn timewait_expired(state: TcpState) -> EndReason {
    if state == TcpState::FinWait2 {
        EndReason::FinWait2Timeout
    } else {
        EndReason::ActiveClose
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TcpState::*;

    #[test]
    fn errors_name_the_reason() {
        assert_eq!(end_reason(SynSent, libc::ECONNREFUSED, true), EndReason::Refused);
        assert_eq!(end_reason(SynSent, libc::ETIMEDOUT, true), EndReason::ConnectTimeout);
        assert_eq!(end_reason(Established, libc::ECONNRESET, true), EndReason::ResetByPeer);
        assert_eq!(end_reason(CloseWait, libc::EPIPE, true), EndReason::ResetByPeer);
        assert_eq!(end_reason(Established, libc::ETIMEDOUT, true), EndReason::Error);
        assert_eq!(end_reason(SynSent, libc::EHOSTUNREACH, true), EndReason::Error);
    }

    #[test]
    fn normal_ends_follow_the_state_left() {
        assert_eq!(end_reason(Listen, 0, true), EndReason::ListenerClosed);
        assert_eq!(end_reason(LastAck, 0, true), EndReason::PassiveClose);
        assert_eq!(end_reason(SynSent, 0, true), EndReason::ConnectAborted);
        assert_eq!(end_reason(Closing, 0, true), EndReason::ActiveClose);
    }

    #[test]
    fn fin_wait2_to_close_depends_on_whether_timewait_is_seen() {
        assert_eq!(end_reason(FinWait2, 0, true), EndReason::FinWait2Timeout);
        assert_eq!(end_reason(FinWait2, 0, false), EndReason::ActiveClose);
    }

    #[test]
    fn an_abrupt_close_of_an_open_connection_is_a_reset_sent() {
        for old in [Established, CloseWait, SynRecv, FinWait1] {
            assert_eq!(end_reason(old, 0, true), EndReason::ResetSent, "{old}");
        }
    }

    #[test]
    fn timewait_ends() {
        assert_eq!(timewait_expired(TimeWait), EndReason::ActiveClose);
        assert_eq!(timewait_expired(FinWait2), EndReason::FinWait2Timeout);
    }
}
