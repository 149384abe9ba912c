//! Memory failure: the generic path through page->mapping, the holder (notify_failure) path for
//! reflinked pages, the kill policy (AR for the consumer, AO for early-kill processes), the
//! unmap size, and the log lines.

mod common;

use common::*;
use sim_core::{Platform, TaskId};
use sim_mm::dax_entry::{PAGE_SIZE, PMD_SIZE, dax_make_entry};
use sim_mm::memory_failure::{
    DaxHolder, MF_ACTION_REQUIRED, MfAction, MfContext, NoDaxLocking, NoHolder, machine_check,
    memory_failure, mf_dax_kill_procs,
};
use sim_mm::mm::{do_mmap, vmf_insert_folio_pmd, vmf_insert_page_mkwrite};
use sim_mm::pgtable::PmdVal;
use sim_mm::signal::{
    SiCode, SigInfo, Signal, create_process, dequeue_signal, fatal_signal_pending, send_sigkill,
    set_mce_kill, signal_pending,
};
use sim_mm::world::{AddressSpace, MmWorld};
use sim_mm::{Errno, MmStruct, Pfn};
use std::sync::Arc;

/// Map `len` bytes of `m` from `pgoff` in `mm` and fault `index` in (a PMD if `pmd`).
struct Map {
    pgoff: u64,
    len: u64,
    index: u64,
    pfn: Pfn,
    pmd: bool,
}

impl Map {
    fn new(pgoff: u64, len: u64, index: u64, pfn: Pfn, pmd: bool) -> Map {
        Map {
            pgoff,
            len,
            index,
            pfn,
            pmd,
        }
    }
}

async fn map_and_fault(
    p: &P,
    w: &MmWorld<P>,
    mm: &Arc<MmStruct<P>>,
    m: &Arc<AddressSpace<P>>,
    x: Map,
) -> u64 {
    let Map {
        pgoff,
        len,
        index,
        pfn,
        pmd,
    } = x;
    let a = do_mmap(p, mm, m, pgoff, len, SHARED_RW).await.unwrap();
    let vma = mm.mmap_lock.read(p).await.vma_lookup(a).unwrap().b;
    let va = vma.address(index, 1).unwrap();
    if pmd {
        vmf_insert_folio_pmd(p, w, mm, &vma, va, pfn, false).await;
    } else {
        vmf_insert_page_mkwrite(p, w, mm, &vma, va, pfn, false).await;
    }
    va
}

fn pending(sigs: &[SigInfo]) -> Vec<(Signal, SiCode, u8)> {
    sigs.iter().map(|s| (s.signo, s.code, s.addr_lsb)).collect()
}

async fn pending_of(p: &P, w: &MmWorld<P>, t: TaskId) -> Vec<SigInfo> {
    let tl = w.tasks.lock(p).await;
    let v = tl.threads[&t].pending.clone();
    tl.unlock().await;
    v
}

#[test]
fn machine_check_signals_the_consumer_and_unmaps_everywhere() {
    let r = run1(|p| async move {
        let w = world(&p, 1024, false);
        let m = w.new_mapping(&p, 1).await;
        let pfn = BASE_PFN + 9;
        populate(&p, &w, &m, 3, pfn, false).await;
        let me = p.current_task();
        let (_, a) = create_process(&p, &w, "consumer", &[me]).await;
        let (_, b) = create_process(&p, &w, "bystander", &[TaskId(50)]).await;
        let va = map_and_fault(&p, &w, &a, &m, Map::new(0, 8 * PAGE_SIZE, 3, pfn, false)).await;
        map_and_fault(&p, &w, &b, &m, Map::new(2, 8 * PAGE_SIZE, 3, pfn, false)).await;
        assert_eq!(w.memmap.page(&p, pfn).await.mapcount, 2);

        let rep = machine_check(&p, &w, pfn, &NoHolder, &NoDaxLocking).await;
        assert_eq!((rep.rc, rep.action), (Ok(()), Some(MfAction::Recovered)));
        let pg = w.memmap.page(&p, pfn).await;
        assert!(pg.hwpoison());
        assert_eq!(
            (pg.mapcount, pg.refcount),
            (0, 0),
            "unmapped in both processes"
        );
        let sigs = pending_of(&p, &w, me).await;
        assert_eq!(
            pending(&sigs),
            vec![(Signal::SIGBUS, SiCode::BusMceerrAr, 12)]
        );
        assert_eq!(sigs[0].addr, va);
        assert!(pending_of(&p, &w, TaskId(50)).await.is_empty(), "late kill");
        let log = w.dmesg(&p).await;
        assert!(
            log.iter()
                .any(|l| l.contains("Sending SIGBUS to consumer:")),
            "{log:?}"
        );
        assert!(
            log.iter()
                .any(|l| l.ends_with("recovery action for dax page: Recovered"))
        );
        // The runner takes the signal on return to user space.
        let s = dequeue_signal(&p, &w, me).await.unwrap();
        assert_eq!(s.code, SiCode::BusMceerrAr);
        assert!(!signal_pending(&p, &w, me).await);
        true
    });
    assert!(r.ok());
}

#[test]
fn scrub_with_early_kill_sends_ao_with_the_pmd_size() {
    let r = run1(|p| async move {
        let w = world(&p, 2048, true);
        let m = w.new_mapping(&p, 1).await;
        populate(&p, &w, &m, 0, BASE_PFN, true).await;
        let (_, a) = create_process(&p, &w, "huge", &[TaskId(60)]).await;
        let (_, b) = create_process(&p, &w, "small", &[TaskId(61)]).await;
        let va = map_and_fault(&p, &w, &a, &m, Map::new(0, PMD_SIZE, 7, BASE_PFN, true)).await;
        map_and_fault(
            &p,
            &w,
            &b,
            &m,
            Map::new(0, PMD_SIZE, 7, BASE_PFN + 7, false),
        )
        .await;
        // A scrub found the error: no consumer.
        let ctx = MfContext { current: None };
        let rep = memory_failure(&p, &w, BASE_PFN + 7, 0, &ctx, &NoHolder, &NoDaxLocking).await;
        assert_eq!(rep.rc, Ok(()));
        let sa = pending_of(&p, &w, TaskId(60)).await;
        let sb = pending_of(&p, &w, TaskId(61)).await;
        assert_eq!(
            pending(&sa),
            vec![(Signal::SIGBUS, SiCode::BusMceerrAo, 21)]
        );
        assert_eq!(sa[0].addr, va);
        assert_eq!(
            pending(&sb),
            vec![(Signal::SIGBUS, SiCode::BusMceerrAo, 12)]
        );
        // The unmap covered the largest size any victim used: the whole PMD, in both.
        assert_eq!(a.pmdp_get_lockless(&p, va).await, PmdVal::None);
        assert!(w.memmap.pages_idle(&p, BASE_PFN, 512).await);
        true
    });
    assert!(r.ok());
}

#[test]
fn a_shared_page_without_holder_fails_and_the_consumer_is_killed() {
    let r = run1(|p| async move {
        let w = world(&p, 64, false);
        let pfn = BASE_PFN + 1;
        w.memmap
            .update(&p, pfn, 1, |_, pg| {
                pg.mapping = 0;
                pg.share = 2;
            })
            .await;
        let me = p.current_task();
        create_process(&p, &w, "consumer", &[me]).await;
        let rep = machine_check(&p, &w, pfn, &NoHolder, &NoDaxLocking).await;
        assert_eq!(rep.rc, Err(Errno::EBUSY));
        assert_eq!(rep.action, Some(MfAction::Failed));
        let sigs = pending_of(&p, &w, me).await;
        assert_eq!(pending(&sigs), vec![(Signal::SIGBUS, SiCode::Kernel, 0)]);
        assert!(
            w.dmesg(&p)
                .await
                .iter()
                .any(|l| l.ends_with("dax page: Failed"))
        );
        // Outside the memmap.
        let rep = memory_failure(
            &p,
            &w,
            5,
            MF_ACTION_REQUIRED,
            &MfContext::default(),
            &NoHolder,
            &NoDaxLocking,
        )
        .await;
        assert_eq!(rep.rc, Err(Errno::ENXIO));
        true
    });
    assert!(r.ok());
}

/// A file system whose rmap says the failed block is shared by two files (reflink).
struct ReflinkHolder {
    owners: Vec<(Arc<AddressSpace<P>>, u64)>,
}

impl DaxHolder<P> for ReflinkHolder {
    async fn notify_failure(
        &self,
        p: &P,
        w: &MmWorld<P>,
        offset: u64,
        len: u64,
        mf_flags: u32,
        ctx: &MfContext,
    ) -> Result<(), Errno> {
        assert_eq!((offset, len), (3 * PAGE_SIZE, PAGE_SIZE));
        for (m, index) in &self.owners {
            mf_dax_kill_procs(p, w, m, *index, 1, mf_flags, ctx, &NoDaxLocking).await?;
        }
        Ok(())
    }
}

#[test]
fn notify_failure_reaches_every_owner_of_a_reflinked_page() {
    let r = run1(|p| async move {
        let w = world(&p, 64, false);
        let m1 = w.new_mapping(&p, 1).await;
        let m2 = w.new_mapping(&p, 2).await;
        let pfn = BASE_PFN + 3;
        for (m, index) in [(&m1, 4u64), (&m2, 9)] {
            let mut xa = m.i_pages.lock(&p).await;
            xa.xa_store(index, dax_make_entry(pfn, 0));
            xa.nrpages += 1;
            xa.unlock().await;
        }
        w.memmap.update(&p, pfn, 1, |_, pg| pg.share = 2).await;
        let me = p.current_task();
        let (_, a) = create_process(&p, &w, "one", &[me]).await;
        let (_, b) = create_process(&p, &w, "two", &[TaskId(70), TaskId(71)]).await;
        set_mce_kill(&p, &w, TaskId(71), true).await;
        map_and_fault(&p, &w, &a, &m1, Map::new(0, 16 * PAGE_SIZE, 4, pfn, false)).await;
        map_and_fault(&p, &w, &b, &m2, Map::new(0, 16 * PAGE_SIZE, 9, pfn, false)).await;
        let holder = ReflinkHolder {
            owners: vec![(m1.clone(), 4), (m2.clone(), 9)],
        };
        let rep = machine_check(&p, &w, pfn, &holder, &NoDaxLocking).await;
        assert_eq!(rep.action, Some(MfAction::Recovered));
        assert_eq!(
            pending(&pending_of(&p, &w, me).await),
            vec![(Signal::SIGBUS, SiCode::BusMceerrAr, 12)]
        );
        // The process's early-kill thread gets the AO, not the leader.
        assert!(pending_of(&p, &w, TaskId(70)).await.is_empty());
        assert_eq!(
            pending(&pending_of(&p, &w, TaskId(71)).await),
            vec![(Signal::SIGBUS, SiCode::BusMceerrAo, 12)]
        );
        let pg = w.memmap.page(&p, pfn).await;
        assert!(pg.hwpoison());
        assert_eq!(pg.mapcount, 0);
        true
    });
    assert!(r.ok());
}

#[test]
fn sigkill_stops_every_thread_and_comes_first() {
    let r = run1(|p| async move {
        let w = world(&p, 16, false);
        create_process(&p, &w, "victim", &[TaskId(80), TaskId(81)]).await;
        sim_mm::signal::send_sig_mceerr(&p, &w, SiCode::BusMceerrAo, 0x1000, 12, TaskId(81)).await;
        assert!(!fatal_signal_pending(&p, &w, TaskId(81)).await);
        assert!(send_sigkill(&p, &w, TaskId(80)).await);
        assert!(fatal_signal_pending(&p, &w, TaskId(80)).await);
        let s = dequeue_signal(&p, &w, TaskId(81)).await.unwrap();
        assert_eq!(s.signo, Signal::SIGKILL);
        let s = dequeue_signal(&p, &w, TaskId(81)).await.unwrap();
        assert_eq!(s.signo, Signal::SIGBUS);
        assert!(dequeue_signal(&p, &w, TaskId(81)).await.is_none());
        assert!(!send_sigkill(&p, &w, TaskId(99)).await);
        true
    });
    assert!(r.ok());
}
