//! Persistence: the cache lines with stores that are not durable yet (whether the line sits
//! dirty in the cache, and how many of its bytes a crash now would lose), the poisoned ranges,
//! and the CPU clocks.

use crate::session::Snapshot;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineRow {
    pub addr: u64,
    /// `dirty in cache`, `clean in cache`, `not cached` (written back or flushed, waiting for a
    /// fence).
    pub where_: &'static str,
    pub bytes_not_durable: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PersistenceView {
    /// `None`: the run has no machine.
    pub pending: Option<Vec<LineRow>>,
    pub poisoned: Vec<(u64, u64)>,
    pub cpu_clocks: Vec<u64>,
}

pub fn build(snap: &Snapshot) -> PersistenceView {
    let Some(m) = &snap.machine else {
        return PersistenceView::default();
    };
    PersistenceView {
        pending: Some(
            m.pending
                .iter()
                .map(|l| LineRow {
                    addr: l.addr,
                    where_: match l.cached_dirty {
                        Some(true) => "dirty in cache",
                        Some(false) => "clean in cache",
                        None => "not cached",
                    },
                    bytes_not_durable: l.bytes_not_durable,
                })
                .collect(),
        ),
        poisoned: m.poisoned.clone(),
        cpu_clocks: m.cpu_clocks.clone(),
    }
}
