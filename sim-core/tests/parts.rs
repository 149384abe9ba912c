//! Locks with parts (`SpinLock::new_with_parts`, `Op::part`): critical sections that announce
//! the key ranges of the data they read and change commute when the ranges are disjoint. Every
//! model here is small enough for plain DFS, and plain DFS, DFS with sleep sets and DFS with
//! source-set DPOR reach the same outcomes (how the run ended, what every task saw, the final
//! data); the commutation audit finds every pair the relation calls independent commuting; a
//! relation that ignores parts, and a section that reads outside the part it announced, are
//! caught; and the parts really reduce the search (fewer DPOR runs than the same model whose
//! lock has no parts).

use sim_core::platform::{Op, OpKind, Platform, Spawner, SpinLock, footprints_depend};
use sim_core::sim::audit::{AuditConfig, audit};
use sim_core::sim::reduction::compare_reductions;
use sim_core::sim::{Model, RunEnd, Sim, SimPlatform};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::Arc;

type Slots = [u32; 8];
type Xa = Arc<SpinLock<SimPlatform, Slots>>;

thread_local! {
    static NOTES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    static DATA: RefCell<Option<Xa>> = const { RefCell::new(None) };
    /// The audit's models: each writer and reader names what it wrote or saw in a yield after
    /// its section (an observable next step), since the audit sees no notes.
    static NAMED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A step naming `what` (in the audit's models only).
async fn name_it(p: &SimPlatform, what: String) {
    if NAMED.with(|n| n.get()) {
        p.yield_point(Box::leak(what.into_boxed_str())).await;
    }
}

fn note(s: String) {
    NOTES.with(|n| n.borrow_mut().push(s));
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Outcome {
    end: String,
    /// What the tasks saw, as a multiset (the order of notes is outside the seam).
    notes: Vec<String>,
    /// The slots at the end of the run.
    data: Option<Slots>,
    steps: u64,
}

/// The lock under test: with parts, or a plain lock (the same model without the refinement).
fn new_xa(p: &SimPlatform, parts: bool) -> Xa {
    let init = [1, 1, 1, 1, 1, 1, 1, 1];
    let l = Arc::new(if parts {
        SpinLock::new_with_parts(p, "xa", init)
    } else {
        SpinLock::new(p, "xa", init)
    });
    DATA.with(|d| *d.borrow_mut() = Some(l.clone()));
    NOTES.with(|n| n.borrow_mut().clear());
    l
}

/// A section on keys `[first, first + len)`: each slot becomes `slot * m + a` (no two tasks
/// use the same `(m, a)`, so the final data records the order of every overlapping pair).
fn writer(sim: &mut Sim, l: &Xa, first: usize, len: usize, m: u32, a: u32) {
    let (l, p) = (l.clone(), sim.platform());
    sim.spawn("writer", move || async move {
        let mut g = l.lock(&p).await;
        let d = g.part_mut(first as u64, len as u64);
        for s in &mut d[first..first + len] {
            *s = *s * m + a;
        }
        let now = d[first..first + len].to_vec();
        drop(g);
        name_it(&p, format!("wrote {now:?}")).await;
    });
}

/// A section reading keys `[first, first + len)`, noting what it saw.
fn reader(sim: &mut Sim, l: &Xa, first: usize, len: usize) {
    let (l, p) = (l.clone(), sim.platform());
    sim.spawn("reader", move || async move {
        let g = l.lock(&p).await;
        let seen = g.part(first as u64, len as u64)[first..first + len].to_vec();
        drop(g);
        name_it(&p, format!("saw {seen:?}")).await;
        note(format!("part {first}+{len}: {seen:?}"));
    });
}

/// Disjoint order-0 stores, a multi-index store over 0..4 (a PMD-like entry covering the
/// order-0 one at 2), a read of one key, and a range scan over 3..6.
fn ranges(parts: bool) -> impl Fn(&mut Sim) {
    move |sim: &mut Sim| {
        let l = new_xa(&sim.platform(), parts);
        writer(sim, &l, 2, 1, 2, 1);
        writer(sim, &l, 5, 1, 3, 2);
        writer(sim, &l, 0, 4, 5, 3);
        reader(sim, &l, 5, 1);
        reader(sim, &l, 3, 3);
    }
}

/// Whole-data accesses beside parts: a scan through `Deref` (a whole read), a holder that
/// keeps the lock across a scheduling point after a part write (its later steps write the
/// whole data), a lockless `read_once`, and a section mixing a part write with a whole read.
fn whole(sim: &mut Sim) {
    let l = new_xa(&sim.platform(), true);
    let p = sim.platform();
    writer(sim, &l, 0, 1, 2, 1);
    {
        let l = l.clone();
        sim.spawn("scan", move || async move {
            let g = l.lock(&p).await;
            let sum: u32 = g.iter().sum();
            drop(g);
            note(format!("scan {sum}"));
        });
    }
    {
        let l = l.clone();
        sim.spawn("holder", move || async move {
            let mut g = l.lock(&p).await;
            g.part_mut(6, 1)[6] += 10;
            p.yield_point("holding").await;
            let v = g.part(7, 1)[7];
            g.part_mut(7, 1)[7] = v * 7;
            g.unlock().await;
        });
    }
    {
        let l = l.clone();
        sim.spawn("lockless", move || async move {
            let v = l.read_once(&p, |d| (d[0], d[6], d[7])).await;
            note(format!("lockless {v:?}"));
        });
    }
    sim.spawn("mixed", move || async move {
        let mut g = l.lock(&p).await;
        let total: u32 = g.iter().sum();
        g.part_mut(7, 1)[7] = total;
        drop(g);
    });
}

fn outcome(sim: &Sim, end: &RunEnd) -> Outcome {
    let end = end.name();
    let p = sim.platform();
    let data = DATA.with(|d| d.borrow().as_ref().and_then(|l| l.peek(&p, |v| *v)));
    let mut notes = NOTES.with(|n| n.borrow().clone());
    notes.sort();
    Outcome {
        end,
        notes,
        data,
        steps: sim.steps(),
    }
}

/// Plain DFS, sleep sets and DPOR reach the same outcomes (`compare_reductions`); returns them
/// and the DPOR runs.
fn same_outcomes(name: &str, model: &dyn Model) -> (BTreeSet<Outcome>, u64) {
    let c = compare_reductions(model, &mut outcome).unwrap_or_else(|e| panic!("{name}: {e}"));
    println!("{name}: {} outcomes; {}", c.plain.outcomes.len(), c.runs());
    (c.plain.outcomes, c.dpor.runs)
}

#[test]
fn disjoint_and_overlapping_key_ranges_lose_no_outcome_and_reduce_the_search() {
    let (with_parts, dpor_parts) = same_outcomes("ranges with parts", &ranges(true));
    let (without, dpor_plain_lock) = same_outcomes("ranges, plain lock", &ranges(false));
    // The same model: the refinement changes the search, never what a run can reach.
    assert_eq!(with_parts, without);
    // Overlapping pairs are ordered both ways: the writer of 2 and the writer of 0..4 meet
    // at slot 2 (both orders reached), the writer of 5 and both readers at slot 5.
    let slot2: BTreeSet<u32> = with_parts.iter().map(|o| o.data.unwrap()[2]).collect();
    let (by_2_first, by_0_first) = ((2 + 1) * 5 + 3, (5 + 3) * 2 + 1); // slots start at 1
    assert_eq!(slot2, BTreeSet::from([by_2_first, by_0_first]));
    // Slots 2 and 5 are ordered independently, the readers see both states of slot 5.
    assert!(with_parts.len() >= 4, "{}", with_parts.len());
    // Disjoint sections commute: DPOR runs one schedule per order of the overlapping pairs.
    assert!(
        dpor_parts < dpor_plain_lock,
        "parts: {dpor_parts} DPOR runs, plain lock: {dpor_plain_lock}"
    );
}

#[test]
fn whole_data_accesses_stay_dependent_on_parts() {
    let (seen, _) = same_outcomes("whole", &whole);
    // The lockless reader sees the holder's part write and the writer's, in every combination.
    let lockless: BTreeSet<String> = seen
        .iter()
        .flat_map(|o| {
            o.notes
                .iter()
                .filter(|n| n.starts_with("lockless"))
                .cloned()
        })
        .collect();
    assert!(lockless.len() >= 4, "{lockless:?}");
}

fn clean_audit(name: &str, model: &dyn Model, cfg: &AuditConfig) -> u64 {
    let rep = audit(model, cfg);
    println!("{name}: {rep}");
    assert!(rep.failures.is_empty(), "{name}: {rep}");
    rep.independent
}

/// The explorer's relation with parts that never conflict: unsound.
fn parts_never_conflict(a: &[Op], b: &[Op]) -> bool {
    let keep = |f: &[Op]| -> Vec<Op> {
        f.iter()
            .copied()
            .filter(|o| o.part_of().is_none())
            .collect()
    };
    footprints_depend(&keep(a), &keep(b))
}

#[test]
fn the_audit_finds_sections_on_disjoint_keys_commuting_and_catches_ignored_parts() {
    NAMED.with(|n| n.set(true));
    let cfg = AuditConfig {
        runs: 80,
        ..AuditConfig::default()
    };
    let independent = clean_audit("ranges", &ranges(true), &cfg)
        + clean_audit("whole", &whole, &cfg)
        + clean_audit("ranges, plain lock", &ranges(false), &cfg);
    assert!(independent > 20, "only {independent} independent pairs");
    let rep = audit(
        &ranges(true),
        &AuditConfig {
            depend: parts_never_conflict,
            ..cfg
        },
    );
    assert!(!rep.failures.is_empty(), "{rep}");
    println!("caught: {}", rep.failures[0]);
}

/// A section that announces key 0 and reads key 1: the caller broke the contract of
/// `part`, and the audit sees the two orders differ.
#[test]
fn the_audit_catches_a_section_reading_outside_its_part() {
    NAMED.with(|n| n.set(true));
    let liar = |sim: &mut Sim| {
        let l = new_xa(&sim.platform(), true);
        writer(sim, &l, 1, 1, 2, 1);
        let p = sim.platform();
        sim.spawn("liar", move || async move {
            let g = l.lock(&p).await;
            let v = g.part(0, 1)[1];
            drop(g);
            p.yield_point(if v == 1 { "saw old" } else { "saw new" })
                .await;
        });
    };
    let rep = audit(
        &liar,
        &AuditConfig {
            runs: 40,
            ..AuditConfig::default()
        },
    );
    assert!(!rep.failures.is_empty(), "{rep}");
}

/// The footprint entries themselves: overlapping ranges of one lock conflict unless both
/// read; parts of two locks never do; the lock word commutes with parts, a whole-data read
/// only with part reads, everything else on the lock conflicts.
#[test]
fn part_entries_conflict_by_range_and_kind() {
    use sim_core::platform::ObjId;
    let l = ObjId(7);
    let part = |k, a, n| Op::part(k, l, a, n);
    let (r, w) = (OpKind::Read, OpKind::Write);
    assert!(part(w, 0, 512).depends_on(&part(r, 5, 1)));
    assert!(!part(w, 0, 512).depends_on(&part(w, 512, 1)));
    assert!(!part(r, 0, 512).depends_on(&part(r, 5, 1)));
    assert!(!part(w, 5, 1).depends_on(&Op::part(w, ObjId(8), 5, 1)));
    assert_eq!(part(w, 0x200, 0x200).part_of(), Some((l, 0x200, 0x200)));
    // Keys past 2^32 all share the last key.
    assert!(part(w, 1 << 40, 1).depends_on(&part(w, 1 << 41, 1)));
    let word = Op {
        kind: r,
        obj: l,
        arg: Op::LOCK_WORD,
    };
    assert!(!word.depends_on(&part(w, 0, 1)) && !part(w, 0, 1).depends_on(&word));
    assert!(Op::new(r, l).depends_on(&part(w, 0, 1)));
    assert!(!Op::new(r, l).depends_on(&part(r, 0, 1)));
    for k in [OpKind::Lock, OpKind::TryLock, OpKind::Unlock, OpKind::Write] {
        assert!(Op::new(k, l).depends_on(&part(r, 0, 1)), "{k:?}");
        assert!(part(r, 0, 1).depends_on(&Op::new(k, l)), "{k:?}");
        assert!(word.depends_on(&Op::new(k, l)), "{k:?}");
    }
}
