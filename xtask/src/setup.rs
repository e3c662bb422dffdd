//! `cargo xtask setup`: installs what building the kernel program needs and a
//! fresh machine lacks, at the versions the project pins
//! (`portrace_ebpf::build`): the dated nightly toolchain with `rust-src` (for
//! `-Z build-std=core`), the LLVM 22 development packages, bpf-linker built
//! against them, and Prometheus (which the `serve` tests scrape portrace with).
//! Each step first checks cheaply whether it is already satisfied,
//! so running setup again is fast and changes nothing. It ends by printing the
//! versions in use.

use std::io;

use portrace_ebpf::build::{BPF_LINKER, LLVM_MAJOR, TOOLCHAIN};

use crate::process::{Cmd, Stdout};

/// Debian packages: those bpf-linker is compiled and linked against, and Prometheus
/// (its server and promtool), which the `serve` tests scrape portrace with.
pub const APT_PACKAGES: [&str; 5] = [
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "prometheus",
];

/// Where `llvm-22-dev` installs LLVM; bpf-linker's build script reads it from
/// `LLVM_PREFIX`.
pub const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// Runs every setup step in order (later steps need earlier ones: bpf-linker is
/// built against the LLVM packages).
pub fn run() -> Result<(), String> {
    nightly_toolchain()?;
    apt_packages()?;
    bpf_linker()?;
    eprintln!(
        "setup: done: kernel program built with {TOOLCHAIN} ({}), bpf-linker {BPF_LINKER}, LLVM {}",
        toolchain_version(),
        llvm_version()
    );
    Ok(())
}

/// `rustc --version` of the pinned toolchain, for the record.
fn toolchain_version() -> String {
    Cmd::new("rustup")
        .args(["run", TOOLCHAIN, "rustc", "--version"])
        .capture()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(|| "version unknown".into(), |o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

/// The version of the LLVM that bpf-linker is built against.
fn llvm_version() -> String {
    Cmd::new(format!("{LLVM_PREFIX}/bin/llvm-config"))
        .arg("--version")
        .capture()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(|| format!("{LLVM_MAJOR} (version unknown)"), |o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

/// Step 1: the pinned nightly toolchain and its `rust-src` component.
fn nightly_toolchain() -> Result<(), String> {
    const STEP: &str = "setup step 'nightly toolchain'";
    let list = capture_stdout(&Cmd::new("rustup").args(["toolchain", "list"]), STEP).map_err(|err| {
        format!("{err}; install rustup from https://rustup.rs (the kernel program is built with a nightly toolchain)")
    })?;
    let mut installed_now = false;
    if !has_toolchain(&list, TOOLCHAIN) {
        eprintln!(
            "setup: installing the {TOOLCHAIN} toolchain (the kernel program is built with -Z build-std, which needs nightly; the date is pinned because the code it generates decides what the verifier accepts)"
        );
        Cmd::new("rustup")
            .args(["toolchain", "install", TOOLCHAIN, "--profile", "minimal", "--component", "rust-src"])
            .run(STEP, Stdout::ToStderr)?;
        installed_now = true;
    }
    let components = capture_stdout(
        &Cmd::new("rustup").args(["component", "list", "--toolchain", TOOLCHAIN, "--installed"]),
        STEP,
    )?;
    if has_rust_src(&components) {
        if !installed_now {
            eprintln!("setup: {TOOLCHAIN} toolchain with rust-src: present");
        }
    } else {
        eprintln!(
            "setup: installing rust-src for {TOOLCHAIN} (-Z build-std=core compiles core from source)"
        );
        Cmd::new("rustup")
            .args(["component", "add", "rust-src", "--toolchain", TOOLCHAIN])
            .run(STEP, Stdout::ToStderr)?;
    }
    Ok(())
}

/// Step 2: the Debian packages bpf-linker is built against, and Prometheus.
fn apt_packages() -> Result<(), String> {
    ensure_apt_packages(
        "setup step 'apt packages'",
        &APT_PACKAGES,
        "LLVM 22 libraries that bpf-linker is built against; Prometheus for the serve tests",
        "install LLVM 22 development files, zstd, zlib and Prometheus by hand",
    )
}

/// Installs those of `packages` that are missing (`why` says what for, in the progress
/// line; `elsewhere` what to do on a system without dpkg), and checks they then are.
pub fn ensure_apt_packages(step: &str, packages: &[&str], why: &str, elsewhere: &str) -> Result<(), String> {
    let missing = missing_packages(step, packages, elsewhere)?;
    if missing.is_empty() {
        eprintln!("setup: apt packages {}: present", packages.join(" "));
        return Ok(());
    }
    let update = Cmd::new("apt-get").args(["update"]);
    let install = Cmd::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y"])
        .args(&missing);
    if !is_root() {
        return Err(format!(
            "{step}: missing {}; installing them needs root. Run as root: {update} && {install}; then run the same cargo xtask command again",
            missing.join(" ")
        ));
    }
    eprintln!("setup: installing apt packages {} ({why})", missing.join(" "));
    update.run(step, Stdout::ToStderr)?;
    install.run(step, Stdout::ToStderr)?;
    let still_missing = missing_packages(step, packages, elsewhere)?;
    if !still_missing.is_empty() {
        return Err(format!(
            "{step}: `{install}` succeeded but {} still not installed; check `apt-cache policy {}`",
            still_missing.join(" "),
            still_missing.join(" ")
        ));
    }
    Ok(())
}

/// The packages of `packages` that are not installed.
fn missing_packages<'a>(step: &str, packages: &[&'a str], elsewhere: &str) -> Result<Vec<&'a str>, String> {
    let mut missing = Vec::new();
    for &package in packages {
        let query = Cmd::new("dpkg-query").args(["-W", "-f", "${Status}\\n", package]);
        let output = query.capture().map_err(|err| {
            format!(
                "{step}: could not run `{query}` ({err}); this setup supports Debian-based systems only; \
                 elsewhere {elsewhere}"
            )
        })?;
        // dpkg-query exits non-zero for a package it has never heard of.
        if !output.status.success()
            || !dpkg_status_installed(&String::from_utf8_lossy(&output.stdout))
        {
            missing.push(package);
        }
    }
    Ok(missing)
}

/// Step 3: the pinned bpf-linker, which links the kernel program.
fn bpf_linker() -> Result<(), String> {
    const STEP: &str = "setup step 'bpf-linker'";
    let reason = match installed_bpf_linker() {
        LinkerState::Usable(version) => {
            eprintln!("setup: bpf-linker {version}: present");
            return Ok(());
        }
        other => other.to_string(),
    };
    eprintln!(
        "setup: installing bpf-linker {BPF_LINKER} (links the kernel program; about 2 minutes): {reason}"
    );
    let install = |locked: bool| {
        let cmd = Cmd::cargo().env("LLVM_PREFIX", LLVM_PREFIX).args([
            "install",
            "bpf-linker",
            "--version",
            &format!("={BPF_LINKER}"),
        ]);
        let cmd = if locked { cmd.arg("--locked") } else { cmd };
        // --force: rebuild even when cargo's records say it is installed (the
        // binary may have been deleted or no longer start).
        cmd.args(["--no-default-features", "--features", "llvm-22", "--force"])
    };
    if let Err(locked_err) = install(true).run(STEP, Stdout::ToStderr) {
        eprintln!("{locked_err}");
        eprintln!(
            "setup: retrying without --locked (lets cargo choose newer compatible dependencies)"
        );
        install(false).run(STEP, Stdout::ToStderr)?;
    }
    match installed_bpf_linker() {
        LinkerState::Usable(version) => {
            eprintln!("setup: bpf-linker {version}: installed");
            Ok(())
        }
        LinkerState::NotFound => Err(format!(
            "{STEP}: installation finished but bpf-linker is not on PATH; add {} to PATH",
            crate::cargo_bin_dir().display()
        )),
        other => Err(format!("{STEP}: installation finished but {other}")),
    }
}

/// What `bpf-linker --version` says about the installed bpf-linker.
#[derive(Debug, PartialEq, Eq)]
enum LinkerState {
    Usable(Version),
    WrongVersion(Version),
    NotFound,
    Broken(String),
}

impl std::fmt::Display for LinkerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Usable(version) => write!(f, "bpf-linker {version} is installed"),
            Self::WrongVersion(version) => {
                write!(f, "found bpf-linker {version}, need {BPF_LINKER}")
            }
            Self::NotFound => f.write_str("bpf-linker is not on PATH"),
            Self::Broken(why) => write!(f, "`bpf-linker --version` failed ({why})"),
        }
    }
}

fn installed_bpf_linker() -> LinkerState {
    let output = match Cmd::new("bpf-linker").arg("--version").capture() {
        Ok(output) => output,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return LinkerState::NotFound,
        Err(err) => return LinkerState::Broken(err.to_string()),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let detail = stderr.lines().next().unwrap_or_default().trim().to_owned();
        return LinkerState::Broken(format!(
            "{}: {detail}",
            crate::process::describe_status(output.status)
        ));
    }
    match parse_bpf_linker_version(&stdout) {
        Some(version) if version.to_string() == BPF_LINKER => LinkerState::Usable(version),
        Some(version) => LinkerState::WrongVersion(version),
        None => LinkerState::Broken(format!("unrecognised output {:?}", stdout.trim())),
    }
}

/// A `major.minor.patch` version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Parses `bpf-linker --version` output such as `bpf-linker 0.13.0`.
pub fn parse_bpf_linker_version(output: &str) -> Option<Version> {
    let line = output
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())?;
    let mut words = line.split_whitespace();
    if words.next()? != "bpf-linker" {
        return None;
    }
    let mut parts = words.next()?.trim_start_matches('v').splitn(3, '.');
    let number = |part: &str| -> Option<u64> {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    let major = parts.next().and_then(number)?;
    let minor = parts.next().and_then(number)?;
    let patch = parts.next().and_then(number)?;
    Some(Version {
        major,
        minor,
        patch,
    })
}

/// Whether `dpkg-query -W -f='${Status}\n'` output says the package is installed
/// (`install ok installed`; also `hold ok installed`). A package known to dpkg but
/// removed reads e.g. `deinstall ok config-files`. Multi-arch packages give one
/// line per architecture; any installed one counts.
pub fn dpkg_status_installed(output: &str) -> bool {
    output.lines().any(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        words.len() == 3 && words[1] == "ok" && words[2] == "installed"
    })
}

/// Whether `rustup toolchain list` shows the toolchain `name` (listed with its host
/// triple, e.g. `nightly-2026-05-20-x86_64-unknown-linux-gnu (active)`). The plain
/// `nightly`, or another date, does not count.
pub fn has_toolchain(list: &str, name: &str) -> bool {
    list.lines()
        .filter_map(|line| line.split_whitespace().next())
        .any(|listed| {
            listed == name
                || listed
                    .strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|triple| !triple.starts_with(|c: char| c.is_ascii_digit()))
        })
}

/// Whether `rustup component list --installed` output lists `rust-src`.
pub fn has_rust_src(list: &str) -> bool {
    list.lines()
        .filter_map(|line| line.split_whitespace().next())
        .any(|name| name == "rust-src" || name.starts_with("rust-src-"))
}

/// Whether this process runs with effective user id 0.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| effective_uid(&status))
        .is_some_and(|uid| uid == 0)
}

/// The effective user id from the `Uid:` line of `/proc/self/status`
/// (`Uid:\treal\teffective\tsaved\tfilesystem`).
pub fn effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `cmd`, which must succeed, and returns its standard output.
fn capture_stdout(cmd: &Cmd, step: &str) -> Result<String, String> {
    let output = cmd
        .capture()
        .map_err(|err| format!("{step}: could not run `{cmd}`: {err}"))?;
    if !output.status.success() {
        return Err(format!(
            "{step}: `{cmd}` {}: {}",
            crate::process::describe_status(output.status),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bpf_linker_version() {
        let v = parse_bpf_linker_version("bpf-linker 0.13.0\n").unwrap();
        assert_eq!(
            v,
            Version {
                major: 0,
                minor: 13,
                patch: 0
            }
        );
        assert_eq!(v.to_string(), "0.13.0");
    }

    #[test]
    fn other_bpf_linker_versions_are_not_the_pinned_one() {
        let patch = parse_bpf_linker_version("\n  bpf-linker 0.13.12-dev\n").unwrap();
        assert_eq!(
            patch,
            Version {
                major: 0,
                minor: 13,
                patch: 12
            }
        );
        assert_ne!(patch.to_string(), BPF_LINKER);
        assert_ne!(parse_bpf_linker_version("bpf-linker 0.14.2").unwrap().to_string(), BPF_LINKER);
    }

    #[test]
    fn rejects_unrecognised_version_output() {
        assert_eq!(parse_bpf_linker_version(""), None);
        assert_eq!(parse_bpf_linker_version("something 0.13.0"), None);
        assert_eq!(parse_bpf_linker_version("bpf-linker"), None);
        assert_eq!(parse_bpf_linker_version("bpf-linker 0.13"), None);
        assert_eq!(parse_bpf_linker_version("bpf-linker x.y.z"), None);
    }

    #[test]
    fn dpkg_status_parsing() {
        assert!(dpkg_status_installed("install ok installed"));
        assert!(dpkg_status_installed("install ok installed\n"));
        assert!(dpkg_status_installed("hold ok installed\n"));
        assert!(dpkg_status_installed(
            "deinstall ok config-files\ninstall ok installed\n"
        ));
        assert!(!dpkg_status_installed("deinstall ok config-files\n"));
        assert!(!dpkg_status_installed("install ok half-configured\n"));
        assert!(!dpkg_status_installed("unknown ok not-installed\n"));
        assert!(!dpkg_status_installed(""));
    }

    #[test]
    fn pinned_toolchain_detection() {
        let name = "nightly-2026-05-20";
        let list = "stable-x86_64-unknown-linux-gnu (active, default)\n\
                    nightly-x86_64-unknown-linux-gnu\n\
                    nightly-2026-05-20-x86_64-unknown-linux-gnu\n";
        assert!(has_toolchain(list, name));
        assert!(has_toolchain("nightly-2026-05-20-aarch64-unknown-linux-gnu (active)\n", name));
        assert!(!has_toolchain("nightly-x86_64-unknown-linux-gnu\n", name));
        assert!(!has_toolchain("nightly-2026-05-21-x86_64-unknown-linux-gnu\n", name));
        assert!(!has_toolchain("nightly-2026-05-20-x86_64-unknown-linux-gnu\n", "nightly-2026-05-2"));
        assert!(!has_toolchain("", name));
    }

    #[test]
    fn rust_src_detection() {
        let list = "cargo-x86_64-unknown-linux-gnu\nrust-src\nrustc-x86_64-unknown-linux-gnu\n";
        assert!(has_rust_src(list));
        assert!(has_rust_src("rust-src (installed)\n"));
        assert!(!has_rust_src(
            "cargo-x86_64-unknown-linux-gnu\nrust-std-x86_64-unknown-linux-gnu\n"
        ));
        assert!(!has_rust_src(""));
    }

    #[test]
    fn effective_uid_parsing() {
        let status =
            "Name:\txtask\nUmask:\t0022\nUid:\t1000\t0\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Uid:\t0\t1000\t0\t0\n"), Some(1000));
        assert_eq!(effective_uid("Name:\tx\n"), None);
    }

    #[test]
    fn linker_states_explain_themselves() {
        let v = Version {
            major: 0,
            minor: 12,
            patch: 4,
        };
        assert_eq!(
            LinkerState::WrongVersion(v).to_string(),
            format!("found bpf-linker 0.12.4, need {BPF_LINKER}")
        );
        assert_eq!(
            LinkerState::NotFound.to_string(),
            "bpf-linker is not on PATH"
        );
    }
}
