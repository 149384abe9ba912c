//! Recorded machine accesses (`Sim::record_machine_ops`, `Sim::replay_machine_ops`): a phase
//! replayed from its recording is the phase run afresh, step for step, and a replay that asks
//! something else is caught.

use sim_core::machine::{Machine, MachineConfig};
use sim_core::platform::Op;
use sim_core::sim::{MachineMemo, RunEnd, Sim, SimConfig, ViolationKind};
use sim_core::{Platform, PmemPlatform, Spawner};
use std::sync::{Arc, Mutex};

fn machine() -> Machine {
    let mut cfg = MachineConfig::default();
    cfg.set("pmem", "1MiB").unwrap();
    cfg.set("cpus", "2").unwrap();
    // A tiny cache, so that the phase evicts lines (dirty ones written back).
    cfg.set("cache", "4096").unwrap();
    cfg.set("cache_ways", "2").unwrap();
    Machine::new(cfg).unwrap()
}

/// What a run showed: the phase's results, each step's footprint, the event-log hash, the
/// CPU clocks, the machine's counters and its bytes, pending lines and crash-point lines.
#[derive(Debug, PartialEq)]
struct Seen {
    results: Vec<String>,
    footprints: Vec<Vec<Op>>,
    hash: u64,
    steps: u64,
    clocks: Vec<u64>,
    stats: String,
    bytes: Vec<u8>,
    pending: usize,
}

/// Every kind of memory operation, by one task (the setup task of a trace runner is one task),
/// with `shift` moving one store elsewhere.
fn phase(sim: &mut Sim, out: Arc<Mutex<Vec<String>>>, shift: u64) {
    let p = sim.platform();
    sim.spawn("setup", move || async move {
        let mut r = Vec::new();
        for i in 0..24u64 {
            let a = i * 4096 + (i % 3) * 64;
            r.push(format!("{:?}", p.pmem_store(a, &[i as u8; 100]).await));
            if i % 4 == 0 {
                r.push(format!("{:?}", p.clwb(a).await));
            }
            if i % 5 == 0 {
                r.push(format!("{:?}", p.pmem_ntstore(a + 2048, &[7; 256]).await));
            }
        }
        r.push(format!("{:?}", p.clflushopt(0).await));
        r.push(format!("{:?}", p.clflush(4096).await));
        r.push(format!("{:?}", p.sfence().await));
        r.push(format!("{:?}", p.pmem_store(0x9000 + shift, &[9; 8]).await));
        r.push(format!("{:?}", p.pmem_inject_poison(0x20000, 64).await));
        let mut buf = vec![0u8; 4096];
        for a in [0u64, 4096 * 3, 0x1ff00, 0x20000 - 128] {
            let res = p.pmem_load(a, &mut buf).await;
            r.push(format!("{res:?} {:?}", &buf[..16]));
        }
        let res = p.pmem_load_nowait(8192, &mut buf[..512]).await;
        r.push(format!("{res:?} {:?}", &buf[..16]));
        r.push(format!("{:?}", p.mfence().await));
        r.push(format!("{}", p.now_ns()));
        out.lock().unwrap().extend(r);
    });
}

/// Two tasks after the phase, interleaved, on the machine the phase left.
fn after(sim: &mut Sim, out: Arc<Mutex<Vec<String>>>) {
    for t in 0..2u64 {
        let (p, out) = (sim.platform(), out.clone());
        sim.spawn(&format!("t{t}"), move || async move {
            let mut buf = [0u8; 64];
            for i in 0..6u64 {
                let a = (t * 6 + i) * 4096;
                let res = p.pmem_load(a, &mut buf).await;
                out.lock()
                    .unwrap()
                    .push(format!("t{t} {res:?} {:?}", &buf[..8]));
                p.pmem_store(a + 64, &[t as u8 + 1; 64]).await.unwrap();
                p.clwb(a + 64).await.unwrap();
            }
            p.sfence().await.unwrap();
        });
    }
}

enum Mode {
    Afresh,
    Record,
    Replay(Arc<MachineMemo>),
}

fn run(mode: Mode, shift: u64) -> (Seen, Option<MachineMemo>, RunEnd) {
    let mut sim = Sim::new(SimConfig::default());
    match mode {
        Mode::Afresh => sim.set_machine(machine()),
        Mode::Record => {
            sim.set_machine(machine());
            sim.record_machine_ops();
        }
        Mode::Replay(m) => sim.replay_machine_ops(m),
    }
    let out = Arc::new(Mutex::new(Vec::new()));
    phase(&mut sim, out.clone(), shift);
    let mut footprints = Vec::new();
    let mut end = sim.run_steps(|sim, en| {
        footprints.push(sim.last_footprint().to_vec());
        Some(en[0])
    });
    let memo = sim.finish_machine_ops();
    if end == RunEnd::Done {
        after(&mut sim, out.clone());
        let mut i = 0usize;
        end = sim.run_steps(|sim, en| {
            footprints.push(sim.last_footprint().to_vec());
            i += 1;
            Some(en[i % en.len()])
        });
    }
    let mut bytes = vec![0u8; 0x30000];
    sim.with_machine(|m| {
        let _ = m.peek(0, &mut bytes[..0x20000]);
        let _ = m.peek(0x20040, &mut bytes[0x20040..]);
    });
    let seen = Seen {
        results: out.lock().unwrap().clone(),
        footprints,
        hash: sim.hash(),
        steps: sim.steps(),
        clocks: (0..2).map(|c| sim.cpu_clock(c)).collect(),
        stats: format!("{:?}", sim.with_machine(|m| m.stats())),
        bytes,
        pending: sim
            .with_machine(|m| m.crash_point().pending_lines().len())
            .unwrap(),
    };
    (seen, memo, end)
}

#[test]
fn a_phase_replayed_from_its_recording_is_the_phase_run_afresh() {
    let (afresh, none, end) = run(Mode::Afresh, 0);
    assert!(none.is_none());
    assert_eq!(end, RunEnd::Done);
    // The phase made machine checks and evictions, so the answers are not all alike.
    assert!(afresh.results.iter().any(|r| r.contains("MachineCheck")));
    let (recorded, memo, _) = run(Mode::Record, 0);
    let memo = Arc::new(memo.expect("a recording returns its operations"));
    assert!(memo.len() >= 46, "{} operations recorded", memo.len());
    assert_eq!(recorded, afresh);
    for _ in 0..2 {
        let (replayed, none, end) = run(Mode::Replay(memo.clone()), 0);
        assert!(none.is_none());
        assert_eq!(end, RunEnd::Done);
        assert_eq!(replayed, afresh);
    }
}

#[test]
fn a_replay_that_asks_something_else_is_a_model_panic() {
    let (_, memo, _) = run(Mode::Record, 0);
    let memo = Arc::new(memo.unwrap());
    let (_, _, end) = run(Mode::Replay(memo), 64);
    match end {
        RunEnd::Violation(v) => {
            assert_eq!(v.kind, ViolationKind::ModelPanic);
            assert!(v.message.contains("differs from the recorded one"), "{v}");
        }
        other => panic!("the diverging replay ended {other:?}"),
    }
}
