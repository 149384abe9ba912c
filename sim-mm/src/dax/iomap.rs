//! What the file system answers for a file range: `struct iomap` and `struct iomap_ops`
//! (include/linux/iomap.h). The DAX fault paths call `iomap_begin` with the entry lock held and
//! `iomap_end` after using the answer (`iomap_iter`). daxfs implements [`IomapOps`] over its
//! extent map; [`super::test_iomap`] is a small stand-in with preallocated extents.

use crate::Errno;
use crate::dax_entry::PAGE_SHIFT;
use serde::{Deserialize, Serialize};
use sim_core::Platform;
use std::future::Future;

/// `iomap->type`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum IomapType {
    /// `IOMAP_HOLE`: no blocks; reads see zeros.
    Hole,
    /// `IOMAP_DELALLOC` (never seen on DAX).
    Delalloc,
    /// `IOMAP_MAPPED`: blocks at `addr`.
    Mapped,
    /// `IOMAP_UNWRITTEN`: blocks allocated but reading as zeros.
    Unwritten,
    /// `IOMAP_INLINE` (never seen on DAX).
    Inline,
}

/// `IOMAP_NULL_ADDR`: `addr` of a hole.
pub const IOMAP_NULL_ADDR: u64 = u64::MAX;

/// `iomap->flags`: the blocks were allocated (or converted) by this call (a major fault).
pub const IOMAP_F_NEW: u16 = 1 << 0;
/// The inode has metadata that needs a log force before the data is durable (MAP_SYNC faults
/// return `VM_FAULT_NEEDDSYNC` for it).
pub const IOMAP_F_DIRTY: u16 = 1 << 1;
/// The blocks are shared (reflink): a write must copy them first (`srcmap` holds the source).
pub const IOMAP_F_SHARED: u16 = 1 << 2;

/// `iomap_begin` flags: a write (allocate or convert as needed).
pub const IOMAP_WRITE: u32 = 1 << 0;
pub const IOMAP_ZERO: u32 = 1 << 1;
pub const IOMAP_REPORT: u32 = 1 << 2;
/// Called from a page fault.
pub const IOMAP_FAULT: u32 = 1 << 3;
pub const IOMAP_DIRECT: u32 = 1 << 4;
pub const IOMAP_NOWAIT: u32 = 1 << 5;
/// Called by the DAX core.
pub const IOMAP_DAX: u32 = 1 << 8;

/// `struct iomap`: one extent of the file, `offset .. offset + length` (bytes), at device byte
/// address `addr` (`IOMAP_NULL_ADDR` for holes).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Iomap {
    pub addr: u64,
    pub offset: u64,
    pub length: u64,
    pub typ: IomapType,
    pub flags: u16,
}

impl Iomap {
    /// A hole over `offset .. offset + length`.
    pub fn hole(offset: u64, length: u64) -> Iomap {
        Iomap {
            addr: IOMAP_NULL_ADDR,
            offset,
            length,
            typ: IomapType::Hole,
            flags: 0,
        }
    }

    /// `iomap_sector`-style translation: the device byte address of file position `pos`.
    pub fn device_addr(&self, pos: u64) -> u64 {
        self.addr + (pos - self.offset)
    }

    /// The device page of file position `pos` (relative to the start of the pmem device).
    pub fn device_page(&self, pos: u64) -> u64 {
        self.device_addr(pos) >> PAGE_SHIFT
    }

    pub fn end(&self) -> u64 {
        self.offset + self.length
    }

    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }
}

/// What `iomap_begin` returns: the extent to use, and for a write over shared blocks the source
/// to copy from (`srcmap`; a hole when there is none, as `iomap_iter_srcmap` treats it).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct IomapPair {
    pub iomap: Iomap,
    pub srcmap: Iomap,
}

impl IomapPair {
    /// `iomap_iter_srcmap`: the source of the data (the srcmap when there is one).
    pub fn srcmap(&self) -> &Iomap {
        if self.srcmap.typ == IomapType::Hole {
            &self.iomap
        } else {
            &self.srcmap
        }
    }
}

/// `struct iomap_ops` plus the inode facts the DAX core reads (`i_size_read`) and the sync a
/// MAP_SYNC fault asks for (`vfs_fsync_range`). Implemented by the file system.
pub trait IomapOps<P: Platform> {
    /// `i_size_read(inode)`.
    fn i_size(&self, p: &P) -> impl Future<Output = u64>;
    /// `->iomap_begin(inode, pos, length, flags, &iomap, &srcmap)`: map `pos .. pos + length`
    /// (a returned extent may be shorter, never starts after `pos`). With `IOMAP_WRITE` holes
    /// and unwritten blocks are allocated or converted (zeroed, `IOMAP_F_NEW`).
    fn iomap_begin(
        &self,
        p: &P,
        pos: u64,
        length: u64,
        flags: u32,
    ) -> impl Future<Output = Result<IomapPair, Errno>>;
    /// `->iomap_end(inode, pos, length, written, flags, &iomap)`. Optional, as in the kernel
    /// (`iomap_iter` skips a NULL `->iomap_end`): the default does nothing.
    fn iomap_end(
        &self,
        _p: &P,
        _pos: u64,
        _length: u64,
        _written: u64,
        _flags: u32,
        _iomap: &Iomap,
    ) -> impl Future<Output = Result<(), Errno>> {
        std::future::ready(Ok(()))
    }
    /// `vfs_fsync_range(file, start, end, datasync)` for `dax_finish_sync_fault`: make the
    /// metadata of the range durable (after it, `iomap_begin` no longer sets `IOMAP_F_DIRTY`).
    fn fsync_range(
        &self,
        p: &P,
        start: u64,
        end: u64,
        datasync: bool,
    ) -> impl Future<Output = Result<(), Errno>>;
    /// `file_update_time(vmf->vma->vm_file)` of a write fault through a shared mapping
    /// (`xfs_write_fault`, before it takes `invalidate_lock`): the file system sets and logs
    /// the file's mtime and ctime. Optional: the default does nothing (a file system without
    /// timestamps, the test iomap).
    fn file_update_time(&self, _p: &P) -> impl Future<Output = ()> {
        std::future::ready(())
    }
}
