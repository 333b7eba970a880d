//! The guard (`tickburst __guard PID`): a third process holding a pipe from
//! the supervisor. If the supervisor dies in any way, even by SIGKILL, the
//! pipe closes and the guard thaws the VMM's cgroup, makes sure the VMM is
//! dead (it dies with its supervisor: [`crate::pause::parent_death`]) and
//! removes the cgroup, through a pidfd it claimed from [`GUARD_PIDFD_ENV`].
//!
//! It runs in a session of its own, so no terminal's signals (Ctrl-C, the
//! hang-up of a closed terminal) and no kill of the run's process group
//! reach it; the supervisor watches it and starts a new one if it dies
//! anyway ([`crate::pause::guard_handle`]).

use crate::pause::cgroup;
use crate::pause::fds::{claim_fds, FdKind};
use crate::pause::parent_death::PARENT_DEATH_SIGNAL;
use crate::pause::pidfd::Pidfd;
use crate::pause::poll;
use std::io::BufRead;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Environment variable holding the guard's pidfd of the VMM.
pub const GUARD_PIDFD_ENV: &str = "TICKBURST_GUARD_PIDFD";
/// Hidden first argument that runs the guard.
pub const GUARD_ARG: &str = "__guard";
/// The line that names a cgroup the VMM may be frozen in (the path follows).
pub(crate) const CGROUP_LINE: &str = "cgroup ";
/// The line that says the supervisor has resumed and reaped the VMM.
pub(crate) const DONE_LINE: &str = "done";

/// How long the guard waits for an orphaned VMM to exit and leave its cgroup.
const GUARD_CLEANUP_WAIT: Duration = Duration::from_secs(10);

/// The guard: reads lines from stdin until EOF. `cgroup PATH` names a
/// freezer cgroup the VMM may be in (named before it is created); `done`
/// means all is resumed. On EOF without `done` (the supervisor died) it
/// thaws those cgroups, kills the VMM, process `pid`, through the pidfd
/// claimed from [`GUARD_PIDFD_ENV`] (exit 2 without one), waits for it to
/// exit and removes the cgroups.
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
    // The guard must outlive the supervisor: a signal meant for the run
    // (sent to the supervisor's pid or its old process group) is not for it.
    for sig in [libc::SIGINT, libc::SIGHUP, libc::SIGTERM, libc::SIGQUIT] {
        // SAFETY: setting a signal disposition to SIG_IGN has no
        // preconditions.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    let mut cgroups: Vec<PathBuf> = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line == DONE_LINE {
            return 0;
        }
        if let Some(path) = line.strip_prefix(CGROUP_LINE) {
            cgroups.push(path.into());
        }
    }
    clean_up(&vmm, &cgroups);
    0
}

/// After the supervisor died: thaw, kill the VMM, wait for it, remove the
/// cgroups. Nothing more can be done about an error here.
fn clean_up(vmm: &Pidfd, cgroups: &[PathBuf]) {
    for dir in cgroups.iter().filter(|d| d.exists()) {
        let _ = cgroup::thaw_dir(dir, cgroup::version_of(dir));
    }
    // The parent-death signal did this already, unless the VMM was frozen in
    // a v1 cgroup (a fatal signal waits for the thaw there) or the kernel
    // cleared it; ESRCH once it has exited.
    let _ = vmm.send(PARENT_DEATH_SIGNAL);
    let deadline = Instant::now() + GUARD_CLEANUP_WAIT;
    while !poll::is_ready(vmm.0.as_raw_fd()) && Instant::now() < deadline {
        let _ = poll::ready(&[vmm.0.as_raw_fd()], Duration::from_millis(100));
    }
    for dir in cgroups {
        while dir.exists() && std::fs::remove_dir(dir).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
