//! The built-in DAX models (`pmsim explore --model NAME`): each finds the failure its mode
//! causes, and is clean with the mode off under dfs at the model's bound, whole space explored.

use sim_core::sim::{ExploreConfig, Strategy, explore};
use sim_mm::dax::models::{MODELS, build, model, model_for, reaches};
use sim_mm::dax::{BugSet, DaxBug};

fn dfs(bound: Option<u32>) -> ExploreConfig {
    ExploreConfig {
        strategy: Strategy::Dfs {
            preemption_bound: bound,
        },
        ..ExploreConfig::default()
    }
}

#[test]
fn each_model_finds_its_mode_and_is_clean_without_it() {
    for m in &MODELS {
        let off = explore(&build(m, BugSet::NONE), &dfs(m.bound), &mut |_| {}).unwrap();
        assert!(
            off.failure.is_none(),
            "{}: {}",
            m.name,
            off.failure.as_ref().unwrap().violation
        );
        assert!(off.exhausted, "{}: the whole space", m.name);
        let on = explore(
            &build(m, BugSet::of(&[m.shows])),
            &dfs(m.bound),
            &mut |_| {},
        )
        .unwrap();
        let f = on
            .failure
            .unwrap_or_else(|| panic!("{}: nothing found in {} runs", m.name, on.runs));
        assert!(
            f.violation.kind.name().starts_with(m.finds),
            "{}: expected {}, got {}",
            m.name,
            m.finds,
            f.violation
        );
        // The report names the path of each task that has not finished: the DAX functions
        // of a sleeper, the final check of the task that found the damage.
        let paths: Vec<String> = f.violation.tasks.iter().map(|t| t.path_text()).collect();
        // (A WARN raised on the way names its path in the message.)
        let want = if m.finds == "lost-wakeup" || f.violation.message.starts_with("WARN") {
            " > dax_iomap_"
        } else {
            "final check"
        };
        assert!(
            paths.iter().any(|p| p.contains(want)) || f.violation.message.contains(want),
            "{}: {want} in {paths:?}: {}",
            m.name,
            f.violation
        );
        eprintln!(
            "{}: off {} runs clean; {} on: run {} of {}",
            m.name, off.runs, m.shows, f.run, on.runs
        );
    }
}

#[test]
fn the_catalogue_and_the_models_agree() {
    for m in &MODELS {
        assert_eq!(model(m.name).map(|x| x.name), Some(m.name));
        assert_eq!(model_for(m.shows).map(|x| x.name), Some(m.name));
        assert!(reaches(m.shows));
    }
    assert!(model("seed-001").is_some_and(|m| m.shows == DaxBug::PmdMissedWakeup));
    assert!(!reaches(DaxBug::InvalidateWakeNext));
    assert!(!reaches(DaxBug::LockEntryExclusiveWait));
}

#[test]
fn independent_steps_of_the_models_commute() {
    // The commutation audit over the models, call paths included in the observed task state:
    // entering and leaving functions is task-local, so no independent pair may differ.
    use sim_core::sim::audit::{AuditConfig, audit};
    let cfg = AuditConfig {
        runs: 6,
        pairs_per_run: 3,
        ..AuditConfig::default()
    };
    let mut independent = 0;
    for m in &MODELS {
        for bugs in [BugSet::NONE, BugSet::of(&[m.shows])] {
            let rep = audit(&build(m, bugs), &cfg);
            assert!(rep.failures.is_empty(), "{}: {rep}", m.name);
            independent += rep.independent;
        }
    }
    eprintln!("{independent} independent pairs audited");
    assert!(independent > 0);
}
