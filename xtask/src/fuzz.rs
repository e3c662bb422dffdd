//! The fuzzing phase of `cargo xtask test`: builds `portrace/fuzz` (its own workspace)
//! with the pinned nightly and libFuzzer's coverage instrumentation, the flags cargo-fuzz
//! would pass, so no cargo-fuzz install is needed, then runs each target for a few
//! seconds over its kept corpus (`portrace/fuzz/corpus/<target>/`). New inputs go to a
//! scratch directory, so the kept corpus changes only when someone copies one in.

use std::path::Path;

use portrace_ebpf::build::TOOLCHAIN;

use crate::process::{Cmd, Stdout};

/// The targets, and the corpus directory each starts from.
pub const TARGETS: [(&str, &str); 5] = [
    ("read", "read"),
    ("replay", "replay"),
    ("report", "read"),
    ("diagram", "read"),
    ("tracefs_format", "tracefs_format"),
];

/// Seconds each target runs; five targets stay within a couple of minutes on two cores.
pub const SECONDS: u32 = 20;

/// libFuzzer's coverage instrumentation and `--cfg fuzzing`, as cargo-fuzz sets them,
/// for the host target only: the kernel program portrace's build script builds for BPF
/// must not get them.
const RUSTFLAGS: &str = "-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions";

const HOST: &str = "x86_64-unknown-linux-gnu";

/// Builds the fuzz targets and runs each for [`SECONDS`].
pub fn run(root: &Path, target_dir: &Path) -> Result<(), String> {
    let fuzz = root.join("portrace").join("fuzz");
    let out = target_dir.join("fuzz");
    Cmd::new("rustup")
        .args(["run", TOOLCHAIN, "cargo", "build", "--release", "--bins", "--target", HOST])
        .arg("--manifest-path")
        .arg(fuzz.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&out)
        .env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS", RUSTFLAGS)
        .run("fuzz build", Stdout::ToStderr)?;
    let mut failed = Vec::new();
    for (name, corpus) in TARGETS {
        let scratch = out.join("new-inputs").join(name);
        std::fs::create_dir_all(&scratch).map_err(|e| format!("creating {}: {e}", scratch.display()))?;
        let cmd = Cmd::new(out.join(HOST).join("release").join(name))
            .arg(&scratch)
            .arg(fuzz.join("corpus").join(corpus))
            .arg(format!("-max_total_time={SECONDS}"))
            .args(["-max_len=4096", "-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1"]);
        eprintln!("xtask test: fuzzing {name} for {SECONDS} s: {cmd}");
        if let Err(err) = cmd.cwd(&out).run(&format!("fuzz target {name}"), Stdout::ToStderr) {
            eprintln!("xtask test: {err} (the input that failed is in {}: crash-*, timeout-* or oom-*)", out.display());
            failed.push(name);
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("fuzz targets failed: {}", failed.join(", ")))
    }
}
