//! Unit tests of the analysis (a file of their own: they are longer than
//! the code).

use super::*;
use crate::count::Count;
use crate::names::BackendKind;
use crate::vcpu_stats::VcpuStats;

/// Ticks every `period` in `[from, to)`.
fn ticks(from: u64, to: u64, period: u64) -> Vec<u64> {
    (0..)
        .map(|i| from + i * period)
        .take_while(|&t| t < to)
        .collect()
}

fn samples<'a>(ticks: &'a [u64], pauses: &'a [PauseSpan], end: u64) -> Samples<'a> {
    Samples::of_ticks(ticks, pauses, end)
}

#[test]
fn steady_run_without_pause() {
    let t = ticks(MS, 3 * SECOND, MS);
    let a = analyze(&samples(&t, &[], 3 * SECOND));
    assert_eq!(a.windows.len(), 3);
    assert_eq!(a.windows[1].guest_ticks, 1000);
    assert_eq!(a.windows[1].expected_ticks, 1000.0);
    assert!(!a.windows[1].paused);
    let rate = a.steady.rate_hz.unwrap();
    assert!((rate - 1000.0).abs() < 1e-6, "{rate}");
    assert_eq!(a.steady.interval_p50_us, Some(1000.0));
    assert_eq!(a.steady.interval_max_us, Some(1000.0));
    assert!(a.pauses.is_empty());
}

#[test]
fn pause_with_zero_ticks_and_one_coalesced_tick() {
    // sw-timer host: nothing during [2 s, 3 s), one coalesced tick at
    // resume, then the normal rate.
    let mut t = ticks(MS, 2 * SECOND, MS);
    t.push(3 * SECOND + 10_000);
    t.extend(ticks(3 * SECOND + MS, 5 * SECOND, MS));
    let p = [PauseSpan {
        start_ns: 2 * SECOND,
        end_ns: 3 * SECOND,
    }];
    let a = analyze(&samples(&t, &p, 5 * SECOND));
    let s = &a.pauses[0];
    assert_eq!(s.guest_ticks_during, 0);
    assert_eq!(s.ticks_first_100ms, 100);
    assert_eq!(s.ticks_first_1s, 1000);
    assert!((s.burst_ratio - 1.0).abs() < 1e-9);
    assert_eq!(s.missed_ticks, 1000);
    assert_eq!(s.catch_up_ms, Some(0.0));
    assert!(s.peak_rate_ratio <= 1.25 + 1e-9, "{}", s.peak_rate_ratio);
    assert!(!s.truncated);
    assert!(a.windows[2].paused);
    assert_eq!(a.windows[2].guest_ticks, 0);
    assert_eq!(a.windows[2].expected_ticks, 0.0);
    assert_eq!(a.windows[3].expected_ticks, 1000.0);
}

#[test]
fn burst_after_resume_is_measured() {
    // A guest-visible storm: 1000 ticks replayed in the first 10 ms.
    let mut t = ticks(MS, SECOND, MS);
    let resume = 2 * SECOND;
    t.extend((0..1000).map(|i| resume + i * 10_000));
    t.extend(ticks(resume + 10 * MS, 4 * SECOND, MS));
    t.sort_unstable();
    let p = [PauseSpan {
        start_ns: SECOND,
        end_ns: resume,
    }];
    let a = analyze(&samples(&t, &p, 4 * SECOND));
    let s = &a.pauses[0];
    assert_eq!(s.ticks_first_100ms, 1090);
    assert!((s.burst_ratio - 10.9).abs() < 1e-9);
    assert!(s.peak_rate_ratio > 50.0, "{}", s.peak_rate_ratio);
    assert_eq!(s.missed_ticks, 10, "replayed ticks are not missed");
    assert_eq!(s.catch_up_ms, Some(10.0), "first 10 ms window is the storm");
}

#[test]
fn jitter_shows_in_percentiles_not_rate() {
    let t: Vec<u64> = (0..2000u64)
        .map(|i| i * MS + if i % 10 == 0 { 300_000 } else { 0 })
        .collect();
    let a = analyze(&samples(&t, &[], 2 * SECOND));
    let st = &a.steady;
    assert_eq!(st.interval_p50_us, Some(1000.0));
    assert_eq!(st.interval_max_us, Some(1300.0));
    assert!(st.interval_p99_us.unwrap() >= 1000.0);
    assert!((st.rate_hz.unwrap() - 1000.0).abs() < 1.0);
}

#[test]
fn dead_guest_never_catches_up() {
    let t = ticks(0, SECOND, MS);
    let p = [PauseSpan {
        start_ns: SECOND,
        end_ns: 2 * SECOND,
    }];
    let a = analyze(&samples(&t, &p, 4 * SECOND));
    let s = &a.pauses[0];
    assert_eq!(s.catch_up_ms, None);
    assert_eq!(s.ticks_first_1s, 0);
    assert_eq!(s.burst_ratio, 0.0);
    assert_eq!(s.missed_ticks, 2000);
}

#[test]
fn truncated_and_empty_inputs() {
    let a = analyze(&samples(
        &[],
        &[PauseSpan {
            start_ns: 10,
            end_ns: 20,
        }],
        50,
    ));
    assert_eq!(a.steady.rate_hz, None);
    assert_eq!(a.steady.interval_p50_us, None);
    assert!(a.pauses[0].truncated);
    assert_eq!(a.windows.len(), 1);
    let none = analyze(&samples(&[], &[], 0));
    assert!(none.windows.is_empty());
}

#[test]
fn second_pause_cuts_the_first_ones_after_span() {
    let t = ticks(0, 5 * SECOND, MS);
    let p = [
        PauseSpan {
            start_ns: SECOND,
            end_ns: SECOND + 100 * MS,
        },
        PauseSpan {
            start_ns: SECOND + 500 * MS,
            end_ns: 2 * SECOND,
        },
    ];
    let a = analyze(&samples(&t, &p, 5 * SECOND));
    assert!(a.pauses[0].truncated);
    assert!(!a.pauses[1].truncated);
    assert_eq!(a.pauses.len(), 2);
}

#[test]
fn hostile_extremes_do_not_panic() {
    let t = [0, 1, u64::MAX / 2, u64::MAX - 1];
    let p = [PauseSpan {
        start_ns: u64::MAX / 4,
        end_ns: u64::MAX / 4 + 1,
    }];
    let s = Samples {
        period_ns: 0,
        interval_ns: 0,
        end_ns: 10,
        ticks_ns: &t,
        pauses: &p,
        host: &[],
        host_scope: Scope::Vcpu,
        host_events: None,
    };
    let a = analyze(&s);
    assert_eq!(a.windows.len(), 10);
    assert_eq!(a.pauses.len(), 1);
}

#[test]
fn percentile_nearest_rank() {
    let v = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    assert_eq!(percentile(&v, 50.0), Some(5));
    assert_eq!(percentile(&v, 99.0), Some(10));
    assert_eq!(percentile(&v, 0.0), Some(1));
    assert_eq!(percentile(&[], 50.0), None);
}

fn mark(t_ns: u64, sw: u64, irq: u64) -> HostMark {
    HostMark {
        t_ns,
        counts: HostCounts {
            sw_timer: Some(sw).into(),
            hv_timer: Count::NONE,
            stats: VcpuStats {
                irq_injections: Some(irq).into(),
                exits: Some(2 * irq).into(),
                halt_exits: Some(irq).into(),
                signal_exits: Some(0).into(),
            },
        },
    }
}

#[test]
fn host_counts_per_window_and_after_resume() {
    // sw timer keeps firing at 1 kHz through the pause (sw-only host);
    // injections stop while paused.
    let marks: Vec<HostMark> = (0..=40)
        .map(|k| {
            let t = k * 100 * MS;
            let irq = if t <= 2 * SECOND {
                t / MS
            } else if t <= 3 * SECOND {
                2000
            } else {
                2000 + (t - 3 * SECOND) / MS
            };
            mark(t, t / MS, irq)
        })
        .collect();
    let t: Vec<u64> = (0..4000)
        .map(|i| i * MS)
        .filter(|&x| !(2 * SECOND..3 * SECOND).contains(&x))
        .collect();
    let p = [PauseSpan {
        start_ns: 2 * SECOND,
        end_ns: 3 * SECOND,
    }];
    let s = Samples {
        host: &marks,
        host_scope: Scope::Vcpu,
        host_events: None,
        ..samples(&t, &p, 4 * SECOND)
    };
    let a = analyze(&s);
    let h = a.windows[2].host.as_ref().unwrap();
    assert_eq!(
        (h.sw_timer.get(), h.all.get(), h.hv_timer.get()),
        (Some(1000), Some(1000), None)
    );
    assert_eq!(h.irq_injections, Some(0));
    assert_eq!(h.halt_exits, Some(0));
    assert_eq!(h.scope, Scope::Vcpu);
    assert_eq!(
        a.windows[1].host.as_ref().unwrap().irq_injections,
        Some(1000)
    );
    let ps = &a.pauses[0];
    assert_eq!(ps.host_callbacks_during, Some(1000));
    assert_eq!(ps.host_callbacks_first_1s, Some(1000));
    assert!((ps.host_burst_ratio.unwrap() - 1.0).abs() < 1e-9);
    assert_eq!(ps.host_longest_run, None);
    // The VMM stopped (marks only at the pause edges, none in between):
    // a span that starts or ends inside has no host counts; the pause
    // figures come from the edge marks.
    let gap: Vec<HostMark> = marks
        .iter()
        .copied()
        .filter(|m| !(2_050 * MS..2_950 * MS).contains(&m.t_ns))
        .collect();
    let g = analyze(&Samples { host: &gap, ..s });
    assert!(host_between(&gap, 2_500 * MS, 3_000 * MS, Scope::Vcpu).is_none());
    assert_eq!(g.windows[2].host.as_ref().unwrap().sw_timer, Some(1000));
    assert_eq!(g.pauses[0].host_callbacks_during, Some(1000));
    // Without marks: no host figures at all, not zeros.
    let bare = analyze(&samples(&t, &p, 4 * SECOND));
    assert!(bare.windows[0].host.is_none());
    assert_eq!(bare.pauses[0].host_callbacks_first_1s, None);
}

#[test]
fn host_burst_like_the_bug_report() {
    // Unpatched kernel: 0 callbacks for 10 s, then 51541 in the first second.
    let marks = [
        mark(0, 0, 0),
        mark(10 * SECOND, 0, 0),
        mark(11 * SECOND, 51_541, 1),
    ];
    let p = [PauseSpan {
        start_ns: 0,
        end_ns: 10 * SECOND,
    }];
    let s = Samples {
        host: &marks,
        host_scope: Scope::Vcpu,
        host_events: None,
        period_ns: 209_731,
        ..samples(&[], &p, 12 * SECOND)
    };
    let ps = &analyze(&s).pauses[0];
    assert_eq!(ps.host_callbacks_during, Some(0));
    assert_eq!(ps.host_callbacks_first_1s, Some(51_541));
    assert!(ps.host_burst_ratio.unwrap() > 10.0);
}

#[test]
fn timer_backend_keeps_changes_of_back_end_only() {
    // A 15 s spinning run on hv: ~15 000 re-arms traced, one back end.
    let mut events: Vec<(f64, bool)> = (0..15_000).map(|i| (i as f64, true)).collect();
    events.push((15_000.5, false));
    events.push((15_001.0, false));
    let b = timer_backend(Ok(&events));
    assert_eq!(b.switches, vec![(0.0, true), (15_000.5, false)]);
    assert_eq!(b.kind, BackendKind::Mixed);
    assert!(b.fell_back_to_sw);
    assert_eq!(b.fallback_ms, Some(15_000.5));
    let size = |b: &TimerBackend| serde_json::to_string(b).unwrap().len();
    assert!(size(&b) < 200, "{} bytes", size(&b));
}

#[test]
fn classifies_timer_backends() {
    assert_eq!(timer_backend(Ok(&[(0.5, false)])).kind, BackendKind::Sw);
    assert_eq!(timer_backend(Ok(&[(0.5, true)])).kind, BackendKind::Hv);
    let fallback = timer_backend(Ok(&[(0.5, true), (10_000.0, false)]));
    assert_eq!(fallback.kind, BackendKind::Mixed);
    assert!(fallback.fell_back_to_sw);
    assert_eq!(fallback.fallback_ms, Some(10_000.0));
    assert_eq!(fallback.hv_at(9_999.0), Some(true));
    assert_eq!(fallback.hv_at(10_001.0), Some(false));
    assert_eq!(fallback.hv_at(0.1), None);
    let recovered = timer_backend(Ok(&[(0.5, true), (10.0, false), (11.0, true)]));
    assert!(!recovered.fell_back_to_sw);
    assert_eq!(recovered.fallback_ms, None);
    // HLT idle: hv/sw each tick, then the storm's fallback stays.
    let hlt = timer_backend(Ok(&[
        (1.0, false),
        (1.1, true),
        (2.0, false),
        (2.1, true),
        (3.0, false),
    ]));
    assert_eq!(hlt.fallback_ms, Some(3.0));
    let none = timer_backend(Ok(&[]));
    assert_eq!(none.kind, BackendKind::Unknown);
    assert!(none.reason.unwrap().contains("no kvm:kvm_hv_timer_state"));
    assert_eq!(
        timer_backend(Err("denied".into())).reason.as_deref(),
        Some("denied")
    );
}

#[test]
fn a_host_mark_and_a_window_stay_small() {
    // One of each per report window for the whole run (`crate::count`).
    assert_eq!(std::mem::size_of::<HostMark>(), 56);
    assert_eq!(std::mem::size_of::<crate::host_counts::WindowHost>(), 56);
    assert!(std::mem::size_of::<Window>() <= 96);
}

#[test]
fn a_span_cut_to_a_few_ms_is_not_a_host_burst() {
    // 5 kHz, callbacks at exactly the rate, marks every 10 ms; a 1.1 ms gap
    // whose after-resume span the next gap cuts to 4.6 ms. The marks nearest
    // its ends are 10 ms apart: their count over 4.6 ms read as 2.2x. The
    // rest of the second counts at the nominal rate; thousands of callbacks
    // in those ms are still a burst.
    const US: u64 = 1_000;
    let period = 200 * US;
    let marks: Vec<HostMark> = (0..200)
        .map(|i| mark(i * 10 * MS, i * 10 * MS / period, 0))
        .collect();
    let pause = PauseSpan {
        start_ns: 1_000 * MS,
        end_ns: 1_001_100 * US,
    };
    let ticks = ticks(0, 2_000 * MS, period);
    let s = Samples {
        period_ns: period,
        host: &marks,
        ..samples(&ticks, std::slice::from_ref(&pause), 2_000 * MS)
    };
    let p = pause_stats(&s, &pause, 1_005_700 * US);
    assert_eq!(p.host_callbacks_first_1s, Some(50));
    let ratio = p.host_burst_ratio.unwrap();
    assert!((ratio - 1.0).abs() < 0.01, "{ratio}");
    // Over a whole second the marks' span is the second.
    let p = pause_stats(&s, &pause, 2_000 * MS);
    assert!((p.host_burst_ratio.unwrap() - 1.0).abs() < 0.02);
    // 20 extra catch-up callbacks over 6 ms are 1.004x of the second;
    // 10 000 (the bug after a 2 s lag) are 3x.
    assert!((second_ratio(50, 6 * MS, period as f64) - 1.004).abs() < 0.001);
    assert!(second_ratio(10_000, 6 * MS, period as f64) > 2.9);
    assert_eq!(second_ratio(5_000, 1_000 * MS, period as f64), 1.0);
}

#[test]
fn percentile_of_streamed_values_equals_the_sorted_one() {
    // Values spread over every 16-bit digit, with repeats, and a few alone.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut values: Vec<u64> = (0..20_000)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match i % 4 {
                0 => x,
                1 => x >> 40,
                2 => 1_000_000 + (x % 7),
                _ => 1_000_000,
            }
        })
        .collect();
    values.extend([0, u64::MAX, u64::MAX]);
    let mut sorted = values.clone();
    sorted.sort_unstable();
    for p in [0.0, 1.0, 25.0, 50.0, 75.0, 99.0, 99.99, 100.0] {
        let streamed = percentile_of(|| values.iter().copied(), values.len(), p);
        assert_eq!(streamed, percentile(&sorted, p), "p{p}");
    }
    for n in 1..=3 {
        let few = &values[..n];
        let mut s = few.to_vec();
        s.sort_unstable();
        assert_eq!(
            percentile_of(|| few.iter().copied(), n, 50.0),
            percentile(&s, 50.0)
        );
    }
    assert_eq!(percentile_of(std::iter::empty, 0, 50.0), None);
}

#[test]
fn analysis_in_place_equals_the_copying_one_and_keeps_the_deltas() {
    use crate::samples::{encode_ticks, RawSamples};
    let t = ticks(0, 3 * SECOND, MS);
    let mut raw = RawSamples::new(&Samples {
        period_ns: MS,
        interval_ns: SECOND,
        end_ns: 3 * SECOND,
        ticks_ns: &t,
        pauses: &[],
        host: &[],
        host_scope: crate::names::Scope::Vcpu,
        host_events: None,
    });
    let copied = raw.analyze().unwrap();
    assert_eq!(raw.analyze_in_place().unwrap(), copied);
    assert_eq!(raw.tick_deltas_ns, encode_ticks(&t));
}
