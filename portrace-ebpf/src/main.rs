//! The kernel program's entry point. Built for the BPF target by `portrace/build.rs`; on
//! any other target this binary is an empty placeholder so the workspace still builds.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod program;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
