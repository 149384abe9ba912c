//! Throughput of the machine model on one core (wall-clock, not simulated time):
//! simulated pmem operations per second (mixed load/store/clwb/fence), through the seam (four
//! simulated tasks on four CPUs, the path a run takes) and on the bare `Machine`, each CPU with
//! its own clock (`sim` "Time"); and crash images built per second (k = 2 over 16 pending
//! lines). Run with `cargo bench -p sim-core --bench machine`.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sim_core::machine::{CrashOptions, Machine, MachineConfig};
use sim_core::sim::{RunEnd, Sim, SimConfig};
use sim_core::{Platform, PmemPlatform, Spawner};
use std::hint::black_box;
use std::time::Instant;

#[derive(Clone, Copy)]
enum Op {
    Load(usize, u64),
    Store(usize, u64),
    NtStore(usize, u64),
    Clwb(usize, u64),
    Sfence(usize),
}

const N: usize = 2_000_000;
const CPUS: usize = 4;

fn workload() -> Vec<Op> {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    // 4 CPUs over a 1 MiB working set: 45% loads, 30% stores, 5% non-temporal stores,
    // 12% clwb, 8% sfence.
    (0..N)
        .map(|i| {
            let cpu = i % CPUS;
            let addr = rng.random_range(0..(1u64 << 20) / 8) * 8;
            match rng.random_range(0..100) {
                0..45 => Op::Load(cpu, addr),
                45..75 => Op::Store(cpu, addr),
                75..80 => Op::NtStore(cpu, addr),
                80..92 => Op::Clwb(cpu, addr),
                _ => Op::Sfence(cpu),
            }
        })
        .collect()
}

/// The bare machine: each CPU's clock advances by its own operations' latency.
fn ops_per_second_bare(ops: &[Op]) -> f64 {
    let mut m = Machine::new(MachineConfig::default()).expect("default machine");
    let mut now = [0u64; CPUS];
    let mut buf = [0u8; 8];
    let start = Instant::now();
    for op in ops {
        let (c, r) = match *op {
            Op::Load(c, a) => (c, m.load(now[c], c, a, &mut buf)),
            Op::Store(c, a) => (c, m.store(now[c], c, a, &now[c].to_le_bytes())),
            Op::NtStore(c, a) => (c, m.ntstore(now[c], c, a, &now[c].to_le_bytes())),
            Op::Clwb(c, a) => (c, m.clwb(now[c], c, a)),
            Op::Sfence(c) => (c, m.sfence(now[c], c)),
        };
        now[c] += r.expect("in range");
    }
    let secs = start.elapsed().as_secs_f64();
    black_box(&m);
    ops.len() as f64 / secs
}

/// Through the seam: task `c` runs CPU `c`'s operations; the scheduler takes the tasks in turn.
fn ops_per_second_seam(ops: &[Op]) -> f64 {
    let mut sim = Sim::new(SimConfig {
        step_limit: u64::MAX,
        ..SimConfig::default()
    });
    sim.set_machine(Machine::new(MachineConfig::default()).expect("default machine"));
    for cpu in 0..CPUS {
        let mine: Vec<Op> = ops
            .iter()
            .copied()
            .filter(|op| match *op {
                Op::Load(c, _) | Op::Store(c, _) | Op::NtStore(c, _) | Op::Clwb(c, _) => c == cpu,
                Op::Sfence(c) => c == cpu,
            })
            .collect();
        let p = sim.platform();
        sim.spawn(&format!("cpu{cpu}"), move || async move {
            let mut buf = [0u8; 8];
            for op in mine {
                let r = match op {
                    Op::Load(_, a) => p.pmem_load(a, &mut buf).await,
                    Op::Store(_, a) => p.pmem_store(a, &p.now_ns().to_le_bytes()).await,
                    Op::NtStore(_, a) => p.pmem_ntstore(a, &p.now_ns().to_le_bytes()).await,
                    Op::Clwb(_, a) => p.clwb(a).await,
                    Op::Sfence(_) => p.sfence().await,
                };
                r.expect("in range");
            }
        });
    }
    let start = Instant::now();
    let end = sim.run(|sim, en| en[sim.steps() as usize % en.len()]);
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(end, RunEnd::Done);
    black_box(&sim);
    ops.len() as f64 / secs
}

/// Images per second at k = 2 over 16 pending lines with `stores` stores each; with
/// `materialize`, each image is also turned into a copy-on-write pmem image.
fn images_per_second(stores: usize, materialize: bool) -> (f64, usize) {
    let mut m = Machine::new(MachineConfig::default()).expect("default machine");
    for s in 0..stores {
        for line in 0..16u64 {
            m.store(
                0,
                0,
                0x10_0000 + line * 4096 + s as u64 * 8,
                &[s as u8 + 1; 8],
            )
            .expect("in range");
        }
    }
    let opts = CrashOptions {
        k: 2,
        ..CrashOptions::default()
    };
    let start = Instant::now();
    let mut images = 0;
    let mut per_point = 0;
    while start.elapsed().as_secs_f64() < 1.0 {
        let point = m.crash_point();
        per_point = 0;
        for img in point.images(opts) {
            if materialize {
                black_box(point.materialize(&img));
            }
            black_box(&img);
            per_point += 1;
        }
        images += per_point;
    }
    (images as f64 / start.elapsed().as_secs_f64(), per_point)
}

/// Executor cost alone: the same number of steps, each a yield (no machine access).
fn yields_per_second() -> f64 {
    let mut sim = Sim::new(SimConfig {
        step_limit: u64::MAX,
        ..SimConfig::default()
    });
    for cpu in 0..CPUS {
        let p = sim.platform();
        sim.spawn(&format!("cpu{cpu}"), move || async move {
            for _ in 0..N / CPUS {
                p.yield_point("step").await;
            }
        });
    }
    let start = Instant::now();
    let end = sim.run(|sim, en| en[sim.steps() as usize % en.len()]);
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(end, RunEnd::Done);
    N as f64 / secs
}

fn main() {
    let steps = yields_per_second();
    println!("executor steps (yields, 4 tasks), no machine:              {steps:>12.0} steps/s");
    let ops = workload();
    let seam = ops_per_second_seam(&ops);
    let bare = ops_per_second_bare(&ops);
    println!(
        "pmem operations (load/store/ntstore/clwb/sfence mix), through the seam: {seam:>12.0} ops/s"
    );
    println!("pmem operations, same mix on the bare machine:             {bare:>12.0} ops/s");
    for (stores, materialize) in [(1, false), (3, false), (1, true)] {
        let (rate, per_point) = images_per_second(stores, materialize);
        println!(
            "crash images, k=2, 16 lines x {stores} store(s){}: {rate:>12.0} images/s ({per_point} per crash point)",
            if materialize { ", materialized" } else { "" }
        );
    }
}
