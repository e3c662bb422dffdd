//! Where a recording is read from: a file the user names, or standard input when the name
//! is `-` (`portrace record -o - ... | portrace report -`, `cat trace.ptr | portrace top
//! --from -`). `replay` and `report` read once, so standard input streams through as it
//! comes. `diagram` and `top` read a recording more than once; standard input is then
//! first copied into an anonymous memory file, bounded by [`SPOOL_MAX`]. A file literally
//! named `-` is `./-`.

use std::fs::File;
use std::io::{self, BufReader, IsTerminal as _, Read as _, Seek as _, SeekFrom, Write as _};
use std::os::fd::{AsFd as _, FromRawFd as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{ErrorKind, ReadError, ReadOptions, TraceReader};

/// The most of standard input a command that reads its recording more than once keeps.
pub const SPOOL_MAX: u64 = 1 << 30;

/// How errors and warnings name standard input.
pub const STDIN_NAME: &str = "standard input";

/// A recording to read: a path, or standard input.
#[derive(Debug)]
pub struct Input {
    source: Source,
}

#[derive(Debug)]
enum Source {
    Path(PathBuf),
    /// Standard input, read as it comes; `None` once it was opened.
    Stream(Mutex<Option<File>>),
    /// Standard input copied into a memory file, read from the start at each open.
    Spooled(File),
}

/// Whether `path` names standard input.
pub fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

impl Input {
    /// For a command that reads the recording once: a path, or standard input as a stream.
    pub fn once(path: &Path) -> Result<Input, ReadError> {
        if !is_stdin(path) {
            return Ok(Input { source: Source::Path(path.to_path_buf()) });
        }
        Ok(Input { source: Source::Stream(Mutex::new(Some(stdin_file()?))) })
    }

    /// For a command that reads the recording more than once: a path, or standard input
    /// copied into memory first (at most [`SPOOL_MAX`] bytes).
    pub fn rereadable(path: &Path) -> Result<Input, ReadError> {
        if !is_stdin(path) {
            return Ok(Input { source: Source::Path(path.to_path_buf()) });
        }
        let spooled = spool(stdin_file()?, SPOOL_MAX).map_err(stdin_error)?;
        Ok(Input { source: Source::Spooled(spooled) })
    }

    /// The name errors and warnings use.
    pub fn name(&self) -> String {
        match &self.source {
            Source::Path(path) => path.display().to_string(),
            Source::Stream(_) | Source::Spooled(_) => STDIN_NAME.to_string(),
        }
    }

    /// Opens the recording from its start and reads its header.
    pub fn open(&self, options: ReadOptions) -> Result<TraceReader<BufReader<File>>, ReadError> {
        TraceReader::new(self.bytes()?, self.name(), options)
    }

    /// The recording's bytes from its start.
    pub fn bytes(&self) -> Result<BufReader<File>, ReadError> {
        let file = match &self.source {
            Source::Path(path) => File::open(path).map_err(|e| ReadError {
                file: self.name(),
                offset: 0,
                kind: ErrorKind::Io,
                message: format!("cannot open it: {e}"),
            })?,
            Source::Stream(file) => file
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take()
                .ok_or_else(|| stdin_error("it was already read once and cannot be read again".into()))?,
            Source::Spooled(file) => {
                let mut copy = file.try_clone().map_err(|e| stdin_error(format!("cannot read it again: {e}")))?;
                copy.seek(SeekFrom::Start(0)).map_err(|e| stdin_error(format!("cannot read it again: {e}")))?;
                copy
            }
        };
        Ok(BufReader::with_capacity(1 << 16, file))
    }
}

fn stdin_error(message: String) -> ReadError {
    ReadError { file: STDIN_NAME.into(), offset: 0, kind: ErrorKind::Io, message }
}

/// Standard input as a file of its own (a duplicate of descriptor 0), refused when it is a
/// terminal: a recording is binary, and nobody types one.
fn stdin_file() -> Result<File, ReadError> {
    let stdin = io::stdin();
    if stdin.is_terminal() {
        return Err(stdin_error(
            "it is a terminal: pipe a recording in (`portrace report - < trace.ptr`), or name the file".into(),
        ));
    }
    let fd = stdin
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| stdin_error(format!("cannot take it: {e}")))?;
    Ok(File::from(fd))
}

/// Copies `src` into an anonymous memory file, refusing more than `max` bytes.
fn spool(mut src: impl io::Read, max: u64) -> Result<File, String> {
    let mut memory = memory_file().map_err(|e| format!("cannot make a memory file to hold it: {e}"))?;
    let copied = io::copy(&mut (&mut src).take(max), &mut memory).map_err(|e| format!("reading it failed: {e}"))?;
    if copied == max {
        let mut probe = [0u8; 1];
        if src.read(&mut probe).map_err(|e| format!("reading it failed: {e}"))? > 0 {
            return Err(format!(
                "it holds more than {} MiB, which this command would keep in memory to read it twice: \
                 save it to a file and name the file",
                max >> 20
            ));
        }
    }
    memory.flush().map_err(|e| format!("cannot hold it: {e}"))?;
    Ok(memory)
}

fn memory_file() -> io::Result<File> {
    // SAFETY: the name is a NUL-terminated literal; memfd_create returns a new descriptor
    // or -1 and touches nothing else.
    let fd = unsafe { libc::memfd_create(c"portrace-stdin".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor this function owns alone.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dash_is_stdin_and_dot_slash_dash_is_a_file() {
        assert!(is_stdin(Path::new("-")));
        assert!(!is_stdin(Path::new("./-")));
        assert!(!is_stdin(Path::new("--")));
    }

    #[test]
    fn a_spool_reads_again_from_the_start() {
        let spooled = spool(&b"recording bytes"[..], 1024).unwrap();
        let input = Input { source: Source::Spooled(spooled) };
        for _ in 0..2 {
            // Not a recording: the reader says so, naming standard input, having read it.
            let Err(err) = input.open(ReadOptions::default()) else { panic!("not a recording") };
            assert_eq!(err.file, STDIN_NAME);
        }
        let Source::Spooled(file) = &input.source else { unreachable!() };
        let mut copy = file.try_clone().unwrap();
        copy.seek(SeekFrom::Start(0)).unwrap();
        let mut text = String::new();
        copy.read_to_string(&mut text).unwrap();
        assert_eq!(text, "recording bytes");
    }

    #[test]
    fn a_spool_is_bounded() {
        assert!(spool(&[7u8; 100][..], 100).is_ok(), "exactly the bound fits");
        let err = spool(&[7u8; 101][..], 100).unwrap_err();
        assert!(err.contains("save it to a file"), "{err}");
    }

    #[test]
    fn a_stream_is_read_once() {
        let file = spool(&b"x"[..], 16).unwrap();
        let input = Input { source: Source::Stream(Mutex::new(Some(file))) };
        let _ = input.open(ReadOptions::default());
        let Err(err) = input.open(ReadOptions::default()) else { panic!("read twice") };
        assert!(err.message.contains("already read"), "{}", err.message);
    }
}
