//! A parsed trace as a model for the executor: the trace runner of sim-fs
//! ([`sim_fs::runner`]), which executes the trace on the full stack (machine model, mm layer,
//! DAX core, daxfs), one task per trace thread.
//!
//! What the runner cannot execute yet (and bad input it can see before running: a missing
//! file, an access past a mapping, files that do not fit) is listed by [`unsupported`] with
//! positions before anything runs, so that `run` says plainly what it cannot do.

use sim_core::sim::{Model, Sim};
use sim_core::trace::Trace;
use sim_fs::runner::TraceRunner;

/// A statement or header item the current build cannot execute, with its position and why.
pub struct Unsupported {
    pub line: u32,
    pub col: u32,
    pub what: String,
    pub why: String,
}

fn convert(r: Vec<sim_fs::runner::Refusal>) -> Vec<Unsupported> {
    r.into_iter()
        .map(|r| Unsupported {
            line: r.line,
            col: r.col,
            what: r.what,
            why: r.why,
        })
        .collect()
}

/// The trace as a model, or everything in it the current build cannot execute (with `--bug`
/// modes `bugs`). `check_invariants`: the sim-mm invariants after every step, not only at the
/// end.
pub fn load(
    trace: Trace,
    bugs: &[String],
    check_invariants: bool,
) -> Result<TraceModel, Vec<Unsupported>> {
    let cfg = machine_config(&trace).map_err(|(line, col, why)| {
        vec![Unsupported {
            line,
            col,
            what: "machine".into(),
            why,
        }]
    })?;
    let mut runner = TraceRunner::new(trace, cfg, bugs).map_err(convert)?;
    runner.check_every_step = check_invariants;
    Ok(TraceModel { runner })
}

/// A trace the runner accepted.
pub struct TraceModel {
    runner: TraceRunner,
}

impl Model for TraceModel {
    fn setup(&self, sim: &mut Sim) {
        self.runner.setup(sim)
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
