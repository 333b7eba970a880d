//! `watch`: pauses the VMM did not cause, found as gaps in the subject's
//! ticks, cross-checked with stalls of the VMM's own loop, and reported a
//! second after each resume.

use crate::session::live::{Live, WINDOW_SLACK_NS};
use crate::session::observer::RunObserver;
use tickburst_analysis::analysis::{self, PauseSpan, Samples};
use tickburst_analysis::record::DetectedPause;

impl Live<'_> {
    /// Finds new gaps in the subject's ticks and reports each one a second
    /// after its resume (all of them when `flush`).
    pub(super) fn detect(&mut self, now: u64, flush: bool, observer: &mut dyn RunObserver) {
        let stream = self.collectors[self.subject].stream();
        let gaps = stream.gaps();
        let period = self.cfg.period_ns;
        for &span in &gaps[self.scanned.min(gaps.len())..] {
            let vmm_stalled = self
                .stalls
                .iter()
                .any(|s| s.start_ns < span.end_ns && span.start_ns < s.end_ns);
            self.detected.push(DetectedPause { span, vmm_stalled });
        }
        self.scanned = gaps.len();
        while let Some(d) = self.detected.get(self.reported) {
            let after = d.span.end_ns + analysis::AFTER_SPAN_NS + WINDOW_SLACK_NS;
            if !flush && after > now {
                break;
            }
            let spans: Vec<PauseSpan> = self.detected.iter().map(|d| d.span).collect();
            let ticks = stream.ticks_between(d.span.start_ns, now);
            let samples = Samples {
                period_ns: period,
                interval_ns: self.cfg.interval_ns,
                end_ns: now,
                ticks_ns: &ticks,
                pauses: &spans,
                host: self.host_marks.marks(),
                host_scope: self.host_scope,
                host_events: None,
            };
            let limit = spans
                .get(self.reported + 1)
                .map_or(now, |n| n.start_ns)
                .min(now);
            let stats = analysis::pause_stats(&samples, &d.span, limit);
            observer.detected(self.reported, d, &stats);
            self.reported += 1;
        }
    }

    /// At the end of a watch: every pause reported, and each vCPU's pauses
    /// set to what its ticks show (the subject's: the detected ones).
    pub(super) fn finish_detection(&mut self, end_ns: u64, observer: &mut dyn RunObserver) {
        self.detect(end_ns, true, observer);
        let spans: Vec<PauseSpan> = self.detected.iter().map(|d| d.span).collect();
        for (i, pauses) in self.pauses.iter_mut().enumerate() {
            *pauses = if i == self.subject {
                spans.clone()
            } else {
                self.collectors[i].stream().gaps().to_vec()
            };
        }
    }
}
