//! Every run of a trace starts from the same state, however many runs the runner did before:
//! the runner builds the formatted device once (`TraceRunner::new`) and each run recovers a
//! fresh machine from it (copy-on-write pmem, a sparse cache allocated as it is used). A run's
//! event log must therefore not depend on the runs before it: run A then B on one runner gives
//! B the log that B alone gives on a runner just built.

use sim_core::sim::explore::logged_run;
use sim_core::sim::{ExploreConfig, Strategy};

fn model(path: &str) -> pmsim::trace_model::TraceModel {
    let src = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let opts = sim_core::trace::ParseOptions {
        known_bugs: Some(sim_mm::bugs::bug_names()),
    };
    let t = sim_core::trace::parse(&src, path, &opts).unwrap();
    pmsim::trace_model::load(t, &[], false).unwrap_or_else(|_| panic!("{path} is refused"))
}

fn cfg(seed: u64) -> ExploreConfig {
    ExploreConfig {
        strategy: Strategy::Random,
        seed,
        ..ExploreConfig::default()
    }
}

/// (hash, events) of one random run with `seed`.
fn run(m: &pmsim::trace_model::TraceModel, seed: u64) -> (u64, usize) {
    let r = logged_run(m, &cfg(seed)).unwrap();
    (r.log.hash, r.log.events.len())
}

#[test]
fn a_run_is_the_same_after_other_runs_of_the_same_runner() {
    for path in [
        "traces/seeds/000-mf-vs-entry-locks.trace",
        "traces/seeds/002-fault-vs-truncate.trace",
        "traces/fs/punch_during_faults.trace",
    ] {
        for (a, b) in [(1u64, 2u64), (7, 3)] {
            let fresh_b = run(&model(path), b);
            let fresh_a = run(&model(path), a);
            let reused = model(path);
            let then_a = run(&reused, a);
            let then_b = run(&reused, b);
            let again_a = run(&reused, a);
            assert_eq!(then_a, fresh_a, "{path}: seed {a} first on the runner");
            assert_eq!(then_b, fresh_b, "{path}: seed {b} after seed {a}");
            assert_eq!(again_a, fresh_a, "{path}: seed {a} after seeds {a} and {b}");
            // The seeds give different schedules, so the comparison could tell them apart.
            assert!(fresh_a.1 > 0 && fresh_b.1 > 0, "{path}: empty logs");
        }
    }
}
