//! How a supervised run can end without an exit code of the VMM's own: the
//! supervisor could not start or watch it, or the VMM died from a signal.
//! Each is one line on stderr and a documented exit code (130 when
//! [`SupervisorError::is_interrupted`], else 2), never a bare 128+N.

use crate::pause::guard_handle::GuardError;
use crate::pause::pidfd::PidfdError;
use thiserror::Error;

/// Why a supervised run failed.
#[derive(Debug, Error)]
pub enum SupervisorError {
    /// `/proc/self/exe` could not be read.
    #[error("finding own executable: {0}")]
    OwnExe(#[source] std::io::Error),
    /// A signal handler could not be installed.
    #[error("installing a signal handler: {0}")]
    Signals(#[source] std::io::Error),
    /// The request or reply pipe could not be made.
    #[error("pipe: {0}")]
    Pipe(#[source] std::io::Error),
    /// The VMM child could not be started.
    #[error("starting the VMM: {0}")]
    SpawnVmm(#[source] std::io::Error),
    /// The VMM's pidfd could not be opened.
    #[error(transparent)]
    Pidfd(#[from] PidfdError),
    /// The guard could not be started (or restarted after it died): the VMM
    /// was killed, as it could no longer be resumed if the supervisor died.
    #[error("{0}; the VMM was killed")]
    Guard(#[from] GuardError),
    /// Waiting for the VMM failed.
    #[error("waiting for the VMM: {0}")]
    Wait(#[source] std::io::Error),
    /// The VMM died from a signal (a record it wrote before stays; none is
    /// written after).
    #[error(
        "the VMM (pid {pid}) was killed by {} (signal {signal}){}",
        signal_name(*signal),
        if *during_pause { " during a pause" } else { "" }
    )]
    VmmKilled {
        /// The VMM's pid.
        pid: i32,
        /// The signal.
        signal: i32,
        /// Whether it died while the supervisor held it paused.
        during_pause: bool,
    },
    /// Ctrl-C or SIGTERM reached the VMM before it could handle it (while it
    /// was being set up).
    #[error("interrupted by {} while the VMM was being set up; no record written", signal_name(*signal))]
    Interrupted {
        /// The signal the VMM died from.
        signal: i32,
    },
}

impl SupervisorError {
    /// Whether the run was interrupted (exit 130) rather than failed (2).
    pub fn is_interrupted(&self) -> bool {
        matches!(self, SupervisorError::Interrupted { .. })
    }
}

/// `SIGKILL`, `SIGSEGV`, ...: the name of a signal (`SIG<n>` for others).
pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("SIG{signal}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_with_the_signal_named() {
        let e = SupervisorError::VmmKilled {
            pid: 42,
            signal: libc::SIGKILL,
            during_pause: true,
        };
        assert_eq!(
            e.to_string(),
            "the VMM (pid 42) was killed by SIGKILL (signal 9) during a pause"
        );
        assert!(!e.is_interrupted());
        let i = SupervisorError::Interrupted {
            signal: libc::SIGINT,
        };
        assert!(i.is_interrupted());
        assert!(!i.to_string().contains('\n'));
        assert_eq!(signal_name(64), "SIG64");
    }
}
