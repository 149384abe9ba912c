//! A parsed trace as a model for the executor: one task per trace thread, running its
//! statements in program order.
//!
//! What runs today: the scheduling statements (`sleep`, `yield`) with their expectations.
//! The machine model (sim-core), the memory-management layer with GUP, signals and
//! memory_failure, and the DAX core's fault half (sim-mm) exist, but a trace reaches memory
//! only through a file mapped from daxfs, which is not built yet (the built-in DAX models,
//! `sim_mm::dax::models`, reach the DAX core without it). Every statement that needs daxfs is
//! listed by [`unsupported`] before anything runs, so that `run` says plainly what it cannot
//! execute yet instead of pretending.

use sim_core::platform::{Assertion, Platform, Spawner};
use sim_core::sim::{Model, Sim};
use sim_core::trace::{Expect, Op, Statement, Trace};
use std::sync::Arc;

/// A statement or header item the current build cannot execute, with its position and why.
pub struct Unsupported {
    pub line: u32,
    pub col: u32,
    pub what: String,
    pub why: String,
}

/// Why a statement cannot run in this build, or `None` when it can.
fn why(op: &Op) -> Option<&'static str> {
    use sim_core::trace::OpClass;
    Some(match op.class() {
        OpClass::Scheduling => return None,
        OpClass::File => "file operations need daxfs (sim-fs), which is not built yet",
        OpClass::Mapping => {
            "mappings of a file need daxfs (sim-fs), which is not built yet; the DAX core \
             exists and the built-in models reach it (`pmsim explore --model NAME`)"
        }
        OpClass::Access => {
            "memory accesses reach the machine model through a DAX mapping of a daxfs file, \
             and daxfs is not built yet (the DAX core fault path exists: `--model`)"
        }
        OpClass::Flush => {
            "flushes and fences act on the lines of a DAX mapping's accesses; traces get \
             them with daxfs (not built yet)"
        }
        OpClass::Pin => {
            "pins take a DAX mapping's pages; GUP and the DAX core exist, but mappings of \
             trace files need daxfs (not built yet)"
        }
        OpClass::Poison => {
            "the media model and memory_failure exist, but a file offset or pmem address \
             reaches its owners only through daxfs (not built yet)"
        }
    })
}

/// Everything in `trace` the current build cannot execute.
pub fn unsupported(trace: &Trace) -> Vec<Unsupported> {
    let mut out = Vec::new();
    for f in &trace.header.files {
        out.push(Unsupported {
            line: f.pos.line,
            col: f.pos.col,
            what: format!("file {}", f.path),
            why: "files need daxfs (sim-fs), which is not built yet".into(),
        });
    }
    for b in &trace.header.bugs {
        let mode = sim_mm::bugs::bug_mode(&b.name);
        let why = match mode.and_then(|m| m.available.then(|| m.model()).flatten()) {
            Some(model) => format!(
                "this bug mode is implemented in the DAX core, which traces reach through daxfs \
                 (not built yet); the built-in model shows it: \
                 `pmsim explore --model {model} --bug {}`",
                b.name
            ),
            None => "this bug mode is not implemented yet (`pmsim bugs` lists them)".into(),
        };
        out.push(Unsupported {
            line: b.pos.line,
            col: b.pos.col,
            what: format!("bug {}", b.name),
            why,
        });
    }
    for s in &trace.statements {
        if let Some(why) = why(&s.op) {
            out.push(Unsupported {
                line: s.pos.line,
                col: s.pos.col,
                what: format!("{} {}", s.thread, s.op.keyword()),
                why: why.into(),
            });
        }
    }
    if let Some(ac) = &trace.after_crash {
        out.push(Unsupported {
            line: ac.pos.line,
            col: ac.pos.col,
            what: "after-crash".into(),
            why: "crash images exist in the machine model, but the recovery after a crash \
                  (mount, journal replay, fsck) needs daxfs, which is not built yet"
                .into(),
        });
    }
    out.sort_by_key(|u| (u.line, u.col));
    out
}

/// The trace as a model. Build it only for a trace with nothing [`unsupported`].
pub struct TraceModel {
    trace: Arc<Trace>,
    threads: Vec<String>,
}

impl TraceModel {
    pub fn new(trace: Trace) -> Self {
        let mut threads: Vec<String> = Vec::new();
        for s in &trace.statements {
            if !threads.contains(&s.thread) {
                threads.push(s.thread.clone());
            }
        }
        TraceModel {
            trace: Arc::new(trace),
            threads,
        }
    }
}

async fn execute<P: Platform>(p: &P, s: &Statement) {
    p.set_line(s.pos.line);
    match &s.op {
        Op::Sleep { ns } => p.sleep_ns(*ns).await,
        Op::Yield => p.yield_point("trace:yield").await,
        other => {
            // `unsupported` rejected the trace before it ran.
            unreachable!("{} reached the executor", other.keyword())
        }
    }
    // Scheduling statements always succeed: only `ok` and `any` can be met.
    if let Some(e) = &s.expect
        && !matches!(e.expect, Expect::Ok | Expect::Any)
    {
        p.report(Assertion {
            fatal: true,
            name: "trace-expectation".into(),
            message: format!(
                "line {}: `{}` expected {}, but the operation succeeded",
                s.pos.line, s, e.expect
            ),
        })
        .await;
    }
}

impl Model for TraceModel {
    fn setup(&self, sim: &mut Sim) {
        let p = sim.platform();
        for name in &self.threads {
            let trace = self.trace.clone();
            let name2 = name.clone();
            sim.spawn(name, move || async move {
                for s in trace.statements.iter().filter(|s| s.thread == name2) {
                    execute(&p, s).await;
                }
            });
        }
    }
}

/// The machine a trace describes: its `machine` line applied to the default configuration
/// (presets first, then the standard keys, then media parameters in file order). An unknown key
/// or a bad value is an error at the key's position: `(line, col, message)`.
pub fn machine_config(
    trace: &Trace,
) -> Result<sim_core::machine::MachineConfig, (u32, u32, String)> {
    use sim_core::trace::Keyword;
    let mut cfg = sim_core::machine::MachineConfig::default();
    let Some(m) = &trace.header.machine else {
        return Ok(cfg);
    };
    let at = |e: String| (m.pos.line, m.pos.col, e);
    if let Some(media) = m.media {
        cfg.set("media", media.keyword()).map_err(at)?;
    }
    if let Some(cpus) = m.cpus {
        cfg.set("cpus", &cpus.to_string()).map_err(at)?;
    }
    if let Some(pmem) = m.pmem {
        cfg.set("pmem", &pmem.to_string()).map_err(at)?;
    }
    if let Some(persist) = m.persist {
        cfg.set("persist", persist.keyword()).map_err(at)?;
    }
    if let Some(seed) = m.seed {
        cfg.set("seed", &seed.to_string()).map_err(at)?;
    }
    for p in &m.extra {
        let value = p.value.trim_matches('"');
        let known = sim_core::machine::MediaParams::keys().contains(&p.key.as_str());
        if known && let Err(e) = crate::check_media_value(&p.key, value) {
            return Err((
                p.pos.line,
                p.pos.col,
                format!("machine {}={}: {e}", p.key, p.value),
            ));
        }
        cfg.set(&p.key, value).map_err(|e| {
            (
                p.pos.line,
                p.pos.col,
                format!("machine {}={}: {e}", p.key, p.value),
            )
        })?;
    }
    Ok(cfg)
}
