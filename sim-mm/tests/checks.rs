//! The mm invariants as executor checks (`invariants::install_checks`): after every step on a
//! peeked snapshot, and at the end of the run. A step check catches a state that is broken only
//! for a while; the end check catches what a run leaves behind; neither changes the runs.

mod common;

use common::*;
use sim_core::sim::{ExploreConfig, ExploreReport, Model, Sim, Strategy, ViolationKind, explore};
use sim_core::{Platform, Spawner, TaskId};
use sim_mm::dax_entry::{DAX_LOCKED, PAGE_SIZE, dax_make_entry};
use sim_mm::gup::{FaultHandler, pin_user_pages_fast, unpin_user_pages};
use sim_mm::invariants::{CheckPolicy, install_checks};
use sim_mm::mm::{MmapFlags, VmFault, Vma, do_mmap, unmap_mapping_pages, vmf_insert_page_mkwrite};
use sim_mm::signal::create_process;
use sim_mm::world::{AddressSpace, MmWorld};
use sim_mm::{MmStruct, Pfn};
use std::sync::Arc;

const PFN: Pfn = BASE_PFN + 5;

struct State {
    w: Arc<MmWorld<P>>,
    m: Arc<AddressSpace<P>>,
    mm: Arc<MmStruct<P>>,
    addr: u64,
}

/// One file with a block entry at index 0 (pfn `PFN`), mapped writable by one process, built by
/// a setup task run to completion before the racers exist.
fn setup_state(sim: &mut Sim) -> Arc<State> {
    let p = sim.platform();
    let out = Arc::new(std::sync::Mutex::new(None));
    let o = out.clone();
    sim.spawn("setup", move || async move {
        let w = world(&p, 64, false);
        let m = w.new_mapping(&p, 1).await;
        let (_, mm) = create_process(&p, &w, "proc", &[TaskId(1)]).await;
        let flags = MmapFlags {
            shared: true,
            write: true,
            ..MmapFlags::default()
        };
        let addr = do_mmap(&p, &mm, &m, 0, PAGE_SIZE, flags).await.unwrap();
        populate(&p, &w, &m, 0, PFN, false).await;
        let vma = mm.mmap_lock.read(&p).await.vma_lookup(addr).unwrap().b;
        vmf_insert_page_mkwrite(&p, &w, &mm, &vma, addr, PFN, true).await;
        *o.lock().unwrap() = Some(Arc::new(State { w, m, mm, addr }));
    });
    sim.run(|_, en| en[0]);
    out.lock().unwrap().take().expect("setup ran")
}

/// Erase the entry, drop the association, and give the block back.
async fn delete_entry(p: &P, s: &State) {
    let mut xa = s.m.i_pages.lock(p).await;
    xa.xa_erase(0);
    xa.nrpages -= 1;
    xa.unlock().await;
    s.w.memmap
        .update(p, PFN, 1, |_, pg| {
            pg.mapping = 0;
            pg.index = 0;
        })
        .await;
}

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

#[derive(Clone, Copy, PartialEq)]
enum Truncate {
    /// Unmap, wait for pins, delete the entry, free the block.
    Correct,
    /// The correct truncate, then a fault that looked the block up before the truncate maps it
    /// (stale), and the process unmaps it again: at the end all is well again.
    StaleMapAfterFree,
    /// Lock the entry (as a DAX operation would) and never unlock it.
    LeaveEntryLocked,
}

/// A process pins its mapped page for direct I/O while a truncate frees the block.
fn model(t: Truncate, checks: Option<CheckPolicy>) -> impl Model {
    move |sim: &mut Sim| {
        let s = setup_state(sim);
        if let Some(policy) = checks {
            install_checks(sim, &s.w, policy);
        }
        let p = sim.platform();
        let s1 = s.clone();
        sim.spawn("dio", move || async move {
            let s = s1;
            if let Ok(pins) = pin_user_pages_fast(&p, &s.w, &s.mm, s.addr, 1, true, &NoFault).await
            {
                p.yield_point("dio:pinned").await;
                unpin_user_pages(&p, &s.w, &pins).await;
            }
        });
        sim.spawn("truncate", move || async move {
            match t {
                Truncate::Correct => {
                    unmap_mapping_pages(&p, &s.w, &s.m, 0, 1, false).await;
                    s.w.memmap.wait_pages_idle(&p, PFN, 1).await;
                    delete_entry(&p, &s).await;
                    s.w.memmap.set_block_free(&p, PFN, 1, true).await;
                }
                Truncate::StaleMapAfterFree => {
                    unmap_mapping_pages(&p, &s.w, &s.m, 0, 1, false).await;
                    s.w.memmap.wait_pages_idle(&p, PFN, 1).await;
                    delete_entry(&p, &s).await;
                    s.w.memmap.set_block_free(&p, PFN, 1, true).await;
                    let vma = s.mm.mmap_lock.read(&p).await.vma_lookup(s.addr).unwrap().b;
                    vmf_insert_page_mkwrite(&p, &s.w, &s.mm, &vma, s.addr, PFN, true).await;
                    unmap_mapping_pages(&p, &s.w, &s.m, 0, 1, false).await;
                }
                Truncate::LeaveEntryLocked => {
                    let mut xa = s.m.i_pages.lock(&p).await;
                    xa.xa_store(0, dax_make_entry(PFN, DAX_LOCKED));
                    xa.unlock().await;
                }
            }
        });
    }
}

fn dfs(model: &dyn Model, bound: Option<u32>) -> ExploreReport {
    let cfg = ExploreConfig {
        strategy: Strategy::Dfs {
            preemption_bound: bound,
        },
        ..ExploreConfig::default()
    };
    explore(model, &cfg, &mut |_| {}).unwrap()
}

const EVERY_STEP: CheckPolicy = CheckPolicy {
    every_step: true,
    at_end: true,
};

#[test]
fn the_correct_truncate_is_clean_at_every_step() {
    for bound in [None, Some(2)] {
        let rep = dfs(&model(Truncate::Correct, Some(EVERY_STEP)), bound);
        assert!(rep.failure.is_none(), "{}", rep.failure.unwrap().violation);
        assert!(rep.exhausted && rep.runs > 1);
    }
}

#[test]
fn a_block_freed_while_mapped_is_caught_mid_run_only() {
    let rep = dfs(&model(Truncate::StaleMapAfterFree, Some(EVERY_STEP)), None);
    let f = rep
        .failure
        .expect("the step check sees the freed block mapped");
    // The leaf has no entry behind it any more, and its block is free.
    assert_eq!(
        f.violation.kind,
        ViolationKind::Invariant("leaf-without-entry".into()),
        "{}",
        f.violation
    );
    assert!(
        f.violation.message.contains("mapped-after-free"),
        "{}",
        f.violation
    );
    // Charged to the truncate task (task 2: after setup and dio).
    assert_eq!(f.violation.task, Some(TaskId(2)), "{}", f.violation);
    // The final state is consistent: the end check alone finds nothing.
    let end_only = CheckPolicy {
        every_step: false,
        at_end: true,
    };
    let rep = dfs(&model(Truncate::StaleMapAfterFree, Some(end_only)), None);
    assert!(rep.failure.is_none() && rep.exhausted, "{:?}", rep.failure);
}

#[test]
fn an_entry_left_locked_is_caught_at_the_end() {
    let rep = dfs(&model(Truncate::LeaveEntryLocked, Some(EVERY_STEP)), None);
    let f = rep.failure.expect("the end check sees the locked entry");
    assert_eq!(
        f.violation.kind,
        ViolationKind::Invariant("entry-locked-at-rest".into()),
        "{}",
        f.violation
    );
    assert_eq!(f.violation.task, None);
}

#[test]
fn checks_leave_the_exploration_unchanged() {
    for bound in [None, Some(1), Some(2)] {
        let with = dfs(&model(Truncate::Correct, Some(EVERY_STEP)), bound);
        let without = dfs(&model(Truncate::Correct, None), bound);
        // Same runs, same redundant runs, same last event-log hash.
        assert_eq!(with, without, "bound {bound:?}");
    }
}

#[test]
fn the_default_policy_checks_every_step_in_debug_builds() {
    assert_eq!(CheckPolicy::default().every_step, cfg!(debug_assertions));
    assert!(CheckPolicy::default().at_end);
}
