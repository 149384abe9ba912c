//! Logic tests of the stepper and the view models on the shipped 2019 PMD missed-wakeup trace
//! (no window, no GPU).

use sim_core::sim::{RunEnd, ViolationKind};
use sim_gui::session::{StepKind, Stepper};
use sim_gui::view::{mappings, threads, waitfor, waitfor::NodeMark, waitqueues};

mod common;
use common::{TRACE, bug_schedule};

#[test]
fn the_explore_schedule_reaches_the_lost_wakeup_the_locked_entry_and_scrubs_exactly() {
    let bug = bug_schedule();
    let mut st = Stepper::open(TRACE, 0).unwrap();
    st.load_schedule(&bug).unwrap();
    assert_eq!(
        st.schedule_string(),
        bug,
        "a loaded schedule saves as itself"
    );
    let snap = st.snapshot();
    let Some(RunEnd::Violation(v)) = &snap.end else {
        panic!("the run did not end in a violation: {:?}", snap.end)
    };
    assert_eq!(v.kind, ViolationKind::LostWakeup);
    // t2 sleeps with key {mapping, 0} while t1's wake-up used {mapping, 5} and reached nobody.
    let qs = waitqueues::build(snap);
    let sleeper = qs
        .iter()
        .flat_map(|q| &q.waiters)
        .find(|w| w.task == "t2")
        .expect("t2 waits on a wait queue");
    assert_eq!(sleeper.key, "{0x1, 0x0}");
    assert!(sleeper.exclusive);
    assert_eq!(sleeper.other_keys_woken.len(), 1);
    assert!(sleeper.other_keys_woken[0].starts_with("{0x1, 0x5} by t1"));
    assert!(qs.iter().any(|q| {
        q.last_wake
            .as_deref()
            .is_some_and(|w| w.contains("{0x1, 0x5}") && w.ends_with("woke nobody"))
    }));
    // The wait-for view names t2 as the sleeper nobody can wake.
    let g = waitfor::build(snap);
    let t2 = g.nodes.iter().find(|n| n.name == "t2").unwrap();
    assert_eq!(t2.mark, NodeMark::Unwakeable);
    assert!(g.problem.as_deref().unwrap().starts_with("lost-wakeup"));
    assert!(
        st.replay_command().starts_with("pmsim replay ")
            && st
                .replay_command()
                .ends_with(&format!("--schedule '{bug}'"))
    );

    // At the sleep the PTE entry is locked, and back and scrub are exact.
    let end = st.cursor();
    let end_log = st.event_log();
    // Scrub to the start, then run to t2's prepare_to_wait along the loaded path.
    st.goto(0);
    assert_eq!(st.cursor(), 0);
    assert_eq!(st.path_len(), end);
    loop {
        st.run_to(StepKind::Sleep, 1000);
        let t2 = threads::build(st.snapshot());
        if t2.iter().any(|t| t.name == "t2" && t.sleeps_on.is_some()) || st.cursor() == end {
            break;
        }
    }
    assert!(st.cursor() < end, "t2 went to sleep before the end");
    let files = mappings::build(st.snapshot());
    let rows = files[0]
        .entries
        .as_ref()
        .expect("i_pages is free while t2 sleeps");
    let locked: Vec<_> = rows.iter().filter(|r| r.locked).collect();
    assert_eq!(locked.len(), 1, "{rows:?}");
    assert_eq!((locked[0].first, locked[0].order), (5, "PTE"));
    assert!(locked[0].flags().contains("LOCKED"));
    // Back one step and forward again: the same state (re-execution is exact).
    let here = st.cursor();
    let log_here = st.event_log();
    assert!(st.back());
    assert_eq!(st.cursor(), here - 1);
    st.goto(here);
    assert_eq!(st.event_log(), log_here);
    st.goto(end);
    assert_eq!(st.event_log(), end_log);
}

/// "Run to next wake_up" stops at every wake-up, also one that reaches nobody (its footprint
/// reads the queue): here the run's first, which finds nobody queued.
#[test]
fn run_to_wake_stops_at_a_wake_up_that_reaches_nobody() {
    use sim_core::platform::OpKind;
    let bug = bug_schedule();
    let mut st = Stepper::open(TRACE, 0).unwrap();
    st.load_schedule(&bug).unwrap();
    st.goto(0);
    st.run_to(StepKind::Wake, 1000);
    let log = st.event_log();
    let last = log.events.last().expect("a step ran");
    assert_eq!(last.op.kind, OpKind::Wake, "{last:?}");
    let snap = st.snapshot();
    assert!(snap.end.is_none(), "stopped before the end");
    assert!(
        waitqueues::build(snap).iter().any(|q| q
            .last_wake
            .as_deref()
            .is_some_and(|w| w.ends_with("woke nobody"))),
        "the wake-up reached nobody"
    );
}

#[test]
fn a_bad_schedule_and_a_bad_trace_are_clear_errors() {
    let mut st = Stepper::open(TRACE, 0).unwrap();
    let e = st.load_schedule("9:nonsense").unwrap_err();
    assert!(e.starts_with("schedule:"), "{e}");
    let e = match Stepper::open("/nonexistent.trace", 0) {
        Err(e) => e,
        Ok(_) => panic!("opened a missing file"),
    };
    assert!(e.contains("/nonexistent.trace"), "{e}");
    drop(st);
    let bad = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../traces/malformed/09_unknown_op.trace"
    );
    let e = match Stepper::open(bad, 0) {
        Err(e) => e,
        Ok(_) => panic!("opened a malformed trace"),
    };
    assert!(e.contains("09_unknown_op.trace:"), "{e}");
    assert!(e.contains(": error: "), "{e}");
}

/// README.md's GUI section shows a literal schedule; it must still reproduce the race (it
/// changes whenever the steps of a fault change, and then this names the schedule to use).
#[test]
fn the_readme_schedule_still_reproduces_the_lost_wakeup() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let gui = readme
        .split("\n## ")
        .find(|s| s.starts_with("The GUI"))
        .expect("README.md has a `## The GUI` section");
    let lit = gui
        .split("--schedule '")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .expect("the GUI section shows a `--schedule '...'` command");
    // Derived before the stepper opens (both run simulations on this thread).
    let now = bug_schedule();
    let mut st = Stepper::open(TRACE, 0).unwrap();
    let loaded = st.load_schedule(lit);
    let end = st.snapshot().end.clone();
    assert!(
        loaded.is_ok()
            && matches!(&end, Some(RunEnd::Violation(v)) if v.kind == ViolationKind::LostWakeup),
        "README.md's GUI schedule {lit} no longer reproduces the lost wake-up ({loaded:?}, run \
         end {end:?}); `pmsim explore traces/format/pmd_missed_wakeup.trace` now prints {now}: \
         put that in README.md (and retake the screenshots)"
    );
}
