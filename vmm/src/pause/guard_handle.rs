//! The supervisor's side of the [`crate::pause::guard`]: starting it, telling
//! it the cgroups, watching it (its pidfd is readable once it has died, so
//! the supervisor starts a new one at once) and releasing it at the end.

use crate::pause::fds::inherit;
use crate::pause::guard::{CGROUP_LINE, DONE_LINE, GUARD_ARG, GUARD_PIDFD_ENV};
use crate::pause::pidfd::{Pidfd, PidfdError};
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use thiserror::Error;

/// Why a guard could not be started.
#[derive(Debug, Error)]
pub enum GuardError {
    /// The guard process could not be started.
    #[error("starting the guard: {0}")]
    Spawn(#[source] std::io::Error),
    /// Its pidfd could not be opened.
    #[error("watching the guard: {0}")]
    Pidfd(#[from] PidfdError),
    /// It could not be told a cgroup.
    #[error("telling the guard: {0}")]
    Tell(#[source] std::io::Error),
}

/// A running guard, seen from the supervisor.
#[derive(Debug)]
pub(crate) struct GuardHandle {
    child: Child,
    stdin: ChildStdin,
    /// Readable once the guard has died.
    pidfd: Pidfd,
}

impl GuardHandle {
    /// Starts `exe __guard VMM_PID` in a session of its own, with the VMM's
    /// pidfd, and tells it `cgroups`.
    pub(crate) fn start(
        exe: &Path,
        vmm_pid: i32,
        vmm: &Pidfd,
        cgroups: &[PathBuf],
    ) -> Result<GuardHandle, GuardError> {
        let mut cmd = Command::new(exe);
        cmd.args([GUARD_ARG, &vmm_pid.to_string()])
            .env(GUARD_PIDFD_ENV, vmm.0.as_raw_fd().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        inherit(&mut cmd, vec![vmm.0.as_raw_fd()]);
        // SAFETY: the closure runs in the forked child before exec and only
        // calls setsid, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(GuardError::Spawn)?;
        // Our unreaped child: its pid cannot have been reused yet.
        let pidfd = match Pidfd::open(child.id() as i32) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e.into());
            }
        };
        let Some(stdin) = child.stdin.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(GuardError::Spawn(std::io::Error::other("no stdin pipe")));
        };
        let mut guard = GuardHandle {
            child,
            stdin,
            pidfd,
        };
        for dir in cgroups {
            guard.tell_cgroup(dir)?;
        }
        Ok(guard)
    }

    /// Names a cgroup the VMM may be frozen in (before it is created).
    pub(crate) fn tell_cgroup(&mut self, dir: &Path) -> Result<(), GuardError> {
        writeln!(self.stdin, "{CGROUP_LINE}{}", dir.display()).map_err(GuardError::Tell)
    }

    /// A descriptor that is readable once the guard has died.
    pub(crate) fn exited_fd(&self) -> RawFd {
        self.pidfd.0.as_raw_fd()
    }

    /// Reaps a guard that has died.
    pub(crate) fn reap(mut self) {
        let _ = self.child.wait();
    }

    /// Tells the guard all is resumed and reaped, and waits for it to leave.
    pub(crate) fn release(mut self) {
        let _ = writeln!(self.stdin, "{DONE_LINE}");
        drop(self.stdin);
        let _ = self.child.wait();
    }
}
