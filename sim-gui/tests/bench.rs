//! The frame benchmark's parts on a small input (the benchmark itself is `cargo bench -p
//! sim-gui`; no time is asserted here): the long trace parses and runs clean through the
//! stepper, and `bench_frames` draws every view.

use sim_core::sim::RunEnd;
use sim_gui::app::{GuiApp, Tab};
use sim_gui::bench::{bench_frames, long_trace, report};
use sim_gui::session::{StepKind, Stepper};

#[test]
fn the_long_trace_runs_clean_and_every_view_is_drawn() {
    let dir = std::env::temp_dir().join(format!("pmsim-gui-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("long.trace");
    std::fs::write(&path, long_trace(4)).unwrap();
    let mut st = Stepper::open(&path.to_string_lossy(), 0).unwrap();
    st.run_to(StepKind::End, usize::MAX);
    assert!(matches!(st.snapshot().end, Some(RunEnd::Done)));
    assert!(st.runnable().is_empty());
    // About 31 steps per round and thread (the benchmark's 5200 rounds give over 100k events).
    let per_round = st.path_len() / 8;
    assert!((20..=40).contains(&per_round), "{} steps", st.path_len());
    let mut app = GuiApp::default();
    app.set_stepper(st);
    let t = bench_frames(&mut app, 2);
    assert_eq!(
        t.iter().map(|v| v.tab).collect::<Vec<_>>(),
        Tab::ALL.to_vec()
    );
    let r = report(&app, &t, 2);
    assert!(r.contains("events loaded"), "{r}");
    assert!(r.contains("crash-points"), "{r}");
    std::fs::remove_dir_all(&dir).unwrap();
}
