//! The XArray of an address space (`mapping->i_pages`), with the semantics fs/dax.c relies on.
//!
//! Entries are raw words encoded as in `include/linux/xarray.h`: bit 0 set is a *value* entry
//! (`xa_mk_value(v) = v << 1 | 1`), low bits `10` an *internal* entry (`XA_RETRY_ENTRY`, node
//! pointers, the VM_FAULT codes `grab_mapping_entry` returns), low bits `00` a pointer (a page-cache
//! folio in a non-DAX mapping). `0` is NULL. An entry has an *order*: it covers `1 << order`
//! indices starting at a multiple of `1 << order` (a DAX PMD entry: order 9, 512 indices).
//!
//! The structure is an ordered map from each entry's first index to the entry, its order and its
//! marks. Lookups and stores follow the kernel's multi-index rules exactly:
//! - a load of any index inside a multi-index entry returns that entry;
//! - a store through an [`XaState`] of order 0 into an index covered by a larger entry replaces
//!   the whole entry (the kernel writes the canonical slot, the siblings keep pointing to it), and
//!   storing NULL that way erases the whole entry;
//! - a store of order `o` over a range that holds smaller entries removes them (their marks are
//!   squashed onto the new entry, as `xas_squash_marks` does);
//! - a load of order `o` over a range holding only smaller entries returns a node entry
//!   ([`XaEntry::is_node`]), as `xas_load` stops at the node;
//! - `xas_find_conflict` returns the entry covering the start (of any order) or else each entry
//!   inside the range in turn, and does **not** move `xa_index` (the root cause of the 2019 PMD
//!   missed wakeup, shared/seeds/001).
//!
//! The xarray itself is plain data: it lives inside the mapping's i_pages spinlock
//! (`AddressSpace::i_pages`), so every access is already serialised by a Platform lock.

use serde::{Deserialize, Serialize};
use sim_core::Platform;
use sim_core::platform::SpinLockGuard;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;

/// The indices `[first, end)` an xarray read's answer depends on (its result and the state it
/// leaves in the `XaState`): what it found there, or that nothing was there. The read never
/// looks at an index outside, so a change elsewhere leaves the answer as it was (see
/// [`XaOps`]). Empty (`first == end`) when the answer depends on no index.
type Seen = (u64, u64);

/// What a read that looks at no index depends on.
const NOTHING_SEEN: Seen = (0, 0);

/// One raw xarray word.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct XaEntry(pub u64);

/// `XA_RETRY_ENTRY` = `xa_mk_internal(256)`.
pub const XA_RETRY_ENTRY: XaEntry = xa_mk_internal(256);
/// `XA_ZERO_ENTRY` = `xa_mk_internal(257)`.
pub const XA_ZERO_ENTRY: XaEntry = xa_mk_internal(257);
/// What `xas_load`/`xas_store` of order `o` return where the range holds smaller entries: the
/// kernel hands back the node pointer (an internal entry above 4096).
pub const XA_NODE_ENTRY: XaEntry = XaEntry(0x1_0002);

/// `xa_mk_value(v)`: a value entry (`v` must fit in 63 bits).
pub const fn xa_mk_value(v: u64) -> XaEntry {
    XaEntry((v << 1) | 1)
}

/// `xa_to_value(e)`.
pub const fn xa_to_value(e: XaEntry) -> u64 {
    e.0 >> 1
}

/// `xa_mk_internal(v)`.
pub const fn xa_mk_internal(v: u64) -> XaEntry {
    XaEntry((v << 2) | 2)
}

/// `xa_to_internal(e)`.
pub const fn xa_to_internal(e: XaEntry) -> u64 {
    e.0 >> 2
}

impl XaEntry {
    pub const NULL: XaEntry = XaEntry(0);

    pub const fn is_null(self) -> bool {
        self.0 == 0
    }
    /// `xa_is_value`.
    pub const fn is_value(self) -> bool {
        self.0 & 1 == 1
    }
    /// `xa_is_internal`.
    pub const fn is_internal(self) -> bool {
        self.0 & 3 == 2
    }
    /// `xa_is_node`: an internal entry above 4096.
    pub const fn is_node(self) -> bool {
        self.is_internal() && self.0 > 4096
    }
    /// `xa_is_retry`.
    pub const fn is_retry(self) -> bool {
        self.0 == XA_RETRY_ENTRY.0
    }
    /// A pointer entry (a page-cache folio in a non-DAX mapping).
    pub const fn is_pointer(self) -> bool {
        !self.is_null() && self.0 & 3 == 0
    }
    /// A pointer entry for the page-cache folio at `pfn` (the model's `struct folio *`).
    pub const fn from_folio_pfn(pfn: u64) -> XaEntry {
        XaEntry(pfn << 6)
    }
    pub const fn folio_pfn(self) -> u64 {
        self.0 >> 6
    }
}

impl fmt::Debug for XaEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_null() {
            write!(f, "NULL")
        } else if self.is_value() {
            write!(f, "value({:#x})", xa_to_value(*self))
        } else if self.is_retry() {
            write!(f, "XA_RETRY_ENTRY")
        } else if self.is_node() {
            write!(f, "node")
        } else if self.is_internal() {
            write!(f, "internal({:#x})", xa_to_internal(*self))
        } else {
            write!(f, "folio(pfn {:#x})", self.folio_pfn())
        }
    }
}

/// An xarray mark (`xa_mark_t`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct XaMark(pub u8);

pub const XA_MARK_0: XaMark = XaMark(0);
pub const XA_MARK_1: XaMark = XaMark(1);
pub const XA_MARK_2: XaMark = XaMark(2);
/// `PAGECACHE_TAG_DIRTY`.
pub const PAGECACHE_TAG_DIRTY: XaMark = XA_MARK_0;
/// `PAGECACHE_TAG_WRITEBACK`.
pub const PAGECACHE_TAG_WRITEBACK: XaMark = XA_MARK_1;
/// `PAGECACHE_TAG_TOWRITE`.
pub const PAGECACHE_TAG_TOWRITE: XaMark = XA_MARK_2;

impl XaMark {
    const fn bit(self) -> u8 {
        1 << self.0
    }
}

/// The largest order an entry may have (the model needs 0 and `PMD_ORDER`; any order up to this
/// works).
pub const XA_MAX_ORDER: u8 = 30;

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
struct Slot {
    entry: XaEntry,
    order: u8,
    marks: u8,
}

/// One present entry as seen by iteration and by the invariant checker.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct XaItem {
    /// First index covered.
    pub index: u64,
    pub order: u8,
    pub entry: XaEntry,
    /// Bit `m` set when mark `m` is set.
    pub marks: u8,
}

impl XaItem {
    pub fn end(&self) -> u64 {
        self.index + (1u64 << self.order)
    }
    pub fn has_mark(&self, mark: XaMark) -> bool {
        self.marks & mark.bit() != 0
    }
}

/// `struct xarray` plus the `nrpages` count of the owning `address_space`, which the kernel
/// updates under the same lock (the DAX code adds and subtracts `1 << order` itself).
#[derive(Clone, Default, Debug, Serialize, Deserialize)]
pub struct XArray {
    slots: BTreeMap<u64, Slot>,
    /// `mapping->nrpages`: maintained by the users of the xarray, checked by the invariants.
    pub nrpages: u64,
}

/// Where an [`XaState`] stands between calls.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum XaCursor {
    /// `XAS_RESTART`: the next operation walks from the top, at `xa_index`.
    Restart,
    /// The last entry returned by an iteration ended (exclusive) here.
    After(u64),
    /// `XAS_BOUNDS`: an iteration ran past its end.
    Bounds,
}

/// `struct xa_state`: an index, an order and an iteration position. It does not borrow the
/// xarray (the xarray sits behind the i_pages lock); every operation takes it explicitly.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct XaState {
    pub xa_index: u64,
    /// The order of the operation (the kernel keeps it as `xa_shift` + `xa_sibs`).
    pub xa_order: u8,
    pub xa_node: XaCursor,
}

impl XaState {
    /// `XA_STATE(xas, xa, index)`.
    pub fn new(index: u64) -> XaState {
        XaState {
            xa_index: index,
            xa_order: 0,
            xa_node: XaCursor::Restart,
        }
    }

    /// `XA_STATE_ORDER(xas, xa, index, order)`: the index is rounded down to the order.
    pub fn new_order(index: u64, order: u8) -> XaState {
        let order = order.min(XA_MAX_ORDER);
        XaState {
            xa_index: index & !((1u64 << order) - 1),
            xa_order: order,
            xa_node: XaCursor::Restart,
        }
    }

    /// `xas_reset`: forget the position; the next operation walks again from `xa_index`.
    pub fn reset(&mut self) {
        self.xa_node = XaCursor::Restart;
    }

    /// `xas_set`.
    pub fn set(&mut self, index: u64) {
        self.xa_index = index;
        self.xa_node = XaCursor::Restart;
    }

    /// `xas_set_order`.
    pub fn set_order(&mut self, index: u64, order: u8) {
        *self = XaState::new_order(index, order);
    }

    /// `xas_pause`: the next iteration step continues after the last entry returned, even if the
    /// lock was dropped and the array changed meanwhile.
    pub fn pause(&mut self) {
        if let XaCursor::After(end) = self.xa_node {
            self.xa_index = end;
        }
        self.xa_node = XaCursor::Restart;
    }

    /// The number of indices the operation covers.
    pub fn nr(&self) -> u64 {
        1u64 << self.xa_order
    }
}

impl XArray {
    pub fn new() -> XArray {
        XArray::default()
    }

    /// The slot covering `index`, as (first index, slot).
    #[inline]
    fn covering(&self, index: u64) -> Option<(u64, &Slot)> {
        let (&start, slot) = self.slots.range(..=index).next_back()?;
        if index - start < (1u64 << slot.order) {
            Some((start, slot))
        } else {
            None
        }
    }

    #[inline]
    fn covering_mut(&mut self, index: u64) -> Option<(u64, &mut Slot)> {
        let (&start, slot) = self.slots.range_mut(..=index).next_back()?;
        if index - start < (1u64 << slot.order) {
            Some((start, slot))
        } else {
            None
        }
    }

    /// `xa_load`: the entry covering `index`, or NULL.
    #[inline]
    pub fn xa_load(&self, index: u64) -> XaEntry {
        self.covering(index).map_or(XaEntry::NULL, |(_, s)| s.entry)
    }

    /// The entry covering `index` with its first index and order.
    pub fn lookup(&self, index: u64) -> Option<XaItem> {
        self.covering(index).map(|(start, s)| XaItem {
            index: start,
            order: s.order,
            entry: s.entry,
            marks: s.marks,
        })
    }

    /// `xas_load`: the entry covering `xa_index` when it is at least as large as the state's
    /// order; for a multi-index state over a range holding only smaller entries, a node entry;
    /// else NULL.
    pub fn xas_load(&self, xas: &mut XaState) -> XaEntry {
        self.xas_load_seen(xas).0
    }

    /// [`XArray::xas_load`] with the indices its answer depends on ([`Seen`]).
    fn xas_load_seen(&self, xas: &XaState) -> (XaEntry, Seen) {
        let start = xas.xa_index;
        // Whether (and by what) `start` is covered: one index.
        let one = (start, start.saturating_add(1));
        if let Some((_, s)) = self.covering(start) {
            // A smaller entry at the very start of a multi-index state's range is "below the
            // node" the walk stops at.
            if s.order >= xas.xa_order {
                return (s.entry, one);
            }
            return (XA_NODE_ENTRY, one);
        }
        if xas.xa_order > 0 {
            let end = start.saturating_add(xas.nr());
            // Up to the first entry starting in the range (whether there is one), or all of it.
            return match self.slots.range(start..end).next() {
                Some((&k, _)) => (XA_NODE_ENTRY, (start, k.saturating_add(1))),
                None => (XaEntry::NULL, (start, end)),
            };
        }
        (XaEntry::NULL, one)
    }

    /// `xas_store`: store `entry` (NULL erases) with the state's order; returns what was there
    /// (a node entry when several smaller entries were replaced).
    pub fn xas_store(&mut self, xas: &mut XaState, entry: XaEntry) -> XaEntry {
        debug_assert!(
            !entry.is_internal() || entry.is_null(),
            "internal entries are never stored"
        );
        let order = xas.xa_order;
        let start = xas.xa_index;
        // Case 1: an entry at least as large covers the start: the store goes to its canonical
        // slot. Non-NULL replaces the entry (keeping its order and marks); NULL erases it all.
        if let Some((s0, slot)) = self.covering_mut(start)
            && slot.order >= order
        {
            let old = slot.entry;
            if entry.is_null() {
                self.slots.remove(&s0);
            } else {
                slot.entry = entry;
            }
            return old;
        }
        // Case 2: only smaller entries (or nothing) in [start, start + 2^order).
        let end = start + (1u64 << order);
        let mut removed = 0usize;
        let mut marks = 0u8;
        let mut first = XaEntry::NULL;
        while let Some((&k, s)) = self.slots.range(start..end).next() {
            if removed == 0 {
                first = s.entry;
            }
            marks |= s.marks;
            removed += 1;
            self.slots.remove(&k);
        }
        if !entry.is_null() {
            self.slots.insert(
                start,
                Slot {
                    entry,
                    order,
                    marks, // xas_squash_marks
                },
            );
        }
        match removed {
            0 => XaEntry::NULL,
            1 if order == 0 => first,
            _ => XA_NODE_ENTRY,
        }
    }

    /// `xas_find_conflict`: the next entry in `[xa_index, xa_index + 2^order)`, including an
    /// entry of any order covering `xa_index`; NULL when there are no more. Does not move
    /// `xa_index`.
    pub fn xas_find_conflict(&self, xas: &mut XaState) -> XaEntry {
        self.xas_find_conflict_seen(xas).0
    }

    /// [`XArray::xas_find_conflict`] with the indices its answer depends on ([`Seen`]).
    fn xas_find_conflict_seen(&self, xas: &mut XaState) -> (XaEntry, Seen) {
        let first = xas.xa_index;
        let end = first + xas.nr();
        let from = match xas.xa_node {
            XaCursor::Bounds => return (XaEntry::NULL, NOTHING_SEEN),
            XaCursor::Restart => {
                if let Some((s0, s)) = self.covering(first) {
                    xas.xa_node = XaCursor::After(s0 + (1u64 << s.order));
                    return (s.entry, (first, first.saturating_add(1)));
                }
                first
            }
            XaCursor::After(e) => e,
        };
        if from >= end {
            xas.xa_node = XaCursor::Bounds;
            return (XaEntry::NULL, NOTHING_SEEN);
        }
        // From where the walk starts (`first` itself, found uncovered, on a restart) to the
        // entry it stops at, or to the end of the range.
        match self.slots.range(from..end).next() {
            Some((&k, s)) => {
                xas.xa_node = XaCursor::After(k + (1u64 << s.order));
                (s.entry, (from, k.saturating_add(1)))
            }
            None => {
                xas.xa_node = XaCursor::Bounds;
                (XaEntry::NULL, (from, end))
            }
        }
    }

    /// `xas_find`: the first entry at or after the position, up to `max` inclusive. The first
    /// call returns an entry covering `xa_index` without moving it; later calls move past the
    /// entry last returned and set `xa_index` to the first index of the entry found.
    pub fn xas_find(&self, xas: &mut XaState, max: u64) -> XaEntry {
        self.find_filtered(xas, max, None)
    }

    /// `xas_find_marked`: like [`XArray::xas_find`], only entries with `mark` set.
    pub fn xas_find_marked(&self, xas: &mut XaState, max: u64, mark: XaMark) -> XaEntry {
        self.find_filtered(xas, max, Some(mark))
    }

    fn find_filtered(&self, xas: &mut XaState, max: u64, mark: Option<XaMark>) -> XaEntry {
        self.find_filtered_seen(xas, max, mark).0
    }

    /// [`XArray::xas_find`] (with `mark`: [`XArray::xas_find_marked`]) with the indices its
    /// answer depends on ([`Seen`]).
    fn find_filtered_seen(
        &self,
        xas: &mut XaState,
        max: u64,
        mark: Option<XaMark>,
    ) -> (XaEntry, Seen) {
        let ok = |s: &Slot| mark.is_none_or(|m| s.marks & m.bit() != 0);
        // The walk looks from `seen_from` on: `xa_index` itself on a restart.
        let (from, seen_from) = match xas.xa_node {
            XaCursor::Bounds => return (XaEntry::NULL, NOTHING_SEEN),
            XaCursor::Restart => {
                let i = xas.xa_index;
                if i > max {
                    xas.xa_node = XaCursor::Bounds;
                    return (XaEntry::NULL, NOTHING_SEEN);
                }
                if let Some((s0, s)) = self.covering(i)
                    && ok(s)
                {
                    xas.xa_node = XaCursor::After(s0 + (1u64 << s.order));
                    return (s.entry, (i, i.saturating_add(1)));
                }
                // Strictly after xa_index (an entry starting there was just checked).
                (i.saturating_add(1), i)
            }
            XaCursor::After(e) => (e, e),
        };
        if from > max {
            xas.xa_node = XaCursor::Bounds;
            return (XaEntry::NULL, (seen_from, from));
        }
        for (&k, s) in self
            .slots
            .range((Bound::Included(from), Bound::Included(max)))
        {
            if ok(s) {
                xas.xa_index = k;
                xas.xa_node = XaCursor::After(k + (1u64 << s.order));
                return (s.entry, (seen_from, k.saturating_add(1)));
            }
        }
        xas.xa_node = XaCursor::Bounds;
        (XaEntry::NULL, (seen_from, max.saturating_add(1)))
    }

    /// `xas_get_mark`: whether the entry covering `xa_index` has `mark`.
    pub fn xas_get_mark(&self, xas: &XaState, mark: XaMark) -> bool {
        self.covering(xas.xa_index)
            .is_some_and(|(_, s)| s.marks & mark.bit() != 0)
    }

    /// `xas_set_mark` on the entry covering `xa_index` (a no-op on an empty index).
    pub fn xas_set_mark(&mut self, xas: &XaState, mark: XaMark) {
        if let Some((_, s)) = self.covering_mut(xas.xa_index) {
            s.marks |= mark.bit();
        }
    }

    /// `xas_clear_mark` on the entry covering `xa_index`.
    pub fn xas_clear_mark(&mut self, xas: &XaState, mark: XaMark) {
        if let Some((_, s)) = self.covering_mut(xas.xa_index) {
            s.marks &= !mark.bit();
        }
    }

    /// `xas_init_marks`: clear every mark of the entry covering `xa_index`.
    pub fn xas_init_marks(&mut self, xas: &XaState) {
        if let Some((_, s)) = self.covering_mut(xas.xa_index) {
            s.marks = 0;
        }
    }

    /// `xa_get_mark(xa, index, mark)`.
    pub fn xa_get_mark(&self, index: u64, mark: XaMark) -> bool {
        self.xas_get_mark(&XaState::new(index), mark)
    }

    /// `xa_marked(xa, mark)`: whether any entry has `mark`.
    pub fn xa_marked(&self, mark: XaMark) -> bool {
        self.slots.values().any(|s| s.marks & mark.bit() != 0)
    }

    /// `xa_store(xa, index, entry)` at order 0.
    pub fn xa_store(&mut self, index: u64, entry: XaEntry) -> XaEntry {
        self.xas_store(&mut XaState::new(index), entry)
    }

    /// `xa_store_order`: store a multi-index entry.
    pub fn xa_store_order(&mut self, index: u64, order: u8, entry: XaEntry) -> XaEntry {
        self.xas_store(&mut XaState::new_order(index, order), entry)
    }

    /// `xa_erase(xa, index)`.
    pub fn xa_erase(&mut self, index: u64) -> XaEntry {
        self.xa_store(index, XaEntry::NULL)
    }

    /// `xa_empty`.
    pub fn xa_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The number of present entries (a multi-index entry counts once).
    pub fn nr_entries(&self) -> usize {
        self.slots.len()
    }

    /// The number of indices covered by present entries (what `nrpages` must equal for a DAX
    /// mapping).
    pub fn nr_indices(&self) -> u64 {
        self.slots.values().map(|s| 1u64 << s.order).sum()
    }

    /// Every present entry whose range intersects `[first, last]`, in index order.
    pub fn items(&self, first: u64, last: u64) -> impl Iterator<Item = XaItem> + '_ {
        let lead = self
            .covering(first)
            .filter(|(s0, _)| *s0 < first)
            .map(|(s0, s)| (s0, *s));
        lead.into_iter()
            .chain(
                self.slots
                    .range((Bound::Included(first), Bound::Included(last)))
                    .map(|(&k, s)| (k, *s)),
            )
            .map(|(k, s)| XaItem {
                index: k,
                order: s.order,
                entry: s.entry,
                marks: s.marks,
            })
    }

    /// Every present entry, in index order.
    pub fn all_items(&self) -> impl Iterator<Item = XaItem> + '_ {
        self.items(0, u64::MAX)
    }
}

/// The xarray operations, on the xarray itself or through the i_pages lock's guard. Through
/// the guard (a lock with parts, `AddressSpace::i_pages`), each operation announces the indices
/// it depends on and the ones it changes (`SpinLockGuard::part`/`part_mut`), so that critical
/// sections on disjoint indices commute (sim-core `sim` "Footprints"); any other access
/// through the guard (`nrpages`, `items`, `xa_marked`, ...) counts as the whole array. Import
/// it where the guard is used: without it, a call reaches the xarray through `Deref` (a
/// whole-array access, sound and coarser).
///
/// The ranges, stated once: an operation that reads index `i` (a load, a mark test) depends
/// on `[i, i + 1)`; a multi-index load, `xas_find_conflict` and the `xas_find*` iterations on
/// the indices they looked at ([`Seen`]): from where the walk starts (the index the state
/// covers on a restart, else the end of the entry last returned) to the first index of the
/// entry they stop at, or to their end when they find none; an entry covering the start is
/// found through that one index. A walk depends on nothing past the entry it stops at: a
/// change there adds or removes entries after it, or changes them, and the walk stops before. An operation that changes an entry (a store, a mark change) changes
/// the whole range of every entry it touches: the entry covering the start (of any order, so a
/// PMD entry at 0x200 is `[0x200, 0x400)`) and the state's own range. A change of an entry thus
/// overlaps every read of an index the entry covers, before or after the change.
pub trait XaOps {
    fn xa_load(&self, index: u64) -> XaEntry;
    fn lookup(&self, index: u64) -> Option<XaItem>;
    fn xas_load(&self, xas: &mut XaState) -> XaEntry;
    fn xas_store(&mut self, xas: &mut XaState, entry: XaEntry) -> XaEntry;
    fn xas_find_conflict(&self, xas: &mut XaState) -> XaEntry;
    fn xas_find(&self, xas: &mut XaState, max: u64) -> XaEntry;
    fn xas_find_marked(&self, xas: &mut XaState, max: u64, mark: XaMark) -> XaEntry;
    fn xas_get_mark(&self, xas: &XaState, mark: XaMark) -> bool;
    fn xas_set_mark(&mut self, xas: &XaState, mark: XaMark);
    fn xas_clear_mark(&mut self, xas: &XaState, mark: XaMark);
    fn xas_init_marks(&mut self, xas: &XaState);
    /// `mapping->nrpages += delta`: through the guard an addition to a counter of its own
    /// ([`XA_NRPAGES_KEY`]), which commutes with other additions (a read of `nrpages` reads the
    /// whole array).
    fn nrpages_add(&mut self, delta: i64);
    fn xa_get_mark(&self, index: u64, mark: XaMark) -> bool {
        self.xas_get_mark(&XaState::new(index), mark)
    }
    fn xa_store(&mut self, index: u64, entry: XaEntry) -> XaEntry {
        self.xas_store(&mut XaState::new(index), entry)
    }
    fn xa_store_order(&mut self, index: u64, order: u8, entry: XaEntry) -> XaEntry {
        self.xas_store(&mut XaState::new_order(index, order), entry)
    }
    fn xa_erase(&mut self, index: u64) -> XaEntry {
        self.xa_store(index, XaEntry::NULL)
    }
}

/// The key `nrpages` has among the xarray's parts: past every index a part can name apart
/// (sim-core `Op::part` folds keys from 2^32 - 1 on into one, so it also overlaps the ranges of
/// scans that run to the end: conservative).
pub const XA_NRPAGES_KEY: u64 = u64::MAX;

impl XaOps for XArray {
    fn nrpages_add(&mut self, delta: i64) {
        self.nrpages = self
            .nrpages
            .checked_add_signed(delta)
            .expect("nrpages under- or overflow");
    }
    fn xa_load(&self, index: u64) -> XaEntry {
        XArray::xa_load(self, index)
    }
    fn lookup(&self, index: u64) -> Option<XaItem> {
        XArray::lookup(self, index)
    }
    fn xas_load(&self, xas: &mut XaState) -> XaEntry {
        XArray::xas_load(self, xas)
    }
    fn xas_store(&mut self, xas: &mut XaState, entry: XaEntry) -> XaEntry {
        XArray::xas_store(self, xas, entry)
    }
    fn xas_find_conflict(&self, xas: &mut XaState) -> XaEntry {
        XArray::xas_find_conflict(self, xas)
    }
    fn xas_find(&self, xas: &mut XaState, max: u64) -> XaEntry {
        XArray::xas_find(self, xas, max)
    }
    fn xas_find_marked(&self, xas: &mut XaState, max: u64, mark: XaMark) -> XaEntry {
        XArray::xas_find_marked(self, xas, max, mark)
    }
    fn xas_get_mark(&self, xas: &XaState, mark: XaMark) -> bool {
        XArray::xas_get_mark(self, xas, mark)
    }
    fn xas_set_mark(&mut self, xas: &XaState, mark: XaMark) {
        XArray::xas_set_mark(self, xas, mark)
    }
    fn xas_clear_mark(&mut self, xas: &XaState, mark: XaMark) {
        XArray::xas_clear_mark(self, xas, mark)
    }
    fn xas_init_marks(&mut self, xas: &XaState) {
        XArray::xas_init_marks(self, xas)
    }
}

/// The range `[first, end)` an operation at `xas`'s index and order changes: its own range
/// joined with that of the entry covering its start (see [`XaOps`]).
fn changed_range(xa: &XArray, xas: &XaState) -> (u64, u64) {
    let (first, end) = (xas.xa_index, xas.xa_index.saturating_add(xas.nr()));
    match xa.covering(first) {
        Some((s0, s)) => (s0.min(first), end.max(s0 + (1u64 << s.order))),
        None => (first, end),
    }
}

impl<P: Platform> XaOps for SpinLockGuard<'_, P, XArray> {
    fn nrpages_add(&mut self, delta: i64) {
        XaOps::nrpages_add(self.part_add(XA_NRPAGES_KEY), delta)
    }
    fn xa_load(&self, index: u64) -> XaEntry {
        self.part(index, 1).xa_load(index)
    }
    fn lookup(&self, index: u64) -> Option<XaItem> {
        self.part(index, 1).lookup(index)
    }
    fn xas_load(&self, xas: &mut XaState) -> XaEntry {
        self.part_seen(|xa| {
            let (e, (first, end)) = xa.xas_load_seen(xas);
            (e, first, end - first)
        })
    }
    fn xas_store(&mut self, xas: &mut XaState, entry: XaEntry) -> XaEntry {
        // The covering entry is found through a read of the start, which the store changes.
        let (first, end) = changed_range(self.part(xas.xa_index, 1), xas);
        self.part_mut(first, end - first).xas_store(xas, entry)
    }
    fn xas_find_conflict(&self, xas: &mut XaState) -> XaEntry {
        self.part_seen(|xa| {
            let (e, (first, end)) = xa.xas_find_conflict_seen(xas);
            (e, first, end - first)
        })
    }
    fn xas_find(&self, xas: &mut XaState, max: u64) -> XaEntry {
        self.part_seen(|xa| {
            let (e, (first, end)) = xa.find_filtered_seen(xas, max, None);
            (e, first, end - first)
        })
    }
    fn xas_find_marked(&self, xas: &mut XaState, max: u64, mark: XaMark) -> XaEntry {
        self.part_seen(|xa| {
            let (e, (first, end)) = xa.find_filtered_seen(xas, max, Some(mark));
            (e, first, end - first)
        })
    }
    fn xas_get_mark(&self, xas: &XaState, mark: XaMark) -> bool {
        self.part(xas.xa_index, 1).xas_get_mark(xas, mark)
    }
    fn xas_set_mark(&mut self, xas: &XaState, mark: XaMark) {
        let one = XaState::new(xas.xa_index);
        let (first, end) = changed_range(self.part(xas.xa_index, 1), &one);
        self.part_mut(first, end - first).xas_set_mark(xas, mark)
    }
    fn xas_clear_mark(&mut self, xas: &XaState, mark: XaMark) {
        let one = XaState::new(xas.xa_index);
        let (first, end) = changed_range(self.part(xas.xa_index, 1), &one);
        self.part_mut(first, end - first).xas_clear_mark(xas, mark)
    }
    fn xas_init_marks(&mut self, xas: &XaState) {
        let one = XaState::new(xas.xa_index);
        let (first, end) = changed_range(self.part(xas.xa_index, 1), &one);
        self.part_mut(first, end - first).xas_init_marks(xas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dax_entry::*;

    /// The contract of [`Seen`], on random arrays: a read run again after a change of entries
    /// outside what it saw (a store or a mark change, with the range [`XaOps`] announces for
    /// it) gives the same answer and leaves the same `XaState`. Reads: loads of order 0 and 9,
    /// `xas_find_conflict`, `xas_find` and `xas_find_marked`, each from a restart and from the
    /// position a first call left.
    #[test]
    fn a_read_answers_the_same_after_a_change_outside_what_it_saw() {
        use rand::{RngExt, SeedableRng};
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let (mut checked, mut narrower) = (0, 0);
        for _ in 0..20_000 {
            let mut xa = XArray::new();
            for _ in 0..r.random_range(0..6) {
                let order = if r.random_bool(0.3) { 9 } else { 0 };
                let mut xas = XaState::new_order(r.random_range(0..0x600), order);
                xa.xas_store(&mut xas, xa_mk_value(r.random_range(1..100)));
                if r.random_bool(0.5) {
                    xa.xas_set_mark(&xas, PAGECACHE_TAG_DIRTY);
                }
            }
            let order = if r.random_bool(0.5) { 9 } else { 0 };
            let start = XaState::new_order(r.random_range(0..0x600), order);
            let max = r.random_range(0..0x700);
            let kind = r.random_range(0..4);
            let again = r.random_bool(0.5);
            let read = |xa: &XArray| {
                let mut xas = start;
                let go = |xas: &mut XaState| match kind {
                    0 => xa.xas_load_seen(xas),
                    1 => xa.xas_find_conflict_seen(xas),
                    2 => xa.find_filtered_seen(xas, max, None),
                    _ => xa.find_filtered_seen(xas, max, Some(PAGECACHE_TAG_DIRTY)),
                };
                // Each call announces what it saw; the read depends on them all.
                let (mut e, first) = go(&mut xas);
                let mut seen = vec![first];
                if again {
                    let (e2, s2) = go(&mut xas);
                    (e, seen) = (e2, [seen, vec![s2]].concat());
                }
                (e, seen, xas)
            };
            let (entry, seen, xas) = read(&xa);
            // The change, and the range the guard announces for it.
            let mut changed = xa.clone();
            let order = if r.random_bool(0.3) { 9 } else { 0 };
            // Often at an edge: an entry's first index, or either side of a seen range's end.
            let mut edges: Vec<u64> = xa.slots.keys().copied().collect();
            for &(_, end) in &seen {
                edges.extend([end.saturating_sub(1), end]);
            }
            let at = if r.random_bool(0.5) {
                edges[r.random_range(0..edges.len())]
            } else {
                r.random_range(0..0x600)
            };
            let mut w = XaState::new_order(at, order);
            let (c0, c1) = changed_range(&changed, &w);
            match r.random_range(0..4) {
                0 => {
                    changed.xas_store(&mut w, XaEntry::NULL);
                }
                1 => {
                    changed.xas_store(&mut w, xa_mk_value(r.random_range(100..200)));
                }
                2 => changed.xas_set_mark(&w, PAGECACHE_TAG_DIRTY),
                _ => changed.xas_clear_mark(&w, PAGECACHE_TAG_DIRTY),
            }
            if seen.iter().any(|&(first, end)| c0 < end && first < c1) {
                continue; // the change overlaps what the read saw
            }
            let (e2, _, xas2) = read(&changed);
            assert_eq!(
                (e2, xas2),
                (entry, xas),
                "read {kind} (again {again}) from {start:?} max {max:#x} saw {seen:x?}; change \
                 at {w:?} of [{c0:#x}, {c1:#x})\n{xa:?}\n{changed:?}"
            );
            checked += 1;
            // Where a walk stopped early, the range is narrower than the one it may visit.
            let end = seen.iter().map(|s| s.1).max().unwrap_or(0);
            if end < start.xa_index.saturating_add(start.nr()).max(max) {
                narrower += 1;
            }
        }
        assert!(
            checked > 5_000 && narrower > 1_000,
            "{checked} checked, {narrower} narrower"
        );
    }

    #[test]
    fn value_encoding_matches_the_kernel() {
        assert_eq!(xa_mk_value(0).0, 1);
        assert_eq!(xa_mk_value(0x12).0, 0x25);
        assert_eq!(xa_to_value(xa_mk_value(0x1234)), 0x1234);
        assert_eq!(XA_RETRY_ENTRY.0, 0x402);
        assert!(XA_RETRY_ENTRY.is_internal() && !XA_RETRY_ENTRY.is_node());
        assert!(XA_NODE_ENTRY.is_node());
        assert!(XaEntry::from_folio_pfn(7).is_pointer());
    }

    #[test]
    fn a_pmd_entry_covers_512_indices() {
        let mut xa = XArray::new();
        let e = dax_make_entry(0x200, DAX_PMD);
        assert!(xa.xa_store_order(1000, 9, e).is_null());
        // Rounded down to 512.
        for i in [512, 513, 700, 1023] {
            assert_eq!(xa.xa_load(i), e, "index {i}");
        }
        assert!(xa.xa_load(511).is_null());
        assert!(xa.xa_load(1024).is_null());
        assert_eq!(xa.nr_entries(), 1);
        assert_eq!(xa.nr_indices(), 512);
    }

    #[test]
    fn order0_store_inside_a_pmd_entry_replaces_the_whole_entry() {
        let mut xa = XArray::new();
        let e = dax_make_entry(0x200, DAX_PMD);
        xa.xa_store_order(0, 9, e);
        let mut xas = XaState::new(5);
        xa.xas_set_mark(&xas, PAGECACHE_TAG_DIRTY);
        // dax_lock_entry through an order-0 state locks the whole PMD entry.
        let locked = XaEntry(e.0 | (DAX_LOCKED << 1));
        assert_eq!(xa.xas_store(&mut xas, locked), e);
        assert_eq!(xa.xa_load(0), locked);
        assert_eq!(xa.xa_load(511), locked);
        assert!(xa.xa_get_mark(300, PAGECACHE_TAG_DIRTY), "marks survive");
        // Storing NULL through an order-0 state erases the whole multi-index entry.
        assert_eq!(xa.xas_store(&mut xas, XaEntry::NULL), locked);
        assert!(xa.xa_empty());
    }

    #[test]
    fn find_conflict_reports_a_smaller_entry_inside_the_range() {
        let mut xa = XArray::new();
        let pte = dax_make_entry(0x1005, 0);
        xa.xa_store(512 + 5, pte);
        // A PMD-order lookup over 512..1024 sees the order-0 entry at 517...
        let mut xas = XaState::new_order(600, 9);
        assert_eq!(xas.xa_index, 512);
        assert_eq!(xa.xas_find_conflict(&mut xas), pte);
        // ...without moving xa_index (fs/dax.c keys its wait on xa_index).
        assert_eq!(xas.xa_index, 512);
        assert!(dax_entry_order(pte) < 9, "the caller sees a conflict");
        assert!(xa.xas_find_conflict(&mut xas).is_null());
        // xas_load at order 9 returns the node.
        xas.reset();
        assert!(xa.xas_load(&mut xas).is_node());
        // The neighbouring PMD range is free.
        let mut xas2 = XaState::new_order(1024, 9);
        assert!(xa.xas_find_conflict(&mut xas2).is_null());
        assert!(xa.xas_load(&mut xas2).is_null());
    }

    #[test]
    fn find_conflict_at_order0_returns_the_covering_pmd_entry() {
        let mut xa = XArray::new();
        let pmd = dax_make_entry(0x400, DAX_PMD | DAX_LOCKED);
        xa.xa_store_order(0, 9, pmd);
        let mut xas = XaState::new(77);
        assert_eq!(xa.xas_find_conflict(&mut xas), pmd);
        assert_eq!(xas.xa_index, 77);
        assert!(xa.xas_find_conflict(&mut xas).is_null());
    }

    #[test]
    fn find_conflict_iterates_every_entry_in_the_range() {
        let mut xa = XArray::new();
        for i in [3u64, 9, 500] {
            xa.xa_store(i, dax_make_entry(i, 0));
        }
        xa.xa_store(512, dax_make_entry(512, 0));
        let mut xas = XaState::new_order(0, 9);
        let mut seen = vec![];
        loop {
            let e = xa.xas_find_conflict(&mut xas);
            if e.is_null() {
                break;
            }
            seen.push(dax_to_pfn(e));
        }
        assert_eq!(seen, vec![3, 9, 500]);
    }

    #[test]
    fn storing_a_pmd_over_smaller_entries_removes_them_and_squashes_marks() {
        let mut xa = XArray::new();
        xa.xa_store(3, dax_make_entry(3, 0));
        xa.xa_store(7, dax_make_entry(7, 0));
        xa.xas_set_mark(&XaState::new(7), PAGECACHE_TAG_TOWRITE);
        let pmd = dax_make_entry(0x200, DAX_PMD);
        let old = xa.xa_store_order(0, 9, pmd);
        assert!(old.is_node());
        assert_eq!(xa.nr_entries(), 1);
        assert!(xa.xa_get_mark(0, PAGECACHE_TAG_TOWRITE));
        // Erasing at order 9 clears the range again.
        assert_eq!(xa.xa_store_order(0, 9, XaEntry::NULL), pmd);
        assert!(xa.xa_empty());
    }

    #[test]
    fn marks_follow_entries_and_are_cleared_by_erase() {
        let mut xa = XArray::new();
        xa.xa_store(10, dax_make_entry(1, 0));
        xa.xa_store(20, dax_make_entry(2, 0));
        let x10 = XaState::new(10);
        xa.xas_set_mark(&x10, PAGECACHE_TAG_DIRTY);
        assert!(xa.xa_marked(PAGECACHE_TAG_DIRTY));
        assert!(!xa.xa_get_mark(20, PAGECACHE_TAG_DIRTY));
        // Replacing the entry keeps the mark (dax_lock_entry / dax_unlock_entry rely on it).
        xa.xa_store(10, dax_make_entry(1, DAX_LOCKED));
        assert!(xa.xa_get_mark(10, PAGECACHE_TAG_DIRTY));
        xa.xas_clear_mark(&x10, PAGECACHE_TAG_DIRTY);
        assert!(!xa.xa_marked(PAGECACHE_TAG_DIRTY));
        xa.xas_set_mark(&x10, PAGECACHE_TAG_DIRTY);
        xa.xa_erase(10);
        xa.xa_store(10, dax_make_entry(1, 0));
        assert!(!xa.xa_get_mark(10, PAGECACHE_TAG_DIRTY), "erase cleared it");
        // Marking an empty index does nothing.
        xa.xas_set_mark(&XaState::new(15), PAGECACHE_TAG_DIRTY);
        assert!(!xa.xa_marked(PAGECACHE_TAG_DIRTY));
    }

    #[test]
    fn find_and_find_marked_walk_in_order_and_pause() {
        let mut xa = XArray::new();
        xa.xa_store(1, dax_make_entry(1, 0));
        xa.xa_store_order(512, 9, dax_make_entry(0x200, DAX_PMD));
        xa.xa_store(2000, dax_make_entry(3, 0));
        xa.xas_set_mark(&XaState::new(600), PAGECACHE_TAG_DIRTY);
        xa.xas_set_mark(&XaState::new(2000), PAGECACHE_TAG_DIRTY);

        let mut xas = XaState::new(0);
        let mut idx = vec![];
        loop {
            let e = xa.xas_find(&mut xas, 1999);
            if e.is_null() {
                break;
            }
            idx.push(xas.xa_index);
        }
        assert_eq!(idx, vec![1, 512]);

        // Starting inside the PMD entry returns it without moving the index.
        let mut xas = XaState::new(700);
        assert_eq!(xa.xas_find(&mut xas, u64::MAX), xa.xa_load(512));
        assert_eq!(xas.xa_index, 700);
        xas.pause();
        assert_eq!(xas.xa_index, 1024);
        assert_eq!(dax_to_pfn(xa.xas_find(&mut xas, u64::MAX)), 3);
        assert_eq!(xas.xa_index, 2000);

        let mut xas = XaState::new(0);
        let mut marked = vec![];
        loop {
            let e = xa.xas_find_marked(&mut xas, u64::MAX, PAGECACHE_TAG_DIRTY);
            if e.is_null() {
                break;
            }
            marked.push(xas.xa_index);
        }
        assert_eq!(marked, vec![512, 2000]);
    }

    #[test]
    fn items_include_the_entry_covering_the_start() {
        let mut xa = XArray::new();
        xa.xa_store_order(0, 9, dax_make_entry(0x200, DAX_PMD));
        xa.xa_store(600, dax_make_entry(1, 0));
        let v: Vec<_> = xa.items(100, 600).map(|i| (i.index, i.order)).collect();
        assert_eq!(v, vec![(0, 9), (600, 0)]);
        assert_eq!(xa.items(601, 700).count(), 0);
    }
}
