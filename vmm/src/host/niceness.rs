//! The collecting thread yields to the vCPU threads.
//!
//! While a run is live, the thread that drains the guest rings, reads the
//! probes and times the pauses must never keep a vCPU thread off its CPU:
//! on a host with fewer free CPUs than runnable threads (the emulated-Intel
//! rig has one), a vCPU held out of guest mode for longer than the timer's
//! period is itself a lag of the periodic hv timer, and on a kernel without
//! the CVE-2025-71104 fix that alone makes KVM fall back to the sw timer:
//! the measurement would cause what it measures. With the collector at
//! [`COLLECTOR_NICE`], CFS does not let its wake-ups preempt a running vCPU
//! thread (the wake-up granularity scales with the waking thread's weight:
//! ~9x the sleeper credit at nice 10), while a waking vCPU thread still
//! preempts the collector.

use thiserror::Error;

/// The collector's nice value while a run is live (vCPU threads keep the
/// process's, normally 0).
pub const COLLECTOR_NICE: i32 = 10;

/// Why the thread's priority could not be changed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NicenessError {
    /// `setpriority` failed.
    #[error("setpriority(PRIO_PROCESS, {tid}, {nice}): {errno}")]
    Set {
        /// The thread.
        tid: i32,
        /// The nice value asked for.
        nice: i32,
        /// What the kernel said.
        errno: String,
    },
}

/// The calling thread's nice value, lowered to at least
/// [`COLLECTOR_NICE`] while this lives; the previous one is put back on
/// drop where the process may (raising it needs `CAP_SYS_NICE`).
#[derive(Debug)]
pub struct Yielding {
    tid: i32,
    before: i32,
}

impl Yielding {
    /// Lowers the calling thread's priority. A thread already at
    /// [`COLLECTOR_NICE`] or lower is left as it is.
    pub fn start() -> Result<Yielding, NicenessError> {
        let tid = gettid();
        let before = nice_of(tid);
        if before < COLLECTOR_NICE {
            set_nice(tid, COLLECTOR_NICE)?;
        }
        Ok(Yielding { tid, before })
    }
}

impl Drop for Yielding {
    fn drop(&mut self) {
        // Best effort: without CAP_SYS_NICE the thread stays at the lower
        // priority, which only makes it yield more.
        let _ = set_nice(self.tid, self.before);
    }
}

fn gettid() -> i32 {
    // SAFETY: gettid has no arguments, no side effects and cannot fail.
    unsafe { libc::gettid() }
}

/// The nice value of thread `tid` (0 if it cannot be read).
pub fn nice_of(tid: i32) -> i32 {
    // getpriority returns -1 both as a value and on error: errno tells.
    // SAFETY: errno location is the calling thread's; writing 0 to it is
    // how the man page says to detect a getpriority error.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: getpriority only reads the scheduler's state of `tid`.
    let n = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) };
    // SAFETY: as above, reading the calling thread's errno.
    let errno = unsafe { *libc::__errno_location() };
    if n == -1 && errno != 0 {
        0
    } else {
        n
    }
}

fn set_nice(tid: i32, nice: i32) -> Result<(), NicenessError> {
    // SAFETY: setpriority only changes the scheduling priority of `tid`, a
    // thread of this process.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(NicenessError::Set {
            tid,
            nice,
            errno: std::io::Error::last_os_error().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a thread of its own (nice is per thread on Linux): lowered while
    /// the guard lives, back afterwards where allowed, and other threads
    /// keep theirs.
    #[test]
    fn lowers_the_calling_thread_only() {
        let main_tid = gettid();
        let main_before = nice_of(main_tid);
        std::thread::spawn(move || {
            let tid = gettid();
            let before = nice_of(tid);
            {
                let _y = Yielding::start().unwrap();
                assert_eq!(nice_of(tid), before.max(COLLECTOR_NICE));
                assert_eq!(nice_of(main_tid), main_before);
            }
            let after = nice_of(tid);
            // Root (CAP_SYS_NICE) gets its priority back; others stay lower.
            assert!(after == before || after == before.max(COLLECTOR_NICE));
        })
        .join()
        .unwrap();
    }
}
