//! `pmsim minimize TRACE --schedule S -o OUT.trace`: shrink a failure while the same violation
//! reproduces.
//!
//! **Same violation**: the same kind (`lost-wakeup`, `assertion:data`, ...) and, for a lost
//! wakeup, sleepers on the same wait queues by name (a statement naming a mapping nobody made
//! also ends in a lost wakeup, on `trace_mapping_names`, and must not count).
//!
//! **Schedules** are shrunk as *plans*: the choices of a run that differ from the default rule
//! (the task that ran last goes on if it can, else the lowest task id). A plan replays its run
//! exactly; delta debugging (ddmin) drops chunks of it, re-runs, and keeps a candidate whose run
//! shows the same violation with fewer preemptions (then fewer deviations, then fewer steps).
//! When no chunk can go, switch points move (`merge_switches`: a stretch between two switches
//! dropped, later deviations one choice earlier, or a deviation in place of the one before it),
//! and ddmin starts again. The plan of
//! the kept run is recomputed from the run itself, so what is kept always replays.
//!
//! **Traces** are shrunk by whole threads, then single statements, then numbers: each `len`,
//! `size` (halved, or 1) and `off` (0, or halved) field of a statement, and each header file's
//! size. A candidate is printed and parsed again (so the output is a valid trace), loaded as the
//! runner would load it (a candidate it refuses is skipped), and searched for the violation: the
//! current plan, the default rule alone, then a few seeded random schedules.
//!
//! Everything is deterministic: candidates in a fixed order, a fixed random stream, bounded by
//! `--max-runs` and `--max-traces`.

use crate::report::{ScheduleText, Subject, plural, replay_command};
use sim_core::platform::TaskId;
use sim_core::sim::story::{RecordedRun, record_run};
use sim_core::sim::{ExploreConfig, Model, Schedule, Sim, Violation, ViolationKind};
use sim_core::trace::{ParseOptions, Trace, parse_bytes, print};
use std::path::Path;

/// What has to reproduce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub kind: String,
    /// For a lost wakeup: the names of the queues the sleepers sleep on.
    pub queues: Vec<String>,
}

impl Signature {
    pub fn of(v: &Violation) -> Signature {
        let mut queues: Vec<String> = match v.kind {
            ViolationKind::LostWakeup => v
                .tasks
                .iter()
                .filter_map(|t| t.wait_key.as_ref())
                .map(|k| k.split('#').next().unwrap_or("").to_string())
                .collect(),
            _ => Vec::new(),
        };
        queues.sort();
        queues.dedup();
        Signature {
            kind: v.kind.name(),
            queues,
        }
    }

    pub fn describe(&self) -> String {
        if self.queues.is_empty() {
            self.kind.clone()
        } else {
            format!("{} on {}", self.kind, self.queues.join(", "))
        }
    }
}

/// A choice that differs from the default rule: at choice point `.0`, task `.1`.
type Plan = Vec<(usize, u32)>;

/// The default rule: the task that ran last goes on if it can, else the lowest id.
fn default_choice(en: &[u32], prev: Option<u32>) -> u32 {
    match prev {
        Some(p) if en.contains(&p) => p,
        _ => en.iter().copied().min().unwrap_or(0),
    }
}

/// The plan that replays `run` exactly.
fn plan_of(run: &RecordedRun) -> Plan {
    let mut plan = Vec::new();
    let mut prev = None;
    let mut k = 0;
    for s in &run.steps {
        if s.enabled.len() > 1 {
            if s.event.task.0 != default_choice(&s.enabled, prev) {
                plan.push((k, s.event.task.0));
            }
            k += 1;
        }
        prev = Some(s.event.task.0);
    }
    plan
}

/// How small a failing run is: preemptions, then deviations from the default rule, then steps.
fn measure(run: &RecordedRun) -> (usize, usize, usize) {
    (run.preemptions(), plan_of(run).len(), run.steps.len())
}

/// The run budget, shared by every search of one minimization.
struct Budget {
    runs: u64,
    max_runs: u64,
    traces: u64,
    max_traces: u64,
}

impl Budget {
    fn take_run(&mut self) -> bool {
        if self.runs >= self.max_runs {
            return false;
        }
        self.runs += 1;
        true
    }
}

/// Run `model` following `plan` (a planned task that cannot move is skipped: the default rule
/// decides there).
fn plan_run(model: &dyn Model, seed: u64, step_limit: u64, plan: &[(usize, u32)]) -> RecordedRun {
    let mut k = 0usize;
    let mut choose = |_: &Sim, en: &[TaskId], prev: Option<TaskId>| {
        let want = plan.iter().find(|(i, _)| *i == k).map(|&(_, t)| t);
        k += 1;
        let ids: Vec<u32> = en.iter().map(|t| t.0).collect();
        let t = match want {
            Some(t) if ids.contains(&t) => t,
            _ => default_choice(&ids, prev.map(|p| p.0)),
        };
        TaskId(t)
    };
    record_run(model, seed, step_limit, &mut choose)
}

/// A run with uniformly random choices from a fixed stream (splitmix64 of `stream`).
fn random_run(model: &dyn Model, seed: u64, step_limit: u64, stream: u64) -> RecordedRun {
    let mut x = stream.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x6d69_6e69_6d69_7a65;
    let mut choose = |_: &Sim, en: &[TaskId], _: Option<TaskId>| {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        en[(z % en.len() as u64) as usize]
    };
    record_run(model, seed, step_limit, &mut choose)
}

fn shows(run: &RecordedRun, sig: &Signature) -> bool {
    run.violation().is_some_and(|v| Signature::of(v) == *sig)
}

/// Delta debugging over the plan of `run`: drop chunks of deviations while the violation stays
/// and the run gets smaller ([`measure`]).
fn shrink_schedule(
    model: &dyn Model,
    step_limit: u64,
    mut best: RecordedRun,
    sig: &Signature,
    budget: &mut Budget,
) -> RecordedRun {
    let seed = best.schedule.seed;
    let mut n = 2usize;
    loop {
        let plan = plan_of(&best);
        if plan.is_empty() {
            return best;
        }
        let n_chunks = n.min(plan.len());
        let size = plan.len().div_ceil(n_chunks);
        let mut improved = false;
        // Later chunks first: deviations after the ones that matter go first.
        for c in (0..n_chunks).rev() {
            let (lo, hi) = (c * size, ((c + 1) * size).min(plan.len()));
            if lo >= hi {
                continue;
            }
            if !budget.take_run() {
                return best;
            }
            let cand: Plan = plan[..lo].iter().chain(&plan[hi..]).copied().collect();
            let run = plan_run(model, seed, step_limit, &cand);
            if shows(&run, sig) && measure(&run) < measure(&best) {
                best = run;
                improved = true;
                break;
            }
        }
        if improved {
            n = (n - 1).max(2);
        } else if n_chunks < plan.len() {
            n = (n * 2).min(plan.len());
        } else if let Some(run) = merge_switches(model, step_limit, &best, sig, budget) {
            // A switch point moved: drop chunks again.
            best = run;
            n = 2;
        } else {
            return best;
        }
    }
}

/// Move switch points, for runs that removal alone cannot shrink (a switch that must come
/// earlier than any the run made): the stretch one deviation starts dropped (the later
/// switches come that much earlier), every deviation from the `i`-th on one choice earlier
/// (as if a step before them were gone), then each deviation in place of the one before it
/// (the earlier switch goes). The first candidate that keeps the violation with a smaller run
/// wins.
fn merge_switches(
    model: &dyn Model,
    step_limit: u64,
    best: &RecordedRun,
    sig: &Signature,
    budget: &mut Budget,
) -> Option<RecordedRun> {
    let plan = plan_of(best);
    let mut cands: Vec<Plan> = Vec::new();
    // Drop the stretch that deviation `i` starts: the next deviation takes its place, and the
    // later ones come that many choices earlier (the dropped steps run later, by default).
    for i in 0..plan.len() {
        let mut c: Plan = plan[..i].to_vec();
        if let Some(&(next_k, next_t)) = plan.get(i + 1) {
            let len = next_k - plan[i].0;
            c.push((plan[i].0, next_t));
            c.extend(plan[i + 2..].iter().map(|&(k, t)| (k - len, t)));
        }
        cands.push(c);
    }
    for i in 0..plan.len() {
        let free = if i == 0 { 0 } else { plan[i - 1].0 + 1 };
        if plan[i].0 > free {
            let mut c = plan.clone();
            for d in &mut c[i..] {
                d.0 -= 1;
            }
            cands.push(c);
        }
    }
    for i in (1..plan.len()).rev() {
        let mut c = plan.clone();
        c[i - 1].1 = plan[i].1;
        c.remove(i);
        cands.push(c);
    }
    for cand in cands {
        if !budget.take_run() {
            return None;
        }
        let run = plan_run(model, best.schedule.seed, step_limit, &cand);
        if shows(&run, sig) && measure(&run) < measure(best) {
            return Some(run);
        }
    }
    None
}

/// Search `model` for `sig`: the plan `hint`, the default rule alone, then random schedules.
fn find_failure(
    model: &dyn Model,
    seed: u64,
    step_limit: u64,
    hint: &[(usize, u32)],
    sig: &Signature,
    budget: &mut Budget,
) -> Option<RecordedRun> {
    const RANDOM_TRIES: u64 = 4;
    let plans: &[&[(usize, u32)]] = if hint.is_empty() {
        &[&[]]
    } else {
        &[hint, &[]]
    };
    for plan in plans {
        if !budget.take_run() {
            return None;
        }
        let run = plan_run(model, seed, step_limit, plan);
        if shows(&run, sig) {
            return Some(run);
        }
    }
    for stream in 0..RANDOM_TRIES {
        if !budget.take_run() {
            return None;
        }
        let run = random_run(model, seed, step_limit, stream);
        if shows(&run, sig) {
            return Some(run);
        }
    }
    None
}

/// A trace candidate, printed and parsed again, loaded as the runner loads it.
struct Candidate {
    trace: Trace,
    model: Box<dyn Model>,
}

fn load(trace: &Trace, name: &str, check_invariants: bool) -> Option<Candidate> {
    let text = print(trace);
    let opts = ParseOptions {
        known_bugs: Some(sim_mm::bugs::bug_names()),
    };
    let parsed = parse_bytes(text.as_bytes(), name, &opts).ok()?;
    crate::trace_model::machine_config(&parsed).ok()?;
    let model = crate::trace_model::load(parsed.clone(), &[], check_invariants).ok()?;
    Some(Candidate {
        trace: parsed,
        model: Box::new(model),
    })
}

/// The JSON pointers of the `len`, `size` and `off` numbers in `v`, depth first.
fn number_fields(v: &serde_json::Value, at: &str, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let here = format!("{at}/{k}");
                if x.is_u64() {
                    if matches!(k.as_str(), "len" | "size" | "off") {
                        out.push(here);
                    }
                } else {
                    number_fields(x, &here, out);
                }
            }
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                number_fields(x, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// `op` with the number at `field` set to `n`, if that is still an op.
fn with_number<T: serde::Serialize + serde::de::DeserializeOwned>(
    op: &T,
    field: &str,
    n: u64,
) -> Option<T> {
    let mut v = serde_json::to_value(op).ok()?;
    *v.pointer_mut(field)? = n.into();
    serde_json::from_value(v).ok()
}

fn number_at<T: serde::Serialize>(op: &T, field: &str) -> Option<u64> {
    serde_json::to_value(op).ok()?.pointer(field)?.as_u64()
}

/// The trace-shrinking state: the best trace so far, its failing run and model.
struct TraceShrink<'a> {
    trace: Trace,
    run: RecordedRun,
    model: Option<Box<dyn Model>>,
    sig: &'a Signature,
    seed: u64,
    step_limit: u64,
    check_invariants: bool,
    budget: &'a mut Budget,
}

impl TraceShrink<'_> {
    fn out_of_budget(&self) -> bool {
        self.budget.traces >= self.budget.max_traces || self.budget.runs >= self.budget.max_runs
    }

    /// Try `c`; keep it when it loads and shows the violation.
    fn attempt(&mut self, c: Trace) -> bool {
        if self.out_of_budget() || c == self.trace || c.all_statements().next().is_none() {
            return false;
        }
        self.budget.traces += 1;
        let Some(cand) = load(&c, "minimize", self.check_invariants) else {
            return false;
        };
        let hint = plan_of(&self.run);
        let found = find_failure(
            cand.model.as_ref(),
            self.seed,
            self.step_limit,
            &hint,
            self.sig,
            self.budget,
        );
        match found {
            Some(run) => {
                self.trace = cand.trace;
                self.run = run;
                self.model = Some(cand.model);
                true
            }
            None => false,
        }
    }

    /// Whole threads, then single statements (last first), then numbers.
    fn shrink(&mut self) {
        let mut threads: Vec<String> = Vec::new();
        for s in self.trace.all_statements() {
            if !threads.contains(&s.thread) {
                threads.push(s.thread.clone());
            }
        }
        if threads.len() > 1 {
            for th in &threads {
                let mut c = self.trace.clone();
                c.statements.retain(|s| &s.thread != th);
                if let Some(a) = &mut c.after_crash {
                    a.statements.retain(|s| &s.thread != th);
                }
                self.attempt(c);
            }
        }
        let mut i = self.trace.statements.len();
        while i > 0 {
            i -= 1;
            if i < self.trace.statements.len() {
                let mut c = self.trace.clone();
                c.statements.remove(i);
                self.attempt(c);
            }
        }
        let mut i = self
            .trace
            .after_crash
            .as_ref()
            .map_or(0, |a| a.statements.len());
        while i > 0 {
            i -= 1;
            let mut c = self.trace.clone();
            if let Some(a) = &mut c.after_crash
                && i < a.statements.len()
            {
                a.statements.remove(i);
                self.attempt(c);
            }
        }
        for i in 0..self.trace.statements.len() {
            let mut fields = Vec::new();
            if let Ok(v) = serde_json::to_value(&self.trace.statements[i].op) {
                number_fields(&v, "", &mut fields);
            }
            for f in fields {
                self.shrink_number(&f, |t| &mut t.statements[i].op);
            }
        }
        for i in 0..self.trace.header.files.len() {
            self.shrink_number("/size", |t| &mut t.header.files[i]);
        }
    }

    /// The number at `field` of the item `item` picks: its least value (1, or 0 for an
    /// offset), else halved while that keeps the violation.
    fn shrink_number<T>(&mut self, field: &str, item: impl Fn(&mut Trace) -> &mut T)
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        let least = if field.ends_with("/off") { 0 } else { 1 };
        // Set the number to `n` in a copy of the best trace and try it.
        let try_value = |me: &mut Self, n: u64| -> bool {
            let mut t = me.trace.clone();
            match with_number(item(&mut t), field, n) {
                Some(new) => {
                    *item(&mut t) = new;
                    me.attempt(t)
                }
                None => false,
            }
        };
        let current = |me: &Self| {
            let mut t = me.trace.clone();
            number_at(item(&mut t), field)
        };
        match current(self) {
            Some(n) if n > least => {}
            _ => return,
        }
        if try_value(self, least) {
            return;
        }
        // Halve while the violation stays (the least value failed, so stop above it).
        while let Some(n) = current(self) {
            if n / 2 <= least || !try_value(self, n / 2) {
                return;
            }
        }
    }
}

/// Sizes of a failure, before and after.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Size {
    pub statements: usize,
    pub threads: usize,
    pub preemptions: usize,
    pub steps: usize,
    pub schedule: String,
}

fn size_of(t: &Trace, run: &RecordedRun) -> Size {
    let mut threads: Vec<&str> = t.all_statements().map(|s| s.thread.as_str()).collect();
    threads.sort_unstable();
    threads.dedup();
    Size {
        statements: t.all_statements().count(),
        threads: threads.len(),
        preemptions: run.preemptions(),
        steps: run.steps.len(),
        schedule: run.schedule.to_string(),
    }
}

/// The bounds and settings of [`minimize`].
pub struct Limits {
    /// Runs in all (schedule and trace shrinking together).
    pub max_runs: u64,
    /// Candidate traces loaded.
    pub max_traces: u64,
    /// The sim-mm invariants after every step, in every run (as `--check-invariants`).
    pub check_invariants: bool,
}

/// The result of [`minimize`].
pub struct Minimized {
    pub signature: Signature,
    pub before: Size,
    pub after: Size,
    /// The minimized trace, as the printer writes it.
    pub text: String,
    pub schedule: Schedule,
    pub runs: u64,
    pub traces_tried: u64,
}

/// Shrink the failure `schedule` shows on `trace` (`model` is `trace` loaded). `Err`: the
/// schedule does not replay on the trace, or shows no violation.
pub fn minimize(
    trace: &Trace,
    model: &dyn Model,
    schedule: &Schedule,
    cfg: &ExploreConfig,
    limits: &Limits,
) -> Result<Minimized, String> {
    let step_limit = cfg.step_limit;
    let first = sim_core::sim::story::record_replay(model, schedule, step_limit)
        .map_err(|e| format!("the schedule does not replay on this trace: {e}"))?;
    if first.schedule.choices.len() != schedule.choices.len() {
        return Err(format!(
            "the schedule does not fit this trace: the run made {} where the schedule has {}",
            plural(first.schedule.choices.len() as u64, "choice", "choices"),
            schedule.choices.len()
        ));
    }
    let Some(v) = first.violation() else {
        return Err("the schedule shows no violation on this trace: nothing to minimize".into());
    };
    let sig = Signature::of(v);
    let before = size_of(trace, &first);
    let mut budget = Budget {
        runs: 1,
        max_runs: limits.max_runs,
        traces: 0,
        max_traces: limits.max_traces,
    };
    let seed = schedule.seed;
    let best_run = shrink_schedule(model, step_limit, first, &sig, &mut budget);
    let mut shrink = TraceShrink {
        trace: trace.clone(),
        run: best_run,
        model: None,
        sig: &sig,
        seed,
        step_limit,
        check_invariants: limits.check_invariants,
        budget: &mut budget,
    };
    shrink.shrink();
    let (best_trace, best_run, best_model) = (shrink.trace, shrink.run, shrink.model);
    let final_model: &dyn Model = best_model.as_deref().unwrap_or(model);
    let best_run = shrink_schedule(final_model, step_limit, best_run, &sig, &mut budget);
    // What is reported replays exactly: the recorded choices, checked once more.
    let check = sim_core::sim::story::record_replay(final_model, &best_run.schedule, step_limit)
        .map_err(|e| format!("internal: the minimized schedule does not replay: {e}"))?;
    if !shows(&check, &sig) || check.log.hash != best_run.log.hash {
        return Err("internal: the minimized schedule does not reproduce the violation".into());
    }
    Ok(Minimized {
        signature: sig,
        before,
        after: size_of(&best_trace, &best_run),
        text: print(&best_trace),
        schedule: best_run.schedule.clone(),
        runs: budget.runs + 1,
        traces_tried: budget.traces,
    })
}

/// The first line of every file minimize writes: an existing file is replaced only when it
/// starts with it (pmsim wrote it).
pub const MARK: &str = "# minimized by pmsim";

/// The output file: the mark, where it came from, the replay command, then the trace.
pub fn output_text(m: &Minimized, input: &Path, replay: &str) -> String {
    format!(
        "{MARK} from {}: {}\n# replay: {replay}\n{}",
        input.display(),
        m.signature.describe(),
        m.text
    )
}

/// The replay command of the minimized trace at `out`.
pub fn replay_of(m: &Minimized, out: &Path, cfg: &ExploreConfig, check_invariants: bool) -> String {
    let subject = Subject::Trace {
        path: out.to_path_buf(),
        bugs: Vec::new(),
        check_invariants,
    };
    replay_command(&subject, cfg, ScheduleText::Inline(&m.schedule.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sim_core::sim::story::record_replay;
    use sim_core::sim::{Strategy, explore};

    fn toy(name: &'static str) -> impl Fn(&mut Sim) {
        move |sim: &mut Sim| {
            let p = sim.platform();
            if name == "abba+noise" {
                // abba beside two tasks that only yield: random schedules preempt them often,
                // the deadlock needs one preemption.
                for t in ["n1", "n2"] {
                    sim_core::platform::Spawner::spawn(sim, t, move || async move {
                        for _ in 0..6 {
                            sim_core::platform::Platform::yield_point(&p, "noise").await;
                        }
                    });
                }
                sim_core::toys::build("abba", &p, sim);
            } else {
                sim_core::toys::build(name, &p, sim);
            }
        }
    }

    /// Failing runs of a toy found by random search (many preemptions), seeds 0..n.
    fn random_failures(name: &'static str, n: u64) -> Vec<RecordedRun> {
        let m = toy(name);
        (0..n)
            .filter_map(|seed| {
                let cfg = ExploreConfig {
                    strategy: Strategy::Random,
                    seed,
                    runs: Some(200),
                    ..ExploreConfig::default()
                };
                let f = explore(&m, &cfg, &mut |_| {}).unwrap().failure?;
                Some(record_replay(&m, &f.schedule, 10_000).unwrap())
            })
            .collect()
    }

    #[test]
    fn a_plan_replays_its_run_exactly() {
        for name in ["abba", "lost-wakeup"] {
            let m = toy(name);
            for run in random_failures(name, 4) {
                let again = plan_run(&m, run.schedule.seed, 10_000, &plan_of(&run));
                assert_eq!(again.log.hash, run.log.hash, "{name}");
                assert_eq!(again.schedule, run.schedule, "{name}");
            }
        }
    }

    #[test]
    fn shrinking_keeps_the_violation_and_never_grows_the_run() {
        let mut shrunk_some = false;
        for name in ["abba", "lost-wakeup", "abba+noise"] {
            let m = toy(name);
            for run in random_failures(name, 4) {
                let sig = Signature::of(run.violation().unwrap());
                let before = measure(&run);
                let mut budget = Budget {
                    runs: 0,
                    max_runs: 200,
                    traces: 0,
                    max_traces: 0,
                };
                let best = shrink_schedule(&m, 10_000, run, &sig, &mut budget);
                assert!(shows(&best, &sig), "{name}");
                assert!(measure(&best) <= before, "{name}");
                shrunk_some |= measure(&best) < before;
                // Each fails with one preemption.
                assert!(
                    best.preemptions() <= 1,
                    "{name}: {:?} plan {:?} steps {:?}",
                    measure(&best),
                    plan_of(&best),
                    best.steps
                        .iter()
                        .map(|s| (s.event.task.0, s.what.clone(), s.enabled.clone()))
                        .collect::<Vec<_>>()
                );
                // Noise steps are not preemptions, but what remains is the failing core.
                assert!(best.steps.len() <= before.2, "{name}");
                // What is kept replays exactly from its schedule string.
                let text = best.schedule.to_string();
                let again = record_replay(&m, &text.parse().unwrap(), 10_000).unwrap();
                assert_eq!(again.log.hash, best.log.hash);
            }
        }
        assert!(shrunk_some, "random schedules have preemptions to drop");
    }

    #[test]
    fn the_signature_of_a_lost_wakeup_names_the_queues() {
        let run = &random_failures("lost-wakeup", 1)[0];
        let sig = Signature::of(run.violation().unwrap());
        assert_eq!(sig.kind, "lost-wakeup");
        assert!(!sig.queues.is_empty());
        assert!(sig.queues.iter().all(|q| !q.contains('#')), "{sig:?}");
        let abba = &random_failures("abba", 1)[0];
        let d = Signature::of(abba.violation().unwrap());
        assert_eq!((d.kind.as_str(), d.queues.len()), ("deadlock", 0));
    }

    #[test]
    fn numbers_are_found_and_set_by_pointer() {
        let v = serde_json::json!({"Load": {"at": {"map": "a", "off": 4096}, "len": 8}});
        let mut f = Vec::new();
        number_fields(&v, "", &mut f);
        f.sort();
        assert_eq!(f, vec!["/Load/at/off", "/Load/len"]);
        let mut w = v.clone();
        *w.pointer_mut("/Load/len").unwrap() = 1.into();
        assert_eq!(w["Load"]["len"], 1);
    }
}
