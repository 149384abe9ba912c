//! Failure detection: deadlock and lost-wakeup diagnosis through a wait-for graph.
//!
//! When no task can move and not all have finished, every live task waits for something:
//! a lock (edge to its holder), a rwsem (edges to the holders, and for a reader to the writer
//! queued ahead of it), or a wake-up on a wait queue (no edge: nobody is obliged to wake it).
//! A cycle in the graph is a deadlock; otherwise a sleeper on a wait queue that no live task can
//! wake is a lost wakeup.

use super::{ObjState, State, TaskStatus};
use crate::platform::{Op, OpKind, TaskId};
use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum ViolationKind {
    /// Every live task is blocked and the wait-for graph has a cycle.
    Deadlock,
    /// A task sleeps on a wait queue and no live task can wake it.
    LostWakeup,
    /// A BUG/WARN analogue raised by the model; the name says which.
    Assertion(String),
    /// The run exceeded the step limit (livelock guard).
    StepLimit,
    /// The model code itself panicked (a bug in pmsim, reported rather than crashing).
    ModelPanic,
    /// A step or end check registered by the model found a broken invariant; the name says
    /// which.
    Invariant(String),
}

impl ViolationKind {
    /// The short name used in reports and `--json`.
    pub fn name(&self) -> String {
        match self {
            ViolationKind::Deadlock => "deadlock".into(),
            ViolationKind::LostWakeup => "lost-wakeup".into(),
            ViolationKind::Assertion(n) => format!("assertion:{n}"),
            ViolationKind::StepLimit => "step-limit".into(),
            ViolationKind::ModelPanic => "model-panic".into(),
            ViolationKind::Invariant(n) => format!("invariant:{n}"),
        }
    }
}

/// A task's state at the time of a violation.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct TaskReport {
    pub id: u32,
    pub name: String,
    /// "finished", "runnable", "blocked" or "asleep".
    pub status: String,
    /// The step it was about to take.
    pub next: String,
    /// The trace line it was executing (0 outside traces).
    pub line: u32,
    /// Locks and semaphores it holds.
    pub holds: Vec<String>,
    /// For a sleeper: the wait queue and key it sleeps on.
    pub wait_key: Option<String>,
    /// The model functions it is in, outermost first (`Platform::enter_fn`); empty for models
    /// that do not mark them and for finished tasks.
    #[serde(default)]
    pub path: Vec<String>,
    /// Its last wake-up: the queue and key it woke, and from which call path.
    #[serde(default)]
    pub last_wake: Option<String>,
}

impl TaskReport {
    /// The call path as the report prints it: `f > g > h`.
    pub fn path_text(&self) -> String {
        self.path.join(" > ")
    }
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Violation {
    pub kind: ViolationKind,
    pub message: String,
    /// The task that raised it or is at its centre.
    pub task: Option<TaskId>,
    pub line: u32,
    /// For a deadlock: the tasks of the wait-for cycle, in order.
    pub cycle: Vec<u32>,
    pub tasks: Vec<TaskReport>,
}

impl Violation {
    pub fn step_limit(limit: u64) -> Violation {
        Violation {
            kind: ViolationKind::StepLimit,
            message: format!(
                "the run exceeded {limit} steps without finishing (livelock or an unbounded loop)"
            ),
            task: None,
            line: 0,
            cycle: Vec::new(),
            tasks: Vec::new(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {}", self.kind.name(), self.message)?;
        for t in &self.tasks {
            write!(f, "  {} [{}]", t.name, t.status)?;
            if t.line > 0 {
                write!(f, " line {}", t.line)?;
            }
            if t.status != "finished" {
                write!(f, ", next: {}", t.next)?;
            }
            if !t.holds.is_empty() {
                write!(f, ", holds: {}", t.holds.join(", "))?;
            }
            if let Some(k) = &t.wait_key {
                write!(f, ", sleeps on {k}")?;
            }
            writeln!(f)?;
            if !t.path.is_empty() {
                writeln!(f, "    in {}", t.path_text())?;
            }
            if let Some(w) = &t.last_wake {
                writeln!(f, "    last woke {w}")?;
            }
        }
        Ok(())
    }
}

pub(super) fn obj_name(s: &State, op: &Op) -> String {
    if op.obj == Op::NONE {
        return String::new();
    }
    if (Op::MEM_BASE..Op::MEM_END).contains(&op.obj.0) {
        let addr = (op.obj.0 - Op::MEM_BASE) as u64 * 64;
        return if op.arg > 1 {
            format!("pmem {addr:#x} ({} lines)", op.arg)
        } else {
            format!("pmem {addr:#x}")
        };
    }
    if (Op::CPU_BASE..Op::CPU_END).contains(&op.obj.0) {
        return format!("cpu{} clock", op.obj.0 - Op::CPU_BASE);
    }
    if (Op::SET_BASE..Op::SET_END).contains(&op.obj.0) {
        return format!("cache set {}", op.obj.0 - Op::SET_BASE);
    }
    if (Op::DIMM_BASE..Op::DIMM_END).contains(&op.obj.0) {
        return format!("dimm {}", op.obj.0 - Op::DIMM_BASE);
    }
    if let Some((l, first, len)) = op.part_of() {
        let name = s.objs.get(l.0 as usize).map_or("obj", |o| o.name);
        return format!("{name}#{} [{first:#x}, +{len:#x})", l.0);
    }
    if op.obj == Op::MACHINE {
        return "machine".into();
    }
    if op.obj == Op::DMESG {
        return "dmesg".into();
    }
    if op.obj == Op::ALLOC {
        return "object table".into();
    }
    if let Some((first, n)) = op.tasks_of() {
        let names: Vec<String> = (first.0..first.0 + n)
            .map(|t| match s.tasks.get(t as usize) {
                Some(task) => format!("{}#{t}", task.name),
                None => format!("task#{t}"),
            })
            .collect();
        return match n {
            1 => format!("{} exit", names[0]),
            _ => format!("exits of {}", names.join(", ")),
        };
    }
    match s.objs.get(op.obj.0 as usize) {
        Some(o) => format!("{}#{}", o.name, op.obj.0),
        None => format!("obj#{}", op.obj.0),
    }
}

pub(super) fn describe_op(s: &State, op: &Op) -> String {
    let obj = obj_name(s, op);
    match op.kind {
        OpKind::Exit => "exit".into(),
        OpKind::Spawn => "spawn".into(),
        OpKind::Join => format!("join {obj}"),
        OpKind::Add => format!("add to {obj}"),
        OpKind::Yield => format!(
            "yield at {}",
            s.sites.get(op.arg as usize).copied().unwrap_or("?")
        ),
        OpKind::Sleep => format!("sleep {}ns", op.arg),
        OpKind::Lock => format!("lock {obj}"),
        OpKind::TryLock => format!("trylock {obj}"),
        OpKind::Unlock => format!("unlock {obj}"),
        OpKind::DownRead => format!("down_read {obj}"),
        OpKind::UpRead => format!("up_read {obj}"),
        OpKind::DownWrite if op.arg == super::RWSEM_QUEUED => format!("down_write {obj} (queued)"),
        OpKind::DownWrite => format!("down_write {obj}"),
        OpKind::UpWrite => format!("up_write {obj}"),
        OpKind::DowngradeWrite => format!("downgrade_write {obj}"),
        OpKind::PrepareToWait => format!("prepare_to_wait {obj}"),
        OpKind::Schedule => format!("schedule (sleep) on {obj}"),
        OpKind::FinishWait => format!("finish_wait {obj}"),
        OpKind::Wake => format!("wake_up {obj}"),
        OpKind::WaitqueueActive => format!("waitqueue_active {obj}"),
        OpKind::Read
            if op.arg == Op::LOCK_WORD && op.part_of().is_none() && op.range().is_none() =>
        {
            format!("read {obj} (lock word)")
        }
        OpKind::Read => format!("read {obj}"),
        OpKind::Write => format!("write {obj}"),
        OpKind::Flush if obj.is_empty() => "fence".into(),
        OpKind::Flush => format!("flush {obj}"),
    }
}

/// Which tasks hold what.
fn holds(s: &State, t: u32) -> Vec<String> {
    let mut out = Vec::new();
    for (i, o) in s.objs.iter().enumerate() {
        match &o.state {
            ObjState::Lock {
                holder: Some(h), ..
            } if *h == t => out.push(format!("{}#{}", o.name, i)),
            ObjState::RwSem {
                readers, writer, ..
            } => {
                if *writer == Some(t) {
                    out.push(format!("{}#{} (write)", o.name, i));
                }
                if readers.contains(&t) {
                    out.push(format!("{}#{} (read)", o.name, i));
                }
            }
            _ => {}
        }
    }
    out
}

fn wait_key(s: &State, t: usize) -> Option<String> {
    let task = &s.tasks[t];
    let w = task.wait?;
    if task.next.kind != OpKind::Schedule || w.woken {
        return None;
    }
    let name = s.objs.get(w.wq.0 as usize).map(|o| o.name).unwrap_or("?");
    Some(format!(
        "{}#{} key {}{}",
        name,
        w.wq.0,
        w.key,
        if w.exclusive { " (exclusive)" } else { "" }
    ))
}

pub(super) fn task_reports(s: &State) -> Vec<TaskReport> {
    (0..s.tasks.len())
        .map(|t| {
            let task = &s.tasks[t];
            let status = if task.status == TaskStatus::Finished {
                "finished"
            } else if s.op_enabled(t) {
                "runnable"
            } else if task.next.kind == OpKind::Schedule {
                "asleep"
            } else if task.next.kind == OpKind::Exit {
                "stopped"
            } else {
                "blocked"
            };
            TaskReport {
                id: t as u32,
                name: task.name.clone(),
                status: status.to_string(),
                next: describe_op(s, &task.next),
                line: task.line,
                holds: holds(s, t as u32),
                wait_key: wait_key(s, t),
                path: task.path.iter().map(|f| f.to_string()).collect(),
                last_wake: task.last_wake.as_ref().map(|(wq, key, mode, path)| {
                    let name = s.objs.get(wq.0 as usize).map(|o| o.name).unwrap_or("?");
                    let mode = match mode {
                        crate::platform::WakeMode::Next => "WAKE_NEXT",
                        crate::platform::WakeMode::All => "WAKE_ALL",
                    };
                    let mut w = format!("{name}#{} key {key} ({mode})", wq.0);
                    if !path.is_empty() {
                        w.push_str(&format!(" in {}", path.join(" > ")));
                    }
                    w
                }),
            }
        })
        .collect()
}

/// ` in f > g` for a task inside model functions, else nothing.
fn in_path(path: &[&'static str]) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!(" in {}", path.join(" > "))
    }
}

/// Who `t` waits for, as wait-for edges.
pub(super) fn waits_for(s: &State, t: usize) -> Vec<u32> {
    let op = s.tasks[t].next;
    if op.kind == OpKind::Join {
        return op.tasks_of().map_or(Vec::new(), |(c, n)| {
            (c.0..c.0 + n)
                .filter(|&c| s.tasks[c as usize].status != TaskStatus::Finished)
                .collect()
        });
    }
    match (op.kind, s.objs.get(op.obj.0 as usize).map(|o| &o.state)) {
        (
            OpKind::Lock,
            Some(ObjState::Lock {
                holder: Some(h), ..
            }),
        ) => vec![*h],
        // A task waiting for itself (down_write while holding the semaphore) is a cycle too.
        (
            OpKind::DownWrite,
            Some(ObjState::RwSem {
                readers, writer, ..
            }),
        ) => readers.iter().chain(writer.iter()).copied().collect(),
        // Queued behind the writers that queued first (writer-preferring).
        (OpKind::DownRead, Some(ObjState::RwSem { writer, queued, .. })) => {
            writer.iter().chain(queued.iter()).copied().collect()
        }
        _ => Vec::new(),
    }
}

pub(super) fn diagnose(s: &State) -> Violation {
    let n = s.tasks.len();
    let mut g: DiGraph<u32, ()> = DiGraph::with_capacity(n, n);
    let nodes: Vec<NodeIndex> = (0..n).map(|t| g.add_node(t as u32)).collect();
    for t in 0..n {
        if s.tasks[t].status != TaskStatus::Live {
            continue;
        }
        for h in waits_for(s, t) {
            g.add_edge(nodes[t], nodes[h as usize], ());
        }
    }
    let tasks = task_reports(s);
    for scc in tarjan_scc(&g) {
        let is_cycle = scc.len() > 1 || g.contains_edge(scc[0], scc[0]);
        if !is_cycle {
            continue;
        }
        // Order the cycle by following the edges from its smallest member.
        let members: Vec<u32> = scc.iter().map(|&i| g[i]).collect();
        let start = *members.iter().min().unwrap_or(&0);
        let mut cycle = vec![start];
        let mut cur = start;
        loop {
            let next = waits_for(s, cur as usize)
                .into_iter()
                .find(|x| members.contains(x));
            match next {
                Some(x) if x == start || cycle.contains(&x) => break,
                Some(x) => {
                    cycle.push(x);
                    cur = x;
                }
                None => break,
            }
        }
        let story: Vec<String> = cycle
            .iter()
            .map(|&t| {
                let task = &s.tasks[t as usize];
                format!(
                    "{} holds [{}] and waits to {}{}",
                    task.name,
                    holds(s, t).join(", "),
                    describe_op(s, &task.next),
                    in_path(&task.path)
                )
            })
            .collect();
        return Violation {
            kind: ViolationKind::Deadlock,
            message: format!("wait-for cycle: {}", story.join("; ")),
            task: Some(TaskId(cycle[0])),
            line: s.tasks[cycle[0] as usize].line,
            cycle,
            tasks,
        };
    }
    // No cycle: find the sleepers nobody can wake.
    let sleepers: Vec<usize> = (0..n)
        .filter(|&t| s.tasks[t].status == TaskStatus::Live && wait_key(s, t).is_some())
        .collect();
    if let Some(&first) = sleepers.first() {
        let story: Vec<String> = sleepers
            .iter()
            .map(|&t| {
                format!(
                    "{} sleeps on {} holding [{}]{}",
                    s.tasks[t].name,
                    wait_key(s, t).unwrap_or_default(),
                    holds(s, t as u32).join(", "),
                    in_path(&s.tasks[t].path)
                )
            })
            .collect();
        let others: Vec<String> = (0..n)
            .filter(|t| !sleepers.contains(t))
            .map(|t| {
                let task = &s.tasks[t];
                if task.status == TaskStatus::Finished {
                    format!("{} finished", task.name)
                } else {
                    format!("{} blocked at {}", task.name, describe_op(s, &task.next))
                }
            })
            .collect();
        let others = if others.is_empty() {
            "there are no other tasks".to_string()
        } else {
            others.join(", ")
        };
        return Violation {
            kind: ViolationKind::LostWakeup,
            message: format!(
                "{}; no live task can wake it ({})",
                story.join("; "),
                others
            ),
            task: Some(TaskId(first as u32)),
            line: s.tasks[first].line,
            cycle: Vec::new(),
            tasks,
        };
    }
    // Blocked on something held by a task that finished (a leaked lock) or stopped.
    let blocked: Vec<String> = (0..n)
        .filter(|&t| s.tasks[t].status == TaskStatus::Live)
        .map(|t| {
            let task = &s.tasks[t];
            let on: Vec<String> = waits_for(s, t)
                .iter()
                .map(|&h| {
                    let ht = &s.tasks[h as usize];
                    let st = if ht.status == TaskStatus::Finished {
                        "finished"
                    } else {
                        "stopped"
                    };
                    format!("{} ({st})", ht.name)
                })
                .collect();
            format!(
                "{} waits to {} held by {}",
                task.name,
                describe_op(s, &task.next),
                if on.is_empty() {
                    "nobody".to_string()
                } else {
                    on.join(", ")
                }
            )
        })
        .collect();
    let first = (0..n)
        .find(|&t| s.tasks[t].status == TaskStatus::Live)
        .unwrap_or(0);
    Violation {
        kind: ViolationKind::Deadlock,
        message: format!("every live task is blocked: {}", blocked.join("; ")),
        task: Some(TaskId(first as u32)),
        line: s.tasks.get(first).map(|t| t.line).unwrap_or(0),
        cycle: Vec::new(),
        tasks,
    }
}
