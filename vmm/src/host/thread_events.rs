//! A tracepoint sampled on one thread (our vCPU's): one event per CPU
//! filtered on the thread's pid, or, where our pids are not the kernel's,
//! one per-task event.
//!
//! Why per CPU: the first per-task perf event on a host (one that observes a
//! thread) switches perf's context-switch hooks on and waits for an RCU
//! grace period (`account_event` -> `perf_sched_events`, 5-20 ms measured
//! here), and the hooks go off again a second after the last one closes, so
//! nearly every run paid it. An event per CPU (pid -1) never takes that
//! path; its filter `common_pid == <tid>` keeps what the per-task event
//! kept: events raised while our thread is current, on whichever CPU it
//! runs. `common_pid` is the pid in the init pid namespace, so inside
//! another pid namespace the per-task events stay
//! ([`TaskEventsWarmUp`](crate::host::perf::TaskEventsWarmUp) takes their
//! wait while the VM is built).

use crate::host::perf::{self, open_disabled, set_filter, PerfError, Sampling};
use perf_event::{Counter, SampleFlag, Sampler};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Set to 1 to open the per-task events as outside the init pid namespace
/// (tests of that path; read only in builds with the `fault-injection`
/// feature).
#[cfg(feature = "fault-injection")]
pub const SIMULATE_PID_NS_ENV: &str = "TICKBURST_SIMULATE_PID_NS";
/// The init pid namespace's inode (`PROC_PID_INIT_INO`).
const INIT_PID_NS: &str = "pid:[4026531836]";

/// How the events of one thread are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnThread {
    /// One event on each of `cpus` CPUs, filtered on `common_pid == tid`.
    EachCpu {
        /// The thread (its pid in the init pid namespace).
        tid: libc::pid_t,
        /// The CPUs to open on.
        cpus: usize,
    },
    /// One per-task event on the thread (outside the init pid namespace).
    Task {
        /// The thread, as this process sees it.
        tid: libc::pid_t,
    },
}

impl OnThread {
    /// The attachment for thread `tid` of this process: per CPU where our
    /// pids are the kernel's ([`pids_are_the_kernels`]).
    pub fn for_thread(tid: libc::pid_t, cpus: usize) -> OnThread {
        if pids_are_the_kernels() {
            OnThread::EachCpu { tid, cpus }
        } else {
            OnThread::Task { tid }
        }
    }

    /// The filter of each event: `rest` (field tests joined by `&&`, or
    /// none), scoped to the thread where the event is not per-task. No
    /// parentheses: the kernel (6.18 here) rejects `.function` tests inside
    /// them with EINVAL.
    pub fn filter(&self, rest: Option<&str>) -> Option<String> {
        match (self, rest) {
            (OnThread::EachCpu { tid, .. }, None) => Some(format!("common_pid == {tid}")),
            (OnThread::EachCpu { tid, .. }, Some(r)) => Some(format!("common_pid == {tid} && {r}")),
            (OnThread::Task { .. }, r) => r.map(str::to_string),
        }
    }
}

/// Whether this process's pids are the kernel's (it runs in the init pid
/// namespace), so a `common_pid` filter names our threads. Not where the
/// namespace cannot be read, nor under `TICKBURST_SIMULATE_PID_NS=1`.
pub fn pids_are_the_kernels() -> bool {
    if simulated_pid_ns() {
        return false;
    }
    std::fs::read_link("/proc/self/ns/pid").is_ok_and(|ns| ns.as_os_str() == INIT_PID_NS)
}

/// Whether `TICKBURST_SIMULATE_PID_NS` is `1` (never without the
/// `fault-injection` feature).
fn simulated_pid_ns() -> bool {
    #[cfg(feature = "fault-injection")]
    if std::env::var(SIMULATE_PID_NS_ENV).is_ok_and(|v| v == "1") {
        return true;
    }
    false
}

/// The events of one tracepoint on one thread, opened disabled: a filter
/// form can be tried on the first ([`Unarmed::try_filter`]) before all are
/// filtered and started ([`Unarmed::arm`]).
pub struct Unarmed {
    on: OnThread,
    counters: Vec<Counter>,
    /// Whether the first event's filter is set already.
    first_set: bool,
}

impl Unarmed {
    /// Opens tracepoint `id`'s events for `on`, disabled and unfiltered,
    /// sampling `flags` every event.
    pub fn open(id: u64, on: OnThread, flags: SampleFlag) -> Result<Unarmed, PerfError> {
        let counters = match on {
            OnThread::EachCpu { cpus, .. } => (0..cpus.max(1))
                .map(|cpu| open_disabled(id, None, Some(cpu), Some(Sampling::polled(flags))))
                .collect::<Result<Vec<_>, _>>()?,
            OnThread::Task { tid } => {
                vec![open_disabled(
                    id,
                    Some(tid),
                    None,
                    Some(Sampling::polled(flags)),
                )?]
            }
        };
        Ok(Unarmed {
            on,
            counters,
            first_set: false,
        })
    }

    /// Sets the filter `rest` (scoped to the thread) on the first event: an
    /// error leaves it unfiltered, so another form can be tried; once one
    /// is set, [`Unarmed::arm`] must get the same.
    pub fn try_filter(&mut self, rest: &str) -> Result<(), PerfError> {
        let filter = self.on.filter(Some(rest)).unwrap_or_default();
        set_filter(&self.counters[0], &filter)?;
        self.first_set = true;
        Ok(())
    }

    /// Filters every event on `rest` (scoped to the thread), starts them
    /// and maps a ring of `bytes` (data pages) each.
    pub fn arm(self, rest: Option<&str>, bytes: usize) -> Result<ThreadEvents, PerfError> {
        let skip = usize::from(self.first_set);
        if let Some(filter) = self.on.filter(rest) {
            for c in &self.counters[skip..] {
                set_filter(c, &filter)?;
            }
        }
        let mut rings = Vec::with_capacity(self.counters.len());
        for mut c in self.counters {
            c.enable().map_err(PerfError::Enable)?;
            rings.push(c.sampled(bytes).map_err(PerfError::Ring)?);
        }
        Ok(ThreadEvents { rings })
    }
}

/// Started events of one tracepoint on one thread, each with its ring.
pub struct ThreadEvents {
    rings: Vec<Sampler>,
}

impl ThreadEvents {
    /// Opens, filters on `rest` and starts tracepoint `id`'s events for `on`.
    pub fn open(
        id: u64,
        on: OnThread,
        rest: Option<&str>,
        flags: SampleFlag,
        bytes: usize,
    ) -> Result<ThreadEvents, PerfError> {
        Unarmed::open(id, on, flags)?.arm(rest, bytes)
    }

    /// Hands the bytes of every sample read so far to `each`, ring by ring
    /// (each ring in time order; a caller that needs one order sorts).
    pub fn samples(&mut self, mut each: impl FnMut(&[u8])) {
        for ring in &mut self.rings {
            while let Some(rec) = ring.next_record() {
                if rec.ty() == perf::RECORD_SAMPLE {
                    each(&rec.to_contiguous());
                }
            }
        }
    }

    /// The events counted so far, all CPUs (none if a count failed).
    pub fn count(&mut self) -> Option<u64> {
        self.rings
            .iter_mut()
            .map(|r| r.as_counter_mut().read().ok())
            .sum()
    }

    /// Stops counting (the events stay open: closing the last perf user of
    /// a tracepoint waits for an RCU grace period).
    pub fn disable(&mut self) {
        for r in &mut self.rings {
            let _ = r.as_counter_mut().disable();
        }
    }

    /// Waits until a ring has data or `timeout` passed; false on timeout.
    pub fn wait(&self, timeout: Duration) -> bool {
        let mut fds: Vec<libc::pollfd> = self
            .rings
            .iter()
            .map(|r| libc::pollfd {
                fd: r.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = timeout.as_millis().clamp(0, i32::MAX as u128) as i32;
        // SAFETY: `fds` is a live, writable array of `fds.len()` pollfd
        // entries for the duration of the call; poll only writes `revents`.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        rc > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_filters_name_the_thread_and_per_task_ones_do_not() {
        let each = OnThread::EachCpu { tid: 42, cpus: 2 };
        assert_eq!(each.filter(None).as_deref(), Some("common_pid == 42"));
        assert_eq!(
            each.filter(Some("exit_reason == 52")).as_deref(),
            Some("common_pid == 42 && exit_reason == 52")
        );
        let task = OnThread::Task { tid: 42 };
        assert_eq!(task.filter(None), None);
        assert_eq!(
            task.filter(Some("exit_reason == 52")).as_deref(),
            Some("exit_reason == 52")
        );
    }

    #[test]
    fn this_process_is_in_the_init_pid_namespace_or_says_not() {
        // Either answer is real; what must hold is that the per-task form
        // is chosen exactly when the namespace is not the init one.
        let ns = std::fs::read_link("/proc/self/ns/pid").ok();
        let init = ns.is_some_and(|n| n.as_os_str() == INIT_PID_NS);
        let simulated = simulated_pid_ns();
        assert_eq!(pids_are_the_kernels(), init && !simulated);
        match OnThread::for_thread(7, 3) {
            OnThread::EachCpu { tid, cpus } => assert_eq!((tid, cpus, init), (7, 3, true)),
            OnThread::Task { tid } => assert_eq!((tid, init && !simulated), (7, false)),
        }
    }
}
