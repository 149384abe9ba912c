//! `pmsim crashcheck TRACE` and `pmsim export-store-log TRACE -o FILE`: the command-line side
//! of `sim_fs::crashcheck` (options, progress, the report, the replay command), `--jobs N`
//! (worker threads, each with its own runner) and `--shard I/N|auto` with the merge of shard
//! results (`pmsim merge` hands files of [`CRASH_SHARD_FORMAT`] to [`merge_crash_shards`]).
//! A divided check's violation and replay are the undivided check's; its counts are the work
//! the parts did (the same as undivided on a clean check; more on a failing one, since each
//! part runs to its own first failure).

use crate::{StrategyArg, UsageError, check_machine, output, parse_seed, read_trace, usage};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use sim_core::machine::CrashOptions;
use sim_core::sim::{Schedule, Strategy};
use sim_fs::crashcheck::{
    CheckOptions, CheckStats, Finding, Outcome, PointKind, check_schedule, collect_schedules,
    log_add, store_log,
};
use sim_fs::runner::TraceRunner;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum PointsArg {
    /// Before every sfence/mfence (and at the end of the run).
    Fence,
    /// Before every flush (clwb, clflushopt, clflush) or fence.
    Flush,
    /// Before every store, non-temporal store, flush or fence.
    Op,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum PersistArg {
    /// Only what reached the memory controller (WPQ) survives: caches are lost.
    Adr,
    /// The caches are flushed on power failure: cached stores are durable when they execute.
    Eadr,
}

#[derive(Args)]
pub struct CrashArgs {
    /// The trace to check (`.trace`).
    trace: PathBuf,
    /// Scheduling strategy of the runs whose crash points are checked (default trace-order;
    /// replay with --schedule).
    #[arg(long, value_enum)]
    strategy: Option<StrategyArg>,
    /// Seed of the model's randomness and of the random strategies (default: the trace's
    /// `machine seed=`, else 0).
    #[arg(long, value_parser = parse_seed)]
    seed: Option<u64>,
    /// Check this schedule string only (as a report prints it).
    #[arg(long, value_name = "S")]
    schedule: Option<String>,
    /// Check the crash points of up to N distinct interleavings (random, pct, dfs; default 10
    /// for random and pct, 100 for dfs).
    #[arg(long, value_name = "N")]
    schedules: Option<u64>,
    /// pct: the bug depth d.
    #[arg(long)]
    depth: Option<u32>,
    /// dfs: at most this many preemptions per schedule.
    #[arg(long, value_name = "N")]
    preemption_bound: Option<u32>,
    /// Where crash points are.
    #[arg(long, value_enum, default_value = "fence")]
    points: PointsArg,
    /// At most this many lines differ from their durable state in an image, or `all` (exact
    /// enumeration; refused at a point with more than 2^20 images).
    #[arg(long, default_value = "2", value_name = "N|all")]
    k: String,
    /// Stores wider than 8 bytes may persist in part, at 8-byte granularity.
    #[arg(long)]
    torn: bool,
    /// Check every image by itself. By default a point's images whose metadata state passes
    /// and whose data lines each keep the promises are judged without building each
    /// combination (exact; counted in `composed`); this switches that off.
    #[arg(long)]
    no_compose: bool,
    /// Persistence domain (default: the trace's `machine persist=`, else adr).
    #[arg(long, value_enum)]
    persist: Option<PersistArg>,
    /// Switch on a bug mode (repeatable); see `pmsim bugs`.
    #[arg(long = "bug", value_name = "NAME")]
    bugs: Vec<String>,
    /// Replay: check only crash point N of the schedule (needs --schedule and --image).
    #[arg(long, value_name = "N", requires_all = ["schedule", "image"])]
    point: Option<usize>,
    /// Replay: check only image ID of the crash point (needs --point).
    #[arg(long, value_name = "ID", requires = "point")]
    image: Option<u64>,
    /// Livelock guard: a run longer than this many steps is a violation.
    #[arg(long, default_value_t = 1_000_000)]
    step_limit: u64,
    /// Print one JSON object instead of the human report (with --shard: a shard result for
    /// `pmsim merge`).
    #[arg(long)]
    json: bool,
    /// Worker threads; the crash points are divided between them (point g of the schedules'
    /// points, in order, to worker g % N) and the result is that of --jobs 1.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    jobs: u32,
    /// Check shard I of N (from 0): the crash points g with g % N == I, every schedule being
    /// recorded by every shard. `auto`: I and N from a Slurm job array or a Kubernetes Indexed
    /// Job, as for explore. `pmsim merge` combines the shards' `--json` results.
    #[arg(long, value_name = "I/N|auto")]
    shard: Option<String>,
    /// The number of shards for `--shard auto` under JOB_COMPLETION_INDEX.
    #[arg(long, value_name = "N")]
    shard_count: Option<u32>,
}

/// What one worker (or the whole check) found: its counts and its first failure, keyed by
/// where it is in the order of the undivided check (schedule, then 0 for the run itself or
/// 1 + the crash point).
struct Part {
    stats: CheckStats,
    outcome: Outcome,
    at: Option<(u64, u64)>,
}

/// Check the crash points of shard `shard` of every schedule, stopping at the first failure.
fn check_part(
    runner: &mut TraceRunner,
    schedules: &[Schedule],
    opts: &CheckOptions,
    progress: &mut dyn FnMut(&CheckStats, usize),
) -> Result<Part, String> {
    let mut stats = CheckStats::default();
    for (i, s) in schedules.iter().enumerate() {
        let mut pr = |st: &CheckStats| progress(st, i);
        let o = check_schedule(runner, s, opts, &mut stats, &mut pr)?;
        let at = match &o {
            Outcome::Clean => continue,
            Outcome::RunFailed(_) => (i as u64, 0),
            Outcome::Violation(f) => (i as u64, f.point as u64 + 1),
        };
        return Ok(Part {
            stats,
            outcome: o,
            at: Some(at),
        });
    }
    Ok(Part {
        stats,
        outcome: Outcome::Clean,
        at: None,
    })
}

/// The counts of several parts of one check added up (schedules: every part records them
/// all, so the most any part got to).
fn add_stats(parts: &[&CheckStats]) -> CheckStats {
    let mut t = CheckStats::default();
    let mut first = true;
    for s in parts {
        t.schedules = t.schedules.max(s.schedules);
        t.units = t.units.max(s.units);
        t.images += s.images;
        t.duplicates += s.duplicates;
        t.recoveries += s.recoveries;
        t.composed += s.composed;
        t.pending_lines += s.pending_lines;
        if s.points > 0 {
            t.full_log10 = log_add(t.full_log10, s.full_log10, first);
            first = false;
        }
        t.points += s.points;
    }
    t
}

/// The parts of a divided check as the undivided check's result: the failure first in the
/// undivided order (each part stops at its own first, so the earliest of those is the first
/// of all), and the counts added up.
fn merge_parts(parts: Vec<Part>) -> Part {
    let stats = add_stats(&parts.iter().map(|p| &p.stats).collect::<Vec<_>>());
    let first = parts
        .into_iter()
        .filter(|p| p.at.is_some())
        .min_by_key(|p| p.at);
    match first {
        Some(p) => Part { stats, ..p },
        None => Part {
            stats,
            outcome: Outcome::Clean,
            at: None,
        },
    }
}

/// The identity of a shard result: what must agree between shards of one check.
pub const CRASH_SHARD_FORMAT: &str = "pmsim-crashcheck-shard-1";

#[derive(Args)]
pub struct ExportArgs {
    /// The trace to run (`.trace`).
    trace: PathBuf,
    /// The file to write (absent or a regular file).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: PathBuf,
    /// Run this schedule string (default: trace order).
    #[arg(long, value_name = "S")]
    schedule: Option<String>,
    /// Livelock guard.
    #[arg(long, default_value_t = 1_000_000)]
    step_limit: u64,
}

/// The trace's runner with the crash options applied.
pub(crate) fn load(
    path: &Path,
    bugs: &[String],
    persist: Option<PersistArg>,
) -> Result<TraceRunner, UsageError> {
    let trace = read_trace(path)?;
    check_machine(path, &trace)?;
    let mut cfg = crate::trace_model::machine_config(&trace).map_err(|(l, c, e)| {
        UsageError::Positioned(format!("{}:{l}:{c}: error: {e}", path.display()))
    })?;
    if let Some(p) = persist {
        let v = match p {
            PersistArg::Adr => "adr",
            PersistArg::Eadr => "eadr",
        };
        cfg.set("persist", v).map_err(usage)?;
    }
    for b in bugs {
        if sim_mm::bugs::bug_mode(b).is_none() {
            return Err(usage(format!(
                "--bug {b}: unknown bug mode (known: {})",
                crate::known_bug_names()
            )));
        }
    }
    TraceRunner::new(trace, cfg, bugs).map_err(|missing| {
        let mut msg = format!(
            "{}: this build cannot execute {} of the trace yet; nothing was run:",
            path.display(),
            crate::plural(missing.len(), "item", "items"),
        );
        for u in &missing {
            msg.push_str(&format!(
                "\n  {}:{}:{}: `{}`: {}",
                path.display(),
                u.line,
                u.col,
                u.what,
                u.why
            ));
        }
        usage(msg)
    })
}

fn parse_schedule(s: &str) -> Result<Schedule, UsageError> {
    s.parse::<Schedule>()
        .map_err(|e| usage(format!("--schedule: {e}")))
}

#[derive(Serialize)]
struct JsonReport<'a> {
    /// Set on a shard's result (`--shard`), for `pmsim merge`.
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shard: Option<[u32; 2]>,
    /// Where the failure is in the undivided check's order (schedule, 0 for the run or 1 +
    /// the crash point).
    #[serde(skip_serializing_if = "Option::is_none")]
    found_at: Option<[u64; 2]>,
    pmsim_version: &'a str,
    bugs: &'a [String],
    schedules: u64,
    result: &'a str,
    trace: String,
    strategy: &'a str,
    points: PointKind,
    k: String,
    torn: bool,
    persist: &'a str,
    stats: &'a CheckStats,
    seconds: f64,
    images_per_sec: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    violation: Option<&'a Finding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_violation: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replay: Option<String>,
}

pub fn crashcheck(a: &CrashArgs, io: &mut crate::Io) -> Result<u8, UsageError> {
    let k = match a.k.as_str() {
        "all" => usize::MAX,
        n => n
            .parse::<usize>()
            .map_err(|_| usage(format!("--k {n}: a number of lines or `all`")))?,
    };
    let schedule = a.schedule.as_deref().map(parse_schedule).transpose()?;
    let strategy_arg = a.strategy.unwrap_or(if schedule.is_some() {
        StrategyArg::Replay
    } else {
        StrategyArg::TraceOrder
    });
    if schedule.is_some() != (strategy_arg == StrategyArg::Replay) {
        return Err(usage(
            "--schedule goes with --strategy replay (the default when --schedule is given), \
             and replay needs --schedule",
        ));
    }
    if a.depth.is_some() && strategy_arg != StrategyArg::Pct {
        return Err(usage("--depth goes with --strategy pct"));
    }
    if a.preemption_bound.is_some() && strategy_arg != StrategyArg::Dfs {
        return Err(usage("--preemption-bound goes with --strategy dfs"));
    }
    if a.schedules == Some(0) {
        return Err(usage("--schedules must be at least 1"));
    }
    let strategy = match strategy_arg {
        StrategyArg::TraceOrder => Strategy::TraceOrder,
        StrategyArg::Random => Strategy::Random,
        StrategyArg::Pct => Strategy::Pct {
            depth: a.depth.unwrap_or(2).clamp(1, 1000),
        },
        StrategyArg::Dfs => Strategy::Dfs {
            preemption_bound: a.preemption_bound,
        },
        StrategyArg::Replay => Strategy::Replay(schedule.clone().expect("checked above")),
    };
    let runs = a.schedules.unwrap_or(match strategy {
        Strategy::Dfs { .. } => 100,
        Strategy::Random | Strategy::Pct { .. } => 10,
        _ => 1,
    });
    let mut runner = load(&a.trace, &a.bugs, a.persist)?;
    let seed = a.seed.or(runner.trace_seed()).unwrap_or(0);
    let points = match a.points {
        PointsArg::Fence => PointKind::Fence,
        PointsArg::Flush => PointKind::Flush,
        PointsArg::Op => PointKind::Op,
    };
    let opts = CheckOptions {
        points,
        crash: CrashOptions {
            k,
            torn: a.torn,
            dedup: true,
        },
        step_limit: a.step_limit,
        only: a.point.zip(a.image),
        shard: (0, 1),
        compose: !a.no_compose,
    };
    let shard = crate::scale::shard_of(&crate::scale::ScaleArgs {
        shard: a.shard.clone(),
        shard_count: a.shard_count,
        ..Default::default()
    })?;
    if opts.only.is_some() && (a.jobs > 1 || shard.count > 1) {
        return Err(usage(
            "--point and --image replay one image: no --jobs or --shard with them",
        ));
    }
    let persist = if runner.persist_eadr() { "eadr" } else { "adr" };
    let started = Instant::now();
    let schedules = collect_schedules(&runner, &strategy, seed, runs, a.step_limit)
        .map_err(|e| usage(format!("crashcheck: {e}")))?;
    let bar = if io.progress && !a.json {
        let b = ProgressBar::new_spinner();
        b.set_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} {pos} images ({per_sec}) {elapsed} {msg}")
        {
            b.set_style(style);
        }
        b
    } else {
        ProgressBar::hidden()
    };
    let nsched = schedules.len();
    // Worker j of --jobs J in shard I of N checks sub-shard I + N * j of N * J: together the
    // points g with g % N == I.
    let (si, sn, jobs) = (shard.index as u64, shard.count as u64, a.jobs as u64);
    let part_opts = |j: u64| CheckOptions {
        shard: (si + sn * j, sn * jobs),
        ..opts
    };
    let part = if jobs == 1 {
        let mut shown = usize::MAX;
        let mut progress = |st: &CheckStats, i: usize| {
            if i != shown {
                shown = i;
                bar.set_message(format!("schedule {} of {nsched}", i + 1));
            }
            bar.set_position(st.images);
        };
        check_part(&mut runner, &schedules, &part_opts(0), &mut progress)
            .map_err(|e| usage(format!("crashcheck: {e}")))?
    } else {
        let results: Vec<Result<Part, UsageError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..jobs)
                .map(|j| {
                    let (bar, schedules, o) = (bar.clone(), &schedules, part_opts(j));
                    scope.spawn(move || {
                        let mut runner = load(&a.trace, &a.bugs, a.persist)?;
                        let mut last = 0;
                        let mut progress = |st: &CheckStats, _: usize| {
                            bar.inc(st.images - last);
                            last = st.images;
                        };
                        check_part(&mut runner, schedules, &o, &mut progress)
                            .map_err(|e| usage(format!("crashcheck: {e}")))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a crashcheck worker panicked"))
                .collect()
        });
        let mut parts = Vec::new();
        for r in results {
            parts.push(r?);
        }
        merge_parts(parts)
    };
    let Part {
        stats,
        outcome,
        at: found_at,
    } = part;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let rate = if seconds > 0.0 {
        stats.images as f64 / seconds
    } else {
        0.0
    };
    let mut flags = String::new();
    if a.k != "2" {
        flags.push_str(&format!(" --k {}", a.k));
    }
    if a.torn {
        flags.push_str(" --torn");
    }
    if a.points != PointsArg::Fence {
        flags.push_str(&format!(
            " --points {}",
            match a.points {
                PointsArg::Fence => "fence",
                PointsArg::Flush => "flush",
                PointsArg::Op => "op",
            }
        ));
    }
    if let Some(p) = a.persist {
        flags.push_str(if p == PersistArg::Eadr {
            " --persist eadr"
        } else {
            " --persist adr"
        });
    }
    for b in &a.bugs {
        flags.push_str(&format!(" --bug {b}"));
    }
    let trace = a.trace.display().to_string();
    let replay = |f: &Finding| {
        format!(
            "pmsim crashcheck {trace} --schedule {} --point {} --image {}{flags}",
            f.schedule, f.point, f.image
        )
    };
    let (result, code) = match &outcome {
        Outcome::Clean => ("clean", 0),
        Outcome::RunFailed(_) => ("run-violation", 1),
        Outcome::Violation(_) => ("violation", 1),
    };
    if a.json {
        let finding = match &outcome {
            Outcome::Violation(f) => Some(&**f),
            _ => None,
        };
        let sharded = shard.count > 1;
        let rep = JsonReport {
            format: sharded.then_some(CRASH_SHARD_FORMAT),
            shard: sharded.then_some([shard.index, shard.count]),
            found_at: found_at.map(|(s, p)| [s, p]),
            pmsim_version: env!("CARGO_PKG_VERSION"),
            bugs: &a.bugs,
            schedules: nsched as u64,
            result,
            trace: trace.clone(),
            strategy: strategy.name(),
            points,
            k: a.k.clone(),
            torn: a.torn,
            persist,
            stats: &stats,
            seconds,
            images_per_sec: rate,
            violation: finding,
            run_violation: match &outcome {
                Outcome::RunFailed(m) => Some(m.as_str()),
                _ => None,
            },
            replay: finding.map(replay),
        };
        let text = serde_json::to_string(&rep).map_err(|e| usage(e.to_string()))?;
        outln!(io.out, "{text}");
        return Ok(code);
    }
    outln!(
        io.out,
        "crashcheck {trace}: strategy {}, points {}, k {}{}, persist {persist}",
        strategy.name(),
        match points {
            PointKind::Fence => "fence",
            PointKind::Flush => "flush",
            PointKind::Op => "op",
        },
        a.k,
        if a.torn { ", torn" } else { "" }
    );
    match &outcome {
        Outcome::Clean => {
            outln!(
                io.out,
                "clean: {} schedules, {} crash points, {} distinct images checked ({} \
                 duplicates skipped; full enumeration would be ~10^{:.1}), {:.0} images/s",
                stats.schedules,
                stats.points,
                stats.images,
                stats.duplicates,
                stats.full_log10,
                rate
            );
            outln!(
                io.out,
                "  {} metadata states recovered; {} images judged by their metadata state \
                 and their data lines one by one (--no-compose checks each by itself)",
                stats.recoveries,
                stats.composed
            );
        }
        Outcome::RunFailed(m) => {
            outln!(
                io.out,
                "VIOLATION: the run itself failed before any crash image was checked: {m}"
            );
            outln!(
                io.out,
                "  (pmsim run {trace} --schedule ... shows it; crashcheck needs a clean run)"
            );
        }
        Outcome::Violation(f) => {
            outln!(
                io.out,
                "VIOLATION {}: {}",
                f.violation.kind,
                f.violation.message
            );
            let path = if f.stack.is_empty() {
                String::new()
            } else {
                format!(" (in {})", f.stack.join(" > "))
            };
            if f.line > 0 {
                outln!(
                    io.out,
                    "  crash point {}: before `{}` by {} at {trace}:{}{path}",
                    f.point,
                    f.before,
                    f.thread,
                    f.line
                );
            } else {
                outln!(io.out, "  crash point {}: {}", f.point, f.before);
            }
            outln!(io.out, "  image {} of the point", f.image);
            outln!(io.out, "  lines persisted beyond their durable state:");
            for l in &f.persisted {
                outln!(io.out, "    {}", l);
            }
            outln!(io.out, "  pending lines not persisted:");
            for l in f.not_persisted.iter().take(16) {
                outln!(io.out, "    {}", l);
            }
            if f.not_persisted.len() > 16 {
                outln!(io.out, "    ... and {} more", f.not_persisted.len() - 16);
            }
            outln!(
                io.out,
                "  smallest failing subset ({} of {} persisted lines):",
                f.minimal.len(),
                f.persisted.len()
            );
            for l in &f.minimal {
                outln!(io.out, "    {}", l);
            }
            outln!(io.out, "  replay: {}", replay(f));
        }
    }
    outln!(
        io.out,
        "{} schedules, {} crash points, {} images in {seconds:.2} s",
        stats.schedules,
        stats.points,
        stats.images
    );
    Ok(code)
}

pub fn export_store_log(a: &ExportArgs, io: &mut crate::Io) -> Result<u8, UsageError> {
    output::check_target(&a.output)
        .map_err(|e| usage(format!("-o {}: {e}", a.output.display())))?;
    let runner = load(&a.trace, &[], None)?;
    let sched = match &a.schedule {
        Some(s) => parse_schedule(s)?,
        None => Schedule {
            seed: runner.trace_seed().unwrap_or(0),
            choices: Vec::new(),
        },
    };
    let (text, stats) = store_log::export_store_log(&runner, &sched, a.step_limit)
        .map_err(|e| usage(format!("export-store-log: {e}")))?;
    output::write_atomically(&a.output, text.as_bytes())
        .map_err(|e| usage(format!("-o {}: {e}", a.output.display())))?;
    outln!(
        io.out,
        "wrote {} stores, {} flushes and {} fences to {}",
        stats.stores,
        stats.flushes,
        stats.fences,
        a.output.display()
    );
    Ok(0)
}

/// `pmsim merge` of `crashcheck --shard I/N --json` results: the report of the undivided
/// check (the failure first in its order, the counts added up), as JSON or a short summary.
/// Refused with exit 2: a file that is not such a result, shards of different checks, a shard
/// missing or given twice.
pub fn merge_crash_shards(
    files: &[PathBuf],
    json: bool,
    io: &mut crate::Io,
) -> Result<u8, UsageError> {
    use serde_json::Value;
    let mut shards: Vec<(PathBuf, Value)> = Vec::new();
    for f in files {
        let v = crate::merge::read_json(f)?;
        if v.get("format").and_then(|x| x.as_str()) != Some(CRASH_SHARD_FORMAT) {
            return Err(usage(format!(
                "{}: not a crashcheck shard result (written by `pmsim crashcheck ... --shard \
                 I/N --json`)",
                f.display()
            )));
        }
        shards.push((f.clone(), v));
    }
    // What must agree between shards of one check.
    const SAME: &[&str] = &[
        "pmsim_version",
        "trace",
        "strategy",
        "points",
        "k",
        "torn",
        "persist",
        "bugs",
        "schedules",
    ];
    let (p0, v0) = &shards[0];
    let count = v0["shard"][1].as_u64().unwrap_or(0);
    let mut seen = vec![false; count as usize];
    for (p, v) in &shards {
        for key in SAME {
            if v[key] != v0[key] {
                return Err(usage(format!(
                    "{} differs from {} in `{key}`: not shards of one crashcheck",
                    p.display(),
                    p0.display()
                )));
            }
        }
        let (i, n) = (v["shard"][0].as_u64(), v["shard"][1].as_u64());
        match (i, n) {
            (Some(i), Some(n)) if n == count && i < n && !seen[i as usize] => {
                seen[i as usize] = true
            }
            _ => {
                return Err(usage(format!(
                    "{}: shard {} of {}: given twice or not of the {count} shards of {}",
                    p.display(),
                    v["shard"][0],
                    v["shard"][1],
                    p0.display()
                )));
            }
        }
    }
    if let Some(i) = seen.iter().position(|s| !s) {
        return Err(usage(format!(
            "merge: shard {i}/{count} is missing ({} of {count} given)",
            shards.len()
        )));
    }
    let stats: Vec<CheckStats> = shards
        .iter()
        .map(|(p, v)| {
            let s = &v["stats"];
            let n = |k: &str| {
                s[k].as_u64().ok_or_else(|| {
                    usage(format!(
                        "{}: a malformed shard result (stats.{k})",
                        p.display()
                    ))
                })
            };
            Ok(CheckStats {
                schedules: n("schedules")?,
                points: n("points")?,
                images: n("images")?,
                duplicates: n("duplicates")?,
                recoveries: s["recoveries"].as_u64().unwrap_or(0),
                composed: s["composed"].as_u64().unwrap_or(0),
                pending_lines: n("pending_lines")?,
                full_log10: s["full_log10"].as_f64().unwrap_or(0.0),
                units: 0,
            })
        })
        .collect::<Result<_, UsageError>>()?;
    let total = add_stats(&stats.iter().collect::<Vec<_>>());
    let key = |v: &Value| {
        v["found_at"]
            .as_array()
            .map(|a| (a[0].as_u64().unwrap_or(0), a[1].as_u64().unwrap_or(0)))
    };
    let winner = shards
        .iter()
        .filter(|(_, v)| key(v).is_some())
        .min_by_key(|(_, v)| key(v));
    let seconds: f64 = shards
        .iter()
        .map(|(_, v)| v["seconds"].as_f64().unwrap_or(0.0))
        .sum();
    let mut merged = winner.map_or_else(|| v0.clone(), |(_, v)| v.clone());
    let obj = merged.as_object_mut().expect("a JSON object");
    obj.remove("format");
    obj.remove("shard");
    obj.remove("found_at");
    obj.insert(
        "stats".into(),
        serde_json::to_value(&total).map_err(|e| usage(e.to_string()))?,
    );
    obj.insert("seconds".into(), seconds.into());
    let rate = if seconds > 0.0 {
        total.images as f64 / seconds
    } else {
        0.0
    };
    obj.insert("images_per_sec".into(), rate.into());
    if winner.is_none() {
        obj.insert("result".into(), "clean".into());
    }
    let result = merged["result"].as_str().unwrap_or("clean").to_string();
    if json {
        let text = serde_json::to_string(&merged).map_err(|e| usage(e.to_string()))?;
        outln!(io.out, "{text}");
    } else {
        outln!(
            io.out,
            "merged {count} crashcheck shards of {}: {result}",
            merged["trace"].as_str().unwrap_or("?")
        );
        if let Some(v) = merged.get("violation") {
            outln!(
                io.out,
                "VIOLATION {}: {}",
                v["violation"]["kind"].as_str().unwrap_or("?"),
                v["violation"]["message"].as_str().unwrap_or("?")
            );
        }
        if let Some(m) = merged["run_violation"].as_str() {
            outln!(io.out, "VIOLATION: the run itself failed: {m}");
        }
        if let Some(r) = merged["replay"].as_str() {
            outln!(io.out, "  replay: {r}");
        }
        outln!(
            io.out,
            "{} schedules, {} crash points, {} distinct images checked ({} duplicates \
             skipped), {seconds:.2} s of shard time",
            total.schedules,
            total.points,
            total.images,
            total.duplicates
        );
    }
    Ok(if result == "clean" { 0 } else { 1 })
}
