//! The deterministic executor and the simulation platform.
//!
//! Tasks are futures polled on one OS thread. Every Platform call announces its next step
//! ([`Op`]) and returns `Pending`; the executor then knows, for every task, what it will do next
//! and whether it can (a lock held by another task, a sleep not yet woken). A strategy picks one
//! enabled task, the executor polls it, the task performs its announced operation and runs on,
//! touching only its own state, up to its next announcement.
//!
//! Given the model, a seed and the sequence of choices, a run is a pure function: the event log
//! (and its hash) is identical bit for bit.
//!
//! # Time
//! One model, per-CPU and per-task clocks with a global order of events. Task `i` runs on CPU
//! `i % cpus` of the machine the model installed (without a machine, every task has a CPU of
//! its own). Each CPU and each task has a clock in ns, starting at 0 (a spawned task starts at
//! its spawner's time). The scheduler's choices, not the clocks, order the steps of a run: that
//! order is the global order of events, and shared resources (the cache, the media pipelines)
//! serve requests in it. A memory operation starts when its task and its CPU are both ready
//! (the later of the two clocks) and advances both to its completion (a non-blocking load,
//! `SimPlatform::pmem_load_nowait`, only by its issue cost: the machine keeps its completion,
//! which the CPU's next `mfence` waits for): the CPU's clock is when it can serve its tasks'
//! next memory operation. `sleep_ns(ns)` is a scheduling point after which the task's clock has
//! moved on by `ns` (other tasks may or may not have run meanwhile: the scheduler chooses; the
//! CPU serves its other tasks in the meantime); every other step takes no time. `now_ns`
//! returns the task's clock, and the event log records each step at its task's clock.
//! `Sim::now_ns` is the latest clock. With one task per CPU the task's clock is its CPU's.
//!
//! Why a clock per task: a step that takes no time (a lock, a wake-up) then reads only its own
//! task's time, so it commutes with a memory operation of another task on the same CPU. With
//! the CPU's clock in the log and in `now_ns`, every such pair was dependent (three threads
//! on two CPUs), and DPOR had to try both orders of each.
//!
//! # Footprints
//! The explorer treats two steps as independent when their footprints do not conflict
//! (`platform::footprints_depend`), and two independent steps must commute on everything a
//! run can observe. A step's footprint is its announced op plus:
//! - for a memory operation, a write of its CPU's clock (its start reads it; the task's own
//!   clock, which the event log and `now_ns` read and a sleep moves, is in no footprint);
//! - for a memory operation (fences included), writes of the shared machine state it really
//!   used (`machine::Touched`): the last-level cache sets it looked up, filled or invalidated
//!   (`Op::cache_sets`: ways, LRU stamps, fill times; each set has its own LRU clock), the DIMMs
//!   whose buffer, queues and pipelines it used (`Op::dimm`: a miss, a store miss's read for ownership, a write-back, a
//!   write-combining buffer leaving, a prefetch, an evicted victim), the lines whose
//!   persistency state it changed besides its own (an evicted victim, the lines a fence makes
//!   durable), and `Op::MACHINE` when it drew a tail event or logged poison. The CPU's own
//!   machine state (fill buffers, write-combining buffer, outstanding flushes and loads) goes
//!   with its clock, which the operation writes. Its latency is a function of exactly these
//!   and the clock, so two memory operations on different lines, sets and DIMMs on different
//!   CPUs commute, clocks and event-log times included. The global store sequence number is
//!   left out on purpose: only its order along one line is observable;
//! - the releases of guards dropped during the step;
//! - a write of a lock whose data the step took mutable access to (a guard's `DerefMut`,
//!   `Platform::lock_data_mut`), and a write of every such *dirty* lock the task holds at the
//!   end of the step: every `&mut` to lock data comes from `DerefMut`, but it may be kept across
//!   scheduling points, so from the first one until the release every step of the holder may
//!   change the data, and a lockless reader (`read_once`, announced as a read of the lock) must
//!   not commute with those steps. A holder that never took `&mut` changes nothing;
//! - a step that takes a lock, takes no `&mut` to its data and releases it (a guard dropped in
//!   the same step) leaves the lock and its data as it found them: its footprint has a read of
//!   the lock in place of the lock and the release, so two such read-only critical sections
//!   commute (with each other and with lockless readers), and each still conflicts with a step
//!   that takes the lock and keeps it (which disables it) or writes the data. Rwsems are
//!   folded the same way: a `down_read` and its `up_read`, or a first `down_write` attempt that
//!   got the semaphore and its `up_write` with no `&mut` to the data between
//!   (`Platform::rwsem_data_mut`), in one step, become a read of the rwsem (its data is reached
//!   only by holders, so the `down`/`up` steps stand for it);
//! - for a lock created with parts (`SpinLock::new_with_parts`, the xarray under xa_lock):
//!   a whole-data read of the lock at every guard `Deref`, and a part (`Op::part`: the lock
//!   and a range of keys, read, written or added to) at every guard `part`/`part_mut`/
//!   `part_add`. Parts of one lock conflict when their key ranges overlap (unless both read or
//!   both add: additions to a counter commute); a part conflicts with every
//!   access of the lock itself but a whole-data read against a part read and the lock-word
//!   read below. A part write or addition makes the lock dirty like `&mut`, so a holder that keeps the
//!   lock writes the whole data in its later steps (the part is not remembered). A section
//!   taken and released in one step whose data accesses were all parts has, in place of the
//!   lock and the release, a read of the lock word alone (`Op::LOCK_WORD`): it conflicts with
//!   the steps that take, keep, release or wholly write the lock, so two such sections on
//!   disjoint keys commute, and the lock is free before and after either order;
//! - a read of the wait queue (`WaitqueueActive`) in place of a wait-queue op that left every
//!   waiter as it was: a wake-up that woke nobody (no waiter, or none whose key matched), a
//!   `schedule` (it changes nothing; the wake-up that lets it run writes the queue, so the two
//!   conflict), a `finish_wait` of a waiter a wake-up already took off the queue. Two such
//!   steps commute, and each conflicts with a step that queues, dequeues or wakes a waiter
//!   there. (The queue's record of its last wake-up, `last_wakes`, is for the inspector: no
//!   step reads it, and it shows the wake-up of the run at hand.)
//! - a write of the kernel log (`Op::DMESG`) when the step reports a BUG or WARN;
//! - a write of the object table (`Op::ALLOC`) when the step creates a lock, rwsem or wait
//!   queue (ids follow creation order); a spawn announces a write of it too (task ids follow
//!   creation order);
//! - a write of the task's exit (`Op::task`) in the step where the task finishes: a join
//!   announces a read of it, enabled once the task has finished.
//!
//! `random_u64` draws from the task's own stream, so draws need no footprint. The explorer
//! remembers the footprint each explored step really had (`Sim::last_footprint`): a sleeping
//! task is represented by that, never by its announcement alone.
//!
//! # Atomic sections
//! A spinlock declared without lockless access (`Platform::lock_no_lockless_access`: never
//! try-locked, its data never read without it; the xarray's xa_lock) makes its holder's
//! critical section atomic where that loses no interleaving: when a step of a task that holds
//! such a lock touched nothing but such locks it holds and their data (the acquire, key parts,
//! whole-data reads and writes; no other object, no kernel log), the task goes on into its
//! next step within the same scheduling step, if that step can run now (a lock taken inside
//! is free, a wait-queue op, ...); the next step's ops join the footprint. Why nothing is
//! lost: while the task holds the lock, no step of another task touches the lock or its data
//! (acquires wait for the holder; `try_lock` and `read_once` are refused), and the step
//! touched nothing else, so it is independent of every step `w` other tasks can take before
//! the holder's next one; it neither enables nor disables them (only an acquire of the lock
//! depends on it, and that waits either way). So `a w b` (the step, `w`, the next step) is
//! equivalent to `w a b`, which is kept: the same states at every later scheduling point and
//! the same end. The run loses only the states strictly inside the section, which no other
//! task can observe. This is the kernel's own rule: nothing sleeps under a spinlock, and
//! another CPU sees xa_lock's data only by taking xa_lock. A step that touched anything else
//! (a struct page, a wait queue, pmem) still ends at its next scheduling point, since another
//! task may see that between it and the holder's next step. A lock taken and released within
//! such a step counts as one section in the step's footprint (`sections_in_one_step`). A
//! section never runs on into a store to pmem or a flush (`crash_point`): a crash can strike
//! inside it, and crash checking takes its points at scheduling points. Each op a step ran is
//! an event of the log, with its own step number, as if the task had run them one after the
//! other with nobody preempting it (`Sim::step`, `Sim::last_step_ops`): the failure report's
//! story and `--events` show every op, and the event-log hash covers them all.
//!
//! # Fast path
//! [`Sim::run`] asks its strategy only at steps with more than one enabled task and shows it
//! nothing else between steps, so a step after which the task that took it is the only one
//! able to move has nothing to choose: the task goes on with its next step inside the same
//! poll (`State::fast_step`), without returning to the executor. The step is the one the
//! executor would have taken (same event, hash, step count, step limit and violation checks:
//! `State::begin_step` is shared); what is skipped is the enabled-set computation of the
//! executor loop, the re-entry into the task's future and the footprint of every step but the
//! poll's last, which nobody reads in `run` (the strategy sees `Sim::last_footprint` only at
//! a choice, after the poll). Never with step checks (they run after each step, outside the
//! poll), nor in `run_steps` and `step` (dfs, stories, audits, the manual session and the GUI
//! see every step), nor while a spawned task waits for its first poll.
//!
//! With atomic sections ("Atomic sections"): `Sim::step` begins each op of a section itself
//! (`State::begin_step`, the same event and count) and polls. The fast path takes no step of a
//! task holding a lock declared without lockless access, so a section's ops stay one step
//! with one footprint, as in `run_steps`. A poll that took fast steps began no section before
//! its last step: the step's footprint, and the test whether a section goes on, are that last
//! step's alone. `Sim::last_step_ops` keeps no op of such a poll but its last, so it is read
//! only outside `run` (stories and recorded runs use `run_steps`).
//!
//! The executor state lives in a thread-local slot while a [`Sim`] exists, so that the platform
//! handle [`SimPlatform`] is a zero-sized type (cheap to copy into every task).

pub mod audit;
mod detect;
mod dpor;
pub mod explore;
mod hooks;
pub mod inspect;
pub mod manual;
mod memo;
mod objtable;
pub mod reduction;
pub mod schedule;
pub mod story;

pub use detect::{TaskReport, Violation, ViolationKind};
pub use explore::{ExploreConfig, ExploreReport, Failure, Model, Strategy, explore, run_twice};
pub use hooks::{CheckFailure, EndCheck, StepCheck, StepInfo, peek_machine, peek_task_in_fn};
pub use manual::{ManualSession, NextStep};
pub use memo::MachineMemo;
pub use schedule::Schedule;

use crate::events::{EventHasher, EventLog, LogEvent};
use crate::machine::{Machine, MemError};
use crate::platform::{
    Assertion, JoinHandle, LockClass, ObjId, Op, OpKind, Platform, PmemPlatform, Spawner, TaskId,
    WaitKey, WaiterId, WakeFn, WakeMode,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::RefCell;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll, Waker};

static GENERATION: AtomicU32 = AtomicU32::new(1);

/// `Op::arg` of a `DownWrite`: the first attempt, which takes the semaphore or queues.
pub const RWSEM_ATTEMPT: u64 = 0;
/// `Op::arg` of a `DownWrite`: a queued writer waiting for the semaphore to be free.
pub const RWSEM_QUEUED: u64 = 1;
/// `Op::arg` of a `Write` of a rwsem: its writer took mutable access to the data during the
/// step (`Platform::rwsem_data_mut`). Only `sections_in_one_step` reads it, and removes it:
/// the data of a rwsem is reached only by its holders, whose `down`/`up` steps order them.
const RWSEM_DATA: u64 = 2;

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
    /// The object table of the thread's last simulation, emptied, kept for the next one: a
    /// search creates thousands of objects per run (the DAX wait table alone has 4096), and
    /// growing a fresh table each run cost more than the run's own steps. Its storage carries
    /// over, no object does (invariant: empty whenever it is stored; see `ObjTable`).
    static SPARE_OBJS: RefCell<objtable::ObjTable> =
        const { RefCell::new(objtable::ObjTable::new()) };
}

fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> R {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let s = s
            .as_mut()
            .expect("a SimPlatform operation ran outside a simulation (no Sim on this thread)");
        f(s)
    })
}

fn try_with_state(f: impl FnOnce(&mut State)) {
    STATE.with(|s| {
        if let Ok(mut s) = s.try_borrow_mut()
            && let Some(s) = s.as_mut()
        {
            f(s)
        }
    })
}

/// A raw simulated object: its id and the generation of the simulation that created it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimRaw {
    pub id: ObjId,
    gen_: u32,
}

#[derive(Clone, Debug)]
struct WaiterState {
    id: u32,
    task: u32,
    key: WaitKey,
    exclusive: bool,
    func: WakeFn,
}

#[derive(Clone, Debug)]
enum ObjState {
    Lock {
        class: LockClass,
        holder: Option<u32>,
        /// The holder has taken mutable access to the data (`Platform::lock_data_mut`) since it
        /// acquired the lock. Invariant: false while `holder` is `None`.
        dirty: bool,
        /// Declared never try-locked nor read locklessly (`Platform::lock_no_lockless_access`):
        /// no step of another task touches the lock while a task holds it ("Atomic sections").
        no_lockless: bool,
    },
    /// The two lists are boxed so that every object stays small: a run creates thousands of
    /// objects (mostly wait queues), and the whole table is written on every run.
    #[allow(clippy::box_collection)]
    RwSem {
        readers: Box<Vec<u32>>,
        writer: Option<u32>,
        /// Writers whose `down_write` found the semaphore taken and who queued (the kernel's
        /// `rwsem_down_write_slowpath`). Invariant: a queued writer holds nothing of this
        /// semaphore and its announced step is `down_write (queued)` on it.
        queued: Box<Vec<u32>>,
    },
    WaitQueue {
        waiters: Vec<WaiterState>,
    },
}

#[derive(Clone, Debug)]
struct Obj {
    name: &'static str,
    state: ObjState,
}

// The object table is rewritten on every run of a search (see `SPARE_OBJS`): keep an object
// within six words.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Obj>() <= 48);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum TaskStatus {
    Live,
    Finished,
}

/// The sleep of a task between `prepare_to_wait` and `finish_wait`.
#[derive(Clone, Copy, Debug)]
struct TaskWait {
    wq: ObjId,
    key: WaitKey,
    exclusive: bool,
    woken: bool,
}

#[derive(Clone, Debug)]
struct TaskState {
    name: String,
    next: Op,
    status: TaskStatus,
    line: u32,
    wait: Option<TaskWait>,
    /// Invariant: the number of spinlocks this task holds (it must not sleep while > 0).
    spins_held: u32,
    /// Invariant: the spinlocks and mutexes this task holds, in acquisition order.
    locks_held: Vec<ObjId>,
    /// The task's own random stream (`random_u64`), so that draws of two tasks commute.
    rng: ChaCha8Rng,
    /// The task's time in ns (see "Time"): when its next step happens. Only the task's own
    /// steps change it (a spawned task starts at its spawner's), so reading it needs no
    /// footprint.
    clock: u64,
    /// The model functions the task is in, outermost first (`Platform::enter_fn`). Task-local
    /// bookkeeping for reports: no step's footprint includes it.
    path: Vec<&'static str>,
    /// The task's last wake-up (queue, key, mode, and its call path then), for reports: a lost
    /// wake-up is explained by who woke which key from where. Task-local, like `path`.
    last_wake: Option<(ObjId, WaitKey, WakeMode, Vec<&'static str>)>,
}

struct State {
    gen_: u32,
    seed: u64,
    /// Per-CPU clocks in ns (see "Time"); a CPU without an entry is at 0.
    clocks: Vec<u64>,
    current: u32,
    announced: bool,
    tasks: Vec<TaskState>,
    objs: objtable::ObjTable,
    rng: ChaCha8Rng,
    violation: Option<Violation>,
    warnings: Vec<(TaskId, u32, Assertion)>,
    /// The reporting task's call path at each WARN (for the report of a run that ends with one).
    warning_paths: Vec<Vec<&'static str>>,
    /// Objects touched by the current step besides its announced op (guard drops).
    extra: Vec<Op>,
    sites: Vec<&'static str>,
    next_waiter: u32,
    /// The machine under the run, when the model installed one.
    machine: Option<Machine>,
    /// A task's future is being polled (model code runs): peeks are refused.
    polling: bool,
    /// A step or end check runs: it may peek, not change the run.
    in_check: bool,
    /// Tasks spawned by the task being polled, whose futures the executor has not taken yet.
    /// Invariant: empty between polls, and `tasks.len() == futures.len() + spawned.len()`.
    spawned: Vec<TaskFuture>,
    /// Each wait queue's last wake-up and whom it reached, for display (`inspect`), by object
    /// id (absent: never woken; a map, since a run wakes a few of its thousands of queues): no
    /// step reads it, so it is in no footprint.
    last_wakes: std::collections::BTreeMap<usize, inspect::WakeRecord>,
    /// A recording or replay of memory operations (memo.rs), if one is on.
    memo: Option<memo::MemoMode>,
    /// Steps taken so far, the event log's hash and (with `record_log`) the log: here, not in
    /// [`Sim`], so that a step can begin inside a poll (see "Fast path").
    steps: u64,
    hasher: EventHasher,
    log: Vec<LogEvent>,
    record_log: bool,
    step_limit: u64,
    /// The announced op of the step in progress (its event's op).
    step_op: Op,
    /// A step of `Sim::run` is being polled, without step checks: a step that ends with only
    /// its own task enabled goes on in the same poll (see "Fast path").
    fast: bool,
}

impl State {
    /// Add `op` to the current step's implicit footprint.
    fn touch(&mut self, op: Op) {
        if !self.extra.contains(&op) {
            self.extra.push(op);
        }
    }

    fn new_obj(&mut self, name: &'static str, state: ObjState) -> SimRaw {
        assert!(
            !self.in_check,
            "a check created the simulated object {name}"
        );
        // Ids follow creation order (in the model's setup, this touches no step).
        self.touch(Op::new(OpKind::Write, Op::ALLOC));
        let id = ObjId(self.objs.len() as u32);
        self.objs.push(Obj { name, state });
        SimRaw {
            id,
            gen_: self.gen_,
        }
    }

    /// A new live task named `name` whose time starts at `clock`; its future is added by the
    /// caller.
    fn push_task(&mut self, name: &str, clock: u64) -> usize {
        let seed = self.seed ^ (self.tasks.len() as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.tasks.push(TaskState {
            name: name.to_string(),
            next: Op::new(OpKind::Exit, Op::NONE),
            status: TaskStatus::Live,
            line: 0,
            wait: None,
            spins_held: 0,
            locks_held: Vec::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            clock,
            path: Vec::new(),
            last_wake: None,
        });
        self.tasks.len() - 1
    }

    fn check(&self, r: &SimRaw) -> usize {
        assert_eq!(
            r.gen_, self.gen_,
            "a simulated object was used outside the simulation that created it"
        );
        r.id.0 as usize
    }

    fn fatal(&mut self, kind: ViolationKind, message: String) {
        // The first violation is the run's report: two steps that raise one do not commute.
        self.touch(Op::new(OpKind::Write, Op::DMESG));
        if self.violation.is_none() {
            let task = TaskId(self.current);
            self.violation = Some(Violation {
                kind,
                message,
                task: Some(task),
                line: self
                    .tasks
                    .get(self.current as usize)
                    .map(|t| t.line)
                    .unwrap_or(0),
                cycle: Vec::new(),
                tasks: Vec::new(),
            });
        }
    }

    /// Whether task `t`'s announced step can run now. (Asked for every task before every step:
    /// inlined, the call costs more than the answer.)
    #[inline(always)]
    fn op_enabled(&self, t: usize) -> bool {
        let task = &self.tasks[t];
        if task.status != TaskStatus::Live {
            return false;
        }
        let op = task.next;
        match op.kind {
            OpKind::Lock => matches!(
                self.objs[op.obj.0 as usize].state,
                ObjState::Lock { holder: None, .. }
            ),
            OpKind::DownRead => match &self.objs[op.obj.0 as usize].state {
                // Writer-preferring (as the kernel's rwsem): a reader waits while a writer
                // holds the semaphore or has queued for it. A writer that has not yet tried
                // (its next step is `down_write`) does not keep readers out.
                ObjState::RwSem { writer, queued, .. } => writer.is_none() && queued.is_empty(),
                _ => unreachable!("down_read on object {} that is not a rwsem", op.obj.0),
            },
            // The attempt always runs: it takes a free semaphore or queues the writer.
            OpKind::DownWrite if op.arg == RWSEM_ATTEMPT => true,
            OpKind::DownWrite => matches!(
                &self.objs[op.obj.0 as usize].state,
                ObjState::RwSem { readers, writer: None, .. } if readers.is_empty()
            ),
            OpKind::Schedule => task.wait.is_none_or(|w| w.woken),
            OpKind::Join => op.tasks_of().is_some_and(|(c, n)| {
                (c.0..c.0 + n).all(|c| self.tasks[c as usize].status == TaskStatus::Finished)
            }),
            OpKind::Exit => false,
            _ => true,
        }
    }

    /// The CPU task `t` runs on: `t % cpus` of the machine; without one, a CPU of its own.
    fn cpu_of(&self, t: usize) -> usize {
        match &self.machine {
            Some(m) => t % m.config().cpus.max(1),
            None => t,
        }
    }

    fn clock(&self, cpu: usize) -> u64 {
        self.clocks.get(cpu).copied().unwrap_or(0)
    }

    fn clock_mut(&mut self, cpu: usize) -> &mut u64 {
        if cpu >= self.clocks.len() {
            self.clocks.resize(cpu + 1, 0);
        }
        &mut self.clocks[cpu]
    }

    /// The current task's CPU, recording that this step moves its clock.
    fn moves_clock(&mut self) -> usize {
        let c = self.cpu_of(self.current as usize);
        self.touch(Op::cpu(OpKind::Write, c));
        c
    }

    /// Begin task `idx`'s announced step: its event (logged and hashed, and returned) and the
    /// step count.
    fn begin_step(&mut self, idx: usize) -> LogEvent {
        self.extra.clear();
        let task = &self.tasks[idx];
        let ev = LogEvent {
            step: self.steps as u32,
            task: TaskId(idx as u32),
            op: task.next,
            time: task.clock,
            line: task.line,
        };
        self.hasher.event(&ev);
        if self.record_log {
            self.log.push(ev);
        }
        self.steps += 1;
        self.step_op = ev.op;
        ev
    }

    /// At the current task's announcement: if the executor would now find a run without a
    /// violation, under its step limit, with this task the only one that can move (and no
    /// spawned task waiting for its first poll), take its announced step here, as the executor
    /// would have (see "Fast path"). Whether the step began.
    fn fast_step(&mut self) -> bool {
        if !self.fast
            || self.violation.is_some()
            || !self.spawned.is_empty()
            || self.steps >= self.step_limit
        {
            return false;
        }
        let cur = self.current as usize;
        if !self.op_enabled(cur) || (0..self.tasks.len()).any(|t| t != cur && self.op_enabled(t)) {
            return false;
        }
        // A holder of a lock declared without lockless access may be inside an atomic section,
        // whose steps are one step of the executor, with one footprint: `Sim::step` goes on.
        let sealed = |l: &ObjId| {
            matches!(
                self.objs[l.0 as usize].state,
                ObjState::Lock {
                    no_lockless: true,
                    ..
                }
            )
        };
        if self.tasks[cur].locks_held.iter().any(sealed) {
            return false;
        }
        self.begin_step(cur);
        // As the executor's poll of the step: an await of anything but a Platform operation
        // must still be caught.
        self.announced = false;
        true
    }

    fn announce(&mut self, op: Op) {
        let t = &mut self.tasks[self.current as usize];
        t.next = op;
        self.announced = true;
    }

    /// A `try_lock` or `read_once` of a lock declared without lockless access would observe
    /// a holder's atomic section half done ("Atomic sections"): refused.
    fn refuse_lockless(&self, l: &SimRaw, what: &str) {
        let id = self.check(l);
        if let ObjState::Lock {
            no_lockless: true, ..
        } = self.objs[id].state
        {
            panic!(
                "{what} of {}, declared without lockless access",
                self.objs[id].name
            );
        }
    }

    /// Whether the footprint `fp` of task `t`'s step so far touches nothing but locks `t`
    /// holds that were declared without lockless access, and their data ("Atomic sections").
    fn within_atomic_section(&self, t: usize, fp: &[Op]) -> bool {
        let held = &self.tasks[t].locks_held;
        let sealed = |l: ObjId| {
            held.contains(&l)
                && matches!(
                    self.objs[l.0 as usize].state,
                    ObjState::Lock {
                        no_lockless: true,
                        ..
                    }
                )
        };
        held.iter().any(|&l| sealed(l))
            && fp.iter().all(|o| match o.part_of() {
                Some((l, ..)) => sealed(l),
                None => o.obj.0 < Op::PART_BASE && sealed(o.obj),
            })
    }

    fn lock_mut(&mut self, id: usize) -> (&'static str, &mut Option<u32>, LockClass) {
        let o = &mut self.objs[id];
        match &mut o.state {
            ObjState::Lock { holder, class, .. } => (o.name, holder, *class),
            _ => unreachable!("object {id} is not a lock"),
        }
    }

    fn release_lock(&mut self, id: usize) {
        let cur = self.current;
        let (name, holder, class) = self.lock_mut(id);
        // Invariant (lockdep's "releasing a lock not held"): only the holder unlocks.
        if *holder != Some(cur) {
            let h = *holder;
            self.fatal(
                ViolationKind::Assertion("unlock-not-held".into()),
                format!("unlock of {name}({id}) not held by this task (holder: {h:?})"),
            );
            return;
        }
        *holder = None;
        if let ObjState::Lock { dirty, .. } = &mut self.objs[id].state {
            *dirty = false;
        }
        let t = &mut self.tasks[cur as usize];
        if class == LockClass::Spin {
            t.spins_held -= 1;
        }
        t.locks_held.retain(|&l| l.0 as usize != id);
    }

    fn rwsem_mut(&mut self, id: usize) -> (&'static str, &mut Vec<u32>, &mut Option<u32>) {
        let o = &mut self.objs[id];
        match &mut o.state {
            ObjState::RwSem {
                readers, writer, ..
            } => (o.name, readers, writer),
            _ => unreachable!("object {id} is not a rwsem"),
        }
    }

    fn up(&mut self, id: usize, write: bool) {
        let cur = self.current;
        let (name, readers, writer) = self.rwsem_mut(id);
        let ok = if write {
            let ok = *writer == Some(cur);
            if ok {
                *writer = None;
            }
            ok
        } else if let Some(i) = readers.iter().position(|&r| r == cur) {
            readers.swap_remove(i);
            true
        } else {
            false
        };
        // Invariant: up_read/up_write only by a task holding the semaphore that way.
        if !ok {
            let side = if write { "up_write" } else { "up_read" };
            self.fatal(
                ViolationKind::Assertion("rwsem-not-held".into()),
                format!("{side} of {name}({id}) not held by this task"),
            );
        }
    }

    /// The kernel forbids sleeping with a spinlock held ("scheduling while atomic").
    fn might_sleep(&mut self, what: &str) {
        if self.tasks[self.current as usize].spins_held > 0 {
            self.fatal(
                ViolationKind::Assertion("sleep-in-atomic".into()),
                format!("{what} while holding a spinlock (scheduling while atomic)"),
            );
        }
    }

    fn wq_mut(&mut self, id: usize) -> &mut Vec<WaiterState> {
        self.objs.queue_mut(id)
    }

    fn wake_up(&mut self, id: usize, key: WaitKey, mode: WakeMode) -> usize {
        let mut woken = Vec::new();
        if self.wq_mut(id).is_empty() {
            // Nobody to wake (the common case): record the wake-up, reusing its record.
            let waker = self.current;
            match self.last_wakes.entry(id) {
                std::collections::btree_map::Entry::Occupied(mut r) => {
                    let r = r.get_mut();
                    r.waker = waker;
                    r.key = key;
                    r.mode = mode;
                    r.woken.clear();
                }
                std::collections::btree_map::Entry::Vacant(r) => {
                    r.insert(inspect::WakeRecord {
                        waker,
                        key,
                        mode,
                        woken,
                    });
                }
            }
            return 0;
        }
        let waiters = std::mem::take(self.wq_mut(id));
        let mut kept = Vec::with_capacity(waiters.len());
        let mut exclusive_left = matches!(mode, WakeMode::Next);
        let mut stop = false;
        for w in waiters {
            // __wake_up_common: non-matching waiters neither wake nor use up the exclusive count;
            // after the first woken exclusive waiter (WAKE_NEXT), the walk stops.
            if !stop && (w.func)(&w.key, &key) {
                woken.push(w.task);
                if w.exclusive && exclusive_left {
                    stop = true;
                    exclusive_left = false;
                }
            } else {
                kept.push(w);
            }
        }
        *self.wq_mut(id) = kept;
        self.last_wakes.insert(
            id,
            inspect::WakeRecord {
                waker: self.current,
                key,
                mode,
                woken: woken.clone(),
            },
        );
        for &t in &woken {
            if let Some(w) = self.tasks[t as usize].wait.as_mut() {
                w.woken = true;
            }
        }
        woken.len()
    }
}

fn noop_waker() -> &'static Waker {
    Waker::noop()
}

/// The announcement: returns `Pending` once (recording the next step), then `Ready` when the
/// executor has chosen this task.
struct Announce {
    op: Op,
    done: bool,
}

impl Future for Announce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.done {
            Poll::Ready(())
        } else {
            self.done = true;
            let op = self.op;
            if with_state(|s| {
                s.announce(op);
                s.fast_step()
            }) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }
}

fn announce(op: Op) -> Announce {
    Announce { op, done: false }
}

/// One simulated primitive on object `r`: check that the object belongs to this simulation
/// and, for a primitive that may sleep, that the task holds no spinlock; announce `op`; once
/// chosen, apply it.
async fn sim_op<R>(
    r: &SimRaw,
    op: Op,
    may_sleep: Option<&str>,
    apply: impl FnOnce(&mut State) -> R,
) -> R {
    with_state(|s| {
        s.check(r);
        if let Some(what) = may_sleep {
            s.might_sleep(what);
        }
    });
    announce(op).await;
    with_state(apply)
}

/// A task started by a task ([`Platform::spawn`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimTask {
    pub id: TaskId,
    gen_: u32,
}

/// The simulation platform handle. Zero-sized: the state is the thread's current [`Sim`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SimPlatform;

impl SimPlatform {
    fn site(site: &'static str) -> u64 {
        with_state(|s| match s.sites.iter().position(|x| *x == site) {
            Some(i) => i as u64,
            None => {
                s.sites.push(site);
                (s.sites.len() - 1) as u64
            }
        })
    }
}

impl Platform for SimPlatform {
    type RawLock = SimRaw;
    type RawRwSem = SimRaw;
    type RawWaitQueue = SimRaw;
    type RawTask = SimTask;

    fn new_lock(&self, class: LockClass, name: &'static str) -> SimRaw {
        with_state(|s| {
            s.new_obj(
                name,
                ObjState::Lock {
                    class,
                    holder: None,
                    dirty: false,
                    no_lockless: false,
                },
            )
        })
    }

    async fn lock(&self, l: &SimRaw) {
        // `sim_op`'s checks, in one visit of the state: a mutex may sleep, a spinlock not.
        with_state(|s| {
            let id = s.check(l);
            if s.lock_mut(id).2 != LockClass::Spin {
                s.might_sleep("mutex_lock");
            }
        });
        announce(Op::new(OpKind::Lock, l.id)).await;
        with_state(|s| {
            let cur = s.current;
            let (_, holder, class) = s.lock_mut(l.id.0 as usize);
            *holder = Some(cur);
            let t = &mut s.tasks[cur as usize];
            if class == LockClass::Spin {
                t.spins_held += 1;
            }
            t.locks_held.push(l.id);
        })
    }

    async fn try_lock(&self, l: &SimRaw) -> bool {
        with_state(|s| s.refuse_lockless(l, "try_lock"));
        sim_op(l, Op::new(OpKind::TryLock, l.id), None, |s| {
            let cur = s.current;
            let (_, holder, class) = s.lock_mut(l.id.0 as usize);
            if holder.is_some() {
                return false;
            }
            *holder = Some(cur);
            let t = &mut s.tasks[cur as usize];
            if class == LockClass::Spin {
                t.spins_held += 1;
            }
            t.locks_held.push(l.id);
            true
        })
        .await
    }

    async fn unlock(&self, l: &SimRaw) {
        sim_op(l, Op::new(OpKind::Unlock, l.id), None, |s| {
            s.release_lock(l.id.0 as usize)
        })
        .await
    }

    fn unlock_now(&self, l: &SimRaw) {
        try_with_state(|s| {
            if l.gen_ == s.gen_ {
                s.touch(Op::new(OpKind::Unlock, l.id));
                s.release_lock(l.id.0 as usize);
            }
        })
    }

    // Outside a step (a setup without tasks, a guard used after the run) there is no footprint
    // to record.
    fn lock_data_mut(&self, l: &SimRaw) {
        try_with_state(|s| {
            if l.gen_ != s.gen_ || s.in_check {
                return;
            }
            let cur = s.current;
            if let ObjState::Lock { holder, dirty, .. } = &mut s.objs[l.id.0 as usize].state {
                debug_assert!(
                    holder.is_none_or(|h| h == cur),
                    "mutable access to a lock's data by a task that does not hold it"
                );
                *dirty = true;
            }
            s.touch(Op::new(OpKind::Write, l.id));
        })
    }

    fn rwsem_data_mut(&self, r: &SimRaw) {
        try_with_state(|s| {
            if r.gen_ == s.gen_ && !s.in_check {
                let mut op = Op::new(OpKind::Write, r.id);
                op.arg = RWSEM_DATA;
                s.touch(op);
            }
        })
    }

    fn lock_data_read(&self, l: &SimRaw) {
        try_with_state(|s| {
            if l.gen_ == s.gen_ && !s.in_check {
                s.touch(Op::new(OpKind::Read, l.id));
            }
        })
    }

    fn lock_data_part(&self, l: &SimRaw, kind: OpKind, first: u64, len: u64) {
        try_with_state(|s| {
            if l.gen_ != s.gen_ || s.in_check {
                return;
            }
            if kind != OpKind::Read {
                let cur = s.current;
                if let ObjState::Lock { holder, dirty, .. } = &mut s.objs[l.id.0 as usize].state {
                    debug_assert!(
                        holder.is_none_or(|h| h == cur),
                        "mutable access to a lock's data by a task that does not hold it"
                    );
                    // Counted as a change of the whole data in every later step of the holder
                    // (the part is not remembered across steps; see "Footprints").
                    *dirty = true;
                }
            }
            s.touch(Op::part(kind, l.id, first, len));
        })
    }

    fn lock_no_lockless_access(&self, l: &SimRaw) {
        with_state(|s| {
            let id = s.check(l);
            match &mut s.objs[id].state {
                ObjState::Lock {
                    class: LockClass::Spin,
                    no_lockless,
                    ..
                } => *no_lockless = true,
                _ => panic!("only a spinlock can be declared without lockless access"),
            }
        })
    }

    fn peek_lock<R>(&self, l: &SimRaw, f: impl FnOnce() -> R) -> Option<R> {
        hooks::peek(l, |s, id| s.lock_mut(id).1.is_none(), f)
    }

    // Announced as a read of the lock: dependent with the lock and unlock steps and with every
    // step of the holder (each writes the locks its task holds, see "Footprints"), independent
    // of other readers. The data is consistent at step granularity: a task's code runs alone
    // from one scheduling point to the next, so `f` sees every holder step either completely
    // or not at all, never a half-done one. That is what READ_ONCE of one word gives the
    // kernel (a PTE or PMD value from before or after a store, never torn); what the holder
    // changes in two steps, the reader can see half of, as in the kernel.
    async fn read_once<R>(&self, l: &SimRaw, f: impl FnOnce() -> R) -> R {
        with_state(|s| s.refuse_lockless(l, "read_once"));
        sim_op(l, Op::new(OpKind::Read, l.id), None, |_| ()).await;
        f()
    }

    fn new_rwsem(&self, name: &'static str) -> SimRaw {
        with_state(|s| {
            s.new_obj(
                name,
                ObjState::RwSem {
                    readers: Box::default(),
                    writer: None,
                    queued: Box::default(),
                },
            )
        })
    }

    async fn down_read(&self, r: &SimRaw) {
        let op = Op::new(OpKind::DownRead, r.id);
        sim_op(r, op, Some("down_read"), |s| {
            let cur = s.current;
            s.rwsem_mut(r.id.0 as usize).1.push(cur);
        })
        .await
    }

    async fn up_read(&self, r: &SimRaw) {
        let op = Op::new(OpKind::UpRead, r.id);
        sim_op(r, op, None, |s| s.up(r.id.0 as usize, false)).await
    }

    async fn down_write(&self, r: &SimRaw) {
        let id = r.id.0 as usize;
        let op = Op::new(OpKind::DownWrite, r.id);
        // The attempt (`rwsem_write_trylock`): take a free semaphore no other writer queued
        // for, or queue; only from then on does the writer keep new readers out.
        let got = sim_op(r, op, Some("down_write"), |s| {
            let cur = s.current;
            let ObjState::RwSem {
                readers,
                writer,
                queued,
            } = &mut s.objs[id].state
            else {
                unreachable!("object {id} is not a rwsem")
            };
            if readers.is_empty() && writer.is_none() && queued.is_empty() {
                *writer = Some(cur);
                true
            } else {
                queued.push(cur);
                false
            }
        })
        .await;
        if !got {
            // rwsem_down_write_slowpath: sleep until the semaphore is free, then take it.
            let mut op = Op::new(OpKind::DownWrite, r.id);
            op.arg = RWSEM_QUEUED;
            sim_op(r, op, None, |s| {
                let cur = s.current;
                let ObjState::RwSem { writer, queued, .. } = &mut s.objs[id].state else {
                    unreachable!("object {id} is not a rwsem")
                };
                debug_assert!(queued.contains(&cur) && writer.is_none());
                queued.retain(|&w| w != cur);
                *writer = Some(cur);
            })
            .await
        }
    }

    async fn up_write(&self, r: &SimRaw) {
        let op = Op::new(OpKind::UpWrite, r.id);
        sim_op(r, op, None, |s| s.up(r.id.0 as usize, true)).await
    }

    async fn downgrade_write(&self, r: &SimRaw) {
        let op = Op::new(OpKind::DowngradeWrite, r.id);
        sim_op(r, op, None, |s| {
            let cur = s.current;
            let id = r.id.0 as usize;
            let (name, readers, writer) = s.rwsem_mut(id);
            if *writer == Some(cur) {
                *writer = None;
                readers.push(cur);
            } else {
                s.fatal(
                    ViolationKind::Assertion("rwsem-not-held".into()),
                    format!("downgrade_write of {name}({id}) not held for write by this task"),
                );
            }
        })
        .await
    }

    fn up_now(&self, r: &SimRaw, write: bool) {
        try_with_state(|s| {
            if r.gen_ == s.gen_ {
                let kind = if write {
                    OpKind::UpWrite
                } else {
                    OpKind::UpRead
                };
                s.touch(Op::new(kind, r.id));
                s.up(r.id.0 as usize, write);
            }
        })
    }

    fn peek_rwsem<R>(&self, r: &SimRaw, f: impl FnOnce() -> R) -> Option<R> {
        hooks::peek(r, |s, id| s.rwsem_mut(id).2.is_none(), f)
    }

    fn new_waitqueue(&self, name: &'static str) -> SimRaw {
        with_state(|s| {
            s.new_obj(
                name,
                ObjState::WaitQueue {
                    waiters: Vec::new(),
                },
            )
        })
    }

    fn new_waitqueues(&self, name: &'static str, n: usize) -> Vec<SimRaw> {
        with_state(|s| {
            assert!(!s.in_check, "a check created the simulated object {name}");
            if n == 0 {
                return Vec::new();
            }
            // What `n` calls of `new_obj` do: one touch of the object table (a touch is
            // idempotent) and `n` consecutive ids.
            s.touch(Op::new(OpKind::Write, Op::ALLOC));
            let first = s.objs.len();
            s.objs.push_waitqueues(name, n);
            let gen_ = s.gen_;
            (first..first + n)
                .map(|id| SimRaw {
                    id: ObjId(id as u32),
                    gen_,
                })
                .collect()
        })
    }

    async fn prepare_to_wait(
        &self,
        wq: &SimRaw,
        key: WaitKey,
        exclusive: bool,
        func: WakeFn,
    ) -> WaiterId {
        let mut op = Op::new(OpKind::PrepareToWait, wq.id);
        op.arg = key.1;
        sim_op(wq, op, None, |s| {
            let id = s.next_waiter;
            s.next_waiter += 1;
            let task = s.current;
            let w = WaiterState {
                id,
                task,
                key,
                exclusive,
                func,
            };
            let q = s.wq_mut(wq.id.0 as usize);
            // prepare_to_wait queues at the head, prepare_to_wait_exclusive at the tail.
            if exclusive {
                q.push(w);
            } else {
                q.insert(0, w);
            }
            s.tasks[task as usize].wait = Some(TaskWait {
                wq: wq.id,
                key,
                exclusive,
                woken: false,
            });
            WaiterId(id)
        })
        .await
    }

    async fn schedule(&self, wq: &SimRaw, _w: WaiterId) {
        sim_op(
            wq,
            Op::new(OpKind::Schedule, wq.id),
            Some("schedule"),
            // It changes nothing: in the footprint, a read of the queue (see "Footprints").
            |s| s.step_op.kind = OpKind::WaitqueueActive,
        )
        .await
    }

    async fn finish_wait(&self, wq: &SimRaw, w: WaiterId) {
        sim_op(wq, Op::new(OpKind::FinishWait, wq.id), None, |s| {
            let q = s.wq_mut(wq.id.0 as usize);
            let queued = q.len();
            q.retain(|x| x.id != w.0);
            if q.len() == queued {
                // Woken, so no longer queued: the queue is left as it was (see "Footprints").
                s.step_op.kind = OpKind::WaitqueueActive;
            }
            let cur = s.current as usize;
            s.tasks[cur].wait = None;
        })
        .await
    }

    async fn wake_up(&self, wq: &SimRaw, key: WaitKey, mode: WakeMode) -> usize {
        let mut op = Op::new(OpKind::Wake, wq.id);
        op.arg = key.1;
        sim_op(wq, op, None, |s| {
            let t = &mut s.tasks[s.current as usize];
            // Reuse the record's path vector: a wake-up is on every entry unlock.
            match &mut t.last_wake {
                Some((q, k, m, path)) => {
                    (*q, *k, *m) = (wq.id, key, mode);
                    path.clone_from(&t.path);
                }
                None => t.last_wake = Some((wq.id, key, mode, t.path.clone())),
            }
            let n = s.wake_up(wq.id.0 as usize, key, mode);
            if n == 0 {
                // A wake-up that reached nobody left the queue as it was: in the footprint, a
                // read of it (see "Footprints").
                s.step_op.kind = OpKind::WaitqueueActive;
            }
            n
        })
        .await
    }

    async fn waitqueue_active(&self, wq: &SimRaw) -> bool {
        let op = Op::new(OpKind::WaitqueueActive, wq.id);
        sim_op(wq, op, None, |s| !s.wq_mut(wq.id.0 as usize).is_empty()).await
    }

    async fn yield_point(&self, site: &'static str) {
        let mut op = Op::new(OpKind::Yield, Op::NONE);
        op.arg = Self::site(site);
        announce(op).await;
    }

    // The task's own time (see "Time"): no footprint.
    fn now_ns(&self) -> u64 {
        with_state(|s| s.tasks[s.current as usize].clock)
    }

    // See "Time": the sleeper may be scheduled at any point (other tasks may or may not run
    // meanwhile, as the scheduler chooses); its own time moves on by `ns`, its CPU's does not
    // (the CPU is free for other tasks while it sleeps).
    async fn sleep_ns(&self, ns: u64) {
        with_state(|s| s.might_sleep("msleep"));
        let mut op = Op::new(OpKind::Sleep, Op::NONE);
        op.arg = ns;
        announce(op).await;
        with_state(|s| {
            let clock = &mut s.tasks[s.current as usize].clock;
            *clock = clock.saturating_add(ns);
        })
    }

    fn random_u64(&self) -> u64 {
        with_state(|s| {
            assert!(!s.in_check, "a check drew a random number");
            let cur = s.current as usize;
            match s.tasks.get_mut(cur) {
                Some(t) => t.rng.next_u64(),
                None => s.rng.next_u64(),
            }
        })
    }

    fn current_task(&self) -> TaskId {
        with_state(|s| TaskId(s.current))
    }

    async fn report(&self, a: Assertion) {
        let fatal = with_state(|s| {
            // WARNs are appended to the run's log in order: two reporting steps do not commute.
            s.touch(Op::new(OpKind::Write, Op::DMESG));
            let line = s.tasks[s.current as usize].line;
            if a.fatal {
                let name = a.name.clone();
                s.fatal(ViolationKind::Assertion(name), a.message.clone());
            } else {
                s.warnings.push((TaskId(s.current), line, a.clone()));
                let path = s.tasks[s.current as usize].path.clone();
                s.warning_paths.push(path);
            }
            a.fatal
        });
        if fatal {
            // BUG(): the task stops here; Exit is never enabled.
            announce(Op::new(OpKind::Exit, Op::NONE)).await;
            std::future::pending::<()>().await;
        }
    }

    fn set_line(&self, line: u32) {
        with_state(|s| {
            let cur = s.current as usize;
            s.tasks[cur].line = line;
        })
    }

    // The call path is the task's own (see `TaskState::path`): no footprint, no announcement.
    fn push_fn(&self, name: &'static str) {
        with_state(|s| {
            let cur = s.current as usize;
            s.tasks[cur].path.push(name);
        })
    }

    // Also runs when a finished simulation drops a task's future: then there is nothing to pop.
    fn pop_fn(&self) {
        try_with_state(|s| {
            if let Some(t) = s.tasks.get_mut(s.current as usize) {
                t.path.pop();
            }
        })
    }

    // The new task exists from this step on; the executor takes its future after the poll
    // and runs its first code (up to its first announcement) within this step.
    async fn spawn<F, Fut>(&self, name: &str, f: F) -> SimTask
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        announce(Op::new(OpKind::Spawn, Op::ALLOC)).await;
        let fut: TaskFuture = Box::pin(f());
        with_state(|s| {
            // The child starts at its spawner's time.
            let clock = s.tasks[s.current as usize].clock;
            let idx = s.push_task(name, clock);
            s.spawned.push(fut);
            SimTask {
                id: TaskId(idx as u32),
                gen_: s.gen_,
            }
        })
    }

    async fn join(&self, t: &SimTask) {
        with_state(|s| {
            assert_eq!(
                t.gen_, s.gen_,
                "a task was joined outside the simulation that created it"
            );
            s.might_sleep("join");
        });
        announce(Op::task(OpKind::Join, t.id.0 as usize)).await;
    }

    // Tasks with consecutive ids: one step that reads their exits; others: a join of each.
    async fn join_all(&self, ts: &[&SimTask]) {
        let mut ids: Vec<u32> = with_state(|s| {
            for t in ts {
                assert_eq!(
                    t.gen_, s.gen_,
                    "a task was joined outside the simulation that created it"
                );
            }
            ts.iter().map(|t| t.id.0).collect()
        });
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() || ids.windows(2).any(|w| w[1] != w[0] + 1) {
            for t in ts {
                self.join(t).await;
            }
            return;
        }
        with_state(|s| s.might_sleep("join"));
        announce(Op::tasks(OpKind::Join, ids[0] as usize, ids.len() as u64)).await;
    }
}

/// A store to pmem or a flush: the machine can crash before it, so crash checking stops
/// there (`crashcheck`'s points are the scheduling points before such ops), and an atomic
/// section never runs on into it: a crash can strike inside a spinlock's section.
fn crash_point(op: &Op) -> bool {
    op.kind == OpKind::Flush
        || (op.kind == OpKind::Write && (Op::MEM_BASE..Op::MEM_END).contains(&op.obj.0))
}

/// A lock that a step takes, takes no `&mut` to its data and releases (a guard dropped in the
/// same step) is left as the step found it: its footprint has a read of the lock in place of
/// the acquire and the release (see "Footprints"). The same holds for a rwsem taken for reading,
/// or for writing by a first attempt that got it (a queued writer's take changes the queue),
/// and released in the step with no `downgrade_write` between. `fp[0]` is the announced op; a
/// step that went on in an atomic section has the ops of its later steps after it, so a section
/// may start anywhere (a lock taken and released inside another's atomic section).
fn sections_in_one_step(fp: &mut Vec<Op>) {
    let mut k = 0;
    while k < fp.len() {
        let first = fp[k];
        let o = first.obj;
        let takes = |x: &Op| {
            x.obj == o
                && match x.kind {
                    OpKind::Lock | OpKind::TryLock | OpKind::DownRead => true,
                    OpKind::DownWrite => x.arg == RWSEM_ATTEMPT,
                    _ => false,
                }
        };
        let releases = |x: &Op| {
            matches!(x.kind, OpKind::Unlock | OpKind::UpRead | OpKind::UpWrite) && x.obj == o
        };
        let rwsem = matches!(first.kind, OpKind::DownRead | OpKind::DownWrite);
        // One acquire of the lock in the step, this one, released after it and never before
        // (a rwsem: with nothing else of it between, not a queued take nor a downgrade).
        let section = takes(&first)
            && fp.iter().filter(|x| takes(x)).count() == 1
            && !fp[..k].iter().any(releases)
            && fp[k + 1..].iter().any(releases)
            && (!rwsem
                || !fp.iter().any(|x| {
                    x.obj == o
                        && matches!(x.kind, OpKind::DowngradeWrite | OpKind::DownWrite)
                        && x.arg != RWSEM_ATTEMPT
                }));
        // (Looked for only after a section: most entries of a footprint are not lock ops.)
        if section && !fp.iter().any(|x| x.kind == OpKind::Write && x.obj == o) {
            // A section whose data accesses were all parts (no whole-data read of a lock with
            // parts, which its guard's `Deref` records) reads only the lock word; the parts stay.
            let parts = fp.iter().any(|x| x.part_of().is_some_and(|(l, ..)| l == o));
            let whole_read = fp
                .iter()
                .any(|x| x.kind == OpKind::Read && x.obj == o && x.arg != Op::LOCK_WORD);
            fp[k] = Op::new(OpKind::Read, o);
            if parts && !whole_read {
                fp[k].arg = Op::LOCK_WORD;
            }
            let mut i = k + 1;
            while i < fp.len() {
                if releases(&fp[i]) {
                    fp.remove(i);
                } else {
                    i += 1;
                }
            }
        }
        k += 1;
    }
    // The notes of rwsem data changes have served.
    fp.retain(|x| !(x.kind == OpKind::Write && x.arg == RWSEM_DATA && x.obj.0 < Op::PART_BASE));
}

/// The runs of consecutive values of the increasing `v`: (first, length).
fn runs(v: &[u64]) -> impl Iterator<Item = (u64, u64)> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let first = *v.get(i)?;
        let mut n = 1;
        while v.get(i + n).is_some_and(|&x| x == first + n as u64) {
            n += 1;
        }
        i += n;
        Some((first, n as u64))
    })
}

#[cfg(test)]
#[test]
fn runs_are_the_consecutive_stretches() {
    let r = |v: &[u64]| runs(v).collect::<Vec<_>>();
    assert_eq!(r(&[]), vec![]);
    assert_eq!(r(&[7]), vec![(7, 1)]);
    assert_eq!(r(&[1, 2, 3, 5, 6, 9]), vec![(1, 3), (5, 2), (9, 1)]);
    assert_eq!(r(&[0, 2, 4]), vec![(0, 1), (2, 1), (4, 1)]);
}

/// One access of the machine model by the current task, on the CPU it runs on (task `i` runs on
/// CPU `i % cpus`), starting when both the task and the CPU are ready (the later of their
/// clocks); the latency advances both clocks. The step writes the machine and the CPU's clock
/// (see "Footprints").
fn machine_op(
    mut req: memo::MemReq<'_>,
    f: impl FnOnce(&mut Machine, u64, usize, &mut [u8]) -> Result<u64, MemError>,
) -> Result<(), MemError> {
    with_state(|s| {
        if s.machine.is_none() {
            panic!(
                "{}: the model installed no machine (Sim::set_machine)",
                req.what
            );
        }
        let cpu = s.moves_clock();
        let task = s.current as usize;
        let now = s.clock(cpu).max(s.tasks[task].clock);
        // A recorded phase (memo.rs) answers in place of the machine model.
        let (answer, r) = if s.memo.is_some() {
            memo::memo_op(s, &mut req, cpu, now, |m, out| f(m, now, cpu, out))
        } else {
            let m = s.machine.as_mut().expect("checked above");
            let r = f(m, now, cpu, req.out);
            (memo::Answer::Fresh(m.take_touched()), r)
        };
        let t = answer.touched();
        // The shared machine state the operation touched (see "Footprints").
        for (first, n) in runs(&t.sets) {
            s.extra.push(Op::cache_sets(OpKind::Write, first, n));
        }
        for &d in &t.dimms {
            s.touch(Op::dimm(OpKind::Write, d));
        }
        // Runs of consecutive lines as one entry each (a fence may make a whole file durable).
        let line = crate::machine::LINE as u64;
        for (first, n) in runs(&t.lines) {
            s.extra.push(Op::mem(OpKind::Write, first * line, n * line));
        }
        if t.global {
            s.touch(Op::new(OpKind::Write, Op::MACHINE));
        }
        if let (Some(m), memo::Answer::Fresh(t)) = (s.machine.as_mut(), answer) {
            m.recycle_touched(t);
        }
        let ns = r?;
        let done = now.saturating_add(ns);
        *s.clock_mut(cpu) = done;
        s.tasks[task].clock = done;
        Ok(())
    })
}

/// A memory operation's request to [`machine_op`].
fn req<'a>(what: &'static str, addr: u64, input: &'a [u8], out: &'a mut [u8]) -> memo::MemReq<'a> {
    memo::MemReq {
        what,
        addr,
        input,
        out,
    }
}

impl SimPlatform {
    /// A non-blocking load (`Machine::load_nowait`): the data is read in this step, the CPU's
    /// clock advances only by the issue cost (and any wait for a free fill buffer); the next
    /// `mfence` waits for the load to complete. Lets a task keep several misses in flight, as
    /// an out-of-order core does with independent loads. Same footprint as `pmem_load`.
    pub async fn pmem_load_nowait(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        announce(Op::mem(OpKind::Read, addr, buf.len() as u64)).await;
        machine_op(req("load_nowait", addr, &[], buf), |m, now, cpu, buf| {
            m.load_nowait(now, cpu, addr, buf)
        })
    }

    /// The media under `[addr, addr + len)` goes bad (`Machine::inject_poison`): one step that
    /// writes the machine, like every memory op, and costs its CPU no time.
    pub async fn pmem_inject_poison(&self, addr: u64, len: u64) -> Result<(), MemError> {
        announce(Op::mem(OpKind::Write, addr, len.max(1))).await;
        machine_op(
            req("inject_poison", addr, &[], &mut []),
            |m, _now, _cpu, _| m.inject_poison(addr, len).map(|()| 0),
        )
    }
}

impl PmemPlatform for SimPlatform {
    async fn pmem_load(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        announce(Op::mem(OpKind::Read, addr, buf.len() as u64)).await;
        machine_op(req("load", addr, &[], buf), |m, now, cpu, buf| {
            m.load(now, cpu, addr, buf)
        })
    }

    async fn pmem_store(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        announce(Op::mem(OpKind::Write, addr, data.len() as u64)).await;
        machine_op(req("store", addr, data, &mut []), |m, now, cpu, _| {
            m.store(now, cpu, addr, data)
        })
    }

    async fn pmem_ntstore(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        announce(Op::mem(OpKind::Write, addr, data.len() as u64)).await;
        machine_op(req("ntstore", addr, data, &mut []), |m, now, cpu, _| {
            m.ntstore(now, cpu, addr, data)
        })
    }

    async fn clwb(&self, addr: u64) -> Result<(), MemError> {
        announce(Op::mem(OpKind::Flush, addr, 1)).await;
        machine_op(req("clwb", addr, &[], &mut []), |m, now, cpu, _| {
            m.clwb(now, cpu, addr)
        })
    }

    async fn clflushopt(&self, addr: u64) -> Result<(), MemError> {
        announce(Op::mem(OpKind::Flush, addr, 1)).await;
        machine_op(req("clflushopt", addr, &[], &mut []), |m, now, cpu, _| {
            m.clflushopt(now, cpu, addr)
        })
    }

    async fn clflush(&self, addr: u64) -> Result<(), MemError> {
        announce(Op::mem(OpKind::Flush, addr, 1)).await;
        machine_op(req("clflush", addr, &[], &mut []), |m, now, cpu, _| {
            m.clflush(now, cpu, addr)
        })
    }

    // A fence announces no line, but it drains its CPU's write-backs and write-combining
    // buffer: like every memory op it writes the machine (see "Footprints").
    async fn sfence(&self) -> Result<(), MemError> {
        announce(Op::new(OpKind::Flush, Op::NONE)).await;
        machine_op(req("sfence", 0, &[], &mut []), |m, now, cpu, _| {
            m.sfence(now, cpu)
        })
    }

    async fn mfence(&self) -> Result<(), MemError> {
        announce(Op::new(OpKind::Flush, Op::NONE)).await;
        machine_op(req("mfence", 0, &[], &mut []), |m, now, cpu, _| {
            m.mfence(now, cpu)
        })
    }
}

/// Executor settings for one run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seeds the model's randomness (`Platform::random_u64`).
    pub seed: u64,
    /// Livelock guard: a run longer than this many steps is a violation.
    pub step_limit: u64,
    /// Keep the full event log (otherwise only its hash).
    pub record_log: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            step_limit: 1_000_000,
            record_log: false,
        }
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// Every task finished.
    Done,
    /// A violation (fatal assertion, deadlock, lost wakeup, step limit, model panic).
    Violation(Violation),
    /// The driver stopped the run early (e.g. DFS sleep-set redundancy, replay ended).
    Abandoned,
}

impl RunEnd {
    /// A short name of the outcome: `done`, the violation's kind (as `--json` names it) or
    /// `abandoned`.
    pub fn name(&self) -> String {
        match self {
            RunEnd::Done => "done".into(),
            RunEnd::Violation(v) => v.kind.name(),
            RunEnd::Abandoned => "abandoned".into(),
        }
    }
}

type TaskFuture = Pin<Box<dyn Future<Output = ()>>>;

/// What a choice point shows the strategy: the step count, the enabled tasks, the footprint of
/// the step before it and the event-log hash so far.
pub type ChoiceView = (u64, Vec<TaskId>, Vec<Op>, u64);

/// One simulated execution. Create it, build the model (objects and tasks) with
/// [`Sim::platform`] and the [`Spawner`] impl, then drive it with [`Sim::run`] or step by step
/// (`enabled`, `step`) as the manual strategy and the GUI do.
pub struct Sim {
    futures: Vec<Option<TaskFuture>>,
    cfg: SimConfig,
    choices: Vec<u32>,
    /// Footprint of the last step: its announced op plus implicit touches.
    last_footprint: Vec<Op>,
    /// The events the last step logged: one per op it ran (an atomic section runs several).
    step_events: Vec<LogEvent>,
    /// Where each of those ops' part of the step's footprint ends, in `raw_footprint`.
    step_ends: Vec<usize>,
    /// The last step's footprint before its sections were folded (`sections_in_one_step`);
    /// kept only for a step of several ops.
    raw_footprint: Vec<Op>,
    /// The task's call path at each op of the last step (only with `record_log`).
    step_paths: Vec<Vec<&'static str>>,
    /// Step and end checks registered by the model.
    hooks: hooks::Hooks,
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Sim {
        let gen_ = GENERATION.fetch_add(1, Ordering::Relaxed);
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            assert!(
                s.is_none(),
                "only one simulation may be active on a thread at a time"
            );
            *s = Some(State {
                gen_,
                seed: cfg.seed,
                // (Capacities: a trace's run has a handful of tasks and CPUs and hundreds of
                // steps; growing each vector from empty cost several allocations a run.)
                clocks: Vec::with_capacity(4),
                current: 0,
                announced: false,
                tasks: Vec::with_capacity(8),
                objs: SPARE_OBJS.with(|o| std::mem::take(&mut *o.borrow_mut())),
                rng: ChaCha8Rng::seed_from_u64(cfg.seed),
                violation: None,
                warnings: Vec::new(),
                warning_paths: Vec::new(),
                extra: Vec::with_capacity(32),
                sites: Vec::new(),
                next_waiter: 0,
                machine: None,
                polling: false,
                in_check: false,
                spawned: Vec::new(),
                last_wakes: std::collections::BTreeMap::new(),
                memo: None,
                steps: 0,
                hasher: EventHasher::default(),
                log: Vec::new(),
                record_log: cfg.record_log,
                step_limit: cfg.step_limit,
                step_op: Op::new(OpKind::Exit, Op::NONE),
                fast: false,
            });
        });
        Sim {
            futures: Vec::with_capacity(8),
            cfg,
            choices: Vec::with_capacity(256),
            last_footprint: Vec::with_capacity(32),
            step_events: Vec::new(),
            step_ends: Vec::new(),
            raw_footprint: Vec::new(),
            step_paths: Vec::new(),
            hooks: hooks::Hooks::default(),
        }
    }

    pub fn platform(&self) -> SimPlatform {
        SimPlatform
    }

    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    pub fn task_count(&self) -> usize {
        self.futures.len()
    }

    pub fn steps(&self) -> u64 {
        with_state(|s| s.steps)
    }

    /// The latest time any CPU's or task's clock reached.
    pub fn now_ns(&self) -> u64 {
        with_state(|s| {
            let tasks = s.tasks.iter().map(|t| t.clock);
            s.clocks.iter().copied().chain(tasks).max().unwrap_or(0)
        })
    }

    /// Task `t`'s time: when its next step happens (see "Time").
    pub fn task_clock(&self, t: TaskId) -> u64 {
        with_state(|s| s.tasks[t.0 as usize].clock)
    }

    /// The clock of CPU `cpu`: when it is free for its tasks' next memory operation (see
    /// "Time").
    pub fn cpu_clock(&self, cpu: usize) -> u64 {
        with_state(|s| s.clock(cpu))
    }

    /// The CPU task `t` runs on.
    pub fn task_cpu(&self, t: TaskId) -> usize {
        with_state(|s| s.cpu_of(t.0 as usize))
    }

    /// The hash of the event log so far.
    pub fn hash(&self) -> u64 {
        with_state(|s| s.hasher.finish())
    }

    /// Choices made at steps where more than one task was enabled.
    pub fn choices(&self) -> &[u32] {
        &self.choices
    }

    pub fn task_name(&self, t: TaskId) -> String {
        with_state(|s| s.tasks[t.0 as usize].name.clone())
    }

    /// Install the machine the run's memory operations go to (before the tasks use it).
    pub fn set_machine(&mut self, m: Machine) {
        with_state(|s| s.machine = Some(m));
    }

    /// Look at (or change) the machine: contents, pending lines, crash points.
    pub fn with_machine<R>(&self, f: impl FnOnce(&mut Machine) -> R) -> Option<R> {
        with_state(|s| s.machine.as_mut().map(f))
    }

    /// The step task `t` will take next.
    pub fn next_op(&self, t: TaskId) -> Op {
        with_state(|s| s.tasks[t.0 as usize].next)
    }

    /// The model functions task `t` is in, outermost first (`Platform::enter_fn`).
    pub fn task_path(&self, t: TaskId) -> Vec<&'static str> {
        with_state(|s| s.tasks[t.0 as usize].path.clone())
    }

    /// The trace line task `t` is executing.
    pub fn task_line(&self, t: TaskId) -> u32 {
        with_state(|s| s.tasks[t.0 as usize].line)
    }

    /// A readable description of an op ("lock i_pages(3)").
    pub fn describe_op(&self, op: &Op) -> String {
        with_state(|s| detect::describe_op(s, op))
    }

    /// WARN-level assertions raised so far: (task, trace line, assertion).
    pub fn warnings(&self) -> Vec<(TaskId, u32, Assertion)> {
        with_state(|s| s.warnings.clone())
    }

    /// The footprint of the last step: its announced op plus everything it touched implicitly
    /// (its CPU's clock, the machine, releases of dropped guards, the kernel log, the object
    /// table; see "Footprints").
    pub fn last_footprint(&self) -> &[Op] {
        &self.last_footprint
    }

    /// Fill `out` with the tasks that can take a step now, in id order.
    pub fn enabled(&mut self, out: &mut Vec<TaskId>) {
        out.clear();
        with_state(|s| {
            for t in 0..s.tasks.len() {
                if s.op_enabled(t) {
                    out.push(TaskId(t as u32));
                }
            }
        })
    }

    /// The violation raised so far, if any.
    pub fn violation(&self) -> Option<Violation> {
        with_state(|s| s.violation.clone())
    }

    /// Whether the run is over, and how: a violation raised, nobody able to move (every task
    /// finished, possibly with WARNs; or a deadlock / lost wakeup), or the step limit reached.
    /// `None` while the run goes on; `enabled` then holds the tasks that can move.
    pub fn check_end(&mut self, enabled: &mut Vec<TaskId>) -> Option<RunEnd> {
        // One visit of the state for both (this runs before every step).
        let (violation, steps) = with_state(|s| {
            if s.violation.is_some() {
                return (s.violation.clone(), s.steps);
            }
            enabled.clear();
            for t in 0..s.tasks.len() {
                if s.op_enabled(t) {
                    enabled.push(TaskId(t as u32));
                }
            }
            (None, s.steps)
        });
        if let Some(v) = violation {
            return Some(RunEnd::Violation(self.finish_violation(v)));
        }
        if enabled.is_empty() {
            let all_finished =
                with_state(|s| s.tasks.iter().all(|t| t.status == TaskStatus::Finished));
            let v = if all_finished {
                // WARNs let the run go on, but a run that raised one is not clean.
                let Some((task, line, a)) = with_state(|s| s.warnings.first().cloned()) else {
                    return Some(match self.run_end_checks() {
                        Some(v) => RunEnd::Violation(self.finish_violation(v)),
                        None => RunEnd::Done,
                    });
                };
                let path = with_state(|s| s.warning_paths.first().cloned().unwrap_or_default());
                let within = if path.is_empty() {
                    String::new()
                } else {
                    format!(" (in {})", path.join(" > "))
                };
                Violation {
                    kind: ViolationKind::Assertion(a.name),
                    message: format!("WARN: {}{within}", a.message),
                    task: Some(task),
                    line,
                    cycle: Vec::new(),
                    tasks: Vec::new(),
                }
            } else {
                with_state(|s| detect::diagnose(s))
            };
            return Some(RunEnd::Violation(self.finish_violation(v)));
        }
        if steps >= self.cfg.step_limit {
            let v = Violation::step_limit(self.cfg.step_limit);
            return Some(RunEnd::Violation(self.finish_violation(v)));
        }
        None
    }

    /// Record a choice among `n_enabled` tasks (for the schedule string).
    pub fn record_choice(&mut self, t: TaskId, n_enabled: usize) {
        if n_enabled > 1 {
            self.choices.push(t.0);
        }
    }

    /// Poll task `idx` as the current task up to its next announcement, or to its end. A panic
    /// of the model is a violation and ends the task.
    fn poll_task(&mut self, idx: usize) {
        let polling = with_state(|s| {
            s.current = idx as u32;
            s.announced = false;
            std::mem::replace(&mut s.polling, true)
        });
        let fut = self.futures[idx]
            .as_mut()
            .expect("a finished task has no next step");
        let mut cx = Context::from_waker(noop_waker());
        let res = catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)));
        // One visit of the state after the poll (this runs at every step).
        let (finished, spawned) = with_state(|s| {
            s.polling = polling;
            let finished = match res {
                Ok(Poll::Ready(())) => true,
                Ok(Poll::Pending) => {
                    let name = &s.tasks[idx].name;
                    assert!(
                        s.announced,
                        "task {name} awaited a future that is not a Platform operation"
                    );
                    false
                }
                Err(payload) => {
                    let msg = panic_message(&payload);
                    s.fatal(
                        ViolationKind::ModelPanic,
                        format!("the model panicked: {msg}"),
                    );
                    true
                }
            };
            if finished {
                s.tasks[idx].status = TaskStatus::Finished;
                s.tasks[idx].next = Op::new(OpKind::Exit, Op::NONE);
                // The exit a join waits for.
                s.touch(Op::task(OpKind::Write, idx));
            }
            (finished, !s.spawned.is_empty())
        });
        if finished {
            self.futures[idx] = None;
        }
        if !spawned {
            return;
        }
        // Tasks this poll spawned: their first code runs within the same step.
        loop {
            let Some(fut) = with_state(|s| {
                if s.spawned.is_empty() {
                    None
                } else {
                    Some(s.spawned.remove(0))
                }
            }) else {
                break;
            };
            let child = self.futures.len();
            self.futures.push(Some(fut));
            debug_assert!(with_state(|s| s.tasks.len() >= self.futures.len()));
            self.start_task(child);
        }
    }

    /// Run task `t` (which must be enabled) up to its next scheduling point. An atomic section
    /// runs several of the task's ops in one step ("Atomic sections"): each is logged and
    /// hashed as its own event, with its own step number, as if the task had run them one
    /// after the other with nobody preempting it, and the step checks run after each.
    pub fn step(&mut self, t: TaskId) {
        let idx = t.0 as usize;
        self.last_footprint.clear();
        self.step_events.clear();
        self.step_ends.clear();
        self.step_paths.clear();
        debug_assert!(
            with_state(|s| s.op_enabled(idx)),
            "stepping a task that is not enabled"
        );
        loop {
            let begun = with_state(|s| {
                if s.record_log {
                    self.step_paths.push(s.tasks[idx].path.clone());
                }
                let ev = s.begin_step(idx);
                self.step_events.push(ev);
                s.steps
            });
            self.poll_task(idx);
            // The event log records the step's time, the task's own (see "Time"): no
            // footprint.
            let go_on = with_state(|s| {
                // The poll took further steps on the fast path (only in `run`, which reads no
                // step's ops: see "Fast path"): the poll's last step is the one whose
                // footprint this is, and whether a section goes on depends on it alone.
                if s.steps != begun {
                    self.last_footprint.clear();
                    self.step_events.clear();
                    self.step_ends.clear();
                    self.step_paths.clear();
                }
                self.last_footprint.push(s.step_op);
                self.last_footprint.extend_from_slice(&s.extra);
                // The holder's changes to the data its locks protect (see "Footprints").
                for &l in &s.tasks[idx].locks_held {
                    if matches!(
                        s.objs[l.0 as usize].state,
                        ObjState::Lock { dirty: true, .. }
                    ) {
                        self.last_footprint.push(Op::new(OpKind::Write, l));
                    }
                }
                // An atomic section goes on into the task's next step when that can run now
                // (see "Atomic sections" for why no interleaving is lost).
                s.violation.is_none()
                    && s.op_enabled(idx)
                    && s.within_atomic_section(idx, &self.last_footprint)
                    && !crash_point(&s.tasks[idx].next)
            });
            self.step_ends.push(self.last_footprint.len());
            self.run_step_checks(t);
            if !go_on || with_state(|s| s.violation.is_some()) {
                break;
            }
        }
        if self.step_events.len() > 1 {
            self.raw_footprint.clone_from(&self.last_footprint);
        }
        sections_in_one_step(&mut self.last_footprint);
    }

    /// The ops the last step ran, one per event it logged (more than one for an atomic
    /// section): each op's event, its own footprint (the op first, then what it touched, as
    /// if it had been a step of its own: see "Footprints") and the task's call path when it
    /// ran (empty unless `record_log`). Their footprints together are `last_footprint`.
    /// Not during [`Sim::run`], whose fast path keeps no step's ops but its poll's last.
    pub fn last_step_ops(&self) -> Vec<(LogEvent, Vec<Op>, Vec<&'static str>)> {
        debug_assert!(
            !with_state(|s| s.fast),
            "last_step_ops read during Sim::run (see \"Fast path\")"
        );
        let one = self.step_events.len() == 1;
        let mut start = 0;
        let mut out = Vec::with_capacity(self.step_events.len());
        for (k, ev) in self.step_events.iter().enumerate() {
            let end = self.step_ends[k];
            let fp = if one {
                self.last_footprint.clone()
            } else {
                let mut fp = self.raw_footprint[start..end].to_vec();
                sections_in_one_step(&mut fp);
                fp
            };
            start = end;
            let path = self.step_paths.get(k).cloned().unwrap_or_default();
            out.push((*ev, fp, path));
        }
        out
    }

    /// Run a new task's code up to its first Platform operation. That code touches only the
    /// task's own state, so it is not a scheduling step (no log event, no preemption). It may
    /// run inside another task's step (a task spawning one): that step's state is kept.
    fn start_task(&mut self, idx: usize) {
        // The first announcement of the new task ends its first code, not a step: no fast
        // path (see "Fast path").
        let saved = with_state(|s| {
            let fast = std::mem::replace(&mut s.fast, false);
            (s.current, s.announced, std::mem::take(&mut s.extra), fast)
        });
        self.poll_task(idx);
        with_state(|s| {
            // What the new task's first code touched belongs to the spawning step.
            let touched = std::mem::take(&mut s.extra);
            let fast;
            (s.current, s.announced, s.extra, fast) = saved;
            s.fast = fast;
            s.extra.extend(touched);
        });
    }

    /// Drive the run to its end, asking `choose` at every step with more than one enabled task.
    /// Steps with one enabled task take the fast path (see "Fast path") unless the model
    /// registered step checks.
    pub fn run(&mut self, mut choose: impl FnMut(&Sim, &[TaskId]) -> TaskId) -> RunEnd {
        let fast = !self.step_checks_on();
        with_state(|s| s.fast = fast);
        let end = self.run_steps(|sim, en| {
            Some(if en.len() == 1 {
                en[0]
            } else {
                choose(sim, en)
            })
        });
        with_state(|s| s.fast = false);
        end
    }

    /// Drive the run to its end with choices drawn from `seed`, through [`Sim::run`] (`fast`:
    /// the fast path) or through [`Sim::run_steps`] (the executor loop at every step), and
    /// return what each choice showed: the comparison that proves "Fast path" (the same choices
    /// see the same [`ChoiceView`]s either way).
    pub fn run_random_observed(&mut self, seed: u64, fast: bool) -> (RunEnd, Vec<ChoiceView>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut seen = Vec::new();
        let mut choose = |sim: &Sim, en: &[TaskId]| {
            seen.push((
                sim.steps(),
                en.to_vec(),
                sim.last_footprint().to_vec(),
                sim.hash(),
            ));
            en[rand::RngExt::random_range(&mut rng, 0..en.len())]
        };
        let end = if fast {
            self.run(&mut choose)
        } else {
            self.run_steps(|sim, en| {
                Some(if en.len() == 1 {
                    en[0]
                } else {
                    choose(sim, en)
                })
            })
        };
        (end, seen)
    }

    /// Drive the run to its end, asking `choose` at every step (even with one enabled task);
    /// `None` abandons the run (`RunEnd::Abandoned`).
    pub fn run_steps(
        &mut self,
        mut choose: impl FnMut(&Sim, &[TaskId]) -> Option<TaskId>,
    ) -> RunEnd {
        let mut enabled = Vec::with_capacity(self.futures.len());
        loop {
            if let Some(end) = self.check_end(&mut enabled) {
                return end;
            }
            let Some(t) = choose(self, &enabled) else {
                return RunEnd::Abandoned;
            };
            self.record_choice(t, enabled.len());
            self.step(t);
        }
    }

    /// Complete a violation with every task's state (for reports).
    pub fn finish_violation(&self, mut v: Violation) -> Violation {
        if v.tasks.is_empty() {
            v.tasks = with_state(|s| detect::task_reports(s));
        }
        v
    }

    /// The event log (empty unless `record_log`), with names.
    pub fn event_log(&self) -> EventLog {
        with_state(|s| EventLog {
            tasks: s.tasks.iter().map(|t| t.name.clone()).collect(),
            objects: s.objs.iter().map(|o| o.name.to_string()).collect(),
            sites: s.sites.iter().map(|x| x.to_string()).collect(),
            events: s.log.clone(),
            hash: s.hasher.finish(),
        })
    }
}

impl Sim {
    /// Start task `name` before the run, as [`Spawner::spawn`] does, and return its handle,
    /// so that a task spawned after it can join it (a model's task that waits for the others).
    pub fn spawn_joinable<F, Fut>(&mut self, name: &str, f: F) -> JoinHandle<SimPlatform>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let (idx, gen_) = with_state(|s| (s.push_task(name, 0), s.gen_));
        self.futures.push(Some(Box::pin(f())));
        self.start_task(idx);
        JoinHandle::from_raw(SimTask {
            id: TaskId(idx as u32),
            gen_,
        })
    }
}

impl Spawner<SimPlatform> for Sim {
    fn spawn<F, Fut>(&mut self, name: &str, f: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        self.spawn_joinable(name, f);
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        // Task futures may hold guards whose drop releases simulated locks: drop them while
        // the state still exists, then clear the thread's slot.
        self.futures.clear();
        self.clear_hooks();
        STATE.with(|s| {
            if let Ok(mut s) = s.try_borrow_mut()
                && let Some(mut state) = s.take()
            {
                if let Some(m) = state.machine.take() {
                    memo::SPARE_MACHINE.with(|spare| {
                        if let Ok(mut spare) = spare.try_borrow_mut() {
                            *spare = Some(m);
                        }
                    });
                }
                state.objs.clear();
                SPARE_OBJS.with(|o| {
                    if let Ok(mut o) = o.try_borrow_mut() {
                        *o = std::mem::take(&mut state.objs);
                    }
                });
            }
        });
    }
}

fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}
