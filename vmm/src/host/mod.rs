//! Host probes: facts about the host, its clock, tracefs, perf tracepoints,
//! KVM binary stats, the per-CPU samplers of our vCPU's hrtimer, and the
//! probes of one run that combine them.
//!
//! A host probe that is only looked up (a kallsyms lookup, say) belongs
//! here too, next to [`tracefs`], which finds `apic_timer_fn` today.

pub mod clock;
pub mod facts;
pub mod hv_timer;
pub mod kstats;
pub mod perf;
pub mod probe_open;
pub mod probes;
pub mod timer_sampler;
pub mod tracefs;
