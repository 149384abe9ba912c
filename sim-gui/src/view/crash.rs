//! Crash points: a crashcheck run ([`CrashRun`], computed in process by `--crashcheck`) as
//! text rows: each point (the step it precedes, thread, trace line, call stack), its images
//! with the oracles' verdict, and the witness of the first failing image (the lines that
//! persisted and those that did not, with the stores that wrote them).

use crate::crashrun::{CrashRun, ImageRow, PointRow};
use sim_fs::crashcheck::Finding;

/// What the view shows when no crashcheck run is loaded.
pub const NOT_LOADED: &str = "no crashcheck run loaded: start pmsim-gui with \
     `TRACE --crashcheck [--bug NAME] [--k N]` to check every crash point of the trace-order run";

/// The head line of a run.
pub fn summary(run: &CrashRun) -> String {
    if let Some(m) = &run.run_failed {
        return format!("the run itself failed before any crash image was checked: {m}");
    }
    let images: usize = run.points.iter().map(|p| p.images.len()).sum();
    let failing = run.points.iter().filter(|p| p.failing() > 0).count();
    let bugs = if run.bugs.is_empty() {
        String::new()
    } else {
        format!(", --bug {}", run.bugs.join(" --bug "))
    };
    format!(
        "crashcheck {}: schedule {}, points before every fence, k {}{bugs}: {} crash points, \
         {images} images checked, {}",
        run.trace,
        run.schedule,
        run.k,
        run.points.len(),
        if failing == 0 {
            "clean".to_string()
        } else {
            format!("{failing} points with FAILING images")
        }
    )
}

/// A point's one-line label (the list entry).
pub fn point_label(p: &PointRow) -> String {
    let at = if p.line > 0 {
        format!("before `{}` by {} at line {}", p.what, p.thread, p.line)
    } else {
        p.what.clone()
    };
    let verdict = match p.failing() {
        0 => "ok".to_string(),
        n => format!("{n} FAILING"),
    };
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    format!(
        "point {} (step {}): {at}: {}, {}{}: {verdict}",
        p.index,
        p.step,
        plural(p.pending, "pending line", "pending lines"),
        plural(p.images.len(), "image", "images"),
        if p.capped { " (capped)" } else { "" }
    )
}

/// The call stack of a point (`a > b > c`), or empty.
pub fn stack(p: &PointRow) -> String {
    p.stack.join(" > ")
}

/// An image's row.
pub fn image_label(i: &ImageRow) -> String {
    let lines = if i.lines.is_empty() {
        "durable state only".to_string()
    } else {
        let l: Vec<String> = i.lines.iter().map(|a| format!("{a:#x}")).collect();
        format!("persisted {}", l.join(", "))
    };
    match &i.verdict {
        Ok(()) => format!("image {}: {lines}: ok", i.id),
        Err(e) => format!("image {}: {lines}: FAIL {e}", i.id),
    }
}

/// The witness as sections of lines: (heading, lines).
pub fn witness(f: &Finding) -> Vec<(String, Vec<String>)> {
    vec![
        (
            format!(
                "image {} FAILS {}: {}",
                f.image, f.violation.kind, f.violation.message
            ),
            Vec::new(),
        ),
        (
            "persisted beyond their durable state:".into(),
            f.persisted.iter().map(ToString::to_string).collect(),
        ),
        (
            "pending, not persisted:".into(),
            f.not_persisted.iter().map(ToString::to_string).collect(),
        ),
        (
            format!(
                "smallest failing subset ({} of {} persisted lines):",
                f.minimal.len(),
                f.persisted.len()
            ),
            f.minimal.iter().map(ToString::to_string).collect(),
        ),
    ]
}
