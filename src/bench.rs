//! `pmsim bench schedules` (schedules per second on the seed traces, one worker and
//! `--jobs 2`), `pmsim bench faults` (a generated trace of many PTE faults, end to end) and
//! `pmsim bench crash` (crash images built, and recovered and checked, per second).
//! Wall time bounds nothing here: it is only measured. CPU time and peak memory come from
//! getrusage(2), the one use of libc in the CLI.

use crate::{UsageError, read_trace, trace_model, usage};
use sim_core::sim::explore::{DEFAULT_SPLIT_DEPTH, ScaleConfig, Shard, explore_scaled};
use sim_core::sim::{ExploreConfig, Strategy, explore};
use std::path::Path;
use std::time::{Duration, Instant};

fn rusage() -> Option<libc::rusage> {
    // SAFETY: an all-zero rusage is a valid value of the plain C struct, and getrusage only
    // writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    (rc == 0).then_some(ru)
}

/// CPU time (user + system, all threads) of this process so far, in seconds.
fn cpu_seconds() -> f64 {
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    rusage().map_or(0.0, |ru| tv(ru.ru_utime) + tv(ru.ru_stime))
}

/// Peak resident set size of this process, in bytes (Linux reports KiB).
fn peak_rss_bytes() -> u64 {
    rusage().map_or(0, |ru| ru.ru_maxrss.max(0) as u64 * 1024)
}

/// The machine the figures were taken on: CPU model, logical CPUs, load average at the start.
#[derive(serde::Serialize)]
struct MachineInfo {
    cpu: String,
    logical_cpus: usize,
    loadavg_at_start: String,
}

fn machine_info() -> MachineInfo {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let loadavg_at_start = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into());
    MachineInfo {
        cpu,
        logical_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        loadavg_at_start,
    }
}

/// One timed search: runs done, wall seconds, CPU seconds of the whole process.
#[derive(Clone, Copy)]
struct Timed {
    runs: u64,
    wall: f64,
    cpu: f64,
}

fn timed(f: impl FnOnce() -> Result<u64, UsageError>) -> Result<Timed, UsageError> {
    let (c0, t0) = (cpu_seconds(), Instant::now());
    let runs = f()?;
    Ok(Timed {
        runs,
        wall: t0.elapsed().as_secs_f64().max(1e-9),
        cpu: (cpu_seconds() - c0).max(1e-6),
    })
}

/// The median (the mean of the middle two for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One row of `pmsim bench schedules`: medians over the rounds.
#[derive(serde::Serialize)]
struct ScheduleRow {
    trace: String,
    threads: usize,
    strategy: &'static str,
    jobs: usize,
    runs: f64,
    /// Schedules per wall-clock second.
    runs_per_sec: f64,
    /// Schedules per CPU-second of the process (all its threads): the per-core rate.
    runs_per_cpu_sec: f64,
}

#[derive(serde::Serialize)]
struct SchedulesReport {
    machine: MachineInfo,
    runs: u64,
    repeat: u32,
    rows: Vec<ScheduleRow>,
}

/// `pmsim bench schedules DIR`.
pub(crate) fn schedules(
    dir: &Path,
    runs: u64,
    repeat: u32,
    json: bool,
    io: &mut crate::Io,
) -> Result<u8, UsageError> {
    let machine = machine_info();
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| usage(format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "trace"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(usage(format!("{}: no .trace files", dir.display())));
    }
    let mut rows = Vec::new();
    for path in &paths {
        let trace = read_trace(path)?;
        let mut threads: Vec<&str> = trace.statements.iter().map(|s| s.thread.as_str()).collect();
        threads.sort_unstable();
        threads.dedup();
        let threads = threads.len();
        let model = trace_model::load(trace.clone(), &[], false).map_err(|u| {
            let first = u.first().map_or(String::new(), |u| {
                format!(
                    "{}:{}:{}: {}: {}",
                    path.display(),
                    u.line,
                    u.col,
                    u.what,
                    u.why
                )
            });
            usage(format!("bench schedules: the trace is refused: {first}"))
        })?;
        for (name, strategy) in [
            ("pct", Strategy::Pct { depth: 2 }),
            (
                "dfs",
                Strategy::Dfs {
                    preemption_bound: None,
                },
            ),
        ] {
            let mut one = Vec::new();
            let mut two = Vec::new();
            for round in 0..repeat {
                let cfg = ExploreConfig {
                    strategy: strategy.clone(),
                    seed: u64::from(round),
                    runs: Some(runs),
                    keep_going: true,
                    ..ExploreConfig::default()
                };
                let single = timed(|| {
                    explore(&model, &cfg, &mut |_| {})
                        .map(|r| r.runs)
                        .map_err(|e| usage(format!("bench schedules: {e}")))
                })?;
                // A dfs split over jobs takes no run count (it would cut the tree in an order
                // only the undivided search knows): it runs for the single worker's time, or
                // until exhausted.
                let cfg2 = match strategy {
                    Strategy::Dfs { .. } => ExploreConfig {
                        runs: None,
                        budget: Some(Duration::from_secs_f64(single.wall.max(0.2))),
                        ..cfg.clone()
                    },
                    _ => cfg.clone(),
                };
                let scale = ScaleConfig {
                    jobs: 2,
                    shard: Shard { index: 0, count: 1 },
                    split_depth: DEFAULT_SPLIT_DEPTH,
                };
                let double = timed(|| {
                    explore_scaled(&model, &cfg2, &scale, &mut |_| {})
                        .map(|r| r.report().runs)
                        .map_err(|e| usage(format!("bench schedules: {e}")))
                })?;
                one.push(single);
                two.push(double);
            }
            for (jobs, ts) in [(1, one), (2, two)] {
                rows.push(ScheduleRow {
                    trace: path
                        .file_name()
                        .map_or(String::new(), |n| n.to_string_lossy().into_owned()),
                    threads,
                    strategy: name,
                    jobs,
                    runs: median(ts.iter().map(|t| t.runs as f64).collect()),
                    runs_per_sec: median(ts.iter().map(|t| t.runs as f64 / t.wall).collect()),
                    runs_per_cpu_sec: median(ts.iter().map(|t| t.runs as f64 / t.cpu).collect()),
                });
            }
        }
    }
    let rep = SchedulesReport {
        machine,
        runs,
        repeat,
        rows,
    };
    if json {
        outln!(io.out, "{}", serde_json::to_string_pretty(&rep)?);
        return Ok(0);
    }
    outln!(
        io.out,
        "pmsim bench schedules: {} ({} logical CPUs, load {} at start); up to {runs} runs per \
         strategy and round, medians of {repeat} rounds",
        rep.machine.cpu,
        rep.machine.logical_cpus,
        rep.machine.loadavg_at_start
    );
    outln!(
        io.out,
        "{:34} {:>7} {:>8} {:>4} {:>8} {:>10} {:>12}",
        "trace",
        "threads",
        "strategy",
        "jobs",
        "runs",
        "runs/s",
        "runs/cpu-s"
    );
    for r in &rep.rows {
        outln!(
            io.out,
            "{:34} {:>7} {:>8} {:>4} {:>8.0} {:>10.0} {:>12.0}",
            r.trace,
            r.threads,
            r.strategy,
            r.jobs,
            r.runs,
            r.runs_per_sec,
            r.runs_per_cpu_sec
        );
    }
    Ok(0)
}

/// The generated fault-heavy trace: one thread maps a `window`-page file and takes a read fault
/// on each page in turn (each one PTE fault: the VMA is `nohuge`), zapping the whole range with
/// `madvise dontneed` before each new pass, until `faults` faults.
pub fn fault_trace(faults: u64, window: u64) -> String {
    use std::fmt::Write as _;
    let kib = window * 4;
    // The file plus room for the file system's metadata.
    let pmem_mib = kib.div_ceil(1024) + 16;
    let mut s = String::with_capacity(faults as usize * 24 + 256);
    let _ = writeln!(
        s,
        "# pmsim bench faults: {faults} PTE faults over a {window}-page window\n\
         pmsim-trace 1\n\
         machine cpus=1 pmem={pmem_mib}MiB\n\
         file /f size={kib}K fill=0x5a prealloc\n\
         t mmap /f 0 {kib}K shared nohuge as m"
    );
    for i in 0..faults {
        let page = i % window;
        if page == 0 && i > 0 {
            s.push_str("t madvise m dontneed\n");
        }
        let _ = writeln!(s, "t fault m+{:#x} read", page * 4096);
    }
    s
}

#[derive(serde::Serialize)]
struct FaultsReport {
    machine: MachineInfo,
    faults: u64,
    window: u64,
    /// PTE faults the run counted (statements served by a PTE).
    pte_faults: u64,
    steps: u64,
    generate_secs: f64,
    parse_secs: f64,
    /// Building the runner: mkfs and the header file on a fresh machine.
    build_secs: f64,
    /// The run itself, with the end-of-run checks (fsck, page association, sim-mm invariants).
    run_secs: f64,
    total_secs: f64,
    total_cpu_secs: f64,
    faults_per_sec: f64,
    faults_per_cpu_sec: f64,
    peak_rss_bytes: u64,
}

/// `pmsim bench faults`.
pub(crate) fn faults(
    faults: u64,
    window: u64,
    write_trace: Option<&Path>,
    json: bool,
    io: &mut crate::Io,
) -> Result<u8, UsageError> {
    let machine = machine_info();
    let (c0, t0) = (cpu_seconds(), Instant::now());
    let src = fault_trace(faults, window);
    let t_gen = t0.elapsed().as_secs_f64();
    if let Some(p) = write_trace {
        std::fs::write(p, &src).map_err(|e| usage(format!("{}: {e}", p.display())))?;
    }
    let t1 = Instant::now();
    let opts = sim_core::trace::ParseOptions {
        known_bugs: Some(sim_mm::bugs::bug_names()),
    };
    let trace = sim_core::trace::parse(&src, "generated.trace", &opts)
        .map_err(|e| usage(format!("bench faults: the generated trace: {e}")))?;
    drop(src);
    let t_parse = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let model = trace_model::load(trace, &[], false).map_err(|u| {
        usage(format!(
            "bench faults: the generated trace is refused: {}",
            u.first()
                .map_or(String::new(), |u| format!("{}: {}", u.what, u.why))
        ))
    })?;
    let t_build = t2.elapsed().as_secs_f64();
    let t3 = Instant::now();
    let cfg = ExploreConfig {
        strategy: Strategy::TraceOrder,
        runs: Some(1),
        step_limit: 1 << 40,
        ..ExploreConfig::default()
    };
    let rep =
        explore(&model, &cfg, &mut |_| {}).map_err(|e| usage(format!("bench faults: {e}")))?;
    let t_run = t3.elapsed().as_secs_f64();
    let total = t0.elapsed().as_secs_f64().max(1e-9);
    let cpu = (cpu_seconds() - c0).max(1e-6);
    if let Some(f) = &rep.failure {
        return Err(usage(format!(
            "bench faults: the generated run failed: {}",
            f.violation
        )));
    }
    let pte_faults: u64 = sim_fs::runner::last_run_stats()
        .values()
        .map(|t| t.pte_mapped)
        .sum();
    let r = FaultsReport {
        machine,
        faults,
        window,
        pte_faults,
        steps: rep.total_steps,
        generate_secs: t_gen,
        parse_secs: t_parse,
        build_secs: t_build,
        run_secs: t_run,
        total_secs: total,
        total_cpu_secs: cpu,
        faults_per_sec: faults as f64 / total,
        faults_per_cpu_sec: faults as f64 / cpu,
        peak_rss_bytes: peak_rss_bytes(),
    };
    if json {
        outln!(io.out, "{}", serde_json::to_string_pretty(&r)?);
        return Ok(0);
    }
    outln!(
        io.out,
        "pmsim bench faults: {} ({} logical CPUs, load {} at start)",
        r.machine.cpu,
        r.machine.logical_cpus,
        r.machine.loadavg_at_start
    );
    outln!(
        io.out,
        "{faults} faults over a {window}-page window: {pte_faults} PTE faults, {} steps",
        r.steps
    );
    outln!(
        io.out,
        "generate {:.2}s, parse {:.2}s, build {:.2}s, run + end checks {:.2}s: total {:.2}s \
         ({:.2} CPU-s)",
        r.generate_secs,
        r.parse_secs,
        r.build_secs,
        r.run_secs,
        r.total_secs,
        r.total_cpu_secs
    );
    outln!(
        io.out,
        "{:.0} faults/s end to end ({:.0} per CPU-second); peak RSS {:.1} MiB",
        r.faults_per_sec,
        r.faults_per_cpu_sec,
        r.peak_rss_bytes as f64 / (1 << 20) as f64
    );
    Ok(0)
}

#[derive(serde::Serialize)]
struct CrashBenchReport {
    machine: MachineInfo,
    trace: String,
    k: u64,
    points: u64,
    pending_lines: u64,
    record_secs: f64,
    /// Images enumerated (built: delta, hash, dedup) and the time it took.
    images_built: u64,
    build_secs: f64,
    build_cpu_secs: f64,
    built_per_sec: f64,
    built_per_cpu_sec: f64,
    /// Images recovered and checked, each from scratch (no metadata state shared).
    images_checked: u64,
    check_secs: f64,
    check_cpu_secs: f64,
    checked_per_sec: f64,
    checked_per_cpu_sec: f64,
    /// Images among them that failed an oracle (0 on a clean trace).
    failed: u64,
}

/// `pmsim bench crash`.
pub(crate) fn crash(
    path: &Path,
    k: u64,
    max_images: u64,
    max_checked: u64,
    json: bool,
    io: &mut crate::Io,
) -> Result<u8, UsageError> {
    use sim_core::machine::CrashOptions;
    use sim_core::sim::Schedule;
    use sim_fs::crashcheck::{PointKind, Recorder, check_image, record_run};
    let machine = machine_info();
    let mut runner = crate::crashcheck::load(path, &[], None)?;
    let trace = read_trace(path)?;
    runner.crash = Some(std::sync::Arc::new(Recorder::new(&trace)));
    let step_limit = 1_000_000;
    let t0 = Instant::now();
    let sched = Schedule {
        seed: runner.trace_seed().unwrap_or(0),
        choices: Vec::new(),
    };
    let run = record_run(&runner, &sched, PointKind::Fence, step_limit)
        .map_err(|e| usage(format!("bench crash: {e}")))?;
    let record_secs = t0.elapsed().as_secs_f64();
    let opts = CrashOptions {
        k: k as usize,
        torn: false,
        dedup: true,
    };
    let pending_lines: u64 = run
        .points
        .iter()
        .map(|p| p.point.pending_lines().len() as u64)
        .sum();
    // Building: every point's images, up to max_images in all.
    let (c0, t1) = (cpu_seconds(), Instant::now());
    let mut built = 0u64;
    let mut sink = 0u128;
    'build: for cp in &run.points {
        for image in cp.point.images(opts) {
            sink ^= image.hash;
            built += 1;
            if built >= max_images {
                break 'build;
            }
        }
    }
    std::hint::black_box(sink);
    let build_secs = t1.elapsed().as_secs_f64().max(1e-9);
    let build_cpu_secs = (cpu_seconds() - c0).max(1e-6);
    // Recovering and checking: each image with a cache of its own, so nothing is shared.
    let (c1, t2) = (cpu_seconds(), Instant::now());
    let mut checked = 0u64;
    let mut failed = 0u64;
    'check: for cp in &run.points {
        for image in cp.point.images(opts) {
            if check_image(&runner, &run, cp, &image, step_limit, None).is_err() {
                failed += 1;
            }
            checked += 1;
            if checked >= max_checked {
                break 'check;
            }
        }
    }
    let check_secs = t2.elapsed().as_secs_f64().max(1e-9);
    let check_cpu_secs = (cpu_seconds() - c1).max(1e-6);
    let r = CrashBenchReport {
        machine,
        trace: path.display().to_string(),
        k,
        points: run.points.len() as u64,
        pending_lines,
        record_secs,
        images_built: built,
        build_secs,
        build_cpu_secs,
        built_per_sec: built as f64 / build_secs,
        built_per_cpu_sec: built as f64 / build_cpu_secs,
        images_checked: checked,
        check_secs,
        check_cpu_secs,
        checked_per_sec: checked as f64 / check_secs,
        checked_per_cpu_sec: checked as f64 / check_cpu_secs,
        failed,
    };
    if json {
        outln!(io.out, "{}", serde_json::to_string_pretty(&r)?);
        return Ok(0);
    }
    outln!(
        io.out,
        "pmsim bench crash {} --k {k}: {} ({} logical CPUs, load {} at start)",
        r.trace,
        r.machine.cpu,
        r.machine.logical_cpus,
        r.machine.loadavg_at_start
    );
    outln!(
        io.out,
        "{} crash points, {} pending lines; recording the run {:.2}s",
        r.points,
        r.pending_lines,
        r.record_secs
    );
    outln!(
        io.out,
        "built {} images in {:.2}s ({:.2} CPU-s): {:.0}/s, {:.0} per CPU-second",
        r.images_built,
        r.build_secs,
        r.build_cpu_secs,
        r.built_per_sec,
        r.built_per_cpu_sec
    );
    outln!(
        io.out,
        "recovered and checked {} images, each from scratch, in {:.2}s ({:.2} CPU-s): {:.0}/s, \
         {:.0} per CPU-second ({} failed)",
        r.images_checked,
        r.check_secs,
        r.check_cpu_secs,
        r.checked_per_sec,
        r.checked_per_cpu_sec,
        r.failed
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generated trace takes exactly the faults asked for, each one PTE fault, and the run
    /// is clean (the end checks ran and passed).
    #[test]
    fn the_fault_benchmark_takes_one_pte_fault_per_fault_asked() {
        let src = fault_trace(20, 8);
        assert_eq!(src.matches(" fault m+").count(), 20);
        assert_eq!(src.matches("madvise m dontneed").count(), 2);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut io = crate::Io {
            out: &mut out,
            err: &mut err,
            progress: false,
        };
        let args = [
            "pmsim", "bench", "faults", "--faults", "20", "--window", "8", "--json",
        ];
        let code = crate::run(args.iter().map(std::ffi::OsString::from), &mut io);
        assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["pte_faults"], 20, "{v}");
        assert!(v["peak_rss_bytes"].as_u64().unwrap() > 0, "{v}");
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
