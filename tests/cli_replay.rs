//! Issue 10: the replay command every failure report prints reproduces the same violation when
//! it is run exactly as printed (the words of the printed line, quotes removed as a shell
//! would): `explore` (a trace, a built-in model with its `--bug`), `run`, `crashcheck`,
//! `merge` of shard results, in the human report and in `--json`. (`pmsim minimize`'s printed
//! replay is checked by tests/cli_minimize.rs.)

mod common;
use common::{pmsim, printed_replay, run_printed, shell_words, violation_kind};
use serde_json::Value;

/// A 2-thread seed race the default strategy finds in a few runs.
const SEED_002: &str = "traces/seeds/002-fault-vs-truncate.trace";

/// Runs `args`, expects a violation (exit 1), runs the printed replay command as printed and
/// checks that it fails with the same kind; returns that kind.
fn replays_the_same(args: &[&str]) -> String {
    let (code, out, err) = pmsim(args);
    assert_eq!(code, 1, "{args:?} fails: {out}{err}");
    let kind = violation_kind(&out).unwrap_or_else(|| panic!("{args:?}: no VIOLATION: {out}"));
    let replay = printed_replay(&out);
    let (c, o, e) = run_printed(&replay);
    assert_eq!(
        c, 1,
        "{args:?}: the printed {replay:?} does not fail: {o}{e}"
    );
    assert_eq!(
        violation_kind(&o).as_deref(),
        Some(kind.as_str()),
        "{args:?}: the printed {replay:?} reports another violation: {o}"
    );
    kind
}

/// The same through `--json`: the report's `replay` string, run as printed.
fn json_replays_the_same(args: &[&str], replay_of: impl Fn(&Value) -> &Value) {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, out, err) = pmsim(&all);
    assert_eq!(code, 1, "{all:?} fails: {out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{all:?}: {e}: {out}"));
    let kind = violation_kind(&pmsim(args).1).expect("the human report's kind");
    let replay = shell_words(replay_of(&v).as_str().expect("a replay string"));
    let (c, o, e) = run_printed(&replay);
    assert_eq!(c, 1, "{all:?}: {replay:?} does not fail: {o}{e}");
    assert_eq!(violation_kind(&o), Some(kind), "{all:?}: {replay:?}: {o}");
}

#[test]
fn explore_reports_replay_as_printed() {
    let kind = replays_the_same(&["explore", SEED_002, "--seed", "0"]);
    assert_eq!(kind, "assertion:block-freed-while-busy");
    json_replays_the_same(
        &["explore", SEED_002, "--seed", "0"],
        |v| &v["failure"]["replay"],
    );
    // A built-in model: the replay command repeats its --model and --bug.
    let kind = replays_the_same(&[
        "explore",
        "--model",
        "seed-001",
        "--bug",
        "pmd-missed-wakeup",
    ]);
    assert_eq!(kind, "lost-wakeup");
}

#[test]
fn run_reports_replay_as_printed() {
    let args = ["run", SEED_002, "--strategy", "random", "--seed", "1"];
    let kind = replays_the_same(&args);
    assert_eq!(kind, "assertion:block-freed-while-busy");
    json_replays_the_same(&args, |v| &v["violations"][0]["replay"]);
}

#[test]
fn crashcheck_reports_replay_as_printed() {
    let args = [
        "crashcheck",
        "traces/crash/journal-no-fence.trace",
        "--bug",
        "journal-no-fence",
    ];
    let (_, out, _) = pmsim(&args);
    let replay = printed_replay(&out);
    assert_eq!(replay[1], "crashcheck", "{replay:?}");
    assert!(replay.iter().any(|w| w == "--bug"), "{replay:?}");
    assert_eq!(replays_the_same(&args), "mount");
    json_replays_the_same(&args, |v| &v["replay"]);
}

#[test]
fn merge_reports_replay_as_printed() {
    let mut shards = Vec::new();
    for i in 0..2 {
        let f = common::scratch_path("cli_replay", &format!("shard-{i}.json"));
        let shard = format!("{i}/2");
        let (code, out, err) = pmsim(&[
            "explore",
            SEED_002,
            "--strategy",
            "pct",
            "--seed",
            "0",
            "--runs",
            "40",
            "--shard",
            &shard,
            "--json-out",
            &f,
            "--quiet",
        ]);
        assert!(matches!(code, 0 | 1), "shard {shard}: {out}{err}");
        shards.push(f);
    }
    let mut args = vec!["merge"];
    args.extend(shards.iter().map(String::as_str));
    let (_, out, _) = pmsim(&args);
    assert!(out.contains("merged 2 shards"), "{out}");
    assert_eq!(replays_the_same(&args), "assertion:block-freed-while-busy");
    json_replays_the_same(&args, |v| &v["failure"]["replay"]);
}
