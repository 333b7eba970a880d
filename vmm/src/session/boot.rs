//! Booting a session's VM, one small step each: the host and the timer
//! settings, the VM and its vCPU threads, the host probes (opened before the
//! guest's timer is armed), the guest's probe phase, and its ready reports.

use crate::arch::timer::TimerSettings;
use crate::host::facts::{self, HostInfo};
use crate::host::kstats::StatsReader;
use crate::host::perf::TaskEventsWarmUp;
use crate::host::probes::HostProbes;
use crate::host::thread_events::pids_are_the_kernels;
use crate::host::timer_sampler;
use crate::session::config::{PausePlan, RunConfig};
use crate::session::error::{timer_settings, RunError};
use crate::session::observer::RunObserver;
use crate::session::startup::{probed, ready, wait_all};
use crate::vstate::kvm::{apic_bus_cycle_ns, open_kvm};
use crate::vstate::slots::{self, GuestSetup};
use crate::vstate::tsc_sync::TscSync;
use crate::vstate::vcpu::{VcpuHandle, Vcpus};
use crate::vstate::vcpu_control::VcpuEvent;
use crate::vstate::vm::{Vm, VmError};
use kvm_ioctls::Kvm;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::Instant;
use tickburst_analysis::names::ProbeMode;
use vm_memory::GuestMemoryMmap;

/// Length of the guest's probe one-shot (at most one period).
pub const PROBE_NS: u64 = 1_000_000;
/// `watch` has no pauses of its own: the callback rings are sized for an
/// outside stop of at least this long. `run` and `sweep` size them for
/// their own longest pause (a longer outside stop there may lose samples
/// of a storm: counted as lost, beside the counters).
const WATCH_RING_PAUSE_NS: u64 = 10_000_000_000;

/// A booted session: the guest reported ready on every vCPU.
pub(super) struct Booted {
    /// The vCPU threads (dropped first: resumed and stopped).
    pub(super) vcpus: Vcpus,
    /// Guest RAM (the rings and the results).
    pub(super) mem: GuestMemoryMmap,
    /// Guest TSC frequency, kHz.
    pub(super) tsc_khz: u32,
    /// The LAPIC timer settings.
    pub(super) timer: TimerSettings,
    /// APIC bus cycle, ns.
    pub(super) bus_cycle_ns: u64,
    /// The host facts.
    pub(super) host: HostInfo,
    /// The vCPUs the pauses stop.
    pub(super) paused_set: Vec<u32>,
    /// The subject's vCPU thread.
    pub(super) subject_tid: i32,
    /// Each vCPU's TSC at a host time, read when it reported ready.
    pub(super) ready: Vec<TscSync>,
    /// The first ready report: the run's epoch.
    pub(super) ready_at: Instant,
    /// The VM fd with its memory, held until the end of the run (every
    /// vCPU fd carries its own memory handle, see `Vm`).
    _machine: Vm,
}

/// What the live run takes over from the boot: the vCPU threads' events
/// and the open host probes.
pub(super) type LiveParts = (Receiver<VcpuEvent>, HostProbes);

/// Boots the VM of `cfg` until every vCPU reported ready.
pub(super) fn boot(
    cfg: &RunConfig,
    started: Instant,
    stop: Option<&Arc<AtomicBool>>,
    observer: &mut dyn RunObserver,
) -> Result<(Booted, LiveParts), RunError> {
    // Per-task probes (only outside the init pid namespace) come later;
    // their one-off perf cost runs meanwhile.
    let per_task = cfg.host_probes != ProbeMode::Off && !pids_are_the_kernels();
    let warm_up = per_task.then(TaskEventsWarmUp::start);
    let kvm = open_kvm()?;
    let host = facts::gather(Some(kvm.get_api_version()));
    let bus_cycle_ns = apic_bus_cycle_ns(&kvm);
    let timer = timer_settings(cfg.period_ns, bus_cycle_ns)?;
    let paused_set = pause_set(cfg)?;
    let subject = cfg.subject() as usize;
    let setup = guest_setup(cfg, timer);
    // The vCPU threads first, so the probes on the subject's thread open
    // while the VM is built (each takes 1-2 ms here); the callback rings
    // (not yet filtered on our hrtimer) then open on a thread of their own
    // while the guest boots and probes.
    let (mut vcpus, events) = spawn_threads(setup.vcpus)?;
    let subject_tid = vcpus.0[subject].tid();
    let (machine, probes) = std::thread::scope(|scope| {
        let create = scope.spawn(|| Vm::create(&kvm, &setup));
        let probes = open_probes(cfg, &kvm, subject_tid, &host, timer).map(|mut p| {
            p.prepare_sw_timer();
            p
        });
        let machine = create
            .join()
            .unwrap_or_else(|_| Err(VmError::Memory("VM set-up thread panicked".into())));
        (machine, probes)
    });
    let mut machine = machine?;
    let mut probes = probes?;
    if let Some(w) = warm_up {
        w.finish();
    }
    let (mem, tsc_khz, fds) = (
        machine.mem().clone(),
        machine.tsc_khz(),
        machine.take_vcpus(),
    );
    probes
        .attach_stats(StatsReader::open(fds[subject].fd()).map_err(|e| e.to_string()))
        .map_err(RunError::Config)?;
    for (handle, vcpu) in vcpus.0.iter().zip(fds) {
        handle.give(vcpu);
    }
    note_threads(&vcpus, subject, observer);
    for h in &vcpus.0 {
        h.go();
    }
    let stop = stop.map(|s| s.as_ref());
    if cfg.host_probes != ProbeMode::Off {
        probe_phase(&mut vcpus, &events, stop, &mut probes, &mem)?;
    }
    let ready = wait_all(&mut vcpus, &events, stop, ready)?;

    // The epoch is the first ready report; every vCPU's TSC is converted
    // from its own ready report, so their TSCs need not agree.
    let ready_at = ready
        .iter()
        .map(|s| s.at)
        .min()
        .unwrap_or_else(Instant::now);
    note_ready(&probes, ready_at, started, observer);
    let booted = Booted {
        vcpus,
        mem,
        tsc_khz,
        timer,
        bus_cycle_ns,
        host,
        paused_set,
        subject_tid,
        ready,
        ready_at,
        _machine: machine,
    };
    Ok((booted, (events, probes)))
}

/// The vCPUs the pauses stop, each one that exists.
fn pause_set(cfg: &RunConfig) -> Result<Vec<u32>, RunError> {
    let set = cfg.paused_vcpus();
    if let Some(&bad) = set.iter().find(|&&i| i >= cfg.vcpus.max(1)) {
        return Err(RunError::Config(format!(
            "--pause-vcpus: vCPU {bad} does not exist (--vcpus {})",
            cfg.vcpus
        )));
    }
    Ok(set)
}

/// What the guest is told. The probe phase shows the host our hrtimer
/// before the timer is armed; without host probes there is nothing to learn.
fn guest_setup(cfg: &RunConfig, timer: TimerSettings) -> GuestSetup {
    let probe_count = match cfg.host_probes {
        ProbeMode::Off => 0,
        _ => (u64::from(timer.initial_count) * PROBE_NS.min(timer.actual_period_ns)
            / timer.actual_period_ns.max(1))
        .clamp(1, u64::from(u32::MAX)) as u32,
    };
    GuestSetup {
        apic: cfg.apic,
        idle: cfg.idle,
        timer,
        timer_mode: cfg.timer,
        period_ns: timer.actual_period_ns,
        vcpus: cfg.vcpus.max(1),
        probe_count,
    }
}

/// Starts one thread per vCPU; each waits for its vCPU and for `go`.
fn spawn_threads(count: u32) -> Result<(Vcpus, Receiver<VcpuEvent>), RunError> {
    let (tx, rx) = mpsc::channel();
    let mut vcpus = Vcpus(Vec::with_capacity(count as usize));
    for index in 0..count {
        let handle =
            VcpuHandle::spawn_waiting(index, tx.clone()).map_err(|source| RunError::Guest {
                vcpu: index,
                source,
            })?;
        vcpus.0.push(handle);
    }
    Ok((vcpus, rx))
}

/// Opens the host probes on the subject's thread, before the guest runs.
fn open_probes(
    cfg: &RunConfig,
    kvm: &Kvm,
    subject_tid: i32,
    host: &HostInfo,
    timer: TimerSettings,
) -> Result<HostProbes, RunError> {
    if cfg.host_probes == ProbeMode::Off {
        return Ok(HostProbes::off(ProbeMode::Off));
    }
    let longest = match cfg.plan {
        PausePlan::Watch { .. } => WATCH_RING_PAUSE_NS,
        _ => cfg.pause_lengths().into_iter().max().unwrap_or(0),
    };
    let ring = timer_sampler::ring_bytes(longest, timer.actual_period_ns);
    HostProbes::open(
        cfg.host_probes,
        subject_tid,
        kvm,
        &cfg.kernel_lacks,
        host.kvm_backend.as_deref(),
        ring,
    )
    .map_err(RunError::Config)
}

/// Notes the vCPU threads (and that they share the host's CPUs).
fn note_threads(vcpus: &Vcpus, subject: usize, observer: &mut dyn RunObserver) {
    let count = vcpus.0.len();
    if count == 1 {
        observer.note(&format!("vCPU thread tid {}", vcpus.0[subject].tid()));
        return;
    }
    let tids: Vec<String> = vcpus.0.iter().map(|h| h.tid().to_string()).collect();
    observer.note(&format!(
        "{count} vCPUs, thread tids {}; table and host columns: vCPU {subject}",
        tids.join(",")
    ));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if count > cpus {
        observer.note(&format!(
            "{count} vCPUs share {cpus} host CPUs: a vCPU that waits for a CPU takes its ticks late or coalesced"
        ));
    }
}

/// Every guest probed and waits with its timer stopped: the host set-up
/// runs now, so it never holds the vCPU thread off the CPU while the timer
/// is armed (on an unfixed kernel a stall of more than a period makes the
/// hv timer fall back before any pause). Then every guest may go on.
fn probe_phase(
    vcpus: &mut Vcpus,
    events: &Receiver<VcpuEvent>,
    stop: Option<&AtomicBool>,
    probes: &mut HostProbes,
    mem: &GuestMemoryMmap,
) -> Result<(), RunError> {
    wait_all(vcpus, events, stop, probed)?;
    probes.start_sw_timer().map_err(RunError::Config)?;
    for i in 0..vcpus.0.len() as u32 {
        slots::start_guest(mem, i)?;
    }
    Ok(())
}

/// Notes the probes that are missing and when the guest was ready.
fn note_ready(
    probes: &HostProbes,
    ready_at: Instant,
    started: Instant,
    observer: &mut dyn RunObserver,
) {
    let missing: Vec<String> = probes
        .report()
        .missing
        .iter()
        .map(|m| format!("{} ({})", m.probe, m.reason))
        .collect();
    if !missing.is_empty() {
        observer.note(&format!("host probes missing: {}", missing.join("; ")));
    }
    observer.note(&format!(
        "guest ready after {:.3} ms",
        ready_at.duration_since(started).as_secs_f64() * 1e3
    ));
}
