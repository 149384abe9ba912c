//! Consistency of struct pages, page tables and xarrays.
//!
//! [`check`] is a pure function over an [`MmSnapshot`] and returns structured [`Violation`]s
//! (it never reports through the Platform, so the executor can call it between any two steps).
//! [`snapshot`] builds the snapshot by taking every lock in turn: use it at the end of a run or
//! from a single task while nothing else runs. [`peek_snapshot`] builds it between two steps of
//! a running simulation with the lock-aware peeks (no step, no scheduling point), and
//! [`install_checks`] registers both forms with a [`Sim`]: the non-quiescent rules after every
//! step, the quiescent ones when every task has finished.
//!
//! Some invariants only hold when no operation is half done (a zap drops mapcounts under the
//! page-table lock but references only after the TLB flush; an entry is locked while a fault
//! runs): those are checked only with `quiescent`.

use crate::MappingId;
use crate::dax_entry::{
    DAX_LOCKED, PAGE_SHIFT, dax_entry_nr_pfns, dax_flags, dax_is_empty_entry, dax_is_pmd_entry,
    dax_is_zero_entry, dax_to_pfn,
};
use crate::mm::VmaBounds;
use crate::page::{MemMapSnapshot, PG_BLOCK_FREE, Page, Pfn};
use crate::pgtable::{Leaf, is_huge_zero_pfn, is_pagecache_pfn, is_zero_pfn};
use crate::world::MmWorld;
use crate::xarray::{XArray, XaEntry};
use crate::{MmId, dax_entry::PG_PMD_NR};
use serde::{Deserialize, Serialize};
use sim_core::Platform;
use sim_core::sim::{CheckFailure, Sim, SimPlatform, peek_task_in_fn};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// One process's view: its VMAs (with the file each maps) and every present leaf.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MmView {
    pub id: MmId,
    pub vmas: Vec<(VmaBounds, MappingId)>,
    pub leaves: Vec<Leaf>,
}

/// One address space's xarray.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MappingView {
    pub id: MappingId,
    pub xa: XArray,
}

/// Everything the checker looks at.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MmSnapshot {
    pub memmap: MemMapSnapshot,
    pub mms: Vec<MmView>,
    pub mappings: Vec<MappingView>,
    /// Ids of address spaces whose inode was evicted.
    pub freed_mappings: Vec<MappingId>,
    /// A task is inside `invalidate_inode_pages2_range` (see [`INVALIDATE_FN`]): the window in
    /// which a leaf may outlive its entry (`check_leaf_entry`). Never at rest.
    #[serde(default)]
    pub invalidating: bool,
}

/// The one kernel function that deletes DAX entries before it unmaps them.
pub const INVALIDATE_FN: &str = "invalidate_inode_pages2_range";

/// A broken invariant.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Violation {
    LeafOutsideVma {
        mm: MmId,
        addr: u64,
    },
    WritableInReadOnlyVma {
        mm: MmId,
        addr: u64,
    },
    PrivateWritablePmem {
        mm: MmId,
        addr: u64,
        pfn: Pfn,
    },
    SpecialNotZeroPage {
        mm: MmId,
        addr: u64,
        pfn: Pfn,
    },
    WritableZeroPage {
        mm: MmId,
        addr: u64,
    },
    AnonInSharedVma {
        mm: MmId,
        addr: u64,
        pfn: Pfn,
    },
    MisalignedHugeLeaf {
        mm: MmId,
        addr: u64,
        pfn: Pfn,
    },
    MappedWithoutMapcount {
        mm: MmId,
        addr: u64,
        pfn: Pfn,
    },
    WrongAssociation {
        mm: MmId,
        addr: u64,
        pfn: Pfn,
        expected: (u32, u64),
        found: (u32, u64),
    },
    MappedAfterFree {
        mm: MmId,
        addr: u64,
        pfn: Pfn,
    },
    LeafWithoutEntry {
        mm: MmId,
        addr: u64,
        pfn: Pfn,
    },
    LeafEntryMismatch {
        mm: MmId,
        addr: u64,
        pfn: Pfn,
        huge: bool,
        entry: u64,
    },
    MapcountMismatch {
        pfn: Pfn,
        mapcount: u32,
        mapped: u32,
    },
    RefcountMismatch {
        pfn: Pfn,
        refcount: u32,
        mapcount: u32,
        pincount: u32,
    },
    PinsExceedRefs {
        pfn: Pfn,
        refcount: u32,
        pincount: u32,
    },
    ShareWithMapping {
        pfn: Pfn,
        mapping: u32,
        share: u32,
    },
    PageOfFreedMapping {
        pfn: Pfn,
        mapping: u32,
    },
    BusyAfterFree {
        pfn: Pfn,
        refcount: u32,
        pincount: u32,
    },
    NrpagesMismatch {
        mapping: MappingId,
        nrpages: u64,
        entries: u64,
    },
    EntryLockedAtRest {
        mapping: MappingId,
        index: u64,
    },
    EntryPageNotAssociated {
        mapping: MappingId,
        index: u64,
        pfn: Pfn,
    },
    AssociatedPageNotInXarray {
        pfn: Pfn,
        mapping: u32,
        index: u64,
    },
}

impl Violation {
    /// A short machine-readable name.
    pub fn name(&self) -> &'static str {
        match self {
            Violation::LeafOutsideVma { .. } => "leaf-outside-vma",
            Violation::WritableInReadOnlyVma { .. } => "writable-in-read-only-vma",
            Violation::PrivateWritablePmem { .. } => "private-writable-pmem",
            Violation::SpecialNotZeroPage { .. } => "special-not-zero-page",
            Violation::WritableZeroPage { .. } => "writable-zero-page",
            Violation::AnonInSharedVma { .. } => "anon-in-shared-vma",
            Violation::MisalignedHugeLeaf { .. } => "misaligned-huge-leaf",
            Violation::MappedWithoutMapcount { .. } => "mapped-without-mapcount",
            Violation::WrongAssociation { .. } => "wrong-association",
            Violation::MappedAfterFree { .. } => "mapped-after-free",
            Violation::LeafWithoutEntry { .. } => "leaf-without-entry",
            Violation::LeafEntryMismatch { .. } => "leaf-entry-mismatch",
            Violation::MapcountMismatch { .. } => "mapcount-mismatch",
            Violation::RefcountMismatch { .. } => "refcount-mismatch",
            Violation::PinsExceedRefs { .. } => "pins-exceed-refs",
            Violation::ShareWithMapping { .. } => "share-with-mapping",
            Violation::PageOfFreedMapping { .. } => "page-of-freed-mapping",
            Violation::BusyAfterFree { .. } => "busy-after-free",
            Violation::NrpagesMismatch { .. } => "nrpages-mismatch",
            Violation::EntryLockedAtRest { .. } => "entry-locked-at-rest",
            Violation::EntryPageNotAssociated { .. } => "entry-page-not-associated",
            Violation::AssociatedPageNotInXarray { .. } => "associated-page-not-in-xarray",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {self:?}", self.name())
    }
}

/// Check every invariant of `s`. `quiescent`: no operation is in progress.
pub fn check(s: &MmSnapshot, quiescent: bool) -> Vec<Violation> {
    let mut out = vec![];
    let mut mapped: BTreeMap<Pfn, u32> = BTreeMap::new();
    // No invalidation is half done at rest.
    let invalidating = s.invalidating && !quiescent;
    for mm in &s.mms {
        check_mm(s, mm, invalidating, &mut mapped, &mut out);
    }
    check_pages(s, &mapped, quiescent, &mut out);
    for m in &s.mappings {
        check_mapping(s, m, quiescent, &mut out);
    }
    out
}

fn check_mm(
    s: &MmSnapshot,
    mm: &MmView,
    invalidating: bool,
    mapped: &mut BTreeMap<Pfn, u32>,
    out: &mut Vec<Violation>,
) {
    let id = mm.id;
    for leaf in &mm.leaves {
        let addr = leaf.addr();
        let pfn = leaf.pfn();
        let nr = leaf.size() >> PAGE_SHIFT;
        // Every present leaf lies inside one VMA of its mm (munmap zaps before it unlinks).
        let Some((vma, file)) = mm
            .vmas
            .iter()
            .find(|(b, _)| b.vm_start <= addr && addr + leaf.size() <= b.vm_end)
        else {
            out.push(Violation::LeafOutsideVma { mm: id, addr });
            continue;
        };
        // A writable leaf needs a writable VMA (ef947b2: nothing writes through a read-only map).
        if leaf.write() && !vma.writable() {
            out.push(Violation::WritableInReadOnlyVma { mm: id, addr });
        }
        let orphan = check_leaf_entry(s, mm, leaf, vma, *file, invalidating, out);
        if leaf.special() {
            // Special leaves are the zero pages, and they are never writable.
            if !(is_zero_pfn(pfn) || is_huge_zero_pfn(pfn)) {
                out.push(Violation::SpecialNotZeroPage { mm: id, addr, pfn });
            } else if leaf.write() {
                out.push(Violation::WritableZeroPage { mm: id, addr });
            }
            continue;
        }
        if is_pagecache_pfn(pfn) {
            check_hole_page_leaf(s, mm, leaf, vma, *file, out);
            continue;
        }
        if s.memmap.get(pfn).is_none() {
            // A leaf outside the pmem memmap is an anonymous CoW copy: private VMAs only.
            if vma.shared() {
                out.push(Violation::AnonInSharedVma { mm: id, addr, pfn });
            }
            continue;
        }
        // A private VMA maps pmem read-only: writes go to a CoW copy.
        if leaf.write() && !vma.shared() {
            out.push(Violation::PrivateWritablePmem { mm: id, addr, pfn });
        }
        // A huge leaf maps a 2 MiB-aligned folio.
        if nr > 1 && pfn % PG_PMD_NR != 0 {
            out.push(Violation::MisalignedHugeLeaf { mm: id, addr, pfn });
        }
        for i in 0..nr {
            let f = pfn + i;
            let Some(pg) = s.memmap.get(f) else { continue };
            *mapped.entry(f).or_default() += 1;
            let a = addr + (i << PAGE_SHIFT);
            // A mapped page counts its mappings.
            if pg.mapcount == 0 {
                out.push(Violation::MappedWithoutMapcount {
                    mm: id,
                    addr: a,
                    pfn: f,
                });
            }
            // A mapped page belongs to the mapped file at the mapped offset, or is shared
            // (reflink: mapping NULL, share count > 0).
            let expected = (file.0, vma.linear_page_index(a));
            let shared = pg.mapping == 0 && pg.share > 0;
            if !shared && !orphan && (pg.mapping, pg.index) != expected {
                out.push(Violation::WrongAssociation {
                    mm: id,
                    addr: a,
                    pfn: f,
                    expected,
                    found: (pg.mapping, pg.index),
                });
            }
            // No page is mapped once its block went back to the allocator.
            if pg.block_free() {
                out.push(Violation::MappedAfterFree {
                    mm: id,
                    addr: a,
                    pfn: f,
                });
            }
        }
    }
}

/// A leaf of a file mapping that maps pmem or a zero page is backed by the DAX entry at its
/// index, of its level: fs/dax.c stores the entry before it maps (`dax_insert_entry`, then
/// `vmf_insert_*`) and unmaps before it deletes or downgrades one (`__dax_invalidate_entry`,
/// the PMD downgrade of `grab_mapping_entry`). Anonymous CoW copies have no entry.
///
/// The exception: mid-run (`invalidating` is false at rest), while a task is in
/// `invalidate_inode_pages2_range` ([`MmSnapshot::invalidating`]), a leaf may have lost its entry. That function (write(2)
/// into newly allocated blocks, `dax_iomap_iter`) deletes the clean entries of its range
/// (`dax_invalidate_mapping_entry_sync`, which disassociates their pages) and unmaps the range
/// only afterwards (mm/truncate.c: "For DAX we invalidate page tables after invalidating page
/// cache"), so a fault that maps the index before the deletion leaves a leaf without an entry
/// until that unmap. Such a leaf is read-only (its entry was clean: a writable leaf stands for
/// a dirty entry, which invalidation keeps) and maps the zero page or a page no longer
/// associated with a file (`mapping` NULL). Returns whether the leaf is such an orphan (its
/// page's association is then not checked either).
fn check_leaf_entry(
    s: &MmSnapshot,
    mm: &MmView,
    leaf: &Leaf,
    vma: &VmaBounds,
    file: MappingId,
    invalidating: bool,
    out: &mut Vec<Violation>,
) -> bool {
    let (addr, pfn) = (leaf.addr(), leaf.pfn());
    let zero = is_zero_pfn(pfn) || is_huge_zero_pfn(pfn);
    let Some(m) = s.mappings.iter().find(|m| m.id == file) else {
        return false;
    };
    if !zero && s.memmap.get(pfn).is_none() {
        return false;
    }
    let index = vma.linear_page_index(addr);
    let id = mm.id;
    let Some(it) = m.xa.lookup(index).filter(|it| it.entry.is_value()) else {
        let disassociated = zero
            || (0..leaf.size() >> PAGE_SHIFT)
                .all(|i| s.memmap.get(pfn + i).is_some_and(|pg| pg.mapping == 0));
        let orphan = invalidating && !leaf.write() && disassociated;
        if !orphan {
            out.push(Violation::LeafWithoutEntry { mm: id, addr, pfn });
        }
        return orphan;
    };
    let e = it.entry;
    let huge = leaf.size() > 1 << PAGE_SHIFT;
    // The leaf's level: a huge leaf needs a PMD entry (a PTE may map part of a PMD entry).
    let level_ok = !huge || dax_is_pmd_entry(e);
    // The leaf's content: a zero page for a zero entry, else the entry's block at this index.
    let content_ok = if zero {
        dax_is_zero_entry(e)
    } else {
        !dax_is_zero_entry(e)
            && !dax_is_empty_entry(e)
            && pfn == dax_to_pfn(e) + (index - it.index) % dax_entry_nr_pfns(e).max(1)
    };
    if !(level_ok && content_ok) {
        out.push(Violation::LeafEntryMismatch {
            mm: id,
            addr,
            pfn,
            huge,
            entry: e.0,
        });
    }
    false
}

/// A leaf that maps a page-cache page (a 4.x hole page, bug mode `shadow-entries`) is read-only
/// (it holds zeros for a hole) and maps the page at its own index of the mapped file, or that
/// index's entry is locked: the page is being taken out (`dax_lock_hole_page` locks the slot,
/// then unmaps), or put in (`dax_load_hole` maps it under the entry lock, then stores it).
fn check_hole_page_leaf(
    s: &MmSnapshot,
    mm: &MmView,
    leaf: &Leaf,
    vma: &VmaBounds,
    file: MappingId,
    out: &mut Vec<Violation>,
) {
    let (addr, pfn, id) = (leaf.addr(), leaf.pfn(), mm.id);
    if leaf.write() {
        out.push(Violation::WritableZeroPage { mm: id, addr });
    }
    let Some(m) = s.mappings.iter().find(|m| m.id == file) else {
        return;
    };
    let index = vma.linear_page_index(addr);
    match m.xa.lookup(index).map(|it| it.entry) {
        Some(e) if e == XaEntry::from_folio_pfn(pfn) => {}
        Some(e) if e.is_value() && dax_flags(e) & DAX_LOCKED != 0 => {}
        Some(e) => out.push(Violation::LeafEntryMismatch {
            mm: id,
            addr,
            pfn,
            huge: leaf.size() > 1 << PAGE_SHIFT,
            entry: e.0,
        }),
        None => out.push(Violation::LeafWithoutEntry { mm: id, addr, pfn }),
    }
}

/// A free block's page that nothing uses: `PG_BLOCK_FREE` alone.
const FREE_IDLE: Page = Page {
    refcount: 0,
    mapcount: 0,
    pincount: 0,
    flags: PG_BLOCK_FREE,
    mapping: 0,
    share: 0,
    index: 0,
};

fn check_pages(
    s: &MmSnapshot,
    mapped: &BTreeMap<Pfn, u32>,
    quiescent: bool,
    out: &mut Vec<Violation>,
) {
    // `mapped` holds pfns of the memmap only, in order: walk it alongside the pages.
    let mut mapped_iter = mapped.iter().peekable();
    for (first, pages) in s.memmap.sections() {
        for (pfn, pg) in (first..).zip(pages) {
            let n = match mapped_iter.peek() {
                Some(&(&f, &n)) if f == pfn => {
                    mapped_iter.next();
                    n
                }
                _ => 0,
            };
            // An untouched page (no counts, flags or owner) that nothing maps breaks no rule
            // below, and neither does an untouched free block (most pages of a run's memmap).
            if n == 0 && (*pg == Page::default() || *pg == FREE_IDLE) {
                continue;
            }
            // mapcount equals the number of present leaves mapping the page.
            if pg.mapcount != n {
                out.push(Violation::MapcountMismatch {
                    pfn,
                    mapcount: pg.mapcount,
                    mapped: n,
                });
            }
            // Pins are references.
            if pg.pincount > pg.refcount {
                out.push(Violation::PinsExceedRefs {
                    pfn,
                    refcount: pg.refcount,
                    pincount: pg.pincount,
                });
            } else if quiescent && pg.refcount != pg.mapcount + pg.pincount {
                // At rest, the references are exactly the mappings plus the pins.
                out.push(Violation::RefcountMismatch {
                    pfn,
                    refcount: pg.refcount,
                    mapcount: pg.mapcount,
                    pincount: pg.pincount,
                });
            }
            // A shared (reflinked) page has no single owner.
            if pg.share > 0 && pg.mapping != 0 {
                out.push(Violation::ShareWithMapping {
                    pfn,
                    mapping: pg.mapping,
                    share: pg.share,
                });
            }
            // page->mapping never points to an evicted inode.
            if pg.mapping != 0 && s.freed_mappings.contains(&MappingId(pg.mapping)) {
                out.push(Violation::PageOfFreedMapping {
                    pfn,
                    mapping: pg.mapping,
                });
            }
            // A free block holds no references (pins included).
            if pg.block_free() && (pg.refcount != 0 || pg.pincount != 0) {
                out.push(Violation::BusyAfterFree {
                    pfn,
                    refcount: pg.refcount,
                    pincount: pg.pincount,
                });
            }
            if quiescent && pg.mapping != 0 && !s.freed_mappings.contains(&MappingId(pg.mapping)) {
                // An associated page is covered by a block entry of its mapping at its index.
                let covered = s
                    .mappings
                    .iter()
                    .find(|m| m.id.0 == pg.mapping)
                    .is_some_and(|m| {
                        m.xa.lookup(pg.index).is_some_and(|it| {
                            let e = it.entry;
                            e.is_value() && {
                                let first = dax_to_pfn(e);
                                (first..first + dax_entry_nr_pfns(e)).contains(&pfn)
                            }
                        })
                    });
                if !covered {
                    out.push(Violation::AssociatedPageNotInXarray {
                        pfn,
                        mapping: pg.mapping,
                        index: pg.index,
                    });
                }
            }
        }
    }
}

fn check_mapping(s: &MmSnapshot, m: &MappingView, quiescent: bool, out: &mut Vec<Violation>) {
    // nrpages counts the indices covered by entries (1 << order each).
    let entries = m.xa.nr_indices();
    if m.xa.nrpages != entries {
        out.push(Violation::NrpagesMismatch {
            mapping: m.id,
            nrpages: m.xa.nrpages,
            entries,
        });
    }
    if !quiescent {
        return;
    }
    for it in m.xa.all_items() {
        let e = it.entry;
        if !e.is_value() {
            continue;
        }
        // No DAX entry stays locked once every operation has finished.
        if dax_flags(e) & DAX_LOCKED != 0 {
            out.push(Violation::EntryLockedAtRest {
                mapping: m.id,
                index: it.index,
            });
        }
        if dax_is_zero_entry(e) || dax_is_empty_entry(e) {
            continue;
        }
        // Every page of a block-backed entry is associated with the mapping at its own index
        // (1571c029a2ff: a PTE fault on a PMD entry left 511 pages without one), or shared.
        let first = dax_to_pfn(e);
        for i in 0..dax_entry_nr_pfns(e) {
            let pfn = first + i;
            let Some(pg) = s.memmap.get(pfn) else {
                continue;
            };
            let ok = (pg.mapping == m.id.0 && pg.index == it.index + i)
                || (pg.mapping == 0 && pg.share > 0);
            if !ok {
                out.push(Violation::EntryPageNotAssociated {
                    mapping: m.id,
                    index: it.index + i,
                    pfn,
                });
            }
        }
    }
}

/// Build a snapshot by taking each lock in turn (a quiescent state: nothing else may run).
pub async fn snapshot<P: Platform>(p: &P, world: &MmWorld<P>) -> MmSnapshot {
    let memmap = world.memmap.snapshot(p).await;
    let t = world.mappings.lock(p).await;
    let live: Vec<_> = t.live().cloned().collect();
    t.unlock().await;
    let mut mappings = vec![];
    let mut live_ids = vec![];
    for m in &live {
        live_ids.push(m.id);
        let xa = m.i_pages.lock(p).await;
        mappings.push(MappingView {
            id: m.id,
            xa: xa.clone(),
        });
        xa.unlock().await;
    }
    let t = world.mappings.lock(p).await;
    let freed_mappings = t.freed_ids();
    t.unlock().await;
    let tl = world.tasks.lock(p).await;
    let mm_list: Vec<_> = tl.procs.values().map(|pr| pr.mm.clone()).collect();
    tl.unlock().await;
    let mut mms = vec![];
    for mm in mm_list {
        let v = mm.mmap_lock.read(p).await;
        let vmas = v.iter().map(|v| (v.b, v.vm_file.id)).collect();
        v.unlock().await;
        let pt = mm.page_table.lock(p).await;
        let leaves = pt.all_leaves();
        pt.unlock().await;
        mms.push(MmView {
            id: mm.id,
            vmas,
            leaves,
        });
    }
    MmSnapshot {
        memmap,
        mms,
        mappings,
        freed_mappings,
        invalidating: false,
    }
}

/// [`snapshot`] built between two steps through lock-aware peeks, or `None` while a task holds
/// one of the locks it reads (the data may be mid-update; the step after will tell).
pub fn peek_snapshot<P: Platform>(p: &P, world: &MmWorld<P>) -> Option<MmSnapshot> {
    let memmap = world.memmap.peek_snapshot(p)?;
    let (live, freed_mappings) = world.mappings.peek(p, |t| {
        (t.live().cloned().collect::<Vec<_>>(), t.freed_ids())
    })?;
    let mut mappings = Vec::with_capacity(live.len());
    for m in &live {
        let xa = m.i_pages.peek(p, |xa| xa.clone())?;
        mappings.push(MappingView { id: m.id, xa });
    }
    let mm_list = world.tasks.peek(p, |tl| {
        tl.procs
            .values()
            .map(|pr| pr.mm.clone())
            .collect::<Vec<_>>()
    })?;
    let mut mms = Vec::with_capacity(mm_list.len());
    for mm in mm_list {
        let vmas = mm
            .mmap_lock
            .peek(p, |v| v.iter().map(|v| (v.b, v.vm_file.id)).collect())?;
        let leaves = mm.page_table.peek(p, |pt| pt.all_leaves())?;
        mms.push(MmView {
            id: mm.id,
            vmas,
            leaves,
        });
    }
    Some(MmSnapshot {
        memmap,
        mms,
        mappings,
        freed_mappings,
        invalidating: false,
    })
}

/// When the invariants of a world are checked during a simulated run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CheckPolicy {
    /// After every step (the non-quiescent rules, on a peeked snapshot; steps after which a
    /// lock the snapshot needs is held are skipped).
    pub every_step: bool,
    /// When every task has finished (every rule, quiescent).
    pub at_end: bool,
}

impl Default for CheckPolicy {
    /// Every step in debug builds (tests), only at the end in release builds (where the CLI's
    /// `--check-invariants` asks for every step).
    fn default() -> Self {
        CheckPolicy {
            every_step: cfg!(debug_assertions),
            at_end: true,
        }
    }
}

fn failure(vs: Vec<Violation>, when: &str) -> Option<CheckFailure> {
    const SHOWN: usize = 4;
    let first = vs.first()?;
    let mut list: Vec<String> = vs.iter().take(SHOWN).map(|v| v.to_string()).collect();
    if vs.len() > SHOWN {
        list.push(format!("and {} more", vs.len() - SHOWN));
    }
    Some(CheckFailure {
        name: first.name().to_string(),
        message: format!("{when}: {}", list.join("; ")),
    })
}

/// Register the invariants of `world` as step and end checks of `sim` (see [`CheckPolicy`]).
/// The checks only peek: they change neither the run's steps nor its choices.
pub fn install_checks(sim: &mut Sim, world: &Arc<MmWorld<SimPlatform>>, policy: CheckPolicy) {
    let p = sim.platform();
    if policy.every_step {
        let w = world.clone();
        sim.add_step_check(move |info| {
            // A step that released no lock changed nothing a peek sees.
            if !info.released_a_lock() {
                return None;
            }
            let mut snap = peek_snapshot(&p, &w)?;
            snap.invalidating = peek_task_in_fn(INVALIDATE_FN);
            failure(check(&snap, false), "mid-run")
        });
    }
    if policy.at_end {
        let w = world.clone();
        sim.add_end_check(move || match peek_snapshot(&p, &w) {
            Some(snap) => failure(check(&snap, true), "at the end"),
            None => Some(CheckFailure {
                name: "lock-held-at-end".into(),
                message: "every task finished, but an mm lock is still held".into(),
            }),
        });
    }
}

/// [`snapshot`] then [`check`].
pub async fn check_world<P: Platform>(
    p: &P,
    world: &MmWorld<P>,
    quiescent: bool,
) -> Vec<Violation> {
    check(&snapshot(p, world).await, quiescent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dax_entry::{DAX_PMD, PMD_SIZE, dax_make_entry};
    use crate::mm::{VM_READ, VM_SHARED, VM_WRITE};
    use crate::page::PG_BLOCK_FREE;
    use crate::pgtable::{_PAGE_RW, _PAGE_SPECIAL, Pmd, Pte, ZERO_PFN};

    const B: Pfn = 0x10_0000;
    const VA: u64 = 0x7f00_0000_0000;

    /// A consistent state: one file with a PTE entry (index 0) and a PMD entry (index 512), both
    /// mapped by one process, one page of the PMD pinned.
    fn good() -> MmSnapshot {
        let mut pages = vec![Page::default(); 1024];
        let mut set = |pfn: Pfn, index: u64| {
            let pg = &mut pages[(pfn - B) as usize];
            *pg = Page {
                refcount: 1,
                mapcount: 1,
                mapping: 1,
                index,
                ..Page::default()
            };
        };
        set(B + 1, 0);
        for i in 0..512 {
            set(B + 512 + i, 512 + i);
        }
        pages[600].refcount = 2;
        pages[600].pincount = 1;
        let mut xa = XArray::new();
        xa.xa_store(0, dax_make_entry(B + 1, 0));
        xa.xa_store_order(512, 9, dax_make_entry(B + 512, DAX_PMD));
        xa.nrpages = 513;
        MmSnapshot {
            memmap: MemMapSnapshot::from_pages(B, pages),
            mms: vec![MmView {
                id: MmId(1),
                vmas: vec![(
                    VmaBounds {
                        vm_start: VA,
                        vm_end: VA + 2 * PMD_SIZE,
                        vm_pgoff: 0,
                        vm_flags: VM_READ | VM_WRITE | VM_SHARED,
                    },
                    MappingId(1),
                )],
                leaves: vec![
                    Leaf::Pte {
                        addr: VA,
                        pte: Pte::mk(B + 1, _PAGE_RW),
                    },
                    Leaf::Pmd {
                        addr: VA + PMD_SIZE,
                        pmd: Pmd::mk_huge(B + 512, 0),
                    },
                ],
            }],
            mappings: vec![MappingView {
                id: MappingId(1),
                xa,
            }],
            freed_mappings: vec![],
            invalidating: false,
        }
    }

    fn names(s: &MmSnapshot, quiescent: bool) -> Vec<&'static str> {
        check(s, quiescent).iter().map(|v| v.name()).collect()
    }

    /// Break `good()` with `f` and expect `name` among the violations.
    fn broken(name: &str, f: impl FnOnce(&mut MmSnapshot)) {
        let mut s = good();
        f(&mut s);
        let n = names(&s, true);
        assert!(n.contains(&name), "expected {name}, got {n:?}");
    }

    fn page(s: &mut MmSnapshot, pfn: Pfn) -> &mut Page {
        s.memmap.get_mut(pfn).expect("a pfn of the memmap")
    }

    fn add_leaf(s: &mut MmSnapshot, l: Leaf) {
        s.mms[0].leaves.push(l);
    }

    #[test]
    fn a_consistent_state_passes() {
        assert_eq!(check(&good(), true), vec![]);
    }

    #[test]
    fn each_page_table_invariant_fails_on_a_broken_state() {
        broken("leaf-outside-vma", |s| {
            add_leaf(
                s,
                Leaf::Pte {
                    addr: VA - 0x1000,
                    pte: Pte::mk(ZERO_PFN, _PAGE_SPECIAL),
                },
            )
        });
        broken("writable-in-read-only-vma", |s| {
            s.mms[0].vmas[0].0.vm_flags &= !VM_WRITE
        });
        broken("private-writable-pmem", |s| {
            s.mms[0].vmas[0].0.vm_flags &= !VM_SHARED
        });
        broken("special-not-zero-page", |s| {
            add_leaf(
                s,
                Leaf::Pte {
                    addr: VA + 0x1000,
                    pte: Pte::mk(5, _PAGE_SPECIAL),
                },
            )
        });
        broken("writable-zero-page", |s| {
            let pte = Pte::mk(ZERO_PFN, _PAGE_SPECIAL | _PAGE_RW);
            add_leaf(
                s,
                Leaf::Pte {
                    addr: VA + 0x1000,
                    pte,
                },
            )
        });
        broken("anon-in-shared-vma", |s| {
            add_leaf(
                s,
                Leaf::Pte {
                    addr: VA + 0x1000,
                    pte: Pte::mk(0x5000, _PAGE_RW),
                },
            )
        });
        broken("misaligned-huge-leaf", |s| {
            s.mms[0].leaves[1] = Leaf::Pmd {
                addr: VA + PMD_SIZE,
                pmd: Pmd::mk_huge(B + 513, 0),
            }
        });
        broken("mapped-without-mapcount", |s| page(s, B + 1).mapcount = 0);
        broken("wrong-association", |s| page(s, B + 1).index = 7);
        broken("mapped-after-free", |s| {
            page(s, B + 1).flags |= PG_BLOCK_FREE
        });
    }

    #[test]
    fn each_leaf_entry_invariant_fails_on_a_broken_state() {
        broken("leaf-without-entry", |s| {
            s.mappings[0].xa.xa_erase(0);
            s.mappings[0].xa.nrpages -= 1;
        });
        // A zero page mapped over a hole that has no zero entry.
        broken("leaf-without-entry", |s| {
            let pte = Pte::mk(ZERO_PFN, _PAGE_SPECIAL);
            add_leaf(
                s,
                Leaf::Pte {
                    addr: VA + 0x1000,
                    pte,
                },
            )
        });
        // The PTE maps another block than its entry's.
        broken("leaf-entry-mismatch", |s| {
            s.mms[0].leaves[0] = Leaf::Pte {
                addr: VA,
                pte: Pte::mk(B + 2, _PAGE_RW),
            }
        });
        // A huge leaf over an entry that is not a PMD entry.
        broken("leaf-entry-mismatch", |s| {
            s.mappings[0]
                .xa
                .xa_store_order(512, 9, dax_make_entry(B + 512, 0));
        });
        // A zero page over a block entry.
        broken("leaf-entry-mismatch", |s| {
            s.mms[0].leaves[0] = Leaf::Pte {
                addr: VA,
                pte: Pte::mk(ZERO_PFN, _PAGE_SPECIAL),
            }
        });
        // A PTE mapping one page of a PMD entry is fine.
        let mut s = good();
        s.mms[0].leaves[1] = Leaf::Pte {
            addr: VA + PMD_SIZE + 0x3000,
            pte: Pte::mk(B + 512 + 3, _PAGE_RW),
        };
        let n: Vec<_> = names(&s, false)
            .into_iter()
            .filter(|n| n.starts_with("leaf-"))
            .collect();
        assert!(n.is_empty(), "{n:?}");
    }

    /// The window of `invalidate_inode_pages2_range`: a read-only leaf whose clean entry was
    /// deleted (its page disassociated) before the final unmap passes mid-run while a task is
    /// in that function, and nowhere else; a writable or still associated leaf never does.
    #[test]
    fn a_leaf_without_entry_passes_only_inside_an_invalidation() {
        let orphaned = |write: bool, invalidating: bool| {
            let mut s = good();
            s.mappings[0].xa.xa_erase(0);
            s.mappings[0].xa.nrpages -= 1;
            *page(&mut s, B + 1) = Page {
                refcount: 1,
                mapcount: 1,
                ..Page::default()
            };
            let flags = if write { _PAGE_RW } else { 0 };
            s.mms[0].leaves[0] = Leaf::Pte {
                addr: VA,
                pte: Pte::mk(B + 1, flags),
            };
            s.invalidating = invalidating;
            s
        };
        let mid_run = |s: &MmSnapshot| names(s, false);
        assert_eq!(mid_run(&orphaned(false, true)), Vec::<&str>::new());
        // No invalidation in progress: the same state is broken.
        let n = mid_run(&orphaned(false, false));
        assert!(n.contains(&"leaf-without-entry"), "{n:?}");
        assert!(n.contains(&"wrong-association"), "{n:?}");
        // A writable leaf stood for a dirty entry, which invalidation keeps.
        let n = mid_run(&orphaned(true, true));
        assert!(n.contains(&"leaf-without-entry"), "{n:?}");
        // A page still associated with the file lost its entry some other way.
        let mut s = good();
        s.mappings[0].xa.xa_erase(0);
        s.mappings[0].xa.nrpages -= 1;
        s.mms[0].leaves[0] = Leaf::Pte {
            addr: VA,
            pte: Pte::mk(B + 1, 0),
        };
        s.invalidating = true;
        assert!(mid_run(&s).contains(&"leaf-without-entry"));
        // The zero page over a deleted zero entry.
        let mut s = good();
        s.invalidating = true;
        add_leaf(
            &mut s,
            Leaf::Pte {
                addr: VA + 0x1000,
                pte: Pte::mk(ZERO_PFN, _PAGE_SPECIAL),
            },
        );
        assert_eq!(mid_run(&s), Vec::<&str>::new());
        // At rest no invalidation runs: quiescent checks never allow it.
        let n = names(&orphaned(false, true), true);
        assert!(n.contains(&"leaf-without-entry"), "{n:?}");
    }

    #[test]
    fn each_page_invariant_fails_on_a_broken_state() {
        broken("mapcount-mismatch", |s| page(s, B + 1).mapcount = 2);
        broken("refcount-mismatch", |s| page(s, B + 1).refcount = 3);
        broken("pins-exceed-refs", |s| page(s, B + 2).pincount = 1);
        broken("share-with-mapping", |s| page(s, B + 1).share = 1);
        broken("page-of-freed-mapping", |s| {
            s.freed_mappings.push(MappingId(1))
        });
        broken("busy-after-free", |s| {
            let pg = page(s, B + 3);
            pg.flags |= PG_BLOCK_FREE;
            pg.refcount = 1;
            pg.pincount = 1;
        });
        broken("associated-page-not-in-xarray", |s| {
            let pg = page(s, B + 6);
            pg.mapping = 1;
            pg.index = 3000;
        });
    }

    #[test]
    fn each_xarray_invariant_fails_on_a_broken_state() {
        broken("nrpages-mismatch", |s| s.mappings[0].xa.nrpages = 1);
        broken("entry-locked-at-rest", |s| {
            s.mappings[0]
                .xa
                .xa_store(0, dax_make_entry(B + 1, DAX_LOCKED));
        });
        broken("entry-page-not-associated", |s| {
            let xa = &mut s.mappings[0].xa;
            xa.xa_store(2000, dax_make_entry(B + 5, 0));
            xa.nrpages += 1;
        });
    }

    #[test]
    fn transient_states_pass_unless_quiescent() {
        let mut s = good();
        // A zap dropped the mapping but not yet the reference; a fault holds an entry lock.
        s.mms[0].leaves.remove(0);
        page(&mut s, B + 1).mapcount = 0;
        s.mappings[0]
            .xa
            .xa_store(0, dax_make_entry(B + 1, DAX_LOCKED));
        assert_eq!(names(&s, false), Vec::<&str>::new());
        let q = names(&s, true);
        assert!(q.contains(&"refcount-mismatch") && q.contains(&"entry-locked-at-rest"));
    }
}
