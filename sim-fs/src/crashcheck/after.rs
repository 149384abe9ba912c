//! The `after-crash` section: remount (journal recovery), fsck, the file contents read back as
//! the new data oracle, then the section's statements, in file order, on one task (the format's
//! "single thread": each statement runs in its thread's process, one after the other).
//!
//! `pmsim run` gets here after a clean unmount and shutdown ([`clean_shutdown_and_after_crash`]:
//! the shutdown writes every cache line back, so the image is what loads saw, and the content
//! read back must equal the oracle's); crashcheck gets here on a fresh machine whose pmem is a
//! crash image ([`after_crash`] with no expected contents).

use crate::filebytes::FileBytes;
use crate::fs::Daxfs;
use crate::runner::{Ctx, PMEM_BASE_PFN, User, fail, meets};
use sim_core::PmemPlatform;
use sim_core::platform::{Platform, WaitQueue};
use sim_core::sim::SimPlatform;
use sim_core::trace::{Op, Trace};
use sim_mm::dax::{BugSet, Dax};
use sim_mm::signal::create_process;
use sim_mm::world::{MmConfig, MmWorld};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

type P = SimPlatform;
const PAGE: u64 = 4096;

/// `pmsim run`: unmount cleanly, shut down (nothing lost), remount and run the section.
pub(crate) async fn clean_shutdown_and_after_crash(
    p: &P,
    ctx: &Ctx,
    trace: &Trace,
    pmem: u64,
    bugs: BugSet,
) {
    let names = {
        let ns = ctx.fs.lock_ns(p).await;
        let names = ns.names.clone();
        drop(ns);
        names
    };
    let expected: BTreeMap<String, Arc<FileBytes>> = {
        let u = ctx.user.lock().unwrap_or_else(|e| e.into_inner());
        names
            .iter()
            .filter_map(|(n, i)| u.files.get(i).map(|c| (n.clone(), c.clone())))
            .collect()
    };
    if let Err(e) = ctx.fs.unmount(p).await {
        fail(p, "after-crash", format!("the clean unmount failed: {e}")).await;
        return;
    }
    after_crash(p, trace, pmem, bugs, Some(&expected)).await;
}

/// Remount the device, fsck it, and run the `after-crash` statements. With `expected` (a clean
/// shutdown), every file must read back as the oracle says.
pub(crate) async fn after_crash(
    p: &P,
    trace: &Trace,
    pmem: u64,
    bugs: BugSet,
    expected: Option<&BTreeMap<String, Arc<FileBytes>>>,
) {
    let npages = pmem / PAGE;
    let world = Arc::new(MmWorld::new(p, PMEM_BASE_PFN, npages, MmConfig::default()));
    let fs = match Daxfs::mount(p, pmem, world.clone()).await {
        Ok(fs) => fs,
        Err(e) => {
            fail(p, "after-crash-mount", format!("the remount failed: {e}")).await;
            return;
        }
    };
    let r = Daxfs::<P>::fsck_media(p, pmem).await;
    if !r.is_clean() {
        fail(
            p,
            "fsck",
            format!("fsck after the remount: {}", r.to_string().trim_end()),
        )
        .await;
        return;
    }
    // The files as the media holds them: the oracle of the section's loads.
    let inodes: Vec<(String, Arc<crate::Inode<P>>)> = {
        let ns = fs.lock_ns(p).await;
        let v = ns
            .names
            .iter()
            .filter_map(|(n, i)| ns.inodes.get(i).map(|x| (n.clone(), x.clone())))
            .collect();
        drop(ns);
        v
    };
    let bs = fs.geo.blocksize;
    let mut files = BTreeMap::new();
    for (name, inode) in &inodes {
        let (size, extents) = {
            let g = fs.ilock(p, inode).await;
            let v = (g.disk.size, g.disk.extents.clone());
            drop(g);
            v
        };
        let mut c = vec![0u8; size as usize];
        for (&fb, e) in &extents {
            let (s, t) = (fb * bs, ((fb + e.len) * bs).min(size));
            if e.unwritten || s >= t {
                continue;
            }
            if let Err(err) = p
                .pmem_load(fs.geo.addr(e.dev), &mut c[s as usize..t as usize])
                .await
            {
                fail(
                    p,
                    "after-crash",
                    format!("reading {name} after the remount: {err}"),
                )
                .await;
                return;
            }
        }
        if let Some(exp) = expected {
            match exp.get(name) {
                Some(want) if !want.eq_bytes(&c) => {
                    let want = want.to_vec();
                    let i = want.iter().zip(&c).position(|(a, b)| a != b);
                    let msg = match i {
                        Some(i) => format!(
                            "{name}: byte {i:#x} reads {:#04x} after the clean shutdown and \
                             remount, but the execution left {:#04x}",
                            c[i], want[i]
                        ),
                        None => format!(
                            "{name}: {} bytes after the clean shutdown and remount, but the \
                             execution left {}",
                            c.len(),
                            want.len()
                        ),
                    };
                    fail(p, "after-crash-data", msg).await;
                    return;
                }
                _ => {}
            }
        }
        files.insert(inode.ino, Arc::new(FileBytes::from_slice(&c)));
    }
    if let Some(exp) = expected
        && let Some(missing) = exp.keys().find(|n| !inodes.iter().any(|(m, _)| m == *n))
    {
        fail(
            p,
            "after-crash-data",
            format!("{missing} is missing after the clean shutdown and remount"),
        )
        .await;
        return;
    }
    let Some(ac) = &trace.after_crash else {
        return;
    };
    // The processes of the section's threads, all run by this task.
    let me = p.current_task();
    let mut mms = BTreeMap::new();
    for s in &ac.statements {
        let proc = trace.header.process_of(&s.thread).to_string();
        if let std::collections::btree_map::Entry::Vacant(e) = mms.entry(proc) {
            let (_, mm) = create_process(p, &world, e.key(), &[me]).await;
            e.insert(mm);
        }
    }
    let ctx = Ctx {
        dax: Dax::new(p, world, bugs),
        fs,
        mms,
        npages,
        user: Mutex::new(User {
            files,
            ..User::default()
        }),
        names_wq: WaitQueue::new(p, "trace_mapping_names"),
        crash: None,
        file_inos: Vec::new(),
        mf: crate::runner::mf::MfState::new(trace),
    };
    for s in &ac.statements {
        p.set_line(s.pos.line);
        let proc = trace.header.process_of(&s.thread).to_string();
        let got = ctx.execute(p, &proc, s).await;
        let expect = s.expect.as_ref().map(|e| &e.expect);
        let len = match &s.op {
            Op::Load { len, .. } | Op::Read { len, .. } => *len,
            _ => 0,
        };
        if !meets(expect, &got, len) {
            fail(
                p,
                "trace-expectation",
                format!(
                    "after-crash: thread {}, line {}: `{}` expected {}, got {}",
                    s.thread,
                    s.pos.line,
                    s,
                    expect.map_or("success".to_string(), |e| e.to_string()),
                    got.describe()
                ),
            )
            .await;
        }
    }
}
