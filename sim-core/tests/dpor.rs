//! Source-set DPOR never loses a final state: on every model small enough for plain exhaustive
//! DFS, plain DFS and DFS with DPOR (and sleep sets) reach the same set of final states (how
//! the run ended, the violation and every task's state in it, the steps taken, the time
//! reached), and DPOR finds every violation kind plain DFS finds. The soundness models with
//! machines (crash images, data) are compared three ways in `soundness.rs`.
//!
//! The figures (runs to exhaust each toy and lw3x4: plain / sleep sets / DPOR) are printed by
//! `figures`, run in release: `cargo test --release -p sim-core --test dpor -- --ignored
//! --nocapture`.

use sim_core::platform::{
    Mutex, Platform, RwSem, Spawner, SpinLock, WaitKey, WaitQueue, WakeMode, bug_on, wake_key_eq,
};
use sim_core::sim::reduction::{Reduction, exhaustive};
use sim_core::sim::{ExploreConfig, Model, RunEnd, Sim, Strategy};
use sim_core::toys;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::Arc;

thread_local! {
    static NOTES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// What a task saw (part of the final state). Models clear the notes in their setup.
fn note(s: impl Into<String>) {
    NOTES.with(|n| n.borrow_mut().push(s.into()));
}

fn clear_notes() {
    NOTES.with(|n| n.borrow_mut().clear());
}

/// A final state: how the run ended (the violation kind, its message, every task's state at
/// the end), the steps, the time and what the tasks noted (as a multiset).
type Final = (String, String, Vec<String>, u64, u64, Vec<String>);

fn final_state(sim: &Sim, end: &RunEnd) -> Final {
    let (kind, msg, tasks) = match end {
        RunEnd::Done => ("done".to_string(), String::new(), Vec::new()),
        RunEnd::Violation(v) => (
            v.kind.name(),
            v.message.clone(),
            v.tasks
                .iter()
                .map(|t| {
                    format!(
                        "{} {} next={} holds={:?} key={:?}",
                        t.name, t.status, t.next, t.holds, t.wait_key
                    )
                })
                .collect(),
        ),
        RunEnd::Abandoned => unreachable!("abandoned runs are not observed"),
    };
    let mut notes = NOTES.with(|n| n.borrow().clone());
    notes.sort();
    (kind, msg, tasks, sim.steps(), sim.now_ns(), notes)
}

struct Search {
    finals: BTreeSet<Final>,
    kinds: BTreeSet<String>,
    /// Complete runs (not cut short by sleep sets).
    runs: u64,
    /// All runs, redundant ones included.
    all_runs: u64,
}

fn search(model: &dyn Model, r: Reduction) -> Search {
    let e = exhaustive(model, r, &mut final_state).unwrap();
    assert!(e.exhausted, "{r:?} did not exhaust");
    let kinds = e.outcomes.iter().map(|f| f.0.clone()).collect();
    Search {
        finals: e.outcomes,
        kinds,
        runs: e.runs,
        all_runs: e.all_runs,
    }
}

/// Plain DFS and DPOR reach the same final states; returns (plain, sleep sets, DPOR) runs.
fn same_finals(name: &str, model: &dyn Model) -> (u64, u64, u64) {
    let plain = search(model, Reduction::Plain);
    let sleep = search(model, Reduction::SleepSets);
    let dpor = search(model, Reduction::Dpor);
    assert_eq!(
        dpor.kinds, plain.kinds,
        "{name}: DPOR misses a violation kind plain DFS finds"
    );
    assert_eq!(
        dpor.finals, plain.finals,
        "{name}: DPOR ({} runs) lost final states plain DFS ({} runs) reaches",
        dpor.runs, plain.runs
    );
    assert_eq!(
        sleep.finals, plain.finals,
        "{name}: sleep sets lost final states"
    );
    assert!(
        dpor.all_runs <= sleep.all_runs,
        "{name}: DPOR explored more"
    );
    println!(
        "{name}: {} final states, kinds {:?}; runs plain {}, sleep sets {}, DPOR {}",
        plain.finals.len(),
        plain.kinds,
        plain.runs,
        sleep.runs,
        dpor.runs
    );
    (plain.runs, sleep.runs, dpor.runs)
}

fn toy(name: &'static str) -> impl Fn(&mut Sim) {
    move |sim: &mut Sim| {
        clear_notes();
        let p = sim.platform();
        assert!(toys::build(name, &p, sim), "unknown toy {name}");
    }
}

#[test]
fn dpor_reaches_every_final_state_of_the_small_toys() {
    for name in ["abba", "abba-fixed", "lost-wakeup", "lost-wakeup-correct"] {
        let (plain, _, dpor) = same_finals(name, &toy(name));
        assert!(dpor <= plain);
    }
}

/// Tasks that appear mid-run (spawned by `main`) and joins: DPOR's clocks grow with the task
/// table, and a join depends on the child's exit.
#[test]
fn dpor_reaches_every_final_state_of_the_main_shaped_toys() {
    for name in [
        "abba-main",
        "abba-fixed-main",
        "lost-wakeup-main",
        "lost-wakeup-correct-main",
    ] {
        let (plain, _, dpor) = same_finals(name, &toy(name));
        assert!(dpor <= plain);
    }
}

/// Tasks append their id to a history under one lock (`rounds[i]` times for task i); with
/// `bug`, the last task BUGs when it sees exactly [2, 1] first.
fn history(rounds: &'static [u32], bug: bool) -> impl Fn(&mut Sim) {
    move |sim: &mut Sim| {
        clear_notes();
        let p = sim.platform();
        let st = Arc::new(Mutex::new(&p, "H", Vec::<u32>::new()));
        let n = rounds.len() as u32;
        for (i, &r) in rounds.iter().enumerate() {
            let id = i as u32 + 1;
            let (st, p) = (st.clone(), p);
            sim.spawn(&format!("t{id}"), move || async move {
                for _ in 0..r {
                    p.yield_point("between").await;
                    let mut g = st.lock(&p).await;
                    let seen = g.clone();
                    g.push(id);
                    if g.len() as u32 == rounds.iter().sum::<u32>() {
                        note(format!("{:?}", *g));
                    }
                    g.unlock().await;
                    bug_on(&p, bug && id == n && seen == [2, 1], "order", || {
                        format!("history {seen:?}")
                    })
                    .await;
                }
            });
        }
    }
}

#[test]
fn dpor_reaches_every_history_order() {
    let (plain, sleep, dpor) = same_finals("history 2,2,1", &history(&[2, 2, 1], false));
    let finals = search(&history(&[2, 2, 1], false), Reduction::Dpor).finals;
    assert_eq!(finals.len(), 30, "every order is a final state of its own");
    // One run per order of the five critical sections: 5!/(2!2!1!) = 30 Mazurkiewicz traces.
    assert_eq!(dpor, 30, "plain {plain}, sleep sets {sleep}");
    same_finals("history 2,2,1 bug", &history(&[2, 2, 1], true));
    same_finals("history 1,1,1,1", &history(&[1, 1, 1, 1], false));
}

/// Readers and a writer on one rwsem, with the writer queueing behind a reader and a
/// downgrade (the engine's rwsem rules, `engine.rs` "rwsem_arrival").
fn rwsem_model(sim: &mut Sim) {
    clear_notes();
    let p = sim.platform();
    let sem = Arc::new(RwSem::new(&p, "i_rwsem", 0u32));
    for name in ["r1", "r2"] {
        let sem = sem.clone();
        sim.spawn(name, move || async move {
            let g = sem.read(&p).await;
            p.yield_point("reading").await;
            let v = *g;
            note(format!("read {v}"));
            g.unlock().await;
            bug_on(&p, v > 2, "too-many-writes", || format!("{v}")).await;
        });
    }
    for name in ["w1", "w2"] {
        let sem = sem.clone();
        sim.spawn(name, move || async move {
            let mut g = sem.write(&p).await;
            *g += 1;
            let r = g.downgrade().await;
            r.unlock().await;
        });
    }
}

#[test]
fn dpor_reaches_every_final_state_of_the_rwsem_model() {
    same_finals("rwsem", &rwsem_model);
}

/// A waiter sleeps on a keyed wait queue until a flag is set; with `correct` it checks the flag
/// under the lock after `prepare_to_wait`, without it before (a lost wake-up).
fn waiter_model(correct: bool) -> impl Fn(&mut Sim) {
    move |sim: &mut Sim| {
        clear_notes();
        let p = sim.platform();
        let st = Arc::new(Mutex::new(&p, "M", false));
        let wq = Arc::new(WaitQueue::new(&p, "wq"));
        const KEY: WaitKey = WaitKey(0, 1);
        {
            let (st, wq) = (st.clone(), wq.clone());
            sim.spawn("waiter", move || async move {
                let mut g = st.lock(&p).await;
                if correct {
                    while !*g {
                        g = wq.wait_unlocking(&p, g, KEY, true).await;
                    }
                    g.unlock().await;
                } else {
                    let done = *g;
                    g.unlock().await;
                    if !done {
                        let w = wq.prepare_to_wait(&p, KEY, true, wake_key_eq).await;
                        wq.schedule(&p, w).await;
                    }
                }
            });
        }
        for name in ["waker1", "waker2"] {
            let (st, wq) = (st.clone(), wq.clone());
            sim.spawn(name, move || async move {
                let mut g = st.lock(&p).await;
                *g = true;
                g.unlock().await;
                wq.wake_up(&p, KEY, WakeMode::Next).await;
            });
        }
    }
}

#[test]
fn dpor_reaches_every_final_state_of_the_wait_queue_models() {
    same_finals("waiter correct", &waiter_model(true));
    let (plain, _, _) = same_finals("waiter lost wake-up", &waiter_model(false));
    assert!(plain > 1);
}

/// Runs cut short: one task BUGs at once unless the other has written first; the step limit
/// cuts a spinner.
#[test]
fn dpor_explores_the_steps_a_violation_cut_off() {
    let early_bug = |sim: &mut Sim| {
        clear_notes();
        let p = sim.platform();
        let st = Arc::new(Mutex::new(&p, "M", 0u32));
        let s2 = st.clone();
        sim.spawn("checker", move || async move {
            let g = st.lock(&p).await;
            let v = *g;
            g.unlock().await;
            bug_on(&p, v == 0, "early", || "nobody wrote yet".into()).await;
        });
        sim.spawn("writer", move || async move {
            let mut g = s2.lock(&p).await;
            *g = 1;
            g.unlock().await;
        });
    };
    let (plain, _, dpor) = same_finals("early bug", &early_bug);
    assert!(dpor >= 2 && dpor <= plain);
}

#[test]
fn bounded_dfs_ignores_dpor() {
    // With a preemption bound DPOR is off (unsound together with a bound): the run count is the
    // same whatever `dpor` says.
    let runs = |dpor: bool| {
        let cfg = ExploreConfig {
            strategy: Strategy::Dfs {
                preemption_bound: Some(1),
            },
            dpor,
            ..ExploreConfig::default()
        };
        sim_core::sim::explore(&toy("lw3x4"), &cfg, &mut |_| {})
            .unwrap()
            .runs
    };
    assert_eq!(runs(true), runs(false));
}

/// The figures: runs to exhaust each toy and lw3x4, plain / sleep sets / DPOR (lw3x4 plain is
/// out of reach). Release only.
#[test]
#[ignore]
fn figures() {
    for name in ["abba", "abba-fixed", "lost-wakeup", "lost-wakeup-correct"] {
        same_finals(name, &toy(name));
    }
    let t = std::time::Instant::now();
    let sleep = search(&toy("lw3x4"), Reduction::SleepSets);
    let st = t.elapsed();
    let t = std::time::Instant::now();
    let dpor = search(&toy("lw3x4"), Reduction::Dpor);
    let dt = t.elapsed();
    assert_eq!(dpor.finals, sleep.finals);
    println!(
        "lw3x4: sleep sets {} runs ({} complete) in {st:?}; DPOR {} runs ({} complete) in {dt:?}",
        sleep.all_runs, sleep.runs, dpor.all_runs, dpor.runs
    );
}

/// r1 and r2 take the semaphore shared, w exclusively (`engine.rs` "rwsem_arrival"); the
/// notes say whether both readers held it at once before the writer wrote. The count of
/// readers inside and the writer's flag live behind a platform mutex: readers of a rwsem
/// commute with each other (`OpKind::conflicts`), so state that two readers share must be
/// reached through the platform, as the project's rule for model code says.
fn readers_and_writer(sim: &mut Sim) {
    clear_notes();
    let p = sim.platform();
    let sem = Arc::new(RwSem::new(&p, "i_rwsem", ()));
    // (readers inside, the writer wrote)
    let st = Arc::new(Mutex::new(&p, "inside", (0u32, false)));
    for name in ["r1", "r2"] {
        let (sem, st) = (sem.clone(), st.clone());
        sim.spawn(name, move || async move {
            let g = sem.read(&p).await;
            let mut s = st.lock(&p).await;
            s.0 += 1;
            if s.0 == 2 {
                note(format!("two readers inside, wrote {}", s.1));
            }
            s.unlock().await;
            p.yield_point("reading").await;
            let mut s = st.lock(&p).await;
            s.0 -= 1;
            s.unlock().await;
            g.unlock().await;
        });
    }
    sim.spawn("w", move || async move {
        let g = sem.write(&p).await;
        let mut s = st.lock(&p).await;
        s.1 = true;
        s.unlock().await;
        g.unlock().await;
    });
}

#[test]
fn dpor_reaches_every_final_state_of_the_rwsem_arrival_model() {
    same_finals("readers and writer", &readers_and_writer);
}

/// Two critical sections that only read (their footprint is a read of the lock), a writer that
/// takes `&mut` to the data in its locking step and changes it one scheduling point later, and
/// a lockless reader (`read_once`). Each reader notes what it saw and names it in its next
/// step.
fn sections(sim: &mut Sim) {
    clear_notes();
    let p = sim.platform();
    let l = Arc::new(SpinLock::new(&p, "L", 0u32));
    for name in ["r1", "r2"] {
        let l = l.clone();
        sim.spawn(name, move || async move {
            let g = l.lock(&p).await;
            let v = *g;
            drop(g);
            note(format!("{name} saw {v}"));
            p.yield_point(if v == 0 { "saw 0" } else { "saw 1" }).await;
        });
    }
    {
        let l = l.clone();
        sim.spawn("w", move || async move {
            let mut g = l.lock(&p).await;
            let r: &mut u32 = &mut g;
            p.yield_point("holding").await;
            *r += 1;
            p.yield_point("still holding").await;
            drop(g);
        });
    }
    sim.spawn("lockless", move || async move {
        let v = l.read_once(&p, |v| *v).await;
        note(format!("lockless saw {v}"));
        p.yield_point(if v == 0 { "ll saw 0" } else { "ll saw 1" })
            .await;
    });
}

#[test]
fn dpor_reaches_every_final_state_with_read_only_critical_sections() {
    let (plain, sleep, dpor) = same_finals("read-only sections", &sections);
    // The two read-only sections commute: fewer runs than plain DFS.
    assert!(dpor < plain && sleep < plain, "{plain} {sleep} {dpor}");
}

/// DPOR completes one run per order of the critical sections (the Mazurkiewicz traces) and
/// runs fewer runs in all than sleep sets alone, which cut most of theirs short.
#[test]
fn dpor_completes_one_run_per_order_with_fewer_runs_than_sleep_sets() {
    // 4!, 4!/2! and 5!/(2!2!) orders.
    for (rounds, orders) in [
        (&[1u32, 1, 1, 1][..], 24),
        (&[2, 1, 1], 12),
        (&[2, 2, 1], 30),
    ] {
        let m = history(rounds, false);
        let sleep = search(&m, Reduction::SleepSets);
        let dpor = search(&m, Reduction::Dpor);
        assert_eq!(dpor.finals, sleep.finals);
        assert_eq!((dpor.runs, sleep.runs), (orders, orders), "{rounds:?}");
        assert!(
            2 * dpor.all_runs < sleep.all_runs + sleep.runs,
            "history {rounds:?}: sleep sets {} runs ({} complete), DPOR {} runs",
            sleep.all_runs,
            sleep.runs,
            dpor.all_runs
        );
    }
}
