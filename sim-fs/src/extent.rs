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

/// `xfs_bmap_collapse_extents`: every extent at file block `from` or later moves down by `by`
/// blocks. The caller has removed `from - by .. from` first (so nothing is overwritten).
pub fn shift_down(map: &mut ExtentMap, from: u64, by: u64) {
    assert!(by <= from && map.range(from - by..from).next().is_none());
    split_at(map, from);
    let moved: Vec<(u64, Extent)> = map.range(from..).map(|(&k, &e)| (k, e)).collect();
    for (k, _) in &moved {
        map.remove(k);
    }
    for (k, e) in moved {
        map.insert(k - by, e);
    }
    if map.contains_key(&(from - by)) {
        merge_around(map, from - by);
    }
}

/// `xfs_bmap_insert_extents`: every block at file block `from` or later moves up by `by`
/// blocks (an extent across `from` is split there), leaving a hole of `by` blocks at `from`.
pub fn shift_up(map: &mut ExtentMap, from: u64, by: u64) {
    split_at(map, from);
    let moved: Vec<(u64, Extent)> = map.range(from..).map(|(&k, &e)| (k, e)).collect();
    for (k, _) in &moved {
        map.remove(k);
    }
    for (k, e) in moved {
        map.insert(k + by, e);
    }
}

/// Extents the map would have after `shift_up(from, by)`.
pub fn count_after_shift_up(map: &ExtentMap, from: u64) -> usize {
    map.len() + usize::from(lookup(map, from).is_some_and(|(s, _)| s < from))
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

    #[test]
    fn collapse_and_insert_move_the_tail_and_merge_at_the_seam() {
        let mut m = ExtentMap::new();
        replace(&mut m, 0, x(100, 8));
        replace(&mut m, 10, x(300, 2));
        // Insert 3 blocks at 4: the extent splits, the tail and the later extent move up.
        assert_eq!(count_after_shift_up(&m, 4), 3);
        shift_up(&mut m, 4, 3);
        assert_eq!(run(&m, 0, 100), (Some(x(100, 4)), 4));
        assert_eq!(run(&m, 4, 100), (None, 3));
        assert_eq!(run(&m, 7, 100), (Some(x(104, 4)), 4));
        assert_eq!(run(&m, 13, 100), (Some(x(300, 2)), 2));
        // Collapse the hole again: the halves continue each other on the device and merge.
        shift_down(&mut m, 7, 3);
        assert_eq!(run(&m, 0, 100), (Some(x(100, 8)), 8));
        assert_eq!(run(&m, 10, 100), (Some(x(300, 2)), 2));
        assert_eq!(m.len(), 2);
    }
}
