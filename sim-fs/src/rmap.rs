//! daxfs's reverse map of blocks and its `notify_failure` (XFS: the rmapbt queried by
//! `xfs_dax_notify_failure` -> `xfs_dax_failure_fn`, fs/xfs/xfs_notify_failure.c).
//!
//! **The rmap.** Which structure or which (inode, file block) owns a device block. A block below
//! `data_start` is metadata (superblock, journal, inode table, bitmap, refcounts); a data block
//! is owned by every inode whose extent map points at it: one owner, or several for a block
//! shared by reflink (the refcount says how many; the rmap says who). daxfs keeps no rmap btree
//! on the media: [`rmap_query`] answers from the in-core extent maps, each read under its
//! inode's ILOCK (the namespace mutex only to list the inodes), which gives the same answers as
//! XFS's rmapbt would for the same extent maps. It never looks at `page->mapping`.
//!
//! **notify_failure** ([`DaxfsHolder`], the `dax_holder_operations` daxfs registers on its
//! device): the failed byte range goes to the rmap; metadata -> the file system shuts down
//! (`xfs_force_shutdown(SHUTDOWN_CORRUPT_ONDISK)`: every later operation gets EIO, see
//! [`FsFailure`]); data -> `mf_dax_kill_procs(mapping, pgoff, count)` for every owner, which
//! locks each DAX entry, marks the page HWPoison, and signals and unmaps the processes that map
//! it through that owner.
//!
//! Bug mode `reflink-page-mapping` (see `sim_mm::bugs`): daxfs registers no holder, as before
//! 5.19, so memory failure takes the generic path through `page->mapping`.

use crate::fs::{Daxfs, Inode};
use sim_core::{Platform, PmemPlatform, SpinLock};
use sim_mm::dax::Dax;
use sim_mm::dax_entry::{PAGE_SHIFT, PAGE_SIZE};
use sim_mm::memory_failure::{DaxHolder, MfContext, mf_dax_kill_procs};
use sim_mm::world::MmWorld;
use sim_mm::{Errno, Pfn};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Who owns a run of device blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockOwner {
    /// A metadata structure (its name, as fsck names it).
    Meta(&'static str),
    /// File data: inode `ino`, file block `fblock` for the run's first block.
    Data { ino: u64, fblock: u64 },
}

/// One answer of [`rmap_query`]: `len` device blocks from `dev`, owned by `owner`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RmapRecord {
    pub dev: u64,
    pub len: u64,
    pub owner: BlockOwner,
}

/// The file system's failure state: shutdown, and the one bug mode that lives here.
pub struct FsFailure<P: Platform> {
    /// `xfs_is_shutdown`: set once by a metadata failure, never cleared while mounted.
    shutdown: SpinLock<P, bool>,
    /// Bug mode `reflink-page-mapping`: configuration, set before any task of a run starts and
    /// never changed during it (so it is no state two tasks race on).
    reflink_page_mapping: AtomicBool,
}

impl<P: Platform> FsFailure<P> {
    pub fn new(p: &P) -> Self {
        FsFailure {
            shutdown: SpinLock::new(p, "xfs_mount_opstate", false),
            reflink_page_mapping: AtomicBool::new(false),
        }
    }

    /// Switch bug mode `reflink-page-mapping` on (before the run's tasks start).
    pub fn set_reflink_page_mapping(&self, on: bool) {
        self.reflink_page_mapping.store(on, Ordering::Relaxed);
    }

    pub fn reflink_page_mapping(&self) -> bool {
        self.reflink_page_mapping.load(Ordering::Relaxed)
    }

    /// `xfs_is_shutdown(mp)` (`READ_ONCE` of the flag: one step, a read).
    pub async fn is_shutdown(&self, p: &P) -> bool {
        self.shutdown.read_once(p, |s| *s).await
    }

    /// `xfs_force_shutdown`: returns whether this call shut it down.
    pub async fn force_shutdown(&self, p: &P) -> bool {
        let mut g = self.shutdown.lock(p).await;
        let first = !*g;
        *g = true;
        g.unlock().await;
        first
    }
}

/// The metadata structure holding device block `b` (`b < data_start`).
fn meta_region(fs: &Daxfs<impl Platform>, b: u64) -> &'static str {
    let g = &fs.geo;
    if b < g.journal_start {
        "superblock"
    } else if b < g.itable_start {
        "journal"
    } else if b < g.bitmap_start {
        "inode table"
    } else if b < g.refcount_start {
        "block bitmap"
    } else {
        "refcount table"
    }
}

/// Every owner of the device blocks `first .. first + count`, metadata first, then data by
/// inode number and file block.
pub async fn rmap_query<P: PmemPlatform>(
    fs: &Daxfs<P>,
    p: &P,
    first: u64,
    count: u64,
) -> Vec<RmapRecord> {
    let end = first.saturating_add(count);
    let mut out = Vec::new();
    let mut b = first;
    while b < end.min(fs.geo.data_start) {
        let region = meta_region(fs, b);
        let mut n = 1;
        while b + n < end.min(fs.geo.data_start) && meta_region(fs, b + n) == region {
            n += 1;
        }
        out.push(RmapRecord {
            dev: b,
            len: n,
            owner: BlockOwner::Meta(region),
        });
        b += n;
    }
    if end <= fs.geo.data_start {
        return out;
    }
    let inodes: Vec<Arc<Inode<P>>> = {
        let ns = fs.lock_ns(p).await;
        let v = ns.inodes.values().cloned().collect();
        drop(ns);
        v
    };
    for inode in inodes {
        let core = fs.ilock(p, &inode).await;
        for (&fb, e) in &core.disk.extents {
            let (lo, hi) = (e.dev.max(first), (e.dev + e.len).min(end));
            if lo < hi {
                out.push(RmapRecord {
                    dev: lo,
                    len: hi - lo,
                    owner: BlockOwner::Data {
                        ino: inode.ino,
                        fblock: fb + (lo - e.dev),
                    },
                });
            }
        }
        drop(core);
    }
    out
}

/// daxfs as the holder of its pmem device.
pub struct DaxfsHolder<'a, P: PmemPlatform> {
    pub fs: &'a Daxfs<P>,
    pub dax: &'a Dax<P>,
}

impl<P: PmemPlatform> DaxHolder<P> for DaxfsHolder<'_, P> {
    /// `xfs_dax_notify_failure`: query the rmap for the failed range; metadata shuts the file
    /// system down, data calls `mf_dax_kill_procs` for each owner's pages of the range.
    async fn notify_failure(
        &self,
        p: &P,
        world: &MmWorld<P>,
        offset: u64,
        len: u64,
        mf_flags: u32,
        ctx: &MfContext,
    ) -> Result<(), Errno> {
        let fs = self.fs;
        if fs.failure.reflink_page_mapping() {
            // Before 5.19 no file system registered a holder.
            return Err(Errno::EOPNOTSUPP);
        }
        let bs = fs.geo.blocksize;
        let (first, last) = (offset / bs, (offset + len.max(1) - 1) / bs);
        let recs = rmap_query(fs, p, first, last - first + 1).await;
        let mut rc = Ok(());
        for r in recs {
            match r.owner {
                BlockOwner::Meta(region) => {
                    if fs.failure.force_shutdown(p).await {
                        world
                            .printk(
                                p,
                                format!(
                                    "XFS (pmem0): Corruption of in-memory data ({region}, \
                                     block {}) detected. Shutting down filesystem",
                                    r.dev
                                ),
                            )
                            .await;
                    }
                }
                BlockOwner::Data { ino, fblock } => {
                    let inode = fs.lock_ns(p).await.inodes.get(&ino).cloned();
                    let Some(inode) = inode else { continue };
                    // The failed bytes within this owner's run, as page offsets of its file.
                    let run_lo = fs.geo.addr(r.dev);
                    let run_hi = fs.geo.addr(r.dev + r.len);
                    let (lo, hi) = (offset.max(run_lo), (offset + len).min(run_hi));
                    if lo >= hi {
                        continue;
                    }
                    let file_lo = fs.geo.addr(fblock) + (lo - run_lo);
                    let pgoff = file_lo >> PAGE_SHIFT;
                    let count = (hi - lo).div_ceil(PAGE_SIZE);
                    let r = mf_dax_kill_procs(
                        p,
                        world,
                        &inode.mapping,
                        pgoff,
                        count,
                        mf_flags,
                        ctx,
                        self.dax,
                    )
                    .await;
                    if r.is_err() {
                        rc = r;
                    }
                }
            }
        }
        rc
    }
}

/// The pfn of device byte `addr` in a world whose memmap starts at device page 0.
pub fn dev_pfn<P: Platform>(world: &MmWorld<P>, addr: u64) -> Pfn {
    world.memmap.base_pfn() + (addr >> PAGE_SHIFT)
}
