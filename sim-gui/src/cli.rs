//! The command line: `pmsim-gui [TRACE] [--schedule S | --events FILE] [--seed N]`. Parsing and
//! loading happen before any window opens, so `--help` and every input error work without a
//! display; a bad input is one clear message (with `file:line:col` for a trace) and exit 2.

use crate::app::{GuiApp, Tab};
use crate::session::Stepper;
use clap::Parser;
use sim_core::events::EventLog;

/// Inputs larger than this are refused (as the CLI does).
const MAX_INPUT_BYTES: u64 = 64 << 20;

/// Step through a pmsim trace one scheduling point at a time and watch DAX entries, locks,
/// wait queues, page tables and cache lines change.
#[derive(Parser, Debug, Clone, PartialEq, Eq)]
#[command(name = "pmsim-gui", version)]
pub struct Args {
    /// The trace to step through (traces/format/TRACE_FORMAT.md).
    pub trace: Option<String>,
    /// A schedule string from `pmsim explore` or `pmsim replay` (`1:SEED:CHOICES` or
    /// `2:...`): load it and put the scrubber at its end.
    #[arg(long, conflicts_with = "events")]
    pub schedule: Option<String>,
    /// An event log written by `pmsim ... --events FILE` (bincode). With a TRACE, the run is
    /// re-executed along the log's steps (same seed and bug modes as the logged run) and can be
    /// stepped and scrubbed; without one, the log is only shown (timeline and events).
    #[arg(long)]
    pub events: Option<String>,
    /// The run's seed when no schedule is given (default: the trace's `machine seed=`, else
    /// 0); decimal, or hexadecimal with 0x (as in a schedule string).
    #[arg(long, value_parser = parse_seed)]
    pub seed: Option<u64>,
    /// Switch on a bug mode (repeatable; `pmsim bugs` lists them).
    #[arg(long = "bug", value_name = "NAME")]
    pub bugs: Vec<String>,
    /// Run crashcheck on TRACE in process (trace-order schedule, crash points before every
    /// fence) and show its crash points, images and witnesses in the crash-points view; the
    /// stepper follows the checked schedule.
    #[arg(long, requires = "trace", conflicts_with_all = ["schedule", "events"])]
    pub crashcheck: bool,
    /// --crashcheck: at most this many lines differ from their durable state in an image.
    #[arg(long, default_value_t = 2, value_name = "N", requires = "crashcheck")]
    pub k: usize,
    /// --crashcheck: at most this many images checked per crash point.
    #[arg(
        long,
        default_value_t = 4096,
        value_name = "N",
        requires = "crashcheck"
    )]
    pub max_images: usize,
    /// Measure instead of opening a window: draw N frames of every view headless (layout and
    /// tessellation, no GPU) and print the median frame time per view.
    #[arg(long, value_name = "N")]
    pub bench_frames: Option<usize>,
    /// Put the scrubber at step N of the loaded schedule or event log (default: its end).
    #[arg(long, value_name = "N", requires = "trace")]
    pub at: Option<usize>,
    /// The view to open: threads, mappings, wait-queues, locks, wait-for, page-tables,
    /// persistence, crash-points, events.
    #[arg(long, default_value = "threads", value_parser = parse_view)]
    pub view: Tab,
}

fn parse_seed(s: &str) -> Result<u64, String> {
    let t = s.trim();
    match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse::<u64>(),
    }
    .map_err(|_| format!("`{s}` is not a seed (decimal, or hexadecimal with 0x)"))
}

fn parse_view(s: &str) -> Result<Tab, String> {
    Tab::ALL
        .into_iter()
        .find(|t| t.cli_name() == s)
        .ok_or_else(|| {
            let names: Vec<&str> = Tab::ALL.iter().map(|t| t.cli_name()).collect();
            format!("unknown view {s:?}; one of: {}", names.join(", "))
        })
}

fn read_events(path: &str) -> Result<EventLog, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{path}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{path}: not a regular file"));
    }
    if meta.len() > MAX_INPUT_BYTES {
        return Err(format!("{path}: larger than {MAX_INPUT_BYTES} bytes"));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    EventLog::from_bincode(&bytes).map_err(|e| format!("{path}: not a pmsim event log: {e}"))
}

/// Build the application state the arguments describe (no window yet).
pub fn load(args: &Args) -> Result<GuiApp, String> {
    let mut app = GuiApp::default();
    app.tab = args.view;
    if args.k == 0 {
        return Err("--k must be at least 1".into());
    }
    if args.max_images == 0 {
        return Err("--max-images must be at least 1".into());
    }
    let events = args.events.as_deref().map(read_events).transpose()?;
    if let Some(path) = &args.trace {
        if std::fs::metadata(path).is_ok_and(|m| m.len() > MAX_INPUT_BYTES) {
            return Err(format!("{path}: larger than {MAX_INPUT_BYTES} bytes"));
        }
        // crashcheck runs its simulations on this thread: before the stepper's session.
        let crash = if args.crashcheck {
            Some(crate::crashrun::crashcheck(
                path,
                &args.bugs,
                args.k,
                args.max_images,
            )?)
        } else {
            None
        };
        let mut st = Stepper::open_with_bugs(path, args.seed.unwrap_or(0), &args.bugs)?;
        if args.seed.is_none()
            && let Some(s) = st.trace_seed()
        {
            st.reseed(s);
        }
        if let Some(s) = &args.schedule {
            st.load_schedule(s)?;
        }
        if let Some(log) = &events {
            let seed = st.seed();
            st.load_events(log, seed)?;
        }
        if let Some(n) = args.at {
            if n > st.path_len() {
                return Err(format!("--at {n}: the run has {} steps", st.path_len()));
            }
            st.goto(n);
        }
        app.set_stepper(st);
        if let Some(run) = crash {
            app.set_crash(run);
            // Open on the first failing point (else the first point).
            let first = app
                .crash
                .as_ref()
                .and_then(|r| r.points.iter().position(|p| p.failing() > 0))
                .unwrap_or(0);
            app.select_crash_point(first);
        }
    } else if args.schedule.is_some() {
        return Err("--schedule needs a TRACE to replay it on".into());
    } else if !args.bugs.is_empty() || args.seed.is_some() {
        return Err("--bug and --seed need a TRACE".into());
    }
    app.events = events;
    Ok(app)
}
