//! `tickburst sweep` on real KVM: all pauses in one VM, a row each, and the
//! fit of burst size against pause length.

use tickburst::record::Record;
use tickburst_testkit::{kvm_or_skip, tickburst};

#[test]
fn sweep_runs_in_one_vm_and_fits_a_flat_line_on_a_sw_only_host() {
    let Some(_vm) = kvm_or_skip("sweep_runs_in_one_vm") else {
        return;
    };
    let json = std::env::temp_dir().join(format!("tickburst-sweep-{}.json", std::process::id()));
    let svg = json.with_extension("svg");
    let out = tickburst!()
        .args([
            "sweep",
            "--pauses",
            "300ms,600ms,900ms",
            "--warmup",
            "500ms",
            "--observe",
            "1100ms",
            "--json",
            json.to_str().unwrap(),
            "--plot",
            svg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("pause_s") && text.contains("slope"), "{text}");
    let r = Record::load(&json).unwrap();
    let sweep = r.sweep.as_ref().expect("sweep summary in the record");
    assert_eq!(sweep.rows.len(), 3);
    for (row, want) in sweep.rows.iter().zip([0.3, 0.6, 0.9]) {
        assert!((row.pause_s - want).abs() < 0.05, "{row:?}");
        assert_eq!(row.guest_during, 0, "{row:?}");
        assert!(row.guest_first_1s >= 900, "{row:?}");
    }
    // One VM, no reboot: one ready, and the guest's own run spans warm-up,
    // the three pauses and three observations (1.8 s + 3.3 s + 0.5 s).
    let span_s = r.samples.end_ns as f64 / 1e9;
    assert!((5.6..6.6).contains(&span_s), "run span {span_s} s");
    assert!(r.guest.tick_count as f64 > 0.9 * (span_s - 1.8) * 1000.0);
    // A sw-only host: the burst does not grow with the pause.
    let fit = sweep.host_fit.or(sweep.guest_fit).expect("a fit");
    if tickburst::host::hv_timer::hv_timer_possible(r.host.kvm_backend.as_deref()).is_err() {
        assert!(fit.slope.abs() < 0.1 * sweep.nominal_hz, "{fit:?}");
        assert!(
            sweep.reading.contains("flat") || sweep.host_fit.is_none(),
            "{}",
            sweep.reading
        );
    }
    // The picture has the fit panel.
    let picture = std::fs::read_to_string(&svg).unwrap();
    roxmltree::Document::parse(&picture).expect("well-formed SVG");
    assert!(picture.contains("burst against pause length") && picture.contains("fit: slope"));
    // The saved sweep is re-analysed with its fit.
    let mut again = r.clone();
    again.reanalyze().unwrap();
    assert_eq!(again.sweep, r.sweep);
}

#[test]
fn sweep_rejects_a_single_length() {
    let out = tickburst!()
        .args(["sweep", "--pauses", "1s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 to"));
}
