//! Address spaces and the global tables of the mm layer.
//!
//! [`MmWorld`] gathers what is global in the kernel: the pmem memmap, the table of address
//! spaces that `page->mapping` refers to, the task list (with each thread's pending signals), the
//! memory-failure mutex and the kernel log. Model code gets it by reference; a simulation builds
//! one per run.

use crate::page::MemMap;
use crate::rmap::IntervalTree;
use crate::signal::TaskList;
use crate::xarray::XArray;
use crate::{MappingId, Pfn};
use sim_core::platform::bug_on;
use sim_core::{Mutex, Platform, RwSem, SpinLock};
use std::collections::BTreeMap;
use std::sync::Arc;

/// `struct address_space` of a DAX file.
pub struct AddressSpace<P: Platform> {
    pub id: MappingId,
    /// The inode number of the host, for reports and traces.
    pub host: u64,
    /// `i_pages` and its lock (`xa_lock`), with `nrpages` inside.
    pub i_pages: SpinLock<P, XArray>,
    /// `i_mmap` and `i_mmap_rwsem`.
    pub i_mmap: RwSem<P, IntervalTree<P>>,
    /// `invalidate_lock` (XFS MMAPLOCK): faults shared, block freeing/moving exclusive.
    pub invalidate_lock: RwSem<P, ()>,
}

impl<P: Platform> AddressSpace<P> {
    pub fn new(p: &P, id: MappingId, host: u64) -> AddressSpace<P> {
        AddressSpace {
            id,
            host,
            // xa_lock: a spinlock nobody try-locks or reads around (the model has no RCU lookups),
            // so its sections are atomic (`sim` "Atomic sections").
            i_pages: SpinLock::new_with_parts(p, "i_pages", XArray::new()).no_lockless_access(p),
            i_mmap: RwSem::new(p, "i_mmap_rwsem", IntervalTree::new()),
            invalidate_lock: RwSem::new(p, "invalidate_lock", ()),
        }
    }
}

/// The state of an address-space id.
pub enum MappingState<P: Platform> {
    Live(Arc<AddressSpace<P>>),
    /// The inode was evicted: any later use through `page->mapping` is a use after free.
    Freed {
        host: u64,
    },
}

/// Every address space ever created in the run, by id (ids are never reused).
pub struct MappingTable<P: Platform> {
    map: BTreeMap<u32, MappingState<P>>,
    next: u32,
}

impl<P: Platform> MappingTable<P> {
    pub fn get(&self, id: MappingId) -> Option<&MappingState<P>> {
        self.map.get(&id.0)
    }
    /// Ids of evicted inodes.
    pub fn freed_ids(&self) -> Vec<MappingId> {
        self.map
            .iter()
            .filter(|(_, s)| matches!(s, MappingState::Freed { .. }))
            .map(|(&k, _)| MappingId(k))
            .collect()
    }
    pub fn live(&self) -> impl Iterator<Item = &Arc<AddressSpace<P>>> + '_ {
        self.map.values().filter_map(|s| match s {
            MappingState::Live(a) => Some(a),
            MappingState::Freed { .. } => None,
        })
    }
}

/// Configuration of the mm layer (fixed for a run).
#[derive(Clone, Copy, Debug, Default)]
pub struct MmConfig {
    /// `vm.memory_failure_early_kill`: signal every process mapping a failed page at once
    /// (BUS_MCEERR_AO) rather than only the one that consumed it. Linux's default is 0.
    pub memory_failure_early_kill: bool,
}

/// The global state of the mm layer.
pub struct MmWorld<P: Platform> {
    pub memmap: MemMap<P>,
    pub mappings: SpinLock<P, MappingTable<P>>,
    /// The task list (`tasklist_lock`), which here also guards each thread's pending signals
    /// (`sighand->siglock`).
    pub tasks: SpinLock<P, TaskList<P>>,
    /// `mf_mutex`: serialises `memory_failure`.
    pub mf_mutex: Mutex<P, ()>,
    /// The kernel log (`printk`), in order.
    pub klog: SpinLock<P, Vec<String>>,
    pub config: MmConfig,
}

impl<P: Platform> MmWorld<P> {
    /// A world whose pmem memmap covers `nr_pages` pfns from `base_pfn`. The range must not
    /// contain the DRAM zero pages (`ZERO_PFN`, `HUGE_ZERO_PFN`: below 32 MiB) nor the anonymous
    /// pages a CoW fault maps; pmem sits above 4 GiB (pfn 0x100000) in the machine model.
    pub fn new(p: &P, base_pfn: Pfn, nr_pages: u64, config: MmConfig) -> MmWorld<P> {
        MmWorld {
            memmap: MemMap::new(p, base_pfn, nr_pages),
            mappings: SpinLock::new(
                p,
                "mapping_table",
                MappingTable {
                    map: BTreeMap::new(),
                    next: 1,
                },
            ),
            tasks: SpinLock::new(p, "tasklist_lock", TaskList::new()),
            mf_mutex: Mutex::new(p, "mf_mutex", ()),
            klog: SpinLock::new(p, "printk", Vec::new()),
            config,
        }
    }

    /// Create the address space of a new inode.
    pub async fn new_mapping(&self, p: &P, host: u64) -> Arc<AddressSpace<P>> {
        let mut t = self.mappings.lock(p).await;
        let id = MappingId(t.next);
        t.next += 1;
        let m = Arc::new(AddressSpace::new(p, id, host));
        t.map.insert(id.0, MappingState::Live(m.clone()));
        t.unlock().await;
        m
    }

    /// The inode is evicted: its id now names a freed object. Its i_mmap and i_pages must be
    /// empty by then (the kernel BUGs on both in `clear_inode`).
    pub async fn destroy_mapping(&self, p: &P, m: &AddressSpace<P>) {
        let xa = m.i_pages.lock(p).await;
        let (entries, nrpages) = (xa.nr_entries(), xa.nrpages);
        xa.unlock().await;
        let mapped = !m.i_mmap.read(p).await.is_empty();
        // An evicted inode has no page-cache entries left and nobody maps it.
        bug_on(
            p,
            entries != 0 || nrpages != 0 || mapped,
            "evict-busy-inode",
            || {
                format!(
                    "evicting ino {} with {entries} entries, nrpages {nrpages}, mapped {mapped}",
                    m.host
                )
            },
        )
        .await;
        let mut t = self.mappings.lock(p).await;
        t.map.insert(m.id.0, MappingState::Freed { host: m.host });
        t.unlock().await;
    }

    /// Follow `page->mapping`: the live address space, or `None` for an unknown id. Following a
    /// freed one is a use after free (a fatal model assertion).
    pub async fn mapping_get(&self, p: &P, id: MappingId) -> Option<Arc<AddressSpace<P>>> {
        let t = self.mappings.lock(p).await;
        let r = match t.get(id) {
            Some(MappingState::Live(m)) => Ok(m.clone()),
            Some(MappingState::Freed { host }) => Err(Some(*host)),
            None => Err(None),
        };
        t.unlock().await;
        match r {
            Ok(m) => Some(m),
            Err(freed) => {
                bug_on(p, freed.is_some(), "mapping-use-after-free", || {
                    format!(
                        "address_space {} (ino {}) used after the inode was evicted",
                        id.0,
                        freed.unwrap_or(0)
                    )
                })
                .await;
                None
            }
        }
    }

    /// `printk`.
    pub async fn printk(&self, p: &P, msg: String) {
        let mut l = self.klog.lock(p).await;
        l.push(msg);
        l.unlock().await;
    }

    /// A copy of the kernel log.
    pub async fn dmesg(&self, p: &P) -> Vec<String> {
        let l = self.klog.lock(p).await;
        let v = l.clone();
        l.unlock().await;
        v
    }
}
