//! Entry locking (research/linux_dax.md section 2) and page association (section 7).
//!
//! The entry bits (`DAX_LOCKED`, `DAX_PMD`, `DAX_ZERO_PAGE`, `DAX_EMPTY`) are explained once in
//! `crate::dax_entry`. A DAX entry is locked by storing it with `DAX_LOCKED` under the i_pages
//! lock; whoever finds it locked sleeps on the hashed wait queue of its key
//! (`{xa, entry_start}`) and is woken by the unlocker. Functions that take the i_pages lock
//! across a sleep take the guard by value and hand it back, so "i_pages lock held" is a type.

use super::{Dax, DaxBug, Release};
use crate::dax_entry::{
    DAX_LOCKED, PG_PMD_COLOUR, dax_entry_nr_pfns, dax_entry_order, dax_is_conflict,
    dax_is_empty_entry, dax_is_locked, dax_is_pmd_entry, dax_is_zero_entry, dax_to_pfn,
};
use crate::mm::VmaBounds;
use crate::world::AddressSpace;
use crate::xarray::{XA_RETRY_ENTRY, XArray, XaEntry, XaOps, XaState, xa_mk_value, xa_to_value};
use sim_core::platform::SpinLockGuard;
use sim_core::platform::{bug_on, warn_on};
use sim_core::{Platform, WaitKey, WaitQueue, WakeMode};

/// The i_pages lock held, with the xarray it guards.
pub type XaGuard<'a, P> = SpinLockGuard<'a, P, XArray>;

/// `enum dax_wake_mode`: `WAKE_NEXT` wakes one exclusive waiter (and the matching
/// non-exclusive ones ahead of it), `WAKE_ALL` every waiter of the key.
pub type DaxWakeMode = WakeMode;

/// `GOLDEN_RATIO_64` of `hash_64`.
const GOLDEN_RATIO_64: u64 = 0x61c8_8646_80b5_83eb;

/// `hash_long(val, bits)` on a 64-bit kernel.
pub const fn hash_long(val: u64, bits: u32) -> u64 {
    val.wrapping_mul(GOLDEN_RATIO_64) >> (64 - bits)
}

/// The address the model gives `&mapping->i_pages` (the `xa` of the key; only the hash uses it).
pub const fn xa_ptr(mapping_id: u32) -> u64 {
    0xffff_8880_0000_0000 | ((mapping_id as u64) << 12)
}

/// `struct exceptional_entry_key` as a [`WaitKey`]: `{mapping id, entry_start}`.
pub fn exceptional_entry_key(mapping_id: u32, entry_start: u64) -> WaitKey {
    WaitKey(mapping_id as u64, entry_start)
}

/// The key and the bucket of `dax_entry_waitqueue(xas, entry, &key)`: `entry_start` is the xas
/// index, rounded down to the PMD start only when `entry` is a PMD entry, so that every index
/// covered by a PMD entry maps to one key. (A PTE entry found by a PMD-order lookup keeps the
/// PMD-aligned xas index, because `xas_find_conflict` does not move it: the root of the 2019
/// missed wakeup.)
pub fn dax_entry_key(mapping_id: u32, xas: &XaState, entry: XaEntry) -> (WaitKey, usize) {
    dax_entry_key_bits(mapping_id, xas, entry, super::DAX_WAIT_TABLE_BITS)
}

/// [`dax_entry_key`] for a table of `1 << bits` buckets.
pub fn dax_entry_key_bits(
    mapping_id: u32,
    xas: &XaState,
    entry: XaEntry,
    bits: u32,
) -> (WaitKey, usize) {
    let mut index = xas.xa_index;
    if dax_is_pmd_entry(entry) {
        index &= !PG_PMD_COLOUR;
    }
    let bucket = hash_long(xa_ptr(mapping_id) ^ index, bits) as usize;
    (exceptional_entry_key(mapping_id, index), bucket)
}

/// `dax_entry_waitqueue`: the wait queue and key for `entry` at the xas position.
pub fn dax_entry_waitqueue<'d, P: Platform>(
    dax: &'d Dax<P>,
    mapping: &AddressSpace<P>,
    xas: &XaState,
    entry: XaEntry,
) -> (&'d WaitQueue<P>, WaitKey) {
    let (key, bucket) = dax_entry_key_bits(mapping.id.0, xas, entry, dax.wait_table_bits());
    (dax.wait_queue(bucket), key)
}

/// `wake_exceptional_entry_func`: a waiter with a different key (another file, another entry
/// hashed to the same bucket) is neither woken nor counted against `WAKE_NEXT`'s one exclusive
/// wake-up.
pub fn wake_exceptional_entry_func(waiter: &WaitKey, wake: &WaitKey) -> bool {
    waiter == wake
}

/// `dax_wake_entry(xas, entry, mode)`: wake the waiters of `entry`'s key. Callers change the
/// entry under the i_pages lock before calling this; waiters test the entry and queue under the
/// same lock, so everyone who saw the entry locked is on the queue by now. (The kernel skips
/// `__wake_up` when `waitqueue_active` is false; a wake-up of an empty queue changes nothing, so
/// the model goes straight to it and saves a scheduling point.)
pub async fn dax_wake_entry<P: Platform>(
    dax: &Dax<P>,
    p: &P,
    mapping: &AddressSpace<P>,
    xas: &XaState,
    entry: XaEntry,
    mode: DaxWakeMode,
) {
    let _fn = p.enter_fn("dax_wake_entry");
    let (wq, key) = dax_entry_waitqueue(dax, mapping, xas, entry);
    wq.wake_up(p, key, mode).await;
}

/// Sleep on `entry`'s key with the i_pages lock held on entry: queue first (exclusive or not),
/// then drop the lock, sleep, dequeue. Returns without the lock.
async fn sleep_on_entry<P: Platform>(
    dax: &Dax<P>,
    p: &P,
    mapping: &AddressSpace<P>,
    xa: XaGuard<'_, P>,
    xas: &XaState,
    entry: XaEntry,
    exclusive: bool,
) {
    let (wq, key) = dax_entry_waitqueue(dax, mapping, xas, entry);
    let w = wq
        .prepare_to_wait(p, key, exclusive, wake_exceptional_entry_func)
        .await;
    xa.release(dax.release_steps).await;
    wq.schedule(p, w).await;
    wq.finish_wait(p, w).await;
}

/// `get_next_unlocked_entry(xas, order)`, called with the i_pages lock held; returns it held.
///
/// Returns the first entry in the xas range (`xas_find_conflict`) once it is unlocked: NULL, a
/// non-value entry (returned as is), an unlocked entry of order >= `order` (possibly larger than
/// asked), or [`XA_RETRY_ENTRY`] (`dax_is_conflict`) when a smaller entry sits in the range,
/// without waiting for it. The caller owes a `put_unlocked_entry` or a `dax_unlock_entry` after
/// locking what it got.
pub async fn get_next_unlocked_entry<'a, P: Platform>(
    dax: &Dax<P>,
    p: &P,
    mapping: &'a AddressSpace<P>,
    mut xa: XaGuard<'a, P>,
    xas: &mut XaState,
    order: u8,
) -> (XaGuard<'a, P>, XaEntry) {
    let _fn = p.enter_fn("get_next_unlocked_entry");
    loop {
        let entry = xa.xas_find_conflict(xas);
        // pmd-conflict-before-null (the 5.3 code of 23c84eb78375): the order test ran first,
        // and NULL has order 0, so an empty range looked like a smaller entry.
        if dax.bug(DaxBug::PmdConflictBeforeNull) && dax_entry_order(entry) < order {
            return (xa, XA_RETRY_ENTRY);
        }
        if entry.is_null() {
            return (xa, entry);
        }
        if !entry.is_value() {
            // (A 4.x hole page is a page-cache page there, bug mode shadow-entries.)
            warn_on(
                p,
                !super::invalidate::is_hole_page(dax, entry),
                "dax-non-value-entry",
                || {
                    format!(
                        "get_next_unlocked_entry: ino {} index {:#x} holds {entry:?}",
                        mapping.host, xas.xa_index
                    )
                },
            )
            .await;
            return (xa, entry);
        }
        // pmd-missed-wakeup (4.20 .. 5.2): no order argument, so a PMD-order lookup that finds
        // a smaller locked entry waits for it below, keyed on the PMD-aligned xas index.
        if !dax.bug(DaxBug::PmdMissedWakeup) && dax_entry_order(entry) < order {
            return (xa, XA_RETRY_ENTRY);
        }
        if !dax_is_locked(entry) {
            return (xa, entry);
        }
        sleep_on_entry(dax, p, mapping, xa, xas, entry, true).await;
        xas.reset();
        xa = mapping.i_pages.lock(p).await;
    }
}

/// `wait_entry_unlocked_exclusive(xas, entry)` (6.15), called with the i_pages lock held on a
/// locked or unlocked `entry` at the xas position; returns it held. Waits on the current slot
/// without advancing the iteration (`xas_load` of the same index after the sleep); NULL when the
/// slot emptied meanwhile (or holds an internal entry).
pub async fn wait_entry_unlocked_exclusive<'a, P: Platform>(
    dax: &Dax<P>,
    p: &P,
    mapping: &'a AddressSpace<P>,
    mut xa: XaGuard<'a, P>,
    xas: &mut XaState,
    mut entry: XaEntry,
) -> (XaGuard<'a, P>, XaEntry) {
    let _fn = p.enter_fn("wait_entry_unlocked_exclusive");
    while entry.is_value() && dax_is_locked(entry) {
        let (wq, key) = dax_entry_waitqueue(dax, mapping, xas, entry);
        let w = wq
            .prepare_to_wait(p, key, true, wake_exceptional_entry_func)
            .await;
        // The next load looks at the same index again.
        xas.reset();
        xa.release(dax.release_steps).await;
        wq.schedule(p, w).await;
        wq.finish_wait(p, w).await;
        xa = mapping.i_pages.lock(p).await;
        entry = xa.xas_load(xas);
    }
    if entry.is_internal() {
        return (xa, XaEntry::NULL);
    }
    (xa, entry)
}

/// `wait_entry_unlocked(xas, entry)`: one **non-exclusive** wait for the locked `entry`,
/// consuming the i_pages lock. The caller (`dax_lock_folio`, `dax_lock_mapping_entry`) retries
/// from scratch afterwards and may never lock the entry, so it must not take an exclusive
/// wake-up it would not pass on; and after the unlock it must not touch the mapping (the inode
/// may be gone), which is why the key is computed first.
pub async fn wait_entry_unlocked<P: Platform>(
    dax: &Dax<P>,
    p: &P,
    mapping: &AddressSpace<P>,
    xa: XaGuard<'_, P>,
    xas: &XaState,
    entry: XaEntry,
) {
    let _fn = p.enter_fn("wait_entry_unlocked");
    // lock-entry-exclusive-wait: the exclusive wait before 25bbe21bf427; a woken task that
    // found the entry gone never passed the wake-up on.
    let exclusive = dax.bug(DaxBug::LockEntryExclusiveWait);
    sleep_on_entry(dax, p, mapping, xa, xas, entry, exclusive).await;
}

/// `put_unlocked_entry(xas, entry, mode)`: a task that got an unlocked entry from
/// `get_next_unlocked_entry` and will not lock it passes on the wake-up it may have consumed
/// (none for NULL or a conflict).
pub async fn put_unlocked_entry<P: Platform>(
    dax: &Dax<P>,
    p: &P,
    mapping: &AddressSpace<P>,
    xas: &XaState,
    entry: XaEntry,
    mode: DaxWakeMode,
) {
    let _fn = p.enter_fn("put_unlocked_entry");
    if !entry.is_null() && !dax_is_conflict(entry) {
        dax_wake_entry(dax, p, mapping, xas, entry, mode).await;
    }
}

/// `dax_lock_entry(xas, entry)`, with the i_pages lock held: store `entry` locked at the xas
/// position; returns what was there.
pub fn dax_lock_entry(xa: &mut impl XaOps, xas: &mut XaState, entry: XaEntry) -> XaEntry {
    let v = xa_to_value(entry);
    xa.xas_store(xas, xa_mk_value(v | DAX_LOCKED))
}

/// `dax_unlock_entry(xas, entry)`: store the unlocked `entry` over the locked one (taking and
/// dropping the i_pages lock) and wake the next waiter.
pub async fn dax_unlock_entry<P: Platform>(
    dax: &Dax<P>,
    p: &P,
    mapping: &AddressSpace<P>,
    xas: &mut XaState,
    entry: XaEntry,
) {
    let _fn = p.enter_fn("dax_unlock_entry");
    // Invariant (both sides of one store): the entry we store is unlocked, the one we replace
    // is locked (by us).
    bug_on(p, dax_is_locked(entry), "dax-unlock-locked-entry", || {
        format!(
            "dax_unlock_entry: ino {} index {:#x}: new entry {entry:?} is locked",
            mapping.host, xas.xa_index
        )
    })
    .await;
    xas.reset();
    let mut xa = mapping.i_pages.lock(p).await;
    let old = xa.xas_store(xas, entry);
    xa.release(dax.release_steps).await;
    bug_on(
        p,
        !old.is_value() || !dax_is_locked(old),
        "dax-unlock-unlocked-entry",
        || {
            format!(
                "dax_unlock_entry: ino {} index {:#x}: replaced {old:?}, which was not locked",
                mapping.host, xas.xa_index
            )
        },
    )
    .await;
    dax_wake_entry(dax, p, mapping, xas, entry, WakeMode::Next).await;
}

/// `dax_associate_entry(entry, mapping, vma, address, shared)`: point the pages of a
/// block-backed entry at their owner (`mapping`, `index`), or count one more owner of a page
/// shared by reflink (`mapping` NULL, `share` += 1). Zero and empty entries own no page. The
/// caller holds the entry lock.
pub async fn dax_associate_entry<P: Platform>(
    dax: &Dax<P>,
    p: &P,
    mapping: &AddressSpace<P>,
    vma: &VmaBounds,
    address: u64,
    entry: XaEntry,
    shared: bool,
) {
    let _fn = p.enter_fn("dax_associate_entry");
    if dax_is_zero_entry(entry) || dax_is_empty_entry(entry) {
        return;
    }
    let nr = dax_entry_nr_pfns(entry);
    let size = nr << crate::dax_entry::PAGE_SHIFT;
    let index = vma.linear_page_index(address & !(size - 1));
    let id = mapping.id.0;
    let mut owned = None;
    dax.world
        .memmap
        .update(p, dax_to_pfn(entry), nr, |pfn, pg| {
            if shared && (pg.mapping != 0 || pg.share != 0) {
                // dax_page_make_shared: the first owner becomes one of the shares.
                if pg.mapping != 0 {
                    pg.mapping = 0;
                    pg.share = 1;
                }
                pg.share += 1;
            } else {
                if pg.mapping != 0 && owned.is_none() {
                    owned = Some((pfn, pg.mapping, pg.index));
                }
                pg.mapping = id;
                pg.index = index + (pfn - dax_to_pfn(entry));
            }
        })
        .await;
    warn_on(p, owned.is_some(), "dax-associate-owned-page", || {
        let (pfn, m, i) = owned.unwrap_or_default();
        format!("dax_associate_entry: pfn {pfn:#x} already belongs to mapping {m} index {i:#x}")
    })
    .await;
}

/// `dax_disassociate_entry(entry, mapping, trunc)`: the pages of a block-backed entry lose this
/// owner (one share of a shared page, or `mapping`/`index`). With `trunc`, a page still
/// referenced beyond its mappings (a pin) is a bug of the caller, who should have waited for it.
pub async fn dax_disassociate_entry<P: Platform>(
    dax: &Dax<P>,
    p: &P,
    mapping: &AddressSpace<P>,
    entry: XaEntry,
    trunc: bool,
) {
    let _fn = p.enter_fn("dax_disassociate_entry");
    if !entry.is_value() || dax_is_zero_entry(entry) || dax_is_empty_entry(entry) {
        return;
    }
    let id = mapping.id.0;
    let mut foreign = None;
    let mut busy = None;
    dax.world
        .memmap
        .update(p, dax_to_pfn(entry), dax_entry_nr_pfns(entry), |pfn, pg| {
            if trunc && pg.extra_refs() > 0 && busy.is_none() {
                busy = Some(pfn);
            }
            if pg.share > 0 {
                pg.share -= 1;
                if pg.share > 0 {
                    return;
                }
            } else if pg.mapping != 0 && pg.mapping != id && foreign.is_none() {
                foreign = Some((pfn, pg.mapping));
            }
            pg.mapping = 0;
            pg.index = 0;
        })
        .await;
    warn_on(p, busy.is_some(), "dax-disassociate-busy-page", || {
        format!(
            "dax_disassociate_entry(trunc): pfn {:#x} is still referenced",
            busy.unwrap_or(0)
        )
    })
    .await;
    warn_on(
        p,
        foreign.is_some(),
        "dax-disassociate-foreign-page",
        || {
            let (pfn, m) = foreign.unwrap_or_default();
            format!("dax_disassociate_entry: pfn {pfn:#x} belongs to mapping {m}, not {id}")
        },
    )
    .await;
}
