//! The summary a long run gives every `--summary-every` (default 1 h): the
//! rate the guest kept over that span, its worst lateness and the pauses
//! seen so far, folded from the report windows as they complete.

use crate::figures::Window;
use serde::{Deserialize, Serialize};

/// One periodic summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeriodicSummary {
    /// Start of the span, ms since ready.
    pub from_ms: f64,
    /// Its end.
    pub to_ms: f64,
    /// Guest ticks in the span.
    pub ticks: u64,
    /// Ticks a running guest takes in its un-paused part.
    pub expected_ticks: f64,
    /// Guest ticks per second of un-paused time (`null`: the span was all
    /// paused).
    pub rate_hz: Option<f64>,
    /// The programmed rate.
    pub nominal_hz: f64,
    /// The longest interval between two ticks that is not a gap (shorter
    /// than 5 periods) minus the period, us (`null`: none seen).
    pub worst_late_us: Option<f64>,
    /// Pauses (or, `watch`, detected pauses) since the run began.
    pub pauses_seen: usize,
}

/// Windows folded until the next summary is due.
#[derive(Debug, Clone, Default)]
pub struct PeriodicAcc {
    from_ms: Option<f64>,
    to_ms: f64,
    ticks: u64,
    expected: f64,
}

impl PeriodicAcc {
    /// Adds a complete window.
    pub fn add(&mut self, w: &Window) {
        self.from_ms.get_or_insert(w.t_ms);
        self.to_ms = w.t_ms + w.duration_ms;
        self.ticks = self.ticks.saturating_add(w.guest_ticks);
        self.expected += w.expected_ticks;
    }

    /// Milliseconds folded so far.
    pub fn span_ms(&self) -> f64 {
        self.from_ms.map_or(0.0, |f| self.to_ms - f)
    }

    /// The summary of what was folded (at `period_ns`, with the longest
    /// non-gap interval `worst_interval_ns` and `pauses_seen`), and a fresh
    /// start.
    pub fn take(
        &mut self,
        period_ns: u64,
        worst_interval_ns: Option<u64>,
        pauses_seen: usize,
    ) -> PeriodicSummary {
        let acc = std::mem::take(self);
        let period = period_ns.max(1) as f64;
        let running_s = acc.expected * period / 1e9;
        PeriodicSummary {
            from_ms: acc.from_ms.unwrap_or(acc.to_ms),
            to_ms: acc.to_ms,
            ticks: acc.ticks,
            expected_ticks: (acc.expected * 10.0).round() / 10.0,
            rate_hz: (running_s > 0.0).then(|| acc.ticks as f64 / running_s),
            nominal_hz: 1e9 / period,
            worst_late_us: worst_interval_ns.map(|i| i.saturating_sub(period_ns) as f64 / 1e3),
            pauses_seen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(t_ms: f64, ticks: u64, expected: f64) -> Window {
        Window {
            t_ms,
            duration_ms: 1000.0,
            guest_ticks: ticks,
            expected_ticks: expected,
            paused: expected < 1000.0,
            host: None,
        }
    }

    #[test]
    fn a_summary_is_the_rate_over_the_running_time() {
        let mut acc = PeriodicAcc::default();
        acc.add(&w(0.0, 1000, 1000.0));
        acc.add(&w(1000.0, 500, 500.0));
        assert_eq!(acc.span_ms(), 2000.0);
        let s = acc.take(1_000_000, Some(1_250_000), 1);
        assert_eq!((s.from_ms, s.to_ms, s.ticks), (0.0, 2000.0, 1500));
        assert_eq!(s.rate_hz, Some(1000.0));
        assert_eq!(s.nominal_hz, 1000.0);
        assert_eq!(s.worst_late_us, Some(250.0));
        assert_eq!(s.pauses_seen, 1);
        assert_eq!(acc.span_ms(), 0.0);
        acc.add(&w(2000.0, 0, 0.0));
        let s = acc.take(1_000_000, None, 1);
        assert_eq!(
            (s.rate_hz, s.worst_late_us, s.from_ms),
            (None, None, 2000.0)
        );
    }
}
