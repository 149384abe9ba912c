//! The machine model behind the Platform seam: memory operations of simulated tasks reach the
//! caches and media, cost simulated time, deliver machine checks to the task, and conflict (for
//! the explorer) exactly when they touch the same cache lines.

use sim_core::machine::{CrashOptions, Machine, MachineConfig, MemError};
use sim_core::sim::{ExploreConfig, Sim, SimConfig, Strategy, explore};
use sim_core::{PmemPlatform, Spawner};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

const A: u64 = 0x1000;
const B: u64 = 0x2000;

fn machine() -> Machine {
    let mut cfg = MachineConfig::default();
    cfg.set("pmem", "1MiB").unwrap();
    cfg.set("cpus", "2").unwrap();
    Machine::new(cfg).unwrap()
}

fn u64_at(cp: &sim_core::machine::CrashPoint, img: &sim_core::machine::CrashImage, a: u64) -> u64 {
    let mut b = [0u8; 8];
    cp.read(img, a, &mut b).unwrap();
    u64::from_le_bytes(b)
}

#[test]
fn a_task_persists_through_the_seam_and_the_crash_images_follow_px86() {
    let mut sim = Sim::new(SimConfig::default());
    sim.set_machine(machine());
    let p = sim.platform();
    sim.spawn("writer", move || async move {
        p.pmem_store(A, &1u64.to_le_bytes()).await.unwrap();
        p.clwb(A).await.unwrap();
        p.sfence().await.unwrap();
        p.pmem_store(B, &1u64.to_le_bytes()).await.unwrap();
    });
    let end = sim.run(|_, en| en[0]);
    assert_eq!(end, sim_core::sim::RunEnd::Done);
    assert!(sim.now_ns() > 100, "memory latency advanced simulated time");
    let outcomes: BTreeSet<(u64, u64)> = sim
        .with_machine(|m| {
            let cp = m.crash_point();
            cp.images(CrashOptions {
                k: 4,
                torn: false,
                dedup: true,
            })
            .map(|img| (u64_at(&cp, &img, A), u64_at(&cp, &img, B)))
            .collect()
        })
        .unwrap();
    // A was flushed and fenced before B was written: B can never persist without A.
    assert_eq!(outcomes, BTreeSet::from([(1, 0), (1, 1)]));
}

#[test]
fn a_poisoned_load_delivers_a_machine_check_to_the_task() {
    let seen = Arc::new(Mutex::new(None));
    let s2 = seen.clone();
    let mut sim = Sim::new(SimConfig::default());
    let mut m = machine();
    m.inject_poison(A + 64, 64).unwrap();
    sim.set_machine(m);
    let p = sim.platform();
    sim.spawn("reader", move || async move {
        let mut ok = [0u8; 64];
        p.pmem_load(A, &mut ok).await.unwrap();
        let mut buf = [0u8; 128];
        let r = p.pmem_load(A, &mut buf).await;
        *s2.lock().unwrap() = Some(r);
    });
    sim.run(|_, en| en[0]);
    match seen.lock().unwrap().take() {
        Some(Err(MemError::MachineCheck(mc))) => {
            assert_eq!(mc.addr, A + 64);
            assert_eq!(
                mc.bytes_copied, 64,
                "copy_mc semantics: the clean line was copied"
            );
        }
        other => panic!("expected a machine check, got {other:?}"),
    }
}

/// Two tasks each store once.
fn two_stores(a: u64, b: u64) -> impl Fn(&mut Sim) {
    move |sim: &mut Sim| {
        sim.set_machine(machine());
        for (name, addr, v) in [("t1", a, 1u64), ("t2", b, 2u64)] {
            let p = sim.platform();
            sim.spawn(name, move || async move {
                p.pmem_store(addr, &v.to_le_bytes()).await.unwrap();
            });
        }
    }
}

fn complete_runs(model: &dyn sim_core::sim::Model) -> u64 {
    let cfg = ExploreConfig {
        strategy: Strategy::Dfs {
            preemption_bound: None,
        },
        ..ExploreConfig::default()
    };
    let rep = explore(model, &cfg, &mut |_| {}).unwrap();
    assert!(rep.exhausted && rep.failure.is_none());
    rep.runs - rep.redundant_runs
}

#[test]
fn memory_operations_commute_only_on_disjoint_lines_sets_and_dimms() {
    // Two CPUs' stores conflict when they share a line, or the DIMM a store miss reads its
    // media unit from for ownership (the DIMM keeps the last unit read so, and its read
    // pipeline is busy after it: adjacent lines of one unit); on lines of different DIMMs
    // and sets they share nothing the footprints name (a big cache evicts nothing), so one
    // order suffices (see `sim` "Footprints"; the audit and the DFS-vs-DPOR comparisons in
    // soundness.rs check it).
    assert_eq!(complete_runs(&two_stores(A, A)), 2);
    assert_eq!(complete_runs(&two_stores(A, A + 56)), 2, "same line");
    assert_eq!(
        complete_runs(&two_stores(A, A + 64)),
        2,
        "adjacent lines, one media unit"
    );
    assert_eq!(complete_runs(&two_stores(A, B)), 1);
    // In a one-line cache each store evicts the other's line: the set is shared.
    let one_line = |sim: &mut Sim| {
        let mut cfg = MachineConfig::default();
        cfg.set("pmem", "1MiB").unwrap();
        cfg.set("cpus", "2").unwrap();
        cfg.set("cache", "64").unwrap();
        cfg.set("cache_ways", "1").unwrap();
        sim.set_machine(Machine::new(cfg).unwrap());
        for (name, addr) in [("t1", A), ("t2", B)] {
            let p = sim.platform();
            sim.spawn(name, move || async move {
                p.pmem_store(addr, &[1; 8]).await.unwrap();
            });
        }
    };
    assert_eq!(complete_runs(&one_line), 2, "one cache set");
}

#[test]
fn memory_operations_commute_with_lock_steps_on_other_cpus() {
    // A store on CPU 0 and a lock taken on CPU 1 touch nothing in common: one order suffices.
    let model = |sim: &mut Sim| {
        sim.set_machine(machine());
        let p = sim.platform();
        sim.spawn("store", move || async move {
            p.pmem_store(A, &1u64.to_le_bytes()).await.unwrap();
        });
        let m = Arc::new(sim_core::Mutex::new(&p, "m", ()));
        sim.spawn("lock", move || async move {
            let g = m.lock(&p).await;
            g.unlock().await;
        });
    };
    assert_eq!(complete_runs(&model), 1);
}

#[test]
fn a_wide_store_conflicts_with_every_line_it_covers() {
    let model = |sim: &mut Sim| {
        sim.set_machine(machine());
        let p = sim.platform();
        sim.spawn("wide", move || async move {
            p.pmem_store(A, &[7u8; 256]).await.unwrap();
        });
        let p = sim.platform();
        sim.spawn("narrow", move || async move {
            let mut b = [0u8; 8];
            p.pmem_load(A + 192, &mut b).await.unwrap();
        });
    };
    assert_eq!(complete_runs(&model), 2);
}
