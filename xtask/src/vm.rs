//! `cargo xtask vm-test`: the kernel matrix. For each kernel asked for (Debian 12's 6.1
//! and 6.12 `linux-image` packages, the running kernel, or a kernel image given by path)
//! it runs the release binaries there, in a QEMU guest booted by virtme-ng with the host's
//! root mounted read-only (KVM when `/dev/kvm` really creates a VM, software emulation
//! otherwise), or directly for the running kernel: `portrace doctor --json` to load every
//! program, then the `vm_scenario` binary twice, without filters and with every filter
//! flag. It prints a table of each kernel's programs (loaded or the verifier's reason,
//! load time, instructions verified) and scenario results, and fails when a kernel's core
//! programs do not load or a scenario fails. It installs what it needs (QEMU, kmod,
//! busybox, virtme-ng in a virtualenv, the kernel packages) and caches it under
//! `target/vm/`. The parsing, the table and the choices (KVM, which package) are pure
//! functions with unit tests.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::{describe_status, shell_quote, Cmd, Stdout};

/// The virtme-ng release installed into `target/vm/venv` (from PyPI).
const VIRTME_NG: &str = "virtme-ng==1.42";
/// The apt packages a guest needs on the host: QEMU, and what virtme-ng's initramfs is
/// made of (busybox, kmod's modprobe and depmod), plus a virtualenv for virtme-ng.
const APT_PACKAGES: &[&str] = &["qemu-system-x86", "kmod", "busybox-static", "python3-venv"];
/// The Debian 12 kernel packages the matrix names, as measured in the project's notes;
/// when the archive no longer has one, the newest of its series is taken (and the table
/// says which ran).
const DEBIAN_61: &str = "linux-image-6.1.0-50-amd64";
const DEBIAN_612: &str = "linux-image-6.12.111+deb12-amd64";
/// The whole guest run, boot to power-off: software emulation loads the programs and
/// runs both scenarios in a few minutes; past this the guest is killed.
const VM_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// One command of the guest script (doctor, one scenario), inside the guest or host.
const STEP_TIMEOUT_SECS: u32 = 300;
/// How long a QEMU with KVM must keep running for KVM to count as working.
const KVM_PROBE_RUN: Duration = Duration::from_secs(2);
/// The guest's size.
const VM_MEMORY: &str = "2G";
const VM_CPUS: &str = "2";

/// One kernel of the matrix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kernel {
    Debian61,
    Debian612,
    /// The running kernel, without a VM.
    Host,
    /// A kernel image (bzImage); its modules, if it needs any for virtio and 9p, must be
    /// in `/lib/modules/<its version>`.
    Path(PathBuf),
}

impl Kernel {
    fn parse(text: &str) -> Result<Kernel, String> {
        match text {
            "debian-6.1" => Ok(Kernel::Debian61),
            "debian-6.12" => Ok(Kernel::Debian612),
            "host" => Ok(Kernel::Host),
            "" => Err("--kernel needs a value: debian-6.1, debian-6.12, host or a path".into()),
            path => {
                let path = PathBuf::from(path);
                if path.is_file() {
                    Ok(Kernel::Path(path))
                } else {
                    Err(format!(
                        "--kernel {text}: not debian-6.1, debian-6.12 or host, and no such \
                         file (give the path of a kernel image, e.g. a bzImage)"
                    ))
                }
            }
        }
    }

    /// How the kernel is named in the table and in `target/vm/out/`.
    fn label(&self) -> String {
        match self {
            Kernel::Debian61 => "debian-6.1".into(),
            Kernel::Debian612 => "debian-6.12".into(),
            Kernel::Host => "host".into(),
            Kernel::Path(path) => path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
        }
    }
}

/// The usage of `cargo xtask vm-test`.
pub const USAGE: &str = "\
usage: cargo xtask vm-test [--kernel debian-6.1|debian-6.12|host|PATH]... [--bin-dir DIR]

Boots each kernel in QEMU (virtme-ng, the host's root read-only; KVM when it works,
software emulation otherwise), loads every portrace program there and runs the scenario
without and with filters; `host` runs them on the running kernel, without a VM. Default:
debian-6.1, debian-6.12 and host. Prints a table; fails when a kernel's core programs
do not load or a scenario fails. Root; installs qemu-system-x86, kmod, busybox-static and
virtme-ng (in target/vm/venv) when missing, and caches the kernels in target/vm/.
It builds the release binaries first, unless --bin-dir names a directory holding
portrace, tcpload and vm_scenario to run instead.
";

/// `vm-test`'s options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub kernels: Vec<Kernel>,
    /// Run the `portrace`, `tcpload` and `vm_scenario` found here instead of building.
    pub bin_dir: Option<PathBuf>,
}

/// Parses `vm-test`'s arguments.
pub fn parse_args(args: &[OsString]) -> Result<Options, String> {
    let mut kernels = Vec::new();
    let mut bin_dir = None;
    let mut args = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = args.next() {
        if let Some(value) = arg.strip_prefix("--kernel=") {
            kernels.push(Kernel::parse(value)?);
        } else if arg == "--kernel" {
            kernels.push(Kernel::parse(&args.next().unwrap_or_default())?);
        } else if arg == "--bin-dir" {
            let dir = PathBuf::from(args.next().unwrap_or_default());
            let missing: Vec<&str> = ["portrace", "tcpload", "vm_scenario"]
                .into_iter()
                .filter(|b| !dir.join(b).is_file())
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "--bin-dir {}: no {} there (build them with `cargo build --release -p \
                     portrace -p portrace-tests`)",
                    dir.display(),
                    missing.join(", ")
                ));
            }
            bin_dir = Some(fs::canonicalize(&dir).map_err(|e| format!("--bin-dir: {e}"))?);
        } else if arg == "-h" || arg == "--help" {
            return Err(USAGE.into());
        } else {
            return Err(format!("unknown argument {arg:?}\n{USAGE}"));
        }
    }
    if kernels.is_empty() {
        kernels = vec![Kernel::Debian61, Kernel::Debian612, Kernel::Host];
    }
    Ok(Options { kernels, bin_dir })
}

// ---------------------------------------------------------------------------------------
// Results, their parsing and the table
// ---------------------------------------------------------------------------------------

/// One program as `portrace doctor --json` reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgramRow {
    pub name: String,
    pub loaded: bool,
    pub error: Option<String>,
    pub load_ms: Option<f64>,
    pub verified_insns: Option<u64>,
}

/// What `portrace doctor --json` said, or why it said nothing usable.
#[derive(Clone, Debug, PartialEq)]
pub struct Doctor {
    pub kernel: Option<String>,
    pub core_ok: bool,
    pub programs: Vec<ProgramRow>,
    /// Why there are no program rows (the command failed or printed no report).
    pub failure: Option<String>,
}

/// One scenario run.
#[derive(Clone, Debug, PartialEq)]
pub struct ScenarioRow {
    pub mode: String,
    pub pass: bool,
    pub expected: u64,
    pub observed: u64,
    pub time_wait_seen: bool,
    pub problems: Vec<String>,
}

/// Everything one kernel gave.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelResult {
    /// `debian-6.1`, `host`, a file name.
    pub label: String,
    /// The release the kernel reported (`uname -r`), when it got that far.
    pub release: Option<String>,
    /// How it ran: `no VM` (the running kernel), `KVM`, `TCG` (software emulation).
    pub how: String,
    /// Why the kernel could not be run at all (download, boot, timeout).
    pub failure: Option<String>,
    pub doctor: Option<Doctor>,
    pub scenarios: Vec<ScenarioRow>,
}

impl KernelResult {
    fn failed(label: String, how: &str, failure: String) -> KernelResult {
        KernelResult {
            label,
            release: None,
            how: how.into(),
            failure: Some(failure),
            doctor: None,
            scenarios: Vec::new(),
        }
    }

    /// Whether every required row passed: the kernel ran, its core programs loaded, and
    /// both scenarios passed.
    pub fn passed(&self) -> bool {
        self.failure.is_none()
            && self
                .doctor
                .as_ref()
                .is_some_and(|d| d.core_ok && d.failure.is_none())
            && self.scenarios.len() == 2
            && self.scenarios.iter().all(|s| s.pass)
    }
}

/// The first line of `text` that says something, without trailing blanks.
fn first_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
}

/// Reads `portrace doctor --json`'s output: the one-line report on stdout, else a failure
/// that quotes what it printed instead (clap's message while the subcommand does not
/// exist). `exit` is its exit code (`None` when it was killed).
pub fn parse_doctor(stdout: &str, stderr: &str, exit: Option<i32>) -> Doctor {
    let report = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .find(|v| v["type"] == "doctor");
    let Some(report) = report else {
        let said = [first_line(stderr), first_line(stdout)]
            .into_iter()
            .find(|l| !l.is_empty())
            .unwrap_or_else(|| "no output".into());
        let exit = exit.map_or("was killed".to_string(), |c| format!("exited with {c}"));
        return Doctor {
            kernel: None,
            core_ok: false,
            programs: Vec::new(),
            failure: Some(format!(
                "`portrace doctor --json` {exit} without a report: {said}"
            )),
        };
    };
    let programs = report["programs"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| ProgramRow {
                    name: p["name"].as_str().unwrap_or("?").to_string(),
                    loaded: p["loaded"].as_bool().unwrap_or(false),
                    error: p["error"].as_str().map(str::to_string),
                    load_ms: p["load_ms"].as_f64(),
                    verified_insns: p["verified_insns"].as_u64(),
                })
                .collect()
        })
        .unwrap_or_default();
    let core_ok = report["core_ok"].as_bool() == Some(true);
    let mut failure = None;
    if report["schema"] != 1 {
        failure = Some(format!(
            "doctor report schema {} (this table reads 1)",
            report["schema"]
        ));
    } else if core_ok != (exit == Some(0)) {
        failure = Some(format!(
            "doctor says core_ok {core_ok} but exited with {exit:?} (0 exactly when core_ok)"
        ));
    }
    Doctor {
        kernel: report["kernel"].as_str().map(str::to_string),
        core_ok,
        programs,
        failure,
    }
}

/// Reads one `vm_scenario` run: its JSON line on stdout, else a failed row quoting its
/// stderr. The row passes only when the JSON says so and the exit code agrees.
pub fn parse_scenario(mode: &str, stdout: &str, stderr: &str, exit: Option<i32>) -> ScenarioRow {
    let result = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .find(|v| v["type"] == "vm_scenario");
    let Some(result) = result else {
        let exit = exit.map_or("was killed (timeout)".to_string(), |c| {
            format!("exited with {c}")
        });
        let said = first_line(stderr);
        return ScenarioRow {
            mode: mode.into(),
            pass: false,
            expected: 0,
            observed: 0,
            time_wait_seen: false,
            problems: vec![format!("vm_scenario {exit} without a result: {said}")],
        };
    };
    let mut problems: Vec<String> = result["problems"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let said_pass = result["pass"].as_bool() == Some(true);
    if said_pass != (exit == Some(0)) {
        problems.push(format!(
            "vm_scenario said pass {said_pass} but exited with {exit:?}"
        ));
    }
    ScenarioRow {
        mode: result["mode"].as_str().unwrap_or(mode).to_string(),
        pass: said_pass && exit == Some(0) && problems.is_empty(),
        expected: result["expected"].as_u64().unwrap_or(0),
        observed: result["observed"].as_u64().unwrap_or(0),
        time_wait_seen: result["time_wait_seen"].as_bool() == Some(true),
        problems,
    }
}

/// A cell: one line, pipes escaped, at most `max` characters.
fn cell(text: &str, max: usize) -> String {
    let one = first_line(text).replace('|', "\\|");
    if one.chars().count() > max {
        let cut: String = one.chars().take(max.saturating_sub(3)).collect();
        format!("{cut}...")
    } else {
        one
    }
}

/// What a verifier refusal comes down to: the first line of the verifier's output when
/// the message quotes it (`Verifier output: ...`), else the message's first line.
pub fn verifier_reason(error: &str) -> String {
    match error.split_once("Verifier output:") {
        Some((_, verdict)) => first_line(verdict),
        None => first_line(error),
    }
}

/// The kernel's name in the table: its release and how it ran.
fn kernel_cell(result: &KernelResult) -> String {
    let release = result
        .release
        .clone()
        .or_else(|| result.doctor.as_ref().and_then(|d| d.kernel.clone()))
        .unwrap_or_else(|| "?".into());
    format!("{release} ({}, {})", result.label, result.how)
}

/// Renders the matrix as two Markdown tables (programs, then scenarios), readable in a
/// terminal and pasteable into the README, then the problems in full.
pub fn render(results: &[KernelResult]) -> String {
    let mut out = String::new();
    out.push_str("| kernel | program | loaded / verifier's reason | load ms | verified insns |\n");
    out.push_str("|---|---|---|---:|---:|\n");
    for r in results {
        let kernel = kernel_cell(r);
        match (&r.failure, &r.doctor) {
            (Some(why), _) => {
                let _ = writeln!(
                    out,
                    "| {kernel} | - | did not run: {} | - | - |",
                    cell(why, 100)
                );
            }
            (None, None) => {
                let _ = writeln!(out, "| {kernel} | - | no doctor report | - | - |");
            }
            (None, Some(d)) => {
                if let Some(why) = &d.failure {
                    let _ = writeln!(out, "| {kernel} | - | FAILED: {} | - | - |", cell(why, 110));
                }
                for p in &d.programs {
                    let status = if p.loaded {
                        "loaded".to_string()
                    } else {
                        format!(
                            "refused: {}",
                            cell(
                                &verifier_reason(p.error.as_deref().unwrap_or("no reason given")),
                                90
                            )
                        )
                    };
                    let ms = p.load_ms.map_or("-".into(), |ms| format!("{ms:.1}"));
                    let insns = p.verified_insns.map_or("-".into(), |n| n.to_string());
                    let _ = writeln!(out, "| {kernel} | {} | {status} | {ms} | {insns} |", p.name);
                }
                if d.failure.is_none() {
                    let core = if d.core_ok {
                        "core programs load"
                    } else {
                        "FAILED: core programs do not load"
                    };
                    let _ = writeln!(out, "| {kernel} | (all) | {core} | | |");
                }
            }
        }
    }
    out.push('\n');
    out.push_str("| kernel | scenario | result |\n|---|---|---|\n");
    let mut details = String::new();
    for r in results {
        let kernel = kernel_cell(r);
        if r.scenarios.is_empty() {
            let _ = writeln!(out, "| {kernel} | - | did not run |");
        }
        for s in &r.scenarios {
            let result = if s.pass {
                let tw = if s.time_wait_seen {
                    ", TIME_WAIT seen"
                } else {
                    ""
                };
                format!(
                    "pass: {} of {} transitions, fields and owners right{tw}",
                    s.observed, s.expected
                )
            } else {
                let more = match s.problems.len() {
                    0 | 1 => String::new(),
                    n => format!(" (and {} more)", n - 1),
                };
                let first = s.problems.first().map_or("failed".into(), |p| cell(p, 110));
                format!("FAIL: {first}{more}")
            };
            let _ = writeln!(out, "| {kernel} | {} | {result} |", s.mode);
            for p in s.problems.iter().filter(|_| !s.pass) {
                let _ = writeln!(details, "{kernel} {}: {p}", s.mode);
            }
        }
        if let Some(why) = &r.failure {
            let _ = writeln!(details, "{kernel}: {why}");
        }
        for p in r
            .doctor
            .iter()
            .flat_map(|d| &d.programs)
            .filter(|p| !p.loaded)
        {
            let _ = writeln!(
                details,
                "{kernel} {}: {}",
                p.name,
                p.error.as_deref().unwrap_or("no reason given")
            );
        }
    }
    if !details.is_empty() {
        out.push_str("\nIn full:\n");
        out.push_str(&details);
    }
    out
}

// ---------------------------------------------------------------------------------------
// Choices made from the machine's answers
// ---------------------------------------------------------------------------------------

/// How a guest runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    /// Software emulation, and why KVM is not used.
    Tcg(String),
}

/// Decides from what the machine said: KVM only when `/dev/kvm` created a VM. The CPU
/// flags only explain a failure (a `/dev/kvm` can exist on a CPU without vmx or svm, and
/// then creating a VM fails).
pub fn choose_accel(create_vm: Result<(), String>, cpuinfo: &str) -> Accel {
    match create_vm {
        Ok(()) => Accel::Kvm,
        Err(why) => {
            let flags = cpuinfo
                .lines()
                .find(|l| l.starts_with("flags"))
                .and_then(|l| l.split_once(':'))
                .map_or("", |(_, f)| f);
            let virt = flags.split_whitespace().any(|f| f == "vmx" || f == "svm");
            let cpu = if virt {
                "the CPU has vmx/svm"
            } else {
                "the CPU shows neither vmx nor svm"
            };
            Accel::Tcg(format!("{why}; {cpu}"))
        }
    }
}

/// Whether KVM runs a guest the way virtme-ng starts one. Opening `/dev/kvm` and asking
/// it for a VM (KVM_CREATE_VM) is not enough: on a CPU without vmx, behind a hypervisor
/// that passes a `/dev/kvm` through, that succeeds and QEMU then aborts setting the
/// guest CPU's registers (`-cpu host`, which virtme-ng uses with KVM). So after the ioctl
/// this starts such a QEMU with no guest and counts it working when it is still running
/// after [`KVM_PROBE_RUN`]; then it is killed and reaped.
fn probe_kvm() -> Result<(), String> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
    const KVM_CREATE_VM: libc::c_ulong = 0xAE01;
    let kvm = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("/dev/kvm cannot be opened ({e})"))?;
    // SAFETY: ioctls on a file descriptor this function owns; neither takes a pointer.
    let version = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_GET_API_VERSION, 0) };
    if version != 12 {
        return Err(format!("/dev/kvm reports API version {version}, not 12"));
    }
    // SAFETY: as above; a non-negative result is a new file descriptor we then own.
    let vm = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_CREATE_VM, 0) };
    if vm < 0 {
        return Err(format!(
            "/dev/kvm exists but cannot create a VM ({})",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `vm` is a descriptor the kernel just gave us and nothing else holds.
    drop(unsafe { OwnedFd::from_raw_fd(vm) });
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-nodefaults",
        "-display",
        "none",
    ])
    .args([
        "-m",
        "32",
        "-no-reboot",
        "-serial",
        "none",
        "-monitor",
        "none",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut child = qemu
        .spawn()
        .map_err(|e| format!("could not start qemu-system-x86_64 to try KVM: {e}"))?;
    let deadline = Instant::now() + KVM_PROBE_RUN;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            return Err(format!(
                "/dev/kvm creates a VM, but QEMU with KVM and -cpu host {} at once: {}",
                describe_status(status),
                first_line(&stderr)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Only the QEMU this function started, by its own id.
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}

/// Picks the kernel package from `apt-cache search --names-only` output: `wanted` when the
/// archive has it, else the newest of the same series (`6.1.0-N` by N, `6.12.N+deb12` by
/// N). `None` when the series is absent.
pub fn choose_package(search_output: &str, wanted: &str) -> Option<String> {
    let names: Vec<&str> = search_output
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    if names.contains(&wanted) {
        return Some(wanted.to_string());
    }
    let (series, key): (&str, fn(&str) -> Option<u32>) = if wanted.starts_with("linux-image-6.1.0-")
    {
        ("linux-image-6.1.0-", |rest| {
            rest.strip_suffix("-amd64")?.parse().ok()
        })
    } else {
        ("linux-image-6.12.", |rest| {
            rest.strip_suffix("+deb12-amd64")?.parse().ok()
        })
    };
    names
        .iter()
        .filter_map(|n| Some((key(n.strip_prefix(series)?)?, *n)))
        .max()
        .map(|(_, n)| n.to_string())
}

/// The apt search pattern for the series of `wanted`.
fn search_pattern(wanted: &str) -> &'static str {
    if wanted.starts_with("linux-image-6.1.0-") {
        r"^linux-image-6\.1\.0-[0-9]+-amd64$"
    } else {
        r"^linux-image-6\.12\.[0-9]+\+deb12-amd64$"
    }
}

// ---------------------------------------------------------------------------------------
// Doing it
// ---------------------------------------------------------------------------------------

/// Where everything lives: `target/vm/`.
struct Dirs {
    root: PathBuf,
}

impl Dirs {
    fn venv(&self) -> PathBuf {
        self.root.join("venv")
    }
    fn debs(&self) -> PathBuf {
        self.root.join("debs")
    }
    fn kernels(&self) -> PathBuf {
        self.root.join("kernels")
    }
    fn out(&self, label: &str) -> PathBuf {
        self.root.join("out").join(label)
    }
    fn script(&self) -> PathBuf {
        self.root.join("guest.sh")
    }
}

/// `cargo xtask vm-test ARGS`.
pub fn run(args: &[OsString]) -> Result<(), String> {
    let Options { kernels, bin_dir } = parse_args(args)?;
    let bin = match bin_dir {
        Some(dir) => dir,
        None => build()?,
    };
    let dirs = Dirs {
        root: crate::target_dir().join("vm"),
    };
    fs::create_dir_all(&dirs.root).map_err(|e| format!("creating {}: {e}", dirs.root.display()))?;
    fs::write(dirs.script(), guest_script())
        .map_err(|e| format!("writing {}: {e}", dirs.script().display()))?;

    let needs_vm = kernels.iter().any(|k| *k != Kernel::Host);
    let accel = if needs_vm {
        install_vm_tools(&dirs)?;
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let accel = choose_accel(probe_kvm(), &cpuinfo);
        match &accel {
            Accel::Kvm => eprintln!("xtask vm-test: KVM works: guests run with it"),
            Accel::Tcg(why) => eprintln!("xtask vm-test: software emulation (no KVM: {why})"),
        }
        Some(accel)
    } else {
        None
    };

    let mut results = Vec::new();
    for kernel in &kernels {
        let label = kernel.label();
        eprintln!("xtask vm-test: {label}");
        let result = match kernel {
            Kernel::Host => run_host(&dirs, &bin),
            other => {
                let accel = accel.as_ref().ok_or("internal: no accelerator chosen")?;
                let how = match accel {
                    Accel::Kvm => "KVM",
                    Accel::Tcg(_) => "TCG",
                };
                match kernel_image(&dirs, other) {
                    Ok(image) => run_guest_retrying(&dirs, &bin, &label, &image, accel),
                    Err(why) => KernelResult::failed(label, how, why),
                }
            }
        };
        results.push(result);
    }
    let table = render(&results);
    println!("{table}");
    let table_file = dirs.root.join("table.md");
    if let Err(e) = fs::write(&table_file, &table) {
        eprintln!(
            "xtask vm-test: could not save the table in {}: {e}",
            table_file.display()
        );
    }
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.passed())
        .map(kernel_cell)
        .collect();
    if failed.is_empty() {
        eprintln!("xtask vm-test: PASSED on every kernel");
        Ok(())
    } else {
        Err(format!(
            "the matrix failed on: {} (the table above says what; the guests' consoles are in {})",
            failed.join(", "),
            dirs.root.join("out").display()
        ))
    }
}

/// Builds the release binaries and returns their directory.
fn build() -> Result<PathBuf, String> {
    let portrace = crate::build_release()?;
    Cmd::cargo()
        .args(["build", "--release", "-p", "portrace-tests"])
        .args(["--bin", "tcpload", "--bin", "vm_scenario"])
        .cwd(&crate::workspace_root())
        .run("release build of the scenario", Stdout::ToStderr)?;
    portrace
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| "the release binary has no directory".into())
}

/// The script each kernel runs, in a guest or on the host: `sh guest.sh OUT BIN`. It
/// writes each step's stdout, stderr and exit code into OUT.
fn guest_script() -> String {
    format!(
        r#"#!/bin/sh
# Written by `cargo xtask vm-test`: runs on the kernel under test (in the guest, or on
# the host for the running kernel). Usage: sh guest.sh OUT BIN
set -u
out="$1"
bin="$2"
if ! grep -qs ' /sys/kernel/tracing tracefs ' /proc/mounts; then
    mount -t tracefs nodev /sys/kernel/tracing 2>> "$out/guest.err"
fi
uname -r > "$out/kernel"
step() {{
    name="$1"
    shift
    timeout --kill-after=10 {STEP_TIMEOUT_SECS} "$@" > "$out/$name.out" 2> "$out/$name.err"
    echo $? > "$out/$name.rc"
}}
step doctor "$bin/portrace" doctor --json
step unfiltered "$bin/vm_scenario" --portrace "$bin/portrace" --tcpload "$bin/tcpload"
step filtered "$bin/vm_scenario" --portrace "$bin/portrace" --tcpload "$bin/tcpload" --filtered
echo done > "$out/finished"
"#
    )
}

/// Empties (or creates) a kernel's output directory.
fn fresh_out(dirs: &Dirs, label: &str) -> Result<PathBuf, String> {
    let out = dirs.out(label);
    if out.exists() {
        fs::remove_dir_all(&out).map_err(|e| format!("clearing {}: {e}", out.display()))?;
    }
    fs::create_dir_all(&out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    Ok(out)
}

/// Reads what the script left in `out`.
fn collect(label: String, how: &str, out: &Path, status: ExitStatus) -> KernelResult {
    let read = |name: &str| fs::read_to_string(out.join(name)).unwrap_or_default();
    let rc = |name: &str| read(&format!("{name}.rc")).trim().parse::<i32>().ok();
    // `timeout` exits 124 (or 137 after its kill) when it had to stop the step.
    let exit = |name: &str| rc(name).filter(|c| *c != 124 && *c != 137);
    if read("finished").trim() != "done" {
        let console = read("console.log");
        let tail: Vec<&str> = console.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return KernelResult::failed(
            label,
            how,
            format!(
                "the script did not finish: the runner {} ({} has the console); its last lines:\n{}",
                describe_status(status),
                out.join("console.log").display(),
                tail.join("\n")
            ),
        );
    }
    let doctor = parse_doctor(&read("doctor.out"), &read("doctor.err"), exit("doctor"));
    let scenarios = ["unfiltered", "filtered"]
        .iter()
        .map(|m| {
            parse_scenario(
                m,
                &read(&format!("{m}.out")),
                &read(&format!("{m}.err")),
                exit(m),
            )
        })
        .collect();
    let release = Some(read("kernel").trim().to_string()).filter(|r| !r.is_empty());
    KernelResult {
        label,
        release,
        how: how.into(),
        failure: None,
        doctor: Some(doctor),
        scenarios,
    }
}

/// The running kernel: the script runs here.
fn run_host(dirs: &Dirs, bin: &Path) -> KernelResult {
    let (label, how) = ("host".to_string(), "no VM");
    let out = match fresh_out(dirs, &label) {
        Ok(out) => out,
        Err(why) => return KernelResult::failed(label, how, why),
    };
    let mut cmd = Command::new("sh");
    cmd.arg(dirs.script()).arg(&out).arg(bin);
    match run_bounded(cmd, &out.join("console.log"), VM_TIMEOUT) {
        Ok(status) => collect(label, how, &out, status),
        Err(why) => KernelResult::failed(label, how, why),
    }
}

/// Boots `image` with virtme-ng and runs the script in it.
fn run_guest(dirs: &Dirs, bin: &Path, label: &str, image: &Path, accel: &Accel) -> KernelResult {
    let how = if *accel == Accel::Kvm { "KVM" } else { "TCG" };
    let out = match fresh_out(dirs, label) {
        Ok(out) => out,
        Err(why) => return KernelResult::failed(label.into(), how, why),
    };
    let exec = format!(
        "sh {} {} {}",
        shell_quote(&dirs.script().to_string_lossy()),
        shell_quote(&out.to_string_lossy()),
        shell_quote(&bin.to_string_lossy())
    );
    let venv_bin = dirs.venv().join("bin");
    let mut cmd = Command::new(venv_bin.join("vng"));
    // vng starts virtme-run from the same virtualenv through PATH.
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path =
        std::env::join_paths(std::iter::once(venv_bin.clone()).chain(std::env::split_paths(&path)))
            .unwrap_or(path);
    cmd.env("PATH", path)
        .arg("--run")
        .arg(image)
        .args(["--memory", VM_MEMORY, "--cpus", VM_CPUS, "--verbose"])
        .arg(format!("--rwdir={}", out.display()))
        .args(["--exec", &exec]);
    if *accel != Accel::Kvm {
        cmd.arg("--disable-kvm");
    }
    let started = Instant::now();
    let result = run_bounded(cmd, &out.join("console.log"), VM_TIMEOUT);
    eprintln!(
        "xtask vm-test: {label}: the guest ran for {:.0} s",
        started.elapsed().as_secs_f64()
    );
    match result {
        Ok(status) => collect(label.into(), how, &out, status),
        Err(why) => KernelResult::failed(label.into(), how, why),
    }
}

/// [`run_guest`], once more when the guest kernel locked up: seen once in about ten runs
/// of Debian's 6.1 under software emulation, a CPU waiting forever for the other to take
/// a code-patching interrupt. The second run's result stands, and its `how` says that the
/// first locked up, with the watchdog's line.
fn run_guest_retrying(dirs: &Dirs, bin: &Path, label: &str, image: &Path, accel: &Accel) -> KernelResult {
    let first = run_guest(dirs, bin, label, image, accel);
    let Some(why) = first.failure.as_deref().filter(|f| f.starts_with(LOCKUP)) else {
        return first;
    };
    eprintln!("xtask vm-test: {label}: {why}; running it once more");
    let kept = dirs.out(&format!("{label}-locked-up"));
    let _ = fs::remove_dir_all(&kept);
    let _ = fs::rename(dirs.out(label), &kept);
    let mut second = run_guest(dirs, bin, label, image, accel);
    second.how = format!("{}, run again after a lockup (console kept in {})", second.how, kept.display());
    second
}

/// How a run that the guest kernel's own watchdog found locked up is reported.
const LOCKUP: &str = "the guest kernel locked up";

/// The first line of a console that reports the guest kernel locked up (its soft-lockup
/// watchdog fired), if any. Nothing in the guest ends after that: the run is stopped at
/// once rather than at the time-out.
fn lockup_line(console: &str) -> Option<String> {
    console
        .lines()
        .find(|l| l.contains("BUG: soft lockup"))
        .map(|l| l.trim().chars().filter(|c| !c.is_control()).collect())
}

/// How long a guest may show no progress: neither its console nor the files of its steps
/// (beside the console) change. A healthy guest changes them at least once per step, and
/// `timeout` ends every step within `STEP_TIMEOUT_SECS` (and 10 s more), writing its exit
/// status. A guest still for longer has hung with no watchdog message (seen under software
/// emulation on 6.1: both vCPUs spinning, nothing printed).
const SILENCE: Duration = Duration::from_secs(STEP_TIMEOUT_SECS as u64 + 60);

/// Says the guest hung when it has shown no progress for more than [`SILENCE`].
fn silent_line(still_for: Duration) -> Option<String> {
    (still_for > SILENCE).then(|| format!("neither the console nor a step's files changed for {} s", still_for.as_secs()))
}

/// What a guest has written so far: the number and sizes of the files in the console's
/// directory (the console and each step's output and exit status).
fn progress(console: &Path) -> Vec<u64> {
    let Some(dir) = console.parent() else { return Vec::new() };
    let mut sizes: Vec<u64> =
        fs::read_dir(dir).map(|d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).collect()).unwrap_or_default();
    sizes.sort_unstable();
    sizes
}

/// Runs `cmd` in a process group of its own, its output into `log`, for at most
/// `timeout`, or until the console shows the guest kernel locked up or the guest has shown
/// no progress for longer than any step may run ([`silent_line`]); past that the whole group (the command and what it started, QEMU) is
/// killed and reaped.
fn run_bounded(mut cmd: Command, log: &Path, timeout: Duration) -> Result<ExitStatus, String> {
    let file = fs::File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let err = file
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .process_group(0);
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("could not start {shown}: {e}"))?;
    let deadline = Instant::now() + timeout;
    let mut next_look = Instant::now();
    let (mut seen, mut moved) = (progress(log), Instant::now());
    loop {
        let lockup = if Instant::now() >= next_look {
            next_look = Instant::now() + Duration::from_secs(2);
            let now = progress(log);
            if now != seen {
                (seen, moved) = (now, Instant::now());
            }
            fs::read(log)
                .ok()
                .and_then(|text| lockup_line(&String::from_utf8_lossy(&text)))
                .or_else(|| silent_line(moved.elapsed()))
        } else {
            None
        };
        if let Some(line) = lockup {
            let group = child.id() as libc::pid_t;
            // SAFETY: kill(2) on a process group we created; no memory is involved.
            unsafe { libc::kill(-group, libc::SIGKILL) };
            let _ = child.wait();
            return Err(format!("{LOCKUP}: {line} (the console is in {})", log.display()));
        }
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Ok(None) | Err(_) => {
                // The group this function created, by its id (the child's pid).
                let group = child.id() as libc::pid_t;
                // SAFETY: kill(2) on a process group we created; no memory is involved.
                unsafe { libc::kill(-group, libc::SIGKILL) };
                let status = child.wait();
                return Err(format!(
                    "{shown} did not finish within {} s and was killed ({status:?}); its output \
                     is in {}",
                    timeout.as_secs(),
                    log.display()
                ));
            }
        }
    }
}

/// Installs what a guest needs when missing: the apt packages and virtme-ng.
fn install_vm_tools(dirs: &Dirs) -> Result<(), String> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if !missing.is_empty() {
        eprintln!("xtask vm-test: installing {}", missing.join(" "));
        Cmd::new("apt-get")
            .args(["update", "-q"])
            .run("apt-get update", Stdout::ToStderr)?;
        Cmd::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .run("installing the VM tools", Stdout::ToStderr)?;
    }
    let vng = dirs.venv().join("bin").join("vng");
    let stamp = dirs.venv().join("installed");
    if vng.is_file() && fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == VIRTME_NG) {
        return Ok(());
    }
    eprintln!(
        "xtask vm-test: installing {VIRTME_NG} into {}",
        dirs.venv().display()
    );
    // Debian's own Python: python3-venv above is its venv module.
    Cmd::new("/usr/bin/python3")
        .args(["-m", "venv", "--clear"])
        .arg(dirs.venv())
        .run("creating the virtme-ng virtualenv", Stdout::ToStderr)?;
    Cmd::new(dirs.venv().join("bin").join("pip"))
        .args(["install", "-q", VIRTME_NG])
        .run("installing virtme-ng", Stdout::ToStderr)?;
    fs::write(&stamp, VIRTME_NG).map_err(|e| format!("writing {}: {e}", stamp.display()))
}

fn dpkg_installed(package: &str) -> bool {
    Cmd::new("dpkg-query")
        .args(["-W", "-f", "${Status}", package])
        .capture()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// The kernel image to boot: a Debian package's, downloaded and unpacked once (its
/// modules copied to `/lib/modules`, where virtme-ng's initramfs takes virtio and 9p
/// from), or the path given.
fn kernel_image(dirs: &Dirs, kernel: &Kernel) -> Result<PathBuf, String> {
    let wanted = match kernel {
        Kernel::Debian61 => DEBIAN_61,
        Kernel::Debian612 => DEBIAN_612,
        Kernel::Path(path) => return Ok(path.clone()),
        Kernel::Host => return Err("internal: the host kernel boots no VM".into()),
    };
    let package = find_package(wanted)?;
    if package != wanted {
        eprintln!("xtask vm-test: {wanted} is no longer in the archive; using {package}");
    }
    let unpacked = dirs.kernels().join(&package);
    if !unpacked.join("boot").is_dir() {
        fs::create_dir_all(dirs.debs())
            .map_err(|e| format!("creating {}: {e}", dirs.debs().display()))?;
        let deb = find_deb(&dirs.debs(), &package);
        let deb = match deb {
            Some(deb) => deb,
            None => {
                Cmd::new("apt-get")
                    .args(["download", "-q", &package])
                    .cwd(&dirs.debs())
                    .run(&format!("downloading {package}"), Stdout::ToStderr)?;
                find_deb(&dirs.debs(), &package).ok_or(format!(
                    "apt-get download {package} left no .deb in {}",
                    dirs.debs().display()
                ))?
            }
        };
        let partial = dirs.kernels().join(format!("{package}.partial"));
        let _ = fs::remove_dir_all(&partial);
        fs::create_dir_all(&partial).map_err(|e| format!("creating {}: {e}", partial.display()))?;
        Cmd::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&partial)
            .run(&format!("unpacking {}", deb.display()), Stdout::ToStderr)?;
        fs::rename(&partial, &unpacked)
            .map_err(|e| format!("renaming {}: {e}", partial.display()))?;
    }
    let boot = unpacked.join("boot");
    let image = fs::read_dir(&boot)
        .map_err(|e| format!("reading {}: {e}", boot.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .ok_or(format!("{package} holds no boot/vmlinuz-*"))?;
    let version = image
        .file_name()
        .and_then(|n| {
            n.to_string_lossy()
                .strip_prefix("vmlinuz-")
                .map(str::to_string)
        })
        .ok_or("internal: a vmlinuz file name without its version")?;
    let modules = Path::new("/lib/modules").join(&version);
    if !modules.join("modules.dep").is_file() {
        eprintln!(
            "xtask vm-test: installing the modules of {version} into {}",
            modules.display()
        );
        fs::create_dir_all("/lib/modules").map_err(|e| format!("creating /lib/modules: {e}"))?;
        Cmd::new("cp")
            .arg("-a")
            .arg(unpacked.join("lib").join("modules").join(&version))
            .arg("/lib/modules/")
            .run("copying the kernel's modules", Stdout::ToStderr)?;
        Cmd::new("depmod")
            .arg(&version)
            .run("depmod", Stdout::ToStderr)?;
    }
    Ok(image)
}

/// Which package of the series apt offers (after an `apt-get update` when it offers none).
fn find_package(wanted: &str) -> Result<String, String> {
    let search = || -> Result<String, String> {
        let cmd = Cmd::new("apt-cache").args(["search", "--names-only", search_pattern(wanted)]);
        let output = cmd
            .capture()
            .map_err(|e| format!("could not run `{cmd}`: {e}"))?;
        if !output.status.success() {
            return Err(format!("`{cmd}` {}", describe_status(output.status)));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    if let Some(package) = choose_package(&search()?, wanted) {
        return Ok(package);
    }
    Cmd::new("apt-get")
        .args(["update", "-q"])
        .run("apt-get update", Stdout::ToStderr)?;
    choose_package(&search()?, wanted).ok_or(format!(
        "apt offers no package like {wanted} (is Debian 12's main archive, with its security \
         updates, in /etc/apt/sources.list?)"
    ))
}

fn find_deb(dir: &Path, package: &str) -> Option<PathBuf> {
    let prefix = format!("{package}_");
    fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(&prefix) && n.ends_with(".deb")
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCTOR: &str = r#"{"type":"doctor","schema":1,"kernel":"6.1.0-50-amd64","btf":true,"tracefs":"/sys/kernel/tracing","ring_buffer":true,"capabilities":{"CAP_BPF":true},"programs":[{"name":"inet_sock_set_state","purpose":"transitions","loaded":true,"error":null,"load_ms":12.3,"verified_insns":19402},{"name":"timer_start","purpose":"TIME_WAIT","loaded":false,"error":"the kernel refused it. Verifier output: combined stack size of 2 calls is 720. Too large\nverification time 1 usec","load_ms":3.0,"verified_insns":null}],"features":[{"name":"live timeline","on":true,"reason":null}],"core_ok":true}"#;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn kernels_default_to_the_three_and_repeat() {
        assert_eq!(
            parse_args(&[]).unwrap().kernels,
            [Kernel::Debian61, Kernel::Debian612, Kernel::Host]
        );
        let options = parse_args(&os(&["--kernel", "host", "--kernel=debian-6.12"])).unwrap();
        assert_eq!(options.kernels, [Kernel::Host, Kernel::Debian612]);
        assert_eq!(options.bin_dir, None);
        let err = parse_args(&os(&["--bin-dir", "/"])).unwrap_err();
        assert!(
            err.contains("no portrace, tcpload, vm_scenario there"),
            "{err}"
        );
        let err = parse_args(&os(&["--kernel", "/no/such/bzImage"])).unwrap_err();
        assert!(err.contains("no such file"), "{err}");
        assert!(parse_args(&os(&["--kernel"])).is_err());
        assert!(parse_args(&os(&["--fast"]))
            .unwrap_err()
            .starts_with("unknown argument"));
    }

    #[test]
    fn doctor_report_is_read() {
        let d = parse_doctor(&format!("{DOCTOR}\n"), "", Some(0));
        assert_eq!(d.failure, None);
        assert!(d.core_ok);
        assert_eq!(d.kernel.as_deref(), Some("6.1.0-50-amd64"));
        assert_eq!(d.programs.len(), 2);
        assert_eq!(d.programs[0].load_ms, Some(12.3));
        assert_eq!(d.programs[0].verified_insns, Some(19402));
        assert!(!d.programs[1].loaded);
        // core_ok and the exit code must agree.
        let d = parse_doctor(DOCTOR, "", Some(1));
        assert!(d.failure.is_some_and(|f| f.contains("core_ok true")));
    }

    #[test]
    fn doctor_missing_is_a_failure_with_clap_s_message() {
        let stderr = "error: unexpected argument 'doctor' found\n\nUsage: portrace [OPTIONS]\n";
        let d = parse_doctor("", stderr, Some(2));
        assert!(!d.core_ok);
        assert!(d.programs.is_empty());
        assert_eq!(
            d.failure.as_deref(),
            Some("`portrace doctor --json` exited with 2 without a report: error: unexpected argument 'doctor' found")
        );
        let d = parse_doctor("", "", None);
        assert!(d
            .failure
            .is_some_and(|f| f.contains("was killed") && f.contains("no output")));
    }

    #[test]
    fn scenario_results_are_read_and_must_agree_with_the_exit_code() {
        let pass = r#"{"type":"vm_scenario","mode":"unfiltered","kernel":"6.1","pass":true,"expected":26,"observed":26,"time_wait_expected":true,"time_wait_seen":true,"problems":[]}"#;
        let row = parse_scenario("unfiltered", pass, "", Some(0));
        assert!(row.pass && row.time_wait_seen);
        assert_eq!((row.expected, row.observed), (26, 26));
        assert!(!parse_scenario("unfiltered", pass, "", Some(1)).pass);
        let fail = r#"{"type":"vm_scenario","mode":"filtered","pass":false,"expected":4,"observed":3,"time_wait_seen":false,"problems":["no transition into TIME_WAIT was seen"]}"#;
        let row = parse_scenario("filtered", fail, "", Some(1));
        assert!(!row.pass);
        assert_eq!(row.problems, ["no transition into TIME_WAIT was seen"]);
        let row = parse_scenario("filtered", "", "thread 'main' panicked\n", None);
        assert!(!row.pass);
        assert_eq!(
            row.problems,
            ["vm_scenario was killed (timeout) without a result: thread 'main' panicked"]
        );
    }

    #[test]
    fn kvm_is_used_only_when_a_vm_can_be_created() {
        let cpu_virt = "processor\t: 0\nflags\t\t: fpu vme vmx sse\n";
        let cpu_plain = "processor\t: 0\nflags\t\t: fpu vme sse\n";
        assert_eq!(choose_accel(Ok(()), cpu_plain), Accel::Kvm);
        assert_eq!(
            choose_accel(
                Err("/dev/kvm exists but cannot create a VM (x)".into()),
                cpu_plain
            ),
            Accel::Tcg(
                "/dev/kvm exists but cannot create a VM (x); the CPU shows neither vmx nor svm"
                    .into()
            )
        );
        assert!(matches!(
            choose_accel(Err("no /dev/kvm".into()), cpu_virt),
            Accel::Tcg(why) if why.ends_with("the CPU has vmx/svm")
        ));
    }

    #[test]
    fn the_named_package_or_the_newest_of_its_series() {
        let apt = "linux-image-6.1.0-47-amd64 - Linux 6.1 for 64-bit PCs (signed)\n\
                   linux-image-6.1.0-50-amd64 - Linux 6.1 for 64-bit PCs (signed)\n\
                   linux-image-6.1.0-9-amd64 - Linux 6.1 for 64-bit PCs (signed)\n\
                   linux-image-6.1.0-57-amd64 - Linux 6.1 for 64-bit PCs (signed)\n";
        assert_eq!(choose_package(apt, DEBIAN_61).as_deref(), Some(DEBIAN_61));
        let gone = apt.replace("6.1.0-50-", "6.1.0-49-");
        assert_eq!(
            choose_package(&gone, DEBIAN_61).as_deref(),
            Some("linux-image-6.1.0-57-amd64")
        );
        let apt12 = "linux-image-6.12.100+deb12-amd64 - x\nlinux-image-6.12.99+deb12-amd64 - x\n";
        assert_eq!(
            choose_package(apt12, DEBIAN_612).as_deref(),
            Some("linux-image-6.12.100+deb12-amd64")
        );
        assert_eq!(choose_package("", DEBIAN_612), None);
    }

    #[test]
    fn verifier_reason_is_the_verdict_line() {
        assert_eq!(
            verifier_reason("loading x: the kernel refused it: Permission denied. Verifier output: combined stack size of 2 calls is 720. Too large\nverification time 5 usec"),
            "combined stack size of 2 calls is 720. Too large"
        );
        assert_eq!(verifier_reason("EPERM\nmore"), "EPERM");
    }

    #[test]
    fn table_shows_programs_scenarios_and_failures() {
        let ok = KernelResult {
            label: "debian-6.1".into(),
            release: Some("6.1.0-50-amd64".into()),
            how: "TCG".into(),
            failure: None,
            doctor: Some(parse_doctor(DOCTOR, "", Some(0))),
            scenarios: vec![
                parse_scenario(
                    "unfiltered",
                    r#"{"type":"vm_scenario","mode":"unfiltered","pass":true,"expected":26,"observed":26,"time_wait_seen":true,"problems":[]}"#,
                    "",
                    Some(0),
                ),
                parse_scenario(
                    "filtered",
                    r#"{"type":"vm_scenario","mode":"filtered","pass":false,"expected":4,"observed":4,"time_wait_seen":true,"problems":["child A LISTEN->SYN_RECV: 127.0.0.1:1 -> 127.0.0.1:0, expected 127.0.0.1:1 -> 127.0.0.1:2","b"]}"#,
                    "",
                    Some(1),
                ),
            ],
        };
        let host = KernelResult {
            label: "host".into(),
            release: Some("6.18.44".into()),
            how: "no VM".into(),
            failure: None,
            doctor: Some(parse_doctor(
                "",
                "error: unexpected argument 'doctor' found\n",
                Some(2),
            )),
            scenarios: vec![],
        };
        let broken =
            KernelResult::failed("debian-6.12".into(), "TCG", "the guest did not boot".into());
        assert!(!ok.passed() && !host.passed() && !broken.passed());
        let table = render(&[ok.clone(), host, broken]);
        let expected = "\
| kernel | program | loaded / verifier's reason | load ms | verified insns |
|---|---|---|---:|---:|
| 6.1.0-50-amd64 (debian-6.1, TCG) | inet_sock_set_state | loaded | 12.3 | 19402 |
| 6.1.0-50-amd64 (debian-6.1, TCG) | timer_start | refused: combined stack size of 2 calls is 720. Too large | 3.0 | - |
| 6.1.0-50-amd64 (debian-6.1, TCG) | (all) | core programs load | | |
| 6.18.44 (host, no VM) | - | FAILED: `portrace doctor --json` exited with 2 without a report: error: unexpected argument 'doctor' found | - | - |
| ? (debian-6.12, TCG) | - | did not run: the guest did not boot | - | - |

| kernel | scenario | result |
|---|---|---|
| 6.1.0-50-amd64 (debian-6.1, TCG) | unfiltered | pass: 26 of 26 transitions, fields and owners right, TIME_WAIT seen |
| 6.1.0-50-amd64 (debian-6.1, TCG) | filtered | FAIL: child A LISTEN->SYN_RECV: 127.0.0.1:1 -> 127.0.0.1:0, expected 127.0.0.1:1 -> 127.0.0.1:2 (and 1 more) |
| 6.18.44 (host, no VM) | - | did not run |
| ? (debian-6.12, TCG) | - | did not run |

In full:
6.1.0-50-amd64 (debian-6.1, TCG) filtered: child A LISTEN->SYN_RECV: 127.0.0.1:1 -> 127.0.0.1:0, expected 127.0.0.1:1 -> 127.0.0.1:2
6.1.0-50-amd64 (debian-6.1, TCG) filtered: b
6.1.0-50-amd64 (debian-6.1, TCG) timer_start: the kernel refused it. Verifier output: combined stack size of 2 calls is 720. Too large
verification time 1 usec
? (debian-6.12, TCG): the guest did not boot
";
        assert_eq!(table, expected);
        let mut all_pass = ok;
        all_pass.scenarios[1].pass = true;
        all_pass.scenarios[1].problems.clear();
        assert!(all_pass.passed());
    }

    #[test]
    fn a_guest_lockup_is_told_by_its_watchdog_line() {
        let console = "[    8.3] ip_local_port_range: prefer different parity\n\
                       [   44.7] watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [portrace:213]\n\
                       [   44.7] RIP: 0010:smp_call_function_many_cond+0xf1/0x330\n";
        assert_eq!(
            lockup_line(console).as_deref(),
            Some("[   44.7] watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [portrace:213]")
        );
        assert_eq!(lockup_line("[ 1.0] Linux version 6.1\nvm_scenario: pass\n"), None);
        assert_eq!(silent_line(SILENCE), None, "silent exactly as long as a step may run");
        assert!(silent_line(SILENCE + Duration::from_secs(1)).is_some_and(|l| l.contains("changed for")));
    }

}
