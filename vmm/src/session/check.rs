//! `tickburst check`: a small fixed matrix of runs, each judged ok / burst /
//! not exercised, for `git bisect run` and kernel CI.
//!
//! The matrix depends on what the host is (each case: 500 ms warm-up, one
//! pause of `--pause`, default 3 s, then 1.1 s of observation, host probes
//! auto). On a host without the hv timer:
//!
//! | case | period | guest idle | pause method |
//! |---|---|---|---|
//! | `p1ms_hlt_kick` | 1 ms | HLT | kick |
//! | `p1ms_spin_kick` | 1 ms | spin | kick |
//! | `pmin_spin_kick` | host minimum (`kvm.min_timer_period_us`) | spin | kick |
//! | `p1ms_hlt_sigstop` | 1 ms | HLT | sigstop |
//! | `pmin_spin_sigstop` | host minimum | spin | sigstop |
//!
//! On a host with the hv timer (kvm_intel, `preemption_timer=Y`) the `pmin`
//! cases become `p10ms` (10 ms): at the host minimum a slow host's own exit
//! handling can overrun the period, and an unfixed kernel then falls back to
//! the sw timer before any pause, which exercises nothing. `--period`
//! replaces every case's period (the names say it, e.g. `p2ms_spin_kick`).
//!
//! Spin keeps the vCPU in guest mode, where an hv timer runs; HLT blocks it,
//! where KVM moves to the sw timer; the shortest period gives the biggest
//! burst per paused second. With 3 s pauses the matrix takes about 25 s.

use crate::session::config::{PausePlan, RunConfig};
use crate::session::error::RunError;
use crate::session::observer::Quiet;
use crate::session::run;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;
use tickburst_analysis::names::{Apic, Idle, Outcome, PauseMethod, ProbeMode, Timer};
use tickburst_analysis::record::Record;
use tickburst_analysis::report::{self, CaseResult};
use tickburst_analysis::verdict::Thresholds;

const MS: u64 = 1_000_000;
/// Warm-up of each case.
pub const WARMUP_NS: u64 = 500 * MS;
/// Observation after the resume of each case (the verdict needs 1 s).
pub const OBSERVE_NS: u64 = 1_100 * MS;
/// Default pause of each case.
pub const DEFAULT_PAUSE_NS: u64 = 3_000 * MS;

/// One case of the matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// KTAP-safe name.
    pub name: String,
    /// Timer period, ns.
    pub period_ns: u64,
    /// Guest idle loop.
    pub idle: Idle,
    /// Pause method.
    pub method: PauseMethod,
}

/// What the matrix is chosen from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostKind {
    /// The shortest period KVM allows here, ns.
    pub min_period_ns: u64,
    /// Whether the hv timer can run here.
    pub hv_timer: bool,
}

/// The second period of an hv host's matrix.
const HV_SECOND_PERIOD_NS: u64 = 10 * MS;

/// `p1ms`, `p250us`, ...: a period as a case name tag.
fn period_tag(ns: u64) -> String {
    if ns.is_multiple_of(MS) {
        format!("p{}ms", ns / MS)
    } else if ns.is_multiple_of(1_000) {
        format!("p{}us", ns / 1_000)
    } else {
        format!("p{ns}ns")
    }
}

/// The documented matrix for `host`; `period_ns` replaces every case's
/// period.
pub fn matrix(host: HostKind, period_ns: Option<u64>) -> Vec<Case> {
    let case = |tag: &str, period: u64, idle: Idle, method: PauseMethod| {
        let (tag, period) = match period_ns {
            Some(p) => (period_tag(p), p),
            None => (tag.to_string(), period),
        };
        Case {
            name: format!("{tag}_{}_{}", idle.name(), method.name()),
            period_ns: period,
            idle,
            method,
        }
    };
    let (short_tag, short) = if host.hv_timer {
        (period_tag(HV_SECOND_PERIOD_NS), HV_SECOND_PERIOD_NS)
    } else {
        ("pmin".to_string(), host.min_period_ns)
    };
    vec![
        case("p1ms", MS, Idle::Hlt, PauseMethod::Kick),
        case("p1ms", MS, Idle::Spin, PauseMethod::Kick),
        case(&short_tag, short, Idle::Spin, PauseMethod::Kick),
        case("p1ms", MS, Idle::Hlt, PauseMethod::Sigstop),
        case(&short_tag, short, Idle::Spin, PauseMethod::Sigstop),
    ]
}

/// The run configuration of a case.
pub fn config(case: &Case, pause_ns: u64, thresholds: Thresholds) -> RunConfig {
    RunConfig {
        period_ns: case.period_ns,
        warmup_ns: WARMUP_NS,
        plan: PausePlan::Run {
            pause_ns,
            cycles: 1,
        },
        observe_ns: OBSERVE_NS,
        interval_ns: 1_000 * MS,
        apic: Apic::X2Apic,
        idle: case.idle,
        timer: Timer::Periodic,
        host_probes: ProbeMode::Auto,
        thresholds,
        pause_method: case.method,
        ..RunConfig::default()
    }
}

/// The result of the whole matrix.
pub struct CheckOutput {
    /// One per case run.
    pub cases: Vec<CaseResult>,
    /// The records of the cases that ran, with the case names.
    pub records: Vec<(String, Record)>,
    /// Ctrl-C ended the check early.
    pub interrupted: bool,
}

/// Runs the cases one after the other (one VM at a time).
///
/// Returns `Err` only when KVM itself is unusable (exit 125 for bisects).
pub fn run_matrix(
    cases: &[Case],
    pause_ns: u64,
    thresholds: Thresholds,
    stop: Option<Arc<AtomicBool>>,
    progress: &mut dyn FnMut(&str),
) -> Result<CheckOutput, String> {
    let mut out = CheckOutput {
        cases: Vec::new(),
        records: Vec::new(),
        interrupted: false,
    };
    for (i, case) in cases.iter().enumerate() {
        progress(&format!("case {}/{}: {}", i + 1, cases.len(), case.name));
        let cfg = config(case, pause_ns, thresholds);
        match run::run(&cfg, Instant::now(), stop.clone(), &mut Quiet) {
            Ok(output) => {
                let r = output.record;
                let mut results = report::record_cases(&r, &case.name);
                if r.outcome != Outcome::Completed {
                    for c in &mut results {
                        c.verdict = None;
                        c.error = Some(r.error.clone().unwrap_or_else(|| r.outcome.to_string()));
                    }
                }
                out.interrupted = r.outcome == Outcome::Interrupted;
                out.cases.extend(results);
                out.records.push((case.name.clone(), r));
            }
            Err(e @ RunError::KvmUnavailable(_)) => return Err(e.to_string()),
            Err(RunError::Interrupted) => out.interrupted = true,
            Err(e) => out.cases.push(CaseResult {
                name: case.name.clone(),
                verdict: None,
                error: Some(e.to_string()),
                figures: String::new(),
            }),
        }
        if out.interrupted {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_is_the_documented_one() {
        let sw_host = HostKind {
            min_period_ns: 200_000,
            hv_timer: false,
        };
        let m = matrix(sw_host, None);
        let names: Vec<&str> = m.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "p1ms_hlt_kick",
                "p1ms_spin_kick",
                "pmin_spin_kick",
                "p1ms_hlt_sigstop",
                "pmin_spin_sigstop"
            ]
        );
        assert_eq!(m[2].period_ns, 200_000);
        assert!(m.iter().all(|c| report::test_name(&c.name) == c.name));
        // Whole matrix at the default pause stays under 30 s of pauses,
        // warm-ups and observation.
        let total = m.len() as u64 * (WARMUP_NS + DEFAULT_PAUSE_NS + OBSERVE_NS);
        assert!(total < 30_000 * MS, "{total}");
    }

    #[test]
    fn hv_hosts_use_periods_of_a_millisecond_or_more() {
        let hv_host = HostKind {
            min_period_ns: 200_000,
            hv_timer: true,
        };
        let m = matrix(hv_host, None);
        assert!(m.iter().all(|c| c.period_ns >= MS));
        assert_eq!(m[2].name, "p10ms_spin_kick");
        assert_eq!(m[4].name, "p10ms_spin_sigstop");
        let forced = matrix(hv_host, Some(2 * MS));
        assert!(forced.iter().all(|c| c.period_ns == 2 * MS));
        assert_eq!(forced[0].name, "p2ms_hlt_kick");
        assert_eq!(period_tag(250_000), "p250us");
        assert_eq!(period_tag(1_500), "p1500ns");
    }
}
