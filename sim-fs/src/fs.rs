//! The mounted file system: mkfs, mount (journal recovery), unmount, fsck of the media, and
//! the metadata operations that change extents (create, allocation, reflink, freeing blocks).
//!
//! In core: the namespace and inode cache (one mutex, the directory's lock), each inode's
//! [`InodeCore`] behind its `ILOCK`, the allocator behind its mutex, the journal behind the log
//! mutex. A metadata change builds its units (inode record, bitmap and refcount lines) while
//! holding the locks of what it changed, and inserts them into the CIL before releasing them
//! ([`Daxfs::commit_trans`]).

use crate::FsError;
use crate::alloc::AllocState;
use crate::extent::{self, ExtentMap};
use crate::fsck::{FsckReport, Problem, fsck_meta};
use crate::journal::{
    JH_MAGIC, JHEADER, JournalState, Log, empty_header, parse_journal, sfence, store_clwb,
    xlog_force,
};
use crate::layout::{
    DiskInode, Extent, Geometry, INODE_F_ORPHAN, INODE_SIZE, MAX_EXTENTS, NAME_MAX, Superblock,
};
use crate::locks::{FsLock, Held, LockDep};
use sim_core::machine::MemError;
use sim_core::platform::bug_on;
use sim_core::platform::{MutexGuard, Platform, RwSemReadGuard, RwSemWriteGuard};
use sim_core::{Mutex, PmemPlatform, RwSem};
use sim_mm::world::{AddressSpace, MmWorld};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::DerefMut;
use std::sync::Arc;

/// An inode's in-core state (under its `ILOCK`).
#[derive(Clone, Debug, Default)]
pub struct InodeCore {
    pub disk: DiskInode,
    /// The log sequence its last change other than timestamps went into (size, extents, the
    /// orphan flag of unlink, which XFS logs as `XFS_ILOG_CORE` with the link count; 0: none
    /// since mount): what fdatasync forces and what a MAP_SYNC fault waits for (XFS:
    /// `ili_fsync_fields & ~XFS_ILOG_TIMESTAMP`, see [`InodeCore::ts_seq`]). The metadata is
    /// durable once the log's `committed_seq` reaches it.
    pub logged_seq: u64,
    /// The log sequence of its last timestamp-only change (`file_update_time` of a write or a
    /// write fault: XFS logs it as `XFS_ILOG_TIMESTAMP`; 0: none since mount). fsync forces
    /// the log up to the later of this and `logged_seq`; fdatasync and MAP_SYNC ignore it, as
    /// `xfs_file_fsync` skips the log force when `datasync` and the inode's logged fields are
    /// timestamps alone (`!(ili_fsync_fields & ~XFS_ILOG_TIMESTAMP)`; before 5.x `ili_fields`
    /// with `ili_last_lsn`). A timestamp change that shares a transaction with a core change
    /// (truncate, reflink, create, unlink) counts as core.
    pub ts_seq: u64,
    /// A sequence this inode has seen durable (`committed_seq` read under the log mutex);
    /// invariant: `durable_seen <= log.committed_seq`, so `logged_seq <= durable_seen` proves
    /// durability without taking the log mutex.
    pub durable_seen: u64,
    /// The inode may have shared blocks (XFS's reflink inode flag): set by reflink on both
    /// inodes and at mount, never cleared. Without it `iomap_begin` skips the refcounts.
    pub reflink: bool,
    /// Open references (`i_count` less the mappings, which `i_mmap` counts): statements that
    /// use the inode hold one while they run, so an unlinked inode is evicted only once the
    /// last of them, of its mappings and of its pins is gone.
    pub opens: u32,
    /// Eviction has been claimed (`I_FREEING`): the inode is going away.
    pub freeing: bool,
    /// The CoW fork (XFS `XFS_COW_FORK`): file block -> blocks staged for a copy on write
    /// that `iomap_begin` handed out and `iomap_end` has not yet remapped into the data fork
    /// or cancelled. In core only (see [`crate::alloc`]); invariant: empty whenever no
    /// `iomap_begin`/`iomap_end` pair is in flight on the inode, so in particular at unmount.
    pub cow: BTreeMap<u64, CowStage>,
}

/// One extent of the CoW fork: staged device blocks `dev .. dev + len`, already holding the
/// data of the shared blocks they replace (copied in `iomap_begin`), the number of write
/// `iomap_begin` answers not yet ended that handed out part of it, and whether a read's
/// `iomap_begin` handed part of it out (then it may be mapped or read at any time, and is
/// remapped, never cancelled: see `DaxfsFile::cow_end`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CowStage {
    pub dev: u64,
    pub len: u64,
    pub users: u32,
    pub read_mapped: bool,
}

impl InodeCore {
    /// How many extents the data fork may hold now: [`MAX_EXTENTS`] less two for each staged
    /// copy on write, whose remap may split one extent into three.
    pub fn max_extents(&self) -> usize {
        MAX_EXTENTS.saturating_sub(2 * self.cow.len())
    }
}

/// An in-core inode.
pub struct Inode<P: Platform> {
    pub ino: u64,
    /// `inode->i_mapping`: the DAX entries, `i_mmap`, and `invalidate_lock` (MMAPLOCK).
    pub mapping: Arc<AddressSpace<P>>,
    /// `i_rwsem` (XFS IOLOCK).
    pub i_rwsem: RwSem<P, ()>,
    /// `ILOCK` (`ip->i_lock`, an rw_semaphore in XFS): the inode's size and extent map. Taken
    /// exclusive to change them ([`Daxfs::ilock`]), shared to read them
    /// ([`Daxfs::ilock_shared`]: `iomap_begin` of a read, `i_size`, fsync).
    pub ilock: RwSem<P, InodeCore>,
}

/// The namespace (flat: path -> inode) and the inode cache of every in-use inode.
pub struct Namespace<P: Platform> {
    pub names: BTreeMap<String, u64>,
    pub inodes: BTreeMap<u64, Arc<Inode<P>>>,
}

/// What mount found in the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    /// A committed transaction was replayed: its sequence number and record count.
    pub replayed: Option<(u64, usize)>,
    /// An uncommitted transaction was discarded: its sequence number and why.
    pub discarded: Option<(u64, String)>,
    /// The superblock said the last unmount was clean.
    pub was_clean: bool,
    /// Unlinked inodes whose blocks mount freed.
    pub orphans: Vec<u64>,
}

/// A mounted daxfs.
pub struct Daxfs<P: Platform> {
    pub world: Arc<MmWorld<P>>,
    /// The lock-order check (see `locks.rs`).
    pub lockdep: LockDep,
    pub geo: Geometry,
    pub pmem_size: u64,
    pub mount_info: MountInfo,
    pub ns: Mutex<P, Namespace<P>>,
    pub alloc: Mutex<P, AllocState>,
    pub log: Mutex<P, Log>,
    /// Shutdown after a metadata failure, and the `reflink-page-mapping` mode (`rmap.rs`).
    pub failure: crate::rmap::FsFailure<P>,
}

static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// The granularity of file timestamps: one jiffy at HZ=250. `current_time()` reads the
/// coarse clock (`ktime_get_coarse_real_ts64`), which moves once a tick, so two changes within
/// a tick leave the same timestamp and the second logs nothing (`inode_needs_update_time`).
/// (Multigrain timestamps, 6.13, are not modelled.)
pub const TIME_GRAN_NS: u64 = 4_000_000;

/// `current_time(inode)` for an inode whose ctime is `ctime`: the calling CPU's clock,
/// truncated to the coarse tick, and never older than `ctime`. The simulated CPUs have clocks
/// of their own (sim-core "Time"), where the kernel has one wall clock; taking the later of
/// the two keeps each inode's timestamps from going backwards when a task on a CPU whose
/// clock is behind changes it (fsck relies on it: see its ctime check).
pub fn current_time<P: Platform>(p: &P, ctime: u64) -> u64 {
    (p.now_ns() / TIME_GRAN_NS * TIME_GRAN_NS).max(ctime)
}

/// Set `d`'s ctime (and its mtime with `mtime`) to [`current_time`]: `inode_set_ctime_current`
/// / `inode_set_mtime_to_ts`, in core only (the caller logs the record). Returns whether a
/// timestamp changed.
pub fn stamp<P: Platform>(p: &P, d: &mut DiskInode, mtime: bool) -> bool {
    let now = current_time(p, d.ctime);
    let m = if mtime { now } else { d.mtime };
    let changed = (m, now) != (d.mtime, d.ctime);
    (d.mtime, d.ctime) = (m, now);
    changed
}

/// Blocks one reflink or freeing transaction covers at most (64 bitmap or refcount lines in
/// the journal), so that no transaction outgrows the journal.
pub const REFLINK_CHUNK: u64 = 1024;

// The largest chunk transaction (refcount and bitmap lines of the shared source blocks and of
// the freed destination blocks, and an inode record) fits the smallest journal (16 KiB).
const _: () = assert!(
    2 * (REFLINK_CHUNK / 16 + 2) * 80 + 2 * (REFLINK_CHUNK / 512 + 2) * 80 + 1024 + 16
        <= 16 * 1024 - 128
);

/// Write zeros over `addr .. addr + len` with non-temporal stores and fence them: durable
/// zeros (the pmem driver's zeroing; `XFS_BMAPI_ZERO`).
pub async fn zero_range<P: PmemPlatform>(p: &P, addr: u64, len: u64) -> Result<(), FsError> {
    let mut a = addr;
    while a < addr + len {
        let n = (addr + len - a).min(ZEROS.len() as u64);
        p.pmem_ntstore(a, &ZEROS[..n as usize])
            .await
            .map_err(FsError::from_mem)?;
        a += n;
    }
    sfence(p).await
}

/// Read `len` bytes at `addr` through CPU loads.
async fn load<P: PmemPlatform>(p: &P, addr: u64, len: u64) -> Result<Vec<u8>, String> {
    let mut v = vec![0u8; len as usize];
    p.pmem_load(addr, &mut v)
        .await
        .map_err(|e| format!("metadata at {addr:#x} unreadable: {e}"))?;
    Ok(v)
}

/// The metadata bytes `0 .. geo.meta_bytes()` as mount and fsck need them, read through CPU
/// loads: the superblock, the journal header (and the transaction it announces, if any), the
/// inode records, and the bitmap and refcount lines that hold blocks. Unused tails of regions
/// read as zeros (mkfs never writes them).
pub async fn load_meta<P: PmemPlatform>(p: &P, geo: &Geometry) -> Result<Vec<u8>, Problem> {
    // A buffer given back by `recycle_meta` holds stale bytes, but only in `stale` (the ranges
    // its last `load_meta` loaded, or all of it): each byte below is either loaded or zero
    // (`filled`: the bytes before it are one or the other; the regions are loaded in
    // increasing address order).
    let n = geo.meta_bytes() as usize;
    let (mut meta, mut stale) = SPARE_META
        .with(|s| s.borrow_mut().pop())
        .unwrap_or_default();
    if meta.len() != n {
        stale = vec![(0, meta.len().min(n))];
        meta.resize(n, 0);
    }
    let stale = stale;
    let zero = |meta: &mut Vec<u8>, lo: usize, hi: usize| {
        for &(a, b) in &stale {
            let (a, b) = (a.max(lo), b.min(hi));
            if a < b {
                meta[a..b].fill(0);
            }
        }
    };
    let mut loaded = Vec::new();
    let mut filled = 0usize;
    let get = async |meta: &mut Vec<u8>,
                     filled: &mut usize,
                     loaded: &mut Vec<(usize, usize)>,
                     addr: u64,
                     len: u64|
           -> Result<(), Problem> {
        let a = addr as usize;
        assert!(a >= *filled, "metadata regions loaded out of order");
        zero(meta, *filled, a);
        *filled = a + len as usize;
        loaded.push((a, *filled));
        p.pmem_load(addr, &mut meta[a..a + len as usize])
            .await
            .map_err(|e| {
                // Name the block that failed (the poisoned one for a machine check).
                let at = match e {
                    MemError::MachineCheck(mc) => mc.addr,
                    _ => addr,
                };
                let block = at / geo.blocksize;
                Problem {
                    structure: geo.region_of(block),
                    block,
                    message: format!("unreadable: {e}"),
                }
            })
    };
    let f = &mut filled;
    let l = &mut loaded;
    get(&mut meta, f, l, 0, 128).await?;
    let j = geo.journal_addr();
    get(&mut meta, f, l, j, JHEADER).await?;
    if crate::layout::get_u32(&meta, j as usize) == JH_MAGIC {
        get(&mut meta, f, l, j + JHEADER, geo.journal_bytes() - JHEADER).await?;
    }
    get(
        &mut meta,
        f,
        l,
        geo.addr(geo.itable_start),
        geo.ninodes * INODE_SIZE,
    )
    .await?;
    get(
        &mut meta,
        f,
        l,
        geo.addr(geo.bitmap_start),
        geo.bitmap_used_bytes(),
    )
    .await?;
    get(
        &mut meta,
        f,
        l,
        geo.addr(geo.refcount_start),
        geo.refcount_used_bytes(),
    )
    .await?;
    zero(&mut meta, filled, n);
    LOADED.with(|m| {
        let mut m = m.borrow_mut();
        let at = (meta.as_ptr() as usize, meta.len());
        m.retain(|(p, _)| *p != at);
        if m.len() == 8 {
            m.remove(0);
        }
        m.push((at, loaded));
    });
    Ok(meta)
}

/// Byte ranges of a metadata buffer that may hold stale (non-zero) bytes.
type Stale = Vec<(usize, usize)>;

thread_local! {
    /// Metadata buffers given back by [`recycle_meta`] for the next [`load_meta`] on the
    /// thread, each with its stale ranges: a search loads the metadata (53 KB for 8 MiB of
    /// pmem) three times a run, and zeroing a whole buffer each time showed in profiles.
    static SPARE_META: RefCell<Vec<(Vec<u8>, Stale)>> = const { RefCell::new(Vec::new()) };
    /// The ranges [`load_meta`] loaded into the buffers it returned lately, by buffer
    /// address and length (the rest of such a buffer is zero until it is changed:
    /// [`recover_meta`] forgets the buffers it writes).
    static LOADED: RefCell<Vec<((usize, usize), Stale)>> = const { RefCell::new(Vec::new()) };
}

/// Forget what [`load_meta`] loaded into `meta`: it is about to change anywhere.
fn forget_loaded(meta: &[u8]) {
    let at = (meta.as_ptr() as usize, meta.len());
    LOADED.with(|m| m.borrow_mut().retain(|(p, _)| *p != at));
}

/// Give a buffer of [`load_meta`] back once read (its bytes are never read again). It must be
/// unchanged since, but for [`recover_meta`]'s changes.
pub fn recycle_meta(meta: Vec<u8>) {
    let at = (meta.as_ptr() as usize, meta.len());
    let stale = LOADED.with(|m| {
        let mut m = m.borrow_mut();
        match m.iter().position(|(p, _)| *p == at) {
            Some(i) => m.remove(i).1,
            None => vec![(0, meta.len())],
        }
    });
    SPARE_META.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < 4 {
            s.push((meta, stale));
        }
    });
}

/// `mkfs.daxfs`: write an empty file system over a device of `pmem_size` bytes with blocks of
/// `blocksize` bytes. Everything but the superblock is written and made durable first, then the
/// superblock, so a crash during mkfs leaves no valid file system.
pub async fn mkfs<P: PmemPlatform>(
    p: &P,
    pmem_size: u64,
    blocksize: u64,
) -> Result<Geometry, String> {
    let geo = Geometry::new(pmem_size, blocksize)?;
    let mem = |e: FsError| format!("mkfs: {e}");
    // Superblock invalid first, then the inode table, bitmap and refcounts zeroed (the journal
    // needs only its header: records are checked against the commit record's checksum).
    zero_range(p, 0, 128).await.map_err(mem)?;
    let itable = geo.addr(geo.itable_start);
    zero_range(p, itable, geo.ninodes * INODE_SIZE)
        .await
        .map_err(mem)?;
    zero_range(p, geo.addr(geo.bitmap_start), geo.bitmap_used_bytes())
        .await
        .map_err(mem)?;
    zero_range(p, geo.addr(geo.refcount_start), geo.refcount_used_bytes())
        .await
        .map_err(mem)?;
    let mut bitmap = vec![0u8; geo.data_start.div_ceil(8) as usize];
    for b in 0..geo.data_start {
        bitmap[(b / 8) as usize] |= 1 << (b % 8);
    }
    store_clwb(p, geo.addr(geo.bitmap_start), &bitmap)
        .await
        .map_err(mem)?;
    store_clwb(p, geo.journal_addr(), &empty_header(0))
        .await
        .map_err(mem)?;
    sfence(p).await.map_err(mem)?;
    let sb = Superblock { geo, clean: true };
    store_clwb(p, 0, &sb.encode()).await.map_err(mem)?;
    sfence(p).await.map_err(mem)?;
    Ok(geo)
}

/// The metadata after journal recovery, computed without touching the media: what mount
/// writes back, and what a crash-image checker inspects.
#[derive(Clone, Debug)]
pub struct Recovered {
    pub geo: Geometry,
    /// Bytes `0 .. geo.meta_bytes()` with the committed transaction (if any) applied.
    pub meta: Vec<u8>,
    pub info: MountInfo,
    /// The last journal sequence number used.
    pub seq: u64,
    /// The in-place writes of the replayed transaction.
    pub writes: Vec<(u64, Vec<u8>)>,
}

/// Journal recovery on the metadata bytes `meta` of a file system with geometry `geo`.
pub fn recover_meta(
    geo: Geometry,
    was_clean: bool,
    mut meta: Vec<u8>,
) -> Result<Recovered, String> {
    let ja = geo.journal_addr() as usize;
    let mut info = MountInfo {
        replayed: None,
        discarded: None,
        was_clean,
        orphans: Vec::new(),
    };
    let mut writes = Vec::new();
    let seq = match parse_journal(&meta[ja..ja + geo.journal_bytes() as usize]) {
        JournalState::Empty { seq } => seq,
        JournalState::Corrupt(e) => {
            return Err(format!("journal (block {}): {e}", geo.journal_start));
        }
        JournalState::Uncommitted { seq, why } => {
            info.discarded = Some((seq, why));
            seq
        }
        JournalState::Committed { seq, records } => {
            let lo = geo.addr(geo.itable_start);
            for (addr, data) in &records {
                let end = addr + data.len() as u64;
                if *addr < lo || end > geo.meta_bytes() {
                    return Err(format!(
                        "journal (block {}): transaction {seq} writes {addr:#x}..{end:#x}, \
                         outside the inode table, bitmap and refcounts",
                        geo.journal_start
                    ));
                }
            }
            forget_loaded(&meta);
            for (addr, data) in &records {
                meta[*addr as usize..*addr as usize + data.len()].copy_from_slice(data);
            }
            info.replayed = Some((seq, records.len()));
            writes = records;
            seq
        }
    };
    if info.replayed.is_some() || info.discarded.is_some() {
        forget_loaded(&meta);
        meta[ja..ja + 64].copy_from_slice(&empty_header(seq));
    }
    Ok(Recovered {
        geo,
        meta,
        info,
        seq,
        writes,
    })
}

/// The in-use inodes of recovered metadata, by number (errors name the block).
pub fn inodes_of(geo: &Geometry, meta: &[u8]) -> Result<BTreeMap<u64, DiskInode>, String> {
    let mut out = BTreeMap::new();
    for ino in 1..=geo.ninodes {
        let a = geo.inode_addr(ino) as usize;
        let d = DiskInode::decode(&meta[a..a + INODE_SIZE as usize]).map_err(|e| {
            format!(
                "inode table (block {}): inode {ino}: {e}",
                a as u64 / geo.blocksize
            )
        })?;
        if d.in_use {
            out.insert(ino, d);
        }
    }
    Ok(out)
}

impl<P: PmemPlatform> Daxfs<P> {
    /// Mount the file system on a device of `pmem_size` bytes: check the superblock, recover
    /// the journal (replay a committed transaction, discard an uncommitted one), mark the
    /// superblock in use, load inodes, bitmap and refcounts. Errors name the structure and
    /// block.
    /// `world` is the mm layer the inodes' address spaces live in.
    pub async fn mount(
        p: &P,
        pmem_size: u64,
        world: Arc<MmWorld<P>>,
    ) -> Result<Arc<Daxfs<P>>, String> {
        let sbb = load(p, 0, 128).await?;
        let sb = Superblock::decode(&sbb, pmem_size)
            .map_err(|e| format!("superblock (block 0): {e}"))?;
        let geo = sb.geo;
        let meta = load_meta(p, &geo).await.map_err(|e| e.to_string())?;
        let rec = recover_meta(geo, sb.clean, meta)?;
        let mem = |e: FsError| format!("journal (block {}): recovery: {e}", geo.journal_start);
        // Replay in place, then mark the journal empty (also when a transaction was
        // discarded, so that it is never looked at again).
        if !rec.writes.is_empty() {
            for (addr, data) in &rec.writes {
                store_clwb(p, *addr, data).await.map_err(mem)?;
            }
            sfence(p).await.map_err(mem)?;
        }
        if rec.info.replayed.is_some() || rec.info.discarded.is_some() {
            store_clwb(p, geo.journal_addr(), &empty_header(rec.seq))
                .await
                .map_err(mem)?;
            sfence(p).await.map_err(mem)?;
        }
        let (meta, info, seq) = (rec.meta, rec.info, rec.seq);
        // In use from here: a crash before unmount leaves `clean` false.
        let sb = Superblock { geo, clean: false };
        store_clwb(p, 0, &sb.encode())
            .await
            .map_err(|e| format!("superblock (block 0): {e}"))?;
        sfence(p)
            .await
            .map_err(|e| format!("superblock (block 0): {e}"))?;
        let bm = geo.addr(geo.bitmap_start) as usize;
        let rc = geo.addr(geo.refcount_start) as usize;
        let alloc = AllocState::from_media(
            geo,
            &meta[bm..bm + (geo.bitmap_blocks * geo.blocksize) as usize],
            &meta[rc..rc + (geo.refcount_blocks * geo.blocksize) as usize],
        );
        let mut names = BTreeMap::new();
        let mut inodes = BTreeMap::new();
        let mut orphans = Vec::new();
        for (ino, d) in inodes_of(&geo, &meta)? {
            if d.flags & INODE_F_ORPHAN != 0 {
                orphans.push(ino);
            } else {
                names.insert(d.name.clone(), ino);
            }
            let reflink = d
                .extents
                .values()
                .any(|e| alloc.refcount.range(e.dev..e.dev + e.len).next().is_some());
            let mapping = world.new_mapping(p, ino).await;
            let core = InodeCore {
                disk: d,
                reflink,
                ..InodeCore::default()
            };
            inodes.insert(ino, Arc::new(Inode::with_core(p, ino, core, mapping)));
        }
        recycle_meta(meta);
        let mut info = info;
        info.orphans = orphans.clone();
        let fs = Arc::new(Daxfs {
            world,
            lockdep: LockDep::default(),
            geo,
            pmem_size,
            mount_info: info,
            ns: Mutex::new(p, "daxfs_namespace", Namespace { names, inodes }),
            alloc: Mutex::new(p, "daxfs_alloc", alloc),
            log: Mutex::new(p, "daxfs_log", Log::new(&geo, seq)),
            failure: crate::rmap::FsFailure::new(p),
        });
        // Inodes unlinked before the crash while still in use (`xlog_recover_process_iunlinks`):
        // nobody can use them now, so their blocks go.
        for ino in orphans {
            let inode = fs.lock_ns(p).await.inodes.get(&ino).cloned();
            if let Some(inode) = inode {
                fs.evict(p, &inode)
                    .await
                    .map_err(|e| format!("inode table: freeing orphan inode {ino}: {e}"))?;
            }
        }
        Ok(fs)
    }

    /// `unlink(2)`, the name side: the name goes and the inode is marked an orphan (logged), so
    /// that a crash before [`Daxfs::evict`] frees its blocks at the next mount. The caller
    /// evicts the inode when its last user (open file, mapping, pin) goes.
    pub async fn unlink(&self, p: &P, name: &str) -> Result<Arc<Inode<P>>, FsError> {
        let mut ns = self.lock_ns(p).await;
        let Some(&ino) = ns.names.get(name) else {
            drop(ns);
            return Err(FsError::ENOENT);
        };
        let inode = ns.inodes[&ino].clone();
        let mut core = self.ilock(p, &inode).await;
        let old_ctime = core.disk.ctime;
        core.disk.flags |= INODE_F_ORPHAN;
        // xfs_remove: the link count changes, and so does the ctime (`XFS_ICHGTIME_CHG`).
        stamp(p, &mut core.disk, false);
        let r = self
            .commit_trans(p, vec![self.inode_unit(ino, &core.disk)])
            .await;
        match r {
            Ok(seq) => {
                core.logged_seq = seq;
                ns.names.remove(name);
            }
            Err(_) => {
                core.disk.flags &= !INODE_F_ORPHAN;
                core.disk.ctime = old_ctime;
            }
        }
        drop(core);
        drop(ns);
        r.map(|_| inode)
    }

    /// `evict_inode` of an unlinked inode: its blocks lose this file's references, its record
    /// is freed, and its address space is destroyed (the mm layer BUGs if it still has DAX
    /// entries or mappings: blocks must not go while mapped).
    pub async fn evict(&self, p: &P, inode: &Inode<P>) -> Result<(), FsError> {
        let mut ns = self.lock_ns(p).await;
        let mut core = self.ilock(p, inode).await;
        // Only unlinked inodes are evicted.
        let orphan = core.disk.flags & INODE_F_ORPHAN != 0;
        bug_on(p, !orphan, "daxfs-evict-linked-inode", || {
            format!("evicting inode {} which still has a name", inode.ino)
        })
        .await;
        let r = async {
            let mut a = self.lock_alloc(p).await;
            let extents: Vec<Extent> = core.disk.extents.values().copied().collect();
            for e in extents {
                self.free_blocks(p, &mut a, e.dev, e.len).await;
            }
            let mut units = a.take_dirty();
            units.push(self.inode_unit(inode.ino, &DiskInode::default()));
            let r = self.commit_trans(p, units).await;
            drop(a);
            r
        }
        .await;
        let r = match r {
            Ok(seq) => {
                core.disk = DiskInode::default();
                core.logged_seq = seq;
                ns.inodes.remove(&inode.ino);
                Ok(())
            }
            Err(e) => Err(e),
        };
        drop(core);
        drop(ns);
        if r.is_ok() {
            self.world.destroy_mapping(p, &inode.mapping).await;
        }
        r
    }

    /// Tell the memmap that device blocks `d .. d + n` went back to the allocator (`free`) or
    /// left it, for the mm layer's use-after-free checks (`set_block_free`: freeing a block
    /// that is still mapped, pinned or associated is a BUG; a page table mapping a free block is
    /// an invariant violation). Called with the allocator mutex held, so that the marks follow
    /// the bitmap's order.
    pub async fn mark_blocks(&self, p: &P, d: u64, n: u64, free: bool) {
        let pfn = self.world.memmap.base_pfn() + self.geo.addr(d) / 4096;
        let nr = self.geo.addr(n).div_ceil(4096);
        self.world.memmap.set_block_free(p, pfn, nr, free).await;
    }

    /// Whether a page of blocks `d .. d + n` is in use by the mm (mapped, referenced,
    /// associated with a DAX entry or shared): such blocks must not go back to the allocator.
    pub async fn blocks_busy(&self, p: &P, d: u64, n: u64) -> bool {
        let pfn = self.world.memmap.base_pfn() + self.geo.addr(d) / 4096;
        let nr = self.geo.addr(n).div_ceil(4096);
        let mut busy = false;
        self.world
            .memmap
            .update(p, pfn, nr, |_, pg| {
                busy |= pg.mapcount != 0 || pg.refcount != 0 || pg.mapping != 0 || pg.share != 0
            })
            .await;
        busy
    }

    /// `a.free(d, n)` (one owner less for each block) and the memmap marks of the blocks that
    /// became free (shared ones only lose a reference).
    pub async fn free_blocks(&self, p: &P, a: &mut AllocState, d: u64, n: u64) {
        a.free(d, n);
        let mut b = d;
        while b < d + n {
            if a.in_use(b) {
                b += 1;
                continue;
            }
            let s = b;
            while b < d + n && !a.in_use(b) {
                b += 1;
            }
            self.mark_blocks(p, s, b - s, true).await;
        }
    }

    /// `xfs_ilock(ip, XFS_ILOCK_EXCL)`.
    pub async fn ilock<'a>(
        &'a self,
        p: &P,
        inode: &'a Inode<P>,
    ) -> Held<'a, RwSemWriteGuard<'a, P, InodeCore>> {
        Held::take(
            p,
            &self.lockdep,
            FsLock::Ilock,
            inode.ino,
            inode.ilock.write(p),
        )
        .await
    }

    /// `xfs_ilock(ip, XFS_ILOCK_SHARED)`: readers of the size and extent map; two shared
    /// holders run side by side (their `down_read`s commute, `platform::OpKind::conflicts`).
    pub async fn ilock_shared<'a>(
        &'a self,
        p: &P,
        inode: &'a Inode<P>,
    ) -> Held<'a, RwSemReadGuard<'a, P, InodeCore>> {
        Held::take(
            p,
            &self.lockdep,
            FsLock::Ilock,
            inode.ino,
            inode.ilock.read(p),
        )
        .await
    }

    /// `xfs_ilock(ip, XFS_IOLOCK_EXCL)`: `i_rwsem` for writing.
    pub async fn iolock_excl<'a>(
        &'a self,
        p: &P,
        inode: &'a Inode<P>,
    ) -> Held<'a, RwSemWriteGuard<'a, P, ()>> {
        Held::take(
            p,
            &self.lockdep,
            FsLock::Iolock,
            inode.ino,
            inode.i_rwsem.write(p),
        )
        .await
    }

    /// `xfs_ilock(ip, XFS_IOLOCK_SHARED)`.
    pub async fn iolock_shared<'a>(
        &'a self,
        p: &P,
        inode: &'a Inode<P>,
    ) -> Held<'a, RwSemReadGuard<'a, P, ()>> {
        Held::take(
            p,
            &self.lockdep,
            FsLock::Iolock,
            inode.ino,
            inode.i_rwsem.read(p),
        )
        .await
    }

    /// `xfs_ilock(ip, XFS_MMAPLOCK_EXCL)`: the mapping's `invalidate_lock` for writing.
    pub async fn mmaplock_excl<'a>(
        &'a self,
        p: &P,
        inode: &'a Inode<P>,
    ) -> Held<'a, RwSemWriteGuard<'a, P, ()>> {
        let l = inode.mapping.invalidate_lock.write(p);
        Held::take(p, &self.lockdep, FsLock::Mmaplock, inode.ino, l).await
    }

    /// `xfs_ilock(ip, XFS_MMAPLOCK_SHARED)`.
    pub async fn mmaplock_shared<'a>(
        &'a self,
        p: &P,
        inode: &'a Inode<P>,
    ) -> Held<'a, RwSemReadGuard<'a, P, ()>> {
        let l = inode.mapping.invalidate_lock.read(p);
        Held::take(p, &self.lockdep, FsLock::Mmaplock, inode.ino, l).await
    }

    pub async fn lock_ns(&self, p: &P) -> Held<'_, MutexGuard<'_, P, Namespace<P>>> {
        Held::take(p, &self.lockdep, FsLock::Namespace, 0, self.ns.lock(p)).await
    }

    pub async fn lock_alloc(&self, p: &P) -> Held<'_, MutexGuard<'_, P, AllocState>> {
        Held::take(p, &self.lockdep, FsLock::Alloc, 0, self.alloc.lock(p)).await
    }

    pub async fn lock_log(&self, p: &P) -> Held<'_, MutexGuard<'_, P, Log>> {
        Held::take(p, &self.lockdep, FsLock::Log, 0, self.log.lock(p)).await
    }

    /// Unmount: force the log (every change durable and checkpointed), mark the superblock
    /// clean.
    pub async fn unmount(&self, p: &P) -> Result<(), FsError> {
        let mut log = self.lock_log(p).await;
        xlog_force(p, &self.geo, &mut log).await?;
        let sb = Superblock {
            geo: self.geo,
            clean: true,
        };
        store_clwb(p, 0, &sb.encode()).await?;
        sfence(p).await?;
        log.shutdown = true;
        drop(log);
        Ok(())
    }

    /// fsck of what is on the media now (changes still in the CIL are not there yet), read
    /// through CPU loads.
    pub async fn fsck_media(p: &P, pmem_size: u64) -> FsckReport {
        // Read the superblock, then the metadata (the only sizes fsck asks for).
        let sb = match load(p, 0, 128).await {
            Ok(b) => b,
            Err(e) => {
                let mut r = FsckReport::default();
                r.add("superblock", 0, e);
                return r;
            }
        };
        let meta = match Superblock::decode(&sb, pmem_size) {
            Ok(s) => match load_meta(p, &s.geo).await {
                Ok(m) => m,
                Err(e) => {
                    let mut r = FsckReport::default();
                    r.add(e.structure, e.block, e.message);
                    return r;
                }
            },
            // fsck_meta reports the bad superblock.
            Err(_) => return fsck_meta(&sb, pmem_size),
        };
        let r = fsck_meta(&meta, pmem_size);
        recycle_meta(meta);
        r
    }

    /// Check that the in-core state is what the media holds once the log is forced: every
    /// inode record, every bitmap and refcount line in use. Returns the mismatches (empty when
    /// consistent). Takes the namespace, every ILOCK (by inode number), the allocator and the
    /// log: a quiescent check for the end of a run. Also checks the copy-on-write staging,
    /// which lives in core only: see the invariant below.
    pub async fn verify_incore(&self, p: &P) -> Result<Vec<String>, FsError> {
        let (r, meta) = self.verify_incore_meta(p).await;
        if let Some(m) = meta {
            recycle_meta(m);
        }
        r
    }

    /// The end of a run's check: [`Daxfs::verify_incore`], then [`Daxfs::fsck_media`]. fsck
    /// judges the metadata the verification read (with the namespace, every ILOCK and the
    /// allocator held) instead of reading the media again: at the end of a run nothing stores
    /// between the two, so the bytes would be the same. It reads the media itself when the
    /// verification read nothing, or when the superblock read names another geometry than the
    /// one mounted (the media's, not the mount's, is what fsck judges).
    pub async fn verify_incore_and_fsck(
        &self,
        p: &P,
    ) -> (Result<Vec<String>, FsError>, FsckReport) {
        let (r, meta) = self.verify_incore_meta(p).await;
        let fsck = match meta {
            Some(m) => {
                let same_geo = m
                    .get(..128)
                    .and_then(|sb| Superblock::decode(sb, self.pmem_size).ok())
                    .is_some_and(|s| s.geo == self.geo);
                let f = if same_geo {
                    fsck_meta(&m, self.pmem_size)
                } else {
                    Self::fsck_media(p, self.pmem_size).await
                };
                recycle_meta(m);
                f
            }
            None => Self::fsck_media(p, self.pmem_size).await,
        };
        (r, fsck)
    }

    /// [`Daxfs::verify_incore`], and the metadata it read (`None` when the log force or the
    /// read failed).
    async fn verify_incore_meta(&self, p: &P) -> (Result<Vec<String>, FsError>, Option<Vec<u8>>) {
        let ns = self.lock_ns(p).await;
        let inodes: Vec<Arc<Inode<P>>> = ns.inodes.values().cloned().collect();
        let mut cores = Vec::new();
        for i in &inodes {
            cores.push((i.ino, self.ilock(p, i).await));
        }
        let a = self.lock_alloc(p).await;
        let forced = self.log_force(p).await;
        let meta = match forced {
            Ok(()) => load_meta(p, &self.geo).await.map_err(|_| FsError::EIO),
            Err(e) => Err(e),
        };
        let mut out = Vec::new();
        // Invariant (at rest, every `iomap_begin` ended): the allocator's staged blocks are
        // exactly the blocks of the inodes' CoW forks, and no CoW fork extent has a user left.
        // A staged block outside every CoW fork is a leaked staging (an error exit between
        // iomap_begin and iomap_end that neither cancelled nor remapped it); it is free on the
        // media and taken in core, so no allocation ever returns it.
        let mut forks = 0u64;
        for (ino, core) in &cores {
            for (&fb, st) in &core.cow {
                forks += st.len;
                if st.users != 0 {
                    out.push(format!(
                        "inode {ino}: CoW fork extent at file block {fb} has {} users at rest",
                        st.users
                    ));
                }
                if let Some(b) = (st.dev..st.dev + st.len).find(|&b| !a.staged(b)) {
                    out.push(format!(
                        "inode {ino}: CoW fork block {b} (file block {fb}) is not staged"
                    ));
                }
            }
        }
        if a.staged_count() != forks {
            out.push(format!(
                "{} blocks staged for copy on write, {forks} in the CoW forks: a staging leaked",
                a.staged_count()
            ));
        }
        if let Ok(meta) = &meta {
            let g = &self.geo;
            let mut expect: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
            for (ino, core) in &cores {
                expect.insert(*ino, core.disk.encode());
            }
            let free_record = DiskInode::default().encode();
            for ino in 1..=g.ninodes {
                let at = g.inode_addr(ino) as usize;
                let used = expect.remove(&ino);
                let want = used.as_deref().unwrap_or(&free_record);
                if meta[at..at + INODE_SIZE as usize] != want[..] {
                    out.push(format!(
                        "inode {ino}: in-core record differs from the media"
                    ));
                }
            }
            let line = 64u64;
            let bm = g.addr(g.bitmap_start);
            for unit in (bm..bm + g.bitmap_used_bytes()).step_by(line as usize) {
                if meta[unit as usize..(unit + line) as usize] != a.bitmap_line(unit)[..] {
                    out.push(format!(
                        "bitmap line {unit:#x}: in-core differs from the media"
                    ));
                }
            }
            let rc = g.addr(g.refcount_start);
            let counts = a.refcount_bytes(g.refcount_used_bytes());
            for unit in (rc..rc + g.refcount_used_bytes()).step_by(line as usize) {
                let at = (unit - rc) as usize;
                if meta[unit as usize..(unit + line) as usize] != counts[at..at + line as usize] {
                    out.push(format!(
                        "refcount line {unit:#x}: in-core differs from the media"
                    ));
                }
            }
        }
        drop(a);
        drop(cores);
        drop(ns);
        match meta {
            Ok(m) => (Ok(out), Some(m)),
            Err(e) => (Err(e), None),
        }
    }

    /// `xfs_log_force`: make every logged change durable.
    pub async fn log_force(&self, p: &P) -> Result<(), FsError> {
        let mut log = self.lock_log(p).await;
        let r = xlog_force(p, &self.geo, &mut log).await;
        drop(log);
        r
    }

    /// `xfs_log_force_seq`: make the changes up to sequence `seq` durable.
    pub async fn log_force_seq(&self, p: &P, seq: u64) -> Result<(), FsError> {
        let mut log = self.lock_log(p).await;
        let r = if log.is_durable(seq) {
            Ok(())
        } else {
            xlog_force(p, &self.geo, &mut log).await
        };
        drop(log);
        r
    }

    /// Whether the inode's metadata other than timestamps (`core`, ILOCK held; see
    /// [`InodeCore::logged_seq`]) is durable: without the log mutex when the inode has already
    /// seen its last such change durable.
    pub async fn inode_durable<G: DerefMut<Target = InodeCore>>(
        &self,
        p: &P,
        core: &mut G,
    ) -> bool {
        // Through `Deref` until there is something to change: a holder of the ILOCK that
        // changes nothing does not write the inode (`Platform::rwsem_data_mut`).
        if core.logged_seq <= core.durable_seen {
            return true;
        }
        let log = self.lock_log(p).await;
        core.durable_seen = log.committed_seq;
        drop(log);
        core.logged_seq <= core.durable_seen
    }

    /// `xfs_trans_commit`: insert one transaction's units into the CIL (forcing the log first
    /// when they would not fit); returns the sequence they belong to. Called with the locks of
    /// everything the units captured still held.
    pub async fn commit_trans(&self, p: &P, units: Vec<(u64, Vec<u8>)>) -> Result<u64, FsError> {
        let need: u64 = units.iter().map(|(_, d)| Log::record_bytes(d.len())).sum();
        let mut log = self.lock_log(p).await;
        if log.shutdown {
            drop(log);
            return Err(FsError::EIO);
        }
        if need > log.capacity {
            // One transaction larger than the journal (a reflink of a huge range): refused
            // before anything changed on media. XFS would roll it into several transactions.
            drop(log);
            return Err(FsError::ENOSPC);
        }
        if log.cil_bytes + need > log.capacity {
            xlog_force(p, &self.geo, &mut log).await?;
        }
        log.insert(units);
        let seq = log.open_seq;
        drop(log);
        Ok(seq)
    }

    /// The inode named `name`.
    pub async fn lookup(&self, p: &P, name: &str) -> Option<Arc<Inode<P>>> {
        let ns = self.lock_ns(p).await;
        let r = ns.names.get(name).and_then(|i| ns.inodes.get(i)).cloned();
        drop(ns);
        r
    }

    /// Create an empty file `name` (a path). EEXIST, ENAMETOOLONG, EINVAL (not a path), ENOSPC
    /// (no free inode).
    pub async fn create(&self, p: &P, name: &str) -> Result<Arc<Inode<P>>, FsError> {
        if !name.starts_with('/') {
            return Err(FsError::EINVAL);
        }
        if name.len() > NAME_MAX {
            return Err(FsError::ENAMETOOLONG);
        }
        let mut ns = self.lock_ns(p).await;
        if ns.names.contains_key(name) {
            drop(ns);
            return Err(FsError::EEXIST);
        }
        let Some(ino) = (1..=self.geo.ninodes).find(|i| !ns.inodes.contains_key(i)) else {
            drop(ns);
            return Err(FsError::ENOSPC);
        };
        let now = current_time(p, 0);
        let disk = DiskInode {
            in_use: true,
            name: name.to_string(),
            generation: 1,
            mtime: now,
            ctime: now,
            ..DiskInode::default()
        };
        let units = vec![(self.geo.inode_addr(ino), disk.encode())];
        let seq = match self.commit_trans(p, units).await {
            Ok(s) => s,
            Err(e) => {
                drop(ns);
                return Err(e);
            }
        };
        let mapping = self.world.new_mapping(p, ino).await;
        let inode = Arc::new(Inode::with_core(
            p,
            ino,
            InodeCore {
                disk,
                logged_seq: seq,
                ..InodeCore::default()
            },
            mapping,
        ));
        ns.names.insert(name.to_string(), ino);
        ns.inodes.insert(ino, inode.clone());
        drop(ns);
        Ok(inode)
    }

    /// `file_update_time` (`xfs_vn_update_time`): set the inode's mtime and ctime to
    /// [`current_time`] and log the record in a transaction of its own, unless they already
    /// hold that time (`inode_needs_update_time`); a timestamp-only change ([`InodeCore::
    /// ts_seq`]). Called by write(2), fallocate and a write fault through a shared mapping,
    /// before they change anything, with IOLOCK (write, fallocate) or nothing held.
    pub async fn update_time(&self, p: &P, inode: &Inode<P>) -> Result<(), FsError> {
        let mut core = self.ilock(p, inode).await;
        let d = &core.disk;
        let now = current_time(p, d.ctime);
        if (d.mtime, d.ctime) == (now, now) || !d.in_use {
            drop(core);
            return Ok(());
        }
        let old = (core.disk.mtime, core.disk.ctime);
        (core.disk.mtime, core.disk.ctime) = (now, now);
        let r = self
            .commit_trans(p, vec![self.inode_unit(inode.ino, &core.disk)])
            .await;
        match r {
            Ok(seq) => core.ts_seq = seq,
            Err(_) => (core.disk.mtime, core.disk.ctime) = old,
        }
        drop(core);
        r.map(|_| ())
    }

    /// The inode record unit of `ino` for a transaction.
    pub fn inode_unit(&self, ino: u64, d: &DiskInode) -> (u64, Vec<u8>) {
        (self.geo.inode_addr(ino), d.encode())
    }

    /// `xfs_setfilesize`: make `core`'s new size (already set) part of the next log force, as
    /// a transaction of the whole inode record, so the 16-byte size field changes all or
    /// nothing. Called with the inode's ILOCK held (`core`).
    ///
    /// Bug mode `torn-inode-size` (`Log::torn_inode_size`): when the record is on media (not
    /// in the CIL), the size field is written in place instead, with one 16-byte store, then
    /// flushed and fenced. Only aligned 8-byte stores are failure-atomic on x86, so a crash
    /// before the fence may persist one word of it (`crashcheck --torn`), and the record no
    /// longer decodes. A record in the CIL gets the size there (its next force writes it
    /// whole). The log mutex is held across, so no log force checkpoints an older copy of
    /// the record around the store.
    pub async fn setfilesize(&self, p: &P, ino: u64, core: &mut InodeCore) -> Result<(), FsError> {
        let mut log = self.lock_log(p).await;
        if log.torn_inode_size {
            let addr = self.geo.inode_addr(ino);
            let field = crate::layout::size_field(core.disk.size);
            let off = crate::layout::SIZE_OFF;
            let r = match log.cil.get_mut(&addr) {
                Some(rec) => {
                    rec[off..off + 16].copy_from_slice(&field);
                    Ok(())
                }
                None => match store_clwb(p, addr + off as u64, &field).await {
                    Ok(()) => sfence(p).await,
                    Err(e) => Err(e),
                },
            };
            drop(log);
            return r;
        }
        drop(log);
        let seq = self
            .commit_trans(p, vec![self.inode_unit(ino, &core.disk)])
            .await?;
        core.logged_seq = seq;
        Ok(())
    }

    /// Allocate blocks for file blocks `fb .. fb + n` of `core` that are holes (unwritten
    /// when `unwritten`, else written and zeroed), and set the size to at least `new_size`.
    /// Called with the inode's ILOCK held (`core`). Stops at the first error (ENOSPC when
    /// the device or the inode's extent list is full), keeping what was allocated before.
    #[allow(clippy::too_many_arguments)]
    pub async fn alloc_range(
        &self,
        p: &P,
        ino: u64,
        core: &mut InodeCore,
        fb: u64,
        n: u64,
        unwritten: bool,
        new_size: u64,
    ) -> Result<(), FsError> {
        let mut b = fb;
        let end = fb + n;
        while b < end {
            let (cur, run) = extent::run(&core.disk.extents, b, end - b);
            if cur.is_some() {
                b += run;
                continue;
            }
            self.alloc_hole(p, ino, core, b, run, unwritten).await?;
            // The allocation may be shorter than the hole: go on from wherever it ended.
        }
        if new_size > core.disk.size {
            core.disk.size = new_size;
            let seq = self
                .commit_trans(p, vec![self.inode_unit(ino, &core.disk)])
                .await?;
            core.logged_seq = seq;
        }
        Ok(())
    }

    /// One allocation for the hole at file block `fb` (at most `n` blocks): returns the
    /// extent it mapped. Holds the allocator across zeroing and the transaction, so no other
    /// transaction logs these bitmap bits before the extent that owns them (XFS zeroes inside
    /// the allocation transaction, `XFS_BMAPI_ZERO`).
    pub async fn alloc_hole(
        &self,
        p: &P,
        ino: u64,
        core: &mut InodeCore,
        fb: u64,
        n: u64,
        unwritten: bool,
    ) -> Result<Extent, FsError> {
        let mut a = self.lock_alloc(p).await;
        let (d, got) = match a.alloc(fb, n) {
            Ok(x) => x,
            Err(e) => {
                drop(a);
                return Err(e);
            }
        };
        let e = Extent {
            dev: d,
            len: got,
            unwritten,
        };
        if extent::count_after_replace(&core.disk.extents, fb, e) > core.max_extents() {
            a.free(d, got);
            a.take_dirty();
            drop(a);
            return Err(FsError::ENOSPC);
        }
        if !unwritten && let Err(err) = zero_range(p, self.geo.addr(d), self.geo.addr(got)).await {
            a.free(d, got);
            a.take_dirty();
            drop(a);
            return Err(err);
        }
        extent::replace(&mut core.disk.extents, fb, e);
        self.mark_blocks(p, d, got, false).await;
        let mut units = a.take_dirty();
        units.push(self.inode_unit(ino, &core.disk));
        let r = self.commit_trans(p, units).await;
        drop(a);
        core.logged_seq = r?;
        Ok(e)
    }

    /// Remove file blocks `fb .. fb + n` of the inode (`core`, ILOCK held) and drop its
    /// reference to their blocks (freed unless shared): the block side of truncate and punch
    /// hole. The caller has already broken DAX layouts and removed the mapping's entries.
    pub async fn free_range(
        &self,
        p: &P,
        ino: u64,
        core: &mut InodeCore,
        fb: u64,
        n: u64,
    ) -> Result<(), FsError> {
        let end = fb + n;
        // Transactions of at most REFLINK_CHUNK file blocks each, from the first mapped block
        // on (a sparse range costs one per extent, not one per chunk of holes).
        let mut chunks = Vec::new();
        let mut c = fb;
        while c < end {
            let start = match extent::lookup(&core.disk.extents, c) {
                Some(_) => c,
                None => match core.disk.extents.range(c..end).next() {
                    Some((&k, _)) => k,
                    None => break,
                },
            };
            let stop = end.min(start + REFLINK_CHUNK);
            chunks.push((c, stop));
            c = stop;
        }
        // Refuse before changing anything when a step would overflow the extent list
        // (punching the middle of an extent when the list is full).
        let mut trial = core.disk.extents.clone();
        for &(lo, hi) in &chunks {
            extent::remove_range(&mut trial, lo, hi - lo);
            if trial.len() > MAX_EXTENTS {
                return Err(FsError::ENOSPC);
            }
        }
        if chunks.is_empty() {
            // Nothing mapped: the inode (its size, say) is logged alone.
            core.logged_seq = self
                .commit_trans(p, vec![self.inode_unit(ino, &core.disk)])
                .await?;
            return Ok(());
        }
        for (lo, hi) in chunks {
            let mut a = self.lock_alloc(p).await;
            for e in extent::remove_range(&mut core.disk.extents, lo, hi - lo) {
                self.free_blocks(p, &mut a, e.dev, e.len).await;
            }
            let mut units = a.take_dirty();
            units.push(self.inode_unit(ino, &core.disk));
            let r = self.commit_trans(p, units).await;
            drop(a);
            core.logged_seq = r?;
        }
        Ok(())
    }

    /// Change the size under IOLOCK and MMAPLOCK exclusive; blocks wholly past the new end of
    /// file are freed (the block side of truncate, for a file nobody has mapped: mkfs-time
    /// setup and tests). ftruncate(2) on the full stack is `DaxfsFile::truncate` (file.rs),
    /// which breaks DAX layouts and zeroes the tail block first.
    pub async fn set_size(&self, p: &P, inode: &Inode<P>, size: u64) -> Result<(), FsError> {
        if size > i64::MAX as u64 {
            return Err(FsError::EFBIG);
        }
        // XFS: IOLOCK and MMAPLOCK exclusive before anything that frees or allocates blocks.
        let io = self.iolock_excl(p, inode).await;
        let mm = self.mmaplock_excl(p, inode).await;
        let mut core = self.ilock(p, inode).await;
        let r = async {
            let first_gone = size.div_ceil(self.geo.blocksize);
            let last = core
                .disk
                .extents
                .iter()
                .next_back()
                .map_or(0, |(&s, e)| s + e.len);
            core.disk.size = size;
            if last > first_gone {
                self.free_range(p, inode.ino, &mut core, first_gone, last - first_gone)
                    .await
            } else {
                let seq = self
                    .commit_trans(p, vec![self.inode_unit(inode.ino, &core.disk)])
                    .await?;
                core.logged_seq = seq;
                Ok(())
            }
        }
        .await;
        drop(core);
        drop(mm);
        drop(io);
        r
    }

    /// `fallocate(mode 0 or KEEP_SIZE)`: unwritten extents over the holes of `off .. off +
    /// len`; the size grows to `off + len` unless `keep_size`.
    pub async fn fallocate(
        &self,
        p: &P,
        inode: &Inode<P>,
        off: u64,
        len: u64,
        keep_size: bool,
    ) -> Result<(), FsError> {
        let end = off.checked_add(len).ok_or(FsError::EFBIG)?;
        if len == 0 {
            return Err(FsError::EINVAL);
        }
        if end > i64::MAX as u64 {
            return Err(FsError::EFBIG);
        }
        let bs = self.geo.blocksize;
        let (fb, eb) = (off / bs, end.div_ceil(bs));
        // XFS: IOLOCK and MMAPLOCK exclusive before anything that frees or allocates blocks.
        let io = self.iolock_excl(p, inode).await;
        let mm = self.mmaplock_excl(p, inode).await;
        let mut core = self.ilock(p, inode).await;
        let new_size = if keep_size { 0 } else { end };
        let r = self
            .alloc_range(p, inode.ino, &mut core, fb, eb - fb, true, new_size)
            .await;
        drop(core);
        drop(mm);
        drop(io);
        r
    }

    /// Preallocate written (zeroed) blocks over `off .. off + len` (the trace's `file ...
    /// prealloc`), 2 MiB-aligned where the allocator can; the size grows to `off + len`.
    pub async fn prealloc(
        &self,
        p: &P,
        inode: &Inode<P>,
        off: u64,
        len: u64,
    ) -> Result<(), FsError> {
        let end = off.checked_add(len).ok_or(FsError::EFBIG)?;
        let bs = self.geo.blocksize;
        let (fb, eb) = (off / bs, end.div_ceil(bs));
        // XFS: IOLOCK and MMAPLOCK exclusive before anything that frees or allocates blocks.
        let io = self.iolock_excl(p, inode).await;
        let mm = self.mmaplock_excl(p, inode).await;
        let mut core = self.ilock(p, inode).await;
        let r = self
            .alloc_range(p, inode.ino, &mut core, fb, eb - fb, false, end)
            .await;
        drop(core);
        drop(mm);
        drop(io);
        r
    }

    /// FICLONERANGE: share the blocks of `src` from `src_off` for `len` bytes into `dst` at
    /// `dst_off` (holes in the source punch the destination); `len` 0 means to the source's
    /// end of file. Offsets are block-aligned, and so is `len` unless the range ends at the
    /// source's EOF (EINVAL otherwise); overlapping ranges of one file are EINVAL. The
    /// destination grows to cover the range. Takes both IOLOCKs, MMAPLOCKs and ILOCKs in
    /// inode-number order. Without the DAX core (this function) nothing is mapped to break; see
    /// [`Daxfs::reflink_dax`] for files that may be mapped.
    pub async fn reflink(
        &self,
        p: &P,
        src: &Inode<P>,
        dst: &Inode<P>,
        src_off: u64,
        len: u64,
        dst_off: u64,
    ) -> Result<(), FsError> {
        self.reflink_inner(p, None, src, dst, src_off, len, dst_off, |_| {})
            .await
    }

    /// FICLONERANGE on files the DAX core may have mapped: as [`Daxfs::reflink`], and with
    /// both IOLOCKs and MMAPLOCKs held, before any block changes owner,
    /// both files' DAX layouts are broken whole, as XFS's
    /// `xfs_mmaplock_two_inodes_and_break_dax_layout` does (`dax_break_layout`: unmap, wait for
    /// pins to go, delete the DAX entries): the destination's old blocks are freed or replaced,
    /// and no writable PTE of the source survives onto blocks that are now shared, so the next
    /// write faults and copies.
    ///
    /// `done(dst_size)` runs after a successful remap with every lock still held, so that a
    /// checker can record the new contents before anyone can read them.
    ///
    /// Simplification: the wait for a pinned page holds MMAPLOCK (XFS's `xfs_wait_dax_page`
    /// drops it while it sleeps); a pin holder never needs MMAPLOCK to unpin.
    #[allow(clippy::too_many_arguments)]
    pub async fn reflink_dax(
        &self,
        p: &P,
        dax: &sim_mm::dax::Dax<P>,
        src: &Inode<P>,
        dst: &Inode<P>,
        src_off: u64,
        len: u64,
        dst_off: u64,
        done: impl FnOnce(u64),
    ) -> Result<(), FsError> {
        self.reflink_inner(p, Some(dax), src, dst, src_off, len, dst_off, done)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn reflink_inner(
        &self,
        p: &P,
        dax: Option<&sim_mm::dax::Dax<P>>,
        src: &Inode<P>,
        dst: &Inode<P>,
        src_off: u64,
        len: u64,
        dst_off: u64,
        done: impl FnOnce(u64),
    ) -> Result<(), FsError> {
        let bs = self.geo.blocksize;
        if !src_off.is_multiple_of(bs) || !dst_off.is_multiple_of(bs) {
            return Err(FsError::EINVAL);
        }
        let same = src.ino == dst.ino;
        // `xfs_ilock2_io_mmap`: both IOLOCKs, then both MMAPLOCKs, each pair in inode-number
        // order; then the ILOCKs in the same order.
        let (lo, hi) = if src.ino <= dst.ino {
            (src, dst)
        } else {
            (dst, src)
        };
        let io1 = self.iolock_excl(p, lo).await;
        let io2 = if same {
            None
        } else {
            Some(self.iolock_excl(p, hi).await)
        };
        let mm1 = self.mmaplock_excl(p, lo).await;
        let mm2 = if same {
            None
        } else {
            Some(self.mmaplock_excl(p, hi).await)
        };
        if let Some(dax) = dax {
            use sim_mm::dax::invalidate::{LLONG_MAX, WaitIdle, dax_break_layout};
            // xfs_mmaplock_two_inodes_and_break_dax_layout: both files whole, whatever the
            // range (dax_break_layout_inode, then dax_delete_mapping_range on the second).
            let mut mappings = vec![&src.mapping];
            if !same {
                mappings.push(&dst.mapping);
            }
            for m in mappings {
                let r = dax_break_layout(dax, p, m, 0, LLONG_MAX, Some(&WaitIdle)).await;
                if r.is_err() {
                    drop((mm2, mm1, io2, io1));
                    return Err(FsError::EIO);
                }
            }
        }
        let (mut g1, mut g2) = if same {
            (self.ilock(p, src).await, None)
        } else if src.ino < dst.ino {
            let a = self.ilock(p, src).await;
            (a, Some(self.ilock(p, dst).await))
        } else {
            let b = self.ilock(p, dst).await;
            let a = self.ilock(p, src).await;
            (a, Some(b))
        };
        let r = async {
            let src_size = g1.disk.size;
            let len = if len == 0 {
                src_size.saturating_sub(src_off)
            } else {
                len
            };
            let src_end = src_off.checked_add(len).ok_or(FsError::EINVAL)?;
            let dst_end = dst_off.checked_add(len).ok_or(FsError::EINVAL)?;
            if len == 0 || src_end > src_size {
                return Err(FsError::EINVAL);
            }
            if !len.is_multiple_of(bs) && src_end != src_size {
                return Err(FsError::EINVAL);
            }
            if same && src_off < dst_end && dst_off < src_end {
                return Err(FsError::EINVAL);
            }
            let (sfb, nb, dfb) = (src_off / bs, len.div_ceil(bs), dst_off / bs);
            // The source runs (a copy: the destination may be the same inode).
            let mut runs: Vec<(u64, Option<Extent>, u64)> = Vec::new();
            let mut b = 0;
            while b < nb {
                let (cur, n) = extent::run(&g1.disk.extents, sfb + b, nb - b);
                runs.push((b, cur, n));
                b += n;
            }
            // One transaction per chunk of at most REFLINK_CHUNK blocks (XFS: one per extent),
            // so that no transaction outgrows the journal; each leaves a consistent file
            // system, and a crash in between leaves the destination partly remapped.
            let mut chunks: Vec<(u64, Option<Extent>, u64)> = Vec::new();
            for &(o, cur, n) in &runs {
                let mut c = 0;
                while c < n {
                    let k = (n - c).min(REFLINK_CHUNK);
                    let piece = cur.map(|e| Extent {
                        dev: e.dev + c,
                        len: k,
                        unwritten: e.unwritten,
                    });
                    chunks.push((o + c, piece, k));
                    c += k;
                }
            }
            let apply = |map: &mut ExtentMap, o: u64, cur: Option<Extent>, n: u64| match cur {
                Some(e) => extent::replace(map, dfb + o, e),
                None => extent::remove_range(map, dfb + o, n),
            };
            // Refuse before changing anything when some step would overflow the extent list.
            let mut trial = match g2.as_ref() {
                Some(g) => g.disk.extents.clone(),
                None => g1.disk.extents.clone(),
            };
            for &(o, cur, n) in &chunks {
                apply(&mut trial, o, cur, n);
                if trial.len() > MAX_EXTENTS {
                    return Err(FsError::ENOSPC);
                }
            }
            g1.reflink = true;
            let dst_core: &mut InodeCore = match g2.as_mut() {
                Some(g) => g,
                None => &mut g1,
            };
            dst_core.reflink = true;
            // xfs_reflink_update_dest: the destination's data changed (`XFS_ICHGTIME_MOD |
            // XFS_ICHGTIME_CHG`), logged with its first chunk.
            stamp(p, &mut dst_core.disk, true);
            for &(o, cur, n) in &chunks {
                let mut a = self.lock_alloc(p).await;
                if let Some(e) = cur {
                    a.share(e.dev, e.len);
                }
                for g in apply(&mut dst_core.disk.extents, o, cur, n) {
                    self.free_blocks(p, &mut a, g.dev, g.len).await;
                }
                let covered = (dfb + o + n) * bs;
                dst_core.disk.size = dst_core.disk.size.max(covered.min(dst_end));
                let mut units = a.take_dirty();
                units.push(self.inode_unit(dst.ino, &dst_core.disk));
                let r = self.commit_trans(p, units).await;
                drop(a);
                dst_core.logged_seq = r?;
            }
            done(dst_core.disk.size);
            Ok(())
        }
        .await;
        drop(g2);
        drop(g1);
        drop((mm2, mm1, io2, io1));
        r
    }
}

impl<P: Platform> Inode<P> {
    pub fn new(p: &P, ino: u64, disk: DiskInode, mapping: Arc<AddressSpace<P>>) -> Inode<P> {
        Inode::with_core(
            p,
            ino,
            InodeCore {
                disk,
                ..InodeCore::default()
            },
            mapping,
        )
    }

    pub fn with_core(p: &P, ino: u64, core: InodeCore, mapping: Arc<AddressSpace<P>>) -> Inode<P> {
        Inode {
            ino,
            mapping,
            i_rwsem: RwSem::new(p, "i_rwsem", ()),
            ilock: RwSem::new(p, "xfs_ilock", core),
        }
    }
}
