//! The manual strategy: a person (the GUI) picks which task moves at every step, and can go
//! back. Going back re-executes the run from the start with one step fewer: futures cannot be
//! snapshotted, and replay is exact, so the state after N steps is always the same.

use super::{Model, RunEnd, Schedule, Sim, SimConfig, Violation};
use crate::events::EventLog;
use crate::platform::TaskId;

/// A runnable task and what it will do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextStep {
    pub task: TaskId,
    pub name: String,
    /// The announced operation, described ("lock i_pages#3").
    pub op: String,
    /// The trace line the task is executing (0 outside traces).
    pub line: u32,
}

/// A run driven one step at a time. Like every [`Sim`], it occupies its thread's simulation
/// slot while it lives: run explorations on another thread, or after dropping the session.
pub struct ManualSession<'m> {
    model: &'m dyn Model,
    cfg: SimConfig,
    /// Every task stepped so far, in order (not only the choices among several).
    path: Vec<TaskId>,
    sim: Option<Sim>,
    enabled: Vec<TaskId>,
}

impl<'m> ManualSession<'m> {
    /// Start a run of `model`; the full event log is kept for display.
    pub fn new(model: &'m dyn Model, seed: u64) -> Self {
        let cfg = SimConfig {
            seed,
            record_log: true,
            ..SimConfig::default()
        };
        let mut s = ManualSession {
            model,
            cfg,
            path: Vec::new(),
            sim: None,
            enabled: Vec::new(),
        };
        s.restart();
        s
    }

    fn restart(&mut self) {
        // Only one simulation may be active on a thread: end the old one first.
        self.sim = None;
        let mut sim = Sim::new(self.cfg.clone());
        self.model.setup(&mut sim);
        for &t in &self.path {
            sim.enabled(&mut self.enabled);
            sim.record_choice(t, self.enabled.len());
            sim.step(t);
        }
        sim.enabled(&mut self.enabled);
        self.sim = Some(sim);
    }

    /// The run so far, for read-only inspection between steps (`Sim::inspect_*`, the
    /// lock-aware peeks).
    pub fn sim(&self) -> &Sim {
        self.sim
            .as_ref()
            .expect("a session always has a simulation")
    }

    /// The tasks that can move now, with their next step. Empty at the end of the run.
    pub fn runnable(&self) -> Vec<NextStep> {
        if self.sim().violation().is_some() {
            return Vec::new();
        }
        let sim = self.sim();
        self.enabled
            .iter()
            .map(|&t| NextStep {
                task: t,
                name: sim.task_name(t),
                op: sim.describe_op(&sim.next_op(t)),
                line: sim.task_line(t),
            })
            .collect()
    }

    /// Move task `t` one step. Errors when `t` cannot move now.
    pub fn step(&mut self, t: TaskId) -> Result<(), String> {
        if self.sim().violation().is_some() || !self.enabled.contains(&t) {
            return Err(format!("task {} cannot move now", t.0));
        }
        let n = self.enabled.len();
        let sim = self
            .sim
            .as_mut()
            .expect("a session always has a simulation");
        sim.record_choice(t, n);
        sim.step(t);
        sim.enabled(&mut self.enabled);
        self.path.push(t);
        Ok(())
    }

    /// Undo the last step (re-executes the run). False at the start.
    pub fn back(&mut self) -> bool {
        if self.path.pop().is_none() {
            return false;
        }
        self.restart();
        true
    }

    /// How the run ended, once it is over: `Done` or a violation (WARNs included).
    pub fn end(&mut self) -> Option<RunEnd> {
        let sim = self
            .sim
            .as_mut()
            .expect("a session always has a simulation");
        sim.check_end(&mut self.enabled)
    }

    /// The steps taken so far.
    pub fn path(&self) -> &[TaskId] {
        &self.path
    }

    /// The schedule string of the steps so far (replayable with the `replay` strategy).
    pub fn schedule(&self) -> Schedule {
        Schedule {
            seed: self.cfg.seed,
            choices: self.sim().choices().to_vec(),
        }
    }

    /// The event log so far.
    pub fn event_log(&self) -> EventLog {
        self.sim().event_log()
    }

    /// The violation raised so far, if any.
    pub fn violation(&self) -> Option<Violation> {
        self.sim().violation()
    }
}
