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
