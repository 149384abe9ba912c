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

mod common;

/// Where to put the scrubber.
enum At {
    End,
    /// The step at which t2 has gone to sleep on the wait table.
    T2Asleep,
}

fn shot(tab: Tab, at: At, name: &str) {
    let bug = common::bug_schedule();
    let mut st = Stepper::open(TRACE, 0).unwrap();
    st.load_schedule(&bug).unwrap();
    if let At::T2Asleep = at {
        let end = st.cursor();
        let asleep = (0..=end).find(|&n| {
            st.goto(n);
            st.snapshot()
                .tasks
                .iter()
                .any(|t| t.name == "t2" && t.wait_key.is_some())
        });
        st.goto(asleep.expect("t2 sleeps"));
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
    shot(Tab::Mappings, At::T2Asleep, "pmd_missed_wakeup_mappings");
}

#[test]
fn snapshot_wrong_key_at_the_end() {
    shot(Tab::WaitQueues, At::End, "pmd_missed_wakeup_wait_queues");
}

#[test]
fn snapshot_wait_for_problem() {
    shot(Tab::WaitFor, At::End, "pmd_missed_wakeup_wait_for");
}
