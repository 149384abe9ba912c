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
use sim_core::machine::{CrashImage, CrashPoint, Line};
use std::collections::BTreeMap;

/// A cache line, in bytes.
const LINE: u64 = sim_core::machine::LINE as u64;

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
    for (s, t, dev) in written_pieces(geo, d, lo, hi) {
        // A read error (out of range) leaves zeros: fsck has named the bad extent already.
        let _ = point.read(image, dev, &mut out[(s - lo) as usize..(t - lo) as usize]);
    }
    out
}

/// The pieces of bytes `lo..hi` of file `d` that written extents hold: (file start, file end,
/// device address of the start). The rest of the range reads as zeros.
fn written_pieces<'a>(
    geo: &'a Geometry,
    d: &'a DiskInode,
    lo: u64,
    hi: u64,
) -> impl Iterator<Item = (u64, u64, u64)> + 'a {
    let bs = geo.blocksize;
    d.extents
        .range(..hi.div_ceil(bs))
        .filter(|(_, e)| !e.unwritten)
        .filter_map(move |(&fb, e)| {
            let (s, t) = ((fb * bs).max(lo), ((fb + e.len) * bs).min(hi));
            (s < t).then(|| (s, t, geo.addr(e.dev) + (s - fb * bs)))
        })
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

/// Where the device bytes of one promised file range are: `len` bytes at device address
/// `dev` hold bytes `want..want + len` of the promise's content.
#[derive(Clone, Debug)]
struct Segment {
    promise: usize,
    dev: u64,
    len: u64,
    want: usize,
    /// Device lines (addresses) where the persisted image differs from the promise here.
    bad_lines: Vec<u64>,
}

/// The durability oracle of one crash point and one recovered metadata state, prepared once
/// and then applied to each image of that state by looking only at the image's delta lines
/// that fall in promised bytes ([`PromisePlan::clean`]). A fast answer is only ever "clean":
/// anything else runs the full check ([`promises`]), which gives the message.
#[derive(Clone, Debug, Default)]
pub struct PromisePlan {
    /// Some promise fails whatever the data lines hold (a file missing or too short, a
    /// hole where non-zero bytes were promised, a MAP_SYNC allocation lost), or a promised
    /// range maps outside the device: the full check decides.
    slow: bool,
    segments: Vec<Segment>,
}

impl PromisePlan {
    /// The plan of the promises made before `snap` on the recovered state `r`.
    pub fn new(point: &CrashPoint, r: &Recovered, log: &RunLog, snap: &Snapshot) -> PromisePlan {
        let mut plan = PromisePlan::default();
        let size = point.persisted().size();
        for (pi, p) in log.promises.iter().enumerate() {
            if p.made > snap.seq {
                continue;
            }
            let firm = log.firm_ranges(p, snap);
            let whole_file_pinned = p.size.is_some() && !log.ambiguous(p, snap, u64::MAX - 1);
            if firm.is_empty() && !whole_file_pinned {
                continue;
            }
            let Some(d) = r.files.get(&p.path) else {
                plan.slow = true;
                return plan;
            };
            if p.kind == PromiseKind::SyncFault {
                if firm
                    .iter()
                    .any(|&(lo, hi)| allocated(&r.geo, d, lo, hi).is_some())
                {
                    plan.slow = true;
                    return plan;
                }
                continue;
            }
            let Some(content) = &p.content else {
                continue;
            };
            for &(lo, hi) in &firm {
                if hi > d.size {
                    plan.slow = true;
                    return plan;
                }
                // The pieces `read_file` copies from the device; the rest reads as zeros.
                let mut covered: Vec<(u64, u64)> = Vec::new();
                for (s, t, dev) in written_pieces(&r.geo, d, lo, hi) {
                    if dev.checked_add(t - s).is_none_or(|end| end > size) {
                        plan.slow = true;
                        return plan;
                    }
                    let want = (s - p.lo) as usize;
                    let mut got = vec![0u8; (t - s) as usize];
                    let _ = point.persisted().read(dev, &mut got);
                    // Compared a device line at a time (the piece's first and last lines
                    // may be partial).
                    let mut bad_lines: Vec<u64> = Vec::new();
                    let mut at = 0usize;
                    while at < got.len() {
                        let line = (dev + at as u64) & !(LINE - 1);
                        let next = ((line + LINE - dev) as usize).min(got.len());
                        if got[at..next] != content[want + at..want + next] {
                            bad_lines.push(line);
                        }
                        at = next;
                    }
                    plan.segments.push(Segment {
                        promise: pi,
                        dev,
                        len: t - s,
                        want,
                        bad_lines,
                    });
                    covered.push((s, t));
                }
                // Bytes no written extent covers read as zeros in every image.
                covered.sort_unstable();
                let mut at = lo;
                let mut zeros_ok = true;
                for (s, t) in covered.into_iter().chain([(hi, hi)]) {
                    if s > at {
                        let w = &content[(at - p.lo) as usize..(s.min(hi) - p.lo) as usize];
                        zeros_ok &= w.iter().all(|&b| b == 0);
                    }
                    at = at.max(t);
                }
                if !zeros_ok {
                    plan.slow = true;
                    return plan;
                }
            }
        }
        plan
    }

    /// Whether every promise reads back in `image` (`false`: not known to; run [`promises`]).
    pub fn clean(&self, image: &CrashImage, log: &RunLog) -> bool {
        if self.slow {
            return false;
        }
        let has_line = |a: u64| image.delta.binary_search_by_key(&a, |(l, _)| *l).is_ok();
        self.segments
            .iter()
            .all(|s| s.bad_lines.iter().all(|&l| has_line(l)))
            && image.delta.iter().all(|(a, l)| self.line_ok(*a, l, log))
    }

    /// Whether the plan's verdict is a conjunction over lines: no promise fails whatever the
    /// data lines hold, and the persisted image holds every promised byte. Then an image is
    /// clean exactly when each line of its delta is ([`PromisePlan::line_ok`]), which is what
    /// [`PromisePlan::clean`] computes.
    pub fn composable(&self) -> bool {
        !self.slow && self.segments.iter().all(|s| s.bad_lines.is_empty())
    }

    /// Whether line `addr` holding `line` keeps every promised byte it holds.
    pub fn line_ok(&self, addr: u64, line: &Line, log: &RunLog) -> bool {
        self.segments.iter().all(|s| {
            let end = s.dev + s.len;
            if addr >= end || addr + LINE <= s.dev {
                return true;
            }
            let Some(content) = &log.promises[s.promise].content else {
                return false;
            };
            let (lo, hi) = (s.dev.max(addr), end.min(addr + LINE));
            let want = s.want + (lo - s.dev) as usize;
            line[(lo - addr) as usize..(hi - addr) as usize]
                == content[want..want + (hi - lo) as usize]
        })
    }

    /// What [`PromisePlan::line_ok`] depends on: plans with equal signatures judge every
    /// line alike.
    pub fn signature(&self) -> Vec<(usize, u64, u64, usize)> {
        self.segments
            .iter()
            .map(|s| (s.promise, s.dev, s.len, s.want))
            .collect()
    }
}

/// The durability oracle with a plan: the plan's fast answer when it has one, else the full
/// check (the same verdict and message as [`promises`] alone).
pub fn promises_planned(
    plan: &PromisePlan,
    point: &CrashPoint,
    image: &CrashImage,
    r: &Recovered,
    log: &RunLog,
    snap: &Snapshot,
) -> Result<(), ImageViolation> {
    if plan.clean(image, log) {
        return Ok(());
    }
    promises(point, image, r, log, snap)
}
