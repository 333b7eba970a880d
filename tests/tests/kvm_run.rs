//! Real guests on /dev/kvm: tick rate, kick pause, recovery, no loss.
//! One VM at a time (tickburst_testkit lock); skipped with a printed reason
//! when KVM is missing, failed when TICKBURST_REQUIRE_KVM=1.

use std::time::Instant;
use tickburst::names::Outcome;
use tickburst::names::{Apic, Idle};
use tickburst::session::config::{PausePlan, RunConfig};
use tickburst::session::error::RunError;
use tickburst::session::observer::Quiet;
use tickburst::session::run::run;
use tickburst::vstate::vcpu_control::VcpuError;
use tickburst_testkit::kvm_or_skip;
use tickburst_tests::{
    assert_close, assert_every_tick_collected, one_pause_config, steady_windows, MS,
};

const S: u64 = 1_000 * MS;

/// 1 ms period, 1 s warm-up, one 1 s kick pause, 1.5 s observation.
fn pause_config(apic: Apic, idle: Idle) -> RunConfig {
    RunConfig {
        idle,
        ..one_pause_config(apic)
    }
}

fn check_pause_run(name: &str, apic: Apic, idle: Idle) {
    let Some(_vm) = kvm_or_skip(name) else { return };
    let out = run(&pause_config(apic, idle), Instant::now(), None, &mut Quiet).expect("run");
    let r = &out.record;
    assert_eq!(out.outcome, Outcome::Completed);
    assert_eq!(r.lost_ticks, 0, "no tick lost");
    assert_eq!(r.collector.invalid_timestamps, 0);
    assert_eq!(r.collector.head_regressions, 0);
    assert_every_tick_collected("run", r.guest.tick_count, r.collector.entries_read);

    // Steady state: 1000/s, at most 20% over. A spinning vCPU whose thread
    // loses its CPU takes coalesced ticks: on a 2-core host busy with
    // builds 6.4%, 10.5%, 20% and 28% short were seen, so a spinning guest
    // may be 40% short, a HLT-idle one 20%. Half the rate, or none, still
    // fails.
    let short = if idle == Idle::Spin { 0.40 } else { 0.20 };
    let (ticks, expected) = steady_windows(r);
    assert!(expected > 0.0);
    let rate = r.steady.rate_hz.expect("rate");
    for (what, value, nominal) in [
        ("steady ticks in windows", ticks as f64, expected),
        ("steady rate", rate, 1000.0),
    ] {
        assert!(
            value >= (1.0 - short) * nominal && value <= 1.2 * nominal,
            "{what}: {value} not within -{:.0}%/+20% of {nominal}",
            short * 100.0
        );
    }

    // The pause: 0 guest ticks while the vCPU is out of KVM_RUN.
    assert_eq!(r.pauses.len(), 1);
    let p = &r.pauses[0];
    assert_close("pause length ms", p.end_ms - p.start_ms, 1000.0, 0.05);
    assert_eq!(p.guest_ticks_during, 0, "guest ticked while paused");
    // The conversion of guest TSC stamps, checked at the pause against the
    // vCPU's TSC read then: within 100 us (a late sync was milliseconds).
    let error = r
        .collector
        .clock_error_max_ns
        .expect("clock checked at the kick pause");
    assert!(error.abs() < 100_000, "clock error {error} ns at the pause");
    // Recovery: the first second after resume is back near the nominal
    // rate and it did not stay dead (catch-up found). One-sided, as in
    // timer_modes: a spinning vCPU on a busy host takes coalesced ticks
    // (756, 870 and 738 seen in spin mode), so at least 65% (half the rate
    // or none fails) and at most 110% (a replay of the pause's 1000 ticks
    // fails).
    assert!(
        (650..=1100).contains(&p.ticks_first_1s),
        "ticks in first 1 s after resume: {}",
        p.ticks_first_1s
    );
    assert!(p.catch_up_ms.is_some(), "rate never recovered");
    // A sw-timer host shows no guest-visible burst.
    assert!(p.burst_ratio < 1.5, "burst ratio {}", p.burst_ratio);
    assert!(
        p.missed_ticks > 900,
        "the pause's ticks are missed, not replayed: {}",
        p.missed_ticks
    );
}

#[test]
fn x2apic_hlt_rate_and_kick_pause() {
    check_pause_run("x2apic_hlt_rate_and_kick_pause", Apic::X2Apic, Idle::Hlt);
}

#[test]
fn x2apic_spin_rate_and_kick_pause() {
    check_pause_run("x2apic_spin_rate_and_kick_pause", Apic::X2Apic, Idle::Spin);
}

#[test]
fn xapic_hlt_rate_and_kick_pause() {
    check_pause_run("xapic_hlt_rate_and_kick_pause", Apic::XApic, Idle::Hlt);
}

#[test]
fn xapic_spin_rate_and_kick_pause() {
    check_pause_run("xapic_spin_rate_and_kick_pause", Apic::XApic, Idle::Spin);
}

#[test]
fn hlt_at_200us_receives_every_tick() {
    let Some(_vm) = kvm_or_skip("hlt_at_200us_receives_every_tick") else {
        return;
    };
    let cfg = RunConfig {
        period_ns: 200_000,
        warmup_ns: 2 * S,
        plan: PausePlan::Run {
            pause_ns: 0,
            cycles: 0,
        },
        observe_ns: 0,
        interval_ns: 500 * MS,
        ..pause_config(Apic::X2Apic, Idle::Hlt)
    };
    let out = run(&cfg, Instant::now(), None, &mut Quiet).expect("run");
    let r = &out.record;
    assert_eq!(r.lost_ticks, 0);
    assert_every_tick_collected("run", r.guest.tick_count, r.collector.entries_read);
    let (ticks, expected) = steady_windows(r);
    // Every tick: at most 10% short on a 2-core host busy with a build
    // (coalescing under load: 5.5% short seen), far from the ~30% delivery
    // of spin mode at this period.
    assert_close("ticks at 200 us", ticks as f64, expected, 0.10);
}

#[test]
fn guest_fault_is_reported_with_vector_and_registers() {
    let Some(_vm) = kvm_or_skip("guest_fault_is_reported_with_vector_and_registers") else {
        return;
    };
    let cfg = RunConfig {
        idle: Idle::SelfTestFault,
        ..pause_config(Apic::X2Apic, Idle::Hlt)
    };
    match run(&cfg, Instant::now(), None, &mut Quiet) {
        Err(RunError::Guest {
            vcpu: 0,
            source: VcpuError::GuestFault {
                vector, rip, regs, ..
            },
        }) => {
            assert_eq!(vector, 6, "#UD");
            assert!((0x10_0000..0x20_0000).contains(&rip), "rip {rip:#x}");
            assert!(regs.contains("rip="), "{regs}");
        }
        other => panic!("expected a guest fault, got {other:?}"),
    }
}

/// The guest's self-test of the untrusted-input path: its ISR writes stamps
/// from the past and the future, jumps the ring head past a whole ring and
/// moves it back (`abi::hostile_action`). The VMM counts each kind, keeps
/// only sorted tick times inside the run, and the record is complete.
#[test]
fn hostile_ring_contents_are_counted_not_trusted() {
    let Some(_vm) = kvm_or_skip("hostile_ring_contents_are_counted_not_trusted") else {
        return;
    };
    // A past stamp is 2^30 TSC cycles back (0.27 s at 4 GHz, longer on
    // slower TSCs). In-order stamps inside the run cannot be told from real
    // ones, so the pause is shorter than that: a past stamp written right
    // after the resume lands before the pause, behind the last tick, and is
    // dropped as out of order instead of showing up as a tick in the pause.
    let cfg = RunConfig {
        warmup_ns: 2 * S,
        plan: PausePlan::Run {
            pause_ns: 250 * MS,
            cycles: 1,
        },
        observe_ns: 1_200 * MS,
        ..pause_config(Apic::X2Apic, Idle::SelfTestHostile)
    };
    let out = run(&cfg, Instant::now(), None, &mut Quiet).expect("run");
    let r = &out.record;
    assert_eq!(out.outcome, Outcome::Completed);
    let c = &r.collector;
    // About 3 700 ticks: 1 in 7 from the past, 1 in 11 from the future,
    // head jumps at ticks 500, 1497, 2494, ..., regressions at 700, 2199, ...
    assert!(c.out_of_order > 100, "{c:?}");
    assert!(c.invalid_timestamps > 100, "{c:?}");
    assert!(c.head_regressions >= 1, "{c:?}");
    assert!(c.lost_ticks >= 1, "{c:?}");
    let ticks = tickburst::samples::decode_ticks(&r.samples.tick_deltas_ns).unwrap();
    assert!(ticks.windows(2).all(|w| w[0] <= w[1]));
    assert!(ticks.last().is_some_and(|&t| t <= r.samples.end_ns));
    // What was kept still measures the timer: most ticks, none in the pause.
    let rate = r.steady.rate_hz.expect("rate");
    assert!(rate > 500.0 && rate < 1050.0, "{rate}");
    assert_eq!(r.pauses[0].guest_ticks_during, 0);
    let mut again = r.clone();
    again.reanalyze().unwrap();
    assert_eq!(again.pauses, r.pauses);
}
