//! The trace runner's statements of reflink, pins, O_DIRECT and poison (a child module of
//! `runner`, sharing its context):
//!
//! - `reflink SRC DST [SRCOFF LEN DSTOFF]`: [`Daxfs::reflink_dax`] (IOLOCK and MMAPLOCK of both
//!   inodes exclusive, the destination's DAX layouts broken, the source unmapped, blocks
//!   shared with refcounts). Later faults see `IOMAP_F_SHARED`: a read maps the shared page and
//!   the DAX core counts its owners (`folio->share`); a write copies (daxfs's CoW). The oracle
//!   copies the source's bytes into the destination's.
//! - `pin M+OFF LEN [longterm] as G`: `pin_user_pages_fast` (FOLL_PIN; FOLL_WRITE when the VMA
//!   is shared and writable, as an O_DIRECT read into the buffer pins it), holding a reference
//!   and a pin on each page until `unpin G`: truncate and hole punch wait for them in
//!   `dax_layout_busy_page_range`. `longterm` (FOLL_LONGTERM) is refused on fsdax: EOPNOTSUPP.
//!   Pin names belong to the process, like mapping names (an `unpin` of a name another thread
//!   has not pinned yet waits for it). A pin that fails (EFAULT after a truncate, EOPNOTSUPP,
//!   an unmapped name) still binds its name, to no pages: its `unpin` drops nothing.
//! - `dio-read PATH OFF LEN into M+OFF`: pin the destination (FOLL_WRITE), read the file under
//!   IOLOCK shared through `iomap_begin` (holes and unwritten blocks read as zeros; a short read
//!   at EOF), copy into the pinned pages as DMA does (non-temporal stores to pmem pages; DRAM for
//!   a private CoW page), unpin. A machine check on the source is EIO (`copy_mc_to_kernel`).
//! - `poison PATH OFF [LEN] [notify]` / `poison pmem:ADDR [LEN] [notify]`: the media under the
//!   range goes bad (LEN defaults to one byte: the consume unit holding it). With `notify` (a
//!   scrub found it), `memory_failure` runs for each 4 KiB page from a kernel worker (no
//!   current task): daxfs's `notify_failure` (rmap.rs) sends `BUS_MCEERR_AO` to every process
//!   mapping a data page through any owner, or shuts the file system down for metadata.
//!   Without it, the first consumer's load takes the machine check: memory failure with
//!   `MF_ACTION_REQUIRED`, `BUS_MCEERR_AR` to the consumer, AO to the other processes.
//!
//! **Signals** are taken on return to user space: after every statement the thread takes the
//! signals queued for it, and the statement's expectation sees them (`sigbus(ao)` on whatever
//! statement the thread was running or had just finished when memory failure signalled it). A
//! fault on a page memory failure marked is `VM_FAULT_HWPOISON`: SIGBUS `BUS_MCEERR_AR`. Every
//! trace process asks for early kill (`prctl(PR_MCE_KILL_EARLY)`, as xfstests'
//! `t_mmap_cow_memory_failure` does), so processes mapping a failed page get AO at once. A
//! signal queued after a thread's last statement is not taken. Signals are looked for only in
//! traces with a `poison` statement (nothing else sends them), so other traces keep their
//! schedules.
//!
//! **Shutdown**: after a metadata failure every file statement returns EIO, and faults that
//! need `iomap_begin` get SIGBUS.

use super::*;
use crate::rmap::{DaxfsHolder, dev_pfn};
use sim_core::trace::{PoisonTarget, SigbusCode};
use sim_mm::dax::fault::DaxFaultHandler;
use sim_mm::dax::iomap::{IomapOps, IomapType};
use sim_mm::gup::{pin_user_pages_fast, pin_user_pages_longterm, unpin_user_pages};
use sim_mm::memory_failure::{MfContext, NoHolder, machine_check, memory_failure};
use sim_mm::signal::{SiCode, Signal, dequeue_signals};
use sim_mm::{Errno, Pfn};

/// The state of this module's statements.
#[derive(Default)]
pub(crate) struct MfState {
    /// Per process: pin name -> the pinned pfns.
    pins: Mutex<BTreeMap<String, BTreeMap<String, Vec<Pfn>>>>,
    /// The trace has a `poison` statement: signals and shutdown can happen.
    pub(super) poison: bool,
}

impl MfState {
    pub(crate) fn new(trace: &Trace) -> MfState {
        MfState {
            pins: Mutex::default(),
            poison: trace
                .all_statements()
                .any(|s| matches!(s.op, Op::Poison { .. })),
        }
    }
}

/// Bad input this module's statements can have, beyond what `refusals` checks: a reflink or
/// poison of a file that nothing creates, a poison past the end of the pmem.
pub(super) fn mf_refusals(trace: &Trace, cfg: &MachineConfig, known: &[&str]) -> Vec<Refusal> {
    let mut out = Vec::new();
    for s in &trace.statements {
        let mut paths: Vec<&str> = Vec::new();
        match &s.op {
            Op::Reflink { src, dst, .. } => paths.extend([src.as_str(), dst.as_str()]),
            Op::Poison {
                target: PoisonTarget::File { path, .. },
                ..
            } => paths.push(path),
            Op::Poison {
                target: PoisonTarget::Pmem { addr },
                len,
                ..
            } => {
                let end = addr.saturating_add(len.unwrap_or(1).max(1));
                if end > cfg.pmem_size {
                    out.push(Refusal {
                        line: s.pos.line,
                        col: s.pos.col,
                        what: format!("{} poison pmem:{addr:#x}", s.thread),
                        why: format!(
                            "the range {addr:#x}..{end:#x} passes the end of the pmem ({:#x} \
                             bytes)",
                            cfg.pmem_size
                        ),
                    });
                }
            }
            _ => {}
        }
        for path in paths {
            if !known.contains(&path) {
                out.push(Refusal {
                    line: s.pos.line,
                    col: s.pos.col,
                    what: format!("{} {} {path}", s.thread, s.op.keyword()),
                    why: format!(
                        "no such file: no `file {path}` line and no `create {path}` in the trace"
                    ),
                });
            }
        }
    }
    out
}

/// The signal codes a trace expectation names.
fn sigbus_code(code: SiCode) -> Option<SigbusCode> {
    match code {
        SiCode::BusMceerrAr => Some(SigbusCode::Ar),
        SiCode::BusMceerrAo => Some(SigbusCode::Ao),
        _ => None,
    }
}

impl Ctx {
    /// Statements of this module; `None` for the others.
    pub(super) async fn execute_mf(&self, p: &P, proc: &str, s: &Statement) -> Option<Got> {
        if self.mf.poison && is_file_op(&s.op) && self.fs.failure.is_shutdown(p).await {
            // xfs_is_shutdown at every entry point.
            return Some(Got {
                errno: Some("EIO".into()),
                ..Got::default()
            });
        }
        Some(match &s.op {
            Op::Reflink { src, dst, range } => self.reflink(p, src, dst, range).await,
            Op::Pin {
                at,
                len,
                longterm,
                name,
            } => self.pin(p, proc, at, *len, *longterm, name).await,
            Op::Unpin { pin } => self.unpin(p, proc, pin).await,
            Op::DioRead {
                path,
                off,
                len,
                into,
            } => self.dio_read(p, s, proc, path, *off, *len, into).await,
            Op::Poison {
                target,
                len,
                notify,
            } => {
                self.poison(p, target, len.unwrap_or(1).max(1), *notify)
                    .await
            }
            _ => return None,
        })
    }

    /// Return to user space after a statement: take the queued signals.
    pub(super) async fn take_signals(&self, p: &P, got: &mut Got) {
        if !self.mf.poison {
            return;
        }
        for si in dequeue_signals(p, &self.fs.world, p.current_task()).await {
            match si.signo {
                Signal::SIGBUS => {
                    got.sigbus = true;
                    got.sigbus_codes.extend(sigbus_code(si.code));
                }
                Signal::SIGKILL => got.killed = true,
                Signal::SIGSEGV => got.segv = true,
            }
        }
    }

    /// A failed user access (`mm_fault_error`): VM_FAULT_HWPOISON is SIGBUS BUS_MCEERR_AR.
    pub(super) fn access_failed(r: VmFault, got: &mut Got) {
        if r.contains(VmFault::SIGSEGV) {
            got.segv = true;
        } else {
            got.sigbus = true;
            if r.contains(VmFault::HWPOISON) || r.contains(VmFault::HWPOISON_LARGE) {
                got.sigbus_codes.push(SigbusCode::Ar);
            }
        }
    }

    /// Whether the file system registers no `dax_holder` for memory failure: in the bug modes
    /// from before 5.19 (when fsdax gained `notify_failure`), memory failure takes the generic
    /// path through `page->mapping` (`mf_generic_kill_procs`, `dax_lock_folio`), as those
    /// kernels did. `mf-speculative-page-lock` is the 4.19-era `dax_lock_folio`; without it,
    /// the holder (daxfs's rmap) answers.
    fn no_holder(&self) -> bool {
        self.dax.bug(DaxBug::MfSpeculativePageLock)
    }

    /// A CPU access to device address `addr` took a machine check: `kill_me_maybe` ->
    /// `memory_failure(pfn, MF_ACTION_REQUIRED)` from the consuming thread. Returns whether a
    /// SIGBUS BUS_MCEERR_AR (or SIGKILL) is now queued for the thread. When none is (the model translates and accesses in
    /// two steps, so memory failure may have unmapped the page in between and found no
    /// mapping to signal), the caller restarts the access once, which then faults on the
    /// HWPoison page (`VM_FAULT_HWPOISON`), as the restarted instruction would; `retried` says
    /// this is the restart, after which the thread gets BUS_MCEERR_AR regardless.
    pub(super) async fn consumed_poison(
        &self,
        p: &P,
        addr: u64,
        retried: bool,
        got: &mut Got,
    ) -> bool {
        let world = &self.fs.world;
        let pfn = dev_pfn(world, addr);
        if self.no_holder() {
            machine_check(p, world, pfn, &NoHolder, &self.dax).await;
        } else {
            let holder = DaxfsHolder {
                fs: &self.fs,
                dax: &self.dax,
            };
            machine_check(p, world, pfn, &holder, &self.dax).await;
        }
        let me = p.current_task();
        let tl = world.tasks.lock(p).await;
        let ar = tl.threads.get(&me).is_some_and(|th| {
            th.pending
                .iter()
                .any(|si| si.signo == Signal::SIGKILL || si.code == SiCode::BusMceerrAr)
        });
        tl.unlock().await;
        if ar {
            // `take_signals` takes it after the statement.
            got.sigbus = true;
            return true;
        }
        if retried {
            got.sigbus = true;
            got.sigbus_codes.push(SigbusCode::Ar);
            return true;
        }
        false
    }

    async fn inode(&self, p: &P, path: &str) -> Result<Arc<crate::Inode<P>>, Got> {
        self.fs.lookup(p, path).await.ok_or_else(|| Got {
            errno: Some("ENOENT".into()),
            ..Got::default()
        })
    }

    async fn reflink(
        &self,
        p: &P,
        src: &str,
        dst: &str,
        range: &Option<sim_core::trace::ReflinkRange>,
    ) -> Got {
        let (s, d) = match (self.inode(p, src).await, self.inode(p, dst).await) {
            (Ok(s), Ok(d)) => (s, d),
            (Err(g), _) | (_, Err(g)) => return g,
        };
        let (so, len, doff) = range.map_or((0, 0, 0), |r| (r.src_off, r.len, r.dst_off));
        // The oracle: the destination now reads as the source did (recorded under the
        // reflink's locks, before anyone can read the new blocks).
        let record = |size: u64| {
            let mut u = self.user.lock().unwrap();
            let from = u.files.get(&s.ino).cloned().unwrap_or_default();
            let n = if len == 0 {
                (from.len() as u64).saturating_sub(so)
            } else {
                len
            };
            // A whole file onto a file of its size: the bytes are the source's, shared.
            if so == 0 && doff == 0 && n >= size && size == from.len() as u64 {
                u.file_set(d.ino, from);
                return;
            }
            u.files.entry(d.ino).or_default();
            let to = u.file_mut(d.ino).expect("just inserted");
            to.resize(size as usize);
            reflink_bytes(to, &from, so, n, doff);
        };
        match self
            .fs
            .reflink_dax(p, &self.dax, &s, &d, so, len, doff, record)
            .await
        {
            Ok(()) => Got::default(),
            Err(e) => Got {
                errno: Some(format!("{e:?}")),
                ..Got::default()
            },
        }
    }

    /// Wait until `name` is pinned by a thread of `proc` (as [`Ctx::map`] waits for mappings).
    async fn pinned(&self, p: &P, proc: &str, name: &str) -> Vec<Pfn> {
        let take = || {
            self.mf
                .pins
                .lock()
                .unwrap()
                .get_mut(proc)
                .and_then(|m| m.remove(name))
        };
        if let Some(v) = take() {
            return v;
        }
        loop {
            let w = self
                .names_wq
                .prepare_to_wait(p, WaitKey(0, 0), false, wake_key_eq)
                .await;
            if let Some(v) = take() {
                self.names_wq.finish_wait(p, w).await;
                return v;
            }
            self.names_wq.schedule(p, w).await;
            self.names_wq.finish_wait(p, w).await;
        }
    }

    /// Pin the pages of `M+OFF LEN`: the pfns, or the errno.
    #[allow(clippy::too_many_arguments)]
    async fn pin_range(
        &self,
        p: &P,
        m: &MapInfo,
        mm: &MmStruct<P>,
        off: u64,
        len: u64,
        write: bool,
        longterm: bool,
    ) -> Result<Vec<Pfn>, Errno> {
        let va = m.addr + off;
        let nr = (va + len.max(1)).div_ceil(PAGE) - va / PAGE;
        let fault = DaxFaultHandler {
            dax: &self.dax,
            ops: &m.file,
        };
        let world = &self.fs.world;
        let r = if longterm {
            pin_user_pages_longterm(p, world, mm, va, nr, write, &fault).await
        } else {
            pin_user_pages_fast(p, world, mm, va, nr, write, &fault).await
        };
        match r {
            Ok(pfns) if pfns.len() as u64 == nr => Ok(pfns),
            Ok(pfns) => {
                // A partial pin is a short I/O; the model's statements want the whole range.
                unpin_user_pages(p, world, &pfns).await;
                Err(Errno::EFAULT)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether the VMA at `va` is shared and writable (FOLL_WRITE for an O_DIRECT read).
    async fn writable_shared(&self, p: &P, mm: &MmStruct<P>, va: u64) -> bool {
        let vmas = mm.mmap_lock.read(p).await;
        let w = vmas
            .vma_lookup(va)
            .is_some_and(|v| v.b.shared() && v.b.writable());
        vmas.release(self.dax.release_steps).await;
        w
    }

    async fn pin(
        &self,
        p: &P,
        proc: &str,
        at: &MapOff,
        len: u64,
        longterm: bool,
        name: &str,
    ) -> Got {
        let mut got = Got::default();
        let pinned = match self.map(p, proc, &at.map).await {
            Ok(m) => {
                let mm = &self.mms[proc];
                let write = self.writable_shared(p, mm, m.addr + at.off).await;
                self.pin_range(p, &m, mm, at.off, len, write, longterm)
                    .await
            }
            Err(e) => {
                got.unmapped = Some(e);
                Err(Errno::EFAULT)
            }
        };
        let pfns = match pinned {
            Ok(pfns) => pfns,
            Err(e) => {
                if got.unmapped.is_none() {
                    got.errno = Some(format!("{e:?}"));
                }
                // A failed pin still names its (empty) set of pages: the I/O that would have
                // held them failed before it started, so `unpin G` has nothing to drop and must
                // not wait for a pin that will never come.
                Vec::new()
            }
        };
        let old = self
            .mf
            .pins
            .lock()
            .unwrap()
            .entry(proc.to_string())
            .or_default()
            .insert(name.to_string(), pfns);
        if let Some(old) = old {
            // A name pinned again: the old pins are dropped, as a closed fd's I/O ends.
            unpin_user_pages(p, &self.fs.world, &old).await;
        }
        self.names_wq.wake_up(p, WaitKey(0, 0), WakeMode::All).await;
        got
    }

    /// Process exit: the pins `proc` holds without an `unpin` go. A process cannot exit with
    /// direct I/O in flight (`exit_aio` waits for it; a synchronous O_DIRECT ends before the
    /// thread leaves the syscall), and FOLL_PIN pins are dropped when the I/O completes.
    pub(super) async fn exit_pins(&self, p: &P, proc: &str) {
        let left = self.mf.pins.lock().unwrap().remove(proc);
        for pfns in left.into_iter().flat_map(|m| m.into_values()) {
            unpin_user_pages(p, &self.fs.world, &pfns).await;
        }
    }

    async fn unpin(&self, p: &P, proc: &str, name: &str) -> Got {
        let pfns = self.pinned(p, proc, name).await;
        unpin_user_pages(p, &self.fs.world, &pfns).await;
        Got::default()
    }

    #[allow(clippy::too_many_arguments)]
    async fn dio_read(
        &self,
        p: &P,
        s: &Statement,
        proc: &str,
        path: &str,
        off: u64,
        len: u64,
        into: &MapOff,
    ) -> Got {
        let mut got = Got::default();
        let inode = match self.inode(p, path).await {
            Ok(i) => i,
            Err(g) => return g,
        };
        let m = match self.map(p, proc, &into.map).await {
            Ok(m) => m,
            Err(e) => {
                got.unmapped = Some(e);
                return got;
            }
        };
        let mm = &self.mms[proc];
        // bio_iov_iter_get_pages: pin the destination for the duration of the I/O.
        let pfns = match self.pin_range(p, &m, mm, into.off, len, true, false).await {
            Ok(v) => v,
            Err(e) => {
                got.errno = Some(format!("{e:?}"));
                return got;
            }
        };
        let data = self.read_file(p, s, &inode, off, len).await;
        let r = match data {
            Ok(bytes) => {
                self.copy_to_pinned(p, &m, into.off, &pfns, &bytes).await;
                Ok(())
            }
            Err(e) => Err(e),
        };
        unpin_user_pages(p, &self.fs.world, &pfns).await;
        if let Err(e) = r {
            got.errno = Some(e.into());
        }
        got
    }

    /// The file's bytes `off .. off + len` (short at EOF) under IOLOCK shared, through
    /// `iomap_begin`, checked against the oracle.
    async fn read_file(
        &self,
        p: &P,
        s: &Statement,
        inode: &Arc<crate::Inode<P>>,
        off: u64,
        len: u64,
    ) -> Result<Vec<u8>, &'static str> {
        let file = DaxfsFile::new(self.fs.clone(), inode.clone());
        let io = self.fs.iolock_shared(p, inode).await;
        let size = file.i_size(p).await;
        let end = off.saturating_add(len).min(size);
        let mut out = Vec::new();
        let mut pos = off;
        let mut r = Ok(());
        while pos < end {
            let map = match file.iomap_begin(p, pos, end - pos, 0).await {
                Ok(m) => m,
                Err(_) => {
                    r = Err("EIO");
                    break;
                }
            };
            let n = (map.iomap.offset + map.iomap.length)
                .min(end)
                .saturating_sub(pos)
                .max(1)
                .min(end - pos);
            let mut b = vec![0u8; n as usize];
            if map.iomap.typ == IomapType::Mapped
                && p.pmem_load(map.iomap.device_addr(pos), &mut b)
                    .await
                    .is_err()
            {
                // copy_mc_to_kernel stops at the poison: the read fails.
                r = Err("EIO");
                break;
            }
            out.extend_from_slice(&b);
            pos += n;
        }
        drop(io);
        r?;
        let probe = MapInfo {
            addr: 0,
            len: 0,
            file_off: 0,
            shared: true,
            ino: inode.ino,
            file,
        };
        self.check_data(p, &s.thread, s.pos.line, &probe, off, &out)
            .await;
        Ok(out)
    }

    /// DMA of `bytes` into the pinned pages of `m` from `off`.
    async fn copy_to_pinned(&self, p: &P, m: &MapInfo, off: u64, pfns: &[Pfn], bytes: &[u8]) {
        let mut done = 0u64;
        let va0 = m.addr + off;
        while done < bytes.len() as u64 {
            let va = va0 + done;
            let i = (va / PAGE - va0 / PAGE) as usize;
            let n = (bytes.len() as u64 - done).min(PAGE - va % PAGE);
            let src = &bytes[done as usize..(done + n) as usize];
            match self.phys(pfns[i], va) {
                Phys::Device(a) => {
                    // DMA bypasses the CPU caches: a poisoned destination is overwritten.
                    let _ = p.pmem_ntstore(a, src).await;
                    if m.shared {
                        let fpos = m.file_off + (va - m.addr);
                        let mut u = self.user.lock().unwrap();
                        if let Some(f) = u.file_mut(m.ino) {
                            let e = (fpos + n).min(f.len() as u64);
                            if fpos < e {
                                f.write(fpos as usize, &src[..(e - fpos) as usize]);
                            }
                        }
                    }
                }
                Phys::Anon(pfn) => {
                    let fpos = m.file_off + (va - m.addr);
                    let mut page = self.anon_page(pfn, m, fpos);
                    let o = (va % PAGE) as usize;
                    page[o..o + n as usize].copy_from_slice(src);
                    self.user.lock().unwrap().anon.insert(pfn, page);
                }
                // A write pin never lands on a zero page (the fault gave it its own).
                Phys::Zero => {}
            }
            done += n;
        }
        let _ = p.sfence().await;
    }

    /// The device byte ranges under `target`'s range (holes have none).
    async fn poison_ranges(
        &self,
        p: &P,
        target: &PoisonTarget,
        len: u64,
    ) -> Result<Vec<(u64, u64)>, Got> {
        let (path, off) = match target {
            PoisonTarget::Pmem { addr } => return Ok(vec![(*addr, len)]),
            PoisonTarget::File { path, off } => (path, *off),
        };
        let inode = self.inode(p, path).await?;
        let file = DaxfsFile::new(self.fs.clone(), inode);
        let mut out = Vec::new();
        let end = off.saturating_add(len);
        let mut pos = off;
        while pos < end {
            let map = file
                .iomap_begin(p, pos, end - pos, 0)
                .await
                .map_err(|_| Got {
                    errno: Some("EIO".into()),
                    ..Got::default()
                })?;
            let n = (map.iomap.offset + map.iomap.length)
                .saturating_sub(pos)
                .clamp(1, end - pos);
            if matches!(map.iomap.typ, IomapType::Mapped | IomapType::Unwritten) {
                out.push((map.iomap.device_addr(pos), n));
            }
            pos += n;
        }
        Ok(out)
    }

    async fn poison(&self, p: &P, target: &PoisonTarget, len: u64, notify: bool) -> Got {
        let mut got = Got::default();
        let ranges = match self.poison_ranges(p, target, len).await {
            Ok(r) => r,
            Err(g) => return g,
        };
        for &(addr, n) in &ranges {
            if p.pmem_inject_poison(addr, n).await.is_err() {
                got.errno = Some("EINVAL".into());
                return got;
            }
        }
        if !notify {
            return got;
        }
        // An address-range scrub found it: memory_failure per page, from a kernel worker.
        let world = &self.fs.world;
        let holder = DaxfsHolder {
            fs: &self.fs,
            dax: &self.dax,
        };
        let ctx = MfContext { current: None };
        for (addr, n) in ranges {
            let (first, last) = (dev_pfn(world, addr), dev_pfn(world, addr + n - 1));
            for pfn in first..=last {
                if self.no_holder() {
                    memory_failure(p, world, pfn, 0, &ctx, &NoHolder, &self.dax).await;
                } else {
                    memory_failure(p, world, pfn, 0, &ctx, &holder, &self.dax).await;
                }
            }
        }
        got
    }
}

/// Statements that enter the file system (and get EIO once it has shut down).
fn is_file_op(op: &Op) -> bool {
    matches!(
        op,
        Op::Create { .. }
            | Op::Write { .. }
            | Op::Read { .. }
            | Op::Stat { .. }
            | Op::Truncate { .. }
            | Op::Fallocate { .. }
            | Op::Fsync { .. }
            | Op::Fdatasync { .. }
            | Op::Unlink { .. }
            | Op::Reflink { .. }
            | Op::Mmap { .. }
            | Op::DioRead { .. }
    )
}

/// The oracle of a reflink: byte `doff + i` of `to` (within its length) becomes byte `so + i`
/// of `from` (zero past its end), for `i < n`.
fn reflink_bytes(to: &mut FileBytes, from: &FileBytes, so: u64, n: u64, doff: u64) {
    let start = (doff as usize).min(to.len());
    let end = doff.saturating_add(n).min(to.len() as u64) as usize;
    let so = (so as usize).min(from.len());
    let avail = (from.len() - so).min(end - start);
    to.write(start, &from.range(so, so + avail));
    to.zero(start + avail, end - start - avail);
}

#[cfg(test)]
mod reflink_bytes_tests {
    use super::reflink_bytes;
    use crate::filebytes::FileBytes;

    /// The byte rule, one byte at a time: `to` as it is after reflinking `n` bytes of `from`
    /// at `so` to `doff`.
    fn by_the_rule(to: &[u8], from: &[u8], so: u64, n: u64, doff: u64) -> Vec<u8> {
        let mut want = to.to_vec();
        for i in 0..n {
            let (a, b) = ((so + i) as usize, (doff + i) as usize);
            if b < want.len() {
                want[b] = from.get(a).copied().unwrap_or(0);
            }
        }
        want
    }

    /// The page-wise copy is the byte-by-byte rule on every small case (ranges inside, across
    /// and past either end of both files), and on ranges across the pages of larger files.
    #[test]
    fn the_reflink_oracle_copy_is_the_byte_rule() {
        let from: Vec<u8> = (1..=20).collect();
        for to_len in [0usize, 5, 20, 33] {
            for so in 0..24u64 {
                for n in 0..26u64 {
                    for doff in 0..36u64 {
                        let to: Vec<u8> = (100..100 + to_len as u8).collect();
                        let want = by_the_rule(&to, &from, so, n, doff);
                        let mut got = FileBytes::from_slice(&to);
                        reflink_bytes(&mut got, &FileBytes::from_slice(&from), so, n, doff);
                        assert_eq!(got.to_vec(), want, "to {to_len} so {so} n {n} doff {doff}");
                    }
                }
            }
        }
        let from: Vec<u8> = (0..9000u32).map(|i| (i % 253) as u8 + 1).collect();
        let to = vec![0xeeu8; 12_000];
        for so in [0u64, 1, 4095, 4096, 8999, 9000] {
            for n in [1u64, 4096, 5000, 20_000] {
                for doff in [0u64, 3, 4096, 8191, 11_999, 12_000] {
                    let want = by_the_rule(&to, &from, so, n, doff);
                    let mut got = FileBytes::from_slice(&to);
                    reflink_bytes(&mut got, &FileBytes::from_slice(&from), so, n, doff);
                    assert_eq!(got.to_vec(), want, "so {so} n {n} doff {doff}");
                }
            }
        }
    }
}
