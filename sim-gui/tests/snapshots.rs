//! Snapshot images of the window (egui_kittest + wgpu), only with `--features snapshots`: they
//! need a GPU or a software Vulkan adapter (Debian's mesa-vulkan-drivers gives lavapipe). The
//! images live in `tests/snapshots/`; `UPDATE_SNAPSHOTS=1` rewrites them.
#![cfg(feature = "snapshots")]

use egui_kittest::Harness;
use sim_gui::app::{GuiApp, Tab};
use sim_gui::session::Stepper;

/// Relative (tests run in the package directory), so that the path the window shows is the
/// same on every checkout.
const TRACE: &str = "../traces/format/pmd_missed_wakeup.trace";
const BUG: &str = "2:a706dd2f4d197e6f:35:2:mqmplVZVWZWJ";

fn shot(tab: Tab, at: Option<usize>, name: &str) {
    let mut st = Stepper::open(TRACE, 0).unwrap();
    st.load_schedule(BUG).unwrap();
    if let Some(n) = at {
        st.goto(n);
    }
    let mut app = GuiApp::default();
    app.set_stepper(st);
    app.tab = tab;
    let mut h = Harness::builder()
        .with_size(egui::vec2(1400.0, 900.0))
        .build_ui_state(|ui, app: &mut GuiApp| app.show(ui), app);
    h.run();
    h.snapshot(name);
}

#[test]
fn snapshot_locked_entry_while_t2_sleeps() {
    shot(Tab::Mappings, Some(32), "pmd_missed_wakeup_mappings");
}

#[test]
fn snapshot_wrong_key_at_the_end() {
    shot(Tab::WaitQueues, None, "pmd_missed_wakeup_wait_queues");
}

#[test]
fn snapshot_wait_for_problem() {
    shot(Tab::WaitFor, None, "pmd_missed_wakeup_wait_for");
}
