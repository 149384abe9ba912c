//! The executor's fast path (`sim` "Fast path"): `Sim::run` takes a step after which only the
//! stepping task can move inside the same poll. Each test runs a model twice with the same
//! choices, once with `Sim::run` (fast path) and once with `Sim::run_steps` (the executor loop
//! at every step, no fast path), and requires everything a run shows to be the same: the event
//! log and its hash, the step count, the choices, how the run ended, and at each choice the
//! enabled tasks and the footprint of the step before it (what dfs, DPOR and race reports read).

use sim_core::events::EventLog;
use sim_core::platform::{
    Mutex, Platform, Spawner, SpinLock, WaitKey, WaitQueue, WakeMode, bug_on, spawn, warn_on,
};
use sim_core::sim::{CheckFailure, ChoiceView, RunEnd, Sim, SimConfig};
use sim_core::toys;
use std::sync::Arc;

#[derive(Debug, PartialEq)]
struct Outcome {
    end: RunEnd,
    log: EventLog,
    steps: u64,
    choices: Vec<u32>,
    seen: Vec<ChoiceView>,
    /// Steps the model's step check saw (when it registered one).
    checked: u64,
}

/// One run of `build` with random choices from `seed`; `fast`: through `Sim::run`.
fn one(build: &dyn Fn(&mut Sim), seed: u64, step_limit: u64, fast: bool) -> Outcome {
    let mut sim = Sim::new(SimConfig {
        seed,
        step_limit,
        record_log: true,
    });
    build(&mut sim);
    let (end, seen) = sim.run_random_observed(seed, fast);
    Outcome {
        end,
        log: sim.event_log(),
        steps: sim.steps(),
        choices: sim.choices().to_vec(),
        seen,
        checked: CHECKED.with(|c| c.replace(0)),
    }
}

thread_local! {
    static CHECKED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The fast and the stepwise run of `build` agree for seeds 0..`seeds`; returns how many
/// steps the runs took in all and how many of them had a choice.
fn agree(build: &dyn Fn(&mut Sim), seeds: u64, step_limit: u64) -> (u64, u64) {
    let (mut steps, mut choices) = (0, 0);
    for seed in 0..seeds {
        let stepwise = one(build, seed, step_limit, false);
        let fast = one(build, seed, step_limit, true);
        assert_eq!(fast, stepwise, "seed {seed}: the fast path changed the run");
        steps += fast.steps;
        choices += fast.seen.len() as u64;
    }
    (steps, choices)
}

fn toy(name: &'static str) -> impl Fn(&mut Sim) {
    move |sim: &mut Sim| {
        let p = sim.platform();
        assert!(toys::build(name, &p, sim), "unknown toy {name}");
    }
}

/// The toys in both shapes: `main` runs alone (fast path), spawns the workers in its steps and
/// joins them; the workers race.
#[test]
fn toys_agree_with_and_without_the_fast_path() {
    for name in toys::TOYS.iter().chain(toys::TOYS_MAIN.iter()) {
        let (steps, choices) = agree(&toy(name), 40, 10_000);
        assert!(
            choices > 0 && steps > choices,
            "{name}: {steps} steps, {choices} choices"
        );
    }
}

/// `holder` takes L and runs alone through several steps (a WARN among them) while `waiter`
/// waits for L; the release enables `waiter`, so the step after it is a choice again. Then
/// `holder` spawns a child (which is enabled at once) and, with `bug`, raises a BUG while
/// `waiter` may still be waiting.
fn hold_then_race(bug: bool) -> impl Fn(&mut Sim) {
    move |sim: &mut Sim| {
        let p = sim.platform();
        let l = Arc::new(Mutex::new(&p, "L", 0u64));
        let m = Arc::new(Mutex::new(&p, "M", 0u64));
        {
            let (l, m, p) = (l.clone(), m.clone(), p);
            sim.spawn("holder", move || async move {
                let mut g = l.lock(&p).await;
                for i in 0..6 {
                    p.yield_point("holding").await;
                    *g += i;
                    let _ =
                        warn_on(&p, i == 3, "fast-path-warn", || "a WARN while alone".into()).await;
                }
                g.unlock().await;
                for _ in 0..3 {
                    let mut g = m.lock(&p).await;
                    *g += 1;
                    g.unlock().await;
                }
                let (m2, p2) = (m.clone(), p);
                let child = spawn(&p, "child", move || async move {
                    for _ in 0..3 {
                        let mut g = m2.lock(&p2).await;
                        *g += 10;
                        g.unlock().await;
                    }
                })
                .await;
                p.yield_point("after-spawn").await;
                bug_on(&p, bug, "fast-path-bug", || "a BUG".into()).await;
                child.join(&p).await;
            });
        }
        sim.spawn("waiter", move || async move {
            p.yield_point("start").await;
            for _ in 0..3 {
                let mut g = l.lock(&p).await;
                *g += 100;
                g.unlock().await;
                let mut g = m.lock(&p).await;
                *g += 100;
                g.unlock().await;
            }
        });
    }
}

#[test]
fn one_then_two_runnable_tasks_agree() {
    for bug in [false, true] {
        let (steps, choices) = agree(&hold_then_race(bug), 60, 10_000);
        assert!(
            choices > 0 && steps > choices,
            "{steps} steps, {choices} choices"
        );
    }
}

/// A step limit that falls inside a stretch the fast path takes ends the run at the same step
/// with the same violation.
#[test]
fn the_step_limit_cuts_the_fast_path_where_the_executor_would() {
    let full = one(&toy("lw3x4-main"), 0, 10_000, false).steps;
    for limit in 1..full {
        let stepwise = one(&toy("lw3x4-main"), 0, limit, false);
        let fast = one(&toy("lw3x4-main"), 0, limit, true);
        assert!(matches!(fast.end, RunEnd::Violation(_)), "limit {limit}");
        assert_eq!(fast, stepwise, "step limit {limit}");
    }
}

/// With a step check registered, `run` checks after every step, as `run_steps` does.
#[test]
fn step_checks_see_every_step() {
    let build = |sim: &mut Sim| {
        toy("lw3x4-main")(sim);
        sim.add_step_check(|info| {
            CHECKED.with(|c| c.set(c.get() + 1));
            // Fails at step 20, inside the stretch `main` runs alone.
            (info.step == 20).then(|| CheckFailure {
                name: "step-20".into(),
                message: "the check saw step 20".into(),
            })
        });
    };
    let stepwise = one(&build, 0, 10_000, false);
    let fast = one(&build, 0, 10_000, true);
    assert_eq!(stepwise.checked, 21);
    assert_eq!(fast, stepwise);
}

/// `main` takes D, changes its data, spawns `child` and joins it, still holding D; `sleeper`
/// waits on a queue until `child` wakes it. When `sleeper` sleeps before the spawn, `child`
/// runs alone from its first step on; its first code (up to its first announcement) is part of
/// `main`'s spawn step, not a step of its own, so the step before the choice that the wake-up
/// opens is `child`'s, with `child`'s footprint (not `main`'s write of D).
fn spawn_while_a_sleeper_waits(sim: &mut Sim) {
    let p = sim.platform();
    let d = Arc::new(Mutex::new(&p, "D", 0u64));
    let flag = Arc::new(Mutex::new(&p, "F", false));
    let wq = Arc::new(WaitQueue::new(&p, "wq"));
    {
        let (flag, wq) = (flag.clone(), wq.clone());
        sim.spawn("main", move || async move {
            let mut g = d.lock(&p).await;
            *g += 1;
            let child = spawn(&p, "child", move || async move {
                p.yield_point("child-start").await;
                let mut f = flag.lock(&p).await;
                *f = true;
                f.unlock().await;
                wq.wake_up(&p, WaitKey(0, 1), WakeMode::Next).await;
                p.yield_point("child-end").await;
            })
            .await;
            child.join(&p).await;
            *g += 1;
            g.unlock().await;
        });
    }
    sim.spawn("sleeper", move || async move {
        let mut g = flag.lock(&p).await;
        while !*g {
            g = wq.wait_unlocking(&p, g, WaitKey(0, 1), true).await;
        }
        g.unlock().await;
    });
}

#[test]
fn a_spawned_task_alone_takes_its_first_step_as_a_step() {
    let (steps, choices) = agree(&spawn_while_a_sleeper_waits, 60, 10_000);
    assert!(
        choices > 0 && steps > choices,
        "{steps} steps, {choices} choices"
    );
}

/// `t` takes a mutex while holding a spinlock: a violation (sleep in atomic) raised before the
/// announcement, after which the task could go on alone; the run ends there.
fn sleep_in_atomic(sim: &mut Sim) {
    let p = sim.platform();
    let s = Arc::new(SpinLock::new(&p, "S", 0u64));
    let m = Arc::new(Mutex::new(&p, "M", 0u64));
    sim.spawn("t", move || async move {
        p.yield_point("start").await;
        let g = s.lock(&p).await;
        let mut h = m.lock(&p).await;
        *h += 1;
        h.unlock().await;
        g.unlock().await;
        for _ in 0..4 {
            p.yield_point("after").await;
        }
    });
}

#[test]
fn a_violation_ends_the_fast_path() {
    let stepwise = one(&sleep_in_atomic, 0, 10_000, false);
    assert!(
        matches!(&stepwise.end, RunEnd::Violation(v) if v.message.contains("spinlock")),
        "{:?}",
        stepwise.end
    );
    agree(&sleep_in_atomic, 1, 10_000);
}

/// A task that awaits something other than a Platform operation is a model bug the executor
/// catches at that poll; a step the fast path began counts as that poll's, so it is caught
/// there too (with the step limit right after it: not a step-limit end instead).
fn awaits_a_foreign_future(sim: &mut Sim) {
    let p = sim.platform();
    sim.spawn("t", move || async move {
        p.yield_point("a").await;
        p.yield_point("b").await;
        std::future::pending::<()>().await;
    });
}

#[test]
fn a_foreign_await_after_a_fast_step_is_caught() {
    for fast in [false, true] {
        let r = std::panic::catch_unwind(|| one(&awaits_a_foreign_future, 0, 2, fast));
        let msg = r.expect_err("the foreign await must be caught");
        let msg = msg
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| msg.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        assert!(
            msg.contains("not a Platform operation"),
            "fast {fast}: {msg}"
        );
    }
}
