//! Invalidation, truncate and layout breaking (research/linux_dax.md section 6).
//!
//! - [`__dax_invalidate_entry`] waits for the entry at an index to be unlocked and removes it:
//!   always for truncate ([`dax_delete_mapping_entry`]), only when clean for
//!   `invalidate_inode_pages2` ([`dax_invalidate_mapping_entry_sync`]). The entry vanishes, so
//!   every waiter of its key is woken (`WAKE_ALL`): each of them must see that it is gone.
//! - [`dax_layout_busy_page_range`] finds a page of the range that something other than a page
//!   table still references (a GUP pin for DMA). It unmaps the range *first* and scans after:
//!   GUP-fast either took its reference before the unmap (the scan sees it) or sees its PTE
//!   change on its recheck and backs off to the slow path, which needs a mapping and so a
//!   fault, which the file system's invalidate_lock (held exclusively here) keeps out.
//! - [`dax_break_layout`] is the loop a file system drives before freeing or moving blocks:
//!   scan, wait for the busy page to go idle (through the file system's callback, which drops
//!   and retakes its own locks), scan again, and once nothing is busy delete the entries.
//!   [`dax_layout_wait_idle`] is the same wait without the deletion: daxfs waits over the whole
//!   file and deletes only the entries of the range it changes (see sim-fs `file.rs`).
//!
//! Also here: the page-cache eviction of a (4.x hole) page from a DAX mapping,
//! [`madvise_pageout`] and [`__remove_mapping`], where the kernel decides not to leave a
//! workingset shadow entry in a DAX mapping (bug mode `shadow-entries`), and the removal of
//! such a page by invalidation and truncate ([`dax_lock_hole_page`]).

use super::entry::{
    XaGuard, dax_disassociate_entry, dax_lock_entry, get_next_unlocked_entry, put_unlocked_entry,
    wait_entry_unlocked_exclusive,
};
use super::writeback::XA_CHECK_SCHED;
use super::{Dax, DaxBug, Release};
use crate::dax_entry::{
    DAX_EMPTY, PAGE_SHIFT, PAGE_SIZE, dax_entry_nr_pfns, dax_entry_order, dax_is_empty_entry,
    dax_is_zero_entry, dax_make_entry, dax_to_pfn,
};
use crate::mm::{MmStruct, unmap_mapping_pages};
use crate::pgtable::is_pagecache_pfn;
use crate::world::AddressSpace;
use crate::xarray::{
    PAGECACHE_TAG_DIRTY, PAGECACHE_TAG_TOWRITE, XaEntry, XaOps, XaState, xa_mk_value,
};
use crate::{Errno, Pfn};
use sim_core::platform::warn_on;
use sim_core::{Platform, WakeMode};
use std::future::Future;

/// `LLONG_MAX`: "to the end of the file" as a byte offset.
pub const LLONG_MAX: u64 = i64::MAX as u64;

/// `__dax_invalidate_entry(mapping, index, trunc)`: remove the entry at `index` once it is
/// unlocked; without `trunc`, keep it when it is dirty (`DIRTY` or `TOWRITE`). Returns whether
/// an entry was removed.
pub async fn __dax_invalidate_entry<P: Platform>(
    dax: &Dax<P>,
    p: &P,
    mapping: &AddressSpace<P>,
    index: u64,
    trunc: bool,
) -> bool {
    let mut xas = XaState::new(index);
    let xa = mapping.i_pages.lock(p).await;
    let (mut xa, mut entry) = get_next_unlocked_entry(dax, p, mapping, xa, &mut xas, 0).await;
    if is_hole_page(dax, entry) {
        // invalidate_inode_pages2_range / truncate_inode_pages_range on a 4.x hole page: lock
        // and unmap it; it is clean, so it goes in both cases.
        entry = dax_lock_hole_page(dax, p, mapping, xa, &mut xas).await;
        xa = mapping.i_pages.lock(p).await;
        xas.reset();
    }
    let mut removed = false;
    if !entry.is_null()
        && !warn_on(p, !entry.is_value(), "dax-invalidate-non-value", || {
            format!(
                "__dax_invalidate_entry: ino {} index {index:#x} holds {entry:?}",
                mapping.host
            )
        })
        .await
        && (trunc
            || !(xa.xas_get_mark(&xas, PAGECACHE_TAG_DIRTY)
                || xa.xas_get_mark(&xas, PAGECACHE_TAG_TOWRITE)))
    {
        dax_disassociate_entry(dax, p, mapping, entry, trunc).await;
        xa.xas_store(&mut xas, XaEntry::NULL);
        xa.nrpages_add(-(1i64 << dax_entry_order(entry)));
        removed = true;
    }
    // The entry may be gone: every waiter must look again (237388320def). With WAKE_NEXT
    // (invalidate-wake-next, before 5.13) the one woken waiter finds the entry gone and need not
    // pass the wake-up on (an invalidator finds NULL; a fault waiting on a PMD entry makes a PTE
    // entry, whose unlock wakes its own index), and the others sleep forever.
    let mode = if dax.bug(DaxBug::InvalidateWakeNext) {
        WakeMode::Next
    } else {
        WakeMode::All
    };
    put_unlocked_entry(dax, p, mapping, &xas, entry, mode).await;
    xa.release(dax.release_steps).await;
    removed
}

/// `dax_delete_mapping_entry(mapping, index)` (truncate, hole punch): remove the entry at
/// `index`, dirty or not. The caller saw a DAX entry there and holds the locks that keep new
/// ones out (invalidate_lock exclusive), so finding none is a WARN.
pub async fn dax_delete_mapping_entry<P: Platform>(
    dax: &Dax<P>,
    p: &P,
    mapping: &AddressSpace<P>,
    index: u64,
) -> bool {
    let ret = __dax_invalidate_entry(dax, p, mapping, index, true).await;
    warn_on(p, !ret, "dax-delete-no-entry", || {
        format!(
            "dax_delete_mapping_entry: ino {} index {index:#x}: no entry",
            mapping.host
        )
    })
    .await;
    ret
}

/// `dax_invalidate_mapping_entry_sync(mapping, index)` (`invalidate_inode_pages2_range`):
/// remove the entry at `index` only if it is clean.
pub async fn dax_invalidate_mapping_entry_sync<P: Platform>(
    dax: &Dax<P>,
    p: &P,
    mapping: &AddressSpace<P>,
    index: u64,
) -> bool {
    __dax_invalidate_entry(dax, p, mapping, index, false).await
}

/// Page indices of the byte range `start ..= end` (`LLONG_MAX`: to the end of the file).
fn index_range(start: u64, end: u64) -> (u64, u64) {
    let end_idx = if end == LLONG_MAX {
        u64::MAX
    } else {
        end >> PAGE_SHIFT
    };
    (start >> PAGE_SHIFT, end_idx)
}

/// `dax_busy_page(entry)`: the first page of a block-backed entry referenced by more than its
/// mappings (6.15+: `folio_ref_count - folio_mapcount`; the model keeps the counts per page).
async fn dax_busy_page<P: Platform>(dax: &Dax<P>, p: &P, entry: XaEntry) -> Option<Pfn> {
    if dax_is_zero_entry(entry) || dax_is_empty_entry(entry) {
        return None;
    }
    let mut busy = None;
    dax.world
        .memmap
        .update(p, dax_to_pfn(entry), dax_entry_nr_pfns(entry), |pfn, pg| {
            if busy.is_none() && pg.extra_refs() > 0 {
                busy = Some(pfn);
            }
        })
        .await;
    busy
}

/// The first index after the entry `entry` found at `index`.
fn entry_end(index: u64, entry: XaEntry) -> u64 {
    let count = 1u64 << dax_entry_order(entry);
    (index & !(count - 1)) + count
}

/// `dax_layout_busy_page_range(mapping, start, end)`: unmap the byte range `start ..= end`,
/// then return the first page of it that is still busy (pinned), waiting for each locked entry
/// to be unlocked before looking at its pages. The caller holds the file system's locks that
/// keep new mappings out (invalidate_lock exclusive).
pub async fn dax_layout_busy_page_range<P: Platform>(
    dax: &Dax<P>,
    p: &P,
    mapping: &AddressSpace<P>,
    start: u64,
    end: u64,
) -> Option<Pfn> {
    let (start_idx, end_idx) = index_range(start, end);
    // Unmap first: GUP-fast either took its reference before this (the scan sees it), or sees
    // the PTE change on its recheck and falls back to the slow path, which takes references
    // only under the page-table lock, on a present mapping.
    let nr = end_idx.saturating_sub(start_idx).saturating_add(1);
    unmap_mapping_pages(p, &dax.world, mapping, start_idx, nr, false).await;

    let mut xas = XaState::new(start_idx);
    let mut xa: XaGuard<'_, P> = mapping.i_pages.lock(p).await;
    let mut page = None;
    let mut scanned = 0u64;
    loop {
        let mut entry = xa.xas_find(&mut xas, end_idx);
        if entry.is_null() {
            break;
        }
        let next = entry_end(xas.xa_index, entry);
        // A 4.x hole page (shadow-entries) is DRAM: never pinned for DMA into the file.
        if !is_hole_page(dax, entry)
            && !warn_on(p, !entry.is_value(), "dax-busy-non-value", || {
                format!(
                    "dax_layout_busy_page_range: ino {} index {:#x} holds {entry:?}",
                    mapping.host, xas.xa_index
                )
            })
            .await
        {
            if dax.bug(DaxBug::BusyScanSkipsLocked) {
                // Before 6.15: get_unlocked_entry with the iteration's xa_state, whose
                // xas_find_conflict looks past the current entry: a locked entry comes back as
                // NULL and its pages are never looked at.
                if crate::dax_entry::dax_is_locked(entry) {
                    (xa, entry) = get_next_unlocked_entry(dax, p, mapping, xa, &mut xas, 0).await;
                }
            } else {
                (xa, entry) =
                    wait_entry_unlocked_exclusive(dax, p, mapping, xa, &mut xas, entry).await;
            }
            if !entry.is_null() {
                page = dax_busy_page(dax, p, entry).await;
            }
            put_unlocked_entry(dax, p, mapping, &xas, entry, WakeMode::Next).await;
            if page.is_some() {
                break;
            }
        }
        xas.set(next);
        scanned += 1;
        if scanned.is_multiple_of(XA_CHECK_SCHED) {
            xa.release(dax.release_steps).await;
            xa = mapping.i_pages.lock(p).await;
        }
    }
    xa.release(dax.release_steps).await;
    page
}

/// `dax_layout_busy_page(mapping)`: the whole file.
pub async fn dax_layout_busy_page<P: Platform>(
    dax: &Dax<P>,
    p: &P,
    mapping: &AddressSpace<P>,
) -> Option<Pfn> {
    dax_layout_busy_page_range(dax, p, mapping, 0, LLONG_MAX).await
}

/// `dax_delete_mapping_range(mapping, start, end)`: remove every entry of the byte range once
/// it is unlocked, dirty or not (layout breaking already unmapped it and waited for pins).
pub async fn dax_delete_mapping_range<P: Platform>(
    dax: &Dax<P>,
    p: &P,
    mapping: &AddressSpace<P>,
    start: u64,
    end: u64,
) {
    let (start_idx, end_idx) = index_range(start, end);
    let mut xas = XaState::new(start_idx);
    let mut xa = mapping.i_pages.lock(p).await;
    loop {
        let found = xa.xas_find(&mut xas, end_idx);
        if found.is_null() {
            break;
        }
        let next = entry_end(xas.xa_index, found);
        if is_hole_page(dax, found) {
            // truncate_inode_pages_range on a 4.x hole page: lock and unmap it, delete it.
            let entry = dax_lock_hole_page(dax, p, mapping, xa, &mut xas).await;
            xa = mapping.i_pages.lock(p).await;
            xas.reset();
            xa.xas_store(&mut xas, XaEntry::NULL);
            xa.nrpages_add(-1);
            put_unlocked_entry(dax, p, mapping, &xas, entry, WakeMode::All).await;
        } else if found.is_value() {
            let entry;
            (xa, entry) = wait_entry_unlocked_exclusive(dax, p, mapping, xa, &mut xas, found).await;
            if !entry.is_null() {
                dax_disassociate_entry(dax, p, mapping, entry, true).await;
                xa.xas_store(&mut xas, XaEntry::NULL);
                xa.nrpages_add(-(1i64 << dax_entry_order(entry)));
                put_unlocked_entry(dax, p, mapping, &xas, entry, WakeMode::All).await;
            }
        }
        xas.set(next);
    }
    xa.release(dax.release_steps).await;
}

/// What a file system does while [`dax_break_layout`] waits for a busy page (`cb` of
/// `dax_break_layout`; XFS's `xfs_wait_dax_page` drops MMAPLOCK, sleeps, retakes it).
pub trait WaitPageIdle<P: Platform> {
    /// Wait until `pfn` is idle (`dax_page_is_idle`); an error stops the layout breaking
    /// (`-ERESTARTSYS` on a signal).
    fn wait_page_idle(
        &self,
        p: &P,
        dax: &Dax<P>,
        pfn: Pfn,
    ) -> impl Future<Output = Result<(), Errno>>;
}

/// The plain wait, for callers that hold no lock a pin holder could need.
pub struct WaitIdle;

impl<P: Platform> WaitPageIdle<P> for WaitIdle {
    async fn wait_page_idle(&self, p: &P, dax: &Dax<P>, pfn: Pfn) -> Result<(), Errno> {
        dax.world.memmap.wait_pages_idle(p, pfn, 1).await;
        Ok(())
    }
}

/// The wait of layout breaking without the deletion: unmap the byte range `start ..= end` and
/// wait until no page of it is busy (the loop XFS's `xfs_break_dax_layouts` ran before 6.15:
/// `dax_layout_busy_page`, then `dax_wait_page_idle` with `xfs_wait_dax_page`). Returns
/// whether the range is idle, with the error that stopped the wait (without a waiter, the first
/// busy page is `-ERESTARTSYS`). The entries stay: the operation deletes those of the range it
/// changes ([`dax_delete_mapping_range`]), so dirty entries elsewhere keep what fsync needs.
pub async fn dax_layout_wait_idle<P: Platform, W: WaitPageIdle<P>>(
    dax: &Dax<P>,
    p: &P,
    mapping: &AddressSpace<P>,
    start: u64,
    end: u64,
    cb: Option<&W>,
) -> (bool, Result<(), Errno>) {
    loop {
        let Some(pfn) = dax_layout_busy_page_range(dax, p, mapping, start, end).await else {
            return (true, Ok(()));
        };
        let Some(cb) = cb else {
            return (false, Err(Errno::ERESTARTSYS));
        };
        let error = cb.wait_page_idle(p, dax, pfn).await;
        if error.is_err() {
            return (false, error);
        }
    }
}

/// `dax_break_layout(inode, start, end, cb)` (6.15): before blocks of the byte range are freed
/// or moved, unmap the range and wait until no page of it is busy
/// ([`dax_layout_wait_idle`]), then delete its entries, dirty or not. Without a waiter
/// (`cb == NULL`) the first busy page ends it with `-ERESTARTSYS`.
pub async fn dax_break_layout<P: Platform, W: WaitPageIdle<P>>(
    dax: &Dax<P>,
    p: &P,
    mapping: &AddressSpace<P>,
    start: u64,
    end: u64,
    cb: Option<&W>,
) -> Result<(), Errno> {
    let (idle, error) = dax_layout_wait_idle(dax, p, mapping, start, end, cb).await;
    if idle {
        dax_delete_mapping_range(dax, p, mapping, start, end).await;
    }
    error
}

/// `dax_break_layout_final(inode)` (eviction): wait, uninterruptibly, until no page of the
/// file is busy, then delete every entry.
pub async fn dax_break_layout_final<P: Platform>(dax: &Dax<P>, p: &P, mapping: &AddressSpace<P>) {
    while let Some(pfn) = dax_layout_busy_page_range(dax, p, mapping, 0, LLONG_MAX).await {
        dax.world.memmap.wait_pages_idle(p, pfn, 1).await;
    }
    dax_delete_mapping_range(dax, p, mapping, 0, LLONG_MAX).await;
}

/// Whether `entry` is a 4.x hole page (a page-cache page in a DAX mapping), which only bug mode
/// `shadow-entries` creates ([`super::fault::dax_load_hole`]).
pub fn is_hole_page<P: Platform>(dax: &Dax<P>, entry: XaEntry) -> bool {
    entry.is_pointer() && dax.bug(DaxBug::ShadowEntries)
}

/// A 4.x hole page found at `xas` (i_pages lock held, `xa`) is taken out of the way, as
/// `lock_page` + `unmap_mapping_range` did before the page was deleted or replaced by a block
/// entry: its slot gets a locked empty DAX entry (the model's page lock: hole pages have no
/// struct page; waiters sleep on the entry's key as on any locked entry), the i_pages lock is
/// dropped and every mapping of the index is zapped. Returns the (unlocked form of the) locked
/// empty entry the caller now owns, without the i_pages lock. `nrpages` is unchanged: one page
/// for one empty entry.
pub async fn dax_lock_hole_page<P: Platform>(
    dax: &Dax<P>,
    p: &P,
    mapping: &AddressSpace<P>,
    mut xa: XaGuard<'_, P>,
    xas: &mut XaState,
) -> XaEntry {
    let _fn = p.enter_fn("lock_page");
    let index = xas.xa_index;
    let empty = dax_make_entry(0, DAX_EMPTY);
    let old = dax_lock_entry(&mut xa, xas, empty);
    xa.release(dax.release_steps).await;
    warn_on(p, !old.is_pointer(), "dax-hole-page-changed", || {
        format!(
            "lock_page: ino {} index {index:#x}: found {old:?}, not a hole page",
            mapping.host
        )
    })
    .await;
    // Nothing maps the page afterwards: a fault that finds the locked entry waits for it.
    unmap_mapping_pages(p, &dax.world, mapping, index, 1, false).await;
    empty
}

/// `MEM_CGROUP_ID_SHIFT`, `NODES_SHIFT` (x86-64 defconfig) and `WORKINGSET_SHIFT` of
/// mm/workingset.c.
const MEM_CGROUP_ID_SHIFT: u32 = 16;
const NODES_SHIFT: u32 = 6;
const WORKINGSET_SHIFT: u32 = 1;

/// `pack_shadow(memcgid, pgdat, eviction, workingset)`: a workingset shadow entry, a *value*
/// entry like a DAX entry, whose low bit says whether the folio was in the workingset (and
/// lands on `DAX_LOCKED` when misread as a DAX entry).
pub fn pack_shadow(memcg_id: u16, node: u32, eviction: u64, workingset: bool) -> XaEntry {
    let mut v = (eviction << MEM_CGROUP_ID_SHIFT) | memcg_id as u64;
    v = (v << NODES_SHIFT) | node as u64;
    v = (v << WORKINGSET_SHIFT) | workingset as u64;
    xa_mk_value(v)
}

/// `__remove_mapping(mapping, folio, reclaimed)` for the page-cache folio `pfn` at `index` of a
/// DAX mapping (the 4.x DAX hole page of bug mode `shadow-entries`): reclaim replaces it with a
/// workingset shadow entry, except in a DAX mapping (`!dax_mapping(mapping)`, f9fe48bece3a),
/// where a shadow would be misread as a DAX entry. Bug mode `shadow-entries` leaves the
/// shadow. `eviction` and `workingset` stand for the LRU's nonresident age and the folio's
/// workingset bit. Returns whether the folio was there (the kernel's folio lock and refcount
/// freeze: a slot that no longer holds this folio is left alone).
///
/// The shadow is counted in `nrpages` while it is there, as the 4.x kernel counted shadow and
/// DAX entries together in `nrexceptional`: the model's `nrpages` counts every entry.
pub async fn __remove_mapping<P: Platform>(
    dax: &Dax<P>,
    p: &P,
    mapping: &AddressSpace<P>,
    index: u64,
    pfn: Pfn,
    eviction: u64,
    workingset: bool,
) -> bool {
    let _fn = p.enter_fn("__remove_mapping");
    let mut xa = mapping.i_pages.lock(p).await;
    let mut xas = XaState::new(index);
    let folio = xa.xas_load(&mut xas);
    if folio != XaEntry::from_folio_pfn(pfn) {
        xa.release(dax.release_steps).await;
        return false;
    }
    // Every mapping of the model is a DAX mapping (`dax_mapping(mapping)`).
    let shadow = if dax.bug(DaxBug::ShadowEntries) {
        pack_shadow(0, 0, eviction, workingset)
    } else {
        XaEntry::NULL
    };
    // __filemap_remove_folio -> page_cache_delete: the folio goes, the shadow (if any) stays.
    xa.xas_store(&mut xas, shadow);
    xa.xas_init_marks(&xas);
    if shadow.is_null() {
        xa.nrpages_add(-1);
    }
    xa.release(dax.release_steps).await;
    true
}

/// `madvise(MADV_PAGEOUT)` over `[start, start + len)` of `mm` (`madvise_cold_or_pageout_pte_range`
/// then `reclaim_pages`): every page-cache page the range maps is unmapped everywhere
/// (`try_to_unmap`) and evicted (`__remove_mapping(reclaimed = true)`), references ignored.
/// Returns the number of pages evicted.
///
/// On today's DAX core this evicts nothing: DAX pages are ZONE_DEVICE pages, never on an LRU,
/// and the zero pages are special; anonymous copy-on-write pages would go to swap, which the
/// model does not have. Only the 4.x hole pages of bug mode `shadow-entries` are page-cache
/// pages. Their `PG_workingset` is taken as set (the model keeps no LRU lists): the shadow's
/// low bit is then set, which a DAX path reads as `DAX_LOCKED`.
pub async fn madvise_pageout<P: Platform>(
    dax: &Dax<P>,
    p: &P,
    mm: &MmStruct<P>,
    start: u64,
    len: u64,
) -> Result<usize, Errno> {
    let _fn = p.enter_fn("madvise_pageout");
    if !start.is_multiple_of(PAGE_SIZE) {
        return Err(Errno::EINVAL);
    }
    let end = start.saturating_add(len.div_ceil(PAGE_SIZE) * PAGE_SIZE);
    let vmas = mm.mmap_lock.read(p).await;
    // The page-table walk: the page-cache pages mapped in the range, with their file and index.
    let mut pages = Vec::new();
    let pt = mm.page_table.lock(p).await;
    for v in vmas.overlapping(start, end) {
        let mut a = v.b.vm_start.max(start);
        while a < v.b.vm_end.min(end) {
            if let Some(pte) = pt.pte_get(a)
                && pte.present()
                && !pte.special()
                && is_pagecache_pfn(pte.pfn())
            {
                pages.push((v.vm_file.clone(), v.b.linear_page_index(a), pte.pfn()));
            }
            a += PAGE_SIZE;
        }
    }
    pt.unlock().await;
    let mut n = 0;
    for (mapping, index, pfn) in pages {
        // try_to_unmap: a page-cache page is mapped only at its own index.
        unmap_mapping_pages(p, &dax.world, &mapping, index, 1, false).await;
        let eviction = dax.workingset_age_nonresident(p).await;
        if __remove_mapping(dax, p, &mapping, index, pfn, eviction, true).await {
            n += 1;
        }
    }
    vmas.unlock().await;
    Ok(n)
}
