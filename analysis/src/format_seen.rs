//! `format` and `format_version` of a record as its parse meets them: a
//! record that fails to parse is told apart from one of another version
//! by them, in the one read of the file ([`crate::load`]).

use crate::limits::one_line;
use serde::Deserialize;

thread_local! {
    /// `format` and `format_version` as the parse met them (a record that
    /// fails to parse is told apart from one of another version by them).
    static SEEN: std::cell::RefCell<(Option<String>, Option<u64>)> =
        const { std::cell::RefCell::new((None, None)) };
}

/// Reads `format`, noting it for the version check.
pub fn format_field<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = Lenient::<String>::deserialize(d)?.0;
    SEEN.with(|s| s.borrow_mut().0 = v.as_deref().map(|f| one_line(f, 64)));
    v.ok_or_else(|| serde::de::Error::custom("format is not a string"))
}

/// Reads `format_version`, noting it for the version check.
pub fn version_field<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = Lenient::<u64>::deserialize(d)?.0;
    SEEN.with(|s| s.borrow_mut().1 = v);
    v.and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| serde::de::Error::custom("format_version is not a small number"))
}

/// Forgets what an earlier parse met (before a parse).
pub fn reset() {
    SEEN.with(|s| *s.borrow_mut() = (None, None));
}

/// `format` (in one short line) and `format_version` as the parse met
/// them, if it did.
pub fn take() -> (Option<String>, Option<u64>) {
    SEEN.with(|s| s.take())
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
