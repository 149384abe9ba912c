//! daxfs, the DAX file system of pmsim: on-media layout, redo journal, iomap, the XFS locking
//! discipline (i_rwsem, invalidate_lock), file operations, mkfs/mount/fsck.
//!
//! Not built yet: this crate currently only holds its place in the dependency chain
//! sim-core <- sim-mm <- sim-fs <- {CLI, GUI}. Nothing here is reachable from the CLI.
