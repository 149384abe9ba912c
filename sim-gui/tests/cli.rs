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
    // --crashcheck needs a trace, a known bug mode and k >= 1; --seed is a number.
    for (args, says) in [
        (vec!["--crashcheck"], "<TRACE>"),
        (
            vec![trace, "--crashcheck", "--bug", "nope"],
            "--bug nope: unknown bug mode",
        ),
        (
            vec![trace, "--crashcheck", "--k", "0"],
            "--k must be at least 1",
        ),
        (vec![trace, "--k", "3"], "--crashcheck"),
        (vec![trace, "--seed", "zz"], "is not a seed"),
    ] {
        let out = gui().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
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
    use clap::Parser;
    let args = sim_gui::cli::Args::try_parse_from([
        "pmsim-gui",
        "--events",
        &path.to_string_lossy(),
        "--view",
        "events",
    ])
    .unwrap();
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

/// `pmsim replay TRACE --schedule S --events FILE` (the real writer of event logs), then
/// `pmsim-gui TRACE --events FILE`: the run is re-executed along the log and can be stepped
/// back and forth; a log of another run is a clear error.
#[test]
fn an_events_file_with_its_trace_is_steppable() {
    use clap::Parser;
    let trace = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../traces/format/pmd_missed_wakeup.trace"
    );
    let sched = sim_gui::session::explore_failure(trace, &[])
        .unwrap()
        .expect("pmsim explore finds the missed wake-up");
    let dir = std::env::temp_dir().join(format!("pmsim-gui-step-events-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bug.events");
    let path_s = path.to_string_lossy().into_owned();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = pmsim::run(
        [
            "pmsim",
            "replay",
            trace,
            "--schedule",
            &sched,
            "--events",
            &path_s,
        ]
        .map(Into::into),
        &mut pmsim::Io {
            out: &mut out,
            err: &mut err,
            progress: false,
        },
    );
    assert_eq!(
        code,
        1,
        "the replay finds the violation: {}",
        String::from_utf8_lossy(&err)
    );
    let log = sim_core::events::EventLog::from_bincode(&std::fs::read(&path).unwrap()).unwrap();
    assert!(log.events.len() > 10);

    // The logged run's seed is the schedule's (`2:SEED:...`).
    let seed = format!("0x{}", sched.split(':').nth(1).unwrap());
    let args = sim_gui::cli::Args::try_parse_from([
        "pmsim-gui",
        trace,
        "--events",
        &path_s,
        "--seed",
        &seed,
    ])
    .unwrap();
    let mut app = sim_gui::cli::load(&args).unwrap();
    let st = app.stepper.as_mut().unwrap();
    let steps = st.path_len();
    assert!(
        steps > 10 && steps < log.events.len(),
        "the setup's events are not steps"
    );
    assert_eq!(st.cursor(), steps);
    assert_eq!(st.event_log(), log, "the re-executed run is the logged one");
    assert_eq!(st.schedule_string(), sched);
    assert!(matches!(
        st.snapshot().end,
        Some(sim_core::sim::RunEnd::Violation(_))
    ));
    // Step back and scrub along the log.
    assert!(st.back());
    assert_eq!(st.cursor(), steps - 1);
    let setup = log
        .events
        .iter()
        .take_while(|e| log.tasks[e.task.0 as usize] == "setup")
        .count();
    st.goto(3);
    assert_eq!(st.event_log().events[..], log.events[..setup + 3]);
    st.goto(steps);
    assert_eq!(st.event_log(), log);
    drop(app);

    // --at puts the cursor inside the log.
    let args =
        sim_gui::cli::Args::try_parse_from(["pmsim-gui", trace, "--events", &path_s, "--at", "5"])
            .unwrap();
    let app = sim_gui::cli::load(&args).unwrap();
    assert_eq!(app.stepper.as_ref().unwrap().cursor(), 5);
    drop(app);

    // The log on another trace: the first event that does not fit is named.
    let other = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../traces/crash/journal-no-fence.trace"
    );
    let args =
        sim_gui::cli::Args::try_parse_from(["pmsim-gui", other, "--events", &path_s]).unwrap();
    let e = match sim_gui::cli::load(&args) {
        Err(e) => e,
        Ok(_) => panic!("a log of another trace loaded"),
    };
    assert!(e.starts_with("events: "), "{e}");
    assert!(e.contains("event "), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
