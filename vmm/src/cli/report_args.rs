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
    #[arg(long, allow_hyphen_values = true, conflicts_with = "cost_from")]
    pub cost: Option<String>,
    /// Take the cost from a saved run (`run --json`) whose longest run of
    /// callbacks inside one interrupt has 100 or more callbacks.
    #[arg(long, value_name = "RUN.json")]
    pub cost_from: Option<PathBuf>,
    /// Hard-lockup watchdog threshold.
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
    #[arg(long, allow_hyphen_values = true, default_value_t = shown(CHECK_DEFAULT_PAUSE_NS))]
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
    #[arg(long)]
    pub json: bool,
}
