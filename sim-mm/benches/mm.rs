//! Throughput of the mm structures on one core: xarray lookups and page-table updates, bare
//! and behind their lock on the native platform (a real lock: the cost model code pays
//! natively). Medians of 7 rounds; plain `Instant`, no harness.
//!
//! Run: `cargo bench -p sim-mm --bench mm`.

use sim_core::SpinLock;
use sim_core::native::{NativePlatform, block_on};
use sim_mm::dax_entry::{DAX_PMD, dax_make_entry};
use sim_mm::pgtable::{_PAGE_DEVMAP, _PAGE_RW, PageTable, Pte};
use sim_mm::xarray::{XArray, XaState};
use std::hint::black_box;
use std::time::Instant;

const ROUNDS: usize = 7;
const OPS: u64 = 2_000_000;

/// xorshift64*: deterministic pseudo-random indices without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn median_rate(mut f: impl FnMut() -> u64) -> f64 {
    let mut rates: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            let n = f();
            n as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rates[ROUNDS / 2]
}

/// A 1 GiB file (262,144 indices): every other 2 MiB range one PMD entry, the rest PTE entries
/// on every other index.
fn file_xarray() -> XArray {
    let mut xa = XArray::new();
    for pmd in 0..512u64 {
        let base = pmd * 512;
        if pmd % 2 == 0 {
            xa.xa_store_order(base, 9, dax_make_entry(0x10_0000 + base, DAX_PMD));
        } else {
            for i in (0..512).step_by(2) {
                xa.xa_store(base + i, dax_make_entry(0x10_0000 + base + i, 0));
            }
        }
    }
    xa
}

fn indices(n: usize, span: u64) -> Vec<u64> {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    (0..n).map(|_| r.next() % span).collect()
}

fn main() {
    let xa = file_xarray();
    let idx = indices(OPS as usize, 512 * 512);
    let bare = median_rate(|| {
        let mut hits = 0u64;
        for &i in &idx {
            let mut xas = XaState::new(i);
            hits += !xa.xas_load(&mut xas).is_null() as u64;
        }
        black_box(hits);
        OPS
    });
    println!(
        "xarray xas_load, bare:            {:>6.2} M lookups/s",
        bare / 1e6
    );

    let conflicts = median_rate(|| {
        let mut n = 0u64;
        for &i in &idx {
            let mut xas = XaState::new_order(i, 9);
            n += !xa.xas_find_conflict(&mut xas).is_null() as u64;
        }
        black_box(n);
        OPS
    });
    println!(
        "xarray xas_find_conflict order 9: {:>6.2} M lookups/s",
        conflicts / 1e6
    );

    let p = NativePlatform;
    let locked = SpinLock::new(&p, "i_pages", file_xarray());
    let under_lock = median_rate(|| {
        block_on(async {
            let mut hits = 0u64;
            for &i in &idx {
                let g = locked.lock(&p).await;
                hits += !g.xa_load(i).is_null() as u64;
                drop(g);
            }
            black_box(hits);
        });
        OPS
    });
    println!(
        "xarray xa_load under xa_lock:     {:>6.2} M lookups/s",
        under_lock / 1e6
    );

    // Page-table updates: install and clear PTEs at random pages of a 1 GiB mapping.
    let base = 0x7f00_0000_0000u64;
    let pages = indices(OPS as usize, 1 << 18);
    let mut pt = PageTable::new();
    let updates = median_rate(|| {
        for (k, &pg) in pages.iter().enumerate() {
            let addr = base + (pg << 12);
            if k % 2 == 0 {
                let _ = pt.set_pte(addr, Pte::mk(0x10_0000 + pg, _PAGE_RW | _PAGE_DEVMAP));
            } else {
                black_box(pt.pte_clear(addr));
            }
        }
        OPS
    });
    println!(
        "page table set_pte/pte_clear:     {:>6.2} M updates/s",
        updates / 1e6
    );

    let locked_pt = SpinLock::new(&p, "page_table_lock", PageTable::new());
    let updates_locked = median_rate(|| {
        block_on(async {
            for &pg in &pages {
                let addr = base + (pg << 12);
                let mut g = locked_pt.lock(&p).await;
                let _ = g.set_pte(addr, Pte::mk(0x10_0000 + pg, _PAGE_RW));
                drop(g);
            }
        });
        OPS
    });
    println!(
        "page table set_pte under ptl:     {:>6.2} M updates/s",
        updates_locked / 1e6
    );
}
