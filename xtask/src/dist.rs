//! `cargo xtask install` and `cargo xtask dist`: what portrace installs and where. The
//! files are the release binary, its manual pages and its completion scripts, the last
//! two written by the binary itself (`portrace generate`, from its clap definition); the
//! Debian package adds the copyright file, the systemd unit and its maintainer scripts
//! (portrace/dist/). [`Layout`] names every destination for a prefix, so `install` and the
//! package put the same files in the places each convention expects; the package is built
//! with dpkg-deb, its `Depends` computed by dpkg-shlibdeps from the binary's symbols.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::cli::InstallArgs;
use crate::process::{Cmd, Stdout};

/// The shells whose completions are installed, with what `portrace generate complete`
/// calls them.
const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// Debian packages `dist` needs on the build host: dpkg-shlibdeps (dpkg-dev), gzip and
/// strip (binutils).
pub const DIST_PACKAGES: [&str; 3] = ["dpkg-dev", "gzip", "binutils"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl Shell {
    fn name(self) -> &'static str {
        match self {
            Shell::Bash => "bash",
            Shell::Zsh => "zsh",
            Shell::Fish => "fish",
        }
    }
}

/// Whose conventions the paths follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// A local installation (`cargo xtask install`): zsh's `site-functions`.
    Local,
    /// The Debian package: zsh's `vendor-completions`, the unit below `/lib`.
    Debian,
}

/// Where each installed file goes, relative to `/` (no leading slash, so it can be
/// joined under a staging directory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub binary: PathBuf,
    pub man1: PathBuf,
    completions: Vec<(Shell, PathBuf)>,
    pub doc: PathBuf,
    pub unit: PathBuf,
}

impl Layout {
    /// The layout under `prefix` (absolute, e.g. `/usr/local` or `/usr`).
    pub fn new(prefix: &Path, flavor: Flavor) -> Layout {
        let prefix = prefix.strip_prefix("/").unwrap_or(prefix).to_path_buf();
        let share = prefix.join("share");
        let zsh_dir = match flavor {
            Flavor::Local => "zsh/site-functions",
            Flavor::Debian => "zsh/vendor-completions",
        };
        Layout {
            binary: prefix.join("bin/portrace"),
            man1: share.join("man/man1"),
            completions: vec![
                (Shell::Bash, share.join("bash-completion/completions/portrace")),
                (Shell::Zsh, share.join(zsh_dir).join("_portrace")),
                (Shell::Fish, share.join("fish/vendor_completions.d/portrace.fish")),
            ],
            doc: share.join("doc/portrace"),
            unit: PathBuf::from("lib/systemd/system/portrace.service"),
        }
    }

    pub fn completion(&self, shell: Shell) -> &Path {
        self.completions.iter().find(|(s, _)| *s == shell).map(|(_, p)| p.as_path()).unwrap_or(Path::new(""))
    }
}

/// portrace's packaging sources (the unit, the maintainer scripts, the copyright file).
fn packaging_dir() -> PathBuf {
    crate::workspace_root().join("portrace").join("dist")
}

/// Writes the binary, the manual pages (gzipped) and the completions of `layout` under
/// `root`, and returns the paths written.
fn put_common_files(binary: &Path, root: &Path, layout: &Layout, strip: bool) -> Result<Vec<PathBuf>, String> {
    let mut written = Vec::new();
    let target = root.join(&layout.binary);
    create_parent(&target)?;
    copy_file(binary, &target, 0o755)?;
    if strip {
        // The kernel object is data inside the binary: stripping the host program's
        // symbols and debug information leaves it whole.
        Cmd::new("strip").args(["--strip-unneeded", "--remove-section=.comment"]).arg(&target).run("strip", Stdout::ToStderr)?;
    }
    written.push(target);

    let man1 = root.join(&layout.man1);
    fs::create_dir_all(&man1).map_err(|e| format!("cannot create {}: {e}", man1.display()))?;
    let scratch = crate::target_dir().join("dist").join(format!("man-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
    let generated = Cmd::new(binary).args(["generate", "man"]).arg(&scratch).capture();
    let pages = (|| {
        let output = generated.map_err(|e| format!("cannot run {} generate man: {e}", binary.display()))?;
        if !output.status.success() {
            return Err(format!(
                "`{} generate man` failed: {}",
                binary.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let mut pages = Vec::new();
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let page = PathBuf::from(line);
            let name = page.file_name().ok_or_else(|| format!("generate man printed {line:?}, not a page"))?;
            let target = man1.join(name);
            copy_file(&page, &target, 0o644)?;
            // -n: no name or time stamp inside, so the same page gives the same bytes.
            Cmd::new("gzip").args(["-9nf"]).arg(&target).run("gzip a manual page", Stdout::ToStderr)?;
            let mut gz = target.into_os_string();
            gz.push(".gz");
            pages.push(PathBuf::from(gz));
        }
        if pages.is_empty() {
            return Err(format!("`{} generate man` wrote no page", binary.display()));
        }
        Ok(pages)
    })();
    let _ = fs::remove_dir_all(&scratch);
    written.extend(pages?);

    for shell in SHELLS {
        let output = Cmd::new(binary)
            .args(["generate", "complete", shell.name()])
            .capture()
            .map_err(|e| format!("cannot run {} generate complete: {e}", binary.display()))?;
        if !output.status.success() || output.stdout.is_empty() {
            return Err(format!(
                "`{} generate complete {}` failed: {}",
                binary.display(),
                shell.name(),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let target = root.join(layout.completion(shell));
        create_parent(&target)?;
        write_file(&target, &output.stdout, 0o644)?;
        written.push(target);
    }
    Ok(written)
}

/// The file names of the pages `binary generate man` writes (`portrace.1`, ...).
pub fn man_page_names(binary: &Path) -> Result<Vec<String>, String> {
    let scratch = crate::target_dir().join("dist").join(format!("man-names-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
    let listed = capture_line(&Cmd::new(binary).args(["generate", "man"]).arg(&scratch), "portrace generate man");
    let _ = fs::remove_dir_all(&scratch);
    let mut names: Vec<String> = listed?
        .lines()
        .filter_map(|line| Path::new(line).file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    Ok(names)
}

/// `cargo xtask install`.
pub fn install(args: &InstallArgs) -> Result<(), String> {
    let binary = crate::build_release()?;
    let root = args.destdir.clone().unwrap_or_else(|| PathBuf::from("/"));
    let layout = Layout::new(&args.prefix, Flavor::Local);
    let written = put_common_files(&binary, &root, &layout, false)?;
    for path in &written {
        eprintln!("xtask install: {}", path.display());
    }
    let man_dir = root.join(&layout.man1);
    eprintln!(
        "xtask install: done; `man portrace` finds the pages when {} is on man's path (it is for /usr and /usr/local)",
        man_dir.parent().unwrap_or(&man_dir).display()
    );
    Ok(())
}

/// `cargo xtask dist`: builds the package and returns its path.
pub fn dist() -> Result<PathBuf, String> {
    crate::setup::ensure_apt_packages(
        "dist",
        &DIST_PACKAGES,
        "dpkg-shlibdeps, gzip and strip, to build the Debian package",
        "build the package on Debian or Ubuntu",
    )?;
    let binary = crate::build_release()?;
    let out_dir = crate::target_dir().join("dist");
    let root = out_dir.join("deb-root");
    if root.exists() {
        fs::remove_dir_all(&root).map_err(|e| format!("cannot remove the old {}: {e}", root.display()))?;
    }
    let layout = Layout::new(Path::new("/usr"), Flavor::Debian);
    put_common_files(&binary, &root, &layout, true)?;

    let packaging = packaging_dir();
    let doc = root.join(&layout.doc);
    fs::create_dir_all(&doc).map_err(|e| format!("cannot create {}: {e}", doc.display()))?;
    copy_file(&packaging.join("debian/copyright"), &doc.join("copyright"), 0o644)?;
    let unit = root.join(&layout.unit);
    create_parent(&unit)?;
    copy_file(&packaging.join("portrace.service"), &unit, 0o644)?;

    let control_dir = root.join("DEBIAN");
    fs::create_dir_all(&control_dir).map_err(|e| format!("cannot create {}: {e}", control_dir.display()))?;
    for script in ["postinst", "prerm", "postrm"] {
        copy_file(&packaging.join("debian").join(script), &control_dir.join(script), 0o755)?;
    }
    let md5sums = md5sums(&root)?;
    write_file(&control_dir.join("md5sums"), md5sums.as_bytes(), 0o644)?;

    let version = env!("CARGO_PKG_VERSION");
    let arch = capture_line(&Cmd::new("dpkg").arg("--print-architecture"), "dpkg --print-architecture")?;
    let depends = shlib_depends(&root.join(&layout.binary))?;
    let control = control(version, &arch, &depends, installed_size_kib(&root)?);
    write_file(&control_dir.join("control"), control.as_bytes(), 0o644)?;

    let deb = out_dir.join(format!("portrace_{version}_{arch}.deb"));
    let _ = fs::remove_file(&deb);
    let build = Cmd::new("dpkg-deb")
        .env("SOURCE_DATE_EPOCH", &source_date_epoch())
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&root)
        .arg(&deb);
    build.run("dpkg-deb --build", Stdout::ToStderr)?;
    eprintln!("xtask dist: built {} (Depends: {depends})", deb.display());
    println!("{}", deb.display());
    Ok(deb)
}

/// The package's control file.
pub fn control(version: &str, arch: &str, depends: &str, installed_size: u64) -> String {
    format!(
        "Package: portrace\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: portrace developers <portrace@invalid>\n\
         Installed-Size: {installed_size}\n\
         Depends: {depends}\n\
         Section: net\n\
         Priority: optional\n\
         Description: real-time TCP state tracer\n \
         portrace traces every TCP state transition on the host with eBPF (the\n \
         sock:inet_sock_set_state tracepoint), with the process that owns the socket,\n \
         its endpoints and the time spent in the state it left. It prints a live\n \
         timeline, records to a file, replays and reports recordings, raises alerts\n \
         (scans, CLOSE_WAIT leaks, TIME_WAIT pile-ups), and shows a live view (top).\n \
         .\n \
         The systemd unit portrace.service (neither enabled nor started on\n \
         installation) runs `portrace serve` with only the capabilities it needs.\n"
    )
}

/// `Depends` from dpkg-shlibdeps: the libraries the binary links and the lowest version of
/// each that has every symbol it uses.
fn shlib_depends(binary: &Path) -> Result<String, String> {
    // dpkg-shlibdeps reads debian/control from its working directory.
    let work = crate::target_dir().join("dist").join("shlibdeps");
    fs::create_dir_all(work.join("debian")).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    fs::write(work.join("debian/control"), "Source: portrace\n\nPackage: portrace\nArchitecture: any\n")
        .map_err(|e| format!("cannot write {}: {e}", work.display()))?;
    let mut arg = std::ffi::OsString::from("-e");
    arg.push(binary);
    let line = capture_line(&Cmd::new("dpkg-shlibdeps").args(["-O"]).arg(arg).cwd(&work), "dpkg-shlibdeps")?;
    parse_shlibdeps(&line).ok_or_else(|| format!("dpkg-shlibdeps printed {line:?}, not shlibs:Depends=..."))
}

/// The value of `shlibs:Depends=...` in dpkg-shlibdeps' output.
pub fn parse_shlibdeps(output: &str) -> Option<String> {
    output
        .lines()
        .find_map(|line| line.strip_prefix("shlibs:Depends="))
        .map(str::trim)
        .filter(|deps| !deps.is_empty())
        .map(str::to_owned)
}

/// Installed-Size as dpkg counts it: KiB, each file rounded up, each directory one;
/// `DEBIAN/` left out.
fn installed_size_kib(root: &Path) -> Result<u64, String> {
    fn walk(dir: &Path, total: &mut u64) -> io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                *total += 1;
                walk(&entry.path(), total)?;
            } else {
                *total += meta.len().div_ceil(1024);
            }
        }
        Ok(())
    }
    let mut total = 0;
    for entry in fs::read_dir(root).map_err(|e| format!("cannot list {}: {e}", root.display()))? {
        let entry = entry.map_err(|e| format!("cannot list {}: {e}", root.display()))?;
        if entry.file_name() != "DEBIAN" {
            total += 1;
            walk(&entry.path(), &mut total).map_err(|e| format!("cannot measure {}: {e}", root.display()))?;
        }
    }
    Ok(total)
}

/// The md5sums control file: `md5  path` for every file, as dpkg --verify checks them.
fn md5sums(root: &Path) -> Result<String, String> {
    let mut files = Vec::new();
    collect_files(root, root, &mut files).map_err(|e| format!("cannot list {}: {e}", root.display()))?;
    files.sort();
    let output = Cmd::new("md5sum").args(&files).cwd(root).capture().map_err(|e| format!("cannot run md5sum: {e}"))?;
    if !output.status.success() {
        return Err(format!("md5sum failed: {}", String::from_utf8_lossy(&output.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Every regular file under `dir`, relative to `root`, leaving out `DEBIAN/`.
fn collect_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
        if relative == Path::new("DEBIAN") {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect_files(root, &path, out)?;
        } else if kind.is_file() {
            out.push(relative);
        }
    }
    Ok(())
}

/// The time the package's files get (dpkg-deb clamps to it): `SOURCE_DATE_EPOCH` when
/// set, else the last commit's, so that one commit builds the same package.
fn source_date_epoch() -> String {
    if let Some(epoch) = std::env::var("SOURCE_DATE_EPOCH").ok().filter(|e| !e.is_empty()) {
        return epoch;
    }
    Cmd::new("git")
        .args(["log", "-1", "--format=%ct"])
        .cwd(&crate::workspace_root())
        .capture()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "0".to_owned())
}

fn capture_line(cmd: &Cmd, what: &str) -> Result<String, String> {
    let output = cmd.capture().map_err(|e| format!("cannot run `{cmd}`: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{what}: `{cmd}` {}: {}",
            crate::process::describe_status(output.status),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn create_parent(path: &Path) -> Result<(), String> {
    match path.parent() {
        Some(dir) => fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display())),
        None => Ok(()),
    }
}

/// Copies `from` to `to` with `mode`, replacing `to` by rename (never writing through a
/// file or link already there).
fn copy_file(from: &Path, to: &Path, mode: u32) -> Result<(), String> {
    let content = fs::read(from).map_err(|e| format!("cannot read {}: {e}", from.display()))?;
    write_file(to, &content, mode)
}

fn write_file(to: &Path, content: &[u8], mode: u32) -> Result<(), String> {
    let name = to.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = to.with_file_name(format!(".{name}.xtask-{}", std::process::id()));
    let result = (|| {
        let _ = fs::remove_file(&temp);
        fs::write(&temp, content)?;
        fs::set_permissions(&temp, fs::Permissions::from_mode(mode))?;
        fs::rename(&temp, to)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.map_err(|e| format!("cannot write {}: {e}", to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_and_debian_layouts() {
        let local = Layout::new(Path::new("/usr/local"), Flavor::Local);
        assert_eq!(local.binary, Path::new("usr/local/bin/portrace"));
        assert_eq!(local.man1, Path::new("usr/local/share/man/man1"));
        assert_eq!(local.completion(Shell::Bash), Path::new("usr/local/share/bash-completion/completions/portrace"));
        assert_eq!(local.completion(Shell::Zsh), Path::new("usr/local/share/zsh/site-functions/_portrace"));
        assert_eq!(local.completion(Shell::Fish), Path::new("usr/local/share/fish/vendor_completions.d/portrace.fish"));
        let deb = Layout::new(Path::new("/usr"), Flavor::Debian);
        assert_eq!(deb.binary, Path::new("usr/bin/portrace"));
        assert_eq!(deb.man1, Path::new("usr/share/man/man1"));
        assert_eq!(deb.completion(Shell::Bash), Path::new("usr/share/bash-completion/completions/portrace"));
        assert_eq!(deb.completion(Shell::Zsh), Path::new("usr/share/zsh/vendor-completions/_portrace"));
        assert_eq!(deb.completion(Shell::Fish), Path::new("usr/share/fish/vendor_completions.d/portrace.fish"));
        assert_eq!(deb.doc, Path::new("usr/share/doc/portrace"));
        assert_eq!(deb.unit, Path::new("lib/systemd/system/portrace.service"));
        // Joined under a staging directory, never escaping it.
        assert_eq!(Path::new("/stage").join(&local.binary), Path::new("/stage/usr/local/bin/portrace"));
    }

    #[test]
    fn shlibdeps_output_is_parsed() {
        assert_eq!(
            parse_shlibdeps("shlibs:Depends=libc6 (>= 2.34), libgcc-s1 (>= 4.2)\n"),
            Some("libc6 (>= 2.34), libgcc-s1 (>= 4.2)".to_owned())
        );
        assert_eq!(parse_shlibdeps("dpkg-shlibdeps: warning: x\nshlibs:Depends=libc6 (>= 2.36)"), Some("libc6 (>= 2.36)".to_owned()));
        assert_eq!(parse_shlibdeps("shlibs:Depends=\n"), None);
        assert_eq!(parse_shlibdeps(""), None);
    }

    #[test]
    fn control_file_fields() {
        let control = control("0.1.0", "amd64", "libc6 (>= 2.34)", 4321);
        let fields: Vec<&str> = control.lines().filter(|l| !l.starts_with(' ')).filter_map(|l| l.split(':').next()).collect();
        assert_eq!(
            fields,
            ["Package", "Version", "Architecture", "Maintainer", "Installed-Size", "Depends", "Section", "Priority", "Description"]
        );
        assert!(control.contains("\nDepends: libc6 (>= 2.34)\n") && control.contains("\nInstalled-Size: 4321\n"));
        assert!(control.ends_with('\n') && !control.contains("\n\n"), "one paragraph: {control}");
        // Continuation lines start with one space; an empty one is ` .`.
        assert!(control.lines().filter(|l| l.starts_with(' ')).all(|l| l.len() > 1 && l.len() <= 80), "{control}");
    }

    #[test]
    fn packaging_sources_exist_and_scripts_are_executable() {
        let dir = packaging_dir();
        for file in ["portrace.service", "debian/copyright"] {
            assert!(dir.join(file).is_file(), "{file}");
        }
        for script in ["postinst", "prerm", "postrm"] {
            let meta = fs::metadata(dir.join("debian").join(script)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o111, 0o111, "{script} is executable");
            let text = fs::read_to_string(dir.join("debian").join(script)).unwrap();
            assert!(text.starts_with("#!/bin/sh\n") && text.contains("set -e"), "{script}");
        }
    }
}
