//! The JSON record of a run (`--json`).

use crate::collection::CollectorStats;
use crate::figures::{PauseSpan, PauseStats, Steady, Window};
use crate::host::HostInfo;
use crate::names::{Apic, Idle, Outcome, PauseMethod, Timer};
use crate::samples::RawSamples;
use crate::verdict::{Kind, Thresholds, Verdict};
use serde::{Deserialize, Serialize};
use std::io::Write;

pub use crate::collection::GuestCounters;

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
    #[serde(deserialize_with = "crate::format_seen::format_field")]
    pub format: String,
    /// [`FORMAT_VERSION`].
    #[serde(deserialize_with = "crate::format_seen::version_field")]
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

impl Record {
    /// Writes the record as compact JSON and a newline to `w` (`jq .` shows
    /// it indented; indented, a day's record was twice the size), streamed:
    /// the text of a day-long run is never whole in memory. The file itself
    /// (atomic, devices in place) is the caller's.
    pub fn write_json_to(&self, w: &mut dyn Write) -> std::io::Result<()> {
        serde_json::to_writer(&mut *w, self).map_err(std::io::Error::other)?;
        w.write_all(b"\n")
    }
}
