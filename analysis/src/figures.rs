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

pub use crate::host_counts::{
    host_between, marks_span, timer_backend, HostCounts, HostMark, TimerBackend, WindowHost,
    HOST_MARK_TOLERANCE_NS,
};
pub use crate::irq_runs::count_between;
use crate::irq_runs::HostEvents;
use crate::names::Scope;
pub use resume::catch_up_ns;
use resume::peak_count;
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
    pub host_scope: Scope,
    /// Every host timer event of our vCPU, when sampled: the per-pause host
    /// figures then come from these exact times, not the 10 ms marks.
    pub host_events: Option<&'a HostEvents>,
}

#[cfg(test)]
impl<'a> Samples<'a> {
    /// Test samples: 1 ms period, 1 s windows, ticks and pauses only.
    pub(crate) fn of_ticks(ticks: &'a [u64], pauses: &'a [PauseSpan], end_ns: u64) -> Samples<'a> {
        Samples {
            period_ns: 1_000_000,
            interval_ns: 1_000_000_000,
            end_ns,
            ticks_ns: ticks,
            pauses,
            host: &[],
            host_scope: Scope::Vcpu,
            host_events: None,
        }
    }
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
    window_counted(s, start, None)
}

/// [`window_at`] with the guest's ticks already counted (`None`: count them
/// in `s.ticks_ns`).
pub fn window_counted(s: &Samples, start: u64, guest_ticks: Option<u64>) -> Window {
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
        guest_ticks: guest_ticks.unwrap_or_else(|| count_between(s.ticks_ns, start, end)),
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
    // Sorted: the span's ticks are a prefix, borrowed, and their intervals
    // are read where they lie (a saved run of 10^7 ticks is not copied).
    let ticks = &s.ticks_ns[..s.ticks_ns.partition_point(|&t| t < span_end)];
    let gaps = || ticks.windows(2).map(|w| w[1].saturating_sub(w[0]));
    let rate_hz = match (ticks.first(), ticks.last()) {
        (Some(&first), Some(&last)) if ticks.len() >= 2 && last > first => {
            Some((ticks.len() - 1) as f64 * SECOND as f64 / (last - first) as f64)
        }
        _ => None,
    };
    let n = ticks.len().saturating_sub(1);
    let us = |v: Option<u64>| v.map(|ns| ns as f64 / 1_000.0);
    Steady {
        nominal_hz: SECOND as f64 / s.period_ns.max(1) as f64,
        rate_hz,
        ticks: ticks.len() as u64,
        interval_p50_us: us(percentile_of(gaps, n, 50.0)),
        interval_p99_us: us(percentile_of(gaps, n, 99.0)),
        interval_max_us: us(gaps().max()),
    }
}

/// [`percentile`] of the `len` values that `values()` yields, without
/// storing or sorting them: a radix selection, 16 bits a pass (four passes
/// over the values, 512 KiB of counts).
pub fn percentile_of<I: Iterator<Item = u64>>(
    values: impl Fn() -> I,
    len: usize,
    p: f64,
) -> Option<u64> {
    if len == 0 {
        return None;
    }
    let rank = ((p / 100.0) * len as f64).ceil() as usize;
    // The 0-based rank still to find among the values that share `prefix`.
    let mut k = rank.clamp(1, len) - 1;
    let mut prefix = 0u64;
    let mut counts = vec![0usize; 1 << 16];
    for pass in 0..4u32 {
        let shift = 48 - 16 * pass;
        let decided = if pass == 0 { 0 } else { !0u64 << (shift + 16) };
        counts.fill(0);
        for v in values().filter(|v| v & decided == prefix) {
            counts[((v >> shift) & 0xffff) as usize] += 1;
        }
        let mut digit = 0;
        for (d, &c) in counts.iter().enumerate() {
            if k < c {
                digit = d as u64;
                break;
            }
            k -= c;
        }
        prefix |= digit << shift;
    }
    Some(prefix)
}

/// Analyses one pause; `limit_ns` is where the post-resume span must stop
/// (next pause or end of run).
pub fn pause_stats(s: &Samples, pause: &PauseSpan, limit_ns: u64) -> PauseStats {
    pause_stats_within(s, pause, limit_ns, limit_ns)
}

/// [`pause_stats`] whose catch-up search also stops at `catch_limit_ns`
/// (where a bounded record's kept ticks end).
pub fn pause_stats_within(
    s: &Samples,
    pause: &PauseSpan,
    limit_ns: u64,
    catch_limit_ns: u64,
) -> PauseStats {
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
    // The ratio is over the span the count covers: from the marks, that of
    // the two marks taken (a span cut short by the next pause can be a few
    // ms, shorter than the 10 ms between marks: over it, a mark's count
    // read as several times the rate).
    let (host_first_1s, host_span) = match exact {
        Some(e) => (
            Some(e.callbacks_between(resume, after_end)),
            after_end.saturating_sub(resume),
        ),
        None => (
            host_between(s.host, resume, after_end, s.host_scope).and_then(|h| h.all.get()),
            marks_span(s.host, resume, after_end).unwrap_or(0),
        ),
    };
    let host_during = match exact {
        Some(e) => Some(e.callbacks_between(pause.start_ns, resume)),
        None => {
            host_between(s.host, pause.start_ns, resume, s.host_scope).and_then(|h| h.all.get())
        }
    };
    let longest = s
        .host_events
        .and_then(|e| e.longest_run(pause.start_ns, after_end));

    let expected_span = (after_end.saturating_sub(pause.start_ns)) / period;
    let received_span = count_between(s.ticks_ns, pause.start_ns, after_end);

    let peak_width = MS.max(period.saturating_mul(4));
    let peak = peak_count(s.ticks_ns, resume, after_end, peak_width);

    let catch_up_ms =
        catch_up_ns(s.ticks_ns, resume, catch_limit_ns.min(limit_ns), period).map(ns_to_ms);

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
        host_burst_ratio: host_first_1s.map(|n| second_ratio(n, host_span, periodf)),
        host_longest_run: s.host_events.map(|_| longest.map_or(0, |r| r.callbacks())),
        host_longest_run_ms: longest.map(|r| ns_to_ms(r.duration_ns())),
        host_longest_run_late_ms: longest.map(|r| ns_to_ms(r.late_ns())),
    }
}

/// The host's callbacks `n` over `span_ns` after a resume, as a ratio to a
/// second at `period`: a span cut short of the second (the next pause
/// began) has the rest of it counted at the nominal rate. Over a few ms a
/// handful of catch-up callbacks is not several times the rate of the
/// second the verdict speaks of; thousands still are.
fn second_ratio(n: u64, span_ns: u64, period: f64) -> f64 {
    let second = AFTER_SPAN_NS as f64 / period;
    let rest = AFTER_SPAN_NS.saturating_sub(span_ns) as f64 / period;
    if span_ns >= AFTER_SPAN_NS {
        n as f64 / (span_ns as f64 / period)
    } else {
        (n as f64 + rest) / second
    }
}

/// A gap between two ticks of at least this many periods is a pause that
/// `tickburst watch` reports.
pub const DETECT_GAP_PERIODS: u64 = 5;

/// Figures for each of `spans` (sorted, not overlapping), each one's
/// post-resume span cut at the next span's start or the end of the run. The
/// spans need not be `s.pauses`: a vCPU that kept running is measured over
/// the pauses of another to show what it did meanwhile.
pub fn pauses_over(s: &Samples, spans: &[PauseSpan]) -> Vec<PauseStats> {
    with_limits(spans, s.end_ns)
        .map(|(p, limit)| pause_stats(s, p, limit))
        .collect()
}

/// Each of `spans` (sorted) with where its post-resume span ends: the next
/// span's start or `end_ns`, whichever is first.
pub fn with_limits(spans: &[PauseSpan], end_ns: u64) -> impl Iterator<Item = (&PauseSpan, u64)> {
    spans.iter().enumerate().map(move |(i, p)| {
        let limit = spans
            .get(i + 1)
            .map_or(end_ns, |next| next.start_ns)
            .min(end_ns);
        (p, limit)
    })
}

/// Runs the whole analysis.
pub fn analyze(s: &Samples) -> Analysis {
    Analysis {
        windows: windows(s),
        steady: steady(s),
        pauses: pauses_over(s, s.pauses),
    }
}

mod resume;
#[cfg(test)]
mod tests;
