//! The JSON record of a run (`--json`) and its atomic write.

use crate::analysis::{PauseSpan, PauseStats, Steady, Window};
use crate::collector::CollectorStats;
use crate::host::HostInfo;
use crate::names::{Apic, Idle, Outcome, PauseMethod, Timer};
use crate::samples::RawSamples;
use crate::verdict::{Kind, Thresholds, Verdict};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

pub use crate::collector::GuestCounters;

/// Name of the record format, in every record.
pub const FORMAT: &str = "tickburst-run";
/// Version of the record format. Version 2 added `samples` (the raw ticks,
/// pauses and host counts) and `verdict`. Version 3 keeps runs of any length
/// bounded: `samples.bounded` (per-window counts, steady statistics with an
/// interval histogram, the spans whose ticks are kept) and
/// `samples.tick_deltas_ns` with only the ticks of those spans.
pub const FORMAT_VERSION: u32 = 3;
/// The oldest version still read (`analyze` recomputes it from every tick).
pub const OLDEST_READABLE_VERSION: u32 = 2;

/// The configuration of a run as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigRecord {
    /// Requested timer period, ns.
    pub period_ns: u64,
    /// Period the LAPIC settings really give, ns.
    pub actual_period_ns: u64,
    /// LAPIC timer initial count.
    pub initial_count: u32,
    /// LAPIC timer divisor.
    pub divisor: u32,
    /// APIC bus cycle, ns.
    pub apic_bus_cycle_ns: u64,
    /// LAPIC access mode.
    pub apic: Apic,
    /// Guest idle loop.
    pub idle: Idle,
    /// LAPIC timer mode.
    pub timer: Timer,
    /// How the pauses were made.
    pub pause_method: PauseMethod,
    /// Warm-up before the first pause, ms.
    pub warmup_ms: f64,
    /// Length of each pause, ms.
    pub pause_ms: f64,
    /// Number of pause cycles.
    pub cycles: u32,
    /// Length of each pause in order, ms (differs per pause in a sweep).
    #[serde(default, deserialize_with = "crate::limits::pause_lengths")]
    pub pause_lengths_ms: Vec<f64>,
    /// Observation after each resume, ms.
    pub observe_ms: f64,
    /// Report window, ms.
    pub interval_ms: f64,
    /// Guest TSC frequency, kHz.
    pub tsc_khz: u32,
    /// Number of vCPUs.
    #[serde(default = "one")]
    pub vcpus: u32,
    /// The vCPUs the pauses stopped.
    #[serde(default, deserialize_with = "crate::limits::vcpu_list")]
    pub pause_vcpus: Vec<u32>,
}

fn one() -> u32 {
    1
}

/// Setup timing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// From process start (entry of `main`) to the guest's ready report, us.
    pub setup_us: f64,
    /// From process start to the first timer tick, us.
    pub first_tick_us: Option<f64>,
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// tickburst version.
    pub tickburst_version: String,
    /// How the run ended.
    pub outcome: Outcome,
    /// Why the run failed, when it did.
    pub error: Option<String>,
    /// What was asked.
    pub config: ConfigRecord,
    /// What the host is.
    pub host: HostInfo,
    /// Setup timing.
    pub timing: Timing,
    /// Steady state before the first pause.
    pub steady: Steady,
    /// Ticks lost to ring overrun.
    pub lost_ticks: u64,
    /// All collector counters.
    pub collector: CollectorStats,
    /// The guest's own counters.
    pub guest: GuestCounters,
    /// Report windows.
    #[serde(deserialize_with = "crate::limits::windows")]
    pub windows: Vec<Window>,
    /// One entry per pause.
    #[serde(deserialize_with = "crate::limits::pauses")]
    pub pauses: Vec<PauseStats>,
    /// The regression verdict with the thresholds it used.
    pub verdict: RecordVerdict,
    /// The raw measurements, for `tickburst analyze`.
    pub samples: RawSamples,
    /// Pauses found in the guest's ticks (`tickburst watch` only); the same
    /// spans are `samples.pauses`.
    #[serde(default, deserialize_with = "crate::limits::detected_opt")]
    pub detected: Option<Vec<DetectedPause>>,
    /// Burst against pause length (`tickburst sweep` only).
    #[serde(default)]
    pub sweep: Option<crate::sweep::SweepSummary>,
    /// Every vCPU and the totals (`--vcpus` 2 or more). The figures above
    /// are those of `vcpus.subject`.
    #[serde(default)]
    pub vcpus: Option<crate::vcpus::VcpusRecord>,
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

/// The verdict of a run: one per pause and the combination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordVerdict {
    /// Thresholds used.
    pub thresholds: Thresholds,
    /// Combined verdict (burst if any pause is, else ok if any is).
    pub kind: Kind,
    /// One per pause.
    #[serde(deserialize_with = "crate::limits::pauses")]
    pub pauses: Vec<Verdict>,
    /// What happened outside every pause's span (an hv -> sw fallback before
    /// the first pause, say): its own finding, not a pause's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside_pauses: Option<Verdict>,
}

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory, flushed and synced, then renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// [`write_atomic`] of what `write` writes (through a buffer, so a large
/// record is never whole in memory).
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        write(&mut file)?;
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

impl Record {
    /// Writes the record as compact JSON (`jq .` shows it indented; indented,
    /// a day's record was twice the size), atomically (streamed to the file:
    /// the text of a day-long run is never whole in memory).
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        write_atomic_with(path, |w| {
            serde_json::to_writer(&mut *w, self).map_err(std::io::Error::other)?;
            w.write_all(b"\n")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir =
            std::env::temp_dir().join(format!("tickburst-record-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.json");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .collect();
        assert_eq!(leftovers.len(), 1);
        assert!(write_atomic(&dir.join("missing/x.json"), b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
