//! Arguments of the commands that read or judge: `analyze`, `check`,
//! `model`, `doctor`, and the verdict thresholds they share with `run`.

use crate::cli::arg_limits::shown;
use crate::cli::name_args::parser;
use crate::session::check::DEFAULT_PAUSE_NS as CHECK_DEFAULT_PAUSE_NS;
use std::path::PathBuf;
use tickburst_analysis::model::{DEFAULT_LAG_NS, DEFAULT_PERIOD_NS, DEFAULT_WATCHDOG_NS};
use tickburst_analysis::names::Format;
use tickburst_analysis::verdict;

/// Arguments of `tickburst model`.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Guest timer period (the bug report's 4768 Hz is 209.7us).
    #[arg(long, allow_hyphen_values = true, default_value_t = shown(DEFAULT_PERIOD_NS))]
    pub period: String,
    /// How long the hv timer was stalled: a pause (10s) or a lag (51d).
    #[arg(long, allow_hyphen_values = true, default_value_t = shown(DEFAULT_LAG_NS))]
    pub lag: String,
    /// Cost of one apic_timer_fn callback (default 100ns, an assumption).
    ///
    /// Without --cost and --cost-from the output says that 100ns was assumed.
    #[arg(long, allow_hyphen_values = true, conflicts_with = "cost_from")]
    pub cost: Option<String>,
    /// Take the cost from a saved run (`run --json`) whose longest run of
    /// callbacks inside one interrupt has 100 or more callbacks.
    ///
    /// The cost is that run's duration over its callbacks (42us in the
    /// emulated-Intel rig's records). A fixed kernel or a host without the
    /// hv timer has no such run: exit 2 saying so. The record is validated
    /// as analyze validates it.
    #[arg(long, value_name = "RUN.json")]
    pub cost_from: Option<PathBuf>,
    /// Hard-lockup watchdog threshold (1ms to 1h).
    #[arg(long, allow_hyphen_values = true, default_value_t = shown(DEFAULT_WATCHDOG_NS))]
    pub watchdog: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `tickburst check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Pause of each case (100ms to 60s).
    ///
    /// An unfixed kernel after a pause of P seconds runs about P + 1 times
    /// the nominal callbacks in the first second after resume.
    #[arg(long, allow_hyphen_values = true, default_value_t = shown(CHECK_DEFAULT_PAUSE_NS))]
    pub pause: String,
    /// Replace every case's timer period (default: chosen from the host).
    ///
    /// By default the cases run at 1 ms and at the host's shortest period
    /// (kvm.min_timer_period_us), or 10 ms where the hv timer runs; with
    /// --period D every case runs at D and its name follows it
    /// (p2ms_spin_kick).
    #[arg(long, allow_hyphen_values = true)]
    pub period: Option<String>,
    /// Thresholds, format, picture.
    #[command(flatten)]
    pub report: VerdictArgs,
    /// Also write the JSON result to this file (atomically; checked before
    /// the first case runs).
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
    ///
    /// ktap: `KTAP version 1`, the plan `1..N`, then per case a `# name:
    /// figures` line and `ok N name`, `not ok N name` (burst or error, its
    /// reasons as `# ` lines before it) or `ok N name # SKIP reason` (not
    /// exercised).
    #[arg(long, default_value_t = Format::Table, value_parser = parser(Format::ALL))]
    pub format: Format,
    /// Draw an SVG picture to this file (atomically).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// Burst thresholds (`run`, `check`, `analyze`).
#[derive(Debug, Clone, clap::Args)]
pub struct ThresholdArgs {
    /// Burst if the host runs more than this many times the nominal number of
    /// timer callbacks in the first second after resume.
    ///
    /// Callbacks are sw plus hv. The bug report's unpatched kernel reads
    /// ~10.8 after a 10 s pause; a fixed or sw-only host ~1.
    #[arg(long, allow_hyphen_values = true, default_value_t = verdict::DEFAULT_MAX_HOST_RATIO)]
    pub max_host_ratio: f64,
    /// Burst if the guest takes more than this many times its nominal ticks
    /// in the first 100 ms after resume.
    #[arg(long, allow_hyphen_values = true, default_value_t = verdict::DEFAULT_MAX_GUEST_RATIO)]
    pub max_guest_ratio: f64,
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
    ///
    /// Lines `all_count N  hv_timer N  sw_timer N` (any spacing; other lines,
    /// lines over 4 KiB and non-UTF-8 lines are ignored). A pause is a run of
    /// `all_count 0` lines between active ones; the nominal rate is the
    /// median all_count before the first pause (leaving out the partial
    /// second before it, at most 3600 lines); the host burst ratio is the
    /// resume second's all_count over nominal; the hv timer was in use if
    /// any hv_timer > 0 came before; a fallback is hv before, and every line
    /// after the resume second with hv_timer 0 and sw_timer > 0. More than
    /// 1000 pauses: exit 2.
    #[arg(long, value_name = "FILE")]
    pub from_bpftrace: Option<PathBuf>,
    /// Thresholds, format, picture.
    #[command(flatten)]
    pub report: VerdictArgs,
    /// Write the re-analysed record to this file (records only).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Arguments of `tickburst doctor`.
#[derive(Debug, Clone, clap::Args)]
pub struct DoctorArgs {
    /// Print JSON instead of the table.
    ///
    /// {"host": {...}, "items": [{"name", "value", "ok", "consequence"}]}.
    #[arg(long)]
    pub json: bool,
}
