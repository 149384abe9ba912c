//! GUP pins racing with unmap + block freeing, explored exhaustively with `dfs`.
//!
//! T1 (a process doing O_DIRECT into a DAX mapping) pins the mapped page, holds the pin for a
//! moment and unpins it. T2 (truncate) frees the block under the page. The correct order (the
//! one `dax_layout_busy_page_range` uses) unmaps first and then waits for the page to go idle:
//! GUP-fast either took its reference before the unmap (T2 sees it and waits) or sees the PTE
//! change on its recheck and backs off. Checking for pins before unmapping lets a pin slip in
//! between, and the block is freed under DMA.

mod common;

use common::*;
use sim_core::platform::bug_on;
use sim_core::sim::{ExploreConfig, Model, Sim, Strategy, explore};
use sim_core::{Mutex, Platform, Spawner, TaskId, WaitKey, WaitQueue, WakeMode};
use sim_mm::MmStruct;
use sim_mm::dax_entry::PAGE_SIZE;
use sim_mm::gup::{FaultHandler, pin_user_pages_fast, unpin_user_pages};
use sim_mm::invariants::check_world;
use sim_mm::mm::{MmapFlags, VmFault, Vma, do_mmap, unmap_mapping_pages, vmf_insert_page_mkwrite};
use sim_mm::signal::create_process;
use sim_mm::world::{AddressSpace, MmWorld};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// No faulting in: the slow path pins only what is mapped.
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

struct State {
    w: Arc<MmWorld<P>>,
    m: Arc<AddressSpace<P>>,
    mm: Arc<MmStruct<P>>,
    addr: u64,
}

const PFN: u64 = BASE_PFN + 5;

/// Build the world in a setup task run to completion before the racers exist.
fn setup_state(sim: &mut Sim) -> Arc<State> {
    let p = sim.platform();
    let out = Arc::new(std::sync::Mutex::new(None));
    let o = out.clone();
    sim.spawn("setup", move || async move {
        let w = world(&p, 64, false);
        let m = w.new_mapping(&p, 1).await;
        let (_, mm) = create_process(&p, &w, "dio", &[TaskId(1)]).await;
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

/// Counts finished racers; the checker waits for all of them.
struct Done {
    n: Mutex<P, u32>,
    wq: WaitQueue<P>,
}

impl Done {
    async fn finish(&self, p: &P) {
        let mut g = self.n.lock(p).await;
        *g += 1;
        g.unlock().await;
        self.wq.wake_up(p, WaitKey(0, 0), WakeMode::All).await;
    }
    async fn wait(&self, p: &P, n: u32) {
        let mut g = self.n.lock(p).await;
        while *g < n {
            g = self.wq.wait_unlocking(p, g, WaitKey(0, 0), false).await;
        }
        g.unlock().await;
    }
}

async fn free_block(p: &P, s: &State) {
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
    s.w.memmap.set_block_free(p, PFN, 1, true).await;
}

/// How many runs pinned the page, and how many saw the pin fail.
#[derive(Default)]
struct Outcomes {
    pinned: AtomicUsize,
    failed: AtomicUsize,
}

fn model(buggy: bool, out: Arc<Outcomes>) -> impl Model {
    move |sim: &mut Sim| {
        let out = out.clone();
        let s = setup_state(sim);
        let p = sim.platform();
        let done = Arc::new(Done {
            n: Mutex::new(&p, "done", 0),
            wq: WaitQueue::new(&p, "done_wq"),
        });
        {
            let (s, done) = (s.clone(), done.clone());
            sim.spawn("dio", move || async move {
                match pin_user_pages_fast(&p, &s.w, &s.mm, s.addr, 1, true, &NoFault).await {
                    Ok(pins) => {
                        out.pinned.fetch_add(1, Ordering::Relaxed);
                        p.yield_point("dio:pinned").await;
                        unpin_user_pages(&p, &s.w, &pins).await;
                    }
                    Err(_) => {
                        out.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                done.finish(&p).await;
            });
        }
        {
            let (s, done) = (s.clone(), done.clone());
            sim.spawn("truncate", move || async move {
                if buggy {
                    // Look for pins first, unmap after: a pin can come in between.
                    let busy = s.w.memmap.page(&p, PFN).await.extra_refs() > 0;
                    unmap_mapping_pages(&p, &s.w, &s.m, 0, 1, false).await;
                    if busy {
                        s.w.memmap.wait_pages_idle(&p, PFN, 1).await;
                    }
                } else {
                    unmap_mapping_pages(&p, &s.w, &s.m, 0, 1, false).await;
                    s.w.memmap.wait_pages_idle(&p, PFN, 1).await;
                }
                free_block(&p, &s).await;
                done.finish(&p).await;
            });
        }
        sim.spawn("check", move || async move {
            done.wait(&p, 2).await;
            let v = check_world(&p, &s.w, true).await;
            bug_on(&p, !v.is_empty(), "mm-invariant", || format!("{v:?}")).await;
        });
    }
}

fn dfs() -> ExploreConfig {
    ExploreConfig {
        strategy: Strategy::Dfs {
            preemption_bound: None,
        },
        ..ExploreConfig::default()
    }
}

#[test]
fn pins_racing_with_unmap_are_safe_when_unmapping_first() {
    let out = Arc::new(Outcomes::default());
    let rep = explore(&model(false, out.clone()), &dfs(), &mut |_| {}).unwrap();
    assert!(rep.failure.is_none(), "{:?}", rep.failure);
    assert!(rep.exhausted, "dfs explored the whole space");
    // Both outcomes of the race happen: the pin wins, or the unmap does and GUP backs off.
    assert!(out.pinned.load(Ordering::Relaxed) > 0);
    assert!(out.failed.load(Ordering::Relaxed) > 0);
}

#[test]
fn checking_for_pins_before_unmapping_frees_a_pinned_block() {
    let rep = explore(&model(true, Arc::default()), &dfs(), &mut |_| {}).unwrap();
    let f = rep.failure.expect("dfs finds the race");
    assert_eq!(f.violation.kind.name(), "assertion:block-freed-while-busy");
}

#[test]
fn the_race_models_commute_under_the_audit() {
    use sim_core::sim::audit::{AuditConfig, audit};
    for busy_first in [false, true] {
        let rep = audit(
            &model(busy_first, Arc::default()),
            &AuditConfig {
                runs: 30,
                ..AuditConfig::default()
            },
        );
        println!("busy_first={busy_first}: {rep}");
        assert!(rep.failures.is_empty(), "{rep}");
        assert!(rep.independent > 0, "{rep}");
    }
}

/// Source-set DPOR against sleep sets alone on both orders (plain DFS does not exhaust this
/// race quickly; sleep sets are checked against plain DFS in sim-core's tests): the same
/// outcomes (pin won, unmap won) and the same violation kinds.
#[test]
fn dpor_reaches_the_outcomes_and_violations_sleep_sets_reach() {
    use sim_core::sim::RunEnd;
    use sim_core::sim::explore::explore_observed;
    use std::collections::BTreeSet;
    for busy_first in [false, true] {
        let seen = |dpor: bool| {
            let out = Arc::new(Outcomes::default());
            let cfg = ExploreConfig {
                dpor,
                keep_going: true,
                ..dfs()
            };
            let mut ends = BTreeSet::new();
            let rep = explore_observed(
                &model(busy_first, out.clone()),
                &cfg,
                &mut |_| {},
                &mut |_, end| {
                    ends.insert(match end {
                        RunEnd::Violation(v) => format!("{}: {}", v.kind.name(), v.message),
                        _ => "done".to_string(),
                    });
                },
            )
            .unwrap();
            assert!(rep.exhausted);
            let pinned = out.pinned.load(Ordering::Relaxed) > 0;
            let failed = out.failed.load(Ordering::Relaxed) > 0;
            println!(
                "busy_first={busy_first} dpor={dpor}: {} runs ({} redundant)",
                rep.runs, rep.redundant_runs
            );
            (ends, pinned, failed)
        };
        assert_eq!(seen(true), seen(false), "busy_first={busy_first}");
    }
}
