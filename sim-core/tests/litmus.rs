//! Persistency litmus tests: each runs a short program on the machine model and asserts the
//! exact set of crash outcomes the crash-image enumeration yields (crash_checkers.md section 3:
//! what Px86 must allow and must forbid).

use sim_core::machine::{CrashOptions, Machine, MachineConfig};
use std::collections::BTreeSet;

const A: u64 = 0x1000;
const B: u64 = 0x2000;
const C: u64 = 0x3000;

/// A machine and a running clock.
struct Run {
    m: Machine,
    now: u64,
}

impl Run {
    fn new(settings: &[(&str, &str)]) -> Run {
        let mut cfg = MachineConfig::default();
        cfg.set("pmem", "1MiB").unwrap();
        for (k, v) in settings {
            cfg.set(k, v).unwrap();
        }
        Run {
            m: Machine::new(cfg).unwrap(),
            now: 0,
        }
    }

    fn adr() -> Run {
        Run::new(&[])
    }

    fn st(&mut self, cpu: usize, addr: u64, v: u64) {
        self.now += self.m.store(self.now, cpu, addr, &v.to_le_bytes()).unwrap();
    }

    fn st_bytes(&mut self, cpu: usize, addr: u64, data: &[u8]) {
        self.now += self.m.store(self.now, cpu, addr, data).unwrap();
    }

    fn nt(&mut self, cpu: usize, addr: u64, v: u64) {
        self.now += self
            .m
            .ntstore(self.now, cpu, addr, &v.to_le_bytes())
            .unwrap();
    }

    fn clwb(&mut self, cpu: usize, addr: u64) {
        self.now += self.m.clwb(self.now, cpu, addr).unwrap();
    }

    fn clflushopt(&mut self, cpu: usize, addr: u64) {
        self.now += self.m.clflushopt(self.now, cpu, addr).unwrap();
    }

    fn clflush(&mut self, cpu: usize, addr: u64) {
        self.now += self.m.clflush(self.now, cpu, addr).unwrap();
    }

    fn sfence(&mut self, cpu: usize) {
        self.now += self.m.sfence(self.now, cpu).unwrap();
    }

    fn mfence(&mut self, cpu: usize) {
        self.now += self.m.mfence(self.now, cpu).unwrap();
    }

    fn xchg(&mut self, cpu: usize, addr: u64, v: u64) {
        let (_, ns) = self.m.locked_rmw(self.now, cpu, addr, 8, |_| v).unwrap();
        self.now += ns;
    }

    /// The 8-byte values at `addrs` in every crash image `opts` allows.
    fn outcomes_with(&self, opts: CrashOptions, addrs: &[u64]) -> BTreeSet<Vec<u64>> {
        let point = self.m.crash_point();
        point
            .images(opts)
            .map(|img| {
                addrs
                    .iter()
                    .map(|&a| {
                        let mut b = [0u8; 8];
                        point.read(&img, a, &mut b).unwrap();
                        u64::from_le_bytes(b)
                    })
                    .collect()
            })
            .collect()
    }

    /// Outcomes with no bound on the number of lines (exact enumeration).
    fn outcomes(&self, addrs: &[u64]) -> BTreeSet<Vec<u64>> {
        self.outcomes_with(full(), addrs)
    }
}

fn full() -> CrashOptions {
    CrashOptions {
        k: usize::MAX,
        torn: false,
        dedup: true,
    }
}

fn torn() -> CrashOptions {
    CrashOptions {
        torn: true,
        ..full()
    }
}

fn set(rows: &[&[u64]]) -> BTreeSet<Vec<u64>> {
    rows.iter().map(|r| r.to_vec()).collect()
}

fn all_pairs() -> BTreeSet<Vec<u64>> {
    set(&[&[0, 0], &[1, 0], &[0, 1], &[1, 1]])
}

#[test]
fn unflushed_store_may_or_may_not_persist() {
    let mut r = Run::adr();
    r.st(0, A, 1);
    assert_eq!(r.outcomes(&[A]), set(&[&[0], &[1]]));
}

#[test]
fn clwb_without_fence_lets_a_later_store_persist_first() {
    let mut r = Run::adr();
    r.st(0, A, 1);
    r.clwb(0, A);
    r.st(0, B, 1);
    assert_eq!(r.outcomes(&[A, B]), all_pairs());
}

#[test]
fn clwb_then_sfence_orders_before_later_stores() {
    let mut r = Run::adr();
    r.st(0, A, 1);
    r.clwb(0, A);
    r.sfence(0);
    r.st(0, B, 1);
    assert_eq!(r.outcomes(&[A, B]), set(&[&[1, 0], &[1, 1]]));
}

#[test]
fn stores_to_one_line_persist_as_a_prefix() {
    let mut r = Run::adr();
    r.st(0, A, 1);
    r.st(0, A + 8, 2);
    r.st(0, A + 16, 3);
    assert_eq!(
        r.outcomes(&[A, A + 8, A + 16]),
        set(&[&[0, 0, 0], &[1, 0, 0], &[1, 2, 0], &[1, 2, 3]])
    );
}

#[test]
fn store_after_clwb_is_not_covered_by_the_fence() {
    let mut r = Run::adr();
    r.st(0, A, 1);
    r.clwb(0, A);
    r.st(0, A, 2);
    r.sfence(0);
    assert_eq!(r.outcomes(&[A]), set(&[&[1], &[2]]));
}

#[test]
fn clflush_orders_with_later_stores() {
    let mut r = Run::adr();
    r.st(0, A, 1);
    r.clflush(0, A);
    r.st(0, B, 1);
    assert_eq!(r.outcomes(&[A, B]), set(&[&[1, 0], &[1, 1]]));
}

#[test]
fn clflushopt_to_different_lines_is_unordered_until_a_fence() {
    let mut r = Run::adr();
    r.st(0, A, 1);
    r.clflushopt(0, A);
    r.st(0, B, 1);
    r.clflushopt(0, B);
    assert_eq!(r.outcomes(&[A, B]), all_pairs());
    r.sfence(0);
    r.st(0, C, 1);
    assert_eq!(r.outcomes(&[A, B, C]), set(&[&[1, 1, 0], &[1, 1, 1]]));
}

#[test]
fn ntstore_passes_older_cached_stores_until_a_fence() {
    let mut r = Run::adr();
    r.st(0, A, 1);
    r.nt(0, B, 1);
    assert_eq!(r.outcomes(&[A, B]), all_pairs());
    r.sfence(0);
    // The fence drains the write-combining buffer but does not flush A.
    assert_eq!(r.outcomes(&[A, B]), set(&[&[0, 1], &[1, 1]]));
}

#[test]
fn ntstore_keeps_the_order_of_its_line() {
    let mut r = Run::adr();
    r.st(0, A, 1);
    r.nt(0, A + 8, 2);
    // Never the non-temporal store without the older store to the same line.
    assert_eq!(r.outcomes(&[A, A + 8]), set(&[&[0, 0], &[1, 0], &[1, 2]]));
    r.sfence(0);
    assert_eq!(r.outcomes(&[A, A + 8]), set(&[&[1, 2]]));
}

#[test]
fn fence_on_another_cpu_does_not_complete_a_flush() {
    let mut r = Run::adr();
    r.st(0, A, 1);
    r.clwb(0, A);
    r.sfence(1);
    assert_eq!(r.outcomes(&[A]), set(&[&[0], &[1]]));
    r.sfence(0);
    assert_eq!(r.outcomes(&[A]), set(&[&[1]]));
}

#[test]
fn mfence_completes_flushes_like_sfence() {
    let mut r = Run::adr();
    r.st(0, A, 1);
    r.clwb(0, A);
    r.mfence(0);
    r.st(0, B, 1);
    assert_eq!(r.outcomes(&[A, B]), set(&[&[1, 0], &[1, 1]]));
}

#[test]
fn locked_op_orders_earlier_flushes() {
    let mut r = Run::adr();
    r.st(0, A, 1);
    r.clwb(0, A);
    r.xchg(0, B, 1);
    assert_eq!(r.outcomes(&[A, B]), set(&[&[1, 0], &[1, 1]]));
}

#[test]
fn amd_clflush_waits_for_mfence() {
    let mut r = Run::new(&[("vendor", "amd")]);
    r.st(0, A, 1);
    r.clflush(0, A);
    r.sfence(0);
    r.st(0, B, 1);
    assert_eq!(r.outcomes(&[A, B]), all_pairs());
    r.mfence(0);
    assert_eq!(r.outcomes(&[A, B]), set(&[&[1, 0], &[1, 1]]));
}

#[test]
fn eadr_makes_every_store_durable_at_once() {
    let mut r = Run::new(&[("persist", "eadr")]);
    r.st(0, A, 1);
    r.st(1, B, 2);
    r.st(0, A + 8, 3);
    assert_eq!(r.outcomes(&[A, B, A + 8]), set(&[&[1, 2, 3]]));
}

#[test]
fn eadr_ntstore_waits_for_a_fence() {
    let mut r = Run::new(&[("persist", "eadr")]);
    r.nt(0, A, 1);
    assert_eq!(r.outcomes(&[A]), set(&[&[0], &[1]]));
    r.sfence(0);
    assert_eq!(r.outcomes(&[A]), set(&[&[1]]));
}

#[test]
fn adr_what_reached_the_wpq_is_durable() {
    let mut r = Run::adr();
    r.nt(0, A, 1);
    r.st(0, B, 2);
    r.clwb(0, B);
    r.sfence(0);
    r.st(0, C, 3);
    r.clwb(0, C);
    // A and B were accepted into the WPQ before the fence returned; C's write-back was not
    // waited for.
    assert_eq!(r.outcomes(&[A, B, C]), set(&[&[1, 2, 0], &[1, 2, 3]]));
}

#[test]
fn eviction_makes_data_durable_without_a_flush() {
    let mut r = Run::adr();
    r.st(0, A, 1);
    r.st(0, B, 1);
    assert!(r.m.evict(r.now, A).unwrap());
    assert_eq!(r.outcomes(&[A, B]), set(&[&[1, 0], &[1, 1]]));
    assert!(!r.m.evict(r.now, A).unwrap());
}

#[test]
fn cache_capacity_eviction_leaves_the_crash_images_alone() {
    // Two sets of one way: lines 0x1000 and 0x1080 share set 0, so the second store evicts
    // the first line. Which line the cache replaces depends on the order of independent
    // steps; the crash images must not: every outcome of the cache-less run stays allowed.
    let mut r = Run::new(&[("cache", "128"), ("cache_ways", "1")]);
    r.st(0, A, 1);
    r.st(0, A + 0x80, 2);
    assert_eq!(
        r.outcomes(&[A, A + 0x80]),
        set(&[&[0, 0], &[1, 0], &[0, 2], &[1, 2]])
    );
    assert_eq!(r.m.stats().evictions, 1);
}

#[test]
fn sixteen_byte_store_tears_at_8_bytes_only_in_torn_mode() {
    let mut r = Run::adr();
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&1u64.to_le_bytes());
    v[8..].copy_from_slice(&2u64.to_le_bytes());
    r.st_bytes(0, A, &v);
    assert_eq!(r.outcomes(&[A, A + 8]), set(&[&[0, 0], &[1, 2]]));
    assert_eq!(
        r.outcomes_with(torn(), &[A, A + 8]),
        set(&[&[0, 0], &[1, 0], &[0, 2], &[1, 2]])
    );
}

#[test]
fn aligned_8_byte_stores_never_tear() {
    let mut r = Run::adr();
    r.st(0, A, 0x0102_0304_0506_0708);
    r.st(0, A + 8, 5);
    assert_eq!(
        r.outcomes_with(torn(), &[A, A + 8]),
        set(&[
            &[0, 0],
            &[0x0102_0304_0506_0708, 0],
            &[0x0102_0304_0506_0708, 5]
        ])
    );
}

#[test]
fn unaligned_8_byte_store_tears_in_torn_mode() {
    let mut r = Run::adr();
    r.st(0, A + 4, u64::MAX);
    let lo = 0xffff_ffff_0000_0000u64;
    let hi = 0x0000_0000_ffff_ffffu64;
    assert_eq!(r.outcomes(&[A, A + 8]), set(&[&[0, 0], &[lo, hi]]));
    assert_eq!(
        r.outcomes_with(torn(), &[A, A + 8]),
        set(&[&[0, 0], &[lo, 0], &[0, hi], &[lo, hi]])
    );
}

#[test]
fn store_crossing_a_line_may_tear_at_the_line_boundary() {
    let mut r = Run::adr();
    r.st_bytes(0, A + 56, &[0xff; 16]);
    assert_eq!(r.outcomes(&[A + 56, A + 64]), {
        let m = u64::MAX;
        set(&[&[0, 0], &[m, 0], &[0, m], &[m, m]])
    });
}

#[test]
fn k_bounds_how_many_lines_differ_from_the_durable_state() {
    let mut r = Run::adr();
    for a in [A, B, C] {
        r.st(0, a, 1);
    }
    let with_k = |k| CrashOptions { k, ..full() };
    assert_eq!(r.outcomes_with(with_k(0), &[A, B, C]), set(&[&[0, 0, 0]]));
    assert_eq!(
        r.outcomes_with(with_k(1), &[A, B, C]),
        set(&[&[0, 0, 0], &[1, 0, 0], &[0, 1, 0], &[0, 0, 1]])
    );
    let two = r.outcomes_with(with_k(2), &[A, B, C]);
    assert_eq!(two.len(), 7);
    assert!(!two.contains(&vec![1, 1, 1]));
    assert_eq!(r.outcomes_with(with_k(3), &[A, B, C]).len(), 8);
    let point = r.m.crash_point();
    assert_eq!(point.count_full(false).exact, Some(8));
    assert_eq!(point.count_bounded(with_k(2)).exact, Some(7));
    assert_eq!(point.count_bounded(with_k(1)).exact, Some(4));
}

#[test]
fn images_are_deduplicated_by_hash() {
    let mut r = Run::adr();
    r.st(0, A, 1);
    r.st(0, A, 0);
    let point = r.m.crash_point();
    // Prefixes: durable 0, after the first store 1, after the second 0 again.
    let mut images = point.images(full());
    let kept: Vec<_> = images.by_ref().collect();
    assert_eq!(kept.len(), 2);
    // The state equal to the durable one is dropped before enumeration, not built and hashed.
    assert_eq!(images.duplicates(), 0);
    let all = point.images(CrashOptions {
        dedup: false,
        ..full()
    });
    assert_eq!(all.count(), 3);
    assert_eq!(point.count_full(false).exact, Some(3));
    assert_ne!(kept[0].hash, kept[1].hash);
}

#[test]
fn torn_counts_cover_every_partial_subset() {
    let mut r = Run::adr();
    r.st_bytes(0, A, &[7; 64]);
    r.st(0, B, 1);
    let point = r.m.crash_point();
    // Line A: 2^8 - 2 partial states plus the full store; line B: one state.
    assert_eq!(point.count_full(true).exact, Some(256 * 2));
    assert_eq!(point.count_full(false).exact, Some(4));
    assert_eq!(point.images(torn()).count(), 512);
}

#[test]
fn crash_images_recover_into_a_machine_with_their_content() {
    let mut r = Run::adr();
    r.st(0, A, 1);
    r.clwb(0, A);
    r.sfence(0);
    r.st(0, B, 2);
    let point = r.m.crash_point();
    let images: Vec<_> = point.images(full()).collect();
    assert_eq!(images.len(), 2);
    let mut seen = BTreeSet::new();
    for img in &images {
        let mut rec = point.recover(img, r.m.config()).unwrap();
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        rec.load(0, 0, A, &mut a).unwrap();
        rec.load(0, 0, B, &mut b).unwrap();
        seen.insert((u64::from_le_bytes(a), u64::from_le_bytes(b)));
        assert!(rec.pending_lines().is_empty());
        // The delta lists exactly the lines that differ from the persisted image.
        assert_eq!(img.delta.len(), usize::from(u64::from_le_bytes(b) == 2));
    }
    assert_eq!(seen, [(1, 0), (1, 2)].into_iter().collect());
}
