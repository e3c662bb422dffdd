//! The kernel's socket-diagnostics interface (NETLINK_SOCK_DIAG) for TCP: this module owns
//! the netlink socket, the `SOCK_DIAG_BY_FAMILY` dump request for every TCP socket of one
//! address family, and the parsing of the `inet_diag_msg` replies into [`DiagSocket`]s.
//! It sees only the network namespace of the thread that opens the socket; entering other
//! namespaces is the inventory's business. Parsing is a pure function over the received
//! bytes ([`parse_reply`]) that rejects malformed input with an error and never panics.
//!
//! The byte layouts follow the kernel's UAPI headers `linux/netlink.h`, `linux/sock_diag.h`
//! and `linux/inet_diag.h`. Netlink headers are in host byte order; ports and addresses
//! inside `inet_diag_sockid` are in network byte order.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use crate::record::{Endpoints, Family};

/// `struct nlmsghdr`: len u32, type u16, flags u16, seq u32, pid u32.
const NLMSG_HDRLEN: usize = 16;
/// Netlink messages start on 4-byte boundaries (`NLMSG_ALIGNTO`).
const NLMSG_ALIGNTO: usize = 4;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_ROOT | NLM_F_MATCH`.
const NLM_F_DUMP: u16 = 0x300;
/// Set on dump parts when the kernel's tables changed under the dump, which may then have
/// missed or repeated entries.
const NLM_F_DUMP_INTR: u16 = 0x10;
/// The message type of sock_diag requests and replies (`linux/sock_diag.h`).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states u32, inet_diag_sockid.
const INET_DIAG_REQ_V2_LEN: usize = 56;
/// `struct inet_diag_msg`: family, state, timer, retrans, inet_diag_sockid (48 bytes),
/// expires, rqueue, wqueue, uid, inode (u32 each).
const INET_DIAG_MSG_LEN: usize = 72;
const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;
const IPPROTO_TCP: u8 = libc::IPPROTO_TCP as u8;

/// Large enough for any dump datagram the kernel sends (it sizes them to at most 32 KiB).
const RECV_BUFFER: usize = 64 * 1024;
/// How long to wait for each part of a dump before giving up.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// One TCP socket as sock_diag describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiagSocket {
    /// The family portrace shows: an IPv6 socket whose addresses are v4-mapped (or
    /// unspecified) is shown as IPv4, with the addresses converted.
    pub family: Family,
    /// The kernel's state number (`TCP_ESTABLISHED` = 1 ... `TCP_NEW_SYN_RECV` = 12).
    pub state: u8,
    pub saddr: IpAddr,
    pub sport: u16,
    pub daddr: IpAddr,
    pub dport: u16,
    /// The interface the socket is bound to (`SO_BINDTODEVICE`), 0 for none.
    pub ifindex: u32,
    pub uid: u32,
    /// The socket's inode; 0 for sockets without a file (timewait, request and orphaned
    /// sockets).
    pub inode: u32,
    /// The kernel's socket cookie: `idiag_cookie[0] | idiag_cookie[1] << 32`.
    pub cookie: u64,
}

impl DiagSocket {
    /// Its endpoints, in network namespace `netns` (the one its dump was taken in: the
    /// kernel does not say it per socket).
    pub fn ends(&self, netns: u32) -> Endpoints {
        Endpoints { saddr: self.saddr, sport: self.sport, daddr: self.daddr, dport: self.dport, netns }
    }
}

/// What one received datagram said about the dump as a whole.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The datagram ended the dump (`NLMSG_DONE`).
    pub done: bool,
    /// The kernel flagged a part as interrupted (`NLM_F_DUMP_INTR`): its tables changed
    /// during the dump, so sockets may be missing or repeated.
    pub interrupted: bool,
}

/// Why a reply could not be parsed, or the kernel's refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error(
        "truncated netlink message at byte {offset}: {needed} bytes needed, {available} present"
    )]
    Truncated { offset: usize, needed: usize, available: usize },
    #[error("the kernel answered with error {errno} ({})", io::Error::from_raw_os_error(*errno))]
    Kernel { errno: i32 },
    #[error(
        "netlink message at byte {offset} describes a socket of unknown address family {family}"
    )]
    Family { offset: usize, family: u8 },
}

/// Why a dump failed.
#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    #[error(
        "cannot open a NETLINK_SOCK_DIAG socket: {0}; the kernel needs socket diagnostics \
         (CONFIG_INET_DIAG, CONFIG_INET_TCP_DIAG; try `modprobe tcp_diag`)"
    )]
    Open(#[source] io::Error),
    #[error("cannot send the sock_diag dump request for {family} TCP sockets: {source}")]
    Send { family: &'static str, source: io::Error },
    #[error("cannot read the sock_diag reply for {family} TCP sockets: {source}")]
    Recv { family: &'static str, source: io::Error },
    #[error(
        "the kernel sent no sock_diag reply for {family} TCP sockets within {}s; retry, and \
         check `ss -tan` works on this host",
        RECV_TIMEOUT.as_secs()
    )]
    TimedOut { family: &'static str },
    #[error(
        "a sock_diag reply for {family} TCP sockets was {size} bytes, more than the \
         {RECV_BUFFER}-byte buffer; this is a portrace bug, please report it"
    )]
    Oversized { family: &'static str, size: usize },
    #[error(
        "the kernel refused to dump {family} TCP sockets: {source}; check that socket \
         diagnostics are available (`modprobe tcp_diag`; for IPv6, that IPv6 is enabled)"
    )]
    Refused { family: &'static str, source: ParseError },
    #[error(
        "malformed sock_diag reply for {family} TCP sockets: {source}; this is a portrace \
         bug or an unexpected kernel, please report it"
    )]
    Malformed { family: &'static str, source: ParseError },
}

/// The result of dumping one address family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dump {
    pub sockets: Vec<DiagSocket>,
    /// See [`Progress::interrupted`].
    pub interrupted: bool,
}

/// A NETLINK_SOCK_DIAG socket in the network namespace of the thread that opened it.
#[derive(Debug)]
pub struct SockDiag {
    fd: OwnedFd,
    seq: u32,
}

impl SockDiag {
    /// Opens the socket in the calling thread's network namespace; it stays bound to that
    /// namespace whatever the thread does later.
    pub fn open() -> Result<SockDiag, DiagError> {
        // SAFETY: socket(2) takes no pointers; a non-negative return is a new descriptor
        // that nothing else owns.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            )
        };
        if raw < 0 {
            return Err(DiagError::Open(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a valid descriptor owned by nobody else (see above).
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let timeout = libc::timeval { tv_sec: RECV_TIMEOUT.as_secs() as libc::time_t, tv_usec: 0 };
        // SAFETY: the option value points to a live timeval of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(DiagError::Open(io::Error::last_os_error()));
        }
        Ok(SockDiag { fd, seq: 0 })
    }

    /// Dumps every TCP socket of `family`, in every state, and waits for the whole dump.
    /// IPv4 sockets come from the AF_INET dump; the AF_INET6 dump holds the IPv6 sockets,
    /// dual-stack ones included (shown as IPv4 when their addresses are v4-mapped).
    pub fn dump_tcp(&mut self, family: Family) -> Result<Dump, DiagError> {
        let (af, name) = match family {
            Family::Ipv4 => (AF_INET, "IPv4"),
            Family::Ipv6 => (AF_INET6, "IPv6"),
        };
        self.seq = self.seq.wrapping_add(1);
        let request = dump_request(af, self.seq);
        self.send(&request).map_err(|source| DiagError::Send { family: name, source })?;

        let mut dump = Dump::default();
        let mut buf = vec![0u8; RECV_BUFFER];
        loop {
            let n = self.recv(&mut buf).map_err(|source| match source.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    DiagError::TimedOut { family: name }
                }
                _ => DiagError::Recv { family: name, source },
            })?;
            if n > buf.len() {
                return Err(DiagError::Oversized { family: name, size: n });
            }
            if n == 0 {
                // A zero-length datagram carries nothing; a dump never ends this way.
                return Err(DiagError::Malformed {
                    family: name,
                    source: ParseError::Truncated { offset: 0, needed: NLMSG_HDRLEN, available: 0 },
                });
            }
            let progress = parse_reply(&buf[..n], self.seq, &mut dump.sockets).map_err(
                |source| match source {
                    ParseError::Kernel { .. } => DiagError::Refused { family: name, source },
                    _ => DiagError::Malformed { family: name, source },
                },
            )?;
            dump.interrupted |= progress.interrupted;
            if progress.done {
                return Ok(dump);
            }
        }
    }

    fn send(&self, request: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        loop {
            // SAFETY: the buffer and address point to live memory of the sizes passed.
            let n = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    request.as_ptr().cast(),
                    request.len(),
                    0,
                    (&kernel as *const libc::sockaddr_nl).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if n >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// Receives one datagram; returns its full length, which exceeds `buf.len()` when it
    /// did not fit (MSG_TRUNC).
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: the buffer is live and writable for `buf.len()` bytes.
            let n = unsafe {
                libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_TRUNC)
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

/// The request for a dump of every TCP socket of address family `af` (AF_INET or
/// AF_INET6), in every state: a netlink header followed by an `inet_diag_req_v2` with no
/// socket filter and no extensions.
pub fn dump_request(af: u8, seq: u32) -> [u8; NLMSG_HDRLEN + INET_DIAG_REQ_V2_LEN] {
    const LEN: usize = NLMSG_HDRLEN + INET_DIAG_REQ_V2_LEN;
    let mut req = [0u8; LEN];
    req[0..4].copy_from_slice(&(LEN as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0: the kernel fills in our port id.
    let body = &mut req[NLMSG_HDRLEN..];
    body[0] = af;
    body[1] = IPPROTO_TCP;
    // body[2], idiag_ext, stays 0: no extensions. idiag_states has a bit per state; all
    // ones asks for every state, TIME_WAIT and NEW_SYN_RECV included.
    body[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    // The inet_diag_sockid (bytes 8..56) stays zero: no filter.
    req
}

/// Parses one datagram of a sock_diag dump, appending the sockets it describes to `out`.
/// Messages whose sequence number is not `seq` (left from an earlier request) are skipped,
/// and so are message types a dump does not carry. Returns whether the datagram ended the
/// dump; a kernel error (NLMSG_ERROR, or a negative status in NLMSG_DONE) is
/// [`ParseError::Kernel`]; a message that does not fit its datagram, or a socket record
/// shorter than `inet_diag_msg`, is [`ParseError::Truncated`]. Sockets parsed before an
/// error stay in `out`.
pub fn parse_reply(
    buf: &[u8],
    seq: u32,
    out: &mut Vec<DiagSocket>,
) -> Result<Progress, ParseError> {
    let mut progress = Progress::default();
    let mut offset = 0;
    while offset < buf.len() {
        let rest = &buf[offset..];
        if rest.len() < NLMSG_HDRLEN {
            return Err(ParseError::Truncated {
                offset,
                needed: NLMSG_HDRLEN,
                available: rest.len(),
            });
        }
        let len = u32_at(rest, 0) as usize;
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        let flags = u16::from_ne_bytes([rest[6], rest[7]]);
        let msg_seq = u32_at(rest, 8);
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(ParseError::Truncated {
                offset,
                needed: len.max(NLMSG_HDRLEN),
                available: rest.len(),
            });
        }
        let payload = &rest[NLMSG_HDRLEN..len];
        if msg_seq == seq {
            if flags & NLM_F_DUMP_INTR != 0 {
                progress.interrupted = true;
            }
            match kind {
                SOCK_DIAG_BY_FAMILY => out.push(parse_socket(payload, offset + NLMSG_HDRLEN)?),
                NLMSG_DONE => {
                    // A dump's DONE carries its final status: 0, or a negative errno when
                    // the dump failed part way.
                    if payload.len() >= 4 {
                        let status =
                            i32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]);
                        if status < 0 {
                            return Err(ParseError::Kernel { errno: -status });
                        }
                    }
                    progress.done = true;
                    return Ok(progress);
                }
                NLMSG_ERROR => {
                    if payload.len() < 4 {
                        return Err(ParseError::Truncated {
                            offset: offset + NLMSG_HDRLEN,
                            needed: 4,
                            available: payload.len(),
                        });
                    }
                    let error =
                        i32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]);
                    // Error 0 is an acknowledgement, which a dump does not ask for; the
                    // dump itself still ends with DONE.
                    if error != 0 {
                        return Err(ParseError::Kernel { errno: error.unsigned_abs() as i32 });
                    }
                }
                NLMSG_OVERRUN => {
                    return Err(ParseError::Kernel { errno: libc::ENOBUFS });
                }
                NLMSG_NOOP => {}
                // Anything else a dump does not use.
                _ => {}
            }
        }
        // The next message starts at the aligned end of this one; the last message of a
        // datagram may omit its padding.
        offset += align(len).min(rest.len());
    }
    Ok(progress)
}

/// One `inet_diag_msg` (attributes after it are ignored).
fn parse_socket(msg: &[u8], offset: usize) -> Result<DiagSocket, ParseError> {
    if msg.len() < INET_DIAG_MSG_LEN {
        return Err(ParseError::Truncated {
            offset,
            needed: INET_DIAG_MSG_LEN,
            available: msg.len(),
        });
    }
    let af = msg[0];
    let state = msg[1];
    let sport = u16::from_be_bytes([msg[4], msg[5]]);
    let dport = u16::from_be_bytes([msg[6], msg[7]]);
    let src: [u8; 16] = msg[8..24].try_into().unwrap_or([0; 16]);
    let dst: [u8; 16] = msg[24..40].try_into().unwrap_or([0; 16]);
    let (family, saddr, daddr) = match af {
        AF_INET => (
            Family::Ipv4,
            IpAddr::V4(Ipv4Addr::new(src[0], src[1], src[2], src[3])),
            IpAddr::V4(Ipv4Addr::new(dst[0], dst[1], dst[2], dst[3])),
        ),
        AF_INET6 => shown_family(Ipv6Addr::from(src), Ipv6Addr::from(dst)),
        family => return Err(ParseError::Family { offset, family }),
    };
    let cookie_lo = u32_at(msg, 44);
    let cookie_hi = u32_at(msg, 48);
    Ok(DiagSocket {
        family,
        state,
        saddr,
        sport,
        daddr,
        dport,
        ifindex: u32_at(msg, 40),
        uid: u32_at(msg, 64),
        inode: u32_at(msg, 68),
        cookie: u64::from(cookie_lo) | u64::from(cookie_hi) << 32,
    })
}

/// An IPv6 socket's family and addresses as portrace shows them: IPv4 when no address is a
/// genuine IPv6 one (each is v4-mapped or unspecified) and at least one is v4-mapped, so a
/// dual-stack listener on `::` stays IPv6 while its accepted IPv4 clients become IPv4.
pub fn shown_family(saddr: Ipv6Addr, daddr: Ipv6Addr) -> (Family, IpAddr, IpAddr) {
    let mapped = |a: Ipv6Addr| a.to_ipv4_mapped();
    let v4 = |a: Ipv6Addr| mapped(a).or(a.is_unspecified().then_some(Ipv4Addr::UNSPECIFIED));
    match (v4(saddr), v4(daddr)) {
        (Some(s), Some(d)) if mapped(saddr).is_some() || mapped(daddr).is_some() => {
            (Family::Ipv4, IpAddr::V4(s), IpAddr::V4(d))
        }
        _ => (Family::Ipv6, IpAddr::V6(saddr), IpAddr::V6(daddr)),
    }
}

fn align(len: usize) -> usize {
    (len + NLMSG_ALIGNTO - 1) & !(NLMSG_ALIGNTO - 1)
}

/// A host-order u32 at `at`; callers check the length first (0 if they did not).
fn u32_at(buf: &[u8], at: usize) -> u32 {
    buf.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_ne_bytes).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEQ: u32 = 7;

    /// A netlink message: header then payload, padded to 4 bytes.
    fn message(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&4242u32.to_ne_bytes());
        m.extend_from_slice(payload);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    /// An `inet_diag_msg` body, followed by one attribute the parser must skip.
    #[allow(clippy::too_many_arguments, reason = "a test fixture spelling out every field")]
    fn diag_msg(
        af: u8,
        state: u8,
        src: [u8; 16],
        sport: u16,
        dst: [u8; 16],
        dport: u16,
        uid: u32,
        inode: u32,
        cookie: [u32; 2],
    ) -> Vec<u8> {
        let mut m = vec![af, state, 0, 0];
        m.extend_from_slice(&sport.to_be_bytes());
        m.extend_from_slice(&dport.to_be_bytes());
        m.extend_from_slice(&src);
        m.extend_from_slice(&dst);
        m.extend_from_slice(&3u32.to_ne_bytes()); // idiag_if
        m.extend_from_slice(&cookie[0].to_ne_bytes());
        m.extend_from_slice(&cookie[1].to_ne_bytes());
        for v in [0u32, 0, 0, uid, inode] {
            m.extend_from_slice(&v.to_ne_bytes()); // expires, rqueue, wqueue, uid, inode
        }
        assert_eq!(m.len(), INET_DIAG_MSG_LEN);
        // An INET_DIAG_SHUTDOWN attribute (rtattr len 5, type 8, one byte).
        m.extend_from_slice(&5u16.to_ne_bytes());
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.push(0);
        m
    }

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut b = [0; 16];
        b[..4].copy_from_slice(&a);
        b
    }

    fn v6(text: &str) -> [u8; 16] {
        text.parse::<Ipv6Addr>().unwrap().octets()
    }

    fn done(status: i32) -> Vec<u8> {
        message(NLMSG_DONE, 2, SEQ, &status.to_ne_bytes())
    }

    #[test]
    fn parses_ipv4_sockets_across_parts_until_done() {
        let listener =
            diag_msg(AF_INET, 10, v4([0, 0, 0, 0]), 22, v4([0; 4]), 0, 0, 1234, [0x1111, 0x2]);
        let estab =
            diag_msg(AF_INET, 1, v4([10, 0, 0, 1]), 22, v4([10, 0, 0, 9]), 50123, 1000, 99, [5, 0]);
        let mut part1 = message(SOCK_DIAG_BY_FAMILY, 2, SEQ, &listener);
        part1.extend(message(SOCK_DIAG_BY_FAMILY, 2, SEQ, &estab));
        let mut out = Vec::new();
        let p = parse_reply(&part1, SEQ, &mut out).unwrap();
        assert_eq!(p, Progress { done: false, interrupted: false });
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0],
            DiagSocket {
                family: Family::Ipv4,
                state: 10,
                saddr: "0.0.0.0".parse().unwrap(),
                sport: 22,
                daddr: "0.0.0.0".parse().unwrap(),
                dport: 0,
                ifindex: 3,
                uid: 0,
                inode: 1234,
                cookie: 0x2_0000_1111,
            }
        );
        assert_eq!(out[1].saddr.to_string(), "10.0.0.1");
        assert_eq!(out[1].daddr.to_string(), "10.0.0.9");
        assert_eq!((out[1].sport, out[1].dport, out[1].uid, out[1].inode), (22, 50123, 1000, 99));

        let p = parse_reply(&done(0), SEQ, &mut out).unwrap();
        assert_eq!(p, Progress { done: true, interrupted: false });
        assert_eq!(out.len(), 2, "DONE adds no socket");
    }

    #[test]
    fn v4_mapped_ipv6_socket_is_shown_as_ipv4() {
        let body = diag_msg(
            AF_INET6,
            1,
            v6("::ffff:127.0.0.1"),
            8080,
            v6("::ffff:192.0.2.4"),
            40000,
            0,
            7,
            [1, 0],
        );
        let mut out = Vec::new();
        parse_reply(&message(SOCK_DIAG_BY_FAMILY, 2, SEQ, &body), SEQ, &mut out).unwrap();
        assert_eq!(out[0].family, Family::Ipv4);
        assert_eq!(out[0].saddr, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(out[0].daddr, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 4)));
    }

    #[test]
    fn genuine_and_unspecified_ipv6_stay_ipv6() {
        let any = Ipv6Addr::UNSPECIFIED;
        let (f, s, _) = shown_family(any, any);
        assert_eq!((f, s.to_string()), (Family::Ipv6, "::".to_string()), "dual-stack listener");
        let mapped: Ipv6Addr = "::ffff:10.1.2.3".parse().unwrap();
        let (f, s, d) = shown_family(mapped, any);
        assert_eq!(f, Family::Ipv4, "listener bound to a v4-mapped address");
        assert_eq!((s.to_string(), d.to_string()), ("10.1.2.3".into(), "0.0.0.0".into()));
        let real: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(shown_family(real, mapped).0, Family::Ipv6, "mixed stays IPv6");
        assert_eq!(shown_family(Ipv6Addr::LOCALHOST, any).0, Family::Ipv6);
    }

    #[test]
    fn nlmsg_error_is_the_kernels_errno() {
        let mut payload = (-libc::EINVAL).to_ne_bytes().to_vec();
        payload.extend_from_slice(&dump_request(AF_INET, SEQ)[..NLMSG_HDRLEN]);
        let buf = message(NLMSG_ERROR, 0, SEQ, &payload);
        let err = parse_reply(&buf, SEQ, &mut Vec::new()).unwrap_err();
        assert_eq!(err, ParseError::Kernel { errno: libc::EINVAL });
        assert!(err.to_string().contains("Invalid argument"), "{err}");
    }

    #[test]
    fn failed_dump_status_in_done_is_an_error() {
        let err = parse_reply(&done(-libc::ENOBUFS), SEQ, &mut Vec::new()).unwrap_err();
        assert_eq!(err, ParseError::Kernel { errno: libc::ENOBUFS });
    }

    #[test]
    fn truncated_messages_are_errors_not_panics() {
        let body = diag_msg(AF_INET, 1, v4([1, 2, 3, 4]), 1, v4([5, 6, 7, 8]), 2, 0, 1, [1, 0]);
        let full = message(SOCK_DIAG_BY_FAMILY, 2, SEQ, &body);
        let len = u32_at(&full, 0) as usize;
        assert_eq!(len, NLMSG_HDRLEN + INET_DIAG_MSG_LEN + 5);
        // Cut the message anywhere: never a panic, always an error.
        for cut in 1..len {
            let mut out = Vec::new();
            let r = parse_reply(&full[..cut], SEQ, &mut out);
            assert!(matches!(r, Err(ParseError::Truncated { .. })), "cut at {cut}: {r:?}");
            assert!(out.is_empty());
        }
        // Only the padding after the last message may be missing.
        let mut out = Vec::new();
        assert_eq!(parse_reply(&full[..len], SEQ, &mut out), Ok(Progress::default()));
        assert_eq!(out.len(), 1);
        // The header says 93 bytes but only 40 arrived.
        let err = parse_reply(&full[..40], SEQ, &mut Vec::new()).unwrap_err();
        assert_eq!(err, ParseError::Truncated { offset: 0, needed: len, available: 40 });
        // A well-formed header around a body shorter than inet_diag_msg.
        let short = message(SOCK_DIAG_BY_FAMILY, 2, SEQ, &body[..60]);
        let err = parse_reply(&short, SEQ, &mut Vec::new()).unwrap_err();
        assert_eq!(err, ParseError::Truncated { offset: 16, needed: 72, available: 60 });
        // A length field below the header size would otherwise loop forever.
        let mut zero = message(NLMSG_NOOP, 0, SEQ, &[]);
        zero[0..4].copy_from_slice(&0u32.to_ne_bytes());
        assert!(matches!(
            parse_reply(&zero, SEQ, &mut Vec::new()),
            Err(ParseError::Truncated { .. })
        ));
    }

    #[test]
    fn sockets_before_a_truncated_one_are_kept() {
        let body = diag_msg(AF_INET, 1, v4([1, 2, 3, 4]), 1, v4([5, 6, 7, 8]), 2, 0, 1, [1, 0]);
        let mut buf = message(SOCK_DIAG_BY_FAMILY, 2, SEQ, &body);
        let second = message(SOCK_DIAG_BY_FAMILY, 2, SEQ, &body);
        buf.extend_from_slice(&second[..30]);
        let mut out = Vec::new();
        assert!(parse_reply(&buf, SEQ, &mut out).is_err());
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn unknown_family_is_rejected() {
        let body = diag_msg(99, 1, [0; 16], 1, [0; 16], 2, 0, 1, [1, 0]);
        let err = parse_reply(&message(SOCK_DIAG_BY_FAMILY, 2, SEQ, &body), SEQ, &mut Vec::new());
        assert_eq!(err, Err(ParseError::Family { offset: 16, family: 99 }));
    }

    #[test]
    fn other_sequence_numbers_and_noops_are_skipped_and_interruption_noted() {
        let body = diag_msg(AF_INET, 1, v4([1, 2, 3, 4]), 1, v4([5, 6, 7, 8]), 2, 0, 1, [1, 0]);
        let mut buf = message(SOCK_DIAG_BY_FAMILY, 2, SEQ - 1, &body);
        buf.extend(message(NLMSG_ERROR, 0, SEQ - 1, &(-libc::EPERM).to_ne_bytes()));
        buf.extend(message(NLMSG_NOOP, 0, SEQ, &[]));
        buf.extend(message(SOCK_DIAG_BY_FAMILY, 2 | NLM_F_DUMP_INTR, SEQ, &body));
        buf.extend(done(0));
        let mut out = Vec::new();
        let p = parse_reply(&buf, SEQ, &mut out).unwrap();
        assert_eq!(p, Progress { done: true, interrupted: true });
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn request_asks_for_every_tcp_state_of_the_family() {
        let req = dump_request(AF_INET6, 9);
        assert_eq!(u32_at(&req, 0) as usize, req.len());
        assert_eq!(u16::from_ne_bytes([req[4], req[5]]), SOCK_DIAG_BY_FAMILY);
        assert_eq!(u16::from_ne_bytes([req[6], req[7]]), NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(u32_at(&req, 8), 9);
        assert_eq!(&req[16..20], &[AF_INET6, IPPROTO_TCP, 0, 0]);
        assert_eq!(u32_at(&req, 20), u32::MAX);
        assert!(req[24..].iter().all(|&b| b == 0), "no socket filter");
    }

    #[test]
    fn dumps_a_listener_of_this_process() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut diag = SockDiag::open().unwrap();
        let dump = diag.dump_tcp(Family::Ipv4).unwrap();
        let found = dump
            .sockets
            .iter()
            .find(|s| s.sport == port && s.saddr == IpAddr::V4(Ipv4Addr::LOCALHOST))
            .expect("the listener is in the IPv4 dump");
        assert_eq!(found.state, 10, "TCP_LISTEN");
        assert_ne!(found.inode, 0);
        assert_ne!(found.cookie, 0);
        // The IPv6 dump of the same socket works on the same netlink socket.
        let v6 = diag.dump_tcp(Family::Ipv6).unwrap();
        assert!(
            v6.sockets.iter().all(|s| s.inode != found.inode),
            "an AF_INET socket is not in the IPv6 dump"
        );
    }
}
