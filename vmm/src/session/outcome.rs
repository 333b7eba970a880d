//! What a session produced; how it ended is the record's
//! [`Outcome`](tickburst_analysis::names::Outcome).

use tickburst_analysis::names::Outcome;
use tickburst_analysis::record::Record;

/// A finished (or cut short) run.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// How it ended (also `record.outcome`; why it failed is
    /// `record.error`).
    pub outcome: Outcome,
    /// Everything measured.
    pub record: Record,
}
