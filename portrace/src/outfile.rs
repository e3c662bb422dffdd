//! Files portrace writes at a path the user names (`record -o`, `diagram -o`), often as
//! root and often in a directory other users can write to (`/tmp`). This module owns how
//! they are created, so that a planted name can neither redirect nor destroy anything:
//!
//! - the content goes to a new temporary file beside the target, created with `O_EXCL`
//!   and `O_NOFOLLOW` (a name planted there is refused, never followed) and with the
//!   mode asked for (0600 for recordings, which hold command lines, users and cgroups);
//! - it takes the target's name only by `rename(2)`, which replaces a directory entry and
//!   never writes through a link, and only once it is complete or, for a recording, once
//!   tracing has started: a failed start leaves the old file as it was;
//! - an existing target is replaced only with `--force`, and never when it is a symbolic
//!   link or not a regular file; without `--force` the rename itself refuses to replace
//!   (`RENAME_NOREPLACE`), so a file planted after the check is not overwritten either;
//! - the file is synced before the rename, and the directory after it.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// Mode of a recording: it holds command lines, executables, users and cgroups.
pub const RECORDING_MODE: u32 = 0o600;
/// Mode of a diagram: counts and state names, nothing about processes beyond their names.
pub const DIAGRAM_MODE: u32 = 0o644;

/// Why an output file cannot be written at the path given. Each message names the path
/// and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum OutFileError {
    #[error("{0} already exists: choose another name, or add --force to replace it")]
    Exists(String),
    #[error(
        "{0} is a symbolic link: portrace does not write through links (someone else may \
         have planted it); remove it, or name the file it points to"
    )]
    Symlink(String),
    #[error("{0} exists and is not a regular file ({1}): choose another name")]
    NotRegular(String, &'static str),
    #[error("{0} names no file (it ends in `/`, `.` or `..`): give a file name")]
    NoFileName(String),
    #[error("cannot create a file in {dir}: {cause}")]
    Create { dir: String, cause: io::Error },
    #[error("cannot write {path}: {cause}")]
    Io { path: String, cause: io::Error },
}

/// Checks that `path` may be written: absent, or with `force` a regular file. Refuses a
/// symbolic link even with `force`.
pub fn check_target(path: &Path, force: bool) -> Result<(), OutFileError> {
    let shown = || path.display().to_string();
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(cause) => return Err(OutFileError::Io { path: shown(), cause }),
    };
    let kind = meta.file_type();
    if kind.is_symlink() {
        return Err(OutFileError::Symlink(shown()));
    }
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a named pipe"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "a device"
        };
        return Err(OutFileError::NotRegular(shown(), what));
    }
    if !force {
        return Err(OutFileError::Exists(shown()));
    }
    Ok(())
}

/// A file being written under a temporary name beside its target. [`Pending::commit`]
/// gives it the target's name; dropped uncommitted, it is removed.
#[derive(Debug)]
pub struct Pending {
    file: Option<File>,
    temp: PathBuf,
    target: PathBuf,
    force: bool,
}

impl Pending {
    /// Checks `target` ([`check_target`]) and creates the temporary file beside it with
    /// `mode` (the umask may only narrow it).
    pub fn create(target: &Path, mode: u32, force: bool) -> Result<Pending, OutFileError> {
        check_target(target, force)?;
        let name = match target.file_name() {
            Some(name) if !target.as_os_str().as_bytes().ends_with(b"/") => name,
            _ => return Err(OutFileError::NoFileName(target.display().to_string())),
        };
        let dir = match target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut last = None;
        for attempt in 0..64u32 {
            let mut temp_name = std::ffi::OsString::from(".");
            temp_name.push(name);
            temp_name.push(format!(".{}.{attempt}.tmp", std::process::id()));
            let temp = dir.join(temp_name);
            let opened = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&temp);
            match opened {
                Ok(file) => {
                    return Ok(Pending { file: Some(file), temp, target: target.to_path_buf(), force });
                }
                // A name taken (by a file someone planted, or by another portrace): the next.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(cause) => return Err(OutFileError::Create { dir: dir.display().to_string(), cause }),
            }
        }
        let cause = last.unwrap_or_else(|| io::Error::other("no free temporary name"));
        Err(OutFileError::Create { dir: dir.display().to_string(), cause })
    }

    /// The file being written.
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("a pending file is open until committed")
    }

    /// The target's path.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Syncs the file, renames it over the target (refusing to replace a file that
    /// appeared meanwhile unless `force`), syncs the directory, and returns the file, open
    /// and now under the target's name.
    pub fn commit(mut self) -> Result<File, OutFileError> {
        let shown = self.target.display().to_string();
        let io_err = |cause| OutFileError::Io { path: shown.clone(), cause };
        let file = self.file.take().expect("a pending file is committed once");
        file.sync_all().map_err(io_err)?;
        // Checked again: the target may have changed since the file was created.
        check_target(&self.target, self.force)?;
        let renamed = if self.force {
            std::fs::rename(&self.temp, &self.target)
        } else {
            rename_noreplace(&self.temp, &self.target)
        };
        if let Err(cause) = renamed {
            let _ = std::fs::remove_file(&self.temp);
            return Err(if cause.kind() == io::ErrorKind::AlreadyExists {
                OutFileError::Exists(shown)
            } else {
                io_err(cause)
            });
        }
        // The rename is done: from here on, nothing is left to remove.
        self.temp = PathBuf::new();
        let dir = match self.target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        // The directory entry is what makes the file findable after a crash.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(file)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// `rename(from, to)` that fails with `AlreadyExists` rather than replace `to`. Falls back
/// to `link` and `unlink` on file systems without `RENAME_NOREPLACE`, which fail the same
/// way on an existing `to`.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let (cf, ct) = (c(from)?, c(to)?);
    // SAFETY: both paths are valid NUL-terminated strings that live across the call.
    let rc = unsafe {
        libc::renameat2(libc::AT_FDCWD, cf.as_ptr(), libc::AT_FDCWD, ct.as_ptr(), libc::RENAME_NOREPLACE)
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL | libc::ENOSYS) => {
            std::fs::hard_link(from, to)?;
            std::fs::remove_file(from)
        }
        _ => Err(e),
    }
}

/// Writes `content` to `target` whole ([`Pending`]): an existing target only with
/// `force`, mode `mode`.
pub fn write_whole(target: &Path, content: &[u8], mode: u32, force: bool) -> Result<(), OutFileError> {
    use std::io::Write as _;
    let mut pending = Pending::create(target, mode, force)?;
    let shown = target.display().to_string();
    pending.file().write_all(content).map_err(|cause| OutFileError::Io { path: shown, cause })?;
    pending.commit().map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    use crate::test_dir::TempDir;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn creates_with_the_mode_asked_and_leaves_no_temporary_file() {
        let dir = TempDir::new("outfile", "mode");
        let target = dir.0.join("run.ptr");
        write_whole(&target, b"data", RECORDING_MODE, false).expect("written");
        assert_eq!(std::fs::read(&target).unwrap(), b"data");
        assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(entries(&dir.0), ["run.ptr"]);
        let diagram = dir.0.join("d.svg");
        write_whole(&diagram, b"<svg/>", DIAGRAM_MODE, false).expect("written");
        // The umask may narrow 0644, never widen it.
        let mode = std::fs::metadata(&diagram).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o644, 0, "{mode:o}");
        assert_eq!(mode & 0o600, 0o600, "{mode:o}");
    }

    #[test]
    fn an_existing_file_needs_force_and_is_kept_without_it() {
        let dir = TempDir::new("outfile", "exists");
        let target = dir.0.join("old.ptr");
        std::fs::write(&target, b"precious").unwrap();
        let err = write_whole(&target, b"new", RECORDING_MODE, false).unwrap_err();
        assert!(matches!(err, OutFileError::Exists(_)), "{err}");
        assert!(err.to_string().contains("add --force"), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        write_whole(&target, b"new", RECORDING_MODE, true).expect("replaced with --force");
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(entries(&dir.0), ["old.ptr"]);
    }

    #[test]
    fn a_symbolic_link_is_refused_even_with_force() {
        let dir = TempDir::new("outfile", "link");
        let victim = dir.0.join("victim");
        std::fs::write(&victim, b"root's file").unwrap();
        let link = dir.0.join("out.svg");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        for force in [false, true] {
            let err = write_whole(&link, b"overwritten", DIAGRAM_MODE, force).unwrap_err();
            assert!(matches!(err, OutFileError::Symlink(_)), "{err}");
        }
        // A dangling link too: following it would create a file where the link points.
        let dangling = dir.0.join("dangling.ptr");
        std::os::unix::fs::symlink(dir.0.join("created-through-link"), &dangling).unwrap();
        assert!(matches!(write_whole(&dangling, b"x", RECORDING_MODE, false), Err(OutFileError::Symlink(_))));
        assert_eq!(std::fs::read(&victim).unwrap(), b"root's file");
        assert_eq!(entries(&dir.0), ["dangling.ptr", "out.svg", "victim"]);
    }

    #[test]
    fn a_planted_temporary_name_is_not_followed() {
        let dir = TempDir::new("outfile", "planted");
        let victim = dir.0.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        // Someone guessed the first temporary name and planted a link there.
        let guess = dir.0.join(format!(".run.ptr.{}.0.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &guess).unwrap();
        write_whole(&dir.0.join("run.ptr"), b"trace", RECORDING_MODE, false).expect("written");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(dir.0.join("run.ptr")).unwrap(), b"trace");
        assert!(std::fs::symlink_metadata(&guess).unwrap().file_type().is_symlink());
    }

    #[test]
    fn a_failed_start_leaves_the_old_file_and_no_temporary() {
        let dir = TempDir::new("outfile", "failed");
        let target = dir.0.join("run.ptr");
        std::fs::write(&target, b"yesterday's trace").unwrap();
        let inode = std::fs::metadata(&target).unwrap().ino();
        let mut pending = Pending::create(&target, RECORDING_MODE, true).expect("created");
        use std::io::Write as _;
        pending.file().write_all(b"half").unwrap();
        drop(pending);
        assert_eq!(std::fs::read(&target).unwrap(), b"yesterday's trace");
        assert_eq!(std::fs::metadata(&target).unwrap().ino(), inode);
        assert_eq!(entries(&dir.0), ["run.ptr"]);
    }

    #[test]
    fn a_file_planted_after_the_check_is_not_replaced() {
        let dir = TempDir::new("outfile", "race");
        let target = dir.0.join("run.ptr");
        let pending = Pending::create(&target, RECORDING_MODE, false).expect("created");
        std::fs::write(&target, b"planted").unwrap();
        let err = pending.commit().unwrap_err();
        assert!(matches!(err, OutFileError::Exists(_)), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"planted");
        assert_eq!(entries(&dir.0), ["run.ptr"]);
    }

    #[test]
    fn directories_and_names_without_a_file_are_refused() {
        let dir = TempDir::new("outfile", "dirs");
        let err = write_whole(&dir.0, b"x", DIAGRAM_MODE, true).unwrap_err();
        assert!(matches!(err, OutFileError::NotRegular(_, "a directory")), "{err}");
        let slash = PathBuf::from(format!("{}/new/", dir.0.display()));
        assert!(matches!(write_whole(&slash, b"x", DIAGRAM_MODE, true), Err(OutFileError::NoFileName(_))));
        let missing = dir.0.join("no-such-dir").join("f.svg");
        let err = write_whole(&missing, b"x", DIAGRAM_MODE, false).unwrap_err();
        assert!(err.to_string().starts_with("cannot create a file in "), "{err}");
    }
}
