//! The VMM dies with its supervisor: it is started with a parent-death
//! signal of `SIGKILL` (`PR_SET_PDEATHSIG`), so a supervisor killed in any
//! way, even by SIGKILL outside a pause, takes its VMM with it and no
//! orphaned VM runs on (or writes a record) after the caller has seen the
//! supervisor exit.
//!
//! The signal is set twice, each time followed by a check that the
//! supervisor has not died already (it would then never be sent): in the
//! forked child before `exec` (the parent's pid must still be the
//! supervisor's), and in the VMM after `exec`, which clears it for set-user-ID
//! and file-capability binaries (the supervisor's end of the reply pipe must
//! still be open).

use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use thiserror::Error;

/// The parent-death signal could not be set.
#[derive(Debug, Error)]
#[error("prctl(PR_SET_PDEATHSIG): {0}")]
pub struct ParentDeathError(#[source] pub std::io::Error);

/// The signal the VMM gets when its supervisor dies.
pub const PARENT_DEATH_SIGNAL: i32 = libc::SIGKILL;

/// `prctl(PR_SET_PDEATHSIG, PARENT_DEATH_SIGNAL)` for the calling thread's
/// process. Async-signal-safe.
fn set_parent_death_signal() -> std::io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number by value and touches
    // no memory of ours; it is async-signal-safe (one system call).
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, PARENT_DEATH_SIGNAL as libc::c_ulong) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the child `cmd` starts die with this process (the parent-death
/// signal follows the thread that forks: call `spawn` on a thread that lives
/// as long as the process, such as the main thread). If this process has
/// died by the time the signal is set, the child fails before `exec`.
pub(crate) fn die_with_parent(cmd: &mut Command) {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (prctl, getppid); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            set_parent_death_signal()?;
            // SAFETY: getppid has no preconditions.
            if libc::getppid() != parent {
                // The supervisor died before the signal was set.
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// In the VMM after `exec`: sets the parent-death signal again and checks
/// that the supervisor is still there (its end of the pipe `from_parent`
/// reads from is open). If it is gone, the VMM kills itself as the signal
/// would have. Errors keep the errno.
pub(crate) fn arm_after_exec(from_parent: RawFd) -> Result<(), ParentDeathError> {
    set_parent_death_signal().map_err(ParentDeathError)?;
    if crate::pause::poll::is_ready(from_parent) {
        // Readable before any request was sent: the supervisor's end is
        // closed (a reply never comes unasked).
        // SAFETY: raising a signal in this process has no preconditions.
        unsafe { libc::raise(PARENT_DEATH_SIGNAL) };
    }
    Ok(())
}
