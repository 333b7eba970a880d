//! tickburst: a small KVM VMM that measures what a pause of a vCPU does to the
//! guest's periodic LAPIC timer.
//!
//! Data flows one way: guest ring ([`collector`]) -> samples ->
//! [`analysis`] (pure) -> [`record`] / report. [`run`] drives one experiment.
//!
//! Everything that only analyses data, and the record itself, is the
//! `tickburst-analysis` crate (no KVM, no perf); its modules are re-exported
//! here under their old paths.

pub use tickburst_analysis::{
    analysis, bpftrace, irq_runs, judge, limits, load, model, report, samples, units, validate,
    vcpus, verdict,
};

/// The saved record ([`tickburst_analysis::record`]) and its loader's error.
pub mod record {
    pub use tickburst_analysis::load::LoadError;
    pub use tickburst_analysis::record::*;
}

/// Burst against pause length ([`tickburst_analysis::sweep`]) and the summary
/// of a judged record.
pub mod sweep {
    pub use tickburst_analysis::judge::summarize;
    pub use tickburst_analysis::sweep::*;
}

pub mod arch;
pub mod cgroup;
pub mod check;
pub mod cli;
pub mod collector;
pub mod doctor;
pub mod host;
pub mod kstats;
pub mod pause;
pub mod perf;
pub mod plot;
pub mod probes;
pub mod run;
pub mod supervisor;
pub mod testing;
pub mod timer_sampler;
pub mod top;
pub mod tracefs;
pub mod vcpu;
pub mod vm;
