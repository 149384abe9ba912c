//! `cargo bench -p sim-gui`: the frame time of the GUI with a run of more than 100k events
//! loaded. The long trace of [`long_trace`] is run to its end through the stepper, then every
//! view is drawn headless ([`bench_frames`]: layout and tessellation of the whole window, no
//! GPU) and the median frame time per view is printed. The target is 60 frames/s (16.7 ms).

use sim_gui::app::GuiApp;
use sim_gui::bench::{bench_frames, long_trace, report};
use sim_gui::session::{StepKind, Stepper};
use std::time::Instant;

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is ignored (there is one benchmark).
    let rounds: usize = std::env::var("PMSIM_GUI_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5200);
    let frames: usize = std::env::var("PMSIM_GUI_BENCH_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let dir = std::env::temp_dir().join(format!("pmsim-gui-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let path = dir.join("long.trace");
    std::fs::write(&path, long_trace(rounds)).expect("write the long trace");
    let t = Instant::now();
    let mut st = Stepper::open(&path.to_string_lossy(), 0).expect("the long trace loads");
    st.run_to(StepKind::End, usize::MAX);
    let loaded = t.elapsed();
    let mut app = GuiApp::default();
    app.set_stepper(st);
    let timings = bench_frames(&mut app, frames);
    print!("{}", report(&app, &timings, frames));
    println!(
        "  (the run of {rounds} rounds was stepped to its end in {:.1} s)",
        loaded.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
