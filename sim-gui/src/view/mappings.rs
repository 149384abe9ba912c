//! Mappings: each file's xarray as a table (one row per entry) and as a strip over indices,
//! decoded with the DAX entry predicates of `sim_mm::dax_entry` (PTE/PMD order, locked, zero,
//! empty, pfn) and the xarray marks DIRTY and TOWRITE.

use crate::session::Snapshot;
use sim_mm::dax_entry::{
    dax_is_empty_entry, dax_is_locked, dax_is_pmd_entry, dax_is_zero_entry, dax_to_pfn,
};
use sim_mm::xarray::{PAGECACHE_TAG_DIRTY, PAGECACHE_TAG_TOWRITE, XaItem};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryRow {
    /// First and last index covered.
    pub first: u64,
    pub last: u64,
    /// `PMD` or `PTE`; `value` for a non-DAX entry.
    pub order: &'static str,
    pub locked: bool,
    pub zero: bool,
    pub empty: bool,
    pub pfn: Option<u64>,
    pub dirty: bool,
    pub towrite: bool,
    pub raw: u64,
}

impl EntryRow {
    /// The colour class of the entry (legend: locked > empty > zero > dirty > plain).
    pub fn class(&self) -> EntryClass {
        if self.locked {
            EntryClass::Locked
        } else if self.empty {
            EntryClass::Empty
        } else if self.zero {
            EntryClass::Zero
        } else if self.dirty {
            EntryClass::Dirty
        } else {
            EntryClass::Mapped
        }
    }

    /// The flags as text: `LOCKED PMD ZERO EMPTY DIRTY TOWRITE`.
    pub fn flags(&self) -> String {
        let mut f = vec![self.order];
        for (on, name) in [
            (self.locked, "LOCKED"),
            (self.zero, "ZERO"),
            (self.empty, "EMPTY"),
            (self.dirty, "DIRTY"),
            (self.towrite, "TOWRITE"),
        ] {
            if on {
                f.push(name);
            }
        }
        f.join(" ")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryClass {
    Locked,
    Empty,
    Zero,
    Dirty,
    Mapped,
}

/// A run of indices with one class in the strip (gaps are no entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StripSegment {
    pub first: u64,
    pub last: u64,
    pub class: EntryClass,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileView {
    pub title: String,
    /// `Err`: the xarray cannot be seen now (why).
    pub entries: Result<Vec<EntryRow>, String>,
    pub strip: Vec<StripSegment>,
    /// The strip covers indices `0..strip_len`.
    pub strip_len: u64,
}

pub fn entry_row(it: &XaItem) -> EntryRow {
    let e = it.entry;
    let dax = e.is_value();
    EntryRow {
        first: it.index,
        last: it.end() - 1,
        order: if !dax {
            "value"
        } else if dax_is_pmd_entry(e) {
            "PMD"
        } else {
            "PTE"
        },
        locked: dax && dax_is_locked(e),
        zero: dax && dax_is_zero_entry(e),
        empty: dax && dax_is_empty_entry(e),
        pfn: (dax && !dax_is_zero_entry(e) && !dax_is_empty_entry(e)).then(|| dax_to_pfn(e)),
        dirty: it.has_mark(PAGECACHE_TAG_DIRTY),
        towrite: it.has_mark(PAGECACHE_TAG_TOWRITE),
        raw: e.0,
    }
}

pub fn build(snap: &Snapshot) -> Vec<FileView> {
    snap.files
        .iter()
        .map(|f| {
            let entries = f
                .items
                .as_ref()
                .map(|items| items.iter().map(entry_row).collect::<Vec<_>>())
                .map_err(|e| e.clone());
            let strip: Vec<StripSegment> = entries
                .as_ref()
                .map(|rows| {
                    rows.iter()
                        .map(|r| StripSegment {
                            first: r.first,
                            last: r.last,
                            class: r.class(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            // At least one PMD's worth of indices, so a PTE entry has a place among them.
            let strip_len = strip.iter().map(|s| s.last + 1).max().unwrap_or(0).max(512);
            FileView {
                title: format!("{} (ino {}, mapping {})", f.path, f.ino, f.mapping),
                entries,
                strip,
                strip_len,
            }
        })
        .collect()
}
