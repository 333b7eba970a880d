//! `tickburst top`: the LAPIC timers of every KVM VM on this host, whoever
//! started it, live: per interval and vCPU the hv expiries and sw callbacks
//! per second, the back end, hv/sw switches, the longest run of callbacks
//! in one interrupt and its lateness, and flags when a vCPU falls back to sw
//! and stays there or a run exceeds `--max-run`.
//!
//! - [`discover`]: VMs and their vCPU threads from `/proc`;
//! - [`setup`]: which signals this host can measure, and why not;
//! - [`sampler`]: the perf probes (tracepoints only, read-only towards the
//!   VMs, nothing global changed);
//! - [`live`]: the loop (re-scan every interval, new VMs picked up, gone
//!   ones dropped);
//! - [`printer`], [`ndjson`], [`plot`]: the outputs;
//! - the rows themselves are pure: `tickburst_analysis::top` ([`analysis`])
//!   and `tickburst_analysis::top_fold` ([`fold`]).

pub mod discover;
pub mod live;
pub mod ndjson;
pub mod plot;
pub mod printer;
pub mod sampler;
pub mod setup;

pub use tickburst_analysis::top as analysis;
pub use tickburst_analysis::top_fold as fold;

use std::path::{Path, PathBuf};
use thiserror::Error;
use tickburst_analysis::units::{format_duration_ns, parse_duration_ns};

/// Accepted `--interval`.
pub const INTERVAL_RANGE_NS: (u64, u64) = (100_000_000, 3_600_000_000_000);
/// Longest `--duration` (a year: long monitoring).
pub const MAX_DURATION_NS: u64 = 365 * 86_400_000_000_000;

/// Why `top` stopped with an error (every one exits 2).
#[derive(Debug, Error)]
pub enum TopError {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// Not allowed to open perf events on tracepoints.
    #[error("top: no permission: {0}")]
    Permission(String),
    /// Neither timer back end can be measured on this host.
    #[error("top: cannot measure on this host: {0}")]
    CannotMeasure(String),
    /// `/proc` not readable.
    #[error(transparent)]
    Discover(#[from] discover::DiscoverError),
    /// The NDJSON file.
    #[error(transparent)]
    Ndjson(#[from] ndjson::NdjsonError),
    /// The picture.
    #[error(transparent)]
    Plot(#[from] crate::output::plot::PlotError),
}

/// Arguments of `tickburst top`.
#[derive(Debug, Clone, clap::Args)]
pub struct TopArgs {
    /// Only the VMs of these VMM pids (repeat, or comma-separate); `top`
    /// ends when all of these processes have exited.
    #[arg(long, value_delimiter = ',')]
    pub pid: Vec<u32>,
    /// Length of one line (100ms to 1h).
    #[arg(long, default_value = "1s", allow_hyphen_values = true)]
    pub interval: String,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, allow_hyphen_values = true)]
    pub duration: Option<String>,
    /// One line per VM (its vCPUs folded) instead of one per vCPU.
    #[arg(long)]
    pub per_vm: bool,
    /// Flag a run of more than this many callbacks in one interrupt.
    #[arg(long, default_value_t = analysis::DEFAULT_MAX_RUN)]
    pub max_run: u64,
    /// Write one NDJSON object per interval and vCPU to FILE, flushed per line.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw the rates over time into FILE.svg at the end.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// Validated `top` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TopConfig {
    /// Only these pids (`None`: every VM).
    pub pids: Option<Vec<u32>>,
    /// Interval, ns.
    pub interval_ns: u64,
    /// End after, ns (`None`: Ctrl-C).
    pub duration_ns: Option<u64>,
    /// Fold vCPUs per VM.
    pub per_vm: bool,
    /// `--max-run`.
    pub max_run: u64,
    /// NDJSON file.
    pub json: Option<PathBuf>,
    /// SVG file.
    pub plot: Option<PathBuf>,
}

/// Whether process `pid` exists now.
pub fn process_exists(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

fn duration(name: &str, text: &str, (lo, hi): (u64, u64)) -> Result<u64, TopError> {
    let ns = parse_duration_ns(text).map_err(|e| TopError::Usage(format!("--{name}: {e}")))?;
    if !(lo..=hi).contains(&ns) {
        return Err(TopError::Usage(format!(
            "--{name} {text} is out of range: allowed {} to {}",
            format_duration_ns(lo),
            format_duration_ns(hi)
        )));
    }
    Ok(ns)
}

impl TopArgs {
    /// Checks the arguments.
    pub fn to_config(&self) -> Result<TopConfig, TopError> {
        if let Some(p) = self.pid.iter().find(|&&p| p == 0 || !process_exists(p)) {
            return Err(TopError::Usage(format!("--pid {p}: no such process")));
        }
        Ok(TopConfig {
            pids: (!self.pid.is_empty()).then(|| self.pid.clone()),
            interval_ns: duration("interval", &self.interval, INTERVAL_RANGE_NS)?,
            duration_ns: self
                .duration
                .as_deref()
                .map(|d| duration("duration", d, (1_000_000, MAX_DURATION_NS)))
                .transpose()?,
            per_vm: self.per_vm,
            max_run: self.max_run,
            json: self.json.clone(),
            plot: self.plot.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(interval: &str, duration: Option<&str>, pid: Vec<u32>) -> TopArgs {
        TopArgs {
            pid,
            interval: interval.into(),
            duration: duration.map(Into::into),
            per_vm: false,
            max_run: 100,
            json: None,
            plot: None,
        }
    }

    #[test]
    fn arguments_are_checked() {
        let c = args("1s", None, vec![]).to_config().unwrap();
        assert_eq!(
            (c.interval_ns, c.duration_ns, c.pids),
            (1_000_000_000, None, None)
        );
        let own = std::process::id();
        let c = args("500ms", Some("1h"), vec![own, 1]).to_config().unwrap();
        assert_eq!(c.duration_ns, Some(3_600_000_000_000));
        assert_eq!(c.pids, Some(vec![own, 1]));
        let e = args("1s", None, vec![u32::MAX]).to_config().unwrap_err();
        assert!(e.to_string().contains("no such process"), "{e}");
        for bad in [
            args("1ms", None, vec![]),
            args("1", None, vec![]),
            args("1s", Some("-1s"), vec![]),
        ] {
            assert!(
                matches!(bad.to_config(), Err(TopError::Usage(_))),
                "{bad:?}"
            );
        }
        assert!(args("1s", None, vec![0]).to_config().is_err());
    }
}
