//! The traced command (`portrace -- CMD ARGS...`): finding it, starting it held until the
//! kernel programs trace it, running it as the user who asked for root (through sudo,
//! run0, doas or pkexec, or, failing those, the login user the kernel remembers), passing
//! SIGTERM and SIGHUP on to it, waiting for it, and turning how it ended into portrace's
//! exit status. When it does run the command as root, it says so and why.
//!
//! Start order: [`spawn_held`] forks a child that waits on a pipe before it does anything
//! else; the caller puts the child's pid into the kernel's traced set; [`Held::release`]
//! lets it go, and the child execs the command (everything it starts from then on is
//! followed in the kernel). An exec that fails is reported through a second,
//! close-on-exec pipe, and portrace exits 127 as a shell would.
//!
//! Between `fork` and `exec` the child runs only async-signal-safe system calls, on data
//! prepared before the fork: portrace's process may have other threads.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use tokio::io::unix::AsyncFd;

use crate::format::errno::system_text;

/// The command to trace, as given after `--`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandSpec {
    pub argv: Vec<OsString>,
    /// Run it as root even when portrace was started through sudo.
    pub as_root: bool,
}

impl CommandSpec {
    /// The command line for messages and the recording's header: arguments separated by
    /// spaces, each quoted as a shell would need it.
    pub fn display(&self) -> String {
        shell_words(&self.argv)
    }

    /// The program's name as given, for messages.
    pub fn name(&self) -> String {
        self.argv.first().map(|a| a.to_string_lossy().into_owned()).unwrap_or_default()
    }
}

/// The command could not be run: portrace exits 127, as a shell does.
#[derive(Debug, thiserror::Error)]
#[error("cannot run {name}: {reason}")]
pub struct NotRun {
    pub name: String,
    pub reason: String,
}

/// The exit status a shell would give for `status`: the exit code, or 128 + the signal
/// that killed the process.
pub fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => 128u8.wrapping_add(signal as u8),
        (None, None) => 1,
    }
}

/// How the command ended, for people: `exited with status 3`, `was killed by SIGTERM`.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!(
            "was killed by {}{}",
            signal_name(signal),
            if status.core_dumped() { " (core dumped)" } else { "" }
        ),
        (None, None) => format!("ended ({status})"),
    }
}

fn signal_name(signal: i32) -> String {
    const NAMES: [(i32, &str); 15] = [
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGQUIT, "SIGQUIT"),
        (libc::SIGILL, "SIGILL"),
        (libc::SIGTRAP, "SIGTRAP"),
        (libc::SIGABRT, "SIGABRT"),
        (libc::SIGBUS, "SIGBUS"),
        (libc::SIGFPE, "SIGFPE"),
        (libc::SIGKILL, "SIGKILL"),
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGPIPE, "SIGPIPE"),
        (libc::SIGALRM, "SIGALRM"),
        (libc::SIGTERM, "SIGTERM"),
    ];
    NAMES.iter().find(|&&(n, _)| n == signal).map_or_else(|| format!("signal {signal}"), |&(_, name)| name.into())
}

/// Arguments separated by spaces, each quoted as a shell would need it.
pub fn shell_words(args: &[impl AsRef<OsStr>]) -> String {
    args.iter().map(|a| shell_quote(a.as_ref())).collect::<Vec<_>>().join(" ")
}

/// Quotes an argument for display the way a POSIX shell would read it back.
fn shell_quote(arg: &OsStr) -> String {
    let text = arg.to_string_lossy();
    let plain = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%^".contains(&b));
    if plain {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// Finds `program` as `execvp` would (in `path`, the value of $PATH, unless it names a
/// file with a `/`), so that a command that cannot run is refused before tracing starts.
pub fn resolve(program: &OsStr, path: Option<&OsStr>) -> Result<PathBuf, String> {
    if program.is_empty() {
        return Err("the command is empty".into());
    }
    let check = |candidate: &Path| -> Result<(), String> {
        let meta = std::fs::metadata(candidate).map_err(|e| io_reason(&e))?;
        if meta.is_dir() {
            return Err("it is a directory".into());
        }
        if meta.permissions().mode() & 0o111 == 0 {
            return Err("it is not executable (Permission denied)".into());
        }
        Ok(())
    };
    if program.as_bytes().contains(&b'/') {
        let p = PathBuf::from(program);
        return check(&p).map(|()| p);
    }
    let path = path.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    let mut refused = None;
    for dir in path.as_bytes().split(|&b| b == b':') {
        // An empty entry is the current directory, as for execvp.
        let dir = if dir.is_empty() { Path::new(".") } else { Path::new(OsStr::from_bytes(dir)) };
        let candidate = dir.join(program);
        match check(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(why) if candidate.exists() => refused = refused.or(Some(format!("{}: {why}", candidate.display()))),
            Err(_) => {}
        }
    }
    Err(refused.unwrap_or_else(|| "command not found (not in $PATH)".into()))
}

fn io_reason(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(errno) => system_text(errno),
        None => e.to_string(),
    }
}

/// Who the command runs as, when not as portrace itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// The user's name and home directory, when the password database knows the uid.
    pub user: Option<(OsString, OsString)>,
    pub groups: Vec<u32>,
}

/// What the environment says about who asked for root, read by [`Invocation::current`]
/// and judged by [`choose_user`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Invocation {
    /// `SUDO_UID` and `SUDO_GID`: set by sudo, and by systemd's run0 (256 and later).
    pub sudo_uid: Option<OsString>,
    pub sudo_gid: Option<OsString>,
    /// `DOAS_USER`: the name of the user who ran doas.
    pub doas_user: Option<OsString>,
    /// `PKEXEC_UID`: the uid of the user who ran pkexec.
    pub pkexec_uid: Option<OsString>,
    /// The audit login uid (`/proc/self/loginuid`), which su, sudo, doas and pkexec all
    /// leave as the login session's user; `None` when unset (4294967295).
    pub login_uid: Option<u32>,
}

impl Invocation {
    /// This process's environment and login uid.
    pub fn current() -> Invocation {
        let login_uid = std::fs::read_to_string("/proc/self/loginuid")
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .filter(|&uid| uid != u32::MAX);
        Invocation {
            sudo_uid: std::env::var_os("SUDO_UID"),
            sudo_gid: std::env::var_os("SUDO_GID"),
            doas_user: std::env::var_os("DOAS_USER"),
            pkexec_uid: std::env::var_os("PKEXEC_UID"),
            login_uid,
        }
    }
}

/// Whom the command runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunAs {
    /// portrace's own user, which is not root: there is nothing to drop.
    Own,
    /// The user who asked for root: `uid`, `gid` when the tool said (else the user's
    /// primary group), and what told portrace (`sudo`, `doas`, ...).
    User { uid: u32, gid: Option<u32>, via: &'static str },
    /// Root, and why (for the notice portrace prints).
    Root(&'static str),
}

/// Whom to run the command as, as root (`euid` 0): the user who asked for root, found in
/// `SUDO_UID` (sudo, run0), `DOAS_USER` (doas), `PKEXEC_UID` (pkexec), then the login uid
/// (su), in that order, unless `as_root`; root when none names anyone but root.
/// `user_by_name` looks a name up in the password database (uid and primary group).
pub fn choose_user(
    euid: u32,
    inv: &Invocation,
    as_root: bool,
    user_by_name: impl Fn(&OsStr) -> Option<(u32, u32)>,
) -> Result<RunAs, String> {
    if euid != 0 {
        return Ok(RunAs::Own);
    }
    if as_root {
        return Ok(RunAs::Root("--as-root was given"));
    }
    let number = |name: &str, text: &OsStr| -> Result<u32, String> {
        text.to_str().and_then(|t| t.trim().parse::<u32>().ok()).ok_or_else(|| {
            format!(
                "{name}={:?} is not a number; unset it, or give --as-root to run the command as root",
                text.to_string_lossy()
            )
        })
    };
    let found = if let Some(uid) = &inv.sudo_uid {
        let gid = inv.sudo_gid.as_deref().map(|g| number("SUDO_GID", g)).transpose()?;
        Some((number("SUDO_UID", uid)?, gid, "sudo"))
    } else if let Some(name) = &inv.doas_user {
        let (uid, gid) = user_by_name(name).ok_or_else(|| {
            format!(
                "DOAS_USER={:?} is not a user in the password database; unset it, or give --as-root to run the command as root",
                name.to_string_lossy()
            )
        })?;
        Some((uid, Some(gid), "doas"))
    } else if let Some(uid) = &inv.pkexec_uid {
        Some((number("PKEXEC_UID", uid)?, None, "pkexec"))
    } else {
        inv.login_uid.map(|uid| (uid, None, "the login session"))
    };
    Ok(match found {
        Some((0, _, _)) => RunAs::Root("the user who asked for root is root"),
        Some((uid, gid, via)) => RunAs::User { uid, gid, via },
        None => RunAs::Root("no user asked for root: portrace runs as root itself, not through sudo, run0, doas or pkexec"),
    })
}

/// A user's uid and primary group from the password database.
pub fn user_by_name(name: &OsStr) -> Option<(u32, u32)> {
    let name = CString::new(name.as_bytes()).ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: all zeroes is a valid passwd (null pointers, zero ids).
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call, and buf outlives the use of `pw`.
    let rc = unsafe { libc::getpwnam_r(name.as_ptr(), &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut found) };
    (rc == 0 && !found.is_null()).then_some((pw.pw_uid, pw.pw_gid))
}

/// The identity of `uid` from the password and group databases: its name, home and
/// supplementary groups; `gid` (from SUDO_GID) overrides the primary group.
pub fn identity(uid: u32, gid: Option<u32>) -> Identity {
    let mut buf = vec![0u8; 16 * 1024];
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call, and buf outlives the use of `pw`.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() {
        let gid = gid.unwrap_or(uid);
        return Identity { uid, gid, user: None, groups: vec![gid] };
    }
    // SAFETY: getpwuid_r filled pw with NUL-terminated strings inside buf.
    let (name, home) = unsafe {
        (
            std::ffi::CStr::from_ptr(pw.pw_name).to_owned(),
            OsStr::from_bytes(std::ffi::CStr::from_ptr(pw.pw_dir).to_bytes()).to_owned(),
        )
    };
    let gid = gid.unwrap_or(pw.pw_gid);
    let mut groups = vec![0 as libc::gid_t; 256];
    let mut n = groups.len() as libc::c_int;
    // SAFETY: groups holds n entries; getgrouplist writes at most n and updates n.
    if unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut n) } < 0 {
        groups.resize(n.max(0) as usize, 0);
        // SAFETY: as above, with the size the first call asked for.
        unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
    }
    groups.truncate(n.max(0) as usize);
    if !groups.contains(&gid) {
        groups.insert(0, gid);
    }
    let name = OsStr::from_bytes(name.to_bytes()).to_owned();
    Identity { uid, gid, user: Some((name, home)), groups }
}

/// The environment the command gets: portrace's, with HOME, USER and LOGNAME set to the
/// user it runs as (sudo leaves root's HOME).
pub fn environment(identity: Option<&Identity>) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    if let Some((name, home)) = identity.and_then(|i| i.user.as_ref()) {
        for (key, value) in [("HOME", home), ("USER", name), ("LOGNAME", name)] {
            env.retain(|(k, _)| k != key);
            env.push((key.into(), value.clone()));
        }
    }
    env
}

/// Refuses to trace a command from inside a pid namespace other than the host's: the
/// kernel program sees host pids, portrace would see its namespace's.
pub fn check_pid_namespace() -> Result<(), String> {
    /// `PROC_PID_INIT_INO`: the initial pid namespace's inode number.
    const INIT_PID_NS: u64 = 0xEFFF_FFFC;
    match std::fs::metadata("/proc/self/ns/pid") {
        Ok(m) if m.ino() != INIT_PID_NS => Err(
            "portrace runs in a pid namespace of its own (a container): it can trace a command only \
             from the host's pid namespace, whose process ids the kernel reports"
                .into(),
        ),
        _ => Ok(()),
    }
}

/// Where the command's standard output goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandStdout {
    /// Portrace's own standard output.
    Inherit,
    /// Portrace's standard error: portrace's records are on its standard output.
    Stderr,
}

/// Everything the child needs, prepared before the fork.
struct Prepared {
    file: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    identity: Option<Identity>,
    stdout: CommandStdout,
    /// The priority portrace was started with, for the command (portrace raises its own).
    nice: Option<i32>,
}

/// A forked child waiting to exec the command.
pub struct Held {
    pid: libc::pid_t,
    go: Option<OwnedFd>,
    exec_error: Option<OwnedFd>,
    name: String,
}

/// Forks the child that will run the command, held until [`Held::release`].
pub fn spawn_held(spec: &CommandSpec, identity: Option<Identity>, stdout: CommandStdout) -> anyhow::Result<Held> {
    let cstring = |s: &OsStr| {
        CString::new(s.as_bytes()).map_err(|_| anyhow::anyhow!("the command line holds a NUL byte: {s:?}"))
    };
    let env = environment(identity.as_ref());
    let prepared = Prepared {
        file: cstring(&spec.argv[0])?,
        argv: spec.argv.iter().map(|a| cstring(a)).collect::<anyhow::Result<_>>()?,
        envp: env
            .iter()
            .filter_map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                CString::new(kv).ok()
            })
            .collect(),
        identity,
        stdout,
        nice: crate::priority::started_with(),
    };
    let mut argv: Vec<*const libc::c_char> = prepared.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = prepared.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let groups: Vec<libc::gid_t> = prepared.identity.as_ref().map(|i| i.groups.clone()).unwrap_or_default();

    let (go_read, go_write) = pipe()?;
    let (err_read, err_write) = pipe()?;
    // SAFETY: the child only makes async-signal-safe calls on memory prepared above, then
    // execs or _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error()).map_err(|e| anyhow::anyhow!("cannot fork to run the command: {e}"));
    }
    if pid == 0 {
        // SAFETY: in the child, see child_exec.
        unsafe {
            child_exec(&prepared, &argv, &envp, &groups, go_read.as_raw_fd(), go_write.as_raw_fd(), err_read.as_raw_fd(), err_write.as_raw_fd())
        }
    }
    drop(go_read);
    drop(err_write);
    Ok(Held { pid, go: Some(go_write), exec_error: Some(err_read), name: spec.name() })
}

fn pipe() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(anyhow::anyhow!("cannot create a pipe for the command: {}", io::Error::last_os_error()));
    }
    // SAFETY: pipe2 returned two new descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// What the child reports through the exec-error pipe: the step that failed and errno.
const STEP_EXEC: u8 = 0;
const STEP_GROUPS: u8 = 1;
const STEP_GID: u8 = 2;
const STEP_UID: u8 = 3;

/// The child after the fork: wait to be released, become the user, exec.
#[allow(clippy::too_many_arguments, reason = "raw descriptors and pointers prepared before the fork")]
unsafe fn child_exec(
    p: &Prepared,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    groups: &[libc::gid_t],
    go_read: RawFd,
    go_write: RawFd,
    err_read: RawFd,
    err_write: RawFd,
) -> ! {
    libc::close(go_write);
    libc::close(err_read);
    let mut byte = 0u8;
    // Released with one byte; end of file means portrace gave up: leave without a trace.
    loop {
        let n = libc::read(go_read, (&mut byte as *mut u8).cast(), 1);
        if n == 1 {
            break;
        }
        if n < 0 && *libc::__errno_location() == libc::EINTR {
            continue;
        }
        libc::_exit(127);
    }
    libc::close(go_read);
    let fail = |step: u8| -> ! {
        let errno = *libc::__errno_location();
        let mut msg = [0u8; 5];
        msg[0] = step;
        msg[1..].copy_from_slice(&errno.to_ne_bytes());
        libc::write(err_write, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    };
    // A clean signal state: Rust ignores SIGPIPE, and ignored signals stay ignored across exec.
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    if p.stdout == CommandStdout::Stderr {
        libc::dup2(2, 1);
    }
    if let Some(nice) = p.nice {
        libc::setpriority(libc::PRIO_PROCESS, 0, nice);
    }
    if let Some(id) = &p.identity {
        if libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
            fail(STEP_GROUPS);
        }
        if libc::setgid(id.gid) != 0 {
            fail(STEP_GID);
        }
        if libc::setuid(id.uid) != 0 {
            fail(STEP_UID);
        }
    }
    libc::execvpe(p.file.as_ptr(), argv.as_ptr(), envp.as_ptr());
    fail(STEP_EXEC)
}

impl Held {
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Lets the child exec the command. Returns once it has (or failed to: then the
    /// child is reaped and the error says why).
    pub fn release(mut self) -> anyhow::Result<Running> {
        let go = self.go.take().expect("released once");
        let err = self.exec_error.take().expect("released once");
        let pid = self.pid;
        // From here on the child is ours to wait for, not to kill.
        self.pid = 0;
        // SAFETY: one byte from a valid buffer to a descriptor we own.
        let written = unsafe { libc::write(go.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        drop(go);
        if written != 1 {
            let e = io::Error::last_os_error();
            reap(pid);
            return Err(anyhow::anyhow!("cannot start the command: {e}"));
        }
        let mut msg = [0u8; 5];
        let mut got = 0;
        while got < msg.len() {
            // SAFETY: reads into the unfilled rest of msg.
            let n = unsafe { libc::read(err.as_raw_fd(), msg[got..].as_mut_ptr().cast(), msg.len() - got) };
            if n == 0 {
                break;
            }
            if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            got += n as usize;
        }
        if got == msg.len() {
            reap(pid);
            let errno = i32::from_ne_bytes(msg[1..].try_into().expect("4 bytes"));
            let reason = match msg[0] {
                STEP_GROUPS => format!("cannot set its supplementary groups: {}", system_text(errno)),
                STEP_GID => format!("cannot switch to the invoking user's group: {}", system_text(errno)),
                STEP_UID => format!("cannot switch to the invoking user: {}", system_text(errno)),
                _ => system_text(errno),
            };
            return Err(NotRun { name: self.name.clone(), reason }.into());
        }
        Running::new(pid)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.pid > 0 {
            // Never released (portrace failed first): the child has not run the command.
            // SAFETY: the pid is our own unreaped child.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            reap(self.pid);
        }
    }
}

fn reap(pid: libc::pid_t) -> Option<ExitStatus> {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            return Some(ExitStatus::from_raw(status));
        }
        if rc < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return None;
    }
}

/// The status of our child `pid` if it has exited, without blocking.
fn try_reap(pid: libc::pid_t) -> Option<ExitStatus> {
    let mut status = 0;
    // SAFETY: waiting for our own child, without blocking.
    let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    (rc == pid).then(|| ExitStatus::from_raw(status))
}

/// The running command.
pub struct Running {
    pid: libc::pid_t,
    /// Readable once the process has exited.
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
}

impl Running {
    fn new(pid: libc::pid_t) -> anyhow::Result<Running> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(anyhow::anyhow!(
                "cannot watch the command (pidfd_open: {}); Linux 5.3 or later is needed",
                io::Error::last_os_error()
            ));
        }
        // SAFETY: a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        // SAFETY: the AsyncFd owns the descriptor and keeps it open while registered.
        let pidfd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("cannot watch the command: {e}"))?;
        Ok(Running { pid, pidfd: Some(pidfd), status: None })
    }

    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// How it ended, once it has.
    pub fn status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// Waits until the command exits; at once if it already has. Cancel-safe.
    pub async fn exited(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        if let Some(pidfd) = &self.pidfd {
            while let Ok(mut guard) = pidfd.readable().await {
                if let Some(status) = try_reap(self.pid) {
                    return self.finish(status);
                }
                guard.clear_ready();
            }
        }
        // Without a working pidfd, block: the command is all portrace waits for.
        let status = reap(self.pid).unwrap_or_else(|| ExitStatus::from_raw(1 << 8));
        self.finish(status)
    }

    fn finish(&mut self, status: ExitStatus) -> ExitStatus {
        self.status = Some(status);
        self.pidfd = None;
        status
    }

    /// Sends `signal` to the command, if it still runs.
    pub fn signal(&self, signal: i32) {
        if self.status.is_none() {
            // SAFETY: our own child, not yet reaped, so the pid is still its.
            unsafe { libc::kill(self.pid, signal) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(raw: i32) -> ExitStatus {
        ExitStatus::from_raw(raw)
    }

    #[test]
    fn exit_codes_are_a_shells() {
        assert_eq!(exit_code(status(0)), 0);
        assert_eq!(exit_code(status(3 << 8)), 3);
        assert_eq!(exit_code(status(255 << 8)), 255);
        assert_eq!(exit_code(status(libc::SIGTERM)), 143);
        assert_eq!(exit_code(status(libc::SIGKILL)), 137);
        assert_eq!(exit_code(status(libc::SIGSEGV | 0x80)), 139, "a core dump changes nothing");
    }

    #[test]
    fn endings_read_well() {
        assert_eq!(describe(status(3 << 8)), "exited with status 3");
        assert_eq!(describe(status(libc::SIGTERM)), "was killed by SIGTERM");
        assert_eq!(describe(status(libc::SIGSEGV | 0x80)), "was killed by SIGSEGV (core dumped)");
        assert_eq!(describe(status(40)), "was killed by signal 40");
    }

    #[test]
    fn command_lines_are_shown_quoted() {
        let spec = CommandSpec {
            argv: ["sh", "-c", "echo 'hi' there", "", "a=b"].iter().map(OsString::from).collect(),
            as_root: false,
        };
        assert_eq!(spec.display(), r"sh -c 'echo '\''hi'\'' there' '' a=b");
        assert_eq!(spec.name(), "sh");
    }

    #[test]
    fn programs_are_found_like_execvp() {
        let path = OsStr::new("/nonexistent-dir::/usr/bin:/bin");
        assert_eq!(resolve(OsStr::new("sh"), Some(path)), Ok(PathBuf::from("/usr/bin/sh")));
        assert_eq!(resolve(OsStr::new("/bin/sh"), None), Ok(PathBuf::from("/bin/sh")));
        assert_eq!(
            resolve(OsStr::new("portrace-no-such-command"), Some(path)).unwrap_err(),
            "command not found (not in $PATH)"
        );
        assert_eq!(resolve(OsStr::new("/nonexistent/x"), None).unwrap_err(), "No such file or directory");
        assert_eq!(resolve(OsStr::new("/tmp"), None).unwrap_err(), "it is a directory");
        let plain = std::env::temp_dir().join(format!("portrace-plain-{}", std::process::id()));
        std::fs::write(&plain, "exit 0\n").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let refused = resolve(plain.as_os_str(), None);
        let _ = std::fs::remove_file(&plain);
        assert_eq!(refused.unwrap_err(), "it is not executable (Permission denied)");
        assert_eq!(resolve(OsStr::new(""), None).unwrap_err(), "the command is empty");
    }

    #[test]
    fn the_user_who_asked_for_root_gets_the_command() {
        let s = |t: &str| Some(OsString::from(t));
        let users = |name: &OsStr| match name.to_str() {
            Some("alice") => Some((1000, 1000)),
            Some("root") => Some((0, 0)),
            _ => None,
        };
        let choose = |inv: &Invocation, as_root| choose_user(0, inv, as_root, users);
        let user = |uid, gid, via| Ok(RunAs::User { uid, gid, via });

        let sudo = Invocation { sudo_uid: s("1000"), sudo_gid: s("1001"), ..Default::default() };
        assert_eq!(choose(&sudo, false), user(1000, Some(1001), "sudo"));
        let sudo_no_gid = Invocation { sudo_uid: s("1000"), ..Default::default() };
        assert_eq!(choose(&sudo_no_gid, false), user(1000, None, "sudo"));
        assert_eq!(choose(&sudo, true), Ok(RunAs::Root("--as-root was given")));
        let doas = Invocation { doas_user: s("alice"), ..Default::default() };
        assert_eq!(choose(&doas, false), user(1000, Some(1000), "doas"));
        let pkexec = Invocation { pkexec_uid: s("1000"), ..Default::default() };
        assert_eq!(choose(&pkexec, false), user(1000, None, "pkexec"));
        // su sets nothing of its own; the login uid survives it.
        let su = Invocation { login_uid: Some(1000), ..Default::default() };
        assert_eq!(choose(&su, false), user(1000, None, "the login session"));
        // sudo's word comes first.
        let both = Invocation { sudo_uid: s("1002"), doas_user: s("alice"), login_uid: Some(1003), ..Default::default() };
        assert_eq!(choose(&both, false), user(1002, None, "sudo"));

        // Root, said plainly.
        let Ok(RunAs::Root(why)) = choose(&Invocation::default(), false) else { panic!("plain root runs it as root") };
        assert!(why.contains("not through sudo, run0, doas or pkexec"), "{why}");
        let from_root = Invocation { sudo_uid: s("0"), sudo_gid: s("0"), ..Default::default() };
        assert_eq!(choose(&from_root, false), Ok(RunAs::Root("the user who asked for root is root")));
        let root_login = Invocation { login_uid: Some(0), ..Default::default() };
        assert!(matches!(choose(&root_login, false), Ok(RunAs::Root(_))));
        let doas_root = Invocation { doas_user: s("root"), ..Default::default() };
        assert!(matches!(choose(&doas_root, false), Ok(RunAs::Root(_))));
        assert_eq!(choose_user(1000, &sudo, false, users), Ok(RunAs::Own), "not root: nothing to drop");

        // Bad values are errors that say what to do.
        let bad = Invocation { sudo_uid: s("alice"), ..Default::default() };
        let err = choose(&bad, false).unwrap_err();
        assert!(err.contains("SUDO_UID=\"alice\" is not a number") && err.contains("--as-root"), "{err}");
        let err = choose(&Invocation { doas_user: s("mallory"), ..Default::default() }, false).unwrap_err();
        assert!(err.contains("DOAS_USER=\"mallory\" is not a user") && err.contains("--as-root"), "{err}");
        let err = choose(&Invocation { pkexec_uid: s("x1"), ..Default::default() }, false).unwrap_err();
        assert!(err.contains("PKEXEC_UID=\"x1\" is not a number"), "{err}");
    }

    #[test]
    fn user_names_resolve_from_the_password_database() {
        assert_eq!(user_by_name(OsStr::new("root")), Some((0, 0)));
        assert_eq!(user_by_name(OsStr::new("no-such-user-portrace")), None);
        assert_eq!(user_by_name(OsStr::new("bad\0name")), None);
    }

    #[test]
    fn the_environment_names_the_user_it_runs_as() {
        let id = Identity {
            uid: 1000,
            gid: 1000,
            user: Some(("alice".into(), "/home/alice".into())),
            groups: vec![1000],
        };
        let env = environment(Some(&id));
        let get = |k: &str| env.iter().filter(|(key, _)| key == k).map(|(_, v)| v.clone()).collect::<Vec<_>>();
        assert_eq!(get("HOME"), vec![OsString::from("/home/alice")]);
        assert_eq!(get("USER"), vec![OsString::from("alice")]);
        assert_eq!(get("LOGNAME"), vec![OsString::from("alice")]);
        assert_eq!(environment(None).len(), std::env::vars_os().count());
    }

    #[test]
    fn root_has_an_identity() {
        let root = identity(0, None);
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(root.user.as_ref().map(|(n, _)| n.clone()), Some(OsString::from("root")));
        assert!(root.groups.contains(&0));
    }
}
