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
//! They are opened in two steps: before the guest runs (tracepoints on our
//! vCPU thread, KVM stats), and after the guest's probe phase (our hrtimer
//! learned, then every callback of it sampled per CPU); then read and
//! thinned as the run goes.

use crate::host::caps::{HostCaps, Lacks};
use crate::host::hv_timer::{hv_timer_possible, is_root, EXIT_REASON_PREEMPTION_TIMER};
use crate::host::kstats::StatsReader;
use crate::host::ksyms::{self, FunctionMatch};
use crate::host::perf::{
    self, le_u32, le_u64, open_tracepoint, PerfError, RAW_ONLY_PAYLOAD, TIME_RAW_PAYLOAD,
};
use crate::host::thread_events::{OnThread, ThreadEvents, Unarmed};
use crate::host::timer_sampler::{EventIds, TimerSampler};
use crate::host::tracefs::{self, TracefsMount};
use perf_event::{Counter, SampleFlag};
use std::path::Path;
use std::time::{Duration, Instant};
use tickburst_analysis::host_thin::EventThinner;
use tickburst_analysis::irq_runs::HostEvents;
use tickburst_analysis::names::{Probe, Scope};

pub use tickburst_analysis::figures::HostCounts;
pub use tickburst_analysis::probe_report::{
    keep_change, Missing, ProbeMode, ProbeReport, TimerSwitch,
};

/// How long to wait for our vCPU's `hrtimer_start` sample after the probe
/// phase (it is normally there already).
const LEARN_TIMEOUT: Duration = Duration::from_millis(200);
/// Ring size of a sampler on our vCPU thread, bytes, per CPU (data pages;
/// one header page more is mapped).
const SAMPLER_BYTES: usize = 64 * 4096;
/// Ring size of the learner per CPU: it samples a handful of events.
const LEARNER_BYTES: usize = 4 * 4096;

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
    pub(super) prepared: Option<std::thread::JoinHandle<Result<TimerSampler, PerfError>>>,
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
            SwTimer::Vcpu(sampler) => {
                sampler.drain();
                sampler.counted()
            }
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

impl HostProbes {
    /// Opens what the host offers, before the guest runs. `vcpu_tid` is the
    /// vCPU thread (it may not have its vCPU yet: the VM can be built
    /// meanwhile); the vCPU's KVM stats come with
    /// [`HostProbes::attach_stats`]; `ring_bytes` the size of each
    /// per-CPU callback ring ([`crate::host::timer_sampler::ring_bytes`]).
    /// What the kernel offers comes from `kvm` and tracefs
    /// ([`HostCaps::detect`]), less what `lacks` takes away (a simulated
    /// older kernel; empty outside tests).
    pub fn open(
        mode: ProbeMode,
        vcpu_tid: libc::pid_t,
        kvm: &kvm_ioctls::Kvm,
        lacks: &Lacks,
        backend: Option<&str>,
        ring_bytes: usize,
    ) -> Result<HostProbes, String> {
        let mut p = HostProbes::off(mode);
        p.ring_bytes = ring_bytes;
        if mode == ProbeMode::Off {
            return Ok(p);
        }
        let tracefs = tracefs::locate_or_mount(is_root());
        let root = tracefs.as_ref().ok().map(|t| t.root.clone());
        let caps = HostCaps::detect(Some(kvm), root.as_deref()).without(lacks);
        p.stats_cap = caps.stats().map_err(|e| e.to_string());
        p.open_with(&caps, root.as_deref(), vcpu_tid, backend);
        if let Err(e) = &tracefs {
            p.miss(Probe::SwTimer, e.to_string(), false);
            p.miss(Probe::HvState, e.to_string(), false);
            match hv_timer_possible(backend) {
                Ok(()) => p.miss(Probe::HvTimer, e.to_string(), false),
                Err(why) => p.miss(Probe::HvTimer, why, true),
            }
        }
        if let Ok(t) = tracefs {
            p.report.mounted_tracefs = t.mounted_by_us;
            p._tracefs = Some(t);
        }
        p.check_on_mode()?;
        Ok(p)
    }

    /// Takes the vCPU's KVM stats (opened on its fd once the VM exists),
    /// where the kernel has them; listed first among the probes, as they
    /// are in the record. With `--host-probes on`, a failure to open stats
    /// the kernel has is an error.
    pub fn attach_stats(&mut self, stats: Result<StatsReader, String>) -> Result<(), String> {
        if self.report.mode == ProbeMode::Off {
            return Ok(());
        }
        match self.stats_cap.clone().and(stats) {
            Ok(s) => {
                self.stats = Some(s);
                self.report.enabled.insert(0, Probe::KvmStats);
            }
            Err(e) => {
                let inapplicable = self.stats_cap.is_err();
                self.miss(Probe::KvmStats, e, inapplicable);
                // Missing probes are listed in the order they are opened.
                let last = self.report.missing.len() - 1;
                self.report.missing[..=last].rotate_right(1);
            }
        }
        self.check_on_mode()
    }

    /// `--host-probes on`: a probe the host should have is missing.
    fn check_on_mode(&self) -> Result<(), String> {
        if self.report.mode == ProbeMode::On {
            if let Some(m) = self.report.missing.iter().find(|m| !m.inapplicable) {
                return Err(format!(
                    "--host-probes on: {} unavailable: {}",
                    m.probe, m.reason
                ));
            }
        }
        Ok(())
    }

    /// Opens each probe `caps` allows, once; what it does not allow is
    /// missing with the kernel's reason (inapplicable: `--host-probes on`
    /// does not fail for it, as for an absent hv timer). `root` is tracefs
    /// (for the field offsets); without it only the KVM stats can open.
    pub(super) fn open_with(
        &mut self,
        caps: &HostCaps,
        root: Option<&Path>,
        vcpu_tid: libc::pid_t,
        backend: Option<&str>,
    ) {
        let Some(root) = root else {
            return;
        };
        let on = OnThread::for_thread(vcpu_tid, cpu_count());
        let tp = |event: &str| caps.tracepoint(event).map_err(|e| e.to_string());
        let lacks = |events: &[&str]| events.iter().any(|e| caps.tracepoint(e).is_err());
        let sw_lacking = lacks(&[
            "timer/hrtimer_expire_entry",
            "timer/hrtimer_expire_exit",
            "timer/hrtimer_start",
        ]);
        match sw_ids(root, &tp).and_then(|(ids, offsets)| {
            self.open_learner(caps, ids.start, on)
                .map(|()| (ids, offsets))
        }) {
            Ok((ids, offsets)) => {
                self.ids = Some(ids);
                self.offsets = Some(offsets);
            }
            Err(e) => self.miss(Probe::SwTimer, e, sw_lacking),
        }
        let flags = SampleFlag::RAW | SampleFlag::TIME;
        match tp("kvm/kvm_hv_timer_state").and_then(|id| {
            ThreadEvents::open(id, on, None, flags, SAMPLER_BYTES).map_err(|e| e.to_string())
        }) {
            Ok(s) => {
                self.hv_state = Some(s);
                self.report.enabled.push(Probe::HvState);
            }
            Err(e) => self.miss(Probe::HvState, e, lacks(&["kvm/kvm_hv_timer_state"])),
        }
        match hv_timer_possible(backend) {
            Ok(()) => {
                let filter = format!("exit_reason == {EXIT_REASON_PREEMPTION_TIMER}");
                match tp("kvm/kvm_exit").and_then(|id| {
                    ThreadEvents::open(id, on, Some(&filter), SampleFlag::TIME, SAMPLER_BYTES)
                        .map_err(|e| e.to_string())
                }) {
                    Ok(c) => {
                        self.hv = Some(c);
                        self.report.enabled.push(Probe::HvTimer);
                    }
                    Err(e) => self.miss(Probe::HvTimer, e, lacks(&["kvm/kvm_exit"])),
                }
            }
            Err(why) => self.miss(Probe::HvTimer, why, true),
        }
    }

    /// Opens the learner: `hrtimer_start` (tracepoint `start`) on our vCPU
    /// thread, filtered on `apic_timer_fn`. It is the first event with a
    /// function filter, so it finds out how the kernel can name the symbol
    /// ([`ksyms::resolve`]): by name, or by its address from kallsyms.
    fn open_learner(&mut self, caps: &HostCaps, start: u64, on: OnThread) -> Result<(), String> {
        let mut events = Unarmed::open(start, on, SampleFlag::RAW).map_err(|e| e.to_string())?;
        let (function, _why_not_named) = ksyms::resolve(
            ksyms::APIC_TIMER_FN,
            "function",
            caps.try_function_filter(),
            &mut |f| events.try_filter(f).map_err(|e| e.to_string()),
            &|s| ksyms::kallsyms_address(s),
        )?;
        let rest = function.filter("function");
        self.learner = Some(
            events
                .arm(Some(&rest), LEARNER_BYTES)
                .map_err(|e| e.to_string())?,
        );
        self.function = Some(function);
        Ok(())
    }

    /// Starts opening the per-CPU callback rings on their own thread, not
    /// yet filtered on our hrtimer nor enabled: perf events and ring memory
    /// (MiBs a CPU) take 3-5 ms here, done while the VM is built and the
    /// guest probes, so [`HostProbes::start_sw_timer`] only sets their
    /// filters. A failure here is left to `start_sw_timer`, which opens them
    /// again and reports it.
    pub fn prepare_sw_timer(&mut self) {
        let Some(ids) = self.ids else {
            return;
        };
        let (cpus, bytes) = (cpu_count(), self.ring_bytes);
        self.prepared = std::thread::Builder::new()
            .name("perf-rings".into())
            .spawn(move || TimerSampler::open_unarmed(ids, cpus, bytes))
            .ok();
    }

    /// After the guest's probe phase (before its timer is armed): learns our
    /// vCPU's hrtimer address from the `hrtimer_start` the probe raised in
    /// our vCPU thread (in task context), then opens `sw_timer`: every
    /// callback of that hrtimer sampled per CPU (scope `vcpu`), or
    /// host-wide counts when the address was not seen.
    pub fn start_sw_timer(&mut self) -> Result<(), String> {
        let (Some(function), Some(ids), Some(offsets)) =
            (self.function.clone(), self.ids, self.offsets)
        else {
            return Ok(());
        };
        let mut hrtimer = None;
        if let Some(learner) = self.learner.as_mut() {
            let deadline = Instant::now() + LEARN_TIMEOUT;
            loop {
                learner.samples(|raw| {
                    let flags = raw.get(RAW_ONLY_PAYLOAD + offsets.start_flags).copied();
                    if hrtimer.is_none() && flags.is_some_and(perf::in_task_context) {
                        hrtimer = le_u64(raw, RAW_ONLY_PAYLOAD + offsets.start_hrtimer);
                    }
                });
                let left = deadline.saturating_duration_since(Instant::now());
                if hrtimer.is_some() || left.is_zero() {
                    break;
                }
                learner.wait(left.min(Duration::from_millis(10)));
            }
            // Disabled, not closed: closing the last perf user of a
            // tracepoint unregisters it and waits for an RCU grace period
            // (~40 ms here), and the rings below use the same tracepoint.
            learner.disable();
        }
        self.hrtimer = hrtimer;
        let cpus = cpu_count();
        let prepared = self.prepared.take().and_then(|t| t.join().ok()?.ok());
        let opened = match hrtimer {
            Some(h) => match prepared {
                Some(mut s) => s.arm(h, &function).map(|()| s),
                None => TimerSampler::open(ids, h, function, cpus, self.ring_bytes),
            }
            .map(|s| (SwTimer::Vcpu(s), Scope::Vcpu)),
            None => (0..cpus)
                .map(|cpu| {
                    let filter = function.filter("function");
                    open_tracepoint(ids.entry, None, Some(cpu), Some(&filter), None)
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|c| (SwTimer::HostWide(c), Scope::HostWide)),
        };
        match opened {
            Ok((sw, scope)) => {
                self.sw = sw;
                self.report.enabled.push(Probe::SwTimer);
                self.report.sw_timer_scope = Some(scope);
            }
            Err(e) => {
                self.miss(Probe::SwTimer, e.to_string(), false);
                if self.report.mode == ProbeMode::On {
                    return Err(format!("--host-probes on: sw_timer unavailable: {e}"));
                }
            }
        }
        Ok(())
    }
}

/// The tracepoint ids (from `tp`, what the kernel offers) and field offsets
/// (under the tracefs `root`) the sw timer probe reads. The learner checks
/// `common_flags` of `hrtimer_start`: only a task-context one is our
/// vCPU thread's own ([`perf::in_task_context`]).
fn sw_ids(
    root: &Path,
    tp: &dyn Fn(&str) -> Result<u64, String>,
) -> Result<(EventIds, Offsets), String> {
    let start = "timer/hrtimer_start";
    let field_offset = |event: &str, field: &str| {
        tracefs::field_offset(root, event, field).map_err(|e| e.to_string())
    };
    let ids = EventIds {
        entry: tp("timer/hrtimer_expire_entry")?,
        exit: tp("timer/hrtimer_expire_exit")?,
        start: tp(start)?,
        now_at: field_offset("timer/hrtimer_expire_entry", "now")?,
        expires_at: field_offset(start, "expires")?,
    };
    let offsets = Offsets {
        start_hrtimer: field_offset(start, "hrtimer")?,
        start_flags: field_offset(start, "common_flags")?,
        hv_in_use: field_offset("kvm/kvm_hv_timer_state", "hv_timer_in_use").unwrap_or(usize::MAX),
    };
    Ok((ids, offsets))
}

#[cfg(test)]
mod tests {
    use super::HostProbes;
    use crate::host::caps::{HostCaps, Lacks};
    use tickburst_analysis::names::{Probe, ProbeMode};

    #[test]
    fn a_kernel_without_stats_says_so_and_on_mode_accepts_it() {
        let caps = HostCaps::full().without(&Lacks::before_5_14());
        let mut p = HostProbes::off(ProbeMode::On);
        p.stats_cap = caps.stats().map_err(|e| e.to_string());
        p.open_with(&caps, None, 0, None);
        p.attach_stats(Err("KVM_GET_STATS_FD failed".into()))
            .expect("an absent extension is no error with --host-probes on");
        let m = &p.report().missing[0];
        assert_eq!(m.probe, Probe::KvmStats);
        assert!(m.reason.contains("5.14"), "{m:?}");
        assert!(m.inapplicable, "{m:?}");
        assert!(p.report().enabled.is_empty());
        assert_eq!(p.read(0).stats, Default::default());

        // Stats the kernel has but that failed to open: a real failure.
        let mut p = HostProbes::off(ProbeMode::On);
        p.open_with(&HostCaps::full(), None, 0, None);
        assert!(p.attach_stats(Err("EPERM".into())).is_err());
        let m = &p.report().missing[0];
        assert_eq!((m.reason.as_str(), m.inapplicable), ("EPERM", false));
    }
}
