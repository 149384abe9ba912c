//! Processes, threads and the signals memory failure and faults send.
//!
//! A process (thread group) owns one mm and several threads; each thread is a Platform task. A
//! signal is queued on a thread (`send_sig_mceerr`, `force_sig_*`) and taken by the runner when
//! the thread next returns to user space ([`dequeue_signal`], between two trace statements):
//! TRACE_FORMAT.md says a thread that takes an unexpected SIGBUS stops and its later statements
//! do not run; SIGKILL stops every thread of the process.

use crate::mm::MmStruct;
use crate::world::MmWorld;
use crate::{MmId, Pid};
use serde::{Deserialize, Serialize};
use sim_core::{Platform, TaskId};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// `PF_MCE_PROCESS`: the thread chose its own early/late kill policy (prctl PR_MCE_KILL).
pub const PF_MCE_PROCESS: u32 = 0x0000_0080;
/// `PF_MCE_EARLY`: with `PF_MCE_PROCESS`, early kill.
pub const PF_MCE_EARLY: u32 = 0x0800_0000;

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Signal {
    SIGBUS = 7,
    SIGKILL = 9,
    SIGSEGV = 11,
}

/// `si_code` values of SIGBUS (and the kernel-sent code).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum SiCode {
    /// `SI_KERNEL`.
    Kernel = 0x80,
    BusAdrerr = 2,
    /// `BUS_MCEERR_AR`: action required (the thread consumed the poison).
    BusMceerrAr = 4,
    /// `BUS_MCEERR_AO`: action optional (found asynchronously).
    BusMceerrAo = 5,
    /// `SEGV_MAPERR`.
    SegvMaperr = 1,
}

/// `kernel_siginfo` (the fields the model uses).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SigInfo {
    pub signo: Signal,
    pub code: SiCode,
    /// `si_addr`.
    pub addr: u64,
    /// `si_addr_lsb`: log2 of the size of the mapping the error affects (12 or 21).
    pub addr_lsb: u8,
}

impl fmt::Display for SigInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} {:?} addr {:#x} lsb {}",
            self.signo, self.code, self.addr, self.addr_lsb
        )
    }
}

/// A thread (`task_struct`).
#[derive(Clone, Debug)]
pub struct Thread {
    pub tid: TaskId,
    pub tgid: Pid,
    /// `PF_MCE_PROCESS | PF_MCE_EARLY` bits.
    pub flags: u32,
    /// Signals queued and not yet taken.
    pub pending: Vec<SigInfo>,
    /// Signals taken, in order.
    pub delivered: Vec<SigInfo>,
}

/// A process (thread group).
pub struct Process<P: Platform> {
    pub pid: Pid,
    pub comm: String,
    pub mm: Arc<MmStruct<P>>,
    /// Threads in creation order; the first is the group leader.
    pub threads: Vec<TaskId>,
}

/// The task list, plus every thread's signal state (`tasklist_lock` and `siglock` in one).
pub struct TaskList<P: Platform> {
    pub procs: BTreeMap<Pid, Process<P>>,
    pub threads: BTreeMap<TaskId, Thread>,
    next_pid: u32,
    next_mm: u32,
}

impl<P: Platform> Default for TaskList<P> {
    fn default() -> Self {
        TaskList {
            procs: BTreeMap::new(),
            threads: BTreeMap::new(),
            next_pid: 100,
            next_mm: 1,
        }
    }
}

impl<P: Platform> TaskList<P> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The process a thread belongs to.
    pub fn process_of(&self, t: TaskId) -> Option<&Process<P>> {
        self.threads.get(&t).and_then(|th| self.procs.get(&th.tgid))
    }

    /// The threads of the process owning `mm`.
    pub fn mm_owner(&self, mm: MmId) -> Option<&Process<P>> {
        self.procs.values().find(|pr| pr.mm.id == mm)
    }

    fn queue(&mut self, t: TaskId, info: SigInfo) -> bool {
        match self.threads.get_mut(&t) {
            Some(th) => {
                th.pending.push(info);
                true
            }
            None => false,
        }
    }
}

/// Create a process named `comm` with a fresh mm and the given threads (tasks).
pub async fn create_process<P: Platform>(
    p: &P,
    world: &MmWorld<P>,
    comm: &str,
    threads: &[TaskId],
) -> (Pid, Arc<MmStruct<P>>) {
    let mut tl = world.tasks.lock(p).await;
    let pid = Pid(tl.next_pid);
    tl.next_pid += 1;
    let mm = Arc::new(MmStruct::new(p, MmId(tl.next_mm)));
    tl.next_mm += 1;
    for &tid in threads {
        tl.threads.insert(
            tid,
            Thread {
                tid,
                tgid: pid,
                flags: 0,
                pending: vec![],
                delivered: vec![],
            },
        );
    }
    tl.procs.insert(
        pid,
        Process {
            pid,
            comm: comm.to_string(),
            mm: mm.clone(),
            threads: threads.to_vec(),
        },
    );
    tl.unlock().await;
    (pid, mm)
}

/// `prctl(PR_MCE_KILL, PR_MCE_KILL_SET, early ? PR_MCE_KILL_EARLY : PR_MCE_KILL_LATE)`.
pub async fn set_mce_kill<P: Platform>(p: &P, world: &MmWorld<P>, t: TaskId, early: bool) {
    let mut tl = world.tasks.lock(p).await;
    if let Some(th) = tl.threads.get_mut(&t) {
        th.flags |= PF_MCE_PROCESS;
        if early {
            th.flags |= PF_MCE_EARLY;
        } else {
            th.flags &= !PF_MCE_EARLY;
        }
    }
    tl.unlock().await;
}

/// `send_sig_mceerr(code, addr, lsb, t)`: queue a machine-check SIGBUS on thread `t`.
pub async fn send_sig_mceerr<P: Platform>(
    p: &P,
    world: &MmWorld<P>,
    code: SiCode,
    addr: u64,
    lsb: u8,
    t: TaskId,
) -> bool {
    let info = SigInfo {
        signo: Signal::SIGBUS,
        code,
        addr,
        addr_lsb: lsb,
    };
    let mut tl = world.tasks.lock(p).await;
    let ok = tl.queue(t, info);
    tl.unlock().await;
    ok
}

/// `force_sig_mceerr(BUS_MCEERR_AR, addr, lsb)` on the current thread.
pub async fn force_sig_mceerr<P: Platform>(p: &P, world: &MmWorld<P>, addr: u64, lsb: u8) -> bool {
    send_sig_mceerr(p, world, SiCode::BusMceerrAr, addr, lsb, p.current_task()).await
}

/// `force_sig_fault(sig, code, addr)` on the current thread (a fault returning VM_FAULT_SIGBUS
/// or VM_FAULT_SIGSEGV).
pub async fn force_sig_fault<P: Platform>(
    p: &P,
    world: &MmWorld<P>,
    signo: Signal,
    code: SiCode,
    addr: u64,
) -> bool {
    let info = SigInfo {
        signo,
        code,
        addr,
        addr_lsb: 0,
    };
    let mut tl = world.tasks.lock(p).await;
    let ok = tl.queue(p.current_task(), info);
    tl.unlock().await;
    ok
}

/// SIGKILL to the process of thread `t`: every thread gets it.
pub async fn send_sigkill<P: Platform>(p: &P, world: &MmWorld<P>, t: TaskId) -> bool {
    let info = SigInfo {
        signo: Signal::SIGKILL,
        code: SiCode::Kernel,
        addr: 0,
        addr_lsb: 0,
    };
    let mut tl = world.tasks.lock(p).await;
    let threads = tl.process_of(t).map(|pr| pr.threads.clone());
    let ok = threads.is_some();
    for th in threads.unwrap_or_default() {
        tl.queue(th, info);
    }
    tl.unlock().await;
    ok
}

/// `signal_pending(t)`.
pub async fn signal_pending<P: Platform>(p: &P, world: &MmWorld<P>, t: TaskId) -> bool {
    let tl = world.tasks.lock(p).await;
    let r = tl.threads.get(&t).is_some_and(|th| !th.pending.is_empty());
    tl.unlock().await;
    r
}

/// `fatal_signal_pending(t)`: SIGKILL is queued.
pub async fn fatal_signal_pending<P: Platform>(p: &P, world: &MmWorld<P>, t: TaskId) -> bool {
    let tl = world.tasks.lock(p).await;
    let r = tl
        .threads
        .get(&t)
        .is_some_and(|th| th.pending.iter().any(|s| s.signo == Signal::SIGKILL));
    tl.unlock().await;
    r
}

/// `get_signal` on return to user space: take the first pending signal of `t` (SIGKILL first).
/// The runner stops the thread unless the trace expected it.
pub async fn dequeue_signal<P: Platform>(p: &P, world: &MmWorld<P>, t: TaskId) -> Option<SigInfo> {
    let mut tl = world.tasks.lock(p).await;
    let r = tl.threads.get_mut(&t).and_then(|th| {
        let i = th
            .pending
            .iter()
            .position(|s| s.signo == Signal::SIGKILL)
            .or((!th.pending.is_empty()).then_some(0))?;
        let s = th.pending.remove(i);
        th.delivered.push(s);
        Some(s)
    });
    tl.unlock().await;
    r
}

/// Every pending signal of `t` at once (SIGKILL first), as delivered on return to user space
/// with the handler of each run in turn: one step.
pub async fn dequeue_signals<P: Platform>(p: &P, world: &MmWorld<P>, t: TaskId) -> Vec<SigInfo> {
    let mut tl = world.tasks.lock(p).await;
    let mut out = Vec::new();
    if let Some(th) = tl.threads.get_mut(&t) {
        let mut pending = std::mem::take(&mut th.pending);
        pending.sort_by_key(|s| s.signo != Signal::SIGKILL);
        th.delivered.extend(pending.iter().copied());
        out = pending;
    }
    tl.unlock().await;
    out
}
