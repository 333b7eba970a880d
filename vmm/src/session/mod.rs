//! Sessions: one run, watch or sweep in one VM, the `check` matrix of runs,
//! and `doctor`.

pub mod check;
pub mod collector;
pub mod doctor;
pub mod run;
