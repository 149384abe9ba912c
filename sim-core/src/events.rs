//! The event log of a run, and an event queue of timed events.
//!
//! A run's time is per-CPU clocks (`sim` "Time"): the scheduler's choices order the steps, and
//! each logged event carries its CPU's clock. No run uses the event queue: sleeps are
//! scheduling points, not timers. It stays as the discrete-event building block for timed
//! machine events (its speed is benchmarked); its events are plain data ordered by
//! `(time, sequence)`, so two events at the same time come out in the order they were queued.
//! (Its old payload `EventKind::TimerExpired` is gone; it was never part of an event log, so
//! no `--events` file changes.)

use crate::platform::{Op, TaskId};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// One queued event with its payload `K`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct TimedEvent<K> {
    pub time: u64,
    pub seq: u64,
    pub kind: K,
}

/// A queued event.
#[derive(Clone, Copy, Debug)]
struct Entry<K> {
    time: u64,
    seq: u64,
    kind: K,
}

const BUCKETS: usize = 65;

/// A min-queue of plain events by `(time, seq)`: a radix heap, the monotone priority queue of
/// discrete-event simulation. Simulated time never goes back, so every event pushed is due no
/// earlier than the last one popped; an event pushed for a time already past is due now (its
/// time is raised to the last popped time, keeping the order of sequence numbers).
///
/// An entry lives in bucket `i` when its time first differs from the last popped time at bit
/// `i - 1`. The events due exactly at the last popped time wait in `due`, in sequence order:
/// it is refilled (and sorted by sequence) only when empty, and a push at that time has a
/// larger sequence number than everything already there.
#[derive(Debug, Clone)]
pub struct EventQueue<K> {
    due: VecDeque<Entry<K>>,
    buckets: Vec<Vec<Entry<K>>>,
    /// Bit `i` set when bucket `i` (1..=64) is non-empty.
    nonempty: u128,
    last: u64,
    len: usize,
    next_seq: u64,
}

impl<K: Copy> Default for EventQueue<K> {
    fn default() -> Self {
        EventQueue {
            due: VecDeque::new(),
            buckets: vec![Vec::new(); BUCKETS],
            nonempty: 0,
            last: 0,
            len: 0,
            next_seq: 0,
        }
    }
}

impl<K: Copy> EventQueue<K> {
    pub fn new() -> Self {
        Self::default()
    }

    #[inline]
    fn put(&mut self, e: Entry<K>) {
        let b = (64 - (e.time ^ self.last).leading_zeros()) as usize;
        if b == 0 {
            self.due.push_back(e);
        } else {
            self.buckets[b].push(e);
            self.nonempty |= 1 << b;
        }
    }

    /// Schedule `kind` at simulated time `time`; returns its sequence number.
    pub fn push(&mut self, time: u64, kind: K) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let time = time.max(self.last);
        self.put(Entry { time, seq, kind });
        self.len += 1;
        seq
    }

    /// Make `due` hold the earliest events, if there are any.
    fn settle(&mut self) -> bool {
        if !self.due.is_empty() {
            return true;
        }
        if self.nonempty == 0 {
            return false;
        }
        let i = self.nonempty.trailing_zeros() as usize;
        self.nonempty &= !(1 << i);
        let mut entries = std::mem::take(&mut self.buckets[i]);
        self.last = entries.iter().map(|e| e.time).min().unwrap_or(self.last);
        for e in entries.drain(..) {
            self.put(e);
        }
        // Keep the bucket's allocation for reuse.
        self.buckets[i] = entries;
        self.due.make_contiguous().sort_unstable_by_key(|e| e.seq);
        true
    }

    /// The earliest event's time, if any.
    pub fn peek_time(&mut self) -> Option<u64> {
        self.settle().then_some(self.last)
    }

    /// Remove and return the earliest event.
    pub fn pop(&mut self) -> Option<TimedEvent<K>> {
        if !self.settle() {
            return None;
        }
        let e = self.due.pop_front()?;
        self.len -= 1;
        Some(TimedEvent {
            time: e.time,
            seq: e.seq,
            kind: e.kind,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.due.clear();
        self.buckets.iter_mut().for_each(Vec::clear);
        self.nonempty = 0;
        self.last = 0;
        self.len = 0;
        self.next_seq = 0;
    }
}

/// One executed scheduling step.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LogEvent {
    /// Step number within the run, from 0.
    pub step: u32,
    pub task: TaskId,
    /// The operation the step performed (what the task had announced).
    pub op: Op,
    /// The clock of the task's CPU when the step ran, in ns (`sim` "Time": per-CPU clocks;
    /// the step order, not this time, is the order of events).
    pub time: u64,
    /// The trace line the task was executing (0 when not running a trace).
    pub line: u32,
}

const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// `FNV_PRIME^k` for `k` in 0..=8.
const FNV_PRIME_POW: [u64; 9] = {
    let mut t = [1u64; 9];
    let mut k = 1;
    while k < 9 {
        t[k] = t[k - 1].wrapping_mul(FNV_PRIME);
        k += 1;
    }
    t
};

/// FNV-1a over the fields of each event: the run's fingerprint. Computed on every run, cheap.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EventHasher(u64);

impl Default for EventHasher {
    fn default() -> Self {
        EventHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl EventHasher {
    /// FNV-1a over the 8 little-endian bytes of `w`. A zero byte leaves the xor a no-op, so a
    /// run of `k` zero bytes is one multiplication by `FNV_PRIME^k` (the same value as `k`
    /// byte steps, in fewer dependent multiplications: most of a step's words are small
    /// numbers with zero high bytes).
    #[inline]
    pub fn word(&mut self, w: u64) {
        let mut h = self.0;
        let mut w = w;
        let mut left = 8;
        while w != 0 {
            let zeros = w.trailing_zeros() / 8;
            if zeros > 0 {
                h = h.wrapping_mul(FNV_PRIME_POW[zeros as usize]);
                w >>= 8 * zeros;
                left -= zeros;
            }
            h ^= w & 0xff;
            h = h.wrapping_mul(FNV_PRIME);
            w >>= 8;
            left -= 1;
        }
        self.0 = h.wrapping_mul(FNV_PRIME_POW[left as usize]);
    }

    #[inline]
    pub fn event(&mut self, e: &LogEvent) {
        self.word(((e.step as u64) << 32) | e.task.0 as u64);
        self.word(((e.op.kind as u64) << 32) | e.op.obj.0 as u64);
        self.word(e.op.arg);
        self.word(e.time);
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// The full log of a run, as `--events FILE` writes it (bincode).
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct EventLog {
    /// Task names by id.
    pub tasks: Vec<String>,
    /// Object names by id (locks, wait queues, ...).
    pub objects: Vec<String>,
    /// Yield-point sites by index (`Op::arg` of `OpKind::Yield`).
    pub sites: Vec<String>,
    pub events: Vec<LogEvent>,
    pub hash: u64,
}

/// The binary encoding of pmsim's files (event logs, and any serde value): the only place that
/// names `bincode`. bincode is unmaintained upstream (RUSTSEC-2025-0141); swapping it for
/// another serde format changes this module and nothing else.
pub mod codec {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    /// Encode `v`.
    pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
        bincode::serde::encode_to_vec(v, bincode::config::standard()).map_err(|e| e.to_string())
    }

    /// Decode a value that [`encode`] wrote.
    pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
        bincode::serde::decode_from_slice(bytes, bincode::config::standard())
            .map(|(v, _)| v)
            .map_err(|e| e.to_string())
    }
}

impl EventLog {
    /// The `--events FILE` bytes (see [`codec`]).
    pub fn to_bincode(&self) -> Result<Vec<u8>, String> {
        codec::encode(self)
    }

    /// An event log from `--events FILE` bytes.
    pub fn from_bincode(bytes: &[u8]) -> Result<Self, String> {
        codec::decode(bytes)
    }

    /// The first index at which two logs differ, if they do.
    pub fn first_divergence(&self, other: &EventLog) -> Option<usize> {
        let n = self.events.len().min(other.events.len());
        (0..n)
            .find(|&i| self.events[i] != other.events[i])
            .or((self.events.len() != other.events.len()).then_some(n))
    }

    /// A one-line description of event `i` (for divergence reports).
    pub fn describe(&self, i: usize) -> String {
        match self.events.get(i) {
            None => "<end of run>".to_string(),
            Some(e) => {
                let task = self
                    .tasks
                    .get(e.task.0 as usize)
                    .map(String::as_str)
                    .unwrap_or("?");
                let obj = self
                    .objects
                    .get(e.op.obj.0 as usize)
                    .map(String::as_str)
                    .unwrap_or("-");
                format!(
                    "step {} {} {:?} {} (t={}ns)",
                    e.step, task, e.op.kind, obj, e.time
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The skipping of zero bytes gives exactly the byte-by-byte FNV-1a, for words with zero
    /// bytes anywhere (low, high, inside) and for none.
    #[test]
    fn event_hasher_word_is_bytewise_fnv1a() {
        fn reference(h: u64, w: u64) -> u64 {
            w.to_le_bytes()
                .iter()
                .fold(h, |h, &b| (h ^ b as u64).wrapping_mul(FNV_PRIME))
        }
        let mut words = vec![
            0u64,
            1,
            0xff,
            0x100,
            u64::MAX,
            1 << 63,
            0x00ff_0000_ff00_0001,
        ];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for i in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Clear a random subset of the bytes.
            let mask = (0..8)
                .filter(|b| (x >> (56 + b % 8)) & 1 == 1 || (i >> b) & 1 == 1)
                .fold(0u64, |m, b| m | (0xff << (8 * b)));
            words.push(x & !mask);
            words.push(x);
        }
        let mut h = EventHasher::default();
        let mut r = EventHasher::default().finish();
        for &w in &words {
            h.word(w);
            r = reference(r, w);
            assert_eq!(h.finish(), r, "word {w:#x}");
        }
    }

    #[test]
    fn matches_a_sorted_reference_under_random_pushes_and_pops() {
        // Narrow spreads make many events share a time (FIFO by sequence); wide ones exercise
        // the high buckets.
        for spread in [3u64, 50, 5000, 1 << 40] {
            let mut q = EventQueue::new();
            let mut reference: Vec<(u64, u64)> = Vec::new();
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            let mut now = 0;
            for _ in 0..4_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if !x.is_multiple_of(3) || reference.is_empty() {
                    let t = now + (x >> 20) % spread;
                    let seq = q.push(t, 0u32);
                    reference.push((t, seq));
                } else {
                    reference.sort_unstable();
                    let want = reference.remove(0);
                    assert_eq!(q.peek_time(), Some(want.0));
                    let got = q.pop().unwrap();
                    assert_eq!((got.time, got.seq), want, "spread {spread}");
                    now = got.time;
                }
                assert_eq!(q.len(), reference.len());
            }
        }
    }

    #[test]
    fn same_time_events_come_out_in_push_order() {
        let mut q = EventQueue::new();
        q.push(10, 2u32);
        q.push(5, 9u32);
        q.push(10, 1u32);
        let order: Vec<_> = std::iter::from_fn(|| q.pop())
            .map(|e| (e.time, e.kind))
            .collect();
        assert_eq!(order, vec![(5, 9u32), (10, 2u32), (10, 1u32),]);
    }
}
