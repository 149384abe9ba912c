//! Helpers shared by the integration tests: run async model code in a one-task simulation, and
//! a small fixture (a pmem memmap, one file, processes mapping it, a DAX-like fault handler).
#![allow(dead_code)]

use sim_core::Spawner;
use sim_core::TaskId;
use sim_core::platform::Assertion;
use sim_core::sim::{RunEnd, Sim, SimConfig, SimPlatform};
use sim_mm::dax_entry::{
    DAX_PMD, PG_PMD_NR, dax_entry_nr_pfns, dax_is_empty_entry, dax_is_zero_entry, dax_make_entry,
    dax_to_pfn,
};
use sim_mm::gup::FaultHandler;
use sim_mm::mm::{
    MmapFlags, VmFault, Vma, VmaBounds, do_mmap, vmf_insert_folio_pmd, vmf_insert_page_mkwrite,
};
use sim_mm::signal::create_process;
use sim_mm::world::{AddressSpace, MmConfig, MmWorld};
use sim_mm::{MmStruct, Pfn};
use std::future::Future;
use std::sync::{Arc, Mutex};

pub type P = SimPlatform;
pub const BASE_PFN: Pfn = 0x10_0000;

/// What a one-task run produced.
pub struct Run1<T> {
    pub end: RunEnd,
    pub warnings: Vec<Assertion>,
    pub out: Option<T>,
}

impl<T> Run1<T> {
    /// The run finished without any report; its result.
    pub fn ok(self) -> T {
        assert_eq!(self.end, RunEnd::Done, "run did not finish cleanly");
        assert!(self.warnings.is_empty(), "warnings: {:?}", self.warnings);
        self.out.expect("task result")
    }
    /// The name of the fatal assertion that ended the run.
    pub fn fatal_name(&self) -> Option<String> {
        match &self.end {
            RunEnd::Violation(v) => Some(v.kind.name()),
            _ => None,
        }
    }
}

/// Run `f` as the only task of a fresh simulation.
pub fn run1<T, F, Fut>(f: F) -> Run1<T>
where
    T: Send + 'static,
    F: FnOnce(P) -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let mut sim = Sim::new(SimConfig::default());
    let p = sim.platform();
    let out = Arc::new(Mutex::new(None));
    let o = out.clone();
    sim.spawn("t0", move || async move {
        let r = f(p).await;
        *o.lock().unwrap() = Some(r);
    });
    let end = sim.run(|_, en| en[0]);
    let warnings = sim.warnings().into_iter().map(|(_, _, a)| a).collect();
    drop(sim);
    let out = out.lock().unwrap().take();
    Run1 { end, warnings, out }
}

/// A world with `nr` pmem pages from [`BASE_PFN`].
pub fn world(p: &P, nr: u64, early_kill: bool) -> Arc<MmWorld<P>> {
    Arc::new(MmWorld::new(
        p,
        BASE_PFN,
        nr,
        MmConfig {
            memory_failure_early_kill: early_kill,
        },
    ))
}

/// Give `mapping` a block-backed DAX entry at `index` for `pfn` (order 0 or 9) and associate
/// its pages, as `dax_insert_entry` would.
pub async fn populate(p: &P, w: &MmWorld<P>, m: &AddressSpace<P>, index: u64, pfn: Pfn, pmd: bool) {
    let e = dax_make_entry(pfn, if pmd { DAX_PMD } else { 0 });
    let order = if pmd { 9 } else { 0 };
    let mut xa = m.i_pages.lock(p).await;
    xa.xa_store_order(index, order, e);
    xa.nrpages += 1 << order;
    xa.unlock().await;
    let first = index & !((1u64 << order) - 1);
    let id = m.id.0;
    w.memmap
        .update(p, pfn, dax_entry_nr_pfns(e), |f, pg| {
            pg.mapping = id;
            pg.index = first + (f - pfn);
        })
        .await;
}

/// A DAX-like fault handler: maps the block entry covering the faulting index (a PMD when the
/// entry is a PMD entry and the VMA allows it), SIGBUS when there is none.
pub struct SimpleFault;

impl FaultHandler<P> for SimpleFault {
    async fn handle_mm_fault(
        &self,
        p: &P,
        world: &MmWorld<P>,
        mm: &MmStruct<P>,
        vma: &Vma<P>,
        address: u64,
        write: bool,
    ) -> VmFault {
        let index = vma.b.linear_page_index(address);
        let xa = vma.vm_file.i_pages.lock(p).await;
        let item = xa.lookup(index);
        xa.unlock().await;
        let Some(it) = item else {
            return VmFault::SIGBUS;
        };
        let e = it.entry;
        if !e.is_value() || dax_is_zero_entry(e) || dax_is_empty_entry(e) {
            return VmFault::SIGBUS;
        }
        if it.order == 9 && vma.b.huge_allowed() {
            let r = vmf_insert_folio_pmd(p, world, mm, &vma.b, address, dax_to_pfn(e), write).await;
            if r != VmFault::FALLBACK {
                return r;
            }
        }
        let pfn = dax_to_pfn(e) + (index - it.index) % PG_PMD_NR;
        vmf_insert_page_mkwrite(p, world, mm, &vma.b, address, pfn, write).await
    }
}

pub fn t(i: u32) -> TaskId {
    TaskId(i)
}

/// A world, one file (ino 1) and one process (the current task) mapping `len` bytes of it from
/// offset 0, shared and writable.
pub struct Fix {
    pub w: Arc<MmWorld<P>>,
    pub m: Arc<AddressSpace<P>>,
    pub mm: Arc<MmStruct<P>>,
    pub addr: u64,
    pub vma: VmaBounds,
}

pub const SHARED_RW: MmapFlags = MmapFlags {
    shared: true,
    sync: false,
    write: true,
    nohuge: false,
};

pub async fn fix(p: &P, pages: u64, len: u64) -> Fix {
    use sim_core::Platform;
    let w = world(p, pages, false);
    let m = w.new_mapping(p, 1).await;
    let (_, mm) = create_process(p, &w, "a", &[p.current_task()]).await;
    let addr = do_mmap(p, &mm, &m, 0, len, SHARED_RW).await.unwrap();
    let vma = mm.mmap_lock.read(p).await.vma_lookup(addr).unwrap().b;
    Fix {
        w,
        m,
        mm,
        addr,
        vma,
    }
}
