//! Threads: state (running, runnable, blocked on what, asleep on which key), the model call
//! stack, the locks held and the last wake-up each task made.

use crate::session::Snapshot;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadRow {
    pub id: u32,
    pub name: String,
    /// `runnable`, `blocked`, `asleep`, `finished` or `stopped` (the engine's words).
    pub status: String,
    pub next: String,
    pub line: u32,
    /// Model functions, outermost first.
    pub stack: Vec<String>,
    pub holds: Vec<String>,
    /// For a sleeper: the wait queue and key.
    pub sleeps_on: Option<String>,
    pub last_wake: Option<String>,
}

pub fn build(snap: &Snapshot) -> Vec<ThreadRow> {
    snap.tasks
        .iter()
        .map(|t| ThreadRow {
            id: t.id,
            name: t.name.clone(),
            status: t.status.clone(),
            next: if t.status == "finished" {
                String::new()
            } else {
                t.next.clone()
            },
            line: t.line,
            stack: t.path.clone(),
            holds: t.holds.clone(),
            sleeps_on: t.wait_key.clone(),
            last_wake: t.last_wake.clone(),
        })
        .collect()
}
