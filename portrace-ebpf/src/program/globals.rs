//! The globals userspace writes into the object before it loads it: offsets from this
//! kernel's BTF and tracefs, the user's filter, and switches for what this kernel has.
//! The programs read them with [`global!`](super::global) and never write them.

use portrace_ebpf::{Filter, Layout, SockLayout, TaskLayout};

/// Tracepoint field offsets, set by userspace before load.
#[no_mangle]
pub(super) static LAYOUT: Layout = Layout::ZERO;

/// Socket field offsets from BTF, set by userspace before load.
#[no_mangle]
pub(super) static SOCK: SockLayout = SockLayout::ZERO;

/// What to keep, set by userspace before load.
#[no_mangle]
pub(super) static FILTER: Filter = Filter::ALL;

/// Wake the reader only once this many bytes wait in the ring; below that the reader finds
/// them by polling. A wakeup per event costs the traced host several microseconds each
/// time, and makes the program long enough to be interrupted and skipped.
#[no_mangle]
pub(super) static WAKEUP_BYTES: u64 = 0;

/// Non-zero when the classic tracepoint program is the only state program (no BTF).
#[no_mangle]
pub(super) static CLASSIC_PRIMARY: u32 = 0;

/// Non-zero when `skb:kfree_skb` names the socket that received the packet (`rx_sk`,
/// Linux 6.11 and later); otherwise the packet program finds timewait sockets by the
/// packet's addresses and ports (`TW_TUPLES`).
#[no_mangle]
pub(super) static KFREE_SKB_RX_SK: u32 = 0;

/// Non-zero when only the traced command's sockets are kept (`portrace -- CMD`).
#[no_mangle]
pub(super) static TRACE_COMMAND: u32 = 0;

/// Where the task tracepoints keep what the command's programs read, set by userspace.
#[no_mangle]
pub(super) static TASK: TaskLayout = TaskLayout::ZERO;

/// portrace's own process id, set by userspace: the hits it makes itself are the
/// calibration, never shown.
#[no_mangle]
pub(super) static OWN_TGID: u32 = 0;
