//! Unit tests of the bpftrace log import.

use super::*;
use crate::verdict::{judge, Kind, Thresholds};

const UNPATCHED: &str = "all_count 4768  hv_timer  4768  sw_timer  0
all_count 4768  hv_timer  4768  sw_timer  0
//==suspend
all_count 910   hv_timer  910   sw_timer  0
all_count 0     hv_timer  0     sw_timer  0
all_count 0     hv_timer  0     sw_timer  0
//==resume ==(1)==
all_count 51543         hv_timer  1     sw_timer  51541
all_count 4768  hv_timer  0     sw_timer  4768
all_count 4769  hv_timer  0     sw_timer  4769
";

#[test]
fn reads_the_report_layout_and_ignores_other_lines() {
    let iv = parse(UNPATCHED).unwrap();
    assert_eq!(iv.len(), 8);
    assert_eq!(
        iv[5],
        Interval {
            line: 8,
            all: 51543,
            hv: 1,
            sw: 51541
        }
    );
    assert_eq!(
        parse("garbage\n\nall_count x hv_timer 1 sw_timer 2\n").unwrap_err(),
        BpftraceError::NoLines
    );
    assert_eq!(parse("").unwrap_err(), BpftraceError::NoLines);
}

#[test]
fn unpatched_log_is_a_burst_with_fallback() {
    let a = analyze(&parse(UNPATCHED).unwrap()).unwrap();
    assert_eq!(a.nominal_per_s, 4768.0);
    assert_eq!(a.pauses.len(), 1);
    let p = &a.pauses[0];
    assert_eq!(p.zero_intervals, 2);
    assert!(p.fell_back_to_sw && p.hv_before);
    assert!((p.estimated_s - 2.81).abs() < 0.01, "{}", p.estimated_s);
    assert_eq!(
        judge(&p.evidence(), &Thresholds::default()).kind,
        Kind::Burst
    );
}

#[test]
fn logs_without_a_usable_pause_are_errors() {
    let no_pause = "all_count 5 hv_timer 5 sw_timer 0\nall_count 5 hv_timer 5 sw_timer 0\n";
    assert_eq!(
        analyze(&parse(no_pause).unwrap()).unwrap_err(),
        BpftraceError::NoPause
    );
    // Truncated while paused: no resume line.
    let cut = "all_count 5 hv_timer 5 sw_timer 0\nall_count 0 hv_timer 0 sw_timer 0\n";
    assert_eq!(
        analyze(&parse(cut).unwrap()).unwrap_err(),
        BpftraceError::NoPause
    );
    let dead = "all_count 0 hv_timer 0 sw_timer 0\n";
    assert_eq!(
        analyze(&parse(dead).unwrap()).unwrap_err(),
        BpftraceError::NoPause
    );
}

#[test]
fn sw_only_log_is_not_exercised() {
    let sw = "all_count 1000 hv_timer 0 sw_timer 1000
all_count 1000 hv_timer 0 sw_timer 1000
all_count 0 hv_timer 0 sw_timer 0
all_count 1000 hv_timer 0 sw_timer 1000
all_count 1000 hv_timer 0 sw_timer 1000
";
    let a = analyze(&parse(sw).unwrap()).unwrap();
    let v = judge(&a.pauses[0].evidence(), &Thresholds::default());
    assert_eq!(v.kind, Kind::NotExercised, "{v:?}");
}
