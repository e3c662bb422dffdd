//! `portrace doctor`: what this machine lets portrace do, without tracing. This module
//! owns the subcommand: it gathers the kernel release, BTF, the effective capabilities,
//! tracefs and ring-buffer support, loads every kernel program through the live loader
//! ([`loader::probe`], with the layouts a live run reads) without attaching any, and
//! renders the findings ([`Diagnosis`]) as a short table for people or as one JSON object
//! for programs. The exit status says whether the core timeline can run. Gathering touches
//! the kernel; rendering is pure.

use std::io::{self, Write};
use std::path::Path;

use anyhow::Context as _;
use serde_json::{json, Value};

use crate::features::{printable, Feature, Features};
use crate::filter::FilterSpec;
use crate::loader::{self, ProgramLoad, Setup};
use crate::stack_budget::{self, StackReport};
use crate::{follow, preflight, tracefs};

/// The version of the `--json` object's shape.
pub const SCHEMA: u32 = 1;

/// Where the kernel's own BTF lives.
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// `portrace doctor`, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DoctorConfig {
    /// One JSON object on stdout instead of the table.
    pub json: bool,
}

/// Everything `portrace doctor` found.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnosis {
    /// `uname -r`.
    pub kernel: String,
    pub btf: bool,
    /// Where tracefs is mounted; why it cannot be used, when it cannot.
    pub tracefs: Result<String, String>,
    pub ring_buffer: bool,
    /// CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN in the effective set; all false when it could
    /// not be read.
    pub capabilities: [(&'static str, bool); 3],
    pub programs: Vec<ProgramLoad>,
    pub features: Features,
    /// Why no program could be tried at all (no tracefs layout, the object refused).
    pub not_tried: Option<String>,
    /// Each program's worst stack use, from the object (no kernel needed).
    pub stack: Result<StackReport, String>,
}

impl Diagnosis {
    /// Whether a live run's core, the timeline, can run here.
    pub fn core_ok(&self) -> bool {
        self.features.is_on(Feature::LiveTimeline) && self.ring_buffer && self.tracefs.is_ok()
    }
}

/// Runs `portrace doctor`: prints the findings, returns 0 when the core timeline can run,
/// 1 when it cannot.
pub fn doctor(config: DoctorConfig) -> anyhow::Result<u8> {
    let diagnosis = diagnose();
    let mut out = io::stdout().lock();
    let written = if config.json { write_json(&diagnosis, &mut out) } else { write_text(&diagnosis, &mut out) };
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        other => other.context("writing output")?,
    }
    Ok(if diagnosis.core_ok() { 0 } else { 1 })
}

/// Looks at this machine and loads every program, attaching none.
pub fn diagnose() -> Diagnosis {
    let kernel = preflight::KernelRelease::current().map(|k| k.release).unwrap_or_else(|e| e.to_string());
    let cap_eff = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| preflight::parse_cap_eff(&s));
    let has = |cap: u32| cap_eff.is_some_and(|c| c & (1u64 << cap) != 0);
    let capabilities = [
        ("CAP_BPF", has(preflight::CAP_BPF)),
        ("CAP_PERFMON", has(preflight::CAP_PERFMON)),
        ("CAP_SYS_ADMIN", has(preflight::CAP_SYS_ADMIN)),
    ];
    let tracefs = find_tracefs();
    let ring_buffer = preflight::probe_ringbuf().is_ok();
    let loader::KernelOffsets { sock, typed, tw_handler } = loader::kernel_offsets();
    let mut diagnosis = Diagnosis {
        kernel,
        btf: Path::new(VMLINUX_BTF).is_file(),
        tracefs: tracefs.clone(),
        ring_buffer,
        capabilities,
        programs: Vec::new(),
        features: Features::default(),
        not_tried: None,
        stack: stack_budget::analyse(loader::object(), stack_budget::BUDGET).map_err(|e| e.to_string()),
    };
    let setup = tracefs.clone().and_then(|path| {
        let path = Path::new(&path);
        let layout = tracefs::read_layout(path).map_err(|e| e.to_string())?;
        let task = follow::read_task_layout(path).map_err(|e| format!("{e:#}"));
        let capacity = follow::traced_capacity(std::fs::read_to_string("/proc/sys/kernel/pid_max").ok().as_deref());
        let setup = Setup {
            layout,
            sock,
            typed,
            tw_handler: loader::TwHandler::Known(tw_handler),
            kfree_skb_has_rx_sk: std::fs::read_to_string(path.join("events/skb/kfree_skb/format"))
                .is_ok_and(|f| f.contains(" rx_sk;")),
            filter: FilterSpec::default().to_kernel().map_err(|e| e.to_string())?,
            ring_size: 4 << 20,
            command: task.as_ref().ok().map(|&t| (t, capacity)),
        };
        Ok((setup, task.err()))
    });
    match setup.and_then(|(setup, task_error)| loader::probe(&setup, task_error).map_err(|e| format!("{e:#}"))) {
        Ok((programs, features)) => {
            diagnosis.programs = programs;
            diagnosis.features = features;
        }
        Err(why) => {
            for feature in Feature::ALL {
                diagnosis.features.off(feature, format!("no program could be loaded: {why}"));
            }
            diagnosis.not_tried = Some(why);
        }
    }
    match &tracefs {
        Ok(path) => match hit_count_possible(Path::new(path)) {
            Ok(()) => diagnosis.features.on(Feature::HitCount),
            Err(why) => diagnosis.features.off(Feature::HitCount, why),
        },
        Err(why) => diagnosis.features.off(Feature::HitCount, why.clone()),
    }
    diagnosis
}

/// Where tracefs is mounted, looking where a live run looks, without mounting it.
fn find_tracefs() -> Result<String, String> {
    let tracing = Path::new(tracefs::TRACING);
    let debug = Path::new(tracefs::DEBUG_TRACING);
    match tracefs::choose(tracefs::dir_state(tracing), tracefs::dir_state(debug)) {
        tracefs::Choice::UseTracing => Ok(tracefs::TRACING.to_owned()),
        tracefs::Choice::UseDebugTracing => Ok(tracefs::DEBUG_TRACING.to_owned()),
        tracefs::Choice::MountTracing => Err(format!(
            "not mounted (a live run mounts it at {0}; or run `mount -t tracefs nodev {0}`)",
            tracefs::TRACING
        )),
        tracefs::Choice::NoMountPoint => Err(format!("not mounted, and {} does not exist", tracefs::TRACING)),
        tracefs::Choice::UnreadableTracing => Err(format!("{} cannot be listed by this process", tracefs::TRACING)),
        tracefs::Choice::UnreadableDebugTracing => {
            Err(format!("{} cannot be listed by this process", tracefs::DEBUG_TRACING))
        }
    }
}

/// Whether a live run could make its private ftrace instance (`crate::hitcount`): checked
/// without making it.
fn hit_count_possible(tracefs: &Path) -> Result<(), String> {
    let instances = tracefs.join("instances");
    if !instances.is_dir() {
        return Err(format!("{} does not exist: this kernel has no ftrace instances", instances.display()));
    }
    let event = tracefs.join("events/sock/inet_sock_set_state");
    if !event.is_dir() {
        return Err(format!("{} does not exist", event.display()));
    }
    let c_path = std::ffi::CString::new(instances.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // With the effective ids and capabilities (AT_EACCESS), as the mkdir of a live run
    // will be checked: plain access(2) checks the real uid, and gives a process that is not
    // root by uid no credit for its capabilities (a service given CAP_DAC_OVERRIDE).
    // SAFETY: c_path is a valid NUL-terminated string for the duration of the call.
    if unsafe { libc::faccessat(libc::AT_FDCWD, c_path.as_ptr(), libc::W_OK, libc::AT_EACCESS) } != 0 {
        return Err(format!("{} is not writable by this process", instances.display()));
    }
    Ok(())
}

/// A program's worst stack use as the object shows it, when known.
fn stack_of(d: &Diagnosis, program: &str) -> Option<u32> {
    d.stack.as_ref().ok()?.programs.iter().find(|p| p.program == program).map(|p| p.total)
}

/// The `--json` object: one line.
pub fn write_json(d: &Diagnosis, w: &mut impl Write) -> io::Result<()> {
    let mut capabilities = serde_json::Map::new();
    for (name, on) in d.capabilities {
        capabilities.insert(name.to_owned(), Value::Bool(on));
    }
    let programs: Vec<Value> = d
        .programs
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "purpose": p.purpose,
                "loaded": p.result.is_ok(),
                "error": p.result.as_ref().err().map(|f| f.reason()),
                "load_ms": (p.load_ms * 10.0).round() / 10.0,
                "verified_insns": p.verified_insns,
                "stack_bytes": stack_of(d, &p.name),
            })
        })
        .collect();
    let features: Vec<Value> = Feature::ALL
        .iter()
        .filter_map(|&f| d.features.get(f).map(|s| (f, s)))
        .map(|(f, s)| json!({"name": f.name(), "on": s.on, "reason": s.reason}))
        .collect();
    let object = json!({
        "type": "doctor",
        "schema": SCHEMA,
        "kernel": d.kernel,
        "btf": d.btf,
        "tracefs": d.tracefs.as_ref().ok(),
        "ring_buffer": d.ring_buffer,
        "capabilities": capabilities,
        "programs": programs,
        "stack_budget": stack_budget::BUDGET,
        "features": features,
        "core_ok": d.core_ok(),
    });
    serde_json::to_writer(&mut *w, &object)?;
    writeln!(w)
}

/// The table for people.
pub fn write_text(d: &Diagnosis, w: &mut impl Write) -> io::Result<()> {
    let yes = |b: bool| if b { "yes" } else { "no" };
    writeln!(w, "portrace doctor")?;
    writeln!(w, "  kernel        {}", printable(&d.kernel))?;
    writeln!(w, "  BTF           {}", if d.btf { format!("yes ({VMLINUX_BTF})") } else { "no".to_owned() })?;
    let caps: Vec<String> = d.capabilities.iter().map(|(n, on)| format!("{n} {}", yes(*on))).collect();
    writeln!(w, "  capabilities  {}", caps.join(", "))?;
    match &d.tracefs {
        Ok(path) => writeln!(w, "  tracefs       {}", printable(path))?,
        Err(why) => writeln!(w, "  tracefs       missing: {}", printable(why))?,
    }
    writeln!(w, "  ring buffer   {}", yes(d.ring_buffer))?;

    writeln!(w, "\nPrograms (loaded, not attached)")?;
    if let Some(why) = &d.not_tried {
        writeln!(w, "  none tried: {}", printable(why))?;
    }
    let name_width = d.programs.iter().map(|p| p.name.len()).max().unwrap_or(0).max("PROGRAM".len());
    if !d.programs.is_empty() {
        writeln!(w, "  {:name_width$}  LOADED  {:>8}  {:>7}  PURPOSE", "PROGRAM", "MS", "INSNS")?;
    }
    for p in &d.programs {
        let insns = p.verified_insns.map_or_else(|| "-".to_owned(), |n| n.to_string());
        writeln!(
            w,
            "  {:name_width$}  {:6}  {:>8.1}  {insns:>7}  {}",
            printable(&p.name),
            yes(p.result.is_ok()),
            p.load_ms,
            p.purpose
        )?;
        if let Err(f) = &p.result {
            writeln!(w, "  {:name_width$}  -> {}", "", f.reason())?;
        }
    }

    match &d.stack {
        Ok(report) => {
            writeln!(
                w,
                "\nStack (each program's deepest call chain, from the object; budget {} of the verifier's {} bytes)",
                stack_budget::BUDGET,
                stack_budget::VERIFIER_LIMIT
            )?;
            write!(w, "{report}")?;
        }
        Err(why) => writeln!(w, "\nStack: {}", printable(why))?,
    }

    writeln!(w, "\nFeatures")?;
    let feature_width = Feature::ALL.iter().map(|f| f.name().len()).max().unwrap_or(0);
    for (f, s) in d.features.iter() {
        let state = if s.on { "on" } else { "off" };
        match &s.reason {
            Some(why) => writeln!(w, "  {:feature_width$}  {state:3}  {}", f.name(), printable(why))?,
            None => writeln!(w, "  {:feature_width$}  {state}", f.name())?,
        }
    }
    writeln!(w)?;
    if d.core_ok() {
        writeln!(w, "The core timeline can run here.")
    } else {
        let why = match (&d.tracefs, d.ring_buffer, d.features.get(Feature::LiveTimeline)) {
            (Err(why), _, _) => format!("tracefs is {}", printable(why)),
            (_, false, _) => "this kernel has no BPF ring buffers (Linux 5.8 or newer has them)".to_owned(),
            (_, _, Some(s)) => printable(s.reason.as_deref().unwrap_or("the live timeline is off")),
            (_, _, None) => "the live timeline is off".to_owned(),
        };
        writeln!(
            w,
            "The core timeline cannot run here: {why}. If the verifier rejected a program, please report it \
             to the portrace developers with this output."
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::Facts;
    use crate::load_error::LoadFailure;

    fn load(name: &str, result: Result<(), LoadFailure>, insns: Option<u64>) -> ProgramLoad {
        ProgramLoad { name: name.into(), purpose: loader::purpose(name), result, load_ms: 12.34, verified_insns: insns }
    }

    /// This machine before the stack fix: the main program rejected, the timer start too.
    fn rejected() -> Diagnosis {
        let too_large = || LoadFailure::Verifier {
            errno: libc::EACCES,
            tail: vec!["combined stack size of 2 calls is 720. Too large".into()],
        };
        let facts = Facts {
            sock: Ok(()),
            main: Err("inet_sock_set_state did not load: the kernel's verifier rejected it: combined stack size \
                       of 2 calls is 720. Too large"
                .into()),
            classic: Ok(()),
            tw_handler: Ok(()),
            timers: Err("timer_start did not load: the kernel's verifier rejected it: combined stack size of 2 \
                         calls is 720. Too large"
                .into()),
            packets: Ok(()),
            exec: Ok(()),
            command: Some(Ok(Ok(()))),
        };
        let mut features = crate::features::decide(&facts);
        features.on(Feature::HitCount);
        Diagnosis {
            kernel: "6.18.44-fc-v1300".into(),
            btf: true,
            tracefs: Ok("/sys/kernel/tracing".into()),
            ring_buffer: true,
            capabilities: [("CAP_BPF", true), ("CAP_PERFMON", true), ("CAP_SYS_ADMIN", true)],
            programs: vec![
                load("inet_sock_set_state", Err(too_large()), None),
                load("inet_sock_set_state_backup", Ok(()), Some(19402)),
                load("timer_start", Err(too_large()), None),
                load("sched_process_exec", Ok(()), Some(12)),
            ],
            features,
            not_tried: None,
            stack: Ok(StackReport {
                programs: vec![crate::stack_budget::ProgramStack {
                    program: "inet_sock_set_state".into(),
                    chain: vec![("inet_sock_set_state".into(), 400), ("process".into(), 320)],
                    total: 736,
                }],
                budget: stack_budget::BUDGET,
            }),
        }
    }

    #[test]
    fn json_has_the_agreed_shape() {
        let mut out = Vec::new();
        write_json(&rejected(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1, "one line: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "type",
                "schema",
                "kernel",
                "btf",
                "tracefs",
                "ring_buffer",
                "capabilities",
                "programs",
                "stack_budget",
                "features",
                "core_ok"
            ]
        );
        assert_eq!(v["programs"][0]["stack_bytes"], 736);
        assert_eq!(v["programs"][1]["stack_bytes"], Value::Null, "not in the stack report");
        assert_eq!(v["type"], "doctor");
        assert_eq!(v["core_ok"], false);
        assert_eq!(v["programs"][0]["loaded"], false);
        assert_eq!(v["programs"][0]["verified_insns"], Value::Null);
        assert_eq!(v["programs"][1]["error"], Value::Null);
        assert_eq!(v["programs"][1]["load_ms"], 12.3);
        assert_eq!(v["features"][0]["name"], "live timeline");
        insta::assert_snapshot!(text);
    }

    #[test]
    fn text_says_what_failed_and_why() {
        let mut out = Vec::new();
        write_text(&rejected(), &mut out).unwrap();
        insta::assert_snapshot!(String::from_utf8(out).unwrap());
    }

    #[test]
    fn core_needs_the_timeline_tracefs_and_ring_buffers() {
        let mut d = rejected();
        assert!(!d.core_ok());
        d.features.on(Feature::LiveTimeline);
        assert!(d.core_ok());
        d.tracefs = Err("not mounted".into());
        assert!(!d.core_ok());
        d.tracefs = Ok("/sys/kernel/tracing".into());
        d.ring_buffer = false;
        assert!(!d.core_ok());
    }

    #[test]
    fn control_bytes_never_reach_the_terminal() {
        let mut d = rejected();
        d.kernel = "6.18\x1b[2J".into();
        d.features.off(Feature::Backup, "bad\x07bell");
        let mut out = Vec::new();
        write_text(&d, &mut out).unwrap();
        assert!(!out.iter().any(|&b| b == 0x1b || b == 0x07), "{}", String::from_utf8_lossy(&out));
    }
}
