//! The kernel program's decisions that need no kernel: what a hit's identity is, which
//! transitions only a socket's owner makes, whether a port or an address matches the
//! filter, and when an IPv6 socket is IPv4 on the wire. They live here, in the contract
//! crate, so that host tests check them; the kernel program calls them.
//!
//! Each is a small function with no loop the verifier could not bound and nothing on the
//! stack beyond a few scalars. The filter's lists are passed as accessors, not slices: the
//! kernel program reads its globals through volatile loads (the compiler would otherwise
//! fold in their placeholder values), and an accessor lets it keep doing so.

use crate::{tcp, MAX_PORTS};

/// One hit's identity: its socket's address and its two states. The states go into the
/// top 16 bits, which are the same in every kernel address, so two hits have the same
/// identity only when they are of the same socket address and the same two states.
#[inline]
pub fn hit_id(skaddr: u64, oldstate: u8, newstate: u8) -> u64 {
    skaddr ^ (u64::from(oldstate ^ 0x5a) << 56) ^ (u64::from(newstate) << 48)
}

/// The transitions only a socket's own process makes, in a system call: `listen`,
/// `connect`, and `close` or `shutdown` of a listener or a connection.
#[inline]
pub fn made_by_owner(old: u8, new: u8) -> bool {
    matches!(
        (old, new),
        (tcp::CLOSE, tcp::LISTEN)
            | (tcp::CLOSE, tcp::SYN_SENT)
            | (tcp::ESTABLISHED, tcp::FIN_WAIT1)
            | (tcp::CLOSE_WAIT, tcp::LAST_ACK)
            | (tcp::LISTEN, tcp::CLOSE)
    )
}

/// True when a list of `n` ports (read with `at`, at most [`MAX_PORTS`]) is empty or holds
/// `port`.
#[inline]
pub fn port_listed(n: u16, at: impl Fn(usize) -> u16, port: u16) -> bool {
    if n == 0 {
        return true;
    }
    let mut found = false;
    for i in 0..MAX_PORTS {
        if i < n as usize && at(i) == port {
            found = true;
        }
    }
    found
}

/// A port the kernel has not set yet, for [`ports_pass`]: it meets every condition on it.
/// (Plain integers, not `Option`s: a call passing `None` would leave the register of the
/// `Option`'s value unset, and the verifier refuses a function that copies an unset
/// register.)
pub const PORT_UNSET: u32 = u32::MAX;
/// A port the kernel has not set yet, for [`ports_pass`]: it meets no condition on it, so
/// a transition that passes with it passes whatever the port turns out to be.
pub const PORT_UNLISTED: u32 = u32::MAX - 1;

/// A list of ports of the filter: how many, and an accessor.
pub struct Ports<F: Fn(usize) -> u16> {
    pub n: u16,
    pub at: F,
}

impl<F: Fn(usize) -> u16> Ports<F> {
    /// Whether `port` (a port, [`PORT_UNSET`] or [`PORT_UNLISTED`]) meets the condition
    /// that it be in the list; an empty list sets none.
    #[inline(always)]
    fn met_by(&self, port: u32) -> bool {
        match u16::try_from(port) {
            Ok(port) => port_listed(self.n, &self.at, port),
            Err(_) => port == PORT_UNSET || self.n == 0,
        }
    }

    /// Whether `port` (a port or [`PORT_UNLISTED`]) is in the list.
    #[inline(always)]
    fn holds(&self, port: u32) -> bool {
        u16::try_from(port).is_ok_and(|port| self.n != 0 && port_listed(self.n, &self.at, port))
    }
}

/// Whether a transition's local port `sport` and remote port `dport` (each a port,
/// [`PORT_UNSET`] or [`PORT_UNLISTED`]) meet the filter's port conditions: the local one
/// in `local`, the remote one in `remote`, and either in `either` (with one of them unset,
/// that condition may still be met, and counts as met).
#[inline(always)]
pub fn ports_pass(
    local: Ports<impl Fn(usize) -> u16>,
    remote: Ports<impl Fn(usize) -> u16>,
    either: Ports<impl Fn(usize) -> u16>,
    sport: u32,
    dport: u32,
) -> bool {
    if !local.met_by(sport) || !remote.met_by(dport) {
        return false;
    }
    either.n == 0
        || sport == PORT_UNSET
        || dport == PORT_UNSET
        || either.holds(sport)
        || either.holds(dport)
}

/// Whether an address of `family` lies in a network, compared byte by byte as the filter
/// stores it: `net(j)` gives byte `j` of the network's mask and of its address, and an
/// IPv4 address is compared as v4-mapped (`::ffff:a.b.c.d`, its four bytes first in `a`).
#[inline(always)]
pub fn in_net(family: u16, a: &[u8; 16], net: impl Fn(usize) -> (u8, u8)) -> bool {
    for j in 0..16 {
        let byte = if family != crate::AF_INET {
            a[j]
        } else if j < 10 {
            0
        } else if j < 12 {
            0xff
        } else {
            a[j - 12]
        };
        let (mask, addr) = net(j);
        if byte & mask != addr {
            return false;
        }
    }
    true
}

const V4_MAPPED_MARK: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// An address as four native-endian words.
#[inline]
pub fn words(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}

#[inline]
fn is_v4_mapped(w: [u32; 4]) -> bool {
    w[0] == 0 && w[1] == 0 && w[2] == V4_MAPPED_MARK
}

/// An IPv6 socket whose two addresses are v4-mapped, or one v4-mapped and the other
/// unspecified, is IPv4 on the wire: its two IPv4 addresses (as the last word of each),
/// or `None` when it is IPv6.
#[inline]
pub fn v4_on_the_wire(s: [u32; 4], d: [u32; 4]) -> Option<(u32, u32)> {
    let s_v4 = is_v4_mapped(s) || s == [0; 4];
    let d_v4 = is_v4_mapped(d) || d == [0; 4];
    (s_v4 && d_v4 && (is_v4_mapped(s) || is_v4_mapped(d))).then_some((s[3], d[3]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(text: &str) -> [u8; 16] {
        text.parse::<std::net::Ipv6Addr>().unwrap().octets()
    }

    #[test]
    fn hit_ids_differ_by_socket_and_by_either_state() {
        let sk = 0xffff_8880_1234_5678;
        let id = hit_id(sk, tcp::SYN_SENT, tcp::ESTABLISHED);
        assert_eq!(id, hit_id(sk, tcp::SYN_SENT, tcp::ESTABLISHED));
        assert_ne!(id, hit_id(sk + 8, tcp::SYN_SENT, tcp::ESTABLISHED));
        assert_ne!(id, hit_id(sk, tcp::CLOSE, tcp::ESTABLISHED));
        assert_ne!(id, hit_id(sk, tcp::SYN_SENT, tcp::CLOSE));
        // Swapped states are another hit.
        assert_ne!(hit_id(sk, 1, 2), hit_id(sk, 2, 1));
        // Never 0 for a kernel address (the backup takes 0 for "unreadable").
        for old in 0..=tcp::MAX {
            for new in 0..=tcp::MAX {
                assert_ne!(hit_id(sk, old, new), 0);
            }
        }
    }

    fn list(ports: &[u16]) -> Ports<impl Fn(usize) -> u16 + '_> {
        Ports { n: ports.len() as u16, at: move |i| ports.get(i).copied().unwrap_or(0) }
    }

    fn pass(l: &[u16], r: &[u16], e: &[u16], sport: u32, dport: u32) -> bool {
        ports_pass(list(l), list(r), list(e), sport, dport)
    }

    #[test]
    fn ports_pass_the_filter_by_each_list_and_by_either() {
        assert!(pass(&[], &[], &[], 1, 2), "no condition");
        assert!(pass(&[80], &[], &[], 80, 9));
        assert!(!pass(&[80], &[], &[], 81, 9));
        assert!(pass(&[], &[5432], &[], 9, 5432));
        assert!(!pass(&[], &[5432], &[], 5432, 9), "a remote-port list looks at the remote port only");
        assert!(pass(&[], &[], &[443], 443, 9));
        assert!(pass(&[], &[], &[443], 9, 443));
        assert!(!pass(&[], &[], &[443], 9, 9));
        assert!(!pass(&[80], &[], &[443], 443, 443), "every list is a condition of its own");
    }

    #[test]
    fn an_unset_port_meets_every_condition_and_an_unlisted_one_none() {
        // A connect before its local port is bound, to port 443.
        for sport in [PORT_UNSET, PORT_UNLISTED] {
            assert!(pass(&[], &[], &[443], sport, 443), "the remote port alone meets --port");
            assert!(pass(&[], &[], &[], sport, 443));
        }
        // To another port: it may pass once bound (UNSET), but not whatever the port is.
        assert!(pass(&[], &[], &[443], PORT_UNSET, 80));
        assert!(!pass(&[], &[], &[443], PORT_UNLISTED, 80));
        // A local-port list: decided only by the port.
        assert!(pass(&[8080], &[], &[], PORT_UNSET, 443));
        assert!(!pass(&[8080], &[], &[], PORT_UNLISTED, 443));
        // Unset on the remote side (a child socket before its peer is copied in).
        assert!(pass(&[], &[5432], &[], 9, PORT_UNSET));
        assert!(!pass(&[], &[5432], &[], 9, PORT_UNLISTED));
        assert!(pass(&[], &[], &[9], 9, PORT_UNLISTED), "the local port alone meets --port");
    }

    #[test]
    fn only_the_owners_system_calls_are_made_by_the_owner() {
        let mut made = 0;
        for old in 0..=tcp::MAX {
            for new in 0..=tcp::MAX {
                if made_by_owner(old, new) {
                    made += 1;
                }
            }
        }
        assert_eq!(made, 5);
        assert!(made_by_owner(tcp::CLOSE, tcp::SYN_SENT));
        assert!(made_by_owner(tcp::CLOSE_WAIT, tcp::LAST_ACK));
        // Made in softirq, by whatever task the CPU ran.
        assert!(!made_by_owner(tcp::LISTEN, tcp::SYN_RECV));
        assert!(!made_by_owner(tcp::SYN_SENT, tcp::ESTABLISHED));
        assert!(!made_by_owner(tcp::FIN_WAIT2, tcp::CLOSE));
    }

    #[test]
    fn port_lists_match_only_their_first_n_entries() {
        let list = [80u16, 443, 8080, 0, 0, 0, 0, 9];
        let at = |i: usize| list[i];
        assert!(port_listed(0, at, 1), "an empty list matches every port");
        assert!(port_listed(3, at, 443));
        assert!(!port_listed(3, at, 9), "entries past n are not in the list");
        assert!(!port_listed(3, at, 0));
        assert!(port_listed(8, at, 9));
    }

    fn net(addr: &str, prefix: u32) -> ([u8; 16], [u8; 16]) {
        let a = v6(addr);
        let mut mask = [0u8; 16];
        for (j, m) in mask.iter_mut().enumerate() {
            let bits = prefix.saturating_sub(8 * j as u32).min(8);
            *m = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
        }
        let masked: Vec<u8> = a.iter().zip(mask).map(|(x, m)| x & m).collect();
        (masked.try_into().unwrap(), mask)
    }

    #[test]
    fn networks_match_ipv4_as_v4_mapped_and_ipv6_as_is() {
        let (addr, mask) = net("::ffff:10.1.0.0", 96 + 16);
        let at = |j: usize| (mask[j], addr[j]);
        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&[10, 1, 200, 3]);
        assert!(in_net(crate::AF_INET, &v4, at));
        v4[1] = 2;
        assert!(!in_net(crate::AF_INET, &v4, at));
        // The same bytes in an IPv6 socket's field are another address.
        assert!(!in_net(crate::AF_INET6, &v4, at));
        assert!(in_net(crate::AF_INET6, &v6("::ffff:10.1.9.9"), at));

        let (addr, mask) = net("2001:db8::", 32);
        let at = |j: usize| (mask[j], addr[j]);
        assert!(in_net(crate::AF_INET6, &v6("2001:db8:ffff::1"), at));
        assert!(!in_net(crate::AF_INET6, &v6("2001:db9::1"), at));
        // A zero-length network holds everything.
        let any = |_| (0, 0);
        assert!(in_net(crate::AF_INET6, &v6("fe80::1"), any));
    }

    #[test]
    fn ipv6_sockets_are_ipv4_when_mapped() {
        let w = |t: &str| words(&v6(t));
        let mapped = v6("::ffff:127.0.0.2");
        let expected = u32::from_ne_bytes([127, 0, 0, 2]);
        assert_eq!(words(&mapped)[3], expected);
        assert_eq!(
            v4_on_the_wire(w("::ffff:127.0.0.1"), w("::ffff:127.0.0.2")).map(|p| p.1),
            Some(expected)
        );
        // A listener on a v4-mapped address before its peer is known.
        assert!(v4_on_the_wire(w("::ffff:127.0.0.1"), w("::")).is_some());
        // Both unspecified: an IPv6 wildcard listener.
        assert_eq!(v4_on_the_wire(w("::"), w("::")), None);
        assert_eq!(v4_on_the_wire(w("::1"), w("::ffff:127.0.0.1")), None);
        assert_eq!(v4_on_the_wire(w("2001:db8::1"), w("2001:db8::2")), None);
    }
}
