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
//! reversible (`j` needed `i`, e.g. the release that let it acquire) and owes nothing. The
//! same holds when `j` itself is an initial of `v` and cannot move before `i`, even if another
//! initial can: what enables `j` depends on it, so it is `i` or happens after `i`, and `j`
//! stays disabled through every ordering of `v`. (Every other initial can move before `i`:
//! its enabler is in its hb-past, outside `v`, and not after `i`.) Example: a one-step
//! critical section of a lock another task holds across several steps races with each of
//! the holder's steps in between, and none of those races can be reversed.
//!
//! A join and the last step of a task it joins are no race either, initial or not: that step
//! writes the exit the join waits for, so it enables the join, which no ordering of `v` can
//! move before it. (A join of several tasks has the other tasks' ends in `v` before it, so
//! the rule above does not see it; each such race would owe another task at the state before
//! the end, as if the tasks' ends had an order to explore.)
//!
//! # Runs cut short
//! A run that ends in a violation (a BUG, a deadlock, a lost wake-up, the step limit) leaves
//! tasks with a step they never took; plain DFS would also stop there, but the other orders of
//! that step must still be explored. Each such pending step is analysed as a step whose
//! footprint depends on everything (over-approximating dependence is always sound): every
//! earlier step of another task outside the pending task's hb-past is a race. Runs abandoned
//! because every enabled task sleeps are analysed on their executed steps only, as Algorithm 1
//! does.

use crate::platform::{Op, OpKind, footprint_sig, footprints_depend_sig};

/// One executed step of a run.
pub(super) struct Event {
    pub task: u32,
    pub fp: Vec<Op>,
    /// The footprint's summary (`footprint_sig`).
    pub sig: u64,
    /// The DFS node at which this step was chosen (None: one task was awake, so the others
    /// that were enabled there were asleep).
    pub node: Option<usize>,
}

impl Event {
    /// The step `task` took at `node` with footprint `fp`.
    pub fn new(task: u32, fp: Vec<Op>, node: Option<usize>) -> Event {
        let sig = footprint_sig(&fp);
        Event {
            task,
            fp,
            sig,
            node,
        }
    }
}

/// Whether step `j` joins the task that step `i` ends: `j`'s announced op is a join of `i`'s
/// task, and `i` writes its exit (no race, see "Races").
fn joins_end_of(i: &Event, j: &Event) -> bool {
    j.fp.first().is_some_and(|op| {
        op.kind == OpKind::Join
            && op
                .tasks_of()
                .is_some_and(|(first, n)| (first.0..first.0 + n).contains(&i.task))
    }) && i.fp.contains(&Op::task(OpKind::Write, i.task as usize))
}

/// The backtrack sets of the DFS tree, as the race analysis sees them.
pub(super) trait Tree {
    /// Whether `task` is in `node`'s backtrack set or sleep set (a race whose reversal starts
    /// with it owes nothing more there).
    fn covered(&self, node: usize, task: u32) -> bool;
    /// Whether `task` could move at `node`.
    fn enabled(&self, node: usize, task: u32) -> bool;
    /// Add `task` to `node`'s backtrack set; `plan` is the rest of the reversed race's
    /// sequence after `task`'s first step (the tasks, in order), a continuation that leads to
    /// the reversal.
    fn add(&mut self, node: usize, task: u32, plan: Vec<u32>);
}

/// Vector clocks, one row of `tasks` entries per step: 1 + the index of the latest step of that
/// task that happens before (or is) the step; 0 for none.
struct Clocks {
    tasks: usize,
    rows: Vec<u32>,
}

impl Clocks {
    fn row(&self, k: usize) -> &[u32] {
        &self.rows[k * self.tasks..(k + 1) * self.tasks]
    }

    /// Begin the clock of step `j`, the one after those in already, as that of `prev` (its
    /// task's previous step): the clocks before it, and it.
    fn begin(&mut self, j: usize, prev: Option<usize>) -> (&[u32], &mut [u32]) {
        let tasks = self.tasks;
        debug_assert_eq!(self.rows.len(), j * tasks);
        match prev {
            Some(p) => self.rows.extend_from_within(p * tasks..(p + 1) * tasks),
            None => self.rows.resize((j + 1) * tasks, 0),
        }
        let (earlier, c) = self.rows.split_at_mut(j * tasks);
        (earlier, c)
    }
}

/// Owe the race between step `i` and the step `x` (task `xt`, clock `xc`, index `j`): scan the
/// initials of `v = notdep(i).x`; nothing when one is covered at `i`'s node, else add the first
/// enabled one; none enabled: the race is not reversible.
#[allow(clippy::too_many_arguments)]
fn owe(
    tree: &mut dyn Tree,
    events: &[Event],
    cl: &Clocks,
    first: &mut [Option<usize>],
    i: usize,
    j: usize,
    xt: u32,
    xc: &[u32],
) {
    let Some(node) = events[i].node else { return };
    let ti = events[i].task as usize;
    first.fill(None);
    let mut pick: Option<u32> = None;
    // `x` has a v-predecessor when the latest step of some task that happens before it is at
    // or after that task's first step in v.
    let is_initial = |first: &[Option<usize>], c: &[u32]| {
        first
            .iter()
            .zip(c)
            .all(|(f, &ct)| f.is_none_or(|f| ct as usize <= f))
    };
    let mut consider = |t: u32, tree: &mut dyn Tree| -> bool {
        if tree.covered(node, t) {
            return true;
        }
        if pick.is_none() && tree.enabled(node, t) {
            pick = Some(t);
        }
        false
    };
    let rows = cl.rows[(i + 1) * cl.tasks..j * cl.tasks].chunks_exact(cl.tasks);
    for ((k, ek), ck) in (i + 1..j).zip(&events[i + 1..j]).zip(rows) {
        if ck[ti] as usize > i {
            continue; // happens after i: not in v
        }
        let t = ek.task as usize;
        if first[t].is_some() {
            continue;
        }
        if is_initial(first, ck) && consider(t as u32, tree) {
            return;
        }
        first[t] = Some(k);
    }
    if first[xt as usize].is_none() && is_initial(first, xc) {
        if consider(xt, tree) {
            return;
        }
        // `x` has no v-predecessor and cannot move before `i`: whatever enables it is `i` or
        // happens after `i` (enabling is dependence), and no ordering of `v` runs there.
        if !tree.enabled(node, xt) {
            return;
        }
    }
    if let Some(t) = pick {
        // `v` with `t`'s first step first (an initial: nothing in `v` precedes it).
        let mut plan: Vec<u32> = events[i + 1..j]
            .iter()
            .enumerate()
            .filter(|&(d, _)| cl.row(i + 1 + d)[ti] as usize <= i)
            .map(|(_, e)| e.task)
            .chain(std::iter::once(xt))
            .collect();
        if let Some(at) = plan.iter().position(|&u| u == t) {
            plan.remove(at);
        }
        tree.add(node, t, plan);
    }
}

/// The vectors of an analysis, kept for the next one (a run takes hundreds of steps); their
/// contents between analyses do not matter.
#[derive(Default)]
pub(super) struct Buffers {
    of_task: Vec<Vec<usize>>,
    rows: Vec<u32>,
    ranks: Vec<u32>,
    races: Vec<usize>,
}

/// Add to `tree` the backtrack points the run's races owe. `pending` lists the tasks with a
/// step not taken at the end of a run cut short.
pub(super) fn analyse(
    tree: &mut dyn Tree,
    events: &[Event],
    tasks: usize,
    pending: &[u32],
    buf: &mut Buffers,
) {
    let tasks = tasks.max(
        events
            .iter()
            .map(|e| e.task as usize + 1)
            .max()
            .unwrap_or(0),
    );
    // Invariant: each event's summary is that of its footprint (`Dfs::push_event` keeps an
    // entry's summary only with its footprint unchanged).
    debug_assert!(events.iter().all(|e| e.sig == footprint_sig(&e.fp)));
    let Buffers {
        of_task,
        rows,
        ranks,
        races,
    } = buf;
    // Per task, its steps before the current one.
    of_task.truncate(tasks);
    of_task.resize_with(tasks, Vec::new);
    for steps in of_task.iter_mut() {
        steps.clear();
    }
    rows.clear();
    let mut cl = Clocks {
        tasks,
        rows: std::mem::take(rows),
    };
    // Per step, how many steps of its task are at or before it.
    ranks.clear();
    let zero = vec![0u32; tasks];
    let mut first: Vec<Option<usize>> = vec![None; tasks];
    for (j, e) in events.iter().enumerate() {
        let q = e.task as usize;
        let prev = of_task[q].last().copied();
        let (earlier, c) = cl.begin(j, prev);
        let past = prev.map_or(&zero[..], |p| &earlier[p * tasks..(p + 1) * tasks]);
        // Each other task's steps outside `q`'s past, each tested once: the clock joins those
        // `e` depends on (a step already in the past would join a row below the clock; the
        // clock is the same in any order of the joins), and those of them taken at a node are
        // races (positions without a node owe nothing: every other enabled task slept there).
        races.clear();
        for (t, steps) in of_task.iter().enumerate() {
            if t == q {
                continue;
            }
            // `past[t]` is 1 + a step of `t`: the steps of `t` before it are those up to it.
            let from = past[t].checked_sub(1).map_or(0, |p| {
                debug_assert_eq!(events[p as usize].task as usize, t);
                ranks[p as usize] as usize
            });
            for &i in &steps[from..] {
                if footprints_depend_sig(&events[i].fp, events[i].sig, &e.fp, e.sig) {
                    for (a, b) in c.iter_mut().zip(&earlier[i * tasks..(i + 1) * tasks]) {
                        *a = (*a).max(*b);
                    }
                    if events[i].node.is_some() && !joins_end_of(&events[i], e) {
                        races.push(i);
                    }
                }
            }
        }
        c[q] = j as u32 + 1;
        races.sort_unstable();
        for &i in races.iter() {
            owe(tree, events, &cl, &mut first, i, j, e.task, cl.row(j));
        }
        of_task[q].push(j);
        ranks.push(of_task[q].len() as u32);
    }
    // Pending steps depend on everything: their clock covers every step taken.
    let n = events.len();
    let all: Vec<u32> = of_task
        .iter()
        .map(|steps| steps.last().map_or(0, |&k| k as u32 + 1))
        .collect();
    for &p in pending {
        let past = of_task
            .get(p as usize)
            .and_then(|steps| steps.last())
            .map_or(&zero[..], |&l| cl.row(l));
        for i in 0..n {
            let t = events[i].task as usize;
            if t == p as usize || events[i].node.is_none() || past[t] as usize > i {
                continue;
            }
            owe(tree, events, &cl, &mut first, i, n, p, &all);
        }
    }
    *rows = cl.rows;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::{ObjId, OpKind, footprints_depend};

    fn ev(task: u32, kind: OpKind, obj: u32, node: Option<usize>) -> Event {
        Event::new(task, vec![Op::new(kind, ObjId(obj))], node)
    }

    /// Every task enabled everywhere, nothing asleep; records the additions.
    struct Flat {
        backtrack: Vec<Vec<u32>>,
    }

    impl Tree for Flat {
        fn covered(&self, node: usize, task: u32) -> bool {
            self.backtrack[node].contains(&task)
        }
        fn enabled(&self, _: usize, _: u32) -> bool {
            true
        }
        fn add(&mut self, node: usize, task: u32, _plan: Vec<u32>) {
            self.backtrack[node].push(task);
        }
    }

    /// The backtrack sets after analysing `evs` (each node starts with the task chosen there).
    fn run(evs: &[Event], tasks: usize, pending: &[u32]) -> Vec<Vec<u32>> {
        let nodes = evs.iter().filter_map(|e| e.node).max().map_or(0, |n| n + 1);
        let mut tree = Flat {
            backtrack: vec![Vec::new(); nodes],
        };
        for e in evs {
            if let Some(n) = e.node {
                tree.backtrack[n].push(e.task);
            }
        }
        analyse(&mut tree, evs, tasks, pending, &mut Buffers::default());
        tree.backtrack
    }

    /// Records every addition in order; a task is enabled at a node by a fixed pattern.
    struct Recording {
        backtrack: Vec<Vec<u32>>,
        added: Vec<(usize, u32, Vec<u32>)>,
    }

    impl Tree for Recording {
        fn covered(&self, node: usize, task: u32) -> bool {
            self.backtrack[node].contains(&task)
        }
        fn enabled(&self, node: usize, task: u32) -> bool {
            !(node * 7 + task as usize * 3).is_multiple_of(5)
        }
        fn add(&mut self, node: usize, task: u32, plan: Vec<u32>) {
            self.backtrack[node].push(task);
            self.added.push((node, task, plan));
        }
    }

    /// The analysis by definition: every pair of steps tested, clocks joined over every
    /// earlier dependent step of another task, races in the order (j, i).
    fn analyse_by_definition(tree: &mut dyn Tree, events: &[Event], tasks: usize) {
        let mut rows: Vec<u32> = Vec::new();
        let mut last: Vec<Option<usize>> = vec![None; tasks];
        for (j, e) in events.iter().enumerate() {
            let q = e.task as usize;
            let mut c = match last[q] {
                Some(p) => rows[p * tasks..(p + 1) * tasks].to_vec(),
                None => vec![0; tasks],
            };
            for i in 0..j {
                if events[i].task as usize != q && footprints_depend(&events[i].fp, &e.fp) {
                    for (a, b) in c.iter_mut().zip(&rows[i * tasks..(i + 1) * tasks]) {
                        *a = (*a).max(*b);
                    }
                }
            }
            c[q] = j as u32 + 1;
            rows.extend_from_slice(&c);
            last[q] = Some(j);
        }
        let cl = Clocks { tasks, rows };
        let mut last: Vec<Option<usize>> = vec![None; tasks];
        let zero = vec![0u32; tasks];
        let mut first = vec![None; tasks];
        for (j, e) in events.iter().enumerate() {
            let q = e.task as usize;
            let past = last[q].map_or(&zero[..], |p| cl.row(p));
            for i in 0..j {
                let t = events[i].task as usize;
                if t != q
                    && events[i].node.is_some()
                    && past[t] as usize <= i
                    && footprints_depend(&events[i].fp, &e.fp)
                    && !joins_end_of(&events[i], e)
                {
                    owe(tree, events, &cl, &mut first, i, j, e.task, cl.row(j));
                }
            }
            last[q] = Some(j);
        }
    }

    /// The analysis (one pass: per-task step lists grown as the steps pass, ranks, footprint
    /// summaries, clocks that skip the steps already in the past) owes exactly what the
    /// definition owes, in the same order, on random runs of two to four tasks over a few
    /// objects (a list or rank off by one makes it test a step in the past, or skip the latest
    /// one), one analysis after another on the same buffers.
    #[test]
    fn the_analysis_owes_what_the_definition_owes() {
        use rand::{RngExt, SeedableRng};
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let kinds = [OpKind::Read, OpKind::Write, OpKind::Lock, OpKind::Add];
        let mut added = 0;
        let mut buf = Buffers::default();
        for _ in 0..300 {
            let tasks = r.random_range(2..5);
            let n = r.random_range(2..60);
            let mut node = 0;
            let evs: Vec<Event> = (0..n)
                .map(|_| {
                    let fp = (0..r.random_range(1..3))
                        .map(|_| {
                            let kind = kinds[r.random_range(0..kinds.len())];
                            if r.random_bool(0.2) {
                                Op::mem(kind, r.random_range(0..16) * 64, 64)
                            } else {
                                Op::new(kind, ObjId(r.random_range(0..6)))
                            }
                        })
                        .collect();
                    let at = r.random_bool(0.8).then(|| {
                        node += 1;
                        node - 1
                    });
                    Event::new(r.random_range(0..tasks as u32), fp, at)
                })
                .collect();
            let fresh = || Recording {
                backtrack: evs
                    .iter()
                    .filter(|e| e.node.is_some())
                    .map(|e| vec![e.task])
                    .collect(),
                added: Vec::new(),
            };
            let (mut fast, mut slow) = (fresh(), fresh());
            analyse(&mut fast, &evs, tasks, &[], &mut buf);
            analyse_by_definition(&mut slow, &evs, tasks);
            assert_eq!(fast.added, slow.added);
            added += fast.added.len();
        }
        assert!(added > 500, "only {added} backtrack points owed");
    }

    #[test]
    fn two_writes_race_and_owe_the_second_writer_first() {
        let evs = [
            ev(0, OpKind::Write, 1, Some(0)),
            ev(1, OpKind::Write, 1, None),
        ];
        assert_eq!(run(&evs, 2, &[]), vec![vec![0, 1]]);
    }

    #[test]
    fn independent_steps_owe_nothing() {
        let evs = [
            ev(0, OpKind::Write, 1, Some(0)),
            ev(1, OpKind::Write, 2, None),
        ];
        assert_eq!(run(&evs, 2, &[]), vec![vec![0]]);
        let reads = [
            ev(0, OpKind::Read, 1, Some(0)),
            ev(1, OpKind::Read, 1, None),
        ];
        assert_eq!(run(&reads, 2, &[]), vec![vec![0]]);
    }

    #[test]
    fn a_chain_through_a_third_task_owes_its_initial() {
        // 0 writes x; 2 writes y (independent of 0); 1 reads y then x: the race (0.w x, 1.r x)
        // reversed is v = [2.w y, 1.r y, 1.r x]; task 1's first step in v reads y, which task 2
        // wrote before, so only 2 is an initial.
        let evs = [
            ev(0, OpKind::Write, 1, Some(0)),
            ev(2, OpKind::Write, 2, Some(1)),
            ev(1, OpKind::Read, 2, Some(2)),
            ev(1, OpKind::Read, 1, None),
        ];
        let bt = run(&evs, 3, &[]);
        assert_eq!(bt[0], vec![0, 2]);
        // (2.w y, 1.r y) owes 1 before 2's write.
        assert_eq!(bt[1], vec![2, 1]);
    }

    #[test]
    fn a_join_owes_nothing_for_the_ends_of_the_tasks_it_joins() {
        // Tasks 1 and 2 end (each writes its exit); task 3 joins both in one step. Each end
        // races with the join, which cannot move before it: nothing is owed (without the
        // rule, the race with task 1's end would owe task 2 first, an order of the ends).
        let end =
            |t: u32, node| Event::new(t, vec![Op::task(OpKind::Write, t as usize)], Some(node));
        let evs = [
            end(1, 0),
            end(2, 1),
            Event::new(3, vec![Op::tasks(OpKind::Join, 1, 2)], None),
        ];
        assert_eq!(run(&evs, 4, &[]), vec![vec![1], vec![2]]);
    }

    #[test]
    fn a_pending_step_races_with_every_step_outside_its_past() {
        let evs = [
            ev(0, OpKind::Write, 1, Some(0)),
            ev(0, OpKind::Write, 2, None),
        ];
        assert_eq!(run(&evs, 2, &[1]), vec![vec![0, 1]]);
    }
}
