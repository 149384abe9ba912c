//! The event queue of simulated time and the event log of a run.
//!
//! Events are plain data ordered by `(time, sequence)`: two events at the same simulated time
//! come out in the order they were scheduled, so a run never depends on heap internals.

use crate::platform::{Op, TaskId};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// What happens when a timed event fires.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub enum EventKind {
    /// A task's `sleep` ends.
    TimerExpired(TaskId),
    /// A media or device completion (machine model).
    Completion { unit: u32, tag: u64 },
}

/// One queued event.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct TimedEvent {
    pub time: u64,
    pub seq: u64,
    pub kind: EventKind,
}

/// A min-queue of plain events by `(time, seq)`.
#[derive(Default, Debug, Clone)]
pub struct EventQueue {
    heap: BinaryHeap<Reverse<(u64, u64, EventKind)>>,
    next_seq: u64,
}

impl EventQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Schedule `kind` at simulated time `time`; returns its sequence number.
    pub fn push(&mut self, time: u64, kind: EventKind) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Reverse((time, seq, kind)));
        seq
    }

    /// The earliest event's time, if any.
    pub fn peek_time(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Remove and return the earliest event.
    pub fn pop(&mut self) -> Option<TimedEvent> {
        self.heap
            .pop()
            .map(|Reverse((time, seq, kind))| TimedEvent { time, seq, kind })
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    pub fn clear(&mut self) {
        self.heap.clear();
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
    /// Simulated time when the step ran, in ns.
    pub time: u64,
    /// The trace line the task was executing (0 when not running a trace).
    pub line: u32,
}

/// FNV-1a over the fields of each event: the run's fingerprint. Computed on every run, cheap.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EventHasher(u64);

impl Default for EventHasher {
    fn default() -> Self {
        EventHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl EventHasher {
    #[inline]
    pub fn word(&mut self, w: u64) {
        let mut h = self.0;
        for b in w.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
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

impl EventLog {
    pub fn to_bincode(&self) -> Result<Vec<u8>, String> {
        bincode::serde::encode_to_vec(self, bincode::config::standard()).map_err(|e| e.to_string())
    }

    pub fn from_bincode(bytes: &[u8]) -> Result<Self, String> {
        bincode::serde::decode_from_slice(bytes, bincode::config::standard())
            .map(|(v, _)| v)
            .map_err(|e| e.to_string())
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

    #[test]
    fn same_time_events_come_out_in_push_order() {
        let mut q = EventQueue::new();
        q.push(10, EventKind::TimerExpired(TaskId(2)));
        q.push(5, EventKind::TimerExpired(TaskId(9)));
        q.push(10, EventKind::TimerExpired(TaskId(1)));
        let order: Vec<_> = std::iter::from_fn(|| q.pop())
            .map(|e| (e.time, e.kind))
            .collect();
        assert_eq!(
            order,
            vec![
                (5, EventKind::TimerExpired(TaskId(9))),
                (10, EventKind::TimerExpired(TaskId(2))),
                (10, EventKind::TimerExpired(TaskId(1))),
            ]
        );
    }
}
