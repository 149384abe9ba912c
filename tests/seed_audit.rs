//! The commutation audit (`sim::audit`) over the seed traces: every pair of steps the
//! explorer's dependence relation calls independent, at random points of random runs, reaches
//! the same state in both orders. The traces run the DAX core through daxfs, whose xa_lock
//! sections are atomic (`sim` "Atomic sections"): a step that goes on into the holder's next
//! step must still commute with every step its footprint says it commutes with.

use sim_core::sim::audit::{AuditConfig, audit};

/// The trace at `path`, without its `bug` lines when `clean`.
fn model(path: &str, clean: bool) -> pmsim::trace_model::TraceModel {
    let src = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let src: String = src
        .lines()
        .filter(|l| !(clean && l.starts_with("bug ")))
        .map(|l| format!("{l}\n"))
        .collect();
    let opts = sim_core::trace::ParseOptions {
        known_bugs: Some(sim_mm::bugs::bug_names()),
    };
    let t = sim_core::trace::parse(&src, path, &opts).unwrap();
    pmsim::trace_model::load(t, &[], false).unwrap_or_else(|_| panic!("{path} is refused"))
}

#[test]
fn independent_steps_of_the_seed_traces_commute() {
    let seeds = [
        "traces/seeds/000-mf-vs-entry-locks.trace",
        "traces/seeds/001-pmd-missed-wakeup.trace",
        "traces/seeds/002-fault-vs-truncate.trace",
        "traces/seeds/003-shadow-entries.trace",
        "traces/seeds/004-reflink-page-mapping.trace",
    ];
    let mut independent = 0;
    for path in seeds {
        for clean in [false, true] {
            let rep = audit(
                &model(path, clean),
                &AuditConfig {
                    runs: 12,
                    pairs_per_run: 6,
                    ..AuditConfig::default()
                },
            );
            println!("{path} (clean {clean}): {rep}");
            assert!(rep.failures.is_empty(), "{path} (clean {clean}): {rep}");
            independent += rep.independent;
        }
    }
    assert!(independent > 50, "only {independent} independent pairs");
}
