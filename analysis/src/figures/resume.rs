//! How the guest's ticks come back after a resume: the peak-rate window and
//! the catch-up search (definitions in the parent module's documentation).

use super::{CATCH_UP_TOLERANCE, MS};
use crate::irq_runs::count_between;

/// Most ticks in a window of `width` starting at a tick within `[from, to)`.
pub(super) fn peak_count(ticks: &[u64], from: u64, to: u64, width: u64) -> u64 {
    let lo = ticks.partition_point(|&t| t < from);
    let hi = ticks.partition_point(|&t| t < to).max(lo);
    let slice = &ticks[lo..hi];
    let mut best = 0;
    let mut j = 0;
    for i in 0..slice.len() {
        if j < i {
            j = i;
        }
        while j < slice.len() && slice[j] < slice[i].saturating_add(width) {
            j += 1;
        }
        best = best.max((j - i) as u64);
    }
    best
}

/// From `resume` to the start of the first window of width
/// `max(10 ms, 10 periods)` ending by `limit_ns` whose tick count is within
/// 20% of nominal.
pub fn catch_up_ns(ticks: &[u64], resume: u64, limit_ns: u64, period: u64) -> Option<u64> {
    let period = period.max(1);
    let catch_width = (10 * MS).max(period.saturating_mul(10));
    let nominal = catch_width as f64 / period as f64;
    let mut w = resume;
    while let Some(w_end) = w.checked_add(catch_width).filter(|&e| e <= limit_ns) {
        let n = count_between(ticks, w, w_end);
        if (n as f64 - nominal).abs() <= CATCH_UP_TOLERANCE * nominal {
            return Some(w - resume);
        }
        // An empty window is never within the tolerance (nominal is at
        // least 10 ticks): go straight to the window of the next tick, so
        // the loop takes at most one step per tick.
        let next = if n == 0 {
            let i = ticks.partition_point(|&t| t < w);
            ticks.get(i).map_or(u64::MAX, |&t| t)
        } else {
            0
        };
        let skip = next.saturating_sub(w) / catch_width;
        w = w.saturating_add(catch_width.saturating_mul(skip.max(1)));
    }
    None
}
