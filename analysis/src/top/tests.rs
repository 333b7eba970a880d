//! Unit tests of `top`'s rows (a file of their own: they are longer than
//! the code).

use super::*;

fn id() -> VcpuId {
    VcpuId {
        pid: 42,
        name: "vm".into(),
        vcpu: 0,
        tid: Some(43),
    }
}

const S: u64 = 1_000_000_000;

fn interval(k: u64, hv: Option<u64>, sw: Option<u64>) -> VcpuInterval {
    VcpuInterval {
        start_ns: k * S,
        len_ns: S,
        hv,
        sw,
        runs: sw.map(|n| {
            (0..n.min(3))
                .map(|i| IrqRun(k * S + i, 1, 500, 0))
                .collect()
        }),
        ..VcpuInterval::default()
    }
}

#[test]
fn back_ends_from_counts() {
    assert_eq!(classify(None, None), Backend::Unknown);
    assert_eq!(classify(Some(10), Some(0)), Backend::Hv);
    assert_eq!(classify(None, Some(1000)), Backend::Sw);
    assert_eq!(classify(Some(0), Some(1000)), Backend::Sw);
    assert_eq!(classify(Some(3), Some(1000)), Backend::Mixed);
    assert_eq!(classify(Some(0), Some(0)), Backend::Idle);
    assert_eq!(classify(None, Some(0)), Backend::Idle);
    assert_eq!(Backend::Hv.combine(Backend::Sw), Backend::Mixed);
    assert_eq!(Backend::Unknown.combine(Backend::Sw), Backend::Sw);
    assert_eq!(Backend::Idle.combine(Backend::Hv), Backend::Hv);
    assert_eq!(Backend::Sw.combine(Backend::Sw), Backend::Sw);
}

#[test]
fn a_sw_only_host_never_falls_back_and_rates_are_per_second() {
    let mut t = VcpuTracker::default();
    for k in 0..10 {
        let r = t.row(&id(), &interval(k, None, Some(1000)), DEFAULT_MAX_RUN);
        assert_eq!(r.backend, Backend::Sw);
        assert_eq!(r.hv_per_s, None, "never an hv figure where none ran");
        assert_eq!(r.sw_per_s, Some(1000.0));
        assert_eq!(r.fell_back_at_s, None);
        assert!(r.flags.is_empty(), "{:?}", r.flags);
    }
    let half = VcpuInterval {
        len_ns: S / 2,
        ..interval(10, None, Some(500))
    };
    assert_eq!(t.row(&id(), &half, 100).sw_per_s, Some(1000.0));
}

#[test]
fn hv_then_sw_for_good_is_a_fallback_with_its_time() {
    let mut t = VcpuTracker::default();
    t.row(&id(), &interval(0, Some(4768), Some(0)), 100);
    // The storm: one interval with a switch to sw and a long run.
    let mut storm = interval(1, Some(1), Some(51_541));
    storm.left_hv = Some(LeftHv {
        count: 1,
        last_ns: Some(S + S / 2),
    });
    storm.runs = Some(vec![IrqRun(S + S / 2, 51_540, 20_000_000, 10 * S)]);
    let r = t.row(&id(), &storm, 100);
    assert_eq!(r.backend, Backend::Mixed);
    assert_eq!(r.longest_run, Some(51_540));
    assert_eq!(r.longest_run_late_ms, Some(10_000.0));
    assert_eq!(r.flags, ["run51540>100@1.5s"]);
    // Two sw-only intervals: not yet "stays".
    for k in 2..4 {
        let r = t.row(&id(), &interval(k, Some(0), Some(4768)), 100);
        assert_eq!(r.fell_back_at_s, None);
    }
    let r = t.row(&id(), &interval(4, Some(0), Some(4768)), 100);
    assert_eq!(r.fell_back_at_s, Some(1.5), "at the switch to sw");
    assert_eq!(r.flags, ["fell-back@1.5s"]);
    // The flag stays while the vCPU stays on sw, and goes when hv is back.
    let r = t.row(&id(), &interval(5, Some(0), Some(4768)), 100);
    assert_eq!(r.fell_back_at_s, Some(1.5));
    let r = t.row(&id(), &interval(6, Some(4768), Some(0)), 100);
    assert_eq!(r.fell_back_at_s, None);
    assert!(r.flags.is_empty());
}

#[test]
fn hlt_guests_switching_back_and_forth_do_not_fall_back() {
    // A halting vCPU: KVM leaves the hv timer at every HLT (the callback
    // then runs on sw while it blocks) and returns to hv when it wakes (not
    // sampled); hv expiries are rare.
    let mut t = VcpuTracker::default();
    for k in 0..10 {
        let mut m = interval(k, Some(0), Some(900));
        let mut left = LeftHv::default();
        for i in 0..900 {
            left.add(k * S + i * 1_000_000);
        }
        m.left_hv = Some(left);
        let r = t.row(&id(), &m, 100);
        assert_eq!(r.fell_back_at_s, None);
        assert!(r.flags.is_empty(), "{:?}", r.flags);
        assert_eq!(r.left_hv, Some(900));
    }
    // It stops halting and its timer stays on sw: KVM no longer leaves hv.
    for k in 10..12 {
        let r = t.row(&id(), &interval(k, Some(0), Some(1000)), 100);
        assert_eq!((r.left_hv, r.fell_back_at_s), (None, None));
    }
    let r = t.row(&id(), &interval(12, Some(0), Some(1000)), 100);
    assert_eq!(r.fell_back_at_s, Some(9.899), "at the last time it left hv");
}

#[test]
fn a_periodic_hv_timer_never_leaves_hv() {
    // Its re-arms (one per expiry) are not sampled: left_hv is 0, not 1000.
    let mut t = VcpuTracker::default();
    for k in 0..5 {
        let mut m = interval(k, Some(1000), Some(0));
        m.left_hv = Some(LeftHv::default());
        let r = t.row(&id(), &m, 100);
        assert_eq!((r.left_hv, r.backend), (Some(0), Backend::Hv));
    }
    // One fall-back to sw after them: left once.
    let mut m = interval(5, Some(3), Some(900));
    m.left_hv = Some(LeftHv {
        count: 1,
        last_ns: Some(5 * S + 3_000_000),
    });
    assert_eq!(t.row(&id(), &m, 100).left_hv, Some(1));
}

#[test]
fn unmeasured_and_lost_are_flagged() {
    let mut t = VcpuTracker::default();
    let r = t.row(&id(), &interval(0, None, None), 100);
    assert_eq!(r.backend, Backend::Unknown);
    assert_eq!(r.longest_run, None);
    assert_eq!(r.flags, ["learning"]);
    let mut m = interval(1, None, Some(1000));
    m.sw_lost = 12;
    let r = t.row(&id(), &m, 100);
    assert_eq!(r.flags, ["lost"]);
    assert_eq!((r.longest_run, r.longest_run_late_ms), (Some(1), None));
    let quiet = VcpuInterval {
        runs: Some(vec![]),
        ..interval(2, None, Some(0))
    };
    let r = t.row(&id(), &quiet, 100);
    assert_eq!((r.longest_run, r.backend), (Some(0), Backend::Idle));
}

#[test]
fn ndjson_has_the_schema_and_null_hv() {
    let r = VcpuTracker::default().row(&id(), &interval(3, None, Some(999)), 100);
    let line = r.to_ndjson();
    assert!(!line.contains('\n'));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    for key in [
        "t_s",
        "pid",
        "vcpu",
        "hv_per_s",
        "sw_per_s",
        "backend",
        "longest_run",
    ] {
        assert!(v.get(key).is_some(), "{key} in {line}");
    }
    assert!(v["hv_per_s"].is_null());
    assert_eq!(v["backend"], "sw");
    assert_eq!(v["t_s"], 3.0);
    assert_eq!(TopRow::from_ndjson(&line).unwrap(), r);
    let bad = line.replace("\"sw_per_s\":999.0", "\"sw_per_s\":-1.0");
    assert!(matches!(
        TopRow::from_ndjson(&bad),
        Err(TopError::Invalid(_))
    ));
    assert!(TopRow::from_ndjson("{}").is_err());
}

#[test]
fn a_callback_sampled_an_interval_late_is_not_lost_but_a_ring_overflow_is() {
    let mut loss = SampleLoss::default();
    // The counter is read first: 1000 counted, 1003 sampled (3 callbacks
    // between the count and the drain), then 997 in the next interval.
    assert_eq!(loss.interval(1000, 1003), 0);
    assert_eq!(loss.interval(2000, 997), 0);
    // Under load the drain came late (10 after the count), then early.
    assert_eq!(loss.interval(3000, 1010), 0);
    assert_eq!(loss.interval(4000, 990), 0);
    // Compared per interval, that 990 against 1000 was "lost".
    // A ring overflowed: 500 never come; said once, not again.
    assert_eq!(loss.interval(5000, 500), 500 - LOST_SLACK);
    assert_eq!(loss.interval(6000, 1000), 0);
    // And more later: only the new ones.
    assert_eq!(loss.interval(7000, 900), 100);
}
