//! The flight recorder's directory, opened once and used only through its descriptor.
//! portrace runs as root and the directory may be writable by others, so: the directory
//! is opened with `O_DIRECTORY | O_NOFOLLOW` (its last component may not be a symbolic
//! link; a missing one is created, mode 0700, its parent must exist); files are created
//! with `openat(O_CREAT | O_EXCL | O_NOFOLLOW)`, mode 0600 as every recording; renames
//! are `renameat2(RENAME_NOREPLACE)` and removals `unlinkat`, all relative to the
//! directory's descriptor, so a directory renamed or replaced by a link meanwhile is not
//! followed; a file is removed only when it is a regular file of this user's, under a
//! name the recorder makes ([`super::policy::FileName::parse`]). An exclusive `flock` on
//! the directory keeps a second recorder out of it.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use crate::outfile::RECORDING_MODE;

/// Mode of a directory the recorder creates.
const DIR_MODE: u32 = 0o700;

/// Why the directory cannot be used. Each message names it and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error(
        "{0} is a symbolic link: portrace does not record through links (someone else may have \
         planted it); give the directory it points to, or remove the link"
    )]
    Symlink(String),
    #[error("{0} is not a directory ({1}): give a directory for the recordings (--dir), or remove it")]
    NotDir(String, &'static str),
    #[error("{0} does not exist and its parent directory is missing too: create the parent first")]
    NoParent(String),
    #[error("{dir} cannot be used: {cause}")]
    Open { dir: String, cause: io::Error },
    #[error("{dir} is not writable ({cause}): give a directory on a writable file system that this user may write to")]
    NotWritable { dir: String, cause: io::Error },
    #[error("{0} is in use by another portrace recorder: give each recorder a directory of its own")]
    Busy(String),
}

/// The recorder's directory.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

fn c_name(name: &str) -> io::Result<CString> {
    if name.contains('/') {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

impl Dir {
    /// Opens `path` (creating it, mode 0700, when it does not exist), checks that it is a
    /// writable directory, and locks it. Says on stderr when it created it.
    pub fn open(path: &Path) -> Result<Dir, DirError> {
        let shown = path.display().to_string();
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| DirError::Open { dir: shown.clone(), cause: io::Error::from(io::ErrorKind::InvalidInput) })?;
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: `c` is a valid NUL-terminated path that lives across the call.
        let mut rc = unsafe { libc::open(c.as_ptr(), flags) };
        if rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT) {
            match std::fs::symlink_metadata(path) {
                // A dangling link: refused below, never created through.
                Ok(_) => {}
                Err(_) => {
                    use std::os::unix::fs::DirBuilderExt as _;
                    match std::fs::DirBuilder::new().mode(DIR_MODE).create(path) {
                        Ok(()) => eprintln!("portrace: created the directory {shown} (mode 0700)"),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(DirError::NoParent(shown)),
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(cause) => return Err(DirError::NotWritable { dir: shown, cause }),
                    }
                }
            }
            // SAFETY: as above.
            rc = unsafe { libc::open(c.as_ptr(), flags) };
        }
        if rc < 0 {
            let cause = io::Error::last_os_error();
            return Err(match (cause.raw_os_error(), std::fs::symlink_metadata(path)) {
                (_, Ok(m)) if m.file_type().is_symlink() => DirError::Symlink(shown),
                (Some(libc::ENOTDIR), Ok(m)) => DirError::NotDir(shown, kind_of(&m)),
                _ => DirError::Open { dir: shown, cause },
            });
        }
        // SAFETY: `rc` is a descriptor just opened and owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(rc) };
        let dot = c".";
        // SAFETY: a valid descriptor and a NUL-terminated path.
        let access = unsafe { libc::faccessat(fd.as_raw_fd(), dot.as_ptr(), libc::W_OK | libc::X_OK, libc::AT_EACCESS) };
        if let Err(cause) = check(access) {
            return Err(DirError::NotWritable { dir: shown, cause });
        }
        // SAFETY: a valid descriptor.
        if let Err(e) = check(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }) {
            return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                DirError::Busy(shown)
            } else {
                DirError::Open { dir: shown, cause: e }
            });
        }
        Ok(Dir { fd, path: path.to_path_buf() })
    }

    /// The directory's path as given, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A file's path in the directory, for messages.
    pub fn shown(&self, name: &str) -> String {
        self.path.join(name).display().to_string()
    }

    /// Creates `name`, which must not exist (nor be a link), mode 0600.
    pub fn create(&self, name: &str) -> io::Result<File> {
        let c = c_name(name)?;
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: a valid descriptor and a NUL-terminated name; the mode is passed as the
        // variadic argument open(2) expects with O_CREAT.
        let rc = check(unsafe { libc::openat(self.fd.as_raw_fd(), c.as_ptr(), flags, RECORDING_MODE as libc::c_uint) })?;
        // SAFETY: a descriptor just opened and owned by nothing else.
        Ok(unsafe { File::from_raw_fd(rc) })
    }

    /// Renames `from` to `to`, refusing to replace an existing `to`.
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (f, t) = (c_name(from)?, c_name(to)?);
        let fd = self.fd.as_raw_fd();
        // SAFETY: a valid descriptor and NUL-terminated names.
        let rc = unsafe { libc::renameat2(fd, f.as_ptr(), fd, t.as_ptr(), libc::RENAME_NOREPLACE) };
        match check(rc) {
            Ok(_) => Ok(()),
            // File systems without RENAME_NOREPLACE: a link fails the same way on an
            // existing `to`.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
                // SAFETY: as above; flags 0 does not follow a link at `from`.
                check(unsafe { libc::linkat(fd, f.as_ptr(), fd, t.as_ptr(), 0) })?;
                // SAFETY: as above.
                check(unsafe { libc::unlinkat(fd, f.as_ptr(), 0) }).map(drop)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether `name` is a regular file (not a link) owned by this process's effective user.
    pub fn is_own_file(&self, name: &str) -> io::Result<bool> {
        let c = c_name(name)?;
        // SAFETY: stat is plain data, filled in by the call.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid descriptor, a NUL-terminated name and a stat buffer.
        check(unsafe { libc::fstatat(self.fd.as_raw_fd(), c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        Ok(st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_uid == euid)
    }

    /// Removes `name` if it is a regular file owned by this process's effective user;
    /// returns whether it did.
    pub fn remove(&self, name: &str) -> io::Result<bool> {
        if !self.is_own_file(name)? {
            return Ok(false);
        }
        let c = c_name(name)?;
        // SAFETY: a valid descriptor and a NUL-terminated name; flags 0 removes a file,
        // never a directory.
        check(unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) })?;
        Ok(true)
    }

    /// The names in the directory (those that are valid UTF-8; the recorder makes no other).
    pub fn names(&self) -> io::Result<Vec<String>> {
        // A descriptor of its own: readdir moves its offset.
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
        // SAFETY: a valid descriptor and a NUL-terminated path.
        let own = check(unsafe { libc::openat(self.fd.as_raw_fd(), c".".as_ptr(), flags) })?;
        // SAFETY: `own` is a directory descriptor; the stream owns it from here on.
        let stream = unsafe { libc::fdopendir(own) };
        if stream.is_null() {
            let e = io::Error::last_os_error();
            // SAFETY: `own` was not taken by a failed fdopendir.
            unsafe { libc::close(own) };
            return Err(e);
        }
        let mut names = Vec::new();
        loop {
            // SAFETY: a valid stream; the entry is read before the next call.
            let entry = unsafe { libc::readdir(stream) };
            if entry.is_null() {
                break;
            }
            // SAFETY: readdir returns an entry whose d_name is NUL-terminated.
            let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
            if let Ok(name) = name.to_str() {
                names.push(name.to_string());
            }
        }
        // SAFETY: the stream is closed once, with its descriptor.
        unsafe { libc::closedir(stream) };
        Ok(names)
    }

    /// Makes the directory's entries (files created, renamed, removed) durable.
    pub fn sync(&self) -> io::Result<()> {
        // SAFETY: a valid descriptor.
        check(unsafe { libc::fsync(self.fd.as_raw_fd()) }).map(drop)
    }
}

fn kind_of(m: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    let t = m.file_type();
    if t.is_file() {
        "a regular file"
    } else if t.is_fifo() {
        "a named pipe"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a device"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;

    use crate::test_dir::TempDir;

    #[test]
    fn a_symbolic_link_a_file_and_a_missing_parent_are_refused() {
        let t = TempDir::new("flightdir", "refused");
        let real = t.0.join("real");
        std::fs::create_dir(&real).unwrap();
        let link = t.0.join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = Dir::open(&link).unwrap_err();
        assert!(matches!(err, DirError::Symlink(_)), "{err}");
        assert!(err.to_string().starts_with(&format!("{} is a symbolic link", link.display())), "{err}");
        let dangling = t.0.join("dangling");
        std::os::unix::fs::symlink(t.0.join("nowhere"), &dangling).unwrap();
        assert!(matches!(Dir::open(&dangling), Err(DirError::Symlink(_))));
        assert!(!t.0.join("nowhere").exists(), "nothing is created through a link");
        let file = t.0.join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = Dir::open(&file).unwrap_err();
        assert!(matches!(err, DirError::NotDir(_, "a regular file")), "{err}");
        assert!(err.to_string().contains("--dir"), "{err}");
        let orphan = t.0.join("no").join("such");
        assert!(matches!(Dir::open(&orphan), Err(DirError::NoParent(_))));
    }

    #[test]
    fn a_missing_directory_is_created_private_and_locked() {
        let t = TempDir::new("flightdir", "create");
        let path = t.0.join("flight");
        let dir = Dir::open(&path).expect("created");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o700);
        assert!(matches!(Dir::open(&path), Err(DirError::Busy(_))), "a second recorder is kept out");
        drop(dir);
        Dir::open(&path).expect("free again");
    }

    #[test]
    fn files_are_created_once_renamed_without_replacing_and_removed_only_when_owned_regular() {
        let t = TempDir::new("flightdir", "files");
        let dir = Dir::open(&t.0).unwrap();
        let mut f = dir.create("a").unwrap();
        f.write_all(b"data").unwrap();
        assert_eq!(std::fs::metadata(t.0.join("a")).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(dir.create("a").unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        std::os::unix::fs::symlink(t.0.join("victim"), t.0.join("planted")).unwrap();
        assert!(dir.create("planted").is_err(), "a planted link is not followed");
        assert!(!t.0.join("victim").exists());
        std::fs::write(t.0.join("b"), b"other").unwrap();
        assert_eq!(dir.rename("a", "b").unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        dir.rename("a", "c").unwrap();
        assert_eq!(std::fs::read(t.0.join("c")).unwrap(), b"data");
        assert!(dir.remove("c").unwrap());
        assert!(!dir.remove("planted").unwrap(), "a link is left alone");
        std::fs::create_dir(t.0.join("sub")).unwrap();
        assert!(!dir.remove("sub").unwrap(), "a directory is left alone");
        assert!(dir.create("../escape").is_err());
        let mut names = dir.names().unwrap();
        names.sort();
        assert_eq!(names, [".", "..", "b", "planted", "sub"]);
        dir.sync().unwrap();
    }
}
