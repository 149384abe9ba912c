//! `pmsim explore` at scale, end to end through the built binary: shards run as separate
//! processes and merged give the single process's report (same runs, same violations, same
//! first failure); `--jobs 2` gives the `--jobs 1` report; `pmsim merge` refuses incomplete and
//! mismatched shard sets (exit 2); `--shard auto` reads the batch engines' variables;
//! `--portfolio` finds the seed trace's violation.

mod common;
use common::{code, err, out, root};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SEED_TRACE: &str = "traces/format/pmd_missed_wakeup.trace";

/// The environment variables `--shard auto` reads (cleared, so that a test run inside a batch
/// job behaves the same).
const AUTO_VARS: [&str; 5] = [
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_MIN",
    "JOB_COMPLETION_INDEX",
    "PMSIM_SHARD_COUNT",
];

fn pmsim_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pmsim"));
    c.args(args).current_dir(root());
    for v in AUTO_VARS {
        c.env_remove(v);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("pmsim runs")
}

fn pmsim(args: &[&str]) -> Output {
    pmsim_env(args, &[])
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pmsim-cli-scale-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", out(o), err(o)))
}

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// Run `search` as `n` shard processes (each with --json-out) and merge them; returns the
/// merge's JSON report and exit code.
fn shards_merged(search: &[&str], n: u32, dir: &Path) -> (serde_json::Value, i32) {
    let mut files = Vec::new();
    for i in 0..n {
        let f = dir.join(format!("shard-{i}.json"));
        let shard = format!("{i}/{n}");
        let mut args = vec!["explore"];
        args.extend(search);
        args.extend(["--shard", &shard, "--json-out", p(&f), "--json"]);
        let o = pmsim(&args);
        assert!(
            matches!(code(&o), 0 | 1),
            "{args:?}: {} {}",
            out(&o),
            err(&o)
        );
        files.push(f);
    }
    let mut args = vec!["merge", "--json"];
    args.extend(files.iter().map(|f| p(f)));
    let o = pmsim(&args);
    assert!(matches!(code(&o), 0 | 1), "merge: {} {}", out(&o), err(&o));
    (json(&o), code(&o))
}

fn single(search: &[&str], extra: &[&str]) -> (serde_json::Value, i32) {
    let mut args = vec!["explore"];
    args.extend(search);
    args.extend(extra);
    args.push("--json");
    let o = pmsim(&args);
    assert!(
        matches!(code(&o), 0 | 1),
        "{args:?}: {} {}",
        out(&o),
        err(&o)
    );
    (json(&o), code(&o))
}

#[test]
fn dfs_shards_merged_equal_the_single_process() {
    let dir = scratch("dfs");
    // Bounded dfs is divided without changing the search: the merge equals the plain single
    // process, field for field (runs, cut-short runs, failing runs, the first failure with its
    // run index and schedule, hashes, exhaustion).
    let bounded = [
        SEED_TRACE,
        "--strategy",
        "dfs",
        "--preemption-bound",
        "1",
        "--keep-going",
    ];
    let (whole, c) = single(&bounded, &[]);
    assert_eq!(c, 1);
    assert_eq!(whole["exhausted"], true, "{whole}");
    assert!(whole["failed_runs"].as_u64().unwrap() >= 1, "{whole}");
    assert!(whole["runs"].as_u64().unwrap() >= 10, "{whole}");
    let (merged, mc) = shards_merged(&bounded, 3, &dir);
    assert_eq!(mc, 1);
    assert_eq!(merged, whole);
    // Unbounded dfs with DPOR, stopping at the first failure: the merge equals the single
    // process at the same split depth (the failure with the smallest run index).
    let dpor = [SEED_TRACE, "--strategy", "dfs", "--split-depth", "2"];
    let (whole, c) = single(&dpor, &[]);
    assert_eq!(c, 1);
    assert_eq!(whole["failure"]["kind"], "lost-wakeup", "{whole}");
    let (merged, mc) = shards_merged(&dpor, 2, &dir);
    assert_eq!(mc, 1);
    assert_eq!(merged, whole);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pct_shards_merged_equal_the_single_process() {
    let dir = scratch("pct");
    // Depth 2 (explore's default on a trace is 3): it finds the lost wake-up within these runs.
    for search in [
        vec![
            SEED_TRACE,
            "--strategy",
            "pct",
            "--depth",
            "2",
            "--runs",
            "24",
            "--keep-going",
        ],
        vec![
            SEED_TRACE,
            "--strategy",
            "pct",
            "--depth",
            "2",
            "--runs",
            "40",
            "--seed",
            "5",
        ],
    ] {
        let (whole, c) = single(&search, &[]);
        let (merged, mc) = shards_merged(&search, 3, &dir);
        assert_eq!((mc, &merged), (c, &whole), "{search:?}");
        assert_eq!(whole["failure"]["kind"], "lost-wakeup", "{whole}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_jobs_equal_one() {
    for search in [
        vec![
            SEED_TRACE,
            "--strategy",
            "pct",
            "--runs",
            "24",
            "--keep-going",
        ],
        vec![SEED_TRACE, "--strategy", "random", "--runs", "16"],
        vec![SEED_TRACE, "--strategy", "dfs", "--preemption-bound", "1"],
        vec![
            "--toy",
            "lost-wakeup-correct",
            "--strategy",
            "dfs",
            "--preemption-bound",
            "2",
        ],
    ] {
        let (one, c1) = single(&search, &[]);
        let (two, c2) = single(&search, &["--jobs", "2"]);
        assert_eq!((c1, &one), (c2, &two), "{search:?}");
    }
    // DPOR divided at a split depth: the same report for one and two jobs.
    let dpor = [
        "--toy",
        "abba-fixed",
        "--strategy",
        "dfs",
        "--split-depth",
        "3",
    ];
    let (one, c1) = single(&dpor, &["--jobs", "1"]);
    let (two, c2) = single(&dpor, &["--jobs", "2"]);
    assert_eq!((c1, &one), (c2, &two));
    assert_eq!(one["exhausted"], true, "{one}");
}

#[test]
fn merge_refuses_incomplete_and_mismatched_shard_sets() {
    let dir = scratch("merge");
    let shard = |i: u32, n: u32, extra: &[&str]| -> PathBuf {
        let f = dir.join(format!("s{i}of{n}-{}.json", extra.join("_")));
        let s = format!("{i}/{n}");
        let mut args = vec![
            "explore",
            "--toy",
            "abba",
            "--strategy",
            "random",
            "--runs",
            "20",
        ];
        args.extend(extra);
        args.extend(["--keep-going", "--shard", &s, "--json-out", p(&f)]);
        let o = pmsim(&args);
        assert_eq!(code(&o), 1, "{args:?}: {} {}", out(&o), err(&o));
        f
    };
    let (a, b, c) = (shard(0, 3, &[]), shard(1, 3, &[]), shard(2, 3, &[]));
    let merge = |files: &[&PathBuf]| {
        let mut args = vec!["merge"];
        args.extend(files.iter().map(|f| p(f)));
        pmsim(&args)
    };
    let o = merge(&[&a, &b, &c]);
    assert_eq!(code(&o), 1, "{}", err(&o));
    assert!(out(&o).contains("merged 3 shards"), "{}", out(&o));
    let o = merge(&[&a, &c]);
    assert_eq!(code(&o), 2);
    assert!(err(&o).contains("shard 1 of 3 missing"), "{}", err(&o));
    let o = merge(&[&a, &b, &b, &c]);
    assert_eq!(code(&o), 2);
    assert!(err(&o).contains("more than once"), "{}", err(&o));
    let other_seed = shard(2, 3, &["--seed", "9"]);
    let o = merge(&[&a, &b, &other_seed]);
    assert_eq!(code(&o), 2);
    assert!(err(&o).contains("another search"), "{}", err(&o));
    let other_count = shard(1, 2, &[]);
    let o = merge(&[&a, &other_count, &c]);
    assert_eq!(code(&o), 2, "{}", err(&o));
    // Another subject.
    let f = dir.join("toy.json");
    let o = pmsim(&[
        "explore",
        "--toy",
        "abba-fixed",
        "--strategy",
        "random",
        "--runs",
        "20",
        "--shard",
        "2/3",
        "--json-out",
        p(&f),
    ]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let o = merge(&[&a, &b, &f]);
    assert_eq!(code(&o), 2);
    assert!(err(&o).contains("another subject"), "{}", err(&o));
    // Not a shard result.
    let junk = dir.join("junk.json");
    std::fs::write(&junk, "{\"runs\": 3}").expect("write");
    let o = merge(&[&a, &junk]);
    assert_eq!(code(&o), 2);
    assert!(err(&o).contains("not a pmsim shard result"), "{}", err(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shard_auto_reads_the_batch_engines_variables() {
    let search = [
        "explore",
        "--toy",
        "abba",
        "--strategy",
        "random",
        "--runs",
        "10",
    ];
    let run = |env: &[(&str, &str)]| {
        let mut args = search.to_vec();
        args.extend(["--shard", "auto", "--json"]);
        pmsim_env(&args, env)
    };
    let o = run(&[]);
    assert_eq!(code(&o), 2);
    assert!(
        err(&o).contains("neither SLURM_ARRAY_TASK_ID"),
        "{}",
        err(&o)
    );
    let o = run(&[("SLURM_ARRAY_TASK_ID", "1")]);
    assert_eq!(code(&o), 2);
    assert!(err(&o).contains("SLURM_ARRAY_TASK_COUNT"), "{}", err(&o));
    let o = run(&[("JOB_COMPLETION_INDEX", "1")]);
    assert_eq!(code(&o), 2);
    assert!(err(&o).contains("--shard-count"), "{}", err(&o));
    let o = run(&[
        ("SLURM_ARRAY_TASK_ID", "3"),
        ("SLURM_ARRAY_TASK_COUNT", "3"),
    ]);
    assert_eq!(code(&o), 2, "index 3 of 3");
    // The same shard three ways: explicit, Slurm (an array numbered from 1), Kubernetes.
    let explicit = {
        let mut args = search.to_vec();
        args.extend(["--shard", "1/3", "--json", "--keep-going"]);
        pmsim(&args)
    };
    let mut outs = Vec::new();
    for env in [
        vec![
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ],
        vec![("JOB_COMPLETION_INDEX", "1"), ("PMSIM_SHARD_COUNT", "3")],
    ] {
        let mut args = search.to_vec();
        args.extend(["--shard", "auto", "--json", "--keep-going"]);
        outs.push(pmsim_env(&args, &env));
    }
    let mut args = search.to_vec();
    args.extend([
        "--shard",
        "auto",
        "--shard-count",
        "3",
        "--json",
        "--keep-going",
    ]);
    outs.push(pmsim_env(&args, &[("JOB_COMPLETION_INDEX", "1")]));
    for o in &outs {
        assert_eq!(code(o), code(&explicit), "{}", err(o));
        assert_eq!(out(o), out(&explicit));
    }
    assert!(json(&explicit)["runs"].as_u64().unwrap() > 0);
}

#[test]
fn the_portfolio_finds_the_seed_traces_violation_and_its_replay_reproduces_it() {
    let o = pmsim(&["explore", SEED_TRACE, "--portfolio", "--runs", "50"]);
    assert_eq!(code(&o), 1, "{} {}", out(&o), err(&o));
    let report = out(&o);
    assert!(
        report.contains("pmsim explore --portfolio: 5 legs"),
        "{report}"
    );
    assert!(report.contains("VIOLATION lost-wakeup"), "{report}");
    let replay = report
        .lines()
        .find_map(|l| l.strip_prefix("replay:   pmsim "))
        .expect("a replay line");
    let schedule = replay.split('\'').nth(1).expect("a quoted schedule");
    let o = pmsim(&["replay", SEED_TRACE, "--schedule", schedule]);
    assert_eq!(code(&o), 1, "{} {}", out(&o), err(&o));
    assert!(out(&o).contains("VIOLATION lost-wakeup"));
    // The JSON form names every leg and the failing one's report.
    let o = pmsim(&[
        "explore",
        SEED_TRACE,
        "--portfolio",
        "--runs",
        "50",
        "--json",
    ]);
    assert_eq!(code(&o), 1);
    let v = json(&o);
    assert_eq!(v["legs"].as_array().map(Vec::len), Some(5), "{v}");
    assert_eq!(v["failing_leg"]["failure"]["kind"], "lost-wakeup", "{v}");
}

#[test]
fn a_clean_toy_portfolio_says_the_space_was_exhausted() {
    let o = pmsim(&[
        "explore",
        "--toy",
        "abba-fixed",
        "--portfolio",
        "--runs",
        "20",
    ]);
    assert_eq!(code(&o), 0, "{} {}", out(&o), err(&o));
    assert!(
        out(&o).contains("the whole space was exhausted"),
        "{}",
        out(&o)
    );
}

#[test]
fn scale_flags_are_refused_where_they_mean_nothing() {
    for (args, why) in [
        (
            vec![
                "explore",
                "--toy",
                "abba",
                "--strategy",
                "trace-order",
                "--jobs",
                "2",
            ],
            "one run",
        ),
        (
            vec![
                "explore",
                "--toy",
                "abba",
                "--strategy",
                "dfs",
                "--runs",
                "5",
                "--jobs",
                "2",
            ],
            "run count",
        ),
        (
            vec!["explore", "--toy", "abba", "--portfolio", "--shard", "0/2"],
            "--portfolio runs in one process",
        ),
        (
            vec![
                "explore",
                "--toy",
                "abba",
                "--portfolio",
                "--strategy",
                "dfs",
            ],
            "--portfolio chooses",
        ),
        (
            vec!["explore", "--toy", "abba", "--shard", "2/2"],
            "below 2",
        ),
        (vec!["explore", "--toy", "abba", "--jobs", "0"], "jobs"),
    ] {
        let o = pmsim(&args);
        assert_eq!(code(&o), 2, "{args:?}: {}", out(&o));
        assert!(err(&o).contains(why), "{args:?}: {}", err(&o));
    }
}
