//! The trace runner: a parsed trace (traces/format/TRACE_FORMAT.md) executed on the full stack
//! (machine model, mm layer, DAX core, daxfs) as a [`Model`] for the executor. The CLI
//! (`pmsim run|explore|replay`) and the GUI share it.
//!
//! **Setup** (one task that runs to its end before any trace thread starts, so it adds no
//! interleavings): the machine from the `machine` line, an [`MmWorld`] whose memmap covers the
//! device (pfn [`PMEM_BASE_PFN`] is device page 0), mkfs + mount of daxfs with the `fs` line's
//! block size, the DAX core with the `bug` set, one process per `proc` line (a thread in none is
//! a process of its own), and the header `file`s: blocks preallocated (2 MiB-aligned extents
//! where the allocator can) unless `hole`, the fill written with non-temporal stores and fenced,
//! the size set and the log forced, so that everything is durable before the threads start.
//!
//! **Threads**: one task per trace thread, running its statements in order; each statement
//! tells the scheduler its trace line (`Platform::set_line`) first. Loads and stores go through
//! the page tables: [`dax_user_access`] (the CPU's walk, and `handle_mm_fault` through the DAX
//! core on a miss) page by page, then the machine's load or store at the physical address.
//!
//! **Checks**: each statement's expectation (an unmet one is a `trace-expectation` violation
//! naming thread, line, expected and got); the data oracle (`data` violation: a load returns
//! other bytes than the file's content the execution implies at that moment; a shared store
//! updates it, the header fill initialises it); at the end (the exit task, [`EXIT_TASK`],
//! spawned after the threads, which joins each of them) every process exits (`Ctx::exit_processes`: pins dropped, every VMA unmapped, unlinked files no
//! longer mapped evicted; alone, so no scheduling choice), then a log force, daxfs's
//! in-core/media cross-check and fsck; the sim-mm invariants at the end, after exit (and after
//! every step with [`TraceRunner::check_every_step`]); deadlock and lost wakeups are the
//! engine's. With an `after-crash` section, the exit task then unmounts cleanly, shuts down
//! (nothing lost), remounts with journal recovery, runs fsck, checks that every file reads back
//! as the oracle says, and runs the section (`crashcheck::after`).
//!
//! **crashcheck** ([`TraceRunner::crash`]): each statement is reported to the recorder before it
//! runs and after it completes (the one point where durability promises are recorded); the
//! run's own `after-crash` phase is skipped, since crashcheck runs the section on crash images.
//!
//! **Stats** ([`last_run_stats`]): per thread, counted where each statement's outcome comes
//! back (statements, the page size that mapped an access, SIGBUS/SIGSEGV, errnos, unmet
//! expectations), whatever the statement; page faults by size come from the call paths of a
//! recorded run ([`count_faults`]). Bookkeeping only: nothing in a run reads it.
//!
//! **Mapping names** belong to a process: a statement naming a mapping that another thread of
//! the process has not mapped yet waits until it is (a name never mapped leaves the thread
//! asleep, reported by the engine as a lost wakeup on `trace_mapping_names`).
//!
//! **User-space state** (the names a process gave its mappings, the oracle, the contents of
//! anonymous DRAM pages that copy-on-write faults map) lives outside the kernel model in a
//! `std::sync::Mutex` that is never held across an `.await`: no task can observe it between two
//! of its own steps, so it adds no interleavings and no nondeterminism.
//!
//! **File statements** (write, read, truncate, fallocate, fsync, fdatasync, unlink, msync,
//! madvise) are in `runner_file.rs` on daxfs's file operations (`crate::file`); every change
//! they make to a file's bytes reaches the oracle at the step that made it.
//!
//! **Reflink, pins, O_DIRECT, poison and signals**: `runner_mf.rs` (its header says how they
//! run and when a thread takes a signal).
//!
//! **Not built yet** (refused by [`refusals`] with the statement's position, nothing runs):
//! the DAX-core and file-system bug modes without a mechanism in this build.
//! Simplifications: an access holds the page-table lock from the check of its translation
//! to the machine access (so an unmap, which takes that lock, waits for it as a TLB shootdown
//! would; a translation that changed since the walk is retried); a private (CoW) page's
//! content is checked only against itself (the oracle follows shared mappings of files).

use crate::filebytes::FileBytes;
use crate::fs::Daxfs;
use crate::iomap::DaxfsFile;
use crate::layout::Geometry;
use crate::{FsError, mkfs};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sim_core::PmemPlatform;
use sim_core::machine::{CrashImage, CrashPoint, Machine, MachineConfig};
use sim_core::platform::{
    Assertion, Platform, Spawner, TaskId, WaitKey, WaitQueue, WakeMode, join_all, wake_key_eq,
};
use sim_core::sim::{MachineMemo, Model, Sim, SimConfig, SimPlatform};
use sim_core::trace::{
    Access as TAccess, Expect, FileDecl, MapOff, Op, PageSize, Pattern, Sharing, Statement, Trace,
};
use sim_mm::dax::fault::{
    Access, FAULT_FLAG_USER, FAULT_FLAG_WRITE, Vmf, dax_fs_fault, dax_user_access,
};
use sim_mm::dax::{BugSet, Dax, DaxBug, Release};
use sim_mm::invariants::{CheckPolicy, install_checks};
use sim_mm::mm::{MmapFlags, do_mmap, do_munmap};
use sim_mm::pgtable::{PmdVal, is_huge_zero_pfn, is_pagecache_pfn, is_zero_pfn};
use sim_mm::signal::create_process;
use sim_mm::world::{MmConfig, MmWorld};
use sim_mm::{MmStruct, VmFault};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::ThreadId;

type P = SimPlatform;

/// The name of the task that ends a run (after the trace threads, which it joins: process
/// exit, the end checks, the after-crash section). Task ids: 0 the setup, 1..=n the threads,
/// n + 1 this one. No thread can have this name (thread names have no `-`).
pub const EXIT_TASK: &str = "end-of-run";

#[path = "runner_mf.rs"]
pub(crate) mod mf;
#[path = "runner_file.rs"]
mod runner_file;

/// The pfn of device page 0 (pmem sits above 4 GiB in the machine model).
pub const PMEM_BASE_PFN: u64 = 0x10_0000;
const PAGE: u64 = 4096;
const LINE: u64 = 64;

/// Something in a trace the runner refuses before anything runs: the position, what, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub line: u32,
    pub col: u32,
    pub what: String,
    pub why: String,
}

/// Whether this build runs bug mode `name`: a DAX-core mode whose decision point exists
/// ([`DaxBug::mechanism`]) or a catalogue mode marked available.
pub fn bug_runnable(name: &str) -> bool {
    DaxBug::from_name(name).is_some_and(|b| b.mechanism().is_some())
        || sim_mm::bugs::bug_mode(name).is_some_and(|m| m.available)
}

/// Why the runner cannot execute `op` yet, or `None` when it can (every statement of the
/// format runs today; a new op must be classified here).
fn not_built(op: &Op) -> Option<&'static str> {
    match op {
        Op::Create { .. }
        | Op::Stat { .. }
        | Op::Mmap { .. }
        | Op::Munmap { .. }
        | Op::Load { .. }
        | Op::Store { .. }
        | Op::Ntstore { .. }
        | Op::Clwb { .. }
        | Op::Clflushopt { .. }
        | Op::Clflush { .. }
        | Op::Sfence
        | Op::Mfence
        | Op::Fault { .. }
        | Op::Sleep { .. }
        | Op::Yield
        | Op::Write { .. }
        | Op::Read { .. }
        | Op::Truncate { .. }
        | Op::Fallocate { .. }
        | Op::Unlink { .. }
        | Op::Fsync { .. }
        | Op::Fdatasync { .. }
        | Op::Msync { .. }
        | Op::Madvise { .. }
        | Op::Reflink { .. }
        | Op::Pin { .. }
        | Op::Unpin { .. }
        | Op::DioRead { .. }
        | Op::Poison { .. } => None,
    }
}

/// The mapping a statement names (for the range check).
fn map_of(op: &Op) -> Option<(&MapOff, u64)> {
    match op {
        Op::Load { at, len }
        | Op::Store { at, len, .. }
        | Op::Ntstore { at, len, .. }
        | Op::Clwb { at, len }
        | Op::Clflushopt { at, len }
        | Op::Clflush { at, len } => Some((at, *len)),
        Op::Fault { at, .. } => Some((at, 1)),
        Op::Pin { at, len, .. } => Some((at, *len)),
        Op::DioRead { into, len, .. } => Some((into, *len)),
        _ => None,
    }
}

fn path_of(op: &Op) -> Option<&str> {
    match op {
        Op::Create { path }
        | Op::Stat { path }
        | Op::Mmap { path, .. }
        | Op::Write { path, .. }
        | Op::Read { path, .. }
        | Op::Truncate { path, .. }
        | Op::Fallocate { path, .. }
        | Op::Fsync { path }
        | Op::Fdatasync { path }
        | Op::Unlink { path }
        | Op::DioRead { path, .. } => Some(path),
        _ => None,
    }
}

/// Everything in `trace` the runner refuses on a machine built from `cfg`, in file order:
/// statements and header items not built yet, and bad input (a file system that does not fit
/// the pmem, files that do not fit the file system, an op on a file that no `file` line
/// declares and no `create` makes, an access past the end of every mapping of that name).
pub fn refusals(trace: &Trace, cfg: &MachineConfig) -> Vec<Refusal> {
    let mut out = Vec::new();
    let mut refuse = |line: u32, col: u32, what: String, why: String| {
        out.push(Refusal {
            line,
            col,
            what,
            why,
        })
    };
    for b in &trace.header.bugs {
        if !bug_runnable(&b.name) {
            refuse(
                b.pos.line,
                b.pos.col,
                format!("bug {}", b.name),
                "this bug mode is not implemented in this build yet (`pmsim bugs` lists them)"
                    .into(),
            );
        }
    }
    let fs = trace.header.fs();
    match Geometry::new(cfg.pmem_size, fs.blocksize()) {
        Err(e) => {
            let (l, c) = match (&trace.header.fs, &trace.header.machine) {
                (Some(f), _) => (f.pos.line, f.pos.col),
                (None, Some(m)) => (m.pos.line, m.pos.col),
                (None, None) => (1, 1),
            };
            refuse(l, c, "fs daxfs".into(), format!("mkfs: {e}"));
        }
        Ok(geo) => {
            // Blocks the header files need (prealloc'd or filled), rounded up to whole 2 MiB
            // extents at worst.
            let free = geo.nblocks - geo.data_start;
            let mut need = 0u64;
            for f in &trace.header.files {
                if f.hole {
                    continue;
                }
                need += f.size.div_ceil(geo.blocksize);
                if need > free {
                    refuse(
                        f.pos.line,
                        f.pos.col,
                        format!("file {}", f.path),
                        format!(
                            "the header files need {need} blocks of {} bytes, but the file \
                             system has {free} (pmem {} bytes)",
                            geo.blocksize, cfg.pmem_size
                        ),
                    );
                    break;
                }
            }
        }
    }
    let mut known: Vec<&str> = trace.header.files.iter().map(|f| f.path.as_str()).collect();
    for s in trace.all_statements() {
        if let Op::Create { path } = &s.op {
            known.push(path);
        }
    }
    // The longest `mmap` of each (process, mapping name), found once: looking it up again for
    // every access made refusing a long trace quadratic in its length.
    let mut map_lens: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for m in trace.all_statements() {
        if let Op::Mmap { len, name, .. } = &m.op {
            let e = map_lens
                .entry((trace.header.process_of(&m.thread), name.as_str()))
                .or_insert(0);
            *e = (*e).max(len.div_ceil(PAGE) * PAGE);
        }
    }
    for s in trace.all_statements() {
        if let Some(why) = not_built(&s.op) {
            refuse(
                s.pos.line,
                s.pos.col,
                format!("{} {}", s.thread, s.op.keyword()),
                why.into(),
            );
            continue;
        }
        // A statement that expects an error (or anything) on a missing file tests that error.
        let expects_failure = matches!(
            s.expect.as_ref().map(|e| &e.expect),
            Some(Expect::Errno(_) | Expect::Any)
        );
        if let Some(path) = path_of(&s.op)
            && !known.contains(&path)
            && !expects_failure
        {
            refuse(
                s.pos.line,
                s.pos.col,
                format!("{} {} {path}", s.thread, s.op.keyword()),
                format!("no such file: no `file {path}` line and no `create {path}` in the trace"),
            );
        }
        if let Some((what, why)) = runner_file::range_refusal(trace, s) {
            refuse(s.pos.line, s.pos.col, what, why);
        }
        if let Some((at, len)) = map_of(&s.op) {
            let proc = trace.header.process_of(&s.thread);
            let map_len = map_lens.get(&(proc, at.map.as_str())).copied().unwrap_or(0);
            if at.off.saturating_add(len) > map_len {
                refuse(
                    s.pos.line,
                    s.pos.col,
                    format!("{} {} {}+{:#x}", s.thread, s.op.keyword(), at.map, at.off),
                    format!(
                        "the range {:#x}..{:#x} passes the end of mapping `{}` ({map_len:#x} bytes)",
                        at.off,
                        at.off.saturating_add(len),
                        at.map
                    ),
                );
            }
        }
    }
    for r in mf::mf_refusals(trace, cfg, &known) {
        refuse(r.line, r.col, r.what, r.why);
    }
    out.sort_by_key(|u| (u.line, u.col));
    out
}

/// The bytes of `pat` for an operation of `len` bytes.
pub fn pattern_bytes(pat: &Pattern, len: u64) -> Vec<u8> {
    let n = len as usize;
    match pat {
        Pattern::Byte(b) => vec![*b; n],
        Pattern::Zero => vec![0; n],
        Pattern::U64(v) => v.to_le_bytes().iter().copied().cycle().take(n).collect(),
        Pattern::Text(s) => s.as_bytes().iter().copied().cycle().take(n).collect(),
        Pattern::Rand(seed) => {
            let mut v = vec![0u8; n];
            ChaCha8Rng::seed_from_u64(*seed).fill_bytes(&mut v);
            v
        }
    }
}

/// What one trace thread did in a run: counted at the statement dispatch point from each
/// statement's outcome, whatever the statement (see [`last_run_stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadStats {
    /// Statements executed (started and returned).
    pub statements: u64,
    /// Accesses and faults whose first page was mapped by a PTE / by a huge PMD.
    pub pte_mapped: u64,
    pub pmd_mapped: u64,
    /// Statements that ended in SIGBUS / SIGSEGV (signals the thread received).
    pub sigbus: u64,
    pub sigsegv: u64,
    /// Statements that returned an errno.
    pub errors: u64,
    /// Statements whose expectation was not met.
    pub unmet: u64,
}

/// Page faults of one thread, by how they were served (see [`count_faults`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    pub pte: u64,
    pub pmd: u64,
    /// A PMD fault that fell back to PTEs.
    pub fallback: u64,
    /// Faults that reached neither fault handler (spurious, or a PMD split and retry).
    pub other: u64,
}

impl FaultStats {
    pub fn total(&self) -> u64 {
        self.pte + self.pmd + self.fallback + self.other
    }
}

thread_local! {
    /// The statistics of the latest run set up on this OS thread: a run lives on one thread
    /// (the executor's state is thread-local too), so parallel searches do not mix them. Never
    /// borrowed across an `.await`.
    static STATS: RefCell<BTreeMap<String, ThreadStats>> = const { RefCell::new(BTreeMap::new()) };
}

/// Per trace thread, what the latest run of a [`TraceRunner`] on this OS thread did (the run
/// must have ended; a run set up later replaces it).
pub fn last_run_stats() -> BTreeMap<String, ThreadStats> {
    STATS.with(|s| s.borrow().clone())
}

/// The dispatch point's count of one statement's outcome.
fn count_statement(thread: &str, got: &Got, met: bool) {
    STATS.with(|s| {
        let mut s = s.borrow_mut();
        let t = s.entry(thread.to_string()).or_default();
        t.statements += 1;
        match got.page {
            Some(PageSize::Pte) => t.pte_mapped += 1,
            Some(PageSize::Pmd) => t.pmd_mapped += 1,
            None => {}
        }
        t.sigbus += got.sigbus as u64;
        t.sigsegv += got.segv as u64;
        t.errors += got.errno.is_some() as u64;
        t.unmet += !met as u64;
    })
}

/// Page faults per task, from the call path each step of a run was taken in (in run order;
/// `sim_core::sim::story::record_run` records them): a fault is a stretch of a task's steps
/// inside `handle_mm_fault` (or a `dax_iomap_fault` entered directly); it was served by a PMD
/// when `dax_iomap_pmd_fault` ran in it, by a PTE when `dax_iomap_pte_fault` did, and fell back
/// when both did.
pub fn count_faults<'a>(
    steps: impl IntoIterator<Item = (u32, &'a [&'static str])>,
) -> BTreeMap<u32, FaultStats> {
    // Per task: (pmd seen, pte seen) of the fault it is in.
    let mut open: BTreeMap<u32, (bool, bool)> = BTreeMap::new();
    let mut out: BTreeMap<u32, FaultStats> = BTreeMap::new();
    let close = |out: &mut BTreeMap<u32, FaultStats>, t: u32, (pmd, pte): (bool, bool)| {
        let f = out.entry(t).or_default();
        match (pmd, pte) {
            (true, true) => f.fallback += 1,
            (true, false) => f.pmd += 1,
            (false, true) => f.pte += 1,
            (false, false) => f.other += 1,
        }
    };
    for (t, path) in steps {
        let has = |f: &str| path.contains(&f);
        if has("handle_mm_fault") || has("dax_iomap_fault") {
            let e = open.entry(t).or_insert((false, false));
            e.0 |= has("dax_iomap_pmd_fault");
            e.1 |= has("dax_iomap_pte_fault");
        } else if let Some(e) = open.remove(&t) {
            close(&mut out, t, e);
        }
    }
    for (t, e) in open {
        close(&mut out, t, e);
    }
    out
}

/// A trace as a model.
pub struct TraceRunner {
    pub(crate) trace: Arc<Trace>,
    pub(crate) cfg: MachineConfig,
    /// The device after the header's mkfs and files (cleanly unmounted): every run starts
    /// from a machine with this pmem and mounts it.
    image: CrashPoint,
    /// Each header file's content (the oracle's start).
    contents: Arc<BTreeMap<String, Arc<FileBytes>>>,
    pub(crate) bugs: BugSet,
    /// The catalogue modes that belong to the file system (not the DAX core), by name.
    pub(crate) fs_bugs: Vec<String>,
    threads: Vec<String>,
    /// Run the sim-mm invariants after every step (`--check-invariants`), not only at the end.
    pub check_every_step: bool,
    /// crashcheck's recorder of statements and durability promises (`None`: not recording).
    pub crash: Option<Arc<crate::crashcheck::Recorder>>,
    /// What the last [`Model::setup`] on each thread built, for [`TraceRunner::inspect`]
    /// (read-only; no run looks at it; an end check may). Per thread, because the worker
    /// threads of a divided search (`explore_scaled`) share one runner: a single slot gave a
    /// thread's end check the world of another thread's run, and each setup dropped the world
    /// of another thread's simulation (its allocations, freed from the wrong thread).
    last_world: Mutex<Vec<(ThreadId, RunWorld)>>,
    /// The memory operations of the setup task (mount, lookups) and the machine after it,
    /// recorded by the first setup that finished and replayed by the later ones
    /// (`Sim::replay_machine_ops`): the setup is a function of the runner alone, so every run
    /// asks the machine the same questions and gets the same answers.
    setup_memo: OnceLock<Arc<MachineMemo>>,
}

/// The kernel state of the run the runner last set up, for viewers (the GUI): read it between
/// steps with the lock-aware peeks (`SpinLock::peek`, `RwSem::peek`,
/// `sim_mm::invariants::peek_snapshot`), as the invariant checks do. Its objects belong to that
/// run's simulation only.
#[derive(Clone)]
pub struct RunWorld {
    pub world: Arc<MmWorld<P>>,
    /// Each process (by its trace name) and its mm.
    pub procs: Vec<(String, Arc<MmStruct<P>>)>,
    /// Each header file: path and inode number (the host of its address space).
    pub files: Vec<(String, u64)>,
}

impl TraceRunner {
    /// The runner for `trace` on a machine built from `cfg`, with the trace's `bug` lines and
    /// `extra_bugs`; refuses what [`refusals`] lists (and unknown or unbuilt extra bugs).
    pub fn new(
        trace: Trace,
        cfg: MachineConfig,
        extra_bugs: &[String],
    ) -> Result<Self, Vec<Refusal>> {
        let mut refused = refusals(&trace, &cfg);
        for b in extra_bugs {
            if !bug_runnable(b) {
                refused.push(Refusal {
                    line: 0,
                    col: 0,
                    what: format!("--bug {b}"),
                    why: "this bug mode is not implemented in this build yet".into(),
                });
            }
        }
        if let Err(e) = Machine::new(cfg.clone()) {
            refused.push(Refusal {
                line: trace.header.machine.as_ref().map_or(1, |m| m.pos.line),
                col: trace.header.machine.as_ref().map_or(1, |m| m.pos.col),
                what: "machine".into(),
                why: e.to_string(),
            });
        }
        if !refused.is_empty() {
            return Err(refused);
        }
        let mut names: Vec<String> = trace.header.bugs.iter().map(|b| b.name.clone()).collect();
        names.extend(extra_bugs.iter().cloned());
        let bugs = BugSet::from_names(&names).map_err(|e| {
            vec![Refusal {
                line: 0,
                col: 0,
                what: "bug".into(),
                why: e,
            }]
        })?;
        let mut threads: Vec<String> = Vec::new();
        for s in &trace.statements {
            if !threads.contains(&s.thread) {
                threads.push(s.thread.clone());
            }
        }
        let fs_bugs = names
            .iter()
            .filter(|n| DaxBug::from_name(n).is_none())
            .cloned()
            .collect();
        // One copy of the trace, shared with the build below and with every run.
        let trace = Arc::new(trace);
        let image = build_image(&trace, &cfg, false).map_err(|r| vec![r])?;
        let contents = trace
            .header
            .files
            .iter()
            .map(|f| {
                let c = match f.fill() {
                    _ if f.hole => FileBytes::zeroed(f.size as usize),
                    Pattern::Byte(b) => FileBytes::filled(*b, f.size as usize),
                    p => FileBytes::from_slice(&pattern_bytes(p, f.size)),
                };
                (f.path.clone(), Arc::new(c))
            })
            .collect();
        Ok(TraceRunner {
            trace,
            cfg,
            image,
            contents: Arc::new(contents),
            bugs,
            fs_bugs,
            threads,
            check_every_step: false,
            crash: None,
            last_world: Mutex::new(Vec::new()),
            setup_memo: OnceLock::new(),
        })
    }

    /// The kernel state of the run last set up by this runner on this thread (`None` before
    /// the thread's first setup and when the setup failed).
    pub fn inspect(&self) -> Option<RunWorld> {
        let me = std::thread::current().id();
        let worlds = self.last_world.lock().unwrap();
        worlds
            .iter()
            .find(|(t, _)| *t == me)
            .map(|(_, w)| w.clone())
    }

    /// Take this thread's last world out of the slots (to drop it outside the lock, on the
    /// thread whose simulation made it).
    fn take_world(&self) -> Option<RunWorld> {
        let me = std::thread::current().id();
        let mut worlds = self.last_world.lock().unwrap();
        let at = worlds.iter().position(|(t, _)| *t == me)?;
        Some(worlds.swap_remove(at).1)
    }

    /// The number of memory operations of the setup recorded for replay (`None` until a setup
    /// has finished).
    pub fn setup_memo_ops(&self) -> Option<usize> {
        self.setup_memo.get().map(|m| m.len())
    }
}

/// A mapping a process gave a name.
#[derive(Clone)]
pub(crate) struct MapInfo {
    pub(crate) addr: u64,
    pub(crate) len: u64,
    /// Byte offset into the file.
    pub(crate) file_off: u64,
    pub(crate) shared: bool,
    pub(crate) ino: u64,
    file: DaxfsFile<P>,
}

/// User-space bookkeeping and the checker's state (see the module header).
#[derive(Default)]
pub(crate) struct User {
    /// Per process: mapping name -> mapping.
    pub(crate) maps: BTreeMap<String, BTreeMap<String, MapInfo>>,
    /// Per inode: the bytes the execution implies.
    /// (Shared with the runner's header contents, and page by page after a run changes it.)
    pub(crate) files: BTreeMap<u64, Arc<FileBytes>>,
    /// Anonymous (CoW) pages' contents: DRAM, outside the machine model.
    pub(crate) anon: BTreeMap<u64, Vec<u8>>,
    /// Reads in flight, by a number of their own (the read oracle of `runner_file`).
    pub(crate) reads: BTreeMap<u64, ReadInFlight>,
    pub(crate) next_read: u64,
}

/// A read in flight: its inode and every content the file had since the read began.
pub(crate) type ReadInFlight = (u64, Vec<Arc<FileBytes>>);

/// Inode `ino`'s bytes `f` are about to change: every read of the file in flight keeps them.
fn hold_for_reads(reads: &mut BTreeMap<u64, ReadInFlight>, ino: u64, f: &Arc<FileBytes>) {
    for (_, held) in reads.values_mut().filter(|(i, _)| *i == ino) {
        held.push(f.clone());
    }
}

impl User {
    /// Inode `ino`'s bytes, to change them; the content before the change is kept for every
    /// read of the file in flight.
    pub(crate) fn file_mut(&mut self, ino: u64) -> Option<&mut FileBytes> {
        let f = self.files.get_mut(&ino)?;
        hold_for_reads(&mut self.reads, ino, f);
        Some(Arc::make_mut(f))
    }

    /// Make inode `ino`'s bytes `new` (shared, not copied), keeping the content before for
    /// every read of the file in flight (as [`User::file_mut`]).
    pub(crate) fn file_set(&mut self, ino: u64, new: Arc<FileBytes>) {
        let f = self.files.entry(ino).or_default();
        hold_for_reads(&mut self.reads, ino, f);
        *f = new;
    }

    /// A read of inode `ino` begins: its number for [`User::end_read`].
    pub(crate) fn begin_read(&mut self, ino: u64) -> u64 {
        let id = self.next_read;
        self.next_read += 1;
        let held = self.files.get(&ino).cloned().into_iter().collect();
        self.reads.insert(id, (ino, held));
        id
    }

    pub(crate) fn end_read(&mut self, id: u64) {
        self.reads.remove(&id);
    }
}

pub(crate) struct Ctx {
    pub(crate) fs: Arc<Daxfs<P>>,
    pub(crate) dax: Dax<P>,
    pub(crate) mms: BTreeMap<String, Arc<MmStruct<P>>>,
    pub(crate) npages: u64,
    pub(crate) user: Mutex<User>,
    /// Where a thread waits for its process to map a name another thread maps.
    pub(crate) names_wq: WaitQueue<P>,
    /// crashcheck's recorder (see [`TraceRunner::crash`]).
    pub(crate) crash: Option<Arc<crate::crashcheck::Recorder>>,
    /// Header files: path and inode number (for [`RunWorld`]).
    pub(crate) file_inos: Vec<(String, u64)>,
    /// Pins and the signal switch (`runner_mf.rs`).
    pub(crate) mf: mf::MfState,
}

/// What a statement came to.
#[derive(Default, Debug)]
pub(crate) struct Got {
    errno: Option<String>,
    sigbus: bool,
    /// The codes of the machine-check SIGBUSes taken (`runner_mf.rs`).
    sigbus_codes: Vec<sim_core::trace::SigbusCode>,
    /// SIGKILL (memory failure could not find where the process maps a failed page).
    killed: bool,
    /// SIGSEGV (an access outside every VMA or a write to a read-only one).
    segv: bool,
    bytes: Option<Vec<u8>>,
    page: Option<PageSize>,
    size: Option<u64>,
    /// Whether the statement ran (a mapping that a thread of the process has not made yet).
    unmapped: Option<String>,
    /// The inode ctime an fsync made durable (crashcheck's promise).
    pub(crate) synced_ctime: Option<u64>,
}

impl Got {
    pub(crate) fn describe(&self) -> String {
        if let Some(m) = &self.unmapped {
            return m.clone();
        }
        if let Some(e) = &self.errno {
            return format!("err({e})");
        }
        if self.killed {
            return "SIGKILL".into();
        }
        if self.sigbus {
            return match self.sigbus_codes.first() {
                Some(c) => format!("sigbus({c})"),
                None => "sigbus".into(),
            };
        }
        if self.segv {
            return "SIGSEGV".into();
        }
        let mut parts = vec!["ok".to_string()];
        if let Some(b) = &self.bytes {
            parts.push(describe_bytes(b));
        }
        if let Some(p) = self.page {
            parts.push(p.to_string());
        }
        if let Some(s) = self.size {
            parts.push(format!("size={s}"));
        }
        parts.join(", ")
    }

    pub(crate) fn failed(&self) -> bool {
        self.errno.is_some() || self.sigbus || self.segv || self.killed || self.unmapped.is_some()
    }
}

fn describe_bytes(b: &[u8]) -> String {
    if b.is_empty() {
        return "no bytes".into();
    }
    if b.iter().all(|&x| x == b[0]) {
        return format!("{} bytes of {:#04x}", b.len(), b[0]);
    }
    let head: Vec<String> = b.iter().take(16).map(|x| format!("{x:02x}")).collect();
    format!(
        "{} bytes {}{}",
        b.len(),
        head.join(" "),
        if b.len() > 16 { " .." } else { "" }
    )
}

/// Does `got` meet `expect` (`None`: plain success)?
pub(crate) fn meets(expect: Option<&Expect>, got: &Got, len: u64) -> bool {
    match expect {
        None | Some(Expect::Ok) => !got.failed(),
        Some(Expect::Any) => got.unmapped.is_none(),
        Some(Expect::Errno(e)) => got.errno.as_deref() == Some(e.as_str()),
        // A machine-check SIGBUS carries its code; the SIGBUS of a fault past EOF has none.
        Some(Expect::Sigbus(code)) => {
            got.sigbus && !got.killed && code.is_none_or(|c| got.sigbus_codes.contains(&c))
        }
        Some(Expect::Bytes(alts)) => {
            !got.failed()
                && got
                    .bytes
                    .as_ref()
                    .is_some_and(|b| alts.iter().any(|a| pattern_bytes(a, len) == *b))
        }
        Some(Expect::Page(s)) => !got.failed() && got.page == Some(*s),
        Some(Expect::Size(v)) => !got.failed() && got.size.is_some_and(|s| v.contains(&s)),
        Some(Expect::Alt(alts)) => alts.iter().any(|a| meets(Some(a), got, len)),
    }
}

pub(crate) async fn fail(p: &P, name: &str, message: String) {
    p.report(Assertion {
        fatal: true,
        name: name.into(),
        message,
    })
    .await;
}

/// Where a translated page lives.
enum Phys {
    /// Device byte address.
    Device(u64),
    /// The 4 KiB or the huge zero page, or a 4.x hole page (bug mode `shadow-entries`).
    Zero,
    /// An anonymous DRAM page (a private CoW copy).
    Anon(u64),
}

enum Kind<'a> {
    Load,
    Store(&'a [u8]),
    NtStore(&'a [u8]),
    Clwb,
    Clflushopt,
    Clflush,
}

impl Ctx {
    fn phys(&self, pfn: u64, va: u64) -> Phys {
        if (PMEM_BASE_PFN..PMEM_BASE_PFN + self.npages).contains(&pfn) {
            Phys::Device((pfn - PMEM_BASE_PFN) * PAGE + va % PAGE)
        } else if is_zero_pfn(pfn) || is_huge_zero_pfn(pfn) || is_pagecache_pfn(pfn) {
            // (A page-cache page of a DAX mapping is a 4.x hole page: zeroed, read-only.)
            Phys::Zero
        } else {
            Phys::Anon(pfn)
        }
    }

    fn try_map(&self, proc: &str, name: &str) -> Option<MapInfo> {
        let u = self.user.lock().unwrap();
        u.maps.get(proc).and_then(|m| m.get(name)).cloned()
    }

    /// The mapping `name` of `proc`. A name that another thread of the process has not mapped
    /// yet is waited for (queued before the recheck, woken by every `mmap`); one that is never
    /// mapped leaves the thread asleep, which the engine reports as a lost wakeup on
    /// `trace_mapping_names`. Costs no step when the name is mapped.
    async fn map(&self, p: &P, proc: &str, name: &str) -> Result<MapInfo, String> {
        if let Some(m) = self.try_map(proc, name) {
            return Ok(m);
        }
        loop {
            let w = self
                .names_wq
                .prepare_to_wait(p, WaitKey(0, 0), false, wake_key_eq)
                .await;
            if let Some(m) = self.try_map(proc, name) {
                self.names_wq.finish_wait(p, w).await;
                return Ok(m);
            }
            self.names_wq.schedule(p, w).await;
            self.names_wq.finish_wait(p, w).await;
        }
    }

    /// The loads, stores and flushes of `M+OFF LEN`, page by page.
    async fn access(
        &self,
        p: &P,
        s: &Statement,
        proc: &str,
        at: &MapOff,
        len: u64,
        kind: Kind<'_>,
    ) -> Got {
        let (thread, line) = (s.thread.as_str(), s.pos.line);
        let mut got = Got::default();
        let m = match self.map(p, proc, &at.map).await {
            Ok(m) => m,
            Err(e) => {
                got.unmapped = Some(e);
                return got;
            }
        };
        let mm = &self.mms[proc];
        let write = matches!(kind, Kind::Store(_) | Kind::NtStore(_));
        let mut bytes = Vec::new();
        let mut off = at.off;
        let end = at.off + len;
        // A machine check that signalled nobody restarts the access once (`consumed_poison`).
        let mut restarted = false;
        while off < end {
            let va = m.addr + off;
            let n = (end - off).min(PAGE - va % PAGE);
            let (pfn, huge) = match dax_user_access(&self.dax, p, mm, va, write, &m.file).await {
                Access::Mapped { pfn, huge } => (pfn, huge),
                Access::Failed(r) => {
                    Self::access_failed(r, &mut got);
                    return got;
                }
            };
            // The access and its translation are one event for the CPU: an unmap waits for
            // the TLB shootdown, so no access uses a translation the unmap already removed.
            // The page-table lock, held across the access, gives that; a translation that
            // changed since the walk is retried.
            let tlb = match self.tlb_hold(p, mm, va, pfn).await {
                Some(g) => g,
                None => continue,
            };
            got.page
                .get_or_insert(if huge { PageSize::Pmd } else { PageSize::Pte });
            let phys = self.phys(pfn, va);
            let fpos = m.file_off + off;
            let src = (off - at.off) as usize..(off - at.off + n) as usize;
            match (&kind, phys) {
                (Kind::Load, Phys::Device(a)) => {
                    let mut b = vec![0u8; n as usize];
                    if p.pmem_load(a, &mut b).await.is_err() {
                        // memory_failure sleeps (mf_mutex): the machine check is taken after
                        // the access, outside the page-table lock.
                        tlb.unlock().await;
                        if self.consumed_poison(p, a, restarted, &mut got).await {
                            return got;
                        }
                        restarted = true;
                        continue;
                    }
                    self.check_data(p, thread, line, &m, fpos, &b).await;
                    bytes.extend_from_slice(&b);
                }
                (Kind::Load, Phys::Zero) => {
                    let b = vec![0u8; n as usize];
                    self.check_data(p, thread, line, &m, fpos, &b).await;
                    bytes.extend_from_slice(&b);
                }
                (Kind::Load, Phys::Anon(pfn)) => {
                    let b = self.anon_page(pfn, &m, fpos);
                    let o = (va % PAGE) as usize;
                    bytes.extend_from_slice(&b[o..o + n as usize]);
                }
                (Kind::Store(d) | Kind::NtStore(d), Phys::Device(a)) => {
                    if !m.shared {
                        fail(
                            p,
                            "private-store-reached-file",
                            format!(
                                "{thread} (line {line}): a store through private mapping `{}` \
                                 reached the file's block at device address {a:#x}",
                                at.map
                            ),
                        )
                        .await;
                    }
                    let r = match kind {
                        Kind::Store(_) => p.pmem_store(a, &d[src]).await,
                        _ => p.pmem_ntstore(a, &d[src.clone()]).await,
                    };
                    if r.is_err() {
                        tlb.unlock().await;
                        if self.consumed_poison(p, a, restarted, &mut got).await {
                            return got;
                        }
                        restarted = true;
                        continue;
                    }
                    let mut u = self.user.lock().unwrap();
                    if let Some(f) = u.file_mut(m.ino) {
                        let e = (fpos + n).min(f.len() as u64);
                        if fpos < e {
                            f.write(
                                fpos as usize,
                                &d[(off - at.off) as usize..][..(e - fpos) as usize],
                            );
                        }
                    }
                }
                (Kind::Store(d) | Kind::NtStore(d), Phys::Anon(pfn)) => {
                    let mut page = self.anon_page(pfn, &m, fpos);
                    let o = (va % PAGE) as usize;
                    page[o..o + n as usize].copy_from_slice(&d[src]);
                    self.user.lock().unwrap().anon.insert(pfn, page);
                }
                (Kind::Store(_) | Kind::NtStore(_), Phys::Zero) => {
                    fail(
                        p,
                        "store-to-zero-page",
                        format!(
                            "{thread} (line {line}): a store through `{}` at {:#x} was \
                             translated to the shared zero page",
                            at.map, off
                        ),
                    )
                    .await;
                }
                (_, Phys::Device(a)) => {
                    // Flushes: every line of the piece.
                    let mut l = a - a % LINE;
                    while l < a + n {
                        let r = match kind {
                            Kind::Clwb => p.clwb(l).await,
                            Kind::Clflushopt => p.clflushopt(l).await,
                            _ => p.clflush(l).await,
                        };
                        if r.is_err() {
                            got.sigbus = true;
                            return got;
                        }
                        l += LINE;
                    }
                }
                // Flushing DRAM lines changes nothing the model keeps.
                (_, Phys::Zero | Phys::Anon(_)) => {}
            }
            off += n;
        }
        if matches!(kind, Kind::Load) {
            got.bytes = Some(bytes);
        }
        got
    }

    /// An anonymous page's content; a fresh one is the CoW copy of the file page at `fpos`.
    fn anon_page(&self, pfn: u64, _m: &MapInfo, fpos: u64) -> Vec<u8> {
        let mut u = self.user.lock().unwrap();
        let ino = _m.ino;
        let start = fpos - fpos % PAGE;
        let init = u.files.get(&ino).map(|f| {
            let mut page = vec![0u8; PAGE as usize];
            let s = (start as usize).min(f.len());
            let e = (start as usize + PAGE as usize).min(f.len());
            page[..e - s].copy_from_slice(&f.range(s, e));
            page
        });
        u.anon
            .entry(pfn)
            .or_insert_with(|| init.unwrap_or_else(|| vec![0u8; PAGE as usize]))
            .clone()
    }

    /// The data oracle: `b` was read at file position `fpos` of `m`'s file.
    async fn check_data(&self, p: &P, thread: &str, line: u32, m: &MapInfo, fpos: u64, b: &[u8]) {
        let mismatch = {
            let u = self.user.lock().unwrap();
            u.files.get(&m.ino).and_then(|f| {
                let s = (fpos as usize).min(f.len());
                let e = (fpos as usize + b.len()).min(f.len());
                let want = f.range(s, e);
                (*want != b[..e - s]).then(|| {
                    let i = want.iter().zip(b).position(|(x, y)| x != y).unwrap_or(0);
                    format!(
                        "{thread} (line {line}): a load at file offset {:#x} returned {:#04x}, \
                         but the execution implies {:#04x} there ({} of {} bytes differ)",
                        fpos + i as u64,
                        b[i],
                        want[i],
                        want.iter().zip(b).filter(|(x, y)| x != y).count(),
                        e - s
                    )
                })
            })
        };
        if let Some(msg) = mismatch {
            fail(p, "data", msg).await;
        }
    }

    /// `fault M+OFF read|write [pte|pmd]`.
    async fn fault(
        &self,
        p: &P,
        proc: &str,
        at: &MapOff,
        access: TAccess,
        size: Option<PageSize>,
    ) -> Got {
        let mut got = Got::default();
        let m = match self.map(p, proc, &at.map).await {
            Ok(m) => m,
            Err(e) => {
                got.unmapped = Some(e);
                return got;
            }
        };
        let mm = &self.mms[proc];
        let write = access == TAccess::Write;
        let va = m.addr + at.off;
        if size == Some(PageSize::Pte) && (m.shared || !write) {
            // A PTE-sized request where the PMD is empty: the PTE path handle_mm_fault takes
            // after a PMD fallback (a shared write or a read needs no CoW page).
            let vmas = mm.mmap_lock.read(p).await;
            let mut ret = VmFault(0);
            if let Some(vma) = vmas.vma_lookup(va)
                && (!write || vma.b.writable())
                && mm.pmdp_get_lockless(p, va).await == PmdVal::None
            {
                let flags = FAULT_FLAG_USER | if write { FAULT_FLAG_WRITE } else { 0 };
                let vmf = Vmf::new(mm, vma, va, flags);
                ret = dax_fs_fault(&self.dax, p, &vmf, 0, &m.file).await;
            }
            vmas.release(self.dax.release_steps).await;
            if ret.is_error() {
                Self::access_failed(ret, &mut got);
                return got;
            }
        }
        match dax_user_access(&self.dax, p, mm, va, write, &m.file).await {
            Access::Mapped { huge, .. } => {
                got.page = Some(if huge { PageSize::Pmd } else { PageSize::Pte })
            }
            Access::Failed(r) => Self::access_failed(r, &mut got),
        }
        got
    }

    pub(crate) async fn execute(&self, p: &P, proc: &str, s: &Statement) -> Got {
        if let Some(got) = self.execute_mf(p, proc, s).await {
            return got;
        }
        let mut got = Got::default();
        let errno = |e: FsError| Some(format!("{e:?}"));
        match &s.op {
            Op::Sleep { ns } => p.sleep_ns(*ns).await,
            Op::Yield => p.yield_point("trace:yield").await,
            Op::Create { path } => match self.fs.create(p, path).await {
                Ok(inode) => {
                    self.user
                        .lock()
                        .unwrap()
                        .files
                        .insert(inode.ino, Arc::default());
                }
                Err(e) => got.errno = errno(e),
            },
            Op::Stat { path } => match self.fs.lookup(p, path).await {
                Some(inode) => {
                    let g = self.fs.ilock(p, &inode).await;
                    got.size = Some(g.disk.size);
                    drop(g);
                }
                None => got.errno = errno(FsError::ENOENT),
            },
            Op::Mmap {
                path,
                off,
                len,
                sharing,
                sync,
                ro,
                nohuge,
                name,
            } => {
                // An open reference for the call (an unlink cannot evict the inode meanwhile).
                let Some(inode) = self.fs.open(p, path).await else {
                    got.errno = errno(FsError::ENOENT);
                    return got;
                };
                if off % PAGE != 0 {
                    got.errno = Some("EINVAL".into());
                    if let Some(e) = self.release(p, &inode).await {
                        got.errno = Some(e);
                    }
                    return got;
                }
                let flags = MmapFlags {
                    shared: *sharing == Sharing::Shared,
                    sync: *sync,
                    write: !*ro,
                    nohuge: *nohuge,
                };
                let mm = &self.mms[proc];
                match do_mmap(p, mm, &inode.mapping, off / PAGE, *len, flags).await {
                    Ok(addr) => {
                        let info = MapInfo {
                            addr,
                            len: len.div_ceil(PAGE) * PAGE,
                            file_off: *off,
                            shared: flags.shared,
                            ino: inode.ino,
                            file: DaxfsFile::new(self.fs.clone(), inode.clone()),
                        };
                        let old = self
                            .user
                            .lock()
                            .unwrap()
                            .maps
                            .entry(proc.to_string())
                            .or_default()
                            .insert(name.clone(), info);
                        // A name mapped again: the old mapping stays (as a leaked address).
                        drop(old);
                        self.names_wq.wake_up(p, WaitKey(0, 0), WakeMode::All).await;
                    }
                    Err(e) => got.errno = Some(format!("{e:?}")),
                }
                if let Some(e) = self.release(p, &inode).await {
                    got.errno.get_or_insert(e);
                }
            }
            Op::Munmap { map } => {
                let m = match self.map(p, proc, map).await {
                    Ok(m) => m,
                    Err(e) => {
                        got.unmapped = Some(e);
                        return got;
                    }
                };
                match do_munmap(p, &self.fs.world, &self.mms[proc], m.addr, m.len).await {
                    Ok(()) => {
                        {
                            let mut u = self.user.lock().unwrap();
                            u.maps.get_mut(proc).map(|ms| ms.remove(map));
                        }
                        // The last mapping of an unlinked file: its blocks go now.
                        if let Some(e) = self.after_munmap(p, &m).await {
                            got.errno = Some(e);
                        }
                    }
                    Err(e) => got.errno = Some(format!("{e:?}")),
                }
            }
            Op::Load { at, len } => {
                return self.access(p, s, proc, at, *len, Kind::Load).await;
            }
            Op::Store { at, len, pattern } => {
                let d = pattern_bytes(pattern, *len);
                return self.access(p, s, proc, at, *len, Kind::Store(&d)).await;
            }
            Op::Ntstore { at, len, pattern } => {
                let d = pattern_bytes(pattern, *len);
                return self.access(p, s, proc, at, *len, Kind::NtStore(&d)).await;
            }
            Op::Clwb { at, len } => {
                return self.access(p, s, proc, at, *len, Kind::Clwb).await;
            }
            Op::Clflushopt { at, len } => {
                return self.access(p, s, proc, at, *len, Kind::Clflushopt).await;
            }
            Op::Clflush { at, len } => {
                return self.access(p, s, proc, at, *len, Kind::Clflush).await;
            }
            Op::Sfence => {
                let _ = p.sfence().await;
            }
            Op::Mfence => {
                let _ = p.mfence().await;
            }
            Op::Fault { at, access, size } => {
                return self.fault(p, proc, at, *access, *size).await;
            }
            Op::Write { .. }
            | Op::Read { .. }
            | Op::Truncate { .. }
            | Op::Fallocate { .. }
            | Op::Fsync { .. }
            | Op::Fdatasync { .. }
            | Op::Unlink { .. }
            | Op::Msync { .. }
            | Op::Madvise { .. } => return self.file_op(p, proc, s).await,
            other => {
                // `refusals` rejected the trace before it ran.
                unreachable!("{} reached the runner", other.keyword())
            }
        }
        got
    }

    /// After the threads (in the exit task): a log force, daxfs's in-core/media cross-check and
    /// fsck (not on a file system that shut down).
    async fn end_checks(&self, p: &P) {
        // A file system shut down by a metadata failure writes nothing more (XFS refuses the
        // log force and unmount's writes); fsck would only name the poisoned metadata.
        if self.mf.poison && self.fs.failure.is_shutdown(p).await {
            return;
        }
        if let Err(e) = self.fs.log_force(p).await {
            fail(p, "fsck", format!("the final log force failed: {e}")).await;
            return;
        }
        let (verified, r) = self.fs.verify_incore_and_fsck(p).await;
        match verified {
            Ok(v) if v.is_empty() => {}
            Ok(v) => {
                fail(
                    p,
                    "fsck",
                    format!("in-core metadata differs from the media: {v:?}"),
                )
                .await
            }
            Err(e) => fail(p, "fsck", format!("reading the metadata failed: {e}")).await,
        }
        if !r.is_clean() {
            fail(p, "fsck", format!("fsck at the end of the run: {r}")).await;
        }
    }
}

/// Setup's result: the context, or why the setup failed.
type Slot = Arc<Mutex<Option<Result<Arc<Ctx>, String>>>>;

async fn write_fill(
    p: &P,
    fs: &Daxfs<P>,
    f: &FileDecl,
    ino: &crate::Inode<P>,
) -> Result<(), String> {
    let bytes = pattern_bytes(f.fill(), f.size);
    if bytes.iter().all(|&b| b == 0) {
        return Ok(());
    }
    let extents = ino.ilock.read(p).await.disk.extents.clone();
    let bs = fs.geo.blocksize;
    for (&fb, e) in &extents {
        let start = fb * bs;
        if start >= f.size {
            continue;
        }
        let end = ((fb + e.len) * bs).min(f.size);
        let dev = fs.geo.addr(e.dev);
        for chunk in (start..end).step_by(64 << 10) {
            let ce = (chunk + (64 << 10)).min(end);
            p.pmem_ntstore(dev + (chunk - start), &bytes[chunk as usize..ce as usize])
                .await
                .map_err(|e| format!("file {}: fill: {e}", f.path))?;
        }
    }
    p.sfence()
        .await
        .map_err(|e| format!("file {}: {e}", f.path))
}

/// mkfs and the header files, then a clean unmount.
async fn format_device(p: &P, trace: &Trace, pmem: u64) -> Result<(), (u32, u32, String)> {
    let fs_pos = trace
        .header
        .fs
        .as_ref()
        .map_or((1, 1), |f| (f.pos.line, f.pos.col));
    let bs = trace.header.fs().blocksize();
    mkfs(p, pmem, bs)
        .await
        .map_err(|e| (fs_pos.0, fs_pos.1, format!("mkfs: {e}")))?;
    let world = Arc::new(MmWorld::new(
        p,
        PMEM_BASE_PFN,
        pmem / PAGE,
        MmConfig::default(),
    ));
    let fs = Daxfs::mount(p, pmem, world)
        .await
        .map_err(|e| (fs_pos.0, fs_pos.1, format!("mount: {e}")))?;
    for f in &trace.header.files {
        let at = |e: String| (f.pos.line, f.pos.col, format!("file {}: {e}", f.path));
        let fe = |e: FsError| at(e.to_string());
        let inode = fs.create(p, &f.path).await.map_err(fe)?;
        if f.hole {
            fs.set_size(p, &inode, f.size).await.map_err(fe)?;
        } else if f.size > 0 {
            fs.prealloc(p, &inode, 0, f.size).await.map_err(fe)?;
            fs.set_size(p, &inode, f.size).await.map_err(fe)?;
            write_fill(p, &fs, f, &inode).await.map_err(at)?;
        }
    }
    fs.unmount(p)
        .await
        .map_err(|e| (fs_pos.0, fs_pos.1, format!("unmount: {e}")))
}

/// Run [`format_device`] on a fresh machine; the crash point after it (all durable).
/// `record_persistency`: whether the machine keeps its stores for crash images. Runs start
/// from the durable image only, and the clean unmount leaves every store durable, so the
/// image is the same either way (`the_device_image_needs_no_persistency_records`); without
/// the records the build of a large prefilled file takes less time and memory.
fn build_image(
    trace: &Arc<Trace>,
    cfg: &MachineConfig,
    record_persistency: bool,
) -> Result<CrashPoint, Refusal> {
    let mut machine = Machine::new(cfg.clone()).map_err(|e| Refusal {
        line: trace.header.machine.as_ref().map_or(1, |m| m.pos.line),
        col: trace.header.machine.as_ref().map_or(1, |m| m.pos.col),
        what: "machine".into(),
        why: e,
    })?;
    machine.set_record_persistency(record_persistency);
    let pmem = cfg.pmem_size;
    let mut sim = Sim::new(SimConfig {
        step_limit: u64::MAX,
        ..SimConfig::default()
    });
    sim.set_machine(machine);
    let p = sim.platform();
    let out = Arc::new(Mutex::new(None));
    let (o, t) = (out.clone(), trace.clone());
    sim.spawn("format", move || async move {
        let r = format_device(&p, &t, pmem).await;
        *o.lock().unwrap() = Some(r);
    });
    let end = sim.run(|_, en| en[0]);
    let r = out.lock().unwrap().take();
    match r {
        Some(Ok(())) => Ok(sim
            .with_machine(|m| m.crash_point())
            .expect("the machine was installed")),
        Some(Err((line, col, why))) => Err(Refusal {
            line,
            col,
            what: "header".into(),
            why,
        }),
        None => Err(Refusal {
            line: 1,
            col: 1,
            what: "header".into(),
            why: format!("building the file system did not finish: {end:?}"),
        }),
    }
}

/// Mount the formatted device, find the header files, make the processes and the DAX core.
#[allow(clippy::too_many_arguments)]
async fn setup_world(
    p: &P,
    trace: &Trace,
    pmem: u64,
    bugs: BugSet,
    fs_bugs: &[String],
    threads: &[String],
    contents: &BTreeMap<String, Arc<FileBytes>>,
    crash: Option<Arc<crate::crashcheck::Recorder>>,
) -> Result<Ctx, String> {
    let npages = pmem / PAGE;
    // Every trace process asks for early kill (runner_mf.rs).
    let mm_config = MmConfig {
        memory_failure_early_kill: true,
    };
    let world = Arc::new(MmWorld::new(p, PMEM_BASE_PFN, npages, mm_config));
    let fs = Daxfs::mount(p, pmem, world.clone()).await?;
    crate::crashcheck::apply_fs_bugs(p, &fs, fs_bugs).await;
    fs.failure.set_reflink_page_mapping(
        trace
            .header
            .bugs
            .iter()
            .any(|b| b.name == "reflink-page-mapping"),
    );
    let mut files = BTreeMap::new();
    let mut file_inos = Vec::new();
    for (path, c) in contents {
        let inode = fs
            .lookup(p, path)
            .await
            .ok_or_else(|| format!("{path} is missing after mount"))?;
        files.insert(inode.ino, c.clone());
        file_inos.push((path.clone(), inode.ino));
    }
    // Processes: each `proc`, then each thread in none; thread i is task i + 1 (the setup
    // task is task 0).
    let task = |t: &str| TaskId(1 + threads.iter().position(|x| x == t).unwrap() as u32);
    let mut mms = BTreeMap::new();
    let mut procs: Vec<(String, Vec<TaskId>)> = Vec::new();
    for pr in &trace.header.procs {
        let ts = pr
            .threads
            .iter()
            .filter(|t| threads.contains(t))
            .map(|t| task(t))
            .collect();
        procs.push((pr.name.clone(), ts));
    }
    for t in threads {
        if trace.header.proc_of(t).is_none() {
            procs.push((t.clone(), vec![task(t)]));
        }
    }
    for (name, ts) in procs {
        let (_, mm) = create_process(p, &world, &name, &ts).await;
        mms.insert(name, mm);
    }
    let dax = Dax::new(p, world, bugs);
    Ok(Ctx {
        fs,
        dax,
        mms,
        npages,
        names_wq: WaitQueue::new(p, "trace_mapping_names"),
        file_inos,
        mf: mf::MfState::new(trace),
        user: Mutex::new(User {
            files,
            ..User::default()
        }),
        crash,
    })
}

impl Model for TraceRunner {
    fn setup(&self, sim: &mut Sim) {
        let memo = self.setup_memo.get().cloned();
        match memo {
            Some(m) => sim.replay_machine_ops(m),
            None => {
                let empty = CrashImage {
                    delta: vec![],
                    lines: vec![],
                    hash: 0,
                };
                let machine = self
                    .image
                    .recover(&empty, &self.cfg)
                    .expect("the image has the configured size");
                sim.set_machine(machine);
                sim.record_machine_ops();
            }
        }
        let pmem = self.cfg.pmem_size;
        STATS.with(|s| s.borrow_mut().clear());
        let p = sim.platform();
        let slot: Slot = Arc::new(Mutex::new(None));
        {
            let (s, trace, bugs, threads, contents) = (
                slot.clone(),
                self.trace.clone(),
                self.bugs,
                self.threads.clone(),
                self.contents.clone(),
            );
            let (fs_bugs, crash) = (self.fs_bugs.clone(), self.crash.clone());
            sim.spawn("setup", move || async move {
                let r =
                    setup_world(&p, &trace, pmem, bugs, &fs_bugs, &threads, &contents, crash).await;
                *s.lock().unwrap() = Some(r.map(Arc::new));
            });
        }
        sim.run(|_, en| en[0]);
        let recorded = sim.finish_machine_ops();
        drop(self.take_world());
        let ctx = match slot.lock().unwrap().take() {
            Some(Ok(ctx)) => {
                if let Some(r) = recorded {
                    let _ = self.setup_memo.set(Arc::new(r));
                }
                ctx
            }
            other => {
                let msg = match other {
                    Some(Err(e)) => e,
                    _ => "the setup task did not finish".into(),
                };
                sim.spawn("setup-failed", move || async move {
                    fail(
                        &p,
                        "trace-setup",
                        format!("building the trace's file system: {msg}"),
                    )
                    .await;
                });
                return;
            }
        };
        if let Some(r) = &ctx.crash {
            r.attach(&p, &ctx);
        }
        let world = RunWorld {
            world: ctx.fs.world.clone(),
            procs: ctx
                .mms
                .iter()
                .map(|(n, mm)| (n.clone(), mm.clone()))
                .collect(),
            files: ctx.file_inos.clone(),
        };
        self.last_world
            .lock()
            .unwrap()
            .push((std::thread::current().id(), world));
        install_checks(
            sim,
            &ctx.fs.world,
            CheckPolicy {
                every_step: self.check_every_step,
                at_end: true,
            },
        );
        let bugs = self.bugs;
        let mut threads = Vec::new();
        for name in &self.threads {
            let (trace, ctx, name2) = (self.trace.clone(), ctx.clone(), name.clone());
            threads.push(sim.spawn_joinable(name, move || async move {
                let proc = trace.header.process_of(&name2).to_string();
                // Announce the first line before doing anything, so that trace-order starts
                // with the thread whose first statement comes first in the file.
                if let Some(first) = trace.statements.iter().find(|s| s.thread == name2) {
                    p.set_line(first.pos.line);
                    p.yield_point("trace:start").await;
                }
                for s in trace.statements.iter().filter(|s| s.thread == name2) {
                    p.set_line(s.pos.line);
                    if let Some(r) = &ctx.crash {
                        r.start(&ctx, &proc, s);
                    }
                    let mut got = ctx.execute(&p, &proc, s).await;
                    ctx.take_signals(&p, &mut got).await;
                    // The one point where durability promises are recorded: the statement has
                    // completed, keyed on its kind and its result.
                    if let Some(r) = &ctx.crash {
                        r.done(&ctx, &proc, s, &got);
                    }
                    let expect = s.expect.as_ref().map(|e| &e.expect);
                    let len = match &s.op {
                        Op::Load { len, .. } | Op::Read { len, .. } => *len,
                        _ => 0,
                    };
                    let met = meets(expect, &got, len);
                    count_statement(&name2, &got, met);
                    if !met {
                        fail(
                            &p,
                            "trace-expectation",
                            format!(
                                "thread {name2}, line {}: `{}` expected {}, got {}",
                                s.pos.line,
                                s,
                                expect.map_or("success".to_string(), |e| e.to_string()),
                                got.describe()
                            ),
                        )
                        .await;
                    }
                    // A SIGBUS that was expected lets the thread go on (its handler returned);
                    // an unexpected one was reported above and ended the run.
                    if got.killed {
                        break;
                    }
                }
            }));
        }
        // The end of the run is a task of its own, spawned after the threads (which keep task
        // ids 1..=n): it joins them all in one step, enabled once every thread has finished, so
        // process exit, the end checks and the after-crash section come after every step of
        // every thread. A thread's end races only with the join, which cannot come first, so no
        // two threads' ends race; and the join is no step of its own between the threads' steps
        // (joined one by one, each join could move among them, and DPOR took those steps as
        // the first of the orders it owed).
        let trace = self.trace.clone();
        sim.spawn(EXIT_TASK, move || async move {
            join_all(&p, &threads).await;
            if let Some(e) = ctx.exit_processes(&p).await {
                fail(&p, "process-exit", e).await;
            }
            ctx.end_checks(&p).await;
            // crashcheck checks the section on every crash image instead.
            if trace.after_crash.is_some() && ctx.crash.is_none() {
                crate::crashcheck::after::clean_shutdown_and_after_crash(
                    &p, &ctx, &trace, pmem, bugs,
                )
                .await;
            }
        });
    }
}

#[cfg(test)]
mod stats_tests {
    use super::*;

    #[test]
    fn faults_are_told_apart_by_the_fault_handlers_they_ran() {
        let pte: &[&'static str] = &["exc_page_fault", "handle_mm_fault", "dax_iomap_pte_fault"];
        let pmd: &[&'static str] = &["exc_page_fault", "handle_mm_fault", "dax_iomap_pmd_fault"];
        let mm: &[&'static str] = &["exc_page_fault", "handle_mm_fault"];
        let out: &[&'static str] = &["exc_page_fault"];
        let steps = [
            // task 1: a PTE fault, then a PMD fault that falls back to a PTE.
            (1, pte),
            (1, pte),
            (1, out),
            (1, pmd),
            (2, pmd), // task 2's PMD fault, interleaved
            (1, mm),
            (1, pte),
            (1, out),
            (2, out),
            // task 3: a fault in neither handler, still open at the end.
            (3, mm),
        ];
        let f = count_faults(steps.iter().map(|&(t, p)| (t, p)));
        let want = |pte, pmd, fallback, other| FaultStats {
            pte,
            pmd,
            fallback,
            other,
        };
        assert_eq!(f[&1], want(1, 0, 1, 0));
        assert_eq!(f[&2], want(0, 1, 0, 0));
        assert_eq!(f[&3], want(0, 0, 0, 1));
        assert_eq!(f[&1].total(), 2);
    }
}

#[cfg(test)]
mod image_tests {
    use super::*;
    use sim_core::trace::Keyword;

    /// The machine of a trace's `machine` line (as `pmsim`'s `machine_config`, without its
    /// messages: a value the configuration refuses is left at its default).
    fn config_of(trace: &Trace) -> MachineConfig {
        let mut cfg = MachineConfig::default();
        let Some(m) = &trace.header.machine else {
            return cfg;
        };
        let mut set = |k: &str, v: String| {
            let _ = cfg.set(k, &v);
        };
        if let Some(media) = m.media {
            set("media", media.keyword().to_string());
        }
        if let Some(cpus) = m.cpus {
            set("cpus", cpus.to_string());
        }
        if let Some(pmem) = m.pmem {
            set("pmem", pmem.to_string());
        }
        if let Some(persist) = m.persist {
            set("persist", persist.keyword().to_string());
        }
        if let Some(seed) = m.seed {
            set("seed", seed.to_string());
        }
        for p in &m.extra {
            set(&p.key, p.value.trim_matches('"').to_string());
        }
        cfg
    }

    /// Builds each accepted trace's image under `dirs` of traces/ with and without
    /// persistency records and checks they agree; returns how many were built.
    fn compare_images(dirs: &[&str]) -> usize {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../traces");
        let mut paths = Vec::new();
        for dir in std::fs::read_dir(&root).unwrap() {
            let dir = dir.unwrap().path();
            let name = dir.file_name().unwrap().to_string_lossy().to_string();
            if !dir.is_dir() || name == "malformed" || !(dirs.is_empty() || dirs.contains(&&*name))
            {
                continue;
            }
            for f in std::fs::read_dir(&dir).unwrap() {
                let f = f.unwrap().path();
                if f.extension().is_some_and(|e| e == "trace") {
                    paths.push(f);
                }
            }
        }
        paths.sort();
        let mut built = 0;
        for path in &paths {
            let src = std::fs::read_to_string(path).unwrap();
            let opts = sim_core::trace::ParseOptions { known_bugs: None };
            let Ok(trace) = sim_core::trace::parse(&src, "t.trace", &opts) else {
                continue;
            };
            let cfg = config_of(&trace);
            if !refusals(&trace, &cfg).is_empty() {
                continue;
            }
            let trace = Arc::new(trace);
            let (Ok(with), Ok(without)) = (
                build_image(&trace, &cfg, true),
                build_image(&trace, &cfg, false),
            ) else {
                continue;
            };
            // Invariant: a clean unmount leaves every store durable.
            assert!(
                with.pending_lines().is_empty(),
                "{}: lines pending after the unmount",
                path.display()
            );
            assert!(without.pending_lines().is_empty());
            assert_eq!(
                with.persisted().content_hash(),
                without.persisted().content_hash(),
                "{}",
                path.display()
            );
            built += 1;
        }
        built
    }

    /// `build_image` without persistency records makes the image it makes with them: with
    /// them, nothing is left pending after the clean unmount, and the durable content is the
    /// same (a sample of the shipped traces; the ignored test below takes all of them).
    #[test]
    fn the_device_image_needs_no_persistency_records() {
        let built = compare_images(&["crash"]);
        assert!(built >= 5, "only {built} traces built an image");
    }

    /// As above, on every shipped trace the runner accepts (71 at the time of writing; about a
    /// minute in debug).
    #[test]
    #[ignore]
    fn every_shipped_device_image_needs_no_persistency_records() {
        let built = compare_images(&[]);
        assert!(built >= 70, "only {built} traces built an image");
    }
}
