//! The timeline: events of the run per thread over simulated time (each step at its CPU's
//! clock), for the lanes and for a virtualised table (rows are described only when shown, so a
//! 100k-event log costs nothing per frame beyond the visible rows).

use sim_core::events::EventLog;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRow {
    pub step: u32,
    pub time_ns: u64,
    pub task: String,
    pub what: String,
    pub line: u32,
}

/// Row `i` of the table.
pub fn row(log: &EventLog, i: usize) -> Option<EventRow> {
    let e = log.events.get(i)?;
    let obj = log
        .objects
        .get(e.op.obj.0 as usize)
        .map(|o| format!("{o}#{}", e.op.obj.0))
        .unwrap_or_default();
    Some(EventRow {
        step: e.step,
        time_ns: e.time,
        task: log
            .tasks
            .get(e.task.0 as usize)
            .cloned()
            .unwrap_or_else(|| format!("task#{}", e.task.0)),
        what: format!("{:?} {obj}", e.op.kind).trim_end().to_string(),
        line: e.line,
    })
}

/// Per task (lane): the (step, time) of each of its events.
pub fn lanes(log: &EventLog) -> Vec<(String, Vec<(u32, u64)>)> {
    let mut lanes: Vec<(String, Vec<(u32, u64)>)> =
        log.tasks.iter().map(|t| (t.clone(), Vec::new())).collect();
    for e in &log.events {
        let t = e.task.0 as usize;
        while lanes.len() <= t {
            lanes.push((format!("task#{}", lanes.len()), Vec::new()));
        }
        lanes[t].1.push((e.step, e.time));
    }
    lanes
}
