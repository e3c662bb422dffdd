//! What a BPF program built by hand needs, rather than compiled into the kernel object:
//! one instruction's encoding, and the bpf(2) call on an attribute block laid out by
//! hand. Used by the kernel symbol lookup and by the benchmark's reference programs.

use std::io;

/// One eBPF instruction: opcode, destination and source registers, offset, immediate.
pub fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = (src << 4) | (dst & 0x0f);
    b[2..4].copy_from_slice(&off.to_le_bytes());
    b[4..8].copy_from_slice(&imm.to_le_bytes());
    u64::from_le_bytes(b)
}

/// The bpf(2) system call `cmd` on `attr`; its result (a descriptor for the commands that
/// make one).
///
/// Every address `attr` holds must stay valid until the call returns: the kernel follows
/// them.
pub fn bpf(cmd: libc::c_long, attr: &mut [u8]) -> io::Result<i64> {
    // SAFETY: `attr` is a valid, writable buffer of the length passed; the kernel reads
    // and writes only within it, and the caller keeps the buffers it points at alive.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_land_where_the_kernel_reads_them() {
        // `r1 = *(u64 *)(r10 - 8)`: opcode, then dst in the low nibble and src in the
        // high one, the offset and the immediate little-endian.
        let bytes = insn(0x79, 1, 10, -8, 0).to_le_bytes();
        assert_eq!(bytes, [0x79, 0xa1, 0xf8, 0xff, 0, 0, 0, 0]);
        assert_eq!(insn(0x85, 0, 0, 0, 179).to_le_bytes(), [0x85, 0, 0, 0, 179, 0, 0, 0]);
        // An unknown command is refused with the kernel's error, not a panic.
        assert!(bpf(-1, &mut [0u8; 8]).is_err());
    }
}
