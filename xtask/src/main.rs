//! `cargo xtask`: the project's developer commands (`setup`, `build`, `test`,
//! `run`, `bench`, `vm-test`, `soak`, `install`, `dist`). They install what the BPF build needs on a fresh
//! machine, then drive cargo from the workspace root, so one command works the
//! same on a developer's machine and in CI (`.ci/run`). Progress goes to standard
//! error; standard output is left to cargo test, to the traced program, and to the
//! binary path `build` prints.

mod bench;
mod cli;
mod dist;
mod fuzz;
mod package_test;
mod process;
mod setup;
mod vm;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cli::{Task, TestArgs};
use process::{Cmd, Stdout};

fn main() -> ExitCode {
    let task = match cli::parse(std::env::args_os().skip(1)) {
        Ok(task) => task,
        Err(err) => {
            eprintln!("xtask: {err}\n");
            eprint!("{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    ensure_cargo_bin_on_path();
    let (name, result) = match task {
        Task::Help => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Task::Setup => ("setup", setup::run()),
        Task::Build => ("build", build()),
        Task::Test(args) => ("test", test(&args)),
        Task::Run(args) => ("run", run(&args)),
        Task::Bench(args) => ("bench", bench::run(&args)),
        Task::Soak(args) => ("soak", bench::soak(&args)),
        Task::VmTest(args) => ("vm-test", vm::run(&args)),
        Task::Install(args) => ("install", dist::install(&args)),
        Task::Dist { test: false } => ("dist", dist::dist().map(drop)),
        Task::Dist { test: true } => ("dist --test", package_test::run()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask {name}: FAILED: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: the parent of this crate's directory.
fn workspace_root() -> PathBuf {
    let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask_dir.parent().unwrap_or(xtask_dir).to_path_buf()
}

/// Where cargo builds this workspace: `CARGO_TARGET_DIR` (or
/// `CARGO_BUILD_TARGET_DIR`), relative to the workspace root, or `target/`.
fn target_dir() -> PathBuf {
    let root = workspace_root();
    ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR"]
        .iter()
        .filter_map(std::env::var_os)
        .find(|dir| !dir.is_empty())
        .map_or_else(|| root.join("target"), |dir| root.join(dir))
}

/// Where `cargo install` puts binaries: `$CARGO_HOME/bin`, by default
/// `~/.cargo/bin`.
pub fn cargo_bin_dir() -> PathBuf {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .filter(|home| !home.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    cargo_home.join("bin")
}

/// Puts the cargo bin directory on `PATH` for everything started from here, so a
/// bpf-linker that setup just installed is found by the build.
fn ensure_cargo_bin_on_path() {
    let bin = cargo_bin_dir();
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|dir| dir == bin) {
        return;
    }
    let joined = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path)));
    if let Ok(joined) = joined {
        // Still single-threaded here: nothing else reads the environment
        // concurrently.
        std::env::set_var("PATH", joined);
    }
}

/// Builds the release binary and returns its path.
fn build_release() -> Result<PathBuf, String> {
    setup::run()?;
    Cmd::cargo()
        .args(["build", "--release", "-p", "portrace"])
        .cwd(&workspace_root())
        .run("release build", Stdout::ToStderr)?;
    let binary = target_dir().join("release").join("portrace");
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!(
            "release build: cargo succeeded but {} does not exist",
            binary.display()
        ))
    }
}

/// `cargo xtask build`.
fn build() -> Result<(), String> {
    let binary = build_release()?;
    eprintln!("xtask build: built the release binary:");
    println!("{}", binary.display());
    Ok(())
}

/// `cargo xtask run`: replaces this process with the release binary.
fn run(args: &[OsString]) -> Result<(), String> {
    let binary = build_release()?;
    let cmd = Cmd::new(&binary).args(args);
    let err = cmd.exec();
    Err(format!("could not start `{cmd}`: {err}"))
}

/// `cargo xtask test`: setup, the debug binary the privileged tests start, then
/// the tests. Every test phase runs even when an earlier one failed, so one run
/// reports all failures.
fn test(args: &TestArgs) -> Result<(), String> {
    // The privileged tests drive the release binary: the one users run, and the one whose
    // promise (no transition lost under a burst) is being tested.
    let binary = build_release()?;
    std::env::set_var("PORTRACE_BIN", &binary);
    let root = workspace_root();

    let mut failed = Vec::new();
    // The kernel programs as this kernel takes them, and their stack figures from the
    // object (build.rs has already refused an object over budget).
    let doctor = Cmd::new(&binary).arg("doctor");
    eprintln!("xtask test: kernel programs on this kernel: {doctor}");
    if let Err(err) = doctor.run("portrace doctor", Stdout::Inherit) {
        eprintln!("xtask test: {err}");
        failed.push("portrace doctor");
    }
    // The fuzz targets, a short coverage-guided run of each (skipped when the caller
    // picks packages).
    if !args.selects_packages() {
        eprintln!("xtask test: fuzzing (portrace/fuzz, {} s per target)", fuzz::SECONDS);
        if let Err(err) = fuzz::run(&root, &target_dir()) {
            eprintln!("xtask test: {err}");
            failed.push("fuzzing");
        }
    }
    for (what, cmd) in test_phases(args) {
        let cmd = cmd.cwd(&root);
        eprintln!("xtask test: {what}: {cmd}");
        if let Err(err) = cmd.run(what, Stdout::Inherit) {
            eprintln!("xtask test: {err}");
            failed.push(what);
        }
    }
    if package_phase(args) {
        let what = "package test (cargo xtask dist --test)";
        eprintln!("xtask test: {what}");
        if let Err(err) = package_test::run() {
            eprintln!("xtask test: {what}: {err}");
            failed.push(what);
        }
    }
    if let Some(kernels) = vm_phase(args) {
        let what = "kernel matrix (cargo xtask vm-test)";
        eprintln!(
            "xtask test: {what}: {}",
            kernels
                .iter()
                .map(|k| k.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        if let Err(err) = vm::run(&kernels) {
            eprintln!("xtask test: {what}: {err}");
            failed.push(what);
        }
    }
    if failed.is_empty() {
        eprintln!("xtask test: PASSED (all tests, including the privileged portrace-tests)");
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// The kernel matrix's part in a full test run: a kernel besides the host's (Debian 12's
/// 6.1, the oldest the README promises) boots in a VM and runs the scenario. Only when the
/// caller gave `cargo test` no arguments (a whole run, as CI makes); the host's kernel is
/// covered by the privileged tests.
fn vm_phase(args: &TestArgs) -> Option<Vec<OsString>> {
    args.cargo
        .is_empty()
        .then(|| vec![OsString::from("--kernel"), OsString::from("debian-6.1")])
}

/// Whether a test run includes the package test (the .deb installed, run and purged in a
/// clean Debian root): a whole run, as CI makes, like the kernel matrix.
fn package_phase(args: &TestArgs) -> bool {
    args.cargo.is_empty()
}

/// The `cargo test` invocations for `args`: unit tests of every package but
/// `portrace-tests`, then `portrace-tests`, whose tests load BPF programs and so
/// must run one at a time. When the caller picks packages, one serial run of
/// exactly those.
fn test_phases(args: &TestArgs) -> Vec<(&'static str, Cmd)> {
    let with_args = |cmd: Cmd, serial: bool| {
        let no_fail_fast = !args.cargo.iter().any(|arg| arg == "--no-fail-fast");
        let cmd = if no_fail_fast {
            cmd.arg("--no-fail-fast")
        } else {
            cmd
        };
        let cmd = cmd.args(&args.cargo);
        if serial || !args.harness.is_empty() {
            let cmd = cmd.arg("--");
            let cmd = if serial {
                cmd.arg("--test-threads=1")
            } else {
                cmd
            };
            cmd.args(&args.harness)
        } else {
            cmd
        }
    };
    if args.selects_packages() {
        return vec![(
            "tests of the selected packages",
            with_args(Cmd::cargo().arg("test"), true),
        )];
    }
    vec![
        (
            "workspace tests (all packages but portrace-tests)",
            with_args(
                Cmd::cargo().args(["test", "--workspace", "--exclude", "portrace-tests"]),
                false,
            ),
        ),
        (
            "privileged tests (portrace-tests, one at a time)",
            with_args(Cmd::cargo().args(["test", "-p", "portrace-tests"]), true),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(args: &TestArgs) -> Vec<String> {
        test_phases(args)
            .into_iter()
            .map(|(_, cmd)| cmd.to_string())
            .collect()
    }

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn default_test_phases() {
        assert_eq!(
            lines(&TestArgs::default()),
            [
                "cargo test --workspace --exclude portrace-tests --no-fail-fast",
                "cargo test -p portrace-tests --no-fail-fast -- --test-threads=1",
            ]
        );
    }

    #[test]
    fn test_phases_append_extra_arguments() {
        let args = TestArgs {
            cargo: os(&["tcp"]),
            harness: os(&["--nocapture"]),
        };
        assert_eq!(
            lines(&args),
            [
                "cargo test --workspace --exclude portrace-tests --no-fail-fast tcp -- --nocapture",
                "cargo test -p portrace-tests --no-fail-fast tcp -- --test-threads=1 --nocapture",
            ]
        );
    }

    #[test]
    fn selected_packages_run_once_serially() {
        let args = TestArgs {
            cargo: os(&["-p", "portrace", "--no-fail-fast"]),
            harness: Vec::new(),
        };
        assert_eq!(
            lines(&args),
            ["cargo test -p portrace --no-fail-fast -- --test-threads=1"]
        );
    }

    #[test]
    fn a_whole_run_boots_debian_6_1_and_a_chosen_one_does_not() {
        assert_eq!(
            vm_phase(&TestArgs::default()),
            Some(os(&["--kernel", "debian-6.1"]))
        );
        let harness_only = TestArgs {
            cargo: Vec::new(),
            harness: os(&["--nocapture"]),
        };
        assert!(vm_phase(&harness_only).is_some());
        let chosen = TestArgs {
            cargo: os(&["tcp_state"]),
            harness: Vec::new(),
        };
        assert_eq!(vm_phase(&chosen), None);
        assert!(package_phase(&TestArgs::default()) && package_phase(&harness_only));
        assert!(!package_phase(&chosen));
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let root = workspace_root();
        assert!(root.join("xtask").join("Cargo.toml").is_file());
        assert!(root.join("Cargo.toml").is_file());
    }
}
