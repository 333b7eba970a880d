//! Judging a record: its figures recomputed from the samples, the evidence
//! of each pause, the verdict, and the sweep summary built from them.

use crate::figures::{host_between, PauseStats};
use crate::names::{Probe, Scope};
use crate::record::{Record, RecordVerdict};
use crate::samples::SamplesError;
use crate::sweep::{fit, reading, SweepRow, SweepSummary};
use crate::verdict::{self, Evidence, Kind, Thresholds, Verdict};

impl Record {
    /// Recomputes windows, steady state and pause figures from `samples`.
    pub fn reanalyze(&mut self) -> Result<(), SamplesError> {
        let analysis = self.samples.analyze_in_place()?;
        self.windows = analysis.windows;
        self.steady = analysis.steady;
        self.pauses = analysis.pauses;
        if let Some(v) = &mut self.vcpus {
            v.reanalyze(&self.samples.pauses)?;
        }
        if self.sweep.is_some() {
            self.sweep = Some(summarize(self));
        }
        Ok(())
    }

    /// Where pause `i`'s span ends for the verdict: one second after its
    /// resume, cut at the next pause or the end of the run (ms since ready).
    fn span_end_ms(&self, i: usize) -> f64 {
        let end = |p: &PauseStats| p.end_ms + crate::figures::AFTER_SPAN_NS as f64 / 1e6;
        let next = self.pauses.get(i + 1).map_or(f64::MAX, |p| p.start_ms);
        self.pauses
            .get(i)
            .map_or(0.0, end)
            .min(next)
            .min(self.samples.end_ns as f64 / 1e6)
    }

    /// What the verdict of pause `i` is judged on.
    pub fn evidence(&self, i: usize) -> Evidence {
        let p = self.pauses.get(i);
        let before_pause = self.samples.pauses.get(i).map_or(0, |s| s.start_ns);
        let hv_before = host_between(&self.samples.host_marks, 0, before_pause, Scope::Vcpu)
            .and_then(|h| h.hv_timer.get());
        let hv_reason = || {
            self.host
                .probes
                .as_ref()
                .and_then(|r| r.missing.iter().find(|m| m.probe == Probe::HvTimer))
                .map_or_else(
                    || "hv timer expiries not measured (host probes off)".to_string(),
                    |m| m.reason.clone(),
                )
        };
        let backend = self.host.timer_backend.as_ref();
        // The state right before the pause: the last hv/sw switch before it.
        let hv_right_before = backend.and_then(|b| b.hv_at(before_pause as f64 / 1e6));
        let span = p.map_or(0.0..0.0, |p| p.start_ms..self.span_end_ms(i));
        let host_burst_ratio = host_ratio(
            p.and_then(|p| p.host_burst_ratio),
            self.samples.host_scope,
            self.config.vcpus,
        );
        Evidence {
            guest_burst_ratio: p.map(|p| p.burst_ratio),
            host_burst_ratio,
            host_callbacks_first_1s: p.and_then(|p| p.host_callbacks_first_1s),
            hv_used_before: match hv_before {
                Some(n) => Ok(hv_right_before.unwrap_or(n > 0)),
                None => Err(hv_reason()),
            },
            fell_back_at_ms: backend
                .and_then(|b| b.fallback_ms)
                .filter(|t| span.contains(t)),
            longest_run: p
                .filter(|p| p.host_longest_run.is_some())
                .map(crate::report::longest_run_text),
        }
    }

    /// A fallback to the sw timer outside every pause's span, judged on its
    /// own (see [`RecordVerdict::outside_pauses`]).
    fn outside_pauses(&self) -> Option<Verdict> {
        let t = self.host.timer_backend.as_ref()?.fallback_ms?;
        let n = self.pauses.len();
        if (0..n).any(|i| (self.pauses[i].start_ms..self.span_end_ms(i)).contains(&t)) {
            return None;
        }
        let when = match self.pauses.iter().position(|p| t < p.start_ms) {
            Some(k) => format!("before pause {}", k + 1),
            None if n == 0 => "(the run had no pause)".into(),
            None => format!("more than a second after the resume of pause {n}"),
        };
        Some(verdict::outside_fallback(t, &when))
    }

    /// Judges every pause with `thresholds` and stores the verdict.
    pub fn judge(&mut self, thresholds: &Thresholds) {
        let pauses: Vec<Verdict> = (0..self.pauses.len())
            .map(|i| verdict::judge(&self.evidence(i), thresholds))
            .collect();
        let outside_pauses = self.outside_pauses();
        let kinds = pauses.iter().chain(&outside_pauses).map(|v| &v.kind);
        let kind = if pauses.is_empty() && outside_pauses.is_none() {
            Kind::NotExercised
        } else {
            verdict::combine(kinds)
        };
        self.verdict = RecordVerdict {
            thresholds: *thresholds,
            kind,
            pauses,
            outside_pauses,
        };
        if self.sweep.is_some() {
            self.sweep = Some(summarize(self));
        }
    }
}

/// Builds the sweep summary of a record.
pub fn summarize(record: &Record) -> SweepSummary {
    let nominal_hz = record.steady.nominal_hz;
    let rows: Vec<SweepRow> = record
        .pauses
        .iter()
        .enumerate()
        .map(|(i, p)| SweepRow {
            pause_s: (p.end_ms - p.start_ms) / 1e3,
            guest_during: p.guest_ticks_during,
            guest_first_1s: p.ticks_first_1s,
            guest_burst_ratio: p.burst_ratio,
            host_during: p.host_callbacks_during,
            host_first_1s: p.host_callbacks_first_1s,
            host_burst_ratio: p.host_burst_ratio,
            verdict: record
                .verdict
                .pauses
                .get(i)
                .map_or("-", |v| v.kind.label())
                .to_string(),
        })
        .collect();
    let host_points: Option<Vec<(f64, f64)>> = rows
        .iter()
        .map(|r| r.host_first_1s.map(|h| (r.pause_s, h as f64)))
        .collect();
    let guest_points: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (r.pause_s, r.guest_first_1s as f64))
        .collect();
    let host_fit = host_points.as_deref().and_then(fit);
    let guest_fit = fit(&guest_points);
    SweepSummary {
        nominal_hz,
        reading: reading(host_fit.as_ref(), nominal_hz, "host"),
        rows,
        host_fit,
        guest_fit,
    }
}

/// The host burst ratio the verdict may use, or why not. Host-wide counts of
/// a VM with several vCPUs add up every vCPU's timer: they say nothing of the
/// subject's burst on its own.
fn host_ratio(ratio: Option<f64>, scope: Scope, vcpus: u32) -> Result<f64, String> {
    match ratio {
        Some(_) if vcpus > 1 && scope == Scope::HostWide => Err(format!(
            "host timer callbacks are host-wide (our vCPU's hrtimer was not learned), \
             so they add up all {vcpus} vCPUs' timers: not used with --vcpus {vcpus}"
        )),
        Some(r) => Ok(r),
        None => Err(verdict::HOST_NOT_MEASURED.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_wide_counts_are_not_judged_with_several_vcpus() {
        assert_eq!(host_ratio(Some(1.2), Scope::Vcpu, 4), Ok(1.2));
        assert_eq!(host_ratio(Some(1.2), Scope::HostWide, 1), Ok(1.2));
        let why = host_ratio(Some(4.0), Scope::HostWide, 4).unwrap_err();
        assert!(why.contains("--vcpus 4"), "{why}");
        assert_eq!(
            host_ratio(None, Scope::Vcpu, 1),
            Err(verdict::HOST_NOT_MEASURED.to_string())
        );
    }
}
