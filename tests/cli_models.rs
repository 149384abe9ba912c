//! End-to-end tests of the built-in DAX models (`--model`): search, replay, reports, outputs,
//! and the errors of bug modes a subject cannot reach.

mod common;
use common::{code, err, out, pmsim_output as pmsim};

/// The violation part of a human report: after its kind line (which names the run) up to the
/// schedule line.
fn violation(s: &str) -> Vec<String> {
    s.lines()
        .skip_while(|l| !l.starts_with("VIOLATION"))
        .skip(1)
        .take_while(|l| !l.starts_with("schedule:"))
        .map(str::to_string)
        .collect()
}

/// The arguments of the replay command a human report prints (after `pmsim`).
fn replay_args(report: &str) -> Vec<String> {
    let mut words = common::printed_replay(report);
    assert_eq!(words.remove(0), "pmsim", "{report}");
    words
}

#[test]
fn seed_001_is_found_by_every_strategy_and_its_replay_reproduces_it() {
    for strategy in [
        vec![],
        vec!["--strategy", "random"],
        vec!["--strategy", "pct", "--depth", "3", "--seed", "7"],
        vec!["--strategy", "dfs", "--preemption-bound", "2"],
    ] {
        let mut args = vec![
            "explore",
            "--model",
            "seed-001",
            "--bug",
            "pmd-missed-wakeup",
        ];
        args.extend(&strategy);
        let o = pmsim(&args);
        assert_eq!(code(&o), 1, "{args:?}: {} {}", out(&o), err(&o));
        let report = out(&o);
        if strategy.is_empty() {
            // The default strategy for a model is pct.
            assert!(report.contains(": pct --depth 2, seed 0x0"), "{report}");
        }
        assert!(report.contains("VIOLATION lost-wakeup"), "{report}");
        // The report names the DAX functions on each task's path.
        assert!(
            report.contains(
                "in exc_page_fault > handle_mm_fault > ->huge_fault > dax_iomap_fault > \
                 dax_iomap_pmd_fault > grab_mapping_entry > get_next_unlocked_entry"
            ),
            "{report}"
        );
        assert!(
            report.contains("dax_iomap_pte_fault > dax_unlock_entry > dax_wake_entry"),
            "{report}"
        );
        let replay = replay_args(&report);
        assert_eq!(
            &replay[..5],
            [
                "replay",
                "--model",
                "seed-001",
                "--bug",
                "pmd-missed-wakeup"
            ]
        );
        let refs: Vec<&str> = replay.iter().map(String::as_str).collect();
        let again = pmsim(&refs);
        assert_eq!(code(&again), 1, "{refs:?}: {}", err(&again));
        assert_eq!(violation(&out(&again)), violation(&report));
        // Without the mode the same schedule does not fit (another run), or runs clean.
        let without: Vec<&str> = refs
            .iter()
            .copied()
            .filter(|a| *a != "--bug" && *a != "pmd-missed-wakeup")
            .collect();
        assert_ne!(code(&pmsim(&without)), 1, "{without:?}");
    }
}

#[test]
fn seed_001_without_the_mode_exhausts_the_bounded_space_clean() {
    let o = pmsim(&[
        "explore",
        "--model",
        "seed-001",
        "--strategy",
        "dfs",
        "--preemption-bound",
        "2",
    ]);
    assert_eq!(code(&o), 0, "{} {}", out(&o), err(&o));
    let report = out(&o);
    assert!(
        report.contains("exhausted the search space: no violation in any schedule"),
        "{report}"
    );
    // (10544 before faults checked the badblocks (HWPoison) of the pages they map: one step
    // more; 11840 before xa_lock sections became atomic, `sim` "Atomic sections": fewer steps.)
    assert!(report.contains("10196 runs"), "{report}");
}

#[test]
fn every_model_finds_its_mode_with_the_default_strategy() {
    let bugs = pmsim(&["bugs"]);
    let listing = out(&bugs);
    let help = out(&pmsim(&["help", "explore"]));
    for m in &sim_mm::dax::models::MODELS {
        let mode = m.shows.name();
        // `pmsim bugs` and `pmsim help explore` name the model.
        assert!(
            listing.contains(&format!(
                "model: pmsim explore --model {} --bug {mode}",
                m.name
            )),
            "{listing}"
        );
        assert!(help.contains(&format!("{} ({mode}", m.name)), "{help}");
        let o = pmsim(&["explore", "--model", m.name, "--bug", mode, "--json"]);
        assert_eq!(code(&o), 1, "{}: {}", m.name, err(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
        assert_eq!(v["result"], "violation");
        let kind = v["failure"]["kind"].as_str().unwrap();
        assert!(kind.starts_with(m.finds), "{}: {kind}", m.name);
        assert!(
            v["failure"]["replay"]
                .as_str()
                .unwrap()
                .contains(&format!("--model {} --bug {mode}", m.name))
        );
        assert!(v["failure"]["tasks"][0]["path"].is_array());
    }
    for line in listing
        .lines()
        .filter(|l| !l.starts_with(' ') && l.contains(" implemented ") && l.contains("fixed by"))
    {
        let name = line.split_whitespace().next().unwrap();
        assert!(
            listing.contains(&format!("--bug {name}\n")) || listing.contains("reachable from"),
            "{name}"
        );
    }
    assert!(listing.contains("mechanism: get_next_unlocked_entry: no order check"));
}

#[test]
fn events_and_json_of_a_model_run() {
    let dir = std::env::temp_dir().join(format!("pmsim-cli-models-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ev = dir.join("seed.events");
    let ev_s = ev.display().to_string();
    let o = pmsim(&[
        "explore",
        "--model",
        "seed-001",
        "--bug",
        "pmd-missed-wakeup",
        "--json",
        "--events",
        &ev_s,
    ]);
    assert_eq!(code(&o), 1, "{}", err(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(
        v["subject"],
        "DAX model seed-001 with bug pmd-missed-wakeup"
    );
    let tasks = v["failure"]["tasks"].as_array().unwrap();
    let sleeper = tasks
        .iter()
        .find(|t| t["status"] == "asleep")
        .expect("a sleeper");
    assert_eq!(
        sleeper["path"].as_array().unwrap().last().unwrap(),
        "get_next_unlocked_entry"
    );
    let log = sim_core::events::EventLog::from_bincode(&std::fs::read(&ev).unwrap()).unwrap();
    assert_eq!(
        format!("{:016x}", log.hash),
        v["failure"]["hash"].as_str().unwrap()
    );
    assert_eq!(
        log.tasks,
        ["setup", "p0 write 0x205", "p1 read 0x258", "p2 read 0x208"]
    );
    // A clean run's log, and the determinism check.
    let o = pmsim(&["run", "--model", "no-entry-lock", "--events", &ev_s]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let o = pmsim(&[
        "run",
        "--model",
        "no-entry-lock",
        "--bug",
        "no-entry-lock",
        "--strategy",
        "random",
        "--check-determinism",
    ]);
    assert_eq!(code(&o), 0, "{} {}", out(&o), err(&o));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bug_modes_a_subject_cannot_reach_are_usage_errors() {
    for args in [
        // An implemented mode on a toy (no DAX core there); an unknown mode on a trace.
        vec!["run", "--toy", "abba", "--bug", "pmd-missed-wakeup"],
        vec!["run", "traces/format/time.trace", "--bug", "nope"],
        // A mode decided outside the fault paths, or not implemented.
        vec![
            "run",
            "--model",
            "seed-001",
            "--bug",
            "invalidate-wake-next",
        ],
        vec!["run", "--model", "seed-001", "--bug", "no-mmaplock"],
        vec!["run", "--model", "seed-001", "--bug", "nope"],
        vec!["run", "--model", "nope"],
        vec!["run", "--model", "seed-001", "--toy", "abba"],
        vec!["run", "--model", "seed-001", "traces/format/time.trace"],
    ] {
        let o = pmsim(&args);
        assert_eq!(code(&o), 2, "{args:?}: {} {}", out(&o), err(&o));
        assert!(o.stdout.is_empty(), "{args:?}");
        assert!(!err(&o).contains("panicked"), "{args:?}");
    }
    let o = pmsim(&["run", "--toy", "abba", "--bug", "pmd-missed-wakeup"]);
    assert!(
        err(&o).contains("pmsim explore --model seed-001 --bug pmd-missed-wakeup"),
        "{}",
        err(&o)
    );
    // A trace naming an implemented mode is valid and runs on the full stack: check-trace
    // adds no note, and one trace-order run takes the path without the race.
    let trace = "traces/format/pmd_missed_wakeup.trace";
    let o = pmsim(&["check-trace", trace]);
    assert_eq!(code(&o), 0);
    assert!(!out(&o).contains("note: bug mode"), "{}", out(&o));
    let o = pmsim(&["run", trace]);
    assert!(matches!(code(&o), 0 | 1), "{} {}", out(&o), err(&o));
    // Every catalogue mode is implemented in this build (torn-inode-size was the last planned
    // one): a trace naming it runs, and an unknown name is refused at its position.
    assert!(sim_mm::bugs::BUG_MODES.iter().all(|m| m.available));
    let dir = std::env::temp_dir().join(format!("pmsim-cli-models-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let named = dir.join("named.trace");
    std::fs::write(&named, "pmsim-trace 1\nbug torn-inode-size\nt1 yield\n").unwrap();
    let o = pmsim(&["run", &named.display().to_string()]);
    assert_eq!(code(&o), 0, "{} {}", out(&o), err(&o));
    let unknown = dir.join("unknown.trace");
    std::fs::write(&unknown, "pmsim-trace 1\nbug nope\nt1 yield\n").unwrap();
    let o = pmsim(&["run", &unknown.display().to_string()]);
    assert_eq!(code(&o), 2, "{} {}", out(&o), err(&o));
    assert!(err(&o).contains("unknown.trace:2:5:"), "{}", err(&o));
    std::fs::remove_dir_all(&dir).ok();
}
