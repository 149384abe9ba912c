//! `pmsim minimize`: the seed trace's failure keeps its kind with at most 3 preemptions, the
//! output is a valid trace whose printed replay reproduces it; outputs pmsim did not write are
//! never replaced; a schedule without a violation is refused; the result is deterministic.

mod common;
use common::{pmsim, root};
use serde_json::Value;

const SEED: &str = "traces/format/pmd_missed_wakeup.trace";

fn scratch(name: &str) -> String {
    common::scratch_path("cli_minimize", name)
}

/// The failing schedule explore finds (random, seed 0).
fn failing_schedule() -> String {
    let (code, out, _) = pmsim(&["explore", SEED, "--json"]);
    assert_eq!(code, 1, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v["schedule"].as_str().unwrap().to_string()
}

#[test]
fn the_seed_failure_minimizes_to_at_most_3_preemptions_and_replays() {
    let sched = failing_schedule();
    let out = scratch("seed.min.trace");
    let (code, text, err) = pmsim(&[
        "minimize",
        SEED,
        "--schedule",
        &sched,
        "-o",
        &out,
        "--max-traces",
        "8",
        "--json",
    ]);
    assert_eq!(code, 1, "the violation reproduced: {text}{err}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["kind"], "lost-wakeup");
    assert_eq!(v["queues"], serde_json::json!(["dax_wait_table"]));
    let (before, after) = (&v["before"], &v["after"]);
    assert!(after["preemptions"].as_u64().unwrap() <= 3, "{text}");
    assert!(
        after["preemptions"].as_u64() < before["preemptions"].as_u64(),
        "{text}"
    );
    assert!(after["statements"].as_u64() <= before["statements"].as_u64());
    assert!(after["steps"].as_u64() <= before["steps"].as_u64());
    // The output is a valid trace, smaller than the input (the 8th candidate halves the first
    // mmap's length), and starts with the mark and the replay command.
    let written = std::fs::read_to_string(&out).unwrap();
    assert!(
        written.starts_with("# minimized by pmsim from"),
        "{written}"
    );
    assert!(written.contains("bug pmd-missed-wakeup"), "{written}");
    assert_ne!(written, std::fs::read_to_string(root().join(SEED)).unwrap());
    let (c, o, e) = pmsim(&["check-trace", &out]);
    assert_eq!(c, 0, "{o}{e}");
    // The printed replay command reproduces the violation on the minimized trace.
    let replay = v["replay"].as_str().unwrap();
    assert!(
        replay.starts_with(&format!("pmsim replay {out} --schedule '")),
        "{replay}"
    );
    let s = replay.split('\'').nth(1).unwrap();
    assert_eq!(s, v["schedule"]);
    let (c, o, e) = pmsim(&["replay", &out, "--schedule", s]);
    assert_eq!(c, 1, "{o}{e}");
    assert!(o.contains("VIOLATION lost-wakeup"), "{o}");
    assert!(o.contains("sleeps on dax_wait_table#"), "{o}");
}

#[test]
fn schedule_shrinking_alone_is_deterministic_and_replaces_only_its_own_output() {
    let sched = failing_schedule();
    let out = scratch("sched.min.trace");
    let args = |o: &str| {
        vec![
            "minimize".to_string(),
            SEED.into(),
            "--schedule".into(),
            sched.clone(),
            "-o".into(),
            o.into(),
            "--max-traces".into(),
            "0".into(),
        ]
    };
    let a: Vec<String> = args(&out);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let (c1, t1, e1) = pmsim(&a);
    assert_eq!(c1, 1, "{t1}{e1}");
    assert!(t1.contains("before: 4 statements, 2 threads, "), "{t1}");
    assert!(t1.contains("after:  4 statements, 2 threads, "), "{t1}");
    let first = std::fs::read_to_string(&out).unwrap();
    // Again over its own output: replaced, byte for byte the same.
    let (c2, t2, _) = pmsim(&a);
    assert_eq!((c2, &t2), (1, &t1));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), first);
    // A file pmsim did not write is left alone.
    let foreign = scratch("foreign.trace");
    std::fs::write(&foreign, "keep me\n").unwrap();
    let b: Vec<String> = args(&foreign);
    let b: Vec<&str> = b.iter().map(String::as_str).collect();
    let (c3, o3, e3) = pmsim(&b);
    assert_eq!(c3, 2, "{o3}{e3}");
    assert!(e3.contains("did not write it"), "{e3}");
    assert_eq!(std::fs::read_to_string(&foreign).unwrap(), "keep me\n");
}

#[test]
fn a_schedule_that_does_not_fail_or_fit_is_refused() {
    let out = scratch("none.min.trace");
    // Trace order: t1's PTE fault first, then t2's PMD fault falls back; no violation.
    let (code, o, e) = pmsim(&["minimize", SEED, "--schedule", "1:0:", "-o", &out]);
    assert_eq!(code, 2, "{o}{e}");
    assert!(e.contains("pmsim: error: minimize:"), "{e}");
    assert!(!std::path::Path::new(&out).exists());
    let (code, _, e) = pmsim(&["minimize", SEED, "-o", &out]);
    assert_eq!(code, 2);
    assert!(e.contains("--schedule"), "{e}");
    // Bad input: a clear error, exit 2, no output file, never a panic.
    let bad_trace = scratch("bad.trace");
    std::fs::write(&bad_trace, "pmsim-trace 1\nt1 frobnicate\n").unwrap();
    let missing_dir = format!("{}/no/such/dir/x.trace", env!("CARGO_TARGET_TMPDIR"));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![SEED, "--schedule", "zz", "-o", &out], "--schedule"),
        (
            vec![SEED, "--schedule", "1:0:0", "-o", &missing_dir],
            "does not exist",
        ),
        (
            vec![SEED, "--schedule", "1:0:0", "-o", SEED],
            "overwrite its inputs",
        ),
        (
            vec!["no-such.trace", "--schedule", "1:0:0", "-o", &out],
            "cannot read",
        ),
        (
            vec![&bad_trace, "--schedule", "1:0:0", "-o", &out],
            "bad.trace:2:",
        ),
        (vec![SEED, "--schedule", "1:0:7", "-o", &out], "minimize:"),
    ];
    for (args, want) in cases {
        let mut a = vec!["minimize"];
        a.extend(args.iter().copied());
        let (code, o, e) = pmsim(&a);
        assert_eq!(code, 2, "{a:?}: {o}{e}");
        assert!(e.contains(want), "{a:?}: {e}");
        assert!(!e.contains("panicked"), "{a:?}: {e}");
        assert!(!std::path::Path::new(&out).exists(), "{a:?}");
    }
}

/// The seed traces whose race the default strategy finds with seed 0 (tests/shipped_races.rs
/// checks each against its `# expect:`; the other seed traces are ignored there, with why).
const FOUND_SEEDS: &[&str] = &[
    "traces/seeds/001-pmd-missed-wakeup.trace",
    "traces/seeds/002-fault-vs-truncate.trace",
];

/// Issue 10: a minimized failure of a seed trace has at most 3 preemptions, and the replay
/// command `pmsim minimize` prints, run as printed, reproduces the same violation kind.
#[test]
fn every_found_seed_failure_minimizes_to_at_most_3_preemptions_and_its_replay_reproduces() {
    for seed in FOUND_SEEDS {
        let (code, text, err) = pmsim(&["explore", seed, "--seed", "0", "--json"]);
        assert_eq!(code, 1, "{seed}: explore finds its race: {text}{err}");
        let v: Value = serde_json::from_str(&text).unwrap();
        let kind = v["failure"]["kind"].as_str().unwrap().to_string();
        let sched = v["failure"]["schedule"].as_str().unwrap();
        let name = seed
            .rsplit('/')
            .next()
            .unwrap()
            .replace(".trace", ".min.trace");
        let out = scratch(&name);
        let (code, text, err) = pmsim(&[
            "minimize",
            seed,
            "--schedule",
            sched,
            "-o",
            &out,
            "--max-traces",
            "4",
            "--json",
        ]);
        assert_eq!(code, 1, "{seed}: the violation reproduced: {text}{err}");
        let m: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(m["kind"].as_str(), Some(kind.as_str()), "{seed}: {text}");
        let (before, after) = (&m["before"], &m["after"]);
        let pre = after["preemptions"].as_u64().unwrap();
        assert!(
            pre <= 3,
            "{seed}: {pre} preemptions after minimizing: {text}"
        );
        assert!(
            pre <= before["preemptions"].as_u64().unwrap(),
            "{seed}: {text}"
        );
        // The printed replay command, run exactly as printed, fails with the same kind.
        let replay = common::shell_words(m["replay"].as_str().unwrap());
        assert_eq!(replay[..3], ["pmsim", "replay", out.as_str()], "{replay:?}");
        let (c, o, e) = common::run_printed(&replay);
        assert_eq!(c, 1, "{seed}: {replay:?}: {o}{e}");
        assert_eq!(
            common::violation_kind(&o).as_deref(),
            Some(kind.as_str()),
            "{seed}: {replay:?}: {o}"
        );
        // ... in a run with the preemptions minimize counted.
        assert!(
            o.contains(&format!(" steps, {pre} preemption")),
            "{seed}: {o}"
        );
    }
}
