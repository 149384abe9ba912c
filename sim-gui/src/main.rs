//! `pmsim-gui`: parse the arguments and load the inputs (both work without a display), then
//! open the window.

use clap::Parser;
use sim_gui::cli::{Args, load};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = Args::parse();
    let app = match load(&args) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("pmsim-gui: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(n) = args.bench_frames {
        let mut app = app;
        let t = sim_gui::bench::bench_frames(&mut app, n);
        print!("{}", sim_gui::bench::report(&app, &t, n));
        return ExitCode::SUCCESS;
    }
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_inner_size([1400.0, 900.0])
            .with_title("pmsim-gui"),
        ..Default::default()
    };
    match eframe::run_native("pmsim-gui", options, Box::new(|_cc| Ok(Box::new(app)))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pmsim-gui: cannot open a window: {e}");
            ExitCode::from(2)
        }
    }
}
