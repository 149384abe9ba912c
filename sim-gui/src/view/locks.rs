//! Locks: the rw-semaphores (i_rwsem, invalidate_lock, mmap_lock, i_mmap_rwsem) and the
//! spinlocks, mutexes and bit locks (page locks) that are held or waited for, with holders and
//! waiters (tasks whose next step takes the lock and cannot run).

use super::task_name;
use crate::session::Snapshot;
use sim_core::LockClass;
use sim_core::sim::inspect::ObjView;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockRow {
    pub lock: String,
    /// `rwsem`, `spinlock`, `mutex` or `bit lock`.
    pub kind: &'static str,
    /// `name (write)`, `name (read)`, `name`.
    pub holders: Vec<String>,
    pub waiters: Vec<String>,
}

/// `all`: also the free locks nobody waits for.
pub fn build(snap: &Snapshot, all: bool) -> Vec<LockRow> {
    let waiting = |id: u32| -> Vec<String> {
        snap.next_obj
            .iter()
            .enumerate()
            .filter(|(t, o)| {
                **o == Some(id) && snap.tasks.get(*t).is_some_and(|r| r.status == "blocked")
            })
            .map(|(t, _)| task_name(snap, t as u32))
            .collect()
    };
    let mut rows = Vec::new();
    for o in &snap.objects {
        let (kind, holders) = match &o.state {
            ObjView::Lock { class, holder } => (
                match class {
                    LockClass::Spin => "spinlock",
                    LockClass::Mutex => "mutex",
                    LockClass::Bit => "bit lock",
                },
                holder.iter().map(|&h| task_name(snap, h)).collect(),
            ),
            ObjView::RwSem {
                readers, writer, ..
            } => {
                let mut h: Vec<String> = writer
                    .iter()
                    .map(|&w| format!("{} (write)", task_name(snap, w)))
                    .collect();
                h.extend(
                    readers
                        .iter()
                        .map(|&r| format!("{} (read)", task_name(snap, r))),
                );
                ("rwsem", h)
            }
            ObjView::WaitQueue { .. } => continue,
        };
        let waiters = waiting(o.id);
        let is_rwsem = kind == "rwsem";
        if !all && !is_rwsem && holders.is_empty() && waiters.is_empty() {
            continue;
        }
        rows.push(LockRow {
            lock: format!("{}#{}", o.name, o.id),
            kind,
            holders,
            waiters,
        });
    }
    rows
}
