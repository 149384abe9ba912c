//! The on-media format of daxfs: where each structure lives and how its bytes are laid out.
//!
//! The file system owns the whole pmem device; device byte address 0 is pmem address 0 (and
//! device page `n` is pfn `base_pfn + n` for the DAX core). Everything is little-endian. All
//! regions start on a block boundary; `B` is the block size (4 KiB by default, any power of two
//! from 4 KiB to 2 MiB), `N` the number of blocks (`pmem size / B`).
//!
//! | region | first block | blocks | content |
//! | --- | --- | --- | --- |
//! | superblock | 0 | 1 | [`Superblock`]: geometry, clean flag, checksum (first 128 bytes) |
//! | journal | 1 | `journal_blocks` = clamp(N / 256, 16 KiB / B rounded up, 256 KiB / B) | redo log, see `journal.rs` |
//! | inode table | after the journal | `ninodes * 1 KiB / B` (rounded up) | `ninodes` = clamp(N / 256, 16, 1024) records of [`INODE_SIZE`] bytes |
//! | block bitmap | after the inodes | `N / 8 / B` (rounded up) | bit `b % 8` of byte `b / 8`: block `b` is in use |
//! | refcounts | after the bitmap | `N * 4 / B` (rounded up) | u32 per block: 0 = not shared, n >= 2 = shared by n owners |
//! | data | `data_start`: rounded up to 2 MiB | up to N | file blocks |
//!
//! The data region starts 2 MiB-aligned so that an extent placed at a 2 MiB-aligned device
//! address is mapped by a PMD fault (pfns are PMD-aligned exactly when device addresses are).
//! Metadata blocks (`0 .. data_start`) are marked in use in the bitmap.
//!
//! **Inode record** ([`INODE_SIZE`] = 1024 bytes at `itable_start * B + (ino - 1) * 1024`;
//! inode numbers start at 1):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic [`INODE_MAGIC`] when in use, 0 when free |
//! | 4 | 4 | flags ([`INODE_F_ORPHAN`]: unlinked, blocks not yet freed) |
//! | 8 | 16 | size: the size in bytes u64, then its complement u64 ([`SIZE_OFF`], [`size_field`]) |
//! | 24 | 8 | generation |
//! | 32 | 64 | name (the path; the namespace is flat) |
//! | 96 | 4 | number of extents |
//! | 100 | 4 | name length |
//! | 104 | 8 | mtime: ns of the coarse clock ([`MTIME_OFF`]) |
//! | 112 | 8 | ctime: ns of the coarse clock ([`CTIME_OFF`]) |
//! | 128 | 24 * [`MAX_EXTENTS`] | extents, sorted by file block: file block u64, device block u64, length u32, flags u32 ([`EXTENT_F_UNWRITTEN`]) |
//!
//! The size is a 16-byte field: the size and its bitwise complement, which must agree. daxfs
//! changes it only inside a journaled inode record (all or nothing); bug mode
//! `torn-inode-size` writes it in place with one 16-byte store, which x86 does not make
//! failure-atomic (only aligned 8-byte stores are): a crash may keep one word of it, and the
//! record then fails to decode ("torn size"), which mount and fsck report.
//!
//! **Timestamps** (format version 2): the last modification of the data (mtime) and of the
//! inode (ctime), in ns of the simulation's coarse clock (see `fs::current_time`); daxfs
//! keeps no atime (see `lib.rs`). Both are logged like the size and the extents, as parts of the
//! inode record (fsck checks how they relate).
//!
//! Shared extents have no flag: a block is shared when its refcount is 2 or more (as XFS's
//! refcount btree says, not the extent). A file has at most [`MAX_EXTENTS`] extents; an
//! operation that would need more fails with ENOSPC (XFS would grow a btree; daxfs does not).

use std::fmt;

/// 2 MiB: a PMD mapping.
pub const PMD_SIZE: u64 = 2 << 20;
pub const MIN_BLOCKSIZE: u64 = 4096;
pub const MAX_BLOCKSIZE: u64 = PMD_SIZE;

pub const SB_MAGIC: u64 = u64::from_le_bytes(*b"DAXFSsb1");
/// 2: inode records carry mtime and ctime (1 had zeros there; mount refuses it by version).
pub const SB_VERSION: u32 = 2;
/// Bytes of the superblock covered by its checksum (the checksum follows).
pub const SB_BYTES: usize = 120;

pub const INODE_SIZE: u64 = 1024;
pub const INODE_MAGIC: u32 = u32::from_le_bytes(*b"DXIN");
/// The inode was unlinked while still in use; its blocks are freed when the last user goes.
pub const INODE_F_ORPHAN: u32 = 1;
pub const INODE_HEADER: usize = 128;
pub const NAME_MAX: usize = 64;
pub const EXTENT_BYTES: usize = 24;
pub const MAX_EXTENTS: usize = (INODE_SIZE as usize - INODE_HEADER) / EXTENT_BYTES;
pub const EXTENT_F_UNWRITTEN: u32 = 1;
/// Where the 16-byte size field starts in an inode record (one cache line holds all of it).
pub const SIZE_OFF: usize = 8;
const _: () = assert!(SIZE_OFF.is_multiple_of(8) && SIZE_OFF / 64 == (SIZE_OFF + 15) / 64);
/// Where mtime and ctime are in an inode record: aligned 8-byte words (each failure-atomic),
/// after the name length and before the extents.
pub const MTIME_OFF: usize = 104;
pub const CTIME_OFF: usize = 112;
const _: () =
    assert!(MTIME_OFF >= 104 && CTIME_OFF == MTIME_OFF + 8 && CTIME_OFF + 8 <= INODE_HEADER);

/// The on-media bytes of the size field for `size`: the size, then its complement.
pub fn size_field(size: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&size.to_le_bytes());
    b[8..].copy_from_slice(&(!size).to_le_bytes());
    b
}

// The extents fill the record.
const _: () = assert!(INODE_HEADER + MAX_EXTENTS * EXTENT_BYTES <= INODE_SIZE as usize);
const _: () = assert!(MAX_EXTENTS >= 32);

/// FNV-1a over `bytes`: the checksum of the superblock and of journal transactions.
pub fn checksum(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

pub fn get_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

pub fn get_u64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

pub fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

pub fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// Where everything is, in blocks. Derived from (pmem size, block size) by [`Geometry::new`]
/// and stored in the superblock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub blocksize: u64,
    pub nblocks: u64,
    pub journal_start: u64,
    pub journal_blocks: u64,
    pub itable_start: u64,
    pub ninodes: u64,
    pub bitmap_start: u64,
    pub bitmap_blocks: u64,
    pub refcount_start: u64,
    pub refcount_blocks: u64,
    pub data_start: u64,
}

impl Geometry {
    /// The layout mkfs gives a device of `pmem_size` bytes with blocks of `blocksize` bytes.
    pub fn new(pmem_size: u64, blocksize: u64) -> Result<Geometry, String> {
        if !blocksize.is_power_of_two() || !(MIN_BLOCKSIZE..=MAX_BLOCKSIZE).contains(&blocksize) {
            return Err(format!(
                "blocksize {blocksize} is not a power of two from 4 KiB to 2 MiB (DAX maps \
                 whole pages, so a block is at least a page)"
            ));
        }
        let nblocks = pmem_size / blocksize;
        let blocks_for = |bytes: u64| bytes.div_ceil(blocksize).max(1);
        let journal_blocks = (nblocks / 256)
            .max(blocks_for(16 << 10))
            .min(blocks_for(256 << 10).max(blocks_for(16 << 10)));
        let ninodes = (nblocks / 256).clamp(16, 1024);
        let journal_start = 1;
        let itable_start = journal_start + journal_blocks;
        let bitmap_start = itable_start + blocks_for(ninodes * INODE_SIZE);
        let bitmap_blocks = blocks_for(nblocks.div_ceil(8));
        let refcount_start = bitmap_start + bitmap_blocks;
        let refcount_blocks = blocks_for(nblocks * 4);
        let meta_end = (refcount_start + refcount_blocks) * blocksize;
        let data_start = meta_end.div_ceil(PMD_SIZE) * PMD_SIZE / blocksize;
        if data_start >= nblocks {
            return Err(format!(
                "pmem of {pmem_size} bytes is too small for daxfs with {blocksize}-byte blocks: \
                 its metadata needs {} bytes and at least one data block follows",
                data_start * blocksize
            ));
        }
        Ok(Geometry {
            blocksize,
            nblocks,
            journal_start,
            journal_blocks,
            itable_start,
            ninodes,
            bitmap_start,
            bitmap_blocks,
            refcount_start,
            refcount_blocks,
            data_start,
        })
    }

    /// Byte address of block `b`.
    pub fn addr(&self, b: u64) -> u64 {
        b * self.blocksize
    }

    /// Byte address of inode `ino`'s record (`1 ..= ninodes`).
    pub fn inode_addr(&self, ino: u64) -> u64 {
        debug_assert!((1..=self.ninodes).contains(&ino));
        self.addr(self.itable_start) + (ino - 1) * INODE_SIZE
    }

    /// Byte address of the bitmap byte holding block `b`'s bit.
    pub fn bitmap_byte(&self, b: u64) -> u64 {
        self.addr(self.bitmap_start) + b / 8
    }

    /// Byte address of block `b`'s refcount.
    pub fn refcount_addr(&self, b: u64) -> u64 {
        self.addr(self.refcount_start) + b * 4
    }

    pub fn journal_addr(&self) -> u64 {
        self.addr(self.journal_start)
    }

    pub fn journal_bytes(&self) -> u64 {
        self.journal_blocks * self.blocksize
    }

    /// Bytes from 0 to the end of the refcount table: every metadata structure (the padding
    /// up to `data_start` holds nothing).
    pub fn meta_bytes(&self) -> u64 {
        self.addr(self.refcount_start + self.refcount_blocks)
    }

    /// Bytes of the bitmap that hold bits (whole 64-byte lines); the rest of its blocks stays
    /// zero.
    pub fn bitmap_used_bytes(&self) -> u64 {
        self.nblocks.div_ceil(8).next_multiple_of(64)
    }

    /// Bytes of the refcount table that hold counts (whole 64-byte lines).
    pub fn refcount_used_bytes(&self) -> u64 {
        (self.nblocks * 4).next_multiple_of(64)
    }

    /// Blocks in a 2 MiB extent (1 when a block is 2 MiB).
    pub fn pmd_blocks(&self) -> u64 {
        (PMD_SIZE / self.blocksize).max(1)
    }

    /// The structure that block `b` belongs to, for reports.
    pub fn region_of(&self, b: u64) -> &'static str {
        match b {
            0 => "superblock",
            _ if b < self.itable_start => "journal",
            _ if b < self.bitmap_start => "inode table",
            _ if b < self.refcount_start => "block bitmap",
            _ if b < self.refcount_start + self.refcount_blocks => "refcount table",
            _ if b < self.data_start => "metadata padding",
            _ => "data",
        }
    }
}

/// The superblock: the geometry, whether the file system was unmounted cleanly, a checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub geo: Geometry,
    /// Set by unmount after the last journal checkpoint, cleared by mount.
    pub clean: bool,
}

impl Superblock {
    pub fn encode(&self) -> [u8; 128] {
        let g = &self.geo;
        let mut b = [0u8; 128];
        put_u64(&mut b, 0, SB_MAGIC);
        put_u32(&mut b, 8, SB_VERSION);
        put_u32(&mut b, 12, self.clean as u32);
        for (i, v) in [
            g.blocksize,
            g.nblocks,
            g.journal_start,
            g.journal_blocks,
            g.itable_start,
            g.ninodes,
            g.bitmap_start,
            g.bitmap_blocks,
            g.refcount_start,
            g.refcount_blocks,
            g.data_start,
        ]
        .into_iter()
        .enumerate()
        {
            put_u64(&mut b, 16 + 8 * i, v);
        }
        let c = checksum(&b[..SB_BYTES]);
        put_u64(&mut b, SB_BYTES, c);
        b
    }

    /// Decode and check a superblock on a device of `pmem_size` bytes: magic, version,
    /// checksum, and that the geometry is the one mkfs derives for its size and block size.
    pub fn decode(b: &[u8], pmem_size: u64) -> Result<Superblock, String> {
        if get_u64(b, 0) != SB_MAGIC {
            return Err("bad magic (not a daxfs file system)".into());
        }
        if get_u32(b, 8) != SB_VERSION {
            return Err(format!("unknown version {}", get_u32(b, 8)));
        }
        if get_u64(b, SB_BYTES) != checksum(&b[..SB_BYTES]) {
            return Err("checksum mismatch".into());
        }
        let f = |i: usize| get_u64(b, 16 + 8 * i);
        let geo = Geometry {
            blocksize: f(0),
            nblocks: f(1),
            journal_start: f(2),
            journal_blocks: f(3),
            itable_start: f(4),
            ninodes: f(5),
            bitmap_start: f(6),
            bitmap_blocks: f(7),
            refcount_start: f(8),
            refcount_blocks: f(9),
            data_start: f(10),
        };
        let expect = Geometry::new(geo.blocksize.max(1) * geo.nblocks, geo.blocksize)?;
        if expect != geo || geo.nblocks * geo.blocksize > pmem_size {
            return Err(format!(
                "geometry {geo:?} does not match a device of {pmem_size} bytes"
            ));
        }
        let clean = match get_u32(b, 12) {
            0 => false,
            1 => true,
            v => return Err(format!("clean flag {v} is neither 0 nor 1")),
        };
        Ok(Superblock { geo, clean })
    }
}

/// One extent of a file, in blocks: `len` blocks from device block `dev`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub dev: u64,
    pub len: u64,
    /// Allocated but reading as zeros (fallocate); converted on the first write.
    pub unwritten: bool,
}

/// The in-core and on-media content of an inode record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskInode {
    pub in_use: bool,
    pub flags: u32,
    pub size: u64,
    pub generation: u64,
    pub name: String,
    /// Last change of the file's data (ns of the coarse clock).
    pub mtime: u64,
    /// Last change of the inode: data, size, extents, link count (ns of the coarse clock).
    pub ctime: u64,
    /// File block -> extent; extents never overlap.
    pub extents: std::collections::BTreeMap<u64, Extent>,
}

/// Why an inode record does not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InodeError(pub String);

impl fmt::Display for InodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl DiskInode {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; INODE_SIZE as usize];
        if !self.in_use {
            return b;
        }
        assert!(
            self.extents.len() <= MAX_EXTENTS,
            "callers bound the extents"
        );
        put_u32(&mut b, 0, INODE_MAGIC);
        put_u32(&mut b, 4, self.flags);
        b[SIZE_OFF..SIZE_OFF + 16].copy_from_slice(&size_field(self.size));
        put_u32(&mut b, 96, self.extents.len() as u32);
        let name = self.name.as_bytes();
        put_u32(&mut b, 100, name.len() as u32);
        put_u64(&mut b, 24, self.generation);
        put_u64(&mut b, MTIME_OFF, self.mtime);
        put_u64(&mut b, CTIME_OFF, self.ctime);
        b[32..32 + name.len()].copy_from_slice(name);
        for (i, (&fb, e)) in self.extents.iter().enumerate() {
            let o = INODE_HEADER + i * EXTENT_BYTES;
            put_u64(&mut b, o, fb);
            put_u64(&mut b, o + 8, e.dev);
            put_u32(&mut b, o + 16, e.len as u32);
            put_u32(
                &mut b,
                o + 20,
                if e.unwritten { EXTENT_F_UNWRITTEN } else { 0 },
            );
        }
        b
    }

    /// Decode a record; structural problems (counts out of range, unsorted or overlapping
    /// extents in the file, unknown flags) are errors. Cross-references (bitmap, device bounds)
    /// are fsck's.
    pub fn decode(b: &[u8]) -> Result<DiskInode, InodeError> {
        let magic = get_u32(b, 0);
        if magic == 0 {
            // (An OR over the whole record: mount and fsck check every free record.)
            if b.iter().fold(0u8, |acc, &x| acc | x) != 0 {
                return Err(InodeError("free record is not zeroed".into()));
            }
            return Ok(DiskInode::default());
        }
        if magic != INODE_MAGIC {
            return Err(InodeError(format!("bad magic {magic:#x}")));
        }
        let flags = get_u32(b, 4);
        if flags & !INODE_F_ORPHAN != 0 {
            return Err(InodeError(format!("unknown flags {flags:#x}")));
        }
        let size = get_u64(b, SIZE_OFF);
        let check = get_u64(b, SIZE_OFF + 8);
        // The two words of the size field agree in every record daxfs writes whole; a crash
        // in the middle of a 16-byte in-place store (torn-inode-size) leaves them disagreeing.
        if check != !size {
            return Err(InodeError(format!(
                "torn size: the size word says {size} but its complement word says {} \
                 (half of a 16-byte size update persisted)",
                !check
            )));
        }
        let n = get_u32(b, 96) as usize;
        if n > MAX_EXTENTS {
            return Err(InodeError(format!(
                "{n} extents (at most {MAX_EXTENTS} fit)"
            )));
        }
        let name_len = get_u32(b, 100) as usize;
        if name_len == 0 || name_len > NAME_MAX {
            return Err(InodeError(format!("name length {name_len}")));
        }
        let name = std::str::from_utf8(&b[32..32 + name_len])
            .map_err(|_| InodeError("name is not UTF-8".into()))?
            .to_string();
        let mut extents = std::collections::BTreeMap::new();
        let mut end = 0u64;
        for i in 0..n {
            let o = INODE_HEADER + i * EXTENT_BYTES;
            let fb = get_u64(b, o);
            let e = Extent {
                dev: get_u64(b, o + 8),
                len: get_u32(b, o + 16) as u64,
                unwritten: match get_u32(b, o + 20) {
                    0 => false,
                    EXTENT_F_UNWRITTEN => true,
                    f => return Err(InodeError(format!("extent {i}: unknown flags {f:#x}"))),
                },
            };
            if e.len == 0 {
                return Err(InodeError(format!("extent {i}: length 0")));
            }
            if i > 0 && fb < end {
                return Err(InodeError(format!(
                    "extent {i} at file block {fb} overlaps or precedes the previous one \
                     (ending at {end})"
                )));
            }
            end = fb
                .checked_add(e.len)
                .ok_or_else(|| InodeError(format!("extent {i}: file block overflow")))?;
            extents.insert(fb, e);
        }
        Ok(DiskInode {
            in_use: true,
            flags,
            size,
            generation: get_u64(b, 24),
            name,
            mtime: get_u64(b, MTIME_OFF),
            ctime: get_u64(b, CTIME_OFF),
            extents,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_is_aligned_and_inside_the_device() {
        for (size, bs) in [
            (4u64 << 20, 4096u64),
            (256 << 20, 4096),
            (64 << 20, 65536),
            (16 << 20, 2 << 20),
        ] {
            let g = Geometry::new(size, bs).unwrap();
            assert_eq!(g.addr(g.data_start) % PMD_SIZE, 0);
            assert!(g.data_start < g.nblocks);
            assert!(g.refcount_start + g.refcount_blocks <= g.data_start);
            assert!(g.bitmap_blocks * bs * 8 >= g.nblocks);
            let sb = Superblock {
                geo: g,
                clean: true,
            };
            assert_eq!(Superblock::decode(&sb.encode(), size).unwrap(), sb);
        }
        assert!(Geometry::new(1 << 20, 4096).is_err());
        assert!(Geometry::new(64 << 20, 512).is_err());
        assert!(Geometry::new(64 << 20, 12288).is_err());
    }

    #[test]
    fn inode_records_round_trip_and_reject_overlaps() {
        let mut i = DiskInode {
            in_use: true,
            size: 5 << 20,
            name: "/f".into(),
            generation: 3,
            mtime: 4_000_000,
            ctime: 8_000_000,
            ..DiskInode::default()
        };
        i.extents.insert(
            0,
            Extent {
                dev: 512,
                len: 512,
                unwritten: false,
            },
        );
        i.extents.insert(
            600,
            Extent {
                dev: 2000,
                len: 3,
                unwritten: true,
            },
        );
        let b = i.encode();
        assert_eq!(DiskInode::decode(&b).unwrap(), i);
        let mut bad = b.clone();
        put_u64(&mut bad, INODE_HEADER + EXTENT_BYTES, 100);
        assert!(DiskInode::decode(&bad).is_err());
        assert_eq!(
            DiskInode::decode(&DiskInode::default().encode()).unwrap(),
            DiskInode::default()
        );
    }

    #[test]
    fn half_a_size_update_does_not_decode() {
        let old = DiskInode {
            in_use: true,
            size: 4096,
            name: "/f".into(),
            generation: 1,
            ..DiskInode::default()
        };
        let new = DiskInode {
            size: 8192,
            ..old.clone()
        };
        let (a, b) = (old.encode(), new.encode());
        // Only the 16 bytes of the size field differ, and they lie in one cache line.
        let differ: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
        assert!(
            differ
                .iter()
                .all(|&i| (SIZE_OFF..SIZE_OFF + 16).contains(&i))
        );
        assert_eq!(&b[SIZE_OFF..SIZE_OFF + 16], &size_field(8192));
        for word in 0..2 {
            // One 8-byte word of the new field over the old record: a torn store.
            let mut torn = a.clone();
            let w = SIZE_OFF + 8 * word;
            torn[w..w + 8].copy_from_slice(&b[w..w + 8]);
            let e = DiskInode::decode(&torn).unwrap_err();
            assert!(e.0.contains("torn size"), "{e}");
        }
        assert_eq!(DiskInode::decode(&b).unwrap(), new);
    }
}
