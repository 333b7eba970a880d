//! tickburst: a small KVM VMM that measures what a pause of a vCPU does to the
//! guest's periodic LAPIC timer.
//!
//! Data flows one way: guest ring ([`collector`]) -> samples ->
//! [`analysis`] (pure) -> [`record`] / report. [`run`] drives one experiment.

pub mod analysis;
pub mod arch;
pub mod bpftrace;
pub mod cgroup;
pub mod check;
pub mod cli;
pub mod collector;
pub mod doctor;
pub mod host;
pub mod irq_runs;
pub mod kstats;
pub mod model;
pub mod pause;
pub mod perf;
pub mod plot;
pub mod probes;
pub mod record;
pub mod report;
pub mod run;
pub mod samples;
pub mod supervisor;
pub mod sweep;
pub mod testing;
pub mod timer_sampler;
pub mod tracefs;
pub mod units;
pub mod validate;
pub mod vcpu;
pub mod vcpus;
pub mod verdict;
pub mod vm;
