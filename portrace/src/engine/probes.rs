//! Attaching a live run's probes: the environment is checked, tracefs mounted, the
//! kernel's layouts read, the filter resolved and the programs loaded and attached, with
//! the count of the state tracepoint's hits that does not depend on BPF beside them. What
//! comes out is what the session needs; the loader alone knows how the kernel is reached.

use tokio::io::unix::AsyncFd;

use crate::features::Feature;
use crate::filter::FilterSpec;
use crate::hitcount::HitCounter;
use crate::loader::{self, Ring, Setup, Tracer};
use crate::preflight::KernelRelease;
use portrace_ebpf::{Layout, SockLayout};
use crate::startup::Startup;
use crate::{follow, preflight, priority, tracefs};

/// The attached programs, and what the run learned attaching them.
pub(super) struct Probes {
    pub tracer: Tracer,
    /// The programs' ring buffer, watched for records.
    pub ring: AsyncFd<Ring>,
    /// The independent count of the tracepoint's hits, and the programs' count when it
    /// started ([`crate::hitcount`]); `None` when it cannot be made.
    pub hits: Option<(HitCounter, u64)>,
    pub kernel: KernelRelease,
    /// The tracepoint's layout and the socket's, for a recording's header.
    pub layout: Layout,
    pub sock_layout: Option<SockLayout>,
    /// The user's filter with its cgroup resolved.
    pub filter: FilterSpec,
}

/// Checks the kernel, loads the programs for `filter` (and for a traced command, if
/// `command`) and attaches them.
pub(super) fn attach(filter: &FilterSpec, ring_size: u32, command: bool, startup: &mut Startup) -> anyhow::Result<Probes> {
    let kernel = preflight::check_kernel()?;
    // Before any thread starts: they all inherit it.
    priority::raise();
    let mut preparing = loader::prepare();
    let tracefs = tracefs::ensure_mounted()?;
    if tracefs.mounted_by_us {
        eprintln!("portrace: tracefs was not mounted; mounted it at {}", tracefs.path.display());
    }
    // The count of the tracepoint's hits (below) is created now, while the programs load,
    // and enabled once they are attached.
    let hit_counter = HitCounter::create_in_background(&tracefs.path);
    startup.mark("checks");
    // The timewait timer handler's address is still being found (`ksym`) while
    // the programs load; only attaching the timer programs waits for it.
    let (loader::KernelTypes { sock, typed }, btf_took) = loader::kernel_types();
    let tw_handler = preparing.symbols();
    startup.mark("kernel offsets");
    startup.part("BTF", btf_took);
    let mut filter = filter.clone();
    if let Some(c) = &filter.cgroup {
        filter.cgroup = Some(c.resolve()?);
    }
    if !filter.netns.is_empty() && sock.is_err() {
        anyhow::bail!(
            "--netns needs the kernel's BTF (/sys/kernel/btf/vmlinux) to read a socket's namespace, and this kernel has none"
        );
    }
    let setup = Setup {
        layout: tracefs::read_layout(&tracefs.path)?,
        sock,
        typed,
        tw_handler,
        kfree_skb_has_rx_sk: std::fs::read_to_string(tracefs.path.join("events/skb/kfree_skb/format"))
            .is_ok_and(|f| f.contains(" rx_sk;")),
        filter: filter.to_kernel()?,
        ring_size,
        command: match command {
            true => Some((
                follow::read_task_layout(&tracefs.path)?,
                follow::traced_capacity(std::fs::read_to_string("/proc/sys/kernel/pid_max").ok().as_deref()),
            )),
            false => None,
        },
    };
    let (layout, sock_layout) = (setup.layout, setup.sock.as_ref().ok().copied());
    let (aya_loader, aya_took) = preparing.loader();
    let (mut tracer, ring) = loader::load(setup, aya_loader)?;
    startup.mark("loading");
    startup.part("aya's loader, beforehand", aya_took);
    startup.part("object and maps", tracer.opened_in);
    startup.part("verifying, in parallel", tracer.verified_in);
    startup.part("kallsyms", tracer.symbols_took);
    startup.part("waited for kallsyms", tracer.symbols_waited);
    // Hits the kernel hands to no program and counts nowhere show only against a count of
    // the hits that does not depend on BPF: read the programs' side, then start that count.
    let hits = hit_counter.created().and_then(|counter| {
        let handed = tracer.handed().map_err(|e| format!("{e:#}"))?;
        counter.enable().map(|()| (counter, handed))
    });
    let hits = match hits {
        Ok(hits) => {
            tracer.features.on(Feature::HitCount);
            Some(hits)
        }
        Err(why) => {
            tracer.features.off(
                Feature::HitCount,
                format!("transitions the kernel hands to no BPF program without counting them cannot be detected: {why}"),
            );
            None
        }
    };
    for note in tracer.features.notes() {
        eprintln!("portrace: {note}");
    }
    // SAFETY: the ring buffer owns its descriptor and moves into the AsyncFd, which keeps
    // it open for as long as it is registered.
    let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("watching the ring buffer: {e}"))?;
    Ok(Probes { tracer, ring, hits, kernel, layout, sock_layout, filter })
}
