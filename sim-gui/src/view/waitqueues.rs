//! Wait queues: the hashed buckets in use (the DAX wait table has 4096), each waiter with its
//! key and exclusivity, and each queue's last wake-up with whom it reached. A waiter whose key
//! no wake-up on its mapping used is marked: that is how a missed wakeup looks.

use super::task_name;
use crate::session::Snapshot;
use sim_core::WakeMode;
use sim_core::sim::inspect::ObjView;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaiterRow {
    pub task: String,
    pub key: String,
    pub exclusive: bool,
    /// Wake-ups on other queues of the same mapping (key word 0) whose key differs from this
    /// waiter's: `key by waker on queue`.
    pub other_keys_woken: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueRow {
    pub queue: String,
    pub waiters: Vec<WaiterRow>,
    /// `key (mode) by waker -> reached`.
    pub last_wake: Option<String>,
}

pub fn build(snap: &Snapshot) -> Vec<QueueRow> {
    // Every recorded wake-up: (queue, key, waker).
    let mut wakes = Vec::new();
    for o in &snap.objects {
        if let ObjView::WaitQueue {
            last_wake: Some(w), ..
        } = &o.state
        {
            wakes.push((format!("{}#{}", o.name, o.id), w.key, w.waker));
        }
    }
    snap.objects
        .iter()
        .filter_map(|o| {
            let ObjView::WaitQueue { waiters, last_wake } = &o.state else {
                return None;
            };
            let waiters = waiters
                .iter()
                .map(|w| WaiterRow {
                    task: task_name(snap, w.task),
                    key: w.key.to_string(),
                    exclusive: w.exclusive,
                    other_keys_woken: wakes
                        .iter()
                        .filter(|(_, k, _)| k.0 == w.key.0 && *k != w.key)
                        .map(|(q, k, by)| format!("{k} by {} on {q}", task_name(snap, *by)))
                        .collect(),
                })
                .collect();
            let last_wake = last_wake.as_ref().map(|w| {
                let mode = match w.mode {
                    WakeMode::Next => "WAKE_NEXT",
                    WakeMode::All => "WAKE_ALL",
                };
                let reached = if w.woken.is_empty() {
                    "nobody".to_string()
                } else {
                    w.woken
                        .iter()
                        .map(|&t| task_name(snap, t))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                format!(
                    "key {} ({mode}) by {} -> woke {reached}",
                    w.key,
                    task_name(snap, w.waker)
                )
            });
            Some(QueueRow {
                queue: format!("{}#{}", o.name, o.id),
                waiters,
                last_wake,
            })
        })
        .collect()
}
