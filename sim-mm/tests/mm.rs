//! Pages, processes, VMAs, page tables, zap/unmap, mkclean, split, rmap and GUP, each in a
//! one-task simulation.

mod common;

use common::*;
use sim_core::Platform;
use sim_mm::Page;
use sim_mm::dax_entry::{PAGE_SIZE, PG_PMD_NR, PMD_SIZE};
use sim_mm::gup::{pin_user_pages_fast, unpin_user_pages};
use sim_mm::invariants::check_world;
use sim_mm::mm::{
    HwAccess, MmapFlags, VM_SHARED, VM_SYNC, VmFault, do_mmap, do_munmap, madvise_dontneed,
    pfn_mkclean_range, split_huge_pmd, unmap_mapping_pages, unmap_mapping_range,
    vmf_insert_folio_pmd, vmf_insert_huge_zero_pmd, vmf_insert_page_mkwrite, vmf_insert_zero_page,
};
use sim_mm::pgtable::{PmdVal, ZERO_PFN};
use sim_mm::rmap::rmap_walk;
use sim_mm::signal::create_process;

#[test]
fn struct_page_is_small_and_counts_are_atomic_steps() {
    assert!(std::mem::size_of::<Page>() <= 64);
    let r = run1(|p| async move {
        let w = world(&p, 1024, false);
        let pfn = BASE_PFN + 600;
        w.memmap.page_add_file_rmap(&p, pfn, 1).await;
        assert!(w.memmap.try_grab_page(&p, pfn, true).await);
        let pg = w.memmap.page(&p, pfn).await;
        assert_eq!((pg.refcount, pg.mapcount, pg.pincount), (2, 1, 1));
        assert_eq!(pg.extra_refs(), 1);
        w.memmap.page_remove_rmap(&p, pfn, 1).await;
        w.memmap.put_pages(&p, pfn, 1).await;
        w.memmap.unpin_page(&p, pfn).await;
        assert!(w.memmap.pages_idle(&p, pfn, 1).await);
        // GUP-fast cannot take a reference on an idle page.
        assert!(!w.memmap.try_grab_page(&p, pfn, true).await);
        assert!(w.memmap.pfn_valid(BASE_PFN + 1023) && !w.memmap.pfn_valid(BASE_PFN + 1024));
        // The page lock.
        w.memmap.lock_page(&p, pfn).await;
        assert!(!w.memmap.trylock_page(&p, pfn).await);
        w.memmap.unlock_page(&p, pfn).await;
        assert!(w.memmap.trylock_page(&p, pfn).await);
        w.memmap.unlock_page(&p, pfn).await;
        assert!(!w.memmap.test_set_page_hwpoison(&p, pfn).await);
        assert!(w.memmap.test_set_page_hwpoison(&p, pfn).await);
        true
    });
    assert!(r.ok());
}

#[test]
fn unpinning_an_unpinned_page_is_a_bug() {
    let r = run1(|p| async move {
        let w = world(&p, 16, false);
        w.memmap.unpin_page(&p, BASE_PFN).await;
    });
    assert_eq!(
        r.fatal_name().as_deref(),
        Some("assertion:unpin-unpinned-page")
    );
}

#[test]
fn freeing_a_mapped_block_is_a_use_after_free() {
    let r = run1(|p| async move {
        let w = world(&p, 16, false);
        w.memmap.page_add_file_rmap(&p, BASE_PFN + 3, 1).await;
        w.memmap.set_block_free(&p, BASE_PFN, 16, true).await;
    });
    assert_eq!(
        r.fatal_name().as_deref(),
        Some("assertion:block-freed-while-busy")
    );
}

#[test]
fn mmap_places_pmd_colour_and_munmap_splits() {
    let r = run1(|p| async move {
        let w = world(&p, 2048, false);
        let m = w.new_mapping(&p, 1).await;
        let (_, mm) = create_process(&p, &w, "a", &[p.current_task()]).await;
        let small = do_mmap(&p, &mm, &m, 0, 8192, SHARED_RW).await.unwrap();
        // 4 MiB from page offset 3: the address has the colour of offset 3.
        let big = do_mmap(&p, &mm, &m, 3, 4 << 20, SHARED_RW).await.unwrap();
        assert_eq!(small % PAGE_SIZE, 0);
        assert_eq!((big % PMD_SIZE) / PAGE_SIZE, 3);
        assert!(big >= small + 8192);
        let sync = do_mmap(
            &p,
            &mm,
            &m,
            2048,
            PMD_SIZE,
            MmapFlags {
                sync: true,
                ..SHARED_RW
            },
        )
        .await
        .unwrap();
        assert_eq!(sync % PMD_SIZE, 0);
        {
            let v = mm.mmap_lock.read(&p).await;
            let vma = v.vma_lookup(sync).unwrap();
            assert!(vma.b.vm_flags & VM_SYNC != 0 && vma.b.vm_flags & VM_SHARED != 0);
            assert!(v.vma_lookup(big + (4 << 20)).is_none());
            v.unlock().await;
        }
        assert_eq!(m.i_mmap.read(&p).await.len(), 3);
        // Punch a hole in the middle of the big mapping: two VMAs, two tree entries.
        do_munmap(&p, &w, &mm, big + PMD_SIZE, 1 << 20)
            .await
            .unwrap();
        let v = mm.mmap_lock.read(&p).await;
        let right = v.vma_lookup(big + PMD_SIZE + (1 << 20)).unwrap().b;
        assert_eq!(right.vm_pgoff, 3 + 768);
        assert!(v.vma_lookup(big + PMD_SIZE).is_none());
        assert_eq!(v.len(), 4);
        v.unlock().await;
        let tree = m.i_mmap.read(&p).await;
        assert_eq!(tree.len(), 4);
        assert_eq!(tree.foreach(3 + 800, 3 + 800).count(), 1);
        assert_eq!(tree.foreach(3 + 600, 3 + 600).count(), 0);
        tree.unlock().await;
        assert_eq!(
            do_munmap(&p, &w, &mm, big + 1, 10).await,
            Err(sim_mm::Errno::EINVAL)
        );
        true
    });
    assert!(r.ok());
}

#[test]
fn pte_insert_access_mkwrite_and_unmap_mapping_range() {
    let r = run1(|p| async move {
        let Fix {
            w,
            m,
            mm,
            addr: a,
            vma,
        } = fix(&p, 1024, 16 * PAGE_SIZE).await;
        let pfn = BASE_PFN + 7;
        populate(&p, &w, &m, 2, pfn, false).await;
        let va = a + 2 * PAGE_SIZE;
        assert_eq!(mm.hw_access(&p, va, false).await, HwAccess::NotPresent);
        // Read fault: read-only PTE.
        let r = vmf_insert_page_mkwrite(&p, &w, &mm, &vma, va, pfn, false).await;
        assert_eq!(r, VmFault::NOPAGE);
        assert_eq!(mm.hw_access(&p, va, true).await, HwAccess::WriteProtect);
        assert_eq!(
            mm.hw_access(&p, va + 5, false).await,
            HwAccess::Mapped { pfn, huge: false }
        );
        // pfn_mkwrite: the same pfn becomes writable and dirty, no new reference.
        vmf_insert_page_mkwrite(&p, &w, &mm, &vma, va, pfn, true).await;
        let pte = mm.ptep_get_lockless(&p, va).await.unwrap();
        assert!(pte.write() && pte.dirty() && pte.devmap());
        let pg = w.memmap.page(&p, pfn).await;
        assert_eq!((pg.refcount, pg.mapcount), (1, 1));
        // A different pfn over an existing PTE is refused with a warning.
        let r = vmf_insert_page_mkwrite(&p, &w, &mm, &vma, va, pfn + 1, true).await;
        assert_eq!(r, VmFault::SIGBUS);
        assert!(check_world(&p, &w, true).await.is_empty());
        // Unmap bytes 8K..12K of the file: the PTE goes, the counts follow.
        assert_eq!(
            unmap_mapping_range(&p, &w, &m, 2 * PAGE_SIZE, PAGE_SIZE, false).await,
            1
        );
        assert_eq!(
            mm.ptep_get_lockless(&p, va).await.map(|x| x.present()),
            Some(false)
        );
        let pg = w.memmap.page(&p, pfn).await;
        assert_eq!((pg.refcount, pg.mapcount), (0, 0));
        // The zero page: special, no counts, never writable.
        assert_eq!(
            vmf_insert_zero_page(&p, &mm, &vma, a).await,
            VmFault::NOPAGE
        );
        assert_eq!(
            mm.hw_access(&p, a, false).await,
            HwAccess::Mapped {
                pfn: ZERO_PFN,
                huge: false
            }
        );
        assert!(check_world(&p, &w, true).await.is_empty());
        assert_eq!(madvise_dontneed(&p, &w, &mm, a, PAGE_SIZE).await, Ok(1));
        true
    });
    let end = r.end.clone();
    assert_eq!(r.warnings.len(), 1, "{end:?}");
    assert_eq!(r.warnings[0].name, "insert-page-pfn-mismatch");
}

#[test]
fn huge_pmd_insert_split_and_partial_munmap() {
    let r = run1(|p| async move {
        let Fix {
            w,
            m,
            mm,
            addr: a,
            vma,
        } = fix(&p, 2048, 4 << 20).await;
        let f0 = BASE_PFN;
        let f1 = BASE_PFN + 512;
        populate(&p, &w, &m, 0, f0, true).await;
        populate(&p, &w, &m, 512, f1, true).await;
        assert_eq!(
            vmf_insert_folio_pmd(&p, &w, &mm, &vma, a + 0x1234, f0, true).await,
            VmFault::NOPAGE
        );
        assert_eq!(
            vmf_insert_folio_pmd(&p, &w, &mm, &vma, a + PMD_SIZE, f1, false).await,
            VmFault::NOPAGE
        );
        assert_eq!(
            mm.hw_access(&p, a + 5 * PAGE_SIZE, true).await,
            HwAccess::Mapped {
                pfn: f0 + 5,
                huge: true
            }
        );
        assert_eq!(
            mm.hw_access(&p, a + PMD_SIZE, true).await,
            HwAccess::WriteProtect
        );
        let pg = w.memmap.page(&p, f0 + 511).await;
        assert_eq!((pg.refcount, pg.mapcount), (1, 1));
        assert!(check_world(&p, &w, true).await.is_empty());
        // A PTE can not go where a huge PMD is.
        assert_eq!(
            vmf_insert_page_mkwrite(&p, &w, &mm, &vma, a, f0, false).await,
            VmFault::OOM
        );
        // split_huge_pmd of a DAX PMD clears it.
        assert!(split_huge_pmd(&p, &w, &mm, a + 77).await);
        assert_eq!(mm.pmdp_get_lockless(&p, a).await, PmdVal::None);
        assert!(w.memmap.pages_idle(&p, f0, PG_PMD_NR).await);
        // Refault by PTE, then a huge PMD insert fails over the table (a warning).
        vmf_insert_page_mkwrite(&p, &w, &mm, &vma, a, f0, false).await;
        vmf_insert_folio_pmd(&p, &w, &mm, &vma, a, f0, false).await;
        assert_eq!(mm.pmdp_get_lockless(&p, a).await, PmdVal::Table);
        // munmap of the first 1 MiB of the second PMD splits (clears) it.
        do_munmap(&p, &w, &mm, a + PMD_SIZE, 1 << 20).await.unwrap();
        assert_eq!(mm.pmdp_get_lockless(&p, a + PMD_SIZE).await, PmdVal::None);
        assert!(w.memmap.pages_idle(&p, f1, PG_PMD_NR).await);
        assert!(check_world(&p, &w, true).await.is_empty());
        // Unmapping everything leaves every page idle and frees the tables.
        assert!(unmap_mapping_pages(&p, &w, &m, 0, 0, true).await >= 1);
        assert!(w.memmap.pages_idle(&p, f0, 1024).await);
        // A huge zero PMD only goes where nothing is.
        assert!(!vmf_insert_huge_zero_pmd(&p, &mm, &vma, a).await);
        true
    });
    assert_eq!(r.warnings.len(), 1);
    assert_eq!(r.warnings[0].name, "insert-pmd-over-existing");
    // The WARN let the task run to its end, and the run reports it as its violation.
    match &r.end {
        sim_core::sim::RunEnd::Violation(v) => {
            assert_eq!(v.kind.name(), "assertion:insert-pmd-over-existing");
            assert_eq!(v.tasks[0].status, "finished");
        }
        e => panic!("expected the WARN as the run's violation, got {e:?}"),
    }
    assert_eq!(r.out, Some(true));
}

#[test]
fn pfn_mkclean_range_write_protects_ptes_and_pmds_of_shared_vmas() {
    let r = run1(|p| async move {
        let Fix {
            w,
            m,
            mm,
            addr: a,
            vma,
        } = fix(&p, 2048, 4 << 20).await;
        populate(&p, &w, &m, 0, BASE_PFN, true).await;
        populate(&p, &w, &m, 513, BASE_PFN + 1024 + 1, false).await;
        vmf_insert_folio_pmd(&p, &w, &mm, &vma, a, BASE_PFN, true).await;
        vmf_insert_page_mkwrite(
            &p,
            &w,
            &mm,
            &vma,
            a + 513 * PAGE_SIZE,
            BASE_PFN + 1025,
            true,
        )
        .await;
        let tree = m.i_mmap.read(&p).await;
        let v = tree.foreach(0, 0).next().unwrap().clone();
        tree.unlock().await;
        // The PTE entry: index 513, one pfn.
        assert_eq!(pfn_mkclean_range(&p, &v, BASE_PFN + 1025, 1, 513).await, 1);
        let pte = mm.ptep_get_lockless(&p, a + 513 * PAGE_SIZE).await.unwrap();
        assert!(!pte.write() && !pte.dirty());
        // Again: nothing left to clean.
        assert_eq!(pfn_mkclean_range(&p, &v, BASE_PFN + 1025, 1, 513).await, 0);
        // The PMD entry: 512 pfns at index 0.
        assert_eq!(pfn_mkclean_range(&p, &v, BASE_PFN, 512, 0).await, 1);
        match mm.pmdp_get_lockless(&p, a).await {
            PmdVal::Huge(pmd) => assert!(!pmd.write() && !pmd.dirty()),
            x => panic!("{x:?}"),
        }
        // A store now takes a write-protect fault.
        assert_eq!(mm.hw_access(&p, a, true).await, HwAccess::WriteProtect);
        true
    });
    assert!(r.ok());
}

#[test]
fn rmap_walk_finds_every_process_and_address() {
    let r = run1(|p| async move {
        let w = world(&p, 1024, false);
        let m = w.new_mapping(&p, 1).await;
        let other = w.new_mapping(&p, 2).await;
        let pfn = BASE_PFN + 40;
        populate(&p, &w, &m, 10, pfn, false).await;
        let mut expect = vec![];
        for (i, (pgoff, shared)) in [(4u64, true), (8, true), (10, false), (11, true)]
            .iter()
            .enumerate()
        {
            let (_, mm) = create_process(
                &p,
                &w,
                &format!("p{i}"),
                &[sim_core::TaskId(100 + i as u32)],
            )
            .await;
            // Something unrelated first, so that addresses differ between processes.
            for _ in 0..i {
                do_mmap(&p, &mm, &other, 0, PAGE_SIZE, SHARED_RW)
                    .await
                    .unwrap();
            }
            let flags = MmapFlags {
                shared: *shared,
                ..SHARED_RW
            };
            let a = do_mmap(&p, &mm, &m, *pgoff, 8 * PAGE_SIZE, flags)
                .await
                .unwrap();
            let vma = mm.mmap_lock.read(&p).await.vma_lookup(a).unwrap().b;
            if let Some(va) = vma.address(10, 1) {
                vmf_insert_page_mkwrite(&p, &w, &mm, &vma, va, pfn, false).await;
                expect.push((mm.id, va));
            }
        }
        // p3 maps offsets 11.. and does not cover index 10.
        assert_eq!(expect.len(), 3);
        let hits = rmap_walk(&p, &w, pfn).await;
        let mut got: Vec<_> = hits.iter().map(|h| (h.mm_id, h.address)).collect();
        got.sort();
        expect.sort();
        assert_eq!(got, expect);
        assert!(hits.iter().all(|h| h.leaf.is_some_and(|l| l.pfn() == pfn)));
        assert_eq!(w.memmap.page(&p, pfn).await.mapcount, 3);
        assert!(check_world(&p, &w, true).await.is_empty());
        // An unassociated page has no rmap.
        assert!(rmap_walk(&p, &w, pfn + 1).await.is_empty());
        true
    });
    assert!(r.ok());
}

#[test]
fn gup_pins_through_fast_and_slow_paths() {
    let r = run1(|p| async move {
        let Fix {
            w, m, mm, addr: a, ..
        } = fix(&p, 2048, 4 << 20).await;
        let ro = do_mmap(
            &p,
            &mm,
            &m,
            0,
            PAGE_SIZE,
            MmapFlags {
                write: false,
                ..SHARED_RW
            },
        )
        .await
        .unwrap();
        populate(&p, &w, &m, 0, BASE_PFN, true).await;
        populate(&p, &w, &m, 512, BASE_PFN + 1024, false).await;
        populate(&p, &w, &m, 513, BASE_PFN + 1025, false).await;
        // Nothing mapped: the slow path faults both pages in (the PMD entry as a huge PMD).
        let pins = pin_user_pages_fast(&p, &w, &mm, a + 510 * PAGE_SIZE, 4, true, &SimpleFault)
            .await
            .unwrap();
        assert_eq!(
            pins,
            vec![
                BASE_PFN + 510,
                BASE_PFN + 511,
                BASE_PFN + 1024,
                BASE_PFN + 1025
            ]
        );
        let pg = w.memmap.page(&p, BASE_PFN + 511).await;
        assert_eq!((pg.refcount, pg.mapcount, pg.pincount), (2, 1, 1));
        assert!(matches!(mm.pmdp_get_lockless(&p, a).await, PmdVal::Huge(_)));
        assert!(check_world(&p, &w, true).await.is_empty());
        // Mapped now: the fast path pins without faulting.
        let again = pin_user_pages_fast(&p, &w, &mm, a + 512 * PAGE_SIZE, 2, false, &SimpleFault)
            .await
            .unwrap();
        assert_eq!(again, vec![BASE_PFN + 1024, BASE_PFN + 1025]);
        assert_eq!(w.memmap.page(&p, BASE_PFN + 1024).await.pincount, 2);
        // Unmapping does not drop pins: the page stays busy.
        unmap_mapping_pages(&p, &w, &m, 0, 0, false).await;
        let pg = w.memmap.page(&p, BASE_PFN + 1024).await;
        assert_eq!((pg.refcount, pg.mapcount, pg.pincount), (2, 0, 2));
        assert!(check_world(&p, &w, true).await.is_empty());
        unpin_user_pages(&p, &w, &pins).await;
        unpin_user_pages(&p, &w, &again).await;
        assert!(w.memmap.pages_idle(&p, BASE_PFN, 2048).await);
        // A write pin of a read-only mapping fails; a hole past the entries too.
        assert_eq!(
            pin_user_pages_fast(&p, &w, &mm, ro, 1, true, &SimpleFault).await,
            Err(sim_mm::Errno::EFAULT)
        );
        assert_eq!(
            pin_user_pages_fast(&p, &w, &mm, a + 600 * PAGE_SIZE, 1, false, &SimpleFault).await,
            Err(sim_mm::Errno::EFAULT)
        );
        // Partial success: the first page pins, the second has no entry.
        let part = pin_user_pages_fast(&p, &w, &mm, a + 513 * PAGE_SIZE, 2, false, &SimpleFault)
            .await
            .unwrap();
        assert_eq!(part, vec![BASE_PFN + 1025]);
        unpin_user_pages(&p, &w, &part).await;
        assert!(check_world(&p, &w, true).await.is_empty());
        true
    });
    assert!(r.ok());
}

/// `dev_pagemap_mapping_shift` reads the page table without the page-table lock: a task holding
/// the ptl and then taking `tasklist_lock` cannot deadlock with memory failure's walk under
/// `tasklist_lock`. (With the ptl taken by the lockless accessors, DFS finds the ABBA cycle.)
#[test]
fn dev_pagemap_mapping_shift_takes_no_ptl_under_tasklist_lock() {
    use sim_core::Spawner;
    use sim_core::sim::{ExploreConfig, Sim, Strategy, explore};
    use sim_mm::rmap::dev_pagemap_mapping_shift;
    use std::sync::Arc;
    let model = |sim: &mut Sim| {
        let p = sim.platform();
        let w = world(&p, 1024, false);
        let mm = Arc::new(sim_mm::MmStruct::new(&p, sim_mm::MmId(1)));
        let (w2, mm2) = (w.clone(), mm.clone());
        sim.spawn("ptl-holder", move || async move {
            let pt = mm.page_table.lock(&p).await;
            let tl = w.tasks.lock(&p).await;
            tl.unlock().await;
            pt.unlock().await;
        });
        sim.spawn("memory_failure", move || async move {
            let tl = w2.tasks.lock(&p).await;
            let shift = dev_pagemap_mapping_shift(&p, &mm2, 0x20_0000).await;
            assert_eq!(shift, 0, "nothing is mapped");
            tl.unlock().await;
        });
    };
    for bound in [None, Some(2)] {
        let cfg = ExploreConfig {
            strategy: Strategy::Dfs {
                preemption_bound: bound,
            },
            ..ExploreConfig::default()
        };
        let rep = explore(&model, &cfg, &mut |_| {}).unwrap();
        assert!(rep.failure.is_none(), "{}", rep.failure.unwrap().violation);
        assert!(rep.exhausted && rep.runs > 1);
    }
}

/// A memmap snapshot shares the sections (no copy at the end of every run): a page changed
/// after it is taken must not show in it, and it serialises as the list of every page.
#[test]
fn a_memmap_snapshot_keeps_the_pages_it_saw() {
    let r = run1(|p| async move {
        let w = world(&p, 1024, false);
        let pfn = BASE_PFN + 600;
        let before = w.memmap.snapshot(&p).await;
        w.memmap.page_add_file_rmap(&p, pfn, 1).await;
        let after = w.memmap.snapshot(&p).await;
        assert_eq!(before.get(pfn).map(|pg| pg.mapcount), Some(0));
        assert_eq!(before.pages().count(), 1024);
        assert_eq!(after.get(pfn).map(|pg| pg.mapcount), Some(1));
        assert_eq!(after.get(BASE_PFN + 1024), None);
        let json = serde_json::to_value(&after).expect("serialises");
        let pages = json["pages"].as_array().expect("a list of pages");
        assert_eq!(pages.len(), 1024);
        assert_eq!(pages[600]["mapcount"], 1);
        let back: sim_mm::page::MemMapSnapshot =
            serde_json::from_value(json).expect("deserialises");
        assert!(back.pages().eq(after.pages()));
        w.memmap.page_remove_rmap(&p, pfn, 1).await;
        w.memmap.put_pages(&p, pfn, 1).await;
    });
    r.ok();
}
