//! The DAX side of memory failure (research/linux_dax.md section 7): locking the entry that
//! owns a failed page, so that the page's owner (`mapping`, `index`) cannot change and the
//! inode cannot go away while memory failure collects and signals the processes mapping it.
//!
//! [`Dax`] implements [`DaxEntryLocking`], which `crate::memory_failure` takes:
//! - `dax_lock_folio(page)` (the generic path, through `page->mapping`): under RCU, read
//!   `page->mapping`; take that mapping's i_pages lock; if `page->mapping` changed meanwhile
//!   (truncate disassociated it), retry; if the entry at `page->index` is locked, wait for it
//!   **non-exclusively** (`wait_entry_unlocked`: this path may never lock the entry, and must not
//!   swallow a wake-up meant for a task that will) and retry; else lock it. The cookie is the
//!   entry as it was, and `dax_unlock_folio` stores it back.
//! - `dax_lock_mapping_entry(mapping, index)` (the file system's path, `mf_dax_kill_procs`):
//!   the same by index; an absent, zero or empty entry gives the cookie `!0` and no page.
//!
//! **RCU.** The kernel keeps the address space's memory alive with `rcu_read_lock` between
//! reading `page->mapping` and taking its i_pages lock (inodes are freed after a grace period).
//! The model reads `page->mapping` and resolves the id with the mapping table's lock held, so an
//! eviction cannot come in between; after that the `Arc` keeps the object, and the recheck under
//! the i_pages lock tells whether the page still belongs to it.

use super::entry::{dax_lock_entry, dax_unlock_entry, wait_entry_unlocked};
use super::{Dax, DaxBug, Release};
use crate::dax_entry::{dax_is_empty_entry, dax_is_locked, dax_is_zero_entry, dax_to_pfn};
use crate::memory_failure::{DaxCookie, DaxEntryLocking};
use crate::world::{AddressSpace, MappingState, MmWorld};
use crate::xarray::{XaEntry, XaOps, XaState};
use crate::{MappingId, Pfn};
use sim_core::Platform;
use sim_core::platform::{bug_on, warn_on};
use std::sync::Arc;

/// The cookie of "no entry to lock" (`~0UL`).
pub const DAX_NO_ENTRY: DaxCookie = !0;

/// Read `page->mapping` and follow it, as under `rcu_read_lock`: `None` for a page without a
/// mapping. Following a freed address space is a use after free (a model BUG).
async fn folio_mapping_rcu<P: Platform>(
    dax: &Dax<P>,
    p: &P,
    world: &MmWorld<P>,
    pfn: Pfn,
) -> Option<Arc<AddressSpace<P>>> {
    let t = world.mappings.lock(p).await;
    let id = world.memmap.page(p, pfn).await.mapping_id();
    let r = id.map(|id| match t.get(id) {
        Some(MappingState::Live(m)) => Ok(m.clone()),
        Some(MappingState::Freed { host }) => Err((id, *host)),
        None => Err((id, 0)),
    });
    t.release(dax.release_steps).await;
    match r? {
        Ok(m) => Some(m),
        Err((id, host)) => {
            bug_on(p, true, "mapping-use-after-free", || {
                format!(
                    "page {pfn:#x}: page->mapping {} (ino {host}) was evicted",
                    id.0
                )
            })
            .await;
            None
        }
    }
}

/// `dax_lock_folio` as the 2018 v1 series had it (bug mode `mf-speculative-page-lock`): the
/// page lock (`lock_page`) stands for the owner's stability, but the truncate and eviction
/// paths take no page lock on DAX pages, so `page->mapping` and `page->index` can change and
/// the inode can be evicted while memory failure uses them.
async fn dax_lock_page_2018<P: Platform>(p: &P, world: &MmWorld<P>, pfn: Pfn) -> DaxCookie {
    if world.memmap.page(p, pfn).await.mapping_id().is_none() {
        return 0;
    }
    world.memmap.lock_page(p, pfn).await;
    1
}

impl<P: Platform> DaxEntryLocking<P> for Dax<P> {
    /// `dax_lock_folio(folio)`: lock the DAX entry that owns `pfn`; 0 when the page has no
    /// mapping (or lost it while we looked).
    async fn dax_lock_folio(&self, p: &P, world: &MmWorld<P>, pfn: Pfn) -> DaxCookie {
        if self.bug(DaxBug::MfSpeculativePageLock) {
            return dax_lock_page_2018(p, world, pfn).await;
        }
        loop {
            let Some(mapping) = folio_mapping_rcu(self, p, world, pfn).await else {
                return 0;
            };
            // (device-dax, `S_ISCHR(mapping->host->i_mode)`, returns ~0 unlocked: every mapping
            // of the model is a file system's.)
            let mut xa = mapping.i_pages.lock(p).await;
            let page = world.memmap.page(p, pfn).await;
            if page.mapping != mapping.id.0 {
                // Truncated (or reassociated) meanwhile: look again.
                xa.release(self.release_steps).await;
                continue;
            }
            let mut xas = XaState::new(page.index);
            let entry = xa.xas_load(&mut xas);
            if !entry.is_value() {
                // An associated page always has its entry (invariants.rs, at rest and under
                // the i_pages lock); anything else is a bug of the caller's model.
                xa.release(self.release_steps).await;
                warn_on(p, true, "dax-lock-folio-no-entry", || {
                    format!(
                        "dax_lock_folio: pfn {pfn:#x} belongs to ino {} index {:#x}, which holds {entry:?}",
                        mapping.host, page.index
                    )
                })
                .await;
                return 0;
            }
            if dax_is_locked(entry) {
                // Consumes the i_pages lock; the mapping is not touched after it.
                wait_entry_unlocked(self, p, &mapping, xa, &xas, entry).await;
                continue;
            }
            dax_lock_entry(&mut xa, &mut xas, entry);
            xa.release(self.release_steps).await;
            return entry.0;
        }
    }

    /// `dax_unlock_folio(folio, cookie)`: store the entry back unlocked and wake the next
    /// waiter. The entry lock kept `page->mapping` and `page->index`.
    async fn dax_unlock_folio(&self, p: &P, world: &MmWorld<P>, pfn: Pfn, cookie: DaxCookie) {
        if self.bug(DaxBug::MfSpeculativePageLock) {
            world.memmap.unlock_page(p, pfn).await;
            return;
        }
        let page = world.memmap.page(p, pfn).await;
        let Some(mapping) = world.mapping_get(p, MappingId(page.mapping)).await else {
            bug_on(p, true, "dax-unlock-folio-no-mapping", || {
                format!("dax_unlock_folio: pfn {pfn:#x} lost its mapping under the entry lock")
            })
            .await;
            return;
        };
        let mut xas = XaState::new(page.index);
        dax_unlock_entry(self, p, &mapping, &mut xas, XaEntry(cookie)).await;
    }

    /// `dax_lock_mapping_entry(mapping, index, &page)`.
    async fn dax_lock_mapping_entry(
        &self,
        p: &P,
        _world: &MmWorld<P>,
        mapping: &AddressSpace<P>,
        index: u64,
    ) -> (DaxCookie, Option<Pfn>) {
        loop {
            let mut xa = mapping.i_pages.lock(p).await;
            let mut xas = XaState::new(index);
            let entry = xa.xas_load(&mut xas);
            if entry.is_value() && dax_is_locked(entry) {
                wait_entry_unlocked(self, p, mapping, xa, &xas, entry).await;
                continue;
            }
            // No entry yet, or a zero or empty one: not an error, nothing to lock.
            let r = if !entry.is_value() || dax_is_zero_entry(entry) || dax_is_empty_entry(entry) {
                (DAX_NO_ENTRY, None)
            } else {
                dax_lock_entry(&mut xa, &mut xas, entry);
                // The entry's first page (the head of a PMD entry), as fs/dax.c.
                (entry.0, Some(dax_to_pfn(entry)))
            };
            xa.release(self.release_steps).await;
            return r;
        }
    }

    /// `dax_unlock_mapping_entry(mapping, index, cookie)`.
    async fn dax_unlock_mapping_entry(
        &self,
        p: &P,
        _world: &MmWorld<P>,
        mapping: &AddressSpace<P>,
        index: u64,
        cookie: DaxCookie,
    ) {
        if cookie == DAX_NO_ENTRY {
            return;
        }
        let mut xas = XaState::new(index);
        dax_unlock_entry(self, p, mapping, &mut xas, XaEntry(cookie)).await;
    }
}
