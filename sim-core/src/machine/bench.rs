//! `pmsim bench media`: latencies and bandwidths of the media model, measured in simulated
//! time, side by side with the published Optane characterisation (Yang et al., FAST'20;
//! Izraelevitz et al., 2019; values as given in pm_hw.md section 1). The paper values appear
//! only in the comparison column: the model's figures come from running the model.
//!
//! - Latencies are measured the way a run sees them: one simulated task on CPU 0 of a machine
//!   (a `Sim` with `set_machine`) issues the operations through the Platform seam and reads its
//!   CPU's clock (`now_ns`) around them: dependent 64 B loads (sequential, then random over
//!   1 GiB), and persists of 64 B and 4 KiB to random 4 KiB-aligned addresses, one at a time
//!   with idle time (`sleep_ns`) between them: per line a store and a clwb (or a non-temporal
//!   store), then one sfence.
//! - Bandwidths are measured the same way, through the seam: N simulated tasks on the N CPUs of
//!   a bench machine each issue accesses of one size to random size-aligned addresses over
//!   1 GiB. Reads are non-blocking loads, one per line (`SimPlatform::pmem_load_nowait`: the
//!   CPU's clock moves by the issue cost, the line's completion is charged to the media model
//!   and to the CPU's outstanding loads, at most `mlp` lines in flight per CPU); non-temporal
//!   writes are one `pmem_ntstore` per access (`ntstore_ns` per line, the write-combining
//!   buffer leaving on a free fill buffer); write-backs are a `pmem_store` and a `clwb` per
//!   line. The scheduler runs the task whose CPU can issue first (its clock, or its next free
//!   fill buffer), so requests reach the shared media resources in simulated-time order. Each
//!   task's first half of accesses warms the model up and ends with an `mfence`; bandwidth is
//!   the bytes of the second halves over the simulated time from the earliest task's start of
//!   that half to the latest task's final `mfence` (loads completed, writes accepted).
use super::params::MediaParams;
use super::{Machine, MachineConfig, MemError};
use crate::platform::{Platform, PmemPlatform, Spawner, TaskId};
use crate::sim::{RunEnd, Sim, SimConfig, SimPlatform, peek_machine};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

/// `BenchRow::role` of a figure the parameters were derived from.
pub const CALIBRATION: &str = "calibration";
/// `BenchRow::role` of a published figure nothing was fitted to.
pub const CHECK: &str = "check";

/// Largest |model - paper| / paper, in percent, the optane-like calibration rows must stay
/// within.
pub const TOLERANCE_PCT: f64 = 15.0;

/// Access sizes of the bandwidth sweep.
pub const SIZES: &[u64] = &[64, 128, 256, 512, 1024, 2048, 4096];

/// Thread counts of the bandwidth sweep.
pub const THREADS: &[usize] = &[1, 2, 3, 4, 5, 6, 7, 8];

const REGION: u64 = 1 << 30;
const SEED: u64 = 0x5eed;
/// Bytes per bandwidth point (half warm-up).
const BW_BYTES: u64 = 1 << 20;

/// One measurement, with the paper value where there is one.
#[derive(Clone, Debug, Serialize)]
pub struct BenchRow {
    pub group: String,
    pub name: String,
    /// `ns` or `GB/s`.
    pub unit: String,
    pub model: f64,
    pub paper: Option<f64>,
    /// Where the paper value comes from.
    pub source: Option<String>,
    /// (model - paper) / paper, in percent.
    pub error_pct: Option<f64>,
    /// `calibration`: a figure the parameters were derived from (must be within the
    /// tolerance); `check`: a published figure no parameter was fitted to (shown, not gated);
    /// `model`: no published figure for this preset.
    pub role: String,
}

/// Bandwidth (GB/s) over access size (rows) and thread count (columns).
#[derive(Clone, Debug, Serialize)]
pub struct BandwidthMatrix {
    pub title: String,
    pub sizes: Vec<u64>,
    pub threads: Vec<usize>,
    pub gbps: Vec<Vec<f64>>,
}

/// The result of `run_media_bench`.
#[derive(Clone, Debug, Serialize)]
pub struct MediaBenchReport {
    pub media: String,
    /// Every parameter the model ran with.
    pub params: Vec<(String, String)>,
    pub rows: Vec<BenchRow>,
    pub matrices: Vec<BandwidthMatrix>,
    pub tolerance_pct: f64,
}

impl MediaBenchReport {
    /// The calibration rows with a paper value farther than `tolerance_pct` from the model.
    pub fn out_of_tolerance(&self) -> Vec<&BenchRow> {
        self.rows
            .iter()
            .filter(|r| r.role == CALIBRATION)
            .filter(|r| r.error_pct.is_some_and(|e| e.abs() > self.tolerance_pct))
            .collect()
    }
}

/// Runs the media bench for preset `media` with `overrides` (key, value) applied: the
/// comparison rows and the bandwidth matrices over access size and thread count.
pub fn run_media_bench(
    media: &str,
    overrides: &[(String, String)],
) -> Result<MediaBenchReport, String> {
    let mut report = run_media_comparison(media, overrides)?;
    let p = params(media, overrides)?;
    for (access, what) in [(Access::Read, "read"), (Access::NtStore, "ntstore write")] {
        let gbps = SIZES
            .iter()
            .map(|&s| {
                THREADS
                    .iter()
                    .map(|&t| bandwidth(&p, t, s, access))
                    .collect::<Result<Vec<f64>, String>>()
            })
            .collect::<Result<Vec<_>, String>>()?;
        report.matrices.push(BandwidthMatrix {
            title: format!(
                "{what} bandwidth (GB/s), {} DIMM(s), {} interleave, random accesses",
                p.ways,
                size_name(p.interleave)
            ),
            sizes: SIZES.to_vec(),
            threads: THREADS.to_vec(),
            gbps,
        });
    }
    Ok(report)
}

fn params(media: &str, overrides: &[(String, String)]) -> Result<MediaParams, String> {
    let mut p = MediaParams::preset(media)?;
    for (k, v) in overrides {
        p.set(k, v)?;
    }
    p.validate()?;
    Ok(p)
}

/// The comparison rows of `run_media_bench` only (no matrices): every row with a paper value.
pub fn run_media_comparison(
    media: &str,
    overrides: &[(String, String)],
) -> Result<MediaBenchReport, String> {
    let p = params(media, overrides)?;
    let paper = Paper::for_media(&p.preset);
    let mut rows = Vec::new();
    let mut row = |group: &str, name: &str, unit: &str, model: f64, paper: Option<Ref>| {
        let error_pct = paper.map(|r| (model - r.value) / r.value * 100.0);
        rows.push(BenchRow {
            group: group.into(),
            name: name.into(),
            unit: unit.into(),
            model,
            paper: paper.map(|r| r.value),
            source: paper.map(|r| r.source.to_string()),
            error_pct,
            role: if paper.is_some() {
                CALIBRATION
            } else {
                "model"
            }
            .into(),
        });
    };

    let lat = "latency, one thread (ns)";
    row(
        lat,
        "read, sequential 64 B",
        "ns",
        read_latency(&p, false)?,
        paper.seq_read,
    );
    row(
        lat,
        "read, random 64 B",
        "ns",
        read_latency(&p, true)?,
        paper.rand_read,
    );
    for (bytes, clwb_ref, nt_ref) in [
        (64, paper.clwb_64, paper.nt_64),
        (4096, paper.clwb_4k, paper.nt_4k),
    ] {
        let name = if bytes == 64 { "64 B" } else { "4 KiB" };
        let clwb = persist_latency(&p, bytes, false)?;
        let nt = persist_latency(&p, bytes, true)?;
        row(
            lat,
            &format!("persist {name}, store+clwb+sfence"),
            "ns",
            clwb,
            clwb_ref,
        );
        row(
            lat,
            &format!("persist {name}, ntstore+sfence"),
            "ns",
            nt,
            nt_ref,
        );
    }

    let mut one = p.clone();
    one.ways = 1;
    let g = "1 DIMM, random accesses, 4 threads (GB/s)";
    let by_size = [
        (Access::Read, "read", &paper.ni_read_size),
        (Access::NtStore, "ntstore", &paper.ni_write_size),
    ];
    for (access, what, refs) in by_size {
        for (&size, r) in SIZES.iter().zip(refs) {
            let name = format!("{what} {}", size_name(size));
            row(g, &name, "GB/s", bandwidth(&one, 4, size, access)?, *r);
        }
    }
    let g = "1 DIMM, random 256 B (GB/s)";
    let by_threads = [
        (Access::Read, "read", &paper.ni_read_threads),
        (Access::NtStore, "ntstore", &paper.ni_write_threads),
    ];
    for (access, what, refs) in by_threads {
        for (t, r) in (1..).zip(refs) {
            let name = format!("{what}, {t} thread(s)");
            row(g, &name, "GB/s", bandwidth(&one, t, 256, access)?, *r);
        }
    }
    let mut clwb_peak = 0.0f64;
    for &t in THREADS {
        clwb_peak = clwb_peak.max(bandwidth(&one, t, 256, Access::Clwb)?);
    }
    row(
        g,
        "store+clwb, best of 1-8 threads",
        "GB/s",
        clwb_peak,
        None,
    );
    let g = format!("{} DIMMs interleaved, random 256 B (GB/s)", p.ways);
    let w4 = bandwidth(&p, 4, 256, Access::NtStore)?;
    row(&g, "ntstore, 4 threads", "GB/s", w4, paper.write_4t);
    let r8 = bandwidth(&p, 8, 256, Access::Read)?;
    row(&g, "read, 8 threads", "GB/s", r8, None);
    let g = "1 DIMM, random 256 B, 24 threads (GB/s)";
    let r24 = bandwidth(&one, 24, 256, Access::Read)?;
    // The read contention exponent is derived from this figure (params.rs).
    row(g, "read, 24 threads", "GB/s", r24, paper.ni_read_24);
    let g = "1 DIMM, sequential ntstore, sfence every 64 B, 1 thread (GB/s)";
    // wc_fence_ns is derived from this figure (params.rs, mechanism 6).
    let f64b = fenced_bandwidth(&one, 64)?;
    row(
        g,
        "ntstore, sfence every 64 B",
        "GB/s",
        f64b,
        paper.fence_64,
    );

    // Checks: published figures that no parameter was derived from.
    let mut check = |group: &str, name: &str, model: f64, paper: Option<Ref>| {
        rows.push(BenchRow {
            group: group.into(),
            name: name.into(),
            unit: "GB/s".into(),
            model,
            paper: paper.map(|r| r.value),
            source: paper.map(|r| r.source.to_string()),
            error_pct: paper.map(|r| (model - r.value) / r.value * 100.0),
            role: CHECK.into(),
        });
    };
    if let (Some(w24), Some(clwb1)) = (paper.ni_write_24, paper.clwb_1t) {
        let g = "checks (not calibrated on)";
        let m = bandwidth(&one, 24, 256, Access::NtStore)?;
        check(g, "1 DIMM, ntstore 256 B, 24 threads", m, Some(w24));
        let m = bandwidth(&one, 1, 4096, Access::Clwb)?;
        check(g, "1 DIMM, store+clwb 4 KiB, 1 thread", m, Some(clwb1));
        let m = bandwidth(&p, 24, 256, Access::NtStore)?;
        check(g, "6 DIMMs, ntstore 256 B, 24 threads", m, paper.write_24t);
        // Mechanism 3 (write contention scope): 04-bandwidth_thcount_optane.
        const THREAD: &str = "Yang FAST'20, 04-bandwidth_thcount_optane";
        for (t, v) in [(8, 12.0), (12, 10.69)] {
            let m = bandwidth(&p, t, 256, Access::NtStore)?;
            let name = format!("6 DIMMs, ntstore 256 B, {t} threads");
            check(
                g,
                &name,
                m,
                Some(Ref {
                    value: v,
                    source: THREAD,
                }),
            );
        }
        // Mechanism 6 (fence cadence): one thread, sequential ntstores, an sfence after every
        // access, one DIMM (its 2.2 GB/s plateau). 13-sfence_interval.
        const FENCE: &str = "Yang FAST'20, 13-sfence_interval";
        for (size, v) in [(128, 0.65), (256, 1.2625), (512, 2.2125), (4096, 2.2375)] {
            let m = fenced_bandwidth(&one, size)?;
            let name = format!("1 DIMM, ntstore, sfence every {}", size_name(size));
            check(
                g,
                &name,
                m,
                Some(Ref {
                    value: v,
                    source: FENCE,
                }),
            );
        }
    }

    Ok(MediaBenchReport {
        media: p.preset.clone(),
        params: p
            .entries()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        rows,
        matrices: Vec::new(),
        tolerance_pct: TOLERANCE_PCT,
    })
}

fn size_name(size: u64) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

fn bench_machine(p: &MediaParams) -> Result<Machine, String> {
    Machine::new(MachineConfig {
        cpus: 1,
        pmem_size: REGION,
        media: p.clone(),
        ..MachineConfig::default()
    })
}

/// Runs `body` as the only task of a simulation, on CPU 0 of the bench machine, and returns
/// its result: the path every run's memory operations take.
fn on_cpu0<T, F, Fut>(p: &MediaParams, body: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce(SimPlatform) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, MemError>> + 'static,
{
    let mut sim = Sim::new(SimConfig {
        step_limit: u64::MAX,
        ..SimConfig::default()
    });
    sim.set_machine(bench_machine(p)?);
    // The task's result leaves the simulation through this slot (bench code, not a model).
    let out = Arc::new(std::sync::Mutex::new(None));
    let slot = out.clone();
    let plat = sim.platform();
    sim.spawn("bench", move || async move {
        let r = body(plat).await;
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    });
    if let RunEnd::Violation(v) = sim.run(|_, en| en[0]) {
        return Err(v.to_string());
    }
    drop(sim);
    let r = out.lock().unwrap_or_else(|e| e.into_inner()).take();
    match r {
        Some(r) => r.map_err(|e| e.to_string()),
        None => Err("the bench task did not finish".into()),
    }
}

/// Mean latency of 1024 dependent 64 B loads, sequential or random.
fn read_latency(p: &MediaParams, random: bool) -> Result<f64, String> {
    const N: u64 = 1024;
    on_cpu0(p, move |p| async move {
        let mut rng = ChaCha8Rng::seed_from_u64(SEED);
        let mut buf = [0u8; 8];
        let start = p.now_ns();
        for i in 0..N {
            let addr = if random {
                rng.random_range(0..REGION / 64) * 64
            } else {
                i * 64
            };
            p.pmem_load(addr, &mut buf).await?;
        }
        Ok((p.now_ns() - start) as f64 / N as f64)
    })
}

/// Mean latency to persist `bytes` at random 4 KiB-aligned addresses, from an idle machine.
fn persist_latency(p: &MediaParams, bytes: u64, nt: bool) -> Result<f64, String> {
    const REPS: u64 = 64;
    const IDLE_NS: u64 = 100_000;
    on_cpu0(p, move |p| async move {
        let mut rng = ChaCha8Rng::seed_from_u64(SEED);
        let data = [0xa5u8; 64];
        let mut total = 0;
        for _ in 0..REPS {
            p.sleep_ns(IDLE_NS).await;
            let start = p.now_ns();
            let base = rng.random_range(0..REGION / 4096) * 4096;
            for a in (base..base + bytes).step_by(64) {
                if nt {
                    p.pmem_ntstore(a, &data).await?;
                } else {
                    p.pmem_store(a, &data).await?;
                    p.clwb(a).await?;
                }
            }
            p.sfence().await?;
            total += p.now_ns() - start;
        }
        Ok(total as f64 / REPS as f64)
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Read,
    NtStore,
    /// A store that misses the cache, then clwb.
    Clwb,
    /// A cached store, no flush.
    Store,
}

/// Where each bench task leaves its result.
type Slots<T> = Arc<std::sync::Mutex<Vec<Option<Result<T, MemError>>>>>;

/// Runs `body(i, platform)` as task `i` of `cpus` tasks on a bench machine of `cpus` CPUs
/// (task `i` on CPU `i`), scheduling the task whose CPU can issue first (its clock, or later
/// when all its fill buffers are busy; ties to the lowest index), so that requests reach the
/// shared media resources in simulated-time order. Returns each task's result, in task order.
fn on_cpus<T, F, Fut>(p: &MediaParams, cpus: usize, body: F) -> Result<Vec<T>, String>
where
    T: Send + 'static,
    F: Fn(usize, SimPlatform) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<T, MemError>> + 'static,
{
    let mut sim = Sim::new(SimConfig {
        step_limit: u64::MAX,
        ..SimConfig::default()
    });
    let m = Machine::new(MachineConfig {
        cpus,
        pmem_size: REGION,
        media: p.clone(),
        seed: SEED,
        ..MachineConfig::default()
    })?;
    sim.set_machine(m);
    // Results leave the simulation through these slots (bench code, not a model).
    let out: Slots<T> = Arc::new(std::sync::Mutex::new((0..cpus).map(|_| None).collect()));
    for i in 0..cpus {
        let slot = out.clone();
        let plat = sim.platform();
        let body = body.clone();
        sim.spawn(&format!("bench{i}"), move || async move {
            let r = body(i, plat).await;
            slot.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
        });
    }
    let end = sim.run(|sim, en| {
        let issue = |t: &TaskId| {
            let cpu = t.0 as usize % cpus;
            let free = peek_machine(|m| m.fill_buffer_free(cpu)).unwrap_or(0);
            (sim.cpu_clock(cpu).max(free), t.0)
        };
        en.iter().copied().min_by_key(issue).unwrap_or(en[0])
    });
    if let RunEnd::Violation(v) = end {
        return Err(v.to_string());
    }
    drop(sim);
    let mut slots = out.lock().unwrap_or_else(|e| e.into_inner());
    slots
        .iter_mut()
        .map(|r| match r.take() {
            Some(r) => r.map_err(|e| e.to_string()),
            None => Err("a bench task did not finish".into()),
        })
        .collect()
}

/// Sustained bandwidth (GB/s) of `threads` threads doing random `size`-byte accesses.
fn bandwidth(p: &MediaParams, threads: usize, size: u64, access: Access) -> Result<f64, String> {
    let spec = Spec {
        access,
        seq: false,
        size,
        threads,
        fence_every: None,
        mix: None,
    };
    Ok(measure(p, &spec)?.0)
}

/// Bandwidth (GB/s) of one thread writing `size`-byte sequential ntstores, each followed by an
/// sfence (13-sfence_interval).
fn fenced_bandwidth(p: &MediaParams, size: u64) -> Result<f64, String> {
    let spec = Spec {
        access: Access::NtStore,
        seq: true,
        size,
        threads: 1,
        fence_every: Some(size),
        mix: None,
    };
    Ok(measure(p, &spec)?.0)
}

/// One bandwidth measurement, as `bandwidth` and `point_query` run it.
#[derive(Clone, Copy, Debug)]
struct Spec {
    access: Access,
    seq: bool,
    size: u64,
    threads: usize,
    /// An sfence after every so many bytes written by a thread.
    fence_every: Option<u64>,
    /// Reads and writes (of `access`) in this ratio.
    mix: Option<(u32, u32)>,
}

/// Runs `spec`: returns (GB/s, mean ns per access per thread).
fn measure(p: &MediaParams, spec: &Spec) -> Result<(f64, f64), String> {
    let Spec {
        access,
        seq,
        size,
        threads,
        fence_every,
        mix,
    } = *spec;
    let accesses = (BW_BYTES / size).max(64);
    let per_task = accesses.div_ceil(threads as u64);
    let warm = per_task / 2;
    // Each thread's sequential stream runs through its own slice of the region.
    let slice = (REGION / threads as u64) / 4096 * 4096;
    let spans = on_cpus(p, threads, move |t, p| async move {
        let mut rng = ChaCha8Rng::seed_from_u64(SEED + t as u64);
        let data = vec![0xa5u8; size as usize];
        let mut buf = vec![0u8; size as usize];
        let mut start = 0;
        let mut unfenced = 0u64;
        for i in 0..per_task {
            if i == warm {
                // Measure from here: every warm-up access has completed (been accepted).
                p.mfence().await?;
                start = p.now_ns();
            }
            let addr = if seq {
                t as u64 * slice + (i * size) % slice.max(size)
            } else {
                rng.random_range(0..REGION / size) * size
            };
            let this = match mix {
                Some((r, w)) if i % u64::from(r + w) < u64::from(r) => Access::Read,
                _ => access,
            };
            match this {
                Access::Read => {
                    // One load instruction per line, each a step of its own: a line that
                    // waits for a fill buffer must not reserve the media ahead of other
                    // tasks' earlier requests.
                    for (a, chunk) in (addr..).step_by(64).zip(buf.chunks_mut(64)) {
                        p.pmem_load_nowait(a, chunk).await?;
                    }
                }
                Access::NtStore => p.pmem_ntstore(addr, &data).await?,
                Access::Clwb => {
                    p.pmem_store(addr, &data).await?;
                    for a in (addr..addr + size).step_by(64) {
                        p.clwb(a).await?;
                    }
                }
                Access::Store => p.pmem_store(addr, &data).await?,
            }
            if this != Access::Read
                && let Some(n) = fence_every
            {
                unfenced += size;
                if unfenced >= n {
                    p.sfence().await?;
                    unfenced = 0;
                }
            }
        }
        // The loads have completed, the writes have been accepted into the persistence domain.
        p.mfence().await?;
        Ok((start, p.now_ns()))
    })?;
    let first = spans.iter().map(|s| s.0).min().unwrap_or(0);
    let last = spans.iter().map(|s| s.1).max().unwrap_or(0);
    let measured = per_task - warm;
    let bytes = measured * threads as u64 * size;
    let span = (last - first).max(1) as f64;
    Ok((bytes as f64 / span, span / measured as f64))
}

/// The largest thread count `point_query` accepts (the FAST'20 sweeps go to 24-48).
pub const MAX_THREADS: usize = 48;

/// What a point query's threads do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// 64 B loads, overlapped up to `mlp` per thread.
    Read,
    /// Non-temporal stores.
    NtStore,
    /// A store (missing the cache) and a clwb per line.
    Clwb,
    /// Cached stores, written back by evictions only.
    Store,
}

impl Workload {
    pub fn parse(s: &str) -> Result<Workload, String> {
        match s {
            "read" => Ok(Workload::Read),
            "ntstore" => Ok(Workload::NtStore),
            "clwb" => Ok(Workload::Clwb),
            "store" => Ok(Workload::Store),
            _ => Err(format!(
                "unknown workload `{s}`; workloads: read, ntstore, clwb, store"
            )),
        }
    }
}

/// One published-style measurement point: `pmsim bench media --workload ...`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PointQuery {
    pub workload: Workload,
    /// Sequential (each thread its own stream) or random size-aligned addresses over 1 GiB.
    pub sequential: bool,
    /// Bytes per access, a multiple of 64.
    pub size: u64,
    pub threads: usize,
    /// Interleaved DIMMs, at most the preset's `ways`.
    pub dimms: u32,
    /// An sfence after every so many bytes a thread writes.
    pub fence_every: Option<u64>,
    /// Reads : writes of `workload` (which must then be a write).
    pub mix: Option<(u32, u32)>,
    /// Every thread on a socket other than the pmem's.
    pub remote: bool,
}

/// The answer to a point query.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PointResult {
    pub query: PointQuery,
    pub media: String,
    /// Bytes of all threads over the measured simulated time.
    pub bandwidth_gbps: f64,
    /// Mean simulated time per access of one thread (measured span / accesses per thread).
    pub latency_ns: f64,
}

/// Checks a point query against the preset's limits.
pub fn check_point_query(p: &MediaParams, q: &PointQuery) -> Result<(), String> {
    if q.threads == 0 || q.threads > MAX_THREADS {
        return Err(format!(
            "--threads must be 1 to {MAX_THREADS}, not {}",
            q.threads
        ));
    }
    if q.size == 0 || !q.size.is_multiple_of(64) || q.size > REGION / 4 {
        return Err(format!(
            "--size must be a non-zero multiple of 64 bytes up to {} MiB, not {}",
            (REGION / 4) >> 20,
            q.size
        ));
    }
    if q.dimms == 0 || q.dimms > p.ways {
        return Err(format!(
            "--dimms must be 1 to {} (the {} preset has {} DIMMs), not {}",
            p.ways, p.preset, p.ways, q.dimms
        ));
    }
    if let Some(n) = q.fence_every
        && (n == 0 || !n.is_multiple_of(64))
    {
        return Err(format!(
            "--fence-every must be a non-zero multiple of 64 bytes, not {n}"
        ));
    }
    if let Some((r, w)) = q.mix {
        if r == 0 || w == 0 {
            return Err(format!("--mix {r}:{w}: both parts must be at least 1"));
        }
        if q.workload == Workload::Read {
            return Err("--mix needs a write workload (ntstore, clwb or store)".into());
        }
    }
    Ok(())
}

/// Runs one point query on preset `media` with `overrides` applied.
pub fn point_query(
    media: &str,
    overrides: &[(String, String)],
    q: &PointQuery,
) -> Result<PointResult, String> {
    let mut p = params(media, overrides)?;
    check_point_query(&p, q)?;
    p.ways = q.dimms;
    if q.remote {
        // Every CPU of the machine on socket 0, the pmem on socket `sockets`.
        p.pmem_socket = p.sockets;
    }
    p.validate()?;
    let spec = Spec {
        access: match q.workload {
            Workload::Read => Access::Read,
            Workload::NtStore => Access::NtStore,
            Workload::Clwb => Access::Clwb,
            Workload::Store => Access::Store,
        },
        seq: q.sequential,
        size: q.size,
        threads: q.threads,
        fence_every: q.fence_every,
        mix: q.mix,
    };
    let (bandwidth_gbps, latency_ns) = measure(&p, &spec)?;
    Ok(PointResult {
        query: q.clone(),
        media: p.preset.clone(),
        bandwidth_gbps,
        latency_ns,
    })
}

#[derive(Clone, Copy, Debug)]
struct Ref {
    value: f64,
    source: &'static str,
}

/// The published values for one preset (pm_hw.md section 1; DRAM from the same platform).
struct Paper {
    seq_read: Option<Ref>,
    rand_read: Option<Ref>,
    clwb_64: Option<Ref>,
    nt_64: Option<Ref>,
    clwb_4k: Option<Ref>,
    nt_4k: Option<Ref>,
    ni_read_size: [Option<Ref>; 7],
    ni_write_size: [Option<Ref>; 7],
    ni_read_threads: [Option<Ref>; 4],
    ni_write_threads: [Option<Ref>; 4],
    write_4t: Option<Ref>,
    ni_read_24: Option<Ref>,
    ni_write_24: Option<Ref>,
    write_24t: Option<Ref>,
    clwb_1t: Option<Ref>,
    fence_64: Option<Ref>,
}

impl Paper {
    fn for_media(preset: &str) -> Paper {
        let r = |value, source| Some(Ref { value, source });
        const LAT: &str = "Yang FAST'20, 02-best_case_latency";
        const FLUSH: &str = "Yang FAST'20, 12-flush_instr_lat";
        const SIZE: &str = "Yang FAST'20, 05-bandwidth_accesssize_optane_ni";
        const THREAD_NI: &str = "Yang FAST'20, 04-bandwidth_thcount_optane_ni";
        const THREAD: &str = "Yang FAST'20, 04-bandwidth_thcount_optane";
        match preset {
            "optane-like" => Paper {
                seq_read: r(169.0, LAT),
                rand_read: r(305.0, LAT),
                clwb_64: r(116.0, FLUSH),
                nt_64: r(125.0, FLUSH),
                clwb_4k: r(1774.0, FLUSH),
                nt_4k: r(1551.0, FLUSH),
                ni_read_size: [
                    r(1.7, SIZE),
                    r(3.3, SIZE),
                    r(6.5, SIZE),
                    r(6.5, SIZE),
                    r(6.5, SIZE),
                    r(6.5, SIZE),
                    r(6.5, SIZE),
                ],
                ni_write_size: [
                    r(0.55, SIZE),
                    r(1.1, SIZE),
                    r(2.2, SIZE),
                    r(2.2, SIZE),
                    r(2.2, SIZE),
                    r(2.2, SIZE),
                    r(2.2, SIZE),
                ],
                ni_read_threads: [
                    r(2.9, THREAD_NI),
                    None,
                    r(6.5, THREAD_NI),
                    r(6.5, THREAD_NI),
                ],
                ni_write_threads: [
                    r(2.2, THREAD_NI),
                    r(2.2, THREAD_NI),
                    r(2.2, THREAD_NI),
                    r(2.2, THREAD_NI),
                ],
                write_4t: r(12.5, THREAD),
                ni_read_24: r(3.9, THREAD_NI),
                ni_write_24: r(0.8, THREAD_NI),
                write_24t: r(7.5, THREAD),
                clwb_1t: r(1.2, "Yang FAST'20, 13-sfence_interval (1.1-1.3)"),
                fence_64: r(0.3375, "Yang FAST'20, 13-sfence_interval"),
            },
            "dram" => Paper {
                seq_read: r(81.0, LAT),
                rand_read: r(101.0, LAT),
                ..Paper::none()
            },
            _ => Paper::none(),
        }
    }

    fn none() -> Paper {
        Paper {
            seq_read: None,
            rand_read: None,
            clwb_64: None,
            nt_64: None,
            clwb_4k: None,
            nt_4k: None,
            ni_read_size: [None; 7],
            ni_write_size: [None; 7],
            ni_read_threads: [None; 4],
            ni_write_threads: [None; 4],
            write_4t: None,
            ni_read_24: None,
            ni_write_24: None,
            write_24t: None,
            clwb_1t: None,
            fence_64: None,
        }
    }
}

impl fmt::Display for MediaBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "media bench: {} (simulated time)", self.media)?;
        let mut group = "";
        writeln!(
            f,
            "{:<44} {:>10} {:>10} {:>8}  {:<11}  source",
            "measurement", "model", "paper", "error", "role"
        )?;
        for r in &self.rows {
            if r.group != group {
                group = &r.group;
                writeln!(f, "{group}")?;
            }
            let num = |v: f64| {
                if r.unit == "ns" {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                }
            };
            writeln!(
                f,
                "  {:<42} {:>10} {:>10} {:>8}  {:<11}  {}",
                r.name,
                num(r.model),
                r.paper.map(num).unwrap_or_else(|| "-".into()),
                r.error_pct
                    .map(|e| format!("{e:+.1}%"))
                    .unwrap_or_else(|| "-".into()),
                r.role,
                r.source.as_deref().unwrap_or("")
            )?;
        }
        for m in &self.matrices {
            writeln!(f, "\n{}", m.title)?;
            write!(f, "{:>8}", "size")?;
            for t in &m.threads {
                write!(f, " {:>6}", format!("{t}T"))?;
            }
            writeln!(f)?;
            for (s, row) in m.sizes.iter().zip(&m.gbps) {
                write!(f, "{:>8}", size_name(*s))?;
                for v in row {
                    write!(f, " {v:>6.2}")?;
                }
                writeln!(f)?;
            }
        }
        writeln!(
            f,
            "\ncalibration rows: figures the parameters were derived from (gated at {}%); \
             check rows: published figures nothing was fitted to (shown, not gated)",
            self.tolerance_pct
        )?;
        let bad = self.out_of_tolerance();
        if !bad.is_empty() {
            writeln!(
                f,
                "\n{} row(s) differ from the paper by more than {}%",
                bad.len(),
                self.tolerance_pct
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_through_the_seam_is_deterministic_and_overlaps_loads_up_to_mlp() {
        let mut p = MediaParams::preset("optane-like").expect("preset");
        p.ways = 1;
        let two = bandwidth(&p, 2, 4096, Access::Read).expect("runs");
        assert_eq!(two, bandwidth(&p, 2, 4096, Access::Read).expect("runs"));
        // One line per miss latency: what a thread reads when its loads cannot overlap.
        let serial = 64.0 / p.read_miss_ns;
        let overlapped = bandwidth(&p, 1, 64, Access::Read).expect("runs");
        assert!(
            overlapped > 4.0 * serial,
            "{overlapped} GB/s with {} fill buffers, {serial} GB/s serial",
            p.mlp
        );
        p.mlp = 1;
        let one_buffer = bandwidth(&p, 1, 64, Access::Read).expect("runs");
        assert!(
            (0.8 * serial..1.05 * serial).contains(&one_buffer),
            "{one_buffer} GB/s with one fill buffer, {serial} GB/s serial"
        );
    }
}
