//! Host-side probes: the bug report's per-second table without bpftrace.
//!
//! - `sw_timer`: `timer:hrtimer_expire_entry` filtered to
//!   `function == apic_timer_fn`, per CPU (the callback runs in hard-IRQ
//!   context on any CPU). Scoped to our vCPU's hrtimer when its address is
//!   learned from `timer:hrtimer_start` raised in our vCPU thread during the
//!   guest's probe phase (see `abi::STATUS_PROBED`): then every callback is
//!   also sampled with its time, `now` and lateness
//!   ([`crate::timer_sampler`]). Otherwise host-wide counts, marked so.
//! - `hv_timer`: `kvm:kvm_exit` with `exit_reason == 52` (VMX preemption
//!   timer) on our vCPU thread, sampled with its time; only where the hv
//!   timer can exist (kvm_intel with `preemption_timer=Y`), reported
//!   unavailable elsewhere, never 0.
//! - hv/sw switches: `kvm:kvm_hv_timer_state` sampled on our vCPU thread with
//!   CLOCK_MONOTONIC timestamps.
//! - KVM binary stats of the vCPU ([`crate::kstats`]).
//!
//! Nothing here changes global tracing state; filters are per perf event.

use crate::irq_runs::{self, HostEvents};
use crate::kstats::StatsReader;
use crate::perf::{le_u32, le_u64, open_tracepoint, RAW_ONLY_PAYLOAD, TIME_RAW_PAYLOAD};
use crate::timer_sampler::{EventIds, TimerSampler};
use crate::tracefs::{self, TracefsMount};
use perf_event::{Counter, SampleFlag, Sampler};
use std::time::{Duration, Instant};

pub use crate::perf::SIMULATE_NO_PERF_ENV;

/// VMX exit reason of the preemption timer.
pub const EXIT_REASON_PREEMPTION_TIMER: u32 = 52;
/// How long to wait for our vCPU's `hrtimer_start` sample after the probe
/// phase (it is normally there already).
const LEARN_TIMEOUT: Duration = Duration::from_millis(200);
/// Ring size of a sampler on our vCPU thread, bytes (data pages; one header
/// page more is mapped).
const SAMPLER_BYTES: usize = 64 * 4096;

pub use crate::analysis::HostCounts;
pub use tickburst_analysis::probes::{Missing, ProbeMode, ProbeReport, TimerSwitch};

/// How `sw_timer` is counted.
enum SwTimer {
    /// Not counted.
    Off,
    /// Every `apic_timer_fn` callback on the host (our hrtimer not learned).
    HostWide(Vec<Counter>),
    /// Our vCPU's hrtimer only, every callback sampled.
    Vcpu(TimerSampler),
}

/// Offsets of the raw fields the probes read (from the `format` files).
#[derive(Debug, Clone, Copy)]
struct Offsets {
    /// `hrtimer` in `hrtimer_start`.
    start_hrtimer: usize,
    /// `hv_timer_in_use` in `kvm_hv_timer_state`.
    hv_in_use: usize,
}

/// The open probes of one run.
pub struct HostProbes {
    report: ProbeReport,
    _tracefs: Option<TracefsMount>,
    apic_timer_fn: Option<u64>,
    ids: Option<EventIds>,
    offsets: Option<Offsets>,
    learner: Option<Sampler>,
    sw: SwTimer,
    ring_bytes: usize,
    hv: Option<Sampler>,
    hv_times: Vec<u64>,
    hv_state: Option<Sampler>,
    stats: Option<StatsReader>,
    switches: Vec<TimerSwitch>,
    hrtimer: Option<u64>,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether this process may open tracepoint `id` host-wide on CPU 0.
pub fn can_open(id: u64) -> Result<(), String> {
    open_tracepoint(id, None, Some(0), None, None).map(drop)
}

/// Whether the hv timer can be used on this host, or why not.
pub fn hv_timer_possible(backend: Option<&str>) -> Result<(), String> {
    match backend {
        Some("kvm_intel") => match crate::host::module_param("kvm_intel", "preemption_timer").as_deref() {
            Some("Y") | Some("1") => Ok(()),
            Some(v) => Err(format!("kvm_intel.preemption_timer={v}: the hv timer is off, only the sw timer runs")),
            None => Err("kvm_intel.preemption_timer not readable".into()),
        },
        Some(other) => Err(format!(
            "hv timer not available on this host: KVM back end {other} has no VMX-preemption timer, only the sw timer runs"
        )),
        None => Err("hv timer not available: no KVM back-end module found".into()),
    }
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
            apic_timer_fn: None,
            ids: None,
            offsets: None,
            learner: None,
            sw: SwTimer::Off,
            ring_bytes: 0,
            hv: None,
            hv_times: Vec::new(),
            hv_state: None,
            stats: None,
            switches: Vec::new(),
            hrtimer: None,
        }
    }

    /// Records why `probe` is missing (the first reason only: a later step
    /// that fails for the same cause does not list it twice).
    fn miss(&mut self, probe: &str, reason: String, inapplicable: bool) {
        if self.report.missing.iter().any(|m| m.probe == probe) {
            return;
        }
        self.report.missing.push(Missing {
            probe: probe.into(),
            reason,
            inapplicable,
        });
    }

    /// Opens what the host offers, before the guest runs. `vcpu_tid` is the
    /// vCPU thread; `stats` the vCPU stats (opened on the vCPU fd);
    /// `ring_bytes` the size of each per-CPU callback ring
    /// ([`crate::timer_sampler::ring_bytes`]).
    pub fn open(
        mode: ProbeMode,
        vcpu_tid: libc::pid_t,
        stats: Result<StatsReader, String>,
        backend: Option<&str>,
        ring_bytes: usize,
    ) -> Result<HostProbes, String> {
        let mut p = HostProbes::off(mode);
        p.ring_bytes = ring_bytes;
        if mode == ProbeMode::Off {
            return Ok(p);
        }
        match stats {
            Ok(s) => {
                p.stats = Some(s);
                p.report.enabled.push("kvm_stats".into());
            }
            Err(e) => p.miss("kvm_stats", e, false),
        }
        let tracefs = tracefs::locate_or_mount(is_root());
        let addr = tracefs::apic_timer_fn_address();
        match (&tracefs, &addr) {
            (Ok(t), Ok(a)) => {
                p.report.mounted_tracefs = t.mounted_by_us;
                let ids = EventIds::read(&t.root).and_then(|ids| {
                    Ok((
                        ids,
                        Offsets {
                            start_hrtimer: tracefs::field_offset(
                                &t.root,
                                "timer/hrtimer_start",
                                "hrtimer",
                            )?,
                            hv_in_use: tracefs::field_offset(
                                &t.root,
                                "kvm/kvm_hv_timer_state",
                                "hv_timer_in_use",
                            )
                            .unwrap_or(usize::MAX),
                        },
                    ))
                });
                match ids {
                    Ok((ids, offsets)) => {
                        p.apic_timer_fn = Some(*a);
                        p.ids = Some(ids);
                        p.offsets = Some(offsets);
                        let filter = format!("function == {a:#x}");
                        match open_tracepoint(
                            ids.start,
                            Some(vcpu_tid),
                            None,
                            Some(&filter),
                            Some(SampleFlag::RAW),
                        )
                        .and_then(|c| c.sampled(SAMPLER_BYTES).map_err(|e| e.to_string()))
                        {
                            Ok(s) => p.learner = Some(s),
                            Err(e) => p.miss("sw_timer", e, false),
                        }
                    }
                    Err(e) => p.miss("sw_timer", e, false),
                }
                match tracefs::event_id(&t.root, "kvm/kvm_hv_timer_state")
                    .and_then(|id| {
                        open_tracepoint(
                            id,
                            Some(vcpu_tid),
                            None,
                            None,
                            Some(SampleFlag::RAW | SampleFlag::TIME),
                        )
                    })
                    .and_then(|c| c.sampled(SAMPLER_BYTES).map_err(|e| e.to_string()))
                {
                    Ok(s) => {
                        p.hv_state = Some(s);
                        p.report.enabled.push("hv_state".into());
                    }
                    Err(e) => p.miss("hv_state", e, false),
                }
                match hv_timer_possible(backend) {
                    Ok(()) => {
                        let filter = format!("exit_reason == {EXIT_REASON_PREEMPTION_TIMER}");
                        match tracefs::event_id(&t.root, "kvm/kvm_exit")
                            .and_then(|id| {
                                open_tracepoint(
                                    id,
                                    Some(vcpu_tid),
                                    None,
                                    Some(&filter),
                                    Some(SampleFlag::TIME),
                                )
                            })
                            .and_then(|c| c.sampled(SAMPLER_BYTES).map_err(|e| e.to_string()))
                        {
                            Ok(c) => {
                                p.hv = Some(c);
                                p.report.enabled.push("hv_timer".into());
                            }
                            Err(e) => p.miss("hv_timer", e, false),
                        }
                    }
                    Err(why) => p.miss("hv_timer", why, true),
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                p.miss("sw_timer", e.clone(), false);
                if tracefs.is_err() {
                    p.miss("hv_state", e.clone(), false);
                }
                match hv_timer_possible(backend) {
                    Ok(()) => p.miss("hv_timer", e.clone(), false),
                    Err(why) => p.miss("hv_timer", why, true),
                }
            }
        }
        if let Ok(t) = tracefs {
            p._tracefs = Some(t);
        }
        if mode == ProbeMode::On {
            if let Some(m) = p.report.missing.iter().find(|m| !m.inapplicable) {
                return Err(format!(
                    "--host-probes on: {} unavailable: {}",
                    m.probe, m.reason
                ));
            }
        }
        Ok(p)
    }

    /// After the guest's probe phase (before its timer is armed): learns our
    /// vCPU's hrtimer address from the `hrtimer_start` the probe raised in
    /// our vCPU thread, then opens `sw_timer`: every callback of that hrtimer
    /// sampled per CPU (scope `vcpu`), or host-wide counts when the address
    /// was not seen.
    pub fn start_sw_timer(&mut self) -> Result<(), String> {
        let (Some(addr), Some(ids), Some(offsets)) = (self.apic_timer_fn, self.ids, self.offsets)
        else {
            return Ok(());
        };
        let mut hrtimer = None;
        if let Some(learner) = self.learner.as_mut() {
            let deadline = Instant::now() + LEARN_TIMEOUT;
            while hrtimer.is_none() && Instant::now() < deadline {
                match learner.next_record() {
                    Some(rec) if rec.ty() == crate::perf::RECORD_SAMPLE => {
                        hrtimer = le_u64(
                            &rec.to_contiguous(),
                            RAW_ONLY_PAYLOAD + offsets.start_hrtimer,
                        )
                    }
                    Some(_) => {}
                    None => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        }
        self.learner = None;
        self.hrtimer = hrtimer;
        let cpus = online_cpus()
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let opened = match hrtimer {
            Some(h) => TimerSampler::open(ids, h, addr, cpus, self.ring_bytes)
                .map(|s| (SwTimer::Vcpu(s), "vcpu")),
            None => (0..cpus)
                .map(|cpu| {
                    let filter = format!("function == {addr:#x}");
                    open_tracepoint(ids.entry, None, Some(cpu), Some(&filter), None)
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|c| (SwTimer::HostWide(c), "host-wide")),
        };
        match opened {
            Ok((sw, scope)) => {
                self.sw = sw;
                self.report.enabled.push("sw_timer".into());
                self.report.sw_timer_scope = Some(scope.into());
            }
            Err(e) => {
                self.miss("sw_timer", e.clone(), false);
                if self.report.mode == ProbeMode::On {
                    return Err(format!("--host-probes on: sw_timer unavailable: {e}"));
                }
            }
        }
        Ok(())
    }

    /// Our vCPU's LAPIC hrtimer address, when it was learned.
    pub fn hrtimer(&self) -> Option<u64> {
        self.hrtimer
    }

    /// Reads the cumulative counts now, and collects hv/sw switch events.
    pub fn read(&mut self) -> HostCounts {
        if let Some(s) = self.hv_state.as_mut() {
            while let Some(rec) = s.next_record() {
                if rec.ty() != crate::perf::RECORD_SAMPLE {
                    continue;
                }
                let bytes = rec.to_contiguous();
                let time = le_u64(&bytes, 0);
                let in_use = self
                    .offsets
                    .and_then(|o| le_u32(&bytes, TIME_RAW_PAYLOAD.checked_add(o.hv_in_use)?));
                if let (Some(t), Some(v)) = (time, in_use) {
                    self.switches.push(TimerSwitch {
                        mono_ns: t,
                        hv: v != 0,
                    });
                }
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
            while let Some(rec) = s.next_record() {
                if rec.ty() == crate::perf::RECORD_SAMPLE {
                    self.hv_times.extend(le_u64(&rec.to_contiguous(), 0));
                }
            }
            s.as_counter_mut().read().ok()
        });
        HostCounts {
            sw_timer: sw,
            hv_timer: hv,
            stats: self
                .stats
                .as_ref()
                .map(StatsReader::read)
                .unwrap_or_default(),
        }
    }

    /// Every sampled event of the run, times made relative to `epoch_mono`
    /// (CLOCK_MONOTONIC ns of the run's epoch), with the last counts
    /// (`counts`, from [`HostProbes::read`]) to compare with. `None` when
    /// callbacks were not sampled (our hrtimer not learned, or no probes).
    pub fn host_events(&mut self, epoch_mono: u64, counts: &HostCounts) -> Option<HostEvents> {
        let SwTimer::Vcpu(sampler) = &mut self.sw else {
            return None;
        };
        let (mut events, _lost) = sampler.take();
        for e in &mut events {
            *e = e.since(epoch_mono);
        }
        let sw_runs = irq_runs::group_runs(&mut events);
        let mut hv_ns: Vec<u64> = self
            .hv_times
            .iter()
            .map(|t| t.saturating_sub(epoch_mono))
            .collect();
        hv_ns.sort_unstable();
        Some(HostEvents {
            sw_sampled: sw_runs.iter().map(|r| r.callbacks()).sum(),
            sw_counted: counts.sw_timer.unwrap_or(0),
            hv_counted: self.hv.as_ref().and(counts.hv_timer),
            sw_runs,
            hv_ns,
        })
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
