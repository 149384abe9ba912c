//! A small file system answering iomap calls for one file, for tests, benches and toy models
//! until daxfs exists: a per-page extent map (written, unwritten, shared) over a pool of device
//! pages, `i_size`, and a "metadata not yet durable" flag that MAP_SYNC faults see as
//! `IOMAP_F_DIRTY`. Its state sits behind one Platform spinlock (the file system's ILOCK).
//!
//! Allocation for a write takes the lowest free run of device pages (aligned to its length when
//! that is a whole PMD, so that PMD faults can map it); block contents are not modelled (a new
//! block is "zeroed" by definition).

use super::iomap::{
    IOMAP_F_DIRTY, IOMAP_F_NEW, IOMAP_F_SHARED, IOMAP_WRITE, Iomap, IomapOps, IomapPair, IomapType,
};
use crate::Errno;
use crate::dax_entry::{PAGE_SHIFT, PAGE_SIZE, PG_PMD_NR};
use sim_core::{Platform, SpinLock};
use std::collections::{BTreeMap, BTreeSet};

/// The state of one file page's block.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BlockState {
    Written,
    Unwritten,
}

/// One file page's block.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Block {
    /// Device page (from the start of the pmem device).
    pub dev_page: u64,
    pub state: BlockState,
    /// Shared with another file (reflink): a write copies it first.
    pub shared: bool,
}

/// The file: its size, its blocks, the free device pages.
#[derive(Clone, Debug, Default)]
pub struct TestInode {
    pub i_size: u64,
    /// File page -> block.
    pub blocks: BTreeMap<u64, Block>,
    pub free: BTreeSet<u64>,
    /// Allocations or conversions not yet made durable by an fsync.
    pub meta_dirty: bool,
    /// Calls of `iomap_begin` and blocks allocated, for tests.
    pub begins: u64,
    pub allocated: u64,
}

impl TestInode {
    /// The run of file pages from `page` (at most `max` long) that are all holes, or all blocks
    /// with one state, contiguous on the device.
    fn run(&self, page: u64, max: u64) -> u64 {
        let first = self.blocks.get(&page).copied();
        let mut n = 1;
        while n < max {
            let next = self.blocks.get(&(page + n)).copied();
            let same = match (first, next) {
                (None, None) => true,
                (Some(a), Some(b)) => {
                    b.state == a.state && b.shared == a.shared && b.dev_page == a.dev_page + n
                }
                _ => false,
            };
            if !same {
                break;
            }
            n += 1;
        }
        n
    }

    /// The lowest free run of `nr` device pages (aligned to a PMD when `nr` is one).
    fn alloc_run(&mut self, nr: u64) -> Option<u64> {
        let start = self
            .free
            .iter()
            .copied()
            .filter(|d| nr != PG_PMD_NR || d % nr == 0)
            .find(|&d| (d..d + nr).all(|x| self.free.contains(&x)))?;
        for d in start..start + nr {
            self.free.remove(&d);
        }
        self.allocated += nr;
        Some(start)
    }

    /// Map file pages `page .. page + nr` to device pages from `dev_page`.
    pub fn map(&mut self, page: u64, dev_page: u64, nr: u64, state: BlockState, shared: bool) {
        for i in 0..nr {
            self.free.remove(&(dev_page + i));
            self.blocks.insert(
                page + i,
                Block {
                    dev_page: dev_page + i,
                    state,
                    shared,
                },
            );
        }
    }

    /// Preallocate `nr` file pages from `page` (aligned to `nr` on the device when possible);
    /// returns the first device page.
    pub fn prealloc(&mut self, page: u64, nr: u64, state: BlockState) -> Option<u64> {
        let align = if nr >= PG_PMD_NR { PG_PMD_NR } else { 1 };
        let d = self
            .alloc_run(nr.max(align))
            .or_else(|| self.alloc_run(nr))?;
        self.map(page, d, nr, state, false);
        Some(d)
    }

    /// `iomap_begin` on the locked state.
    pub fn begin(&mut self, pos: u64, length: u64, flags: u32) -> Result<IomapPair, Errno> {
        self.begins += 1;
        let page = pos >> PAGE_SHIFT;
        let max = length.div_ceil(PAGE_SIZE).max(1);
        let write = flags & IOMAP_WRITE != 0;
        let n = self.run(page, max);
        let off = page << PAGE_SHIFT;
        let hole = Iomap::hole(off, 0);
        let cur = self.blocks.get(&page).copied();
        let mk = |b: Block, n: u64, typ: IomapType, flags: u16| Iomap {
            addr: b.dev_page << PAGE_SHIFT,
            offset: off,
            length: n << PAGE_SHIFT,
            typ,
            flags,
        };
        let dirty = |m: bool| if write && m { IOMAP_F_DIRTY } else { 0 };
        match cur {
            None if !write => Ok(IomapPair {
                iomap: Iomap::hole(off, n << PAGE_SHIFT),
                srcmap: hole,
            }),
            None => {
                // Allocate the hole (as much of it as the request covers, aligned if a PMD).
                let (d, n) = match self.alloc_run(n) {
                    Some(d) => (d, n),
                    None => (self.alloc_run(1).ok_or(Errno::ENOMEM)?, 1),
                };
                self.map(page, d, n, BlockState::Written, false);
                self.meta_dirty = true;
                let b = self.blocks[&page];
                Ok(IomapPair {
                    iomap: mk(b, n, IomapType::Mapped, IOMAP_F_NEW | dirty(true)),
                    srcmap: hole,
                })
            }
            Some(b) if write && b.shared => {
                // Copy on write: new blocks, the old ones as the source.
                let old = mk(b, n, IomapType::Mapped, 0);
                let (d, n) = match self.alloc_run(n) {
                    Some(d) => (d, n),
                    None => (self.alloc_run(1).ok_or(Errno::ENOMEM)?, 1),
                };
                self.map(page, d, n, BlockState::Written, false);
                self.meta_dirty = true;
                let nb = self.blocks[&page];
                Ok(IomapPair {
                    iomap: mk(nb, n, IomapType::Mapped, IOMAP_F_SHARED | dirty(true)),
                    srcmap: Iomap {
                        length: n << PAGE_SHIFT,
                        ..old
                    },
                })
            }
            Some(b) if b.state == BlockState::Unwritten && write => {
                // Convert (and zero) for a DAX write.
                for i in 0..n {
                    if let Some(x) = self.blocks.get_mut(&(page + i)) {
                        x.state = BlockState::Written;
                    }
                }
                self.meta_dirty = true;
                Ok(IomapPair {
                    iomap: mk(b, n, IomapType::Mapped, IOMAP_F_NEW | dirty(true)),
                    srcmap: hole,
                })
            }
            Some(b) => {
                let typ = match b.state {
                    BlockState::Written => IomapType::Mapped,
                    BlockState::Unwritten => IomapType::Unwritten,
                };
                let sh = if b.shared { IOMAP_F_SHARED } else { 0 };
                Ok(IomapPair {
                    iomap: mk(b, n, typ, sh | dirty(self.meta_dirty)),
                    srcmap: hole,
                })
            }
        }
    }
}

/// The test file system: one file, its state behind the ILOCK.
pub struct TestIomap<P: Platform> {
    pub ilock: SpinLock<P, TestInode>,
}

impl<P: Platform> TestIomap<P> {
    /// A file of `i_size` bytes with no blocks, allocating from device pages `dev_pages`.
    pub fn new(p: &P, i_size: u64, dev_pages: std::ops::Range<u64>) -> TestIomap<P> {
        TestIomap {
            ilock: SpinLock::new(
                p,
                "test_ilock",
                TestInode {
                    i_size,
                    free: dev_pages.collect(),
                    ..TestInode::default()
                },
            ),
        }
    }

    /// The state, for setting up before anything else can reach it.
    pub fn inode_mut(&mut self) -> &mut TestInode {
        self.ilock.get_mut()
    }

    /// A copy of the state (one locked step).
    pub async fn inode(&self, p: &P) -> TestInode {
        let g = self.ilock.lock(p).await;
        let s = g.clone();
        g.unlock().await;
        s
    }
}

impl<P: Platform> IomapOps<P> for TestIomap<P> {
    async fn i_size(&self, p: &P) -> u64 {
        let g = self.ilock.lock(p).await;
        let s = g.i_size;
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
        let mut g = self.ilock.lock(p).await;
        let r = g.begin(pos, length, flags);
        g.unlock().await;
        r
    }

    async fn iomap_end(
        &self,
        _p: &P,
        _pos: u64,
        _length: u64,
        _written: u64,
        _flags: u32,
        _iomap: &Iomap,
    ) -> Result<(), Errno> {
        Ok(())
    }

    async fn fsync_range(
        &self,
        p: &P,
        _start: u64,
        _end: u64,
        _datasync: bool,
    ) -> Result<(), Errno> {
        let mut g = self.ilock.lock(p).await;
        g.meta_dirty = false;
        g.unlock().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inode() -> TestInode {
        TestInode {
            i_size: 8 << 20,
            free: (0..2048).collect(),
            ..TestInode::default()
        }
    }

    #[test]
    fn holes_unwritten_and_mapped_extents() {
        let mut i = inode();
        assert_eq!(i.prealloc(0, 4, BlockState::Written), Some(0));
        assert_eq!(i.prealloc(8, 2, BlockState::Unwritten), Some(4));
        let m = i.begin(0, 8 * 4096, 0).unwrap().iomap;
        assert_eq!((m.typ, m.addr, m.length), (IomapType::Mapped, 0, 4 * 4096));
        let h = i.begin(4 * 4096, PAGE_SIZE * 512, 0).unwrap().iomap;
        assert_eq!(
            (h.typ, h.offset, h.length),
            (IomapType::Hole, 4 * 4096, 4 * 4096)
        );
        let u = i.begin(8 * 4096, 4096, 0).unwrap().iomap;
        assert_eq!(u.typ, IomapType::Unwritten);
        assert!(!i.meta_dirty);
        // A write converts the unwritten block: new, and dirty metadata from now on.
        let w = i.begin(8 * 4096, 4096, IOMAP_WRITE).unwrap().iomap;
        assert_eq!(w.typ, IomapType::Mapped);
        assert!(w.has(IOMAP_F_NEW) && w.has(IOMAP_F_DIRTY));
        assert!(i.meta_dirty);
        // A write into a hole allocates.
        let a = i.begin(20 * 4096, 4096, IOMAP_WRITE).unwrap().iomap;
        assert_eq!((a.typ, a.length), (IomapType::Mapped, 4096));
        assert!(a.has(IOMAP_F_NEW));
        assert_eq!(i.allocated, 4 + 2 + 1);
        // A PMD-sized write into a hole gets an aligned 2 MiB run.
        let p = i.begin(512 * 4096, 512 * 4096, IOMAP_WRITE).unwrap().iomap;
        assert_eq!(p.length, 512 * 4096);
        assert_eq!((p.addr >> PAGE_SHIFT) % 512, 0);
    }

    #[test]
    fn a_write_to_shared_blocks_copies_them() {
        let mut i = inode();
        i.map(0, 100, 1, BlockState::Written, true);
        let r = i.begin(0, 4096, 0).unwrap();
        assert!(r.iomap.has(IOMAP_F_SHARED));
        assert_eq!(r.srcmap().addr, 100 << PAGE_SHIFT);
        let w = i.begin(0, 4096, IOMAP_WRITE).unwrap();
        assert!(w.iomap.has(IOMAP_F_SHARED));
        assert_ne!(w.iomap.addr, 100 << PAGE_SHIFT);
        assert_eq!(w.srcmap().addr, 100 << PAGE_SHIFT);
        assert!(!i.blocks[&0].shared);
    }
}
