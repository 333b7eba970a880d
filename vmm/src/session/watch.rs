//! `watch`: pauses the VMM did not cause, found as gaps in the subject's
//! ticks, cross-checked with stalls of the VMM's own loop, and reported a
//! second after each resume.

use crate::session::config::WINDOW_SLACK_NS;
use crate::session::observer::RunObserver;
use tickburst_analysis::figures::{self, HostMark, PauseSpan, Samples};
use tickburst_analysis::names::Scope;
use tickburst_analysis::record::DetectedPause;
use tickburst_analysis::stream::TickStream;

/// A stall of the VMM's poll loop longer than this is recorded.
pub const VMM_STALL_NS: u64 = 50_000_000;

/// What a watch has found so far: the VMM's own stalls, the subject's gaps
/// taken as pauses, and how many of them were reported.
#[derive(Default)]
pub(super) struct Watch {
    /// When the poll loop last ran, ns since the epoch.
    last_poll_ns: u64,
    /// Spans the poll loop itself stalled (the whole VMM stopped).
    stalls: Vec<PauseSpan>,
    /// The subject's gaps already taken as detected pauses.
    scanned: usize,
    /// The pauses found so far.
    pub(super) detected: Vec<DetectedPause>,
    /// How many of them were reported.
    reported: usize,
}

/// What the subject has seen, for the figures of a detected pause.
pub(super) struct Seen<'s> {
    /// The subject's tick stream.
    pub(super) stream: &'s TickStream,
    /// The host marks so far.
    pub(super) host: &'s [HostMark],
    /// What the host counts cover.
    pub(super) host_scope: Scope,
    /// Nominal timer period.
    pub(super) period_ns: u64,
    /// Width of a report window.
    pub(super) interval_ns: u64,
}

impl Watch {
    /// The poll loop runs at `now`: a gap since its last run longer than
    /// [`VMM_STALL_NS`] is a stall of the whole VMM.
    pub(super) fn polled(&mut self, now: u64) {
        if now.saturating_sub(self.last_poll_ns) > VMM_STALL_NS {
            self.stalls.push(PauseSpan {
                start_ns: self.last_poll_ns,
                end_ns: now,
            });
        }
        self.last_poll_ns = now;
    }

    /// How many pauses were found so far.
    pub(super) fn found(&self) -> usize {
        self.detected.len()
    }

    /// The spans of the pauses found so far.
    pub(super) fn spans(&self) -> Vec<PauseSpan> {
        self.detected.iter().map(|d| d.span).collect()
    }

    /// Finds new gaps in the subject's ticks and reports each one a second
    /// after its resume (all of them when `flush`).
    pub(super) fn detect(
        &mut self,
        seen: &Seen,
        now: u64,
        flush: bool,
        observer: &mut dyn RunObserver,
    ) {
        let gaps = seen.stream.gaps();
        for &span in &gaps[self.scanned.min(gaps.len())..] {
            let vmm_stalled = self
                .stalls
                .iter()
                .any(|s| s.start_ns < span.end_ns && span.start_ns < s.end_ns);
            self.detected.push(DetectedPause { span, vmm_stalled });
        }
        self.scanned = gaps.len();
        while let Some(d) = self.detected.get(self.reported) {
            let after = d.span.end_ns + figures::AFTER_SPAN_NS + WINDOW_SLACK_NS;
            if !flush && after > now {
                break;
            }
            let spans = self.spans();
            let ticks = seen.stream.ticks_between(d.span.start_ns, now);
            let samples = Samples {
                period_ns: seen.period_ns,
                interval_ns: seen.interval_ns,
                end_ns: now,
                ticks_ns: &ticks,
                pauses: &spans,
                host: seen.host,
                host_scope: seen.host_scope,
                host_events: None,
            };
            let limit = spans
                .get(self.reported + 1)
                .map_or(now, |n| n.start_ns)
                .min(now);
            let stats = figures::pause_stats(&samples, &d.span, limit);
            observer.detected(self.reported, d, &stats);
            self.reported += 1;
        }
    }
}
