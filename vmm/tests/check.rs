//! `tickburst check` on real KVM: the verdict and its KTAP form.

use tickburst::report::ktap_is_valid;
use tickburst_testkit::{kvm_or_skip, tickburst};

#[test]
fn check_gives_a_valid_ktap_verdict_naming_what_was_not_exercised() {
    let Some(_vm) = kvm_or_skip("check_gives_a_valid_ktap_verdict") else {
        return;
    };
    let out = tickburst!()
        .args(["check", "--pause", "1s", "--format", "ktap"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(ktap_is_valid(&text), "{text}");
    let sw_only = tickburst::host::hv_timer::hv_timer_possible(
        tickburst::host::facts::kvm_backend().as_deref(),
    );
    match sw_only {
        Err(why) => {
            // This machine (kvm_pvm): every case is skipped for the missing hv timer.
            assert!(text.contains("1..5\n"), "{text}");
            assert_eq!(out.status.code(), Some(125), "{text}");
            assert_eq!(text.matches("# SKIP ").count(), 5, "{text}");
            assert!(text.contains("hv timer not available"), "{text}: {why}");
            // Even unexercised, the guest side was measured for every case,
            // and the guest took no tick while paused. (At most 1: a tick
            // within the ready report's exit latency, tens of us, of a pause
            // edge can be placed on the other side of it.)
            let during: Vec<u64> = text
                .split("guest ticks during ")
                .skip(1)
                .filter_map(|rest| rest.split(',').next()?.parse().ok())
                .collect();
            assert_eq!(during.len(), 5, "{text}");
            assert!(during.iter().all(|&n| n <= 1), "{during:?}\n{text}");
        }
        // An hv host: exercised; a burst is the stall, named as such
        // (`hv_pause_does_not_burst` is the test that fails for it).
        Ok(()) => match out.status.code() {
            Some(0) => assert!(!text.contains("not ok"), "{text}"),
            Some(1) => assert!(text.contains("CVE-2025-71104"), "{text}"),
            other => panic!("check exit {other:?}: {text}"),
        },
    }
}

#[test]
fn check_rejects_bad_flags() {
    let out = tickburst!()
        .args(["check", "--pause", "10ms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("allowed 100ms to 1min") || e.contains("allowed 100ms"),
        "{e}"
    );
}
