//! What the user sees: the live table (the session's observer), the summary
//! and reports printed after a run, `doctor`'s table, and the pictures.
//!
//! A live view of another session belongs here: it implements that
//! session's observer trait, as `top`'s table ([`top_table`], with
//! [`top_ndjson`] and [`top_plot`]) does. Every output file is checked
//! before the work and written by [`files`].

pub mod doctor;
pub mod files;
pub mod json_stream;
pub mod plot;
pub mod summary;
pub mod table;
pub mod top_exporter;
pub mod top_http;
pub mod top_ndjson;
pub mod top_plot;
pub mod top_prom;
pub mod top_table;
pub mod watch_help;
