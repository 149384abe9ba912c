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
//! - Bandwidths drive the `MediaModel` directly, the way an out-of-order core does (the seam's
//!   operations complete one at a time per task, so they cannot overlap): each thread issues
//!   accesses of one size to random size-aligned addresses over 1 GiB without waiting for them,
//!   limited by its fill buffers (`mlp`); reads cost one issue slot per line, non-temporal
//!   writes `ntstore_ns` per line, write-backs `store_miss_ns + flush_ns` per line. The first
//!   half of the accesses warms the model up; bandwidth is the second half's bytes over the
//!   time they took to complete (reads) or to be accepted (writes).

use super::params::MediaParams;
use super::timing::{MediaModel, PS, WriteKind};
use super::{Machine, MachineConfig, MemError};
use crate::platform::{Platform, PmemPlatform, Spawner};
use crate::sim::{RunEnd, Sim, SimConfig, SimPlatform};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

/// Largest |model - paper| / paper, in percent, the optane-like rows must stay within.
pub const TOLERANCE_PCT: f64 = 15.0;

/// Access sizes of the bandwidth sweep.
pub const SIZES: &[u64] = &[64, 128, 256, 512, 1024, 2048, 4096];

/// Thread counts of the bandwidth sweep.
pub const THREADS: &[usize] = &[1, 2, 3, 4, 5, 6, 7, 8];

const REGION: u64 = 1 << 30;
const SEED: u64 = 0x5eed;
/// Bytes per bandwidth point (half warm-up).
const BW_BYTES: u64 = 1 << 20;
/// Cost of issuing one load instruction in the bandwidth sweep.
const LOAD_ISSUE_NS: f64 = 1.0;

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
    /// The rows with a paper value farther than `tolerance_pct` from the model.
    pub fn out_of_tolerance(&self) -> Vec<&BenchRow> {
        self.rows
            .iter()
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
                    .collect()
            })
            .collect();
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
            row(g, &name, "GB/s", bandwidth(&one, 4, size, access), *r);
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
            row(g, &name, "GB/s", bandwidth(&one, t, 256, access), *r);
        }
    }
    let clwb_peak = THREADS
        .iter()
        .map(|&t| bandwidth(&one, t, 256, Access::Clwb))
        .fold(0.0, f64::max);
    row(
        g,
        "store+clwb, best of 1-8 threads",
        "GB/s",
        clwb_peak,
        None,
    );
    let g = format!("{} DIMMs interleaved, random 256 B (GB/s)", p.ways);
    let w4 = bandwidth(&p, 4, 256, Access::NtStore);
    row(&g, "ntstore, 4 threads", "GB/s", w4, paper.write_4t);
    let r8 = bandwidth(&p, 8, 256, Access::Read);
    row(&g, "read, 8 threads", "GB/s", r8, None);

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
}

/// Sustained bandwidth (GB/s) of `threads` threads doing random `size`-byte accesses.
fn bandwidth(p: &MediaParams, threads: usize, size: u64, access: Access) -> f64 {
    let mut m = MediaModel::new(p, threads, SEED);
    let mut rngs: Vec<ChaCha8Rng> = (0..threads)
        .map(|t| ChaCha8Rng::seed_from_u64(SEED + t as u64))
        .collect();
    let mut clock = vec![0u64; threads];
    let accesses = (BW_BYTES / size).max(64) as usize;
    let warm = accesses / 2;
    let issue_ps = |ns: f64| (ns * PS).round() as u64;
    let (load_issue, nt_issue, wb_issue) = (
        issue_ps(LOAD_ISSUE_NS),
        issue_ps(p.ntstore_ns),
        issue_ps(p.store_miss_ns + p.flush_ns),
    );
    // Threads interleave line by line in simulated-time order (the thread that can issue
    // first, once it has a free fill buffer, issues its next line; ties go to the lowest
    // index), so requests reach the model's resources in time order.
    let lines = size / 64;
    let mut cursor: Vec<(u64, u64, u64)> = Vec::with_capacity(threads);
    for rng in rngs.iter_mut() {
        cursor.push((rng.random_range(0..REGION / size) * size / 64, 0, 0));
    }
    let (mut started, mut completed) = (threads, 0);
    let mut warm_end = 0;
    let mut end = 0;
    while completed < accesses {
        let tid = (0..threads)
            .min_by_key(|&t| (clock[t].max(m.slot_free(t)), t))
            .unwrap_or(0);
        let (first, i, finished) = cursor[tid];
        let line = first + i;
        let (issue, done) = match access {
            Access::Read => {
                let (issue, done) = m.read(clock[tid], tid, line);
                (issue + load_issue, done)
            }
            Access::NtStore => m.write(
                clock[tid] + nt_issue,
                Some(tid),
                line,
                WriteKind::NonTemporal,
            ),
            Access::Clwb => m.write(clock[tid] + wb_issue, Some(tid), line, WriteKind::WriteBack),
        };
        clock[tid] = issue;
        let finished = finished.max(done);
        if i + 1 < lines {
            cursor[tid] = (first, i + 1, finished);
            continue;
        }
        if completed < warm {
            warm_end = warm_end.max(finished);
        }
        end = end.max(finished);
        completed += 1;
        if started < accesses {
            started += 1;
        } else {
            // This thread is done: park it at the end of time.
            clock[tid] = u64::MAX;
        }
        cursor[tid] = (rngs[tid].random_range(0..REGION / size) * size / 64, 0, 0);
    }
    let bytes = (accesses - warm) as u64 * size;
    bytes as f64 / ((end - warm_end) as f64 / PS)
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
        }
    }
}

impl fmt::Display for MediaBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "media bench: {} (simulated time)", self.media)?;
        let mut group = "";
        writeln!(
            f,
            "{:<44} {:>10} {:>10} {:>8}  source",
            "measurement", "model", "paper", "error"
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
                "  {:<42} {:>10} {:>10} {:>8}  {}",
                r.name,
                num(r.model),
                r.paper.map(num).unwrap_or_else(|| "-".into()),
                r.error_pct
                    .map(|e| format!("{e:+.1}%"))
                    .unwrap_or_else(|| "-".into()),
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
