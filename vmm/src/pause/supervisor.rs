//! Whole-process pauses (`--pause-method sigstop|freeze`) done by a
//! supervising process, so the VMM can never be left stopped.
//!
//! Three processes:
//!
//! - the **supervisor** (the `tickburst` the user started) re-runs itself as
//!   the VMM child with the same arguments and serves its pause requests: it
//!   stops the child with `SIGSTOP` (or freezes its cgroup), waits, continues
//!   it, and answers with the CLOCK_MONOTONIC times of both edges. On Ctrl-C
//!   or SIGTERM it resumes the child at once and passes the signal on, then
//!   exits with the child's exit code.
//! - the **VMM** asks for pauses over a pipe ([`crate::pause::protocol::request_pause`]); it finds the
//!   pipe through [`SUPERVISOR_ENV`].
//! - a **guard** (`tickburst __guard PID`) holds a pipe from the supervisor.
//!   If the supervisor dies in any way, even by SIGKILL, the pipe closes and
//!   the guard sends `SIGCONT` to the VMM and thaws its cgroup.
//!
//! The VMM is signalled through a pidfd, never by pid: the supervisor opens
//! it right after starting the VMM (its unreaped child, so the pid cannot
//! have been reused yet) and passes it to the guard ([`GUARD_PIDFD_ENV`]).
//! Once the VMM has exited, a signal through the pidfd fails with `ESRCH`
//! instead of reaching whatever process got the pid next (the guard
//! outlives a killed supervisor, and the VMM is then reaped by init).
//!
//! Descriptors passed down in an environment variable are claimed once:
//! read, checked to be open and of the right kind (pipe ends of the right
//! direction, a pidfd of the right process), marked close-on-exec, and the
//! variable removed, so no grandchild can inherit or claim them again.
//!
//! Protocol (one text line each way): `pause <sigstop|freeze> <ns> <tid>` ->
//! `ok <start_mono_ns> <end_mono_ns>` or `err <message>`.

use crate::host::clock::monotonic_ns;
use crate::pause::cgroup::Freezer;
use crate::pause::fds::{inherit, pipe};
use crate::pause::guard::{GUARD_ARG, GUARD_PIDFD_ENV};
use crate::pause::pidfd::Pidfd;
use crate::pause::protocol::{parse_request, reply_line, SUPERVISOR_ENV};
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tickburst_analysis::names::PauseMethod;

/// How long a stopped VMM may take to show as stopped in /proc.
const STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// Thread state letter from `/proc/<pid>/task/<tid>/stat`.
fn task_state(pid: i32, tid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    // The state follows the last ')' (the name may contain spaces).
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Whether `tid` and every other thread of `pid` is stopped (a group stop
/// reaches the threads one by one; every vCPU thread must be in it).
fn all_stopped(pid: i32, tid: i32) -> bool {
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

struct Flags {
    int: Arc<AtomicBool>,
    term: Arc<AtomicBool>,
}

impl Flags {
    fn any(&self) -> bool {
        self.int.load(Ordering::Relaxed) || self.term.load(Ordering::Relaxed)
    }
}

struct Supervisor {
    child: Child,
    /// The VMM's pid, for /proc and `cgroup.procs`: it names the VMM as long
    /// as the supervisor has not reaped it.
    pid: i32,
    /// The VMM's pidfd, for every signal.
    vmm: Pidfd,
    guard: Option<(Child, ChildStdin)>,
    freezer: Option<Freezer>,
    flags: Flags,
}

impl Supervisor {
    /// Sleeps until `until` or a signal; returns early on a signal.
    fn sleep_until(&self, until: Instant) {
        while Instant::now() < until && !self.flags.any() {
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(1)));
        }
    }

    /// Signals the VMM through its pidfd (nothing to do once it has exited).
    fn signal(&self, sig: i32) {
        let _ = self.vmm.send(sig);
    }

    fn tell_guard(&mut self, line: &str) {
        if let Some((_, stdin)) = &mut self.guard {
            let _ = writeln!(stdin, "{line}");
        }
    }

    fn pause(&mut self, method: PauseMethod, ns: u64, tid: i32) -> Result<(u64, u64), String> {
        let until = |start: u64| {
            Instant::now() + Duration::from_nanos((start + ns).saturating_sub(monotonic_ns()))
        };
        match method {
            PauseMethod::Sigstop => {
                self.signal(libc::SIGSTOP);
                let deadline = Instant::now() + STOP_TIMEOUT;
                while !all_stopped(self.pid, tid) {
                    if Instant::now() > deadline {
                        self.signal(libc::SIGCONT);
                        return Err(format!(
                            "VMM threads (vCPU thread {tid}) not all stopped within {STOP_TIMEOUT:?}"
                        ));
                    }
                    std::thread::sleep(Duration::from_micros(50));
                }
                let start = monotonic_ns();
                self.sleep_until(until(start));
                // The resume is taken before the signal: no guest tick can
                // come before it.
                let end = monotonic_ns();
                self.signal(libc::SIGCONT);
                Ok((start, end))
            }
            PauseMethod::Freeze => {
                if self.freezer.is_none() {
                    let f = Freezer::create(&self.pid.to_string()).map_err(|e| e.to_string())?;
                    f.add(self.pid).map_err(|e| e.to_string())?;
                    let line = format!("cgroup {}", f.dir().display());
                    self.freezer = Some(f);
                    self.tell_guard(&line);
                }
                let f = self.freezer.as_ref().ok_or("no freezer")?;
                if let Err(e) = f.freeze() {
                    let _ = f.thaw();
                    return Err(e.to_string());
                }
                let start = monotonic_ns();
                self.sleep_until(until(start));
                let end = monotonic_ns();
                f.thaw().map_err(|e| e.to_string())?;
                Ok((start, end))
            }
            PauseMethod::Kick => Err("kick is not a supervisor pause".into()),
        }
    }

    fn forward_signals(&mut self) {
        if self.flags.term.swap(false, Ordering::Relaxed) {
            self.signal(libc::SIGCONT);
            self.signal(libc::SIGTERM);
        }
        if self.flags.int.swap(false, Ordering::Relaxed) {
            // A terminal's Ctrl-C reached the child too; a `kill -INT` of the
            // supervisor alone did not. Sending it again is harmless.
            self.signal(libc::SIGCONT);
            self.signal(libc::SIGINT);
        }
    }
}

/// Runs `args` (this program's arguments) as a supervised VMM child and
/// serves its pause requests. Returns the exit code to leave with.
pub fn supervise(args: &[OsString]) -> Result<i32, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding own executable: {e}"))?;
    let flags = Flags {
        int: Arc::new(AtomicBool::new(false)),
        term: Arc::new(AtomicBool::new(false)),
    };
    for (sig, flag) in [
        (libc::SIGINT, &flags.int),
        (libc::SIGTERM, &flags.term),
        (libc::SIGHUP, &flags.term),
    ] {
        signal_hook::flag::register(sig, flag.clone()).map_err(|e| format!("signal: {e}"))?;
    }
    let (req_r, req_w) = pipe().map_err(|e| format!("pipe: {e}"))?;
    let (rep_r, rep_w) = pipe().map_err(|e| format!("pipe: {e}"))?;
    let mut cmd = Command::new(&exe);
    let (child_r, child_w) = (rep_r.as_raw_fd(), req_w.as_raw_fd());
    cmd.args(args)
        .env(SUPERVISOR_ENV, format!("{child_r},{child_w}"));
    inherit(&mut cmd, vec![child_r, child_w]);
    let child = cmd.spawn().map_err(|e| format!("starting the VMM: {e}"))?;
    drop((rep_r, req_w));
    let mut sup = Supervisor::start(child, &exe, flags)?;
    sup.serve(BufReader::new(File::from(req_r)), File::from(rep_w));
    sup.finish()
}

impl Supervisor {
    /// Takes the VMM child: opens its pidfd while it cannot have been reaped
    /// yet, and starts the guard with it.
    fn start(mut child: Child, exe: &std::path::Path, flags: Flags) -> Result<Supervisor, String> {
        let pid = child.id() as i32;
        // The child is not reaped before `child` is waited for, so `pid` is
        // still the VMM's.
        let vmm = match Pidfd::open(pid) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e.to_string());
            }
        };
        let mut guard_cmd = Command::new(exe);
        guard_cmd
            .args([GUARD_ARG, &pid.to_string()])
            .env(GUARD_PIDFD_ENV, vmm.0.as_raw_fd().to_string())
            .stdin(Stdio::piped());
        inherit(&mut guard_cmd, vec![vmm.0.as_raw_fd()]);
        let guard = guard_cmd
            .spawn()
            .ok()
            .and_then(|mut g| g.stdin.take().map(|s| (g, s)));
        Ok(Supervisor {
            child,
            pid,
            vmm,
            guard,
            freezer: None,
            flags,
        })
    }

    /// Serves pause requests until the VMM closes its end of the pipe,
    /// passing signals on meanwhile.
    fn serve(&mut self, mut requests: BufReader<File>, mut to_child: File) {
        let req_fd = requests.get_ref().as_raw_fd();
        loop {
            self.forward_signals();
            let mut pfd = libc::pollfd {
                fd: req_fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `pfd` is one valid pollfd that lives across the call,
            // and nfds is 1; the timeout is 20 ms.
            let n = unsafe { libc::poll(&mut pfd, 1, 20) };
            if n <= 0 {
                continue;
            }
            let mut line = String::new();
            match requests.read_line(&mut line) {
                Ok(0) | Err(_) => break, // the VMM exited
                Ok(_) => {}
            }
            let reply =
                parse_request(&line).and_then(|(method, ns, tid)| self.pause(method, ns, tid));
            if writeln!(to_child, "{}", reply_line(&reply)).is_err() {
                break;
            }
        }
    }

    /// Waits for the VMM, thaws and removes the cgroup, releases the guard;
    /// returns the VMM's exit code.
    fn finish(mut self) -> Result<i32, String> {
        let status = loop {
            self.forward_signals();
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(format!("waiting for the VMM: {e}")),
            }
        };
        self.freezer = None; // thaw and remove the cgroup
        if let Some((mut g, mut stdin)) = self.guard.take() {
            let _ = writeln!(stdin, "done");
            drop(stdin);
            let _ = g.wait();
        }
        use std::os::unix::process::ExitStatusExt;
        Ok(status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    }
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
