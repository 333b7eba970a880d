//! What a session tells whoever watches it while it runs. Events flow one
//! way: the session calls an observer; the printer in `output` is one.

use tickburst_analysis::analysis::{PauseStats, Window};
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
}

/// An observer that ignores everything.
pub struct Quiet;
impl RunObserver for Quiet {}
