//! `--pause-method sigstop|freeze` on real KVM: the whole VMM is stopped by
//! the supervisor, the guest takes no tick while stopped, the rate recovers,
//! and the VMM is resumed however the run ends (a killed supervisor, guard or
//! VMM: `faults_supervision.rs`).

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use tickburst::record::Record;
use tickburst_testkit::{kill, kvm_or_skip, temp, tickburst};

fn spawn(args: &[&str]) -> Child {
    tickburst!()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tickburst")
}

/// The VMM child of a supervisor.
fn vmm_child(supervisor: u32) -> Option<u32> {
    let text =
        std::fs::read_to_string(format!("/proc/{supervisor}/task/{supervisor}/children")).ok()?;
    // The first child is the VMM; the second the guard.
    text.split_whitespace().next()?.parse().ok()
}

fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Cgroup roots where the freezer may create `tickburst-<pid>`.
const CGROUP_ROOTS: [&str; 3] = [
    "/sys/fs/cgroup/unified",
    "/sys/fs/cgroup/freezer",
    "/sys/fs/cgroup",
];

/// A supervised run that is paused 0.5 s in, for 20 s, by `method`.
fn spawn_long_pause(method: &str, json: &std::path::Path) -> Child {
    spawn(&[
        "run",
        "--warmup",
        "500ms",
        "--pause",
        "20s",
        "--pause-method",
        method,
        "--json",
        json.to_str().unwrap(),
    ])
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

fn check_method(method: &str) {
    let Some(_vm) = kvm_or_skip(&format!("pause_method_{method}")) else {
        return;
    };
    let json = temp(&format!("{method}.json"));
    let out = tickburst!()
        .args([
            "run",
            "--warmup",
            "1s",
            "--pause",
            "1s",
            "--observe",
            "1200ms",
            "--interval",
            "250ms",
            "--pause-method",
            method,
            "--vcpus",
            "2",
            "--json",
            json.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let r = Record::load(&json).unwrap();
    assert_eq!(r.config.pause_method.name(), method);
    assert_eq!(r.pauses.len(), 1);
    let p = &r.pauses[0];
    assert_eq!(p.guest_ticks_during, 0, "{p:?}");
    // The whole VMM stops: every vCPU is paused, none ticks, all recover.
    let vcpus = r.vcpus.as_ref().expect("per-vCPU figures");
    assert_eq!(vcpus.paused, [0, 1]);
    for v in &vcpus.list {
        assert!(v.paused, "vCPU {}", v.vcpu);
        assert_eq!(v.pauses[0].guest_ticks_during, 0, "vCPU {}", v.vcpu);
        assert!(
            v.pauses[0].ticks_first_1s >= 800,
            "vCPU {}: {:?}",
            v.vcpu,
            v.pauses[0]
        );
    }
    let len = p.end_ms - p.start_ms;
    assert!((950.0..1100.0).contains(&len), "pause length {len} ms");
    // Rate recovers: the first second after resume has at least 80% of its
    // nominal ticks (an unfixed kvm's storm after the resume held the guest
    // ~100 ms in the emulated-Intel rig: 894), and no window after resume is
    // at half rate or worse.
    assert!(p.ticks_first_1s >= 800, "{p:?}");
    for w in r
        .windows
        .iter()
        .filter(|w| w.t_ms >= p.end_ms && w.duration_ms >= 200.0)
    {
        assert!(w.guest_ticks as f64 >= 0.5 * w.expected_ticks, "{w:?}");
    }
    // No cgroup is left behind.
    for root in CGROUP_ROOTS {
        if let Ok(dir) = std::fs::read_dir(root) {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                assert!(
                    !name.starts_with("tickburst-"),
                    "left behind: {root}/{name}"
                );
            }
        }
    }
}

#[test]
fn sigstop_stops_the_guest_and_the_rate_recovers() {
    check_method("sigstop");
}

#[test]
fn freeze_stops_the_guest_and_the_rate_recovers() {
    check_method("freeze");
}

#[test]
fn interrupting_the_supervisor_mid_pause_resumes_the_vmm() {
    let Some(_vm) = kvm_or_skip("interrupting_the_supervisor_mid_pause_resumes_the_vmm") else {
        return;
    };
    let json = temp("interrupted.json");
    let mut sup = spawn_long_pause("sigstop", &json);
    // Until the VMM is stopped (set-up can take seconds on a slow host, e.g.
    // the emulated-Intel rig), then a little into the pause.
    let deadline = Instant::now() + Duration::from_secs(15);
    let vmm = loop {
        let vmm = vmm_child(sup.id());
        if vmm.and_then(state) == Some('T') || Instant::now() > deadline {
            break vmm.expect("VMM child");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(state(vmm), Some('T'), "VMM should be stopped mid-pause");
    kill(sup.id(), libc::SIGINT);
    let code = wait_with_timeout(&mut sup, Duration::from_secs(5));
    assert_eq!(code, Some(130), "interrupted run exits 130");
    let r = Record::load(&json).expect("partial record");
    assert_eq!(r.outcome, tickburst::names::Outcome::Interrupted);
    assert_eq!(r.pauses.len(), 1);
    assert!(r.pauses[0].end_ms - r.pauses[0].start_ms < 5_000.0);
}
