//! What a record of format version 3 keeps instead of every tick, and the
//! analysis of it (the same figures as from every tick, see below).
//!
//! - `window_ticks`: the guest's ticks per report window, counted as they
//!   came (the windows' other columns come from the pauses and host marks);
//! - `steady`: the steady state's running statistics (first and last tick,
//!   count, longest interval) and a bounded [`Histogram`] of its intervals
//!   (p50/p99 within 0.05%);
//! - `kept_spans`: spans in which every tick is kept (`samples.tick_deltas_ns`
//!   holds those only): from 100 ms before each pause or detected gap to
//!   where its catch-up was found (at least 1 s after its resume, at most
//!   10 s), so every pause figure recomputes exactly; the catch-up search
//!   stops where the kept span ends (`null` if not found within 10 s).

use crate::figures::{self, Analysis, PauseSpan, PauseStats, Samples, Steady};
use crate::histogram::Histogram;
use serde::{Deserialize, Serialize};

const SECOND: f64 = 1e9;

/// Running statistics of the steady span (first tick to first pause).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SteadyAcc {
    /// First tick, ns since ready.
    pub first_ns: Option<u64>,
    /// Last tick of the span.
    pub last_ns: Option<u64>,
    /// Ticks in the span.
    pub ticks: u64,
    /// Longest interval between two ticks of the span.
    pub max_interval_ns: Option<u64>,
    /// The intervals, `[[bucket_lower_ns, count], ...]`.
    pub intervals: Histogram,
}

impl SteadyAcc {
    /// Adds the next tick of the span (`t` not before the last one).
    pub fn add(&mut self, t: u64) {
        if let Some(last) = self.last_ns {
            let gap = t.saturating_sub(last);
            self.intervals.add(gap);
            self.max_interval_ns = Some(self.max_interval_ns.map_or(gap, |m| m.max(gap)));
        } else {
            self.first_ns = Some(t);
        }
        self.last_ns = Some(t);
        self.ticks = self.ticks.saturating_add(1);
    }

    /// The steady figures at `period_ns`.
    pub fn steady(&self, period_ns: u64) -> Steady {
        let rate_hz = match (self.first_ns, self.last_ns) {
            (Some(first), Some(last)) if self.ticks >= 2 && last > first => {
                Some((self.ticks - 1) as f64 * SECOND / (last - first) as f64)
            }
            _ => None,
        };
        let us = |v: Option<u64>| v.map(|ns| ns as f64 / 1_000.0);
        Steady {
            nominal_hz: SECOND / period_ns.max(1) as f64,
            rate_hz,
            ticks: self.ticks,
            interval_p50_us: us(self.intervals.percentile(50.0)),
            interval_p99_us: us(self.intervals.percentile(99.0)),
            interval_max_us: us(self.max_interval_ns),
        }
    }
}

/// The bounded summary of one vCPU's ticks (record version 3).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BoundedTicks {
    /// Every tick taken in the run (kept or not).
    pub ticks_total: u64,
    /// The first tick, ns since ready.
    pub first_tick_ns: Option<u64>,
    /// Ticks per report window.
    #[serde(deserialize_with = "crate::limits::window_ticks")]
    pub window_ticks: Vec<u64>,
    /// The steady state's running statistics.
    pub steady: SteadyAcc,
    /// Spans in which every tick is kept, sorted, not overlapping.
    #[serde(deserialize_with = "crate::limits::pauses")]
    pub kept_spans: Vec<PauseSpan>,
    /// Ticks inside kept spans that were not kept (the budget was spent).
    pub kept_dropped: u64,
    /// Gaps found after the most detected (`stream::MAX_GAPS`, as many as
    /// a record has pauses: [`crate::limits::MAX_PAUSES`]): counted here, not
    /// detected as pauses (absent from records written before it: 0).
    #[serde(default)]
    pub gaps_dropped: u64,
}

impl BoundedTicks {
    /// One line when ticks inside kept spans were dropped because the
    /// kept-tick budget was spent (ticks are never lost silently).
    /// With gaps beyond the most detected, says how many more there were.
    pub fn budget_note(&self) -> Option<String> {
        let ticks = (self.kept_dropped > 0).then(|| {
            format!(
                "{} ticks around pauses and gaps not kept (the kept-tick budget was spent, \
                 or its half that gaps under 100 ms may take); \
                 the figures of the pauses they belong to are lower bounds",
                self.kept_dropped
            )
        });
        let gaps = (self.gaps_dropped > 0).then(|| {
            format!(
                "{} more gaps were counted, not detected as pauses (at most {} are, half of them under 100 ms)",
                self.gaps_dropped,
                crate::limits::MAX_PAUSES
            )
        });
        match (ticks, gaps) {
            (Some(t), Some(g)) => Some(format!("{t}; {g}")),
            (t, g) => t.or(g),
        }
    }

    /// Where the kept span holding `t` ends (`t` itself when none does).
    pub fn kept_until(&self, t: u64) -> u64 {
        let i = self.kept_spans.partition_point(|s| s.end_ns < t);
        self.kept_spans
            .get(i)
            .filter(|s| s.start_ns <= t)
            .map_or(t, |s| s.end_ns)
    }

    /// Figures for each of `spans` from the kept ticks in `s.ticks_ns`.
    pub fn pauses_over(&self, s: &Samples, spans: &[PauseSpan]) -> Vec<PauseStats> {
        figures::with_limits(spans, s.end_ns)
            .map(|(p, limit)| figures::pause_stats_within(s, p, limit, self.kept_until(p.end_ns)))
            .collect()
    }

    /// The whole analysis; `s.ticks_ns` are the kept ticks.
    pub fn analyze(&self, s: &Samples) -> Analysis {
        let interval = s.interval_ns.max(1);
        Analysis {
            windows: (0..s.end_ns.div_ceil(interval))
                .map(|k| {
                    let n = self.window_ticks.get(k as usize).copied().unwrap_or(0);
                    figures::window_counted(s, k.saturating_mul(interval), Some(n))
                })
                .collect(),
            steady: self.steady.steady(s.period_ns),
            pauses: self.pauses_over(s, s.pauses),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Scope;

    #[test]
    fn a_spent_budget_is_said() {
        let mut b = BoundedTicks::default();
        assert_eq!(b.budget_note(), None);
        b.kept_dropped = 5;
        let note = b.budget_note().unwrap();
        assert!(
            note.starts_with("5 ticks") && note.contains("lower bounds"),
            "{note}"
        );
        b.gaps_dropped = 2;
        let note = b.budget_note().unwrap();
        assert!(note.contains("; 2 more gaps were counted"), "{note}");
        b.kept_dropped = 0;
        assert!(b.budget_note().unwrap().starts_with("2 more gaps"));
    }

    #[test]
    fn steady_matches_the_exact_one() {
        let ticks: Vec<u64> = (0..5000u64)
            .map(|i| i * 1_000_000 + (i * 37) % 900)
            .collect();
        let s = Samples {
            period_ns: 1_000_000,
            interval_ns: 1_000_000_000,
            end_ns: 5_000_000_000,
            ticks_ns: &ticks,
            pauses: &[],
            host: &[],
            host_scope: Scope::Vcpu,
            host_events: None,
        };
        let exact = figures::steady(&s);
        let mut acc = SteadyAcc::default();
        ticks.iter().for_each(|&t| acc.add(t));
        let got = acc.steady(1_000_000);
        assert_eq!(got.rate_hz, exact.rate_hz);
        assert_eq!(got.ticks, exact.ticks);
        assert_eq!(got.interval_max_us, exact.interval_max_us);
        let close = |a: Option<f64>, b: Option<f64>| (a.unwrap() - b.unwrap()).abs() < 1.0;
        assert!(close(got.interval_p50_us, exact.interval_p50_us));
        assert!(close(got.interval_p99_us, exact.interval_p99_us));
        assert_eq!(SteadyAcc::default().steady(1).rate_hz, None);
    }

    #[test]
    fn kept_until_finds_the_span() {
        let b = BoundedTicks {
            kept_spans: vec![
                PauseSpan {
                    start_ns: 10,
                    end_ns: 20,
                },
                PauseSpan {
                    start_ns: 30,
                    end_ns: 40,
                },
            ],
            ..BoundedTicks::default()
        };
        assert_eq!(b.kept_until(15), 20);
        assert_eq!(b.kept_until(30), 40);
        assert_eq!(b.kept_until(25), 25);
        assert_eq!(b.kept_until(50), 50);
    }
}
