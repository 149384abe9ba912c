//! The memory-path timing model: per-CPU line fill buffers, the memory controller's
//! write-pending queues, and per DIMM an on-DIMM buffer (Optane's XPBuffer: read buffer and
//! write-combining buffer with read-modify-write), separate media read and write pipelines with
//! per-unit service times, a next-unit prefetcher, write-thread contention, NUMA factors and
//! tail events. All times are picoseconds; nothing here knows about data or persistency.
//!
//! Shape of the model (parameters in `MediaParams`):
//! - A physical address maps to DIMM `(addr / interleave) % ways` and to media unit
//!   `addr / unit`.
//! - A load that misses the CPU cache needs a fill buffer (at most `mlp` per CPU in flight). If
//!   its unit is in the DIMM buffer it completes `read_hit_ns` after the unit is there;
//!   otherwise the media read pipeline (one unit per `read_service_ns`) fetches the unit, which
//!   is there `read_miss_ns - read_hit_ns` after the read starts. Once a CPU's demand stream
//!   has crossed sequentially into `PREFETCH_CONFIRM` new units, each further crossing
//!   prefetches the next unit of the same 4 KiB page.
//! - A write-back or write-combining line leaves the core holding a fill buffer, reaches the WPQ
//!   `clwb_accept_ns` / `ntstore_accept_ns` later and is accepted (durable under ADR) once the
//!   WPQ has room. The WPQ drains in order into the DIMM: into the write-combining buffer if the
//!   DIMM has one (merging with its unit, or allocating an entry and evicting the least recently
//!   used one to the media write pipeline; a partly written victim first reads its unit, the
//!   read-modify-write), otherwise straight into the media write pipeline. A slot is free once
//!   the evicted unit's media write starts, which is how the media write rate back-pressures
//!   the WPQ and then the CPU.
//! - A media write takes `write_service_ns`, divided by the contention factor
//!   min(1, (contention_writers / w)^contention_exponent), w being the threads with a write
//!   waiting at the DIMM (mechanism 3, `contention_in_flight`; or, with it off, the threads
//!   whose writes reached the DIMM within `contention_window_ns`), by the remote
//!   factor for remote CPUs, plus `tail_ns` with `tail_probability` if it rewrites a hot unit.
//! - A demand or prefetch media read takes `read_service_ns` times the read contention factor
//!   (mechanism 1, `MediaModel::read_contention`), divided by the remote factor.
//! - Media reads and writes of one DIMM interfere (mechanism 2, `rw_interference`): each media
//!   write blocks demand reads for that fraction of its time, each media read blocks writes.
//!   Read-modify-write reads are part of the write and do not count.
//! - A CPU is remote if its socket is not `pmem_socket` (mechanism 5): its accesses pay
//!   `remote_latency_ns` each way, its writes hold their fill buffer until accepted, and the
//!   DIMM's media runs at the remote factors while it serves remote traffic.
//! - After a fence that drained non-temporal lines, the CPU's next non-temporal line leaves
//!   no earlier than `wc_fence_ns` after the fence completed (mechanism 6, `MediaModel::fenced`).

use super::params::MediaParams;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;

pub(crate) const PS: f64 = 1000.0;

/// Sequential unit crossings that confirm a stream for the prefetcher. [E]
const PREFETCH_CONFIRM: u32 = 4;
const LINES_PER_PAGE: u64 = 4096 / 64;

fn ps(ns: f64) -> u64 {
    (ns * PS).round() as u64
}

/// Where a write comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    /// A cache-line write-back (clwb, clflushopt, clflush, eviction).
    WriteBack,
    /// A write-combining buffer of non-temporal stores.
    NonTemporal,
}

/// Counters of the media model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MediaStats {
    pub line_reads: u64,
    pub buffer_hits: u64,
    pub media_reads: u64,
    pub prefetches: u64,
    pub line_writes: u64,
    pub media_writes: u64,
    pub read_modify_writes: u64,
    pub tail_events: u64,
}

#[derive(Clone, Debug)]
struct BufEntry {
    unit: u64,
    /// Lines of the unit written since it entered the buffer.
    dirty: u64,
    /// The whole unit's data is present (it was read from the media).
    valid: bool,
    /// When the unit's data is in the buffer.
    ready: u64,
    last_use: u64,
}

#[derive(Debug)]
struct Dimm {
    read_free: u64,
    write_free: u64,
    buf: Vec<BufEntry>,
    use_clock: u64,
    /// Drain-completion times of the entries in the WPQ, oldest first.
    wpq: VecDeque<u64>,
    last_drain: u64,
    /// Last write arrival per CPU (contention scope 0), `None` if never.
    writer_last: Vec<Option<u64>>,
    /// The writers of the DIMM when the latest write arrived (mechanism 3).
    writers: f64,
    /// Until when writes block demand reads, and reads block writes (`rw_interference`).
    read_block: u64,
    write_block: u64,
    /// The unit the latest read for ownership read, which serves the RFOs of its other lines.
    rfo_unit: Option<u64>,
    remote_read_at: Option<u64>,
    remote_write_at: Option<u64>,
    /// Units most recently written to the media, for tail events.
    hot: VecDeque<u64>,
}

// The clones below copy into the existing collections (`clone_from`): a search restores the
// machine after its setup on every run (`Machine::restore_from`). Each destructures every
// field, so that a field added is a compile error until it is cloned too.
impl Clone for Dimm {
    fn clone(&self) -> Self {
        let Dimm {
            read_free,
            write_free,
            buf,
            use_clock,
            wpq,
            last_drain,
            writer_last,
            writers,
            read_block,
            write_block,
            rfo_unit,
            remote_read_at,
            remote_write_at,
            hot,
        } = self;
        Dimm {
            read_free: *read_free,
            write_free: *write_free,
            buf: buf.clone(),
            use_clock: *use_clock,
            wpq: wpq.clone(),
            last_drain: *last_drain,
            writer_last: writer_last.clone(),
            writers: *writers,
            read_block: *read_block,
            write_block: *write_block,
            rfo_unit: *rfo_unit,
            remote_read_at: *remote_read_at,
            remote_write_at: *remote_write_at,
            hot: hot.clone(),
        }
    }

    fn clone_from(&mut self, src: &Self) {
        let Dimm {
            read_free,
            write_free,
            buf,
            use_clock,
            wpq,
            last_drain,
            writer_last,
            writers,
            read_block,
            write_block,
            rfo_unit,
            remote_read_at,
            remote_write_at,
            hot,
        } = self;
        *read_free = src.read_free;
        *write_free = src.write_free;
        buf.clone_from(&src.buf);
        *use_clock = src.use_clock;
        wpq.clone_from(&src.wpq);
        *last_drain = src.last_drain;
        writer_last.clone_from(&src.writer_last);
        *writers = src.writers;
        *read_block = src.read_block;
        *write_block = src.write_block;
        *rfo_unit = src.rfo_unit;
        *remote_read_at = src.remote_read_at;
        *remote_write_at = src.remote_write_at;
        hot.clone_from(&src.hot);
    }
}

/// The DIMMs of a CPU's last `mlp` lines (demand reads or writes): its share of the traffic
/// on each DIMM, for the contention mechanisms 1 and 3.
#[derive(Clone, Debug)]
struct RecentDimms {
    dimms: VecDeque<usize>,
    cap: usize,
}

impl RecentDimms {
    fn new(mlp: u32) -> Self {
        RecentDimms {
            dimms: VecDeque::with_capacity(mlp as usize),
            cap: mlp as usize,
        }
    }

    fn push(&mut self, d: usize) {
        if self.dimms.len() >= self.cap {
            self.dimms.pop_front();
        }
        self.dimms.push_back(d);
    }

    /// The fraction of the last lines that went to DIMM `d` (0 with no lines).
    fn share(&self, d: usize) -> f64 {
        let on_d = self.dimms.iter().filter(|&&x| x == d).count();
        on_d as f64 / self.dimms.len().max(1) as f64
    }
}

#[derive(Debug)]
struct CpuPath {
    /// Completion (reads) or acceptance (writes) time of each fill buffer.
    slots: Vec<u64>,
    /// Latest acceptance of this CPU's write-backs and write-combining lines.
    accept_max: u64,
    /// Last line this CPU demanded from memory, for the prefetcher.
    last_line: Option<u64>,
    /// Sequential unit crossings in a row of the demand stream.
    stream: u32,
    remote: bool,
    /// DIMMs of this CPU's last `mlp` demand reads, and when the latest was issued: its share
    /// of the read traffic on each DIMM (mechanism 1).
    recent_dimms: RecentDimms,
    last_read: Option<u64>,
    /// DIMMs of this CPU's last `mlp` written lines, and when the latest arrived (mechanism 3).
    recent_writes: RecentDimms,
    last_write: Option<u64>,
    /// A non-temporal line left since the CPU's last fence (mechanism 6).
    nt_since_fence: bool,
    /// The CPU's next non-temporal line leaves no earlier than this (mechanism 6).
    wc_ready: u64,
}

impl Clone for CpuPath {
    fn clone(&self) -> Self {
        let mut c = CpuPath {
            slots: Vec::new(),
            accept_max: 0,
            last_line: None,
            stream: 0,
            remote: false,
            recent_dimms: RecentDimms {
                dimms: VecDeque::new(),
                cap: 0,
            },
            last_read: None,
            recent_writes: RecentDimms {
                dimms: VecDeque::new(),
                cap: 0,
            },
            last_write: None,
            nt_since_fence: false,
            wc_ready: 0,
        };
        c.clone_from(self);
        c
    }

    fn clone_from(&mut self, src: &Self) {
        let CpuPath {
            slots,
            accept_max,
            last_line,
            stream,
            remote,
            recent_dimms,
            last_read,
            recent_writes,
            last_write,
            nt_since_fence,
            wc_ready,
        } = self;
        slots.clone_from(&src.slots);
        *accept_max = src.accept_max;
        *last_line = src.last_line;
        *stream = src.stream;
        *remote = src.remote;
        recent_dimms.dimms.clone_from(&src.recent_dimms.dimms);
        recent_dimms.cap = src.recent_dimms.cap;
        *last_read = src.last_read;
        recent_writes.dimms.clone_from(&src.recent_writes.dimms);
        recent_writes.cap = src.recent_writes.cap;
        *last_write = src.last_write;
        *nt_since_fence = src.nt_since_fence;
        *wc_ready = src.wc_ready;
    }
}

/// Timing parameters in picoseconds.
#[derive(Clone, Debug)]
struct Times {
    read_hit: u64,
    read_miss: u64,
    clwb_accept: u64,
    nt_accept: u64,
    read_service: u64,
    write_service: u64,
    window: u64,
    tail: u64,
    remote_latency: u64,
    wc_fence: u64,
}

/// The media and memory-path timing model. `Machine` drives it (the media bench too, through
/// the seam: overlapped loads are `Machine::load_nowait`).
#[derive(Debug)]
pub struct MediaModel {
    p: MediaParams,
    t: Times,
    lines_per_unit: u64,
    buf_entries: usize,
    hot_entries: usize,
    dimms: Vec<Dimm>,
    cpus: Vec<CpuPath>,
    rng: ChaCha8Rng,
    stats: MediaStats,
    /// What the operations since the last `take_touched` used besides the issuing CPU's own
    /// path: the DIMMs (their buffers, queues and pipelines) and whether a tail event was
    /// drawn from the shared generator (`sim` "Footprints").
    touched: Vec<usize>,
    touched_rng: bool,
}

impl Clone for MediaModel {
    fn clone(&self) -> Self {
        MediaModel {
            p: self.p.clone(),
            t: self.t.clone(),
            lines_per_unit: self.lines_per_unit,
            buf_entries: self.buf_entries,
            hot_entries: self.hot_entries,
            dimms: self.dimms.clone(),
            cpus: self.cpus.clone(),
            rng: self.rng.clone(),
            stats: self.stats,
            touched: self.touched.clone(),
            touched_rng: self.touched_rng,
        }
    }

    fn clone_from(&mut self, src: &Self) {
        let MediaModel {
            p,
            t,
            lines_per_unit,
            buf_entries,
            hot_entries,
            dimms,
            cpus,
            rng,
            stats,
            touched,
            touched_rng,
        } = self;
        p.clone_from(&src.p);
        t.clone_from(&src.t);
        *lines_per_unit = src.lines_per_unit;
        *buf_entries = src.buf_entries;
        *hot_entries = src.hot_entries;
        // Vec::clone_from clones element-wise into the existing elements (their own
        // `clone_from`), then truncates or extends.
        dimms.clone_from(&src.dimms);
        cpus.clone_from(&src.cpus);
        rng.clone_from(&src.rng);
        *stats = src.stats;
        touched.clone_from(&src.touched);
        *touched_rng = src.touched_rng;
    }
}

impl MediaModel {
    /// A model of `cpus` CPUs over the media `p` (validated by the caller); tail events draw
    /// from a generator seeded with `seed`.
    pub fn new(p: &MediaParams, cpus: usize, seed: u64) -> Self {
        let lines_per_unit = p.unit / 64;
        let wc_entries = (p.wc_buffer / p.unit) as usize;
        // Without a write-combining buffer the DIMM still holds a few units for prefetching.
        let buf_entries = wc_entries.max(8);
        let sockets = p.sockets.max(1) as usize;
        let dimm = Dimm {
            read_free: 0,
            write_free: 0,
            buf: Vec::with_capacity(buf_entries),
            use_clock: 0,
            wpq: VecDeque::new(),
            last_drain: 0,
            writer_last: vec![None; cpus],
            writers: 0.0,
            read_block: 0,
            write_block: 0,
            rfo_unit: None,
            remote_read_at: None,
            remote_write_at: None,
            hot: VecDeque::new(),
        };
        MediaModel {
            t: Times {
                read_hit: ps(p.read_hit_ns),
                read_miss: ps(p.read_miss_ns),
                clwb_accept: ps(p.clwb_accept_ns),
                nt_accept: ps(p.ntstore_accept_ns),
                read_service: ps(p.read_service_ns),
                write_service: ps(p.write_service_ns),
                window: ps(p.contention_window_ns),
                tail: ps(p.tail_ns),
                remote_latency: ps(p.remote_latency_ns),
                wc_fence: ps(p.wc_fence_ns),
            },
            lines_per_unit,
            buf_entries,
            hot_entries: (p.tail_hot_set / p.unit) as usize,
            dimms: vec![dimm; p.ways as usize],
            cpus: (0..cpus)
                .map(|c| CpuPath {
                    slots: vec![0; p.mlp as usize],
                    accept_max: 0,
                    last_line: None,
                    stream: 0,
                    // CPUs are spread evenly over the sockets; the pmem is on `pmem_socket`.
                    remote: c * sockets / cpus.max(1) != p.pmem_socket as usize,
                    recent_dimms: RecentDimms::new(p.mlp),
                    last_read: None,
                    recent_writes: RecentDimms::new(p.mlp),
                    last_write: None,
                    nt_since_fence: false,
                    wc_ready: 0,
                })
                .collect(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            stats: MediaStats::default(),
            touched: Vec::new(),
            touched_rng: false,
            p: p.clone(),
        }
    }

    fn touch(&mut self, d: usize) {
        if !self.touched.contains(&d) {
            self.touched.push(d);
        }
    }

    /// The DIMMs used since the last call, and whether the tail generator was drawn from.
    /// An emptied vector [`MediaModel::take_touched`] returned, to collect the next DIMMs in.
    pub fn recycle_touched(&mut self, dimms: Vec<usize>) {
        if self.touched.is_empty() && self.touched.capacity() < dimms.capacity() {
            self.touched = dimms;
        }
    }

    pub fn take_touched(&mut self) -> (Vec<usize>, bool) {
        (
            std::mem::take(&mut self.touched),
            std::mem::take(&mut self.touched_rng),
        )
    }

    pub fn params(&self) -> &MediaParams {
        &self.p
    }

    pub fn stats(&self) -> MediaStats {
        self.stats
    }

    fn dimm_of(&self, line: u64) -> usize {
        ((line * 64 / self.p.interleave) % u64::from(self.p.ways)) as usize
    }

    /// Waits for a free fill buffer of `cpu` from `at` on; returns (slot, time it is free).
    fn slot(&self, cpu: usize, at: u64) -> (usize, u64) {
        let slots = &self.cpus[cpu].slots;
        let (i, free) = slots
            .iter()
            .enumerate()
            .min_by_key(|&(i, &t)| (t, i))
            .map(|(i, &t)| (i, t))
            .unwrap_or((0, 0));
        (i, at.max(free))
    }

    /// When `cpu` next has a free fill buffer.
    pub fn slot_free(&self, cpu: usize) -> u64 {
        self.slot(cpu, 0).1
    }

    /// A demand read of `line` by `cpu`, requested at `at`: returns (issue, completion).
    pub fn read(&mut self, at: u64, cpu: usize, line: u64) -> (u64, u64) {
        let (slot, issue) = self.slot(cpu, at);
        let done = self.read_line(issue, cpu, line);
        self.cpus[cpu].slots[slot] = done;
        (issue, done)
    }

    fn read_line(&mut self, t: u64, cpu: usize, line: u64) -> u64 {
        self.stats.line_reads += 1;
        let remote = self.cpus[cpu].remote;
        let unit = line / self.lines_per_unit;
        let d = self.dimm_of(line);
        self.touch(d);
        if remote {
            self.dimms[d].remote_read_at = Some(t);
        }
        let path = &mut self.cpus[cpu];
        path.recent_dimms.push(d);
        path.last_read = Some(t);
        let ready = match self.lookup(d, unit) {
            Some(i) => {
                self.stats.buffer_hits += 1;
                self.dimms[d].buf[i].ready
            }
            None => self.media_read(d, unit, t, remote),
        };
        let mut done = t.max(ready) + self.t.read_hit;
        if remote {
            done += self.t.remote_latency;
        }
        // Next-unit prefetch: once the CPU's demand stream has crossed sequentially into
        // PREFETCH_CONFIRM new units in a row, each further crossing prefetches the unit after,
        // within the same 4 KiB page (prefetchers do not cross pages).
        let path = &mut self.cpus[cpu];
        if path.last_line.is_some_and(|l| l + 1 == line) {
            if line.is_multiple_of(self.lines_per_unit) {
                path.stream += 1;
            }
        } else {
            path.stream = 0;
        }
        let next = line + self.lines_per_unit;
        if line.is_multiple_of(self.lines_per_unit)
            && path.stream >= PREFETCH_CONFIRM
            && next / LINES_PER_PAGE == line / LINES_PER_PAGE
        {
            let nd = self.dimm_of(next);
            self.touch(nd);
            if self.lookup(nd, unit + 1).is_none() {
                self.stats.prefetches += 1;
                self.media_read(nd, unit + 1, t, remote);
            }
        }
        self.cpus[cpu].last_line = Some(line);
        done
    }

    fn lookup(&mut self, d: usize, unit: u64) -> Option<usize> {
        let dimm = &mut self.dimms[d];
        let i = dimm.buf.iter().position(|e| e.unit == unit)?;
        dimm.use_clock += 1;
        dimm.buf[i].last_use = dimm.use_clock;
        Some(i)
    }

    /// Read contention on DIMM `d` at `t` (mechanism 1; parameters and source figure at
    /// `MediaParams::read_contention_exponent`): r counts each CPU that read within the
    /// contention window by its share of its last `mlp` demand reads that went to `d`, so
    /// threads spread over six interleaved DIMMs count a sixth each. The factor is
    /// max(1, r / read_contention_readers)^read_contention_exponent.
    fn read_contention(&self, d: usize, t: u64) -> f64 {
        if self.p.read_contention_exponent == 0.0 {
            return 1.0;
        }
        let window = self.t.window;
        let r: f64 = self
            .cpus
            .iter()
            .filter(|c| c.last_read.is_some_and(|l| l + window >= t))
            .map(|c| c.recent_dimms.share(d))
            .sum();
        if r <= self.p.read_contention_readers {
            1.0
        } else {
            (r / self.p.read_contention_readers).powf(self.p.read_contention_exponent)
        }
    }

    /// The media side of a read for ownership of `line` by a store of `cpu` that missed the
    /// cache, at `t` (mechanism 4, `MediaParams::rfo_media`): the unit comes into the DIMM
    /// buffer through the media read pipeline unless it is there. Its latency to the CPU is
    /// `rfo_ns` (the caller's); this is the media traffic only: the unit is not kept in the
    /// buffer (the line's write-back allocates there as before, with its back-pressure).
    /// Returns when the unit has been read.
    pub fn read_for_ownership(&mut self, t: u64, cpu: usize, line: u64) -> u64 {
        if self.p.rfo_media == 0 {
            return t;
        }
        let unit = line / self.lines_per_unit;
        let d = self.dimm_of(line);
        // The DIMM's buffer, last read-for-ownership unit and read pipeline are shared state:
        // a later read of the DIMM by another CPU waits for this one.
        self.touch(d);
        if self.dimms[d].rfo_unit == Some(unit) {
            return t;
        }
        match self.lookup(d, unit) {
            Some(i) => self.dimms[d].buf[i].ready,
            None => {
                self.dimms[d].rfo_unit = Some(unit);
                let remote = self.cpus[cpu].remote;
                self.media_read_traffic(d, t, remote)
            }
        }
    }

    /// Reads `unit` from the media into the buffer; returns when its data is there.
    fn media_read(&mut self, d: usize, unit: u64, t: u64, remote: bool) -> u64 {
        let ready = self.media_read_traffic(d, t, remote);
        self.allocate(d, unit, t, 0, true, ready);
        ready
    }

    /// One unit through DIMM `d`'s media read pipeline from `t`; returns when it is read.
    fn media_read_traffic(&mut self, d: usize, t: u64, remote: bool) -> u64 {
        self.stats.media_reads += 1;
        let contention = self.read_contention(d, t);
        let service = (self.read_service(d, remote) as f64 * contention) as u64;
        let k = self.p.rw_interference;
        let dimm = &mut self.dimms[d];
        // Mechanism 2: a demand read waits while the media is blocked by writes, and blocks
        // writes for `rw_interference` of its own time.
        let start = t.max(dimm.read_free).max(dimm.read_block);
        dimm.read_free = start + service;
        if k > 0.0 {
            dimm.write_block = dimm.write_block.max(start) + (k * service as f64) as u64;
        }
        start + (self.t.read_miss - self.t.read_hit)
    }

    fn remote_factor(&self, d: usize, at: u64, write: bool) -> f64 {
        let dimm = &self.dimms[d];
        let recent = |t: Option<u64>| t.is_some_and(|t| t + self.t.window >= at);
        if recent(dimm.remote_read_at) && recent(dimm.remote_write_at) {
            self.p.remote_mixed_factor
        } else if write {
            self.p.remote_write_factor
        } else {
            self.p.remote_read_factor
        }
    }

    fn read_service(&self, d: usize, remote: bool) -> u64 {
        if !remote {
            return self.t.read_service;
        }
        let at = self.dimms[d].read_free;
        (self.t.read_service as f64 / self.remote_factor(d, at, false)) as u64
    }

    /// Puts `unit` into DIMM `d`'s buffer at `t`, evicting the least recently used entry if it
    /// is full; returns when the slot is free (the victim's media write has started).
    fn allocate(
        &mut self,
        d: usize,
        unit: u64,
        t: u64,
        dirty: u64,
        valid: bool,
        ready: u64,
    ) -> u64 {
        let mut free = t;
        if self.dimms[d].buf.len() >= self.buf_entries {
            let dimm = &self.dimms[d];
            let victim = dimm
                .buf
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_use)
                .map(|(i, _)| i)
                .unwrap_or(0);
            let v = self.dimms[d].buf.swap_remove(victim);
            if v.dirty != 0 {
                free = self.evict_to_media(d, &v, t);
            }
        }
        let dimm = &mut self.dimms[d];
        dimm.use_clock += 1;
        dimm.buf.push(BufEntry {
            unit,
            dirty,
            valid,
            ready,
            last_use: dimm.use_clock,
        });
        free
    }

    /// Writes a dirty buffer entry to the media; returns when the write starts.
    fn evict_to_media(&mut self, d: usize, v: &BufEntry, t: u64) -> u64 {
        let full = (1u64 << self.lines_per_unit) - 1;
        let mut after = t;
        if !v.valid && v.dirty & full != full {
            // Read-modify-write: the rest of the unit comes from the media first.
            self.stats.read_modify_writes += 1;
            let dimm = &mut self.dimms[d];
            let start = t.max(dimm.read_free);
            dimm.read_free = start + self.t.read_service;
            after = start + self.t.read_service;
        }
        self.media_write(d, v.unit, after)
    }

    /// One unit through the media write pipeline, not before `t`; returns its start.
    fn media_write(&mut self, d: usize, unit: u64, t: u64) -> u64 {
        self.stats.media_writes += 1;
        let start = t
            .max(self.dimms[d].write_free)
            .max(self.dimms[d].write_block);
        let mut service = self.t.write_service as f64 * self.contention(d);
        let remote = self.dimms[d]
            .remote_write_at
            .is_some_and(|w| w + self.t.window >= start);
        if remote {
            service /= self.remote_factor(d, start, true);
        }
        let mut service = service as u64;
        if self.hot_entries > 0 && self.p.tail_probability > 0.0 {
            let hot = self.dimms[d].hot.contains(&unit);
            if hot {
                self.touched_rng = true;
            }
            if hot && self.rng.random_bool(self.p.tail_probability) {
                self.stats.tail_events += 1;
                service += self.t.tail;
            }
            let ring = &mut self.dimms[d].hot;
            if ring.len() >= self.hot_entries {
                ring.pop_front();
            }
            ring.push_back(unit);
        }
        let k = self.p.rw_interference;
        let dimm = &mut self.dimms[d];
        dimm.write_free = start + service;
        if k > 0.0 {
            dimm.read_block = dimm.read_block.max(start) + (k * service as f64) as u64;
        }
        start
    }

    /// The writers of DIMM `d` when a write arrives at `at` (mechanism 3; parameter and source
    /// figure at `MediaParams::contention_scope`). Among the threads whose latest write arrived
    /// within the contention window: scope 0 counts every one that wrote to `d` in it; scope 1
    /// counts each by its share of its last `mlp` written lines that went to `d`, so threads
    /// spread over six interleaved DIMMs count a sixth each; scope 2 counts each whose last
    /// `mlp` written lines include one to `d`.
    fn write_contenders(&self, d: usize, at: u64) -> f64 {
        let window = self.t.window;
        let recent = |t: Option<u64>| t.is_some_and(|t| t + window >= at);
        match self.p.contention_scope {
            0 => self.dimms[d]
                .writer_last
                .iter()
                .filter(|&&t| recent(t))
                .count() as f64,
            scope => self
                .cpus
                .iter()
                .filter(|c| recent(c.last_write))
                .map(|c| match scope {
                    1 => c.recent_writes.share(d),
                    _ => f64::from(u8::from(c.recent_writes.share(d) > 0.0)),
                })
                .sum(),
        }
    }

    /// The slowdown of media writes on DIMM `d` from the threads writing to it:
    /// 1 / min(1, (W / w)^e), with w counted when the latest write arrived.
    fn contention(&self, d: usize) -> f64 {
        let w = self.dimms[d].writers;
        if self.p.contention_exponent == 0.0 || w <= self.p.contention_writers {
            1.0
        } else {
            (w / self.p.contention_writers).powf(self.p.contention_exponent)
        }
    }

    /// A line written by `cpu` (or by the cache, `None`, for an eviction), leaving at `at`:
    /// returns (issue, acceptance into the persistence domain).
    pub fn write(&mut self, at: u64, cpu: Option<usize>, line: u64, kind: WriteKind) -> (u64, u64) {
        self.stats.line_writes += 1;
        let (slot, issue) = match cpu {
            Some(c) => {
                let (s, t) = self.slot(c, at);
                (Some(s), t)
            }
            None => (None, at),
        };
        let remote = cpu.is_some_and(|c| self.cpus[c].remote);
        // Mechanism 6 (parameter and source figure at `MediaParams::wc_fence_ns`): a
        // non-temporal line leaves once the CPU's write-combining buffers are free again after
        // its last draining fence. The CPU keeps issuing (its clock follows `issue`); the line
        // holds its fill buffer meanwhile.
        let depart = match (cpu, kind) {
            (Some(c), WriteKind::NonTemporal) => {
                self.cpus[c].nt_since_fence = true;
                issue.max(self.cpus[c].wc_ready)
            }
            _ => issue,
        };
        let mut arrive = depart
            + match kind {
                WriteKind::WriteBack => self.t.clwb_accept,
                WriteKind::NonTemporal => self.t.nt_accept,
            };
        if remote {
            arrive += self.t.remote_latency;
        }
        let d = self.dimm_of(line);
        self.touch(d);
        let depth = self.p.wpq_depth as usize;
        if let Some(c) = cpu {
            let path = &mut self.cpus[c];
            path.recent_writes.push(d);
            path.last_write = Some(arrive);
            self.dimms[d].writer_last[c] = Some(arrive);
            if remote {
                self.dimms[d].remote_write_at = Some(arrive);
            }
            self.dimms[d].writers = self.write_contenders(d, arrive);
        }
        let dimm = &mut self.dimms[d];
        while dimm.wpq.front().is_some_and(|&t| t <= arrive) {
            dimm.wpq.pop_front();
        }
        let accept = if dimm.wpq.len() >= depth {
            arrive.max(dimm.wpq.pop_front().unwrap_or(arrive))
        } else {
            arrive
        };
        let drain_start = accept.max(dimm.last_drain);
        let drained = self.ingest(d, line, drain_start);
        let dimm = &mut self.dimms[d];
        dimm.last_drain = drained;
        dimm.wpq.push_back(drained);
        if let (Some(c), Some(s)) = (cpu, slot) {
            // Mechanism 5: a remote write crosses the socket link and its coherence round trips
            // hold the fill buffer 1 / remote_write_factor times as long as a local write's
            // (17-numa.csv: one thread writes 5.2 GB/s locally, 2.1 remotely, about 0.4x).
            let hold = if remote {
                depart + ((accept - depart) as f64 / self.p.remote_write_factor) as u64
            } else {
                accept
            };
            let path = &mut self.cpus[c];
            path.slots[s] = hold;
            path.accept_max = path.accept_max.max(accept);
        }
        (issue, accept)
    }

    /// The DIMM takes a line from the WPQ at `t`; returns when it has taken it.
    fn ingest(&mut self, d: usize, line: u64, t: u64) -> u64 {
        self.idle_drain(d, t);
        let unit = line / self.lines_per_unit;
        let bit = 1u64 << (line % self.lines_per_unit);
        if self.p.wc_buffer == 0 {
            if let Some(i) = self.lookup(d, unit) {
                // Keep a buffered copy coherent: it now holds the written data.
                self.dimms[d].buf[i].ready = t;
            }
            return self.media_write(d, unit, t);
        }
        match self.lookup(d, unit) {
            Some(i) => {
                self.dimms[d].buf[i].dirty |= bit;
                t
            }
            None => self.allocate(d, unit, t, bit, false, t),
        }
    }

    /// While its media write pipeline idles, a DIMM writes dirty buffer entries back, least
    /// recently used first, so a burst after a pause finds clean entries to replace. Catches up,
    /// at `t`, on the idle time since the pipeline last worked.
    fn idle_drain(&mut self, d: usize, t: u64) {
        loop {
            let dimm = &self.dimms[d];
            if dimm.write_free + self.t.write_service > t {
                return;
            }
            let Some(i) = dimm
                .buf
                .iter()
                .enumerate()
                .filter(|(_, e)| e.dirty != 0)
                .min_by_key(|(_, e)| e.last_use)
                .map(|(i, _)| i)
            else {
                return;
            };
            let entry = self.dimms[d].buf[i].clone();
            let start = self.dimms[d].write_free;
            self.evict_to_media(d, &entry, start);
            let e = &mut self.dimms[d].buf[i];
            e.dirty = 0;
            e.valid = true;
        }
    }

    /// When every write-back and write-combining line `cpu` has issued is accepted.
    pub fn drained(&self, cpu: usize) -> u64 {
        self.cpus[cpu].accept_max
    }

    /// A fence of `cpu` completed at `done` (mechanism 6, `MediaParams::wc_fence_ns`): if it
    /// drained non-temporal lines, the CPU's next one leaves no earlier than `wc_fence_ns`
    /// later.
    pub fn fenced(&mut self, cpu: usize, done: u64) {
        let path = &mut self.cpus[cpu];
        if std::mem::take(&mut path.nt_since_fence) {
            path.wc_ready = path.wc_ready.max(done + self.t.wc_fence);
        }
    }
}

#[cfg(test)]
mod clone_tests {
    use super::*;
    use crate::machine::params::MediaParams;

    /// `clone_from` into a model that has run (a search's spare machine) gives the source
    /// exactly, as `clone` does: every field, the collections of every DIMM and CPU included.
    #[test]
    fn clone_from_a_used_model_is_a_clone() {
        let p = MediaParams::optane_like();
        let drive = |m: &mut MediaModel, lines: std::ops::Range<u64>, cpu: usize| {
            let mut t = 0;
            for l in lines {
                let (_, done) = m.read(t, cpu, l * 7);
                let kind = if l % 3 == 0 {
                    WriteKind::NonTemporal
                } else {
                    WriteKind::WriteBack
                };
                let (_, acc) = m.write(done, Some(cpu), l * 5, kind);
                t = acc;
            }
        };
        let mut src = MediaModel::new(&p, 2, 1);
        drive(&mut src, 0..40, 0);
        let mut dst = MediaModel::new(&p, 2, 2);
        drive(&mut dst, 100..400, 1);
        assert_ne!(format!("{dst:?}"), format!("{src:?}"));
        dst.clone_from(&src);
        assert_eq!(format!("{dst:?}"), format!("{src:?}"));
        assert_eq!(format!("{:?}", src.clone()), format!("{src:?}"));
        // And the two go on alike.
        drive(&mut src, 40..60, 1);
        drive(&mut dst, 40..60, 1);
        assert_eq!(format!("{dst:?}"), format!("{src:?}"));
    }
}
