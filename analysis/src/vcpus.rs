//! Runs with several vCPUs (`--vcpus N`): each vCPU's figures, the totals,
//! and the per-vCPU table. Pure: computed from [`RawSamples`], no KVM.
//!
//! Every vCPU has its own LAPIC timer and tick ring. The record's top-level
//! figures (windows, pauses, verdict, host columns) are those of the
//! *subject*: the first paused vCPU. This module adds one [`VcpuRecord`] per
//! vCPU and their [`VcpuTotals`].

use crate::collection::CollectorStats;
use crate::collection::GuestCounters;
use crate::figures::{self, PauseSpan, PauseStats, Samples, Steady};

use crate::samples::{RawSamples, SamplesError};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A `--pause-vcpus` value that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PauseSetError {
    /// Not `all`, a number or a range `a-b`.
    #[error("--pause-vcpus: '{0}' is not a vCPU index or range (use all, 1, 0,2 or 1-3)")]
    Syntax(String),
    /// An index at or past the number of vCPUs.
    #[error("--pause-vcpus: vCPU {index} does not exist (--vcpus {vcpus}: 0 to {last})", last = vcpus - 1)]
    OutOfRange {
        /// The index given.
        index: u32,
        /// Number of vCPUs.
        vcpus: u32,
    },
    /// The same vCPU twice.
    #[error("--pause-vcpus: vCPU {0} is listed twice")]
    Duplicate(u32),
}

/// Parses `--pause-vcpus`: `all`, or a comma-separated list of indices and
/// ranges. Returns the sorted indices.
///
/// ```
/// use tickburst_analysis::vcpus::parse_pause_set;
/// assert_eq!(parse_pause_set("all", 3), Ok(vec![0, 1, 2]));
/// assert_eq!(parse_pause_set("2,0", 4), Ok(vec![0, 2]));
/// assert_eq!(parse_pause_set("1-3", 4), Ok(vec![1, 2, 3]));
/// assert!(parse_pause_set("4", 4).is_err());
/// ```
pub fn parse_pause_set(text: &str, vcpus: u32) -> Result<Vec<u32>, PauseSetError> {
    if text.trim() == "all" {
        return Ok((0..vcpus).collect());
    }
    let index = |part: &str| {
        part.trim()
            .parse::<u32>()
            .map_err(|_| PauseSetError::Syntax(part.trim().to_string()))
    };
    let mut set = Vec::new();
    for part in text.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (index(a)?, index(b)?),
            None => (index(part)?, index(part)?),
        };
        if lo > hi {
            return Err(PauseSetError::Syntax(part.trim().to_string()));
        }
        for i in lo..=hi {
            if i >= vcpus {
                return Err(PauseSetError::OutOfRange { index: i, vcpus });
            }
            if set.contains(&i) {
                return Err(PauseSetError::Duplicate(i));
            }
            set.push(i);
        }
    }
    set.sort_unstable();
    Ok(set)
}

/// One vCPU of a multi-vCPU run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VcpuRecord {
    /// vCPU index (= APIC ID).
    pub vcpu: u32,
    /// Whether the pauses stopped this vCPU.
    pub paused: bool,
    /// Steady state: from its first tick to its first pause (to the end of
    /// the run when it was never paused).
    pub steady: Steady,
    /// One entry per pause of the run: over its own pause spans when it was
    /// paused, over the subject's spans when it kept running (then
    /// `guest_ticks_during` shows it kept ticking).
    #[serde(deserialize_with = "crate::limits::pauses")]
    pub pauses: Vec<PauseStats>,
    /// The guest's own counters in this vCPU's slot.
    pub guest: GuestCounters,
    /// Collector counters of this vCPU's ring.
    pub collector: CollectorStats,
    /// Its ticks and own pauses (no host marks: those are the subject's).
    pub samples: RawSamples,
}

/// One pause summed over all vCPUs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PauseTotals {
    /// Ticks taken while paused (the running vCPUs' ticks).
    pub guest_ticks_during: u64,
    /// Ticks in the first 100 ms after resume.
    pub ticks_first_100ms: u64,
    /// Ticks in the first second after resume.
    pub ticks_first_1s: u64,
}

/// All vCPUs together.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VcpuTotals {
    /// Sum of the steady rates (`null` if a vCPU has none).
    pub rate_hz: Option<f64>,
    /// Sum of the nominal rates.
    pub nominal_hz: f64,
    /// Ticks collected.
    pub ticks: u64,
    /// Ticks lost to ring overrun.
    pub lost_ticks: u64,
    /// One entry per pause.
    #[serde(deserialize_with = "crate::limits::pauses")]
    pub pauses: Vec<PauseTotals>,
}

/// The multi-vCPU part of a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VcpusRecord {
    /// The vCPU the top-level figures and host columns describe.
    pub subject: u32,
    /// The vCPUs the pauses stopped.
    #[serde(deserialize_with = "crate::limits::vcpu_list")]
    pub paused: Vec<u32>,
    /// One entry per vCPU, by index.
    #[serde(deserialize_with = "crate::limits::vcpu_list")]
    pub list: Vec<VcpuRecord>,
    /// Sums over `list`.
    pub totals: VcpuTotals,
}

/// Steady state and pause figures of one vCPU from its samples: over its own
/// pauses when it has any, else over `spans` (the subject's pauses).
pub fn figures(
    samples: &RawSamples,
    spans: &[PauseSpan],
) -> Result<(Steady, Vec<PauseStats>), SamplesError> {
    let ticks = samples.validate()?;
    let s = Samples {
        period_ns: samples.period_ns,
        interval_ns: samples.interval_ns,
        end_ns: samples.end_ns,
        ticks_ns: &ticks,
        pauses: &samples.pauses,
        host: &[],
        host_scope: samples.host_scope,
        host_events: None,
    };
    let over = if samples.pauses.is_empty() {
        spans
    } else {
        &samples.pauses
    };
    Ok(match &samples.bounded {
        Some(b) => (b.steady.steady(s.period_ns), b.pauses_over(&s, over)),
        None => (figures::steady(&s), figures::pauses_over(&s, over)),
    })
}

/// Sums the vCPUs' figures.
pub fn totals(list: &[VcpuRecord]) -> VcpuTotals {
    let pause_count = list.iter().map(|v| v.pauses.len()).max().unwrap_or(0);
    let pauses = (0..pause_count)
        .map(|i| {
            let mut t = PauseTotals::default();
            for p in list.iter().filter_map(|v| v.pauses.get(i)) {
                t.guest_ticks_during = t.guest_ticks_during.saturating_add(p.guest_ticks_during);
                t.ticks_first_100ms = t.ticks_first_100ms.saturating_add(p.ticks_first_100ms);
                t.ticks_first_1s = t.ticks_first_1s.saturating_add(p.ticks_first_1s);
            }
            t
        })
        .collect();
    VcpuTotals {
        rate_hz: list.iter().map(|v| v.steady.rate_hz).sum(),
        nominal_hz: list.iter().map(|v| v.steady.nominal_hz).sum(),
        ticks: list.iter().map(|v| v.samples.ticks_total()).sum(),
        lost_ticks: list
            .iter()
            .map(|v| v.collector.lost_ticks)
            .fold(0, u64::saturating_add),
        pauses,
    }
}

impl VcpusRecord {
    /// Recomputes every vCPU's figures and the totals from the samples;
    /// `spans` are the subject's pauses.
    pub fn reanalyze(&mut self, spans: &[PauseSpan]) -> Result<(), SamplesError> {
        for v in &mut self.list {
            (v.steady, v.pauses) = figures(&v.samples, spans)?;
        }
        self.totals = totals(&self.list);
        Ok(())
    }
}

/// The per-vCPU table: a row per vCPU and a total row. Each pause shows
/// `during/100ms/1s`: ticks while paused, in the first 100 ms and in the first
/// second after resume.
pub fn table(v: &VcpusRecord) -> String {
    let pause_count = v.totals.pauses.len();
    let mut out = format!(
        "vCPUs: {} (subject vCPU {}: the table above and the host columns); paused: {}\n",
        v.list.len(),
        v.subject,
        list_text(&v.paused)
    );
    out.push_str("vcpu  paused  steady_hz   ticks  lost");
    for i in 0..pause_count {
        out.push_str(&format!("  {:>18}", format!("pause{} dur/100ms/1s", i + 1)));
    }
    out.push('\n');
    let rate = |r: Option<f64>| r.map_or_else(|| "-".into(), |r| format!("{r:.1}"));
    for row in &v.list {
        out.push_str(&format!(
            "{:>4}  {:<6}  {:>9}  {:>6}  {:>4}",
            row.vcpu,
            if row.paused { "yes" } else { "no" },
            rate(row.steady.rate_hz),
            row.samples.ticks_total(),
            row.collector.lost_ticks
        ));
        for p in &row.pauses {
            out.push_str(&pause_cell(
                p.guest_ticks_during,
                p.ticks_first_100ms,
                p.ticks_first_1s,
            ));
        }
        out.push('\n');
    }
    let t = &v.totals;
    out.push_str(&format!(
        "{:>4}  {:<6}  {:>9}  {:>6}  {:>4}",
        "all",
        "",
        rate(t.rate_hz),
        t.ticks,
        t.lost_ticks
    ));
    for p in &t.pauses {
        out.push_str(&pause_cell(
            p.guest_ticks_during,
            p.ticks_first_100ms,
            p.ticks_first_1s,
        ));
    }
    out
}

/// One `during/100ms/1s` column of the table.
fn pause_cell(during: u64, first_100ms: u64, first_1s: u64) -> String {
    format!("  {:>18}", format!("{during}/{first_100ms}/{first_1s}"))
}

/// A vCPU set as `0,2,3`, or `none`.
pub fn list_text(set: &[u32]) -> String {
    if set.is_empty() {
        return "none".into();
    }
    set.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::figures::Samples;

    const MS: u64 = 1_000_000;

    /// Ticks every `period` from `period` to `end`, none inside `gaps`.
    fn ticks(period: u64, end: u64, gaps: &[PauseSpan]) -> Vec<u64> {
        (1..)
            .map(|k| k * period)
            .take_while(|&t| t < end)
            .filter(|&t| !gaps.iter().any(|g| g.start_ns <= t && t < g.end_ns))
            .collect()
    }

    fn raw(ticks: &[u64], pauses: &[PauseSpan], end: u64) -> RawSamples {
        RawSamples::new(&Samples {
            period_ns: MS,
            interval_ns: 1000 * MS,
            end_ns: end,
            ticks_ns: ticks,
            pauses,
            host: &[],
            host_scope: crate::names::Scope::Vcpu,
            host_events: None,
        })
    }

    fn record(vcpu: u32, samples: RawSamples, spans: &[PauseSpan]) -> VcpuRecord {
        let (steady, pauses) = figures(&samples, spans).unwrap();
        VcpuRecord {
            vcpu,
            paused: !samples.pauses.is_empty(),
            steady,
            pauses,
            guest: GuestCounters::default(),
            collector: CollectorStats::default(),
            samples,
        }
    }

    #[test]
    fn parses_pause_sets() {
        assert_eq!(parse_pause_set("1", 4), Ok(vec![1]));
        assert_eq!(parse_pause_set(" 3 , 0-1", 4), Ok(vec![0, 1, 3]));
        assert_eq!(parse_pause_set("0,0", 2), Err(PauseSetError::Duplicate(0)));
        assert_eq!(
            parse_pause_set("2-1", 4),
            Err(PauseSetError::Syntax("2-1".into()))
        );
        assert_eq!(
            parse_pause_set("x", 4),
            Err(PauseSetError::Syntax("x".into()))
        );
        assert_eq!(
            parse_pause_set("", 4),
            Err(PauseSetError::Syntax("".into()))
        );
        let e = parse_pause_set("0-9", 4).unwrap_err();
        assert_eq!(e, PauseSetError::OutOfRange { index: 4, vcpus: 4 });
        assert!(e.to_string().contains("0 to 3"), "{e}");
    }

    #[test]
    fn a_running_vcpu_is_measured_over_the_subjects_pause() {
        let end = 4000 * MS;
        let pause = [PauseSpan {
            start_ns: 1000 * MS,
            end_ns: 2000 * MS,
        }];
        let paused = record(1, raw(&ticks(MS, end, &pause), &pause, end), &pause);
        let running = record(0, raw(&ticks(MS, end, &[]), &[], end), &pause);

        assert!(paused.paused && !running.paused);
        assert_eq!(paused.pauses[0].guest_ticks_during, 0);
        assert_eq!(running.pauses[0].guest_ticks_during, 1000);
        assert_eq!(running.pauses[0].ticks_first_1s, 1000);
        let rate = running.steady.rate_hz.unwrap();
        assert!((rate - 1000.0).abs() < 1.0, "{rate}");
        assert_eq!(paused.steady.ticks, 999, "steady stops at its own pause");

        let t = totals(&[running.clone(), paused.clone()]);
        assert_eq!(t.pauses[0].guest_ticks_during, 1000);
        assert_eq!(t.pauses[0].ticks_first_1s, 2000);
        assert_eq!(t.ticks, 3999 + 2999);
        assert_eq!(t.nominal_hz, 2000.0);

        let mut multi = VcpusRecord {
            subject: 1,
            paused: vec![1],
            list: vec![running, paused],
            totals: VcpuTotals::default(),
        };
        multi.reanalyze(&pause).unwrap();
        assert_eq!(multi.totals, t);
        let text = table(&multi);
        assert!(text.contains("subject vCPU 1"), "{text}");
        assert!(text.contains("1000/100/1000"), "{text}");
        assert!(text.contains("0/100/1000"), "{text}");
        assert!(text.lines().last().unwrap().starts_with(" all"), "{text}");
    }

    #[test]
    fn a_vcpu_with_no_ticks_has_no_rate() {
        let end = 2000 * MS;
        let v = record(0, raw(&[], &[], end), &[]);
        assert_eq!(v.steady.rate_hz, None);
        assert_eq!(totals(&[v]).rate_hz, None);
    }
}
