//! The binary's command line, which must work without a display: `--help`, and bad input
//! refused with a clear message and exit 2 before any window opens.

use std::process::Command;

fn gui() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pmsim-gui"))
}

#[test]
fn help_works_without_a_display() {
    let out = gui()
        .arg("--help")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Usage: pmsim-gui"), "{text}");
    assert!(text.contains("--schedule"));
    assert!(text.contains("--events"));
}

#[test]
fn bad_inputs_exit_2_with_a_position() {
    let bad = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../traces/malformed/09_unknown_op.trace"
    );
    let out = gui().arg(bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("09_unknown_op.trace:"), "{err}");
    let out = gui().arg("/nonexistent.trace").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let trace = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../traces/format/pmd_missed_wakeup.trace"
    );
    let out = gui().args([trace, "--schedule", "1:zz"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("schedule:"));
    let out = gui()
        .args([trace, "--schedule", "1:0:0", "--events", "x"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "--schedule and --events conflict"
    );
    let out = gui()
        .args(["--events", "/nonexistent.bin"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn an_events_file_loads_into_the_timeline_without_a_trace() {
    use sim_core::events::{EventLog, LogEvent};
    use sim_core::platform::{ObjId, Op, OpKind, TaskId};
    let log = EventLog {
        tasks: vec!["t1".into()],
        objects: vec!["i_pages".into()],
        sites: vec![],
        events: vec![LogEvent {
            step: 0,
            task: TaskId(0),
            op: Op::new(OpKind::Lock, ObjId(0)),
            time: 5,
            line: 3,
        }],
        hash: 1,
    };
    let dir = std::env::temp_dir().join(format!("pmsim-gui-events-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("run.events");
    std::fs::write(&path, log.to_bincode().unwrap()).unwrap();
    let args = sim_gui::cli::Args {
        trace: None,
        schedule: None,
        events: Some(path.to_string_lossy().into_owned()),
        seed: 0,
        at: None,
        view: sim_gui::app::Tab::Events,
    };
    let app = sim_gui::cli::load(&args).unwrap();
    assert_eq!(app.events.as_ref(), Some(&log));
    assert_eq!(app.tab, sim_gui::app::Tab::Events);
    // Not an event log: a clear error.
    std::fs::write(&path, b"not bincode").unwrap();
    let e = match sim_gui::cli::load(&args) {
        Err(e) => e,
        Ok(_) => panic!("loaded garbage"),
    };
    assert!(e.contains("not a pmsim event log"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
