//! `pmsim merge A.json B.json ...`: the shard results of one search (`explore --shard I/N
//! --json-out F`) combined into its report, exactly the report of the undivided search
//! (`sim_core::sim::explore::merge_shards`). Refused with exit 2: a file that is not a shard
//! result, results of different subjects, searches or pmsim versions, a shard missing or given
//! twice.

use crate::report::Outcome;
use crate::scale::{SHARD_FORMAT, SHARD_SCHEMA, ShardFile};
use crate::{Io, MAX_INPUT_BYTES, UsageError, output, usage};
use sim_core::sim::explore::merge_shards;
use std::path::{Path, PathBuf};

/// A shard result file as JSON; an unreadable file or bad JSON is a usage error naming the
/// file (and the line and column).
pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value, UsageError> {
    let bytes = output::read_capped(path, MAX_INPUT_BYTES)
        .map_err(|e| usage(format!("{}: cannot read: {e}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        usage(format!(
            "{}:{}:{}: not JSON: {e}",
            path.display(),
            e.line(),
            e.column()
        ))
    })
}

fn read_shard(path: &Path) -> Result<ShardFile, UsageError> {
    let v = read_json(path)?;
    if v.get("format").and_then(|f| f.as_str()) != Some(SHARD_FORMAT) {
        return Err(usage(format!(
            "{}: not a pmsim shard result (written by `pmsim explore ... --json-out FILE`)",
            path.display()
        )));
    }
    let schema = v.get("schema_version").and_then(|s| s.as_u64());
    if schema != Some(SHARD_SCHEMA as u64) {
        return Err(usage(format!(
            "{}: shard result schema {} (this pmsim reads {SHARD_SCHEMA})",
            path.display(),
            schema.map_or("missing".to_string(), |s| s.to_string())
        )));
    }
    serde_json::from_value(v)
        .map_err(|e| usage(format!("{}: a malformed shard result: {e}", path.display())))
}

pub fn merge_cmd(files: &[PathBuf], json: bool, io: &mut Io) -> Result<u8, UsageError> {
    // `crashcheck --shard I/N --json` results have their own format and merge.
    if let Some(first) = files.first()
        && let Ok(v) = read_json(first)
        && v.get("format").and_then(|f| f.as_str()) == Some(crate::crashcheck::CRASH_SHARD_FORMAT)
    {
        return crate::crashcheck::merge_crash_shards(files, json, io);
    }
    let mut shards = Vec::new();
    for f in files {
        shards.push((f, read_shard(f)?));
    }
    let (first_path, first) = &shards[0];
    for (p, s) in &shards[1..] {
        let differs = if s.subject != first.subject {
            Some("explored another subject (trace, its content, bug modes, toy or model)")
        } else if s.pmsim_version != first.pmsim_version {
            Some("was written by another pmsim version")
        } else {
            None
        };
        if let Some(why) = differs {
            return Err(usage(format!(
                "{} {why} than {}: not shards of one search",
                p.display(),
                first_path.display()
            )));
        }
    }
    let results: Vec<_> = shards.iter().map(|(_, s)| s.result.clone()).collect();
    let rep = merge_shards(&results).map_err(|e| usage(format!("merge: {e}")))?;
    let subject = first.subject.subject();
    let cfg = first.config();
    if !json {
        outln!(
            io.out,
            "merged {} shards of one search",
            first.result.shard.count
        );
    }
    // The failure's details (call paths, causal story, per-thread counts) come from replaying
    // it, exactly as the undivided search does; `None` when the subject cannot be loaded again
    // (a trace moved since the shards ran).
    let details = rep.failure.as_ref().and_then(|_| {
        let (model, _, _) = reload(&first.subject).ok()?;
        crate::details_of("explore", model.as_ref(), &cfg, &rep, &subject)
    });
    let outcome = Outcome {
        command: "explore",
        subject: &subject,
        cfg: &cfg,
        report: &rep,
        schedule_file: None,
        details: details.as_ref(),
    };
    outcome.print(json, io.out);
    Ok(if rep.failure.is_some() { 1 } else { 0 })
}

/// The subject of a shard result loaded again, through the command line's own loader.
fn reload(spec: &crate::scale::SubjectSpec) -> Result<crate::Loaded, UsageError> {
    use clap::Parser;
    #[derive(Parser)]
    struct Again {
        #[command(flatten)]
        run: crate::RunArgs,
    }
    let mut args: Vec<String> = vec!["pmsim".into()];
    match spec {
        crate::scale::SubjectSpec::Trace {
            path,
            bugs,
            check_invariants,
            ..
        } => {
            args.push(path.display().to_string());
            for b in bugs {
                args.extend(["--bug".into(), b.clone()]);
            }
            if *check_invariants {
                args.push("--check-invariants".into());
            }
        }
        crate::scale::SubjectSpec::Toy { name } => args.extend(["--toy".into(), name.clone()]),
        crate::scale::SubjectSpec::Model { name, bugs } => {
            args.extend(["--model".into(), name.clone()]);
            for b in bugs {
                args.extend(["--bug".into(), b.clone()]);
            }
        }
    }
    let again = Again::try_parse_from(args).map_err(|e| usage(e.to_string()))?;
    crate::subject_of(&again.run)
}
