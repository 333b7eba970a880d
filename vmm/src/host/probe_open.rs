//! Opening the host probes: before the guest runs (tracepoints on our vCPU
//! thread, KVM stats), and after the guest's probe phase (our hrtimer
//! learned, then every callback of it sampled per CPU).

use crate::host::hv_timer::{hv_timer_possible, is_root, EXIT_REASON_PREEMPTION_TIMER};
use crate::host::kstats::StatsReader;
use crate::host::perf::{self, le_u64, open_tracepoint, RAW_ONLY_PAYLOAD};
use crate::host::probes::{online_cpus, HostProbes, Offsets, SwTimer};
use crate::host::timer_sampler::{EventIds, TimerSampler};
use crate::host::tracefs;
use perf_event::SampleFlag;
use std::time::{Duration, Instant};
use tickburst_analysis::names::{Probe, ProbeMode, Scope};

/// How long to wait for our vCPU's `hrtimer_start` sample after the probe
/// phase (it is normally there already).
const LEARN_TIMEOUT: Duration = Duration::from_millis(200);
/// Ring size of a sampler on our vCPU thread, bytes (data pages; one header
/// page more is mapped).
const SAMPLER_BYTES: usize = 64 * 4096;

impl HostProbes {
    /// Opens what the host offers, before the guest runs. `vcpu_tid` is the
    /// vCPU thread; `stats` the vCPU stats (opened on the vCPU fd);
    /// `ring_bytes` the size of each per-CPU callback ring
    /// ([`crate::host::timer_sampler::ring_bytes`]).
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
                p.report.enabled.push(Probe::KvmStats);
            }
            Err(e) => p.miss(Probe::KvmStats, e, false),
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
                            start_flags: tracefs::field_offset(
                                &t.root,
                                "timer/hrtimer_start",
                                "common_flags",
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
                            Err(e) => p.miss(Probe::SwTimer, e, false),
                        }
                    }
                    Err(e) => p.miss(Probe::SwTimer, e, false),
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
                        p.report.enabled.push(Probe::HvState);
                    }
                    Err(e) => p.miss(Probe::HvState, e, false),
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
                                p.report.enabled.push(Probe::HvTimer);
                            }
                            Err(e) => p.miss(Probe::HvTimer, e, false),
                        }
                    }
                    Err(why) => p.miss(Probe::HvTimer, why, true),
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                p.miss(Probe::SwTimer, e.clone(), false);
                if tracefs.is_err() {
                    p.miss(Probe::HvState, e.clone(), false);
                }
                match hv_timer_possible(backend) {
                    Ok(()) => p.miss(Probe::HvTimer, e.clone(), false),
                    Err(why) => p.miss(Probe::HvTimer, why, true),
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
                    Some(rec) if rec.ty() == perf::RECORD_SAMPLE => {
                        let raw = rec.to_contiguous();
                        let flags = raw.get(RAW_ONLY_PAYLOAD + offsets.start_flags).copied();
                        if flags.is_some_and(perf::in_task_context) {
                            hrtimer = le_u64(&raw, RAW_ONLY_PAYLOAD + offsets.start_hrtimer);
                        }
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
                .map(|s| (SwTimer::Vcpu(s), Scope::Vcpu)),
            None => (0..cpus)
                .map(|cpu| {
                    let filter = format!("function == {addr:#x}");
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
                self.miss(Probe::SwTimer, e.clone(), false);
                if self.report.mode == ProbeMode::On {
                    return Err(format!("--host-probes on: sw_timer unavailable: {e}"));
                }
            }
        }
        Ok(())
    }
}
