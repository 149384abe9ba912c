//! `struct page` for every pfn of the simulated pmem (one `dev_pagemap`), and the page lock.
//!
//! **Model of the kernel's atomics.** The fields that race in Linux (`_refcount`, `_mapcount`,
//! `_pincount`, `flags`, and `mapping`/`index`/`share`, which fs/dax.c writes under the DAX entry
//! lock and memory failure reads under RCU) live in sections of 512 pages (2 MiB, one PMD folio),
//! each behind a Platform spinlock. Every operation of [`MemMap`] takes the section lock, does its
//! read-modify-write and releases it by dropping the guard, which is no scheduling point: one
//! operation is one atomic step with its scheduling point *before* it, like an `atomic_*` or a
//! `READ_ONCE`/`WRITE_ONCE` under sequential consistency. The section lock is never held across
//! a scheduling point, so it never blocks anyone; two pages of one section are "the same object"
//! for partial-order reduction (a little less reduction, never a missed interleaving).
//!
//! **Counting.** Folio-level counts are kept per 4 KiB page: a PMD mapping counts once on each of
//! its 512 pages, a pin counts on the page it pins. As in Linux 6.15+ (Alistair Popple's refcount
//! series), an idle DAX page has refcount 0, each mapping holds one reference (`folio_get` at map
//! time, dropped after the TLB flush) and each FOLL_PIN pin holds one reference plus one pin
//! (`_pincount`). At rest, `refcount == mapcount + pincount` (checked by `invariants.rs`).
//! `mapcount` counts from 0 (the kernel stores it biased by -1).

use crate::MappingId;
use serde::{Deserialize, Serialize};
use sim_core::platform::{WaitKey, bug_on, wake_key_eq};
use sim_core::{Platform, SpinLock, WaitQueue, WakeMode};
use std::sync::Arc;

pub type Pfn = u64;

/// `PG_locked`: the page lock bit (`lock_page`/`folio_lock`).
pub const PG_LOCKED: u32 = 1 << 0;
/// `PG_hwpoison`.
pub const PG_HWPOISON: u32 = 1 << 1;
/// Model-only: the file system's allocator holds this block as free. Set and cleared by the file
/// system through [`MemMap::set_block_free`]; a free block must not be mapped, pinned or
/// associated with a file.
pub const PG_BLOCK_FREE: u32 = 1 << 2;

/// Pages per memmap section (and per section lock).
pub const PAGES_PER_SECTION: u64 = 512;
/// Buckets of the hashed page wait table (`folio_wait_table`, `PAGE_WAIT_TABLE_BITS` = 8).
pub const PAGE_WAIT_TABLE_SIZE: usize = 256;

/// One `struct page` (32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug, Serialize, Deserialize)]
#[repr(C)]
pub struct Page {
    /// `_refcount`.
    pub refcount: u32,
    /// `_mapcount + 1`: page-table entries mapping this page.
    pub mapcount: u32,
    /// `_pincount`: FOLL_PIN references among `refcount`.
    pub pincount: u32,
    /// `PG_*` bits.
    pub flags: u32,
    /// `page->mapping`: the owning address space (0 = NULL).
    pub mapping: u32,
    /// `folio->share`: owners of a reflinked (shared) page; `mapping` is NULL while non-zero.
    /// (In 6.15 it aliases `index`; it is a field of its own here so that both stay visible.)
    pub share: u32,
    /// `page->index`: the page offset within `mapping`.
    pub index: u64,
}

const _: () = assert!(std::mem::size_of::<Page>() <= 64);

impl Page {
    pub fn mapping_id(&self) -> Option<MappingId> {
        (self.mapping != 0).then_some(MappingId(self.mapping))
    }
    pub fn locked(&self) -> bool {
        self.flags & PG_LOCKED != 0
    }
    pub fn hwpoison(&self) -> bool {
        self.flags & PG_HWPOISON != 0
    }
    pub fn block_free(&self) -> bool {
        self.flags & PG_BLOCK_FREE != 0
    }
    /// 6.15+ `dax_page_is_idle`-style busy test: references other than mappings.
    pub fn extra_refs(&self) -> u32 {
        self.refcount.saturating_sub(self.mapcount)
    }
}

/// A copy of the whole memmap, taken when nothing runs (end of a run, single-task tests), for the
/// invariant checker. It shares the memmap's sections, which are copied on write: taking it
/// copies no page (a page changed while it is kept copies its section then). Serialised as
/// the list of pages.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(from = "PagesRepr", into = "PagesRepr")]
pub struct MemMapSnapshot {
    pub base_pfn: Pfn,
    /// `PAGES_PER_SECTION` pages each but the last.
    sections: Vec<Arc<[Page]>>,
}

#[derive(Clone, Serialize, Deserialize)]
struct PagesRepr {
    base_pfn: Pfn,
    pages: Vec<Page>,
}

impl From<PagesRepr> for MemMapSnapshot {
    fn from(r: PagesRepr) -> Self {
        MemMapSnapshot::from_pages(r.base_pfn, r.pages)
    }
}

impl From<MemMapSnapshot> for PagesRepr {
    fn from(s: MemMapSnapshot) -> Self {
        PagesRepr {
            base_pfn: s.base_pfn,
            pages: s.pages().copied().collect(),
        }
    }
}

impl MemMapSnapshot {
    /// The snapshot of pages `pages` from `base_pfn`.
    pub fn from_pages(base_pfn: Pfn, pages: Vec<Page>) -> Self {
        MemMapSnapshot {
            base_pfn,
            sections: pages
                .chunks(PAGES_PER_SECTION as usize)
                .map(Arc::from)
                .collect(),
        }
    }

    fn locate(&self, pfn: Pfn) -> Option<(usize, usize)> {
        let i = pfn.checked_sub(self.base_pfn)?;
        Some((
            (i / PAGES_PER_SECTION) as usize,
            (i % PAGES_PER_SECTION) as usize,
        ))
    }

    pub fn get(&self, pfn: Pfn) -> Option<&Page> {
        let (s, i) = self.locate(pfn)?;
        self.sections.get(s)?.get(i)
    }

    /// Page `pfn`, to change it (tests of the checker).
    pub fn get_mut(&mut self, pfn: Pfn) -> Option<&mut Page> {
        let (s, i) = self.locate(pfn)?;
        Arc::make_mut(self.sections.get_mut(s)?).get_mut(i)
    }

    /// Every page, from `base_pfn` on.
    pub fn pages(&self) -> impl Iterator<Item = &Page> + '_ {
        self.sections.iter().flat_map(|s| s.iter())
    }

    /// Every section: its first pfn and its pages (a walk of every page without a flattened
    /// iterator's per-page test for the end of a section).
    pub fn sections(&self) -> impl Iterator<Item = (Pfn, &[Page])> + '_ {
        (0..)
            .zip(&self.sections)
            .map(|(i, s)| (self.base_pfn + i * PAGES_PER_SECTION, &s[..]))
    }
}

thread_local! {
    /// A full section of idle struct pages, shared by every [`MemMap::new`] on the thread: the
    /// sections are copied on write, so a run copies only the sections it changes instead of
    /// building all of them (a search builds a memmap every run).
    static IDLE_SECTION: Arc<[Page]> = (0..PAGES_PER_SECTION).map(|_| Page::default()).collect();
}

/// A section of `n` idle struct pages.
fn idle_section(n: usize) -> Arc<[Page]> {
    if n == PAGES_PER_SECTION as usize {
        IDLE_SECTION.with(Arc::clone)
    } else {
        (0..n).map(|_| Page::default()).collect()
    }
}

/// The memmap of the pmem `dev_pagemap`: pfns `base_pfn .. base_pfn + nr_pages`.
pub struct MemMap<P: Platform> {
    base_pfn: Pfn,
    nr_pages: u64,
    /// Copied on write (`Arc::make_mut`): a snapshot shares them (see [`MemMapSnapshot`]).
    sections: Vec<SpinLock<P, Arc<[Page]>>>,
    wait_table: Box<[WaitQueue<P>]>,
}

impl<P: Platform> MemMap<P> {
    /// `memremap_pages`: struct pages for `nr_pages` pfns from `base_pfn`, all idle.
    pub fn new(p: &P, base_pfn: Pfn, nr_pages: u64) -> MemMap<P> {
        let nsec = nr_pages.div_ceil(PAGES_PER_SECTION);
        let sections = (0..nsec)
            .map(|s| {
                let n = (nr_pages - s * PAGES_PER_SECTION).min(PAGES_PER_SECTION) as usize;
                // Parts: page `i` of the section is key `i`, so that steps on different pages
                // commute (`update` announces the pages it touches).
                SpinLock::new_with_parts(p, "memmap_section", idle_section(n))
            })
            .collect();
        let wait_table = WaitQueue::table(p, "folio_wait_table", PAGE_WAIT_TABLE_SIZE);
        MemMap {
            base_pfn,
            nr_pages,
            sections,
            wait_table,
        }
    }

    pub fn base_pfn(&self) -> Pfn {
        self.base_pfn
    }
    pub fn nr_pages(&self) -> u64 {
        self.nr_pages
    }

    /// Whether `pfn` has a struct page here (`pfn_valid` + `is_zone_device_page`).
    pub fn pfn_valid(&self, pfn: Pfn) -> bool {
        pfn >= self.base_pfn && pfn - self.base_pfn < self.nr_pages
    }

    fn locate(&self, pfn: Pfn) -> (usize, usize) {
        let i = pfn - self.base_pfn;
        (
            (i / PAGES_PER_SECTION) as usize,
            (i % PAGES_PER_SECTION) as usize,
        )
    }

    /// One atomic step over the pages `pfn .. pfn + nr` (one step per section touched): `f` gets
    /// each pfn and its page. Invalid pfns are skipped.
    pub async fn update(&self, p: &P, pfn: Pfn, nr: u64, mut f: impl FnMut(Pfn, &mut Page)) {
        let mut cur = pfn;
        let end = pfn + nr;
        while cur < end {
            if !self.pfn_valid(cur) {
                cur += 1;
                continue;
            }
            let (s, i) = self.locate(cur);
            let mut g = self.sections[s].lock(p).await;
            let n = ((g.part(i as u64, 1).len() - i) as u64).min(end - cur) as usize;
            for (k, page) in Arc::make_mut(g.part_mut(i as u64, n as u64))[i..i + n]
                .iter_mut()
                .enumerate()
            {
                f(cur + k as u64, page);
            }
            drop(g); // atomic: no scheduling point at release
            cur += n as u64;
        }
    }

    /// `READ_ONCE` of one struct page.
    pub async fn page(&self, p: &P, pfn: Pfn) -> Page {
        let mut out = Page::default();
        self.update(p, pfn, 1, |_, pg| out = *pg).await;
        out
    }

    /// `folio_add_file_rmap_pte/pmd` + `folio_get` at map time: mapcount and refcount +1 on each
    /// of `nr` pages. The caller holds the page-table lock.
    pub async fn page_add_file_rmap(&self, p: &P, pfn: Pfn, nr: u64) {
        self.update(p, pfn, nr, |_, pg| {
            pg.mapcount += 1;
            pg.refcount += 1;
        })
        .await;
    }

    /// `folio_remove_rmap_pte/pmd`: mapcount -1 on each of `nr` pages (the reference is dropped
    /// later, after the TLB flush, by [`MemMap::put_pages`]). The caller holds the page-table lock.
    pub async fn page_remove_rmap(&self, p: &P, pfn: Pfn, nr: u64) {
        let mut underflow = None;
        self.update(p, pfn, nr, |f, pg| {
            if pg.mapcount == 0 {
                underflow.get_or_insert(f);
            } else {
                pg.mapcount -= 1;
            }
        })
        .await;
        bug_on(p, underflow.is_some(), "mapcount-underflow", || {
            format!(
                "page_remove_rmap: pfn {:#x} has mapcount 0",
                underflow.unwrap_or(0)
            )
        })
        .await;
    }

    /// `folio_put` on each of `nr` pages (`tlb_finish_mmu` freeing the zapped references). A
    /// page whose last reference goes is idle again: `fsdax_pagefree` wakes its waiters.
    pub async fn put_pages(&self, p: &P, pfn: Pfn, nr: u64) {
        let mut underflow = None;
        let mut idle = false;
        self.update(p, pfn, nr, |f, pg| {
            if pg.refcount == 0 {
                underflow.get_or_insert(f);
            } else {
                pg.refcount -= 1;
                idle |= pg.refcount == 0;
            }
        })
        .await;
        bug_on(p, underflow.is_some(), "refcount-underflow", || {
            format!(
                "folio_put: pfn {:#x} has refcount 0",
                underflow.unwrap_or(0)
            )
        })
        .await;
        if idle {
            self.wake_up_idle(p, pfn).await;
        }
    }

    /// The key idle waiters sleep on: the 2 MiB folio the pfn belongs to (`wake_up_var` on the
    /// folio), so that a pin on any subpage wakes a waiter on the whole folio.
    fn idle_key(pfn: Pfn) -> WaitKey {
        WaitKey(pfn & !(PAGES_PER_SECTION - 1), u64::MAX)
    }

    async fn wake_up_idle(&self, p: &P, pfn: Pfn) {
        self.page_waitqueue(pfn & !(PAGES_PER_SECTION - 1))
            .wake_up(p, Self::idle_key(pfn), WakeMode::All)
            .await;
    }

    /// Whether every page of `pfn .. pfn + nr` has refcount 0 (`dax_page_is_idle`, 6.15+).
    pub async fn pages_idle(&self, p: &P, pfn: Pfn, nr: u64) -> bool {
        let mut idle = true;
        self.update(p, pfn, nr, |_, pg| idle &= pg.refcount == 0)
            .await;
        idle
    }

    /// `dax_wait_page_idle`: sleep until every page of the range has refcount 0 (the file system
    /// calls it with its locks dropped; pins go away when their holders unpin).
    ///
    /// Idle wake-ups are keyed by 2 MiB folio ([`Self::idle_key`]), so a range over several
    /// folios waits for each folio in turn, on that folio's key: a put in any of them wakes the
    /// waiter that is waiting for it. (The kernel waits per folio; a range is the model's
    /// convenience.)
    pub async fn wait_pages_idle(&self, p: &P, pfn: Pfn, nr: u64) {
        let end = pfn.saturating_add(nr);
        let mut start = pfn;
        while start < end {
            let folio_end = ((start | (PAGES_PER_SECTION - 1)) + 1).min(end);
            self.wait_folio_idle(p, start, folio_end - start).await;
            start = folio_end;
        }
    }

    /// [`Self::wait_pages_idle`] within one 2 MiB folio.
    async fn wait_folio_idle(&self, p: &P, pfn: Pfn, nr: u64) {
        // Waiter and waker must agree on the key: the whole range is in pfn's folio.
        debug_assert_eq!(
            Self::idle_key(pfn),
            Self::idle_key(pfn + nr.max(1) - 1),
            "an idle wait crosses a 2 MiB folio"
        );
        let wq = self.page_waitqueue(pfn & !(PAGES_PER_SECTION - 1));
        loop {
            let w = wq
                .prepare_to_wait(p, Self::idle_key(pfn), false, wake_key_eq)
                .await;
            // Test after queueing: a put between the test and the sleep cannot be missed.
            let idle = self.pages_idle(p, pfn, nr).await;
            if !idle {
                wq.schedule(p, w).await;
            }
            wq.finish_wait(p, w).await;
            if idle {
                return;
            }
        }
    }

    /// `try_grab_folio(FOLL_PIN)`: refcount +1 and pincount +1. With `fast` (GUP-fast's
    /// `folio_try_get`), fails when the refcount is 0 (the page is being freed).
    pub async fn try_grab_page(&self, p: &P, pfn: Pfn, fast: bool) -> bool {
        let mut ok = false;
        self.update(p, pfn, 1, |_, pg| {
            if fast && pg.refcount == 0 {
                return;
            }
            pg.refcount += 1;
            pg.pincount += 1;
            ok = true;
        })
        .await;
        ok
    }

    /// `unpin_user_page` / `gup_put_folio(FOLL_PIN)`: pincount -1 and refcount -1.
    pub async fn unpin_page(&self, p: &P, pfn: Pfn) {
        let mut bad = false;
        let mut idle = false;
        self.update(p, pfn, 1, |_, pg| {
            if pg.pincount == 0 || pg.refcount == 0 {
                bad = true;
            } else {
                pg.pincount -= 1;
                pg.refcount -= 1;
                idle = pg.refcount == 0;
            }
        })
        .await;
        bug_on(p, bad, "unpin-unpinned-page", || {
            format!("unpin_user_page: pfn {pfn:#x} is not pinned")
        })
        .await;
        if idle {
            self.wake_up_idle(p, pfn).await;
        }
    }

    /// `SetPageHWPoison`.
    pub async fn set_page_hwpoison(&self, p: &P, pfn: Pfn) {
        self.update(p, pfn, 1, |_, pg| pg.flags |= PG_HWPOISON)
            .await;
    }

    /// `TestSetPageHWPoison`: returns whether it was already set.
    pub async fn test_set_page_hwpoison(&self, p: &P, pfn: Pfn) -> bool {
        let mut was = false;
        self.update(p, pfn, 1, |_, pg| {
            was = pg.flags & PG_HWPOISON != 0;
            pg.flags |= PG_HWPOISON;
        })
        .await;
        was
    }

    /// `ClearPageHWPoison` (poison cleared by a write through the driver).
    pub async fn clear_page_hwpoison(&self, p: &P, pfn: Pfn, nr: u64) {
        self.update(p, pfn, nr, |_, pg| pg.flags &= !PG_HWPOISON)
            .await;
    }

    /// The file system hands blocks back to (or takes them from) its allocator. Freeing a page
    /// that is still mapped, pinned or associated is a use after free of the block.
    pub async fn set_block_free(&self, p: &P, pfn: Pfn, nr: u64, free: bool) {
        let mut busy: Option<(Pfn, Page)> = None;
        self.update(p, pfn, nr, |f, pg| {
            if free {
                // A block handed back to the allocator has no mapping, no pin, no owner.
                if (pg.mapcount != 0 || pg.refcount != 0 || pg.mapping != 0 || pg.share != 0)
                    && busy.is_none()
                {
                    busy = Some((f, *pg));
                }
                pg.flags |= PG_BLOCK_FREE;
            } else {
                pg.flags &= !PG_BLOCK_FREE;
            }
        })
        .await;
        bug_on(p, busy.is_some(), "block-freed-while-busy", || {
            let (f, pg) = busy.unwrap_or_default();
            format!(
                "pfn {f:#x} freed while refcount {} mapcount {} pincount {} mapping {} share {}",
                pg.refcount, pg.mapcount, pg.pincount, pg.mapping, pg.share
            )
        })
        .await;
    }

    fn page_waitqueue(&self, pfn: Pfn) -> &WaitQueue<P> {
        // hash_ptr(folio, PAGE_WAIT_TABLE_BITS), with the pfn standing for the folio pointer.
        let h = pfn.wrapping_mul(0x61c8_8646_80b5_83eb) >> 56;
        &self.wait_table[h as usize % PAGE_WAIT_TABLE_SIZE]
    }

    fn page_key(pfn: Pfn) -> WaitKey {
        WaitKey(pfn, PG_LOCKED.trailing_zeros() as u64)
    }

    /// `trylock_page`.
    pub async fn trylock_page(&self, p: &P, pfn: Pfn) -> bool {
        let mut got = false;
        self.update(p, pfn, 1, |_, pg| {
            got = pg.flags & PG_LOCKED == 0;
            pg.flags |= PG_LOCKED;
        })
        .await;
        got
    }

    /// `lock_page` (`folio_lock`): an exclusive wait on the hashed page wait queue, keyed on
    /// {page, PG_locked}, re-testing the bit after queueing so that no unlock is missed.
    pub async fn lock_page(&self, p: &P, pfn: Pfn) {
        let wq = self.page_waitqueue(pfn);
        let key = Self::page_key(pfn);
        loop {
            if self.trylock_page(p, pfn).await {
                return;
            }
            let w = wq.prepare_to_wait(p, key, true, wake_key_eq).await;
            if self.page(p, pfn).await.locked() {
                wq.schedule(p, w).await;
            }
            wq.finish_wait(p, w).await;
        }
    }

    /// `unlock_page` (`folio_unlock`): clear the bit, wake the next exclusive waiter on the key.
    pub async fn unlock_page(&self, p: &P, pfn: Pfn) {
        let mut was = false;
        self.update(p, pfn, 1, |_, pg| {
            was = pg.flags & PG_LOCKED != 0;
            pg.flags &= !PG_LOCKED;
        })
        .await;
        bug_on(p, !was, "unlock-unlocked-page", || {
            format!("unlock_page: pfn {pfn:#x} is not locked")
        })
        .await;
        self.page_waitqueue(pfn)
            .wake_up(p, Self::page_key(pfn), WakeMode::Next)
            .await;
    }

    /// A copy of every page through lock-aware peeks, for checks between steps; `None` while a
    /// task holds a section lock (a section lock is never held across a scheduling point, so
    /// between steps it never is).
    pub fn peek_snapshot(&self, p: &P) -> Option<MemMapSnapshot> {
        let mut sections = Vec::with_capacity(self.sections.len());
        for s in &self.sections {
            s.peek(p, |g| sections.push(g.clone()))?;
        }
        Some(MemMapSnapshot {
            base_pfn: self.base_pfn,
            sections,
        })
    }

    /// A copy of every page (locks each section in turn; for quiescent states only).
    pub async fn snapshot(&self, p: &P) -> MemMapSnapshot {
        let mut sections = Vec::with_capacity(self.sections.len());
        for s in &self.sections {
            let g = s.lock(p).await;
            sections.push(Arc::clone(&g));
            drop(g);
        }
        MemMapSnapshot {
            base_pfn: self.base_pfn,
            sections,
        }
    }
}
