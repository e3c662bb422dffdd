//! `cargo xtask dist --test`: the installation tested as a user meets it. First
//! `cargo xtask install` into a staging directory (every file where it belongs, the
//! manual page rendered by `man`); then the Debian package in a clean Debian 12 root
//! made with debootstrap: installed with dpkg, `portrace --version` and `portrace doctor`
//! run inside it (doctor loads every kernel program, so this runs as root), the unit
//! checked by `systemd-analyze`, and the package removed and purged, after which none of
//! its files may remain.
//!
//! The debootstrap root (minbase, plus systemd and man-db so that the unit and `man
//! portrace` are checked as installed) is made once and kept in `target/dist/debootstrap/`
//! (a clean clone makes it anew, one to two minutes); each run works on a copy of it. The copy's
//! mounts (`/proc`, `/sys`, tracefs) belong to a guard that unmounts them on every path
//! out, failure and panic included, and that deletes the copy only once nothing is mounted
//! below it; mounts a killed run left behind are unmounted at the next start.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cli::InstallArgs;
use crate::dist::{Flavor, Layout, Shell};
use crate::process::{Cmd, Stdout};

/// What the package test needs on the host besides `dist`'s packages.
const TEST_PACKAGES: [&str; 3] = ["debootstrap", "man-db", "groff-base"];
/// The Debian release of the clean root, and where its packages come from.
const SUITE: &str = "bookworm";
/// Packages added to the minimal root: systemd, so that `systemd-analyze` judges the unit
/// as installed (its units, its binary, its `man:` link), and man-db, so that `man
/// portrace` works as a user would type it.
const INCLUDE: &str = "systemd,man-db";
const MIRROR: &str = "http://deb.debian.org/debian";
/// Bounds on the slow steps (seconds).
const DEBOOTSTRAP_TIMEOUT: &str = "900";
const CHROOT_TIMEOUT: &str = "120";
/// The highest `systemd-analyze security` exposure the unit may have (0 safest, 10 worst;
/// the unit scores 3.0, which systemd calls OK).
const MAX_EXPOSURE: f64 = 4.0;
/// PATH inside the root, as a login shell there would have it.
const ROOT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs the whole test.
pub fn run() -> Result<(), String> {
    let started = Instant::now();
    if !crate::setup::is_root() {
        return Err("the package test needs root (debootstrap, chroot, mount, and `portrace doctor` \
                    loads the kernel programs): run it as root"
            .into());
    }
    crate::setup::ensure_apt_packages(
        "dist --test",
        &TEST_PACKAGES,
        "debootstrap, man and systemd-analyze, to test the package",
        "run the package test on Debian or Ubuntu",
    )?;
    let mut steps: Vec<(&str, f64)> = Vec::new();
    let mut step = |name: &'static str, at: &mut Instant| {
        steps.push((name, at.elapsed().as_secs_f64()));
        *at = Instant::now();
    };
    let mut at = Instant::now();
    test_install()?;
    step("cargo xtask install into a staging directory", &mut at);
    let deb = crate::dist::dist()?;
    check_deb_contents(&deb)?;
    step("cargo xtask dist", &mut at);
    let cache = clean_root()?;
    step("the clean Debian root (debootstrap, or the cached one)", &mut at);
    test_in_root(&cache, &deb)?;
    step("install, run, remove and purge in a copy of it", &mut at);
    for (name, seconds) in &steps {
        eprintln!("xtask dist --test: {seconds:6.1} s  {name}");
    }
    eprintln!("xtask dist --test: PASSED in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// `cargo xtask install --destdir TMP`: every file of the layout present, the page rendered
/// by man, the bash completion valid bash.
fn test_install() -> Result<(), String> {
    let stage = crate::target_dir().join("dist").join("install-test");
    if stage.exists() {
        fs::remove_dir_all(&stage).map_err(|e| format!("cannot remove {}: {e}", stage.display()))?;
    }
    let prefix = PathBuf::from("/usr/local");
    let result = (|| {
        crate::dist::install(&InstallArgs { prefix: prefix.clone(), destdir: Some(stage.clone()) })?;
        let layout = Layout::new(&prefix, Flavor::Local);
        let mut expected = vec![layout.binary.clone()];
        expected.extend(man_pages()?.iter().map(|page| layout.man1.join(format!("{page}.gz"))));
        expected.extend([Shell::Bash, Shell::Zsh, Shell::Fish].map(|shell| layout.completion(shell).to_path_buf()));
        for path in &expected {
            let full = stage.join(path);
            if !full.is_file() {
                return Err(format!("install: {} is missing", full.display()));
            }
        }
        let listed = list_files(&stage)?;
        if listed.len() != expected.len() {
            return Err(format!("install wrote {listed:?}, expected exactly {expected:?}"));
        }
        check_man_page(&stage.join(&layout.man1).join("portrace.1.gz"))?;
        Cmd::new("bash").arg("-n").arg(stage.join(layout.completion(Shell::Bash))).run("bash -n on the completion", Stdout::ToStderr)?;
        eprintln!("xtask dist --test: install: {} files in place, the manual page renders", expected.len());
        Ok(())
    })();
    let _ = fs::remove_dir_all(&stage);
    result
}

/// The pages the release binary generates (`portrace generate man`): one per command,
/// so a new command brings its page without a change here.
fn man_pages() -> Result<Vec<String>, String> {
    let binary = crate::target_dir().join("release").join("portrace");
    let pages = crate::dist::man_page_names(&binary)?;
    for page in ["portrace.1", "portrace-record.1", "portrace-doctor.1"] {
        if !pages.iter().any(|p| p == page) {
            return Err(format!("`portrace generate man` wrote no {page}: {pages:?}"));
        }
    }
    Ok(pages)
}

/// `man -l` renders the page with its sections, warning about nothing.
fn check_man_page(page: &Path) -> Result<(), String> {
    let output = Cmd::new("man")
        .env("MANWIDTH", "200")
        .env("LC_ALL", "C.UTF-8")
        .args(["--warnings", "-l"])
        .arg(page)
        .capture()
        .map_err(|e| format!("cannot run man: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let warnings = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() || !warnings.trim().is_empty() {
        return Err(format!("man -l {} failed or warned: {warnings}", page.display()));
    }
    for section in ["NAME", "SYNOPSIS", "OPTIONS", "COMMANDS", "EXAMPLES", "EXIT STATUS", "SEE ALSO"] {
        if !text.lines().any(|line| line == section) {
            return Err(format!("man -l {}: no {section} section in:\n{text}", page.display()));
        }
    }
    Ok(())
}

/// The package holds exactly the files it should, and depends on libc6.
fn check_deb_contents(deb: &Path) -> Result<(), String> {
    let listing = capture(&Cmd::new("dpkg-deb").arg("--contents").arg(deb), "dpkg-deb --contents")?;
    let mut files: Vec<String> = listing
        .lines()
        .filter(|line| line.starts_with('-'))
        .filter_map(|line| line.split_whitespace().nth(5))
        .map(|path| path.trim_start_matches('.').to_owned())
        .collect();
    files.sort();
    let mut expected: Vec<String> = [
        "/usr/bin/portrace",
        "/usr/share/bash-completion/completions/portrace",
        "/usr/share/zsh/vendor-completions/_portrace",
        "/usr/share/fish/vendor_completions.d/portrace.fish",
        "/usr/share/doc/portrace/copyright",
        "/lib/systemd/system/portrace.service",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(man_pages()?.iter().map(|page| format!("/usr/share/man/man1/{page}.gz")))
    .collect();
    expected.sort();
    if files != expected {
        return Err(format!("the package holds {files:?}, expected {expected:?}"));
    }
    if listing.lines().any(|line| !line.contains(" root/root ")) {
        return Err(format!("every file must belong to root:\n{listing}"));
    }
    let depends = capture(&Cmd::new("dpkg-deb").args(["--field"]).arg(deb).arg("Depends"), "dpkg-deb --field")?;
    if !depends.trim_start().starts_with("libc6 (>= ") {
        return Err(format!("Depends is {depends:?}: it must name libc6 with a version"));
    }
    eprintln!("xtask dist --test: the package holds its {} files; Depends: {}", files.len(), depends.trim());
    Ok(())
}

/// The cached clean root, made with debootstrap when missing.
fn clean_root() -> Result<PathBuf, String> {
    let dir = crate::target_dir().join("dist").join("debootstrap");
    let name = format!("{SUITE}-minbase-{}", INCLUDE.replace(',', "-"));
    let root = dir.join(&name);
    if root.join("usr/bin/dpkg").is_file() {
        eprintln!("xtask dist --test: using the clean root made earlier: {}", root.display());
        return Ok(root);
    }
    // Made under another name and renamed when complete: an interrupted debootstrap is
    // never taken for a clean root.
    let partial = dir.join(format!("{name}.partial"));
    unmount_below(&partial)?;
    remove_tree(&partial)?;
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    eprintln!("xtask dist --test: making a clean Debian {SUITE} root with debootstrap (once; about half a minute)");
    let debootstrap = Cmd::new("timeout")
        .args([DEBOOTSTRAP_TIMEOUT, "debootstrap", "--variant=minbase"])
        .arg(format!("--include={INCLUDE}"))
        .arg(SUITE)
        .arg(&partial)
        .arg(MIRROR);
    let made = debootstrap.run("debootstrap", Stdout::ToStderr);
    // debootstrap mounts /proc and /sys inside the root while it works, and leaves them
    // when it fails.
    unmount_below(&partial)?;
    made?;
    fs::rename(&partial, &root).map_err(|e| format!("cannot rename {} to {}: {e}", partial.display(), root.display()))?;
    Ok(root)
}

/// A copy of the clean root with the kernel's file systems mounted in it. Dropping it
/// unmounts them and then deletes the copy.
struct TestRoot {
    dir: PathBuf,
    mounts: Vec<PathBuf>,
}

impl TestRoot {
    fn new(clean: &Path, dir: PathBuf) -> Result<TestRoot, String> {
        unmount_below(&dir)?;
        remove_tree(&dir)?;
        if let Some(parent) = dir.parent() {
            fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        Cmd::new("cp").args(["-a", "--reflink=auto"]).arg(clean).arg(&dir).run("copying the clean root", Stdout::ToStderr)?;
        Ok(TestRoot { dir, mounts: Vec::new() })
    }

    /// Mounts onto `target` (a path inside the root) with `mount ARGS... TARGET`.
    fn mount(&mut self, args: &[&str], target: &str) -> Result<(), String> {
        let point = self.dir.join(target);
        fs::create_dir_all(&point).map_err(|e| format!("cannot create {}: {e}", point.display()))?;
        Cmd::new("mount").args(args).arg(&point).run(&format!("mounting {target} in the test root"), Stdout::ToStderr)?;
        self.mounts.push(point);
        Ok(())
    }

    /// A command run inside the root by chroot, bounded in time.
    fn chroot(&self, args: &[&str]) -> Cmd {
        Cmd::new("timeout")
            .env("PATH", ROOT_PATH)
            .env("LC_ALL", "C")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .arg(CHROOT_TIMEOUT)
            .arg("chroot")
            .arg(&self.dir)
            .args(args)
    }

    fn path(&self, inside: &str) -> PathBuf {
        self.dir.join(inside.trim_start_matches('/'))
    }
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        for point in self.mounts.drain(..).rev() {
            unmount(&point);
        }
        match unmount_below(&self.dir).and_then(|()| remove_tree(&self.dir)) {
            Ok(()) => {}
            Err(err) => eprintln!("xtask dist --test: cleaning up the test root: {err}"),
        }
    }
}

/// Unmounts `point`; lazily if it is busy.
fn unmount(point: &Path) {
    if Cmd::new("umount").arg(point).run("umount", Stdout::ToStderr).is_err() {
        let _ = Cmd::new("umount").arg("-l").arg(point).run("umount -l", Stdout::ToStderr);
    }
}

/// Unmounts everything mounted at or below `dir`, deepest first; fails if anything stays.
fn unmount_below(dir: &Path) -> Result<(), String> {
    let read = || fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"));
    for point in mounts_below(&read()?, dir) {
        eprintln!("xtask dist --test: unmounting {} (left mounted)", point.display());
        unmount(&point);
    }
    let left = mounts_below(&read()?, dir);
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!("still mounted below {}: {left:?}; unmount them by hand", dir.display()))
    }
}

/// The mount points at or below `dir` in a mountinfo text, deepest first.
pub fn mounts_below(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .filter(|point| point.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
}

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo` octal.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..=i + 3].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let value = (bytes[i + 1] - b'0') as u32 * 64 + (bytes[i + 2] - b'0') as u32 * 8 + (bytes[i + 3] - b'0') as u32;
            out.push(value as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Deletes a tree that has nothing mounted in it, never crossing into another file system
/// (`rm --one-file-system`: should a mount be left, what it shows is not touched).
fn remove_tree(dir: &Path) -> Result<(), String> {
    if !dir.exists() {
        return Ok(());
    }
    Cmd::new("rm").args(["-rf", "--one-file-system"]).arg(dir).run(&format!("removing {}", dir.display()), Stdout::ToStderr)?;
    if dir.exists() {
        return Err(format!("{} could not be removed whole", dir.display()));
    }
    Ok(())
}

/// The package's life in a copy of the clean root.
fn test_in_root(clean: &Path, deb: &Path) -> Result<(), String> {
    let mut root = TestRoot::new(clean, crate::target_dir().join("dist").join("package-test").join("root"))?;
    root.mount(&["-t", "proc", "proc"], "proc")?;
    root.mount(&["--bind", "/sys"], "sys")?;
    // tracefs is a mount of its own below /sys, which a plain bind leaves out.
    let tracefs = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"].into_iter().find(|d| Path::new(d).join("events").is_dir());
    if let Some(tracefs) = tracefs {
        root.mount(&["--bind", tracefs], tracefs.trim_start_matches('/'))?;
    }
    let deb_name = deb.file_name().ok_or("the package has no file name")?.to_string_lossy().into_owned();
    fs::copy(deb, root.path("/tmp").join(&deb_name)).map_err(|e| format!("cannot copy the package into the root: {e}"))?;
    let inside_deb = format!("/tmp/{deb_name}");

    root.chroot(&["dpkg", "-i", &inside_deb]).run("dpkg -i in the clean root", Stdout::ToStderr)?;
    let installed = capture(&root.chroot(&["dpkg-query", "-L", "portrace"]), "dpkg-query -L")?;
    let files: Vec<String> = installed
        .lines()
        .filter(|p| root.path(p).is_file() && !root.path(p).is_symlink())
        .map(str::to_owned)
        .collect();
    let expected = 6 + man_pages()?.len();
    if files.len() != expected {
        return Err(format!("dpkg lists {} files, expected {expected}: {files:?}", files.len()));
    }
    // Installed, neither enabled nor started; its state recorded for purge.
    if root.path("/etc/systemd/system/multi-user.target.wants/portrace.service").exists() {
        return Err("installing the package enabled the unit; it must be left to the administrator".into());
    }
    let state = root.path("/var/lib/systemd/deb-systemd-helper-enabled/portrace.service.dsh-also");
    if !state.is_file() {
        return Err(format!("postinst did not record the unit's state ({} is missing)", state.display()));
    }

    let version = capture(&root.chroot(&["portrace", "--version"]), "portrace --version in the root")?;
    if version.trim() != format!("portrace {}", env!("CARGO_PKG_VERSION")) {
        return Err(format!("portrace --version printed {version:?}"));
    }
    let doctor = capture(&root.chroot(&["portrace", "doctor"]), "portrace doctor in the root")?;
    if !doctor.contains("The core timeline can run here.") {
        return Err(format!("portrace doctor in the root:\n{doctor}"));
    }
    eprintln!("xtask dist --test: in the root: {} ; portrace doctor: the core timeline can run", version.trim());
    check_man_page(&root.path("/usr/share/man/man1/portrace.1.gz"))?;
    let man = capture(&root.chroot(&["man", "portrace-doctor"]).env("MANWIDTH", "100"), "man portrace-doctor in the root")?;
    if !man.contains("portrace doctor [--json]") || !man.contains("EXIT STATUS") {
        return Err(format!("man portrace-doctor in the root printed:\n{man}"));
    }
    Cmd::new("bash").arg("-n").arg(root.path("/usr/share/bash-completion/completions/portrace")).run("bash -n on the completion", Stdout::ToStderr)?;
    check_unit(&root)?;

    root.chroot(&["dpkg", "-r", "portrace"]).run("dpkg -r in the clean root", Stdout::ToStderr)?;
    let left: Vec<&String> = files.iter().filter(|p| root.path(p).exists()).collect();
    if !left.is_empty() {
        return Err(format!("dpkg -r left {left:?}"));
    }
    root.chroot(&["dpkg", "-P", "portrace"]).run("dpkg -P in the clean root", Stdout::ToStderr)?;
    if state.exists() {
        return Err(format!("purging left the unit's state {}", state.display()));
    }
    let status = root.chroot(&["dpkg-query", "-W", "-f", "${Status}", "portrace"]).capture();
    if let Ok(out) = status {
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && !text.contains("not-installed") {
            return Err(format!("after purge dpkg still knows portrace: {text}"));
        }
    }
    eprintln!("xtask dist --test: removed and purged: none of its {} files remains", files.len());
    Ok(())
}

/// `systemd-analyze verify`, run in the root, finds nothing wrong with the unit as
/// installed (its binary and manual page included), and `systemd-analyze security` rates
/// it at most [`MAX_EXPOSURE`].
fn check_unit(root: &TestRoot) -> Result<(), String> {
    let verify = root.chroot(&["systemd-analyze", "verify", "/lib/systemd/system/portrace.service"]);
    let output = verify.capture().map_err(|e| format!("cannot run systemd-analyze: {e}"))?;
    let complaints = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() || complaints.lines().any(|l| l.contains("portrace")) {
        return Err(format!("`{verify}` found problems:\n{complaints}"));
    }
    let security = root.chroot(&["systemd-analyze", "security", "--offline=yes", "--no-pager", "portrace.service"]);
    let report = capture(&security, "systemd-analyze security")?;
    let exposure = parse_exposure(&report).ok_or_else(|| format!("no exposure level in:\n{report}"))?;
    if exposure > MAX_EXPOSURE {
        return Err(format!("the unit's exposure is {exposure} (at most {MAX_EXPOSURE} allowed):\n{report}"));
    }
    eprintln!("xtask dist --test: systemd-analyze verify: clean; security: exposure {exposure}");
    Ok(())
}

/// The number in `Overall exposure level for portrace.service: 3.0 OK`.
pub fn parse_exposure(report: &str) -> Option<f64> {
    let line = report.lines().find(|l| l.contains("Overall exposure level"))?;
    line.split(':').nth(1)?.split_whitespace().next()?.parse().ok()
}

fn list_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                walk(&entry.path(), out)?;
            } else {
                out.push(entry.path());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, &mut out).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    Ok(out)
}

fn capture(cmd: &Cmd, what: &str) -> Result<String, String> {
    let output = cmd.capture().map_err(|e| format!("{what}: cannot run `{cmd}`: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{what}: `{cmd}` {}:\n{}{}",
            crate::process::describe_status(output.status),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_below_a_directory_deepest_first() {
        let mountinfo = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
30 22 0:5 / /work/t/root/proc rw - proc proc rw
31 22 0:6 / /work/t/root/sys rw - sysfs sysfs rw
32 31 0:7 / /work/t/root/sys/kernel/tracing rw - tracefs nodev rw
33 22 0:8 / /work/t/root2/proc rw - proc proc rw
34 22 0:9 / /work/t/a\\040b/proc rw - proc proc rw
";
        assert_eq!(
            mounts_below(mountinfo, Path::new("/work/t/root")),
            [
                PathBuf::from("/work/t/root/sys/kernel/tracing"),
                PathBuf::from("/work/t/root/proc"),
                PathBuf::from("/work/t/root/sys"),
            ]
        );
        assert_eq!(mounts_below(mountinfo, Path::new("/work/t/a b")), [PathBuf::from("/work/t/a b/proc")]);
        assert!(mounts_below(mountinfo, Path::new("/elsewhere")).is_empty());
    }

    #[test]
    fn exposure_is_read_from_the_report() {
        assert_eq!(parse_exposure("✓ UMask= ...\n\n→ Overall exposure level for portrace.service: 3.0 OK 🙂\n"), Some(3.0));
        assert_eq!(parse_exposure("nothing"), None);
    }
}
