//! Host probes: facts about the host, tracefs, perf tracepoints, KVM
//! binary stats, and the per-CPU samplers of our vCPU's hrtimer.

pub mod facts;
pub mod kstats;
pub mod perf;
pub mod probes;
pub mod timer_sampler;
pub mod tracefs;
