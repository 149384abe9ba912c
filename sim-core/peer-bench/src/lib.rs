//! Benchmarks only: `cargo bench -p pmsim-peer-bench --bench engine` runs pmsim's strategies
//! on the toy models of `sim_core::toys` beside shuttle and loom running the same models in the
//! same process. The library is empty; it exists so that the package has a target to test.
