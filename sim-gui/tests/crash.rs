//! The crash-points view: crashcheck computed in process on the shipped journal-no-fence crash
//! trace, its failing point and witness in the window (egui_kittest, no GPU), and selecting a
//! point scrubs the stepper to the step the point precedes.

use clap::Parser;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use sim_gui::app::{GuiApp, Tab};
use sim_gui::cli::{Args, load};
use sim_gui::crashrun::crashcheck;

const TRACE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../traces/crash/journal-no-fence.trace"
);

fn has(h: &Harness<'_, GuiApp>, text: &str) -> bool {
    h.query_all_by_label_contains(text).next().is_some()
}

#[test]
fn without_the_bug_every_image_passes_and_with_it_a_point_fails_with_a_witness() {
    let clean = crashcheck(TRACE, &[], 2, 4096).unwrap();
    assert!(clean.run_failed.is_none());
    assert!(clean.points.len() >= 2, "{:?}", clean.points.len());
    assert!(clean.points.iter().all(|p| !p.images.is_empty()));
    assert!(
        clean.first_failing().is_none(),
        "the trace is clean without its bug"
    );

    let bug = vec!["journal-no-fence".to_string()];
    let run = crashcheck(TRACE, &bug, 2, 4096).unwrap();
    let p = run
        .first_failing()
        .expect("a point fails with journal-no-fence");
    let w = p
        .witness
        .as_ref()
        .expect("its first failing image has a witness");
    assert_eq!(w.violation.kind, "mount", "{:?}", w.violation);
    assert!(!w.minimal.is_empty());
    assert!(
        w.persisted.iter().any(|l| l.region.contains("inode table")),
        "{:?}",
        w.persisted
    );
    // The witness's stores are the trace's threads' (or the setup's).
    assert!(
        w.persisted
            .iter()
            .flat_map(|l| &l.stores)
            .any(|(_, t, line)| t == "w" && *line > 0)
    );
    // Each image's verdict is the library's: the witness's image is one of the failing rows.
    let img = &p.images[w.image as usize];
    assert!(img.verdict.as_ref().unwrap_err().starts_with("mount: "));
}

#[test]
fn the_window_shows_the_failing_point_and_its_witness_and_selecting_a_point_scrubs() {
    let args = Args::try_parse_from([
        "pmsim-gui",
        TRACE,
        "--crashcheck",
        "--bug",
        "journal-no-fence",
        "--view",
        "crash-points",
    ])
    .unwrap();
    let app = load(&args).unwrap();
    let failing = app.crash.as_ref().unwrap().first_failing().unwrap().clone();
    assert_eq!(
        app.crash_selected,
        Some(failing.index),
        "opens on the failing point"
    );
    let mut h = Harness::builder()
        .with_size(egui::vec2(1400.0, 1000.0))
        .build_ui_state(|ui, app: &mut GuiApp| app.show(ui), app);
    h.run();
    assert_eq!(h.state().tab, Tab::CrashPoints);
    assert!(has(&h, "FAILING"));
    assert!(has(&h, "witness"));
    assert!(has(&h, "FAILS mount"));
    assert!(has(&h, "inode table"));
    assert!(has(&h, "smallest failing subset"));
    // The stepper is at the failing point: the thread's next step is the fence it precedes.
    let at_point = |h: &Harness<'_, GuiApp>, p: &sim_gui::crashrun::PointRow| {
        let st = h.state().stepper.as_ref().unwrap();
        assert_eq!(st.cursor(), p.step);
        if p.line > 0 {
            assert!(
                st.runnable()
                    .iter()
                    .any(|r| r.name == p.thread && r.op == p.what && r.line == p.line),
                "point {}: {:?}",
                p.index,
                st.runnable()
            );
        } else {
            assert!(st.runnable().is_empty(), "the end of the run");
        }
    };
    at_point(&h, &failing);
    // Click another point: the stepper moves to it.
    let other = h.state().crash.as_ref().unwrap().points[0].clone();
    assert_ne!(other.step, failing.step);
    h.get_by_label_contains(&format!("point {} (step {})", other.index, other.step))
        .click();
    h.run();
    assert_eq!(h.state().crash_selected, Some(other.index));
    at_point(&h, &other);
    // Step off the path, then select the failing point again: the schedule is reloaded.
    h.key_press(egui::Key::ArrowLeft);
    h.run();
    h.get_by_label_contains(&format!("point {} (step {})", failing.index, failing.step))
        .click();
    h.run();
    at_point(&h, &failing);
}
