//! Host data of a long run, bounded like its ticks (record version 3): the
//! host marks, the runs of timer callbacks and the hv expiries are kept only
//! where the analysis looks at them, so a run of days does not grow by them.
//!
//! - **Marks** (one every 10 ms): [`crate::figures::host_between`] takes,
//!   for a time `t`, the nearest mark within [`HOST_MARK_TOLERANCE_NS`] (the
//!   earlier of two as near). The analysis asks for it at report-window
//!   edges and, for each pause of the subject, at its start, its resume and
//!   the end of its first second (or the next pause's start, or the run's
//!   end). So a mark is kept only if it is the one taken for some window
//!   edge or one of those times ([`nearest_to_an_edge`], [`mark_needed`]):
//!   for every time the analysis asks about, the nearest mark is then the
//!   same, and every figure is identical to the one from all marks. A pause
//!   costs at most three marks, however long it is.
//! - **Callback runs and hv expiries**: kept when they lie from a pause's
//!   start to the end of its first second, within the tolerance
//!   ([`span_needed`]: the analysis counts them there only); running totals
//!   (callbacks and expiries sampled, the longest run anywhere) are kept for
//!   the whole run.
//!
//! A time is decided once the subject's stream settled past it by more than
//! the tolerance: a pause reported later starts after what has settled (a
//! gap is found at its end, but its ticks wait [`crate::stream::HOLD_NS`];
//! a pause the VMM makes is told at once), so it cannot come near it.

use crate::figures::{PauseSpan, AFTER_SPAN_NS};
use crate::host_counts::{HostMark, HOST_MARK_TOLERANCE_NS};
use crate::irq_runs::{HostEvents, IrqRun, RunGrouper, TimerEvent};
use std::collections::VecDeque;

const TOL: u64 = HOST_MARK_TOLERANCE_NS;

/// At most this many callback runs, and as many hv expiries, are kept
/// (1 MiB and 256 KiB; 32 seconds of runs after resumes at 1 ms): a watch
/// at the shortest period on a busy host finds a gap every few seconds,
/// each with a second of runs. Beyond it they are counted in
/// `kept_dropped`, and the pause figures fall back to the marks.
pub const MAX_KEPT_EVENTS: usize = 32 * 1024;

/// Whether the mark at `t`, between its neighbours `prev` and `next`, is
/// the one the analysis takes for some time it asks about a pause: the
/// nearest (the earlier of two as near) to a start, a resume or the end of
/// the first second after a resume of one of `pauses` (sorted, not
/// overlapping; an open one ends at `u64::MAX`), within the tolerance.
pub fn mark_needed(pauses: &[PauseSpan], prev: Option<u64>, t: u64, next: Option<u64>) -> bool {
    let i = pauses.partition_point(|p| p.start_ns <= t.saturating_add(TOL));
    pauses[..i]
        .iter()
        .rev()
        .take_while(|p| p.end_ns.saturating_add(AFTER_SPAN_NS + TOL) >= t)
        .any(|p| {
            [p.start_ns, p.end_ns, p.end_ns.saturating_add(AFTER_SPAN_NS)]
                .iter()
                .any(|&x| x.abs_diff(t) <= TOL && nearest_to(prev, t, next, x))
        })
}

/// Whether the mark at `t` (neighbours `prev`, `next`) is the one
/// [`crate::figures::host_between`] takes for time `x`: the nearest, the
/// earlier of two as near.
pub fn nearest_to(prev: Option<u64>, t: u64, next: Option<u64>, x: u64) -> bool {
    if x <= t {
        // The first mark at or after `x`.
        prev.is_none_or(|p| x > p && t - x < x - p)
    } else {
        // The last mark before `x`.
        next.is_none_or(|n| x <= n && x - t <= n - x)
    }
}

/// Whether the analysis counts host events at `t`: from a pause's start to
/// the end of the first second after its resume, within the tolerance.
pub fn span_needed(pauses: &[PauseSpan], t: u64) -> bool {
    let i = pauses.partition_point(|p| p.start_ns <= t.saturating_add(TOL));
    i.checked_sub(1)
        .and_then(|j| pauses.get(j))
        .is_some_and(|p| p.end_ns.saturating_add(AFTER_SPAN_NS + TOL) >= t)
}

/// Whether the mark at `t`, between its neighbours `prev` and `next` (all
/// marks, in time order), is the one taken for some report-window edge (a
/// multiple of `interval_ns`): the nearest to it, the earlier of two as near.
pub fn nearest_to_an_edge(prev: Option<u64>, t: u64, next: Option<u64>, interval_ns: u64) -> bool {
    let i = interval_ns.max(1);
    // The last edge not after `t`, and the first one after it.
    let below = t / i * i;
    let above = (t / i).checked_add(1).and_then(|k| k.checked_mul(i));
    nearest_to(prev, t, next, below) || above.is_some_and(|e| nearest_to(prev, t, next, e))
}

/// The marks that [`MarkThinner`] keeps of `marks` (sorted by time) for a
/// run with `pauses`.
pub fn thin_marks(marks: &[HostMark], interval_ns: u64, pauses: &[PauseSpan]) -> Vec<HostMark> {
    let mut t = MarkThinner::new(interval_ns);
    marks.iter().for_each(|m| t.push(*m));
    t.settle(u64::MAX, pauses);
    t.marks().to_vec()
}

/// Host marks as they are taken: the decided ones thinned, the newest ones
/// (not yet decided) all there, in one slice.
#[derive(Debug, Clone, Default)]
pub struct MarkThinner {
    marks: Vec<HostMark>,
    /// `marks[..decided]` are decided.
    decided: usize,
    /// The time of the last decided mark, kept or not.
    last: Option<u64>,
    interval_ns: u64,
}

impl MarkThinner {
    /// No marks yet; report windows of `interval_ns`.
    pub fn new(interval_ns: u64) -> Self {
        MarkThinner {
            interval_ns,
            ..MarkThinner::default()
        }
    }

    /// The next mark (in time order).
    pub fn push(&mut self, m: HostMark) {
        self.marks.push(m);
    }

    /// The marks kept so far and the undecided ones, sorted by time.
    pub fn marks(&self) -> &[HostMark] {
        &self.marks
    }

    /// Takes the marks out (at the end of a run: the record gets them
    /// without a copy, which would be the largest at the end of a day).
    pub fn take_marks(&mut self) -> Vec<HostMark> {
        self.decided = 0;
        std::mem::take(&mut self.marks)
    }

    /// Decides every mark more than the tolerance before `before_ns` (all
    /// but the newest, whose next neighbour is not known yet) with the
    /// pauses known so far (none can start before what is decided).
    pub fn settle(&mut self, before_ns: u64, pauses: &[PauseSpan]) {
        let (mut r, mut w) = (self.decided, self.decided);
        while r + 1 < self.marks.len() && self.marks[r].t_ns.saturating_add(TOL) < before_ns {
            let t = self.marks[r].t_ns;
            let next = Some(self.marks[r + 1].t_ns);
            if nearest_to_an_edge(self.last, t, next, self.interval_ns)
                || mark_needed(pauses, self.last, t, next)
            {
                self.marks[w] = self.marks[r];
                w += 1;
            }
            self.last = Some(t);
            r += 1;
        }
        self.marks.drain(w..r);
        self.decided = w;
    }
}

/// Host events as they are read: callbacks grouped into runs, runs and hv
/// expiries kept near kept spans, totals for the whole run.
#[derive(Debug, Clone, Default)]
pub struct EventThinner {
    pending: Vec<TimerEvent>,
    grouper: RunGrouper,
    undecided: VecDeque<IrqRun>,
    runs: Vec<IrqRun>,
    hv_pending: Vec<u64>,
    hv: Vec<u64>,
    sw_sampled: u64,
    hv_sampled: u64,
    longest: Option<IrqRun>,
    dropped: u64,
}

impl EventThinner {
    /// Events read (times in ns since ready, any order).
    pub fn push(&mut self, events: impl IntoIterator<Item = TimerEvent>) {
        self.pending.extend(events);
    }

    /// hv expiries read (ns since ready, any order).
    pub fn push_hv(&mut self, times: impl IntoIterator<Item = u64>) {
        let n = self.hv_pending.len();
        self.hv_pending.extend(times);
        self.hv_sampled = self
            .hv_sampled
            .saturating_add((self.hv_pending.len() - n) as u64);
    }

    /// Groups the events before `before_ns` and decides what lies more than
    /// the tolerance before it (`near`: within the tolerance of a kept span).
    pub fn settle(&mut self, before_ns: u64, near: impl Fn(u64) -> bool) {
        self.pending.sort_by_key(TimerEvent::t_ns);
        let n = self.pending.partition_point(|e| e.t_ns() < before_ns);
        let events: Vec<TimerEvent> = self.pending.drain(..n).collect();
        for e in &events {
            if let Some(run) = self.grouper.feed(e) {
                self.done(run);
            }
        }
        let decided = before_ns.saturating_sub(TOL);
        while let Some(run) = self.undecided.front().copied() {
            if run.t_ns() >= decided {
                break;
            }
            self.undecided.pop_front();
            if near(run.t_ns()) {
                if self.runs.len() < MAX_KEPT_EVENTS {
                    self.runs.push(run);
                } else {
                    self.dropped += 1;
                }
            }
        }
        self.hv_pending.sort_unstable();
        let n = self.hv_pending.partition_point(|&t| t < decided);
        for t in self.hv_pending.drain(..n).filter(|&t| near(t)) {
            if self.hv.len() < MAX_KEPT_EVENTS {
                self.hv.push(t);
            } else {
                self.dropped += 1;
            }
        }
    }

    fn done(&mut self, run: IrqRun) {
        self.sw_sampled = self.sw_sampled.saturating_add(run.callbacks());
        if self.longest.is_none_or(|l| run.callbacks() > l.callbacks()) {
            self.longest = Some(run);
        }
        self.undecided.push_back(run);
    }

    /// Runs kept so far (for tests and sizes).
    pub fn kept(&self) -> (usize, usize) {
        (self.runs.len(), self.hv.len())
    }

    /// Everything decided with the final kept spans (`near`); the counts
    /// (`sw_counted`, `hv_counted`) are the caller's.
    pub fn finish(mut self, near: impl Fn(u64) -> bool) -> HostEvents {
        self.settle(u64::MAX, &near);
        if let Some(run) = std::mem::take(&mut self.grouper).finish() {
            self.done(run);
        }
        self.settle(u64::MAX, &near);
        HostEvents {
            sw_runs: self.runs,
            hv_ns: self.hv,
            sw_counted: 0,
            sw_sampled: self.sw_sampled,
            hv_counted: None,
            hv_sampled: Some(self.hv_sampled),
            longest_anywhere: self.longest,
            kept_dropped: self.dropped,
        }
    }
}

#[cfg(test)]
mod tests;
