//! Pure analysis of a run: no KVM, no clocks, only tick times and pause spans.
//!
//! All times are nanoseconds since the guest reported ready. Definitions (also
//! in the README):
//!
//! - **window**: `[k * interval, (k + 1) * interval)`; `expected_ticks` is the
//!   un-paused part of the window divided by the period.
//! - **steady rate**: ticks from the first tick to the first pause (or the end),
//!   `(n - 1) / (last - first)`; inter-tick intervals over the same span.
//! - per pause (`start`..`end`, the span the vCPU was out of `KVM_RUN`):
//!   - `guest_ticks_during`: ticks in `[start, end)`;
//!   - `ticks_first_100ms`, `ticks_first_1s`: ticks in `[end, end + 100 ms)`
//!     and `[end, end + 1 s)`;
//!   - `burst_ratio`: `ticks_first_100ms / (100 ms / period)`;
//!   - `peak_rate_ratio`: the most ticks in any window of width
//!     `W = max(1 ms, 4 periods)` starting at a tick in the first second after
//!     resume, divided by `W / period`;
//!   - `missed_ticks`: ticks a running guest would have had in
//!     `[start, end + 1 s)` minus the ticks received there, at least 0;
//!   - `catch_up_ms`: from `end` to the start of the first window of width
//!     `max(10 ms, 10 periods)` whose tick count is within 20% of nominal
//!     (`null` if that never happens before the next pause or the end).
//!
//! Spans after resume are cut at the next pause or the end of the run; a cut
//! span is flagged `truncated`.

pub use crate::irq_runs::count_between;
use crate::irq_runs::HostEvents;
use crate::kstats::VcpuStats;
use serde::{Deserialize, Serialize};

const MS: u64 = 1_000_000;
const SECOND: u64 = 1_000 * MS;
/// Span after resume for `ticks_first_100ms` and `burst_ratio`.
pub const BURST_SPAN_NS: u64 = 100 * MS;
/// Span after resume for `ticks_first_1s`, `peak_rate_ratio`, `missed_ticks`.
pub const AFTER_SPAN_NS: u64 = SECOND;
/// Relative tolerance of "back to nominal" for `catch_up_ms`.
pub const CATCH_UP_TOLERANCE: f64 = 0.2;

/// A span during which the vCPU was paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseSpan {
    /// When the vCPU left guest mode.
    pub start_ns: u64,
    /// When it re-entered (the end of the run for a pause cut short).
    pub end_ns: u64,
}

/// Cumulative host counts at one moment (from [`crate::probes`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCounts {
    /// sw timer callbacks (`apic_timer_fn`), `None` when not probed.
    pub sw_timer: Option<u64>,
    /// hv timer expiries, `None` when not available.
    pub hv_timer: Option<u64>,
    /// vCPU KVM stats.
    pub stats: VcpuStats,
}

/// Host counts read at `t_ns` (the collector takes one every 10 ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostMark {
    /// When, ns since ready.
    pub t_ns: u64,
    /// Cumulative counts then.
    pub counts: HostCounts,
}

/// Host-side counts over a window (`null` where not measured).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowHost {
    /// sw timer callbacks.
    pub sw_timer: Option<u64>,
    /// hv timer expiries (`null`: not available on this host).
    pub hv_timer: Option<u64>,
    /// `sw_timer + hv_timer` (the bug report's all_count).
    pub all: Option<u64>,
    /// Interrupts KVM injected into our vCPU.
    pub irq_injections: Option<u64>,
    /// Exits of our vCPU.
    pub exits: Option<u64>,
    /// HLT exits of our vCPU.
    pub halt_exits: Option<u64>,
    /// Scope of the timer counts: `vcpu`, or `host-wide` when the hrtimer of
    /// our vCPU could not be told apart.
    pub scope: String,
}

/// A host mark is used for a time only if it is this close to it. While the
/// whole VMM is stopped (sigstop, freeze) no marks are taken, so windows that
/// begin or end inside such a pause have no host counts (`null`, shown as
/// `n/a`) rather than counts smeared over the next window.
pub const HOST_MARK_TOLERANCE_NS: u64 = 50 * MS;

/// The counts of the mark nearest to `t`, if one is within the tolerance.
fn counts_at(marks: &[HostMark], t: u64) -> Option<&HostCounts> {
    let i = marks.partition_point(|m| m.t_ns < t);
    let after = marks.get(i);
    let before = i.checked_sub(1).and_then(|j| marks.get(j));
    [before, after]
        .into_iter()
        .flatten()
        .map(|m| (m.t_ns.abs_diff(t), m))
        .filter(|(d, _)| *d <= HOST_MARK_TOLERANCE_NS)
        .min_by_key(|(d, _)| *d)
        .map(|(_, m)| &m.counts)
}

fn sub(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    Some(a?.saturating_sub(b?))
}

/// Host counts between `from` and `to` (marks sorted by time).
pub fn host_between(marks: &[HostMark], from: u64, to: u64, scope: &str) -> Option<WindowHost> {
    let (a, b) = (counts_at(marks, from)?, counts_at(marks, to)?);
    let sw_timer = sub(b.sw_timer, a.sw_timer);
    let hv_timer = sub(b.hv_timer, a.hv_timer);
    Some(WindowHost {
        sw_timer,
        hv_timer,
        all: sw_timer.map(|sw| sw.saturating_add(hv_timer.unwrap_or(0))),
        irq_injections: sub(b.stats.irq_injections, a.stats.irq_injections),
        exits: sub(b.stats.exits, a.stats.exits),
        halt_exits: sub(b.stats.halt_exits, a.stats.halt_exits),
        scope: scope.to_string(),
    })
}

/// Which LAPIC timer back end KVM used (`host.timer_backend`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimerBackend {
    /// `hv`, `sw`, `mixed` or `unknown`.
    pub kind: String,
    /// Every `kvm_hv_timer_state` event: ms since ready, and `hv` (true) or sw.
    #[serde(deserialize_with = "crate::limits::switches")]
    pub switches: Vec<(f64, bool)>,
    /// Why it is `unknown`.
    pub reason: Option<String>,
    /// Went from hv to sw and stayed on sw (the unpatched-kernel fallback).
    pub fell_back_to_sw: bool,
    /// When it fell back for good: the first switch to sw after the last
    /// switch to hv, ms since ready.
    #[serde(default)]
    pub fallback_ms: Option<f64>,
}

impl TimerBackend {
    /// Whether the hv timer was in use right before `t_ms` (the last switch
    /// before it), `None` when no switch came before it. The switches are in
    /// time order (a loaded record is checked for it).
    pub fn hv_at(&self, t_ms: f64) -> Option<bool> {
        let n = self.switches.partition_point(|s| s.0 < t_ms);
        n.checked_sub(1)
            .and_then(|i| self.switches.get(i))
            .map(|s| s.1)
    }
}

/// Classifies the hv/sw switch events of a run (`None`: the probe was not on,
/// with the reason).
pub fn timer_backend(switches: Result<&[(f64, bool)], String>) -> TimerBackend {
    let unknown = |reason: String| TimerBackend {
        kind: "unknown".into(),
        switches: Vec::new(),
        reason: Some(reason),
        fell_back_to_sw: false,
        fallback_ms: None,
    };
    let switches = match switches {
        Ok(s) if !s.is_empty() => s,
        Ok(_) => return unknown("no kvm:kvm_hv_timer_state event was seen".into()),
        Err(why) => return unknown(why),
    };
    let any_hv = switches.iter().any(|s| s.1);
    let any_sw = switches.iter().any(|s| !s.1);
    let kind = match (any_hv, any_sw) {
        (true, false) => "hv",
        (false, true) => "sw",
        _ => "mixed",
    };
    let last_hv = switches.iter().rposition(|s| s.1);
    let fell_back_to_sw = last_hv.is_some() && switches.last().is_some_and(|s| !s.1);
    TimerBackend {
        kind: kind.into(),
        switches: switches.to_vec(),
        reason: None,
        fell_back_to_sw,
        fallback_ms: last_hv
            .filter(|_| fell_back_to_sw)
            .and_then(|i| switches.get(i + 1))
            .map(|s| s.0),
    }
}

/// What the analysis is computed from.
#[derive(Debug, Clone, Copy)]
pub struct Samples<'a> {
    /// Nominal timer period.
    pub period_ns: u64,
    /// Width of a report window.
    pub interval_ns: u64,
    /// End of the observed run.
    pub end_ns: u64,
    /// Tick times, sorted ascending.
    pub ticks_ns: &'a [u64],
    /// Pauses, sorted and not overlapping.
    pub pauses: &'a [PauseSpan],
    /// Host counts over time (empty without host probes).
    pub host: &'a [HostMark],
    /// Scope of the host timer counts.
    pub host_scope: &'a str,
    /// Every host timer event of our vCPU, when sampled: the per-pause host
    /// figures then come from these exact times, not the 10 ms marks.
    pub host_events: Option<&'a HostEvents>,
}

/// One report window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Window start, ms since ready.
    pub t_ms: f64,
    /// Window length, ms (the last window may be shorter).
    pub duration_ms: f64,
    /// Ticks the guest took in the window.
    pub guest_ticks: u64,
    /// Ticks a running guest takes in the un-paused part of the window.
    pub expected_ticks: f64,
    /// Whether any pause overlaps the window.
    pub paused: bool,
    /// Host-side counts (`null` without host probes).
    pub host: Option<WindowHost>,
}

/// Steady state before the first pause.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Steady {
    /// Nominal rate from the period.
    pub nominal_hz: f64,
    /// Measured rate (`null` with fewer than 2 ticks).
    pub rate_hz: Option<f64>,
    /// Ticks in the span.
    pub ticks: u64,
    /// Median inter-tick interval, us.
    pub interval_p50_us: Option<f64>,
    /// 99th percentile inter-tick interval, us.
    pub interval_p99_us: Option<f64>,
    /// Longest inter-tick interval, us.
    pub interval_max_us: Option<f64>,
}

/// What happened around one pause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PauseStats {
    /// Pause start, ms since ready.
    pub start_ms: f64,
    /// Pause end (resume), ms since ready.
    pub end_ms: f64,
    /// Ticks taken while paused.
    pub guest_ticks_during: u64,
    /// Nominal ticks lost over the pause and the first second after it.
    pub missed_ticks: u64,
    /// Ticks in the first 100 ms after resume.
    pub ticks_first_100ms: u64,
    /// Ticks in the first second after resume.
    pub ticks_first_1s: u64,
    /// `ticks_first_100ms` over its nominal count.
    pub burst_ratio: f64,
    /// Peak short-window rate in the first second over nominal.
    pub peak_rate_ratio: f64,
    /// Time from resume until the rate is within 20% of nominal.
    pub catch_up_ms: Option<f64>,
    /// The span after resume was cut short by the next pause or the end.
    pub truncated: bool,
    /// Host timer callbacks (sw + hv) while paused.
    pub host_callbacks_during: Option<u64>,
    /// Host timer callbacks (sw + hv) in the first second after resume.
    pub host_callbacks_first_1s: Option<u64>,
    /// `host_callbacks_first_1s` over the nominal count of that span.
    pub host_burst_ratio: Option<f64>,
    /// The most callbacks of our hrtimer inside one hard interrupt (one
    /// `now`), from the pause start to one second after resume; `null` where
    /// callbacks were not sampled (see [`crate::irq_runs`]).
    pub host_longest_run: Option<u64>,
    /// That run's duration, ms (first entry to last exit).
    #[serde(default)]
    pub host_longest_run_ms: Option<f64>,
    /// How late that run's first callback was (`now - expires`), ms.
    #[serde(default)]
    pub host_longest_run_late_ms: Option<f64>,
}

/// The whole analysis of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// Report windows.
    pub windows: Vec<Window>,
    /// Steady state.
    pub steady: Steady,
    /// One entry per pause.
    pub pauses: Vec<PauseStats>,
}

fn ns_to_ms(ns: u64) -> f64 {
    ns as f64 / MS as f64
}

/// Length of the overlap of `[a0, a1)` and `[b0, b1)`.
fn overlap(a0: u64, a1: u64, b0: u64, b1: u64) -> u64 {
    a1.min(b1).saturating_sub(a0.max(b0))
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The report window that starts at `start` (cut at the end of the run).
pub fn window_at(s: &Samples, start: u64) -> Window {
    let end = start
        .saturating_add(s.interval_ns.max(1))
        .min(s.end_ns)
        .max(start);
    let len = end - start;
    // Pauses are sorted and do not overlap: only those from the first one
    // ending after `start` can overlap the window.
    let first = s.pauses.partition_point(|p| p.end_ns <= start);
    let paused_ns: u64 = s.pauses[first..]
        .iter()
        .take_while(|p| p.start_ns < end)
        .map(|p| overlap(start, end, p.start_ns, p.end_ns))
        .fold(0, u64::saturating_add);
    let running_ns = len - paused_ns.min(len);
    Window {
        t_ms: ns_to_ms(start),
        duration_ms: ns_to_ms(len),
        guest_ticks: count_between(s.ticks_ns, start, end),
        expected_ticks: (running_ns as f64 / s.period_ns.max(1) as f64 * 10.0).round() / 10.0,
        paused: paused_ns > 0,
        host: host_between(s.host, start, end, s.host_scope),
    }
}

/// Splits the run into report windows.
pub fn windows(s: &Samples) -> Vec<Window> {
    let interval = s.interval_ns.max(1);
    (0..s.end_ns.div_ceil(interval))
        .map(|k| window_at(s, k.saturating_mul(interval)))
        .collect()
}

/// Steady state from the first tick to the first pause.
pub fn steady(s: &Samples) -> Steady {
    let span_end = s.pauses.first().map_or(s.end_ns, |p| p.start_ns);
    let ticks: Vec<u64> = s
        .ticks_ns
        .iter()
        .copied()
        .take_while(|&t| t < span_end)
        .collect();
    let mut gaps: Vec<u64> = ticks
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .collect();
    gaps.sort_unstable();
    let rate_hz = match (ticks.first(), ticks.last()) {
        (Some(&first), Some(&last)) if ticks.len() >= 2 && last > first => {
            Some((ticks.len() - 1) as f64 * SECOND as f64 / (last - first) as f64)
        }
        _ => None,
    };
    let us = |v: Option<u64>| v.map(|ns| ns as f64 / 1_000.0);
    Steady {
        nominal_hz: SECOND as f64 / s.period_ns.max(1) as f64,
        rate_hz,
        ticks: ticks.len() as u64,
        interval_p50_us: us(percentile(&gaps, 50.0)),
        interval_p99_us: us(percentile(&gaps, 99.0)),
        interval_max_us: us(gaps.last().copied()),
    }
}

/// Most ticks in a window of `width` starting at a tick within `[from, to)`.
fn peak_count(ticks: &[u64], from: u64, to: u64, width: u64) -> u64 {
    let lo = ticks.partition_point(|&t| t < from);
    let hi = ticks.partition_point(|&t| t < to).max(lo);
    let slice = &ticks[lo..hi];
    let mut best = 0;
    let mut j = 0;
    for i in 0..slice.len() {
        if j < i {
            j = i;
        }
        while j < slice.len() && slice[j] < slice[i].saturating_add(width) {
            j += 1;
        }
        best = best.max((j - i) as u64);
    }
    best
}

/// Analyses one pause; `limit_ns` is where the post-resume span must stop
/// (next pause or end of run).
pub fn pause_stats(s: &Samples, pause: &PauseSpan, limit_ns: u64) -> PauseStats {
    let period = s.period_ns.max(1);
    let periodf = period as f64;
    let resume = pause.end_ns;
    let after_end = resume.saturating_add(AFTER_SPAN_NS).min(limit_ns);
    let burst_end = resume.saturating_add(BURST_SPAN_NS).min(limit_ns);
    let ticks_first_100ms = count_between(s.ticks_ns, resume, burst_end);
    let ticks_first_1s = count_between(s.ticks_ns, resume, after_end);
    // Exact per-event times where every counted event was sampled (a storm
    // right at the resume edge is after it), else the 10 ms marks.
    let exact = s.host_events.filter(|e| e.complete());
    let host_first_1s = match exact {
        Some(e) => Some(e.callbacks_between(resume, after_end)),
        None => host_between(s.host, resume, after_end, s.host_scope).and_then(|h| h.all),
    };
    let host_during = match exact {
        Some(e) => Some(e.callbacks_between(pause.start_ns, resume)),
        None => host_between(s.host, pause.start_ns, resume, s.host_scope).and_then(|h| h.all),
    };
    let longest = s
        .host_events
        .and_then(|e| e.longest_run(pause.start_ns, after_end));

    let expected_span = (after_end.saturating_sub(pause.start_ns)) / period;
    let received_span = count_between(s.ticks_ns, pause.start_ns, after_end);

    let peak_width = MS.max(period.saturating_mul(4));
    let peak = peak_count(s.ticks_ns, resume, after_end, peak_width);

    let catch_width = (10 * MS).max(period.saturating_mul(10));
    let nominal = catch_width as f64 / periodf;
    let mut catch_up_ms = None;
    let mut w = resume;
    while let Some(w_end) = w.checked_add(catch_width).filter(|&e| e <= limit_ns) {
        let n = count_between(s.ticks_ns, w, w_end);
        if (n as f64 - nominal).abs() <= CATCH_UP_TOLERANCE * nominal {
            catch_up_ms = Some(ns_to_ms(w - resume));
            break;
        }
        // An empty window is never within the tolerance (nominal is at
        // least 10 ticks): go straight to the window of the next tick, so
        // the loop takes at most one step per tick.
        let next = if n == 0 {
            let i = s.ticks_ns.partition_point(|&t| t < w);
            s.ticks_ns.get(i).map_or(u64::MAX, |&t| t)
        } else {
            0
        };
        let skip = next.saturating_sub(w) / catch_width;
        w = w.saturating_add(catch_width.saturating_mul(skip.max(1)));
    }

    PauseStats {
        start_ms: ns_to_ms(pause.start_ns),
        end_ms: ns_to_ms(resume),
        guest_ticks_during: count_between(s.ticks_ns, pause.start_ns, resume),
        missed_ticks: expected_span.saturating_sub(received_span),
        ticks_first_100ms,
        ticks_first_1s,
        burst_ratio: ticks_first_100ms as f64 / (BURST_SPAN_NS as f64 / periodf),
        peak_rate_ratio: peak as f64 / (peak_width as f64 / periodf),
        catch_up_ms,
        truncated: after_end < resume.saturating_add(AFTER_SPAN_NS),
        host_callbacks_during: host_during,
        host_callbacks_first_1s: host_first_1s,
        host_burst_ratio: host_first_1s
            .map(|n| n as f64 / (after_end.saturating_sub(resume).max(1) as f64 / periodf)),
        host_longest_run: s.host_events.map(|_| longest.map_or(0, |r| r.callbacks())),
        host_longest_run_ms: longest.map(|r| ns_to_ms(r.duration_ns())),
        host_longest_run_late_ms: longest.map(|r| ns_to_ms(r.late_ns())),
    }
}

/// A gap between two ticks of at least this many periods is a pause that
/// `tickburst watch` reports.
pub const DETECT_GAP_PERIODS: u64 = 5;

/// Pauses seen only from the guest's ticks: every gap of at least
/// `min_periods` periods between consecutive ticks at index `from` or later.
/// The span starts one period after the last tick before the gap (when the
/// missing tick was due) and ends at the first tick after it.
pub fn detect_gaps(ticks: &[u64], from: usize, period_ns: u64, min_periods: u64) -> Vec<PauseSpan> {
    let min_gap = period_ns.max(1).saturating_mul(min_periods.max(1));
    ticks
        .windows(2)
        .skip(from.saturating_sub(1))
        .filter(|w| w[1].saturating_sub(w[0]) >= min_gap)
        .map(|w| PauseSpan {
            start_ns: w[0].saturating_add(period_ns).min(w[1]),
            end_ns: w[1],
        })
        .collect()
}

/// Figures for each of `spans` (sorted, not overlapping), each one's
/// post-resume span cut at the next span's start or the end of the run. The
/// spans need not be `s.pauses`: a vCPU that kept running is measured over
/// the pauses of another to show what it did meanwhile.
pub fn pauses_over(s: &Samples, spans: &[PauseSpan]) -> Vec<PauseStats> {
    spans
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let limit = spans
                .get(i + 1)
                .map_or(s.end_ns, |next| next.start_ns)
                .min(s.end_ns);
            pause_stats(s, p, limit)
        })
        .collect()
}

/// Runs the whole analysis.
pub fn analyze(s: &Samples) -> Analysis {
    Analysis {
        windows: windows(s),
        steady: steady(s),
        pauses: pauses_over(s, s.pauses),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ticks every `period` in `[from, to)`.
    fn ticks(from: u64, to: u64, period: u64) -> Vec<u64> {
        (0..)
            .map(|i| from + i * period)
            .take_while(|&t| t < to)
            .collect()
    }

    fn samples<'a>(ticks: &'a [u64], pauses: &'a [PauseSpan], end: u64) -> Samples<'a> {
        Samples {
            period_ns: MS,
            interval_ns: SECOND,
            end_ns: end,
            ticks_ns: ticks,
            pauses,
            host: &[],
            host_scope: "",
            host_events: None,
        }
    }

    #[test]
    fn steady_run_without_pause() {
        let t = ticks(MS, 3 * SECOND, MS);
        let a = analyze(&samples(&t, &[], 3 * SECOND));
        assert_eq!(a.windows.len(), 3);
        assert_eq!(a.windows[1].guest_ticks, 1000);
        assert_eq!(a.windows[1].expected_ticks, 1000.0);
        assert!(!a.windows[1].paused);
        let rate = a.steady.rate_hz.unwrap();
        assert!((rate - 1000.0).abs() < 1e-6, "{rate}");
        assert_eq!(a.steady.interval_p50_us, Some(1000.0));
        assert_eq!(a.steady.interval_max_us, Some(1000.0));
        assert!(a.pauses.is_empty());
    }

    #[test]
    fn pause_with_zero_ticks_and_one_coalesced_tick() {
        // sw-timer host: nothing during [2 s, 3 s), one coalesced tick at
        // resume, then the normal rate.
        let mut t = ticks(MS, 2 * SECOND, MS);
        t.push(3 * SECOND + 10_000);
        t.extend(ticks(3 * SECOND + MS, 5 * SECOND, MS));
        let p = [PauseSpan {
            start_ns: 2 * SECOND,
            end_ns: 3 * SECOND,
        }];
        let a = analyze(&samples(&t, &p, 5 * SECOND));
        let s = &a.pauses[0];
        assert_eq!(s.guest_ticks_during, 0);
        assert_eq!(s.ticks_first_100ms, 100);
        assert_eq!(s.ticks_first_1s, 1000);
        assert!((s.burst_ratio - 1.0).abs() < 1e-9);
        assert_eq!(s.missed_ticks, 1000);
        assert_eq!(s.catch_up_ms, Some(0.0));
        assert!(s.peak_rate_ratio <= 1.25 + 1e-9, "{}", s.peak_rate_ratio);
        assert!(!s.truncated);
        assert!(a.windows[2].paused);
        assert_eq!(a.windows[2].guest_ticks, 0);
        assert_eq!(a.windows[2].expected_ticks, 0.0);
        assert_eq!(a.windows[3].expected_ticks, 1000.0);
    }

    #[test]
    fn burst_after_resume_is_measured() {
        // A guest-visible storm: 1000 ticks replayed in the first 10 ms.
        let mut t = ticks(MS, SECOND, MS);
        let resume = 2 * SECOND;
        t.extend((0..1000).map(|i| resume + i * 10_000));
        t.extend(ticks(resume + 10 * MS, 4 * SECOND, MS));
        t.sort_unstable();
        let p = [PauseSpan {
            start_ns: SECOND,
            end_ns: resume,
        }];
        let a = analyze(&samples(&t, &p, 4 * SECOND));
        let s = &a.pauses[0];
        assert_eq!(s.ticks_first_100ms, 1090);
        assert!((s.burst_ratio - 10.9).abs() < 1e-9);
        assert!(s.peak_rate_ratio > 50.0, "{}", s.peak_rate_ratio);
        assert_eq!(s.missed_ticks, 10, "replayed ticks are not missed");
        assert_eq!(s.catch_up_ms, Some(10.0), "first 10 ms window is the storm");
    }

    #[test]
    fn jitter_shows_in_percentiles_not_rate() {
        let t: Vec<u64> = (0..2000u64)
            .map(|i| i * MS + if i % 10 == 0 { 300_000 } else { 0 })
            .collect();
        let a = analyze(&samples(&t, &[], 2 * SECOND));
        let st = &a.steady;
        assert_eq!(st.interval_p50_us, Some(1000.0));
        assert_eq!(st.interval_max_us, Some(1300.0));
        assert!(st.interval_p99_us.unwrap() >= 1000.0);
        assert!((st.rate_hz.unwrap() - 1000.0).abs() < 1.0);
    }

    #[test]
    fn dead_guest_never_catches_up() {
        let t = ticks(0, SECOND, MS);
        let p = [PauseSpan {
            start_ns: SECOND,
            end_ns: 2 * SECOND,
        }];
        let a = analyze(&samples(&t, &p, 4 * SECOND));
        let s = &a.pauses[0];
        assert_eq!(s.catch_up_ms, None);
        assert_eq!(s.ticks_first_1s, 0);
        assert_eq!(s.burst_ratio, 0.0);
        assert_eq!(s.missed_ticks, 2000);
    }

    #[test]
    fn truncated_and_empty_inputs() {
        let a = analyze(&samples(
            &[],
            &[PauseSpan {
                start_ns: 10,
                end_ns: 20,
            }],
            50,
        ));
        assert_eq!(a.steady.rate_hz, None);
        assert_eq!(a.steady.interval_p50_us, None);
        assert!(a.pauses[0].truncated);
        assert_eq!(a.windows.len(), 1);
        let none = analyze(&samples(&[], &[], 0));
        assert!(none.windows.is_empty());
    }

    #[test]
    fn second_pause_cuts_the_first_ones_after_span() {
        let t = ticks(0, 5 * SECOND, MS);
        let p = [
            PauseSpan {
                start_ns: SECOND,
                end_ns: SECOND + 100 * MS,
            },
            PauseSpan {
                start_ns: SECOND + 500 * MS,
                end_ns: 2 * SECOND,
            },
        ];
        let a = analyze(&samples(&t, &p, 5 * SECOND));
        assert!(a.pauses[0].truncated);
        assert!(!a.pauses[1].truncated);
        assert_eq!(a.pauses.len(), 2);
    }

    #[test]
    fn hostile_extremes_do_not_panic() {
        let t = [0, 1, u64::MAX / 2, u64::MAX - 1];
        let p = [PauseSpan {
            start_ns: u64::MAX / 4,
            end_ns: u64::MAX / 4 + 1,
        }];
        let s = Samples {
            period_ns: 0,
            interval_ns: 0,
            end_ns: 10,
            ticks_ns: &t,
            pauses: &p,
            host: &[],
            host_scope: "",
            host_events: None,
        };
        let a = analyze(&s);
        assert_eq!(a.windows.len(), 10);
        assert_eq!(a.pauses.len(), 1);
    }

    #[test]
    fn detects_gaps_of_five_periods_incrementally() {
        let mut t: Vec<u64> = (0..100).map(|i| i * MS).collect();
        t.extend((0..100).map(|i| 5 * SECOND + i * MS));
        t.push(5 * SECOND + 103 * MS); // 4-period gap: not a pause
        t.push(5 * SECOND + 108 * MS); // 5-period gap: a pause
        let all = detect_gaps(&t, 0, MS, DETECT_GAP_PERIODS);
        assert_eq!(
            all,
            [
                PauseSpan {
                    start_ns: 100 * MS,
                    end_ns: 5 * SECOND
                },
                PauseSpan {
                    start_ns: 5 * SECOND + 104 * MS,
                    end_ns: 5 * SECOND + 108 * MS
                }
            ]
        );
        // Scanning from index 101 sees only the second one (ticks 100..).
        assert_eq!(detect_gaps(&t, 101, MS, DETECT_GAP_PERIODS).len(), 1);
        assert!(detect_gaps(&t, t.len(), MS, DETECT_GAP_PERIODS).is_empty());
        assert!(detect_gaps(&[], 0, MS, 5).is_empty());
        assert!(detect_gaps(&[1], 0, 0, 0).is_empty());
    }

    #[test]
    fn percentile_nearest_rank() {
        let v = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!(percentile(&v, 50.0), Some(5));
        assert_eq!(percentile(&v, 99.0), Some(10));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[], 50.0), None);
    }

    fn mark(t_ns: u64, sw: u64, irq: u64) -> HostMark {
        HostMark {
            t_ns,
            counts: HostCounts {
                sw_timer: Some(sw),
                hv_timer: None,
                stats: VcpuStats {
                    irq_injections: Some(irq),
                    exits: Some(2 * irq),
                    halt_exits: Some(irq),
                    signal_exits: Some(0),
                },
            },
        }
    }

    #[test]
    fn host_counts_per_window_and_after_resume() {
        // sw timer keeps firing at 1 kHz through the pause (sw-only host);
        // injections stop while paused.
        let marks: Vec<HostMark> = (0..=40)
            .map(|k| {
                let t = k * 100 * MS;
                let irq = if t <= 2 * SECOND {
                    t / MS
                } else if t <= 3 * SECOND {
                    2000
                } else {
                    2000 + (t - 3 * SECOND) / MS
                };
                mark(t, t / MS, irq)
            })
            .collect();
        let t: Vec<u64> = (0..4000)
            .map(|i| i * MS)
            .filter(|&x| !(2 * SECOND..3 * SECOND).contains(&x))
            .collect();
        let p = [PauseSpan {
            start_ns: 2 * SECOND,
            end_ns: 3 * SECOND,
        }];
        let s = Samples {
            host: &marks,
            host_scope: "vcpu",
            host_events: None,
            ..samples(&t, &p, 4 * SECOND)
        };
        let a = analyze(&s);
        let h = a.windows[2].host.as_ref().unwrap();
        assert_eq!(
            (h.sw_timer, h.all, h.hv_timer),
            (Some(1000), Some(1000), None)
        );
        assert_eq!(h.irq_injections, Some(0));
        assert_eq!(h.halt_exits, Some(0));
        assert_eq!(h.scope, "vcpu");
        assert_eq!(
            a.windows[1].host.as_ref().unwrap().irq_injections,
            Some(1000)
        );
        let ps = &a.pauses[0];
        assert_eq!(ps.host_callbacks_during, Some(1000));
        assert_eq!(ps.host_callbacks_first_1s, Some(1000));
        assert!((ps.host_burst_ratio.unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(ps.host_longest_run, None);
        // The VMM stopped (marks only at the pause edges, none in between):
        // a span that starts or ends inside has no host counts; the pause
        // figures come from the edge marks.
        let gap: Vec<HostMark> = marks
            .iter()
            .copied()
            .filter(|m| !(2_050 * MS..2_950 * MS).contains(&m.t_ns))
            .collect();
        let g = analyze(&Samples { host: &gap, ..s });
        assert!(host_between(&gap, 2_500 * MS, 3_000 * MS, "vcpu").is_none());
        assert_eq!(g.windows[2].host.as_ref().unwrap().sw_timer, Some(1000));
        assert_eq!(g.pauses[0].host_callbacks_during, Some(1000));
        // Without marks: no host figures at all, not zeros.
        let bare = analyze(&samples(&t, &p, 4 * SECOND));
        assert!(bare.windows[0].host.is_none());
        assert_eq!(bare.pauses[0].host_callbacks_first_1s, None);
    }

    #[test]
    fn host_burst_like_the_bug_report() {
        // Unpatched kernel: 0 callbacks for 10 s, then 51541 in the first second.
        let marks = [
            mark(0, 0, 0),
            mark(10 * SECOND, 0, 0),
            mark(11 * SECOND, 51_541, 1),
        ];
        let p = [PauseSpan {
            start_ns: 0,
            end_ns: 10 * SECOND,
        }];
        let s = Samples {
            host: &marks,
            host_scope: "vcpu",
            host_events: None,
            period_ns: 209_731,
            ..samples(&[], &p, 12 * SECOND)
        };
        let ps = &analyze(&s).pauses[0];
        assert_eq!(ps.host_callbacks_during, Some(0));
        assert_eq!(ps.host_callbacks_first_1s, Some(51_541));
        assert!(ps.host_burst_ratio.unwrap() > 10.0);
    }

    #[test]
    fn classifies_timer_backends() {
        assert_eq!(timer_backend(Ok(&[(0.5, false)])).kind, "sw");
        assert_eq!(timer_backend(Ok(&[(0.5, true)])).kind, "hv");
        let fallback = timer_backend(Ok(&[(0.5, true), (10_000.0, false)]));
        assert_eq!(fallback.kind, "mixed");
        assert!(fallback.fell_back_to_sw);
        assert_eq!(fallback.fallback_ms, Some(10_000.0));
        assert_eq!(fallback.hv_at(9_999.0), Some(true));
        assert_eq!(fallback.hv_at(10_001.0), Some(false));
        assert_eq!(fallback.hv_at(0.1), None);
        let recovered = timer_backend(Ok(&[(0.5, true), (10.0, false), (11.0, true)]));
        assert!(!recovered.fell_back_to_sw);
        assert_eq!(recovered.fallback_ms, None);
        // HLT idle: hv/sw each tick, then the storm's fallback stays.
        let hlt = timer_backend(Ok(&[
            (1.0, false),
            (1.1, true),
            (2.0, false),
            (2.1, true),
            (3.0, false),
        ]));
        assert_eq!(hlt.fallback_ms, Some(3.0));
        let none = timer_backend(Ok(&[]));
        assert_eq!(none.kind, "unknown");
        assert!(none.reason.unwrap().contains("no kvm:kvm_hv_timer_state"));
        assert_eq!(
            timer_backend(Err("denied".into())).reason.as_deref(),
            Some("denied")
        );
    }
}
