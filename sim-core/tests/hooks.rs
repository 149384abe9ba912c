//! Step and end checks (`Sim::add_step_check`, `Sim::add_end_check`) and the lock-aware peek:
//! a step check catches an invariant broken mid-run that the final state hides, an end check
//! catches a bad final state, a peek never sees a half-done update, and checks change nothing
//! in the runs (steps, choices, event-log hashes, exploration counts).

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sim_core::native::{NativePlatform, block_on};
use sim_core::sim::{
    CheckFailure, ExploreConfig, ExploreReport, RunEnd, Sim, SimConfig, SimPlatform, Strategy,
    ViolationKind, explore,
};
use sim_core::{Mutex, Platform, RwSem, Spawner, SpinLock, TaskId};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

type P = SimPlatform;

/// Two accounts under their own spinlocks; two tasks each move 10 from `a` to `b`. The
/// invariant: `a + b == 100` whenever nobody holds either lock.
struct Bank {
    a: SpinLock<P, i64>,
    b: SpinLock<P, i64>,
}

#[derive(Clone, Copy)]
struct BankModel {
    /// Broken: release `a` before taking `b`, so the money is in neither account for a while.
    broken: bool,
    step_check: bool,
    end_check: bool,
}

fn bank_step_check(bank: &Bank, p: &P) -> Option<CheckFailure> {
    let a = bank.a.peek(p, |v| *v)?;
    let b = bank.b.peek(p, |v| *v)?;
    // The money is conserved whenever no transfer is inside its critical section.
    (a + b != 100).then(|| CheckFailure {
        name: "money-conserved".into(),
        message: format!("a = {a}, b = {b}"),
    })
}

impl BankModel {
    fn setup(&self, sim: &mut Sim) {
        let p = sim.platform();
        let bank = Arc::new(Bank {
            a: SpinLock::new(&p, "a", 100),
            b: SpinLock::new(&p, "b", 0),
        });
        if self.step_check {
            let (bank, p) = (bank.clone(), p);
            sim.add_step_check(move |_| bank_step_check(&bank, &p));
        }
        if self.end_check {
            let (bank, p) = (bank.clone(), p);
            sim.add_end_check(move || {
                let r = (bank.a.peek(&p, |v| *v), bank.b.peek(&p, |v| *v));
                (r != (Some(80), Some(20))).then(|| CheckFailure {
                    name: "final-balances".into(),
                    message: format!("{r:?}"),
                })
            });
        }
        for name in ["t1", "t2"] {
            let (bank, broken) = (bank.clone(), self.broken);
            sim.spawn(name, move || async move {
                let p = SimPlatform;
                let mut a = bank.a.lock(&p).await;
                if broken {
                    *a -= 10;
                    a.unlock().await;
                    let mut b = bank.b.lock(&p).await;
                    *b += 10;
                    b.unlock().await;
                } else {
                    let mut b = bank.b.lock(&p).await;
                    *a -= 10;
                    p.yield_point("between").await;
                    *b += 10;
                    b.unlock().await;
                    a.unlock().await;
                }
            });
        }
    }
}

fn dfs(model: &dyn Fn(&mut Sim), bound: Option<u32>) -> ExploreReport {
    let cfg = ExploreConfig {
        strategy: Strategy::Dfs {
            preemption_bound: bound,
        },
        keep_going: true,
        ..ExploreConfig::default()
    };
    explore(&model, &cfg, &mut |_| {}).expect("explore")
}

fn bank(broken: bool, step_check: bool, end_check: bool) -> impl Fn(&mut Sim) {
    let m = BankModel {
        broken,
        step_check,
        end_check,
    };
    move |sim: &mut Sim| m.setup(sim)
}

#[test]
fn a_step_check_catches_an_invariant_broken_mid_run() {
    let rep = dfs(&bank(true, true, true), Some(2));
    let f = rep.failure.expect("the broken transfer must be caught");
    assert_eq!(
        f.violation.kind,
        ViolationKind::Invariant("money-conserved".into()),
        "{}",
        f.violation
    );
    assert_eq!(f.violation.message, "a = 90, b = 0");
    // Charged to the task whose step broke it (t1 moves first in the first DFS run), after
    // its release of `a`: lock a, unlock a.
    assert_eq!(f.violation.task, Some(TaskId(0)));
    assert_eq!(f.steps, 2);
    // Every run breaks it.
    assert_eq!(rep.failed_runs, rep.runs);
}

#[test]
fn the_same_bug_is_invisible_at_the_end_and_without_step_checks() {
    // The final balances are right in every schedule: only a step check sees the bug.
    let rep = dfs(&bank(true, false, true), None);
    assert!(rep.exhausted && rep.failure.is_none(), "{:?}", rep.failure);
    let off = move |sim: &mut Sim| {
        bank(true, true, true)(sim);
        sim.set_step_checks(false);
    };
    let rep = dfs(&off, None);
    assert!(rep.exhausted && rep.failure.is_none(), "{:?}", rep.failure);
}

#[test]
fn peeks_skip_held_locks_so_the_correct_model_is_clean() {
    // The correct transfer breaks the sum inside its critical section (a -= 10, a yield, then
    // b += 10): the check must not see that.
    for bound in [None, Some(2)] {
        let rep = dfs(&bank(false, true, true), bound);
        assert!(rep.exhausted, "bound {bound:?}");
        assert!(rep.failure.is_none(), "{:?}", rep.failure);
        assert!(rep.runs > 1);
    }
}

/// A counter incremented by two tasks; the broken version reads and writes in two critical
/// sections (a lost update under some schedules).
fn counter(broken: bool, end_check: bool) -> impl Fn(&mut Sim) {
    move |sim: &mut Sim| {
        let p = sim.platform();
        let c = Arc::new(Mutex::new(&p, "counter", 0u32));
        if end_check {
            let (c, p) = (c.clone(), p);
            sim.add_end_check(move || match c.peek(&p, |v| *v) {
                Some(2) => None,
                v => Some(CheckFailure {
                    name: "counter-final".into(),
                    message: format!("counter = {v:?}, expected 2"),
                }),
            });
        }
        for name in ["t1", "t2"] {
            let c = c.clone();
            sim.spawn(name, move || async move {
                let p = SimPlatform;
                let g = c.lock(&p).await;
                let v = *g;
                if broken {
                    g.unlock().await;
                    let mut g = c.lock(&p).await;
                    *g = v + 1;
                    g.unlock().await;
                } else {
                    let mut g = g;
                    *g = v + 1;
                    g.unlock().await;
                }
            });
        }
    }
}

#[test]
fn an_end_check_catches_a_bad_final_state() {
    let rep = dfs(&counter(true, true), None);
    let f = rep.failure.expect("the lost update must be found");
    assert_eq!(
        f.violation.kind,
        ViolationKind::Invariant("counter-final".into())
    );
    assert_eq!(f.violation.message, "counter = Some(1), expected 2");
    assert_eq!(f.violation.task, None);
    // Some schedules are fine (one task's increment completes before the other's read).
    assert!(rep.failed_runs < rep.runs - rep.redundant_runs);
    for broken in [false, true] {
        let rep = dfs(&counter(broken, false), None);
        assert!(rep.exhausted && rep.failure.is_none());
    }
    let rep = dfs(&counter(false, true), Some(2));
    assert!(rep.exhausted && rep.failure.is_none(), "{:?}", rep.failure);
}

/// Run `model` with a random chooser seeded by `seed`: (end, choices, hash, steps).
fn random_run(model: &dyn Fn(&mut Sim), seed: u64) -> (RunEnd, Vec<u32>, u64, u64) {
    let mut sim = Sim::new(SimConfig {
        seed,
        ..SimConfig::default()
    });
    model(&mut sim);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let end = sim.run(|_, en| en[rng.random_range(0..en.len())]);
    (end, sim.choices().to_vec(), sim.hash(), sim.steps())
}

#[test]
fn checks_change_neither_runs_nor_exploration() {
    let calls = Rc::new(Cell::new(0u64));
    let with = {
        let calls = calls.clone();
        move |sim: &mut Sim| {
            bank(false, true, true)(sim);
            let calls = calls.clone();
            // A check that peeks a lock every task uses and counts its calls.
            sim.add_step_check(move |info| {
                calls.set(calls.get() + 1);
                assert!(info.task.0 < 2);
                None
            });
        }
    };
    let without = bank(false, false, false);
    for seed in 0..20 {
        assert_eq!(
            random_run(&with, seed),
            random_run(&without, seed),
            "seed {seed}"
        );
    }
    assert!(
        calls.get() > 20 * 6,
        "the step check ran {} times",
        calls.get()
    );
    for bound in [None, Some(1), Some(2)] {
        let (a, b) = (dfs(&with, bound), dfs(&without, bound));
        assert_eq!(a, b, "bound {bound:?}");
    }
    for broken in [false, true] {
        let (a, b) = (
            dfs(&counter(broken, true), None),
            dfs(&counter(broken, false), None),
        );
        assert_eq!(
            (a.runs, a.redundant_runs, a.exhausted, a.max_steps),
            (b.runs, b.redundant_runs, b.exhausted, b.max_steps)
        );
    }
}

#[test]
fn a_peek_from_model_code_is_refused() {
    let model = |sim: &mut Sim| {
        let p = sim.platform();
        let l = Arc::new(SpinLock::new(&p, "l", 0u32));
        sim.spawn("t", move || async move {
            let p = SimPlatform;
            p.yield_point("start").await;
            let _ = l.peek(&p, |v| *v);
        });
    };
    let rep = dfs(&model, None);
    let f = rep.failure.expect("a peek inside a task must be refused");
    assert_eq!(f.violation.kind, ViolationKind::ModelPanic);
    assert!(f.violation.message.contains("peek"), "{}", f.violation);
}

#[test]
fn a_check_may_not_change_the_run() {
    let model = |sim: &mut Sim| {
        let p = sim.platform();
        sim.add_step_check(move |_| {
            p.random_u64();
            None
        });
        sim.spawn("t", || async {
            SimPlatform.yield_point("a").await;
        });
    };
    let rep = dfs(&model, None);
    let f = rep
        .failure
        .expect("a check drawing randomness must be refused");
    assert_eq!(
        f.violation.kind,
        ViolationKind::Invariant("check-panicked".into())
    );
    assert!(f.violation.message.contains("random"), "{}", f.violation);
}

#[test]
fn rwsem_peek_sees_through_readers_not_writers() {
    let seen = Rc::new(Cell::new((0u32, 0u32)));
    let model = {
        let seen = seen.clone();
        move |sim: &mut Sim| {
            let p = sim.platform();
            let s = Arc::new(RwSem::new(&p, "sem", 7u32));
            let (s2, seen) = (s.clone(), seen.clone());
            // Count the steps after which the peek saw the data, and those where it did not.
            sim.add_step_check(move |_| {
                let (some, none) = seen.get();
                seen.set(match s2.peek(&p, |v| *v) {
                    Some(v) => {
                        assert_eq!(v, 7);
                        (some + 1, none)
                    }
                    None => (some, none + 1),
                });
                None
            });
            sim.spawn("t", move || async move {
                let p = SimPlatform;
                let r = s.read(&p).await; // step 1: down_read
                r.unlock().await; // step 2: up_read
                let w = s.write(&p).await; // step 3: down_write
                p.yield_point("held").await; // step 4
                w.unlock().await; // step 5: up_write
            });
        }
    };
    let rep = dfs(&model, None);
    assert!(rep.failure.is_none());
    // Visible after steps 1, 2 and 5; hidden after 3 and 4 (the writer holds it).
    assert_eq!(seen.get(), (3, 2));
}

#[test]
fn native_peek_is_a_try_lock() {
    let p = NativePlatform;
    let l = SpinLock::new(&p, "l", 5u32);
    assert_eq!(l.peek(&p, |v| *v), Some(5));
    let g = block_on(l.lock(&p));
    assert_eq!(l.peek(&p, |v| *v), None);
    block_on(g.unlock());
    assert_eq!(l.peek(&p, |v| *v + 1), Some(6));
    let s = RwSem::new(&p, "s", 1u32);
    let r = block_on(s.read(&p));
    assert_eq!(s.peek(&p, |v| *v), Some(1));
    block_on(r.unlock());
    let w = block_on(s.write(&p));
    assert_eq!(s.peek(&p, |v| *v), None);
    block_on(w.unlock());
    assert_eq!(s.peek(&p, |v| *v), Some(1));
}

#[test]
fn step_info_says_which_steps_released_a_lock() {
    let seen = Rc::new(std::cell::RefCell::new(Vec::new()));
    let model = {
        let seen = seen.clone();
        move |sim: &mut Sim| {
            let p = sim.platform();
            let l = Arc::new(SpinLock::new(&p, "l", 0u32));
            let s = Arc::new(RwSem::new(&p, "s", 0u32));
            let seen = seen.clone();
            sim.add_step_check(move |info| {
                seen.borrow_mut().push(info.released_a_lock());
                None
            });
            sim.spawn("t", move || async move {
                let p = SimPlatform;
                let g = l.lock(&p).await; // lock: no
                g.unlock().await; // unlock: yes
                let mut g = l.lock(&p).await; // lock: no
                *g += 1;
                // yield: yes, since the drop that follows it runs in the same step.
                p.yield_point("held").await;
                drop(g);
                let r = s.read(&p).await; // down_read: no
                r.unlock().await; // up_read: no (readers publish nothing)
                let w = s.write(&p).await; // down_write: no
                w.unlock().await; // up_write: yes
            });
        }
    };
    let rep = dfs(&model, None);
    assert!(rep.failure.is_none());
    assert_eq!(
        *seen.borrow(),
        vec![false, true, false, true, false, false, false, true]
    );
}
