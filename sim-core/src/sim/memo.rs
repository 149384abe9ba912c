//! Recorded machine accesses: a phase of a run whose memory operations are the same in every
//! run (a trace's setup: mount reads the metadata of the same formatted image, on the same
//! CPU, at the same clock) is recorded once ([`Sim::record_machine_ops`]) and replayed in later
//! runs ([`Sim::replay_machine_ops`]): each memory operation of the phase returns its recorded
//! data, latency, error and footprint without consulting the machine model, and the machine as
//! the phase left it is installed (the thread's last machine restored to it in place, which
//! copies back only the cache ways the last run changed, else a copy-on-write clone). Only the
//! machine model is skipped: the tasks, their steps, the clocks and the event log are exactly
//! those of the recorded run.

use super::{Sim, State, with_state};
use crate::machine::{Machine, MemError, Touched};
use std::sync::Arc;

thread_local! {
    /// The machine of the thread's last simulation, kept when it ends (`Sim`'s drop) for the
    /// next replay to restore in place.
    pub(super) static SPARE_MACHINE: std::cell::RefCell<Option<Machine>> =
        const { std::cell::RefCell::new(None) };
}

/// One memory operation of a recorded phase: what the task asked (checked on replay) and what
/// the machine answered.
#[derive(Clone, Debug)]
pub(super) struct MemoOp {
    what: &'static str,
    cpu: usize,
    now: u64,
    addr: u64,
    /// The bytes a store wrote (empty for other operations).
    input: Vec<u8>,
    /// The bytes a load read into its buffer (also when it failed part-way).
    output: Vec<u8>,
    result: Result<u64, MemError>,
    touched: Touched,
}

/// The memory operations of a phase and the machine after it (see the module comment).
#[derive(Clone)]
pub struct MachineMemo {
    ops: Vec<MemoOp>,
    after: Machine,
}

impl MachineMemo {
    /// The number of memory operations recorded.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

pub(super) enum MemoMode {
    Record(Vec<MemoOp>),
    Replay { memo: Arc<MachineMemo>, next: usize },
}

/// A memory operation's request: the operation's name, its address, the bytes it stores and
/// the buffer a load fills.
pub(super) struct MemReq<'a> {
    pub what: &'static str,
    pub addr: u64,
    pub input: &'a [u8],
    pub out: &'a mut [u8],
}

/// What a memory operation touched: the machine's answer, or a replayed operation's record
/// (read in place: a replay copies no footprint).
pub(super) enum Answer {
    Fresh(Touched),
    Recorded(Arc<MachineMemo>, usize),
}

impl Answer {
    pub(super) fn touched(&self) -> &Touched {
        match self {
            Answer::Fresh(t) => t,
            Answer::Recorded(memo, i) => &memo.ops[*i].touched,
        }
    }
}

/// Run one memory operation through the recording or replay (one must be on): the
/// operation's touched state and result.
pub(super) fn memo_op(
    s: &mut State,
    req: &mut MemReq<'_>,
    cpu: usize,
    now: u64,
    ask: impl FnOnce(&mut Machine, &mut [u8]) -> Result<u64, MemError>,
) -> (Answer, Result<u64, MemError>) {
    match s.memo.as_mut().expect("a recording or replay is on") {
        MemoMode::Record(ops) => {
            let m = s
                .machine
                .as_mut()
                .expect("a recording runs on an installed machine");
            let result = ask(m, req.out);
            let touched = m.take_touched();
            ops.push(MemoOp {
                what: req.what,
                cpu,
                now,
                addr: req.addr,
                input: req.input.to_vec(),
                output: req.out.to_vec(),
                result,
                touched: touched.clone(),
            });
            (Answer::Fresh(touched), result)
        }
        MemoMode::Replay { memo, next } => {
            let op = memo.ops.get(*next);
            // Invariant: a replayed phase asks the machine exactly what the recorded one asked,
            // in the same order, on the same CPU at the same clock (the phase is a function of
            // the model alone, and the machine under it starts in the same state); so each
            // answer is the one the machine model would give.
            let same = op.is_some_and(|op| {
                op.what == req.what
                    && op.cpu == cpu
                    && op.now == now
                    && op.addr == req.addr
                    && op.input == req.input
                    && op.output.len() == req.out.len()
            });
            assert!(
                same,
                "replayed machine access {} {} at {:#x} (cpu {cpu}, {now} ns) differs from the \
                 recorded one: the recorded phase is not deterministic",
                *next, req.what, req.addr
            );
            let op = &memo.ops[*next];
            req.out.copy_from_slice(&op.output);
            let result = op.result;
            *next += 1;
            (Answer::Recorded(memo.clone(), *next - 1), result)
        }
    }
}

impl Sim {
    /// Record the memory operations from now on (until [`Sim::finish_machine_ops`]); the
    /// machine must be installed.
    pub fn record_machine_ops(&mut self) {
        with_state(|s| {
            assert!(s.machine.is_some(), "recording needs an installed machine");
            assert!(s.memo.is_none(), "a recording or replay is already on");
            s.memo = Some(MemoMode::Record(Vec::new()));
        })
    }

    /// Replay `memo` from now on: installs the machine as the recorded phase left it (so a
    /// look at the machine during the replay sees the state after the phase); each memory
    /// operation until [`Sim::finish_machine_ops`] must be the next recorded one (else the
    /// task panics: a model panic).
    pub fn replay_machine_ops(&mut self, memo: Arc<MachineMemo>) {
        with_state(|s| {
            assert!(s.memo.is_none(), "a recording or replay is already on");
            // The thread's last run's machine, when there is one, is made equal to the
            // recorded one in place (most of it is the same; see `Machine::restore_from`).
            let machine = match SPARE_MACHINE.with(|m| m.borrow_mut().take()) {
                Some(mut m) => {
                    m.restore_from(&memo.after);
                    m
                }
                None => memo.after.clone(),
            };
            s.machine = Some(machine);
            s.memo = Some(MemoMode::Replay { memo, next: 0 });
        })
    }

    /// End the recording or replay: a recording returns its operations and the machine now
    /// (`None` after a replay, or with neither on). A replay must have used every recorded
    /// operation.
    pub fn finish_machine_ops(&mut self) -> Option<MachineMemo> {
        with_state(|s| match s.memo.take()? {
            MemoMode::Record(ops) => Some(MachineMemo {
                ops,
                after: s.machine.clone().expect("recorded on an installed machine"),
            }),
            MemoMode::Replay { memo, next } => {
                // (A replay that failed, with a violation, stops early.)
                assert!(
                    next == memo.ops.len() || s.violation.is_some(),
                    "the replayed phase made fewer memory operations than the recorded one"
                );
                None
            }
        })
    }
}
