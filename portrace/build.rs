//! Builds the kernel program (`portrace-ebpf`) for the BPF target with the pinned nightly
//! toolchain and bpf-linker (`cargo xtask setup` installs both), leaving the object in
//! OUT_DIR where `loader/mod.rs` embeds it; then refuses the object if any of its programs
//! could use more stack than portrace's budget on some path (`src/stack_budget.rs`): a
//! kernel would refuse it, perhaps only with some flags or on some kernels.

use std::path::PathBuf;

use aya_build::{Package, Toolchain};

#[path = "src/stack_budget.rs"]
#[allow(dead_code, reason = "build.rs uses the check; doctor and the tests use the rest")]
mod stack_budget;

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir.join("..").join("portrace-ebpf").canonicalize()?;
    let ebpf_dir = ebpf_dir.to_str().ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?;
    println!("cargo:rerun-if-changed=src/stack_budget.rs");
    aya_build::build_ebpf(
        [Package { name: "portrace-ebpf", root_dir: ebpf_dir, ..Default::default() }],
        Toolchain::Custom(portrace_ebpf::build::TOOLCHAIN),
    )?;
    if std::env::var_os("AYA_BUILD_SKIP").is_some() {
        return Ok(());
    }
    let object = PathBuf::from(std::env::var("OUT_DIR")?).join("portrace");
    let bytes = std::fs::read(&object).map_err(|e| anyhow::anyhow!("reading {}: {e}", object.display()))?;
    let report = stack_budget::analyse(&bytes, stack_budget::BUDGET)?;
    report.check().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
