//! sim-mm: the memory-management layer (struct pages, xarray, processes, VMAs, page tables,
//! rmap, GUP, signals, memory_failure) and, later, the DAX core.

pub mod bugs;
