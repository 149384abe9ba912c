//! sim-core: the deterministic engine of pmsim, the Platform seam, the machine model and the
//! trace format. Nothing in this crate knows about files or DAX entries.
pub mod machine;
