//! How a session ended, and what it produced.

use tickburst_analysis::names;
use tickburst_analysis::record::Record;

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every cycle ran.
    Completed,
    /// Ctrl-C / SIGTERM ended it early; the record is partial.
    Interrupted,
    /// The guest or vCPU failed after it was ready; the record is partial.
    Failed(String),
}

impl Outcome {
    /// The outcome as recorded (`outcome` in the JSON).
    pub fn recorded(&self) -> names::Outcome {
        match self {
            Outcome::Completed => names::Outcome::Completed,
            Outcome::Interrupted => names::Outcome::Interrupted,
            Outcome::Failed(_) => names::Outcome::Failed,
        }
    }

    /// Why it failed, when it did (`error` in the JSON).
    pub fn error(&self) -> Option<String> {
        match self {
            Outcome::Failed(why) => Some(why.clone()),
            _ => None,
        }
    }
}

/// A finished (or cut short) run.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// How it ended.
    pub outcome: Outcome,
    /// Everything measured.
    pub record: Record,
}
