//! [`Count`]: a host count that may be unmeasured, in 8 bytes.
//!
//! A long run keeps one host mark (six counts) and one analysed window (six
//! more) per report window; as `Option<u64>` (16 bytes each) they were
//! 104 and 144 bytes, as [`Count`] 56 and 96, a day at 1 s windows 13 MiB
//! instead of 21. In JSON a `Count` is what the `Option<u64>` was: a number
//! or `null`, so records keep their format.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The stored value that stands for "not measured".
const NONE: u64 = u64::MAX;

/// A cumulative or windowed host count, or none where it was not measured.
/// `u64::MAX` itself is not a count: [`Count::new`] saturates one below it,
/// and a record holding it is refused.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Count(u64);

impl Count {
    /// Not measured.
    pub const NONE: Count = Count(NONE);

    /// `value` (saturated below `u64::MAX`), or none.
    pub const fn new(value: Option<u64>) -> Count {
        match value {
            Some(NONE) => Count(NONE - 1),
            Some(v) => Count(v),
            None => Count(NONE),
        }
    }

    /// The count, `None` where not measured.
    pub const fn get(self) -> Option<u64> {
        if self.0 == NONE {
            None
        } else {
            Some(self.0)
        }
    }

    /// Whether it was measured.
    pub const fn is_some(self) -> bool {
        self.0 != NONE
    }
}

impl Default for Count {
    /// Not measured.
    fn default() -> Count {
        Count::NONE
    }
}

impl From<Option<u64>> for Count {
    fn from(value: Option<u64>) -> Count {
        Count::new(value)
    }
}

impl From<Count> for Option<u64> {
    fn from(c: Count) -> Option<u64> {
        c.get()
    }
}

impl PartialEq<Option<u64>> for Count {
    fn eq(&self, other: &Option<u64>) -> bool {
        self.get() == *other
    }
}

impl fmt::Debug for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

impl Serialize for Count {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Count, D::Error> {
        match Option::<u64>::deserialize(d)? {
            Some(NONE) => Err(serde::de::Error::custom(format_args!(
                "a count of {NONE} is out of range (at most {})",
                NONE - 1
            ))),
            v => Ok(Count::new(v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_an_option_in_eight_bytes() {
        assert_eq!(std::mem::size_of::<Count>(), 8);
        assert_eq!(Count::new(Some(7)).get(), Some(7));
        assert_eq!(Count::new(Some(0)).get(), Some(0));
        assert_eq!(Count::new(None).get(), None);
        assert_eq!(Count::default(), Count::NONE);
        assert_eq!(Count::new(Some(u64::MAX)).get(), Some(u64::MAX - 1));
        assert!(!Count::NONE.is_some());
        assert_eq!(Count::new(Some(4)), Some(4));
        assert_eq!(Count::NONE, None);
    }

    #[test]
    fn json_is_a_number_or_null_as_before() {
        let v = vec![Count::new(Some(3)), Count::NONE];
        assert_eq!(serde_json::to_string(&v).unwrap(), "[3,null]");
        let back: Vec<Count> = serde_json::from_str("[3,null,0]").unwrap();
        assert_eq!(
            back,
            vec![Count::new(Some(3)), Count::NONE, Count::new(Some(0))]
        );
        let max = format!("[{}]", u64::MAX);
        let e = serde_json::from_str::<Vec<Count>>(&max).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
        assert!(serde_json::from_str::<Vec<Count>>("[-1]").is_err());
    }

    #[test]
    fn debug_reads_as_the_option() {
        assert_eq!(format!("{:?}", Count::new(Some(5))), "Some(5)");
        assert_eq!(format!("{:?}", Count::NONE), "None");
    }
}
