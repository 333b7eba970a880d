//! Counters of the tick collection and of the guest, as recorded. Data only:
//! the collector itself is `tickburst::collector`.

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
}

/// Counters the guest kept itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuestCounters {
    /// Timer interrupts the guest counted.
    pub tick_count: u64,
    /// Spurious interrupts.
    pub spurious_count: u64,
}
