//! What can go wrong in a task: an external tool that failed (with its own
//! words), a file that could not be read or written, or a check that found
//! something other than what it expected.

use std::path::PathBuf;

/// A task's failure; printed as one line (plus the tool's own words).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An external tool could not start or exited non-zero.
    #[error("{tool} failed ({status}):\n{words}")]
    Tool {
        /// The command line, as run.
        tool: String,
        /// Its exit status, or why it did not start.
        status: String,
        /// What it wrote on stderr (and stdout), trimmed.
        words: String,
    },
    /// A file or folder could not be read, written or made.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error (errno kept).
        #[source]
        source: std::io::Error,
    },
    /// A check found something else than expected.
    #[error("{0}")]
    Check(String),
}

/// A task's result.
pub type Result<T> = std::result::Result<T, Error>;

/// Wraps an I/O error with what was done and where.
pub fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { what, path, source }
}
