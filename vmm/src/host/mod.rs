//! Host probes: facts about the host, its clock, tracefs, kernel symbols
//! ([`ksyms`]), what the kernel offers the probes ([`caps`]), perf
//! tracepoints, the events of our vCPU thread ([`thread_events`]), KVM
//! binary stats, the per-CPU samplers of our vCPU's
//! hrtimer, the probes of one run that combine them, and the collecting
//! thread's priority ([`niceness`]).

pub mod caps;
pub mod clock;
pub mod facts;
pub mod hv_timer;
pub mod kprobe_event;
pub mod kstats;
pub mod ksyms;
pub mod niceness;
pub mod perf;
pub mod probes;
pub mod thread_events;
pub mod timer_sampler;
pub mod tracefs;
