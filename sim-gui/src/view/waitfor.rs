//! The wait-for graph: one node per live task, an edge from a task to each task it waits for
//! (the engine's edges, `Sim::inspect_wait_for`), drawn from a petgraph graph. A cycle
//! (strongly connected component, petgraph's `tarjan_scc`) is highlighted, and so is a sleeper
//! on a wait queue once the run has ended with nobody able to wake it (the engine's lost-wakeup
//! diagnosis); other sleepers are marked as sleeping.

use crate::session::Snapshot;
use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use sim_core::sim::{RunEnd, ViolationKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeMark {
    Normal,
    /// Asleep on a wait queue (someone may still wake it).
    Sleeping,
    /// In a wait-for cycle.
    InCycle,
    /// Asleep, and the run ended with no live task able to wake it.
    Unwakeable,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub task: u32,
    pub name: String,
    pub status: String,
    pub mark: NodeMark,
    /// What it waits for, in words (its next step, or its wait key).
    pub waits: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    /// Indices into `nodes`.
    pub from: usize,
    pub to: usize,
    pub in_cycle: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct WaitForView {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// The problem, in words, when there is one.
    pub problem: Option<String>,
}

pub fn build(snap: &Snapshot) -> WaitForView {
    let live: Vec<&sim_core::sim::TaskReport> = snap
        .tasks
        .iter()
        .filter(|t| t.status != "finished")
        .collect();
    let mut g: DiGraph<u32, ()> = DiGraph::new();
    let idx: Vec<NodeIndex> = live.iter().map(|t| g.add_node(t.id)).collect();
    let pos = |task: u32| live.iter().position(|t| t.id == task);
    for &(a, b) in &snap.wait_for {
        if let (Some(i), Some(j)) = (pos(a), pos(b)) {
            g.add_edge(idx[i], idx[j], ());
        }
    }
    let mut in_cycle = vec![false; live.len()];
    for scc in tarjan_scc(&g) {
        if scc.len() > 1 || g.contains_edge(scc[0], scc[0]) {
            for n in scc {
                in_cycle[n.index()] = true;
            }
        }
    }
    let violation = match &snap.end {
        Some(RunEnd::Violation(v)) => Some(v),
        _ => None,
    };
    let lost = violation.is_some_and(|v| v.kind == ViolationKind::LostWakeup);
    let nodes: Vec<Node> = live
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let asleep = t.wait_key.is_some();
            let mark = if in_cycle[i] {
                NodeMark::InCycle
            } else if asleep && lost {
                NodeMark::Unwakeable
            } else if asleep {
                NodeMark::Sleeping
            } else {
                NodeMark::Normal
            };
            Node {
                task: t.id,
                name: t.name.clone(),
                status: t.status.clone(),
                mark,
                waits: match &t.wait_key {
                    Some(k) => format!("sleeps on {k}"),
                    None => t.next.clone(),
                },
            }
        })
        .collect();
    let edges = g
        .edge_indices()
        .filter_map(|e| g.edge_endpoints(e))
        .map(|(a, b)| Edge {
            from: a.index(),
            to: b.index(),
            in_cycle: in_cycle[a.index()] && in_cycle[b.index()],
        })
        .collect();
    let problem = if let Some(v) =
        violation.filter(|v| matches!(v.kind, ViolationKind::LostWakeup | ViolationKind::Deadlock))
    {
        Some(format!("{}: {}", v.kind.name(), v.message))
    } else if in_cycle.iter().any(|&c| c) {
        let names: Vec<&str> = live
            .iter()
            .zip(&in_cycle)
            .filter(|(_, c)| **c)
            .map(|(t, _)| t.name.as_str())
            .collect();
        Some(format!("wait-for cycle among {}", names.join(", ")))
    } else {
        None
    };
    WaitForView {
        nodes,
        edges,
        problem,
    }
}
