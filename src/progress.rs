//! The progress bar of a search, on stderr: runs so far, runs/s, violations, and for dfs a
//! rough estimate of the explored part of the tree. It appears only once a search has run for
//! a second, only when stderr is a terminal (`Io::progress`), never with `--quiet`. With
//! `--json` too: the report goes to stdout, the bar to stderr, and it is cleared at the end.
//! It is drawn from the thread that runs the command (never a ticker thread: `main.rs` holds
//! the stderr lock).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use sim_core::sim::explore::Progress;
use std::time::{Duration, Instant};

/// How long a search runs before its bar appears.
const SHOW_AFTER: Duration = Duration::from_secs(1);

pub struct Bar {
    bar: ProgressBar,
    show: bool,
    visible: bool,
    started: Instant,
}

impl Bar {
    pub fn new(show: bool) -> Bar {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} {pos} runs {wide_bar} {elapsed} {rate} {msg}")
        {
            // Whole runs per second (indicatif's `{per_sec}` prints four decimals).
            bar.set_style(style.with_key(
                "rate",
                |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0} runs/s", s.per_sec());
                },
            ));
        }
        Bar {
            bar,
            show,
            visible: false,
            started: Instant::now(),
        }
    }

    pub fn update(&mut self, p: Progress) {
        if self.show && !self.visible && self.started.elapsed() >= SHOW_AFTER {
            self.bar
                .set_draw_target(ProgressDrawTarget::stderr_with_hz(10));
            self.visible = true;
        }
        self.bar.set_length(p.target_runs.unwrap_or(p.runs.max(1)));
        self.bar.set_position(p.runs);
        self.bar.set_message(message(&p));
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// The text after the bar: violations, and the dfs estimate.
fn message(p: &Progress) -> String {
    let mut m = match p.failed_runs {
        0 => "no violation".to_string(),
        1 => "1 violation".to_string(),
        n => format!("{n} violations"),
    };
    if let Some(x) = p.explored {
        m.push_str(&format!(
            ", ~{:.1}% of the tree explored (estimate)",
            x * 100.0
        ));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_violations_and_the_estimate() {
        let p = Progress {
            runs: 10,
            failed_runs: 2,
            target_runs: None,
            explored: Some(0.25),
        };
        assert_eq!(
            message(&p),
            "2 violations, ~25.0% of the tree explored (estimate)"
        );
        let q = Progress {
            failed_runs: 0,
            explored: None,
            ..p
        };
        assert_eq!(message(&q), "no violation");
    }

    #[test]
    fn a_hidden_bar_stays_hidden() {
        let mut b = Bar::new(false);
        b.started -= SHOW_AFTER * 2;
        b.update(Progress {
            runs: 1,
            failed_runs: 0,
            target_runs: Some(3),
            explored: None,
        });
        assert!(!b.visible);
        b.finish();
    }
}
