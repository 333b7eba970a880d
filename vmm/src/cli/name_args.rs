//! Command-line parsers for the name types of the analysis crate: the
//! values, their help lines and their parsing all come from there.

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use std::str::FromStr;
use tickburst_analysis::names::{Named, UnknownName};

/// A parser accepting exactly the names of `values` (listed with their help
/// lines in `--help`).
pub fn parser<T>(values: &'static [T]) -> impl TypedValueParser<Value = T>
where
    T: Named + FromStr<Err = UnknownName>,
{
    PossibleValuesParser::new(
        values
            .iter()
            .map(|v| PossibleValue::new(v.name()).help(v.help())),
    )
    .try_map(|s: String| s.parse::<T>())
}
