//! read(2) and write(2) on a DAX file (research/linux_dax.md section 2): [`dax_iomap_rw`] asks
//! the file system for one extent at a time ([`IomapOps::iomap_begin`], the kernel's
//! `iomap_iter`) and [`dax_iomap_iter`] copies between the user buffer and the extent through
//! the machine: CPU loads for a read (`copy_mc_to_user`: a poisoned line ends the copy with a
//! machine check), non-temporal stores for a write (`copy_from_iter_flushcache`: the data is
//! durable once the next fence retires, which the file system's fsync issues).
//!
//! - A read never goes past `i_size`; holes and unwritten extents read as zeros without touching
//!   the media (`iov_iter_zero`).
//! - A write passes `IOMAP_WRITE`, so the file system allocates holes and converts unwritten
//!   extents (zeroed, `IOMAP_F_NEW`) or copies shared blocks (`IOMAP_F_SHARED`, the parts of the
//!   blocks outside the write already copied by the file system). Either way a hole's zero page
//!   or an old shared page may still be mapped: the range's clean entries are invalidated and
//!   its mappings torn down (`invalidate_inode_pages2_range`), so that the next access faults
//!   and finds the new blocks.
//! - Growing `i_size` after a write past the end is the file system's (`xfs_file_dax_write`).
//!
//! The caller holds the file system's IOLOCK (shared for a read, exclusive for a write), not
//! `invalidate_lock`: faults race with both, as in the kernel.
//!
//! Copies go one page at a time (one machine step each), so that another task's access lands
//! between pages, never inside one. `observe(pos, bytes)` is called right after each piece is
//! copied (with the bytes read, or the bytes written), before any other task can run: a
//! checker's shadow of the file follows the media exactly.

use super::invalidate::dax_invalidate_mapping_entry_sync;
use super::iomap::{
    IOMAP_DAX, IOMAP_F_NEW, IOMAP_F_SHARED, IOMAP_WRITE, Iomap, IomapOps, IomapType,
};
use super::{Dax, Release};
use crate::Errno;
use crate::dax_entry::{PAGE_SHIFT, PAGE_SIZE};
use crate::mm::unmap_mapping_pages;
use crate::world::AddressSpace;
use crate::xarray::{XaOps, XaState};
use sim_core::PmemPlatform;
use sim_core::machine::MemError;

/// The user buffer of one read or write (`struct iov_iter`, one segment).
pub enum IovIter<'a> {
    /// `ITER_DEST`: read(2) fills it.
    Read(&'a mut [u8]),
    /// `ITER_SOURCE`: write(2) copies from it.
    Write(&'a [u8]),
}

impl IovIter<'_> {
    fn len(&self) -> u64 {
        match self {
            IovIter::Read(b) => b.len() as u64,
            IovIter::Write(b) => b.len() as u64,
        }
    }

    fn is_write(&self) -> bool {
        matches!(self, IovIter::Write(_))
    }
}

/// What one `dax_iomap_iter` did.
#[derive(Debug, PartialEq, Eq)]
pub enum IterDone {
    /// Bytes copied (at least one, at most the extent).
    Copied(u64),
    /// The copy stopped early: the bytes copied before the failure, and why.
    Short(u64, MemError),
}

/// `invalidate_inode_pages2_range(mapping, start, end)` on a DAX mapping: unmap the page range
/// `start ..= end`, remove each clean entry of it (`dax_invalidate_mapping_entry_sync`; dirty
/// ones stay), and unmap again. Returns whether every entry went (the kernel's `-EBUSY`
/// otherwise). The kernel removes the entries first and unmaps once at the end; the model
/// unmaps first as well, so only a fault between the first unmap and an entry's deletion can
/// leave a leaf without its entry until the final unmap, as in the kernel (the one window the
/// invariant `LeafWithoutEntry` allows, named by this function: `invariants::INVALIDATE_FN`).
pub async fn invalidate_inode_pages2_range<P: PmemPlatform>(
    dax: &Dax<P>,
    p: &P,
    mapping: &AddressSpace<P>,
    start: u64,
    end: u64,
) -> bool {
    let _fn = p.enter_fn(crate::invariants::INVALIDATE_FN);
    let nr = end - start + 1;
    unmap_mapping_pages(p, &dax.world, mapping, start, nr, false).await;
    // The indices that hold entries now (a snapshot; each is rechecked under the lock).
    let mut indices = Vec::new();
    let xa = mapping.i_pages.lock(p).await;
    let mut xas = XaState::new(start);
    loop {
        let e = xa.xas_find(&mut xas, end);
        if e.is_null() {
            break;
        }
        indices.push(xas.xa_index);
        let count = 1u64 << crate::dax_entry::dax_entry_order(e);
        let next = (xas.xa_index & !(count - 1)) + count;
        if next > end {
            break;
        }
        xas.set(next);
    }
    xa.release(dax.release_steps).await;
    let mut all = true;
    for index in indices {
        all &= dax_invalidate_mapping_entry_sync(dax, p, mapping, index).await;
    }
    unmap_mapping_pages(p, &dax.world, mapping, start, nr, false).await;
    all
}

/// `dax_iomap_iter(iomi, iter)`: copy between `buf[done..]` and the extent `iomap` (which
/// covers file position `pos`), at most `len` bytes, page by page.
#[allow(clippy::too_many_arguments)]
pub async fn dax_iomap_iter<P: PmemPlatform>(
    dax: &Dax<P>,
    p: &P,
    mapping: &AddressSpace<P>,
    iomap: &Iomap,
    flags: u16,
    pos: u64,
    len: u64,
    buf: &mut IovIter<'_>,
    done: u64,
    observe: &mut impl FnMut(u64, &[u8]),
) -> Result<IterDone, Errno> {
    let _fn = p.enter_fn("dax_iomap_iter");
    let end = pos + len;
    match buf {
        IovIter::Read(b) => {
            if matches!(iomap.typ, IomapType::Hole | IomapType::Unwritten) {
                // iov_iter_zero: no media access.
                let piece = &mut b[done as usize..(done + len) as usize];
                piece.fill(0);
                observe(pos, piece);
                return Ok(IterDone::Copied(len));
            }
        }
        IovIter::Write(_) => {
            if iomap.typ != IomapType::Mapped {
                // The file system did not allocate for a write.
                return Err(Errno::EIO);
            }
            // Blocks new to the file (or a copy of shared ones) may sit under a hole's zero
            // page or the old shared page in some page table: tear those down first.
            if flags & (IOMAP_F_NEW | IOMAP_F_SHARED) != 0 {
                invalidate_inode_pages2_range(
                    dax,
                    p,
                    mapping,
                    pos >> PAGE_SHIFT,
                    (end - 1) >> PAGE_SHIFT,
                )
                .await;
            }
        }
    }
    if iomap.typ != IomapType::Mapped {
        return Err(Errno::EIO);
    }
    let mut at = pos;
    while at < end {
        let n = (end - at).min(PAGE_SIZE - at % PAGE_SIZE);
        let i = (done + at - pos) as usize..(done + at - pos + n) as usize;
        let addr = iomap.device_addr(at);
        let r = match buf {
            IovIter::Read(b) => {
                let r = p.pmem_load(addr, &mut b[i.clone()]).await;
                if r.is_ok() {
                    observe(at, &b[i]);
                }
                r
            }
            IovIter::Write(b) => {
                let r = p.pmem_ntstore(addr, &b[i.clone()]).await;
                if r.is_ok() {
                    observe(at, &b[i]);
                }
                r
            }
        };
        if let Err(e) = r {
            return Ok(IterDone::Short(at - pos, e));
        }
        at += n;
    }
    Ok(IterDone::Copied(len))
}

/// `dax_iomap_rw(iocb, iter, ops)`: read into or write from `buf` at file position `pos`,
/// one extent at a time. Returns the bytes copied: fewer than asked when a read reaches
/// `i_size` or a copy stops at a machine check after some bytes; an error when nothing was
/// copied (`EIO` for a machine check, the file system's errno, e.g. `ENOSPC`).
pub async fn dax_iomap_rw<P: PmemPlatform, I: IomapOps<P>>(
    dax: &Dax<P>,
    p: &P,
    mapping: &AddressSpace<P>,
    ops: &I,
    pos: u64,
    mut buf: IovIter<'_>,
    observe: &mut impl FnMut(u64, &[u8]),
) -> Result<u64, Errno> {
    let _fn = p.enter_fn("dax_iomap_rw");
    let write = buf.is_write();
    let mut len = buf.len();
    if len == 0 {
        return Ok(0);
    }
    pos.checked_add(len).ok_or(Errno::EINVAL)?;
    if !write {
        let size = ops.i_size(p).await;
        if pos >= size {
            return Ok(0);
        }
        len = len.min(size - pos);
    }
    let flags = IOMAP_DAX | if write { IOMAP_WRITE } else { 0 };
    let mut done = 0u64;
    let mut err = None;
    // iomap_iter: each round maps what is left and copies what the extent covers.
    while done < len {
        let at = pos + done;
        let pair = match ops.iomap_begin(p, at, len - done, flags).await {
            Ok(pair) => pair,
            Err(e) => {
                err = Some(e);
                break;
            }
        };
        let m = pair.iomap;
        // The extent covers `at` and is not empty (the iomap contract).
        let ext_end = m.offset.saturating_add(m.length);
        if m.offset > at || ext_end <= at {
            err = Some(Errno::EIO);
            break;
        }
        let n = (ext_end - at).min(len - done);
        let r = dax_iomap_iter(dax, p, mapping, &m, m.flags, at, n, &mut buf, done, observe).await;
        let copied = match r {
            Ok(IterDone::Copied(c)) => c,
            Ok(IterDone::Short(c, _)) => {
                done += c;
                let _ = ops.iomap_end(p, at, n, c, flags, &m).await;
                err = Some(Errno::EIO);
                break;
            }
            Err(e) => {
                // iomap_iter: ->iomap_end follows every successful ->iomap_begin, with nothing
                // processed on an error (a file system cancels what it staged).
                let _ = ops.iomap_end(p, at, n, 0, flags, &m).await;
                err = Some(e);
                break;
            }
        };
        let _ = ops.iomap_end(p, at, n, copied, flags, &m).await;
        done += copied;
    }
    match err {
        Some(e) if done == 0 => Err(e),
        _ => Ok(done),
    }
}
