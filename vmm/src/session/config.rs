//! What a session runs: [`RunConfig`], the pause plan, and the defaults
//! (the one definition: [`RunConfig::default`] and the command line's
//! defaults both come from here).

use crate::host::caps::Lacks;
use serde::{Deserialize, Serialize};
use tickburst_analysis::names::{Apic, Idle, PauseMethod, ProbeMode, Timer};
use tickburst_analysis::verdict::Thresholds;

const MS: u64 = 1_000_000;
const S: u64 = 1_000 * MS;

/// Default timer period (`--period`; `model --period` has the same one).
pub const DEFAULT_PERIOD_NS: u64 = tickburst_analysis::model::DEFAULT_PERIOD_NS;
/// Default time before the first pause (`--warmup`).
pub const DEFAULT_WARMUP_NS: u64 = 2 * S;
/// Default length of each pause (`--pause`).
pub const DEFAULT_PAUSE_NS: u64 = 2 * S;
/// Default number of pause cycles (`--cycles`).
pub const DEFAULT_CYCLES: u32 = 1;
/// Default observation after each resume (`--observe`).
pub const DEFAULT_OBSERVE_NS: u64 = 3 * S;
/// Default report window (`--interval`).
pub const DEFAULT_INTERVAL_NS: u64 = S;
/// Default span of a periodic summary (`--summary-every`).
pub const DEFAULT_SUMMARY_EVERY_NS: u64 = 3_600 * S;
/// A report window is printed this long after it ends, so its last ticks
/// are in.
pub const WINDOW_SLACK_NS: u64 = 5_000_000;
/// Default LAPIC access mode (`--apic`).
pub const DEFAULT_APIC: Apic = Apic::X2Apic;
/// Default idle loop (`--idle`).
pub const DEFAULT_IDLE: Idle = Idle::Hlt;
/// Default LAPIC timer mode (`--timer`).
pub const DEFAULT_TIMER: Timer = Timer::Periodic;
/// Default host probes (`--host-probes`).
pub const DEFAULT_HOST_PROBES: ProbeMode = ProbeMode::Auto;
/// Default pause method (`--pause-method`).
pub const DEFAULT_PAUSE_METHOD: PauseMethod = PauseMethod::Kick;
/// Default number of vCPUs (`--vcpus`).
pub const DEFAULT_VCPUS: u32 = 1;
/// Default pause lengths of a sweep (`sweep --pauses`).
pub const DEFAULT_SWEEP_PAUSES_NS: &[u64] = &[S, 2 * S, 5 * S, 10 * S];

/// Which pauses a session makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PausePlan {
    /// `run`: `cycles` pauses of `pause_ns` each (0 cycles: none).
    Run {
        /// Length of each pause, ns.
        pause_ns: u64,
        /// Number of pause/resume cycles.
        cycles: u32,
    },
    /// `sweep`: one pause of each length, in this order, in one VM.
    Sweep {
        /// The pause lengths, ns.
        pauses_ns: Vec<u64>,
    },
    /// `watch`: no pause of its own for `duration_ns`; pauses caused from
    /// outside are found in the guest's ticks.
    Watch {
        /// How long to run (without `--duration`: as long as a record holds,
        /// [`tickburst_analysis::limits::longest_run_ns`], or until Ctrl-C).
        duration_ns: u64,
    },
}

impl Default for PausePlan {
    fn default() -> Self {
        PausePlan::Run {
            pause_ns: DEFAULT_PAUSE_NS,
            cycles: DEFAULT_CYCLES,
        }
    }
}

impl PausePlan {
    /// The length of each pause the session makes, in order.
    pub fn lengths_ns(&self) -> Vec<u64> {
        match self {
            PausePlan::Run { pause_ns, cycles } => vec![*pause_ns; *cycles as usize],
            PausePlan::Sweep { pauses_ns } => pauses_ns.clone(),
            PausePlan::Watch { .. } => Vec::new(),
        }
    }

    /// The pause recorded as `config.pause_ms`: a run's pause (0 without
    /// cycles), a sweep's first; a watch records the run default, as it
    /// always has.
    pub fn nominal_pause_ns(&self) -> u64 {
        match self {
            PausePlan::Run { cycles: 0, .. } => 0,
            PausePlan::Run { pause_ns, .. } => *pause_ns,
            PausePlan::Sweep { pauses_ns } => pauses_ns.first().copied().unwrap_or(0),
            PausePlan::Watch { .. } => DEFAULT_PAUSE_NS,
        }
    }

    /// Whether pauses are found in the guest's ticks (`watch`).
    pub fn detects(&self) -> bool {
        matches!(self, PausePlan::Watch { .. })
    }

    /// Whether the record gets the fit of burst against pause length.
    pub fn is_sweep(&self) -> bool {
        matches!(self, PausePlan::Sweep { .. })
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Timer period, ns.
    pub period_ns: u64,
    /// Time before the first pause, ns (a watch runs for its duration
    /// instead).
    pub warmup_ns: u64,
    /// The pauses.
    pub plan: PausePlan,
    /// Observation after each resume, ns.
    pub observe_ns: u64,
    /// Report window, ns.
    pub interval_ns: u64,
    /// A periodic summary every this long, ns (0: none).
    pub summary_every_ns: u64,
    /// LAPIC access mode.
    pub apic: Apic,
    /// Guest idle loop.
    pub idle: Idle,
    /// LAPIC timer mode.
    pub timer: Timer,
    /// Host-side probes.
    pub host_probes: ProbeMode,
    /// Verdict thresholds.
    pub thresholds: Thresholds,
    /// How the VM is paused.
    pub pause_method: PauseMethod,
    /// Number of vCPUs, each with its own LAPIC timer and tick ring.
    pub vcpus: u32,
    /// The vCPUs a kick pause stops, sorted (`None`: all). sigstop and
    /// freeze always stop all.
    pub pause_vcpus: Option<Vec<u32>>,
    /// Tests only (the CLI never sets it): run as on an older kernel that
    /// lacks these ([`crate::host::caps`]); the host probes then decide
    /// from the host's capabilities less these.
    pub kernel_lacks: Lacks,
}

impl RunConfig {
    /// The length of each pause, in order.
    pub fn pause_lengths(&self) -> Vec<u64> {
        self.plan.lengths_ns()
    }

    /// How long the guest runs before the first pause: the warm-up, or a
    /// watch's whole duration.
    pub fn first_phase_ns(&self) -> u64 {
        match self.plan {
            PausePlan::Watch { duration_ns } => duration_ns,
            _ => self.warmup_ns,
        }
    }

    /// How long the whole session is planned to run: the first phase, then
    /// each pause and its observation.
    pub fn planned_ns(&self) -> u64 {
        self.pause_lengths()
            .iter()
            .fold(self.first_phase_ns(), |t, p| {
                t.saturating_add(*p).saturating_add(self.observe_ns)
            })
    }

    /// The vCPUs the pauses stop, sorted.
    pub fn paused_vcpus(&self) -> Vec<u32> {
        match (&self.pause_vcpus, self.pause_method) {
            (Some(set), PauseMethod::Kick) => set.clone(),
            _ => (0..self.vcpus.max(1)).collect(),
        }
    }

    /// The vCPU the top-level figures and host probes follow: the first
    /// paused one.
    pub fn subject(&self) -> u32 {
        self.paused_vcpus().first().copied().unwrap_or(0)
    }
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            period_ns: DEFAULT_PERIOD_NS,
            warmup_ns: DEFAULT_WARMUP_NS,
            plan: PausePlan::default(),
            observe_ns: DEFAULT_OBSERVE_NS,
            interval_ns: DEFAULT_INTERVAL_NS,
            summary_every_ns: DEFAULT_SUMMARY_EVERY_NS,
            apic: DEFAULT_APIC,
            idle: DEFAULT_IDLE,
            timer: DEFAULT_TIMER,
            host_probes: DEFAULT_HOST_PROBES,
            thresholds: Thresholds::default(),
            pause_method: DEFAULT_PAUSE_METHOD,
            vcpus: DEFAULT_VCPUS,
            pause_vcpus: None,
            kernel_lacks: Lacks::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_give_their_pauses() {
        let run = PausePlan::Run {
            pause_ns: 5,
            cycles: 3,
        };
        assert_eq!(run.lengths_ns(), [5, 5, 5]);
        assert_eq!(run.nominal_pause_ns(), 5);
        let sweep = PausePlan::Sweep {
            pauses_ns: vec![1, 2],
        };
        assert_eq!((sweep.lengths_ns(), sweep.is_sweep()), (vec![1, 2], true));
        let watch = PausePlan::Watch { duration_ns: 9 };
        assert!(watch.lengths_ns().is_empty() && watch.detects());
        let cfg = RunConfig {
            plan: watch,
            ..RunConfig::default()
        };
        assert_eq!(cfg.first_phase_ns(), 9);
        assert_eq!(RunConfig::default().first_phase_ns(), DEFAULT_WARMUP_NS);
    }
}
