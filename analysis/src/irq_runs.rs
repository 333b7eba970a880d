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
    let mut runs: Vec<IrqRun> = Vec::new();
    // The open run: its CPU and `now`.
    let mut open: Option<(u32, i64)> = None;
    let mut expires: Option<i64> = None;
    for e in events.iter() {
        match *e {
            TimerEvent::Start { expires_ns, .. } => expires = Some(expires_ns),
            TimerEvent::Entry { t_ns, cpu, now_ns } => {
                // A start arms one expiry: where a start's sample was lost,
                // the one before it is stale (lateness unknown: 0).
                let late = expires
                    .take()
                    .map_or(0, |x| now_ns.saturating_sub(x).max(0) as u64);
                match (open, runs.last_mut()) {
                    (Some((c, n)), Some(run)) if c == cpu && n == now_ns => {
                        run.1 += 1;
                        run.3 = run.3.max(late);
                    }
                    _ => {
                        runs.push(IrqRun(t_ns, 1, 0, late));
                        open = Some((cpu, now_ns));
                    }
                }
            }
            TimerEvent::Exit { t_ns, cpu } => {
                if let (Some((c, _)), Some(run)) = (open, runs.last_mut()) {
                    if c == cpu {
                        run.2 = t_ns.saturating_sub(run.0);
                    }
                }
            }
        }
    }
    runs
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
}

impl HostEvents {
    /// Whether every counted callback was sampled.
    pub fn complete(&self) -> bool {
        self.sw_sampled >= self.sw_counted
            && self.hv_counted.is_none_or(|n| self.hv_ns.len() as u64 >= n)
    }

    /// One line on events the rings lost, if any (sampled events must never
    /// be lost silently).
    pub fn loss_note(&self) -> Option<String> {
        if self.complete() {
            return None;
        }
        Some(format!(
            "host events lost: sampled {} of {} sw callbacks{} counted; per-callback figures are lower bounds",
            self.sw_sampled,
            self.sw_counted,
            self.hv_counted
                .map_or(String::new(), |n| format!(" and {} of {n} hv expiries", self.hv_ns.len()))
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
mod tests {
    use super::*;

    fn entry(t_ns: u64, cpu: u32, now_ns: i64) -> TimerEvent {
        TimerEvent::Entry { t_ns, cpu, now_ns }
    }

    fn exit(t_ns: u64, cpu: u32) -> TimerEvent {
        TimerEvent::Exit { t_ns, cpu }
    }

    fn start(t_ns: u64, expires_ns: i64) -> TimerEvent {
        TimerEvent::Start { t_ns, expires_ns }
    }

    #[test]
    fn a_periodic_timer_is_one_callback_per_run() {
        let mut ev = Vec::new();
        for k in 0..5u64 {
            let t = 1_000_000 * (k + 1);
            ev.push(entry(t, 0, t as i64 + 10));
            ev.push(exit(t + 500, 0));
            ev.push(start(t + 600, t as i64 + 1_000_000));
        }
        let runs = group_runs(&mut ev);
        assert_eq!(runs.len(), 5);
        assert!(runs
            .iter()
            .all(|r| r.callbacks() == 1 && r.duration_ns() == 500));
        // The first had no start seen: lateness 0; the others 10 ns.
        assert_eq!(runs[0].late_ns(), 0);
        assert_eq!(runs[1].late_ns(), 10);
    }

    #[test]
    fn a_storm_after_a_stall_is_one_run_with_the_pause_as_lateness() {
        // Armed for t=1 ms, stalled 10 s: 10 000 callbacks with one `now`.
        let period = 1_000_000i64;
        let now = 10_001_000_000i64;
        let mut ev = vec![start(0, period)];
        let mut t = 10_001_000_100u64;
        for k in 0..10_000i64 {
            ev.push(entry(t, 1, now));
            ev.push(exit(t + 8, 1));
            ev.push(start(t + 9, period * (k + 2)));
            t += 10;
        }
        // The next pass, one period later.
        ev.push(entry(t + 1_000_000, 1, now + period));
        let runs = group_runs(&mut ev);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].callbacks(), 10_000);
        assert_eq!(runs[0].duration_ns(), 10 * 9_999 + 8);
        assert_eq!(runs[0].late_ns(), (now - period) as u64);
        assert_eq!(runs[1].callbacks(), 1);
        let events = HostEvents {
            sw_runs: runs,
            hv_ns: vec![10_001_000_000],
            sw_counted: 10_001,
            sw_sampled: 10_001,
            hv_counted: Some(1),
        };
        assert!(events.complete());
        assert_eq!(
            events.callbacks_between(10_000_000_000, 11_000_000_000),
            10_002
        );
        let longest = events.longest_run(0, u64::MAX).unwrap();
        assert_eq!(longest.callbacks(), 10_000);
        let cost = cost_per_callback_ns(&longest, 100).unwrap();
        assert!((cost - 10.0).abs() < 0.01, "{cost}");
    }

    #[test]
    fn a_lost_start_leaves_the_lateness_unknown_not_stale() {
        // Armed for 1 ms, run at 1 ms + 10 ns; the restart for 2 ms lost.
        let mut ev = vec![
            start(0, 1_000_000),
            entry(1_000_010, 0, 1_000_010),
            exit(1_000_020, 0),
            entry(2_000_010, 0, 2_000_010),
        ];
        let runs = group_runs(&mut ev);
        assert_eq!(
            runs.iter().map(IrqRun::late_ns).collect::<Vec<_>>(),
            [10, 0]
        );
    }

    #[test]
    fn times_are_made_relative_to_the_epoch() {
        assert_eq!(entry(5, 0, 1).since(3).t_ns(), 2);
        assert_eq!(exit(1, 0).since(3).t_ns(), 0);
        assert_eq!(start(7, 9).since(7), start(0, 9));
    }

    #[test]
    fn same_now_on_two_cpus_is_two_runs() {
        let mut ev = vec![entry(10, 0, 5), entry(11, 1, 5), entry(12, 0, 5)];
        let runs = group_runs(&mut ev);
        assert_eq!(
            runs.iter().map(IrqRun::callbacks).collect::<Vec<_>>(),
            [1, 1, 1]
        );
    }

    #[test]
    fn losses_are_named_and_bad_input_rejected() {
        let e = HostEvents {
            sw_runs: vec![IrqRun(5, 2, 0, 0), IrqRun(3, 1, 0, 0)],
            hv_ns: vec![],
            sw_counted: 10,
            sw_sampled: 3,
            hv_counted: None,
        };
        assert!(e.loss_note().unwrap().contains("sampled 3 of 10"));
        assert!(e.validate().unwrap_err().contains("not sorted"));
        let zero = HostEvents {
            sw_runs: vec![IrqRun(1, 0, 0, 0)],
            ..HostEvents::default()
        };
        assert!(zero.validate().is_err());
        assert!(HostEvents::default().validate().is_ok());
        assert_eq!(cost_per_callback_ns(&IrqRun(0, 3, 30, 0), 100), None);
    }
}
