//! Builds the kernel program (`portrace-ebpf`) for the BPF target with the nightly
//! toolchain and bpf-linker (`cargo xtask setup` installs both), leaving the object in
//! OUT_DIR where `loader.rs` embeds it.

use std::path::PathBuf;

use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir.join("..").join("portrace-ebpf").canonicalize()?;
    let ebpf_dir = ebpf_dir.to_str().ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?;
    aya_build::build_ebpf(
        [Package { name: "portrace-ebpf", root_dir: ebpf_dir, ..Default::default() }],
        Toolchain::default(),
    )
}
