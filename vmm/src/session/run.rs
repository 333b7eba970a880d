//! One `tickburst run`: boot the guest, warm up, pause/resume cycles with the
//! kick method, collect, analyse, and build the record.
//!
//! Data flows one way: guest ring -> [`Collector`] -> samples ->
//! [`analysis`] -> [`Record`].

use crate::analysis::{self, HostMark, PauseSpan, PauseStats, Samples, Window};
use crate::arch::timer::{settings_for_period, TimerError, TimerSettings};
use crate::host::facts as host;
use crate::host::kstats::StatsReader;
use crate::host::probes::{HostProbes, ProbeMode};
use crate::irq_runs::HostEvents;
use crate::pause::method::PauseMethod;
use crate::pause::supervisor;
use crate::record::{
    ConfigRecord, GuestCounters, Record, RecordVerdict, Timing, FORMAT, FORMAT_VERSION,
};
use crate::samples::RawSamples;
use crate::session::collector::{Collector, SlotRing, TscClock};
use crate::vcpus::{VcpuRecord, VcpusRecord};
use crate::verdict::{Kind, Thresholds};
use crate::vstate::vcpu::{VcpuError, VcpuEvent, VcpuEventKind, VcpuHandle};
use crate::vstate::vm::{self, GuestSetup, Vm, VmError};
use guest_payload::abi::{self, ApicMode, GuestResults, IdleMode, TimerMode};
use std::mem::offset_of;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// How long the guest has to report each start-up step (probe, ready).
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);
/// Length of the guest's probe one-shot (at most one period).
pub const PROBE_NS: u64 = 1_000_000;
/// How often the collector drains the ring. At the shortest period KVM
/// allows (200 us) that is 10 ticks a drain; the ring holds 65536.
pub const POLL_INTERVAL: Duration = Duration::from_millis(2);
/// A window is printed this long after it ends, so its last ticks are in.
const WINDOW_SLACK_NS: u64 = 5_000_000;
/// How often host counts are read.
pub const HOST_MARK_NS: u64 = 10_000_000;

/// Errors that end a run before it produced a record.
#[derive(Debug, Error)]
pub enum RunError {
    /// KVM cannot be used on this host (exit code 125).
    #[error("{0}")]
    KvmUnavailable(String),
    /// The configuration is invalid.
    #[error("{0}")]
    Config(String),
    /// VM setup failed.
    #[error("VM setup: {0}")]
    Setup(VmError),
    /// The guest failed before it was ready.
    #[error("guest failed to start on vCPU {vcpu}: {source}")]
    Guest {
        /// Which vCPU.
        vcpu: u32,
        /// What went wrong.
        source: VcpuError,
    },
    /// The guest did not report ready in time.
    #[error("guest not ready within {timeout:?} on vCPU {vcpu}; vCPU: {regs}")]
    NotReady {
        /// The limit.
        timeout: Duration,
        /// The first vCPU that was not ready.
        vcpu: u32,
        /// Its registers when it was stopped.
        regs: String,
    },
    /// Ctrl-C or SIGTERM before the guest was ready.
    #[error("interrupted before the guest was ready")]
    Interrupted,
}

impl From<VmError> for RunError {
    fn from(e: VmError) -> Self {
        match e {
            VmError::KvmUnavailable(msg) => RunError::KvmUnavailable(msg),
            e @ VmError::TooManyVcpus { .. } => RunError::Config(e.to_string()),
            other => RunError::Setup(other),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Timer period, ns.
    pub period_ns: u64,
    /// Time before the first pause, ns.
    pub warmup_ns: u64,
    /// Length of each pause, ns.
    pub pause_ns: u64,
    /// Number of pause/resume cycles (0: no pause).
    pub cycles: u32,
    /// Observation after each resume, ns.
    pub observe_ns: u64,
    /// Report window, ns.
    pub interval_ns: u64,
    /// LAPIC access mode.
    pub apic: ApicMode,
    /// Guest idle loop.
    pub idle: IdleMode,
    /// LAPIC timer mode.
    pub timer: TimerMode,
    /// Host-side probes.
    pub host_probes: ProbeMode,
    /// Verdict thresholds.
    pub thresholds: Thresholds,
    /// How the VM is paused.
    pub pause_method: PauseMethod,
    /// Pause lengths of a sweep, ns (when not empty, used instead of
    /// `pause_ns` x `cycles`).
    pub sweep_ns: Vec<u64>,
    /// `watch`: detect pauses the VMM did not cause (gaps in the guest's
    /// ticks) and report each after its first second.
    pub detect: bool,
    /// Number of vCPUs, each with its own LAPIC timer and tick ring.
    pub vcpus: u32,
    /// The vCPUs a kick pause stops, sorted (`None`: all). sigstop and
    /// freeze always stop all.
    pub pause_vcpus: Option<Vec<u32>>,
}

impl RunConfig {
    /// The length of each pause, in order.
    pub fn pause_lengths(&self) -> Vec<u64> {
        if self.sweep_ns.is_empty() {
            vec![self.pause_ns; self.cycles as usize]
        } else {
            self.sweep_ns.clone()
        }
    }

    /// The vCPUs the pauses stop, sorted.
    pub fn paused_vcpus(&self) -> Vec<u32> {
        match (&self.pause_vcpus, self.pause_method) {
            (Some(set), PauseMethod::Kick) => set.clone(),
            _ => (0..self.vcpus.max(1)).collect(),
        }
    }

    /// The vCPU the top-level figures and host probes follow: the first
    /// paused one.
    pub fn subject(&self) -> u32 {
        self.paused_vcpus().first().copied().unwrap_or(0)
    }
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            period_ns: 1_000_000,
            warmup_ns: 2_000_000_000,
            pause_ns: 2_000_000_000,
            cycles: 1,
            observe_ns: 3_000_000_000,
            interval_ns: 1_000_000_000,
            apic: ApicMode::X2Apic,
            idle: IdleMode::Hlt,
            timer: TimerMode::Periodic,
            host_probes: ProbeMode::Auto,
            thresholds: Thresholds::default(),
            pause_method: PauseMethod::Kick,
            sweep_ns: Vec::new(),
            detect: false,
            vcpus: 1,
            pause_vcpus: None,
        }
    }
}

/// Things a caller watches while a run goes on.
pub trait RunObserver {
    /// A report window of the subject vCPU is complete; `vcpu_ticks` has
    /// every vCPU's ticks in the same window (empty with one vCPU).
    fn window(&mut self, _window: &Window, _vcpu_ticks: &[u64]) {}
    /// A message about progress (pause, resume, ready).
    fn note(&mut self, _text: &str) {}
    /// `watch`: a detected pause, one second after its resume (or at the end).
    fn detected(&mut self, _index: usize, _pause: &DetectedPause, _stats: &PauseStats) {}
}

pub use tickburst_analysis::record::DetectedPause;

/// A stall of the VMM's poll loop longer than this is recorded.
pub const VMM_STALL_NS: u64 = 50_000_000;

/// An observer that ignores everything.
pub struct Quiet;
impl RunObserver for Quiet {}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every cycle ran.
    Completed,
    /// Ctrl-C / SIGTERM ended it early; the record is partial.
    Interrupted,
    /// The guest or vCPU failed after it was ready; the record is partial.
    Failed(String),
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Interrupted => "interrupted",
            Outcome::Failed(_) => "failed",
        }
    }
}

/// A finished (or cut short) run.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// How it ended.
    pub outcome: Outcome,
    /// Everything measured.
    pub record: Record,
}

fn name_apic(mode: ApicMode) -> &'static str {
    match mode {
        ApicMode::X2Apic => "x2apic",
        ApicMode::XApic => "xapic",
    }
}

fn name_timer(mode: TimerMode) -> &'static str {
    match mode {
        TimerMode::Periodic => "periodic",
        TimerMode::OneShot => "oneshot",
        TimerMode::TscDeadline => "tsc-deadline",
    }
}

fn name_idle(mode: IdleMode) -> &'static str {
    match mode {
        IdleMode::Hlt => "hlt",
        IdleMode::Spin => "spin",
        IdleMode::SelfTestHostile => "self-test-hostile",
        IdleMode::SelfTestFault => "self-test-fault",
    }
}

/// Converts the period into LAPIC settings, turning errors into a message.
pub fn timer_settings(period_ns: u64, bus_cycle_ns: u64) -> Result<TimerSettings, RunError> {
    settings_for_period(period_ns, bus_cycle_ns)
        .map_err(|e: TimerError| RunError::Config(e.to_string()))
}

/// The guest's own counters in vCPU `vcpu`'s slot.
fn read_results(mem: &GuestMemoryMmap, vcpu: u32) -> GuestCounters {
    let base = abi::slot_addr(vcpu) + abi::RESULTS_OFFSET as u64;
    let read = |offset: usize| {
        mem.read_obj::<u64>(GuestAddress(base + offset as u64))
            .unwrap_or(0)
    };
    GuestCounters {
        tick_count: read(offset_of!(GuestResults, tick_count)),
        spurious_count: read(offset_of!(GuestResults, spurious_count)),
    }
}

/// The guest TSC at vCPU `vcpu`'s ready report.
fn read_ready_tsc(mem: &GuestMemoryMmap, vcpu: u32) -> u64 {
    let addr =
        abi::slot_addr(vcpu) + (abi::RESULTS_OFFSET + offset_of!(GuestResults, ready_tsc)) as u64;
    mem.read_obj::<u64>(GuestAddress(addr)).unwrap_or(0)
}

/// The vCPU threads of a run. Dropping it (on any path, errors and panics
/// included) resumes and stops every vCPU.
struct Vcpus(Vec<VcpuHandle>);

impl Vcpus {
    /// Asks every thread to stop at once, then joins them one by one.
    fn stop_all(&mut self) {
        for h in &self.0 {
            h.request_stop();
        }
        for h in &mut self.0 {
            h.stop();
        }
    }
}

impl Drop for Vcpus {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// State of a run after the guest is ready.
struct Live<'a> {
    cfg: &'a RunConfig,
    mem: GuestMemoryMmap,
    epoch: Instant,
    /// One per vCPU, by index.
    collectors: Vec<Collector>,
    /// Each vCPU's pauses (an open pause ends at `u64::MAX`).
    pauses: Vec<Vec<PauseSpan>>,
    /// Index of the subject vCPU (the table, host probes, verdict).
    subject: usize,
    printed_windows: u64,
    events: Receiver<VcpuEvent>,
    stop: Option<Arc<AtomicBool>>,
    probes: HostProbes,
    host_marks: Vec<HostMark>,
    host_scope: String,
    next_mark_ns: u64,
    last_poll_ns: u64,
    stalls: Vec<PauseSpan>,
    scanned: usize,
    detected: Vec<DetectedPause>,
    reported: usize,
}

enum Step {
    Continue,
    Interrupted,
    Failed(String),
}

impl Live<'_> {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn since_epoch(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Drains every vCPU's ring.
    fn drain(&mut self, now: u64) {
        for (vcpu, c) in self.collectors.iter_mut().enumerate() {
            c.drain(
                &SlotRing {
                    mem: &self.mem,
                    vcpu: vcpu as u32,
                },
                now,
            );
        }
    }

    /// Every vCPU's ticks in `[from, to)` (empty with one vCPU).
    fn vcpu_ticks(&self, from: u64, to: u64) -> Vec<u64> {
        if self.collectors.len() < 2 {
            return Vec::new();
        }
        self.collectors
            .iter()
            .map(|c| analysis::count_between(c.ticks_ns(), from, to))
            .collect()
    }

    /// Drains the rings and prints complete windows; checks stop and vCPUs.
    fn poll(&mut self, observer: &mut dyn RunObserver) -> Step {
        let now = self.now_ns();
        if now.saturating_sub(self.last_poll_ns) > VMM_STALL_NS {
            self.stalls.push(PauseSpan {
                start_ns: self.last_poll_ns,
                end_ns: now,
            });
        }
        self.last_poll_ns = now;
        self.drain(now);
        self.mark_host(now, false);
        if self.cfg.detect {
            self.detect(now, false, observer);
        }
        let interval = self.cfg.interval_ns;
        while (self.printed_windows + 1) * interval + WINDOW_SLACK_NS <= now {
            let start = self.printed_windows * interval;
            let pauses = self.pauses_until(self.subject, now);
            let samples = Samples {
                period_ns: self.cfg.period_ns,
                interval_ns: interval,
                end_ns: start + interval,
                ticks_ns: self.collectors[self.subject].ticks_ns(),
                pauses: &pauses,
                host: &self.host_marks,
                host_scope: &self.host_scope,
                host_events: None,
            };
            let window = analysis::window_at(&samples, start);
            observer.window(&window, &self.vcpu_ticks(start, start + interval));
            self.printed_windows += 1;
        }
        if self
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
        {
            return Step::Interrupted;
        }
        while let Ok(event) = self.events.try_recv() {
            match event.kind {
                VcpuEventKind::Exited(Err(e)) => {
                    return Step::Failed(format!("vCPU {}: {e}", event.vcpu))
                }
                VcpuEventKind::Exited(Ok(_)) => {
                    return Step::Failed(format!("vCPU {} stopped unexpectedly", event.vcpu))
                }
                VcpuEventKind::Ready { .. } | VcpuEventKind::Probed => {}
            }
        }
        Step::Continue
    }

    /// `watch`: finds new gaps in the subject's ticks and reports each one a
    /// second after its resume (all of them when `flush`).
    fn detect(&mut self, now: u64, flush: bool, observer: &mut dyn RunObserver) {
        let ticks = self.collectors[self.subject].ticks_ns();
        let period = self.cfg.period_ns;
        for span in analysis::detect_gaps(ticks, self.scanned, period, analysis::DETECT_GAP_PERIODS)
        {
            let vmm_stalled = self
                .stalls
                .iter()
                .any(|s| s.start_ns < span.end_ns && span.start_ns < s.end_ns);
            self.detected.push(DetectedPause { span, vmm_stalled });
        }
        self.scanned = ticks.len();
        while let Some(d) = self.detected.get(self.reported) {
            let after = d.span.end_ns + analysis::AFTER_SPAN_NS + WINDOW_SLACK_NS;
            if !flush && after > now {
                break;
            }
            let spans: Vec<PauseSpan> = self.detected.iter().map(|d| d.span).collect();
            let samples = Samples {
                period_ns: period,
                interval_ns: self.cfg.interval_ns,
                end_ns: now,
                ticks_ns: ticks,
                pauses: &spans,
                host: &self.host_marks,
                host_scope: &self.host_scope,
                host_events: None,
            };
            let limit = spans
                .get(self.reported + 1)
                .map_or(now, |n| n.start_ns)
                .min(now);
            let stats = analysis::pause_stats(&samples, &d.span, limit);
            observer.detected(self.reported, d, &stats);
            self.reported += 1;
        }
    }

    /// Reads host counts when the next 10 ms mark is due (or `force`).
    fn mark_host(&mut self, now: u64, force: bool) {
        if self.probes.report().enabled.is_empty() || (!force && now < self.next_mark_ns) {
            return;
        }
        let counts = self.probes.read();
        self.host_marks.push(HostMark { t_ns: now, counts });
        self.next_mark_ns = (now / HOST_MARK_NS + 1) * HOST_MARK_NS;
    }

    /// vCPU `vcpu`'s pauses, an open end closed at `now`.
    fn pauses_until(&self, vcpu: usize, now: u64) -> Vec<PauseSpan> {
        self.pauses[vcpu]
            .iter()
            .map(|p| PauseSpan {
                start_ns: p.start_ns,
                end_ns: if p.end_ns == u64::MAX { now } else { p.end_ns },
            })
            .collect()
    }

    /// Polls until `until_ns` (since epoch).
    fn run_until(&mut self, until_ns: u64, observer: &mut dyn RunObserver) -> Step {
        loop {
            let step = self.poll(observer);
            if !matches!(step, Step::Continue) {
                return step;
            }
            let now = self.now_ns();
            if now >= until_ns {
                return Step::Continue;
            }
            std::thread::sleep(POLL_INTERVAL.min(Duration::from_nanos(until_ns - now)));
        }
    }

    /// One kick pause of the vCPUs in `set`: all are asked to park at once,
    /// the pause lasts `pause_ns` from when the subject parked, then all are
    /// released together. Returns the subject's span, or why it failed.
    fn kick_pause(
        &mut self,
        vcpus: &Vcpus,
        set: &[u32],
        cycle: usize,
        pause_ns: u64,
        observer: &mut dyn RunObserver,
    ) -> Result<(PauseSpan, Step), Step> {
        for &i in set {
            vcpus.0[i as usize].request_pause();
        }
        let mut starts = Vec::with_capacity(set.len());
        for &i in set {
            match vcpus.0[i as usize].wait_paused() {
                Some(at) => starts.push(self.since_epoch(at)),
                None => {
                    // Released again when the run stops its vCPUs.
                    let step = self.poll(observer);
                    return Err(match step {
                        Step::Continue => {
                            Step::Failed(format!("vCPU {i} did not acknowledge the pause"))
                        }
                        other => other,
                    });
                }
            }
        }
        for (&i, &start_ns) in set.iter().zip(&starts) {
            self.pauses[i as usize].push(PauseSpan {
                start_ns,
                end_ns: u64::MAX,
            });
        }
        let start_ns = self.pauses[self.subject]
            .last()
            .map_or_else(|| self.now_ns(), |p| p.start_ns);
        observer.note(&format!(
            "pause {} (kick{}) at {:.3} s",
            cycle + 1,
            if self.collectors.len() > 1 {
                format!(" vCPUs {}", crate::vcpus::list_text(set))
            } else {
                String::new()
            },
            start_ns as f64 / 1e9
        ));
        let step = self.run_until(start_ns + pause_ns, observer);
        // Always resume, whatever ended the pause.
        for &i in set {
            vcpus.0[i as usize].request_resume();
        }
        for &i in set {
            let end = vcpus.0[i as usize]
                .wait_resumed()
                .unwrap_or_else(Instant::now);
            let end_ns = self.since_epoch(end);
            if let Some(p) = self.pauses[i as usize].last_mut() {
                p.end_ns = end_ns.max(p.start_ns);
            }
        }
        let span = self.pauses[self.subject]
            .last()
            .copied()
            .unwrap_or(PauseSpan {
                start_ns,
                end_ns: self.now_ns(),
            });
        Ok((span, step))
    }
}

/// Boots the guest and runs the configured cycles.
///
/// `started` is when the process started (for `timing.setup_us`); `stop` is
/// set by a Ctrl-C / SIGTERM handler to end the run early with a partial
/// record. Every vCPU is always resumed and stopped before this returns.
pub fn run(
    cfg: &RunConfig,
    started: Instant,
    stop: Option<Arc<AtomicBool>>,
    observer: &mut dyn RunObserver,
) -> Result<RunOutput, RunError> {
    let kvm = vm::open_kvm()?;
    let host = host::gather(Some(kvm.get_api_version()));
    let bus_cycle_ns = vm::apic_bus_cycle_ns(&kvm);
    let timer = timer_settings(cfg.period_ns, bus_cycle_ns)?;
    let paused_set = cfg.paused_vcpus();
    if let Some(&bad) = paused_set.iter().find(|&&i| i >= cfg.vcpus.max(1)) {
        return Err(RunError::Config(format!(
            "--pause-vcpus: vCPU {bad} does not exist (--vcpus {})",
            cfg.vcpus
        )));
    }
    let subject = cfg.subject() as usize;
    // The probe phase shows the host our hrtimer before the timer is armed;
    // without host probes there is nothing to learn.
    let probe_count = match cfg.host_probes {
        ProbeMode::Off => 0,
        _ => (u64::from(timer.initial_count) * PROBE_NS.min(timer.actual_period_ns)
            / timer.actual_period_ns.max(1))
        .clamp(1, u64::from(u32::MAX)) as u32,
    };
    let setup = GuestSetup {
        apic: cfg.apic,
        idle: cfg.idle,
        timer,
        timer_mode: cfg.timer,
        period_ns: timer.actual_period_ns,
        vcpus: cfg.vcpus.max(1),
        probe_count,
    };
    // `machine` holds the VM fd with its memory until the end of the run;
    // every vCPU fd carries its own memory handle (see `Vm`).
    let mut machine = Vm::create(&kvm, &setup)?;
    let (mem, tsc_khz, fds) = (
        machine.mem().clone(),
        machine.tsc_khz(),
        machine.take_vcpus(),
    );
    let vcpu_count = fds.len();

    let stats = StatsReader::open(fds[subject].fd()).map_err(|e| e.to_string());
    let (tx, rx) = mpsc::channel();
    let mut vcpus = Vcpus(Vec::with_capacity(vcpu_count));
    for (index, fd) in fds.into_iter().enumerate() {
        let index = index as u32;
        let handle =
            VcpuHandle::spawn(index, fd, tx.clone()).map_err(|source| RunError::Guest {
                vcpu: index,
                source,
            })?;
        vcpus.0.push(handle);
    }
    drop(tx);
    let subject_tid = vcpus.0[subject].tid();
    let mut probes = match cfg.host_probes {
        ProbeMode::Off => HostProbes::off(ProbeMode::Off),
        mode => {
            // `watch` has no pauses of its own: size for an outside stop of
            // 10 s at least.
            let longest = cfg.pause_lengths().into_iter().max().unwrap_or(0);
            let longest = longest.max(10_000_000_000);
            let ring = crate::host::timer_sampler::ring_bytes(longest, timer.actual_period_ns);
            HostProbes::open(mode, subject_tid, stats, host.kvm_backend.as_deref(), ring)
                .map_err(RunError::Config)?
        }
    };
    if vcpu_count > 1 {
        let tids: Vec<String> = vcpus.0.iter().map(|h| h.tid().to_string()).collect();
        observer.note(&format!(
            "{vcpu_count} vCPUs, thread tids {}; table and host columns: vCPU {subject}",
            tids.join(",")
        ));
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if vcpu_count > cpus {
            observer.note(&format!(
                "{vcpu_count} vCPUs share {cpus} host CPUs: a vCPU that waits for a CPU takes its ticks late or coalesced"
            ));
        }
    } else {
        observer.note(&format!("vCPU thread tid {subject_tid}"));
    }
    for h in &vcpus.0 {
        h.go();
    }
    if probe_count != 0 {
        // Every guest probed and waits with its timer stopped: the host
        // set-up runs now, so it never holds the vCPU thread off the CPU
        // while the timer is armed (on an unfixed kernel a stall of more
        // than a period makes the hv timer fall back before any pause).
        wait_all(&mut vcpus, &rx, stop.as_deref(), Phase::Probed)?;
        probes.start_sw_timer().map_err(RunError::Config)?;
        for i in 0..vcpu_count as u32 {
            vm::start_guest(&mem, i)?;
        }
    }
    let ready = wait_all(&mut vcpus, &rx, stop.as_deref(), Phase::Ready)?;
    // The epoch is the first ready report; every vCPU's TSC is converted
    // from its own ready report, so their TSCs need not agree.
    let ready_at = ready.iter().copied().min().unwrap_or_else(Instant::now);
    let missing: Vec<String> = probes
        .report()
        .missing
        .iter()
        .map(|m| format!("{} ({})", m.probe, m.reason))
        .collect();
    if !missing.is_empty() {
        observer.note(&format!("host probes missing: {}", missing.join("; ")));
    }
    let host_scope = probes
        .report()
        .sw_timer_scope
        .clone()
        .unwrap_or_else(|| "vcpu".into());
    observer.note(&format!(
        "guest ready after {:.3} ms",
        ready_at.duration_since(started).as_secs_f64() * 1e3
    ));

    let collectors = ready
        .iter()
        .enumerate()
        .map(|(i, at)| {
            Collector::new(TscClock {
                sync_tsc: read_ready_tsc(&mem, i as u32),
                tsc_khz,
                sync_ns: at.saturating_duration_since(ready_at).as_nanos() as u64,
            })
        })
        .collect();
    let mut live = Live {
        cfg,
        mem: mem.clone(),
        epoch: ready_at,
        collectors,
        pauses: vec![Vec::new(); vcpu_count],
        subject,
        printed_windows: 0,
        events: rx,
        stop,
        probes,
        host_marks: Vec::new(),
        host_scope,
        next_mark_ns: 0,
        last_poll_ns: 0,
        stalls: Vec::new(),
        scanned: 0,
        detected: Vec::new(),
        reported: 0,
    };
    live.mark_host(0, true);

    let mut step = live.run_until(cfg.warmup_ns, observer);
    let epoch_mono =
        supervisor::monotonic_ns().saturating_sub(ready_at.elapsed().as_nanos() as u64);
    for (cycle, &pause_ns) in cfg.pause_lengths().iter().enumerate() {
        if !matches!(step, Step::Continue) {
            break;
        }
        let span = match cfg.pause_method {
            PauseMethod::Kick => {
                match live.kick_pause(&vcpus, &paused_set, cycle, pause_ns, observer) {
                    Ok((span, after)) => {
                        step = after;
                        span
                    }
                    Err(failed) => {
                        step = failed;
                        break;
                    }
                }
            }
            method => {
                // The whole process stops: take host counts right before
                // and right after, since none can be read in between.
                let now = live.now_ns();
                live.mark_host(now, true);
                observer.note(&format!(
                    "pause {} ({}) requested at {:.3} s",
                    cycle + 1,
                    method.name(),
                    now as f64 / 1e9
                ));
                match supervisor::request_pause(method, pause_ns, subject_tid) {
                    Ok((start, end)) => {
                        let now = live.now_ns();
                        live.mark_host(now, true);
                        let span = PauseSpan {
                            start_ns: start.saturating_sub(epoch_mono),
                            end_ns: end.saturating_sub(epoch_mono),
                        };
                        for pauses in &mut live.pauses {
                            pauses.push(span);
                        }
                        span
                    }
                    Err(e) => {
                        step = Step::Failed(format!("{} pause: {e}", method.name()));
                        break;
                    }
                }
            }
        };
        observer.note(&format!(
            "resume {} at {:.3} s (paused {:.1} ms)",
            cycle + 1,
            span.end_ns as f64 / 1e9,
            span.end_ns.saturating_sub(span.start_ns) as f64 / 1e6
        ));
        if matches!(step, Step::Continue) {
            step = live.poll(observer);
        }
        if matches!(step, Step::Continue) {
            step = live.run_until(span.end_ns + cfg.observe_ns, observer);
        }
    }

    let end_ns = live.now_ns();
    vcpus.stop_all();
    live.drain(end_ns);
    live.mark_host(end_ns, true);
    if cfg.detect {
        live.detect(end_ns, true, observer);
        let spans: Vec<PauseSpan> = live.detected.iter().map(|d| d.span).collect();
        // Every other vCPU: the gaps in its own ticks.
        for (i, pauses) in live.pauses.iter_mut().enumerate() {
            *pauses = if i == subject {
                spans.clone()
            } else {
                let ticks = live.collectors[i].ticks_ns();
                analysis::detect_gaps(ticks, 0, cfg.period_ns, analysis::DETECT_GAP_PERIODS)
            };
        }
    }
    let outcome = match step {
        Step::Continue => Outcome::Completed,
        Step::Interrupted => Outcome::Interrupted,
        Step::Failed(why) => Outcome::Failed(why),
    };

    let end_counts = live.host_marks.last().map(|m| m.counts).unwrap_or_default();
    let host_events = live.probes.host_events(epoch_mono, &end_counts);
    let samples_of = |vcpu: usize, host: &[HostMark], events: Option<&HostEvents>| {
        let pauses = live.pauses_until(vcpu, end_ns);
        let mut ticks = live.collectors[vcpu].ticks_ns().to_vec();
        ticks.sort_unstable();
        RawSamples::new(&Samples {
            period_ns: timer.actual_period_ns,
            interval_ns: cfg.interval_ns,
            end_ns,
            ticks_ns: &ticks,
            pauses: &pauses,
            host,
            host_scope: &live.host_scope,
            host_events: events,
        })
    };
    let raw = samples_of(subject, &live.host_marks, host_events.as_ref());
    // The same code path as `tickburst analyze` of the saved record.
    let internal = |e: crate::samples::SamplesError| RunError::Config(format!("internal: {e}"));
    let analysis = raw.analyze().map_err(internal)?;
    // `watch` pauses are the ones each vCPU's ticks show.
    let paused_set: Vec<u32> = if cfg.detect {
        (0..vcpu_count as u32)
            .filter(|&i| !live.pauses[i as usize].is_empty())
            .collect()
    } else {
        paused_set
    };
    let multi = if vcpu_count > 1 {
        let mut list = Vec::with_capacity(vcpu_count);
        for vcpu in 0..vcpu_count {
            let samples = samples_of(vcpu, &[], None);
            let (steady, pauses) =
                crate::vcpus::figures(&samples, &raw.pauses).map_err(internal)?;
            list.push(VcpuRecord {
                vcpu: vcpu as u32,
                paused: paused_set.contains(&(vcpu as u32)),
                steady,
                pauses,
                guest: read_results(&live.mem, vcpu as u32),
                collector: live.collectors[vcpu].stats(),
                samples,
            });
        }
        Some(VcpusRecord {
            subject: subject as u32,
            paused: paused_set.clone(),
            totals: crate::vcpus::totals(&list),
            list,
        })
    } else {
        None
    };
    let mut host = host;
    host.timer_backend = Some(backend_of(&live.probes, ready_at));
    host.probes = Some(live.probes.report().clone());
    // Windows not printed live (the last, partial one).
    for w in analysis.windows.iter().skip(live.printed_windows as usize) {
        let start = (w.t_ms * 1e6).round() as u64;
        let end = start + (w.duration_ms * 1e6).round() as u64;
        observer.window(w, &live.vcpu_ticks(start, end));
    }
    let us_since_start =
        |ns: u64| (ready_at.duration_since(started).as_nanos() as f64 + ns as f64) / 1e3;
    let stats = live.collectors[subject].stats();
    let ms = |ns: u64| ns as f64 / 1e6;
    let first_tick = raw.tick_deltas_ns.first().copied();
    let record = Record {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        tickburst_version: env!("CARGO_PKG_VERSION").into(),
        outcome: outcome.label().into(),
        error: match &outcome {
            Outcome::Failed(why) => Some(why.clone()),
            _ => None,
        },
        config: ConfigRecord {
            period_ns: cfg.period_ns,
            actual_period_ns: timer.actual_period_ns,
            initial_count: timer.initial_count,
            divisor: timer.divisor,
            apic_bus_cycle_ns: bus_cycle_ns,
            apic: name_apic(cfg.apic).into(),
            idle: name_idle(cfg.idle).into(),
            timer: name_timer(cfg.timer).into(),
            pause_method: cfg.pause_method.name().into(),
            warmup_ms: ms(cfg.warmup_ns),
            pause_ms: ms(cfg.pause_ns),
            cycles: cfg.pause_lengths().len() as u32,
            pause_lengths_ms: cfg.pause_lengths().into_iter().map(ms).collect(),
            observe_ms: ms(cfg.observe_ns),
            interval_ms: ms(cfg.interval_ns),
            tsc_khz,
            vcpus: vcpu_count as u32,
            pause_vcpus: paused_set,
        },
        host,
        timing: Timing {
            setup_us: us_since_start(0),
            first_tick_us: first_tick.map(us_since_start),
        },
        steady: analysis.steady,
        lost_ticks: stats.lost_ticks,
        collector: stats,
        guest: read_results(&live.mem, subject as u32),
        windows: analysis.windows,
        pauses: analysis.pauses,
        verdict: RecordVerdict {
            thresholds: cfg.thresholds,
            kind: Kind::NotExercised,
            pauses: Vec::new(),
            outside_pauses: None,
        },
        samples: raw,
        sweep: None,
        detected: cfg.detect.then(|| live.detected.clone()),
        vcpus: multi,
    };
    let mut record = record;
    if !cfg.sweep_ns.is_empty() {
        record.sweep = Some(crate::sweep::summarize(&record));
    }
    record.judge(&cfg.thresholds);
    Ok(RunOutput { outcome, record })
}

/// Classifies the hv/sw switches seen by the probes.
fn backend_of(probes: &HostProbes, epoch: Instant) -> analysis::TimerBackend {
    if !probes.report().enabled.iter().any(|p| p == "hv_state") {
        let why = probes
            .report()
            .missing
            .iter()
            .find(|m| m.probe == "hv_state")
            .map_or_else(|| "host probes off".to_string(), |m| m.reason.clone());
        return analysis::timer_backend(Err(why));
    }
    let epoch_mono = supervisor::monotonic_ns().saturating_sub(epoch.elapsed().as_nanos() as u64);
    // Switches before the epoch belong to the guest's probe phase, not to
    // the timer the run measures.
    let switches: Vec<(f64, bool)> = probes
        .switches()
        .iter()
        .filter(|s| s.mono_ns >= epoch_mono)
        .map(|s| ((s.mono_ns - epoch_mono) as f64 / 1e6, s.hv))
        .collect();
    analysis::timer_backend(Ok(&switches))
}

/// A start-up report every vCPU gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `STATUS_PROBED`.
    Probed,
    /// `STATUS_READY`.
    Ready,
}

/// Waits until every vCPU gave the report of `phase`; returns when each did.
fn wait_all(
    vcpus: &mut Vcpus,
    rx: &Receiver<VcpuEvent>,
    stop: Option<&AtomicBool>,
    phase: Phase,
) -> Result<Vec<Instant>, RunError> {
    let mut ready: Vec<Option<Instant>> = vec![None; vcpus.0.len()];
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match rx.recv_timeout(Duration::from_millis(10)) {
            Ok(VcpuEvent { vcpu, kind }) => match kind {
                VcpuEventKind::Ready { .. } | VcpuEventKind::Probed => {
                    let at = match (kind, phase) {
                        (VcpuEventKind::Ready { at }, Phase::Ready) => at,
                        (VcpuEventKind::Probed, Phase::Probed) => Instant::now(),
                        _ => continue,
                    };
                    if let Some(slot) = ready.get_mut(vcpu as usize) {
                        *slot = Some(at);
                    }
                    if ready.iter().all(Option::is_some) {
                        return Ok(ready.into_iter().flatten().collect());
                    }
                }
                VcpuEventKind::Exited(Err(source)) => return Err(RunError::Guest { vcpu, source }),
                VcpuEventKind::Exited(Ok(regs)) => {
                    return Err(RunError::NotReady {
                        timeout: READY_TIMEOUT,
                        vcpu,
                        regs,
                    })
                }
            },
            Err(RecvTimeoutError::Disconnected) => {
                return Err(RunError::NotReady {
                    timeout: READY_TIMEOUT,
                    vcpu: first_missing(&ready),
                    regs: "(vCPU thread gone)".into(),
                })
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            vcpus.stop_all();
            return Err(RunError::Interrupted);
        }
        if Instant::now() > deadline {
            let missing = first_missing(&ready);
            vcpus.stop_all();
            // The stopped threads report their registers.
            let mut regs = "(unavailable)".to_string();
            while let Ok(VcpuEvent { vcpu, kind }) = rx.recv_timeout(Duration::from_millis(500)) {
                match kind {
                    VcpuEventKind::Exited(Err(source)) => {
                        return Err(RunError::Guest { vcpu, source })
                    }
                    VcpuEventKind::Exited(Ok(r)) if vcpu == missing => regs = r,
                    _ => {}
                }
            }
            return Err(RunError::NotReady {
                timeout: READY_TIMEOUT,
                vcpu: missing,
                regs,
            });
        }
    }
}

/// The first vCPU that has not reported ready.
fn first_missing(ready: &[Option<Instant>]) -> u32 {
    ready.iter().position(Option::is_none).unwrap_or(0) as u32
}
