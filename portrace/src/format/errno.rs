//! Errno values: one table of the names portrace knows, and the three ways it shows one.
//!
//! - A TCP error in a record (`ECONNREFUSED`, else `E<number>`): [`tcp_name`],
//!   [`tcp_text`], [`push_tcp_name`]. Only the errors the kernel reports for a TCP socket
//!   are named there (the names docs/json.md lists).
//! - A failed system call in a message about setting up the trace
//!   (`EPERM (operation not permitted)`, else `errno 99 (<the system's text>)`):
//!   [`described`].
//! - A failed system call in a message about the command portrace runs, in the system's
//!   own words (`No such file or directory`): [`system_text`].

use std::borrow::Cow;
use std::io;

/// An errno portrace names.
struct Known {
    /// From libc, so right for the architecture portrace is built for.
    number: i32,
    /// The C name.
    name: &'static str,
    /// The kernel can report it for a TCP socket.
    tcp: bool,
    /// The description messages about setting up the trace give it, when they name it.
    description: Option<&'static str>,
}

const fn tcp(number: i32, name: &'static str) -> Known {
    Known { number, name, tcp: true, description: None }
}

const fn call(number: i32, name: &'static str, description: &'static str) -> Known {
    Known { number, name, tcp: false, description: Some(description) }
}

const fn both(number: i32, name: &'static str, description: &'static str) -> Known {
    Known { number, name, tcp: true, description: Some(description) }
}

const KNOWN: [Known; 24] = [
    tcp(libc::ECONNREFUSED, "ECONNREFUSED"),
    tcp(libc::ECONNRESET, "ECONNRESET"),
    tcp(libc::ETIMEDOUT, "ETIMEDOUT"),
    tcp(libc::EPIPE, "EPIPE"),
    tcp(libc::EHOSTUNREACH, "EHOSTUNREACH"),
    tcp(libc::ENETUNREACH, "ENETUNREACH"),
    tcp(libc::ECONNABORTED, "ECONNABORTED"),
    tcp(libc::EHOSTDOWN, "EHOSTDOWN"),
    tcp(libc::ENETDOWN, "ENETDOWN"),
    tcp(libc::EPROTO, "EPROTO"),
    both(libc::EACCES, "EACCES", "permission denied"),
    both(libc::EPERM, "EPERM", "operation not permitted"),
    tcp(libc::ENOBUFS, "ENOBUFS"),
    tcp(libc::EMSGSIZE, "EMSGSIZE"),
    both(libc::EINVAL, "EINVAL", "invalid argument"),
    call(libc::ENOENT, "ENOENT", "no such file or directory"),
    call(libc::EFAULT, "EFAULT", "bad address"),
    call(libc::EBUSY, "EBUSY", "device or resource busy"),
    call(libc::ENODEV, "ENODEV", "no such device"),
    call(libc::ENOTDIR, "ENOTDIR", "not a directory"),
    call(libc::ENOMEM, "ENOMEM", "out of memory"),
    call(libc::EROFS, "EROFS", "read-only file system"),
    call(libc::E2BIG, "E2BIG", "argument list too long"),
    call(libc::ENOSYS, "ENOSYS", "function not implemented"),
];

fn known(errno: i32) -> Option<&'static Known> {
    KNOWN.iter().find(|k| k.number == errno)
}

/// The errors the kernel can report for a TCP socket, with their C names.
pub fn tcp_names() -> impl Iterator<Item = (i32, &'static str)> {
    KNOWN.iter().filter(|k| k.tcp).map(|k| (k.number, k.name))
}

/// The C name of an errno TCP can report (`ECONNREFUSED`), if it is one of those.
pub fn tcp_name(errno: i32) -> Option<&'static str> {
    known(errno).filter(|k| k.tcp).map(|k| k.name)
}

/// A TCP error's C name, or `E` and its number (`E999`) when it has none here.
pub fn tcp_text(errno: i32) -> Cow<'static, str> {
    match tcp_name(errno) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(format!("E{errno}")),
    }
}

/// Appends [`tcp_text`] without allocating: the per-event formats' way.
pub fn push_tcp_name(buf: &mut Vec<u8>, errno: i32) {
    match tcp_name(errno) {
        Some(name) => buf.extend_from_slice(name.as_bytes()),
        None => {
            buf.push(b'E');
            buf.extend_from_slice(itoa::Buffer::new().format(errno).as_bytes());
        }
    }
}

/// The symbolic name and a short description of a system call's errno, e.g.
/// `EPERM (operation not permitted)`; `errno 99 (<the system's text>)` for one without.
pub fn described(errno: i32) -> String {
    match known(errno).and_then(|k| Some((k.name, k.description?))) {
        Some((name, description)) => format!("{name} ({description})"),
        None => format!("errno {errno} ({})", io::Error::from_raw_os_error(errno)),
    }
}

/// The system's text for an errno, without the `(os error N)` the standard library adds:
/// `No such file or directory`.
pub fn system_text(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    match text.rfind(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_have_their_c_names() {
        let name = |errno| {
            let mut buf = Vec::new();
            push_tcp_name(&mut buf, errno);
            String::from_utf8(buf).unwrap()
        };
        for (errno, want) in tcp_names() {
            assert_eq!(name(errno), want);
        }
        let mut numbers: Vec<i32> = tcp_names().map(|(n, _)| n).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), tcp_names().count(), "no number twice");
        // The generic Linux numbers, which x86-64 and arm64 use.
        if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            assert_eq!(name(111), "ECONNREFUSED");
            assert_eq!(name(104), "ECONNRESET");
            assert_eq!(name(110), "ETIMEDOUT");
            assert_eq!(name(32), "EPIPE");
            assert_eq!(name(113), "EHOSTUNREACH");
        }
        assert_eq!(name(999), "E999");
        assert_eq!(name(0), "E0");
        assert_eq!(name(-5), "E-5");
    }

    #[test]
    fn every_number_is_named_once() {
        for (i, k) in KNOWN.iter().enumerate() {
            assert!(KNOWN[i + 1..].iter().all(|o| o.number != k.number && o.name != k.name), "{}", k.name);
        }
    }

    #[test]
    fn each_way_names_only_its_own() {
        assert_eq!(tcp_text(libc::ECONNREFUSED), "ECONNREFUSED");
        assert_eq!(tcp_text(libc::ENOENT), format!("E{}", libc::ENOENT));
        assert_eq!(described(libc::EPERM), "EPERM (operation not permitted)");
        assert_eq!(described(libc::ENOENT), "ENOENT (no such file or directory)");
        assert!(described(libc::ECONNREFUSED).starts_with(&format!("errno {} (", libc::ECONNREFUSED)));
        assert_eq!(system_text(libc::ENOENT), "No such file or directory");
        let mut buf = Vec::new();
        push_tcp_name(&mut buf, 999);
        assert_eq!(buf, b"E999");
    }
}
