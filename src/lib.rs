//! `pmsim`: the command-line front end. See `pmsim --help`.
//!
//! The whole command line is [`run`]: arguments in, text out through the given writers, an exit
//! code back (0 clean, 1 violation found, 2 usage or input error, 3 nondeterminism). `main.rs`
//! only connects it to the process; the tests call it in-process.

#[macro_use]
mod report;
mod bench;
mod crashcheck;
mod merge;
mod minimize;
mod output;
mod progress;
mod scale;
pub mod trace_model;

use clap::{Args, Parser, Subcommand, ValueEnum};
use report::{Outcome, Subject};
use sim_core::events::EventLog;
use sim_core::sim::explore::{Determinism, explore_scaled, logged_run};
use sim_core::sim::{ExploreConfig, Model, Schedule, Sim, Strategy, explore};
use sim_core::trace::{ParseOptions, Trace, parse_bytes};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sim_mm::bugs::{BUG_MODES, bug_mode, bug_names};
use sim_mm::dax::{BugSet, models};

/// The default strategy of `explore` (a trace, a toy or a model): pct, which finds every shipped
/// race of traces/bugs/ and traces/seeds/ with seed 0 (tests/shipped_races.rs), including the
/// two whose one-step window random misses in 1,000 runs (mf-speculative-page-lock, seeds/000).
const EXPLORE_STRATEGY: StrategyArg = StrategyArg::Pct;

/// pct's default bug depth for a trace or a toy: 3. The memory-failure races need it (the
/// unlinking thread runs, memory failure runs one window, the unlinking thread runs on: two
/// change points); a depth-2 search cannot produce that order between two threads.
const PCT_DEPTH: u32 = 3;

/// pct's default bug depth for a built-in model (`--model`): 2, which finds seed-001 in 6 runs
/// with seed 0.
const MODEL_PCT_DEPTH: u32 = 2;

#[derive(Parser)]
#[command(
    name = "pmsim",
    version,
    about = "Deterministic simulator of a persistent-memory machine with a Linux-style DAX stack",
    long_about = "pmsim runs traces (see traces/format/TRACE_FORMAT.md), its engine's toy models \
and built-in models on the DAX core (--model) on a deterministic executor: every interleaving \
point is a scheduling choice, so races can be searched for (explore), replayed bit-exactly \
(replay) and explained. Traces that need daxfs (files, mappings, memory accesses) are refused \
until it exists: `pmsim run` lists what it cannot execute.\n\n\
Exit codes: 0 clean, 1 violation found, 2 usage or input error, 3 nondeterminism.",
    after_help = "Examples:\n  \
pmsim check-trace traces/format/*.trace\n  \
pmsim run traces/format/time.trace\n  \
pmsim explore --toy abba --strategy dfs --preemption-bound 2\n  \
pmsim explore --model seed-001 --bug pmd-missed-wakeup\n  \
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
        /// Print each valid trace in canonical form (the printer's output).
        #[arg(long)]
        print: bool,
    },
    /// List the bug modes (historical kernel behaviours) that `--bug` and `bug NAME` accept.
    Bugs,
    /// Run a trace once (default strategy trace-order) and check it.
    Run(RunArgs),
    /// Search the interleavings of a trace for a violation (on several cores with --jobs, on
    /// several machines with --shard and `pmsim merge`).
    Explore(ExploreArgs),
    /// Replay one schedule string bit-exactly (as printed by a failure report).
    Replay(RunArgs),
    /// Shrink a failure: the schedule (fewer preemptions, fewer steps) and the trace (fewer
    /// threads and statements, smaller sizes) while the same violation reproduces; writes the
    /// smaller trace and prints its replay command. Exit 1: the violation reproduced (and was
    /// minimized).
    Minimize(MinimizeArgs),
    /// Crash consistency: at every crash point of a schedule, every crash image the x86
    /// persistency model allows, recovered and checked (fsck, durability, all-or-nothing,
    /// the trace's after-crash section).
    Crashcheck(crashcheck::CrashArgs),
    /// Write a run's pmem stores, flushes and fences in the pmemcheck store-log format that
    /// PMDK's pmreorder reads.
    ExportStoreLog(crashcheck::ExportArgs),
    /// Combine the results of the shards of one search (`explore --shard I/N --json-out F`)
    /// into its report. Exit 2 when a shard is missing, given twice or of another search.
    Merge {
        /// Shard result files (JSON, from --json-out).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print one JSON summary object instead of the human report.
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks of pmsim itself.
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Event queue events/s and schedules/s of the strategies on the toy models. The side-by-side
    /// comparison with shuttle and loom is `cargo bench -p pmsim-peer-bench --bench engine`.
    Engine {
        /// Schedules per toy and strategy (random and pct; dfs runs to exhaustion).
        #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
        iters: u64,
        #[arg(long)]
        json: bool,
    },
    /// Schedules per second on one core of pct and of unbounded dfs, with DPOR and with sleep
    /// sets alone, on a trace, a toy (--toy) or a built-in model (--model); each strategy runs
    /// at most --runs runs (default 2000) or --budget-secs, and a dfs that finishes first shows
    /// the runs it needs to exhaust the space.
    Explore(RunArgs),
    /// Schedules per second of pct and of unbounded dfs (DPOR + sleep sets) on every trace of a
    /// directory (default traces/seeds), for one worker and for `explore --jobs 2`, as medians
    /// of --repeat rounds, per wall-clock second and per CPU-second (the machine may be shared).
    Schedules {
        /// Directory of `.trace` files.
        #[arg(default_value = "traces/seeds")]
        dir: PathBuf,
        /// Runs per strategy and round (dfs with --jobs 2 runs for the single worker's time).
        #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        runs: u64,
        /// Rounds; the medians are printed.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
        repeat: u32,
        #[arg(long)]
        json: bool,
    },
    /// Crash images of a trace's trace-order run at --k: images built per second (every
    /// point's images enumerated, up to --max-images), then images recovered and checked per
    /// second with no sharing between images (journal replay, fsck, the all-or-nothing and
    /// durability oracles and the after-crash statements, each image from scratch, up to
    /// --max-checked), in the same process; per wall and per CPU second.
    Crash {
        trace: std::path::PathBuf,
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
        k: u64,
        #[arg(long, default_value_t = 5_000_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
        max_images: u64,
        #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
        max_checked: u64,
        #[arg(long)]
        json: bool,
    },
    /// `pmsim run` on a generated fault-heavy trace: one thread maps a prefaulted-free file of
    /// --window pages and takes a read fault on each page (one PTE fault each), zaps the range
    /// (madvise dontneed) and starts over, until --faults faults; simulated faults per second
    /// end to end (generate, parse, build, run, end checks) and peak memory.
    Faults {
        #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
        faults: u64,
        /// Pages mapped at once (the file's size in 4 KiB pages).
        #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
        window: u64,
        /// Also write the generated trace to this file.
        #[arg(long, value_name = "FILE")]
        write_trace: Option<PathBuf>,
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
        /// Point query instead of the table: read, ntstore, clwb or store.
        #[arg(long)]
        workload: Option<String>,
        /// Point query: rand or seq addresses.
        #[arg(long, default_value = "rand")]
        pattern: String,
        /// Point query: bytes per access, a multiple of 64.
        #[arg(long, default_value_t = 256)]
        size: u64,
        /// Point query: threads, 1 to 48.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Point query: interleaved DIMMs (default: all of the preset's).
        #[arg(long)]
        dimms: Option<u32>,
        /// Point query: an sfence after every so many bytes a thread writes.
        #[arg(long = "fence-every", value_name = "BYTES")]
        fence_every: Option<u64>,
        /// Point query: READ:WRITE ratio of loads to writes of the workload.
        #[arg(long, value_name = "R:W")]
        mix: Option<String>,
        /// Point query: every thread on a socket other than the pmem's.
        #[arg(long)]
        remote: bool,
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
    /// Exhaustive depth-first search (unbounded: source-set DPOR and sleep sets; see
    /// --preemption-bound, --no-dpor).
    Dfs,
    /// Follow --schedule or --schedule-file.
    Replay,
}

#[derive(Args)]
pub(crate) struct RunArgs {
    /// The trace to run (`.trace`).
    #[arg(required_unless_present_any = ["toy", "model"], conflicts_with_all = ["toy", "model"])]
    trace: Option<PathBuf>,
    /// Run one of the engine's toy models instead of a trace: abba, abba-fixed, lost-wakeup,
    /// lost-wakeup-correct, lw3x4, nondeterministic.
    #[arg(long, value_name = "NAME", conflicts_with = "model")]
    toy: Option<String>,
    /// Run a built-in model on the DAX core (page faults through a test file system) instead
    /// of a trace; `--bug` switches on the mode it shows:
    /// seed-001 (pmd-missed-wakeup: two PTE faults and a PMD fault on one 2 MiB range),
    /// pmd-fault-empty (pmd-conflict-before-null), no-entry-lock (no-entry-lock),
    /// hole-wake-next (hole-wake-next), pmd-pte-collide (pmd-pte-collide),
    /// stale-huge-zero-page (stale-huge-zero-page), mixed-mapping (mixed-mapping-association).
    /// Default strategy of explore for a model: pct (depth 2), which finds seed-001 in 6 runs
    /// with seed 0, where dfs needs 1277 (bound 2) or more (unbounded).
    #[arg(long, value_name = "NAME")]
    model: Option<String>,
    /// Scheduling strategy (default: trace-order for run, pct for explore, replay for
    /// replay).
    #[arg(long, value_enum)]
    strategy: Option<StrategyArg>,
    /// Seed of the model's randomness and of the random strategies, decimal or 0x-hex
    /// (default: the trace's `machine seed=`, else 0). Not for replay: a schedule carries its
    /// own seed.
    #[arg(long, value_parser = parse_seed)]
    seed: Option<u64>,
    /// Number of runs (explore; default 1000 for random and pct, until exhausted for dfs).
    #[arg(long)]
    runs: Option<u64>,
    /// Stop exploring after this many seconds of wall-clock time.
    #[arg(long, value_name = "SECS")]
    budget_secs: Option<f64>,
    /// dfs: at most this many preemptions per schedule (none: unbounded, with DPOR and sleep
    /// sets).
    #[arg(long, value_name = "N")]
    preemption_bound: Option<u32>,
    /// Unbounded dfs: sleep sets alone, without DPOR (to compare; a bound switches DPOR off).
    #[arg(long)]
    no_dpor: bool,
    /// pct: the bug depth d (number of ordering constraints; d - 1 priority change points per
    /// run; default 3, 2 for --model).
    #[arg(long)]
    depth: Option<u32>,
    /// Switch on a historical bug mode (repeatable); see `pmsim bugs`.
    #[arg(long = "bug", value_name = "NAME")]
    bugs: Vec<String>,
    /// A schedule string to replay (`1:SEED:CHOICES`).
    #[arg(long, value_name = "S", conflicts_with = "schedule_file")]
    schedule: Option<String>,
    /// Read the schedule string to replay from FILE (a failure report writes long schedules
    /// to a file and prints this form).
    #[arg(long, value_name = "FILE")]
    schedule_file: Option<PathBuf>,
    /// Livelock guard: a run longer than this many steps is a violation.
    #[arg(long, default_value_t = 1_000_000)]
    step_limit: u64,
    /// Keep exploring after the first failure and count them.
    #[arg(long)]
    keep_going: bool,
    /// Print one JSON summary object instead of the human report.
    #[arg(long)]
    json: bool,
    /// Write the event log (bincode) of the run, or of the failing run, to FILE (absent or a
    /// regular file; links, directories and devices are refused).
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
    /// Run twice and compare the event logs; exit 3 naming the first diverging event. With
    /// --events, the first run's log is written.
    #[arg(long)]
    check_determinism: bool,
    /// Check the sim-mm invariants after every step, not only at the end of each run.
    #[arg(long)]
    check_invariants: bool,
    /// No progress bar (it is shown on stderr only when stderr is a terminal and a search
    /// runs for more than a second).
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct ExploreArgs {
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    scale: scale::ScaleArgs,
}

#[derive(Args)]
struct MinimizeArgs {
    /// The failing trace (`.trace`); its `bug` lines stay on.
    trace: PathBuf,
    /// The failing schedule (as a failure report prints it).
    #[arg(long, value_name = "S", conflicts_with = "schedule_file")]
    schedule: Option<String>,
    /// Read the failing schedule from FILE.
    #[arg(long, value_name = "FILE")]
    schedule_file: Option<PathBuf>,
    /// Where to write the minimized trace (absent, or a file an earlier `pmsim minimize`
    /// wrote).
    #[arg(short = 'o', long = "output", value_name = "OUT.trace")]
    output: PathBuf,
    /// At most this many runs in all.
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_runs: u64,
    /// At most this many candidate traces.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    max_traces: u64,
    /// Livelock guard: a run longer than this many steps is a violation.
    #[arg(long, default_value_t = 1_000_000)]
    step_limit: u64,
    /// Check the sim-mm invariants after every step (as the failing run did, if it did).
    #[arg(long)]
    check_invariants: bool,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    json: bool,
}

/// An error for the user, exit code 2. `Plain` is printed as `pmsim: error: MESSAGE`;
/// `Positioned` already starts with `FILE:LINE:COL: error:` and is printed as it is.
pub(crate) enum UsageError {
    Plain(String),
    Positioned(String),
}

impl<E: std::fmt::Display> From<E> for UsageError {
    fn from(e: E) -> Self {
        UsageError::Plain(e.to_string())
    }
}

pub(crate) fn usage(msg: impl Into<String>) -> UsageError {
    UsageError::Plain(msg.into())
}

/// The largest trace or schedule file pmsim reads.
pub(crate) const MAX_INPUT_BYTES: u64 = 64 << 20;

/// The longest `--budget-secs` (about 30 years): a bound that a `Duration` holds.
const MAX_BUDGET_SECS: f64 = 1e9;

/// A schedule longer than this (in characters) is written to a file, and the replay command
/// names the file: a command line holds a few thousand characters comfortably.
const MAX_INLINE_SCHEDULE: usize = 2000;

/// `--seed`: decimal, or hexadecimal with `0x` (schedule strings print their seeds in hex).
fn parse_seed(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse::<u64>(),
    };
    parsed.map_err(|_| {
        format!("`{s}` is not a seed (decimal, or hexadecimal with 0x, at most 64 bits)")
    })
}

fn known_bug_names() -> String {
    bug_names().join(", ")
}

pub(crate) fn read_trace(path: &Path) -> Result<Trace, UsageError> {
    let bytes = output::read_capped(path, MAX_INPUT_BYTES)
        .map_err(|e| usage(format!("{}: cannot read the trace: {e}", path.display())))?;
    let opts = ParseOptions {
        known_bugs: Some(bug_names()),
    };
    parse_bytes(&bytes, &path.display().to_string(), &opts)
        .map_err(|e| UsageError::Positioned(e.to_string()))
}

/// A trace's machine line applied to the machine configuration, with media values range
/// checked, as a positioned error.
fn check_machine(path: &Path, t: &Trace) -> Result<(), UsageError> {
    trace_model::machine_config(t)
        .map(|_| ())
        .map_err(|(line, col, e)| {
            UsageError::Positioned(format!("{}:{line}:{col}: error: {e}", path.display()))
        })
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn check_trace(files: &[PathBuf], print: bool, io: &mut Io) -> u8 {
    let mut bad = 0;
    for f in files {
        let t = match read_trace(f).and_then(|t| check_machine(f, &t).map(|()| t)) {
            Ok(t) => t,
            Err(e) => {
                io.error(&e);
                bad += 1;
                continue;
            }
        };
        let mut threads: Vec<&str> = t.all_statements().map(|s| s.thread.as_str()).collect();
        threads.sort_unstable();
        threads.dedup();
        if print {
            let _ = write!(io.out, "{}", sim_core::trace::print(&t));
            continue;
        }
        outln!(
            io.out,
            "{}: ok ({}, {}{})",
            f.display(),
            plural(t.all_statements().count(), "statement", "statements"),
            plural(threads.len(), "thread", "threads"),
            if t.after_crash.is_some() {
                ", after-crash section"
            } else {
                ""
            }
        );
        for b in &t.header.bugs {
            let Some(m) = bug_mode(&b.name) else {
                continue;
            };
            if !sim_fs::runner::bug_runnable(m.name) {
                outln!(
                    io.out,
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
    if bad > 0 {
        outln!(
            io.err,
            "{bad} of {} rejected",
            plural(files.len(), "trace", "traces")
        );
        2
    } else {
        0
    }
}

/// The schedule of `--schedule S` or `--schedule-file FILE`.
fn schedule_arg(a: &RunArgs) -> Result<Option<Schedule>, UsageError> {
    schedule_from(a.schedule.as_deref(), a.schedule_file.as_deref())
}

/// The schedule given as text or in a file.
fn schedule_from(text: Option<&str>, file: Option<&Path>) -> Result<Option<Schedule>, UsageError> {
    if let Some(text) = text {
        return Ok(Some(
            text.parse::<Schedule>()
                .map_err(|e| usage(format!("--schedule: {e}")))?,
        ));
    }
    let Some(path) = file else {
        return Ok(None);
    };
    let bytes = output::read_capped(path, MAX_INPUT_BYTES)
        .map_err(|e| usage(format!("--schedule-file {}: {e}", path.display())))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        usage(format!(
            "--schedule-file {}: not UTF-8 text",
            path.display()
        ))
    })?;
    text.parse::<Schedule>()
        .map(Some)
        .map_err(|e| usage(format!("--schedule-file {}: {e}", path.display())))
}

/// pct's bug depth when `--depth` is not given.
fn pct_depth(a: &RunArgs) -> u32 {
    if a.model.is_some() {
        MODEL_PCT_DEPTH
    } else {
        PCT_DEPTH
    }
}

fn strategy_of(cmd: &str, a: &RunArgs) -> Result<Strategy, UsageError> {
    let schedule = schedule_arg(a)?;
    let default = match cmd {
        "run" => StrategyArg::TraceOrder,
        "replay" => StrategyArg::Replay,
        _ => EXPLORE_STRATEGY,
    };
    let s = a.strategy.unwrap_or(if schedule.is_some() {
        StrategyArg::Replay
    } else {
        default
    });
    if schedule.is_some() && s != StrategyArg::Replay {
        return Err(usage(
            "--schedule and --schedule-file go with --strategy replay (or the replay command)",
        ));
    }
    if a.preemption_bound.is_some() && s != StrategyArg::Dfs {
        return Err(usage("--preemption-bound goes with --strategy dfs"));
    }
    if a.no_dpor && s != StrategyArg::Dfs {
        return Err(usage("--no-dpor goes with --strategy dfs"));
    }
    if a.depth.is_some() && s != StrategyArg::Pct {
        return Err(usage("--depth goes with --strategy pct"));
    }
    if s == StrategyArg::Replay {
        // A replay runs the schedule once, with the schedule's seed: these would be ignored.
        let ignored = [
            (
                a.runs.is_some(),
                "--runs: a replay runs its schedule exactly once",
            ),
            (
                a.seed.is_some(),
                "--seed: a replay uses the seed inside the schedule string (1:SEED:CHOICES)",
            ),
            (
                a.budget_secs.is_some(),
                "--budget-secs: a replay is one run",
            ),
            (a.keep_going, "--keep-going: a replay is one run"),
        ];
        if let Some((_, why)) = ignored.iter().find(|(set, _)| *set) {
            return Err(usage(format!("{why}; drop the flag")));
        }
    }
    Ok(match s {
        StrategyArg::TraceOrder => Strategy::TraceOrder,
        StrategyArg::Random => Strategy::Random,
        StrategyArg::Pct => {
            let depth = a.depth.unwrap_or(pct_depth(a));
            if !(1..=1000).contains(&depth) {
                return Err(usage("--depth must be from 1 to 1000"));
            }
            Strategy::Pct { depth }
        }
        StrategyArg::Dfs => Strategy::Dfs {
            preemption_bound: a.preemption_bound,
        },
        StrategyArg::Replay => Strategy::Replay(schedule.ok_or_else(|| {
            usage("replay needs --schedule S or --schedule-file FILE (a failure report prints it)")
        })?),
    })
}

/// What to run: a trace or a toy model as a `Model`, how to name it in reports, and the
/// trace's own seed.
type Loaded = (Box<dyn Model + Sync>, Subject, Option<u64>);

pub(crate) fn subject_of(a: &RunArgs) -> Result<Loaded, UsageError> {
    let mut dax_bugs = Vec::new();
    for b in &a.bugs {
        match bug_mode(b) {
            None => {
                return Err(usage(format!(
                    "--bug {b}: unknown bug mode (known: {})",
                    known_bug_names()
                )));
            }
            Some(m) if !sim_fs::runner::bug_runnable(m.name) => {
                return Err(usage(format!(
                    "--bug {b}: this bug mode is not implemented in this build yet \
                     (`pmsim bugs` shows which are)"
                )));
            }
            Some(m) if a.toy.is_some() => {
                let shown = m.model().unwrap_or("seed-001");
                return Err(usage(format!(
                    "--bug {b}: the toy models have no DAX core or file system; give a trace \
                     or a built-in DAX model, e.g. `pmsim explore --model {shown} --bug {b}`"
                )));
            }
            // A trace runs the whole stack: every implemented mode has its decision point.
            Some(_) if a.model.is_none() => {}
            Some(m) => {
                // A built-in model reaches only the DAX-core modes it was written for.
                let reached = m.dax_bug().filter(|&d| models::reaches(d));
                let Some(d) = reached else {
                    return Err(usage(format!(
                        "--bug {b}: no built-in model has a decision point for this mode \
                         (reachable from: {})",
                        m.reachable()
                    )));
                };
                if !dax_bugs.contains(&d) {
                    dax_bugs.push(d);
                }
            }
        }
    }
    if let Some(name) = &a.model {
        let Some(m) = models::model(name) else {
            return Err(usage(format!(
                "--model {name}: unknown DAX model (known: {})",
                models::model_names().join(", ")
            )));
        };
        // Named in the catalogue's order, so one model and set of modes has one replay line.
        dax_bugs.sort();
        let subject = Subject::Model {
            name: m.name.to_string(),
            bugs: dax_bugs.iter().map(|b| b.name().to_string()).collect(),
        };
        let model = models::build(m, BugSet::of(&dax_bugs));
        return Ok((Box::new(model), subject, None));
    }
    if let Some(name) = &a.toy {
        let name = name.clone();
        if !sim_core::toys::TOYS.contains(&name.as_str()) && name != "nondeterministic" {
            return Err(usage(format!(
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
        .ok_or_else(|| usage("give a trace file, --toy NAME or --model NAME"))?;
    let trace = read_trace(path)?;
    check_machine(path, &trace)?;
    let seed = trace.header.machine.as_ref().and_then(|m| m.seed);
    let model = trace_model::load(trace, &a.bugs, a.check_invariants).map_err(|missing| {
        let mut msg = format!(
            "{}: this build cannot execute {} of the trace yet; nothing was run:",
            path.display(),
            plural(missing.len(), "item", "items"),
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
    })?;
    let subject = Subject::Trace {
        path: path.clone(),
        bugs: a.bugs.clone(),
        check_invariants: a.check_invariants,
    };
    Ok((Box::new(model), subject, seed))
}

/// Refuse an output path before anything runs (and again when writing).
fn check_output(flag: &str, path: &Path) -> Result<(), UsageError> {
    output::check_target(path).map_err(|e| usage(format!("{flag} {}: {e}", path.display())))
}

/// A replay must fit its run exactly: a schedule that runs out before the run ends (the rest
/// would silently follow trace order) or that has choices left when the run ends (silently cut)
/// belongs to another trace, model or version.
fn check_replay_fits(
    model: &dyn Model,
    cfg: &ExploreConfig,
    sched: &Schedule,
) -> Result<EventLog, UsageError> {
    let run = logged_run(model, cfg).map_err(|e| usage(format!("replay: {e}")))?;
    let (given, used) = (sched.choices.len(), run.schedule.choices.len());
    if used > given {
        return Err(usage(format!(
            "replay: the schedule is too short for this run: it has {}, but the run needs more \
             (it made {used} before ending); is it the schedule of another trace or model?",
            plural(given, "choice", "choices")
        )));
    }
    if used < given {
        return Err(usage(format!(
            "replay: the schedule is too long for this run: the run ended after {} but the \
             schedule has {given}; is it the schedule of another trace or model?",
            plural(used, "choice", "choices")
        )));
    }
    Ok(run.log)
}

/// Run twice with full event logs and compare them: the determinism check, with the first
/// run's log kept for `--events`.
fn run_twice(
    model: &dyn Model,
    cfg: &ExploreConfig,
) -> Result<(Determinism, EventLog), UsageError> {
    let a = logged_run(model, cfg)?;
    let d = match logged_run(model, cfg) {
        Ok(b) => match a.log.first_divergence(&b.log) {
            None if a.log.hash == b.log.hash => Determinism::Same {
                hash: a.log.hash,
                events: a.log.events.len(),
            },
            d => {
                let i = d.unwrap_or(0);
                Determinism::Diverged {
                    index: i,
                    first: a.log.describe(i),
                    second: b.log.describe(i),
                    hashes: (a.log.hash, b.log.hash),
                }
            }
        },
        Err(e) => Determinism::Diverged {
            index: 0,
            first: "the first run followed the schedule".into(),
            second: e.0,
            hashes: (a.log.hash, 0),
        },
    };
    Ok((d, a.log))
}

/// Write an event log; the error names the file and the failure.
fn write_events(path: &Path, log: &EventLog) -> Result<(), String> {
    let bytes = log.to_bincode()?;
    output::write_atomically(path, &bytes).map_err(|e| {
        format!(
            "--events {}: cannot write the event log: {e}",
            path.display()
        )
    })
}

/// Where a long schedule of a failure goes: beside the event log if there is one, else in the
/// current directory under a name made of the subject and the run's hash.
fn schedule_file_path(a: &RunArgs, subject: &Subject, hash: u64) -> PathBuf {
    if let Some(ev) = &a.events {
        let mut name = ev.file_name().unwrap_or_default().to_os_string();
        name.push(".schedule");
        return output::parent_dir(ev).join(name);
    }
    let stem: String = match subject {
        Subject::Trace { path, .. } => path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
        Subject::Toy(n) => n.clone(),
        Subject::Model { name, .. } => name.clone(),
    }
    .chars()
    .map(|c| {
        if c.is_ascii_alphanumeric() || c == '-' {
            c
        } else {
            '_'
        }
    })
    .collect();
    PathBuf::from(format!("pmsim-{stem}-{hash:016x}.schedule"))
}

fn run_cmd(
    cmd: &'static str,
    a: &RunArgs,
    scale_args: Option<&scale::ScaleArgs>,
    io: &mut Io,
) -> Result<u8, UsageError> {
    let plain = scale::ScaleArgs {
        jobs: 1,
        ..scale::ScaleArgs::default()
    };
    let sc = scale_args.unwrap_or(&plain);
    if sc.portfolio && (a.strategy.is_some() || a.schedule.is_some() || a.schedule_file.is_some()) {
        return Err(usage(
            "--portfolio chooses its own strategies; drop --strategy, --schedule and \
             --schedule-file",
        ));
    }
    let strategy = strategy_of(cmd, a)?;
    let (model, subject, trace_seed) = subject_of(a)?;
    let budget = match a.budget_secs {
        None => None,
        Some(b) if b.is_finite() && b > 0.0 && b <= MAX_BUDGET_SECS => {
            Some(Duration::try_from_secs_f64(b).map_err(|e| usage(format!("--budget-secs: {e}")))?)
        }
        Some(_) => {
            return Err(usage(format!(
                "--budget-secs must be a positive number of seconds, at most {MAX_BUDGET_SECS:e}"
            )));
        }
    };
    if let Some(path) = &a.events {
        check_output("--events", path)?;
        // An output never replaces one of the run's inputs.
        let same = |input: &Option<PathBuf>| {
            input.as_ref().is_some_and(
                |i| matches!((i.canonicalize(), path.canonicalize()), (Ok(x), Ok(y)) if x == y),
            )
        };
        if same(&a.trace) || same(&a.schedule_file) {
            return Err(usage(format!(
                "--events {}: is an input of this run; pmsim does not overwrite its inputs",
                path.display()
            )));
        }
    }
    if a.runs == Some(0) {
        return Err(usage("--runs must be at least 1"));
    }
    if a.step_limit == 0 {
        return Err(usage("--step-limit must be at least 1"));
    }
    let cfg = ExploreConfig {
        strategy,
        seed: a.seed.or(trace_seed).unwrap_or(0),
        runs: a.runs,
        budget,
        step_limit: a.step_limit,
        keep_going: a.keep_going,
        dpor: !a.no_dpor,
        ..ExploreConfig::default()
    };
    if a.check_determinism {
        // The check repeats the first run of the strategy: these would be ignored.
        let ignored = [
            (a.runs.is_some(), "--runs"),
            (a.budget_secs.is_some(), "--budget-secs"),
            (a.keep_going, "--keep-going"),
            (sc.jobs > 1, "--jobs"),
            (sc.shard.is_some(), "--shard"),
            (sc.split_depth.is_some(), "--split-depth"),
            (sc.json_out.is_some(), "--json-out"),
            (sc.portfolio, "--portfolio"),
        ];
        if let Some((_, flag)) = ignored.iter().find(|(set, _)| *set) {
            return Err(usage(format!(
                "{flag}: --check-determinism repeats one run; drop the flag"
            )));
        }
        let (d, log) = run_twice(model.as_ref(), &cfg)?;
        let code = match &d {
            Determinism::Same { hash, events } => {
                report::determinism_ok(io.out, a.json, &subject, &cfg, *hash, *events);
                0
            }
            d => {
                report::determinism_diverged(io.out, a.json, &subject, &cfg, d);
                3
            }
        };
        if let Some(path) = &a.events
            && let Err(e) = write_events(path, &log)
        {
            io.error(&usage(e));
            return Ok(code.max(2));
        }
        return Ok(code);
    }
    // The log of a replay comes from the fit check; of a search, from a rerun of the failure
    // (or of the first run).
    let replay_log = match &cfg.strategy {
        Strategy::Replay(s) => Some(check_replay_fits(model.as_ref(), &cfg, s)?),
        _ => None,
    };
    let mut bar = progress::Bar::new(io.progress && !a.quiet);
    if sc.portfolio {
        return portfolio(cmd, a, sc, &subject, model.as_ref(), &cfg, &mut bar, io);
    }
    let mut write_errors: Vec<String> = Vec::new();
    let mut note = None;
    let mut empty_shard = false;
    let rep = if sc.divides() {
        let scale_cfg = scale::scale_config(sc)?;
        if let Some(path) = &sc.json_out {
            check_output("--json-out", path)?;
            check_not_input(a, "--json-out", path)?;
        }
        let result = explore_scaled(model.as_ref(), &cfg, &scale_cfg, &mut |p| bar.update(p))?;
        bar.finish();
        if let Some(path) = &sc.json_out {
            let trace_bytes =
                match &a.trace {
                    Some(t) => Some(output::read_capped(t, MAX_INPUT_BYTES).map_err(|e| {
                        usage(format!("{}: cannot read the trace: {e}", t.display()))
                    })?),
                    None => None,
                };
            let file = scale::ShardFile::new(
                scale::SubjectSpec::of(&subject, trace_bytes.as_deref()),
                result.clone(),
            );
            let text = serde_json::to_string(&file)?;
            if let Err(e) = output::write_atomically(path, format!("{text}\n").as_bytes()) {
                write_errors.push(format!("--json-out {}: cannot write: {e}", path.display()));
            }
        }
        if scale_cfg.shard.count > 1 {
            empty_shard = result.finished && result.items.is_empty();
            note = Some(format!(
                "shard {} of the search: this report covers the shard's own part{}; \
                 `pmsim merge` combines the shards' --json-out results",
                scale_cfg.shard,
                if matches!(cfg.strategy, Strategy::Dfs { .. }) {
                    " (its run numbers count within the shard)"
                } else {
                    ""
                }
            ));
        }
        result.report()
    } else {
        let rep = explore(model.as_ref(), &cfg, &mut |p| bar.update(p))?;
        bar.finish();
        rep
    };
    if rep.runs == 0 && !empty_shard {
        return Err(usage(format!(
            "nothing ran: the search stopped before its first run completed \
             (--budget-secs {} is too short); no result",
            a.budget_secs.unwrap_or(0.0)
        )));
    }
    if let Some(n) = &note
        && !a.json
    {
        outln!(io.out, "{n}");
    }
    finish_search(
        cmd,
        a,
        &subject,
        model.as_ref(),
        &cfg,
        &rep,
        replay_log,
        write_errors,
        io,
    )
}

/// An output never replaces one of the run's inputs.
fn check_not_input(a: &RunArgs, flag: &str, path: &Path) -> Result<(), UsageError> {
    let same = |input: &Option<PathBuf>| {
        input.as_ref().is_some_and(
            |i| matches!((i.canonicalize(), path.canonicalize()), (Ok(x), Ok(y)) if x == y),
        )
    };
    if same(&a.trace) || same(&a.schedule_file) {
        return Err(usage(format!(
            "{flag} {}: is an input of this run; pmsim does not overwrite its inputs",
            path.display()
        )));
    }
    Ok(())
}

/// The end of a search: the event log and a long schedule written to their files, the report
/// printed, the exit code.
#[allow(clippy::too_many_arguments)]
fn finish_search(
    cmd: &'static str,
    a: &RunArgs,
    subject: &Subject,
    model: &dyn Model,
    cfg: &ExploreConfig,
    rep: &sim_core::sim::ExploreReport,
    replay_log: Option<EventLog>,
    mut write_errors: Vec<String>,
    io: &mut Io,
) -> Result<u8, UsageError> {
    let found = rep.failure.is_some();
    // Side outputs may fail; the report is printed regardless, and the failure named after it.
    if let Some(path) = &a.events {
        let log = match replay_log {
            Some(log) => Ok(log),
            None => {
                let log_cfg = match &rep.failure {
                    Some(f) => ExploreConfig {
                        strategy: Strategy::Replay(f.schedule.clone()),
                        ..cfg.clone()
                    },
                    None => cfg.clone(),
                };
                logged_run(model, &log_cfg).map(|r| r.log)
            }
        };
        match log {
            Ok(log) => {
                if let Err(e) = write_events(path, &log) {
                    write_errors.push(e);
                }
            }
            Err(e) => write_errors.push(format!("--events: {e}")),
        }
    }
    // A replay names the schedule the way the user gave it; a search writes a long one to a
    // file.
    let mut schedule_file = match &cfg.strategy {
        Strategy::Replay(_) => a.schedule_file.clone(),
        _ => None,
    };
    if let Some(f) = &rep.failure
        && !matches!(cfg.strategy, Strategy::Replay(_))
    {
        let text = f.schedule.to_string();
        if text.len() > MAX_INLINE_SCHEDULE {
            let path = schedule_file_path(a, subject, f.hash);
            match output::write_atomically(&path, format!("{text}\n").as_bytes()) {
                Ok(()) => schedule_file = Some(path),
                Err(e) => write_errors.push(format!(
                    "cannot write the schedule to {}: {e} (it is printed inline instead)",
                    path.display()
                )),
            }
        }
    }
    let details = details_of(cmd, model, cfg, rep, subject);
    let outcome = Outcome {
        command: cmd,
        subject,
        cfg,
        report: rep,
        schedule_file: schedule_file.as_deref(),
        details: details.as_ref(),
    };
    outcome.print(a.json, io.out);
    for e in &write_errors {
        io.error(&usage(e.clone()));
    }
    Ok(match (found, write_errors.is_empty()) {
        (true, _) => 1,
        (false, true) => 0,
        (false, false) => 2,
    })
}

/// `pmsim minimize`.
fn minimize_cmd(a: &MinimizeArgs, io: &mut Io) -> Result<u8, UsageError> {
    if a.step_limit == 0 {
        return Err(usage("--step-limit must be at least 1"));
    }
    let out = &a.output;
    check_output("--output", out)?;
    let same = matches!((a.trace.canonicalize(), out.canonicalize()), (Ok(x), Ok(y)) if x == y);
    if same {
        return Err(usage(format!(
            "--output {}: is the input trace; pmsim does not overwrite its inputs",
            out.display()
        )));
    }
    // Only a file an earlier minimize wrote is replaced.
    if out.exists() {
        let ours = output::read_capped(out, MAX_INPUT_BYTES)
            .is_ok_and(|b| b.starts_with(minimize::MARK.as_bytes()));
        if !ours {
            return Err(usage(format!(
                "--output {}: exists and pmsim did not write it (its first line is not `{}`); \
                 pmsim minimize replaces only its own outputs",
                out.display(),
                minimize::MARK
            )));
        }
    }
    let schedule =
        schedule_from(a.schedule.as_deref(), a.schedule_file.as_deref())?.ok_or_else(|| {
            usage(
                "minimize needs --schedule S or --schedule-file FILE (a failure report prints it)",
            )
        })?;
    let trace = read_trace(&a.trace)?;
    check_machine(&a.trace, &trace)?;
    let model = trace_model::load(trace.clone(), &[], a.check_invariants).map_err(|missing| {
        let mut msg = format!(
            "{}: this build cannot execute {} of the trace yet; nothing was run:",
            a.trace.display(),
            plural(missing.len(), "item", "items"),
        );
        for u in &missing {
            msg.push_str(&format!(
                "\n  {}:{}:{}: `{}`: {}",
                a.trace.display(),
                u.line,
                u.col,
                u.what,
                u.why
            ));
        }
        usage(msg)
    })?;
    let cfg = ExploreConfig {
        step_limit: a.step_limit,
        ..ExploreConfig::default()
    };
    let limits = minimize::Limits {
        max_runs: a.max_runs,
        max_traces: a.max_traces,
        check_invariants: a.check_invariants,
    };
    let m = minimize::minimize(&trace, &model, &schedule, &cfg, &limits)
        .map_err(|e| usage(format!("minimize: {e}")))?;
    let replay = minimize::replay_of(&m, out, &cfg, a.check_invariants);
    let text = minimize::output_text(&m, &a.trace, &replay);
    let written = output::write_atomically(out, text.as_bytes())
        .map_err(|e| format!("--output {}: cannot write the trace: {e}", out.display()));
    if a.json {
        let v = serde_json::json!({
            "schema_version": 1, "command": "minimize", "result": "violation",
            "kind": m.signature.kind, "queues": m.signature.queues,
            "input": a.trace.display().to_string(), "output": out.display().to_string(),
            "before": m.before, "after": m.after,
            "schedule": m.schedule.to_string(), "replay": replay,
            "runs": m.runs, "traces_tried": m.traces_tried,
            "written": written.is_ok(),
            "pmsim_version": env!("CARGO_PKG_VERSION"),
        });
        outln!(io.out, "{}", serde_json::to_string_pretty(&v)?);
    } else {
        let size = |s: &minimize::Size| {
            format!(
                "{}, {}, {}, {}",
                plural(s.statements, "statement", "statements"),
                plural(s.threads, "thread", "threads"),
                plural(s.preemptions, "preemption", "preemptions"),
                plural(s.steps, "step", "steps")
            )
        };
        outln!(
            io.out,
            "pmsim minimize {}: {} ({} runs, {} candidate traces)",
            a.trace.display(),
            m.signature.describe(),
            m.runs,
            m.traces_tried
        );
        outln!(io.out, "before: {}", size(&m.before));
        outln!(io.out, "after:  {}", size(&m.after));
        if written.is_ok() {
            outln!(io.out, "wrote {}", out.display());
        }
        outln!(io.out, "schedule: {}", m.schedule);
        outln!(io.out, "replay:   {replay}");
    }
    match written {
        Ok(()) => Ok(1),
        Err(e) => {
            io.error(&usage(e));
            Ok(2)
        }
    }
}

/// The reported run replayed with footprints and call paths (`report::Details`): the failure,
/// or the one run of `run` and `replay` (a clean search has no single run to report). `None`
/// when the replay does not reproduce (the report then says what explore found, without it).
pub(crate) fn details_of(
    cmd: &str,
    model: &dyn Model,
    cfg: &ExploreConfig,
    rep: &sim_core::sim::ExploreReport,
    subject: &Subject,
) -> Option<report::Details> {
    // A recorded step keeps its footprint and call path: runs longer than this are reported
    // without details rather than recorded at that cost.
    const MAX_DETAIL_STEPS: u64 = 200_000;
    let steps = rep.failure.as_ref().map_or(rep.max_steps, |f| f.steps);
    if steps > MAX_DETAIL_STEPS {
        return None;
    }
    let sched = match &rep.failure {
        Some(f) => f.schedule.clone(),
        None if cmd == "explore" => return None,
        None => logged_run(model, cfg).ok()?.schedule,
    };
    let run = sim_core::sim::story::record_replay(model, &sched, cfg.step_limit).ok()?;
    let (stats, statements) = match subject {
        // The runner's counts of the run just recorded (on this thread).
        Subject::Trace { path, .. } => (
            sim_fs::runner::last_run_stats(),
            read_trace(path)
                .map(|t| {
                    t.all_statements()
                        .map(|s| (s.pos.line, s.to_string()))
                        .collect()
                })
                .unwrap_or_default(),
        ),
        _ => Default::default(),
    };
    let dax = !matches!(subject, Subject::Toy(_));
    Some(report::Details::of_run(&run, stats, statements, dax))
}

/// One leg's line in a portfolio report.
#[derive(serde::Serialize)]
struct LegSummary {
    strategy: String,
    seed: u64,
    runs: u64,
    failed_runs: u64,
    exhausted: bool,
    stopped_early: bool,
    violation: Option<String>,
    skipped: bool,
}

/// `explore --portfolio`: the legs of `scale::portfolio_legs` in turn (see `ScaleArgs`), each
/// on `--jobs` workers; the first failure ends the search unless `--keep-going`.
#[allow(clippy::too_many_arguments)]
fn portfolio(
    cmd: &'static str,
    a: &RunArgs,
    sc: &scale::ScaleArgs,
    subject: &Subject,
    model: &(dyn Model + Sync),
    base: &ExploreConfig,
    bar: &mut progress::Bar,
    io: &mut Io,
) -> Result<u8, UsageError> {
    if sc.shard.is_some() || sc.json_out.is_some() {
        return Err(usage(
            "--portfolio runs in one process: it does not go with --shard or --json-out \
             (divide one strategy at a time)",
        ));
    }
    let started = std::time::Instant::now();
    let mut legs = Vec::new();
    let mut failing: Option<(ExploreConfig, sim_core::sim::ExploreReport)> = None;
    let mut whole = false;
    for leg in scale::portfolio_legs(base.seed) {
        let is_dfs = matches!(leg.strategy, Strategy::Dfs { .. });
        let remaining = base.budget.map(|b| b.saturating_sub(started.elapsed()));
        let cfg = ExploreConfig {
            strategy: leg.strategy.clone(),
            seed: leg.seed,
            runs: if is_dfs {
                None
            } else {
                Some(base.runs.unwrap_or(1000))
            },
            budget: remaining,
            ..base.clone()
        };
        let mut summary = LegSummary {
            strategy: report::strategy_text(&cfg),
            seed: cfg.seed,
            runs: 0,
            failed_runs: 0,
            exhausted: false,
            stopped_early: true,
            violation: None,
            skipped: true,
        };
        if remaining.is_some_and(|r| r.is_zero()) || (failing.is_some() && !base.keep_going) {
            legs.push(summary);
            continue;
        }
        let rep = if sc.divides() {
            let scale_cfg = scale::scale_config(sc)?;
            explore_scaled(model, &cfg, &scale_cfg, &mut |p| bar.update(p))?.report()
        } else {
            explore(model, &cfg, &mut |p| bar.update(p))?
        };
        summary.skipped = false;
        summary.runs = rep.runs;
        summary.failed_runs = rep.failed_runs;
        summary.exhausted = rep.exhausted;
        summary.stopped_early = rep.stopped_early;
        summary.violation = rep.failure.as_ref().map(|f| f.violation.kind.name());
        if matches!(
            leg.strategy,
            Strategy::Dfs {
                preemption_bound: None
            }
        ) && rep.exhausted
        {
            whole = true;
        }
        legs.push(summary);
        if rep.failure.is_some() && failing.is_none() {
            failing = Some((cfg, rep));
        }
    }
    bar.finish();
    let verdict = match (&failing, whole) {
        (Some(_), _) => "a violation was found".to_string(),
        (None, true) => "the whole space was exhausted (unbounded dfs with DPOR): no violation \
                         in any schedule"
            .to_string(),
        (None, false) => {
            let bounded = legs.iter().any(|l| l.exhausted);
            format!(
                "no violation found; the space was NOT exhausted{}",
                if bounded {
                    " (only within preemption bound 2)"
                } else {
                    ""
                }
            )
        }
    };
    if a.json {
        let mut buf: Vec<u8> = Vec::new();
        let code = match &failing {
            Some((cfg, rep)) => {
                let mut sink = std::io::sink();
                let mut inner = Io {
                    out: &mut buf,
                    err: &mut sink,
                    progress: false,
                };
                finish_search(
                    cmd,
                    a,
                    subject,
                    model,
                    cfg,
                    rep,
                    None,
                    Vec::new(),
                    &mut inner,
                )?
            }
            None => 0,
        };
        let failure: serde_json::Value = serde_json::from_slice(&buf).unwrap_or_default();
        let v = serde_json::json!({
            "schema_version": 1, "command": "explore --portfolio",
            "result": if failing.is_some() { "violation" } else { "clean" },
            "exhausted": whole, "verdict": verdict, "legs": legs, "failing_leg": failure,
        });
        outln!(io.out, "{}", serde_json::to_string_pretty(&v)?);
        return Ok(code);
    }
    outln!(
        io.out,
        "pmsim explore --portfolio: {} legs in turn",
        legs.len()
    );
    for (k, l) in legs.iter().enumerate() {
        let what = if l.skipped {
            "not run".to_string()
        } else {
            format!(
                "{}, {}{}",
                plural(l.runs as usize, "run", "runs"),
                match &l.violation {
                    Some(v) => format!("VIOLATION {v}"),
                    None => "no violation".into(),
                },
                if l.exhausted {
                    ", exhausted"
                } else if l.stopped_early {
                    ", stopped early"
                } else {
                    ""
                }
            )
        };
        outln!(
            io.out,
            "  leg {}: {}, seed {:#x}: {what}",
            k + 1,
            l.strategy,
            l.seed
        );
    }
    outln!(io.out, "{verdict}");
    match &failing {
        Some((cfg, rep)) => finish_search(cmd, a, subject, model, cfg, rep, None, Vec::new(), io),
        None => Ok(0),
    }
}

/// Checks one media parameter beyond its syntax: a finite value in a range that describes a
/// machine (latencies up to one second, a probability up to 1, other quantities up to 2^40).
pub fn check_media_value(key: &str, value: &str) -> Result<(), String> {
    let mut p = sim_core::machine::MediaParams::optane_like();
    p.set(key, value)?;
    let Some(shown) = p.get(key) else {
        return Ok(());
    };
    let Ok(v) = shown.trim_end_matches("ns").parse::<f64>() else {
        return Ok(()); // not a number (persist, vendor)
    };
    let (max, what) = if key.ends_with("_ns") {
        (1e9, "1 s (1e9 ns)")
    } else if key == "tail_probability" {
        (1.0, "1")
    } else {
        ((1u64 << 40) as f64, "2^40")
    };
    if !v.is_finite() || !(0.0..=max).contains(&v) {
        return Err(format!(
            "media parameter `{key}`: `{value}` is out of range (0 to {what})"
        ));
    }
    Ok(())
}

fn media_overrides(params: &[String]) -> Result<Vec<(String, String)>, UsageError> {
    let mut overrides = Vec::new();
    for kv in params {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| usage(format!("--media-param {kv}: expected KEY=VALUE")))?;
        check_media_value(k, v).map_err(|e| usage(format!("--media-param {kv}: {e}")))?;
        overrides.push((k.to_string(), v.to_string()));
    }
    Ok(overrides)
}

/// The point-query flags of `bench media`.
struct MediaPoint<'a> {
    workload: &'a str,
    pattern: &'a str,
    size: u64,
    threads: usize,
    dimms: Option<u32>,
    fence_every: Option<u64>,
    mix: Option<&'a str>,
    remote: bool,
}

fn bench_media_point(
    media: &str,
    params: &[String],
    a: &MediaPoint,
    json: bool,
    io: &mut Io,
) -> Result<u8, UsageError> {
    use sim_core::machine::bench::{PointQuery, Workload, point_query};
    let overrides = media_overrides(params)?;
    let workload = Workload::parse(a.workload).map_err(|e| usage(format!("--workload: {e}")))?;
    let sequential = match a.pattern {
        "rand" => false,
        "seq" => true,
        p => return Err(usage(format!("--pattern: `{p}` is not rand or seq"))),
    };
    let mix = match a.mix {
        None => None,
        Some(m) => {
            let parsed = m
                .split_once(':')
                .and_then(|(r, w)| Some((r.parse::<u32>().ok()?, w.parse::<u32>().ok()?)));
            Some(parsed.ok_or_else(|| usage(format!("--mix `{m}`: expected READ:WRITE")))?)
        }
    };
    let ways = match a.dimms {
        Some(d) => d,
        None => {
            let mut p = sim_core::machine::MediaParams::preset(media)
                .map_err(|e| usage(format!("bench media: {e}")))?;
            for (k, v) in &overrides {
                p.set(k, v)
                    .map_err(|e| usage(format!("bench media: {e}")))?;
            }
            p.ways
        }
    };
    let q = PointQuery {
        workload,
        sequential,
        size: a.size,
        threads: a.threads,
        dimms: ways,
        fence_every: a.fence_every,
        mix,
        remote: a.remote,
    };
    let r = point_query(media, &overrides, &q).map_err(|e| usage(format!("bench media: {e}")))?;
    if json {
        outln!(io.out, "{}", serde_json::to_string_pretty(&r)?);
    } else {
        outln!(
            io.out,
            "{}: {:.3} GB/s, {:.1} ns per access per thread",
            r.media,
            r.bandwidth_gbps,
            r.latency_ns
        );
    }
    Ok(0)
}

fn bench_media(media: &str, params: &[String], json: bool, io: &mut Io) -> Result<u8, UsageError> {
    let overrides = media_overrides(params)?;
    let rep = sim_core::machine::bench::run_media_bench(media, &overrides)
        .map_err(|e| usage(format!("bench media: {e}")))?;
    if json {
        outln!(io.out, "{}", serde_json::to_string_pretty(&rep)?);
    } else {
        let _ = write!(io.out, "{rep}");
    }
    Ok(0)
}

/// One row of `pmsim bench explore`.
#[derive(serde::Serialize)]
struct ExploreBenchRow {
    strategy: &'static str,
    runs: u64,
    /// Runs not cut short by sleep sets.
    complete_runs: u64,
    exhausted: bool,
    steps: u64,
    seconds: f64,
    runs_per_sec: f64,
    steps_per_sec: f64,
}

/// `pmsim bench explore`: schedules per second of pct and of unbounded dfs (with DPOR and with
/// sleep sets alone) on one subject, on one core; each capped by `--runs` (default 2000) and
/// `--budget-secs`, and the runs each dfs took, which are the runs to exhaust the space when
/// `exhausted` says so.
fn bench_explore(a: &RunArgs, io: &mut Io) -> Result<u8, UsageError> {
    let (model, _subject, trace_seed) = subject_of(a)?;
    if a.runs == Some(0) {
        return Err(usage("--runs must be at least 1"));
    }
    let budget = match a.budget_secs {
        None => None,
        Some(b) if b.is_finite() && b > 0.0 && b <= MAX_BUDGET_SECS => {
            Some(Duration::try_from_secs_f64(b).map_err(|e| usage(format!("--budget-secs: {e}")))?)
        }
        Some(_) => {
            return Err(usage(format!(
                "--budget-secs must be a positive number of seconds, at most {MAX_BUDGET_SECS:e}"
            )));
        }
    };
    let runs = a.runs.unwrap_or(2000);
    let seed = a.seed.or(trace_seed).unwrap_or(0);
    let dfs = Strategy::Dfs {
        preemption_bound: None,
    };
    let pct = Strategy::Pct {
        depth: a.depth.unwrap_or(pct_depth(a)).max(1),
    };
    let mut rows = Vec::new();
    for (name, strategy, dpor) in [
        ("pct", pct, true),
        ("dfs (DPOR + sleep sets)", dfs.clone(), true),
        ("dfs (sleep sets alone)", dfs, false),
    ] {
        let cfg = ExploreConfig {
            strategy,
            seed,
            runs: Some(runs),
            budget,
            step_limit: a.step_limit.max(1),
            keep_going: true,
            dpor,
            ..ExploreConfig::default()
        };
        let t = std::time::Instant::now();
        let rep = explore(model.as_ref(), &cfg, &mut |_| {})
            .map_err(|e| usage(format!("bench explore: {e}")))?;
        let seconds = t.elapsed().as_secs_f64().max(1e-9);
        rows.push(ExploreBenchRow {
            strategy: name,
            runs: rep.runs,
            complete_runs: rep.runs - rep.redundant_runs,
            exhausted: rep.exhausted,
            steps: rep.total_steps,
            seconds,
            runs_per_sec: rep.runs as f64 / seconds,
            steps_per_sec: rep.total_steps as f64 / seconds,
        });
    }
    if a.json {
        outln!(io.out, "{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    outln!(
        io.out,
        "pmsim bench explore: one core, at most {runs} runs per strategy, seed {seed:#x}"
    );
    outln!(
        io.out,
        "{:26} {:>9} {:>9} {:>9} {:>12} {:>12}",
        "strategy",
        "runs",
        "complete",
        "exhausted",
        "runs/s",
        "steps/s"
    );
    for r in &rows {
        outln!(
            io.out,
            "{:26} {:>9} {:>9} {:>9} {:>12.0} {:>12.0}",
            r.strategy,
            r.runs,
            r.complete_runs,
            if r.exhausted { "yes" } else { "no" },
            r.runs_per_sec,
            r.steps_per_sec
        );
    }
    Ok(0)
}

/// Where [`run`] writes: the report, the errors, and whether to draw progress bars (on the
/// process's stderr, only when it is a terminal).
pub struct Io<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    pub progress: bool,
}

impl Io<'_> {
    fn error(&mut self, e: &UsageError) {
        match e {
            UsageError::Plain(m) => {
                outln!(self.err, "pmsim: error: {m}");
            }
            UsageError::Positioned(m) => {
                outln!(self.err, "{m}");
            }
        }
    }
}

/// The whole command line: `args` (with the program name first) in, the exit code out.
pub fn run(args: impl IntoIterator<Item = OsString>, io: &mut Io) -> u8 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            // --help and --version go to the output and succeed; usage errors exit 2.
            let (w, code) = if e.use_stderr() {
                (&mut *io.err, 2)
            } else {
                (&mut *io.out, 0)
            };
            let _ = write!(w, "{}", e.render());
            return code;
        }
    };
    let res = match &cli.cmd {
        Cmd::CheckTrace { files, print } => Ok(check_trace(files, *print, io)),
        Cmd::Bugs => {
            for m in BUG_MODES {
                let status = if m.available {
                    "implemented"
                } else {
                    "planned"
                };
                outln!(
                    io.out,
                    "{:28} {:11} {}; fixed by {}",
                    m.name,
                    status,
                    m.summary,
                    m.fixed_by
                );
                if let Some(mech) = m.mechanism() {
                    outln!(io.out, "{:41}mechanism: {mech}", "");
                }
                if let Some((_, trace)) = sim_fs::crashcheck::CRASH_MODE_TRACES
                    .iter()
                    .find(|(n, _)| *n == m.name)
                {
                    let flags: String = sim_fs::crashcheck::crash_mode_flags(m.name)
                        .iter()
                        .map(|f| format!(" {f}"))
                        .collect();
                    outln!(
                        io.out,
                        "{:41}trace: pmsim crashcheck {trace}{flags} --bug {} (clean without \
                         --bug)",
                        "",
                        m.name
                    );
                } else if m.available {
                    match m.model() {
                        Some(model) => {
                            outln!(
                                io.out,
                                "{:41}model: pmsim explore --model {model} --bug {}",
                                "",
                                m.name
                            );
                        }
                        None => {
                            outln!(io.out, "{:41}reachable from: {}", "", m.reachable());
                        }
                    }
                }
                if let Some(trace) = m.trace() {
                    outln!(
                        io.out,
                        "{:41}shipped trace: pmsim {} {trace}",
                        "",
                        m.trace_command()
                    );
                }
            }
            let n = BUG_MODES.iter().filter(|m| m.available).count();
            outln!(
                io.out,
                "{n} of {} bug modes are implemented in this build",
                BUG_MODES.len()
            );
            Ok(0)
        }
        Cmd::Run(a) => run_cmd("run", a, None, io),
        Cmd::Explore(a) => run_cmd("explore", &a.run, Some(&a.scale), io),
        Cmd::Merge { files, json } => merge::merge_cmd(files, *json, io),
        Cmd::Replay(a) => run_cmd("replay", a, None, io),
        Cmd::Minimize(a) => minimize_cmd(a, io),
        Cmd::Crashcheck(a) => crashcheck::crashcheck(a, io),
        Cmd::ExportStoreLog(a) => crashcheck::export_store_log(a, io),
        Cmd::Bench { what } => match what {
            BenchCmd::Engine { iters, json } => {
                report::bench_engine(io.out, *iters, *json);
                Ok(0)
            }
            BenchCmd::Media {
                media,
                params,
                json,
                workload: Some(w),
                pattern,
                size,
                threads,
                dimms,
                fence_every,
                mix,
                remote,
            } => {
                let point = MediaPoint {
                    workload: w,
                    pattern,
                    size: *size,
                    threads: *threads,
                    dimms: *dimms,
                    fence_every: *fence_every,
                    mix: mix.as_deref(),
                    remote: *remote,
                };
                bench_media_point(media, params, &point, *json, io)
            }
            BenchCmd::Media {
                media,
                params,
                json,
                ..
            } => bench_media(media, params, *json, io),
            BenchCmd::Explore(a) => bench_explore(a, io),
            BenchCmd::Schedules {
                dir,
                runs,
                repeat,
                json,
            } => bench::schedules(dir, *runs, *repeat, *json, io),
            BenchCmd::Crash {
                trace,
                k,
                max_images,
                max_checked,
                json,
            } => bench::crash(trace, *k, *max_images, *max_checked, *json, io),
            BenchCmd::Faults {
                faults,
                window,
                write_trace,
                json,
            } => bench::faults(*faults, *window, write_trace.as_deref(), *json, io),
        },
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            io.error(&e);
            2
        }
    }
}
