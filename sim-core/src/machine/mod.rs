//! The machine model: CPUs with a store path into a last-level cache, persistent memory with
//! x86 persistency (Px86), NVDIMM media timing, poison, and crash images.
//!
//! It is a plain, synchronous, deterministic data structure: no tasks, no futures, no wall
//! clock, no hash-order iteration. The executor calls one method per memory operation with the
//! clock `now` (ns) of the CPU the task runs on, and advances that CPU's clock by the latency
//! (ns) the method returns (the time model is described once, in `crate::sim`, "Time").
//!
//! # API
//! ```text
//! MachineConfig::default() / ::new(preset) / .set(key, value)   trace `machine k=v`, CLI overrides
//! MediaParams::preset(name) / .set(key, value)                  media presets and parameters
//! Machine::new(config) -> Result<Machine, String>
//!
//! m.load(now, cpu, addr, &mut buf)     -> Result<ns, MemError>   MemError::MachineCheck on poison
//! m.load_nowait(now, cpu, addr, &mut buf) -> Result<ns, MemError> issue only; mfence waits
//! m.fill_buffer_free(cpu) -> ns                                 when the CPU can next issue
//! m.store(now, cpu, addr, &data)       -> Result<ns, MemError>   cached store
//! m.ntstore(now, cpu, addr, &data)     -> Result<ns, MemError>   movnt, write-combining
//! m.clwb / clflushopt / clflush(now, cpu, addr) -> Result<ns, MemError>
//! m.sfence / mfence(now, cpu)          -> Result<ns, MemError>
//! m.locked_rmw(now, cpu, addr, size, |old| new) -> Result<(old, ns), MemError>
//! m.evict(now, addr) -> Result<bool, MemError>                  write a line back at any time
//! m.write_durable(addr, &data)                                  untimed initial media content
//! m.pmem_write(now, cpu, addr, &data)                           driver write: clears poison
//! m.inject_poison / clear_poison / scrub / scrub_all / badblocks
//! m.crash_point() -> CrashPoint
//!     .images(CrashOptions { k, torn, dedup }) -> Iterator<Item = CrashImage>
//!     .count_full(torn) / .count_bounded(opts) -> ImageCount
//!     .materialize(&image) -> Pmem, .read(&image, addr, &mut buf), .recover(&image, &config)
//! m.pending_lines() / cached(addr) / peek / peek_durable / stats()   inspection
//! bench::run_media_bench(media, &overrides) -> Result<MediaBenchReport, String>  Display + Serialize
//! bench::run_media_comparison(media, &overrides)   the rows with paper values only (no matrices)
//! ```
//!
//! # Persistency (Px86; crash_checkers.md section 3)
//! Per cache line, the ordered stores not yet durable (module `persist`). A crash may keep any
//! prefix of each line's sequence, independently per line, except what a completed write-back
//! made mandatory:
//! - a dirty line may be written back at any time (an eviction: `evict`, or any crash image);
//!   a capacity eviction does not make it durable for crash images, so that the image set does
//!   not depend on the cache's replacement state (only `evict`, clean shutdown, does);
//! - `clwb`/`clflushopt` cover the line's stores so far; the issuing CPU's next `sfence`,
//!   `mfence` or locked op makes them durable. Later stores, to any line, may persist before;
//! - `clflush` is ordered with all stores: on Intel it is durable when it returns; on AMD it
//!   waits for the CPU's next `mfence` (vendor knob);
//! - non-temporal stores go through the CPU's write-combining buffer and join the line's
//!   sequence; the CPU's next fence makes them durable, so they may persist before older
//!   cached stores to other lines;
//! - under `persist=eadr` a cached store is durable when it executes; non-temporal stores
//!   still wait for a fence (conservative: write-combining buffers are not in the cache);
//! - under `persist=adr` what was accepted into the WPQ is durable: that is what a fence
//!   waits for;
//! - aligned 8-byte stores are failure-atomic; with `torn` crash images a wider or unaligned
//!   store may persist in part, at 8-byte granularity. A store crossing a line boundary is two
//!   independent stores.
//!
//! Simplifications: stores are globally visible when they execute (no store buffers); one
//! shared last-level cache stands for the hierarchy; a load of a poisoned line raises a machine
//! check whether or not the line is cached, and only the driver write path (`pmem_write`) or
//! `clear_poison` clears poison.

pub mod bench;
mod cache;
mod crash;
mod params;
mod persist;
mod pmem;
mod poison;
mod timing;

pub use crash::{
    CrashImage, CrashImages, CrashLine, CrashOptions, CrashPoint, ImageCount, LineChoice,
    PendingStoreInfo,
};
pub use params::{CpuVendor, MediaParams, PRESETS, PersistDomain};
pub use pmem::Pmem;
pub use poison::{BadRange, MachineCheck, McKind, PoisonUnit, PoisonUnits};
pub use timing::{MediaModel, MediaStats, WriteKind};

use cache::{Llc, Victim};
use persist::{FenceKind, FlushKind, Persistency, word_mask};
use poison::Poison;
use serde::{Deserialize, Serialize};
use timing::PS;

/// Cost of issuing one non-blocking load of a line (`Machine::load_nowait`). [E]
pub const LOAD_ISSUE_NS: f64 = 1.0;

/// Bytes in a CPU cache line.
pub const LINE: usize = 64;

/// The content of one cache line.
pub type Line = [u8; LINE];

/// Why a memory operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemError {
    /// The range is not inside the pmem.
    OutOfRange { addr: u64, len: u64 },
    /// No such CPU.
    NoSuchCpu { cpu: usize },
    /// A locked operation must be 1, 2, 4 or 8 bytes, naturally aligned.
    Misaligned { addr: u64, size: usize },
    /// The load consumed poison.
    MachineCheck(MachineCheck),
}

impl std::fmt::Display for MemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemError::OutOfRange { addr, len } => {
                write!(f, "pmem range {addr:#x}+{len:#x} is out of range")
            }
            MemError::NoSuchCpu { cpu } => write!(f, "no CPU {cpu}"),
            MemError::Misaligned { addr, size } => {
                write!(
                    f,
                    "locked operation of {size} bytes at {addr:#x} is misaligned"
                )
            }
            MemError::MachineCheck(mc) => write!(
                f,
                "machine check ({:?}) on CPU {} at pmem {:#x}",
                mc.kind, mc.cpu, mc.addr
            ),
        }
    }
}

impl std::error::Error for MemError {}

/// The machine as the trace's `machine` statement describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MachineConfig {
    pub cpus: usize,
    /// Bytes of pmem.
    pub pmem_size: u64,
    pub media: MediaParams,
    /// Seeds the model's random choices (tail events).
    pub seed: u64,
    /// A line with more unflushed stores than this is written back (as an eviction would), to
    /// bound the history kept per line.
    pub max_pending_per_line: usize,
    /// Media parameters set by name, re-applied when `media=` picks another preset.
    overrides: Vec<(String, String)>,
}

impl Default for MachineConfig {
    /// `machine cpus=4 pmem=256MiB media=optane-like persist=adr seed=0`.
    fn default() -> Self {
        MachineConfig {
            cpus: 4,
            pmem_size: 256 << 20,
            media: MediaParams::optane_like(),
            seed: 0,
            max_pending_per_line: 1024,
            overrides: Vec::new(),
        }
    }
}

/// The keys `MachineConfig::set` takes besides the media parameters.
pub const MACHINE_KEYS: &[&str] = &["cpus", "pmem", "media", "seed", "max_pending"];

impl MachineConfig {
    /// The default machine with the media preset `preset`.
    pub fn new(preset: &str) -> Result<Self, String> {
        Ok(MachineConfig {
            media: MediaParams::preset(preset)?,
            ..Self::default()
        })
    }

    /// Sets `cpus`, `pmem`, `media` (a preset; earlier parameter overrides still apply), `seed`,
    /// `max_pending`, or any media parameter (`persist=eadr`, `wpq_depth=8`, ...).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "cpus" => {
                self.cpus = match value.parse::<usize>() {
                    Ok(n) if (1..=4096).contains(&n) => n,
                    _ => return Err(format!("cpus: `{value}` is not a CPU count (1-4096)")),
                }
            }
            "pmem" => {
                let size = params::parse::bytes(value).map_err(|e| format!("pmem: {e}"))?;
                if size == 0 || size % LINE as u64 != 0 {
                    return Err(format!("pmem: `{value}` is not a positive multiple of 64"));
                }
                self.pmem_size = size;
            }
            "media" => {
                let mut media = MediaParams::preset(value)?;
                for (k, v) in &self.overrides {
                    media.set(k, v)?;
                }
                self.media = media;
            }
            "seed" => {
                self.seed = value
                    .parse()
                    .map_err(|_| format!("seed: `{value}` is not a number"))?
            }
            "max_pending" => {
                self.max_pending_per_line = match value.parse::<usize>() {
                    Ok(n) if n > 0 => n,
                    _ => return Err(format!("max_pending: `{value}` is not a positive count")),
                }
            }
            _ => {
                if self.media.get(key).is_none() {
                    return Err(format!(
                        "unknown machine key `{key}`; valid keys: {}, and the media parameters {}",
                        MACHINE_KEYS.join(", "),
                        MediaParams::keys().join(", ")
                    ));
                }
                self.media.set(key, value)?;
                self.overrides.push((key.to_string(), value.to_string()));
            }
        }
        Ok(())
    }
}

/// Counters of the machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MachineStats {
    pub loads: u64,
    pub stores: u64,
    pub ntstores: u64,
    pub flushes: u64,
    pub fences: u64,
    pub locked_ops: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Dirty lines written back by the cache's capacity or by `evict`.
    pub evictions: u64,
    pub machine_checks: u64,
    pub media: MediaStats,
}

/// CPU-side costs in picoseconds.
#[derive(Clone, Debug)]
struct CpuCosts {
    cache_hit: u64,
    store: u64,
    store_miss: u64,
    rfo: u64,
    flush: u64,
    ntstore: u64,
    fence: u64,
    mfence: u64,
    locked: u64,
}

/// An open write-combining buffer.
#[derive(Clone, Copy, Debug)]
struct WcBuffer {
    line: u64,
    /// Bytes of the line written (bit i = byte i).
    bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flush {
    Clwb,
    Clflushopt,
    Clflush,
}

/// The simulated machine: memory contents, caches, persistency, media timing and poison.
#[derive(Clone)]
pub struct Machine {
    cfg: MachineConfig,
    /// What loads see (durable state plus every pending store).
    mem: Pmem,
    llc: Llc,
    persist: Persistency,
    /// Whether stores are recorded for crash images (see [`Machine::set_record_persistency`]);
    /// invariant: when false, `persist` holds no pending line.
    record_persistency: bool,
    media: MediaModel,
    poison: Poison,
    wc: Vec<Option<WcBuffer>>,
    /// Per CPU, when the last of its non-blocking loads (`load_nowait`) completes (ps).
    loads_done: Vec<u64>,
    costs: CpuCosts,
    stats: MachineStats,
    /// What the operations since the last `take_touched` touched besides their own lines and
    /// CPU (see [`Touched`]).
    touched: Touched,
}

/// The shared machine state the operations since the last [`Machine::take_touched`] touched
/// besides the lines they name and the issuing CPU's own state (fill buffers, write-combining
/// buffer, outstanding flushes and loads): the simulator's footprint of a memory operation
/// (`sim` "Footprints"). Everything else an operation changes is a counter (`stats`), whose
/// sums do not depend on the order, or the global store sequence number, of which only the
/// order along each line is observable (a crash keeps a prefix of each line's stores, a
/// flush covers its line's stores so far).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Touched {
    /// Last-level cache sets looked up, filled or invalidated.
    pub sets: Vec<u64>,
    /// DIMMs whose buffer, queues or pipelines the operations used.
    pub dimms: Vec<usize>,
    /// Lines whose persistency state changed other than the ones named: evicted victims,
    /// lines a fence made durable.
    pub lines: Vec<u64>,
    /// Machine-wide state: the tail-event generator, the poison log.
    pub global: bool,
}

fn ps(ns: f64) -> u64 {
    (ns * PS).round() as u64
}

fn to_ns(ps: u64) -> u64 {
    ps.div_ceil(PS as u64)
}

/// Splits `[addr, addr + len)` into (line, offset in line, range in the buffer) pieces.
fn pieces(addr: u64, len: usize) -> impl Iterator<Item = (u64, usize, std::ops::Range<usize>)> {
    let mut done = 0;
    std::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let a = addr + done as u64;
        let off = (a % LINE as u64) as usize;
        let n = (LINE - off).min(len - done);
        let piece = (a / LINE as u64, off, done..done + n);
        done += n;
        Some(piece)
    })
}

fn byte_mask(off: usize, len: usize) -> u64 {
    let m = if len >= 64 {
        u64::MAX
    } else {
        (1u64 << len) - 1
    };
    m << off
}

impl Machine {
    /// Make this machine equal to `src` (as `*self = src.clone()`), reusing what it has: the
    /// cache copies back only the ways it changed when it was copied from `src` (see
    /// `Llc::restore_from`).
    pub fn restore_from(&mut self, src: &Machine) {
        // Every field is named, so a new field cannot be left out.
        let Machine {
            cfg,
            mem,
            llc,
            persist,
            record_persistency,
            media,
            poison,
            wc,
            loads_done,
            costs,
            stats,
            touched,
        } = self;
        cfg.clone_from(&src.cfg);
        mem.clone_from(&src.mem);
        llc.restore_from(&src.llc);
        persist.clone_from(&src.persist);
        *record_persistency = src.record_persistency;
        media.clone_from(&src.media);
        poison.clone_from(&src.poison);
        wc.clone_from(&src.wc);
        loads_done.clone_from(&src.loads_done);
        costs.clone_from(&src.costs);
        *stats = src.stats;
        touched.clone_from(&src.touched);
    }

    /// A machine with zeroed pmem.
    pub fn new(cfg: MachineConfig) -> Result<Self, String> {
        let mem = Pmem::new(cfg.pmem_size);
        let poison = Poison::new(PoisonUnits::from_params(&cfg.media));
        Self::with_media(cfg, mem, poison)
    }

    pub(crate) fn with_media(
        cfg: MachineConfig,
        mem: Pmem,
        poison: Poison,
    ) -> Result<Self, String> {
        cfg.media.validate()?;
        if cfg.cpus == 0 {
            return Err("a machine needs at least one CPU".into());
        }
        if cfg.pmem_size == 0 || !cfg.pmem_size.is_multiple_of(LINE as u64) {
            return Err("pmem size must be a positive multiple of 64".into());
        }
        let p = &cfg.media;
        let costs = CpuCosts {
            cache_hit: ps(p.cache_hit_ns),
            store: ps(p.store_ns),
            store_miss: ps(p.store_miss_ns),
            rfo: ps(p.rfo_ns),
            flush: ps(p.flush_ns),
            ntstore: ps(p.ntstore_ns),
            fence: ps(p.fence_ns),
            mfence: ps(p.mfence_ns),
            locked: ps(p.locked_ns),
        };
        Ok(Machine {
            llc: Llc::new(p.cache, p.cache_ways),
            persist: Persistency::new(cfg.cpus, cfg.max_pending_per_line),
            record_persistency: true,
            media: MediaModel::new(p, cfg.cpus, cfg.seed),
            poison,
            wc: vec![None; cfg.cpus],
            loads_done: vec![0; cfg.cpus],
            costs,
            stats: MachineStats::default(),
            touched: Touched::default(),
            mem,
            cfg,
        })
    }

    /// What the operations since the last call touched (see [`Touched`]), each in increasing
    /// order without repeats.
    pub fn take_touched(&mut self) -> Touched {
        let mut t = std::mem::take(&mut self.touched);
        let (dimms, rng) = self.media.take_touched();
        t.dimms = dimms;
        t.dimms.sort_unstable();
        t.global |= rng;
        t.sets.sort_unstable();
        t.sets.dedup();
        t.lines.sort_unstable();
        t.lines.dedup();
        t
    }

    /// Give back the vectors of a [`Touched`] taken: emptied, they collect the next
    /// operations' (a search takes one per memory operation, and growing fresh vectors each
    /// time cost more than the operations).
    pub fn recycle_touched(&mut self, t: Touched) {
        let Touched {
            mut sets,
            mut dimms,
            mut lines,
            global: _,
        } = t;
        let mine = &mut self.touched;
        if mine.sets.is_empty() && mine.sets.capacity() < sets.capacity() {
            sets.clear();
            mine.sets = sets;
        }
        if mine.lines.is_empty() && mine.lines.capacity() < lines.capacity() {
            lines.clear();
            mine.lines = lines;
        }
        dimms.clear();
        self.media.recycle_touched(dimms);
    }

    /// Records that the cache set of `line` is used.
    fn touch_set(&mut self, line: u64) {
        if let Some(s) = self.llc.set_of(line) {
            self.touched.sets.push(s);
        }
    }

    pub fn config(&self) -> &MachineConfig {
        &self.cfg
    }

    pub fn params(&self) -> &MediaParams {
        &self.cfg.media
    }

    pub fn stats(&self) -> MachineStats {
        MachineStats {
            media: self.media.stats(),
            ..self.stats
        }
    }

    /// When (ns) CPU `cpu` next has a free line fill buffer: the earliest it can issue a load
    /// or write that misses the cache.
    pub fn fill_buffer_free(&self, cpu: usize) -> u64 {
        to_ns(self.media.slot_free(cpu))
    }

    /// The sequence number the next store will carry in `PendingStoreInfo::seq`.
    pub fn next_store_seq(&self) -> u64 {
        self.persist.next_seq()
    }

    fn check(&self, cpu: usize, addr: u64, len: usize) -> Result<(), MemError> {
        if cpu >= self.cfg.cpus {
            return Err(MemError::NoSuchCpu { cpu });
        }
        self.mem.check(addr, len as u64)
    }

    /// With `false`, every store is durable when it executes and nothing is kept for crash
    /// images (what is pending now becomes durable): for a machine whose crash images nobody
    /// asks for, such as one that only builds a device image that ends durable anyway (a clean
    /// unmount). Memory contents and loads are unchanged; `crash_point` has no pending line, and
    /// what depends on pending stores (fence footprints, flush timing without a cache model)
    /// sees none.
    pub fn set_record_persistency(&mut self, on: bool) {
        if !on {
            self.persist.lines.clear();
        }
        self.record_persistency = on;
    }

    /// Writes back a dirty line the cache pushed out (media timing). Its pending stores stay
    /// pending for crash images: which line the replacement policy picks depends on the order
    /// of independent steps, and a crash image set must not (crashcheck compares schedules), so
    /// a capacity eviction only ever adds outcomes the persistency model already allows (any
    /// dirty line may be written back at any moment) and never removes one.
    fn evict_victim(&mut self, t: u64, victim: Option<Victim>) {
        if let Some(v) = victim.filter(|v| v.dirty) {
            self.touched.lines.push(v.line);
            self.stats.evictions += 1;
            self.media.write(t, None, v.line, WriteKind::WriteBack);
        }
    }

    /// Applies a store of `data` at `off` of `line` to memory and to the persistency state.
    fn record(&mut self, cpu: usize, line: u64, off: usize, data: &[u8], nt: bool) {
        let before = self.mem.line(line);
        let mut after = before;
        after[off..off + data.len()].copy_from_slice(data);
        self.mem.set_line(line, &after);
        let durable_now =
            !self.record_persistency || (!nt && self.cfg.media.persist == PersistDomain::Eadr);
        let words = word_mask(off, data.len());
        self.persist
            .store(line, cpu, nt, words, &before, &after, durable_now);
        // What loads see is the durable line with every pending store applied in order.
        debug_assert!(self.persist.latest(line).is_none_or(|l| *l == after));
    }

    /// Loads `buf.len()` bytes at `addr`. The lines are fetched in parallel (up to the CPU's
    /// fill buffers); the latency is that of the slowest. A poisoned line makes it fail with a
    /// machine check after copying the bytes before it.
    pub fn load(
        &mut self,
        now: u64,
        cpu: usize,
        addr: u64,
        buf: &mut [u8],
    ) -> Result<u64, MemError> {
        self.check(cpu, addr, buf.len())?;
        self.stats.loads += 1;
        if let Some(bad) = self.poison.first_bad(addr, buf.len() as u64) {
            let copied = (bad.saturating_sub(addr) as usize).min(buf.len());
            self.mem.read_unchecked(addr, &mut buf[..copied]);
            self.poison.consumed(bad);
            self.touched.global = true;
            self.stats.machine_checks += 1;
            return Err(MemError::MachineCheck(MachineCheck {
                kind: McKind::ActionRequired,
                cpu,
                addr: bad,
                bytes_copied: copied,
                units: self.poison.units,
            }));
        }
        let t0 = now * PS as u64;
        let mut done = t0;
        for (line, _, _) in pieces(addr, buf.len()) {
            self.touch_set(line);
            let d = match self.llc.lookup(line) {
                Some(way) => {
                    self.stats.cache_hits += 1;
                    t0.max(self.llc.ready(way)) + self.costs.cache_hit
                }
                None => {
                    self.stats.cache_misses += 1;
                    let (_, d) = self.media.read(t0, cpu, line);
                    let (_, victim) = self.llc.fill(line, d);
                    self.evict_victim(t0, victim);
                    d
                }
            };
            done = done.max(d);
        }
        self.mem.read_unchecked(addr, buf);
        Ok(to_ns(done - t0))
    }

    /// A non-blocking load, the way an out-of-order core issues independent loads: the data is
    /// copied now (the load takes its place in the global order of events here), but the CPU
    /// only pays `LOAD_ISSUE_NS` per line plus any wait for a free fill buffer (at most `mlp`
    /// lines in flight per CPU); the lines' completion is charged to the media model's
    /// resources and to the CPU's outstanding loads, which its next `mfence` (or locked op)
    /// waits for. Returns the issue time in ns. Poison fails it as `load` does.
    pub fn load_nowait(
        &mut self,
        now: u64,
        cpu: usize,
        addr: u64,
        buf: &mut [u8],
    ) -> Result<u64, MemError> {
        self.check(cpu, addr, buf.len())?;
        if self.poison.first_bad(addr, buf.len() as u64).is_some() {
            // A machine check is synchronous: the blocking path reports it.
            return self.load(now, cpu, addr, buf);
        }
        self.stats.loads += 1;
        let t0 = now * PS as u64;
        let issue_cost = ps(LOAD_ISSUE_NS);
        let mut t = t0;
        let mut done = self.loads_done[cpu];
        for (line, _, _) in pieces(addr, buf.len()) {
            self.touch_set(line);
            let d = match self.llc.lookup(line) {
                Some(way) => {
                    self.stats.cache_hits += 1;
                    t.max(self.llc.ready(way)) + self.costs.cache_hit
                }
                None => {
                    self.stats.cache_misses += 1;
                    let (issue, d) = self.media.read(t, cpu, line);
                    t = issue;
                    let (_, victim) = self.llc.fill(line, d);
                    self.evict_victim(t, victim);
                    d
                }
            };
            t += issue_cost;
            done = done.max(d);
        }
        self.loads_done[cpu] = done;
        self.mem.read_unchecked(addr, buf);
        Ok(to_ns(t - t0))
    }

    /// A cached store. A line not in the cache is filled (read for ownership); a write-back of
    /// it cannot leave before `rfo_ns`.
    pub fn store(&mut self, now: u64, cpu: usize, addr: u64, data: &[u8]) -> Result<u64, MemError> {
        self.check(cpu, addr, data.len())?;
        self.stats.stores += 1;
        let t0 = now * PS as u64;
        let mut t = t0;
        for (line, off, range) in pieces(addr, data.len()) {
            self.touch_set(line);
            match self.llc.lookup(line) {
                Some(way) => {
                    self.stats.cache_hits += 1;
                    self.llc.set_dirty(way, true);
                    t += self.costs.store;
                }
                None => {
                    self.stats.cache_misses += 1;
                    self.media.read_for_ownership(t, cpu, line);
                    let (way, victim) = self.llc.fill(line, t + self.costs.rfo);
                    self.evict_victim(t, victim);
                    if let Some(way) = way {
                        self.llc.set_dirty(way, true);
                    }
                    t += self.costs.store_miss;
                }
            }
            self.record(cpu, line, off, &data[range], false);
        }
        Ok(to_ns(t - t0))
    }

    /// A non-temporal store (movnti / movntdq): bypasses the cache (invalidating the line there)
    /// through the CPU's write-combining buffer, which leaves when full, when the CPU writes
    /// another line non-temporally, or at a fence.
    pub fn ntstore(
        &mut self,
        now: u64,
        cpu: usize,
        addr: u64,
        data: &[u8],
    ) -> Result<u64, MemError> {
        self.check(cpu, addr, data.len())?;
        self.stats.ntstores += 1;
        let t0 = now * PS as u64;
        let mut t = t0;
        for (line, off, range) in pieces(addr, data.len()) {
            self.touch_set(line);
            self.llc.invalidate(line);
            if self.wc[cpu].is_some_and(|w| w.line != line) {
                t = self.wc_flush(t, cpu);
            }
            t += (self.costs.ntstore * range.len() as u64 / LINE as u64).max(1);
            let wc = self.wc[cpu].get_or_insert(WcBuffer { line, bytes: 0 });
            wc.bytes |= byte_mask(off, range.len());
            if wc.bytes == u64::MAX {
                t = self.wc_flush(t, cpu);
            }
            self.record(cpu, line, off, &data[range], true);
        }
        Ok(to_ns(t - t0))
    }

    /// Sends `cpu`'s open write-combining buffer on its way; returns when it has left (the
    /// CPU waits for a free fill buffer).
    fn wc_flush(&mut self, t: u64, cpu: usize) -> u64 {
        match self.wc[cpu].take() {
            Some(w) => {
                self.media
                    .write(t, Some(cpu), w.line, WriteKind::NonTemporal)
                    .0
            }
            None => t,
        }
    }

    /// clwb: writes the line back if dirty and keeps it cached. Durable at the CPU's next fence.
    pub fn clwb(&mut self, now: u64, cpu: usize, addr: u64) -> Result<u64, MemError> {
        self.flush(now, cpu, addr, Flush::Clwb)
    }

    /// clflushopt: writes the line back if dirty and invalidates it. Durable at the CPU's next
    /// fence.
    pub fn clflushopt(&mut self, now: u64, cpu: usize, addr: u64) -> Result<u64, MemError> {
        self.flush(now, cpu, addr, Flush::Clflushopt)
    }

    /// clflush: writes the line back and invalidates it, ordered with every store. On Intel it
    /// returns once the line is durable; on AMD the CPU's next mfence makes it durable.
    pub fn clflush(&mut self, now: u64, cpu: usize, addr: u64) -> Result<u64, MemError> {
        self.flush(now, cpu, addr, Flush::Clflush)
    }

    fn flush(&mut self, now: u64, cpu: usize, addr: u64, how: Flush) -> Result<u64, MemError> {
        self.check(cpu, addr, 1)?;
        self.stats.flushes += 1;
        let line = addr / LINE as u64;
        let t0 = now * PS as u64;
        let mut t = t0 + self.costs.flush;
        self.touch_set(line);
        let way = self.llc.lookup(line);
        let (dirty, ready) = match way {
            Some(w) => (self.llc.is_dirty(w), self.llc.ready(w)),
            // Without a cache model, a line with pending stores counts as dirty.
            None => (
                self.cfg.media.cache == 0 && self.persist.is_pending(line),
                t,
            ),
        };
        let mut accepted = t;
        if dirty {
            let depart = t.max(ready);
            let (issue, acc) = self
                .media
                .write(depart, Some(cpu), line, WriteKind::WriteBack);
            // The instruction waits for a free fill buffer, not for its line's ownership.
            t += issue - depart;
            accepted = acc;
            if let Some(w) = way {
                self.llc.set_dirty(w, false);
            }
        }
        if how != Flush::Clwb {
            self.llc.invalidate(line);
        }
        match (how, self.cfg.media.vendor) {
            (Flush::Clflush, CpuVendor::Intel) => {
                self.persist.fold_all(line);
                t = t.max(accepted);
            }
            (Flush::Clflush, CpuVendor::Amd) => {
                self.persist.flush_async(cpu, line, FlushKind::AmdClflush)
            }
            _ => self.persist.flush_async(cpu, line, FlushKind::Opt),
        }
        Ok(to_ns(t - t0))
    }

    /// sfence: waits until the CPU's write-backs and write-combining lines are accepted into
    /// the persistence domain, which makes them durable.
    pub fn sfence(&mut self, now: u64, cpu: usize) -> Result<u64, MemError> {
        self.fence(now, cpu, FenceKind::Sfence)
    }

    /// mfence: as sfence, and also completes AMD clflush.
    pub fn mfence(&mut self, now: u64, cpu: usize) -> Result<u64, MemError> {
        self.fence(now, cpu, FenceKind::Full)
    }

    fn fence(&mut self, now: u64, cpu: usize, kind: FenceKind) -> Result<u64, MemError> {
        if cpu >= self.cfg.cpus {
            return Err(MemError::NoSuchCpu { cpu });
        }
        self.stats.fences += 1;
        let t0 = now * PS as u64;
        let mut t = self.wc_flush(t0, cpu).max(self.media.drained(cpu));
        if kind == FenceKind::Full {
            // mfence orders loads too: it waits for the CPU's non-blocking loads.
            t = t.max(self.loads_done[cpu]);
        }
        let cost = match kind {
            FenceKind::Sfence => self.costs.fence,
            FenceKind::Full => self.costs.mfence,
        };
        // The lines this fence may make durable.
        let lines: Vec<u64> = self.persist.outstanding_lines(cpu).collect();
        self.touched.lines.extend(lines);
        self.persist.fence(cpu, kind);
        self.media.fenced(cpu, t + cost);
        Ok(to_ns(t + cost - t0))
    }

    /// A locked read-modify-write (xchg, lock cmpxchg, lock xadd) of `size` bytes
    /// (little-endian): a full fence, then `op(old)` is stored. Returns (old, ns).
    pub fn locked_rmw(
        &mut self,
        now: u64,
        cpu: usize,
        addr: u64,
        size: usize,
        op: impl FnOnce(u64) -> u64,
    ) -> Result<(u64, u64), MemError> {
        if !matches!(size, 1 | 2 | 4 | 8) || !addr.is_multiple_of(size as u64) {
            return Err(MemError::Misaligned { addr, size });
        }
        self.check(cpu, addr, size)?;
        self.stats.locked_ops += 1;
        let fenced = self.fence(now, cpu, FenceKind::Full)?;
        let mut buf = [0u8; 8];
        let loaded = self.load(now + fenced, cpu, addr, &mut buf[..size])?;
        let old = u64::from_le_bytes(buf);
        let new = op(old).to_le_bytes();
        let stored = self.store(now + fenced + loaded, cpu, addr, &new[..size])?;
        Ok((old, fenced + loaded + stored + to_ns(self.costs.locked)))
    }

    /// Writes the line holding `addr` back, as the cache may do at any moment: everything
    /// pending on it becomes durable. Returns whether anything was pending.
    pub fn evict(&mut self, now: u64, addr: u64) -> Result<bool, MemError> {
        self.mem.check(addr, 1)?;
        let line = addr / LINE as u64;
        let dirty = self.llc.invalidate(line) == Some(true);
        let pending = self.persist.fold_all(line);
        if dirty || pending {
            self.stats.evictions += 1;
            self.media
                .write(now * PS as u64, None, line, WriteKind::WriteBack);
        }
        Ok(pending)
    }

    /// Writes every pending line back (a clean shutdown, or wbinvd).
    pub fn writeback_all(&mut self, now: u64) {
        for addr in self.pending_lines() {
            // The addresses come from the pending set, so they are in range.
            let _ = self.evict(now, addr);
        }
    }

    /// Whether the line holding `addr` is in the cache, and if so whether it is dirty (for
    /// inspection; does not count as a use).
    pub fn cached(&self, addr: u64) -> Option<bool> {
        self.llc.probe(addr / LINE as u64)
    }

    /// A hash of what loads see (the whole pmem, pending stores included).
    pub fn memory_hash(&self) -> u64 {
        self.mem.content_hash()
    }

    /// Addresses of the lines with stores that are not durable, in address order.
    pub fn pending_lines(&self) -> Vec<u64> {
        self.persist.lines.keys().map(|l| l * LINE as u64).collect()
    }

    /// Untimed write of initial media content (mkfs, a trace's `file ... fill=`): visible and
    /// durable at once.
    pub fn write_durable(&mut self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        self.mem.check(addr, data.len() as u64)?;
        for (line, _, _) in pieces(addr, data.len()) {
            self.persist.fold_all(line);
        }
        self.mem.write_unchecked(addr, data);
        Ok(())
    }

    /// Untimed read of what loads would see, ignoring poison (for inspection).
    pub fn peek(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.mem.read(addr, buf)
    }

    /// Untimed read of the durable (mandatory) state: what survives a crash for certain.
    pub fn peek_durable(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.mem.read(addr, buf)?;
        let first = addr / LINE as u64;
        let last = (addr + buf.len() as u64).div_ceil(LINE as u64);
        for (&line, dl) in self.persist.lines.range(first..last) {
            let la = line * LINE as u64;
            let lo = addr.max(la);
            let hi = (addr + buf.len() as u64).min(la + LINE as u64);
            buf[(lo - addr) as usize..(hi - addr) as usize]
                .copy_from_slice(&dl.durable[(lo - la) as usize..(hi - la) as usize]);
        }
        Ok(())
    }

    /// The pmem driver's write path (drivers/nvdimm/pmem.c `pmem_do_write`): clears poison on
    /// every clear unit the write covers entirely, then writes with non-temporal stores
    /// (`memcpy_flushcache`), durable at the CPU's next fence. Returns the latency and the
    /// ranges cleared.
    pub fn pmem_write(
        &mut self,
        now: u64,
        cpu: usize,
        addr: u64,
        data: &[u8],
    ) -> Result<(u64, Vec<BadRange>), MemError> {
        self.check(cpu, addr, data.len())?;
        let cleared = self.poison.clear(addr, data.len() as u64);
        let ns = self.ntstore(now, cpu, addr, data)?;
        Ok((ns, cleared))
    }

    /// Makes every consume unit overlapping `[addr, addr + len)` uncorrectable.
    pub fn inject_poison(&mut self, addr: u64, len: u64) -> Result<(), MemError> {
        self.mem.check(addr, len.max(1))?;
        self.poison.inject(addr, len);
        Ok(())
    }

    /// The platform's clear-uncorrectable-error command: clears the clear units entirely
    /// inside the range (their data is left as it was). Returns the cleared ranges.
    pub fn clear_poison(&mut self, addr: u64, len: u64) -> Result<Vec<BadRange>, MemError> {
        self.mem.check(addr, len)?;
        Ok(self.poison.clear(addr, len))
    }

    /// Address-range scrub of `[addr, addr + len)` (action-optional): the poisoned ranges not
    /// reported before, at the clear unit; they join the badblocks list.
    pub fn scrub(&mut self, addr: u64, len: u64) -> Result<Vec<BadRange>, MemError> {
        self.mem.check(addr, len)?;
        Ok(self.poison.scrub(addr, len))
    }

    /// Scrubs the whole pmem.
    pub fn scrub_all(&mut self) -> Vec<BadRange> {
        self.poison.scrub(0, self.cfg.pmem_size)
    }

    /// The badblocks list (first sector, count), sectors of `poison_badblocks` bytes, of the
    /// poison found by scrubs and machine checks.
    pub fn badblocks(&self) -> Vec<(u64, u64)> {
        self.poison.badblocks()
    }

    /// Every poisoned range, at the consume unit.
    pub fn poisoned(&self) -> Vec<BadRange> {
        self.poison.ranges()
    }

    pub fn poison_units(&self) -> PoisonUnits {
        self.poison.units
    }

    /// The crash point of this moment: the persisted image (a copy-on-write snapshot) and the
    /// pending lines, from which `CrashPoint::images` enumerates the allowed crash images.
    pub fn crash_point(&self) -> CrashPoint {
        let mut persisted = self.mem.clone();
        let mut lines = Vec::with_capacity(self.persist.lines.len());
        for (&line, dl) in &self.persist.lines {
            persisted.set_line(line, &dl.durable);
            lines.push(CrashLine::new(line, dl.durable, &dl.stores));
        }
        CrashPoint::new(persisted, lines, self.poison.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keys_follow_the_trace_machine_line() {
        let mut cfg = MachineConfig::default();
        for (k, v) in [
            ("cpus", "2"),
            ("pmem", "64MiB"),
            ("persist", "eadr"),
            ("wpq_depth", "8"),
            ("media", "dram"),
            ("seed", "7"),
        ] {
            cfg.set(k, v).unwrap();
        }
        // Overrides survive a later change of preset.
        assert_eq!(cfg.media.preset, "dram");
        assert_eq!(cfg.media.persist, PersistDomain::Eadr);
        assert_eq!(cfg.media.wpq_depth, 8);
        assert_eq!((cfg.cpus, cfg.pmem_size, cfg.seed), (2, 64 << 20, 7));
        let err = cfg.set("colour", "red").unwrap_err();
        assert!(err.contains("cpus") && err.contains("read_miss_ns"));
        assert!(
            cfg.set("media", "tape")
                .unwrap_err()
                .contains("optane-like")
        );
        assert!(cfg.set("pmem", "100").is_err());
        assert!(cfg.set("cpus", "0").is_err());
    }

    #[test]
    fn nowait_loads_overlap_up_to_the_fill_buffers_and_mfence_waits_for_them() {
        let mut cfg = MachineConfig::new("optane-like").unwrap();
        cfg.set("pmem", "64MiB").unwrap();
        cfg.set("cpus", "1").unwrap();
        let mlp = u64::from(cfg.media.mlp);
        let mut m = Machine::new(cfg.clone()).unwrap();
        m.write_durable(4096 * 3, &[7; 8]).unwrap();
        // Lines on different 4 KiB pages, so no buffer hit or prefetch helps.
        let addr = |i: u64| i * 4096;
        let (mut t, mut buf) = (0u64, [0u8; 8]);
        for i in 0..mlp {
            t += m.load_nowait(t, 0, addr(i), &mut buf).unwrap();
            if i == 3 {
                assert_eq!(buf, [7; 8], "the data is read when the load issues");
            }
        }
        // Every load issued without waiting: only the issue cost per line.
        assert_eq!(t, mlp * LOAD_ISSUE_NS as u64);
        // The next one waits for a free fill buffer: the first load's completion.
        let before = t;
        t += m.load_nowait(t, 0, addr(mlp), &mut buf).unwrap();
        assert!(t - before >= cfg.media.read_miss_ns as u64 - mlp * LOAD_ISSUE_NS as u64);
        // sfence does not order loads; mfence waits until the last one completes.
        let sf = m.sfence(t, 0).unwrap();
        assert!(
            sf < cfg.media.read_miss_ns as u64 / 2,
            "sfence waited {sf} ns"
        );
        let mf = m.mfence(t + sf, 0).unwrap();
        assert!(
            mf >= cfg.media.read_miss_ns as u64 / 2,
            "mfence waited {mf} ns"
        );
        // The blocking loads of the same lines take one miss latency each.
        let mut b = Machine::new(cfg).unwrap();
        let mut tb = 0;
        for i in 0..=mlp {
            tb += b.load(tb, 0, addr(i), &mut buf).unwrap();
        }
        assert!(
            tb > 2 * (t + sf + mf),
            "blocking {tb} ns vs overlapped {}",
            t + sf + mf
        );
    }

    #[test]
    fn operations_check_cpu_and_range() {
        let mut cfg = MachineConfig::default();
        cfg.set("pmem", "1MiB").unwrap();
        let mut m = Machine::new(cfg).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(
            m.load(0, 9, 0, &mut buf),
            Err(MemError::NoSuchCpu { cpu: 9 })
        );
        assert!(matches!(
            m.store(0, 0, (1 << 20) - 4, &buf),
            Err(MemError::OutOfRange { .. })
        ));
        assert!(matches!(
            m.locked_rmw(0, 0, 4, 8, |v| v),
            Err(MemError::Misaligned { .. })
        ));
        assert!(m.evict(0, 1 << 20).is_err());
        // Timed operations cost simulated time, and a cached line hits.
        assert!(m.store(0, 0, 64, &buf).unwrap() > 0);
        assert_eq!(m.cached(64), Some(true));
        let hit = m.load(1000, 0, 64, &mut buf).unwrap();
        let miss = m.load(1000, 0, 4096, &mut buf).unwrap();
        assert!(hit < miss, "hit {hit} ns, miss {miss} ns");
        assert!(m.clwb(2000, 0, 64).unwrap() > 0);
        assert_eq!(m.cached(64), Some(false));
    }
}
