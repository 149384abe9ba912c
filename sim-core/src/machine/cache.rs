//! The last-level cache: one shared, set-associative, least-recently-used cache of 64-byte lines.
//! It decides load hits, store misses (read for ownership) and capacity evictions, which write
//! a dirty line back: that is how a line becomes durable without any flush. Private L1/L2 caches
//! and coherence traffic are not modelled.
//!
//! The cache is sparse: a set's ways are allocated the first time a line is filled into it, so
//! a machine with a 32 MiB cache costs nothing until it is used and clones in time proportional
//! to the sets touched. A set never filled behaves exactly as a set of empty ways.

use std::cell::RefCell;

/// Sets per page of the set index (see [`Llc::index`]).
const INDEX_PAGE: usize = 1024;
/// An index entry for a set never filled.
const NO_SLOT: u32 = u32::MAX;

thread_local! {
    /// The way table of the thread's last dropped cache, emptied, for the next cache built
    /// (a search builds one machine per run, and each run fills thousands of sets). Only the
    /// capacity carries over (invariant: empty whenever it is stored).
    static SPARE_LINES: RefCell<Vec<Way>> = const { RefCell::new(Vec::new()) };
}

/// A line pushed out of the cache to make room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Victim {
    pub line: u64,
    pub dirty: bool,
}

/// One way of a set.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
struct Way {
    /// `line + 1`; 0 marks an empty way.
    tag: u64,
    /// Last-use stamp, for LRU.
    stamp: u64,
    /// Time (ps) at which the line is owned by the cache (its fill or RFO completes).
    ready: u64,
    dirty: bool,
}

pub(crate) struct Llc {
    sets: u64,
    ways: usize,
    /// Set number -> its slot, for the sets filled at least once, in pages of `INDEX_PAGE`
    /// sets allocated on first use (`NO_SLOT`: never filled). Invariant: every slot is named
    /// by exactly one set, and the sets named number `clocks.len()`.
    index: Vec<Option<Box<[u32; INDEX_PAGE]>>>,
    /// Per slot, `ways` ways; a way handle is an index into this vector.
    lines: Vec<Way>,
    /// Per slot, the last stamp given: LRU compares stamps only within a set, so each set has
    /// its own clock and accesses to different sets commute exactly (`sim` "Footprints").
    clocks: Vec<u64>,
    /// What changed since this cache was cloned from (or restored to) another: see
    /// [`Llc::restore_from`].
    lineage: Lineage,
}

/// A cache's identity, and its changes since it was copied from a source cache.
#[derive(Default)]
struct Lineage {
    /// This cache's identity (unique in the process) and its count of changes.
    id: u64,
    version: u64,
    /// The source's identity and change count when this cache was copied from it.
    base: Option<(u64, u64)>,
    /// The slots the source had; the slots at or past it were added here.
    base_slots: usize,
    /// The source's ways changed here (each once; a way handle, see [`Llc::lines`]), and a bit
    /// per way of the source's slots marking them. A slot's clock changes only with one of
    /// its ways (a stamp given), so the changed ways name the changed clocks too.
    changed: Vec<u32>,
    marks: Vec<u64>,
    /// The sets given the slots added here.
    new_sets: Vec<u32>,
}

/// The next cache identity: process-wide, since a recorded machine is shared by the threads
/// of a search and a thread's spare machine may come from another search.
static NEXT_LLC_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_llc_id() -> u64 {
    NEXT_LLC_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Lineage {
    fn of(id: u64, src: &Llc) -> Lineage {
        Lineage {
            id,
            version: 0,
            base: Some((src.lineage.id, src.lineage.version)),
            base_slots: src.clocks.len(),
            changed: Vec::new(),
            marks: vec![0; src.lines.len().div_ceil(64)],
            new_sets: Vec::new(),
        }
    }
}

impl Llc {
    /// `bytes == 0` gives a cache that holds nothing.
    pub fn new(bytes: u64, ways: u32) -> Self {
        let ways = ways.max(1) as usize;
        let lines = (bytes / 64) as usize;
        let sets = (lines / ways) as u64;
        Llc {
            sets,
            ways,
            index: vec![None; (sets as usize).div_ceil(INDEX_PAGE)],
            lines: SPARE_LINES
                .with(|l| l.try_borrow_mut().map(|mut l| std::mem::take(&mut *l)))
                .unwrap_or_default(),
            clocks: Vec::new(),
            lineage: Lineage {
                id: next_llc_id(),
                ..Lineage::default()
            },
        }
    }

    /// Record a change of `way` (every change of a way, and of its slot's clock, goes through
    /// here).
    fn changed(&mut self, way: usize) {
        let l = &mut self.lineage;
        l.version += 1;
        if way < l.base_slots * self.ways {
            let (w, b) = (way / 64, 1u64 << (way % 64));
            if l.marks[w] & b == 0 {
                l.marks[w] |= b;
                l.changed.push(way as u32);
            }
        }
    }

    /// Make this cache equal to `src`. When this cache was cloned from (or restored to) `src`
    /// and `src` has not changed since, only the ways changed here are copied back and the
    /// slots added here dropped (a search restores the machine after its setup on every run,
    /// and a run changes a few sets of thousands); otherwise this is a clone.
    pub fn restore_from(&mut self, src: &Llc) {
        let same_source = self.lineage.base == Some((src.lineage.id, src.lineage.version))
            && self.sets == src.sets
            && self.ways == src.ways;
        if !same_source {
            *self = src.clone();
            return;
        }
        let l = &mut self.lineage;
        for &way in &l.changed {
            let way = way as usize;
            let slot = way / self.ways;
            self.lines[way] = src.lines[way];
            self.clocks[slot] = src.clocks[slot];
            l.marks[way / 64] = 0;
        }
        l.changed.clear();
        for &set in &l.new_sets {
            let set = set as usize;
            if let Some(page) = self.index[set / INDEX_PAGE].as_mut() {
                page[set % INDEX_PAGE] = NO_SLOT;
            }
        }
        l.new_sets.clear();
        self.lines.truncate(src.lines.len());
        self.clocks.truncate(src.clocks.len());
        l.version += 1;
        // Invariant: the restored cache holds exactly `src`'s lines, stamps and clocks (an
        // index page allocated here and now empty names no slot, as an absent page).
        debug_assert!(self.lines == src.lines && self.clocks == src.clocks);
    }

    /// The set `line` maps to, or `None` for a cache that holds nothing.
    pub fn set_of(&self, line: u64) -> Option<u64> {
        (self.sets > 0).then(|| self.set_index(line))
    }

    /// `line % sets` (a mask when `sets` is a power of two, as in every configured cache: a
    /// division per access showed in profiles). `sets` must be non-zero.
    #[inline]
    fn set_index(&self, line: u64) -> u64 {
        if self.sets.is_power_of_two() {
            line & (self.sets - 1)
        } else {
            line % self.sets
        }
    }

    /// The slot of `line`'s set, if that set was ever filled.
    fn slot(&self, line: u64) -> Option<usize> {
        if self.sets == 0 {
            return None;
        }
        let set = self.set_index(line) as usize;
        let slot = self.index[set / INDEX_PAGE].as_ref()?[set % INDEX_PAGE];
        (slot != NO_SLOT).then_some(slot as usize)
    }

    /// The slot of `line`'s set, allocating its (empty) ways on first use.
    fn slot_or_alloc(&mut self, line: u64) -> usize {
        let set = self.set_index(line) as usize;
        let next = self.clocks.len();
        let entry = &mut self.index[set / INDEX_PAGE]
            .get_or_insert_with(|| Box::new([NO_SLOT; INDEX_PAGE]))[set % INDEX_PAGE];
        if *entry != NO_SLOT {
            return *entry as usize;
        }
        *entry = u32::try_from(next)
            .ok()
            .filter(|&n| n != NO_SLOT)
            .unwrap_or_else(|| unreachable!("more sets than u32::MAX - 1"));
        self.lineage.new_sets.push(set as u32);
        self.clocks.push(0);
        self.lines
            .resize(self.lines.len() + self.ways, Way::default());
        next
    }

    /// The next stamp of `slot` (for a way of it, which the caller records as changed).
    fn tick(&mut self, slot: usize) -> u64 {
        let c = &mut self.clocks[slot];
        *c += 1;
        *c
    }

    fn ways_of(&self, slot: usize) -> std::ops::Range<usize> {
        slot * self.ways..(slot + 1) * self.ways
    }

    /// The way of `slot` whose tag is `tag`.
    #[inline]
    fn find_way(&self, slot: usize, tag: u64) -> Option<usize> {
        let first = slot * self.ways;
        self.lines[first..first + self.ways]
            .iter()
            .position(|w| w.tag == tag)
            .map(|i| first + i)
    }

    /// The way holding `line`, touched as most recently used.
    pub fn lookup(&mut self, line: u64) -> Option<usize> {
        let slot = self.slot(line)?;
        let way = self.find_way(slot, line + 1)?;
        self.changed(way);
        self.lines[way].stamp = self.tick(slot);
        Some(way)
    }

    /// Whether `line` is present, and dirty, without touching it.
    pub fn probe(&self, line: u64) -> Option<bool> {
        let slot = self.slot(line)?;
        self.find_way(slot, line + 1).map(|i| self.lines[i].dirty)
    }

    /// Brings `line` in (it must be absent), owned from `ready` on; returns its way and the
    /// victim it replaced.
    pub fn fill(&mut self, line: u64, ready: u64) -> (Option<usize>, Option<Victim>) {
        if self.sets == 0 {
            return (None, None);
        }
        let slot = self.slot_or_alloc(line);
        let range = self.ways_of(slot);
        let way = range
            .clone()
            .find(|&i| self.lines[i].tag == 0)
            .unwrap_or_else(|| {
                range
                    .min_by_key(|&i| self.lines[i].stamp)
                    .unwrap_or_else(|| unreachable!("a set has at least one way"))
            });
        let old = self.lines[way];
        let victim = (old.tag != 0).then(|| Victim {
            line: old.tag - 1,
            dirty: old.dirty,
        });
        self.changed(way);
        let stamp = self.tick(slot);
        self.lines[way] = Way {
            tag: line + 1,
            stamp,
            ready,
            dirty: false,
        };
        (Some(way), victim)
    }

    /// Drops `line`; returns whether it was present and dirty.
    pub fn invalidate(&mut self, line: u64) -> Option<bool> {
        let slot = self.slot(line)?;
        let way = self.find_way(slot, line + 1)?;
        self.changed(way);
        self.lines[way].tag = 0;
        Some(std::mem::take(&mut self.lines[way].dirty))
    }

    pub fn ready(&self, way: usize) -> u64 {
        self.lines[way].ready
    }

    pub fn is_dirty(&self, way: usize) -> bool {
        self.lines[way].dirty
    }

    pub fn set_dirty(&mut self, way: usize, dirty: bool) {
        self.changed(way);
        self.lines[way].dirty = dirty;
    }

    /// Sets whose ways are allocated (tests: the cache stays sparse).
    #[cfg(test)]
    fn resident_sets(&self) -> usize {
        let named = self
            .index
            .iter()
            .flatten()
            .map(|p| p.iter().filter(|&&s| s != NO_SLOT).count())
            .sum::<usize>();
        assert_eq!(named, self.clocks.len(), "every slot is named by one set");
        named
    }
}

impl Clone for Llc {
    /// The way table goes into the thread's spare table when there is one (see `SPARE_LINES`):
    /// a run that starts from a cloned machine then fills new sets without growing a table
    /// the size of the clone's.
    fn clone(&self) -> Self {
        let mut lines = SPARE_LINES
            .with(|l| l.try_borrow_mut().map(|mut l| std::mem::take(&mut *l)))
            .unwrap_or_default();
        lines.clear();
        lines.extend_from_slice(&self.lines);
        Llc {
            sets: self.sets,
            ways: self.ways,
            index: self.index.clone(),
            lines,
            clocks: self.clocks.clone(),
            lineage: Lineage::of(next_llc_id(), self),
        }
    }
}

impl Drop for Llc {
    fn drop(&mut self) {
        let mut lines = std::mem::take(&mut self.lines);
        lines.clear();
        // Keep the larger table (a clone's may be smaller); never while the slot is in use.
        let _ = SPARE_LINES.try_with(|l| {
            if let Ok(mut l) = l.try_borrow_mut()
                && l.capacity() < lines.capacity()
            {
                *l = lines;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random lookups, fills, invalidations and dirty marks on `c`; their results.
    fn churn(c: &mut Llc, seed: u64, n: usize) -> Vec<(Option<usize>, Option<Victim>, bool)> {
        let mut x = seed;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 33
        };
        (0..n)
            .map(|_| {
                let line = next() % 5000;
                match next() % 4 {
                    0 => (c.lookup(line), None, false),
                    1 if c.probe(line).is_none() => {
                        let (w, v) = c.fill(line, line * 3);
                        (w, v, false)
                    }
                    2 => (None, None, c.invalidate(line).unwrap_or(false)),
                    _ => {
                        let w = c.lookup(line);
                        if let Some(w) = w {
                            c.set_dirty(w, true);
                        }
                        (w, None, c.probe(line) == Some(true))
                    }
                }
            })
            .collect()
    }

    /// A cache restored to the one it was cloned from behaves as a fresh clone of it: the
    /// same answers to the same operations, the same ways and clocks; also after a second
    /// round, and (by a full copy) when the source changed in between.
    #[test]
    fn a_restored_cache_is_a_clone_of_its_source() {
        // 64 sets x 8 ways over 5,000 lines: sets are shared, victims common.
        let mut base = Llc::new(64 * 8 * 64, 8);
        churn(&mut base, 1, 300);
        let mut c = base.clone();
        for round in 0..3u64 {
            churn(&mut c, 10 + round, 400);
            if round == 2 {
                churn(&mut base, 99, 50); // the source changed: a full copy
            } else {
                assert_eq!(
                    c.lineage.base,
                    Some((base.lineage.id, base.lineage.version))
                );
                assert!(!c.lineage.changed.is_empty() && !c.lineage.new_sets.is_empty());
            }
            c.restore_from(&base);
            let mut fresh = base.clone();
            assert_eq!(
                churn(&mut c, 20 + round, 400),
                churn(&mut fresh, 20 + round, 400)
            );
            assert!(c.lines == fresh.lines && c.clocks == fresh.clocks);
            for line in 0..5000 {
                assert_eq!(c.probe(line), fresh.probe(line), "line {line}");
            }
            c.restore_from(&base);
        }
    }

    #[test]
    fn lru_victim_is_the_least_recently_used_way() {
        // 2 sets x 2 ways.
        let mut c = Llc::new(256, 2);
        assert_eq!(c.fill(0, 0).1, None);
        assert_eq!(c.fill(2, 0).1, None);
        let w0 = c.lookup(0).unwrap();
        c.set_dirty(w0, true);
        // Line 4 maps to set 0 too; line 2 is the LRU way.
        assert_eq!(
            c.fill(4, 0).1,
            Some(Victim {
                line: 2,
                dirty: false
            })
        );
        assert_eq!(
            c.fill(6, 0).1,
            Some(Victim {
                line: 0,
                dirty: true
            })
        );
        assert_eq!(c.invalidate(4), Some(false));
        assert_eq!(c.lookup(4), None);
        let mut none = Llc::new(0, 16);
        assert_eq!(none.lookup(1), None);
        assert_eq!(none.fill(1, 0), (None, None));
    }

    /// The dense cache this sparse one replaced: every set's ways allocated up front.
    struct Dense {
        sets: u64,
        ways: usize,
        tags: Vec<u64>,
        stamps: Vec<u64>,
        dirty: Vec<bool>,
        clocks: Vec<u64>,
    }

    impl Dense {
        fn new(bytes: u64, ways: usize) -> Self {
            let lines = (bytes / 64) as usize;
            Dense {
                sets: (lines / ways) as u64,
                ways,
                tags: vec![0; lines],
                stamps: vec![0; lines],
                dirty: vec![false; lines],
                clocks: vec![0; lines / ways],
            }
        }
        fn range(&self, line: u64) -> std::ops::Range<usize> {
            let s = (line % self.sets) as usize;
            s * self.ways..(s + 1) * self.ways
        }
        fn tick(&mut self, line: u64) -> u64 {
            let c = &mut self.clocks[(line % self.sets) as usize];
            *c += 1;
            *c
        }
        fn lookup(&mut self, line: u64) -> Option<usize> {
            let w = self.range(line).find(|&i| self.tags[i] == line + 1)?;
            self.stamps[w] = self.tick(line);
            Some(w)
        }
        fn fill(&mut self, line: u64) -> Option<Victim> {
            let r = self.range(line);
            let w = r
                .clone()
                .find(|&i| self.tags[i] == 0)
                .unwrap_or_else(|| r.min_by_key(|&i| self.stamps[i]).unwrap());
            let v = (self.tags[w] != 0).then(|| Victim {
                line: self.tags[w] - 1,
                dirty: self.dirty[w],
            });
            self.tags[w] = line + 1;
            self.stamps[w] = self.tick(line);
            self.dirty[w] = false;
            v
        }
        fn invalidate(&mut self, line: u64) -> Option<bool> {
            let w = self.range(line).find(|&i| self.tags[i] == line + 1)?;
            self.tags[w] = 0;
            Some(std::mem::take(&mut self.dirty[w]))
        }
    }

    #[test]
    fn the_sparse_cache_behaves_as_the_dense_one_and_allocates_only_sets_filled() {
        // 64 sets x 4 ways; lines drawn from 3 * 256 so that sets overflow and evict.
        let mut sparse = Llc::new(64 * 4 * 64, 4);
        let mut dense = Dense::new(64 * 4 * 64, 4);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut filled_sets = std::collections::BTreeSet::new();
        for step in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Only the first 40 sets are used, so the rest must stay unallocated.
            let line = (x % 3) * 64 + (x >> 8) % 40;
            match (x >> 40) % 4 {
                0 => assert_eq!(
                    sparse.probe(line).is_some(),
                    dense.range(line).any(|i| dense.tags[i] == line + 1)
                ),
                1 => {
                    let (s, d) = (sparse.lookup(line), dense.lookup(line));
                    assert_eq!(s.is_some(), d.is_some(), "step {step}");
                    if let (Some(s), Some(d)) = (s, d) {
                        assert_eq!(sparse.is_dirty(s), dense.dirty[d]);
                        let dirty = (x >> 50) & 1 == 0;
                        sparse.set_dirty(s, dirty);
                        dense.dirty[d] = dirty;
                    } else {
                        filled_sets.insert(line % 64);
                        assert_eq!(sparse.fill(line, step).1, dense.fill(line), "step {step}");
                    }
                }
                _ => assert_eq!(
                    sparse.invalidate(line),
                    dense.invalidate(line),
                    "step {step}"
                ),
            }
        }
        assert_eq!(sparse.resident_sets(), filled_sets.len());
        assert!(filled_sets.len() <= 40);
    }
}
