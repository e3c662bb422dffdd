//! Before anything loads: the object opened with the programs' configuration (its maps
//! made, no program loaded), and the start-up work that can begin at once on threads of
//! its own ([`prepare`]): aya's loader made without the kernel's BTF, the timewait timer
//! handler's address from `/proc/kallsyms`, and the socket offsets from BTF.

use std::time::Instant;

use anyhow::Context as _;
use aya::{Ebpf, EbpfLoader};
use portrace_ebpf::{SockLayout, TaskLayout};

use super::attach::explain;
use super::{Setup, TwHandler, PROGRAM};

/// Opens the eBPF object: hands the programs their configuration and creates the maps.
/// Loads no program.
pub fn open(setup: &Setup) -> anyhow::Result<Ebpf> {
    let loader = std::thread::spawn(loader_without_kernel_btf).join().unwrap_or_else(|_| EbpfLoader::new());
    open_with(loader, setup)
}

/// Makes aya's loader without the kernel's BTF. aya 0.14's `EbpfLoader::new` reads and
/// parses `/sys/kernel/btf/vmlinux` whatever the caller wants (some 18 MB at its peak, and
/// 30 ms), and portrace's programs need none of it: they use no CO-RE relocation (portrace
/// finds the few offsets it needs itself, [`crate::btf`]), so [`open`] passes `btf(None)`.
/// Run on a thread of its own, which this function gives a filesystem view of its own
/// (`unshare(CLONE_FS)`) rooted in a directory without that path (`/proc/sys/kernel`), so
/// aya finds no file there; the thread is to end right after. Without the privilege for
/// that (CAP_SYS_CHROOT), the loader is made as usual.
fn loader_without_kernel_btf() -> EbpfLoader<'static> {
    // SAFETY: unshare(CLONE_FS) gives only this thread its own root and working directory;
    // chroot changes this thread's root alone then. Neither touches memory.
    let _isolated = unsafe { libc::unshare(libc::CLONE_FS) == 0 && libc::chroot(c"/proc/sys/kernel".as_ptr()) == 0 };
    let mut loader = EbpfLoader::new();
    loader.btf(None);
    loader
}

/// [`open`] with a loader made beforehand ([`Preparing`]).
pub(super) fn open_with(loader: EbpfLoader<'static>, setup: &Setup) -> anyhow::Result<Ebpf> {
    // Shortened to this function's values, which the loader borrows.
    let mut loader: EbpfLoader<'_> = loader;
    // Wake the reader only when the ring is a quarter full; it polls for the rest.
    let wakeup_bytes = u64::from(setup.ring_size / 4);
    let sock = setup.sock.as_ref().copied().unwrap_or(SockLayout::ZERO);
    let classic_primary = u32::from(setup.sock.is_err());
    let trace_command = u32::from(setup.command.is_some());
    let (task, traced_entries) = setup.command.unwrap_or((TaskLayout::ZERO, 1));
    loader
        // The programs use no CO-RE relocations (portrace computes the offsets it needs
        // from BTF itself), so aya has nothing to relocate.
        .btf(None)
        .override_global("LAYOUT", &setup.layout, true)
        .override_global("SOCK", &sock, true)
        .override_global("FILTER", &setup.filter, true)
        .override_global("WAKEUP_BYTES", &wakeup_bytes, true)
        .override_global("CLASSIC_PRIMARY", &classic_primary, true)
        .override_global("OWN_TGID", &std::process::id(), true)
        .override_global("TRACE_COMMAND", &trace_command, true)
        .override_global("TASK", &task, true)
        .override_global("KFREE_SKB_RX_SK", &u32::from(setup.kfree_skb_has_rx_sk), true)
        .map_max_entries("EVENTS", setup.ring_size)
        .map_max_entries("TRACED", traced_entries)
        .load(PROGRAM)
        .map_err(|e| explain(e.into()))
        .context("loading portrace's eBPF object")
}

/// The address of the kernel symbol `name` in `/proc/kallsyms` text, read line by line
/// and no further than the symbol (the table is some 10 MB: it is never held whole).
pub fn find_symbol(kallsyms: impl std::io::BufRead, name: &str) -> Result<u64, String> {
    let mut kallsyms = kallsyms;
    let mut line = Vec::with_capacity(128);
    loop {
        line.clear();
        match kallsyms.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("cannot read /proc/kallsyms: {e}")),
        }
        let mut fields = line.split(|b| b.is_ascii_whitespace()).filter(|f| !f.is_empty());
        let (Some(address), Some(_kind), Some(symbol)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if symbol == name.as_bytes() {
            let address = std::str::from_utf8(address)
                .ok()
                .and_then(|a| u64::from_str_radix(a, 16).ok())
                .ok_or_else(|| format!("/proc/kallsyms has a malformed address for {name}"))?;
            if address == 0 {
                return Err(hidden(name));
            }
            return Ok(address);
        }
    }
    Err(no_symbol(name))
}

fn hidden(name: &str) -> String {
    format!(
        "kernel symbol addresses are hidden (kernel.kptr_restrict), so {name} cannot be found; \
         run portrace as root, or set kernel.kptr_restrict=0"
    )
}

fn no_symbol(name: &str) -> String {
    format!("this kernel has no {name} symbol")
}

/// The start-up work that does not depend on the checks before it, begun at once on
/// threads of its own ([`prepare`]): finding the timewait timer handler (a fraction of a
/// millisecond when the kernel can be asked, 35-60 ms reading `/proc/kallsyms`), and
/// making aya's loader ([`loader_without_kernel_btf`]).
pub struct Preparing {
    symbols: Option<std::thread::JoinHandle<(Result<u64, String>, std::time::Duration)>>,
    loader: std::thread::JoinHandle<(EbpfLoader<'static>, std::time::Duration)>,
}

/// Starts [`Preparing`]'s work.
pub fn prepare() -> Preparing {
    Preparing {
        symbols: Some(std::thread::spawn(|| timed(tw_timer_handler))),
        loader: std::thread::spawn(|| timed(loader_without_kernel_btf)),
    }
}

fn timed<T>(work: impl FnOnce() -> T) -> (T, std::time::Duration) {
    let began = Instant::now();
    let done = work();
    (done, began.elapsed())
}

impl Preparing {
    /// Waits for aya's loader; how long making it took.
    pub fn loader(self) -> (EbpfLoader<'static>, std::time::Duration) {
        self.loader.join().unwrap_or_else(|_| timed(|| std::thread::spawn(loader_without_kernel_btf).join().unwrap_or_else(|_| EbpfLoader::new())))
    }

    /// The timewait timer handler's address, still being read: loading goes on meanwhile
    /// and waits for it only to attach the timer programs ([`TwHandler::resolve`]).
    pub fn symbols(&mut self) -> TwHandler {
        match self.symbols.take() {
            Some(reading) => TwHandler::Reading(reading),
            None => TwHandler::Known(tw_timer_handler()),
        }
    }
}

/// What the kernel's BTF gives the programs: the socket offsets, and the stand-in BTF the
/// typed timer programs load with ([`super::typed`]); or why not.
pub struct KernelTypes {
    pub sock: Result<SockLayout, String>,
    pub typed: Result<aya::Btf, String>,
}

/// [`KernelTypes`] from the kernel's BTF, and how long reading it took.
pub fn kernel_types() -> (KernelTypes, std::time::Duration) {
    timed(|| match crate::btf::Btf::from_kernel() {
        Ok(btf) => KernelTypes {
            sock: crate::btf::sock_layout(&btf).map_err(|e| e.to_string()),
            typed: super::typed::stand_in(&btf),
        },
        Err(e) => KernelTypes { sock: Err(e.to_string()), typed: Err(e.to_string()) },
    })
}

/// The socket offsets and stand-in BTF from the kernel's BTF and the timewait timer
/// handler's address, or why not: what a run hands the programs beyond the tracepoint
/// layout, both waited for.
pub fn kernel_offsets() -> KernelOffsets {
    let (KernelTypes { sock, typed }, _) = kernel_types();
    KernelOffsets { sock, typed, tw_handler: tw_timer_handler() }
}

/// What [`kernel_offsets`] found.
pub struct KernelOffsets {
    pub sock: Result<SockLayout, String>,
    pub typed: Result<aya::Btf, String>,
    pub tw_handler: Result<u64, String>,
}

/// The timewait timer's handler, for the timer programs: asked of the kernel
/// ([`crate::ksym`]), or, where it cannot answer, read from `/proc/kallsyms`.
pub fn tw_timer_handler() -> Result<u64, String> {
    const NAME: &str = "tw_timer_handler";
    match crate::ksym::lookup(NAME) {
        Ok(address) => return Ok(address),
        Err(crate::ksym::Missing::NoSymbol) => return Err(no_symbol(NAME)),
        Err(crate::ksym::Missing::Hidden) => return Err(hidden(NAME)),
        Err(crate::ksym::Missing::Unavailable(_)) => {}
    }
    let file = std::fs::File::open("/proc/kallsyms").map_err(|e| format!("cannot read /proc/kallsyms: {e}"))?;
    find_symbol(std::io::BufReader::with_capacity(1 << 16, file), NAME)
}
