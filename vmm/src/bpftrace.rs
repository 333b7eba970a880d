//! Reads the per-second log of the bug report's bpftrace script and judges
//! it with the same rules as a live run (`tickburst analyze --from-bpftrace`).
//!
//! Input: lines holding `all_count N`, `hv_timer N` and `sw_timer N` (any
//! whitespace between and around; every other line is ignored), one line per
//! second. A pause is a run of lines with `all_count 0` between lines with
//! timer activity. For each pause:
//!
//! - nominal rate: the median `all_count` of the lines before the first pause,
//!   leaving out the line right before the pause (the pause starts inside it);
//! - host burst ratio: `all_count` of the first line after the pause (the
//!   second the resume falls in) over the nominal rate;
//! - hv timer in use before: any `hv_timer` > 0 before the pause;
//! - fallback: hv was in use before, and every line after the resume line has
//!   `hv_timer 0` and `sw_timer` > 0 (needs at least one such line).

use crate::verdict::Evidence;
use serde::Serialize;
use thiserror::Error;

/// Why a log cannot be judged.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BpftraceError {
    /// No line had all three counters.
    #[error("no 'all_count N  hv_timer N  sw_timer N' line found")]
    NoLines,
    /// No run of zero lines between active lines.
    #[error("no pause found (no line with all_count 0 between lines with timer activity)")]
    NoPause,
    /// The timer never ran before the pause.
    #[error("no timer activity before the pause: cannot tell the nominal rate")]
    NoRate,
}

/// One line of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Interval {
    /// 1-based line number in the input.
    pub line: usize,
    /// `advance_periodic_target_expiration` calls (all).
    pub all: u64,
    /// `kvm_lapic_expired_hv_timer` calls.
    pub hv: u64,
    /// `apic_timer_fn` calls.
    pub sw: u64,
}

/// One pause found in the log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogPause {
    /// Line of the first zero interval.
    pub first_zero_line: usize,
    /// Number of zero intervals.
    pub zero_intervals: usize,
    /// Estimated pause length, s: the zero intervals plus the idle part of
    /// the interval before them.
    pub estimated_s: f64,
    /// The interval the resume falls in.
    pub resume: Interval,
    /// `resume.all` over nominal.
    pub host_burst_ratio: f64,
    /// Whether the hv timer ran before this pause.
    pub hv_before: bool,
    /// hv before, only sw afterwards.
    pub fell_back_to_sw: bool,
    /// Seconds from the log's first interval to the resume interval.
    pub resume_s: f64,
}

/// The whole log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogAnalysis {
    /// Every interval read.
    pub intervals: Vec<Interval>,
    /// Nominal callbacks per second.
    pub nominal_per_s: f64,
    /// Each pause.
    pub pauses: Vec<LogPause>,
}

fn value_after(tokens: &[&str], key: &str) -> Option<u64> {
    let i = tokens.iter().position(|t| *t == key)?;
    tokens.get(i + 1)?.parse().ok()
}

/// Parses the lines that hold the three counters.
pub fn parse(text: &str) -> Result<Vec<Interval>, BpftraceError> {
    let intervals: Vec<Interval> = text
        .lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let tokens: Vec<&str> = line.split_whitespace().collect();
            Some(Interval {
                line: i + 1,
                all: value_after(&tokens, "all_count")?,
                hv: value_after(&tokens, "hv_timer")?,
                sw: value_after(&tokens, "sw_timer")?,
            })
        })
        .collect();
    if intervals.is_empty() {
        return Err(BpftraceError::NoLines);
    }
    Ok(intervals)
}

fn median(mut v: Vec<u64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[v.len() / 2] as f64)
}

/// Finds the pauses and their figures.
pub fn analyze(intervals: &[Interval]) -> Result<LogAnalysis, BpftraceError> {
    // Runs of zero intervals with activity on both sides: (first, len).
    let mut runs = Vec::new();
    let mut i = 0;
    while i < intervals.len() {
        if intervals[i].all == 0 {
            let start = i;
            while i < intervals.len() && intervals[i].all == 0 {
                i += 1;
            }
            if start > 0 && i < intervals.len() {
                runs.push((start, i - start));
            }
        } else {
            i += 1;
        }
    }
    let Some(&(first_pause, _)) = runs.first() else {
        return Err(BpftraceError::NoPause);
    };
    let before = &intervals[..first_pause];
    let full = &before[..before.len() - 1];
    let nominal = median(full.iter().map(|x| x.all).collect())
        .or_else(|| median(vec![before[before.len() - 1].all]))
        .filter(|&n| n > 0.0)
        .ok_or(BpftraceError::NoRate)?;
    let pauses = runs
        .iter()
        .enumerate()
        .map(|(k, &(start, len))| {
            let resume_at = start + len;
            let next_pause = runs.get(k + 1).map_or(intervals.len(), |r| r.0);
            let after = &intervals[resume_at + 1..next_pause];
            let hv_before = intervals[..start].iter().any(|x| x.hv > 0);
            let partial = intervals[start - 1].all as f64 / nominal;
            LogPause {
                first_zero_line: intervals[start].line,
                zero_intervals: len,
                estimated_s: len as f64 + (1.0 - partial).clamp(0.0, 1.0),
                resume: intervals[resume_at],
                host_burst_ratio: intervals[resume_at].all as f64 / nominal,
                hv_before,
                fell_back_to_sw: hv_before
                    && !after.is_empty()
                    && after.iter().all(|x| x.hv == 0 && x.sw > 0),
                resume_s: resume_at as f64,
            }
        })
        .collect();
    Ok(LogAnalysis {
        intervals: intervals.to_vec(),
        nominal_per_s: nominal,
        pauses,
    })
}

impl LogPause {
    /// What the verdict is judged on (a bpftrace log has no guest side).
    pub fn evidence(&self) -> Evidence {
        Evidence {
            guest_burst_ratio: None,
            host_burst_ratio: Ok(self.host_burst_ratio),
            host_callbacks_first_1s: Some(self.resume.all),
            hv_used_before: Ok(self.hv_before),
            fell_back_at_ms: self.fell_back_to_sw.then_some(self.resume_s * 1e3),
            longest_run: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::{judge, Kind, Thresholds};

    const UNPATCHED: &str = "all_count 4768  hv_timer  4768  sw_timer  0
all_count 4768  hv_timer  4768  sw_timer  0
//==suspend
all_count 910   hv_timer  910   sw_timer  0
all_count 0     hv_timer  0     sw_timer  0
all_count 0     hv_timer  0     sw_timer  0
//==resume ==(1)==
all_count 51543         hv_timer  1     sw_timer  51541
all_count 4768  hv_timer  0     sw_timer  4768
all_count 4769  hv_timer  0     sw_timer  4769
";

    #[test]
    fn reads_the_report_layout_and_ignores_other_lines() {
        let iv = parse(UNPATCHED).unwrap();
        assert_eq!(iv.len(), 8);
        assert_eq!(
            iv[5],
            Interval {
                line: 8,
                all: 51543,
                hv: 1,
                sw: 51541
            }
        );
        assert_eq!(
            parse("garbage\n\nall_count x hv_timer 1 sw_timer 2\n").unwrap_err(),
            BpftraceError::NoLines
        );
        assert_eq!(parse("").unwrap_err(), BpftraceError::NoLines);
    }

    #[test]
    fn unpatched_log_is_a_burst_with_fallback() {
        let a = analyze(&parse(UNPATCHED).unwrap()).unwrap();
        assert_eq!(a.nominal_per_s, 4768.0);
        assert_eq!(a.pauses.len(), 1);
        let p = &a.pauses[0];
        assert_eq!(p.zero_intervals, 2);
        assert!(p.fell_back_to_sw && p.hv_before);
        assert!((p.estimated_s - 2.81).abs() < 0.01, "{}", p.estimated_s);
        assert_eq!(
            judge(&p.evidence(), &Thresholds::default()).kind,
            Kind::Burst
        );
    }

    #[test]
    fn logs_without_a_usable_pause_are_errors() {
        let no_pause = "all_count 5 hv_timer 5 sw_timer 0\nall_count 5 hv_timer 5 sw_timer 0\n";
        assert_eq!(
            analyze(&parse(no_pause).unwrap()).unwrap_err(),
            BpftraceError::NoPause
        );
        // Truncated while paused: no resume line.
        let cut = "all_count 5 hv_timer 5 sw_timer 0\nall_count 0 hv_timer 0 sw_timer 0\n";
        assert_eq!(
            analyze(&parse(cut).unwrap()).unwrap_err(),
            BpftraceError::NoPause
        );
        let dead = "all_count 0 hv_timer 0 sw_timer 0\n";
        assert_eq!(
            analyze(&parse(dead).unwrap()).unwrap_err(),
            BpftraceError::NoPause
        );
    }

    #[test]
    fn sw_only_log_is_not_exercised() {
        let sw = "all_count 1000 hv_timer 0 sw_timer 1000
all_count 1000 hv_timer 0 sw_timer 1000
all_count 0 hv_timer 0 sw_timer 0
all_count 1000 hv_timer 0 sw_timer 1000
all_count 1000 hv_timer 0 sw_timer 1000
";
        let a = analyze(&parse(sw).unwrap()).unwrap();
        let v = judge(&a.pauses[0].evidence(), &Thresholds::default());
        assert_eq!(v.kind, Kind::NotExercised, "{v:?}");
    }
}
