//! The DAX core's writeback, invalidation, layout breaking and memory-failure locking
//! (sim-mm/src/dax/{writeback, invalidate, memory_failure}.rs): unit tests per function (one
//! task), concurrent ones explored with `dfs` (clean on today's core, with the mm invariants
//! checked after every step), and for each bug mode of these files a search that finds the
//! failure the mode causes, of the right kind, next to the same search clean with the mode off.
//!
//! Entries are created directly (`populate`), and the user's stores go through
//! [`user_store`], which faults through [`fault_existing`]: the path `dax_iomap_pte_fault` /
//! `dax_iomap_pmd_fault` take on an index that already has a block entry (lock it, mark it
//! DIRTY on a write as `dax_insert_entry` does, map, unlock).

mod common;

use common::*;
use sim_core::machine::{Machine, MachineConfig};
use sim_core::sim::{
    CheckFailure, ExploreConfig, ExploreReport, Model, Sim, Strategy, ViolationKind, explore,
    peek_machine,
};
use sim_core::{Platform, PmemPlatform, Spawner, TaskId};
use sim_mm::dax::entry::{
    dax_associate_entry, dax_disassociate_entry, dax_lock_entry, dax_unlock_entry,
    get_next_unlocked_entry,
};
use sim_mm::dax::invalidate::{
    __dax_invalidate_entry, __remove_mapping, LLONG_MAX, WaitIdle, dax_break_layout,
    dax_break_layout_final, dax_delete_mapping_entry, dax_delete_mapping_range,
    dax_invalidate_mapping_entry_sync, dax_layout_busy_page_range, pack_shadow,
};
use sim_mm::dax::memory_failure::DAX_NO_ENTRY;
use sim_mm::dax::writeback::{
    DaxDevice, WbSyncMode, WritebackControl, WritebackOne, dax_writeback_mapping_range,
    tag_pages_for_writeback,
};
use sim_mm::dax::{BugSet, Dax, DaxBug};
use sim_mm::dax_entry::*;
use sim_mm::gup::{FaultHandler, pin_user_pages_fast, unpin_user_pages};
use sim_mm::invariants::{CheckPolicy, install_checks};
use sim_mm::memory_failure::{DaxEntryLocking, MfContext, NoHolder, memory_failure};
use sim_mm::mm::{
    MmapFlags, VmFault, Vma, VmaBounds, do_mmap, vmf_insert_folio_pmd, vmf_insert_page_mkwrite,
};
use sim_mm::pgtable::{_PAGE_DIRTY, PmdVal, Pte};
use sim_mm::signal::{Signal, create_process};
use sim_mm::world::{AddressSpace, MmConfig, MmWorld};
use sim_mm::xarray::{PAGECACHE_TAG_DIRTY, PAGECACHE_TAG_TOWRITE, XaEntry, XaState};
use sim_mm::{Errno, MmStruct, Pfn};
use std::sync::Arc;

// ---------------------------------------------------------------------------------------------
// Fixture

/// Pages of pmem: one PMD folio for the PMD entry, and small blocks below it.
const NPAGES: u64 = 1024;
/// The PTE entry of file 1: index 0, block `PTE_PFN`.
const PTE_PFN: Pfn = BASE_PFN + 5;
/// A second PTE entry of file 1: index 1.
const PTE2_PFN: Pfn = BASE_PFN + 6;
/// The PMD entry of file 1: indices 512..1024, folio `PMD_PFN`.
const PMD_IDX: u64 = 512;
const PMD_PFN: Pfn = BASE_PFN + 512;
/// The block of file 2 (nobody maps file 2): index 0.
const F2_PFN: Pfn = BASE_PFN + 7;
/// A free block (the target of a CoW write).
const SPARE_PFN: Pfn = BASE_PFN + 8;

struct Fx {
    w: Arc<MmWorld<P>>,
    dax: Arc<Dax<P>>,
    /// File 1: entries at 0, 1 and a PMD entry at 512; mapped by `mm` (4 MiB, shared, rw).
    m: Arc<AddressSpace<P>>,
    /// File 2: one entry at 0, mapped by nobody.
    m2: Arc<AddressSpace<P>>,
    mm: Arc<MmStruct<P>>,
    addr: u64,
    vma: VmaBounds,
    dev: DaxDevice,
}

impl Fx {
    fn addr_of(&self, index: u64) -> u64 {
        self.addr + (index << PAGE_SHIFT)
    }
}

/// The machine: 2 CPUs, pmem covering the memmap.
fn machine() -> Machine {
    let mut cfg = MachineConfig::default();
    cfg.set("pmem", "4MiB").unwrap();
    cfg.set("cpus", "2").unwrap();
    cfg.set("cache", "64KiB").unwrap();
    Machine::new(cfg).unwrap()
}

/// Build the fixture in a setup task run to completion before the racers exist. The process
/// mapping file 1 has threads `threads` (the task ids of the racers that touch its memory).
fn setup(sim: &mut Sim, bugs: BugSet, threads: &[u32]) -> Arc<Fx> {
    sim.set_machine(machine());
    let p = sim.platform();
    let threads: Vec<TaskId> = threads.iter().map(|&t| TaskId(t)).collect();
    let out = Arc::new(std::sync::Mutex::new(None));
    let o = out.clone();
    sim.spawn("setup", move || async move {
        let w = Arc::new(MmWorld::new(
            &p,
            BASE_PFN,
            NPAGES,
            MmConfig {
                memory_failure_early_kill: true,
            },
        ));
        // 64 wait-table buckets instead of 4096: fewer objects per run, same wake-ups (waking
        // is filtered by key).
        let dax = Arc::new(Dax::with_wait_table_bits(&p, w.clone(), bugs, 6));
        let m = w.new_mapping(&p, 1).await;
        let m2 = w.new_mapping(&p, 2).await;
        populate(&p, &w, &m, 0, PTE_PFN, false).await;
        populate(&p, &w, &m, 1, PTE2_PFN, false).await;
        populate(&p, &w, &m, PMD_IDX, PMD_PFN, true).await;
        populate(&p, &w, &m2, 0, F2_PFN, false).await;
        let (_, mm) = create_process(&p, &w, "user", &threads).await;
        let flags = MmapFlags {
            shared: true,
            write: true,
            ..MmapFlags::default()
        };
        let addr = do_mmap(&p, &mm, &m, 0, 2 * PMD_SIZE, flags).await.unwrap();
        let vma = mm.mmap_lock.read(&p).await.vma_lookup(addr).unwrap().b;
        assert_eq!((addr + (PMD_IDX << PAGE_SHIFT)) % PMD_SIZE, 0);
        let dev = DaxDevice {
            base_pfn: BASE_PFN,
            write_cache: true,
        };
        *o.lock().unwrap() = Some(Arc::new(Fx {
            w,
            dax,
            m,
            m2,
            mm,
            addr,
            vma,
            dev,
        }));
    });
    sim.run(|_, en| en[0]);
    out.lock().unwrap().take().expect("setup ran")
}

/// A fault on an index that has a block entry (the fault paths on a mapped extent): lock the
/// entry, on a write mark it DIRTY (`dax_insert_entry`), map it (with a PMD for a PMD entry when
/// `huge`), unlock and wake.
async fn fault_existing(fx: &Fx, p: &P, addr: u64, write: bool, huge: bool) -> VmFault {
    let index = fx.vma.linear_page_index(addr);
    let order = if huge { PMD_ORDER } else { 0 };
    let mut xas = XaState::new_order(index, order);
    let xa = fx.m.i_pages.lock(p).await;
    let (mut xa, entry) = get_next_unlocked_entry(&fx.dax, p, &fx.m, xa, &mut xas, order).await;
    if !entry.is_value() || dax_is_zero_entry(entry) || dax_is_empty_entry(entry) {
        xa.unlock().await;
        return VmFault::SIGBUS;
    }
    dax_lock_entry(&mut xa, &mut xas, entry);
    if write {
        xa.xas_set_mark(&xas, PAGECACHE_TAG_DIRTY);
    }
    xa.unlock().await;
    let r = if huge && dax_is_pmd_entry(entry) {
        vmf_insert_folio_pmd(p, &fx.w, &fx.mm, &fx.vma, addr, dax_to_pfn(entry), write).await
    } else {
        let first = index & !(dax_entry_nr_pfns(entry) - 1);
        let pfn = dax_to_pfn(entry) + (index - first);
        vmf_insert_page_mkwrite(p, &fx.w, &fx.mm, &fx.vma, addr, pfn, write).await
    };
    dax_unlock_entry(&fx.dax, p, &fx.m, &mut xas, entry).await;
    r
}

/// A user store of `val` at `addr` through the process's page tables: the page walk and the
/// store are one atomic unit under the page-table lock (a store in flight completes before the
/// TLB shootdown of a write-protect returns); a missing or read-only leaf faults first.
async fn user_store(fx: &Fx, p: &P, addr: u64, val: u64, huge: bool) {
    loop {
        let mut pt = fx.mm.page_table.lock(p).await;
        let target = match pt.pmd_get(addr) {
            PmdVal::Huge(pmd) if pmd.present() && pmd.write() => {
                pt.pmd_modify(addr, |e| e.mkdirty());
                Some(pmd.pfn() + ((addr >> PAGE_SHIFT) & (PG_PMD_NR - 1)))
            }
            PmdVal::Table => match pt.pte_get(addr) {
                Some(pte) if pte.present() && pte.write() => {
                    pt.pte_modify(addr, |e| Pte(e.0 | _PAGE_DIRTY));
                    Some(pte.pfn())
                }
                _ => None,
            },
            _ => None,
        };
        if let Some(pfn) = target {
            let a = fx.dev.pfn_to_addr(pfn) + (addr & (PAGE_SIZE - 1));
            p.pmem_store(a, &val.to_le_bytes()).await.unwrap();
            pt.unlock().await;
            return;
        }
        pt.unlock().await;
        let r = fault_existing(fx, p, addr, true, huge).await;
        assert_eq!(r, VmFault::NOPAGE);
    }
}

/// fsync: write back the whole file, then the file system's flush request (a fence).
async fn fsync(fx: &Fx, p: &P) -> Vec<WritebackOne> {
    let r = dax_writeback_mapping_range(&fx.dax, p, &fx.m, &fx.dev, &WritebackControl::fsync_all())
        .await
        .unwrap();
    p.sfence().await.unwrap();
    r
}

/// The marks of the entry covering `index` of `m`, peeked between steps.
fn peek_marks(m: &AddressSpace<P>, index: u64) -> Option<(bool, bool)> {
    m.i_pages.peek(&sim_core::sim::SimPlatform, |xa| {
        (
            xa.xa_get_mark(index, PAGECACHE_TAG_DIRTY),
            xa.xa_get_mark(index, PAGECACHE_TAG_TOWRITE),
        )
    })
}

fn durable_u64(addr: u64) -> u64 {
    peek_machine(|m| {
        let mut b = [0u8; 8];
        m.peek_durable(addr, &mut b).unwrap();
        u64::from_le_bytes(b)
    })
    .expect("a machine is installed")
}

/// The writeback invariant, checked at the end of a run: a value stored through a mapping is
/// durable, or its entry is still DIRTY (a later fsync will flush it).
fn durable_or_dirty(
    fx: &Arc<Fx>,
    index: u64,
    addr: u64,
    want: u64,
) -> impl FnMut() -> Option<CheckFailure> + 'static {
    let fx = fx.clone();
    move || {
        let (dirty, _) = peek_marks(&fx.m, index)?;
        let got = durable_u64(fx.dev.pfn_to_addr(pfn_of(&fx, index)) + (addr & (PAGE_SIZE - 1)));
        (got != want && !dirty).then(|| CheckFailure {
            name: "store-lost-by-writeback".into(),
            message: format!(
                "index {index:#x}: the last store ({want}) is not durable (media has {got}) and the entry is clean"
            ),
        })
    }
}

/// The block behind `index` of file 1.
fn pfn_of(fx: &Fx, index: u64) -> Pfn {
    fx.m.i_pages
        .peek(&sim_core::sim::SimPlatform, |xa| {
            let it = xa.lookup(index).expect("an entry");
            dax_to_pfn(it.entry) + (index - it.index)
        })
        .expect("i_pages free")
}

fn dfs(bound: Option<u32>) -> ExploreConfig {
    ExploreConfig {
        strategy: Strategy::Dfs {
            preemption_bound: bound,
        },
        ..ExploreConfig::default()
    }
}

fn run(model: &dyn Model, cfg: &ExploreConfig) -> ExploreReport {
    let t = std::time::Instant::now();
    let r = explore(model, cfg, &mut |_| {}).expect("explore");
    if std::env::var("DAX_WB_PERF").is_ok() {
        eprintln!(
            "PERF {:?}: {} runs ({} redundant), {} steps max, {:?}",
            cfg.strategy,
            r.runs,
            r.redundant_runs,
            r.max_steps,
            t.elapsed()
        );
    }
    r
}

fn clean(rep: &ExploreReport) {
    assert!(
        rep.failure.is_none(),
        "{}",
        rep.failure.as_ref().unwrap().violation
    );
    assert!(rep.exhausted, "the whole space was explored");
}

fn found(rep: &ExploreReport) -> &sim_core::sim::Violation {
    &rep.failure
        .as_ref()
        .expect("the search finds the failure")
        .violation
}

const EVERY_STEP: CheckPolicy = CheckPolicy {
    every_step: true,
    at_end: true,
};

/// Run `f` as the one task of a fresh simulation with the fixture (invariants checked at
/// every step); returns its result.
fn one<T: Send + 'static, Fut: std::future::Future<Output = T> + 'static>(
    bugs: BugSet,
    f: impl FnOnce(Arc<Fx>, P) -> Fut + Send + 'static,
) -> T {
    one_with(bugs, EVERY_STEP, f)
}

fn one_with<T: Send + 'static, Fut: std::future::Future<Output = T> + 'static>(
    bugs: BugSet,
    policy: CheckPolicy,
    f: impl FnOnce(Arc<Fx>, P) -> Fut + Send + 'static,
) -> T {
    let out = Arc::new(std::sync::Mutex::new(None));
    let o = out.clone();
    let mut sim = Sim::new(sim_core::sim::SimConfig::default());
    let fx = setup(&mut sim, bugs, &[1]);
    install_checks(&mut sim, &fx.w, policy);
    let p = sim.platform();
    sim.spawn("t", move || async move {
        let r = f(fx, p).await;
        *o.lock().unwrap() = Some(r);
    });
    let end = sim.run(|_, en| en[0]);
    assert_eq!(end, sim_core::sim::RunEnd::Done, "the run ended cleanly");
    drop(sim);
    out.lock().unwrap().take().expect("the task finished")
}

// ---------------------------------------------------------------------------------------------
// Writeback: unit tests

#[test]
fn tag_pages_for_writeback_tags_the_dirty_entries_of_the_range() {
    one(BugSet::NONE, |fx, p| async move {
        let mut xa = fx.m.i_pages.lock(&p).await;
        xa.xas_set_mark(&XaState::new(0), PAGECACHE_TAG_DIRTY);
        xa.xas_set_mark(&XaState::new(PMD_IDX), PAGECACHE_TAG_DIRTY);
        xa.unlock().await;
        tag_pages_for_writeback(&fx.dax, &p, &fx.m, 1, 700).await;
        let xa = fx.m.i_pages.lock(&p).await;
        // Index 0 is outside the range, index 1 is clean, the PMD entry (512..1024) is tagged.
        let tagged = (
            xa.xa_get_mark(0, PAGECACHE_TAG_TOWRITE),
            xa.xa_get_mark(1, PAGECACHE_TAG_TOWRITE),
            xa.xa_get_mark(PMD_IDX + 9, PAGECACHE_TAG_TOWRITE),
        );
        xa.unlock().await;
        assert_eq!(tagged, (false, false, true));
    });
}

#[test]
fn writeback_write_protects_flushes_and_cleans_a_pte_entry() {
    one(BugSet::NONE, |fx, p| async move {
        let a = fx.addr_of(0) + 8;
        user_store(&fx, &p, a, 7, false).await;
        let done = fsync(&fx, &p).await;
        assert_eq!(done, vec![WritebackOne::Flushed { index: 0, count: 1 }]);
        // The store is durable, the entry clean, unlocked, the PTE read-only and clean.
        let xa = fx.m.i_pages.lock(&p).await;
        let e = xa.xa_load(0);
        let marks = (
            xa.xa_get_mark(0, PAGECACHE_TAG_DIRTY),
            xa.xa_get_mark(0, PAGECACHE_TAG_TOWRITE),
        );
        xa.unlock().await;
        assert_eq!(marks, (false, false));
        assert!(!dax_is_locked(e));
        let pte = fx.mm.ptep_get_lockless(&p, a).await.unwrap();
        assert!(pte.present() && !pte.write() && !pte.dirty());
    });
}

#[test]
fn a_store_is_durable_after_fsync_and_not_before() {
    let mut sim = Sim::new(sim_core::sim::SimConfig::default());
    let fx = setup(&mut sim, BugSet::NONE, &[1]);
    let p = sim.platform();
    let f = fx.clone();
    sim.spawn("t", move || async move {
        user_store(&f, &p, f.addr_of(1) + 16, 0xabcd, false).await;
    });
    assert_eq!(sim.run(|_, en| en[0]), sim_core::sim::RunEnd::Done);
    let line = fx.dev.pfn_to_addr(PTE2_PFN) + 16;
    let durable = |sim: &Sim| {
        sim.with_machine(|m| {
            let mut b = [0u8; 8];
            m.peek_durable(line, &mut b).unwrap();
            u64::from_le_bytes(b)
        })
        .unwrap()
    };
    assert_eq!(durable(&sim), 0, "a cached store is not durable");
    drop(sim);
    let mut sim = Sim::new(sim_core::sim::SimConfig::default());
    let fx = setup(&mut sim, BugSet::NONE, &[1]);
    let p = sim.platform();
    let f = fx.clone();
    sim.spawn("t", move || async move {
        user_store(&f, &p, f.addr_of(1) + 16, 0xabcd, false).await;
        let done = fsync(&f, &p).await;
        assert_eq!(done, vec![WritebackOne::Flushed { index: 1, count: 1 }]);
    });
    assert_eq!(sim.run(|_, en| en[0]), sim_core::sim::RunEnd::Done);
    assert_eq!(durable(&sim), 0xabcd, "fsync made it durable");
}

#[test]
fn writeback_of_a_pmd_entry_write_protects_the_pmd_unless_the_bug_mode_is_on() {
    for bug in [false, true] {
        let bugs = if bug {
            BugSet::of(&[DaxBug::PmdWritebackNoWrprotect])
        } else {
            BugSet::NONE
        };
        let (done, pmd) = one(bugs, |fx, p| async move {
            let a = fx.addr_of(PMD_IDX) + 3 * PAGE_SIZE;
            user_store(&fx, &p, a, 1, true).await;
            let done = fsync(&fx, &p).await;
            (done, fx.mm.pmdp_get_lockless(&p, a).await)
        });
        assert_eq!(
            done,
            vec![WritebackOne::Flushed {
                index: PMD_IDX,
                count: 512
            }]
        );
        let PmdVal::Huge(pmd) = pmd else {
            panic!("a huge PMD maps the entry")
        };
        assert!(!pmd.dirty());
        assert_eq!(pmd.write(), bug, "bug mode {bug}");
    }
}

#[test]
fn background_writeback_and_other_ranges_do_nothing() {
    one(BugSet::NONE, |fx, p| async move {
        user_store(&fx, &p, fx.addr_of(0), 1, false).await;
        let none = WritebackControl {
            sync_mode: WbSyncMode::None,
            ..WritebackControl::fsync_all()
        };
        let other = WritebackControl {
            range_start: PAGE_SIZE,
            range_end: 2 * PAGE_SIZE - 1,
            sync_mode: WbSyncMode::All,
        };
        for wbc in [none, other] {
            let r = dax_writeback_mapping_range(&fx.dax, &p, &fx.m, &fx.dev, &wbc).await;
            assert_eq!(r, Ok(vec![]));
        }
        let xa = fx.m.i_pages.lock(&p).await;
        let dirty = xa.xa_get_mark(0, PAGECACHE_TAG_DIRTY);
        xa.unlock().await;
        assert!(dirty);
        // An fsync of a file without entries returns at once.
        let r = dax_writeback_mapping_range(
            &fx.dax,
            &p,
            &fx.m2,
            &fx.dev,
            &WritebackControl::fsync_all(),
        )
        .await;
        assert_eq!(r, Ok(vec![]));
    });
}

// ---------------------------------------------------------------------------------------------
// Invalidation and layout: unit tests

#[test]
fn invalidate_sync_removes_clean_entries_and_keeps_dirty_ones() {
    one(BugSet::NONE, |fx, p| async move {
        user_store(&fx, &p, fx.addr_of(0), 1, false).await; // index 0 dirty
        // invalidate_inode_pages2 unmaps before it invalidates.
        sim_mm::mm::unmap_mapping_pages(&p, &fx.w, &fx.m, 0, 2, false).await;
        assert!(!dax_invalidate_mapping_entry_sync(&fx.dax, &p, &fx.m, 0).await);
        assert!(dax_invalidate_mapping_entry_sync(&fx.dax, &p, &fx.m, 1).await);
        assert!(!dax_invalidate_mapping_entry_sync(&fx.dax, &p, &fx.m, 2).await);
        let xa = fx.m.i_pages.lock(&p).await;
        let (e0, e1, nr) = (xa.xa_load(0), xa.xa_load(1), xa.nrpages);
        xa.unlock().await;
        assert!(e0.is_value() && e1.is_null());
        assert_eq!(nr, 1 + 512);
        // The removed entry's page lost its owner.
        assert_eq!(fx.w.memmap.page(&p, PTE2_PFN).await.mapping, 0);
        assert_eq!(fx.w.memmap.page(&p, PTE_PFN).await.mapping, fx.m.id.0);
    });
}

#[test]
fn truncate_removes_dirty_entries_and_whole_pmd_entries() {
    one(BugSet::NONE, |fx, p| async move {
        user_store(&fx, &p, fx.addr_of(0), 1, false).await;
        sim_mm::mm::unmap_mapping_pages(&p, &fx.w, &fx.m, 0, 0, false).await;
        assert!(dax_delete_mapping_entry(&fx.dax, &p, &fx.m, 0).await);
        // Any index of a PMD entry removes all of it.
        assert!(__dax_invalidate_entry(&fx.dax, &p, &fx.m, PMD_IDX + 77, true).await);
        let xa = fx.m.i_pages.lock(&p).await;
        let (n, nr) = (xa.nr_entries(), xa.nrpages);
        xa.unlock().await;
        assert_eq!((n, nr), (1, 1));
        let pg = fx.w.memmap.page(&p, PMD_PFN + 100).await;
        assert_eq!((pg.mapping, pg.index), (0, 0));
    });
}

#[test]
fn deleting_a_missing_entry_warns() {
    let mut sim = Sim::new(sim_core::sim::SimConfig::default());
    let fx = setup(&mut sim, BugSet::NONE, &[1]);
    let p = sim.platform();
    sim.spawn("t", move || async move {
        assert!(!dax_delete_mapping_entry(&fx.dax, &p, &fx.m, 3).await);
    });
    let end = sim.run(|_, en| en[0]);
    let sim_core::sim::RunEnd::Violation(v) = end else {
        panic!("a WARN is reported")
    };
    assert_eq!(
        v.kind,
        ViolationKind::Assertion("dax-delete-no-entry".into())
    );
}

#[test]
fn the_busy_scan_unmaps_first_and_finds_the_pinned_page() {
    one(BugSet::NONE, |fx, p| async move {
        let a = fx.addr_of(1);
        user_store(&fx, &p, a, 1, false).await;
        user_store(&fx, &p, fx.addr_of(0), 1, false).await;
        let pins = pin_user_pages_fast(&p, &fx.w, &fx.mm, a, 1, true, &NoFault)
            .await
            .unwrap();
        assert_eq!(pins, vec![PTE2_PFN]);
        let busy = dax_layout_busy_page_range(&fx.dax, &p, &fx.m, 0, LLONG_MAX).await;
        assert_eq!(busy, Some(PTE2_PFN));
        // Everything in the range is unmapped; the pin keeps its reference.
        assert!(
            fx.mm
                .ptep_get_lockless(&p, a)
                .await
                .is_none_or(|e| !e.present())
        );
        assert!(
            fx.mm
                .ptep_get_lockless(&p, fx.addr_of(0))
                .await
                .is_none_or(|e| !e.present())
        );
        let pg = fx.w.memmap.page(&p, PTE2_PFN).await;
        assert_eq!((pg.mapcount, pg.refcount, pg.pincount), (0, 1, 1));
        // A range without the pinned page is not busy.
        assert_eq!(
            dax_layout_busy_page_range(&fx.dax, &p, &fx.m, 0, PAGE_SIZE - 1).await,
            None
        );
        unpin_user_pages(&p, &fx.w, &pins).await;
        assert_eq!(
            dax_layout_busy_page_range(&fx.dax, &p, &fx.m, 0, LLONG_MAX).await,
            None
        );
    });
}

#[test]
fn break_layout_without_a_waiter_stops_at_a_busy_page_and_otherwise_deletes_the_entries() {
    one(BugSet::NONE, |fx, p| async move {
        let a = fx.addr_of(0);
        user_store(&fx, &p, a, 1, false).await;
        let pins = pin_user_pages_fast(&p, &fx.w, &fx.mm, a, 1, true, &NoFault)
            .await
            .unwrap();
        let r = dax_break_layout::<P, WaitIdle>(&fx.dax, &p, &fx.m, 0, LLONG_MAX, None).await;
        assert_eq!(r, Err(Errno::ERESTARTSYS));
        let xa = fx.m.i_pages.lock(&p).await;
        let n = xa.nr_entries();
        xa.unlock().await;
        assert_eq!(n, 3, "nothing deleted");
        unpin_user_pages(&p, &fx.w, &pins).await;
        let r = dax_break_layout(&fx.dax, &p, &fx.m, 0, LLONG_MAX, Some(&WaitIdle)).await;
        assert_eq!(r, Ok(()));
        let xa = fx.m.i_pages.lock(&p).await;
        let (n, nr) = (xa.nr_entries(), xa.nrpages);
        xa.unlock().await;
        assert_eq!((n, nr), (0, 0));
        // The blocks can go back to the allocator now.
        fx.w.memmap.set_block_free(&p, PTE_PFN, 1, true).await;
        fx.w.memmap.set_block_free(&p, PMD_PFN, 512, true).await;
    });
}

#[test]
fn delete_mapping_range_takes_the_entries_of_the_range_and_final_breaking_all() {
    one(BugSet::NONE, |fx, p| async move {
        user_store(&fx, &p, fx.addr_of(1), 1, false).await;
        sim_mm::mm::unmap_mapping_pages(&p, &fx.w, &fx.m, 0, 0, false).await;
        // Bytes of index 1 only (the dirty entry goes too: truncate ignores the marks).
        dax_delete_mapping_range(&fx.dax, &p, &fx.m, PAGE_SIZE, 2 * PAGE_SIZE - 1).await;
        let xa = fx.m.i_pages.lock(&p).await;
        let (e0, e1, nr) = (xa.xa_load(0), xa.xa_load(1), xa.nrpages);
        xa.unlock().await;
        assert!(e0.is_value() && e1.is_null());
        assert_eq!(nr, 1 + 512);
        // Eviction: wait for nothing (no pins), map nothing, delete everything.
        user_store(&fx, &p, fx.addr_of(PMD_IDX), 1, true).await;
        dax_break_layout_final(&fx.dax, &p, &fx.m).await;
        let xa = fx.m.i_pages.lock(&p).await;
        let (n, nr) = (xa.nr_entries(), xa.nrpages);
        xa.unlock().await;
        assert_eq!((n, nr), (0, 0));
        assert_eq!(
            fx.mm.pmdp_get_lockless(&p, fx.addr_of(PMD_IDX)).await,
            PmdVal::None
        );
    });
}

/// No faulting in: GUP pins only what is mapped.
struct NoFault;

impl FaultHandler<P> for NoFault {
    async fn handle_mm_fault(
        &self,
        _p: &P,
        _w: &MmWorld<P>,
        _mm: &MmStruct<P>,
        _vma: &Vma<P>,
        _a: u64,
        _write: bool,
    ) -> VmFault {
        VmFault::SIGBUS
    }
}

#[test]
fn reclaim_leaves_no_shadow_in_a_dax_mapping_unless_the_bug_mode_is_on() {
    for bug in [false, true] {
        let bugs = if bug {
            BugSet::of(&[DaxBug::ShadowEntries])
        } else {
            BugSet::NONE
        };
        // (A locked-looking shadow at rest breaks `EntryLockedAtRest`: the test erases it.)
        let end_only = CheckPolicy {
            every_step: false,
            at_end: true,
        };
        let left = one_with(bugs, end_only, |fx, p| async move {
            // A 4.x hole page in the page cache of file 2 at index 3.
            let pfn = sim_mm::pgtable::PAGECACHE_BASE_PFN;
            let mut xa = fx.m2.i_pages.lock(&p).await;
            let before = xa.nrpages;
            xa.xa_store(3, XaEntry::from_folio_pfn(pfn));
            xa.nrpages += 1;
            xa.unlock().await;
            // Another folio's eviction leaves the slot alone.
            assert!(!__remove_mapping(&fx.dax, &p, &fx.m2, 3, pfn + 1, 1, true).await);
            assert!(__remove_mapping(&fx.dax, &p, &fx.m2, 3, pfn, 1, true).await);
            assert!(!__remove_mapping(&fx.dax, &p, &fx.m2, 3, pfn, 1, true).await);
            let mut xa = fx.m2.i_pages.lock(&p).await;
            let e = xa.xa_load(3);
            // The shadow is counted as an entry (4.x: nrexceptional), the folio is not.
            assert_eq!(xa.nrpages, before + u64::from(!e.is_null()));
            // Tidy up so that the end check sees a consistent mapping.
            if !e.is_null() {
                xa.xa_erase(3);
                xa.nrpages -= 1;
            }
            xa.unlock().await;
            e
        });
        if bug {
            assert_eq!(left, pack_shadow(0, 0, 1, true));
            // A shadow is a value entry whose workingset bit reads as DAX_LOCKED.
            assert!(left.is_value() && dax_is_locked(left));
        } else {
            assert!(left.is_null());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Memory failure: the entry locks

#[test]
fn dax_lock_folio_locks_the_owning_entry_and_unlock_restores_it() {
    one(BugSet::NONE, |fx, p| async move {
        let dax: &Dax<P> = &fx.dax;
        let cookie = dax.dax_lock_folio(&p, &fx.w, PMD_PFN + 3).await;
        let xa = fx.m.i_pages.lock(&p).await;
        let locked = xa.xa_load(PMD_IDX);
        xa.unlock().await;
        assert_eq!(cookie, dax_make_entry(PMD_PFN, DAX_PMD).0);
        assert!(dax_is_locked(locked));
        dax.dax_unlock_folio(&p, &fx.w, PMD_PFN + 3, cookie).await;
        let xa = fx.m.i_pages.lock(&p).await;
        let e = xa.xa_load(PMD_IDX);
        xa.unlock().await;
        assert_eq!(e.0, cookie);
        // A page without an owner: nothing to lock.
        assert_eq!(dax.dax_lock_folio(&p, &fx.w, SPARE_PFN).await, 0);
        // By index: an absent entry gives !0 and no page.
        let r = dax.dax_lock_mapping_entry(&p, &fx.w, &fx.m, 5).await;
        assert_eq!(r, (DAX_NO_ENTRY, None));
        dax.dax_unlock_mapping_entry(&p, &fx.w, &fx.m, 5, r.0).await;
        let (c, page) = dax
            .dax_lock_mapping_entry(&p, &fx.w, &fx.m, PMD_IDX + 5)
            .await;
        assert_eq!(page, Some(PMD_PFN), "the head page of a PMD entry");
        dax.dax_unlock_mapping_entry(&p, &fx.w, &fx.m, PMD_IDX + 5, c)
            .await;
    });
}

#[test]
fn memory_failure_through_the_dax_core_signals_the_mapping_process() {
    let sig = one(BugSet::NONE, |fx, p| async move {
        user_store(&fx, &p, fx.addr_of(0), 1, false).await;
        let ctx = MfContext::default();
        let r = memory_failure(&p, &fx.w, PTE_PFN, 0, &ctx, &NoHolder, &*fx.dax).await;
        assert_eq!(r.rc, Ok(()));
        let tl = fx.w.tasks.lock(&p).await;
        let s = tl.threads.get(&TaskId(1)).unwrap().pending.clone();
        tl.unlock().await;
        s
    });
    assert_eq!(sig.len(), 1, "{sig:?}");
    assert_eq!(sig[0].signo, Signal::SIGBUS);
}

// ---------------------------------------------------------------------------------------------
// Concurrent: the models

/// A model over the fixture: `racers` are spawned after the setup (task ids from 1), with the
/// mm invariants checked at every step when `checks`.
fn model<F>(bugs: BugSet, checks: bool, racers: F) -> impl Model
where
    F: Fn(&mut Sim, Arc<Fx>),
{
    move |sim: &mut Sim| {
        let fx = setup(sim, bugs, &[1, 2, 3]);
        if checks {
            install_checks(sim, &fx.w, EVERY_STEP);
        }
        racers(sim, fx);
    }
}

fn bugs(on: bool, b: DaxBug) -> BugSet {
    if on { BugSet::of(&[b]) } else { BugSet::NONE }
}

/// A user stores 1 then 2 into one page (faulting as needed) while fsync runs: at the end the
/// 2 is durable or the entry is still dirty. `huge` uses the PMD entry through a PMD mapping.
fn store_vs_fsync(bugs: BugSet, huge: bool) -> impl Model {
    model(bugs, true, move |sim, fx| {
        let (index, a) = if huge {
            (PMD_IDX, fx.addr_of(PMD_IDX) + 5 * PAGE_SIZE)
        } else {
            (0, fx.addr_of(0))
        };
        sim.add_end_check(durable_or_dirty(
            &fx,
            index + (a - fx.addr_of(index)) / PAGE_SIZE,
            a,
            2,
        ));
        let p = sim.platform();
        let f = fx.clone();
        sim.spawn("user", move || async move {
            user_store(&f, &p, a, 1, huge).await;
            user_store(&f, &p, a, 2, huge).await;
        });
        sim.spawn("fsync", move || async move {
            fsync(&fx, &p).await;
        });
    })
}

#[test]
fn stores_racing_with_fsync_are_durable_or_dirty() {
    let rep = run(&store_vs_fsync(BugSet::NONE, false), &dfs(Some(2)));
    clean(&rep);
    assert!(rep.runs > 10, "{} runs", rep.runs);
}

/// At the end: no writable leaf maps a clean entry. A store through such a leaf neither
/// faults nor dirties the entry, so no later fsync flushes it.
fn no_writable_leaf_of_a_clean_entry(
    fx: &Arc<Fx>,
) -> impl FnMut() -> Option<CheckFailure> + 'static {
    let fx = fx.clone();
    move || {
        let p = sim_core::sim::SimPlatform;
        let leaves = fx.mm.page_table.peek(&p, |pt| pt.all_leaves())?;
        for leaf in leaves.iter().filter(|l| l.write() && !l.special()) {
            let index = fx.vma.linear_page_index(leaf.addr());
            let (dirty, _) = peek_marks(&fx.m, index)?;
            if !dirty {
                return Some(CheckFailure {
                    name: "writable-leaf-of-clean-entry".into(),
                    message: format!(
                        "{leaf:?} is writable but entry {index:#x} is clean: the next store skips the flush"
                    ),
                });
            }
        }
        None
    }
}

/// A user stores into the PMD mapping while fsync runs on a device without a write cache (no
/// clwb steps): at the end no writable leaf may map a clean entry.
fn pmd_store_vs_fsync(bugs: BugSet) -> impl Model {
    model(bugs, true, move |sim, fx| {
        let a = fx.addr_of(PMD_IDX) + 5 * PAGE_SIZE;
        sim.add_end_check(no_writable_leaf_of_a_clean_entry(&fx));
        let p = sim.platform();
        let f = fx.clone();
        sim.spawn("user", move || async move {
            user_store(&f, &p, a, 1, true).await;
        });
        sim.spawn("fsync", move || async move {
            let dev = DaxDevice {
                write_cache: false,
                ..fx.dev
            };
            let wbc = WritebackControl::fsync_all();
            dax_writeback_mapping_range(&fx.dax, &p, &fx.m, &dev, &wbc)
                .await
                .unwrap();
        });
    })
}

#[test]
fn pmd_writeback_no_wrprotect_leaves_the_pmd_writable_over_a_clean_entry() {
    let on = run(
        &pmd_store_vs_fsync(bugs(true, DaxBug::PmdWritebackNoWrprotect)),
        &dfs(Some(2)),
    );
    let v = found(&on);
    assert_eq!(
        v.kind,
        ViolationKind::Invariant("writable-leaf-of-clean-entry".into()),
        "{v}"
    );
    let off = run(&pmd_store_vs_fsync(BugSet::NONE), &dfs(Some(2)));
    clean(&off);
}

/// The stale data itself, in one schedule: store, fsync, store, fsync. With the bug the second
/// store goes through the PMD that the first fsync left writable, the entry stays clean, the
/// second fsync flushes nothing, and the media keeps the first value.
fn store_fsync_twice(bugs: BugSet) -> u64 {
    let mut sim = Sim::new(sim_core::sim::SimConfig::default());
    let fx = setup(&mut sim, bugs, &[1]);
    let p = sim.platform();
    let f = fx.clone();
    let a = fx.addr_of(PMD_IDX) + 5 * PAGE_SIZE + 64;
    sim.spawn("user", move || async move {
        user_store(&f, &p, a, 1, true).await;
        fsync(&f, &p).await;
        user_store(&f, &p, a, 2, true).await;
        fsync(&f, &p).await;
    });
    assert_eq!(sim.run(|_, en| en[0]), sim_core::sim::RunEnd::Done);
    let line = fx.dev.pfn_to_addr(PMD_PFN + 5) + 64;
    sim.with_machine(|m| {
        let mut b = [0u8; 8];
        m.peek_durable(line, &mut b).unwrap();
        u64::from_le_bytes(b)
    })
    .unwrap()
}

#[test]
fn pmd_writeback_no_wrprotect_leaves_stale_data_after_fsync() {
    assert_eq!(store_fsync_twice(BugSet::NONE), 2);
    assert_eq!(
        store_fsync_twice(bugs(true, DaxBug::PmdWritebackNoWrprotect)),
        1,
        "the second store was never flushed"
    );
}

/// A holder locks the entry at index 1 across a yield; three invalidators wait for it.
fn three_invalidators(bugs: BugSet) -> impl Model {
    model(bugs, true, |sim, fx| {
        let p = sim.platform();
        let f = fx.clone();
        sim.spawn("holder", move || async move {
            let mut xas = XaState::new(1);
            let xa = f.m.i_pages.lock(&p).await;
            let (mut xa, e) = get_next_unlocked_entry(&f.dax, &p, &f.m, xa, &mut xas, 0).await;
            if e.is_null() {
                // The invalidators were first.
                xa.unlock().await;
                return;
            }
            dax_lock_entry(&mut xa, &mut xas, e);
            xa.unlock().await;
            p.yield_point("holder:locked").await;
            dax_unlock_entry(&f.dax, &p, &f.m, &mut xas, e).await;
        });
        for name in ["inval-a", "inval-b", "inval-c"] {
            let f = fx.clone();
            sim.spawn(name, move || async move {
                dax_invalidate_mapping_entry_sync(&f.dax, &p, &f.m, 1).await;
            });
        }
    })
}

#[test]
fn invalidate_wake_next_leaves_the_third_invalidator_asleep() {
    let on = run(
        &three_invalidators(bugs(true, DaxBug::InvalidateWakeNext)),
        &dfs(Some(2)),
    );
    let v = found(&on);
    assert_eq!(v.kind, ViolationKind::LostWakeup, "{v}");
    let asleep: Vec<_> = v.tasks.iter().filter(|t| t.status == "asleep").collect();
    assert_eq!(asleep.len(), 1, "{v}");
    assert!(asleep[0].name.starts_with("inval-"), "{v}");
    let off = run(&three_invalidators(BugSet::NONE), &dfs(None));
    clean(&off);
}

/// Truncate breaks the layout of file 1 and frees block `PTE_PFN`, while a DMA pin on that page
/// is released by "dio" and fsync holds the entry lock while it flushes (entry 0 is dirty and
/// pinned from the setup).
fn truncate_vs_pin_and_fsync(bugs: BugSet) -> impl Model {
    model(bugs, true, |sim, fx| {
        let p = sim.platform();
        // Setup: the page is written (dirty entry) and pinned for DMA.
        let pins = {
            let out = Arc::new(std::sync::Mutex::new(None));
            let (o, f) = (out.clone(), fx.clone());
            sim.spawn("pin", move || async move {
                user_store(&f, &p, f.addr_of(0), 1, false).await;
                let pins = pin_user_pages_fast(&p, &f.w, &f.mm, f.addr_of(0), 1, true, &NoFault)
                    .await
                    .unwrap();
                *o.lock().unwrap() = Some(pins);
            });
            sim.run(|_, en| en[0]);
            out.lock().unwrap().take().unwrap()
        };
        let f = fx.clone();
        sim.spawn("dio", move || async move {
            p.yield_point("dio:in-flight").await;
            unpin_user_pages(&p, &f.w, &pins).await;
        });
        let f = fx.clone();
        sim.spawn("fsync", move || async move {
            let dev = DaxDevice {
                write_cache: false,
                ..f.dev
            };
            let wbc = WritebackControl::fsync_all();
            dax_writeback_mapping_range(&f.dax, &p, &f.m, &dev, &wbc)
                .await
                .unwrap();
        });
        sim.spawn("truncate", move || async move {
            dax_break_layout(&fx.dax, &p, &fx.m, 0, LLONG_MAX, Some(&WaitIdle))
                .await
                .unwrap();
            fx.w.memmap.set_block_free(&p, PTE_PFN, 1, true).await;
        });
    })
}

#[test]
fn busy_scan_skips_locked_frees_a_block_under_dma() {
    let on = run(
        &truncate_vs_pin_and_fsync(bugs(true, DaxBug::BusyScanSkipsLocked)),
        &dfs(Some(2)),
    );
    let v = found(&on);
    assert_eq!(
        v.kind,
        ViolationKind::Assertion("block-freed-while-busy".into()),
        "{v}"
    );
    assert!(v.message.contains("pincount 1"), "{v}");
    let off = run(&truncate_vs_pin_and_fsync(BugSet::NONE), &dfs(None));
    clean(&off);
}

/// Memory failure on file 2's block races with truncate and eviction of file 2 (nobody maps
/// it).
fn mf_vs_evict(bugs: BugSet) -> impl Model {
    model(bugs, true, |sim, fx| {
        let p = sim.platform();
        let f = fx.clone();
        sim.spawn("memory_failure", move || async move {
            let ctx = MfContext::default();
            memory_failure(&p, &f.w, F2_PFN, 0, &ctx, &NoHolder, &*f.dax).await;
        });
        sim.spawn("truncate+evict", move || async move {
            dax_delete_mapping_entry(&fx.dax, &p, &fx.m2, 0).await;
            fx.w.destroy_mapping(&p, &fx.m2).await;
        });
    })
}

#[test]
fn mf_speculative_page_lock_follows_page_mapping_into_an_evicted_inode() {
    let on = run(
        &mf_vs_evict(bugs(true, DaxBug::MfSpeculativePageLock)),
        &dfs(Some(2)),
    );
    let v = found(&on);
    assert_eq!(
        v.kind,
        ViolationKind::Assertion("mapping-use-after-free".into()),
        "{v}"
    );
    let off = run(&mf_vs_evict(BugSet::NONE), &dfs(Some(2)));
    clean(&off);
}

/// Reclaim evicts a 4.4-era hole page of file 2 (index 3), then an invalidation looks at the
/// index.
fn evict_then_invalidate(bugs: BugSet) -> impl Model {
    // Without the step checks: the search shows what a DAX path does with the shadow.
    model(bugs, false, |sim, fx| {
        let p = sim.platform();
        let f = fx.clone();
        sim.spawn("reclaim", move || async move {
            let pfn = sim_mm::pgtable::PAGECACHE_BASE_PFN;
            let mut xa = f.m2.i_pages.lock(&p).await;
            xa.xa_store(3, XaEntry::from_folio_pfn(pfn));
            xa.nrpages += 1;
            xa.unlock().await;
            __remove_mapping(&f.dax, &p, &f.m2, 3, pfn, 1, true).await;
            dax_invalidate_mapping_entry_sync(&f.dax, &p, &f.m2, 3).await;
        });
    })
}

#[test]
fn shadow_entries_are_misread_as_locked_dax_entries() {
    let on = run(
        &evict_then_invalidate(bugs(true, DaxBug::ShadowEntries)),
        &dfs(None),
    );
    let v = found(&on);
    // The shadow's workingset bit reads as DAX_LOCKED: the invalidation waits for an unlock
    // that never comes.
    assert_eq!(v.kind, ViolationKind::LostWakeup, "{v}");
    let off = run(&evict_then_invalidate(BugSet::NONE), &dfs(None));
    clean(&off);
}

/// A CoW write fault holds entry 0 of file 1 and replaces its block (`PTE_PFN` -> `SPARE_PFN`)
/// while memory failure waits to lock the old block's entry and an invalidation waits for the
/// entry too.
fn cow_vs_mf_and_invalidate(bugs: BugSet) -> impl Model {
    model(bugs, true, |sim, fx| {
        let p = sim.platform();
        let f = fx.clone();
        sim.spawn("cow-fault", move || async move {
            let mut xas = XaState::new(0);
            let xa = f.m.i_pages.lock(&p).await;
            let (mut xa, e) = get_next_unlocked_entry(&f.dax, &p, &f.m, xa, &mut xas, 0).await;
            if e.is_null() {
                xa.unlock().await;
                return;
            }
            dax_lock_entry(&mut xa, &mut xas, e);
            xa.unlock().await;
            p.yield_point("cow:copy").await;
            // dax_insert_entry for a shared extent: the new block replaces the old one.
            let new = dax_make_entry(SPARE_PFN, 0);
            xas.reset();
            let mut xa = f.m.i_pages.lock(&p).await;
            dax_disassociate_entry(&f.dax, &p, &f.m, e, false).await;
            dax_associate_entry(&f.dax, &p, &f.m, &f.vma, f.addr, new, false).await;
            dax_lock_entry(&mut xa, &mut xas, new);
            xa.unlock().await;
            dax_unlock_entry(&f.dax, &p, &f.m, &mut xas, new).await;
        });
        let f = fx.clone();
        sim.spawn("memory_failure", move || async move {
            let ctx = MfContext::default();
            memory_failure(&p, &f.w, PTE_PFN, 0, &ctx, &NoHolder, &*f.dax).await;
        });
        sim.spawn("invalidate", move || async move {
            dax_invalidate_mapping_entry_sync(&fx.dax, &p, &fx.m, 0).await;
        });
    })
}

#[test]
fn lock_entry_exclusive_wait_swallows_the_wakeup_of_the_next_waiter() {
    let on = run(
        &cow_vs_mf_and_invalidate(bugs(true, DaxBug::LockEntryExclusiveWait)),
        &dfs(Some(2)),
    );
    let v = found(&on);
    assert_eq!(v.kind, ViolationKind::LostWakeup, "{v}");
    let asleep: Vec<_> = v.tasks.iter().filter(|t| t.status == "asleep").collect();
    assert_eq!(asleep.len(), 1, "{v}");
    assert_eq!(asleep[0].name, "invalidate", "{v}");
    let off = run(&cow_vs_mf_and_invalidate(BugSet::NONE), &dfs(None));
    clean(&off);
}

// ---------------------------------------------------------------------------------------------
// Memory failure on a PMD entry mapped by a PTE too (mixed-mapping-association), through the
// fault paths of sim-mm/src/dax/fault.rs and the test iomap.

mod mixed {
    use super::*;
    use sim_mm::dax::fault::{Access, dax_user_access};
    use sim_mm::dax::test_iomap::{BlockState, TestIomap};

    pub struct Mx {
        pub dax: Arc<Dax<P>>,
        pub fs: Arc<TestIomap<P>>,
        /// Process A maps the file with huge pages allowed, process B without.
        pub a: (Arc<MmStruct<P>>, u64),
        pub b: (Arc<MmStruct<P>>, u64),
    }

    impl Mx {
        pub async fn read(&self, p: &P, who: &(Arc<MmStruct<P>>, u64), page: u64) -> Access {
            dax_user_access(
                &self.dax,
                p,
                &who.0,
                who.1 + page * PAGE_SIZE,
                false,
                &*self.fs,
            )
            .await
        }
    }

    /// A reads file page 5 through a PMD (a PMD entry for pages 0..512), B reads page 9 through
    /// a PTE (B's VMA takes no huge faults): a PTE fault on the PMD entry.
    pub fn setup(sim: &mut Sim, bugs: BugSet) -> Arc<Mx> {
        let p = sim.platform();
        let out = Arc::new(std::sync::Mutex::new(None));
        let o = out.clone();
        sim.spawn("setup", move || async move {
            let w = Arc::new(MmWorld::new(
                &p,
                BASE_PFN,
                NPAGES,
                MmConfig {
                    memory_failure_early_kill: true,
                },
            ));
            let m = w.new_mapping(&p, 1).await;
            let dax = Arc::new(Dax::with_wait_table_bits(&p, w.clone(), bugs, 6));
            let mut fs = TestIomap::new(&p, 2 * PMD_SIZE, 0..NPAGES);
            fs.inode_mut()
                .prealloc(0, 512, BlockState::Written)
                .unwrap();
            let mut maps = vec![];
            for (i, nohuge) in [(1u32, false), (2, true)] {
                let (_, mm) = create_process(&p, &w, "proc", &[TaskId(i)]).await;
                let flags = MmapFlags {
                    shared: true,
                    write: true,
                    nohuge,
                    ..MmapFlags::default()
                };
                let addr = do_mmap(&p, &mm, &m, 0, 2 * PMD_SIZE, flags).await.unwrap();
                maps.push((mm, addr));
            }
            let b = maps.pop().unwrap();
            let a = maps.pop().unwrap();
            let mx = Mx {
                dax,
                fs: Arc::new(fs),
                a,
                b,
            };
            let ra = mx.read(&p, &mx.a, 5).await;
            let rb = mx.read(&p, &mx.b, 9).await;
            assert_eq!(
                (ra, rb),
                (
                    Access::Mapped {
                        pfn: BASE_PFN + 5,
                        huge: true
                    },
                    Access::Mapped {
                        pfn: BASE_PFN + 9,
                        huge: false
                    }
                )
            );
            *o.lock().unwrap() = Some(Arc::new(mx));
        });
        sim.run(|_, en| en[0]);
        out.lock().unwrap().take().expect("setup ran")
    }

    /// At the end: every process whose page tables map the failed page `failed` was sent a
    /// SIGBUS (memory failure either unmapped it everywhere, or signalled whoever kept it).
    pub fn failed_page_signalled(
        mx: &Arc<Mx>,
        failed: Pfn,
    ) -> impl FnMut() -> Option<CheckFailure> + 'static {
        let mx = mx.clone();
        move || {
            let p = sim_core::sim::SimPlatform;
            let w = &mx.dax.world;
            let procs = w.tasks.peek(&p, |tl| {
                tl.procs
                    .values()
                    .map(|pr| {
                        let signalled = pr.threads.iter().any(|t| {
                            tl.threads.get(t).is_some_and(|th| {
                                th.pending
                                    .iter()
                                    .chain(&th.delivered)
                                    .any(|s| s.signo == Signal::SIGBUS)
                            })
                        });
                        (pr.comm.clone(), pr.pid, pr.mm.clone(), signalled)
                    })
                    .collect::<Vec<_>>()
            })?;
            for (comm, pid, mm, signalled) in procs {
                let leaves = mm.page_table.peek(&p, |pt| pt.all_leaves())?;
                for leaf in leaves.iter().filter(|l| !l.special()) {
                    let nr = leaf.size() >> PAGE_SHIFT;
                    if (leaf.pfn()..leaf.pfn() + nr).contains(&failed) && !signalled {
                        return Some(CheckFailure {
                            name: "poisoned-page-mapped-unsignalled".into(),
                            message: format!(
                                "{comm}:{pid} maps the failed pfn {failed:#x} at {:#x} and got \
                                 no SIGBUS",
                                leaf.addr()
                            ),
                        });
                    }
                }
            }
            None
        }
    }

    /// Memory failure hits file page 7 (a page of the PMD entry that only A maps) while A keeps
    /// reading (and faults the PMD back in once memory failure unmapped it).
    pub fn model(bugs: BugSet) -> impl Model {
        move |sim: &mut Sim| {
            let mx = setup(sim, bugs);
            // (No mm invariants: their association rule names the orphaned pages as soon as
            // B's fault is done, in the setup; this test is about what memory failure then
            // does.)
            sim.add_end_check(failed_page_signalled(&mx, BASE_PFN + 7));
            let p = sim.platform();
            let m = mx.clone();
            sim.spawn("a", move || async move {
                m.read(&p, &m.a, 20).await;
            });
            sim.spawn("memory_failure", move || async move {
                let ctx = MfContext::default();
                memory_failure(
                    &p,
                    &mx.dax.world,
                    BASE_PFN + 7,
                    0,
                    &ctx,
                    &NoHolder,
                    &*mx.dax,
                )
                .await;
            });
        }
    }
}

#[test]
fn mixed_mapping_association_leaves_a_process_mapping_the_poisoned_page_unsignalled() {
    let on = run(
        &mixed::model(bugs(true, DaxBug::MixedMappingAssociation)),
        &dfs(Some(2)),
    );
    let v = found(&on);
    assert_eq!(
        v.kind,
        ViolationKind::Invariant("poisoned-page-mapped-unsignalled".into()),
        "{v}"
    );
    assert!(v.message.contains("pfn 0x100007"), "{v}");
    let off = run(&mixed::model(BugSet::NONE), &dfs(None));
    clean(&off);
}

// ---------------------------------------------------------------------------------------------
// A finding of the model on today's core (kept as a test so that a change is noticed).
//
// `dax_writeback_one` meets a locked TOWRITE entry during `xas_for_each_marked` and calls
// `get_next_unlocked_entry(xas, 0)` with the iteration's xa_state. `xas_find_conflict` looks for
// the next entry *after* the position the iteration left in the one-slot range (in the kernel:
// `xa_node` is the leaf node and `(xa_offset & xa_sibs) == xa_sibs` ends the walk; or
// `xa_node == NULL` for a single entry at the root), so it returns NULL without waiting, and
// the entry is skipped as "punched out". The comment in `dax_writeback_one` relies on the
// opposite ("they will see the entry locked and wait for it to unlock"): a second fsync can
// return while the first one is still flushing the entry, before the data is durable. The
// model reproduces it from the kernel's code; whether real kernels behave so needs a review of
// lib/xarray.c against this reading (reported, not fixed).

/// Two fsyncs of a file with one dirty entry (a store to index 1 made before them), on a
/// one-CPU machine (so that either fsync's fence orders every clwb): once an fsync has
/// returned, the store must be durable.
fn two_fsyncs() -> impl Model {
    model(BugSet::NONE, false, |sim, fx| {
        let mut cfg = MachineConfig::default();
        cfg.set("pmem", "4MiB").unwrap();
        cfg.set("cpus", "1").unwrap();
        cfg.set("cache", "64KiB").unwrap();
        sim.set_machine(Machine::new(cfg).unwrap());
        let p = sim.platform();
        {
            let f = fx.clone();
            sim.spawn("store", move || async move {
                user_store(&f, &p, f.addr_of(1) + 8, 42, false).await;
            });
            sim.run(|_, en| en[0]);
        }
        type Returned = [Option<Vec<WritebackOne>>; 2];
        let returned: Arc<sim_core::SpinLock<P, Returned>> =
            Arc::new(sim_core::SpinLock::new(&p, "returned", [None, None]));
        let (r, f) = (returned.clone(), fx.clone());
        sim.add_step_check(move |_| {
            let done = r.peek(&p, |d| d.clone())?;
            let line = f.dev.pfn_to_addr(PTE2_PFN) + 8;
            (done.iter().any(Option::is_some) && durable_u64(line) != 42).then(|| CheckFailure {
                name: "fsync-returned-before-durable".into(),
                message: format!(
                    "an fsync returned while the store it covers is not durable; what each \
                     returned fsync wrote back: {done:?}"
                ),
            })
        });
        for i in 0..2 {
            let (f, r) = (fx.clone(), returned.clone());
            sim.spawn(&format!("fsync{i}"), move || async move {
                let done = fsync(&f, &p).await;
                let mut g = r.lock(&p).await;
                g[i] = Some(done);
                drop(g);
            });
        }
    })
}

#[test]
fn finding_a_second_fsync_skips_the_entry_the_first_is_flushing() {
    let cfg = ExploreConfig {
        strategy: Strategy::Pct { depth: 3 },
        runs: Some(300),
        seed: 1,
        ..ExploreConfig::default()
    };
    let rep = run(&two_fsyncs(), &cfg);
    let v = found(&rep);
    assert_eq!(
        v.kind,
        ViolationKind::Invariant("fsync-returned-before-durable".into()),
        "{v}"
    );
    // The fsync that returned wrote nothing back: it skipped the entry the other one holds.
    assert!(v.message.contains("Some([Skipped])"), "{v}");
}

/// Write faults through the real fault path (`dax_user_access` over the test iomap, allocating
/// blocks) racing fsync: at the end no writable leaf maps a clean entry, and the mm invariants
/// hold at every step.
fn faults_vs_fsync() -> impl Model {
    use sim_mm::dax::fault::{Access, dax_user_access};
    use sim_mm::dax::test_iomap::TestIomap;
    move |sim: &mut Sim| {
        let p = sim.platform();
        let out = Arc::new(std::sync::Mutex::new(None));
        let o = out.clone();
        sim.spawn("setup", move || async move {
            let w = world(&p, 64, false);
            let m = w.new_mapping(&p, 1).await;
            let dax = Arc::new(Dax::with_wait_table_bits(&p, w.clone(), BugSet::NONE, 6));
            let fs = Arc::new(TestIomap::new(&p, 4 * PAGE_SIZE, 0..64));
            let (_, mm) = create_process(&p, &w, "user", &[TaskId(1)]).await;
            let addr = do_mmap(&p, &mm, &m, 0, 4 * PAGE_SIZE, SHARED_RW)
                .await
                .unwrap();
            *o.lock().unwrap() = Some((w, m, dax, fs, mm, addr));
        });
        sim.run(|_, en| en[0]);
        let (w, m, dax, fs, mm, addr) = out.lock().unwrap().take().unwrap();
        install_checks(sim, &w, EVERY_STEP);
        let (mc, mmc) = (m.clone(), mm.clone());
        sim.add_end_check(move || {
            let leaves = mmc.page_table.peek(&p, |pt| pt.all_leaves())?;
            let xa = mc.i_pages.peek(&p, |xa| xa.clone())?;
            let bad = leaves.iter().find(|l| {
                l.write() && !xa.xa_get_mark((l.addr() - addr) >> PAGE_SHIFT, PAGECACHE_TAG_DIRTY)
            })?;
            Some(CheckFailure {
                name: "writable-leaf-of-clean-entry".into(),
                message: format!("{bad:?}"),
            })
        });
        let (d, f, mmu) = (dax.clone(), fs.clone(), mm.clone());
        sim.spawn("writer", move || async move {
            for page in [0, 1] {
                let r = dax_user_access(&d, &p, &mmu, addr + page * PAGE_SIZE, true, &*f).await;
                assert!(matches!(r, Access::Mapped { .. }), "{r:?}");
            }
        });
        sim.spawn("fsync", move || async move {
            let dev = DaxDevice {
                base_pfn: BASE_PFN,
                write_cache: false,
            };
            dax_writeback_mapping_range(&dax, &p, &m, &dev, &WritebackControl::fsync_all())
                .await
                .unwrap();
        });
    }
}

#[test]
fn write_faults_racing_fsync_through_the_fault_path_are_clean() {
    let rep = run(&faults_vs_fsync(), &dfs(Some(2)));
    clean(&rep);
    assert!(rep.runs > 10, "{} runs", rep.runs);
}

/// The file system's path of memory failure (`notify_failure` -> `mf_dax_kill_procs`), which
/// locks entries by index through the DAX core: file 1 owns `PTE_PFN` at index 0.
struct File1Holder(Arc<Fx>);

impl sim_mm::memory_failure::DaxHolder<P> for File1Holder {
    async fn notify_failure(
        &self,
        p: &P,
        w: &MmWorld<P>,
        offset: u64,
        len: u64,
        mf_flags: u32,
        ctx: &MfContext,
    ) -> Result<(), Errno> {
        assert_eq!((offset, len), ((PTE_PFN - BASE_PFN) * PAGE_SIZE, PAGE_SIZE));
        let fx = &self.0;
        sim_mm::memory_failure::mf_dax_kill_procs(p, w, &fx.m, 0, 1, mf_flags, ctx, &*fx.dax).await
    }
}

/// Memory failure through the file system's rmap while an fsync holds the entry it locks.
fn holder_mf_vs_fsync() -> impl Model {
    model(BugSet::NONE, true, |sim, fx| {
        let p = sim.platform();
        {
            let f = fx.clone();
            sim.spawn("store", move || async move {
                user_store(&f, &p, f.addr_of(0), 1, false).await;
            });
            sim.run(|_, en| en[0]);
        }
        let f = fx.clone();
        sim.spawn("fsync", move || async move {
            let dev = DaxDevice {
                write_cache: false,
                ..f.dev
            };
            let wbc = WritebackControl::fsync_all();
            dax_writeback_mapping_range(&f.dax, &p, &f.m, &dev, &wbc)
                .await
                .unwrap();
        });
        sim.spawn("memory_failure", move || async move {
            let ctx = MfContext::default();
            let holder = File1Holder(fx.clone());
            let r = memory_failure(&p, &fx.w, PTE_PFN, 0, &ctx, &holder, &*fx.dax).await;
            assert_eq!(r.rc, Ok(()));
            // The process mapped the page: it was unmapped and signalled.
            let tl = fx.w.tasks.lock(&p).await;
            let sig = tl.threads.get(&TaskId(1)).unwrap().pending.clone();
            drop(tl);
            assert!(sig.iter().any(|s| s.signo == Signal::SIGBUS), "{sig:?}");
        });
    })
}

#[test]
fn memory_failure_through_the_file_system_waits_for_the_entry_lock() {
    let rep = run(&holder_mf_vs_fsync(), &dfs(None));
    clean(&rep);
    assert!(rep.runs > 1);
}
