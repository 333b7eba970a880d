//! What a session tells whoever watches it while it runs. Events flow one
//! way: the session calls an observer; the printer in `output` is one.

use tickburst_analysis::figures::{PauseSpan, PauseStats, Window};
use tickburst_analysis::periodic::PeriodicSummary;
use tickburst_analysis::record::DetectedPause;

/// Things a caller watches while a run goes on.
pub trait RunObserver {
    /// A report window of the subject vCPU is complete; `vcpu_ticks` has
    /// every vCPU's ticks in the same window (empty with one vCPU).
    fn window(&mut self, _window: &Window, _vcpu_ticks: &[u64]) {}
    /// A message about progress (pause, resume, ready).
    fn note(&mut self, _text: &str) {}
    /// `watch`: a detected pause, one second after its resume (or at the end).
    fn detected(&mut self, _index: usize, _pause: &DetectedPause, _stats: &PauseStats) {}
    /// `run`/`sweep`: pause `index` (of the subject) and its figures, once
    /// its observation after the resume is over.
    fn paused(&mut self, _index: usize, _span: &PauseSpan, _stats: &PauseStats) {}
    /// Every `--summary-every`: the span's rate, worst lateness, pauses.
    fn summary(&mut self, _summary: &PeriodicSummary) {}
}

/// Two observers told the same things (the table and `--json-stream`).
pub struct Both<'a>(pub &'a mut dyn RunObserver, pub &'a mut dyn RunObserver);

impl RunObserver for Both<'_> {
    fn window(&mut self, window: &Window, vcpu_ticks: &[u64]) {
        self.0.window(window, vcpu_ticks);
        self.1.window(window, vcpu_ticks);
    }
    fn note(&mut self, text: &str) {
        self.0.note(text);
        self.1.note(text);
    }
    fn detected(&mut self, index: usize, pause: &DetectedPause, stats: &PauseStats) {
        self.0.detected(index, pause, stats);
        self.1.detected(index, pause, stats);
    }
    fn paused(&mut self, index: usize, span: &PauseSpan, stats: &PauseStats) {
        self.0.paused(index, span, stats);
        self.1.paused(index, span, stats);
    }
    fn summary(&mut self, summary: &PeriodicSummary) {
        self.0.summary(summary);
        self.1.summary(summary);
    }
}

/// An observer that ignores everything.
pub struct Quiet;
impl RunObserver for Quiet {}
