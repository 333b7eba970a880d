//! The `tickburst` binary as a user runs it: exit codes, one-line errors,
//! Ctrl-C, the JSON record.

use std::io::{BufRead, BufReader, Read};
use std::process::{Output, Stdio};
use std::time::Duration;
use tickburst_testkit::{is_root, kvm_or_skip, output, tickburst};

fn no_panic_stderr(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(
        !stderr.contains("RUST_BACKTRACE"),
        "backtrace hint: {stderr}"
    );
    stderr
}

#[test]
fn bad_flags_exit_2_with_the_allowed_range() {
    for (args, needle) in [
        (&["run", "--period", "0ms"][..], "allowed"),
        (&["run", "--period", "5s"][..], "allowed"),
        (&["run", "--pause", "-1s"][..], "--pause"),
        (&["run", "--warmup", "soon"][..], "--warmup"),
        (&["run", "--interval", "1us"][..], "allowed 10ms to 60s"),
        (&["run", "--apic", "x3apic"][..], "invalid value"),
        (&["run", "--vcpus", "0"][..], "allowed 1 to 64"),
        (&["watch", "--vcpus", "65"][..], "allowed 1 to 64"),
        (
            &["run", "--vcpus", "2", "--pause-vcpus", "2"][..],
            "vCPU 2 does not exist",
        ),
        (&["sweep", "--pause-vcpus", "one"][..], "not a vCPU index"),
        (
            &[
                "run",
                "--vcpus",
                "2",
                "--pause-vcpus",
                "1",
                "--pause-method",
                "freeze",
            ][..],
            "stops the whole VMM",
        ),
        // A record holds 500 000 report windows (at most 7 days).
        (
            &["watch", "--interval", "10ms", "--duration", "2h"][..],
            "allowed 1ms to 5000s (a record holds 500000 report windows",
        ),
        (
            &["run", "--warmup", "1h", "--cycles", "1000", "--pause", "1h"][..],
            "the run would last 3606600s: a record holds",
        ),
        (
            &["sweep", "--interval", "10ms", "--pauses", "1h,1h"][..],
            "at most 5000s at --interval 10ms",
        ),
        (&["run", "--bogus"][..], "unexpected argument"),
        (&["frobnicate"][..], "unrecognized subcommand"),
    ] {
        let out = output(&mut tickburst!(args));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = no_panic_stderr(&out);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
    }
    for args in [
        &["run", "--period", "0ms"][..],
        &["run", "--pause", "-1s"][..],
        &["run", "--vcpus", "2", "--pause-vcpus", "0,0"][..],
    ] {
        let e = no_panic_stderr(&output(&mut tickburst!(args)));
        assert_eq!(e.trim_end().lines().count(), 1, "one line: {e}");
    }
}

#[test]
fn help_exits_0() {
    let out = output(&mut tickburst!(&["run", "--help"]));
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--period"));
}

#[test]
fn missing_kvm_exits_125_and_says_how_to_fix() {
    let out = output(tickburst!(&["run"]).env("TICKBURST_KVM_DEVICE", "/nonexistent/kvm"));
    assert_eq!(out.status.code(), Some(125));
    let err = no_panic_stderr(&out);
    assert!(
        err.contains("/nonexistent/kvm does not exist") && err.contains("modprobe"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1);
}

#[test]
fn unusable_kvm_node_exits_125() {
    // Not a KVM device at all (a directory cannot be opened read-write).
    let out = output(tickburst!(&["run"]).env("TICKBURST_KVM_DEVICE", "/"));
    assert_eq!(out.status.code(), Some(125), "{}", no_panic_stderr(&out));
}

#[test]
fn run_writes_the_json_record() {
    let Some(_vm) = kvm_or_skip("run_writes_the_json_record") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("tickburst-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("run.json");
    let out = output(&mut tickburst!(&[
        "run",
        "--warmup",
        "500ms",
        "--pause",
        "300ms",
        "--observe",
        "500ms",
        "--interval",
        "100ms",
        "--json",
        json.to_str().unwrap(),
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", no_panic_stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("PAUSED"), "{stdout}");
    assert!(stdout.contains("burst ratio"), "{stdout}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for key in [
        "config",
        "host",
        "timing",
        "steady",
        "lost_ticks",
        "windows",
        "pauses",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    let setup = v["timing"]["setup_us"].as_f64().unwrap();
    assert!(setup > 0.0);
    assert!(v["timing"]["first_tick_us"].as_f64().unwrap() > setup);
    assert!(v["steady"]["rate_hz"].as_f64().unwrap() > 500.0);
    assert!(v["host"]["kernel_release"].as_str().is_some());
    let w = &v["windows"][0];
    for key in ["t_ms", "guest_ticks", "expected_ticks", "paused"] {
        assert!(w.get(key).is_some(), "window missing {key}");
    }
    let p = &v["pauses"][0];
    for key in [
        "start_ms",
        "end_ms",
        "guest_ticks_during",
        "missed_ticks",
        "ticks_first_100ms",
        "ticks_first_1s",
        "burst_ratio",
        "peak_rate_ratio",
        "catch_up_ms",
    ] {
        assert!(p.get(key).is_some(), "pause missing {key}");
    }
    assert_eq!(v["outcome"], "completed");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ctrl_c_during_a_pause_resumes_and_writes_the_partial_record() {
    let Some(_vm) = kvm_or_skip("ctrl_c_during_a_pause_resumes_and_writes_the_partial_record")
    else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("tickburst-sigint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("partial.json");
    let mut child = tickburst!(&[
        "run",
        "--warmup",
        "500ms",
        "--pause",
        "30s",
        "--interval",
        "100ms",
        "--json",
        json.to_str().unwrap(),
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Until the pause has begun (set-up can take seconds on a slow host, e.g.
    // the emulated-Intel rig), then well into it.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("# pause 1") {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(1000));
    // SAFETY: kill() on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let start = std::time::Instant::now();
    for line in lines {
        seen.push_str(&line.unwrap());
        seen.push('\n');
    }
    let mut stderr = Vec::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    let out = Output {
        status,
        stdout: seen.into_bytes(),
        stderr,
    };
    assert!(start.elapsed() < Duration::from_secs(5), "stopped promptly");
    assert_eq!(out.status.code(), Some(130), "{}", no_panic_stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("outcome: interrupted"), "{stdout}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["outcome"], "interrupted");
    let p = &v["pauses"][0];
    let len = p["end_ms"].as_f64().unwrap() - p["start_ms"].as_f64().unwrap();
    assert!(
        (500.0..5000.0).contains(&len),
        "pause closed at the interrupt: {len} ms"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn without_perf_permission_auto_runs_guest_only_and_on_exits_2() {
    let Some(_vm) = kvm_or_skip("without_perf_permission_auto_runs_guest_only_and_on_exits_2")
    else {
        return;
    };
    let base = [
        "run",
        "--warmup",
        "300ms",
        "--pause",
        "200ms",
        "--observe",
        "300ms",
        "--interval",
        "100ms",
    ];
    let mut auto = tickburst!(&base);
    auto.env("TICKBURST_SIMULATE_NO_PERF", "1");
    let out = output(&mut auto);
    assert_eq!(out.status.code(), Some(0), "{}", no_panic_stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let note = stdout
        .lines()
        .find(|l| l.starts_with("# host probes missing"))
        .expect("one line naming what is missing");
    assert!(
        note.contains("sw_timer") && note.contains("perf_event_open denied"),
        "{note}"
    );
    // KVM stats need no perf: they are not among the missing probes, and
    // the irq_inj column has a count (not n/a) on every line, guest ticks
    // having been injected.
    assert!(
        !note.contains("kvm_stats"),
        "KVM stats need no perf: {note}"
    );
    let header = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some("t_s"))
        .expect("table header");
    let column = header
        .split_whitespace()
        .position(|c| c == "irq_inj")
        .unwrap_or_else(|| panic!("no irq_inj column: {header}"));
    let injected: Vec<u64> = stdout
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.parse::<f64>().is_ok())
        })
        .map(|l| {
            let cell = l.split_whitespace().nth(column).unwrap_or("");
            cell.parse()
                .unwrap_or_else(|_| panic!("irq_inj {cell:?} is not a count: {l}"))
        })
        .collect();
    assert!(!injected.is_empty(), "no table lines: {stdout}");
    assert!(
        injected.iter().sum::<u64>() > 0,
        "no injections counted: {stdout}"
    );

    let mut on = tickburst!(&[&base[..], &["--host-probes", "on"]].concat());
    on.env("TICKBURST_SIMULATE_NO_PERF", "1");
    let out = output(&mut on);
    assert_eq!(out.status.code(), Some(2));
    let err = no_panic_stderr(&out);
    assert!(
        err.contains("--host-probes on") && err.contains("denied"),
        "{err}"
    );
}

#[test]
fn doctor_json_names_the_kvm_back_end() {
    let out = output(&mut tickburst!(&["doctor", "--json"]));
    assert_eq!(out.status.code(), Some(0), "{}", no_panic_stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("doctor --json parses");
    let items = v["items"].as_array().unwrap();
    assert!(items.iter().any(|i| i["name"] == "hv timer"));
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        assert_eq!(v["host"]["kvm_backend"], "kvm_pvm");
        let hv = items.iter().find(|i| i["name"] == "hv timer").unwrap();
        assert_eq!(hv["ok"], false);
        assert!(hv["consequence"]
            .as_str()
            .unwrap()
            .contains("cannot occur here"));
    }
    let table = output(&mut tickburst!(&["doctor"]));
    assert!(String::from_utf8_lossy(&table.stdout).contains("apic_timer_fn"));
}

/// Whether a tracefs mount is in this mount table (`/proc/<pid>/mountinfo`).
fn has_tracefs_mount(mountinfo: &str) -> bool {
    mountinfo.lines().any(|l| {
        l.split(" - ")
            .nth(1)
            .is_some_and(|t| t.starts_with("tracefs "))
    })
}

/// Where tracefs is not mounted, a tickburst that needs it mounts it in a
/// mount namespace of its own: the host's mount table never changes, even
/// while it runs, so two tickburst processes (a `top` and a `run`) cannot
/// unmount tracefs under each other.
#[test]
fn tracefs_is_mounted_privately_never_on_the_host() {
    let mine = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = is_root();
    if has_tracefs_mount(&mine) || !root {
        println!("SKIPPED tracefs_is_mounted_privately: tracefs is mounted on this host already, or not root");
        return;
    }
    let mut top = tickburst!(&["top", "--interval", "200ms", "--duration", "3s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(top.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(first.contains("tickburst top"), "{first}");
    let theirs = std::fs::read_to_string(format!("/proc/{}/mountinfo", top.id())).unwrap();
    let ours_now = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    // A doctor starting and ending meanwhile takes nothing from top.
    let doctor = output(&mut tickburst!(&["doctor"]));
    assert_eq!(doctor.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&doctor.stdout).contains("mount namespace of its own"));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let out = top.wait_with_output().unwrap();
    let stderr = no_panic_stderr(&out);
    assert!(has_tracefs_mount(&theirs), "top mounted tracefs for itself");
    assert!(
        !has_tracefs_mount(&ours_now),
        "the host's mount table has no tracefs"
    );
    assert!(
        !has_tracefs_mount(&std::fs::read_to_string("/proc/self/mountinfo").unwrap()),
        "and none after"
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        !rest.iter().any(|l| l.contains("not found")),
        "top kept its tracepoints: {rest:?}"
    );
}
