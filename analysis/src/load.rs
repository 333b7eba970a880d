//! Reading a saved record: read once as it streams, every token bounded
//! ([`crate::capped_text`]), parsed and validated through
//! [`crate::validate`], the one boundary of untrusted records.

use crate::record::{FORMAT, FORMAT_VERSION};
use crate::samples::SamplesError;
use crate::validate::ValidateError;
use thiserror::Error;

/// Why a saved record cannot be read.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not JSON, truncated, or fields missing.
    #[error("not a tickburst run record: {0}")]
    NotARecord(String),
    /// Larger than any record (see [`crate::validate::MAX_RECORD_BYTES`]).
    #[error("not a tickburst run record: the file is {size} bytes, more than the {max} bytes ({} MiB) read at most", max >> 20)]
    TooLarge {
        /// Size of the file.
        size: u64,
        /// [`crate::validate::MAX_RECORD_BYTES`].
        max: u64,
    },
    /// JSON of the right shape whose values the analysis cannot take
    /// (out of range, too many entries, out of order: see [`crate::validate`]).
    #[error("not a valid tickburst record: {0}")]
    Invalid(#[from] ValidateError),
    /// A record of another format or version.
    #[error("record format {format} version {version} is not readable by this tickburst (reads {FORMAT} version {FORMAT_VERSION})")]
    OtherVersion {
        /// `format` of the file.
        format: String,
        /// `format_version` of the file.
        version: u64,
    },
    /// The samples are inconsistent.
    #[error("record samples: {0}")]
    Samples(#[from] SamplesError),
}

/// What reading a record said besides the record: strings cut to their
/// bound ([`crate::capped_text`]), in one line.
pub type LoadNote = Option<String>;
