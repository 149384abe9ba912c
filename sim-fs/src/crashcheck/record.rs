//! What a run tells crashcheck: the statements in flight, the file ranges each one may change,
//! the size and existence of each file at statement boundaries, and the durability promises
//! (what an operation that returned made durable).
//!
//! The trace runner calls [`Recorder::start`] before a statement and [`Recorder::done`] after
//! it, in the same step as the statement's first and last actions; the crashcheck driver reads
//! [`Recorder::snapshot`] between steps, at each crash point. Nothing here takes a scheduling
//! step or a model lock: a recorded run is the same run as an unrecorded one.
//!
//! Events are numbered by one counter (`seq`), incremented at every start and every done, so a
//! crash point, a promise and a file change can be ordered against each other.
//!
//! **Promises**, keyed on the statement kind and its result (only a statement that succeeded
//! promises anything):
//! - `fsync PATH`, `fdatasync PATH`: the file's content and size as the statement began;
//!   fsync also the inode's timestamps: a ctime at least the one the inode had when fsync
//!   read the log sequence to force (fdatasync promises no timestamp: XFS skips the log force
//!   for a timestamp-only change);
//! - `msync M [OFF LEN]` on a shared mapping: the mapped file range;
//! - `clwb`/`clflushopt`/`clflush` of a MAP_SYNC shared mapping, or an `ntstore` through one,
//!   followed by an `sfence`/`mfence` of the same thread: the range's content;
//! - a `store`, `ntstore` or write `fault` through a MAP_SYNC shared mapping: the pages it
//!   touched are allocated (the MAP_SYNC fault made the block allocation durable).
//!
//! A promised byte is checked only where no statement that changed it ended after the
//! promising statement began (or was in flight at the crash): such a byte may legitimately
//! hold a newer value, or a half-written one. Statements whose file range is not known (a
//! mapping not yet made) count as changing every file.

use crate::filebytes::FileBytes;
use crate::runner::{Ctx, Got};
use sim_core::sim::SimPlatform;
use sim_core::trace::{Access, MapOff, Op, PoisonTarget, Statement, Trace};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// A path standing for every file (a change whose file is not known).
pub const ANY_FILE: &str = "*";

/// A statement that may change bytes `lo..hi` of `path`, between events `start` and `end`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileWrite {
    pub path: String,
    pub lo: u64,
    pub hi: u64,
    pub start: u64,
    pub end: u64,
}

/// A file's existence and size after a statement (or in the header: `start == end == 0`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileState {
    pub path: String,
    pub start: u64,
    pub end: u64,
    pub exists: bool,
    /// `None` when the runner's oracle does not know the file.
    pub size: Option<u64>,
    /// The statement (trace line) that left it so; 0 for the header.
    pub line: u32,
}

/// What a promise promises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum PromiseKind {
    Fsync,
    Fdatasync,
    Msync,
    /// A user flush (or non-temporal store) on a MAP_SYNC mapping, then a fence.
    SyncFlush,
    /// A write fault through a MAP_SYNC mapping completed: the blocks are allocated.
    SyncFault,
}

impl PromiseKind {
    pub fn describe(self) -> &'static str {
        match self {
            PromiseKind::Fsync => "fsync returned",
            PromiseKind::Fdatasync => "fdatasync returned",
            PromiseKind::Msync => "msync returned",
            PromiseKind::SyncFlush => "a flush of a MAP_SYNC mapping was fenced",
            PromiseKind::SyncFault => "a MAP_SYNC write fault completed",
        }
    }
}

/// Something made durable.
#[derive(Clone, Debug)]
pub struct Promise {
    pub kind: PromiseKind,
    pub thread: String,
    /// The trace line of the statement that made the promise (the fence for `SyncFlush`).
    pub line: u32,
    /// The line of the statement whose data it covers (the flush for `SyncFlush`).
    pub data_line: u32,
    pub path: String,
    pub lo: u64,
    pub hi: u64,
    /// The bytes `lo..hi` (clipped to the file's size then); `None` for `SyncFault`.
    pub content: Option<Vec<u8>>,
    /// The file size promised (fsync, fdatasync).
    pub size: Option<u64>,
    /// The least inode ctime promised (fsync).
    pub ctime: Option<u64>,
    /// The event at which the covering statement began: changes that ended after it make a
    /// byte ambiguous.
    pub since: u64,
    /// The event at which the promise holds.
    pub made: u64,
    /// The start event of the statement whose own change the promise covers (not ambiguous).
    pub own: u64,
}

/// A statement in flight.
#[derive(Clone, Debug)]
pub struct OpenStmt {
    pub thread: String,
    pub line: u32,
    pub start: u64,
    /// (path, lo, hi) it may change.
    pub writes: Vec<(String, u64, u64)>,
}

/// The recorder's state at a crash point.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub seq: u64,
    pub open: Vec<OpenStmt>,
    /// Statements completed.
    pub done: usize,
    /// Durability promises made so far (a point after a new promise is a new point even when
    /// the persistency state is the same: the oracle asks more of it).
    pub promises: usize,
}

/// Everything a run recorded (read after the run).
#[derive(Clone, Debug, Default)]
pub struct RunLog {
    pub writes: Vec<FileWrite>,
    pub promises: Vec<Promise>,
    pub history: Vec<FileState>,
    /// Statement lines by start event, for witnesses.
    pub statements: Vec<(u64, String, u32)>,
}

#[derive(Default)]
struct State {
    seq: u64,
    done: usize,
    open: BTreeMap<String, OpenStmt>,
    log: RunLog,
    /// Per thread: flushes of MAP_SYNC mappings waiting for the thread's next fence.
    pending: BTreeMap<String, Vec<Promise>>,
    /// (process, mapping name) -> MAP_SYNC.
    sync_maps: BTreeMap<(String, String), bool>,
    /// Inode number -> path.
    paths: BTreeMap<u64, String>,
}

/// The recorder a [`crate::runner::TraceRunner`] fills when crashcheck runs it.
pub struct Recorder {
    header: Vec<(String, u64)>,
    st: Mutex<State>,
}

impl Recorder {
    pub fn new(trace: &Trace) -> Recorder {
        Recorder {
            header: trace
                .header
                .files
                .iter()
                .map(|f| (f.path.clone(), f.size))
                .collect(),
            st: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new run: forget the last one, learn the header files' inode numbers (between steps,
    /// from the runner's setup).
    pub(crate) fn attach(&self, p: &SimPlatform, ctx: &Ctx) {
        let names = ctx.fs.ns.peek(p, |ns| ns.names.clone()).unwrap_or_default();
        let mut st = self.lock();
        *st = State::default();
        for (path, ino) in names {
            st.paths.insert(ino, path);
        }
        for (path, size) in &self.header {
            st.log.history.push(FileState {
                path: path.clone(),
                start: 0,
                end: 0,
                exists: true,
                size: Some(*size),
                line: 0,
            });
        }
    }

    /// The file range a mapping access touches: (path, lo, hi, MAP_SYNC); `None` for a private
    /// mapping; `ANY_FILE` when the mapping is not made yet.
    fn map_range(
        st: &State,
        ctx: &Ctx,
        proc: &str,
        at: &MapOff,
        len: u64,
    ) -> Option<(String, u64, u64, bool)> {
        let u = ctx.user.lock().unwrap_or_else(|e| e.into_inner());
        let Some(m) = u.maps.get(proc).and_then(|m| m.get(&at.map)) else {
            return Some((ANY_FILE.into(), 0, u64::MAX, false));
        };
        if !m.shared {
            return None;
        }
        let path = st
            .paths
            .get(&m.ino)
            .cloned()
            .unwrap_or_else(|| ANY_FILE.into());
        let sync = st
            .sync_maps
            .get(&(proc.to_string(), at.map.clone()))
            .copied()
            .unwrap_or(false);
        let lo = m.file_off + at.off;
        Some((path, lo, lo.saturating_add(len), sync))
    }

    /// What `s` may change (at its start).
    fn writes_of(st: &State, ctx: &Ctx, proc: &str, s: &Statement) -> Vec<(String, u64, u64)> {
        let whole = |p: &str| vec![(p.to_string(), 0, u64::MAX)];
        match &s.op {
            Op::Store { at, len, .. } | Op::Ntstore { at, len, .. } => {
                Self::map_range(st, ctx, proc, at, *len)
                    .map(|(p, lo, hi, _)| vec![(p, lo, hi)])
                    .unwrap_or_default()
            }
            Op::DioRead { into, len, .. } => Self::map_range(st, ctx, proc, into, *len)
                .map(|(p, lo, hi, _)| vec![(p, lo, hi)])
                .unwrap_or_default(),
            Op::Write { path, off, len, .. } => {
                vec![(path.clone(), *off, off.saturating_add(*len))]
            }
            Op::Truncate { path, .. } | Op::Unlink { path } => whole(path),
            Op::Fallocate { path, off, .. } => vec![(path.clone(), *off, u64::MAX)],
            Op::Reflink { dst, .. } => whole(dst),
            Op::Poison { target, len, .. } => match target {
                PoisonTarget::File { path, off } => vec![(
                    path.clone(),
                    *off,
                    len.map_or(u64::MAX, |l| off.saturating_add(l)),
                )],
                PoisonTarget::Pmem { .. } => whole(ANY_FILE),
            },
            // Reads, flushes, fences, faults (a fault allocates zeroed blocks: the content the
            // file already reads), mappings, sleeps: no file content changes.
            _ => Vec::new(),
        }
    }

    /// Statement `s` of `proc` begins.
    pub(crate) fn start(&self, ctx: &Ctx, proc: &str, s: &Statement) {
        let mut st = self.lock();
        st.seq += 1;
        let writes = Self::writes_of(&st, ctx, proc, s);
        let start = st.seq;
        st.log
            .statements
            .push((start, s.thread.clone(), s.pos.line));
        st.open.insert(
            s.thread.clone(),
            OpenStmt {
                thread: s.thread.clone(),
                line: s.pos.line,
                start,
                writes,
            },
        );
    }

    /// Statement `s` of `proc` completed with `got`: close it, record the file states it
    /// left and the promises it made.
    pub(crate) fn done(&self, ctx: &Ctx, proc: &str, s: &Statement, got: &Got) {
        let mut st = self.lock();
        st.seq += 1;
        st.done += 1;
        let end = st.seq;
        let Some(open) = st.open.remove(&s.thread) else {
            return;
        };
        let start = open.start;
        for (path, lo, hi) in &open.writes {
            st.log.writes.push(FileWrite {
                path: path.clone(),
                lo: *lo,
                hi: *hi,
                start,
                end,
            });
        }
        let ok = !got.failed();
        let thread = s.thread.clone();
        let line = s.pos.line;
        // The oracle's content of `path` (by the inode number the recorder knows).
        let oracle = |st: &State, path: &str| -> Option<std::sync::Arc<FileBytes>> {
            let ino = st.paths.iter().find(|(_, p)| *p == path).map(|(i, _)| *i)?;
            let u = ctx.user.lock().unwrap_or_else(|e| e.into_inner());
            u.files.get(&ino).cloned()
        };
        let state = |st: &State, path: &str, exists: bool| FileState {
            path: path.to_string(),
            start,
            end,
            exists,
            size: if exists {
                oracle(st, path).map(|c| c.len() as u64)
            } else {
                Some(0)
            },
            line,
        };
        match &s.op {
            Op::Create { path } if ok => {
                // The new inode: the one the oracle knows and the recorder does not.
                let new = {
                    let u = ctx.user.lock().unwrap_or_else(|e| e.into_inner());
                    u.files.keys().find(|i| !st.paths.contains_key(i)).copied()
                };
                if let Some(ino) = new {
                    st.paths.insert(ino, path.clone());
                }
                // A file the header does not make: absent before the run.
                if !st.log.history.iter().any(|f| f.path == *path) {
                    st.log.history.push(FileState {
                        path: path.clone(),
                        start: 0,
                        end: 0,
                        exists: false,
                        size: Some(0),
                        line: 0,
                    });
                }
                let f = state(&st, path, true);
                st.log.history.push(f);
            }
            Op::Unlink { path } if ok => {
                st.paths.retain(|_, p| p != path);
                let f = state(&st, path, false);
                st.log.history.push(f);
            }
            Op::Write { path, .. } | Op::Truncate { path, .. } | Op::Fallocate { path, .. } => {
                let f = state(&st, path, true);
                st.log.history.push(f);
            }
            Op::Reflink { dst, .. } => {
                let f = state(&st, dst, true);
                st.log.history.push(f);
            }
            Op::Mmap { name, sync, .. } if ok => {
                st.sync_maps.insert((proc.to_string(), name.clone()), *sync);
            }
            Op::Fsync { path } | Op::Fdatasync { path } if ok => {
                if let Some(c) = oracle(&st, path) {
                    let kind = if matches!(s.op, Op::Fsync { .. }) {
                        PromiseKind::Fsync
                    } else {
                        PromiseKind::Fdatasync
                    };
                    st.log.promises.push(Promise {
                        kind,
                        thread,
                        line,
                        data_line: line,
                        path: path.clone(),
                        lo: 0,
                        hi: c.len() as u64,
                        content: Some(c.to_vec()),
                        size: Some(c.len() as u64),
                        ctime: got.synced_ctime,
                        since: start,
                        made: end,
                        own: start,
                    });
                }
            }
            Op::Msync { map, range } if ok => {
                let (off, len) = match range {
                    Some(r) => (r.off, r.len),
                    None => {
                        let u = ctx.user.lock().unwrap_or_else(|e| e.into_inner());
                        let l = u.maps.get(proc).and_then(|m| m.get(map)).map(|m| m.len);
                        (0, l.unwrap_or(0))
                    }
                };
                let at = MapOff {
                    map: map.clone(),
                    off,
                };
                if let Some((path, lo, hi, _)) = Self::map_range(&st, ctx, proc, &at, len)
                    && path != ANY_FILE
                    && let Some(c) = oracle(&st, &path)
                {
                    let (clo, chi) = clip(lo, hi, c.len() as u64);
                    st.log.promises.push(Promise {
                        kind: PromiseKind::Msync,
                        thread,
                        line,
                        data_line: line,
                        path,
                        lo: clo,
                        hi: chi,
                        content: Some(c.range(clo as usize, chi as usize).into_owned()),
                        size: None,
                        ctime: None,
                        since: start,
                        made: end,
                        own: start,
                    });
                }
            }
            Op::Clwb { at, len }
            | Op::Clflushopt { at, len }
            | Op::Clflush { at, len }
            | Op::Ntstore { at, len, .. }
                if ok =>
            {
                if let Some((path, lo, hi, true)) = Self::map_range(&st, ctx, proc, at, *len)
                    && path != ANY_FILE
                    && let Some(c) = oracle(&st, &path)
                {
                    let (clo, chi) = clip(lo, hi, c.len() as u64);
                    let p = Promise {
                        kind: PromiseKind::SyncFlush,
                        thread: thread.clone(),
                        line,
                        data_line: line,
                        path: path.clone(),
                        lo: clo,
                        hi: chi,
                        content: Some(c.range(clo as usize, chi as usize).into_owned()),
                        size: None,
                        ctime: None,
                        since: start,
                        made: end,
                        own: start,
                    };
                    st.pending.entry(thread.clone()).or_default().push(p);
                }
                if matches!(s.op, Op::Ntstore { .. }) {
                    self.sync_fault(&mut st, ctx, proc, at, *len, &thread, line, start, end);
                }
            }
            Op::Store { at, len, .. } if ok => {
                self.sync_fault(&mut st, ctx, proc, at, *len, &thread, line, start, end);
            }
            Op::Fault {
                at,
                access: Access::Write,
                ..
            } if ok => {
                self.sync_fault(&mut st, ctx, proc, at, 1, &thread, line, start, end);
            }
            Op::Sfence | Op::Mfence => {
                let pending = st.pending.remove(&thread).unwrap_or_default();
                for mut p in pending {
                    p.line = line;
                    p.made = end;
                    st.log.promises.push(p);
                }
            }
            _ => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn sync_fault(
        &self,
        st: &mut State,
        ctx: &Ctx,
        proc: &str,
        at: &MapOff,
        len: u64,
        thread: &str,
        line: u32,
        start: u64,
        end: u64,
    ) {
        if let Some((path, lo, hi, true)) = Self::map_range(st, ctx, proc, at, len)
            && path != ANY_FILE
        {
            st.log.promises.push(Promise {
                kind: PromiseKind::SyncFault,
                thread: thread.to_string(),
                line,
                data_line: line,
                path,
                lo,
                hi,
                content: None,
                size: None,
                ctime: None,
                since: start,
                made: end,
                own: start,
            });
        }
    }

    /// The state at a crash point (between steps).
    pub fn snapshot(&self) -> Snapshot {
        let st = self.lock();
        Snapshot {
            seq: st.seq,
            open: st.open.values().cloned().collect(),
            done: st.done,
            promises: st.log.promises.len(),
        }
    }

    /// What the run recorded.
    pub fn log(&self) -> RunLog {
        self.lock().log.clone()
    }
}

fn clip(lo: u64, hi: u64, size: u64) -> (u64, u64) {
    let hi = hi.min(size);
    (lo.min(hi), hi)
}

impl RunLog {
    /// Whether byte `b` of `path` may hold something else than promise `p` recorded, at a
    /// crash point with state `snap`: a change to it ended after the promise's statement
    /// began (and before the crash), or one is in flight.
    pub fn ambiguous(&self, p: &Promise, snap: &Snapshot, b: u64) -> bool {
        let hits = |path: &str, lo: u64, hi: u64| {
            (path == p.path || path == ANY_FILE) && lo <= b && b < hi
        };
        self.writes.iter().any(|w| {
            w.start != p.own && w.end > p.since && w.end <= snap.seq && hits(&w.path, w.lo, w.hi)
        }) || snap
            .open
            .iter()
            .any(|o| o.writes.iter().any(|(path, lo, hi)| hits(path, *lo, *hi)))
    }

    /// The ranges of promise `p` no change made ambiguous (see [`RunLog::ambiguous`]), in
    /// order.
    pub fn firm_ranges(&self, p: &Promise, snap: &Snapshot) -> Vec<(u64, u64)> {
        let on = |path: &str| path == p.path || path == ANY_FILE;
        let mut cut: Vec<(u64, u64)> = self
            .writes
            .iter()
            .filter(|w| w.start != p.own && w.end > p.since && w.end <= snap.seq && on(&w.path))
            .map(|w| (w.lo, w.hi))
            .chain(snap.open.iter().flat_map(|o| {
                o.writes
                    .iter()
                    .filter(|(path, _, _)| on(path))
                    .map(|(_, lo, hi)| (*lo, *hi))
            }))
            .collect();
        cut.sort_unstable();
        let mut out = Vec::new();
        let mut at = p.lo;
        for (lo, hi) in cut {
            if at >= p.hi {
                break;
            }
            if lo > at {
                out.push((at, lo.min(p.hi)));
            }
            at = at.max(hi);
        }
        if at < p.hi {
            out.push((at, p.hi));
        }
        out
    }

    /// The states `path` may be found in after a crash at `snap`: the last one before the
    /// latest promise of its size (or the header's), every later completed one, and those
    /// of statements in flight. `None` when the file is not followed (or a state is unknown).
    pub fn allowed_states(&self, path: &str, snap: &Snapshot) -> Option<Vec<&FileState>> {
        let hist: Vec<&FileState> = self.history.iter().filter(|f| f.path == path).collect();
        if hist.is_empty() {
            return None;
        }
        // The latest fsync/fdatasync of the file made before the crash point pins the state
        // as its statement began.
        let pinned_since = self
            .promises
            .iter()
            .filter(|p| p.path == path && p.size.is_some() && p.made <= snap.seq)
            .map(|p| p.since)
            .max();
        let first = match pinned_since {
            Some(since) => hist.iter().rposition(|f| f.end <= since).unwrap_or(0),
            None => 0,
        };
        let open: Vec<u64> = snap.open.iter().map(|o| o.start).collect();
        let out: Vec<&FileState> = hist[first..]
            .iter()
            .copied()
            .filter(|f| f.end <= snap.seq || open.contains(&f.start))
            .collect();
        if out.iter().any(|f| f.size.is_none()) {
            return None;
        }
        Some(out)
    }

    /// Whether `p`'s path was unlinked by a statement that ended after `p`'s statement began
    /// and began before the crash point `snap` (its name may now be another inode's).
    pub fn unlinked_since(&self, p: &Promise, snap: &Snapshot) -> bool {
        self.history
            .iter()
            .any(|f| f.path == p.path && !f.exists && f.end > p.since && f.start <= snap.seq)
    }

    /// The thread and line of the statement that began at event `start`.
    pub fn statement_at(&self, start: u64) -> Option<(&str, u32)> {
        self.statements
            .iter()
            .find(|(s, _, _)| *s == start)
            .map(|(_, t, l)| (t.as_str(), *l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn promise(since: u64, made: u64, own: u64) -> Promise {
        Promise {
            kind: PromiseKind::Fsync,
            thread: "t".into(),
            line: 9,
            data_line: 9,
            path: "/f".into(),
            lo: 0,
            hi: 100,
            content: Some(vec![0; 100]),
            size: Some(100),
            ctime: None,
            since,
            made,
            own,
        }
    }

    fn write(path: &str, lo: u64, hi: u64, start: u64, end: u64) -> FileWrite {
        FileWrite {
            path: path.into(),
            lo,
            hi,
            start,
            end,
        }
    }

    fn state(start: u64, end: u64, exists: bool, size: u64, line: u32) -> FileState {
        FileState {
            path: "/f".into(),
            start,
            end,
            exists,
            size: Some(size),
            line,
        }
    }

    fn snap(seq: u64, open: Vec<OpenStmt>) -> Snapshot {
        Snapshot {
            seq,
            open,
            done: 0,
            promises: 0,
        }
    }

    #[test]
    fn changes_before_the_promise_are_covered_later_ones_are_ambiguous() {
        let p = promise(10, 11, 10);
        let log = RunLog {
            writes: vec![
                // Ended before the fsync began: covered by it.
                write("/f", 0, 10, 1, 2),
                // Ended while the fsync ran (it was in flight when the fsync began).
                write("/f", 20, 30, 9, 11),
                // After the fsync, before the crash.
                write("/f", 40, 50, 12, 13),
                // After the crash point: not yet.
                write("/f", 60, 70, 20, 21),
                // Another file.
                write("/g", 80, 90, 12, 13),
            ],
            promises: vec![p.clone()],
            ..RunLog::default()
        };
        let s = snap(
            15,
            vec![OpenStmt {
                thread: "u".into(),
                line: 3,
                start: 14,
                writes: vec![("/f".into(), 95, 97)],
            }],
        );
        assert_eq!(
            log.firm_ranges(&p, &s),
            vec![(0, 20), (30, 40), (50, 95), (97, 100)]
        );
        assert!(!log.ambiguous(&p, &s, 5));
        assert!(log.ambiguous(&p, &s, 25));
        assert!(log.ambiguous(&p, &s, 45));
        assert!(!log.ambiguous(&p, &s, 65));
        assert!(log.ambiguous(&p, &s, 96));
        // A change to every file (a mapping not known yet) covers everything.
        let log2 = RunLog {
            writes: vec![write(ANY_FILE, 0, u64::MAX, 12, 13)],
            ..RunLog::default()
        };
        assert!(log2.firm_ranges(&p, &s).is_empty());
    }

    #[test]
    fn allowed_states_start_at_the_last_fsync_and_include_operations_in_flight() {
        let mut log = RunLog {
            history: vec![
                state(0, 0, true, 100, 0),
                state(2, 3, true, 200, 5),
                state(6, 7, true, 300, 6),
                // In flight at the crash (ends after it).
                state(8, 20, true, 50, 7),
                // Started after the crash.
                state(30, 31, false, 0, 8),
            ],
            ..RunLog::default()
        };
        let open = vec![OpenStmt {
            thread: "t".into(),
            line: 7,
            start: 8,
            writes: vec![],
        }];
        let s = snap(10, open);
        let sizes = |log: &RunLog| -> Vec<u64> {
            log.allowed_states("/f", &s)
                .unwrap()
                .iter()
                .map(|f| f.size.unwrap())
                .collect()
        };
        assert_eq!(sizes(&log), vec![100, 200, 300, 50]);
        // An fsync that began at event 4 pins the state then (size 200) and drops the older.
        log.promises.push(promise(4, 5, 4));
        assert_eq!(sizes(&log), vec![200, 300, 50]);
        assert!(log.allowed_states("/nope", &s).is_none());
    }
}
