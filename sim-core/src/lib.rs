//! sim-core: the deterministic engine of pmsim, the Platform seam, the machine model and the
//! trace format. Nothing in this crate knows about files or DAX entries.

pub mod platform;

pub use platform::{
    LockClass, Mutex, ObjId, Op, OpKind, Platform, RwSem, Spawner, SpinLock, TaskId, WaitKey,
    WaitQueue, WakeMode,
};
pub mod events;
pub mod native;
pub mod sim;
pub mod toys;
