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
//! - the **VMM** asks for pauses over a pipe ([`request_pause`]); it finds the
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

use crate::pause::cgroup::{self, Freezer};
use crate::pause::method::PauseMethod;
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Environment variable holding the VMM's ends of the pipes (`read,write`).
pub const SUPERVISOR_ENV: &str = "TICKBURST_SUPERVISOR_FDS";
/// Environment variable holding the guard's pidfd of the VMM.
pub const GUARD_PIDFD_ENV: &str = "TICKBURST_GUARD_PIDFD";
/// Hidden first argument that runs the guard.
pub const GUARD_ARG: &str = "__guard";
/// How long a stopped VMM may take to show as stopped in /proc.
const STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// CLOCK_MONOTONIC now, ns (the clock of `Instant` on Linux).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Errors of claiming inherited descriptors and of pidfds.
#[derive(Debug, Error)]
pub enum SupervisorError {
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
    /// `pidfd_open` failed.
    #[error("pidfd_open({pid}): {source} (sigstop and freeze need Linux 5.3 or later)")]
    PidfdOpen {
        /// The process.
        pid: i32,
        /// The errno.
        source: std::io::Error,
    },
}

// ------------------------------------------------------------------ pidfds

/// A pidfd: a handle on one process that never refers to another process
/// that reuses its pid.
#[derive(Debug)]
struct Pidfd(OwnedFd);

impl Pidfd {
    /// `pidfd_open(pid)`. Only sound against pid reuse while `pid` cannot
    /// have been reaped yet (our own unwaited child); the fd is close-on-exec.
    fn open(pid: i32) -> Result<Pidfd, SupervisorError> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1;
        // no memory is passed.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(SupervisorError::PidfdOpen {
                pid,
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: the fd was just returned by pidfd_open and is owned here only.
        Ok(Pidfd(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
    }

    /// `pidfd_send_signal`: `ESRCH` once the process has exited.
    fn send(&self, sig: i32) -> std::io::Result<()> {
        send_raw(self.0.as_raw_fd(), sig)
    }
}

fn send_raw(fd: RawFd, sig: i32) -> std::io::Result<()> {
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
fn pidfd_pid(fd: RawFd) -> Option<i32> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("Pid:"))?
        .trim()
        .parse()
        .ok()
        .filter(|&p: &i32| p > 0)
}

// ------------------------------------------------- inherited descriptors

/// What an inherited descriptor must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FdKind {
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
fn claim_fds(var: &str, kinds: &[FdKind]) -> Result<Vec<OwnedFd>, SupervisorError> {
    let value = std::env::var(var).map_err(|_| SupervisorError::Unset(var.into()))?;
    std::env::remove_var(var);
    let bad = |why: String| SupervisorError::BadFd {
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
fn inherit(cmd: &mut Command, fds: Vec<RawFd>) {
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

// ---------------------------------------------------------------- VMM side

struct Link {
    to_parent: File,
    from_parent: BufReader<File>,
}

static LINK: OnceLock<Option<Mutex<Link>>> = OnceLock::new();

/// The link to the supervisor, claimed from [`SUPERVISOR_ENV`] on first use
/// (once per process: the OnceLock, and the variable is removed).
fn link() -> Option<&'static Mutex<Link>> {
    LINK.get_or_init(|| {
        let mut fds = claim_fds(SUPERVISOR_ENV, &[FdKind::PipeRead, FdKind::PipeWrite]).ok()?;
        let to_parent = File::from(fds.pop()?);
        let from_parent = File::from(fds.pop()?);
        Some(Mutex::new(Link {
            to_parent,
            from_parent: BufReader::new(from_parent),
        }))
    })
    .as_ref()
}

/// Whether this process runs under a supervisor. The first call claims the
/// pipes from [`SUPERVISOR_ENV`] and removes it from the environment, so
/// make it before other threads start (`main` does).
pub fn is_supervised() -> bool {
    link().is_some()
}

/// Asks the supervisor to stop this whole process (or freeze its cgroup) for
/// `ns`, and returns the CLOCK_MONOTONIC times at which every thread (vCPU
/// thread `tid` first) was seen stopped, or the cgroup frozen, and right
/// before it was continued or thawed. Blocks (stopped) for the pause.
pub fn request_pause(method: PauseMethod, ns: u64, tid: i32) -> Result<(u64, u64), String> {
    let link = link().ok_or_else(|| {
        format!(
            "--pause-method {} needs the tickburst supervisor (run the tickburst binary)",
            method.name()
        )
    })?;
    let mut link = link.lock().unwrap_or_else(|p| p.into_inner());
    writeln!(link.to_parent, "pause {} {ns} {tid}", method.name())
        .map_err(|e| format!("supervisor gone: {e}"))?;
    let mut line = String::new();
    match link.from_parent.read_line(&mut line) {
        Ok(0) => return Err("supervisor gone (pipe closed)".into()),
        Err(e) => return Err(format!("supervisor gone: {e}")),
        Ok(_) => {}
    }
    parse_reply(&line)
}

fn parse_reply(line: &str) -> Result<(u64, u64), String> {
    let mut words = line.split_whitespace();
    match words.next() {
        Some("ok") => {
            let start = words.next().and_then(|w| w.parse().ok());
            let end = words.next().and_then(|w| w.parse().ok());
            match (start, end) {
                (Some(s), Some(e)) if e >= s => Ok((s, e)),
                _ => Err(format!("bad supervisor reply: {}", line.trim())),
            }
        }
        Some("err") => Err(line.trim().trim_start_matches("err").trim().to_string()),
        _ => Err(format!("bad supervisor reply: {}", line.trim())),
    }
}

// --------------------------------------------------------- supervisor side

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here only.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

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

    fn pause(&mut self, method: &str, ns: u64, tid: i32) -> Result<(u64, u64), String> {
        let until = |start: u64| {
            Instant::now() + Duration::from_nanos((start + ns).saturating_sub(monotonic_ns()))
        };
        match method {
            "sigstop" => {
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
            "freeze" => {
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
            other => Err(format!("unknown pause method {other}")),
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
    let (req_r, req_w) = pipe().map_err(|e| format!("pipe: {e}"))?;
    let (rep_r, rep_w) = pipe().map_err(|e| format!("pipe: {e}"))?;
    let (child_r, child_w) = (rep_r.as_raw_fd(), req_w.as_raw_fd());
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
    let mut cmd = Command::new(&exe);
    cmd.args(args)
        .env(SUPERVISOR_ENV, format!("{child_r},{child_w}"));
    inherit(&mut cmd, vec![child_r, child_w]);
    let mut child = cmd.spawn().map_err(|e| format!("starting the VMM: {e}"))?;
    drop((rep_r, req_w));
    let pid = child.id() as i32;
    // The child is not reaped before `sup.child` is waited for, so `pid` is
    // still the VMM's.
    let vmm = match Pidfd::open(pid) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e.to_string());
        }
    };
    let mut guard_cmd = Command::new(&exe);
    guard_cmd
        .args([GUARD_ARG, &pid.to_string()])
        .env(GUARD_PIDFD_ENV, vmm.0.as_raw_fd().to_string())
        .stdin(Stdio::piped());
    inherit(&mut guard_cmd, vec![vmm.0.as_raw_fd()]);
    let guard = guard_cmd
        .spawn()
        .ok()
        .and_then(|mut g| g.stdin.take().map(|s| (g, s)));
    let mut sup = Supervisor {
        child,
        pid,
        vmm,
        guard,
        freezer: None,
        flags,
    };
    let mut to_child = File::from(rep_w);
    let mut requests = BufReader::new(File::from(req_r));
    let req_fd = requests.get_ref().as_raw_fd();
    loop {
        sup.forward_signals();
        let mut pfd = libc::pollfd {
            fd: req_fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, 20 ms timeout.
        let n = unsafe { libc::poll(&mut pfd, 1, 20) };
        if n <= 0 {
            continue;
        }
        let mut line = String::new();
        match requests.read_line(&mut line) {
            Ok(0) | Err(_) => break, // the VMM exited
            Ok(_) => {}
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.as_slice() {
            ["pause", method, ns, tid] => match (ns.parse(), tid.parse()) {
                (Ok(ns), Ok(tid)) => sup.pause(method, ns, tid),
                _ => Err(format!("bad request: {}", line.trim())),
            },
            _ => Err(format!("bad request: {}", line.trim())),
        };
        let text = match reply {
            Ok((s, e)) => format!("ok {s} {e}"),
            Err(e) => format!("err {e}"),
        };
        if writeln!(to_child, "{text}").is_err() {
            break;
        }
    }
    let status = loop {
        sup.forward_signals();
        match sup.child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("waiting for the VMM: {e}")),
        }
    };
    sup.freezer = None; // thaw and remove the cgroup
    if let Some((mut g, mut stdin)) = sup.guard.take() {
        let _ = writeln!(stdin, "done");
        drop(stdin);
        let _ = g.wait();
    }
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replies() {
        assert_eq!(parse_reply("ok 10 20\n"), Ok((10, 20)));
        assert!(parse_reply("ok 20 10\n").is_err());
        assert_eq!(parse_reply("err no freezer\n"), Err("no freezer".into()));
        assert!(parse_reply("").is_err());
    }

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
        assert!(matches!(
            claim_fds(var, &PIPES),
            Err(SupervisorError::Unset(_))
        ));
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
            assert!(
                matches!(err, SupervisorError::BadFd { .. }),
                "{value}: {err}"
            );
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

    #[test]
    fn reads_own_task_state() {
        // SAFETY: getpid/gettid have no preconditions.
        let (pid, tid) = unsafe { (libc::getpid(), libc::gettid()) };
        assert!(matches!(task_state(pid, tid), Some('R') | Some('S')));
    }
}
