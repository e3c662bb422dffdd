//! Driving the tcpload workload generator from a test: a server that is listening when
//! [`Tcpload::server`] returns (or one held at its start line until the test releases it,
//! so its pid can go into a filter first), clients run to completion, clients held at the
//! start line until the test says go, and extra tcpload flags (resets, a fixed source port,
//! connections kept open) passed through. [`Tcpload::renamed`] runs the same program under
//! another command name, for the `--comm` filter.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::netns::Netns;
use crate::process::{Finished, Proc};

/// How long a server may take to print `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// tcpload's own deadline, in seconds, after which it gives up and exits non-zero.
const TCPLOAD_TIMEOUT_SECS: &str = "60";
/// How long the test waits for a tcpload process: longer than its own deadline.
pub const WAIT: Duration = Duration::from_secs(70);

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

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

/// tcpload under another name: a symbolic link `<temp dir>/<name>` to the binary, so the
/// processes it starts have `name` as their command name. The directory is removed on drop.
pub struct Renamed {
    dir: PathBuf,
    load: Tcpload,
}

impl Renamed {
    pub fn load(&self) -> &Tcpload {
        &self.load
    }
}

impl Drop for Renamed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Tcpload {
    pub fn new(bin: impl Into<PathBuf>) -> Tcpload {
        Tcpload { bin: bin.into() }
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The same program reached through a link named `name` (at most 15 bytes: the kernel
    /// keeps that much of a command name).
    pub fn renamed(&self, name: &str) -> Renamed {
        assert!(
            !name.is_empty() && name.len() <= 15 && !name.contains('/'),
            "{name:?} cannot be a whole command name"
        );
        let dir = std::env::temp_dir().join(format!(
            "portrace-t-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        // From here on, Drop removes the directory even if the link fails.
        let renamed = Renamed {
            load: Tcpload::new(dir.join(name)),
            dir,
        };
        let target = std::fs::canonicalize(&self.bin)
            .unwrap_or_else(|e| panic!("resolving {}: {e}", self.bin.display()));
        std::os::unix::fs::symlink(&target, &renamed.load.bin).unwrap_or_else(|e| {
            panic!(
                "linking {} to {}: {e}",
                renamed.load.bin.display(),
                target.display()
            )
        });
        renamed
    }

    /// The server's arguments.
    fn server_args(listen: &str, count: usize, closer: Closer, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "server",
            "--listen",
            listen,
            "--count",
            &count.to_string(),
            "--close",
            closer.server_flag(),
            "--timeout",
            TCPLOAD_TIMEOUT_SECS,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// Starts a server in `ns` that accepts exactly `count` connections on `listen` and
    /// returns once it listens. Wait for it with [`Proc::wait_success`].
    pub fn server(&self, ns: &Netns, listen: &str, count: usize, closer: Closer) -> Proc {
        self.server_with(ns, listen, count, closer, &[])
    }

    /// [`Tcpload::server`] with extra tcpload flags (`--linger0`, `--expect reset`,
    /// `--announce`).
    pub fn server_with(
        &self,
        ns: &Netns,
        listen: &str,
        count: usize,
        closer: Closer,
        extra: &[&str],
    ) -> Proc {
        let args = Tcpload::server_args(listen, count, closer, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut server = ns.spawn(&format!("tcpload server on {listen}"), &self.bin, &args);
        server.wait_line("ready", READY_TIMEOUT);
        server
    }

    /// Starts a server like [`Tcpload::server_with`] that waits at its start line, before
    /// it listens, until [`Tcpload::release_server`]: its pid can go into a filter first.
    pub fn spawn_server_held(
        &self,
        ns: &Netns,
        listen: &str,
        count: usize,
        closer: Closer,
        extra: &[&str],
    ) -> Proc {
        let mut args = Tcpload::server_args(listen, count, closer, extra);
        args.push("--wait-stdin".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ns.spawn(&format!("tcpload server on {listen}"), &self.bin, &args)
    }

    /// Lets a server started with [`Tcpload::spawn_server_held`] go, and waits until it
    /// listens.
    pub fn release_server(server: &mut Proc) {
        server.send_line("go");
        server.wait_line("ready", READY_TIMEOUT);
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
        let extra: &[&str] = if hold { &["--wait-stdin"] } else { &[] };
        self.spawn_client_with(ns, connect, count, concurrency, closer, extra)
    }

    /// [`Tcpload::spawn_client`] with extra tcpload flags (`--linger0`, `--bind ADDR:PORT`,
    /// `--hold`, `--expect ...`, `--wait-stdin`).
    pub fn spawn_client_with(
        &self,
        ns: &Netns,
        connect: &str,
        count: usize,
        concurrency: usize,
        closer: Closer,
        extra: &[&str],
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
        args.extend_from_slice(extra);
        ns.spawn(&format!("tcpload client to {connect}"), &self.bin, &args)
    }

    /// Releases a client started with `hold` (or `--wait-stdin`), or tells a client started
    /// with `--hold` to close its connections.
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
    pub fn client(
        &self,
        ns: &Netns,
        connect: &str,
        count: usize,
        concurrency: usize,
        closer: Closer,
    ) -> Finished {
        let client = self.spawn_client(ns, connect, count, concurrency, closer, false);
        Tcpload::finish_client(client, count)
    }

    /// Makes `count` connections to `connect` that must all be refused.
    pub fn client_refused(&self, ns: &Netns, connect: &str, count: usize) -> Finished {
        let client = self.spawn_client_with(
            ns,
            connect,
            count,
            1,
            Closer::Client,
            &["--expect", "refused"],
        );
        Tcpload::finish_client(client, count)
    }
}

/// The `tcpload` this package builds, from an integration test (where Cargo names its path
/// in `CARGO_BIN_EXE_tcpload`).
#[macro_export]
macro_rules! tcpload {
    () => {
        $crate::Tcpload::new(env!("CARGO_BIN_EXE_tcpload"))
    };
}
