//! The command line never lies, destroys or panics (issue 7, points 6-11): each test names the
//! point it checks. Most run `pmsim::run` in-process; the pipe and signal cases spawn the binary.

mod common;
use common::{pmsim_in_process as pmsim, root};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pmsim-trust-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

// ---- point 6: replay refuses what does not fit; a search that ran nothing says so ----

#[test]
fn replay_refuses_a_schedule_too_short_or_too_long_for_the_run() {
    // abba needs 2 choices before its deadlock or 3 to finish.
    let (code, out, err) = pmsim(&["replay", "--toy", "abba", "--schedule", "1:0:0"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty() && err.contains("too short"), "{err}");
    let (code, out, err) = pmsim(&["replay", "--toy", "abba", "--schedule", "1:0:01010101"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty() && err.contains("too long"), "{err}");
    // The exact schedule still replays.
    let (code, out, _) = pmsim(&["replay", "--toy", "abba", "--schedule", "1:0:01"]);
    assert_eq!(code, 1);
    assert!(out.contains("VIOLATION deadlock"));
}

#[test]
fn replay_refuses_flags_it_would_ignore() {
    for flag in [
        &["--runs", "3"][..],
        &["--seed", "7"],
        &["--budget-secs", "5"],
        &["--keep-going"],
    ] {
        let mut args = vec!["replay", "--toy", "abba", "--schedule", "1:0:01"];
        args.extend_from_slice(flag);
        let (code, out, err) = pmsim(&args);
        assert_eq!(code, 2, "{flag:?}: {out}{err}");
        assert!(err.contains(flag[0]), "{flag:?}: {err}");
    }
}

#[test]
fn check_determinism_refuses_flags_it_would_ignore() {
    for flag in [
        &["--runs", "3"][..],
        &["--budget-secs", "5"],
        &["--keep-going"],
    ] {
        let mut args = vec!["run", "--toy", "lw3x4", "--check-determinism"];
        args.extend_from_slice(flag);
        let (code, out, err) = pmsim(&args);
        assert_eq!(code, 2, "{flag:?}: {out}{err}");
        assert!(err.contains(flag[0]), "{flag:?}: {err}");
    }
}

#[test]
fn a_search_that_completed_no_run_says_nothing_ran() {
    let (code, out, err) = pmsim(&["explore", "--toy", "abba", "--budget-secs", "0.000000001"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(!out.contains("no violation"), "{out}");
    assert!(err.contains("nothing ran"), "{err}");
}

// ---- point 7: a violation is never hidden by a failed side output ----

#[test]
fn a_failed_event_log_write_still_reports_the_violation() {
    // /proc passes the up-front check (an absent name in a directory) but refuses the file.
    let ev = "/proc/pmsim-trust-test.events";
    let (code, out, err) = pmsim(&[
        "explore",
        "--toy",
        "abba",
        "--strategy",
        "dfs",
        "--events",
        ev,
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("VIOLATION deadlock"), "{out}");
    assert!(out.contains("replay:"), "{out}");
    assert!(
        err.contains("cannot write the event log") && err.contains(ev),
        "{err}"
    );
    // A clean search with a failed write: the report, then exit 2 (an output error).
    let args = [
        "explore",
        "--toy",
        "abba-fixed",
        "--strategy",
        "dfs",
        "--events",
        ev,
    ];
    let (code, out, err) = pmsim(&args);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("no violation"), "{out}");
    assert!(err.contains("cannot write the event log"), "{err}");
}

#[test]
fn check_determinism_writes_the_event_log() {
    let d = scratch("det");
    let ev = d.join("det.events");
    let args = [
        "run",
        "--toy",
        "lw3x4",
        "--check-determinism",
        "--json",
        "--events",
        &s(&ev),
    ];
    let (code, out, err) = pmsim(&args);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let log = sim_core::events::EventLog::from_bincode(&std::fs::read(&ev).expect("written"))
        .expect("an event log");
    assert_eq!(v["hash"], format!("{:016x}", log.hash));
    assert_eq!(v["events"], log.events.len());
    std::fs::remove_dir_all(&d).ok();
}

// ---- point 8: messages match reality ----

#[test]
fn refusals_name_what_is_missing_and_nothing_that_exists() {
    // Every statement of the format runs now: the files example is executed, not refused.
    let trace = s(&root().join("traces/format/files.trace"));
    let (code, out, err) = pmsim(&["run", &trace]);
    assert!(matches!(code, 0 | 1), "{out}{err}");
    assert!(!err.contains("not built yet"), "{err}");
    // Every bug mode of the catalogue is implemented (torn-inode-size was the last planned
    // one): a trace naming it runs without a refusal or a stale claim.
    let d = scratch("refusals");
    let named = d.join("named.trace");
    std::fs::write(&named, "pmsim-trace 1\nbug torn-inode-size\nt1 yield\n").unwrap();
    let (code, out, err) = pmsim(&["run", &s(&named)]);
    assert_eq!(code, 0, "{out}{err}");
    for stale in [
        "memory-management layer and the DAX core, which are not built",
        "GUP (sim-mm), which is not built",
        "media model and memory_failure, not built",
        "machine model and the DAX fault path, which are not built",
        "not built yet",
        "planned",
    ] {
        assert!(!err.contains(stale), "stale claim `{stale}` in {err}");
    }
    let (_, out, _) = pmsim(&["bugs"]);
    assert!(!out.contains(" planned "), "{out}");
    assert!(
        out.contains("trace: pmsim crashcheck traces/crash/torn-inode-size.trace --torn --bug"),
        "{out}"
    );
}

#[test]
fn counts_are_singular_when_one_and_errors_say_error_once() {
    let d = scratch("plural");
    let one = d.join("one.trace");
    std::fs::write(&one, "pmsim-trace 1\nt1 yield\n").unwrap();
    let (code, out, _) = pmsim(&["check-trace", &s(&one)]);
    assert_eq!(code, 0);
    assert!(out.contains("(1 statement, 1 thread)"), "{out}");
    let bad = d.join("bad.trace");
    std::fs::write(&bad, "pmsim-trace 1\nmachine cpus=4097\nt1 yield\n").unwrap();
    for cmd in ["run", "explore", "check-trace"] {
        let (code, _, err) = pmsim(&[cmd, &s(&bad)]);
        assert_eq!(code, 2);
        let first = err.lines().next().unwrap_or("");
        assert_eq!(first.matches("error:").count(), 1, "{cmd}: {err}");
        // The error is at the value, not at the keyword `machine`.
        assert!(first.contains("bad.trace:2:14: error:"), "{cmd}: {err}");
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn the_trace_cpu_limit_is_the_machine_models() {
    let max = sim_core::trace::MAX_CPUS;
    let mut cfg = sim_core::machine::MachineConfig::default();
    assert!(cfg.set("cpus", &max.to_string()).is_ok());
    assert!(cfg.set("cpus", &(max + 1).to_string()).is_err());
}

#[test]
fn seed_accepts_decimal_and_hex() {
    let run = |seed: &str| pmsim(&["explore", "--toy", "lw3x4", "--runs", "20", "--seed", seed]);
    let (c1, dec, _) = run("26");
    let (c2, hex, _) = run("0x1a");
    assert_eq!((c1, c2), (0, 0));
    assert_eq!(dec, hex);
    assert!(dec.contains("seed 0x1a"), "{dec}");
    let (code, _, err) = run("0xzz");
    assert_eq!(code, 2);
    assert!(err.contains("0xzz"), "{err}");
}

#[test]
fn check_trace_print_shows_the_canonical_text() {
    let path = root().join("traces/format/time.trace");
    let (code, out, _) = pmsim(&["check-trace", "--print", &s(&path)]);
    assert_eq!(code, 0);
    let src = std::fs::read_to_string(&path).unwrap();
    let t = sim_core::trace::parse(&src, "t", &Default::default()).unwrap();
    assert_eq!(out, sim_core::trace::print(&t));
}

// ---- point 9: outputs never follow links, replace devices or directories ----

#[test]
fn events_refuses_links_devices_and_directories_and_replaces_regular_files() {
    let d = scratch("targets");
    let target = d.join("precious");
    std::fs::write(&target, b"keep me").unwrap();
    let link = d.join("link.events");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for path in [s(&link), "/dev/null".into(), "/dev/stdout".into(), s(&d)] {
        let args = [
            "explore",
            "--toy",
            "abba",
            "--strategy",
            "dfs",
            "--events",
            &path,
        ];
        let (code, out, err) = pmsim(&args);
        assert_eq!(code, 2, "{path}: {out}{err}");
        assert!(out.is_empty(), "{path}: nothing runs: {out}");
        assert!(err.contains("--events"), "{path}: {err}");
    }
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    use std::os::unix::fs::FileTypeExt;
    let null = std::fs::symlink_metadata("/dev/null").unwrap().file_type();
    assert!(null.is_char_device(), "/dev/null is still a device");
    // An input of the run is never an output.
    let trace = d.join("t.trace");
    std::fs::write(&trace, "pmsim-trace 1\nt1 yield\n").unwrap();
    let (code, _, err) = pmsim(&["run", &s(&trace), "--events", &s(&trace)]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(std::fs::read(&trace).unwrap(), b"pmsim-trace 1\nt1 yield\n");
    std::fs::remove_file(&trace).unwrap();
    // A regular file is replaced; no temporary file stays behind.
    let ev = d.join("x.events");
    std::fs::write(&ev, b"old").unwrap();
    let args = [
        "explore",
        "--toy",
        "abba",
        "--strategy",
        "dfs",
        "--events",
        &s(&ev),
    ];
    assert_eq!(pmsim(&args).0, 1);
    assert_ne!(std::fs::read(&ev).unwrap(), b"old");
    let names: Vec<_> = std::fs::read_dir(&d).unwrap().flatten().collect();
    assert_eq!(names.len(), 3, "precious, link, x.events: {names:?}");
    std::fs::remove_dir_all(&d).ok();
}

// ---- point 10: no panic on any input ----

#[test]
fn huge_or_tiny_numbers_are_errors_not_panics() {
    for b in ["1e300", "18446744073709551615", "inf", "NaN", "-1", "0"] {
        let (code, _, err) = pmsim(&["explore", "--toy", "abba", "--budget-secs", b]);
        assert_eq!(code, 2, "--budget-secs {b}: {err}");
    }
    for p in [
        "read_miss_ns=1e30",
        "tail_probability=2",
        "read_hit_ns=inf",
        "ways=1e20",
    ] {
        let (code, out, err) = pmsim(&["bench", "media", "--media-param", p]);
        assert_eq!(code, 2, "{p}: {out}{err}");
        assert!(out.is_empty(), "{p}: {out}");
    }
    let d = scratch("media");
    let t = d.join("m.trace");
    std::fs::write(&t, "pmsim-trace 1\nmachine read_miss_ns=1e30\nt1 yield\n").unwrap();
    let (code, _, err) = pmsim(&["run", &s(&t)]);
    assert_eq!(code, 2);
    assert!(err.contains("m.trace:2:9: error:"), "{err}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn unbounded_inputs_are_capped() {
    let (code, _, err) = pmsim(&["check-trace", "/dev/zero"]);
    assert_eq!(code, 2);
    assert!(err.contains("limit"), "{err}");
    let (code, _, err) = pmsim(&["replay", "--toy", "abba", "--schedule-file", "/dev/zero"]);
    assert_eq!(code, 2);
    assert!(err.contains("limit"), "{err}");
}

#[test]
fn ranges_past_2_pow_64_are_rejected_with_a_position() {
    let d = scratch("range");
    let t = d.join("r.trace");
    std::fs::write(&t, "pmsim-trace 1\nt1 read /f 0xffffffffffffff00 0x200\n").unwrap();
    let (code, _, err) = pmsim(&["check-trace", &s(&t)]);
    assert_eq!(code, 2);
    assert!(err.contains("r.trace:2:31: error:"), "{err}");
    // Up to 2^64 exactly is a valid range.
    std::fs::write(&t, "pmsim-trace 1\nt1 read /f 0xffffffffffffff00 0x100\n").unwrap();
    assert_eq!(pmsim(&["check-trace", &s(&t)]).0, 0);
    std::fs::remove_dir_all(&d).ok();
}

/// Spawns the binary with its stdout closed before it writes: it must end quietly (no panic
/// message), with an exit code of its own or by the broken pipe, never 101.
#[test]
fn a_closed_stdout_pipe_ends_quietly() {
    // More output than a pipe buffer holds, so the write surely meets the closed pipe.
    let d = scratch("pipe");
    let big = d.join("big.trace");
    let mut text = String::from("pmsim-trace 1\n");
    for i in 0..12_000 {
        text.push_str(&format!("t{} yield\n", i % 3));
    }
    std::fs::write(&big, text).unwrap();
    let big = s(&big);
    for args in [
        vec!["check-trace", "--print", &big],
        vec![
            "check-trace",
            "traces/format/time.trace",
            "traces/format/header.trace",
        ],
        vec!["explore", "--toy", "lost-wakeup"],
        vec!["bugs"],
        vec!["--help"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pmsim"))
            .args(&args)
            .current_dir(root())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        drop(child.stdout.take());
        let mut err = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut err)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            status.code().is_none_or(|c| c <= 3),
            "{args:?}: {status:?} {err}"
        );
    }
    std::fs::remove_dir_all(&d).ok();
}

// ---- point 11: long schedules replay from a file ----

#[test]
fn a_long_failing_schedule_is_written_to_a_file_that_replays() {
    let d = scratch("long");
    let trace = d.join("long.trace");
    let mut text = String::from("pmsim-trace 1\n");
    // Long enough that even the packed (version 2) schedule passes the inline limit.
    for _ in 0..8000 {
        text.push_str("t1 yield\nt2 yield\n");
    }
    std::fs::write(&trace, text).unwrap();
    let ev = d.join("x.events");
    let args = [
        "explore",
        &s(&trace),
        "--strategy",
        "random",
        "--step-limit",
        "14000",
        "--events",
        &s(&ev),
    ];
    let (code, out, err) = pmsim(&args);
    assert_eq!(code, 1, "{out}{err}");
    let replay = out
        .lines()
        .find_map(|l| l.strip_prefix("replay:   pmsim "))
        .expect("a replay line");
    assert!(replay.len() < 500, "a short command: {replay}");
    let file = d.join("x.events.schedule");
    assert!(
        replay.contains(&format!("--schedule-file {}", s(&file))),
        "{replay}"
    );
    let sched = std::fs::read_to_string(&file).unwrap();
    assert!(sched.trim().len() > 2000);
    // The printed command replays the failure.
    let argv: Vec<&str> = replay.split(' ').collect();
    let (code, again, err) = pmsim(&argv);
    assert_eq!(code, 1, "{again}{err}");
    assert!(again.contains("VIOLATION step-limit"), "{again}");
    // One schedule source at a time.
    let (code, _, _) = pmsim(&[
        "replay",
        "--toy",
        "abba",
        "--schedule",
        "1:0:01",
        "--schedule-file",
        &s(&file),
    ]);
    assert_eq!(code, 2);
    std::fs::remove_dir_all(&d).ok();
}
