//! Reading a saved record: parsed and validated through [`crate::validate`],
//! the one boundary of untrusted records.

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

impl Record {
    /// Parses and validates a record (the one boundary of untrusted records:
    /// [`crate::validate`]), checking format and version before the fields.
    pub fn from_json(text: &str) -> Result<Record, LoadError> {
        Record::checked(serde_json::from_str(text), || serde_json::from_str(text))
    }

    /// The format and version in `header`, then the whole record `full()`
    /// (read only if they are ones this tickburst reads), then validation.
    fn checked(
        header: serde_json::Result<Header>,
        full: impl FnOnce() -> serde_json::Result<Record>,
    ) -> Result<Record, LoadError> {
        let not_a_record =
            |e: serde_json::Error| LoadError::NotARecord(one_line(&e.to_string(), 300));
        let header = header.map_err(not_a_record)?;
        let format = header.format.0.unwrap_or_default();
        let version = header.format_version.0.unwrap_or(0);
        if format != FORMAT
            || !(u64::from(OLDEST_READABLE_VERSION)..=u64::from(FORMAT_VERSION)).contains(&version)
        {
            return Err(LoadError::OtherVersion {
                format: if format.is_empty() {
                    "(none)".into()
                } else {
                    // Named in one short line, however long it is.
                    one_line(&format, 64)
                },
                version,
            });
        }
        let mut record: Record = full().map_err(|e| {
            let text = e.to_string();
            match text.find(crate::validate::CAPPED_MARK) {
                Some(i) => LoadError::Invalid(ValidateError::Capped(
                    text[i + crate::validate::CAPPED_MARK.len()..].to_string(),
                )),
                None => not_a_record(e),
            }
        })?;
        crate::validate::record(&mut record)?;
        Ok(record)
    }

    /// Reads, parses and validates a record file of at most
    /// [`crate::validate::MAX_RECORD_BYTES`] (checked before reading). The
    /// file is parsed as it is read, twice (the header, then all of it):
    /// its text is never whole in memory, only the capped lists.
    pub fn load(path: &Path) -> Result<Record, LoadError> {
        use std::io::Read;
        let max = crate::validate::MAX_RECORD_BYTES;
        let size = std::fs::File::open(path)?.metadata()?.len();
        if size > max {
            return Err(LoadError::TooLarge { size, max });
        }
        // The size may change while reading (a pipe, a growing file): never
        // more than the limit is read (a longer text ends cut, not JSON).
        let open = || -> std::io::Result<_> {
            Ok(std::io::BufReader::new(
                std::fs::File::open(path)?.take(max),
            ))
        };
        let header = serde_json::from_reader(open()?);
        Record::checked(header, || {
            serde_json::from_reader(open().map_err(serde_json::Error::io)?)
        })
    }
}

/// `format` and `format_version` of a file, read before anything else.
#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    format: Lenient<String>,
    #[serde(default)]
    format_version: Lenient<u64>,
}

/// A value kept only when it has the expected type (a string, an unsigned
/// number); anything else is skipped without being stored.
#[derive(Default)]
struct Lenient<T>(Option<T>);

impl<'de> Deserialize<'de> for Lenient<String> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LenientVisitor).map(|v| Lenient(v.0))
    }
}

impl<'de> Deserialize<'de> for Lenient<u64> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LenientVisitor).map(|v| Lenient(v.1))
    }
}

/// Keeps a string or an unsigned number, skips anything else.
struct LenientVisitor;

impl<'de> serde::de::Visitor<'de> for LenientVisitor {
    type Value = (Option<String>, Option<u64>);
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok((Some(v.to_string()), None))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok((None, Some(v)))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok((None, None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok((None, None))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok((None, None))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok((None, None))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok((None, None))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        while a
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok((None, None))
    }
}
