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
//! updates it, the header fill initialises it); at the end (the last thread to finish) a log
//! force, daxfs's in-core/media cross-check and fsck; the sim-mm invariants at the end (and after
//! every step with [`TraceRunner::check_every_step`]); deadlock and lost wakeups are the
//! engine's.
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
//! **Reflink, pins, O_DIRECT, poison and signals**: `runner_mf.rs` (its header says how they
//! run and when a thread takes a signal).
//!
//! **Not built yet** (refused by [`refusals`] with the statement's position, nothing runs):
//! write, read, truncate, fallocate, fsync, fdatasync, unlink, msync, madvise, and the
//! `after-crash` section; the file-system bug mode `no-mmaplock` and the DAX-core modes without
//! a mechanism in this build. Simplifications: the translation and the machine access of one
//! page are two steps (a real CPU does both under one TLB entry); a private (CoW) page's content
//! is checked only against itself (the oracle follows shared mappings of files).

use crate::fs::Daxfs;
use crate::iomap::DaxfsFile;
use crate::layout::Geometry;
use crate::{FsError, mkfs};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sim_core::PmemPlatform;
use sim_core::machine::{CrashImage, CrashPoint, Machine, MachineConfig};
use sim_core::platform::{
    Assertion, Platform, Spawner, TaskId, WaitKey, WaitQueue, WakeMode, wake_key_eq,
};
use sim_core::sim::{Model, Sim, SimConfig, SimPlatform};
use sim_core::trace::{
    Access as TAccess, Expect, FileDecl, MapOff, Op, PageSize, Pattern, Sharing, Statement, Trace,
};
use sim_mm::dax::fault::{
    Access, FAULT_FLAG_USER, FAULT_FLAG_WRITE, Vmf, dax_fs_fault, dax_user_access,
};
use sim_mm::dax::{BugSet, Dax, DaxBug, Release};
use sim_mm::invariants::{CheckPolicy, install_checks};
use sim_mm::mm::{MmapFlags, do_mmap, do_munmap};
use sim_mm::pgtable::{PmdVal, is_huge_zero_pfn, is_zero_pfn};
use sim_mm::signal::create_process;
use sim_mm::world::{MmConfig, MmWorld};
use sim_mm::{MmStruct, VmFault};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

type P = SimPlatform;

#[path = "runner_mf.rs"]
mod mf;

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

/// Why the runner cannot execute `op` yet, or `None` when it can.
fn not_built(op: &Op) -> Option<&'static str> {
    Some(match op {
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
        | Op::Yield => return None,
        Op::Write { .. } | Op::Read { .. } => {
            "not built yet: the DAX read/write path (dax_iomap_rw) is not in the trace runner"
        }
        Op::Reflink { .. }
        | Op::Pin { .. }
        | Op::Unpin { .. }
        | Op::DioRead { .. }
        | Op::Poison { .. } => return None,
        Op::Truncate { .. } | Op::Fallocate { .. } | Op::Unlink { .. } => {
            "not built yet: truncate, fallocate and unlink need daxfs to break DAX layouts and \
             remove DAX entries before blocks are freed"
        }
        Op::Fsync { .. } | Op::Fdatasync { .. } | Op::Msync { .. } => {
            "not built yet: fsync/fdatasync/msync (DAX writeback + journal commit) are not in \
             the trace runner"
        }
        Op::Madvise { .. } => "not built yet: madvise is not in the trace runner",
    })
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
    for s in &trace.statements {
        if let Some(why) = not_built(&s.op) {
            refuse(
                s.pos.line,
                s.pos.col,
                format!("{} {}", s.thread, s.op.keyword()),
                why.into(),
            );
            continue;
        }
        if let Some(path) = path_of(&s.op)
            && !known.contains(&path)
        {
            refuse(
                s.pos.line,
                s.pos.col,
                format!("{} {} {path}", s.thread, s.op.keyword()),
                format!("no such file: no `file {path}` line and no `create {path}` in the trace"),
            );
        }
        if let Some((at, len)) = map_of(&s.op) {
            let proc = trace.header.process_of(&s.thread);
            let map_len = trace
                .statements
                .iter()
                .filter_map(|m| match &m.op {
                    Op::Mmap { len, name, .. }
                        if *name == at.map && trace.header.process_of(&m.thread) == proc =>
                    {
                        Some(len.div_ceil(PAGE) * PAGE)
                    }
                    _ => None,
                })
                .max()
                .unwrap_or(0);
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
    if let Some(ac) = &trace.after_crash {
        refuse(
            ac.pos.line,
            ac.pos.col,
            "after-crash".into(),
            "not built yet: the runner does not unmount, crash and remount yet".into(),
        );
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

/// A trace as a model.
pub struct TraceRunner {
    trace: Arc<Trace>,
    cfg: MachineConfig,
    /// The device after the header's mkfs and files (cleanly unmounted): every run starts
    /// from a machine with this pmem and mounts it.
    image: CrashPoint,
    /// Each header file's content (the oracle's start).
    contents: Arc<BTreeMap<String, Arc<Vec<u8>>>>,
    bugs: BugSet,
    threads: Vec<String>,
    /// Run the sim-mm invariants after every step (`--check-invariants`), not only at the end.
    pub check_every_step: bool,
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
        let image = build_image(&trace, &cfg).map_err(|r| vec![r])?;
        let contents = trace
            .header
            .files
            .iter()
            .map(|f| {
                let c = if f.hole {
                    vec![0u8; f.size as usize]
                } else {
                    pattern_bytes(f.fill(), f.size)
                };
                (f.path.clone(), Arc::new(c))
            })
            .collect();
        Ok(TraceRunner {
            trace: Arc::new(trace),
            cfg,
            image,
            contents: Arc::new(contents),
            bugs,
            threads,
            check_every_step: false,
        })
    }
}

/// A mapping a process gave a name.
#[derive(Clone)]
struct MapInfo {
    addr: u64,
    len: u64,
    /// Byte offset into the file.
    file_off: u64,
    shared: bool,
    ino: u64,
    file: DaxfsFile<P>,
}

/// User-space bookkeeping and the checker's state (see the module header).
#[derive(Default)]
struct User {
    /// Per process: mapping name -> mapping.
    maps: BTreeMap<String, BTreeMap<String, MapInfo>>,
    /// Per inode: the bytes the execution implies.
    /// (Shared with the runner's header contents until a run stores to the file.)
    files: BTreeMap<u64, Arc<Vec<u8>>>,
    /// Anonymous (CoW) pages' contents: DRAM, outside the machine model.
    anon: BTreeMap<u64, Vec<u8>>,
    /// Threads still running.
    live: usize,
}

struct Ctx {
    fs: Arc<Daxfs<P>>,
    dax: Dax<P>,
    mms: BTreeMap<String, Arc<MmStruct<P>>>,
    npages: u64,
    user: Mutex<User>,
    /// Where a thread waits for its process to map a name another thread maps.
    names_wq: WaitQueue<P>,
    /// Pins and the signal switch (`runner_mf.rs`).
    mf: mf::MfState,
}

/// What a statement came to.
#[derive(Default, Debug)]
struct Got {
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
}

impl Got {
    fn describe(&self) -> String {
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

    fn failed(&self) -> bool {
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
fn meets(expect: Option<&Expect>, got: &Got, len: u64) -> bool {
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

async fn fail(p: &P, name: &str, message: String) {
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
    /// The 4 KiB or the huge zero page.
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
        } else if is_zero_pfn(pfn) || is_huge_zero_pfn(pfn) {
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
            got.page
                .get_or_insert(if huge { PageSize::Pmd } else { PageSize::Pte });
            let phys = self.phys(pfn, va);
            let fpos = m.file_off + off;
            let src = (off - at.off) as usize..(off - at.off + n) as usize;
            match (&kind, phys) {
                (Kind::Load, Phys::Device(a)) => {
                    let mut b = vec![0u8; n as usize];
                    if p.pmem_load(a, &mut b).await.is_err() {
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
                        if self.consumed_poison(p, a, restarted, &mut got).await {
                            return got;
                        }
                        restarted = true;
                        continue;
                    }
                    let mut u = self.user.lock().unwrap();
                    if let Some(f) = u.files.get_mut(&m.ino).map(Arc::make_mut) {
                        let e = (fpos + n).min(f.len() as u64);
                        if fpos < e {
                            f[fpos as usize..e as usize].copy_from_slice(
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
            page[..e - s].copy_from_slice(&f[s..e]);
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
                let want = &f[s..e];
                (want != &b[..e - s]).then(|| {
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

    async fn execute(&self, p: &P, proc: &str, s: &Statement) -> Got {
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
                        .insert(inode.ino, Arc::new(Vec::new()));
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
                let Some(inode) = self.fs.lookup(p, path).await else {
                    got.errno = errno(FsError::ENOENT);
                    return got;
                };
                if off % PAGE != 0 {
                    got.errno = Some("EINVAL".into());
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
                        let mut u = self.user.lock().unwrap();
                        u.maps.get_mut(proc).map(|ms| ms.remove(map));
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
            other => {
                // `refusals` rejected the trace before it ran.
                unreachable!("{} reached the runner", other.keyword())
            }
        }
        got
    }

    /// After the last thread: a log force, daxfs's in-core/media cross-check and fsck (not on a
    /// file system that shut down).
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
        match self.fs.verify_incore(p).await {
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
        let r = Daxfs::<P>::fsck_media(p, self.fs.pmem_size).await;
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
    let extents = ino.ilock.lock(p).await.disk.extents.clone();
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
fn build_image(trace: &Trace, cfg: &MachineConfig) -> Result<CrashPoint, Refusal> {
    let machine = Machine::new(cfg.clone()).map_err(|e| Refusal {
        line: trace.header.machine.as_ref().map_or(1, |m| m.pos.line),
        col: trace.header.machine.as_ref().map_or(1, |m| m.pos.col),
        what: "machine".into(),
        why: e,
    })?;
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
async fn setup_world(
    p: &P,
    trace: &Trace,
    pmem: u64,
    bugs: BugSet,
    threads: &[String],
    contents: &BTreeMap<String, Arc<Vec<u8>>>,
) -> Result<Ctx, String> {
    let npages = pmem / PAGE;
    // Every trace process asks for early kill (runner_mf.rs).
    let mm_config = MmConfig {
        memory_failure_early_kill: true,
    };
    let world = Arc::new(MmWorld::new(p, PMEM_BASE_PFN, npages, mm_config));
    let fs = Daxfs::mount(p, pmem, world.clone()).await?;
    fs.failure.set_reflink_page_mapping(
        trace
            .header
            .bugs
            .iter()
            .any(|b| b.name == "reflink-page-mapping"),
    );
    let mut files = BTreeMap::new();
    for (path, c) in contents {
        let inode = fs
            .lookup(p, path)
            .await
            .ok_or_else(|| format!("{path} is missing after mount"))?;
        files.insert(inode.ino, c.clone());
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
        mf: mf::MfState::new(trace),
        user: Mutex::new(User {
            files,
            live: threads.len(),
            ..User::default()
        }),
    })
}

impl Model for TraceRunner {
    fn setup(&self, sim: &mut Sim) {
        let empty = CrashImage {
            delta: vec![],
            lines: vec![],
            hash: 0,
        };
        let machine = self
            .image
            .recover(&empty, &self.cfg)
            .expect("the image has the configured size");
        let pmem = self.cfg.pmem_size;
        sim.set_machine(machine);
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
            sim.spawn("setup", move || async move {
                let r = setup_world(&p, &trace, pmem, bugs, &threads, &contents).await;
                *s.lock().unwrap() = Some(r.map(Arc::new));
            });
        }
        sim.run(|_, en| en[0]);
        let ctx = match slot.lock().unwrap().take() {
            Some(Ok(ctx)) => ctx,
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
        install_checks(
            sim,
            &ctx.fs.world,
            CheckPolicy {
                every_step: self.check_every_step,
                at_end: true,
            },
        );
        for name in &self.threads {
            let (trace, ctx, name2) = (self.trace.clone(), ctx.clone(), name.clone());
            sim.spawn(name, move || async move {
                let proc = trace.header.process_of(&name2).to_string();
                // Announce the first line before doing anything, so that trace-order starts
                // with the thread whose first statement comes first in the file.
                if let Some(first) = trace.statements.iter().find(|s| s.thread == name2) {
                    p.set_line(first.pos.line);
                    p.yield_point("trace:start").await;
                }
                for s in trace.statements.iter().filter(|s| s.thread == name2) {
                    p.set_line(s.pos.line);
                    let mut got = ctx.execute(&p, &proc, s).await;
                    ctx.take_signals(&p, &mut got).await;
                    let expect = s.expect.as_ref().map(|e| &e.expect);
                    let len = match &s.op {
                        Op::Load { len, .. } => *len,
                        _ => 0,
                    };
                    if !meets(expect, &got, len) {
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
                let last = {
                    let mut u = ctx.user.lock().unwrap();
                    u.live -= 1;
                    u.live == 0
                };
                if last {
                    ctx.end_checks(&p).await;
                }
            });
        }
    }
}
