//! The executor's fast path (`sim_core::sim` "Fast path") on the full stack: every valid
//! shipped trace (every directory of traces/ but malformed), run with random choices through
//! `Sim::run` (fast path) and through `Sim::run_steps` (the executor loop at every step),
//! gives the same event log, hash, step count, choices, end, and at every choice the same
//! enabled tasks and footprint of the step before it. The setup task runs alone and the trace
//! threads take turns, so both kinds of stretches are covered.

use sim_core::sim::{ChoiceView, Model, Sim, SimConfig};
use std::path::Path;

fn one(
    model: &dyn Model,
    seed: u64,
    fast: bool,
) -> (
    String,
    sim_core::events::EventLog,
    Vec<u32>,
    Vec<ChoiceView>,
) {
    let mut sim = Sim::new(SimConfig {
        seed,
        step_limit: 100_000,
        record_log: true,
    });
    model.setup(&mut sim);
    let (end, seen) = sim.run_random_observed(seed, fast);
    (
        format!("{end:?}"),
        sim.event_log(),
        sim.choices().to_vec(),
        seen,
    )
}

#[test]
fn shipped_traces_agree_with_and_without_the_fast_path() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut traces = Vec::new();
    for dir in [
        "traces/seeds",
        "traces/bugs",
        "traces/mf",
        "traces/format",
        "traces/dax",
        "traces/fs",
        "traces/crash",
        "traces/xfstests",
    ] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "trace") {
                traces.push(p);
            }
        }
    }
    traces.sort();
    assert!(traces.len() >= 25, "{traces:?}");
    let opts = sim_core::trace::ParseOptions {
        known_bugs: Some(sim_mm::bugs::bug_names()),
    };
    let mut choices = 0;
    for path in &traces {
        let src = std::fs::read_to_string(path).unwrap();
        let trace = sim_core::trace::parse(&src, &path.display().to_string(), &opts).unwrap();
        let Ok(model) = pmsim::trace_model::load(trace, &[], false) else {
            panic!("{}: refused", path.display());
        };
        for seed in 0..4 {
            let stepwise = one(&model, seed, false);
            let fast = one(&model, seed, true);
            assert!(
                fast == stepwise,
                "{} seed {seed}: the fast path changed the run",
                path.display()
            );
            choices += fast.3.len();
        }
    }
    assert!(choices > 100, "{choices} choices");
}
