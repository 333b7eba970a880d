//! One `tickburst run`: boot the guest, warm up, pause/resume cycles with the
//! kick method, collect, analyse, and build the record.
//!
//! Data flows one way: guest ring -> [`Collector`] -> samples ->
//! [`analysis`] -> [`Record`].

use crate::analysis::{self, HostMark, PauseSpan, PauseStats, Samples, Window};
use crate::arch::timer::{settings_for_period, TimerError, TimerSettings};
use crate::collector::{Collector, TscClock};
use crate::host::HostInfo;
use crate::kstats::StatsReader;
use crate::pause::PauseMethod;
use crate::probes::{HostProbes, ProbeMode};
use crate::record::{
    ConfigRecord, GuestCounters, Record, RecordVerdict, Timing, FORMAT, FORMAT_VERSION,
};
use crate::samples::RawSamples;
use crate::supervisor;
use crate::vcpu::{VcpuError, VcpuEvent, VcpuHandle};
use crate::verdict::{Kind, Thresholds};
use crate::vm::{self, GuestSetup, Vm, VmError};
use guest_payload::abi::{self, ApicMode, GuestResults, IdleMode, TimerMode};
use serde::{Deserialize, Serialize};
use std::mem::offset_of;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// How long the guest has to report ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);
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
    #[error("guest failed to start: {0}")]
    Guest(VcpuError),
    /// The guest did not report ready in time.
    #[error("guest not ready within {timeout:?}; vCPU: {regs}")]
    NotReady {
        /// The limit.
        timeout: Duration,
        /// vCPU registers when it was stopped.
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
        }
    }
}

/// Things a caller watches while a run goes on.
pub trait RunObserver {
    /// A report window is complete.
    fn window(&mut self, _window: &Window) {}
    /// A message about progress (pause, resume, ready).
    fn note(&mut self, _text: &str) {}
    /// `watch`: a detected pause, one second after its resume (or at the end).
    fn detected(&mut self, _index: usize, _pause: &DetectedPause, _stats: &PauseStats) {}
}

/// A pause `watch` found in the guest's ticks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectedPause {
    /// From the last tick before the gap to the first tick after it.
    pub span: PauseSpan,
    /// Whether the VMM's own loop stalled over the same span (the whole
    /// process was stopped or frozen), the cross-check with host time.
    /// `false`: only the vCPU stalled.
    pub vmm_stalled: bool,
}

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
        IdleMode::SelfTestFault => "self-test-fault",
    }
}

/// Converts the period into LAPIC settings, turning errors into a message.
pub fn timer_settings(period_ns: u64, bus_cycle_ns: u64) -> Result<TimerSettings, RunError> {
    settings_for_period(period_ns, bus_cycle_ns)
        .map_err(|e: TimerError| RunError::Config(e.to_string()))
}

fn read_results(mem: &GuestMemoryMmap) -> GuestCounters {
    let base = crate::arch::layout::SHARED_ADDR + abi::RESULTS_OFFSET as u64;
    let read = |offset: usize| {
        mem.read_obj::<u64>(GuestAddress(base + offset as u64))
            .unwrap_or(0)
    };
    GuestCounters {
        tick_count: read(offset_of!(GuestResults, tick_count)),
        spurious_count: read(offset_of!(GuestResults, spurious_count)),
    }
}

fn read_ready_tsc(mem: &GuestMemoryMmap) -> u64 {
    let addr = crate::arch::layout::SHARED_ADDR
        + (abi::RESULTS_OFFSET + offset_of!(GuestResults, ready_tsc)) as u64;
    mem.read_obj::<u64>(GuestAddress(addr)).unwrap_or(0)
}

/// State of a run after the guest is ready.
struct Live<'a> {
    cfg: &'a RunConfig,
    mem: GuestMemoryMmap,
    epoch: Instant,
    collector: Collector,
    pauses: Vec<PauseSpan>,
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

    /// Drains the ring and prints complete windows; checks stop and vCPU.
    fn poll(&mut self, observer: &mut dyn RunObserver) -> Step {
        let now = self.now_ns();
        if now.saturating_sub(self.last_poll_ns) > VMM_STALL_NS {
            self.stalls.push(PauseSpan {
                start_ns: self.last_poll_ns,
                end_ns: now,
            });
        }
        self.last_poll_ns = now;
        self.collector.drain(&self.mem, now);
        self.mark_host(now, false);
        if self.cfg.detect {
            self.detect(now, false, observer);
        }
        let interval = self.cfg.interval_ns;
        while (self.printed_windows + 1) * interval + WINDOW_SLACK_NS <= now {
            let start = self.printed_windows * interval;
            let pauses = self.pauses_until(now);
            let samples = Samples {
                period_ns: self.cfg.period_ns,
                interval_ns: interval,
                end_ns: start + interval,
                ticks_ns: self.collector.ticks_ns(),
                pauses: &pauses,
                host: &self.host_marks,
                host_scope: &self.host_scope,
            };
            observer.window(&analysis::window_at(&samples, start));
            self.printed_windows += 1;
        }
        if self
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
        {
            return Step::Interrupted;
        }
        match self.events.try_recv() {
            Ok(VcpuEvent::Exited(Err(e))) => Step::Failed(e.to_string()),
            Ok(VcpuEvent::Exited(Ok(_))) => Step::Failed("vCPU thread stopped unexpectedly".into()),
            _ => Step::Continue,
        }
    }

    /// `watch`: finds new gaps in the ticks and reports each one a second
    /// after its resume (all of them when `flush`).
    fn detect(&mut self, now: u64, flush: bool, observer: &mut dyn RunObserver) {
        let ticks = self.collector.ticks_ns();
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

    /// Pauses with an open end closed at `now`.
    fn pauses_until(&self, now: u64) -> Vec<PauseSpan> {
        self.pauses
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
}

/// Boots the guest and runs the configured cycles.
///
/// `started` is when the process started (for `timing.setup_us`); `stop` is
/// set by a Ctrl-C / SIGTERM handler to end the run early with a partial
/// record. The vCPU is always resumed and stopped before this returns.
pub fn run(
    cfg: &RunConfig,
    started: Instant,
    stop: Option<Arc<AtomicBool>>,
    observer: &mut dyn RunObserver,
) -> Result<RunOutput, RunError> {
    let kvm = vm::open_kvm()?;
    let host = HostInfo::gather(Some(kvm.get_api_version()));
    let bus_cycle_ns = vm::apic_bus_cycle_ns(&kvm);
    let timer = timer_settings(cfg.period_ns, bus_cycle_ns)?;
    let setup = GuestSetup {
        apic: cfg.apic,
        idle: cfg.idle,
        timer,
        timer_mode: cfg.timer,
        period_ns: timer.actual_period_ns,
    };
    let Vm {
        vm: _vm,
        mem,
        vcpu,
        tsc_khz,
    } = Vm::create(&kvm, &setup)?;

    let stats = StatsReader::open(&vcpu).map_err(|e| e.to_string());
    let (tx, rx) = mpsc::channel();
    let mut handle = VcpuHandle::spawn(vcpu, mem.clone(), tx).map_err(RunError::Guest)?;
    let mut probes = match cfg.host_probes {
        ProbeMode::Off => HostProbes::off(ProbeMode::Off),
        mode => HostProbes::open(mode, handle.tid(), stats, host.kvm_backend.as_deref())
            .map_err(RunError::Config)?,
    };
    observer.note(&format!("vCPU thread tid {}", handle.tid()));
    handle.go();
    let ready_at = wait_ready(&mut handle, &rx, stop.as_deref())?;
    probes.start_sw_timer().map_err(RunError::Config)?;
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

    let clock = TscClock {
        sync_tsc: read_ready_tsc(&mem),
        tsc_khz,
    };
    let mut live = Live {
        cfg,
        mem: mem.clone(),
        epoch: ready_at,
        collector: Collector::new(clock),
        pauses: Vec::new(),
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
        let (start_ns, end_ns) = match cfg.pause_method {
            PauseMethod::Kick => {
                let Some(paused_at) = handle.pause() else {
                    step = live.poll(observer);
                    if matches!(step, Step::Continue) {
                        step = Step::Failed("vCPU did not acknowledge the pause".into());
                    }
                    break;
                };
                let start_ns = live.since_epoch(paused_at);
                live.pauses.push(PauseSpan {
                    start_ns,
                    end_ns: u64::MAX,
                });
                observer.note(&format!(
                    "pause {} (kick) at {:.3} s",
                    cycle + 1,
                    start_ns as f64 / 1e9
                ));
                step = live.run_until(start_ns + pause_ns, observer);
                // Always resume, whatever ended the pause.
                let resumed_at = handle.resume().unwrap_or_else(Instant::now);
                (start_ns, live.since_epoch(resumed_at))
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
                match supervisor::request_pause(method, pause_ns, handle.tid()) {
                    Ok((start, end)) => {
                        let now = live.now_ns();
                        live.mark_host(now, true);
                        (
                            start.saturating_sub(epoch_mono),
                            end.saturating_sub(epoch_mono),
                        )
                    }
                    Err(e) => {
                        step = Step::Failed(format!("{} pause: {e}", method.name()));
                        break;
                    }
                }
            }
        };
        match live.pauses.last_mut() {
            Some(p) if p.end_ns == u64::MAX => p.end_ns = end_ns,
            _ => live.pauses.push(PauseSpan { start_ns, end_ns }),
        }
        observer.note(&format!(
            "resume {} at {:.3} s (paused {:.1} ms)",
            cycle + 1,
            end_ns as f64 / 1e9,
            end_ns.saturating_sub(start_ns) as f64 / 1e6
        ));
        if matches!(step, Step::Continue) {
            step = live.poll(observer);
        }
        if matches!(step, Step::Continue) {
            step = live.run_until(end_ns + cfg.observe_ns, observer);
        }
    }

    let end_ns = live.now_ns();
    handle.stop();
    live.collector.drain(&live.mem, end_ns);
    live.mark_host(end_ns, true);
    if cfg.detect {
        live.detect(end_ns, true, observer);
        live.pauses = live.detected.iter().map(|d| d.span).collect();
    }
    let outcome = match step {
        Step::Continue => Outcome::Completed,
        Step::Interrupted => Outcome::Interrupted,
        Step::Failed(why) => Outcome::Failed(why),
    };

    let pauses = live.pauses_until(end_ns);
    let mut ticks = live.collector.ticks_ns().to_vec();
    ticks.sort_unstable();
    let raw = RawSamples::new(&Samples {
        period_ns: timer.actual_period_ns,
        interval_ns: cfg.interval_ns,
        end_ns,
        ticks_ns: &ticks,
        pauses: &pauses,
        host: &live.host_marks,
        host_scope: &live.host_scope,
    });
    // The same code path as `tickburst analyze` of the saved record.
    let analysis = raw
        .analyze()
        .map_err(|e| RunError::Config(format!("internal: {e}")))?;
    let mut host = host;
    host.timer_backend = Some(backend_of(&live.probes, ready_at));
    host.probes = Some(live.probes.report().clone());
    // Windows not printed live (the last, partial one).
    for w in analysis.windows.iter().skip(live.printed_windows as usize) {
        observer.window(w);
    }
    let us_since_start =
        |ns: u64| (ready_at.duration_since(started).as_nanos() as f64 + ns as f64) / 1e3;
    let stats = live.collector.stats();
    let ms = |ns: u64| ns as f64 / 1e6;
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
        },
        host,
        timing: Timing {
            setup_us: us_since_start(0),
            first_tick_us: ticks.first().map(|&t| us_since_start(t)),
        },
        steady: analysis.steady,
        lost_ticks: stats.lost_ticks,
        collector: stats,
        guest: read_results(&live.mem),
        windows: analysis.windows,
        pauses: analysis.pauses,
        verdict: RecordVerdict {
            thresholds: cfg.thresholds,
            kind: Kind::NotExercised,
            pauses: Vec::new(),
        },
        samples: raw,
        sweep: None,
        detected: cfg.detect.then(|| live.detected.clone()),
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
    let switches: Vec<(f64, bool)> = probes
        .switches()
        .iter()
        .map(|s| ((s.mono_ns as f64 - epoch_mono as f64) / 1e6, s.hv))
        .collect();
    analysis::timer_backend(Ok(&switches))
}

fn wait_ready(
    handle: &mut VcpuHandle,
    rx: &Receiver<VcpuEvent>,
    stop: Option<&AtomicBool>,
) -> Result<Instant, RunError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match rx.recv_timeout(Duration::from_millis(10)) {
            Ok(VcpuEvent::Ready { at }) => return Ok(at),
            Ok(VcpuEvent::Exited(Err(e))) => return Err(RunError::Guest(e)),
            Ok(VcpuEvent::Exited(Ok(regs))) => {
                return Err(RunError::NotReady {
                    timeout: READY_TIMEOUT,
                    regs,
                })
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(RunError::NotReady {
                    timeout: READY_TIMEOUT,
                    regs: "(vCPU thread gone)".into(),
                })
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            handle.stop();
            return Err(RunError::Interrupted);
        }
        if Instant::now() > deadline {
            handle.stop();
            let regs = match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(VcpuEvent::Exited(Ok(regs))) => regs,
                Ok(VcpuEvent::Exited(Err(e))) => return Err(RunError::Guest(e)),
                _ => "(unavailable)".into(),
            };
            return Err(RunError::NotReady {
                timeout: READY_TIMEOUT,
                regs,
            });
        }
    }
}
