//! Fault injection into the processes of a supervised run (`--pause-method
//! sigstop|freeze`, and `check`): the real binary, the real signal, sent to
//! the supervisor, the guard or the VMM at a real phase (set-up, pause,
//! after the resume, record write).
//!
//! After each case: no process of the run left (running or stopped: every
//! process of a case carries a marker in its environment, found through
//! `/proc/*/environ` also once orphaned), no `tickburst-<pid>` cgroup left,
//! the record absent or complete (it loads, with an outcome), the
//! documented exit code and exactly one `tickburst: ...` line on stderr
//! (none for a success, none from a SIGKILLed supervisor, which cannot
//! print). Waits poll with deadlines; no sleep is an assertion.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tickburst::record::Record;
use tickburst_testkit::{is_root, kill, kvm_or_skip, temp, tickburst};

/// The environment variable that marks every process of a case.
const MARKER_VAR: &str = "TICKBURST_FAULT_CASE";
/// Cgroup roots where the freezer may create `tickburst-<pid>`.
const CGROUP_ROOTS: [&str; 3] = [
    "/sys/fs/cgroup/unified",
    "/sys/fs/cgroup/freezer",
    "/sys/fs/cgroup",
];
/// Long enough for a loaded 2-core host (set-up of a VM took seconds on the
/// emulated-Intel rig), short against the runs that would go on.
const SLOW: Duration = Duration::from_secs(30);
/// How soon a death must be acted on: far below the pauses and
/// observations (20 s and more) that would otherwise run out first.
const PROMPT: Duration = Duration::from_secs(8);

fn stat_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Polls `f` until it gives a value, or panics saying `what` at `limit`.
fn until<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One run of the real binary, its processes marked.
struct Case {
    marker: String,
    child: Child,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    json: Option<PathBuf>,
}

fn reader(mut from: impl Read + Send + 'static) -> (Arc<Mutex<String>>, JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let to = text.clone();
    let h = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            to.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    (text, h)
}

/// What a case must end with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// This exit code, with one `tickburst:` line unless 0.
    Code(i32),
    /// Killed by this signal (the supervisor itself), nothing printed.
    Signal(i32),
}

impl Case {
    fn start(name: &str, args: &[&str], json: bool) -> Case {
        let marker = format!("{}-{name}", std::process::id());
        let json = json.then(|| temp(&format!("{name}.json")));
        if let Some(j) = &json {
            let _ = std::fs::remove_file(j);
        }
        let mut cmd = tickburst!();
        cmd.args(args)
            .env(MARKER_VAR, &marker)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(j) = &json {
            cmd.arg("--json").arg(j);
        }
        let mut child = cmd.spawn().expect("start tickburst");
        let (out, ho) = reader(child.stdout.take().unwrap());
        let (err, he) = reader(child.stderr.take().unwrap());
        Case {
            marker,
            child,
            out,
            err,
            readers: vec![ho, he],
            json,
        }
    }

    fn supervisor(&self) -> u32 {
        self.child.id()
    }

    /// The VMM child of the supervisor (once forked).
    fn vmm(&self) -> Option<u32> {
        children(self.supervisor())
            .into_iter()
            .find(|&p| !cmdline(p).contains("__guard"))
    }

    /// The supervisor's guard (once started).
    fn guard(&self) -> Option<u32> {
        children(self.supervisor())
            .into_iter()
            .find(|&p| cmdline(p).contains("__guard"))
    }

    fn wait_vmm(&self) -> u32 {
        until(SLOW, "the VMM child", || self.vmm())
    }

    fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    fn stdout(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// The processes of this case that are alive (not zombies), with their
    /// states.
    fn alive(&self) -> Vec<(u32, char)> {
        let needle = format!("{MARKER_VAR}={}\0", self.marker).into_bytes();
        let mut found = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(env) = std::fs::read(e.path().join("environ")) else {
                continue;
            };
            if env.windows(needle.len()).any(|w| w == needle.as_slice()) {
                match stat_state(pid) {
                    Some('Z') | Some('X') | None => {}
                    Some(s) => found.push((pid, s)),
                }
            }
        }
        found
    }

    /// Waits for the supervisor's exit.
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let child = &mut self.child;
        until(limit, "the supervisor to exit", || {
            child.try_wait().unwrap()
        })
    }

    /// The checks after every case: exit as `end`, nothing left running or
    /// stopped, no cgroup, the record absent or complete, one line.
    fn finish(mut self, end: End, vmm: Option<u32>) -> String {
        let status = self.wait_exit(SLOW);
        until(SLOW, "every process of the case to end", || {
            let alive = self.alive();
            alive.is_empty().then_some(()).or_else(|| {
                assert!(
                    alive.iter().all(|&(_, s)| s != 'T' && s != 't'),
                    "left stopped: {alive:?}"
                );
                None
            })
        });
        if let Some(vmm) = vmm {
            let name = format!("tickburst-{vmm}");
            until(SLOW, "the cgroup to be removed", || {
                (!CGROUP_ROOTS
                    .iter()
                    .any(|root| Path::new(root).join(&name).exists()))
                .then_some(())
            });
        }
        for h in self.readers.drain(..) {
            h.join().unwrap();
        }
        let stderr = self.stderr();
        match end {
            End::Code(code) => assert_eq!(status.code(), Some(code), "{status:?}: {stderr}"),
            End::Signal(sig) => assert_eq!(status.signal(), Some(sig), "{status:?}: {stderr}"),
        }
        // `check` reports progress on `#` lines; anything else is an error
        // line, and there must be exactly one for a failure.
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.starts_with('#')).collect();
        match end {
            End::Code(0) | End::Signal(_) => assert!(lines.is_empty(), "stderr: {stderr}"),
            End::Code(_) => {
                assert_eq!(lines.len(), 1, "stderr: {stderr}");
                assert!(lines[0].starts_with("tickburst: "), "stderr: {stderr}");
            }
        }
        if let Some(j) = &self.json {
            if j.exists() {
                let r = Record::load(j).unwrap_or_else(|e| panic!("incomplete record: {e}"));
                let _ = r.outcome;
            }
        }
        lines.first().map(|l| l.to_string()).unwrap_or_default()
    }

    fn record_exists(&self) -> bool {
        self.json.as_ref().is_some_and(|j| j.exists())
    }
}

impl Drop for Case {
    /// A failed case leaves nothing running either.
    fn drop(&mut self) {
        for (pid, _) in self.alive() {
            kill(pid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the VMM is held paused by `method` now.
fn paused(method: &str, vmm: u32) -> bool {
    match method {
        "sigstop" => stat_state(vmm) == Some('T'),
        _ => CGROUP_ROOTS.iter().any(|root| {
            let dir = Path::new(root).join(format!("tickburst-{vmm}"));
            std::fs::read_to_string(dir.join("cgroup.events"))
                .is_ok_and(|e| e.lines().any(|l| l == "frozen 1"))
                || std::fs::read_to_string(dir.join("freezer.state"))
                    .is_ok_and(|s| s.trim() == "FROZEN")
        }),
    }
}

/// A run paused 0.5 s in for 20 s by `method`.
fn long_pause(name: &str, method: &str) -> Case {
    Case::start(
        name,
        &[
            "run",
            "--warmup",
            "500ms",
            "--pause",
            "20s",
            "--pause-method",
            method,
        ],
        true,
    )
}

fn wait_paused(case: &Case, method: &str) -> u32 {
    let vmm = case.wait_vmm();
    until(SLOW, "the pause", || paused(method, vmm).then_some(()));
    vmm
}

#[test]
fn supervisor_killed_at_set_up_takes_the_vmm_with_it() {
    let Some(_vm) = kvm_or_skip("supervisor_killed_at_set_up") else {
        return;
    };
    let case = Case::start(
        "setup",
        &["run", "--pause", "500ms", "--pause-method", "sigstop"],
        true,
    );
    // As soon as the VMM is forked: before or right after its exec.
    let vmm = case.wait_vmm();
    kill(case.supervisor(), libc::SIGKILL);
    case.finish(End::Signal(libc::SIGKILL), Some(vmm));
}

#[test]
fn supervisor_killed_mid_pause_takes_the_vmm_with_it() {
    let Some(_vm) = kvm_or_skip("supervisor_killed_mid_pause") else {
        return;
    };
    for method in ["sigstop", "freeze"] {
        let case = long_pause(&format!("sup-pause-{method}"), method);
        let vmm = wait_paused(&case, method);
        kill(case.supervisor(), libc::SIGKILL);
        let killed = Instant::now();
        until(PROMPT, "the VMM to die with its supervisor", || {
            matches!(stat_state(vmm), None | Some('Z')).then_some(())
        });
        assert!(killed.elapsed() < PROMPT);
        // Killed mid-pause: no record (it would be written after the caller
        // saw the supervisor end).
        assert!(
            !case.record_exists(),
            "{method}: record written by an orphan"
        );
        case.finish(End::Signal(libc::SIGKILL), Some(vmm));
    }
}

#[test]
fn supervisor_killed_after_the_resume_takes_the_vmm_with_it() {
    let Some(_vm) = kvm_or_skip("supervisor_killed_after_the_resume") else {
        return;
    };
    // The run would observe 30 s more after the resume.
    let case = Case::start(
        "sup-after",
        &[
            "run",
            "--warmup",
            "500ms",
            "--pause",
            "500ms",
            "--observe",
            "30s",
            "--pause-method",
            "sigstop",
        ],
        true,
    );
    let vmm = wait_paused(&case, "sigstop");
    until(SLOW, "the resume", || {
        (!paused("sigstop", vmm)).then_some(())
    });
    kill(case.supervisor(), libc::SIGKILL);
    let killed = Instant::now();
    until(PROMPT, "the VMM to die with its supervisor", || {
        matches!(stat_state(vmm), None | Some('Z')).then_some(())
    });
    assert!(killed.elapsed() < PROMPT);
    assert!(!case.record_exists(), "record written by an orphan");
    case.finish(End::Signal(libc::SIGKILL), Some(vmm));
}

#[test]
fn supervisor_killed_while_the_record_is_written_leaves_it_absent_or_whole() {
    let Some(_vm) = kvm_or_skip("supervisor_killed_at_record_write") else {
        return;
    };
    let mut case = Case::start(
        "sup-record",
        &[
            "run",
            "--warmup",
            "300ms",
            "--pause",
            "300ms",
            "--observe",
            "1s",
            "--pause-method",
            "freeze",
        ],
        true,
    );
    let vmm = case.wait_vmm();
    // The summary is printed right before the record is written: the VMM is
    // held there (SIGSTOP, unless it has written and exited already) and the
    // supervisor killed. The VMM must die all the same.
    let deadline = Instant::now() + SLOW;
    while !case.stdout().contains("steady: ") {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the summary"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    kill(vmm, libc::SIGSTOP);
    kill(case.supervisor(), libc::SIGKILL);
    // Too late for the kill (the run was over): a success, record whole.
    let end = match case.wait_exit(SLOW).code() {
        Some(0) => End::Code(0),
        _ => End::Signal(libc::SIGKILL),
    };
    eprintln!("record write: {end:?}");
    case.finish(end, Some(vmm));
}

#[test]
fn check_killed_takes_its_vmm_with_it() {
    let Some(_vm) = kvm_or_skip("check_supervisor_killed") else {
        return;
    };
    let case = Case::start("check-sup", &["check", "--pause", "100ms"], false);
    let vmm = case.wait_vmm();
    until(SLOW, "the first case", || {
        case.stderr().contains("# case 1/").then_some(())
    });
    kill(case.supervisor(), libc::SIGKILL);
    let killed = Instant::now();
    until(PROMPT, "the VMM to die with its supervisor", || {
        matches!(stat_state(vmm), None | Some('Z')).then_some(())
    });
    assert!(killed.elapsed() < PROMPT);
    case.finish(End::Signal(libc::SIGKILL), Some(vmm));
}

#[test]
fn a_dead_guard_is_replaced_and_a_double_fault_leaves_nothing_stopped() {
    let Some(_vm) = kvm_or_skip("guard_then_supervisor_killed") else {
        return;
    };
    for method in ["sigstop", "freeze"] {
        let case = long_pause(&format!("guard-{method}"), method);
        let first = until(SLOW, "the guard", || case.guard());
        kill(first, libc::SIGKILL);
        // The supervisor watches its guard: a new one, at once.
        let second = until(PROMPT, "a new guard", || {
            case.guard().filter(|&g| g != first)
        });
        assert!(!cmdline(second).is_empty());
        let vmm = wait_paused(&case, method);
        kill(case.supervisor(), libc::SIGKILL);
        case.finish(End::Signal(libc::SIGKILL), Some(vmm));
    }
}

#[test]
fn a_run_whose_guard_died_completes_with_its_record() {
    let Some(_vm) = kvm_or_skip("guard_killed_run_goes_on") else {
        return;
    };
    let case = Case::start(
        "guard-run",
        &[
            "run",
            "--warmup",
            "1s",
            "--pause",
            "500ms",
            "--observe",
            "1100ms",
            "--pause-method",
            "freeze",
        ],
        true,
    );
    let vmm = case.wait_vmm();
    let first = until(SLOW, "the guard", || case.guard());
    kill(first, libc::SIGKILL);
    until(PROMPT, "a new guard", || {
        case.guard().filter(|&g| g != first)
    });
    case.finish(End::Code(0), Some(vmm));
    let r = Record::load(&temp("guard-run.json")).expect("record");
    assert_eq!(r.outcome, tickburst::names::Outcome::Completed);
    assert_eq!(r.pauses.len(), 1);
}

#[test]
fn a_vmm_killed_mid_pause_is_seen_at_once() {
    let Some(_vm) = kvm_or_skip("vmm_killed_mid_pause") else {
        return;
    };
    for method in ["sigstop", "freeze"] {
        let mut case = long_pause(&format!("vmm-pause-{method}"), method);
        let vmm = wait_paused(&case, method);
        kill(vmm, libc::SIGKILL);
        let killed = Instant::now();
        // The pause had 19 s and more to go.
        case.wait_exit(PROMPT);
        assert!(killed.elapsed() < PROMPT, "{method}");
        let line = case.finish(End::Code(2), Some(vmm));
        assert!(
            line.contains("killed by SIGKILL (signal 9) during a pause"),
            "{method}: {line}"
        );
    }
}

#[test]
fn a_vmm_killed_outside_a_pause_ends_the_run_with_one_line() {
    let Some(_vm) = kvm_or_skip("vmm_killed_outside_a_pause") else {
        return;
    };
    // SIGHUP (not handled by the VMM) in the warm-up, SIGKILL after the
    // resume.
    for (sig, name, after_pause) in [
        (libc::SIGHUP, "SIGHUP", false),
        (libc::SIGKILL, "SIGKILL", true),
    ] {
        let case = Case::start(
            &format!("vmm-{name}"),
            &[
                "run",
                "--warmup",
                "3s",
                "--pause",
                "300ms",
                "--observe",
                "30s",
                "--pause-method",
                "sigstop",
            ],
            true,
        );
        let vmm = case.wait_vmm();
        // The VM is up once the VMM has threads (vCPUs) of its own.
        until(SLOW, "the VM", || {
            (std::fs::read_dir(format!("/proc/{vmm}/task")).map_or(0, |d| d.count()) > 1)
                .then_some(())
        });
        if after_pause {
            until(SLOW, "the pause", || paused("sigstop", vmm).then_some(()));
            until(SLOW, "the resume", || {
                (!paused("sigstop", vmm)).then_some(())
            });
        }
        kill(vmm, sig);
        let line = case.finish(End::Code(2), Some(vmm));
        assert!(line.contains(&format!("killed by {name}")), "{line}");
        assert!(!line.contains("during a pause"), "{line}");
    }
}

#[test]
fn check_with_its_vmm_killed_exits_2_with_one_line() {
    let Some(_vm) = kvm_or_skip("check_vmm_killed") else {
        return;
    };
    let case = Case::start("check-vmm", &["check", "--pause", "100ms"], false);
    let vmm = case.wait_vmm();
    until(SLOW, "the first case", || {
        case.stderr().contains("# case 1/").then_some(())
    });
    kill(vmm, libc::SIGKILL);
    let line = case.finish(End::Code(2), Some(vmm));
    assert!(line.contains("killed by SIGKILL"), "{line}");
}

#[test]
fn an_interrupted_check_shows_the_code_it_exits_with() {
    let Some(_vm) = kvm_or_skip("check_interrupted") else {
        return;
    };
    let case = Case::start("check-int", &["check", "--pause", "2s"], false);
    let vmm = case.wait_vmm();
    until(SLOW, "the first case", || {
        case.stderr().contains("# case 1/").then_some(())
    });
    kill(case.supervisor(), libc::SIGINT);
    let out = case.out.clone();
    let line = case.finish(End::Code(130), Some(vmm));
    assert!(line.contains("interrupted"), "{line}");
    // The verdict line says the code `check` exits with.
    let out = out.lock().unwrap().clone();
    assert!(out.trim_end().ends_with("exit 130"), "{out}");
    assert!(!out.contains("exit 2"), "{out}");
}

#[test]
fn top_pid_of_a_zombie_ends_by_itself() {
    // A zombie at the start: it has exited, a usage error at once.
    let mut z = Command::new("true").spawn().unwrap();
    let zombie = z.id();
    until(SLOW, "the zombie", || {
        (stat_state(zombie) == Some('Z')).then_some(())
    });
    let case = Case::start("top-zombie", &["top", "--pid", &zombie.to_string()], false);
    let line = case.finish(End::Code(2), None);
    assert!(line.contains("has exited"), "{line}");
    let _ = z.wait();
    if !is_root() {
        eprintln!("SKIPPED top --pid of a process turning zombie: top needs root or CAP_PERFMON");
        return;
    }
    // A process that exits while `top` follows it, and is never reaped.
    let mut s = Command::new("sleep").arg("1").spawn().unwrap();
    let case = Case::start(
        "top-later",
        &["top", "--pid", &s.id().to_string(), "--interval", "200ms"],
        false,
    );
    let started = Instant::now();
    case.finish(End::Code(0), None);
    assert!(started.elapsed() < SLOW);
    let _ = s.wait();
}
