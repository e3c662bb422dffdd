//! Tests of the loader: finding kernel symbols, and (as root) the kernel's verifier
//! accepting both backup programs.

use aya::EbpfLoader;

use super::attach::load_classic;
use super::*;

#[test]
fn finds_a_symbol_and_refuses_hidden_addresses() {
    let text = "ffffffff82065730 t tw_timer_handler\nffffffff81000000 T _text\n";
    assert_eq!(find_symbol(text.as_bytes(), "tw_timer_handler"), Ok(0xffff_ffff_8206_5730));
    let hidden = "0000000000000000 t tw_timer_handler\n";
    assert!(find_symbol(hidden.as_bytes(), "tw_timer_handler").unwrap_err().contains("kptr_restrict"));
    assert!(find_symbol(text.as_bytes(), "nope").unwrap_err().contains("no nope symbol"));
    assert!(find_symbol(&b"garbage\n\nxyz t tw_timer_handler"[..], "tw_timer_handler").is_err());
}

#[test]
fn this_kernel_exports_the_timewait_handler() {
    // As root the real addresses are visible; portrace needs root anyway.
    if unsafe { libc::geteuid() } == 0 {
        assert!(tw_timer_handler().is_ok());
    }
}

#[test]
fn the_kernel_accepts_both_backup_programs() {
    // The program without `bpf_loop` is what a kernel before 5.17 gets: check here that
    // the verifier accepts it too, with the search it would run. Loading needs root,
    // which portrace needs anyway (CI runs its tests as root).
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let mut ebpf = EbpfLoader::new().btf(None).load(PROGRAM).expect("the object loads");
    for program in [BACKUP, BACKUP_BOUNDED] {
        load_classic(&mut ebpf, program).unwrap_or_else(|e| panic!("{program}: {e:#}"));
    }
}
