//! The block allocator: the in-core block bitmap and refcounts (one allocation group; XFS's AGF
//! and refcount btree), inside the file system's allocator mutex.
//!
//! A block is free, in use by one owner (bitmap bit set, refcount 0), or shared by `n >= 2`
//! owners (bit set, refcount `n`). Every change marks the 64-byte lines of the on-media bitmap
//! and refcount table it touched; [`AllocState::take_dirty`] hands them to the transaction.
//!
//! A fourth state lives in core only: *staged* for a copy on write (XFS's CoW staging extents,
//! `xfs_reflink_allocate_cow`). A staged block is neither free (no allocation returns it) nor
//! in the bitmap: it enters the bitmap in the transaction that remaps it into the file
//! ([`AllocState::commit_staging`], `xfs_reflink_end_cow`), or goes back to the free blocks
//! ([`AllocState::cancel_staging`]). A crash in between therefore finds it free, which is what
//! XFS's recovery makes of leftover staging extents (`xfs_reflink_recover_cow`).

use crate::FsError;
use crate::layout::Geometry;
use sim_core::machine::LINE;
use std::collections::{BTreeMap, BTreeSet};

/// The allocator's state.
#[derive(Clone, Debug)]
pub struct AllocState {
    geo: Geometry,
    /// Bit `b % 64` of word `b / 64`: block `b` is in use.
    pub bitmap: Vec<u64>,
    /// Shared blocks only: block -> number of owners (>= 2).
    pub refcount: BTreeMap<u64, u32>,
    /// Free data blocks.
    pub free: u64,
    /// Bit `b % 64` of word `b / 64`: block `b` is staged for a copy on write. Invariant: a
    /// staged block's bitmap bit is clear, and `free` does not count it.
    staged: Vec<u64>,
    /// Lines of the on-media bitmap and refcount table changed since the last `take_dirty`.
    /// Invariant: empty whenever the allocator mutex is free (every changer takes them into
    /// its transaction, or drops them after undoing its change, in the same critical section).
    dirty_bitmap: BTreeSet<u64>,
    dirty_refcount: BTreeSet<u64>,
}

/// Bytes per dirty unit of the bitmap and the refcount table.
const UNIT: u64 = LINE as u64;

impl AllocState {
    /// From the on-media bitmap bytes and refcount table bytes.
    pub fn from_media(geo: Geometry, bitmap: &[u8], refcounts: &[u8]) -> AllocState {
        let words = geo.nblocks.div_ceil(64) as usize;
        // Bit `b % 8` of byte `b / 8` is bit `b % 64` of little-endian word `b / 64`; bits of
        // no block (past `nblocks`) stay clear.
        let bytes = geo.nblocks.div_ceil(8) as usize;
        let mut bm: Vec<u64> = bitmap[..bytes]
            .chunks(8)
            .map(|c| {
                let mut w = [0u8; 8];
                w[..c.len()].copy_from_slice(c);
                u64::from_le_bytes(w)
            })
            .collect();
        if !geo.nblocks.is_multiple_of(64) {
            bm[words - 1] &= (1 << (geo.nblocks % 64)) - 1;
        }
        let mut refcount = BTreeMap::new();
        // Most lines of the table are zero (no shared block): skip them whole.
        let table = &refcounts[..(geo.nblocks * 4) as usize];
        for (l, line) in table.chunks(UNIT as usize).enumerate() {
            if *line == [0u8; UNIT as usize][..line.len()] {
                continue;
            }
            let first = l as u64 * UNIT / 4;
            for (b, c) in (first..).zip(line.chunks_exact(4)) {
                let rc = u32::from_le_bytes(c.try_into().unwrap());
                if rc >= 2 {
                    refcount.insert(b, rc);
                }
            }
        }
        // The blocks in use from `data_start` on: all of them, less those before it.
        let below = |n: u64| -> u64 {
            let whole: u64 = bm[..(n / 64) as usize]
                .iter()
                .map(|w| u64::from(w.count_ones()))
                .sum();
            let part = if n.is_multiple_of(64) {
                0
            } else {
                u64::from((bm[(n / 64) as usize] & ((1 << (n % 64)) - 1)).count_ones())
            };
            whole + part
        };
        let used = below(geo.nblocks) - below(geo.data_start);
        AllocState {
            geo,
            bitmap: bm,
            staged: vec![0u64; words],
            refcount,
            free: geo.nblocks - geo.data_start - used,
            dirty_bitmap: BTreeSet::new(),
            dirty_refcount: BTreeSet::new(),
        }
    }

    pub fn in_use(&self, b: u64) -> bool {
        self.bitmap[(b / 64) as usize] & (1 << (b % 64)) != 0
    }

    /// Whether block `b` is staged for a copy on write.
    pub fn staged(&self, b: u64) -> bool {
        self.staged[(b / 64) as usize] & (1 << (b % 64)) != 0
    }

    /// Whether no allocation may return block `b` (in use or staged).
    fn taken(&self, b: u64) -> bool {
        (self.bitmap[(b / 64) as usize] | self.staged[(b / 64) as usize]) & (1 << (b % 64)) != 0
    }

    /// Blocks staged for copies on write (0 whenever no copy on write is in flight).
    pub fn staged_count(&self) -> u64 {
        self.staged.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Owners of block `b` (0 free, 1 in use, `n` shared).
    pub fn owners(&self, b: u64) -> u32 {
        match self.refcount.get(&b) {
            Some(&n) => n,
            None => self.in_use(b) as u32,
        }
    }

    fn set(&mut self, b: u64, used: bool) {
        let (w, m) = ((b / 64) as usize, 1u64 << (b % 64));
        // Only a free block is allocated and only a used one freed.
        assert_eq!(self.bitmap[w] & m != 0, !used, "block {b} state");
        self.bitmap[w] ^= m;
        if used {
            self.free -= 1;
        } else {
            self.free += 1;
        }
        self.dirty_bitmap
            .insert(self.geo.bitmap_byte(b) / UNIT * UNIT);
    }

    fn set_refcount(&mut self, b: u64, n: u32) {
        if n >= 2 {
            self.refcount.insert(b, n);
        } else {
            self.refcount.remove(&b);
        }
        self.dirty_refcount
            .insert(self.geo.refcount_addr(b) / UNIT * UNIT);
    }

    /// Length of the free run from `b` (at most `max`).
    fn free_run(&self, b: u64, max: u64) -> u64 {
        let end = (b + max).min(self.geo.nblocks);
        let mut x = b;
        while x < end && !self.taken(x) {
            x += 1;
        }
        x - b
    }

    /// The first free data block at or after `b`.
    fn next_free(&self, mut b: u64) -> Option<u64> {
        while b < self.geo.nblocks {
            let i = (b / 64) as usize;
            let w = (self.bitmap[i] | self.staged[i]) >> (b % 64);
            if w == u64::MAX >> (b % 64) {
                b = (b / 64 + 1) * 64;
                continue;
            }
            if !self.taken(b) {
                return Some(b);
            }
            b += 1;
        }
        None
    }

    /// Allocate up to `want` blocks for file block `fblock`: returns `(first block, count)`,
    /// count >= 1. For a request of 2 MiB or more the run is placed so that device and file
    /// offsets agree modulo 2 MiB (a PMD fault can map it), whole when such a run is free,
    /// else one 2 MiB piece of it; otherwise (or when no aligned run is free) the first free
    /// run. ENOSPC when no block is free.
    pub fn alloc(&mut self, fblock: u64, want: u64) -> Result<(u64, u64), FsError> {
        let (d, n) = self.find(fblock, want)?;
        for b in d..d + n {
            self.set(b, true);
        }
        Ok((d, n))
    }

    /// Stage up to `want` free blocks for a copy on write of file block `fblock` (placed as
    /// [`AllocState::alloc`] places them); nothing on media changes.
    pub fn alloc_staging(&mut self, fblock: u64, want: u64) -> Result<(u64, u64), FsError> {
        let (d, n) = self.find(fblock, want)?;
        for b in d..d + n {
            self.stage(b, true);
        }
        Ok((d, n))
    }

    /// Return staged blocks `d .. d + n` to the free blocks (`xfs_reflink_cancel_cow_range`).
    pub fn cancel_staging(&mut self, d: u64, n: u64) {
        for b in d..d + n {
            self.stage(b, false);
        }
    }

    /// Staged blocks `d .. d + n` become in use by one owner (`xfs_reflink_end_cow`): their
    /// bitmap lines go into the caller's transaction.
    pub fn commit_staging(&mut self, d: u64, n: u64) {
        for b in d..d + n {
            self.stage(b, false);
            self.set(b, true);
        }
    }

    fn stage(&mut self, b: u64, on: bool) {
        let (w, m) = ((b / 64) as usize, 1u64 << (b % 64));
        // Only a free block is staged, and only a staged one unstaged.
        assert!(self.bitmap[w] & m == 0, "staging block {b} in use");
        assert_eq!(self.staged[w] & m != 0, !on, "block {b} staging state");
        self.staged[w] ^= m;
        if on {
            self.free -= 1;
        } else {
            self.free += 1;
        }
    }

    /// Where [`AllocState::alloc`] would place up to `want` blocks for file block `fblock`.
    fn find(&self, fblock: u64, want: u64) -> Result<(u64, u64), FsError> {
        assert!(want >= 1);
        let pmd = self.geo.pmd_blocks();
        let mut found = None;
        if pmd > 1 && want >= pmd {
            for len in [want, pmd] {
                let mut d = self.geo.data_start + (fblock % pmd);
                while d + len <= self.geo.nblocks {
                    if self.free_run(d, len) == len {
                        found = Some((d, len));
                        break;
                    }
                    d += pmd;
                }
                if found.is_some() {
                    break;
                }
            }
        }
        if found.is_none() {
            let d = self.next_free(self.geo.data_start).ok_or(FsError::ENOSPC)?;
            found = Some((d, self.free_run(d, want)));
        }
        Ok(found.expect("found"))
    }

    /// Allocate exactly blocks `d .. d + n` (they must be free): mkfs and tests.
    pub fn alloc_at(&mut self, d: u64, n: u64) {
        for b in d..d + n {
            self.set(b, true);
        }
    }

    /// Drop one owner of each block of `d .. d + n`: shared blocks lose a reference, others
    /// are freed.
    pub fn free(&mut self, d: u64, n: u64) {
        for b in d..d + n {
            match self.refcount.get(&b) {
                Some(&rc) => self.set_refcount(b, rc - 1),
                None => self.set(b, false),
            }
        }
    }

    /// Add one owner to each (in-use) block of `d .. d + n` (reflink).
    pub fn share(&mut self, d: u64, n: u64) {
        for b in d..d + n {
            // Only blocks somebody owns are shared.
            assert!(self.in_use(b), "sharing free block {b}");
            let rc = self.owners(b);
            self.set_refcount(b, rc + 1);
        }
    }

    /// Whether block `d` is shared, and for how many blocks from `d` (at most `max`) that
    /// stays the same.
    pub fn shared_run(&self, d: u64, max: u64) -> (bool, u64) {
        let shared = self.refcount.contains_key(&d);
        let mut n = 1;
        while n < max && self.refcount.contains_key(&(d + n)) == shared {
            n += 1;
        }
        (shared, n)
    }

    /// The on-media content of every bitmap and refcount line changed since the last call.
    pub fn take_dirty(&mut self) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        for unit in std::mem::take(&mut self.dirty_bitmap) {
            out.push((unit, self.bitmap_line(unit)));
        }
        for unit in std::mem::take(&mut self.dirty_refcount) {
            out.push((unit, self.refcount_line(unit)));
        }
        out
    }

    /// The bitmap bytes of the 64-byte unit at device address `unit`.
    pub fn bitmap_line(&self, unit: u64) -> Vec<u8> {
        let first_byte = unit - self.geo.addr(self.geo.bitmap_start);
        (0..UNIT)
            .map(|i| {
                let byte = first_byte + i;
                let w = (byte / 8) as usize;
                if w < self.bitmap.len() {
                    (self.bitmap[w] >> ((byte % 8) * 8)) as u8
                } else {
                    0
                }
            })
            .collect()
    }

    /// The first `len` bytes of the refcount region as the in-core counts write them: the
    /// [`AllocState::refcount_line`]s of the region, concatenated (`len` a multiple of 64).
    pub fn refcount_bytes(&self, len: u64) -> Vec<u8> {
        let mut v = vec![0u8; len as usize];
        for (&b, &c) in self.refcount.range(..len / 4) {
            let at = (b * 4) as usize;
            v[at..at + 4].copy_from_slice(&c.to_le_bytes());
        }
        v
    }

    /// The refcount bytes of the 64-byte unit at device address `unit`.
    pub fn refcount_line(&self, unit: u64) -> Vec<u8> {
        let first = (unit - self.geo.addr(self.geo.refcount_start)) / 4;
        let mut v = Vec::with_capacity(UNIT as usize);
        for b in first..first + UNIT / 4 {
            v.extend_from_slice(&self.refcount.get(&b).copied().unwrap_or(0).to_le_bytes());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(size: u64) -> AllocState {
        let geo = Geometry::new(size, 4096).unwrap();
        let mut bm = vec![0u8; (geo.bitmap_blocks * 4096) as usize];
        for b in 0..geo.data_start {
            bm[(b / 8) as usize] |= 1 << (b % 8);
        }
        let rc = vec![0u8; (geo.refcount_blocks * 4096) as usize];
        AllocState::from_media(geo, &bm, &rc)
    }

    #[test]
    fn pmd_requests_get_aligned_runs_and_small_ones_first_fit() {
        let mut a = state(16 << 20);
        let ds = a.geo.data_start;
        assert_eq!(ds % 512, 0);
        let (d, n) = a.alloc(0, 1).unwrap();
        assert_eq!((d, n), (ds, 1));
        // A 2 MiB request for file block 512 skips the partly used first 2 MiB.
        let (d, n) = a.alloc(512, 512).unwrap();
        assert_eq!((d % 512, n), (0, 512));
        assert_eq!(d, ds + 512);
        // File block 3 + 512: device offset agrees modulo 2 MiB.
        let (d, n) = a.alloc(515, 512).unwrap();
        assert_eq!(((d - 3) % 512, n), (0, 512));
        let free = a.free;
        a.free(d, n);
        assert_eq!(a.free, free + 512);
        // Sharing and freeing shared blocks.
        a.share(ds, 1);
        assert_eq!(a.owners(ds), 2);
        assert_eq!(a.shared_run(ds, 4), (true, 1));
        a.free(ds, 1);
        assert_eq!(a.owners(ds), 1);
        a.free(ds, 1);
        assert_eq!(a.owners(ds), 0);
        // Fill up: ENOSPC, never a panic.
        let mut got = 0;
        loop {
            match a.alloc(0, 100) {
                Ok((_, n)) => got += n,
                Err(e) => {
                    assert_eq!(e, FsError::ENOSPC);
                    break;
                }
            }
        }
        assert_eq!(a.free, 0);
        assert!(got > 0);
        assert!(!a.take_dirty().is_empty());
    }

    #[test]
    fn staged_blocks_are_taken_but_not_in_the_bitmap_until_committed() {
        let mut a = state(16 << 20);
        let ds = a.geo.data_start;
        let free = a.free;
        let (d, n) = a.alloc_staging(0, 2).unwrap();
        assert_eq!((d, n), (ds, 2));
        assert!(
            a.take_dirty().is_empty(),
            "staging changes nothing on media"
        );
        assert!(a.staged(d) && !a.in_use(d));
        assert_eq!((a.free, a.staged_count()), (free - 2, 2));
        // No allocation returns a staged block.
        let (e, _) = a.alloc(0, 1).unwrap();
        assert_eq!(e, ds + 2);
        a.cancel_staging(d, 1);
        assert_eq!((a.free, a.staged_count()), (free - 2, 1));
        a.commit_staging(d + 1, 1);
        assert!(a.in_use(d + 1) && !a.staged(d + 1));
        assert_eq!((a.free, a.staged_count()), (free - 2, 0));
        assert!(
            !a.take_dirty().is_empty(),
            "the commit logs the bitmap line"
        );
        assert_eq!(
            a.alloc(0, 1).unwrap().0,
            d,
            "the cancelled block is free again"
        );
    }
}

#[cfg(test)]
mod refcount_bytes_tests {
    use super::*;

    /// `from_media` by words is `from_media` bit by bit (the way it was written first): on
    /// random bitmap and (dense and sparse) refcount bytes (set bits and counts past the last block included),
    /// for devices whose block count is and is not a multiple of 64.
    #[test]
    fn reading_the_bitmap_by_words_reads_every_bit_as_one_at_a_time() {
        let mut x: u64 = 0x853c_49e6_748f_ea9b;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for (size, bs) in [
            (8 << 20, 4096),
            ((8 << 20) + 37 * 4096, 4096),
            ((16 << 20) + 5 * 4096, 4096),
            (64 << 20, 2 << 20),
        ] {
            let geo = Geometry::new(size, bs).unwrap();
            for round in 0..50 {
                let density = [0, 1, 3, 7, 63][round % 5];
                let bm: Vec<u8> = (0..geo.bitmap_blocks * bs)
                    .map(|_| {
                        if density == 63 {
                            0xff
                        } else {
                            next() as u8 & next() as u8 & (0xff >> density)
                        }
                    })
                    .collect();
                // Dense and sparse tables (whole zero lines are skipped).
                let one_in = [8, 512, 8, 4096, 64][round % 5];
                let rc: Vec<u8> = (0..geo.refcount_blocks * bs)
                    .map(|_| {
                        if next() % one_in == 0 {
                            (next() % 4) as u8
                        } else {
                            0
                        }
                    })
                    .collect();
                let a = AllocState::from_media(geo, &bm, &rc);
                let mut bits = vec![0u64; geo.nblocks.div_ceil(64) as usize];
                for b in 0..geo.nblocks {
                    if bm[(b / 8) as usize] & (1 << (b % 8)) != 0 {
                        bits[(b / 64) as usize] |= 1 << (b % 64);
                    }
                }
                let mut counts = BTreeMap::new();
                for b in 0..geo.nblocks {
                    let o = (b * 4) as usize;
                    let c = u32::from_le_bytes(rc[o..o + 4].try_into().unwrap());
                    if c >= 2 {
                        counts.insert(b, c);
                    }
                }
                let used = (geo.data_start..geo.nblocks)
                    .filter(|&b| bits[(b / 64) as usize] & (1 << (b % 64)) != 0)
                    .count() as u64;
                assert_eq!(a.bitmap, bits, "{size} {bs} {round}");
                assert_eq!(a.refcount, counts, "{size} {bs} {round}");
                assert_eq!(
                    a.free,
                    geo.nblocks - geo.data_start - used,
                    "{size} {bs} {round}"
                );
                assert_eq!(a.staged, vec![0u64; bits.len()]);
            }
        }
    }

    /// The whole region at once is its lines one by one, for counts at the region's start,
    /// middle and last block, with none, and past the bytes asked for.
    #[test]
    fn the_refcount_region_is_its_lines_concatenated() {
        let geo = Geometry::new(8 << 20, 4096).unwrap();
        let bm = vec![0u8; (geo.bitmap_blocks * 4096) as usize];
        let rc = vec![0u8; (geo.refcount_blocks * 4096) as usize];
        let mut a = AllocState::from_media(geo, &bm, &rc);
        let used = geo.refcount_used_bytes();
        let base = geo.addr(geo.refcount_start);
        let lines = |a: &AllocState| -> Vec<u8> {
            (base..base + used)
                .step_by(64)
                .flat_map(|u| a.refcount_line(u))
                .collect()
        };
        assert_eq!(a.refcount_bytes(used), lines(&a));
        for (b, c) in [(0, 2), (17, 3), (geo.nblocks - 1, 0x0102_0304), (300, 9)] {
            a.refcount.insert(b, c);
            assert_eq!(a.refcount_bytes(used), lines(&a), "block {b}");
        }
        assert_eq!(a.refcount_bytes(128), lines(&a)[..128].to_vec());
    }
}
