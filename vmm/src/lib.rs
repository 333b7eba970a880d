//! tickburst: a small KVM VMM that measures what a pause of a vCPU does to the
//! guest's periodic LAPIC timer.
//!
//! Layers, lowest first; a module imports only from its own layer or lower
//! ones (`tests/layers.rs` checks it): [`arch`] (x86 boot state) <
//! [`vstate`] (VM, vCPU threads, guest slots) < [`host`] (host probes) <
//! [`pause`] (pause methods) < [`session`] (run, watch, sweep, check,
//! doctor, top) < [`output`] (live tables, reports, plots) < [`cli`].
//!
//! Data flows one way: guest ring -> [`session::collector`] -> samples ->
//! [`analysis`] (pure) -> [`record`] -> report; live events go from the
//! session to an observer ([`session::observer::RunObserver`]) that
//! [`output::table::TablePrinter`] implements, never back.
//!
//! Everything that only analyses data, and the record itself, is the
//! `tickburst-analysis` crate (no KVM, no perf); its modules are re-exported
//! here under their old paths.

#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub use tickburst_analysis::{
    bpftrace, figures, irq_runs, judge, limits, load, model, names, report, samples, units,
    validate, vcpus, verdict,
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
pub mod cli;
pub mod host;
pub mod output;
pub mod pause;
pub mod session;
pub mod vstate;
