//! The engine on the toy models: failure detection, exhaustive search, replay, determinism,
//! and the same models on the native platform.

use sim_core::native::NativeRunner;
use sim_core::sim::explore::{Determinism, run_twice};
use sim_core::sim::{
    ExploreConfig, ExploreReport, Schedule, Sim, Strategy, ViolationKind, explore,
};
use sim_core::toys;

fn toy(name: &'static str) -> impl Fn(&mut Sim) {
    move |sim: &mut Sim| {
        let p = sim.platform();
        assert!(toys::build(name, &p, sim), "unknown toy {name}");
    }
}

fn run(name: &'static str, strategy: Strategy, runs: Option<u64>, seed: u64) -> ExploreReport {
    let cfg = ExploreConfig {
        strategy,
        seed,
        runs,
        ..ExploreConfig::default()
    };
    explore(&toy(name), &cfg, &mut |_| {}).expect("explore")
}

fn dfs(bound: Option<u32>) -> Strategy {
    Strategy::Dfs {
        preemption_bound: bound,
    }
}

#[test]
fn dfs_finds_abba_deadlock_and_names_the_cycle() {
    let rep = run("abba", dfs(Some(2)), None, 0);
    let f = rep.failure.expect("abba must deadlock");
    assert_eq!(f.violation.kind, ViolationKind::Deadlock);
    assert_eq!(f.violation.cycle, vec![0, 1], "{}", f.violation);
    let msg = &f.violation.message;
    assert!(
        msg.contains("t1 holds [A#0]") && msg.contains("lock B#1"),
        "{msg}"
    );
    assert!(
        msg.contains("t2 holds [B#1]") && msg.contains("lock A#0"),
        "{msg}"
    );
}

#[test]
fn dfs_finds_lost_wakeup_and_names_the_key() {
    let rep = run("lost-wakeup", dfs(Some(2)), None, 0);
    let f = rep.failure.expect("lost-wakeup must be found");
    assert_eq!(
        f.violation.kind,
        ViolationKind::LostWakeup,
        "{}",
        f.violation
    );
    let waiter = &f.violation.tasks[0];
    assert_eq!(waiter.status, "asleep");
    assert_eq!(
        waiter.wait_key.as_deref(),
        Some("wq#1 key {0x0, 0x1} (exclusive)")
    );
    assert!(
        f.violation.message.contains("waker finished"),
        "{}",
        f.violation
    );
}

#[test]
fn dfs_exhausts_the_correct_toys_without_a_report() {
    for name in ["abba-fixed", "lost-wakeup-correct", "lw3x4"] {
        let rep = run(name, dfs(Some(2)), None, 0);
        assert!(rep.failure.is_none(), "{name}: {:?}", rep.failure);
        assert!(rep.exhausted, "{name} not exhausted");
        assert!(rep.runs > 1, "{name}: only {} runs", rep.runs);
    }
}

#[test]
fn unbounded_dfs_with_sleep_sets_exhausts_the_small_toys() {
    let fixed = run("abba-fixed", dfs(None), None, 0);
    assert!(fixed.exhausted && fixed.failure.is_none());
    // Both A-first orders, nothing more: the critical sections are the only dependent steps.
    assert_eq!(fixed.runs - fixed.redundant_runs, 2);
    let bounded0 = run("lw3x4", dfs(Some(0)), None, 0);
    let bounded2 = run("lw3x4", dfs(Some(2)), None, 0);
    // A tighter preemption bound explores strictly less.
    assert!(
        bounded0.runs < bounded2.runs,
        "{} vs {}",
        bounded0.runs,
        bounded2.runs
    );
}

#[test]
fn pct_and_random_find_abba_within_1000_runs() {
    for strategy in [
        Strategy::Random,
        Strategy::Pct { depth: 2 },
        Strategy::Pct { depth: 3 },
    ] {
        for (name, seed) in (0..5).flat_map(|s| [("abba", s), ("abba-main", s)]) {
            let rep = run(name, strategy.clone(), Some(1000), seed);
            let f = rep
                .failure
                .unwrap_or_else(|| panic!("{strategy:?} seed {seed}: not found"));
            assert_eq!(f.violation.kind, ViolationKind::Deadlock);
        }
    }
}

#[test]
fn trace_order_runs_abba_cleanly() {
    // Task 0 runs first and finishes before task 1 starts: no deadlock in that schedule.
    let rep = run("abba", Strategy::TraceOrder, None, 0);
    assert!(rep.failure.is_none());
    assert_eq!(rep.runs, 1);
}

#[test]
fn the_printed_schedule_replays_the_failure() {
    for (name, strategy) in [
        ("abba", Strategy::Random),
        ("abba", Strategy::Pct { depth: 2 }),
        ("lost-wakeup", dfs(Some(2))),
    ] {
        let rep = run(name, strategy, Some(1000), 7);
        let f = rep.failure.expect("failure");
        let text = f.schedule.to_string();
        let parsed: Schedule = text.parse().expect("schedule parses");
        let again = run(name, Strategy::Replay(parsed), None, 0);
        let g = again.failure.expect("replay reproduces the failure");
        assert_eq!(g.violation, f.violation);
        assert_eq!(g.hash, f.hash, "same event-log hash");
    }
}

#[test]
fn a_schedule_that_does_not_fit_is_an_error() {
    let bad = Schedule {
        seed: 0,
        choices: vec![7, 7, 7],
    };
    let cfg = ExploreConfig {
        strategy: Strategy::Replay(bad),
        ..ExploreConfig::default()
    };
    let err = explore(&toy("abba"), &cfg, &mut |_| {}).unwrap_err();
    assert!(err.0.contains("diverges at choice 1"), "{err}");
}

#[test]
fn same_seed_same_hash_over_100_runs() {
    let first = run("lw3x4", Strategy::Random, Some(1), 42).last_hash;
    for _ in 0..100 {
        assert_eq!(run("lw3x4", Strategy::Random, Some(1), 42).last_hash, first);
    }
    let other = run("lw3x4", Strategy::Random, Some(1), 43).last_hash;
    assert_ne!(
        other, first,
        "a different seed should give a different schedule"
    );
}

#[test]
fn check_determinism_passes_a_correct_toy_and_catches_a_nondeterministic_one() {
    let cfg = ExploreConfig {
        strategy: Strategy::Random,
        seed: 3,
        ..ExploreConfig::default()
    };
    match run_twice(&toy("lw3x4"), &cfg).unwrap() {
        Determinism::Same { events, .. } => assert!(events > 20),
        d => panic!("lw3x4 is deterministic: {d:?}"),
    }
    match run_twice(&toy("nondeterministic"), &cfg).unwrap() {
        Determinism::Diverged {
            index,
            first,
            second,
            ..
        } => {
            assert!(first != second, "{first} / {second}");
            assert!(index < 4, "diverges early, at {index}");
        }
        d => panic!("not caught: {d:?}"),
    }
}

#[test]
fn correct_toys_run_1000_times_on_native_threads() {
    for name in ["abba-fixed", "lost-wakeup-correct", "lw3x4"] {
        for i in 0..1000 {
            let mut r = NativeRunner::new(i);
            let p = r.platform();
            assert!(toys::build(name, &p, &mut r));
            let out = r.join();
            assert!(out.is_clean(), "{name} run {i}: {out:?}");
        }
    }
}

#[test]
fn the_main_shaped_toys_report_what_the_flat_ones_do() {
    // abba-main: main (task 0) spawns t1 and t2 and waits to join t1 while they deadlock.
    let f = run("abba-main", dfs(None), None, 0)
        .failure
        .expect("abba-main must deadlock");
    assert_eq!(f.violation.kind, ViolationKind::Deadlock);
    assert_eq!(f.violation.cycle, vec![1, 2], "{}", f.violation);
    assert_eq!(f.violation.tasks[0].next, "join t1#1 exit");
    let f = run("lost-wakeup-main", dfs(None), None, 0)
        .failure
        .expect("lost-wakeup-main must be found");
    assert_eq!(
        f.violation.kind,
        ViolationKind::LostWakeup,
        "{}",
        f.violation
    );
    assert!(
        f.violation
            .message
            .contains("main blocked at join waiter#1 exit"),
        "{}",
        f.violation
    );
    // lw3x4-main's space takes 410,166 sleep-set DFS runs (100 s in a debug build): the
    // benchmark explores it; here random runs.
    let rep = run("lw3x4-main", Strategy::Random, Some(300), 1);
    assert!(
        rep.failure.is_none() && rep.runs == 300,
        "{:?}",
        rep.failure
    );
    for name in ["abba-fixed-main", "lost-wakeup-correct-main"] {
        for bound in [None, Some(2)] {
            let rep = run(name, dfs(bound), None, 0);
            assert!(rep.failure.is_none(), "{name}: {:?}", rep.failure);
            assert!(rep.exhausted && rep.runs > 1, "{name}: {} runs", rep.runs);
        }
    }
}

#[test]
fn the_main_shaped_toys_run_on_native_threads() {
    for name in ["abba-fixed-main", "lost-wakeup-correct-main", "lw3x4-main"] {
        for i in 0..300 {
            let mut r = NativeRunner::new(i);
            let p = r.platform();
            assert!(toys::build(name, &p, &mut r));
            let out = r.join();
            assert!(out.is_clean(), "{name} run {i}: {out:?}");
        }
    }
}

mod sleep_sets {
    use super::*;
    use sim_core::platform::{Mutex, Platform, Spawner, bug_on};
    use std::cell::RefCell;
    use std::collections::BTreeSet;
    use std::sync::Arc;

    thread_local! {
        static OUTCOMES: RefCell<BTreeSet<Vec<u32>>> = const { RefCell::new(BTreeSet::new()) };
    }

    /// Tasks 1 and 2 append their id to a history twice under one lock, task 3 once; the last
    /// to finish records the history. With `bug`, task 3 BUGs when it sees exactly [2, 1] (an
    /// order-dependent failure needing two specific preemptions).
    fn history(bug: bool) -> impl Fn(&mut Sim) {
        move |sim: &mut Sim| {
            let p = sim.platform();
            let st = Arc::new(Mutex::new(&p, "H", (Vec::<u32>::new(), 0u32)));
            for id in 1..=3u32 {
                let (st, p) = (st.clone(), p);
                sim.spawn(&format!("t{id}"), move || async move {
                    let rounds = if id == 3 { 1 } else { 2 };
                    for round in 0..rounds {
                        p.yield_point("between").await;
                        let mut g = st.lock(&p).await;
                        if bug && id == 3 && round == 0 && g.0 == [2, 1] {
                            g.unlock().await;
                            bug_on(&p, true, "order", || "saw 2 then 1".into()).await;
                            return;
                        }
                        g.0.push(id);
                        if round == rounds - 1 {
                            g.1 += 1;
                            if g.1 == 3 {
                                let h = g.0.clone();
                                OUTCOMES.with(|o| o.borrow_mut().insert(h));
                            }
                        }
                        g.unlock().await;
                    }
                });
            }
        }
    }

    fn outcomes(sleep_sets: bool) -> (BTreeSet<Vec<u32>>, u64) {
        OUTCOMES.with(|o| o.borrow_mut().clear());
        let cfg = ExploreConfig {
            strategy: dfs(None),
            sleep_sets,
            ..ExploreConfig::default()
        };
        let rep = explore(&history(false), &cfg, &mut |_| {}).unwrap();
        assert!(rep.exhausted && rep.failure.is_none());
        (
            OUTCOMES.with(|o| o.borrow().clone()),
            rep.runs - rep.redundant_runs,
        )
    }

    #[test]
    fn sleep_sets_reach_every_outcome_plain_dfs_reaches() {
        let (with, runs_with) = outcomes(true);
        let (without, runs_without) = outcomes(false);
        // 5!/(2!2!1!) = 30 interleavings of the five critical sections.
        assert_eq!(without.len(), 30);
        assert_eq!(with, without);
        assert!(
            runs_with < runs_without / 10,
            "{runs_with} vs {runs_without}"
        );
    }

    #[test]
    fn the_history_models_commute_under_the_audit() {
        use sim_core::sim::audit::{AuditConfig, audit};
        for bug in [false, true] {
            let rep = audit(&history(bug), &AuditConfig::default());
            assert!(rep.failures.is_empty(), "{rep}");
            assert!(rep.independent > 0, "{rep}");
        }
    }

    #[test]
    fn dfs_finds_an_order_dependent_bug_bounded_and_unbounded() {
        for bound in [Some(2), None] {
            let cfg = ExploreConfig {
                strategy: dfs(bound),
                ..ExploreConfig::default()
            };
            let rep = explore(&history(true), &cfg, &mut |_| {}).unwrap();
            let f = rep.failure.expect("found");
            assert_eq!(f.violation.kind, ViolationKind::Assertion("order".into()));
        }
    }
}

#[test]
fn manual_session_steps_goes_back_and_reaches_the_abba_deadlock() {
    use sim_core::sim::ManualSession;
    use sim_core::sim::RunEnd;
    let model = toy("abba");
    let mut s = ManualSession::new(&model, 0);
    let r = s.runnable();
    assert_eq!(r.len(), 2);
    assert_eq!((r[0].name.as_str(), r[0].op.as_str()), ("t1", "lock A#0"));
    assert_eq!((r[1].name.as_str(), r[1].op.as_str()), ("t2", "lock B#1"));
    s.step(r[0].task).unwrap();
    // t1 now wants B; t2 still wants B.
    assert_eq!(s.runnable()[0].op, "lock B#1");
    assert!(s.back());
    assert_eq!(s.runnable(), r, "back restores the same state");
    s.step(r[0].task).unwrap();
    s.step(r[1].task).unwrap();
    assert!(s.runnable().is_empty());
    match s.end() {
        Some(RunEnd::Violation(v)) => assert_eq!(v.cycle, vec![0, 1]),
        e => panic!("expected the deadlock, got {e:?}"),
    }
    assert!(s.step(r[0].task).is_err());
    assert_eq!(s.event_log().events.len(), 2);
    // The manual schedule replays with the replay strategy (one simulation per thread at a
    // time: end the session first).
    let schedule = s.schedule();
    drop(s);
    let rep = run("abba", Strategy::Replay(schedule), None, 0);
    let f = rep.failure.expect("replays");
    assert_eq!(f.violation.kind, ViolationKind::Deadlock);
}

mod checks {
    use super::*;
    use sim_core::platform::{Mutex, Platform, Spawner, SpinLock, warn_on};
    use std::sync::Arc;

    fn explore_once(model: &dyn sim_core::sim::Model, step_limit: u64) -> ExploreReport {
        let cfg = ExploreConfig {
            step_limit,
            ..ExploreConfig::default()
        };
        explore(model, &cfg, &mut |_| {}).unwrap()
    }

    #[test]
    fn a_livelock_hits_the_step_limit() {
        let model = |sim: &mut Sim| {
            let p = sim.platform();
            sim.spawn("spinner", move || async move {
                loop {
                    p.yield_point("spin").await;
                }
            });
        };
        let f = explore_once(&model, 500).failure.expect("step limit");
        assert_eq!(f.violation.kind, ViolationKind::StepLimit);
        assert_eq!(f.steps, 500);
    }

    #[test]
    fn a_warn_lets_the_run_finish_but_is_a_violation() {
        let model = |sim: &mut Sim| {
            let p = sim.platform();
            sim.spawn("t", move || async move {
                warn_on(&p, true, "demo-warn", || "something odd".into()).await;
                p.yield_point("after").await;
            });
        };
        let rep = explore_once(&model, 1000);
        let f = rep.failure.expect("WARN reported");
        assert_eq!(
            f.violation.kind,
            ViolationKind::Assertion("demo-warn".into())
        );
        assert_eq!(f.steps, 1, "the task ran on after the WARN");
    }

    #[test]
    fn sleeping_with_a_spinlock_held_is_a_bug() {
        let model = |sim: &mut Sim| {
            let p = sim.platform();
            let spin = Arc::new(SpinLock::new(&p, "xa_lock", ()));
            let m = Arc::new(Mutex::new(&p, "i_mmap_mutex", ()));
            sim.spawn("t", move || async move {
                let g = spin.lock(&p).await;
                let h = m.lock(&p).await;
                h.unlock().await;
                g.unlock().await;
            });
        };
        let f = explore_once(&model, 1000).failure.expect("caught");
        assert_eq!(
            f.violation.kind,
            ViolationKind::Assertion("sleep-in-atomic".into())
        );
    }

    #[test]
    fn unlocking_a_lock_held_by_another_task_is_a_bug() {
        let model = |sim: &mut Sim| {
            let p = sim.platform();
            let raw = Arc::new(p.new_lock(sim_core::LockClass::Mutex, "m"));
            let r2 = raw.clone();
            sim.spawn("owner", move || async move {
                p.lock(&raw).await;
                p.yield_point("hold").await;
            });
            sim.spawn("thief", move || async move {
                p.unlock(&r2).await;
            });
        };
        let f = explore_once(&model, 1000).failure.expect("caught");
        assert_eq!(
            f.violation.kind,
            ViolationKind::Assertion("unlock-not-held".into())
        );
    }

    #[test]
    fn a_model_panic_is_reported_not_propagated() {
        let model = |sim: &mut Sim| {
            let p = sim.platform();
            sim.spawn("t", move || async move {
                p.yield_point("before").await;
                let v: Vec<u32> = Vec::new();
                let _ = v[3];
            });
        };
        let f = explore_once(&model, 1000).failure.expect("reported");
        assert_eq!(f.violation.kind, ViolationKind::ModelPanic);
        assert!(f.violation.message.contains("index out of bounds"));
    }

    #[test]
    fn rwsem_is_writer_preferring() {
        // r1 holds the semaphore shared; w waits for it; r2 must queue behind w. If r1 then
        // waits for r2, that is the kernel's recursive-read deadlock.
        let model = |sim: &mut Sim| {
            let p = sim.platform();
            let sem = Arc::new(sim_core::RwSem::new(&p, "mmap_lock", 0u32));
            let gate = Arc::new(Mutex::new(&p, "gate", ()));
            let (s1, s2, s3, g1, g2) = (sem.clone(), sem.clone(), sem, gate.clone(), gate);
            sim.spawn("r1", move || async move {
                let g = g1.lock(&p).await;
                let r = s1.read(&p).await;
                p.yield_point("let w queue").await;
                g.unlock().await;
                let again = s1.read(&p).await;
                again.unlock().await;
                r.unlock().await;
            });
            sim.spawn("w", move || async move {
                let w = s2.write(&p).await;
                w.unlock().await;
            });
            sim.spawn("r2", move || async move {
                let g = g2.lock(&p).await;
                g.unlock().await;
                let r = s3.read(&p).await;
                r.unlock().await;
            });
        };
        let cfg = ExploreConfig {
            strategy: dfs(None),
            ..ExploreConfig::default()
        };
        let rep = explore(&model, &cfg, &mut |_| {}).unwrap();
        let f = rep
            .failure
            .expect("recursive read behind a waiting writer deadlocks");
        assert_eq!(f.violation.kind, ViolationKind::Deadlock, "{}", f.violation);
        assert!(
            f.violation.message.contains("down_read mmap_lock"),
            "{}",
            f.violation
        );
    }
}

mod rwsem_arrival {
    use super::*;
    use sim_core::platform::{Platform, Spawner};
    use std::cell::RefCell;
    use std::collections::BTreeSet;
    use std::sync::Arc;

    thread_local! {
        static SEEN: RefCell<BTreeSet<&'static str>> = const { RefCell::new(BTreeSet::new()) };
    }

    fn see(what: &'static str) {
        SEEN.with(|s| s.borrow_mut().insert(what));
    }

    /// r1 and r2 take the semaphore shared, w exclusively, each as its first step. The atomics
    /// only observe (they are touched under the semaphore, so the order is the semaphore's).
    fn readers_and_writer(sim: &mut Sim) {
        let p = sim.platform();
        let sem = Arc::new(sim_core::RwSem::new(&p, "i_rwsem", ()));
        let inside = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let wrote = Arc::new(std::sync::atomic::AtomicBool::new(false));
        for name in ["r1", "r2"] {
            let (sem, inside, wrote) = (sem.clone(), inside.clone(), wrote.clone());
            sim.spawn(name, move || async move {
                use std::sync::atomic::Ordering::SeqCst;
                let g = sem.read(&p).await;
                if inside.fetch_add(1, SeqCst) == 1 && !wrote.load(SeqCst) {
                    see("two readers inside");
                }
                p.yield_point("reading").await;
                g.unlock().await;
                // Counted out in the releasing step: the counter's order is the semaphore's
                // (decremented in the yield step, it would race with the other reader's
                // acquiring step outside the seam).
                inside.fetch_sub(1, SeqCst);
            });
        }
        sim.spawn("w", move || async move {
            let g = sem.write(&p).await;
            wrote.store(true, std::sync::atomic::Ordering::SeqCst);
            g.unlock().await;
        });
    }

    #[test]
    fn readers_overlap_before_the_writer_arrives() {
        SEEN.with(|s| s.borrow_mut().clear());
        let cfg = ExploreConfig {
            strategy: dfs(None),
            ..ExploreConfig::default()
        };
        let rep = explore(&readers_and_writer, &cfg, &mut |_| {}).unwrap();
        assert!(rep.exhausted && rep.failure.is_none(), "{:?}", rep.failure);
        assert!(
            SEEN.with(|s| s.borrow().contains("two readers inside")),
            "no explored run had both readers inside before the writer"
        );
    }

    #[test]
    fn the_rwsem_model_commutes_under_the_audit() {
        use sim_core::sim::audit::{AuditConfig, audit};
        let rep = audit(&readers_and_writer, &AuditConfig::default());
        assert!(rep.failures.is_empty(), "{rep}");
        assert!(rep.pairs > 0, "{rep}");
    }

    #[test]
    fn a_queued_writer_keeps_new_readers_out() {
        // r1 holds the semaphore; w tries, fails and queues; from then on r2 waits.
        let mut sim = Sim::new(sim_core::sim::SimConfig::default());
        readers_and_writer(&mut sim);
        let [r1, r2, w] = [0, 1, 2].map(sim_core::TaskId);
        let mut en = Vec::new();
        sim.enabled(&mut en);
        assert_eq!(en, vec![r1, r2, w], "everyone may try first");
        sim.step(r1);
        sim.enabled(&mut en);
        assert!(en.contains(&w), "the writer's attempt is a step of its own");
        sim.step(w);
        assert_eq!(
            sim.describe_op(&sim.next_op(w)),
            "down_write i_rwsem#0 (queued)"
        );
        sim.enabled(&mut en);
        assert!(
            !en.contains(&r2),
            "a reader waits behind a queued writer: {en:?}"
        );
        assert!(!en.contains(&w));
        sim.step(r1); // yield
        sim.step(r1); // up_read
        sim.enabled(&mut en);
        assert!(en.contains(&w) && !en.contains(&r2), "{en:?}");
        sim.step(w);
        sim.step(w);
        sim.enabled(&mut en);
        assert_eq!(en, vec![r2]);
    }
}

#[test]
fn native_readers_overlap_while_the_writer_has_not_arrived() {
    use sim_core::platform::{Platform, Spawner};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
    // Each reader waits inside until the other is inside too; the writer arrives only after
    // both were. Under the old rule (a reader waits for any writer about to write) this would
    // hang; with the kernel's (a writer counts once it has tried) it finishes.
    for seed in 0..20 {
        let mut r = NativeRunner::new(seed);
        let p = r.platform();
        let sem = Arc::new(sim_core::RwSem::new(&p, "i_rwsem", ()));
        let inside = Arc::new(AtomicU32::new(0));
        for name in ["r1", "r2"] {
            let (sem, inside) = (sem.clone(), inside.clone());
            r.spawn(name, move || async move {
                let g = sem.read(&p).await;
                inside.fetch_add(1, SeqCst);
                while inside.load(SeqCst) < 2 {
                    p.yield_point("wait for the other reader").await;
                }
                g.unlock().await;
            });
        }
        r.spawn("w", move || async move {
            while inside.load(SeqCst) < 2 {
                p.yield_point("not yet").await;
            }
            let g = sem.write(&p).await;
            g.unlock().await;
        });
        assert!(r.join().is_clean());
    }
}

/// A lost wake-up inside named functions: t1 sleeps in `outer > inner`, t2 wakes another key
/// from `waker` and finishes.
fn lost_wakeup_in_functions(marked: bool) -> impl Fn(&mut Sim) {
    use sim_core::platform::{Platform, Spawner, WaitKey, WaitQueue, wake_key_eq};
    use std::sync::Arc;
    move |sim: &mut Sim| {
        let p = sim.platform();
        let wq = Arc::new(WaitQueue::new(&p, "wq"));
        let w1 = wq.clone();
        sim.spawn("t1", move || async move {
            let _f = marked.then(|| p.enter_fn("outer"));
            {
                let _g = marked.then(|| p.enter_fn("helper"));
                p.yield_point("helper").await;
            }
            let _g = marked.then(|| p.enter_fn("inner"));
            let w = w1
                .prepare_to_wait(&p, WaitKey(1, 1), true, wake_key_eq)
                .await;
            w1.schedule(&p, w).await;
            w1.finish_wait(&p, w).await;
        });
        sim.spawn("t2", move || async move {
            let _f = marked.then(|| p.enter_fn("waker"));
            wq.wake_up(&p, WaitKey(1, 2), sim_core::WakeMode::Next)
                .await;
        });
    }
}

#[test]
fn reports_name_each_tasks_call_path_and_the_paths_change_no_search() {
    let cfg = ExploreConfig {
        strategy: dfs(None),
        keep_going: true,
        ..ExploreConfig::default()
    };
    let marked = explore(&lost_wakeup_in_functions(true), &cfg, &mut |_| {}).unwrap();
    let plain = explore(&lost_wakeup_in_functions(false), &cfg, &mut |_| {}).unwrap();
    // Entering and leaving functions is not a step: the same runs, the same event logs.
    assert_eq!(
        (marked.runs, marked.failed_runs, marked.last_hash),
        (plain.runs, plain.failed_runs, plain.last_hash)
    );
    let f = marked.failure.expect("the wake-up of another key is lost");
    let v = &f.violation;
    assert_eq!(v.kind, ViolationKind::LostWakeup, "{v}");
    // `helper` was left before the sleep; `inner` is where t1 sleeps.
    assert_eq!(v.tasks[0].path, vec!["outer", "inner"]);
    assert!(v.message.contains("in outer > inner"), "{}", v.message);
    assert!(v.to_string().contains("    in outer > inner\n"), "{v}");
    // A finished task has left every function, and its last wake-up says where it came from.
    assert_eq!(v.tasks[1].status, "finished");
    assert!(v.tasks[1].path.is_empty());
    let woke = v.tasks[1].last_wake.as_deref().unwrap();
    assert!(
        woke.ends_with("key {0x1, 0x2} (WAKE_NEXT) in waker"),
        "{woke}"
    );
    let unmarked = plain.failure.unwrap().violation;
    assert!(unmarked.tasks[0].path.is_empty());
}

#[test]
fn a_long_random_schedule_prints_at_least_twice_shorter_and_replays() {
    use sim_core::platform::{Mutex, Spawner};
    use sim_core::sim::explore::logged_run;
    use std::sync::Arc;
    // Four tasks taking one lock 300 times each: over a thousand random choices among 1 to 4.
    let model = |sim: &mut Sim| {
        let p = sim.platform();
        let m = Arc::new(Mutex::new(&p, "M", 0u64));
        for name in ["t1", "t2", "t3", "t4"] {
            let m = m.clone();
            sim.spawn(name, move || async move {
                for _ in 0..300 {
                    let mut g = m.lock(&p).await;
                    *g += 1;
                    g.unlock().await;
                }
            });
        }
    };
    let cfg = ExploreConfig {
        strategy: Strategy::Random,
        seed: 11,
        ..ExploreConfig::default()
    };
    let run = logged_run(&model, &cfg).unwrap();
    let s = run.schedule;
    assert!(s.choices.len() > 1000, "{} choices", s.choices.len());
    let (v1, v2) = (s.to_v1(), s.to_v2());
    println!(
        "{} choices: v1 {} chars, v2 {} chars",
        s.choices.len(),
        v1.len(),
        v2.len()
    );
    assert!(
        2 * v2.len() <= v1.len(),
        "v1 {} chars, v2 {}",
        v1.len(),
        v2.len()
    );
    assert_eq!(s.to_string(), v2);
    for text in [&v1, &v2] {
        let parsed: Schedule = text.parse().unwrap();
        assert_eq!(parsed, s);
        let again = logged_run(
            &model,
            &ExploreConfig {
                strategy: Strategy::Replay(parsed),
                ..ExploreConfig::default()
            },
        )
        .unwrap();
        assert_eq!(again.log.hash, run.log.hash, "the replay is the same run");
    }
}

/// A wait table made in one go (`WaitQueue::table`, `Platform::new_waitqueues`) is its queues
/// made one by one: the same ids, in order, and the same names; and a simulation started after
/// another numbers its objects from 0 again (the engine reuses the object table's storage, not
/// its content).
#[test]
fn a_wait_table_in_one_go_is_its_queues_made_one_by_one() {
    use sim_core::platform::{ObjId, Op, OpKind, WaitQueue};
    use sim_core::sim::SimConfig;
    let objects = |bulk: bool| {
        let sim = Sim::new(SimConfig::default());
        let p = sim.platform();
        let first = WaitQueue::new(&p, "first");
        let table: Vec<WaitQueue<_>> = if bulk {
            WaitQueue::table(&p, "table", 5).into_vec()
        } else {
            (0..5).map(|_| WaitQueue::new(&p, "table")).collect()
        };
        let empty = WaitQueue::table(&p, "none", 0);
        assert!(empty.is_empty());
        let last = WaitQueue::new(&p, "last");
        let ids: Vec<u32> = std::iter::once(&first)
            .chain(&table)
            .chain(std::iter::once(&last))
            .map(|q| q.raw().id.0)
            .collect();
        let names: Vec<String> = (0..ids.len() as u32)
            .map(|i| sim.describe_op(&Op::new(OpKind::Wake, ObjId(i))))
            .collect();
        (ids, names)
    };
    let (ids, names) = objects(true);
    assert_eq!(ids, (0..7).collect::<Vec<u32>>());
    assert!(
        names[1].contains("table") && names[6].contains("last"),
        "{names:?}"
    );
    assert_eq!((ids, names), objects(false));
}
