//! Crash points. `pmsim crashcheck` (crash points, images and the oracle's verdict per image)
//! is not part of this build's inputs: the GUI cannot load a crashcheck run yet and says so
//! instead of showing anything made up.

/// What the crash-points view shows.
pub fn status() -> &'static str {
    "no crashcheck run loaded: this build of pmsim-gui cannot load crashcheck results yet \
     (the persistence view shows the lines a crash now would lose)"
}
