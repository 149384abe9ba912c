//! The causal story of a failing run: the few steps that matter, not the whole log.
//!
//! A run is recorded step by step ([`record_run`]): each step's log event, the footprint it
//! really had (`Sim::last_footprint`), the task's call path when it took it, a readable
//! description, and the tasks that could move. A step of an atomic section (`sim` "Atomic
//! sections") is recorded as one step per op it ran, each with its own event, footprint and
//! path (`Sim::last_step_ops`), so the story can show every op. [`causal_story`] then slices the run backwards
//! from the steps at the centre of the violation:
//!
//! - **seeds**: for a sleeper that nobody woke (lost wakeup), its last `prepare_to_wait` and
//!   its last steps, and the wake-ups other tasks did after it queued (the wake that went
//!   elsewhere); for a deadlock, each cycle member's last step and the steps that took the
//!   locks it holds; otherwise the last step of the task that raised the violation (or of every
//!   task, when no task is named);
//! - **edges**, followed backwards from every step in the story up to [`STORY_DEPTH`] hops: the
//!   task's own previous step (program order, for context), and for each object the step
//!   touched, the latest earlier step of *another* task whose footprint conflicts with it on
//!   that object (the happens-before edge that orders the two tasks there).
//!
//! The machine-wide footprint entries (the machine, CPU clocks, the kernel log, the object
//! table) are left out of the edges: every memory operation writes the machine, so through them
//! every step would depend on every other; they order timing, not the story. The slice is taken
//! breadth-first (seeds, then one hop, then two) and cut at `max_steps`, so the closest steps
//! win. Every story step is a step of the run's event log (same step number, task and op).

use super::explore::ExploreError;
use super::{Model, RunEnd, Schedule, Sim, SimConfig, Violation, ViolationKind};
use crate::events::{EventLog, LogEvent};
use crate::platform::{Op, OpKind, TaskId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// How many hops back from a seed the slice follows.
pub const STORY_DEPTH: u32 = 3;

/// The default cap on a story's length.
pub const STORY_MAX_STEPS: usize = 24;

/// One step of a recorded run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedStep {
    pub event: LogEvent,
    /// What the step touched (its announced op first; see `sim` "Footprints").
    pub footprint: Vec<Op>,
    /// The task's call path when it took the step (`Platform::enter_fn`), outermost first.
    pub path: Vec<&'static str>,
    /// The step as a report prints it (`lock i_pages#12`, `wake_up dax_wait_table#3 key ..`).
    pub what: String,
    /// The tasks that could move at this step (the chosen one among them).
    pub enabled: Vec<u32>,
}

/// A run recorded with footprints and call paths.
#[derive(Clone, Debug)]
pub struct RecordedRun {
    pub end: RunEnd,
    /// The choices the run made (replays it exactly).
    pub schedule: Schedule,
    /// The full event log, the model's setup steps included.
    pub log: EventLog,
    /// The steps after the model's setup (`Model::setup` may run steps of its own).
    pub steps: Vec<RecordedStep>,
}

impl RecordedRun {
    /// Steps where the task that ran before could have gone on but another one was chosen.
    pub fn preemptions(&self) -> usize {
        self.steps
            .windows(2)
            .filter(|w| {
                let prev = w[0].event.task.0;
                w[1].event.task.0 != prev && w[1].enabled.contains(&prev)
            })
            .count()
    }

    /// The violation the run ended with, if any.
    pub fn violation(&self) -> Option<&Violation> {
        match &self.end {
            RunEnd::Violation(v) => Some(v),
            _ => None,
        }
    }
}

/// The step description of a report: the executor's, with the wait key's second word for the
/// wait-queue ops (the first names the queue's owner and is the same for every step there).
fn describe(sim: &Sim, op: &Op) -> String {
    let d = sim.describe_op(op);
    match op.kind {
        OpKind::PrepareToWait | OpKind::Wake => format!("{d} key {{_, {:#x}}}", op.arg),
        _ => d,
    }
}

/// A strategy for [`record_run`]: the task to run among the enabled ones, given the task that
/// ran the step before.
pub type Chooser<'a> = &'a mut dyn FnMut(&Sim, &[TaskId], Option<TaskId>) -> TaskId;

/// Run `model` from `seed`, asking `choose(sim, enabled, previous task)` at every step where
/// more than one task can move, and record every step after the setup.
pub fn record_run(model: &dyn Model, seed: u64, step_limit: u64, choose: Chooser) -> RecordedRun {
    let mut sim = Sim::new(SimConfig {
        seed,
        step_limit,
        record_log: true,
    });
    model.setup(&mut sim);
    let mut steps: Vec<RecordedStep> = Vec::new();
    let mut prev: Option<TaskId> = None;
    // The tasks that could move at the step just taken.
    let mut enabled: Option<Vec<u32>> = None;
    // One recorded step per op the step ran (an atomic section runs several: `sim` "Atomic
    // sections"); the ops after the first were not scheduling points.
    let record = |sim: &Sim, enabled: Vec<u32>, steps: &mut Vec<RecordedStep>| {
        for (k, (event, footprint, path)) in sim.last_step_ops().into_iter().enumerate() {
            steps.push(RecordedStep {
                event,
                what: describe(sim, &event.op),
                footprint,
                path,
                enabled: if k == 0 {
                    enabled.clone()
                } else {
                    vec![event.task.0]
                },
            });
        }
    };
    let end = sim.run_steps(|sim, en| {
        if let Some(en) = enabled.take() {
            record(sim, en, &mut steps);
        }
        let t = if en.len() == 1 {
            en[0]
        } else {
            choose(sim, en, prev)
        };
        enabled = Some(en.iter().map(|t| t.0).collect());
        prev = Some(t);
        Some(t)
    });
    if let Some(en) = enabled.take() {
        record(&sim, en, &mut steps);
    }
    RecordedRun {
        end,
        schedule: Schedule {
            seed,
            choices: sim.choices().to_vec(),
        },
        log: sim.event_log(),
        steps,
    }
}

/// The trace-order choice (the strategy's rule): the task on the earliest trace line.
pub fn trace_order_choice(sim: &Sim, en: &[TaskId]) -> TaskId {
    *en.iter()
        .min_by_key(|t| (sim.task_line(**t), t.0))
        .expect("choose is called with enabled tasks")
}

/// Replay `sched` exactly as `pmsim replay` does (trace order once its choices run out) and
/// record the run. Errors when a choice names a task that cannot move.
pub fn record_replay(
    model: &dyn Model,
    sched: &Schedule,
    step_limit: u64,
) -> Result<RecordedRun, ExploreError> {
    let mut i = 0usize;
    let mut bad: Option<String> = None;
    let mut choose = |sim: &Sim, en: &[TaskId], _prev: Option<TaskId>| {
        let c = sched.choices.get(i).copied();
        i += 1;
        match c {
            None => trace_order_choice(sim, en),
            Some(c) => match en.iter().find(|t| t.0 == c) {
                Some(&t) => t,
                None => {
                    bad.get_or_insert_with(|| {
                        format!(
                            "the schedule diverges at choice {i} (step {}): it names task {c}, \
                             but the tasks that can move are {:?}",
                            sim.steps(),
                            en.iter().map(|t| t.0).collect::<Vec<_>>()
                        )
                    });
                    en[0]
                }
            },
        }
    };
    let run = record_run(model, sched.seed, step_limit, &mut choose);
    match bad {
        Some(b) => Err(ExploreError(b)),
        None => Ok(run),
    }
}

/// One step of a story.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoryStep {
    /// The step's number in the event log.
    pub step: u32,
    pub task: u32,
    pub task_name: String,
    /// The trace line the task was executing (0 outside traces).
    pub line: u32,
    /// What the step did.
    pub what: String,
    /// The task's call path then, outermost first.
    pub path: Vec<String>,
    /// Why the step is in the story.
    pub why: String,
}

/// The causal story of a violation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Story {
    /// The steps that matter, in run order.
    pub steps: Vec<StoryStep>,
    /// What the tasks still alive at the end were about to do (their steps never ran).
    pub pending: Vec<String>,
    /// Steps of the run after the setup (what the story was cut from).
    pub run_steps: usize,
}

/// Footprint entries that order the story: objects, memory lines, task exits; not the
/// machine, the clocks, the kernel log or the object table.
fn causal(op: &Op) -> bool {
    let id = op.obj.0;
    op.obj != Op::NONE
        && op.obj != Op::MACHINE
        && op.obj != Op::DMESG
        && op.obj != Op::ALLOC
        && !(Op::CPU_BASE..Op::CPU_END).contains(&id)
}

/// Two read-side rwsem steps (`down_read`, `up_read`): readers do not order each other.
fn readers(a: &Op, b: &Op) -> bool {
    let r = |k: OpKind| matches!(k, OpKind::DownRead | OpKind::UpRead);
    r(a.kind) && r(b.kind)
}

/// The object an op touches, by the log's names (`i_pages#12`, `pmem 0x1000`).
fn obj_text(run: &RecordedRun, op: &Op) -> String {
    let id = op.obj.0;
    if (Op::MEM_BASE..Op::MEM_END).contains(&id) {
        return format!("pmem {:#x}", (id - Op::MEM_BASE) as u64 * 64);
    }
    if let Some((first, n)) = op.tasks_of() {
        let names: Vec<String> = (first.0..first.0 + n).map(|t| task_name(run, t)).collect();
        return match n {
            1 => format!("{}'s exit", names[0]),
            _ => format!("the exits of {}", names.join(", ")),
        };
    }
    if let Some((l, first, len)) = op.part_of() {
        let name = run
            .log
            .objects
            .get(l.0 as usize)
            .map_or("obj", |n| n.as_str());
        return format!("{name}#{} [{first:#x}, +{len:#x})", l.0);
    }
    match run.log.objects.get(id as usize) {
        Some(n) => format!("{n}#{id}"),
        None => format!("obj#{id}"),
    }
}

/// What a step did itself: its announced op and the releases of guards it dropped (not the
/// implicit writes of the locks its task holds, which every step of a holder has).
fn own_ops(s: &RecordedStep) -> Vec<Op> {
    let mut ops = vec![s.event.op];
    ops.extend(s.footprint.iter().skip(1).copied().filter(|o| {
        matches!(
            o.kind,
            OpKind::Unlock | OpKind::UpRead | OpKind::UpWrite | OpKind::DowngradeWrite
        ) || o.task_of().is_some()
    }));
    ops.retain(causal);
    ops
}

struct Slice<'a> {
    run: &'a RecordedRun,
    /// Step index (into `run.steps`) -> why it is in.
    why: BTreeMap<usize, String>,
    queue: VecDeque<(usize, u32)>,
    max: usize,
}

impl Slice<'_> {
    fn name(&self, t: TaskId) -> &str {
        self.run
            .log
            .tasks
            .get(t.0 as usize)
            .map(String::as_str)
            .unwrap_or("?")
    }

    fn add(&mut self, i: usize, depth: u32, why: impl FnOnce() -> String) {
        if self.why.len() >= self.max || self.why.contains_key(&i) {
            return;
        }
        self.why.insert(i, why());
        self.queue.push_back((i, depth));
    }

    /// Follow the edges back from the story's steps, breadth-first.
    fn grow(&mut self) {
        while let Some((i, depth)) = self.queue.pop_front() {
            if depth >= STORY_DEPTH {
                continue;
            }
            let steps = &self.run.steps;
            let me = steps[i].event.task;
            let num = steps[i].event.step;
            // The latest earlier step of another task that conflicts with one of ours.
            for op in own_ops(&steps[i]) {
                let found = (0..i).rev().find(|&j| {
                    steps[j].event.task != me
                        && steps[j]
                            .footprint
                            .iter()
                            .any(|o| causal(o) && o.depends_on(&op) && !readers(o, &op))
                });
                if let Some(j) = found {
                    let who = self.name(me).to_string();
                    let obj = obj_text(self.run, &op);
                    self.add(j, depth + 1, || format!("{obj}: before {who}'s #{num}"));
                }
            }
            // The task's own previous step, for context.
            if let Some(j) = (0..i).rev().find(|&j| steps[j].event.task == me) {
                self.add(j, depth + 1, || format!("leads to #{num}"));
            }
        }
    }
}

/// The causal story of `v`, the violation `run` ended with: at most `max_steps` steps of the
/// run (see the module header for the slice).
pub fn causal_story(run: &RecordedRun, v: &Violation, max_steps: usize) -> Story {
    let steps = &run.steps;
    let mut slice = Slice {
        run,
        why: BTreeMap::new(),
        queue: VecDeque::new(),
        max: max_steps.max(1),
    };
    let last_of = |t: u32| (0..steps.len()).rev().find(|&i| steps[i].event.task.0 == t);
    let live: Vec<&super::TaskReport> = v.tasks.iter().filter(|t| t.status != "finished").collect();
    let mut seeds: Vec<(usize, String)> = Vec::new();
    match v.kind {
        ViolationKind::LostWakeup => {
            for t in live.iter().filter(|t| t.wait_key.is_some()) {
                let queued = (0..steps.len()).rev().find(|&i| {
                    steps[i].event.task.0 == t.id && steps[i].event.op.kind == OpKind::PrepareToWait
                });
                if let Some(q) = queued {
                    seeds.push((q, format!("{} queues itself to sleep", t.name)));
                    // The wake-ups after it queued: none reached it.
                    let wakes: Vec<usize> = (q + 1..steps.len())
                        .filter(|&i| {
                            steps[i].event.task.0 != t.id && steps[i].event.op.kind == OpKind::Wake
                        })
                        .collect();
                    for &w in wakes.iter().rev().take(3) {
                        seeds.push((
                            w,
                            format!("a wake-up after {} queued; it does not wake it", t.name),
                        ));
                    }
                }
                if let Some(l) = last_of(t.id) {
                    seeds.push((l, format!("{}'s last step before it sleeps", t.name)));
                }
            }
        }
        ViolationKind::Deadlock => {
            let members: BTreeSet<u32> = if v.cycle.is_empty() {
                live.iter().map(|t| t.id).collect()
            } else {
                v.cycle.iter().copied().collect()
            };
            for &m in &members {
                if let Some(l) = last_of(m) {
                    seeds.push((
                        l,
                        format!("{}'s last step before it blocks", task_name(run, m)),
                    ));
                }
                // The steps that took the locks it still holds.
                let mut held: BTreeSet<u32> = BTreeSet::new();
                for i in (0..steps.len()).rev() {
                    let e = &steps[i].event;
                    if e.task.0 != m {
                        continue;
                    }
                    let takes = matches!(
                        e.op.kind,
                        OpKind::Lock | OpKind::TryLock | OpKind::DownRead | OpKind::DownWrite
                    );
                    if takes && still_held(steps, i) && held.insert(e.op.obj.0) {
                        seeds.push((
                            i,
                            format!("{} takes a lock it still holds", task_name(run, m)),
                        ));
                    }
                }
            }
        }
        _ => {
            let centre: Vec<u32> = match v.task {
                Some(t) => vec![t.0],
                None => live.iter().map(|t| t.id).collect(),
            };
            let centre = if centre.is_empty() {
                (0..run.log.tasks.len() as u32).collect()
            } else {
                centre
            };
            for t in centre {
                if let Some(l) = last_of(t) {
                    seeds.push((l, format!("{}'s last step", task_name(run, t))));
                }
            }
        }
    }
    for (i, why) in seeds {
        slice.add(i, 0, || why);
    }
    slice.grow();
    let story: Vec<StoryStep> = slice
        .why
        .iter()
        .map(|(&i, why)| {
            let s = &steps[i];
            StoryStep {
                step: s.event.step,
                task: s.event.task.0,
                task_name: task_name(run, s.event.task.0),
                line: s.event.line,
                what: s.what.clone(),
                path: s.path.iter().map(|f| f.to_string()).collect(),
                why: why.clone(),
            }
        })
        .collect();
    let pending = live
        .iter()
        .map(|t| {
            let mut p = format!("{} [{}] next: {}", t.name, t.status, t.next);
            if let Some(k) = &t.wait_key {
                p.push_str(&format!(", sleeps on {k}"));
            }
            p
        })
        .collect();
    Story {
        steps: story,
        pending,
        run_steps: steps.len(),
    }
}

fn task_name(run: &RecordedRun, t: u32) -> String {
    run.log
        .tasks
        .get(t as usize)
        .cloned()
        .unwrap_or_else(|| format!("task#{t}"))
}

/// Whether the lock taken at step `i` is not released by its task later in the run.
fn still_held(steps: &[RecordedStep], i: usize) -> bool {
    let (t, obj) = (steps[i].event.task, steps[i].event.op.obj);
    !steps[i + 1..].iter().any(|s| {
        s.event.task == t
            && s.footprint.iter().any(|o| {
                o.obj == obj && matches!(o.kind, OpKind::Unlock | OpKind::UpRead | OpKind::UpWrite)
            })
    })
}

impl std::fmt::Display for Story {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for s in &self.steps {
            write!(f, "  #{:<5} {:<8}", s.step, s.task_name)?;
            if s.line > 0 {
                write!(f, " line {:<4}", s.line)?;
            }
            write!(f, " {}", s.what)?;
            if let Some(inner) = s.path.last() {
                write!(f, "  [{inner}]")?;
            }
            writeln!(f, "  ({})", s.why)?;
        }
        for p in &self.pending {
            writeln!(f, "  then   {p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{ExploreConfig, Strategy, explore};

    fn toy(name: &'static str) -> impl Fn(&mut Sim) {
        move |sim: &mut Sim| {
            let p = sim.platform();
            crate::toys::build(name, &p, sim);
        }
    }

    /// The first failing schedule of an exhaustive search of `name`.
    fn failing(name: &'static str) -> (RecordedRun, Violation) {
        let m = toy(name);
        let cfg = ExploreConfig {
            strategy: Strategy::Dfs {
                preemption_bound: None,
            },
            ..ExploreConfig::default()
        };
        let rep = explore(&m, &cfg, &mut |_| {}).unwrap();
        let f = rep.failure.expect("the toy fails");
        let run = record_replay(&m, &f.schedule, 10_000).unwrap();
        let v = run.violation().cloned().expect("the replay fails again");
        assert_eq!(v.kind, f.violation.kind);
        (run, v)
    }

    /// Every story step is a step of the run's log: same number, task, op and line.
    fn assert_in_log(run: &RecordedRun, story: &Story) {
        for s in &story.steps {
            let e = run
                .log
                .events
                .iter()
                .find(|e| e.step == s.step)
                .expect("the story step is in the log");
            assert_eq!((e.task.0, e.line), (s.task, s.line));
            let rec = run.steps.iter().find(|r| r.event.step == s.step).unwrap();
            assert_eq!(rec.event, *e, "recorded step and log event agree");
        }
        let mut sorted = story.steps.clone();
        sorted.sort_by_key(|s| s.step);
        assert_eq!(sorted, story.steps, "the story is in run order");
    }

    #[test]
    fn a_replay_records_what_the_log_records() {
        let (run, _) = failing("lost-wakeup");
        let setup = run.log.events.len() - run.steps.len();
        for (r, e) in run.steps.iter().zip(&run.log.events[setup..]) {
            assert_eq!(r.event, *e);
            // The op itself, or as the footprint folds it ("Footprints"): a wait-queue op
            // that left the waiters as they were reads the queue.
            let folded = Op {
                kind: OpKind::WaitqueueActive,
                ..e.op
            };
            let queue_op = matches!(
                e.op.kind,
                OpKind::Wake | OpKind::Schedule | OpKind::FinishWait
            );
            let first = r.footprint.first();
            assert!(
                first == Some(&e.op) || (queue_op && first == Some(&folded)),
                "the footprint starts with the op: {first:?} for {:?}",
                e.op
            );
        }
        // The recorded choices replay the same run.
        let again = record_replay(&toy("lost-wakeup"), &run.schedule, 10_000).unwrap();
        assert_eq!(again.log.hash, run.log.hash);
    }

    #[test]
    fn lost_wakeup_story_has_the_sleeper_and_the_wake() {
        let (run, v) = failing("lost-wakeup");
        let story = causal_story(&run, &v, STORY_MAX_STEPS);
        assert_in_log(&run, &story);
        assert!(!story.steps.is_empty());
        assert!(
            story
                .steps
                .iter()
                .any(|s| s.what.starts_with("prepare_to_wait")),
            "{story}"
        );
        // The waker can take the flag's lock only after the waiter queued and unlocked it, so
        // its wake-up (of another key) comes after: the wake that missed is in the story.
        assert!(
            story
                .steps
                .iter()
                .any(|s| s.what.starts_with("wake_up") && s.why.contains("does not wake it")),
            "{story}"
        );
        assert!(
            !story.pending.is_empty(),
            "the sleeper's pending schedule is named"
        );
        assert!(story.pending.iter().any(|p| p.contains("sleeps on")));
    }

    #[test]
    fn deadlock_story_has_the_lock_acquisitions() {
        let (run, v) = failing("abba");
        assert_eq!(v.kind, ViolationKind::Deadlock);
        let story = causal_story(&run, &v, STORY_MAX_STEPS);
        assert_in_log(&run, &story);
        // Each task's acquisition of the lock the other one waits for.
        let mut takers: Vec<u32> = story
            .steps
            .iter()
            .filter(|s| s.what.starts_with("lock "))
            .map(|s| s.task)
            .collect();
        takers.dedup();
        assert_eq!(takers.len(), 2, "{story}");
        assert_eq!(
            story.pending.len(),
            2,
            "both blocked lock attempts: {story}"
        );
    }

    #[test]
    fn the_cap_bounds_the_story() {
        let (run, v) = failing("lost-wakeup");
        for cap in [1, 2, 5] {
            let story = causal_story(&run, &v, cap);
            assert!(story.steps.len() <= cap);
            assert!(!story.steps.is_empty());
            assert_in_log(&run, &story);
        }
    }

    #[test]
    fn preemptions_count_switches_away_from_a_task_that_could_go_on() {
        let (run, _) = failing("abba");
        let by_hand = run
            .steps
            .windows(2)
            .filter(|w| {
                w[0].event.task != w[1].event.task && w[1].enabled.contains(&w[0].event.task.0)
            })
            .count();
        assert_eq!(run.preemptions(), by_hand);
        assert!(
            run.preemptions() >= 1,
            "abba deadlocks only with a preemption"
        );
    }
}
