//! The summary printed after a run (and by `analyze`): steady state, setup,
//! each pause, the timer back end, the verdict, the vCPUs, the outcome.

use tickburst_analysis::figures::PauseStats;
use tickburst_analysis::record::Record;
use tickburst_analysis::report::longest_run_text;
use tickburst_analysis::samples::RawSamples;
use tickburst_analysis::vcpus;

fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "never".into(), |ms| format!("{ms:.1} ms"))
}

/// Summary lines of one pause.
pub fn pause_summary(index: usize, p: &PauseStats) -> String {
    pause_text(index, p, &longest_run_text(p))
}

/// Summary lines of a pause `watch` found, printed as it is found: the
/// callback runs are grouped only at the end, so its longest run is in
/// the summary then (not "not sampled").
pub fn detected_summary(index: usize, p: &PauseStats) -> String {
    let run = match p.host_longest_run {
        Some(_) => longest_run_text(p),
        None => "longest run in one interrupt: in the summary at the end".into(),
    };
    pause_text(index, p, &run)
}

fn pause_text(index: usize, p: &PauseStats, longest_run: &str) -> String {
    format!(
        "pause {n}: {len:.1} ms (t={s:.3} s .. {e:.3} s){trunc}\n  \
         during pause: guest ticks {during}; missed ticks {missed}\n  \
         after resume: first 100 ms {t100} (burst ratio {burst:.2}), first 1 s {t1s}, \
         peak rate ratio {peak:.2}, catch-up {catch}",
        n = index + 1,
        len = p.end_ms - p.start_ms,
        s = p.start_ms / 1e3,
        e = p.end_ms / 1e3,
        trunc = if p.truncated {
            " [after-resume span cut short]"
        } else {
            ""
        },
        during = p.guest_ticks_during,
        missed = p.missed_ticks,
        t100 = p.ticks_first_100ms,
        burst = p.burst_ratio,
        t1s = p.ticks_first_1s,
        peak = p.peak_rate_ratio,
        catch = opt_ms(p.catch_up_ms),
    ) + &match (p.host_callbacks_during, p.host_callbacks_first_1s) {
        (Some(during), Some(first)) => format!(
            "\n  host timer callbacks: during pause {during}; first 1 s after resume {first} \
             (host burst ratio {:.2}); {longest_run}",
            p.host_burst_ratio.unwrap_or(0.0),
        ),
        _ => String::new(),
    }
}

/// A fitted rate this far from `KVM_GET_TSC_KHZ` (ppb) is more than NTP's
/// usual slew: the host's clock or its TSC calibration is off.
const ODD_RATE_PPB: i64 = 100_000;

/// The conversion's rate, as the clock line prints it.
fn rate_text(rate_ppb: Option<i64>) -> String {
    match rate_ppb {
        None => "rate KVM_GET_TSC_KHZ (no fitted rate)".into(),
        Some(r) if r.abs() > ODD_RATE_PPB => format!(
            "rate {:+.3} ppm from KVM_GET_TSC_KHZ (the host TSC against CLOCK_MONOTONIC): the host's clock or its TSC calibration is off",
            r as f64 / 1e3
        ),
        Some(r) => format!(
            "rate {:+.3} ppm from KVM_GET_TSC_KHZ (the host TSC against CLOCK_MONOTONIC)",
            r as f64 / 1e3
        ),
    }
}

/// The summary printed after a run.
pub fn summary(record: &Record) -> String {
    let st = &record.steady;
    let mut out = String::new();
    out.push_str(&format!(
        "steady: {} (nominal {:.1} Hz); inter-tick p50 {} p99 {} max {}; lost ticks {}\n",
        st.rate_hz.map_or_else(
            || "no rate (fewer than 2 ticks)".into(),
            |r| format!("{r:.1} Hz")
        ),
        st.nominal_hz,
        st.interval_p50_us
            .map_or_else(|| "-".into(), |v| format!("{v:.1} us")),
        st.interval_p99_us
            .map_or_else(|| "-".into(), |v| format!("{v:.1} us")),
        st.interval_max_us
            .map_or_else(|| "-".into(), |v| format!("{v:.1} us")),
        record.lost_ticks,
    ));
    out.push_str(&format!(
        "setup: guest ready {:.3} ms after start, first tick {}\n",
        record.timing.setup_us / 1e3,
        record
            .timing
            .first_tick_us
            .map_or_else(|| "never".into(), |us| format!("{:.3} ms", us / 1e3)),
    ));
    if let (Some(end), Some(max)) = (
        record.collector.clock_error_ns,
        record.collector.clock_error_max_ns,
    ) {
        out.push_str(&format!(
            "clock: error {:+.1} us at the end, {:+.1} us at most at kick pauses and the end (the guest TSC read against host time); the fit moved the conversion {:+.1} us; {}\n",
            end as f64 / 1e3,
            max as f64 / 1e3,
            record.collector.clock_adjust_ns as f64 / 1e3,
            rate_text(record.collector.clock_rate_ppb),
        ));
    }
    for (i, p) in record.pauses.iter().enumerate() {
        out.push_str(&pause_summary(i, p));
        out.push('\n');
    }
    // Every vCPU's ticks where there are several (the subject among them),
    // else the run's.
    let samples: Vec<(Option<u32>, &RawSamples)> = match &record.vcpus {
        Some(v) => v.list.iter().map(|v| (Some(v.vcpu), &v.samples)).collect(),
        None => vec![(None, &record.samples)],
    };
    for (vcpu, samples) in samples {
        if let Some(note) = samples.bounded.as_ref().and_then(|b| b.budget_note()) {
            let who = vcpu.map_or_else(String::new, |v| format!("vCPU {v}: "));
            out.push_str(&format!("{who}{note}\n"));
        }
    }
    if let Some(note) = record
        .samples
        .host_events
        .as_ref()
        .and_then(|e| e.loss_note())
    {
        out.push_str(&note);
        out.push('\n');
    }
    if let Some(b) = &record.host.timer_backend {
        out.push_str(&format!("timer back end: {}", b.kind));
        if let Some(r) = &b.reason {
            out.push_str(&format!(" ({r})"));
        }
        if let (true, Some(t)) = (b.fell_back_to_sw, b.fallback_ms) {
            out.push_str(&format!(
                " -- fell back from hv to sw at t={:.3} s and stayed there",
                t / 1e3
            ));
        }
        out.push('\n');
    }
    let v = &record.verdict;
    out.push_str(&format!("verdict: {}", v.kind.label()));
    for (i, p) in v.pauses.iter().enumerate() {
        out.push_str(&format!(
            "\n  pause {}: {} -- {}",
            i + 1,
            p.kind.label(),
            p.reasons.join("; ")
        ));
    }
    if let Some(o) = &v.outside_pauses {
        out.push_str(&format!(
            "\n  outside pauses: {} -- {}",
            o.kind.label(),
            o.reasons.join("; ")
        ));
    }
    out.push('\n');
    if let Some(v) = &record.vcpus {
        out.push_str(&vcpus::table(v));
        out.push('\n');
    }
    out.push_str(&format!("outcome: {}", record.outcome));
    if let Some(e) = &record.error {
        out.push_str(&format!(" ({e})"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickburst_analysis::figures::{self, HostCounts, HostMark, PauseSpan, Samples};
    use tickburst_analysis::names::Scope;

    const MS: u64 = 1_000_000;

    /// A 1 kHz guest paused over [2 s, 3 s), host marks every 10 ms.
    fn stats(events: Option<&tickburst_analysis::irq_runs::HostEvents>) -> PauseStats {
        let ticks: Vec<u64> = (0..5_000)
            .map(|i| i * MS)
            .filter(|t| !(2_000 * MS..3_000 * MS).contains(t))
            .collect();
        let marks: Vec<HostMark> = (0..500)
            .map(|i| HostMark {
                t_ns: i * 10 * MS,
                counts: HostCounts {
                    sw_timer: Some(i * 10).into(),
                    ..HostCounts::default()
                },
            })
            .collect();
        let pause = PauseSpan {
            start_ns: 2_000 * MS,
            end_ns: 3_000 * MS,
        };
        let pauses = [pause];
        let s = Samples {
            period_ns: MS,
            interval_ns: 1_000 * MS,
            end_ns: 5_000 * MS,
            ticks_ns: &ticks,
            pauses: &pauses,
            host: &marks,
            host_scope: Scope::Vcpu,
            host_events: events,
        };
        figures::pause_stats(&s, &pause, 5_000 * MS)
    }

    #[test]
    fn the_clock_line_says_which_rate_it_uses() {
        assert_eq!(rate_text(None), "rate KVM_GET_TSC_KHZ (no fitted rate)");
        assert!(rate_text(Some(-1_500)).starts_with("rate -1.500 ppm from KVM_GET_TSC_KHZ"));
        assert!(!rate_text(Some(99_000)).contains("is off"));
        assert!(rate_text(Some(250_000)).contains("the host's clock or its TSC calibration is off"));
    }

    #[test]
    fn a_pause_found_live_does_not_claim_its_callbacks_unsampled() {
        let p = stats(None);
        assert_eq!(p.host_callbacks_first_1s, Some(1_000));
        let live = detected_summary(0, &p);
        assert!(live.contains("longest run in one interrupt: in the summary at the end"));
        // At the end, without sampled callbacks, the record says so.
        assert!(pause_summary(0, &p).contains("not measured"));
        let sampled = tickburst_analysis::irq_runs::HostEvents::default();
        let p = stats(Some(&sampled));
        assert_eq!(detected_summary(0, &p), pause_summary(0, &p));
    }
}
