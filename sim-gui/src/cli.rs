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
    /// An event log written by `pmsim ... --events FILE` (bincode), shown in the timeline.
    #[arg(long)]
    pub events: Option<String>,
    /// The run's seed when no schedule is given.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Put the scrubber at step N of the loaded schedule (default: its end).
    #[arg(long, value_name = "N", requires = "schedule")]
    pub at: Option<usize>,
    /// The view to open: threads, mappings, wait-queues, locks, wait-for, page-tables,
    /// persistence, crash-points, events.
    #[arg(long, default_value = "threads", value_parser = parse_view)]
    pub view: Tab,
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
    if let Some(path) = &args.trace {
        if std::fs::metadata(path).is_ok_and(|m| m.len() > MAX_INPUT_BYTES) {
            return Err(format!("{path}: larger than {MAX_INPUT_BYTES} bytes"));
        }
        let mut st = Stepper::open(path, args.seed)?;
        if let Some(s) = &args.schedule {
            st.load_schedule(s)?;
            if let Some(n) = args.at {
                if n > st.path_len() {
                    return Err(format!(
                        "--at {n}: the schedule has {} steps",
                        st.path_len()
                    ));
                }
                st.goto(n);
            }
        }
        app.set_stepper(st);
    } else if args.schedule.is_some() {
        return Err("--schedule needs a TRACE to replay it on".into());
    }
    if let Some(ev) = &args.events {
        app.events = Some(read_events(ev)?);
    }
    Ok(app)
}
