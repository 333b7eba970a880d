//! Judging a record: the sweep summary and the host ratio a verdict reads
//! (the evidence and verdict are [`Record::judge`]).

use crate::names::Scope;
use crate::record::Record;
use crate::sweep::{fit, reading, SweepRow, SweepSummary};
use crate::verdict;

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
pub(crate) fn host_ratio(ratio: Option<f64>, scope: Scope, vcpus: u32) -> Result<f64, String> {
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
