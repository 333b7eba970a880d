//! `tickburst top` on real KVM: a second tickburst VMM started by the test
//! is found, its rate, a `kill -STOP` / `kill -CONT` of it, and nothing of it
//! after it exited; two VMMs at once, each with its own rate; a QEMU VM
//! running the project's own periodic-timer guest (where QEMU is
//! installed); the paths without permission or tracepoints.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use tickburst_analysis::top::{Backend, TopRow};
use tickburst_testkit::{is_root, kill, kvm_or_skip, temp, tickburst};

/// Rows of the NDJSON file, every line checked.
fn rows(path: &std::path::Path) -> Vec<TopRow> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| TopRow::from_ndjson(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Starts `tickburst run ARGS` and returns once its guest is ready (the
/// `# guest ready` line: on a slow host, the emulated-Intel rig, start-up
/// takes seconds); the rest of its output is drained on a thread.
fn ready_vmm(args: &[&str]) -> (Child, u32) {
    ready("run", args)
}

/// [`ready_vmm`] for any VMM command (`run`, `watch`).
fn ready(command: &str, args: &[&str]) -> (Child, u32) {
    use std::io::{BufRead, BufReader};
    let mut vmm = tickburst!()
        .arg(command)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(vmm.stdout.take().unwrap()).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("guest ready"));
    assert!(ready, "the VMM reported its guest ready");
    std::thread::spawn(move || lines.for_each(drop));
    let pid = vmm.id();
    (vmm, pid)
}

/// Starts `top ARGS` with its stdout read on a thread; returns it, the
/// lines as they come, and the time it printed its first line (its epoch:
/// its `t_s` count from there).
fn started_top(args: &[&str]) -> (Child, std::sync::mpsc::Receiver<String>, Instant) {
    use std::io::{BufRead, BufReader};
    let mut top = tickburst!()
        .arg("top")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = top.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("top printed its first line");
    assert!(first.contains("tickburst top: every"), "{first}");
    let epoch = Instant::now();
    // Put the line back in front for the caller's text.
    let (tx2, rx2) = std::sync::mpsc::channel();
    tx2.send(first).unwrap();
    std::thread::spawn(move || {
        for line in rx {
            if tx2.send(line).is_err() {
                break;
            }
        }
    });
    (top, rx2, epoch)
}

/// Waits until `child` exits, at most `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// What `top` showed of one VM around a `kill -STOP` / `kill -CONT` of it.
struct AroundStop {
    /// top's table.
    text: String,
    /// The VM's pid.
    pid: u32,
    /// Every NDJSON row of the VM.
    ours: Vec<TopRow>,
    /// Rows wholly before the stop, inside it and after the continue.
    before: Vec<TopRow>,
    during: Vec<TopRow>,
    after: Vec<TopRow>,
    /// When the VM had exited, s since top was spawned.
    exited_at: f64,
}

/// Starts `top`, then a VM (`start` gives it and its pid), stops the VM
/// for 2 s after 3 s of running, continues it, `end`s it (top's clock
/// still running), and sorts top's rows of it. top starts first: it sees
/// the VM appear and learns its timer when armed. Times are seconds since
/// top printed its first line (its epoch, whatever its start-up took: seconds
/// in the emulated-Intel rig), and each class keeps only the rows wholly
/// inside its span.
fn around_a_stop<V>(
    name: &str,
    start: impl FnOnce() -> (V, u32),
    end: impl FnOnce(V),
) -> AroundStop {
    // top's first line comes right after its epoch; reading it through a
    // pipe is late by a little (at most this, s).
    const SLACK: f64 = 0.1;
    let json = temp(name);
    let json_arg = json.to_string_lossy().into_owned();
    // --irq: the stop shows in the interrupts the guest gets.
    let (top, lines, t0) = started_top(&["--interval", "500ms", "--irq", "--json", &json_arg]);
    std::thread::sleep(Duration::from_millis(700));
    let (vm, pid) = start();
    let vm_at = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(3000));
    kill(pid, libc::SIGSTOP);
    let stop_at = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(2000));
    kill(pid, libc::SIGCONT);
    let cont_at = t0.elapsed().as_secs_f64();
    end(vm);
    let exited_at = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(1500));
    kill(top.id(), libc::SIGINT);
    let out = top.wait_with_output().unwrap();
    let text: String = lines.iter().map(|l| l + "\n").collect();
    assert_eq!(
        out.status.code(),
        Some(0),
        "Ctrl-C ends top cleanly: {text}"
    );
    let ours: Vec<TopRow> = rows(&json).into_iter().filter(|r| r.pid == pid).collect();
    std::fs::remove_file(&json).ok();
    assert!(!ours.is_empty(), "top found pid {pid}: {text}");
    let inside = |from: f64, to: f64| -> Vec<TopRow> {
        ours.iter()
            // Row [t, t + i] of top's clock is [t - d, t + i - d] of ours,
            // d in [0, SLACK]: wholly inside for every such d.
            .filter(|r| r.t_s - SLACK >= from && r.t_s + r.interval_s <= to)
            .cloned()
            .collect()
    };
    let (before, during, after) = (
        inside(vm_at + 0.2, stop_at),
        inside(stop_at, cont_at),
        inside(cont_at + 0.2, exited_at),
    );
    assert!(
        before.len() >= 2 && !during.is_empty() && after.len() >= 2,
        "{} before, {} during, {} after: {text}",
        before.len(),
        during.len(),
        after.len()
    );
    println!("pid {pid}: STOP at {stop_at:.2} s, CONT at {cont_at:.2} s, gone at {exited_at:.2} s\n{text}");
    AroundStop {
        text,
        pid,
        ours,
        before,
        during,
        after,
        exited_at,
    }
}

impl AroundStop {
    /// A 1 ms periodic timer running: ~1000 timer expiries/s on the host
    /// and ~1000 interrupts/s to the guest before and after the stop; the
    /// guest gets none while stopped; nothing of the VM once it exited.
    fn assert_ticks_stops_and_is_gone(&self) {
        let text = &self.text;
        for r in self.before.iter().chain(&self.after) {
            let host = r.sw_per_s.unwrap_or(0.0) + r.hv_per_s.unwrap_or(0.0);
            assert!(
                (700.0..1300.0).contains(&host),
                "~1000/s running: {r:?}\n{text}"
            );
            let irq = r.irq_per_s.unwrap_or(0.0);
            assert!(
                (700.0..1300.0).contains(&irq),
                "guest takes ~1000/s: {r:?}\n{text}"
            );
        }
        for r in &self.during {
            assert!(
                r.irq_per_s.is_some_and(|v| v < 20.0),
                "stopped: ~0/s: {r:?}\n{text}"
            );
        }
        let last = self
            .ours
            .iter()
            .map(|r| r.t_s + r.interval_s)
            .fold(0.0, f64::max);
        assert!(
            last <= self.exited_at + 0.1,
            "last row of pid {} ends at {last:.2} s, exited at {:.2} s: {text}",
            self.pid,
            self.exited_at
        );
    }
}

#[test]
fn top_sees_a_second_vmm_its_rate_a_stop_and_nothing_after_it_exited() {
    let Some(_vm) = kvm_or_skip("top_sees_a_second_vmm") else {
        return;
    };
    if !is_root() {
        eprintln!("SKIPPED top_sees_a_second_vmm: top needs root or CAP_PERFMON");
        return;
    }
    let seen = around_a_stop(
        "vmm.ndjson",
        || {
            ready_vmm(&[
                "--period",
                "1ms",
                "--cycles",
                "0",
                "--warmup",
                "8s",
                "--host-probes",
                "off",
            ])
        },
        |mut vmm| {
            let status = wait_exit(&mut vmm, Duration::from_secs(30)).expect("VMM ends");
            assert!(status.success());
        },
    );
    seen.assert_ticks_stops_and_is_gone();
    let (text, pid) = (&seen.text, seen.pid);
    assert!(
        seen.ours
            .iter()
            .all(|r| r.vcpu == 0 && r.name == "tickburst"),
        "{text}"
    );
    for r in seen.before.iter().chain(&seen.after) {
        assert!(r.longest_run.is_some_and(|n| (1..=2).contains(&n)), "{r:?}");
    }
    // What the back end does is the host's: without an hv timer there is
    // never an hv figure (the reason once), and the sw timer keeps firing
    // at the period through the stop (no hv timer to freeze).
    let hv_host = tickburst::host::hv_timer::hv_timer_possible(
        tickburst::host::facts::kvm_backend().as_deref(),
    )
    .is_ok();
    if !hv_host {
        assert_eq!(
            text.matches("# hv/s n/a: ").count(),
            1,
            "the hv reason, once: {text}"
        );
        assert!(
            seen.ours.iter().all(|r| r.hv_per_s.is_none()),
            "no hv timer here: never an hv figure"
        );
        for r in seen.before.iter().chain(&seen.after) {
            assert_eq!(r.backend, Backend::Sw, "{r:?}");
        }
        for r in &seen.during {
            let sw = r.sw_per_s.unwrap_or(0.0);
            assert!(
                (700.0..1300.0).contains(&sw),
                "sw timer runs on: {r:?}\n{text}"
            );
        }
    }
    assert!(
        text.contains(&format!("VM pid {pid} (tickburst) gone")),
        "{text}"
    );
}

/// The bug as `top` sees it (CVE-2025-71104): a VMM whose guest spins, so
/// its periodic 1 ms timer stays on the hv timer where the host has one, is
/// stopped for 2 s and continued. On a fixed kernel `top` shows the hv timer
/// back at ~1000/s after the continue, with no run of more than a few
/// callbacks in one interrupt and no flag. On an unfixed one the timer falls
/// back to sw and stays (at the stop, or earlier: on the emulator's one CPU
/// `top`'s own work stalls the vCPU for more than a period), so the hv
/// column stays at 0 and this test fails naming the CVE (in the
/// emulated-Intel rig it is expected to fail on the unfixed kvm only).
/// Where no hv timer can run the test checks only that nothing is flagged
/// and says the hv part was not exercised.
///
/// What `top` cannot show here: on the unfixed kvm in the rig the timer is
/// on sw before `top`'s first line of the VM (the spinning vCPU is found at
/// once by its guest time, but the emulator's one CPU has stalled it for
/// more than a period at start-up), so `top` never saw it on hv: no
/// `fell-back` flag, and the storm came before its hrtimer was learned.
#[test]
fn top_shows_the_hv_timer_back_and_no_flag_after_a_stop() {
    let Some(_vm) = kvm_or_skip("top_shows_the_hv_timer_back_after_a_stop") else {
        return;
    };
    if !is_root() {
        eprintln!(
            "SKIPPED top_shows_the_hv_timer_back_after_a_stop: top needs root or CAP_PERFMON"
        );
        return;
    }
    let hv_host = tickburst::host::hv_timer::hv_timer_possible(
        tickburst::host::facts::kvm_backend().as_deref(),
    )
    .is_ok();
    // Where an hv timer runs, top counts hv expiries on one kprobe event of
    // its own: a dead tickburst's event is planted first (the pid of a
    // child that has exited), top must remove it at start, define its own
    // while it runs and remove that when it ends.
    let ours = |listing: &str| -> Vec<String> {
        listing
            .lines()
            .filter(|l| l.contains("tickburst/hv_expired_"))
            .map(String::from)
            .collect()
    };
    let dead = {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        c.wait().unwrap();
        c.id()
    };
    let planted = format!("p:tickburst/hv_expired_{dead}_0 kvm_lapic_expired_hv_timer");
    if hv_host {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(KPROBE_EVENTS)
            .and_then(|mut f| f.write_all(format!("{planted}\n").as_bytes()))
            .unwrap_or_else(|e| panic!("planting {planted} in {KPROBE_EVENTS}: {e}"));
    }
    let mut while_top_ran = None;
    let seen = around_a_stop(
        "flags.ndjson",
        || {
            ready_vmm(&[
                "--idle",
                "spin",
                "--period",
                "1ms",
                "--cycles",
                "0",
                "--warmup",
                "9s",
                "--host-probes",
                "off",
            ])
        },
        |mut vmm| {
            while_top_ran = std::fs::read_to_string(KPROBE_EVENTS).ok();
            let status = wait_exit(&mut vmm, Duration::from_secs(30)).expect("VMM ends");
            assert!(status.success());
        },
    );
    let text = &seen.text;
    let after_top = std::fs::read_to_string(KPROBE_EVENTS).ok();
    if hv_host {
        let during = ours(while_top_ran.as_deref().unwrap_or_default());
        assert!(
            during.len() == 1 && !during[0].contains(&format!("_{dead}_")),
            "while top ran: its own kprobe event only, the dead one's removed: {during:?}\n{text}"
        );
        assert!(
            text.contains("hv/s counted on kprobe event tickburst/hv_expired_")
                && text.contains(&format!(
                    "hv_expired_{dead}_0 of a tickburst that is gone: removed"
                )),
            "{text}"
        );
        let after = ours(after_top.as_deref().unwrap_or_default());
        assert!(after.is_empty(), "left after top ended: {after:?}");
    } else {
        // Nothing defined where no hv timer can run.
        assert!(!text.contains("kprobe event"), "{text}");
        if let Some(after) = after_top {
            assert!(ours(&after).is_empty(), "{after}");
        }
    }
    let cve = "CVE-2025-71104 (KVM commit 18ab3fc8e880 missing?)";
    if hv_host {
        // A spinning vCPU thread is found by the kernel's guest-time
        // accounting, before the stop (kvm_pvm has none: not asserted there).
        for r in &seen.before {
            assert!(
                r.tid.is_some(),
                "spinning vCPU thread not found: {r:?}\n{text}"
            );
        }
        for r in &seen.after {
            let hv = r.hv_per_s.unwrap_or(0.0);
            assert!(
                (700.0..1300.0).contains(&hv),
                "{cve}: after a 2 s stop of a VM whose periodic timer ran on the hv \
                 timer, top shows it on {:?} at {hv}/s hv, {:?}/s sw: it fell back to sw: \
                 {r:?}\n{text}",
                r.backend,
                r.sw_per_s
            );
        }
        for r in &seen.after {
            // (After the CVE check: an unfixed kernel fails that first.)
            // Measured where an hv timer runs; a spinning vCPU's timer
            // stays on hv (its re-arms, one per expiry, are not counted).
            assert!(
                r.left_hv.is_some_and(|n| n <= 2),
                "left hv {:?} times: {r:?}\n{text}",
                r.left_hv
            );
        }
    } else {
        println!("top_shows_the_hv_timer_back: hv part not exercised (no hv timer on this host)");
    }
    let flagged: Vec<&TopRow> = seen
        .ours
        .iter()
        .filter(|r| {
            !r.flags.iter().all(|f| f == "lost" || f == "learning")
                || r.fell_back_at_s.is_some()
                || r.longest_run.is_some_and(|n| n > 3)
        })
        .collect();
    assert!(
        flagged.is_empty(),
        "{cve}: after a 2 s stop top flagged a long run of callbacks in one interrupt or \
         a fall-back to sw: {flagged:?}\n{text}"
    );
}

/// Where kprobe events are defined (tracefs at its usual place).
const KPROBE_EVENTS: &str = "/sys/kernel/tracing/kprobe_events";

/// The median of `v` (not empty).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn top_sees_two_vmms_at_once_each_at_its_own_rate() {
    // The one VM lock for the whole test: both VMs are one test set.
    let Some(_vm) = kvm_or_skip("top_sees_two_vmms_at_once") else {
        return;
    };
    if !is_root() {
        eprintln!("SKIPPED top_sees_two_vmms_at_once: top needs root or CAP_PERFMON");
        return;
    }
    // top's first line comes right after its epoch (late by at most this, s).
    const SLACK: f64 = 0.1;
    let json = temp("two.ndjson");
    let json_arg = json.to_string_lossy().into_owned();
    // top first: it sees each VM appear and learns its timer when armed.
    let (mut top, lines, t0) = started_top(&[
        "--interval",
        "500ms",
        "--duration",
        "14s",
        "--json",
        &json_arg,
    ]);
    std::thread::sleep(Duration::from_millis(700));
    // (period, its nominal rate /s, the VMM, its pid, ready at, gone at)
    let mut vms: Vec<(&str, f64, Child, u32, f64, f64)> = [("1ms", 1000.0), ("4ms", 250.0)]
        .into_iter()
        .map(|(period, nominal)| {
            let args = [
                "--period",
                period,
                "--duration",
                "8s",
                "--host-probes",
                "off",
            ];
            let (vmm, pid) = ready("watch", &args);
            (period, nominal, vmm, pid, t0.elapsed().as_secs_f64(), 0.0)
        })
        .collect();
    while vms.iter().any(|v| v.5 == 0.0) {
        assert!(t0.elapsed() < Duration::from_secs(60), "the VMMs end");
        for v in vms.iter_mut().filter(|v| v.5 == 0.0) {
            if let Some(status) = v.2.try_wait().unwrap() {
                v.5 = t0.elapsed().as_secs_f64();
                assert!(status.success(), "watch --period {} ends: {status}", v.0);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = wait_exit(&mut top, Duration::from_secs(30));
    let text: String = lines.iter().map(|l| l + "\n").collect();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "--duration ends top: {text}"
    );
    let all = rows(&json);
    std::fs::remove_file(&json).ok();
    // Root may read every process's fds: no process is left uninspected.
    assert!(!text.contains("not inspected"), "{text}");
    let mut medians = Vec::new();
    for (period, nominal, _, pid, ready_at, gone_at) in &vms {
        assert!(
            text.contains(&format!("VM pid {pid} (tickburst) at t=")),
            "{text}"
        );
        // The rows wholly inside the VM's steady span (top's clock is ours
        // less up to SLACK): host timer callbacks (sw, or hv where there is
        // an hv timer).
        let steady: Vec<f64> = all
            .iter()
            .filter(|r| r.pid == *pid)
            .filter(|r| r.t_s - SLACK >= ready_at + 0.5 && r.t_s + r.interval_s <= *gone_at)
            .map(|r| r.sw_per_s.unwrap_or(0.0) + r.hv_per_s.unwrap_or(0.0))
            .collect();
        assert!(steady.len() >= 6, "pid {pid}: {steady:?}\n{text}");
        let m = median(steady.clone());
        println!("--period {period} (pid {pid}): median {m:.1}/s of {steady:?}");
        // Not 0, not half, and not the sum of both VMs' rates.
        assert!(
            (0.65 * nominal..=1.1 * nominal).contains(&m),
            "--period {period}: median {m:.1}/s, nominal {nominal}/s: {steady:?}\n{text}"
        );
        medians.push(m);
    }
    // Neither count holds the other's: the 4 ms VM is far below the 1 ms
    // VM's own rate, let alone 1000 + 250.
    assert!(medians[1] < 0.5 * medians[0], "{medians:?}\n{text}");
    println!("{text}");
}

#[test]
fn top_names_a_vm_by_pid_and_folds_it_per_vm() {
    let Some(_vm) = kvm_or_skip("top_names_a_vm_by_pid") else {
        return;
    };
    if !is_root() {
        eprintln!("SKIPPED top_names_a_vm_by_pid: top needs root or CAP_PERFMON");
        return;
    }
    // A long warm-up, ended by Ctrl-C once top has shown it: top's start-up
    // takes seconds on a slow host (the emulated-Intel rig).
    let (vmm, pid) = ready_vmm(&[
        "--period",
        "1ms",
        "--cycles",
        "0",
        "--warmup",
        "60s",
        "--host-probes",
        "off",
        "--vcpus",
        "2",
    ]);
    // Reaped as soon as it exits (a zombie would still be a process).
    let reaper = std::thread::spawn(move || {
        let mut vmm = vmm;
        vmm.wait()
    });
    let svg = temp("vm.svg");
    let svg_arg = svg.to_string_lossy().into_owned();
    let pid_arg = pid.to_string();
    let (mut top, lines, _) = started_top(&[
        "--per-vm",
        "--interval",
        "500ms",
        "--pid",
        &pid_arg,
        "--plot",
        &svg_arg,
    ]);
    std::thread::sleep(Duration::from_millis(2000));
    kill(pid, libc::SIGINT);
    let status = wait_exit(&mut top, Duration::from_secs(30));
    let text: String = lines.iter().map(|l| l + "\n").collect();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "ends when the VMM is gone: {text}"
    );
    assert!(
        text.contains("every process named by --pid has exited"),
        "{text}"
    );
    assert!(text.contains("2 vCPU(s)"), "{text}");
    assert!(text.contains(" all2 "), "one line per VM: {text}");
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(
        picture.contains("tickburst top: LAPIC timer per vCPU"),
        "{picture}"
    );
    std::fs::remove_file(&svg).ok();
    // Ctrl-C ends a run cleanly: exit 130.
    assert_eq!(reaper.join().unwrap().unwrap().code(), Some(130));
}

/// One line on stderr, exit 2, nothing on stdout.
fn assert_one_line_exit_2(out: &std::process::Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(needle), "{err}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn without_permission_one_line_and_exit_2() {
    // Simulated: every perf open fails as unprivileged.
    let out = tickburst!()
        .args(["top", "--duration", "1s"])
        .env("TICKBURST_SIMULATE_NO_PERF", "1")
        .output()
        .unwrap();
    if is_root() {
        assert_one_line_exit_2(&out, "needs root or CAP_PERFMON");
    }
    // Really unprivileged: the binary run as nobody (std drops the
    // supplementary groups when it changes the uid of a root process).
    if is_root() {
        use std::os::unix::process::CommandExt;
        match tickburst!()
            .args(["top", "--duration", "1s"])
            .uid(65534)
            .gid(65534)
            .output()
        {
            Ok(out) => assert_one_line_exit_2(&out, "no permission"),
            // The binary is not reachable for nobody (a private tree).
            Err(e) => eprintln!("SKIPPED unprivileged top: {e}"),
        }
    }
}

#[test]
fn missing_tracepoints_say_n_a_with_the_reason_once_or_exit_2() {
    if !is_root() {
        eprintln!("SKIPPED missing_tracepoints: needs root for perf");
        return;
    }
    let out = tickburst!()
        .args(["top", "--interval", "200ms", "--duration", "700ms", "--irq"])
        .env(
            "TICKBURST_SIMULATE_MISSING_TRACEPOINTS",
            "kvm/kvm_apic_accept_irq,kvm/kvm_hv_timer_state",
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let hv_host = tickburst::host::hv_timer::hv_timer_possible(
        tickburst::host::facts::kvm_backend().as_deref(),
    );
    // left-hv is opened only where an hv timer can run (elsewhere its note
    // says so).
    let left_hv = if hv_host.is_ok() {
        "# left-hv n/a: tracepoint"
    } else {
        "# left-hv n/a: hv timer not available"
    };
    for note in ["# irq/s n/a: tracepoint", left_hv] {
        assert_eq!(text.matches(note).count(), 1, "{note} once: {text}");
    }
    // Without --irq the interrupts are not counted, and that is said once.
    let out = tickburst!()
        .args(["top", "--interval", "200ms", "--duration", "700ms"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let off = "# irq/s n/a: not counted (top --irq counts it";
    assert_eq!(text.matches(off).count(), 1, "{off} once: {text}");
    // Without the timer tracepoints and without an hv timer nothing can be
    // measured: exit 2 naming both reasons (an hv host still runs).
    let out = tickburst!()
        .args(["top", "--duration", "1s"])
        .env(
            "TICKBURST_SIMULATE_MISSING_TRACEPOINTS",
            "timer/hrtimer_start",
        )
        .output()
        .unwrap();
    if hv_host.is_err() {
        assert_one_line_exit_2(&out, "timer/hrtimer_start not found (simulated");
    }
}

#[test]
fn bad_arguments_exit_2() {
    for args in [
        vec!["top", "--interval", "1ms"],
        vec!["top", "--pid", "4294967295"],
        vec!["top", "--duration", "soon"],
    ] {
        let out = tickburst!().args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

/// Where `qemu-system-x86_64` is installed (`.ci/run` installs it): `top`
/// finds a QEMU VM running the project's own periodic-timer guest, its
/// rate, and a `kill -STOP` / `kill -CONT` of QEMU.
#[test]
fn top_sees_a_qemu_vm_its_rate_and_a_stop() {
    use tickburst_testkit::qemu::{qemu_or_skip, Firmware, QemuGuest};
    let Some(qemu) = qemu_or_skip("top_sees_a_qemu_vm") else {
        return;
    };
    let Some(_vm) = kvm_or_skip("top_sees_a_qemu_vm") else {
        return;
    };
    if !is_root() {
        eprintln!("SKIPPED top_sees_a_qemu_vm: top needs root or CAP_PERFMON");
        return;
    }
    let seen = around_a_stop(
        "qemu.ndjson",
        || {
            let vm =
                QemuGuest::start(&qemu, &Firmware::default_fast()).expect("QEMU boots the guest");
            let pid = vm.pid();
            (vm, pid)
        },
        |vm| {
            std::thread::sleep(Duration::from_millis(2500));
            drop(vm);
        },
    );
    seen.assert_ticks_stops_and_is_gone();
    assert!(
        seen.ours.iter().all(|r| r.vcpu == 0),
        "one vCPU: {}",
        seen.text
    );
}
