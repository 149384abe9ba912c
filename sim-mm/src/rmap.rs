//! Reverse mapping for file pages: each address space's `i_mmap` tree of the VMAs that map it,
//! and the walks from a page (mapping, index) to the processes and addresses that map it.
//!
//! The tree holds a copy of each VMA's bounds (`vm_start`, `vm_end`, `vm_pgoff`, `vm_flags`)
//! plus a weak handle on its mm: in Linux the walker reads those fields through the vma pointer
//! under `i_mmap_rwsem`, and they only change with `i_mmap_rwsem` held for write, which is when
//! this copy is updated (`vma_interval_tree_insert/remove` in mmap, munmap and VMA splits).

use crate::dax_entry::PAGE_SHIFT;
use crate::mm::MmStruct;
use crate::pgtable::{Leaf, PmdVal};
use crate::world::MmWorld;
use crate::{MappingId, MmId, Pfn};
use sim_core::Platform;
use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

/// One VMA as the i_mmap tree sees it.
pub struct RmapVma<P: Platform> {
    pub mm_id: MmId,
    pub mm: Weak<MmStruct<P>>,
    pub vm_start: u64,
    pub vm_end: u64,
    pub vm_pgoff: u64,
    pub vm_flags: u64,
}

impl<P: Platform> Clone for RmapVma<P> {
    fn clone(&self) -> Self {
        RmapVma {
            mm_id: self.mm_id,
            mm: self.mm.clone(),
            vm_start: self.vm_start,
            vm_end: self.vm_end,
            vm_pgoff: self.vm_pgoff,
            vm_flags: self.vm_flags,
        }
    }
}

impl<P: Platform> RmapVma<P> {
    /// `vma_pages`.
    pub fn pages(&self) -> u64 {
        (self.vm_end - self.vm_start) >> PAGE_SHIFT
    }
    /// The last page offset the VMA maps (`vma_last_pgoff`).
    pub fn last_pgoff(&self) -> u64 {
        self.vm_pgoff + self.pages() - 1
    }
    /// `vma_address(vma, pgoff, nr_pages)`.
    pub fn address(&self, pgoff: u64, nr_pages: u64) -> Option<u64> {
        vma_address(self.vm_start, self.vm_end, self.vm_pgoff, pgoff, nr_pages)
    }
}

/// `vma_address`: the user address of `pgoff` in the VMA; when the range `pgoff .. pgoff+nr`
/// starts before the VMA but reaches into it, the VMA start; `None` (-EFAULT) otherwise.
pub fn vma_address(vm_start: u64, vm_end: u64, vm_pgoff: u64, pgoff: u64, nr: u64) -> Option<u64> {
    if pgoff >= vm_pgoff {
        let addr = vm_start.checked_add((pgoff - vm_pgoff) << PAGE_SHIFT)?;
        (addr < vm_end).then_some(addr)
    } else if pgoff + nr.max(1) > vm_pgoff {
        Some(vm_start)
    } else {
        None
    }
}

/// `linear_page_index(vma, address)`.
pub fn linear_page_index(vm_start: u64, vm_pgoff: u64, address: u64) -> u64 {
    ((address - vm_start) >> PAGE_SHIFT) + vm_pgoff
}

/// `struct rb_root_cached i_mmap`: the VMAs mapping a file, by page offset. An ordered list with
/// a linear overlap scan: a file is mapped by a handful of VMAs in any trace.
pub struct IntervalTree<P: Platform> {
    vmas: BTreeMap<(u64, MmId, u64), RmapVma<P>>,
}

impl<P: Platform> Default for IntervalTree<P> {
    fn default() -> Self {
        IntervalTree {
            vmas: BTreeMap::new(),
        }
    }
}

impl<P: Platform> IntervalTree<P> {
    pub fn new() -> Self {
        Self::default()
    }

    /// `vma_interval_tree_insert`.
    pub fn insert(&mut self, v: RmapVma<P>) {
        self.vmas.insert((v.vm_pgoff, v.mm_id, v.vm_start), v);
    }

    /// `vma_interval_tree_remove` of the VMA of `mm_id` that starts at `vm_start`.
    pub fn remove(&mut self, mm_id: MmId, vm_start: u64, vm_pgoff: u64) -> Option<RmapVma<P>> {
        self.vmas.remove(&(vm_pgoff, mm_id, vm_start))
    }

    /// `vma_interval_tree_foreach(vma, root, first, last)`: VMAs mapping any page offset in
    /// `[first, last]`, ordered by `vm_pgoff`.
    pub fn foreach(&self, first: u64, last: u64) -> impl Iterator<Item = &RmapVma<P>> + '_ {
        self.vmas
            .range(..=(last, MmId(u32::MAX), u64::MAX))
            .map(|(_, v)| v)
            .filter(move |v| v.last_pgoff() >= first)
    }

    /// `RB_EMPTY_ROOT(&mapping->i_mmap.rb_root)`.
    pub fn is_empty(&self) -> bool {
        self.vmas.is_empty()
    }

    pub fn len(&self) -> usize {
        self.vmas.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &RmapVma<P>> + '_ {
        self.vmas.values()
    }
}

/// One place where a page is mapped, found by [`rmap_walk`].
pub struct RmapHit<P: Platform> {
    pub mm: Arc<MmStruct<P>>,
    pub mm_id: MmId,
    pub vm_start: u64,
    pub vm_end: u64,
    pub vm_pgoff: u64,
    pub vm_flags: u64,
    /// The user address of the page in that VMA.
    pub address: u64,
    /// The leaf that maps it right now (`page_vma_mapped_walk`), if any.
    pub leaf: Option<Leaf>,
}

/// `rmap_walk_file` for `nr` pfns from `pfn` owned by `mapping` at `pgoff`: every VMA of the
/// mapping that covers the offset, with the address there and the page-table leaf that maps one
/// of the pfns at that address (`page_vma_mapped_walk` with a pfn range, as fsdax uses). Holds
/// `i_mmap_rwsem` shared during the walk and each page-table lock while reading it.
pub async fn rmap_walk_file<P: Platform>(
    p: &P,
    world: &MmWorld<P>,
    mapping: MappingId,
    pgoff: u64,
    pfn: Pfn,
    nr: u64,
) -> Vec<RmapHit<P>> {
    let Some(m) = world.mapping_get(p, mapping).await else {
        return vec![];
    };
    let tree = m.i_mmap.read(p).await;
    let mut hits = vec![];
    for v in tree.foreach(pgoff, pgoff + nr - 1) {
        let Some(mm) = v.mm.upgrade() else { continue };
        let Some(address) = v.address(pgoff, nr) else {
            continue;
        };
        let pt = mm.page_table.lock(p).await;
        let end = (address + (nr << PAGE_SHIFT)).min(v.vm_end);
        let leaf = pt.leaves(address, end).into_iter().find(|l| {
            let n = l.size() >> PAGE_SHIFT;
            !l.special() && l.pfn() < pfn + nr && pfn < l.pfn() + n
        });
        pt.unlock().await;
        hits.push(RmapHit {
            mm_id: v.mm_id,
            mm,
            vm_start: v.vm_start,
            vm_end: v.vm_end,
            vm_pgoff: v.vm_pgoff,
            vm_flags: v.vm_flags,
            address,
            leaf,
        });
    }
    tree.unlock().await;
    hits
}

/// `rmap_walk` of one pmem page: page -> (mapping, index) -> VMAs -> addresses. A page with no
/// mapping (idle, or shared by reflink: mapping NULL + share count) yields nothing; shared pages
/// need the file system's own rmap (`notify_failure`).
pub async fn rmap_walk<P: Platform>(p: &P, world: &MmWorld<P>, pfn: Pfn) -> Vec<RmapHit<P>> {
    let page = world.memmap.page(p, pfn).await;
    let Some(mapping) = page.mapping_id() else {
        return vec![];
    };
    rmap_walk_file(p, world, mapping, page.index, pfn, 1).await
}

/// `dev_pagemap_mapping_shift`: the size of the device mapping at `address` (PMD_SHIFT for a
/// devmap huge PMD, PAGE_SHIFT for a devmap PTE, 0 when nothing devmap is mapped). As in Linux it
/// does not compare the pfn, and it walks the page table without the page-table lock (memory
/// failure calls it under `tasklist_lock`): two lockless reads (`SpinLock::read_once`), the PMD
/// and then the PTE, with nothing held between them, so no lock order under `tasklist_lock`.
pub async fn dev_pagemap_mapping_shift<P: Platform>(p: &P, mm: &MmStruct<P>, address: u64) -> u32 {
    match mm.pmdp_get_lockless(p, address).await {
        PmdVal::None => 0,
        PmdVal::Huge(pmd) if pmd.present() && pmd.devmap() => crate::dax_entry::PMD_SHIFT,
        PmdVal::Huge(_) => 0,
        // The PTE table may be freed between the two reads; then nothing is mapped there.
        PmdVal::Table => match mm.ptep_get_lockless(p, address).await {
            Some(pte) if pte.present() && pte.devmap() => PAGE_SHIFT,
            _ => 0,
        },
    }
}
