//! Descriptors passed to a child process in an environment variable, and
//! claiming them there once: read, checked to be open and of the right kind
//! (pipe ends of the right direction, a pidfd of the right process), marked
//! close-on-exec, and the variable removed, so no grandchild can inherit or
//! claim them again.

use crate::pause::pidfd::{pidfd_pid, send_raw};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use thiserror::Error;

/// Why inherited descriptors cannot be claimed.
#[derive(Debug, Error)]
pub enum FdError {
    /// The variable is not set (or was claimed already).
    #[error("{0} is not set")]
    Unset(String),
    /// The variable does not name usable descriptors of the expected kind.
    #[error("{var}={value}: {why}")]
    BadFd {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
        /// What is wrong.
        why: String,
    },
}

/// What an inherited descriptor must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FdKind {
    /// The read end of a pipe.
    PipeRead,
    /// The write end of a pipe.
    PipeWrite,
    /// A pidfd of process `pid` (or of a process that has exited).
    Pidfd {
        /// The process it must refer to.
        pid: i32,
    },
}

fn check_fd(fd: RawFd, kind: FdKind) -> Result<(), String> {
    if fd <= 2 {
        return Err(format!("{fd} is a standard stream"));
    }
    // SAFETY: F_GETFD only queries the descriptor flags.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(format!("{fd} is not open"));
    }
    match kind {
        FdKind::PipeRead | FdKind::PipeWrite => {
            // SAFETY: an all-zero stat is a valid value for fstat to overwrite.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: fstat writes into the stat we pass; fd is open.
            if unsafe { libc::fstat(fd, &mut st) } != 0
                || st.st_mode & libc::S_IFMT != libc::S_IFIFO
            {
                return Err(format!("{fd} is not a pipe"));
            }
            // SAFETY: F_GETFL only queries the status flags.
            let mode = unsafe { libc::fcntl(fd, libc::F_GETFL) } & libc::O_ACCMODE;
            let want = if kind == FdKind::PipeRead {
                libc::O_RDONLY
            } else {
                libc::O_WRONLY
            };
            if mode != want {
                return Err(format!("{fd} is the wrong end of its pipe"));
            }
        }
        FdKind::Pidfd { pid } => match send_raw(fd, 0) {
            Ok(()) => match pidfd_pid(fd) {
                Some(p) if p == pid => {}
                Some(p) => return Err(format!("{fd} is the pidfd of {p}, not of {pid}")),
                // Exited between the two checks: the pidfd is still its own.
                None => {}
            },
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => return Err(format!("{fd} is not a pidfd ({e})")),
        },
    }
    Ok(())
}

/// Claims the descriptors named in `var` (comma-separated, one per kind):
/// removes `var` from the environment whatever the outcome, checks each
/// descriptor is open and of its kind, marks it close-on-exec and takes
/// ownership. Call it before other threads start (it changes the
/// environment).
pub(crate) fn claim_fds(var: &str, kinds: &[FdKind]) -> Result<Vec<OwnedFd>, FdError> {
    let value = std::env::var(var).map_err(|_| FdError::Unset(var.into()))?;
    std::env::remove_var(var);
    let bad = |why: String| FdError::BadFd {
        var: var.into(),
        value: value.clone(),
        why,
    };
    let fds: Vec<RawFd> = value
        .split(',')
        .map(|f| f.trim().parse::<RawFd>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad("not a list of descriptor numbers".into()))?;
    if fds.len() != kinds.len() {
        return Err(bad(format!("{} descriptors expected", kinds.len())));
    }
    for (i, &fd) in fds.iter().enumerate() {
        if fds[..i].contains(&fd) {
            return Err(bad(format!("{fd} named twice")));
        }
    }
    for (&fd, &kind) in fds.iter().zip(kinds) {
        check_fd(fd, kind).map_err(bad)?;
    }
    Ok(fds
        .into_iter()
        .map(|fd| {
            // SAFETY: fd is open (checked above); it was passed down to this
            // process for this use, and removing the variable makes this the
            // only claim on it.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: F_SETFD on a descriptor we own.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            owned
        })
        .collect())
}

/// Runs `cmd` with `fds` inherited (their close-on-exec flag cleared in the
/// child only).
pub(crate) fn inherit(cmd: &mut Command, fds: Vec<RawFd>) {
    // SAFETY: the closure only calls fcntl, which is async-signal-safe, on
    // descriptors that are open in the parent at fork time.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// A pipe, both ends close-on-exec: `(read, write)`.
pub(crate) fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here only.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pause::pidfd::Pidfd;
    use std::fs::File;
    use std::os::fd::AsRawFd;

    fn raw_pipe() -> (RawFd, RawFd) {
        use std::os::fd::IntoRawFd;
        let (r, w) = pipe().unwrap();
        (r.into_raw_fd(), w.into_raw_fd())
    }

    fn cloexec(fd: RawFd) -> bool {
        // SAFETY: F_GETFD only queries the descriptor flags.
        unsafe { libc::fcntl(fd, libc::F_GETFD) & libc::FD_CLOEXEC != 0 }
    }

    const PIPES: [FdKind; 2] = [FdKind::PipeRead, FdKind::PipeWrite];

    /// Inherited pipes are claimed once: checked, close-on-exec, and the
    /// variable gone, so a second claim (or a grandchild) finds nothing.
    #[test]
    fn pipe_fds_are_claimed_once() {
        let var = "TICKBURST_TEST_CLAIM_ONCE";
        let (r, w) = raw_pipe();
        // SAFETY: F_SETFD on descriptors this test owns.
        unsafe {
            libc::fcntl(r, libc::F_SETFD, 0);
            libc::fcntl(w, libc::F_SETFD, 0);
        }
        std::env::set_var(var, format!("{r},{w}"));
        let fds = claim_fds(var, &PIPES).unwrap();
        assert_eq!(
            fds.iter().map(|f| f.as_raw_fd()).collect::<Vec<_>>(),
            [r, w]
        );
        assert!(std::env::var_os(var).is_none(), "variable removed");
        assert!(cloexec(r) && cloexec(w), "not inherited further");
        assert!(matches!(claim_fds(var, &PIPES), Err(FdError::Unset(_))));
    }

    /// Descriptors of the wrong kind, direction or number are refused (and
    /// the variable is removed all the same).
    #[test]
    fn wrong_fds_are_refused() {
        let var = "TICKBURST_TEST_CLAIM_WRONG";
        let (r, w) = raw_pipe();
        let file = File::open("/proc/self/stat").unwrap();
        let f = file.as_raw_fd();
        for value in [
            format!("{w},{r}"),     // ends swapped
            format!("{r},{f}"),     // a file, not a pipe
            format!("{r},{r}"),     // the same fd twice
            format!("{r}"),         // one missing
            format!("{r},{w},{f}"), // one too many
            format!("{r},1000000"), // not open
            "2,1".to_string(),      // standard streams
            "x,y".to_string(),      // not numbers
        ] {
            std::env::set_var(var, &value);
            let err = claim_fds(var, &PIPES).expect_err(&value);
            assert!(matches!(err, FdError::BadFd { .. }), "{value}: {err}");
            assert!(std::env::var_os(var).is_none(), "{value}: variable removed");
        }
        // A pipe is not a pidfd.
        std::env::set_var(var, r.to_string());
        assert!(claim_fds(var, &[FdKind::Pidfd { pid: 1 }]).is_err());
        // SAFETY: closing the test's own pipe.
        unsafe {
            libc::close(r);
            libc::close(w);
        }
    }

    /// A pidfd signals its own process only: after that process is reaped, a
    /// signal through it fails with ESRCH instead of reaching a reused pid.
    #[test]
    fn pidfd_is_checked_and_outlives_its_process_safely() {
        use std::os::fd::IntoRawFd;
        let var = "TICKBURST_TEST_CLAIM_PIDFD";
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let raw = Pidfd::open(pid).unwrap().0.into_raw_fd();
        std::env::set_var(var, raw.to_string());
        let err = claim_fds(var, &[FdKind::Pidfd { pid: pid + 1 }]).unwrap_err();
        assert!(err.to_string().contains("not of"), "{err}");
        std::env::set_var(var, raw.to_string());
        let vmm = Pidfd(claim_fds(var, &[FdKind::Pidfd { pid }]).unwrap().remove(0));
        assert!(cloexec(raw));
        vmm.send(libc::SIGKILL).unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        let err = vmm.send(libc::SIGCONT).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
    }
}
