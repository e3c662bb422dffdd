//! What portrace trusts and what it does not (SECURITY.md), end to end as root:
//!
//! - a copy of the binary given the capabilities the install advice names, run by
//!   `nobody`, cannot read a root-only file through `report --rules`, `replay`, `replay
//!   --info` or `diagram --from`, and quotes none of it; the offline subcommand has no
//!   capability left by the time it opens the file (its `/proc/PID/status`, caught while it
//!   blocks opening a named pipe);
//! - root's writes (`record -o`, `diagram -o`) do not follow a symbolic link `nobody`
//!   planted in a sticky directory, do not replace a file without `--force`, and a start
//!   that fails after `--force` keeps the old file; recordings are 0600, diagrams 0644;
//! - SIGHUP ends a run cleanly (the recording ends with its end record, the private ftrace
//!   instance is removed), and an instance a SIGKILL left behind is removed at the next
//!   start;
//! - Ctrl-C while the run starts (programs attached, nothing printed yet) ends it cleanly
//!   too, the inventory and end record still written, and with `-- CMD` the command is
//!   never started;
//! - a process name holding terminal escapes reaches the text output escaped;
//! - an ordinary client/server workload in Python raises nothing above `info`, and
//!   `--alert-interpreters` turns the interpreter check on.
//!
//! These tests need root and run one at a time.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use portrace_tests::process::run_bounded;
use portrace_tests::tracefile_helpers::{replay, TempDir};
use portrace_tests::{privileged, Netns, Portrace, Proc, Tcpload};
use serde_json::Value;

const NOBODY: u32 = 65534;
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const INSTANCES: &str = "/sys/kernel/tracing/instances";
/// The line the root-only file starts with: it must never appear in anything `nobody` sees.
/// (Not TOML: a key with no value, so a parse error quotes this very line.)
const SECRET: &str = "root-only-secret-7f3a";

/// Records one second of nothing in particular (an address no traffic uses) as root.
fn make_recording(path: &Path) {
    let mut cmd = Command::new(Portrace::bin());
    cmd.args(["record", "-o"]).arg(path).args(["--duration", "1s", "--addr", "127.77.8.1"]);
    run_bounded("portrace record --duration 1s", cmd, RUN_TIMEOUT).assert_success();
}

/// A copy of the binary in `dir`, with the capabilities the install advice names, as a
/// careless install would leave it: executable by everyone.
fn capable_copy(dir: &Path) -> PathBuf {
    let copy = dir.join("portrace-caps");
    std::fs::copy(Portrace::bin(), &copy).expect("copying the binary");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut setcap = Command::new("setcap");
    setcap.arg("cap_bpf,cap_perfmon,cap_dac_read_search,cap_sys_admin+ep").arg(&copy);
    run_bounded("setcap on the copy", setcap, RUN_TIMEOUT).assert_success();
    copy
}

/// `bin args...` as `nobody` (uid and gid 65534, no supplementary groups).
fn as_nobody(bin: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args).uid(NOBODY).gid(NOBODY).current_dir("/");
    cmd
}

fn run_as_nobody(bin: &Path, args: &[&str]) -> portrace_tests::Finished {
    run_bounded(&format!("nobody: portrace {}", args.join(" ")), as_nobody(bin, args), RUN_TIMEOUT)
}

/// A directory everyone can enter (the temporary directory's parent is /tmp).
fn open_dir() -> TempDir {
    let dir = TempDir::new();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn a_capable_binary_run_by_another_user_reads_files_with_that_users_rights() {
    privileged!();
    let dir = open_dir();
    let bin = capable_copy(dir.path());

    // Control: run by nobody, the copy does hold the capabilities.
    let doctor = run_as_nobody(&bin, &["doctor", "--json"]);
    let json: Value = serde_json::from_str(&doctor.stdout.join("\n"))
        .unwrap_or_else(|e| panic!("doctor --json is not JSON ({e}): {:?}\n{}", doctor.stdout, doctor.stderr));
    assert_eq!(json["capabilities"]["CAP_BPF"], true, "the copy runs with file capabilities: {json}");

    let secret = dir.file("shadow-like");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let recording = dir.file("root.ptr");
    make_recording(&recording);
    assert_eq!(std::fs::metadata(&recording).unwrap().mode() & 0o777, 0o600, "recordings are private");
    let readable = dir.file("shared.ptr");
    std::fs::copy(&recording, &readable).unwrap();
    std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (secret_s, recording_s, readable_s) =
        (secret.display().to_string(), recording.display().to_string(), readable.display().to_string());

    // The rules file: read with nobody's rights, so neither read nor quoted.
    let report = run_as_nobody(&bin, &["report", &readable_s, "--rules", &secret_s]);
    assert!(!report.status.success(), "{report:?}");
    assert!(!report.stderr.contains("root-only-secret") && !report.stdout.join("\n").contains("root-only-secret"), "{report:?}");
    assert!(report.stderr.contains("cannot read rules file") && report.stderr.contains("Permission denied"), "{}", report.stderr);
    // The same rules file read by root is a parse error quoting the line: root may read it.
    let mut cmd = Command::new(Portrace::bin());
    cmd.args(["report", &readable_s, "--rules", &secret_s]);
    let by_root = run_bounded("root: portrace report --rules", cmd, RUN_TIMEOUT);
    assert!(!by_root.status.success() && by_root.stderr.contains("root-only-secret"), "{by_root:?}");

    // Recordings only root may read.
    for args in [
        vec!["replay", recording_s.as_str()],
        vec!["replay", "--info", recording_s.as_str()],
        vec!["report", recording_s.as_str()],
        vec!["diagram", "--from", recording_s.as_str()],
    ] {
        let run = run_as_nobody(&bin, &args);
        assert!(!run.status.success(), "nobody read a root-only recording with {args:?}: {run:?}");
        assert!(run.stderr.contains("ermission denied"), "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{args:?}: {:?}", run.stdout);
    }
    // What nobody may read still works through the same binary.
    run_as_nobody(&bin, &["replay", "--info", &readable_s]).assert_success();
    run_as_nobody(&bin, &["report", &readable_s]).assert_success();
}

#[test]
fn an_offline_subcommand_has_no_capability_when_it_opens_the_file() {
    privileged!();
    let dir = open_dir();
    let bin = capable_copy(dir.path());
    let fifo = dir.file("pipe.ptr");
    let c = std::ffi::CString::new(fifo.display().to_string()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0, "mkfifo");
    std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o666)).unwrap();

    let fifo_s = fifo.display().to_string();
    let replay = Proc::spawn("nobody: portrace replay FIFO", as_nobody(&bin, &["replay", &fifo_s]));
    let pid = replay.pid();
    // Opening a named pipe blocks until a writer comes: the replay waits there.
    let deadline = Instant::now() + Duration::from_secs(20);
    let wchan = loop {
        let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
        // `fifo_open` or `wait_for_partner`, by kernel version.
        if wchan.contains("fifo") || wchan.contains("partner") || Instant::now() >= deadline {
            break wchan;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the replay's status");
    // Let it go: a writer that writes something that is not a recording.
    std::fs::write(&fifo, b"not a recording").unwrap();
    let finished = replay.wait(RUN_TIMEOUT);
    assert!(wchan.contains("fifo") || wchan.contains("partner"), "the replay never blocked opening the pipe (wchan {wchan:?}): {finished:?}");
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or_else(|| panic!("{name} in {status}"))
    };
    assert_eq!(field("Uid:").split_whitespace().next(), Some("65534"));
    assert_eq!(field("CapEff:"), "0000000000000000", "{status}");
    assert_eq!(field("CapPrm:"), "0000000000000000", "{status}");
    assert_eq!(field("NoNewPrivs:"), "1", "{status}");
    assert!(!finished.status.success(), "{finished:?}");
    assert!(finished.stderr.contains("not a portrace recording") || finished.stderr.contains("recording"), "{}", finished.stderr);
}

/// A sticky directory everyone may write to, as /tmp is.
fn sticky_dir() -> TempDir {
    let dir = TempDir::new();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

/// `nobody` plants a symbolic link at `link` pointing at `target`.
fn plant_link(link: &Path, target: &Path) {
    let mut cmd = Command::new("ln");
    cmd.arg("-s").arg(target).arg(link).uid(NOBODY).gid(NOBODY);
    run_bounded("nobody: ln -s", cmd, RUN_TIMEOUT).assert_success();
    assert_eq!(std::fs::symlink_metadata(link).unwrap().uid(), NOBODY);
}

fn root_portrace(args: &[&str]) -> portrace_tests::Finished {
    let mut cmd = Command::new(Portrace::bin());
    cmd.args(args);
    run_bounded(&format!("root: portrace {}", args.join(" ")), cmd, RUN_TIMEOUT)
}

#[test]
fn roots_writes_do_not_follow_planted_links_nor_replace_without_force() {
    privileged!();
    let dir = sticky_dir();
    let private = TempDir::new();
    let victim = private.file("root-owned");
    std::fs::write(&victim, b"root's private data\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let recording = private.file("run.ptr");
    make_recording(&recording);
    let rec = recording.display().to_string();

    // diagram -o and record -o through a planted link: refused, with or without --force.
    let link = dir.file("out.svg");
    plant_link(&link, &victim);
    let link_s = link.display().to_string();
    for force in [false, true] {
        let mut args = vec!["diagram", "--from", &rec, "-o", &link_s];
        if force {
            args.push("--force");
        }
        let run = root_portrace(&args);
        assert!(!run.status.success(), "{run:?}");
        assert!(run.stderr.contains("is a symbolic link"), "{}", run.stderr);
    }
    let rec_link = dir.file("trace.ptr");
    plant_link(&rec_link, &victim);
    let run = root_portrace(&["record", "-o", &rec_link.display().to_string(), "--force", "--duration", "1s"]);
    assert!(!run.status.success() && run.stderr.contains("is a symbolic link"), "{run:?}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"root's private data\n", "the victim is untouched");
    assert_eq!(std::fs::metadata(&victim).unwrap().mode() & 0o777, 0o600);

    // An existing file needs --force, for every -o.
    let existing = dir.file("existing.svg");
    std::fs::write(&existing, b"keep me").unwrap();
    let existing_s = existing.display().to_string();
    let run = root_portrace(&["diagram", "--from", &rec, "-o", &existing_s]);
    assert!(!run.status.success() && run.stderr.contains("already exists") && run.stderr.contains("--force"), "{run:?}");
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");
    root_portrace(&["diagram", "--from", &rec, "-o", &existing_s, "--force"]).assert_success();
    let drawn = std::fs::read_to_string(&existing).unwrap();
    assert!(drawn.contains("<svg"), "{drawn}");
    assert_eq!(std::fs::metadata(&existing).unwrap().mode() & 0o777, 0o644, "diagrams are 0644");

    // A start that fails after --force (the command cannot be run) keeps the old file.
    let old = dir.file("old.ptr");
    std::fs::copy(&recording, &old).unwrap();
    let before = std::fs::read(&old).unwrap();
    let run = root_portrace(&["record", "-o", &old.display().to_string(), "--force", "--", "/nonexistent/portrace-cmd"]);
    assert_eq!(run.status.code(), Some(127), "{run:?}");
    assert_eq!(std::fs::read(&old).unwrap(), before, "the old recording is kept");
    let mut left: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    left.sort();
    assert_eq!(left, ["existing.svg", "old.ptr", "out.svg", "trace.ptr"], "no temporary file is left");
}

/// The private ftrace instances of portrace process `pid`.
fn instances_of(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("portrace-{pid}-");
    std::fs::read_dir(INSTANCES)
        .expect("tracefs instances")
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

/// Starts `portrace record -o path` and waits until its header is written (tracing has
/// started).
fn start_recorder(path: &Path, addr: &str) -> Proc {
    let mut cmd = Command::new(Portrace::bin());
    cmd.args(["record", "-o"]).arg(path).args(["--addr", addr]);
    let proc = Proc::spawn("portrace record", cmd);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "portrace record did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    proc
}

fn signal(pid: u32, sig: i32) {
    // Only a process this test started, by its id.
    // SAFETY: kill(2) with a pid we own and a valid signal number.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0);
}

#[test]
fn sighup_ends_a_run_cleanly_and_a_killed_runs_instance_goes_at_the_next_start() {
    privileged!();
    let dir = TempDir::new();

    // SIGHUP (an SSH connection dropped): a clean end.
    let file = dir.file("hup.ptr");
    let recorder = start_recorder(&file, "127.77.8.2");
    let pid = recorder.pid();
    let instance = instances_of(pid);
    assert_eq!(instance.len(), 1, "one private instance while tracing: {instance:?}");
    signal(pid, libc::SIGHUP);
    let finished = recorder.wait(RUN_TIMEOUT);
    assert!(finished.status.success(), "{finished:?}");
    assert!(!instance[0].exists(), "the instance is removed after SIGHUP");
    let replayed = replay(&file, &[]);
    replayed.assert_read();
    assert!(replayed.end().is_some(), "the recording ends with its end record");

    // SIGKILL leaves the instance; the next start removes it.
    let killed = start_recorder(&dir.file("kill.ptr"), "127.77.8.2");
    let pid = killed.pid();
    let stale = instances_of(pid);
    assert_eq!(stale.len(), 1);
    signal(pid, libc::SIGKILL);
    let _ = killed.wait(RUN_TIMEOUT);
    assert!(stale[0].exists(), "nothing could remove the instance of a killed run");
    let next = start_recorder(&dir.file("next.ptr"), "127.77.8.2");
    let stale_gone = !stale[0].exists();
    let next_pid = next.pid();
    let next_instance = instances_of(next_pid);
    signal(next_pid, libc::SIGINT);
    let finished = next.wait(RUN_TIMEOUT);
    assert!(finished.status.success(), "{finished:?}");
    assert!(stale_gone, "the killed run's instance is removed at the next start");
    assert_eq!(next_instance.len(), 1, "and the new run has its own");
    assert!(!next_instance[0].exists());
}

#[test]
fn a_process_name_with_terminal_escapes_is_shown_escaped() {
    privileged!();
    let ns = Netns::create();
    let load = Tcpload::new(env!("CARGO_BIN_EXE_tcpload"));
    // A name that, raw, would turn the terminal red and set its title.
    let evil = load.renamed("\x1b]0;pwn\x07\x1b[31m");
    let addr = "127.77.8.3:65031";
    // The server first: its listener in the start-up inventory says tracing has started
    // (the text format has no start record).
    let server = load.server(&ns, addr, 1, portrace_tests::Closer::Client);
    let mut live = Portrace::spawn_raw(&["--format", "text", "--color", "never", "--addr", "127.77.8.3"]);
    assert!(live.wait_for_text(addr, Duration::from_secs(30)), "the listener was not in the inventory");
    evil.load().client(&ns, addr, 1, 1, portrace_tests::Closer::Client);
    server.wait_success(portrace_tests::tcpload::WAIT);
    assert!(live.wait_for_text("\\x1b]0;pwn", Duration::from_secs(20)), "the client's transitions were not shown");
    let run = live.stop();
    let out = run.garbage.join("\n");
    assert!(out.contains("\\x1b]0;pwn\\x07\\x1b[31m"), "the name is shown escaped:\n{out}");
    assert!(!out.contains('\x1b') && !out.contains('\x07'), "no raw escape reaches the terminal:\n{out:?}");
}

/// A Python server and client, each a python3 process, talking over loopback in `ns`.
const PY_WORKLOAD: &str = r#"
import socket, sys, threading
addr = (sys.argv[1], int(sys.argv[2]))
n = int(sys.argv[3])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(addr)
srv.listen(64)
def serve():
    for _ in range(n):
        c, _ = srv.accept()
        c.sendall(c.recv(64))
        c.close()
t = threading.Thread(target=serve)
t.start()
for _ in range(n):
    s = socket.create_connection(addr)
    s.sendall(b"ping")
    s.recv(64)
    s.close()
t.join()
srv.close()
print("done", n)
"#;

fn python_run(flags: &[&str]) -> Vec<Value> {
    const ADDR: &str = "127.77.8.4";
    const N: usize = 20;
    let ns = Netns::create();
    let mut args = vec!["--addr", ADDR];
    args.extend_from_slice(flags);
    let mut live = Portrace::start(&args);
    let mut cmd = ns.command("/usr/bin/python3");
    cmd.args(["-c", PY_WORKLOAD, ADDR, "65041", &N.to_string()]);
    let done = run_bounded("python3 client and server", cmd, RUN_TIMEOUT);
    done.assert_success();
    assert_eq!(done.stdout, [format!("done {N}")]);
    // Every connection's transitions (5 per side), the listener's two.
    live.wait_for_transitions(N * 10 + 2, Duration::from_secs(20));
    let run = live.stop();
    run.assert_clean();
    assert!(run.transitions().len() >= N * 8, "the workload was traced: {} transitions", run.transitions().len());
    run.records.into_iter().filter(|r| r["type"] == "alert").collect()
}

#[test]
fn an_ordinary_python_client_and_server_raise_nothing_above_info() {
    privileged!();
    let alerts = python_run(&[]);
    let above_info: Vec<&Value> = alerts.iter().filter(|a| a["severity"] != "info").collect();
    assert!(above_info.is_empty(), "ordinary Python traffic raised: {above_info:#?}");
    // The workload's own listener is worth an info: the detectors did run.
    assert!(alerts.iter().any(|a| a["kind"] == "new_listener"), "{alerts:#?}");

    // Asked for, the interpreter check speaks.
    let alerts = python_run(&["--alert-interpreters"]);
    let owner: Vec<&Value> = alerts.iter().filter(|a| a["kind"] == "unexpected_owner").collect();
    assert!(!owner.is_empty(), "--alert-interpreters: {alerts:#?}");
    assert_eq!(owner[0]["severity"], "warning");
    assert_eq!(owner[0]["evidence"]["check"], "interpreter", "{:#?}", owner[0]);
}

/// A pipe whose buffer is already full, for a portrace's standard output: its first write
/// (the `start` record, written and flushed once the kernel programs are attached and
/// before the inventory is taken) blocks until the test reads.
struct FullPipe {
    read: std::fs::File,
    write: Option<std::os::fd::OwnedFd>,
    /// The bytes the test put in to fill it (newlines: empty lines, no record).
    filler: usize,
}

impl FullPipe {
    fn new() -> FullPipe {
        use std::os::fd::FromRawFd as _;
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0, "pipe2");
        // SAFETY: both descriptors were just made and are owned by nothing else.
        let (read, write) = unsafe { (std::fs::File::from_raw_fd(fds[0]), std::os::fd::OwnedFd::from_raw_fd(fds[1])) };
        // The smallest buffer the kernel allows (one page): little to fill.
        // SAFETY: fcntl on a descriptor we own.
        unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, 4096) };
        // SAFETY: as above; O_NONBLOCK only while filling, so a full pipe says EAGAIN.
        let flags = unsafe { libc::fcntl(fds[1], libc::F_GETFL) };
        assert_eq!(unsafe { libc::fcntl(fds[1], libc::F_SETFL, flags | libc::O_NONBLOCK) }, 0);
        let newlines = [b'\n'; 512];
        let mut filler = 0;
        loop {
            // SAFETY: writes from a live buffer of that length to a descriptor we own.
            let n = unsafe { libc::write(fds[1], newlines.as_ptr().cast(), newlines.len()) };
            if n < 0 {
                assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EAGAIN), "filling the pipe");
                break;
            }
            filler += n as usize;
        }
        // SAFETY: as above: the write end blocks again, as a terminal's pipe would.
        assert_eq!(unsafe { libc::fcntl(fds[1], libc::F_SETFL, flags) }, 0);
        assert!(filler > 0, "the pipe took no filler");
        FullPipe { read, write: Some(write), filler }
    }

    /// The write end, for the child's standard output (the test keeps no copy of it, so
    /// reading reaches EOF once the child is gone).
    fn writer(&mut self) -> std::process::Stdio {
        self.write.take().expect("one writer").into()
    }

    /// Reads everything on a background thread: the child can write again.
    fn drain(self) -> std::sync::mpsc::Receiver<Vec<u8>> {
        use std::io::Read as _;
        let (tx, rx) = std::sync::mpsc::channel();
        let mut read = self.read;
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = read.read_to_end(&mut bytes);
            let _ = tx.send(bytes);
        });
        rx
    }
}

/// Whether some thread of `pid` is blocked writing to a pipe.
fn blocked_on_pipe(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.filter_map(Result::ok).any(|t| {
        std::fs::read_to_string(t.path().join("wchan")).is_ok_and(|w| w.contains("pipe_write"))
    })
}

/// A portrace run whose standard output is a full pipe, signalled with SIGINT while it is
/// blocked writing its `start` record, then let go; returns its exit, its JSON records and
/// the instance it had made.
fn interrupted_at_start(args: &[&str]) -> (portrace_tests::Finished, Vec<Value>, PathBuf) {
    let mut pipe = FullPipe::new();
    let mut cmd = Command::new(Portrace::bin());
    cmd.args(["--format", "json"]).args(args);
    cmd.stdin(std::process::Stdio::null()).stdout(pipe.writer()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("starting portrace");
    // The command holds the pipe's write end: dropped, the child's is the only one left.
    drop(cmd);
    let pid = child.id();
    let stderr = child.stderr.take().expect("stderr is piped");
    let stderr = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    // The hook: the private ftrace instance exists (the programs are attached and the
    // independent hit count has started, the last step before the start record) and the
    // process is blocked writing that record to the full pipe. Nothing is printed yet, the
    // inventory is not taken, and a command would not be started.
    let deadline = Instant::now() + Duration::from_secs(30);
    let instance = loop {
        let instance = instances_of(pid);
        if instance.len() == 1 && blocked_on_pipe(pid) {
            break instance[0].clone();
        }
        if Instant::now() >= deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("portrace never blocked on its first record (instances {instance:?}): {}", stderr.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    signal(pid, libc::SIGINT);
    let filler = pipe.filler;
    let out = pipe.drain();
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("portrace did not end after SIGINT at start-up: {}", stderr.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let bytes = out.recv_timeout(Duration::from_secs(5)).expect("portrace's output reaches EOF");
    assert!(bytes.len() >= filler && bytes[..filler].iter().all(|&b| b == b'\n'), "the filler comes out first");
    let text = String::from_utf8_lossy(&bytes[filler..]).into_owned();
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect();
    let finished = portrace_tests::Finished {
        label: format!("portrace {}", args.join(" ")),
        status,
        stdout: text.lines().map(str::to_string).collect(),
        stderr: stderr.join().unwrap(),
    };
    (finished, records, instance)
}

/// Ctrl-C while portrace starts (its programs attached, its first record not yet out, the
/// inventory not yet taken) ends the run cleanly: status 0, the inventory and the end record
/// still written, the private ftrace instance removed; with `-- CMD`, the command is never
/// started.
///
/// Reliable without a sleep: the test fills the pipe that is portrace's standard output
/// before starting it, so the `start` record's write blocks; that the process is blocked
/// there (`pipe_write` in a thread's `/proc/PID/task/TID/wchan`) and that its instance
/// exists are both observed before SIGINT is sent, and portrace cannot get past the write
/// until the test reads the pipe, which it does only after the signal.
#[test]
fn sigint_while_starting_ends_the_run_cleanly_and_starts_no_command() {
    privileged!();
    // An existing listener that only the inventory can show.
    let listener = std::net::TcpListener::bind("127.77.8.5:0").expect("binding a listener");
    let port = listener.local_addr().unwrap().port();

    let (run, records, instance) = interrupted_at_start(&["--addr", "127.77.8.5"]);
    assert!(run.status.success(), "{run:?}");
    assert!(!instance.exists(), "the instance {} is removed", instance.display());
    assert_eq!(records.first().map(|r| &r["type"]), Some(&Value::from("start")), "{run:?}");
    assert_eq!(records.last().map(|r| &r["type"]), Some(&Value::from("end")), "{run:?}");
    let listed = records.iter().any(|r| r["type"] == "socket" && r["state"] == "LISTEN" && r["sport"] == port);
    assert!(listed, "the inventory taken after the signal still lists the listener on port {port}: {run:?}");
    drop(listener);

    // With a command: stopped before it is started. The marker's directory lets any user
    // write, so the command would create it whoever it ran as.
    let dir = sticky_dir();
    let marker = dir.file("started");
    let marker_s = marker.display().to_string();
    let (run, records, instance) = interrupted_at_start(&["--", "/usr/bin/touch", &marker_s]);
    assert!(run.status.success(), "{run:?}");
    assert!(!instance.exists(), "the instance {} is removed", instance.display());
    assert!(!marker.exists(), "the command was started: {run:?}");
    assert!(run.stderr.contains("stopped by a signal before the command was started"), "{}", run.stderr);
    assert_eq!(records.last().map(|r| &r["type"]), Some(&Value::from("end")), "{run:?}");

    // Control: unsignalled, the same command does create the marker.
    let mut cmd = Command::new(Portrace::bin());
    cmd.args(["--format", "json", "--", "/usr/bin/touch", &marker_s]);
    run_bounded("portrace -- touch", cmd, RUN_TIMEOUT).assert_success();
    assert!(marker.exists(), "the command runs when no signal comes");
}
