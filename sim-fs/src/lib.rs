//! daxfs, the DAX file system of pmsim: on-media layout, redo journal, allocator, extent maps,
//! iomap for the DAX core, mkfs/mount/unmount/fsck.
//!
//! | file | what | kernel twin |
//! | --- | --- | --- |
//! | [`layout`] | the on-media format (region table, superblock, inode records) | `xfs_format.h` |
//! | [`journal`] | the redo journal: CIL, log force, recovery | `xfs_log*.c`, `xfs_log_recover.c` |
//! | [`alloc`] | block bitmap and refcounts in core; 2 MiB-aligned allocation | `xfs_alloc.c`, `xfs_refcount.c` |
//! | [`extent`] | an inode's extent map as plain data | `xfs_bmap.c` |
//! | [`fs`] | the mounted file system: mkfs, mount (journal and orphan recovery), unmount, create, unlink/evict, fallocate, reflink, truncate of blocks | `xfs_super.c`, `xfs_inode.c`, `xfs_reflink.c` |
//! | [`file`] | read/write through `dax_iomap_rw`, truncate, fallocate (all modes), fsync/fdatasync, open references, eviction of unlinked inodes on the last reference; layouts broken before blocks go | `xfs_file.c`, `xfs_iops.c`, `xfs_bmap_util.c` |
//! | [`iomap`] | `iomap_begin`/`iomap_end` for the DAX core; punch hole | `xfs_iomap.c` (`xfs_dax_write_iomap_ops`) |
//! | [`locks`] | the lock order and its lockdep-style check | `lockdep`, `xfs_ilock` |
//! | [`fsck`] | check every structure and cross-reference, naming structure and block | `xfs_repair -n` |
//! | [`rmap`] | the block reverse map (who owns a device block), `notify_failure`, shutdown | `xfs_rmap.c`, `xfs_notify_failure.c` |
//! | [`runner`] | the trace runner: a trace executed on machine, mm, DAX core and daxfs | (none) |
//! | `runner_mf.rs` | the runner's reflink, pin/unpin, dio-read, poison and signal delivery | (none) |
//!
//! **Locks** (Platform primitives; outermost first): `i_rwsem` (IOLOCK) -> the mapping's
//! `invalidate_lock` (MMAPLOCK) -> the DAX core's locks (mmap_lock, entry locks; faults call
//! `iomap_begin` holding an entry lock) -> the namespace mutex -> `ILOCK` (per inode; two are
//! taken in inode-number order) -> the allocator mutex -> the log mutex. Every metadata change
//! is made and inserted into the CIL with the locks of the state it captured still held, so the
//! CIL never holds an older copy of a unit over a newer one. [`locks::LockDep`] checks the
//! order at every acquisition through `Daxfs::{iolock_*, mmaplock_*, ilock, lock_*}`.
//!
//! **Timestamps**: mtime and ctime in the inode record (format version 2), from the coarse
//! clock (`fs::current_time`: the CPU clock truncated to a 4 ms jiffy), set by create,
//! write(2) and a write fault through a shared mapping (`file_update_time`, a transaction of
//! its own when the time changed), truncate, fallocate (every mode) and reflink (the
//! destination), and ctime by unlink. fsync forces the log up to the inode's last change;
//! fdatasync (and MAP_SYNC) only up to its last change other than timestamps
//! (`InodeCore::ts_seq`), so after an overwrite of allocated blocks fdatasync forces nothing
//! and a crash may keep the old mtime, as on XFS. No atime: reads change nothing on media
//! (XFS with `relatime` would log one after a modification; not modelled).
//!
//! Not built yet: the block rmap is computed from the in-core extent maps (no rmap btree on
//! the media).

pub mod alloc;
pub mod crashcheck;
pub mod extent;
pub mod file;
mod filebytes;
pub mod fs;
pub mod fsck;
pub mod iomap;
pub mod journal;
pub mod layout;
pub mod locks;
pub mod rmap;
pub mod runner;

pub use fs::{Daxfs, Inode, InodeCore, MountInfo, mkfs};
pub use fsck::{FsckReport, Problem, fsck_image, fsck_meta};
pub use iomap::DaxfsFile;

use sim_core::machine::MemError;
use std::fmt;

/// Errors of file-system operations, named after their errnos (x86-64 values).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FsError {
    ENOENT = 2,
    EIO = 5,
    EEXIST = 17,
    EINVAL = 22,
    EFBIG = 27,
    ENOSPC = 28,
    ENAMETOOLONG = 36,
}

impl FsError {
    /// A failed media access: a machine check on metadata or a range outside the device.
    pub fn from_mem(_: MemError) -> FsError {
        FsError::EIO
    }

    /// The DAX core's errno: EINVAL and ENOSPC keep their names, the other file-system errors
    /// reach the DAX core as EIO; a fault turns either into SIGBUS (`dax_fault_return`), as
    /// the kernel's `vmf_error(-ENOSPC)` does.
    pub fn to_mm(self) -> sim_mm::Errno {
        match self {
            FsError::EINVAL => sim_mm::Errno::EINVAL,
            FsError::ENOSPC => sim_mm::Errno::ENOSPC,
            _ => sim_mm::Errno::EIO,
        }
    }

    /// A DAX-core errno as the file system reports it (what has no twin here is EIO).
    pub fn from_mm(e: sim_mm::Errno) -> FsError {
        match e {
            sim_mm::Errno::EINVAL => FsError::EINVAL,
            sim_mm::Errno::ENOSPC => FsError::ENOSPC,
            _ => FsError::EIO,
        }
    }
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for FsError {}
