//! sim-mm: the memory-management layer of pmsim and the DAX core.
//!
//! | module | kernel counterpart |
//! | --- | --- |
//! | [`page`] | `struct page` of the pmem `dev_pagemap`, refcount/mapcount/pincount, page lock, HWPoison |
//! | [`xarray`] | `struct xarray` of `mapping->i_pages`: multi-order entries, marks, `xas_*` |
//! | [`bugs`] | the catalogue of bug modes (historical behaviours switched on by `bug NAME`) |
//! | [`dax_entry`] | the DAX entry encoding of fs/dax.c (bit-identical) |
//! | [`dax`] | the DAX core of fs/dax.c: entry locking, `grab_mapping_entry`, the fault paths, the `iomap` seam |
//! | [`pgtable`] | x86-64 PTE/PMD words and one process's page tables |
//! | [`mm`] | `mm_struct`, VMAs, mmap/munmap, zap, `unmap_mapping_range`, `pfn_mkclean_range`, `split_huge_pmd`, the `vmf_insert_*` helpers |
//! | [`world`] | address spaces (`i_pages`, `i_mmap`, `invalidate_lock`) and the global tables |
//! | [`rmap`] | the i_mmap interval tree, `vma_address`, `rmap_walk` |
//! | [`gup`] | `pin_user_pages_fast` (lockless fast path + slow path), `unpin_user_page` |
//! | [`signal`] | processes, threads, SIGBUS with `BUS_MCEERR_AR/AO`, SIGKILL |
//! | [`memory_failure`] | `memory_failure`, `collect_procs`, `kill_procs`, `mf_dax_kill_procs`, the `notify_failure` hook |
//! | [`invariants`] | the page/page-table/xarray consistency checks, as structured violations |
//!
//! Shared mutable state is reached only through `sim_core::Platform` primitives; everything else
//! is plain data living inside them (see each module's notes on what models which kernel lock or
//! atomic).

pub mod bugs;
pub mod dax;
pub mod dax_entry;
pub mod gup;
pub mod invariants;
pub mod memory_failure;
pub mod mm;
pub mod page;
pub mod pgtable;
pub mod rmap;
pub mod signal;
pub mod world;
pub mod xarray;

use serde::{Deserialize, Serialize};
use std::fmt;

/// Identity of an `address_space` (what `page->mapping` points to). 0 is NULL.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct MappingId(pub u32);

/// Identity of an `mm_struct`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct MmId(pub u32);

/// A process (thread group) id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Pid(pub u32);

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Kernel error numbers used by this layer (values as on x86-64 Linux).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Errno {
    EIO = 5,
    ENXIO = 6,
    ENOMEM = 12,
    EFAULT = 14,
    EBUSY = 16,
    EINVAL = 22,
    ENOSPC = 28,
    EOPNOTSUPP = 95,
    EHWPOISON = 133,
    /// Kernel-internal: interrupted by a signal, restart the system call.
    ERESTARTSYS = 512,
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

pub use gup::{pin_user_pages_fast, unpin_user_page, unpin_user_pages};
pub use memory_failure::{
    DaxEntryLocking, DaxHolder, MfContext, MfReport, NoDaxLocking, NoHolder, memory_failure,
    mf_dax_kill_procs,
};
pub use mm::{MmStruct, MmapFlags, VmFault, Vma};
pub use page::{MemMap, Page, Pfn};
pub use pgtable::{PageTable, Pmd, PmdVal, Pte};
pub use rmap::{IntervalTree, RmapVma};
pub use signal::{SigInfo, Signal};
pub use world::{AddressSpace, MmWorld};
pub use xarray::{XArray, XaEntry, XaMark, XaState};
