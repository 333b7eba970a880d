//! Host timer events of our vCPU, one by one, and the runs of `apic_timer_fn`
//! callbacks inside one hard interrupt. Pure: no perf, no clocks.
//!
//! The hrtimer core runs every expired timer of a CPU in one pass of
//! `__hrtimer_run_queues`, and stamps each callback's
//! `timer:hrtimer_expire_entry` with the pass's `now`. A timer re-armed in the
//! past (the unfixed-kernel storm after a pause) expires again in the same
//! pass, so a **run** is a sequence of our hrtimer's callbacks on one CPU that
//! share one `now`. Its **duration** goes from the first callback's entry to
//! the last one's `hrtimer_expire_exit`; its **lateness** is `now` minus the
//! timer's `expires` from the `timer:hrtimer_start` that armed it (the first
//! callback of a storm is about the pause late).
//!
//! All times are ns since the guest reported ready (the run's epoch).

use serde::{Deserialize, Serialize};

/// Number of ticks in `[from, to)`.
pub fn count_between(ticks: &[u64], from: u64, to: u64) -> u64 {
    if to <= from {
        return 0;
    }
    let lo = ticks.partition_point(|&t| t < from);
    let hi = ticks.partition_point(|&t| t < to);
    hi.saturating_sub(lo) as u64
}

/// One host event of our vCPU's timer, as read from a perf ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerEvent {
    /// `hrtimer_expire_entry`: the callback starts; `now_ns` is the pass's
    /// `now` (CLOCK_MONOTONIC ns, as the kernel has it).
    Entry {
        /// When (ns since the epoch).
        t_ns: u64,
        /// The CPU it ran on.
        cpu: u32,
        /// The `now` field.
        now_ns: i64,
    },
    /// `hrtimer_expire_exit`: the callback returned.
    Exit {
        /// When.
        t_ns: u64,
        /// The CPU.
        cpu: u32,
    },
    /// `hrtimer_start`: the timer was armed (also by the hrtimer core when a
    /// callback asks to restart).
    Start {
        /// When.
        t_ns: u64,
        /// The `expires` field (CLOCK_MONOTONIC ns).
        expires_ns: i64,
    },
}

impl TimerEvent {
    /// When the event happened.
    pub fn t_ns(&self) -> u64 {
        match *self {
            TimerEvent::Entry { t_ns, .. }
            | TimerEvent::Exit { t_ns, .. }
            | TimerEvent::Start { t_ns, .. } => t_ns,
        }
    }

    /// The same event with its time made relative to `epoch_ns` (0 for an
    /// event before it).
    pub fn since(mut self, epoch_ns: u64) -> TimerEvent {
        let (TimerEvent::Entry { t_ns, .. }
        | TimerEvent::Exit { t_ns, .. }
        | TimerEvent::Start { t_ns, .. }) = &mut self;
        *t_ns = t_ns.saturating_sub(epoch_ns);
        self
    }
}

/// One run of callbacks inside one hard interrupt, serialised as the array
/// `[t_ns, callbacks, duration_ns, late_ns]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IrqRun(
    /// Entry of the first callback, ns since ready.
    pub u64,
    /// Callbacks in the run.
    pub u64,
    /// From the first entry to the last exit, ns (0 when no exit was seen).
    pub u64,
    /// The largest lateness in the run (`now - expires`), ns.
    pub u64,
);

impl IrqRun {
    /// Entry of the first callback.
    pub fn t_ns(&self) -> u64 {
        self.0
    }
    /// Callbacks in the run.
    pub fn callbacks(&self) -> u64 {
        self.1
    }
    /// First entry to last exit.
    pub fn duration_ns(&self) -> u64 {
        self.2
    }
    /// Largest lateness.
    pub fn late_ns(&self) -> u64 {
        self.3
    }
}

/// Groups events (any order; sorted here by time) into runs, sorted by time.
pub fn group_runs(events: &mut [TimerEvent]) -> Vec<IrqRun> {
    events.sort_by_key(TimerEvent::t_ns);
    let mut g = RunGrouper::default();
    let mut runs: Vec<IrqRun> = events.iter().filter_map(|e| g.feed(e)).collect();
    runs.extend(g.finish());
    runs
}

/// [`group_runs`] one event at a time (events fed in time order): a run is
/// handed out when the next one starts, so the events need not be kept.
#[derive(Debug, Clone, Default)]
pub struct RunGrouper {
    /// The open run's CPU and `now`.
    open: Option<(u32, i64)>,
    expires: Option<i64>,
    current: Option<IrqRun>,
}

impl RunGrouper {
    /// The next event; returns the run it completed, if any.
    pub fn feed(&mut self, e: &TimerEvent) -> Option<IrqRun> {
        match *e {
            TimerEvent::Start { expires_ns, .. } => self.expires = Some(expires_ns),
            TimerEvent::Entry { t_ns, cpu, now_ns } => {
                // A start arms one expiry: where a start's sample was lost,
                // the one before it is stale (lateness unknown: 0).
                let late = self
                    .expires
                    .take()
                    .map_or(0, |x| now_ns.saturating_sub(x).max(0) as u64);
                match (self.open, self.current.as_mut()) {
                    (Some((c, n)), Some(run)) if c == cpu && n == now_ns => {
                        run.1 += 1;
                        run.3 = run.3.max(late);
                    }
                    _ => {
                        self.open = Some((cpu, now_ns));
                        return self.current.replace(IrqRun(t_ns, 1, 0, late));
                    }
                }
            }
            TimerEvent::Exit { t_ns, cpu } => {
                if let (Some((c, _)), Some(run)) = (self.open, self.current.as_mut()) {
                    if c == cpu {
                        run.2 = t_ns.saturating_sub(run.0);
                    }
                }
            }
        }
        None
    }

    /// The run still open (no more events come).
    pub fn finish(self) -> Option<IrqRun> {
        self.current
    }
}

/// Per-event host samples of a run (`samples.host_events` in the record).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEvents {
    /// Runs of our hrtimer's `apic_timer_fn` callbacks, sorted by time.
    #[serde(deserialize_with = "crate::limits::events")]
    pub sw_runs: Vec<IrqRun>,
    /// hv timer expiries (VMX exit 52 on our vCPU thread), ns since ready,
    /// sorted.
    #[serde(deserialize_with = "crate::limits::events")]
    pub hv_ns: Vec<u64>,
    /// sw callbacks the counters counted over the same time.
    pub sw_counted: u64,
    /// sw callbacks sampled (the sum of the runs' callbacks).
    pub sw_sampled: u64,
    /// hv expiries counted (`null` where the hv probe is not on).
    pub hv_counted: Option<u64>,
    /// hv expiries sampled in the whole run (record version 3: `hv_ns`
    /// holds only those inside kept spans); absent: `hv_ns` holds them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hv_sampled: Option<u64>,
    /// The run with the most callbacks anywhere in the run, the earliest of
    /// equals (record version 3: `sw_runs` holds only the runs inside kept
    /// spans); absent: found in `sw_runs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longest_anywhere: Option<IrqRun>,
    /// Runs and expiries inside kept spans that were not kept (the budget
    /// was spent, record version 3): the events are then not complete, and
    /// the pause figures come from the host marks.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub kept_dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl HostEvents {
    /// Whether every counted callback was sampled.
    pub fn complete(&self) -> bool {
        self.kept_dropped == 0
            && self.sw_sampled >= self.sw_counted
            && self.hv_counted.is_none_or(|n| self.hv_seen() >= n)
    }

    /// hv expiries sampled in the whole run.
    pub fn hv_seen(&self) -> u64 {
        self.hv_sampled.unwrap_or(self.hv_ns.len() as u64)
    }

    /// The longest run of the whole run (the earliest of equals).
    pub fn longest_of_run(&self) -> Option<IrqRun> {
        match self.longest_anywhere {
            Some(r) => Some(r),
            None => self.longest_run(0, u64::MAX),
        }
    }

    /// One line on events the rings lost, if any (sampled events must never
    /// be lost silently).
    pub fn loss_note(&self) -> Option<String> {
        if self.complete() {
            return None;
        }
        if self.kept_dropped > 0 {
            return Some(format!(
                "host events: {} runs or expiries near pauses not kept (the memory budget was spent); \
                 per-callback figures are lower bounds, counts come from the 10 ms marks",
                self.kept_dropped
            ));
        }
        Some(format!(
            "host events lost: sampled {} of {} sw callbacks{} counted; per-callback figures are lower bounds",
            self.sw_sampled,
            self.sw_counted,
            self.hv_counted
                .map_or(String::new(), |n| format!(" and {} of {n} hv expiries", self.hv_seen()))
        ))
    }

    /// The runs starting in `[from, to)` (runs sorted by time, as
    /// [`HostEvents::validate`] checks).
    fn runs_between(&self, from: u64, to: u64) -> &[IrqRun] {
        let lo = self.sw_runs.partition_point(|r| r.t_ns() < from);
        let hi = self.sw_runs.partition_point(|r| r.t_ns() < to).max(lo);
        &self.sw_runs[lo..hi]
    }

    /// sw callbacks plus hv expiries in `[from, to)` (saturating at
    /// `u64::MAX`).
    pub fn callbacks_between(&self, from: u64, to: u64) -> u64 {
        let sw = self
            .runs_between(from, to)
            .iter()
            .map(IrqRun::callbacks)
            .fold(0, u64::saturating_add);
        sw.saturating_add(count_between(&self.hv_ns, from, to))
    }

    /// The run with the most callbacks starting in `[from, to)` (the earliest
    /// of equals).
    pub fn longest_run(&self, from: u64, to: u64) -> Option<IrqRun> {
        self.runs_between(from, to)
            .iter()
            .fold(None, |best: Option<IrqRun>, r| match best {
                Some(b) if b.callbacks() >= r.callbacks() => Some(b),
                _ => Some(*r),
            })
    }

    /// Checks the invariants the analysis relies on (the input may come from
    /// a file): runs and hv times sorted, runs of at least one callback.
    pub fn validate(&self) -> Result<(), String> {
        if self.sw_runs.windows(2).any(|w| w[1].t_ns() < w[0].t_ns()) {
            return Err("host_events.sw_runs not sorted by time".into());
        }
        if self.sw_runs.iter().any(|r| r.callbacks() == 0) {
            return Err("host_events.sw_runs has a run of 0 callbacks".into());
        }
        if self.hv_ns.windows(2).any(|w| w[1] < w[0]) {
            return Err("host_events.hv_ns not sorted".into());
        }
        if self.hv_sampled.is_some_and(|n| n < self.hv_ns.len() as u64) {
            return Err("host_events.hv_sampled is less than the hv_ns kept".into());
        }
        if self.longest_anywhere.is_some_and(|r| r.callbacks() == 0) {
            return Err("host_events.longest_anywhere is a run of 0 callbacks".into());
        }
        Ok(())
    }
}

/// Cost of one callback measured in a run: its duration over its callbacks,
/// ns (from the longest run; runs of fewer than `min` callbacks say little).
pub fn cost_per_callback_ns(run: &IrqRun, min: u64) -> Option<f64> {
    (run.callbacks() >= min.max(1) && run.duration_ns() > 0)
        .then(|| run.duration_ns() as f64 / run.callbacks() as f64)
}

#[cfg(test)]
mod tests;
