//! The Platform seam: every piece of shared state that two tasks can race on is reached through
//! these primitives, so that the deterministic executor (`crate::sim`) sees every interleaving
//! point and the native platform (`crate::native`) runs the same code on OS threads.
//!
//! Each primitive first *announces* what it will touch ([`Op`]: a kind and an [`ObjId`]) and then
//! awaits: the scheduling point comes before the operation, so the scheduler always knows every
//! task's next step (needed for sleep sets and for the GUI's "next step" column).
//!
//! The raw primitives (`Platform::lock`, `Platform::down_read`, ...) are wrapped by typed guards
//! that own the protected data: [`SpinLock`], [`Mutex`], [`RwSem`]. Releasing is a scheduling
//! point too, so guards are released with an explicit `unlock(...).await`; dropping a guard
//! releases it without a scheduling point (the simulator records the release as part of the
//! current step's footprint, and the explorer keeps the footprint each step really had, so
//! exploration stays sound).

use crate::machine::MemError;
use serde::{Deserialize, Serialize};
use std::cell::UnsafeCell;
use std::fmt;
use std::future::Future;
use std::ops::{Deref, DerefMut};

/// Identity of a shared object for the scheduler (a lock, a wait queue, a cache line, ...).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct ObjId(pub u32);

/// Identity of a task (a trace thread, a toy-model thread) within one execution.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct TaskId(pub u32);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task{}", self.0)
    }
}

/// What kind of lock a raw lock models; used in reports and for the kernel's rules (a spinlock
/// holder must not sleep).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum LockClass {
    /// `spinlock_t` (xa_lock, the page-table lock): holders must not sleep.
    Spin,
    /// `struct mutex`.
    Mutex,
    /// A page-lock-style bit lock (`lock_page`, `PG_locked`).
    Bit,
}

/// The key a wait-queue entry sleeps on or a waker wakes, as `struct exceptional_entry_key`
/// (`{xa, entry_start}`) in fs/dax.c or `{page, bit}` for bit waits. Two plain words.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub struct WaitKey(pub u64, pub u64);

impl fmt::Display for WaitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{:#x}, {:#x}}}", self.0, self.1)
    }
}

/// A keyed wake function, as `wait_queue_entry.func`: called with the waiter's key and the key
/// passed to `__wake_up`; returns whether this waiter is woken. A plain function pointer so that
/// runs stay deterministic and comparable.
pub type WakeFn = fn(waiter: &WaitKey, wake: &WaitKey) -> bool;

/// Wakes every waiter whatever the key (`autoremove_wake_function` without a key).
pub fn wake_any(_waiter: &WaitKey, _wake: &WaitKey) -> bool {
    true
}

/// Wakes waiters whose key equals the wake key (`wake_exceptional_entry_func`, `wake_bit_function`).
pub fn wake_key_eq(waiter: &WaitKey, wake: &WaitKey) -> bool {
    waiter == wake
}

/// How many exclusive waiters a wake-up wakes (`__wake_up`'s `nr_exclusive`): non-exclusive
/// waiters that match are always woken.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum WakeMode {
    /// `WAKE_NEXT`: wake at most one exclusive waiter.
    Next,
    /// `WAKE_ALL`: wake every matching waiter.
    All,
}

/// A waiter registered by `prepare_to_wait`; passed back to `schedule` and `finish_wait`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct WaiterId(pub u32);

/// The kind of a scheduling step: what the task will do next.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum OpKind {
    /// `yield_point(site)`; `site` indexes the executor's site table.
    Yield,
    Lock,
    TryLock,
    Unlock,
    DownRead,
    UpRead,
    DownWrite,
    UpWrite,
    DowngradeWrite,
    PrepareToWait,
    /// Sleep until woken (`schedule()` after `prepare_to_wait`).
    Schedule,
    FinishWait,
    Wake,
    /// `waitqueue_active()`: a read of the wait queue.
    WaitqueueActive,
    /// Sleep for simulated time.
    Sleep,
    /// A read of shared memory (cache line, page).
    Read,
    /// A write of shared memory.
    Write,
    /// A flush or fence (persistency order).
    Flush,
    /// The task ended, or stopped after a BUG.
    Exit,
    /// `Platform::spawn`: create a task (a write of the task table, `Op::ALLOC`).
    Spawn,
    /// `JoinHandle::join`: wait until a task has finished (a read of its exit, `Op::task`).
    Join,
    /// An addition to a counter (`nrpages += n`), only in footprints: two additions commute,
    /// an addition and a read or write of the counter do not.
    Add,
}

impl OpKind {
    /// Whether two steps of these kinds on the same object may not commute.
    ///
    /// Readers of a rwsem commute with each other: `down_read` and `up_read` of two tasks
    /// change the reader set (a set: it has no order) and neither disables the other (a reader
    /// waits only for a writer that holds or has queued, which neither step changes).
    pub fn conflicts(self, other: OpKind) -> bool {
        use OpKind::*;
        !matches!(
            (self, other),
            (Read, Read)
                | (WaitqueueActive, WaitqueueActive)
                | (Join, Join)
                | (Add, Add)
                | (DownRead | UpRead, DownRead | UpRead)
        )
    }
}

/// One announced step: what a task will do and to which object. `arg` carries a detail
/// (the wait key for wait-queue ops, the duration for sleeps, the site for yields).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Op {
    pub kind: OpKind,
    pub obj: ObjId,
    pub arg: u64,
}

impl Op {
    /// The "no object" id used by ops that touch nothing shared.
    pub const NONE: ObjId = ObjId(u32::MAX);
    /// Parts of the data of a lock created with parts (`SpinLock::new_with_parts`): the part
    /// entries of lock `l` have the id `PART_BASE + l`, and `arg` packs a range of keys of the
    /// data (`first << 32 | len`, e.g. xarray indices). Object ids stay below it.
    pub const PART_BASE: u32 = 0x7000_0000;
    /// The last part id (exclusive).
    pub const PART_END: u32 = 0x8000_0000;
    /// `arg` of a `Read` of a lock that stands for the lock word only: a critical section taken
    /// and released in one step whose data accesses are all parts (see `sim` "Footprints"). It
    /// conflicts with every step that takes, keeps, releases or wholly writes the lock, not with
    /// accesses of parts.
    pub const LOCK_WORD: u64 = 1;
    /// Cache lines of pmem have ids from here: `MEM_BASE + addr / 64`, and a memory op's `arg`
    /// is the number of lines it touches (so 2^30 lines, 64 GiB of pmem, are addressable).
    pub const MEM_BASE: u32 = 0x8000_0000;
    /// The last id of the line range (exclusive).
    pub const MEM_END: u32 = 0xC000_0000;
    /// CPU `c`'s clock has the id `CPU_BASE + c` (see `sim` "Time"): a footprint reads it
    /// (every step: the event log records the time) or writes it (memory latency, sleeps).
    /// A memory operation's write of its CPU's clock also stands for the CPU's own machine
    /// state (fill buffers, write-combining buffer, outstanding flushes and loads).
    pub const CPU_BASE: u32 = 0xC000_0000;
    /// The last CPU id (exclusive).
    pub const CPU_END: u32 = 0xD000_0000;
    /// Set `s` of the machine's last-level cache (its ways, LRU stamps and fill times) has the
    /// id `SET_BASE + s`.
    pub const SET_BASE: u32 = 0xD000_0000;
    /// The last cache-set id (exclusive).
    pub const SET_END: u32 = 0xE000_0000;
    /// DIMM `d` of the machine's media model (its buffer, write-pending queue, read and write
    /// pipelines, contention window) has the id `DIMM_BASE + d`.
    pub const DIMM_BASE: u32 = 0xE000_0000;
    /// The last DIMM id (exclusive).
    pub const DIMM_END: u32 = 0xF000_0000;
    /// Task `t`'s exit has the id `TASK_BASE + t`: a join reads it, the task's last step
    /// writes it. A join of several tasks reads a range: `arg` exits from `obj` (`Op::tasks`).
    pub const TASK_BASE: u32 = 0xF000_0000;
    /// The last task-exit id (exclusive).
    pub const TASK_END: u32 = 0xFFFF_0000;
    /// The machine-wide state no finer object stands for: the media model's tail-event
    /// generator and the poison log a machine check appends to (see `sim` "Footprints").
    pub const MACHINE: ObjId = ObjId(0xFFFF_FFFD);
    /// The kernel log: WARN/BUG reports are appended in order, so reporting steps conflict.
    pub const DMESG: ObjId = ObjId(0xFFFF_FFFE);
    /// The object table: objects are numbered in creation order, so two steps that create
    /// objects conflict.
    pub const ALLOC: ObjId = ObjId(0xFFFF_FFFC);

    /// The footprint entry for CPU `cpu`'s clock.
    pub fn cpu(kind: OpKind, cpu: usize) -> Op {
        let span = (Op::CPU_END - Op::CPU_BASE) as usize;
        Op::new(kind, ObjId(Op::CPU_BASE + (cpu % span) as u32))
    }

    /// The footprint entry for `n` consecutive sets of the last-level cache from `set`.
    pub fn cache_sets(kind: OpKind, set: u64, n: u64) -> Op {
        let span = u64::from(Op::SET_END - Op::SET_BASE);
        let first = set % span;
        Op {
            kind,
            obj: ObjId(Op::SET_BASE + first as u32),
            arg: n.clamp(1, span - first),
        }
    }

    /// The footprint entry for DIMM `dimm` of the media model.
    pub fn dimm(kind: OpKind, dimm: usize) -> Op {
        let span = (Op::DIMM_END - Op::DIMM_BASE) as usize;
        Op::new(kind, ObjId(Op::DIMM_BASE + (dimm % span) as u32))
    }

    /// The footprint entry for task `t`'s exit.
    pub fn task(kind: OpKind, t: usize) -> Op {
        let span = (Op::TASK_END - Op::TASK_BASE) as usize;
        Op::new(kind, ObjId(Op::TASK_BASE + (t % span) as u32))
    }

    /// The footprint entry for the exits of the `n` tasks from `first` (a join of them all;
    /// at least one, never past the last task id).
    pub fn tasks(kind: OpKind, first: usize, n: u64) -> Op {
        let span = u64::from(Op::TASK_END - Op::TASK_BASE);
        let first = first as u64 % span;
        Op {
            kind,
            obj: ObjId(Op::TASK_BASE + first as u32),
            arg: n.clamp(1, span - first),
        }
    }

    /// The first task whose exit this op touches, if it touches one.
    pub fn task_of(&self) -> Option<TaskId> {
        self.tasks_of().map(|(first, _)| first)
    }

    /// The tasks whose exits this op touches, if it touches any: the first and how many.
    pub fn tasks_of(&self) -> Option<(TaskId, u32)> {
        (Op::TASK_BASE..Op::TASK_END)
            .contains(&self.obj.0)
            .then(|| (TaskId(self.obj.0 - Op::TASK_BASE), self.arg.max(1) as u32))
    }

    /// The footprint entry for keys `[first, first + len)` of the data of lock `lock` (a lock
    /// with parts; `len` at least 1; ranges are clamped to keys below 2^32 - 1, and every key
    /// from there on counts as that last key, which keeps larger keys dependent).
    pub fn part(kind: OpKind, lock: ObjId, first: u64, len: u64) -> Op {
        debug_assert!(
            lock.0 < Op::PART_END - Op::PART_BASE,
            "lock id out of the part space"
        );
        // Keys at or past 2^32 - 1 share the last key (conservative: they all overlap).
        let first = first.min(u64::from(u32::MAX - 1));
        let len = len.clamp(1, u64::from(u32::MAX) - first);
        Op {
            kind,
            obj: ObjId(Op::PART_BASE + lock.0),
            arg: (first << 32) | len,
        }
    }

    /// The lock and key range `[first, first + len)` of a part entry.
    pub fn part_of(&self) -> Option<(ObjId, u64, u64)> {
        (Op::PART_BASE..Op::PART_END)
            .contains(&self.obj.0)
            .then(|| {
                let len = (self.arg & 0xffff_ffff).max(1);
                (ObjId(self.obj.0 - Op::PART_BASE), self.arg >> 32, len)
            })
    }

    /// The op touching `len` bytes of pmem at `addr` (at least one line).
    pub fn mem(kind: OpKind, addr: u64, len: u64) -> Op {
        let first = addr / 64;
        let last = (addr + len.max(1) - 1) / 64;
        let lines = (Op::MEM_END - Op::MEM_BASE) as u64;
        Op {
            kind,
            obj: ObjId(Op::MEM_BASE + (first % lines) as u32),
            arg: (last - first + 1).min(lines - first % lines),
        }
    }

    /// The range of ids this op touches: `arg` lines from `obj` for a memory op, `arg` cache
    /// sets from `obj` for a cache-set entry, `arg` task exits from `obj` for a task's exit
    /// (at least one; ranges never leave their id space).
    pub(crate) fn range(&self) -> Option<(u32, u64)> {
        let id = self.obj.0;
        ((Op::MEM_BASE..Op::MEM_END).contains(&id)
            || (Op::SET_BASE..Op::SET_END).contains(&id)
            || (Op::TASK_BASE..Op::TASK_END).contains(&id))
        .then_some((id, self.arg.max(1)))
    }

    pub fn new(kind: OpKind, obj: ObjId) -> Op {
        Op { kind, obj, arg: 0 }
    }

    /// Whether these two accesses are dependent (same object, not both reads). Accesses of
    /// nothing shared commute with everything. A step's full footprint is a list of accesses
    /// (see [`footprints_depend`]).
    pub fn depends_on(&self, other: &Op) -> bool {
        match (self.part_of(), other.part_of()) {
            // Two parts of one lock's data: dependent when their key ranges overlap.
            (Some((l, a, n)), Some((m, b, k))) => {
                return l == m && a < b + k && b < a + n && self.kind.conflicts(other.kind);
            }
            // A part and the lock itself: a read of the lock word only (`LOCK_WORD`) touches
            // no data, a whole-data read commutes with a part read; everything else on the lock
            // (taking, keeping, releasing it, a whole-data write) is dependent.
            (Some((l, ..)), None) => return other.depends_on_part_of(l, self.kind),
            (None, Some((l, ..))) => return self.depends_on_part_of(l, other.kind),
            (None, None) => {}
        }
        if let (Some((a, n)), Some((b, m))) = (self.range(), other.range()) {
            // Memory ops and cache sets: dependent when their ranges overlap.
            let (a, b) = (a as u64, b as u64);
            return a < b + m && b < a + n && self.kind.conflicts(other.kind);
        }
        self.obj != Op::NONE && self.obj == other.obj && self.kind.conflicts(other.kind)
    }
}

impl Op {
    /// Whether this op, which is no part, is dependent with an access of kind `part` to a part
    /// of lock `l`'s data (see [`Op::depends_on`]).
    fn depends_on_part_of(&self, l: ObjId, part: OpKind) -> bool {
        if self.obj != l {
            return false;
        }
        match self.kind {
            OpKind::Read if self.arg == Op::LOCK_WORD => false,
            OpKind::Read => part != OpKind::Read,
            _ => true,
        }
    }
}

/// Whether two steps with these footprints (announced op plus implicit accesses, see
/// `sim::Sim::last_footprint`) may not commute.
pub fn footprints_depend(a: &[Op], b: &[Op]) -> bool {
    a.iter().any(|x| b.iter().any(|y| x.depends_on(y)))
}

/// A 64-bit summary of the objects a footprint touches, for a quick test before
/// [`footprints_depend`]: one bit per object (a lock and its parts share the lock's bit), per
/// 8-id chunk of a line or cache-set range. Two dependent accesses touch a common object, or
/// overlapping ranges, so they set a common bit.
pub fn footprint_sig(fp: &[Op]) -> u64 {
    let bit = |key: u64| 1u64 << (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58);
    let mut sig = 0;
    for op in fp {
        if let Some((l, ..)) = op.part_of() {
            sig |= bit(u64::from(l.0));
        } else if let Some((first, n)) = op.range() {
            let (lo, hi) = (u64::from(first) >> 3, (u64::from(first) + n - 1) >> 3);
            if hi - lo >= 64 {
                return !0;
            }
            for chunk in lo..=hi {
                sig |= bit(chunk | 1 << 40);
            }
        } else if op.obj != Op::NONE {
            sig |= bit(u64::from(op.obj.0));
        }
    }
    sig
}

/// [`footprints_depend`] behind the [`footprint_sig`] test (`sa`, `sb`: the footprints'
/// summaries).
pub fn footprints_depend_sig(a: &[Op], sa: u64, b: &[Op], sb: u64) -> bool {
    // Invariant: footprints_depend(a, b) implies sa & sb != 0 (see footprint_sig).
    sa & sb != 0 && footprints_depend(a, b)
}

/// A BUG/WARN analogue raised by model code: a violation, not a panic.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Assertion {
    /// `BUG` stops the task (and the run); `WARN` is reported and the run goes on.
    pub fatal: bool,
    /// A short machine-readable name, e.g. `dax-unlock-unlocked-entry`.
    pub name: String,
    pub message: String,
}

/// The seam. Implemented by [`crate::sim::SimPlatform`] (deterministic, single OS thread) and
/// [`crate::native::NativePlatform`] (OS threads, real locks).
///
/// A platform value is a cheap handle (a zero-sized type for both implementations): model code
/// keeps a copy. Raw objects are created through it and then used only with the same platform.
pub trait Platform: Clone + Send + Sync + 'static {
    /// An exclusive lock: spinlock, mutex or bit lock.
    type RawLock: Send + Sync;
    /// A reader/writer semaphore, writer-preferring like the kernel's `rw_semaphore`.
    type RawRwSem: Send + Sync;
    /// A task started by [`Platform::spawn`], for [`Platform::join`].
    type RawTask: Send + Sync;
    /// A wait queue head with keyed waiters.
    type RawWaitQueue: Send + Sync;

    fn new_lock(&self, class: LockClass, name: &'static str) -> Self::RawLock;
    /// Acquire; blocks while another task holds it.
    fn lock(&self, l: &Self::RawLock) -> impl Future<Output = ()>;
    /// Try to acquire without blocking; true when acquired.
    fn try_lock(&self, l: &Self::RawLock) -> impl Future<Output = bool>;
    /// Release (a scheduling point).
    fn unlock(&self, l: &Self::RawLock) -> impl Future<Output = ()>;
    /// Release without a scheduling point (guard drop).
    fn unlock_now(&self, l: &Self::RawLock);
    /// A lock-aware peek: run `f` (which reads the lock's data) only if no task holds `l`, and
    /// return `None` otherwise (the data may be mid-update). The simulator allows it only between
    /// steps (step and end hooks, tests after a run): it is no step, announces nothing and leaves
    /// every trace of the run unchanged. Natively it is a try-lock around `f`, so `None` also
    /// means "contended".
    fn peek_lock<R>(&self, l: &Self::RawLock, f: impl FnOnce() -> R) -> Option<R>;
    /// `READ_ONCE` of data `l` protects, without taking `l` (`pmdp_get_lockless`,
    /// `ptep_get_lockless`): a scheduling point announced as a read of `l`, then `f`. It never
    /// waits for the holder, so it adds no lock order. Natively `f` runs with `l` held for its
    /// duration (Rust forbids a read racing the holder's writes); `f` must not block.
    fn read_once<R>(&self, l: &Self::RawLock, f: impl FnOnce() -> R) -> impl Future<Output = R>;
    /// The holder of `l` takes mutable access to the data `l` protects (a guard's `DerefMut`).
    /// No scheduling point. The simulator counts the data as changed from here until the lock
    /// is released (a `&mut` may be kept across scheduling points), so that a critical section
    /// that only reads commutes with another that only reads (`sim` "Footprints"). Natively
    /// it does nothing.
    fn lock_data_mut(&self, _l: &Self::RawLock) {}
    /// The holder of `l`, a lock with parts (`SpinLock::new_with_parts`), reads the whole data
    /// (a guard's `Deref`). No scheduling point. The simulator records a whole-data read of
    /// `l` in the step's footprint. Natively it does nothing.
    fn lock_data_read(&self, _l: &Self::RawLock) {}
    /// The holder of `l`, a lock with parts, reads (`kind` `Read`), changes (`Write`) or adds
    /// to (`Add`, a counter) the keys `[first, first + len)` of the data and nothing else (a
    /// guard's `part`/`part_mut`/`part_add`). No
    /// scheduling point. The simulator records a part of `l` in the step's footprint (a
    /// change also counts as a change of the whole data in every later step of the holder,
    /// as `lock_data_mut` does), so that critical sections on disjoint keys commute (`sim`
    /// "Footprints"). Natively it does nothing.
    fn lock_data_part(&self, _l: &Self::RawLock, _kind: OpKind, _first: u64, _len: u64) {}
    /// Declare that spinlock `l` is never taken with `try_lock` and its data never read
    /// without it (`read_once`): while a task holds `l`, no step of another task touches `l`
    /// or its data. The simulator then runs the holder's steps that touched nothing but such
    /// locks and their data together with its next step (an atomic section; `sim`
    /// "Atomic sections"), and refuses a `try_lock` or `read_once` of `l`. Natively it does
    /// nothing.
    fn lock_no_lockless_access(&self, _l: &Self::RawLock) {}

    fn new_rwsem(&self, name: &'static str) -> Self::RawRwSem;
    fn down_read(&self, s: &Self::RawRwSem) -> impl Future<Output = ()>;
    fn up_read(&self, s: &Self::RawRwSem) -> impl Future<Output = ()>;
    fn down_write(&self, s: &Self::RawRwSem) -> impl Future<Output = ()>;
    fn up_write(&self, s: &Self::RawRwSem) -> impl Future<Output = ()>;
    /// The writer holding `s` takes mutable access to the data `s` protects (a write guard's
    /// `DerefMut`). No scheduling point. The simulator notes it in the step's footprint, so
    /// that a write section taken and released in one step that changed nothing is folded
    /// like a read-only lock section (`sim` "Footprints"). Natively it does nothing.
    fn rwsem_data_mut(&self, _s: &Self::RawRwSem) {}
    /// `downgrade_write`: a held write lock becomes a read lock.
    fn downgrade_write(&self, s: &Self::RawRwSem) -> impl Future<Output = ()>;
    /// Release without a scheduling point (guard drop); `write` says which side is held.
    fn up_now(&self, s: &Self::RawRwSem, write: bool);
    /// The lock-aware peek of a semaphore: run `f` unless a writer holds `s` (readers do not
    /// change the data). Same rules as [`Platform::peek_lock`].
    fn peek_rwsem<R>(&self, s: &Self::RawRwSem, f: impl FnOnce() -> R) -> Option<R>;

    fn new_waitqueue(&self, name: &'static str) -> Self::RawWaitQueue;
    /// `n` wait queues named `name` (a hashed wait table): exactly `n` calls of
    /// [`Platform::new_waitqueue`] in order, which a platform may make cheaper in one go.
    fn new_waitqueues(&self, name: &'static str, n: usize) -> Vec<Self::RawWaitQueue> {
        (0..n).map(|_| self.new_waitqueue(name)).collect()
    }
    /// `prepare_to_wait[_exclusive]`: queue the calling task with `key` and `func`; from here a
    /// matching wake-up makes the following `schedule` return.
    fn prepare_to_wait(
        &self,
        wq: &Self::RawWaitQueue,
        key: WaitKey,
        exclusive: bool,
        func: WakeFn,
    ) -> impl Future<Output = WaiterId>;
    /// `schedule()`: sleep until the waiter has been woken (returns at once if it already was).
    fn schedule(&self, wq: &Self::RawWaitQueue, w: WaiterId) -> impl Future<Output = ()>;
    /// `finish_wait`: dequeue the waiter if a wake-up did not already remove it.
    fn finish_wait(&self, wq: &Self::RawWaitQueue, w: WaiterId) -> impl Future<Output = ()>;
    /// `__wake_up(wq, mode, key)`: call each waiter's wake function with `key`; woken waiters
    /// are removed; with `WakeMode::Next` at most one exclusive waiter is woken. Returns how many
    /// waiters were woken.
    fn wake_up(
        &self,
        wq: &Self::RawWaitQueue,
        key: WaitKey,
        mode: WakeMode,
    ) -> impl Future<Output = usize>;
    /// `waitqueue_active()`: whether anyone waits (a read of the queue).
    fn waitqueue_active(&self, wq: &Self::RawWaitQueue) -> impl Future<Output = bool>;

    /// An explicit scheduling point at a named site (e.g. `"dax_iomap_pte_fault:after_lock"`).
    fn yield_point(&self, site: &'static str) -> impl Future<Output = ()>;
    /// The calling task's CPU clock in nanoseconds (`sim` "Time"; natively monotonic time).
    fn now_ns(&self) -> u64;
    /// A scheduling point after which the task's CPU clock has advanced by `ns` (natively a
    /// real sleep). The scheduler, not time, decides what runs meanwhile.
    fn sleep_ns(&self, ns: u64) -> impl Future<Output = ()>;
    /// A seeded random number: every random choice of the model goes through here.
    fn random_u64(&self) -> u64;
    /// The calling task.
    fn current_task(&self) -> TaskId;
    /// Report a BUG/WARN condition. For a fatal one the simulator stops the run with a
    /// violation report; the returned future then never completes. Natively it is recorded and
    /// the calling thread stops.
    fn report(&self, a: Assertion) -> impl Future<Output = ()>;
    /// Tell the scheduler which trace line the task is about to execute (used by the
    /// `trace-order` strategy and by reports). No scheduling point.
    fn set_line(&self, line: u32);

    /// Start a task from a task (`kthread_run`; shuttle's and loom's `thread::spawn`): a
    /// scheduling point, then the new task exists and can run. `f` builds the task's future
    /// (natively on the new thread). Use [`spawn`] for a [`JoinHandle`].
    fn spawn<F, Fut>(&self, name: &str, f: F) -> impl Future<Output = Self::RawTask>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static;
    /// Wait until task `t` has finished (a scheduling point enabled once it has).
    fn join(&self, t: &Self::RawTask) -> impl Future<Output = ()>;
    /// Wait until every task of `ts` has finished. By default a join of each in turn; the
    /// simulator joins tasks with consecutive ids in one step, enabled once they all have
    /// finished, so that the joins are no steps of their own between the tasks' steps.
    fn join_all(&self, ts: &[&Self::RawTask]) -> impl Future<Output = ()> {
        async move {
            for t in ts {
                self.join(t).await;
            }
        }
    }

    /// Mark that the calling task enters the model function `name` (a kernel name such as
    /// `grab_mapping_entry`); the returned guard marks the exit when dropped. Reports show each
    /// task's path (`dax_iomap_pmd_fault > grab_mapping_entry > get_next_unlocked_entry`).
    ///
    /// Not a scheduling point, and no footprint: the path is the task's own bookkeeping, read
    /// only by reports, touching nothing another task can see, so every step commutes with it
    /// exactly as before. Natively it does nothing.
    fn enter_fn(&self, name: &'static str) -> FnGuard<Self> {
        self.push_fn(name);
        FnGuard { p: self.clone() }
    }

    /// Push `name` on the calling task's call path (see [`Platform::enter_fn`]; use that).
    fn push_fn(&self, _name: &'static str) {}

    /// Pop the innermost function of the calling task's call path.
    fn pop_fn(&self) {}
}

/// A task started with [`spawn`]; [`JoinHandle::join`] waits for its end.
pub struct JoinHandle<P: Platform> {
    raw: P::RawTask,
}

impl<P: Platform> JoinHandle<P> {
    /// The handle of task `raw` (a platform's own spawn outside a task, such as
    /// `Sim::spawn_joinable`, makes one).
    pub fn from_raw(raw: P::RawTask) -> Self {
        JoinHandle { raw }
    }

    /// Wait until the task has finished (`kthread_stop`'s wait, `pthread_join`).
    pub async fn join(self, p: &P) {
        p.join(&self.raw).await
    }
}

/// Wait until every task of `hs` has finished ([`Platform::join_all`]).
pub async fn join_all<P: Platform>(p: &P, hs: &[JoinHandle<P>]) {
    let raw: Vec<&P::RawTask> = hs.iter().map(|h| &h.raw).collect();
    p.join_all(&raw).await
}

/// Start task `name` running `f` from the calling task (a scheduling point).
pub async fn spawn<P: Platform, F, Fut>(p: &P, name: &str, f: F) -> JoinHandle<P>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    JoinHandle {
        raw: p.spawn(name, f).await,
    }
}

/// The guard of [`Platform::enter_fn`]: leaving the function (return, or the task's future
/// dropped) pops it from the task's call path.
#[must_use = "the function is left when the guard is dropped; bind it (`let _fn = ...`)"]
pub struct FnGuard<P: Platform> {
    p: P,
}

impl<P: Platform> Drop for FnGuard<P> {
    fn drop(&mut self) {
        self.p.pop_fn();
    }
}

/// The memory part of the seam: CPU accesses to persistent memory by physical address, on the
/// CPU the calling task runs on. The simulator routes them into the machine model
/// ([`crate::machine::Machine`]), charging their latency to that CPU's clock; the native
/// backend (its own issue) will use a mapped pmem device with real instructions.
///
/// A load that consumes poison returns `MemError::MachineCheck`: the machine check is delivered
/// to the task that took it (action-required), which hands it to memory_failure.
pub trait PmemPlatform: Platform {
    fn pmem_load(&self, addr: u64, buf: &mut [u8]) -> impl Future<Output = Result<(), MemError>>;
    fn pmem_store(&self, addr: u64, data: &[u8]) -> impl Future<Output = Result<(), MemError>>;
    /// A non-temporal store (write-combining, drained by a fence).
    fn pmem_ntstore(&self, addr: u64, data: &[u8]) -> impl Future<Output = Result<(), MemError>>;
    fn clwb(&self, addr: u64) -> impl Future<Output = Result<(), MemError>>;
    fn clflushopt(&self, addr: u64) -> impl Future<Output = Result<(), MemError>>;
    fn clflush(&self, addr: u64) -> impl Future<Output = Result<(), MemError>>;
    fn sfence(&self) -> impl Future<Output = Result<(), MemError>>;
    fn mfence(&self) -> impl Future<Output = Result<(), MemError>>;
}

/// Spawns tasks onto a platform. The closure runs on the task's own thread (natively) and
/// builds the task's future there, so the future itself need not be `Send`.
pub trait Spawner<P: Platform> {
    fn spawn<F, Fut>(&mut self, name: &str, f: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static;
}

/// Raise a fatal assertion (a kernel `BUG_ON`) when `cond` holds.
pub async fn bug_on<P: Platform>(p: &P, cond: bool, name: &str, message: impl FnOnce() -> String) {
    if cond {
        p.report(Assertion {
            fatal: true,
            name: name.to_string(),
            message: message(),
        })
        .await;
    }
}

/// Report a non-fatal assertion (a kernel `WARN_ON`) when `cond` holds; returns `cond`.
pub async fn warn_on<P: Platform>(
    p: &P,
    cond: bool,
    name: &str,
    message: impl FnOnce() -> String,
) -> bool {
    if cond {
        p.report(Assertion {
            fatal: false,
            name: name.to_string(),
            message: message(),
        })
        .await;
    }
    cond
}

macro_rules! guarded_lock {
    ($(#[$doc:meta])* $name:ident, $guard:ident, $class:expr) => {
        $(#[$doc])*
        pub struct $name<P: Platform, T> {
            raw: P::RawLock,
            data: UnsafeCell<T>,
            /// Created with parts: every `Deref` of a guard is a whole-data read, and the
            /// guard's `part`/`part_mut` announce key ranges instead.
            parts: bool,
        }

        // SAFETY: the data is reached only through a guard, which exists only while the raw lock
        // is held, and both platforms' raw locks give mutual exclusion between tasks.
        unsafe impl<P: Platform, T: Send> Sync for $name<P, T> {}
        unsafe impl<P: Platform, T: Send> Send for $name<P, T> {}

        impl<P: Platform, T> $name<P, T> {
            pub fn new(p: &P, name: &'static str, value: T) -> Self {
                $name {
                    raw: p.new_lock($class, name),
                    data: UnsafeCell::new(value),
                    parts: false,
                }
            }

            /// A lock whose data is a map of keys (the xarray's indices) that critical sections
            /// may announce range by range: a guard's [`part`](SpinLockGuard::part) and
            /// `part_mut` reach the data as accesses of `[first, first + len)` only, and a
            /// section taken and released in one step whose accesses are all parts commutes
            /// with another on disjoint keys (see [`Platform::lock_data_part`]). Any other
            /// access through the guard (`Deref`, `DerefMut`) counts as the whole data.
            pub fn new_with_parts(p: &P, name: &'static str, value: T) -> Self {
                $name {
                    raw: p.new_lock($class, name),
                    data: UnsafeCell::new(value),
                    parts: true,
                }
            }

            pub async fn lock<'a>(&'a self, p: &P) -> $guard<'a, P, T> {
                p.lock(&self.raw).await;
                $guard { lock: self, p: p.clone(), held: true }
            }

            pub async fn try_lock<'a>(&'a self, p: &P) -> Option<$guard<'a, P, T>> {
                if p.try_lock(&self.raw).await {
                    Some($guard { lock: self, p: p.clone(), held: true })
                } else {
                    None
                }
            }

            /// Declare that the lock is never try-locked and its data never read without it
            /// ([`Platform::lock_no_lockless_access`]: the xarray's xa_lock, a spinlock).
            pub fn no_lockless_access(self, p: &P) -> Self {
                p.lock_no_lockless_access(&self.raw);
                self
            }

            /// The raw lock, for reports and lock-order assertions.
            pub fn raw(&self) -> &P::RawLock {
                &self.raw
            }

            /// Read the data without taking the lock (a lockless `READ_ONCE`; see
            /// [`Platform::read_once`]). `f` sees the data as the holder's last completed step
            /// left it.
            pub async fn read_once<R>(&self, p: &P, f: impl FnOnce(&T) -> R) -> R {
                // SAFETY: in the simulator one task runs at a time, from one scheduling point to
                // the next, and `f` runs inside the reader's step: no holder code runs while the
                // shared reference exists, and it does not outlive `f`. Natively the platform
                // holds the raw lock around `f`.
                p.read_once(&self.raw, || f(unsafe { &*self.data.get() })).await
            }

            /// The data, when nothing else can reach the lock.
            pub fn get_mut(&mut self) -> &mut T {
                self.data.get_mut()
            }

            /// Read the data without taking the lock and without a scheduling point, or `None`
            /// while a task holds the lock (see [`Platform::peek_lock`]: for checks between steps).
            pub fn peek<R>(&self, p: &P, f: impl FnOnce(&T) -> R) -> Option<R> {
                // SAFETY: `peek_lock` runs the closure only while no guard exists (the simulator:
                // no holder and no task running; natively: the raw lock is held by the peek), so
                // nothing writes the data meanwhile.
                p.peek_lock(&self.raw, || f(unsafe { &*self.data.get() }))
            }
        }

        pub struct $guard<'a, P: Platform, T> {
            lock: &'a $name<P, T>,
            p: P,
            held: bool,
        }

        impl<P: Platform, T> $guard<'_, P, T> {
            /// Release the lock (a scheduling point).
            pub async fn unlock(mut self) {
                self.held = false;
                self.p.unlock(&self.lock.raw).await;
            }

            /// The data, for a read of keys `[first, first + len)` only (on a lock with
            /// parts; on another lock, the same as `Deref`). The caller's contract: what it
            /// reads through this reference depends on those keys alone.
            pub fn part(&self, first: u64, len: u64) -> &T {
                if self.lock.parts {
                    self.p.lock_data_part(&self.lock.raw, OpKind::Read, first, len);
                    // SAFETY: the guard holds the lock.
                    unsafe { &*self.lock.data.get() }
                } else {
                    self
                }
            }

            /// The data, for a read whose answer depends on the keys `f` reports with it:
            /// `f` returns `(answer, first, len)` (on a lock with parts: a read of keys
            /// `[first, first + len)`, nothing when `len` is 0; on another lock, the same as
            /// `Deref`). For a read that finds where it stops as it goes (the first entry of a
            /// range). The caller's contract: the answer is the same on every data that
            /// agrees with this one on those keys.
            pub fn part_seen<R>(&self, f: impl FnOnce(&T) -> (R, u64, u64)) -> R {
                // SAFETY: the guard holds the lock.
                let (r, first, len) = f(unsafe { &*self.lock.data.get() });
                if self.lock.parts && len > 0 {
                    self.p.lock_data_part(&self.lock.raw, OpKind::Read, first, len);
                }
                r
            }

            /// The data, for a change of keys `[first, first + len)` only (on a lock with
            /// parts; on another lock, the same as `DerefMut`). The caller's contract: what it
            /// reads and changes through this reference is those keys alone.
            pub fn part_mut(&mut self, first: u64, len: u64) -> &mut T {
                if self.lock.parts {
                    self.p.lock_data_part(&self.lock.raw, OpKind::Write, first, len);
                    // SAFETY: the guard holds the lock exclusively.
                    unsafe { &mut *self.lock.data.get() }
                } else {
                    self
                }
            }
        }

        impl<P: Platform, T> $guard<'_, P, T> {
            /// The data, for an addition to the counter at key `key` only (on a lock with
            /// parts; on another lock, the same as `DerefMut`): additions by two sections
            /// commute. The caller's contract: it only adds to that counter, reading nothing.
            pub fn part_add(&mut self, key: u64) -> &mut T {
                if self.lock.parts {
                    self.p.lock_data_part(&self.lock.raw, OpKind::Add, key, 1);
                    // SAFETY: the guard holds the lock exclusively.
                    unsafe { &mut *self.lock.data.get() }
                } else {
                    self
                }
            }
        }

        impl<P: Platform, T> Deref for $guard<'_, P, T> {
            type Target = T;
            fn deref(&self) -> &T {
                if self.lock.parts {
                    self.p.lock_data_read(&self.lock.raw);
                }
                // SAFETY: the guard holds the lock.
                unsafe { &*self.lock.data.get() }
            }
        }

        impl<P: Platform, T> DerefMut for $guard<'_, P, T> {
            fn deref_mut(&mut self) -> &mut T {
                // Every `&mut T` comes from here: the simulator's footprints rely on it.
                self.p.lock_data_mut(&self.lock.raw);
                // SAFETY: the guard holds the lock exclusively.
                unsafe { &mut *self.lock.data.get() }
            }
        }

        impl<P: Platform, T> Drop for $guard<'_, P, T> {
            fn drop(&mut self) {
                if self.held {
                    self.p.unlock_now(&self.lock.raw);
                }
            }
        }
    };
}

guarded_lock!(
    /// `spinlock_t` guarding `T` (xa_lock, the page-table lock).
    SpinLock,
    SpinLockGuard,
    LockClass::Spin
);
guarded_lock!(
    /// `struct mutex` guarding `T`.
    Mutex,
    MutexGuard,
    LockClass::Mutex
);

/// `struct rw_semaphore` guarding `T` (i_rwsem, invalidate_lock, mmap_lock). Writer-preferring:
/// a reader waits while a writer waits.
pub struct RwSem<P: Platform, T> {
    raw: P::RawRwSem,
    data: UnsafeCell<T>,
}

// SAFETY: readers get `&T` only while the rwsem is held shared (hence `T: Sync`), the writer gets
// `&mut T` only while it is held exclusively.
unsafe impl<P: Platform, T: Send + Sync> Sync for RwSem<P, T> {}
unsafe impl<P: Platform, T: Send> Send for RwSem<P, T> {}

impl<P: Platform, T> RwSem<P, T> {
    pub fn new(p: &P, name: &'static str, value: T) -> Self {
        RwSem {
            raw: p.new_rwsem(name),
            data: UnsafeCell::new(value),
        }
    }

    pub async fn read<'a>(&'a self, p: &P) -> RwSemReadGuard<'a, P, T> {
        p.down_read(&self.raw).await;
        RwSemReadGuard {
            sem: self,
            p: p.clone(),
            held: true,
        }
    }

    pub async fn write<'a>(&'a self, p: &P) -> RwSemWriteGuard<'a, P, T> {
        p.down_write(&self.raw).await;
        RwSemWriteGuard {
            sem: self,
            p: p.clone(),
            held: true,
        }
    }

    pub fn raw(&self) -> &P::RawRwSem {
        &self.raw
    }

    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }

    /// Read the data without a scheduling point, or `None` while a writer holds the semaphore
    /// (see [`Platform::peek_rwsem`]: for checks between steps).
    pub fn peek<R>(&self, p: &P, f: impl FnOnce(&T) -> R) -> Option<R> {
        // SAFETY: `peek_rwsem` runs the closure only while no writer guard exists; readers only
        // read.
        p.peek_rwsem(&self.raw, || f(unsafe { &*self.data.get() }))
    }
}

pub struct RwSemReadGuard<'a, P: Platform, T> {
    sem: &'a RwSem<P, T>,
    p: P,
    held: bool,
}

impl<P: Platform, T> RwSemReadGuard<'_, P, T> {
    pub async fn unlock(mut self) {
        self.held = false;
        self.p.up_read(&self.sem.raw).await;
    }
}

impl<P: Platform, T> Deref for RwSemReadGuard<'_, P, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: held shared.
        unsafe { &*self.sem.data.get() }
    }
}

impl<P: Platform, T> Drop for RwSemReadGuard<'_, P, T> {
    fn drop(&mut self) {
        if self.held {
            self.p.up_now(&self.sem.raw, false);
        }
    }
}

pub struct RwSemWriteGuard<'a, P: Platform, T> {
    sem: &'a RwSem<P, T>,
    p: P,
    held: bool,
}

impl<'a, P: Platform, T> RwSemWriteGuard<'a, P, T> {
    pub async fn unlock(mut self) {
        self.held = false;
        self.p.up_write(&self.sem.raw).await;
    }

    /// `downgrade_write`: keep the semaphore, shared.
    pub async fn downgrade(mut self) -> RwSemReadGuard<'a, P, T> {
        self.held = false;
        self.p.downgrade_write(&self.sem.raw).await;
        RwSemReadGuard {
            sem: self.sem,
            p: self.p.clone(),
            held: true,
        }
    }
}

impl<P: Platform, T> Deref for RwSemWriteGuard<'_, P, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: held exclusively.
        unsafe { &*self.sem.data.get() }
    }
}

impl<P: Platform, T> DerefMut for RwSemWriteGuard<'_, P, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.p.rwsem_data_mut(&self.sem.raw);
        // SAFETY: held exclusively.
        unsafe { &mut *self.sem.data.get() }
    }
}

impl<P: Platform, T> Drop for RwSemWriteGuard<'_, P, T> {
    fn drop(&mut self) {
        if self.held {
            self.p.up_now(&self.sem.raw, true);
        }
    }
}

/// A wait queue head (`wait_queue_head_t`).
pub struct WaitQueue<P: Platform> {
    raw: P::RawWaitQueue,
}

impl<P: Platform> WaitQueue<P> {
    pub fn new(p: &P, name: &'static str) -> Self {
        WaitQueue {
            raw: p.new_waitqueue(name),
        }
    }

    /// `n` queues named `name`, created in order ([`Platform::new_waitqueues`]).
    pub fn table(p: &P, name: &'static str, n: usize) -> Box<[Self]> {
        p.new_waitqueues(name, n)
            .into_iter()
            .map(|raw| WaitQueue { raw })
            .collect()
    }

    pub fn raw(&self) -> &P::RawWaitQueue {
        &self.raw
    }

    pub async fn prepare_to_wait(
        &self,
        p: &P,
        key: WaitKey,
        exclusive: bool,
        func: WakeFn,
    ) -> WaiterId {
        p.prepare_to_wait(&self.raw, key, exclusive, func).await
    }

    pub async fn schedule(&self, p: &P, w: WaiterId) {
        p.schedule(&self.raw, w).await
    }

    pub async fn finish_wait(&self, p: &P, w: WaiterId) {
        p.finish_wait(&self.raw, w).await
    }

    pub async fn wake_up(&self, p: &P, key: WaitKey, mode: WakeMode) -> usize {
        p.wake_up(&self.raw, key, mode).await
    }

    pub async fn active(&self, p: &P) -> bool {
        p.waitqueue_active(&self.raw).await
    }

    /// The condition-variable pattern over a mutex: queue, drop the mutex, sleep, dequeue,
    /// take the mutex again (`prepare_to_wait; mutex_unlock; schedule; finish_wait; mutex_lock`).
    pub async fn wait_unlocking<'a, T>(
        &self,
        p: &P,
        guard: MutexGuard<'a, P, T>,
        key: WaitKey,
        exclusive: bool,
    ) -> MutexGuard<'a, P, T> {
        let m = guard.lock;
        let w = self.prepare_to_wait(p, key, exclusive, wake_key_eq).await;
        guard.unlock().await;
        self.schedule(p, w).await;
        self.finish_wait(p, w).await;
        m.lock(p).await
    }
}

#[cfg(test)]
mod sig_tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A random access: a plain object (a few ids, task exits, the machine), a part of a lock
    /// among the plain ids, or a line or cache-set range (short, long and whole-space).
    fn random_op(r: &mut ChaCha8Rng) -> Op {
        use OpKind::*;
        let kinds = [
            Lock,
            Unlock,
            DownRead,
            UpRead,
            DownWrite,
            Wake,
            WaitqueueActive,
            Read,
            Write,
            Join,
            Exit,
            Add,
        ];
        let kind = kinds[r.random_range(0..kinds.len())];
        match r.random_range(0..6) {
            0 => Op::new(kind, ObjId(r.random_range(0..12))),
            1 => Op::task(kind, r.random_range(0..4)),
            2 => Op::new(
                kind,
                [Op::MACHINE, Op::ALLOC, Op::NONE][r.random_range(0..3)],
            ),
            3 => {
                let (first, len) = (r.random_range(0..40), r.random_range(1..6));
                Op::part(kind, ObjId(r.random_range(0..12)), first, len)
            }
            4 => {
                let len = [1, 3, 64, 200, 4096, 1 << 20][r.random_range(0..6)];
                Op::mem(kind, r.random_range(0..4096) * 8, len)
            }
            _ => Op {
                kind,
                obj: ObjId(Op::SET_BASE + r.random_range(0..600)),
                arg: [1, 2, 9, 70, 700][r.random_range(0..5)],
            },
        }
    }

    /// The summary test never separates two dependent footprints, and separates most
    /// independent ones (so it is worth taking).
    #[test]
    fn dependent_footprints_share_a_summary_bit() {
        let mut r = ChaCha8Rng::seed_from_u64(7);
        let fps: Vec<Vec<Op>> = (0..400)
            .map(|_| {
                let n = r.random_range(1..4);
                (0..n).map(|_| random_op(&mut r)).collect()
            })
            .collect();
        let sigs: Vec<u64> = fps.iter().map(|f| footprint_sig(f)).collect();
        let (mut dependent, mut independent, mut separated) = (0, 0, 0);
        for (a, sa) in fps.iter().zip(&sigs) {
            for (b, sb) in fps.iter().zip(&sigs) {
                let dep = footprints_depend(a, b);
                assert_eq!(
                    footprints_depend_sig(a, *sa, b, *sb),
                    dep,
                    "{a:?} / {b:?}: summaries {sa:#x} {sb:#x}"
                );
                if dep {
                    dependent += 1;
                } else {
                    independent += 1;
                    separated += usize::from(sa & sb == 0);
                }
            }
        }
        assert!(dependent > 10_000, "only {dependent} dependent pairs");
        assert!(
            separated * 2 > independent,
            "{separated} of {independent} independent pairs separated"
        );
    }
}
