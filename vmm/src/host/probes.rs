//! Host-side probes: the bug report's per-second table without bpftrace.
//!
//! - `sw_timer`: `timer:hrtimer_expire_entry` filtered to
//!   `function == apic_timer_fn`, per CPU (the callback runs in hard-IRQ
//!   context on any CPU). Scoped to our vCPU's hrtimer when its address is
//!   learned from `timer:hrtimer_start` raised in our vCPU thread, in task
//!   context, during the guest's probe phase (see `abi::STATUS_PROBED`; an
//!   interrupt that re-arms another VM's periodic hrtimer while our thread
//!   is current raises one in our thread too): then every callback is
//!   also sampled with its time, `now` and lateness
//!   ([`crate::host::timer_sampler`]). Otherwise host-wide counts, marked so.
//! - `hv_timer`: `kvm:kvm_exit` with `exit_reason == 52` (VMX preemption
//!   timer) on our vCPU thread, sampled with its time; only where the hv
//!   timer can exist (kvm_intel with `preemption_timer=Y`), reported
//!   unavailable elsewhere, never 0.
//! - hv/sw switches: `kvm:kvm_hv_timer_state` sampled on our vCPU thread with
//!   CLOCK_MONOTONIC timestamps.
//! - KVM binary stats of the vCPU ([`crate::host::kstats`]).
//!
//! The learner, `hv_timer` and the switches are events of our vCPU thread:
//! one per CPU filtered on its pid ([`crate::host::thread_events`]).
//!
//! Nothing here changes global tracing state; filters are per perf event.
//!
//! Opening them is [`crate::host::probe_open`]; this module holds them and
//! reads them.

use crate::host::kstats::StatsReader;
use crate::host::ksyms::FunctionMatch;
use crate::host::perf::{le_u32, le_u64, TIME_RAW_PAYLOAD};
use crate::host::thread_events::ThreadEvents;
use crate::host::timer_sampler::{EventIds, TimerSampler};
use crate::host::tracefs::TracefsMount;
use perf_event::Counter;
use tickburst_analysis::host_thin::EventThinner;
use tickburst_analysis::irq_runs::HostEvents;
use tickburst_analysis::names::Probe;

pub use tickburst_analysis::analysis::HostCounts;
pub use tickburst_analysis::probes::{keep_change, Missing, ProbeMode, ProbeReport, TimerSwitch};

/// How `sw_timer` is counted.
pub(super) enum SwTimer {
    /// Not counted.
    Off,
    /// Every `apic_timer_fn` callback on the host (our hrtimer not learned).
    HostWide(Vec<Counter>),
    /// Our vCPU's hrtimer only, every callback sampled.
    Vcpu(TimerSampler),
}

/// Offsets of the raw fields the probes read (from the `format` files).
#[derive(Debug, Clone, Copy)]
pub(super) struct Offsets {
    /// `hrtimer` in `hrtimer_start`.
    pub(super) start_hrtimer: usize,
    /// `common_flags` in `hrtimer_start` (interrupt context bits).
    pub(super) start_flags: usize,
    /// `hv_timer_in_use` in `kvm_hv_timer_state`.
    pub(super) hv_in_use: usize,
}

/// The open probes of one run.
pub struct HostProbes {
    pub(super) report: ProbeReport,
    pub(super) _tracefs: Option<TracefsMount>,
    /// How filters name `apic_timer_fn` (by name, or its address).
    pub(super) function: Option<FunctionMatch>,
    pub(super) ids: Option<EventIds>,
    pub(super) offsets: Option<Offsets>,
    pub(super) learner: Option<ThreadEvents>,
    pub(super) sw: SwTimer,
    /// Callback rings being opened on their own thread while the VM is
    /// built and the guest probes, not yet armed.
    pub(super) prepared: Option<std::thread::JoinHandle<Result<TimerSampler, String>>>,
    pub(super) ring_bytes: usize,
    pub(super) hv: Option<ThreadEvents>,
    /// hv expiry times (CLOCK_MONOTONIC) read since the last thinning.
    pub(super) hv_times: Vec<u64>,
    /// Callback runs and hv expiries kept where the analysis looks.
    pub(super) events: EventThinner,
    pub(super) hv_state: Option<ThreadEvents>,
    pub(super) stats: Option<StatsReader>,
    /// Whether the kernel has KVM binary stats (why not), until the
    /// vCPU's stats are attached.
    pub(super) stats_cap: Result<(), String>,
    pub(super) switches: Vec<TimerSwitch>,
    pub(super) hrtimer: Option<u64>,
}

impl HostProbes {
    /// Probes that are all off.
    pub fn off(mode: ProbeMode) -> HostProbes {
        HostProbes {
            report: ProbeReport {
                mode,
                enabled: Vec::new(),
                missing: Vec::new(),
                sw_timer_scope: None,
                mounted_tracefs: false,
            },
            _tracefs: None,
            function: None,
            ids: None,
            offsets: None,
            learner: None,
            sw: SwTimer::Off,
            prepared: None,
            ring_bytes: 0,
            hv: None,
            hv_times: Vec::new(),
            events: EventThinner::default(),
            hv_state: None,
            stats: None,
            stats_cap: Ok(()),
            switches: Vec::new(),
            hrtimer: None,
        }
    }

    /// Records why `probe` is missing (the first reason only: a later step
    /// that fails for the same cause does not list it twice).
    pub(super) fn miss(&mut self, probe: Probe, reason: String, inapplicable: bool) {
        if self.report.missing.iter().any(|m| m.probe == probe) {
            return;
        }
        self.report.missing.push(Missing {
            probe,
            reason,
            inapplicable,
        });
    }

    /// Our vCPU's LAPIC hrtimer address, when it was learned.
    pub fn hrtimer(&self) -> Option<u64> {
        self.hrtimer
    }

    /// Reads the cumulative counts now, and collects hv/sw switch events:
    /// the changes of back end only, and the first event at or after
    /// `epoch_mono` ([`keep_change`]: an hv re-arm is traced too).
    pub fn read(&mut self, epoch_mono: u64) -> HostCounts {
        if let Some(s) = self.hv_state.as_mut() {
            let offsets = self.offsets;
            let mut batch = Vec::new();
            s.samples(|bytes| {
                let time = le_u64(bytes, 0);
                let in_use =
                    offsets.and_then(|o| le_u32(bytes, TIME_RAW_PAYLOAD.checked_add(o.hv_in_use)?));
                if let (Some(t), Some(v)) = (time, in_use) {
                    batch.push(TimerSwitch {
                        mono_ns: t,
                        hv: v != 0,
                    });
                }
            });
            // One ring per CPU: the thread's switches in time order.
            batch.sort_by_key(|s| s.mono_ns);
            for s in batch {
                keep_change(&mut self.switches, epoch_mono, s);
            }
        }
        let sw = match &mut self.sw {
            SwTimer::Off => None,
            SwTimer::HostWide(counters) => counters
                .iter_mut()
                .map(|c| c.read().ok())
                .sum::<Option<u64>>(),
            SwTimer::Vcpu(sampler) => sampler.drain(),
        };
        let hv = self.hv.as_mut().and_then(|s| {
            let times = &mut self.hv_times;
            s.samples(|bytes| times.extend(le_u64(bytes, 0)));
            s.count()
        });
        HostCounts {
            sw_timer: sw.into(),
            hv_timer: hv.into(),
            stats: self
                .stats
                .as_ref()
                .map(StatsReader::read)
                .unwrap_or_default(),
        }
    }

    /// Moves the events read so far (times made relative to `epoch_mono`,
    /// CLOCK_MONOTONIC ns of the run's epoch) into the thinner and decides
    /// what lies before `before_ns` (`near`: within the tolerance of a kept
    /// span), so the host events of a long run stay bounded.
    pub fn thin(&mut self, epoch_mono: u64, before_ns: u64, near: impl Fn(u64) -> bool) {
        if let SwTimer::Vcpu(sampler) = &mut self.sw {
            let (events, _lost) = sampler.take();
            self.events
                .push(events.into_iter().map(|e| e.since(epoch_mono)));
        }
        let hv = std::mem::take(&mut self.hv_times);
        self.events
            .push_hv(hv.into_iter().map(|t| t.saturating_sub(epoch_mono)));
        self.events.settle(before_ns, near);
    }

    /// The sampled events of the run kept near kept spans (`near`, the
    /// final ones), with the running totals and the last counts (`counts`,
    /// from [`HostProbes::read`]) to compare with. `None` when callbacks
    /// were not sampled (our hrtimer not learned, or no probes).
    pub fn host_events(
        &mut self,
        epoch_mono: u64,
        counts: &HostCounts,
        near: impl Fn(u64) -> bool,
    ) -> Option<HostEvents> {
        if !matches!(self.sw, SwTimer::Vcpu(_)) {
            return None;
        }
        self.thin(epoch_mono, 0, &near);
        let mut events = std::mem::take(&mut self.events).finish(near);
        events.sw_counted = counts.sw_timer.get().unwrap_or(0);
        events.hv_counted = self.hv.as_ref().and(counts.hv_timer.get());
        Some(events)
    }

    /// hv/sw switches seen so far.
    pub fn switches(&self) -> &[TimerSwitch] {
        &self.switches
    }

    /// What was on and what was missing.
    pub fn report(&self) -> &ProbeReport {
        &self.report
    }
}

/// Number of CPUs to open per-CPU events on.
pub fn cpu_count() -> usize {
    online_cpus().unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Number of CPUs from `/sys/devices/system/cpu/online` ("0-N").
pub fn online_cpus() -> Option<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    let last = text
        .trim()
        .split([',', '-'])
        .filter_map(|s| s.parse::<usize>().ok())
        .max()?;
    Some(last + 1)
}
