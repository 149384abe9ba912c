//! The commutation audit over the toys and the machine litmus programs run through the seam:
//! no pair of steps the explorer treats as independent fails to commute; and an unsound
//! relation or state outside the seam is caught.

use sim_core::platform::{
    Mutex, Op, OpKind, Platform, PmemPlatform, Spawner, SpinLock, footprints_depend,
};
use sim_core::sim::audit::{AuditConfig, announced_ops_only, audit};
use sim_core::sim::{Model, Sim};
use sim_core::{machine::Machine, machine::MachineConfig, toys};
use std::sync::Arc;

fn clean(name: &str, model: &dyn Model, cfg: &AuditConfig) -> u64 {
    let rep = audit(model, cfg);
    println!("{name}: {rep}");
    assert!(rep.failures.is_empty(), "{name}: {rep}");
    assert!(rep.pairs > 0, "{name}: no pair examined");
    rep.independent
}

#[test]
fn the_toys_commute() {
    let mut independent = 0;
    for name in toys::TOYS.into_iter().chain(toys::TOYS_MAIN) {
        let model = move |sim: &mut Sim| {
            let p = sim.platform();
            assert!(toys::build(name, &p, sim));
        };
        independent += clean(name, &model, &AuditConfig::default());
    }
    assert!(
        independent > 20,
        "only {independent} independent pairs audited"
    );
}

const A: u64 = 0x1000;
const B: u64 = 0x2000;
const C: u64 = 0x3000;

fn machine(settings: &[(&str, &str)]) -> Machine {
    let mut cfg = MachineConfig::default();
    cfg.set("pmem", "1MiB").unwrap();
    for (k, v) in settings {
        cfg.set(k, v).unwrap();
    }
    Machine::new(cfg).unwrap()
}

/// The litmus programs of tests/litmus.rs as tasks through the seam: a writer persisting A
/// then B (store, clwb, sfence), a non-temporal writer of C, a reader of A and B, and a task
/// taking a lock and yielding, over machines with shared and separate CPUs, a tiny cache
/// (evictions), eADR and AMD clflush.
fn litmus(settings: &'static [(&'static str, &'static str)]) -> impl Fn(&mut Sim) {
    move |sim: &mut Sim| {
        sim.set_machine(machine(settings));
        let p = sim.platform();
        let l = Arc::new(Mutex::new(&p, "L", 0u64));
        let (l1, l2) = (l.clone(), l.clone());
        sim.spawn("persist", move || async move {
            p.pmem_store(A, &1u64.to_le_bytes()).await.unwrap();
            p.clwb(A).await.unwrap();
            p.sfence().await.unwrap();
            p.pmem_store(B, &1u64.to_le_bytes()).await.unwrap();
            p.clflush(B).await.unwrap();
            let mut g = l1.lock(&p).await;
            *g += 1;
            g.unlock().await;
        });
        sim.spawn("nt", move || async move {
            p.pmem_ntstore(C, &2u64.to_le_bytes()).await.unwrap();
            p.yield_point("between").await;
            p.mfence().await.unwrap();
            p.clflushopt(A).await.unwrap();
        });
        sim.spawn("reader", move || async move {
            let mut b = [0u8; 8];
            p.pmem_load(B, &mut b).await.unwrap();
            let g = l2.lock(&p).await;
            p.yield_point("holding L").await;
            drop(g);
            p.pmem_load(A, &mut b).await.unwrap();
            p.sleep_ns(100).await;
            let _ = p.now_ns();
        });
        sim.spawn("locker", move || async move {
            p.yield_point("start").await;
            let g = l.lock(&p).await;
            g.unlock().await;
            p.sleep_ns(10).await;
        });
    }
}

#[test]
fn the_litmus_programs_through_the_seam_commute() {
    let machines: [&'static [(&str, &str)]; 5] = [
        &[("cpus", "4")],
        &[("cpus", "1")],
        &[("cpus", "2"), ("cache", "128"), ("cache_ways", "1")],
        &[("cpus", "2"), ("persist", "eadr")],
        &[("cpus", "3"), ("vendor", "amd")],
    ];
    let mut independent = 0;
    for m in machines {
        independent += clean(
            &format!("litmus {m:?}"),
            &litmus(m),
            &AuditConfig::default(),
        );
    }
    assert!(
        independent > 50,
        "only {independent} independent pairs audited"
    );
}

/// Two stores to different lines that share the one line of the cache, which holds A dirty
/// when they start: in one order the store to A hits and the store to B evicts A once, in the
/// other each store evicts the other line (a capacity eviction no longer changes the crash
/// images, see `Machine::evict_victim`, but it still shows in the machine's counters).
fn cache_pair(sim: &mut Sim) {
    sim.set_machine(machine(&[
        ("cache", "64"),
        ("cache_ways", "1"),
        ("cpus", "2"),
    ]));
    sim.with_machine(|m| m.store(0, 0, A, &2u64.to_le_bytes()).unwrap());
    for addr in [A, B] {
        let p = sim.platform();
        sim.spawn("store", move || async move {
            p.pmem_store(addr, &1u64.to_le_bytes()).await.unwrap();
        });
    }
}

#[test]
fn the_audit_catches_line_only_independence_of_memory_operations() {
    // The relation before footprints: stores to different lines were independent.
    let cfg = AuditConfig {
        depend: announced_ops_only,
        runs: 10,
        ..AuditConfig::default()
    };
    let rep = audit(&cache_pair, &cfg);
    assert!(!rep.failures.is_empty(), "{rep}");
    println!("{}", rep.failures[0]);
    // The explorer's relation: the stores are dependent, nothing to report.
    let rep = audit(&cache_pair, &AuditConfig::default());
    assert!(rep.failures.is_empty() && rep.independent == 0, "{rep}");
}

#[test]
fn the_audit_catches_a_release_missing_from_a_footprint() {
    // t2's yield step releases L (a dropped guard); with announced ops only, it looks
    // independent of t1's try_lock.
    let model = |sim: &mut Sim| {
        let p = sim.platform();
        let l = Arc::new(Mutex::new(&p, "L", ()));
        let l2 = l.clone();
        sim.spawn("t1", move || async move {
            p.yield_point("first").await;
            let got = l.try_lock(&p).await;
            drop(got);
        });
        sim.spawn("t2", move || async move {
            let _g = l2.lock(&p).await;
            p.yield_point("holding L").await;
        });
    };
    let cfg = AuditConfig {
        depend: announced_ops_only,
        runs: 40,
        ..AuditConfig::default()
    };
    let rep = audit(&model, &cfg);
    assert!(!rep.failures.is_empty(), "{rep}");
    println!("{}", rep.failures[0]);
    clean(
        "guard drop",
        &model,
        &AuditConfig {
            runs: 40,
            ..AuditConfig::default()
        },
    );
}

#[test]
fn the_audit_catches_state_shared_outside_the_seam() {
    // Two tasks append to a list behind the scheduler's back (a std mutex: a bug in a model),
    // and the second task's next step depends on the order.
    let model = |sim: &mut Sim| {
        let p = sim.platform();
        let hidden = Arc::new(std::sync::Mutex::new(Vec::<u32>::new()));
        let l = Arc::new(Mutex::new(&p, "L", ()));
        for id in 0..2u32 {
            let (hidden, l) = (hidden.clone(), l.clone());
            sim.spawn("t", move || async move {
                p.yield_point("append").await;
                hidden.lock().unwrap().push(id);
                p.yield_point("look").await;
                if hidden.lock().unwrap()[0] == id {
                    let g = l.lock(&p).await;
                    g.unlock().await;
                }
            });
        }
    };
    let rep = audit(&model, &AuditConfig::default());
    assert!(!rep.failures.is_empty(), "{rep}");
    println!("{}", rep.failures[0]);
}

#[test]
fn objects_created_by_two_steps_make_them_dependent() {
    // Each task creates a lock at run time and takes it: the ids follow creation order.
    let model = |sim: &mut Sim| {
        for name in ["t1", "t2"] {
            let p = sim.platform();
            sim.spawn(name, move || async move {
                p.yield_point("start").await;
                let m = Mutex::new(&p, "runtime", ());
                p.yield_point("created").await;
                let g = m.lock(&p).await;
                g.unlock().await;
            });
        }
    };
    clean("runtime objects", &model, &AuditConfig::default());
    fn without_alloc(a: &[sim_core::Op], b: &[sim_core::Op]) -> bool {
        let keep = |f: &[sim_core::Op]| -> Vec<sim_core::Op> {
            f.iter()
                .copied()
                .filter(|o| o.obj != sim_core::Op::ALLOC)
                .collect()
        };
        sim_core::platform::footprints_depend(&keep(a), &keep(b))
    }
    let rep = audit(
        &model,
        &AuditConfig {
            depend: without_alloc,
            ..AuditConfig::default()
        },
    );
    assert!(!rep.failures.is_empty(), "{rep}");
    println!("{}", rep.failures[0]);
}

/// Read-only critical sections, a writer keeping `&mut` to the data across a scheduling point,
/// and a lockless reader; every reader names the value it saw in its next step, so a wrong
/// order shows in the observed state.
fn sections(sim: &mut Sim) {
    let p = sim.platform();
    let l = Arc::new(SpinLock::new(&p, "L", 0u32));
    for _ in 0..2 {
        let l = l.clone();
        sim.spawn("reader", move || async move {
            let g = l.lock(&p).await;
            let v = *g;
            drop(g);
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
        p.yield_point(if v == 0 { "ll saw 0" } else { "ll saw 1" })
            .await;
    });
}

/// The explorer's relation without the writes of lock data (`Platform::lock_data_mut` and the
/// holder's steps after it): unsound.
fn without_lock_data_writes(a: &[Op], b: &[Op]) -> bool {
    let keep = |f: &[Op]| -> Vec<Op> {
        f.iter()
            .copied()
            .filter(|o| !(o.kind == OpKind::Write && o.obj.0 < Op::MEM_BASE))
            .collect()
    };
    footprints_depend(&keep(a), &keep(b))
}

#[test]
fn read_only_critical_sections_commute_and_writes_of_lock_data_matter() {
    let cfg = AuditConfig {
        runs: 120,
        ..AuditConfig::default()
    };
    let independent = clean("read-only sections", &sections, &cfg);
    assert!(independent > 20, "only {independent} independent pairs");
    let rep = audit(
        &sections,
        &AuditConfig {
            depend: without_lock_data_writes,
            ..cfg
        },
    );
    assert!(!rep.failures.is_empty(), "{rep}");
    println!("{}", rep.failures[0]);
}
