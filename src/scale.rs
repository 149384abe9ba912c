//! `pmsim explore` at scale: `--jobs N` worker threads, `--shard I/N` (or `auto` under a Slurm
//! job array or a Kubernetes Indexed Job), `--json-out FILE` (a shard result for `pmsim merge`)
//! and `--portfolio`. The division itself is `sim_core::sim::explore::explore_scaled`.

use crate::report::Subject;
use crate::{UsageError, usage};
use clap::Args;
use serde::{Deserialize, Serialize};
use sim_core::sim::explore::{DEFAULT_SPLIT_DEPTH, ScaleConfig, Shard, ShardResult};
use sim_core::sim::{ExploreConfig, Strategy};
use std::path::PathBuf;

#[derive(Args, Clone, Debug, Default)]
pub struct ScaleArgs {
    /// Worker threads, one simulation each; the result is the same for every N (with dfs and
    /// DPOR, that of `--split-depth`, see there).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub jobs: u32,
    /// Explore shard I of N (from 0): random and pct, a partition of the run indices; dfs, of
    /// the tree (the choice prefixes at the split depth, round robin). `auto`: I and N from
    /// SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT (a Slurm job array), or from
    /// JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) and --shard-count or PMSIM_SHARD_COUNT.
    #[arg(long, value_name = "I/N|auto")]
    pub shard: Option<String>,
    /// The number of shards for `--shard auto` under JOB_COMPLETION_INDEX (the Job's
    /// completions); else the PMSIM_SHARD_COUNT environment variable.
    #[arg(long, value_name = "N")]
    pub shard_count: Option<u32>,
    /// dfs divided between jobs or shards: the units are the choice prefixes through this many
    /// branching points (default 3). Without DPOR it changes nothing but the division; with
    /// DPOR every enabled thread is a branch above it (sound; some more runs than undivided
    /// DPOR, the same for every --jobs and shard count). Also valid with --jobs 1.
    #[arg(long, value_name = "D", value_parser = clap::value_parser!(u32).range(0..=64))]
    pub split_depth: Option<u32>,
    /// Write this search's (or shard's) result as JSON to FILE, for `pmsim merge`.
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
    /// Several strategies in turn, each until it finds a violation: pct --depth 2 (seed S),
    /// random (seed S), pct --depth 3 (seed S+1), each --runs runs (default 1000); then dfs
    /// --preemption-bound 2 and unbounded dfs (DPOR), each to exhaustion or the budget, which
    /// all legs share.
    #[arg(long)]
    pub portfolio: bool,
}

impl ScaleArgs {
    /// Whether the search goes through the divided driver.
    pub fn divides(&self) -> bool {
        self.jobs > 1
            || self.shard.is_some()
            || self.split_depth.is_some()
            || self.json_out.is_some()
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse_num(what: &str, v: &str) -> Result<u32, UsageError> {
    v.trim()
        .parse::<u32>()
        .map_err(|_| usage(format!("{what}: `{v}` is not a number")))
}

/// `--shard I/N` or `--shard auto`.
pub fn shard_of(a: &ScaleArgs) -> Result<Shard, UsageError> {
    let Some(text) = &a.shard else {
        if a.shard_count.is_some() {
            return Err(usage("--shard-count goes with --shard auto"));
        }
        return Ok(Shard::WHOLE);
    };
    let (index, count) = if text == "auto" {
        if let Some(id) = env("SLURM_ARRAY_TASK_ID") {
            let id = parse_num("SLURM_ARRAY_TASK_ID", &id)?;
            let count = env("SLURM_ARRAY_TASK_COUNT").ok_or_else(|| {
                usage(
                    "--shard auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not \
                     (submit as a job array: sbatch --array=0-N)",
                )
            })?;
            let count = parse_num("SLURM_ARRAY_TASK_COUNT", &count)?;
            // An array numbered from MIN (--array=1-8) is shard ID - MIN.
            let min = match env("SLURM_ARRAY_TASK_MIN") {
                Some(m) => parse_num("SLURM_ARRAY_TASK_MIN", &m)?,
                None => 0,
            };
            let index = id.checked_sub(min).ok_or_else(|| {
                usage("--shard auto: SLURM_ARRAY_TASK_ID is below SLURM_ARRAY_TASK_MIN")
            })?;
            (index, count)
        } else if let Some(idx) = env("JOB_COMPLETION_INDEX") {
            let index = parse_num("JOB_COMPLETION_INDEX", &idx)?;
            let count = match (a.shard_count, env("PMSIM_SHARD_COUNT")) {
                (Some(n), _) => n,
                (None, Some(n)) => parse_num("PMSIM_SHARD_COUNT", &n)?,
                (None, None) => {
                    return Err(usage(
                        "--shard auto: JOB_COMPLETION_INDEX is set but not the number of \
                         shards; give --shard-count N or PMSIM_SHARD_COUNT (the Job's \
                         completions)",
                    ));
                }
            };
            (index, count)
        } else {
            return Err(usage(
                "--shard auto: neither SLURM_ARRAY_TASK_ID (a Slurm job array) nor \
                 JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) is set; give --shard I/N",
            ));
        }
    } else {
        if a.shard_count.is_some() {
            return Err(usage("--shard-count goes with --shard auto"));
        }
        let (i, n) = text
            .split_once('/')
            .ok_or_else(|| usage(format!("--shard {text}: expected I/N (e.g. 0/4) or auto")))?;
        (
            parse_num(&format!("--shard {text}"), i)?,
            parse_num(&format!("--shard {text}"), n)?,
        )
    };
    if count == 0 {
        return Err(usage("--shard: the number of shards must be at least 1"));
    }
    if index >= count {
        return Err(usage(format!(
            "--shard {index}/{count}: the index counts from 0 and must be below {count}"
        )));
    }
    Ok(Shard { index, count })
}

/// The scale configuration of a divided search.
pub fn scale_config(a: &ScaleArgs) -> Result<ScaleConfig, UsageError> {
    Ok(ScaleConfig {
        jobs: a.jobs as usize,
        shard: shard_of(a)?,
        split_depth: a.split_depth.map_or(DEFAULT_SPLIT_DEPTH, |d| d as usize),
    })
}

/// What was explored, as a shard result file names it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SubjectSpec {
    Trace {
        path: PathBuf,
        bugs: Vec<String>,
        check_invariants: bool,
        /// FNV-1a of the trace file's bytes: shards of one search read the same trace.
        content_hash: String,
    },
    Toy {
        name: String,
    },
    Model {
        name: String,
        bugs: Vec<String>,
    },
}

impl SubjectSpec {
    pub fn of(s: &Subject, trace_bytes: Option<&[u8]>) -> SubjectSpec {
        match s {
            Subject::Trace {
                path,
                bugs,
                check_invariants,
            } => SubjectSpec::Trace {
                path: path.clone(),
                bugs: bugs.clone(),
                check_invariants: *check_invariants,
                content_hash: format!("{:016x}", fnv1a(trace_bytes.unwrap_or_default())),
            },
            Subject::Toy(n) => SubjectSpec::Toy { name: n.clone() },
            Subject::Model { name, bugs } => SubjectSpec::Model {
                name: name.clone(),
                bugs: bugs.clone(),
            },
        }
    }

    pub fn subject(&self) -> Subject {
        match self {
            SubjectSpec::Trace {
                path,
                bugs,
                check_invariants,
                ..
            } => Subject::Trace {
                path: path.clone(),
                bugs: bugs.clone(),
                check_invariants: *check_invariants,
            },
            SubjectSpec::Toy { name } => Subject::Toy(name.clone()),
            SubjectSpec::Model { name, bugs } => Subject::Model {
                name: name.clone(),
                bugs: bugs.clone(),
            },
        }
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The file `--json-out` writes and `pmsim merge` reads.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ShardFile {
    /// Always `pmsim-shard-result`.
    pub format: String,
    pub schema_version: u32,
    pub pmsim_version: String,
    pub subject: SubjectSpec,
    pub result: ShardResult,
}

pub const SHARD_FORMAT: &str = "pmsim-shard-result";
pub const SHARD_SCHEMA: u32 = 1;

impl ShardFile {
    pub fn new(subject: SubjectSpec, result: ShardResult) -> ShardFile {
        ShardFile {
            format: SHARD_FORMAT.into(),
            schema_version: SHARD_SCHEMA,
            pmsim_version: env!("CARGO_PKG_VERSION").into(),
            subject,
            result,
        }
    }

    /// The configuration of the search this result belongs to (for reports and replay lines).
    pub fn config(&self) -> ExploreConfig {
        let r = &self.result;
        ExploreConfig {
            strategy: r.strategy.clone(),
            seed: r.seed,
            runs: r.target_runs,
            step_limit: r.step_limit,
            keep_going: r.keep_going,
            sleep_sets: r.sleep_sets || !matches!(r.strategy, Strategy::Dfs { .. }),
            dpor: r.dpor || !matches!(r.strategy, Strategy::Dfs { .. }),
            ..ExploreConfig::default()
        }
    }
}

/// One leg of `--portfolio`.
pub struct Leg {
    pub strategy: Strategy,
    pub seed: u64,
}

/// The legs of `--portfolio` for seed `seed`, cheapest first.
pub fn portfolio_legs(seed: u64) -> Vec<Leg> {
    vec![
        Leg {
            strategy: Strategy::Pct { depth: 2 },
            seed,
        },
        Leg {
            strategy: Strategy::Random,
            seed,
        },
        Leg {
            strategy: Strategy::Pct { depth: 3 },
            seed: seed.wrapping_add(1),
        },
        Leg {
            strategy: Strategy::Dfs {
                preemption_bound: Some(2),
            },
            seed,
        },
        Leg {
            strategy: Strategy::Dfs {
                preemption_bound: None,
            },
            seed,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(shard: &str) -> ScaleArgs {
        ScaleArgs {
            jobs: 1,
            shard: Some(shard.into()),
            ..ScaleArgs::default()
        }
    }

    #[test]
    fn explicit_shards_parse_and_bad_ones_are_refused() {
        assert_eq!(
            shard_of(&args("2/5")).ok(),
            Some(Shard { index: 2, count: 5 })
        );
        for bad in ["5/5", "0/0", "1", "a/2", "1/b", "-1/2"] {
            assert!(shard_of(&args(bad)).is_err(), "{bad}");
        }
        let mut a = args("0/2");
        a.shard_count = Some(2);
        assert!(shard_of(&a).is_err());
    }

    #[test]
    fn the_trace_hash_tells_traces_apart() {
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }
}
