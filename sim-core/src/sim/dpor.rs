//! Source-set DPOR (Abdulla, Aronis, Jonsson, Sagonas, "Optimal dynamic partial order
//! reduction", POPL 2014, Algorithm 1: source sets with sleep sets, no wakeup trees): the race
//! analysis of one executed run. The DFS driver (`explore.rs`) owns the tree, the sleep sets
//! and the backtrack sets; this file turns a run into the backtrack points it owes.
//!
//! # The model of a run
//! A run is the sequence of its executed steps, each with the task that took it and the
//! footprint it really had (`Sim::last_footprint`: the announced op plus what it touched on the
//! way to its next announcement). Happens-before (hb) is the transitive closure of program
//! order and of dependence between footprints (`platform::footprints_depend`), computed with
//! vector clocks. Enabling and disabling are dependence too: a release and the acquire it
//! unblocks touch the same lock object, a wake-up and the `schedule` it ends the same wait
//! queue, so an enabling step always happens before the step it enabled.
//!
//! # Races
//! For a step `j` of task `q`, every earlier step `i` of another task whose footprint depends on
//! `j`'s and that is not in the hb-past of `q`'s previous step is a candidate race (Flanagan
//! and Godefroid's condition, POPL 2005; it contains Abdulla's immediate races `i <. j` and
//! also `i` whose only hb-path to `j` enters `j` through another dependence, such as an
//! acquire whose release unblocked `q`'s acquire: reversing the release alone is impossible,
//! reversing the acquire is what finds the other lock order). Taking more races than needed
//! only adds backtrack points, never loses one.
//!
//! For a race `(i, j)`, `v = notdep(i).j` is the steps after `i` that do not happen after `i`,
//! followed by `j`; its initials are the tasks whose first step in `v` has no hb-predecessor in
//! `v`. The algorithm owes one of them at the state before `i`: nothing when one is already
//! in that state's backtrack set or sleep set (a sleeping task's branch is covered where it was
//! explored); otherwise an enabled initial is added. When no initial is enabled before `i`, no
//! ordering of `v` can run there (every ordering starts with an initial), so the race is not
//! reversible (`j` needed `i`, e.g. the release that let it acquire) and owes nothing.
//!
//! # Runs cut short
//! A run that ends in a violation (a BUG, a deadlock, a lost wake-up, the step limit) leaves
//! tasks with a step they never took; plain DFS would also stop there, but the other orders of
//! that step must still be explored. Each such pending step is analysed as a step whose
//! footprint depends on everything (over-approximating dependence is always sound): every
//! earlier step of another task outside the pending task's hb-past is a race. Runs abandoned
//! because every enabled task sleeps are analysed on their executed steps only, as Algorithm 1
//! does.

use crate::platform::{Op, footprints_depend};

/// One executed step of a run.
pub(super) struct Event {
    pub task: u32,
    pub fp: Vec<Op>,
    /// The DFS node at which this step was chosen (None: one task was awake, so the others
    /// that were enabled there were asleep).
    pub node: Option<usize>,
}

/// A backtrack point owed: at `node`, one of `initials` (ascending task ids).
pub(super) struct Owed {
    pub node: usize,
    pub initials: Vec<u32>,
}

/// Vector clock entry: 1 + the index of the latest step of that task that happens before (or
/// is) the step; 0 for none.
type Clock = Vec<u32>;

/// The vector clocks of a run's steps.
fn clocks(events: &[Event], tasks: usize) -> Vec<Clock> {
    let mut out: Vec<Clock> = Vec::with_capacity(events.len());
    let mut last: Vec<Option<usize>> = vec![None; tasks];
    for (j, e) in events.iter().enumerate() {
        let q = e.task as usize;
        let mut c = match last[q] {
            Some(p) => out[p].clone(),
            None => vec![0; tasks],
        };
        // Latest first: a step already in the past needs no footprint test.
        for i in (0..j).rev() {
            let t = events[i].task as usize;
            if t != q && c[t] as usize <= i && footprints_depend(&events[i].fp, &e.fp) {
                let ci = &out[i];
                for (a, b) in c.iter_mut().zip(ci) {
                    *a = (*a).max(*b);
                }
            }
        }
        c[q] = j as u32 + 1;
        out.push(c);
        last[q] = Some(j);
    }
    out
}

/// The initials of `v = notdep(i).x` where `x` (task `xt`, clock `xc`) is the racing step.
fn initials(
    events: &[Event],
    clocks: &[Clock],
    i: usize,
    j: usize,
    xt: u32,
    xc: &Clock,
) -> Vec<u32> {
    let ti = events[i].task as usize;
    let tasks = xc.len();
    // First step of each task in v so far.
    let mut first: Vec<Option<usize>> = vec![None; tasks];
    let mut out: Vec<u32> = Vec::new();
    let is_initial = |first: &[Option<usize>], c: &Clock| {
        first
            .iter()
            .zip(c)
            .all(|(f, &ct)| f.is_none_or(|f| ct as usize <= f))
    };
    for k in i + 1..j {
        if clocks[k][ti] as usize > i {
            continue; // happens after i: not in v
        }
        let t = events[k].task as usize;
        if first[t].is_some() {
            continue;
        }
        if is_initial(&first, &clocks[k]) {
            out.push(t as u32);
        }
        first[t] = Some(k);
    }
    if first[xt as usize].is_none() && is_initial(&first, xc) {
        out.push(xt);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The backtrack points a run owes: for every race, its node and the initials of the reversed
/// sequence. `pending` lists the tasks with a step not taken at the end of a run cut short.
pub(super) fn analyse(events: &[Event], tasks: usize, pending: &[u32]) -> Vec<Owed> {
    let tasks = tasks.max(
        events
            .iter()
            .map(|e| e.task as usize + 1)
            .max()
            .unwrap_or(0),
    );
    let cl = clocks(events, tasks);
    let mut owed = Vec::new();
    let mut last: Vec<Option<usize>> = vec![None; tasks];
    let zero: Clock = vec![0; tasks];
    let mut push = |node: Option<usize>, initials: Vec<u32>| {
        if let Some(node) = node
            && !initials.is_empty()
        {
            owed.push(Owed { node, initials });
        }
    };
    for (j, e) in events.iter().enumerate() {
        let q = e.task as usize;
        let past = last[q].map_or(&zero, |p| &cl[p]);
        for i in 0..j {
            let t = events[i].task as usize;
            // Positions without a node owe nothing: every other enabled task slept there.
            if t == q || events[i].node.is_none() || past[t] as usize > i {
                continue;
            }
            if footprints_depend(&events[i].fp, &e.fp) {
                push(events[i].node, initials(events, &cl, i, j, e.task, &cl[j]));
            }
        }
        last[q] = Some(j);
    }
    // Pending steps depend on everything: their clock covers every step taken.
    let n = events.len();
    let mut all: Clock = vec![0; tasks];
    for (k, e) in events.iter().enumerate() {
        all[e.task as usize] = k as u32 + 1;
    }
    for &p in pending {
        let past = last
            .get(p as usize)
            .copied()
            .flatten()
            .map_or(&zero, |l| &cl[l]);
        for i in 0..n {
            let t = events[i].task as usize;
            if t == p as usize || events[i].node.is_none() || past[t] as usize > i {
                continue;
            }
            push(events[i].node, initials(events, &cl, i, n, p, &all));
        }
    }
    owed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::{ObjId, OpKind};

    fn ev(task: u32, kind: OpKind, obj: u32, node: Option<usize>) -> Event {
        Event {
            task,
            fp: vec![Op::new(kind, ObjId(obj))],
            node,
        }
    }

    #[test]
    fn two_writes_race_and_owe_the_second_writer_first() {
        let evs = [
            ev(0, OpKind::Write, 1, Some(0)),
            ev(1, OpKind::Write, 1, None),
        ];
        let owed = analyse(&evs, 2, &[]);
        assert_eq!(owed.len(), 1);
        assert_eq!((owed[0].node, owed[0].initials.clone()), (0, vec![1]));
    }

    #[test]
    fn independent_steps_owe_nothing() {
        let evs = [
            ev(0, OpKind::Write, 1, Some(0)),
            ev(1, OpKind::Write, 2, None),
        ];
        assert!(analyse(&evs, 2, &[]).is_empty());
        let reads = [
            ev(0, OpKind::Read, 1, Some(0)),
            ev(1, OpKind::Read, 1, None),
        ];
        assert!(analyse(&reads, 2, &[]).is_empty());
    }

    #[test]
    fn a_chain_through_a_third_task_owes_its_initial() {
        // 0 writes x; 2 writes y (independent of 0); 1 reads y then x: the race (0.w x, 1.r x)
        // reversed is v = [2.w y, 1.r y, 1.r x] minus what happens after 0.w x.
        let evs = [
            ev(0, OpKind::Write, 1, Some(0)),
            ev(2, OpKind::Write, 2, Some(1)),
            ev(1, OpKind::Read, 2, Some(2)),
            ev(1, OpKind::Read, 1, None),
        ];
        let owed = analyse(&evs, 3, &[]);
        let at0: Vec<_> = owed.iter().filter(|o| o.node == 0).collect();
        assert_eq!(at0.len(), 1);
        // Task 1's first step in v reads y, which task 2 wrote before: only 2 is an initial.
        assert_eq!(at0[0].initials, vec![2]);
    }

    #[test]
    fn a_pending_step_races_with_every_step_outside_its_past() {
        let evs = [
            ev(0, OpKind::Write, 1, Some(0)),
            ev(0, OpKind::Write, 2, None),
        ];
        let owed = analyse(&evs, 2, &[1]);
        assert_eq!(owed.len(), 1);
        assert_eq!((owed[0].node, owed[0].initials.clone()), (0, vec![1]));
    }
}
