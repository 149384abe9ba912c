//! Persistency state under the x86 persistency model (Px86; Raad et al., POPL'20, as summarised
//! in crash_checkers.md section 3).
//!
//! Stores become globally visible when they execute (the executor interleaves whole operations,
//! so store buffers are not modelled). What is not yet *durable* is kept per cache line as the
//! ordered sequence of stores to that line since its last durable state, each with a snapshot
//! of the line after it. The durable state of a line is always a prefix of that sequence:
//! - any prefix, at any time, because a dirty line may be written back whenever the cache likes;
//! - at least the prefix a completed write-back made mandatory: a clwb/clflushopt records the
//!   line's last store and the issuing CPU's next sfence/mfence (or locked op) makes that prefix
//!   durable; an Intel clflush makes it durable at once; an eviction makes all of it durable;
//! - a non-temporal store joins the same per-line sequence and its CPU's next fence makes it,
//!   and so everything before it on that line, durable.
//!
//! Mandatory prefixes are folded into the durable snapshot as soon as they arise, so the
//! sequences hold only the stores a crash may or may not keep. Lines are independent of each
//! other: nothing orders the durability of stores to different lines except fences, and those
//! act by making prefixes mandatory.

use super::{LINE, Line};
use std::collections::BTreeMap;

/// One store (or the part of a store) to one line, not yet durable.
#[derive(Clone, Debug)]
pub(crate) struct PendingStore {
    /// Global store sequence number (visibility order).
    pub seq: u64,
    pub cpu: u32,
    /// Non-temporal (written through a write-combining buffer).
    pub nt: bool,
    /// The aligned 8-byte words of the line the store wrote: bit i = bytes 8i..8i+8.
    pub words: u8,
    /// The line after this store.
    pub after: Line,
}

#[derive(Clone, Debug)]
pub(crate) struct DirtyLine {
    /// The line as last made durable.
    pub durable: Line,
    /// Stores since, in order; never empty.
    pub stores: Vec<PendingStore>,
}

/// What a fence completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FlushKind {
    /// clwb or clflushopt: completed by sfence, mfence or a locked op.
    Opt,
    /// AMD clflush: completed by mfence or a locked op only.
    AmdClflush,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FenceKind {
    Sfence,
    /// mfence and locked read-modify-writes.
    Full,
}

#[derive(Clone, Debug, Default)]
struct CpuOutstanding {
    /// (line, last store covered, kind) of write-backs issued but not yet fenced.
    flushes: Vec<(u64, u64, FlushKind)>,
    /// (line, seq) of non-temporal stores not yet fenced.
    nt: Vec<(u64, u64)>,
}

#[derive(Debug)]
pub(crate) struct Persistency {
    pub lines: BTreeMap<u64, DirtyLine>,
    cpus: Vec<CpuOutstanding>,
    next_seq: u64,
    max_pending: usize,
    /// Store vectors of lines no longer pending, emptied, for the next lines that become
    /// pending (a run makes dozens of lines pending and durable again). Not state: a clone
    /// starts without any, and `clone_from` keeps its own.
    spare: Vec<Vec<PendingStore>>,
}

impl Clone for Persistency {
    fn clone(&self) -> Self {
        Persistency {
            lines: self.lines.clone(),
            cpus: self.cpus.clone(),
            next_seq: self.next_seq,
            max_pending: self.max_pending,
            spare: Vec::new(),
        }
    }

    fn clone_from(&mut self, src: &Self) {
        let spare = std::mem::take(&mut self.spare);
        let old = std::mem::replace(&mut self.lines, src.lines.clone());
        self.cpus.clone_from(&src.cpus);
        self.next_seq = src.next_seq;
        self.max_pending = src.max_pending;
        self.spare = spare;
        for (_, l) in old {
            self.recycle(l.stores);
        }
    }
}

/// Spare store vectors kept at most (a bound on the memory a burst of pending lines leaves).
const SPARE_STORE_VECS: usize = 256;

/// The mask of aligned 8-byte words touched by `len` bytes at offset `off` of a line.
pub(crate) fn word_mask(off: usize, len: usize) -> u8 {
    debug_assert!(len > 0 && off + len <= LINE);
    let first = off / 8;
    let last = (off + len - 1) / 8;
    ((0xffu16 << first) & (0xffu16 >> (7 - last))) as u8
}

impl Persistency {
    pub fn new(cpus: usize, max_pending: usize) -> Self {
        Persistency {
            lines: BTreeMap::new(),
            cpus: vec![CpuOutstanding::default(); cpus],
            next_seq: 1,
            max_pending: max_pending.max(1),
            spare: Vec::new(),
        }
    }

    fn recycle(&mut self, mut stores: Vec<PendingStore>) {
        if self.spare.len() < SPARE_STORE_VECS {
            stores.clear();
            self.spare.push(stores);
        }
    }

    /// Drop `line`'s pending stores (they became durable); whether it had any.
    fn remove_line(&mut self, line: u64) -> bool {
        match self.lines.remove(&line) {
            Some(l) => {
                self.recycle(l.stores);
                true
            }
            None => false,
        }
    }

    /// The sequence number the next store will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Records a store to `line` that changed it from `before` to `after`. With `durable_now`
    /// (a cached store under eADR) the line, and everything pending on it, is durable at once.
    #[allow(clippy::too_many_arguments)]
    pub fn store(
        &mut self,
        line: u64,
        cpu: usize,
        nt: bool,
        words: u8,
        before: &Line,
        after: &Line,
        durable_now: bool,
    ) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if durable_now {
            self.remove_line(line);
            return seq;
        }
        let spare = &mut self.spare;
        let entry = self.lines.entry(line).or_insert_with(|| DirtyLine {
            durable: *before,
            stores: spare.pop().unwrap_or_default(),
        });
        entry.stores.push(PendingStore {
            seq,
            cpu: cpu as u32,
            nt,
            words,
            after: *after,
        });
        if nt {
            self.cpus[cpu].nt.push((line, seq));
        }
        // Bound the history of one line: a line with this many unflushed stores is written
        // back, as a cache eviction may do at any time.
        if entry.stores.len() > self.max_pending {
            self.fold_all(line);
        }
        seq
    }

    /// clwb / clflushopt (and AMD clflush): the write-back covers the line's stores so far.
    pub fn flush_async(&mut self, cpu: usize, line: u64, kind: FlushKind) {
        if let Some(last) = self.lines.get(&line).and_then(|l| l.stores.last()) {
            self.cpus[cpu].flushes.push((line, last.seq, kind));
        }
    }

    /// sfence / mfence / locked op on `cpu`: its outstanding write-backs and non-temporal
    /// stores become durable.
    pub fn fence(&mut self, cpu: usize, kind: FenceKind) {
        let out = &mut self.cpus[cpu];
        let mut flushes = std::mem::take(&mut out.flushes);
        let nt = std::mem::take(&mut out.nt);
        flushes.retain(|&(line, upto, k)| {
            if kind == FenceKind::Sfence && k == FlushKind::AmdClflush {
                return true;
            }
            fold_upto(&mut self.lines, &mut self.spare, line, upto);
            false
        });
        for (line, seq) in nt {
            fold_upto(&mut self.lines, &mut self.spare, line, seq);
        }
        self.cpus[cpu].flushes = flushes;
    }

    /// Everything pending on `line` becomes durable (eviction, Intel clflush). Returns whether
    /// anything was pending.
    pub fn fold_all(&mut self, line: u64) -> bool {
        self.remove_line(line)
    }

    pub fn is_pending(&self, line: u64) -> bool {
        self.lines.contains_key(&line)
    }

    /// The lines `cpu`'s next fence may make durable: its outstanding write-backs and
    /// non-temporal stores (with repeats).
    pub fn outstanding_lines(&self, cpu: usize) -> impl Iterator<Item = u64> + '_ {
        let o = &self.cpus[cpu];
        o.flushes
            .iter()
            .map(|f| f.0)
            .chain(o.nt.iter().map(|n| n.0))
    }

    /// The line after its last pending store, if it has any.
    pub fn latest(&self, line: u64) -> Option<&Line> {
        self.lines
            .get(&line)
            .and_then(|l| l.stores.last())
            .map(|s| &s.after)
    }
}

/// Makes the stores of `line` up to sequence number `upto` durable.
fn fold_upto(
    lines: &mut BTreeMap<u64, DirtyLine>,
    spare: &mut Vec<Vec<PendingStore>>,
    line: u64,
    upto: u64,
) {
    let Some(l) = lines.get_mut(&line) else {
        return;
    };
    // Sequence numbers grow along a line, so the stores to fold are a prefix.
    debug_assert!(l.stores.windows(2).all(|w| w[0].seq < w[1].seq));
    let n = l.stores.partition_point(|s| s.seq <= upto);
    if n == 0 {
        return;
    }
    if n == l.stores.len() {
        if let Some(mut l) = lines.remove(&line)
            && spare.len() < SPARE_STORE_VECS
        {
            l.stores.clear();
            spare.push(l.stores);
        }
    } else {
        l.durable = l.stores[n - 1].after;
        l.stores.drain(..n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_masks() {
        assert_eq!(word_mask(0, 8), 0b1);
        assert_eq!(word_mask(0, 16), 0b11);
        assert_eq!(word_mask(6, 4), 0b11);
        assert_eq!(word_mask(56, 8), 0x80);
        assert_eq!(word_mask(0, 64), 0xff);
    }

    #[test]
    fn fence_folds_only_the_flushed_prefix() {
        let mut p = Persistency::new(2, 100);
        let z = [0u8; LINE];
        let one = [1u8; LINE];
        let two = [2u8; LINE];
        p.store(5, 0, false, 1, &z, &one, false);
        p.flush_async(0, 5, FlushKind::Opt);
        p.store(5, 0, false, 1, &one, &two, false);
        // A fence on another CPU completes nothing.
        p.fence(1, FenceKind::Full);
        assert_eq!(p.lines[&5].stores.len(), 2);
        p.fence(0, FenceKind::Sfence);
        assert_eq!(p.lines[&5].durable, one);
        assert_eq!(p.lines[&5].stores.len(), 1);
        assert!(p.fold_all(5));
        assert!(!p.is_pending(5));
    }
}
