//! The DAX core's entry locking and fault paths, through the test iomap: unit tests per
//! function (one task), and concurrent ones explored exhaustively with `dfs`.

mod common;

use common::*;
use sim_core::platform::bug_on;
use sim_core::sim::{ExploreConfig, ExploreReport, Model, Sim, Strategy, explore};
use sim_core::{Platform, Spawner, WakeMode};
use sim_mm::dax::entry::{
    dax_entry_key, dax_lock_entry, dax_unlock_entry, get_next_unlocked_entry, put_unlocked_entry,
    wait_entry_unlocked_exclusive,
};
use sim_mm::dax::{BugSet, DAX_WAIT_TABLE_ENTRIES, Dax, DaxBug};
use sim_mm::dax_entry::*;
use sim_mm::world::AddressSpace;
use sim_mm::xarray::{XaEntry, XaState};
use std::sync::Arc;

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A world, one file (ino 1) and the DAX core, built in a setup task before the racers exist.
struct Base {
    m: Arc<AddressSpace<P>>,
    dax: Arc<Dax<P>>,
}

fn setup_base(sim: &mut Sim, bugs: BugSet) -> Arc<Base> {
    let p = sim.platform();
    let out = Arc::new(std::sync::Mutex::new(None));
    let o = out.clone();
    sim.spawn("setup", move || async move {
        let w = world(&p, 4096, false);
        let m = w.new_mapping(&p, 1).await;
        let dax = Arc::new(Dax::new(&p, w.clone(), bugs));
        *o.lock().unwrap() = Some(Arc::new(Base { m, dax }));
    });
    sim.run(|_, en| en[0]);
    out.lock().unwrap().take().expect("setup ran")
}

/// Store `e` at `index` (order from the entry) and count it in nrpages.
async fn store(p: &P, m: &AddressSpace<P>, index: u64, e: XaEntry) {
    let order = dax_entry_order(e);
    let mut xa = m.i_pages.lock(p).await;
    xa.xa_store_order(index, order, e);
    xa.nrpages += 1 << order;
    xa.unlock().await;
}

fn dfs(bound: Option<u32>) -> ExploreConfig {
    ExploreConfig {
        strategy: Strategy::Dfs {
            preemption_bound: bound,
        },
        ..ExploreConfig::default()
    }
}

fn clean(rep: &ExploreReport) {
    assert!(
        rep.failure.is_none(),
        "{}",
        rep.failure.as_ref().unwrap().violation
    );
    assert!(rep.exhausted, "dfs explored the whole space");
}

// ---------------------------------------------------------------------------------------------
// Entry locking

#[test]
fn the_wait_key_rounds_to_the_pmd_start_only_for_pmd_entries() {
    let pte = dax_make_entry(0x10_0205, 0);
    let pmd = dax_make_entry(0x10_0200, DAX_PMD);
    let xas = XaState::new(0x205);
    let (kp, bp) = dax_entry_key(1, &xas, pte);
    let (kh, bh) = dax_entry_key(1, &xas, pmd);
    assert_eq!((kp.0, kp.1), (1, 0x205));
    assert_eq!((kh.0, kh.1), (1, 0x200));
    assert!(bp < DAX_WAIT_TABLE_ENTRIES && bh < DAX_WAIT_TABLE_ENTRIES);
    // Every index of a PMD entry waits on one key and one bucket.
    for i in [0x200, 0x201, 0x3ff] {
        assert_eq!(dax_entry_key(1, &XaState::new(i), pmd), (kh, bh));
    }
    // Another file's entry at the same index has another key.
    assert_ne!(dax_entry_key(2, &xas, pmd).0, kh);
    // A PMD-order lookup that found a PTE entry keys on the aligned xas index (seed 001).
    let xas9 = XaState::new_order(0x205, PMD_ORDER);
    assert_eq!(dax_entry_key(1, &xas9, pte).0.1, 0x200);
}

#[test]
fn lock_and_unlock_assert_both_sides() {
    // Unlocking an entry that is not locked is a BUG.
    let r = run1(|p| async move {
        let w = world(&p, 64, false);
        let m = w.new_mapping(&p, 1).await;
        let dax = Dax::new(&p, w.clone(), BugSet::NONE);
        let e = dax_make_entry(BASE_PFN, 0);
        store(&p, &m, 3, e).await;
        // Lock, unlock: the entry is stored back unlocked.
        let mut xas = XaState::new(3);
        let mut xa = m.i_pages.lock(&p).await;
        let old = dax_lock_entry(&mut xa, &mut xas, e);
        assert_eq!(old, e);
        assert!(dax_is_locked(xa.xa_load(3)));
        xa.unlock().await;
        dax_unlock_entry(&dax, &p, &m, &mut xas, e).await;
        let xa = m.i_pages.lock(&p).await;
        assert_eq!(xa.xa_load(3), e);
        xa.unlock().await;
        dax_unlock_entry(&dax, &p, &m, &mut xas, e).await;
    });
    assert_eq!(
        r.fatal_name().as_deref(),
        Some("assertion:dax-unlock-unlocked-entry")
    );
    // Storing a locked entry as the "unlocked" one is a BUG too.
    let r = run1(|p| async move {
        let w = world(&p, 64, false);
        let m = w.new_mapping(&p, 1).await;
        let dax = Dax::new(&p, w.clone(), BugSet::NONE);
        let e = dax_make_entry(BASE_PFN, DAX_LOCKED);
        store(&p, &m, 3, e).await;
        dax_unlock_entry(&dax, &p, &m, &mut XaState::new(3), e).await;
    });
    assert_eq!(
        r.fatal_name().as_deref(),
        Some("assertion:dax-unlock-locked-entry")
    );
}

#[test]
fn get_next_unlocked_entry_reports_a_smaller_entry_as_a_conflict() {
    let out = run1(|p| async move {
        let w = world(&p, 64, false);
        let m = w.new_mapping(&p, 1).await;
        let mut res = vec![];
        for bugs in [BugSet::NONE, BugSet::of(&[DaxBug::PmdConflictBeforeNull])] {
            let dax = Dax::new(&p, w.clone(), bugs);
            // Empty range: NULL (with the 5.3 bug: a conflict).
            let mut xas = XaState::new_order(0x400, PMD_ORDER);
            let xa = m.i_pages.lock(&p).await;
            let (xa, e) = get_next_unlocked_entry(&dax, &p, &m, xa, &mut xas, PMD_ORDER).await;
            xa.unlock().await;
            res.push(e);
        }
        // A locked PTE entry inside the PMD range: a conflict, no wait.
        let dax = Dax::new(&p, w.clone(), BugSet::NONE);
        store(&p, &m, 0x205, dax_make_entry(BASE_PFN, DAX_LOCKED)).await;
        let mut xas = XaState::new_order(0x205, PMD_ORDER);
        let xa = m.i_pages.lock(&p).await;
        let (xa, e) = get_next_unlocked_entry(&dax, &p, &m, xa, &mut xas, PMD_ORDER).await;
        res.push(e);
        // An order-0 lookup inside a PMD entry returns the (larger) PMD entry.
        let mut xa = xa;
        let pmd = dax_make_entry(BASE_PFN + 512, DAX_PMD);
        xa.xa_store_order(0x600, PMD_ORDER, pmd);
        let mut xas = XaState::new(0x7ff);
        let (xa, e) = get_next_unlocked_entry(&dax, &p, &m, xa, &mut xas, 0).await;
        res.push(e);
        // ... and an unlocked entry is handed back for the caller to lock or put.
        put_unlocked_entry(&dax, &p, &m, &xas, e, WakeMode::Next).await;
        xa.unlock().await;
        res
    })
    .ok();
    assert!(out[0].is_null());
    assert!(dax_is_conflict(out[1]));
    assert!(dax_is_conflict(out[2]));
    assert_eq!(out[3], dax_make_entry(BASE_PFN + 512, DAX_PMD));
}

/// T1 holds the entry at `held` (order of `held_pmd`) locked for a moment; each other task looks
/// up `lookups[i]` at `order` and locks, then unlocks what it found (or does nothing on NULL or
/// a conflict, passing the wake-up on).
fn lock_model(
    bugs: BugSet,
    held: u64,
    held_pmd: bool,
    lookups: &'static [(u64, u8)],
) -> impl Model {
    move |sim: &mut Sim| {
        let b = setup_base(sim, bugs);
        let p = sim.platform();
        let e = dax_make_entry(BASE_PFN, if held_pmd { DAX_PMD } else { 0 });
        {
            let b = b.clone();
            sim.spawn("owner", move || async move {
                let mut xas = XaState::new(held);
                let mut xa = b.m.i_pages.lock(&p).await;
                let order = if held_pmd { PMD_ORDER } else { 0 };
                xa.xa_store_order(held, order, e);
                xa.nrpages += 1 << order;
                dax_lock_entry(&mut xa, &mut xas, e);
                xa.unlock().await;
                p.yield_point("owner:locked").await;
                dax_unlock_entry(&b.dax, &p, &b.m, &mut xas, e).await;
            });
        }
        for (i, &(index, order)) in lookups.iter().enumerate() {
            let b = b.clone();
            sim.spawn(&format!("waiter{i}"), move || async move {
                let mut xas = XaState::new_order(index, order);
                let xa = b.m.i_pages.lock(&p).await;
                let (mut xa, e) =
                    get_next_unlocked_entry(&b.dax, &p, &b.m, xa, &mut xas, order).await;
                if e.is_value() {
                    dax_lock_entry(&mut xa, &mut xas, e);
                    xa.unlock().await;
                    dax_unlock_entry(&b.dax, &p, &b.m, &mut xas, e).await;
                } else {
                    xa.unlock().await;
                    put_unlocked_entry(&b.dax, &p, &b.m, &xas, e, WakeMode::Next).await;
                }
            });
        }
    }
}

#[test]
fn waiters_on_a_locked_entry_all_get_it_in_turn() {
    // Two tasks want the PTE entry the owner holds: each wake-up passes the lock on.
    static L: [(u64, u8); 2] = [(7, 0), (7, 0)];
    let rep = explore(
        &lock_model(BugSet::NONE, 7, false, &L),
        &dfs(None),
        &mut |_| {},
    )
    .unwrap();
    clean(&rep);
    eprintln!("waiters: {} runs", rep.runs);
    assert!(rep.runs > 10, "{} runs", rep.runs);
    // PTE lookups inside a locked PMD entry wait on the PMD key and are woken by its unlock.
    static M: [(u64, u8); 2] = [(0x205, 0), (0x3ff, 0)];
    let rep = explore(
        &lock_model(BugSet::NONE, 0x200, true, &M),
        &dfs(None),
        &mut |_| {},
    )
    .unwrap();
    clean(&rep);
}

#[test]
fn a_pmd_lookup_of_a_locked_pte_entry_falls_back_instead_of_waiting() {
    // The entry-level core of seed 001: the owner holds a PTE entry at 0x205, a PMD-order
    // lookup at 0x200 must not sleep on it.
    static L: [(u64, u8); 1] = [(0x200, PMD_ORDER)];
    let rep = explore(
        &lock_model(BugSet::NONE, 0x205, false, &L),
        &dfs(None),
        &mut |_| {},
    )
    .unwrap();
    clean(&rep);
    // With pmd-missed-wakeup it sleeps on the PMD-aligned key, the owner wakes key 0x205.
    let bugs = BugSet::of(&[DaxBug::PmdMissedWakeup]);
    let rep = explore(&lock_model(bugs, 0x205, false, &L), &dfs(None), &mut |_| {}).unwrap();
    let f = rep.failure.expect("dfs finds the lost wake-up");
    assert_eq!(f.violation.kind.name(), "lost-wakeup", "{}", f.violation);
    let sleeper = f
        .violation
        .tasks
        .iter()
        .find_map(|t| t.wait_key.clone())
        .expect("a sleeper");
    assert!(sleeper.contains("{0x1, 0x200}"), "{sleeper}");
}

#[test]
fn wait_entry_unlocked_exclusive_sees_the_slot_empty() {
    // The owner deletes its locked entry and wakes everyone; the waiter sees NULL.
    let model = |sim: &mut Sim| {
        let b = setup_base(sim, BugSet::NONE);
        let p = sim.platform();
        let e = dax_make_entry(BASE_PFN, 0);
        {
            let b = b.clone();
            sim.spawn("owner", move || async move {
                let mut xas = XaState::new(9);
                let mut xa = b.m.i_pages.lock(&p).await;
                xa.xa_store(9, e);
                dax_lock_entry(&mut xa, &mut xas, e);
                xa.unlock().await;
                p.yield_point("owner:locked").await;
                let mut xa = b.m.i_pages.lock(&p).await;
                xa.xas_store(&mut xas, XaEntry::NULL);
                xa.unlock().await;
                put_unlocked_entry(&b.dax, &p, &b.m, &xas, e, WakeMode::All).await;
            });
        }
        sim.spawn("waiter", move || async move {
            let mut xas = XaState::new(9);
            let xa = b.m.i_pages.lock(&p).await;
            let cur = xa.xa_load(9);
            let (xa, got) =
                wait_entry_unlocked_exclusive(&b.dax, &p, &b.m, xa, &mut xas, cur).await;
            xa.unlock().await;
            bug_on(&p, !(got.is_null() || got == e), "unexpected", || {
                format!("{got:?}")
            })
            .await;
        });
    };
    clean(&explore(&model, &dfs(None), &mut |_| {}).unwrap());
}
