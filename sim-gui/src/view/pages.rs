//! Page tables per process (every present leaf: PTE or huge PMD, pfn, write, dirty) and the
//! struct pages in use (refcount, mapcount, mapping, index, share, locked, poison).

use crate::session::Snapshot;
use sim_mm::pgtable::Leaf;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafRow {
    pub addr: u64,
    /// `PTE` or `PMD`.
    pub level: &'static str,
    pub pfn: u64,
    pub write: bool,
    pub dirty: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcView {
    pub name: String,
    pub leaves: Result<Vec<LeafRow>, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRowView {
    pub pfn: u64,
    pub refcount: u32,
    pub mapcount: u32,
    pub pincount: u32,
    pub mapping: u32,
    pub index: u64,
    pub share: u32,
    pub locked: bool,
    pub poison: bool,
}

pub fn leaf_row(l: &Leaf) -> LeafRow {
    match *l {
        Leaf::Pte { addr, pte } => LeafRow {
            addr,
            level: "PTE",
            pfn: pte.pfn(),
            write: pte.write(),
            dirty: pte.dirty(),
        },
        Leaf::Pmd { addr, pmd } => LeafRow {
            addr,
            level: "PMD",
            pfn: pmd.pfn(),
            write: pmd.write(),
            dirty: pmd.dirty(),
        },
    }
}

pub fn procs(snap: &Snapshot) -> Vec<ProcView> {
    snap.procs
        .iter()
        .map(|p| ProcView {
            name: p.name.clone(),
            leaves: p
                .leaves
                .as_ref()
                .map(|ls| ls.iter().map(leaf_row).collect())
                .map_err(|e| e.clone()),
        })
        .collect()
}

pub fn pages(snap: &Snapshot) -> Result<Vec<PageRowView>, String> {
    snap.pages.as_ref().map_err(|e| e.clone()).map(|rows| {
        rows.iter()
            .map(|r| PageRowView {
                pfn: r.pfn,
                refcount: r.page.refcount,
                mapcount: r.page.mapcount,
                pincount: r.page.pincount,
                mapping: r.page.mapping,
                index: r.page.index,
                share: r.page.share,
                locked: r.page.locked(),
                poison: r.page.hwpoison(),
            })
            .collect()
    })
}
