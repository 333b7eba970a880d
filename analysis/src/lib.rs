//! tickburst's pure analysis: the saved record and everything that reads,
//! checks, analyses, judges and reports it. No KVM, no perf, no plotting:
//! the `tickburst` crate runs the VM and the probes and hands their data here.
//!
//! Modules, bottom up (each uses only those above it):
//! - data of the run: [`units`], [`verdict`], [`limits`], [`kstats`],
//!   [`collector`], [`probes`], [`irq_runs`];
//! - figures: [`analysis`], [`host`], [`samples`], [`vcpus`], [`sweep`],
//!   [`bpftrace`], [`top`] (the rows of `tickburst top`), [`top_fold`];
//! - the record: [`record`] (its type), [`validate`] and [`load`] (reading an
//!   untrusted one), [`report`] (table, JSON, KTAP), [`judge`] (reanalysis,
//!   verdict, sweep summary), [`model`].

pub mod analysis;
pub mod bpftrace;
pub mod collector;
pub mod host;
pub mod irq_runs;
pub mod judge;
pub mod kstats;
pub mod limits;
pub mod load;
pub mod model;
pub mod probes;
pub mod record;
pub mod report;
pub mod samples;
pub mod sweep;
pub mod top;
pub mod top_fold;
pub mod units;
pub mod validate;
pub mod vcpus;
pub mod verdict;
