//! Sleep sets never lose an outcome: for small models covering each way two steps can interact
//! (locks released by dropped guards, rwsems, fences on shared and separate CPUs, the cache's
//! replacement state, clocks read by `sleep` and `now`), plain exhaustive DFS and DFS with sleep
//! sets reach the same set of final outcomes (how the run ended, what the tasks saw, the crash
//! images, the data, the steps taken and the time reached).

use sim_core::machine::{CrashOptions, Machine, MachineConfig};
use sim_core::platform::{Mutex, Op, Platform, PmemPlatform, Spawner, bug_on, footprints_depend};
use sim_core::sim::reduction::compare_reductions;
use sim_core::sim::{Model, RunEnd, Sim};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::Arc;

const A: u64 = 0x1000;
const B: u64 = 0x2000;

thread_local! {
    static NOTES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// What a task saw, in the order the tasks saw it.
fn note(s: impl Into<String>) {
    NOTES.with(|n| n.borrow_mut().push(s.into()));
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Outcome {
    end: String,
    notes: Vec<String>,
    steps: u64,
    now_ns: u64,
    /// The (A, B) values of every crash image of the final state.
    images: BTreeSet<Vec<u64>>,
    /// (A, B) as loads see them.
    data: Vec<u64>,
}

fn machine(settings: &[(&str, &str)]) -> Machine {
    let mut cfg = MachineConfig::default();
    cfg.set("pmem", "1MiB").unwrap();
    for (k, v) in settings {
        cfg.set(k, v).unwrap();
    }
    Machine::new(cfg).unwrap()
}

fn u64_of(b: [u8; 8]) -> u64 {
    u64::from_le_bytes(b)
}

fn outcome(sim: &Sim, end: &RunEnd) -> Outcome {
    let end = end.name();
    let (images, data) = sim
        .with_machine(|m| {
            let cp = m.crash_point();
            let opts = CrashOptions {
                k: usize::MAX,
                torn: false,
                dedup: true,
            };
            let images = cp
                .images(opts)
                .map(|img| {
                    [A, B]
                        .iter()
                        .map(|&a| {
                            let mut b = [0u8; 8];
                            cp.read(&img, a, &mut b).unwrap();
                            u64_of(b)
                        })
                        .collect()
                })
                .collect();
            let data = [A, B]
                .iter()
                .map(|&a| {
                    let mut b = [0u8; 8];
                    m.peek(a, &mut b).unwrap();
                    u64_of(b)
                })
                .collect();
            (images, data)
        })
        .unwrap_or_default();
    Outcome {
        end,
        // As a multiset: the order of two tasks' notes is not an outcome (the notes are
        // outside the seam); an order that matters is noted from data under a lock.
        notes: {
            let mut v = NOTES.with(|n| n.borrow().clone());
            v.sort();
            v
        },
        steps: sim.steps(),
        now_ns: sim.now_ns(),
        images,
        data,
    }
}

/// Plain DFS, DFS with sleep sets and DFS with source-set DPOR reach the same outcomes
/// (`compare_reductions`); returns them.
fn same_outcomes(model: &dyn Model) -> BTreeSet<Outcome> {
    let c = compare_reductions(model, &mut outcome).unwrap_or_else(|e| panic!("{e}"));
    println!("{} outcomes: {}", c.plain.outcomes.len(), c.runs());
    c.plain.outcomes
}

/// A model: clears the notes of the previous run, then builds.
fn model(build: impl Fn(&mut Sim)) -> impl Fn(&mut Sim) {
    move |sim: &mut Sim| {
        NOTES.with(|n| n.borrow_mut().clear());
        build(sim)
    }
}

#[test]
fn a_lock_released_by_a_dropped_guard_wakes_the_sleepers_it_concerns() {
    // t2's yield step also releases L (its guard is dropped after the yield). A sleep set that
    // knew t2 only by its announced yield kept it asleep across t1's try_lock and never ran the
    // order in which the try_lock fails.
    let m = model(|sim| {
        let p = sim.platform();
        let l = Arc::new(Mutex::new(&p, "L", ()));
        let l2 = l.clone();
        sim.spawn("t1", move || async move {
            let got = l.try_lock(&p).await;
            note(format!("try_lock {}", got.is_some()));
        });
        sim.spawn("t2", move || async move {
            let _g = l2.lock(&p).await;
            p.yield_point("holding L").await;
        });
    });
    let all = same_outcomes(&m);
    assert!(all.iter().any(|o| o.notes == ["try_lock false"]));
    assert!(all.iter().any(|o| o.notes == ["try_lock true"]));
}

#[test]
fn a_bug_after_a_failed_try_lock_is_found_with_sleep_sets() {
    // t1 fails its try_lock while t2 holds L; the BUG fires in t2 once it has dropped L.
    let m = model(|sim| {
        let p = sim.platform();
        let l = Arc::new(Mutex::new(&p, "L", ()));
        let failed = Arc::new(Mutex::new(&p, "failed", false));
        let (l2, f2) = (l.clone(), failed.clone());
        sim.spawn("t1", move || async move {
            let got = l.try_lock(&p).await;
            let mut f = failed.lock(&p).await;
            *f = got.is_none();
            f.unlock().await;
        });
        sim.spawn("t2", move || async move {
            {
                let _g = l2.lock(&p).await;
                p.yield_point("holding L").await;
            }
            let f = f2.lock(&p).await;
            let failed = *f;
            f.unlock().await;
            bug_on(&p, failed, "trylock-failed", || "t1 found L busy".into()).await;
        });
    });
    let all = same_outcomes(&m);
    assert!(
        all.iter().any(|o| o.end == "assertion:trylock-failed"),
        "{all:#?}"
    );
}

#[test]
fn rwsem_outcomes_with_guard_drops_and_queued_writers() {
    let m = model(|sim| {
        let p = sim.platform();
        let sem = Arc::new(sim_core::RwSem::new(&p, "i_rwsem", 0u32));
        for name in ["r1", "r2"] {
            let sem = sem.clone();
            sim.spawn(name, move || async move {
                let g = sem.read(&p).await;
                note(format!("{name} saw {}", *g));
                p.yield_point("reading").await;
                // The guard drops here: up_read is part of the yield's step.
            });
        }
        sim.spawn("w", move || async move {
            let mut g = sem.write(&p).await;
            *g += 1;
            note("w wrote");
            g.unlock().await;
        });
    });
    let all = same_outcomes(&m);
    // Readers before and after the writer, and the writer queued or not (one step more).
    let steps: BTreeSet<u64> = all.iter().map(|o| o.steps).collect();
    assert!(steps.len() >= 2, "{all:#?}");
    assert!(
        all.iter()
            .any(|o| o.notes.contains(&"r1 saw 0".to_string()))
    );
    assert!(
        all.iter()
            .any(|o| o.notes.contains(&"r1 saw 1".to_string()))
    );
}

#[test]
fn stores_to_lines_that_share_a_cache_set_give_the_same_crash_images_in_either_order() {
    // One cache line: t2's store evicts t1's line, or the other way round. A capacity
    // eviction does not make a line durable for crash images (the image set must not depend
    // on the cache's replacement state, which the order of independent steps decides), so
    // both orders allow every combination.
    let m = model(|sim| {
        sim.set_machine(machine(&[
            ("cache", "64"),
            ("cache_ways", "1"),
            ("cpus", "2"),
        ]));
        for (name, addr) in [("t1", A), ("t2", B)] {
            let p = sim.platform();
            sim.spawn(name, move || async move {
                p.pmem_store(addr, &1u64.to_le_bytes()).await.unwrap();
            });
        }
    });
    // Both orders (DFS runs them both) end in one and the same outcome.
    let all = same_outcomes(&m);
    assert_eq!(all.len(), 1, "{all:#?}");
    let sets: BTreeSet<_> = all.iter().map(|o| o.images.clone()).collect();
    let v = |rows: &[[u64; 2]]| rows.iter().map(|r| r.to_vec()).collect::<BTreeSet<_>>();
    assert_eq!(
        sets,
        BTreeSet::from([v(&[[0, 0], [1, 0], [0, 1], [1, 1]])]),
        "{sets:?}"
    );
}

/// t1 stores A and writes it back; t2 fences. On one CPU the fence may complete t1's clwb.
fn flush_and_fence(cpus: &'static str) -> impl Fn(&mut Sim) {
    model(move |sim| {
        sim.set_machine(machine(&[("cpus", cpus)]));
        let p = sim.platform();
        sim.spawn("t1", move || async move {
            p.pmem_store(A, &1u64.to_le_bytes()).await.unwrap();
            p.clwb(A).await.unwrap();
        });
        sim.spawn("t2", move || async move {
            p.sfence().await.unwrap();
        });
    })
}

#[test]
fn a_fence_drains_the_flushes_of_its_cpu_shared_by_two_tasks() {
    let all = same_outcomes(&flush_and_fence("1"));
    let sets: BTreeSet<_> = all.iter().map(|o| o.images.clone()).collect();
    let v = |rows: &[[u64; 2]]| rows.iter().map(|r| r.to_vec()).collect::<BTreeSet<_>>();
    assert!(
        sets.contains(&v(&[[1, 0]])),
        "fenced after the clwb: {sets:?}"
    );
    assert!(
        sets.contains(&v(&[[0, 0], [1, 0]])),
        "fenced before: {sets:?}"
    );
}

#[test]
fn a_fence_on_another_cpu_leaves_the_flush_pending() {
    let all = same_outcomes(&flush_and_fence("2"));
    let sets: BTreeSet<_> = all.iter().map(|o| o.images.clone()).collect();
    assert_eq!(sets.len(), 1, "{sets:?}");
}

/// t1 loads (media latency moves its CPU's clock and its own); t2 yields, sleeps 50 ns,
/// notes the time it woke at, loads a line that t1 does not touch and notes the time again.
fn latency_and_sleep(cpus: &'static str) -> impl Fn(&mut Sim) {
    model(move |sim| {
        sim.set_machine(machine(&[("cpus", cpus)]));
        let p = sim.platform();
        sim.spawn("t1", move || async move {
            let mut b = [0u8; 8];
            p.pmem_load(A, &mut b).await.unwrap();
        });
        sim.spawn("t2", move || async move {
            p.yield_point("before the sleep").await;
            p.sleep_ns(50).await;
            note(format!("woke at {}", p.now_ns()));
            let mut b = [0u8; 8];
            p.pmem_load(B, &mut b).await.unwrap();
            note(format!("loaded by {}", p.now_ns()));
        });
    })
}

/// The time a task reads is its own: a sleep moves it by exactly its length whatever the other
/// task on the CPU did, and only the task's memory operation, which waits for its CPU, sees
/// the other task's latency.
#[test]
fn time_read_after_a_memory_op_depends_on_latency_of_the_same_cpu() {
    let all = same_outcomes(&latency_and_sleep("1"));
    let notes: BTreeSet<_> = all.iter().map(|o| o.notes.clone()).collect();
    assert!(
        notes.len() >= 2,
        "the load starts before or after the stores: {notes:?}"
    );
    for n in &notes {
        assert!(n.contains(&"woke at 50".to_string()), "{n:?}");
    }
}

#[test]
fn time_on_another_cpu_is_not_moved_by_latency() {
    let all = same_outcomes(&latency_and_sleep("2"));
    let woke: BTreeSet<_> = all.iter().map(|o| o.notes.clone()).collect();
    assert_eq!(woke.len(), 1, "{woke:?}");
    assert!(woke.first().unwrap().contains(&"woke at 50".to_string()));
}

/// Three tasks on two CPUs (t0 and t2 share CPU 0), as a trace with three threads on
/// `cpus=2`: t0 stores and then takes L; t2 takes L, notes the time and the list, then stores
/// and notes the time; t1 (CPU 1) loads and takes L. The steps that take no time read only
/// their own task's clock, so t2's lock steps commute with t0's stores: every reduction still
/// reaches every final state (the times noted and the lock orders), with fewer runs.
#[test]
fn steps_that_take_no_time_commute_with_memory_ops_of_the_same_cpu() {
    let m = model(|sim| {
        sim.set_machine(machine(&[("cpus", "2")]));
        let p = sim.platform();
        let l = Arc::new(Mutex::new(&p, "L", Vec::<&str>::new()));
        let (l1, l2) = (l.clone(), l.clone());
        sim.spawn("t0", move || async move {
            p.pmem_store(A, &1u64.to_le_bytes()).await.unwrap();
            p.pmem_store(A + 64, &2u64.to_le_bytes()).await.unwrap();
            let mut g = l.lock(&p).await;
            g.push("t0");
            g.unlock().await;
            note(format!("t0 at {}", p.now_ns()));
        });
        sim.spawn("t1", move || async move {
            let mut b = [0u8; 8];
            p.pmem_load(B, &mut b).await.unwrap();
            let mut g = l1.lock(&p).await;
            g.push("t1");
            g.unlock().await;
            note(format!("t1 at {}", p.now_ns()));
        });
        sim.spawn("t2", move || async move {
            let mut g = l2.lock(&p).await;
            g.push("t2");
            note(format!("t2 saw {:?} at {}", *g, p.now_ns()));
            g.unlock().await;
            p.pmem_store(B + 64, &3u64.to_le_bytes()).await.unwrap();
            note(format!("t2 stored by {}", p.now_ns()));
        });
    });
    // The audit found the missing DIMM in a store's footprint (read for ownership) here.
    use sim_core::sim::audit::{AuditConfig, audit};
    let r = audit(
        &m,
        &AuditConfig {
            runs: 300,
            ..AuditConfig::default()
        },
    );
    assert!(r.failures.is_empty(), "{r}");
    let all = same_outcomes(&m);
    let times: BTreeSet<_> = all
        .iter()
        .flat_map(|o| o.notes.iter().filter(|n| n.starts_with("t2 stored")))
        .collect();
    assert!(
        times.len() >= 2,
        "t2's store waits for t0's stores on CPU 0 or not: {times:?}"
    );
    let seen: BTreeSet<_> = all
        .iter()
        .flat_map(|o| o.notes.iter().filter(|n| n.starts_with("t2 saw")))
        .collect();
    assert!(
        seen.len() >= 3,
        "t2 takes L first, second or last: {seen:?}"
    );
}

#[test]
fn a_lock_order_after_a_sleep_is_not_lost() {
    // t2 sleeps, then takes L; t1 stores (moving the clock), then takes L. Both lock orders.
    let m = model(|sim| {
        sim.set_machine(machine(&[("cpus", "1")]));
        let p = sim.platform();
        let l = Arc::new(Mutex::new(&p, "L", Vec::<&str>::new()));
        let l2 = l.clone();
        sim.spawn("t1", move || async move {
            p.pmem_store(A, &1u64.to_le_bytes()).await.unwrap();
            let mut g = l.lock(&p).await;
            g.push("t1");
            note(format!("{:?}", *g));
            g.unlock().await;
        });
        sim.spawn("t2", move || async move {
            p.yield_point("before the sleep").await;
            p.sleep_ns(1).await;
            let mut g = l2.lock(&p).await;
            g.push("t2");
            note(format!("{:?}", *g));
            g.unlock().await;
        });
    });
    let all = same_outcomes(&m);
    let orders: BTreeSet<_> = all.iter().map(|o| o.notes.clone()).collect();
    assert_eq!(orders.len(), 2, "{orders:?}");
}

#[test]
fn random_draws_of_two_tasks_commute() {
    // Each task draws from its own stream: the values do not depend on the order.
    let m = model(|sim| {
        let p = sim.platform();
        for name in ["t1", "t2"] {
            sim.spawn(name, move || async move {
                p.yield_point("draw").await;
                note(format!("{name} {}", p.random_u64() % 1000));
            });
        }
    });
    let all = same_outcomes(&m);
    let mut values: BTreeSet<String> = BTreeSet::new();
    for o in &all {
        values.extend(o.notes.iter().cloned());
    }
    assert_eq!(
        values.len(),
        2,
        "one value per task whatever the order: {values:?}"
    );
}

#[test]
fn the_audit_finds_every_model_here_commuting() {
    use sim_core::sim::audit::{AuditConfig, audit};
    let models: Vec<(&str, Box<dyn Model>)> = vec![
        ("fences on one cpu", Box::new(flush_and_fence("1"))),
        ("fences on two cpus", Box::new(flush_and_fence("2"))),
        (
            "latency and sleep, one cpu",
            Box::new(latency_and_sleep("1")),
        ),
        (
            "latency and sleep, two cpus",
            Box::new(latency_and_sleep("2")),
        ),
    ];
    for (name, m) in &models {
        let rep = audit(m.as_ref(), &AuditConfig::default());
        assert!(rep.failures.is_empty(), "{name}: {rep}");
        assert!(rep.pairs > 0, "{name}");
    }
}

/// A main task spawning two workers that take a lock, then joining them and reading what they
/// left; the shape of the shuttle and loom toys.
fn spawn_and_join(join: bool) -> impl Fn(&mut Sim) {
    model(move |sim| {
        let p = sim.platform();
        sim.spawn("main", move || async move {
            let l = Arc::new(Mutex::new(&p, "L", Vec::<u32>::new()));
            let mut hs = Vec::new();
            for id in 1..=2u32 {
                let l = l.clone();
                let h = sim_core::platform::spawn(&p, &format!("w{id}"), move || async move {
                    let mut g = l.lock(&p).await;
                    g.push(id);
                    g.unlock().await;
                })
                .await;
                hs.push(h);
            }
            if join {
                for h in hs {
                    h.join(&p).await;
                }
            }
            let g = l.lock(&p).await;
            note(format!("main saw {:?}", *g));
            g.unlock().await;
        });
    })
}

#[test]
fn a_join_waits_for_the_child_and_sleep_sets_keep_every_outcome() {
    let joined = same_outcomes(&spawn_and_join(true));
    let seen: BTreeSet<_> = joined.iter().map(|o| o.notes.clone()).collect();
    // After both joins main sees both writes, in either order, and nothing else.
    assert_eq!(
        seen,
        BTreeSet::from([
            vec!["main saw [1, 2]".to_string()],
            vec!["main saw [2, 1]".to_string()]
        ])
    );
    // Without the joins main may run first: the join is what orders it.
    let free = same_outcomes(&spawn_and_join(false));
    assert!(free.iter().any(|o| o.notes == ["main saw []"]));
}

#[test]
fn the_main_shaped_toys_lose_no_outcome_to_sleep_sets() {
    for name in [
        "abba-main",
        "abba-fixed-main",
        "lost-wakeup-main",
        "lost-wakeup-correct-main",
    ] {
        let m = model(move |sim| {
            let p = sim.platform();
            assert!(sim_core::toys::build(name, &p, sim));
        });
        let all = same_outcomes(&m);
        println!("{name}: {} outcomes", all.len());
    }
}

/// A holder changes the two words a lock protects in two steps; a lockless reader
/// (`read_once`) must be able to see the state between them.
#[test]
fn a_lockless_read_sees_each_step_of_the_holder_and_sleep_sets_keep_it() {
    let m = model(|sim| {
        let p = sim.platform();
        let l = Arc::new(sim_core::platform::SpinLock::new(&p, "ptl", (0u32, 0u32)));
        let l2 = l.clone();
        sim.spawn("holder", move || async move {
            let mut g = l.lock(&p).await;
            g.0 = 1;
            p.yield_point("between the two stores").await;
            g.1 = 1;
            g.unlock().await;
        });
        sim.spawn("reader", move || async move {
            let v = l2.read_once(&p, |v| *v).await;
            note(format!("{v:?}"));
        });
    });
    let seen: BTreeSet<_> = same_outcomes(&m).into_iter().map(|o| o.notes).collect();
    let expect: BTreeSet<Vec<String>> = ["(0, 0)", "(1, 0)", "(1, 1)"]
        .iter()
        .map(|s| vec![s.to_string()])
        .collect();
    assert_eq!(seen, expect);
}

/// One memory operation of a program in [`mem_pair`].
#[derive(Clone, Copy, Debug)]
enum MemOp {
    Store(u64),
    Load(u64),
    NtStore(u64),
    Clwb(u64),
    Sfence,
}

/// Two tasks, each running its program of memory operations on machine `settings` (task `i`
/// on CPU `i % cpus`); loads note what they saw and, with `time`, each task notes its clock
/// at the end (so latencies are an outcome too).
fn mem_pair(
    settings: &'static [(&'static str, &'static str)],
    progs: [&'static [MemOp]; 2],
    time: bool,
) -> impl Fn(&mut Sim) {
    model(move |sim| {
        sim.set_machine(machine(settings));
        for (i, prog) in progs.into_iter().enumerate() {
            let p = sim.platform();
            sim.spawn(&format!("t{i}"), move || async move {
                for &op in prog {
                    match op {
                        MemOp::Store(a) => p.pmem_store(a, &(i as u64 + 1).to_le_bytes()).await,
                        MemOp::NtStore(a) => p.pmem_ntstore(a, &(i as u64 + 7).to_le_bytes()).await,
                        MemOp::Load(a) => {
                            let mut b = [0u8; 8];
                            let r = p.pmem_load(a, &mut b).await;
                            note(format!("t{i} loaded {a:#x}: {}", u64_of(b)));
                            r
                        }
                        MemOp::Clwb(a) => p.clwb(a).await,
                        MemOp::Sfence => p.sfence().await,
                    }
                    .unwrap();
                }
                if time {
                    note(format!("t{i} at {} ns", p.now_ns()));
                }
            });
        }
    })
}

use MemOp::*;

/// 0x1000 and 0x2000 are on DIMMs 1 and 2 of the 6-way optane-like interleave and in
/// different sets of the default cache; 0x7000 shares DIMM 1 with 0x1000 (0x7000 / 4096 = 7,
/// 7 % 6 = 1).
const SAME_DIMM_AS_A: u64 = 0x7000;

/// The machine configurations the pairs run on: the default (big cache, 6 DIMMs, tail events
/// possible), two CPUs sharing a tiny one-set cache, no cache at all, eADR with AMD clflush.
const PAIR_MACHINES: [&[(&str, &str)]; 4] = [
    &[("cpus", "2")],
    &[("cpus", "2"), ("cache", "128"), ("cache_ways", "2")],
    &[("cpus", "2"), ("cache", "0")],
    &[("cpus", "2"), ("persist", "eadr"), ("vendor", "amd")],
];

/// The pairs of programs, each a way two memory operations of two CPUs can meet: different
/// lines in different sets and DIMMs, the same line, the same DIMM (its queues and
/// pipelines), and a fence draining a flush while the other CPU writes the flushed line.
const PAIRS: [(&str, [&[MemOp]; 2]); 6] = [
    (
        "different lines, sets and DIMMs",
        [&[Store(A), Clwb(A), Sfence], &[Store(B), Load(B), Clwb(B)]],
    ),
    (
        "the same line",
        [&[Store(A), Clwb(A)], &[Load(A), Store(A)]],
    ),
    (
        "the same DIMM",
        [
            &[Load(A), Store(A), Clwb(A)],
            &[Load(SAME_DIMM_AS_A), NtStore(SAME_DIMM_AS_A), Sfence],
        ],
    ),
    (
        "a fence while the other CPU writes the flushed line",
        [&[Store(A), Clwb(A), Sfence], &[Store(A), Store(B)]],
    ),
    (
        "write-combining buffers on two CPUs",
        [
            &[NtStore(A), NtStore(B), Sfence],
            &[NtStore(B), Load(A), Sfence],
        ],
    ),
    (
        // A store's read for ownership uses the DIMM (its read pipeline, its last RFO unit)
        // that a load of another line of the same media unit uses: it was missing from the
        // store's footprint, and the load's latency depended on the order.
        "a read for ownership and a load of the same media unit",
        [&[Store(B + 64)], &[Load(B)]],
    ),
];

#[test]
fn memory_operations_of_two_cpus_lose_no_outcome_to_dpor() {
    let mut reduced = 0;
    for settings in PAIR_MACHINES {
        for (name, progs) in PAIRS {
            println!("{name} on {settings:?}:");
            let m = mem_pair(settings, progs, true);
            let c = compare_reductions(&m, &mut outcome)
                .unwrap_or_else(|e| panic!("{name} on {settings:?}: {e}"));
            println!("  {} outcomes, {}", c.plain.outcomes.len(), c.runs());
            let (plain_runs, dpor_runs) = (c.plain.runs, c.dpor.runs);
            reduced += u32::from(dpor_runs < plain_runs);
        }
    }
    // Memory operations of two CPUs on different lines, sets and DIMMs commute now: DPOR
    // prunes somewhere.
    assert!(reduced > 0, "DPOR pruned no memory pair");
}

#[test]
fn memory_operations_of_two_cpus_commute_when_their_footprints_say_so() {
    use sim_core::sim::audit::{AuditConfig, audit};
    let mut independent = 0;
    for settings in PAIR_MACHINES {
        for (name, progs) in PAIRS {
            let rep = audit(
                &mem_pair(settings, progs, false),
                &AuditConfig {
                    runs: 30,
                    ..AuditConfig::default()
                },
            );
            assert!(rep.failures.is_empty(), "{name} on {settings:?}: {rep}");
            assert!(rep.pairs > 0, "{name} on {settings:?}");
            independent += rep.independent;
        }
    }
    assert!(
        independent > 40,
        "only {independent} independent pairs audited"
    );
}

/// The explorer's relation with the entries in `ids` left out of both footprints.
fn depend_without(a: &[Op], b: &[Op], ids: std::ops::Range<u32>) -> bool {
    let keep = |f: &[Op]| -> Vec<Op> {
        f.iter()
            .copied()
            .filter(|o| !ids.contains(&o.obj.0))
            .collect()
    };
    footprints_depend(&keep(a), &keep(b))
}

fn without_dimms(a: &[Op], b: &[Op]) -> bool {
    depend_without(a, b, Op::DIMM_BASE..Op::DIMM_END)
}

fn without_cache_sets(a: &[Op], b: &[Op]) -> bool {
    depend_without(a, b, Op::SET_BASE..Op::SET_END)
}

#[test]
fn the_audit_catches_footprints_without_dimms_or_cache_sets() {
    use sim_core::sim::audit::{AuditConfig, audit};
    // Misses of two CPUs on one DIMM: its read pipeline serves them in the order they come,
    // so the latencies (the CPU clocks) depend on the order.
    let same_dimm = mem_pair(PAIR_MACHINES[0], PAIRS[2].1, false);
    // Two CPUs sharing a one-line cache: each fill evicts the other's clean line (no
    // write-back, so no line or DIMM in common), and t0's second load hits or misses.
    let one_set = mem_pair(
        &[("cpus", "2"), ("cache", "64"), ("cache_ways", "1")],
        [&[Load(A), Load(A)], &[Load(B)]],
        false,
    );
    for (name, m, depend) in [
        (
            "same DIMM without DIMMs",
            &same_dimm as &dyn Model,
            without_dimms as fn(&[Op], &[Op]) -> bool,
        ),
        ("one set without cache sets", &one_set, without_cache_sets),
    ] {
        let rep = audit(
            m,
            &AuditConfig {
                runs: 60,
                depend,
                ..AuditConfig::default()
            },
        );
        assert!(!rep.failures.is_empty(), "{name}: {rep}");
        println!("{name}: {}", rep.failures[0]);
    }
}

/// One-step rwsem sections: a write section that only reads (`down_write`, `Deref`,
/// `up_write`) and a read section fold into reads of the rwsem; a write section that changes the
/// data, and a reader that keeps the rwsem across a step, do not.
fn rwsem_sections() -> impl Fn(&mut Sim) {
    model(|sim| {
        let p = sim.platform();
        let sem = Arc::new(sim_core::RwSem::new(&p, "ilock", 0u32));
        for name in ["peek1", "peek2"] {
            let sem = sem.clone();
            sim.spawn(name, move || async move {
                let g = sem.write(&p).await;
                note(format!("{name} saw {}", *g));
                drop(g);
            });
        }
        let s = sem.clone();
        sim.spawn("reader", move || async move {
            let g = s.read(&p).await;
            note(format!("reader saw {}", *g));
            drop(g);
        });
        let s = sem.clone();
        sim.spawn("writer", move || async move {
            let mut g = s.write(&p).await;
            *g += 1;
            drop(g);
        });
        sim.spawn("holder", move || async move {
            let g = sem.read(&p).await;
            p.yield_point("holding").await;
            note(format!("holder saw {}", *g));
            drop(g);
        });
    })
}

#[test]
fn one_step_rwsem_sections_that_change_nothing_commute_and_lose_no_outcome() {
    use sim_core::sim::audit::{AuditConfig, audit};
    let all = same_outcomes(&rwsem_sections());
    // Each reader sees the writer's change in some orders only.
    for who in ["peek1", "reader", "holder"] {
        for v in [0, 1] {
            let n = format!("{who} saw {v}");
            assert!(all.iter().any(|o| o.notes.contains(&n)), "{n}: {all:#?}");
        }
    }
    // The folded sections are independent of each other, and they commute.
    let rep = audit(&rwsem_sections(), &AuditConfig::default());
    assert!(rep.failures.is_empty(), "{rep}");
    assert!(rep.independent > 0, "no independent pair: {rep}");
}

/// Wake-ups on one queue with waiters of two keys: a wake-up that reaches nobody (its key has
/// no waiter yet, or no longer) reads the queue; one that wakes a waiter changes it, so two
/// wake-ups of one key do not commute when one of them wakes.
/// - `b` checks its flag before queueing on key 1 (the lost-wakeup bug): when `wake_b` sets
///   the flag and wakes key 1 between the two, `b` sleeps forever.
/// - `c` queues on key 2, starts two wakers of that key and ends without sleeping: the first
///   wake-up takes its waiter off the queue, the second reaches nobody, and which waker is
///   first only a reversal of the two wake-ups shows.
fn keyed_wakeups() -> impl Fn(&mut Sim) {
    use sim_core::platform::{WaitKey, WaitQueue, WakeMode, spawn, wake_key_eq};
    model(|sim| {
        let p = sim.platform();
        let wq = Arc::new(WaitQueue::new(&p, "wq"));
        let flag = Arc::new(Mutex::new(&p, "flag", false));
        let (q, f) = (wq.clone(), flag.clone());
        sim.spawn("wake_b", move || async move {
            let mut g = f.lock(&p).await;
            *g = true;
            drop(g);
            let n = q.wake_up(&p, WaitKey(0, 1), WakeMode::All).await;
            note(format!("wake_b woke {n}"));
        });
        let q = wq.clone();
        sim.spawn("b", move || async move {
            let g = flag.lock(&p).await;
            let set = *g;
            drop(g);
            if set {
                note("b done early");
                return;
            }
            let w = q
                .prepare_to_wait(&p, WaitKey(0, 1), false, wake_key_eq)
                .await;
            q.schedule(&p, w).await;
            q.finish_wait(&p, w).await;
            note("b done");
        });
        sim.spawn("c", move || async move {
            // Queued and never dequeued: the first wake-up takes the waiter off the queue.
            wq.prepare_to_wait(&p, WaitKey(0, 2), false, wake_key_eq)
                .await;
            for name in ["c1", "c2"] {
                let q = wq.clone();
                spawn(&p, name, move || async move {
                    let n = q.wake_up(&p, WaitKey(0, 2), WakeMode::All).await;
                    note(format!("{name} woke {n}"));
                })
                .await;
            }
        });
    })
}

#[test]
fn wake_ups_that_reach_nobody_commute_and_lose_no_outcome() {
    use sim_core::sim::audit::{AuditConfig, audit};
    let all = same_outcomes(&keyed_wakeups());
    let ends: BTreeSet<&str> = all.iter().map(|o| o.end.as_str()).collect();
    assert!(ends.contains("done") && ends.len() > 1, "{ends:?}");
    for n in ["wake_b woke 0", "wake_b woke 1", "c1 woke 0", "c1 woke 1"] {
        assert!(
            all.iter().any(|o| o.notes.iter().any(|x| x == n)),
            "{n}: {all:#?}"
        );
    }
    let rep = audit(&keyed_wakeups(), &AuditConfig::default());
    assert!(rep.failures.is_empty(), "{rep}");
    assert!(rep.independent > 0, "no independent pair: {rep}");
}
