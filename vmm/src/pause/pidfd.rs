//! pidfds: a handle on one process that never reaches another process that
//! got its pid. The supervisor and the guard signal the VMM only through
//! one (Linux 5.3 or later).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use thiserror::Error;

/// A pidfd could not be opened.
#[derive(Debug, Error)]
pub enum PidfdError {
    /// `pidfd_open` failed.
    #[error("pidfd_open({pid}): {source} (sigstop and freeze need Linux 5.3 or later)")]
    Open {
        /// The process.
        pid: i32,
        /// The errno.
        source: std::io::Error,
    },
}

/// A pidfd: a handle on one process that never refers to another process
/// that reuses its pid.
#[derive(Debug)]
pub(crate) struct Pidfd(pub(crate) OwnedFd);

impl Pidfd {
    /// `pidfd_open(pid)`. Only sound against pid reuse while `pid` cannot
    /// have been reaped yet (our own unwaited child); the fd is close-on-exec.
    pub(crate) fn open(pid: i32) -> Result<Pidfd, PidfdError> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1;
        // no memory is passed.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(PidfdError::Open {
                pid,
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: the fd was just returned by pidfd_open and is owned here only.
        Ok(Pidfd(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
    }

    /// `pidfd_send_signal`: `ESRCH` once the process has exited.
    pub(crate) fn send(&self, sig: i32) -> std::io::Result<()> {
        send_raw(self.0.as_raw_fd(), sig)
    }
}

/// `pidfd_send_signal(fd, sig)` on a raw descriptor (`sig` 0 only checks).
pub(crate) fn send_raw(fd: RawFd, sig: i32) -> std::io::Result<()> {
    // SAFETY: pidfd_send_signal with a null siginfo and no flags reads no
    // memory; an fd that is not a pidfd makes it fail with EBADF.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd,
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The pid a pidfd refers to, from `/proc/self/fdinfo` (`None` once the
/// process has exited: the kernel shows -1).
pub(crate) fn pidfd_pid(fd: RawFd) -> Option<i32> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("Pid:"))?
        .trim()
        .parse()
        .ok()
        .filter(|&p: &i32| p > 0)
}
