//! Snapshot images of the window (egui_kittest + wgpu), rendered with lavapipe, Mesa's
//! software Vulkan driver (Debian: mesa-vulkan-drivers; `.ci/run` installs it). The images live
//! in `tests/snapshots/`; `UPDATE_SNAPSHOTS=1` rewrites them. They were taken with lavapipe, so
//! they are compared only where lavapipe is installed: elsewhere (a machine with only a GPU
//! driver, whose pixels differ, or none) each test says it skipped the image and checks the
//! rest.

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
    if lavapipe_installed() {
        h.snapshot(name);
    } else {
        eprintln!(
            "{name}: image not compared: no lavapipe here (install mesa-vulkan-drivers; the \
             reference images were rendered with it)"
        );
    }
}

/// Whether Mesa's software Vulkan driver is installed (its ICD file), which the reference images
/// were rendered with.
fn lavapipe_installed() -> bool {
    ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"]
        .iter()
        .any(|d| {
            std::fs::read_dir(d).is_ok_and(|r| {
                r.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("lvp_icd"))
            })
        })
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
