//! The xarray under a lock with parts (`AddressSpace::i_pages`, `XaOps` through the guard):
//! critical sections on disjoint indices commute, and no outcome is lost. Small models with
//! order-0 stores on disjoint indices, a PMD-sized (order 9) entry stored over them after
//! `xas_find_conflict`, loads inside a multi-index entry, marks set through an index a PMD
//! entry covers, a marked scan, and an order-0 store replacing a whole PMD entry: plain DFS,
//! sleep sets and source-set DPOR reach the same outcomes (what every task saw, the final
//! entries with their orders and marks), the commutation audit finds every independent pair
//! commuting, and the parts reduce the search against the same model on a plain lock.

use sim_core::Platform;
use sim_core::platform::{Spawner, SpinLock};
use sim_core::sim::audit::{AuditConfig, audit};
use sim_core::sim::reduction::compare_reductions;
use sim_core::sim::{Model, RunEnd, Sim, SimPlatform};
use sim_mm::xarray::{PAGECACHE_TAG_DIRTY, XArray, XaEntry, XaItem, XaOps, XaState, xa_mk_value};
use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::sync::Arc;

type Xa = Arc<SpinLock<SimPlatform, XArray>>;

thread_local! {
    static NOTES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    static DATA: RefCell<Option<Xa>> = const { RefCell::new(None) };
    /// The audit's models name what each task saw in a step after its section.
    static NAMED: Cell<bool> = const { Cell::new(false) };
}

async fn saw(p: &SimPlatform, what: String) {
    if NAMED.with(|n| n.get()) {
        p.yield_point(Box::leak(what.clone().into_boxed_str()))
            .await;
    }
    NOTES.with(|n| n.borrow_mut().push(what));
}

fn new_xa(p: &SimPlatform, parts: bool, init: &[(u64, u8, u64)]) -> Xa {
    let mut xa = XArray::new();
    for &(index, order, v) in init {
        xa.xa_store_order(index, order, xa_mk_value(v));
    }
    let l = Arc::new(if parts {
        SpinLock::new_with_parts(p, "i_pages", xa)
    } else {
        SpinLock::new(p, "i_pages", xa)
    });
    DATA.with(|d| *d.borrow_mut() = Some(l.clone()));
    NOTES.with(|n| n.borrow_mut().clear());
    l
}

/// A task running `f` on the locked xarray in one section, then noting its result.
fn task(
    sim: &mut Sim,
    l: &Xa,
    name: &str,
    f: impl FnOnce(&mut sim_core::platform::SpinLockGuard<'_, SimPlatform, XArray>) -> String
    + Send
    + 'static,
) {
    let (l, p) = (l.clone(), sim.platform());
    sim.spawn(name, move || async move {
        let mut g = l.lock(&p).await;
        let what = f(&mut g);
        drop(g);
        saw(&p, what).await;
    });
}

/// Order-0 stores on disjoint indices (two in one 2 MiB range), a PMD fault's
/// `xas_find_conflict` + order-9 store over the range (only into an empty range), a load
/// inside it; each insertion adds to `nrpages`, and one task reads `nrpages` (a whole read).
fn pmd_over_ptes(parts: bool) -> impl Fn(&mut Sim) {
    move |sim: &mut Sim| {
        let l = new_xa(&sim.platform(), parts, &[]);
        // Each insertion adds to nrpages (additions commute); one task reads nrpages.
        for (name, index, v) in [("pte5", 5, 1), ("pte58", 0x58, 2), ("pte600", 0x600, 4)] {
            task(sim, &l, name, move |g| {
                let old = g.xa_store(index, xa_mk_value(v));
                g.nrpages_add(1);
                format!("{old:?}")
            });
        }
        task(sim, &l, "nrpages", |g| format!("nrpages {}", g.nrpages));
        task(sim, &l, "pmd", |g| {
            let mut xas = XaState::new_order(0x8, 9);
            let e = g.xas_find_conflict(&mut xas);
            if e.is_null() {
                xas.reset();
                g.xas_store(&mut xas, xa_mk_value(3));
                g.nrpages_add(512);
                "pmd stored".into()
            } else {
                format!("pmd conflict {e:?}")
            }
        });
        task(sim, &l, "load", |g| {
            format!("load 0x1ff {:?}", g.xa_load(0x1ff))
        });
    }
}

/// A PMD entry at 0x200 and an order-0 entry at 5: a mark set through index 0x250 (it marks
/// the PMD entry), a mark test at 0x200, a marked scan from 0, an order-0 store at 0x210 that
/// replaces the whole PMD entry, and a store at 5.
fn marks(parts: bool) -> impl Fn(&mut Sim) {
    move |sim: &mut Sim| {
        let l = new_xa(&sim.platform(), parts, &[(0x200, 9, 7), (5, 0, 8)]);
        task(sim, &l, "mark", |g| {
            g.xas_set_mark(&XaState::new(0x250), PAGECACHE_TAG_DIRTY);
            "marked".into()
        });
        task(sim, &l, "test", |g| {
            format!("dirty {}", g.xa_get_mark(0x200, PAGECACHE_TAG_DIRTY))
        });
        task(sim, &l, "scan", |g| {
            let mut xas = XaState::new(0);
            let e = g.xas_find_marked(&mut xas, u64::MAX, PAGECACHE_TAG_DIRTY);
            format!("scan {e:?} at {:#x}", xas.xa_index)
        });
        task(sim, &l, "replace", |g| {
            format!("replaced {:?}", g.xa_store(0x210, xa_mk_value(9)))
        });
        task(sim, &l, "pte5", |g| {
            format!("{:?}", g.xa_store(5, XaEntry::NULL))
        });
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Outcome {
    end: String,
    notes: Vec<String>,
    items: Option<Vec<(u64, u8, u64, u8)>>,
    nrpages: Option<u64>,
}

fn outcome(sim: &Sim, end: &RunEnd) -> Outcome {
    let end = end.name();
    let p = sim.platform();
    let items = DATA.with(|d| {
        d.borrow().as_ref().and_then(|l| {
            l.peek(&p, |xa| {
                xa.all_items()
                    .map(|i: XaItem| (i.index, i.order, i.entry.0, i.marks))
                    .collect()
            })
        })
    });
    let nrpages = DATA.with(|d| {
        d.borrow()
            .as_ref()
            .and_then(|l| l.peek(&p, |xa| xa.nrpages))
    });
    let mut notes = NOTES.with(|n| n.borrow().clone());
    notes.sort();
    Outcome {
        end,
        notes,
        items,
        nrpages,
    }
}

/// Plain DFS, sleep sets and DPOR reach the same outcomes (`compare_reductions`); returns them
/// and the DPOR runs.
fn same_outcomes(name: &str, model: &dyn Model) -> (BTreeSet<Outcome>, u64) {
    let c = compare_reductions(model, &mut outcome).unwrap_or_else(|e| panic!("{name}: {e}"));
    println!("{name}: {} outcomes; {}", c.plain.outcomes.len(), c.runs());
    (c.plain.outcomes, c.dpor.runs)
}

#[test]
fn a_pmd_store_over_pte_entries_loses_no_outcome_and_disjoint_ptes_commute() {
    let (parts, dpor_parts) = same_outcomes("pmd over ptes, parts", &pmd_over_ptes(true));
    let (plain, dpor_plain) = same_outcomes("pmd over ptes, plain lock", &pmd_over_ptes(false));
    assert_eq!(parts, plain);
    // The PMD store happens in some runs and meets a PTE entry in others.
    assert!(
        parts
            .iter()
            .any(|o| o.notes.iter().any(|n| n == "pmd stored"))
    );
    assert!(
        parts
            .iter()
            .any(|o| o.notes.iter().any(|n| n.starts_with("pmd conflict")))
    );
    assert!(dpor_parts < dpor_plain, "{dpor_parts} vs {dpor_plain}");
    // The additions to nrpages commute, its reader sees every count.
    let seen: BTreeSet<&String> = parts
        .iter()
        .flat_map(|o| o.notes.iter().filter(|n| n.starts_with("nrpages")))
        .collect();
    assert!(seen.len() >= 4, "{seen:?}");
}

#[test]
fn marks_scans_and_whole_entry_replacement_lose_no_outcome() {
    let (parts, dpor_parts) = same_outcomes("marks, parts", &marks(true));
    let (plain, dpor_plain) = same_outcomes("marks, plain lock", &marks(false));
    assert_eq!(parts, plain);
    // The mark set through 0x250 is seen at 0x200 and by the scan in some orders only.
    assert!(
        parts
            .iter()
            .any(|o| o.notes.iter().any(|n| n == "dirty true"))
    );
    assert!(
        parts
            .iter()
            .any(|o| o.notes.iter().any(|n| n == "dirty false"))
    );
    assert!(dpor_parts < dpor_plain, "{dpor_parts} vs {dpor_plain}");
}

#[test]
fn the_audit_finds_xarray_sections_commuting() {
    NAMED.with(|n| n.set(true));
    let cfg = AuditConfig {
        runs: 60,
        ..AuditConfig::default()
    };
    let mut independent = 0;
    for (name, m) in [
        ("pmd over ptes", &pmd_over_ptes(true) as &dyn Model),
        ("marks", &marks(true)),
    ] {
        let rep = audit(m, &cfg);
        println!("{name}: {rep}");
        assert!(rep.failures.is_empty(), "{name}: {rep}");
        independent += rep.independent;
    }
    assert!(independent > 20, "only {independent} independent pairs");
}
