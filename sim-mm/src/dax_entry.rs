//! The DAX entry encoding of fs/dax.c (research/linux_dax.md section 1), bit for bit, so that an
//! ftrace `radix_entry` value decodes the same way here and in the kernel.
//!
//! A DAX entry is the value entry `xa_mk_value(flags | pfn << DAX_SHIFT)`. As a raw word: bit 0
//! is the value tag, bit 1 `DAX_LOCKED`, bit 2 `DAX_PMD`, bit 3 `DAX_ZERO_PAGE`, bit 4
//! `DAX_EMPTY`, the pfn from bit 5.

use crate::xarray::{XA_RETRY_ENTRY, XaEntry, xa_mk_value, xa_to_value};

pub const DAX_SHIFT: u32 = 4;
pub const DAX_LOCKED: u64 = 1 << 0;
pub const DAX_PMD: u64 = 1 << 1;
pub const DAX_ZERO_PAGE: u64 = 1 << 2;
pub const DAX_EMPTY: u64 = 1 << 3;

pub const PAGE_SHIFT: u32 = 12;
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
pub const PMD_SHIFT: u32 = 21;
pub const PMD_SIZE: u64 = 1 << PMD_SHIFT;
/// `PMD_ORDER` on x86-64.
pub const PMD_ORDER: u8 = 9;
/// `PG_PMD_NR`.
pub const PG_PMD_NR: u64 = 1 << PMD_ORDER;
/// `PG_PMD_COLOUR`.
pub const PG_PMD_COLOUR: u64 = PG_PMD_NR - 1;

/// `dax_make_entry(pfn, flags)`.
pub const fn dax_make_entry(pfn: u64, flags: u64) -> XaEntry {
    xa_mk_value(flags | (pfn << DAX_SHIFT))
}

/// `dax_to_pfn(entry)`.
pub const fn dax_to_pfn(e: XaEntry) -> u64 {
    xa_to_value(e) >> DAX_SHIFT
}

/// The flag bits of a DAX entry.
pub const fn dax_flags(e: XaEntry) -> u64 {
    xa_to_value(e) & ((1 << DAX_SHIFT) - 1)
}

pub const fn dax_is_locked(e: XaEntry) -> bool {
    xa_to_value(e) & DAX_LOCKED != 0
}

/// `dax_entry_order`: `PMD_ORDER` for a PMD entry, else 0.
pub const fn dax_entry_order(e: XaEntry) -> u8 {
    if xa_to_value(e) & DAX_PMD != 0 {
        PMD_ORDER
    } else {
        0
    }
}

pub const fn dax_is_pmd_entry(e: XaEntry) -> bool {
    xa_to_value(e) & DAX_PMD != 0
}

pub const fn dax_is_pte_entry(e: XaEntry) -> bool {
    xa_to_value(e) & DAX_PMD == 0
}

pub const fn dax_is_zero_entry(e: XaEntry) -> bool {
    xa_to_value(e) & DAX_ZERO_PAGE != 0
}

pub const fn dax_is_empty_entry(e: XaEntry) -> bool {
    xa_to_value(e) & DAX_EMPTY != 0
}

/// `dax_is_conflict`: the entry `get_next_unlocked_entry` returns for a smaller conflicting entry.
pub const fn dax_is_conflict(e: XaEntry) -> bool {
    e.0 == XA_RETRY_ENTRY.0
}

/// `dax_entry_size`: 0 for zero/empty entries, else the page or PMD size.
pub const fn dax_entry_size(e: XaEntry) -> u64 {
    if dax_is_zero_entry(e) || dax_is_empty_entry(e) {
        0
    } else if dax_is_pmd_entry(e) {
        PMD_SIZE
    } else {
        PAGE_SIZE
    }
}

/// The number of pfns a block-backed entry maps (0 for zero/empty entries).
pub const fn dax_entry_nr_pfns(e: XaEntry) -> u64 {
    dax_entry_size(e) >> PAGE_SHIFT
}

/// Decode a raw `radix_entry` as printed by the fs_dax tracepoints, e.g.
/// `pfn 0x200 PMD|LOCKED`.
pub fn decode_radix_entry(raw: u64) -> String {
    let e = XaEntry(raw);
    if e.is_null() {
        return "NULL".to_string();
    }
    if !e.is_value() {
        return format!("{e:?}");
    }
    let mut names = vec![];
    for (bit, name) in [
        (DAX_PMD, "PMD"),
        (DAX_ZERO_PAGE, "ZERO"),
        (DAX_EMPTY, "EMPTY"),
        (DAX_LOCKED, "LOCKED"),
    ] {
        if dax_flags(e) & bit != 0 {
            names.push(name);
        }
    }
    let flags = if names.is_empty() {
        "PTE".to_string()
    } else {
        names.join("|")
    };
    format!("pfn {:#x} {flags}", dax_to_pfn(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bits_match_ftrace_radix_entry() {
        // pfn 0x123, PMD, locked: raw = ((0x123 << 4 | 2 | 1) << 1) | 1.
        let e = dax_make_entry(0x123, DAX_PMD | DAX_LOCKED);
        assert_eq!(e.0, 0x2467);
        assert_eq!(e.0 & 1, 1, "value tag");
        assert_eq!((e.0 >> 1) & 1, 1, "LOCKED is raw bit 1");
        assert_eq!((e.0 >> 2) & 1, 1, "PMD is raw bit 2");
        assert_eq!(e.0 >> 5, 0x123, "pfn from raw bit 5");
        assert_eq!(dax_to_pfn(e), 0x123);
        assert!(dax_is_locked(e) && dax_is_pmd_entry(e));
        assert_eq!(dax_entry_order(e), PMD_ORDER);
        assert_eq!(dax_entry_size(e), PMD_SIZE);
        let z = dax_make_entry(0, DAX_ZERO_PAGE);
        assert_eq!(z.0, 0b1001);
        assert_eq!(dax_entry_size(z), 0);
        let em = dax_make_entry(0, DAX_EMPTY | DAX_PMD);
        assert_eq!(em.0, 0b10101);
        assert!(dax_is_empty_entry(em) && !dax_is_zero_entry(em));
        assert!(dax_is_conflict(XA_RETRY_ENTRY));
        assert_eq!(decode_radix_entry(0x2467), "pfn 0x123 PMD|LOCKED");
        assert_eq!(decode_radix_entry(dax_make_entry(5, 0).0), "pfn 0x5 PTE");
    }
}
