//! Reductions of the exhaustive search side by side: the one place that runs unbounded DFS
//! plainly, with sleep sets and with source-set DPOR, and checks that each reduction reaches
//! exactly what the unreduced search reaches. Every independence the engine relies on
//! (footprints, lock parts, rwsem readers) is proven on small models through
//! [`compare_reductions`] (sim-core/tests/{soundness,parts,dpor}.rs, sim-mm/tests/xa_parts.rs).

use super::explore::{ExploreConfig, ExploreError, Model, Strategy, explore_observed};
use super::{RunEnd, Sim};
use std::collections::BTreeSet;
use std::fmt::Debug;

/// How much an exhaustive DFS prunes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    /// Every interleaving.
    Plain,
    /// Sleep sets: a run that only reorders independent steps of an explored one is cut short.
    SleepSets,
    /// Sleep sets with source-set DPOR backtracking.
    Dpor,
}

impl Reduction {
    /// Unbounded DFS with this reduction, going on past violations.
    pub fn config(self) -> ExploreConfig {
        ExploreConfig {
            strategy: Strategy::Dfs {
                preemption_bound: None,
            },
            sleep_sets: self != Reduction::Plain,
            dpor: self == Reduction::Dpor,
            keep_going: true,
            ..ExploreConfig::default()
        }
    }
}

/// What one exhaustive search reached.
#[derive(Clone, Debug)]
pub struct Exhaustive<O> {
    /// The final states `observe` made of the complete runs.
    pub outcomes: BTreeSet<O>,
    /// Complete runs (not cut short by sleep sets).
    pub runs: u64,
    /// All runs, those cut short included.
    pub all_runs: u64,
    pub exhausted: bool,
}

/// Unbounded DFS of `model` with `reduction`, each complete run mapped by `observe` to a final
/// state.
pub fn exhaustive<O: Ord>(
    model: &dyn Model,
    reduction: Reduction,
    observe: &mut dyn FnMut(&Sim, &RunEnd) -> O,
) -> Result<Exhaustive<O>, ExploreError> {
    let mut outcomes = BTreeSet::new();
    let rep = explore_observed(model, &reduction.config(), &mut |_| {}, &mut |sim, end| {
        outcomes.insert(observe(sim, end));
    })?;
    Ok(Exhaustive {
        outcomes,
        runs: rep.runs - rep.redundant_runs,
        all_runs: rep.runs,
        exhausted: rep.exhausted,
    })
}

/// The three searches of one model.
#[derive(Clone, Debug)]
pub struct Comparison<O> {
    pub plain: Exhaustive<O>,
    pub sleep_sets: Exhaustive<O>,
    pub dpor: Exhaustive<O>,
}

impl<O> Comparison<O> {
    /// `plain DFS N runs, sleep sets N, DPOR N`.
    pub fn runs(&self) -> String {
        format!(
            "plain DFS {} runs, sleep sets {}, DPOR {}",
            self.plain.runs, self.sleep_sets.runs, self.dpor.runs
        )
    }
}

/// Runs the three searches and checks what soundness requires: each exhausts the space, sleep
/// sets and DPOR reach exactly the final states plain DFS reaches, and each reduction completes
/// no more runs than the search it refines. `Err` names the first requirement broken and an
/// outcome that differs.
pub fn compare_reductions<O: Ord + Debug>(
    model: &dyn Model,
    observe: &mut dyn FnMut(&Sim, &RunEnd) -> O,
) -> Result<Comparison<O>, String> {
    let mut search =
        |r: Reduction| exhaustive(model, r, observe).map_err(|e| format!("{r:?}: {}", e.0));
    let c = Comparison {
        plain: search(Reduction::Plain)?,
        sleep_sets: search(Reduction::SleepSets)?,
        dpor: search(Reduction::Dpor)?,
    };
    for (r, e) in [
        (Reduction::Plain, &c.plain),
        (Reduction::SleepSets, &c.sleep_sets),
        (Reduction::Dpor, &c.dpor),
    ] {
        if !e.exhausted {
            return Err(format!("{r:?} did not exhaust the space ({})", c.runs()));
        }
        if let Some(o) = c.plain.outcomes.symmetric_difference(&e.outcomes).next() {
            let lost = c.plain.outcomes.contains(o);
            return Err(format!(
                "{r:?} {} an outcome plain DFS {} ({}): {o:?}",
                if lost { "lost" } else { "reached" },
                if lost { "reaches" } else { "never reaches" },
                c.runs()
            ));
        }
    }
    if c.sleep_sets.runs > c.plain.runs || c.dpor.runs > c.sleep_sets.runs {
        return Err(format!("a reduction completed more runs ({})", c.runs()));
    }
    Ok(c)
}
