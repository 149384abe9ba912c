//! `pmsim bench media --workload ...`: the point query prints JSON and rejects impossible
//! requests with exit 2 and a message naming the bad flag.

use std::process::Command;

fn pmsim(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pmsim"))
        .args(["bench", "media"])
        .args(args)
        .output()
        .expect("pmsim runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_point_query_prints_bandwidth_and_latency_as_json() {
    let (rc, out, err) = pmsim(&[
        "--workload",
        "ntstore",
        "--size",
        "256",
        "--threads",
        "2",
        "--dimms",
        "1",
        "--json",
    ]);
    assert_eq!(rc, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let bw = v["bandwidth_gbps"].as_f64().expect("bandwidth_gbps");
    let lat = v["latency_ns"].as_f64().expect("latency_ns");
    // One DIMM's media write rate bounds ntstore bandwidth (2.2 GB/s, pm_hw.md section 1).
    assert!(bw > 1.0 && bw < 2.6, "{bw}");
    assert!(lat > 0.0);
}

#[test]
fn impossible_point_queries_exit_2_with_a_clear_message() {
    for (args, needle) in [
        (vec!["--threads", "0"], "--threads"),
        (vec!["--threads", "49"], "--threads"),
        (vec!["--size", "100"], "--size"),
        (vec!["--size", "0"], "--size"),
        (vec!["--dimms", "7"], "--dimms"),
        (vec!["--dimms", "0"], "--dimms"),
        (vec!["--fence-every", "10"], "--fence-every"),
        (vec!["--mix", "3"], "--mix"),
        (vec!["--pattern", "zigzag"], "--pattern"),
    ] {
        let mut all = vec!["--workload", "ntstore"];
        all.extend(&args);
        let (rc, _, err) = pmsim(&all);
        assert_eq!(rc, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let (rc, _, err) = pmsim(&["--workload", "flash"]);
    assert_eq!(rc, 2);
    assert!(err.contains("read, ntstore, clwb, store"), "{err}");
}
