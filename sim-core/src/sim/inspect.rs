//! Read-only views of the executor's own objects between steps, for the GUI (`pmsim-gui`):
//! every lock, semaphore and wait queue with its holders and waiters, each task's report, and
//! the wait-for edges the deadlock diagnosis uses. Plain data, built from the same state the
//! executor decides enabledness and diagnoses failures from (`State`, `detect::waits_for`,
//! `detect::task_reports`), so a view cannot disagree with the engine.
//!
//! Like the peeks of `hooks`, these are observers: they take no step, announce nothing and draw
//! no randomness, and are refused while a task's code runs.

use super::detect::{self, TaskReport};
use super::{ObjState, Sim, State, TaskStatus, with_state};
use crate::platform::{LockClass, WaitKey, WakeMode};

/// A wait queue's last wake-up: who called `wake_up`, with which key and mode, and which tasks
/// it woke (empty when it reached nobody).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WakeRecord {
    pub waker: u32,
    pub key: WaitKey,
    pub mode: WakeMode,
    pub woken: Vec<u32>,
}

/// A task queued on a wait queue (`prepare_to_wait`), not yet woken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaiterView {
    pub task: u32,
    pub key: WaitKey,
    pub exclusive: bool,
}

/// The state of one executor object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjView {
    Lock {
        class: LockClass,
        holder: Option<u32>,
    },
    RwSem {
        readers: Vec<u32>,
        writer: Option<u32>,
        /// Writers queued for the semaphore (`rwsem_down_write_slowpath`), in order.
        queued: Vec<u32>,
    },
    WaitQueue {
        waiters: Vec<WaiterView>,
        last_wake: Option<WakeRecord>,
    },
}

/// One object: its id (as reports print it, `name#id`), name and state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectView {
    pub id: u32,
    pub name: &'static str,
    pub state: ObjView,
}

fn view(s: &State, id: usize) -> ObjectView {
    let o = &s.objs[id];
    let state = match &o.state {
        ObjState::Lock { class, holder, .. } => ObjView::Lock {
            class: *class,
            holder: *holder,
        },
        ObjState::RwSem {
            readers,
            writer,
            queued,
        } => ObjView::RwSem {
            readers: (**readers).clone(),
            writer: *writer,
            queued: (**queued).clone(),
        },
        ObjState::WaitQueue { waiters } => ObjView::WaitQueue {
            waiters: waiters
                .iter()
                .map(|w| WaiterView {
                    task: w.task,
                    key: w.key,
                    exclusive: w.exclusive,
                })
                .collect(),
            last_wake: s.last_wakes.get(&id).cloned(),
        },
    };
    ObjectView {
        id: id as u32,
        name: o.name,
        state,
    }
}

impl Sim {
    /// Every lock and semaphore, and every wait queue that has waiters or was ever woken (a run
    /// has thousands of idle hashed wait queues), in id order.
    pub fn inspect_objects(&self) -> Vec<ObjectView> {
        with_state(|s| {
            (0..s.objs.len())
                .filter(|&i| match &s.objs[i].state {
                    ObjState::WaitQueue { waiters } => {
                        !waiters.is_empty() || s.last_wakes.contains_key(&i)
                    }
                    _ => true,
                })
                .map(|i| view(s, i))
                .collect()
        })
    }

    /// Each task's state, next step, held locks, wait key, call path and last wake-up: the
    /// report a violation carries, available at every step.
    pub fn inspect_tasks(&self) -> Vec<TaskReport> {
        with_state(|s| detect::task_reports(s))
    }

    /// The wait-for edges `(waiter, holder)` of the live tasks now: a task waiting for a lock,
    /// a semaphore or a join points at the tasks it waits for (a sleeper on a wait queue has no
    /// edge: nobody is obliged to wake it). The deadlock diagnosis builds its graph from these.
    pub fn inspect_wait_for(&self) -> Vec<(u32, u32)> {
        with_state(|s| {
            let mut edges = Vec::new();
            for t in 0..s.tasks.len() {
                if s.tasks[t].status != TaskStatus::Live {
                    continue;
                }
                for h in detect::waits_for(s, t) {
                    edges.push((t as u32, h));
                }
            }
            edges
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::{Platform, Spawner, WaitQueue, WakeMode, wake_key_eq};
    use crate::sim::SimConfig;
    use crate::{Mutex, TaskId};
    use std::sync::Arc;

    #[test]
    fn objects_show_holders_waiters_and_the_last_wake() {
        let mut sim = Sim::new(SimConfig::default());
        let p = sim.platform();
        let m = Arc::new(Mutex::new(&p, "m", 0u32));
        let wq = Arc::new(WaitQueue::new(&p, "wq"));
        let (m1, m2) = (m.clone(), m.clone());
        let wq1 = wq.clone();
        sim.spawn("a", move || async move {
            let g = m1.lock(&p).await;
            p.yield_point("holding").await;
            g.unlock().await;
            wq1.wake_up(&p, WaitKey(1, 7), WakeMode::All).await;
        });
        let wq2 = wq.clone();
        sim.spawn("b", move || async move {
            let w = wq2
                .prepare_to_wait(&p, WaitKey(1, 5), true, wake_key_eq)
                .await;
            let _ = m2.lock(&p).await;
            wq2.schedule(&p, w).await;
        });
        let mut en = Vec::new();
        sim.enabled(&mut en);
        sim.step(TaskId(0)); // a: lock
        sim.step(TaskId(1)); // b: prepare_to_wait
        let objs = sim.inspect_objects();
        let lock = objs.iter().find(|o| o.name == "m").unwrap();
        assert_eq!(
            lock.state,
            ObjView::Lock {
                class: LockClass::Mutex,
                holder: Some(0)
            }
        );
        let q = objs.iter().find(|o| o.name == "wq").unwrap();
        assert_eq!(
            q.state,
            ObjView::WaitQueue {
                waiters: vec![WaiterView {
                    task: 1,
                    key: WaitKey(1, 5),
                    exclusive: true
                }],
                last_wake: None
            }
        );
        // b now waits for the mutex a holds.
        assert_eq!(sim.inspect_wait_for(), vec![(1, 0)]);
        let tasks = sim.inspect_tasks();
        assert_eq!(tasks[0].holds, vec![format!("m#{}", lock.id)]);
        sim.step(TaskId(0)); // a: yield
        sim.step(TaskId(0)); // a: unlock
        sim.step(TaskId(0)); // a: wake key 7, which does not match b's key 5
        let objs = sim.inspect_objects();
        let q = objs.iter().find(|o| o.name == "wq").unwrap();
        let ObjView::WaitQueue { waiters, last_wake } = &q.state else {
            panic!("not a wait queue")
        };
        assert_eq!(waiters.len(), 1, "the wrong key reached nobody");
        assert_eq!(
            last_wake,
            &Some(WakeRecord {
                waker: 0,
                key: WaitKey(1, 7),
                mode: WakeMode::All,
                woken: vec![]
            })
        );
        assert!(sim.inspect_wait_for().is_empty());
    }
}
