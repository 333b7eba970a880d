//! The raw measurements of a run, stored in its record so a saved run can be
//! analysed again (`tickburst analyze RUN.json`) by the same code as a live
//! run: ticks, pauses and host counts.
//!
//! Tick times are stored delta-encoded (`tick_deltas_ns[0]` is the first tick,
//! each further entry the gap to the previous tick), which keeps a 1 kHz run
//! at about 8 bytes of JSON per tick.

use crate::bounded::BoundedTicks;
use crate::figures::{self, Analysis, HostMark, PauseSpan, Samples};
use crate::irq_runs::HostEvents;
use crate::names::Scope;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A saved sample set that cannot be analysed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SamplesError {
    /// Tick times overflow.
    #[error("tick times overflow u64")]
    Overflow,
    /// A pause ends before it starts, overlaps the previous one, or lies
    /// past the end of the run.
    #[error("pause {0} is not a valid span inside the run")]
    BadPause(usize),
    /// The per-event host samples are inconsistent.
    #[error("{0}")]
    HostEvents(String),
    /// The period is zero.
    #[error("period_ns is 0")]
    ZeroPeriod,
    /// The report window is zero.
    #[error("interval_ns is 0")]
    ZeroInterval,
}

/// Everything the analysis needs, owned and serialisable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawSamples {
    /// Timer period the LAPIC really runs at, ns.
    pub period_ns: u64,
    /// Report window, ns.
    pub interval_ns: u64,
    /// End of the observed run, ns since ready.
    pub end_ns: u64,
    /// Tick times, delta-encoded (see the module docs), ns since ready.
    #[serde(deserialize_with = "crate::limits::ticks")]
    pub tick_deltas_ns: Vec<u64>,
    /// Pauses, sorted, not overlapping.
    #[serde(deserialize_with = "crate::limits::pauses")]
    pub pauses: Vec<PauseSpan>,
    /// Host counts over time (empty without host probes).
    #[serde(deserialize_with = "crate::limits::host_marks")]
    pub host_marks: Vec<HostMark>,
    /// Scope of the host timer counts (`vcpu` or `host-wide`).
    pub host_scope: Scope,
    /// Every host timer callback and hv expiry of our vCPU, when sampled
    /// (absent in records of runs without them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_events: Option<HostEvents>,
    /// Record version 3: what was kept instead of every tick
    /// (`tick_deltas_ns` then holds only the ticks of its `kept_spans`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounded: Option<BoundedTicks>,
}

/// Delta-encodes sorted tick times.
pub fn encode_ticks(ticks: &[u64]) -> Vec<u64> {
    let mut prev = 0;
    ticks
        .iter()
        .map(|&t| {
            let d = t.saturating_sub(prev);
            prev = t.max(prev);
            d
        })
        .collect()
}

/// Decodes delta-encoded tick times.
pub fn decode_ticks(deltas: &[u64]) -> Result<Vec<u64>, SamplesError> {
    last_tick(deltas)?;
    let mut ticks = deltas.to_vec();
    decode_in_place(&mut ticks);
    Ok(ticks)
}

/// The last tick time the deltas encode, without decoding them into a new
/// list: `Err` if the times overflow `u64`.
pub fn last_tick(deltas: &[u64]) -> Result<u64, SamplesError> {
    deltas
        .iter()
        .try_fold(0u64, |t, &d| t.checked_add(d))
        .ok_or(SamplesError::Overflow)
}

/// Turns deltas into times in place; the caller has checked with
/// [`last_tick`] that they do not overflow.
fn decode_in_place(v: &mut [u64]) {
    let mut t = 0u64;
    for x in v.iter_mut() {
        t = t.saturating_add(*x);
        *x = t;
    }
}

/// Turns sorted times back into deltas in place (the inverse of
/// [`decode_in_place`]).
fn encode_in_place(v: &mut [u64]) {
    for i in (1..v.len()).rev() {
        v[i] = v[i].saturating_sub(v[i - 1]);
    }
}

impl RawSamples {
    /// Builds the sample set of a run; `ticks` must be sorted.
    pub fn new(s: &Samples) -> RawSamples {
        RawSamples {
            period_ns: s.period_ns,
            interval_ns: s.interval_ns,
            end_ns: s.end_ns,
            tick_deltas_ns: encode_ticks(s.ticks_ns),
            pauses: s.pauses.to_vec(),
            host_marks: s.host.to_vec(),
            host_scope: s.host_scope,
            host_events: s.host_events.cloned(),
            bounded: None,
        }
    }

    /// The sample set of a run kept bounded: `s.ticks_ns` are the kept ticks.
    pub fn bounded(s: &Samples, bounded: BoundedTicks) -> RawSamples {
        RawSamples {
            bounded: Some(bounded),
            ..RawSamples::new(s)
        }
    }

    /// Every tick the run took (not only those stored).
    pub fn ticks_total(&self) -> u64 {
        self.bounded
            .as_ref()
            .map_or(self.tick_deltas_ns.len() as u64, |b| b.ticks_total)
    }

    /// The first tick, ns since ready.
    pub fn first_tick_ns(&self) -> Option<u64> {
        match &self.bounded {
            Some(b) => b.first_tick_ns,
            None => self.tick_deltas_ns.first().copied(),
        }
    }

    /// Checks the invariants the analysis relies on (the input may come from
    /// a file), without copying the ticks.
    pub fn check(&self) -> Result<(), SamplesError> {
        if self.period_ns == 0 {
            return Err(SamplesError::ZeroPeriod);
        }
        if self.interval_ns == 0 {
            return Err(SamplesError::ZeroInterval);
        }
        let mut prev_end = 0;
        for (i, p) in self.pauses.iter().enumerate() {
            if p.end_ns < p.start_ns || p.start_ns < prev_end || p.end_ns > self.end_ns {
                return Err(SamplesError::BadPause(i + 1));
            }
            prev_end = p.end_ns;
        }
        if let Some(e) = &self.host_events {
            e.validate().map_err(SamplesError::HostEvents)?;
        }
        last_tick(&self.tick_deltas_ns).map(|_| ())
    }

    /// Checks the invariants the analysis relies on and returns the decoded
    /// tick times.
    pub fn validate(&self) -> Result<Vec<u64>, SamplesError> {
        self.check()?;
        decode_ticks(&self.tick_deltas_ns)
    }

    /// [`RawSamples::analyze`] without a second copy of the ticks: they are
    /// decoded in place for the analysis and encoded back after it (a saved
    /// record of 10^7 ticks then costs their 80 MB once, not twice).
    pub fn analyze_in_place(&mut self) -> Result<Analysis, SamplesError> {
        self.check()?;
        let mut ticks = std::mem::take(&mut self.tick_deltas_ns);
        decode_in_place(&mut ticks);
        let analysis = self.analyze_ticks(&ticks);
        encode_in_place(&mut ticks);
        self.tick_deltas_ns = ticks;
        Ok(analysis)
    }

    /// Runs the analysis on these samples (the one code path of live and
    /// saved runs).
    pub fn analyze(&self) -> Result<Analysis, SamplesError> {
        let ticks = self.validate()?;
        Ok(self.analyze_ticks(&ticks))
    }

    /// The analysis of these samples with their ticks decoded (`ticks`).
    fn analyze_ticks(&self, ticks: &[u64]) -> Analysis {
        // Sorted already (a loaded record is checked for it): borrowed, so
        // a day's marks are not copied.
        let marks: std::borrow::Cow<[HostMark]> = if self.host_marks.is_sorted_by_key(|m| m.t_ns) {
            std::borrow::Cow::Borrowed(&self.host_marks)
        } else {
            let mut m = self.host_marks.clone();
            m.sort_by_key(|m| m.t_ns);
            std::borrow::Cow::Owned(m)
        };
        let s = Samples {
            period_ns: self.period_ns,
            interval_ns: self.interval_ns,
            end_ns: self.end_ns,
            ticks_ns: ticks,
            pauses: &self.pauses,
            host: &marks,
            host_scope: self.host_scope,
            host_events: self.host_events.as_ref(),
        };
        match &self.bounded {
            Some(b) => b.analyze(&s),
            None => figures::analyze(&s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(ticks: &[u64], pauses: Vec<PauseSpan>, end: u64) -> RawSamples {
        RawSamples {
            period_ns: 1_000_000,
            interval_ns: 1_000_000_000,
            end_ns: end,
            tick_deltas_ns: encode_ticks(ticks),
            pauses,
            host_marks: Vec::new(),
            host_scope: Scope::Vcpu,
            host_events: None,
            bounded: None,
        }
    }

    #[test]
    fn ticks_round_trip() {
        let ticks = vec![5, 1_000_005, 2_000_100, 2_000_100, 9_999_999_999];
        assert_eq!(decode_ticks(&encode_ticks(&ticks)).unwrap(), ticks);
        assert_eq!(
            decode_ticks(&[u64::MAX, 1]).unwrap_err(),
            SamplesError::Overflow
        );
    }

    #[test]
    fn analysis_matches_the_live_one() {
        let ticks: Vec<u64> = (0..3000).map(|i| i * 1_000_000 + 300).collect();
        let pauses = [PauseSpan {
            start_ns: 1_000_000_000,
            end_ns: 2_000_000_000,
        }];
        let live = figures::analyze(&Samples {
            period_ns: 1_000_000,
            interval_ns: 1_000_000_000,
            end_ns: 3_000_000_000,
            ticks_ns: &ticks,
            pauses: &pauses,
            host: &[],
            host_scope: Scope::Vcpu,
            host_events: None,
        });
        let saved = raw(&ticks, pauses.to_vec(), 3_000_000_000);
        let json = serde_json::to_string(&saved).unwrap();
        let back: RawSamples = serde_json::from_str(&json).unwrap();
        assert_eq!(back.analyze().unwrap(), live);
    }

    #[test]
    fn rejects_bad_pauses_and_zero_period() {
        let bad = raw(
            &[],
            vec![PauseSpan {
                start_ns: 10,
                end_ns: 5,
            }],
            100,
        );
        assert_eq!(bad.analyze().unwrap_err(), SamplesError::BadPause(1));
        let past_end = raw(
            &[],
            vec![PauseSpan {
                start_ns: 10,
                end_ns: 500,
            }],
            100,
        );
        assert_eq!(past_end.analyze().unwrap_err(), SamplesError::BadPause(1));
        let mut zero = raw(&[], vec![], 100);
        zero.period_ns = 0;
        assert_eq!(zero.analyze().unwrap_err(), SamplesError::ZeroPeriod);
    }
}
