//! Command-line interface: argument parsing, validation with the allowed
//! ranges, the live table and the summary.

use crate::analysis::{PauseStats, Window};
use crate::pause::PauseMethod;
use crate::probes::ProbeMode;
use crate::record::Record;
use crate::report::Format;
use crate::run::{DetectedPause, RunConfig, RunObserver};
use crate::units::{format_duration_ns, parse_duration_ns};
use crate::verdict::{self, Thresholds};
use clap::{Parser, Subcommand, ValueEnum};
use guest_payload::abi::{ApicMode, IdleMode, TimerMode};
use std::path::PathBuf;

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: usage or runtime error.
pub const EXIT_ERROR: i32 = 2;
/// Exit code: KVM not usable on this host (`git bisect run` skips).
pub const EXIT_KVM_UNAVAILABLE: i32 = 125;
/// Exit code: interrupted by Ctrl-C / SIGTERM; partial report printed/written.
pub const EXIT_INTERRUPTED: i32 = 130;

/// Shortest accepted period when the host does not say (`kvm.min_timer_period_us` unreadable).
pub const FALLBACK_MIN_PERIOD_NS: u64 = 200_000;
/// Longest accepted period.
pub const MAX_PERIOD_NS: u64 = 1_000_000_000;
/// Longest accepted warm-up, pause or observation.
pub const MAX_PHASE_NS: u64 = 3_600_000_000_000;
/// Accepted report windows.
pub const INTERVAL_RANGE_NS: (u64, u64) = (10_000_000, 60_000_000_000);
/// Shortest accepted pause.
pub const MIN_PAUSE_NS: u64 = 1_000_000;
/// Most pause cycles.
pub const MAX_CYCLES: u32 = 1000;
/// Most vCPUs (the host's KVM may allow fewer: checked when the VM is made).
pub const MAX_VCPUS: u32 = crate::arch::layout::MAX_VCPUS;

/// tickburst: what happens to a guest's periodic LAPIC timer when its vCPU
/// is paused and resumed.
#[derive(Debug, Parser)]
#[command(name = "tickburst", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot the built-in guest, pause and resume its vCPU, measure the burst.
    Run(RunArgs),
    /// Print what this host can show (KVM, timer back end, probes).
    Doctor(DoctorArgs),
    /// Judge a saved run (RUN.json) or a bpftrace log again, with any thresholds.
    Analyze(AnalyzeArgs),
    /// Regression verdict over a small matrix: exit 0 ok, 1 burst, 125 not
    /// exercised, 2 error (for `git bisect run`).
    Check(CheckArgs),
    /// Several pause lengths in one VM; fits burst size against pause length.
    Sweep(SweepArgs),
    /// Predict the burst of an unpatched and a patched kernel after a stall.
    Model(ModelArgs),
    /// Boot the guest and run until Ctrl-C or --duration, reporting every
    /// pause caused from outside (kill -STOP, cgroup freeze, pinning).
    Watch(WatchArgs),
    /// Every KVM VM on this host, live: hv/sw timer rates per vCPU, back end,
    /// longest run of callbacks in one interrupt, fallbacks (root or CAP_PERFMON).
    Top(crate::top::TopArgs),
}

/// Arguments of `tickburst model`.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Guest timer period (the bug report's 4768 Hz is 209.7us).
    #[arg(long, allow_hyphen_values = true, default_value = "1ms")]
    pub period: String,
    /// How long the hv timer was stalled: a pause (10s) or a lag (51d).
    #[arg(long, allow_hyphen_values = true, default_value = "10s")]
    pub lag: String,
    /// Cost of one apic_timer_fn callback (default 100ns, an assumption).
    #[arg(long, allow_hyphen_values = true, conflicts_with = "cost_from")]
    pub cost: Option<String>,
    /// Take the cost from a saved run (`run --json`) whose longest run of
    /// callbacks inside one interrupt has 100 or more callbacks.
    #[arg(long, value_name = "RUN.json")]
    pub cost_from: Option<PathBuf>,
    /// Hard-lockup watchdog threshold.
    #[arg(long, allow_hyphen_values = true, default_value = "10s")]
    pub watchdog: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

impl ModelArgs {
    /// Validates and runs the model, saying where the cost came from.
    pub fn predict(&self) -> Result<(crate::model::Prediction, crate::model::CostSource), String> {
        use crate::model::CostSource;
        let period = duration_in("period", &self.period, 1_000, MAX_PERIOD_NS)?;
        let lag = duration_in("lag", &self.lag, 0, u64::MAX / 2)?;
        let (cost, source) = match (&self.cost, &self.cost_from) {
            (Some(c), _) => (duration_in("cost", c, 1, MAX_PERIOD_NS)?, CostSource::Given),
            (None, Some(path)) => {
                let record = crate::record::Record::load(path)
                    .map_err(|e| format!("--cost-from {}: {e}", path.display()))?;
                crate::model::measured_cost(&record)
                    .map_err(|e| format!("--cost-from {}: {e}", path.display()))?
            }
            (None, None) => (crate::model::DEFAULT_COST_NS, CostSource::Assumed),
        };
        let watchdog = duration_in("watchdog", &self.watchdog, 1_000_000, MAX_PHASE_NS)?;
        Ok((crate::model::predict(period, lag, cost, watchdog), source))
    }
}

/// Arguments of `tickburst watch`.
#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    /// Stop after this long (default: run until Ctrl-C).
    #[arg(long, allow_hyphen_values = true)]
    pub duration: Option<String>,
    /// Guest, timer and output.
    #[command(flatten)]
    pub guest: GuestArgs,
}

impl WatchArgs {
    /// Validates; without `--duration` the run lasts until Ctrl-C.
    pub fn to_config(&self, min_period_ns: u64) -> Result<RunConfig, String> {
        let mut cfg = self.guest.to_config(min_period_ns)?;
        cfg.warmup_ns = match &self.duration {
            Some(d) => duration_in("duration", d, 1_000_000, MAX_PHASE_NS)?,
            None => u64::MAX / 4,
        };
        cfg.cycles = 0;
        cfg.detect = true;
        Ok(cfg)
    }
}

/// Arguments of `tickburst check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Pause of each case (100ms to 60s).
    #[arg(long, allow_hyphen_values = true, default_value = "3s")]
    pub pause: String,
    /// Replace every case's timer period (default: chosen from the host, see
    /// the README).
    #[arg(long, allow_hyphen_values = true)]
    pub period: Option<String>,
    /// Thresholds, format, picture.
    #[command(flatten)]
    pub report: VerdictArgs,
    /// Also write the JSON result to this file (atomically).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// What `check` and `analyze` share: the thresholds of the verdict, the
/// output format and the picture.
#[derive(Debug, Clone, clap::Args)]
pub struct VerdictArgs {
    /// Thresholds.
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: FormatArg,
    /// Draw an SVG picture to this file (atomically).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

impl CheckArgs {
    /// The period override, validated (`min_ns`: the host's shortest period).
    pub fn period_ns(&self, min_ns: u64) -> Result<Option<u64>, String> {
        self.period
            .as_deref()
            .map(|p| duration_in("period", p, min_ns, MAX_PERIOD_NS))
            .transpose()
    }

    /// The pause length, validated.
    pub fn pause_ns(&self) -> Result<u64, String> {
        duration_in("pause", &self.pause, 100_000_000, 60_000_000_000)
    }
}

impl Command {
    /// Whether the command pauses the whole VMM process, so it must run
    /// under the [`crate::supervisor`].
    pub fn needs_supervisor(&self) -> bool {
        match self {
            Command::Run(a) => a.vm.pause_method.needs_supervisor(),
            Command::Sweep(a) => a.vm.pause_method.needs_supervisor(),
            Command::Check(_) => true,
            _ => false,
        }
    }
}

/// Burst thresholds (`run`, `check`, `analyze`).
#[derive(Debug, Clone, clap::Args)]
pub struct ThresholdArgs {
    /// Burst if the host runs more than this many times the nominal number of
    /// timer callbacks in the first second after resume.
    #[arg(long, allow_hyphen_values = true, default_value_t = verdict::DEFAULT_MAX_HOST_RATIO)]
    pub max_host_ratio: f64,
    /// Burst if the guest takes more than this many times its nominal ticks
    /// in the first 100 ms after resume.
    #[arg(long, allow_hyphen_values = true, default_value_t = verdict::DEFAULT_MAX_GUEST_RATIO)]
    pub max_guest_ratio: f64,
}

impl ThresholdArgs {
    /// Validates: finite and positive.
    pub fn to_thresholds(&self) -> Result<Thresholds, String> {
        for (name, v) in [
            ("max-host-ratio", self.max_host_ratio),
            ("max-guest-ratio", self.max_guest_ratio),
        ] {
            if !v.is_finite() || v <= 0.0 {
                return Err(format!(
                    "--{name} {v} is out of range: must be a positive number"
                ));
            }
        }
        Ok(Thresholds {
            max_host_ratio: self.max_host_ratio,
            max_guest_ratio: self.max_guest_ratio,
        })
    }
}

/// Arguments of `tickburst analyze`.
#[derive(Debug, Clone, clap::Args)]
pub struct AnalyzeArgs {
    /// A record written by `run --json` (or `watch`, `sweep`).
    #[arg(
        required_unless_present = "from_bpftrace",
        conflicts_with = "from_bpftrace"
    )]
    pub record: Option<PathBuf>,
    /// Read the per-second log of the bug report's bpftrace script instead.
    #[arg(long, value_name = "FILE")]
    pub from_bpftrace: Option<PathBuf>,
    /// Thresholds, format, picture.
    #[command(flatten)]
    pub report: VerdictArgs,
    /// Write the re-analysed record to this file (records only).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// LAPIC access mode.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ApicArg {
    /// MSR access (x2APIC).
    X2apic,
    /// MMIO access at 0xFEE00000 (xAPIC).
    Xapic,
}

/// Guest idle loop.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum IdleArg {
    /// `sti; hlt`: the vCPU blocks in KVM between ticks.
    Hlt,
    /// A `pause` loop: the vCPU stays in guest mode.
    Spin,
    /// Self-test: HLT idle, and the guest writes hostile tick-ring contents
    /// (stamps from the past and the future, head jumps and regressions);
    /// they must be counted as invalid, never trusted.
    SelfTestHostile,
}

/// `--host-probes` ([`ProbeMode`], which keeps clap out of the record).
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ProbeModeArg {
    /// Use what this host offers; name what is missing.
    Auto,
    /// Fail (exit 2) if a probe cannot be opened.
    On,
    /// Guest-only.
    Off,
}

impl From<ProbeModeArg> for ProbeMode {
    fn from(m: ProbeModeArg) -> ProbeMode {
        match m {
            ProbeModeArg::Auto => ProbeMode::Auto,
            ProbeModeArg::On => ProbeMode::On,
            ProbeModeArg::Off => ProbeMode::Off,
        }
    }
}

/// `--format` of `check` and `analyze` ([`Format`], which keeps clap out of
/// the report).
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum FormatArg {
    /// Aligned text.
    Table,
    /// One JSON document.
    Json,
    /// KTAP version 1.
    Ktap,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Table => Format::Table,
            FormatArg::Json => Format::Json,
            FormatArg::Ktap => Format::Ktap,
        }
    }
}

/// LAPIC timer mode.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum TimerArg {
    /// LVT periodic mode (the subject).
    Periodic,
    /// One-shot, re-armed in the ISR (a control).
    Oneshot,
    /// TSC-deadline through IA32_TSC_DEADLINE (a control).
    TscDeadline,
}

/// Arguments shared by `run` and `sweep`: the phases, the pause method, and
/// the guest.
#[derive(Debug, Clone, clap::Args)]
pub struct VmArgs {
    /// Time the timer runs before the first pause.
    #[arg(long, allow_hyphen_values = true, default_value = "2s")]
    pub warmup: String,
    /// How to pause: kick the vCPU out of KVM_RUN, SIGSTOP the whole VMM
    /// process, or freeze its cgroup.
    #[arg(long, value_enum, default_value = "kick")]
    pub pause_method: PauseMethod,
    /// Observation after each resume.
    #[arg(long, allow_hyphen_values = true, default_value = "3s")]
    pub observe: String,
    /// Which vCPUs a kick pause stops: all, or indices and ranges (1, 0,2,
    /// 1-3). sigstop and freeze always stop all.
    #[arg(long, default_value = "all")]
    pub pause_vcpus: String,
    /// Guest, timer and output.
    #[command(flatten)]
    pub guest: GuestArgs,
}

/// Arguments shared by `run`, `sweep` and `watch`: the guest, its timer and
/// the output.
#[derive(Debug, Clone, clap::Args)]
pub struct GuestArgs {
    /// LAPIC timer period (e.g. 1ms, 200us); from kvm.min_timer_period_us to 1s.
    #[arg(long, allow_hyphen_values = true, default_value = "1ms")]
    pub period: String,
    /// Number of vCPUs (1 to 64, or what KVM allows), each with its own
    /// LAPIC timer, tick ring and row in the per-vCPU table.
    #[arg(long, allow_hyphen_values = true, default_value = "1")]
    pub vcpus: String,
    /// Width of one report line.
    #[arg(long, allow_hyphen_values = true, default_value = "1s")]
    pub interval: String,
    /// How the guest accesses its LAPIC.
    #[arg(long, value_enum, default_value = "x2apic")]
    pub apic: ApicArg,
    /// What the guest does between ticks.
    #[arg(long, value_enum, default_value = "hlt")]
    pub idle: IdleArg,
    /// LAPIC timer mode: periodic is the subject; oneshot and tsc-deadline
    /// are controls that must not burst.
    #[arg(long, value_enum, default_value = "periodic")]
    pub timer: TimerArg,
    /// Host-side probes: auto (use what the host offers), on (exit 2 if one
    /// cannot be opened), off (guest only).
    #[arg(long, value_enum, default_value = "auto")]
    pub host_probes: ProbeModeArg,
    /// Thresholds of the verdict in the record.
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
    /// Write the whole record as JSON to this file (atomically).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw an SVG picture to this file (atomically).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// Arguments of `tickburst run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Length of each pause.
    #[arg(long, allow_hyphen_values = true, default_value = "2s")]
    pub pause: String,
    /// Number of pause/resume cycles (0 runs without pausing).
    #[arg(long, default_value_t = 1)]
    pub cycles: u32,
    /// Guest, timer and output.
    #[command(flatten)]
    pub vm: VmArgs,
}

/// Arguments of `tickburst sweep`.
#[derive(Debug, Clone, clap::Args)]
pub struct SweepArgs {
    /// Pause lengths, comma-separated, run in this order in one VM.
    #[arg(long, allow_hyphen_values = true, default_value = "1s,2s,5s,10s")]
    pub pauses: String,
    /// Guest, timer and output.
    #[command(flatten)]
    pub vm: VmArgs,
}

/// Arguments of `tickburst doctor`.
#[derive(Debug, Clone, clap::Args)]
pub struct DoctorArgs {
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Folds clap's multi-line error into one line: the message and what it
/// names, without the usage block and tips.
pub fn one_line_usage_error(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let parts: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("Usage:"))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
        .collect();
    let joined = parts.join(" ");
    let joined = joined.strip_prefix("error: ").unwrap_or(&joined);
    format!("{joined} (see --help)")
}

fn duration_in(name: &str, text: &str, lo: u64, hi: u64) -> Result<u64, String> {
    let ns = parse_duration_ns(text).map_err(|e| format!("--{name}: {e}"))?;
    if ns < lo || ns > hi {
        return Err(format!(
            "--{name} {text} is out of range: allowed {} to {}",
            format_duration_ns(lo),
            format_duration_ns(hi)
        ));
    }
    Ok(ns)
}

impl VmArgs {
    /// Validates the arguments against the allowed ranges (see
    /// [`GuestArgs::to_config`]).
    pub fn to_config(&self, min_period_ns: u64, pauses_ns: Vec<u64>) -> Result<RunConfig, String> {
        let mut cfg = self.guest.to_config(min_period_ns)?;
        cfg.warmup_ns = duration_in("warmup", &self.warmup, 0, MAX_PHASE_NS)?;
        cfg.observe_ns = duration_in("observe", &self.observe, 0, MAX_PHASE_NS)?;
        cfg.pause_method = self.pause_method;
        let set = crate::vcpus::parse_pause_set(&self.pause_vcpus, cfg.vcpus)
            .map_err(|e| e.to_string())?;
        if set.len() != cfg.vcpus as usize {
            if self.pause_method != PauseMethod::Kick {
                return Err(format!(
                    "--pause-vcpus {}: --pause-method {} stops the whole VMM, so all vCPUs; use kick to pause some",
                    self.pause_vcpus,
                    self.pause_method.name()
                ));
            }
            cfg.pause_vcpus = Some(set);
        }
        cfg.pause_ns = pauses_ns.first().copied().unwrap_or(0);
        cfg.cycles = pauses_ns.len() as u32;
        Ok(cfg)
    }
}

impl GuestArgs {
    /// Validates the arguments against the allowed ranges. `min_period_ns` is
    /// the host's `kvm.min_timer_period_us` (KVM clamps shorter periods, which
    /// would make the measurement lie). Phases and pauses are left at their
    /// defaults: the caller sets them.
    pub fn to_config(&self, min_period_ns: u64) -> Result<RunConfig, String> {
        let period_ns = parse_duration_ns(&self.period).map_err(|e| format!("--period: {e}"))?;
        if period_ns < min_period_ns || period_ns > MAX_PERIOD_NS {
            return Err(format!(
                "--period {} is out of range: allowed {} (kvm.min_timer_period_us on this host; KVM clamps shorter periods) to {}",
                self.period,
                format_duration_ns(min_period_ns),
                format_duration_ns(MAX_PERIOD_NS)
            ));
        }
        let vcpus = match self.vcpus.trim().parse::<u32>() {
            Ok(n @ 1..=MAX_VCPUS) => n,
            _ => {
                return Err(format!(
                    "--vcpus {} is out of range: allowed 1 to {MAX_VCPUS}",
                    self.vcpus
                ))
            }
        };
        Ok(RunConfig {
            period_ns,
            vcpus,
            interval_ns: duration_in(
                "interval",
                &self.interval,
                INTERVAL_RANGE_NS.0,
                INTERVAL_RANGE_NS.1,
            )?,
            apic: match self.apic {
                ApicArg::X2apic => ApicMode::X2Apic,
                ApicArg::Xapic => ApicMode::XApic,
            },
            idle: match self.idle {
                IdleArg::Hlt => IdleMode::Hlt,
                IdleArg::Spin => IdleMode::Spin,
                IdleArg::SelfTestHostile => IdleMode::SelfTestHostile,
            },
            timer: match self.timer {
                TimerArg::Periodic => TimerMode::Periodic,
                TimerArg::Oneshot => TimerMode::OneShot,
                TimerArg::TscDeadline => TimerMode::TscDeadline,
            },
            host_probes: self.host_probes.into(),
            thresholds: self.thresholds.to_thresholds()?,
            ..RunConfig::default()
        })
    }
}

impl RunArgs {
    /// Validates against the allowed ranges (see [`VmArgs::to_config`]).
    pub fn to_config(&self, min_period_ns: u64) -> Result<RunConfig, String> {
        if self.cycles > MAX_CYCLES {
            return Err(format!(
                "--cycles {} is out of range: allowed 0 to {MAX_CYCLES}",
                self.cycles
            ));
        }
        let pause = duration_in("pause", &self.pause, MIN_PAUSE_NS, MAX_PHASE_NS)?;
        self.vm
            .to_config(min_period_ns, vec![pause; self.cycles as usize])
    }
}

impl SweepArgs {
    /// Validates the pause list and the rest.
    pub fn to_config(&self, min_period_ns: u64) -> Result<RunConfig, String> {
        let pauses = self
            .pauses
            .split(',')
            .map(|p| duration_in("pauses", p.trim(), MIN_PAUSE_NS, MAX_PHASE_NS))
            .collect::<Result<Vec<u64>, String>>()?;
        if pauses.len() < 2 || pauses.len() > MAX_CYCLES as usize {
            return Err(format!(
                "--pauses needs 2 to {MAX_CYCLES} lengths to fit a line, got {}",
                pauses.len()
            ));
        }
        let mut cfg = self.vm.to_config(min_period_ns, pauses.clone())?;
        cfg.sweep_ns = pauses;
        // The fit needs the whole first second after each resume.
        cfg.observe_ns = cfg
            .observe_ns
            .max(crate::analysis::AFTER_SPAN_NS + 100_000_000);
        Ok(cfg)
    }
}

/// Header of the live table (guest columns).
pub const TABLE_HEADER: &str = "     t_s     guest  expected";
/// Extra header when host probes are on.
pub const HOST_HEADER: &str =
    "  sw_timer  hv_timer       all  irq_inj     exits  halt_exits  scope";

/// Extra header with several vCPUs: every vCPU's ticks in the window, and
/// their sum.
pub const VCPUS_HEADER: &str = "  | ticks per vCPU (0 1 ...) = all";

/// The per-vCPU cells of a table line (empty with one vCPU).
pub fn vcpu_cells(vcpu_ticks: &[u64]) -> String {
    if vcpu_ticks.is_empty() {
        return String::new();
    }
    let cells: Vec<String> = vcpu_ticks.iter().map(u64::to_string).collect();
    format!(
        "  | {} = {}",
        cells.join(" "),
        vcpu_ticks.iter().sum::<u64>()
    )
}

fn cell(v: Option<u64>) -> String {
    v.map_or_else(|| "n/a".into(), |n| n.to_string())
}

/// One live table line.
pub fn window_line(w: &Window) -> String {
    let host = w.host.as_ref().map_or_else(String::new, |h| {
        format!(
            "  {:>8}  {:>8}  {:>8}  {:>7}  {:>8}  {:>10}  {}",
            cell(h.sw_timer),
            cell(h.hv_timer),
            cell(h.all),
            cell(h.irq_injections),
            cell(h.exits),
            cell(h.halt_exits),
            h.scope
        )
    });
    format!(
        "{:8.3}  {:8}  {:8.1}{}{}",
        w.t_ms / 1e3,
        w.guest_ticks,
        w.expected_ticks,
        host,
        if w.paused { "  PAUSED" } else { "" }
    )
}

/// Prints a line on stdout; a closed pipe (`| head`) is not an error: the run
/// goes on and still writes its record.
pub fn out(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// Prints windows as they complete (header before the first), and notes.
#[derive(Default)]
pub struct TablePrinter {
    header_done: bool,
}

impl RunObserver for TablePrinter {
    fn detected(&mut self, index: usize, pause: &DetectedPause, stats: &PauseStats) {
        out(&format!(
            "# detected {}\n{}",
            if pause.vmm_stalled {
                "(the VMM process was stopped too: SIGSTOP or freeze)"
            } else {
                "(only the vCPU stalled; the VMM kept running)"
            },
            pause_summary(index, stats)
        ));
    }
    fn window(&mut self, window: &Window, vcpu_ticks: &[u64]) {
        if !self.header_done {
            let host = if window.host.is_some() {
                HOST_HEADER
            } else {
                ""
            };
            let vcpus = if vcpu_ticks.is_empty() {
                ""
            } else {
                VCPUS_HEADER
            };
            out(&format!("{TABLE_HEADER}{host}{vcpus}"));
            self.header_done = true;
        }
        out(&(window_line(window) + &vcpu_cells(vcpu_ticks)));
    }
    fn note(&mut self, text: &str) {
        out(&format!("# {text}"));
    }
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "never".into(), |ms| format!("{ms:.1} ms"))
}

/// Summary lines of one pause.
pub fn pause_summary(index: usize, p: &PauseStats) -> String {
    format!(
        "pause {n}: {len:.1} ms (t={s:.3} s .. {e:.3} s){trunc}\n  \
         during pause: guest ticks {during}; missed ticks {missed}\n  \
         after resume: first 100 ms {t100} (burst ratio {burst:.2}), first 1 s {t1s}, \
         peak rate ratio {peak:.2}, catch-up {catch}",
        n = index + 1,
        len = p.end_ms - p.start_ms,
        s = p.start_ms / 1e3,
        e = p.end_ms / 1e3,
        trunc = if p.truncated {
            " [after-resume span cut short]"
        } else {
            ""
        },
        during = p.guest_ticks_during,
        missed = p.missed_ticks,
        t100 = p.ticks_first_100ms,
        burst = p.burst_ratio,
        t1s = p.ticks_first_1s,
        peak = p.peak_rate_ratio,
        catch = opt_ms(p.catch_up_ms),
    ) + &match (p.host_callbacks_during, p.host_callbacks_first_1s) {
        (Some(during), Some(first)) => format!(
            "\n  host timer callbacks: during pause {during}; first 1 s after resume {first} \
             (host burst ratio {:.2}); {}",
            p.host_burst_ratio.unwrap_or(0.0),
            crate::report::longest_run_text(p)
        ),
        _ => String::new(),
    }
}

/// The summary printed after a run.
pub fn summary(record: &Record) -> String {
    let st = &record.steady;
    let mut out = String::new();
    out.push_str(&format!(
        "steady: {} (nominal {:.1} Hz); inter-tick p50 {} p99 {} max {}; lost ticks {}\n",
        st.rate_hz.map_or_else(
            || "no rate (fewer than 2 ticks)".into(),
            |r| format!("{r:.1} Hz")
        ),
        st.nominal_hz,
        st.interval_p50_us
            .map_or_else(|| "-".into(), |v| format!("{v:.1} us")),
        st.interval_p99_us
            .map_or_else(|| "-".into(), |v| format!("{v:.1} us")),
        st.interval_max_us
            .map_or_else(|| "-".into(), |v| format!("{v:.1} us")),
        record.lost_ticks,
    ));
    out.push_str(&format!(
        "setup: guest ready {:.3} ms after start, first tick {}\n",
        record.timing.setup_us / 1e3,
        record
            .timing
            .first_tick_us
            .map_or_else(|| "never".into(), |us| format!("{:.3} ms", us / 1e3)),
    ));
    for (i, p) in record.pauses.iter().enumerate() {
        out.push_str(&pause_summary(i, p));
        out.push('\n');
    }
    if let Some(note) = record
        .samples
        .host_events
        .as_ref()
        .and_then(|e| e.loss_note())
    {
        out.push_str(&note);
        out.push('\n');
    }
    if let Some(b) = &record.host.timer_backend {
        out.push_str(&format!("timer back end: {}", b.kind));
        if let Some(r) = &b.reason {
            out.push_str(&format!(" ({r})"));
        }
        if let (true, Some(t)) = (b.fell_back_to_sw, b.fallback_ms) {
            out.push_str(&format!(
                " -- fell back from hv to sw at t={:.3} s and stayed there",
                t / 1e3
            ));
        }
        out.push('\n');
    }
    let v = &record.verdict;
    out.push_str(&format!("verdict: {}", v.kind.label()));
    for (i, p) in v.pauses.iter().enumerate() {
        out.push_str(&format!(
            "\n  pause {}: {} -- {}",
            i + 1,
            p.kind.label(),
            p.reasons.join("; ")
        ));
    }
    if let Some(o) = &v.outside_pauses {
        out.push_str(&format!(
            "\n  outside pauses: {} -- {}",
            o.kind.label(),
            o.reasons.join("; ")
        ));
    }
    out.push('\n');
    if let Some(v) = &record.vcpus {
        out.push_str(&crate::vcpus::table(v));
        out.push('\n');
    }
    out.push_str(&format!("outcome: {}", record.outcome));
    if let Some(e) = &record.error {
        out.push_str(&format!(" ({e})"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut argv = vec!["tickburst", "run"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).map(|c| match c.command {
            Command::Run(a) => a,
            _ => unreachable!("run args"),
        })
    }

    #[test]
    fn defaults_are_valid() {
        let cfg = args(&[]).unwrap().to_config(200_000).unwrap();
        assert_eq!(cfg.period_ns, 1_000_000);
        assert_eq!(cfg.pause_ns, 2_000_000_000);
        assert_eq!(cfg.apic, ApicMode::X2Apic);
        assert_eq!(cfg.idle, IdleMode::Hlt);
        assert!(cfg.sweep_ns.is_empty(), "a run is not a sweep");
        assert_eq!(cfg.vcpus, 1);
        assert_eq!(cfg.pause_vcpus, None);
    }

    #[test]
    fn vcpus_and_pause_sets() {
        let cfg = args(&["--vcpus", "4", "--pause-vcpus", "1"])
            .unwrap()
            .to_config(200_000)
            .unwrap();
        assert_eq!((cfg.vcpus, cfg.pause_vcpus.clone()), (4, Some(vec![1])));
        assert_eq!((cfg.subject(), cfg.paused_vcpus()), (1, vec![1]));
        let all = args(&["--vcpus", "3", "--pause-vcpus", "0-2"])
            .unwrap()
            .to_config(200_000)
            .unwrap();
        assert_eq!(all.pause_vcpus, None, "every vCPU is all");
        for (flags, wanted) in [
            (&["--vcpus", "0"][..], "allowed 1 to 64"),
            (&["--vcpus", "65"][..], "allowed 1 to 64"),
            (&["--vcpus", "two"][..], "--vcpus two"),
            (
                &["--vcpus", "2", "--pause-vcpus", "2"][..],
                "does not exist",
            ),
            (
                &[
                    "--vcpus",
                    "2",
                    "--pause-vcpus",
                    "1",
                    "--pause-method",
                    "sigstop",
                ][..],
                "stops the whole VMM",
            ),
        ] {
            let e = args(flags).unwrap().to_config(200_000).unwrap_err();
            assert!(e.contains(wanted), "{flags:?}: {e}");
        }
    }

    #[test]
    fn rejects_out_of_range_with_the_range() {
        let e = args(&["--period", "100us"])
            .unwrap()
            .to_config(200_000)
            .unwrap_err();
        assert!(e.contains("allowed 200us") && e.contains("1s"), "{e}");
        let e = args(&["--period", "0ms"])
            .unwrap()
            .to_config(200_000)
            .unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        let e = args(&["--pause", "-2s"])
            .unwrap()
            .to_config(200_000)
            .unwrap_err();
        assert!(e.starts_with("--pause"), "{e}");
        let e = args(&["--interval", "1ms"])
            .unwrap()
            .to_config(200_000)
            .unwrap_err();
        assert!(e.contains("allowed 10ms to 60s"), "{e}");
        let e = args(&["--period", "fast"])
            .unwrap()
            .to_config(200_000)
            .unwrap_err();
        assert!(e.starts_with("--period"), "{e}");
        assert!(args(&["--apic", "nope"]).is_err());
        assert!(args(&["--cycles", "-1"]).is_err());
    }

    #[test]
    fn window_line_marks_pauses() {
        let w = Window {
            t_ms: 2000.0,
            duration_ms: 1000.0,
            guest_ticks: 0,
            expected_ticks: 0.0,
            paused: true,
            host: None,
        };
        let line = window_line(&w);
        assert!(line.contains("2.000") && line.ends_with("PAUSED"), "{line}");
    }
}
