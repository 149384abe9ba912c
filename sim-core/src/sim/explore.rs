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
use crate::platform::{Op, TaskId, footprint_sig, footprints_depend};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// PCT's state across runs. Run `i` is a pure function of the search seed, `i` and `k`, so
/// that runs can be split between workers and shards (`explore_scaled`): its priorities and
/// change points come from its own generator (seeded by its run seed), and `k` is fixed by run 0.
#[derive(Clone, Copy)]
struct Pct {
    depth: u32,
    /// PCT's k: the number of choices of run 0 (which, with k = 0, has no change point). Run 0
    /// is cheap to repeat, so every worker and shard can know it before its first run.
    k: u64,
}

/// The generator of PCT run `i`'s priorities and change points.
fn pct_rng(run_seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(run_seed ^ 0x7063_7470_6374)
}

struct PctRun {
    prio: Vec<u64>,
    change_points: Vec<u64>,
    count: u64,
    depth: u32,
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
            depth: self.depth,
        }
    }
}

impl Pct {
    /// One PCT run with the given run seed.
    fn one_run(
        &self,
        model: &dyn Model,
        seed: u64,
        step_limit: u64,
        observe: Observer,
    ) -> RunResult {
        let mut rng = pct_rng(seed);
        let mut run: Option<PctRun> = None;
        // Priorities are drawn at the first choice, once every task exists, for the tasks up
        // to the last that can move; the tasks after it (one that waits to join the others)
        // get theirs as tasks spawned later do (`grow`), after the change points, so that they
        // change no other task's draw.
        let mut choose = |sim: &Sim, en: &[TaskId]| {
            let r = run.get_or_insert_with(|| {
                let movers = en.iter().map(|t| t.0 as usize + 1).max().unwrap_or(0);
                self.start(&mut rng, movers.max(1).min(sim.task_count()))
            });
            r.grow(&mut rng, self.depth, sim.task_count());
            r.choose(en)
        };
        one_run(model, seed, step_limit, false, &mut choose, observe)
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
        // At the i-th change point (i = 1..d-1, in step order) the task about to run drops to
        // priority d - i: below every initial priority (d and up) and below every task an
        // earlier change point dropped, so a task demoted later runs after one demoted
        // earlier (Burckhardt et al. 2010, Algorithm 1). The order matters: with it, two
        // change points can hand the processor from t to u and back to t (t runs, u runs one
        // window, t runs on), which a bug of depth 3 between two threads needs.
        for (i, &cp) in self.change_points.iter().enumerate() {
            if cp == self.count {
                let t = best(&self.prio);
                self.prio[t.0 as usize] = u64::from(self.depth) - 1 - i as u64;
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

/// One run of the random strategy with the given run seed.
fn random_run(model: &dyn Model, seed: u64, step_limit: u64, observe: Observer) -> RunResult {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7261_6e64_6f6d);
    let mut choose = |_: &Sim, en: &[TaskId]| en[rng.random_range(0..en.len())];
    one_run(model, seed, step_limit, false, &mut choose, observe)
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

/// Popped DFS nodes kept at most for their vectors (`Dfs::spare_nodes`).
const SPARE_NODES: usize = 1024;

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
    /// DPOR: for a task a race added to `backtrack`, the rest of the race's reversed sequence
    /// (`dpor::Tree::add`), which the run that explores it follows.
    plans: Vec<(TaskId, Vec<u32>)>,
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
    /// DPOR: the steps of the current run, the first `n_events` of these (the entries after
    /// them are spares: their footprint vectors are reused, a run takes hundreds of steps).
    events: Vec<super::dpor::Event>,
    n_events: usize,
    /// DPOR: the race analysis's vectors, kept from run to run.
    buffers: super::dpor::Buffers,
    /// Nodes popped off the stack, their contents stale: their vectors are reused by the
    /// nodes pushed next.
    spare_nodes: Vec<DfsNode>,
    /// The split depth of a divided search (`explore_scaled`): the choice prefixes through
    /// the first `split` branching nodes are its units. With DPOR, the nodes above the split
    /// branch on every enabled task (see [`ScaleConfig::split_depth`]).
    split: Option<usize>,
    /// This run only walks to the split (its unit belongs to another worker or shard): it is
    /// abandoned at the first branching node at depth `split`, and owes no DPOR backtracking.
    probe: bool,
    /// The unit (from 0, in DFS order) the current run belongs to.
    unit: u64,
    /// DPOR: the tasks the current run takes next below the stack, last first: the plan of the
    /// branch it explores (`DfsNode::plans`). Any first choice at a new node is sound
    /// (Algorithm 1 explores one arbitrary task there and lets races add the others); following
    /// the reversed race's sequence reaches the reversal directly instead of wandering into a
    /// state where every enabled task sleeps. Dropped at the first choice it cannot make.
    plan: Vec<u32>,
}

impl Dfs {
    fn new(cfg: &ExploreConfig, split: Option<usize>) -> Dfs {
        let bound = match cfg.strategy {
            Strategy::Dfs { preemption_bound } => preemption_bound,
            _ => None,
        };
        let sleep_sets = cfg.sleep_sets
            && matches!(
                cfg.strategy,
                Strategy::Dfs {
                    preemption_bound: None
                }
            );
        Dfs {
            bound,
            sleep_sets,
            dpor: sleep_sets && cfg.dpor,
            stack: Vec::new(),
            events: Vec::new(),
            n_events: 0,
            buffers: Default::default(),
            spare_nodes: Vec::new(),
            split,
            probe: false,
            unit: 0,
            plan: Vec::new(),
        }
    }

    /// A rough estimate of the explored fraction of the tree (of its top `levels` nodes):
    /// every branch of a node is assumed to weigh the same (Knuth's estimate, on the path).
    fn explored_fraction(&self, levels: usize) -> f64 {
        let mut done = 0.0;
        let mut weight = 1.0;
        for node in self.stack.iter().take(levels) {
            let candidates = if self.dpor {
                node.backtrack.len()
            } else {
                node.enabled.len()
            }
            .max(node.done.len())
            .max(1) as f64;
            weight /= candidates;
            done += weight * (node.done.len().saturating_sub(1)) as f64;
        }
        done.clamp(0.0, 1.0)
    }

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
        self.n_events = 0;
        let dpor = self.dpor;
        let end = sim.run_steps(|sim, en| {
            // Wake the sleepers whose step depends on the step just taken.
            if let Some(last) = prev {
                let fp = sim.last_footprint();
                if dpor {
                    self.push_event(last.0, fp, last_node);
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
            // Below the stack, the plan's next task while it can move.
            let planned = match self.plan.last() {
                Some(&t) if depth >= self.stack.len() && awake.contains(&TaskId(t)) => {
                    self.plan.pop();
                    Some(TaskId(t))
                }
                Some(_) if depth >= self.stack.len() => {
                    self.plan.clear();
                    None
                }
                _ => None,
            };
            let chosen = if awake.len() <= 1 {
                // Nothing to branch on: the one awake task, or none.
                awake
                    .first()
                    .copied()
                    .filter(|&t| self.within_bound(preemptions + costs(t)))?
            } else if self.probe && Some(depth) == self.split {
                // The unit is someone else's: this run has reached its end.
                return None;
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
                let t = match (planned, prev) {
                    (Some(t), _) => t,
                    (None, Some(p)) if prev_enabled && awake.contains(&p) => p,
                    _ => awake
                        .iter()
                        .copied()
                        .find(|&t| self.within_bound(preemptions + costs(t)))?,
                };
                // A node popped earlier lends its vectors (a run pushes dozens of nodes).
                let mut node = self.spare_nodes.pop().unwrap_or_else(|| DfsNode {
                    enabled: Vec::new(),
                    sleep_entry: Vec::new(),
                    done: Vec::new(),
                    footprints: Vec::new(),
                    chosen: t,
                    prev: None,
                    preemptions: 0,
                    backtrack: Vec::new(),
                    plans: Vec::new(),
                });
                node.enabled.clear();
                node.enabled.extend_from_slice(en);
                node.sleep_entry.clone_from(&sleep);
                node.done.clear();
                node.done.push(t);
                node.footprints.clear();
                node.chosen = t;
                node.prev = prev;
                node.preemptions = preemptions;
                // Above the split of a divided search, DPOR branches on every enabled task:
                // races found inside one unit would otherwise owe branches here that the
                // other workers and shards, which skip that unit, never learn of.
                node.backtrack.clear();
                if self.split.is_some_and(|d| depth < d) {
                    node.backtrack.extend_from_slice(en);
                } else {
                    node.backtrack.push(t);
                }
                node.plans.clear();
                self.stack.push(node);
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
                self.push_event(last.0, sim.last_footprint(), last_node);
            }
            if let Some(d) = last_node {
                self.stack[d].record(last, sim.last_footprint());
            }
        }
        if dpor && !self.probe {
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
        super::dpor::analyse(
            &mut StackTree(&mut self.stack),
            &events[..self.n_events],
            tasks,
            &pending,
            &mut self.buffers,
        );
        self.events = events;
    }

    /// DPOR: record the current run's next step (in a spare entry when there is one).
    fn push_event(&mut self, task: u32, fp: &[Op], node: Option<usize>) {
        match self.events.get_mut(self.n_events) {
            Some(e) => {
                e.task = task;
                // A run mostly repeats the previous one's steps (the prefix to the branch it
                // explores): an unchanged footprint keeps its summary.
                if e.fp != fp {
                    e.fp.clear();
                    e.fp.extend_from_slice(fp);
                    e.sig = footprint_sig(fp);
                }
                e.node = node;
            }
            None => self
                .events
                .push(super::dpor::Event::new(task, fp.to_vec(), node)),
        }
        self.n_events += 1;
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

    fn add(&mut self, node: usize, task: u32, plan: Vec<u32>) {
        let n = &mut self.0[node];
        n.backtrack.push(TaskId(task));
        n.plans.push((TaskId(task), plan));
    }
}

impl Dfs {
    /// Move to the next unexplored branch; false when the search space is exhausted.
    fn backtrack(&mut self) -> bool {
        self.backtrack_depth().is_some()
    }

    /// [`Dfs::backtrack`], returning the depth of the node that takes a new branch; a new branch
    /// above the split starts the next unit.
    fn backtrack_depth(&mut self) -> Option<usize> {
        let d = self.next_branch()?;
        if self.split.is_some_and(|s| d < s) {
            self.unit += 1;
        }
        Some(d)
    }

    fn next_branch(&mut self) -> Option<usize> {
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
                    self.plan.clear();
                    if let Some(at) = node.plans.iter().position(|(x, _)| *x == t) {
                        let (_, mut plan) = node.plans.swap_remove(at);
                        plan.reverse();
                        self.plan = plan;
                    }
                    return Some(self.stack.len() - 1);
                }
                None => {
                    if let Some(n) = self.stack.pop()
                        && self.spare_nodes.len() < SPARE_NODES
                    {
                        self.spare_nodes.push(n);
                    }
                }
            }
        }
        None
    }
}

/// Progress of a long search, for progress bars.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub runs: u64,
    pub failed_runs: u64,
    pub target_runs: Option<u64>,
    /// DFS: a rough estimate of the explored fraction of the tree (0 to 1).
    pub explored: Option<f64>,
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
    let mut pct = Pct {
        depth: match cfg.strategy {
            Strategy::Pct { depth } => depth.max(1),
            _ => 1,
        },
        k: 0,
    };
    let mut dfs = Dfs::new(cfg, None);
    let is_dfs = matches!(cfg.strategy, Strategy::Dfs { .. });
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
                let r = random_run(model, seed, cfg.step_limit, observe);
                (r.end, r.schedule, r.steps, r.hash)
            }
            Strategy::Pct { .. } => {
                let r = pct.one_run(model, seed, cfg.step_limit, observe);
                if i == 0 {
                    pct.k = r.schedule.choices.len() as u64;
                }
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
                explored: is_dfs.then(|| dfs.explored_fraction(usize::MAX)),
            });
        }
    }
    progress(Progress {
        runs: rep.runs,
        failed_runs: rep.failed_runs,
        target_runs: target,
        explored: is_dfs.then_some(if rep.exhausted {
            1.0
        } else {
            dfs.explored_fraction(usize::MAX)
        }),
    });
    Ok(rep)
}

// ---------------------------------------------------------------------------------------------
// Divided searches: worker threads (`--jobs`) and shards (`--shard I/N`).
//
// A search is cut into work items, each a pure function of the model and the configuration:
// - random and pct: item `b` is the block of runs `b * block .. (b + 1) * block` (a run is a pure
//   function of the seed and its index; pct's k comes from run 0, see `Pct`);
// - dfs: item `u` is unit `u`: the runs whose first `split_depth` branching choices are the
//   `u`-th such prefix in DFS order. Every worker walks the whole top of the tree (a run cut
//   at the split, a "probe", for each unit it skips), so all of them number the units alike.
// Shard `I` of `N` owns the items `u` with `u % N == I`; its workers claim them as they come.
// The report of the whole search folds the items in order (`fold`): that gives the report of
// one process, run for run, with the first failure the one of the smallest run index.

/// One slice of a divided search: shard `index` of `count`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// The whole search in one process.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The split depth of a divided DFS when none is given.
pub const DEFAULT_SPLIT_DEPTH: usize = 3;

/// How a search is divided.
#[derive(Clone, Copy, Debug)]
pub struct ScaleConfig {
    /// Worker threads, one `Sim` each (at least 1).
    pub jobs: usize,
    pub shard: Shard,
    /// DFS: the units are the choice prefixes through this many branching nodes. Without
    /// DPOR (a preemption bound, or sleep sets alone) the split changes nothing but who
    /// explores what: the runs are those of the undivided search. With DPOR, a race found in
    /// one unit may owe a branch at a node above the split, which the workers and shards that
    /// skip that unit would never learn of; so above the split every enabled task is a branch
    /// (sleep sets still prune there). Every unit's subtree is then explored by source-set DPOR
    /// as in the undivided search: sound, the same violations, a few more runs than plain
    /// DPOR; the same runs for every number of jobs and shards with the same split depth.
    pub split_depth: usize,
}

/// The result of one work item. `failure.run` counts from the item's first run.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ItemResult {
    pub item: u64,
    pub runs: u64,
    pub redundant_runs: u64,
    pub failed_runs: u64,
    pub failure: Option<Failure>,
    pub max_steps: u64,
    pub total_steps: u64,
    /// Event-log hash of the item's last complete (not redundant) run.
    pub last_hash: u64,
    /// Every run of the item ran, or it stopped at its first failure (without keep-going).
    pub complete: bool,
}

impl ItemResult {
    fn new(item: u64) -> ItemResult {
        ItemResult {
            item,
            runs: 0,
            redundant_runs: 0,
            failed_runs: 0,
            failure: None,
            max_steps: 0,
            total_steps: 0,
            last_hash: 0,
            complete: false,
        }
    }

    /// Count one run, as the undivided driver does; true if it failed.
    fn add(&mut self, end: RunEnd, schedule: Schedule, steps: u64, hash: u64) -> bool {
        let offset = self.runs;
        self.runs += 1;
        self.total_steps += steps;
        match end {
            RunEnd::Abandoned => {
                self.redundant_runs += 1;
                false
            }
            RunEnd::Done => {
                self.max_steps = self.max_steps.max(steps);
                self.last_hash = hash;
                false
            }
            RunEnd::Violation(v) => {
                self.max_steps = self.max_steps.max(steps);
                self.last_hash = hash;
                self.failed_runs += 1;
                if self.failure.is_none() {
                    self.failure = Some(Failure {
                        violation: v,
                        schedule,
                        run: offset,
                        steps,
                        hash,
                    });
                }
                true
            }
        }
    }
}

/// What one shard (or the whole search, shard 0/1) explored: the search it belongs to and
/// the results of the items it owns. Shard results of one search merge ([`merge_shards`]).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ShardResult {
    pub strategy: Strategy,
    pub seed: u64,
    pub target_runs: Option<u64>,
    pub keep_going: bool,
    pub step_limit: u64,
    pub sleep_sets: bool,
    pub dpor: bool,
    /// DFS: the split depth (0 for random and pct).
    pub split_depth: usize,
    /// Random and pct: runs per item (0 for dfs).
    pub block: u64,
    pub shard: Shard,
    /// The items this shard explored, in item order.
    pub items: Vec<ItemResult>,
    /// DFS: the number of units of the whole tree, when this shard walked all of it.
    pub units: Option<u64>,
    /// The shard explored its whole part (no budget, no failure stopped it).
    pub finished: bool,
}

/// Random and pct: the runs per item of a search of `target` runs in `shards` shards (about 64
/// items per shard, so that its workers share them out evenly).
fn block_size(target: u64, shards: u32) -> u64 {
    (target / (shards as u64 * 64)).max(1)
}

/// State the workers of one process share (the driver's, never a run's).
struct Shared {
    /// Random and pct: the next of this shard's items to claim (0, 1, ...: the shard's own).
    next: AtomicU64,
    /// DFS: the units claimed by a worker.
    claimed: StdMutex<BTreeSet<u64>>,
    /// Without keep-going: the smallest item that failed (u64::MAX: none); later items do not
    /// matter any more.
    stop: AtomicU64,
    deadline: Option<Instant>,
    out_of_time: AtomicBool,
    runs: AtomicU64,
    failed: AtomicU64,
    /// Per worker: the explored fraction of the top of the tree, as f64 bits.
    explored: Vec<AtomicU64>,
    items: StdMutex<Vec<ItemResult>>,
    units: StdMutex<Option<u64>>,
}

impl Shared {
    fn expired(&self) -> bool {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            self.out_of_time.store(true, Ordering::Relaxed);
        }
        self.out_of_time.load(Ordering::Relaxed)
    }

    fn stopped_before(&self, item: u64) -> bool {
        item > self.stop.load(Ordering::SeqCst)
    }

    fn push(&self, r: ItemResult) {
        lock(&self.items).push(r);
    }
}

/// A driver mutex: a worker that panicked has already failed the search, so a poisoned lock
/// is used as it is.
fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Stack of a worker thread (deep model futures in debug builds).
const WORKER_STACK_BYTES: usize = 64 << 20;

/// Explore this shard's part of the search with `scale.jobs` worker threads. The result is the
/// same whatever the number of jobs and however the threads are timed (unless a budget stops
/// the search). Random, pct and dfs only; dfs without a run count (a count would cut the tree
/// in an order only the undivided search knows).
pub fn explore_scaled(
    model: &(dyn Model + Sync),
    cfg: &ExploreConfig,
    scale: &ScaleConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<ShardResult, ExploreError> {
    let Shard { index, count } = scale.shard;
    if count == 0 || index >= count {
        return Err(ExploreError(format!(
            "shard {index}/{count}: the index must be below the count"
        )));
    }
    if scale.jobs == 0 {
        return Err(ExploreError("the number of jobs must be at least 1".into()));
    }
    let is_dfs = matches!(cfg.strategy, Strategy::Dfs { .. });
    match cfg.strategy {
        Strategy::TraceOrder | Strategy::Replay(_) => {
            return Err(ExploreError(format!(
                "the {} strategy is one run; it cannot be divided between jobs or shards",
                cfg.strategy.name()
            )));
        }
        Strategy::Dfs { .. } if cfg.runs.is_some() => {
            return Err(ExploreError(
                "dfs with a run count cannot be divided between jobs or shards (the count cuts \
                 the tree in an order only one undivided search knows); bound it with a budget"
                    .into(),
            ));
        }
        _ => {}
    }
    let target = match cfg.strategy {
        Strategy::Dfs { .. } => None,
        _ => Some(cfg.runs.unwrap_or(1000)),
    };
    let block = target.map_or(0, |t| block_size(t, count));
    let dfs_probe = Dfs::new(cfg, Some(scale.split_depth));
    let sh = Shared {
        next: AtomicU64::new(0),
        claimed: StdMutex::new(BTreeSet::new()),
        stop: AtomicU64::new(u64::MAX),
        deadline: cfg.budget.map(|b| Instant::now() + b),
        out_of_time: AtomicBool::new(false),
        runs: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        explored: (0..scale.jobs).map(|_| AtomicU64::new(0)).collect(),
        items: StdMutex::new(Vec::new()),
        units: StdMutex::new(None),
    };
    // Pct's k is the choice count of run 0; every worker needs it before its first run.
    let pct = match cfg.strategy {
        Strategy::Pct { depth } => {
            let mut p = Pct {
                depth: depth.max(1),
                k: 0,
            };
            let seed0 = run_seed(cfg.seed, 0, &cfg.strategy);
            p.k = p
                .one_run(model, seed0, cfg.step_limit, &mut |_, _| {})
                .schedule
                .choices
                .len() as u64;
            Some(p)
        }
        _ => None,
    };
    let share = target.map(|t| t.div_ceil(count as u64));
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| -> Result<(), ExploreError> {
        let mut handles = Vec::new();
        for w in 0..scale.jobs {
            let tx = tx.clone();
            let (sh, pct) = (&sh, pct.as_ref());
            let h = std::thread::Builder::new()
                .name(format!("pmsim-worker-{w}"))
                .stack_size(WORKER_STACK_BYTES)
                .spawn_scoped(s, move || {
                    if is_dfs {
                        dfs_worker(model, cfg, scale, sh, w);
                    } else {
                        indexed_worker(model, cfg, scale, sh, block, target.unwrap_or(0), pct);
                    }
                    let _ = tx.send(());
                })
                .map_err(|e| ExploreError(format!("cannot start a worker thread: {e}")))?;
            handles.push(h);
        }
        drop(tx);
        let mut finished = 0;
        while finished < handles.len() {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(()) => finished += 1,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                // Every sender is gone: each worker has sent or panicked.
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
            progress(Progress {
                runs: sh.runs.load(Ordering::Relaxed),
                failed_runs: sh.failed.load(Ordering::Relaxed),
                target_runs: share,
                explored: is_dfs.then(|| {
                    sh.explored
                        .iter()
                        .map(|x| f64::from_bits(x.load(Ordering::Relaxed)))
                        .fold(1.0, f64::min)
                }),
            });
        }
        for h in handles {
            if let Err(panic) = h.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Ok(())
    })?;
    let mut items = std::mem::take(&mut *lock(&sh.items));
    items.sort_by_key(|r| r.item);
    let units = *lock(&sh.units);
    let finished = !sh.out_of_time.load(Ordering::SeqCst)
        && sh.stop.load(Ordering::SeqCst) == u64::MAX
        && (!is_dfs || units.is_some());
    let result = ShardResult {
        strategy: cfg.strategy.clone(),
        seed: cfg.seed,
        target_runs: target,
        keep_going: cfg.keep_going,
        step_limit: cfg.step_limit,
        sleep_sets: dfs_probe.sleep_sets,
        dpor: dfs_probe.dpor,
        split_depth: if is_dfs { scale.split_depth } else { 0 },
        block,
        shard: scale.shard,
        items,
        units,
        finished,
    };
    let rep = result.report();
    progress(Progress {
        runs: rep.runs,
        failed_runs: rep.failed_runs,
        target_runs: share,
        explored: is_dfs.then_some(if finished { 1.0 } else { 0.0 }),
    });
    Ok(result)
}

/// Random and pct: claim this shard's items in turn and run their runs.
fn indexed_worker(
    model: &dyn Model,
    cfg: &ExploreConfig,
    scale: &ScaleConfig,
    sh: &Shared,
    block: u64,
    target: u64,
    pct: Option<&Pct>,
) {
    let (index, count) = (scale.shard.index as u64, scale.shard.count as u64);
    loop {
        let j = sh.next.fetch_add(1, Ordering::SeqCst);
        let item = j.saturating_mul(count).saturating_add(index);
        let start = item.saturating_mul(block);
        if start >= target || sh.stopped_before(item) || sh.expired() {
            return;
        }
        let end = start.saturating_add(block).min(target);
        let mut r = ItemResult::new(item);
        r.complete = true;
        for i in start..end {
            if sh.expired() || sh.stopped_before(item) {
                r.complete = false;
                break;
            }
            let seed = run_seed(cfg.seed, i, &cfg.strategy);
            let run = match pct {
                // Run 0 has no change point (k = 0), as in the undivided search.
                Some(p) if i == 0 => {
                    Pct { k: 0, ..*p }.one_run(model, seed, cfg.step_limit, &mut |_, _| {})
                }
                Some(p) => p.one_run(model, seed, cfg.step_limit, &mut |_, _| {}),
                None => random_run(model, seed, cfg.step_limit, &mut |_, _| {}),
            };
            let failed = r.add(run.end, run.schedule, run.steps, run.hash);
            sh.runs.fetch_add(1, Ordering::Relaxed);
            if failed {
                sh.failed.fetch_add(1, Ordering::Relaxed);
                if !cfg.keep_going {
                    sh.stop.fetch_min(item, Ordering::SeqCst);
                    break;
                }
            }
        }
        let complete = r.complete;
        sh.push(r);
        if !complete {
            return;
        }
    }
}

/// DFS: walk the units in order, explore the ones this worker claims, probe the others.
fn dfs_worker(
    model: &dyn Model,
    cfg: &ExploreConfig,
    scale: &ScaleConfig,
    sh: &Shared,
    worker: usize,
) {
    let (index, count) = (scale.shard.index as u64, scale.shard.count as u64);
    let split = scale.split_depth;
    let seed = run_seed(cfg.seed, 0, &cfg.strategy);
    let mut dfs = Dfs::new(cfg, Some(split));
    loop {
        let u = dfs.unit;
        sh.explored[worker].store(dfs.explored_fraction(split).to_bits(), Ordering::Relaxed);
        if sh.stopped_before(u) || sh.expired() {
            return;
        }
        let mine = u % count == index && lock(&sh.claimed).insert(u);
        if !mine {
            dfs.probe = true;
            let _ = dfs.run(model, seed, cfg.step_limit);
            dfs.probe = false;
            if dfs.backtrack_depth().is_none() {
                *lock(&sh.units) = Some(u + 1);
                return;
            }
            continue;
        }
        let mut r = ItemResult::new(u);
        loop {
            if sh.expired() || sh.stopped_before(u) {
                sh.push(r);
                return;
            }
            let (end, sim) = dfs.run(model, seed, cfg.step_limit);
            let schedule = Schedule {
                seed,
                choices: sim.choices().to_vec(),
            };
            let (steps, hash) = (sim.steps(), sim.hash());
            drop(sim);
            let failed = r.add(end, schedule, steps, hash);
            sh.runs.fetch_add(1, Ordering::Relaxed);
            if failed {
                sh.failed.fetch_add(1, Ordering::Relaxed);
                if !cfg.keep_going {
                    r.complete = true;
                    sh.stop.fetch_min(u, Ordering::SeqCst);
                    sh.push(r);
                    return;
                }
            }
            match dfs.backtrack_depth() {
                None => {
                    r.complete = true;
                    sh.push(r);
                    *lock(&sh.units) = Some(u + 1);
                    return;
                }
                Some(d) if d < split => {
                    r.complete = true;
                    sh.push(r);
                    break;
                }
                Some(_) => {}
            }
        }
    }
}

impl ShardResult {
    /// The items the search has, for the fold: random and pct, `0..ceil(target / block)`;
    /// dfs, the units, when known.
    fn item_count(&self) -> Option<u64> {
        match self.target_runs {
            Some(t) if self.block > 0 => Some(t.div_ceil(self.block)),
            _ => self.units,
        }
    }

    /// The report of this result alone. For the whole search (one shard) it is exactly the
    /// undivided search's report, unless a budget cut it short (then see [`fold`]). For one shard of several: its own items in order, its first
    /// failure (run index: global for random and pct, counted within the shard for dfs),
    /// `exhausted` when it explored its whole part of a dfs tree.
    pub fn report(&self) -> ExploreReport {
        if self.shard.count == 1 {
            return fold(self, &self.items, self.item_count());
        }
        let mut rep = empty_report(self);
        for it in &self.items {
            let base = if self.block > 0 {
                it.item * self.block
            } else {
                rep.runs
            };
            if add_item(&mut rep, it, base, self.keep_going) {
                break;
            }
        }
        rep.exhausted = self.block == 0 && self.finished && rep.failure.is_none();
        rep.stopped_early = !self.finished && rep.failure.is_none();
        rep
    }
}

fn empty_report(r: &ShardResult) -> ExploreReport {
    ExploreReport {
        strategy: r.strategy.name().to_string(),
        seed: r.seed,
        runs: 0,
        redundant_runs: 0,
        exhausted: false,
        failed_runs: 0,
        failure: None,
        last_hash: 0,
        max_steps: 0,
        total_steps: 0,
        stopped_early: false,
    }
}

/// Add an item to a report; true when the search stops there (its first failure, without
/// keep-going).
fn add_item(rep: &mut ExploreReport, it: &ItemResult, base: u64, keep_going: bool) -> bool {
    rep.runs += it.runs;
    rep.redundant_runs += it.redundant_runs;
    rep.failed_runs += it.failed_runs;
    rep.total_steps += it.total_steps;
    rep.max_steps = rep.max_steps.max(it.max_steps);
    if it.runs > it.redundant_runs {
        rep.last_hash = it.last_hash;
    }
    if let Some(f) = &it.failure
        && rep.failure.is_none()
    {
        rep.failure = Some(Failure {
            run: base + f.run,
            ..f.clone()
        });
        return !keep_going;
    }
    false
}

/// The report of the whole search from its items (sorted, each once), in item order: the
/// undivided search's report, run for run, as long as the items before its end are all there.
/// A search cut short (a budget) leaves items incomplete or unexplored while the workers have
/// explored later ones: those count too, their runs and their first failure (the undivided
/// search would reach it later), or a `--jobs N` report would show one worker's runs and drop
/// the violations the others found.
fn fold(head: &ShardResult, items: &[ItemResult], count: Option<u64>) -> ExploreReport {
    let mut rep = empty_report(head);
    let mut next = 0u64;
    let mut all = true;
    for it in items {
        if it.item != next {
            all = false;
        }
        let base = rep.runs;
        if add_item(&mut rep, it, base, head.keep_going) {
            return rep;
        }
        if !it.complete {
            all = false;
        }
        next = it.item + 1;
    }
    let whole = all && count.is_some_and(|c| next == c);
    match head.strategy {
        Strategy::Dfs { .. } => {
            rep.exhausted = whole;
            rep.stopped_early = !whole;
        }
        _ => rep.stopped_early = !whole,
    }
    rep
}

/// Merge the results of the shards of one search into its report. Refused: results of
/// different searches, shard counts that differ, a shard missing or given twice.
pub fn merge_shards(parts: &[ShardResult]) -> Result<ExploreReport, ExploreError> {
    let Some(first) = parts.first() else {
        return Err(ExploreError("no shard results to merge".into()));
    };
    let key = |r: &ShardResult| {
        (
            r.strategy.clone(),
            r.seed,
            r.target_runs,
            r.keep_going,
            r.step_limit,
            (r.sleep_sets, r.dpor, r.split_depth, r.block),
        )
    };
    for p in parts {
        if key(p) != key(first) {
            return Err(ExploreError(format!(
                "shard {} is a result of another search than shard {} (strategy, seed, runs, \
                 keep-going, step limit or split differ)",
                p.shard, first.shard
            )));
        }
        if p.shard.count != first.shard.count {
            return Err(ExploreError(format!(
                "shard {} and shard {} count the shards differently",
                p.shard, first.shard
            )));
        }
    }
    let count = first.shard.count;
    let mut seen = vec![0u32; count as usize];
    for p in parts {
        match seen.get_mut(p.shard.index as usize) {
            Some(n) => *n += 1,
            None => {
                return Err(ExploreError(format!(
                    "shard {}: the index is not below the count",
                    p.shard
                )));
            }
        }
    }
    let twice: Vec<String> = (0..count)
        .filter(|&i| seen[i as usize] > 1)
        .map(|i| i.to_string())
        .collect();
    if !twice.is_empty() {
        return Err(ExploreError(format!(
            "shard {} given more than once (of {count})",
            twice.join(", ")
        )));
    }
    let missing: Vec<String> = (0..count)
        .filter(|&i| seen[i as usize] == 0)
        .map(|i| i.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(ExploreError(format!(
            "incomplete shard set: shard {} of {count} missing",
            missing.join(", ")
        )));
    }
    let mut units = None;
    for p in parts {
        if let Some(u) = p.units {
            if units.is_some_and(|x| x != u) {
                return Err(ExploreError(format!(
                    "shard {} counts {u} units where another counts {}: not one search",
                    p.shard,
                    units.unwrap_or(0)
                )));
            }
            units = Some(u);
        }
    }
    let mut items: Vec<ItemResult> = parts.iter().flat_map(|p| p.items.iter().cloned()).collect();
    items.sort_by_key(|r| r.item);
    for (i, w) in items.windows(2).enumerate() {
        if w[0].item == w[1].item {
            return Err(ExploreError(format!(
                "item {} appears in two shards (entry {i}): not one search",
                w[0].item
            )));
        }
    }
    let head = ShardResult {
        units,
        ..first.clone()
    };
    let count_items = head.item_count();
    Ok(fold(&head, &items, count_items))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toys;

    /// Two tasks, depth 3, change points at choices 2 and 5: task 1 starts (the higher initial
    /// priority), the first change point hands the processor to task 0, the second hands it
    /// back to task 1, because a later change point drops its task below the earlier one.
    /// (With the earlier change point lowest, task 0 would keep the processor to the end and
    /// the t -> u -> t order of the memory-failure races would be out of pct's reach.)
    #[test]
    fn pct_later_change_points_drop_below_earlier_ones() {
        let mut r = PctRun {
            prio: vec![3, 4],
            change_points: vec![2, 5],
            count: 0,
            depth: 3,
        };
        let en = [TaskId(0), TaskId(1)];
        let got: Vec<u32> = (0..7).map(|_| r.choose(&en).0).collect();
        assert_eq!(got, vec![1, 0, 0, 0, 1, 1, 1]);
        assert_eq!(
            r.prio,
            vec![1, 2],
            "priorities d - i at the i-th change point"
        );
    }

    fn toy(name: &'static str) -> impl Fn(&mut Sim) + Sync {
        move |sim: &mut Sim| {
            let p = sim.platform();
            assert!(toys::build(name, &p, sim), "unknown toy {name}");
        }
    }

    fn cfg(strategy: Strategy, runs: Option<u64>, keep_going: bool, dpor: bool) -> ExploreConfig {
        ExploreConfig {
            strategy,
            seed: 3,
            runs,
            keep_going,
            dpor,
            ..ExploreConfig::default()
        }
    }

    fn scaled(
        m: &(dyn Model + Sync),
        c: &ExploreConfig,
        jobs: usize,
        shard: Shard,
        split: usize,
    ) -> ShardResult {
        let scale = ScaleConfig {
            jobs,
            shard,
            split_depth: split,
        };
        explore_scaled(m, c, &scale, &mut |_| {}).expect("explore_scaled")
    }

    fn merged(m: &(dyn Model + Sync), c: &ExploreConfig, n: u32, split: usize) -> ExploreReport {
        let parts: Vec<ShardResult> = (0..n)
            .map(|i| scaled(m, c, 1, Shard { index: i, count: n }, split))
            .collect();
        merge_shards(&parts).expect("merge")
    }

    /// The searches whose division changes nothing: random, pct, bounded dfs, dfs with sleep
    /// sets alone. Every jobs count and shard set gives the undivided report, field for field
    /// (runs, redundant runs, failures and the first one, steps, hashes, exhaustion).
    #[test]
    fn divided_searches_equal_the_undivided_one() {
        let mut cases = 0;
        for name in ["abba", "abba-fixed", "lost-wakeup", "lost-wakeup-correct"] {
            let m = toy(name);
            for (strategy, runs, dpor) in [
                (Strategy::Random, Some(150), true),
                (Strategy::Pct { depth: 2 }, Some(150), true),
                (Strategy::Pct { depth: 3 }, Some(97), true),
                (
                    Strategy::Dfs {
                        preemption_bound: Some(2),
                    },
                    None,
                    true,
                ),
                (
                    Strategy::Dfs {
                        preemption_bound: None,
                    },
                    None,
                    false,
                ),
            ] {
                for keep_going in [false, true] {
                    let c = cfg(strategy.clone(), runs, keep_going, dpor);
                    let whole = explore(&m, &c, &mut |_| {}).expect("explore");
                    for split in [1, 2, DEFAULT_SPLIT_DEPTH, 6] {
                        for jobs in [1, 2, 3] {
                            let r = scaled(&m, &c, jobs, Shard::WHOLE, split).report();
                            assert_eq!(r, whole, "{name} {c:?} jobs {jobs} split {split}");
                        }
                        for n in [2, 3] {
                            let r = merged(&m, &c, n, split);
                            assert_eq!(r, whole, "{name} {c:?} {n} shards split {split}");
                        }
                        cases += 1;
                    }
                }
            }
        }
        assert_eq!(cases, 4 * 5 * 2 * 4);
    }

    /// DPOR divided at a split: the same report for every jobs count and shard set, and the
    /// same outcome as undivided DPOR (exhausted or not, the violation kind found).
    #[test]
    fn divided_dpor_is_the_same_search_everywhere_and_finds_what_dpor_finds() {
        // lw3x4 needs 223,300 DPOR runs: too many for a debug test.
        for name in ["abba", "abba-fixed", "lost-wakeup", "lost-wakeup-correct"] {
            let m = toy(name);
            for keep_going in [false, true] {
                let c = cfg(
                    Strategy::Dfs {
                        preemption_bound: None,
                    },
                    None,
                    keep_going,
                    true,
                );
                let plain = explore(&m, &c, &mut |_| {}).expect("explore");
                for split in [1, DEFAULT_SPLIT_DEPTH] {
                    let one = scaled(&m, &c, 1, Shard::WHOLE, split).report();
                    assert_eq!(one.exhausted, plain.exhausted, "{name} split {split}");
                    assert_eq!(
                        one.failure.as_ref().map(|f| f.violation.kind.clone()),
                        plain.failure.as_ref().map(|f| f.violation.kind.clone()),
                        "{name} split {split}"
                    );
                    assert_eq!(one.failed_runs > 0, plain.failed_runs > 0, "{name}");
                    assert!(one.runs >= plain.runs - plain.redundant_runs, "{name}");
                    assert_eq!(
                        scaled(&m, &c, 2, Shard::WHOLE, split).report(),
                        one,
                        "{name}"
                    );
                    assert_eq!(merged(&m, &c, 3, split), one, "{name} 3 shards");
                }
            }
        }
    }

    /// A search cut short (a budget): unit 0 unfinished, unit 1 explored by another worker and
    /// failing at its third run, unit 2 never claimed, unit 3 finished. The report counts every
    /// explored run and reports unit 1's violation (the fold used to stop at unit 0: a
    /// `--jobs 2` report showed one worker's runs and dropped the other's violations).
    #[test]
    fn a_search_cut_short_counts_every_explored_unit() {
        let m = toy("abba");
        for keep_going in [false, true] {
            let c = cfg(
                Strategy::Dfs {
                    preemption_bound: None,
                },
                None,
                keep_going,
                true,
            );
            let f = explore(&m, &c, &mut |_| {})
                .expect("explore")
                .failure
                .expect("abba deadlocks");
            let mut r = scaled(&m, &c, 1, Shard::WHOLE, DEFAULT_SPLIT_DEPTH);
            let s = || f.schedule.clone();
            let mut u0 = ItemResult::new(0);
            for _ in 0..7 {
                u0.add(RunEnd::Done, s(), 10, 1);
            }
            let mut u1 = ItemResult::new(1);
            u1.add(RunEnd::Done, s(), 10, 2);
            u1.add(RunEnd::Abandoned, s(), 3, 0);
            u1.add(RunEnd::Violation(f.violation.clone()), s(), f.steps, f.hash);
            u1.complete = true;
            let mut u3 = ItemResult::new(3);
            u3.add(RunEnd::Done, s(), 12, 4);
            u3.complete = true;
            r.items = vec![u0, u1, u3];
            r.units = Some(4);
            r.finished = false;
            let rep = r.report();
            let failure = rep
                .failure
                .as_ref()
                .expect("unit 1's violation is reported");
            assert_eq!(failure.run, 7 + 2, "counted after unit 0's runs");
            assert_eq!(failure.violation, f.violation);
            assert_eq!(rep.failed_runs, 1);
            assert_eq!(rep.redundant_runs, 1);
            assert!(!rep.exhausted);
            if keep_going {
                assert_eq!(rep.runs, 7 + 3 + 1);
                assert_eq!(rep.last_hash, 4);
                assert!(rep.stopped_early);
            } else {
                assert_eq!(rep.runs, 7 + 3, "the search stops at its first failure");
            }
        }
    }

    #[test]
    fn merge_refuses_incomplete_and_mismatched_shard_sets() {
        let m = toy("abba-fixed");
        let c = cfg(
            Strategy::Dfs {
                preemption_bound: Some(1),
            },
            None,
            false,
            true,
        );
        let part = |i, n| scaled(&m, &c, 1, Shard { index: i, count: n }, 2);
        let (a, b, c3) = (part(0, 3), part(1, 3), part(2, 3));
        let e = merge_shards(&[a.clone(), b.clone()]).unwrap_err();
        assert!(e.0.contains("shard 2 of 3 missing"), "{e}");
        let e = merge_shards(&[a.clone(), b.clone(), b.clone(), c3.clone()]).unwrap_err();
        assert!(e.0.contains("more than once"), "{e}");
        let e = merge_shards(&[a.clone(), b.clone(), part(1, 2)]).unwrap_err();
        assert!(e.0.contains("count the shards differently"), "{e}");
        let other = ShardResult {
            seed: 9,
            ..c3.clone()
        };
        let e = merge_shards(&[a.clone(), b.clone(), other]).unwrap_err();
        assert!(e.0.contains("another search"), "{e}");
        assert!(merge_shards(&[a, b, c3]).expect("merge").exhausted);
        assert!(merge_shards(&[]).is_err());
    }

    #[test]
    fn a_shard_is_a_nontrivial_part() {
        // Each shard explores some units, and together exactly the undivided runs.
        let m = toy("lost-wakeup-correct");
        let c = cfg(
            Strategy::Dfs {
                preemption_bound: Some(2),
            },
            None,
            true,
            true,
        );
        let whole = explore(&m, &c, &mut |_| {}).expect("explore");
        let parts: Vec<ShardResult> = (0..3)
            .map(|i| scaled(&m, &c, 1, Shard { index: i, count: 3 }, 3))
            .collect();
        let runs: Vec<u64> = parts.iter().map(|p| p.report().runs).collect();
        assert!(runs.iter().all(|&r| r > 0), "{runs:?}");
        assert_eq!(runs.iter().sum::<u64>(), whole.runs);
        assert!(
            parts
                .iter()
                .all(|p| p.finished && p.units == parts[0].units)
        );
    }

    #[test]
    fn what_cannot_be_divided_is_refused() {
        let m = toy("abba");
        let dfs_runs = cfg(
            Strategy::Dfs {
                preemption_bound: None,
            },
            Some(10),
            false,
            true,
        );
        let scale = ScaleConfig {
            jobs: 2,
            shard: Shard::WHOLE,
            split_depth: 3,
        };
        assert!(explore_scaled(&m, &dfs_runs, &scale, &mut |_| {}).is_err());
        let one = cfg(Strategy::TraceOrder, None, false, true);
        assert!(explore_scaled(&m, &one, &scale, &mut |_| {}).is_err());
        let bad = ScaleConfig {
            shard: Shard { index: 2, count: 2 },
            ..scale
        };
        let r = cfg(Strategy::Random, None, false, true);
        assert!(explore_scaled(&m, &r, &bad, &mut |_| {}).is_err());
    }
}
