//! The trace runner's file statements (a child module of `runner`, so it reaches `Ctx`):
//! write, read, truncate, fallocate, fsync, fdatasync, unlink, msync and madvise, on daxfs's
//! file operations (`crate::file`) and the DAX core; and the inode references the runner's
//! mmap and munmap take and drop.
//!
//! **The oracle.** Every change a file operation makes to a file's bytes is applied to the
//! runner's copy of the file (`User::files`) at the step that made it ([`Change`]), so a load
//! or read racing the operation is compared with what the file held at that moment. A read is
//! checked piece by piece right after each piece is loaded, and a byte may hold what the file
//! holds then or held at any moment since the read began (`User::begin_read` keeps each
//! content the file had while the read runs): read(2) maps a range (`iomap_begin`) before
//! it copies, and nothing serialises it against a page fault (which takes no IOLOCK), so a
//! store through a mapping in between may or may not show. After a reflink it does not: the
//! fault's copy on write moves the page to a new block while the read copies the old one.
//!
//! **Statement semantics** (where write(2)-level calls differ from a statement):
//! - `write PATH OFF LEN PATTERN` writes all `LEN` bytes: a short write (the file system filled
//!   up after some bytes) is continued, as a `write_all` loop does, so the statement fails with
//!   the errno of the write that could not go on (`err(ENOSPC)`), having written what fit.
//! - `read` returns the bytes up to the end of file; the expectation compares them padded with
//!   zero bytes to `LEN` (the format's rule).
//! - `madvise M pageout [OFF LEN]` evicts the page-cache pages the range maps
//!   (`madvise_pageout`): none on today's DAX core; the hole pages of bug mode `shadow-entries`.
//! - `msync M [OFF LEN]`: `OFF` must be page-aligned (EINVAL), the range must lie inside the
//!   mapping (ENOMEM, as for an unmapped range); a shared mapping's file range is synced as
//!   msync(MS_SYNC) does (`vfs_fsync_range(.., datasync = 1)`), a private one has nothing to
//!   write back.
//! - `unlink` removes the name (the orphan flag is logged); the blocks go when the last open
//!   reference, mapping and pin of the inode is gone (`Daxfs::evict_if_unused`, called after
//!   unlink, munmap and every statement that opened the file). Eviction waits for pins
//!   (`dax_break_layout_final`) in the task that dropped the last reference, as the kernel's
//!   final `iput` does: a thread that unmaps the last mapping of an unlinked file it still
//!   pins itself waits for its own unpin, which the engine reports.

use super::{Ctx, Got, MapInfo, P, PAGE, fail, pattern_bytes};
use crate::FsError;
use crate::file::{Change, Falloc};
use crate::filebytes::FileBytes;
use crate::fs::Inode;
use crate::iomap::DaxfsFile;
use sim_core::Platform;
use sim_core::platform::SpinLockGuard;
use sim_core::trace::{Advice, FallocMode, Op, Statement, Trace};
use sim_mm::dax::invalidate::{LLONG_MAX, madvise_pageout};
use sim_mm::dax_entry::PG_PMD_NR;
use sim_mm::mm::{do_munmap, madvise_dontneed};
use sim_mm::pgtable::PmdVal;
use sim_mm::{MmStruct, PageTable};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Apply `c` to the bytes `f` of a file.
fn apply(f: &mut FileBytes, c: &Change<'_>) {
    match *c {
        Change::Write(pos, b) => f.write(pos as usize, b),
        Change::Zero(pos, n) => f.zero(pos as usize, n as usize),
        Change::Size(s) => f.resize(s as usize),
        // Shifts of the bytes (rare): on a flat copy.
        Change::Collapse(off, len) => f.edit_flat(|v| {
            let s = (off as usize).min(v.len());
            let e = (off as usize + len as usize).min(v.len());
            v.drain(s..e);
        }),
        Change::Insert(off, len) => f.edit_flat(|v| {
            let s = (off as usize).min(v.len());
            v.splice(s..s, std::iter::repeat_n(0u8, len as usize));
        }),
    }
}

fn falloc(mode: FallocMode) -> Falloc {
    match mode {
        FallocMode::Alloc => Falloc::Alloc,
        FallocMode::KeepSize => Falloc::KeepSize,
        FallocMode::Punch => Falloc::PunchHole,
        FallocMode::Zero => Falloc::ZeroRange,
        FallocMode::Collapse => Falloc::CollapseRange,
        FallocMode::Insert => Falloc::InsertRange,
    }
}

/// Bad input in an `msync` or `madvise` range, seen before anything runs: a range past the
/// end of every mapping of that name in the process (what, why).
pub(super) fn range_refusal(trace: &Trace, s: &Statement) -> Option<(String, String)> {
    let (map, r) = match &s.op {
        Op::Msync { map, range } | Op::Madvise { map, range, .. } => (map, (*range)?),
        _ => return None,
    };
    let proc = trace.header.process_of(&s.thread);
    let map_len = trace
        .statements
        .iter()
        .filter_map(|m| match &m.op {
            Op::Mmap { len, name, .. }
                if name == map && trace.header.process_of(&m.thread) == proc =>
            {
                Some(len.div_ceil(PAGE) * PAGE)
            }
            _ => None,
        })
        .max()
        .unwrap_or(0);
    (r.off.saturating_add(r.len) > map_len).then(|| {
        (
            format!("{} {} {map}", s.thread, s.op.keyword()),
            format!(
                "the range {:#x}..{:#x} passes the end of mapping `{map}` ({map_len:#x} bytes)",
                r.off,
                r.off.saturating_add(r.len)
            ),
        )
    })
}

impl Ctx {
    /// The oracle follows a change of inode `ino`'s bytes.
    fn apply_change(&self, ino: u64, c: Change<'_>) {
        let mut u = self.user.lock().unwrap();
        if let Some(f) = u.file_mut(ino) {
            apply(f, &c);
        }
    }

    /// The data oracle for `b` read at `pos` of inode `ino` by read `read` (see
    /// [`super::User::begin_read`] and the module header): the first mismatch, described.
    fn read_mismatch(
        &self,
        ino: u64,
        read: u64,
        pos: u64,
        b: &[u8],
        thread: &str,
        line: u32,
    ) -> Option<String> {
        let u = self.user.lock().unwrap();
        let f = u.files.get(&ino)?;
        let held = u.reads.get(&read).map_or(&[][..], |(_, h)| &h[..]);
        let s = (pos as usize).min(f.len());
        let e = (pos as usize + b.len()).min(f.len());
        let want = f.range(s, e);
        // A byte is right if the file holds it now or held it at some moment of the read.
        let wrong =
            |i: &usize| want[*i] != b[*i] && held.iter().all(|h| h.get(s + i) != Some(b[*i]));
        let i = (0..want.len()).find(wrong)?;
        Some(format!(
            "{thread} (line {line}): a read at file offset {:#x} returned {:#04x}, but the \
             execution implies {:#04x} there, and the file did not hold it at any moment of the \
             read ({} of {} bytes differ)",
            pos + i as u64,
            b[i],
            want[i],
            (0..want.len()).filter(wrong).count(),
            e - s
        ))
    }

    /// The page-table lock of `mm`, if `va` still translates to `pfn` (see `access`).
    pub(super) async fn tlb_hold<'a>(
        &self,
        p: &P,
        mm: &'a MmStruct<P>,
        va: u64,
        pfn: u64,
    ) -> Option<SpinLockGuard<'a, P, PageTable>> {
        let g = mm.page_table.lock(p).await;
        let now = match g.pmd_get(va) {
            PmdVal::Huge(pmd) if pmd.present() => Some(pmd.pfn() + ((va >> 12) & (PG_PMD_NR - 1))),
            PmdVal::Table => g.pte_get(va).filter(|e| e.present()).map(|e| e.pfn()),
            _ => None,
        };
        (now == Some(pfn)).then_some(g)
    }

    /// The last reference of a mapping's inode may be gone (after munmap).
    pub(super) async fn after_munmap(&self, p: &P, m: &MapInfo) -> Option<String> {
        self.fs
            .evict_if_unused(&self.dax, p, &m.file.inode)
            .await
            .err()
            .map(|e| e.to_string())
    }

    /// Process exit at the end of the run (`do_exit` -> `exit_mm` -> `mmput`), for every
    /// process in name order, after every trace thread has finished (so no other task runs and
    /// no scheduling choice is added): the pins left go first (the direct I/O holding them
    /// completes before the mm is torn down), then every VMA is unmapped as munmap does
    /// (`exit_mmap`: zap, rmap removal, page tables freed), and the file of each is released:
    /// an unlinked file whose last mapping this was is evicted (its blocks freed). Returns the
    /// first error, as the statement that failed would name it.
    pub(super) async fn exit_processes(&self, p: &P) -> Option<String> {
        let _fn = p.enter_fn("do_exit");
        let mut first_err = None;
        for (proc, mm) in &self.mms {
            self.exit_pins(p, proc).await;
            let vmas = mm.mmap_lock.read(p).await;
            let list: Vec<(u64, u64, u64)> = vmas
                .iter()
                .map(|v| (v.b.vm_start, v.b.vm_end - v.b.vm_start, v.vm_file.host))
                .collect();
            vmas.unlock().await;
            let mut inos = BTreeSet::new();
            for (addr, len, ino) in list {
                if let Err(e) = do_munmap(p, &self.fs.world, mm, addr, len).await {
                    first_err.get_or_insert(format!("exit_mmap of {proc}: {e:?}"));
                }
                inos.insert(ino);
            }
            self.user.lock().unwrap().maps.remove(proc);
            for ino in inos {
                let ns = self.fs.lock_ns(p).await;
                let inode = ns.inodes.get(&ino).cloned();
                drop(ns);
                let Some(inode) = inode else { continue };
                if let Err(e) = self.fs.evict_if_unused(&self.dax, p, &inode).await {
                    first_err.get_or_insert(format!("exit of {proc}: {e}"));
                }
            }
        }
        first_err
    }

    /// Drop an open reference taken with `Daxfs::open` (may evict an unlinked inode).
    pub(super) async fn release(&self, p: &P, inode: &Arc<Inode<P>>) -> Option<String> {
        self.fs
            .release(&self.dax, p, inode)
            .await
            .err()
            .map(|e| e.to_string())
    }

    /// The file statements: write, read, truncate, fallocate, fsync, fdatasync, unlink,
    /// msync, madvise.
    pub(super) async fn file_op(&self, p: &P, proc: &str, s: &Statement) -> Got {
        let mut got = Got::default();
        let errno = |e: FsError| Some(format!("{e:?}"));
        match &s.op {
            Op::Unlink { path } => match self.fs.unlink(p, path).await {
                Ok(inode) => {
                    if let Err(e) = self.fs.evict_if_unused(&self.dax, p, &inode).await {
                        got.errno = errno(e);
                    }
                }
                Err(e) => got.errno = errno(e),
            },
            Op::Msync { map, range } | Op::Madvise { map, range, .. } => {
                let m = match self.map(p, proc, map).await {
                    Ok(m) => m,
                    Err(e) => {
                        got.unmapped = Some(e);
                        return got;
                    }
                };
                let (off, len) = range.map_or((0, m.len), |r| (r.off, r.len));
                if !off.is_multiple_of(PAGE) {
                    got.errno = Some("EINVAL".into());
                    return got;
                }
                if off.checked_add(len).is_none_or(|e| e > m.len) {
                    got.errno = Some("ENOMEM".into());
                    return got;
                }
                if let Op::Madvise { advice, .. } = &s.op {
                    let mm = &self.mms[proc];
                    let (addr, r) = (m.addr + off, &self.dax);
                    let done = match advice {
                        Advice::DontNeed => {
                            madvise_dontneed(p, &self.fs.world, mm, addr, len).await
                        }
                        Advice::PageOut => madvise_pageout(r, p, mm, addr, len).await,
                    };
                    if let Err(e) = done {
                        got.errno = Some(format!("{e:?}"));
                    }
                } else if m.shared && len > 0 {
                    let start = m.file_off + off;
                    if let Err(e) = m
                        .file
                        .fsync(&self.dax, p, start, start + len - 1, true)
                        .await
                    {
                        got.errno = errno(e);
                    }
                }
            }
            Op::Write { path, .. }
            | Op::Read { path, .. }
            | Op::Truncate { path, .. }
            | Op::Fallocate { path, .. }
            | Op::Fsync { path }
            | Op::Fdatasync { path } => {
                let Some(inode) = self.fs.open(p, path).await else {
                    got.errno = errno(FsError::ENOENT);
                    return got;
                };
                let file = DaxfsFile::new(self.fs.clone(), inode.clone());
                got = self.on_open_file(p, s, &file).await;
                if let Some(e) = self.release(p, &inode).await {
                    got.errno.get_or_insert(e);
                }
            }
            other => unreachable!("{} is not a file statement", other.keyword()),
        }
        got
    }

    /// A statement on an open file.
    async fn on_open_file(&self, p: &P, s: &Statement, file: &DaxfsFile<P>) -> Got {
        let mut got = Got::default();
        let errno = |e: FsError| Some(format!("{e:?}"));
        let ino = file.inode.ino;
        let mut obs = |c: Change<'_>| self.apply_change(ino, c);
        let (thread, line) = (s.thread.as_str(), s.pos.line);
        let r = match &s.op {
            Op::Write {
                off, len, pattern, ..
            } => {
                let d = pattern_bytes(pattern, *len);
                let mut done = 0u64;
                let mut r = Ok(());
                while done < *len {
                    match file
                        .write(&self.dax, p, off + done, &d[done as usize..], &mut obs)
                        .await
                    {
                        Ok(0) => {
                            r = Err(FsError::EIO);
                            break;
                        }
                        Ok(n) => done += n,
                        Err(e) => {
                            r = Err(e);
                            break;
                        }
                    }
                }
                r
            }
            Op::Read { off, len, .. } => {
                let mut buf = vec![0u8; *len as usize];
                let mut mismatch = None;
                let read = self.user.lock().unwrap().begin_read(ino);
                let mut check = |pos: u64, b: &[u8]| {
                    if mismatch.is_none() {
                        mismatch = self.read_mismatch(ino, read, pos, b, thread, line);
                    }
                };
                let r = file.read(&self.dax, p, *off, &mut buf, &mut check).await;
                self.user.lock().unwrap().end_read(read);
                if let Some(msg) = mismatch {
                    fail(p, "data", msg).await;
                }
                r.map(|n| {
                    // A short read compares as if padded with zero bytes.
                    buf[n as usize..].fill(0);
                    got.bytes = Some(buf);
                })
            }
            Op::Truncate { size, .. } => file.truncate(&self.dax, p, *size, &mut obs).await,
            Op::Fallocate { off, len, mode, .. } => {
                file.fallocate(&self.dax, p, *off, *len, falloc(*mode), &mut obs)
                    .await
            }
            Op::Fsync { .. } | Op::Fdatasync { .. } => {
                let datasync = matches!(s.op, Op::Fdatasync { .. });
                file.fsync_stamped(&self.dax, p, 0, LLONG_MAX, datasync)
                    .await
                    .map(|c| got.synced_ctime = c)
            }
            other => unreachable!("{} is not a statement on an open file", other.keyword()),
        };
        if let Err(e) = r {
            got.errno = errno(e);
        }
        got
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oracle_follows_every_kind_of_change() {
        let mut f = FileBytes::from_slice(&[1u8; 8]);
        apply(&mut f, &Change::Write(6, &[2, 2, 2, 2]));
        assert_eq!(f.to_vec(), [1, 1, 1, 1, 1, 1, 2, 2, 2, 2]);
        apply(&mut f, &Change::Zero(1, 2));
        assert_eq!(f.to_vec(), [1, 0, 0, 1, 1, 1, 2, 2, 2, 2]);
        apply(&mut f, &Change::Collapse(0, 3));
        assert_eq!(f.to_vec(), [1, 1, 1, 2, 2, 2, 2]);
        apply(&mut f, &Change::Insert(3, 2));
        assert_eq!(f.to_vec(), [1, 1, 1, 0, 0, 2, 2, 2, 2]);
        apply(&mut f, &Change::Size(4));
        assert_eq!(f.to_vec(), [1, 1, 1, 0]);
        apply(&mut f, &Change::Size(6));
        assert_eq!(f.to_vec(), [1, 1, 1, 0, 0, 0]);
        // Zeroing past the end changes nothing there.
        apply(&mut f, &Change::Zero(5, 100));
        assert_eq!(f.len(), 6);
    }
}
