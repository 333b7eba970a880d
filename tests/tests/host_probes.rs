//! Host-side probes on real KVM (this machine: root, sw timer only).

use perf_event::events::Tracepoint;
use perf_event::{Builder, Counter};
use std::os::fd::AsRawFd;
use std::time::Instant;
use tickburst::probes::ProbeMode;
use tickburst::run::{run, Quiet, RunConfig};
use tickburst::testing::kvm_or_skip;
use tickburst::tracefs;
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
        ..one_pause_config(guest_payload::abi::ApicMode::X2Apic)
    };
    let out = run(&cfg, Instant::now(), None, &mut Quiet).expect("run with --host-probes on");
    let indep: u64 = independent.iter_mut().map(|c| c.read().unwrap()).sum();
    let r = &out.record;
    let probes = r.host.probes.as_ref().expect("probe report");
    assert!(probes.enabled.iter().any(|p| p == "sw_timer"), "{probes:?}");
    assert!(
        probes.enabled.iter().any(|p| p == "kvm_stats"),
        "{probes:?}"
    );

    // hv timer: reported unavailable on this sw-only host, never as 0.
    if tickburst::probes::hv_timer_possible(r.host.kvm_backend.as_deref()).is_err() {
        assert!(
            probes
                .missing
                .iter()
                .any(|m| m.probe == "hv_timer" && m.inapplicable),
            "{probes:?}"
        );
        assert!(r
            .windows
            .iter()
            .all(|w| w.host.as_ref().unwrap().hv_timer.is_none()));
        let backend = r.host.timer_backend.as_ref().unwrap();
        assert_eq!(backend.kind, "sw", "{backend:?}");
    }

    let pause = &r.pauses[0];
    let mut before = (0, 0.0);
    let mut during = (0, 0.0, 0);
    for w in r.windows.iter().skip(1) {
        let h = w.host.as_ref().unwrap();
        let sw = h.sw_timer.unwrap();
        let end = w.t_ms + w.duration_ms;
        if end <= pause.start_ms && w.duration_ms >= 250.0 {
            before.0 += sw;
            before.1 += w.duration_ms;
            // KVM injects what the guest takes.
            assert_close(
                "irq_injections vs guest ticks",
                h.irq_injections.unwrap() as f64,
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
    assert_close(
        "sw_timer rate before the pause",
        before.0 as f64 / before.1 * 1000.0,
        1000.0,
        0.05,
    );
    // The sw hrtimer is not stalled by a kick pause: it keeps firing...
    assert_close(
        "sw_timer rate during the pause",
        during.0 as f64 / during.1 * 1000.0,
        1000.0,
        0.05,
    );
    // ...while the guest takes nothing.
    assert_eq!(during.2, 0);
    // No burst after resume.
    let burst = pause.host_burst_ratio.expect("host burst ratio");
    assert!(burst < 1.2, "host burst ratio {burst}");

    // Agreement with the independent count (which also saw the few ms before
    // our counters opened, and is host-wide).
    let ours: u64 = r
        .windows
        .iter()
        .map(|w| w.host.as_ref().unwrap().sw_timer.unwrap())
        .sum();
    assert!(ours <= indep + 5, "ours {ours} vs independent {indep}");
    assert!(
        indep - ours.min(indep) <= 150 + indep / 50,
        "ours {ours} vs independent {indep}"
    );
}
