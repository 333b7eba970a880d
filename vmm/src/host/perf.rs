//! Low-level perf helpers shared by the host probes: opening a tracepoint
//! counter or sampler with a filter, and reading little-endian fields out of
//! a sample.

use perf_event::events::{Event, Tracepoint};
use perf_event::{Builder, Clock, Counter, SampleFlag};
use std::io;
use std::os::fd::AsRawFd;
use thiserror::Error;

/// Set to 1 to make every perf open fail with EACCES (tests of the
/// unprivileged path; read only in builds with the `fault-injection`
/// feature).
#[cfg(feature = "fault-injection")]
pub const SIMULATE_NO_PERF_ENV: &str = "TICKBURST_SIMULATE_NO_PERF";

/// perf record type of a sample.
pub const RECORD_SAMPLE: u32 = 9;
/// perf record type of a loss report (`u64 id, u64 lost`).
pub const RECORD_LOST: u32 = 2;

fn simulate_no_perf() -> bool {
    #[cfg(feature = "fault-injection")]
    if std::env::var(SIMULATE_NO_PERF_ENV).is_ok_and(|v| v == "1") {
        return true;
    }
    false
}

/// Why a perf event could not be opened, filtered, started or read; each
/// keeps the kernel's errno.
#[derive(Debug, Error)]
pub enum PerfError {
    /// `perf_event_open` refused for want of privilege (EACCES, EPERM).
    #[error("perf_event_open denied ({source}); needs root or CAP_PERFMON (kernel.perf_event_paranoid={paranoid})")]
    Denied {
        /// The kernel's error.
        source: io::Error,
        /// `kernel.perf_event_paranoid`, as read (empty if unreadable).
        paranoid: String,
    },
    /// `perf_event_open` failed otherwise.
    #[error("perf_event_open: {0}")]
    Open(#[source] io::Error),
    /// A filter with a NUL byte in it.
    #[error("filter has NUL")]
    FilterNul,
    /// The kernel rejected a filter.
    #[error("setting filter '{filter}': {source}")]
    Filter {
        /// The filter as given.
        filter: String,
        /// The kernel's error.
        source: io::Error,
    },
    /// Enabling an event failed.
    #[error("enabling tracepoint: {0}")]
    Enable(#[source] io::Error),
    /// Mapping an event's ring failed.
    #[error("perf ring: {0}")]
    Ring(#[source] io::Error),
    /// Sending an event's samples into another's ring failed.
    #[error("redirecting a perf event's samples: {0}")]
    Output(#[source] io::Error),
}

impl PerfError {
    /// Whether the open was refused for want of privilege.
    pub fn is_denied(&self) -> bool {
        matches!(self, PerfError::Denied { .. })
    }
}

/// Sets the filter of a tracepoint event (`PERF_EVENT_IOC_SET_FILTER`).
pub fn set_filter(fd: &impl AsRawFd, filter: &str) -> Result<(), PerfError> {
    let text = std::ffi::CString::new(filter).map_err(|_| PerfError::FilterNul)?;
    // SAFETY: PERF_EVENT_IOC_SET_FILTER reads a NUL-terminated string from a
    // live perf event fd; the kernel copies it.
    let rc =
        unsafe { perf_event_open_sys::ioctls::SET_FILTER(fd.as_raw_fd(), text.as_ptr() as *mut _) };
    if rc != 0 {
        return Err(PerfError::Filter {
            filter: filter.into(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// The error of a failed perf open: [`PerfError::Denied`] (naming the
/// privilege it needs) for EACCES and EPERM.
pub fn open_error(e: io::Error) -> PerfError {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => {
            let paranoid =
                std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid").unwrap_or_default();
            PerfError::Denied {
                source: e,
                paranoid: paranoid.trim().into(),
            }
        }
        _ => PerfError::Open(e),
    }
}

/// Opens a tracepoint counter (or sampler base) with an optional filter.
pub fn open_tracepoint(
    id: u64,
    pid: Option<libc::pid_t>,
    cpu: Option<usize>,
    filter: Option<&str>,
    sample: Option<Sampling>,
) -> Result<Counter, PerfError> {
    let mut counter = open_disabled(id, pid, cpu, sample)?;
    if let Some(f) = filter {
        set_filter(&counter, f)?;
    }
    counter.enable().map_err(PerfError::Enable)?;
    Ok(counter)
}

/// Opens a tracepoint counter (or sampler base), disabled and unfiltered:
/// the caller sets a filter ([`set_filter`]) and enables it.
pub fn open_disabled(
    id: u64,
    pid: Option<libc::pid_t>,
    cpu: Option<usize>,
    sample: Option<Sampling>,
) -> Result<Counter, PerfError> {
    open_event(Tracepoint::with_id(id), pid, cpu, sample)
}

/// Opens any perf event in the kernel (a tracepoint, a kprobe), disabled,
/// on thread `pid` (else every thread) and CPU `cpu` (else every CPU).
pub fn open_event(
    event: impl Event,
    pid: Option<libc::pid_t>,
    cpu: Option<usize>,
    sample: Option<Sampling>,
) -> Result<Counter, PerfError> {
    if simulate_no_perf() {
        return Err(open_error(io::Error::from_raw_os_error(libc::EACCES)));
    }
    let mut b = Builder::new(event);
    match pid {
        Some(p) => b.observe_pid(p),
        None => b.any_pid(),
    };
    match cpu {
        Some(c) => b.one_cpu(c),
        None => b.any_cpu(),
    };
    b.include_kernel();
    if let Some(Sampling { flags, wake }) = sample {
        b.sample(flags).sample_period(1).clockid(Clock::MONOTONIC);
        if wake == Wake::EachSample {
            b.wakeup_events(1);
        }
    }
    b.build().map_err(open_error)
}

/// Whether a reader is woken at each sample of a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// `poll(2)` on the ring returns at each sample: for a reader that waits
    /// for the first one (the probe phase's learner). The kernel queues an
    /// irq_work (a self-IPI on x86) at each sample to do it.
    EachSample,
    /// No wake-up before the ring is half full: for a reader that drains on
    /// its own clock (`top`, the callback rings), so a sample costs no
    /// irq_work.
    HalfFull,
}

/// What each sample of an event holds, sampled at every event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampling {
    /// The fields of each sample.
    pub flags: SampleFlag,
    /// When a reader polling the ring is woken.
    pub wake: Wake,
}

impl Sampling {
    /// Samples drained on the reader's own clock ([`Wake::HalfFull`]).
    pub fn drained(flags: SampleFlag) -> Sampling {
        Sampling {
            flags,
            wake: Wake::HalfFull,
        }
    }

    /// Samples a reader waits for with `poll(2)` ([`Wake::EachSample`]).
    pub fn polled(flags: SampleFlag) -> Sampling {
        Sampling {
            flags,
            wake: Wake::EachSample,
        }
    }
}

/// Pays perf's one-off cost of per-task events on its own thread.
///
/// The first per-task perf event on the host (one that observes a thread,
/// as the probes on our vCPU thread do) switches perf's context-switch hooks
/// on (`account_event` -> `perf_sched_events`) and waits for an RCU grace
/// period: 5-20 ms measured on this nested host, against 0.1-0.3 ms for
/// every later open; the hooks go off again about a second after the last
/// such event closes. Started when a run begins, a software dummy event on
/// this thread takes that wait while the VM is being built; held until the
/// real per-thread probes are open, so they find the hooks on.
pub struct TaskEventsWarmUp(Option<std::thread::JoinHandle<Option<Counter>>>);

impl TaskEventsWarmUp {
    /// Opens the dummy per-task event on a new thread (failures are
    /// ignored: the real probes then pay the cost or report their error).
    pub fn start() -> Self {
        let thread = std::thread::Builder::new()
            .name("perf-warm-up".into())
            .spawn(|| {
                Builder::new(perf_event::events::Software::DUMMY)
                    .observe_self()
                    .any_cpu()
                    .build()
                    .ok()
            })
            .ok();
        TaskEventsWarmUp(thread)
    }

    /// Waits for the dummy event (if the open is still waiting) and closes
    /// it; call once the real per-thread events are open.
    pub fn finish(mut self) {
        if let Some(t) = self.0.take() {
            drop(t.join());
        }
    }
}

impl Drop for TaskEventsWarmUp {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            drop(t.join());
        }
    }
}

/// Sends the samples of `fd` into the ring of `target` (same CPU, same
/// clock): one ring per CPU for several tracepoints, in time order.
pub fn set_output(fd: &impl AsRawFd, target: &impl AsRawFd) -> Result<(), PerfError> {
    // SAFETY: PERF_EVENT_IOC_SET_OUTPUT takes the target event's fd as its
    // argument; both are live perf event fds owned by the caller.
    let rc =
        unsafe { perf_event_open_sys::ioctls::SET_OUTPUT(fd.as_raw_fd(), target.as_raw_fd() as _) };
    if rc != 0 {
        return Err(PerfError::Output(io::Error::last_os_error()));
    }
    Ok(())
}

/// Where the raw payload starts in a sample with `PERF_SAMPLE_RAW` only
/// (after the u32 size).
pub const RAW_ONLY_PAYLOAD: usize = 4;
/// Where the raw payload starts with `PERF_SAMPLE_TIME | PERF_SAMPLE_RAW`
/// (u64 time, u32 size).
pub const TIME_RAW_PAYLOAD: usize = 12;

/// `common_flags` bits of a trace event (`enum trace_flag_type` in
/// `include/linux/trace_events.h`): raised in a hard interrupt.
pub const TRACE_FLAG_HARDIRQ: u8 = 0x08;
/// `common_flags`: raised in a softirq.
pub const TRACE_FLAG_SOFTIRQ: u8 = 0x10;
/// `common_flags`: raised in an NMI.
pub const TRACE_FLAG_NMI: u8 = 0x40;

/// Whether a trace event with these `common_flags` was raised in task
/// context. A per-thread perf event also sees what interrupts do while the
/// thread is current: a hard interrupt that re-arms another VM's periodic
/// hrtimer (`hrtimer_start` from `__run_hrtimer`) lands on whatever thread
/// the CPU was running, so only task-context events belong to the thread.
pub fn in_task_context(common_flags: u8) -> bool {
    common_flags & (TRACE_FLAG_HARDIRQ | TRACE_FLAG_SOFTIRQ | TRACE_FLAG_NMI) == 0
}

/// The little-endian u64 at `at`, if the bytes hold it.
pub fn le_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

/// The little-endian u32 at `at`, if the bytes hold it.
pub fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_task_context_events_belong_to_the_thread() {
        assert!(in_task_context(0));
        assert!(in_task_context(0x01 | 0x04)); // irqs off, need resched
        assert!(!in_task_context(TRACE_FLAG_HARDIRQ | 0x01));
        assert!(!in_task_context(TRACE_FLAG_SOFTIRQ));
        assert!(!in_task_context(TRACE_FLAG_NMI));
    }

    #[test]
    fn fields_out_of_range_are_none() {
        let b = [1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0];
        assert_eq!(le_u64(&b, 0), Some(1));
        assert_eq!(le_u64(&b, 5), None);
        assert_eq!(le_u32(&b, 8), Some(2));
        assert_eq!(le_u64(&b, usize::MAX), None);
        assert_eq!(le_u32(&b, usize::MAX - 1), None);
    }
}
