//! What the command line accepts, and durations checked against it. Limits a
//! saved record shares (periods, report windows) come from the analysis
//! crate's, vCPUs from the memory map's.

use tickburst_analysis::limits::{INTERVAL_RANGE_NS as RECORD_INTERVAL_RANGE_NS, PERIOD_RANGE_NS};
use tickburst_analysis::units::{format_duration_ns, parse_duration_ns};

const MS: u64 = 1_000_000;
const S: u64 = 1_000 * MS;

/// Shortest accepted period when the host does not say (`kvm.min_timer_period_us` unreadable).
pub const FALLBACK_MIN_PERIOD_NS: u64 = 200_000;
/// Longest accepted period (the same as a record's).
pub const MAX_PERIOD_NS: u64 = PERIOD_RANGE_NS.1;
/// Shortest period `model` takes (the same as a record's).
pub const MODEL_MIN_PERIOD_NS: u64 = PERIOD_RANGE_NS.0;
/// Longest accepted warm-up, pause or observation.
pub const MAX_PHASE_NS: u64 = 3_600 * S;
/// Accepted report windows (the same as a record's).
pub const INTERVAL_RANGE_NS: (u64, u64) = RECORD_INTERVAL_RANGE_NS;
/// Shortest accepted pause.
pub const MIN_PAUSE_NS: u64 = MS;
/// Accepted pause of each `check` case.
pub const CHECK_PAUSE_RANGE_NS: (u64, u64) = (100 * MS, 60 * S);
/// Most pause cycles.
pub const MAX_CYCLES: u32 = 1000;
/// Most vCPUs (the host's KVM may allow fewer: checked when the VM is made).
pub const MAX_VCPUS: u32 = crate::arch::layout::MAX_VCPUS;
/// Shortest `watch --duration`.
pub const MIN_WATCH_NS: u64 = MS;
/// Shortest `model --watchdog`.
pub const MIN_WATCHDOG_NS: u64 = MS;
/// Accepted `top --interval` (one line per interval).
pub const TOP_INTERVAL_RANGE_NS: (u64, u64) = (100 * MS, 3_600 * S);
/// Accepted `top --duration` (up to a year: long monitoring).
pub const TOP_DURATION_RANGE_NS: (u64, u64) = (MS, 365 * 86_400 * S);

/// Longest `--summary-every`.
pub const MAX_SUMMARY_EVERY_NS: u64 = 365 * 86_400 * S;

/// Parses `--name text` as a duration in `lo..=hi`, or says the range.
pub fn duration_in(name: &str, text: &str, lo: u64, hi: u64) -> Result<u64, String> {
    let ns = parse_duration_ns(text).map_err(|e| format!("--{name}: {e}"))?;
    if ns < lo || ns > hi {
        return Err(format!(
            "--{name} {} is out of range: allowed {} to {}",
            tickburst_analysis::limits::one_line(text, 64),
            format_duration_ns(lo),
            format_duration_ns(hi)
        ));
    }
    Ok(ns)
}

/// A default duration as the command line shows it (`2s`, `1ms`).
pub fn shown(ns: u64) -> String {
    format_duration_ns(ns)
}

/// Default durations as the command line shows a list (`1s,2s,5s,10s`).
pub fn shown_list(ns: &[u64]) -> String {
    ns.iter().map(|&n| shown(n)).collect::<Vec<_>>().join(",")
}
