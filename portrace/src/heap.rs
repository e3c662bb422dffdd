//! How the process's heap gives memory back to the system.
//!
//! The C library serves an allocation of 128 KiB or more with a mapping of its own, which
//! it unmaps when the block is freed. But once such a block is freed it raises that
//! threshold to the block's size (up to 32 MiB), and from then on large blocks come from
//! the heap, where a freed one stays resident. Start-up reads the kernel's BTF (about 6 MB)
//! and frees it, so every hash table and queue a connection storm then grew came from the
//! heap, and each table a growth left behind stayed in portrace's resident memory. Fixing
//! the threshold keeps large blocks in mappings of their own.

/// The threshold: a quarter of the C library's default, so that the tables' middle
/// growth stages (32 to 128 KiB, several of each in a storm) do not leave holes in the
/// heap either. A storm then maps and unmaps a few dozen blocks in all: the per-record
/// path allocates nothing.
const LARGE_BLOCK: usize = 32 * 1024;

/// Keeps blocks of [`LARGE_BLOCK`] or more in mappings of their own, returned when freed.
/// Called first thing in `main`, before anything large is allocated.
pub fn return_large_blocks() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a parameter of the allocator; no allocation is in flight
    // while main starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE_BLOCK as libc::c_int);
    }
}

/// Gives the system back the heap's free pages: called once start-up is over. Its
/// transient buffers (the kernel's symbol table, BTF's index, the object's sections) leave
/// a few megabytes of free heap behind, which nothing later reuses: what a trace grows
/// (its socket tables) is large enough for mappings of its own.
pub fn give_back_free_pages() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases the allocator's own free memory; it takes the
    // allocator's locks like any allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}
