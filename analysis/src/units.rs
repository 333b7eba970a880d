//! Parsing of durations given on the command line (`1ms`, `200us`, `1.5s`).

use thiserror::Error;

/// Errors parsing a duration.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DurationError {
    /// Empty text.
    #[error("empty duration")]
    Empty,
    /// No unit, or an unknown unit.
    #[error("'{0}' needs a unit: ns, us, ms, s, m, h or d (e.g. 200us, 1ms, 2s, 51d)")]
    Unit(String),
    /// Not a number, negative, or too large.
    #[error("'{0}' is not a non-negative duration")]
    Number(String),
}

/// Parses `<number><unit>` into nanoseconds. Units: `ns`, `us` (or `µs`),
/// `ms`, `s`, `m`. The number may have a fractional part.
///
/// ```
/// use tickburst_analysis::units::parse_duration_ns;
/// assert_eq!(parse_duration_ns("200us"), Ok(200_000));
/// assert_eq!(parse_duration_ns("1.5s"), Ok(1_500_000_000));
/// assert!(parse_duration_ns("-1s").is_err());
/// ```
pub fn parse_duration_ns(text: &str) -> Result<u64, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale: f64 = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        "d" => 86400e9,
        _ if unit.starts_with('-') || number.is_empty() => {
            return Err(DurationError::Number(echoed(text)))
        }
        _ => return Err(DurationError::Unit(echoed(text))),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| DurationError::Number(echoed(text)))?;
    let ns = (value * scale).round();
    if !ns.is_finite() || !(0.0..=1e18).contains(&ns) {
        return Err(DurationError::Number(echoed(text)));
    }
    Ok(ns as u64)
}

/// Formats nanoseconds the way they are parsed (`1ms`, `200us`, `1.5s`).
pub fn format_duration_ns(ns: u64) -> String {
    if ns == 0 {
        "0s".into()
    } else if ns.is_multiple_of(1_000_000_000) {
        format!("{}s", ns / 1_000_000_000)
    } else if ns >= 1_000_000_000 {
        format!("{}s", ns as f64 / 1e9)
    } else if ns.is_multiple_of(1_000_000) {
        format!("{}ms", ns / 1_000_000)
    } else if ns.is_multiple_of(1_000) {
        format!("{}us", ns / 1_000)
    } else {
        format!("{ns}ns")
    }
}

/// A bad duration as an error shows it: one short line, however long the
/// text given (a 100 kB argument is not echoed whole).
fn echoed(text: &str) -> String {
    crate::limits::one_line(text, 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_duration_ns("1ms"), Ok(1_000_000));
        assert_eq!(parse_duration_ns("200us"), Ok(200_000));
        assert_eq!(parse_duration_ns("200µs"), Ok(200_000));
        assert_eq!(parse_duration_ns("2s"), Ok(2_000_000_000));
        assert_eq!(parse_duration_ns("0.5s"), Ok(500_000_000));
        assert_eq!(parse_duration_ns("1m"), Ok(60_000_000_000));
        assert_eq!(parse_duration_ns("10ns"), Ok(10));
        assert_eq!(parse_duration_ns(" 3ms "), Ok(3_000_000));
    }

    #[test]
    fn rejects_bad_text() {
        assert_eq!(parse_duration_ns(""), Err(DurationError::Empty));
        assert!(matches!(
            parse_duration_ns("5"),
            Err(DurationError::Unit(_))
        ));
        assert!(matches!(
            parse_duration_ns("5y"),
            Err(DurationError::Unit(_))
        ));
        assert!(matches!(
            parse_duration_ns("-1s"),
            Err(DurationError::Number(_))
        ));
        assert!(matches!(
            parse_duration_ns("ms"),
            Err(DurationError::Number(_))
        ));
        assert!(matches!(
            parse_duration_ns("1.2.3s"),
            Err(DurationError::Number(_))
        ));
        assert!(matches!(
            parse_duration_ns("99999999999999m"),
            Err(DurationError::Number(_))
        ));
    }

    #[test]
    fn formats_round_trip() {
        for ns in [1_000_000, 200_000, 2_000_000_000, 1_500_000_000, 7] {
            assert_eq!(parse_duration_ns(&format_duration_ns(ns)), Ok(ns));
        }
    }
}
