//! The shipped races (issue 10 point 7): every trace under traces/bugs/ and traces/seeds/ is
//! found with its bug mode and clean without it, and every trace under traces/xfstests/ is clean
//! on the default core.
//!
//! Each bug or seed trace declares its mode with a `bug NAME` line and the violation the mode
//! causes with a structured comment `# expect: KIND` (a kind as `pmsim explore --json` names it,
//! e.g. `lost-wakeup`, `assertion:trace-expectation`; `A | B` accepts either, and a kind ending
//! in `:` accepts every kind with that prefix). With the mode, `pmsim explore` (the default
//! strategy, seed 0, at most [`FIND_RUNS`] runs) must find that kind; the same trace without its
//! `bug` lines must be clean under `explore --strategy dfs --preemption-bound 2`, exhausted, as
//! issue 10 asks ([`CLEAN_BOUND`]). These searches (up to 1,046,886 runs, the four threads of
//! bugs/invalidate-wake-next) fit in CI because the workspace's Cargo.toml builds the
//! simulator's crates with opt-level 2 in debug builds too (assertions and overflow checks stay
//! on).
//!
//! A lost-durability mode says `# check: crashcheck`: explore runs the after-crash statements
//! after a clean shutdown, which loses nothing, so such a trace is judged by `pmsim crashcheck`
//! instead. With the mode, `crashcheck --k 2` (crash points at fences, the trace-order schedule)
//! must find the `# expect:`ed kind and its printed replay command must reproduce it; without
//! the `bug` lines, `crashcheck --k 2 --points op --strategy dfs --preemption-bound B` must be
//! clean with the schedules exhausted (fewer than [`CRASH_SCHEDULES`]).
//!
//! An xfstests pattern is clean under dfs at that bound where that costs seconds in a debug
//! build; the others (runs of hundreds to tens of thousands of steps, spaces of 7 k to 21 k
//! runs at bound 2) run the default strategy with seed 0 for a few dozen runs in CI, and
//! [`xfstests_are_clean_at_preemption_bound_2`] (ignored) is their exhaustive bound-2 check.
//!
//! A trace that needs a statement the runner does not execute yet (write, truncate, fsync,
//! poison, ...) is still shipped, written to the format, and its test is ignored with the
//! branch that brings the statement. [`the_tests_cover_every_shipped_trace`] keeps this file and
//! the directories in step.

mod common;
use common::root;
use serde_json::Value;
use std::path::PathBuf;

/// Runs the default strategy may take to find a shipped race (seed 0). The slowest is
/// bugs/invalidate-wake-next: pct --depth 3 finds it in 2,418 runs with atomic xa_lock sections
/// (`sim` "Atomic sections"; 102 without them: fewer choices, other priorities and change
/// points for the same seed; seed 1 found it in 1,737 runs without them, seeds 2 and 3 not in
/// 3,000).
const FIND_RUNS: u32 = 3000;

/// The schedules a `# check: crashcheck` trace's clean check may take; reaching it means the
/// bounded space was not exhausted.
const CRASH_SCHEDULES: u32 = 100;

/// `pmsim ARGS` in-process (the searches here are long; no process start per call).
fn pmsim(args: &[&str]) -> (i32, String, String) {
    common::pmsim_in_process(args)
}

/// `pmsim explore ... --json` on `path`: (exit code, the summary).
fn explore_json(path: &str, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["explore", path, "--json"];
    all.extend_from_slice(args);
    let (code, out, err) = pmsim(&all);
    let v = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("{path}: explore printed no JSON ({e}): {out}\n{err}"));
    (code, v)
}

/// A shipped trace's text, its `bug` modes and its `# expect:` kinds.
struct Shipped {
    path: String,
    text: String,
    bugs: Vec<String>,
    expect: Vec<String>,
    /// `# check: crashcheck`: judged by `pmsim crashcheck` (see the module notes).
    crashcheck: bool,
}

fn shipped(rel: &str) -> Shipped {
    let path = root().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let mut bugs = Vec::new();
    let mut expect = Vec::new();
    let mut crashcheck = false;
    for line in text.lines() {
        let code = line.split('#').next().unwrap_or("").trim();
        if let Some(k) = line.trim().strip_prefix("# expect:") {
            expect.extend(k.split('|').map(|s| s.trim().to_string()));
        }
        if let Some(c) = line.trim().strip_prefix("# check:") {
            assert_eq!(c.trim(), "crashcheck", "{rel}: unknown `# check:` {c:?}");
            crashcheck = true;
        }
        let mut words = code.split_whitespace();
        if words.next() == Some("bug") {
            bugs.extend(words.next().map(str::to_string));
        }
    }
    Shipped {
        path: path.display().to_string(),
        text,
        bugs,
        expect,
        crashcheck,
    }
}

/// Whether the found `kind` is one of the `expect`ed ones.
fn kind_matches(expect: &[String], kind: &str) -> bool {
    expect.iter().any(|e| {
        if e.ends_with(':') {
            kind.starts_with(e.as_str())
        } else {
            kind == e
        }
    })
}

/// The trace without its `bug` lines, as a scratch file.
fn without_bugs(s: &Shipped, name: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("shipped_races");
    std::fs::create_dir_all(&dir).unwrap();
    let text: String = s
        .text
        .lines()
        .filter(|l| !l.trim_start().starts_with("bug "))
        .map(|l| format!("{l}\n"))
        .collect();
    let p = dir.join(format!("{name}.nobug.trace"));
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// The preemption bound of every clean check (see the module notes). The costliest is
/// bugs/invalidate-wake-next (four threads): 1,046,886 runs, exhausted, clean; 240 CPU-s and
/// 3 min 27 s with `--jobs 2` in the CI build, on the shared 2-core machine (a release build,
/// one worker: about 4 minutes). Until the per-run savings of December 2026 it did not exhaust
/// in 30 minutes and CI checked it at bound 1 (6,324 runs). Unbounded dfs with DPOR still does
/// not exhaust its whole space. The other bound-2 checks, in a release build (CPU seconds,
/// before those savings): hole-wake-next 26.6, lock-entry-exclusive-wait 23.4, seeds/001 5.6,
/// busy-scan-skips-locked 2.0, reflink-page-mapping 23.7, seeds/004 2.8.
const CLEAN_BOUND: u32 = 2;

/// `path` is clean and exhausted under dfs at preemption bound `bound`. Two workers: a bounded
/// dfs finds the same for every `--jobs`.
fn assert_clean_dfs(path: &str, what: &str, bound: u32) -> u64 {
    let b = bound.to_string();
    let (code, v) = explore_json(
        path,
        &["--strategy", "dfs", "--preemption-bound", &b, "--jobs", "2"],
    );
    assert_eq!(
        (code, v["result"].as_str()),
        (0, Some("clean")),
        "{what}: dfs --preemption-bound {bound} is not clean: {v:#}"
    );
    assert_eq!(
        v["exhausted"].as_bool(),
        Some(true),
        "{what}: the bounded space was not exhausted: {v:#}"
    );
    v["runs"].as_u64().unwrap_or(0)
}

/// A bug or seed trace: with its mode explore finds the documented kind; without, dfs is clean.
fn check_race(rel: &str) {
    let s = shipped(rel);
    assert!(!s.bugs.is_empty(), "{rel}: no `bug` line");
    assert!(!s.expect.is_empty(), "{rel}: no `# expect: KIND` comment");
    assert!(
        s.text.trim_start().starts_with('#'),
        "{rel}: the trace starts with a comment saying what it models and what is expected"
    );
    if s.crashcheck {
        return check_durability(rel, &s);
    }
    let runs = FIND_RUNS.to_string();
    let (code, v) = explore_json(&s.path, &["--seed", "0", "--runs", &runs]);
    let kind = v["failure"]["kind"].as_str().unwrap_or("");
    assert!(
        code == 1 && kind_matches(&s.expect, kind),
        "{rel}: with {:?}, explore (default strategy, seed 0, {FIND_RUNS} runs) should find \
         {:?}, got exit {code}: {v:#}",
        s.bugs,
        s.expect
    );
    // The replay command of the report reproduces the same kind.
    let schedule = v["failure"]["schedule"].as_str().expect("a schedule");
    let (code, r) = {
        let (c, out, err) = pmsim(&["replay", &s.path, "--schedule", schedule, "--json"]);
        let r: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{rel}: replay printed no JSON ({e}): {out}\n{err}"));
        (c, r)
    };
    assert_eq!(
        (code, r["failure"]["kind"].as_str()),
        (1, Some(kind)),
        "{rel}: the replay of {schedule} does not reproduce {kind}: {r:#}"
    );
    let name = rel.replace('/', "_");
    let nobug = without_bugs(&s, &name);
    assert_clean_dfs(&nobug, &format!("{rel} without its bug lines"), CLEAN_BOUND);
}

/// A `# check: crashcheck` trace (a lost-durability mode): with its mode crashcheck finds the
/// documented kind and the printed replay reproduces it; without, crashcheck is clean.
fn check_durability(rel: &str, s: &Shipped) {
    let (code, out, err) = pmsim(&["crashcheck", &s.path, "--k", "2", "--json"]);
    let v: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("{rel}: crashcheck printed no JSON ({e}): {out}\n{err}"));
    let kind = v["violation"]["violation"]["kind"].as_str().unwrap_or("");
    assert!(
        code == 1 && kind_matches(&s.expect, kind),
        "{rel}: with {:?}, crashcheck --k 2 should find {:?}, got exit {code}: {v:#}",
        s.bugs,
        s.expect
    );
    // The witness's replay command, run as printed, reproduces the same kind.
    let replay = v["replay"].as_str().expect("a replay command");
    let (c2, out2, err2) = common::run_printed(&common::shell_words(replay));
    assert_eq!(
        (c2, common::violation_kind(&out2).as_deref()),
        (1, Some(kind)),
        "{rel}: `{replay}` does not reproduce {kind}:\n{out2}{err2}"
    );
    let nobug = without_bugs(s, &rel.replace('/', "_"));
    let b = CLEAN_BOUND.to_string();
    let n = CRASH_SCHEDULES.to_string();
    let args = [
        "crashcheck",
        &nobug,
        "--k",
        "2",
        "--points",
        "op",
        "--strategy",
        "dfs",
        "--preemption-bound",
        &b,
        "--schedules",
        &n,
        "--json",
    ];
    let (code, out, err) = pmsim(&args);
    let v: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("{rel}: crashcheck printed no JSON ({e}): {out}\n{err}"));
    assert_eq!(
        (code, v["result"].as_str()),
        (0, Some("clean")),
        "{rel} without its bug lines: crashcheck is not clean: {v:#}"
    );
    let ran = v["schedules"].as_u64().unwrap_or(u64::MAX);
    assert!(
        (1..u64::from(CRASH_SCHEDULES)).contains(&ran),
        "{rel} without its bug lines: {ran} schedules checked, not exhausted below \
         {CRASH_SCHEDULES}: {v:#}"
    );
}

/// How CI checks that an xfstests pattern is clean on the default core.
#[derive(Clone, Copy)]
enum Clean {
    /// dfs exhausted at the module's preemption bound (the traces it costs seconds).
    Dfs,
    /// The default strategy (pct), seed 0, this many runs, no violation: for the traces whose
    /// bounded space costs minutes in a debug build; their bound-2 check is
    /// [`xfstests_are_clean_at_preemption_bound_2`] (ignored, with its release figures).
    Pct(u32),
}

/// An xfstests pattern: clean on the default core, checked as `how` says.
fn check_clean(rel: &str, how: Clean) {
    let s = shipped(rel);
    assert!(
        s.bugs.is_empty(),
        "{rel}: an xfstests pattern runs on the default core"
    );
    assert!(
        s.text.trim_start().starts_with('#'),
        "{rel}: the trace starts with a comment saying what it models and what is expected"
    );
    match how {
        Clean::Dfs => {
            assert_clean_dfs(&s.path, rel, CLEAN_BOUND);
        }
        Clean::Pct(runs) => {
            let n = runs.to_string();
            let (code, v) = explore_json(&s.path, &["--seed", "0", "--runs", &n]);
            assert_eq!(
                (code, v["result"].as_str(), v["runs"].as_u64()),
                (0, Some("clean"), Some(u64::from(runs))),
                "{rel}: explore (default strategy, seed 0, {runs} runs) is not clean: {v:#}"
            );
        }
    }
}

macro_rules! races {
    ($($(#[$m:meta])* $name:ident: $path:literal;)*) => {
        $( $(#[$m])* #[test] fn $name() { check_race($path) } )*
        /// Every bug and seed trace this file tests (ignored or not).
        const RACES: &[&str] = &[$($path),*];
    };
}

macro_rules! clean {
    ($($(#[$m:meta])* $name:ident: $path:literal => $how:expr;)*) => {
        $( $(#[$m])* #[test] fn $name() { check_clean($path, $how) } )*
        /// Every xfstests trace this file tests (ignored or not).
        const CLEAN: &[&str] = &[$($path),*];
    };
}

races! {
    bugs_pmd_missed_wakeup: "traces/bugs/pmd-missed-wakeup.trace";
    bugs_pmd_conflict_before_null: "traces/bugs/pmd-conflict-before-null.trace";
    bugs_no_entry_lock: "traces/bugs/no-entry-lock.trace";
    /// Three threads; bound 2 without the mode: 150,642 runs, exhausted, clean.
    bugs_hole_wake_next: "traces/bugs/hole-wake-next.trace";
    bugs_pmd_pte_collide: "traces/bugs/pmd-pte-collide.trace";
    bugs_stale_huge_zero_page: "traces/bugs/stale-huge-zero-page.trace";
    bugs_mixed_mapping_association: "traces/bugs/mixed-mapping-association.trace";
    bugs_shadow_entries: "traces/bugs/shadow-entries.trace";
    bugs_mf_speculative_page_lock: "traces/bugs/mf-speculative-page-lock.trace";
    /// Four threads; bound 2 without the mode: 1,046,886 runs, exhausted, clean (the costliest
    /// check here, see [`CLEAN_BOUND`]).
    bugs_invalidate_wake_next: "traces/bugs/invalidate-wake-next.trace";
    /// Bound 2 without the mode: 6,662 runs, exhausted, clean.
    bugs_busy_scan_skips_locked: "traces/bugs/busy-scan-skips-locked.trace";
    bugs_pmd_writeback_no_wrprotect: "traces/bugs/pmd-writeback-no-wrprotect.trace";
    /// Three threads; bound 2 without the mode: 68,431 runs, exhausted, clean.
    bugs_lock_entry_exclusive_wait: "traces/bugs/lock-entry-exclusive-wait.trace";
    bugs_no_mmaplock: "traces/bugs/no-mmaplock.trace";
    /// Bound 2 without the mode: 8,808 runs, exhausted, clean.
    bugs_reflink_page_mapping: "traces/bugs/reflink-page-mapping.trace";
    seeds_000_mf_vs_entry_locks: "traces/seeds/000-mf-vs-entry-locks.trace";
    /// Three threads; bound 2 without the mode: 28,422 runs, exhausted, clean.
    seeds_001_pmd_missed_wakeup: "traces/seeds/001-pmd-missed-wakeup.trace";
    seeds_002_fault_vs_truncate: "traces/seeds/002-fault-vs-truncate.trace";
    seeds_003_shadow_entries: "traces/seeds/003-shadow-entries.trace";
    /// Bound 2 without the mode: 8,421 runs, exhausted, clean.
    seeds_004_reflink_page_mapping: "traces/seeds/004-reflink-page-mapping.trace";
}

clean! {
    xfstests_generic_413: "traces/xfstests/generic-413.trace" => Clean::Pct(4);
    xfstests_generic_428: "traces/xfstests/generic-428.trace" => Clean::Dfs;
    xfstests_generic_437: "traces/xfstests/generic-437.trace" => Clean::Pct(40);
    xfstests_generic_462: "traces/xfstests/generic-462.trace" => Clean::Dfs;
    xfstests_generic_470: "traces/xfstests/generic-470.trace" => Clean::Dfs;
    xfstests_generic_503: "traces/xfstests/generic-503.trace" => Clean::Pct(40);
    xfstests_xfs_550: "traces/xfstests/xfs-550.trace" => Clean::Pct(40);
    xfstests_xfs_551: "traces/xfstests/xfs-551.trace" => Clean::Pct(40);
    xfstests_xfs_552: "traces/xfstests/xfs-552.trace" => Clean::Pct(40);
}

/// The bound-2 check of the xfstests patterns CI checks with pct ([`Clean::Pct`]). Release
/// figures (`pmsim explore T --strategy dfs --preemption-bound 2`, on the shared 2-core
/// machine, all exhausted and clean): generic/437 7,285 runs in 156 s, generic/503 20,864 runs
/// in 339 s, xfs/550 10,439 runs in 98 s, xfs/551 8,103 runs in 80 s, xfs/552 11,297 runs in
/// 107 s. Not here: generic/413 (runs of up to 33,033 steps: the 2 MiB store and write),
/// whose bound-2 space did not exhaust in 1,500 s, so its bound-2 cleanness is not verified.
/// pct (seed 0) is clean on them too: 2,000 runs of generic/413 (228 s) and generic/503, 300
/// runs of each of the others.
#[test]
#[ignore = "minutes of CPU even in a release build; run with --ignored --release"]
fn xfstests_are_clean_at_preemption_bound_2() {
    for rel in [
        "traces/xfstests/generic-437.trace",
        "traces/xfstests/generic-503.trace",
        "traces/xfstests/xfs-550.trace",
        "traces/xfstests/xfs-551.trace",
        "traces/xfstests/xfs-552.trace",
    ] {
        let s = shipped(rel);
        assert_clean_dfs(&s.path, rel, 2);
    }
}

/// The bug traces other branches ship with their modes (tested here once they are merged).
const ELSEWHERE: &[&str] = &[
    "traces/bugs/no-mmaplock.trace",
    "traces/bugs/reflink-page-mapping.trace",
];

/// Every `.trace` under traces/bugs, traces/seeds and traces/xfstests has a test above, and
/// every test's trace exists unless it is shipped by another branch.
#[test]
fn the_tests_cover_every_shipped_trace() {
    for (dir, listed) in [
        ("traces/bugs", RACES),
        ("traces/seeds", RACES),
        ("traces/xfstests", CLEAN),
    ] {
        let mut n = 0;
        for e in std::fs::read_dir(root().join(dir)).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if !name.ends_with(".trace") {
                continue;
            }
            n += 1;
            let rel = format!("{dir}/{name}");
            assert!(listed.contains(&rel.as_str()), "{rel} has no test");
            // Ignored or not, every shipped trace is valid to the format and says what it
            // models and expects.
            let (code, out, err) =
                pmsim(&["check-trace", &root().join(&rel).display().to_string()]);
            assert_eq!(code, 0, "{rel}: {out}{err}");
            let s = shipped(&rel);
            assert!(
                s.text.trim_start().starts_with('#'),
                "{rel}: no leading comment"
            );
            if dir == "traces/xfstests" {
                assert!(
                    s.bugs.is_empty(),
                    "{rel}: an xfstests pattern has no bug mode"
                );
            } else {
                assert_eq!(s.bugs.len(), 1, "{rel}: one `bug` line");
                // The traces other branches ship get their `# expect:` when their tests here
                // are enabled.
                assert!(
                    !s.expect.is_empty() || ELSEWHERE.contains(&rel.as_str()),
                    "{rel}: no `# expect: KIND`"
                );
            }
        }
        assert!(n > 0, "{dir} is empty");
    }
    for rel in RACES.iter().chain(CLEAN) {
        assert!(
            root().join(rel).exists() || ELSEWHERE.contains(rel),
            "{rel} is tested but not shipped"
        );
    }
}

/// Every trace the catalogue names exists, declares its mode, says what it expects and is
/// tested here; `pmsim bugs` prints it; every DAX-core mode has a shipped trace (here, or under
/// traces/crash/ for the modes `pmsim crashcheck` judges).
#[test]
fn the_catalogue_names_each_modes_trace() {
    let (code, out, _) = pmsim(&["bugs"]);
    assert_eq!(code, 0);
    let mut named = 0;
    for m in sim_mm::bugs::BUG_MODES {
        let Some(rel) = m.trace() else { continue };
        named += 1;
        assert!(
            RACES.contains(&rel),
            "{}: {rel} is not a tested traces/bugs trace",
            m.name
        );
        let s = shipped(rel);
        assert_eq!(s.bugs, vec![m.name.to_string()], "{rel} declares its mode");
        assert!(
            !s.expect.is_empty() || ELSEWHERE.contains(&rel),
            "{rel}: no `# expect:`"
        );
        // A `# check: crashcheck` trace is named with the command that judges it.
        let cmd = if s.crashcheck {
            "crashcheck"
        } else {
            "explore"
        };
        assert_eq!(
            m.trace_command(),
            cmd,
            "{rel}: `# check:` and the catalogue"
        );
        let line = format!("shipped trace: pmsim {cmd} {rel}");
        assert!(out.contains(&line), "`pmsim bugs` does not print {line:?}");
    }
    for b in sim_mm::dax::DaxBug::ALL {
        let crash = format!("traces/crash/{b}.trace");
        assert!(
            b.trace().is_some() || root().join(&crash).exists(),
            "{b}: a DAX-core mode ships its trace"
        );
    }
    assert!(named > 0);
}

#[test]
fn expect_comments_match_exactly_or_by_prefix() {
    let e = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert!(kind_matches(&e(&["lost-wakeup"]), "lost-wakeup"));
    assert!(!kind_matches(&e(&["lost-wakeup"]), "deadlock"));
    assert!(kind_matches(&e(&["assertion:"]), "assertion:dax-data-loss"));
    assert!(!kind_matches(
        &e(&["assertion:"]),
        "invariant:wrong-association"
    ));
    assert!(kind_matches(&e(&["data", "invariant:x"]), "invariant:x"));
    assert!(!kind_matches(&e(&["invariant:x"]), "invariant:xy"));
}
