//! Exact scoping on a busy host: the subject's host counts with another VM
//! running at another period equal the counts without it (issue #12, part 2).
//!
//! The same run is made twice: alone, and while a second tickburst VMM runs
//! its own periodic LAPIC timer at 500 us (twice the subject's rate). Every
//! host timer count of the subject (sw callbacks, hv expiries and their sum,
//! per pause and over the whole run) must agree within 2%, and say `vcpu`
//! scope: nothing of the other VM may enter the subject's columns. On a host
//! where the counts would be host-wide the second VM's 2000/s would triple
//! them, far outside the tolerance.
//!
//! The busy run is made twice: with the vCPU thread's events opened one per
//! CPU and filtered on its pid (the default in the init pid namespace), and
//! per-task as outside it (`TICKBURST_SIMULATE_PID_NS=1`).

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use tickburst::record::Record;
use tickburst_testkit::{kvm_or_skip, tickburst};

/// The other VM: a second VMM ticking at 500 us, guest-only (no probes of
/// its own), long enough to cover the subject's run; killed on drop.
struct OtherVm(Child);

impl OtherVm {
    fn start() -> Self {
        let mut child = tickburst!()
            .args([
                "run",
                "--period",
                "500us",
                "--warmup",
                "60s",
                "--cycles",
                "0",
                "--observe",
                "0s",
                "--host-probes",
                "off",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the other VMM");
        // Wait for its first report line: the guest is ticking.
        use std::io::BufRead;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            let mut sent = false;
            for line in lines.by_ref().map_while(Result::ok) {
                if !sent && line.trim_start().starts_with(|c: char| c.is_ascii_digit()) {
                    let _ = tx.send(());
                    sent = true;
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the other VM reports ticks within 10 s");
        OtherVm(child)
    }
}

impl Drop for OtherVm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The subject's run: 1 ms, one 1 s kick pause, default host probes;
/// `per_task`: its thread's events per-task, as outside the init pid
/// namespace.
fn subject(tag: &str, per_task: bool) -> Record {
    let json = std::env::temp_dir().join(format!(
        "tickburst-scoping-{tag}-{}.json",
        std::process::id()
    ));
    let mut cmd = tickburst!();
    if per_task {
        cmd.env(tickburst::host::thread_events::SIMULATE_PID_NS_ENV, "1");
    }
    let out = cmd
        .args([
            "run",
            "--period",
            "1ms",
            "--warmup",
            "2s",
            "--pause",
            "1s",
            "--observe",
            "2s",
            "--json",
            json.to_str().unwrap(),
        ])
        .output()
        .expect("run the subject");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let record = Record::load(&json).expect("subject record");
    let _ = std::fs::remove_file(&json);
    record
}

/// The subject's timer counts: whole run (sum of the windows) and its pause
/// (during, first second after): sw and hv over the run, sw + hv per pause.
fn timer_counts(r: &Record) -> Vec<(String, Option<u64>)> {
    let mut counts = Vec::new();
    let sum = |f: &dyn Fn(&tickburst::figures::WindowHost) -> Option<u64>| {
        r.windows
            .iter()
            .map(|w| w.host.as_ref().and_then(f))
            .sum::<Option<u64>>()
    };
    counts.push(("run sw".into(), sum(&|h| h.sw_timer.get())));
    counts.push(("run hv".into(), sum(&|h| h.hv_timer.get())));
    for (i, p) in r.pauses.iter().enumerate() {
        counts.push((format!("pause {i} during"), p.host_callbacks_during));
        counts.push((format!("pause {i} first 1 s"), p.host_callbacks_first_1s));
    }
    counts
}

#[test]
fn another_vm_at_another_period_does_not_enter_the_subjects_counts() {
    let Some(_vm) = kvm_or_skip("another_vm_does_not_enter_the_subjects_counts") else {
        return;
    };
    let alone = subject("alone", false);
    let (busy, per_task) = {
        let _other = OtherVm::start();
        let started = Instant::now();
        let r = (subject("busy", false), subject("busy-per-task", true));
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "other VM covered the runs"
        );
        r
    };
    for r in [&alone, &busy, &per_task] {
        assert_eq!(
            r.samples.host_scope.to_string(),
            "vcpu",
            "timer counts scoped to the subject's vCPU"
        );
    }
    for r in [&alone, &busy, &per_task] {
        // The subject's own timer, counted at its rate: 1 ms, every window
        // (sw keeps firing through a pause on a sw-only host; an hv timer
        // is frozen then). Catches counts of 0 or of half the rate.
        let span_ms: f64 = r.windows.iter().map(|w| w.duration_ms).sum();
        let pause_ms: f64 = r.pauses.iter().map(|p| p.end_ms - p.start_ms).sum();
        let host: u64 = r
            .windows
            .iter()
            .filter_map(|w| w.host.as_ref())
            .map(|h| h.sw_timer.get().unwrap_or(0) + h.hv_timer.get().unwrap_or(0))
            .sum();
        let host = host as f64;
        assert!(
            host >= 0.7 * (span_ms - pause_ms) && host <= 1.2 * span_ms,
            "{host} callbacks over {span_ms:.0} ms at 1 ms ({pause_ms:.0} ms paused)"
        );
    }
    let a = timer_counts(&alone);
    for (b, how) in [(&busy, "per CPU"), (&per_task, "per task")] {
        let b = timer_counts(b);
        let mut compared = 0;
        for ((what, x), (_, y)) in a.iter().zip(&b) {
            match (x, y) {
                (Some(x), Some(y)) => {
                    println!("{what}: {x} alone, {y} with another VM at 500 us ({how})");
                    let (x, y) = (*x as f64, *y as f64);
                    // 2% of the count, and at least 2 callbacks (a window edge).
                    assert!(
                        (x - y).abs() <= (0.02 * x.max(y)).max(2.0),
                        "{what}: {x} alone, {y} with another VM at 500 us ({how})"
                    );
                    compared += 1;
                }
                (None, None) => {}
                _ => panic!("{what}: measured in one run only: {x:?} / {y:?} ({how})"),
            }
        }
        assert!(compared >= 2, "some host timer counts were measured: {a:?}");
    }
}
