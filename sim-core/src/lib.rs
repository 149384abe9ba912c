//! sim-core: the deterministic engine of pmsim, the Platform seam, the machine model and the
//! trace format. Nothing in this crate knows about files or DAX entries.
//!
//! - [`platform`]: the seam (`Platform`, guarded locks, wait queues).
//! - [`sim`]: the deterministic executor, strategies, failure detection, schedules.
//! - [`native`]: the same seam on OS threads.
//! - [`events`]: the event log of a run (each step at its CPU's clock) and an event queue
//!   (unused by runs: time is per-CPU clocks, `sim` "Time").
//! - [`machine`]: CPUs' caches with x86 persistency, NVDIMM media timing, poison, crash images.
//! - [`trace`]: the trace format (parser and printer).
//! - [`toys`]: small models that exercise the engine.

pub mod events;
pub mod machine;
pub mod native;
pub mod platform;
pub mod sim;
pub mod toys;
pub mod trace;

pub use platform::{
    LockClass, Mutex, ObjId, Op, OpKind, Platform, PmemPlatform, RwSem, Spawner, SpinLock, TaskId,
    WaitKey, WaitQueue, WakeMode,
};
