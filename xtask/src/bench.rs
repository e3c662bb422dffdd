//! `cargo xtask bench`: the benchmark of portrace against ground truth and against its
//! peers. This task only prepares: setup and the release build of portrace (the binary
//! users run), the release builds of the tcpload workload generator and of the benchmark
//! itself (the `portrace-bench` crate in `bench/`), then it replaces itself with
//! `portrace-bench run`, handing it the paths of those binaries and of the results file
//! (`target/bench/results.json`) and passing every other argument through. Signals then go
//! straight to the benchmark, which cleans up its processes and namespaces itself.

use std::ffi::OsString;
use std::path::Path;

use crate::process::{Cmd, Stdout};

/// Whether `args` already set `flag` (as `--flag VALUE` or `--flag=VALUE`).
fn has_flag(args: &[OsString], flag: &str) -> bool {
    args.iter()
        .filter_map(|a| a.to_str())
        .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
}

/// The `portrace-bench run` arguments: our paths for whatever the caller did not set,
/// then the caller's arguments.
pub fn bench_args(args: &[OsString], portrace: &Path, target: &Path) -> Vec<OsString> {
    let mut out: Vec<OsString> = vec!["run".into()];
    let bench_dir = target.join("bench");
    let owned: Vec<(&str, OsString)> = vec![
        ("--portrace", portrace.as_os_str().to_os_string()),
        (
            "--tcpload",
            target.join("release").join("tcpload").into_os_string(),
        ),
        ("--out", bench_dir.join("results.json").into_os_string()),
        ("--work-dir", bench_dir.into_os_string()),
    ];
    for (flag, value) in owned {
        if !has_flag(args, flag) {
            out.push(flag.into());
            out.push(value);
        }
    }
    out.extend(args.iter().cloned());
    out
}

/// `cargo xtask bench [ARGS]`.
pub fn run(args: &[OsString]) -> Result<(), String> {
    let portrace = crate::build_release()?;
    Cmd::cargo()
        .args([
            "build",
            "--release",
            "-p",
            "portrace-tests",
            "-p",
            "portrace-bench",
            "--bins",
        ])
        .cwd(&crate::workspace_root())
        .run(
            "release build of tcpload and the benchmark",
            Stdout::ToStderr,
        )?;
    let target = crate::target_dir();
    let binary = target.join("release").join("portrace-bench");
    let cmd = Cmd::new(&binary)
        .args(bench_args(args, &portrace, &target))
        .cwd(&crate::workspace_root());
    eprintln!("xtask bench: {cmd}");
    let err = cmd.exec();
    Err(format!("could not start `{cmd}`: {err}"))
}

/// `cargo xtask soak [ARGS]`: the release builds, then `portrace-bench soak`.
pub fn soak(args: &[OsString]) -> Result<(), String> {
    let portrace = crate::build_release()?;
    Cmd::cargo()
        .args(["build", "--release", "-p", "portrace-bench", "--bins"])
        .cwd(&crate::workspace_root())
        .run("release build of the benchmark", Stdout::ToStderr)?;
    let binary = crate::target_dir().join("release").join("portrace-bench");
    let mut soak_args: Vec<OsString> = vec!["soak".into()];
    if !has_flag(args, "--portrace") {
        soak_args.push("--portrace".into());
        soak_args.push(portrace.into_os_string());
    }
    soak_args.extend(args.iter().cloned());
    let cmd = Cmd::new(&binary).args(soak_args).cwd(&crate::workspace_root());
    eprintln!("xtask soak: {cmd}");
    let err = cmd.exec();
    Err(format!("could not start `{cmd}`: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn fills_in_paths_the_caller_did_not_set() {
        let args = bench_args(
            &os(&["--count", "100"]),
            Path::new("/t/release/portrace"),
            Path::new("/t"),
        );
        assert_eq!(
            args,
            os(&[
                "run",
                "--portrace",
                "/t/release/portrace",
                "--tcpload",
                "/t/release/tcpload",
                "--out",
                "/t/bench/results.json",
                "--work-dir",
                "/t/bench",
                "--count",
                "100"
            ])
        );
        let args = bench_args(&os(&["--out=/x.json"]), Path::new("/p"), Path::new("/t"));
        assert!(!args.iter().any(|a| a == "/t/bench/results.json"));
        assert_eq!(args.last().unwrap(), "--out=/x.json");
    }
}
