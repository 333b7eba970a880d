//! The guard (`tickburst __guard PID`): a third process holding a pipe from
//! the supervisor. If the supervisor dies in any way, even by SIGKILL, the
//! pipe closes and the guard continues the VMM and thaws and removes its
//! cgroup, through a pidfd it claimed from [`GUARD_PIDFD_ENV`].

use crate::pause::cgroup;
use crate::pause::fds::{claim_fds, FdKind};
use crate::pause::pidfd::Pidfd;
use std::io::BufRead;
use std::time::{Duration, Instant};

/// Environment variable holding the guard's pidfd of the VMM.
pub const GUARD_PIDFD_ENV: &str = "TICKBURST_GUARD_PIDFD";
/// Hidden first argument that runs the guard.
pub const GUARD_ARG: &str = "__guard";

/// The guard: reads lines from stdin until EOF. `cgroup PATH` names the
/// freezer cgroup; `done` means all is resumed. On EOF without `done` (the
/// supervisor died) it thaws the cgroup and continues the VMM, process `pid`,
/// through the pidfd claimed from [`GUARD_PIDFD_ENV`] (exit 2 without one).
pub fn guard(pid: &str) -> i32 {
    let Ok(pid) = pid.parse::<i32>() else {
        return 2;
    };
    let vmm = match claim_fds(GUARD_PIDFD_ENV, &[FdKind::Pidfd { pid }]) {
        Ok(mut fds) => match fds.pop() {
            Some(fd) => Pidfd(fd),
            None => return 2,
        },
        Err(e) => {
            eprintln!("tickburst guard: {e}");
            return 2;
        }
    };
    // Ignore the terminal's Ctrl-C: the guard must outlive the supervisor.
    // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let mut cgroup_dir: Option<std::path::PathBuf> = None;
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line == "done" {
            return 0;
        }
        if let Some(path) = line.strip_prefix("cgroup ") {
            cgroup_dir = Some(path.into());
        }
    }
    if let Some(dir) = &cgroup_dir {
        let _ = cgroup::thaw_dir(dir, cgroup::version_of(dir));
    }
    let _ = vmm.send(libc::SIGCONT);
    // Remove the cgroup once the VMM has left it (it exits when it finds the
    // supervisor gone).
    if let Some(dir) = cgroup_dir {
        let deadline = Instant::now() + GUARD_CLEANUP_WAIT;
        while std::fs::remove_dir(&dir).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    0
}

/// How long the guard waits for an orphaned VMM to leave its cgroup.
const GUARD_CLEANUP_WAIT: Duration = Duration::from_secs(10);
