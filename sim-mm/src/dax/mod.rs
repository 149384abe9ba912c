//! The DAX core: fs/dax.c, function by function (research/linux_dax.md is the specification).
//!
//! | file | what | kernel |
//! | --- | --- | --- |
//! | [`entry`] | the hashed wait table, entry locking, page association | `dax_entry_waitqueue` .. `dax_unlock_entry`, `dax_associate_entry` |
//! | [`iomap`] | what the file system answers for a file range | `struct iomap`, `struct iomap_ops` |
//! | [`fault`] | `grab_mapping_entry`, the PTE and PMD fault paths, holes, MAP_SYNC, CoW | `dax_iomap_fault` and its helpers |
//! | [`test_iomap`] | a small in-memory file system answering iomap calls (tests, benches, toys) | (none) |
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
//! nothing else; each decision point says which mode it honours.

pub mod entry;
pub mod invalidate;
pub mod iomap;
pub mod memory_failure;
pub mod test_iomap;
pub mod writeback;

use crate::world::MmWorld;
use sim_core::{Platform, WaitQueue};
use std::fmt;
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
}

impl DaxBug {
    pub const ALL: [DaxBug; 13] = [
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
        }
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

    /// From catalogue names; names that are not DAX-core modes (e.g. `no-mmaplock`, which the
    /// file system implements) are skipped, unknown names are an error.
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
    /// `wait_table[DAX_WAIT_TABLE_ENTRIES]`.
    wait_table: Box<[WaitQueue<P>]>,
}

impl<P: Platform> Dax<P> {
    /// `init_dax_wait_table`.
    pub fn new(p: &P, world: Arc<MmWorld<P>>, bugs: BugSet) -> Dax<P> {
        let wait_table = (0..DAX_WAIT_TABLE_ENTRIES)
            .map(|_| WaitQueue::new(p, "dax_wait_table"))
            .collect();
        Dax {
            world,
            bugs,
            wait_table,
        }
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
            if b != DaxBug::LockEntryExclusiveWait {
                assert!(crate::bugs::bug_mode(b.name()).is_some(), "{b}");
            }
        }
        let s = BugSet::from_names(&["pmd-missed-wakeup", "no-mmaplock"]).unwrap();
        assert!(s.on(DaxBug::PmdMissedWakeup));
        assert!(!s.on(DaxBug::NoEntryLock));
        assert_eq!(s.iter().count(), 1);
        assert!(BugSet::from_names(&["nope"]).is_err());
        assert!(BugSet::NONE.is_empty());
        assert_eq!(format!("{s:?}"), "{\"pmd-missed-wakeup\"}");
    }
}
