//! `tickburst top`, the pure part: one row per interval and vCPU of a VM
//! tickburst did not start, the timer back end it shows (hv, sw, mixed),
//! when it fell back to sw and stayed there, the longest run of callbacks in
//! one interrupt, and the NDJSON line of a row. No perf, no clocks: the
//! `tickburst` crate reads the counts and hands them here.
//!
//! All times are ns since `top` started (its epoch).

use crate::irq_runs::IrqRun;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Intervals in a row with sw callbacks and no hv expiry, after the hv timer
/// was seen, before a vCPU counts as "fell back to sw and stayed".
pub const FALLBACK_CONFIRM_INTERVALS: u32 = 3;
/// Default `--max-run`: more callbacks than this in one interrupt is flagged
/// (a healthy periodic timer runs 1; the unfixed kernel thousands).
pub const DEFAULT_MAX_RUN: u64 = 100;

/// Why an NDJSON line is not a row.
#[derive(Debug, Error)]
pub enum TopError {
    /// Not JSON of a row.
    #[error("not a top row: {0}")]
    Json(#[from] serde_json::Error),
    /// JSON of a row with impossible values.
    #[error("invalid top row: {0}")]
    Invalid(String),
}

/// The LAPIC timer back end a vCPU used in an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Only hv timer expiries (VMX-preemption timer).
    Hv,
    /// Only sw timer callbacks (`apic_timer_fn`).
    Sw,
    /// Both.
    Mixed,
    /// Neither fired (timer not armed, or masked).
    Idle,
    /// Nothing could be measured.
    #[default]
    Unknown,
}

impl Backend {
    /// The name shown in the table and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Hv => "hv",
            Backend::Sw => "sw",
            Backend::Mixed => "mixed",
            Backend::Idle => "idle",
            Backend::Unknown => "unknown",
        }
    }

    /// Two back ends seen together (several vCPUs of one VM): equal ones stay,
    /// hv with sw is mixed, idle and unknown give way to what was seen.
    pub fn combine(self, other: Backend) -> Backend {
        use Backend::*;
        match (self, other) {
            (a, b) if a == b => a,
            (Unknown, b) | (b, Unknown) => b,
            (Idle, b) | (b, Idle) => b,
            _ => Mixed,
        }
    }
}

/// The back end from an interval's counts (`None`: not measurable).
pub fn classify(hv: Option<u64>, sw: Option<u64>) -> Backend {
    match (hv, sw) {
        (None, None) => Backend::Unknown,
        (Some(h), Some(s)) if h > 0 && s > 0 => Backend::Mixed,
        (Some(h), _) if h > 0 => Backend::Hv,
        (_, Some(s)) if s > 0 => Backend::Sw,
        _ => Backend::Idle,
    }
}

/// What was measured for one vCPU over one interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VcpuInterval {
    /// Interval start, ns since the epoch.
    pub start_ns: u64,
    /// Interval length, ns (> 0).
    pub len_ns: u64,
    /// hv expiries counted (`None`: not measurable here).
    pub hv: Option<u64>,
    /// sw callbacks counted (`None`: not measurable, or the hrtimer not
    /// learned yet).
    pub sw: Option<u64>,
    /// Callbacks the counters saw but the rings did not (sampled events are
    /// never lost silently).
    pub sw_lost: u64,
    /// The runs in one interrupt sampled in the interval (`None`: callbacks
    /// not sampled).
    pub runs: Option<Vec<IrqRun>>,
    /// LAPIC interrupts accepted in the vCPU's thread (`None`: not
    /// measurable).
    pub irq: Option<u64>,
    /// How often, and when last, KVM left the hv timer in the interval
    /// (`kvm_hv_timer_state` with `hv_timer_in_use` 0: the sw timer started
    /// instead, around a HLT or on a failed hv arm, or a one-shot deadline
    /// already past when armed); `None`: not measured (no hv timer can run
    /// here). The hv timer's re-arms (one per expiry of a periodic timer)
    /// are not sampled: they cost the guest and are no change.
    pub left_hv: Option<LeftHv>,
}

/// How often, and when last, KVM left a vCPU's hv timer in an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeftHv {
    /// Times it left.
    pub count: u32,
    /// The last of them, ns since the epoch (`None` when `count` is 0).
    pub last_ns: Option<u64>,
}

impl LeftHv {
    /// One more time it left, at `t_ns` (times come in order per vCPU
    /// thread).
    pub fn add(&mut self, t_ns: u64) {
        self.count = self.count.saturating_add(1);
        self.last_ns = Some(self.last_ns.map_or(t_ns, |l| l.max(t_ns)));
    }
}

/// Callbacks counted beyond those sampled that are not called lost: a
/// counter read races with the sample being written, by a callback or two.
pub const LOST_SLACK: u64 = 2;

/// Callbacks the counters counted that the rings never delivered, from the
/// totals since the probes opened. The counter is read before the rings are
/// drained, so each callback it counted has its sample in a ring by then:
/// the rings' total can only fall behind the counter's for samples lost for
/// good (a ring overflowed). Per interval the two cannot be compared: a
/// callback between the count and the drain is counted in one interval and
/// sampled in the one before or after (under load, several: `top` flagged
/// `lost` when nothing was).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SampleLoss {
    /// Callbacks sampled in total.
    sampled: u64,
    /// Callbacks called lost so far.
    reported: u64,
}

impl SampleLoss {
    /// One interval: `counted_total`, the counter read before the drain,
    /// and `sampled`, the callbacks the drain delivered. Returns the
    /// callbacks newly found lost (beyond [`LOST_SLACK`]).
    pub fn interval(&mut self, counted_total: u64, sampled: u64) -> u64 {
        self.sampled = self.sampled.saturating_add(sampled);
        let missing = counted_total.saturating_sub(self.sampled.saturating_add(LOST_SLACK));
        let new = missing.saturating_sub(self.reported);
        self.reported = self.reported.max(missing);
        new
    }
}

/// Which VM and vCPU a row is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcpuId {
    /// The VMM's pid.
    pub pid: u32,
    /// The VM's name (from its command line).
    pub name: String,
    /// The vCPU index.
    pub vcpu: u32,
    /// The vCPU thread, when known.
    pub tid: Option<u32>,
}

/// One line of `top`: one vCPU over one interval (one NDJSON object). The
/// default is a row with nothing measured (back end unknown, every figure
/// null), the base a row is built on with only the fields that matter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TopRow {
    /// Interval start, s since `top` started.
    pub t_s: f64,
    /// Interval length, s.
    pub interval_s: f64,
    /// The VMM's pid.
    pub pid: u32,
    /// The VM's name.
    pub name: String,
    /// The vCPU index.
    pub vcpu: u32,
    /// The vCPU thread (null until it is known).
    pub tid: Option<u32>,
    /// hv timer expiries per second (null: no hv timer can run here).
    pub hv_per_s: Option<f64>,
    /// sw timer callbacks per second (null: not measurable yet).
    pub sw_per_s: Option<f64>,
    /// LAPIC interrupts accepted per second in the vCPU's thread (what the
    /// guest gets; null: not measurable).
    pub irq_per_s: Option<f64>,
    /// The back end of the interval.
    pub backend: Backend,
    /// Times KVM left the hv timer in the interval (see
    /// [`VcpuInterval::left_hv`]): a vCPU that halts does so at every HLT and
    /// returns to hv when it wakes; one that fell back, once (null: no hv
    /// timer can run here, or an older log).
    #[serde(default)]
    pub left_hv: Option<u32>,
    /// Most callbacks in one interrupt in the interval (null: not sampled;
    /// 0: no callback); of equal runs the latest-firing one.
    pub longest_run: Option<u64>,
    /// How late the longest run's callbacks were, ms (null where samples
    /// were lost in the interval: not measurable then).
    pub longest_run_late_ms: Option<f64>,
    /// From the longest run's first entry to its last exit, us.
    pub longest_run_us: Option<f64>,
    /// sw callbacks counted but not sampled in the interval (the run figures
    /// are then lower bounds).
    pub sw_lost: u64,
    /// When the vCPU fell back from hv to sw and stayed (s since start).
    pub fell_back_at_s: Option<f64>,
    /// Flags: `fell-back@<t>s`, `run<N>>` + threshold, `lost`, `learning`.
    pub flags: Vec<String>,
}

fn per_s(n: Option<u64>, len_ns: u64) -> Option<f64> {
    n.map(|n| n as f64 * 1e9 / len_ns.max(1) as f64)
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Follows one vCPU across intervals: whether the hv timer was seen, and
/// when the vCPU fell back to sw and stayed there.
#[derive(Debug, Clone, Default)]
pub struct VcpuTracker {
    /// Last evidence of the hv timer (the start of an interval with an
    /// expiry, or a time KVM left it), ns.
    last_hv_ns: Option<u64>,
    /// Last time KVM left the hv timer, ns.
    last_left_hv_ns: Option<u64>,
    /// Consecutive sw-only intervals since the hv timer was last seen.
    sw_only: u32,
    /// Start of the first of them.
    streak_start_ns: u64,
    /// Confirmed fallback, ns.
    fell_back_ns: Option<u64>,
}

impl VcpuTracker {
    /// The row of interval `m` of vCPU `id`; `max_run` is `--max-run`.
    pub fn row(&mut self, id: &VcpuId, m: &VcpuInterval, max_run: u64) -> TopRow {
        let left_hv = m.left_hv.unwrap_or_default();
        if let Some(t) = left_hv.last_ns {
            // The hv timer was in use up to the moment KVM left it.
            self.last_left_hv_ns = Some(t);
            self.last_hv_ns = Some(self.last_hv_ns.map_or(t, |h| h.max(t)));
        }
        let hv_fired = m.hv.is_some_and(|h| h > 0);
        if hv_fired {
            // Somewhere in the interval: KVM may have left it later in it.
            self.last_hv_ns = Some(self.last_hv_ns.map_or(m.start_ns, |t| t.max(m.start_ns)));
        }
        // A vCPU that moves between the timers (HLT) has not fallen back: a
        // fallen-back periodic timer stays on sw without KVM leaving hv again.
        let left = left_hv.count > 0;
        let sw_only = !hv_fired && !left && m.sw.is_some_and(|s| s > 0);
        if hv_fired || left {
            self.sw_only = 0;
            self.fell_back_ns = None;
        } else if sw_only && self.last_hv_ns.is_some() {
            if self.sw_only == 0 {
                self.streak_start_ns = m.start_ns;
            }
            self.sw_only += 1;
            if self.sw_only >= FALLBACK_CONFIRM_INTERVALS && self.fell_back_ns.is_none() {
                // When KVM last left the hv timer, where seen after the last
                // hv expiry; else the start of the streak.
                let at = match (self.last_left_hv_ns, self.last_hv_ns) {
                    (Some(s), Some(h)) if s >= h => s,
                    _ => self.streak_start_ns,
                };
                self.fell_back_ns = Some(at);
            }
        }
        let longest = m.runs.as_ref().map(|runs| {
            runs.iter()
                .copied()
                .max_by_key(|r| (r.callbacks(), r.late_ns(), std::cmp::Reverse(r.t_ns())))
        });
        let mut flags = Vec::new();
        if let Some(at) = self.fell_back_ns {
            flags.push(format!("fell-back@{:.1}s", secs(at)));
        }
        if let Some(Some(run)) = longest {
            if run.callbacks() > max_run {
                flags.push(format!(
                    "run{}>{max_run}@{:.1}s",
                    run.callbacks(),
                    secs(run.t_ns())
                ));
            }
        }
        if m.sw_lost > 0 {
            flags.push("lost".into());
        }
        if m.sw.is_none() && m.hv.is_none() {
            flags.push("learning".into());
        }
        TopRow {
            t_s: secs(m.start_ns),
            interval_s: secs(m.len_ns),
            pid: id.pid,
            name: id.name.clone(),
            vcpu: id.vcpu,
            tid: id.tid,
            hv_per_s: per_s(m.hv, m.len_ns),
            sw_per_s: per_s(m.sw, m.len_ns),
            irq_per_s: per_s(m.irq, m.len_ns),
            backend: classify(m.hv, m.sw),
            left_hv: m.left_hv.map(|l| l.count),
            longest_run: longest.map(|r| r.map_or(0, |r| r.callbacks())),
            // A lost callback sample takes its re-arm with it: the lateness
            // would be measured against an older expiry.
            longest_run_late_ms: longest
                .flatten()
                .filter(|_| m.sw_lost == 0)
                .map(|r| r.late_ns() as f64 / 1e6),
            longest_run_us: longest.flatten().map(|r| r.duration_ns() as f64 / 1e3),
            sw_lost: m.sw_lost,
            fell_back_at_s: self.fell_back_ns.map(secs),
            flags,
        }
    }
}

impl TopRow {
    /// The row as one NDJSON line (no newline).
    pub fn to_ndjson(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A row from one NDJSON line, checked: rates finite and not negative.
    pub fn from_ndjson(line: &str) -> Result<TopRow, TopError> {
        let row: TopRow = serde_json::from_str(line)?;
        let rates = [row.hv_per_s, row.sw_per_s, row.irq_per_s];
        if rates.iter().flatten().any(|r| !r.is_finite() || *r < 0.0)
            || !row.t_s.is_finite()
            || row.interval_s <= 0.0
        {
            return Err(TopError::Invalid(format!(
                "pid {} vcpu {}",
                row.pid, row.vcpu
            )));
        }
        Ok(row)
    }
}

#[cfg(test)]
mod tests;
