//! End-to-end tests of the `pmsim` command line over the shipped traces and the toy models.

mod common;
use common::{code, pmsim_output as pmsim, root};
use std::path::Path;
use std::process::Output;

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn traces(dir: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root().join("traces").join(dir))
        .expect("traces dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "trace"))
        .map(|p| p.strip_prefix(root()).unwrap_or(&p).display().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn check_trace_accepts_the_format_examples_and_rejects_malformed_ones_with_positions() {
    let good = traces("format");
    assert!(good.len() >= 10);
    let args: Vec<&str> = ["check-trace"]
        .into_iter()
        .chain(good.iter().map(String::as_str))
        .collect();
    let o = pmsim(&args);
    assert_eq!(code(&o), 0, "{:?}", text(&o));
    for bad in traces("malformed") {
        let first = std::fs::read_to_string(root().join(&bad)).unwrap_or_default();
        let want = first
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect-error: "))
            .and_then(|l| l.split_whitespace().next())
            .map(|pos| format!("{bad}:{pos}:"));
        let o = pmsim(&["check-trace", &bad]);
        assert_eq!(code(&o), 2, "{bad} must be rejected");
        let (_, err) = text(&o);
        if let Some(want) = want {
            assert!(err.contains(&want), "{bad}: expected {want} in {err}");
        }
    }
}

#[test]
fn every_example_of_the_format_runs_on_the_full_stack() {
    // Every statement of TRACE_FORMAT.md is built: each example runs clean (the race example
    // takes the path without the race under trace-order).
    let mut n = 0;
    let mut paths: Vec<_> = std::fs::read_dir("traces/format")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "trace"))
        .collect();
    paths.sort();
    for p in paths {
        let t = p.display().to_string();
        let o = pmsim(&["run", &t]);
        assert_eq!(code(&o), 0, "{t}: {:?}", text(&o));
        assert!(text(&o).0.contains("no violation"), "{t}");
        n += 1;
    }
    assert!(n >= 13, "{n} examples");
}

#[test]
fn the_replay_command_of_a_failure_reproduces_it() {
    for args in [
        vec![
            "explore",
            "--toy",
            "abba",
            "--strategy",
            "dfs",
            "--preemption-bound",
            "2",
        ],
        vec![
            "explore",
            "--toy",
            "abba",
            "--strategy",
            "pct",
            "--depth",
            "3",
            "--seed",
            "9",
        ],
        vec!["explore", "--toy", "lost-wakeup", "--strategy", "random"],
    ] {
        let o = pmsim(&args);
        assert_eq!(code(&o), 1, "{:?}", text(&o));
        let (out, _) = text(&o);
        let replay = out
            .lines()
            .find_map(|l| l.strip_prefix("replay:   pmsim "))
            .expect("a replay line");
        let schedule = replay.split('\'').nth(1).expect("quoted schedule");
        let toy = args[2];
        let again = pmsim(&["replay", "--toy", toy, "--schedule", schedule]);
        assert_eq!(code(&again), 1);
        // The violation: the report from its kind line to the schedule line.
        let violation = |s: &str| -> Vec<String> {
            s.lines()
                .skip_while(|l| !l.starts_with("VIOLATION"))
                .skip(1)
                .take_while(|l| !l.starts_with("schedule:"))
                .map(str::to_string)
                .collect()
        };
        assert!(!violation(&out).is_empty());
        assert_eq!(violation(&text(&again).0), violation(&out));
    }
}

#[test]
fn json_summary_and_event_log() {
    let dir = std::env::temp_dir().join(format!("pmsim-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ev = dir.join("abba.events");
    let ev_s = ev.display().to_string();
    let o = pmsim(&[
        "explore",
        "--toy",
        "abba",
        "--strategy",
        "dfs",
        "--json",
        "--events",
        &ev_s,
    ]);
    assert_eq!(code(&o), 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    assert_eq!(v["result"], "violation");
    assert_eq!(v["failure"]["kind"], "deadlock");
    assert_eq!(v["failure"]["cycle"], serde_json::json!([0, 1]));
    let bytes = std::fs::read(&ev).expect("event log written");
    let log = sim_core::events::EventLog::from_bincode(&bytes).expect("bincode event log");
    assert_eq!(
        format!("{:016x}", log.hash),
        v["failure"]["hash"].as_str().unwrap()
    );
    assert_eq!(log.tasks, vec!["t1", "t2"]);
    assert!(!log.events.is_empty());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn check_determinism_exit_codes() {
    let o = pmsim(&[
        "run",
        "--toy",
        "lw3x4",
        "--strategy",
        "random",
        "--check-determinism",
    ]);
    assert_eq!(code(&o), 0, "{:?}", text(&o));
    let o = pmsim(&["run", "--toy", "nondeterministic", "--check-determinism"]);
    assert_eq!(code(&o), 3, "{:?}", text(&o));
    assert!(text(&o).0.contains("first diverging event: #0"));
}

#[test]
fn usage_errors_exit_2_without_output() {
    for args in [
        vec!["run"],
        vec!["run", "--toy", "nope"],
        vec!["run", "--toy", "abba", "--bug", "no-mmaplock"],
        vec!["run", "--toy", "abba", "--bug", "pmd-missed-wakeup"],
        vec!["explore", "--toy", "abba", "--strategy", "bogus"],
        vec!["replay", "--toy", "abba"],
        vec!["replay", "--toy", "abba", "--schedule", "1:0:zz(9x)"],
        vec!["explore", "--toy", "abba", "--preemption-bound", "2"],
        vec!["run", "no/such/file.trace"],
        vec!["run", "--toy", "abba", "--events", "/no/such/dir/x"],
        vec!["bench"],
    ] {
        let o = pmsim(&args);
        assert_eq!(code(&o), 2, "{args:?}: {:?}", text(&o));
        assert!(o.stdout.is_empty(), "{args:?}");
    }
    assert!(!Path::new("/no/such/dir/x").exists());
}

#[test]
fn the_machine_line_is_validated_with_positions() {
    let dir = std::env::temp_dir().join(format!("pmsim-cli-machine-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.trace");
    std::fs::write(
        &good,
        "pmsim-trace 1\nmachine cpus=2 media=dram read_miss_ns=90 persist=eadr\nt1 yield\n",
    )
    .unwrap();
    let o = pmsim(&["run", &good.display().to_string()]);
    assert_eq!(code(&o), 0, "{:?}", text(&o));
    let bad = dir.join("bad.trace");
    std::fs::write(
        &bad,
        "pmsim-trace 1\nmachine media=dram wpq_depth=banana\nt1 yield\n",
    )
    .unwrap();
    let o = pmsim(&["run", &bad.display().to_string()]);
    assert_eq!(code(&o), 2);
    assert!(
        text(&o)
            .1
            .contains("bad.trace:2:20: error: machine wpq_depth=banana"),
        "{:?}",
        text(&o)
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bench_media_json_has_the_optane_rows_within_tolerance() {
    let o = pmsim(&["bench", "media", "--json"]);
    assert_eq!(code(&o), 0, "{:?}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let rows = v["rows"].as_array().expect("rows");
    let compared: Vec<f64> = rows
        .iter()
        .filter(|r| r["role"] == "calibration")
        .filter_map(|r| r["error_pct"].as_f64())
        .collect();
    assert!(compared.len() >= 20, "{} compared rows", compared.len());
    assert!(compared.iter().all(|e| e.abs() <= 15.0), "{compared:?}");
    let o = pmsim(&["bench", "media", "--media", "floppy"]);
    assert_eq!(code(&o), 2);
    let o = pmsim(&["bench", "media", "--media-param", "nonsense"]);
    assert_eq!(code(&o), 2);
}

#[test]
fn bench_explore_compares_dpor_with_sleep_sets_alone() {
    let o = pmsim(&[
        "bench",
        "explore",
        "--toy",
        "lost-wakeup-correct",
        "--runs",
        "20000",
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{:?}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let rows = v.as_array().expect("rows");
    assert_eq!(rows.len(), 3, "{v}");
    let (dpor, sleep) = (&rows[1], &rows[2]);
    assert_eq!(dpor["exhausted"], true, "{v}");
    assert_eq!(sleep["exhausted"], true, "{v}");
    assert!(dpor["runs"].as_u64() <= sleep["runs"].as_u64(), "{v}");
    assert!(
        rows.iter().all(|r| r["runs_per_sec"].as_f64() > Some(0.0)),
        "{v}"
    );
    let o = pmsim(&["bench", "explore", "--toy", "abba", "--runs", "0"]);
    assert_eq!(code(&o), 2);
    let o = pmsim(&["bench", "explore"]);
    assert_eq!(code(&o), 2);
}

/// `pmsim explore` of the shipped trace `rel` without its bug line, with `args`: its exit code
/// and output.
fn explore_clean(rel: &str, args: &[&str]) -> (i32, String, String) {
    let src = std::fs::read_to_string(root().join(rel)).expect("the shipped trace");
    let clean: String = src
        .lines()
        .filter(|l| !l.starts_with("bug "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(clean, src, "the trace names its bug mode");
    let dir = std::env::temp_dir().join(format!("pmsim-dpor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("clean.trace");
    std::fs::write(&path, clean).unwrap();
    let o = pmsim(&[&["explore", path.to_str().unwrap()], args].concat());
    std::fs::remove_dir_all(&dir).ok();
    let (out, err) = text(&o);
    (code(&o), out, err)
}

/// The shipped PMD missed wake-up trace without its bug line is exhausted by unbounded dfs
/// with DPOR: 508 runs, 1 cut short by sleep sets, under a CPU-second in a release build on
/// the 2-vCPU VM, since xarray walks depend only on the indices they saw and one-step rwsem
/// sections and wait-queue ops that change nothing are reads (6,168 runs before; 8,065 before
/// atomic xa_lock sections and the end-of-run task; sleep sets alone had not finished after
/// 2,762 runs).
#[test]
fn the_clean_pmd_missed_wakeup_trace_is_exhausted_by_dfs_with_dpor() {
    let (code, out, err) = explore_clean(
        "traces/format/pmd_missed_wakeup.trace",
        &["--strategy", "dfs", "--runs", "20000"],
    );
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("exhausted the search space"), "{out}");
}

/// The 3-thread seed-001 trace (the 2019 PMD missed wake-up: a PTE write fault, a PTE read
/// fault and a PMD read fault on one 2 MiB range) without its bug line is exhausted by
/// unbounded dfs with DPOR, as issue 10 asks: 5,660,453 runs (1,306,453 cut short by sleep
/// sets), clean, in 435.5 CPU-s with `--jobs 2` in a release build on the 2-vCPU VM (4 min 42 s
/// wall, nothing else running; 949 CPU-s before the per-run savings of December 2026). Ignored:
/// minutes of both cores; run it with `cargo test --release -- --ignored`.
#[test]
#[ignore]
fn the_clean_seed_001_trace_is_exhausted_by_dfs_with_dpor() {
    let (code, out, err) = explore_clean(
        "traces/seeds/001-pmd-missed-wakeup.trace",
        &["--strategy", "dfs", "--jobs", "2"],
    );
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("exhausted the search space"), "{out}");
}
