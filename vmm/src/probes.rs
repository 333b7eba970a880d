//! Host-side probes: the bug report's per-second table without bpftrace.
//!
//! - `sw_timer`: `timer:hrtimer_expire_entry` filtered to
//!   `function == apic_timer_fn`, one counter per CPU (the callback runs in
//!   hard-IRQ context on any CPU). Scoped to our vCPU's hrtimer when its
//!   pointer is learned from `timer:hrtimer_start` raised in our vCPU thread;
//!   otherwise host-wide, and marked so.
//! - `hv_timer`: `kvm:kvm_exit` with `exit_reason == 52` (VMX preemption
//!   timer) on our vCPU thread; only where the hv timer can exist (kvm_intel
//!   with `preemption_timer=Y`), reported unavailable elsewhere, never 0.
//! - hv/sw switches: `kvm:kvm_hv_timer_state` sampled on our vCPU thread with
//!   CLOCK_MONOTONIC timestamps.
//! - KVM binary stats of the vCPU ([`crate::kstats`]).
//!
//! Nothing here changes global tracing state; filters are per perf event.

use crate::kstats::StatsReader;
use crate::tracefs::{self, TracefsMount};
use perf_event::events::Tracepoint;
use perf_event::{Builder, Clock, Counter, SampleFlag, Sampler};
use serde::{Deserialize, Serialize};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// VMX exit reason of the preemption timer.
pub const EXIT_REASON_PREEMPTION_TIMER: u32 = 52;
/// Set to 1 to make every perf open fail with EACCES (tests of the
/// unprivileged path).
pub const SIMULATE_NO_PERF_ENV: &str = "TICKBURST_SIMULATE_NO_PERF";
/// Offset of `hrtimer` in the raw data of `hrtimer_start` (after the 8 bytes
/// of common fields; see its `format` file).
const HRTIMER_START_HRTIMER_OFFSET: usize = 8;
/// Offset of `hv_timer_in_use` in the raw data of `kvm_hv_timer_state`.
const HV_STATE_IN_USE_OFFSET: usize = 12;
/// How long to wait for our vCPU's `hrtimer_start` after the guest is ready.
const LEARN_TIMEOUT: Duration = Duration::from_millis(200);
/// Ring size of a sampler, bytes (data pages + 1 header page).
const SAMPLER_BYTES: usize = 16 * 4096;

/// `--host-probes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProbeMode {
    /// Use what this host offers; name what is missing.
    Auto,
    /// Fail (exit 2) if a probe cannot be opened.
    On,
    /// Guest-only.
    Off,
}

/// A probe that is not in use, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Missing {
    /// Probe name (`sw_timer`, `hv_timer`, `hv_state`, `kvm_stats`).
    pub probe: String,
    /// Why.
    pub reason: String,
    /// `true` when the host cannot have it at all (not a permission or
    /// set-up problem): `--host-probes on` does not fail for these.
    pub inapplicable: bool,
}

/// What was on and what was missing (`host.probes` in the JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// The mode asked for.
    pub mode: ProbeMode,
    /// Probes in use.
    pub enabled: Vec<String>,
    /// Probes not in use, with the reason.
    pub missing: Vec<Missing>,
    /// Scope of `sw_timer`: `vcpu` or `host-wide`.
    pub sw_timer_scope: Option<String>,
    /// Whether tickburst mounted tracefs for the run (unmounted at exit).
    pub mounted_tracefs: bool,
}

pub use crate::analysis::HostCounts;

/// One hv/sw switch event.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimerSwitch {
    /// CLOCK_MONOTONIC time, ns.
    pub mono_ns: u64,
    /// `true` = hv timer, `false` = sw timer.
    pub hv: bool,
}

/// The open probes of one run.
pub struct HostProbes {
    report: ProbeReport,
    _tracefs: Option<TracefsMount>,
    apic_timer_fn: Option<u64>,
    expire_id: Option<u64>,
    learner: Option<Sampler>,
    sw: Vec<Counter>,
    hv: Option<Counter>,
    hv_state: Option<Sampler>,
    stats: Option<StatsReader>,
    switches: Vec<TimerSwitch>,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn simulate_no_perf() -> bool {
    std::env::var(SIMULATE_NO_PERF_ENV).is_ok_and(|v| v == "1")
}

fn set_filter(fd: &impl AsRawFd, filter: &str) -> Result<(), String> {
    let text = std::ffi::CString::new(filter).map_err(|_| "filter has NUL".to_string())?;
    // SAFETY: PERF_EVENT_IOC_SET_FILTER reads a NUL-terminated string from a
    // live perf event fd; the kernel copies it.
    let rc =
        unsafe { perf_event_open_sys::ioctls::SET_FILTER(fd.as_raw_fd(), text.as_ptr() as *mut _) };
    if rc != 0 {
        return Err(format!(
            "setting filter '{filter}': {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn perf_denied(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => {
            let paranoid =
                std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid").unwrap_or_default();
            format!(
                "perf_event_open denied ({e}); needs root or CAP_PERFMON (kernel.perf_event_paranoid={})",
                paranoid.trim()
            )
        }
        _ => format!("perf_event_open: {e}"),
    }
}

/// Opens a tracepoint counter (or sampler base) with an optional filter.
fn open_tracepoint(
    id: u64,
    pid: Option<libc::pid_t>,
    cpu: Option<usize>,
    filter: Option<&str>,
    sample: Option<SampleFlag>,
) -> Result<Counter, String> {
    if simulate_no_perf() {
        return Err(perf_denied(&std::io::Error::from_raw_os_error(
            libc::EACCES,
        )));
    }
    let mut b = Builder::new(Tracepoint::with_id(id));
    match pid {
        Some(p) => b.observe_pid(p),
        None => b.any_pid(),
    };
    match cpu {
        Some(c) => b.one_cpu(c),
        None => b.any_cpu(),
    };
    b.include_kernel();
    if let Some(flags) = sample {
        b.sample(flags)
            .sample_period(1)
            .clockid(Clock::MONOTONIC)
            .wakeup_events(1);
    }
    let mut counter = b.build().map_err(|e| perf_denied(&e))?;
    if let Some(f) = filter {
        set_filter(&counter, f)?;
    }
    counter
        .enable()
        .map_err(|e| format!("enabling tracepoint: {e}"))?;
    Ok(counter)
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
            expire_id: None,
            learner: None,
            sw: Vec::new(),
            hv: None,
            hv_state: None,
            stats: None,
            switches: Vec::new(),
        }
    }

    fn miss(&mut self, probe: &str, reason: String, inapplicable: bool) {
        self.report.missing.push(Missing {
            probe: probe.into(),
            reason,
            inapplicable,
        });
    }

    /// Opens what the host offers, before the guest runs. `vcpu_tid` is the
    /// vCPU thread; `stats` the vCPU stats (opened on the vCPU fd).
    pub fn open(
        mode: ProbeMode,
        vcpu_tid: libc::pid_t,
        stats: Result<StatsReader, String>,
        backend: Option<&str>,
    ) -> Result<HostProbes, String> {
        let mut p = HostProbes::off(mode);
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
                let ids = (
                    tracefs::event_id(&t.root, "timer/hrtimer_expire_entry"),
                    tracefs::event_id(&t.root, "timer/hrtimer_start"),
                );
                match ids {
                    (Ok(expire), Ok(start)) => {
                        p.apic_timer_fn = Some(*a);
                        p.expire_id = Some(expire);
                        let filter = format!("function == {a:#x}");
                        match open_tracepoint(
                            start,
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
                    (Err(e), _) | (_, Err(e)) => p.miss("sw_timer", e, false),
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
                        match tracefs::event_id(&t.root, "kvm/kvm_exit").and_then(|id| {
                            open_tracepoint(id, Some(vcpu_tid), None, Some(&filter), None)
                        }) {
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

    /// After the guest programmed its timer: learns our hrtimer pointer and
    /// opens the per-CPU `sw_timer` counters (scoped if the pointer is known).
    pub fn start_sw_timer(&mut self) -> Result<(), String> {
        let (Some(addr), Some(id)) = (self.apic_timer_fn, self.expire_id) else {
            return Ok(());
        };
        let mut hrtimer = None;
        if let Some(learner) = self.learner.as_mut() {
            let deadline = Instant::now() + LEARN_TIMEOUT;
            while hrtimer.is_none() && Instant::now() < deadline {
                match learner.next_record() {
                    Some(rec) => {
                        hrtimer = le_u64(
                            &rec.to_contiguous(),
                            RAW_ONLY_PAYLOAD + HRTIMER_START_HRTIMER_OFFSET,
                        )
                    }
                    None => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        }
        self.learner = None;
        let (filter, scope) = match hrtimer {
            Some(h) => (
                format!("hrtimer == {h:#x} && function == {addr:#x}"),
                "vcpu",
            ),
            None => (format!("function == {addr:#x}"), "host-wide"),
        };
        let cpus = online_cpus()
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let mut counters = Vec::new();
        for cpu in 0..cpus {
            match open_tracepoint(id, None, Some(cpu), Some(&filter), None) {
                Ok(c) => counters.push(c),
                Err(e) => {
                    self.miss("sw_timer", e.clone(), false);
                    if self.report.mode == ProbeMode::On {
                        return Err(format!("--host-probes on: sw_timer unavailable: {e}"));
                    }
                    return Ok(());
                }
            }
        }
        self.sw = counters;
        self.report.enabled.push("sw_timer".into());
        self.report.sw_timer_scope = Some(scope.into());
        Ok(())
    }

    /// Reads the cumulative counts now, and collects hv/sw switch events.
    pub fn read(&mut self) -> HostCounts {
        if let Some(s) = self.hv_state.as_mut() {
            while let Some(rec) = s.next_record() {
                let bytes = rec.to_contiguous();
                let time = le_u64(&bytes, 0);
                let in_use = le_u32(&bytes, TIME_RAW_PAYLOAD + HV_STATE_IN_USE_OFFSET);
                if let (Some(t), Some(v)) = (time, in_use) {
                    self.switches.push(TimerSwitch {
                        mono_ns: t,
                        hv: v != 0,
                    });
                }
            }
        }
        let sw = if self.sw.is_empty() {
            None
        } else {
            self.sw
                .iter_mut()
                .map(|c| c.read().ok())
                .sum::<Option<u64>>()
        };
        HostCounts {
            sw_timer: sw,
            hv_timer: self.hv.as_mut().and_then(|c| c.read().ok()),
            stats: self
                .stats
                .as_ref()
                .map(StatsReader::read)
                .unwrap_or_default(),
        }
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

/// Where the raw payload starts in a sample with `PERF_SAMPLE_RAW` only
/// (after the u32 size).
const RAW_ONLY_PAYLOAD: usize = 4;
/// Where the raw payload starts with `PERF_SAMPLE_TIME | PERF_SAMPLE_RAW`
/// (u64 time, u32 size).
const TIME_RAW_PAYLOAD: usize = 12;

fn le_u64(bytes: &[u8], at: usize) -> Option<u64> {
    bytes
        .get(at..at + 8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
}

/// Number of CPUs from `/sys/devices/system/cpu/online` ("0-N").
fn online_cpus() -> Option<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    let last = text
        .trim()
        .split([',', '-'])
        .filter_map(|s| s.parse::<usize>().ok())
        .max()?;
    Some(last + 1)
}
