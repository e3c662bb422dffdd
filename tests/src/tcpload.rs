//! Driving the tcpload workload generator from a test: a server that is listening when
//! [`Tcpload::server`] returns, clients run to completion, and clients held at the start
//! line until the test says go (so their pid can be handed to a filter first).

use std::path::PathBuf;
use std::time::Duration;

use crate::netns::Netns;
use crate::process::{Finished, Proc};

/// How long a server may take to print `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// tcpload's own deadline, in seconds, after which it gives up and exits non-zero.
const TCPLOAD_TIMEOUT_SECS: &str = "60";
/// How long the test waits for a tcpload process: longer than its own deadline.
pub const WAIT: Duration = Duration::from_secs(70);

/// Which side of the connection closes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closer {
    Client,
    Server,
}

impl Closer {
    /// The `--close` value for the server.
    fn server_flag(self) -> &'static str {
        match self {
            Closer::Server => "first",
            Closer::Client => "second",
        }
    }

    /// The `--close` value for the client.
    fn client_flag(self) -> &'static str {
        match self {
            Closer::Client => "first",
            Closer::Server => "second",
        }
    }
}

/// The tcpload binary; integration tests get its path from
/// `env!("CARGO_BIN_EXE_tcpload")`.
#[derive(Clone, Debug)]
pub struct Tcpload {
    bin: PathBuf,
}

impl Tcpload {
    pub fn new(bin: impl Into<PathBuf>) -> Tcpload {
        Tcpload { bin: bin.into() }
    }

    /// Starts a server in `ns` that accepts exactly `count` connections on `listen` and
    /// returns once it listens. Wait for it with [`Proc::wait_success`].
    pub fn server(&self, ns: &Netns, listen: &str, count: usize, closer: Closer) -> Proc {
        let count = count.to_string();
        let args = [
            "server",
            "--listen",
            listen,
            "--count",
            &count,
            "--close",
            closer.server_flag(),
            "--timeout",
            TCPLOAD_TIMEOUT_SECS,
        ];
        let mut server = ns.spawn(&format!("tcpload server on {listen}"), &self.bin, &args);
        server.wait_line("ready", READY_TIMEOUT);
        server
    }

    /// Starts a client in `ns` that makes `count` connections to `connect` with
    /// `concurrency` threads. With `hold`, it waits for [`Tcpload::go`] before connecting.
    pub fn spawn_client(
        &self,
        ns: &Netns,
        connect: &str,
        count: usize,
        concurrency: usize,
        closer: Closer,
        hold: bool,
    ) -> Proc {
        let (count, concurrency) = (count.to_string(), concurrency.to_string());
        let mut args = vec![
            "client",
            "--connect",
            connect,
            "--count",
            &count,
            "--concurrency",
            &concurrency,
            "--close",
            closer.client_flag(),
            "--timeout",
            TCPLOAD_TIMEOUT_SECS,
        ];
        if hold {
            args.push("--wait-stdin");
        }
        ns.spawn(&format!("tcpload client to {connect}"), &self.bin, &args)
    }

    /// Releases a client started with `hold`.
    pub fn go(client: &mut Proc) {
        client.send_line("go");
    }

    /// Waits for a client and checks it succeeded and reported `done count`.
    pub fn finish_client(client: Proc, count: usize) -> Finished {
        let finished = client.wait_success(WAIT);
        let want = format!("done {count}");
        assert!(
            finished.stdout.contains(&want),
            "{} did not print {want:?}: {:?}",
            finished.label,
            finished.stdout
        );
        finished
    }

    /// Makes `count` connections to `connect` and waits until the client is done.
    pub fn client(&self, ns: &Netns, connect: &str, count: usize, concurrency: usize, closer: Closer) -> Finished {
        let client = self.spawn_client(ns, connect, count, concurrency, closer, false);
        Tcpload::finish_client(client, count)
    }

    /// Makes `count` connections to `connect` that must all be refused.
    pub fn client_refused(&self, ns: &Netns, connect: &str, count: usize) -> Finished {
        let count_text = count.to_string();
        let args = ["client", "--connect", connect, "--count", &count_text, "--expect", "refused", "--timeout", TCPLOAD_TIMEOUT_SECS];
        let client = ns.spawn(&format!("tcpload client to {connect} (refused)"), &self.bin, &args);
        Tcpload::finish_client(client, count)
    }
}
