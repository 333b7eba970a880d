//! The host side of a run: the probes, the host marks read every 10 ms,
//! and their thinning to what the analysis will look at.

use crate::host::probes::HostProbes;
use tickburst_analysis::figures::{HostMark, PauseSpan};
use tickburst_analysis::host_thin::{self, MarkThinner};
use tickburst_analysis::names::Scope;

/// How often host counts are read.
pub const HOST_MARK_NS: u64 = 10_000_000;
/// How often the host data is thinned.
pub const THIN_EVERY_NS: u64 = 100_000_000;

/// The host's probes and the marks read from them.
pub(super) struct HostTrack {
    /// The opened probes.
    pub(super) probes: HostProbes,
    /// Host marks: those the analysis looks at, and the newest ones.
    pub(super) marks: MarkThinner,
    /// What the timer counts cover.
    pub(super) scope: Scope,
    /// When the next mark is due, ns since the epoch.
    next_mark_ns: u64,
    /// When the host data was last thinned.
    thinned_ns: u64,
}

impl HostTrack {
    /// The track of `probes`, thinned to report windows of `interval_ns`.
    pub(super) fn new(probes: HostProbes, interval_ns: u64) -> HostTrack {
        let scope = probes.report().sw_timer_scope.unwrap_or(Scope::Vcpu);
        HostTrack {
            probes,
            marks: MarkThinner::new(interval_ns),
            scope,
            next_mark_ns: 0,
            thinned_ns: 0,
        }
    }

    /// Reads host counts when the next 10 ms mark is due (or `force`).
    /// `epoch_mono` is the CLOCK_MONOTONIC ns of the run's epoch.
    pub(super) fn mark(&mut self, now: u64, epoch_mono: u64, force: bool) {
        if self.probes.report().enabled.is_empty() || (!force && now < self.next_mark_ns) {
            return;
        }
        let counts = self.probes.read(epoch_mono);
        self.marks.push(HostMark { t_ns: now, counts });
        self.next_mark_ns = (now / HOST_MARK_NS + 1) * HOST_MARK_NS;
    }

    /// Every [`THIN_EVERY_NS`], drops the host marks and events that lie
    /// where the analysis will not look (see
    /// [`tickburst_analysis::host_thin`]): up to `before`, where the
    /// subject settled, away from its `pauses`.
    pub(super) fn thin(&mut self, now: u64, epoch_mono: u64, before: u64, pauses: &[PauseSpan]) {
        if now < self.thinned_ns.saturating_add(THIN_EVERY_NS) {
            return;
        }
        self.thinned_ns = now;
        self.marks.settle(before, pauses);
        self.probes
            .thin(epoch_mono, before, |t| host_thin::span_needed(pauses, t));
    }
}
