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
//!   the guard thaws the cgroup, makes sure the VMM is dead and removes the
//!   cgroup. The supervisor watches the guard and starts a new one if it
//!   dies ([`crate::pause::guard_handle`]).
//!
//! The VMM dies with its supervisor (`PR_SET_PDEATHSIG`:
//! [`crate::pause::parent_death`]): a killed supervisor never leaves a VM
//! running on. The supervisor waits on the VMM's pidfd, the guard's pidfd
//! and the request pipe together ([`crate::pause::poll`]), so the death of
//! either is seen at once, also in the middle of a pause; a VMM that dies
//! from a signal ends the run with one line and exit 2
//! ([`SupervisorError::VmmKilled`]).
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
use crate::pause::cgroup::{candidate_dirs, Freezer};
use crate::pause::fds::{inherit, pipe};
use crate::pause::guard_handle::{GuardError, GuardHandle};
use crate::pause::parent_death::die_with_parent;
use crate::pause::pidfd::Pidfd;
use crate::pause::poll;
use crate::pause::protocol::{parse_request, reply_line, SUPERVISOR_ENV};
pub use crate::pause::supervisor_error::SupervisorError;
use crate::pause::task_state::all_stopped;
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tickburst_analysis::names::PauseMethod;

/// How long a stopped VMM may take to show as stopped in /proc.
const STOP_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest wait between two looks at the signal flags (a signal ends a
/// wait early, but one that comes right before it starts does not).
const FLAG_POLL: Duration = Duration::from_millis(20);

struct Flags {
    int: Arc<AtomicBool>,
    term: Arc<AtomicBool>,
}

impl Flags {
    fn any(&self) -> bool {
        self.int.load(Ordering::Relaxed) || self.term.load(Ordering::Relaxed)
    }
}

/// What ended a wait of the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// A pause request can be read.
    Request,
    /// The VMM has exited.
    VmmExited,
    /// The time is up, or a signal came.
    Timeout,
}

/// The error a pause ends with when the VMM exits in it.
const VMM_EXITED: &str = "the VMM exited during the pause";

struct Supervisor {
    exe: PathBuf,
    child: Child,
    /// The VMM's pid, for /proc and `cgroup.procs`: it names the VMM as long
    /// as the supervisor has not reaped it.
    pid: i32,
    /// The VMM's pidfd, for every signal; readable once it has exited.
    vmm: Pidfd,
    /// `None` only while a dead guard is being replaced, or after a
    /// replacement failed (`guard_error`).
    guard: Option<GuardHandle>,
    /// Every cgroup named to the guard (a new guard is told them all).
    cgroups: Vec<PathBuf>,
    /// Why a dead guard could not be replaced: the run ends.
    guard_error: Option<GuardError>,
    freezer: Option<Freezer>,
    flags: Flags,
    /// Ctrl-C or SIGTERM was passed on to the VMM.
    interrupted: bool,
    /// The VMM exited while the supervisor held it paused.
    died_in_pause: bool,
}

impl Supervisor {
    /// Waits up to `timeout` for a request on `requests` (if given), the
    /// VMM's exit or the guard's death; replaces a dead guard at once.
    fn wait(&mut self, requests: Option<RawFd>, timeout: Duration) -> Event {
        let guard_fd = self.guard.as_ref().map(GuardHandle::exited_fd);
        let mut fds = vec![self.vmm.0.as_raw_fd()];
        fds.extend(guard_fd);
        fds.extend(requests);
        let Ok(ready) = poll::ready(&fds, timeout) else {
            // poll itself failed (ENOMEM): wait without it.
            std::thread::sleep(timeout.min(Duration::from_millis(1)));
            return Event::Timeout;
        };
        if guard_fd.is_some() && ready[1] {
            self.replace_guard();
        }
        if ready[0] {
            Event::VmmExited
        } else if requests.is_some() && ready[fds.len() - 1] {
            Event::Request
        } else {
            Event::Timeout
        }
    }

    /// Reaps the dead guard and starts a new one, told every cgroup; if that
    /// fails, the run must end (`guard_error`).
    fn replace_guard(&mut self) {
        if let Some(dead) = self.guard.take() {
            dead.reap();
        }
        match GuardHandle::start(&self.exe, self.pid, &self.vmm, &self.cgroups) {
            Ok(g) => self.guard = Some(g),
            Err(e) => self.guard_error = Some(e),
        }
    }

    /// Sleeps until `until` or a signal; returns early on a signal, and with
    /// `Err` as soon as the VMM exits.
    fn sleep_until(&mut self, until: Instant) -> Result<(), String> {
        while !self.flags.any() && self.guard_error.is_none() {
            let now = Instant::now();
            if now >= until {
                break;
            }
            if self.wait(None, (until - now).min(FLAG_POLL)) == Event::VmmExited {
                self.died_in_pause = true;
                return Err(VMM_EXITED.into());
            }
        }
        Ok(())
    }

    /// Signals the VMM through its pidfd (nothing to do once it has exited).
    fn signal(&self, sig: i32) {
        let _ = self.vmm.send(sig);
    }

    fn vmm_exited(&self) -> bool {
        poll::is_ready(self.vmm.0.as_raw_fd())
    }

    /// Names the cgroups `Freezer::create` may make to the guard, before
    /// one is made (a new guard is told them all if this one has died).
    fn name_cgroups(&mut self) {
        for dir in candidate_dirs(&self.pid.to_string()) {
            if !self.cgroups.contains(&dir) {
                self.cgroups.push(dir.clone());
                if let Some(g) = &mut self.guard {
                    let _ = g.tell_cgroup(&dir);
                }
            }
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
                    if self.vmm_exited() {
                        self.died_in_pause = true;
                        return Err(VMM_EXITED.into());
                    }
                    if Instant::now() > deadline {
                        self.signal(libc::SIGCONT);
                        return Err(format!(
                            "VMM threads (vCPU thread {tid}) not all stopped within {STOP_TIMEOUT:?}"
                        ));
                    }
                    std::thread::sleep(Duration::from_micros(50));
                }
                let start = monotonic_ns();
                let slept = self.sleep_until(until(start));
                // The resume is taken before the signal: no guest tick can
                // come before it.
                let end = monotonic_ns();
                self.signal(libc::SIGCONT);
                slept.map(|()| (start, end))
            }
            PauseMethod::Freeze => {
                if self.freezer.is_none() {
                    self.name_cgroups();
                    let f = Freezer::create(&self.pid.to_string()).map_err(|e| e.to_string())?;
                    f.add(self.pid).map_err(|e| e.to_string())?;
                    self.freezer = Some(f);
                }
                let f = self.freezer.as_ref().ok_or("no freezer")?;
                if let Err(e) = f.freeze() {
                    let _ = f.thaw();
                    return Err(e.to_string());
                }
                let start = monotonic_ns();
                let slept = self.sleep_until(until(start));
                let end = monotonic_ns();
                let f = self.freezer.as_ref().ok_or("no freezer")?;
                f.thaw().map_err(|e| e.to_string())?;
                slept.map(|()| (start, end))
            }
            PauseMethod::Kick => Err("kick is not a supervisor pause".into()),
        }
    }

    fn forward_signals(&mut self) {
        if self.flags.term.swap(false, Ordering::Relaxed) {
            self.interrupted = true;
            self.signal(libc::SIGCONT);
            self.signal(libc::SIGTERM);
        }
        if self.flags.int.swap(false, Ordering::Relaxed) {
            // A terminal's Ctrl-C reached the child too; a `kill -INT` of the
            // supervisor alone did not. Sending it again is harmless.
            self.interrupted = true;
            self.signal(libc::SIGCONT);
            self.signal(libc::SIGINT);
        }
    }
}

/// Runs `args` (this program's arguments) as a supervised VMM child and
/// serves its pause requests. Returns the VMM's exit code to leave with, or
/// why the run failed.
///
/// Call it on the main thread: the VMM's parent-death signal follows the
/// thread that starts it.
pub fn supervise(args: &[OsString]) -> Result<i32, SupervisorError> {
    let exe = std::env::current_exe().map_err(SupervisorError::OwnExe)?;
    let flags = Flags {
        int: Arc::new(AtomicBool::new(false)),
        term: Arc::new(AtomicBool::new(false)),
    };
    for (sig, flag) in [
        (libc::SIGINT, &flags.int),
        (libc::SIGTERM, &flags.term),
        (libc::SIGHUP, &flags.term),
    ] {
        signal_hook::flag::register(sig, flag.clone()).map_err(SupervisorError::Signals)?;
    }
    let (req_r, req_w) = pipe().map_err(SupervisorError::Pipe)?;
    let (rep_r, rep_w) = pipe().map_err(SupervisorError::Pipe)?;
    let mut cmd = Command::new(&exe);
    let (child_r, child_w) = (rep_r.as_raw_fd(), req_w.as_raw_fd());
    cmd.args(args)
        .env(SUPERVISOR_ENV, format!("{child_r},{child_w}"));
    inherit(&mut cmd, vec![child_r, child_w]);
    die_with_parent(&mut cmd);
    let child = cmd.spawn().map_err(SupervisorError::SpawnVmm)?;
    drop((rep_r, req_w));
    let mut sup = Supervisor::start(child, exe, flags)?;
    sup.serve(BufReader::new(File::from(req_r)), File::from(rep_w));
    sup.finish()
}

impl Supervisor {
    /// Takes the VMM child: opens its pidfd while it cannot have been reaped
    /// yet, and starts the guard with it (the VMM is killed if either fails).
    fn start(mut child: Child, exe: PathBuf, flags: Flags) -> Result<Supervisor, SupervisorError> {
        let pid = child.id() as i32;
        let kill = |child: &mut Child| {
            let _ = child.kill();
            let _ = child.wait();
        };
        // The child is not reaped before `child` is waited for, so `pid` is
        // still the VMM's.
        let vmm = match Pidfd::open(pid) {
            Ok(fd) => fd,
            Err(e) => {
                kill(&mut child);
                return Err(e.into());
            }
        };
        let guard = match GuardHandle::start(&exe, pid, &vmm, &[]) {
            Ok(g) => g,
            Err(e) => {
                kill(&mut child);
                return Err(e.into());
            }
        };
        Ok(Supervisor {
            exe,
            child,
            pid,
            vmm,
            guard: Some(guard),
            cgroups: Vec::new(),
            guard_error: None,
            freezer: None,
            flags,
            interrupted: false,
            died_in_pause: false,
        })
    }

    /// Serves pause requests until the VMM exits or closes its end of the
    /// pipe, passing signals on meanwhile; kills the VMM if its guard died
    /// and could not be replaced.
    fn serve(&mut self, mut requests: BufReader<File>, mut to_child: File) {
        let req_fd = requests.get_ref().as_raw_fd();
        loop {
            self.forward_signals();
            if self.guard_error.is_some() {
                self.signal(libc::SIGKILL);
                break;
            }
            match self.wait(Some(req_fd), FLAG_POLL) {
                Event::VmmExited => break,
                Event::Timeout => continue,
                Event::Request => {}
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
    /// returns the VMM's exit code, or why it has none.
    fn finish(mut self) -> Result<i32, SupervisorError> {
        let status = loop {
            self.forward_signals();
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {
                    let _ = poll::ready(&[self.vmm.0.as_raw_fd()], FLAG_POLL);
                }
                Err(e) => return Err(SupervisorError::Wait(e)),
            }
        };
        self.freezer = None; // thaw and remove the cgroup
        if let Some(g) = self.guard.take() {
            g.release();
        }
        if let Some(e) = self.guard_error.take() {
            return Err(e.into());
        }
        self.exit_code(status)
    }

    /// The VMM's exit code; a death by signal is an error with one line.
    fn exit_code(&self, status: ExitStatus) -> Result<i32, SupervisorError> {
        match (status.code(), status.signal()) {
            (Some(code), _) => Ok(code),
            (None, Some(signal))
                if self.interrupted
                    && [libc::SIGINT, libc::SIGTERM, libc::SIGHUP].contains(&signal) =>
            {
                Err(SupervisorError::Interrupted { signal })
            }
            (None, signal) => Err(SupervisorError::VmmKilled {
                pid: self.pid,
                signal: signal.unwrap_or(0),
                during_pause: self.died_in_pause,
            }),
        }
    }
}
