//! File operations of daxfs on the full stack, as XFS does them for a DAX inode
//! (`xfs_file.c`, `xfs_iops.c`, `xfs_bmap_util.c`): read and write through the DAX core's
//! `dax_iomap_rw`, truncate, fallocate (allocate, keep-size, punch, zero, collapse, insert),
//! fsync and fdatasync, timestamps (`file_update_time`), and the inode's lifetime (open references, unlink, eviction on the last
//! reference).
//!
//! **Locks.** read: IOLOCK shared. write: IOLOCK exclusive (faults race with both, as in XFS).
//! truncate and fallocate: IOLOCK exclusive, then MMAPLOCK (`invalidate_lock`) exclusive, then
//! layouts broken ([`dax_break_layout`] over the whole file: unmap it, wait for pinned pages
//! with MMAPLOCK dropped while waiting, as `xfs_wait_dax_page` does, then delete its DAX
//! entries) *before* the ILOCK is taken and blocks are freed or moved. Faults
//! hold MMAPLOCK shared from before `iomap_begin` until the page table is updated, so no fault
//! can map a block between the layout break and the free (bug mode `no-mmaplock` drops exactly
//! that).
//!
//! **Ranges broken.** Layouts are broken over the whole file, whatever the range of the
//! operation, as XFS does (`xfs_break_layouts(BREAK_UNMAP)` -> `xfs_break_dax_layouts`): every
//! mapping of the file is torn down and a pin anywhere in it holds the operation up. The DAX
//! entries deleted are only those of the range the operation changes, as
//! `truncate_pagecache_range` deletes them: `xfs_flush_unmap_range` (punch, zero, collapse,
//! insert) writes the range back (`dax_writeback_mapping_range`) and then deletes its entries
//! (the range rounded out to blocks; collapse and insert to the end of the file), and truncate
//! deletes those past the new end of file (`truncate_pagecache`). A dirty entry elsewhere in the
//! file stays dirty, so a later fsync still flushes the stores it stands for.
//!
//! Deliberate difference from 6.15: there `xfs_break_dax_layouts` is
//! `dax_break_layout_inode` = `dax_break_layout(inode, 0, LLONG_MAX, ..)`, which also deletes
//! every entry of the file, dirty or not (`dax_delete_mapping_range` ignores the marks), so a
//! later fsync no longer flushes stores made elsewhere in the file before the operation: a
//! durability loss on a machine whose caches are not persistent. The model waits as 6.15 does
//! ([`dax_layout_wait_idle`]) and deletes as the kernels before it did. Reflink
//! (`Daxfs::reflink_dax`) still deletes both files' entries whole, as 6.15's
//! `xfs_mmaplock_two_inodes_and_break_dax_layout` does.
//!
//! **Partial blocks.** Bytes of a block that stays (the tail at a new end of file, the edges of
//! a punch or zero) are zeroed on the media through non-temporal stores and a fence, after a
//! copy on write if the block is shared (whose old pages are then invalidated,
//! `dax_zero_iter`). Growing a file zeroes from the old size to the end of its block, since an
//! mmap store may have left bytes past the old end of file.
//!
//! **Observers.** Each operation reports what it changed in the file's bytes ([`Change`]) at
//! the step that changed them, before another task can run: the trace runner's data oracle
//! follows the file exactly (a load racing a truncate sees either side, and the oracle says
//! which).

use crate::fs::{Daxfs, Inode};
use crate::iomap::DaxfsFile;
use crate::layout::{INODE_F_ORPHAN, MAX_EXTENTS};
use crate::locks::Held;
use crate::{FsError, extent};
use sim_core::PmemPlatform;
use sim_core::platform::{RwSemReadGuard, RwSemWriteGuard};
use sim_mm::dax::Dax;
use sim_mm::dax::invalidate::{
    LLONG_MAX, WaitPageIdle, dax_break_layout_final, dax_delete_mapping_range, dax_layout_wait_idle,
};
use sim_mm::dax::iomap::{IOMAP_F_SHARED, IOMAP_WRITE, IomapType};
use sim_mm::dax::rw::{IovIter, dax_iomap_rw, invalidate_inode_pages2_range};
use sim_mm::dax::writeback::{
    DaxDevice, WbSyncMode, WritebackControl, dax_writeback_mapping_range,
};
use sim_mm::{Errno, Pfn};
use std::cell::RefCell;
use std::sync::Arc;

const PAGE: u64 = 4096;

/// What an operation did to the file's bytes (reported at the step that did it).
#[derive(Debug, PartialEq, Eq)]
pub enum Change<'a> {
    /// These bytes now start at this offset (a write; past the size until a `Size` follows).
    Write(u64, &'a [u8]),
    /// `len` bytes from `pos` now read as zeros.
    Zero(u64, u64),
    /// The file has this size (bytes past the old size read as zeros).
    Size(u64),
    /// `len` bytes at `off` are gone; what followed moved down (collapse range).
    Collapse(u64, u64),
    /// `len` zero bytes were inserted at `off`; what followed moved up (insert range).
    Insert(u64, u64),
}

/// The fallocate(2) modes of the trace format.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Falloc {
    /// Mode 0: unwritten extents over the holes; the size grows to cover the range.
    Alloc,
    /// `FALLOC_FL_KEEP_SIZE`.
    KeepSize,
    /// `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`.
    PunchHole,
    /// `FALLOC_FL_ZERO_RANGE`: punch, then unwritten extents; the size grows.
    ZeroRange,
    /// `FALLOC_FL_COLLAPSE_RANGE`: block-aligned, ending before the end of file.
    CollapseRange,
    /// `FALLOC_FL_INSERT_RANGE`: block-aligned, starting before the end of file.
    InsertRange,
}

type MmapLock<'a, P> = Held<'a, RwSemWriteGuard<'a, P, ()>>;

/// `xfs_wait_dax_page`: what layout breaking does while a page is pinned: drop MMAPLOCK (so
/// that the pin's holder can fault meanwhile), wait for the page to go idle, take it again.
struct XfsWaitDaxPage<'a, P: PmemPlatform> {
    fs: &'a Daxfs<P>,
    inode: &'a Inode<P>,
    /// The operation's MMAPLOCK (task-local: only the task that holds it touches the cell, and
    /// never across an await while borrowed).
    mmaplock: RefCell<Option<MmapLock<'a, P>>>,
}

impl<P: PmemPlatform> WaitPageIdle<P> for XfsWaitDaxPage<'_, P> {
    async fn wait_page_idle(&self, p: &P, dax: &Dax<P>, pfn: Pfn) -> Result<(), Errno> {
        let _fn = p.enter_fn("xfs_wait_dax_page");
        let held = self.mmaplock.borrow_mut().take();
        drop(held);
        dax.world.memmap.wait_pages_idle(p, pfn, 1).await;
        let g = self.fs.mmaplock_excl(p, self.inode).await;
        *self.mmaplock.borrow_mut() = Some(g);
        Ok(())
    }
}

/// IOLOCK and MMAPLOCK exclusive (`XFS_IOLOCK_EXCL | XFS_MMAPLOCK_EXCL`).
struct Excl<'a, P: PmemPlatform> {
    /// Holds MMAPLOCK; declared first so that it is released before IOLOCK (fields drop in
    /// declaration order).
    wait: XfsWaitDaxPage<'a, P>,
    _io: Held<'a, RwSemWriteGuard<'a, P, ()>>,
}

impl<P: PmemPlatform> DaxfsFile<P> {
    async fn lock_excl(&self, p: &P) -> Excl<'_, P> {
        let io = self.fs.iolock_excl(p, &self.inode).await;
        let mm = self.fs.mmaplock_excl(p, &self.inode).await;
        Excl {
            wait: XfsWaitDaxPage {
                fs: &self.fs,
                inode: &self.inode,
                mmaplock: RefCell::new(Some(mm)),
            },
            _io: io,
        }
    }

    /// `xfs_break_layouts(BREAK_UNMAP)`: `xfs_break_dax_layouts`, over the whole file whatever
    /// range the caller is about to change: unmap it and wait until no page of it is pinned.
    /// The entries stay; the caller deletes those of its range ([`Self::flush_unmap_range`],
    /// [`Self::truncate_pagecache`]).
    async fn break_layouts(&self, dax: &Dax<P>, p: &P, ex: &Excl<'_, P>) -> Result<(), FsError> {
        let _fn = p.enter_fn("xfs_break_layouts");
        let (_, r) =
            dax_layout_wait_idle(dax, p, &self.inode.mapping, 0, LLONG_MAX, Some(&ex.wait)).await;
        r.map_err(FsError::from_mm)
    }

    /// `xfs_flush_unmap_range(ip, off, end - off)`: write back the DAX entries of the range
    /// rounded out to whole blocks, then delete them (`truncate_pagecache_range`), before its
    /// blocks are freed or moved. `end == LLONG_MAX`: to the end of the file. Layouts are
    /// broken and MMAPLOCK is held, so no fault maps the range again before the blocks change.
    async fn flush_unmap_range(
        &self,
        dax: &Dax<P>,
        p: &P,
        off: u64,
        end: u64,
    ) -> Result<(), FsError> {
        let _fn = p.enter_fn("xfs_flush_unmap_range");
        let rounding = self.fs.geo.blocksize.max(PAGE);
        let start = off / rounding * rounding;
        let last = if end >= LLONG_MAX - rounding {
            LLONG_MAX
        } else {
            end.div_ceil(rounding) * rounding - 1
        };
        self.write_and_wait_range(dax, p, start, last).await?;
        dax_delete_mapping_range(dax, p, &self.inode.mapping, start, last).await;
        Ok(())
    }

    /// `filemap_write_and_wait_range(mapping, start, end)` on a DAX inode: write back the dirty
    /// entries of the byte range `start ..= end` (`dax_writeback_mapping_range`, `WB_SYNC_ALL`).
    async fn write_and_wait_range(
        &self,
        dax: &Dax<P>,
        p: &P,
        start: u64,
        end: u64,
    ) -> Result<(), FsError> {
        let wbc = WritebackControl {
            range_start: start,
            range_end: end,
            sync_mode: WbSyncMode::All,
        };
        dax_writeback_mapping_range(dax, p, &self.inode.mapping, &self.dax_device(), &wbc)
            .await
            .map_err(FsError::from_mm)?;
        Ok(())
    }

    /// The pmem device the inode's blocks live on.
    fn dax_device(&self) -> DaxDevice {
        DaxDevice {
            base_pfn: self.fs.world.memmap.base_pfn(),
            write_cache: true,
        }
    }

    /// `truncate_pagecache(inode, size)`: delete the DAX entries past the new end of file (from
    /// the first page wholly beyond it); the page holding the new end keeps its entry.
    async fn truncate_pagecache(&self, dax: &Dax<P>, p: &P, size: u64) {
        let _fn = p.enter_fn("truncate_pagecache");
        let start = size.div_ceil(PAGE) * PAGE;
        dax_delete_mapping_range(dax, p, &self.inode.mapping, start, LLONG_MAX).await;
    }

    async fn size(&self, p: &P) -> u64 {
        let g = self.fs.ilock(p, &self.inode).await;
        let s = g.disk.size;
        drop(g);
        s
    }

    /// read(2) (`xfs_file_dax_read`): at most `buf.len()` bytes at `pos`, never past the end
    /// of file; returns the bytes read. `observe` sees each piece right after it was read.
    pub async fn read(
        &self,
        dax: &Dax<P>,
        p: &P,
        pos: u64,
        buf: &mut [u8],
        observe: &mut impl FnMut(u64, &[u8]),
    ) -> Result<u64, FsError> {
        let _fn = p.enter_fn("xfs_file_dax_read");
        let io: Held<'_, RwSemReadGuard<'_, P, ()>> = self.fs.iolock_shared(p, &self.inode).await;
        let r = dax_iomap_rw(
            dax,
            p,
            &self.inode.mapping,
            self,
            pos,
            IovIter::Read(buf),
            observe,
        )
        .await;
        drop(io);
        r.map_err(FsError::from_mm)
    }

    /// write(2) (`xfs_file_dax_write`): `data` at `pos`, allocating as needed; the size grows
    /// to cover what was written. Returns the bytes written (fewer than asked when the file
    /// system filled up after some were).
    pub async fn write(
        &self,
        dax: &Dax<P>,
        p: &P,
        pos: u64,
        data: &[u8],
        obs: &mut impl FnMut(Change<'_>),
    ) -> Result<u64, FsError> {
        let _fn = p.enter_fn("xfs_file_dax_write");
        let end = pos.checked_add(data.len() as u64).ok_or(FsError::EFBIG)?;
        if end > i64::MAX as u64 {
            return Err(FsError::EFBIG);
        }
        let io = self.fs.iolock_excl(p, &self.inode).await;
        // xfs_file_write_checks -> file_modified -> file_update_time, before the data moves.
        if let Err(e) = self.fs.update_time(p, &self.inode).await {
            drop(io);
            return Err(e);
        }
        let r = {
            let mut o = |at: u64, b: &[u8]| obs(Change::Write(at, b));
            dax_iomap_rw(
                dax,
                p,
                &self.inode.mapping,
                self,
                pos,
                IovIter::Write(data),
                &mut o,
            )
            .await
        };
        let r = match r {
            Ok(n) if n > 0 => {
                // xfs_dax_write_iomap_end / xfs_setfilesize: the size covers the write.
                let new_end = pos + n;
                let mut core = self.fs.ilock(p, &self.inode).await;
                let mut r = Ok(n);
                if new_end > core.disk.size {
                    core.disk.size = new_end;
                    match self.fs.setfilesize(p, self.inode.ino, &mut core).await {
                        Ok(()) => obs(Change::Size(new_end)),
                        Err(e) => r = Err(e),
                    }
                }
                drop(core);
                r
            }
            other => other.map_err(FsError::from_mm),
        };
        drop(io);
        r
    }

    /// Zero `lo .. hi` on the media where the file has written blocks (holes and unwritten
    /// extents already read as zeros), after a copy on write of shared blocks; fenced. The
    /// caller holds IOLOCK and MMAPLOCK exclusive and no ILOCK.
    async fn zero_file_range(
        &self,
        dax: &Dax<P>,
        p: &P,
        lo: u64,
        hi: u64,
        obs: &mut impl FnMut(Change<'_>),
    ) -> Result<(), FsError> {
        let _fn = p.enter_fn("dax_zero_range");
        static ZEROS: [u8; PAGE as usize] = [0; PAGE as usize];
        let mut at = lo;
        let mut stored = false;
        while at < hi {
            let mut m = self.iomap_begin_fs(p, at, hi - at, 0).await?.iomap;
            if m.typ == IomapType::Mapped && m.flags & IOMAP_F_SHARED != 0 {
                // Copy on write first: the other owner keeps its bytes.
                m = self
                    .iomap_begin_fs(p, at, hi - at, IOMAP_WRITE)
                    .await?
                    .iomap;
            }
            let ext_end = (m.offset + m.length).min(hi);
            if ext_end <= at {
                return Err(FsError::EIO);
            }
            if m.typ == IomapType::Mapped {
                if m.flags & IOMAP_F_SHARED != 0 {
                    invalidate_inode_pages2_range(
                        dax,
                        p,
                        &self.inode.mapping,
                        at / PAGE,
                        (ext_end - 1) / PAGE,
                    )
                    .await;
                }
                let mut z = at;
                while z < ext_end {
                    let n = (ext_end - z).min(PAGE - z % PAGE);
                    p.pmem_ntstore(m.device_addr(z), &ZEROS[..n as usize])
                        .await
                        .map_err(FsError::from_mem)?;
                    obs(Change::Zero(z, n));
                    z += n;
                }
                stored = true;
            }
            at = ext_end;
        }
        if stored {
            crate::journal::sfence(p).await?;
        }
        Ok(())
    }

    /// ftruncate(2) (`xfs_setattr_size`).
    pub async fn truncate(
        &self,
        dax: &Dax<P>,
        p: &P,
        size: u64,
        obs: &mut impl FnMut(Change<'_>),
    ) -> Result<(), FsError> {
        let _fn = p.enter_fn("xfs_setattr_size");
        if size > i64::MAX as u64 {
            return Err(FsError::EFBIG);
        }
        let bs = self.fs.geo.blocksize;
        let ex = self.lock_excl(p).await;
        let r = async {
            let old = self.size(p).await;
            // xfs_vn_setattr: layouts broken before the size changes.
            self.break_layouts(dax, p, &ex).await?;
            if size > old {
                // xfs_zero_range(old, ..): bytes an mmap store left past the old end.
                let hi = size.min(old.div_ceil(bs) * bs);
                self.zero_file_range(dax, p, old, hi, obs).await?;
            } else {
                // The entry holding the new end of file is written back before the pagecache
                // truncate below may delete it (a PMD entry also covers pages that stay).
                self.write_and_wait_range(dax, p, size, size).await?;
                // xfs_truncate_page: the rest of the block at the new end.
                self.zero_file_range(dax, p, size, size.div_ceil(bs) * bs, obs)
                    .await?;
            }
            self.truncate_pagecache(dax, p, size).await;
            let mut core = self.fs.ilock(p, &self.inode).await;
            let r = async {
                let first_gone = size.div_ceil(bs);
                let last = core
                    .disk
                    .extents
                    .iter()
                    .next_back()
                    .map_or(0, |(&s, e)| s + e.len);
                core.disk.size = size;
                // ftruncate: `ATTR_MTIME | ATTR_CTIME`, in the size's transaction.
                crate::fs::stamp(p, &mut core.disk, true);
                if last > first_gone {
                    self.fs
                        .free_range(p, self.inode.ino, &mut core, first_gone, last - first_gone)
                        .await
                } else {
                    let seq = self
                        .fs
                        .commit_trans(p, vec![self.fs.inode_unit(self.inode.ino, &core.disk)])
                        .await?;
                    core.logged_seq = seq;
                    Ok(())
                }
            }
            .await;
            if r.is_ok() {
                obs(Change::Size(size));
            }
            drop(core);
            r
        }
        .await;
        drop(ex);
        r
    }

    /// fallocate(2) (`xfs_file_fallocate`) of `len` bytes at `off` in `mode`.
    pub async fn fallocate(
        &self,
        dax: &Dax<P>,
        p: &P,
        off: u64,
        len: u64,
        mode: Falloc,
        obs: &mut impl FnMut(Change<'_>),
    ) -> Result<(), FsError> {
        let _fn = p.enter_fn("xfs_file_fallocate");
        if len == 0 {
            return Err(FsError::EINVAL);
        }
        let end = off.checked_add(len).ok_or(FsError::EFBIG)?;
        if end > i64::MAX as u64 {
            return Err(FsError::EFBIG);
        }
        let bs = self.fs.geo.blocksize;
        if matches!(mode, Falloc::CollapseRange | Falloc::InsertRange)
            && (!off.is_multiple_of(bs) || !len.is_multiple_of(bs))
        {
            return Err(FsError::EINVAL);
        }
        let ex = self.lock_excl(p).await;
        let r = async {
            // xfs_file_fallocate -> file_modified, whatever the mode.
            self.fs.update_time(p, &self.inode).await?;
            let size = self.size(p).await;
            match mode {
                Falloc::Alloc | Falloc::KeepSize => {
                    self.break_layouts(dax, p, &ex).await?;
                    self.alloc_unwritten(p, off, end, mode == Falloc::Alloc, obs)
                        .await
                }
                Falloc::PunchHole => {
                    self.break_layouts(dax, p, &ex).await?;
                    self.flush_unmap_range(dax, p, off, end).await?;
                    self.punch(dax, p, off, end, size, obs).await
                }
                Falloc::ZeroRange => {
                    self.break_layouts(dax, p, &ex).await?;
                    self.flush_unmap_range(dax, p, off, end).await?;
                    self.punch(dax, p, off, end, size, obs).await?;
                    self.alloc_unwritten(p, off, end, true, obs).await
                }
                Falloc::CollapseRange => {
                    // Reaching the end of file would be a truncate.
                    if end >= size {
                        return Err(FsError::EINVAL);
                    }
                    self.break_layouts(dax, p, &ex).await?;
                    // xfs_free_file_space(off, len), then xfs_prepare_shift(off): to the end.
                    self.flush_unmap_range(dax, p, off, LLONG_MAX).await?;
                    self.collapse(p, off, len, obs).await
                }
                Falloc::InsertRange => {
                    if off >= size {
                        return Err(FsError::EINVAL);
                    }
                    if size.checked_add(len).is_none_or(|s| s > i64::MAX as u64) {
                        return Err(FsError::EFBIG);
                    }
                    self.break_layouts(dax, p, &ex).await?;
                    // xfs_prepare_shift(off): everything from `off` moves.
                    self.flush_unmap_range(dax, p, off, LLONG_MAX).await?;
                    self.insert(p, off, len, obs).await
                }
            }
        }
        .await;
        drop(ex);
        r
    }

    /// Unwritten extents over the holes of `off .. end`; the size grows to `end` with
    /// `grow`.
    async fn alloc_unwritten(
        &self,
        p: &P,
        off: u64,
        end: u64,
        grow: bool,
        obs: &mut impl FnMut(Change<'_>),
    ) -> Result<(), FsError> {
        let bs = self.fs.geo.blocksize;
        let (fb, eb) = (off / bs, end.div_ceil(bs));
        let mut core = self.fs.ilock(p, &self.inode).await;
        let old = core.disk.size;
        let r = self
            .fs
            .alloc_range(
                p,
                self.inode.ino,
                &mut core,
                fb,
                eb - fb,
                true,
                if grow { end } else { 0 },
            )
            .await;
        if core.disk.size != old {
            obs(Change::Size(core.disk.size));
        }
        drop(core);
        r
    }

    /// `xfs_free_file_space`: zero the partial blocks at the edges of `off .. end`, free the
    /// whole blocks inside. Layouts are broken.
    async fn punch(
        &self,
        dax: &Dax<P>,
        p: &P,
        off: u64,
        end: u64,
        size: u64,
        obs: &mut impl FnMut(Change<'_>),
    ) -> Result<(), FsError> {
        let bs = self.fs.geo.blocksize;
        let (up, down) = (off.div_ceil(bs) * bs, end / bs * bs);
        if up > down {
            // Inside one block.
            return self.zero_file_range(dax, p, off, end, obs).await;
        }
        self.zero_file_range(dax, p, off, up, obs).await?;
        self.zero_file_range(dax, p, down, end, obs).await?;
        if up < down {
            let mut core = self.fs.ilock(p, &self.inode).await;
            let r = self
                .fs
                .free_range(p, self.inode.ino, &mut core, up / bs, (down - up) / bs)
                .await;
            if r.is_ok() && up < size {
                obs(Change::Zero(up, down.min(size) - up));
            }
            drop(core);
            r?;
        }
        Ok(())
    }

    /// `xfs_collapse_file_space`: free `off .. off + len` and move the rest of the file down.
    async fn collapse(
        &self,
        p: &P,
        off: u64,
        len: u64,
        obs: &mut impl FnMut(Change<'_>),
    ) -> Result<(), FsError> {
        let bs = self.fs.geo.blocksize;
        let (fb, nb) = (off / bs, len / bs);
        let mut core = self.fs.ilock(p, &self.inode).await;
        let r = async {
            self.fs
                .free_range(p, self.inode.ino, &mut core, fb, nb)
                .await?;
            extent::shift_down(&mut core.disk.extents, fb + nb, nb);
            core.disk.size -= len;
            core.logged_seq = self
                .fs
                .commit_trans(p, vec![self.fs.inode_unit(self.inode.ino, &core.disk)])
                .await?;
            obs(Change::Collapse(off, len));
            Ok(())
        }
        .await;
        drop(core);
        r
    }

    /// `xfs_insert_file_space`: move everything from `off` up by `len`, leaving a hole.
    async fn insert(
        &self,
        p: &P,
        off: u64,
        len: u64,
        obs: &mut impl FnMut(Change<'_>),
    ) -> Result<(), FsError> {
        let bs = self.fs.geo.blocksize;
        let (fb, nb) = (off / bs, len / bs);
        let mut core = self.fs.ilock(p, &self.inode).await;
        let r = async {
            if extent::count_after_shift_up(&core.disk.extents, fb) > MAX_EXTENTS {
                return Err(FsError::ENOSPC);
            }
            let old = (core.disk.extents.clone(), core.disk.size);
            extent::shift_up(&mut core.disk.extents, fb, nb);
            core.disk.size += len;
            match self
                .fs
                .commit_trans(p, vec![self.fs.inode_unit(self.inode.ino, &core.disk)])
                .await
            {
                Ok(seq) => core.logged_seq = seq,
                Err(e) => {
                    (core.disk.extents, core.disk.size) = old;
                    return Err(e);
                }
            }
            obs(Change::Insert(off, len));
            Ok(())
        }
        .await;
        drop(core);
        r
    }

    /// fsync(2) / fdatasync(2) over the byte range `start ..= end` (`xfs_file_fsync`): write
    /// back the dirty DAX entries (`dax_writeback_mapping_range`: write-protect, flush the
    /// cache lines), fence (the pmem driver's answer to `REQ_PREFLUSH`), then force the log up
    /// to the inode's last change; fdatasync skips a change of timestamps alone (see
    /// `InodeCore::ts_seq`).
    pub async fn fsync(
        &self,
        dax: &Dax<P>,
        p: &P,
        start: u64,
        end: u64,
        datasync: bool,
    ) -> Result<(), FsError> {
        self.fsync_stamped(dax, p, start, end, datasync)
            .await
            .map(|_| ())
    }

    /// [`DaxfsFile::fsync`], returning for fsync (not fdatasync) the inode's ctime it made
    /// durable: the one the inode had when its sequence to force was read (a checker's
    /// promise; timestamps only grow, so the durable ctime is at least this one).
    pub async fn fsync_stamped(
        &self,
        dax: &Dax<P>,
        p: &P,
        start: u64,
        end: u64,
        datasync: bool,
    ) -> Result<Option<u64>, FsError> {
        let _fn = p.enter_fn("xfs_file_fsync");
        self.write_and_wait_range(dax, p, start, end).await?;
        crate::journal::sfence(p).await?;
        let g = self.fs.ilock(p, &self.inode).await;
        // xfs_fsync_seq: with `datasync`, a timestamp-only change needs no log force.
        let seq = if datasync {
            g.logged_seq
        } else {
            g.logged_seq.max(g.ts_seq)
        };
        let ctime = (!datasync).then_some(g.disk.ctime);
        drop(g);
        self.fs.log_force_seq(p, seq).await.map(|()| ctime)
    }
}

impl<P: PmemPlatform> Daxfs<P> {
    /// open(2) of `name`: the inode with one more open reference ([`Daxfs::release`] drops
    /// it). The namespace lock is held across, so an unlink cannot come in between.
    pub async fn open(&self, p: &P, name: &str) -> Option<Arc<Inode<P>>> {
        let ns = self.lock_ns(p).await;
        let inode = ns.names.get(name).and_then(|i| ns.inodes.get(i)).cloned();
        if let Some(i) = &inode {
            let mut c = self.ilock(p, i).await;
            c.opens += 1;
            drop(c);
        }
        drop(ns);
        inode
    }

    /// The last `fput` of an open: one open reference less; evicts an unlinked inode nobody
    /// uses any more.
    pub async fn release(&self, dax: &Dax<P>, p: &P, inode: &Arc<Inode<P>>) -> Result<(), FsError> {
        let mut c = self.ilock(p, inode).await;
        c.opens -= 1;
        drop(c);
        self.evict_if_unused(dax, p, inode).await.map(|_| ())
    }

    /// `iput_final`: when the inode is unlinked, has no open reference and no mapping (its
    /// `i_mmap` is empty) and nobody claimed it yet, claim it (`I_FREEING`), wait for pinned
    /// pages and delete every DAX entry (`dax_break_layout_final`), then free its blocks and
    /// record ([`Daxfs::evict`]). Returns whether this call evicted it. Called after unlink,
    /// munmap and the end of every operation that held an open reference.
    pub async fn evict_if_unused(
        &self,
        dax: &Dax<P>,
        p: &P,
        inode: &Arc<Inode<P>>,
    ) -> Result<bool, FsError> {
        let mut c = self.ilock(p, inode).await;
        let unlinked = c.disk.in_use && c.disk.flags & INODE_F_ORPHAN != 0;
        if !unlinked || c.opens > 0 || c.freeing {
            drop(c);
            return Ok(false);
        }
        // No new mapping can appear: that needs an open, and the name is gone.
        let mmap = inode.mapping.i_mmap.read(p).await;
        let mapped = !mmap.is_empty();
        drop(mmap);
        if mapped {
            drop(c);
            return Ok(false);
        }
        c.freeing = true;
        drop(c);
        dax_break_layout_final(dax, p, &inode.mapping).await;
        self.evict(p, inode).await.map(|()| true)
    }
}
