//! A kernel symbol's address, asked of the kernel itself: a tiny BPF syscall program
//! (Linux 5.16 and later) calls `bpf_kallsyms_lookup_name` once through
//! `BPF_PROG_TEST_RUN`. The kernel looks the name up in its sorted index (Linux 6.2 and
//! later) in microseconds, where reading `/proc/kallsyms` as far as `tw_timer_handler`
//! makes the kernel print some 100,000 lines first (35-60 ms on the test machine, the
//! longest part of the start). The helper answers only a caller the kernel would show
//! addresses in `/proc/kallsyms` to (`kernel.kptr_restrict`), so it reveals nothing that
//! file would not.
//!
//! The program is built here, instruction by instruction (12 to 27 of them): it needs no
//! ELF object, no BTF and no map.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::bpf_raw::{bpf, insn};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_SYSCALL: u32 = 31;
/// Syscall programs must be loaded sleepable.
const BPF_F_SLEEPABLE: u32 = 1 << 4;
const BPF_FUNC_KALLSYMS_LOOKUP_NAME: i32 = 179;

/// The longest name looked up (the stack holds it, NUL included, in 8-byte words).
const MAX_NAME: usize = 63;

/// Why a lookup gave no address.
#[derive(Debug, PartialEq, Eq)]
pub enum Missing {
    /// The kernel has no such symbol.
    NoSymbol,
    /// The kernel will not show this caller symbol addresses (`kernel.kptr_restrict`).
    Hidden,
    /// The kernel cannot run the lookup (older than 5.16, BPF refused): ask `/proc/kallsyms`.
    Unavailable(String),
}

/// The address of kernel symbol `name`.
pub fn lookup(name: &str) -> Result<u64, Missing> {
    let insns = program(name).ok_or_else(|| {
        Missing::Unavailable(format!("symbol name {name:?} is empty, longer than {MAX_NAME} bytes or holds a NUL"))
    })?;
    let prog = load(&insns)
        .map_err(|e| Missing::Unavailable(format!("loading the lookup program: {e}")))?;
    // The context the program writes: the address, then the helper's return value.
    let mut ctx = [0u64; 2];
    run(&prog, &mut ctx)
        .map_err(|e| Missing::Unavailable(format!("running the lookup program: {e}")))?;
    match ctx[1] as i64 {
        0 if ctx[0] != 0 => Ok(ctx[0]),
        0 => Err(Missing::Hidden),
        r if r == -i64::from(libc::ENOENT) => Err(Missing::NoSymbol),
        r if r == -i64::from(libc::EPERM) => Err(Missing::Hidden),
        r => Err(Missing::Unavailable(format!(
            "the kernel's lookup failed: {}",
            io::Error::from_raw_os_error(-r as i32)
        ))),
    }
}

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R6: u8 = 6;
const FP: u8 = 10;

/// The lookup program for `name`: the name on the stack, NUL-terminated, the helper
/// called on it, and its answer written to the context: `ctx[0]` the address, `ctx[1]` the
/// return value. `None` for a name too long or holding a NUL.
fn program(name: &str) -> Option<Vec<u64>> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_NAME || bytes.contains(&0) {
        return None;
    }
    // The name's words sit right below the result's, at fp - 8.
    let words = (bytes.len() + 1).div_ceil(8);
    let name_at = -8 - 8 * words as i16;
    let mut text = bytes.to_vec();
    text.resize(words * 8, 0);
    let mut p = vec![insn(0xbf, R6, R1, 0, 0)]; // r6 = ctx
    for (i, half) in text.chunks_exact(4).enumerate() {
        let value = i32::from_le_bytes(half.try_into().expect("4 bytes"));
        p.push(insn(0x62, FP, 0, name_at + 4 * i as i16, value)); // *(u32 *)(fp + off) = imm
    }
    p.extend([
        insn(0x7a, FP, 0, -8, 0),                           // *(u64 *)(fp - 8) = 0
        insn(0xbf, R1, FP, 0, 0),                           // r1 = fp
        insn(0x07, R1, 0, 0, i32::from(name_at)),           // r1 += name_at
        insn(0xb7, R2, 0, 0, bytes.len() as i32 + 1),       // r2 = size with the NUL
        insn(0xb7, R3, 0, 0, 0),                            // r3 = 0 (flags)
        insn(0xbf, R4, FP, 0, 0),                           // r4 = fp
        insn(0x07, R4, 0, 0, -8),                           // r4 -= 8
        insn(0x85, 0, 0, 0, BPF_FUNC_KALLSYMS_LOOKUP_NAME), // call
        insn(0x7b, R6, R0, 8, 0),                           // ctx[1] = r0
        insn(0x79, R1, FP, -8, 0),                          // r1 = *(u64 *)(fp - 8)
        insn(0x7b, R6, R1, 0, 0),                           // ctx[0] = r1
        insn(0xb7, R0, 0, 0, 0),                            // r0 = 0
        insn(0x95, 0, 0, 0, 0),                             // exit
    ]);
    Some(p)
}

fn put(attr: &mut [u8], at: usize, bytes: &[u8]) {
    attr[at..at + bytes.len()].copy_from_slice(bytes);
}

fn load(insns: &[u64]) -> io::Result<OwnedFd> {
    let license = b"GPL\0";
    let mut attr = [0u8; 128];
    put(&mut attr, 0, &BPF_PROG_TYPE_SYSCALL.to_ne_bytes());
    put(&mut attr, 4, &(insns.len() as u32).to_ne_bytes());
    put(&mut attr, 8, &(insns.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 16, &(license.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 44, &BPF_F_SLEEPABLE.to_ne_bytes());
    put(&mut attr, 48, b"portrace_ksym");
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn run(prog: &OwnedFd, ctx: &mut [u64; 2]) -> io::Result<()> {
    let mut attr = [0u8; 80];
    put(&mut attr, 0, &(prog.as_raw_fd() as u32).to_ne_bytes());
    put(
        &mut attr,
        40,
        &(std::mem::size_of_val(ctx) as u32).to_ne_bytes(),
    );
    put(&mut attr, 48, &(ctx.as_mut_ptr() as u64).to_ne_bytes());
    bpf(BPF_PROG_TEST_RUN, &mut attr).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_is_laid_out_nul_terminated_below_the_result() {
        let p = program("tw_timer_handler").expect("a program");
        // 17 bytes with the NUL: three words, at fp - 32; six 4-byte stores of the text.
        let stores: Vec<(i16, [u8; 4])> = p
            .iter()
            .map(|i| i.to_le_bytes())
            .filter(|b| b[0] == 0x62)
            .map(|b| (i16::from_le_bytes([b[2], b[3]]), [b[4], b[5], b[6], b[7]]))
            .collect();
        assert_eq!(
            stores.iter().map(|s| s.0).collect::<Vec<_>>(),
            [-32, -28, -24, -20, -16, -12]
        );
        let text: Vec<u8> = stores.iter().flat_map(|s| s.1).collect();
        assert_eq!(&text[..17], b"tw_timer_handler\0");
        assert!(text[17..].iter().all(|&b| b == 0));
        // The size handed to the helper counts the NUL.
        let size = p
            .iter()
            .map(|i| i.to_le_bytes())
            .find(|b| b[0] == 0xb7 && b[1] & 0x0f == R2)
            .unwrap();
        assert_eq!(i32::from_le_bytes([size[4], size[5], size[6], size[7]]), 17);
        // One word for a name of 7 bytes, the stack's bound for the longest.
        assert!(program("a234567")
            .unwrap()
            .iter()
            .any(|i| i.to_le_bytes()[0] == 0x62
                && i16::from_le_bytes([i.to_le_bytes()[2], i.to_le_bytes()[3]]) == -16));
        assert!(program(&"x".repeat(MAX_NAME)).is_some());
        assert!(program(&"x".repeat(MAX_NAME + 1)).is_none());
        assert!(program("").is_none());
        assert!(program("a\0b").is_none());
    }

    #[test]
    fn the_kernel_answers_as_proc_kallsyms_does() {
        // As root (portrace's own requirement), the real kernel.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let text = std::fs::read_to_string("/proc/kallsyms").expect("/proc/kallsyms");
        let in_file = |name: &str| {
            text.lines().find_map(|l| {
                let mut f = l.split_whitespace();
                let (a, _, n) = (f.next()?, f.next()?, f.next()?);
                (n == name).then(|| u64::from_str_radix(a, 16).unwrap())
            })
        };
        for name in ["tw_timer_handler", "tcp_set_state", "tcp_v4_rcv"] {
            let want = in_file(name).expect("in /proc/kallsyms");
            match lookup(name) {
                Ok(address) => assert_eq!(address, want, "{name}"),
                // A kernel older than the helper: the caller reads /proc/kallsyms instead.
                Err(Missing::Unavailable(why)) => {
                    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
                    let (major, minor) = release
                        .trim()
                        .split_once('.')
                        .map(|(a, b)| {
                            (
                                a.parse::<u32>().unwrap(),
                                b.split(|c: char| !c.is_ascii_digit())
                                    .next()
                                    .unwrap()
                                    .parse::<u32>()
                                    .unwrap(),
                            )
                        })
                        .unwrap();
                    assert!(
                        (major, minor) < (5, 16),
                        "Linux {release} should answer: {why}"
                    );
                }
                Err(other) => panic!("{name}: {other:?}"),
            }
        }
        assert_eq!(
            lookup("portrace_no_such_symbol_here"),
            Err(Missing::NoSymbol)
        );
    }
}
