//! `tickburst sweep`: burst size against pause length, from the pauses of one
//! run (one VM, no reboot between pauses). Pure.
//!
//! Burst size is the number of timer callbacks in the first second after
//! resume, host side (`host_callbacks_first_1s`) and guest side
//! (`ticks_first_1s`). A least-squares line through (pause seconds, burst)
//! gives the slope in callbacks per paused second and R^2. On an unpatched
//! kernel with the hv timer the host burst grows by the nominal rate per
//! paused second (slope / nominal near 1); on a fixed kernel or a sw-only
//! host the line is flat.

use serde::{Deserialize, Serialize};

/// Slope over nominal above which growth counts as the stall signature.
pub const STALL_SLOPE_RATIO: f64 = 0.5;
/// Slope over nominal below which the line counts as flat.
pub const FLAT_SLOPE_RATIO: f64 = 0.1;

/// A least-squares line.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LineFit {
    /// Callbacks per paused second.
    pub slope: f64,
    /// Burst at zero pause.
    pub intercept: f64,
    /// Coefficient of determination (`null` when every burst is equal).
    pub r_squared: Option<f64>,
    /// Number of points.
    pub points: usize,
}

/// Fits `y = slope * x + intercept`; `None` with fewer than two distinct x.
pub fn fit(points: &[(f64, f64)]) -> Option<LineFit> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
    if sxx <= f64::EPSILON {
        return None;
    }
    let slope = sxy / sxx;
    let r_squared = (syy > f64::EPSILON).then(|| (sxy * sxy) / (sxx * syy));
    Some(LineFit {
        slope,
        intercept: my - slope * mx,
        r_squared,
        points: points.len(),
    })
}

/// One row of the sweep table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepRow {
    /// Measured pause length, s.
    pub pause_s: f64,
    /// Guest ticks while paused.
    pub guest_during: u64,
    /// Guest ticks in the first second after resume.
    pub guest_first_1s: u64,
    /// Guest ticks in the first 100 ms after resume, over nominal.
    pub guest_burst_ratio: f64,
    /// Host callbacks while paused.
    pub host_during: Option<u64>,
    /// Host callbacks in the first second after resume.
    pub host_first_1s: Option<u64>,
    /// `host_first_1s` over nominal.
    pub host_burst_ratio: Option<f64>,
    /// Verdict of this pause.
    pub verdict: String,
}

/// The sweep result stored in the record (`sweep`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepSummary {
    /// Nominal rate, Hz.
    pub nominal_hz: f64,
    /// One row per pause, in run order.
    #[serde(deserialize_with = "crate::limits::pauses")]
    pub rows: Vec<SweepRow>,
    /// Host burst against pause length (`null` without host probes).
    pub host_fit: Option<LineFit>,
    /// Guest burst against pause length.
    pub guest_fit: Option<LineFit>,
    /// What the host line means.
    pub reading: String,
}

/// Reads a fit against the nominal rate.
pub fn reading(fit: Option<&LineFit>, nominal_hz: f64, side: &str) -> String {
    let Some(f) = fit else {
        return format!("{side}: no fit (not measured, or all pauses of one length)");
    };
    let ratio = f.slope / nominal_hz.max(f64::MIN_POSITIVE);
    let r2 = f
        .r_squared
        .map_or_else(|| "n/a (all equal)".into(), |r| format!("{r:.3}"));
    let what = if ratio > STALL_SLOPE_RATIO && f.r_squared.is_some_and(|r| r > 0.9) {
        "grows linearly with the pause at about the nominal rate: the hv timer stall signature"
    } else if ratio.abs() < FLAT_SLOPE_RATIO {
        "flat: no stall (a fixed kernel, or a host with only the sw timer)"
    } else {
        "neither flat nor the stall signature"
    };
    format!(
        "{side}: slope {:.1} callbacks per paused second ({ratio:.3}x nominal {nominal_hz:.0} Hz), R^2 {r2}: {what}",
        f.slope
    )
}

/// The sweep table and fit lines.
pub fn table(s: &SweepSummary) -> String {
    let cell = |v: Option<u64>| v.map_or_else(|| "n/a".into(), |n| n.to_string());
    let mut out = String::from(
        "pause_s  guest_during  guest_1s  guest_ratio  host_during  host_1s  host_ratio  verdict\n",
    );
    for r in &s.rows {
        out.push_str(&format!(
            "{:7.3}  {:12}  {:8}  {:11.2}  {:>11}  {:>7}  {:>10}  {}\n",
            r.pause_s,
            r.guest_during,
            r.guest_first_1s,
            r.guest_burst_ratio,
            cell(r.host_during),
            cell(r.host_first_1s),
            r.host_burst_ratio
                .map_or_else(|| "n/a".into(), |x| format!("{x:.2}")),
            r.verdict
        ));
    }
    out.push_str(&s.reading);
    out.push('\n');
    out.push_str(&reading(s.guest_fit.as_ref(), s.nominal_hz, "guest"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_the_unpatched_growth() {
        // Unpatched kernel at 4768 Hz: burst = 4768 * (pause + 1).
        let pts: Vec<(f64, f64)> = [1.0, 2.0, 5.0, 10.0]
            .iter()
            .map(|&p| (p, 4768.0 * (p + 1.0)))
            .collect();
        let f = fit(&pts).unwrap();
        assert!((f.slope - 4768.0).abs() < 1e-6);
        assert!((f.intercept - 4768.0).abs() < 1e-6);
        assert!((f.r_squared.unwrap() - 1.0).abs() < 1e-12);
        assert!(reading(Some(&f), 4768.0, "host").contains("stall signature"));
    }

    #[test]
    fn flat_line_and_degenerate_inputs() {
        let flat = fit(&[(1.0, 1000.0), (2.0, 1001.0), (5.0, 999.0)]).unwrap();
        assert!(flat.slope.abs() < 1.0);
        assert!(reading(Some(&flat), 1000.0, "host").contains("flat"));
        let equal = fit(&[(1.0, 5.0), (2.0, 5.0)]).unwrap();
        assert_eq!(equal.r_squared, None);
        assert_eq!(equal.slope, 0.0);
        assert!(fit(&[(1.0, 5.0)]).is_none());
        assert!(fit(&[(1.0, 5.0), (1.0, 7.0)]).is_none());
        assert!(fit(&[]).is_none());
        assert!(reading(None, 1000.0, "host").contains("no fit"));
    }
}
