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
