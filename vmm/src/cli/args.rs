//! The command line: the commands and the arguments of the ones that boot a
//! VM. Every default comes from [`crate::session::config`] (or the
//! analysis crate), every mode name from the analysis crate's
//! [`tickburst_analysis::names`].

use crate::cli::arg_limits::{shown, shown_list};
use crate::cli::name_args::parser;
use crate::cli::report_args::{AnalyzeArgs, CheckArgs, DoctorArgs, ModelArgs, ThresholdArgs};
use crate::cli::top_args::TopArgs;
use crate::session::config::{
    DEFAULT_APIC, DEFAULT_HOST_PROBES, DEFAULT_IDLE, DEFAULT_INTERVAL_NS, DEFAULT_OBSERVE_NS,
    DEFAULT_PAUSE_METHOD, DEFAULT_PAUSE_NS, DEFAULT_PERIOD_NS, DEFAULT_SUMMARY_EVERY_NS,
    DEFAULT_SWEEP_PAUSES_NS, DEFAULT_TIMER, DEFAULT_VCPUS, DEFAULT_WARMUP_NS,
};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tickburst_analysis::names::{Apic, Idle, PauseMethod, ProbeMode, Timer};

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
    Top(TopArgs),
}

impl Command {
    /// Whether the command reads tracefs (host probes, `doctor`, `top`): on
    /// a host without tracefs mounted it is mounted privately first
    /// ([`crate::host::tracefs::mount_private`]).
    pub fn uses_tracefs(&self) -> bool {
        match self {
            Command::Run(a) => a.vm.guest.host_probes != ProbeMode::Off,
            Command::Sweep(a) => a.vm.guest.host_probes != ProbeMode::Off,
            Command::Watch(a) => a.guest.host_probes != ProbeMode::Off,
            Command::Check(_) | Command::Doctor(_) | Command::Top(_) => true,
            Command::Analyze(_) | Command::Model(_) => false,
        }
    }

    /// Whether the command pauses the whole VMM process, so it must run
    /// under the [`crate::pause::supervisor`].
    pub fn needs_supervisor(&self) -> bool {
        match self {
            Command::Run(a) => a.vm.pause_method.stops_whole_process(),
            Command::Sweep(a) => a.vm.pause_method.stops_whole_process(),
            Command::Check(_) => true,
            _ => false,
        }
    }
}

/// Arguments of `tickburst run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Length of each pause.
    #[arg(long, allow_hyphen_values = true, default_value_t = shown(DEFAULT_PAUSE_NS))]
    pub pause: String,
    /// Number of pause/resume cycles (0 runs without pausing).
    #[arg(long, default_value_t = crate::session::config::DEFAULT_CYCLES)]
    pub cycles: u32,
    /// Guest, timer and output.
    #[command(flatten)]
    pub vm: VmArgs,
}

/// Arguments of `tickburst sweep`.
#[derive(Debug, Clone, clap::Args)]
pub struct SweepArgs {
    /// Pause lengths, comma-separated, run in this order in one VM.
    #[arg(long, allow_hyphen_values = true, default_value_t = shown_list(DEFAULT_SWEEP_PAUSES_NS))]
    pub pauses: String,
    /// Guest, timer and output.
    #[command(flatten)]
    pub vm: VmArgs,
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

/// Arguments shared by `run` and `sweep`: the phases, the pause method, and
/// the guest.
#[derive(Debug, Clone, clap::Args)]
pub struct VmArgs {
    /// Time the timer runs before the first pause.
    #[arg(long, allow_hyphen_values = true, default_value_t = shown(DEFAULT_WARMUP_NS))]
    pub warmup: String,
    /// How to pause: kick the vCPU out of KVM_RUN, SIGSTOP the whole VMM
    /// process, or freeze its cgroup.
    #[arg(long, default_value_t = DEFAULT_PAUSE_METHOD, value_parser = parser(PauseMethod::ALL))]
    pub pause_method: PauseMethod,
    /// Observation after each resume.
    #[arg(long, allow_hyphen_values = true, default_value_t = shown(DEFAULT_OBSERVE_NS))]
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
    #[arg(long, allow_hyphen_values = true, default_value_t = shown(DEFAULT_PERIOD_NS))]
    pub period: String,
    /// Number of vCPUs (1 to 64, or what KVM allows), each with its own
    /// LAPIC timer, tick ring and row in the per-vCPU table.
    #[arg(long, allow_hyphen_values = true, default_value_t = DEFAULT_VCPUS.to_string())]
    pub vcpus: String,
    /// Width of one report line.
    #[arg(long, allow_hyphen_values = true, default_value_t = shown(DEFAULT_INTERVAL_NS))]
    pub interval: String,
    /// A summary line every this long (rate, worst lateness, pauses seen);
    /// `off` for none. At least --interval.
    #[arg(long, allow_hyphen_values = true, default_value_t = shown(DEFAULT_SUMMARY_EVERY_NS))]
    pub summary_every: String,
    /// How the guest accesses its LAPIC.
    #[arg(long, default_value_t = DEFAULT_APIC, value_parser = parser(Apic::ALL))]
    pub apic: Apic,
    /// What the guest does between ticks.
    #[arg(long, default_value_t = DEFAULT_IDLE, value_parser = parser(Idle::CLI))]
    pub idle: Idle,
    /// LAPIC timer mode: periodic is the subject; oneshot and tsc-deadline
    /// are controls that must not burst.
    #[arg(long, default_value_t = DEFAULT_TIMER, value_parser = parser(Timer::ALL))]
    pub timer: Timer,
    /// Host-side probes: auto (use what the host offers), on (exit 2 if one
    /// cannot be opened), off (guest only).
    #[arg(long, default_value_t = DEFAULT_HOST_PROBES, value_parser = parser(ProbeMode::ALL))]
    pub host_probes: ProbeMode,
    /// Thresholds of the verdict in the record.
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
    /// Write the whole record as JSON to this file (atomically).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw an SVG picture to this file (atomically).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Write one JSON object per line to this file as the run goes (each
    /// report window, pause and note, flushed at once; an `end` line last).
    #[arg(long, value_name = "FILE")]
    pub json_stream: Option<PathBuf>,
}
