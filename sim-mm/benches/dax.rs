//! Simulated DAX faults per second on one core, end to end: the user access (CPU page walk),
//! `handle_mm_fault` under `mmap_lock`, the file system's fault handler (`invalidate_lock`),
//! `dax_iomap_fault` with entry locking and the test iomap, the page-table update, and the
//! access again. One simulated task faults every page (or every 2 MiB range) of a file once;
//! the world is built before the clock starts. Medians of 5 rounds; plain `Instant`.
//!
//! Run: `cargo bench -p sim-mm --bench dax`.

use sim_core::Spawner;
use sim_core::sim::{Sim, SimConfig, SimPlatform};
use sim_mm::MmStruct;
use sim_mm::dax::fault::{Access, dax_user_access};
use sim_mm::dax::test_iomap::{BlockState, TestIomap};
use sim_mm::dax::{BugSet, Dax};
use sim_mm::dax_entry::{PAGE_SIZE, PG_PMD_NR};
use sim_mm::mm::{MmapFlags, do_mmap};
use sim_mm::signal::create_process;
use sim_mm::world::{MmConfig, MmWorld};
use std::sync::{Arc, Mutex};
use std::time::Instant;

type P = SimPlatform;
const ROUNDS: usize = 5;

struct Setup {
    dax: Arc<Dax<P>>,
    fs: Arc<TestIomap<P>>,
    mm: Arc<MmStruct<P>>,
    addr: u64,
}

/// A file of `pages` pages (all preallocated, or all holes), mapped shared by one process.
fn setup(sim: &mut Sim, pages: u64, prealloc: bool, huge: bool) -> Setup {
    let p = sim.platform();
    let out = Arc::new(Mutex::new(None));
    let o = out.clone();
    sim.spawn("setup", move || async move {
        let w = Arc::new(MmWorld::new(&p, 0x10_0000, pages, MmConfig::default()));
        let m = w.new_mapping(&p, 1).await;
        let dax = Arc::new(Dax::new(&p, w.clone(), BugSet::NONE));
        let mut fs = TestIomap::new(&p, pages * PAGE_SIZE, 0..pages);
        if prealloc {
            fs.inode_mut()
                .prealloc(0, pages, BlockState::Written)
                .unwrap();
        }
        let (_, mm) = create_process(&p, &w, "bench", &[sim_core::TaskId(1)]).await;
        let flags = MmapFlags {
            shared: true,
            write: true,
            sync: false,
            nohuge: !huge,
        };
        let addr = do_mmap(&p, &mm, &m, 0, pages * PAGE_SIZE, flags)
            .await
            .unwrap();
        *o.lock().unwrap() = Some(Setup {
            dax,
            fs: Arc::new(fs),
            mm,
            addr,
        });
    });
    sim.run(|_, en| en[0]);
    out.lock().unwrap().take().unwrap()
}

/// Faults per second for one round: `n` accesses `stride` pages apart.
fn round(pages: u64, prealloc: bool, huge: bool, write: bool) -> (f64, u64) {
    let mut sim = Sim::new(SimConfig::default());
    let s = setup(&mut sim, pages, prealloc, huge);
    let stride = if huge { PG_PMD_NR } else { 1 };
    let n = pages / stride;
    let p = sim.platform();
    let (dax, fs, mm, addr) = (s.dax, s.fs, s.mm, s.addr);
    sim.spawn("faulter", move || async move {
        for i in 0..n {
            let a = addr + i * stride * PAGE_SIZE;
            let r = dax_user_access(&dax, &p, &mm, a, write, &*fs).await;
            assert!(
                matches!(r, Access::Mapped { huge: h, .. } if h == huge),
                "{r:?}"
            );
        }
    });
    let steps0 = sim.steps();
    let t = Instant::now();
    sim.run(|_, en| en[0]);
    let secs = t.elapsed().as_secs_f64();
    (n as f64 / secs, (sim.steps() - steps0) / n)
}

fn median(mut f: impl FnMut() -> (f64, u64)) -> (f64, u64) {
    let mut v: Vec<(f64, u64)> = (0..ROUNDS).map(|_| f()).collect();
    v.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    v[ROUNDS / 2]
}

fn main() {
    let cases = [
        (
            "PTE read faults, preallocated blocks",
            1 << 16,
            true,
            false,
            false,
        ),
        (
            "PTE write faults, holes (allocating)",
            1 << 16,
            false,
            false,
            true,
        ),
        (
            "PMD read faults, preallocated blocks",
            1 << 18,
            true,
            true,
            false,
        ),
        (
            "PMD read faults, holes (huge zero page)",
            1 << 18,
            false,
            true,
            false,
        ),
    ];
    for (name, pages, prealloc, huge, write) in cases {
        let (rate, steps) = median(|| round(pages, prealloc, huge, write));
        println!(
            "{name:42} {:>8.1} k faults/s ({steps} scheduling points each)",
            rate / 1e3
        );
    }
}
