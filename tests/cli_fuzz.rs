//! A fuzz test of the command line itself: random subcommands, flags, values and files, 10,000
//! cases run in-process through `pmsim::run` and 200 more through the binary. No case may
//! panic or exit with a code outside 0-3.
//!
//! The only test in this binary, because it changes the current directory (a long failing
//! schedule without `--events` is written to the current directory).

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::ffi::OsString;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

const CASES: usize = 10_000;
const SPAWNED: usize = 200;

fn pick<'a, T>(rng: &mut StdRng, xs: &'a [T]) -> &'a T {
    &xs[rng.random_range(0..xs.len())]
}

/// Files for the fuzzer: valid and malformed traces, mutants, random bytes, a directory, a
/// link, devices, absent paths.
struct Files {
    inputs: Vec<String>,
    outputs: Vec<String>,
    schedules: Vec<String>,
}

fn mutate(rng: &mut StdRng, src: &[u8]) -> Vec<u8> {
    let mut b = src.to_vec();
    for _ in 0..rng.random_range(1..6) {
        let i = rng.random_range(0..=b.len());
        match rng.random_range(0..3) {
            0 if i < b.len() => {
                b.remove(i);
            }
            1 => b.insert(i, *pick(rng, b" \n=+:#x0Fz-\"\t\xff")),
            _ if i < b.len() => b[i] = rng.random(),
            _ => {}
        }
    }
    b
}

fn setup(dir: &Path, rng: &mut StdRng) -> Files {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut corpus: Vec<PathBuf> = Vec::new();
    for sub in ["traces/format", "traces/malformed"] {
        let mut v: Vec<PathBuf> = std::fs::read_dir(root.join(sub))
            .expect("traces")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "trace"))
            .collect();
        v.sort();
        corpus.extend(v);
    }
    let mut inputs: Vec<String> = corpus.iter().map(|p| p.display().to_string()).collect();
    // Runnable traces: scheduling statements only, one to three threads.
    for i in 0..8 {
        let mut t = String::from("pmsim-trace 1\n");
        if rng.random_bool(0.5) {
            t.push_str(&format!(
                "machine seed={} cpus={}\n",
                i,
                rng.random_range(1..5)
            ));
        }
        for _ in 0..rng.random_range(1..12) {
            let th = rng.random_range(1..4);
            match rng.random_range(0..3) {
                0 => t.push_str(&format!("t{th} sleep {}ns\n", rng.random_range(0..100))),
                1 => t.push_str(&format!("t{th} yield => any\n")),
                _ => t.push_str(&format!("t{th} yield\n")),
            }
        }
        let p = dir.join(format!("gen{i}.trace"));
        std::fs::write(&p, &t).unwrap();
        inputs.push(p.display().to_string());
    }
    for i in 0..24 {
        let src = std::fs::read(pick(rng, &corpus)).unwrap();
        let p = dir.join(format!("mut{i}.trace"));
        std::fs::write(&p, mutate(rng, &src)).unwrap();
        inputs.push(p.display().to_string());
    }
    for i in 0..4 {
        let n = rng.random_range(0..300);
        let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
        let p = dir.join(format!("rand{i}.trace"));
        std::fs::write(&p, bytes).unwrap();
        inputs.push(p.display().to_string());
    }
    let sub = dir.join("a-directory");
    std::fs::create_dir_all(&sub).unwrap();
    let link = dir.join("link.trace");
    std::os::unix::fs::symlink(&corpus[0], &link).unwrap();
    for p in [sub.clone(), link.clone(), dir.join("absent.trace")] {
        inputs.push(p.display().to_string());
    }
    inputs.push("/dev/null".into());
    inputs.push("".into());

    let events_link = dir.join("events-link");
    std::os::unix::fs::symlink(dir.join("events-target"), &events_link).unwrap();
    let outputs = vec![
        dir.join("out.events").display().to_string(),
        dir.join("out2.events").display().to_string(),
        events_link.display().to_string(),
        sub.display().to_string(),
        dir.join("no/such/dir/x").display().to_string(),
        "/dev/null".into(),
        "/dev/full".into(),
        "/dev/stdout".into(),
        "/proc/pmsim-fuzz.events".into(),
        "".into(),
    ];
    let mut schedules = Vec::new();
    for (i, text) in ["1:0:01", "1:0:0", "1:2a:0(3)1{40}0", "garbage", ""]
        .iter()
        .enumerate()
    {
        let p = dir.join(format!("s{i}.schedule"));
        std::fs::write(&p, text).unwrap();
        schedules.push(p.display().to_string());
    }
    schedules.push(sub.display().to_string());
    schedules.push("/dev/null".into());
    schedules.push(dir.join("absent.schedule").display().to_string());
    Files {
        inputs,
        outputs,
        schedules,
    }
}

const NUMBERS: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "7",
    "-1",
    "0x10",
    "0X1f",
    "1e3",
    "abc",
    "",
    " 5",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "0.5",
];
const BUDGETS: &[&str] = &[
    "0",
    "-1",
    "nan",
    "inf",
    "1e300",
    "18446744073709551615",
    "0.000000001",
    "0.005",
    "x",
];
const SCHEDULES: &[&str] = &[
    "1:0:01",
    "1:0:0",
    "1:0:",
    "1:0:10",
    "1:ffffffffffffffff:0(5)",
    "2:0:0",
    "1:zz:0",
    "1:0:{99}",
    "1:0:0(99999999999)",
    "1:0:01(",
    "",
    "1:0:z(3)",
];
const WORDS: &[&str] = &[
    "abba",
    "nope",
    "--",
    "-",
    "help",
    "dfs",
    "x=y",
    "\u{e9}t\u{e9}",
];

/// Arguments of run/explore/replay. `bounded` says whether the case may search for long, in
/// which case a short wall-clock budget is added.
fn run_args(rng: &mut StdRng, files: &Files, cmd: &str, v: &mut Vec<String>) {
    let mut replaying = cmd == "replay";
    match rng.random_range(0..10) {
        0..=4 => {
            v.push("--toy".into());
            let toys = [
                "abba",
                "abba-fixed",
                "lost-wakeup",
                "lost-wakeup-correct",
                "lw3x4",
                "nondeterministic",
                "nope",
            ];
            v.push(pick(rng, &toys).to_string());
        }
        5..=7 => v.push(pick(rng, &files.inputs).clone()),
        8 => {
            v.push("--model".into());
            let models = [
                "seed-001",
                "no-entry-lock",
                "hole-wake-next",
                "mixed-mapping",
                "nope",
            ];
            v.push(pick(rng, &models).to_string());
        }
        _ => {}
    }
    let mut budget = false;
    let mut runs = false;
    let mut determinism = false;
    for _ in 0..rng.random_range(0..6) {
        match rng.random_range(0..17) {
            0 => {
                v.push("--strategy".into());
                let s = *pick(
                    rng,
                    &["trace-order", "random", "pct", "dfs", "replay", "bogus"],
                );
                replaying |= s == "replay";
                v.push(s.into());
            }
            1 => {
                v.push("--seed".into());
                v.push(pick(rng, NUMBERS).to_string());
            }
            2 | 3 => {
                runs = true;
                v.push("--runs".into());
                v.push(pick(rng, &["0", "1", "2", "5", "20", "-1", "abc"]).to_string());
            }
            4 => {
                budget = true;
                v.push("--budget-secs".into());
                v.push(pick(rng, BUDGETS).to_string());
            }
            5 => {
                v.push("--preemption-bound".into());
                v.push(pick(rng, NUMBERS).to_string());
            }
            6 => {
                v.push("--depth".into());
                v.push(pick(rng, NUMBERS).to_string());
            }
            7 => {
                v.push("--bug".into());
                v.push(
                    pick(
                        rng,
                        &[
                            "pmd-missed-wakeup",
                            "no-entry-lock",
                            "no-mmaplock",
                            "nope",
                            "",
                        ],
                    )
                    .to_string(),
                );
            }
            8 => {
                replaying = true;
                v.push("--schedule".into());
                v.push(pick(rng, SCHEDULES).to_string());
            }
            9 => {
                replaying = true;
                v.push("--schedule-file".into());
                v.push(pick(rng, &files.schedules).clone());
            }
            10 => {
                v.push("--step-limit".into());
                v.push(pick(rng, &["0", "1", "5", "100", "1000000", "-3"]).to_string());
            }
            11 => v.push("--keep-going".into()),
            12 => v.push("--json".into()),
            13 => {
                v.push("--events".into());
                v.push(pick(rng, &files.outputs).clone());
            }
            14 => {
                determinism = true;
                v.push("--check-determinism".into());
            }
            15 => v.push(pick(rng, &["--bogus", "-x", "--toy", "--help"]).to_string()),
            _ => v.push(pick(rng, WORDS).to_string()),
        }
    }
    // Keep each case short: a small run count or a short budget, unless it is a replay (one
    // run) or already chose them.
    // (--check-determinism repeats one run and refuses both.)
    if !replaying && !determinism && !budget {
        v.push("--budget-secs".into());
        v.push("0.01".into());
    }
    if !replaying && !determinism && !runs && rng.random_bool(0.8) {
        v.push("--runs".into());
        v.push(pick(rng, &["1", "3", "10"]).to_string());
    }
}

fn case(rng: &mut StdRng, files: &Files) -> Vec<String> {
    let mut v = vec!["pmsim".to_string()];
    match rng.random_range(0..20) {
        0..=3 => {
            v.push("check-trace".into());
            if rng.random_bool(0.3) {
                v.push("--print".into());
            }
            for _ in 0..rng.random_range(0..4) {
                v.push(pick(rng, &files.inputs).clone());
            }
        }
        4..=7 => {
            v.push("run".into());
            run_args(rng, files, "run", &mut v);
        }
        8..=12 => {
            v.push("explore".into());
            run_args(rng, files, "explore", &mut v);
        }
        13..=15 => {
            v.push("replay".into());
            run_args(rng, files, "replay", &mut v);
        }
        16 => v.push("bugs".into()),
        17 => {
            // Only forms that fail before benchmarking: a real benchmark takes seconds.
            v.push("bench".into());
            match rng.random_range(0..4) {
                0 => {
                    v.push("engine".into());
                    v.push("--iters".into());
                    v.push(pick(rng, &["0", "-1", "abc", "99999999999999999999"]).to_string());
                }
                1 => {
                    v.push("media".into());
                    v.push("--media".into());
                    v.push(pick(rng, &["floppy", "", "optane"]).to_string());
                }
                2 => {
                    v.push("media".into());
                    if rng.random_bool(0.5) {
                        v.push("--media".into());
                        v.push(pick(rng, &["dram", "cxl-like", "optane-like"]).to_string());
                    }
                    v.push("--media-param".into());
                    v.push(
                        pick(
                            rng,
                            &[
                                "read_miss_ns=1e30",
                                "read_hit_ns=inf",
                                "tail_probability=1.5",
                                "ways=99999999999999",
                                "nonsense",
                                "=",
                                "read_miss_ns=",
                                "bogus=1",
                                "unit=-1",
                            ],
                        )
                        .to_string(),
                    );
                }
                _ => v.push(pick(rng, &["nope", "--json", ""]).to_string()),
            }
        }
        18 => {
            v.push(pick(rng, &["help", "--help", "-h", "--version", "-V"]).to_string());
            if rng.random_bool(0.5) {
                v.push(pick(rng, &["run", "explore", "bench", "nope"]).to_string());
            }
        }
        _ => {
            for _ in 0..rng.random_range(0..4) {
                v.push(pick(rng, WORDS).to_string());
            }
        }
    }
    v
}

#[test]
fn fuzz_the_command_line() {
    let dir = std::env::temp_dir().join(format!("pmsim-cli-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = StdRng::seed_from_u64(0x0c11_f022);
    let files = setup(&dir, &mut rng);
    let cwd = dir.join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    std::env::set_current_dir(&cwd).unwrap();
    let mut by_code = [0usize; 4];
    for i in 0..CASES {
        let args = case(&mut rng, &files);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let argv: Vec<OsString> = args.iter().map(OsString::from).collect();
        let res = catch_unwind(AssertUnwindSafe(|| {
            pmsim::run(
                argv,
                &mut pmsim::Io {
                    out: &mut out,
                    err: &mut err,
                    progress: false,
                },
            )
        }));
        let code = match res {
            Ok(c) => c,
            Err(_) => panic!("case {i} panicked: {args:?}"),
        };
        assert!(
            code <= 3,
            "case {i}: exit {code}: {args:?}\n{}",
            String::from_utf8_lossy(&err)
        );
        by_code[code as usize] += 1;
        // Usage errors say what is wrong.
        if code == 2 {
            assert!(
                !err.is_empty(),
                "case {i}: exit 2 without a message: {args:?}"
            );
        }
    }
    eprintln!("exit codes 0/1/2/3: {by_code:?}");
    // A smaller count through the real binary (main.rs: the process's writers and exit code).
    for i in 0..SPAWNED {
        let args = case(&mut rng, &files);
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_pmsim"))
            .args(&args[1..])
            .output()
            .expect("spawn pmsim");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !err.contains("panicked"),
            "spawned case {i}: {args:?}\n{err}"
        );
        assert!(
            o.status.code().is_some_and(|c| (0..=3).contains(&c)),
            "spawned case {i}: {:?}: {args:?}\n{err}",
            o.status
        );
    }
    // The generator reaches every outcome, not only usage errors.
    assert!(
        by_code.iter().all(|&n| n > 0),
        "exit codes 0/1/2/3: {by_code:?}"
    );
    assert!(by_code[0] + by_code[1] >= CASES / 10, "{by_code:?}");
    // Nothing but schedule files and event logs was created, and devices are untouched.
    use std::os::unix::fs::FileTypeExt;
    for dev in ["/dev/null", "/dev/full"] {
        let t = std::fs::symlink_metadata(dev).unwrap().file_type();
        assert!(t.is_char_device(), "{dev} is still a device");
    }
    assert!(
        !dir.join("events-target").exists(),
        "no write through a link"
    );
    std::env::set_current_dir(env!("CARGO_MANIFEST_DIR")).unwrap();
    std::fs::remove_dir_all(&dir).ok();
}
