//! The object table of a run (an object's id is its index), over storage the thread's last
//! run left: a search creates thousands of objects per run, mostly the wait queues of the DAX
//! and page wait tables, in the same order run after run, and writing them all and dropping
//! them all again cost more than many runs' own steps.

use super::{Obj, ObjState, WaiterState};
use std::ops::{Deref, DerefMut};

/// The run's objects, `v[..len]`; the entries from `len` on are left from the thread's last
/// run (any state: a run may end with tasks asleep on its queues) and are no object of this
/// run. Derefs to the run's objects only.
pub(super) struct ObjTable {
    v: Vec<Obj>,
    len: usize,
    /// The wait-queue tables this run created ([`ObjTable::push_waitqueues`]): first id, end,
    /// name.
    tables: Vec<(usize, usize, &'static str)>,
    /// The queues whose waiter list this run took mutable access to ([`ObjTable::queue_mut`]).
    queues_changed: Vec<u32>,
    /// `tables` and `queues_changed` of the last run, once cleared.
    left_tables: Vec<(usize, usize, &'static str)>,
    left_changed: Vec<u32>,
}

impl Deref for ObjTable {
    type Target = [Obj];
    fn deref(&self) -> &[Obj] {
        &self.v[..self.len]
    }
}

impl DerefMut for ObjTable {
    fn deref_mut(&mut self) -> &mut [Obj] {
        &mut self.v[..self.len]
    }
}

impl Default for ObjTable {
    fn default() -> Self {
        ObjTable::new()
    }
}

impl ObjTable {
    pub(super) const fn new() -> ObjTable {
        ObjTable {
            v: Vec::new(),
            len: 0,
            tables: Vec::new(),
            queues_changed: Vec::new(),
            left_tables: Vec::new(),
            left_changed: Vec::new(),
        }
    }

    /// Add `o` as the next object.
    pub(super) fn push(&mut self, o: Obj) {
        match self.v.get_mut(self.len) {
            Some(slot) => *slot = o,
            None => self.v.push(o),
        }
        self.len += 1;
    }

    /// Add `n` wait queues named `name` with no waiter, as `n` pushes would. When the last run
    /// created the same table at the same ids, its entries are kept but for the queues whose
    /// waiters that run changed: the others are as that run created them, since every change
    /// of a queue's waiters goes through [`ObjTable::queue_mut`] and no later object of that
    /// run was stored below its end.
    pub(super) fn push_waitqueues(&mut self, name: &'static str, n: usize) {
        let (first, end) = (self.len, self.len + n);
        let left = self
            .left_tables
            .iter()
            .any(|&(f, e, m)| (f, e) == (first, end) && std::ptr::eq(m, name));
        if left {
            for &id in &self.left_changed {
                let id = id as usize;
                if (first..end).contains(&id) {
                    self.v[id] = empty_queue(name);
                }
            }
        } else {
            let kept = end.min(self.v.len());
            for o in &mut self.v[first.min(kept)..kept] {
                *o = empty_queue(name);
            }
            self.v.extend((kept..end).map(|_| empty_queue(name)));
        }
        self.len = end;
        self.tables.push((first, end, name));
    }

    /// The waiters of queue `id`, to change them (recorded for [`ObjTable::push_waitqueues`]).
    pub(super) fn queue_mut(&mut self, id: usize) -> &mut Vec<WaiterState> {
        if self.queues_changed.last() != Some(&(id as u32)) {
            self.queues_changed.push(id as u32);
        }
        match &mut self[id].state {
            ObjState::WaitQueue { waiters } => waiters,
            _ => unreachable!("object {id} is not a wait queue"),
        }
    }

    /// No object any more: the entries stay for the next run to reuse (see [`ObjTable`]).
    pub(super) fn clear(&mut self) {
        self.len = 0;
        self.left_tables = std::mem::take(&mut self.tables);
        self.left_changed = std::mem::take(&mut self.queues_changed);
    }
}

fn empty_queue(name: &'static str) -> Obj {
    Obj {
        name,
        state: ObjState::WaitQueue {
            waiters: Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::{LockClass, WaitKey};

    fn lock(name: &'static str) -> Obj {
        Obj {
            name,
            state: ObjState::Lock {
                class: LockClass::Spin,
                holder: Some(3),
                dirty: true,
                no_lockless: false,
            },
        }
    }

    fn describe(t: &ObjTable) -> Vec<String> {
        t.iter().map(|o| format!("{o:?}")).collect()
    }

    fn wait_on(t: &mut ObjTable, id: usize) {
        t.queue_mut(id).push(WaiterState {
            id: 7,
            task: 1,
            key: WaitKey(1, 2),
            exclusive: false,
            func: |_, _| true,
        });
    }

    /// A table reused after a run is, entry for entry, the table a fresh one becomes by the
    /// same pushes: with the last run's queues left with waiters, its locks and queues of
    /// another name where this run has queues, its tables at the same ids and elsewhere,
    /// and entries past its end.
    #[test]
    fn a_reused_table_holds_what_a_fresh_one_holds() {
        let build = |t: &mut ObjTable| {
            t.push_waitqueues("q", 4);
            t.push(lock("b"));
            t.push_waitqueues("q", 3);
            t.push_waitqueues("s", 2);
        };
        let mut fresh = ObjTable::new();
        build(&mut fresh);
        for last in 0..3 {
            let mut used = ObjTable::new();
            match last {
                // The same tables, with waiters left in both.
                0 => {
                    build(&mut used);
                    wait_on(&mut used, 2);
                    wait_on(&mut used, 9);
                }
                // Other objects where this run's first table and the "s" table go.
                1 => {
                    used.push(lock("a"));
                    used.push_waitqueues("q", 3);
                    wait_on(&mut used, 2);
                    used.push_waitqueues("r", 5);
                }
                // A shorter table at the same first id, a lock after it.
                _ => {
                    used.push_waitqueues("q", 2);
                    wait_on(&mut used, 1);
                    used.push(lock("c"));
                }
            }
            used.clear();
            assert!(used.is_empty());
            build(&mut used);
            assert_eq!(describe(&used), describe(&fresh), "last run {last}");
            // And once more after a run that left nothing behind.
            used.clear();
            build(&mut used);
            assert_eq!(describe(&used), describe(&fresh), "after last run {last}");
        }
    }
}
