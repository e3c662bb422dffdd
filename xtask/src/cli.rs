//! The command line of `cargo xtask`: which task to run and the arguments it
//! passes on. Parsing is kept free of side effects so it can be unit-tested.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::PathBuf;

/// The usage text, printed by `help` and on a usage error.
pub const USAGE: &str = "\
usage: cargo xtask <TASK> [-- ARGS]

tasks:
  setup            install what building the kernel program needs, if missing,
                   at the pinned versions (portrace-ebpf/src/lib.rs, `build`):
                   nightly-2026-05-20 with rust-src, the LLVM 22 apt packages,
                   bpf-linker 0.13.0 (idempotent; quick when all is present)
  build            setup, then `cargo build --release -p portrace`; prints the
                   path of the binary on standard output
  test [-- ARGS]   setup, `cargo build -p portrace`, then the tests: every
                   package but portrace-tests, then portrace-tests (privileged,
                   one test at a time). ARGS go to `cargo test`; test-binary
                   flags go after a second `--`, e.g.
                   cargo xtask test -- tcp_state -- --nocapture
                   (given no cargo arguments, it also runs `dist --test` and
                   the kernel matrix for debian-6.1)
  run [-- ARGS]    setup, `cargo build --release -p portrace`, then replace this
                   process with `target/release/portrace ARGS`
  bench [-- ARGS]  setup, release builds of portrace, tcpload and the benchmark, then
                   the benchmark (root; a few minutes): portrace and the installed
                   peers against ground truth; `cargo xtask bench --help` for ARGS
  soak [-- ARGS]   setup, release builds of portrace and the benchmark, then
                   `portrace serve` for 10 minutes at a steady rate with owner
                   labels (root): RSS over time and scrape latency;
                   `--minutes N`, `--rate N`, `--services N` change the run
  vm-test [--kernel debian-6.1|debian-6.12|host|PATH]...
                   the kernel matrix (root; minutes per kernel): boot each kernel
                   in QEMU with virtme-ng, load every program, run the scenario
                   without and with filters, print the table; default: all three
                   (`test` runs it for debian-6.1 when given no cargo arguments)
  install [--prefix DIR] [--destdir DIR]
                   setup and the release build, then install the binary, its
                   manual pages and its bash, zsh and fish completions under
                   DIR (default /usr/local), below --destdir when given (for
                   staging); `man portrace` then works
  dist [--test]    setup and the release build, then the Debian package
                   target/dist/portrace_VERSION_ARCH.deb (binary, manual pages,
                   completions, copyright, the systemd unit); with --test, also
                   the package test (root; about a minute): `install` into a
                   staging directory, then the package installed, run
                   (`portrace doctor`) and purged in a clean Debian 12 root made
                   with debootstrap (kept in target/dist/ for the next run)
  help             print this text
";

/// A parsed `cargo xtask` command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Task {
    Setup,
    Build,
    Test(TestArgs),
    Run(Vec<OsString>),
    Bench(Vec<OsString>),
    Soak(Vec<OsString>),
    VmTest(Vec<OsString>),
    Install(InstallArgs),
    Dist { test: bool },
    Help,
}

/// Where `cargo xtask install` puts the files.
#[derive(Debug, PartialEq, Eq)]
pub struct InstallArgs {
    /// The prefix the files are installed for: `PREFIX/bin/portrace`, ...
    pub prefix: PathBuf,
    /// A staging directory the prefix is created under (`DESTDIR/PREFIX/bin/portrace`).
    pub destdir: Option<PathBuf>,
}

/// Extra arguments of `cargo xtask test`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TestArgs {
    /// Arguments for `cargo test` itself (filters, `--release`, `-p PKG`, ...).
    pub cargo: Vec<OsString>,
    /// Arguments for the test binaries (what follows `--` on a `cargo test` line).
    pub harness: Vec<OsString>,
}

impl TestArgs {
    /// Whether the caller chose the packages to test (`-p`, `--package`, ...).
    pub fn selects_packages(&self) -> bool {
        self.cargo.iter().filter_map(|arg| arg.to_str()).any(|arg| {
            arg == "-p"
                || arg.starts_with("-p") && !arg.starts_with("--")
                || arg == "--package"
                || arg.starts_with("--package=")
                || arg == "--workspace"
                || arg == "--all"
                || arg == "--exclude"
                || arg.starts_with("--exclude=")
        })
    }
}

/// Why a command line could not be parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum UsageError {
    NoTask,
    UnknownTask(String),
    UnexpectedArgs {
        task: &'static str,
        args: Vec<String>,
    },
    BadOption {
        task: &'static str,
        why: String,
    },
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoTask => f.write_str("no task given"),
            Self::UnknownTask(task) => write!(f, "unknown task `{task}`"),
            Self::UnexpectedArgs { task, args } => {
                write!(f, "`{task}` takes no arguments, got: {}", args.join(" "))
            }
            Self::BadOption { task, why } => write!(f, "`{task}`: {why}"),
        }
    }
}

/// Parses the arguments after the program name.
pub fn parse<I>(args: I) -> Result<Task, UsageError>
where
    I: IntoIterator<Item = OsString>,
{
    let mut args = args.into_iter();
    let Some(task) = args.next() else {
        return Err(UsageError::NoTask);
    };
    let rest = strip_separator(args.collect());
    let no_args = |task: &'static str, parsed: Task| {
        if rest.is_empty() {
            Ok(parsed)
        } else {
            let args = rest
                .iter()
                .map(|arg| arg.to_string_lossy().into_owned())
                .collect();
            Err(UsageError::UnexpectedArgs { task, args })
        }
    };
    match task.to_str() {
        Some("setup") => no_args("setup", Task::Setup),
        Some("build") => no_args("build", Task::Build),
        Some("help" | "-h" | "--help") => no_args("help", Task::Help),
        Some("test") => Ok(Task::Test(split_test_args(rest))),
        Some("run") => Ok(Task::Run(rest)),
        Some("bench") => Ok(Task::Bench(rest)),
        Some("soak") => Ok(Task::Soak(rest)),
        Some("vm-test") => Ok(Task::VmTest(rest)),
        Some("install") => parse_install(rest).map(Task::Install),
        Some("dist") => match rest.iter().map(|a| a.to_str()).collect::<Vec<_>>()[..] {
            [] => Ok(Task::Dist { test: false }),
            [Some("--test")] => Ok(Task::Dist { test: true }),
            _ => Err(UsageError::BadOption {
                task: "dist",
                why: format!(
                    "takes only --test, got: {}",
                    rest.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
                ),
            }),
        },
        _ => Err(UsageError::UnknownTask(task.to_string_lossy().into_owned())),
    }
}

/// Parses `install`'s options: `--prefix DIR` and `--destdir DIR` (or `--opt=DIR`), each
/// at most once, each an absolute path (a relative one would depend on where cargo runs).
fn parse_install(args: Vec<OsString>) -> Result<InstallArgs, UsageError> {
    let bad = |why: String| UsageError::BadOption { task: "install", why };
    let mut prefix: Option<PathBuf> = None;
    let mut destdir: Option<PathBuf> = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy().into_owned();
        let (name, inline) = match text.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name.to_owned(), Some(PathBuf::from(value))),
            _ => (text.clone(), None),
        };
        let slot = match name.as_str() {
            "--prefix" => &mut prefix,
            "--destdir" => &mut destdir,
            _ => return Err(bad(format!("unknown option `{text}` (it takes --prefix DIR and --destdir DIR)"))),
        };
        let value = match inline {
            Some(value) => value,
            None => PathBuf::from(args.next().ok_or_else(|| bad(format!("{name} needs a directory")))?),
        };
        if !value.is_absolute() {
            return Err(bad(format!("{name} {} is not an absolute path", value.display())));
        }
        if slot.replace(value).is_some() {
            return Err(bad(format!("{name} is given twice")));
        }
    }
    Ok(InstallArgs { prefix: prefix.unwrap_or_else(|| PathBuf::from("/usr/local")), destdir })
}

/// Drops one leading `--`: `cargo xtask run -- -x` and `cargo xtask run -x` mean
/// the same.
fn strip_separator(mut args: Vec<OsString>) -> Vec<OsString> {
    if args.first().map(OsString::as_os_str) == Some(OsStr::new("--")) {
        args.remove(0);
    }
    args
}

/// Splits `test` arguments at the first `--` into cargo and harness arguments.
fn split_test_args(args: Vec<OsString>) -> TestArgs {
    let mut cargo = args;
    match cargo.iter().position(|arg| arg == "--") {
        Some(at) => {
            let harness = cargo.split_off(at + 1);
            cargo.pop();
            TestArgs { cargo, harness }
        }
        None => TestArgs {
            cargo,
            harness: Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Task, UsageError> {
        parse(args.iter().map(OsString::from))
    }

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn simple_tasks() {
        assert_eq!(parse_strs(&["setup"]), Ok(Task::Setup));
        assert_eq!(parse_strs(&["build"]), Ok(Task::Build));
        assert_eq!(parse_strs(&["help"]), Ok(Task::Help));
        assert_eq!(parse_strs(&["--help"]), Ok(Task::Help));
        assert_eq!(parse_strs(&["-h"]), Ok(Task::Help));
        assert_eq!(parse_strs(&["setup", "--"]), Ok(Task::Setup));
    }

    #[test]
    fn usage_errors() {
        assert_eq!(parse_strs(&[]), Err(UsageError::NoTask));
        assert_eq!(
            parse_strs(&["deploy"]),
            Err(UsageError::UnknownTask("deploy".into()))
        );
        assert_eq!(
            parse_strs(&["setup", "--force"]),
            Err(UsageError::UnexpectedArgs {
                task: "setup",
                args: vec!["--force".into()]
            })
        );
        assert!(parse_strs(&["build", "--", "x"]).is_err());
    }

    #[test]
    fn soak_passes_arguments_through() {
        assert_eq!(parse_strs(&["soak"]), Ok(Task::Soak(Vec::new())));
        assert_eq!(
            parse_strs(&["soak", "--", "--minutes", "30"]),
            Ok(Task::Soak(os(&["--minutes", "30"])))
        );
    }

    #[test]
    fn run_passes_arguments_through() {
        assert_eq!(parse_strs(&["run"]), Ok(Task::Run(Vec::new())));
        assert_eq!(
            parse_strs(&["run", "--", "--port", "80"]),
            Ok(Task::Run(os(&["--port", "80"])))
        );
        assert_eq!(
            parse_strs(&["run", "--port", "80"]),
            Ok(Task::Run(os(&["--port", "80"])))
        );
        // Only the first separator is dropped.
        assert_eq!(
            parse_strs(&["run", "--", "--", "x"]),
            Ok(Task::Run(os(&["--", "x"])))
        );
    }

    #[test]
    fn vm_test_passes_arguments_through() {
        assert_eq!(
            parse_strs(&["vm-test", "--kernel", "host"]),
            Ok(Task::VmTest(os(&["--kernel", "host"])))
        );
    }

    #[test]
    fn test_arguments_split_into_cargo_and_harness() {
        assert_eq!(parse_strs(&["test"]), Ok(Task::Test(TestArgs::default())));
        assert_eq!(
            parse_strs(&["test", "--", "tcp_state"]),
            Ok(Task::Test(TestArgs {
                cargo: os(&["tcp_state"]),
                harness: Vec::new()
            }))
        );
        assert_eq!(
            parse_strs(&["test", "--", "tcp_state", "--", "--nocapture"]),
            Ok(Task::Test(TestArgs {
                cargo: os(&["tcp_state"]),
                harness: os(&["--nocapture"])
            }))
        );
        assert_eq!(
            parse_strs(&["test", "--", "--", "--nocapture"]),
            Ok(Task::Test(TestArgs {
                cargo: Vec::new(),
                harness: os(&["--nocapture"])
            }))
        );
        assert_eq!(
            parse_strs(&["test", "--release", "--", "--ignored"]),
            Ok(Task::Test(TestArgs {
                cargo: os(&["--release"]),
                harness: os(&["--ignored"])
            }))
        );
    }

    #[test]
    fn install_takes_a_prefix_and_a_destdir() {
        let install = |args: &[&str]| match parse_strs(args) {
            Ok(Task::Install(a)) => Ok(a),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(install(&["install"]), Ok(InstallArgs { prefix: "/usr/local".into(), destdir: None }));
        assert_eq!(
            install(&["install", "--prefix", "/usr", "--destdir=/tmp/stage"]),
            Ok(InstallArgs { prefix: "/usr".into(), destdir: Some("/tmp/stage".into()) })
        );
        assert_eq!(
            install(&["install", "--", "--destdir", "/d"]),
            Ok(InstallArgs { prefix: "/usr/local".into(), destdir: Some("/d".into()) })
        );
        for (args, expected) in [
            (&["install", "--prefix"][..], "--prefix needs a directory"),
            (&["install", "--prefix", "usr"], "--prefix usr is not an absolute path"),
            (&["install", "--prefix", "/a", "--prefix=/b"], "--prefix is given twice"),
            (&["install", "--bindir", "/x"], "unknown option `--bindir`"),
        ] {
            let err = install(args).unwrap_err();
            assert!(err.contains(expected), "{args:?}: {err}");
        }
    }

    #[test]
    fn dist_takes_only_test() {
        assert_eq!(parse_strs(&["dist"]), Ok(Task::Dist { test: false }));
        assert_eq!(parse_strs(&["dist", "--test"]), Ok(Task::Dist { test: true }));
        assert!(parse_strs(&["dist", "--fast"]).unwrap_err().to_string().contains("takes only --test"));
    }

    #[test]
    fn package_selection_is_detected() {
        let select = |args: &[&str]| {
            TestArgs {
                cargo: os(args),
                harness: Vec::new(),
            }
            .selects_packages()
        };
        assert!(select(&["-p", "portrace"]));
        assert!(select(&["-pportrace"]));
        assert!(select(&["--package=portrace"]));
        assert!(select(&["--package", "portrace"]));
        assert!(select(&["--exclude", "xtask"]));
        assert!(!select(&["--release", "tcp_state"]));
        assert!(!select(&[]));
    }
}
