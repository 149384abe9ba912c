//! get_user_pages with FOLL_PIN: the references O_DIRECT and RDMA hold on user pages.
//!
//! `pin_user_pages_fast` first walks the page tables without locks (GUP-fast): read the PMD or
//! PTE, take a reference with `folio_try_get` semantics (fails on refcount 0), then read the
//! entry again and give the reference back if it changed. That is the window in which it races
//! with `unmap_mapping_pages`: the DAX layout-breaking protocol (unmap first, then look for
//! busy pages) is correct only because of the recheck. Whatever the fast path cannot take is
//! taken by the slow path, under `mmap_lock` and the page-table lock, faulting pages in through
//! the [`FaultHandler`] (the file system's `vm_ops->fault`).
//!
//! FOLL_LONGTERM ([`pin_user_pages_longterm`]) is refused on fsdax VMAs with -EOPNOTSUPP
//! (`check_vma_flags`: `vma_is_fsdax`; every file VMA of the model is a DAX file's): a long-term
//! pin would keep the file system from ever reclaiming the blocks.
//!
//! Not modelled: GUP-fast's interrupts-off section holding off the TLB-shootdown IPI (the model
//! allows strictly more interleavings), `mm->pinned_vm`.

use crate::dax_entry::{PAGE_SIZE, PG_PMD_NR};
use crate::mm::{MmStruct, VmFault, Vma};
use crate::pgtable::PmdVal;
use crate::world::MmWorld;
use crate::{Errno, Pfn};
use sim_core::Platform;
use sim_core::platform::warn_on;
use std::future::Future;

/// `vm_ops->fault`/`huge_fault` as reached from `handle_mm_fault`: called with `mmap_lock` held
/// shared; returns the VM_FAULT code. The DAX core implements it.
pub trait FaultHandler<P: Platform> {
    fn handle_mm_fault(
        &self,
        p: &P,
        world: &MmWorld<P>,
        mm: &MmStruct<P>,
        vma: &Vma<P>,
        address: u64,
        write: bool,
    ) -> impl Future<Output = VmFault>;
}

/// GUP-fast for one page: `Some(pfn)` when pinned.
async fn gup_fast_one<P: Platform>(
    p: &P,
    world: &MmWorld<P>,
    mm: &MmStruct<P>,
    addr: u64,
    write: bool,
) -> Option<Pfn> {
    let pmd = mm.pmdp_get_lockless(p, addr).await;
    match pmd {
        PmdVal::None => None,
        PmdVal::Huge(h) => {
            if !h.present() || (write && !h.write()) || h.special() || !h.devmap() {
                return None;
            }
            let pfn = h.pfn() + ((addr / PAGE_SIZE) & (PG_PMD_NR - 1));
            if !world.memmap.try_grab_page(p, pfn, true).await {
                return None;
            }
            // The PMD changed under us: give the reference back and let the slow path decide.
            if mm.pmdp_get_lockless(p, addr).await != pmd {
                world.memmap.unpin_page(p, pfn).await;
                return None;
            }
            Some(pfn)
        }
        PmdVal::Table => {
            let pte = mm.ptep_get_lockless(p, addr).await?;
            if !pte.present() || (write && !pte.write()) || pte.special() || !pte.devmap() {
                return None;
            }
            let pfn = pte.pfn();
            if !world.memmap.pfn_valid(pfn) || !world.memmap.try_grab_page(p, pfn, true).await {
                return None;
            }
            // Recheck PMD and PTE (gup_fast_pte_range): an unmap in between undoes the pin.
            let again = mm.ptep_get_lockless(p, addr).await;
            if again != Some(pte) {
                world.memmap.unpin_page(p, pfn).await;
                return None;
            }
            Some(pfn)
        }
    }
}

enum Follow {
    Pinned(Pfn),
    NeedFault,
}

/// `follow_page_mask` + `try_grab_folio` under the page-table lock.
async fn follow_page_pin<P: Platform>(
    p: &P,
    world: &MmWorld<P>,
    mm: &MmStruct<P>,
    addr: u64,
    write: bool,
) -> Follow {
    let pt = mm.page_table.lock(p).await;
    let (pfn, special) = match pt.pmd_get(addr) {
        PmdVal::None => (None, false),
        PmdVal::Huge(h) => {
            if !h.present() || (write && !h.write()) {
                (None, false)
            } else {
                (
                    Some(h.pfn() + ((addr / PAGE_SIZE) & (PG_PMD_NR - 1))),
                    h.special(),
                )
            }
        }
        PmdVal::Table => match pt.pte_get(addr) {
            Some(pte) if pte.present() && (!write || pte.write()) => {
                (Some(pte.pfn()), pte.special())
            }
            _ => (None, false),
        },
    };
    let r = match pfn {
        None => Follow::NeedFault,
        Some(pfn) => {
            // The zero pages and anonymous DRAM pages carry no counts in the model.
            if !special && world.memmap.pfn_valid(pfn) {
                world.memmap.try_grab_page(p, pfn, false).await;
            }
            Follow::Pinned(pfn)
        }
    };
    pt.unlock().await;
    r
}

fn fault_errno(r: VmFault) -> Errno {
    if r.contains(VmFault::OOM) {
        Errno::ENOMEM
    } else if r.contains(VmFault::HWPOISON) || r.contains(VmFault::HWPOISON_LARGE) {
        Errno::EHWPOISON
    } else {
        Errno::EFAULT
    }
}

/// `pin_user_pages_fast(start, nr_pages, FOLL_PIN | (write ? FOLL_WRITE : 0))`: the pinned
/// pfns, in address order. Like Linux, a partial result is a success; an error is returned only
/// when nothing could be pinned.
pub async fn pin_user_pages_fast<P: Platform, F: FaultHandler<P>>(
    p: &P,
    world: &MmWorld<P>,
    mm: &MmStruct<P>,
    start: u64,
    nr_pages: u64,
    write: bool,
    fault: &F,
) -> Result<Vec<Pfn>, Errno> {
    let start = start & !(PAGE_SIZE - 1);
    let mut pins = Vec::with_capacity(nr_pages as usize);
    while (pins.len() as u64) < nr_pages {
        let addr = start + pins.len() as u64 * PAGE_SIZE;
        match gup_fast_one(p, world, mm, addr, write).await {
            Some(pfn) => pins.push(pfn),
            None => break,
        }
    }
    if pins.len() as u64 == nr_pages {
        return Ok(pins);
    }
    // __gup_longterm_locked -> __get_user_pages: the slow path.
    let vmas = mm.mmap_lock.read(p).await;
    let mut err = None;
    'pages: while (pins.len() as u64) < nr_pages {
        let addr = start + pins.len() as u64 * PAGE_SIZE;
        let Some(vma) = vmas.vma_lookup(addr) else {
            err = Some(Errno::EFAULT);
            break;
        };
        // check_vma_flags: a write pin needs a writable VMA.
        if write && !vma.b.writable() {
            err = Some(Errno::EFAULT);
            break;
        }
        let mut tries = 0;
        loop {
            match follow_page_pin(p, world, mm, addr, write).await {
                Follow::Pinned(pfn) => {
                    pins.push(pfn);
                    break;
                }
                Follow::NeedFault => {
                    tries += 1;
                    if warn_on(p, tries > 16, "gup-fault-livelock", || {
                        format!("GUP at {addr:#x}: 16 faults and still nothing mapped")
                    })
                    .await
                    {
                        err = Some(Errno::EFAULT);
                        break 'pages;
                    }
                    let r = fault.handle_mm_fault(p, world, mm, vma, addr, write).await;
                    if r.is_error() {
                        err = Some(fault_errno(r));
                        break 'pages;
                    }
                }
            }
        }
    }
    vmas.unlock().await;
    match err {
        Some(e) if pins.is_empty() => Err(e),
        _ => Ok(pins),
    }
}

/// `pin_user_pages_fast(start, nr_pages, FOLL_PIN | FOLL_LONGTERM | ...)`: as
/// [`pin_user_pages_fast`], but a range that touches an fsdax VMA is refused with -EOPNOTSUPP
/// before anything is pinned (GUP-fast refuses devmap pages under FOLL_LONGTERM and the slow
/// path's `check_vma_flags` refuses the VMA). A range outside every VMA is -EFAULT.
#[allow(clippy::too_many_arguments)] // the kernel's arguments, plus the model's handles
pub async fn pin_user_pages_longterm<P: Platform, F: FaultHandler<P>>(
    p: &P,
    world: &MmWorld<P>,
    mm: &MmStruct<P>,
    start: u64,
    nr_pages: u64,
    write: bool,
    fault: &F,
) -> Result<Vec<Pfn>, Errno> {
    let start = start & !(PAGE_SIZE - 1);
    let vmas = mm.mmap_lock.read(p).await;
    let mut err = None;
    for i in 0..nr_pages {
        match vmas.vma_lookup(start + i * PAGE_SIZE) {
            // vma_is_fsdax: every file mapping of the model is a DAX file's.
            Some(_) => err = Some(Errno::EOPNOTSUPP),
            None => {
                err = Some(Errno::EFAULT);
                break;
            }
        }
    }
    vmas.unlock().await;
    match err {
        Some(e) => Err(e),
        None => pin_user_pages_fast(p, world, mm, start, nr_pages, write, fault).await,
    }
}

/// `unpin_user_page`: drop one pin (the zero pages and DRAM pages carry none).
pub async fn unpin_user_page<P: Platform>(p: &P, world: &MmWorld<P>, pfn: Pfn) {
    if world.memmap.pfn_valid(pfn) {
        world.memmap.unpin_page(p, pfn).await;
    }
}

/// `unpin_user_pages`.
pub async fn unpin_user_pages<P: Platform>(p: &P, world: &MmWorld<P>, pfns: &[Pfn]) {
    for &pfn in pfns {
        unpin_user_page(p, world, pfn).await;
    }
}
