//! Page tables of one process: x86-64 PTE and PMD words (the bit layout of
//! `arch/x86/include/asm/pgtable_types.h`), a PMD level that holds either nothing (`pmd_none`), a
//! huge leaf, or a table of 512 PTEs. There is no TLB (DESIGN.md: a TLB-free model) and no PUD
//! level (1 GiB mappings are not modelled).
//!
//! Plain data: a [`PageTable`] lives inside the mm's page-table lock (`MmStruct::page_table`),
//! which serialises every access; see `mm.rs` for how lock-free walkers (GUP-fast, the fault
//! path's `pmd_none` checks, the hardware walker) are modelled.

use crate::dax_entry::{PAGE_SHIFT, PG_PMD_NR, PMD_SHIFT, PMD_SIZE};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

pub const _PAGE_PRESENT: u64 = 1 << 0;
pub const _PAGE_RW: u64 = 1 << 1;
pub const _PAGE_USER: u64 = 1 << 2;
pub const _PAGE_ACCESSED: u64 = 1 << 5;
pub const _PAGE_DIRTY: u64 = 1 << 6;
/// `_PAGE_PSE`: a huge (leaf) PMD.
pub const _PAGE_PSE: u64 = 1 << 7;
/// `_PAGE_SPECIAL` (software bit 1): no struct page behind it (the zero pages).
pub const _PAGE_SPECIAL: u64 = 1 << 9;
/// `_PAGE_DEVMAP` (software bit 4): a ZONE_DEVICE (pmem) page.
pub const _PAGE_DEVMAP: u64 = 1 << 58;
const PFN_MASK: u64 = ((1u64 << 52) - 1) & !((1u64 << PAGE_SHIFT) - 1);

/// The pfn of the shared 4 KiB zero page (a DRAM page outside the pmem memmap).
pub const ZERO_PFN: u64 = 0x1000;
/// The first pfn of the huge zero folio (2 MiB aligned, DRAM).
pub const HUGE_ZERO_PFN: u64 = 0x1200;

/// `is_zero_pfn`.
pub fn is_zero_pfn(pfn: u64) -> bool {
    pfn == ZERO_PFN
}

/// Whether `pfn` belongs to the huge zero folio.
pub fn is_huge_zero_pfn(pfn: u64) -> bool {
    (HUGE_ZERO_PFN..HUGE_ZERO_PFN + PG_PMD_NR).contains(&pfn)
}

/// The first pfn of the page-cache pages a DAX mapping can hold: the 4.x hole pages of bug mode
/// `shadow-entries` (DRAM above the anonymous pages, below the pmem; no struct page modelled).
pub const PAGECACHE_BASE_PFN: u64 = 0x80000;
/// The number of page-cache pfns (the range ends where the pmem begins, pfn 0x100000).
pub const PAGECACHE_NR: u64 = 0x80000;

/// Whether `pfn` is a page-cache page (a 4.x hole page), not an anonymous copy.
pub fn is_pagecache_pfn(pfn: u64) -> bool {
    (PAGECACHE_BASE_PFN..PAGECACHE_BASE_PFN + PAGECACHE_NR).contains(&pfn)
}

macro_rules! entry_ops {
    ($t:ident) => {
        impl $t {
            pub const NONE: $t = $t(0);
            pub fn is_none(self) -> bool {
                self.0 == 0
            }
            pub fn present(self) -> bool {
                self.0 & _PAGE_PRESENT != 0
            }
            pub fn write(self) -> bool {
                self.0 & _PAGE_RW != 0
            }
            pub fn dirty(self) -> bool {
                self.0 & _PAGE_DIRTY != 0
            }
            pub fn young(self) -> bool {
                self.0 & _PAGE_ACCESSED != 0
            }
            pub fn devmap(self) -> bool {
                self.0 & _PAGE_DEVMAP != 0
            }
            pub fn special(self) -> bool {
                self.0 & _PAGE_SPECIAL != 0
            }
            pub fn pfn(self) -> u64 {
                (self.0 & PFN_MASK) >> PAGE_SHIFT
            }
            #[must_use]
            pub fn mkwrite(self) -> $t {
                $t(self.0 | _PAGE_RW)
            }
            #[must_use]
            pub fn wrprotect(self) -> $t {
                $t(self.0 & !_PAGE_RW)
            }
            #[must_use]
            pub fn mkdirty(self) -> $t {
                $t(self.0 | _PAGE_DIRTY)
            }
            #[must_use]
            pub fn mkclean(self) -> $t {
                $t(self.0 & !_PAGE_DIRTY)
            }
            #[must_use]
            pub fn mkyoung(self) -> $t {
                $t(self.0 | _PAGE_ACCESSED)
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                if self.is_none() {
                    return write!(f, "none");
                }
                write!(f, "pfn {:#x}", self.pfn())?;
                for (bit, name) in [
                    (_PAGE_PRESENT, " P"),
                    (_PAGE_RW, " W"),
                    (_PAGE_DIRTY, " D"),
                    (_PAGE_PSE, " HUGE"),
                    (_PAGE_DEVMAP, " DEVMAP"),
                    (_PAGE_SPECIAL, " SPECIAL"),
                ] {
                    if self.0 & bit != 0 {
                        write!(f, "{name}")?;
                    }
                }
                Ok(())
            }
        }
    };
}

/// A PTE word (`pte_t`).
#[derive(Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Pte(pub u64);
entry_ops!(Pte);

impl Pte {
    /// `pfn_pte(pfn, prot)`: a present user PTE.
    pub fn mk(pfn: u64, flags: u64) -> Pte {
        Pte((pfn << PAGE_SHIFT) & PFN_MASK | flags | _PAGE_PRESENT | _PAGE_USER)
    }
}

/// A PMD word (`pmd_t`); only huge leaves are stored as words, a PTE table is [`PmdVal::Table`].
#[derive(Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Pmd(pub u64);
entry_ops!(Pmd);

impl Pmd {
    /// `pmd_mkhuge(pfn_pmd(pfn, prot))`.
    pub fn mk_huge(pfn: u64, flags: u64) -> Pmd {
        Pmd((pfn << PAGE_SHIFT) & PFN_MASK | flags | _PAGE_PRESENT | _PAGE_USER | _PAGE_PSE)
    }
    /// `pmd_trans_huge`/`pmd_leaf`.
    pub fn huge(self) -> bool {
        self.0 & _PAGE_PSE != 0
    }
}

/// What a PMD slot holds, as a lockless `pmdp_get` sees it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum PmdVal {
    /// `pmd_none`.
    None,
    /// A huge leaf (`pmd_trans_huge`).
    Huge(Pmd),
    /// A PTE table is installed (`!pmd_none && !pmd_trans_huge`).
    Table,
}

#[derive(Clone, Serialize, Deserialize)]
enum PmdSlot {
    Huge(Pmd),
    Table(Box<PteTable>),
}

#[derive(Clone, Serialize, Deserialize)]
struct PteTable {
    #[serde(with = "pte_array")]
    ptes: [Pte; 512],
    /// Present PTEs in the table.
    used: u16,
}

mod pte_array {
    use super::Pte;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    pub fn serialize<S: Serializer>(a: &[Pte; 512], s: S) -> Result<S::Ok, S::Error> {
        a.as_slice().serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[Pte; 512], D::Error> {
        let v = Vec::<Pte>::deserialize(d)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("a PTE table has 512 entries"))
    }
}

/// Why a page-table update could not be made.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum PtError {
    /// A huge PMD occupies the slot (`pte_offset_map_lock` fails on a trans-huge PMD).
    Huge,
    /// A PTE table occupies the slot (a huge PMD cannot be installed).
    Table,
}

/// One present leaf found by [`PageTable::leaves`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Leaf {
    Pte { addr: u64, pte: Pte },
    Pmd { addr: u64, pmd: Pmd },
}

impl Leaf {
    pub fn addr(&self) -> u64 {
        match *self {
            Leaf::Pte { addr, .. } | Leaf::Pmd { addr, .. } => addr,
        }
    }
    pub fn pfn(&self) -> u64 {
        match *self {
            Leaf::Pte { pte, .. } => pte.pfn(),
            Leaf::Pmd { pmd, .. } => pmd.pfn(),
        }
    }
    pub fn size(&self) -> u64 {
        match self {
            Leaf::Pte { .. } => 1 << PAGE_SHIFT,
            Leaf::Pmd { .. } => PMD_SIZE,
        }
    }
    pub fn write(&self) -> bool {
        match *self {
            Leaf::Pte { pte, .. } => pte.write(),
            Leaf::Pmd { pmd, .. } => pmd.write(),
        }
    }
    pub fn special(&self) -> bool {
        match *self {
            Leaf::Pte { pte, .. } => pte.special(),
            Leaf::Pmd { pmd, .. } => pmd.special(),
        }
    }
}

/// The page tables of one mm.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct PageTable {
    pmds: BTreeMap<u64, PmdSlot>,
}

#[inline]
fn pmd_key(addr: u64) -> u64 {
    addr >> PMD_SHIFT
}

#[inline]
fn pte_slot(addr: u64) -> usize {
    ((addr >> PAGE_SHIFT) & (PG_PMD_NR - 1)) as usize
}

impl PageTable {
    pub fn new() -> PageTable {
        PageTable::default()
    }

    /// `pmdp_get(pmd_offset(..., addr))`.
    #[inline]
    pub fn pmd_get(&self, addr: u64) -> PmdVal {
        match self.pmds.get(&pmd_key(addr)) {
            None => PmdVal::None,
            Some(PmdSlot::Huge(p)) => PmdVal::Huge(*p),
            Some(PmdSlot::Table(_)) => PmdVal::Table,
        }
    }

    /// `ptep_get`: the PTE at `addr`, or `None` when no PTE table is installed there.
    #[inline]
    pub fn pte_get(&self, addr: u64) -> Option<Pte> {
        match self.pmds.get(&pmd_key(addr)) {
            Some(PmdSlot::Table(t)) => Some(t.ptes[pte_slot(addr)]),
            _ => None,
        }
    }

    /// `pte_alloc`: install an empty PTE table if the PMD is none.
    pub fn pte_alloc(&mut self, addr: u64) -> Result<(), PtError> {
        match self
            .pmds
            .entry(pmd_key(addr))
            .or_insert_with(|| PmdSlot::Table(Box::new(PteTable::empty())))
        {
            PmdSlot::Huge(_) => Err(PtError::Huge),
            PmdSlot::Table(_) => Ok(()),
        }
    }

    /// `set_pte_at`: write the PTE at `addr` (allocating the table); returns the old PTE.
    #[inline]
    pub fn set_pte(&mut self, addr: u64, pte: Pte) -> Result<Pte, PtError> {
        let slot = self
            .pmds
            .entry(pmd_key(addr))
            .or_insert_with(|| PmdSlot::Table(Box::new(PteTable::empty())));
        match slot {
            PmdSlot::Huge(_) => Err(PtError::Huge),
            PmdSlot::Table(t) => {
                let i = pte_slot(addr);
                let old = t.ptes[i];
                t.used = t.used + pte.present() as u16 - old.present() as u16;
                t.ptes[i] = pte;
                Ok(old)
            }
        }
    }

    /// `ptep_get_and_clear`: clear the PTE at `addr`; returns the old one (none if no table).
    pub fn pte_clear(&mut self, addr: u64) -> Pte {
        match self.pmds.get_mut(&pmd_key(addr)) {
            Some(PmdSlot::Table(t)) => {
                let i = pte_slot(addr);
                let old = t.ptes[i];
                t.used -= old.present() as u16;
                t.ptes[i] = Pte::NONE;
                old
            }
            _ => Pte::NONE,
        }
    }

    /// `set_pmd_at` of a huge leaf; fails if a PTE table is installed. Returns the old leaf.
    pub fn set_pmd_huge(&mut self, addr: u64, pmd: Pmd) -> Result<Pmd, PtError> {
        debug_assert!(pmd.huge());
        match self.pmds.get_mut(&pmd_key(addr)) {
            Some(PmdSlot::Table(_)) => Err(PtError::Table),
            Some(PmdSlot::Huge(old)) => Ok(std::mem::replace(old, pmd)),
            None => {
                self.pmds.insert(pmd_key(addr), PmdSlot::Huge(pmd));
                Ok(Pmd::NONE)
            }
        }
    }

    /// `pmdp_huge_get_and_clear`: clear a huge leaf; returns it (none if the slot is not huge).
    pub fn pmd_huge_clear(&mut self, addr: u64) -> Pmd {
        let k = pmd_key(addr);
        if let Some(PmdSlot::Huge(p)) = self.pmds.get(&k) {
            let p = *p;
            self.pmds.remove(&k);
            p
        } else {
            Pmd::NONE
        }
    }

    /// Modify a present leaf in place (protection/dirty changes); `f` gets the old word.
    pub fn pte_modify(&mut self, addr: u64, f: impl FnOnce(Pte) -> Pte) -> Option<Pte> {
        match self.pmds.get_mut(&pmd_key(addr)) {
            Some(PmdSlot::Table(t)) => {
                let i = pte_slot(addr);
                let old = t.ptes[i];
                if !old.present() {
                    return None;
                }
                let new = f(old);
                debug_assert!(new.present());
                t.ptes[i] = new;
                Some(old)
            }
            _ => None,
        }
    }

    /// Modify a huge leaf in place.
    pub fn pmd_modify(&mut self, addr: u64, f: impl FnOnce(Pmd) -> Pmd) -> Option<Pmd> {
        match self.pmds.get_mut(&pmd_key(addr)) {
            Some(PmdSlot::Huge(p)) => {
                let old = *p;
                *p = f(old);
                Some(old)
            }
            _ => None,
        }
    }

    /// `free_pgtables` over `[start, end)`: drop the PTE tables whose 2 MiB span lies inside the
    /// range. Their PTEs must already be clear (the caller zapped them); returns the number of
    /// tables that were not empty (a model violation for the caller to report).
    pub fn free_pgtables(&mut self, start: u64, end: u64) -> usize {
        let first = start.div_ceil(PMD_SIZE);
        let last = end / PMD_SIZE;
        let keys: Vec<u64> = self.pmds.range(first..last).map(|(&k, _)| k).collect();
        let mut busy = 0;
        for k in keys {
            if let Some(PmdSlot::Table(t)) = self.pmds.get(&k) {
                busy += (t.used != 0) as usize;
                self.pmds.remove(&k);
            }
        }
        busy
    }

    /// Every present leaf with an address in `[start, end)`, in address order (a huge leaf is
    /// reported when its 2 MiB span intersects the range).
    pub fn leaves(&self, start: u64, end: u64) -> Vec<Leaf> {
        let mut out = vec![];
        if start >= end {
            return out;
        }
        for (&k, slot) in self.pmds.range(pmd_key(start)..=pmd_key(end - 1)) {
            let base = k << PMD_SHIFT;
            match slot {
                PmdSlot::Huge(pmd) => {
                    if pmd.present() {
                        out.push(Leaf::Pmd {
                            addr: base,
                            pmd: *pmd,
                        });
                    }
                }
                PmdSlot::Table(t) => {
                    if t.used == 0 {
                        continue;
                    }
                    let lo = if base < start { pte_slot(start) } else { 0 };
                    let hi = if base + PMD_SIZE > end {
                        pte_slot(end - 1) + 1
                    } else {
                        512
                    };
                    for i in lo..hi {
                        let pte = t.ptes[i];
                        if pte.present() {
                            out.push(Leaf::Pte {
                                addr: base + ((i as u64) << PAGE_SHIFT),
                                pte,
                            });
                        }
                    }
                }
            }
        }
        out
    }

    /// Every present leaf.
    pub fn all_leaves(&self) -> Vec<Leaf> {
        self.leaves(0, u64::MAX)
    }

    /// The number of installed PTE tables.
    pub fn nr_pte_tables(&self) -> usize {
        self.pmds
            .values()
            .filter(|s| matches!(s, PmdSlot::Table(_)))
            .count()
    }
}

impl PteTable {
    fn empty() -> PteTable {
        PteTable {
            ptes: [Pte::NONE; 512],
            used: 0,
        }
    }
}

impl fmt::Debug for PageTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.all_leaves()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pte_bits_follow_x86() {
        let p = Pte::mk(0x1234, _PAGE_RW | _PAGE_DEVMAP);
        assert_eq!(p.0, 0x1234 << 12 | 0b111 | 1 << 58);
        assert!(p.present() && p.write() && p.devmap() && !p.dirty());
        assert_eq!(p.pfn(), 0x1234);
        let c = p.mkdirty().wrprotect();
        assert!(c.dirty() && !c.write());
        assert!(!c.mkclean().dirty());
        let h = Pmd::mk_huge(0x200, 0);
        assert!(h.huge() && h.present());
        assert_eq!(format!("{p:?}"), "pfn 0x1234 P W DEVMAP");
    }

    #[test]
    fn pte_and_pmd_slots_exclude_each_other() {
        let mut pt = PageTable::new();
        let a = 0x7f00_0020_0000u64;
        assert_eq!(pt.pmd_get(a), PmdVal::None);
        assert_eq!(pt.pte_get(a), None);
        pt.set_pte(a + 0x3000, Pte::mk(7, 0)).unwrap();
        assert_eq!(pt.pmd_get(a), PmdVal::Table);
        assert_eq!(pt.pte_get(a + 0x3000).unwrap().pfn(), 7);
        assert_eq!(pt.pte_get(a), Some(Pte::NONE));
        assert_eq!(
            pt.set_pmd_huge(a, Pmd::mk_huge(0x200, 0)),
            Err(PtError::Table)
        );
        // Zapping leaves the table: a later PMD fault still falls back.
        assert_eq!(pt.pte_clear(a + 0x3000).pfn(), 7);
        assert_eq!(pt.pmd_get(a), PmdVal::Table);
        assert_eq!(pt.free_pgtables(a, a + PMD_SIZE), 0);
        assert_eq!(pt.pmd_get(a), PmdVal::None);
        pt.set_pmd_huge(a, Pmd::mk_huge(0x200, 0)).unwrap();
        assert_eq!(pt.set_pte(a, Pte::mk(1, 0)), Err(PtError::Huge));
        assert_eq!(pt.pte_alloc(a), Err(PtError::Huge));
        assert_eq!(pt.pte_get(a + 0x5000), None);
        assert_eq!(pt.pmd_huge_clear(a).pfn(), 0x200);
        assert_eq!(pt.pmd_get(a), PmdVal::None);
    }

    #[test]
    fn leaves_cover_partial_ranges() {
        let mut pt = PageTable::new();
        let base = 0x4000_0000u64;
        for i in 0..4 {
            pt.set_pte(base + i * 0x1000, Pte::mk(100 + i, 0)).unwrap();
        }
        pt.set_pmd_huge(base + PMD_SIZE, Pmd::mk_huge(0x400, 0))
            .unwrap();
        let l = pt.leaves(base + 0x1000, base + 0x3000);
        assert_eq!(
            l.iter().map(|x| x.pfn()).collect::<Vec<_>>(),
            vec![101, 102]
        );
        let l = pt.leaves(base + 0x3000, base + PMD_SIZE + 0x1000);
        assert_eq!(l.len(), 2);
        assert!(matches!(l[1], Leaf::Pmd { .. }));
        assert_eq!(pt.all_leaves().len(), 5);
        // free_pgtables reports a table that still maps something.
        assert_eq!(pt.free_pgtables(base, base + PMD_SIZE), 1);
    }
}
