//! The egui application: a top bar (back, forward, run to the next step of a kind, load and
//! save a schedule), the runnable threads as buttons on the left, the views as tabs in the
//! middle, and the timeline with its scrubber at the bottom. It only lays out the view models
//! of [`crate::view`]; every number it shows comes from the [`Snapshot`] of the current step.
//!
//! Keys: `1`-`9` step the n-th runnable thread, `Left`/`Backspace` go back one step, `Right`
//! goes forward along the loaded schedule, `N` runs to the next step of the chosen kind.

use crate::crashrun::CrashRun;
use crate::session::{Snapshot, StepKind, Stepper};
use crate::view::{
    crash, locks, mappings, mappings::EntryClass, pages, persistence, threads, timeline, waitfor,
    waitfor::NodeMark, waitqueues,
};
use egui::{Color32, RichText, Ui};
use sim_core::events::EventLog;
use sim_core::sim::RunEnd;

/// Colours, with the legend the window shows.
pub mod colours {
    use egui::Color32;
    pub const LOCKED: Color32 = Color32::from_rgb(220, 60, 60);
    pub const DIRTY: Color32 = Color32::from_rgb(230, 180, 40);
    pub const POISONED: Color32 = Color32::from_rgb(170, 70, 200);
    pub const ZERO: Color32 = Color32::from_rgb(110, 150, 200);
    pub const EMPTY: Color32 = Color32::from_rgb(140, 140, 140);
    pub const MAPPED: Color32 = Color32::from_rgb(80, 170, 90);
    pub const SLEEPING: Color32 = Color32::from_rgb(230, 150, 40);
    pub const PROBLEM: Color32 = Color32::from_rgb(235, 50, 50);
}

/// The view tabs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tab {
    Threads,
    Mappings,
    WaitQueues,
    Locks,
    WaitFor,
    PageTables,
    Persistence,
    CrashPoints,
    Events,
}

impl Tab {
    pub const ALL: [Tab; 9] = [
        Tab::Threads,
        Tab::Mappings,
        Tab::WaitQueues,
        Tab::Locks,
        Tab::WaitFor,
        Tab::PageTables,
        Tab::Persistence,
        Tab::CrashPoints,
        Tab::Events,
    ];
    /// The name `--view` takes.
    pub fn cli_name(self) -> &'static str {
        match self {
            Tab::Threads => "threads",
            Tab::Mappings => "mappings",
            Tab::WaitQueues => "wait-queues",
            Tab::Locks => "locks",
            Tab::WaitFor => "wait-for",
            Tab::PageTables => "page-tables",
            Tab::Persistence => "persistence",
            Tab::CrashPoints => "crash-points",
            Tab::Events => "events",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Tab::Threads => "Threads",
            Tab::Mappings => "Mappings",
            Tab::WaitQueues => "Wait queues",
            Tab::Locks => "Locks",
            Tab::WaitFor => "Wait-for graph",
            Tab::PageTables => "Page tables",
            Tab::Persistence => "Persistence",
            Tab::CrashPoints => "Crash points",
            Tab::Events => "Events",
        }
    }
}

/// The whole application state.
pub struct GuiApp {
    pub stepper: Option<Stepper>,
    /// An event log loaded with `--events` (shown when no trace is being stepped).
    pub events: Option<EventLog>,
    pub tab: Tab,
    pub schedule_text: String,
    pub run_kind: StepKind,
    /// The last message (an error, or what a button did).
    pub status: String,
    /// The saved schedule and replay command, once "Save schedule" was pressed.
    pub saved: Option<(String, String)>,
    pub show_free_locks: bool,
    /// The timeline's x axis: simulated time (each step at its CPU's clock) or step order.
    pub timeline_by_time: bool,
    /// A crashcheck run loaded with `--crashcheck` (the crash-points view).
    pub crash: Option<CrashRun>,
    /// The crash point selected in the crash-points view.
    pub crash_selected: Option<usize>,
    /// The stepper's path along the crashcheck's schedule, once it was loaded.
    crash_path: Option<Vec<u32>>,
    /// The event log of the current step (rebuilt when the step changes).
    log: Option<(usize, usize, EventLog)>,
    /// The timeline's marks, per lane, for (log key, width, x axis): rebuilt when one changes,
    /// so that a frame does not walk a 100k-event log.
    lanes: Option<(LanesKey, Vec<Vec<f32>>)>,
}

/// What the timeline's marks depend on: the log (step cursor and path length, or the loaded
/// `--events` log), the lanes' width in points (bits) and the x axis.
type LanesKey = (Option<(usize, usize)>, u32, bool);

impl Default for GuiApp {
    fn default() -> Self {
        GuiApp {
            stepper: None,
            events: None,
            tab: Tab::Threads,
            schedule_text: String::new(),
            run_kind: StepKind::Wake,
            status: String::new(),
            saved: None,
            show_free_locks: false,
            timeline_by_time: false,
            crash: None,
            crash_selected: None,
            crash_path: None,
            log: None,
            lanes: None,
        }
    }
}

impl eframe::App for GuiApp {
    fn ui(&mut self, ui: &mut Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
    }
}

fn button_label(r: &crate::session::Runnable) -> String {
    if r.line > 0 {
        format!("> {}: {} (line {})", r.name, r.op, r.line)
    } else {
        format!("> {}: {}", r.name, r.op)
    }
}

impl GuiApp {
    pub fn set_stepper(&mut self, st: Stepper) {
        self.stepper = Some(st);
        self.log = None;
        self.crash_path = None;
    }

    /// Load a crashcheck run for the crash-points view (its schedule is loaded into the
    /// stepper when a point is selected).
    pub fn set_crash(&mut self, run: CrashRun) {
        self.crash = Some(run);
        self.crash_selected = None;
        self.crash_path = None;
    }

    /// Select crash point `i` of the loaded crashcheck run and scrub the stepper to it: the
    /// crashcheck's schedule is loaded when the stepper is on another path, then the cursor
    /// moves to the step the point precedes.
    pub fn select_crash_point(&mut self, i: usize) {
        let Some(run) = &self.crash else { return };
        let Some(p) = run.points.get(i) else { return };
        self.crash_selected = Some(i);
        let Some(st) = &mut self.stepper else { return };
        // The stepper's kept path is the crashcheck's unless a different step was taken.
        if self.crash_path.as_ref() != Some(&st.path()) {
            if let Err(e) = st.load_schedule(&run.schedule) {
                self.status = e;
                return;
            }
            self.crash_path = Some(st.path());
        }
        st.goto(p.step);
        self.status = format!("crash point {}: step {}", p.index, p.step);
    }

    /// Draw one frame and act on clicks and keys.
    pub fn show(&mut self, ui: &mut Ui) {
        self.keys(ui);
        egui::Panel::top("controls").show(ui, |ui| self.controls(ui));
        egui::Panel::left("runnable")
            .resizable(true)
            .default_size(330.0)
            .show(ui, |ui| self.runnable(ui));
        egui::Panel::bottom("timeline")
            .resizable(true)
            .default_size(200.0)
            .show(ui, |ui| self.timeline(ui));
        egui::CentralPanel::default().show(ui, |ui| self.views(ui));
    }

    fn keys(&mut self, ui: &mut Ui) {
        // Keys act only when no text field has the focus.
        if ui.ctx().egui_wants_keyboard_input() {
            return;
        }
        let Some(st) = &mut self.stepper else { return };
        let (back, fwd, run, digit) = ui.input(|i| {
            let digit = (1..=9u8).find(|d| {
                let key = egui::Key::from_name(&d.to_string());
                key.is_some_and(|k| i.key_pressed(k))
            });
            (
                i.key_pressed(egui::Key::ArrowLeft) || i.key_pressed(egui::Key::Backspace),
                i.key_pressed(egui::Key::ArrowRight),
                i.key_pressed(egui::Key::N),
                digit,
            )
        });
        if back {
            st.back();
        }
        if fwd && st.cursor() < st.path_len() {
            let n = st.cursor() + 1;
            st.goto(n);
        }
        if run {
            st.run_to(self.run_kind, 100_000);
        }
        if let Some(d) = digit {
            let r = st.runnable();
            if let Some(r) = r.get(d as usize - 1)
                && let Err(e) = st.step(r.task)
            {
                self.status = e;
            }
        }
    }

    fn controls(&mut self, ui: &mut Ui) {
        ui.horizontal_wrapped(|ui| {
            ui.heading("pmsim-gui");
            let Some(st) = &mut self.stepper else {
                ui.label("no trace loaded: run `pmsim-gui TRACE`");
                return;
            };
            ui.label(&st.trace_path);
            ui.separator();
            if ui.button("< Back").clicked() && !st.back() {
                self.status = "at the start of the run".into();
            }
            if ui
                .add_enabled(st.cursor() < st.path_len(), egui::Button::new("Forward >"))
                .clicked()
            {
                let n = st.cursor() + 1;
                st.goto(n);
            }
            egui::ComboBox::from_label("step kind")
                .selected_text(self.run_kind.label())
                .show_ui(ui, |ui| {
                    for k in StepKind::ALL {
                        ui.selectable_value(&mut self.run_kind, k, k.label());
                    }
                });
            if ui.button("Run to next").clicked() {
                let n = st.run_to(self.run_kind, 100_000);
                self.status = format!("ran {n} steps");
            }
            ui.separator();
            ui.add(
                egui::TextEdit::singleline(&mut self.schedule_text)
                    .hint_text("schedule string")
                    .desired_width(220.0),
            );
            if ui.button("Load schedule").clicked() {
                self.status = match st.load_schedule(&self.schedule_text) {
                    Ok(()) => format!("loaded: {} steps", st.path_len()),
                    Err(e) => e,
                };
            }
            if ui.button("Save schedule").clicked() {
                let s = (st.schedule_string(), st.replay_command());
                ui.ctx().copy_text(s.1.clone());
                self.saved = Some(s);
                self.status = "replay command copied to the clipboard".into();
            }
        });
        if let Some((s, cmd)) = &self.saved {
            ui.horizontal(|ui| {
                ui.label("schedule:");
                ui.add(egui::Label::new(RichText::new(s).monospace()).selectable(true));
                ui.label("replay:");
                ui.add(egui::Label::new(RichText::new(cmd).monospace()).selectable(true));
            });
        }
        if let Some(st) = &self.stepper {
            ui.horizontal(|ui| {
                ui.label(format!("step {} of {}", st.cursor(), st.path_len()));
                match &st.snapshot().end {
                    Some(RunEnd::Done) => {
                        ui.colored_label(colours::MAPPED, "run finished: clean");
                    }
                    Some(RunEnd::Violation(v)) => {
                        ui.colored_label(
                            colours::PROBLEM,
                            format!("VIOLATION {}: {}", v.kind.name(), v.message),
                        );
                    }
                    _ => {}
                }
                if !self.status.is_empty() {
                    ui.label(&self.status);
                }
            });
        }
        legend(ui);
    }

    fn runnable(&mut self, ui: &mut Ui) {
        ui.heading("Runnable threads");
        let Some(st) = &mut self.stepper else { return };
        let runnable = st.runnable();
        if runnable.is_empty() {
            ui.label("nobody can move: the run is over");
        }
        let mut chosen = None;
        for (i, r) in runnable.iter().enumerate() {
            let resp = ui
                .button(button_label(r))
                .on_hover_text(format!("key {}", i + 1));
            if resp.clicked() {
                chosen = Some(r.task);
            }
        }
        if let Some(t) = chosen
            && let Err(e) = st.step(t)
        {
            self.status = e;
        }
        ui.separator();
        ui.label("Blocked / asleep:");
        for t in &st.snapshot().tasks {
            if t.status == "blocked" || t.status == "asleep" {
                let c = if t.status == "asleep" {
                    colours::SLEEPING
                } else {
                    colours::LOCKED
                };
                ui.colored_label(c, format!("{} [{}]: {}", t.name, t.status, t.next));
            }
        }
    }

    fn timeline(&mut self, ui: &mut Ui) {
        let Some(st) = &mut self.stepper else {
            if let Some(log) = &self.events {
                ui.heading(format!("Event log: {} events", log.events.len()));
                lanes(ui, log, None, self.timeline_by_time, &mut self.lanes);
            } else {
                ui.label("no run loaded");
            }
            return;
        };
        ui.horizontal(|ui| {
            ui.label("Timeline (step):");
            let mut pos = st.cursor();
            let len = st.path_len();
            let resp = ui.add(egui::Slider::new(&mut pos, 0..=len).text("scrub"));
            if resp.changed() && pos != st.cursor() {
                st.goto(pos);
            }
            ui.checkbox(&mut self.timeline_by_time, "x = simulated time (else step)");
        });
        self.refresh_log();
        let by_time = self.timeline_by_time;
        let key = self.log.as_ref().map(|(c, l, _)| (*c, *l));
        let log = match &self.log {
            Some((_, _, log)) => Some(log),
            None => self.events.as_ref(),
        };
        if let Some(log) = log {
            lanes(ui, log, key, by_time, &mut self.lanes);
        }
    }

    /// Rebuild the cached event log when the step changed (once per step, not per frame).
    fn refresh_log(&mut self) {
        let Some(st) = &self.stepper else {
            self.log = None;
            return;
        };
        let key = (st.cursor(), st.path_len());
        if !matches!(&self.log, Some((c, l, _)) if (*c, *l) == key) {
            self.log = Some((key.0, key.1, st.event_log()));
        }
    }

    /// The log the timeline and the events table show: the stepped run's, else `--events`.
    fn shown_log(&self) -> Option<&EventLog> {
        match &self.log {
            Some((_, _, log)) => Some(log),
            None => self.events.as_ref(),
        }
    }

    fn views(&mut self, ui: &mut Ui) {
        ui.horizontal_wrapped(|ui| {
            for t in Tab::ALL {
                ui.selectable_value(&mut self.tab, t, t.label());
            }
        });
        ui.separator();
        if self.tab == Tab::Events {
            self.refresh_log();
            match self.shown_log() {
                Some(log) => events_table(ui, log),
                None => {
                    ui.label("no run loaded");
                }
            }
            return;
        }
        if self.tab == Tab::CrashPoints {
            self.crash_view(ui);
            return;
        }
        let Some(st) = &self.stepper else {
            ui.label("no trace loaded");
            return;
        };
        let snap = st.snapshot();
        egui::ScrollArea::both()
            .auto_shrink([false, false])
            .show(ui, |ui| match self.tab {
                Tab::Threads => threads_view(ui, snap),
                Tab::Mappings => mappings_view(ui, snap),
                Tab::WaitQueues => waitqueues_view(ui, snap),
                Tab::Locks => {
                    ui.checkbox(&mut self.show_free_locks, "show free locks");
                    locks_view(ui, snap, self.show_free_locks);
                }
                Tab::WaitFor => waitfor_view(ui, snap),
                Tab::PageTables => pages_view(ui, snap),
                Tab::Persistence => persistence_view(ui, snap),
                Tab::CrashPoints | Tab::Events => {}
            });
    }
}

impl GuiApp {
    fn crash_view(&mut self, ui: &mut Ui) {
        let Some(run) = &self.crash else {
            ui.label(crash::NOT_LOADED);
            return;
        };
        ui.label(crash::summary(run));
        let mut clicked = None;
        egui::ScrollArea::vertical()
            .id_salt("crash points")
            .max_height(200.0)
            .show(ui, |ui| {
                for (i, p) in run.points.iter().enumerate() {
                    let mut text = RichText::new(crash::point_label(p));
                    if p.failing() > 0 {
                        text = text.color(colours::PROBLEM);
                    }
                    if ui
                        .selectable_label(self.crash_selected == Some(i), text)
                        .on_hover_text("select: the stepper moves to this point")
                        .clicked()
                    {
                        clicked = Some(i);
                    }
                }
            });
        if let Some(i) = clicked {
            self.select_crash_point(i);
        }
        let Some(run) = &self.crash else { return };
        let Some(p) = self.crash_selected.and_then(|i| run.points.get(i)) else {
            ui.label("select a crash point: the stepper moves to it");
            return;
        };
        ui.separator();
        ui.strong(crash::point_label(p));
        if !p.stack.is_empty() {
            ui.label(format!("call stack: {}", crash::stack(p)));
        }
        if let Some(f) = &p.witness {
            ui.strong("witness");
            egui::ScrollArea::vertical()
                .id_salt("crash witness")
                .max_height(ui.available_height() * 0.6)
                .show(ui, |ui| {
                    for (head, lines) in crash::witness(f) {
                        ui.colored_label(colours::PROBLEM, head);
                        for l in lines {
                            ui.monospace(format!("  {l}"));
                        }
                    }
                });
        }
        ui.strong(format!(
            "images ({} distinct, {} duplicates skipped{})",
            p.images.len(),
            p.duplicates,
            if p.capped {
                format!(", capped at {}", run.max_images)
            } else {
                String::new()
            }
        ));
        virtual_rows(
            ui,
            egui::ScrollArea::vertical()
                .id_salt("crash images")
                .auto_shrink([false, false]),
            egui::TextStyle::Monospace,
            &p.images,
            |ui, img| {
                let text = RichText::new(crash::image_label(img)).monospace();
                if img.verdict.is_err() {
                    ui.colored_label(colours::PROBLEM, text);
                } else {
                    ui.label(text);
                }
            },
        );
    }
}

fn legend(ui: &mut Ui) {
    ui.horizontal_wrapped(|ui| {
        ui.label("Legend:");
        for (c, what) in [
            (colours::LOCKED, "locked / blocked"),
            (colours::DIRTY, "dirty"),
            (colours::POISONED, "poisoned"),
            (colours::ZERO, "zero entry"),
            (colours::EMPTY, "empty entry"),
            (colours::MAPPED, "mapped entry"),
            (colours::SLEEPING, "asleep"),
            (colours::PROBLEM, "wait-for problem"),
        ] {
            let (r, _) = ui.allocate_exact_size(egui::vec2(12.0, 12.0), egui::Sense::hover());
            ui.painter().rect_filled(r, 2.0, c);
            ui.label(what);
        }
    });
}

fn class_colour(c: EntryClass) -> Color32 {
    match c {
        EntryClass::Locked => colours::LOCKED,
        EntryClass::Empty => colours::EMPTY,
        EntryClass::Zero => colours::ZERO,
        EntryClass::Dirty => colours::DIRTY,
        EntryClass::Mapped => colours::MAPPED,
    }
}

fn threads_view(ui: &mut Ui, snap: &Snapshot) {
    egui::Grid::new("threads").striped(true).show(ui, |ui| {
        for h in [
            "thread",
            "state",
            "next step",
            "line",
            "locks held",
            "call stack",
        ] {
            ui.strong(h);
        }
        ui.end_row();
        for r in threads::build(snap) {
            ui.label(&r.name);
            let c = match r.status.as_str() {
                "asleep" => colours::SLEEPING,
                "blocked" => colours::LOCKED,
                _ => ui.visuals().text_color(),
            };
            let state = match &r.sleeps_on {
                Some(k) => format!("{} on {k}", r.status),
                None => r.status.clone(),
            };
            ui.colored_label(c, state);
            ui.label(&r.next);
            ui.label(if r.line > 0 {
                r.line.to_string()
            } else {
                String::new()
            });
            ui.label(r.holds.join(", "));
            ui.label(r.stack.join(" > "));
            ui.end_row();
        }
    });
    for r in threads::build(snap) {
        if let Some(w) = &r.last_wake {
            ui.label(format!("{} last woke {w}", r.name));
        }
    }
}

fn mappings_view(ui: &mut Ui, snap: &Snapshot) {
    let files = mappings::build(snap);
    if files.is_empty() {
        ui.label("no files");
    }
    for f in files {
        ui.heading(&f.title);
        match &f.entries {
            Err(e) => {
                ui.colored_label(colours::LOCKED, e);
            }
            Ok(rows) => {
                strip(ui, &f);
                ui.horizontal(|ui| {
                    ui.monospace(format!(
                        "{:<22} {:<28} {:<12} raw",
                        "indices", "entry", "pfn"
                    ));
                });
                // Virtualised: only the visible rows are laid out.
                virtual_rows(
                    ui,
                    egui::ScrollArea::vertical()
                        .id_salt(("xa", &f.title))
                        .max_height(320.0),
                    egui::TextStyle::Monospace,
                    rows,
                    |ui, r| {
                        ui.horizontal(|ui| {
                            ui.monospace(format!(
                                "{:<22}",
                                format!("{:#x}-{:#x}", r.first, r.last)
                            ));
                            ui.colored_label(
                                class_colour(r.class()),
                                RichText::new(format!("{:<28}", r.flags())).monospace(),
                            );
                            ui.monospace(format!(
                                "{:<12} {:#x}",
                                r.pfn.map(|p| format!("{p:#x}")).unwrap_or_default(),
                                r.raw
                            ));
                        });
                    },
                );
                if rows.is_empty() {
                    ui.label("(empty xarray)");
                }
            }
        }
        ui.separator();
    }
}

/// The xarray as a strip over indices `0..strip_len`.
fn strip(ui: &mut Ui, f: &mappings::FileView) {
    let width = ui.available_width().clamp(200.0, 1200.0);
    let (rect, resp) = ui.allocate_exact_size(egui::vec2(width, 18.0), egui::Sense::hover());
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 2.0, ui.visuals().extreme_bg_color);
    let scale = width / f.strip_len as f32;
    for s in &f.strip {
        let x0 = rect.left() + s.first as f32 * scale;
        let x1 = rect.left() + (s.last + 1) as f32 * scale;
        let r = egui::Rect::from_x_y_ranges(x0..=x1.max(x0 + 2.0), rect.y_range());
        painter.rect_filled(r, 0.0, class_colour(s.class));
    }
    resp.on_hover_text(format!("indices 0..{:#x}", f.strip_len));
}

fn waitqueues_view(ui: &mut Ui, snap: &Snapshot) {
    let mut rows = waitqueues::build(snap);
    // The buckets in use: with sleepers, or woken at least once.
    rows.retain(|q| !q.waiters.is_empty() || q.last_wake.is_some());
    if rows.is_empty() {
        ui.label("no wait queue has waiters or was woken yet");
        return;
    }
    // Queues with sleepers first; then one line per queue, waiter and wake-up, virtualised
    // (a long run wakes hundreds of buckets).
    rows.sort_by_key(|q| q.waiters.is_empty());
    let text = ui.visuals().text_color();
    let mut lines: Vec<(String, Color32)> = Vec::new();
    for q in &rows {
        lines.push((q.queue.clone(), ui.visuals().strong_text_color()));
        for w in &q.waiters {
            let excl = if w.exclusive { " (exclusive)" } else { "" };
            lines.push((
                format!("    waiter {} key {}{excl}", w.task, w.key),
                colours::SLEEPING,
            ));
            for o in &w.other_keys_woken {
                lines.push((format!("      not its key: woken {o}"), colours::PROBLEM));
            }
        }
        lines.push(match &q.last_wake {
            Some(l) => (format!("    last wake: {l}"), text),
            None => ("    never woken".to_string(), text),
        });
    }
    ui.label(format!("{} wait queues in use", rows.len()));
    virtual_rows(
        ui,
        egui::ScrollArea::vertical()
            .id_salt("wait queue rows")
            .max_height(600.0),
        egui::TextStyle::Body,
        &lines,
        |ui, (l, c)| {
            ui.colored_label(*c, l);
        },
    );
}

fn locks_view(ui: &mut Ui, snap: &Snapshot, all: bool) {
    egui::Grid::new("locks").striped(true).show(ui, |ui| {
        for h in ["lock", "kind", "holders", "waiters"] {
            ui.strong(h);
        }
        ui.end_row();
        for r in locks::build(snap, all) {
            ui.label(&r.lock);
            ui.label(r.kind);
            if r.holders.is_empty() {
                ui.label("free");
            } else {
                ui.colored_label(colours::LOCKED, r.holders.join(", "));
            }
            ui.label(r.waiters.join(", "));
            ui.end_row();
        }
    });
    ui.label("Page locks (PG_locked) are in the struct pages table of Page tables.");
}

fn mark_colour(ui: &Ui, m: NodeMark) -> Color32 {
    match m {
        NodeMark::InCycle | NodeMark::Unwakeable => colours::PROBLEM,
        NodeMark::Sleeping => colours::SLEEPING,
        NodeMark::Normal => ui.visuals().text_color(),
    }
}

fn waitfor_view(ui: &mut Ui, snap: &Snapshot) {
    let g = waitfor::build(snap);
    match &g.problem {
        Some(p) => {
            ui.colored_label(colours::PROBLEM, format!("PROBLEM: {p}"));
        }
        None => {
            ui.label("no cycle, no unwakeable sleeper");
        }
    }
    for n in &g.nodes {
        let mark = match n.mark {
            NodeMark::InCycle => " [IN CYCLE]",
            NodeMark::Unwakeable => " [UNWAKEABLE]",
            NodeMark::Sleeping => " [asleep]",
            NodeMark::Normal => "",
        };
        ui.colored_label(
            mark_colour(ui, n.mark),
            format!("{} ({}){mark}: {}", n.name, n.status, n.waits),
        );
    }
    // The graph: nodes on a circle, edges as arrows.
    let size = egui::vec2(ui.available_width().clamp(200.0, 600.0), 260.0);
    let (rect, _) = ui.allocate_exact_size(size, egui::Sense::hover());
    let painter = ui.painter_at(rect);
    let n = g.nodes.len().max(1) as f32;
    let radius = rect.height().min(rect.width()) * 0.35;
    let pos = |i: usize| {
        let a = i as f32 / n * std::f32::consts::TAU - std::f32::consts::FRAC_PI_2;
        rect.center() + egui::vec2(a.cos(), a.sin()) * radius
    };
    for e in &g.edges {
        let c = if e.in_cycle {
            colours::PROBLEM
        } else {
            ui.visuals().text_color()
        };
        let (a, b) = (pos(e.from), pos(e.to));
        let dir = (b - a).normalized();
        painter.arrow(
            a + dir * 22.0,
            (b - a) - dir * 44.0,
            egui::Stroke::new(2.0, c),
        );
    }
    for (i, node) in g.nodes.iter().enumerate() {
        let c = mark_colour(ui, node.mark);
        painter.circle_stroke(pos(i), 20.0, egui::Stroke::new(2.0, c));
        painter.text(
            pos(i),
            egui::Align2::CENTER_CENTER,
            &node.name,
            egui::FontId::proportional(13.0),
            c,
        );
    }
}

fn pages_view(ui: &mut Ui, snap: &Snapshot) {
    for p in pages::procs(snap) {
        ui.strong(format!("process {}", p.name));
        match &p.leaves {
            Err(e) => {
                ui.colored_label(colours::LOCKED, e);
            }
            Ok(ls) if ls.is_empty() => {
                ui.label("(no present leaves)");
            }
            Ok(ls) => {
                ui.monospace(format!(
                    "{:<18} {:<5} {:<12} write dirty",
                    "address", "level", "pfn"
                ));
                // Virtualised: only the visible leaves are laid out.
                virtual_rows(
                    ui,
                    egui::ScrollArea::vertical()
                        .id_salt(("pt", &p.name))
                        .max_height(240.0),
                    egui::TextStyle::Monospace,
                    ls,
                    |ui, l| {
                        ui.horizontal(|ui| {
                            ui.monospace(format!(
                                "{:<18} {:<5} {:<12} {:<5}",
                                format!("{:#x}", l.addr),
                                l.level,
                                format!("{:#x}", l.pfn),
                                if l.write { "W" } else { "" }
                            ));
                            if l.dirty {
                                ui.colored_label(colours::DIRTY, "D");
                            }
                        });
                    },
                );
            }
        }
    }
    ui.separator();
    ui.strong("struct pages in use");
    match pages::pages(snap) {
        Err(e) => {
            ui.colored_label(colours::LOCKED, e);
        }
        Ok(rows) => {
            let header = [
                "pfn", "ref", "map", "pin", "mapping", "index", "share", "flags",
            ];
            egui::Grid::new("pages").striped(true).show(ui, |ui| {
                for h in header {
                    ui.strong(h);
                }
                ui.end_row();
            });
            virtual_rows(
                ui,
                egui::ScrollArea::vertical()
                    .id_salt("pages rows")
                    .max_height(300.0),
                egui::TextStyle::Body,
                &rows,
                |ui, r| {
                    ui.horizontal(|ui| {
                        ui.monospace(format!(
                            "{:#x} ref {} map {} pin {} mapping {} index {:#x} share {}",
                            r.pfn, r.refcount, r.mapcount, r.pincount, r.mapping, r.index, r.share
                        ));
                        if r.locked {
                            ui.colored_label(colours::LOCKED, "LOCKED");
                        }
                        if r.poison {
                            ui.colored_label(colours::POISONED, "HWPOISON");
                        }
                    });
                },
            );
        }
    }
}

fn persistence_view(ui: &mut Ui, snap: &Snapshot) {
    let v = persistence::build(snap);
    let Some(pending) = &v.pending else {
        ui.label("this run has no machine");
        return;
    };
    ui.label(format!(
        "CPU clocks (ns): {}",
        v.cpu_clocks
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if v.poisoned.is_empty() {
        ui.label("no poisoned lines");
    }
    for (a, l) in &v.poisoned {
        ui.colored_label(colours::POISONED, format!("poisoned {a:#x} +{l:#x}"));
    }
    ui.strong(format!(
        "{} lines with stores not yet durable (everything else is durable)",
        pending.len()
    ));
    virtual_rows(
        ui,
        egui::ScrollArea::vertical().id_salt("pending rows"),
        egui::TextStyle::Body,
        pending,
        |ui, l| {
            ui.colored_label(
                colours::DIRTY,
                format!(
                    "line {:#x}: {}, {} bytes not durable",
                    l.addr, l.where_, l.bytes_not_durable
                ),
            );
        },
    );
}

/// The event table, virtualised: only the visible rows are built.
fn events_table(ui: &mut Ui, log: &EventLog) {
    let row_h = ui.text_style_height(&egui::TextStyle::Monospace) + 4.0;
    ui.label(format!("{} events", log.events.len()));
    egui::ScrollArea::vertical()
        .id_salt("events")
        .auto_shrink([false, false])
        .show_rows(ui, row_h, log.events.len(), |ui, range| {
            for i in range {
                if let Some(r) = timeline::row(log, i) {
                    ui.monospace(format!(
                        "{:>6} {:>10}ns {:<8} {:<40} line {}",
                        r.step, r.time_ns, r.task, r.what, r.line
                    ));
                }
            }
        });
}

/// One lane per task, over simulated time (`by_time`; CPUs have their own clocks) or over the
/// steps; a mark per event, at most one per pixel column and lane. The marks are computed in
/// one pass over the events when the log, the width or the axis changes (`cache`), so a frame
/// with a 100k-event run only paints them.
fn lanes(
    ui: &mut Ui,
    log: &EventLog,
    key: Option<(usize, usize)>,
    by_time: bool,
    cache: &mut Option<(LanesKey, Vec<Vec<f32>>)>,
) {
    let n = log.tasks.len().max(1);
    let lane_h = 16.0;
    let width = ui.available_width().max(200.0);
    let (rect, _) =
        ui.allocate_exact_size(egui::vec2(width, lane_h * n as f32), egui::Sense::hover());
    let painter = ui.painter_at(rect);
    let label_w = 90.0;
    let span = width - label_w;
    let want: LanesKey = (key, span.to_bits(), by_time);
    if !matches!(cache, Some((k, _)) if *k == want) {
        *cache = Some((want, lane_marks(log, by_time, span)));
    }
    let Some((_, marks)) = cache else { return };
    for (i, name) in log.tasks.iter().enumerate() {
        painter.text(
            egui::pos2(rect.left(), rect.top() + i as f32 * lane_h + lane_h / 2.0),
            egui::Align2::LEFT_CENTER,
            name,
            egui::FontId::proportional(12.0),
            ui.visuals().text_color(),
        );
    }
    for (lane, xs) in marks.iter().enumerate() {
        let y = rect.top() + lane as f32 * lane_h;
        for &x in xs {
            let x = rect.left() + label_w + x;
            painter.line_segment(
                [egui::pos2(x, y + 2.0), egui::pos2(x, y + lane_h - 2.0)],
                egui::Stroke::new(1.0, colours::MAPPED),
            );
        }
    }
}

/// Per lane, the x offsets (0..=span) of the marks: at most one per pixel column.
fn lane_marks(log: &EventLog, by_time: bool, span: f32) -> Vec<Vec<f32>> {
    let n = log.tasks.len().max(1);
    let x_of = |e: &sim_core::events::LogEvent| if by_time { e.time } else { e.step as u64 };
    let t_max = log.events.iter().map(x_of).max().unwrap_or(0).max(1) as f32;
    let mut marks = vec![Vec::new(); n];
    let mut last_x = vec![f32::NEG_INFINITY; n];
    for e in &log.events {
        let lane = (e.task.0 as usize).min(n - 1);
        let x = x_of(e) as f32 / t_max * span;
        if x - last_x[lane] < 1.0 {
            continue;
        }
        last_x[lane] = x;
        marks[lane].push(x);
    }
    marks
}

/// A virtualised list in `area`: only the rows in view are laid out, one line of `style` each,
/// so that a view of a 100k-event run keeps its frame rate.
fn virtual_rows<T>(
    ui: &mut Ui,
    area: egui::ScrollArea,
    style: egui::TextStyle,
    items: &[T],
    mut row: impl FnMut(&mut Ui, &T),
) {
    let row_h = ui.text_style_height(&style) + 4.0;
    area.show_rows(ui, row_h, items.len(), |ui, range| {
        for item in &items[range] {
            row(ui, item);
        }
    });
}
