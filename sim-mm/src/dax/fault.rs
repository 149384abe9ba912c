//! The fault paths of fs/dax.c (research/linux_dax.md sections 3 and 4): `grab_mapping_entry`,
//! `dax_iomap_fault` -> `dax_iomap_pte_fault` / `dax_iomap_pmd_fault`, holes on the zero pages,
//! `dax_insert_entry`, MAP_SYNC (`VM_FAULT_NEEDDSYNC`, `dax_finish_sync_fault`,
//! `dax_insert_pfn_mkwrite`) and copy-on-write for private mappings; plus, for callers that
//! have no mm or file system of their own yet, the generic part of `handle_mm_fault` for a DAX
//! VMA ([`dax_handle_mm_fault`]) and the file system's `->huge_fault` ([`dax_fs_fault`]).
//!
//! Order of locks in a fault: `mmap_lock` (shared, by the caller) -> `invalidate_lock`
//! (shared, by the file system) -> the DAX entry lock (`grab_mapping_entry`) -> the file
//! system's ILOCK (inside `iomap_begin`) -> `i_mmap_rwsem` (unmaps) -> page-table lock ->
//! i_pages lock. The entry lock is taken before `iomap_begin`, so two faults on one range are
//! serialised before the file system allocates.

use super::entry::{
    XaGuard, dax_associate_entry, dax_disassociate_entry, dax_lock_entry, dax_unlock_entry,
    dax_wake_entry, get_next_unlocked_entry, put_unlocked_entry,
};
use super::invalidate::{dax_lock_hole_page, is_hole_page};
use super::iomap::{
    IOMAP_DAX, IOMAP_F_DIRTY, IOMAP_F_NEW, IOMAP_F_SHARED, IOMAP_FAULT, IOMAP_WRITE, IomapOps,
    IomapPair, IomapType,
};
use super::{Dax, DaxBug, Release};
use crate::dax_entry::{
    DAX_EMPTY, DAX_PMD, DAX_ZERO_PAGE, PAGE_SHIFT, PAGE_SIZE, PG_PMD_COLOUR, PG_PMD_NR, PMD_ORDER,
    PMD_SIZE, dax_entry_order, dax_is_conflict, dax_is_empty_entry, dax_is_pmd_entry,
    dax_is_pte_entry, dax_is_zero_entry, dax_make_entry,
};
use crate::mm::{
    MmStruct, VmFault, Vma, split_huge_pmd, unmap_mapping_pages, vmf_insert_anon_page,
    vmf_insert_folio_pmd, vmf_insert_hole_page, vmf_insert_huge_zero_pmd, vmf_insert_page_mkwrite,
    vmf_insert_zero_page,
};
use crate::pgtable::{HUGE_ZERO_PFN, PmdVal};
use crate::world::AddressSpace;
use crate::xarray::{PAGECACHE_TAG_DIRTY, PAGECACHE_TAG_TOWRITE, XaEntry, XaOps, XaState};
use crate::{Errno, Pfn};
use sim_core::platform::warn_on;
use sim_core::{Platform, WakeMode};

/// `FAULT_FLAG_WRITE`.
pub const FAULT_FLAG_WRITE: u32 = 0x1;
/// `FAULT_FLAG_MKWRITE`: a write-protect fault on a present entry.
pub const FAULT_FLAG_MKWRITE: u32 = 0x2;
/// `FAULT_FLAG_USER`.
pub const FAULT_FLAG_USER: u32 = 0x40;

/// `struct vm_fault`: what a fault handler is told.
pub struct Vmf<'a, P: Platform> {
    pub mm: &'a MmStruct<P>,
    pub vma: &'a Vma<P>,
    /// The faulting address.
    pub address: u64,
    /// `linear_page_index(vma, address)`.
    pub pgoff: u64,
    /// `FAULT_FLAG_*`.
    pub flags: u32,
    /// The anonymous page a private write copies into (`do_cow_fault`).
    pub cow_page: Option<Pfn>,
}

impl<'a, P: Platform> Vmf<'a, P> {
    pub fn new(mm: &'a MmStruct<P>, vma: &'a Vma<P>, address: u64, flags: u32) -> Vmf<'a, P> {
        Vmf {
            mm,
            vma,
            address,
            pgoff: vma.b.linear_page_index(address),
            flags,
            cow_page: None,
        }
    }

    pub fn write(&self) -> bool {
        self.flags & FAULT_FLAG_WRITE != 0
    }

    fn mapping(&self) -> &'a AddressSpace<P> {
        &self.vma.vm_file
    }
}

/// `dax_fault_return(error)` / `vmf_error`: the VM_FAULT code for an errno.
pub fn dax_fault_return(e: Errno) -> VmFault {
    match e {
        Errno::ENOMEM => VmFault::OOM,
        Errno::EHWPOISON => VmFault::HWPOISON,
        _ => VmFault::SIGBUS,
    }
}

/// `dax_fault_is_synchronous(iter, vma)`: a MAP_SYNC write over blocks whose metadata is not
/// durable yet. Bug mode `sync-fault-no-fsync`: never, so the page is mapped writable before
/// the metadata is durable (no `dax_finish_sync_fault`).
pub fn dax_fault_is_synchronous<P: Platform>(
    dax: &Dax<P>,
    flags: u32,
    vma: &Vma<P>,
    iomap: &IomapPair,
) -> bool {
    flags & IOMAP_WRITE != 0
        && vma.b.sync()
        && iomap.iomap.has(IOMAP_F_DIRTY)
        && !dax.bug(DaxBug::SyncFaultNoFsync)
}

/// `grab_mapping_entry(xas, mapping, order)`: a locked entry for the fault to fill, or the
/// VM_FAULT code (`xa_mk_internal(VM_FAULT_*)` in the kernel) to return: `FALLBACK` when a
/// smaller entry sits in the PMD range, `SIGBUS` on a non-value entry.
///
/// A PTE request over a PMD zero or empty entry downgrades it: lock it, unmap the zero PMD,
/// delete it, wake every waiter (the entry they wait for is gone), and continue as an empty
/// slot. Block-backed PMD entries are never downgraded (the PTE fault maps a page of them), and
/// a PMD request over PTE entries falls back: PTE entries always win.
pub async fn grab_mapping_entry<P: Platform>(
    dax: &Dax<P>,
    p: &P,
    mapping: &AddressSpace<P>,
    xas: &mut XaState,
    order: u8,
) -> Result<XaEntry, VmFault> {
    let _fn = p.enter_fn("grab_mapping_entry");
    let index = xas.xa_index;
    // no-entry-lock (before ac401cc78242, 4.7): faults neither waited for nor took entry locks.
    let locking = !dax.bug(DaxBug::NoEntryLock);
    let xa = mapping.i_pages.lock(p).await;
    let (mut xa, mut entry) = if locking {
        get_next_unlocked_entry(dax, p, mapping, xa, xas, order).await
    } else {
        let e = xa.xas_find_conflict(xas);
        if e.is_value() && dax_entry_order(e) < order {
            (xa, crate::xarray::XA_RETRY_ENTRY)
        } else {
            (xa, e)
        }
    };
    let mut pmd_downgrade = false;
    if !entry.is_null() {
        if dax_is_conflict(entry) {
            xa.release(dax.release_steps).await;
            return Err(VmFault::FALLBACK);
        }
        if is_hole_page(dax, entry) {
            // shadow-entries (4.x): a hole page. A PMD fault falls back to PTEs (4.10's
            // grab_mapping_entry); a PTE fault locks and unmaps it and goes on as if the slot
            // were empty: a read maps a new hole page, a write replaces it with its block.
            if order > 0 {
                xa.release(dax.release_steps).await;
                return Err(VmFault::FALLBACK);
            }
            return Ok(dax_lock_hole_page(dax, p, mapping, xa, xas).await);
        }
        if !entry.is_value() {
            xa.release(dax.release_steps).await;
            return Err(VmFault::SIGBUS);
        }
        if order == 0 {
            pmd_downgrade =
                dax_is_pmd_entry(entry) && (dax_is_zero_entry(entry) || dax_is_empty_entry(entry));
        } else if dax_is_pte_entry(entry) {
            // Reached only with pmd-missed-wakeup (the code before the order argument): the
            // lookup returned a smaller, now unlocked entry; put it back and fall back.
            xa.release(dax.release_steps).await;
            put_unlocked_entry(dax, p, mapping, xas, entry, WakeMode::Next).await;
            return Err(VmFault::FALLBACK);
        }
    }
    if pmd_downgrade {
        // Make sure `entry` stays valid while the i_pages lock is dropped.
        if locking {
            dax_lock_entry(&mut xa, xas, entry);
        }
        // Besides the huge zero page, only empty entries are downgraded, which map nothing.
        // stale-huge-zero-page: the huge zero page stayed mapped over the range that is
        // about to get blocks (the unmap cd656375f946 and its neighbours added).
        if dax_is_zero_entry(entry) && !dax.bug(DaxBug::StaleHugeZeroPage) {
            xa.release(dax.release_steps).await;
            unmap_mapping_pages(
                p,
                &dax.world,
                mapping,
                index & !PG_PMD_COLOUR,
                PG_PMD_NR,
                false,
            )
            .await;
            xas.reset();
            xa = mapping.i_pages.lock(p).await;
        }
        dax_disassociate_entry(dax, p, mapping, entry, false).await;
        xa.xas_store(xas, XaEntry::NULL); // undo the PMD join
        // hole-wake-next (before 965d004af540): the entry changed type, yet only one waiter was
        // woken; it finds no PMD entry any more and never passes the wake-up on.
        let mode = if dax.bug(DaxBug::HoleWakeNext) {
            WakeMode::Next
        } else {
            WakeMode::All
        };
        dax_wake_entry(dax, p, mapping, xas, entry, mode).await;
        xa.nrpages_add(-(PG_PMD_NR as i64));
        entry = XaEntry::NULL;
        xas.set(index);
    }
    if !entry.is_null() {
        if locking {
            dax_lock_entry(&mut xa, xas, entry);
        }
    } else {
        let mut flags = DAX_EMPTY;
        if order > 0 {
            flags |= DAX_PMD;
        }
        entry = dax_make_entry(0, flags);
        if locking {
            dax_lock_entry(&mut xa, xas, entry);
        } else {
            xa.xas_store(xas, entry);
        }
        xa.nrpages_add(1 << order);
    }
    xa.release(dax.release_steps).await;
    Ok(entry)
}

/// `dax_unlock_entry` for the fault paths (nothing to unlock under no-entry-lock).
async fn fault_unlock_entry<P: Platform>(
    dax: &Dax<P>,
    p: &P,
    mapping: &AddressSpace<P>,
    xas: &mut XaState,
    entry: XaEntry,
) {
    // (A 4.x hole page replaced the locked entry already: `dax_load_hole`.)
    if !dax.bug(DaxBug::NoEntryLock) && !entry.is_pointer() {
        dax_unlock_entry(dax, p, mapping, xas, entry).await;
    }
}

/// `dax_insert_entry(xas, vmf, iter, entry, pfn, flags)`: record the new mapping in the
/// xarray with the entry still locked; returns the entry now in place.
///
/// A zero or empty entry (or any entry, for shared blocks) is replaced by the new one, after
/// unmapping the zero page it may have mapped (a zero page left mapped would hide the new
/// blocks); an existing block entry is kept (e.g. a PMD entry under a PTE fault). A write marks
/// the entry DIRTY unless the fault is synchronous (then DIRTY waits for the mkwrite after the
/// sync); a write over shared blocks also marks TOWRITE.
#[allow(clippy::too_many_arguments)]
pub async fn dax_insert_entry<P: Platform>(
    dax: &Dax<P>,
    p: &P,
    vmf: &Vmf<'_, P>,
    xas: &mut XaState,
    iomap_flags: u32,
    iomap: &IomapPair,
    entry: XaEntry,
    pfn: Pfn,
    flags: u64,
) -> XaEntry {
    let _fn = p.enter_fn("dax_insert_entry");
    let mapping = vmf.mapping();
    let new_entry = dax_make_entry(pfn, flags);
    let write = iomap_flags & IOMAP_WRITE != 0;
    let sync = dax_fault_is_synchronous(dax, iomap_flags, vmf.vma, iomap);
    let dirty = write && !sync;
    let shared = iomap.iomap.has(IOMAP_F_SHARED);
    // (dirty: __mark_inode_dirty(I_DIRTY_PAGES); the test file system keeps no inode state.)
    if shared || (dax_is_zero_entry(entry) && flags & DAX_ZERO_PAGE == 0) {
        let index = xas.xa_index;
        if dax_is_pmd_entry(entry) {
            // stale-huge-zero-page: the huge zero page stays mapped in other processes.
            if !dax.bug(DaxBug::StaleHugeZeroPage) || !dax_is_zero_entry(entry) {
                unmap_mapping_pages(
                    p,
                    &dax.world,
                    mapping,
                    index & !PG_PMD_COLOUR,
                    PG_PMD_NR,
                    false,
                )
                .await;
            }
        } else {
            unmap_mapping_pages(p, &dax.world, mapping, index, 1, false).await;
        }
    }
    xas.reset();
    let locking = !dax.bug(DaxBug::NoEntryLock);
    let mut entry = entry;
    let mut xa = mapping.i_pages.lock(p).await;
    if shared || dax_is_zero_entry(entry) || dax_is_empty_entry(entry) {
        // The pages change owner under the i_pages lock, with the entry store (memory failure
        // rechecks page->mapping under the same lock).
        dax_disassociate_entry(dax, p, mapping, entry, false).await;
        dax_associate_entry(dax, p, mapping, &vmf.vma.b, vmf.address, new_entry, shared).await;
        if locking {
            // Only a zero or empty entry (or shared blocks) is swapped for the new one.
            let old = dax_lock_entry(&mut xa, xas, new_entry);
            let expect = crate::xarray::xa_mk_value(
                crate::xarray::xa_to_value(entry) | crate::dax_entry::DAX_LOCKED,
            );
            mark(&mut xa, xas, write, dirty, shared);
            xa.release(dax.release_steps).await;
            warn_on(p, old != expect, "dax-insert-entry-changed", || {
                format!(
                    "dax_insert_entry: ino {} index {:#x}: found {old:?}, expected {expect:?}",
                    mapping.host, xas.xa_index
                )
            })
            .await;
        } else {
            xa.xas_store(xas, new_entry);
            mark(&mut xa, xas, write, dirty, shared);
            xa.release(dax.release_steps).await;
        }
        entry = new_entry;
    } else {
        // mixed-mapping-association (before 1571c029a2ff): the sizes differ (a PTE fault on a
        // PMD entry), so the whole PMD was disassociated and only one page re-associated.
        if dax.bug(DaxBug::MixedMappingAssociation)
            && dax_is_pmd_entry(entry)
            && flags & DAX_PMD == 0
        {
            dax_disassociate_entry(dax, p, mapping, entry, false).await;
            dax_associate_entry(dax, p, mapping, &vmf.vma.b, vmf.address, new_entry, shared).await;
        }
        xa.xas_load(xas);
        mark(&mut xa, xas, write, dirty, shared);
        xa.release(dax.release_steps).await;
    }
    entry
}

fn mark(
    xa: &mut XaGuard<'_, impl Platform>,
    xas: &XaState,
    write: bool,
    dirty: bool,
    shared: bool,
) {
    if dirty {
        xa.xas_set_mark(xas, PAGECACHE_TAG_DIRTY);
    }
    if write && shared {
        xa.xas_set_mark(xas, PAGECACHE_TAG_TOWRITE);
    }
}

/// `dax_iomap_direct_access(iomap, pos, size, &kaddr, &pfn)`: the pfn of file position `pos`
/// (device pages start at the memmap's first pfn). A PMD needs an aligned 2 MiB folio.
pub fn dax_iomap_direct_access<P: Platform>(
    dax: &Dax<P>,
    iomap: &IomapPair,
    pos: u64,
    size: u64,
) -> Result<Pfn, Errno> {
    let mm = &dax.world.memmap;
    let pfn = mm.base_pfn() + iomap.iomap.device_page(pos);
    let nr = size >> PAGE_SHIFT;
    if !mm.pfn_valid(pfn) || !mm.pfn_valid(pfn + nr - 1) {
        return Err(Errno::EIO);
    }
    if size == PMD_SIZE && !pfn.is_multiple_of(PG_PMD_NR) {
        return Err(Errno::EINVAL);
    }
    Ok(pfn)
}

/// `dax_load_hole`: a read of a hole maps the shared 4 KiB zero page read-only, behind a
/// `DAX_ZERO_PAGE` entry.
pub async fn dax_load_hole<P: Platform>(
    dax: &Dax<P>,
    p: &P,
    vmf: &Vmf<'_, P>,
    xas: &mut XaState,
    iomap_flags: u32,
    iomap: &IomapPair,
    entry: &mut XaEntry,
) -> VmFault {
    let _fn = p.enter_fn("dax_load_hole");
    if dax.bug(DaxBug::ShadowEntries) && dax_is_empty_entry(*entry) && !dax_is_pmd_entry(*entry) {
        return dax_load_hole_page(dax, p, vmf, xas, entry).await;
    }
    let (zero, _) = dax.zero_pfns();
    *entry = dax_insert_entry(
        dax,
        p,
        vmf,
        xas,
        iomap_flags,
        iomap,
        *entry,
        zero,
        DAX_ZERO_PAGE,
    )
    .await;
    vmf_insert_zero_page(p, vmf.mm, &vmf.vma.b, vmf.address).await
}

/// `dax_load_hole` of 4.7 .. 4.14 (bug mode `shadow-entries`, whose era it is): the read of a
/// hole gets a zeroed page-cache page (`find_or_create_page`), mapped read-only while the entry
/// lock is still held (the kernel held the page lock until `finish_fault` had mapped it); the
/// page then replaces the locked empty entry in the xarray (`page_cache_tree_insert`), which
/// wakes every waiter of the entry (965d004af540). `*entry` becomes the page, which the caller
/// does not unlock.
async fn dax_load_hole_page<P: Platform>(
    dax: &Dax<P>,
    p: &P,
    vmf: &Vmf<'_, P>,
    xas: &mut XaState,
    entry: &mut XaEntry,
) -> VmFault {
    let mapping = vmf.mapping();
    let page = dax.alloc_hole_page(p).await;
    let ret = vmf_insert_hole_page(p, vmf.mm, &vmf.vma.b, vmf.address, page).await;
    xas.reset();
    let mut xa = mapping.i_pages.lock(p).await;
    let old = xa.xas_store(xas, XaEntry::from_folio_pfn(page));
    dax_wake_entry(dax, p, mapping, xas, *entry, WakeMode::All).await;
    xa.release(dax.release_steps).await;
    let expect = crate::xarray::xa_mk_value(
        crate::xarray::xa_to_value(*entry) | crate::dax_entry::DAX_LOCKED,
    );
    warn_on(p, old != expect, "dax-hole-page-insert", || {
        format!(
            "dax_load_hole: ino {} index {:#x}: found {old:?}, expected {expect:?}",
            mapping.host, xas.xa_index
        )
    })
    .await;
    *entry = XaEntry::from_folio_pfn(page);
    ret
}

/// `dax_pmd_load_hole`: a PMD read of a hole maps the huge zero folio behind a
/// `DAX_PMD | DAX_ZERO_PAGE` entry, if the PMD is still none; else falls back.
pub async fn dax_pmd_load_hole<P: Platform>(
    dax: &Dax<P>,
    p: &P,
    vmf: &Vmf<'_, P>,
    xas: &mut XaState,
    iomap_flags: u32,
    iomap: &IomapPair,
    entry: &mut XaEntry,
) -> VmFault {
    let _fn = p.enter_fn("dax_pmd_load_hole");
    *entry = dax_insert_entry(
        dax,
        p,
        vmf,
        xas,
        iomap_flags,
        iomap,
        *entry,
        HUGE_ZERO_PFN,
        DAX_PMD | DAX_ZERO_PAGE,
    )
    .await;
    if vmf_insert_huge_zero_pmd(p, vmf.mm, &vmf.vma.b, vmf.address).await {
        VmFault::NOPAGE
    } else {
        // dax_pmd_load_hole_fallback
        VmFault::FALLBACK
    }
}

/// `dax_fault_cow_page`: a private write copies the file page (or zeros, for a hole) into the
/// anonymous `cow_page` and maps that (`finish_fault`); the xarray is not touched. (Page
/// contents are not modelled: the copy is the mapping of a fresh anonymous page.)
async fn dax_fault_cow_page<P: Platform>(
    dax: &Dax<P>,
    p: &P,
    vmf: &Vmf<'_, P>,
    iomap: &IomapPair,
) -> VmFault {
    let _fn = p.enter_fn("dax_fault_cow_page");
    match iomap.iomap.typ {
        IomapType::Hole | IomapType::Unwritten | IomapType::Mapped => {}
        _ => return dax_fault_return(Errno::EIO),
    }
    let Some(cow) = vmf.cow_page else {
        return VmFault::SIGBUS;
    };
    let ret = vmf_insert_anon_page(p, &dax.world, vmf.mm, &vmf.vma.b, vmf.address, cow).await;
    if ret == VmFault::NOPAGE {
        VmFault::DONE_COW
    } else {
        ret
    }
}

/// `dax_fault_iter(vmf, iter, pfnp, xas, entry, pmd)`: fill the fault from one iomap answer.
#[allow(clippy::too_many_arguments)]
async fn dax_fault_iter<P: Platform>(
    dax: &Dax<P>,
    p: &P,
    vmf: &Vmf<'_, P>,
    iomap_flags: u32,
    iomap: &IomapPair,
    pfnp: &mut Option<Pfn>,
    xas: &mut XaState,
    entry: &mut XaEntry,
    pmd: bool,
) -> VmFault {
    let _fn = p.enter_fn("dax_fault_iter");
    let size = if pmd { PMD_SIZE } else { PAGE_SIZE };
    let pos = xas.xa_index << PAGE_SHIFT;
    let write = iomap_flags & IOMAP_WRITE != 0;
    let entry_flags = if pmd { DAX_PMD } else { 0 };

    if !pmd && vmf.cow_page.is_some() {
        return dax_fault_cow_page(dax, p, vmf, iomap).await;
    }
    // A read of a hole or of unwritten blocks maps zeros.
    if !write && matches!(iomap.iomap.typ, IomapType::Unwritten | IomapType::Hole) {
        return if pmd {
            dax_pmd_load_hole(dax, p, vmf, xas, iomap_flags, iomap, entry).await
        } else {
            dax_load_hole(dax, p, vmf, xas, iomap_flags, iomap, entry).await
        };
    }
    if iomap.iomap.typ != IomapType::Mapped && !iomap.iomap.has(IOMAP_F_SHARED) {
        warn_on(p, true, "dax-fault-unmapped-extent", || {
            format!("dax_fault_iter: a write got a {:?} extent", iomap.iomap.typ)
        })
        .await;
        return if pmd {
            VmFault::FALLBACK
        } else {
            VmFault::SIGBUS
        };
    }
    let pfn = match dax_iomap_direct_access(dax, iomap, pos, size) {
        Ok(pfn) => pfn,
        Err(e) => {
            return if pmd {
                VmFault::FALLBACK
            } else {
                dax_fault_return(e)
            };
        }
    };
    // pmem_dax_direct_access: a range with known bad blocks is -EHWPOISON (the model's
    // badblocks list is the pages memory failure marked). A PMD over one falls back, and the
    // PTE fault of the bad page itself gets VM_FAULT_HWPOISON (SIGBUS BUS_MCEERR_AR).
    let nr = size >> PAGE_SHIFT;
    let mut bad = false;
    dax.world
        .memmap
        .update(p, pfn, nr, |_, pg| bad |= pg.hwpoison())
        .await;
    if bad {
        return if pmd {
            VmFault::FALLBACK
        } else {
            dax_fault_return(Errno::EHWPOISON)
        };
    }
    *entry = dax_insert_entry(
        dax,
        p,
        vmf,
        xas,
        iomap_flags,
        iomap,
        *entry,
        pfn,
        entry_flags,
    )
    .await;
    // (write over shared blocks: the kernel's dax_iomap_copy_around copies the source here.
    // The DAX core is generic over `Platform`, which has no memory ops, so the copy is the file
    // system's: daxfs's iomap_begin copies the whole faulting range for an IOMAP_FAULT write
    // before it answers; the test iomap keeps no contents.)
    if dax_fault_is_synchronous(dax, iomap_flags, vmf.vma, iomap) {
        // dax_fault_synchronous_pfnp
        *pfnp = Some(pfn);
        return VmFault::NEEDDSYNC;
    }
    if pmd {
        vmf_insert_folio_pmd(p, &dax.world, vmf.mm, &vmf.vma.b, vmf.address, pfn, write).await
    } else {
        vmf_insert_page_mkwrite(p, &dax.world, vmf.mm, &vmf.vma.b, vmf.address, pfn, write).await
    }
}

/// `dax_iomap_pte_fault`.
pub async fn dax_iomap_pte_fault<P: Platform, I: IomapOps<P>>(
    dax: &Dax<P>,
    p: &P,
    vmf: &Vmf<'_, P>,
    pfnp: &mut Option<Pfn>,
    ops: &I,
) -> VmFault {
    let _fn = p.enter_fn("dax_iomap_pte_fault");
    let mapping = vmf.mapping();
    let mut xas = XaState::new(vmf.pgoff);
    let pos = vmf.pgoff << PAGE_SHIFT;
    // The caller holds the locks that serialise us with truncate and hole punch, so this test
    // is reliable.
    if pos >= ops.i_size(p).await {
        return VmFault::SIGBUS;
    }
    let mut flags = IOMAP_DAX | IOMAP_FAULT;
    if vmf.write() && vmf.cow_page.is_none() {
        flags |= IOMAP_WRITE;
    }
    let mut entry = match grab_mapping_entry(dax, p, mapping, &mut xas, 0).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    // A PMD fault on the same range may have mapped a huge page meanwhile (mixed reads and
    // writes of a private mapping): return, the access is retried. pmd-pte-collide (before
    // 4.12): no recheck once the entry lock is held.
    if !dax.bug(DaxBug::PmdPteCollide)
        && matches!(
            vmf.mm.pmdp_get_lockless(p, vmf.address).await,
            PmdVal::Huge(_)
        )
    {
        fault_unlock_entry(dax, p, mapping, &mut xas, entry).await;
        return VmFault::NOPAGE;
    }
    let ret = match ops.iomap_begin(p, pos, PAGE_SIZE, flags).await {
        Err(e) => dax_fault_return(e),
        Ok(iomap) => {
            let mut ret;
            if iomap.iomap.length < PAGE_SIZE || iomap.iomap.offset > pos {
                warn_on(p, true, "dax-short-iomap", || {
                    format!("iomap_begin({pos:#x}) returned {:?}", iomap.iomap)
                })
                .await;
                ret = VmFault::SIGBUS;
            } else {
                ret = dax_fault_iter(
                    dax, p, vmf, flags, &iomap, pfnp, &mut xas, &mut entry, false,
                )
                .await;
                if ret != VmFault::SIGBUS && iomap.iomap.has(IOMAP_F_NEW) {
                    ret = ret | VmFault::MAJOR;
                }
            }
            let written = if ret.is_error() { 0 } else { PAGE_SIZE };
            if let Err(e) = ops
                .iomap_end(p, pos, PAGE_SIZE, written, flags, &iomap.iomap)
                .await
                && ret.0 == 0
            {
                ret = dax_fault_return(e);
            }
            ret
        }
    };
    fault_unlock_entry(dax, p, mapping, &mut xas, entry).await;
    ret
}

/// `dax_fault_check_fallback`: the conditions under which a PMD fault is not even tried.
pub fn dax_fault_check_fallback<P: Platform>(
    vmf: &Vmf<'_, P>,
    xas: &XaState,
    max_pgoff: u64,
) -> bool {
    let pmd_addr = vmf.address & !(PMD_SIZE - 1);
    // The PMD offset (colour) of the address and of the file offset must match, so that a PMD
    // of the page table covers exactly a PMD entry of the xarray.
    if (vmf.pgoff & PG_PMD_COLOUR) != ((vmf.address >> PAGE_SHIFT) & PG_PMD_COLOUR) {
        return true;
    }
    // A private write copies: PTEs.
    if vmf.write() && !vmf.vma.b.shared() {
        return true;
    }
    // The PMD would extend outside the VMA.
    if pmd_addr < vmf.vma.b.vm_start || pmd_addr + PMD_SIZE > vmf.vma.b.vm_end {
        return true;
    }
    // The PMD would extend beyond the end of the file.
    (xas.xa_index | PG_PMD_COLOUR) >= max_pgoff
}

/// `dax_iomap_pmd_fault`. On `FALLBACK` the huge PMD is split (`split_huge_pmd`) and the mm
/// retries the fault with PTEs.
pub async fn dax_iomap_pmd_fault<P: Platform, I: IomapOps<P>>(
    dax: &Dax<P>,
    p: &P,
    vmf: &Vmf<'_, P>,
    pfnp: &mut Option<Pfn>,
    ops: &I,
) -> VmFault {
    let _fn = p.enter_fn("dax_iomap_pmd_fault");
    let mapping = vmf.mapping();
    let mut xas = XaState::new_order(vmf.pgoff, PMD_ORDER);
    let mut flags = IOMAP_DAX | IOMAP_FAULT;
    if vmf.write() {
        flags |= IOMAP_WRITE;
    }
    let max_pgoff = ops.i_size(p).await.div_ceil(PAGE_SIZE);
    if xas.xa_index >= max_pgoff {
        return VmFault::SIGBUS;
    }
    let mut ret = VmFault::FALLBACK;
    'fallback: {
        if dax_fault_check_fallback(vmf, &xas, max_pgoff) {
            break 'fallback;
        }
        // An empty PMD entry, a zero PMD entry or a block PMD entry; FALLBACK when a PTE entry
        // is in the range.
        let mut entry = match grab_mapping_entry(dax, p, mapping, &mut xas, PMD_ORDER).await {
            Ok(e) => e,
            Err(r) => {
                ret = r;
                break 'fallback;
            }
        };
        // A PTE fault on the same range may have installed a page table meanwhile: return,
        // the access is retried. pmd-pte-collide (before 4.12): no recheck.
        if !dax.bug(DaxBug::PmdPteCollide)
            && vmf.mm.pmdp_get_lockless(p, vmf.address).await == PmdVal::Table
        {
            ret = VmFault(0);
        } else {
            let pos = xas.xa_index << PAGE_SHIFT;
            if let Ok(iomap) = ops.iomap_begin(p, pos, PMD_SIZE, flags).await {
                if iomap.iomap.length >= PMD_SIZE && iomap.iomap.offset == pos {
                    ret = dax_fault_iter(
                        dax, p, vmf, flags, &iomap, pfnp, &mut xas, &mut entry, true,
                    )
                    .await;
                }
                let written = if ret == VmFault::FALLBACK || ret.is_error() {
                    0
                } else {
                    PMD_SIZE
                };
                let _ = ops
                    .iomap_end(p, pos, PMD_SIZE, written, flags, &iomap.iomap)
                    .await;
            }
        }
        fault_unlock_entry(dax, p, mapping, &mut xas, entry).await;
    }
    if ret == VmFault::FALLBACK {
        split_huge_pmd(p, &dax.world, vmf.mm, vmf.address).await;
    }
    ret
}

/// `dax_iomap_fault(vmf, order, &pfn, &err, ops)`: order 0 is a PTE fault, `PMD_ORDER` a PMD
/// fault, anything else falls back. Returns the VM_FAULT code and, with `NEEDDSYNC`, the pfn
/// to map once the metadata is durable. The caller holds `invalidate_lock` shared.
pub async fn dax_iomap_fault<P: Platform, I: IomapOps<P>>(
    dax: &Dax<P>,
    p: &P,
    vmf: &Vmf<'_, P>,
    order: u8,
    ops: &I,
) -> (VmFault, Option<Pfn>) {
    let _fn = p.enter_fn("dax_iomap_fault");
    let mut pfn = None;
    let ret = match order {
        0 => dax_iomap_pte_fault(dax, p, vmf, &mut pfn, ops).await,
        PMD_ORDER => dax_iomap_pmd_fault(dax, p, vmf, &mut pfn, ops).await,
        _ => VmFault::FALLBACK,
    };
    (ret, pfn)
}

/// `dax_insert_pfn_mkwrite(vmf, pfn, order)`: after the sync of a MAP_SYNC fault, relock the
/// entry, mark it DIRTY and map `pfn` writable. NOPAGE (and nothing mapped) if the entry went
/// away or changed size meanwhile; the access is retried.
pub async fn dax_insert_pfn_mkwrite<P: Platform>(
    dax: &Dax<P>,
    p: &P,
    vmf: &Vmf<'_, P>,
    pfn: Pfn,
    order: u8,
) -> VmFault {
    let _fn = p.enter_fn("dax_insert_pfn_mkwrite");
    let mapping = vmf.mapping();
    let mut xas = XaState::new_order(vmf.pgoff, order);
    let xa = mapping.i_pages.lock(p).await;
    let (mut xa, entry) = get_next_unlocked_entry(dax, p, mapping, xa, &mut xas, order).await;
    // Did we race with someone splitting the entry?
    if entry.is_null() || dax_is_conflict(entry) || (order == 0 && !dax_is_pte_entry(entry)) {
        put_unlocked_entry(dax, p, mapping, &xas, entry, WakeMode::Next).await;
        xa.release(dax.release_steps).await;
        // dax_insert_pfn_mkwrite_no_entry
        return VmFault::NOPAGE;
    }
    xa.xas_set_mark(&xas, PAGECACHE_TAG_DIRTY);
    dax_lock_entry(&mut xa, &mut xas, entry);
    xa.release(dax.release_steps).await;
    let ret = if order == 0 {
        vmf_insert_page_mkwrite(p, &dax.world, vmf.mm, &vmf.vma.b, vmf.address, pfn, true).await
    } else if order == PMD_ORDER {
        vmf_insert_folio_pmd(p, &dax.world, vmf.mm, &vmf.vma.b, vmf.address, pfn, true).await
    } else {
        VmFault::FALLBACK
    };
    dax_unlock_entry(dax, p, mapping, &mut xas, entry).await;
    ret
}

/// `dax_finish_sync_fault(vmf, order, pfn)`: make the metadata of the faulted range durable
/// (`vfs_fsync_range`, SIGBUS on error), then map the pfn writable.
pub async fn dax_finish_sync_fault<P: Platform, I: IomapOps<P>>(
    dax: &Dax<P>,
    p: &P,
    vmf: &Vmf<'_, P>,
    order: u8,
    pfn: Pfn,
    ops: &I,
) -> VmFault {
    let _fn = p.enter_fn("dax_finish_sync_fault");
    let start = vmf.pgoff << PAGE_SHIFT;
    let len = PAGE_SIZE << order;
    if ops
        .fsync_range(p, start, start + len - 1, true)
        .await
        .is_err()
    {
        return VmFault::SIGBUS;
    }
    dax_insert_pfn_mkwrite(dax, p, vmf, pfn, order).await
}

/// The file system's `->huge_fault` / `->fault` / `->pfn_mkwrite` for a DAX inode
/// (`xfs_dax_fault_locked` under `xfs_dax_read_fault`/`xfs_write_fault`): `invalidate_lock`
/// shared around `dax_iomap_fault`, and the sync of a MAP_SYNC fault.
pub async fn dax_fs_fault<P: Platform, I: IomapOps<P>>(
    dax: &Dax<P>,
    p: &P,
    vmf: &Vmf<'_, P>,
    order: u8,
    ops: &I,
) -> VmFault {
    let _fn = p.enter_fn("->huge_fault");
    // xfs_write_fault (a write through a shared mapping, `xfs_is_write_fault`):
    // sb_start_pagefault, then file_update_time, before invalidate_lock.
    if vmf.write() && vmf.vma.b.shared() {
        ops.file_update_time(p).await;
    }
    // Bug mode no-mmaplock: no invalidate_lock, so nothing keeps a truncate or hole punch
    // from freeing the blocks between this fault's iomap_begin and its page-table update.
    let il = if dax.bug(DaxBug::NoMmaplock) {
        None
    } else {
        Some(vmf.mapping().invalidate_lock.read(p).await)
    };
    let (mut ret, pfn) = dax_iomap_fault(dax, p, vmf, order, ops).await;
    if ret.contains(VmFault::NEEDDSYNC) {
        ret = match pfn {
            Some(pfn) => dax_finish_sync_fault(dax, p, vmf, order, pfn, ops).await,
            None => VmFault::SIGBUS,
        };
    }
    if let Some(il) = il {
        il.release(dax.release_steps).await;
    }
    ret
}

/// The generic part of `handle_mm_fault` for a DAX file VMA, with `mmap_lock` held shared by
/// the caller: a huge fault when the PMD is none and huge pages are allowed (falling back to
/// PTEs), a write-protect fault on a huge PMD (shared: the file system makes it writable;
/// private: split and fall back), and at the PTE level a read fault, a copy-on-write fault
/// (`do_cow_fault`, private write to nothing), a shared write, or a write-protect fault
/// (`pfn_mkwrite` for a shared VMA; `wp_page_copy` for a private one).
pub async fn dax_handle_mm_fault<P: Platform, I: IomapOps<P>>(
    dax: &Dax<P>,
    p: &P,
    mm: &MmStruct<P>,
    vma: &Vma<P>,
    address: u64,
    write: bool,
    ops: &I,
) -> VmFault {
    let _fn = p.enter_fn("handle_mm_fault");
    let flags = FAULT_FLAG_USER | if write { FAULT_FLAG_WRITE } else { 0 };
    let mut vmf = Vmf::new(mm, vma, address, flags);
    let mut pmd = mm.pmdp_get_lockless(p, address).await;
    match pmd {
        PmdVal::None if vma.b.huge_allowed() => {
            // create_huge_pmd
            let ret = dax_fs_fault(dax, p, &vmf, PMD_ORDER, ops).await;
            if !ret.contains(VmFault::FALLBACK) {
                return ret;
            }
            pmd = mm.pmdp_get_lockless(p, address).await;
        }
        PmdVal::Huge(huge) if write && !huge.write() => {
            // wp_huge_pmd
            if vma.b.shared() {
                vmf.flags |= FAULT_FLAG_MKWRITE;
                let ret = dax_fs_fault(dax, p, &vmf, PMD_ORDER, ops).await;
                if !ret.contains(VmFault::FALLBACK) {
                    return ret;
                }
                vmf.flags &= !FAULT_FLAG_MKWRITE;
            }
            split_huge_pmd(p, &dax.world, mm, address).await;
            pmd = mm.pmdp_get_lockless(p, address).await;
        }
        PmdVal::Huge(_) => return VmFault(0), // spurious: huge_pmd_set_accessed
        _ => {}
    }
    // handle_pte_fault: where the PMD is none there is no PTE to read (the read of the PMD
    // above stands for the kernel's two reads, with nothing of this task in between).
    let pte = match pmd {
        PmdVal::Table => mm.ptep_get_lockless(p, address).await.unwrap_or_default(),
        PmdVal::None => Default::default(),
        // A huge PMD appeared meanwhile: retry the access.
        PmdVal::Huge(_) => return VmFault(0),
    };
    if !pte.present() {
        if write && !vma.b.shared() {
            // do_cow_fault: the copy goes into a new anonymous page.
            vmf.cow_page = Some(dax.alloc_anon_page(p).await);
        }
        return dax_fs_fault(dax, p, &vmf, 0, ops).await;
    }
    if write && !pte.write() {
        if vma.b.shared() {
            // wp_pfn_shared / wp_page_shared: the file system makes it writable.
            vmf.flags |= FAULT_FLAG_MKWRITE;
            return dax_fs_fault(dax, p, &vmf, 0, ops).await;
        }
        // wp_page_copy: a private copy of the mapped page.
        let cow = dax.alloc_anon_page(p).await;
        let ret = vmf_insert_anon_page(p, &dax.world, mm, &vma.b, address, cow).await;
        return if ret == VmFault::NOPAGE {
            VmFault(0)
        } else {
            ret
        };
    }
    VmFault(0) // spurious
}

/// [`dax_handle_mm_fault`] as the `handle_mm_fault` GUP's slow path calls.
pub struct DaxFaultHandler<'a, P: Platform, I: IomapOps<P>> {
    pub dax: &'a Dax<P>,
    pub ops: &'a I,
}

impl<P: Platform, I: IomapOps<P>> crate::gup::FaultHandler<P> for DaxFaultHandler<'_, P, I> {
    async fn handle_mm_fault(
        &self,
        p: &P,
        _world: &crate::world::MmWorld<P>,
        mm: &MmStruct<P>,
        vma: &Vma<P>,
        address: u64,
        write: bool,
    ) -> VmFault {
        dax_handle_mm_fault(self.dax, p, mm, vma, address, write, self.ops).await
    }
}

/// What a user access ended with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    /// Translated to this pfn (huge: through a PMD).
    Mapped { pfn: Pfn, huge: bool },
    /// The fault failed with this code (SIGBUS, OOM, ...).
    Failed(VmFault),
}

/// A user load or store at `address`: the CPU's walk, and on a fault `handle_mm_fault` under
/// `mmap_lock` (shared) and a retry, as the page-fault handler does; at most `16` faults.
pub async fn dax_user_access<P: Platform, I: IomapOps<P>>(
    dax: &Dax<P>,
    p: &P,
    mm: &MmStruct<P>,
    address: u64,
    write: bool,
    ops: &I,
) -> Access {
    let _fn = p.enter_fn("exc_page_fault");
    use crate::mm::HwAccess;
    for _ in 0..16 {
        if let HwAccess::Mapped { pfn, huge } = mm.hw_access(p, address, write).await {
            return Access::Mapped { pfn, huge };
        }
        let vmas = mm.mmap_lock.read(p).await;
        let ret = match vmas.vma_lookup(address) {
            None => VmFault::SIGSEGV,
            Some(vma) if write && !vma.b.writable() => VmFault::SIGSEGV,
            Some(vma) => dax_handle_mm_fault(dax, p, mm, vma, address, write, ops).await,
        };
        vmas.release(dax.release_steps).await;
        if ret.is_error() {
            return Access::Failed(ret);
        }
    }
    warn_on(p, true, "dax-fault-livelock", || {
        format!("access at {address:#x}: 16 faults and still not mapped")
    })
    .await;
    Access::Failed(VmFault::SIGBUS)
}
