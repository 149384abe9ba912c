//! The DAX core: fs/dax.c, function by function (research/linux_dax.md is the specification).
//!
//! | file | what | kernel |
//! | --- | --- | --- |
//! | [`entry`] | the hashed wait table, entry locking, page association | `dax_entry_waitqueue` .. `dax_unlock_entry`, `dax_associate_entry` |
//! | [`iomap`] | what the file system answers for a file range | `struct iomap`, `struct iomap_ops` |
//! | [`fault`] | `grab_mapping_entry`, the PTE and PMD fault paths, holes, MAP_SYNC, CoW | `dax_iomap_fault` and its helpers |
//! | [`rw`] | read(2)/write(2) on a DAX file: iomap iteration, copies through the machine | `dax_iomap_rw`, `dax_iomap_iter` |
//! | [`test_iomap`] | a small in-memory file system answering iomap calls (tests, benches, toys) | (none) |
//! | [`models`] | built-in races on the fault paths, one per fault-half bug mode (`pmsim --model`) | (none) |
//!
//! Writeback, invalidation and memory failure on DAX entries build on [`entry`] in sibling files.
//!
//! **Locks.** The i_pages lock (`xa_lock`, a Platform spinlock around the [`XArray`] in
//! `AddressSpace::i_pages`) guards every entry and its marks. A DAX entry lock is the
//! `DAX_LOCKED` bit *inside* the entry, set and cleared under the i_pages lock; holders sleep
//! with it held (iomap calls, page-table updates). Lock order, outermost first:
//! `invalidate_lock` (shared for faults) -> `mmap_lock` -> DAX entry lock -> `i_mmap_rwsem`
//! -> page-table lock -> i_pages lock -> memmap section. The i_pages lock is never held across a
//! sleep (the simulator flags `sleep-in-atomic`); an entry lock is held across everything but is
//! never taken while one is held by the same task (faults lock one entry).
//!
//! **Releases.** Guards of Platform locks are released by [`Release::release`], which by
//! default drops them (no scheduling point of its own: the release belongs to the step that
//! last touched the protected data). Nothing between that step and the release is visible to
//! another task, so a separate release step would only add interleavings equivalent to existing
//! ones, and a bounded search would spend its preemptions on them. `Dax::release_steps` turns
//! the separate steps back on; a test compares the final states both reach.
//!
//! **Waiting.** A task that finds an entry locked queues itself on one of 4096 hashed wait
//! queues ([`DAX_WAIT_TABLE_ENTRIES`]) keyed `{xa, entry_start}` *before* it drops the i_pages
//! lock, and every unlocker changes the entry under that lock and wakes after it: a waiter
//! either sees the entry unlocked or is on the queue when the wake-up comes. `entry_start` is the
//! index, rounded to the PMD start only when the awaited entry is a PMD entry, so that every
//! index of a PMD entry waits on one key (the rounding rule the 2019 missed wakeup broke).
//!
//! **Invariants** (each asserted once, beside the code that relies on it):
//! - `dax_unlock_entry` stores an unlocked entry over a locked one ([`entry::dax_unlock_entry`]);
//! - `nrpages` equals the indices covered by entries, at rest (`invariants.rs`);
//! - no entry is locked when every task is done (`invariants.rs`, `EntryLockedAtRest`);
//! - a block-backed entry's pages point back at it (`mapping`, `index`), at rest.
//!
//! **Bug modes** ([`DaxBug`]) switch one decision back to a historical behaviour and change
//! nothing else; each decision point says which mode it honours ([`DaxBug::mechanism`], the one
//! statement of each mechanism, which the catalogue `crate::bugs` and `pmsim bugs` show).
//!
//! **Call paths.** The DAX functions (and the mm helpers they call) mark themselves with
//! `p.enter_fn("kernel_name")`, so reports show where each task is
//! (`dax_iomap_pmd_fault > grab_mapping_entry > get_next_unlocked_entry`); this is task-local
//! bookkeeping, not a step, and changes no footprint.
//!
//! **Not modelled here.** Page contents (a new block is zero by definition; the CoW copy and
//! `dax_iomap_copy_around` move no bytes; `dax_direct_access` only translates), the fs_dax
//! tracepoints, `__mark_inode_dirty`, `iomap_iter` over more than one extent per fault (a fault
//! asks once), the per-PMD page-table locks (one lock per mm, see `mm.rs`), and the
//! `xas_nomem` retry (allocation never fails).

pub mod entry;
pub mod fault;
pub mod invalidate;
pub mod iomap;
pub mod memory_failure;
pub mod models;
pub mod rw;
pub mod test_iomap;
pub mod writeback;

use crate::world::MmWorld;
use sim_core::platform::{RwSemReadGuard, SpinLockGuard};
use sim_core::{Platform, SpinLock, WaitQueue};
use std::fmt;
use std::future::Future;
use std::sync::Arc;

pub use crate::xarray::XArray;

/// `DAX_WAIT_TABLE_BITS`.
pub const DAX_WAIT_TABLE_BITS: u32 = 12;
/// `DAX_WAIT_TABLE_ENTRIES`.
pub const DAX_WAIT_TABLE_ENTRIES: usize = 1 << DAX_WAIT_TABLE_BITS;

/// The fs/dax.c bug modes of the catalogue (`crate::bugs`), by their catalogue names.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
#[repr(u8)]
pub enum DaxBug {
    PmdMissedWakeup,
    PmdConflictBeforeNull,
    NoEntryLock,
    ShadowEntries,
    MfSpeculativePageLock,
    HoleWakeNext,
    InvalidateWakeNext,
    BusyScanSkipsLocked,
    PmdPteCollide,
    StaleHugeZeroPage,
    PmdWritebackNoWrprotect,
    MixedMappingAssociation,
    LockEntryExclusiveWait,
    SyncFaultNoFsync,
    NoMmaplock,
}

impl DaxBug {
    pub const ALL: [DaxBug; 15] = [
        DaxBug::PmdMissedWakeup,
        DaxBug::PmdConflictBeforeNull,
        DaxBug::NoEntryLock,
        DaxBug::ShadowEntries,
        DaxBug::MfSpeculativePageLock,
        DaxBug::HoleWakeNext,
        DaxBug::InvalidateWakeNext,
        DaxBug::BusyScanSkipsLocked,
        DaxBug::PmdPteCollide,
        DaxBug::StaleHugeZeroPage,
        DaxBug::PmdWritebackNoWrprotect,
        DaxBug::MixedMappingAssociation,
        DaxBug::LockEntryExclusiveWait,
        DaxBug::SyncFaultNoFsync,
        DaxBug::NoMmaplock,
    ];

    /// The catalogue name (`bug NAME` in a trace).
    pub fn name(self) -> &'static str {
        match self {
            DaxBug::PmdMissedWakeup => "pmd-missed-wakeup",
            DaxBug::PmdConflictBeforeNull => "pmd-conflict-before-null",
            DaxBug::NoEntryLock => "no-entry-lock",
            DaxBug::ShadowEntries => "shadow-entries",
            DaxBug::MfSpeculativePageLock => "mf-speculative-page-lock",
            DaxBug::HoleWakeNext => "hole-wake-next",
            DaxBug::InvalidateWakeNext => "invalidate-wake-next",
            DaxBug::BusyScanSkipsLocked => "busy-scan-skips-locked",
            DaxBug::PmdPteCollide => "pmd-pte-collide",
            DaxBug::StaleHugeZeroPage => "stale-huge-zero-page",
            DaxBug::PmdWritebackNoWrprotect => "pmd-writeback-no-wrprotect",
            DaxBug::MixedMappingAssociation => "mixed-mapping-association",
            DaxBug::LockEntryExclusiveWait => "lock-entry-exclusive-wait",
            DaxBug::SyncFaultNoFsync => "sync-fault-no-fsync",
            DaxBug::NoMmaplock => "no-mmaplock",
        }
    }

    /// Where the mode changes the decision (the function and the branch). Every DAX-core mode
    /// has one; the `Option` matches `BugMode::mechanism`, where file-system modes have none yet.
    pub fn mechanism(self) -> Option<&'static str> {
        Some(match self {
            DaxBug::PmdMissedWakeup => {
                "get_next_unlocked_entry: no order check, so a PMD-order lookup sleeps on the \
                 locked PTE entry keyed on the PMD-aligned xas index (grab_mapping_entry then \
                 falls back on the PTE entry it got)"
            }
            DaxBug::PmdConflictBeforeNull => {
                "get_next_unlocked_entry: the order test runs before the NULL test, and NULL has \
                 order 0, so an empty PMD range is a conflict"
            }
            DaxBug::NoEntryLock => {
                "grab_mapping_entry / dax_insert_entry / the fault's unlock: faults neither wait \
                 for nor take entry locks"
            }
            DaxBug::HoleWakeNext => {
                "grab_mapping_entry, PMD downgrade: the deleted zero/empty PMD entry's waiters \
                 get WAKE_NEXT instead of WAKE_ALL"
            }
            DaxBug::PmdPteCollide => {
                "dax_iomap_pte_fault / dax_iomap_pmd_fault: no recheck of the PMD slot after \
                 the entry lock (huge for a PTE fault, a page table for a PMD fault)"
            }
            DaxBug::StaleHugeZeroPage => {
                "grab_mapping_entry (PMD downgrade) and dax_insert_entry (zero -> block): the \
                 huge zero page is not unmapped before blocks replace it"
            }
            DaxBug::MixedMappingAssociation => {
                "dax_insert_entry: a PTE fault on a block PMD entry disassociates the whole PMD \
                 and associates one page"
            }
            DaxBug::LockEntryExclusiveWait => {
                "wait_entry_unlocked: an exclusive wait instead of a non-exclusive one"
            }
            DaxBug::SyncFaultNoFsync => {
                "dax_fault_is_synchronous: false for a MAP_SYNC write over blocks with \
                 IOMAP_F_DIRTY, so the fault maps the page writable without \
                 dax_finish_sync_fault making the block allocation durable"
            }
            DaxBug::ShadowEntries => {
                "dax_load_hole: a PTE read of a hole maps a zeroed page-cache page, stored in \
                 the xarray (the hole page of 4.4 .. 4.14, which faults and invalidations \
                 replace; today a zero entry); __remove_mapping (reclaim, `madvise pageout`): \
                 the evicted hole page leaves a workingset shadow entry in the DAX mapping (no \
                 !dax_mapping check)"
            }
            DaxBug::MfSpeculativePageLock => {
                "dax_lock_folio: lock_page instead of the entry lock with the page->mapping \
                 recheck"
            }
            DaxBug::InvalidateWakeNext => {
                "__dax_invalidate_entry: put_unlocked_entry with WAKE_NEXT instead of WAKE_ALL"
            }
            DaxBug::BusyScanSkipsLocked => {
                "dax_layout_busy_page_range: get_unlocked_entry on the iteration's xa_state \
                 instead of wait_entry_unlocked_exclusive"
            }
            DaxBug::PmdWritebackNoWrprotect => {
                "dax_writeback_one: PMDs cleaned but not write-protected (4.9 \
                 dax_mapping_entry_mkclean)"
            }
            DaxBug::NoMmaplock => {
                "dax_fs_fault (the file system's ->fault/->huge_fault): the fault runs without \
                 invalidate_lock (XFS before MMAPLOCK), so truncate, hole punch and the other \
                 block-freeing operations, which break layouts and then free blocks under it, \
                 can race a fault that looked the blocks up before they were freed and maps them \
                 after"
            }
        })
    }

    /// The shipped trace that shows the mode (from the repository root), as the catalogue
    /// names it ([`crate::bugs::BugMode::trace`]).
    pub fn trace(self) -> Option<&'static str> {
        crate::bugs::bug_mode(self.name()).and_then(|m| m.trace())
    }

    /// The mode called `name`, if it is a DAX-core mode.
    pub fn from_name(name: &str) -> Option<DaxBug> {
        DaxBug::ALL.into_iter().find(|b| b.name() == name)
    }
}

impl fmt::Display for DaxBug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The active bug modes of a run (a bitset over [`DaxBug`]). Empty: today's kernel.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct BugSet(u32);

// Every mode has a bit.
const _: () = assert!(DaxBug::ALL.len() <= 32);

impl BugSet {
    pub const NONE: BugSet = BugSet(0);

    pub fn of(bugs: &[DaxBug]) -> BugSet {
        BugSet(bugs.iter().fold(0, |s, &b| s | (1 << b as u8)))
    }

    /// From catalogue names; names that are not DAX-core modes (e.g. `reflink-page-mapping`,
    /// which belongs to the file system) are skipped, unknown names are an error.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<BugSet, String> {
        let mut s = BugSet::NONE;
        for n in names {
            let n = n.as_ref();
            match DaxBug::from_name(n) {
                Some(b) => s = s.with(b),
                None if crate::bugs::bug_mode(n).is_some() => {}
                None => return Err(format!("unknown bug mode `{n}`")),
            }
        }
        Ok(s)
    }

    #[must_use]
    pub fn with(self, b: DaxBug) -> BugSet {
        BugSet(self.0 | (1 << b as u8))
    }

    /// Whether mode `b` is on.
    #[inline]
    pub fn on(self, b: DaxBug) -> bool {
        self.0 & (1 << b as u8) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = DaxBug> {
        DaxBug::ALL.into_iter().filter(move |&b| self.on(b))
    }
}

impl fmt::Debug for BugSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(DaxBug::name))
            .finish()
    }
}

/// The DAX core's global state, what fs/dax.c keeps in statics: the hashed wait table, plus the
/// mm world it works on and the active bug modes. One per simulated machine; model code keeps an
/// `Arc<Dax<P>>` and passes `&Dax<P>` to every DAX function.
pub struct Dax<P: Platform> {
    pub world: Arc<MmWorld<P>>,
    pub bugs: BugSet,
    /// Release locks with a scheduling point of their own (`unlock().await`) instead of with
    /// the step that last touched the data (see the module notes). Off by default.
    pub release_steps: bool,
    /// `wait_table[DAX_WAIT_TABLE_ENTRIES]` (`1 << wait_bits` buckets).
    wait_bits: u32,
    wait_table: Box<[WaitQueue<P>]>,
    /// The page allocator for DRAM pages: anonymous copy-on-write pages, and the 4.x hole
    /// pages of bug mode `shadow-entries` (with the LRU's eviction clock).
    page_alloc: SpinLock<P, PageAlloc>,
}

/// The DRAM page allocator's state (one lock: `alloc_page` and the LRU share the zone).
struct PageAlloc {
    /// The next free anonymous pfn.
    anon_next: u64,
    /// The next free page-cache pfn (pages are never reused: the range is large).
    pagecache_next: u64,
    /// `lruvec->nonresident_age`: evictions so far (the shadow entry's eviction timestamp).
    nonresident_age: u64,
}

/// How the DAX core releases a lock guard: with the current step (drop), or, with `step`, as a
/// scheduling point of its own.
pub trait Release {
    fn release(self, step: bool) -> impl Future<Output = ()>;
}

impl<P: Platform, T> Release for SpinLockGuard<'_, P, T> {
    async fn release(self, step: bool) {
        if step {
            self.unlock().await
        } else {
            drop(self)
        }
    }
}

impl<P: Platform, T> Release for RwSemReadGuard<'_, P, T> {
    async fn release(self, step: bool) {
        if step {
            self.unlock().await
        } else {
            drop(self)
        }
    }
}

/// The first pfn the model hands out for anonymous pages: DRAM above the zero pages, below
/// the pmem (pfn 0x100000 and up).
pub const ANON_BASE_PFN: u64 = 0x2000;

impl<P: Platform> Dax<P> {
    /// `init_dax_wait_table`: the kernel's 4096 buckets.
    pub fn new(p: &P, world: Arc<MmWorld<P>>, bugs: BugSet) -> Dax<P> {
        Dax::with_wait_table_bits(p, world, bugs, DAX_WAIT_TABLE_BITS)
    }

    /// A wait table of `1 << bits` buckets (1 ..= 12). Fewer buckets change only which keys
    /// share a queue: waking is filtered by key, so no waiter behaves differently, while each
    /// simulated run creates (and a search re-creates) fewer objects. Exhaustive tests use it.
    pub fn with_wait_table_bits(p: &P, world: Arc<MmWorld<P>>, bugs: BugSet, bits: u32) -> Dax<P> {
        let bits = bits.clamp(1, DAX_WAIT_TABLE_BITS);
        let wait_table = WaitQueue::table(p, "dax_wait_table", 1usize << bits);
        Dax {
            world,
            bugs,
            release_steps: false,
            wait_bits: bits,
            wait_table,
            page_alloc: SpinLock::new(
                p,
                "page_alloc",
                PageAlloc {
                    anon_next: ANON_BASE_PFN,
                    pagecache_next: crate::pgtable::PAGECACHE_BASE_PFN,
                    nonresident_age: 0,
                },
            ),
        }
    }

    /// `alloc_page(GFP_HIGHUSER_MOVABLE)` for a copy-on-write fault: a fresh anonymous pfn.
    pub async fn alloc_anon_page(&self, p: &P) -> u64 {
        let mut g = self.page_alloc.lock(p).await;
        let pfn = g.anon_next;
        g.anon_next += 1;
        drop(g);
        pfn
    }

    /// `find_or_create_page(mapping, index, GFP | __GFP_ZERO)` for a 4.x hole page (bug mode
    /// `shadow-entries`): a fresh zeroed page-cache pfn.
    pub async fn alloc_hole_page(&self, p: &P) -> u64 {
        let mut g = self.page_alloc.lock(p).await;
        let pfn = g.pagecache_next;
        g.pagecache_next += 1;
        drop(g);
        // The range ends where the pmem begins; a run never allocates half a million pages.
        assert!(
            crate::pgtable::is_pagecache_pfn(pfn),
            "page-cache pfns exhausted"
        );
        pfn
    }

    /// `workingset_eviction`'s clock: advance `lruvec->nonresident_age` for one eviction and
    /// return the eviction's timestamp.
    pub async fn workingset_age_nonresident(&self, p: &P) -> u64 {
        let mut g = self.page_alloc.lock(p).await;
        g.nonresident_age += 1;
        let age = g.nonresident_age;
        drop(g);
        age
    }

    /// Whether bug mode `b` is on.
    #[inline]
    pub fn bug(&self, b: DaxBug) -> bool {
        self.bugs.on(b)
    }

    /// Bucket `i` of the wait table.
    pub fn wait_queue(&self, i: usize) -> &WaitQueue<P> {
        &self.wait_table[i]
    }

    /// `DAX_WAIT_TABLE_BITS` of this table.
    pub fn wait_table_bits(&self) -> u32 {
        self.wait_bits
    }

    /// The `(1 << PMD_ORDER)`-page zero folio and the 4 KiB zero page (DRAM pfns, no struct
    /// page in the pmem memmap).
    pub fn zero_pfns(&self) -> (u64, u64) {
        (crate::pgtable::ZERO_PFN, crate::pgtable::HUGE_ZERO_PFN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bug_names_are_in_the_catalogue() {
        for b in DaxBug::ALL {
            assert_eq!(DaxBug::from_name(b.name()), Some(b));
            assert!(crate::bugs::bug_mode(b.name()).is_some(), "{b}");
            assert!(b.mechanism().is_some(), "{b} has no mechanism");
        }
        let s = BugSet::from_names(&["pmd-missed-wakeup", "reflink-page-mapping"]).unwrap();
        assert!(s.on(DaxBug::PmdMissedWakeup));
        assert!(!s.on(DaxBug::NoEntryLock));
        assert_eq!(s.iter().count(), 1);
        assert!(BugSet::from_names(&["nope"]).is_err());
        assert!(BugSet::NONE.is_empty());
        assert_eq!(format!("{s:?}"), "{\"pmd-missed-wakeup\"}");
    }
}
