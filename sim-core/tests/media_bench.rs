//! The media bench of the optane-like preset against the published characterisation.

use sim_core::machine::bench::{TOLERANCE_PCT, run_media_bench, run_media_comparison};

#[test]
fn optane_like_rows_are_within_tolerance_of_the_paper() {
    let report = run_media_comparison("optane-like", &[]).expect("bench runs");
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

#[test]
fn an_override_that_slows_the_media_shows_as_an_error() {
    // Twice the media write time halves the write bandwidth: the comparison must notice.
    let slow = [("write_service_ns".to_string(), "232".to_string())];
    let report = run_media_comparison("optane-like", &slow).expect("bench runs");
    let bad = report.out_of_tolerance();
    assert!(bad.iter().any(|r| r.name.starts_with("ntstore")));
    assert!(!bad.iter().any(|r| r.name.starts_with("read")));
}

#[test]
fn the_full_report_has_both_matrices_and_prints_them() {
    let report = run_media_bench("dram", &[]).expect("bench runs");
    assert_eq!(report.matrices.len(), 2);
    for m in &report.matrices {
        assert_eq!(m.gbps.len(), m.sizes.len());
        assert!(m.gbps.iter().all(|r| r.len() == m.threads.len()));
        assert!(m.gbps.iter().flatten().all(|v| *v > 0.0));
    }
    let text = report.to_string();
    println!("{text}");
    assert!(text.contains("read, random 64 B") && text.contains("ntstore write bandwidth"));
    assert!(report.out_of_tolerance().is_empty(), "{text}");
}
