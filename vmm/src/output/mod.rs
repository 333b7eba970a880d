//! What the user sees: the live table (the session's observer), the summary
//! and reports printed after a run, `doctor`'s table, and the pictures.
//!
//! A live view of another session (a `top` screen, say) belongs here: it
//! implements that session's observer trait.

pub mod doctor;
pub mod plot;
pub mod summary;
pub mod table;
pub mod watch_help;
