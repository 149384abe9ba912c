//! The oracles of one crash image, in process and without a simulation: journal recovery as
//! mount does it ([`crate::fs::recover_meta`]), fsck of the recovered metadata, the durability
//! promises read back through the recovered extent maps, and each file's size and existence
//! against the states its operations left (all-or-nothing). The `after-crash` statements, which
//! need the whole stack, run afterwards in a simulation (`after.rs`).

use super::record::{Promise, PromiseKind, RunLog, Snapshot};
use crate::fs::recover_meta;
use crate::fsck::fsck_image;
use crate::layout::{DiskInode, Geometry, INODE_F_ORPHAN, Superblock};
use serde::Serialize;
use sim_core::machine::{CrashImage, CrashPoint};
use std::collections::BTreeMap;

/// Why an image fails.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ImageViolation {
    /// `mount`, `fsck`, `durability`, `atomicity`, `after-crash`.
    pub kind: String,
    pub message: String,
}

fn violation(kind: &str, message: String) -> ImageViolation {
    ImageViolation {
        kind: kind.into(),
        message,
    }
}

/// The file system an image recovers to.
pub struct Recovered {
    pub geo: Geometry,
    /// Recovered metadata bytes `0 .. geo.meta_bytes()`.
    pub meta: Vec<u8>,
    /// Files by name (orphans, which mount frees, left out).
    pub files: BTreeMap<String, DiskInode>,
}

/// Mount's recovery of `image` (no media written): superblock, journal replay, inode table.
pub fn recover(
    point: &CrashPoint,
    image: &CrashImage,
    pmem: u64,
) -> Result<Recovered, ImageViolation> {
    let mut sbb = [0u8; 128];
    point
        .read(image, 0, &mut sbb)
        .map_err(|e| violation("mount", format!("superblock (block 0): {e}")))?;
    let sb = Superblock::decode(&sbb, pmem)
        .map_err(|e| violation("mount", format!("superblock (block 0): {e}")))?;
    let geo = sb.geo;
    let mut meta = vec![0u8; geo.meta_bytes() as usize];
    point
        .read(image, 0, &mut meta)
        .map_err(|e| violation("mount", format!("metadata unreadable: {e}")))?;
    let rec = recover_meta(geo, sb.clean, meta).map_err(|e| violation("mount", e))?;
    let files = crate::fs::inodes_of(&geo, &rec.meta)
        .map_err(|e| violation("mount", e))?
        .into_values()
        .filter(|d| d.flags & INODE_F_ORPHAN == 0)
        .map(|d| (d.name.clone(), d))
        .collect();
    Ok(Recovered {
        geo,
        meta: rec.meta,
        files,
    })
}

/// fsck of the recovered file system (metadata from recovery, the rest from the image).
pub fn fsck(
    point: &CrashPoint,
    image: &CrashImage,
    pmem: u64,
    r: &Recovered,
) -> Result<(), ImageViolation> {
    let mut read = |addr: u64, buf: &mut [u8]| -> Result<(), String> {
        let end = addr as usize + buf.len();
        if end <= r.meta.len() {
            buf.copy_from_slice(&r.meta[addr as usize..end]);
            Ok(())
        } else {
            point.read(image, addr, buf).map_err(|e| e.to_string())
        }
    };
    let rep = fsck_image(&mut read, pmem);
    if rep.is_clean() {
        Ok(())
    } else {
        Err(violation(
            "fsck",
            format!("fsck after recovery: {}", rep.to_string().trim_end()),
        ))
    }
}

/// Bytes `lo..hi` of file `d` in the image (holes and unwritten extents read as zeros).
pub fn read_file(
    point: &CrashPoint,
    image: &CrashImage,
    geo: &Geometry,
    d: &DiskInode,
    lo: u64,
    hi: u64,
) -> Vec<u8> {
    let mut out = vec![0u8; (hi - lo) as usize];
    let bs = geo.blocksize;
    for (&fb, e) in d.extents.range(..hi.div_ceil(bs)) {
        if e.unwritten {
            continue;
        }
        let (s, t) = ((fb * bs).max(lo), ((fb + e.len) * bs).min(hi));
        if s >= t {
            continue;
        }
        let dev = geo.addr(e.dev) + (s - fb * bs);
        // A read error (out of range) leaves zeros: fsck has named the bad extent already.
        let _ = point.read(image, dev, &mut out[(s - lo) as usize..(t - lo) as usize]);
    }
    out
}

/// Whether every block of `lo..hi` of `d` is allocated (written or unwritten).
fn allocated(geo: &Geometry, d: &DiskInode, lo: u64, hi: u64) -> Option<u64> {
    let bs = geo.blocksize;
    (lo / bs..hi.div_ceil(bs)).find(|&b| {
        d.extents
            .range(..=b)
            .next_back()
            .is_none_or(|(&fb, e)| b >= fb + e.len)
    })
}

/// The durability promises made before the crash point, read back.
pub fn promises(
    point: &CrashPoint,
    image: &CrashImage,
    r: &Recovered,
    log: &RunLog,
    snap: &Snapshot,
) -> Result<(), ImageViolation> {
    for p in log.promises.iter().filter(|p| p.made <= snap.seq) {
        check_promise(point, image, r, log, snap, p)?;
    }
    Ok(())
}

fn promise_intro(p: &Promise) -> String {
    format!(
        "{} ({} line {}) for {} bytes {:#x}..{:#x}",
        p.kind.describe(),
        p.thread,
        p.line,
        p.path,
        p.lo,
        p.hi
    )
}

fn check_promise(
    point: &CrashPoint,
    image: &CrashImage,
    r: &Recovered,
    log: &RunLog,
    snap: &Snapshot,
    p: &Promise,
) -> Result<(), ImageViolation> {
    // fsync's timestamps: the inode's ctime only grows (`fs::current_time`), so after the
    // crash it is at least the one fsync made durable, unless the name now belongs to another
    // inode (unlinked since, or while, the fsync ran).
    if let Some(t) = p.ctime
        && !log.unlinked_since(p, snap)
        && let Some(d) = r.files.get(&p.path)
        && d.ctime < t
    {
        return Err(violation(
            "durability",
            format!(
                "{}, but after the crash the inode's ctime is {} ns, older than the {t} ns \
                 it had when fsync forced the log (mtime {} ns)",
                promise_intro(p),
                d.ctime,
                d.mtime
            ),
        ));
    }
    let firm = log.firm_ranges(p, snap);
    let whole_file_pinned = p.size.is_some() && !log.ambiguous(p, snap, u64::MAX - 1);
    if firm.is_empty() && !whole_file_pinned {
        return Ok(());
    }
    let Some(d) = r.files.get(&p.path) else {
        return Err(violation(
            "durability",
            format!(
                "{}, but after the crash the file does not exist",
                promise_intro(p)
            ),
        ));
    };
    if p.kind == PromiseKind::SyncFault {
        for &(lo, hi) in &firm {
            if let Some(b) = allocated(&r.geo, d, lo, hi) {
                return Err(violation(
                    "durability",
                    format!(
                        "{}, but after the crash file block {b} is a hole: the block \
                         allocation the fault mapped was not durable",
                        promise_intro(p)
                    ),
                ));
            }
        }
        return Ok(());
    }
    let Some(content) = &p.content else {
        return Ok(());
    };
    for &(lo, hi) in &firm {
        if hi > d.size {
            return Err(violation(
                "durability",
                format!(
                    "{}, but after the crash the file is only {} bytes long (bytes up to \
                     {hi:#x} were promised)",
                    promise_intro(p),
                    d.size
                ),
            ));
        }
        let got = read_file(point, image, &r.geo, d, lo, hi);
        let want = &content[(lo - p.lo) as usize..(hi - p.lo) as usize];
        if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
            let differ = got.iter().zip(want).filter(|(a, b)| a != b).count();
            return Err(violation(
                "durability",
                format!(
                    "{}, but after the crash byte {:#x} reads {:#04x} instead of {:#04x} \
                     ({differ} of {} bytes differ there)",
                    promise_intro(p),
                    lo + i as u64,
                    got[i],
                    want[i],
                    hi - lo
                ),
            ));
        }
    }
    Ok(())
}

/// Each followed file's existence and size is one its operations left: an operation in
/// flight is all or nothing, and nothing before the last fsync of the file comes back.
pub fn atomicity(r: &Recovered, log: &RunLog, snap: &Snapshot) -> Result<(), ImageViolation> {
    let mut paths: Vec<&str> = log.history.iter().map(|f| f.path.as_str()).collect();
    paths.sort_unstable();
    paths.dedup();
    for path in paths {
        let Some(allowed) = log.allowed_states(path, snap) else {
            continue;
        };
        let got = r.files.get(path).map(|d| d.size);
        let ok = allowed.iter().any(|f| match got {
            None => !f.exists,
            Some(size) => f.exists && f.size == Some(size),
        });
        if !ok {
            let states: Vec<String> = allowed
                .iter()
                .map(|f| {
                    let what = if f.exists {
                        format!("size {}", f.size.unwrap_or(0))
                    } else {
                        "absent".to_string()
                    };
                    if f.line == 0 {
                        format!("{what} (before the run)")
                    } else {
                        format!("{what} (after line {})", f.line)
                    }
                })
                .collect();
            let found = match got {
                None => "absent".to_string(),
                Some(s) => format!("size {s}"),
            };
            return Err(violation(
                "atomicity",
                format!(
                    "{path} is {found} after the crash, a state no operation left: allowed \
                     {}",
                    states.join(", ")
                ),
            ));
        }
    }
    Ok(())
}
