//! The JSON record of a run (`--json`).

use crate::collection::CollectorStats;
use crate::figures::host_between;
use crate::figures::{PauseSpan, PauseStats, Steady, Window};
use crate::host::HostInfo;
use crate::limits::one_line;
use crate::load::{LoadError, LoadNote};
use crate::names::{Apic, Idle, Outcome, PauseMethod, Timer};
use crate::names::{Probe, Scope};
use crate::samples::RawSamples;
use crate::samples::SamplesError;
use crate::validate::ValidateError;
use crate::verdict::{self, Evidence};
use crate::verdict::{Kind, Thresholds, Verdict};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

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

impl Record {
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
            self.sweep = Some(crate::judge::summarize(self));
        }
        Ok(())
    }

    /// Where pause `i`'s span ends for the verdict: one second after its
    /// resume, cut at the next pause or the end of the run (ms since ready).
    fn span_end_ms(&self, i: usize) -> f64 {
        let end = |p: &PauseStats| p.end_ms + crate::figures::AFTER_SPAN_NS as f64 / 1e6;
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
        let hv_before = host_between(&self.samples.host_marks, 0, before_pause, Scope::Vcpu)
            .and_then(|h| h.hv_timer.get());
        let hv_reason = || {
            self.host
                .probes
                .as_ref()
                .and_then(|r| r.missing.iter().find(|m| m.probe == Probe::HvTimer))
                .map_or_else(
                    || "hv timer expiries not measured (host probes off)".to_string(),
                    |m| m.reason.clone(),
                )
        };
        let backend = self.host.timer_backend.as_ref();
        // The state right before the pause: the last hv/sw switch before it.
        let hv_right_before = backend.and_then(|b| b.hv_at(before_pause as f64 / 1e6));
        let span = p.map_or(0.0..0.0, |p| p.start_ms..self.span_end_ms(i));
        let host_burst_ratio = crate::judge::host_ratio(
            p.and_then(|p| p.host_burst_ratio),
            self.samples.host_scope,
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
            self.sweep = Some(crate::judge::summarize(self));
        }
    }
}

impl Record {
    /// Parses and validates a record (the one boundary of untrusted records:
    /// [`crate::validate`]), checking format and version.
    pub fn from_json(text: &str) -> Result<Record, LoadError> {
        Record::from_reader(text.as_bytes()).map(|(r, _)| r)
    }

    /// Parses and validates the record `text` holds, reading it once, as it
    /// streams (no more of it in memory than the parser's bounded tokens:
    /// [`crate::capped_text`]); with the note of strings cut.
    pub fn from_reader(text: impl std::io::Read) -> Result<(Record, LoadNote), LoadError> {
        use crate::capped_text::{CappedStrings, CUT_MARK, MAX_STRING_BYTES, MAX_TEXT_BYTES};
        let not_a_record =
            |e: serde_json::Error| LoadError::NotARecord(one_line(&e.to_string(), 300));
        let mut capped = CappedStrings::new(text);
        crate::format_seen::reset();
        let parsed = {
            let mut de = serde_json::Deserializer::from_reader(&mut capped);
            Record::deserialize(&mut de).and_then(|r| de.end().map(|()| r))
        };
        let (format, version) = crate::format_seen::take();
        let right = format.as_deref() == Some(FORMAT)
            && version.is_some_and(|v| {
                (u64::from(OLDEST_READABLE_VERSION)..=u64::from(FORMAT_VERSION)).contains(&v)
            });
        let other = || LoadError::OtherVersion {
            format: format.clone().unwrap_or_else(|| "(none)".into()),
            version: version.unwrap_or(0),
        };
        let mut record = match parsed {
            Ok(_) if !right => return Err(other()),
            Ok(r) => r,
            // The format named and not ours, or not named at all.
            Err(e)
                if e.is_data()
                    && ((format.is_some() || version.is_some()) && !right
                        || e.to_string().starts_with("missing field `format")) =>
            {
                return Err(other())
            }
            Err(e) => {
                let text = e.to_string();
                return Err(match text.find(crate::validate::CAPPED_MARK) {
                    Some(i) => LoadError::Invalid(ValidateError::Capped(one_line(
                        &text[i + crate::validate::CAPPED_MARK.len()..],
                        300,
                    ))),
                    None => not_a_record(e),
                });
            }
        };
        crate::validate::record(&mut record)?;
        let note = (capped.cut() > 0).then(|| {
            format!(
                "{} strings of the record were cut (each keeps at most {} KiB, all together {} MiB; cut ones end in '{CUT_MARK}')",
                capped.cut(),
                MAX_STRING_BYTES >> 10,
                MAX_TEXT_BYTES >> 20
            )
        });
        Ok((record, note))
    }

    /// Reads, parses and validates a record file of at most
    /// [`crate::validate::MAX_RECORD_BYTES`] (a regular file's size is
    /// checked before reading; a pipe is read up to that much).
    pub fn load(path: &Path) -> Result<Record, LoadError> {
        Record::load_noted(path).map(|(r, _)| r)
    }

    /// [`Record::load`], with the note of strings cut. The file is opened
    /// and read once, as it streams: a FIFO, `/dev/stdin` or `<(cat
    /// run.json)` reads as a file does.
    pub fn load_noted(path: &Path) -> Result<(Record, LoadNote), LoadError> {
        use std::io::Read;
        let max = crate::validate::MAX_RECORD_BYTES;
        let file = std::fs::File::open(path)?;
        let meta = file.metadata()?;
        if meta.is_file() && meta.len() > max {
            return Err(LoadError::TooLarge {
                size: meta.len(),
                max,
            });
        }
        // Never more than the limit is read (a longer text ends cut, not
        // JSON).
        Record::from_reader(std::io::BufReader::new(file.take(max)))
    }
}
