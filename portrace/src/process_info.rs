//! Who a socket's owner is, beyond its 16-byte command name: the executable's path, the
//! command line, the parent, the user and the cgroup, read from /proc when portrace first
//! sees the process own a socket. A process that has already exited by then keeps only
//! its command name and pid; every field that cannot be read is left out, never guessed.

use std::collections::HashMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::record::{Comm, ProcessInfo, Timestamp};

/// The longest text (a path, one argument, a name) portrace keeps of a process; longer
/// ones are cut on a character boundary, the same live and in recordings.
pub const MAX_TEXT: usize = 4096;
/// The most arguments portrace keeps of a command line; the last kept one says how many
/// more there were.
pub const MAX_ARGS: usize = 256;
/// The most bytes of a command line's arguments portrace keeps, all together: with the
/// path, cgroup and names, a process's details stay under about 20 KB, so the 8,192
/// processes held at most (`details.rs`) stay under about 160 MB whatever the programs
/// any user starts. The last kept argument says how many more there were.
pub const MAX_CMDLINE: usize = 8192;

/// `text` cut to [`MAX_TEXT`] bytes.
pub fn cut(mut text: String) -> String {
    let len = kept_len(&text);
    text.truncate(len);
    text
}

/// How many bytes of `text` are kept: at most [`MAX_TEXT`], ending on a character
/// boundary.
pub fn kept_len(text: &str) -> usize {
    let mut len = text.len().min(MAX_TEXT);
    while !text.is_char_boundary(len) {
        len -= 1;
    }
    len
}

/// Reads process details from a procfs (normally /proc), and user names from the system's
/// user database (or, in tests, a passwd file).
pub struct ProcessReader {
    proc: PathBuf,
    users: Users,
}

/// Where user names come from.
enum Users {
    /// The C library's `getpwuid_r`, through the system's name service: local files, LDAP,
    /// SSSD, systemd's dynamic users. A uid is asked once; the answers (a missing name too)
    /// are kept, up to [`USERS_KEPT`].
    System(HashMap<u32, Option<String>>),
    /// A passwd file, read once.
    File { path: PathBuf, users: Option<HashMap<u32, String>> },
}

/// User names kept at most; past it the cache starts afresh.
const USERS_KEPT: usize = 4096;

impl Default for ProcessReader {
    fn default() -> Self {
        ProcessReader { proc: PathBuf::from(crate::procfs::PROC), users: Users::System(HashMap::new()) }
    }
}

impl ProcessReader {
    /// A reader of the procfs at `proc` that takes user names from the passwd file
    /// `passwd` (for tests; [`ProcessReader::default`] asks the system).
    pub fn new(proc: &Path, passwd: &Path) -> ProcessReader {
        ProcessReader { proc: proc.to_path_buf(), users: Users::File { path: passwd.to_path_buf(), users: None } }
    }

    /// What /proc says about `pid` now. `comm` is the command name the kernel reported
    /// with the socket; it is kept as is, whatever /proc says.
    pub fn read(&mut self, pid: u32, comm: Comm, time: Timestamp) -> ProcessInfo {
        let dir = self.proc.join(pid.to_string());
        let status = fs::read(dir.join("status")).ok();
        let status = status.as_deref().map(parse_status).unwrap_or_default();
        let uid = status.uid;
        let user = uid.and_then(|uid| self.user_name(uid));
        ProcessInfo {
            time,
            pid,
            comm,
            ppid: status.ppid,
            exe: fs::read_link(dir.join("exe")).ok().map(|p| cut(String::from_utf8_lossy(p.as_os_str().as_bytes()).into_owned())),
            cmdline: fs::read(dir.join("cmdline")).ok().and_then(|raw| parse_cmdline(&raw)),
            uid,
            user,
            cgroup: fs::read(dir.join("cgroup")).ok().and_then(|raw| parse_cgroup(&raw)),
            start_ticks: fs::read(dir.join("stat")).ok().and_then(|raw| parse_start_ticks(&raw)),
        }
    }

    fn user_name(&mut self, uid: u32) -> Option<String> {
        match &mut self.users {
            Users::System(kept) => {
                if kept.len() >= USERS_KEPT && !kept.contains_key(&uid) {
                    kept.clear();
                }
                kept.entry(uid).or_insert_with(|| system_user_name(uid).map(cut)).clone()
            }
            Users::File { path, users } => {
                let users = users.get_or_insert_with(|| fs::read(&*path).map(|raw| parse_passwd(&raw)).unwrap_or_default());
                users.get(&uid).cloned().map(cut)
            }
        }
    }
}

/// The name of `uid` in the system's user database (`getpwuid_r`), if it has one.
pub fn system_user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: passwd is plain data, all zeroes is a valid value to be overwritten.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: `entry` and `found` are locals,
        // `buf` is writable for its length; the strings written into `entry` point into
        // `buf`, which outlives their use below.
        let err = unsafe { libc::getpwuid_r(uid, &mut entry, buf.as_mut_ptr().cast(), buf.len(), &mut found) };
        if err == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if err != 0 || found.is_null() || entry.pw_name.is_null() {
            return None;
        }
        // SAFETY: on success pw_name is a NUL-terminated string inside `buf`.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.pw_name) };
        return Some(String::from_utf8_lossy(name.to_bytes()).into_owned());
    }
}

/// The fields of /proc/PID/status portrace uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status {
    pub ppid: Option<u32>,
    /// The real user id (the first of the `Uid:` line's four).
    pub uid: Option<u32>,
}

pub fn parse_status(raw: &[u8]) -> Status {
    let mut status = Status::default();
    for line in raw.split(|&b| b == b'\n') {
        let text = String::from_utf8_lossy(line);
        if let Some(rest) = text.strip_prefix("PPid:") {
            status.ppid = rest.trim().parse().ok();
        } else if let Some(rest) = text.strip_prefix("Uid:") {
            status.uid = rest.split_whitespace().next().and_then(|n| n.parse().ok());
        }
    }
    status
}

/// The arguments of /proc/PID/cmdline (NUL-separated, usually NUL-terminated). `None`
/// when empty: a kernel thread, or a process that exited (its zombie has no memory).
pub fn parse_cmdline(raw: &[u8]) -> Option<Vec<String>> {
    let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
    if raw.is_empty() {
        return None;
    }
    let total = raw.split(|&b| b == 0).count();
    let mut args = Vec::new();
    let mut bytes = 0;
    for arg in raw.split(|&b| b == 0) {
        let arg = cut(String::from_utf8_lossy(arg).into_owned());
        if args.len() == MAX_ARGS - 1 && total > MAX_ARGS || bytes + arg.len() > MAX_CMDLINE {
            break;
        }
        bytes += arg.len();
        args.push(arg);
    }
    if args.len() < total {
        let more = total - args.len();
        args.push(format!("... ({more} more arguments)"));
    }
    Some(args)
}

/// The longest "... (N more arguments)" note a kept command line ends with.
const MORE_NOTE_MAX: usize = 40;

/// A command line read from a recording, held to the bounds of one read live: the
/// arguments that fit in [`MAX_CMDLINE`] bytes together (each already at most
/// [`MAX_TEXT`]), then the note a live read ends with, or one saying how many arguments
/// were not kept.
pub fn cap_args(mut args: Vec<String>) -> Vec<String> {
    let mut bytes = 0;
    let mut kept = 0;
    for (i, arg) in args.iter().enumerate() {
        let last_note = i + 1 == args.len() && arg.starts_with("... (") && arg.len() <= MORE_NOTE_MAX;
        if bytes + arg.len() > MAX_CMDLINE && !last_note {
            break;
        }
        bytes += arg.len();
        kept += 1;
    }
    if kept < args.len() {
        let more = args.len() - kept;
        args.truncate(kept.min(MAX_ARGS - 1));
        args.push(format!("... ({more} more arguments)"));
    }
    args
}

/// The bytes a process's details take in memory, about: what the details of a run (`details.rs`) count
/// against its bound.
pub fn held_bytes(p: &ProcessInfo) -> usize {
    let text = |t: &Option<String>| t.as_ref().map_or(0, String::len);
    let args = p.cmdline.as_ref().map_or(0, |a| {
        a.iter().map(|s| s.len() + std::mem::size_of::<String>()).sum()
    });
    std::mem::size_of::<ProcessInfo>() + text(&p.exe) + text(&p.user) + text(&p.cgroup) + args
}

/// The cgroup v2 path from /proc/PID/cgroup (the `0::PATH` line). On a host with only
/// cgroup v1 hierarchies, the `name=systemd` one, which names the unit or container.
pub fn parse_cgroup(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let mut v1 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if controllers.is_empty() {
            return Some(cut(path.to_string()));
        }
        if controllers == "name=systemd" {
            v1 = Some(cut(path.to_string()));
        }
    }
    v1
}

/// Field 22 of /proc/PID/stat, the start time in clock ticks since boot. The command
/// name (field 2) is in parentheses and may itself hold spaces and parentheses, so
/// fields are counted from the last `)`.
pub fn parse_start_ticks(raw: &[u8]) -> Option<u64> {
    let close = raw.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&raw[close + 1..]).ok()?;
    // After the name: field 3 (state) is the first, so field 22 is the 20th.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// uid -> name from a passwd file; the first entry of a uid wins, as for getpwuid.
pub fn parse_passwd(raw: &[u8]) -> HashMap<u32, String> {
    let mut users = HashMap::new();
    for line in String::from_utf8_lossy(raw).lines() {
        let mut fields = line.split(':');
        let (Some(name), Some(_), Some(uid)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if let (false, Ok(uid)) = (name.is_empty() || name.starts_with('#'), uid.parse::<u32>()) {
            users.entry(uid).or_insert_with(|| name.to_string());
        }
    }
    users
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_gives_parent_and_real_uid() {
        let raw = b"Name:\tcurl\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t812\nPid:\t812\nPPid:\t790\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(parse_status(raw), Status { ppid: Some(790), uid: Some(1000) });
        assert_eq!(parse_status(b"Name:\tx\n"), Status::default());
    }

    #[test]
    fn cmdline_splits_on_nul_and_keeps_empty_arguments() {
        assert_eq!(parse_cmdline(b"nc\0-z\0\0host\0"), Some(vec!["nc".into(), "-z".into(), "".into(), "host".into()]));
        assert_eq!(parse_cmdline(b"sleep\0"), Some(vec!["sleep".into()]));
        assert_eq!(parse_cmdline(b"no-terminator"), Some(vec!["no-terminator".into()]));
        assert_eq!(parse_cmdline(b""), None);
        assert_eq!(parse_cmdline(b"bad\xff\0"), Some(vec!["bad\u{fffd}".into()]));
    }

    #[test]
    fn long_command_lines_are_cut_the_same_everywhere() {
        let many: Vec<u8> = (0..300).flat_map(|i| format!("a{i}\0").into_bytes()).collect();
        let args = parse_cmdline(&many).unwrap();
        assert_eq!(args.len(), MAX_ARGS);
        assert_eq!(args[MAX_ARGS - 2], format!("a{}", MAX_ARGS - 2));
        assert_eq!(args[MAX_ARGS - 1], format!("... ({} more arguments)", 300 - (MAX_ARGS - 1)));
        // 256 arguments of 4 KB: 8 KB of them are kept, and the count of the rest.
        let huge: Vec<u8> = (0..256).flat_map(|_| [vec![b'x'; MAX_TEXT], vec![0]].concat()).collect();
        let args = parse_cmdline(&huge).unwrap();
        assert_eq!(args.len(), 3, "two whole arguments, then the count");
        assert_eq!(args[2], "... (254 more arguments)");
        assert!(args.iter().map(String::len).sum::<usize>() <= MAX_CMDLINE + 32);
        let long = "é".repeat(MAX_TEXT);
        let cut_arg = &parse_cmdline(long.as_bytes()).unwrap()[0];
        assert!(cut_arg.len() <= MAX_TEXT && cut_arg.len() >= MAX_TEXT - 1);
        assert!(cut_arg.chars().all(|c| c == 'é'));
    }

    #[test]
    fn cgroup_prefers_v2_then_the_systemd_hierarchy() {
        assert_eq!(parse_cgroup(b"0::/system.slice/nginx.service\n"), Some("/system.slice/nginx.service".into()));
        let hybrid = b"12:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n0::/docker/abc\n";
        assert_eq!(parse_cgroup(hybrid), Some("/docker/abc".into()));
        let v1 = b"4:memory:/user.slice\n1:name=systemd:/user.slice/user-1000.slice/session-3.scope\n";
        assert_eq!(parse_cgroup(v1), Some("/user.slice/user-1000.slice/session-3.scope".into()));
        assert_eq!(parse_cgroup(b"4:memory:/x\n"), None);
        assert_eq!(parse_cgroup(b""), None);
    }

    #[test]
    fn start_ticks_survive_names_with_spaces_and_parentheses() {
        let stat = b"4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100\n";
        assert_eq!(parse_start_ticks(stat), Some(987654));
        assert_eq!(parse_start_ticks(b"1 (init) S 0"), None);
        assert_eq!(parse_start_ticks(b"garbage"), None);
    }

    #[test]
    fn user_names_come_from_the_system_database() {
        // Root is uid 0 in every user database; a uid at the top of the range is in none.
        assert_eq!(system_user_name(0).as_deref(), Some("root"));
        assert_eq!(system_user_name(u32::MAX - 7), None);
        let mut reader = ProcessReader::default();
        assert_eq!(reader.user_name(0).as_deref(), Some("root"));
        assert_eq!(reader.user_name(u32::MAX - 7), None);
    }

    #[test]
    fn passwd_maps_uids_to_the_first_name() {
        let raw = b"root:x:0:0:root:/root:/bin/bash\n# comment:x:5\nwww-data:x:33:33::/var/www:/usr/sbin/nologin\ntoor:x:0:0::/:/bin/sh\nbroken\n";
        let users = parse_passwd(raw);
        assert_eq!(users.get(&0).map(String::as_str), Some("root"));
        assert_eq!(users.get(&33).map(String::as_str), Some("www-data"));
        assert_eq!(users.len(), 2);
    }

    #[test]
    fn reads_this_process() {
        let mut reader = ProcessReader::default();
        let pid = std::process::id();
        let time = Timestamp { mono_ns: 1, unix_ns: 2 };
        let info = reader.read(pid, Comm::new("test"), time);
        assert_eq!((info.pid, info.comm, info.time), (pid, Comm::new("test"), time));
        let exe = std::env::current_exe().unwrap();
        assert_eq!(info.exe.as_deref(), exe.to_str());
        let args: Vec<String> = std::env::args().collect();
        assert_eq!(info.cmdline, Some(args));
        // SAFETY: getppid and getuid have no preconditions.
        let (ppid, uid) = unsafe { (libc::getppid(), libc::getuid()) };
        assert_eq!((info.ppid, info.uid), (Some(ppid as u32), Some(uid)));
        assert!(info.start_ticks.is_some_and(|t| t > 0));
        if uid == 0 {
            assert_eq!(info.user.as_deref(), Some("root"));
        }
    }

    #[test]
    fn a_process_that_is_gone_keeps_its_pid_and_name_only() {
        let dir = std::env::temp_dir().join(format!("portrace-proc-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut reader = ProcessReader::new(&dir, &dir.join("passwd"));
        let info = reader.read(77, Comm::new("gone"), Timestamp { mono_ns: 0, unix_ns: 0 });
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!((info.pid, info.comm.to_str_lossy().as_ref()), (77, "gone"));
        assert_eq!((info.ppid, info.exe, info.cmdline, info.uid, info.user, info.cgroup, info.start_ticks), (None, None, None, None, None, None, None));
    }

    #[test]
    fn a_recorded_command_line_is_held_to_the_live_bound() {
        // 256 arguments of 4 KiB: what the decoder accepts, 1 MiB.
        let args = cap_args(vec!["x".repeat(MAX_TEXT); MAX_ARGS]);
        assert_eq!(args.len(), MAX_CMDLINE / MAX_TEXT + 1);
        assert_eq!(args.last().unwrap(), &format!("... ({} more arguments)", MAX_ARGS - 2));
        // A command line read live and recorded comes back unchanged, its note included.
        let mut raw = vec![b'y'; 3000];
        for _ in 0..299 {
            raw.push(0);
            raw.extend_from_slice(&[b'z'; 30]);
        }
        let live = parse_cmdline(&raw).unwrap();
        assert!(live.last().unwrap().ends_with("more arguments)"));
        assert_eq!(cap_args(live.clone()), live);
        let small = vec!["curl".to_string(), "http://x/".to_string()];
        assert_eq!(cap_args(small.clone()), small);
    }
}
