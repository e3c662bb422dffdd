//! From a cgroup v2 id to its path, and from a path the user gives to the cgroup's id.
//!
//! A cgroup v2 id is the inode number of the cgroup's directory in the cgroup2 file
//! system. The kernel opens a directory by that number through a file handle of the
//! kernfs kind (`open_by_handle_at`, what `bpf_get_current_cgroup_id`'s users do), and the
//! link `/proc/self/fd/N` of the descriptor is its path: one look-up, no walk, no link
//! followed. A cgroup removed since is gone from the file system and has no path any
//! more. Paths are cached, a bounded number of them; the cache is cleared when full.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// `CGROUP2_SUPER_MAGIC`: the cgroup2 file system.
const CGROUP2_MAGIC: i64 = 0x6367_7270;

/// Paths cached at most.
const CACHE_MAX: usize = 16_384;

/// Directories a walk of the hierarchy visits at most (see [`Hierarchy::path_of`]).
const WALK_MAX: usize = 100_000;

/// `FILEID_KERNFS` (`include/linux/exportfs.h`): a kernfs file handle, whose 8 bytes are
/// the node's id.
const FILEID_KERNFS: libc::c_int = 0xfe;

/// A cgroup the user named that portrace cannot filter on.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup v2 hierarchy is mounted (no cgroup2 line in /proc/self/mountinfo); --cgroup needs one (mount -t cgroup2 none /sys/fs/cgroup)")]
    NoHierarchy,
    #[error("cgroup '{0}' does not exist (give a directory under {1}, or a path as /proc/PID/cgroup shows it, e.g. /system.slice/nginx.service)")]
    Missing(String, String),
    #[error("'{0}' is not a cgroup v2 directory: give a directory under the cgroup2 mount {1}")]
    NotCgroup2(String, String),
    #[error("cgroup path '{0}' may not contain '..' or a symbolic link")]
    Unsafe(String),
    #[error("cannot open cgroup '{0}': {1}")]
    Io(String, io::Error),
}

/// A cgroup the user named, as the kernel knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupDir {
    /// The cgroup v2 id.
    pub id: u64,
    /// Its path under the cgroup2 mount, starting with `/`.
    pub path: String,
    /// Its depth below the mount's root (the root is 0).
    pub level: u32,
}

/// The cgroup2 hierarchy, opened.
pub struct Hierarchy {
    mount: PathBuf,
    dir: OwnedFd,
}

/// The mount point of the first cgroup2 file system in a `/proc/PID/mountinfo` text.
/// Field 5 is the mount point (octal escapes for spaces and the like), and the file
/// system type follows the ` - ` separator.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    for line in mountinfo.lines() {
        let Some((fields, rest)) = line.split_once(" - ") else { continue };
        if rest.split(' ').next() != Some("cgroup2") {
            continue;
        }
        let point = fields.split(' ').nth(4)?;
        return Some(PathBuf::from(unescape_octal(point)));
    }
    None
}

/// Undoes mountinfo's `\NNN` escapes.
fn unescape_octal(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path under the cgroup2 mount a user's `--cgroup` value names: a path inside the
/// mount (`/sys/fs/cgroup/system.slice`), or a cgroup path as /proc/PID/cgroup shows it
/// (`/system.slice`). `..` is refused; `.` and repeated slashes are dropped.
pub fn relative_to_mount(mount: &Path, given: &Path) -> Result<PathBuf, CgroupError> {
    let within = given.strip_prefix(mount).unwrap_or(given);
    let mut rel = PathBuf::new();
    for c in within.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => rel.push(name),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(CgroupError::Unsafe(given.display().to_string()))
            }
        }
    }
    Ok(rel)
}

fn is_cgroup2(fd: &OwnedFd) -> io::Result<bool> {
    // SAFETY: fstatfs writes a statfs into the zeroed buffer; fd is open.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64 == CGROUP2_MAGIC)
}

fn inode(fd: &OwnedFd) -> io::Result<u64> {
    // SAFETY: fstat writes a stat into the zeroed buffer; fd is open.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.st_ino)
}

/// `openat2(dir, rel, O_DIRECTORY, RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH)`.
fn open_beneath(dir: &OwnedFd, rel: &Path) -> io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    let c = CString::new(rel.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_BENEATH;
    // SAFETY: the arguments are a valid descriptor, a NUL-terminated path and an open_how
    // of the size passed.
    let fd = unsafe {
        libc::syscall(libc::SYS_openat2, dir.as_raw_fd(), c.as_ptr(), &how as *const libc::open_how, std::mem::size_of::<libc::open_how>())
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor the call just returned, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

impl Hierarchy {
    /// Opens the cgroup2 hierarchy this process sees.
    pub fn open() -> Result<Hierarchy, CgroupError> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|_| CgroupError::NoHierarchy)?;
        let mount = cgroup2_mount(&mountinfo).ok_or(CgroupError::NoHierarchy)?;
        Hierarchy::at(&mount)
    }

    /// Opens the cgroup2 hierarchy mounted at `mount`.
    pub fn at(mount: &Path) -> Result<Hierarchy, CgroupError> {
        let shown = mount.display().to_string();
        let dir = fs::File::open(mount).map_err(|e| CgroupError::Io(shown.clone(), e))?;
        let dir = OwnedFd::from(dir);
        if !is_cgroup2(&dir).map_err(|e| CgroupError::Io(shown.clone(), e))? {
            return Err(CgroupError::NotCgroup2(shown.clone(), shown));
        }
        Ok(Hierarchy { mount: mount.to_path_buf(), dir })
    }

    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// The cgroup a user named (see [`relative_to_mount`]): it must exist, be reached
    /// without a symbolic link, and be a directory of this cgroup2 hierarchy.
    pub fn cgroup(&self, given: &Path) -> Result<CgroupDir, CgroupError> {
        let mount = self.mount.display().to_string();
        let shown = given.display().to_string();
        let rel = relative_to_mount(&self.mount, given)?;
        let fd = open_beneath(&self.dir, &rel).map_err(|e| match e.raw_os_error() {
            // A directory elsewhere (a cgroup v1 hierarchy, /etc) is not a cgroup v2 one.
            Some(libc::ENOENT) if given.is_absolute() && fs::symlink_metadata(given).is_ok_and(|m| m.is_dir()) => {
                CgroupError::NotCgroup2(shown.clone(), mount.clone())
            }
            Some(libc::ENOENT) => CgroupError::Missing(shown.clone(), mount.clone()),
            Some(libc::ENOTDIR) => CgroupError::NotCgroup2(shown.clone(), mount.clone()),
            Some(libc::ELOOP) | Some(libc::EXDEV) => CgroupError::Unsafe(shown.clone()),
            _ => CgroupError::Io(shown.clone(), e),
        })?;
        if !is_cgroup2(&fd).map_err(|e| CgroupError::Io(shown.clone(), e))? {
            return Err(CgroupError::NotCgroup2(shown, mount));
        }
        let id = inode(&fd).map_err(|e| CgroupError::Io(shown.clone(), e))?;
        let level = rel.components().count() as u32;
        let path = format!("/{}", rel.to_string_lossy());
        Ok(CgroupDir { id, path, level })
    }

    /// The id of the cgroup at `path` (as /proc/PID/cgroup names it); `None` when it is
    /// gone or not a cgroup.
    pub fn id_of(&self, path: &str) -> Option<u64> {
        self.cgroup(Path::new(path)).ok().map(|c| c.id)
    }

    /// The path under the mount of the cgroup whose id is `id`; `None` when there is none
    /// (removed since). By file handle first; where the kernel refuses handles or names the
    /// directory otherwise, by a walk of the hierarchy (at most [`WALK_MAX`] directories,
    /// by the inode numbers `readdir` gives, no link followed).
    pub fn path_of(&self, id: u64) -> Option<String> {
        match self.path_by_handle(id) {
            ByHandle::Found(path) if self.id_of(&path) == Some(id) => Some(path),
            // The kernel knows no such cgroup any more: a walk would not find it either.
            ByHandle::Gone => None,
            _ => self.path_by_walk(id),
        }
    }

    fn path_by_walk(&self, id: u64) -> Option<String> {
        if inode(&self.dir).ok()? == id {
            return Some("/".into());
        }
        let mut queue = std::collections::VecDeque::from([PathBuf::new()]);
        let mut visited = 0usize;
        while let Some(rel) = queue.pop_front() {
            let Ok(entries) = fs::read_dir(self.mount.join(&rel)) else { continue };
            for entry in entries.flatten() {
                // d_type, from readdir: a link is never a directory here.
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                visited += 1;
                if visited > WALK_MAX {
                    return None;
                }
                let child = rel.join(entry.file_name());
                if std::os::unix::fs::DirEntryExt::ino(&entry) == id {
                    return Some(format!("/{}", child.to_string_lossy()));
                }
                queue.push_back(child);
            }
        }
        None
    }

    fn path_by_handle(&self, id: u64) -> ByHandle {
        #[repr(C)]
        struct Handle {
            bytes: u32,
            kind: libc::c_int,
            id: u64,
        }
        let mut handle = Handle { bytes: 8, kind: FILEID_KERNFS, id };
        // SAFETY: `Handle` has the layout of a `file_handle` with 8 bytes of handle.
        let fd = unsafe {
            libc::open_by_handle_at(
                self.dir.as_raw_fd(),
                &mut handle as *mut Handle as *mut libc::file_handle,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return match io::Error::last_os_error().raw_os_error() {
                Some(libc::ESTALE) | Some(libc::ENOENT) => ByHandle::Gone,
                _ => ByHandle::Refused,
            };
        }
        // SAFETY: a new descriptor the call just returned.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let Ok(target) = fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) else { return ByHandle::Refused };
        // (The caller checks the path leads to the same id.)
        match target.strip_prefix(&self.mount) {
            Ok(rel) => ByHandle::Found(format!("/{}", rel.to_string_lossy())),
            Err(_) => ByHandle::Refused,
        }
    }
}

/// What a look-up by file handle found.
enum ByHandle {
    Found(String),
    /// No cgroup has that id now.
    Gone,
    /// File handles do not work here (no privilege, a kernel without them), or the
    /// directory's name could not be read: walk instead.
    Refused,
}

/// Paths of cgroup ids, looked up once each (removed cgroups included: their answer is
/// that they have none).
#[derive(Default)]
pub struct Resolver {
    hierarchy: Option<Hierarchy>,
    cache: HashMap<u64, Option<Arc<str>>>,
}

impl Resolver {
    /// A resolver over the hierarchy this process sees; one that names nothing when none is
    /// mounted.
    pub fn live() -> Resolver {
        Resolver { hierarchy: Hierarchy::open().ok(), cache: HashMap::new() }
    }

    /// The path of cgroup `id` (0: none).
    pub fn path(&mut self, id: u64) -> Option<Arc<str>> {
        if id == 0 {
            return None;
        }
        if let Some(known) = self.cache.get(&id) {
            return known.clone();
        }
        let found: Option<Arc<str>> = self.hierarchy.as_ref().and_then(|h| h.path_of(id)).map(Arc::from);
        if self.cache.len() >= CACHE_MAX {
            self.cache.clear();
        }
        self.cache.insert(id, found.clone());
        found
    }

    /// What the cgroup of a socket's owner names (empty when unknown or removed): the
    /// unit, container and pod, e.g. for labels.
    pub fn identity(&mut self, owner: &crate::record::Owner) -> super::Identity {
        self.path(owner.cgroup).map(|p| super::identity(&p)).unwrap_or_default()
    }

    /// The id of the cgroup at `path` (as /proc/PID/cgroup names it).
    pub fn id(&self, path: &str) -> Option<u64> {
        self.hierarchy.as_ref()?.id_of(path)
    }

    pub fn hierarchy(&self) -> Option<&Hierarchy> {
        self.hierarchy.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_in_mountinfo() {
        let hybrid = "\
25 30 0:22 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,name=systemd
";
        assert_eq!(cgroup2_mount(hybrid), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        let unified = "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev shared:9 - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(unified), Some(PathBuf::from("/sys/fs/cgroup")));
        let spaced = "35 24 0:30 / /mnt/my\\040cgroups rw - cgroup2 none rw\n";
        assert_eq!(cgroup2_mount(spaced), Some(PathBuf::from("/mnt/my cgroups")));
        // Optional fields before the separator, and a v1-only host.
        assert_eq!(cgroup2_mount("1 2 0:1 / /x rw - cgroup cgroup rw\n"), None);
        assert_eq!(cgroup2_mount("garbage\n\n - cgroup2\n"), None);
        assert_eq!(unescape_octal("a\\134b\\0"), "a\\b\\0");
    }

    #[test]
    fn user_paths_are_taken_relative_to_the_mount() {
        let m = Path::new("/sys/fs/cgroup");
        let rel = |p: &str| relative_to_mount(m, Path::new(p)).map(|r| r.display().to_string());
        assert_eq!(rel("/sys/fs/cgroup/system.slice/nginx.service").unwrap(), "system.slice/nginx.service");
        assert_eq!(rel("/system.slice//./nginx.service/").unwrap(), "system.slice/nginx.service");
        assert_eq!(rel("/sys/fs/cgroup").unwrap(), "");
        assert_eq!(rel("/").unwrap(), "");
        assert!(matches!(relative_to_mount(m, Path::new("/sys/fs/cgroup/../../etc")), Err(CgroupError::Unsafe(_))));
        assert!(matches!(relative_to_mount(m, Path::new("a/../b")), Err(CgroupError::Unsafe(_))));
        // A name starting like the mount is not inside it.
        assert_eq!(rel("/sys/fs/cgroupx/a").unwrap(), "sys/fs/cgroupx/a");
    }

    #[test]
    fn the_cache_is_bounded_and_remembers_misses() {
        let mut r = Resolver::default();
        assert_eq!(r.path(0), None);
        for id in 1..=(CACHE_MAX as u64 + 10) {
            assert_eq!(r.path(id), None);
        }
        assert!(r.cache.len() <= CACHE_MAX);
        assert!(!r.cache.is_empty());
    }
}
