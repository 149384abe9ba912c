//! The view models on hand-made snapshots and logs: decoding of DAX entries, lock holders and
//! waiters, wait-for cycles, and the timeline of a 100k-event log (no window).

use sim_core::events::{EventLog, LogEvent};
use sim_core::platform::{ObjId, Op, OpKind, TaskId};
use sim_core::sim::TaskReport;
use sim_core::sim::inspect::{ObjView, ObjectView};
use sim_gui::session::Snapshot;
use sim_gui::view::{locks, mappings, timeline, waitfor};
use sim_mm::dax_entry::{DAX_LOCKED, DAX_PMD, DAX_ZERO_PAGE, dax_make_entry};
use sim_mm::xarray::{PAGECACHE_TAG_DIRTY, PAGECACHE_TAG_TOWRITE, XaItem};

fn task(id: u32, name: &str, status: &str) -> TaskReport {
    TaskReport {
        id,
        name: name.into(),
        status: status.into(),
        next: "lock m#0".into(),
        line: 0,
        holds: vec![],
        wait_key: None,
        path: vec![],
        last_wake: None,
    }
}

#[test]
fn dax_entries_decode_into_order_lock_zero_and_marks() {
    let pmd = XaItem {
        index: 512,
        order: 9,
        entry: dax_make_entry(0x100200, DAX_PMD | DAX_LOCKED),
        marks: (1 << PAGECACHE_TAG_DIRTY.0) | (1 << PAGECACHE_TAG_TOWRITE.0),
    };
    let r = mappings::entry_row(&pmd);
    assert_eq!((r.first, r.last), (512, 1023));
    assert_eq!(r.flags(), "PMD LOCKED DIRTY TOWRITE");
    assert_eq!(r.pfn, Some(0x100200));
    assert_eq!(r.class(), mappings::EntryClass::Locked);
    let zero = XaItem {
        index: 3,
        order: 0,
        entry: dax_make_entry(0, DAX_ZERO_PAGE),
        marks: 0,
    };
    let r = mappings::entry_row(&zero);
    assert_eq!(r.flags(), "PTE ZERO");
    assert_eq!(r.pfn, None);
    assert_eq!(r.class(), mappings::EntryClass::Zero);
}

#[test]
fn locks_show_holders_and_blocked_waiters_and_hide_idle_locks() {
    let snap = Snapshot {
        tasks: vec![task(0, "a", "runnable"), task(1, "b", "blocked")],
        next_obj: vec![None, Some(0)],
        objects: vec![
            ObjectView {
                id: 0,
                name: "invalidate_lock",
                state: ObjView::RwSem {
                    readers: vec![],
                    writer: Some(0),
                    queued: vec![],
                },
            },
            ObjectView {
                id: 1,
                name: "i_pages",
                state: ObjView::Lock {
                    class: sim_core::LockClass::Spin,
                    holder: None,
                },
            },
        ],
        ..Snapshot::default()
    };
    let rows = locks::build(&snap, false);
    assert_eq!(rows.len(), 1, "a free spinlock nobody waits for is hidden");
    assert_eq!(rows[0].lock, "invalidate_lock#0");
    assert_eq!(rows[0].holders, vec!["a (write)"]);
    assert_eq!(rows[0].waiters, vec!["b"]);
    assert_eq!(locks::build(&snap, true).len(), 2);
}

#[test]
fn a_wait_for_cycle_is_marked() {
    let snap = Snapshot {
        tasks: vec![
            task(0, "a", "blocked"),
            task(1, "b", "blocked"),
            task(2, "c", "runnable"),
        ],
        wait_for: vec![(0, 1), (1, 0)],
        ..Snapshot::default()
    };
    let g = waitfor::build(&snap);
    let marks: Vec<_> = g.nodes.iter().map(|n| n.mark).collect();
    assert_eq!(
        marks,
        vec![
            waitfor::NodeMark::InCycle,
            waitfor::NodeMark::InCycle,
            waitfor::NodeMark::Normal
        ]
    );
    assert!(g.edges.iter().all(|e| e.in_cycle));
    assert_eq!(g.problem.as_deref(), Some("wait-for cycle among a, b"));
    // Without the back edge: no problem.
    let snap = Snapshot {
        wait_for: vec![(0, 1)],
        ..snap
    };
    assert_eq!(waitfor::build(&snap).problem, None);
}

#[test]
fn the_timeline_of_a_100k_event_log_builds_rows_on_demand() {
    let n = 100_000u32;
    let log = EventLog {
        tasks: vec!["t0".into(), "t1".into()],
        objects: vec!["i_pages".into()],
        sites: vec![],
        events: (0..n)
            .map(|i| LogEvent {
                step: i,
                task: TaskId(i % 2),
                op: Op::new(OpKind::Lock, ObjId(0)),
                time: i as u64 * 10,
                line: 7,
            })
            .collect(),
        hash: 0,
    };
    let r = timeline::row(&log, 99_999).unwrap();
    assert_eq!(r.task, "t1");
    assert_eq!(r.what, "Lock i_pages#0");
    assert_eq!(r.time_ns, 999_990);
    assert!(timeline::row(&log, n as usize).is_none());
    let lanes = timeline::lanes(&log);
    assert_eq!(lanes.len(), 2);
    assert_eq!(lanes[0].1.len() + lanes[1].1.len(), n as usize);
}
