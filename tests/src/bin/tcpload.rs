//! tcpload: the TCP workload portrace's end-to-end tests trace. It opens and closes real
//! connections (over loopback or between network namespaces) in a chosen shape: the client
//! closes first or the server does, either side may abort with a reset (SO_LINGER 0), a
//! client may connect from a fixed source port or keep its connections open until told to
//! close them, and a client may expect its connections to be refused, to time out or to be
//! reset. It exits non-zero on anything unexpected, so a test knows exactly which
//! transitions the kernel emitted.
//!
//! ```text
//! tcpload server --listen ADDR:PORT --count N [--close first|second] [--linger0]
//!                [--expect reset] [--announce] [--keep-open] [--timeout SECS] [--wait-stdin]
//!                [--stats]
//! tcpload client --connect ADDR:PORT --count N [--concurrency C] [--close first|second]
//!                [--linger0] [--bind ADDR:PORT] [--hold] [--sweep]
//!                [--expect refused|timeout|reset] [--timeout SECS] [--wait-stdin] [--stats]
//! ```
//!
//! `--keep-open` makes the server accept its N connections and never close them: it
//! prints `done N` once all are accepted and keeps them (and itself) alive until stdin
//! closes or it is killed, so every connection the client closes stays in CLOSE_WAIT.
//! `--sweep` makes the client's connection k (from 0) go to port PORT+k, one connection
//! per port, as a port scan does (with `--expect refused` for ports nobody listens on).
//!
//! `--close` names who closes first: for the server `first` closes each accepted socket at
//! once and `second` (its default) reads until the client's EOF; for the client `first`
//! (its default) closes right after connect and `second` reads until the server's EOF.
//! `--linger0` closes with SO_LINGER set to 0 seconds, which aborts the connection with a
//! reset instead of a FIN. `--expect reset` (with `--close second`) requires each read to
//! end in ECONNRESET instead of EOF; `--expect refused` and `--expect timeout` require each
//! connect to fail with ECONNREFUSED or ETIMEDOUT. `--bind` connects from that source
//! address and port (with SO_REUSEADDR; one connection at a time). `--hold` makes the
//! client open all its connections one after the other, print `connected N`, and close
//! them only after a line on stdin. `--announce` makes the server print `accepted` after
//! each accept. The server prints `ready` once it listens; both print `done N` when
//! finished. `--wait-stdin` waits for a line on stdin before touching the network, so a
//! test can learn the process id (for a `--pid` filter) before any traffic exists.
//! `--stats` prints the elapsed time and connection rate on stderr. IPv6 addresses are
//! written `[::1]:PORT`. Only std and libc are used.

use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

/// The listen backlog: large enough that an unpaced burst never overflows the accept queue
/// (an overflow drops handshakes, whose retries end some connections with resets). The
/// kernel caps it at `net.core.somaxconn`, which the tests' namespaces raise to match.
const BACKLOG: libc::c_int = 65535;
/// Accepting threads in the server.
const ACCEPT_THREADS: usize = 2;
const USAGE: &str = "usage:
  tcpload server --listen ADDR:PORT --count N [--close first|second] [--linger0]
                 [--expect reset] [--announce] [--keep-open] [--timeout SECS] [--wait-stdin] [--stats]
  tcpload client --connect ADDR:PORT --count N [--concurrency C] [--rate CONN/S] [--close first|second]
                 [--linger0] [--bind ADDR:PORT] [--hold] [--sweep] [--expect refused|timeout|reset]
                 [--timeout SECS] [--wait-stdin] [--stats]";

/// Who closes the connection first, from the point of view of the process given the flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Close {
    /// This side closes as soon as the connection exists.
    First,
    /// This side reads until the peer's EOF, then closes.
    Second,
}

/// How each connection must end, from the point of view of the process given the flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Connected, and (with `--close second`) read to EOF.
    Normal,
    /// The connect fails with ECONNREFUSED.
    Refused,
    /// The connect fails with ETIMEDOUT.
    Timeout,
    /// Connected, and the read fails with ECONNRESET.
    Reset,
}

#[derive(Clone, Debug)]
struct Options {
    addr: SocketAddr,
    count: usize,
    concurrency: usize,
    close: Close,
    linger0: bool,
    bind: Option<SocketAddr>,
    hold: bool,
    announce: bool,
    outcome: Outcome,
    timeout: Duration,
    wait_stdin: bool,
    stats: bool,
    /// Connections per second, all threads together; `None` for as fast as possible.
    rate: Option<u64>,
    /// Server: keep every accepted connection open until stdin closes.
    keep_open: bool,
    /// Client: connection k goes to port PORT+k.
    sweep: bool,
}

/// What a connection does once it exists; shared by the server and the client.
#[derive(Clone, Copy, Debug)]
struct Ending {
    close: Close,
    linger0: bool,
    /// Whether the read (with [`Close::Second`]) must end in ECONNRESET.
    reset: bool,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = args.first() else {
        eprintln!("tcpload: missing mode\n{USAGE}");
        return ExitCode::from(2);
    };
    let is_server = match mode.as_str() {
        "server" => true,
        "client" => false,
        "-h" | "--help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => {
            eprintln!("tcpload: unknown mode {other:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let options = match parse(is_server, &args[1..]) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("tcpload: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let result = if is_server {
        server(&options)
    } else {
        client(&options)
    };
    match result {
        Ok(done) => {
            if options.stats {
                let secs = started.elapsed().as_secs_f64();
                eprintln!(
                    "tcpload {mode}: {done} connections in {secs:.3} s ({:.0}/s)",
                    done as f64 / secs.max(1e-9)
                );
            }
            println!("done {done}");
            let _ = io::stdout().flush();
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("tcpload {mode}: {message}");
            ExitCode::FAILURE
        }
    }
}

fn parse(is_server: bool, args: &[String]) -> Result<Options, String> {
    let mut addr = None;
    let mut count = None;
    let mut concurrency = 1usize;
    let mut rate = None;
    let mut close = if is_server {
        Close::Second
    } else {
        Close::First
    };
    let mut linger0 = false;
    let mut bind = None;
    let mut hold = false;
    let mut announce = false;
    let mut outcome = Outcome::Normal;
    let mut timeout = Duration::from_secs(60);
    let mut wait_stdin = false;
    let mut stats = false;
    let mut keep_open = false;
    let mut sweep = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value")),
            }
        };
        match flag {
            "--listen" if is_server => addr = Some(parse_addr(&value(flag)?)?),
            "--connect" if !is_server => addr = Some(parse_addr(&value(flag)?)?),
            "--bind" if !is_server => bind = Some(parse_addr(&value(flag)?)?),
            "--count" => count = Some(parse_number(flag, &value(flag)?)?),
            "--rate" if !is_server => {
                let r: usize = parse_number(flag, &value(flag)?)?;
                if r == 0 {
                    return Err("--rate must be at least 1 connection per second".into());
                }
                rate = Some(r as u64);
            }
            "--concurrency" if !is_server => {
                concurrency = parse_number(flag, &value(flag)?)?;
                if concurrency == 0 {
                    return Err("--concurrency must be at least 1".into());
                }
            }
            "--close" => {
                close = match value(flag)?.as_str() {
                    "first" => Close::First,
                    "second" => Close::Second,
                    other => return Err(format!("--close takes first or second, not {other:?}")),
                }
            }
            "--expect" => {
                outcome = match (value(flag)?.as_str(), is_server) {
                    ("reset", _) => Outcome::Reset,
                    ("refused", false) => Outcome::Refused,
                    ("timeout", false) => Outcome::Timeout,
                    (other, true) => return Err(format!("--expect takes reset, not {other:?}")),
                    (other, false) => {
                        return Err(format!(
                            "--expect takes refused, timeout or reset, not {other:?}"
                        ))
                    }
                }
            }
            "--timeout" => {
                let secs: u64 = parse_number(flag, &value(flag)?)?;
                timeout = Duration::from_secs(secs.max(1));
            }
            "--linger0" if inline.is_none() => linger0 = true,
            "--hold" if inline.is_none() && !is_server => hold = true,
            "--announce" if inline.is_none() && is_server => announce = true,
            "--wait-stdin" if inline.is_none() => wait_stdin = true,
            "--stats" if inline.is_none() => stats = true,
            "--keep-open" if inline.is_none() && is_server => keep_open = true,
            "--sweep" if inline.is_none() && !is_server => sweep = true,
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    let addr = addr.ok_or(if is_server {
        "--listen is required"
    } else {
        "--connect is required"
    })?;
    let count = count.ok_or("--count is required")?;
    if outcome == Outcome::Reset && close != Close::Second {
        return Err("--expect reset needs --close second (the reset ends the read)".into());
    }
    if (bind.is_some() || hold || sweep) && concurrency != 1 {
        return Err("--bind, --hold and --sweep make one connection at a time: --concurrency 1".into());
    }
    if sweep && usize::from(addr.port()) + count > 65536 {
        return Err(format!("--sweep from port {} with --count {count} goes past port 65535", addr.port()));
    }
    Ok(Options {
        addr,
        count,
        concurrency,
        close,
        linger0,
        bind,
        hold,
        announce,
        outcome,
        timeout,
        wait_stdin,
        stats,
        rate,
        keep_open,
        sweep,
    })
}

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("not an ADDR:PORT (IPv6 as [::1]:PORT): {text:?}"))
}

fn parse_number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{flag} takes a non-negative number, not {text:?}"))
}

/// Blocks until a line arrives on stdin; EOF first is an error (the test went away).
fn wait_for_stdin() -> Result<(), String> {
    let mut line = String::new();
    match io::stdin().lock().read_line(&mut line) {
        Ok(0) => Err("stdin closed before the go line".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("reading stdin: {e}")),
    }
}

/// Prints a line and flushes it, so the test sees it at once.
fn say(line: &str) -> Result<(), String> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("writing stdout: {e}"))
}

/// A new TCP socket of `addr`'s family, with SO_REUSEADDR.
fn tcp_socket(addr: SocketAddr) -> io::Result<OwnedFd> {
    let domain = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain system call; the descriptor is owned by the OwnedFd at once, so it is
    // closed on every error path below.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a freshly created socket that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: `one` outlives the call and the length matches its type.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// `addr` as a C socket address and its length.
fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in.
            let sin = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn bind(fd: &OwnedFd, addr: SocketAddr) -> io::Result<()> {
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` holds a valid address of `len` bytes for this socket's family.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&storage as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A listening socket with SO_REUSEADDR and the large backlog (std's own `bind` uses 128).
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let fd = tcp_socket(addr)?;
    bind(&fd, addr)?;
    // SAFETY: plain system call on a bound socket we own.
    if unsafe { libc::listen(fd.as_raw_fd(), BACKLOG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpListener::from(fd))
}

/// Connects to `addr`, from `from` if given (bound with SO_REUSEADDR first).
fn connect(addr: SocketAddr, from: Option<SocketAddr>) -> io::Result<TcpStream> {
    let Some(from) = from else {
        return TcpStream::connect(addr);
    };
    let fd = tcp_socket(from)?;
    bind(&fd, from)?;
    let (storage, len) = sockaddr(addr);
    loop {
        // SAFETY: `storage` holds a valid address of `len` bytes for this socket's family.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&storage as *const libc::sockaddr_storage).cast(),
                len,
            )
        };
        if rc == 0 {
            return Ok(TcpStream::from(fd));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Sets SO_LINGER to on, 0 seconds: the next close aborts the connection with a reset.
fn set_linger0(stream: &TcpStream) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `linger` outlives the call and the length matches its type.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads and discards until EOF.
fn read_to_eof(stream: &mut TcpStream) -> io::Result<()> {
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Ends one connection as `ending` says: reads to the peer's EOF (or reset) first if this
/// side closes second, then closes, with a reset if `linger0`.
fn end_connection(mut stream: TcpStream, ending: Ending) -> Result<(), String> {
    if ending.close == Close::Second {
        match (read_to_eof(&mut stream), ending.reset) {
            (Ok(()), false) => {}
            (Err(e), true) if e.raw_os_error() == Some(libc::ECONNRESET) => {}
            (Ok(()), true) => return Err("read EOF, expected ECONNRESET".into()),
            (Err(e), _) => return Err(format!("read: {e}")),
        }
    }
    if ending.linger0 {
        set_linger0(&stream).map_err(|e| format!("SO_LINGER: {e}"))?;
    }
    drop(stream);
    Ok(())
}

/// Collects one result per worker thread, or fails once the deadline passes.
fn join_workers(
    results: mpsc::Receiver<Result<(), String>>,
    workers: usize,
    deadline: Instant,
    progress: &AtomicUsize,
    count: usize,
    what: &str,
) -> Result<(), String> {
    for _ in 0..workers {
        let left = deadline.saturating_duration_since(Instant::now());
        match results.recv_timeout(left) {
            Ok(Ok(())) => {}
            Ok(Err(message)) => return Err(message),
            Err(_) => {
                return Err(format!(
                    "timed out: {} of {count} connections {what}",
                    progress.load(Ordering::Relaxed)
                ))
            }
        }
    }
    Ok(())
}

fn server(options: &Options) -> Result<usize, String> {
    if options.wait_stdin {
        wait_for_stdin()?;
    }
    let deadline = Instant::now() + options.timeout;
    let listener = listen(options.addr).map_err(|e| format!("listen on {}: {e}", options.addr))?;
    say("ready")?;
    if options.keep_open {
        return server_keeping(options, &listener, deadline);
    }

    // Each accept is claimed before it is made, so the threads together accept exactly
    // `count` connections and none is left blocked on one more.
    let claimed = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let ending = Ending {
        close: options.close,
        linger0: options.linger0,
        reset: options.outcome == Outcome::Reset,
    };
    let (tx, rx) = mpsc::channel();
    for _ in 0..ACCEPT_THREADS {
        let listener = listener
            .try_clone()
            .map_err(|e| format!("dup listener: {e}"))?;
        let (claimed, finished, tx) = (claimed.clone(), finished.clone(), tx.clone());
        let (count, announce) = (options.count, options.announce);
        thread::spawn(move || {
            let result = (|| {
                while claimed.fetch_add(1, Ordering::Relaxed) < count {
                    let (stream, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
                    if announce {
                        say("accepted")?;
                    }
                    end_connection(stream, ending)?;
                    finished.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })();
            let _ = tx.send(result);
        });
    }
    drop(tx);
    join_workers(
        rx,
        ACCEPT_THREADS,
        deadline,
        &finished,
        options.count,
        "accepted",
    )?;
    Ok(finished.load(Ordering::Relaxed))
}

/// `--keep-open`: accepts `count` connections, says `done N`, then keeps them all open
/// until stdin closes (or the process is killed); they are closed only as it exits.
fn server_keeping(options: &Options, listener: &TcpListener, deadline: Instant) -> Result<usize, String> {
    listener.set_nonblocking(true).map_err(|e| format!("listener: {e}"))?;
    let mut open = Vec::with_capacity(options.count);
    while open.len() < options.count {
        match listener.accept() {
            Ok((stream, _)) => {
                if options.announce {
                    say("accepted")?;
                }
                open.push(stream);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(format!("timed out: {} of {} connections accepted", open.len(), options.count));
                }
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
    say(&format!("done {}", open.len()))?;
    let mut rest = Vec::new();
    let _ = io::stdin().lock().read_to_end(&mut rest);
    Ok(open.len())
}

/// One connection attempt: `Ok(Some(stream))` when it connected as expected, `Ok(None)`
/// when it failed as expected.
fn attempt(options: &Options) -> Result<Option<TcpStream>, String> {
    attempt_to(options, options.addr)
}

/// [`attempt`] to `addr`.
fn attempt_to(options: &Options, addr: SocketAddr) -> Result<Option<TcpStream>, String> {
    let expected_errno = match options.outcome {
        Outcome::Refused => Some(libc::ECONNREFUSED),
        Outcome::Timeout => Some(libc::ETIMEDOUT),
        Outcome::Normal | Outcome::Reset => None,
    };
    match (connect(addr, options.bind), expected_errno) {
        (Ok(stream), None) => Ok(Some(stream)),
        (Ok(_), Some(errno)) => Err(format!(
            "connect to {addr} succeeded, expected it to fail with {}",
            io::Error::from_raw_os_error(errno)
        )),
        (Err(e), Some(errno)) if e.raw_os_error() == Some(errno) => Ok(None),
        (Err(e), _) => Err(format!("connect to {addr}: {e}")),
    }
}

fn client(options: &Options) -> Result<usize, String> {
    if options.wait_stdin {
        wait_for_stdin()?;
    }
    let ending = Ending {
        close: options.close,
        linger0: options.linger0,
        reset: options.outcome == Outcome::Reset,
    };
    if options.hold {
        return client_holding(options, ending);
    }
    let deadline = Instant::now() + options.timeout;
    let threads = options.concurrency.min(options.count.max(1));
    let finished = Arc::new(AtomicUsize::new(0));
    let options = Arc::new(options.clone());
    let (tx, rx) = mpsc::channel();
    for i in 0..threads {
        // Thread i makes its share of the connections, one after the other.
        let share = options.count / threads + usize::from(i < options.count % threads);
        let (finished, tx, options) = (finished.clone(), tx.clone(), options.clone());
        thread::spawn(move || {
            let result = (|| {
                // With --rate, connection k of this thread starts no earlier than k
                // intervals after the start (the threads share the rate evenly).
                let interval = options
                    .rate
                    .map(|r| Duration::from_nanos(1_000_000_000 * threads as u64 / r));
                let start = Instant::now();
                for k in 0..share {
                    if let Some(interval) = interval {
                        let due = start + interval * k as u32;
                        let now = Instant::now();
                        if due > now {
                            thread::sleep(due - now);
                        }
                    }
                    let mut addr = options.addr;
                    if options.sweep {
                        // One thread (checked in `parse`): connection k goes to PORT+k.
                        addr.set_port(options.addr.port() + k as u16);
                    }
                    if let Some(stream) = attempt_to(&options, addr)? {
                        end_connection(stream, ending)?;
                    }
                    finished.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })();
            let _ = tx.send(result);
        });
    }
    drop(tx);
    join_workers(rx, threads, deadline, &finished, options.count, "made")?;
    Ok(finished.load(Ordering::Relaxed))
}

/// `--hold`: opens every connection, says so, waits for the go line, then ends them all.
fn client_holding(options: &Options, ending: Ending) -> Result<usize, String> {
    let mut open = Vec::with_capacity(options.count);
    for _ in 0..options.count {
        if let Some(stream) = attempt(options)? {
            open.push(stream);
        }
    }
    say(&format!("connected {}", open.len()))?;
    wait_for_stdin()?;
    let n = open.len();
    for stream in open {
        end_connection(stream, ending)?;
    }
    Ok(n)
}
