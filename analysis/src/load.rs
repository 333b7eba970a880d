//! Reading a saved record: read once as it streams, every token bounded
//! ([`crate::capped_text`]), parsed and validated through
//! [`crate::validate`], the one boundary of untrusted records.

use crate::limits::one_line;
use crate::record::{Record, FORMAT, FORMAT_VERSION, OLDEST_READABLE_VERSION};
use crate::samples::SamplesError;
use crate::validate::ValidateError;
use serde::Deserialize;
use std::path::Path;
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

impl Record {
    /// Parses and validates a record (the one boundary of untrusted records:
    /// [`crate::validate`]), checking format and version.
    pub fn from_json(text: &str) -> Result<Record, LoadError> {
        Record::from_reader(text.as_bytes()).map(|(r, _)| r)
    }

    /// Parses and validates the record `text` holds, reading it once, as it
    /// streams (no more of it in memory than the parser's bounded tokens:
    /// [`crate::capped_text`]); with the note of strings cut.
    pub fn from_reader(text: impl std::io::Read) -> Result<(Record, LoadNote), LoadError> {
        use crate::capped_text::{CappedStrings, CUT_MARK, MAX_STRING_BYTES, MAX_TEXT_BYTES};
        let not_a_record =
            |e: serde_json::Error| LoadError::NotARecord(one_line(&e.to_string(), 300));
        let mut capped = CappedStrings::new(text);
        crate::format_seen::reset();
        let parsed = {
            let mut de = serde_json::Deserializer::from_reader(&mut capped);
            Record::deserialize(&mut de).and_then(|r| de.end().map(|()| r))
        };
        let (format, version) = crate::format_seen::take();
        let right = format.as_deref() == Some(FORMAT)
            && version.is_some_and(|v| {
                (u64::from(OLDEST_READABLE_VERSION)..=u64::from(FORMAT_VERSION)).contains(&v)
            });
        let other = || LoadError::OtherVersion {
            format: format.clone().unwrap_or_else(|| "(none)".into()),
            version: version.unwrap_or(0),
        };
        let mut record = match parsed {
            Ok(_) if !right => return Err(other()),
            Ok(r) => r,
            // The format named and not ours, or not named at all.
            Err(e)
                if e.is_data()
                    && ((format.is_some() || version.is_some()) && !right
                        || e.to_string().starts_with("missing field `format")) =>
            {
                return Err(other())
            }
            Err(e) => {
                let text = e.to_string();
                return Err(match text.find(crate::validate::CAPPED_MARK) {
                    Some(i) => LoadError::Invalid(ValidateError::Capped(one_line(
                        &text[i + crate::validate::CAPPED_MARK.len()..],
                        300,
                    ))),
                    None => not_a_record(e),
                });
            }
        };
        crate::validate::record(&mut record)?;
        let note = (capped.cut() > 0).then(|| {
            format!(
                "{} strings of the record were cut (each keeps at most {} KiB, all together {} MiB; cut ones end in '{CUT_MARK}')",
                capped.cut(),
                MAX_STRING_BYTES >> 10,
                MAX_TEXT_BYTES >> 20
            )
        });
        Ok((record, note))
    }

    /// Reads, parses and validates a record file of at most
    /// [`crate::validate::MAX_RECORD_BYTES`] (a regular file's size is
    /// checked before reading; a pipe is read up to that much).
    pub fn load(path: &Path) -> Result<Record, LoadError> {
        Record::load_noted(path).map(|(r, _)| r)
    }

    /// [`Record::load`], with the note of strings cut. The file is opened
    /// and read once, as it streams: a FIFO, `/dev/stdin` or `<(cat
    /// run.json)` reads as a file does.
    pub fn load_noted(path: &Path) -> Result<(Record, LoadNote), LoadError> {
        use std::io::Read;
        let max = crate::validate::MAX_RECORD_BYTES;
        let file = std::fs::File::open(path)?;
        let meta = file.metadata()?;
        if meta.is_file() && meta.len() > max {
            return Err(LoadError::TooLarge {
                size: meta.len(),
                max,
            });
        }
        // Never more than the limit is read (a longer text ends cut, not
        // JSON).
        Record::from_reader(std::io::BufReader::new(file.take(max)))
    }
}
