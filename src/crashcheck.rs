//! `pmsim crashcheck TRACE` and `pmsim export-store-log TRACE -o FILE`: the command-line side
//! of `sim_fs::crashcheck` (options, progress, the report, the replay command).

use crate::{StrategyArg, UsageError, check_machine, output, parse_seed, read_trace, usage};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use sim_core::machine::CrashOptions;
use sim_core::sim::{Schedule, Strategy};
use sim_fs::crashcheck::{
    CheckOptions, CheckStats, Finding, Outcome, PointKind, WitnessLine, check_schedule,
    collect_schedules, store_log,
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
    /// Print one JSON object instead of the human report.
    #[arg(long)]
    json: bool,
}

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
fn load(
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

fn describe_line(l: &WitnessLine) -> String {
    let stores: Vec<String> = l
        .stores
        .iter()
        .map(|(seq, t, line)| {
            if *line == 0 {
                format!("#{seq} {t}")
            } else {
                format!("#{seq} {t} line {line}")
            }
        })
        .collect();
    let torn = if l.torn_words != 0 {
        format!(" + words {:#04x} of the next", l.torn_words)
    } else {
        String::new()
    };
    format!(
        "{:#x} {}: {} of {} pending stores{torn} [{}]",
        l.addr,
        l.region,
        l.persisted,
        l.pending,
        stores.join(", ")
    )
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
    };
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
    let mut stats = CheckStats::default();
    let mut outcome = Outcome::Clean;
    for (i, s) in schedules.iter().enumerate() {
        bar.set_message(format!("schedule {} of {}", i + 1, schedules.len()));
        let mut progress = |st: &CheckStats| bar.set_position(st.images);
        let o = check_schedule(&mut runner, s, &opts, &mut stats, &mut progress)
            .map_err(|e| usage(format!("crashcheck: {e}")))?;
        if !matches!(o, Outcome::Clean) {
            outcome = o;
            break;
        }
    }
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
        let rep = JsonReport {
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
                outln!(io.out, "    {}", describe_line(l));
            }
            outln!(io.out, "  pending lines not persisted:");
            for l in f.not_persisted.iter().take(16) {
                outln!(io.out, "    {}", describe_line(l));
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
                outln!(io.out, "    {}", describe_line(l));
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
