//! The run plot's steps: each report window as one step at its real width,
//! cut at pause edges, and split into short steps for the second after each
//! resume where the record holds every tick and every host callback there.
//!
//! Counts become rates (events per second of the step) so that steps of
//! different widths share one axis.

use tickburst_analysis::figures::{count_between, Window, AFTER_SPAN_NS};
use tickburst_analysis::irq_runs::HostEvents;
use tickburst_analysis::names::Scope;
use tickburst_analysis::record::Record;
use tickburst_analysis::samples::decode_ticks;

const MS: u64 = 1_000_000;
/// The shortest fine step after a resume.
pub(crate) const FINE_STEP_NS: u64 = 10 * MS;
/// A fine step holds at least this many nominal periods (a slow timer's
/// 10 ms step would hold 0 or 1 tick).
const FINE_STEP_PERIODS: u64 = 10;

/// One step: a span and its rates.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Step {
    /// Start, s since ready.
    pub x0: f64,
    /// End, s since ready.
    pub x1: f64,
    /// Guest ticks per second.
    pub guest: f64,
    /// Host callbacks (sw + hv) per second; `None` where not measured.
    pub host: Option<f64>,
    /// Expected guest ticks per second (0 while paused).
    pub expected: f64,
    /// A short step after a resume (from per-event samples).
    pub fine: bool,
}

/// The width of a fine step for a record.
pub(crate) fn fine_step_ns(r: &Record) -> u64 {
    FINE_STEP_NS.max(r.samples.period_ns.saturating_mul(FINE_STEP_PERIODS))
}

/// Where the record holds every tick and callback (so a span may be cut
/// finer than its report window).
struct Fine<'a> {
    ticks: Vec<u64>,
    /// Per-event host samples, where they count our vCPU only and none were
    /// lost; `None`: the host steps keep their window's rate.
    host: Option<&'a HostEvents>,
    /// Spans that hold every tick (`None`: the whole run).
    kept: Option<Vec<(u64, u64)>>,
}

impl<'a> Fine<'a> {
    fn of(r: &'a Record) -> Option<Fine<'a>> {
        let s = &r.samples;
        let ticks = decode_ticks(&s.tick_deltas_ns).ok()?;
        let host = s
            .host_events
            .as_ref()
            .filter(|e| e.complete() && s.host_scope == Scope::Vcpu);
        let kept = match &s.bounded {
            Some(b) if b.kept_dropped > 0 => return None,
            Some(b) => Some(
                b.kept_spans
                    .iter()
                    .map(|k| (k.start_ns, k.end_ns))
                    .collect(),
            ),
            None => None,
        };
        Some(Fine { ticks, host, kept })
    }

    fn covers(&self, a: u64, b: u64) -> bool {
        self.kept
            .as_ref()
            .is_none_or(|k| k.iter().any(|&(s, e)| s <= a && b <= e))
    }
}

fn ns(ms: f64) -> u64 {
    (ms.max(0.0) * 1e6).round() as u64
}

/// Whether the host steps after a resume come from per-event samples (else
/// they keep their report window's rate).
pub(crate) fn host_is_fine(r: &Record) -> bool {
    Fine::of(r).is_some_and(|f| f.host.is_some())
}

/// The step of a whole report window (where the record lacks the ticks to
/// cut it).
fn window_step(w: &Window) -> Step {
    let width_s = (w.duration_ms / 1e3).max(1e-9);
    Step {
        x0: w.t_ms / 1e3,
        x1: (w.t_ms + w.duration_ms) / 1e3,
        guest: w.guest_ticks as f64 / width_s,
        host: window_host(w),
        expected: w.expected_ticks / width_s,
        fine: false,
    }
}

/// A window's host callbacks per second.
fn window_host(w: &Window) -> Option<f64> {
    let width_s = (w.duration_ms / 1e3).max(1e-9);
    w.host
        .as_ref()
        .and_then(|h| h.all.get())
        .map(|n| n as f64 / width_s)
}

/// The steps of a run, in time order, contiguous.
///
/// Where the record holds every tick, consecutive windows form a block cut
/// at pause edges, into fine steps from each resume for
/// [`AFTER_SPAN_NS`], and elsewhere at the window edges; a window edge inside
/// a fine span or closer than one fine step to another cut is dropped, so
/// no sliver of a step drops to 0.
pub(crate) fn steps(r: &Record) -> Vec<Step> {
    let fine = Fine::of(r);
    let mut out = Vec::new();
    let mut block: Vec<&Window> = Vec::new();
    for w in &r.windows {
        let (a, b) = (ns(w.t_ms), ns(w.t_ms + w.duration_ms));
        match &fine {
            Some(f) if b > a && f.covers(a, b) => block.push(w),
            _ => {
                if let Some(f) = &fine {
                    block_steps(r, f, &block, &mut out);
                }
                block.clear();
                out.push(window_step(w));
            }
        }
    }
    if let Some(f) = &fine {
        block_steps(r, f, &block, &mut out);
    }
    out
}

/// The steps of consecutive windows whose every tick the record holds.
fn block_steps(r: &Record, f: &Fine, block: &[&Window], out: &mut Vec<Step>) {
    let (Some(first), Some(last)) = (block.first(), block.last()) else {
        return;
    };
    let (a, b) = (ns(first.t_ms), ns(last.t_ms + last.duration_ms));
    let nominal = 1e9 / r.config.actual_period_ns.max(1) as f64;
    let step_ns = fine_step_ns(r);
    let pauses: Vec<(u64, u64)> = r
        .samples
        .pauses
        .iter()
        .map(|p| (p.start_ns, p.end_ns))
        .collect();
    // The fine span after each resume: to the next pause or AFTER_SPAN_NS.
    let zones: Vec<(u64, u64)> = pauses
        .iter()
        .enumerate()
        .map(|(i, &(_, e))| {
            let next = pauses.get(i + 1).map_or(u64::MAX, |p| p.0);
            (e, e.saturating_add(AFTER_SPAN_NS).min(next))
        })
        .collect();
    let mut strong = vec![a, b];
    for &(s, e) in &pauses {
        strong.extend([s, e]);
    }
    for &(e, z) in &zones {
        let mut t = e;
        while t < z {
            strong.push(t);
            t += step_ns;
        }
        strong.push(z);
    }
    strong.retain(|&t| a <= t && t <= b);
    strong.sort_unstable();
    strong.dedup();
    let mut cuts = strong.clone();
    for w in block {
        let t = ns(w.t_ms);
        let in_zone = zones.iter().any(|&(e, z)| e <= t && t < z);
        let near = |c: &u64| c.abs_diff(t) < step_ns;
        if !in_zone && !strong.iter().any(near) {
            cuts.push(t);
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    for c in cuts.windows(2) {
        let (s0, s1) = (c[0], c[1]);
        let secs = (s1 - s0) as f64 / 1e9;
        let paused = pauses.iter().any(|&(s, e)| s <= s0 && s1 <= e);
        let in_zone = zones.iter().any(|&(e, z)| e <= s0 && s1 <= z);
        let mid_ms = (s0 + s1) as f64 / 2e6;
        let host = match f.host {
            Some(h) => Some(h.callbacks_between(s0, s1) as f64 / secs),
            // The rate of the window around the step's middle.
            None => block
                .iter()
                .find(|w| w.t_ms <= mid_ms && mid_ms < w.t_ms + w.duration_ms)
                .or(block.last())
                .and_then(|w| window_host(w)),
        };
        out.push(Step {
            x0: s0 as f64 / 1e9,
            x1: s1 as f64 / 1e9,
            guest: count_between(&f.ticks, s0, s1) as f64 / secs,
            host,
            expected: if paused { 0.0 } else { nominal },
            fine: in_zone,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::plot::tests::rig;

    fn check_contiguous(steps: &[Step], r: &Record) {
        for w in steps.windows(2) {
            assert!(
                (w[0].x1 - w[1].x0).abs() < 1e-9,
                "{:?} then {:?}",
                w[0],
                w[1]
            );
        }
        let last = r.windows.last().unwrap();
        let end = (last.t_ms + last.duration_ms) / 1e3;
        assert!((steps.last().unwrap().x1 - end).abs() < 1e-6);
    }

    #[test]
    fn storm_is_one_fine_step_and_the_last_window_keeps_its_width() {
        let r = rig(false);
        let steps = steps(&r);
        check_contiguous(&steps, &r);
        // 10 ms steps for the second after the resume.
        let fine: Vec<&Step> = steps.iter().filter(|s| s.fine).collect();
        assert!(fine.len() >= 95, "{} fine steps", fine.len());
        assert!(fine.iter().all(|s| s.x1 - s.x0 <= 0.010 + 1e-9));
        // The 9999 callbacks of one interrupt in one 10 ms step.
        let peak = steps.iter().filter_map(|s| s.host).fold(0.0, f64::max);
        assert!(peak >= 9999.0 / 0.010, "peak {peak}/s");
        // Nothing expected while paused, the nominal rate elsewhere.
        let p = &r.pauses[0];
        let mid = (p.start_ms + p.end_ms) / 2e3;
        let paused = steps.iter().find(|s| s.x0 <= mid && mid < s.x1).unwrap();
        assert_eq!((paused.expected, paused.guest), (0.0, 0.0));
        // The short last window: its rate, not a drop to 0.
        let last = steps.last().unwrap();
        assert!(last.guest > 500.0 && last.expected > 500.0, "{last:?}");
        // No sliver: every step but those at pause edges is at least one
        // fine step wide.
        let edges: Vec<f64> = r
            .pauses
            .iter()
            .flat_map(|p| [p.start_ms / 1e3, p.end_ms / 1e3])
            .collect();
        for s in &steps {
            let at_edge = edges
                .iter()
                .any(|e| (s.x0 - e).abs() < 1e-9 || (s.x1 - e).abs() < 1e-9);
            assert!(at_edge || s.x1 - s.x0 >= 0.0099, "{s:?}");
        }
    }

    #[test]
    fn fixed_run_stays_near_nominal_after_the_resume() {
        let r = rig(true);
        let steps = steps(&r);
        check_contiguous(&steps, &r);
        let fine: Vec<&Step> = steps.iter().filter(|s| s.fine).collect();
        assert!(!fine.is_empty());
        let peak = fine.iter().filter_map(|s| s.host).fold(0.0, f64::max);
        assert!(peak < 3000.0, "peak {peak}/s");
    }
}
