//! Host counts of a run: cumulative marks, their differences over a
//! window, and which timer back end KVM used. Re-exported by
//! [`crate::analysis`].

use crate::count::Count;
use crate::names::{BackendKind, Scope};
use crate::vcpu_stats::VcpuStats;
use serde::{Deserialize, Serialize};

const MS: u64 = 1_000_000;

/// Cumulative host counts at one moment (from [`crate::probe_report`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCounts {
    /// sw timer callbacks (`apic_timer_fn`), `None` when not probed.
    pub sw_timer: Count,
    /// hv timer expiries, `None` when not available.
    pub hv_timer: Count,
    /// vCPU KVM stats.
    pub stats: VcpuStats,
}

/// Host counts read at `t_ns` (the collector takes one every 10 ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostMark {
    /// When, ns since ready.
    pub t_ns: u64,
    /// Cumulative counts then.
    pub counts: HostCounts,
}

/// Host-side counts over a window (`null` where not measured).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowHost {
    /// sw timer callbacks.
    pub sw_timer: Count,
    /// hv timer expiries (`null`: not available on this host).
    pub hv_timer: Count,
    /// `sw_timer + hv_timer` (the bug report's all_count).
    pub all: Count,
    /// Interrupts KVM injected into our vCPU.
    pub irq_injections: Count,
    /// Exits of our vCPU.
    pub exits: Count,
    /// HLT exits of our vCPU.
    pub halt_exits: Count,
    /// Scope of the timer counts: `vcpu`, or `host-wide` when the hrtimer of
    /// our vCPU could not be told apart.
    pub scope: Scope,
}

/// A host mark is used for a time only if it is this close to it. While the
/// whole VMM is stopped (sigstop, freeze) no marks are taken, so windows that
/// begin or end inside such a pause have no host counts (`null`, shown as
/// `n/a`) rather than counts smeared over the next window.
pub const HOST_MARK_TOLERANCE_NS: u64 = 50 * MS;

/// The counts of the mark nearest to `t`, if one is within the tolerance.
fn counts_at(marks: &[HostMark], t: u64) -> Option<&HostCounts> {
    mark_at(marks, t).map(|m| &m.counts)
}

/// How far apart the marks are that [`host_between`] takes for `from` and
/// `to` (`None` where it has none): the span its counts really cover, up to
/// a mark interval (10 ms) longer or shorter than `to - from`, and
/// 0 when both ends take the same mark.
pub fn marks_span(marks: &[HostMark], from: u64, to: u64) -> Option<u64> {
    Some(
        mark_at(marks, to)?
            .t_ns
            .saturating_sub(mark_at(marks, from)?.t_ns),
    )
}

/// The mark nearest to `t`, if one is within the tolerance.
fn mark_at(marks: &[HostMark], t: u64) -> Option<&HostMark> {
    let i = marks.partition_point(|m| m.t_ns < t);
    let after = marks.get(i);
    let before = i.checked_sub(1).and_then(|j| marks.get(j));
    [before, after]
        .into_iter()
        .flatten()
        .map(|m| (m.t_ns.abs_diff(t), m))
        .filter(|(d, _)| *d <= HOST_MARK_TOLERANCE_NS)
        .min_by_key(|(d, _)| *d)
        .map(|(_, m)| m)
}

fn sub(a: Count, b: Count) -> Option<u64> {
    Some(a.get()?.saturating_sub(b.get()?))
}

/// Host counts between `from` and `to` (marks sorted by time).
pub fn host_between(marks: &[HostMark], from: u64, to: u64, scope: Scope) -> Option<WindowHost> {
    let (a, b) = (counts_at(marks, from)?, counts_at(marks, to)?);
    let sw_timer = sub(b.sw_timer, a.sw_timer);
    let hv_timer = sub(b.hv_timer, a.hv_timer);
    Some(WindowHost {
        sw_timer: sw_timer.into(),
        hv_timer: hv_timer.into(),
        all: sw_timer
            .map(|sw| sw.saturating_add(hv_timer.unwrap_or(0)))
            .into(),
        irq_injections: sub(b.stats.irq_injections, a.stats.irq_injections).into(),
        exits: sub(b.stats.exits, a.stats.exits).into(),
        halt_exits: sub(b.stats.halt_exits, a.stats.halt_exits).into(),
        scope,
    })
}

/// Which LAPIC timer back end KVM used (`host.timer_backend`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimerBackend {
    /// `hv`, `sw`, `mixed` or `unknown`.
    pub kind: BackendKind,
    /// The changes of back end seen by `kvm_hv_timer_state` (the first event
    /// after ready, then each change; not the hv re-arms traced at every hv
    /// expiry): ms since ready, and `hv` (true) or sw.
    #[serde(deserialize_with = "crate::limits::switches")]
    pub switches: Vec<(f64, bool)>,
    /// Why it is `unknown`.
    pub reason: Option<String>,
    /// Went from hv to sw and stayed on sw (the unpatched-kernel fallback).
    pub fell_back_to_sw: bool,
    /// When it fell back for good: the first switch to sw after the last
    /// switch to hv, ms since ready.
    #[serde(default)]
    pub fallback_ms: Option<f64>,
}

impl TimerBackend {
    /// Whether the hv timer was in use right before `t_ms` (the last switch
    /// before it), `None` when no switch came before it. The switches are in
    /// time order (a loaded record is checked for it).
    pub fn hv_at(&self, t_ms: f64) -> Option<bool> {
        let n = self.switches.partition_point(|s| s.0 < t_ms);
        n.checked_sub(1)
            .and_then(|i| self.switches.get(i))
            .map(|s| s.1)
    }
}

/// Classifies the hv/sw switch events of a run (`None`: the probe was not on,
/// with the reason).
pub fn timer_backend(switches: Result<&[(f64, bool)], String>) -> TimerBackend {
    let unknown = |reason: String| TimerBackend {
        kind: BackendKind::Unknown,
        switches: Vec::new(),
        reason: Some(reason),
        fell_back_to_sw: false,
        fallback_ms: None,
    };
    let switches = match switches {
        Ok(s) if !s.is_empty() => s,
        Ok(_) => return unknown("no kvm:kvm_hv_timer_state event was seen".into()),
        Err(why) => return unknown(why),
    };
    // Only the changes of back end (an hv re-arm is traced too): the first
    // event, then each one whose back end differs from the one before.
    let mut changes: Vec<(f64, bool)> = Vec::new();
    for &s in switches {
        if changes.last().is_none_or(|last| last.1 != s.1) {
            changes.push(s);
        }
    }
    let switches = &changes[..];
    let any_hv = switches.iter().any(|s| s.1);
    let any_sw = switches.iter().any(|s| !s.1);
    let kind = match (any_hv, any_sw) {
        (true, false) => BackendKind::Hv,
        (false, true) => BackendKind::Sw,
        _ => BackendKind::Mixed,
    };
    let last_hv = switches.iter().rposition(|s| s.1);
    let fell_back_to_sw = last_hv.is_some() && switches.last().is_some_and(|s| !s.1);
    TimerBackend {
        kind,
        switches: switches.to_vec(),
        reason: None,
        fell_back_to_sw,
        fallback_ms: last_hv
            .filter(|_| fell_back_to_sw)
            .and_then(|i| switches.get(i + 1))
            .map(|s| s.0),
    }
}
