//! The stepper: a trace loaded as a [`TraceRunner`] and driven one step at a time by the
//! engine's manual strategy ([`ManualSession`]). Everything the views show is read here, between
//! steps, into a plain-data [`Snapshot`]: the executor's objects and task reports
//! (`Sim::inspect_*`), and the kernel state through the lock-aware peeks the invariant checks use
//! (`SpinLock::peek`, `RwSem::peek`, `MemMap::peek_snapshot`, `peek_machine`). Nothing here
//! re-implements model logic.
//!
//! Going back and scrubbing re-execute the run from the start (a run is a pure function of the
//! model, the seed and the choices), so the state after N steps is always the same. The steps
//! after the cursor are kept (`future`) until a different step is taken, so that the scrubber
//! can move both ways along a loaded schedule.

use sim_core::events::EventLog;
use sim_core::platform::{OpKind, TaskId};
use sim_core::sim::inspect::ObjectView;
use sim_core::sim::{ManualSession, RunEnd, Schedule, TaskReport, Violation, peek_machine};
use sim_core::trace::{ParseOptions, parse};
use sim_fs::runner::{RunWorld, TraceRunner};
use sim_mm::pgtable::Leaf;
use sim_mm::xarray::XaItem;
use std::str::FromStr;

/// A step kind to run to (`Run to next`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKind {
    /// A lock, trylock or down_read/down_write.
    Lock,
    /// An unlock or up_read/up_write.
    Unlock,
    /// A `wake_up`.
    Wake,
    /// Queueing on a wait queue to sleep (`prepare_to_wait`; the `schedule` that follows
    /// runs only once the task is woken).
    Sleep,
    /// A memory flush or fence.
    Flush,
    /// The end of the run (every task finished, or a violation).
    End,
}

impl StepKind {
    pub const ALL: [StepKind; 6] = [
        StepKind::Lock,
        StepKind::Unlock,
        StepKind::Wake,
        StepKind::Sleep,
        StepKind::Flush,
        StepKind::End,
    ];

    pub fn label(self) -> &'static str {
        match self {
            StepKind::Lock => "lock",
            StepKind::Unlock => "unlock",
            StepKind::Wake => "wake_up",
            StepKind::Sleep => "prepare_to_wait (sleep)",
            StepKind::Flush => "flush/fence",
            StepKind::End => "end of run",
        }
    }

    fn matches(self, k: OpKind) -> bool {
        match self {
            StepKind::Lock => matches!(
                k,
                OpKind::Lock | OpKind::TryLock | OpKind::DownRead | OpKind::DownWrite
            ),
            StepKind::Unlock => matches!(k, OpKind::Unlock | OpKind::UpRead | OpKind::UpWrite),
            StepKind::Wake => k == OpKind::Wake,
            StepKind::Sleep => k == OpKind::PrepareToWait,
            StepKind::Flush => k == OpKind::Flush,
            StepKind::End => false,
        }
    }
}

/// A runnable task and its next step, as the thread buttons show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Runnable {
    pub task: u32,
    pub name: String,
    pub op: String,
    pub line: u32,
}

/// One file's xarray: `Ok(items)` or why it cannot be seen now (its i_pages lock is held).
#[derive(Clone, Debug)]
pub struct FileEntries {
    pub path: String,
    pub ino: u64,
    pub mapping: u32,
    pub items: Result<Vec<XaItem>, String>,
}

/// One process's page table.
#[derive(Clone, Debug)]
pub struct ProcLeaves {
    pub name: String,
    pub leaves: Result<Vec<Leaf>, String>,
}

/// A struct page worth showing (referenced, mapped, associated, locked or poisoned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRow {
    pub pfn: u64,
    pub page: sim_mm::page::Page,
}

/// The machine's persistence state.
#[derive(Clone, Debug, Default)]
pub struct MachineView {
    /// Lines with stores not yet durable: address, whether the line is in the cache (and
    /// dirty there), and how many of its bytes differ between what loads see and the media.
    pub pending: Vec<PendingLine>,
    /// Poisoned ranges (address, length).
    pub poisoned: Vec<(u64, u64)>,
    pub cpu_clocks: Vec<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingLine {
    pub addr: u64,
    pub cached_dirty: Option<bool>,
    pub bytes_not_durable: u32,
}

/// Everything the views show after a step, as plain data.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub step: usize,
    pub tasks: Vec<TaskReport>,
    /// Per task: the object its next step targets (for lock waiters).
    pub next_obj: Vec<Option<u32>>,
    pub objects: Vec<ObjectView>,
    pub wait_for: Vec<(u32, u32)>,
    pub files: Vec<FileEntries>,
    pub procs: Vec<ProcLeaves>,
    pub pages: Result<Vec<PageRow>, String>,
    pub machine: Option<MachineView>,
    /// How the run ended, once it has.
    pub end: Option<RunEnd>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            step: 0,
            tasks: Vec::new(),
            next_obj: Vec::new(),
            objects: Vec::new(),
            wait_for: Vec::new(),
            files: Vec::new(),
            procs: Vec::new(),
            pages: Ok(Vec::new()),
            machine: None,
            end: None,
        }
    }
}

/// A loaded trace being stepped.
pub struct Stepper {
    /// The trace file as given (for the replay command).
    pub trace_path: String,
    runner: &'static TraceRunner,
    /// Always `Some` between calls; `None` only while a new run replaces the old one (a thread
    /// holds one simulation at a time, so the old one must end first).
    session: Option<ManualSession<'static>>,
    seed: u64,
    /// Steps taken, then the steps after the cursor that a scrub can move to.
    full: Vec<TaskId>,
    cursor: usize,
    snapshot: Snapshot,
}

/// Read and parse a trace and its machine configuration; errors say `file:line:col: ...`.
pub fn parse_trace(
    path: &str,
) -> Result<(sim_core::trace::Trace, sim_core::machine::MachineConfig), String> {
    let src = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let src = String::from_utf8(src).map_err(|_| format!("{path}: not UTF-8 text"))?;
    let trace = parse(&src, path, &ParseOptions::default()).map_err(|e| e.to_string())?;
    let cfg = pmsim::trace_model::machine_config(&trace)
        .map_err(|(l, c, m)| format!("{path}:{l}:{c}: error: {m}"))?;
    Ok((trace, cfg))
}

/// Build the runner of a parsed trace with the bug modes `bugs` switched on (besides the
/// trace's own `bug` lines).
pub fn build_runner(
    path: &str,
    trace: sim_core::trace::Trace,
    cfg: sim_core::machine::MachineConfig,
    bugs: &[String],
) -> Result<TraceRunner, String> {
    for b in bugs {
        if sim_mm::bugs::bug_mode(b).is_none() {
            return Err(format!(
                "--bug {b}: unknown bug mode (`pmsim bugs` lists them)"
            ));
        }
    }
    TraceRunner::new(trace, cfg, bugs).map_err(|refusals| {
        refusals
            .iter()
            .map(|r| {
                format!(
                    "{path}:{}:{}: error: {}: {}",
                    r.line.max(1),
                    r.col.max(1),
                    r.what,
                    r.why
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// Read and parse a trace and build its runner with the bug modes `bugs` switched on;
/// errors say `file:line:col: ...`.
pub fn load_runner(path: &str, bugs: &[String]) -> Result<TraceRunner, String> {
    let (trace, cfg) = parse_trace(path)?;
    build_runner(path, trace, cfg, bugs)
}

/// The schedule of the first failure `pmsim explore TRACE --strategy random` finds (the trace's
/// `machine seed=` or 0, 1000 runs; explore's default is pct since session 5, and the README's
/// GUI schedule and screenshots come from random), or `None` when it finds none. It runs
/// simulations on this thread: call it while no [`Stepper`] lives on the thread.
pub fn explore_failure(path: &str, bugs: &[String]) -> Result<Option<String>, String> {
    let runner = load_runner(path, bugs)?;
    let cfg = sim_core::sim::ExploreConfig {
        strategy: sim_core::sim::Strategy::Random,
        seed: runner.trace_seed().unwrap_or(0),
        ..sim_core::sim::ExploreConfig::default()
    };
    let rep = sim_core::sim::explore::explore(&runner, &cfg, &mut |_| {}).map_err(|e| e.0)?;
    Ok(rep.failure.map(|f| f.schedule.to_string()))
}

impl Stepper {
    /// Load the trace at `path` and start a run with `seed`.
    pub fn open(path: &str, seed: u64) -> Result<Stepper, String> {
        Stepper::open_with_bugs(path, seed, &[])
    }

    /// [`Stepper::open`] with the bug modes `bugs` switched on (`--bug`).
    pub fn open_with_bugs(path: &str, seed: u64, bugs: &[String]) -> Result<Stepper, String> {
        let runner = load_runner(path, bugs)?;
        // The session borrows its model for as long as the GUI lives: one model per loaded
        // trace, never freed (a trace is small).
        let runner: &'static TraceRunner = Box::leak(Box::new(runner));
        let session = Some(ManualSession::new(runner, seed));
        let mut s = Stepper {
            trace_path: path.to_string(),
            runner,
            session,
            seed,
            full: Vec::new(),
            cursor: 0,
            snapshot: Snapshot::default(),
        };
        s.refresh();
        Ok(s)
    }

    fn ses(&self) -> &ManualSession<'static> {
        self.session
            .as_ref()
            .expect("a stepper always has a session")
    }

    fn ses_mut(&mut self) -> &mut ManualSession<'static> {
        self.session
            .as_mut()
            .expect("a stepper always has a session")
    }

    /// End the current run and start a new one with `self.seed`.
    fn restart(&mut self) {
        self.session = None;
        self.session = Some(ManualSession::new(self.runner, self.seed));
        self.cursor = 0;
    }

    /// The tasks that can move now, with their next step.
    pub fn runnable(&self) -> Vec<Runnable> {
        self.ses()
            .runnable()
            .into_iter()
            .map(|n| Runnable {
                task: n.task.0,
                name: n.name,
                op: n.op,
                line: n.line,
            })
            .collect()
    }

    /// Move task `t` one step. A step other than the next one of the kept path drops the rest
    /// of that path.
    pub fn step(&mut self, t: u32) -> Result<(), String> {
        self.ses_mut().step(TaskId(t))?;
        if self.full.get(self.cursor) != Some(&TaskId(t)) {
            self.full.truncate(self.cursor);
            self.full.push(TaskId(t));
        }
        self.cursor += 1;
        self.refresh();
        Ok(())
    }

    /// Undo the last step (re-executes the run). False at the start.
    pub fn back(&mut self) -> bool {
        if !self.ses_mut().back() {
            return false;
        }
        self.cursor -= 1;
        self.refresh();
        true
    }

    /// Steps taken so far.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// The kept path: the task of each step (taken and after the cursor).
    pub fn path(&self) -> Vec<u32> {
        self.full.iter().map(|t| t.0).collect()
    }

    /// Length of the kept path (the scrubber's range).
    pub fn path_len(&self) -> usize {
        self.full.len()
    }

    /// Move to step `n` of the kept path (re-executing from the start when going back).
    pub fn goto(&mut self, n: usize) {
        let n = n.min(self.full.len());
        if n < self.cursor {
            self.restart();
        }
        while self.cursor < n {
            let t = self.full[self.cursor];
            if self.ses_mut().step(t).is_err() {
                // The kept path no longer fits (cannot happen for a deterministic run).
                self.full.truncate(self.cursor);
                break;
            }
            self.cursor += 1;
        }
        self.refresh();
    }

    /// Run until a step of kind `kind` has run (or the run ends; a step of an atomic section
    /// counts when any op it ran is of that kind): along the kept path while it
    /// lasts, then the lowest-numbered runnable task. Bounded by `max_steps`.
    pub fn run_to(&mut self, kind: StepKind, max_steps: usize) -> usize {
        let mut n = 0;
        while n < max_steps {
            let next = match self.full.get(self.cursor) {
                Some(&t) => Some(t),
                None => self.ses().runnable().first().map(|r| r.task),
            };
            let Some(t) = next else { break };
            if self.ses_mut().step(t).is_err() {
                break;
            }
            // An atomic section is one step of several ops: it is of `kind` when any of them is.
            // Each op's event names it as announced (its footprint may fold it: a section
            // taken and released at once reads the lock, a wake-up that woke nobody reads the
            // queue).
            let hit = (self.ses().sim().last_step_ops().iter())
                .any(|(ev, _, _)| kind.matches(ev.op.kind));
            if self.full.get(self.cursor) != Some(&t) {
                self.full.truncate(self.cursor);
                self.full.push(t);
            }
            self.cursor += 1;
            n += 1;
            if hit {
                break;
            }
        }
        self.refresh();
        n
    }

    /// Load a schedule string (`pmsim explore`'s `1:..`/`2:..`): restart with its seed and
    /// keep its whole path (a step with one runnable task takes it; a step with several takes
    /// the schedule's next choice), then move the cursor to its end.
    pub fn load_schedule(&mut self, text: &str) -> Result<(), String> {
        let sched = Schedule::from_str(text.trim()).map_err(|e| format!("schedule: {e}"))?;
        self.seed = sched.seed;
        self.restart();
        let mut path = Vec::new();
        let mut choices = sched.choices.iter();
        let mut result = Ok(());
        loop {
            let runnable = self.ses().runnable();
            let t = match runnable.len() {
                0 => break,
                1 => runnable[0].task,
                _ => match choices.next() {
                    Some(&c) => TaskId(c),
                    None => break,
                },
            };
            if let Err(e) = self.ses_mut().step(t) {
                result = Err(format!(
                    "schedule: step {} does not fit this trace: {e}",
                    path.len()
                ));
                break;
            }
            path.push(t);
        }
        if result.is_ok() && choices.next().is_some() {
            result = Err("schedule: it has more choices than this run takes".into());
        }
        // What fits is kept, so the scrubber can show where the schedule stopped fitting.
        self.cursor = path.len();
        self.full = path;
        self.refresh();
        result
    }

    /// Load a recorded event log (`pmsim ... --events FILE`) of this trace: restart with `seed`,
    /// step the task of each step's first event in order (a step logs one event per op it
    /// ran) and keep that path, then check that the re-executed run logged the same events.
    /// Errors name the first event that differs (a log of another trace, seed or bug mode).
    pub fn load_events(&mut self, log: &EventLog, seed: u64) -> Result<(), String> {
        self.seed = seed;
        self.restart();
        self.full.clear();
        let mut result = Ok(());
        // The log starts with the model's setup steps, which every run takes before the
        // threads (the comparison below checks them too).
        let mut i = self.ses().sim().steps() as usize;
        while let Some(e) = log.events.get(i) {
            if let Err(err) = self.ses_mut().step(e.task) {
                result = Err(format!(
                    "events: event {i} ({}) does not fit this trace with seed {seed}: {err} \
                     (a log of another trace, seed or bug mode?)",
                    log.describe(i)
                ));
                break;
            }
            self.full.push(e.task);
            self.cursor += 1;
            // A step of an atomic section logs one event per op it ran (`sim` "Atomic
            // sections"): the next step's event is the next the run logs.
            i = self.ses().sim().steps() as usize;
        }
        if result.is_ok() {
            let mine = self.ses().event_log();
            if let Some(i) = mine.first_divergence(log) {
                result = Err(format!(
                    "events: the run of this trace with seed {seed} differs from the log at \
                     event {i}: the log has {}, the run has {} (give the logged run's seed \
                     with --seed: the number after `1:`/`2:` in its schedule string, with 0x)",
                    log.describe(i),
                    mine.describe(i)
                ));
            }
        }
        self.refresh();
        result
    }

    /// The seed of the run.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The trace's `machine seed=`.
    pub fn trace_seed(&self) -> Option<u64> {
        self.runner.trace_seed()
    }

    /// Start over with another seed (the kept path is dropped).
    pub fn reseed(&mut self, seed: u64) {
        self.seed = seed;
        self.restart();
        self.full.clear();
        self.refresh();
    }

    /// The schedule string of the steps so far.
    pub fn schedule_string(&self) -> String {
        self.ses().schedule().to_string()
    }

    /// The `pmsim replay` command for the steps so far.
    pub fn replay_command(&self) -> String {
        format!(
            "pmsim replay {} --schedule '{}'",
            self.trace_path,
            self.schedule_string()
        )
    }

    /// The event log so far.
    pub fn event_log(&self) -> EventLog {
        self.ses().event_log()
    }

    /// The violation raised so far, if any.
    pub fn violation(&self) -> Option<Violation> {
        self.ses().violation()
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Re-read everything the views show.
    fn refresh(&mut self) {
        let end = self.ses_mut().end();
        let sim = self.ses().sim();
        let tasks = sim.inspect_tasks();
        let next_obj = (0..tasks.len())
            .map(|t| {
                let op = sim.next_op(TaskId(t as u32));
                matches!(
                    op.kind,
                    OpKind::Lock | OpKind::TryLock | OpKind::DownRead | OpKind::DownWrite
                )
                .then_some(op.obj.0)
            })
            .collect();
        let mut snap = Snapshot {
            step: self.cursor,
            tasks,
            next_obj,
            objects: sim.inspect_objects(),
            wait_for: sim.inspect_wait_for(),
            end,
            ..Snapshot::default()
        };
        if let Some(w) = self.runner.inspect() {
            read_world(&mut snap, &w, sim.platform());
        } else {
            snap.pages = Err("the trace's setup failed: no kernel state".into());
        }
        snap.machine = peek_machine(|m| MachineView {
            pending: m
                .pending_lines()
                .into_iter()
                .map(|addr| {
                    let mut now = [0u8; 64];
                    let mut durable = [0u8; 64];
                    let differ = match (m.peek(addr, &mut now), m.peek_durable(addr, &mut durable))
                    {
                        (Ok(()), Ok(())) => {
                            now.iter().zip(&durable).filter(|(a, b)| a != b).count()
                        }
                        _ => 0,
                    };
                    PendingLine {
                        addr,
                        cached_dirty: m.cached(addr),
                        bytes_not_durable: differ as u32,
                    }
                })
                .collect(),
            poisoned: m.poisoned().iter().map(|b| (b.addr, b.len)).collect(),
            cpu_clocks: vec![0; m.config().cpus],
        });
        if let Some(m) = &mut snap.machine {
            for (c, clock) in m.cpu_clocks.iter_mut().enumerate() {
                *clock = sim.cpu_clock(c);
            }
        }
        self.snapshot = snap;
    }
}

/// Who holds object `name#id`, from the task reports (for a peek that found it held).
fn held_by(snap: &Snapshot, obj: &str) -> String {
    let who: Vec<&str> = snap
        .tasks
        .iter()
        .filter(|t| t.holds.iter().any(|h| h.starts_with(&format!("{obj}#"))))
        .map(|t| t.name.as_str())
        .collect();
    if who.is_empty() {
        "a task holds its lock".into()
    } else {
        format!("{} holds its lock", who.join(", "))
    }
}

fn read_world(snap: &mut Snapshot, w: &RunWorld, p: sim_core::sim::SimPlatform) {
    let live = w
        .world
        .mappings
        .peek(&p, |t| t.live().cloned().collect::<Vec<_>>())
        .unwrap_or_default();
    for (path, ino) in &w.files {
        let Some(m) = live.iter().find(|m| m.host == *ino) else {
            continue;
        };
        let items = m
            .i_pages
            .peek(&p, |xa| xa.all_items().collect::<Vec<_>>())
            .ok_or_else(|| format!("not visible now: i_pages ({})", held_by(snap, "i_pages")));
        snap.files.push(FileEntries {
            path: path.clone(),
            ino: *ino,
            mapping: m.id.0,
            items,
        });
    }
    for (name, mm) in &w.procs {
        let leaves = mm.page_table.peek(&p, |pt| pt.all_leaves()).ok_or_else(|| {
            format!(
                "not visible now: the page-table lock ({})",
                held_by(snap, "page_table_lock")
            )
        });
        snap.procs.push(ProcLeaves {
            name: name.clone(),
            leaves,
        });
    }
    snap.pages = match w.world.memmap.peek_snapshot(&p) {
        Some(mm) => Ok(mm
            .pages()
            .enumerate()
            .filter(|(_, pg)| {
                pg.refcount > 0
                    || pg.mapcount > 0
                    || pg.mapping != 0
                    || pg.share > 0
                    || pg.locked()
                    || pg.hwpoison()
            })
            .map(|(i, pg)| PageRow {
                pfn: mm.base_pfn + i as u64,
                page: *pg,
            })
            .collect()),
        None => Err("not visible now: a memmap section lock is held".into()),
    };
}
