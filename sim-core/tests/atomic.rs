//! Atomic sections (`sim` "Atomic sections"): a task holding a spinlock declared without
//! lockless access (`SpinLock::no_lockless_access`, the xarray's xa_lock) goes on into its next
//! step when the step touched nothing but that lock and its data. The reference is the same
//! model with the lock undeclared, where every step of the holder is a scheduling point, searched
//! by plain DFS (every interleaving): the declared model, searched plainly, with sleep sets and
//! with source-set DPOR, reaches exactly its outcomes (how the run ended, what each task saw, the
//! final data). The models put a one-step section of the lock beside a section held across a
//! nested lock (a `struct page` section taken under xa_lock, as `dax_associate_entry` under
//! `dax_insert_entry`) and across a wait-queue op (`prepare_to_wait` under xa_lock, as
//! `get_next_unlocked_entry`), on disjoint and on shared keys, with a task that reads the nested
//! lock's data between the holder's two changes of it (which must stay observable).

use sim_core::platform::{Spawner, SpinLock, WaitKey, WaitQueue};
use sim_core::sim::reduction::{Reduction, compare_reductions, exhaustive};
use sim_core::sim::{Model, RunEnd, Sim, SimPlatform};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::Arc;

type Lock = Arc<SpinLock<SimPlatform, [u32; 4]>>;

thread_local! {
    static NOTES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    static DATA: RefCell<Vec<Lock>> = const { RefCell::new(Vec::new()) };
}

fn note(s: String) {
    NOTES.with(|n| n.borrow_mut().push(s));
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Outcome {
    end: String,
    /// What the tasks saw, as a multiset.
    notes: Vec<String>,
    /// The data of every lock at the end.
    data: Vec<Option<[u32; 4]>>,
}

fn outcome(sim: &Sim, end: &RunEnd) -> Outcome {
    let end = end.name();
    let p = sim.platform();
    let data = DATA.with(|d| d.borrow().iter().map(|l| l.peek(&p, |v| *v)).collect());
    let mut notes = NOTES.with(|n| n.borrow().clone());
    notes.sort();
    Outcome { end, notes, data }
}

/// xa_lock (declared without lockless access when `atomic`) and a `struct page` lock whose
/// sections are always one step.
fn locks(p: &SimPlatform, atomic: bool) -> (Lock, Lock) {
    locks_from(p, [1; 4], atomic)
}

fn locks_from(p: &SimPlatform, init: [u32; 4], atomic: bool) -> (Lock, Lock) {
    let xa = SpinLock::new_with_parts(p, "xa", init);
    let xa = Arc::new(if atomic { xa.no_lockless_access(p) } else { xa });
    let page = Arc::new(SpinLock::new_with_parts(p, "page", [1; 4]));
    DATA.with(|d| *d.borrow_mut() = vec![xa.clone(), page.clone()]);
    NOTES.with(|n| n.borrow_mut().clear());
    (xa, page)
}

/// A one-step xa_lock section writing key `k` (`slot * 3 + 1`).
fn one_step(sim: &mut Sim, xa: &Lock, k: usize) {
    let (xa, p) = (xa.clone(), sim.platform());
    sim.spawn("one-step", move || async move {
        let mut g = xa.lock(&p).await;
        let v = &mut g.part_mut(k as u64, 1)[k];
        *v = *v * 3 + 1;
        let seen = *v;
        drop(g);
        note(format!("one-step {k}: {seen}"));
    });
}

/// `dax_insert_entry`'s shape: xa_lock, then the page (a one-step section of its own lock
/// under xa_lock, key `pg`) changed `changes` times, then key `k` of the xarray, then unlock.
/// With two changes the page's intermediate state is visible to `page_reader`.
fn insert(sim: &mut Sim, xa: &Lock, page: &Lock, k: usize, pg: usize, changes: u32) {
    let (xa, page, p) = (xa.clone(), page.clone(), sim.platform());
    sim.spawn("insert", move || async move {
        let mut g = xa.lock(&p).await;
        for c in 0..changes {
            let mut pgl = page.lock(&p).await;
            let v = &mut pgl.part_mut(pg as u64, 1)[pg];
            *v = *v * 5 + 2 + c;
            drop(pgl);
        }
        let v = &mut g.part_mut(k as u64, 1)[k];
        *v = *v * 7 + 3;
        drop(g);
    });
}

/// A one-step section of the page lock reading key `pg` (as memory failure reads
/// `page->mapping`), noting what it saw.
fn page_reader(sim: &mut Sim, page: &Lock, pg: usize) {
    let (page, p) = (page.clone(), sim.platform());
    sim.spawn("page-reader", move || async move {
        let g = page.lock(&p).await;
        let seen = g.part(pg as u64, 1)[pg];
        drop(g);
        note(format!("page {pg}: {seen}"));
    });
}

/// Two sections under xa_lock and a reader of the page: `k1`, `k2` the xarray keys, `pg1`,
/// `pg2` the page keys, `changes` of the first inserter's page.
fn nested(k1: usize, k2: usize, pg1: usize, pg2: usize, changes: u32, atomic: bool) -> impl Model {
    move |sim: &mut Sim| {
        let (xa, page) = locks(&sim.platform(), atomic);
        insert(sim, &xa, &page, k1, pg1, changes);
        one_step(sim, &xa, k2);
        insert(sim, &xa, &page, k2, pg2, 1);
        page_reader(sim, &page, pg1);
    }
}

fn wake_key(waiter: &WaitKey, wake: &WaitKey) -> bool {
    waiter == wake
}

/// `get_next_unlocked_entry`'s shape: a waiter that finds key 0 "locked" (odd) queues under
/// xa_lock, drops it and sleeps; an unlocker that clears it under xa_lock and wakes the key
/// after the unlock; a one-step section on key `k`. A waiter that checks, drops xa_lock and
/// only then queues (`queue_late`) loses the wake-up in some order, and that order must stay
/// reachable.
fn waiter(k: usize, queue_late: bool, atomic: bool) -> impl Model {
    move |sim: &mut Sim| {
        let p = sim.platform();
        // Key 0 starts "locked" (odd).
        let (xa, _page) = locks_from(&p, [3, 1, 1, 1], atomic);
        let wq = Arc::new(WaitQueue::new(&p, "wq"));
        let key = WaitKey(1, 0);
        {
            let (xa, wq, p) = (xa.clone(), wq.clone(), p);
            sim.spawn("waiter", move || async move {
                let g = xa.lock(&p).await;
                let locked = g.part(0, 1)[0] % 2 == 1;
                if !locked {
                    drop(g);
                    note("waiter: unlocked at once".into());
                    return;
                }
                let w = if queue_late {
                    drop(g);
                    wq.prepare_to_wait(&p, key, true, wake_key).await
                } else {
                    let w = wq.prepare_to_wait(&p, key, true, wake_key).await;
                    drop(g);
                    w
                };
                wq.schedule(&p, w).await;
                wq.finish_wait(&p, w).await;
                note("waiter: woken".into());
            });
        }
        {
            let (xa, wq, p) = (xa.clone(), wq.clone(), p);
            sim.spawn("unlocker", move || async move {
                let mut g = xa.lock(&p).await;
                g.part_mut(0, 1)[0] = 4;
                drop(g);
                wq.wake_up(&p, key, sim_core::WakeMode::Next).await;
            });
        }
        one_step(sim, &xa, k);
    }
}

/// The declared model (`atomic`) reaches exactly the outcomes plain DFS reaches on the
/// undeclared one, under each reduction (`compare_reductions` checks plain DFS, sleep sets and
/// DPOR against each other on the declared model). Returns the outcomes and the DPOR runs of
/// the declared and of the undeclared model.
fn same_as_every_interleaving(
    name: &str,
    atomic: &dyn Model,
    fine: &dyn Model,
) -> (BTreeSet<Outcome>, u64, u64) {
    let reference = exhaustive(fine, Reduction::Plain, &mut outcome).expect("plain DFS");
    assert!(reference.exhausted, "{name}");
    let c = compare_reductions(atomic, &mut outcome).unwrap_or_else(|e| panic!("{name}: {e}"));
    let lost: Vec<_> = reference.outcomes.difference(&c.plain.outcomes).collect();
    let added: Vec<_> = c.plain.outcomes.difference(&reference.outcomes).collect();
    assert!(
        lost.is_empty() && added.is_empty(),
        "{name}: atomic sections lost {lost:?} and added {added:?}"
    );
    let fine_dpor = exhaustive(fine, Reduction::Dpor, &mut outcome).expect("DPOR");
    assert_eq!(fine_dpor.outcomes, reference.outcomes, "{name}");
    println!(
        "{name}: {} outcomes; every interleaving {} runs, DPOR {}; atomic: {}",
        reference.outcomes.len(),
        reference.runs,
        fine_dpor.runs,
        c.runs()
    );
    (reference.outcomes, c.dpor.runs, fine_dpor.runs)
}

#[test]
fn sections_held_across_a_page_lock_lose_no_outcome_and_reduce_the_search() {
    // (xarray keys of the two inserters, page keys, page changes of the first)
    for (k2, pg2) in [(1, 1), (0, 1), (1, 0), (0, 0)] {
        let name = format!("nested, keys 0/{k2}, pages 0/{pg2}");
        let (seen, atomic, fine) = same_as_every_interleaving(
            &name,
            &nested(0, k2, 0, pg2, 1, true),
            &nested(0, k2, 0, pg2, 1, false),
        );
        assert!(seen.len() > 1, "{name}: {seen:?}");
        // A section held across steps becomes one step, which commutes with the other
        // sections where their keys are disjoint.
        assert!(
            atomic <= fine,
            "{name}: atomic {atomic} DPOR runs, fine {fine}"
        );
        if (k2, pg2) == (1, 1) {
            assert!(
                atomic < fine,
                "{name}: atomic {atomic} DPOR runs, fine {fine}"
            );
        }
    }
}

#[test]
fn a_page_changed_twice_under_xa_lock_stays_observable_in_between() {
    let (seen, ..) = same_as_every_interleaving(
        "nested, two page changes",
        &nested(0, 1, 0, 1, 2, true),
        &nested(0, 1, 0, 1, 2, false),
    );
    // The reader sees the page before, between (1 * 5 + 2) and after ((7 * 5) + 3) the two
    // changes: the first change touched the page, so the holder's step ends there.
    let page: BTreeSet<String> = seen
        .iter()
        .flat_map(|o| o.notes.iter().filter(|n| n.starts_with("page")).cloned())
        .collect();
    let want: BTreeSet<String> = ["page 0: 1", "page 0: 7", "page 0: 38"]
        .map(String::from)
        .into();
    assert_eq!(page, want);
}

#[test]
fn a_waiter_queued_under_xa_lock_loses_no_order() {
    for k in [0, 1] {
        for late in [false, true] {
            let name = format!("waiter, one-step key {k}, queue late {late}");
            let (seen, ..) =
                same_as_every_interleaving(&name, &waiter(k, late, true), &waiter(k, late, false));
            let ends: BTreeSet<&str> = seen.iter().map(|o| o.end.as_str()).collect();
            // Queued under the lock, the wake-up cannot be missed (unless the one-step
            // section on key 0 locks the entry again after the unlocker: 4 * 3 + 1 is odd);
            // queued after dropping it, the unlocker can clear and wake in between.
            if late || k == 0 {
                assert!(ends.len() > 1, "{name}: {ends:?}");
            } else {
                assert_eq!(ends, BTreeSet::from(["done"]), "{name}");
            }
        }
    }
}

#[test]
fn a_lock_declared_without_lockless_access_refuses_read_once_and_try_lock() {
    for try_lock in [false, true] {
        let model = move |sim: &mut Sim| {
            let (xa, _) = locks(&sim.platform(), true);
            let p = sim.platform();
            sim.spawn("lockless", move || async move {
                if try_lock {
                    let _ = xa.try_lock(&p).await;
                } else {
                    xa.read_once(&p, |v| v[0]).await;
                }
            });
        };
        let r = exhaustive(&model, Reduction::Plain, &mut outcome).expect("plain DFS");
        let ends: Vec<&str> = r.outcomes.iter().map(|o| o.end.as_str()).collect();
        assert_eq!(ends, ["model-panic"], "try_lock {try_lock}");
    }
}

/// A step that ran an atomic section logs every op it ran as an event of its own, with its
/// own step number, as the undeclared model logs them when nobody preempts the holder in
/// between: every run of the declared model has the event log (hash and length) of a run of
/// the undeclared one. Where a section spans several ops (`nested`, and the waiter queueing
/// under xa_lock) the undeclared model has more logs: the preemptions inside the section.
#[test]
fn an_atomic_section_logs_every_op_it_ran() {
    // (name, declared, undeclared, whether a section spans several ops)
    type Pair = (&'static str, Box<dyn Model>, Box<dyn Model>, bool);
    let models: [Pair; 3] = [
        (
            "nested",
            Box::new(nested(0, 1, 0, 1, 2, true)),
            Box::new(nested(0, 1, 0, 1, 2, false)),
            true,
        ),
        (
            "waiter",
            Box::new(waiter(0, false, true)),
            Box::new(waiter(0, false, false)),
            true,
        ),
        (
            "waiter, late",
            Box::new(waiter(1, true, true)),
            Box::new(waiter(1, true, false)),
            false,
        ),
    ];
    for (name, atomic, fine, spans) in &models {
        let logs = |m: &dyn Model| {
            exhaustive(m, Reduction::Plain, &mut |sim, _| (sim.hash(), sim.steps()))
                .expect("plain DFS")
                .outcomes
        };
        let (a, f) = (logs(atomic.as_ref()), logs(fine.as_ref()));
        let strange: Vec<_> = a.difference(&f).collect();
        assert!(
            strange.is_empty(),
            "{name}: {} of {} logs no run of the undeclared model has, e.g. {:?}",
            strange.len(),
            a.len(),
            strange[0]
        );
        assert_eq!(
            a.len() < f.len(),
            *spans,
            "{name}: {} vs {}",
            a.len(),
            f.len()
        );
    }
}
