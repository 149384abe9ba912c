//! daxfs on the simulated pmem: mkfs/mount/unmount, journal recovery across crash images,
//! fsck on clean and corrupted images, allocation, iomap answers, reflink refcounts, and
//! concurrent allocation explored with dfs.

use sim_core::machine::{CrashImage, CrashOptions, Machine, MachineConfig, Pmem};
use sim_core::platform::bug_on;
use sim_core::sim::{ExploreConfig, RunEnd, Sim, SimConfig, SimPlatform, Strategy, explore};
use sim_core::{Mutex, Spawner};
use sim_fs::fs::{inodes_of, recover_meta};
use sim_fs::journal::CommitPhase;
use sim_fs::layout::{Geometry, PMD_SIZE, Superblock};
use sim_fs::{Daxfs, DaxfsFile, FsError, FsckReport, fsck_image, fsck_meta, mkfs};
use sim_mm::dax::iomap::{
    IOMAP_F_DIRTY, IOMAP_F_NEW, IOMAP_F_SHARED, IOMAP_WRITE, IomapOps, IomapType,
};
use sim_mm::world::{MmConfig, MmWorld};
use std::future::Future;
use std::sync::Arc;

type P = SimPlatform;
const MIB: u64 = 1 << 20;
const BS: u64 = 4096;

fn machine(size: u64) -> Machine {
    let mut cfg = MachineConfig::default();
    cfg.set("pmem", &size.to_string()).unwrap();
    cfg.set("cpus", "2").unwrap();
    Machine::new(cfg).unwrap()
}

/// Run `f` as the only task on `m`; returns its result and the simulation (for the machine).
fn run<T, F, Fut>(m: Machine, f: F) -> (T, Sim)
where
    T: Send + 'static,
    F: FnOnce(P) -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let mut sim = Sim::new(SimConfig::default());
    sim.set_machine(m);
    let p = sim.platform();
    let out = Arc::new(std::sync::Mutex::new(None));
    let o = out.clone();
    sim.spawn("t0", move || async move {
        let r = f(p).await;
        *o.lock().unwrap() = Some(r);
    });
    let end = sim.run(|_, en| en[0]);
    assert_eq!(end, RunEnd::Done, "run ended {end:?}");
    let r = out.lock().unwrap().take().expect("task result");
    (r, sim)
}

/// The machine a power failure leaves now: only what is durable.
/// The machine a power failure leaves now: only what is durable. Ends the simulation.
fn crash_now(sim: Sim) -> Machine {
    let m = sim
        .with_machine(|m| {
            let cp = m.crash_point();
            cp.recover(&persisted_image(), m.config()).unwrap()
        })
        .unwrap();
    drop(sim);
    m
}

fn persisted_image() -> CrashImage {
    CrashImage {
        delta: vec![],
        lines: vec![],
        hash: 0,
    }
}

/// The durable content of the device now.
fn durable_pmem(sim: &Sim) -> Pmem {
    sim.with_machine(|m| m.crash_point().persisted().clone())
        .unwrap()
}

fn fsck_pmem(pm: &Pmem) -> FsckReport {
    let size = pm.size();
    let r = fsck_image(
        &mut |a, buf| pm.read(a, buf).map_err(|e| e.to_string()),
        size,
    );
    // fsck_meta (the end of a run's fsck, on the bytes it loaded) gives the same report on
    // the same bytes, and on bytes cut short the report of fsck_image reading past them.
    let mut sb = [0u8; 128];
    pm.read(0, &mut sb).unwrap();
    let meta = match Superblock::decode(&sb, size) {
        Ok(s) => {
            let mut meta = vec![0u8; s.geo.meta_bytes() as usize];
            pm.read(0, &mut meta).unwrap();
            meta
        }
        Err(_) => sb.to_vec(),
    };
    assert_eq!(fsck_meta(&meta, size), r);
    for cut in [0, 127, 128, meta.len() - 1] {
        let short = &meta[..cut.min(meta.len())];
        let by_reads = fsck_image(
            &mut |a, buf| {
                let end = a as usize + buf.len();
                if end > short.len() {
                    return Err(format!("{a:#x}+{} past the metadata read", buf.len()));
                }
                buf.copy_from_slice(&short[a as usize..end]);
                Ok(())
            },
            size,
        );
        assert_eq!(fsck_meta(short, size), by_reads, "cut at {cut}");
    }
    r
}

/// Recovered metadata of `pm` (journal applied in memory), with fsck of the result.
fn recover_pmem(pm: &Pmem) -> (sim_fs::fs::Recovered, FsckReport) {
    let mut sb = [0u8; 128];
    pm.read(0, &mut sb).unwrap();
    let s = Superblock::decode(&sb, pm.size()).unwrap();
    let mut meta = vec![0u8; s.geo.meta_bytes() as usize];
    pm.read(0, &mut meta).unwrap();
    let rec = recover_meta(s.geo, s.clean, meta).unwrap();
    let m = rec.meta.clone();
    let report = fsck_image(
        &mut |a, buf| {
            if a as usize + buf.len() <= m.len() {
                buf.copy_from_slice(&m[a as usize..a as usize + buf.len()]);
                Ok(())
            } else {
                pm.read(a, buf).map_err(|e| e.to_string())
            }
        },
        pm.size(),
    );
    (rec, report)
}

fn names(rec: &sim_fs::fs::Recovered) -> Vec<String> {
    inodes_of(&rec.geo, &rec.meta)
        .unwrap()
        .into_values()
        .map(|d| d.name)
        .collect()
}

/// Mount with an mm world whose memmap covers the device (pfn 0x100000 = device page 0).
async fn mount(p: &P, size: u64) -> Result<Arc<Daxfs<P>>, String> {
    let w = Arc::new(MmWorld::new(p, 0x10_0000, size / 4096, MmConfig::default()));
    Daxfs::mount(p, size, w).await
}

// ---------------------------------------------------------------------------------------------

#[test]
fn mkfs_mount_unmount_round_trip() {
    let size = 16 * MIB;
    let ((extents, info1), sim) = run(machine(size), move |p| async move {
        mkfs(&p, size, BS).await.unwrap();
        let fs = mount(&p, size).await.unwrap();
        let info1 = fs.mount_info.clone();
        let a = fs.create(&p, "/a").await.unwrap();
        let b = fs.create(&p, "/b").await.unwrap();
        assert_eq!(fs.create(&p, "/a").await.err(), Some(FsError::EEXIST));
        assert_eq!(fs.create(&p, "a").await.err(), Some(FsError::EINVAL));
        fs.prealloc(&p, &a, 0, 4 * MIB).await.unwrap();
        fs.fallocate(&p, &b, 8192, 3 * BS, false).await.unwrap();
        let extents = a.ilock.read(&p).await.disk.extents.clone();
        assert_eq!(fs.verify_incore(&p).await.unwrap(), Vec::<String>::new());
        fs.unmount(&p).await.unwrap();
        (extents, info1)
    });
    assert!(info1.was_clean, "a fresh file system is clean");
    assert_eq!((info1.replayed, info1.discarded.clone()), (None, None));
    let pm = durable_pmem(&sim);
    let r = fsck_pmem(&pm);
    assert!(r.is_clean(), "{r}");
    assert_eq!((r.inodes, r.used_blocks), (2, 1024 + 3));
    // Remount (only what was durable survives the machine): everything is there.
    let m = crash_now(sim);
    let ((info2, ext2, size_b), sim) = run(m, move |p| async move {
        let fs = mount(&p, size).await.unwrap();
        let a = fs.lookup(&p, "/a").await.unwrap();
        let b = fs.lookup(&p, "/b").await.unwrap();
        let ext = a.ilock.read(&p).await.disk.extents.clone();
        let sb = b.ilock.read(&p).await.disk.size;
        assert_eq!(fs.verify_incore(&p).await.unwrap(), Vec::<String>::new());
        fs.unmount(&p).await.unwrap();
        (fs.mount_info.clone(), ext, sb)
    });
    assert!(info2.was_clean, "unmount marked the superblock clean");
    assert_eq!(ext2, extents);
    assert_eq!(size_b, 8192 + 3 * BS);
    assert!(fsck_pmem(&durable_pmem(&sim)).is_clean());
}

#[test]
fn mount_refuses_what_is_not_a_daxfs_and_mkfs_refuses_bad_geometry() {
    let size = 4 * MIB;
    let (r, _) = run(machine(size), move |p| async move {
        let none = mount(&p, size).await.err().unwrap();
        let bs = mkfs(&p, size, 3000).await.err().unwrap();
        let small = mkfs(&p, 2 * MIB, BS).await.err().unwrap();
        (none, bs, small)
    });
    assert!(
        r.0.starts_with("superblock (block 0): bad magic"),
        "{}",
        r.0
    );
    assert!(r.1.contains("power of two"), "{}", r.1);
    assert!(r.2.contains("too small"), "{}", r.2);
}

#[test]
fn every_allowed_block_size_makes_a_clean_file_system_with_aligned_extents() {
    for bs in [4096u64, 65536, 2 * MIB] {
        let size = 16 * MIB;
        let (ext, sim) = run(machine(size), move |p| async move {
            mkfs(&p, size, bs).await.unwrap();
            let fs = mount(&p, size).await.unwrap();
            let f = fs.create(&p, "/f").await.unwrap();
            fs.prealloc(&p, &f, 0, 2 * MIB).await.unwrap();
            assert_eq!(fs.verify_incore(&p).await.unwrap(), Vec::<String>::new());
            fs.unmount(&p).await.unwrap();
            let e = f.ilock.read(&p).await.disk.extents.clone();
            (e, fs.geo)
        });
        let (ext, geo) = ext;
        for (&fb, e) in &ext {
            assert_eq!(
                (geo.addr(e.dev) % PMD_SIZE),
                (geo.addr(fb) % PMD_SIZE),
                "bs {bs}"
            );
        }
        let r = fsck_pmem(&durable_pmem(&sim));
        assert!(r.is_clean(), "bs {bs}: {r}");
    }
}

/// A crash at every step of a log force, in every image with at most one pending line
/// persisted out of order, recovers to the state before the transaction or after it, with a
/// clean fsck; a crash after the commit record always gives the new state.
#[test]
fn a_crash_during_a_log_force_recovers_the_old_or_the_new_state() {
    let size = 4 * MIB;
    // Stage 1: a file system with /old, durable.
    let (_, sim) = run(machine(size), move |p| async move {
        mkfs(&p, size, BS).await.unwrap();
        let fs = mount(&p, size).await.unwrap();
        let f = fs.create(&p, "/old").await.unwrap();
        fs.prealloc(&p, &f, 0, 8 * BS).await.unwrap();
        fs.log_force(&p).await.unwrap();
    });
    let base = crash_now(sim);
    let started = Arc::new(std::sync::Mutex::new(false));
    // Stage 2: /new is created and allocated, then the log forced; stop after `limit` steps.
    let stage2 = |m: Machine, limit: Option<u64>, started: Arc<std::sync::Mutex<bool>>| {
        let mut sim = Sim::new(SimConfig::default());
        sim.set_machine(m);
        let p = sim.platform();
        let st = started.clone();
        sim.spawn("t0", move || async move {
            let fs = mount(&p, size).await.unwrap();
            let f = fs.create(&p, "/new").await.unwrap();
            fs.prealloc(&p, &f, 0, 3 * BS).await.unwrap();
            let g = fs.lookup(&p, "/old").await.unwrap();
            fs.reflink(&p, &g, &f, 0, 2 * BS, 4 * BS).await.unwrap();
            *st.lock().unwrap() = true;
            fs.log_force(&p).await.unwrap();
        });
        let mut first = None;
        let mut n = 0u64;
        let end = sim.run_steps(|_, en| {
            if first.is_none() && *started.lock().unwrap() {
                first = Some(n);
            }
            n += 1;
            if limit.is_some_and(|l| n > l) {
                None
            } else {
                Some(en[0])
            }
        });
        (sim, end, first, n)
    };
    let (sim0, end, first, total) = stage2(base.clone_for_test(), None, started.clone());
    drop(sim0);
    assert_eq!(end, RunEnd::Done);
    let first = first.expect("the force started");
    let mut outcomes = std::collections::BTreeMap::new();
    for limit in first..=total {
        let (sim, _, _, _) = stage2(
            base.clone_for_test(),
            Some(limit),
            Arc::new(std::sync::Mutex::new(false)),
        );
        sim.with_machine(|m| {
            let cp = m.crash_point();
            let opts = CrashOptions {
                k: 1,
                torn: true,
                dedup: true,
            };
            // Every other image (deterministic sampling keeps the test at a few seconds).
            for img in cp.images(opts).step_by(2) {
                let pm = cp.materialize(&img);
                let (rec, report) = recover_pmem(&pm);
                assert!(report.is_clean(), "step {limit}: {report}");
                let n = names(&rec);
                let new = n.contains(&"/new".to_string());
                if new {
                    let inodes = inodes_of(&rec.geo, &rec.meta).unwrap();
                    let d = inodes.values().find(|d| d.name == "/new").unwrap();
                    // The whole transaction or nothing: 3 own blocks and 2 shared.
                    assert_eq!(d.extents.values().map(|e| e.len).sum::<u64>(), 5);
                    assert_eq!(report.shared_blocks, 2);
                }
                *outcomes.entry(new).or_insert(0u64) += 1;
            }
        });
    }
    assert!(
        outcomes.contains_key(&false) && outcomes.contains_key(&true),
        "{outcomes:?}"
    );
}

trait CloneForTest {
    fn clone_for_test(&self) -> Machine;
}

impl CloneForTest for Machine {
    fn clone_for_test(&self) -> Machine {
        let cp = self.crash_point();
        cp.recover(&persisted_image(), self.config()).unwrap()
    }
}

/// The phases of a log force through the real mount: stopped before the commit record is
/// durable, the transaction is discarded; after, it is replayed.
#[test]
fn mount_replays_committed_and_discards_uncommitted_transactions() {
    let size = 4 * MIB;
    for phase in [
        CommitPhase::LogWritten,
        CommitPhase::Committed,
        CommitPhase::Checkpointed,
    ] {
        let (_, sim) = run(machine(size), move |p| async move {
            mkfs(&p, size, BS).await.unwrap();
            let fs = mount(&p, size).await.unwrap();
            let f = fs.create(&p, "/f").await.unwrap();
            fs.prealloc(&p, &f, 0, 2 * BS).await.unwrap();
            fs.log.lock(&p).await.stop_at = Some(phase);
            assert_eq!(fs.log_force(&p).await, Err(FsError::EIO));
            // The log is shut down: nothing more reaches the media.
            assert_eq!(fs.create(&p, "/g").await.err(), Some(FsError::EIO));
        });
        let m = crash_now(sim);
        let ((info, found), sim) = run(m, move |p| async move {
            let fs = mount(&p, size).await.unwrap();
            let found = fs.lookup(&p, "/f").await.is_some();
            assert_eq!(fs.verify_incore(&p).await.unwrap(), Vec::<String>::new());
            fs.unmount(&p).await.unwrap();
            (fs.mount_info.clone(), found)
        });
        assert!(!info.was_clean);
        match phase {
            CommitPhase::LogWritten => {
                assert!(!found, "uncommitted: old state");
                assert!(info.discarded.is_some() && info.replayed.is_none());
            }
            _ => {
                assert!(found, "committed: new state ({phase:?})");
                assert!(info.replayed.is_some() && info.discarded.is_none());
            }
        }
        let r = fsck_pmem(&durable_pmem(&sim));
        assert!(r.is_clean(), "{phase:?}: {r}");
    }
}

/// A clean image and its geometry, with /a (4 blocks at a known place), /b reflinked from /a.
fn sample_image() -> (Pmem, Geometry) {
    let size = 4 * MIB;
    let (geo, sim) = run(machine(size), move |p| async move {
        mkfs(&p, size, BS).await.unwrap();
        let fs = mount(&p, size).await.unwrap();
        let a = fs.create(&p, "/a").await.unwrap();
        fs.prealloc(&p, &a, 0, 4 * BS).await.unwrap();
        let b = fs.create(&p, "/b").await.unwrap();
        fs.reflink(&p, &a, &b, 0, 2 * BS, 0).await.unwrap();
        assert_eq!(fs.verify_incore(&p).await.unwrap(), Vec::<String>::new());
        fs.unmount(&p).await.unwrap();
        fs.geo
    });
    (durable_pmem(&sim), geo)
}

#[test]
fn fsck_names_the_structure_and_block_of_each_corruption() {
    let (clean, g) = sample_image();
    let r = fsck_pmem(&clean);
    assert!(r.is_clean(), "{r}");
    assert_eq!((r.inodes, r.used_blocks, r.shared_blocks), (2, 4, 2));
    let d0 = g.data_start;
    let bitmap_block = g.bitmap_start + d0 / 8 / g.blocksize;
    let rc_block = g.refcount_start + d0 * 4 / g.blocksize;
    let ino1 = g.inode_addr(1);
    let ino2 = g.inode_addr(2);
    type Case = (
        &'static str,
        Box<dyn Fn(&mut Pmem)>,
        &'static str,
        u64,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "superblock checksum",
            Box::new(|pm| flip(pm, 40)),
            "superblock",
            0,
            "checksum",
        ),
        (
            "owned block marked free",
            Box::new(move |pm| clear_bit(pm, &g, d0 + 3)),
            "block bitmap",
            bitmap_block,
            "owned by inode 1 but marked free",
        ),
        (
            "leaked block",
            Box::new(move |pm| set_bit(pm, &g, d0 + 100)),
            "block bitmap",
            bitmap_block,
            "leaked",
        ),
        (
            "metadata block marked free",
            Box::new(move |pm| clear_bit(pm, &g, g.itable_start)),
            "block bitmap",
            g.bitmap_start,
            "(inode table) is marked free",
        ),
        (
            "refcount too high",
            Box::new(move |pm| put32(pm, g.refcount_addr(d0), 3)),
            "refcount table",
            rc_block,
            "refcount 3 but 2 owner(s)",
        ),
        (
            "refcount lost: overlapping extents",
            Box::new(move |pm| {
                put32(pm, g.refcount_addr(d0), 0);
                put32(pm, g.refcount_addr(d0 + 1), 0);
            }),
            "refcount table",
            rc_block,
            "overlapping extents",
        ),
        (
            "extent outside the data region",
            // /a's first extent's device block -> a journal block.
            Box::new(move |pm| put64(pm, ino1 + 128 + 8, 2)),
            "inode table",
            ino1 / g.blocksize,
            "outside the data region",
        ),
        (
            "duplicate name",
            Box::new(move |pm| {
                let mut b = [0u8; 1];
                pm.read(ino1 + 33, &mut b).unwrap();
                pm.write(ino2 + 33, &b).unwrap();
            }),
            "inode table",
            ino2 / g.blocksize,
            "also inode 1's",
        ),
        (
            "bad inode magic",
            Box::new(move |pm| flip(pm, ino2)),
            "inode table",
            ino2 / g.blocksize,
            "inode 2: bad magic",
        ),
        (
            "journal header",
            Box::new(move |pm| flip(pm, g.journal_addr())),
            "journal",
            g.journal_start,
            "header magic",
        ),
    ];
    for (what, corrupt, structure, block, msg) in cases {
        let mut pm = clean.clone();
        corrupt(&mut pm);
        let r = fsck_pmem(&pm);
        assert!(
            r.problems
                .iter()
                .any(|p| p.structure == structure && p.block == block && p.message.contains(msg)),
            "{what}: expected {structure} (block {block}): ..{msg}.., got:\n{r}"
        );
    }
}

/// fsck_meta keeps the clean images it checked: an image that differs from a kept one in a
/// single byte anywhere (the superblock, the journal, an inode, the bitmap, the last block's
/// refcount) is checked anew, and gets fsck_image's report.
#[test]
fn fsck_of_an_image_one_byte_from_a_clean_one_checks_it_anew() {
    let (clean, g) = sample_image();
    let size = clean.size();
    let meta_of = |pm: &Pmem| {
        let mut m = vec![0u8; g.meta_bytes() as usize];
        pm.read(0, &mut m).unwrap();
        m
    };
    let clean_meta = meta_of(&clean);
    assert!(fsck_meta(&clean_meta, size).is_clean());
    let last_rc = g.refcount_addr(g.nblocks - 1);
    for a in [
        40,
        g.journal_addr(),
        g.inode_addr(2),
        g.addr(g.bitmap_start) + 1,
        last_rc,
    ] {
        let mut pm = clean.clone();
        flip(&mut pm, a);
        let meta = meta_of(&pm);
        assert!(fsck_meta(&clean_meta, size).is_clean());
        let r = fsck_meta(&meta, size);
        assert!(!r.is_clean(), "byte {a:#x} flipped: {r}");
        assert_eq!(r, fsck_pmem(&pm));
    }
}

fn flip(pm: &mut Pmem, a: u64) {
    let mut b = [0u8; 1];
    pm.read(a, &mut b).unwrap();
    b[0] ^= 0x55;
    pm.write(a, &b).unwrap();
}

fn put32(pm: &mut Pmem, a: u64, v: u32) {
    pm.write(a, &v.to_le_bytes()).unwrap();
}

fn put64(pm: &mut Pmem, a: u64, v: u64) {
    pm.write(a, &v.to_le_bytes()).unwrap();
}

fn clear_bit(pm: &mut Pmem, g: &Geometry, blk: u64) {
    let a = g.bitmap_byte(blk);
    let mut b = [0u8; 1];
    pm.read(a, &mut b).unwrap();
    b[0] &= !(1 << (blk % 8));
    pm.write(a, &b).unwrap();
}

fn set_bit(pm: &mut Pmem, g: &Geometry, blk: u64) {
    let a = g.bitmap_byte(blk);
    let mut b = [0u8; 1];
    pm.read(a, &mut b).unwrap();
    b[0] |= 1 << (blk % 8);
    pm.write(a, &b).unwrap();
}

#[test]
fn allocation_is_pmd_aligned_and_a_full_device_gives_enospc() {
    let size = 8 * MIB;
    let ((ext, errs, geo), sim) = run(machine(size), move |p| async move {
        mkfs(&p, size, BS).await.unwrap();
        let fs = mount(&p, size).await.unwrap();
        let small = fs.create(&p, "/small").await.unwrap();
        fs.prealloc(&p, &small, 0, BS).await.unwrap();
        let big = fs.create(&p, "/big").await.unwrap();
        fs.prealloc(&p, &big, 0, 2 * MIB).await.unwrap();
        let ext = big.ilock.read(&p).await.disk.extents.clone();
        // Fill the device: ENOSPC, not a panic; what was allocated stays consistent.
        let fill = fs.create(&p, "/fill").await.unwrap();
        let e1 = fs.prealloc(&p, &fill, 0, 16 * MIB).await;
        let e2 = fs.fallocate(&p, &fill, 32 * MIB, BS, false).await;
        let file = DaxfsFile::new(fs.clone(), fill.clone());
        let e3 = file
            .iomap_begin_fs(&p, 64 * MIB, BS, IOMAP_WRITE)
            .await
            .err();
        let e4 = file.iomap_begin(&p, 64 * MIB, BS, IOMAP_WRITE).await.err();
        assert_eq!(fs.verify_incore(&p).await.unwrap(), Vec::<String>::new());
        fs.unmount(&p).await.unwrap();
        (ext, (e1.err(), e2.err(), e3, e4), fs.geo)
    });
    assert_eq!(ext.len(), 1, "one extent: {ext:?}");
    let (&fb, e) = ext.iter().next().unwrap();
    assert_eq!((fb, e.len, geo.addr(e.dev) % PMD_SIZE), (0, 512, 0));
    assert_eq!(
        errs,
        (
            Some(FsError::ENOSPC),
            Some(FsError::ENOSPC),
            Some(FsError::ENOSPC),
            Some(sim_mm::Errno::ENOSPC)
        )
    );
    let r = fsck_pmem(&durable_pmem(&sim));
    assert!(r.is_clean(), "{r}");
    assert_eq!(r.used_blocks, geo.nblocks - geo.data_start);
}

#[test]
fn iomap_answers_for_holes_unwritten_mapped_and_shared_extents() {
    let size = 8 * MIB;
    let (out, sim) = run(machine(size), move |p| async move {
        mkfs(&p, size, BS).await.unwrap();
        let fs = mount(&p, size).await.unwrap();
        let f = fs.create(&p, "/f").await.unwrap();
        fs.set_size(&p, &f, 4 * MIB).await.unwrap();
        let file = DaxfsFile::new(fs.clone(), f.clone());
        let mut out = Vec::new();
        // A hole: read -> Hole up to the request.
        let h = file.iomap_begin(&p, 5 * BS, 3 * BS, 0).await.unwrap();
        out.push(format!(
            "{:?} {} {}",
            h.iomap.typ, h.iomap.offset, h.iomap.length
        ));
        // Write fault on the hole: allocated, NEW, DIRTY (not committed).
        let w = file.iomap_begin(&p, 5 * BS, BS, IOMAP_WRITE).await.unwrap();
        assert_eq!(w.iomap.typ, IomapType::Mapped);
        assert!(w.iomap.has(IOMAP_F_NEW) && w.iomap.has(IOMAP_F_DIRTY));
        let blk = w.iomap.addr;
        // Read again: Mapped, same block.
        let r = file.iomap_begin(&p, 5 * BS, BS, 0).await.unwrap();
        assert_eq!((r.iomap.typ, r.iomap.addr), (IomapType::Mapped, blk));
        assert!(!r.iomap.has(IOMAP_F_DIRTY), "reads never carry F_DIRTY");
        // A write of the mapped block: DIRTY until the fsync of MAP_SYNC.
        let w2 = file.iomap_begin(&p, 5 * BS, BS, IOMAP_WRITE).await.unwrap();
        assert!(w2.iomap.has(IOMAP_F_DIRTY) && !w2.iomap.has(IOMAP_F_NEW));
        file.fsync_range(&p, 0, u64::MAX, false).await.unwrap();
        let w3 = file.iomap_begin(&p, 5 * BS, BS, IOMAP_WRITE).await.unwrap();
        assert_eq!(w3.iomap.flags, 0, "durable metadata: no F_DIRTY");
        // Unwritten (fallocate): read -> Unwritten; write -> converted, NEW.
        fs.fallocate(&p, &f, 16 * BS, 2 * BS, true).await.unwrap();
        let u = file.iomap_begin(&p, 16 * BS, 2 * BS, 0).await.unwrap();
        assert_eq!(
            (u.iomap.typ, u.iomap.length),
            (IomapType::Unwritten, 2 * BS)
        );
        let uw = file
            .iomap_begin(&p, 16 * BS, BS, IOMAP_WRITE)
            .await
            .unwrap();
        assert_eq!(uw.iomap.typ, IomapType::Mapped);
        assert!(uw.iomap.has(IOMAP_F_NEW));
        assert_eq!(uw.iomap.addr, u.iomap.addr, "converted in place");
        // A PMD-sized write fault on an aligned hole gets a PMD-aligned extent.
        let pmd = file
            .iomap_begin(&p, 2 * MIB, 2 * MIB, IOMAP_WRITE)
            .await
            .unwrap();
        assert_eq!((pmd.iomap.length, pmd.iomap.addr % PMD_SIZE), (2 * MIB, 0));
        // Shared (reflink): read -> SHARED; write -> copy on write with the old as srcmap.
        let g = fs.create(&p, "/g").await.unwrap();
        fs.reflink(&p, &f, &g, 5 * BS, BS, 0).await.unwrap();
        let gf = DaxfsFile::new(fs.clone(), g.clone());
        let s = gf.iomap_begin(&p, 0, BS, 0).await.unwrap();
        assert!(s.iomap.has(IOMAP_F_SHARED));
        assert_eq!(s.iomap.addr, blk);
        let c = gf.iomap_begin(&p, 0, BS, IOMAP_WRITE).await.unwrap();
        assert!(c.iomap.has(IOMAP_F_SHARED));
        assert_ne!(c.iomap.addr, blk);
        assert_eq!((c.srcmap().typ, c.srcmap().addr), (IomapType::Mapped, blk));
        // Staged (the CoW fork): until iomap_end the old block stays shared, and /g's reads
        // see the staged block.
        let mid = file.iomap_begin(&p, 5 * BS, BS, 0).await.unwrap();
        assert!(mid.iomap.has(IOMAP_F_SHARED));
        let gr = gf.iomap_begin(&p, 0, BS, 0).await.unwrap();
        assert_eq!((gr.iomap.addr, gr.iomap.flags), (c.iomap.addr, 0));
        gf.iomap_end(&p, 0, BS, BS, IOMAP_WRITE, &c.iomap)
            .await
            .unwrap();
        // After the remap, neither file shares the block any more.
        let again = file.iomap_begin(&p, 5 * BS, BS, 0).await.unwrap();
        assert!(!again.iomap.has(IOMAP_F_SHARED));
        assert_eq!(file.i_size(&p).await, 4 * MIB);
        assert_eq!(fs.verify_incore(&p).await.unwrap(), Vec::<String>::new());
        fs.unmount(&p).await.unwrap();
        out
    });
    assert_eq!(out, vec![format!("Hole {} {}", 5 * BS, 3 * BS)]);
    let r = fsck_pmem(&durable_pmem(&sim));
    assert!(r.is_clean(), "{r}");
    assert_eq!(r.shared_blocks, 0);
}

/// `iomap_end` with nothing written (an error exit of the fault or write path after
/// `iomap_begin`) cancels a copy on write's staging as XFS does
/// (`xfs_reflink_cancel_cow_range`): the staged block goes back to the allocator, the data fork
/// still shares the old block and no transaction is written. A staging a read was handed meanwhile
/// may be mapped, so it is remapped instead.
#[test]
fn a_copy_on_write_ended_without_a_write_is_cancelled_unless_a_read_has_it() {
    let size = 8 * MIB;
    let (_, sim) = run(machine(size), move |p| async move {
        mkfs(&p, size, BS).await.unwrap();
        let fs = mount(&p, size).await.unwrap();
        let f = fs.create(&p, "/f").await.unwrap();
        fs.set_size(&p, &f, 2 * BS).await.unwrap();
        let file = DaxfsFile::new(fs.clone(), f.clone());
        let b0 = file.iomap_begin(&p, 0, BS, IOMAP_WRITE).await.unwrap();
        let b1 = file.iomap_begin(&p, BS, BS, IOMAP_WRITE).await.unwrap();
        let g = fs.create(&p, "/g").await.unwrap();
        fs.reflink(&p, &f, &g, 0, 2 * BS, 0).await.unwrap();
        let gf = DaxfsFile::new(fs.clone(), g.clone());
        let free = fs.lock_alloc(&p).await.free;
        // What the log holds or has written: a transaction would change it.
        let log_state = |fs: Arc<Daxfs<P>>, p: P| async move {
            let l = fs.lock_log(&p).await;
            (l.open_seq, l.cil.clone(), l.forces)
        };
        let head = log_state(fs.clone(), p).await;
        // A write that fails: staged, then ended with nothing written.
        let c = gf.iomap_begin(&p, 0, BS, IOMAP_WRITE).await.unwrap();
        assert!(c.iomap.has(IOMAP_F_SHARED));
        assert_eq!(fs.lock_alloc(&p).await.staged_count(), 1);
        gf.iomap_end(&p, 0, BS, 0, IOMAP_WRITE, &c.iomap)
            .await
            .unwrap();
        {
            let a = fs.lock_alloc(&p).await;
            assert_eq!((a.free, a.staged_count()), (free, 0), "cancelled");
        }
        assert!(
            log_state(fs.clone(), p).await == head,
            "nothing reached the log or the media"
        );
        let r = gf.iomap_begin(&p, 0, BS, 0).await.unwrap();
        assert!(r.iomap.has(IOMAP_F_SHARED) && r.iomap.addr == b0.iomap.addr);
        assert_eq!(fs.verify_incore(&p).await.unwrap(), Vec::<String>::new());
        // The same, but a read is handed the staged block before the failed write ends.
        let c = gf.iomap_begin(&p, BS, BS, IOMAP_WRITE).await.unwrap();
        let rd = gf.iomap_begin(&p, BS, BS, 0).await.unwrap();
        assert_eq!(rd.iomap.addr, c.iomap.addr, "a read maps the staged block");
        gf.iomap_end(&p, BS, BS, 0, IOMAP_WRITE, &c.iomap)
            .await
            .unwrap();
        let r = gf.iomap_begin(&p, BS, BS, 0).await.unwrap();
        assert_eq!((r.iomap.addr, r.iomap.flags), (c.iomap.addr, 0), "remapped");
        assert_ne!(r.iomap.addr, b1.iomap.addr);
        assert_eq!(fs.verify_incore(&p).await.unwrap(), Vec::<String>::new());
        fs.unmount(&p).await.unwrap();
    });
    let r = fsck_pmem(&durable_pmem(&sim));
    assert!(r.is_clean(), "{r}");
    assert_eq!(
        r.shared_blocks, 1,
        "block 0 is still shared, block 1 is not"
    );
}

#[test]
fn reflink_counts_owners_and_freeing_drops_them() {
    let size = 8 * MIB;
    let (counts, sim) = run(machine(size), move |p| async move {
        mkfs(&p, size, BS).await.unwrap();
        let fs = mount(&p, size).await.unwrap();
        let a = fs.create(&p, "/a").await.unwrap();
        fs.prealloc(&p, &a, 0, 4 * BS).await.unwrap();
        let dev = a.ilock.read(&p).await.disk.extents[&0].dev;
        let b = fs.create(&p, "/b").await.unwrap();
        let c = fs.create(&p, "/c").await.unwrap();
        fs.reflink(&p, &a, &b, 0, 0, 0).await.unwrap();
        fs.reflink(&p, &a, &c, BS, BS, 0).await.unwrap();
        let owners = |fs: Arc<Daxfs<P>>, p: P| async move {
            let al = fs.alloc.lock(&p).await;
            let v: Vec<u32> = (dev..dev + 4).map(|d| al.owners(d)).collect();
            drop(al);
            v
        };
        let mut counts = vec![owners(fs.clone(), p).await];
        // Overlapping ranges of one file, and unaligned offsets: EINVAL.
        assert_eq!(
            fs.reflink(&p, &a, &a, 0, 2 * BS, BS).await.err(),
            Some(FsError::EINVAL)
        );
        assert_eq!(
            fs.reflink(&p, &a, &b, 100, BS, 0).await.err(),
            Some(FsError::EINVAL)
        );
        // Truncating /b drops its references.
        fs.set_size(&p, &b, 0).await.unwrap();
        counts.push(owners(fs.clone(), p).await);
        fs.set_size(&p, &a, 0).await.unwrap();
        counts.push(owners(fs.clone(), p).await);
        assert_eq!(fs.verify_incore(&p).await.unwrap(), Vec::<String>::new());
        fs.unmount(&p).await.unwrap();
        counts
    });
    assert_eq!(
        counts,
        vec![vec![2, 3, 2, 2], vec![1, 2, 1, 1], vec![0, 1, 0, 0]]
    );
    let r = fsck_pmem(&durable_pmem(&sim));
    assert!(r.is_clean(), "{r}");
    assert_eq!((r.used_blocks, r.shared_blocks), (1, 0));
}

/// Two tasks allocate through iomap concurrently (one file, neighbouring blocks; and a second
/// file): in every interleaving the extents are disjoint and the file system checks clean
/// after a log force.
#[test]
fn concurrent_write_faults_allocate_disjoint_blocks_in_every_interleaving() {
    let size = 4 * MIB;
    let model = move |sim: &mut Sim| {
        sim.set_machine(machine(size));
        let p = sim.platform();
        let slot = Arc::new(std::sync::Mutex::new(None));
        let s = slot.clone();
        sim.spawn("setup", move || async move {
            mkfs(&p, size, BS).await.unwrap();
            let fs = mount(&p, size).await.unwrap();
            let f = fs.create(&p, "/f").await.unwrap();
            let g = fs.create(&p, "/g").await.unwrap();
            fs.log_force(&p).await.unwrap();
            *s.lock().unwrap() = Some((fs, f, g));
        });
        sim.run(|_, en| en[0]);
        let (fs, f, g) = slot.lock().unwrap().take().unwrap();
        let p = sim.platform();
        let done = Arc::new(Mutex::new(&p, "done", Vec::<u64>::new()));
        for (name, inode, pos) in [("t1", f.clone(), 0u64), ("t2", f.clone(), BS), ("t3", g, 0)] {
            let (fs, done) = (fs.clone(), done.clone());
            sim.spawn(name, move || async move {
                let file = DaxfsFile::new(fs.clone(), inode);
                let m = file.iomap_begin(&p, pos, BS, IOMAP_WRITE).await.unwrap();
                let mut d = done.lock(&p).await;
                d.push(m.iomap.addr / BS);
                if d.len() == 3 {
                    let mut seen = d.clone();
                    let all = d.clone();
                    seen.sort();
                    seen.dedup();
                    let n = seen.len();
                    let seen = all;
                    bug_on(&p, n != 3, "daxfs-double-allocation", || {
                        format!("blocks {seen:?}")
                    })
                    .await;
                    let v = fs.verify_incore(&p).await.unwrap();
                    bug_on(&p, !v.is_empty(), "daxfs-incore", || format!("{v:?}")).await;
                    let r = Daxfs::<P>::fsck_media(&p, size).await;
                    bug_on(&p, !r.is_clean(), "daxfs-fsck", || r.to_string()).await;
                }
                drop(d);
            });
        }
    };
    let cfg = ExploreConfig {
        strategy: Strategy::Dfs {
            preemption_bound: Some(1),
        },
        ..ExploreConfig::default()
    };
    let rep = explore(&model, &cfg, &mut |_| {}).unwrap();
    eprintln!("dfs: {} runs ({} redundant)", rep.runs, rep.redundant_runs);
    assert!(
        rep.failure.is_none(),
        "{}",
        rep.failure.as_ref().unwrap().violation
    );
    assert!(rep.exhausted);
    assert!(rep.runs > 10, "runs: {}", rep.runs);
}

/// Run `f` as the only task; how the run ended.
fn run_end<F, Fut>(m: Machine, f: F) -> RunEnd
where
    F: FnOnce(P) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let mut sim = Sim::new(SimConfig::default());
    sim.set_machine(m);
    let p = sim.platform();
    sim.spawn("t0", move || f(p));
    sim.run(|_, en| en[0])
}

fn fatal_name(end: &RunEnd) -> Option<String> {
    match end {
        RunEnd::Violation(v) => Some(v.kind.name()),
        _ => None,
    }
}

#[test]
fn lockdep_reports_locks_taken_out_of_order() {
    let size = 4 * MIB;
    // The documented order is clean, and tracked: IOLOCK -> MMAPLOCK -> ILOCK -> allocator.
    let end = run_end(machine(size), move |p| async move {
        mkfs(&p, size, BS).await.unwrap();
        let fs = mount(&p, size).await.unwrap();
        let a = fs.create(&p, "/a").await.unwrap();
        let b = fs.create(&p, "/b").await.unwrap();
        let io = fs.iolock_excl(&p, &a).await;
        let mm = fs.mmaplock_excl(&p, &a).await;
        let i1 = fs.ilock(&p, &a).await;
        let i2 = fs.ilock(&p, &b).await;
        let al = fs.lock_alloc(&p).await;
        use sim_core::Platform;
        assert_eq!(fs.lockdep.held_by(p.current_task()).len(), 5);
        drop((al, i2, i1, mm, io));
        assert!(fs.lockdep.held_by(p.current_task()).is_empty());
    });
    assert_eq!(end, RunEnd::Done);
    // ILOCK, then IOLOCK of the same inode: reported before it is taken.
    let end = run_end(machine(size), move |p| async move {
        mkfs(&p, size, BS).await.unwrap();
        let fs = mount(&p, size).await.unwrap();
        let a = fs.create(&p, "/a").await.unwrap();
        let i = fs.ilock(&p, &a).await;
        let io = fs.iolock_excl(&p, &a).await;
        drop((io, i));
    });
    assert_eq!(
        fatal_name(&end).as_deref(),
        Some("assertion:lockdep-daxfs-lock-order")
    );
    // Two ILOCKs against inode-number order.
    let end = run_end(machine(size), move |p| async move {
        mkfs(&p, size, BS).await.unwrap();
        let fs = mount(&p, size).await.unwrap();
        let a = fs.create(&p, "/a").await.unwrap();
        let b = fs.create(&p, "/b").await.unwrap();
        let i2 = fs.ilock(&p, &b).await;
        let i1 = fs.ilock(&p, &a).await;
        drop((i1, i2));
    });
    let RunEnd::Violation(v) = &end else {
        panic!("{end:?}")
    };
    assert!(
        v.message
            .contains("Ilock (inode 1) while holding Ilock (inode 2)"),
        "{}",
        v.message
    );
    // The allocator while the log is held (what a transaction commit must never do).
    let end = run_end(machine(size), move |p| async move {
        mkfs(&p, size, BS).await.unwrap();
        let fs = mount(&p, size).await.unwrap();
        let l = fs.lock_log(&p).await;
        let a = fs.lock_alloc(&p).await;
        drop((a, l));
    });
    assert_eq!(
        fatal_name(&end).as_deref(),
        Some("assertion:lockdep-daxfs-lock-order")
    );
}

/// Two reflinks in opposite directions and a write fault race: the locks are always taken in
/// order (no deadlock, no lockdep report), and the result checks clean.
#[test]
fn opposite_reflinks_and_a_write_fault_never_deadlock() {
    let size = 4 * MIB;
    let model = move |sim: &mut Sim| {
        sim.set_machine(machine(size));
        let p = sim.platform();
        let slot = Arc::new(std::sync::Mutex::new(None));
        let s = slot.clone();
        sim.spawn("setup", move || async move {
            mkfs(&p, size, BS).await.unwrap();
            let fs = mount(&p, size).await.unwrap();
            let a = fs.create(&p, "/a").await.unwrap();
            let b = fs.create(&p, "/b").await.unwrap();
            fs.prealloc(&p, &a, 0, 2 * BS).await.unwrap();
            fs.prealloc(&p, &b, 0, 2 * BS).await.unwrap();
            fs.log_force(&p).await.unwrap();
            *s.lock().unwrap() = Some((fs, a, b));
        });
        sim.run(|_, en| en[0]);
        let (fs, a, b) = slot.lock().unwrap().take().unwrap();
        let p = sim.platform();
        let done = Arc::new(Mutex::new(&p, "done", 0u32));
        let racers: [(&str, u8); 3] = [("ab", 0), ("ba", 1), ("fault", 2)];
        for (name, what) in racers {
            let (fs, a, b, done) = (fs.clone(), a.clone(), b.clone(), done.clone());
            sim.spawn(name, move || async move {
                match what {
                    0 => fs.reflink(&p, &a, &b, 0, BS, BS).await.unwrap(),
                    1 => fs.reflink(&p, &b, &a, 0, BS, BS).await.unwrap(),
                    _ => {
                        // A write fault's pair (a copy on write when a reflink came first:
                        // iomap_end remaps the staging).
                        let f = DaxfsFile::new(fs.clone(), b.clone());
                        let m = f.iomap_begin(&p, BS, BS, IOMAP_WRITE).await.unwrap();
                        f.iomap_end(&p, BS, BS, BS, IOMAP_WRITE, &m.iomap)
                            .await
                            .unwrap();
                    }
                }
                let mut d = done.lock(&p).await;
                *d += 1;
                if *d == 3 {
                    let v = fs.verify_incore(&p).await.unwrap();
                    bug_on(&p, !v.is_empty(), "daxfs-incore", || format!("{v:?}")).await;
                    let r = Daxfs::<P>::fsck_media(&p, size).await;
                    bug_on(&p, !r.is_clean(), "daxfs-fsck", || r.to_string()).await;
                }
                drop(d);
            });
        }
    };
    let cfg = ExploreConfig {
        strategy: Strategy::Dfs {
            preemption_bound: Some(1),
        },
        ..ExploreConfig::default()
    };
    let rep = explore(&model, &cfg, &mut |_| {}).unwrap();
    eprintln!("dfs: {} runs ({} redundant)", rep.runs, rep.redundant_runs);
    assert!(
        rep.failure.is_none(),
        "{}",
        rep.failure.as_ref().unwrap().violation
    );
    assert!(rep.exhausted);
    assert!(rep.runs > 10, "runs: {}", rep.runs);
}

/// The DAX core faulting on daxfs: a write to a hole allocates a 2 MiB-aligned extent and is
/// mapped by a PMD; a 4 KiB-aligned small allocation is mapped by PTEs; the pfns are the
/// device blocks of the extents.
#[test]
fn dax_faults_on_daxfs_map_pmds_over_aligned_extents() {
    use sim_mm::dax::Dax;
    use sim_mm::dax::fault::{Access, dax_user_access};
    use sim_mm::mm::{MmapFlags, do_mmap};
    use sim_mm::signal::create_process;
    let size = 16 * MIB;
    let (out, sim) = run(machine(size), move |p| async move {
        use sim_core::Platform;
        mkfs(&p, size, BS).await.unwrap();
        let fs = mount(&p, size).await.unwrap();
        let f = fs.create(&p, "/f").await.unwrap();
        fs.set_size(&p, &f, 4 * MIB).await.unwrap();
        let dax = Dax::new(&p, fs.world.clone(), sim_mm::dax::BugSet::NONE);
        let (_, mm) = create_process(&p, &fs.world, "a", &[p.current_task()]).await;
        let flags = MmapFlags {
            shared: true,
            sync: false,
            write: true,
            nohuge: false,
        };
        let addr = do_mmap(&p, &mm, &f.mapping, 0, 4 * MIB, flags)
            .await
            .unwrap();
        let file = DaxfsFile::new(fs.clone(), f.clone());
        let w = dax_user_access(&dax, &p, &mm, addr + 2 * MIB + 8192, true, &file).await;
        let r = dax_user_access(&dax, &p, &mm, addr + 4096, false, &file).await;
        let ext = f.ilock.read(&p).await.disk.extents.clone();
        assert_eq!(fs.verify_incore(&p).await.unwrap(), Vec::<String>::new());
        fs.unmount(&p).await.unwrap();
        (w, r, ext, fs.geo)
    });
    drop(sim);
    let (w, r, ext, geo) = out;
    // The write faulted a whole PMD in: one 512-block extent at file block 512.
    let e = ext[&512];
    assert_eq!((e.len, geo.addr(e.dev) % PMD_SIZE), (512, 0));
    assert_eq!(
        w,
        Access::Mapped {
            pfn: 0x10_0000 + e.dev + 2,
            huge: true
        }
    );
    // The read of the hole below maps the (huge) zero page: no blocks allocated there.
    assert!(matches!(r, Access::Mapped { .. }));
    assert_eq!(ext.len(), 1, "{ext:?}");
}

#[test]
fn punch_hole_frees_whole_blocks_and_zeroes_partial_ones() {
    use sim_core::PmemPlatform;
    let size = 8 * MIB;
    let (out, sim) = run(machine(size), move |p| async move {
        mkfs(&p, size, BS).await.unwrap();
        let fs = mount(&p, size).await.unwrap();
        let f = fs.create(&p, "/f").await.unwrap();
        fs.prealloc(&p, &f, 0, 8 * BS).await.unwrap();
        let dev = f.ilock.read(&p).await.disk.extents[&0].dev;
        let base = fs.geo.addr(dev);
        // Fill the file's blocks with 0xab (durably).
        p.pmem_ntstore(base, &vec![0xab; 8 * BS as usize])
            .await
            .unwrap();
        p.sfence().await.unwrap();
        // Share block 6 with /g: punching it must keep /g's copy.
        let g = fs.create(&p, "/g").await.unwrap();
        fs.reflink(&p, &f, &g, 6 * BS, BS, 0).await.unwrap();
        let file = DaxfsFile::new(fs.clone(), f.clone());
        // Bytes 100 .. 3 blocks + 200: block 0 partly zeroed, 1 and 2 freed, 3 partly zeroed.
        file.punch_hole(&p, 100, 3 * BS + 100).await.unwrap();
        // All of block 6 (shared): only the reference goes.
        file.punch_hole(&p, 6 * BS, BS).await.unwrap();
        // Inside one block: zeroed in place.
        file.punch_hole(&p, 5 * BS + 10, 20).await.unwrap();
        assert_eq!(file.punch_hole(&p, 0, 0).await, Err(FsError::EINVAL));
        let ext: Vec<(u64, u64)> = f
            .ilock
            .read(&p)
            .await
            .disk
            .extents
            .iter()
            .map(|(&k, e)| (k, e.len))
            .collect();
        let mut bytes = vec![0u8; 8 * BS as usize];
        p.pmem_load(base, &mut bytes).await.unwrap();
        let al = fs.alloc.lock(&p).await;
        let owners: Vec<u32> = (dev..dev + 8).map(|d| al.owners(d)).collect();
        drop(al);
        assert_eq!(fs.verify_incore(&p).await.unwrap(), Vec::<String>::new());
        fs.unmount(&p).await.unwrap();
        (ext, bytes, owners)
    });
    let (ext, bytes, owners) = out;
    assert_eq!(ext, vec![(0, 1), (3, 3), (7, 1)]);
    assert_eq!(owners, vec![1, 0, 0, 1, 1, 1, 1, 1]);
    let b = BS as usize;
    assert!(bytes[..100].iter().all(|&x| x == 0xab));
    assert!(bytes[100..b].iter().all(|&x| x == 0));
    assert!(bytes[3 * b..3 * b + 200].iter().all(|&x| x == 0));
    assert!(bytes[3 * b + 200..4 * b].iter().all(|&x| x == 0xab));
    assert!(bytes[5 * b + 10..5 * b + 30].iter().all(|&x| x == 0));
    assert_eq!(bytes[5 * b + 30], 0xab);
    assert!(
        bytes[6 * b..7 * b].iter().all(|&x| x == 0xab),
        "/g's block untouched"
    );
    let r = fsck_pmem(&durable_pmem(&sim));
    assert!(r.is_clean(), "{r}");
}

/// MAP_SYNC on daxfs: a write fault that allocates sees `IOMAP_F_DIRTY`, so the DAX core syncs
/// (`dax_finish_sync_fault` -> `fsync_range` -> log force) before mapping; a crash right after
/// the fault keeps the allocation. Without MAP_SYNC the allocation is not yet durable.
#[test]
fn map_sync_write_faults_make_the_allocation_durable_before_mapping() {
    use sim_mm::dax::Dax;
    use sim_mm::dax::fault::{Access, dax_user_access};
    use sim_mm::mm::{MmapFlags, do_mmap};
    use sim_mm::signal::create_process;
    let size = 8 * MIB;
    for sync in [true, false] {
        let (acc, sim) = run(machine(size), move |p| async move {
            use sim_core::Platform;
            mkfs(&p, size, BS).await.unwrap();
            let fs = mount(&p, size).await.unwrap();
            let f = fs.create(&p, "/f").await.unwrap();
            fs.set_size(&p, &f, 64 * BS).await.unwrap();
            fs.log_force(&p).await.unwrap();
            let dax = Dax::new(&p, fs.world.clone(), sim_mm::dax::BugSet::NONE);
            let (_, mm) = create_process(&p, &fs.world, "a", &[p.current_task()]).await;
            let flags = MmapFlags {
                shared: true,
                sync,
                write: true,
                nohuge: true,
            };
            let addr = do_mmap(&p, &mm, &f.mapping, 0, 64 * BS, flags)
                .await
                .unwrap();
            let file = DaxfsFile::new(fs.clone(), f.clone());
            let a = dax_user_access(&dax, &p, &mm, addr + 3 * BS, true, &file).await;
            // The power fails here: no unmount.
            a
        });
        assert!(matches!(acc, Access::Mapped { huge: false, .. }), "{acc:?}");
        let (rec, report) = recover_pmem(&crash_now(sim).crash_point().persisted().clone());
        assert!(report.is_clean(), "{report}");
        let inodes = inodes_of(&rec.geo, &rec.meta).unwrap();
        let f = inodes.values().find(|d| d.name == "/f").unwrap();
        assert_eq!(
            f.extents.contains_key(&3),
            sync,
            "sync {sync}: {:?}",
            f.extents
        );
    }
}

#[test]
fn an_inode_whose_extent_list_is_full_gets_enospc() {
    let size = 8 * MIB;
    let (r, sim) = run(machine(size), move |p| async move {
        mkfs(&p, size, BS).await.unwrap();
        let fs = mount(&p, size).await.unwrap();
        let f = fs.create(&p, "/f").await.unwrap();
        let file = DaxfsFile::new(fs.clone(), f.clone());
        let mut n = 0;
        // Every other block: extents that never merge.
        let err = loop {
            match file.iomap_begin_fs(&p, 2 * n * BS, BS, IOMAP_WRITE).await {
                Ok(_) => n += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(fs.verify_incore(&p).await.unwrap(), Vec::<String>::new());
        fs.unmount(&p).await.unwrap();
        (n, err)
    });
    assert_eq!(r, (sim_fs::layout::MAX_EXTENTS as u64, FsError::ENOSPC));
    let report = fsck_pmem(&durable_pmem(&sim));
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.used_blocks, sim_fs::layout::MAX_EXTENTS as u64);
}

/// Two write faults on the same hole: one allocates (NEW), the other finds the block.
#[test]
fn racing_write_faults_on_one_hole_allocate_once() {
    let size = 4 * MIB;
    let model = move |sim: &mut Sim| {
        sim.set_machine(machine(size));
        let p = sim.platform();
        let slot = Arc::new(std::sync::Mutex::new(None));
        let s = slot.clone();
        sim.spawn("setup", move || async move {
            mkfs(&p, size, BS).await.unwrap();
            let fs = mount(&p, size).await.unwrap();
            let f = fs.create(&p, "/f").await.unwrap();
            *s.lock().unwrap() = Some(DaxfsFile::new(fs, f));
        });
        sim.run(|_, en| en[0]);
        let file = slot.lock().unwrap().take().unwrap();
        let p = sim.platform();
        let seen = Arc::new(Mutex::new(&p, "seen", Vec::<(u64, bool)>::new()));
        for name in ["t1", "t2"] {
            let (file, seen) = (file.clone(), seen.clone());
            sim.spawn(name, move || async move {
                let m = file.iomap_begin(&p, 0, BS, IOMAP_WRITE).await.unwrap();
                let mut s = seen.lock(&p).await;
                s.push((m.iomap.addr, m.iomap.has(IOMAP_F_NEW)));
                if s.len() == 2 {
                    let (a, b) = (s[0], s[1]);
                    bug_on(&p, a.0 != b.0 || a.1 == b.1, "daxfs-double-alloc", || {
                        format!("{a:?} {b:?}")
                    })
                    .await;
                }
                drop(s);
            });
        }
    };
    let cfg = ExploreConfig {
        strategy: Strategy::Dfs {
            preemption_bound: None,
        },
        ..ExploreConfig::default()
    };
    let rep = explore(&model, &cfg, &mut |_| {}).unwrap();
    eprintln!("dfs: {} runs ({} redundant)", rep.runs, rep.redundant_runs);
    assert!(
        rep.failure.is_none(),
        "{}",
        rep.failure.as_ref().unwrap().violation
    );
    assert!(rep.exhausted && rep.runs >= 2, "runs {}", rep.runs);
}

/// unlink keeps the blocks of an inode still in use (an orphan, durable); evict frees them; a
/// crash in between frees them at the next mount.
#[test]
fn unlinked_inodes_are_freed_by_evict_or_by_the_next_mount() {
    let size = 8 * MIB;
    let (used, sim) = run(machine(size), move |p| async move {
        mkfs(&p, size, BS).await.unwrap();
        let fs = mount(&p, size).await.unwrap();
        let a = fs.create(&p, "/a").await.unwrap();
        fs.prealloc(&p, &a, 0, 4 * BS).await.unwrap();
        let b = fs.create(&p, "/b").await.unwrap();
        fs.prealloc(&p, &b, 0, 2 * BS).await.unwrap();
        assert_eq!(fs.unlink(&p, "/nope").await.err(), Some(FsError::ENOENT));
        // /a: unlinked and evicted; /b: unlinked while "still mapped", then the power fails.
        let a2 = fs.unlink(&p, "/a").await.unwrap();
        assert!(fs.lookup(&p, "/a").await.is_none());
        fs.evict(&p, &a2).await.unwrap();
        fs.unlink(&p, "/b").await.unwrap();
        // The name is free again while the orphan still holds its blocks.
        let b2 = fs.create(&p, "/b").await.unwrap();
        fs.prealloc(&p, &b2, 0, BS).await.unwrap();
        fs.log_force(&p).await.unwrap();
        fs.alloc.lock(&p).await.free
    });
    let pm = durable_pmem(&sim);
    let r = fsck_pmem(&pm);
    assert!(r.is_clean(), "{r}");
    assert_eq!(
        (r.inodes, r.used_blocks),
        (2, 3),
        "the orphan keeps its 2 blocks"
    );
    let m = crash_now(sim);
    let ((info, free2), sim) = run(m, move |p| async move {
        let fs = mount(&p, size).await.unwrap();
        assert!(fs.lookup(&p, "/b").await.is_some());
        let free = fs.alloc.lock(&p).await.free;
        assert_eq!(fs.verify_incore(&p).await.unwrap(), Vec::<String>::new());
        fs.unmount(&p).await.unwrap();
        (fs.mount_info.clone(), free)
    });
    assert_eq!(info.orphans.len(), 1);
    assert_eq!(free2, used + 2);
    let r = fsck_pmem(&durable_pmem(&sim));
    drop(sim);
    assert!(r.is_clean(), "{r}");
    assert_eq!((r.inodes, r.used_blocks), (1, 1));
    // Evicting an inode that still has a name is a BUG.
    let end = run_end(machine(size), move |p| async move {
        mkfs(&p, size, BS).await.unwrap();
        let fs = mount(&p, size).await.unwrap();
        let a = fs.create(&p, "/a").await.unwrap();
        let _ = fs.evict(&p, &a).await;
    });
    assert_eq!(
        fatal_name(&end).as_deref(),
        Some("assertion:daxfs-evict-linked-inode")
    );
}

/// Poisoned metadata: mount refuses, and fsck reports the structure and block.
#[test]
fn poisoned_metadata_is_reported_with_its_structure_and_block() {
    let size = 4 * MIB;
    let (geo, sim) = run(machine(size), move |p| async move {
        mkfs(&p, size, BS).await.unwrap();
        let fs = mount(&p, size).await.unwrap();
        assert_eq!(fs.verify_incore(&p).await.unwrap(), Vec::<String>::new());
        fs.unmount(&p).await.unwrap();
        fs.geo
    });
    let mut m = crash_now(sim);
    let at = geo.addr(geo.itable_start) + 3 * 1024;
    m.inject_poison(at, 64).unwrap();
    let ((err, report), _sim) = run(m, move |p| async move {
        let err = mount(&p, size).await.err().unwrap();
        let report = Daxfs::<P>::fsck_media(&p, size).await;
        (err, report)
    });
    let block = at / BS;
    assert!(
        err.starts_with(&format!("inode table (block {block}): unreadable")),
        "{err}"
    );
    assert_eq!(report.problems.len(), 1, "{report}");
    let pr = &report.problems[0];
    assert_eq!((pr.structure, pr.block), ("inode table", block));
}

thread_local! {
    /// The iomap answers of the current run of the ILOCK models, by task (their final state).
    static ANSWERS: std::cell::RefCell<std::collections::BTreeMap<String, String>> =
        const { std::cell::RefCell::new(std::collections::BTreeMap::new()) };
}

/// Faults' `iomap_begin` on one file racing: `tasks` (name, file offset, flags) after a setup
/// that allocates and logs block 0. Each task records its answer in `ANSWERS`.
fn ilock_model(tasks: &'static [(&'static str, u64, u32)]) -> impl Fn(&mut Sim) {
    let size = 4 * MIB;
    move |sim: &mut Sim| {
        ANSWERS.with(|a| a.borrow_mut().clear());
        sim.set_machine(machine(size));
        let p = sim.platform();
        let slot = Arc::new(std::sync::Mutex::new(None));
        let s = slot.clone();
        sim.spawn("setup", move || async move {
            mkfs(&p, size, BS).await.unwrap();
            let fs = mount(&p, size).await.unwrap();
            let f = fs.create(&p, "/f").await.unwrap();
            fs.set_size(&p, &f, 64 * BS).await.unwrap();
            let file = DaxfsFile::new(fs.clone(), f.clone());
            file.iomap_begin_fs(&p, 0, BS, IOMAP_WRITE).await.unwrap();
            fs.log_force(&p).await.unwrap();
            *s.lock().unwrap() = Some((fs, f));
        });
        sim.run(|_, en| en[0]);
        let (fs, f) = slot.lock().unwrap().take().unwrap();
        for &(name, pos, flags) in tasks {
            let (fs, f) = (fs.clone(), f.clone());
            sim.spawn(name, move || async move {
                let file = DaxfsFile::new(fs, f);
                let m = file.iomap_begin(&p, pos, BS, flags).await;
                let a = format!("{m:?}");
                ANSWERS.with(|x| x.borrow_mut().insert(name.to_string(), a));
            });
        }
    }
}

fn ilock_final(_: &Sim, end: &RunEnd) -> (String, Vec<(String, String)>) {
    let answers = ANSWERS.with(|a| a.borrow().clone().into_iter().collect());
    (format!("{end:?}"), answers)
}

/// `xfs_ilock_for_iomap`: a read fault's `iomap_begin` takes the ILOCK shared, so two of
/// them commute (DPOR needs one complete run where plain DFS needs several), and with a write
/// that allocates (ILOCK exclusive) every reduction still reaches exactly the answers plain
/// DFS reaches (`compare_reductions`).
#[test]
fn read_iomaps_share_the_ilock_and_every_reduction_reaches_the_same_answers() {
    use sim_core::sim::reduction::compare_reductions;
    static READS: [(&str, u64, u32); 2] = [("r1", 0, 0), ("r2", 5 * BS, 0)];
    let c = compare_reductions(&ilock_model(&READS), &mut ilock_final).unwrap();
    eprintln!("two reads: {}", c.runs());
    assert!(c.plain.runs > 1, "{}", c.runs());
    // Shared holders commute: one run stands for every order.
    assert_eq!(c.dpor.runs, 1, "{}", c.runs());
    assert_eq!(c.plain.outcomes.len(), 1);
    static MIXED: [(&str, u64, u32); 3] =
        [("r1", 0, 0), ("w", 5 * BS, IOMAP_WRITE), ("r2", 5 * BS, 0)];
    let c = compare_reductions(&ilock_model(&MIXED), &mut ilock_final).unwrap();
    eprintln!("two reads and an allocating write: {}", c.runs());
    // r2 sees the hole or the new blocks, depending on the order with the write.
    assert_eq!(c.plain.outcomes.len(), 2, "{:?}", c.plain.outcomes);
    assert!(c.dpor.runs < c.plain.runs, "{}", c.runs());
}

/// A read's `iomap_begin` under the shared ILOCK answers what the exclusive path answers, at
/// every block of a file with a hole, written, unwritten and reflinked blocks.
#[test]
fn the_shared_read_answer_is_the_exclusive_one() {
    let size = 8 * MIB;
    let (diffs, _) = run(machine(size), move |p| async move {
        mkfs(&p, size, BS).await.unwrap();
        let fs = mount(&p, size).await.unwrap();
        let f = fs.create(&p, "/f").await.unwrap();
        fs.set_size(&p, &f, 4 * MIB).await.unwrap();
        let file = DaxfsFile::new(fs.clone(), f.clone());
        file.iomap_begin(&p, 2 * BS, 2 * BS, IOMAP_WRITE)
            .await
            .unwrap();
        fs.fallocate(&p, &f, 8 * BS, 4 * BS, true).await.unwrap();
        let g = fs.create(&p, "/g").await.unwrap();
        fs.reflink(&p, &f, &g, 2 * BS, 2 * BS, 0).await.unwrap();
        // A copy on write of /g's block 0 in flight (staged in its CoW fork).
        let gf = DaxfsFile::new(fs.clone(), g.clone());
        gf.iomap_begin(&p, 0, BS, IOMAP_WRITE).await.unwrap();
        let mut diffs = Vec::new();
        let mut answers = 0;
        for (name, file) in [("/f", &file), ("/g", &gf)] {
            for b in 0..16 {
                for len in [1, BS, 3 * BS] {
                    let shared = file.iomap_begin(&p, b * BS, len, 0).await;
                    let excl = file.iomap_begin_fs(&p, b * BS, len, 0).await;
                    answers += 1;
                    if shared.as_ref().ok() != excl.as_ref().ok() {
                        diffs.push(format!(
                            "{name} block {b} len {len}: {shared:?} vs {excl:?}"
                        ));
                    }
                }
            }
        }
        assert_eq!(answers, 96);
        diffs
    });
    assert!(diffs.is_empty(), "{diffs:#?}");
}

/// `load_meta` reuses the buffers `recycle_meta` gives back, zeroing only what may be stale:
/// bytes a load does not load read as zeros however the buffer was used before (a journal
/// body loaded last time, a replayed write into a region's unused tail).
#[test]
fn load_meta_zeroes_what_it_does_not_load_in_a_reused_buffer() {
    use sim_fs::fs::{load_meta, recycle_meta};
    use sim_fs::journal::{
        JH_MAGIC, JHEADER, commit_offset, empty_header, encode_transaction, store_clwb,
    };
    use std::collections::BTreeMap;
    let size = 8 * MIB;
    run(machine(size), move |p| async move {
        mkfs(&p, size, BS).await.unwrap();
        let geo = Geometry::new(size, BS).unwrap();
        let j = geo.journal_addr();
        let body = (j + 64) as usize..(j + geo.journal_bytes()) as usize;
        // The unused tail of the bitmap's blocks: never loaded.
        let tail = (geo.addr(geo.bitmap_start) + geo.bitmap_used_bytes()) as usize;
        assert!(
            tail < geo.addr(geo.refcount_start) as usize,
            "the bitmap has a tail"
        );
        // A committed transaction that writes into the bitmap's tail, over a journal full of
        // garbage.
        let garbage = vec![0xab; geo.journal_bytes() as usize];
        store_clwb(&p, j, &garbage).await.unwrap();
        let units = BTreeMap::from([(tail as u64, vec![0xcd; 64])]);
        let (head, commit) = encode_transaction(1, &units);
        store_clwb(&p, j, &head).await.unwrap();
        let c = j + commit_offset(head.len() as u64 - JHEADER);
        store_clwb(&p, c, &commit).await.unwrap();
        // Given back as loaded, then after recovery (which writes into it).
        for recover in [false, true] {
            store_clwb(&p, j, &head).await.unwrap();
            let m = load_meta(&p, &geo).await.unwrap();
            assert_eq!(sim_fs::layout::get_u32(&m, j as usize), JH_MAGIC);
            let loaded = m[body.clone()].contains(&0xab);
            assert!(loaded, "the body was loaded");
            if recover {
                let rec = recover_meta(geo, true, m).unwrap();
                assert_eq!(rec.meta[tail], 0xcd, "the replay wrote into the tail");
                recycle_meta(rec.meta);
            } else {
                recycle_meta(m);
            }
            // The journal empty: its body is not loaded, and nothing is in the bitmap's tail.
            store_clwb(&p, j, &empty_header(1)).await.unwrap();
            for _ in 0..2 {
                let m = load_meta(&p, &geo).await.unwrap();
                let body_zero = m[body.clone()].iter().all(|&b| b == 0);
                assert!(body_zero, "stale journal body");
                let tail_zero = m[tail..tail + 64].iter().all(|&b| b == 0);
                assert!(tail_zero, "stale replayed write");
                recycle_meta(m);
            }
        }
    });
}
