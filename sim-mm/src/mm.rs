//! Processes' address spaces: `mm_struct`, VMAs, mmap/munmap, the zap paths
//! (`zap_page_range_single`, `unmap_mapping_pages`, `unmap_mapping_range`), write-protect and
//! clean (`pfn_mkclean_range`), `split_huge_pmd`, and the helpers a DAX fault handler uses to
//! install mappings (`vmf_insert_page_mkwrite`, `vmf_insert_folio_pmd`, the zero pages).
//!
//! **Locks.** `mmap_lock` is a Platform rwsem around the VMA set. The page-table lock is one
//! Platform spinlock around the whole [`PageTable`] of the mm (Linux splits it per PTE page and
//! per PMD page; one lock only removes concurrency between faults on different 2 MiB ranges).
//! Lock order: `mmap_lock` -> `i_mmap_rwsem` -> page-table lock -> memmap section (page atomics).
//!
//! **Lockless walkers.** GUP-fast, the fault path's `pmd_none`/`pmd_trans_huge` checks and
//! `dev_pagemap_mapping_shift` read page-table words without the lock, as in Linux:
//! `pmdp_get_lockless`/`ptep_get_lockless` are `SpinLock::read_once` (one scheduling point,
//! announced as a read of the page-table lock, never waiting for its holder, so they add no lock
//! order). A reader sees the table as the holder's last completed step left it, which can be
//! the middle of a zap that spans several steps, as in Linux. The CPU's hardware walker
//! (`hw_access`) sets accessed and dirty bits, a write: it takes the lock.
//!
//! **Counts.** Installing a pmem mapping takes a page reference and a mapcount under the
//! page-table lock; zapping drops the mapcount under the lock and the reference after the TLB
//! flush (`tlb_finish_mmu`), as in Linux 6.15+. The zero pages are special (no counts).

use crate::dax_entry::{PAGE_SHIFT, PAGE_SIZE, PG_PMD_NR, PMD_SIZE};
use crate::pgtable::{
    _PAGE_ACCESSED, _PAGE_DEVMAP, _PAGE_DIRTY, _PAGE_PRESENT, _PAGE_RW, _PAGE_SPECIAL,
    HUGE_ZERO_PFN, Leaf, PageTable, Pmd, PmdVal, Pte, ZERO_PFN, is_huge_zero_pfn, is_pagecache_pfn,
    is_zero_pfn,
};
use crate::rmap::{RmapVma, linear_page_index, vma_address};
use crate::world::{AddressSpace, MmWorld};
use crate::{Errno, MmId, Pfn};
use serde::{Deserialize, Serialize};
use sim_core::platform::{bug_on, warn_on};
use sim_core::{Platform, RwSem, SpinLock};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

pub const VM_READ: u64 = 0x0000_0001;
pub const VM_WRITE: u64 = 0x0000_0002;
pub const VM_SHARED: u64 = 0x0000_0008;
pub const VM_MAYREAD: u64 = 0x0000_0010;
pub const VM_MAYWRITE: u64 = 0x0000_0020;
pub const VM_MAYSHARE: u64 = 0x0000_0080;
pub const VM_SYNC: u64 = 0x0080_0000;
pub const VM_MIXEDMAP: u64 = 0x1000_0000;
pub const VM_HUGEPAGE: u64 = 0x2000_0000;
pub const VM_NOHUGEPAGE: u64 = 0x4000_0000;

/// Lowest address `mmap` places mappings at (bottom-up from here).
pub const MMAP_BASE: u64 = 0x7f00_0000_0000;
/// `TASK_SIZE` on x86-64 (4-level paging).
pub const TASK_SIZE: u64 = 0x7fff_ffff_f000;

/// `vm_fault_t` (research/linux_dax.md section 4).
#[derive(Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VmFault(pub u32);

impl VmFault {
    pub const OOM: VmFault = VmFault(0x1);
    pub const SIGBUS: VmFault = VmFault(0x2);
    pub const MAJOR: VmFault = VmFault(0x4);
    pub const HWPOISON: VmFault = VmFault(0x10);
    pub const HWPOISON_LARGE: VmFault = VmFault(0x20);
    pub const SIGSEGV: VmFault = VmFault(0x40);
    pub const NOPAGE: VmFault = VmFault(0x100);
    pub const LOCKED: VmFault = VmFault(0x200);
    pub const RETRY: VmFault = VmFault(0x400);
    pub const FALLBACK: VmFault = VmFault(0x800);
    pub const DONE_COW: VmFault = VmFault(0x1000);
    pub const NEEDDSYNC: VmFault = VmFault(0x2000);
    pub const COMPLETED: VmFault = VmFault(0x4000);
    /// `VM_FAULT_ERROR` (include/linux/mm_types.h): OOM, SIGBUS, SIGSEGV, HWPOISON,
    /// HWPOISON_LARGE and FALLBACK. GUP's `faultin_page` treats every one of them as a failure.
    pub const ERROR: VmFault = VmFault(0x1 | 0x2 | 0x40 | 0x10 | 0x20 | 0x800);

    pub fn contains(self, o: VmFault) -> bool {
        self.0 & o.0 != 0
    }
    pub fn is_error(self) -> bool {
        self.contains(VmFault::ERROR)
    }
}

impl std::ops::BitOr for VmFault {
    type Output = VmFault;
    fn bitor(self, o: VmFault) -> VmFault {
        VmFault(self.0 | o.0)
    }
}

impl fmt::Debug for VmFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(u32, &str); 13] = [
            (0x1, "OOM"),
            (0x2, "SIGBUS"),
            (0x4, "MAJOR"),
            (0x10, "HWPOISON"),
            (0x20, "HWPOISON_LARGE"),
            (0x40, "SIGSEGV"),
            (0x100, "NOPAGE"),
            (0x200, "LOCKED"),
            (0x400, "RETRY"),
            (0x800, "FALLBACK"),
            (0x1000, "DONE_COW"),
            (0x2000, "NEEDDSYNC"),
            (0x4000, "COMPLETED"),
        ];
        let names: Vec<&str> = NAMES
            .iter()
            .filter(|(b, _)| self.0 & b != 0)
            .map(|(_, n)| *n)
            .collect();
        write!(f, "{}", names.join("|"))
    }
}

/// What `mmap` was asked for (trace: `mmap PATH OFF LEN shared|private [sync] [ro] [nohuge]`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct MmapFlags {
    pub shared: bool,
    /// MAP_SYNC (honoured for shared mappings only, as MAP_SHARED_VALIDATE requires).
    pub sync: bool,
    /// PROT_WRITE.
    pub write: bool,
    /// The VMA never takes PMD faults (`MADV_NOHUGEPAGE`).
    pub nohuge: bool,
}

/// The fields of a VMA that describe where it maps what.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct VmaBounds {
    pub vm_start: u64,
    pub vm_end: u64,
    pub vm_pgoff: u64,
    pub vm_flags: u64,
}

impl VmaBounds {
    pub fn contains(&self, addr: u64) -> bool {
        (self.vm_start..self.vm_end).contains(&addr)
    }
    pub fn shared(&self) -> bool {
        self.vm_flags & VM_SHARED != 0
    }
    pub fn writable(&self) -> bool {
        self.vm_flags & VM_WRITE != 0
    }
    pub fn sync(&self) -> bool {
        self.vm_flags & VM_SYNC != 0
    }
    /// Whether PMD faults are allowed (`thp_vma_allowable_order` for a DAX VMA).
    pub fn huge_allowed(&self) -> bool {
        self.vm_flags & VM_NOHUGEPAGE == 0
    }
    /// `linear_page_index(vma, addr)`.
    pub fn linear_page_index(&self, addr: u64) -> u64 {
        linear_page_index(self.vm_start, self.vm_pgoff, addr)
    }
    /// `vma_address(vma, pgoff, nr)`.
    pub fn address(&self, pgoff: u64, nr: u64) -> Option<u64> {
        vma_address(self.vm_start, self.vm_end, self.vm_pgoff, pgoff, nr)
    }
    /// `maybe_mkwrite`.
    fn maybe_mkwrite(&self, pte: Pte) -> Pte {
        if self.writable() { pte.mkwrite() } else { pte }
    }
}

/// `struct vm_area_struct`.
pub struct Vma<P: Platform> {
    pub b: VmaBounds,
    /// `vm_file->f_mapping` (every VMA of the model maps a file).
    pub vm_file: Arc<AddressSpace<P>>,
}

impl<P: Platform> Clone for Vma<P> {
    fn clone(&self) -> Self {
        Vma {
            b: self.b,
            vm_file: self.vm_file.clone(),
        }
    }
}

impl<P: Platform> fmt::Debug for Vma<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "vma {:#x}-{:#x} pgoff {:#x} flags {:#x} mapping {}",
            self.b.vm_start, self.b.vm_end, self.b.vm_pgoff, self.b.vm_flags, self.vm_file.id.0
        )
    }
}

/// The VMA set of an mm (the maple tree), guarded by `mmap_lock`.
pub struct Vmas<P: Platform> {
    map: BTreeMap<u64, Vma<P>>,
}

impl<P: Platform> Default for Vmas<P> {
    fn default() -> Self {
        Vmas {
            map: BTreeMap::new(),
        }
    }
}

impl<P: Platform> Vmas<P> {
    /// `vma_lookup`: the VMA containing `addr`.
    pub fn vma_lookup(&self, addr: u64) -> Option<&Vma<P>> {
        self.map
            .range(..=addr)
            .next_back()
            .map(|(_, v)| v)
            .filter(|v| v.b.contains(addr))
    }

    /// `find_vma`: the first VMA ending above `addr`.
    pub fn find_vma(&self, addr: u64) -> Option<&Vma<P>> {
        if let Some(v) = self.vma_lookup(addr) {
            return Some(v);
        }
        self.map.range(addr..).next().map(|(_, v)| v)
    }

    /// VMAs intersecting `[start, end)`, in address order.
    pub fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = &Vma<P>> + '_ {
        let first = self
            .map
            .range(..start)
            .next_back()
            .map_or(start, |(&s, _)| s);
        self.map
            .range(first..end)
            .map(|(_, v)| v)
            .filter(move |v| v.b.vm_end > start)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Vma<P>> + '_ {
        self.map.values()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// `get_unmapped_area` + `thp_get_unmapped_area`: the lowest free range of `len` bytes from
    /// [`MMAP_BASE`]; a mapping of at least 2 MiB is placed so that its address and file offset
    /// have the same PMD colour (huge faults possible).
    pub fn get_unmapped_area(&self, len: u64, pgoff: u64) -> Option<u64> {
        let colour = (pgoff << PAGE_SHIFT) % PMD_SIZE;
        let mut addr = MMAP_BASE;
        loop {
            if len >= PMD_SIZE {
                let r = addr % PMD_SIZE;
                addr = addr - r + colour + if r > colour { PMD_SIZE } else { 0 };
            }
            let end = addr.checked_add(len)?;
            if end > TASK_SIZE {
                return None;
            }
            match self.overlapping(addr, end).next() {
                None => return Some(addr),
                Some(v) => addr = v.b.vm_end,
            }
        }
    }
}

/// `struct mm_struct`.
pub struct MmStruct<P: Platform> {
    pub id: MmId,
    /// `mmap_lock` around the VMAs.
    pub mmap_lock: RwSem<P, Vmas<P>>,
    /// The page tables and their lock (`page_table_lock` / split PTE and PMD locks, as one).
    pub page_table: SpinLock<P, PageTable>,
}

/// What the CPU's page walk found for an access.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum HwAccess {
    /// Translated: the 4 KiB pfn, and whether a huge PMD mapped it. Accessed (and for a write,
    /// dirty) bits were set.
    Mapped { pfn: Pfn, huge: bool },
    /// No present leaf: a page fault.
    NotPresent,
    /// A write through a read-only leaf: a write-protect fault.
    WriteProtect,
}

/// Pages whose references are dropped after the TLB flush (`struct mmu_gather`).
#[derive(Default, Debug)]
pub struct MmuGather {
    pages: Vec<(Pfn, u64)>,
}

impl<P: Platform> MmStruct<P> {
    pub fn new(p: &P, id: MmId) -> MmStruct<P> {
        MmStruct {
            id,
            mmap_lock: RwSem::new(p, "mmap_lock", Vmas::default()),
            page_table: SpinLock::new(p, "page_table_lock", PageTable::new()),
        }
    }

    /// `pmdp_get_lockless`: one atomic read of the PMD slot, without the page-table lock.
    pub async fn pmdp_get_lockless(&self, p: &P, addr: u64) -> PmdVal {
        self.page_table.read_once(p, |pt| pt.pmd_get(addr)).await
    }

    /// `ptep_get_lockless`: one atomic read of the PTE (`None`: no PTE table there), without
    /// the page-table lock.
    pub async fn ptep_get_lockless(&self, p: &P, addr: u64) -> Option<Pte> {
        self.page_table.read_once(p, |pt| pt.pte_get(addr)).await
    }

    /// The CPU's page walk for a load or store at `addr`: translates and sets the accessed and
    /// dirty bits as the hardware does (one atomic step).
    pub async fn hw_access(&self, p: &P, addr: u64, write: bool) -> HwAccess {
        let mut g = self.page_table.lock(p).await;
        // The leaf word and whether it is a huge PMD.
        let leaf = match g.pmd_get(addr) {
            PmdVal::None => None,
            PmdVal::Huge(pmd) => Some((pmd.0, true)),
            PmdVal::Table => g.pte_get(addr).map(|pte| (pte.0, false)),
        };
        let bits = _PAGE_ACCESSED | if write { _PAGE_DIRTY } else { 0 };
        let r = match leaf {
            Some((w, _)) if w & _PAGE_PRESENT == 0 => HwAccess::NotPresent,
            Some((w, _)) if write && w & _PAGE_RW == 0 => HwAccess::WriteProtect,
            Some((w, true)) => {
                g.pmd_modify(addr, |e| Pmd(e.0 | bits));
                HwAccess::Mapped {
                    pfn: Pmd(w).pfn() + ((addr >> PAGE_SHIFT) & (PG_PMD_NR - 1)),
                    huge: true,
                }
            }
            Some((w, false)) => {
                g.pte_modify(addr, |e| Pte(e.0 | bits));
                HwAccess::Mapped {
                    pfn: Pte(w).pfn(),
                    huge: false,
                }
            }
            None => HwAccess::NotPresent,
        };
        drop(g);
        r
    }
}

/// Whether a leaf maps an anonymous (DRAM, copy-on-write) page: not special and not pmem.
fn leaf_is_anon<P: Platform>(world: &MmWorld<P>, l: &Leaf) -> bool {
    !l.special() && !world.memmap.pfn_valid(l.pfn()) && !is_pagecache_pfn(l.pfn())
}

/// Clear the leaves in `[start, end)` with the page-table lock held: mapcounts are dropped now,
/// references go to `tlb`. A huge PMD only partly inside the range is split first, which for a
/// file (DAX) PMD means cleared (`__split_huge_pmd_locked`). Anonymous CoW pages are kept unless
/// `even_cows`. Returns the number of leaves cleared.
async fn zap_locked<P: Platform>(
    p: &P,
    world: &MmWorld<P>,
    pt: &mut PageTable,
    start: u64,
    end: u64,
    even_cows: bool,
    tlb: &mut MmuGather,
) -> usize {
    let mut n = 0;
    for leaf in pt.leaves(start, end) {
        if !even_cows && leaf_is_anon(world, &leaf) {
            continue;
        }
        let (pfn, nr) = match leaf {
            Leaf::Pmd { addr, .. } => (pt.pmd_huge_clear(addr).pfn(), PG_PMD_NR),
            Leaf::Pte { addr, .. } => (pt.pte_clear(addr).pfn(), 1),
        };
        n += 1;
        if !leaf.special() && world.memmap.pfn_valid(pfn) {
            world.memmap.page_remove_rmap(p, pfn, nr).await;
            tlb.pages.push((pfn, nr));
        }
    }
    n
}

/// `tlb_finish_mmu`: after the flush, drop the references of the zapped pages.
pub async fn tlb_finish_mmu<P: Platform>(p: &P, world: &MmWorld<P>, tlb: MmuGather) {
    for (pfn, nr) in tlb.pages {
        world.memmap.put_pages(p, pfn, nr).await;
    }
}

/// `zap_page_range_single`: clear the mappings of `[start, end)` in `mm` (the caller made sure
/// the range lies in one VMA and holds `mmap_lock` or `i_mmap_rwsem`).
pub async fn zap_page_range_single<P: Platform>(
    p: &P,
    world: &MmWorld<P>,
    mm: &MmStruct<P>,
    start: u64,
    end: u64,
    even_cows: bool,
) -> usize {
    let mut tlb = MmuGather::default();
    let mut pt = mm.page_table.lock(p).await;
    let n = zap_locked(p, world, &mut pt, start, end, even_cows, &mut tlb).await;
    pt.unlock().await;
    tlb_finish_mmu(p, world, tlb).await;
    n
}

/// `unmap_mapping_pages(mapping, start, nr, even_cows)`: zap every user mapping of the page
/// offsets `[start, start + nr)` (nr 0: to the end of the file) in every process.
pub async fn unmap_mapping_pages<P: Platform>(
    p: &P,
    world: &MmWorld<P>,
    mapping: &AddressSpace<P>,
    start: u64,
    nr: u64,
    even_cows: bool,
) -> usize {
    let _fn = p.enter_fn("unmap_mapping_pages");
    let first = start;
    let last = if nr == 0 {
        u64::MAX
    } else {
        start.saturating_add(nr - 1)
    };
    let tree = mapping.i_mmap.read(p).await;
    let mut n = 0;
    for v in tree.foreach(first, last) {
        let Some(mm) = v.mm.upgrade() else { continue };
        let vba = v.vm_pgoff;
        let vea = v.last_pgoff();
        let zba = first.max(vba);
        let zea = last.min(vea) + 1;
        let s = v.vm_start + ((zba - vba) << PAGE_SHIFT);
        let e = v.vm_start + ((zea - vba) << PAGE_SHIFT);
        n += zap_page_range_single(p, world, &mm, s, e, even_cows).await;
    }
    tree.unlock().await;
    n
}

/// `unmap_mapping_range(mapping, holebegin, holelen, even_cows)`: by bytes (holelen 0: to the
/// end of the file).
pub async fn unmap_mapping_range<P: Platform>(
    p: &P,
    world: &MmWorld<P>,
    mapping: &AddressSpace<P>,
    holebegin: u64,
    holelen: u64,
    even_cows: bool,
) -> usize {
    let hba = holebegin >> PAGE_SHIFT;
    let hlen = holelen.div_ceil(PAGE_SIZE);
    unmap_mapping_pages(p, world, mapping, hba, hlen, even_cows).await
}

/// `split_huge_pmd(vma, pmd, address)`: a file (DAX) huge PMD is cleared; later accesses fault
/// it back in as PTEs. Returns whether a huge PMD was there.
pub async fn split_huge_pmd<P: Platform>(
    p: &P,
    world: &MmWorld<P>,
    mm: &MmStruct<P>,
    address: u64,
) -> bool {
    let _fn = p.enter_fn("split_huge_pmd");
    let haddr = address & !(PMD_SIZE - 1);
    let mut pt = mm.page_table.lock(p).await;
    let old = match pt.pmd_get(haddr) {
        PmdVal::Huge(_) => pt.pmd_huge_clear(haddr),
        _ => Pmd::NONE,
    };
    if old.present() && !old.special() && world.memmap.pfn_valid(old.pfn()) {
        world.memmap.page_remove_rmap(p, old.pfn(), PG_PMD_NR).await;
        // pmdp_huge_clear_flush flushed already: the reference goes at once.
        world.memmap.put_pages(p, old.pfn(), PG_PMD_NR).await;
    }
    pt.unlock().await;
    old.present()
}

/// `page_vma_mkclean_one` over a pfn range: write-protect and clean every leaf of the VMA range
/// `[start, end)` that maps one of `pfn .. pfn + nr`. With `pmd_wrprotect` false a huge PMD is
/// only cleaned, not write-protected (the 4.9 `dax_mapping_entry_mkclean`, before f729c8c9b24f,
/// for bug mode `pmd-writeback-no-wrprotect`). Returns how many leaves were changed.
pub async fn page_vma_mkclean<P: Platform>(
    p: &P,
    mm: &MmStruct<P>,
    start: u64,
    end: u64,
    pfn: Pfn,
    nr: u64,
    pmd_wrprotect: bool,
) -> usize {
    let mut pt = mm.page_table.lock(p).await;
    let mut n = 0;
    for leaf in pt.leaves(start, end) {
        let lnr = leaf.size() >> PAGE_SHIFT;
        if leaf.special() || leaf.pfn() >= pfn + nr || leaf.pfn() + lnr <= pfn {
            continue;
        }
        match leaf {
            Leaf::Pte { addr, pte } => {
                if pte.dirty() || pte.write() {
                    pt.pte_modify(addr, |e| e.wrprotect().mkclean());
                    n += 1;
                }
            }
            Leaf::Pmd { addr, pmd } => {
                if pmd_wrprotect && (pmd.dirty() || pmd.write()) {
                    pt.pmd_modify(addr, |e| e.wrprotect().mkclean());
                    n += 1;
                } else if !pmd_wrprotect && pmd.dirty() {
                    pt.pmd_modify(addr, |e| e.mkclean());
                    n += 1;
                }
            }
        }
    }
    pt.unlock().await;
    n
}

/// `pfn_mkclean_range(pfn, nr_pages, pgoff, vma)`: write-protect and clean the mappings of
/// `nr_pages` pfns at file offset `pgoff` in one shared VMA (private VMAs are skipped, as
/// `invalid_mkclean_vma` does). The caller holds `i_mmap_rwsem`.
pub async fn pfn_mkclean_range<P: Platform>(
    p: &P,
    vma: &RmapVma<P>,
    pfn: Pfn,
    nr_pages: u64,
    pgoff: u64,
) -> usize {
    pfn_mkclean_range_with(p, vma, pfn, nr_pages, pgoff, true).await
}

/// [`pfn_mkclean_range`] with the choice of [`page_vma_mkclean`]'s `pmd_wrprotect`.
pub async fn pfn_mkclean_range_with<P: Platform>(
    p: &P,
    vma: &RmapVma<P>,
    pfn: Pfn,
    nr_pages: u64,
    pgoff: u64,
    pmd_wrprotect: bool,
) -> usize {
    if vma.vm_flags & VM_SHARED == 0 {
        return 0;
    }
    let Some(mm) = vma.mm.upgrade() else { return 0 };
    let Some(start) = vma.address(pgoff, nr_pages) else {
        return 0;
    };
    // The walk covers the pages of pgoff .. pgoff + nr that lie inside the VMA.
    let end_pgoff = pgoff + nr_pages;
    let end = if end_pgoff > vma.vm_pgoff {
        (vma.vm_start + ((end_pgoff - vma.vm_pgoff) << PAGE_SHIFT)).min(vma.vm_end)
    } else {
        start
    };
    page_vma_mkclean(p, &mm, start, end, pfn, nr_pages, pmd_wrprotect).await
}

/// `vmf_insert_page_mkwrite(vmf, page, write)`: map the pmem page `pfn` at `addr` with a PTE
/// (read-only unless `write`; write also marks it dirty). An existing PTE for the same pfn is
/// made writable on `write` (the `pfn_mkwrite` path); any other existing PTE is left alone.
pub async fn vmf_insert_page_mkwrite<P: Platform>(
    p: &P,
    world: &MmWorld<P>,
    mm: &MmStruct<P>,
    vma: &VmaBounds,
    addr: u64,
    pfn: Pfn,
    write: bool,
) -> VmFault {
    let _fn = p.enter_fn("vmf_insert_page_mkwrite");
    let addr = addr & !(PAGE_SIZE - 1);
    if !vma.contains(addr) || !world.memmap.pfn_valid(pfn) {
        return VmFault::SIGBUS;
    }
    let mut pt = mm.page_table.lock(p).await;
    if pt.pte_alloc(addr).is_err() {
        // get_locked_pte() fails on a huge PMD: -ENOMEM.
        pt.unlock().await;
        return VmFault::OOM;
    }
    let old = pt.pte_get(addr).unwrap_or_default();
    if old.present() {
        let mut ret = VmFault::NOPAGE;
        let mut warn = false;
        if write {
            if old.pfn() != pfn {
                // insert_page_into_pte_locked: only the zero page may be replaced this way.
                warn = !is_zero_pfn(old.pfn());
                ret = VmFault::SIGBUS;
            } else {
                pt.pte_modify(addr, |e| vma.maybe_mkwrite(e.mkyoung().mkdirty()));
            }
        }
        pt.unlock().await;
        warn_on(p, warn, "insert-page-pfn-mismatch", || {
            format!(
                "vmf_insert_page_mkwrite at {addr:#x}: PTE maps pfn {:#x}, not {pfn:#x}",
                old.pfn()
            )
        })
        .await;
        return ret;
    }
    let mut flags = _PAGE_DEVMAP;
    if write {
        flags |= _PAGE_ACCESSED | _PAGE_DIRTY;
    }
    let mut pte = Pte::mk(pfn, flags);
    if write {
        pte = vma.maybe_mkwrite(pte);
    }
    let _ = pt.set_pte(addr, pte);
    world.memmap.page_add_file_rmap(p, pfn, 1).await;
    // Released with the rmap step: nothing after it is visible to another task.
    drop(pt);
    VmFault::NOPAGE
}

/// `vmf_insert_mixed` of the shared zero page (`dax_load_hole`): a special read-only PTE if the
/// slot is empty.
pub async fn vmf_insert_zero_page<P: Platform>(
    p: &P,
    mm: &MmStruct<P>,
    vma: &VmaBounds,
    addr: u64,
) -> VmFault {
    let _fn = p.enter_fn("vmf_insert_zero_page");
    let addr = addr & !(PAGE_SIZE - 1);
    if !vma.contains(addr) {
        return VmFault::SIGBUS;
    }
    set_pte_if_none(p, mm, addr, Pte::mk(ZERO_PFN, _PAGE_SPECIAL)).await
}

/// Install `pte` at `addr` unless something is mapped there already (`finish_fault`'s
/// `pte_none` check under the page-table lock).
async fn set_pte_if_none<P: Platform>(p: &P, mm: &MmStruct<P>, addr: u64, pte: Pte) -> VmFault {
    let mut pt = mm.page_table.lock(p).await;
    let ret = if pt.pte_alloc(addr).is_err() {
        VmFault::OOM
    } else {
        if !pt.pte_get(addr).unwrap_or_default().present() {
            let _ = pt.set_pte(addr, pte);
        }
        VmFault::NOPAGE
    };
    pt.unlock().await;
    ret
}

/// `finish_fault` for a 4.x DAX hole page (bug mode `shadow-entries`): map the page-cache page
/// `pfn` (DRAM, zeroed) read-only at `addr`, if nothing is mapped there. It is a normal page,
/// not a special one: reclaim can find and unmap it.
pub async fn vmf_insert_hole_page<P: Platform>(
    p: &P,
    mm: &MmStruct<P>,
    vma: &VmaBounds,
    addr: u64,
    pfn: Pfn,
) -> VmFault {
    let _fn = p.enter_fn("finish_fault");
    let addr = addr & !(PAGE_SIZE - 1);
    if !vma.contains(addr) || !is_pagecache_pfn(pfn) {
        return VmFault::SIGBUS;
    }
    set_pte_if_none(p, mm, addr, Pte::mk(pfn, _PAGE_ACCESSED)).await
}

/// `vmf_insert_folio_pmd(vmf, folio, write)`: map the 2 MiB pmem folio at `pfn` with a huge PMD.
/// An existing huge PMD for the same pfn is made writable on `write`.
pub async fn vmf_insert_folio_pmd<P: Platform>(
    p: &P,
    world: &MmWorld<P>,
    mm: &MmStruct<P>,
    vma: &VmaBounds,
    addr: u64,
    pfn: Pfn,
    write: bool,
) -> VmFault {
    let _fn = p.enter_fn("vmf_insert_folio_pmd");
    let haddr = addr & !(PMD_SIZE - 1);
    if haddr < vma.vm_start || haddr + PMD_SIZE > vma.vm_end {
        return VmFault::SIGBUS;
    }
    let bad_pfn = !pfn.is_multiple_of(PG_PMD_NR)
        || !world.memmap.pfn_valid(pfn)
        || !world.memmap.pfn_valid(pfn + PG_PMD_NR - 1);
    if warn_on(p, bad_pfn, "insert-pmd-bad-folio", || {
        format!("vmf_insert_folio_pmd: pfn {pfn:#x} is not a 2 MiB pmem folio")
    })
    .await
    {
        return VmFault::SIGBUS;
    }
    let mut pt = mm.page_table.lock(p).await;
    let mut warn = None;
    match pt.pmd_get(haddr) {
        PmdVal::None => {
            let mut flags = _PAGE_DEVMAP;
            if write {
                flags |= _PAGE_ACCESSED | _PAGE_DIRTY;
                if vma.writable() {
                    flags |= _PAGE_RW;
                }
            }
            let _ = pt.set_pmd_huge(haddr, Pmd::mk_huge(pfn, flags));
            world.memmap.page_add_file_rmap(p, pfn, PG_PMD_NR).await;
        }
        PmdVal::Huge(old) => {
            if write {
                if old.pfn() != pfn {
                    if !is_huge_zero_pfn(old.pfn()) {
                        warn = Some(format!("huge PMD maps pfn {:#x}", old.pfn()));
                    }
                } else {
                    let w = vma.writable();
                    pt.pmd_modify(haddr, |e| {
                        let e = e.mkyoung().mkdirty();
                        if w { e.mkwrite() } else { e }
                    });
                }
            }
        }
        PmdVal::Table => warn = Some("a PTE table is installed".to_string()),
    }
    // Released with the last step that touched it (no scheduling point of its own).
    drop(pt);
    if let Some(w) = warn {
        warn_on(p, true, "insert-pmd-over-existing", || {
            format!("vmf_insert_folio_pmd at {haddr:#x} for pfn {pfn:#x}: {w}")
        })
        .await;
    }
    VmFault::NOPAGE
}

/// `dax_pmd_load_hole`'s insertion: map the huge zero folio read-only if the PMD is none;
/// false (fall back) otherwise.
pub async fn vmf_insert_huge_zero_pmd<P: Platform>(
    p: &P,
    mm: &MmStruct<P>,
    vma: &VmaBounds,
    addr: u64,
) -> bool {
    let _fn = p.enter_fn("vmf_insert_huge_zero_pmd");
    let haddr = addr & !(PMD_SIZE - 1);
    if haddr < vma.vm_start || haddr + PMD_SIZE > vma.vm_end {
        return false;
    }
    let mut pt = mm.page_table.lock(p).await;
    let ok = pt.pmd_get(haddr) == PmdVal::None;
    if ok {
        let _ = pt.set_pmd_huge(haddr, Pmd::mk_huge(HUGE_ZERO_PFN, _PAGE_SPECIAL));
    }
    pt.unlock().await;
    ok
}

/// `finish_fault`/`wp_page_copy` for a private write: map the anonymous copy `anon_pfn` (a DRAM
/// page outside the pmem memmap) writable at `addr`, replacing whatever PTE was there.
pub async fn vmf_insert_anon_page<P: Platform>(
    p: &P,
    world: &MmWorld<P>,
    mm: &MmStruct<P>,
    vma: &VmaBounds,
    addr: u64,
    anon_pfn: Pfn,
) -> VmFault {
    let _fn = p.enter_fn("vmf_insert_anon_page");
    let addr = addr & !(PAGE_SIZE - 1);
    if !vma.contains(addr) || world.memmap.pfn_valid(anon_pfn) {
        return VmFault::SIGBUS;
    }
    let mut tlb = MmuGather::default();
    let mut pt = mm.page_table.lock(p).await;
    if pt.pte_alloc(addr).is_err() {
        pt.unlock().await;
        return VmFault::OOM;
    }
    let new = vma.maybe_mkwrite(Pte::mk(anon_pfn, _PAGE_ACCESSED | _PAGE_DIRTY));
    let old = pt.set_pte(addr, new).unwrap_or_default();
    if old.present() && !old.special() && world.memmap.pfn_valid(old.pfn()) {
        world.memmap.page_remove_rmap(p, old.pfn(), 1).await;
        tlb.pages.push((old.pfn(), 1));
    }
    pt.unlock().await;
    tlb_finish_mmu(p, world, tlb).await;
    VmFault::NOPAGE
}

/// `do_mmap` of `len` bytes of `file` from page offset `pgoff`; returns the address.
pub async fn do_mmap<P: Platform>(
    p: &P,
    mm: &Arc<MmStruct<P>>,
    file: &Arc<AddressSpace<P>>,
    pgoff: u64,
    len: u64,
    flags: MmapFlags,
) -> Result<u64, Errno> {
    let len = len.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    if len == 0 {
        return Err(Errno::EINVAL);
    }
    let mut vm_flags = VM_READ | VM_MAYREAD | VM_MIXEDMAP;
    if flags.write {
        vm_flags |= VM_WRITE;
    }
    if flags.shared {
        vm_flags |= VM_SHARED | VM_MAYSHARE;
        if flags.write {
            vm_flags |= VM_MAYWRITE;
        }
        if flags.sync {
            vm_flags |= VM_SYNC;
        }
    } else {
        vm_flags |= VM_MAYWRITE;
    }
    // xfs_file_mmap sets VM_HUGEPAGE on DAX files; MADV_NOHUGEPAGE overrides it.
    vm_flags |= if flags.nohuge {
        VM_NOHUGEPAGE
    } else {
        VM_HUGEPAGE
    };
    let mut vmas = mm.mmap_lock.write(p).await;
    let Some(addr) = vmas.get_unmapped_area(len, pgoff) else {
        vmas.unlock().await;
        return Err(Errno::ENOMEM);
    };
    let b = VmaBounds {
        vm_start: addr,
        vm_end: addr + len,
        vm_pgoff: pgoff,
        vm_flags,
    };
    vmas.map.insert(
        addr,
        Vma {
            b,
            vm_file: file.clone(),
        },
    );
    let mut tree = file.i_mmap.write(p).await;
    tree.insert(rmap_vma(mm, &b));
    tree.unlock().await;
    vmas.unlock().await;
    Ok(addr)
}

fn rmap_vma<P: Platform>(mm: &Arc<MmStruct<P>>, b: &VmaBounds) -> RmapVma<P> {
    RmapVma {
        mm_id: mm.id,
        mm: Arc::downgrade(mm),
        vm_start: b.vm_start,
        vm_end: b.vm_end,
        vm_pgoff: b.vm_pgoff,
        vm_flags: b.vm_flags,
    }
}

/// `do_munmap(mm, start, len)`: zap, split VMAs at the edges, unlink them from their files'
/// i_mmap trees and free the page tables nobody uses any more.
pub async fn do_munmap<P: Platform>(
    p: &P,
    world: &MmWorld<P>,
    mm: &Arc<MmStruct<P>>,
    start: u64,
    len: u64,
) -> Result<(), Errno> {
    if !start.is_multiple_of(PAGE_SIZE) || len == 0 {
        return Err(Errno::EINVAL);
    }
    let end = start
        .checked_add(len.div_ceil(PAGE_SIZE) * PAGE_SIZE)
        .ok_or(Errno::EINVAL)?;
    let mut vmas = mm.mmap_lock.write(p).await;
    let victims: Vec<Vma<P>> = vmas.overlapping(start, end).cloned().collect();
    let mut tlb = MmuGather::default();
    for v in &victims {
        let zs = v.b.vm_start.max(start);
        let ze = v.b.vm_end.min(end);
        // vma_adjust_trans_huge: a huge PMD straddling a new VMA edge is split first.
        for edge in [zs, ze] {
            if edge % PMD_SIZE != 0 && edge > v.b.vm_start && edge < v.b.vm_end {
                split_huge_pmd(p, world, mm, edge).await;
            }
        }
        let mut pt = mm.page_table.lock(p).await;
        zap_locked(p, world, &mut pt, zs, ze, true, &mut tlb).await;
        pt.unlock().await;
    }
    tlb_finish_mmu(p, world, tlb).await;
    for v in victims {
        vmas.map.remove(&v.b.vm_start);
        let mut pieces = vec![];
        if v.b.vm_start < start {
            pieces.push(VmaBounds {
                vm_end: start,
                ..v.b
            });
        }
        if v.b.vm_end > end {
            pieces.push(VmaBounds {
                vm_start: end,
                vm_pgoff: v.b.vm_pgoff + ((end - v.b.vm_start) >> PAGE_SHIFT),
                ..v.b
            });
        }
        let mut tree = v.vm_file.i_mmap.write(p).await;
        tree.remove(mm.id, v.b.vm_start, v.b.vm_pgoff);
        for b in &pieces {
            tree.insert(rmap_vma(mm, b));
        }
        tree.unlock().await;
        for b in pieces {
            vmas.map.insert(
                b.vm_start,
                Vma {
                    b,
                    vm_file: v.vm_file.clone(),
                },
            );
        }
    }
    // free_pgtables: PTE tables of 2 MiB spans no remaining VMA touches.
    let lo = start & !(PMD_SIZE - 1);
    let hi = end.div_ceil(PMD_SIZE) * PMD_SIZE;
    let mut busy = 0;
    let mut pt = mm.page_table.lock(p).await;
    let mut span = lo;
    while span < hi {
        if vmas.overlapping(span, span + PMD_SIZE).next().is_none() {
            busy += pt.free_pgtables(span, span + PMD_SIZE);
        }
        span += PMD_SIZE;
    }
    pt.unlock().await;
    vmas.unlock().await;
    // Page tables freed by munmap map nothing any more.
    bug_on(p, busy != 0, "free-busy-pgtable", || {
        format!("munmap {start:#x}-{end:#x}: freed {busy} PTE tables that still map pages")
    })
    .await;
    Ok(())
}

/// `madvise(MADV_DONTNEED)`: zap the range in every VMA it touches (CoW copies included).
pub async fn madvise_dontneed<P: Platform>(
    p: &P,
    world: &MmWorld<P>,
    mm: &MmStruct<P>,
    start: u64,
    len: u64,
) -> Result<usize, Errno> {
    if !start.is_multiple_of(PAGE_SIZE) {
        return Err(Errno::EINVAL);
    }
    let end = start + len.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let vmas = mm.mmap_lock.read(p).await;
    let ranges: Vec<(u64, u64)> = vmas
        .overlapping(start, end)
        .map(|v| (v.b.vm_start.max(start), v.b.vm_end.min(end)))
        .collect();
    let mut n = 0;
    for (s, e) in ranges {
        n += zap_page_range_single(p, world, mm, s, e, true).await;
    }
    vmas.unlock().await;
    Ok(n)
}

/// `exit_mmap`: unmap everything.
pub async fn exit_mmap<P: Platform>(p: &P, world: &MmWorld<P>, mm: &Arc<MmStruct<P>>) {
    let vmas = mm.mmap_lock.read(p).await;
    let ranges: Vec<(u64, u64)> = vmas.iter().map(|v| (v.b.vm_start, v.b.vm_end)).collect();
    vmas.unlock().await;
    for (s, e) in ranges {
        let _ = do_munmap(p, world, mm, s, e - s).await;
    }
}
