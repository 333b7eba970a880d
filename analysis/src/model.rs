//! `tickburst model`: what an unpatched and a patched kernel do after the
//! hv timer of a periodic guest stalled for `lag`. Pure arithmetic from the
//! mechanism in KVM-TIMER-NOTES (steps 3-4) and the mail's analysis.
//!
//! Unpatched: after resume the target expiration is `lag` behind now. The
//! hrtimer core runs `apic_timer_fn` inside one hard interrupt while the
//! expiry is in the past, each callback moving the target one `period`
//! forward while `cost` of real time passes. The gap shrinks by
//! `period - cost` per callback, so the interrupt runs
//! `n = ceil(lag / (period - cost))` callbacks for `n * cost`; when
//! `cost >= period` it never catches up. Either way, an interrupt longer than
//! the watchdog threshold is a hard LOCKUP.
//!
//! Patched (kvm-x86 6.19 fix): the target jumps to now: one callback.

use serde::Serialize;

/// Default per-callback cost, ns: an assumption, since this cannot be timed
/// on a host without the hv timer (there is no burst to time).
pub const DEFAULT_COST_NS: u64 = 100;
/// Default hard-lockup threshold (`watchdog_thresh` 10 s).
pub const DEFAULT_WATCHDOG_NS: u64 = 10_000_000_000;
/// Default guest timer period of `tickburst model --period`.
pub const DEFAULT_PERIOD_NS: u64 = 1_000_000;
/// Default stall of `tickburst model --lag` (a 10 s pause).
pub const DEFAULT_LAG_NS: u64 = 10_000_000_000;

/// What a kernel does in the interrupt after resume.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// Callbacks in the one interrupt (`null`: it never finishes).
    pub callbacks: Option<u64>,
    /// Time spent in that interrupt, s (`null`: unbounded).
    pub interrupt_s: Option<f64>,
    /// Whether it exceeds the watchdog threshold.
    pub hard_lockup: bool,
}

/// The model's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// Timer period, ns.
    pub period_ns: u64,
    /// How long the hv timer was stalled, ns.
    pub lag_ns: u64,
    /// Cost of one callback, ns.
    pub cost_ns: u64,
    /// Hard-lockup threshold, ns.
    pub watchdog_ns: u64,
    /// An unpatched kernel.
    pub unpatched: Outcome,
    /// A patched kernel.
    pub patched: Outcome,
}

/// Runs the model.
pub fn predict(period_ns: u64, lag_ns: u64, cost_ns: u64, watchdog_ns: u64) -> Prediction {
    let unpatched = if cost_ns >= period_ns {
        Outcome {
            callbacks: None,
            interrupt_s: None,
            hard_lockup: lag_ns >= period_ns,
        }
    } else {
        let n = u128::from(lag_ns).div_ceil(u128::from(period_ns - cost_ns));
        let ns = n * u128::from(cost_ns);
        Outcome {
            callbacks: Some(u64::try_from(n).unwrap_or(u64::MAX)),
            interrupt_s: Some(ns as f64 / 1e9),
            hard_lockup: ns > u128::from(watchdog_ns),
        }
    };
    Prediction {
        period_ns,
        lag_ns,
        cost_ns,
        watchdog_ns,
        unpatched,
        patched: Outcome {
            callbacks: Some(1),
            interrupt_s: Some(cost_ns as f64 / 1e9),
            hard_lockup: cost_ns > watchdog_ns,
        },
    }
}

/// Where the cost per callback came from.
#[derive(Debug, Clone, PartialEq)]
pub enum CostSource {
    /// [`DEFAULT_COST_NS`], an assumption.
    Assumed,
    /// `--cost`.
    Given,
    /// `--cost-from RUN.json`: a measured run of callbacks in one interrupt.
    Measured {
        /// Callbacks in the run.
        callbacks: u64,
        /// The run's duration, ns.
        duration_ns: u64,
    },
}

/// The smallest run of callbacks in one interrupt a cost is measured from.
pub const MIN_MEASURED_RUN: u64 = 100;

/// The cost per callback measured in a saved run: its longest run of
/// callbacks inside one interrupt (at least [`MIN_MEASURED_RUN`] of them),
/// or why there is none.
pub fn measured_cost(record: &crate::record::Record) -> Result<(u64, CostSource), String> {
    let events = record.samples.host_events.as_ref().ok_or(
        "the record has no sampled host callbacks (host probes off, or our hrtimer not learned)",
    )?;
    let run = events
        .longest_of_run()
        .filter(|r| crate::irq_runs::cost_per_callback_ns(r, MIN_MEASURED_RUN).is_some())
        .ok_or_else(|| {
            format!(
                "the record has no run of {MIN_MEASURED_RUN} or more callbacks inside one interrupt \
                 (a fixed kernel or a host without the hv timer): no cost can be measured from it"
            )
        })?;
    let cost = crate::irq_runs::cost_per_callback_ns(&run, MIN_MEASURED_RUN).unwrap_or(1.0);
    Ok((
        (cost.round() as u64).max(1),
        CostSource::Measured {
            callbacks: run.callbacks(),
            duration_ns: run.duration_ns(),
        },
    ))
}

/// The answer in words.
pub fn describe(p: &Prediction, source: &CostSource) -> String {
    let u = &p.unpatched;
    let unpatched = match (u.callbacks, u.interrupt_s) {
        (Some(n), Some(s)) => format!(
            "unpatched: {n} apic_timer_fn callbacks in one hard interrupt, {s:.6} s: {}",
            if u.hard_lockup {
                "past the watchdog threshold: hard LOCKUP"
            } else {
                "under the watchdog threshold"
            }
        ),
        _ => "unpatched: each callback costs at least a period, the interrupt never catches up: hard LOCKUP".into(),
    };
    format!(
        "period {} us ({:.1} Hz), lag {:.3} s, cost per callback {} ns{}, watchdog {} s\n{unpatched}\npatched: 1 callback ({} ns); the target jumps to now and the hv timer stays in use",
        p.period_ns as f64 / 1e3,
        1e9 / p.period_ns.max(1) as f64,
        p.lag_ns as f64 / 1e9,
        p.cost_ns,
        match source {
            CostSource::Assumed => " (assumed: give --cost, or --cost-from a run that burst)".into(),
            CostSource::Given => String::new(),
            CostSource::Measured { callbacks, duration_ns } => format!(
                " (measured: {callbacks} callbacks in one interrupt took {:.3} ms)",
                *duration_ns as f64 / 1e6
            ),
        },
        p.watchdog_ns as f64 / 1e9,
        p.cost_ns,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_NS: u64 = 86_400_000_000_000;

    #[test]
    fn ten_second_pause_at_the_reports_rate() {
        // 4768 Hz = 209.7 us; 10 s stalled: about 10 s x 4768 = 47 680
        // callbacks (the report saw 51 541 in the first second, which also
        // holds that second's own ticks and the pause's partial second).
        let p = predict(209_732, 10_000_000_000, 100, DEFAULT_WATCHDOG_NS);
        let n = p.unpatched.callbacks.unwrap();
        assert!((47_600..47_800).contains(&n), "{n}");
        assert!(!p.unpatched.hard_lockup);
        assert_eq!(p.patched.callbacks, Some(1));
    }

    #[test]
    fn fifty_one_days_is_a_lockup() {
        // The crash dump: period 1 739 904 ns, lag 51 days.
        let p = predict(1_739_904, 51 * DAY_NS, 100, DEFAULT_WATCHDOG_NS);
        let s = p.unpatched.interrupt_s.unwrap();
        assert!(s > 10.0, "{s}");
        assert!(p.unpatched.hard_lockup);
        assert!(describe(&p, &CostSource::Assumed).contains("hard LOCKUP"));
        assert!(!p.patched.hard_lockup);
    }

    #[test]
    fn cost_over_period_never_finishes() {
        let p = predict(200_000, 1_000_000, 300_000, DEFAULT_WATCHDOG_NS);
        assert_eq!(p.unpatched.callbacks, None);
        assert!(p.unpatched.hard_lockup);
        let none = predict(200_000, 0, 100, DEFAULT_WATCHDOG_NS);
        assert_eq!(none.unpatched.callbacks, Some(0));
        assert!(!none.unpatched.hard_lockup);
    }
}
