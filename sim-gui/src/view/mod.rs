//! GUI-independent view models: each view's content built from a [`Snapshot`] (or an event
//! log) as plain data, so that it can be tested without a window. The egui code in `app.rs`
//! only lays these out.
//!
//! [`Snapshot`]: crate::session::Snapshot

pub mod crash;
pub mod locks;
pub mod mappings;
pub mod pages;
pub mod persistence;
pub mod threads;
pub mod timeline;
pub mod waitfor;
pub mod waitqueues;

use crate::session::Snapshot;

/// The name of task `t` in `snap` (`task#N` when unknown).
pub fn task_name(snap: &Snapshot, t: u32) -> String {
    snap.tasks
        .get(t as usize)
        .map(|r| r.name.clone())
        .unwrap_or_else(|| format!("task#{t}"))
}
