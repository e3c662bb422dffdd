//! Finding the tracers, and installing the peers. The peers are Debian's packages:
//! libbpf-tools (`tcpstates`), bpfcc-tools (`tcpstates-bpfcc`) and bpftrace. bcc compiles
//! its program when it starts and needs kernel headers for that; when the running kernel
//! has none (`/lib/modules/RELEASE/build` missing, as on kernels not built by Debian), the
//! benchmark uses Debian's `linux-headers-<arch>` of another kernel version instead: bcc's
//! tcpstates reads only the tracepoint's own fields, whose layout bcc takes from the
//! running kernel's tracefs, so the headers' version does not change what it records.
//! Debian splits those headers in two directories (`-common` and `-<flavour>`); bcc wants
//! one, so a tree of symbolic links merging both is made under the working directory and
//! named in `BCC_KERNEL_SOURCE`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::cli::{Options, TracerKind};
use crate::sys::{self, Result};
use crate::tracers::{find_program, Located};

/// The Debian packages of the peers.
/// (`linux-perf` is not a peer: it samples portrace for the breakdown of its CPU.)
pub const PEER_PACKAGES: [&str; 4] = ["libbpf-tools", "bpfcc-tools", "bpftrace", "linux-perf"];

pub fn kernel_release() -> String {
    sys::output_of(Command::new("uname").arg("-r")).unwrap_or_default()
}

fn dpkg_version(package: &str) -> Option<String> {
    let out = sys::output_of(Command::new("dpkg-query").args([
        "-W",
        "-f",
        "${Status}|${Version}",
        package,
    ]))?;
    let (status, version) = out.split_once('|')?;
    status.ends_with(" installed").then(|| version.to_string())
}

fn headers_package() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "linux-headers-arm64"
    } else {
        "linux-headers-amd64"
    }
}

fn running_kernel_has_headers() -> bool {
    Path::new(&format!("/lib/modules/{}/build", kernel_release())).exists()
}

/// `apt-get update`, then `apt-get install -y` the peers (and kernel headers for bcc when
/// the running kernel has none). Output goes to `log`.
pub fn install(log_dir: &Path) -> Result<()> {
    let mut packages: Vec<&str> = PEER_PACKAGES.to_vec();
    if !running_kernel_has_headers() && std::env::var_os("BCC_KERNEL_SOURCE").is_none() {
        packages.push(headers_package());
    }
    eprintln!(
        "bench: installing the peers: apt-get install -y {}",
        packages.join(" ")
    );
    let log = log_dir.join("apt.log");
    let apt = |args: &[&str], what: &str, timeout: u64| -> Result<()> {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        let mut p = sys::Proc::spawn(
            what,
            cmd,
            sys::Out::File(&log),
            sys::Out::File(&log.with_extension("err")),
        )?;
        let exit = p.wait(Duration::from_secs(timeout))?;
        if exit.success() {
            Ok(())
        } else {
            let err = std::fs::read_to_string(log.with_extension("err")).unwrap_or_default();
            Err(format!("{what} {}: {}", exit.describe(), err.trim()).into())
        }
    };
    apt(&["update"], "apt-get update", 600)?;
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(&packages);
    apt(&args, "apt-get install", 1200)?;
    eprintln!("bench: peers installed (log: {})", log.display());
    Ok(())
}

/// Finds `kind`, or says why it cannot run.
pub fn locate(kind: TracerKind, opts: &Options) -> std::result::Result<Located, String> {
    let hint = "install it with `apt-get install {}` or run `cargo xtask bench --install-peers`";
    let missing = |package: &str| format!("not installed ({})", hint.replace("{}", package));
    match kind {
        TracerKind::Portrace => {
            if !opts.portrace.is_file() {
                return Err(format!(
                    "{} does not exist (cargo build --release -p portrace)",
                    opts.portrace.display()
                ));
            }
            let version =
                sys::output_of(Command::new(&opts.portrace).arg("--version")).unwrap_or_default();
            Ok(Located {
                kind,
                program: opts.portrace.clone(),
                version,
                env: Vec::new(),
            })
        }
        TracerKind::LibbpfTools => {
            let version = dpkg_version("libbpf-tools").ok_or_else(|| missing("libbpf-tools"))?;
            let program = find_program("tcpstates").ok_or_else(|| missing("libbpf-tools"))?;
            Ok(Located {
                kind,
                program,
                version: format!("libbpf-tools {version}"),
                env: Vec::new(),
            })
        }
        TracerKind::Bcc => {
            let version = dpkg_version("bpfcc-tools").ok_or_else(|| missing("bpfcc-tools"))?;
            let program = find_program("tcpstates-bpfcc").ok_or_else(|| missing("bpfcc-tools"))?;
            let env = bcc_headers(&opts.work_dir)?;
            Ok(Located {
                kind,
                program,
                version: format!("bpfcc-tools {version}"),
                env,
            })
        }
        TracerKind::Bpftrace => {
            let program = find_program("bpftrace").ok_or_else(|| missing("bpftrace"))?;
            let version =
                sys::output_of(Command::new(&program).arg("--version")).unwrap_or_default();
            Ok(Located {
                kind,
                program,
                version,
                env: Vec::new(),
            })
        }
    }
}

/// The environment bcc needs to find kernel headers: nothing when the running kernel has
/// its own (or the caller set `BCC_KERNEL_SOURCE`), else a merged tree of Debian's.
fn bcc_headers(work_dir: &Path) -> std::result::Result<Vec<(String, String)>, String> {
    if running_kernel_has_headers() || std::env::var_os("BCC_KERNEL_SOURCE").is_some() {
        return Ok(Vec::new());
    }
    let release = kernel_release();
    let (common, flavour) = debian_headers().ok_or_else(|| {
        format!(
            "installed, but cannot run: bcc compiles its program against kernel headers, there are none for \
             {release} (/lib/modules/{release}/build), and no Debian linux-headers package is installed to stand \
             in (apt-get install {}, or --install-peers)",
            headers_package()
        )
    })?;
    let name = flavour
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let merged = work_dir.join("kernel-headers").join(&name);
    let stamp = merged.join(".complete");
    if !stamp.exists() {
        let _ = std::fs::remove_dir_all(&merged);
        link_tree(&common, &merged).map_err(|e| format!("merging {}: {e}", common.display()))?;
        link_tree(&flavour, &merged).map_err(|e| format!("merging {}: {e}", flavour.display()))?;
        std::fs::write(&stamp, b"").map_err(|e| format!("{}: {e}", stamp.display()))?;
    }
    let merged = std::fs::canonicalize(&merged).unwrap_or(merged);
    Ok(vec![(
        "BCC_KERNEL_SOURCE".into(),
        merged.to_string_lossy().into_owned(),
    )])
}

/// The newest `/usr/src/linux-headers-X-common` and its flavour directory.
fn debian_headers() -> Option<(PathBuf, PathBuf)> {
    let mut best: Option<(Vec<u64>, PathBuf, PathBuf)> = None;
    for entry in std::fs::read_dir("/usr/src").ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(version) = name
            .strip_prefix("linux-headers-")
            .and_then(|r| r.strip_suffix("-common"))
        else {
            continue;
        };
        let flavour = std::fs::read_dir("/usr/src")
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                let n = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                n.starts_with(&format!("linux-headers-{version}-"))
                    && !n.ends_with("-common")
                    && p.join("include").is_dir()
            })?;
        let key: Vec<u64> = version
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|d| d.parse().ok())
            .collect();
        if best.as_ref().is_none_or(|(k, _, _)| key > *k) {
            best = Some((key, entry.path(), flavour));
        }
    }
    best.map(|(_, c, f)| (c, f))
}

/// Mirrors `from` under `to` as directories and symbolic links to `from`'s files (a file
/// already linked is replaced, so a later tree overrides an earlier one).
fn link_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    let mut stack = vec![(from.to_path_buf(), to.to_path_buf())];
    // Bounded by the size of the header trees.
    while let Some((src, dst)) = stack.pop() {
        for entry in std::fs::read_dir(&src)? {
            let entry = entry?;
            let s = entry.path();
            let d = dst.join(entry.file_name());
            let meta = std::fs::symlink_metadata(&s)?;
            if meta.is_dir() {
                if std::fs::symlink_metadata(&d).is_ok_and(|m| !m.is_dir()) {
                    std::fs::remove_file(&d)?;
                }
                std::fs::create_dir_all(&d)?;
                stack.push((s, d));
            } else {
                if std::fs::symlink_metadata(&d).is_ok() {
                    std::fs::remove_file(&d)?;
                }
                std::os::unix::fs::symlink(&s, &d)?;
            }
        }
    }
    Ok(())
}

/// Whether installing can help (for the message of a missing peer).
pub fn is_root() -> bool {
    // SAFETY: plain system call.
    unsafe { libc::geteuid() == 0 }
}

/// Fails unless `name` is installed.
pub fn require_tool(name: &str) -> Result<()> {
    if find_program(name).is_none() {
        return Err(format!("`{name}` is needed and not installed").into());
    }
    Ok(())
}
