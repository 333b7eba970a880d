//! The arguments checked against what the command line accepts, turned into
//! a session's [`RunConfig`] (or the model's inputs, the thresholds, ...).

use crate::cli::arg_limits::{
    duration_in, CHECK_PAUSE_RANGE_NS, INTERVAL_RANGE_NS, MAX_CYCLES, MAX_PERIOD_NS, MAX_PHASE_NS,
    MAX_SUMMARY_EVERY_NS, MAX_VCPUS, MIN_PAUSE_NS, MIN_WATCHDOG_NS, MIN_WATCH_NS,
    MODEL_MIN_PERIOD_NS,
};
use crate::cli::args::{GuestArgs, RunArgs, SweepArgs, VmArgs, WatchArgs};
use crate::cli::report_args::{CheckArgs, ModelArgs, ThresholdArgs};
use crate::session::config::{PausePlan, RunConfig};
use tickburst_analysis::figures::AFTER_SPAN_NS;
use tickburst_analysis::limits::{longest_run_ns, MAX_WINDOWS};
use tickburst_analysis::model::{self, CostSource, Prediction};
use tickburst_analysis::names::PauseMethod;
use tickburst_analysis::record::Record;
use tickburst_analysis::units::{format_duration_ns, parse_duration_ns};
use tickburst_analysis::vcpus::parse_pause_set;
use tickburst_analysis::verdict::Thresholds;

/// Folds clap's multi-line error into one line: the message and what it
/// names, without the usage block and tips.
pub fn one_line_usage_error(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let parts: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("Usage:"))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
        .collect();
    let joined = parts.join(" ");
    let joined = joined.strip_prefix("error: ").unwrap_or(&joined);
    format!("{joined} (see --help)")
}

impl GuestArgs {
    /// Validates the arguments against the allowed ranges. `min_period_ns` is
    /// the host's `kvm.min_timer_period_us` (KVM clamps shorter periods, which
    /// would make the measurement lie). Phases and pauses are left at their
    /// defaults: the caller sets them.
    pub fn to_config(&self, min_period_ns: u64) -> Result<RunConfig, String> {
        let period_ns = parse_duration_ns(&self.period).map_err(|e| format!("--period: {e}"))?;
        if period_ns < min_period_ns || period_ns > MAX_PERIOD_NS {
            return Err(format!(
                "--period {} is out of range: allowed {} (kvm.min_timer_period_us on this host; KVM clamps shorter periods) to {}",
                self.period,
                format_duration_ns(min_period_ns),
                format_duration_ns(MAX_PERIOD_NS)
            ));
        }
        let vcpus = match self.vcpus.trim().parse::<u32>() {
            Ok(n @ 1..=MAX_VCPUS) => n,
            _ => {
                return Err(format!(
                    "--vcpus {} is out of range: allowed 1 to {MAX_VCPUS}",
                    self.vcpus
                ))
            }
        };
        let (lo, hi) = INTERVAL_RANGE_NS;
        let interval_ns = duration_in("interval", &self.interval, lo, hi)?;
        let summary_every_ns = match self.summary_every.trim() {
            "off" | "0" => 0,
            text => duration_in("summary-every", text, interval_ns, MAX_SUMMARY_EVERY_NS)?,
        };
        Ok(RunConfig {
            period_ns,
            vcpus,
            interval_ns,
            summary_every_ns,
            apic: self.apic,
            idle: self.idle,
            timer: self.timer,
            host_probes: self.host_probes,
            thresholds: self.thresholds.to_thresholds()?,
            ..RunConfig::default()
        })
    }
}

impl VmArgs {
    /// Validates the arguments against the allowed ranges (see
    /// [`GuestArgs::to_config`]); the session makes the pauses of `plan`.
    pub fn to_config(&self, min_period_ns: u64, plan: PausePlan) -> Result<RunConfig, String> {
        let mut cfg = self.guest.to_config(min_period_ns)?;
        cfg.warmup_ns = duration_in("warmup", &self.warmup, 0, MAX_PHASE_NS)?;
        cfg.observe_ns = duration_in("observe", &self.observe, 0, MAX_PHASE_NS)?;
        cfg.pause_method = self.pause_method;
        let set = parse_pause_set(&self.pause_vcpus, cfg.vcpus).map_err(|e| e.to_string())?;
        if set.len() != cfg.vcpus as usize {
            if self.pause_method != PauseMethod::Kick {
                return Err(format!(
                    "--pause-vcpus {}: --pause-method {} stops the whole VMM, so all vCPUs; use kick to pause some",
                    self.pause_vcpus, self.pause_method
                ));
            }
            cfg.pause_vcpus = Some(set);
        }
        cfg.plan = plan;
        Ok(cfg)
    }
}

impl RunArgs {
    /// Validates against the allowed ranges (see [`VmArgs::to_config`]).
    pub fn to_config(&self, min_period_ns: u64) -> Result<RunConfig, String> {
        if self.cycles > MAX_CYCLES {
            return Err(format!(
                "--cycles {} is out of range: allowed 0 to {MAX_CYCLES}",
                self.cycles
            ));
        }
        let pause_ns = duration_in("pause", &self.pause, MIN_PAUSE_NS, MAX_PHASE_NS)?;
        let plan = PausePlan::Run {
            pause_ns,
            cycles: self.cycles,
        };
        self.vm
            .to_config(min_period_ns, plan)
            .and_then(fits_a_record)
    }
}

impl SweepArgs {
    /// Validates the pause list and the rest.
    pub fn to_config(&self, min_period_ns: u64) -> Result<RunConfig, String> {
        let pauses_ns = self
            .pauses
            .split(',')
            .map(|p| duration_in("pauses", p.trim(), MIN_PAUSE_NS, MAX_PHASE_NS))
            .collect::<Result<Vec<u64>, String>>()?;
        if pauses_ns.len() < 2 || pauses_ns.len() > MAX_CYCLES as usize {
            return Err(format!(
                "--pauses needs 2 to {MAX_CYCLES} lengths to fit a line, got {}",
                pauses_ns.len()
            ));
        }
        let mut cfg = self
            .vm
            .to_config(min_period_ns, PausePlan::Sweep { pauses_ns })?;
        // The fit needs the whole first second after each resume.
        cfg.observe_ns = cfg.observe_ns.max(AFTER_SPAN_NS + 100_000_000);
        fits_a_record(cfg)
    }
}

impl WatchArgs {
    /// Validates; without `--duration` the run lasts until Ctrl-C or as long
    /// as a record holds at its `--interval` ([`longest_run_ns`]).
    pub fn to_config(&self, min_period_ns: u64) -> Result<RunConfig, String> {
        let mut cfg = self.guest.to_config(min_period_ns)?;
        let longest = longest_run_ns(cfg.interval_ns);
        let duration_ns = match &self.duration {
            Some(d) => duration_in("duration", d, MIN_WATCH_NS, longest)
                .map_err(|e| format!("{e} ({})", holds(cfg.interval_ns)))?,
            None => longest,
        };
        cfg.plan = PausePlan::Watch { duration_ns };
        Ok(cfg)
    }
}

/// What a record holds at report windows of `interval_ns`, for errors.
fn holds(interval_ns: u64) -> String {
    format!(
        "a record holds {MAX_WINDOWS} report windows, at most {} at --interval {}; a longer --interval holds more",
        format_duration_ns(longest_run_ns(interval_ns)),
        format_duration_ns(interval_ns)
    )
}

/// `cfg` if its planned run fits in a record ([`longest_run_ns`]).
fn fits_a_record(cfg: RunConfig) -> Result<RunConfig, String> {
    let planned = cfg.planned_ns();
    if planned > longest_run_ns(cfg.interval_ns) {
        return Err(format!(
            "the run would last {}: {}",
            format_duration_ns(planned),
            holds(cfg.interval_ns)
        ));
    }
    Ok(cfg)
}

impl CheckArgs {
    /// The period override, validated (`min_ns`: the host's shortest period).
    pub fn period_ns(&self, min_ns: u64) -> Result<Option<u64>, String> {
        self.period
            .as_deref()
            .map(|p| duration_in("period", p, min_ns, MAX_PERIOD_NS))
            .transpose()
    }

    /// The pause length, validated.
    pub fn pause_ns(&self) -> Result<u64, String> {
        let (lo, hi) = CHECK_PAUSE_RANGE_NS;
        duration_in("pause", &self.pause, lo, hi)
    }
}

impl ThresholdArgs {
    /// Validates: finite and positive.
    pub fn to_thresholds(&self) -> Result<Thresholds, String> {
        for (name, v) in [
            ("max-host-ratio", self.max_host_ratio),
            ("max-guest-ratio", self.max_guest_ratio),
        ] {
            if !v.is_finite() || v <= 0.0 {
                return Err(format!(
                    "--{name} {v} is out of range: must be a positive number"
                ));
            }
        }
        Ok(Thresholds {
            max_host_ratio: self.max_host_ratio,
            max_guest_ratio: self.max_guest_ratio,
        })
    }
}

impl ModelArgs {
    /// Validates and runs the model, saying where the cost came from.
    pub fn predict(&self) -> Result<(Prediction, CostSource), String> {
        let period = duration_in("period", &self.period, MODEL_MIN_PERIOD_NS, MAX_PERIOD_NS)?;
        let lag = duration_in("lag", &self.lag, 0, u64::MAX / 2)?;
        let (cost, source) = match (&self.cost, &self.cost_from) {
            (Some(c), _) => (duration_in("cost", c, 1, MAX_PERIOD_NS)?, CostSource::Given),
            (None, Some(path)) => {
                let record = Record::load(path)
                    .map_err(|e| format!("--cost-from {}: {e}", path.display()))?;
                model::measured_cost(&record)
                    .map_err(|e| format!("--cost-from {}: {e}", path.display()))?
            }
            (None, None) => (model::DEFAULT_COST_NS, CostSource::Assumed),
        };
        let watchdog = duration_in("watchdog", &self.watchdog, MIN_WATCHDOG_NS, MAX_PHASE_NS)?;
        Ok((model::predict(period, lag, cost, watchdog), source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::{Cli, Command};
    use clap::Parser;
    use tickburst_analysis::names::{Apic, Idle};

    fn args(extra: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut argv = vec!["tickburst", "run"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).map(|c| match c.command {
            Command::Run(a) => a,
            _ => unreachable!("run args"),
        })
    }

    #[test]
    fn defaults_are_valid() {
        let cfg = args(&[]).unwrap().to_config(200_000).unwrap();
        assert_eq!(cfg.period_ns, 1_000_000);
        assert_eq!(
            cfg.plan,
            PausePlan::Run {
                pause_ns: 2_000_000_000,
                cycles: 1
            }
        );
        assert_eq!(cfg.apic, Apic::X2Apic);
        assert_eq!(cfg.idle, Idle::Hlt);
        assert!(!cfg.plan.is_sweep(), "a run is not a sweep");
        assert_eq!(cfg.vcpus, 1);
        assert_eq!(cfg.pause_vcpus, None);
    }

    #[test]
    fn vcpus_and_pause_sets() {
        let cfg = args(&["--vcpus", "4", "--pause-vcpus", "1"])
            .unwrap()
            .to_config(200_000)
            .unwrap();
        assert_eq!((cfg.vcpus, cfg.pause_vcpus.clone()), (4, Some(vec![1])));
        assert_eq!((cfg.subject(), cfg.paused_vcpus()), (1, vec![1]));
        let all = args(&["--vcpus", "3", "--pause-vcpus", "0-2"])
            .unwrap()
            .to_config(200_000)
            .unwrap();
        assert_eq!(all.pause_vcpus, None, "every vCPU is all");
        for (flags, wanted) in [
            (&["--vcpus", "0"][..], "allowed 1 to 64"),
            (&["--vcpus", "65"][..], "allowed 1 to 64"),
            (&["--vcpus", "two"][..], "--vcpus two"),
            (
                &["--vcpus", "2", "--pause-vcpus", "2"][..],
                "does not exist",
            ),
            (
                &[
                    "--vcpus",
                    "2",
                    "--pause-vcpus",
                    "1",
                    "--pause-method",
                    "sigstop",
                ][..],
                "stops the whole VMM",
            ),
        ] {
            let e = args(flags).unwrap().to_config(200_000).unwrap_err();
            assert!(e.contains(wanted), "{flags:?}: {e}");
        }
    }

    #[test]
    fn rejects_out_of_range_with_the_range() {
        let e = args(&["--period", "100us"])
            .unwrap()
            .to_config(200_000)
            .unwrap_err();
        assert!(e.contains("allowed 200us") && e.contains("1s"), "{e}");
        let e = args(&["--period", "0ms"])
            .unwrap()
            .to_config(200_000)
            .unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        let e = args(&["--pause", "-2s"])
            .unwrap()
            .to_config(200_000)
            .unwrap_err();
        assert!(e.starts_with("--pause"), "{e}");
        let e = args(&["--interval", "1ms"])
            .unwrap()
            .to_config(200_000)
            .unwrap_err();
        assert!(e.contains("allowed 10ms to 60s"), "{e}");
        let e = args(&["--period", "fast"])
            .unwrap()
            .to_config(200_000)
            .unwrap_err();
        assert!(e.starts_with("--period"), "{e}");
        assert!(args(&["--apic", "nope"]).is_err());
        assert!(args(&["--cycles", "-1"]).is_err());
    }

    #[test]
    fn a_watch_without_duration_ends_where_its_record_is_full() {
        let watch = |extra: &[&str]| {
            let argv = [&["tickburst", "watch"][..], extra].concat();
            match Cli::try_parse_from(argv).unwrap().command {
                Command::Watch(a) => a.to_config(200_000).map(|c| c.plan),
                _ => unreachable!("watch args"),
            }
        };
        let ends = |ns| Ok(PausePlan::Watch { duration_ns: ns });
        assert_eq!(watch(&[]), ends(500_000 * 1_000_000_000));
        assert_eq!(watch(&["--interval", "10ms"]), ends(5_000 * 1_000_000_000));
        assert_eq!(
            watch(&["--interval", "60s"]),
            ends(7 * 86_400 * 1_000_000_000)
        );
        assert_eq!(
            watch(&["--duration", "2d"]),
            ends(2 * 86_400 * 1_000_000_000)
        );
    }
}
