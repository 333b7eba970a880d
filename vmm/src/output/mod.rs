//! What the user sees: the live table, the reports printed after a run, and
//! the pictures.

pub mod plot;
