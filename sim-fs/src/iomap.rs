//! `iomap_begin`/`iomap_end` for the DAX core (`xfs_dax_write_iomap_ops` / `xfs_read_iomap_ops`
//! over `xfs_bmapi_read`/`xfs_iomap_write_direct`), on one inode.
//!
//! What `iomap_begin(pos, length, flags)` answers, from the extent covering `pos` (never past the
//! run of blocks in one state, never more than the request rounded out to blocks):
//!
//! | blocks at `pos` | read | `IOMAP_WRITE` |
//! | --- | --- | --- |
//! | none | `Hole` | allocate (2 MiB-aligned when the request is 2 MiB), zero, `Mapped` + `IOMAP_F_NEW` |
//! | unwritten | `Unwritten` | zero, convert, `Mapped` + `IOMAP_F_NEW` |
//! | written | `Mapped` | `Mapped` |
//! | shared (refcount >= 2) | `Mapped` + `IOMAP_F_SHARED` | copy on write: staged blocks as `Mapped` + `IOMAP_F_SHARED`, the old ones as `srcmap` |
//! | staged in the CoW fork | `Mapped` (the staged blocks) | the same staged blocks, as for shared |
//!
//! For a write, `IOMAP_F_DIRTY` is set while the inode has changes other than timestamps not
//! yet committed to the journal (XFS: `xfs_ipincount` and `ili_fsync_fields &
//! ~XFS_ILOG_TIMESTAMP`; the write fault's own `file_update_time` does not count): a MAP_SYNC
//! fault then returns
//! `VM_FAULT_NEEDDSYNC` and calls [`IomapOps::fsync_range`], which forces the log.
//!
//! Copy on write is staged as XFS stages it. `iomap_begin` allocates blocks in core only, copies
//! the shared blocks' data into them and records them in the inode's CoW fork
//! (`xfs_reflink_allocate_cow`); the data fork, the bitmap and the refcounts do not change, so
//! the shared blocks stay shared (and `IOMAP_F_SHARED` for their other owners' faults) while the
//! DAX core moves this file's entry from the old page to the new one. `iomap_end` then remaps the
//! staged blocks into the data fork in one transaction, dropping this file's reference to the
//! old blocks (`xfs_reflink_end_cow`). The kernel copies only around the write
//! (`dax_iomap_copy_around`, in the DAX core); here the file system copies the whole range
//! before it answers, since the DAX core is generic over `Platform` without memory ops, and a
//! whole copy lets a second write or a read of the same file share the staged blocks.
//! [`DaxfsFile::iomap_begin_fs`] (the file system's own zeroing) ends a copy on write at once.

use crate::alloc::AllocState;
use crate::fs::{CowStage, Daxfs, Inode, InodeCore};
use crate::layout::Extent;
use crate::{FsError, extent};
use sim_core::PmemPlatform;
use sim_mm::Errno;
use sim_mm::dax::iomap::{
    IOMAP_F_DIRTY, IOMAP_F_NEW, IOMAP_F_SHARED, IOMAP_WRITE, Iomap, IomapOps, IomapPair, IomapType,
};
use std::collections::BTreeMap;
use std::ops::DerefMut;
use std::sync::Arc;

/// An open file of a daxfs: what the DAX core calls iomap on.
pub struct DaxfsFile<P: PmemPlatform> {
    pub fs: Arc<Daxfs<P>>,
    pub inode: Arc<Inode<P>>,
}

impl<P: PmemPlatform> Clone for DaxfsFile<P> {
    fn clone(&self) -> Self {
        DaxfsFile {
            fs: self.fs.clone(),
            inode: self.inode.clone(),
        }
    }
}

impl<P: PmemPlatform> DaxfsFile<P> {
    pub fn new(fs: Arc<Daxfs<P>>, inode: Arc<Inode<P>>) -> Self {
        DaxfsFile { fs, inode }
    }

    /// `iomap_begin` with the ILOCK held exclusively. It reaches the inode through `Deref`
    /// where it only reads and through `DerefMut` only where it changes it, so a write fault
    /// into written blocks leaves the inode unwritten (`Platform::rwsem_data_mut`).
    async fn begin_locked(
        &self,
        p: &P,
        core: &mut impl DerefMut<Target = InodeCore>,
        pos: u64,
        length: u64,
        flags: u32,
    ) -> Result<IomapPair, FsError> {
        let fs = &self.fs;
        let bs = fs.geo.blocksize;
        let ino = self.inode.ino;
        let write = flags & IOMAP_WRITE != 0;
        let (fb, max, off) = block_range(bs, pos, length)?;
        let mapped = |e: &Extent, typ: IomapType, flags: u16| Iomap {
            addr: fs.geo.addr(e.dev),
            offset: off,
            length: fs.geo.addr(e.len),
            typ,
            flags,
        };
        let no_src = Iomap::hole(off, 0);
        let (cur, n) = extent::run(&core.disk.extents, fb, max);
        let Some(cur) = cur else {
            if !write {
                return Ok(IomapPair {
                    iomap: Iomap::hole(off, fs.geo.addr(n)),
                    srcmap: no_src,
                });
            }
            let e = fs.alloc_hole(p, ino, core, fb, n, false).await?;
            return Ok(IomapPair {
                iomap: mapped(&e, IomapType::Mapped, IOMAP_F_NEW | IOMAP_F_DIRTY),
                srcmap: no_src,
            });
        };
        let cow_pair = |new: &Extent, old: &Extent| IomapPair {
            iomap: mapped(new, IomapType::Mapped, IOMAP_F_SHARED | IOMAP_F_DIRTY),
            srcmap: if old.unwritten {
                mapped(old, IomapType::Unwritten, 0)
            } else {
                mapped(old, IomapType::Mapped, 0)
            },
        };
        // The CoW fork first (xfs_find_trim_cow_extent), and no answer spans the start of a
        // staged extent.
        let (staged, n) = cow_lookup(&core.cow, fb, n);
        let cur = Extent { len: n, ..cur };
        if let Some(st) = staged {
            if !write {
                // A copy on write of these blocks is in flight: a read maps the staged blocks
                // (they hold the file's data, and iomap_end remaps them into the data fork
                // whatever happens once a read has them), never the old ones a writer has
                // already unmapped.
                if let Some((_, stage)) = core.cow.range_mut(..=fb).next_back() {
                    stage.read_mapped = true;
                }
                return Ok(IomapPair {
                    iomap: mapped(&st, IomapType::Mapped, 0),
                    srcmap: no_src,
                });
            }
            // Another write: it shares the staged blocks (even if the old blocks lost their
            // other owner meanwhile, the data fork changes only when the staging is remapped).
            let mut a = fs.lock_alloc(p).await;
            let r = self.cow_begin(p, &mut a, core, fb, cur).await;
            drop(a);
            let (new, old) = r?;
            return Ok(cow_pair(&new, &old));
        }
        // The refcounts are read (and, for copy on write, changed) under the allocator mutex;
        // an inode that never took part in a reflink has no shared blocks.
        let alloc = if core.reflink {
            Some(fs.lock_alloc(p).await)
        } else {
            None
        };
        let (shared, sn) = match &alloc {
            Some(a) => a.shared_run(cur.dev, n),
            None => (false, n),
        };
        let cur = Extent { len: sn, ..cur };
        if write && shared {
            let mut a = alloc.expect("shared blocks were seen under the allocator");
            let r = self.cow_begin(p, &mut a, core, fb, cur).await;
            drop(a);
            let (new, old) = r?;
            return Ok(cow_pair(&new, &old));
        }
        drop(alloc);
        if write && cur.unwritten {
            // Zero, then convert (one transaction after the zeroes are durable).
            crate::fs::zero_range(p, fs.geo.addr(cur.dev), fs.geo.addr(cur.len)).await?;
            let w = Extent {
                unwritten: false,
                ..cur
            };
            if extent::count_after_replace(&core.disk.extents, fb, w) > core.max_extents() {
                return Err(FsError::ENOSPC);
            }
            extent::replace(&mut core.disk.extents, fb, w);
            core.logged_seq = fs
                .commit_trans(p, vec![fs.inode_unit(ino, &core.disk)])
                .await?;
            return Ok(IomapPair {
                iomap: mapped(&w, IomapType::Mapped, IOMAP_F_NEW | IOMAP_F_DIRTY),
                srcmap: no_src,
            });
        }
        let typ = if cur.unwritten {
            IomapType::Unwritten
        } else {
            IomapType::Mapped
        };
        // reflink-page-mapping: shared blocks are not flagged on reads (as before DAX
        // reflink), so the DAX core gives the page a single owner.
        let mut fl = if shared && !fs.failure.reflink_page_mapping() {
            IOMAP_F_SHARED
        } else {
            0
        };
        if write && !fs.inode_durable(p, core).await {
            fl |= IOMAP_F_DIRTY;
        }
        Ok(IomapPair {
            iomap: mapped(&cur, typ, fl),
            srcmap: no_src,
        })
    }

    /// `iomap_begin` of a read with the ILOCK held shared (`xfs_read_iomap_begin`:
    /// `xfs_ilock_for_iomap` takes XFS_ILOCK_SHARED once the extents are in core, as they
    /// always are here): the same answer as [`DaxfsFile::begin_locked`] gives a read, which
    /// changes nothing. Two read faults of one inode thus hold the ILOCK side by side.
    async fn begin_read(
        &self,
        p: &P,
        core: &InodeCore,
        pos: u64,
        length: u64,
    ) -> Result<IomapPair, FsError> {
        let fs = &self.fs;
        let bs = fs.geo.blocksize;
        let (fb, max, off) = block_range(bs, pos, length)?;
        let no_src = Iomap::hole(off, 0);
        let (cur, n) = extent::run(&core.disk.extents, fb, max);
        let Some(cur) = cur else {
            return Ok(IomapPair {
                iomap: Iomap::hole(off, fs.geo.addr(n)),
                srcmap: no_src,
            });
        };
        let mapped = |e: &Extent, typ: IomapType, flags: u16| IomapPair {
            iomap: Iomap {
                addr: fs.geo.addr(e.dev),
                offset: off,
                length: fs.geo.addr(e.len),
                typ,
                flags,
            },
            srcmap: no_src,
        };
        // A read of blocks a copy on write stages maps the staged ones (see begin_locked).
        let (staged, n) = cow_lookup(&core.cow, fb, n);
        if let Some(st) = staged {
            return Ok(mapped(&st, IomapType::Mapped, 0));
        }
        let (shared, n) = if core.reflink {
            let a = fs.lock_alloc(p).await;
            let r = a.shared_run(cur.dev, n);
            drop(a);
            r
        } else {
            (false, n)
        };
        let cur = Extent { len: n, ..cur };
        let typ = if cur.unwritten {
            IomapType::Unwritten
        } else {
            IomapType::Mapped
        };
        // reflink-page-mapping: see begin_locked.
        let fl = if shared && !fs.failure.reflink_page_mapping() {
            IOMAP_F_SHARED
        } else {
            0
        };
        Ok(mapped(&cur, typ, fl))
    }

    /// `xfs_reflink_allocate_cow` for a write over the shared blocks `cur` at file block `fb`
    /// (ILOCK and the allocator held): the staged blocks to write, and the part of `cur` they
    /// replace. Blocks the CoW fork already stages for `fb` (a copy on write of the same
    /// blocks in flight) are shared with it; else new blocks are staged and the data of `cur`
    /// is copied into them whole (zeros for unwritten blocks), so that every user of a staged
    /// extent finds the old data wherever it has not written yet. Nothing changes on media.
    async fn cow_begin(
        &self,
        p: &P,
        a: &mut AllocState,
        core: &mut InodeCore,
        fb: u64,
        cur: Extent,
    ) -> Result<(Extent, Extent), FsError> {
        let fs = &self.fs;
        if let Some((&s, st)) = core.cow.range_mut(..=fb).next_back()
            && fb - s < st.len
        {
            let k = fb - s;
            let len = (st.len - k).min(cur.len);
            st.users += 1;
            let new = Extent {
                dev: st.dev + k,
                len,
                unwritten: false,
            };
            return Ok((new, Extent { len, ..cur }));
        }
        // Up to the next staged extent: CoW fork extents never overlap.
        let next = core.cow.range(fb..).next().map_or(u64::MAX, |(&k, _)| k);
        let (d, got) = a.alloc_staging(fb, cur.len.min(next - fb))?;
        let new = Extent {
            dev: d,
            len: got,
            unwritten: false,
        };
        let old = Extent { len: got, ..cur };
        let r = if extent::count_after_replace(&core.disk.extents, fb, new) > core.max_extents() {
            Err(FsError::ENOSPC)
        } else if old.unwritten {
            // Unwritten source blocks read as zeros.
            crate::fs::zero_range(p, fs.geo.addr(d), fs.geo.addr(got)).await
        } else {
            // The kernel copies only around the write (dax_iomap_copy_around); a whole copy
            // keeps the staged blocks right for every user that shares them.
            copy_blocks(p, fs.geo.addr(old.dev), fs.geo.addr(d), fs.geo.addr(got)).await
        };
        if let Err(e) = r {
            a.cancel_staging(d, got);
            return Err(e);
        }
        // The DAX core may map the staged blocks before iomap_end: no longer free for the
        // memmap's use-after-free checks.
        fs.mark_blocks(p, d, got, false).await;
        core.cow.insert(
            fb,
            CowStage {
                dev: d,
                len: got,
                users: 1,
                read_mapped: false,
            },
        );
        Ok((new, old))
    }

    /// `xfs_dax_write_iomap_end` for a copy on write (ILOCK held): the user of the staged
    /// extent behind `iomap` is done. After a write (`written`) the whole staged extent is
    /// remapped into the data fork in one transaction (`xfs_reflink_end_cow`): its blocks enter
    /// the bitmap, and the shared blocks it replaces lose this file's reference. When the last
    /// user is done without a write (an error exit of the fault or write path after
    /// iomap_begin), the staging is cancelled as XFS cancels it
    /// (`xfs_reflink_cancel_cow_range`): the blocks go back to the allocator and nothing
    /// reaches the media. A staged extent already remapped by another user is not found:
    /// nothing to do.
    ///
    /// Difference from XFS: a staging that a read's iomap_begin handed out (`read_mapped`, see
    /// `begin_locked`), or whose pages the mm still uses (the failed fault's DAX entry already
    /// holds the staged pfn), is remapped instead of cancelled. Its blocks hold exactly the data
    /// of the blocks they replace, so the file reads the same either way, and nothing ever maps
    /// a freed block.
    async fn cow_end(
        &self,
        p: &P,
        core: &mut InodeCore,
        iomap: &Iomap,
        written: bool,
    ) -> Result<(), FsError> {
        let fs = &self.fs;
        let bs = fs.geo.blocksize;
        let (fb, dev) = (iomap.offset / bs, iomap.addr / bs);
        let Some((&s, st)) = core.cow.range_mut(..=fb).next_back() else {
            return Ok(());
        };
        if fb - s >= st.len || st.dev + (fb - s) != dev {
            return Ok(());
        }
        // Every answer that handed out part of the extent counted itself in `users`.
        assert!(st.users >= 1, "CoW fork extent at {s} without users");
        st.users -= 1;
        if !written && st.users > 0 {
            return Ok(());
        }
        let st = core.cow.remove(&s).expect("found above");
        if !written && !st.read_mapped && !fs.blocks_busy(p, st.dev, st.len).await {
            let mut a = fs.lock_alloc(p).await;
            a.cancel_staging(st.dev, st.len);
            fs.mark_blocks(p, st.dev, st.len, true).await;
            drop(a);
            return Ok(());
        }
        let mut a = fs.lock_alloc(p).await;
        a.commit_staging(st.dev, st.len);
        let new = Extent {
            dev: st.dev,
            len: st.len,
            unwritten: false,
        };
        for e in extent::replace(&mut core.disk.extents, s, new) {
            fs.free_blocks(p, &mut a, e.dev, e.len).await;
        }
        let mut units = a.take_dirty();
        units.push(fs.inode_unit(self.inode.ino, &core.disk));
        let r = fs.commit_trans(p, units).await;
        drop(a);
        core.logged_seq = r?;
        Ok(())
    }

    /// `iomap_begin` then, for a copy on write, `iomap_end` at once (ILOCK held): for the file
    /// system's own writes under IOLOCK and MMAPLOCK exclusive (zeroing, punch edges), where
    /// no fault can see the blocks between the two.
    async fn begin_end_locked(
        &self,
        p: &P,
        core: &mut InodeCore,
        pos: u64,
        length: u64,
        flags: u32,
    ) -> Result<IomapPair, FsError> {
        let m = self
            .begin_locked(p, &mut &mut *core, pos, length, flags)
            .await?;
        if flags & IOMAP_WRITE != 0 && m.iomap.has(IOMAP_F_SHARED) {
            self.cow_end(p, core, &m.iomap, true).await?;
        }
        Ok(m)
    }
}

/// The CoW fork at file block `fb`, for at most `max` blocks: the staged blocks covering it
/// (`Some`), or none and how many blocks from `fb` (at most `max`) precede the next staged
/// extent.
/// The blocks an `iomap_begin` of `length` bytes at `pos` asks about: the first block, how
/// many, and the first block's byte offset (EFBIG past the largest file offset, `loff_t`).
fn block_range(bs: u64, pos: u64, length: u64) -> Result<(u64, u64, u64), FsError> {
    let end = pos.checked_add(length.max(1)).ok_or(FsError::EFBIG)?;
    if end > i64::MAX as u64 {
        return Err(FsError::EFBIG);
    }
    let fb = pos / bs;
    Ok((fb, end.div_ceil(bs) - fb, fb * bs))
}

fn cow_lookup(cow: &BTreeMap<u64, CowStage>, fb: u64, max: u64) -> (Option<Extent>, u64) {
    if let Some((&s, st)) = cow.range(..=fb).next_back()
        && fb - s < st.len
    {
        let len = (st.len - (fb - s)).min(max);
        let e = Extent {
            dev: st.dev + (fb - s),
            len,
            unwritten: false,
        };
        return (Some(e), len);
    }
    let next = cow.range(fb..).next().map_or(u64::MAX, |(&k, _)| k);
    (None, (next - fb).min(max))
}

/// Copy `len` bytes from device address `from` to `to`, durably.
async fn copy_blocks<P: PmemPlatform>(p: &P, from: u64, to: u64, len: u64) -> Result<(), FsError> {
    let mut buf = vec![0u8; 4096];
    let mut a = 0;
    while a < len {
        let n = (len - a).min(buf.len() as u64) as usize;
        p.pmem_load(from + a, &mut buf[..n])
            .await
            .map_err(FsError::from_mem)?;
        p.pmem_ntstore(to + a, &buf[..n])
            .await
            .map_err(FsError::from_mem)?;
        a += n as u64;
    }
    crate::journal::sfence(p).await
}

impl<P: PmemPlatform> IomapOps<P> for DaxfsFile<P> {
    async fn i_size(&self, p: &P) -> u64 {
        let g = self.fs.ilock_shared(p, &self.inode).await;
        let s = g.disk.size;
        drop(g);
        s
    }

    async fn iomap_begin(
        &self,
        p: &P,
        pos: u64,
        length: u64,
        flags: u32,
    ) -> Result<IomapPair, Errno> {
        // xfs_*_iomap_begin: a shut-down file system maps nothing.
        if self.fs.failure.is_shutdown(p).await {
            return Err(Errno::EIO);
        }
        // xfs_ilock_for_iomap: a read takes the ILOCK shared. A write takes it exclusive here;
        // XFS takes it shared for a write into written blocks of an inode without reflinks and
        // relocks exclusive only to allocate or convert (not modelled: the relock would add a
        // scheduling point to every allocating write fault).
        // A read of an inode with a copy on write in flight takes it exclusive here: handing
        // out staged blocks marks the staging (`CowStage::read_mapped`, see `cow_end`).
        if flags & IOMAP_WRITE == 0 {
            let g = self.fs.ilock_shared(p, &self.inode).await;
            if g.cow.is_empty() {
                let r = self.begin_read(p, &g, pos, length).await;
                drop(g);
                return r.map_err(FsError::to_mm);
            }
            drop(g);
        }
        let mut g = self.fs.ilock(p, &self.inode).await;
        let r = self.begin_locked(p, &mut g, pos, length, flags).await;
        drop(g);
        r.map_err(FsError::to_mm)
    }

    async fn iomap_end(
        &self,
        p: &P,
        _pos: u64,
        _length: u64,
        written: u64,
        flags: u32,
        iomap: &Iomap,
    ) -> Result<(), Errno> {
        if flags & IOMAP_WRITE == 0 || !iomap.has(IOMAP_F_SHARED) {
            return Ok(());
        }
        let mut g = self.fs.ilock(p, &self.inode).await;
        let r = self.cow_end(p, &mut g, iomap, written > 0).await;
        drop(g);
        r.map_err(FsError::to_mm)
    }

    async fn fsync_range(
        &self,
        p: &P,
        _start: u64,
        _end: u64,
        datasync: bool,
    ) -> Result<(), Errno> {
        let g = self.fs.ilock_shared(p, &self.inode).await;
        // As `xfs_file_fsync`: a datasync (MAP_SYNC's) skips timestamp-only changes.
        let seq = if datasync {
            g.logged_seq
        } else {
            g.logged_seq.max(g.ts_seq)
        };
        drop(g);
        self.fs.log_force_seq(p, seq).await.map_err(FsError::to_mm)
    }

    /// `xfs_write_fault`: `file_update_time` before MMAPLOCK; its failure is ignored, as
    /// there.
    async fn file_update_time(&self, p: &P) {
        let _ = self.fs.update_time(p, &self.inode).await;
    }
}

impl<P: PmemPlatform> DaxfsFile<P> {
    /// `iomap_begin` with the file system's own errors (ENOSPC stays ENOSPC), for callers in
    /// this crate and tests; a copy on write is remapped before it returns (the caller holds
    /// IOLOCK and MMAPLOCK exclusive, or nothing maps the file).
    pub async fn iomap_begin_fs(
        &self,
        p: &P,
        pos: u64,
        length: u64,
        flags: u32,
    ) -> Result<IomapPair, FsError> {
        let mut g = self.fs.ilock(p, &self.inode).await;
        let r = self.begin_end_locked(p, &mut g, pos, length, flags).await;
        drop(g);
        r
    }
}

impl<P: PmemPlatform> DaxfsFile<P> {
    /// `fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`, the block side: under IOLOCK
    /// and MMAPLOCK exclusive, the blocks wholly inside `off .. off + len` lose this file's
    /// reference (freed unless shared), and the bytes of partial blocks at the edges are
    /// zeroed on the media (after a copy on write if the block is shared; holes and unwritten
    /// blocks already read as zeros). The block side only, for files nobody has mapped (tests):
    /// fallocate(2) on the full stack is `DaxfsFile::fallocate` (file.rs), which breaks DAX
    /// layouts and removes the range's DAX entries first.
    pub async fn punch_hole(&self, p: &P, off: u64, len: u64) -> Result<(), FsError> {
        let fs = &self.fs;
        let bs = fs.geo.blocksize;
        let end = off.checked_add(len).ok_or(FsError::EFBIG)?;
        if len == 0 {
            return Err(FsError::EINVAL);
        }
        let io = fs.iolock_excl(p, &self.inode).await;
        let mm = fs.mmaplock_excl(p, &self.inode).await;
        let mut core = fs.ilock(p, &self.inode).await;
        let r = async {
            let (first, last) = (off.div_ceil(bs), end / bs);
            // The partial blocks at the edges (one block when the range is inside it).
            let (up, down) = (off.div_ceil(bs) * bs, end / bs * bs);
            let mut edges = Vec::new();
            if !off.is_multiple_of(bs) {
                edges.push((off, end.min(up)));
            }
            if !end.is_multiple_of(bs) && down >= up {
                edges.push((down, end));
            }
            for (lo, hi) in edges {
                let (cur, _) = extent::run(&core.disk.extents, lo / bs, 1);
                match cur {
                    None => {}
                    Some(e) if e.unwritten => {}
                    Some(_) => {
                        let m = self
                            .begin_end_locked(p, &mut core, lo, hi - lo, IOMAP_WRITE)
                            .await?;
                        let addr = m.iomap.device_addr(lo);
                        crate::fs::zero_range(p, addr, hi - lo).await?;
                    }
                }
            }
            if first < last {
                fs.free_range(p, self.inode.ino, &mut core, first, last - first)
                    .await?;
            }
            Ok(())
        }
        .await;
        drop(core);
        drop(mm);
        drop(io);
        r
    }
}
