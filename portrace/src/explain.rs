//! Each transition's cause in plain words, for `--explain` and the diagrams: which segment
//! the socket sent or received, or which call the application made, given the state it
//! left, the state it entered and, on a last transition, why the connection ended. It also
//! says when Linux makes the transition differently from RFC 9293's state diagram. Pure:
//! everything comes from the transition itself.

use std::fmt;

use crate::format::errno;
use crate::record::{EndReason, Transition};
use crate::tcp_state::TcpState::{self, *};

/// What a transition means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// The cause: `received SYN-ACK, sent ACK`.
    pub cause: String,
    /// How Linux differs from RFC 9293 here, when it does.
    pub linux: Option<&'static str>,
}

impl fmt::Display for Explanation {
    /// `cause`, then ` [Linux: ...]` when Linux differs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.cause)?;
        if let Some(linux) = self.linux {
            write!(f, " [Linux: {linux}]")?;
        }
        Ok(())
    }
}

/// The timewait socket: how Linux keeps TIME_WAIT.
const TIMEWAIT_SOCKET: &str =
    "the full socket closes and a small timewait socket keeps the connection; it lasts 60 s, not 2 MSL";
/// Linux's child sockets.
const CHILD_SOCKET: &str =
    "a new child socket is cloned from the listener, which stays in LISTEN; the SYN-RECEIVED wait itself happens in an untraced request socket";
/// Closes that skip the FIN exchange.
const NO_FIN: &str = "not in RFC 9293's diagram: the connection ends without the FIN exchange";

/// Explains `t`.
pub fn explain(t: &Transition) -> Explanation {
    explain_parts(t.oldstate, t.newstate, t.reason, t.error, t.retransmits)
}

/// Explains a transition from `old` to `new`; `reason`, `error` and `retransmits` as on
/// [`Transition`] (they matter on the last transition, into CLOSE).
pub fn explain_parts(
    old: TcpState,
    new: TcpState,
    reason: Option<EndReason>,
    error: Option<i32>,
    retransmits: u8,
) -> Explanation {
    let plain = |cause: &str| Explanation { cause: cause.to_string(), linux: None };
    let linux = |cause: &str, how: &'static str| Explanation { cause: cause.to_string(), linux: Some(how) };
    if new == Close && old != Close {
        return closed(old, reason, error, retransmits);
    }
    match (old, new) {
        (Close, Listen) => plain("application called listen()"),
        (Close, SynSent) => plain("application called connect(), sent SYN"),
        (Listen, SynRecv) => linux("received the ACK that completes a handshake (after SYN and SYN-ACK)", CHILD_SOCKET),
        (Listen, SynSent) => plain("application sent data on a listening socket, sent SYN"),
        (SynRecv, Established) => linux(
            "handshake complete: the ACK of our SYN-ACK was received",
            "the child socket is created with the handshake's last ACK and established at once, so SYN_RECV lasts microseconds",
        ),
        (SynRecv, Listen) => plain("received RST: back to listening"),
        (SynRecv, FinWait1) => plain("application called close() before the handshake completed, sent FIN"),
        (SynSent, Established) => plain("received SYN-ACK, sent ACK"),
        (SynSent, SynRecv) => plain("received SYN while connecting (simultaneous open), sent SYN-ACK"),
        (Established, FinWait1) => plain("application called close() or shutdown(), sent FIN"),
        (Established, CloseWait) => plain("peer's FIN received, sent ACK; waiting for the application to close"),
        (FinWait1, FinWait2) => plain("ACK of our FIN received; waiting for the peer's FIN"),
        (FinWait1, Closing) => plain("peer's FIN received before the ACK of ours (simultaneous close), sent ACK"),
        (FinWait1, TimeWait) => linux("peer's FIN and the ACK of ours received together, sent ACK", TIMEWAIT_SOCKET),
        (FinWait2, TimeWait) => linux("peer's FIN received, sent ACK; waiting for late segments", TIMEWAIT_SOCKET),
        (Closing, TimeWait) => linux("ACK of our FIN received; waiting for late segments", TIMEWAIT_SOCKET),
        (CloseWait, LastAck) => plain("application called close(), sent FIN; waiting for its ACK"),
        (_, NewSynRecv) | (NewSynRecv, _) => linux(
            "a request socket (a connection being accepted) changed state",
            "Linux keeps a half-open connection in a request socket (NEW_SYN_RECV), which RFC 9293 does not have",
        ),
        _ => linux("a transition outside RFC 9293's diagram", "the kernel made a transition RFC 9293's diagram does not have"),
    }
}

/// The last transition of a socket, from `old` into CLOSE.
fn closed(old: TcpState, reason: Option<EndReason>, error: Option<i32>, retransmits: u8) -> Explanation {
    let plain = |cause: String| Explanation { cause, linux: None };
    let off_diagram = |cause: String| {
        // Only the diagram's own edges into CLOSED are standard: a reset taken elsewhere is
        // in the RFC's text, not in its figure.
        let standard = matches!(old, Listen | SynSent | LastAck | TimeWait);
        Explanation { cause, linux: (!standard).then_some(NO_FIN) }
    };
    let errno = || error.map(errno::tcp_text);
    match reason {
        Some(EndReason::ListenerClosed) => plain("application closed the listening socket".into()),
        Some(EndReason::PassiveClose) if old == LastAck => plain("ACK of our FIN received; connection closed".into()),
        Some(EndReason::Refused) => off_diagram("received RST in answer to our SYN: connection refused, nothing listens there".into()),
        Some(EndReason::ConnectTimeout) => {
            let sent = match retransmits {
                0 => "the SYN went unanswered".to_string(),
                n => format!("the SYN went unanswered, sent {} times", u32::from(n) + 1),
            };
            off_diagram(format!("{sent}: connect timed out"))
        }
        Some(EndReason::ConnectAborted) => plain("application closed the socket before connect() completed".into()),
        Some(EndReason::ResetByPeer) => off_diagram("received RST from the peer: connection reset".into()),
        Some(EndReason::ResetSent) if old == SynRecv => off_diagram(
            "the new connection was dropped before the application used it, sent RST".into(),
        ),
        Some(EndReason::ResetSent) => off_diagram(
            "this host aborted the connection and sent RST (SO_LINGER 0, close() with unread data, or an orphan given up)".into(),
        ),
        Some(EndReason::FinWait2Timeout) => Explanation {
            cause: "no FIN from the peer within net.ipv4.tcp_fin_timeout: the orphaned connection is dropped".into(),
            linux: Some("RFC 9293 waits in FIN-WAIT-2 for ever; Linux gives up on an orphan after tcp_fin_timeout"),
        },
        Some(EndReason::TimeWaitKilled) => Explanation {
            cause: "TIME_WAIT cut short: its address reused by a new connection, a RST received, or its namespace removed".into(),
            linux: Some("Linux lets a new connection reuse an address still in TIME_WAIT (and RST ends it)"),
        },
        Some(EndReason::ActiveClose) if old == TimeWait => Explanation {
            cause: "TIME_WAIT timer expired; connection gone".into(),
            linux: Some("Linux's TIME_WAIT lasts 60 s (TCP_TIMEWAIT_LEN), not 2 MSL"),
        },
        Some(EndReason::ActiveClose) if old == Closing => Explanation {
            cause: "ACK of our FIN received: the connection moved to TIME_WAIT".into(),
            linux: Some(TIMEWAIT_SOCKET),
        },
        Some(EndReason::ActiveClose) => Explanation {
            cause: "peer's FIN received, sent ACK: the connection moved to TIME_WAIT".into(),
            linux: Some(TIMEWAIT_SOCKET),
        },
        Some(EndReason::Error) | Some(EndReason::PassiveClose) | None => match (errno(), old) {
            (Some(e), _) => off_diagram(format!("the kernel reported {e} on the socket: connection ended")),
            (None, Listen) => plain("application closed the listening socket".into()),
            (None, SynSent) => plain("connect() abandoned: socket closed".into()),
            (None, LastAck) => plain("ACK of our FIN received; connection closed".into()),
            (None, TimeWait) => plain("TIME_WAIT over; connection gone".into()),
            (None, _) => off_diagram("socket closed".into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(old: TcpState, new: TcpState, reason: Option<EndReason>, error: Option<i32>) -> String {
        explain_parts(old, new, reason, error, 0).to_string()
    }

    /// Every (old, new) pair portrace reports, with the reasons that come with it, and the
    /// text each gets: the live tracepoint's, the synthesised TIME_WAIT ones, and every end.
    #[test]
    fn every_reported_transition_has_its_cause() {
        use EndReason as R;
        type Case = (TcpState, TcpState, Option<EndReason>, Option<i32>, &'static str);
        let cases: Vec<Case> = vec![
            (Close, Listen, None, None, "application called listen()"),
            (Close, SynSent, None, None, "application called connect(), sent SYN"),
            (Listen, SynRecv, None, None, "received the ACK that completes a handshake (after SYN and SYN-ACK) [Linux: a new child socket is cloned"),
            (SynRecv, Established, None, None, "handshake complete: the ACK of our SYN-ACK was received [Linux:"),
            (SynSent, Established, None, None, "received SYN-ACK, sent ACK"),
            (SynSent, SynRecv, None, None, "received SYN while connecting (simultaneous open), sent SYN-ACK"),
            (Established, FinWait1, None, None, "application called close() or shutdown(), sent FIN"),
            (Established, CloseWait, None, None, "peer's FIN received, sent ACK; waiting for the application to close"),
            (FinWait1, FinWait2, None, None, "ACK of our FIN received; waiting for the peer's FIN"),
            (FinWait1, Closing, None, None, "peer's FIN received before the ACK of ours (simultaneous close), sent ACK"),
            (CloseWait, LastAck, None, None, "application called close(), sent FIN; waiting for its ACK"),
            (FinWait2, TimeWait, None, None, "peer's FIN received, sent ACK; waiting for late segments [Linux: the full socket closes and a small timewait socket"),
            (Closing, TimeWait, None, None, "ACK of our FIN received; waiting for late segments [Linux:"),
            (TimeWait, Close, Some(R::ActiveClose), None, "TIME_WAIT timer expired; connection gone [Linux: Linux's TIME_WAIT lasts 60 s"),
            (TimeWait, Close, Some(R::TimeWaitKilled), None, "TIME_WAIT cut short: its address reused by a new connection"),
            (FinWait2, Close, Some(R::FinWait2Timeout), None, "no FIN from the peer within net.ipv4.tcp_fin_timeout"),
            (FinWait2, Close, Some(R::ActiveClose), None, "peer's FIN received, sent ACK: the connection moved to TIME_WAIT [Linux:"),
            (Closing, Close, Some(R::ActiveClose), None, "ACK of our FIN received: the connection moved to TIME_WAIT"),
            (LastAck, Close, Some(R::PassiveClose), None, "ACK of our FIN received; connection closed"),
            (Listen, Close, Some(R::ListenerClosed), None, "application closed the listening socket"),
            (SynSent, Close, Some(R::Refused), Some(libc::ECONNREFUSED), "received RST in answer to our SYN: connection refused"),
            (SynSent, Close, Some(R::ConnectTimeout), Some(libc::ETIMEDOUT), "the SYN went unanswered: connect timed out"),
            (SynSent, Close, Some(R::ConnectAborted), None, "application closed the socket before connect() completed"),
            (Established, Close, Some(R::ResetByPeer), Some(libc::ECONNRESET), "received RST from the peer: connection reset [Linux: not in RFC 9293's diagram"),
            (CloseWait, Close, Some(R::ResetByPeer), Some(libc::EPIPE), "received RST from the peer"),
            (Established, Close, Some(R::ResetSent), None, "this host aborted the connection and sent RST"),
            (FinWait1, Close, Some(R::ResetSent), None, "this host aborted the connection and sent RST"),
            (SynRecv, Close, Some(R::ResetSent), None, "the new connection was dropped before the application used it, sent RST"),
            (Established, Close, Some(R::Error), Some(libc::ETIMEDOUT), "the kernel reported ETIMEDOUT on the socket"),
            (SynSent, Close, Some(R::Error), Some(libc::EHOSTUNREACH), "the kernel reported EHOSTUNREACH on the socket"),
            (Established, Close, Some(R::Error), Some(999), "the kernel reported E999 on the socket"),
        ];
        for (old, new, reason, error, expected) in cases {
            let got = text(old, new, reason, error);
            assert!(got.starts_with(expected), "{old} -> {new} ({reason:?}): {got}");
        }
    }

    #[test]
    fn every_end_reason_changes_the_cause_of_a_close() {
        let mut seen = std::collections::HashSet::new();
        for reason in EndReason::ALL {
            let old = match reason {
                EndReason::PassiveClose => LastAck,
                EndReason::ListenerClosed => Listen,
                EndReason::TimeWaitKilled => TimeWait,
                EndReason::Refused | EndReason::ConnectTimeout | EndReason::ConnectAborted => SynSent,
                EndReason::FinWait2Timeout | EndReason::ActiveClose => FinWait2,
                _ => Established,
            };
            let error = (reason == EndReason::Error).then_some(libc::EHOSTUNREACH);
            assert!(seen.insert(text(old, Close, Some(reason), error)), "{reason:?} says what another reason says");
        }
    }

    #[test]
    fn retransmits_are_counted_as_sends() {
        let e = explain_parts(SynSent, Close, Some(EndReason::ConnectTimeout), Some(libc::ETIMEDOUT), 6);
        assert_eq!(e.cause, "the SYN went unanswered, sent 7 times: connect timed out");
    }

    #[test]
    fn only_what_linux_does_differently_is_marked() {
        for (old, new) in [(Close, SynSent), (SynSent, Established), (Established, FinWait1), (Established, CloseWait), (CloseWait, LastAck), (FinWait1, FinWait2)] {
            assert_eq!(explain_parts(old, new, None, None, 0).linux, None, "{old} -> {new}");
        }
        for (old, new, reason) in [
            (Listen, SynRecv, None),
            (FinWait2, TimeWait, None),
            (Established, Close, Some(EndReason::ResetSent)),
            (FinWait2, Close, Some(EndReason::FinWait2Timeout)),
        ] {
            assert!(explain_parts(old, new, reason, None, 0).linux.is_some(), "{old} -> {new}");
        }
        // Standard ends are standard, whatever their cause.
        assert_eq!(explain_parts(LastAck, Close, Some(EndReason::PassiveClose), None, 0).linux, None);
        assert_eq!(explain_parts(SynSent, Close, Some(EndReason::ConnectAborted), None, 0).linux, None);
        assert_eq!(explain_parts(Listen, Close, Some(EndReason::ListenerClosed), None, 0).linux, None);
    }

    #[test]
    fn an_unknown_pair_still_gets_words() {
        let e = explain_parts(CloseWait, Established, None, None, 0);
        assert!(e.cause.contains("outside RFC 9293"), "{e}");
        assert!(explain_parts(Listen, NewSynRecv, None, None, 0).to_string().contains("request socket"));
    }

    /// A writer the test reads after the sink that owns it is gone.
    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn rendered(format: crate::output::Format, explain: bool, t: &Transition) -> String {
        let out = Shared::default();
        let options = crate::output::TextOptions { color: false, zone: crate::clock::Zone::Fixed(0), explain };
        let mut sink = crate::output::sink(format, Box::new(out.clone()), options);
        sink.transition(t).unwrap();
        sink.flush().unwrap();
        drop(sink);
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn text_and_json_carry_the_cause_only_when_asked() {
        use crate::output::Format;
        let t = Transition {
            reason: Some(EndReason::Refused),
            error: Some(libc::ECONNREFUSED),
            ..crate::diagram::stats::tests::tr(3, 10, SynSent, Close, Some(63_500))
        };
        let text = rendered(Format::Text, true, &t);
        let line = text.lines().last().unwrap();
        assert!(
            line.ends_with("connection refused (ECONNREFUSED) -- received RST in answer to our SYN: connection refused, nothing listens there"),
            "{line}"
        );
        assert!(!rendered(Format::Text, false, &t).contains(" -- "));
        let json: serde_json::Value = serde_json::from_str(rendered(Format::Json, true, &t).trim()).unwrap();
        assert_eq!(json["explain"], explain(&t).to_string());
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(keys.last().map(|k| k.as_str()), Some("explain"), "added after the existing fields");
        let plain: serde_json::Value = serde_json::from_str(rendered(Format::Json, false, &t).trim()).unwrap();
        assert!(plain.get("explain").is_none());
    }
}
