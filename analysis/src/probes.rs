//! What the host probes were and what they saw, as recorded (`host.probes`).
//! Data only: opening and reading the probes is `tickburst::probes`.

use serde::{Deserialize, Serialize};

/// `--host-probes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeMode {
    /// Use what this host offers; name what is missing.
    Auto,
    /// Fail (exit 2) if a probe cannot be opened.
    On,
    /// Guest-only.
    Off,
}

/// A probe that is not in use, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Missing {
    /// Probe name (`sw_timer`, `hv_timer`, `hv_state`, `kvm_stats`).
    pub probe: String,
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
    pub enabled: Vec<String>,
    /// Probes not in use, with the reason.
    pub missing: Vec<Missing>,
    /// Scope of `sw_timer`: `vcpu` or `host-wide`.
    pub sw_timer_scope: Option<String>,
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
