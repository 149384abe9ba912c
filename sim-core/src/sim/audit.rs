//! The commutation audit: a test mode checking that two steps the explorer treats as
//! independent really commute.
//!
//! Sleep sets (and later DPOR) skip the second order of two independent steps, which is sound
//! only if both orders lead to the same state. The audit samples random runs of a model, picks
//! random points where at least two tasks can move, and for a random pair (a, b) of them
//! re-executes the run from the start (a run is a pure function of the model, the seed and the
//! choices) twice: prefix, a, b, continuation and prefix, b, a, the same continuation. The
//! footprints the two steps had at the branching point (the ones the explorer would keep) decide
//! whether the pair is independent under the relation being audited; if it is, the audit
//! requires:
//! - neither step disables the other, and neither's footprint changes when the other runs
//!   first;
//! - the same observable state right after the pair: every task's state and next step, every
//!   lock, rwsem and wait queue, the CPU and task clocks, violations and the kernel log, and the machine
//!   (memory content, persisted image, crash images, pending lines, poison, counters);
//! - the same event log but for the order of the two steps;
//! - the same continuation (the second run must be able to follow the first's choices) and the
//!   same state at the end.
//!
//! Run it with [`audit`] over any [`Model`]; `AuditConfig::depend` selects the relation under
//! audit (the explorer's, [`footprints_depend`], by default).

use super::{ObjState, RunEnd, Sim, SimConfig, State, detect, with_state};
use crate::events::{EventLog, LogEvent};
use crate::machine::CrashOptions;
use crate::platform::{ObjId, Op, OpKind, TaskId, footprints_depend};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt;

use super::explore::Model;

/// Settings of an audit.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    pub seed: u64,
    /// Random runs sampled.
    pub runs: u64,
    /// Pairs examined per run, each at a random point where two or more tasks can move.
    pub pairs_per_run: u32,
    pub step_limit: u64,
    /// The dependence relation under audit: two steps with footprints `a` and `b` may not
    /// commute. The explorer's by default.
    pub depend: fn(&[Op], &[Op]) -> bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            seed: 0,
            runs: 50,
            pairs_per_run: 4,
            step_limit: 100_000,
            depend: footprints_depend,
        }
    }
}

/// A pair of steps the relation calls independent that does not commute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NonCommuting {
    /// The model seed and the task of every step before the pair.
    pub seed: u64,
    pub prefix: Vec<TaskId>,
    /// The two steps, with their footprints at the branching point.
    pub a: (TaskId, String),
    pub b: (TaskId, String),
    /// What differs between the two orders.
    pub difference: String,
}

impl fmt::Display for NonCommuting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "after {} steps (seed {}, tasks {:?}): task {} [{}] and task {} [{}] are independent \
             but do not commute: {}",
            self.prefix.len(),
            self.seed,
            self.prefix.iter().map(|t| t.0).collect::<Vec<_>>(),
            self.a.0.0,
            self.a.1,
            self.b.0.0,
            self.b.1,
            self.difference
        )
    }
}

/// What an audit examined and found.
#[derive(Clone, Debug, Default)]
pub struct AuditReport {
    pub runs: u64,
    /// Pairs of enabled steps examined.
    pub pairs: u64,
    /// Of those, the pairs the relation calls independent: executed in both orders and
    /// compared.
    pub independent: u64,
    pub failures: Vec<NonCommuting>,
}

impl fmt::Display for AuditReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} runs, {} pairs, {} independent, {} not commuting",
            self.runs,
            self.pairs,
            self.independent,
            self.failures.len()
        )?;
        for x in &self.failures {
            writeln!(f, "  {x}")?;
        }
        Ok(())
    }
}

/// The observable state of a run at one moment, as text lines (compared for equality and
/// shown when they differ).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Observation(Vec<String>);

impl Observation {
    fn difference(&self, other: &Observation) -> String {
        for (i, (x, y)) in self.0.iter().zip(&other.0).enumerate() {
            if x != y {
                return format!("line {i}: `{x}` vs `{y}`");
            }
        }
        format!("{} vs {} lines", self.0.len(), other.0.len())
    }
}

fn observe_state(s: &mut State) -> Vec<String> {
    let mut out = Vec::new();
    for (i, t) in s.tasks.iter().enumerate() {
        let wait = t.wait.map(|w| {
            format!(
                "wq {} key {} excl {} woken {}",
                w.wq.0, w.key, w.exclusive, w.woken
            )
        });
        out.push(format!(
            "task {i} {} {:?} next `{}` line {} clock {} spins {} wait {:?} path {:?}",
            t.name,
            t.status,
            detect::describe_op(s, &t.next),
            t.line,
            t.clock,
            t.spins_held,
            wait,
            t.path
        ));
    }
    for (i, o) in s.objs.iter().enumerate() {
        let st = match &o.state {
            ObjState::Lock { holder, .. } => format!("holder {holder:?}"),
            ObjState::RwSem {
                readers,
                writer,
                queued,
            } => {
                // Readers and queued writers are sets: any queued writer may take a free
                // semaphore, and readers leave in any order.
                let (mut r, mut q) = (readers.clone(), queued.clone());
                r.sort_unstable();
                q.sort_unstable();
                format!("readers {r:?} writer {writer:?} queued {q:?}")
            }
            ObjState::WaitQueue { waiters } => {
                let w: Vec<_> = waiters
                    .iter()
                    .map(|w| (w.task, w.key, w.exclusive))
                    .collect();
                format!("waiters {w:?}")
            }
        };
        out.push(format!("obj {i} {} {st}", o.name));
    }
    let mut clocks = s.clocks.clone();
    while clocks.last() == Some(&0) {
        clocks.pop();
    }
    out.push(format!("clocks {clocks:?}"));
    out.push(format!(
        "violation {:?}",
        s.violation
            .as_ref()
            .map(|v| (v.kind.name(), &v.message, v.task))
    ));
    out.push(format!("warnings {:?}", s.warnings));
    if let Some(m) = &mut s.machine {
        let cp = m.crash_point();
        let mut images: Vec<u128> = cp
            .images(CrashOptions {
                k: 2,
                torn: false,
                dedup: true,
            })
            .map(|i| i.hash)
            .collect();
        images.sort_unstable();
        out.push(format!(
            "machine persisted {:#x} pending {:?} images {} {:x?} poison {:?} badblocks {:?} \
             stats {:?}",
            cp.persisted().content_hash(),
            m.pending_lines(),
            images.len(),
            images.iter().fold(0u128, |h, i| h.rotate_left(5) ^ i),
            m.poisoned(),
            m.badblocks(),
            m.stats()
        ));
        out.push(format!("memory {:#x}", m.memory_hash()));
    }
    out
}

fn observe(_sim: &Sim) -> Observation {
    Observation(with_state(observe_state))
}

/// An event with its yield site by name (sites are numbered in first-use order, which two
/// independent steps may change) and without its step number.
fn event_key(log: &EventLog, e: &LogEvent) -> String {
    let arg = match e.op.kind {
        OpKind::Yield => log
            .sites
            .get(e.op.arg as usize)
            .cloned()
            .unwrap_or_default(),
        _ => e.op.arg.to_string(),
    };
    format!(
        "task {} {:?} obj {} arg {} t={} line {}",
        e.task.0, e.op.kind, e.op.obj.0, arg, e.time, e.line
    )
}

/// One execution: follows `script`, then (with `cont`) random choices.
struct Exec {
    /// The task of every step taken.
    taken: Vec<TaskId>,
    /// The tasks that could move before each step.
    enabled: Vec<Vec<TaskId>>,
    /// The footprint of every step taken.
    footprints: Vec<Vec<Op>>,
    /// `script[k]` could not move at step k.
    diverged: Option<usize>,
    /// The state after `observe_at` steps, if the run got there.
    mid: Option<Observation>,
    end: Observation,
    log: EventLog,
    /// Steps the model's setup took before the run (a setup that drives the simulation).
    base: usize,
    /// Where each step taken starts in the event log (a step of an atomic section logs one
    /// event per op it ran).
    starts: Vec<usize>,
}

fn execute(
    model: &dyn Model,
    seed: u64,
    step_limit: u64,
    script: &[TaskId],
    mut cont: Option<&mut ChaCha8Rng>,
    observe_at: usize,
) -> Exec {
    let mut sim = Sim::new(SimConfig {
        seed,
        step_limit,
        record_log: true,
    });
    model.setup(&mut sim);
    let base = sim.steps() as usize;
    let mut taken = Vec::new();
    let mut enabled = Vec::new();
    let mut footprints: Vec<Vec<Op>> = Vec::new();
    let mut starts = Vec::new();
    let mut diverged = None;
    let mut mid = None;
    let end = sim.run_steps(|sim, en| {
        if !taken.is_empty() {
            footprints.push(sim.last_footprint().to_vec());
        }
        let k = taken.len();
        if k == observe_at {
            mid = Some(observe(sim));
        }
        let t = match script.get(k) {
            Some(&t) if en.contains(&t) => t,
            Some(_) => {
                diverged = Some(k);
                return None;
            }
            None => {
                let rng = cont.as_deref_mut()?;
                en[rng.random_range(0..en.len())]
            }
        };
        enabled.push(en.to_vec());
        taken.push(t);
        starts.push(sim.steps() as usize);
        Some(t)
    });
    if footprints.len() < taken.len() {
        footprints.push(sim.last_footprint().to_vec());
    }
    if mid.is_none() && taken.len() == observe_at {
        mid = Some(observe(&sim));
    }
    let mut end_obs = observe(&sim);
    end_obs.0.push(match &end {
        RunEnd::Violation(v) => format!("end {} {}", v.kind.name(), v.message),
        _ => format!("end {}", end.name()),
    });
    Exec {
        taken,
        enabled,
        footprints,
        diverged,
        mid,
        end: end_obs,
        log: sim.event_log(),
        base,
        starts,
    }
}

fn describe(fp: &[Op]) -> String {
    fp.iter()
        .map(|o| {
            let obj = match o.obj {
                Op::NONE => String::new(),
                Op::MACHINE => " machine".into(),
                Op::DMESG => " dmesg".into(),
                Op::ALLOC => " object-table".into(),
                ObjId(id) if (Op::TASK_BASE..Op::TASK_END).contains(&id) && o.arg > 1 => {
                    let first = id - Op::TASK_BASE;
                    format!(" task{first}..{}-exits", first as u64 + o.arg - 1)
                }
                ObjId(id) if (Op::TASK_BASE..Op::TASK_END).contains(&id) => {
                    format!(" task{}-exit", id - Op::TASK_BASE)
                }
                ObjId(id) if (Op::CPU_BASE..Op::CPU_END).contains(&id) => {
                    format!(" cpu{}-clock", id - Op::CPU_BASE)
                }
                ObjId(id) if (Op::SET_BASE..Op::SET_END).contains(&id) => {
                    format!(" cache-set{}+{}", id - Op::SET_BASE, o.arg.max(1))
                }
                ObjId(id) if (Op::DIMM_BASE..Op::DIMM_END).contains(&id) => {
                    format!(" dimm{}", id - Op::DIMM_BASE)
                }
                ObjId(id) if (Op::PART_BASE..Op::PART_END).contains(&id) => {
                    let (l, first, len) = o.part_of().expect("an id in the part space");
                    format!(" obj#{}[{first:#x}+{len:#x}]", l.0)
                }
                ObjId(id) if (Op::MEM_BASE..Op::MEM_END).contains(&id) => {
                    format!(
                        " pmem {:#x}+{} line(s)",
                        u64::from(id - Op::MEM_BASE) * 64,
                        o.arg
                    )
                }
                ObjId(id) => format!(" obj#{id}"),
            };
            format!("{:?}{obj}", o.kind)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn same_set(a: &[Op], b: &[Op]) -> bool {
    a.iter().all(|x| b.contains(x)) && b.iter().all(|x| a.contains(x))
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Compares the two orders of the pair at step `k`; `None` when they commute (or the relation
/// calls them dependent, counted by the caller through the returned flag).
fn compare(
    k: usize,
    x: &Exec,
    y: &Exec,
    depend: fn(&[Op], &[Op]) -> bool,
) -> (bool, Option<String>) {
    let (a, b) = (x.taken[k], y.taken[k]);
    let fa = &x.footprints[k];
    let fb = &y.footprints[k];
    if depend(fa, fb) {
        return (false, None);
    }
    // A step that ends the run (a violation) ends it in both orders, with the same report.
    let ended = |e: &Exec| e.diverged.is_none() && e.taken.len() < k + 2;
    if ended(x) || ended(y) {
        let (p, q) = (x.end.0.last(), y.end.0.last());
        return match p == q {
            true => (true, None),
            false => (true, Some(format!("the run ends as `{p:?}` vs `{q:?}`"))),
        };
    }
    if x.diverged == Some(k + 1) {
        return (
            true,
            Some(format!("task {} cannot move after task {}", b.0, a.0)),
        );
    }
    if y.diverged == Some(k + 1) {
        return (
            true,
            Some(format!("task {} cannot move after task {}", a.0, b.0)),
        );
    }
    if let Some(d) = y.diverged {
        return (
            true,
            Some(format!(
                "the continuation diverges at step {d}: task {} cannot move",
                x.taken.get(d).map_or(u32::MAX, |t| t.0)
            )),
        );
    }
    if x.footprints.len() > k + 1 && !same_set(&x.footprints[k + 1], fb) {
        return (
            true,
            Some(format!(
                "task {}'s footprint after task {} is [{}], not [{}]",
                b.0,
                a.0,
                describe(&x.footprints[k + 1]),
                describe(fb)
            )),
        );
    }
    if y.footprints.len() > k + 1 && !same_set(&y.footprints[k + 1], fa) {
        return (
            true,
            Some(format!(
                "task {}'s footprint after task {} is [{}], not [{}]",
                a.0,
                b.0,
                describe(&y.footprints[k + 1]),
                describe(fa)
            )),
        );
    }
    match (&x.mid, &y.mid) {
        (Some(p), Some(q)) if p != q => {
            return (
                true,
                Some(format!("state after the pair: {}", p.difference(q))),
            );
        }
        _ => {}
    }
    // The event logs: equal but for the order of the pair.
    let (lx, ly) = (&x.log, &y.log);
    let keys =
        |log: &EventLog| -> Vec<String> { log.events.iter().map(|e| event_key(log, e)).collect() };
    let (mut kx, mut ky) = (keys(lx), keys(ly));
    if x.base != y.base {
        return (
            true,
            Some(format!("setup took {} vs {} steps", x.base, y.base)),
        );
    }
    // The pair's events in `y` (b's, then a's) put back in `x`'s order.
    let pair = |e: &Exec, log: &[String]| -> Option<(usize, usize, usize)> {
        let at = *e.starts.get(k)?;
        let mid = *e.starts.get(k + 1)?;
        let end = e.starts.get(k + 2).copied().unwrap_or(log.len());
        Some((at, mid, end))
    };
    if let (Some(_), Some((at, mid, end))) = (pair(x, &kx), pair(y, &ky)) {
        ky[at..end].rotate_left(mid - at);
    }
    if kx != ky {
        let i = kx.iter().zip(&ky).position(|(p, q)| p != q).unwrap_or(0);
        kx.truncate(i + 1);
        ky.truncate(i + 1);
        return (
            true,
            Some(format!(
                "event log at step {i}: `{}` vs `{}`",
                kx.last().cloned().unwrap_or_default(),
                ky.last().cloned().unwrap_or_default()
            )),
        );
    }
    if x.end != y.end {
        return (
            true,
            Some(format!("state at the end: {}", x.end.difference(&y.end))),
        );
    }
    (true, None)
}

/// Audit `model`: sample pairs of enabled steps the relation calls independent and check that
/// they commute (see the module docs).
pub fn audit(model: &dyn Model, cfg: &AuditConfig) -> AuditReport {
    let mut rep = AuditReport::default();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    for r in 0..cfg.runs {
        let seed = splitmix64(cfg.seed ^ splitmix64(r));
        let mut run_rng = ChaCha8Rng::seed_from_u64(seed);
        let sample = execute(model, seed, cfg.step_limit, &[], Some(&mut run_rng), 0);
        rep.runs += 1;
        let points: Vec<usize> = (0..sample.enabled.len())
            .filter(|&i| sample.enabled[i].len() >= 2)
            .collect();
        for _ in 0..cfg.pairs_per_run {
            if points.is_empty() {
                break;
            }
            let k = points[rng.random_range(0..points.len())];
            let en = &sample.enabled[k];
            let i = rng.random_range(0..en.len());
            let mut j = rng.random_range(0..en.len() - 1);
            if j >= i {
                j += 1;
            }
            let (a, b) = (en[i], en[j]);
            rep.pairs += 1;
            let prefix = &sample.taken[..k];
            let mut script: Vec<TaskId> = prefix.to_vec();
            script.extend([a, b]);
            let mut cont_rng = ChaCha8Rng::seed_from_u64(rng.random());
            let x = execute(
                model,
                seed,
                cfg.step_limit,
                &script,
                Some(&mut cont_rng),
                k + 2,
            );
            // The second order follows the first's continuation exactly.
            let mut script2: Vec<TaskId> = prefix.to_vec();
            script2.extend([b, a]);
            if x.diverged.is_none() {
                script2.extend_from_slice(x.taken.get(k + 2..).unwrap_or(&[]));
            }
            let y = execute(model, seed, cfg.step_limit, &script2, None, k + 2);
            if x.footprints.len() <= k || y.footprints.len() <= k {
                continue;
            }
            let (independent, diff) = compare(k, &x, &y, cfg.depend);
            if independent {
                rep.independent += 1;
            }
            if let Some(difference) = diff {
                rep.failures.push(NonCommuting {
                    seed,
                    prefix: prefix.to_vec(),
                    a: (a, describe(&x.footprints[k])),
                    b: (b, describe(&y.footprints[k])),
                    difference,
                });
            }
        }
    }
    rep
}

/// The explorer's relation with the implicit accesses left out: only the announced ops count
/// (the relation before footprints covered clocks, the machine and dropped guards). For tests
/// showing that the audit catches an unsound relation.
pub fn announced_ops_only(a: &[Op], b: &[Op]) -> bool {
    match (a.first(), b.first()) {
        (Some(x), Some(y)) => x.depends_on(y),
        _ => false,
    }
}
