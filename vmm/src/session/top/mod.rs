//! `tickburst top`, the session: the LAPIC timers of every KVM VM on this
//! host, whoever started it, live: per interval and vCPU the hv expiries and
//! sw callbacks per second, the back end, hv/sw switches, the longest run of
//! callbacks in one interrupt and its lateness, and flags when a vCPU falls
//! back to sw and stays there or a run exceeds `--max-run`.
//!
//! - [`config`]: the validated settings and the errors;
//! - [`discover`]: VMs and their vCPU threads from `/proc`, [`proc_text`]
//!   the `/proc` text it reads, parsed once;
//! - [`setup`]: which signals this host can measure, and why not;
//! - [`sampler`]: the perf probes (tracepoints only, read-only towards the
//!   VMs, nothing global changed);
//! - [`live`]: the loop (re-scan every interval, new VMs picked up, gone
//!   ones dropped), reporting to an [`observer`] (the table, NDJSON and
//!   plot in `output` are one: events flow session -> observer, never back);
//! - the rows themselves are pure: `tickburst_analysis::top` and
//!   `tickburst_analysis::top_fold`.

pub mod config;
pub mod discover;
pub mod live;
pub mod observer;
pub mod proc_text;
pub mod sampler;
pub mod setup;
