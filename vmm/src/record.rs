//! The JSON record of a run (`--json`) and its atomic write.

use crate::analysis::host_between;
use crate::analysis::{PauseStats, Steady, Window};
use crate::collector::CollectorStats;
use crate::host::HostInfo;
use crate::samples::{RawSamples, SamplesError};
use crate::validate::{one_line, ValidateError};
use crate::verdict::{self, Evidence, Kind, Thresholds, Verdict};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use thiserror::Error;

/// Name of the record format, in every record.
pub const FORMAT: &str = "tickburst-run";
/// Version of the record format. Version 2 added `samples` (the raw ticks,
/// pauses and host counts) and `verdict`.
pub const FORMAT_VERSION: u32 = 2;

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
    /// `x2apic` or `xapic`.
    pub apic: String,
    /// `hlt` or `spin`.
    pub idle: String,
    /// `periodic`.
    pub timer: String,
    /// `kick`.
    pub pause_method: String,
    /// Warm-up before the first pause, ms.
    pub warmup_ms: f64,
    /// Length of each pause, ms.
    pub pause_ms: f64,
    /// Number of pause cycles.
    pub cycles: u32,
    /// Length of each pause in order, ms (differs per pause in a sweep).
    #[serde(default, deserialize_with = "crate::validate::other")]
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
    #[serde(default, deserialize_with = "crate::validate::vcpu_list")]
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

/// Counters the guest kept itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuestCounters {
    /// Timer interrupts the guest counted.
    pub tick_count: u64,
    /// Spurious interrupts.
    pub spurious_count: u64,
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
    /// `completed`, `interrupted` or `failed`.
    pub outcome: String,
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
    #[serde(deserialize_with = "crate::validate::other")]
    pub windows: Vec<Window>,
    /// One entry per pause.
    #[serde(deserialize_with = "crate::validate::pauses")]
    pub pauses: Vec<PauseStats>,
    /// The regression verdict with the thresholds it used.
    pub verdict: RecordVerdict,
    /// The raw measurements, for `tickburst analyze`.
    pub samples: RawSamples,
    /// Pauses found in the guest's ticks (`tickburst watch` only); the same
    /// spans are `samples.pauses`.
    #[serde(default, deserialize_with = "crate::validate::other_opt")]
    pub detected: Option<Vec<crate::run::DetectedPause>>,
    /// Burst against pause length (`tickburst sweep` only).
    #[serde(default)]
    pub sweep: Option<crate::sweep::SweepSummary>,
    /// Every vCPU and the totals (`--vcpus` 2 or more). The figures above
    /// are those of `vcpus.subject`.
    #[serde(default)]
    pub vcpus: Option<crate::vcpus::VcpusRecord>,
}

/// The verdict of a run: one per pause and the combination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordVerdict {
    /// Thresholds used.
    pub thresholds: Thresholds,
    /// Combined verdict (burst if any pause is, else ok if any is).
    pub kind: Kind,
    /// One per pause.
    #[serde(deserialize_with = "crate::validate::pauses")]
    pub pauses: Vec<Verdict>,
    /// What happened outside every pause's span (an hv -> sw fallback before
    /// the first pause, say): its own finding, not a pause's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside_pauses: Option<Verdict>,
}

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory, flushed and synced, then renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
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
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Why a saved record cannot be read.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not JSON, truncated, or fields missing.
    #[error("not a tickburst run record: {0}")]
    NotARecord(String),
    /// Larger than any record (see [`crate::validate::MAX_RECORD_BYTES`]).
    #[error("not a tickburst run record: the file is {size} bytes, more than the {max} bytes (64 MiB) read at most")]
    TooLarge {
        /// Size of the file.
        size: u64,
        /// [`crate::validate::MAX_RECORD_BYTES`].
        max: u64,
    },
    /// JSON of the right shape whose values the analysis cannot take
    /// (out of range, too many entries, out of order: see [`crate::validate`]).
    #[error("not a valid tickburst record: {0}")]
    Invalid(#[from] ValidateError),
    /// A record of another format or version.
    #[error("record format {format} version {version} is not readable by this tickburst (reads {FORMAT} version {FORMAT_VERSION})")]
    OtherVersion {
        /// `format` of the file.
        format: String,
        /// `format_version` of the file.
        version: u64,
    },
    /// The samples are inconsistent.
    #[error("record samples: {0}")]
    Samples(#[from] SamplesError),
}

impl Record {
    /// Parses and validates a record (the one boundary of untrusted records:
    /// [`crate::validate`]), checking format and version before the fields.
    pub fn from_json(text: &str) -> Result<Record, LoadError> {
        let not_a_record =
            |e: serde_json::Error| LoadError::NotARecord(one_line(&e.to_string(), 300));
        let header: Header = serde_json::from_str(text).map_err(not_a_record)?;
        let format = header.format.0.unwrap_or_default();
        let version = header.format_version.0.unwrap_or(0);
        if format != FORMAT || version != u64::from(FORMAT_VERSION) {
            return Err(LoadError::OtherVersion {
                format: if format.is_empty() {
                    "(none)".into()
                } else {
                    // Named in one short line, however long it is.
                    one_line(&format, 64)
                },
                version,
            });
        }
        let mut record: Record = serde_json::from_str(text).map_err(|e| {
            let text = e.to_string();
            match text.find(crate::validate::CAPPED_MARK) {
                Some(i) => LoadError::Invalid(ValidateError::Capped(
                    text[i + crate::validate::CAPPED_MARK.len()..].to_string(),
                )),
                None => not_a_record(e),
            }
        })?;
        crate::validate::record(&mut record)?;
        Ok(record)
    }

    /// Reads, parses and validates a record file of at most
    /// [`crate::validate::MAX_RECORD_BYTES`] (checked before reading).
    pub fn load(path: &Path) -> Result<Record, LoadError> {
        use std::io::Read;
        let max = crate::validate::MAX_RECORD_BYTES;
        let file = std::fs::File::open(path)?;
        let size = file.metadata()?.len();
        if size > max {
            return Err(LoadError::TooLarge { size, max });
        }
        // The size may change while reading (a pipe, a growing file): never
        // read more than the limit.
        let mut text = String::new();
        file.take(max + 1).read_to_string(&mut text)?;
        if text.len() as u64 > max {
            return Err(LoadError::TooLarge {
                size: text.len() as u64,
                max,
            });
        }
        Record::from_json(&text)
    }

    /// Recomputes windows, steady state and pause figures from `samples`.
    pub fn reanalyze(&mut self) -> Result<(), SamplesError> {
        let analysis = self.samples.analyze()?;
        self.windows = analysis.windows;
        self.steady = analysis.steady;
        self.pauses = analysis.pauses;
        if let Some(v) = &mut self.vcpus {
            v.reanalyze(&self.samples.pauses)?;
        }
        if self.sweep.is_some() {
            self.sweep = Some(crate::sweep::summarize(self));
        }
        Ok(())
    }

    /// Where pause `i`'s span ends for the verdict: one second after its
    /// resume, cut at the next pause or the end of the run (ms since ready).
    fn span_end_ms(&self, i: usize) -> f64 {
        let end = |p: &PauseStats| p.end_ms + crate::analysis::AFTER_SPAN_NS as f64 / 1e6;
        let next = self.pauses.get(i + 1).map_or(f64::MAX, |p| p.start_ms);
        self.pauses
            .get(i)
            .map_or(0.0, end)
            .min(next)
            .min(self.samples.end_ns as f64 / 1e6)
    }

    /// What the verdict of pause `i` is judged on.
    pub fn evidence(&self, i: usize) -> Evidence {
        let p = self.pauses.get(i);
        let before_pause = self.samples.pauses.get(i).map_or(0, |s| s.start_ns);
        let hv_before =
            host_between(&self.samples.host_marks, 0, before_pause, "").and_then(|h| h.hv_timer);
        let hv_reason = || {
            self.host
                .probes
                .as_ref()
                .and_then(|r| r.missing.iter().find(|m| m.probe == "hv_timer"))
                .map_or_else(
                    || "hv timer expiries not measured (host probes off)".to_string(),
                    |m| m.reason.clone(),
                )
        };
        let backend = self.host.timer_backend.as_ref();
        // The state right before the pause: the last hv/sw switch before it.
        let hv_right_before = backend.and_then(|b| b.hv_at(before_pause as f64 / 1e6));
        let span = p.map_or(0.0..0.0, |p| p.start_ms..self.span_end_ms(i));
        let host_burst_ratio = host_ratio(
            p.and_then(|p| p.host_burst_ratio),
            &self.samples.host_scope,
            self.config.vcpus,
        );
        Evidence {
            guest_burst_ratio: p.map(|p| p.burst_ratio),
            host_burst_ratio,
            host_callbacks_first_1s: p.and_then(|p| p.host_callbacks_first_1s),
            hv_used_before: match hv_before {
                Some(n) => Ok(hv_right_before.unwrap_or(n > 0)),
                None => Err(hv_reason()),
            },
            fell_back_at_ms: backend
                .and_then(|b| b.fallback_ms)
                .filter(|t| span.contains(t)),
            longest_run: p
                .filter(|p| p.host_longest_run.is_some())
                .map(crate::report::longest_run_text),
        }
    }

    /// A fallback to the sw timer outside every pause's span, judged on its
    /// own (see [`RecordVerdict::outside_pauses`]).
    fn outside_pauses(&self) -> Option<Verdict> {
        let t = self.host.timer_backend.as_ref()?.fallback_ms?;
        let n = self.pauses.len();
        if (0..n).any(|i| (self.pauses[i].start_ms..self.span_end_ms(i)).contains(&t)) {
            return None;
        }
        let when = match self.pauses.iter().position(|p| t < p.start_ms) {
            Some(k) => format!("before pause {}", k + 1),
            None if n == 0 => "(the run had no pause)".into(),
            None => format!("more than a second after the resume of pause {n}"),
        };
        Some(verdict::outside_fallback(t, &when))
    }

    /// Judges every pause with `thresholds` and stores the verdict.
    pub fn judge(&mut self, thresholds: &Thresholds) {
        let pauses: Vec<Verdict> = (0..self.pauses.len())
            .map(|i| verdict::judge(&self.evidence(i), thresholds))
            .collect();
        let outside_pauses = self.outside_pauses();
        let kinds = pauses.iter().chain(&outside_pauses).map(|v| &v.kind);
        let kind = if pauses.is_empty() && outside_pauses.is_none() {
            Kind::NotExercised
        } else {
            verdict::combine(kinds)
        };
        self.verdict = RecordVerdict {
            thresholds: *thresholds,
            kind,
            pauses,
            outside_pauses,
        };
        if self.sweep.is_some() {
            self.sweep = Some(crate::sweep::summarize(self));
        }
    }

    /// Writes the record as pretty JSON, atomically.
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        let mut text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        text.push(b'\n');
        write_atomic(path, &text)
    }
}

/// `format` and `format_version` of a file, read before anything else.
#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    format: Lenient<String>,
    #[serde(default)]
    format_version: Lenient<u64>,
}

/// A value kept only when it has the expected type (a string, an unsigned
/// number); anything else is skipped without being stored.
#[derive(Default)]
struct Lenient<T>(Option<T>);

impl<'de> Deserialize<'de> for Lenient<String> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LenientVisitor).map(|v| Lenient(v.0))
    }
}

impl<'de> Deserialize<'de> for Lenient<u64> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LenientVisitor).map(|v| Lenient(v.1))
    }
}

/// Keeps a string or an unsigned number, skips anything else.
struct LenientVisitor;

impl<'de> serde::de::Visitor<'de> for LenientVisitor {
    type Value = (Option<String>, Option<u64>);
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok((Some(v.to_string()), None))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok((None, Some(v)))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok((None, None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok((None, None))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok((None, None))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok((None, None))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok((None, None))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        while a
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok((None, None))
    }
}

/// The host burst ratio the verdict may use, or why not. Host-wide counts of
/// a VM with several vCPUs add up every vCPU's timer: they say nothing of the
/// subject's burst on its own.
fn host_ratio(ratio: Option<f64>, scope: &str, vcpus: u32) -> Result<f64, String> {
    match ratio {
        Some(_) if vcpus > 1 && scope == "host-wide" => Err(format!(
            "host timer callbacks are host-wide (our vCPU's hrtimer was not learned), \
             so they add up all {vcpus} vCPUs' timers: not used with --vcpus {vcpus}"
        )),
        Some(r) => Ok(r),
        None => Err(verdict::HOST_NOT_MEASURED.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_wide_counts_are_not_judged_with_several_vcpus() {
        assert_eq!(host_ratio(Some(1.2), "vcpu", 4), Ok(1.2));
        assert_eq!(host_ratio(Some(1.2), "host-wide", 1), Ok(1.2));
        let why = host_ratio(Some(4.0), "host-wide", 4).unwrap_err();
        assert!(why.contains("--vcpus 4"), "{why}");
        assert_eq!(
            host_ratio(None, "vcpu", 1),
            Err(verdict::HOST_NOT_MEASURED.to_string())
        );
    }

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
