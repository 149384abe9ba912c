//! `pmsim-gui`, the race stepper: choose which thread moves next at every scheduling point and
//! watch DAX entries, lock bits, wait queues, rwsems, page tables and cache lines change.
//!
//! Not built yet: the GUI arrives with its own issue. The crate holds its place in the layout so
//! that the dependency direction (sim-fs <- GUI) is fixed from the start. No binary is shipped.
