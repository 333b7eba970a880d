//! Ticks as they come, in memory independent of the run's length: counted
//! per report window at once, folded into the steady statistics once they
//! settle, and kept only around pauses and detected gaps (the retention
//! policy; see [`crate::bounded`] for what is kept and why).
//!
//! A tick settles when the caller says so ([`TickStream::settle`]), at least
//! [`HOLD_NS`] of tick time after it came, so a pause or gap reported a
//! little late (another vCPU's gap, a pause start) still finds its ticks.

use crate::bounded::BoundedTicks;
use crate::figures::{catch_up_ns, PauseSpan, AFTER_SPAN_NS, DETECT_GAP_PERIODS};
use crate::limits::MAX_WINDOWS;
use std::collections::VecDeque;

/// Ticks wait this long (tick time) before they settle.
pub const HOLD_NS: u64 = 1_000_000_000;
/// Ticks are kept from this long before a pause or gap.
pub const PRE_NS: u64 = 100_000_000;
/// Ticks are kept at most this long after a resume while the catch-up is
/// not found.
pub const CATCH_UP_HORIZON_NS: u64 = 10_000_000_000;
/// At most this many gaps are detected (as many as a record has pauses),
/// half of them shorter than [`LONG_GAP_NS`]; later ones are counted
/// (`gaps_dropped`) and said in the summary.
pub const MAX_GAPS: usize = crate::limits::MAX_PAUSES;
/// The catch-up of an open span is looked for again after this much
/// settled time.
const RECHECK_NS: u64 = 50_000_000;

/// A span whose ticks are kept.
#[derive(Debug, Clone, Copy)]
struct Keep {
    /// The pause's start (its key).
    key: u64,
    from: u64,
    /// Its resume, once known.
    resume: Option<u64>,
    checked_to: u64,
    /// An anomaly (a gap that is not a pause): kept only [`ANOMALY_NS`]
    /// around it.
    short: bool,
}

/// A gap at least this long (a `kill -STOP`, a freeze; not a host busy for
/// a few periods) may use the second half of the kept-tick budget.
pub const LONG_GAP_NS: u64 = 100_000_000;

/// Ticks kept after a gap that is not a pause (`run`: an anomaly).
pub const ANOMALY_NS: u64 = 10_000_000;

/// One vCPU's ticks as they come.
#[derive(Debug)]
pub struct TickStream {
    period_ns: u64,
    interval_ns: u64,
    gaps_are_pauses: bool,
    budget: usize,
    pending: VecDeque<u64>,
    newest: Option<u64>,
    settled_to: u64,
    windows: Vec<u64>,
    gaps: Vec<PauseSpan>,
    steady_end: Option<u64>,
    out: BoundedTicks,
    open: Vec<Keep>,
    kept: Vec<u64>,
    /// The longest interval shorter than a gap since the last
    /// [`TickStream::take_worst_interval`].
    worst: Option<u64>,
}

impl TickStream {
    /// A stream at `period_ns` with windows of `interval_ns` that keeps at
    /// most `budget` ticks. With `gaps_are_pauses` (`watch`) a detected gap
    /// is one of this vCPU's pauses (it ends the steady span).
    pub fn new(period_ns: u64, interval_ns: u64, budget: usize, gaps_are_pauses: bool) -> Self {
        TickStream {
            period_ns: period_ns.max(1),
            interval_ns: interval_ns.max(1),
            gaps_are_pauses,
            budget,
            pending: VecDeque::new(),
            newest: None,
            settled_to: 0,
            windows: Vec::new(),
            gaps: Vec::new(),
            steady_end: None,
            out: BoundedTicks::default(),
            open: Vec::new(),
            kept: Vec::new(),
            worst: None,
        }
    }

    /// The next tick (sorted: not before the previous one).
    pub fn push(&mut self, t: u64) {
        if let Some(prev) = self.newest {
            let interval = t.saturating_sub(prev);
            if interval < self.period_ns.saturating_mul(DETECT_GAP_PERIODS) {
                self.worst = Some(self.worst.map_or(interval, |w| w.max(interval)));
            }
            let is_gap = interval >= self.period_ns.saturating_mul(DETECT_GAP_PERIODS);
            // Short gaps may take half the list, as they may half the
            // kept ticks: a real pause late in a busy day is still found.
            let room = if interval >= LONG_GAP_NS {
                MAX_GAPS
            } else {
                MAX_GAPS / 2
            };
            if is_gap && self.gaps.len() >= room {
                self.out.gaps_dropped = self.out.gaps_dropped.saturating_add(1);
            } else if is_gap {
                let gap = PauseSpan {
                    start_ns: prev.saturating_add(self.period_ns).min(t),
                    end_ns: t,
                };
                self.gaps.push(gap);
                self.pause(gap, self.gaps_are_pauses);
                if !self.gaps_are_pauses {
                    if let Some(k) = self.open.last_mut().filter(|k| k.key == gap.start_ns) {
                        k.short = true;
                        k.from = k.from.max(gap.start_ns.saturating_sub(ANOMALY_NS));
                    }
                }
            }
        }
        self.newest = Some(t);
        self.out.first_tick_ns.get_or_insert(t);
        self.out.ticks_total = self.out.ticks_total.saturating_add(1);
        let k = (t / self.interval_ns) as usize;
        // The session ends before a record's last window
        // ([`crate::limits::longest_run_ns`]); this only bounds memory.
        if k < MAX_WINDOWS as usize {
            if k >= self.windows.len() {
                self.windows.resize(k + 1, 0);
            }
            self.windows[k] += 1;
        }
        self.pending.push_back(t);
    }

    /// A pause (`end_ns == u64::MAX` while it lasts) whose ticks are kept;
    /// `own`: this vCPU's (ends the steady span). Called again as it ends.
    pub fn pause(&mut self, span: PauseSpan, own: bool) {
        if own && self.steady_end.is_none() {
            self.steady_end = Some(span.start_ns);
        }
        let resume = (span.end_ns != u64::MAX).then_some(span.end_ns);
        if let Some(k) = self.open.iter_mut().find(|k| k.key == span.start_ns) {
            k.resume = resume;
            return;
        }
        if self
            .out
            .kept_spans
            .last()
            .is_some_and(|s| s.end_ns > span.start_ns)
        {
            return; // already kept
        }
        self.open.push(Keep {
            key: span.start_ns,
            from: span.start_ns.saturating_sub(PRE_NS).max(self.settled_to),
            resume,
            checked_to: 0,
            short: false,
        });
    }

    /// Settles every tick before `before_ns`: steady statistics, kept or
    /// dropped; closes kept spans whose catch-up was found.
    pub fn settle(&mut self, before_ns: u64) {
        while let Some(&t) = self.pending.front().filter(|&&t| t < before_ns) {
            self.pending.pop_front();
            if self.steady_end.is_none_or(|e| t < e) {
                self.out.steady.add(t);
            }
            let mut keeps = self.open.iter().filter(|k| k.from <= t).peekable();
            if keeps.peek().is_some() {
                // Short gaps may take half the budget; the rest is kept for
                // long ones and pauses the VMM makes (their end not known).
                let limit = if keeps.any(|k| {
                    k.resume
                        .is_none_or(|r| r.saturating_sub(k.key) >= LONG_GAP_NS)
                }) {
                    self.budget
                } else {
                    self.budget / 2
                };
                if self.kept.len() < limit {
                    self.kept.push(t);
                } else {
                    self.out.kept_dropped += 1;
                }
            }
        }
        self.settled_to = self.settled_to.max(before_ns);
        let to = self.settled_to;
        let (kept, period) = (&self.kept, self.period_ns);
        let mut closed = Vec::new();
        self.open.retain_mut(|k| {
            let Some(r) = k.resume else { return true };
            if k.short && to >= r.saturating_add(ANOMALY_NS) {
                closed.push(PauseSpan {
                    start_ns: k.from,
                    end_ns: to,
                });
                return false;
            }
            if k.short
                || to < r.saturating_add(AFTER_SPAN_NS)
                || to < k.checked_to.saturating_add(RECHECK_NS)
            {
                return true;
            }
            k.checked_to = to;
            let done = to >= r.saturating_add(CATCH_UP_HORIZON_NS)
                || catch_up_ns(kept, r, to, period).is_some();
            if done {
                closed.push(PauseSpan {
                    start_ns: k.from,
                    end_ns: to,
                });
            }
            !done
        });
        for span in closed {
            self.close(span);
        }
    }

    /// Adds a closed kept span, merged with those it overlaps (spans may
    /// close out of order).
    fn close(&mut self, mut span: PauseSpan) {
        let spans = &mut self.out.kept_spans;
        let lo = spans.partition_point(|s| s.end_ns < span.start_ns);
        let hi = spans.partition_point(|s| s.start_ns <= span.end_ns).max(lo);
        for s in &spans[lo..hi] {
            span.start_ns = span.start_ns.min(s.start_ns);
            span.end_ns = span.end_ns.max(s.end_ns);
        }
        spans.splice(lo..hi, [span]);
    }

    /// The timer period the stream was made for.
    pub fn period_ns(&self) -> u64 {
        self.period_ns
    }

    /// The newest tick.
    pub fn newest(&self) -> Option<u64> {
        self.newest
    }

    /// Ticks in report window `k` so far.
    pub fn window_ticks(&self, k: u64) -> u64 {
        self.windows.get(k as usize).copied().unwrap_or(0)
    }

    /// Gaps of at least [`DETECT_GAP_PERIODS`] periods found so far.
    pub fn gaps(&self) -> &[PauseSpan] {
        &self.gaps
    }

    /// The longest interval between two ticks that is not a gap since the
    /// last call (or the start).
    pub fn take_worst_interval(&mut self) -> Option<u64> {
        self.worst.take()
    }

    /// Every tick before this has settled.
    pub fn settled_to(&self) -> u64 {
        self.settled_to
    }

    /// Whether no span is being kept (nothing waits for a catch-up).
    pub fn quiet(&self) -> bool {
        self.open.is_empty()
    }

    /// The kept and the not yet settled ticks in `[from, to)`, sorted.
    pub fn ticks_between(&self, from: u64, to: u64) -> Vec<u64> {
        let lo = self.kept.partition_point(|&t| t < from);
        let hi = self.kept.partition_point(|&t| t < to).max(lo);
        let mut v = self.kept[lo..hi].to_vec();
        v.extend(self.pending.iter().filter(|&&t| t >= from && t < to));
        v
    }

    /// Ends the stream at `end_ns`: ticks at or after it are left out, every
    /// tick settles, open spans end there. Returns the summary and the kept
    /// ticks.
    pub fn finish(mut self, end_ns: u64) -> (BoundedTicks, Vec<u64>) {
        while self.pending.back().is_some_and(|&t| t >= end_ns) {
            let t = self.pending.pop_back().unwrap_or(0);
            if let Some(n) = self.windows.get_mut((t / self.interval_ns) as usize) {
                *n -= 1;
            }
            self.out.ticks_total -= 1;
        }
        self.settle(end_ns);
        for k in std::mem::take(&mut self.open) {
            self.close(PauseSpan {
                start_ns: k.from.min(end_ns),
                end_ns,
            });
        }
        self.windows
            .truncate(end_ns.div_ceil(self.interval_ns) as usize);
        self.out.window_ticks = self.windows;
        if self.out.ticks_total == 0 {
            self.out.first_tick_ns = None;
        }
        (self.out, self.kept)
    }
}

#[cfg(test)]
mod tests;
