//! A crashcheck run for the crash-points view, computed in process with sim-fs's crashcheck
//! library (the same functions `pmsim crashcheck` calls): the trace-order schedule is recorded
//! with crash points before every fence and at the end ([`record_run`]), each point's images
//! are enumerated (exact subsets of pending lines up to `k`, deduplicated) and every image is
//! judged by the oracles ([`check_image`]); the first failing image of each point gets its
//! witness ([`witness`]). Nothing here decides a verdict: the rows only carry what the library
//! returned.
//!
//! It runs simulations on the calling thread: call [`crashcheck`] while no [`Stepper`] lives on
//! the thread (the command line does it before opening the stepper).
//!
//! [`Stepper`]: crate::session::Stepper

use crate::session::{build_runner, parse_trace};
use sim_core::machine::CrashOptions;
use sim_core::sim::{RunEnd, Strategy};
use sim_fs::crashcheck::{
    Finding, MetaCache, PointKind, Recorder, check_image, collect_schedules, record_run, witness,
};
use std::sync::Arc;

/// The step limit of the recorded run (as `pmsim crashcheck`'s default).
const STEP_LIMIT: u64 = 1_000_000;

/// One crash image of a point and the oracles' verdict on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRow {
    /// Its id within the point (the `--image` of `pmsim crashcheck`).
    pub id: u64,
    /// The pending lines the image persisted beyond their durable state (addresses).
    pub lines: Vec<u64>,
    /// `Ok`: every oracle passed; `Err("kind: message")`: the first that failed.
    pub verdict: Result<(), String>,
}

/// One crash point of the run.
#[derive(Clone, Debug)]
pub struct PointRow {
    /// Its index in the run (the `--point` of `pmsim crashcheck`).
    pub index: usize,
    /// The step it precedes, counted in scheduling steps from the first step of the threads
    /// (after the setup; `CrashRec::scheduling_step`): the stepper's cursor at `step` shows the
    /// state at the point.
    pub step: usize,
    pub thread: String,
    /// The trace line of the step it precedes (0: the end of the run).
    pub line: u32,
    /// The model call stack of the thread about to take the step.
    pub stack: Vec<String>,
    /// The step it precedes (`sfence`, `end of run`).
    pub what: String,
    /// Lines with stores not yet durable at the point.
    pub pending: usize,
    pub images: Vec<ImageRow>,
    /// Images skipped as equal to one already enumerated at this point.
    pub duplicates: u64,
    /// Images not enumerated past [`CrashRun::max_images`].
    pub capped: bool,
    /// The witness of the first failing image.
    pub witness: Option<Box<Finding>>,
}

impl PointRow {
    pub fn failing(&self) -> usize {
        self.images.iter().filter(|i| i.verdict.is_err()).count()
    }
}

/// A whole crashcheck run of one schedule.
#[derive(Clone, Debug)]
pub struct CrashRun {
    pub trace: String,
    pub bugs: Vec<String>,
    /// The schedule that was recorded (load it into the stepper to scrub to a point).
    pub schedule: String,
    pub k: usize,
    pub max_images: usize,
    pub points: Vec<PointRow>,
    /// The run itself ended in a violation: no image was checked.
    pub run_failed: Option<String>,
}

impl CrashRun {
    /// The first point with a failing image.
    pub fn first_failing(&self) -> Option<&PointRow> {
        self.points.iter().find(|p| p.failing() > 0)
    }
}

/// Run crashcheck on the trace at `path` with the bug modes `bugs`: the trace-order schedule
/// (seed: the trace's `machine seed=`, else 0), crash points before every fence, images with
/// at most `k` lines away from their durable state (no torn stores), at most `max_images`
/// images per point.
pub fn crashcheck(
    path: &str,
    bugs: &[String],
    k: usize,
    max_images: usize,
) -> Result<CrashRun, String> {
    let (trace, cfg) = parse_trace(path)?;
    let pmem = cfg.pmem_size;
    let recorder = Arc::new(Recorder::new(&trace));
    let mut runner = build_runner(path, trace, cfg, bugs)?;
    let seed = runner.trace_seed().unwrap_or(0);
    let schedules = collect_schedules(&runner, &Strategy::TraceOrder, seed, 1, STEP_LIMIT)
        .map_err(|e| format!("crashcheck: {e}"))?;
    let sched = schedules
        .into_iter()
        .next()
        .ok_or("crashcheck: the trace-order strategy ran no schedule")?;
    runner.crash = Some(recorder);
    let run = record_run(&runner, &sched, PointKind::Fence, STEP_LIMIT)
        .map_err(|e| format!("crashcheck: {e}"))?;
    let mut out = CrashRun {
        trace: path.to_string(),
        bugs: bugs.to_vec(),
        schedule: run.schedule.to_string(),
        k,
        max_images,
        points: Vec::new(),
        run_failed: None,
    };
    if let RunEnd::Violation(v) = &run.end {
        out.run_failed = Some(format!(
            "{} (line {}): {}",
            v.kind.name(),
            v.line,
            v.message
        ));
        return Ok(out);
    }
    let opts = CrashOptions {
        k,
        torn: false,
        dedup: true,
    };
    for cp in &run.points {
        let mut cache = MetaCache::new(cp, pmem);
        let mut images = cp.point.images(opts);
        let mut rows = Vec::new();
        let mut first_bad = None;
        let mut capped = false;
        for (id, image) in images.by_ref().enumerate() {
            if id >= max_images {
                capped = true;
                break;
            }
            let verdict = check_image(&runner, &run, cp, &image, STEP_LIMIT, Some(&mut cache));
            if let Err(v) = &verdict
                && first_bad.is_none()
            {
                first_bad = Some((id as u64, image.clone(), v.clone()));
            }
            rows.push(ImageRow {
                id: id as u64,
                lines: image.lines.iter().map(|l| l.addr).collect(),
                verdict: verdict.map_err(|v| format!("{}: {}", v.kind, v.message)),
            });
        }
        let witness = first_bad
            .map(|(id, image, v)| Box::new(witness(&runner, &run, cp, id, &image, v, STEP_LIMIT)));
        out.points.push(PointRow {
            index: cp.index,
            step: cp.scheduling_step as usize,
            thread: cp.thread.clone(),
            line: cp.line,
            stack: cp.stack.iter().map(|s| s.to_string()).collect(),
            what: cp.what.clone(),
            pending: cp.point.pending_lines().len(),
            images: rows,
            duplicates: images.duplicates(),
            capped,
            witness,
        });
    }
    Ok(out)
}
