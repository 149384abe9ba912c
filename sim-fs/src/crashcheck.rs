//! crashcheck: crash consistency of a trace at every crash point of a schedule.
//!
//! 1. **Schedules**: the strategy's runs (the same as `explore`'s), each kept as its schedule
//!    string; a schedule is then re-run with the runner's [`Recorder`] on ([`record_run`]).
//! 2. **Crash points**: before every step that is a fence (`PointKind::Fence`, the default),
//!    every flush or fence (`Flush`), or every store, flush or fence (`Op`), and once at the end
//!    of the run; a point whose persistency state equals the previous point's, with no
//!    durability promise made since, is skipped. Each
//!    keeps the machine's [`CrashPoint`] (a copy-on-write snapshot), the recorder's
//!    [`Snapshot`] and where it happened (thread, trace line, model call path).
//! 3. **Images**: [`CrashPoint::images`] (exact subsets of pending lines up to k, torn 8-byte
//!    words with `torn`, deduplicated by content hash). A capacity eviction never makes a line
//!    durable for crash images (sim-core `Machine::evict_victim`), so the set does not depend
//!    on the cache's replacement state. `persist=eadr` (the machine line or `--persist`) makes
//!    cached stores durable when they execute.
//! 4. **Oracles** per image ([`check_image`]): mount's journal recovery must succeed, fsck of
//!    the recovered metadata must be clean, every durability promise made before the point
//!    must read back, each file's size and existence must be one its operations left (an
//!    operation in flight is all or nothing), then the `after-crash` statements run on the
//!    remounted image in a simulation, at the crash points after every thread statement
//!    completed (the user's oracle is about the state the threads left; a crash in the middle
//!    is judged by the built-in oracles alone).
//! 5. **Witness** ([`Finding`]): the point, the lines that persisted beyond their durable
//!    state and those that did not, the stores (trace line, thread) that wrote them, and the
//!    smallest subset of the persisted lines that still fails (greedy: each line dropped back
//!    to its durable state while the image still fails, so every line left is needed).
//! 6. **Division** (`--jobs`, `--shard`): [`CheckOptions::shard`] keeps the crash points `g`
//!    (numbered over all schedules, [`CheckStats::units`]) with `g % N == I`; each part stops at
//!    its own first failure, so the earliest of the parts' failures is the undivided check's.

pub mod after;
pub mod check;
pub mod record;
pub mod store_log;

pub use check::ImageViolation;
pub use record::{Promise, PromiseKind, Recorder, RunLog, Snapshot};

use crate::fs::Daxfs;
use crate::runner::TraceRunner;
use serde::Serialize;
use sim_core::machine::{CrashImage, CrashOptions, CrashPoint, ImageCount};
use sim_core::platform::{Op, OpKind, Spawner, TaskId};
use sim_core::sim::explore::explore_observed;
use sim_core::sim::{
    ExploreConfig, Model, RunEnd, Schedule, Sim, SimConfig, SimPlatform, Strategy,
};
use std::sync::Arc;

/// Switch on the file-system bug modes of `names` on a freshly mounted `fs` (setup only).
pub(crate) async fn apply_fs_bugs(p: &SimPlatform, fs: &Daxfs<SimPlatform>, names: &[String]) {
    let on = |mode: &str| names.iter().any(|n| n == mode);
    if on("journal-no-fence") || on("torn-inode-size") {
        let mut log = fs.lock_log(p).await;
        log.no_commit_fence = on("journal-no-fence");
        log.torn_inode_size = on("torn-inode-size");
        drop(log);
    }
}

impl TraceRunner {
    /// The trace's `machine seed=`.
    pub fn trace_seed(&self) -> Option<u64> {
        self.trace.header.machine.as_ref().and_then(|m| m.seed)
    }

    /// Whether the machine is eADR (cached stores durable when they execute).
    pub fn persist_eadr(&self) -> bool {
        self.cfg.media.persist == sim_core::machine::PersistDomain::Eadr
    }
}

/// The crash modes of the catalogue and the trace in traces/crash/ that shows each.
pub const CRASH_MODE_TRACES: &[(&str, &str)] = &[
    ("journal-no-fence", "traces/crash/journal-no-fence.trace"),
    (
        "sync-fault-no-fsync",
        "traces/crash/sync-fault-no-fsync.trace",
    ),
    (
        "pmd-writeback-no-wrprotect",
        "traces/crash/pmd-writeback-no-wrprotect.trace",
    ),
    ("torn-inode-size", "traces/crash/torn-inode-size.trace"),
];

/// The crashcheck options a crash mode's trace needs besides `--bug NAME` to show the mode
/// (torn-inode-size tears a 16-byte store: only `--torn` images hold half of it).
pub fn crash_mode_flags(mode: &str) -> &'static [&'static str] {
    match mode {
        "torn-inode-size" => &["--torn"],
        _ => &[],
    }
}

/// Where crash points are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PointKind {
    /// Before every sfence/mfence.
    Fence,
    /// Before every flush (clwb, clflushopt, clflush) or fence.
    Flush,
    /// Before every store, non-temporal store, flush or fence.
    Op,
}

impl PointKind {
    fn is_point(self, op: &Op) -> bool {
        let mem = (Op::MEM_BASE..Op::MEM_END).contains(&op.obj.0);
        match self {
            PointKind::Fence => op.kind == OpKind::Flush && op.obj == Op::NONE,
            PointKind::Flush => op.kind == OpKind::Flush,
            PointKind::Op => op.kind == OpKind::Flush || (op.kind == OpKind::Write && mem),
        }
    }
}

/// One crash point of a run.
#[derive(Clone, Debug)]
pub struct CrashRec {
    /// Its index in the run (the `--point` of a replay).
    pub index: usize,
    /// The step it precedes (the run's step count then: its event's number in the log).
    pub step: u64,
    /// The scheduling steps the run had taken after the setup (a stepper's position). A step
    /// of an atomic section logs several events (`sim` "Atomic sections"), so this can be
    /// less than `step` less the setup's steps.
    pub scheduling_step: u64,
    pub thread: String,
    pub line: u32,
    /// The model call path of the thread about to take the step.
    pub stack: Vec<&'static str>,
    /// The step it precedes (`sfence`, `flush line 0x...`, `end of run`).
    pub what: String,
    pub snap: Snapshot,
    pub point: CrashPoint,
}

/// Which statement issued the stores from sequence number `first` on.
#[derive(Clone, Debug)]
pub struct StoreOrigin {
    pub first: u64,
    pub thread: String,
    pub line: u32,
}

/// A recorded run of one schedule.
pub struct RecordedRun {
    pub end: RunEnd,
    pub schedule: Schedule,
    pub points: Vec<CrashRec>,
    pub log: RunLog,
    pub origins: Vec<StoreOrigin>,
}

impl RecordedRun {
    /// The statement that issued store `seq` (`None`: the setup, before the threads).
    pub fn origin(&self, seq: u64) -> Option<&StoreOrigin> {
        let i = self.origins.partition_point(|o| o.first <= seq);
        (i > 0).then(|| &self.origins[i - 1])
    }
}

/// The schedules a strategy's runs took (at most `runs`; distinct, in run order).
pub fn collect_schedules(
    runner: &TraceRunner,
    strategy: &Strategy,
    seed: u64,
    runs: u64,
    step_limit: u64,
) -> Result<Vec<Schedule>, String> {
    if let Strategy::Replay(s) = strategy {
        return Ok(vec![s.clone()]);
    }
    let cfg = ExploreConfig {
        strategy: strategy.clone(),
        seed,
        runs: Some(runs),
        step_limit,
        keep_going: true,
        ..ExploreConfig::default()
    };
    let mut out: Vec<Schedule> = Vec::new();
    let mut observe = |sim: &Sim, _end: &RunEnd| {
        let s = Schedule {
            seed: sim.config().seed,
            choices: sim.choices().to_vec(),
        };
        if !out.contains(&s) {
            out.push(s);
        }
    };
    explore_observed(runner, &cfg, &mut |_| {}, &mut observe).map_err(|e| e.0)?;
    Ok(out)
}

fn trace_order(sim: &Sim, en: &[TaskId]) -> TaskId {
    *en.iter()
        .min_by_key(|t| (sim.task_line(**t), t.0))
        .expect("choose is called with enabled tasks")
}

/// Run `sched` with the recorder on, keeping a crash point before every step `kind` names
/// and one at the end. `runner.crash` must be set.
pub fn record_run(
    runner: &TraceRunner,
    sched: &Schedule,
    kind: PointKind,
    step_limit: u64,
) -> Result<RecordedRun, String> {
    let rec = runner
        .crash
        .clone()
        .ok_or("record_run needs a runner with a recorder")?;
    let mut sim = Sim::new(SimConfig {
        seed: sched.seed,
        step_limit,
        record_log: false,
    });
    runner.setup(&mut sim);
    let mut points: Vec<CrashRec> = Vec::new();
    let mut origins: Vec<StoreOrigin> = Vec::new();
    let mut last_sig: Option<(u64, usize, usize, usize)> = None;
    let mut i = 0usize;
    let mut bad: Option<String> = None;
    let seq_of = |sim: &Sim| sim.with_machine(|m| m.next_store_seq()).unwrap_or(0);
    let mut prev: Option<(u64, String, u32)> = None;
    let mut taken = 0u64;
    let mut take =
        |sim: &Sim, t: Option<TaskId>, what: String, taken: u64, points: &mut Vec<CrashRec>| {
            let Some(point) = sim.with_machine(|m| m.crash_point()) else {
                return;
            };
            let stores: usize = point.pending_lines().iter().map(|l| l.stores.len()).sum();
            // Same stores, same pending lines and no new promise: the same images and oracles.
            let sig = (
                seq_of(sim),
                point.pending_lines().len(),
                stores,
                rec.snapshot().promises,
            );
            if last_sig == Some(sig) {
                return;
            }
            last_sig = Some(sig);
            let (thread, line, stack) = match t {
                Some(t) => (sim.task_name(t), sim.task_line(t), sim.task_path(t)),
                None => ("-".to_string(), 0, Vec::new()),
            };
            points.push(CrashRec {
                index: points.len(),
                step: sim.steps(),
                scheduling_step: taken,
                thread,
                line,
                stack,
                what,
                snap: rec.snapshot(),
                point,
            });
        };
    let end = sim.run_steps(|sim, en| {
        let now = seq_of(sim);
        if let Some((first, thread, line)) = prev.take()
            && now > first
        {
            origins.push(StoreOrigin {
                first,
                thread,
                line,
            });
        }
        let t = if en.len() > 1 {
            match sched.choices.get(i) {
                Some(&c) => {
                    i += 1;
                    match en.iter().find(|t| t.0 == c) {
                        Some(&t) => t,
                        None => {
                            bad.get_or_insert_with(|| {
                                format!(
                                    "the schedule diverges at choice {i} (step {}): it names \
                                     task {c}, but the tasks that can move are {:?}",
                                    sim.steps(),
                                    en.iter().map(|t| t.0).collect::<Vec<_>>()
                                )
                            });
                            return None;
                        }
                    }
                }
                None => trace_order(sim, en),
            }
        } else {
            en[0]
        };
        let op = sim.next_op(t);
        if kind.is_point(&op) {
            take(sim, Some(t), sim.describe_op(&op), taken, &mut points);
        }
        prev = Some((now, sim.task_name(t), sim.task_line(t)));
        taken += 1;
        Some(t)
    });
    if let Some(b) = bad {
        return Err(b);
    }
    let now = seq_of(&sim);
    if let Some((first, thread, line)) = prev.take()
        && now > first
    {
        origins.push(StoreOrigin {
            first,
            thread,
            line,
        });
    }
    if matches!(end, RunEnd::Done) {
        take(&sim, None, "end of run".into(), taken, &mut points);
    }
    let schedule = Schedule {
        seed: sched.seed,
        choices: sim.choices().to_vec(),
    };
    Ok(RecordedRun {
        end,
        schedule,
        points,
        log: rec.log(),
        origins,
    })
}

/// What one metadata state of a crash point recovers to, and its durability plan.
pub struct MetaState {
    pub rec: check::Recovered,
    pub plan: check::PromisePlan,
}

/// The metadata oracles' results at one crash point, by the part of an image's delta that
/// falls in the metadata region: recovery, fsck and the all-or-nothing check read only
/// metadata (fsck reads the bytes below `meta_bytes`, recovery the superblock, journal and
/// the tables the journal names), so images whose deltas agree below `meta_bytes` recover to
/// the same state and share these verdicts. The durability oracle still runs per image,
/// through the state's [`check::PromisePlan`].
pub struct MetaCache {
    meta_bytes: u64,
    results: std::collections::BTreeMap<u128, Result<Arc<MetaState>, ImageViolation>>,
    /// Metadata states recovered (the cache's misses).
    pub recoveries: u64,
}

impl MetaCache {
    /// The cache of point `cp` (no caching when the persisted image has no file system).
    pub fn new(cp: &CrashRec, pmem: u64) -> MetaCache {
        MetaCache {
            meta_bytes: geometry(cp, pmem).map_or(u64::MAX, |g| g.meta_bytes()),
            results: Default::default(),
            recoveries: 0,
        }
    }

    fn get(
        &mut self,
        cp: &CrashRec,
        image: &CrashImage,
        run: &RecordedRun,
        pmem: u64,
    ) -> Result<Arc<MetaState>, ImageViolation> {
        let mb = self.meta_bytes;
        let key = cp.point.subimage(image, |a| a < mb).hash;
        if let Some(r) = self.results.get(&key) {
            return r.clone();
        }
        self.recoveries += 1;
        let r = (|| {
            let r = check::recover(&cp.point, image, pmem)?;
            check::fsck(&cp.point, image, pmem, &r)?;
            check::atomicity(&r, &run.log, &cp.snap)?;
            let plan = check::PromisePlan::new(&cp.point, &r, &run.log, &cp.snap);
            Ok(Arc::new(MetaState { rec: r, plan }))
        })();
        self.results.insert(key, r.clone());
        r
    }
}

/// All the oracles of one image (see the module header), with the metadata results of
/// `cache` when given.
pub fn check_image(
    runner: &TraceRunner,
    run: &RecordedRun,
    cp: &CrashRec,
    image: &CrashImage,
    step_limit: u64,
    cache: Option<&mut MetaCache>,
) -> Result<(), ImageViolation> {
    let pmem = runner.cfg.pmem_size;
    let m = match cache {
        Some(c) => c.get(cp, image, run, pmem)?,
        None => MetaCache::new(cp, pmem).get(cp, image, run, pmem)?,
    };
    check::promises_planned(&m.plan, &cp.point, image, &m.rec, &run.log, &cp.snap)?;
    // The user's oracle is about the state the threads left: it runs on the images of the
    // crash points after every statement completed (the end of the run, and the fences of
    // the final log force); the built-in oracles above run at every point.
    if runner.trace.after_crash.is_some() && cp.snap.done == runner.trace.statements.len() {
        after_crash_on(runner, cp, image, step_limit)?;
    }
    Ok(())
}

/// The `after-crash` section on the recovered image, in a simulation of its own.
fn after_crash_on(
    runner: &TraceRunner,
    cp: &CrashRec,
    image: &CrashImage,
    step_limit: u64,
) -> Result<(), ImageViolation> {
    let machine = cp
        .point
        .recover(image, &runner.cfg)
        .map_err(|e| ImageViolation {
            kind: "after-crash".into(),
            message: e,
        })?;
    let mut sim = Sim::new(SimConfig {
        seed: 0,
        step_limit,
        record_log: false,
    });
    sim.set_machine(machine);
    let p = sim.platform();
    let (trace, bugs, pmem) = (runner.trace.clone(), runner.bugs, runner.cfg.pmem_size);
    sim.spawn("after-crash", move || async move {
        after::after_crash(&p, &trace, pmem, bugs, None).await;
    });
    match sim.run(|_, en| en[0]) {
        RunEnd::Done => Ok(()),
        RunEnd::Violation(v) => Err(ImageViolation {
            kind: "after-crash".into(),
            message: if v.line > 0 {
                format!("{} (line {}): {}", v.kind.name(), v.line, v.message)
            } else {
                format!("{}: {}", v.kind.name(), v.message)
            },
        }),
        RunEnd::Abandoned => Err(ImageViolation {
            kind: "after-crash".into(),
            message: "the after-crash run was abandoned".into(),
        }),
    }
}

/// A line of a witness.
#[derive(Clone, Debug, Serialize)]
pub struct WitnessLine {
    pub addr: u64,
    /// What the line holds (`journal (block 3)`, `inode table (block 9)`, `data (block 600)`).
    pub region: String,
    /// Pending stores that persisted / were pending.
    pub persisted: u32,
    pub pending: u32,
    /// 8-byte words of the next store that persisted (torn images).
    pub torn_words: u8,
    /// The stores pending on the line: (sequence number, thread, trace line; `setup` for the
    /// file system's setup before the threads).
    pub stores: Vec<(u64, String, u32)>,
}

/// `0x5040 data (block 20): 1 of 2 pending stores [#12 w line 7, #15 w line 9]`, as the
/// report and the GUI's witness show it.
impl std::fmt::Display for WitnessLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:#x} {}: {} of {} pending stores",
            self.addr, self.region, self.persisted, self.pending
        )?;
        if self.torn_words != 0 {
            write!(f, " + words {:#04x} of the next", self.torn_words)?;
        }
        f.write_str(" [")?;
        for (i, (seq, t, line)) in self.stores.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            match line {
                0 => write!(f, "{sep}#{seq} {t}")?,
                _ => write!(f, "{sep}#{seq} {t} line {line}")?,
            }
        }
        f.write_str("]")
    }
}

/// A failing image and how to get it again.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub violation: ImageViolation,
    pub schedule: String,
    pub point: usize,
    pub image: u64,
    pub thread: String,
    pub line: u32,
    pub stack: Vec<&'static str>,
    pub before: String,
    /// Lines found beyond their durable state.
    pub persisted: Vec<WitnessLine>,
    /// Pending lines found in their durable state.
    pub not_persisted: Vec<WitnessLine>,
    /// The smallest subset of `persisted` that still fails (same violation kind).
    pub minimal: Vec<WitnessLine>,
}

fn region_of(pmem_geo: Option<&crate::layout::Geometry>, addr: u64) -> String {
    match pmem_geo {
        Some(g) => {
            let b = addr / g.blocksize;
            format!("{} (block {b})", g.region_of(b))
        }
        None => "device".into(),
    }
}

fn witness_lines(
    run: &RecordedRun,
    cp: &CrashRec,
    geo: Option<&crate::layout::Geometry>,
    image: &CrashImage,
) -> (Vec<WitnessLine>, Vec<WitnessLine>) {
    let mut persisted = Vec::new();
    let mut not = Vec::new();
    for l in cp.point.pending_lines() {
        let chosen = image.lines.iter().find(|c| c.addr == l.addr);
        let stores = l
            .stores
            .iter()
            .map(|s| match run.origin(s.seq) {
                Some(o) => (s.seq, o.thread.clone(), o.line),
                None => (s.seq, "setup".to_string(), 0),
            })
            .collect();
        let w = WitnessLine {
            addr: l.addr,
            region: region_of(geo, l.addr),
            persisted: chosen.map_or(0, |c| c.persisted),
            pending: l.stores.len() as u32,
            torn_words: chosen.map_or(0, |c| c.torn_words),
            stores,
        };
        if chosen.is_some() {
            persisted.push(w);
        } else {
            not.push(w);
        }
    }
    (persisted, not)
}

/// The geometry of the file system on the persisted image of `cp` (for naming regions).
fn geometry(cp: &CrashRec, pmem: u64) -> Option<crate::layout::Geometry> {
    let mut sbb = [0u8; 128];
    cp.point.persisted().read(0, &mut sbb).ok()?;
    crate::layout::Superblock::decode(&sbb, pmem)
        .ok()
        .map(|s| s.geo)
}

/// The witness of a failing image: its lines, and a 1-minimal subset of the persisted ones
/// that still fails with the same kind.
pub fn witness(
    runner: &TraceRunner,
    run: &RecordedRun,
    cp: &CrashRec,
    image_id: u64,
    image: &CrashImage,
    v: ImageViolation,
    step_limit: u64,
) -> Finding {
    let geo = geometry(cp, runner.cfg.pmem_size);
    let (persisted, not_persisted) = witness_lines(run, cp, geo.as_ref(), image);
    let mut keep: Vec<u64> = image.lines.iter().map(|l| l.addr).collect();
    let mut i = 0;
    while i < keep.len() {
        let trial: Vec<u64> = keep
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, a)| *a)
            .collect();
        let sub = cp.point.subimage(image, |a| trial.contains(&a));
        match check_image(runner, run, cp, &sub, step_limit, None) {
            Err(w) if w.kind == v.kind => keep = trial,
            _ => i += 1,
        }
    }
    let minimal = persisted
        .iter()
        .filter(|l| keep.contains(&l.addr))
        .cloned()
        .collect();
    Finding {
        violation: v,
        schedule: run.schedule.to_string(),
        point: cp.index,
        image: image_id,
        thread: cp.thread.clone(),
        line: cp.line,
        stack: cp.stack.clone(),
        before: cp.what.clone(),
        persisted,
        not_persisted,
        minimal,
    }
}

/// Options of a check.
#[derive(Clone, Copy, Debug)]
pub struct CheckOptions {
    pub points: PointKind,
    pub crash: CrashOptions,
    pub step_limit: u64,
    /// Check only this (point, image) of the run (a replay).
    pub only: Option<(usize, u64)>,
    /// Check only the crash points of shard `index` of `count` (see [`CheckStats::units`]).
    pub shard: (u64, u64),
    /// Judge the images of a point by their metadata state and their data lines one by one
    /// where that is exact ([`compose_point`]); `false` checks every image by itself.
    pub compose: bool,
}

/// The elementary symmetric sums `e_0..=e_k` of `counts` (saturating).
fn elementary(counts: impl Iterator<Item = u128>, k: usize) -> Vec<u128> {
    let mut e = vec![0u128; k + 1];
    e[0] = 1;
    for c in counts {
        for j in (1..=k).rev() {
            e[j] = e[j].saturating_add(e[j - 1].saturating_mul(c));
        }
    }
    e
}

/// Every image of point `cp` judged without enumerating the data lines' combinations, or
/// `None` when that is not known to be exact here (the caller then checks image by image,
/// which also finds and reports the first failing image in the usual order).
///
/// Why it is exact. An image is its metadata part `M` (the lines below `meta_bytes`) and its
/// data part `D`. Recovery, fsck and the all-or-nothing check read only `M`
/// ([`MetaCache`]); the durability oracle, for a metadata state whose [`check::PromisePlan`]
/// is composable, is the conjunction over the image's delta lines of
/// [`check::PromisePlan::line_ok`]. So when `M` passes the metadata oracles, `M` itself keeps
/// the promises, and every single data-line state `d` is `line_ok` under `M`'s plan, every
/// image `M + D` with `|M| + |D| <= k` passes: each of `D`'s lines is one of those `d`. The
/// `after-crash` statements read anything, so points where they run are never composed.
/// Images are counted, not built: with dedup no two (lines, states) selections give the same
/// image, so `M` stands for `sum_{j <= k - |M|} e_j(states per data line)` images.
pub fn compose_point(
    runner: &TraceRunner,
    run: &RecordedRun,
    cp: &CrashRec,
    opts: &CheckOptions,
    cache: &mut MetaCache,
) -> Option<u64> {
    if !opts.crash.dedup
        || (runner.trace.after_crash.is_some() && cp.snap.done == runner.trace.statements.len())
    {
        return None;
    }
    let mb = cache.meta_bytes;
    if mb == u64::MAX {
        return None;
    }
    let pmem = runner.cfg.pmem_size;
    let data = cp.point.line_states(opts.crash, |a| a >= mb);
    // `--k all` is a k past the number of lines.
    let k = opts.crash.k.min(cp.point.pending_lines().len());
    let e = elementary(data.iter().map(|(_, s)| s.len() as u128), k);
    // Plans already shown to keep every data-line state (by signature).
    let mut judged: std::collections::BTreeMap<Vec<(usize, u64, u64, usize)>, bool> =
        Default::default();
    let mut total = 0u128;
    for m in cp.point.images_of(opts.crash, |a| a < mb) {
        let st = cache.get(cp, &m, run, pmem).ok()?;
        if !st.plan.composable() || !st.plan.clean(&m, &run.log) {
            return None;
        }
        let rest = k.saturating_sub(m.lines.len());
        if rest > 0 {
            let ok = *judged.entry(st.plan.signature()).or_insert_with(|| {
                data.iter()
                    .all(|(a, states)| states.iter().all(|l| st.plan.line_ok(*a, l, &run.log)))
            });
            if !ok {
                return None;
            }
        }
        let n = e[..=rest]
            .iter()
            .fold(0u128, |acc, x| acc.saturating_add(*x));
        total = total.saturating_add(n);
    }
    Some(u64::try_from(total).unwrap_or(u64::MAX))
}

/// The most images `--k all` enumerates at one crash point.
pub const MAX_FULL_IMAGES: u128 = 1 << 20;

/// Counts of a check.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckStats {
    pub schedules: u64,
    pub points: u64,
    /// Images enumerated (distinct within their point) and checked.
    pub images: u64,
    /// Images skipped at their point as equal to one already checked there.
    pub duplicates: u64,
    /// Distinct metadata states recovered (mount's journal replay, fsck, the all-or-nothing
    /// check): images whose metadata lines agree share one.
    pub recoveries: u64,
    /// Of `images`, those judged by [`compose_point`] (by their metadata state and their
    /// data lines one by one) rather than one by one.
    pub composed: u64,
    /// Pending lines at the points (summed).
    pub pending_lines: u64,
    /// Images full enumeration (no bound on k, no dedup) would give, summed over points
    /// (log10 when it overflows).
    pub full_log10: f64,
    /// Crash points met so far over all schedules, checked or not: the units `--jobs` and
    /// `--shard I/N` divide. Point `g` (in the order of schedules, then of points in a run)
    /// belongs to shard `g % N`, so shards are disjoint, cover every point, and depend only
    /// on the schedules (each shard records every schedule, which is cheap beside the images).
    #[serde(skip)]
    pub units: u64,
}

/// What checking one schedule found.
pub enum Outcome {
    Clean,
    /// The run itself failed before crash checking (a violation of `pmsim run`).
    RunFailed(String),
    Violation(Box<Finding>),
}

/// Check every image of every crash point of `sched`. `progress` is called after each image.
pub fn check_schedule(
    runner: &mut TraceRunner,
    sched: &Schedule,
    opts: &CheckOptions,
    stats: &mut CheckStats,
    progress: &mut dyn FnMut(&CheckStats),
) -> Result<Outcome, String> {
    runner.crash = Some(Arc::new(Recorder::new(&runner.trace)));
    let run = record_run(runner, sched, opts.points, opts.step_limit);
    let runner: &TraceRunner = runner;
    let run = run?;
    stats.schedules += 1;
    if let RunEnd::Violation(v) = &run.end {
        return Ok(Outcome::RunFailed(format!(
            "{} (line {}): {}",
            v.kind.name(),
            v.line,
            v.message
        )));
    }
    if let Some((pi, _)) = opts.only
        && pi >= run.points.len()
    {
        return Err(format!(
            "--point {pi}: the run has {} crash points (0 to {})",
            run.points.len(),
            run.points.len().saturating_sub(1)
        ));
    }
    for cp in &run.points {
        let unit = stats.units;
        stats.units += 1;
        if opts.only.is_some_and(|(pi, _)| pi != cp.index) {
            continue;
        }
        if opts.shard.1 > 1 && unit % opts.shard.1 != opts.shard.0 {
            continue;
        }
        stats.points += 1;
        stats.pending_lines += cp.point.pending_lines().len() as u64;
        let ImageCount { log10, .. } = cp.point.count_full(opts.crash.torn);
        stats.full_log10 = log_add(stats.full_log10, log10, stats.points == 1);
        if opts.crash.k >= cp.point.pending_lines().len() {
            // `--k all`: exact enumeration, only when it is small enough to finish.
            let full = cp.point.count_full(opts.crash.torn);
            if full.exact.is_none_or(|n| n > MAX_FULL_IMAGES) {
                return Err(format!(
                    "--k all: crash point {} ({} line {}) has {} images before dedup (more \
                     than {MAX_FULL_IMAGES}); bound the lines with --k N",
                    cp.index, cp.thread, cp.line, full
                ));
            }
        }
        let mut cache = MetaCache::new(cp, runner.cfg.pmem_size);
        if opts.compose
            && opts.only.is_none()
            && let Some(n) = compose_point(runner, &run, cp, opts, &mut cache)
        {
            stats.images += n;
            stats.composed += n;
            stats.recoveries += cache.recoveries;
            progress(stats);
            continue;
        }
        let mut images = cp.point.images(opts.crash);
        let mut id = 0u64;
        let mut found = None;
        for image in images.by_ref() {
            let this = id;
            id += 1;
            if opts.only.is_some_and(|(_, ii)| ii != this) {
                continue;
            }
            stats.images += 1;
            let r = check_image(runner, &run, cp, &image, opts.step_limit, Some(&mut cache));
            progress(stats);
            if let Err(v) = r {
                found = Some((this, image, v));
                break;
            }
            if opts.only.is_some() {
                break;
            }
        }
        stats.duplicates += images.duplicates();
        stats.recoveries += cache.recoveries;
        if let Some((this, image, v)) = found {
            let f = witness(runner, &run, cp, this, &image, v, opts.step_limit);
            return Ok(Outcome::Violation(Box::new(f)));
        }
        if let Some((_, ii)) = opts.only
            && ii >= id
        {
            return Err(format!(
                "--image {ii}: crash point {} has {id} distinct images (0 to {})",
                cp.index,
                id.saturating_sub(1)
            ));
        }
    }
    Ok(Outcome::Clean)
}

/// log10(10^a + 10^b) (`first`: a is not set yet).
pub fn log_add(a: f64, b: f64, first: bool) -> f64 {
    if first {
        return b;
    }
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    hi + (1.0 + 10f64.powf(lo - hi)).log10()
}
