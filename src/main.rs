//! `pmsim`: the command-line front end. See `pmsim --help`.
//!
//! Exit codes: 0 clean, 1 violation found, 2 usage or input error, 3 nondeterminism.

mod report;
mod trace_model;

use clap::{Args, Parser, Subcommand, ValueEnum};
use report::{Outcome, Subject};
use sim_core::sim::explore::{Determinism, logged_run, run_twice};
use sim_core::sim::{ExploreConfig, Model, Schedule, Sim, Strategy, explore};
use sim_core::trace::{ParseOptions, Trace, parse_bytes};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use sim_mm::bugs::{BUG_MODES, bug_mode, bug_names};

#[derive(Parser)]
#[command(
    name = "pmsim",
    version,
    about = "Deterministic simulator of a persistent-memory machine with a Linux-style DAX stack",
    long_about = "pmsim replays fault/truncate traces (see traces/format/TRACE_FORMAT.md) on a \
deterministic executor: every interleaving point is a scheduling choice, so races can be \
searched for (explore), replayed bit-exactly (replay) and explained.\n\n\
Exit codes: 0 clean, 1 violation found, 2 usage or input error, 3 nondeterminism.",
    after_help = "Examples:\n  \
pmsim check-trace traces/format/*.trace\n  \
pmsim run traces/format/time.trace\n  \
pmsim explore --toy abba --strategy dfs --preemption-bound 2\n  \
pmsim replay --toy abba --schedule '1:0:01'\n  \
pmsim bench engine"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate traces against the trace format; print each error with file:line:col.
    CheckTrace {
        /// Trace files (`.trace`).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List the bug modes (historical kernel behaviours) that `--bug` and `bug NAME` accept.
    Bugs,
    /// Run a trace once (default strategy trace-order) and check it.
    Run(RunArgs),
    /// Search the interleavings of a trace for a violation.
    Explore(RunArgs),
    /// Replay one schedule string bit-exactly (as printed by a failure report).
    Replay(RunArgs),
    /// Benchmarks of pmsim itself.
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Event queue events/s and schedules/s of the strategies on the toy models. The side-by-side
    /// comparison with shuttle and loom is `cargo bench -p sim-core --bench engine`.
    Engine {
        /// Schedules per toy and strategy.
        #[arg(long, default_value_t = 100_000)]
        iters: u64,
        #[arg(long)]
        json: bool,
    },
    /// Latency and bandwidth of the media model in simulated time, beside the published Optane
    /// characterisation (optane-like rows must be within 15%).
    Media {
        /// Media preset: optane-like, cxl-like or dram.
        #[arg(long, default_value = "optane-like")]
        media: String,
        /// Override one media parameter (repeatable), e.g. `--media-param read_ns=300`.
        #[arg(long = "media-param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum StrategyArg {
    /// Prefer the thread whose current statement comes first in the file.
    TraceOrder,
    /// A uniformly random runnable thread at every choice (seeded).
    Random,
    /// Probabilistic concurrency testing; see --depth.
    Pct,
    /// Exhaustive depth-first search (sleep sets; see --preemption-bound).
    Dfs,
    /// Follow --schedule.
    Replay,
}

#[derive(Args)]
struct RunArgs {
    /// The trace to run (`.trace`).
    #[arg(required_unless_present = "toy", conflicts_with = "toy")]
    trace: Option<PathBuf>,
    /// Run one of the engine's toy models instead of a trace: abba, abba-fixed, lost-wakeup,
    /// lost-wakeup-correct, lw3x4, nondeterministic.
    #[arg(long, value_name = "NAME")]
    toy: Option<String>,
    /// Scheduling strategy (default: trace-order for run, random for explore, replay for
    /// replay).
    #[arg(long, value_enum)]
    strategy: Option<StrategyArg>,
    /// Seed of the model's randomness and of the random strategies (default: the trace's
    /// `machine seed=`, else 0).
    #[arg(long)]
    seed: Option<u64>,
    /// Number of runs (explore; default 1000 for random and pct, until exhausted for dfs).
    #[arg(long)]
    runs: Option<u64>,
    /// Stop exploring after this many seconds of wall-clock time.
    #[arg(long, value_name = "SECS")]
    budget_secs: Option<f64>,
    /// dfs: at most this many preemptions per schedule (none: unbounded, with sleep sets).
    #[arg(long, value_name = "N")]
    preemption_bound: Option<u32>,
    /// pct: the bug depth d (number of ordering constraints).
    #[arg(long, default_value_t = 2)]
    depth: u32,
    /// Switch on a historical bug mode (repeatable); see `pmsim bugs`.
    #[arg(long = "bug", value_name = "NAME")]
    bugs: Vec<String>,
    /// A schedule string to replay (`1:SEED:CHOICES`).
    #[arg(long, value_name = "S")]
    schedule: Option<String>,
    /// Livelock guard: a run longer than this many steps is a violation.
    #[arg(long, default_value_t = 1_000_000)]
    step_limit: u64,
    /// Keep exploring after the first failure and count them.
    #[arg(long)]
    keep_going: bool,
    /// Print one JSON summary object instead of the human report.
    #[arg(long)]
    json: bool,
    /// Write the event log (bincode) of the run, or of the failing run, to FILE.
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
    /// Run twice and compare the event logs; exit 3 naming the first diverging event.
    #[arg(long)]
    check_determinism: bool,
}

/// An error for the user: message, exit code 2.
struct UsageError(String);

impl<E: std::fmt::Display> From<E> for UsageError {
    fn from(e: E) -> Self {
        UsageError(e.to_string())
    }
}

fn known_bug_names() -> String {
    bug_names().join(", ")
}

fn read_trace(path: &Path) -> Result<Trace, UsageError> {
    let bytes = std::fs::read(path)
        .map_err(|e| UsageError(format!("{}: cannot read the trace: {e}", path.display())))?;
    let opts = ParseOptions {
        known_bugs: Some(bug_names()),
    };
    parse_bytes(&bytes, &path.display().to_string(), &opts).map_err(|e| UsageError(e.to_string()))
}

fn check_trace(files: &[PathBuf]) -> ExitCode {
    let mut bad = 0;
    for f in files {
        match read_trace(f) {
            Ok(t) => {
                if let Err((line, col, e)) = trace_model::machine_config(&t) {
                    eprintln!("{}:{line}:{col}: error: {e}", f.display());
                    bad += 1;
                    continue;
                }
                let mut threads: Vec<&str> =
                    t.all_statements().map(|s| s.thread.as_str()).collect();
                threads.sort_unstable();
                threads.dedup();
                println!(
                    "{}: ok ({} statements, {} threads{})",
                    f.display(),
                    t.all_statements().count(),
                    threads.len(),
                    if t.after_crash.is_some() {
                        ", after-crash section"
                    } else {
                        ""
                    }
                );
                for b in &t.header.bugs {
                    if bug_mode(&b.name).is_some_and(|m| !m.available) {
                        println!(
                            "{}:{}:{}: note: bug mode `{}` is not implemented in this build; \
                             run and explore will refuse it",
                            f.display(),
                            b.pos.line,
                            b.pos.col,
                            b.name
                        );
                    }
                }
            }
            Err(e) => {
                eprintln!("{}", e.0);
                bad += 1;
            }
        }
    }
    if bad > 0 {
        eprintln!("{bad} of {} traces rejected", files.len());
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

fn strategy_of(cmd: &str, a: &RunArgs) -> Result<Strategy, UsageError> {
    let default = match cmd {
        "run" => StrategyArg::TraceOrder,
        "replay" => StrategyArg::Replay,
        _ => StrategyArg::Random,
    };
    let s = a.strategy.unwrap_or(if a.schedule.is_some() {
        StrategyArg::Replay
    } else {
        default
    });
    if a.schedule.is_some() && s != StrategyArg::Replay {
        return Err(UsageError(
            "--schedule goes with --strategy replay (or the replay command)".into(),
        ));
    }
    if a.preemption_bound.is_some() && s != StrategyArg::Dfs {
        return Err(UsageError(
            "--preemption-bound goes with --strategy dfs".into(),
        ));
    }
    Ok(match s {
        StrategyArg::TraceOrder => Strategy::TraceOrder,
        StrategyArg::Random => Strategy::Random,
        StrategyArg::Pct => {
            if a.depth == 0 {
                return Err(UsageError("--depth must be at least 1".into()));
            }
            Strategy::Pct { depth: a.depth }
        }
        StrategyArg::Dfs => Strategy::Dfs {
            preemption_bound: a.preemption_bound,
        },
        StrategyArg::Replay => {
            let text = a.schedule.as_deref().ok_or_else(|| {
                UsageError("replay needs --schedule S (a failure report prints it)".into())
            })?;
            Strategy::Replay(text.parse::<Schedule>()?)
        }
    })
}

/// What to run: a trace or a toy model as a `Model`, how to name it in reports, and the
/// trace's own seed.
type Loaded = (Box<dyn Model>, Subject, Option<u64>);

fn subject_of(a: &RunArgs) -> Result<Loaded, UsageError> {
    for b in &a.bugs {
        match bug_mode(b) {
            None => {
                return Err(UsageError(format!(
                    "--bug {b}: unknown bug mode (known: {})",
                    known_bug_names()
                )));
            }
            Some(m) if !m.available => {
                return Err(UsageError(format!(
                    "--bug {b}: this bug mode is not implemented in this build yet \
                     (`pmsim bugs` shows which are)"
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(name) = &a.toy {
        let name = name.clone();
        if !sim_core::toys::TOYS.contains(&name.as_str()) && name != "nondeterministic" {
            return Err(UsageError(format!(
                "--toy {name}: unknown toy model (known: {}, nondeterministic)",
                sim_core::toys::TOYS.join(", ")
            )));
        }
        let subject = Subject::Toy(name.clone());
        let model = move |sim: &mut Sim| {
            let p = sim.platform();
            sim_core::toys::build(&name, &p, sim);
        };
        return Ok((Box::new(model), subject, None));
    }
    let path = a
        .trace
        .as_ref()
        .ok_or_else(|| UsageError("give a trace file or --toy NAME".into()))?;
    let trace = read_trace(path)?;
    trace_model::machine_config(&trace).map_err(|(line, col, e)| {
        UsageError(format!("{}:{line}:{col}: error: {e}", path.display()))
    })?;
    let missing = trace_model::unsupported(&trace);
    if !missing.is_empty() {
        let mut msg = format!(
            "{}: this build cannot execute {} item(s) of the trace yet; nothing was run:",
            path.display(),
            missing.len()
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
        return Err(UsageError(msg));
    }
    let seed = trace.header.machine.as_ref().and_then(|m| m.seed);
    Ok((
        Box::new(trace_model::TraceModel::new(trace)),
        Subject::Trace(path.clone()),
        seed,
    ))
}

fn run_cmd(cmd: &'static str, a: &RunArgs) -> Result<ExitCode, UsageError> {
    let strategy = strategy_of(cmd, a)?;
    let (model, subject, trace_seed) = subject_of(a)?;
    if let Some(b) = a.budget_secs
        && !(b.is_finite() && b > 0.0)
    {
        return Err(UsageError("--budget-secs must be a positive number".into()));
    }
    if let Some(path) = &a.events
        && (!report::parent_dir(path).is_dir() || path.is_dir())
    {
        return Err(UsageError(format!(
            "--events {}: expected a file path in an existing directory",
            path.display()
        )));
    }
    if a.runs == Some(0) {
        return Err(UsageError("--runs must be at least 1".into()));
    }
    let cfg = ExploreConfig {
        strategy,
        seed: a.seed.or(trace_seed).unwrap_or(0),
        runs: a.runs,
        budget: a.budget_secs.map(Duration::from_secs_f64),
        step_limit: a.step_limit,
        keep_going: a.keep_going,
        ..ExploreConfig::default()
    };
    if a.check_determinism {
        return Ok(match run_twice(model.as_ref(), &cfg)? {
            Determinism::Same { hash, events } => {
                report::determinism_ok(a.json, &subject, &cfg, hash, events);
                ExitCode::SUCCESS
            }
            d => {
                report::determinism_diverged(a.json, &subject, &cfg, &d);
                ExitCode::from(3)
            }
        });
    }
    let bar = report::progress_bar(a.json, &cfg);
    let rep = explore(model.as_ref(), &cfg, &mut |p| report::progress(&bar, p))?;
    bar.finish_and_clear();
    if let Some(path) = &a.events {
        // The log of the failing run, or of the (first) run.
        let log_cfg = match &rep.failure {
            Some(f) => ExploreConfig {
                strategy: Strategy::Replay(f.schedule.clone()),
                ..cfg.clone()
            },
            None => cfg.clone(),
        };
        let run = logged_run(model.as_ref(), &log_cfg)?;
        let bytes = run.log.to_bincode()?;
        report::write_atomically(path, &bytes).map_err(|e| {
            UsageError(format!(
                "{}: cannot write the event log: {e}",
                path.display()
            ))
        })?;
    }
    let outcome = Outcome {
        command: cmd,
        subject: &subject,
        cfg: &cfg,
        report: &rep,
    };
    outcome.print(a.json);
    Ok(if rep.failure.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn bench_media(media: &str, params: &[String], json: bool) -> Result<ExitCode, UsageError> {
    let mut overrides = Vec::new();
    for kv in params {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| UsageError(format!("--media-param {kv}: expected KEY=VALUE")))?;
        overrides.push((k.to_string(), v.to_string()));
    }
    let rep = sim_core::machine::bench::run_media_bench(media, &overrides)
        .map_err(|e| UsageError(format!("bench media: {e}")))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        print!("{rep}");
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let res = match &cli.cmd {
        Cmd::CheckTrace { files } => Ok(check_trace(files)),
        Cmd::Bugs => {
            for m in BUG_MODES {
                let status = if m.available { "available" } else { "planned" };
                println!(
                    "{:28} {:9} {}; fixed by {}",
                    m.name, status, m.summary, m.fixed_by
                );
            }
            let n = BUG_MODES.iter().filter(|m| m.available).count();
            println!(
                "{n} of {} bug modes are implemented in this build",
                BUG_MODES.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run(a) => run_cmd("run", a),
        Cmd::Explore(a) => run_cmd("explore", a),
        Cmd::Replay(a) => run_cmd("replay", a),
        Cmd::Bench { what } => match what {
            BenchCmd::Engine { iters, json } => Ok(report::bench_engine(*iters, *json)),
            BenchCmd::Media {
                media,
                params,
                json,
            } => bench_media(media, params, *json),
        },
    };
    match res {
        Ok(code) => code,
        Err(UsageError(msg)) => {
            eprintln!("pmsim: error: {msg}");
            ExitCode::from(2)
        }
    }
}
