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
//! | shared (refcount >= 2) | `Mapped` + `IOMAP_F_SHARED` | copy on write: new blocks as `Mapped` + `IOMAP_F_SHARED`, the old ones as `srcmap` |
//!
//! For a write, `IOMAP_F_DIRTY` is set while the inode has changes not yet committed to the
//! journal (XFS: `xfs_ipincount` and `ili_fsync_fields`): a MAP_SYNC fault then returns
//! `VM_FAULT_NEEDDSYNC` and calls [`IomapOps::fsync_range`], which forces the log.
//!
//! Copy on write remaps the new blocks into the file at once (XFS stages them in the CoW fork
//! and remaps at `iomap_end`); the old blocks lose this file's reference. For a write(2) the
//! caller overwrites the requested range, so only the rest of the blocks is copied here; for a
//! fault (`IOMAP_FAULT`) the whole range is copied, since the DAX core (generic over
//! `Platform`, without memory ops) cannot do `dax_iomap_copy_around` itself. `iomap_end` has
//! nothing left to do.
//!
//! Known difference from XFS, with a visible effect: because the old block's refcount drops in
//! `iomap_begin`, before the DAX core disassociates the old page from this file's entry, a read
//! fault by the block's other owner in that window sees the block unshared and associates the
//! page as a single-owner page while it still names this file: the DAX core's WARN
//! `dax-associate-owned-page` (the kernel's `WARN_ON_ONCE(folio->mapping)`). `pmsim explore
//! traces/mf/reflink_cow_write.trace` (random, seed 0) reaches it in run 57. Staging the remap
//! until `iomap_end`, as XFS does, would close the window.

use crate::fs::{Daxfs, Inode, InodeCore};
use crate::layout::Extent;
use crate::{FsError, extent};
use sim_core::PmemPlatform;
use sim_mm::Errno;
use sim_mm::dax::iomap::{
    IOMAP_F_DIRTY, IOMAP_F_NEW, IOMAP_F_SHARED, IOMAP_FAULT, IOMAP_WRITE, Iomap, IomapOps,
    IomapPair, IomapType,
};
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

    /// `iomap_begin` with the ILOCK held.
    async fn begin_locked(
        &self,
        p: &P,
        core: &mut InodeCore,
        pos: u64,
        length: u64,
        flags: u32,
    ) -> Result<IomapPair, FsError> {
        let fs = &self.fs;
        let bs = fs.geo.blocksize;
        let ino = self.inode.ino;
        let write = flags & IOMAP_WRITE != 0;
        let end = pos.checked_add(length.max(1)).ok_or(FsError::EFBIG)?;
        if end > i64::MAX as u64 {
            return Err(FsError::EFBIG);
        }
        let fb = pos / bs;
        let max = end.div_ceil(bs) - fb;
        let off = fb * bs;
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
        // The refcounts are read (and, for copy on write, changed) under the allocator mutex;
        // an inode that never took part in a reflink has no shared blocks.
        let mut alloc = if core.reflink {
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
            let mut a = alloc
                .take()
                .expect("shared blocks were seen under the allocator");
            // Copy on write.
            let r = async {
                let (d, got) = a.alloc(fb, sn)?;
                let new = Extent {
                    dev: d,
                    len: got,
                    unwritten: false,
                };
                let old = Extent { len: got, ..cur };
                if extent::count_after_replace(&core.disk.extents, fb, new)
                    > crate::layout::MAX_EXTENTS
                {
                    a.free(d, got);
                    return Err(FsError::ENOSPC);
                }
                if old.unwritten {
                    // Unwritten source blocks read as zeros.
                    crate::fs::zero_range(p, fs.geo.addr(d), fs.geo.addr(got)).await?;
                } else {
                    // A write(2) overwrites its own range, so only the edges are copied; a
                    // fault maps the whole range, which must hold the old data
                    // (dax_iomap_copy_around's job, done here: see the DAX core's fault path).
                    let (from, to) = (fs.geo.addr(old.dev), fs.geo.addr(d));
                    let skip_len = if flags & IOMAP_FAULT != 0 { 0 } else { length };
                    copy_edges(p, from, to, fs.geo.addr(got), pos - off, skip_len).await?;
                }
                extent::replace(&mut core.disk.extents, fb, new);
                fs.mark_blocks(p, d, got, false).await;
                fs.free_blocks(p, &mut a, old.dev, old.len).await;
                let mut units = a.take_dirty();
                units.push(fs.inode_unit(ino, &core.disk));
                core.logged_seq = fs.commit_trans(p, units).await?;
                Ok((new, old))
            }
            .await;
            if r.is_err() {
                a.take_dirty();
            }
            drop(a);
            let (new, old) = r?;
            return Ok(IomapPair {
                iomap: mapped(&new, IomapType::Mapped, IOMAP_F_SHARED | IOMAP_F_DIRTY),
                srcmap: if old.unwritten {
                    mapped(&old, IomapType::Unwritten, 0)
                } else {
                    mapped(&old, IomapType::Mapped, 0)
                },
            });
        }
        drop(alloc);
        if write && cur.unwritten {
            // Zero, then convert (one transaction after the zeroes are durable).
            crate::fs::zero_range(p, fs.geo.addr(cur.dev), fs.geo.addr(cur.len)).await?;
            let w = Extent {
                unwritten: false,
                ..cur
            };
            if extent::count_after_replace(&core.disk.extents, fb, w) > crate::layout::MAX_EXTENTS {
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
}

/// Copy the parts of a `len`-byte block run outside `skip .. skip + skip_len` (relative to the
/// run) from `from` to `to`, durably: the DAX core copies only the faulting page or PMD.
async fn copy_edges<P: PmemPlatform>(
    p: &P,
    from: u64,
    to: u64,
    len: u64,
    skip: u64,
    skip_len: u64,
) -> Result<(), FsError> {
    let skip_end = (skip + skip_len).min(len);
    let mut buf = vec![0u8; 4096];
    for (lo, hi) in [(0, skip.min(len)), (skip_end, len)] {
        let mut a = lo;
        while a < hi {
            let n = (hi - a).min(buf.len() as u64) as usize;
            p.pmem_load(from + a, &mut buf[..n])
                .await
                .map_err(FsError::from_mem)?;
            p.pmem_ntstore(to + a, &buf[..n])
                .await
                .map_err(FsError::from_mem)?;
            a += n as u64;
        }
    }
    crate::journal::sfence(p).await
}

impl<P: PmemPlatform> IomapOps<P> for DaxfsFile<P> {
    async fn i_size(&self, p: &P) -> u64 {
        let g = self.fs.ilock(p, &self.inode).await;
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
        let mut g = self.fs.ilock(p, &self.inode).await;
        let r = self.begin_locked(p, &mut g, pos, length, flags).await;
        drop(g);
        r.map_err(FsError::to_mm)
    }

    async fn fsync_range(
        &self,
        p: &P,
        _start: u64,
        _end: u64,
        _datasync: bool,
    ) -> Result<(), Errno> {
        let g = self.fs.ilock(p, &self.inode).await;
        let seq = g.logged_seq;
        drop(g);
        self.fs.log_force_seq(p, seq).await.map_err(FsError::to_mm)
    }
}

impl<P: PmemPlatform> DaxfsFile<P> {
    /// `iomap_begin` with the file system's own errors (ENOSPC stays ENOSPC), for callers in
    /// this crate and tests.
    pub async fn iomap_begin_fs(
        &self,
        p: &P,
        pos: u64,
        length: u64,
        flags: u32,
    ) -> Result<IomapPair, FsError> {
        let mut g = self.fs.ilock(p, &self.inode).await;
        let r = self.begin_locked(p, &mut g, pos, length, flags).await;
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
                            .begin_locked(p, &mut core, lo, hi - lo, IOMAP_WRITE)
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
