//! What the GUI tests share: the shipped PMD missed-wakeup trace and its bug schedule, derived
//! from `pmsim explore`'s defaults rather than written down (it changes whenever the steps of a
//! fault change; README.md keeps a literal, checked by `stepper.rs`).

#![allow(dead_code)]

use std::sync::OnceLock;

pub const TRACE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../traces/format/pmd_missed_wakeup.trace"
);

/// The schedule of the first failure `pmsim explore TRACE` finds (random strategy, seed 0).
/// Computed once per test binary; it runs simulations on the calling thread, so call it before
/// opening a stepper on that thread.
pub fn bug_schedule() -> String {
    static BUG: OnceLock<String> = OnceLock::new();
    BUG.get_or_init(|| {
        sim_gui::session::explore_failure(TRACE, &[])
            .expect("the trace loads")
            .expect("pmsim explore finds the missed wake-up")
    })
    .clone()
}

/// The seed inside a schedule string (`2:SEED:...`).
pub fn seed_of(schedule: &str) -> u64 {
    let hex = schedule.split(':').nth(1).expect("a schedule string");
    u64::from_str_radix(hex, 16).expect("a hexadecimal seed")
}
