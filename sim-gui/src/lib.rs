//! `pmsim-gui`, the race stepper: choose which thread moves next at every scheduling point and
//! watch DAX entries, lock bits, wait queues, rwsems, page tables and cache lines change.
//!
//! - [`session`]: the trace driven by the engine's manual strategy (`ManualSession`), and the
//!   plain-data [`session::Snapshot`] read between steps through the engine's inspection
//!   functions and the lock-aware peeks the invariant checks use;
//! - [`view`]: one GUI-independent view model per panel (unit-testable);
//! - [`app`]: the egui application that lays them out and takes clicks and keys;
//! - [`crashrun`]: a crashcheck run computed in process for the crash-points view;
//! - [`bench`]: `--bench-frames`, the frame time measured headless;
//! - [`cli`]: the command line (`pmsim-gui [TRACE] [--schedule S | --events FILE]`).

pub mod app;
pub mod bench;
pub mod cli;
pub mod crashrun;
pub mod session;
pub mod view;
