//! The media bench of the optane-like preset against the published characterisation.

use sim_core::machine::bench::{TOLERANCE_PCT, run_media_bench};

#[test]
fn optane_like_rows_are_within_tolerance_of_the_paper() {
    let report = run_media_bench("optane-like", &[]).expect("bench runs");
    println!("{report}");
    let compared = report.rows.iter().filter(|r| r.paper.is_some()).count();
    // Latency, persist, access-size and thread-count rows all carry a paper value.
    assert!(compared >= 25, "only {compared} rows compared");
    let bad: Vec<String> = report
        .out_of_tolerance()
        .iter()
        .map(|r| format!("{} / {}: {:.2} vs {:?}", r.group, r.name, r.model, r.paper))
        .collect();
    assert!(bad.is_empty(), "rows beyond {TOLERANCE_PCT}%: {bad:#?}");
}

#[test]
fn unknown_media_and_parameters_are_errors() {
    let err = run_media_bench("flash", &[]).unwrap_err();
    assert!(err.contains("optane-like"));
    let err = run_media_bench("dram", &[("speed".into(), "1".into())]).unwrap_err();
    assert!(err.contains("valid keys"));
}
