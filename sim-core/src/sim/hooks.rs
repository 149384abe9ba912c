//! Checks a model registers with the executor: *step checks*, run after every step (when
//! enabled), and *end checks*, run once when every task has finished. Both look at the model's
//! state between steps, through the lock-aware peeks (`SpinLock::peek`, `Mutex::peek`,
//! `RwSem::peek`), and return a [`CheckFailure`], which ends the run with a
//! `ViolationKind::Invariant` violation like any other.
//!
//! A check is an observer: it runs outside every task, creates no scheduling point, announces
//! nothing and draws no randomness, so a run with checks takes exactly the steps, choices and
//! event-log hash of the same run without them (the executor refuses a check that creates an
//! object or draws a random number). A peek returns `None` while a task holds the lock: a check
//! then skips what it cannot see, since a half-done update is no violation.

use super::{Sim, SimRaw, State, ViolationKind, panic_message, with_state};
use crate::platform::{Op, OpKind, TaskId};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// A broken invariant found by a check.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CheckFailure {
    /// A short machine-readable name (`mapcount-mismatch`); the violation kind is
    /// `invariant:NAME`.
    pub name: String,
    pub message: String,
}

/// What a step check is told about the step that just ran.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct StepInfo<'a> {
    /// The step's index in the run (from 0).
    pub step: u64,
    /// The task that took it.
    pub task: TaskId,
    /// What the step touched: its announced op and the locks it released by dropping guards.
    pub footprint: &'a [Op],
}

impl StepInfo<'_> {
    /// Whether the step released a lock or a write-held semaphore (an explicit unlock or a
    /// guard drop). Data behind a lock changes only while its holder has it, and a peek sees
    /// the change only once it is released, in the footprint of the step that releases it; so
    /// after a step that released nothing, every peek returns what it returned before, or
    /// `None` (the step took a lock). Checks over peeked data can skip such steps; a check of
    /// the machine ([`peek_machine`]) cannot, since memory operations take no lock.
    pub fn released_a_lock(&self) -> bool {
        self.footprint.iter().any(|op| {
            matches!(
                op.kind,
                OpKind::Unlock | OpKind::UpWrite | OpKind::DowngradeWrite
            )
        })
    }
}

/// A check run after every step.
pub type StepCheck = Box<dyn for<'a> FnMut(&StepInfo<'a>) -> Option<CheckFailure>>;
/// A check run once, when every task has finished.
pub type EndCheck = Box<dyn FnMut() -> Option<CheckFailure>>;

/// The checks of one run.
pub(super) struct Hooks {
    step: Vec<StepCheck>,
    end: Vec<EndCheck>,
    step_enabled: bool,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            step: Vec::new(),
            end: Vec::new(),
            step_enabled: true,
        }
    }
}

/// The simulator's lock-aware peek of object `r`: run `f` when `free` says no task holds it.
/// Only between steps: from model code a peek would be a read the explorer cannot see (and so
/// an unsound reduction), hence refused.
pub(super) fn peek<R>(
    r: &SimRaw,
    free: impl FnOnce(&mut State, usize) -> bool,
    f: impl FnOnce() -> R,
) -> Option<R> {
    let free = with_state(|s| {
        assert!(
            !s.polling,
            "a lock-aware peek from inside a task: peeks are for checks between steps"
        );
        let id = s.check(r);
        free(s, id)
    });
    // `f` runs outside the state's borrow: it may peek again.
    free.then(f)
}

/// Read the machine the run installed (`Sim::set_machine`) from a check, between steps: its
/// caches, pending lines and durable contents (`Machine::peek_durable`), as a crash would see
/// them. `None` without a machine. Refused from model code, like the other peeks.
pub fn peek_machine<R>(f: impl FnOnce(&crate::machine::Machine) -> R) -> Option<R> {
    with_state(|s| {
        assert!(
            !s.polling,
            "a machine peek from inside a task: peeks are for checks between steps"
        );
        s.machine.as_ref().map(f)
    })
}

/// Whether some task is inside the model function `name` now (its call path, marked with
/// `Platform::enter_fn`, contains it), read from a check between steps: an invariant that a
/// kernel function breaks for a while on purpose can name the function that may break it.
/// A finished task's path is empty. Refused from model code, like the other peeks.
pub fn peek_task_in_fn(name: &str) -> bool {
    with_state(|s| {
        assert!(
            !s.polling,
            "a call-path peek from inside a task: peeks are for checks between steps"
        );
        s.tasks.iter().any(|t| t.path.contains(&name))
    })
}

/// Run `f` as a check: the executor state knows a check runs (so that model code in it cannot
/// change the run), and a panic of the check becomes a failure instead of unwinding through the
/// driver.
fn run_check(f: impl FnOnce() -> Option<CheckFailure>) -> Option<CheckFailure> {
    with_state(|s| s.in_check = true);
    let r = catch_unwind(AssertUnwindSafe(f));
    with_state(|s| s.in_check = false);
    r.unwrap_or_else(|payload| {
        Some(CheckFailure {
            name: "check-panicked".into(),
            message: format!("a check panicked: {}", panic_message(&payload)),
        })
    })
}

impl Sim {
    /// Register a check the executor runs after every step (while step checks are enabled).
    /// The first failure ends the run, charged to the task whose step broke the invariant.
    pub fn add_step_check(
        &mut self,
        f: impl for<'a> FnMut(&StepInfo<'a>) -> Option<CheckFailure> + 'static,
    ) {
        self.hooks.step.push(Box::new(f));
    }

    /// Register a check the executor runs once every task has finished (before the run counts
    /// as clean): the model's final state.
    pub fn add_end_check(&mut self, f: impl FnMut() -> Option<CheckFailure> + 'static) {
        self.hooks.end.push(Box::new(f));
    }

    /// Turn the step checks on or off (on by default); end checks always run.
    pub fn set_step_checks(&mut self, enabled: bool) {
        self.hooks.step_enabled = enabled;
    }

    /// Whether step checks run after each step (registered and turned on).
    pub(super) fn step_checks_on(&self) -> bool {
        self.hooks.step_enabled && !self.hooks.step.is_empty()
    }

    /// After `task`'s step: run the step checks, unless the step already raised a violation.
    pub(super) fn run_step_checks(&mut self, task: TaskId) {
        if !self.step_checks_on() || with_state(|s| s.violation.is_some()) {
            return;
        }
        let info = StepInfo {
            step: self.steps() - 1,
            task,
            footprint: &self.last_footprint,
        };
        let checks = &mut self.hooks.step;
        let failure = run_check(|| checks.iter_mut().find_map(|c| c(&info)));
        if let Some(f) = failure {
            with_state(|s| {
                s.current = task.0;
                s.fatal(ViolationKind::Invariant(f.name), f.message);
            });
        }
    }

    /// Every task has finished: run the end checks; the first failure is the run's violation.
    pub(super) fn run_end_checks(&mut self) -> Option<super::Violation> {
        if self.hooks.end.is_empty() {
            return None;
        }
        let checks = &mut self.hooks.end;
        let f = run_check(|| checks.iter_mut().find_map(|c| c()))?;
        Some(super::Violation {
            kind: ViolationKind::Invariant(f.name),
            message: f.message,
            task: None,
            line: 0,
            cycle: Vec::new(),
            tasks: Vec::new(),
        })
    }

    /// Drop the checks (they may own model objects) while the run's state still exists.
    pub(super) fn clear_hooks(&mut self) {
        self.hooks = Hooks::default();
    }
}
