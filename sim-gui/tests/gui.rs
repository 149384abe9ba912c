//! The window's logic under egui_kittest (no GPU, no display): load the shipped PMD
//! missed-wakeup trace, step through the bug schedule by clicking the thread buttons, and check
//! what the views show: the locked PTE entry, the sleeping waiter with its wrong key, and the
//! highlighted wait-for problem.

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use sim_gui::app::{GuiApp, Tab};
use sim_gui::session::Stepper;

mod common;
use common::{TRACE, bug_schedule, seed_of};

fn harness(app: GuiApp) -> Harness<'static, GuiApp> {
    Harness::builder()
        .with_size(egui::vec2(1400.0, 1000.0))
        .build_ui_state(|ui, app: &mut GuiApp| app.show(ui), app)
}

fn has(h: &Harness<'_, GuiApp>, text: &str) -> bool {
    h.query_all_by_label_contains(text).next().is_some()
}

#[test]
fn clicking_through_the_bug_schedule_shows_locked_entry_wrong_key_and_lost_wakeup() {
    // The thread of each step of the bug schedule (then back to the start: the clicks below
    // take the steps themselves). One stepper per test: building a trace's image is the slow
    // part of a debug build.
    let bug = bug_schedule();
    let mut st = Stepper::open(TRACE, seed_of(&bug)).unwrap();
    st.load_schedule(&bug).unwrap();
    let names = st.snapshot().tasks.clone();
    let path: Vec<String> = st
        .path()
        .iter()
        .map(|&t| names[t as usize].name.clone())
        .collect();
    st.goto(0);
    let mut app = GuiApp::default();
    app.set_stepper(st);
    let mut h = harness(app);
    h.run();
    let mut saw_locked_entry = false;
    for (i, name) in path.iter().enumerate() {
        h.get_by_label_contains(&format!("> {name}:")).click();
        h.run();
        assert_eq!(h.state().stepper.as_ref().unwrap().cursor(), i + 1);
        let t2_asleep = h
            .state()
            .stepper
            .as_ref()
            .unwrap()
            .snapshot()
            .tasks
            .iter()
            .any(|t| t.name == "t2" && t.wait_key.is_some());
        if t2_asleep && !saw_locked_entry {
            // t2 has just queued on the wait table: t1 holds the PTE entry at index 5.
            h.get_by_label("Mappings").click();
            h.run();
            assert!(
                has(&h, "PTE LOCKED"),
                "the mappings view shows the locked entry"
            );
            assert!(has(&h, "0x5-0x5"));
            saw_locked_entry = true;
            h.get_by_label("Threads").click();
            h.run();
            assert!(has(&h, "asleep on dax_wait_table#"));
        }
    }
    assert!(saw_locked_entry, "t2 slept while t1 held the entry");
    assert!(
        h.query_all_by_label_contains("> t").next().is_none(),
        "nobody can move at the end"
    );
    assert!(has(&h, "VIOLATION lost-wakeup"));

    h.get_by_label("Wait queues").click();
    h.run();
    assert!(has(&h, "waiter t2 key {0x1, 0x0} (exclusive)"));
    assert!(has(&h, "not its key: woken {0x1, 0x5} by t1"));
    assert!(has(&h, "key {0x1, 0x5} (WAKE_NEXT) by t1 -> woke nobody"));

    h.get_by_label("Wait-for graph").click();
    h.run();
    assert!(has(&h, "PROBLEM: lost-wakeup"));
    assert!(has(&h, "t2 (asleep) [UNWAKEABLE]"));

    // Save: the clicked path is the explore schedule.
    h.get_by_label("Save schedule").click();
    h.run();
    let saved = h.state().saved.clone().unwrap();
    assert_eq!(saved.0, bug);
    assert!(saved.1.contains(&format!("--schedule '{bug}'")));
}

#[test]
fn keys_step_back_and_forward_tabs_switch_and_a_typed_schedule_loads() {
    let bug = bug_schedule();
    let mut app = GuiApp::default();
    app.set_stepper(Stepper::open(TRACE, 0).unwrap());
    let mut h = harness(app);
    h.run();
    h.key_press(egui::Key::Num1);
    h.run();
    h.key_press(egui::Key::Num1);
    h.run();
    assert_eq!(h.state().stepper.as_ref().unwrap().cursor(), 2);
    h.key_press(egui::Key::ArrowLeft);
    h.run();
    assert_eq!(h.state().stepper.as_ref().unwrap().cursor(), 1);
    h.key_press(egui::Key::ArrowRight);
    h.run();
    assert_eq!(h.state().stepper.as_ref().unwrap().cursor(), 2);
    for t in Tab::ALL {
        h.get_by_label(t.label()).click();
        h.run();
        assert_eq!(h.state().tab, t);
    }
    h.get_by_label("Crash points").click();
    h.run();
    assert!(has(&h, "no crashcheck run loaded"));

    // A schedule typed in loads, and the scrubber goes to its end.
    h.state_mut().schedule_text = bug.clone();
    h.get_by_label("Load schedule").click();
    h.run();
    let st = h.state().stepper.as_ref().unwrap();
    assert_eq!(st.cursor(), st.path_len());
    assert_eq!(st.schedule_string(), bug);
    assert!(has(&h, "VIOLATION lost-wakeup"));
}
