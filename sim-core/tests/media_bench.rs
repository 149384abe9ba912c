//! The media bench of the optane-like preset against the published characterisation.

use sim_core::machine::bench::{
    MediaBenchReport, TOLERANCE_PCT, run_media_bench, run_media_comparison,
};

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
    // Check rows are reported beside the calibration rows; a check may miss (it is printed with
    // its error), but each carries its source and lies within a factor of two of it.
    let checks: Vec<_> = report.rows.iter().filter(|r| r.role == "check").collect();
    assert!(checks.len() >= 3, "{} check rows", checks.len());
    for r in checks {
        assert!(r.source.is_some(), "{}", r.name);
        assert!(r.error_pct.is_some_and(|e| e.abs() < 100.0), "{r:?}");
    }
    latencies_through_the_seam_are_the_machine_latencies(&report);
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

/// The bench measures latencies through a Sim; the same operations on a bare Machine, each
/// starting when the previous one ended, give the same figures: the seam adds no time.
fn latencies_through_the_seam_are_the_machine_latencies(report: &MediaBenchReport) {
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use sim_core::machine::{Machine, MachineConfig};
    const REGION: u64 = 1 << 30;
    const SEED: u64 = 0x5eed;
    let machine = || {
        let mut cfg = MachineConfig::new("optane-like").unwrap();
        cfg.set("cpus", "1").unwrap();
        cfg.set("pmem", "1GiB").unwrap();
        Machine::new(cfg).unwrap()
    };
    let mut m = machine();
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let (mut t, mut buf) = (0u64, [0u8; 8]);
    for _ in 0..1024 {
        let addr = rng.random_range(0..REGION / 64) * 64;
        t += m.load(t, 0, addr, &mut buf).unwrap();
    }
    let random_read = t as f64 / 1024.0;
    let mut m = machine();
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let (mut t, mut total) = (0u64, 0u64);
    for _ in 0..64 {
        t += 100_000;
        let start = t;
        let base = rng.random_range(0..REGION / 4096) * 4096;
        for a in (base..base + 4096).step_by(64) {
            t += m.store(t, 0, a, &[0xa5; 64]).unwrap();
            t += m.clwb(t, 0, a).unwrap();
        }
        t += m.sfence(t, 0).unwrap();
        total += t - start;
    }
    let persist_4k = total as f64 / 64.0;
    let row = |name: &str| {
        report
            .rows
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("row {name}"))
            .model
    };
    assert_eq!(row("read, random 64 B"), random_read);
    assert_eq!(row("persist 4 KiB, store+clwb+sfence"), persist_4k);
}
