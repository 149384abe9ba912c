//! Memory failure for pmem pages (mm/memory-failure.c, the ZONE_DEVICE paths).
//!
//! `memory_failure(pfn)` on a pmem pfn goes to `memory_failure_dev_pagemap`: first the pmem
//! driver's `->memory_failure`, which asks the file system that holds the device
//! (`dax_holder_notify_failure` -> [`DaxHolder::notify_failure`]; daxfs implements it with its own
//! rmap and calls [`mf_dax_kill_procs`] per owner); if there is no holder (-EOPNOTSUPP), the
//! generic path `mf_generic_kill_procs` follows `page->mapping`/`index`. Both lock the DAX entry
//! through [`DaxEntryLocking`] (the DAX core, `crate::dax::Dax`, implements it with the entry
//! locks of fs/dax.c; [`NoDaxLocking`] takes no lock, for tests of this layer alone), mark the
//! page HWPoison, collect the processes mapping it (`collect_procs_*`), unmap the
//! largest mapping size found, and signal (`kill_procs`): the consuming thread gets
//! `BUS_MCEERR_AR`, others `BUS_MCEERR_AO` if they asked for early kill, a process whose address
//! could not be found gets SIGKILL. The result is logged as Linux logs it ("recovery action for
//! dax page: Recovered|Failed").

use crate::dax_entry::{PAGE_SHIFT, PAGE_SIZE, dax_is_empty_entry, dax_is_zero_entry, dax_to_pfn};
use crate::mm::MmStruct;
use crate::mm::unmap_mapping_range;
use crate::rmap::dev_pagemap_mapping_shift;
use crate::signal::{
    PF_MCE_EARLY, PF_MCE_PROCESS, Process, SiCode, Signal, send_sig_mceerr, send_sigkill,
};
use crate::world::{AddressSpace, MmWorld};
use crate::{Errno, Pfn, Pid};
use sim_core::platform::bug_on;
use sim_core::{Platform, TaskId};
use std::future::Future;
use std::sync::Arc;

pub const MF_COUNT_INCREASED: u32 = 1 << 0;
pub const MF_ACTION_REQUIRED: u32 = 1 << 1;
pub const MF_MUST_KILL: u32 = 1 << 2;
pub const MF_SOFT_OFFLINE: u32 = 1 << 3;
pub const MF_UNPOISON: u32 = 1 << 4;
pub const MF_SW_SIMULATED: u32 = 1 << 5;
pub const MF_NO_RETRY: u32 = 1 << 6;
pub const MF_MEM_PRE_REMOVE: u32 = 1 << 7;

/// Who runs memory failure: the thread that consumed the poison (a machine check, handled in
/// its own context), or `None` for a kernel worker (a scrub or ARS notification).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct MfContext {
    pub current: Option<TaskId>,
}

/// `dax_entry_t`: the cookie `dax_lock_*` returns (0 = could not lock).
pub type DaxCookie = u64;

/// The DAX-entry locking memory failure needs (fs/dax.c: `dax_lock_folio`,
/// `dax_lock_mapping_entry` and their unlocks).
pub trait DaxEntryLocking<P: Platform> {
    /// `dax_lock_folio`: lock the entry owning the page; 0 when the page has no (DAX) mapping.
    fn dax_lock_folio(
        &self,
        p: &P,
        world: &MmWorld<P>,
        pfn: Pfn,
    ) -> impl Future<Output = DaxCookie>;
    fn dax_unlock_folio(
        &self,
        p: &P,
        world: &MmWorld<P>,
        pfn: Pfn,
        cookie: DaxCookie,
    ) -> impl Future<Output = ()>;
    /// `dax_lock_mapping_entry(mapping, index, &page)`: the cookie, and the page of the entry
    /// (none for an absent, zero or empty entry, cookie `!0`).
    fn dax_lock_mapping_entry(
        &self,
        p: &P,
        world: &MmWorld<P>,
        mapping: &AddressSpace<P>,
        index: u64,
    ) -> impl Future<Output = (DaxCookie, Option<Pfn>)>;
    fn dax_unlock_mapping_entry(
        &self,
        p: &P,
        world: &MmWorld<P>,
        mapping: &AddressSpace<P>,
        index: u64,
        cookie: DaxCookie,
    ) -> impl Future<Output = ()>;
}

/// Entry "locking" without the DAX core: the same lookups, no lock taken.
pub struct NoDaxLocking;

impl<P: Platform> DaxEntryLocking<P> for NoDaxLocking {
    async fn dax_lock_folio(&self, p: &P, world: &MmWorld<P>, pfn: Pfn) -> DaxCookie {
        let page = world.memmap.page(p, pfn).await;
        if page.mapping_id().is_some() { 1 } else { 0 }
    }
    async fn dax_unlock_folio(&self, _p: &P, _w: &MmWorld<P>, _pfn: Pfn, _c: DaxCookie) {}
    async fn dax_lock_mapping_entry(
        &self,
        p: &P,
        _world: &MmWorld<P>,
        mapping: &AddressSpace<P>,
        index: u64,
    ) -> (DaxCookie, Option<Pfn>) {
        let xa = mapping.i_pages.lock(p).await;
        let e = xa.xa_load(index);
        xa.unlock().await;
        if !e.is_value() || dax_is_zero_entry(e) || dax_is_empty_entry(e) {
            (!0, None)
        } else {
            // As fs/dax.c: the page of the entry (its head for a PMD entry).
            (1, Some(dax_to_pfn(e)))
        }
    }
    async fn dax_unlock_mapping_entry(
        &self,
        _p: &P,
        _w: &MmWorld<P>,
        _m: &AddressSpace<P>,
        _i: u64,
        _c: DaxCookie,
    ) {
    }
}

/// `struct dax_holder_operations`: the file system holding the pmem device.
pub trait DaxHolder<P: Platform> {
    /// `notify_failure(dax_dev, offset, len, mf_flags)`: `offset` and `len` in bytes from the
    /// start of the device. -EOPNOTSUPP sends memory failure down the generic path.
    fn notify_failure(
        &self,
        p: &P,
        world: &MmWorld<P>,
        offset: u64,
        len: u64,
        mf_flags: u32,
        ctx: &MfContext,
    ) -> impl Future<Output = Result<(), Errno>>;
}

/// No holder registered (`dax_holder_notify_failure` returns -EOPNOTSUPP).
pub struct NoHolder;

impl<P: Platform> DaxHolder<P> for NoHolder {
    async fn notify_failure(
        &self,
        _p: &P,
        _w: &MmWorld<P>,
        _o: u64,
        _l: u64,
        _f: u32,
        _c: &MfContext,
    ) -> Result<(), Errno> {
        Err(Errno::EOPNOTSUPP)
    }
}

/// `struct to_kill`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToKill {
    pub tsk: TaskId,
    pub pid: Pid,
    pub comm: String,
    /// The user address of the page; `None` is -EFAULT (not found: SIGKILL).
    pub addr: Option<u64>,
    /// `dev_pagemap_mapping_shift` at that address.
    pub size_shift: u32,
}

/// `action_result`'s verdict.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MfAction {
    Recovered,
    Failed,
}

/// What `memory_failure` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MfReport {
    pub pfn: Pfn,
    pub rc: Result<(), Errno>,
    pub action: Option<MfAction>,
}

/// `task_early_kill(tsk, force_early)`: which thread of the process gets the signal, if any.
fn task_early_kill<P: Platform>(
    world: &MmWorld<P>,
    tl: &crate::signal::TaskList<P>,
    pr: &Process<P>,
    force_early: bool,
    ctx: &MfContext,
) -> Option<TaskId> {
    if force_early
        && let Some(cur) = ctx.current
        && pr.threads.contains(&cur)
    {
        return Some(cur);
    }
    // find_early_kill_thread
    pr.threads.iter().copied().find(|t| {
        let flags = tl.threads.get(t).map_or(0, |th| th.flags);
        if flags & PF_MCE_PROCESS != 0 {
            flags & PF_MCE_EARLY != 0
        } else {
            world.config.memory_failure_early_kill
        }
    })
}

/// `add_to_kill_fsdax` / `add_to_kill_anon_file` for a VMA found at `addr`.
async fn add_to_kill<P: Platform>(
    p: &P,
    world: &MmWorld<P>,
    to_kill: &mut Vec<ToKill>,
    t: TaskId,
    pr: &Process<P>,
    addr: Option<u64>,
    pfn: Pfn,
) {
    let size_shift = match addr {
        Some(a) => dev_pagemap_mapping_shift(p, &pr.mm, a).await,
        None => 0,
    };
    if addr.is_none() {
        world
            .printk(
                p,
                format!(
                    "Memory failure: Unable to find user space address {pfn:x} in {}",
                    pr.comm
                ),
            )
            .await;
    } else if size_shift == 0 {
        // Mapped by this VMA's range but not in its page tables: nothing to signal.
        return;
    }
    to_kill.push(ToKill {
        tsk: t,
        pid: pr.pid,
        comm: pr.comm.clone(),
        addr,
        size_shift,
    });
}

/// `collect_procs_file` / `collect_procs_fsdax`: processes with a VMA of `mapping` covering
/// `pgoff`. Holds `i_mmap_rwsem` shared and the task list while walking.
#[allow(clippy::too_many_arguments)] // the kernel's arguments, plus the model's handles
pub async fn collect_procs<P: Platform>(
    p: &P,
    world: &MmWorld<P>,
    mapping: &AddressSpace<P>,
    pgoff: u64,
    pfn: Pfn,
    force_early: bool,
    all_tasks: bool,
    ctx: &MfContext,
) -> Vec<ToKill> {
    let mut to_kill = vec![];
    let tree = mapping.i_mmap.read(p).await;
    let tl = world.tasks.lock(p).await;
    for pr in tl.procs.values() {
        // MF_MEM_PRE_REMOVE searches every task; otherwise the early-kill choice.
        let t = if all_tasks {
            pr.threads.first().copied()
        } else {
            task_early_kill(world, &tl, pr, force_early, ctx)
        };
        let Some(t) = t else { continue };
        for v in tree.foreach(pgoff, pgoff) {
            if v.mm_id != pr.mm.id {
                continue;
            }
            let addr = v.address(pgoff, 1);
            add_to_kill(p, world, &mut to_kill, t, pr, addr, pfn).await;
        }
    }
    tl.unlock().await;
    tree.unlock().await;
    to_kill
}

/// `kill_proc`: SIGBUS with the address and the size of the mapping.
async fn kill_proc<P: Platform>(
    p: &P,
    world: &MmWorld<P>,
    tk: &ToKill,
    pfn: Pfn,
    flags: u32,
    ctx: &MfContext,
) {
    world
        .printk(
            p,
            format!(
                "Memory failure: {pfn:#x}: Sending SIGBUS to {}:{} due to hardware memory corruption",
                tk.comm, tk.pid
            ),
        )
        .await;
    let code = if flags & MF_ACTION_REQUIRED != 0 && Some(tk.tsk) == ctx.current {
        SiCode::BusMceerrAr
    } else {
        SiCode::BusMceerrAo
    };
    let addr = tk.addr.unwrap_or(0);
    send_sig_mceerr(p, world, code, addr, tk.size_shift as u8, tk.tsk).await;
}

/// `kill_procs(to_kill, forcekill, pfn, flags)`.
pub async fn kill_procs<P: Platform>(
    p: &P,
    world: &MmWorld<P>,
    to_kill: &[ToKill],
    forcekill: bool,
    pfn: Pfn,
    flags: u32,
    ctx: &MfContext,
) {
    if !forcekill {
        return;
    }
    for tk in to_kill {
        match tk.addr {
            None => {
                world
                    .printk(
                        p,
                        format!(
                            "Memory failure: {pfn:#x}: forcibly killing {}:{} because of failure to unmap corrupted page",
                            tk.comm, tk.pid
                        ),
                    )
                    .await;
                send_sigkill(p, world, tk.tsk).await;
            }
            Some(_) => kill_proc(p, world, tk, pfn, flags, ctx).await,
        }
    }
}

/// `unmap_and_kill`: unmap the largest mapping size any victim uses around `index`, then kill.
#[allow(clippy::too_many_arguments)] // the kernel's arguments, plus the model's handles
pub async fn unmap_and_kill<P: Platform>(
    p: &P,
    world: &MmWorld<P>,
    to_kill: &[ToKill],
    pfn: Pfn,
    mapping: &AddressSpace<P>,
    index: u64,
    flags: u32,
    ctx: &MfContext,
) {
    let size = to_kill
        .iter()
        .filter(|tk| tk.size_shift != 0)
        .map(|tk| 1u64 << tk.size_shift)
        .max()
        .unwrap_or(0);
    if size != 0 {
        let start = (index << PAGE_SHIFT) & !(size - 1);
        unmap_mapping_range(p, world, mapping, start, size, false).await;
    }
    kill_procs(
        p,
        world,
        to_kill,
        flags & MF_MUST_KILL != 0,
        pfn,
        flags,
        ctx,
    )
    .await;
}

/// `mf_generic_kill_procs`: the path through `page->mapping` when no holder answers.
async fn mf_generic_kill_procs<P: Platform, L: DaxEntryLocking<P>>(
    p: &P,
    world: &MmWorld<P>,
    pfn: Pfn,
    flags: u32,
    ctx: &MfContext,
    locking: &L,
) -> Result<(), Errno> {
    let cookie = locking.dax_lock_folio(p, world, pfn).await;
    if cookie == 0 {
        return Err(Errno::EBUSY);
    }
    world.memmap.set_page_hwpoison(p, pfn).await;
    let flags = flags | MF_ACTION_REQUIRED | MF_MUST_KILL;
    // The entry lock keeps mapping/index stable.
    let page = world.memmap.page(p, pfn).await;
    if let Some(mid) = page.mapping_id()
        && let Some(mapping) = world.mapping_get(p, mid).await
    {
        let to_kill = collect_procs(p, world, &mapping, page.index, pfn, true, false, ctx).await;
        unmap_and_kill(p, world, &to_kill, pfn, &mapping, page.index, flags, ctx).await;
    }
    locking.dax_unlock_folio(p, world, pfn, cookie).await;
    Ok(())
}

/// `mf_dax_kill_procs(mapping, index, count, mf_flags)`: called by the file system for each
/// owner of a failed range (reflinked pages have several).
#[allow(clippy::too_many_arguments)] // the kernel's arguments, plus the model's handles
pub async fn mf_dax_kill_procs<P: Platform, L: DaxEntryLocking<P>>(
    p: &P,
    world: &MmWorld<P>,
    mapping: &AddressSpace<P>,
    index: u64,
    count: u64,
    mf_flags: u32,
    ctx: &MfContext,
    locking: &L,
) -> Result<(), Errno> {
    let pre_remove = mf_flags & MF_MEM_PRE_REMOVE != 0;
    let mf_flags = mf_flags | MF_ACTION_REQUIRED | MF_MUST_KILL;
    for index in index..index + count {
        let (cookie, page) = locking
            .dax_lock_mapping_entry(p, world, mapping, index)
            .await;
        if cookie == 0 {
            return Err(Errno::EBUSY);
        }
        if let Some(pfn) = page {
            // MF_MEM_PRE_REMOVE revokes access; the memory itself is good.
            if !pre_remove {
                world.memmap.set_page_hwpoison(p, pfn).await;
            }
            let to_kill = collect_procs(p, world, mapping, index, pfn, true, pre_remove, ctx).await;
            unmap_and_kill(p, world, &to_kill, pfn, mapping, index, mf_flags, ctx).await;
        }
        locking
            .dax_unlock_mapping_entry(p, world, mapping, index, cookie)
            .await;
    }
    Ok(())
}

/// `memory_failure(pfn, flags)` for a pmem pfn, under `mf_mutex`.
pub async fn memory_failure<P: Platform, H: DaxHolder<P>, L: DaxEntryLocking<P>>(
    p: &P,
    world: &MmWorld<P>,
    pfn: Pfn,
    flags: u32,
    ctx: &MfContext,
    holder: &H,
    locking: &L,
) -> MfReport {
    let g = world.mf_mutex.lock(p).await;
    if !world.memmap.pfn_valid(pfn) {
        world
            .printk(
                p,
                format!("Memory failure: {pfn:#x}: memory outside kernel control"),
            )
            .await;
        g.unlock().await;
        return MfReport {
            pfn,
            rc: Err(Errno::ENXIO),
            action: None,
        };
    }
    // The pmem driver has the failed range in its badblocks list before memory failure runs
    // (the machine check or scrub notification adds it), so from here on a new fault on it
    // fails (-EHWPOISON from direct_access). The model's badblocks list is the HWPoison bit:
    // set it first, or a fault could map the page through an owner already handled.
    world.memmap.set_page_hwpoison(p, pfn).await;
    // memory_failure_dev_pagemap -> pmem_pagemap_memory_failure -> dax_holder_notify_failure.
    let offset = (pfn - world.memmap.base_pfn()) << PAGE_SHIFT;
    let mut rc = holder
        .notify_failure(p, world, offset, PAGE_SIZE, flags, ctx)
        .await;
    if rc == Err(Errno::EOPNOTSUPP) {
        rc = mf_generic_kill_procs(p, world, pfn, flags, ctx, locking).await;
    }
    let action = if rc.is_ok() {
        MfAction::Recovered
    } else {
        MfAction::Failed
    };
    if rc.is_ok() {
        mf_check_no_owner_missed(p, world, pfn).await;
    }
    world
        .printk(
            p,
            format!("Memory failure: {pfn:#x}: recovery action for dax page: {action:?}"),
        )
        .await;
    g.unlock().await;
    MfReport {
        pfn,
        rc,
        action: Some(action),
    }
}

/// After a recovered memory failure, every owner of the page was found: a process that asked
/// for early kill and still maps the poisoned page must have been signalled (and then it was
/// also unmapped, since `unmap_and_kill` unmaps before it kills). A process still mapping it
/// without a signal is an owner that memory failure missed (the 2018 reflink problem: one
/// `page->mapping` names one owner of a page that several files share). Checked over every
/// process's page tables, not through any rmap, so it does not share the rmap's blind spots.
async fn mf_check_no_owner_missed<P: Platform>(p: &P, world: &MmWorld<P>, pfn: Pfn) {
    /// pid, comm, mm, asked for early kill, signalled.
    type Victim<P> = (Pid, String, Arc<MmStruct<P>>, bool, bool);
    let tl = world.tasks.lock(p).await;
    let procs: Vec<Victim<P>> = tl
        .procs
        .values()
        .map(|pr| {
            let ths = pr.threads.iter().filter_map(|t| tl.threads.get(t));
            let signalled = ths.clone().any(|th| {
                th.pending.iter().chain(&th.delivered).any(|si| {
                    si.signo == Signal::SIGKILL
                        || matches!(si.code, SiCode::BusMceerrAr | SiCode::BusMceerrAo)
                })
            });
            let early = ths.clone().any(|th| {
                if th.flags & PF_MCE_PROCESS != 0 {
                    th.flags & PF_MCE_EARLY != 0
                } else {
                    world.config.memory_failure_early_kill
                }
            });
            (pr.pid, pr.comm.clone(), pr.mm.clone(), early, signalled)
        })
        .collect();
    tl.unlock().await;
    for (pid, comm, mm, early, signalled) in procs {
        if !early || signalled {
            continue;
        }
        let pt = mm.page_table.lock(p).await;
        let at = pt.all_leaves().into_iter().find(|l| {
            let first = l.pfn();
            (first..first + (l.size() >> PAGE_SHIFT)).contains(&pfn)
        });
        pt.unlock().await;
        if let Some(l) = at {
            let va = l.addr() + ((pfn - l.pfn()) << PAGE_SHIFT);
            bug_on(p, true, "hwpoison-owner-missed", || {
                format!(
                    "memory_failure recovered pfn {pfn:#x}, but {comm}:{} (early kill) still maps \
                     it at {va:#x} and got no signal: an owner of the page was missed",
                    pid.0
                )
            })
            .await;
            return;
        }
    }
}

/// The machine-check path for the current thread (`kill_me_maybe`): memory failure with
/// MF_ACTION_REQUIRED; if it could not recover, SIGBUS the thread anyway (`kill_me_now`).
pub async fn machine_check<P: Platform, H: DaxHolder<P>, L: DaxEntryLocking<P>>(
    p: &P,
    world: &MmWorld<P>,
    pfn: Pfn,
    holder: &H,
    locking: &L,
) -> MfReport {
    let ctx = MfContext {
        current: Some(p.current_task()),
    };
    let r = memory_failure(p, world, pfn, MF_ACTION_REQUIRED, &ctx, holder, locking).await;
    if let Err(e) = r.rc
        && e != Errno::EHWPOISON
        && e != Errno::EOPNOTSUPP
    {
        world
            .printk(p, format!("mce: Memory error not recovered (pfn {pfn:#x})"))
            .await;
        crate::signal::force_sig_fault(p, world, crate::signal::Signal::SIGBUS, SiCode::Kernel, 0)
            .await;
    }
    r
}
