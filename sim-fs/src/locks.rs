//! The XFS locking discipline of daxfs and a lockdep-style check of its order.
//!
//! Lock order, outermost first (each class may be taken only while every lock held by the task
//! ranks lower; two locks of one per-inode class are taken in inode-number order, as
//! `xfs_lock_two_inodes` does):
//!
//! | rank | class | lock | who |
//! | --- | --- | --- | --- |
//! | 0 | [`FsLock::Iolock`] | `inode->i_rwsem` | write, truncate, fallocate, reflink exclusive; read shared |
//! | 1 | [`FsLock::Mmaplock`] | `mapping->invalidate_lock` | faults shared (taken by the DAX core's `dax_fs_fault`); truncate, fallocate, reflink exclusive |
//! | - | | DAX core: `mmap_lock`, entry locks, page-table and i_pages locks | faults, between MMAPLOCK and the ILOCK (`iomap_begin` runs under an entry lock) |
//! | 2 | [`FsLock::Namespace`] | the namespace mutex (the directory's lock) | create, lookup |
//! | 3 | [`FsLock::Ilock`] | `ILOCK` | the inode's size and extents: exclusive to change them (`iomap_begin` of a write); shared for a read fault's `iomap_begin`, `i_size`, fsync |
//! | 4 | [`FsLock::Alloc`] | the allocator mutex | bitmap and refcounts |
//! | 5 | [`FsLock::Log`] | the log mutex | CIL insertion, log force |
//!
//! The check runs before the lock is taken (as lockdep's `lock_acquire`), so an inversion is
//! reported even in an interleaving where it does not deadlock. A violation is a fatal model
//! assertion named `lockdep-daxfs-lock-order`.
//!
//! The held-lock stacks are per task (lockdep's `current->held_locks`): a task reads and writes
//! only its own stack, so they are not state two tasks race on. The `std::sync::Mutex` around
//! the map of stacks is never held across an await, and the map is a `BTreeMap`.

use sim_core::platform::bug_on;
use sim_core::{Platform, TaskId};
use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};

/// The lock classes of daxfs, in lock order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum FsLock {
    Iolock,
    Mmaplock,
    Namespace,
    Ilock,
    Alloc,
    Log,
}

impl FsLock {
    fn per_inode(self) -> bool {
        matches!(self, FsLock::Iolock | FsLock::Mmaplock | FsLock::Ilock)
    }
}

/// Per-task stacks of held daxfs locks: (class, inode number or 0).
#[derive(Default)]
pub struct LockDep {
    held: std::sync::Mutex<BTreeMap<TaskId, Vec<(FsLock, u64)>>>,
}

impl LockDep {
    /// Whether taking `class` (of inode `sub`) while holding `h` keeps the order.
    pub fn allowed(h: (FsLock, u64), class: FsLock, sub: u64) -> bool {
        h.0 < class || (h.0 == class && class.per_inode() && h.1 < sub)
    }

    /// `lock_acquire`: check the order against every held lock, then record the lock.
    pub async fn acquire<P: Platform>(&self, p: &P, class: FsLock, sub: u64) {
        let t = p.current_task();
        // Only a violation copies the stack (for its message): this runs on every lock taken.
        let (bad, held) = {
            let map = self.held.lock().unwrap();
            let stack = map.get(&t).map_or(&[][..], Vec::as_slice);
            match stack
                .iter()
                .copied()
                .find(|&h| !LockDep::allowed(h, class, sub))
            {
                Some(h) => (Some(h), stack.to_vec()),
                None => (None, Vec::new()),
            }
        };
        // Lock order: see the module table.
        bug_on(p, bad.is_some(), "lockdep-daxfs-lock-order", || {
            let (hc, hs) = bad.unwrap();
            format!(
                "{t} takes {class:?} (inode {sub}) while holding {hc:?} (inode {hs}); held: \
                 {held:?}. Order: Iolock -> Mmaplock -> Namespace -> Ilock -> Alloc -> Log, \
                 per-inode locks by inode number"
            )
        })
        .await;
        self.held
            .lock()
            .unwrap()
            .entry(t)
            .or_default()
            .push((class, sub));
    }

    /// `lock_release`.
    pub fn release(&self, t: TaskId, class: FsLock, sub: u64) {
        let mut map = self.held.lock().unwrap();
        // An empty stack stays in the map (a task takes locks again and again): `held_by`
        // reads it as no stack.
        if let Some(v) = map.get_mut(&t)
            && let Some(i) = v.iter().rposition(|&h| h == (class, sub))
        {
            v.remove(i);
        }
    }

    /// The locks task `t` holds (tests, reports).
    pub fn held_by(&self, t: TaskId) -> Vec<(FsLock, u64)> {
        self.held
            .lock()
            .unwrap()
            .get(&t)
            .cloned()
            .unwrap_or_default()
    }
}

/// A guard of a Platform lock whose acquisition [`LockDep`] recorded; dropping it records the
/// release (before the lock itself is released by the inner guard's drop).
pub struct Held<'a, G> {
    guard: G,
    dep: &'a LockDep,
    task: TaskId,
    class: FsLock,
    sub: u64,
}

impl<'a, G> Held<'a, G> {
    pub async fn take<P: Platform, F: std::future::Future<Output = G>>(
        p: &P,
        dep: &'a LockDep,
        class: FsLock,
        sub: u64,
        lock: F,
    ) -> Held<'a, G> {
        dep.acquire(p, class, sub).await;
        let guard = lock.await;
        Held {
            guard,
            dep,
            task: p.current_task(),
            class,
            sub,
        }
    }
}

impl<G: Deref> Deref for Held<'_, G> {
    type Target = G::Target;
    fn deref(&self) -> &G::Target {
        &self.guard
    }
}

impl<G: DerefMut> DerefMut for Held<'_, G> {
    fn deref_mut(&mut self) -> &mut G::Target {
        &mut self.guard
    }
}

impl<G> Drop for Held<'_, G> {
    fn drop(&mut self) {
        self.dep.release(self.task, self.class, self.sub);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_allows_outer_to_inner_and_inodes_by_number() {
        use FsLock::*;
        assert!(LockDep::allowed((Iolock, 1), Mmaplock, 1));
        assert!(LockDep::allowed((Ilock, 1), Ilock, 2));
        assert!(!LockDep::allowed((Ilock, 2), Ilock, 1));
        assert!(!LockDep::allowed((Ilock, 1), Ilock, 1));
        assert!(!LockDep::allowed((Ilock, 1), Iolock, 1));
        assert!(!LockDep::allowed((Log, 0), Alloc, 0));
        assert!(!LockDep::allowed((Alloc, 0), Alloc, 0));
    }
}
