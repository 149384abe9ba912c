//! A small file system answering iomap calls for one file, for tests, benches and toy models
//! until daxfs exists: an extent map (written, unwritten, shared) over a bump allocator of
//! device pages, `i_size`, and a "metadata not yet durable" flag that MAP_SYNC faults see as
//! `IOMAP_F_DIRTY`. Its state sits behind one Platform spinlock (the file system's ILOCK).
//!
//! Allocation for a write takes the next device pages (aligned when a whole PMD is allocated,
//! so that PMD faults can map it); blocks are never freed or reused, and block contents are not
//! modelled (a new block is "zeroed" by definition).

use super::iomap::{
    IOMAP_F_DIRTY, IOMAP_F_NEW, IOMAP_F_SHARED, IOMAP_WRITE, Iomap, IomapOps, IomapPair, IomapType,
};
use crate::Errno;
use crate::dax_entry::{PAGE_SHIFT, PAGE_SIZE, PG_PMD_NR};
use sim_core::{Platform, SpinLock};
use std::collections::BTreeMap;

/// The state of an extent's blocks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BlockState {
    Written,
    Unwritten,
}

/// One extent of the file: `len` file pages on device pages from `dev_page`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Extent {
    pub len: u64,
    /// Device page (from the start of the pmem device) of the first file page.
    pub dev_page: u64,
    pub state: BlockState,
    /// Shared with another file (reflink): a write copies it first.
    pub shared: bool,
}

/// The file: its size, its extents, the device allocator.
#[derive(Clone, Debug, Default)]
pub struct TestInode {
    pub i_size: u64,
    /// First file page -> extent (extents never overlap).
    pub extents: BTreeMap<u64, Extent>,
    /// Next device page the bump allocator hands out, and its end (exclusive). Blocks are never
    /// reused.
    pub next_dev: u64,
    pub dev_end: u64,
    /// Allocations or conversions not yet made durable by an fsync.
    pub meta_dirty: bool,
    /// Calls of `iomap_begin` and blocks allocated, for tests.
    pub begins: u64,
    pub allocated: u64,
}

impl TestInode {
    /// The extent covering file page `page`, with its first page.
    pub fn lookup(&self, page: u64) -> Option<(u64, Extent)> {
        let (&s, &e) = self.extents.range(..=page).next_back()?;
        (page - s < e.len).then_some((s, e))
    }

    /// The device page of file page `page`, if it has a block.
    pub fn dev_page(&self, page: u64) -> Option<u64> {
        self.lookup(page).map(|(s, e)| e.dev_page + (page - s))
    }

    /// How many pages from `page` (at most `max`) are in one extent, or all a hole.
    fn run(&self, page: u64, max: u64) -> u64 {
        match self.lookup(page) {
            Some((s, e)) => (e.len - (page - s)).min(max),
            None => {
                let next = self
                    .extents
                    .range(page..)
                    .next()
                    .map_or(u64::MAX, |(&k, _)| k);
                (next - page).min(max)
            }
        }
    }

    /// `nr` fresh device pages (aligned to a PMD when `nr` is one).
    fn alloc_run(&mut self, nr: u64) -> Option<u64> {
        let align = if nr == PG_PMD_NR { nr } else { 1 };
        let start = self.next_dev.div_ceil(align) * align;
        if start + nr > self.dev_end {
            return None;
        }
        self.next_dev = start + nr;
        self.allocated += nr;
        Some(start)
    }

    /// Cut the extent covering `page` so that one starts there.
    fn split_at(&mut self, page: u64) {
        if let Some((s, e)) = self.lookup(page)
            && s < page
        {
            let head = page - s;
            self.extents.insert(s, Extent { len: head, ..e });
            self.extents.insert(
                page,
                Extent {
                    len: e.len - head,
                    dev_page: e.dev_page + head,
                    ..e
                },
            );
        }
    }

    /// Map file pages `page .. page + nr` to device pages from `dev_page`, replacing what was
    /// there.
    pub fn map(&mut self, page: u64, dev_page: u64, nr: u64, state: BlockState, shared: bool) {
        self.split_at(page);
        self.split_at(page + nr);
        let old: Vec<u64> = self
            .extents
            .range(page..page + nr)
            .map(|(&k, _)| k)
            .collect();
        for k in old {
            self.extents.remove(&k);
        }
        let new = Extent {
            len: nr,
            dev_page,
            state,
            shared,
        };
        // Extend the extent before it when the blocks follow on (sequential allocation).
        match self.extents.range_mut(..page).next_back() {
            Some((&s, prev))
                if s + prev.len == page
                    && prev.dev_page + prev.len == dev_page
                    && (prev.state, prev.shared) == (state, shared) =>
            {
                prev.len += nr;
            }
            _ => {
                self.extents.insert(page, new);
            }
        }
        self.next_dev = self.next_dev.max(dev_page + nr);
    }

    /// Preallocate `nr` file pages from `page` (aligned on the device if a whole PMD); returns
    /// the first device page.
    pub fn prealloc(&mut self, page: u64, nr: u64, state: BlockState) -> Option<u64> {
        let d = self.alloc_run(nr)?;
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
        let mk = |dev: u64, n: u64, typ: IomapType, flags: u16| Iomap {
            addr: dev << PAGE_SHIFT,
            offset: off,
            length: n << PAGE_SHIFT,
            typ,
            flags,
        };
        let dirty = |m: bool| if write && m { IOMAP_F_DIRTY } else { 0 };
        let cur = self.lookup(page).map(|(s, e)| (e.dev_page + (page - s), e));
        match cur {
            None if !write => Ok(IomapPair {
                iomap: Iomap::hole(off, n << PAGE_SHIFT),
                srcmap: hole,
            }),
            None => {
                // Allocate the hole (as much of it as the request covers).
                let (d, n) = match self.alloc_run(n) {
                    Some(d) => (d, n),
                    None => (self.alloc_run(1).ok_or(Errno::ENOMEM)?, 1),
                };
                self.map(page, d, n, BlockState::Written, false);
                self.meta_dirty = true;
                Ok(IomapPair {
                    iomap: mk(d, n, IomapType::Mapped, IOMAP_F_NEW | dirty(true)),
                    srcmap: hole,
                })
            }
            Some((dev, e)) if write && e.shared => {
                // Copy on write: new blocks, the old ones as the source.
                let (d, n) = match self.alloc_run(n) {
                    Some(d) => (d, n),
                    None => (self.alloc_run(1).ok_or(Errno::ENOMEM)?, 1),
                };
                self.map(page, d, n, BlockState::Written, false);
                self.meta_dirty = true;
                Ok(IomapPair {
                    iomap: mk(d, n, IomapType::Mapped, IOMAP_F_SHARED | dirty(true)),
                    srcmap: mk(dev, n, IomapType::Mapped, 0),
                })
            }
            Some((dev, e)) if e.state == BlockState::Unwritten && write => {
                // Convert (and zero) for a DAX write.
                self.map(page, dev, n, BlockState::Written, false);
                self.meta_dirty = true;
                Ok(IomapPair {
                    iomap: mk(dev, n, IomapType::Mapped, IOMAP_F_NEW | dirty(true)),
                    srcmap: hole,
                })
            }
            Some((dev, e)) => {
                let typ = match e.state {
                    BlockState::Written => IomapType::Mapped,
                    BlockState::Unwritten => IomapType::Unwritten,
                };
                let sh = if e.shared { IOMAP_F_SHARED } else { 0 };
                Ok(IomapPair {
                    iomap: mk(dev, n, typ, sh | dirty(self.meta_dirty)),
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
                    next_dev: dev_pages.start,
                    dev_end: dev_pages.end,
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
        drop(g);
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
        drop(g);
        r
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
        drop(g);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inode() -> TestInode {
        TestInode {
            i_size: 8 << 20,
            dev_end: 2048,
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
        assert!(!i.lookup(0).unwrap().1.shared);
    }
}
