//! Writeback of dirty DAX entries: fsync and msync on a DAX file (research/linux_dax.md
//! section 5).
//!
//! Dirtiness lives in the xarray marks, not in the entries: a write fault sets
//! `PAGECACHE_TAG_DIRTY` on its entry (`dax_insert_entry`, `dax_insert_pfn_mkwrite`).
//! [`dax_writeback_mapping_range`] first tags every dirty entry of the range `TOWRITE`
//! ([`tag_pages_for_writeback`]), so that entries dirtied after the sync started cannot make it
//! run forever, then hands each tagged entry to [`dax_writeback_one`], which:
//!
//! 1. locks the entry (faults on it now wait) and clears `TOWRITE` under the i_pages lock;
//! 2. write-protects and cleans every PTE and PMD mapping the entry's pages, through the
//!    mapping's i_mmap tree (`pfn_mkclean_range`), so that the next store through any of them
//!    faults, waits for the entry lock, and sets `DIRTY` again;
//! 3. flushes the CPU caches over the entry's pages (`dax_flush`: one `clwb` per line, when the
//!    device has `DAXDEV_WRITE_CACHE`);
//! 4. stores the entry back unlocked, clears `DIRTY`, wakes the next waiter.
//!
//! **Invariant** (the order of 2, 3 and 4, all under the entry lock): write-protect, then flush,
//! then clear `DIRTY`. A store that lands after the write-protect faults and blocks on the entry
//! lock; one that landed before is covered by the flush; so when `DIRTY` is clear, nothing
//! written through a mapping before the write-protect is left in a CPU cache. Clearing `DIRTY`
//! before the flush, or flushing before the write-protect, loses stores (and leaving a PMD
//! writable loses every later store through it: bug mode `pmd-writeback-no-wrprotect`).
//!
//! The final barrier of an fsync (the file system's cache-flush request, `REQ_PREFLUSH`, which
//! the pmem driver turns into a fence) is the caller's: a file system calls `sfence` after
//! [`dax_writeback_mapping_range`] returns.

use super::entry::{
    XaGuard, dax_lock_entry, dax_wake_entry, get_next_unlocked_entry, put_unlocked_entry,
};
use super::{Dax, DaxBug, Release};
use crate::dax_entry::{
    PAGE_SHIFT, PAGE_SIZE, dax_entry_order, dax_is_empty_entry, dax_is_locked, dax_is_zero_entry,
    dax_to_pfn,
};
use crate::mm::pfn_mkclean_range_with;
use crate::world::AddressSpace;
use crate::xarray::{PAGECACHE_TAG_DIRTY, PAGECACHE_TAG_TOWRITE, XaEntry, XaOps, XaState};
use crate::{Errno, Pfn};
use sim_core::platform::warn_on;
use sim_core::{Platform, PmemPlatform, WakeMode};

/// `XA_CHECK_SCHED`: loops over the xarray drop the i_pages lock every this many entries.
pub const XA_CHECK_SCHED: u64 = 4096;

/// Bytes per CPU cache line (`boot_cpu_data.x86_clflush_size`).
pub const CACHE_LINE: u64 = 64;

/// `struct dax_device` as writeback sees it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DaxDevice {
    /// The pfn of the device's first page: device byte offset 0, where the machine model's
    /// pmem begins.
    pub base_pfn: Pfn,
    /// `DAXDEV_WRITE_CACHE`: stores sit in CPU caches until flushed (ADR platforms). Off, as on
    /// eADR platforms, `dax_flush` does nothing.
    pub write_cache: bool,
}

impl DaxDevice {
    /// The machine-model address (device offset) of the first byte of `pfn`.
    pub fn pfn_to_addr(&self, pfn: Pfn) -> u64 {
        (pfn - self.base_pfn) << PAGE_SHIFT
    }
}

/// `enum writeback_sync_modes`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WbSyncMode {
    /// `WB_SYNC_NONE`: background writeback (a no-op for DAX).
    None,
    /// `WB_SYNC_ALL`: data integrity (fsync, msync(MS_SYNC), sync).
    All,
}

/// `struct writeback_control`: the byte range `range_start ..= range_end` and the mode.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct WritebackControl {
    pub range_start: u64,
    pub range_end: u64,
    pub sync_mode: WbSyncMode,
}

impl WritebackControl {
    /// `WB_SYNC_ALL` over the whole file (`LLONG_MAX` end), as `vfs_fsync` asks.
    pub fn fsync_all() -> WritebackControl {
        WritebackControl {
            range_start: 0,
            range_end: i64::MAX as u64,
            sync_mode: WbSyncMode::All,
        }
    }
}

/// `dax_flush(dax_dev, kaddr, size)` over the `nr` pages from `pfn`: `arch_wb_cache_pmem`,
/// one `clwb` per cache line in address order, no fence. Each `clwb` is its own step, so a
/// store racing with the loop is flushed exactly when it lands before the loop reaches its line.
pub async fn dax_flush<P: PmemPlatform>(p: &P, dev: &DaxDevice, pfn: Pfn, nr: u64) {
    if !dev.write_cache {
        return;
    }
    let start = dev.pfn_to_addr(pfn);
    let mut err = None;
    for line in (start..start + nr * PAGE_SIZE).step_by(CACHE_LINE as usize) {
        // clwb reads no data, so poison does not stop it; an error here is a model mistake
        // (a pfn outside the machine's pmem).
        if let Err(e) = p.clwb(line).await {
            err = Some(e);
            break;
        }
    }
    warn_on(p, err.is_some(), "dax-flush-failed", || {
        format!("dax_flush of pfn {pfn:#x} (+{nr} pages) failed: {err:?}")
    })
    .await;
}

/// `tag_pages_for_writeback(mapping, start, end)`: set `TOWRITE` on every `DIRTY` entry in the
/// page range `start ..= end` (under the i_pages lock; the kernel drops it every
/// [`XA_CHECK_SCHED`] entries, which needs more entries than a model run has).
pub async fn tag_pages_for_writeback<P: Platform>(
    dax: &Dax<P>,
    p: &P,
    mapping: &AddressSpace<P>,
    start: u64,
    end: u64,
) {
    let mut xa = mapping.i_pages.lock(p).await;
    let mut xas = XaState::new(start);
    loop {
        let e = xa.xas_find_marked(&mut xas, end, PAGECACHE_TAG_DIRTY);
        if e.is_null() {
            break;
        }
        xa.xas_set_mark(&xas, PAGECACHE_TAG_TOWRITE);
    }
    xa.release(dax.release_steps).await;
}

/// What happened to one tagged entry (`trace_dax_writeback_one` and the skips).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WritebackOne {
    /// Written back: `count` pages from `index`.
    Flushed { index: u64, count: u64 },
    /// Skipped: punched out, reallocated, or already done by a racing fsync.
    Skipped,
}

/// `dax_writeback_one(xas, dax_dev, mapping, entry)`: write back the `TOWRITE` entry `entry`
/// found at the xas position. Called and returns with the i_pages lock held; drops it while
/// write-protecting and flushing, with the entry locked.
pub async fn dax_writeback_one<'a, P: PmemPlatform>(
    dax: &Dax<P>,
    p: &P,
    dev: &DaxDevice,
    mapping: &'a AddressSpace<P>,
    mut xa: XaGuard<'a, P>,
    xas: &mut XaState,
    mut entry: XaEntry,
) -> (XaGuard<'a, P>, Result<WritebackOne, Errno>) {
    // A page got tagged dirty in a DAX mapping? Something is seriously wrong.
    if warn_on(p, !entry.is_value(), "dax-writeback-non-value", || {
        format!(
            "dax_writeback_one: ino {} index {:#x} holds {entry:?}",
            mapping.host, xas.xa_index
        )
    })
    .await
    {
        return (xa, Err(Errno::EIO));
    }
    if dax_is_locked(entry) {
        let old_entry = entry;
        // As fs/dax.c: with the iteration's xa_state, which `xas_find_conflict` continues from
        // *after* this entry's slot, so it returns NULL at once instead of waiting, and the
        // entry is skipped below as "punched out", while its holder may still be flushing it
        // (a model finding, tests/dax_wb.rs `finding_a_second_fsync_...`; the comment at the
        // lock below assumes the opposite).
        (xa, entry) = get_next_unlocked_entry(dax, p, mapping, xa, xas, 0).await;
        // Punched out or reallocated (pfns compared: the lock bit and the type may differ), or
        // already done by another fsync.
        let mut ret = Ok(WritebackOne::Skipped);
        let skip =
            if entry.is_null() || !entry.is_value() || dax_to_pfn(old_entry) != dax_to_pfn(entry) {
                true
            } else if dax_is_empty_entry(entry) || dax_is_zero_entry(entry) {
                ret = Err(Errno::EIO);
                true
            } else {
                !xa.xas_get_mark(xas, PAGECACHE_TAG_TOWRITE)
            };
        if skip {
            warn_on(p, ret.is_err(), "dax-writeback-zero-entry", || {
                format!(
                    "dax_writeback_one: ino {} index {:#x}: TOWRITE on {entry:?}",
                    mapping.host, xas.xa_index
                )
            })
            .await;
            put_unlocked_entry(dax, p, mapping, xas, entry, WakeMode::Next).await;
            return (xa, ret);
        }
    }

    // Lock the entry to serialise with page faults. TOWRITE can go now: a racing
    // dax_writeback_one of the same index looks at the entry only under the i_pages lock,
    // finds it locked and waits, so it cannot return before our flush is done.
    dax_lock_entry(&mut xa, xas, entry);
    xa.xas_clear_mark(xas, PAGECACHE_TAG_TOWRITE);
    xa.release(dax.release_steps).await;

    // A range starting inside a PMD entry writes back the whole PMD.
    let pfn = dax_to_pfn(entry);
    let count = 1u64 << dax_entry_order(entry);
    let index = xas.xa_index & !(count - 1);
    let end = index + count - 1;

    // Write-protect every mapping of the entry's pages, so that a store after this point
    // faults and waits for the entry lock.
    let tree = mapping.i_mmap.read(p).await;
    for vma in tree.foreach(index, end) {
        // Bug mode: the 4.9 dax_mapping_entry_mkclean cleans PMDs without write-protecting them.
        let pmd_wrprotect = !dax.bug(DaxBug::PmdWritebackNoWrprotect);
        pfn_mkclean_range_with(p, vma, pfn, count, index, pmd_wrprotect).await;
    }
    tree.release(dax.release_steps).await;

    dax_flush(p, dev, pfn, count).await;

    // After the flush the dirty tag can go: no new dirty data can be in the pages, since the
    // mappings are write-protected and a fault waits for the entry lock.
    xas.reset();
    let mut xa = mapping.i_pages.lock(p).await;
    xa.xas_store(xas, entry);
    xa.xas_clear_mark(xas, PAGECACHE_TAG_DIRTY);
    dax_wake_entry(dax, p, mapping, xas, entry, WakeMode::Next).await;
    (xa, Ok(WritebackOne::Flushed { index, count }))
}

/// `dax_writeback_mapping_range(mapping, dax_dev, wbc)`: write back every dirty entry of the
/// byte range of `wbc` (`WB_SYNC_ALL` only; background writeback does nothing for DAX).
/// Returns the entries written back, in index order.
pub async fn dax_writeback_mapping_range<P: PmemPlatform>(
    dax: &Dax<P>,
    p: &P,
    mapping: &AddressSpace<P>,
    dev: &DaxDevice,
    wbc: &WritebackControl,
) -> Result<Vec<WritebackOne>, Errno> {
    // (`i_blkbits != PAGE_SHIFT` -> -EIO: every inode of the model has 4 KiB blocks.)
    let xa = mapping.i_pages.lock(p).await;
    let empty = xa.xa_empty();
    xa.release(dax.release_steps).await;
    if empty || wbc.sync_mode != WbSyncMode::All {
        return Ok(Vec::new());
    }
    let start_index = wbc.range_start >> PAGE_SHIFT;
    let end_index = wbc.range_end >> PAGE_SHIFT;
    tag_pages_for_writeback(dax, p, mapping, start_index, end_index).await;

    let mut done = Vec::new();
    let mut ret = Ok(());
    let mut xas = XaState::new(start_index);
    let mut xa = mapping.i_pages.lock(p).await;
    let mut scanned = 0u64;
    loop {
        let entry = xa.xas_find_marked(&mut xas, end_index, PAGECACHE_TAG_TOWRITE);
        if entry.is_null() {
            break;
        }
        // Continue after this entry whatever dax_writeback_one did with the xa_state.
        let count = 1u64 << dax_entry_order(entry);
        let next = (xas.xa_index & !(count - 1)) + count;
        let r;
        (xa, r) = dax_writeback_one(dax, p, dev, mapping, xa, &mut xas, entry).await;
        match r {
            Ok(w) => done.push(w),
            Err(e) => {
                // mapping_set_error: the next fsync reports it too (not modelled).
                ret = Err(e);
                break;
            }
        }
        xas.set(next);
        scanned += 1;
        if scanned.is_multiple_of(XA_CHECK_SCHED) {
            xa.release(dax.release_steps).await;
            xa = mapping.i_pages.lock(p).await;
        }
    }
    xa.release(dax.release_steps).await;
    ret.map(|()| done)
}
