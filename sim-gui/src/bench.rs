//! `pmsim-gui --bench-frames N TRACE ...`: the frame time of the window without a window. Each
//! view is opened in turn and N frames of the whole UI (controls, runnable threads, timeline,
//! the view) are laid out and tessellated on a 1400x900 screen with egui's `Context::run_ui`;
//! only the GPU upload and drawing are left out. Wall-clock time is measured here and only
//! here: it never enters a simulation.

use crate::app::{GuiApp, Tab};
use std::time::{Duration, Instant};

/// The median and the slowest frame of one view.
#[derive(Clone, Copy, Debug)]
pub struct ViewTiming {
    pub tab: Tab,
    pub median: Duration,
    pub max: Duration,
}

/// Draw `frames` frames of every view (after one warm-up frame each, which builds the fonts
/// and the per-step caches) and time them.
pub fn bench_frames(app: &mut GuiApp, frames: usize) -> Vec<ViewTiming> {
    let ctx = egui::Context::default();
    let input = || egui::RawInput {
        screen_rect: Some(egui::Rect::from_min_size(
            egui::Pos2::ZERO,
            egui::vec2(1400.0, 900.0),
        )),
        ..Default::default()
    };
    let frame = |app: &mut GuiApp| {
        let mut out = ctx.run_ui(input(), |ui| app.show(ui));
        let shapes = std::mem::take(&mut out.shapes);
        let prims = ctx.tessellate(shapes, out.pixels_per_point);
        std::hint::black_box(prims.len());
        // No GPU takes the font atlas: drop its updates.
        out.textures_delta.clear();
    };
    let mut out = Vec::new();
    for tab in Tab::ALL {
        app.tab = tab;
        frame(app);
        frame(app);
        let mut times: Vec<Duration> = (0..frames.max(1))
            .map(|_| {
                let t = Instant::now();
                frame(app);
                t.elapsed()
            })
            .collect();
        times.sort();
        out.push(ViewTiming {
            tab,
            median: times[times.len() / 2],
            max: *times.last().expect("at least one frame"),
        });
    }
    out
}

/// The report `--bench-frames` prints.
pub fn report(app: &GuiApp, timings: &[ViewTiming], frames: usize) -> String {
    let events = app
        .stepper
        .as_ref()
        .map(|s| s.event_log().events.len())
        .or(app.events.as_ref().map(|l| l.events.len()))
        .unwrap_or(0);
    let step = app
        .stepper
        .as_ref()
        .map(|s| format!(", at step {} of {}", s.cursor(), s.path_len()))
        .unwrap_or_default();
    let mut s = format!(
        "pmsim-gui --bench-frames {frames}: {events} events loaded{step}; 1400x900, layout + \
         tessellation (no GPU)\n"
    );
    let mut all: Vec<Duration> = Vec::new();
    for t in timings {
        s.push_str(&format!(
            "  {:<15} median {:>8.3} ms  max {:>8.3} ms\n",
            t.tab.cli_name(),
            t.median.as_secs_f64() * 1e3,
            t.max.as_secs_f64() * 1e3
        ));
        all.push(t.median);
    }
    all.sort();
    if let Some(worst) = all.last() {
        s.push_str(&format!(
            "  slowest view's median {:.3} ms ({:.0} frames/s)\n",
            worst.as_secs_f64() * 1e3,
            1.0 / worst.as_secs_f64().max(1e-9)
        ));
    }
    s
}

/// A long trace for the frame benchmark: two threads, each on its own file, repeating a 64-byte
/// store, its clwb and an sfence `rounds` times over 1024 pages (about 31 steps per round and
/// thread while the pages fault in, 7 after: 5200 rounds give a run of over 100k events).
pub fn long_trace(rounds: usize) -> String {
    let mut s = String::from(
        "pmsim-trace 1\nmachine cpus=2 pmem=64MiB\nfile /a size=4MiB prealloc\n\
         file /b size=4MiB prealloc\nt1 mmap /a 0 4MiB shared nohuge as a\n\
         t2 mmap /b 0 4MiB shared nohuge as b\n",
    );
    for i in 0..rounds {
        let off = (i * 4096) % (4 << 20);
        for (t, m) in [("t1", "a"), ("t2", "b")] {
            s.push_str(&format!(
                "{t} store {m}+{off:#x} 64 {:#04x}\n{t} clwb {m}+{off:#x}\n{t} sfence\n",
                i % 250 + 1
            ));
        }
    }
    s
}
