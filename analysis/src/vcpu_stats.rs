//! Per-vCPU KVM binary stats as recorded. Data only: reading them from
//! `KVM_GET_STATS_FD` is `tickburst::host::kstats`.

use crate::count::Count;
use serde::{Deserialize, Serialize};

/// Cumulative values of `STAT_NAMES` (absent stats are none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuStats {
    /// Interrupts injected into the guest.
    pub irq_injections: Count,
    /// All exits to the host.
    pub exits: Count,
    /// Exits because the guest halted.
    pub halt_exits: Count,
    /// Exits because a signal was pending (kicks).
    pub signal_exits: Count,
}
