//! Reports: the human text, the `--json` summary, and safe file output.

use serde::Serialize;
use sim_core::events::EventQueue;
use sim_core::platform::TaskId;
use sim_core::sim::explore::Determinism;
use sim_core::sim::story::{RecordedRun, STORY_MAX_STEPS, Story, causal_story};
use sim_core::sim::{ExploreConfig, ExploreReport, Sim, Strategy, TaskReport, explore};
use sim_fs::runner::{FaultStats, ThreadStats};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A line of output. A failed write (a closed pipe, a full disk) must not panic; the caller's
/// writer records it (see `main.rs`).
macro_rules! outln {
    ($w:expr) => {
        let _ = writeln!($w);
    };
    ($w:expr, $($t:tt)*) => {
        let _ = writeln!($w, $($t)*);
    };
}

/// What was run.
pub enum Subject {
    /// A trace with the `--bug` modes added on the command line and whether the invariants run
    /// at every step (both part of what a replay must repeat).
    Trace {
        path: PathBuf,
        bugs: Vec<String>,
        check_invariants: bool,
    },
    Toy(String),
    /// A built-in DAX model (`sim_mm::dax::models`) with the bug modes switched on.
    Model {
        name: String,
        bugs: Vec<String>,
    },
}

impl Subject {
    fn describe(&self) -> String {
        match self {
            Subject::Trace { path, .. } => path.display().to_string(),
            Subject::Toy(n) => format!("toy model {n}"),
            Subject::Model { name, bugs } if bugs.is_empty() => format!("DAX model {name}"),
            Subject::Model { name, bugs } => {
                format!("DAX model {name} with bug {}", bugs.join(", "))
            }
        }
    }

    /// The arguments that name the subject on a command line (a model with its bug modes).
    fn args(&self) -> String {
        match self {
            Subject::Trace {
                path,
                bugs,
                check_invariants,
            } => {
                let mut a = shell_quote(&path.display().to_string());
                for b in bugs {
                    a.push_str(&format!(" --bug {}", shell_quote(b)));
                }
                if *check_invariants {
                    a.push_str(" --check-invariants");
                }
                a
            }
            Subject::Toy(n) => format!("--toy {}", shell_quote(n)),
            Subject::Model { name, bugs } => {
                let mut a = format!("--model {}", shell_quote(name));
                for b in bugs {
                    a.push_str(&format!(" --bug {}", shell_quote(b)));
                }
                a
            }
        }
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:=".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn strategy_args(cfg: &ExploreConfig) -> String {
    match &cfg.strategy {
        Strategy::TraceOrder => "--strategy trace-order".into(),
        Strategy::Random => "--strategy random".into(),
        Strategy::Pct { depth } => format!("--strategy pct --depth {depth}"),
        Strategy::Dfs { preemption_bound } => match preemption_bound {
            Some(b) => format!("--strategy dfs --preemption-bound {b}"),
            None => "--strategy dfs".into(),
        },
        Strategy::Replay(s) => format!("--schedule '{s}'"),
    }
}

/// The strategy as a report names it (`pct --depth 2`).
pub fn strategy_text(cfg: &ExploreConfig) -> String {
    strategy_args(cfg)
        .trim_start_matches("--strategy ")
        .to_string()
}

/// Where a failure's schedule is shown: inline, or (when long) in a file.
pub enum ScheduleText<'a> {
    Inline(&'a str),
    File(&'a Path),
}

/// The command that replays a schedule of this subject.
pub fn replay_command(subject: &Subject, cfg: &ExploreConfig, schedule: ScheduleText) -> String {
    let how = match schedule {
        ScheduleText::Inline(s) => format!("--schedule '{s}'"),
        ScheduleText::File(p) => {
            format!("--schedule-file {}", shell_quote(&p.display().to_string()))
        }
    };
    let mut cmd = format!("pmsim replay {} {how}", subject.args());
    if cfg.step_limit != ExploreConfig::default().step_limit {
        cmd.push_str(&format!(" --step-limit {}", cfg.step_limit));
    }
    cmd
}

pub struct Outcome<'a> {
    pub command: &'static str,
    pub subject: &'a Subject,
    pub cfg: &'a ExploreConfig,
    pub report: &'a ExploreReport,
    /// The failure's schedule was written to this file (a long schedule).
    pub schedule_file: Option<&'a Path>,
    /// What the reported run did, per thread, and the failure's causal story (from a
    /// recorded replay of the failing run, or of the run of `run`/`replay`).
    pub details: Option<&'a Details>,
}

/// One thread of the reported run.
#[derive(Clone, Debug, Default)]
pub struct ThreadDetails {
    pub name: String,
    /// Counted by the trace runner (traces only).
    pub stats: Option<ThreadStats>,
    /// Page faults, from the call paths of its steps (traces and DAX models).
    pub faults: FaultStats,
    /// Steps it took.
    pub steps: u64,
}

/// The reported run, replayed with footprints and call paths ([`Details::of_run`]).
#[derive(Clone, Debug, Default)]
pub struct Details {
    /// Steps after the model's setup, and the preemptions among them.
    pub steps: u64,
    pub preemptions: u64,
    pub threads: Vec<ThreadDetails>,
    pub story: Option<Story>,
    /// The trace's statements by line, as the printer writes them (traces only).
    pub statements: BTreeMap<u32, String>,
    /// Whether the subject runs the DAX core (a trace or a DAX model, not a toy): only then
    /// are page faults counted.
    pub dax: bool,
}

impl Details {
    /// The details of a recorded run; `stats`: the trace runner's counts of that run.
    pub fn of_run(
        run: &RecordedRun,
        stats: BTreeMap<String, ThreadStats>,
        statements: BTreeMap<u32, String>,
        dax: bool,
    ) -> Details {
        let faults =
            sim_fs::runner::count_faults(run.steps.iter().map(|s| (s.event.task.0, &s.path[..])));
        let mut steps: BTreeMap<u32, u64> = BTreeMap::new();
        for s in &run.steps {
            *steps.entry(s.event.task.0).or_default() += 1;
        }
        let threads = run
            .log
            .tasks
            .iter()
            .enumerate()
            .map(|(i, name)| ThreadDetails {
                name: name.clone(),
                stats: stats.get(name).cloned(),
                faults: faults.get(&(i as u32)).cloned().unwrap_or_default(),
                steps: steps.get(&(i as u32)).copied().unwrap_or(0),
            })
            .collect();
        Details {
            steps: run.steps.len() as u64,
            preemptions: run.preemptions() as u64,
            threads,
            story: run
                .violation()
                .map(|v| causal_story(run, v, STORY_MAX_STEPS)),
            statements,
            dax,
        }
    }

    fn thread(&self, name: &str) -> Option<&ThreadDetails> {
        self.threads.iter().find(|t| t.name == name)
    }

    fn stats_json(&self) -> serde_json::Value {
        let threads: serde_json::Map<String, serde_json::Value> = self
            .threads
            .iter()
            .map(|t| {
                let f = &t.faults;
                let mut v = serde_json::json!({ "steps": t.steps });
                if let (true, Some(obj)) = (self.dax, v.as_object_mut()) {
                    obj.insert(
                        "faults".into(),
                        serde_json::json!({"total": f.total(), "pte": f.pte, "pmd": f.pmd,
                                           "fallback": f.fallback, "other": f.other}),
                    );
                }
                if let (Some(s), Some(obj)) = (&t.stats, v.as_object_mut()) {
                    obj.insert("statements".into(), s.statements.into());
                    obj.insert(
                        "mapped".into(),
                        serde_json::json!({"pte": s.pte_mapped, "pmd": s.pmd_mapped}),
                    );
                    obj.insert(
                        "signals".into(),
                        serde_json::json!({"sigbus": s.sigbus, "sigsegv": s.sigsegv}),
                    );
                    obj.insert("errors".into(), s.errors.into());
                    obj.insert("unmet_expectations".into(), s.unmet.into());
                }
                (t.name.clone(), v)
            })
            .collect();
        serde_json::json!({
            "steps": self.steps,
            "preemptions": self.preemptions,
            "threads": threads,
        })
    }
}

/// `FILE:LINE` of a trace line (the trace subject's file), else `line N`.
fn location(subject: &Subject, line: u32) -> String {
    match subject {
        Subject::Trace { path, .. } => format!("{}:{line}", path.display()),
        _ => format!("line {line}"),
    }
}

/// A thread's counts on one line: `2 statements, 1 fault (1 PTE), signals: none`.
fn thread_summary(t: &ThreadDetails, dax: bool) -> String {
    if t.name == sim_fs::runner::EXIT_TASK && t.stats.is_none() {
        return format!(
            "process exit and end checks, {}",
            plural(t.steps, "step", "steps")
        );
    }
    let mut parts = Vec::new();
    if let Some(s) = &t.stats {
        parts.push(plural(s.statements, "statement", "statements"));
    }
    let f = &t.faults;
    let mut sizes = Vec::new();
    for (n, what) in [
        (f.pte, "PTE"),
        (f.pmd, "PMD"),
        (f.fallback, "PMD fallback to PTE"),
        (f.other, "other"),
    ] {
        if n > 0 {
            sizes.push(format!("{n} {what}"));
        }
    }
    // A toy has no page faults to count.
    if dax && sizes.is_empty() {
        parts.push("no faults".into());
    } else if dax {
        parts.push(format!(
            "{} ({})",
            plural(f.total(), "fault", "faults"),
            sizes.join(", ")
        ));
    }
    if let Some(s) = &t.stats {
        let mut sig = Vec::new();
        if s.sigbus > 0 {
            sig.push(format!("{} SIGBUS", s.sigbus));
        }
        if s.sigsegv > 0 {
            sig.push(format!("{} SIGSEGV", s.sigsegv));
        }
        parts.push(if sig.is_empty() {
            "signals: none".into()
        } else {
            format!("signals: {}", sig.join(", "))
        });
        if s.errors > 0 {
            parts.push(plural(s.errors, "error return", "error returns"));
        }
    }
    parts.push(plural(t.steps, "step", "steps"));
    parts.join(", ")
}

/// A task of a violation report: where it is, its call path, locks, wait key, counts.
fn print_task(out: &mut dyn Write, subject: &Subject, d: Option<&Details>, t: &TaskReport) {
    let mut head = format!("  {} [{}]", t.name, t.status);
    if t.line > 0 {
        head.push_str(&format!(" line {} ({}", t.line, location(subject, t.line)));
        if let Some(stmt) = d.and_then(|d| d.statements.get(&t.line)) {
            head.push_str(&format!(": `{stmt}`"));
        }
        head.push(')');
    }
    outln!(out, "{head}");
    if t.status != "finished" {
        outln!(out, "    next: {}", t.next);
    }
    if !t.path.is_empty() {
        outln!(out, "    in {}", t.path_text());
    }
    if !t.holds.is_empty() {
        outln!(out, "    holds: {}", t.holds.join(", "));
    }
    if let Some(k) = &t.wait_key {
        outln!(out, "    sleeps on {k}");
    }
    if let Some(w) = &t.last_wake {
        outln!(out, "    last woke {w}");
    }
    if let Some(td) = d.and_then(|d| d.thread(&t.name)).filter(|td| td.steps > 0) {
        outln!(
            out,
            "    ran: {}",
            thread_summary(td, d.is_some_and(|d| d.dax))
        );
    }
}

pub(crate) fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[derive(Serialize)]
struct JsonSummary<'a> {
    schema_version: u32,
    command: &'a str,
    subject: String,
    strategy: String,
    seed: u64,
    result: &'a str,
    runs: u64,
    redundant_runs: u64,
    failed_runs: u64,
    exhausted: bool,
    stopped_early: bool,
    max_steps: u64,
    last_hash: String,
    failure: Option<JsonFailure<'a>>,
    violations: Vec<JsonViolation>,
    schedule: Option<String>,
    replay: Option<String>,
    stats: serde_json::Value,
    pmsim_version: &'a str,
}

#[derive(Serialize)]
struct JsonFailure<'a> {
    kind: String,
    message: &'a str,
    line: u32,
    run: u64,
    steps: u64,
    hash: String,
    cycle: &'a [u32],
    tasks: &'a [sim_core::sim::TaskReport],
    schedule: String,
    schedule_file: Option<String>,
    replay: String,
    /// `FILE:LINE` of the violation (traces), else `line N`.
    location: Option<String>,
    /// Each task's trace position (`FILE:LINE`) and statement, for tasks on a trace line.
    locations: BTreeMap<String, JsonLocation>,
    story: Option<&'a Story>,
}

#[derive(Serialize)]
struct JsonLocation {
    location: String,
    statement: Option<String>,
}

#[derive(Serialize)]
struct JsonViolation {
    kind: String,
    /// The task that raised it or is at its centre.
    thread: Option<String>,
    line: u32,
    location: Option<String>,
    /// That task's call path, outermost first.
    path: Vec<String>,
    message: String,
    replay: String,
}

impl Outcome<'_> {
    fn replay(&self, s: &str) -> String {
        let how = match self.schedule_file {
            Some(p) => ScheduleText::File(p),
            None => ScheduleText::Inline(s),
        };
        replay_command(self.subject, self.cfg, how)
    }

    pub fn print(&self, json: bool, out: &mut dyn Write) {
        let r = self.report;
        if json {
            let failure = r.failure.as_ref().map(|f| {
                let s = f.schedule.to_string();
                JsonFailure {
                    kind: f.violation.kind.name(),
                    message: &f.violation.message,
                    line: f.violation.line,
                    run: f.run,
                    steps: f.steps,
                    hash: format!("{:016x}", f.hash),
                    cycle: &f.violation.cycle,
                    tasks: &f.violation.tasks,
                    replay: self.replay(&s),
                    schedule_file: self.schedule_file.map(|p| p.display().to_string()),
                    schedule: s,
                    location: (f.violation.line > 0)
                        .then(|| location(self.subject, f.violation.line)),
                    locations: f
                        .violation
                        .tasks
                        .iter()
                        .filter(|t| t.line > 0)
                        .map(|t| {
                            let statement = self
                                .details
                                .and_then(|d| d.statements.get(&t.line))
                                .cloned();
                            let location = location(self.subject, t.line);
                            (
                                t.name.clone(),
                                JsonLocation {
                                    location,
                                    statement,
                                },
                            )
                        })
                        .collect(),
                    story: self.details.and_then(|d| d.story.as_ref()),
                }
            });
            let violations = r
                .failure
                .iter()
                .map(|f| {
                    let v = &f.violation;
                    let task = v.task.and_then(|t| v.tasks.iter().find(|r| r.id == t.0));
                    JsonViolation {
                        kind: v.kind.name(),
                        thread: task.map(|t| t.name.clone()),
                        line: v.line,
                        location: (v.line > 0).then(|| location(self.subject, v.line)),
                        path: task.map(|t| t.path.clone()).unwrap_or_default(),
                        message: v.message.clone(),
                        replay: self.replay(&f.schedule.to_string()),
                    }
                })
                .collect();
            let schedule = r.failure.as_ref().map(|f| f.schedule.to_string());
            let replay = schedule.as_deref().map(|s| self.replay(s));
            let stats = self
                .details
                .map(Details::stats_json)
                .unwrap_or(serde_json::Value::Null);
            let summary = JsonSummary {
                schema_version: 1,
                command: self.command,
                subject: self.subject.describe(),
                strategy: strategy_args(self.cfg),
                seed: self.cfg.seed,
                result: if r.failure.is_some() {
                    "violation"
                } else {
                    "clean"
                },
                runs: r.runs,
                redundant_runs: r.redundant_runs,
                failed_runs: r.failed_runs,
                exhausted: r.exhausted,
                stopped_early: r.stopped_early,
                max_steps: r.max_steps,
                last_hash: format!("{:016x}", r.last_hash),
                failure,
                violations,
                schedule,
                replay,
                stats,
                pmsim_version: env!("CARGO_PKG_VERSION"),
            };
            match serde_json::to_string_pretty(&summary) {
                Ok(s) => {
                    outln!(out, "{s}");
                }
                Err(e) => {
                    outln!(
                        out,
                        "{{\"error\": \"cannot encode the JSON summary: {e}\"}}"
                    );
                }
            }
            return;
        }
        let seed = match &self.cfg.strategy {
            Strategy::Replay(_) => String::new(),
            _ => format!(", seed {:#x}", self.cfg.seed),
        };
        let strategy = match &self.cfg.strategy {
            // The schedule itself may be long; the replay line below shows it.
            Strategy::Replay(_) => "replay".to_string(),
            _ => strategy_args(self.cfg)
                .trim_start_matches("--strategy ")
                .to_string(),
        };
        let mut head = format!(
            "pmsim {} {}: {strategy}{seed}, {}",
            self.command,
            self.subject.describe(),
            plural(r.runs, "run", "runs"),
        );
        if r.redundant_runs > 0 {
            head.push_str(&format!(" ({} cut short by sleep sets)", r.redundant_runs));
        }
        outln!(out, "{head}");
        match &r.failure {
            None => {
                let how = if r.exhausted {
                    "exhausted the search space: no violation in any schedule".to_string()
                } else if r.stopped_early && matches!(self.cfg.strategy, Strategy::Dfs { .. }) {
                    "no violation found; the search was NOT exhausted (run count or budget)"
                        .to_string()
                } else {
                    "no violation found".to_string()
                };
                outln!(
                    out,
                    "{how} (longest run {} steps, last event-log hash {:016x})",
                    r.max_steps,
                    r.last_hash
                );
                if let Some(d) = self.details {
                    outln!(
                        out,
                        "the run: {}, {}",
                        plural(d.steps, "step", "steps"),
                        plural(d.preemptions, "preemption", "preemptions")
                    );
                    for t in d.threads.iter().filter(|t| t.steps > 0) {
                        outln!(out, "  {}: {}", t.name, thread_summary(t, d.dax));
                    }
                }
            }
            Some(f) => {
                let v = &f.violation;
                outln!(
                    out,
                    "VIOLATION {} in run {} after {} steps{}",
                    v.kind.name(),
                    f.run,
                    f.steps,
                    if v.line > 0 {
                        format!(
                            ", at trace line {} ({})",
                            v.line,
                            location(self.subject, v.line)
                        )
                    } else {
                        String::new()
                    }
                );
                outln!(out, "{}: {}", v.kind.name(), v.message);
                // Where: the task at the centre, its statement and call path.
                let centre = v.task.and_then(|t| v.tasks.iter().find(|r| r.id == t.0));
                if let Some(t) = centre.filter(|t| t.line > 0 || !t.path.is_empty()) {
                    let mut at = format!("where: {}", t.name);
                    if t.line > 0 {
                        at.push_str(&format!(" at {}", location(self.subject, t.line)));
                        if let Some(stmt) = self.details.and_then(|d| d.statements.get(&t.line)) {
                            at.push_str(&format!(" `{stmt}`"));
                        }
                    }
                    if !t.path.is_empty() {
                        at.push_str(&format!(" in {}", t.path_text()));
                    }
                    outln!(out, "{at}");
                }
                if !v.tasks.is_empty() {
                    outln!(out, "threads:");
                }
                for t in &v.tasks {
                    print_task(out, self.subject, self.details, t);
                }
                if let Some(d) = self.details {
                    outln!(
                        out,
                        "the failing run: {}, {}",
                        plural(d.steps, "step", "steps"),
                        plural(d.preemptions, "preemption", "preemptions")
                    );
                }
                if let Some(story) = self.details.and_then(|d| d.story.as_ref()) {
                    outln!(
                        out,
                        "causal story ({} of the {} steps; `pmsim replay --events` has the log):",
                        story.steps.len(),
                        story.run_steps
                    );
                    let _ = write!(out, "{story}");
                }
                if r.failed_runs > 1 {
                    outln!(out, "{} of {} runs failed", r.failed_runs, r.runs);
                }
                let s = f.schedule.to_string();
                match self.schedule_file {
                    Some(p) => {
                        outln!(out, "schedule: {} characters, in {}", s.len(), p.display());
                    }
                    None => {
                        outln!(out, "schedule: {s}");
                    }
                }
                outln!(out, "replay:   {}", self.replay(&s));
            }
        }
    }
}

/// The JSON object of a determinism check: the common fields plus `fields`.
fn determinism_json(subject: &Subject, cfg: &ExploreConfig, fields: serde_json::Value) -> String {
    let mut v = serde_json::json!({
        "schema_version": 1, "command": "check-determinism",
        "subject": subject.describe(), "strategy": strategy_args(cfg), "seed": cfg.seed,
    });
    if let (Some(obj), serde_json::Value::Object(extra)) = (v.as_object_mut(), fields) {
        obj.extend(extra);
    }
    v.to_string()
}

pub fn determinism_ok(
    out: &mut dyn Write,
    json: bool,
    subject: &Subject,
    cfg: &ExploreConfig,
    hash: u64,
    events: usize,
) {
    if json {
        let fields = serde_json::json!({
            "result": "deterministic", "hash": format!("{hash:016x}"), "events": events,
        });
        outln!(out, "{}", determinism_json(subject, cfg, fields));
    } else {
        outln!(
            out,
            "deterministic: two runs of {} ({}, seed {:#x}) gave the same {events} events, hash {hash:016x}",
            subject.describe(),
            strategy_args(cfg),
            cfg.seed
        );
    }
}

pub fn determinism_diverged(
    out: &mut dyn Write,
    json: bool,
    subject: &Subject,
    cfg: &ExploreConfig,
    d: &Determinism,
) {
    let Determinism::Diverged {
        index,
        first,
        second,
        hashes,
    } = d
    else {
        return;
    };
    if json {
        let fields = serde_json::json!({
            "result": "nondeterministic", "first_divergence": index,
            "first_run": first, "second_run": second,
            "hashes": [format!("{:016x}", hashes.0), format!("{:016x}", hashes.1)],
        });
        outln!(out, "{}", determinism_json(subject, cfg, fields));
    } else {
        outln!(
            out,
            "NONDETERMINISM: two runs of {} with the same seed and strategy differ \
             (hashes {:016x} and {:016x})",
            subject.describe(),
            hashes.0,
            hashes.1
        );
        outln!(out, "first diverging event: #{index}");
        outln!(out, "  first run:  {first}");
        outln!(out, "  second run: {second}");
        outln!(
            out,
            "something in the model bypasses the Platform (wall clock, HashMap order, \
             global state, threads)"
        );
    }
}

#[derive(Serialize)]
struct BenchRow {
    model: String,
    strategy: String,
    schedules: u64,
    seconds: f64,
    schedules_per_sec: f64,
    exhausted: bool,
}

/// `pmsim bench engine`: the event queue and the strategies on the toy models.
pub fn bench_engine(out: &mut dyn Write, iters: u64, json: bool) {
    let mut q = EventQueue::new();
    for i in 0..1024u64 {
        q.push(i * 7, TaskId(i as u32));
    }
    let n = 10_000_000u64;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let t = Instant::now();
    for _ in 0..n {
        let Some(e) = q.pop() else { break };
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        q.push(e.time + (x & 1023), e.kind);
    }
    let events_per_sec = n as f64 / t.elapsed().as_secs_f64();
    let mut rows = Vec::new();
    // Every toy; the buggy ones (abba, lost-wakeup) with --keep-going, so that each strategy
    // runs its whole budget or space instead of stopping at the first failure.
    for model in sim_core::toys::TOYS {
        for (name, strategy, runs) in [
            ("random", Strategy::Random, Some(iters)),
            ("pct3", Strategy::Pct { depth: 3 }, Some(iters)),
            (
                "dfs",
                Strategy::Dfs {
                    preemption_bound: None,
                },
                None,
            ),
        ] {
            let m = move |sim: &mut Sim| {
                let p = sim.platform();
                sim_core::toys::build(model, &p, sim);
            };
            let cfg = ExploreConfig {
                strategy,
                seed: 1,
                runs,
                keep_going: true,
                ..ExploreConfig::default()
            };
            let t = Instant::now();
            let Ok(r) = explore(&m, &cfg, &mut |_| {}) else {
                continue;
            };
            let secs = t.elapsed().as_secs_f64();
            rows.push(BenchRow {
                model: model.into(),
                strategy: name.into(),
                schedules: r.runs,
                seconds: secs,
                schedules_per_sec: r.runs as f64 / secs,
                exhausted: r.exhausted,
            });
        }
    }
    if json {
        outln!(
            out,
            "{}",
            serde_json::json!({ "event_queue_events_per_sec": events_per_sec, "toys": rows })
        );
    } else {
        outln!(out, "event queue: {:.1} M events/s", events_per_sec / 1e6);
        outln!(
            out,
            "| model | strategy | schedules | seconds | schedules/s |"
        );
        outln!(out, "|---|---|---|---|---|");
        for r in &rows {
            outln!(
                out,
                "| {} | {} | {}{} | {:.3} | {:.0}k |",
                r.model,
                r.strategy,
                r.schedules,
                if r.exhausted { " (exhausted)" } else { "" },
                r.seconds,
                r.schedules_per_sec / 1e3
            );
        }
        outln!(
            out,
            "shuttle and loom on the same models, in the same process: \
             cargo bench -p pmsim-peer-bench --bench engine"
        );
    }
}
