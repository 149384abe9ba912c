//! The last-level cache: one shared, set-associative, least-recently-used cache of 64-byte lines.
//! It decides load hits, store misses (read for ownership) and capacity evictions, which write
//! a dirty line back: that is how a line becomes durable without any flush. Private L1/L2 caches
//! and coherence traffic are not modelled.

/// A line pushed out of the cache to make room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Victim {
    pub line: u64,
    pub dirty: bool,
}

#[derive(Clone)]
pub(crate) struct Llc {
    sets: u64,
    ways: usize,
    /// `line + 1` per way; 0 marks an empty way (so the arrays start zeroed, lazily).
    tags: Vec<u64>,
    /// Last-use stamp per way, for LRU.
    stamps: Vec<u64>,
    /// Time (ps) at which the line is owned by the cache (its fill or RFO completes).
    ready: Vec<u64>,
    dirty: Vec<bool>,
    /// Per set, the last stamp given: LRU compares stamps only within a set, so each set has
    /// its own clock and accesses to different sets commute exactly (`sim` "Footprints").
    clocks: Vec<u64>,
}

impl Llc {
    /// `bytes == 0` gives a cache that holds nothing.
    pub fn new(bytes: u64, ways: u32) -> Self {
        let ways = ways.max(1) as usize;
        let lines = (bytes / 64) as usize;
        Llc {
            sets: (lines / ways) as u64,
            ways,
            tags: vec![0; lines],
            stamps: vec![0; lines],
            ready: vec![0; lines],
            dirty: vec![false; lines],
            clocks: vec![0; lines / ways],
        }
    }

    /// The set `line` maps to, or `None` for a cache that holds nothing.
    pub fn set_of(&self, line: u64) -> Option<u64> {
        (self.sets > 0).then(|| line % self.sets)
    }

    fn tick(&mut self, line: u64) -> u64 {
        let c = &mut self.clocks[(line % self.sets) as usize];
        *c += 1;
        *c
    }

    fn set_range(&self, line: u64) -> std::ops::Range<usize> {
        let set = (line % self.sets) as usize;
        set * self.ways..(set + 1) * self.ways
    }

    /// The way holding `line`, touched as most recently used.
    pub fn lookup(&mut self, line: u64) -> Option<usize> {
        if self.sets == 0 {
            return None;
        }
        let tag = line + 1;
        let way = self.set_range(line).find(|&i| self.tags[i] == tag)?;
        self.stamps[way] = self.tick(line);
        Some(way)
    }

    /// Whether `line` is present, and dirty, without touching it.
    pub fn probe(&self, line: u64) -> Option<bool> {
        if self.sets == 0 {
            return None;
        }
        let tag = line + 1;
        self.set_range(line)
            .find(|&i| self.tags[i] == tag)
            .map(|i| self.dirty[i])
    }

    /// Brings `line` in (it must be absent), owned from `ready` on; returns its way and the
    /// victim it replaced.
    pub fn fill(&mut self, line: u64, ready: u64) -> (Option<usize>, Option<Victim>) {
        if self.sets == 0 {
            return (None, None);
        }
        let range = self.set_range(line);
        let way = range
            .clone()
            .find(|&i| self.tags[i] == 0)
            .unwrap_or_else(|| {
                range
                    .min_by_key(|&i| self.stamps[i])
                    .unwrap_or_else(|| unreachable!("a set has at least one way"))
            });
        let victim = (self.tags[way] != 0).then(|| Victim {
            line: self.tags[way] - 1,
            dirty: self.dirty[way],
        });
        self.tags[way] = line + 1;
        self.stamps[way] = self.tick(line);
        self.ready[way] = ready;
        self.dirty[way] = false;
        (Some(way), victim)
    }

    /// Drops `line`; returns whether it was present and dirty.
    pub fn invalidate(&mut self, line: u64) -> Option<bool> {
        if self.sets == 0 {
            return None;
        }
        let tag = line + 1;
        let way = self.set_range(line).find(|&i| self.tags[i] == tag)?;
        self.tags[way] = 0;
        Some(std::mem::take(&mut self.dirty[way]))
    }

    pub fn ready(&self, way: usize) -> u64 {
        self.ready[way]
    }

    pub fn is_dirty(&self, way: usize) -> bool {
        self.dirty[way]
    }

    pub fn set_dirty(&mut self, way: usize, dirty: bool) {
        self.dirty[way] = dirty;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
