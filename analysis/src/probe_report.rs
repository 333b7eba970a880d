//! What the host probes were and what they saw, as recorded (`host.probes`).
//! Data only: opening and reading the probes is `tickburst::host::probes`.

use serde::{Deserialize, Serialize};

pub use crate::names::{Probe, ProbeMode, Scope};

/// A probe that is not in use, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Missing {
    /// Probe name (`sw_timer`, `hv_timer`, `hv_state`, `kvm_stats`).
    pub probe: Probe,
    /// Why.
    pub reason: String,
    /// `true` when the host cannot have it at all (not a permission or
    /// set-up problem): `--host-probes on` does not fail for these.
    pub inapplicable: bool,
}

/// What was on and what was missing (`host.probes` in the JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// The mode asked for.
    pub mode: ProbeMode,
    /// Probes in use.
    pub enabled: Vec<Probe>,
    /// Probes not in use, with the reason.
    pub missing: Vec<Missing>,
    /// Scope of `sw_timer`: `vcpu` or `host-wide`.
    pub sw_timer_scope: Option<Scope>,
    /// Whether tickburst mounted tracefs for the run (unmounted at exit).
    pub mounted_tracefs: bool,
}

/// One hv/sw switch event.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimerSwitch {
    /// CLOCK_MONOTONIC time, ns.
    pub mono_ns: u64,
    /// `true` = hv timer, `false` = sw timer.
    pub hv: bool,
}

/// Adds `s` to the switch events kept, `kept` (in time order), when it is a
/// change of back end: the first event, one whose back end differs from the
/// last kept, or the first at or after `keep_from_ns` (the state where the
/// measured span starts). KVM traces `kvm_hv_timer_state` at every hv
/// re-arm too (each hv expiry: ~1000 a second at 1 ms), so keeping every
/// event would fill the record, and the memory of a long run, with no
/// change at all.
pub fn keep_change(kept: &mut Vec<TimerSwitch>, keep_from_ns: u64, s: TimerSwitch) {
    let keep = match kept.last() {
        None => true,
        Some(last) => last.hv != s.hv || (last.mono_ns < keep_from_ns && s.mono_ns >= keep_from_ns),
    };
    if keep {
        kept.push(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(mono_ns: u64, hv: bool) -> TimerSwitch {
        TimerSwitch { mono_ns, hv }
    }

    #[test]
    fn hv_re_arms_are_not_kept_changes_are() {
        // A spinning guest on hv: 5 000 re-arms, one fall-back to sw, back.
        let mut kept = Vec::new();
        for i in 0..5_000 {
            keep_change(&mut kept, 0, at(i * 1_000_000, true));
        }
        keep_change(&mut kept, 0, at(6_000_000_000, false));
        keep_change(&mut kept, 0, at(6_000_000_001, false));
        keep_change(&mut kept, 0, at(7_000_000_000, true));
        assert_eq!(
            kept,
            vec![
                at(0, true),
                at(6_000_000_000, false),
                at(7_000_000_000, true)
            ]
        );
    }

    #[test]
    fn the_first_event_of_the_measured_span_is_kept() {
        let mut kept = Vec::new();
        for t in [10, 20, 30, 40] {
            keep_change(&mut kept, 25, at(t, true));
        }
        assert_eq!(kept, vec![at(10, true), at(30, true)]);
    }
}
