//! tickburst's pure analysis: the saved record and everything that reads,
//! checks, analyses, judges and reports it. No KVM, no perf, no plotting:
//! the `tickburst` crate runs the VM and the probes and hands their data here.
//!
//! Modules, bottom up (each uses only those above it):
//! - names and data of the run: [`names`] (every mode, outcome and probe
//!   name), [`units`], [`count`], [`verdict`], [`limits`], [`vcpu_stats`], [`collection`],
//!   [`probe_report`], [`irq_runs`], [`host_counts`];
//! - figures: [`figures`], [`host`], [`samples`], [`vcpus`], [`sweep`],
//!   [`bpftrace`], [`top`] (the rows of `tickburst top`), [`top_fold`];
//! - runs of any length in bounded memory: [`histogram`] (inter-tick
//!   intervals), [`bounded`] (the record's per-window counts and steady
//!   statistics), [`stream`] (ticks as they come: counted, kept only around
//!   pauses), [`host_thin`] (host marks and events kept where read),
//!   [`periodic`] (`--summary-every`);
//! - the record: [`record`] (its type, its [`format_seen`]), [`capped_text`],
//!   [`validate`] and [`load`] (reading an untrusted one), [`report`] (table, JSON, KTAP), [`judge`] (reanalysis,
//!   verdict, sweep summary), [`model`].

#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod bounded;
pub mod bpftrace;
pub mod capped_text;
pub mod collection;
pub mod count;
pub mod figures;
pub mod format_seen;
pub mod histogram;
pub mod host;
pub mod host_counts;
pub mod host_thin;
pub mod irq_runs;
pub mod judge;
pub mod limits;
pub mod load;
pub mod model;
pub mod names;
pub mod periodic;
pub mod probe_report;
pub mod record;
pub mod report;
pub mod samples;
pub mod stream;
pub mod sweep;
pub mod top;
pub mod top_fold;
pub mod units;
pub mod validate;
pub mod vcpu_stats;
pub mod vcpus;
pub mod verdict;
