//! The VMM's thread states, from `/proc/<pid>/task/<tid>/stat`: the
//! supervisor's sigstop pause starts when every thread shows as stopped.

/// Thread state letter from `/proc/<pid>/task/<tid>/stat`.
fn task_state(pid: i32, tid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    // The state follows the last ')' (the name may contain spaces).
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Whether `tid` and every other thread of `pid` is stopped (a group stop
/// reaches the threads one by one; every vCPU thread must be in it).
pub(crate) fn all_stopped(pid: i32, tid: i32) -> bool {
    let stopped = |t: i32| matches!(task_state(pid, t), Some('T') | Some('t'));
    if !stopped(tid) {
        return false;
    }
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .all(|t| stopped(t) || task_state(pid, t).is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_task_state() {
        // SAFETY: getpid/gettid have no preconditions.
        let (pid, tid) = unsafe { (libc::getpid(), libc::gettid()) };
        assert!(matches!(task_state(pid, tid), Some('R') | Some('S')));
    }
}
