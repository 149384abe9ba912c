//! `fsck`: check every on-media structure and every cross-reference of a daxfs image, naming
//! the structure and the block of each problem. A pure function of the metadata bytes, so it
//! runs on a live machine's media (through loads, [`crate::Daxfs::fsck`]) or on a crash image.
//!
//! Checks:
//! - superblock: magic, version, checksum, geometry matching the device;
//! - journal: a valid header; no committed transaction left unreplayed (recovery's job);
//! - inode table: each record decodes (magic, flags, name, extent count, extents sorted and not
//!   overlapping within the file); names unique; extents inside the data region; ctime not
//!   older than mtime;
//! - bitmap: metadata blocks in use; a data block in use exactly when some extent owns it; no
//!   bit set past the last block;
//! - refcounts: a block owned by `n >= 2` extents has refcount `n`, any other block 0 (so two
//!   extents overlap on the device only when the refcount says the block is shared).

use crate::journal::{JournalState, parse_journal};
use crate::layout::{DiskInode, Geometry, INODE_SIZE, Superblock};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

/// One problem: which structure, which block of it, what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub structure: &'static str,
    /// Device block (of the metadata structure that is wrong).
    pub block: u64,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (block {}): {}",
            self.structure, self.block, self.message
        )
    }
}

/// What fsck found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FsckReport {
    pub problems: Vec<Problem>,
    /// Problems beyond [`FsckReport::MAX_PROBLEMS`], counted but not listed.
    pub more: u64,
    pub inodes: u64,
    pub used_blocks: u64,
    pub shared_blocks: u64,
}

impl FsckReport {
    pub const MAX_PROBLEMS: usize = 64;

    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// Record a problem (listing at most [`FsckReport::MAX_PROBLEMS`]).
    pub fn add(&mut self, structure: &'static str, block: u64, message: String) {
        if self.problems.len() < Self::MAX_PROBLEMS {
            self.problems.push(Problem {
                structure,
                block,
                message,
            });
        } else {
            self.more += 1;
        }
    }
}

impl fmt::Display for FsckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_clean() {
            return write!(
                f,
                "clean: {} inodes, {} blocks in use, {} shared",
                self.inodes, self.used_blocks, self.shared_blocks
            );
        }
        for p in &self.problems {
            writeln!(f, "{p}")?;
        }
        if self.more > 0 {
            writeln!(f, "... and {} more", self.more)?;
        }
        Ok(())
    }
}

/// Reads device bytes: `read(addr, buf)` fills `buf` from device address `addr`.
pub type ReadFn<'a> = dyn FnMut(u64, &mut [u8]) -> Result<(), String> + 'a;

/// Check the image whose metadata bytes (from device address 0) `read` returns. `read(addr,
/// buf)` fills `buf` from the device; `pmem_size` is the device size.
pub fn fsck_image(read: &mut ReadFn<'_>, pmem_size: u64) -> FsckReport {
    let mut r = FsckReport::default();
    let mut sbb = [0u8; 128];
    if let Err(e) = read(0, &mut sbb) {
        r.add("superblock", 0, format!("unreadable: {e}"));
        return r;
    }
    let geo = match Superblock::decode(&sbb, pmem_size) {
        Ok(sb) => sb.geo,
        Err(e) => {
            r.add("superblock", 0, e);
            return r;
        }
    };
    let mut meta = vec![0u8; geo.meta_bytes() as usize];
    if let Err(e) = read(0, &mut meta) {
        r.add("superblock", 0, format!("metadata unreadable: {e}"));
        return r;
    }
    check_meta(&geo, &meta, &mut r);
    r
}

/// [`fsck_image`] on metadata bytes already in memory (device address 0 up): the same report,
/// without copying them. `meta` holds the superblock and, when it decodes, the whole
/// [`Geometry::meta_bytes`] (what [`crate::fs::load_meta`] returns); shorter bytes are a
/// problem, named as [`crate::Daxfs::fsck_media`]'s reads past them were.
///
/// fsck is a pure function of these bytes and the device size, and a search checks the same
/// few images at the end of run after run: a report found clean is kept with the exact bytes
/// it came from (the thread's last [`CLEAN_IMAGES`]) and returned for equal bytes, compared
/// in full.
pub fn fsck_meta(meta: &[u8], pmem_size: u64) -> FsckReport {
    let known = CLEAN.with(|c| {
        c.borrow()
            .iter()
            .find(|(size, bytes, _)| *size == pmem_size && **bytes == *meta)
            .map(|(.., r)| r.clone())
    });
    if let Some(r) = known {
        return r;
    }
    let r = check_meta_bytes(meta, pmem_size);
    if r.is_clean() {
        CLEAN.with(|c| {
            let mut c = c.borrow_mut();
            if c.len() == CLEAN_IMAGES {
                c.remove(0);
            }
            c.push((pmem_size, meta.into(), r.clone()));
        });
    }
    r
}

/// How many clean images [`fsck_meta`] keeps per thread.
pub const CLEAN_IMAGES: usize = 8;

/// A clean image [`fsck_meta`] keeps: device size, metadata bytes, report.
type CleanImage = (u64, Box<[u8]>, FsckReport);

thread_local! {
    /// The clean images [`fsck_meta`] checked last, oldest first.
    static CLEAN: RefCell<Vec<CleanImage>> = const { RefCell::new(Vec::new()) };
}

/// [`fsck_meta`] without its memo.
fn check_meta_bytes(meta: &[u8], pmem_size: u64) -> FsckReport {
    let mut r = FsckReport::default();
    let Some(sbb) = meta.get(..128) else {
        r.add(
            "superblock",
            0,
            "unreadable: 0x0+128 past the metadata read".to_string(),
        );
        return r;
    };
    let geo = match Superblock::decode(sbb, pmem_size) {
        Ok(sb) => sb.geo,
        Err(e) => {
            r.add("superblock", 0, e);
            return r;
        }
    };
    let Some(meta) = meta.get(..geo.meta_bytes() as usize) else {
        r.add(
            "superblock",
            0,
            format!(
                "metadata unreadable: 0x0+{} past the metadata read",
                geo.meta_bytes()
            ),
        );
        return r;
    };
    check_meta(&geo, meta, &mut r);
    r
}

fn check_meta(geo: &Geometry, meta: &[u8], r: &mut FsckReport) {
    let bs = geo.blocksize;
    // Journal.
    let j = &meta[geo.journal_addr() as usize..(geo.journal_addr() + geo.journal_bytes()) as usize];
    match parse_journal(j) {
        JournalState::Empty { .. } | JournalState::Uncommitted { .. } => {}
        JournalState::Committed { seq, .. } => r.add(
            "journal",
            geo.journal_start,
            format!("committed transaction {seq} not replayed (mount to recover)"),
        ),
        JournalState::Corrupt(e) => r.add("journal", geo.journal_start, e),
    }
    // Inodes, and the owners of every block.
    let mut owners = vec![0u32; geo.nblocks as usize];
    let mut first_owner = vec![0u32; geo.nblocks as usize];
    let mut names: BTreeMap<String, u64> = BTreeMap::new();
    for ino in 1..=geo.ninodes {
        let a = geo.inode_addr(ino);
        let blk = a / bs;
        let rec = &meta[a as usize..(a + INODE_SIZE) as usize];
        let inode = match DiskInode::decode(rec) {
            Ok(i) => i,
            Err(e) => {
                r.add("inode table", blk, format!("inode {ino}: {e}"));
                continue;
            }
        };
        if !inode.in_use {
            continue;
        }
        r.inodes += 1;
        if !inode.name.starts_with('/') {
            r.add(
                "inode table",
                blk,
                format!("inode {ino}: name {:?} is not a path", inode.name),
            );
        }
        // An orphan (unlinked, blocks not yet freed) has no name any more.
        let orphan = inode.flags & crate::layout::INODE_F_ORPHAN != 0;
        if !orphan && let Some(other) = names.insert(inode.name.clone(), ino) {
            r.add(
                "inode table",
                blk,
                format!("inode {ino}: name {:?} is also inode {other}'s", inode.name),
            );
        }
        // daxfs never sets mtime without setting ctime to the same time, and an inode's
        // timestamps never go backwards (`fs::current_time`), so ctime is never older than mtime.
        if inode.ctime < inode.mtime {
            r.add(
                "inode table",
                blk,
                format!(
                    "inode {ino}: ctime {} is older than mtime {}",
                    inode.ctime, inode.mtime
                ),
            );
        }
        if inode.size > i64::MAX as u64 {
            r.add(
                "inode table",
                blk,
                format!("inode {ino}: size {} past the largest file", inode.size),
            );
        }
        for (i, (&fb, e)) in inode.extents.iter().enumerate() {
            let end = e.dev.checked_add(e.len);
            if e.dev < geo.data_start || end.is_none_or(|x| x > geo.nblocks) {
                r.add(
                    "inode table",
                    blk,
                    format!(
                        "inode {ino} extent {i} (file block {fb}): device blocks {}..{} are \
                         outside the data region {}..{}",
                        e.dev,
                        e.dev.saturating_add(e.len),
                        geo.data_start,
                        geo.nblocks
                    ),
                );
                continue;
            }
            if fb.checked_mul(bs).is_none_or(|x| x > i64::MAX as u64) {
                r.add(
                    "inode table",
                    blk,
                    format!("inode {ino} extent {i}: file block {fb} past the largest file"),
                );
            }
            for b in e.dev..e.dev + e.len {
                owners[b as usize] += 1;
                if first_owner[b as usize] == 0 {
                    first_owner[b as usize] = ino as u32;
                }
            }
        }
    }
    // Bitmap.
    let bm = geo.addr(geo.bitmap_start) as usize;
    let bit = |b: u64| meta[bm + (b / 8) as usize] & (1 << (b % 8)) != 0;
    let bm_block = |b: u64| geo.bitmap_start + b / 8 / bs;
    for b in 0..geo.nblocks {
        let set = bit(b);
        let n = owners[b as usize];
        if b < geo.data_start {
            if !set {
                r.add(
                    "block bitmap",
                    bm_block(b),
                    format!("block {b} ({}) is marked free", geo.region_of(b)),
                );
            }
            continue;
        }
        if set {
            r.used_blocks += 1;
        }
        if n > 0 && !set {
            r.add(
                "block bitmap",
                bm_block(b),
                format!(
                    "block {b} is owned by inode {} but marked free",
                    first_owner[b as usize]
                ),
            );
        } else if n == 0 && set {
            r.add(
                "block bitmap",
                bm_block(b),
                format!("block {b} is marked in use but no inode owns it (leaked)"),
            );
        }
    }
    for b in geo.nblocks..geo.bitmap_used_bytes() * 8 {
        if bit(b) {
            r.add(
                "block bitmap",
                bm_block(b),
                format!("bit {b} past the last block {} is set", geo.nblocks - 1),
            );
            break;
        }
    }
    // Refcounts.
    let rc0 = geo.addr(geo.refcount_start) as usize;
    for b in 0..geo.nblocks {
        let o = rc0 + (b * 4) as usize;
        let rc = u32::from_le_bytes(meta[o..o + 4].try_into().unwrap());
        let n = owners[b as usize];
        let expect = if n >= 2 { n } else { 0 };
        if n >= 2 {
            r.shared_blocks += 1;
        }
        if rc != expect {
            let what = if n >= 2 && rc == 0 {
                format!(
                    "block {b} is owned by {n} extents (inode {} and others) but its refcount \
                     is 0: overlapping extents",
                    first_owner[b as usize]
                )
            } else {
                format!("block {b} has refcount {rc} but {n} owner(s)")
            };
            r.add("refcount table", geo.refcount_start + b * 4 / bs, what);
        }
    }
}
