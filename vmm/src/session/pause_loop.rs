//! The pauses of a run: the warm-up (a watch's whole duration), then each
//! pause and the observation after its resume.

use crate::pause::{kick, protocol};
use crate::session::live::Live;
use crate::session::observer::RunObserver;
use crate::vstate::vcpu::Vcpus;
use std::time::Instant;
use tickburst_analysis::figures::PauseSpan;
use tickburst_analysis::names::{Outcome, PauseMethod};
use tickburst_analysis::vcpus::list_text;

/// What the pauses act on.
pub(super) struct Targets<'v> {
    /// The run's vCPU threads.
    pub(super) vcpus: &'v Vcpus,
    /// The vCPUs a pause stops, sorted.
    pub(super) set: &'v [u32],
    /// The subject's vCPU thread (the supervisor checks it stopped).
    pub(super) subject_tid: i32,
    /// CLOCK_MONOTONIC ns of the run's epoch (supervisor times are in it).
    pub(super) epoch_mono: u64,
}

/// Runs the warm-up, then every pause with its observation, until the plan
/// is done or something ends the run; returns how it ended (why it
/// failed is `live.error`).
pub(super) fn run_phases(
    live: &mut Live,
    targets: &Targets,
    observer: &mut dyn RunObserver,
) -> Outcome {
    let cfg = live.cfg;
    let mut step = live.run_until(cfg.first_phase_ns(), observer);
    for (cycle, &pause_ns) in cfg.pause_lengths().iter().enumerate() {
        if step != Outcome::Completed {
            break;
        }
        let made = match cfg.pause_method {
            PauseMethod::Kick => kick_pause(live, targets, cycle, pause_ns, observer),
            method => process_pause(live, targets, method, cycle, pause_ns, observer),
        };
        let span = match made {
            Ok((span, after)) => {
                step = after;
                span
            }
            Err(failed) => {
                step = failed;
                break;
            }
        };
        observer.note(&format!(
            "resume {} at {:.3} s (paused {:.1} ms)",
            cycle + 1,
            span.end_ns as f64 / 1e9,
            span.end_ns.saturating_sub(span.start_ns) as f64 / 1e6
        ));
        if step == Outcome::Completed {
            step = live.poll(observer);
        }
        if step == Outcome::Completed {
            step = live.run_until(span.end_ns + cfg.observe_ns, observer);
        }
        if step == Outcome::Completed {
            let now = live.now_ns();
            observer.paused(cycle, &span, &live.pause_stats_now(&span, now));
        }
    }
    step
}

/// Checks the clock of each parked vCPU of `set`: its TSC was read against
/// host time as it parked, an exact check of the conversion of its stamps.
fn check_clocks(live: &mut Live, vcpus: &Vcpus, set: &[u32]) {
    for &i in set {
        if let Some(sync) = vcpus.0[i as usize].paused_sync() {
            let at_ns = live.since_epoch(sync.at);
            live.collectors[i as usize].check_clock(sync.tsc, at_ns);
        }
    }
}

/// At the end of a session every vCPU is parked once more before it is
/// stopped, and its clock checked ([`check_clocks`]): the conversion after
/// the whole run, the only check of a `watch` (it makes no kick pauses).
/// A vCPU that does not park (it exited) leaves the check out; the run
/// then stops every vCPU, parked or not.
pub(super) fn check_clocks_at_end(live: &mut Live, vcpus: &Vcpus) {
    let all: Vec<u32> = (0..vcpus.0.len() as u32).collect();
    if kick::park(vcpus, &all).is_ok() {
        check_clocks(live, vcpus, &all);
    }
}

/// One kick pause of the vCPUs in the set: all are asked to park at once,
/// the pause lasts `pause_ns` from when the subject parked, then all are
/// released together. Returns the subject's span and how the pause ended,
/// or why it could not be made.
fn kick_pause(
    live: &mut Live,
    t: &Targets,
    cycle: usize,
    pause_ns: u64,
    observer: &mut dyn RunObserver,
) -> Result<(PauseSpan, Outcome), Outcome> {
    let starts = match kick::park(t.vcpus, t.set) {
        Ok(starts) => starts,
        Err(i) => {
            // Released again when the run stops its vCPUs.
            return Err(match live.poll(observer) {
                Outcome::Completed => live.fail(format!("vCPU {i} did not acknowledge the pause")),
                other => other,
            });
        }
    };
    check_clocks(live, t.vcpus, t.set);
    for (&i, at) in t.set.iter().zip(starts) {
        let start_ns = live.since_epoch(at);
        live.pauses[i as usize].push(PauseSpan {
            start_ns,
            end_ns: u64::MAX,
        });
    }
    let start_ns = live.pauses[live.subject]
        .last()
        .map_or_else(|| live.now_ns(), |p| p.start_ns);
    observer.note(&format!(
        "pause {} (kick{}) at {:.3} s",
        cycle + 1,
        if live.collectors.len() > 1 {
            format!(" vCPUs {}", list_text(t.set))
        } else {
            String::new()
        },
        start_ns as f64 / 1e9
    ));
    let step = live.run_until(start_ns + pause_ns, observer);
    // Always resume, whatever ended the pause.
    for (&i, end) in t.set.iter().zip(kick::release(t.vcpus, t.set)) {
        let end_ns = live.since_epoch(end.unwrap_or_else(Instant::now));
        if let Some(p) = live.pauses[i as usize].last_mut() {
            p.end_ns = end_ns.max(p.start_ns);
        }
    }
    let span = live.pauses[live.subject]
        .last()
        .copied()
        .unwrap_or(PauseSpan {
            start_ns,
            end_ns: live.now_ns(),
        });
    Ok((span, step))
}

/// One pause of the whole process (sigstop, freeze) by the supervisor.
/// Host counts are taken right before and right after, since none can be
/// read in between.
fn process_pause(
    live: &mut Live,
    t: &Targets,
    method: PauseMethod,
    cycle: usize,
    pause_ns: u64,
    observer: &mut dyn RunObserver,
) -> Result<(PauseSpan, Outcome), Outcome> {
    let now = live.now_ns();
    live.mark_host(now, true);
    observer.note(&format!(
        "pause {} ({method}) requested at {:.3} s",
        cycle + 1,
        now as f64 / 1e9
    ));
    let (start, end) = protocol::request_pause(method, pause_ns, t.subject_tid)
        .map_err(|e| live.fail(format!("{method} pause: {e}")))?;
    let now = live.now_ns();
    live.mark_host(now, true);
    let span = PauseSpan {
        start_ns: start.saturating_sub(t.epoch_mono),
        end_ns: end.saturating_sub(t.epoch_mono),
    };
    for pauses in &mut live.pauses {
        pauses.push(span);
    }
    Ok((span, Outcome::Completed))
}
