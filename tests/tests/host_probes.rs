//! Host-side probes on real KVM. What a pause should do is derived from the
//! host (`doctor`'s facts): without the hv timer (this development machine,
//! kvm_pvm) the sw hrtimer keeps firing through a pause; with it (kvm_intel,
//! `preemption_timer=Y`, e.g. the emulated-Intel rig) the armed hv timer
//! freezes while the vCPU is out of guest mode. `hv_pause_does_not_burst` is
//! the bug itself: on an unfixed kernel it is the one test here that fails.

use perf_event::events::Tracepoint;
use perf_event::{Builder, Counter};
use std::os::fd::AsRawFd;
use std::time::Instant;
use tickburst::host::probes::ProbeMode;
use tickburst::host::tracefs;
use tickburst::names::{Idle, Probe};
use tickburst::session::config::{PausePlan, RunConfig};
use tickburst::session::observer::Quiet;
use tickburst::session::run::run;
use tickburst::verdict::Kind;
use tickburst_testkit::kvm_or_skip;
use tickburst_tests::{assert_close, one_pause_config};

/// An independent host-wide count of apic_timer_fn callbacks, one counter per CPU.
fn independent_sw_counters() -> Vec<Counter> {
    let root = tracefs::find()
        .expect("tracefs mounted (tickburst mounts it for a run; the test needs it first)");
    let id = tracefs::event_id(&root, "timer/hrtimer_expire_entry").unwrap();
    let addr = tracefs::apic_timer_fn_address().unwrap();
    let cpus = std::thread::available_parallelism().unwrap().get();
    (0..cpus)
        .map(|cpu| {
            let mut c = Builder::new(Tracepoint::with_id(id))
                .any_pid()
                .one_cpu(cpu)
                .include_kernel()
                .build()
                .unwrap();
            let filter = std::ffi::CString::new(format!("function == {addr:#x}")).unwrap();
            // SAFETY: SET_FILTER on a live perf fd with a NUL-terminated string.
            let rc = unsafe {
                perf_event_open_sys::ioctls::SET_FILTER(c.as_raw_fd(), filter.as_ptr() as *mut _)
            };
            assert_eq!(rc, 0, "set filter");
            c.enable().unwrap();
            c
        })
        .collect()
}

#[test]
fn sw_timer_counts_through_a_kick_pause_and_agrees_with_an_independent_count() {
    let Some(_vm) = kvm_or_skip("sw_timer_counts_through_a_kick_pause") else {
        return;
    };
    // tracefs must be there for the independent counter; mount it like a run would.
    let _mount = tracefs::locate_or_mount(true).expect("tracefs");
    let mut independent = independent_sw_counters();
    let cfg = RunConfig {
        host_probes: ProbeMode::On,
        ..one_pause_config(tickburst::names::Apic::X2Apic)
    };
    let out = run(&cfg, Instant::now(), None, &mut Quiet).expect("run with --host-probes on");
    let indep: u64 = independent.iter_mut().map(|c| c.read().unwrap()).sum();
    let r = &out.record;
    let probes = r.host.probes.as_ref().expect("probe report");
    assert!(probes.enabled.contains(&Probe::SwTimer), "{probes:?}");
    assert!(probes.enabled.contains(&Probe::KvmStats), "{probes:?}");

    // hv timer: reported unavailable on this sw-only host, never as 0.
    if tickburst::host::hv_timer::hv_timer_possible(r.host.kvm_backend.as_deref()).is_err() {
        assert!(
            probes
                .missing
                .iter()
                .any(|m| m.probe == Probe::HvTimer && m.inapplicable),
            "{probes:?}"
        );
        assert!(r
            .windows
            .iter()
            .all(|w| w.host.as_ref().unwrap().hv_timer.get().is_none()));
        let backend = r.host.timer_backend.as_ref().unwrap();
        assert_eq!(
            backend.kind,
            tickburst::names::BackendKind::Sw,
            "{backend:?}"
        );
    }

    let pause = &r.pauses[0];
    let mut before = (0, 0.0);
    let mut during = (0, 0.0, 0);
    for w in r.windows.iter().skip(1) {
        let h = w.host.as_ref().unwrap();
        let sw = h.sw_timer.get().unwrap();
        let end = w.t_ms + w.duration_ms;
        if end <= pause.start_ms && w.duration_ms >= 250.0 {
            before.0 += sw;
            before.1 += w.duration_ms;
            // KVM injects what the guest takes.
            assert_close(
                "irq_injections vs guest ticks",
                h.irq_injections.get().unwrap() as f64,
                w.guest_ticks as f64,
                0.05,
            );
        } else if w.t_ms >= pause.start_ms && end <= pause.end_ms {
            during.0 += sw;
            during.1 += w.duration_ms;
            during.2 += w.guest_ticks;
        }
    }
    assert!(
        before.1 > 0.0 && during.1 > 0.0,
        "windows before and inside the pause"
    );
    // HLT idle: the timer expires while the vCPU blocks, so KVM runs it on
    // the sw hrtimer (also where the hv timer exists: KVM switches to sw
    // around the block).
    assert_close(
        "sw_timer rate before the pause",
        before.0 as f64 / before.1 * 1000.0,
        1000.0,
        0.05,
    );
    // The guest takes nothing while paused, on any host.
    assert_eq!(during.2, 0);
    let hv_host =
        tickburst::host::hv_timer::hv_timer_possible(r.host.kvm_backend.as_deref()).is_ok();
    let during_rate = during.0 as f64 / during.1 * 1000.0;
    if hv_host {
        // The armed hv timer freezes out of guest mode: no sw callbacks.
        assert!(
            during_rate < 20.0,
            "sw_timer during the pause {during_rate}/s"
        );
    } else {
        // The sw hrtimer is not stalled by a kick pause: it keeps firing,
        // and nothing bursts after the resume (no hv timer, no stall).
        assert_close("sw_timer rate during the pause", during_rate, 1000.0, 0.05);
        let burst = pause.host_burst_ratio.expect("host burst ratio");
        assert!(burst < 1.2, "host burst ratio {burst}");
    }

    // Agreement with the independent count (which also saw the few ms before
    // our counters opened, and is host-wide).
    let ours: u64 = r
        .windows
        .iter()
        .map(|w| w.host.as_ref().unwrap().sw_timer.get().unwrap())
        .sum();
    assert!(ours <= indep + 5, "ours {ours} vs independent {indep}");
    assert!(
        indep - ours.min(indep) <= 150 + indep / 50,
        "ours {ours} vs independent {indep}"
    );
}

/// The bug itself (CVE-2025-71104): one kick pause of a spinning guest whose
/// periodic timer runs on the hv timer. A fixed kernel resumes the hv timer
/// and nothing bursts; an unfixed one falls back to the sw timer and runs
/// about pause / period callbacks inside one hard interrupt. Where the hv
/// timer cannot run, the stall cannot happen and the verdict says so.
#[test]
fn hv_pause_does_not_burst() {
    let Some(_vm) = kvm_or_skip("hv_pause_does_not_burst") else {
        return;
    };
    let cfg = RunConfig {
        idle: Idle::Spin,
        warmup_ns: 1_000 * tickburst_tests::MS,
        plan: PausePlan::Run {
            pause_ns: 2_000 * tickburst_tests::MS,
            cycles: 1,
        },
        observe_ns: 1_500 * tickburst_tests::MS,
        host_probes: ProbeMode::On,
        ..one_pause_config(tickburst::names::Apic::X2Apic)
    };
    let out = run(&cfg, Instant::now(), None, &mut Quiet).expect("run with --host-probes on");
    let r = &out.record;
    let backend = r.host.timer_backend.as_ref().expect("timer back end");
    if let Err(why) = tickburst::host::hv_timer::hv_timer_possible(r.host.kvm_backend.as_deref()) {
        assert_eq!(r.verdict.kind, Kind::NotExercised, "{:?}", r.verdict);
        let reasons = &r.verdict.pauses[0].reasons;
        assert!(reasons.iter().any(|x| x == &why), "{reasons:?} vs {why}");
        assert!(!backend.fell_back_to_sw, "{backend:?}");
        // Our hrtimer was learned in the probe phase, also with a spinning guest.
        assert_eq!(r.samples.host_scope, tickburst::names::Scope::Vcpu);
        return;
    }
    let p = &r.pauses[0];
    let stall = |what: &str| {
        format!(
            "CVE-2025-71104 (KVM commit 18ab3fc8e880 missing?): {what}; after a {:.0} ms pause: \
             fell back to sw at {:?} ms, host callbacks in the first second {:?} ({:?}x), \
             longest run in one interrupt {:?} callbacks ({:?} ms); verdict {:?}",
            p.end_ms - p.start_ms,
            backend.fallback_ms,
            p.host_callbacks_first_1s,
            p.host_burst_ratio,
            p.host_longest_run,
            p.host_longest_run_ms,
            r.verdict
        )
    };
    // The pause must have caught the hv timer armed.
    assert_eq!(
        backend.hv_at(p.start_ms),
        Some(true),
        "{}",
        stall("the hv timer was not in use right before the pause")
    );
    assert_eq!(r.verdict.kind, Kind::Ok, "{}", stall("the resume burst"));
    assert!(
        !backend.fell_back_to_sw,
        "{}",
        stall("KVM stayed on the sw timer")
    );
    assert!(
        p.host_longest_run.is_some_and(|n| n <= 3),
        "{}",
        stall("a run of timer callbacks inside one interrupt")
    );
    // hv expiries stop while paused and come back after it.
    assert!(p.host_callbacks_during.is_some_and(|n| n <= 2), "{p:?}");
}
