//! Counters of the tick collection and of the guest, as recorded. Data only:
//! the collector itself is `tickburst::session::collector`.

use serde::{Deserialize, Serialize};

/// Counters of what went wrong while collecting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectorStats {
    /// Ticks the guest wrote that were overwritten before the VMM read them.
    pub lost_ticks: u64,
    /// Times the head index went backwards (guest memory corrupted).
    pub head_regressions: u64,
    /// Timestamps outside the run (before the sync point or in the future).
    pub invalid_timestamps: u64,
    /// Timestamps earlier than the last one taken (dropped, so the ticks stay
    /// sorted).
    #[serde(default)]
    pub out_of_order: u64,
    /// Entries read in total.
    pub entries_read: u64,
    /// How far the drift-free clock (the guest TSC refitted to host time
    /// as the run goes) moved the newest tick from the conversion through
    /// the ready report alone, ns: the drift a single sync would have had.
    #[serde(default)]
    pub clock_adjust_ns: i64,
    /// The rate the conversion uses against `KVM_GET_TSC_KHZ`, parts per
    /// billion (positive: the TSC runs fast against CLOCK_MONOTONIC), as
    /// fitted from the host's own TSC read against its clock; `None` while
    /// the conversion is at `KVM_GET_TSC_KHZ` (no slope certain enough yet,
    /// or none plausible).
    #[serde(default)]
    pub clock_rate_ppb: Option<i64>,
    /// The clock's error at the last kick pause, ns: where the conversion
    /// put the vCPU's TSC read then (`KVM_GET_MSRS`, between two host clock
    /// reads) less the host time it was read at. `None` without a kick
    /// pause.
    #[serde(default)]
    pub clock_error_ns: Option<i64>,
    /// The largest such error over the run's kick pauses, ns (by size).
    #[serde(default)]
    pub clock_error_max_ns: Option<i64>,
}

impl CollectorStats {
    /// Notes the clock's error measured at a kick pause.
    pub fn note_clock_error(&mut self, error_ns: i64) {
        self.clock_error_ns = Some(error_ns);
        if self
            .clock_error_max_ns
            .is_none_or(|m| error_ns.unsigned_abs() > m.unsigned_abs())
        {
            self.clock_error_max_ns = Some(error_ns);
        }
    }
}

/// Counters the guest kept itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuestCounters {
    /// Timer interrupts the guest counted.
    pub tick_count: u64,
    /// Spurious interrupts.
    pub spurious_count: u64,
    /// CPUID loops of the exit-heavy self-test (`--idle self-test-exits`;
    /// absent from the record otherwise).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub exit_loops: u64,
}

/// Whether a counter is 0 (left out of the record).
fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_and_the_largest_clock_error() {
        let mut s = CollectorStats::default();
        for e in [3_000, -12_000, 5_000] {
            s.note_clock_error(e);
        }
        assert_eq!(s.clock_error_ns, Some(5_000));
        assert_eq!(s.clock_error_max_ns, Some(-12_000));
    }
}
