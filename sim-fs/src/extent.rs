//! Operations on an inode's extent map (file block -> [`Extent`]), as plain data: lookups,
//! replacing a range, removing a range. Adjacent extents that continue each other on the device
//! with the same state are merged, so a file written in order keeps few extents.

use crate::layout::Extent;
use std::collections::BTreeMap;

pub type ExtentMap = BTreeMap<u64, Extent>;

/// The extent covering file block `fb`, with its first file block.
pub fn lookup(map: &ExtentMap, fb: u64) -> Option<(u64, Extent)> {
    let (&s, &e) = map.range(..=fb).next_back()?;
    (fb - s < e.len).then_some((s, e))
}

/// What file block `fb` maps to and for how many blocks (at most `max`) that continues: the
/// device block and state, or a hole (`None`).
pub fn run(map: &ExtentMap, fb: u64, max: u64) -> (Option<Extent>, u64) {
    match lookup(map, fb) {
        Some((s, e)) => {
            let off = fb - s;
            let n = (e.len - off).min(max);
            (
                Some(Extent {
                    dev: e.dev + off,
                    len: n,
                    unwritten: e.unwritten,
                }),
                n,
            )
        }
        None => {
            let next = map.range(fb..).next().map_or(u64::MAX, |(&k, _)| k);
            (None, (next - fb).min(max))
        }
    }
}

/// Cut the extent covering `fb` so that one starts there.
fn split_at(map: &mut ExtentMap, fb: u64) {
    if let Some((s, e)) = lookup(map, fb)
        && s < fb
    {
        let head = fb - s;
        map.insert(s, Extent { len: head, ..e });
        map.insert(
            fb,
            Extent {
                dev: e.dev + head,
                len: e.len - head,
                unwritten: e.unwritten,
            },
        );
    }
}

/// Remove file blocks `fb .. fb + n`; returns the device runs they mapped (for freeing).
pub fn remove_range(map: &mut ExtentMap, fb: u64, n: u64) -> Vec<Extent> {
    split_at(map, fb);
    split_at(map, fb + n);
    let keys: Vec<u64> = map.range(fb..fb + n).map(|(&k, _)| k).collect();
    keys.into_iter().filter_map(|k| map.remove(&k)).collect()
}

/// Map file blocks `fb .. fb + e.len` to `e`, returning what they mapped before.
pub fn replace(map: &mut ExtentMap, fb: u64, e: Extent) -> Vec<Extent> {
    let old = remove_range(map, fb, e.len);
    map.insert(fb, e);
    merge_around(map, fb);
    old
}

/// Merge the extent at `fb` with its neighbours when they continue each other.
fn merge_around(map: &mut ExtentMap, fb: u64) {
    let mut start = fb;
    if let Some((&ps, &pe)) = map.range(..fb).next_back() {
        let e = map[&fb];
        if ps + pe.len == fb && pe.dev + pe.len == e.dev && pe.unwritten == e.unwritten {
            map.remove(&fb);
            map.insert(
                ps,
                Extent {
                    len: pe.len + e.len,
                    ..pe
                },
            );
            start = ps;
        }
    }
    let e = map[&start];
    let end = start + e.len;
    if let Some(&ne) = map.get(&end)
        && e.dev + e.len == ne.dev
        && e.unwritten == ne.unwritten
    {
        map.remove(&end);
        map.insert(
            start,
            Extent {
                len: e.len + ne.len,
                ..e
            },
        );
    }
}

/// Extents the map would have after `replace(fb, e)` (to refuse an operation before it
/// changes anything when the inode cannot hold them).
pub fn count_after_replace(map: &ExtentMap, fb: u64, e: Extent) -> usize {
    let mut m = map.clone();
    replace(&mut m, fb, e);
    m.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(dev: u64, len: u64) -> Extent {
        Extent {
            dev,
            len,
            unwritten: false,
        }
    }

    #[test]
    fn replace_splits_merges_and_returns_what_it_replaced() {
        let mut m = ExtentMap::new();
        assert!(replace(&mut m, 0, x(100, 4)).is_empty());
        assert!(replace(&mut m, 4, x(104, 4)).is_empty());
        assert_eq!(m.len(), 1, "contiguous extents merge");
        assert_eq!(run(&m, 2, 100), (Some(x(102, 6)), 6));
        assert_eq!(run(&m, 8, 100), (None, 100));
        let old = replace(&mut m, 2, x(500, 2));
        assert_eq!(old, vec![x(102, 2)]);
        assert_eq!(m.len(), 3);
        let gone = remove_range(&mut m, 1, 6);
        assert_eq!(gone, vec![x(101, 1), x(500, 2), x(104, 3)]);
        assert_eq!(run(&m, 0, 10), (Some(x(100, 1)), 1));
        assert_eq!(run(&m, 1, 10), (None, 6));
        assert_eq!(count_after_replace(&m, 3, x(900, 1)), 3);
    }
}
