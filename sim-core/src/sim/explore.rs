//! Strategies and the exploration driver: many runs of one model, each a fresh [`Sim`].
//!
//! - `trace-order`: prefer the task whose current trace line comes first (then the lowest id).
//! - `random`: a uniformly random enabled task at every choice (ChaCha8, seeded per run).
//! - `pct`: probabilistic concurrency testing with bug depth `d` (Burckhardt et al. 2010).
//! - `dfs`: exhaustive stateless depth-first search; without a preemption bound it prunes with
//!   source-set DPOR and sleep sets (`dpor.rs`), with a bound it explores every schedule within
//!   the bound (a reduction together with a bound would lose bugs).
//! - `replay`: follow a schedule string.
//!
//! The manual strategy (the GUI's) is [`ManualSession`](super::ManualSession).

use super::{RunEnd, Schedule, Sim, SimConfig, Violation};
use crate::events::EventLog;
use crate::platform::{Op, TaskId, footprints_depend};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{Duration, Instant};

/// A model: builds its objects and spawns its tasks into a fresh simulation. Called once per run.
pub trait Model {
    fn setup(&self, sim: &mut Sim);
}

impl<F: Fn(&mut Sim)> Model for F {
    fn setup(&self, sim: &mut Sim) {
        self(sim)
    }
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Strategy {
    TraceOrder,
    Random,
    Pct { depth: u32 },
    Dfs { preemption_bound: Option<u32> },
    Replay(Schedule),
}

impl Strategy {
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::TraceOrder => "trace-order",
            Strategy::Random => "random",
            Strategy::Pct { .. } => "pct",
            Strategy::Dfs { .. } => "dfs",
            Strategy::Replay(_) => "replay",
        }
    }
}

#[derive(Clone, Debug)]
pub struct ExploreConfig {
    pub strategy: Strategy,
    pub seed: u64,
    /// At most this many runs (None: until exhausted for dfs, 1 for trace-order and replay,
    /// 1000 for random and pct).
    pub runs: Option<u64>,
    /// Stop after this much wall-clock time (it bounds the search, never a run's content).
    pub budget: Option<Duration>,
    pub step_limit: u64,
    /// Keep exploring after the first failure (counting failures).
    pub keep_going: bool,
    /// DFS: prune with sleep sets (on by default; off only to validate the pruning). They apply
    /// to unbounded DFS only: with a preemption bound, a branch that sleep sets prune may be
    /// equivalent only to a schedule with more preemptions than the bound allows, and a bug
    /// would be missed (Musuvathi and Qadeer, PLDI'07), so bounded DFS explores every schedule
    /// within the bound.
    pub sleep_sets: bool,
    /// Unbounded DFS with sleep sets: also explore only the branches source-set DPOR owes
    /// (`dpor.rs`; on by default). Off: every enabled task is a branch (sleep sets alone).
    /// Without sleep sets or with a preemption bound it has no effect (DPOR is unsound with a
    /// bound, for the same reason as sleep sets).
    pub dpor: bool,
}

impl Default for ExploreConfig {
    fn default() -> Self {
        ExploreConfig {
            strategy: Strategy::TraceOrder,
            seed: 0,
            runs: None,
            budget: None,
            step_limit: 1_000_000,
            keep_going: false,
            sleep_sets: true,
            dpor: true,
        }
    }
}

/// A failing run: what went wrong and how to get there again.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Failure {
    pub violation: Violation,
    pub schedule: Schedule,
    /// Which run (from 0) found it.
    pub run: u64,
    pub steps: u64,
    pub hash: u64,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ExploreReport {
    pub strategy: String,
    pub seed: u64,
    /// Runs executed (including redundant DFS runs cut short by sleep sets).
    pub runs: u64,
    /// DFS runs cut short because every enabled task was in the sleep set.
    pub redundant_runs: u64,
    /// DFS only: the whole (bounded) space was explored.
    pub exhausted: bool,
    /// Runs that ended in a violation.
    pub failed_runs: u64,
    /// The first failure found.
    pub failure: Option<Failure>,
    /// Event-log hash of the last complete run.
    pub last_hash: u64,
    /// Longest run, in steps.
    pub max_steps: u64,
    /// Steps (scheduling points) of every run, redundant DFS runs included.
    #[serde(default)]
    pub total_steps: u64,
    /// Whether the search stopped because of the budget or the run count rather than finishing.
    pub stopped_early: bool,
}

/// An error that stops exploration before it starts or mid-way (bad schedule).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ExploreError(pub String);

impl fmt::Display for ExploreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ExploreError {}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of run `i` of a search seeded with `seed`.
pub fn run_seed(seed: u64, i: u64, strategy: &Strategy) -> u64 {
    match strategy {
        // Exhaustive and trace-order searches vary the schedule only: the model's randomness is
        // the same in every run.
        Strategy::TraceOrder | Strategy::Dfs { .. } => seed,
        Strategy::Replay(s) => s.seed,
        Strategy::Random | Strategy::Pct { .. } => splitmix64(seed ^ splitmix64(i)),
    }
}

fn trace_order(sim: &Sim, en: &[TaskId]) -> TaskId {
    *en.iter()
        .min_by_key(|t| (sim.task_line(**t), t.0))
        .expect("choose is called with enabled tasks")
}

struct Pct {
    depth: u32,
    /// Number of choice points seen in the longest run so far (PCT's k).
    k: u64,
}

struct PctRun {
    prio: Vec<u64>,
    change_points: Vec<u64>,
    count: u64,
}

impl Pct {
    fn start(&self, rng: &mut ChaCha8Rng, tasks: usize) -> PctRun {
        // Distinct initial priorities depth..depth+n in random order.
        let mut prio: Vec<u64> = (0..tasks as u64).map(|i| i + self.depth as u64).collect();
        for i in (1..prio.len()).rev() {
            let j = rng.random_range(0..=i);
            prio.swap(i, j);
        }
        let mut change_points: Vec<u64> = (1..self.depth)
            .filter(|_| self.k > 0)
            .map(|_| rng.random_range(1..=self.k))
            .collect();
        change_points.sort_unstable();
        PctRun {
            prio,
            change_points,
            count: 0,
        }
    }
}

impl PctRun {
    /// Give the tasks spawned since the last choice (task ids `prio.len()..tasks`) distinct
    /// random initial priorities: each takes a random rank among the initial priorities
    /// (those at `depth` and above), the ones from that rank up move one up.
    fn grow(&mut self, rng: &mut ChaCha8Rng, depth: u32, tasks: usize) {
        while self.prio.len() < tasks {
            let initial = self.prio.iter().filter(|&&x| x >= depth as u64).count();
            let p = depth as u64 + rng.random_range(0..=initial) as u64;
            for x in &mut self.prio {
                if *x >= p {
                    *x += 1;
                }
            }
            self.prio.push(p);
        }
    }

    fn choose(&mut self, en: &[TaskId]) -> TaskId {
        self.count += 1;
        let best = |prio: &[u64]| {
            *en.iter()
                .max_by_key(|t| prio.get(t.0 as usize).copied().unwrap_or(0))
                .expect("choose is called with enabled tasks")
        };
        // At the i-th change point the task about to run drops to priority i, below every
        // initial priority.
        for (i, &cp) in self.change_points.iter().enumerate() {
            if cp == self.count {
                let t = best(&self.prio);
                self.prio[t.0 as usize] = i as u64;
            }
        }
        best(&self.prio)
    }
}

struct RunResult {
    end: RunEnd,
    schedule: Schedule,
    steps: u64,
    hash: u64,
    log: Option<EventLog>,
}

/// Called at the end of every complete run of a search with the run's simulation (the machine,
/// the tasks) and how it ended; runs abandoned as redundant are not complete.
pub type Observer<'a> = &'a mut dyn FnMut(&Sim, &RunEnd);

fn one_run(
    model: &dyn Model,
    seed: u64,
    step_limit: u64,
    record_log: bool,
    choose: &mut dyn FnMut(&Sim, &[TaskId]) -> TaskId,
    observe: Observer,
) -> RunResult {
    let mut sim = Sim::new(SimConfig {
        seed,
        step_limit,
        record_log,
    });
    model.setup(&mut sim);
    let end = sim.run(|s, en| choose(s, en));
    observe(&sim, &end);
    RunResult {
        end,
        schedule: Schedule {
            seed,
            choices: sim.choices().to_vec(),
        },
        steps: sim.steps(),
        hash: sim.hash(),
        log: record_log.then(|| sim.event_log()),
    }
}

/// Replays a schedule. Errors when a recorded choice names a task that cannot move (the
/// schedule does not belong to this model, or the model is nondeterministic).
fn replay_run(
    model: &dyn Model,
    sched: &Schedule,
    step_limit: u64,
    record_log: bool,
    observe: Observer,
) -> Result<RunResult, ExploreError> {
    let mut i = 0usize;
    let mut bad: Option<String> = None;
    let mut chooser = |sim: &Sim, en: &[TaskId]| {
        if bad.is_some() {
            return en[0];
        }
        match sched.choices.get(i) {
            Some(&c) => {
                i += 1;
                match en.iter().find(|t| t.0 == c) {
                    Some(&t) => t,
                    None => {
                        bad = Some(format!(
                            "the schedule diverges at choice {} (step {}): it names task {c}, \
                             but the tasks that can move are {:?}",
                            i,
                            sim.steps(),
                            en.iter().map(|t| t.0).collect::<Vec<_>>()
                        ));
                        en[0]
                    }
                }
            }
            None => trace_order(sim, en),
        }
    };
    let r = one_run(
        model,
        sched.seed,
        step_limit,
        record_log,
        &mut chooser,
        observe,
    );
    if let Some(b) = bad {
        return Err(ExploreError(b));
    }
    Ok(r)
}

/// A step's footprint: its announced op plus what it touched implicitly (its CPU's clock, the
/// machine, locks released by dropped guards, the kernel log).
type Footprint = Vec<Op>;

struct DfsNode {
    enabled: Vec<TaskId>,
    sleep_entry: Vec<(TaskId, Footprint)>,
    done: Vec<TaskId>,
    /// The footprint each explored task's step had from this node, recorded when it ran. A
    /// sleeping task is represented by this, not by its announced op: the announcement does
    /// not show what the step will release or touch on the way to its next announcement.
    footprints: Vec<(TaskId, Footprint)>,
    chosen: TaskId,
    prev: Option<TaskId>,
    preemptions: u32,
    /// DPOR: the tasks to explore from here (the first choice, then those races owe).
    backtrack: Vec<TaskId>,
}

impl DfsNode {
    fn preempts(&self, t: TaskId) -> bool {
        self.prev
            .is_some_and(|p| p != t && self.enabled.contains(&p))
    }

    fn record(&mut self, t: TaskId, fp: &[Op]) {
        if !self.footprints.iter().any(|(x, _)| *x == t) {
            self.footprints.push((t, fp.to_vec()));
        }
    }
}

struct Dfs {
    bound: Option<u32>,
    sleep_sets: bool,
    /// Source-set DPOR on top of sleep sets (unbounded only).
    dpor: bool,
    stack: Vec<DfsNode>,
    /// DPOR: the steps of the current run.
    events: Vec<super::dpor::Event>,
}

impl Dfs {
    fn within_bound(&self, preemptions: u32) -> bool {
        self.bound.is_none_or(|b| preemptions <= b)
    }

    /// One run following the stack's choices, extending it with default choices (continue the
    /// previous task, else the lowest id). With sleep sets, a task is not chosen while asleep;
    /// a run where every enabled task sleeps only repeats an explored one and is abandoned.
    fn run(&mut self, model: &dyn Model, seed: u64, step_limit: u64) -> (RunEnd, Sim) {
        let mut sim = Sim::new(SimConfig {
            seed,
            step_limit,
            record_log: false,
        });
        model.setup(&mut sim);
        let mut sleep: Vec<(TaskId, Footprint)> = Vec::new();
        let mut awake: Vec<TaskId> = Vec::new();
        let mut depth = 0usize;
        let mut prev: Option<TaskId> = None;
        // The node at which the last step was chosen, if it was a branching point.
        let mut last_node: Option<usize> = None;
        let mut preemptions = 0u32;
        self.events.clear();
        let dpor = self.dpor;
        let end = sim.run_steps(|sim, en| {
            // Wake the sleepers whose step depends on the step just taken.
            if let Some(last) = prev {
                let fp = sim.last_footprint();
                if dpor {
                    self.events.push(super::dpor::Event {
                        task: last.0,
                        fp: fp.to_vec(),
                        node: last_node,
                    });
                }
                if let Some(d) = last_node.take() {
                    self.stack[d].record(last, fp);
                }
                if !self.sleep_sets {
                    sleep.clear();
                }
                sleep.retain(|(t, s)| *t != last && !footprints_depend(s, fp));
            }
            awake.clear();
            awake.extend(en.iter().filter(|t| !sleep.iter().any(|(s, _)| s == *t)));
            let prev_enabled = prev.is_some_and(|p| en.contains(&p));
            let costs = |t: TaskId| (prev_enabled && prev != Some(t)) as u32;
            let chosen = if awake.len() <= 1 {
                // Nothing to branch on: the one awake task, or none.
                awake
                    .first()
                    .copied()
                    .filter(|&t| self.within_bound(preemptions + costs(t)))?
            } else if depth < self.stack.len() {
                let node = &self.stack[depth];
                sleep.clear();
                sleep.extend(node.sleep_entry.iter().cloned());
                for d in &node.done {
                    // An explored sibling sleeps with the footprint it had (every explored
                    // sibling ran from here in an earlier run, so it was recorded).
                    if *d != node.chosen
                        && let Some(e) = node.footprints.iter().find(|(t, _)| t == d)
                    {
                        sleep.push(e.clone());
                    }
                }
                last_node = Some(depth);
                depth += 1;
                node.chosen
            } else {
                let t = match prev {
                    Some(p) if prev_enabled && awake.contains(&p) => p,
                    _ => awake
                        .iter()
                        .copied()
                        .find(|&t| self.within_bound(preemptions + costs(t)))?,
                };
                self.stack.push(DfsNode {
                    enabled: en.to_vec(),
                    sleep_entry: sleep.clone(),
                    done: vec![t],
                    footprints: Vec::new(),
                    chosen: t,
                    prev,
                    preemptions,
                    backtrack: vec![t],
                });
                last_node = Some(depth);
                depth += 1;
                t
            };
            preemptions += costs(chosen);
            prev = Some(chosen);
            Some(chosen)
        });
        // The last step, unless the run was abandoned at a choice (which recorded it).
        if end != RunEnd::Abandoned
            && let Some(last) = prev
        {
            if dpor {
                self.events.push(super::dpor::Event {
                    task: last.0,
                    fp: sim.last_footprint().to_vec(),
                    node: last_node,
                });
            }
            if let Some(d) = last_node {
                self.stack[d].record(last, sim.last_footprint());
            }
        }
        if dpor {
            self.owe(&sim, &end);
        }
        (end, sim)
    }

    /// DPOR: add the backtrack points the run's races owe (`dpor.rs`).
    fn owe(&mut self, sim: &Sim, end: &RunEnd) {
        let tasks = sim.task_count();
        // A run cut short by a violation leaves steps not taken.
        let pending: Vec<u32> = match end {
            RunEnd::Violation(_) => (0..tasks as u32)
                .filter(|&t| sim.next_op(TaskId(t)).kind != crate::platform::OpKind::Exit)
                .collect(),
            _ => Vec::new(),
        };
        let events = std::mem::take(&mut self.events);
        super::dpor::analyse(&mut StackTree(&mut self.stack), &events, tasks, &pending);
        self.events = events;
    }
}

/// The DFS stack as the race analysis sees it.
struct StackTree<'a>(&'a mut Vec<DfsNode>);

impl super::dpor::Tree for StackTree<'_> {
    fn covered(&self, node: usize, task: u32) -> bool {
        let n = &self.0[node];
        n.backtrack.contains(&TaskId(task)) || n.sleep_entry.iter().any(|(s, _)| s.0 == task)
    }

    fn enabled(&self, node: usize, task: u32) -> bool {
        self.0[node].enabled.contains(&TaskId(task))
    }

    fn add(&mut self, node: usize, task: u32) {
        self.0[node].backtrack.push(TaskId(task));
    }
}

impl Dfs {
    /// Move to the next unexplored branch; false when the search space is exhausted.
    fn backtrack(&mut self) -> bool {
        while let Some(node) = self.stack.last_mut() {
            let candidates = if self.dpor {
                &node.backtrack
            } else {
                &node.enabled
            };
            let next = candidates.iter().copied().find(|t| {
                !node.done.contains(t)
                    && !node.sleep_entry.iter().any(|(s, _)| s == t)
                    && self
                        .bound
                        .is_none_or(|b| node.preemptions + node.preempts(*t) as u32 <= b)
            });
            match next {
                Some(t) => {
                    node.done.push(t);
                    node.chosen = t;
                    return true;
                }
                None => {
                    self.stack.pop();
                }
            }
        }
        false
    }
}

/// Progress of a long search, for progress bars.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub runs: u64,
    pub failed_runs: u64,
    pub target_runs: Option<u64>,
}

/// Explore `model` with the configured strategy.
pub fn explore(
    model: &dyn Model,
    cfg: &ExploreConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<ExploreReport, ExploreError> {
    explore_observed(model, cfg, progress, &mut |_, _| {})
}

/// [`explore`], calling `observe` at the end of every complete run (to collect final states:
/// crash images, data, outcomes).
pub fn explore_observed(
    model: &dyn Model,
    cfg: &ExploreConfig,
    progress: &mut dyn FnMut(Progress),
    observe: Observer,
) -> Result<ExploreReport, ExploreError> {
    let started = Instant::now();
    let default_runs = match cfg.strategy {
        Strategy::TraceOrder | Strategy::Replay(_) => Some(1),
        Strategy::Random | Strategy::Pct { .. } => Some(1000),
        Strategy::Dfs { .. } => None,
    };
    let target = cfg.runs.or(default_runs);
    let mut rep = ExploreReport {
        strategy: cfg.strategy.name().to_string(),
        seed: cfg.seed,
        runs: 0,
        redundant_runs: 0,
        exhausted: false,
        failed_runs: 0,
        failure: None,
        last_hash: 0,
        max_steps: 0,
        total_steps: 0,
        stopped_early: false,
    };
    let mut rng_sched = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut pct = Pct {
        depth: match cfg.strategy {
            Strategy::Pct { depth } => depth.max(1),
            _ => 1,
        },
        k: 0,
    };
    let mut dfs = Dfs {
        bound: match cfg.strategy {
            Strategy::Dfs { preemption_bound } => preemption_bound,
            _ => None,
        },
        sleep_sets: cfg.sleep_sets
            && matches!(
                cfg.strategy,
                Strategy::Dfs {
                    preemption_bound: None
                }
            ),
        dpor: false,
        stack: Vec::new(),
        events: Vec::new(),
    };
    dfs.dpor = dfs.sleep_sets && cfg.dpor;
    loop {
        if target.is_some_and(|t| rep.runs >= t) {
            rep.stopped_early = matches!(cfg.strategy, Strategy::Dfs { .. });
            break;
        }
        if cfg.budget.is_some_and(|b| started.elapsed() >= b) {
            rep.stopped_early = true;
            break;
        }
        let i = rep.runs;
        let seed = run_seed(cfg.seed, i, &cfg.strategy);
        let (end, schedule, steps, hash) = match &cfg.strategy {
            Strategy::TraceOrder => {
                let r = one_run(
                    model,
                    seed,
                    cfg.step_limit,
                    false,
                    &mut trace_order,
                    observe,
                );
                (r.end, r.schedule, r.steps, r.hash)
            }
            Strategy::Random => {
                let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7261_6e64_6f6d);
                let mut choose = |_: &Sim, en: &[TaskId]| en[rng.random_range(0..en.len())];
                let r = one_run(model, seed, cfg.step_limit, false, &mut choose, observe);
                (r.end, r.schedule, r.steps, r.hash)
            }
            Strategy::Pct { .. } => {
                let mut run: Option<PctRun> = None;
                let r = {
                    // Priorities are drawn at the first choice, once every task exists.
                    let mut choose = |sim: &Sim, en: &[TaskId]| {
                        let r =
                            run.get_or_insert_with(|| pct.start(&mut rng_sched, sim.task_count()));
                        r.grow(&mut rng_sched, pct.depth, sim.task_count());
                        r.choose(en)
                    };
                    one_run(model, seed, cfg.step_limit, false, &mut choose, observe)
                };
                let decisions = r.schedule.choices.len() as u64;
                pct.k = pct.k.max(decisions);
                (r.end, r.schedule, r.steps, r.hash)
            }
            Strategy::Dfs { .. } => {
                let (end, sim) = dfs.run(model, seed, cfg.step_limit);
                if end != RunEnd::Abandoned {
                    observe(&sim, &end);
                }
                let schedule = Schedule {
                    seed,
                    choices: sim.choices().to_vec(),
                };
                let (steps, hash) = (sim.steps(), sim.hash());
                drop(sim);
                match end {
                    RunEnd::Abandoned => {
                        rep.runs += 1;
                        rep.total_steps += steps;
                        rep.redundant_runs += 1;
                        if !dfs.backtrack() {
                            rep.exhausted = true;
                            break;
                        }
                        continue;
                    }
                    e => (e, schedule, steps, hash),
                }
            }
            Strategy::Replay(s) => {
                let r = replay_run(model, s, cfg.step_limit, false, observe)?;
                (r.end, r.schedule, r.steps, r.hash)
            }
        };
        rep.runs += 1;
        rep.total_steps += steps;
        rep.max_steps = rep.max_steps.max(steps);
        rep.last_hash = hash;
        if let RunEnd::Violation(v) = end {
            rep.failed_runs += 1;
            if rep.failure.is_none() {
                rep.failure = Some(Failure {
                    violation: v,
                    schedule,
                    run: i,
                    steps,
                    hash,
                });
            }
            if !cfg.keep_going {
                break;
            }
        }
        if let Strategy::Dfs { .. } = cfg.strategy
            && !dfs.backtrack()
        {
            rep.exhausted = true;
            break;
        }
        if rep.runs.is_multiple_of(256) {
            progress(Progress {
                runs: rep.runs,
                failed_runs: rep.failed_runs,
                target_runs: target,
            });
        }
    }
    progress(Progress {
        runs: rep.runs,
        failed_runs: rep.failed_runs,
        target_runs: target,
    });
    Ok(rep)
}

/// The outcome of one fully logged run.
#[derive(Clone, Debug)]
pub struct LoggedRun {
    pub end: RunEnd,
    pub schedule: Schedule,
    pub log: EventLog,
}

/// Run the first run of `cfg`'s strategy (or the given schedule) with the full event log.
pub fn logged_run(model: &dyn Model, cfg: &ExploreConfig) -> Result<LoggedRun, ExploreError> {
    let seed = run_seed(cfg.seed, 0, &cfg.strategy);
    let r = match &cfg.strategy {
        Strategy::Replay(s) => replay_run(model, s, cfg.step_limit, true, &mut |_, _| {})?,
        Strategy::Random => {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7261_6e64_6f6d);
            let mut choose = |_: &Sim, en: &[TaskId]| en[rng.random_range(0..en.len())];
            one_run(
                model,
                seed,
                cfg.step_limit,
                true,
                &mut choose,
                &mut |_, _| {},
            )
        }
        Strategy::Dfs { .. } => {
            // The first DFS run takes the default choice (no preemption, lowest id) everywhere.
            let mut prev: Option<TaskId> = None;
            let mut choose = |_: &Sim, en: &[TaskId]| {
                let t = match prev {
                    Some(p) if en.contains(&p) => p,
                    _ => en[0],
                };
                prev = Some(t);
                t
            };
            one_run(
                model,
                seed,
                cfg.step_limit,
                true,
                &mut choose,
                &mut |_, _| {},
            )
        }
        Strategy::TraceOrder | Strategy::Pct { .. } => one_run(
            model,
            seed,
            cfg.step_limit,
            true,
            &mut trace_order,
            &mut |_, _| {},
        ),
    };
    Ok(LoggedRun {
        end: r.end,
        schedule: r.schedule,
        log: r.log.unwrap_or_default(),
    })
}

/// The determinism self-check: two identical runs must give identical event logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Determinism {
    Same {
        hash: u64,
        events: usize,
    },
    Diverged {
        index: usize,
        first: String,
        second: String,
        hashes: (u64, u64),
    },
}

/// Run the same configuration twice with full logs and compare them event by event.
pub fn run_twice(model: &dyn Model, cfg: &ExploreConfig) -> Result<Determinism, ExploreError> {
    let a = logged_run(model, cfg)?;
    let b = match logged_run(model, cfg) {
        Ok(b) => b,
        Err(e) => {
            return Ok(Determinism::Diverged {
                index: 0,
                first: "the first run followed the schedule".into(),
                second: e.0,
                hashes: (a.log.hash, 0),
            });
        }
    };
    match a.log.first_divergence(&b.log) {
        None if a.log.hash == b.log.hash => Ok(Determinism::Same {
            hash: a.log.hash,
            events: a.log.events.len(),
        }),
        d => {
            let i = d.unwrap_or(0);
            Ok(Determinism::Diverged {
                index: i,
                first: a.log.describe(i),
                second: b.log.describe(i),
                hashes: (a.log.hash, b.log.hash),
            })
        }
    }
}
