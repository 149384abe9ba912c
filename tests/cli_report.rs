//! Failure and run reports end to end: for the 2019 PMD missed wake-up trace, the report names
//! each thread's trace line, call path, locks and wait key, and tells the causal story (a few
//! steps, each a step of the event log); the printed replay command reproduces it; `run --json`
//! has the violations list and per-thread stats.

mod common;
use common::pmsim;
use serde_json::Value;
use sim_core::events::EventLog;
use std::path::PathBuf;

const SEED: &str = "traces/format/pmd_missed_wakeup.trace";

fn scratch(name: &str) -> String {
    common::scratch_path("cli_report", name)
}

#[test]
fn the_failure_report_names_lines_paths_locks_wait_key_and_tells_the_story() {
    let (code, out, err) = pmsim(&["explore", SEED]);
    assert_eq!(code, 1, "{out}{err}");
    // t2's PMD fault sleeps in get_next_unlocked_entry on the PMD-aligned key {xa, 0}.
    assert!(
        out.contains(&format!(
            "t2 [asleep] line 8 ({SEED}:8: `t2 load b+0 8 => 0x11`)"
        )),
        "{out}"
    );
    assert!(
        out.contains(
            "in exc_page_fault > handle_mm_fault > ->huge_fault > dax_iomap_fault > \
                      dax_iomap_pmd_fault > grab_mapping_entry > get_next_unlocked_entry"
        ),
        "{out}"
    );
    let t2 = out.split("  t2 [asleep]").nth(1).unwrap();
    let t2 = t2.split("\nthe failing run").next().unwrap();
    assert!(t2.contains("holds: invalidate_lock#"), "{t2}");
    assert!(t2.contains("mmap_lock#"), "{t2}");
    assert!(t2.contains("sleeps on dax_wait_table#"), "{t2}");
    assert!(t2.contains("key {0x1, 0x0} (exclusive)"), "{t2}");
    assert!(t2.contains("ran: 1 statement, 1 fault (1 PMD)"), "{t2}");
    // t1's PTE fault woke the PTE's key {xa, 5}: another key, another bucket.
    assert!(
        out.contains(&format!("t1 [finished] line 7 ({SEED}:7:")),
        "{out}"
    );
    assert!(out.contains("key {0x1, 0x5} (WAKE_NEXT)"), "{out}");
    // The story: the sleeper queueing, the wake-up that missed it, and t2's pending sleep.
    let story = out
        .split("causal story (")
        .nth(1)
        .expect("a causal story")
        .split("\nschedule:")
        .next()
        .unwrap();
    assert!(story.contains("prepare_to_wait dax_wait_table#"), "{story}");
    assert!(story.contains("key {_, 0x0}"), "{story}");
    assert!(story.contains("wake_up dax_wait_table#"), "{story}");
    assert!(story.contains("key {_, 0x5}"), "{story}");
    assert!(story.contains("then   t2 [asleep]"), "{story}");
    let steps = story.lines().filter(|l| l.starts_with("  #")).count();
    assert!((3..=24).contains(&steps), "{story}");
    // The printed replay command reproduces the same violation and story.
    let replay = out
        .lines()
        .find_map(|l| l.strip_prefix("replay:   pmsim "))
        .expect("a replay command");
    let sched = replay.split('\'').nth(1).unwrap();
    let (code2, out2, _) = pmsim(&["replay", SEED, "--schedule", sched]);
    assert_eq!(code2, 1, "{out2}");
    assert!(out2.contains("VIOLATION lost-wakeup"), "{out2}");
    let story2 = out2.split("causal story (").nth(1).unwrap();
    assert_eq!(
        story2.split("\nschedule:").next(),
        Some(story),
        "same story"
    );
}

#[test]
fn json_failure_has_violations_stats_and_a_story_inside_the_event_log() {
    let ev = scratch("seed.events");
    let (code, out, err) = pmsim(&["explore", SEED, "--json", "--events", &ev]);
    assert_eq!(code, 1, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["result"], "violation");
    let viol = &v["violations"][0];
    assert_eq!(viol["kind"], "lost-wakeup");
    assert_eq!(viol["thread"], "t2");
    assert_eq!(viol["line"], 8);
    assert_eq!(viol["location"], format!("{SEED}:8"));
    assert!(
        viol["message"]
            .as_str()
            .unwrap()
            .contains("no live task can wake it")
    );
    assert_eq!(
        viol["path"].as_array().unwrap().last().unwrap(),
        "get_next_unlocked_entry"
    );
    let replay = v["replay"].as_str().unwrap();
    assert!(replay.contains(v["schedule"].as_str().unwrap()), "{replay}");
    assert_eq!(viol["replay"], v["replay"]);
    // The old keys stay.
    assert_eq!(v["failure"]["kind"], "lost-wakeup");
    assert_eq!(v["failure"]["schedule"], v["schedule"]);
    let t2 = v["failure"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "t2")
        .unwrap();
    assert!(t2["wait_key"].as_str().unwrap().contains("key {0x1, 0x0}"));
    assert_eq!(t2["holds"].as_array().unwrap().len(), 2, "{t2}");
    let loc = &v["failure"]["locations"];
    assert_eq!(loc["t2"]["location"], format!("{SEED}:8"));
    assert_eq!(loc["t2"]["statement"], "t2 load b+0 8 => 0x11");
    assert_eq!(loc["t1"]["location"], format!("{SEED}:7"));
    // Stats of the failing run.
    let threads = &v["stats"]["threads"];
    assert_eq!(threads["t1"]["statements"], 2);
    assert_eq!(threads["t1"]["faults"]["pte"], 1);
    assert_eq!(threads["t2"]["statements"], 1, "its load never returned");
    assert_eq!(threads["t2"]["faults"]["pmd"], 1);
    assert_eq!(threads["t2"]["signals"]["sigbus"], 0);
    // The story: much shorter than the log, and every step of it is in the log.
    let log = EventLog::from_bincode(&std::fs::read(&ev).unwrap()).unwrap();
    let story = v["failure"]["story"]["steps"].as_array().unwrap();
    assert!(!story.is_empty());
    assert!(
        story.len() * 3 <= log.events.len(),
        "{} story steps of {} events",
        story.len(),
        log.events.len()
    );
    for s in story {
        let n = s["step"].as_u64().unwrap() as u32;
        let e = log
            .events
            .iter()
            .find(|e| e.step == n)
            .unwrap_or_else(|| panic!("story step #{n} is not in the log"));
        assert_eq!(e.task.0 as u64, s["task"].as_u64().unwrap(), "#{n}");
        assert_eq!(e.line as u64, s["line"].as_u64().unwrap(), "#{n}");
        assert_eq!(log.tasks[e.task.0 as usize], s["task_name"], "#{n}");
    }
}

#[test]
fn run_json_of_a_clean_run_has_an_empty_violations_list_and_stats() {
    let (code, out, err) = pmsim(&["run", SEED, "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["result"], "clean");
    assert_eq!(v["violations"], serde_json::json!([]));
    assert_eq!(v["schedule"], Value::Null);
    let threads = &v["stats"]["threads"];
    for t in ["t1", "t2"] {
        assert_eq!(threads[t]["statements"], 2, "{t}: {out}");
        assert_eq!(threads[t]["signals"]["sigbus"], 0, "{t}");
        assert_eq!(threads[t]["signals"]["sigsegv"], 0, "{t}");
        assert_eq!(threads[t]["unmet_expectations"], 0, "{t}");
    }
    // In trace order t1's PTE fault runs first; t2's PMD fault then meets its PTE entry and
    // falls back to a PTE.
    assert_eq!(threads["t1"]["faults"]["pte"], 1, "{out}");
    assert_eq!(threads["t1"]["mapped"]["pte"], 1, "{out}");
    assert_eq!(threads["t2"]["faults"]["fallback"], 1, "{out}");
    assert_eq!(threads["t2"]["mapped"]["pte"], 1, "{out}");
    // The text report says the same.
    let (_, text, _) = pmsim(&["run", SEED]);
    assert!(
        text.contains("t1: 2 statements, 1 fault (1 PTE), signals: none"),
        "{text}"
    );
    assert!(
        text.contains("t2: 2 statements, 1 fault (1 PMD fallback to PTE), signals: none"),
        "{text}"
    );
}

#[test]
fn run_json_of_a_failing_run_lists_the_violation_with_thread_line_path_and_story() {
    // In trace order t1's store comes first, so t2's load sees 0x22, not the 0x11 it expects.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli_report");
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("unmet.trace");
    std::fs::write(
        &trace,
        "pmsim-trace 1\nmachine cpus=2\nfile /f size=2MiB fill=0x11 prealloc\n\
         t1 mmap /f 0 2MiB shared as a\nt2 mmap /f 0 2MiB shared as b\n\
         t1 store a+0 8 0x22\nt2 load b+0 8 => 0x11\n",
    )
    .unwrap();
    let path = trace.display().to_string();
    let (code, out, err) = pmsim(&["run", &path, "--json"]);
    assert_eq!(code, 1, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["result"], "violation");
    let viol = v["violations"].as_array().unwrap();
    assert_eq!(viol.len(), 1);
    assert_eq!(viol[0]["kind"], "assertion:trace-expectation");
    assert_eq!(viol[0]["thread"], "t2");
    assert_eq!(viol[0]["line"], 7);
    assert_eq!(viol[0]["location"], format!("{path}:7"));
    assert!(
        viol[0]["message"]
            .as_str()
            .unwrap()
            .contains("expected 0x11")
    );
    assert!(
        viol[0]["replay"]
            .as_str()
            .unwrap()
            .starts_with("pmsim replay ")
    );
    assert_eq!(v["stats"]["threads"]["t2"]["unmet_expectations"], 1);
    assert_eq!(v["stats"]["threads"]["t1"]["unmet_expectations"], 0);
    // The story ends at t2's load of the line t1's store wrote.
    let story = v["failure"]["story"]["steps"].as_array().unwrap();
    let last = story.last().unwrap();
    assert_eq!(last["task_name"], "t2");
    assert!(
        last["what"].as_str().unwrap().starts_with("read pmem "),
        "{last}"
    );
    let line = last["what"].as_str().unwrap().trim_start_matches("read ");
    assert!(
        story
            .iter()
            .any(|s| s["task_name"] == "t1" && s["what"] == format!("write {line}")),
        "t1's conflicting store is in the story: {story:?}"
    );
}
