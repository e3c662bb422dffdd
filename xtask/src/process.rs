//! Running external programs. A [`Cmd`] describes one invocation (environment
//! overrides, program, arguments, working directory) so that the same value can be
//! run with its output streamed, run with its output captured, replace this
//! process, or be shown to a person as the shell line to type by hand when a step
//! fails.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};

/// Where a streamed command's standard output goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stdout {
    /// The command writes to our own standard output.
    Inherit,
    /// The command's standard output is sent to our standard error, which keeps
    /// our standard output clean for what a caller may capture (the binary path
    /// printed by `build`, the output of the traced program started by `run`).
    ToStderr,
}

/// One program invocation, runnable and printable.
#[derive(Clone, Debug)]
pub struct Cmd {
    /// What is executed.
    program: OsString,
    /// How the program is named to a person (`cargo` rather than the full path of
    /// the toolchain's cargo binary).
    shown: String,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    cwd: Option<PathBuf>,
}

impl Cmd {
    /// A command that runs `program`, found on `PATH`.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        let program = program.as_ref();
        Self {
            program: program.to_owned(),
            shown: program.to_string_lossy().into_owned(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
        }
    }

    /// A command that runs the cargo that started this xtask (so the same
    /// toolchain builds everything), shown to people as plain `cargo`.
    pub fn cargo() -> Self {
        let program = std::env::var_os("CARGO")
            .filter(|cargo| !cargo.is_empty())
            .or_else(|| option_env!("CARGO").map(OsString::from))
            .unwrap_or_else(|| OsString::from("cargo"));
        Self {
            program,
            ..Self::new("cargo")
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|arg| arg.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the command only.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Runs the command in `dir`.
    pub fn cwd(mut self, dir: &Path) -> Self {
        self.cwd = Some(dir.to_owned());
        self
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        if let Some(dir) = &self.cwd {
            command.current_dir(dir);
        }
        command
    }

    /// Runs the command with its output streamed and no standard input (nothing
    /// may stop to ask a question: CI has no terminal), and waits for it.
    pub fn stream(&self, stdout: Stdout) -> io::Result<ExitStatus> {
        let mut command = self.command();
        command.stdin(Stdio::null());
        if stdout == Stdout::ToStderr {
            command.stdout(Stdio::from(io::stderr().as_fd().try_clone_to_owned()?));
        }
        command.status()
    }

    /// Runs the command with its standard output and standard error captured.
    pub fn capture(&self) -> io::Result<Output> {
        self.command().stdin(Stdio::null()).output()
    }

    /// Replaces this process with the command (same process id, so signals and
    /// the exit status reach the caller unchanged). Returns only on failure.
    pub fn exec(&self) -> io::Error {
        self.command().exec()
    }

    /// Runs the command streamed and turns a start failure or a non-zero exit into
    /// an error that names `what` failed and the command to run by hand.
    pub fn run(&self, what: &str, stdout: Stdout) -> Result<(), String> {
        match self.stream(stdout) {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(format!(
                "{what}: `{self}` {} (see its output above); to repeat it by hand: {self}",
                describe_status(status)
            )),
            Err(err) => Err(format!("{what}: could not start `{self}`: {err}")),
        }
    }
}

impl fmt::Display for Cmd {
    /// The command as a line to paste into a POSIX shell.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words: Vec<String> = Vec::new();
        if let Some(dir) = &self.cwd {
            words.push(format!("(cd {} &&", shell_quote(&dir.to_string_lossy())));
        }
        for (key, value) in &self.env {
            words.push(format!("{key}={}", shell_quote(value)));
        }
        words.push(shell_quote(&self.shown));
        words.extend(
            self.args
                .iter()
                .map(|arg| shell_quote(&arg.to_string_lossy())),
        );
        let line = words.join(" ");
        if self.cwd.is_some() {
            write!(f, "{line})")
        } else {
            f.write_str(&line)
        }
    }
}

/// Describes how a process ended, for error messages.
pub fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => format!("ended abnormally ({status})"),
    }
}

/// Quotes `word` for a POSIX shell when it holds anything but plainly safe
/// characters.
pub fn shell_quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./=:,+@%".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_are_not_quoted() {
        assert_eq!(shell_quote("--features"), "--features");
        assert_eq!(shell_quote("/usr/lib/llvm-22"), "/usr/lib/llvm-22");
    }

    #[test]
    fn special_words_are_quoted() {
        assert_eq!(shell_quote("^0.13"), "'^0.13'");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn display_shows_environment_program_and_arguments() {
        let cmd = Cmd::new("cargo")
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .args(["install", "bpf-linker", "--version", "^0.13"]);
        assert_eq!(
            cmd.to_string(),
            "LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker --version '^0.13'"
        );
    }

    #[test]
    fn cargo_is_shown_as_plain_cargo() {
        let cmd = Cmd::cargo().args(["build", "-p", "portrace"]);
        assert_eq!(cmd.to_string(), "cargo build -p portrace");
    }

    #[test]
    fn display_includes_working_directory() {
        let cmd = Cmd::new("ls").cwd(Path::new("/tmp/a b"));
        assert_eq!(cmd.to_string(), "(cd '/tmp/a b' && ls)");
    }

    #[test]
    fn run_reports_failure_with_the_command() {
        let err = Cmd::new("false")
            .run("step x", Stdout::ToStderr)
            .unwrap_err();
        assert!(
            err.starts_with("step x: `false` exited with status 1"),
            "{err}"
        );
        let err = Cmd::new("/nonexistent/program")
            .run("step y", Stdout::Inherit)
            .unwrap_err();
        assert!(err.starts_with("step y: could not start"), "{err}");
        assert!(Cmd::new("true").run("step z", Stdout::Inherit).is_ok());
    }
}
