//! A bounded histogram of inter-tick intervals (ns) for p50/p99 over runs of
//! any length: log-linear buckets, exact below 2048 ns and within 1/1024
//! (0.1%) above, at most [`MAX_BUCKETS`] of them whatever the run's length.
//! Stored sparse (`[[lower_ns, count], ...]`, only non-empty buckets).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bits of a value kept exact (values below `2^SUB_BITS`); above, 1024
/// buckets per octave.
const SUB_BITS: u32 = 11;
const EXACT: u64 = 1 << SUB_BITS;
const PER_OCTAVE: u64 = 1 << (SUB_BITS - 1);
/// Buckets a histogram can ever have (every octave of a u64).
pub const MAX_BUCKETS: usize = (EXACT + (64 - SUB_BITS as u64) * PER_OCTAVE) as usize;

/// Counts of inter-tick intervals per bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Vec<(u64, u64)>", try_from = "Vec<(u64, u64)>")]
pub struct Histogram {
    buckets: BTreeMap<u32, u64>,
    total: u64,
}

/// The bucket of `v`.
fn bucket(v: u64) -> u32 {
    if v < EXACT {
        return v as u32;
    }
    let shift = u64::from(64 - v.leading_zeros() - SUB_BITS);
    let top = v >> shift; // PER_OCTAVE..2 * PER_OCTAVE
    (EXACT + (shift - 1) * PER_OCTAVE + (top - PER_OCTAVE)) as u32
}

/// The octave shift of bucket `b` (0: exact).
fn shift(b: u32) -> u64 {
    let b = u64::from(b);
    if b < EXACT {
        0
    } else {
        (b - EXACT) / PER_OCTAVE + 1
    }
}

/// The smallest value in bucket `b`.
fn lower(b: u32) -> u64 {
    let s = shift(b);
    if s == 0 {
        return u64::from(b);
    }
    let top = (u64::from(b) - EXACT) % PER_OCTAVE + PER_OCTAVE;
    top << s
}

/// The width of bucket `b`.
fn width(b: u32) -> u64 {
    1 << shift(b)
}

impl Histogram {
    /// Counts one interval.
    pub fn add(&mut self, v: u64) {
        *self.buckets.entry(bucket(v)).or_insert(0) += 1;
        self.total = self.total.saturating_add(1);
    }

    /// Intervals counted.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Non-empty buckets.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Nearest-rank percentile `p` (0..100): the middle of the bucket that
    /// holds it (exact below 2048 ns, within 0.05% above).
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((p / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (&b, &n) in &self.buckets {
            seen = seen.saturating_add(n);
            if seen >= rank {
                return Some(lower(b).saturating_add(width(b) / 2));
            }
        }
        self.buckets.keys().next_back().map(|&b| lower(b))
    }
}

impl From<Histogram> for Vec<(u64, u64)> {
    fn from(h: Histogram) -> Self {
        h.buckets.iter().map(|(&b, &n)| (lower(b), n)).collect()
    }
}

impl TryFrom<Vec<(u64, u64)>> for Histogram {
    type Error = String;

    /// Rebuilds a histogram from its sparse form: lower bounds of buckets,
    /// strictly increasing, counts above 0.
    fn try_from(pairs: Vec<(u64, u64)>) -> Result<Self, String> {
        if pairs.len() > MAX_BUCKETS {
            return Err(format!("more than {MAX_BUCKETS} buckets"));
        }
        let mut h = Histogram::default();
        let mut prev = None;
        for (i, &(low, n)) in pairs.iter().enumerate() {
            let b = bucket(low);
            if lower(b) != low {
                return Err(format!("entry {i}: {low} is not a bucket's lower bound"));
            }
            if prev.is_some_and(|p| p >= b) || n == 0 {
                return Err(format!("entry {i}: not increasing or count 0"));
            }
            prev = Some(b);
            h.buckets.insert(b, n);
            h.total = h
                .total
                .checked_add(n)
                .ok_or_else(|| "counts overflow".to_string())?;
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_exact_low_and_fine_high() {
        for v in [0, 1, 2047, 2048, 2049, 999_937, 1_000_000, u64::MAX] {
            let b = bucket(v);
            assert!(lower(b) <= v, "{v}");
            assert!(v - lower(b) < width(b), "{v}");
            assert!((b as usize) < MAX_BUCKETS);
        }
        assert_eq!(lower(bucket(2047)), 2047);
        assert_eq!(width(bucket(1_000_000)), 512);
        assert!(bucket(1_000_000) < bucket(1_001_100));
    }

    #[test]
    fn percentiles_follow_the_exact_ones() {
        let mut h = Histogram::default();
        let mut exact = Vec::new();
        for i in 0..10_000u64 {
            let v = 990_000 + (i * 7919) % 20_000 + if i % 100 == 0 { 300_000 } else { 0 };
            h.add(v);
            exact.push(v);
        }
        exact.sort_unstable();
        for p in [50.0, 99.0] {
            let want = crate::figures::percentile(&exact, p).unwrap() as f64;
            let got = h.percentile(p).unwrap() as f64;
            assert!((got - want).abs() / want < 0.001, "p{p}: {got} vs {want}");
        }
        assert_eq!(h.total(), 10_000);
        assert!(h.len() < 100);
        assert_eq!(Histogram::default().percentile(50.0), None);
    }

    #[test]
    fn sparse_form_round_trips_and_rejects_nonsense() {
        let mut h = Histogram::default();
        for v in [5, 5, 2_000, 1_000_000, 1_000_500] {
            h.add(v);
        }
        let json = serde_json::to_string(&h).unwrap();
        let back: Histogram = serde_json::from_str(&json).unwrap();
        assert_eq!(back, h);
        for bad in [
            "[[5,1],[5,1]]",
            "[[2049,1]]",
            "[[5,0]]",
            "[[1,18446744073709551615],[2,1]]",
        ] {
            assert!(serde_json::from_str::<Histogram>(bad).is_err(), "{bad}");
        }
    }
}
