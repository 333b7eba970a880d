//! The exit-heavy self-test guest (`--idle self-test-exits`, the top_cost
//! bench's load) on real KVM: it loops on CPUID, counts the loops in guest
//! memory, the VMM records them, and its timer still ticks.

use std::process::Stdio;
use tickburst_testkit::{kvm_or_skip, tickburst};

#[test]
fn exit_heavy_guest_counts_its_loops_and_keeps_ticking() {
    let Some(_vm) = kvm_or_skip("exit_heavy_guest_counts_its_loops") else {
        return;
    };
    let json = std::env::temp_dir().join(format!("tickburst-exits-{}.json", std::process::id()));
    let out = tickburst!()
        .args(["run", "--idle", "self-test-exits", "--cycles", "0"])
        .args(["--warmup", "500ms", "--host-probes", "off", "--json"])
        .arg(&json)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    assert_eq!(record["config"]["idle"], "self-test-exits");
    let loops = record["guest"]["exit_loops"].as_u64().unwrap();
    let ticks = record["guest"]["tick_count"].as_u64().unwrap();
    // A CPUID exit takes microseconds even nested and on a loaded host:
    // half a second is thousands of them; the 1 ms timer ticks through it.
    assert!(loops > 1000, "only {loops} CPUID loops in 500 ms");
    assert!(ticks > 10, "only {ticks} ticks in 500 ms");
}
