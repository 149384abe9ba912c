//! `dax_wait_page_idle` over a range that crosses a 2 MiB folio: the waiter must be woken by a
//! put in the second folio. Explored exhaustively: no schedule may end in a lost wakeup.

use sim_core::sim::{ExploreConfig, Sim, Strategy, explore};
use sim_core::{Platform, Spawner};
use sim_mm::MemMap;
use std::sync::Arc;

#[test]
fn an_idle_wait_across_two_folios_is_woken_by_either() {
    let model = |sim: &mut Sim| {
        let p = sim.platform();
        // pfns 0..1024: folios 0..512 and 512..1024; the range 500..700 crosses the boundary.
        let mm = Arc::new(MemMap::new(&p, 0, 1024));
        let (p1, m1) = (p, mm.clone());
        sim.spawn("pinner", move || async move {
            assert!(m1.try_grab_page(&p1, 600, false).await);
            p1.yield_point("hold the pin").await;
            m1.unpin_page(&p1, 600).await;
        });
        let (p2, m2) = (p, mm);
        sim.spawn("truncate", move || async move {
            m2.wait_pages_idle(&p2, 500, 200).await;
        });
    };
    let cfg = ExploreConfig {
        strategy: Strategy::Dfs {
            preemption_bound: None,
        },
        ..ExploreConfig::default()
    };
    let rep = explore(&model, &cfg, &mut |_| {}).expect("explores");
    assert!(rep.exhausted);
    assert!(rep.runs >= 3, "{} runs", rep.runs);
    if let Some(f) = &rep.failure {
        panic!("{}: {}", f.violation.kind.name(), f.violation.message);
    }
}

/// Every memmap starts with the same shared idle sections (copied on write): a page pinned in
/// one memmap stays idle in a memmap built after it, and in one built before it.
#[test]
fn a_change_to_one_memmap_leaves_the_others_idle() {
    let model = |sim: &mut Sim| {
        let p = sim.platform();
        let before = Arc::new(MemMap::new(&p, 0, 1024));
        sim.spawn("pinner", move || async move {
            let mm = MemMap::new(&p, 0, 1024);
            assert!(mm.try_grab_page(&p, 600, false).await);
            assert_eq!(mm.page(&p, 600).await.refcount, 1);
            let after = MemMap::new(&p, 0, 1024);
            for other in [&*before, &after] {
                let pg = other.page(&p, 600).await;
                assert_eq!((pg.refcount, pg.pincount), (0, 0), "{pg:?}");
            }
            mm.unpin_page(&p, 600).await;
        });
    };
    let rep = explore(&model, &ExploreConfig::default(), &mut |_| {}).expect("explores");
    if let Some(f) = &rep.failure {
        panic!("{}: {}", f.violation.kind.name(), f.violation.message);
    }
    assert!(rep.runs >= 1);
}
