//! Built-in models on the DAX core: small races of user accesses (page faults through
//! [`dax_user_access`]) on one file of the [`TestIomap`] file system, each the race a bug mode
//! of the catalogue breaks. `pmsim run|explore|replay --model NAME [--bug MODE]` runs them;
//! traces reach the DAX core once daxfs exists.
//!
//! A model run has a setup task (the world, the file, the processes and their mappings, the
//! accesses of `pre` and the zaps of `zap`, run alone before the racers exist), then one task
//! per racing access, named `pPROC read|write PAGE`. A failed access (SIGBUS, ...) is a BUG;
//! the last racer to finish runs the model's final check and the mm invariants
//! (`crate::invariants`, quiescent).
//!
//! Every model runs the fault paths, so every mode whose decision point is in the fault half
//! ([`FAULT_MODES`]) can be switched on in any of them; each model is the one that shows its
//! own mode ([`DaxModel::shows`]). Modes decided in writeback, invalidation or memory failure
//! have no decision point in these models.

use super::fault::{Access, dax_user_access};
use super::test_iomap::{BlockState, TestIomap};
use super::{BugSet, Dax, DaxBug};
use crate::dax_entry::{
    PAGE_SIZE, PG_PMD_COLOUR, PG_PMD_NR, dax_is_empty_entry, dax_is_zero_entry, dax_to_pfn,
};
use crate::invariants::check_world;
use crate::mm::{MmapFlags, do_mmap, madvise_dontneed};
use crate::pgtable::{HUGE_ZERO_PFN, PmdVal, ZERO_PFN};
use crate::signal::create_process;
use crate::world::{AddressSpace, MmConfig, MmWorld};
use crate::{MmStruct, Pfn};
use sim_core::platform::bug_on;
use sim_core::sim::{Sim, SimPlatform};
use sim_core::{Mutex, Platform, Spawner, TaskId};
use std::sync::Arc;

type P = SimPlatform;

/// The first pfn of the models' pmem.
pub const BASE_PFN: Pfn = 0x10_0000;
/// The file's size: 4 MiB, two PMD ranges.
pub const I_SIZE: u64 = 4 << 20;
/// The models' wait table: 64 buckets (see `Dax::with_wait_table_bits`: fewer buckets change
/// only which keys share a queue, never who is woken).
pub const WAIT_BITS: u32 = 6;

/// The modes whose decision points are on the fault paths: every model reaches them.
pub const FAULT_MODES: [DaxBug; 7] = [
    DaxBug::PmdMissedWakeup,
    DaxBug::PmdConflictBeforeNull,
    DaxBug::NoEntryLock,
    DaxBug::HoleWakeNext,
    DaxBug::PmdPteCollide,
    DaxBug::StaleHugeZeroPage,
    DaxBug::MixedMappingAssociation,
];

const SH: MmapFlags = MmapFlags {
    shared: true,
    sync: false,
    write: true,
    nohuge: false,
};
const SH_NOHUGE: MmapFlags = MmapFlags { nohuge: true, ..SH };
const PRIV: MmapFlags = MmapFlags {
    shared: false,
    ..SH
};

/// One access: (process, file page, write).
pub type Access3 = (usize, u64, bool);

/// What the last racer checks after its access, before the mm invariants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalCheck {
    /// Only the mm invariants.
    None,
    /// The xarray holds the file's block at this page, and every process maps that block there
    /// (or nothing): `dax-data-loss`, `dax-stale-mapping`.
    BlockAt(u64),
    /// Process 0 maps this page through a huge PMD: `pmd-fault-fell-back`.
    Huge(u64),
}

/// A built-in model.
#[derive(Clone, Copy, Debug)]
pub struct DaxModel {
    pub name: &'static str,
    /// One line for `pmsim help` and `pmsim bugs`.
    pub summary: &'static str,
    /// The mode this model shows (found with it on; clean with it off).
    pub shows: DaxBug,
    /// The violation the mode causes here (a prefix of its kind name).
    pub finds: &'static str,
    /// The dfs preemption bound under which the model is searched in the tests (`None`:
    /// unbounded; pmd-pte-collide's faults can undo each other forever without a bound).
    pub bound: Option<u32>,
    /// Preallocated written blocks: (file page, pages); a 512-page run is 2 MiB aligned.
    pub prealloc: &'static [(u64, u64)],
    /// Pages of pmem.
    pub pmem_pages: u64,
    /// One mapping per process: (flags, first file page, pages).
    pub maps: &'static [(MmapFlags, u64, u64)],
    /// Accesses of the setup, before the race.
    pub pre: &'static [Access3],
    /// Processes whose page tables the setup empties after `pre` (the xarray stays).
    pub zap: &'static [usize],
    /// The racing accesses, one task each.
    pub ops: &'static [Access3],
    pub check: FinalCheck,
}

const ALL: u64 = I_SIZE / PAGE_SIZE;
static TWO_NOHUGE: [(MmapFlags, u64, u64); 2] = [(SH_NOHUGE, 0, ALL), (SH_NOHUGE, 0, ALL)];
static HUGE_AND_NOHUGE: [(MmapFlags, u64, u64); 2] = [(SH, 0, ALL), (SH_NOHUGE, 0, ALL)];

/// The built-in models, one per fault-half mode.
pub static MODELS: [DaxModel; 7] = [
    DaxModel {
        name: "seed-001",
        summary: "two PTE faults and a PMD fault on one 2 MiB range (the 2019 PMD/PTE missed \
                  wake-up, seeds/001)",
        shows: DaxBug::PmdMissedWakeup,
        finds: "lost-wakeup",
        bound: Some(2),
        prealloc: &[(0x200, 512)],
        pmem_pages: 512,
        maps: &[(SH_NOHUGE, 0, ALL), (SH_NOHUGE, 0, ALL), (SH, 0, ALL)],
        pre: &[],
        zap: &[],
        ops: &[(0, 0x205, true), (1, 0x258, false), (2, 0x208, false)],
        check: FinalCheck::None,
    },
    DaxModel {
        name: "pmd-fault-empty",
        summary: "one PMD read fault over an empty range of preallocated blocks",
        shows: DaxBug::PmdConflictBeforeNull,
        finds: "assertion:pmd-fault-fell-back",
        bound: None,
        prealloc: &[(0, 1024)],
        pmem_pages: 1024,
        maps: &HUGE_AND_NOHUGE,
        pre: &[],
        zap: &[],
        ops: &[(0, 0x10, false)],
        check: FinalCheck::Huge(0x10),
    },
    DaxModel {
        name: "no-entry-lock",
        summary: "a read and a write fault of one hole page from two processes",
        shows: DaxBug::NoEntryLock,
        finds: "assertion:dax-",
        bound: None,
        prealloc: &[],
        pmem_pages: 1024,
        maps: &TWO_NOHUGE,
        pre: &[],
        zap: &[],
        ops: &[(0, 3, false), (1, 3, true)],
        check: FinalCheck::BlockAt(3),
    },
    DaxModel {
        name: "hole-wake-next",
        summary: "three PTE writes downgrading a huge zero PMD entry that one of them locked",
        shows: DaxBug::HoleWakeNext,
        finds: "lost-wakeup",
        bound: Some(1),
        prealloc: &[],
        pmem_pages: 1024,
        maps: &HUGE_AND_NOHUGE,
        pre: &[(0, 0, false)],
        zap: &[],
        ops: &[(1, 1, true), (1, 2, true), (1, 3, true)],
        check: FinalCheck::None,
    },
    DaxModel {
        name: "pmd-pte-collide",
        summary: "a PMD read and a copy-on-write PTE fault of one private mapping (generic/437)",
        shows: DaxBug::PmdPteCollide,
        finds: "assertion:",
        bound: Some(2),
        prealloc: &[(0, 512)],
        pmem_pages: 1024,
        maps: &[(PRIV, 0, ALL)],
        pre: &[(0, 5, false)],
        zap: &[0],
        ops: &[(0, 5, false), (0, 9, true)],
        check: FinalCheck::None,
    },
    DaxModel {
        name: "stale-huge-zero-page",
        summary: "a PMD read of a hole (huge zero page) racing a PTE write into the same range",
        shows: DaxBug::StaleHugeZeroPage,
        finds: "assertion:dax-stale-mapping",
        bound: Some(2),
        prealloc: &[],
        pmem_pages: 1024,
        maps: &HUGE_AND_NOHUGE,
        pre: &[],
        zap: &[],
        ops: &[(0, 5, false), (1, 9, true)],
        check: FinalCheck::BlockAt(9),
    },
    DaxModel {
        name: "mixed-mapping",
        summary: "PTE and PMD read faults of one block-backed PMD entry",
        shows: DaxBug::MixedMappingAssociation,
        finds: "assertion:mm-invariant",
        bound: None,
        prealloc: &[(0, 512)],
        pmem_pages: 1024,
        maps: &HUGE_AND_NOHUGE,
        pre: &[(0, 5, false)],
        zap: &[0],
        ops: &[(1, 9, false), (0, 7, false)],
        check: FinalCheck::None,
    },
];

/// The model called `name`.
pub fn model(name: &str) -> Option<&'static DaxModel> {
    MODELS.iter().find(|m| m.name == name)
}

/// The model that shows `bug`, if one does.
pub fn model_for(bug: DaxBug) -> Option<&'static DaxModel> {
    MODELS.iter().find(|m| m.shows == bug)
}

/// Every model name, in order.
pub fn model_names() -> Vec<&'static str> {
    MODELS.iter().map(|m| m.name).collect()
}

/// Whether the models have a decision point for `bug` (see [`FAULT_MODES`]).
pub fn reaches(bug: DaxBug) -> bool {
    FAULT_MODES.contains(&bug)
}

/// One process's mapping of the file.
struct Map {
    mm: Arc<MmStruct<P>>,
    /// The address of file page 0 in this mapping.
    addr: u64,
}

/// The DAX core, the file on the test file system, and the processes mapping it.
struct Fx {
    dax: Arc<Dax<P>>,
    m: Arc<AddressSpace<P>>,
    fs: Arc<TestIomap<P>>,
    maps: Vec<Map>,
}

impl Fx {
    fn addr(&self, i: usize, pgoff: u64) -> u64 {
        self.maps[i].addr + pgoff * PAGE_SIZE
    }

    async fn access(&self, p: &P, i: usize, pgoff: u64, write: bool) -> Access {
        let mm = &self.maps[i].mm;
        dax_user_access(&self.dax, p, mm, self.addr(i, pgoff), write, &*self.fs).await
    }

    async fn build(p: &P, m: &DaxModel, bugs: BugSet) -> Fx {
        let w = Arc::new(MmWorld::new(
            p,
            BASE_PFN,
            m.pmem_pages,
            MmConfig {
                memory_failure_early_kill: false,
            },
        ));
        let file = w.new_mapping(p, 1).await;
        let dax = Arc::new(Dax::with_wait_table_bits(p, w.clone(), bugs, WAIT_BITS));
        let mut fs = TestIomap::new(p, I_SIZE, 0..m.pmem_pages);
        for &(page, nr) in m.prealloc {
            let got = fs.inode_mut().prealloc(page, nr, BlockState::Written);
            assert!(got.is_some(), "model {}: prealloc {page:#x}+{nr}", m.name);
        }
        let mut maps = vec![];
        for (i, &(flags, pgoff, pages)) in m.maps.iter().enumerate() {
            // Process i's thread is racer task i + 1 (task 0 is the setup).
            let (_, mm) = create_process(p, &w, "proc", &[TaskId(i as u32 + 1)]).await;
            let addr = do_mmap(p, &mm, &file, pgoff, pages * PAGE_SIZE, flags)
                .await
                .unwrap_or_else(|e| panic!("model {}: mmap: {e:?}", m.name));
            maps.push(Map {
                mm,
                addr: addr - pgoff * PAGE_SIZE,
            });
        }
        Fx {
            dax,
            m: file,
            fs: Arc::new(fs),
            maps,
        }
    }

    async fn check(&self, p: &P, c: FinalCheck) {
        let _fn = p.enter_fn("final check");
        match c {
            FinalCheck::None => {}
            FinalCheck::BlockAt(index) => self.check_block_at(p, index).await,
            FinalCheck::Huge(page) => {
                let pmd = self.maps[0]
                    .mm
                    .pmdp_get_lockless(p, self.addr(0, page))
                    .await;
                bug_on(
                    p,
                    !matches!(pmd, PmdVal::Huge(_)),
                    "pmd-fault-fell-back",
                    || format!("page {page:#x}: a PMD fault over an empty range fell back to PTEs"),
                )
                .await;
            }
        }
        let v = check_world(p, &self.dax.world, true).await;
        bug_on(p, !v.is_empty(), "mm-invariant", || format!("{v:?}")).await;
    }

    /// The entry at `index` is the file's block there, and every process maps that block at
    /// `index` or nothing.
    async fn check_block_at(&self, p: &P, index: u64) {
        let want = self.fs.inode(p).await.dev_page(index).map(|d| BASE_PFN + d);
        let xa = self.m.i_pages.lock(p).await;
        let item = xa.lookup(index);
        drop(xa);
        let pfn_ok = match (item, want) {
            (_, None) => true,
            (Some(it), Some(pfn)) => {
                let e = it.entry;
                e.is_value()
                    && !dax_is_zero_entry(e)
                    && !dax_is_empty_entry(e)
                    && dax_to_pfn(e) + (index - it.index) == pfn
            }
            (None, Some(_)) => false,
        };
        bug_on(p, !pfn_ok, "dax-data-loss", || {
            format!(
                "page {index:#x} has block pfn {want:#x?}, but the xarray holds {:?}: the data \
                 written there is not what the file shows",
                item.map(|i| crate::dax_entry::decode_radix_entry(i.entry.0))
            )
        })
        .await;
        for (i, m) in self.maps.iter().enumerate() {
            let addr = self.addr(i, index);
            let mapped = match m.mm.pmdp_get_lockless(p, addr).await {
                PmdVal::Huge(pmd) => Some(pmd.pfn() + (index & PG_PMD_COLOUR)),
                PmdVal::Table => {
                    m.mm.ptep_get_lockless(p, addr)
                        .await
                        .filter(|t| t.present())
                        .map(|t| t.pfn())
                }
                PmdVal::None => None,
            };
            let stale = matches!((mapped, want), (Some(got), Some(w)) if got != w);
            bug_on(p, stale, "dax-stale-mapping", || {
                let got = mapped.unwrap_or(0);
                let zero =
                    got == ZERO_PFN || (HUGE_ZERO_PFN..HUGE_ZERO_PFN + PG_PMD_NR).contains(&got);
                format!(
                    "process {i} maps page {index:#x} to pfn {got:#x} (a zero page: {zero}), \
                     the file's block is pfn {:#x}",
                    want.unwrap_or(0)
                )
            })
            .await;
        }
    }
}

/// Build model `m` with the modes `bugs` in `sim`: run the setup to its end, then spawn the
/// racers.
pub fn setup(m: &'static DaxModel, bugs: BugSet, sim: &mut Sim) {
    let p = sim.platform();
    let out = Arc::new(std::sync::Mutex::new(None));
    let o = out.clone();
    sim.spawn("setup", move || async move {
        let fx = Fx::build(&p, m, bugs).await;
        for &(proc, pgoff, write) in m.pre {
            let a = fx.access(&p, proc, pgoff, write).await;
            bug_on(
                &p,
                !matches!(a, Access::Mapped { .. }),
                "model-setup",
                || format!("setup access of page {pgoff:#x} by process {proc}: {a:?}"),
            )
            .await;
        }
        for &proc in m.zap {
            let mm = &fx.maps[proc].mm;
            let vmas = mm.mmap_lock.read(&p).await;
            let range = vmas.iter().next().map(|v| (v.b.vm_start, v.b.vm_end));
            drop(vmas);
            if let Some((s, e)) = range {
                let r = madvise_dontneed(&p, &fx.dax.world, mm, s, e - s).await;
                bug_on(&p, r.is_err(), "model-setup", || format!("zap: {r:?}")).await;
            }
        }
        if let Ok(mut o) = o.lock() {
            *o = Some(Arc::new(fx));
        }
    });
    // The setup runs alone: no choice, and a setup that stops (a BUG) leaves no racers.
    sim.run(|_, en| en[0]);
    let Some(fx) = out.lock().ok().and_then(|mut o| o.take()) else {
        return;
    };
    let done = Arc::new(Mutex::new(&p, "done", 0usize));
    for &(proc, pgoff, write) in m.ops {
        let name = format!(
            "p{proc} {} {pgoff:#x}",
            if write { "write" } else { "read" }
        );
        let (fx, done) = (fx.clone(), done.clone());
        sim.spawn(&name, move || async move {
            let a = fx.access(&p, proc, pgoff, write).await;
            bug_on(
                &p,
                matches!(a, Access::Failed(_)),
                "dax-fault-failed",
                || format!("access of page {pgoff:#x} by process {proc}: {a:?}"),
            )
            .await;
            let mut n = done.lock(&p).await;
            *n += 1;
            let last = *n == m.ops.len();
            drop(n);
            if last {
                fx.check(&p, m.check).await;
            }
        });
    }
}

/// Model `m` with `bugs`, as an executor model.
pub fn build(m: &'static DaxModel, bugs: BugSet) -> impl Fn(&mut Sim) + 'static {
    move |sim: &mut Sim| setup(m, bugs, sim)
}
