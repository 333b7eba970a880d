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
//! Protocol (one text line each way): `pause <sigstop|freeze> <ns> <tid>` ->
//! `ok <start_mono_ns> <end_mono_ns>` or `err <message>`.

use crate::cgroup::{self, Freezer};
use crate::pause::PauseMethod;
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Environment variable holding the VMM's ends of the pipes (`read,write`).
pub const SUPERVISOR_ENV: &str = "TICKBURST_SUPERVISOR_FDS";
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

// ---------------------------------------------------------------- VMM side

struct Link {
    to_parent: File,
    from_parent: BufReader<File>,
}

static LINK: OnceLock<Option<Mutex<Link>>> = OnceLock::new();

fn parse_fds(text: &str) -> Option<(i32, i32)> {
    let (r, w) = text.split_once(',')?;
    let (r, w) = (r.parse().ok()?, w.parse().ok()?);
    (r > 2 && w > 2 && r != w).then_some((r, w))
}

fn link() -> Option<&'static Mutex<Link>> {
    LINK.get_or_init(|| {
        let (r, w) = parse_fds(&std::env::var(SUPERVISOR_ENV).ok()?)?;
        // The fds must be open pipes: fcntl checks they exist.
        // SAFETY: F_GETFD only queries the descriptor flags.
        if unsafe { libc::fcntl(r, libc::F_GETFD) } < 0
            || unsafe { libc::fcntl(w, libc::F_GETFD) } < 0
        {
            return None;
        }
        // SAFETY: the supervisor passed these descriptors to this process for
        // this use only, and the OnceLock makes sure they are owned once.
        let (from_parent, to_parent) = unsafe { (File::from_raw_fd(r), File::from_raw_fd(w)) };
        Some(Mutex::new(Link {
            to_parent,
            from_parent: BufReader::new(from_parent),
        }))
    })
    .as_ref()
}

/// Whether this process runs under a supervisor.
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

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill has no memory effects; pid is our own child.
    unsafe { libc::kill(pid, sig) };
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
    pid: i32,
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
                signal(self.pid, libc::SIGSTOP);
                let deadline = Instant::now() + STOP_TIMEOUT;
                while !all_stopped(self.pid, tid) {
                    if Instant::now() > deadline {
                        signal(self.pid, libc::SIGCONT);
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
                signal(self.pid, libc::SIGCONT);
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
            signal(self.pid, libc::SIGCONT);
            signal(self.pid, libc::SIGTERM);
        }
        if self.flags.int.swap(false, Ordering::Relaxed) {
            // A terminal's Ctrl-C reached the child too; a `kill -INT` of the
            // supervisor alone did not. Sending it again is harmless.
            signal(self.pid, libc::SIGCONT);
            signal(self.pid, libc::SIGINT);
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
    // SAFETY: the closure only calls fcntl, which is async-signal-safe, on
    // two descriptors that are open in the parent at fork time.
    unsafe {
        cmd.pre_exec(move || {
            for fd in [child_r, child_w] {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| format!("starting the VMM: {e}"))?;
    drop((rep_r, req_w));
    let pid = child.id() as i32;
    let guard = Command::new(&exe)
        .args([GUARD_ARG, &pid.to_string()])
        .stdin(Stdio::piped())
        .spawn()
        .ok()
        .and_then(|mut g| g.stdin.take().map(|s| (g, s)));
    let mut sup = Supervisor {
        child,
        pid,
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
/// supervisor died) it continues `pid` and thaws the cgroup.
pub fn guard(pid: &str) -> i32 {
    let Ok(pid) = pid.parse::<i32>() else {
        return 2;
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
    signal(pid, libc::SIGCONT);
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
    fn parses_fds_and_replies() {
        assert_eq!(parse_fds("5,6"), Some((5, 6)));
        assert_eq!(parse_fds("1,6"), None);
        assert_eq!(parse_fds("5,5"), None);
        assert_eq!(parse_fds("x"), None);
        assert_eq!(parse_reply("ok 10 20\n"), Ok((10, 20)));
        assert!(parse_reply("ok 20 10\n").is_err());
        assert_eq!(parse_reply("err no freezer\n"), Err("no freezer".into()));
        assert!(parse_reply("").is_err());
    }

    #[test]
    fn reads_own_task_state() {
        // SAFETY: getpid/gettid have no preconditions.
        let (pid, tid) = unsafe { (libc::getpid(), libc::gettid()) };
        assert!(matches!(task_state(pid, tid), Some('R') | Some('S')));
    }
}
