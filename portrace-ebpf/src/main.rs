//! The kernel program's entry point. Built for the BPF target by `portrace/build.rs`; on
//! any other target this binary is an empty placeholder so the workspace still builds.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
// The BPF target declares no atomic types, but the kernel has an atomic add (`lock xadd`),
// which the intrinsic compiles to; the counters need it (see `program::record::bump`).
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features, reason = "core_intrinsics, for atomic_xadd"))]

#[cfg(target_arch = "bpf")]
mod program;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
